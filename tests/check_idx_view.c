/*
 * Tests for the search over many window parts (indexer/idx_view.h, idx_part.h): the bounded
 * search (the k-th / ef-th best distance found so far passed into each next part's search,
 * parts ordered by a cheap hint) against the exhaustive reference (every part for k with the
 * full ef) and against brute force over the records a search may return — the newest version
 * of each id, not deleted, inside the time range.
 */
#include <check.h>
#include <time.h>
#include <stdatomic.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_hnsw.h"
#include "idx_hnsw_int.h"
#include "ivfpq_format.h"
#include "idx_ivfpq.h"
#include "idx_part.h"
#include "idx_pool.h"
#include "idx_view.h"
#include "st_distance.h"
#include "st_test.h"
#include "store_int.h"

#define D      16
#define WINDOW 60000

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t urand(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static float frand(void)
{
    return (float)urand(1u << 24) / (float)(1u << 24);
}

/* Clustered vectors, as embeddings are: 12 centres, each point near one. */
static float centres[12][D];

static void clustered(float *v)
{
    const float *c = centres[urand(12)];
    for (int d = 0; d < D; d++)
        v[d] = c[d] + (frand() - 0.5f) * 0.6f;
}

/* Windows whose records (bit w) all lie near a centre of their own, far from the 12 (content
 * that drifts: the nearest neighbours of a query there are all in those windows' parts). */
static unsigned fx_hot_windows;

static void near_hot(float *v)
{
    for (int d = 0; d < D; d++)
        v[d] = 20.0f + (frand() - 0.5f) * 0.6f;
}

/* Every record written to any part (the reference). */
struct rec {
    uint32_t id;
    int64_t ts;
    int32_t partition;
    int64_t offset;
    uint8_t op;
    float vec[D];
};

struct fx {
    char *dir;
    struct rec *recs;
    size_t nrecs, cap;
    uint32_t next_id;
    struct idx_part *parts[64]; /* newest window first */
    size_t nparts;
    struct idx_view *view;
    int64_t skip_start; /* with skip_node >= 0: that node's part of that window is dead */
    int skip_node;
    struct idx_part *donor; /* "ivfpq-shared": the last part built that can donate (borrowed) */
    unsigned adopted;       /* parts built with the donor's quantizer */
};

static int rec_id_cmp(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* fx_part writes its first fx_far records far from every cluster (the first very far). */
static size_t fx_far;

/*
 * Writes part (window w, node) with up to n records and builds its index (type: "hnsw" |
 * "ivfpq" | "ivfpq-shared": IVF-PQ adopting the quantizer of the part built before when it
 * fits, idx_part_build_on). A record reuses an id of an older window with probability reuse% (a
 * newer version: the old one must be hidden), one in three of those as a delete; all_deletes: every
 * record deletes an older id (the part indexes nothing).
 */
static struct idx_part *fx_part(struct fx *f, unsigned w, unsigned node, size_t n, unsigned reuse,
                                bool all_deletes, const char *type)
{
    struct rec *mine = calloc(n ? n : 1, sizeof(*mine));
    size_t older = f->nrecs; /* records of older windows (built before this one) */
    size_t got = 0;
    for (size_t j = 0; j < n; j++) {
        struct rec r = {.ts = (int64_t)w * WINDOW + (int64_t)j * 7,
                        .partition = (int32_t)node,
                        .offset = (int64_t)(f->nrecs + got),
                        .op = STORE_OP_UPSERT};
        bool again = older > 0 && (all_deletes || urand(100) < reuse);
        if (again) {
            r.id = f->recs[urand((uint32_t)older)].id;
            if (all_deletes || urand(3) == 0)
                r.op = STORE_OP_DELETE;
            bool dup = false; /* ids are unique within a segment */
            for (size_t k = 0; k < got && !dup; k++)
                dup = mine[k].id == r.id;
            if (dup)
                continue;
        } else {
            r.id = f->next_id++;
        }
        if (r.op == STORE_OP_UPSERT && w < 32 && (fx_hot_windows >> w & 1))
            near_hot(r.vec);
        else if (r.op == STORE_OP_UPSERT)
            clustered(r.vec);
        mine[got++] = r;
    }
    for (size_t j = 0; j < fx_far && j < got; j++) /* records far from every cluster */
        for (int d = 0; d < D; d++)
            mine[j].vec[d] = j == 0 ? 1000.0f : mine[j].vec[d] + 40.0f;
    qsort(mine, got, sizeof(*mine), rec_id_cmp);
    struct store_seg_in *in = calloc(got ? got : 1, sizeof(*in));
    char(*ids)[12] = calloc(got ? got : 1, 12);
    for (size_t j = 0; j < got; j++) {
        snprintf(ids[j], 12, "%08u", mine[j].id);
        in[j] = (struct store_seg_in){.id = (const uint8_t *)ids[j],
                                      .id_len = 8,
                                      .ts = mine[j].ts,
                                      .partition = mine[j].partition,
                                      .offset = mine[j].offset,
                                      .op = mine[j].op,
                                      .vec = mine[j].op == STORE_OP_UPSERT ? mine[j].vec : NULL};
    }
    int64_t start = (int64_t)w * WINDOW;
    char seg[600], ix[600];
    snprintf(seg, sizeof(seg), "%s/n%u@%lld.seg", f->dir, node, (long long)start);
    snprintf(ix, sizeof(ix), "%s/n%u@%lld.%s", f->dir, node, (long long)start, type);
    struct store_seg_meta m = {start, start + WINDOW, STORE_SEG_SEALED, 1, false, 0, 0};
    struct st_err err = {0};
    uint64_t bytes;
    ck_assert_msg(store_segment_write(NULL, seg, D, &m, in, got, &bytes, &err) == ST_OK, "%s",
                  err.msg);
    struct idx_cat_entry e = {.start = start, .end = start + WINDOW, .version = 1};
    snprintf(e.node, sizeof(e.node), "n%u", node);
    bool shared = strcmp(type, "ivfpq-shared") == 0;
    snprintf(e.index, sizeof(e.index), "%s", shared ? "ivfpq" : type);
    struct cfg_index cix = {.type = CFG_INDEX_HNSW, .m = 6, .ef_construction = 24};
    if (strcmp(e.index, "ivfpq") == 0)
        cix = (struct cfg_index){.type = CFG_INDEX_IVFPQ, .nlist = 4, .pq_m = 4, .nbits = 8};
    struct idx_part *p;
    ck_assert_msg(idx_part_build_on(&e, seg, ix, &cix, ST_METRIC_L2, 1, shared ? f->donor : NULL,
                                    NULL, &p, &err) == ST_OK,
                  "%s", err.msg);
    f->adopted += p->adopted;
    if (shared && idx_part_can_donate(p, &cix)) /* not the one-vector part (one list) */
        f->donor = p;
    for (size_t j = 0; j < got; j++) {
        if (f->nrecs == f->cap) {
            f->cap = f->cap ? 2 * f->cap : 1024;
            f->recs = realloc(f->recs, f->cap * sizeof(*f->recs));
        }
        f->recs[f->nrecs++] = mine[j];
    }
    free(in);
    free(ids);
    free(mine);
    return p;
}

/*
 * windows x nodes parts of per records each (oldest built first, so reused ids are older
 * versions), then an all-delete part and a one-vector part in the newest windows; the view.
 */
static void fx_open(struct fx *f, unsigned windows, unsigned nodes, size_t per, const char *type)
{
    memset(f, 0, sizeof(*f));
    f->skip_node = -1;
    rng = 0x2545f4914f6cdd1dull;
    for (int c = 0; c < 12; c++)
        for (int d = 0; d < D; d++)
            centres[c][d] = frand() * 4;
    f->dir = st_test_tmpdir("idxview");
    struct idx_part *built[64];
    size_t nb = 0;
    for (unsigned w = 0; w < windows; w++)
        for (unsigned node = 0; node < nodes; node++)
            built[nb++] = fx_part(f, w, node, per, 15, false, type);
    built[nb++] = fx_part(f, windows, 0, 5, 0, true, type);      /* deletes only: indexes nothing */
    built[nb++] = fx_part(f, windows + 1, 0, 1, 0, false, type); /* one vector */
    ck_assert_uint_eq(built[nb - 2]->n, 0);
    ck_assert_uint_eq(built[nb - 1]->n, 1);
    for (size_t i = nb; i-- > 0;) /* newest window first */
        f->parts[f->nparts++] = built[i];
    ck_assert_int_eq(idx_view_build(f->parts, f->nparts, NULL, &f->view), ST_OK);
    ck_assert_uint_gt(f->view->hidden, 0); /* superseded and deleted versions exist */
}

static void fx_close(struct fx *f)
{
    idx_view_release(f->view);
    for (size_t i = 0; i < f->nparts; i++)
        idx_part_unref(f->parts[i]);
    free(f->recs);
    st_test_rmrf(f->dir);
    free(f->dir);
}

static bool newer(const struct rec *a, const struct rec *b)
{
    if (a->ts != b->ts)
        return a->ts > b->ts;
    if (a->partition != b->partition)
        return a->partition > b->partition;
    return a->offset > b->offset;
}

/* The record a search may return for each id (NULL: none), by id. */
static const struct rec **fx_visible(const struct fx *f, int64_t from, int64_t to)
{
    const struct rec **newest = calloc(f->next_id, sizeof(*newest));
    for (size_t i = 0; i < f->nrecs; i++) {
        const struct rec *r = &f->recs[i];
        if (f->skip_node >= 0 && r->partition == f->skip_node && r->ts >= f->skip_start &&
            r->ts < f->skip_start + WINDOW)
            continue; /* a dead member's records are no version of anything */
        if (newest[r->id] == NULL || newer(r, newest[r->id]))
            newest[r->id] = r;
    }
    for (uint32_t id = 0; id < f->next_id; id++)
        if (newest[id] != NULL &&
            (newest[id]->op != STORE_OP_UPSERT || newest[id]->ts < from || newest[id]->ts > to))
            newest[id] = NULL;
    return newest;
}

/* Exact top-k ids over the visible records; returns the count. */
static size_t brute(const struct fx *f, const struct rec **vis, const float *q, size_t k,
                    uint32_t *ids)
{
    struct st_hit *heap = malloc(k * sizeof(*heap));
    size_t n = 0;
    st_dist_fn dist = st_metric_fn(st_kernels(), ST_METRIC_L2);
    for (uint32_t id = 0; id < f->next_id; id++)
        if (vis[id] != NULL)
            st_topk_push(heap, &n, k, (struct st_hit){id, dist(q, vis[id]->vec, D)});
    st_hits_sort(heap, n);
    for (size_t i = 0; i < n; i++)
        ids[i] = heap[i].id;
    free(heap);
    return n;
}

/* Checks one result as every search must hold it: each hit is its id's visible version (so
 * never a superseded, deleted or out-of-range one), its distance is exact, no id twice, sorted.
 * Fills ids. */
static void check_hits(const struct fx *f, const struct rec **vis, const float *q,
                       const struct idx_view_hit *h, size_t n, uint32_t *ids)
{
    st_dist_fn dist = st_metric_fn(st_kernels(), ST_METRIC_L2);
    for (size_t i = 0; i < n; i++) {
        struct store_seg_record r;
        idx_part_record(h[i].part, h[i].rec, &r);
        ck_assert_uint_eq(r.id_len, 8);
        char s[9];
        memcpy(s, r.id, 8);
        s[8] = '\0';
        uint32_t id = (uint32_t)strtoul(s, NULL, 10);
        ck_assert_uint_lt(id, f->next_id);
        ck_assert_msg(vis[id] != NULL, "id %u returned: superseded, deleted or out of range", id);
        ck_assert_int_eq(r.ts, vis[id]->ts); /* this very version */
        ck_assert_int_eq(r.offset, vis[id]->offset);
        ck_assert(h[i].dist == dist(q, vis[id]->vec, D));
        if (i > 0)
            ck_assert(h[i - 1].dist <= h[i].dist);
        for (size_t j = 0; j < i; j++)
            ck_assert_uint_ne(ids[j], id);
        ids[i] = id;
    }
}

static size_t overlap(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
    size_t hit = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[i] == b[j]) {
                hit++;
                break;
            }
    return hit;
}

struct run {
    double recall_exh, recall_bnd;
    size_t same;           /* queries where both returned the same hits, in order */
    size_t truth_total;    /* brute-force hits over all queries */
    size_t again;          /* parts the bounded search searched a second time */
    size_t max_shared;     /* the most parts one query searched first for their share */
    uint32_t kp_lo, kp_hi; /* the least and most hits a share asked for (kp_lo > kp_hi: none) */
    uint32_t ef_lo;        /* the least, over queries with shares, of their largest beam */
};

/* The hit counts part_share gives the parts a query over [from, to] for k meets: the least and
 * the most (lo > hi when none gets a share), from the view's live counts as the search sees
 * them (parts the range cuts count for nothing and get none). */
static void expected_kp(const struct fx *f, uint32_t k, int64_t from, int64_t to, uint32_t *lo,
                        uint32_t *hi)
{
    const struct idx_view *v = f->view;
    uint64_t total = 0;
    for (size_t i = 0; i < v->n; i++) {
        const struct idx_part *p = v->parts[i];
        if (v->live[i] > 0 && p->max_ts >= from && p->min_ts <= to && p->min_ts >= from &&
            p->max_ts <= to)
            total += v->live[i];
    }
    *lo = UINT32_MAX;
    *hi = 0;
    for (size_t i = 0; i < v->n; i++) {
        const struct idx_part *p = v->parts[i];
        if (total == 0 || v->live[i] == 0 || p->min_ts < from || p->max_ts > to)
            continue;
        double e = (double)k * v->live[i] / (double)total, want = ceil(3 * e) + 2;
        if (!(want < k))
            continue;
        *lo = (uint32_t)want < *lo ? (uint32_t)want : *lo;
        *hi = (uint32_t)want > *hi ? (uint32_t)want : *hi;
    }
}

/* nq queries of k (drawn by gen) through both searches (the bounded one on pool's threads;
 * NULL: its own; whole: every part with its whole beam, idx_view_query.whole_beams); every hit
 * checked; recall against brute force. */
static struct run compare_with(const struct fx *f, size_t nq, uint32_t k, uint32_t ef, int64_t from,
                               int64_t to, struct idx_pool *pool, void (*gen)(float *), bool whole)
{
    const struct rec **vis = fx_visible(f, from, to);
    struct idx_view_hit *a = malloc(k * sizeof(*a)), *b = malloc(k * sizeof(*b));
    uint32_t *ia = malloc(k * sizeof(*ia)), *ib = malloc(k * sizeof(*ib)),
             *truth = malloc(k * sizeof(*truth));
    size_t fa = 0, fb = 0;
    struct run r = {.kp_lo = UINT32_MAX, .ef_lo = UINT32_MAX};
    for (size_t qi = 0; qi < nq; qi++) {
        float q[D];
        gen(q);
        struct idx_view_query vq = {q, k, ef, 4, from, to, true, NULL, false};
        struct idx_view_stats sa, sb;
        size_t na, nb;
        ck_assert_int_eq(idx_view_search(f->view, &vq, a, &na, &sa), ST_OK);
        vq.exhaustive = false;
        vq.pool = pool;
        vq.whole_beams = whole;
        ck_assert_int_eq(idx_view_search(f->view, &vq, b, &nb, &sb), ST_OK);
        /* a part searched twice counts once, on whichever thread searched it first */
        ck_assert_uint_le(sb.parts_by_helpers, sb.parts_searched);
        ck_assert_uint_le(sb.parts_again, sb.parts_shared);
        ck_assert_uint_lt(sb.parts_shared, sb.parts_searched + (sb.parts_searched == 0));
        if (whole)
            ck_assert_uint_eq(sb.parts_shared, 0);
        r.max_shared = sb.parts_shared > r.max_shared ? sb.parts_shared : r.max_shared;
        if (sb.parts_shared > 0) {
            ck_assert_uint_le(sb.share_kp_min, sb.share_kp_max);
            ck_assert_uint_lt(sb.share_kp_max, k);
            r.kp_lo = sb.share_kp_min < r.kp_lo ? sb.share_kp_min : r.kp_lo;
            r.kp_hi = sb.share_kp_max > r.kp_hi ? sb.share_kp_max : r.kp_hi;
            r.ef_lo = sb.share_ef_max < r.ef_lo ? sb.share_ef_max : r.ef_lo;
        }
        /* the same parts and windows are searched either way (the bound narrows, never skips) */
        ck_assert_uint_eq(sa.parts_searched, sb.parts_searched);
        ck_assert_uint_eq(sa.windows_searched, sb.windows_searched);
        ck_assert_uint_eq(sa.parts_again, 0); /* the exhaustive search has one pass */
        r.again += sb.parts_again;
        check_hits(f, vis, q, a, na, ia);
        check_hits(f, vis, q, b, nb, ib);
        size_t nt = brute(f, vis, q, k, truth);
        r.truth_total += nt;
        fa += overlap(ia, na, truth, nt);
        fb += overlap(ib, nb, truth, nt);
        bool same = na == nb;
        for (size_t i = 0; same && i < na; i++)
            same = a[i].part == b[i].part && a[i].rec == b[i].rec && a[i].dist == b[i].dist;
        r.same += same;
    }
    r.recall_exh = r.truth_total ? (double)fa / (double)r.truth_total : 1;
    r.recall_bnd = r.truth_total ? (double)fb / (double)r.truth_total : 1;
    free(a);
    free(b);
    free(ia);
    free(ib);
    free(truth);
    free(vis);
    return r;
}

static struct run compare_on(const struct fx *f, size_t nq, uint32_t k, uint32_t ef, int64_t from,
                             int64_t to, struct idx_pool *pool)
{
    return compare_with(f, nq, k, ef, from, to, pool, clustered, false);
}

static struct run compare(const struct fx *f, size_t nq, uint32_t k, uint32_t ef, int64_t from,
                          int64_t to)
{
    return compare_on(f, nq, k, ef, from, to, NULL);
}

/* HNSW parts: the bounded search with whole beams keeps the reference's recall (within 0.005)
 * at several ef, with and without a time range cutting windows and parts in two; masked labels
 * never come back either way. With each part's share (idx_view.c, part_share) the same holds
 * from ef = 3k and for the default ef; at ef = k, where a part's first beam is 4 of 10 here,
 * recall is traded for speed: within 0.07 (m = 6 graphs; 0.996 -> 0.975 on Fashion-MNIST's 24
 * windows, still above one index's 0.909 at that ef). A range that cuts every part it meets
 * leaves no part to its share: nothing is searched twice. */
START_TEST(test_bound_hnsw_recall)
{
    struct fx f;
    fx_open(&f, 8, 2, 500, "hnsw");
    const struct {
        uint32_t k, ef;
        int64_t from, to;
    } cases[] = {
        {10, 10, INT64_MIN, INT64_MAX},
        {10, 40, INT64_MIN, INT64_MAX},
        {10, 0, INT64_MIN, INT64_MAX}, /* default ef */
        {5, 24, INT64_MIN, INT64_MAX},
        {10, 32, 2 * WINDOW + 500, 7 * WINDOW + 300},         /* partial first and last windows */
        {64, 0, INT64_MIN, INT64_MAX},                        /* the default beam is not scaled */
        {10, 32, 3 * WINDOW + 7 * 400, 4 * WINDOW + 7 * 100}, /* every part met is cut */
    };
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(2, &pool), ST_OK);
    for (int whole = 1; whole >= 0; whole--)
        for (int par = 0; par < 2; par++) /* the parts one after another, then side by side */
            for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
                struct run r = compare_with(&f, 400, cases[c].k, cases[c].ef, cases[c].from,
                                            cases[c].to, par ? pool : NULL, clustered, whole);
                ck_assert_uint_gt(r.truth_total, 0);
                bool at_k = !whole && cases[c].ef == cases[c].k;
                ck_assert_msg(r.recall_bnd >= r.recall_exh - (at_k ? 0.07 : 0.005),
                              "case %zu, pool %d, whole %d: bounded recall %.4f, exhaustive %.4f",
                              c, par, whole, r.recall_bnd, r.recall_exh);
                ck_assert_msg(r.recall_bnd >= 0.9, "case %zu: recall %.4f", c, r.recall_bnd);
                /* mostly the very same answer (at ef = k with shares, more than half) */
                ck_assert_msg(r.same >= (at_k ? 400 / 2 : 400 * 9 / 10),
                              "case %zu, pool %d, whole %d: %zu of 400 the same", c, par, whole,
                              r.same);
                /* each share sized from the live labels of the parts the range leaves whole:
                 * 16 parts of ~470 live ask for 4 of 10; with the first and last windows cut,
                 * the 8 whole ones for 6 */
                uint32_t lo, hi;
                expected_kp(&f, cases[c].k, cases[c].from, cases[c].to, &lo, &hi);
                if (!whole && r.max_shared > 0) {
                    ck_assert_msg(r.kp_lo >= lo && r.kp_hi <= hi,
                                  "case %zu: shares of %u..%u hits, expected within %u..%u", c,
                                  r.kp_lo, r.kp_hi, lo, hi);
                    /* an explicit ef scaled by kp / k, the default one not (max(kp, 64)) */
                    ck_assert_uint_ge(r.ef_lo,
                                      cases[c].ef ? (cases[c].ef * lo + cases[c].k - 1) / cases[c].k
                                                  : 64);
                }
                /* the 4 parts of the cut windows keep their whole beams */
                if (c == 4)
                    ck_assert_uint_le(r.max_shared, 12 - 4);
                if (c == 6)
                    ck_assert_uint_eq(r.max_shared, 0);
                if (!whole && c == 1)
                    ck_assert_uint_ge(r.max_shared, 12); /* 16 equal parts: all but the first */
            }
    idx_pool_free(pool);
    fx_close(&f);
}
END_TEST

