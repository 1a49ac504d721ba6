/* The fresh half of a strong-consistency search (store/store_search.h) over a real store:
 * memtable + run + sealed segments, versions superseded across sources, deletes, windows the
 * caller searched by index, time pruning, and a refill when the closest are all stale. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_search.h"
#include "st_test.h"
#include "store.h"

#define W 1000 /* window size, ms */

static int64_t next_offset;

static void put(struct store *s, const char *id, int64_t ts, float x, uint8_t op)
{
    float v[2] = {x, 0};
    int64_t w = ts / W * W;
    struct store_record r = {.id = (const uint8_t *)id,
                             .id_len = (uint32_t)strlen(id),
                             .ts = ts,
                             .window = w,
                             .window_end = w + W,
                             .op = op,
                             .vec = v};
    struct store_batch b = {.partition = 0, .offset = next_offset++, .n = 1, .recs = &r};
    bool applied;
    ck_assert_int_eq(store_write(s, &b, &applied), ST_OK);
    ck_assert(applied);
}

/* Merges every segment of window start into one sealed segment, version 1. */
static void seal(struct store *s, int64_t start)
{
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    uint64_t in[16];
    size_t n = 0;
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment_info gi;
        store_segment_info(store_snapshot_segment(snap, i), &gi);
        if (gi.window_start == start)
            in[n++] = gi.file_number;
    }
    store_snapshot_release(snap);
    ck_assert_uint_ge(n, 1);
    struct store_window w = {start, start + W, 1, 1};
    ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_SEALED, 1,
                                 &(struct store_edit_extra){.windows = &w, .nwindows = 1}, NULL),
                     ST_OK);
}

static struct store *open_store(char **dir)
{
    *dir = st_test_tmpdir("fresh");
    struct store_opts o = {
        .dir = *dir, .dim = 2, .wal_sync = STORE_SYNC_NONE, .no_background = true};
    struct store *s;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    next_offset = 0;
    return s;
}

static void close_store(struct store *s, char *dir)
{
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}

static struct store_search_result search(struct store *s, float x, uint32_t k, int64_t from,
                                         int64_t to, const struct store_window_ver *ix, size_t nix)
{
    float q[2] = {x, 0};
    struct store_search_query fq = {.vec = q,
                                    .dim = 2,
                                    .metric = ST_METRIC_L2,
                                    .k = k,
                                    .from_ts = from,
                                    .to_ts = to,
                                    .indexed = ix,
                                    .n_indexed = nix,
                                    .with_meta = true};
    struct store_search_result r;
    ck_assert_int_eq(store_search(s, &fq, &r), ST_OK);
    return r;
}

static const struct store_search_hit *hit(const struct store_search_result *r, const char *id)
{
    const struct store_search_hit *found = NULL;
    for (size_t i = 0; i < r->n; i++)
        if (r->hits[i].id_len == strlen(id) && memcmp(r->hits[i].id, id, r->hits[i].id_len) == 0) {
            ck_assert_msg(found == NULL, "%s returned twice", id);
            found = &r->hits[i];
        }
    return found;
}

/*
 * Window A [0, 1000): a1 (x=1), a2 (x=2), a3 (x=3) sealed as version 1. Window B: b1 (x=1.1)
 * in a run segment. Memtable: a2 moved to x=50 (late, newer ts), a3 deleted, c1 (x=0.9) in B.
 */
