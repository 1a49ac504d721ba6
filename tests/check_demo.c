/*
 * check_demo.c — how `strata demo` judges search answers (tools/demo_recall.h): a hit counts
 * only when it is truly among the nearest, by a distance the demo computes itself; and the
 * latency probes supersede distinct records.
 */
#include <jansson.h>
#include <inttypes.h>
#include <stdint.h>

#include "demo_recall.h"
#include "st_test.h"

/* Eight 2-d points: id i at (i, 0); id 7 duplicates id 1. */
static const float base[8 * 2] = {0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 1, 0};
static const float q[2] = {0, 0};
/* Exact top 3 of q: ids 0, 1 (distance 1; 7 ties with it), 2 (distance 4). */
static const uint32_t gt[3] = {0, 1, 2};
static const float kth = 4;

static size_t judge(const char *answer)
{
    json_error_t e;
    json_t *j = json_loads(answer, 0, &e);
    ck_assert_msg(j != NULL, "%s", e.text);
    size_t n = demo_recall_hits(json_object_get(j, "hits"), q, base, 8, 2, gt, kth, 3);
    json_decref(j);
    return n;
}

START_TEST(test_exact_hits_count)
{
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":0,\"distance\":0},{\"id\":1,\"distance\":1},"
                            "{\"id\":2,\"distance\":4}]}"),
                      3);
    /* ids as decimal strings (uint64 ids >= 2^63 come that way) */
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":\"0\"},{\"id\":\"1\"},{\"id\":\"2\"}]}"), 3);
    /* a duplicate image (id 7 is id 1's image) is as good as the exact neighbour */
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":0},{\"id\":7},{\"id\":2}]}"), 3);
}
END_TEST

START_TEST(test_reported_distance_not_trusted)
{
    /* a wrong id with the distance of a right one (an id mapped wrong): a miss */
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":0,\"distance\":0},{\"id\":6,\"distance\":1},"
                            "{\"id\":5,\"distance\":4}]}"),
                      1);
}
END_TEST

START_TEST(test_each_id_once)
{
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":0},{\"id\":0},{\"id\":0}]}"), 1);
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":1},{\"id\":\"1\"},{\"id\":2}]}"), 2);
}
END_TEST

START_TEST(test_bad_ids_miss)
{
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":8},{\"id\":-1},{\"id\":\"1x\"},{\"id\":0}]}"), 0);
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":\"\"},{\"id\":null},{\"id\":0}]}"), 1);
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":\"18446744073709551616\"},{\"id\":0}]}"), 1);
    ck_assert_uint_eq(judge("{}"), 0);
}
END_TEST

START_TEST(test_only_first_k)
{
    ck_assert_uint_eq(judge("{\"hits\":[{\"id\":5},{\"id\":6},{\"id\":4},{\"id\":0}]}"), 0);
}
END_TEST

START_TEST(test_probe_ids_distinct)
{
    /* every --train the demo accepts (100..60000) with its 48 probes */
    static uint8_t used[60000];
    for (size_t n = 100; n <= 60000; n++) {
        for (size_t p = 0; p < 48; p++) {
            size_t id = demo_probe_id(p, 48, n);
            if (id >= n || used[id]) /* (ck_assert_* marks a point each call: too slow here) */
                ck_abort_msg("ntrain %zu: probe %zu: id %zu out of range or repeated", n, p, id);
            used[id] = 1;
        }
        for (size_t p = 0; p < 48; p++)
            used[demo_probe_id(p, 48, n)] = 0;
    }
}
END_TEST

START_TEST(test_windows_seal_at_any_minute)
{
    /* CI once ran the demo in an hour's first minute: its data ended at that hour's start,
     * the probes (event time now) left the watermark short of end + grace and the last
     * window never sealed. Every second of two hours, every --windows: the windows are whole
     * hours, end more than grace before now, and not needlessly far back. */
    const int64_t hour = 3600 * 1000LL, grace = 60 * 1000LL;
    const int64_t h0 = 1795651200000LL; /* 2026-11-24T00:00:00Z, an hour's start */
    for (int64_t now = h0; now < h0 + 2 * hour; now += 1000) {
        for (int w = 1; w <= 48; w++) {
            int64_t first = demo_first_window(now, w, grace);
            int64_t end = first + w * hour;
            if (first % hour != 0 || end + grace >= now || end < now - 2 * hour)
                ck_abort_msg("now %" PRId64 " windows %d: first %" PRId64 " end %" PRId64, now, w,
                             first, end);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("demo");
    TCase *tc = tcase_create("recall");
    tcase_add_test(tc, test_exact_hits_count);
    tcase_add_test(tc, test_reported_distance_not_trusted);
    tcase_add_test(tc, test_each_id_once);
    tcase_add_test(tc, test_bad_ids_miss);
    tcase_add_test(tc, test_only_first_k);
    tcase_add_test(tc, test_probe_ids_distinct);
    tcase_add_test(tc, test_windows_seal_at_any_minute);
    suite_add_tcase(s, tc);
    return st_test_run_suite(s);
}