/* Windows of drifting content: a query's k nearest all lie in two or three of twelve windows.
 * Each part's first search is sized to its share of the vectors (a part of 1/12 is searched for
 * 5 hits); a part with all but one of them within the final bound is searched again with the
 * whole beam, so recall stays the reference's: within 0.005 at ef 40, 0.05 at ef = k (a first
 * search of beam 5 misses some of a part's best). Without the second search recall falls by
 * 0.08 and more (0.84 against 0.93 at ef 10; with 4-hit shares 0.79, and 0.90 against 1.00 at
 * ef 40). */
START_TEST(test_share_hot_windows)
{
    const unsigned masks[] = {1u << 3 | 1u << 8, 1u << 1 | 1u << 5 | 1u << 10};
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(2, &pool), ST_OK);
    for (size_t m = 0; m < 2; m++) {
        fx_hot_windows = masks[m];
        struct fx f;
        fx_open(&f, 12, 1, 200, "hnsw");
        fx_hot_windows = 0;
        for (int par = 0; par < 2; par++)
            for (uint32_t ef = 10; ef <= 40; ef += 30) {
                struct run r = compare_with(&f, 200, 10, ef, INT64_MIN, INT64_MAX,
                                            par ? pool : NULL, near_hot, false);
                ck_assert_uint_eq(r.truth_total, 200 * 10);
                ck_assert_msg(r.recall_bnd >= r.recall_exh - (ef == 10 ? 0.05 : 0.005),
                              "hot %zu, pool %d, ef %u: recall %.4f, exhaustive %.4f", m, par, ef,
                              r.recall_bnd, r.recall_exh);
                ck_assert_msg(r.recall_exh >= 0.9, "exhaustive recall %.4f", r.recall_exh);
                /* one after another, the first hot part is searched whole (no bound yet), the
                 * others for their share first, then again */
                if (par == 0)
                    ck_assert_msg(r.again >= 100, "hot %zu, ef %u: %zu parts searched again", m, ef,
                                  r.again);
            }
        /* and where the neighbours are spread (the other windows' clusters), few are */
        struct run r = compare_on(&f, 200, 10, 40, INT64_MIN, INT64_MAX, NULL);
        ck_assert_msg(r.again < 200, "%zu parts searched again for 200 spread queries", r.again);
        fx_close(&f);
    }
    idx_pool_free(pool);
}
END_TEST