static struct store *fixture(char **dir)
{
    struct store *s = open_store(dir);
    put(s, "a1", 10, 1, STORE_OP_UPSERT);
    put(s, "a2", 20, 2, STORE_OP_UPSERT);
    put(s, "a3", 30, 3, STORE_OP_UPSERT);
    put(s, "b1", 1010, 1.1f, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    seal(s, 0);
    put(s, "a2", 40, 50, STORE_OP_UPSERT);
    put(s, "a3", 50, 0, STORE_OP_DELETE);
    put(s, "c1", 1500, 0.9f, STORE_OP_UPSERT);
    return s;
}

START_TEST(test_fresh_newest_versions_only)
{
    char *dir;
    struct store *s = fixture(&dir);
    struct store_search_result r = search(s, 1, 10, INT64_MIN, INT64_MAX, NULL, 0);
    ck_assert_uint_eq(r.n, 4); /* a1, b1, c1, a2 (new) — never a3, never old a2 */
    ck_assert_str_eq((const char *)r.hits[0].id, "a1");
    ck_assert_ptr_nonnull(hit(&r, "b1"));
    ck_assert_ptr_nonnull(hit(&r, "c1"));
    ck_assert_ptr_null(hit(&r, "a3"));
    const struct store_search_hit *a2 = hit(&r, "a2");
    ck_assert_ptr_nonnull(a2);
    ck_assert_float_eq(a2->dist, 49.0f * 49.0f);
    ck_assert_int_eq(a2->ts, 40);
    ck_assert_ptr_eq(a2, &r.hits[3]);
    for (size_t i = 1; i < r.n; i++)
        ck_assert(r.hits[i - 1].dist <= r.hits[i].dist);
    ck_assert_uint_eq(r.segments, 2);
    ck_assert_uint_eq(r.windows, 2);
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

START_TEST(test_fresh_skips_indexed_and_prunes_time)
{
    char *dir;
    struct store *s = fixture(&dir);
    /* A's sealed v1 was searched by index: a1 is not scanned again; a2's late version is. */
    struct store_window_ver ix = {0, 1};
    struct store_search_result r = search(s, 1, 10, INT64_MIN, INT64_MAX, &ix, 1);
    ck_assert_uint_eq(r.n, 3);
    ck_assert_ptr_null(hit(&r, "a1"));
    ck_assert_ptr_nonnull(hit(&r, "a2"));
    ck_assert_ptr_nonnull(hit(&r, "b1"));
    ck_assert_ptr_nonnull(hit(&r, "c1"));
    ck_assert_uint_eq(r.segments, 1);
    store_search_result_free(&r);
    /* Another version listed: A v1 is still unindexed for this caller. */
    struct store_window_ver other = {0, 2};
    r = search(s, 1, 10, INT64_MIN, INT64_MAX, &other, 1);
    ck_assert_ptr_nonnull(hit(&r, "a1"));
    store_search_result_free(&r);
    /* Only window B's time range: A's segment pruned before any distance. */
    r = search(s, 1, 10, 1000, 1999, NULL, 0);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_ptr_nonnull(hit(&r, "b1"));
    ck_assert_ptr_nonnull(hit(&r, "c1"));
    ck_assert_uint_eq(r.segments, 1);
    ck_assert_uint_eq(r.scanned, 2);
    store_search_result_free(&r);
    /* Nothing in range. */
    r = search(s, 1, 10, 5000, 6000, NULL, 0);
    ck_assert_uint_eq(r.n, 0);
    ck_assert_uint_eq(r.scanned, 0);
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

/* The 40 closest records were all superseded by far-away versions: the first pass's
 * candidates are all stale, and a wider pass must still find the true nearest. */
START_TEST(test_fresh_refills_when_closest_are_stale)
{
    char *dir;
    struct store *s = fixture(&dir);
    char id[16];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof(id), "x%d", i);
        put(s, id, 100 + i, 0.001f * (float)i, STORE_OP_UPSERT);
    }
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof(id), "x%d", i);
        put(s, id, 200 + i, 1000, STORE_OP_UPSERT);
    }
    struct store_search_result r = search(s, 0, 1, INT64_MIN, INT64_MAX, NULL, 0);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_str_eq((const char *)r.hits[0].id, "c1"); /* x = 0.9, the nearest live one */
    ck_assert_float_eq_tol(r.hits[0].dist, 0.81f, 1e-5f);
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("fresh");
    TCase *tc = tcase_create("fresh");
    tcase_add_test(tc, test_fresh_newest_versions_only);
    tcase_add_test(tc, test_fresh_skips_indexed_and_prunes_time);
    tcase_add_test(tc, test_fresh_refills_when_closest_are_stale);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
