/* The consumer's decode stage hand-off (ing_pipe.h): order, the depth bound, waiting with a
 * deadline, and closing with work in flight. Runs under ThreadSanitizer (label unit). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "ing_pipe.h"
#include "st_test.h"

struct item {
    uint64_t seq;
    uint64_t result;  /* written by the worker */
    int worker_order; /* the order the worker ran it in */
};

struct ctx {
    atomic_int ran;
    atomic_bool hold; /* the worker spins while set: an item "being decoded" */
};

static void work(void *arg, void *it)
{
    struct ctx *c = arg;
    struct item *x = it;
    while (atomic_load(&c->hold))
        st_test_sleep_ms(1);
    x->result = x->seq * 2654435761u + 7;
    x->worker_order = atomic_fetch_add(&c->ran, 1);
}

static atomic_uint b_done;

/* Like work, but only the item with seq 1 waits for the hold. */
static void hold_first(void *arg, void *it)
{
    struct ctx *c = arg;
    struct item *x = it;
    while (x->seq == 1 && atomic_load(&c->hold))
        st_test_sleep_ms(1);
    if (x->seq == 2)
        atomic_store(&b_done, 1);
    x->result = x->seq * 2654435761u + 7;
    atomic_fetch_add(&c->ran, 1);
}

/* Many items through a small pipe, fed and drained at uneven rates, by 1 and by 3 workers:
 * every item comes back once, in push order, with the worker's result (one worker also runs
 * them in push order). */
START_TEST(test_order_and_results)
{
    size_t workers = _i == 0 ? 1 : 3;
    struct ctx c = {0};
    struct ing_pipe *p;
    ck_assert_int_eq(ing_pipe_open(3, workers, work, &c, &p), ST_OK);
    enum { N = 20000 };
    struct item *items = calloc(N, sizeof(*items));
    ck_assert_ptr_nonnull(items);
    size_t pushed = 0, popped = 0;
    while (popped < N) {
        /* Push up to the bound (it is never exceeded). */
        while (pushed < N && !ing_pipe_full(p)) {
            items[pushed].seq = pushed;
            ing_pipe_push(p, &items[pushed]);
            pushed++;
            ck_assert_uint_le(ing_pipe_count(p), 3);
            if (pushed % 7 == 0)
                break; /* sometimes drain before the pipe is full */
        }
        struct item *x = ing_pipe_pop(p, pushed % 3 == 0 ? 0 : -1);
        if (x == NULL)
            continue; /* not done yet (timeout 0) */
        ck_assert_ptr_eq(x, &items[popped]);
        ck_assert_uint_eq(x->result, x->seq * 2654435761u + 7);
        if (workers == 1)
            ck_assert_int_eq(x->worker_order, (int)popped);
        popped++;
    }
    ck_assert_uint_eq(ing_pipe_count(p), 0);
    ck_assert_ptr_null(ing_pipe_pop(p, 1000)); /* empty: NULL at once */
    ing_pipe_close(p);
    free(items);
}
END_TEST

/* An item still being worked on is not handed back: pop waits out its deadline and returns
 * NULL, then returns the item once the worker is done. */
START_TEST(test_pop_deadline)
{
    struct ctx c = {0};
    atomic_store(&c.hold, true);
    struct ing_pipe *p;
    ck_assert_int_eq(ing_pipe_open(2, 1, work, &c, &p), ST_OK);
    struct item a = {.seq = 1}, b = {.seq = 2};
    ing_pipe_push(p, &a);
    ing_pipe_push(p, &b);
    ck_assert(ing_pipe_full(p));
    int64_t t0 = st_test_now_ms();
    ck_assert_ptr_null(ing_pipe_pop(p, 150));
    ck_assert_int_ge(st_test_now_ms() - t0, 140);
    ck_assert_int_eq(atomic_load(&c.ran), 0);
    atomic_store(&c.hold, false);
    ck_assert_ptr_eq(ing_pipe_pop(p, -1), &a);
    ck_assert_ptr_eq(ing_pipe_pop(p, -1), &b);
    ck_assert_uint_eq(b.result, (uint64_t)2 * 2654435761u + 7);
    ing_pipe_close(p);
}
END_TEST

/* With two workers, an item that finishes before an older one is not handed back before it:
 * the older one (held) blocks pop, then both come back in push order. */
START_TEST(test_in_order_across_workers)
{
    struct ctx c = {0};
    atomic_store(&c.hold, true);
    struct ing_pipe *p;
    ck_assert_int_eq(ing_pipe_open(2, 2, hold_first, &c, &p), ST_OK);
    struct item a = {.seq = 1}, b = {.seq = 2};
    ing_pipe_push(p, &a); /* held until released */
    ing_pipe_push(p, &b); /* done at once by the other worker */
    ck_assert(ST_WAIT_UNTIL(atomic_load(&c.ran) == 1, 10000));
    ck_assert_uint_eq(atomic_load(&b_done), 1);
    ck_assert_ptr_null(ing_pipe_pop(p, 50)); /* b is done, a is not: nothing */
    atomic_store(&c.hold, false);
    ck_assert_ptr_eq(ing_pipe_pop(p, -1), &a);
    ck_assert_ptr_eq(ing_pipe_pop(p, -1), &b);
    ing_pipe_close(p);
}
END_TEST

/* Closing with items pushed but not popped finishes them and leaves them to the owner;
 * closing NULL is a no-op; a zero depth is refused. */
START_TEST(test_close_with_items)
{
    struct ctx c = {0};
    struct ing_pipe *p;
    ck_assert_int_eq(ing_pipe_open(0, 1, work, &c, &p), ST_EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(ing_pipe_open(4, 0, work, &c, &p), ST_EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(ing_pipe_open(4, 2, work, &c, &p), ST_OK);
    struct item it[4] = {{.seq = 0}, {.seq = 1}, {.seq = 2}, {.seq = 3}};
    for (int i = 0; i < 4; i++)
        ing_pipe_push(p, &it[i]);
    ck_assert_ptr_eq(ing_pipe_pop(p, -1), &it[0]);
    ing_pipe_close(p);
    ck_assert_int_eq(atomic_load(&c.ran), 4);
    ing_pipe_close(NULL);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("ing_pipe");
    TCase *tc = tcase_create("pipe");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_order_and_results, 0, 2);
    tcase_add_test(tc, test_pop_deadline);
    tcase_add_test(tc, test_in_order_across_workers);
    tcase_add_test(tc, test_close_with_items);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
