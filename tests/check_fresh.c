/* The fresh half of a strong-consistency search (store/store_search.h) over a real store:
 * memtable + run + sealed segments, versions superseded across sources, deletes, windows the
 * caller searched by index, time pruning; the memory bound when the closest are all stale,
 * k up to 1000 against a model, ids seen twice while a flush moves them. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_search.h"
#include "st_test.h"
#include "store.h"
#include "store_int.h" /* store_freeze */

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

static struct store *open_store_mt(char **dir, uint64_t memtable_size)
{
    *dir = st_test_tmpdir("fresh");
    struct store_opts o = {.dir = *dir,
                           .dim = 2,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .memtable_size = memtable_size};
    struct store *s;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    next_offset = 0;
    return s;
}

static struct store *open_store(char **dir)
{
    return open_store_mt(dir, 0);
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
    ck_assert_uint_eq(r.pruned, 0); /* A's indexed segment is the caller's: not counted */
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
    ck_assert_uint_eq(r.pruned, 3); /* A's sealed a1..a3; the memtable's chunk spans 40..1500 */
    store_search_result_free(&r);
    /* The same range with A v1 searched by index: A's segment is the caller's, not pruned
     * here (pruned counts only unindexed data skipped unread). */
    r = search(s, 1, 10, 1000, 1999, &ix, 1);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_uint_eq(r.scanned, 2);
    ck_assert_uint_eq(r.pruned, 0);
    store_search_result_free(&r);
    /* Nothing in range. */
    r = search(s, 1, 10, 5000, 6000, NULL, 0);
    ck_assert_uint_eq(r.n, 0);
    ck_assert_uint_eq(r.scanned, 0);
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

/* The 40 closest records were all superseded by far-away versions: the first candidates
 * are all stale, and the search must still find the true nearest. */
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

/* ---- against a model: the newest version of every id, kept by the test ------------------ */

#define MAXN 6000

struct model {
    float x[MAXN];
    bool live[MAXN];
    int64_t ts[MAXN];
};

static void model_put(struct store *s, struct model *m, int i, int64_t ts, float x, uint8_t op)
{
    char id[16];
    snprintf(id, sizeof(id), "r%05d", i);
    put(s, id, ts, x, op);
    if (ts >= m->ts[i]) { /* the store keeps the newest by timestamp, not by arrival */
        m->ts[i] = ts;
        m->x[i] = x;
        m->live[i] = op == STORE_OP_UPSERT;
    }
}

struct ranked {
    float d;
    int i;
};

static int ranked_cmp(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i); /* ids "r%05d": numeric order is byte order */
}

/* Asserts that the search for x with k returns exactly the model's k closest live ids. */
static struct store_search_result check_model(struct store *s, const struct model *m, int n,
                                              float x, uint32_t k)
{
    static struct ranked all[MAXN];
    size_t nl = 0;
    for (int i = 0; i < n; i++)
        if (m->live[i])
            all[nl++] = (struct ranked){(m->x[i] - x) * (m->x[i] - x), i};
    qsort(all, nl, sizeof(*all), ranked_cmp);
    struct store_search_result r = search(s, x, k, INT64_MIN, INT64_MAX, NULL, 0);
    ck_assert_uint_eq(r.n, nl < k ? nl : k);
    for (size_t j = 0; j < r.n; j++) {
        char id[16];
        snprintf(id, sizeof(id), "r%05d", all[j].i);
        ck_assert_msg(r.hits[j].id_len == strlen(id) && memcmp(r.hits[j].id, id, strlen(id)) == 0,
                      "hit %zu is %.*s, want %s", j, (int)r.hits[j].id_len,
                      (const char *)r.hits[j].id, id);
        ck_assert_int_eq(r.hits[j].ts, m->ts[all[j].i]);
        ck_assert_float_eq_tol(r.hits[j].dist, all[j].d, 1e-3f * (1 + all[j].d));
    }
    /* only confirmed hits are ever held (store_search.h) */
    ck_assert_uint_le(r.peak_candidates, (uint64_t)k);
    return r;
}

/*
 * 2000 records near the query are flushed; 99% of them then get newer, far-away versions in
 * the memtable. The closest candidates are nearly all stale, and the search must still
 * return exactly the true top-k holding no more than 2k candidates at once (the old search
 * retried with 4x the room, and kept growing, until enough survived).
 */