/* IVF-PQ parts: the bound only drops what cannot enter the result, so the bounded search
 * returns exactly the reference's hits (parts, records, distances, order). */
START_TEST(test_bound_ivfpq_exact)
{
    struct fx f;
    fx_open(&f, 5, 2, 300, "ivfpq");
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(3, &pool), ST_OK);
    for (int c = 0; c < 6; c++) { /* c >= 3: the parts searched side by side, as exactly */
        int64_t from = c % 3 == 2 ? WINDOW + 100 : INT64_MIN,
                to = c % 3 == 2 ? 4 * WINDOW : INT64_MAX;
        struct run r = compare_on(&f, 300, c % 3 == 1 ? 3 : 10, 0, from, to, c >= 3 ? pool : NULL);
        ck_assert_uint_eq(r.same, 300);
        ck_assert(r.recall_bnd == r.recall_exh);
    }
    idx_pool_free(pool);
    fx_close(&f);
}
END_TEST

/*
 * IVF-PQ windows that adopted one quantizer (idx_part_build_on) are searched as one index:
 * the view groups them (the quantizers compared byte for byte), every hit is its id's visible
 * version at its exact distance (superseded, deleted and out-of-range records never come
 * back, with a time range cutting windows in two, on one thread or side by side), recall is
 * one index's, and the same parts count as searched. A window of drifted content
 * trains its own quantizer, and the next window like it adopts that one.
 */