START_TEST(test_fresh_bounded_when_closest_are_stale)
{
    char *dir;
    struct store *s = open_store(&dir);
    static struct model m;
    memset(&m, 0, sizeof(m));
    for (int i = 0; i < 2000; i++)
        model_put(s, &m, i, 10, 0.01f * (float)i, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int i = 0; i < 2000; i++)
        if (i % 100 != 0)
            model_put(s, &m, i, 20, 1000 + (float)i, STORE_OP_UPSERT);
    struct store_search_result r = check_model(s, &m, 2000, 0, 10);
    ck_assert_str_eq((const char *)r.hits[9].id, "r00900");
    ck_assert_uint_ge(r.lookups, 900); /* every stale one nearer than r00900 was looked up */
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

/*
 * The same in the other direction: far versions are flushed first, then older (late) near
 * versions land in the active memtable. Its candidates are confirmed as they come too.
 */
START_TEST(test_fresh_bounded_when_active_memtable_is_stale)
{
    char *dir;
    struct store *s = open_store(&dir);
    static struct model m;
    memset(&m, 0, sizeof(m));
    for (int i = 0; i < 2000; i++)
        if (i % 100 != 0)
            model_put(s, &m, i, 20, 1000 + (float)i, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int i = 0; i < 2000; i++)
        model_put(s, &m, i, 10, 0.01f * (float)i, STORE_OP_UPSERT);
    for (uint32_t k = 1; k <= 1000; k *= 10) {
        struct store_search_result r = check_model(s, &m, 2000, 0, k);
        store_search_result_free(&r);
    }
    close_store(s, dir);
}
END_TEST

/* Updates, late data, deletes and seals across memtable, runs and sealed segments; k up to
 * 1000, also more than there are live records. */
START_TEST(test_fresh_matches_model)
{
    char *dir;
    struct store *s = open_store(&dir);
    static struct model m;
    memset(&m, 0, sizeof(m));
    uint64_t rnd = 42;
    const int n = 5000;
    for (int round = 0; round < 4; round++) {
        for (int j = 0; j < 3000; j++) {
            rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
            int i = (int)(rnd % (uint64_t)n);
            int64_t ts = (int64_t)(rnd >> 20) % 3000; /* three windows, late data included */
            float x = (float)((rnd >> 40) % 100000) / 1000.0f;
            model_put(s, &m, i, ts, x, (rnd >> 30) % 8 == 0 ? STORE_OP_DELETE : STORE_OP_UPSERT);
        }
        if (round < 3)
            ck_assert_int_eq(store_flush(s), ST_OK);
        if (round == 1)
            seal(s, 0);
    }
    static const float qs[] = {0, 13.3f, 50, 99.99f, 150};
    for (size_t qi = 0; qi < sizeof(qs) / sizeof(qs[0]); qi++)
        for (uint32_t k = 1; k <= 1000; k = k < 10 ? k * 10 : k * 100) {
            struct store_search_result r = check_model(s, &m, n, qs[qi], k);
            store_search_result_free(&r);
        }
    /* More than there are live records. */
    struct store_search_result r = check_model(s, &m, n, 50, 1000000);
    size_t live = 0;
    for (int i = 0; i < n; i++)
        live += m.live[i];
    ck_assert_uint_eq(r.n, live);
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

START_TEST(test_fresh_everything_deleted)
{
    char *dir;
    struct store *s = open_store(&dir);
    static struct model m;
    memset(&m, 0, sizeof(m));
    for (int i = 0; i < 300; i++)
        model_put(s, &m, i, 10, (float)i, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int i = 0; i < 150; i++)
        model_put(s, &m, i, 20, 0, STORE_OP_DELETE);
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int i = 150; i < 300; i++)
        model_put(s, &m, i, 20, 0, STORE_OP_DELETE);
    for (uint32_t k = 1; k <= 1000; k *= 10) {
        struct store_search_result r = check_model(s, &m, 300, 0, k);
        ck_assert_uint_eq(r.n, 0);
        store_search_result_free(&r);
    }
    close_store(s, dir);
}
END_TEST

/* One id in a sealed segment, a run and the memtable: returned once, its newest version. */
START_TEST(test_fresh_duplicates_across_sources)
{
    char *dir;
    struct store *s = open_store(&dir);
    put(s, "d", 10, 1, STORE_OP_UPSERT);
    put(s, "e", 11, 5, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    seal(s, 0);
    put(s, "d", 20, 2, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    put(s, "d", 30, 3, STORE_OP_UPSERT);
    put(s, "d", 5, 0, STORE_OP_UPSERT); /* late: older than all, never returned */
    struct store_search_result r = search(s, 0, 10, INT64_MIN, INT64_MAX, NULL, 0);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_str_eq((const char *)r.hits[0].id, "d");
    ck_assert_int_eq(r.hits[0].ts, 30);
    ck_assert_float_eq(r.hits[0].dist, 9);
    ck_assert_str_eq((const char *)r.hits[1].id, "e");
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

struct mover {
    struct store *s;
    _Atomic bool stop;
    _Atomic int flushes;
};

static void *flush_loop(void *arg)
{
    struct mover *mv = arg;
    while (!atomic_load(&mv->stop)) {
        if (store_flush(mv->s) != ST_OK)
            return NULL;
        atomic_fetch_add(&mv->flushes, 1);
    }
    return NULL;
}

/*
 * Flushes run while searches do, so records move from the memtable into segments during a
 * scan and may be visited twice: each id is still returned once, and every record written
 * before the search is found.
 */
START_TEST(test_fresh_ids_once_while_flushing)
{
    char *dir;
    struct store *s = open_store(&dir);
    struct mover mv = {.s = s};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, flush_loop, &mv), 0);
    char id[16];
    for (int round = 0; round < 40; round++) {
        for (int j = 0; j < 20; j++) {
            snprintf(id, sizeof(id), "m%05d", round * 20 + j);
            put(s, id, round * 20 + j, (float)(round * 20 + j), STORE_OP_UPSERT);
        }
        uint32_t k = (uint32_t)(round + 1) * 20; /* every record written so far */
        struct store_search_result r = search(s, 0, k, INT64_MIN, INT64_MAX, NULL, 0);
        ck_assert_uint_eq(r.n, k);
        for (size_t j = 0; j < r.n; j++) {
            snprintf(id, sizeof(id), "m%05d", (int)j); /* x = j: closest first, each once */
            ck_assert_str_eq((const char *)r.hits[j].id, id);
        }
        store_search_result_free(&r);
    }
    atomic_store(&mv.stop, true);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_gt(atomic_load(&mv.flushes), 0);
    close_store(s, dir);
}
END_TEST

/*
 * Memtable chunks wholly outside the query's time range are skipped unread, and a late record
 * widens its chunk's span so it is never skipped: 6000 records in event-time order over
 * several chunks of a small memtable, then one far older record written last.
 */
/* The two ranges test_fresh_prunes_memtable_chunks asks, active or frozen: 50 records in
 * [5000, 5099] (one or two chunks; the late record's chunk is read as well), and around
 * x = 7.5 in [1000, 2000) fillers only, the superseded first versions of u, d (and v) never. */
static void check_pruned_ranges(struct store *s, uint64_t total, bool v_stale)
{
    struct store_search_result r = search(s, 0, 1000, 5000, 5099, NULL, 0);
    ck_assert_uint_eq(r.n, 50);
    for (size_t j = 0; j < r.n; j++)
        ck_assert(r.hits[j].ts >= 5000 && r.hits[j].ts <= 5099);
    ck_assert_uint_eq(r.scanned, 50);
    ck_assert_uint_ge(r.pruned, total / 2);
    ck_assert_uint_lt(r.pruned, total);
    store_search_result_free(&r);
    r = search(s, 7.5f, 1000, 1000, 1999, NULL, 0);
    ck_assert_uint_eq(r.n, 500);
    ck_assert_ptr_null(hit(&r, "u"));
    ck_assert_ptr_null(hit(&r, "d"));
    if (v_stale)
        ck_assert_ptr_null(hit(&r, "v"));
    store_search_result_free(&r);
}

START_TEST(test_fresh_prunes_memtable_chunks)
{
    char *dir;
    struct store *s = open_store_mt(&dir, 1u << 20); /* chunks of ~64 KiB: ~650 records */
    const int n = 6000;
    char id[16];
    /* u and d: early versions in the first chunk, superseded by an update and a delete in the
     * last one (out of the range asked below): a skipped chunk must not bring them back. */
    put(s, "u", 1500, 7.5f, STORE_OP_UPSERT);
    put(s, "d", 1501, 7.5f, STORE_OP_UPSERT);
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "p%05d", i);
        put(s, id, 1000 + (int64_t)i * 2, (float)(i % 100), STORE_OP_UPSERT);
    }
    put(s, "late", 3, 0.5f, STORE_OP_UPSERT);
    put(s, "u", 20000, 7.5f, STORE_OP_UPSERT);
    put(s, "d", 20001, 0, STORE_OP_DELETE);
    const uint64_t total = (uint64_t)n + 5; /* memtable entries, old versions included */
    check_pruned_ranges(s, total, false);
    /* The late record sits in the newest chunk among records 10 s younger: still found. */
    struct store_search_result r = search(s, 0, 10, 0, 1003, NULL, 0);
    ck_assert_uint_eq(r.n, 3);
    ck_assert_str_eq((const char *)r.hits[0].id, "p00000");
    ck_assert_ptr_nonnull(hit(&r, "late"));
    ck_assert_ptr_nonnull(hit(&r, "p00001"));
    ck_assert_uint_ge(r.pruned, total / 2);
    store_search_result_free(&r);
    /* Nothing in range: every chunk skipped. */
    r = search(s, 0, 10, 100000, 200000, NULL, 0);
    ck_assert_uint_eq(r.n, 0);
    ck_assert_uint_eq(r.pruned, total);
    store_search_result_free(&r);
    /* Frozen: the same spans; then v's first version frozen and its update in the new active
     * memtable, outside the range. */
    put(s, "v", 1502, 7.5f, STORE_OP_UPSERT);
    pthread_mutex_lock(&s->sync_mu); /* store_freeze's contract */
    ck_assert_int_eq(store_freeze(s), ST_OK);
    pthread_mutex_unlock(&s->sync_mu);
    put(s, "v", 20002, 7.5f, STORE_OP_UPSERT);
    check_pruned_ranges(s, total + 1, true); /* v's first version frozen: one more entry */
    r = search(s, 7.5f, 10, 20000, 30000, NULL, 0);
    ck_assert_uint_eq(r.n, 2); /* u and v, newest versions; d deleted */
    store_search_result_free(&r);
    close_store(s, dir);
}
END_TEST