START_TEST(test_shared_quantizer)
{
    struct fx f;
    fx_open(&f, 5, 2, 300, "ivfpq-shared");
    size_t with = 0, groups = 0;
    for (size_t k = 0; k < f.nparts; k++) {
        with += f.parts[k]->n > 0;
        groups += f.parts[k]->n > 0 && f.view->qgroup[k] == k;
        if (f.parts[k]->n > 0)
            ck_assert(idx_part_same_quantizer(f.parts[k], f.parts[f.view->qgroup[k]]));
    }
    /* the 9 windows after the first; not the one-vector part (fewer vectors than lists) */
    ck_assert_uint_eq(f.adopted, 9);
    ck_assert(!f.parts[0]->adopted && f.parts[0]->n == 1);
    ck_assert_uint_eq(groups, with - f.adopted);
    /* Searched as groups: the 10 windows of the one quantizer, not the one-vector part. */
    float q0[D];
    clustered(q0);
    struct idx_view_query vq = {q0, 10, 0, 4, INT64_MIN, INT64_MAX, false, NULL, false};
    struct idx_view_hit h[10];
    struct idx_view_stats st;
    size_t nh;
    ck_assert_int_eq(idx_view_search(f.view, &vq, h, &nh, &st), ST_OK);
    ck_assert_uint_eq(st.parts_grouped, 10);
    ck_assert_uint_eq(st.parts_searched, 11);
    vq.exhaustive = true;
    ck_assert_int_eq(idx_view_search(f.view, &vq, h, &nh, &st), ST_OK);
    ck_assert_uint_eq(st.parts_grouped, 0);
    /* Only IVF-PQ parts with vectors can be searched together. */
    struct idx_part_shared bad[2] = {{f.parts[2], NULL, NULL}, {f.parts[1], NULL, NULL}};
    struct idx_part_hit ph[10];
    uint32_t which[10];
    size_t got = 99;
    ck_assert_uint_eq(f.parts[1]->n, 0);
    ck_assert_int_eq(idx_part_search_shared(bad, 2, q0, 10, 4, INFINITY, ph, which, &got),
                     ST_EINVAL);
    ck_assert_uint_eq(got, 0);
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(3, &pool), ST_OK);
    for (int c = 0; c < 6; c++) {
        int64_t from = c % 3 == 2 ? WINDOW + 100 : INT64_MIN,
                to = c % 3 == 2 ? 4 * WINDOW : INT64_MAX;
        uint32_t k = c % 3 == 1 ? 3 : 10;
        struct run r = compare_on(&f, 300, k, 0, from, to, c >= 3 ? pool : NULL);
        /* One index's recall (the shared search re-ranks 64 candidates over all the windows,
         * as one index over them would: 0.954-0.987 measured here), where the search of each
         * part on its own re-ranks 64 in each (1.0 here, at 12 times the cost). */
        ck_assert_msg(r.recall_bnd >= 0.93 && r.recall_exh >= r.recall_bnd,
                      "case %d: shared %.4f, per part %.4f", c, r.recall_bnd, r.recall_exh);
    }
    idx_pool_free(pool);
    /* A unit of index compaction over windows of the quantizer adopts it too (the windows stay
     * one group once compacted); of another shape (m 8) it trains its own. */
    for (int shape = 0; shape < 2; shape++) {
        struct idx_cat_entry mem[2] = {f.parts[3]->e, f.parts[2]->e};
        const char *segs[2] = {f.parts[3]->mem[0].seg_path, f.parts[2]->mem[0].seg_path};
        struct idx_part_unit u = {
            .id = 9, .mem = mem, .seg_paths = segs, .n = 2, .donor = f.parts[2]};
        u.e = (struct idx_cat_entry){.start = mem[0].start, .end = mem[1].end, .version = 1};
        snprintf(u.e.index, sizeof(u.e.index), "ivfpq");
        char ixp[600];
        snprintf(ixp, sizeof(ixp), "%s/unit-9.%d.ivfpq", f.dir, shape);
        struct cfg_index cix = {
            .type = CFG_INDEX_IVFPQ, .nlist = 4, .pq_m = shape ? 8 : 4, .nbits = 8};
        struct idx_part *up;
        struct st_err err = {0};
        ck_assert_msg(idx_part_build_unit(&u, ixp, &cix, ST_METRIC_L2, 1, NULL, &up, &err) == ST_OK,
                      "%s", err.msg);
        ck_assert(up->adopted == (shape == 0));
        ck_assert(idx_part_same_quantizer(up, f.parts[2]) == (shape == 0));
        ck_assert(idx_part_can_donate(f.parts[2], &cix) == (shape == 0));
        idx_part_unref(up);
    }
    /* One far record does not move the fit: a window with one adopts, and as the donor of a
     * loaded part (its reference measured again from its own vectors, as after a restart) it
     * still refuses content moved away. */
    fx_far = 1;
    struct idx_part *outlier = fx_part(&f, 19, 0, 300, 0, false, "ivfpq-shared");
    fx_far = 0;
    ck_assert(outlier->adopted);
    /* as an index written before the reference was saved (0: unknown, measured again) */
    idx_ivfpq_set_fit_ref(outlier->ivf, 0);
    /* A tenth of a window moved away is drift too (a median would not see it). */
    fx_far = 30;
    struct idx_part *tenth = fx_part(&f, 18, 0, 300, 0, false, "ivfpq-shared");
    fx_far = 0;
    ck_assert(!tenth->adopted);
    f.donor = outlier;
    /* Drift: content moved far away trains a quantizer of its own; the next like it adopts
     * that one (the donor is the last window built). */
    for (int c = 0; c < 12; c++)
        for (int d = 0; d < D; d++)
            centres[c][d] += 40;
    unsigned before = f.adopted;
    struct idx_part *moved = fx_part(&f, 20, 0, 300, 0, false, "ivfpq-shared");
    ck_assert(!moved->adopted && f.adopted == before);
    ck_assert(!idx_part_same_quantizer(moved, f.parts[2]));
    struct idx_part *next = fx_part(&f, 21, 0, 300, 0, false, "ivfpq-shared");
    ck_assert(next->adopted && idx_part_same_quantizer(next, moved));
    idx_part_unref(outlier);
    idx_part_unref(tenth);
    idx_part_unref(moved);
    idx_part_unref(next);
    fx_close(&f);
}
END_TEST

/* k larger than everything there is: every visible record comes back, exactly, closest first,
 * from both searches — over parts of 0, 1 and a few vectors, masked ones included. */
START_TEST(test_bound_k_beyond_total)
{
    const char *types[] = {"hnsw", "ivfpq", "ivfpq-shared"};
    for (int t = 0; t < 3; t++) {
        struct fx f;
        fx_open(&f, 3, 2, 6, types[t]);
        const struct rec **vis = fx_visible(&f, INT64_MIN, INT64_MAX);
        size_t visible = 0;
        for (uint32_t id = 0; id < f.next_id; id++)
            visible += vis[id] != NULL;
        ck_assert_uint_gt(visible, 5);
        ck_assert_uint_lt(visible, 40);
        enum { K = 50 };
        for (int qi = 0; qi < 50; qi++) {
            float q[D];
            clustered(q);
            for (int exh = 0; exh < 2; exh++) {
                struct idx_view_query vq = {q,         K,        0,    4,    INT64_MIN,
                                            INT64_MAX, exh == 1, NULL, false};
                struct idx_view_hit h[K];
                struct idx_view_stats st;
                size_t n;
                ck_assert_int_eq(idx_view_search(f.view, &vq, h, &n, &st), ST_OK);
                ck_assert_uint_eq(n, visible);
                uint32_t ids[K], truth[K];
                check_hits(&f, vis, q, h, n, ids);
                ck_assert_uint_eq(brute(&f, vis, q, K, truth), visible);
                ck_assert_uint_eq(overlap(ids, n, truth, visible), visible);
                ck_assert_uint_eq(st.parts_searched, f.nparts - 1); /* not the empty one */
            }
        }
        free(vis);
        fx_close(&f);
    }
}
END_TEST

/* idx_part_search with a bound: an infinite bound or one above every distance is the plain
 * search; hits never lie beyond the bound (IVF-PQ: exactly the plain search's hits within it);
 * a bound below everything finds none. */