struct appender {
    struct store *s;
    _Atomic int64_t last; /* ts of the newest record whose write returned */
    _Atomic bool stop;
};

static void *append_loop(void *arg)
{
    struct appender *a = arg;
    char id[16];
    for (int64_t i = 0; i < 20000 && !atomic_load(&a->stop); i++) {
        snprintf(id, sizeof(id), "t%06d", (int)i);
        put(a->s, id, 10000 + i, (float)i, STORE_OP_UPSERT);
        atomic_store(&a->last, 10000 + i);
    }
    return NULL;
}

/* While another thread writes, a search bounded to the newest record written so far finds it:
 * a chunk's span covers every record published before the search began. */
START_TEST(test_fresh_prunes_while_writing)
{
    char *dir;
    struct store *s = open_store_mt(&dir, 4u << 20);
    struct appender a = {.s = s, .last = -1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, append_loop, &a), 0);
    int searches = 0, during = 0;
    for (;;) {
        int64_t last = atomic_load(&a.last);
        if (last < 0)
            continue;
        char id[16];
        snprintf(id, sizeof(id), "t%06d", (int)(last - 10000));
        struct store_search_result r = search(s, 0, 1, last, last, NULL, 0);
        ck_assert_uint_eq(r.n, 1);
        ck_assert_str_eq((const char *)r.hits[0].id, id);
        store_search_result_free(&r);
        searches++;
        during += last < 10000 + 19999;
        if (last == 10000 + 19999 && searches >= 10)
            break;
    }
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_gt(during, 0); /* at least one search raced the writer */
    close_store(s, dir);
}
END_TEST