START_TEST(test_part_search_bound)
{
    const char *types[] = {"hnsw", "ivfpq"};
    for (int t = 0; t < 2; t++) {
        struct fx f;
        fx_open(&f, 1, 1, 400, types[t]);
        struct idx_part *p = f.parts[f.nparts - 1]; /* the 400-record window */
        ck_assert_uint_gt(p->n, 300);
        size_t cut = 0, total = 0;
        for (int qi = 0; qi < 200; qi++) {
            float q[D];
            clustered(q);
            struct idx_part_hit a[10], b[10];
            size_t na = idx_part_search(p, q, 10, 40, 4, INFINITY, NULL, NULL, a);
            ck_assert_uint_eq(na, 10);
            const float same[] = {INFINITY, 1e30f};
            for (int s = 0; s < 2; s++) {
                size_t nb = idx_part_search(p, q, 10, 40, 4, same[s], NULL, NULL, b);
                ck_assert_uint_eq(nb, na);
                for (size_t i = 0; i < na; i++) {
                    ck_assert_uint_eq(a[i].rec, b[i].rec);
                    ck_assert(a[i].dist == b[i].dist);
                }
            }
            /* The 4th best as the bound: hits beyond it are never returned; IVF-PQ returns
             * exactly the plain search's first hits (ties at the bound kept). */
            float mid = a[3].dist;
            size_t nb = idx_part_search(p, q, 10, 40, 4, mid, NULL, NULL, b);
            for (size_t i = 0; i < nb; i++)
                ck_assert(b[i].dist <= mid);
            size_t within = 0;
            while (within < na && a[within].dist <= mid)
                within++;
            if (t == 1) {
                ck_assert_uint_eq(nb, within);
                for (size_t i = 0; i < nb; i++)
                    ck_assert_uint_eq(a[i].rec, b[i].rec);
            }
            cut += na - nb;
            total += na;
            /* squared L2 is never below 0 */
            ck_assert_uint_eq(idx_part_search(p, q, 10, 40, 4, -1.0f, NULL, NULL, b), 0);
        }
        ck_assert_uint_gt(cut, total / 2); /* the bound did drop hits */
        fx_close(&f);
    }
}
END_TEST

/* idx_hnsw_search_bound: INFINITY is idx_hnsw_search node for node; a bound never lets a hit
 * beyond it through, and with a generous ef it keeps the hits that are within it. */
START_TEST(test_hnsw_search_bound)
{
    enum { N = 2000, NQ = 200 };
    rng = 7;
    for (int c = 0; c < 12; c++)
        for (int d = 0; d < D; d++)
            centres[c][d] = frand() * 4;
    float *v = malloc((size_t)N * D * sizeof(float));
    for (int i = 0; i < N; i++)
        clustered(v + (size_t)i * D);
    struct idx_hnsw_opts o = {
        .dim = D, .metric = ST_METRIC_L2, .m = 8, .ef_construction = 64, .seed = 3, .threads = 1};
    struct idx_hnsw *h;
    ck_assert_int_eq(idx_hnsw_build(&o, v, N, &h), ST_OK);
    struct idx_hnsw_searcher *s = idx_hnsw_searcher_new(h);
    ck_assert_ptr_nonnull(s);
    size_t kept = 0, within = 0;
    for (int qi = 0; qi < NQ; qi++) {
        float q[D];
        clustered(q);
        struct st_hit a[10], b[10], wide[64];
        size_t na = idx_hnsw_search(s, q, 10, 48, NULL, NULL, a);
        size_t nb = idx_hnsw_search_bound(s, q, 10, 48, INFINITY, NULL, NULL, b);
        ck_assert_uint_eq(na, 10);
        ck_assert_uint_eq(nb, na);
        for (size_t i = 0; i < na; i++) {
            ck_assert_uint_eq(a[i].id, b[i].id);
            ck_assert(a[i].dist == b[i].dist);
        }
        /* Bound at the plain search's 5th best: nothing beyond it, and most of what lies within
         * it is still found though the beam narrows to about k = 10 (not 48). */
        float bound = a[4].dist;
        nb = idx_hnsw_search_bound(s, q, 10, 48, bound, NULL, NULL, b);
        for (size_t i = 0; i < nb; i++)
            ck_assert(b[i].dist <= bound);
        size_t nw = idx_hnsw_search(s, q, 64, 64, NULL, NULL, wide);
        for (size_t i = 0; i < nw && wide[i].dist <= bound; i++)
            within++;
        kept += nb;
    }
    ck_assert_msg((double)kept >= 0.9 * (double)within, "kept %zu of %zu within the bound", kept,
                  within);
    idx_hnsw_searcher_free(s);
    idx_hnsw_free(h);
    free(v);
}
END_TEST

/* Exact ties between the two ingest nodes' parts of one window (the same vectors under other
 * ids): one order, newer window, then node, then record — the same from both searches, and a
 * tie never drops a hit that fits. */
START_TEST(test_ties_across_nodes)
{
    struct fx f;
    memset(&f, 0, sizeof(f));
    f.skip_node = -1;
    rng = 99;
    for (int c = 0; c < 12; c++)
        for (int d = 0; d < D; d++)
            centres[c][d] = frand() * 4;
    enum { N = 40 };
    const char *types[] = {"hnsw", "ivfpq"};
    for (int t = 0; t < 2; t++) {
        f.nrecs = 0;
        f.next_id = 0;
        f.dir = st_test_tmpdir("idxties");
        /* node 0 then node 1 of window 0, both fresh ids; then node 1 again, with node 0's
         * vectors in node 0's order */
        struct idx_part *p0 = fx_part(&f, 0, 0, N, 0, false, types[t]);
        size_t first = f.nrecs;
        struct idx_part *p1 = fx_part(&f, 0, 1, N, 0, false, types[t]);
        ck_assert_uint_eq(f.nrecs, 2 * N);
        for (size_t i = first; i < f.nrecs; i++)
            memcpy(f.recs[i].vec, f.recs[i - first].vec, sizeof(f.recs[i].vec));
        idx_part_unref(p1);
        struct store_seg_in in[N];
        char ids[N][12];
        for (size_t i = 0; i < N; i++) {
            snprintf(ids[i], 12, "%08u", f.recs[first + i].id);
            in[i] = (struct store_seg_in){.id = (const uint8_t *)ids[i],
                                          .id_len = 8,
                                          .ts = f.recs[first + i].ts,
                                          .partition = 1,
                                          .offset = f.recs[first + i].offset,
                                          .op = STORE_OP_UPSERT,
                                          .vec = f.recs[first + i].vec};
        }
        char seg[600], ix[600];
        snprintf(seg, sizeof(seg), "%s/tie-%d.seg", f.dir, t);
        snprintf(ix, sizeof(ix), "%s/tie-%d.%s", f.dir, t, types[t]);
        struct store_seg_meta m = {0, WINDOW, STORE_SEG_SEALED, 1, false, 0, 0};
        struct st_err err = {0};
        uint64_t bytes;
        ck_assert_int_eq(store_segment_write(NULL, seg, D, &m, in, N, &bytes, &err), ST_OK);
        struct idx_cat_entry e = {.start = 0, .end = WINDOW, .version = 1};
        snprintf(e.node, sizeof(e.node), "n1");
        snprintf(e.index, sizeof(e.index), "%s", types[t]);
        struct cfg_index cix = {.type = CFG_INDEX_HNSW, .m = 8, .ef_construction = 32};
        if (t == 1)
            cix = (struct cfg_index){.type = CFG_INDEX_IVFPQ, .nlist = 2, .pq_m = 4, .nbits = 8};
        ck_assert_int_eq(idx_part_build(&e, seg, ix, &cix, ST_METRIC_L2, 1, NULL, &p1, &err),
                         ST_OK);
        /* node 1 listed first in the view: the order must not come from the view's order */
        struct idx_part *parts[2] = {p1, p0};
        struct idx_view *v;
        ck_assert_int_eq(idx_view_build(parts, 2, NULL, &v), ST_OK);
        for (int qi = 0; qi < 50; qi++) {
            const float *q = f.recs[(size_t)qi % N].vec; /* distance 0 to one in each part */
            struct idx_view_hit a[7], b[7];
            size_t na, nb;
            struct idx_view_stats st;
            struct idx_view_query vq = {q, 7, 40, 2, INT64_MIN, INT64_MAX, true, NULL, false};
            ck_assert_int_eq(idx_view_search(v, &vq, a, &na, &st), ST_OK);
            vq.exhaustive = false;
            ck_assert_int_eq(idx_view_search(v, &vq, b, &nb, &st), ST_OK);
            ck_assert_uint_eq(na, 7);
            ck_assert_uint_eq(nb, 7);
            ck_assert(a[0].dist == 0 && a[1].dist == 0);
            ck_assert_ptr_eq(a[0].part, p0); /* node n0 before n1 at a tie */
            ck_assert_ptr_eq(a[1].part, p1);
            for (size_t i = 0; i < na; i++) {
                ck_assert_ptr_eq(a[i].part, b[i].part);
                ck_assert_uint_eq(a[i].rec, b[i].rec);
                ck_assert(a[i].dist == b[i].dist);
                if (i > 0 && a[i].dist == a[i - 1].dist && a[i].part != a[i - 1].part)
                    ck_assert_ptr_eq(a[i - 1].part, p0);
            }
        }
        idx_view_release(v);
        idx_part_unref(p0);
        idx_part_unref(p1);
        st_test_rmrf(f.dir);
        free(f.dir);
    }
    free(f.recs);
}
END_TEST

/* A unit over parts (members oldest first, as the service orders them); unit id 7. */
static struct idx_part *fx_unit_grow(struct fx *f, struct idx_part *const *parts, size_t n,
                                     const char *type, uint32_t generation,
                                     const struct idx_part *base);

/* Do two IVF-PQ files hold the same quantizers (coarse centroids and codebooks)? */
static bool same_quantizers(const char *a, const char *b, size_t bytes)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    ck_assert_ptr_nonnull(fa);
    ck_assert_ptr_nonnull(fb);
    uint8_t *x = malloc(bytes), *y = malloc(bytes);
    ck_assert(fseek(fa, IDX_IVFPQ_HEADER, SEEK_SET) == 0 && fread(x, 1, bytes, fa) == bytes);
    ck_assert(fseek(fb, IDX_IVFPQ_HEADER, SEEK_SET) == 0 && fread(y, 1, bytes, fb) == bytes);
    bool same = memcmp(x, y, bytes) == 0;
    free(x);
    free(y);
    fclose(fa);
    fclose(fb);
    return same;
}

static struct idx_part *fx_unit(struct fx *f, struct idx_part *const *parts, size_t n,
                                const char *type, uint32_t generation)
{
    return fx_unit_grow(f, parts, n, type, generation, NULL);
}

/* A unit over parts (newest first, as views hold them); base: its previous generation, grown. */
static struct idx_part *fx_unit_grow(struct fx *f, struct idx_part *const *parts, size_t n,
                                     const char *type, uint32_t generation,
                                     const struct idx_part *base)
{
    struct idx_cat_entry mem[64];
    const char *segs[64];
    ck_assert_uint_le(n, 64);
    struct idx_part_unit u = {.id = 7, .mem = mem, .seg_paths = segs, .n = n, .base = base};
    u.e.start = INT64_MAX;
    u.e.end = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        const struct idx_part *p = parts[n - 1 - i];
        mem[i] = p->e;
        segs[i] = p->mem[0].seg_path;
        u.e.start = p->e.start < u.e.start ? p->e.start : u.e.start;
        u.e.end = p->e.end > u.e.end ? p->e.end : u.e.end;
    }
    u.e.version = generation;
    snprintf(u.e.index, sizeof(u.e.index), "%s", type);
    char ix[600];
    snprintf(ix, sizeof(ix), "%s/unit-7.g%u.%s", f->dir, generation, type);
    /* One index over 16 parts' vectors needs more than each part's: m 6 leaves clusters of a
     * graph this size unreachable, and 4 PQ sub-quantizers rank too coarsely for the re-rank
     * depth (k x 4) to hold the true top 10 among 6,400 (the parts re-rank 40 each). */
    struct cfg_index cix = {.type = CFG_INDEX_HNSW, .m = 12, .ef_construction = 64};
    if (strcmp(type, "ivfpq") == 0)
        cix = (struct cfg_index){.type = CFG_INDEX_IVFPQ, .nlist = 4, .pq_m = 8, .nbits = 8};
    struct idx_part *out;
    struct st_err err = {0};
    ck_assert_msg(idx_part_build_unit(&u, ix, &cix, ST_METRIC_L2, 1, NULL, &out, &err) == ST_OK,
                  "%s", err.msg);
    /* and it loads back as built */
    u.base = NULL;
    struct idx_part *again;
    ck_assert_msg(idx_part_load_unit(&u, ix, ST_METRIC_L2, true, &again, &err) == ST_OK, "%s",
                  err.msg);
    ck_assert_uint_eq(again->n, out->n);
    ck_assert_uint_eq(again->nrec, out->nrec);
    idx_part_unref(again);
    return out;
}

/* One unit over every part (16 windows x nodes, plus an all-delete and a one-vector part) finds
 * what searching the parts finds: each hit its id's visible version, recall within 0.005 of the
 * parts' (or better); record numbers run through the members. */
START_TEST(test_unit_matches_parts)
{
    const char *types[] = {"hnsw", "ivfpq"};
    for (int t = 0; t < 2; t++) {
        struct fx f;
        fx_open(&f, 8, 2, 400, types[t]);
        struct idx_part *u = fx_unit(&f, f.parts, f.nparts, types[t], 1);
        uint32_t nrec = 0, n = 0;
        for (size_t i = 0; i < f.nparts; i++) {
            nrec += f.parts[i]->nrec;
            n += f.parts[i]->n;
        }
        ck_assert_uint_eq(u->nrec, nrec);
        ck_assert_uint_eq(u->n, n);
        ck_assert_uint_eq(u->nmem, f.nparts);
        ck_assert_uint_eq(u->unit, 7);
        for (size_t i = 0; i < u->nmem; i++) { /* every member's records, in order */
            const struct idx_part *src = f.parts[f.nparts - 1 - i];
            for (uint32_t r = 0; r < src->nrec; r++) {
                struct store_seg_record a, b;
                idx_part_record(src, r, &a);
                idx_part_record(u, u->mem[i].first + r, &b);
                ck_assert_int_eq(a.offset, b.offset);
                ck_assert_ptr_eq(idx_part_member_of(u, u->mem[i].first + r), &u->mem[i]);
            }
        }
        rng = 1234;
        struct run a = compare(&f, 300, 10, 48, INT64_MIN, INT64_MAX);
        struct idx_view *parts_view = f.view;
        ck_assert_int_eq(idx_view_build(&u, 1, NULL, &f.view), ST_OK);
        ck_assert_uint_eq(f.view->hidden, parts_view->hidden); /* the same records hidden */
        /* One graph searched with ef 48 does a fraction of the work of 18 searched with it:
         * its recall is lower there, and reaches theirs at a wider beam (still less work). */
        rng = 1234;
        struct run b = compare(&f, 300, 10, t == 0 ? 160 : 48, INT64_MIN, INT64_MAX);
        ck_assert_uint_eq(a.truth_total, b.truth_total);
        ck_assert_msg(b.recall_bnd >= a.recall_bnd - 0.005, "%s: unit %.4f, parts %.4f", types[t],
                      b.recall_bnd, a.recall_bnd);
        rng = 1234;
        b = compare(&f, 300, 10, 48, INT64_MIN, INT64_MAX);
        ck_assert_msg(b.recall_bnd >= 0.93, "%s: unit %.4f at ef 48", types[t], b.recall_bnd);
        /* a time range inside the unit: only records in it come back */
        rng = 99;
        (void)compare(&f, 100, 10, 48, 3 * WINDOW + 100, 5 * WINDOW - 1);
        idx_view_release(f.view);
        f.view = parts_view;
        idx_part_unref(u);
        fx_close(&f);
    }
}
END_TEST

/* A dead member (expired, or replaced by a newer version elsewhere) inside a unit: none of its
 * records is ever returned, and none supersedes an older version of its ids — in a view mixing
 * the unit with plain parts, exactly as if the member's part were gone. */