struct reupserter {
    struct store *s;
    _Atomic bool done;
};

/* Fillers near 0, and every 20th record a new version of x (far from them, newer ts): x's
 * newest version often opens a chunk of its own while its old one is already superseded. */
static void *reupsert_loop(void *arg)
{
    struct reupserter *a = arg;
    char id[16];
    for (int i = 0; i < 4000; i++) {
        snprintf(id, sizeof(id), "f%05d", i);
        put(a->s, id, 10 + i, (float)(i % 50), STORE_OP_UPSERT);
        if (i % 20 == 19) /* each version its own vector, told by its ts: x = 1000 + (ts % 3) */
            put(a->s, "x", 10 + i, 1000 + (float)((10 + i) % 3), STORE_OP_UPSERT);
        if (i % 400 == 399) /* older versions into runs: x met in two sources of one scan */
            ck_assert_int_eq(store_flush(a->s), ST_OK);
    }
    atomic_store(&a->done, true);
    return NULL;
}

/* While x is re-upserted, a search always finds it. Two ways it went missing: (1) the version
 * the scan met was superseded by one written after the scan captured its sources, which
 * nothing visits — the search now ranks that newer version instead (before: x vanished in
 * every run); (2) the chunk holding its newest version lacked that version in its span when
 * the version was published (an empty span, INT64_MAX..INT64_MIN, is skipped for any
 * from_ts): the span is widened before `published` is. */