START_TEST(test_unit_dead_member)
{
    const char *types[] = {"hnsw", "ivfpq"};
    for (int t = 0; t < 2; t++) {
        struct fx f;
        fx_open(&f, 6, 2, 300, types[t]);
        /* the unit: windows 0..3 (parts are newest first: the last 8) */
        size_t nu = 8, first = f.nparts - nu;
        struct idx_part *u = fx_unit(&f, f.parts + first, nu, types[t], 2);
        /* member 5 = window 2, node 1 (members: w0n0, w0n1, w1n0, w1n1, w2n0, w2n1, ...) */
        ck_assert_int_eq(u->mem[5].e.start, 2 * WINDOW);
        ck_assert_str_eq(u->mem[5].e.node, "n1");
        ck_assert_int_eq(idx_part_find_member(u, "n1", 2 * WINDOW), 5);
        ck_assert_int_eq(idx_part_find_member(u, "n1", 9 * WINDOW), -1);
        struct idx_part *mixed[64];
        const uint8_t *dead[64] = {0};
        uint8_t d = 1u << 5;
        size_t nm = 0;
        for (size_t i = 0; i < first; i++)
            mixed[nm++] = f.parts[i];
        dead[nm] = &d;
        mixed[nm++] = u;
        struct idx_view *parts_view = f.view;
        ck_assert_int_eq(idx_view_build(mixed, nm, dead, &f.view), ST_OK);
        ck_assert(!idx_view_member_live(f.view, nm - 1, 5));
        ck_assert(idx_view_member_live(f.view, nm - 1, 4));
        ck_assert(idx_view_member_live(f.view, 0, 0));
        f.skip_start = 2 * WINDOW;
        f.skip_node = 1;
        /* the dead member's ids: searching for its vectors must never give them back */
        size_t probes = 0;
        for (size_t i = 0; i < f.nrecs; i++) {
            const struct rec *r = &f.recs[i];
            if (r->partition != 1 || r->ts < 2 * WINDOW || r->ts >= 3 * WINDOW ||
                r->op != STORE_OP_UPSERT)
                continue;
            struct idx_view_query vq = {r->vec, 5, 64, 4, INT64_MIN, INT64_MAX, false, NULL, false};
            struct idx_view_hit h[5];
            struct idx_view_stats st;
            size_t n;
            ck_assert_int_eq(idx_view_search(f.view, &vq, h, &n, &st), ST_OK);
            for (size_t j = 0; j < n; j++) {
                struct store_seg_record x;
                idx_part_record(h[j].part, h[j].rec, &x);
                ck_assert(!(h[j].part == u && idx_part_member_of(u, h[j].rec) == &u->mem[5]));
                ck_assert(!(x.partition == 1 && x.ts >= 2 * WINDOW && x.ts < 3 * WINDOW));
            }
            probes++;
        }
        ck_assert_uint_gt(probes, 100);
        /* get-by-id: never the dead member's version; an older version elsewhere, exactly the
         * newest of the others, shows again */
        size_t older = 0;
        for (size_t i = 0; i < f.nrecs; i++) {
            const struct rec *r = &f.recs[i];
            if (r->partition != 1 || r->ts < 2 * WINDOW || r->ts >= 3 * WINDOW)
                continue;
            const struct rec *want = NULL;
            for (size_t j = 0; j < f.nrecs; j++) {
                const struct rec *o = &f.recs[j];
                bool gone = o->partition == 1 && o->ts >= 2 * WINDOW && o->ts < 3 * WINDOW;
                if (o->id == r->id && !gone && (want == NULL || newer(o, want)))
                    want = o;
            }
            char id[12];
            snprintf(id, sizeof(id), "%08u", r->id);
            struct idx_part *gp;
            uint32_t grec;
            int rc = idx_view_get(f.view, (const uint8_t *)id, 8, true, &gp, &grec);
            if (want == NULL) {
                ck_assert_int_eq(rc, ST_ENOTFOUND);
                continue;
            }
            ck_assert_int_eq(rc, ST_OK);
            struct store_seg_record x;
            idx_part_record(gp, grec, &x);
            ck_assert_int_eq(x.ts, want->ts);
            ck_assert_int_eq(x.offset, want->offset);
            older++;
        }
        ck_assert_uint_gt(older, 5); /* ids with an older version outside the dead member */
        struct run r = compare(&f, 300, 10, 48, INT64_MIN, INT64_MAX); /* checks every hit */
        ck_assert_msg(r.recall_bnd >= 0.9, "%s: recall %.4f", types[t], r.recall_bnd);
        idx_view_release(f.view);
        f.view = parts_view;
        idx_part_unref(u);
        fx_close(&f);
    }
}
END_TEST

/* A unit's next generation grown from the previous one (HNSW and IVF-PQ): the old labels keep
 * their records, the new members' upserts follow; it finds what a unit built from scratch over
 * the same members finds (recall within 0.01), and what searching the parts finds; a base that
 * is not the first members is refused. */
START_TEST(test_unit_grow)
{
    const char *types[] = {"hnsw", "ivfpq"};
    for (int t = 0; t < 2; t++) {
        struct fx f;
        fx_open(&f, 6, 2, 300, types[t]);
        /* generation 1: windows 0-2 (the oldest 6 parts); generation 2: every part */
        size_t half = 6, first = f.nparts - half;
        struct idx_part *g1 = fx_unit(&f, f.parts + first, half, types[t], 1);
        struct idx_part *g2 = fx_unit_grow(&f, f.parts, f.nparts, types[t], 2, g1);
        struct idx_part *fresh = fx_unit(&f, f.parts, f.nparts, types[t], 3);
        ck_assert_uint_eq(g2->n, fresh->n);
        ck_assert_uint_gt(g2->n, g1->n);
        for (uint32_t l = 0; l < g2->n; l++) /* labels: the same records either way */
            ck_assert_uint_eq(g2->rec[l], fresh->rec[l]);
        for (uint32_t l = 0; l < g1->n; l++)
            ck_assert_uint_eq(g1->rec[l], g2->rec[l]);
        if (t == 0) { /* grown: the old nodes keep their levels (a build draws new ones) */
            /* Levels by label: the indexer renumbers each graph's nodes (idx_hnsw_reorder). */
            uint8_t *lv[3];
            const struct idx_part *gs[3] = {g1, g2, fresh};
            for (int g = 0; g < 3; g++) {
                const struct idx_hnsw *h = gs[g]->hnsw;
                lv[g] = malloc(gs[g]->n);
                ck_assert_ptr_nonnull(lv[g]);
                ck_assert_ptr_nonnull(h->labels); /* renumbered, as every part's graph */
                for (uint32_t x = 0; x < gs[g]->n; x++)
                    lv[g][idx_hnsw_label(h, x)] = h->levels[x];
            }
            size_t same = 0, same_fresh = 0;
            for (uint32_t l = 0; l < g1->n; l++) {
                same += lv[0][l] == lv[1][l];
                same_fresh += lv[0][l] == lv[2][l];
            }
            for (int g = 0; g < 3; g++)
                free(lv[g]);
            ck_assert_uint_eq(same, g1->n);
            ck_assert_uint_lt(same_fresh, g1->n);
        } else { /* grown: no retraining, the quantizers are the old ones */
            size_t qbytes = (4 * D + 8 * 256 * (D / 8)) * sizeof(float);
            ck_assert(same_quantizers(g1->idx_path, g2->idx_path, qbytes));
            ck_assert(!same_quantizers(g1->idx_path, fresh->idx_path, qbytes));
        }
        struct idx_view *parts_view = f.view;
        rng = 4321;
        struct run a = compare(&f, 300, 10, 160, INT64_MIN, INT64_MAX);
        ck_assert_int_eq(idx_view_build(&fresh, 1, NULL, &f.view), ST_OK);
        rng = 4321;
        struct run b = compare(&f, 300, 10, 160, INT64_MIN, INT64_MAX);
        idx_view_release(f.view);
        ck_assert_int_eq(idx_view_build(&g2, 1, NULL, &f.view), ST_OK);
        rng = 4321;
        struct run g = compare(&f, 300, 10, 160, INT64_MIN, INT64_MAX);
        idx_view_release(f.view);
        f.view = parts_view;
        ck_assert_msg(g.recall_bnd >= b.recall_bnd - 0.01, "%s: grown %.4f, fresh %.4f", types[t],
                      g.recall_bnd, b.recall_bnd);
        ck_assert_msg(g.recall_bnd >= a.recall_bnd - 0.01, "%s: grown %.4f, parts %.4f", types[t],
                      g.recall_bnd, a.recall_bnd);
        /* a base that is not the new unit's first members */
        struct idx_cat_entry mem[2] = {f.parts[0]->e, f.parts[1]->e};
        const char *segs[2] = {f.parts[0]->mem[0].seg_path, f.parts[1]->mem[0].seg_path};
        struct idx_part_unit bad = {.id = 7, .mem = mem, .seg_paths = segs, .n = 2, .base = g1};
        bad.e = f.parts[0]->e;
        struct cfg_index cix = {.type = CFG_INDEX_HNSW, .m = 12, .ef_construction = 64};
        if (t == 1)
            cix = (struct cfg_index){.type = CFG_INDEX_IVFPQ, .nlist = 4, .pq_m = 8, .nbits = 8};
        char ix[600];
        snprintf(ix, sizeof(ix), "%s/bad.%s", f.dir, types[t]);
        struct idx_part *out = NULL;
        struct st_err err = {0};
        ck_assert_int_eq(idx_part_build_unit(&bad, ix, &cix, ST_METRIC_L2, 1, NULL, &out, &err),
                         ST_EINVAL);
        ck_assert_ptr_null(out);
        idx_part_unref(g1);
        idx_part_unref(g2);
        idx_part_unref(fresh);
        fx_close(&f);
    }
}
END_TEST

/* The pool, deterministically: the caller's run waits (up to a deadline) until `want` helper
 * runs have started, so a helper joining is observed, not hoped for; fn never runs on more
 * than helpers + 1 threads; every run has returned when idx_pool_run does. */
struct pool_probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t caller;
    unsigned want, helpers_in, caller_runs, inside, most;
    bool block; /* helper runs wait here until released (see test_pool_busy) */
};

static void pool_fn(void *arg)
{
    struct pool_probe *p = arg;
    pthread_mutex_lock(&p->mu);
    bool caller = pthread_equal(pthread_self(), p->caller);
    p->inside++;
    p->most = p->inside > p->most ? p->inside : p->most;
    if (caller) {
        p->caller_runs++;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 10;
        while (p->helpers_in < p->want && pthread_cond_timedwait(&p->cv, &p->mu, &dl) == 0)
            ;
    } else {
        p->helpers_in++;
        pthread_cond_broadcast(&p->cv);
        while (p->block)
            pthread_cond_wait(&p->cv, &p->mu);
    }
    p->inside--;
    pthread_mutex_unlock(&p->mu);
}

static void probe_init(struct pool_probe *p, unsigned want)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->caller = pthread_self();
    p->want = want;
}

START_TEST(test_pool_runs)
{
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(3, &pool), ST_OK);
    ck_assert_uint_eq(idx_pool_threads(pool), 3);
    const struct {
        struct idx_pool *p;
        uint32_t helpers, want;
    } cases[] = {{NULL, 5, 0}, {pool, 0, 0}, {pool, 1, 1}, {pool, 3, 3}, {pool, 9, 3}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (int rep = 0; rep < 20; rep++) {
            struct pool_probe pr;
            probe_init(&pr, cases[c].want);
            idx_pool_run(cases[c].p, cases[c].helpers, pool_fn, &pr);
            pthread_mutex_lock(&pr.mu);
            ck_assert_uint_eq(pr.inside, 0); /* every run returned */
            ck_assert_uint_eq(pr.caller_runs, 1);
            ck_assert_msg(pr.helpers_in == cases[c].want, "case %zu: %u helpers, want %u", c,
                          pr.helpers_in, cases[c].want);
            ck_assert_uint_le(pr.most, cases[c].want + 1);
            pthread_mutex_unlock(&pr.mu);
        }
    idx_pool_free(pool);
    idx_pool_free(NULL);
}
END_TEST

/* Every helper busy with another caller's run: a second caller neither waits for them nor
 * leaves a ticket behind (its offers are withdrawn); once the first run is released it
 * finishes, and the pool serves again. */
struct busy_arg {
    struct idx_pool *pool;
    struct pool_probe *pr;
};

static void *busy_thread(void *arg)
{
    struct busy_arg *b = arg;
    b->pr->caller = pthread_self();
    idx_pool_run(b->pool, 2, pool_fn, b->pr);
    return NULL;
}

START_TEST(test_pool_busy)
{
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(2, &pool), ST_OK);
    struct pool_probe held;
    probe_init(&held, 2);
    held.block = true;
    pthread_mutex_lock(&held.mu);
    struct busy_arg ba = {pool, &held};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, busy_thread, &ba), 0);
    while (held.helpers_in < 2) /* both helpers inside the held run */
        pthread_cond_wait(&held.cv, &held.mu);
    pthread_mutex_unlock(&held.mu);
    for (int rep = 0; rep < 50; rep++) {
        struct pool_probe quick;
        probe_init(&quick, 0);
        idx_pool_run(pool, 2, pool_fn, &quick); /* returns: nobody to wait for */
        ck_assert_uint_eq(quick.caller_runs, 1);
        ck_assert_uint_eq(quick.helpers_in, 0);
    }
    pthread_mutex_lock(&held.mu);
    held.block = false;
    pthread_cond_broadcast(&held.cv);
    pthread_mutex_unlock(&held.mu);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_uint_eq(held.inside, 0);
    /* The withdrawn offers did not linger: a new run gets both helpers. */
    struct pool_probe again;
    probe_init(&again, 2);
    idx_pool_run(pool, 2, pool_fn, &again);
    ck_assert_uint_eq(again.helpers_in, 2);
    idx_pool_free(pool);
}
END_TEST

/* Many searches at once sharing one pool (helpers offered to whichever query asks; a query
 * that finds them busy searches alone): IVF-PQ parts give exactly the one-thread answer. */
struct shared_q {
    const struct fx *f;
    struct idx_pool *pool;
    unsigned seed;
    size_t same, total, by_helpers;
};

static void *shared_thread(void *arg)
{
    struct shared_q *t = arg;
    enum { K = 10 };
    for (int qi = 0; qi < 150; qi++) {
        float q[D];
        for (int d = 0; d < D; d++)
            q[d] = (float)((t->seed * 2654435761u + (unsigned)qi * 40503u + (unsigned)d * 977u) %
                           1000) /
                   100.0f;
        struct idx_view_query vq = {q, K, 0, 4, INT64_MIN, INT64_MAX, false, NULL, false};
        struct idx_view_hit a[K], b[K];
        struct idx_view_stats st;
        size_t na, nb;
        if (idx_view_search(t->f->view, &vq, a, &na, &st) != ST_OK)
            return (void *)1;
        vq.pool = t->pool;
        if (idx_view_search(t->f->view, &vq, b, &nb, &st) != ST_OK)
            return (void *)1;
        t->by_helpers += st.parts_by_helpers;
        bool same = na == nb;
        for (size_t i = 0; same && i < na; i++)
            same = a[i].part == b[i].part && a[i].rec == b[i].rec && a[i].dist == b[i].dist;
        t->same += same;
        t->total++;
    }
    return NULL;
}

START_TEST(test_pool_shared_by_searches)
{
    struct fx f;
    fx_open(&f, 6, 2, 200, "ivfpq");
    struct idx_pool *pool;
    ck_assert_int_eq(idx_pool_new(2, &pool), ST_OK);
    enum { T = 4 };
    pthread_t th[T];
    struct shared_q qs[T];
    for (unsigned i = 0; i < T; i++) {
        qs[i] = (struct shared_q){&f, pool, i + 1, 0, 0, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, shared_thread, &qs[i]), 0);
    }
    size_t by_helpers = 0;
    for (unsigned i = 0; i < T; i++) {
        void *ret;
        ck_assert_int_eq(pthread_join(th[i], &ret), 0);
        ck_assert_ptr_null(ret);
        ck_assert_uint_eq(qs[i].total, 150);
        ck_assert_uint_eq(qs[i].same, 150);
        by_helpers += qs[i].by_helpers;
    }
    /* Over 600 searches of 12 parts, the helpers took some: the answers above came from
     * parts searched side by side, not only from the callers' own runs. */
    ck_assert_uint_gt(by_helpers, 0);
    idx_pool_free(pool);
    fx_close(&f);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("idx_view");
    TCase *tc = tcase_create("idx_view");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_hnsw_search_bound);
    tcase_add_test(tc, test_part_search_bound);
    tcase_add_test(tc, test_bound_hnsw_recall);
    tcase_add_test(tc, test_share_hot_windows);
    tcase_add_test(tc, test_bound_ivfpq_exact);
    tcase_add_test(tc, test_bound_k_beyond_total);
    tcase_add_test(tc, test_shared_quantizer);
    tcase_add_test(tc, test_ties_across_nodes);
    tcase_add_test(tc, test_unit_matches_parts);
    tcase_add_test(tc, test_unit_dead_member);
    tcase_add_test(tc, test_unit_grow);
    tcase_add_test(tc, test_pool_runs);
    tcase_add_test(tc, test_pool_busy);
    tcase_add_test(tc, test_pool_shared_by_searches);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