START_TEST(test_fresh_id_kept_while_superseded)
{
    char *dir;
    struct store *s = open_store_mt(&dir, 1u << 20);
    put(s, "x", 1, 1001, STORE_OP_UPSERT); /* 1000 + 1 % 3 */
    put(s, "g1", 2, 0, STORE_OP_UPSERT);   /* so that every answer has three hits */
    put(s, "g2", 3, 0, STORE_OP_UPSERT);
    struct reupserter a = {.s = s};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, reupsert_loop, &a), 0);
    int searches = 0, during = 0;
    while (!atomic_load(&a.done) || searches < 10) {
        bool racing = !atomic_load(&a.done);
        float q[2] = {1000, 0};
        struct store_search_query fq = {.vec = q,
                                        .dim = 2,
                                        .metric = ST_METRIC_L2,
                                        .k = 3,
                                        .from_ts = 0,
                                        .to_ts = INT64_MAX,
                                        .with_vector = true};
        struct store_search_result r;
        ck_assert_int_eq(store_search(s, &fq, &r), ST_OK);
        /* x once, first (the fillers are at 0..49), as one version: its ts, vector and
         * distance agree. */
        ck_assert_uint_eq(r.n, 3);
        ck_assert_str_eq((const char *)r.hits[0].id, "x");
        ck_assert_ptr_eq(hit(&r, "x"), &r.hits[0]);
        float want = 1000 + (float)(r.hits[0].ts % 3);
        ck_assert_float_eq(r.hits[0].vec[0], want);
        ck_assert_float_eq(r.hits[0].dist, (want - 1000) * (want - 1000));
        store_search_result_free(&r);
        /* Bounded to ts 2000, which x's versions pass mid-run: a version of x only while in
         * range, once, as one version; none at all once the newest is past it (a kept older
         * version is dropped, not returned). */
        bool past = !racing;
        fq.to_ts = 2000;
        ck_assert_int_eq(store_search(s, &fq, &r), ST_OK);
        const struct store_search_hit *xh = hit(&r, "x");
        if (xh != NULL) {
            ck_assert_int_le(xh->ts, 2000);
            ck_assert_float_eq(xh->vec[0], 1000 + (float)(xh->ts % 3));
            ck_assert(!past);
        }
        store_search_result_free(&r);
        searches++;
        during += racing;
    }
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_gt(during, 0);
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
    tcase_add_test(tc, test_fresh_bounded_when_closest_are_stale);
    tcase_add_test(tc, test_fresh_bounded_when_active_memtable_is_stale);
    tcase_add_test(tc, test_fresh_matches_model);
    tcase_add_test(tc, test_fresh_everything_deleted);
    tcase_add_test(tc, test_fresh_duplicates_across_sources);
    tcase_add_test(tc, test_fresh_ids_once_while_flushing);
    tcase_add_test(tc, test_fresh_prunes_memtable_chunks);
    tcase_add_test(tc, test_fresh_prunes_while_writing);
    tcase_add_test(tc, test_fresh_id_kept_while_superseded);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
