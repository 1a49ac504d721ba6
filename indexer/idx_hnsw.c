/* HNSW build and search. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "idx_cpucap.h"
#include "idx_hnsw_int.h"
#include "st_fault.h"

/* ---- heaps of (dist, id) ----------------------------------------------------------------- */

struct cand {
    float d;
    uint32_t id;
};

struct heap {
    struct cand *a;
    size_t n, cap;
    float best; /* kth only: the best distance pushed since the search began */
};

static int heap_reserve(struct heap *h, size_t cap)
{
    if (cap <= h->cap)
        return ST_OK;
    struct cand *a = realloc(h->a, cap * sizeof(*a));
    if (a == NULL)
        return ST_ENOMEM;
    h->a = a;
    h->cap = cap;
    return ST_OK;
}

/* max-heap when max, else min-heap */
static inline bool before(const struct cand *x, const struct cand *y, bool max)
{
    return max ? x->d > y->d : x->d < y->d;
}

static inline int heap_push(struct heap *h, struct cand c, bool max)
{
    if (h->n == h->cap && heap_reserve(h, h->cap ? h->cap * 2 : 64) != ST_OK)
        return ST_ENOMEM;
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&c, &h->a[p], max))
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
    return ST_OK;
}

static inline struct cand heap_pop(struct heap *h, bool max)
{
    struct cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= h->n)
            break;
        size_t c = l + 1 < h->n && before(&h->a[l + 1], &h->a[l], max) ? l + 1 : l;
        if (!before(&h->a[c], &last, max))
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0)
        h->a[i] = last;
    return top;
}

static int cand_cmp(const void *a, const void *b);

/* ---- searcher scratch --------------------------------------------------------------------- */

/* How many neighbours ahead a layer search prefetches. */
#define PREFETCH_AHEAD 4
/* Queries a batched search (idx_hnsw_search_batch) runs in lock step. */
#define BATCH_LANES 4

/*
 * One search in progress on one layer: what it has found, its query's side of the code
 * distance, and the neighbours of the node it is expanding (between layer_expand and
 * layer_score). A searcher has BATCH_LANES; single searches and builds use the first.
 */
struct lane {
    uint16_t *tags; /* h->n: visited when equal to gen */
    uint16_t gen;
    struct heap cand, res;
    struct heap kth;       /* bounded searches: the f best found (a max-heap), and the best */
    int8_t *qcode;         /* the query's weights as signed bytes (qstride) on codes */
    bool on_codes;         /* this search traverses on codes (quantize_query) */
    float cx, cdot, cbias; /* distance = cx * cnorm - cdot * code.qcode + cbias */
    /* the layer search (layer_begin) */
    const float *q;
    size_t ef, f;
    float gbound, bound;
    bool bounded, done;
    int level;
    st_filter_fn filter;
    void *fctx;
    uint32_t nt, fresh[256]; /* neighbours to score: cnt <= m0 <= 256 (build, loader) */
};

struct idx_hnsw_searcher {
    const struct idx_hnsw *h;
    struct lane lane[BATCH_LANES]; /* lane[1..]: allocated by the first batched search */
    bool batch_ready;
    uint32_t *links_copy; /* build: a stable copy of a neighbour list */
    bool codes_off;       /* idx_hnsw_searcher_use_codes(false) */
};

static void lane_free(struct lane *L)
{
    free(L->tags);
    free(L->cand.a);
    free(L->res.a);
    free(L->kth.a);
    free(L->qcode);
}

/* Allocates what L still lacks (a lane left half-made by a failure is completed by the next
 * call, never allocated twice). */
static int lane_init(struct lane *L, const struct idx_hnsw *h)
{
    if (ST_FAULT("idx.hnsw.lane") != 0)
        return ST_ENOMEM;
    if (L->tags == NULL && (L->tags = calloc(h->n ? h->n : 1, sizeof(*L->tags))) == NULL)
        return ST_ENOMEM;
    /* Whether or not h has codes now (idx_hnsw_make_codes_bits may add them later). */
    if (L->qcode == NULL &&
        (L->qcode = aligned_alloc(64, ((size_t)h->dim + 63) & ~(size_t)63)) == NULL)
        return ST_ENOMEM;
    if (heap_reserve(&L->cand, 256) != ST_OK || heap_reserve(&L->res, 256) != ST_OK ||
        heap_reserve(&L->kth, 64) != ST_OK)
        return ST_ENOMEM;
    return ST_OK;
}

struct idx_hnsw_searcher *idx_hnsw_searcher_new(const struct idx_hnsw *h)
{
    struct idx_hnsw_searcher *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->h = h;
    s->links_copy = malloc((1 + h->m0) * sizeof(uint32_t));
    if (s->links_copy == NULL || lane_init(&s->lane[0], h) != ST_OK) {
        idx_hnsw_searcher_free(s);
        return NULL;
    }
    return s;
}

void idx_hnsw_searcher_free(struct idx_hnsw_searcher *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < BATCH_LANES; i++)
        lane_free(&s->lane[i]);
    free(s->links_copy);
    free(s);
}

void idx_hnsw_searcher_use_codes(struct idx_hnsw_searcher *s, bool on)
{
    s->codes_off = !on;
}

/* The distance from q to node id as lane L measures it (on codes or on the vector). */
static inline float node_dist(const struct idx_hnsw *h, const struct lane *L, const float *q,
                              uint32_t id)
{
    if (L->on_codes) {
        const uint8_t *c = h->codes + (size_t)id * h->cstride;
        int32_t p =
            h->code_bits == 4 ? h->dotu4(c, L->qcode, h->qstride) : h->dotu8(c, L->qcode, h->dim);
        return L->cx * h->cnorm[id] - L->cdot * (float)p + L->cbias;
    }
    return h->dist(q, hnsw_vec(h, id), h->dim);
}

/* The first two cache lines (one of a 64-byte code row) of what node_dist will read for id.
 * Always inlined: GCC 12 at -O2 marks a function of prefetches alone "looping pure" and its
 * callers' early dead-code elimination deletes the calls before the inliner reaches them (none
 * of these prefetches were in the object code until then; tests/prefetch_kept.py). */
static inline __attribute__((always_inline)) void node_prefetch(const struct idx_hnsw *h,
                                                                const struct lane *L, uint32_t id)
{
    const char *p = L->on_codes ? (const char *)(h->codes + (size_t)id * h->cstride)
                                : (const char *)hnsw_vec(h, id);
    __builtin_prefetch(p);
    if (!L->on_codes || h->cstride > 64) /* a 64-byte row: the next line is another node's */
        __builtin_prefetch(p + 64);
    if (L->on_codes)
        __builtin_prefetch(h->cnorm + id);
}

static void new_generation(const struct idx_hnsw *h, struct lane *L)
{
    if (++L->gen == 0) {
        memset(L->tags, 0, h->n * sizeof(*L->tags));
        L->gen = 1;
    }
}

/* ---- build-time locking ------------------------------------------------------------------- */

struct build {
    struct idx_hnsw *h;
    _Atomic uint8_t *locks; /* one spinlock per node; NULL when single-threaded */
    pthread_mutex_t entry_mu;
    _Atomic uint32_t next;
    int rc;
};

static inline void node_lock(struct build *b, uint32_t i)
{
    if (b == NULL || b->locks == NULL)
        return;
    while (atomic_exchange_explicit(&b->locks[i], 1, memory_order_acquire))
        ;
}

static inline void node_unlock(struct build *b, uint32_t i)
{
    if (b != NULL && b->locks != NULL)
        atomic_store_explicit(&b->locks[i], 0, memory_order_release);
}

/* ---- search one layer ---------------------------------------------------------------------- */

/*
 * Beam search on level l from entry ep (search_layer; a batched search runs several lanes of it
 * in lock step, layer_expand then layer_score). Leaves the best ef in the lane's res (a
 * max-heap). With a filter, rejected nodes guide the search but never enter the results.
 *
 * gbound (INFINITY: none) is the k-th best distance the caller has already found elsewhere (the
 * other indexes of a multi-index search): only nodes within it can enter the caller's result.
 * A node is admitted as a candidate, and the search goes on, while its distance is below T:
 *   - W_ef, the worst of the ef best found here (infinite until ef are found) — the plain beam
 *     search — once a node within gbound has been found here (this graph competes: it gets
 *     its whole beam);
 *   - until then, min(W_ef, max(W_f, gbound)), W_f the f-th best found here (infinite until f
 *     are found), f = max(k, ef / 2): once the search has its own f best and all lie beyond
 *     the bound, it neither explores nor waits for nodes beyond both. A graph whose nodes all
 *     lie beyond the bound costs about an ef = f search instead of an ef one. (f = k saved more
 *     but lost recall on weak graphs: 0.006 in check_idx_view's m = 6 graphs; with f = ef / 2
 *     recall stays within 0.002 of the plain search there and on Fashion-MNIST.)
 * With gbound = INFINITY (or f >= ef) T = W_ef: the plain search, node for node.
 */
static inline float beam_bound(const struct lane *L)
{
    float t = L->res.n >= L->ef ? L->res.a[0].d : INFINITY;
    if (L->bounded && L->kth.n >= L->f && L->kth.best > L->gbound) {
        float w = L->kth.a[0].d > L->gbound ? L->kth.a[0].d : L->gbound;
        t = w < t ? w : t;
    }
    return t;
}

/* Starts lane L's search of level l from ep (the parameters as search_layer's). */
static void layer_begin(const struct idx_hnsw *h, struct lane *L, const float *q, uint32_t ep,
                        size_t ef, size_t k, float gbound, int l, st_filter_fn filter, void *fctx)
{
    new_generation(h, L);
    L->cand.n = L->res.n = L->kth.n = 0;
    L->kth.best = INFINITY;
    L->q = q;
    L->ef = ef;
    L->f = k > ef / 2 ? k : ef / 2; /* the floor of a bounded beam (above) */
    L->gbound = gbound;
    L->bounded = gbound < INFINITY && L->f < ef;
    L->level = l;
    L->filter = filter;
    L->fctx = fctx;
    L->done = false;
    L->nt = 0;
    float d = node_dist(h, L, q, ep);
    L->tags[ep] = L->gen;
    heap_push(&L->cand, (struct cand){d, ep}, false);
    if (filter == NULL || filter(fctx, hnsw_label(h, ep))) {
        heap_push(&L->res, (struct cand){d, ep}, true);
        if (L->bounded) {
            heap_push(&L->kth, (struct cand){d, ep}, true);
            L->kth.best = d;
        }
    }
    /* bound: T above; beyond it nothing is admitted and the search stops. */
    L->bound = beam_bound(L);
}

/*
 * The next step of lane L's layer search: takes the closest candidate (done when there is none
 * within the bound), marks its neighbours not visited yet and puts the data of the first
 * PREFETCH_AHEAD of them in flight; layer_score then measures them.
 */
static void layer_expand(const struct idx_hnsw *h, struct lane *L, struct build *b,
                         uint32_t *links_copy)
{
    L->nt = 0;
    if (L->cand.n == 0) {
        L->done = true;
        return;
    }
    struct cand c = heap_pop(&L->cand, false);
    if (c.d > L->bound) {
        L->done = true;
        return;
    }
    const uint32_t *links;
    if (b != NULL && b->locks != NULL) {
        node_lock(b, c.id);
        const uint32_t *src = hnsw_links(h, c.id, L->level);
        memcpy(links_copy, src, (1 + src[0]) * sizeof(uint32_t));
        node_unlock(b, c.id);
        links = links_copy;
    } else {
        links = hnsw_links(h, c.id, L->level);
    }
    /* The neighbours not visited yet (marked now): no bandwidth spent on visited ones. */
    uint32_t cnt = links[0], nt = 0; /* cnt <= m0 <= 256 (build, loader) */
    for (uint32_t j = 0; j < cnt; j++) {
        uint32_t e = links[1 + j];
        if (L->tags[e] != L->gen) {
            L->tags[e] = L->gen;
            L->fresh[nt++] = e;
        }
    }
    L->nt = nt;
    for (uint32_t j = 0; j < nt && j < PREFETCH_AHEAD; j++)
        node_prefetch(h, L, L->fresh[j]);
}

/* Measures the neighbours layer_expand found, with the data of the ones PREFETCH_AHEAD further
 * on in flight, and admits those within the bound; then puts the next candidate's neighbour
 * list in flight. */
static void layer_score(const struct idx_hnsw *h, struct lane *L)
{
    const float *q = L->q;
    for (uint32_t j = 0; j < L->nt; j++) {
        uint32_t e = L->fresh[j];
        if (j + PREFETCH_AHEAD < L->nt)
            node_prefetch(h, L, L->fresh[j + PREFETCH_AHEAD]);
        float de = node_dist(h, L, q, e);
        if (!(de < L->bound))
            continue;
        heap_push(&L->cand, (struct cand){de, e}, false);
        if (L->filter != NULL && !L->filter(L->fctx, hnsw_label(h, e)))
            continue;
        heap_push(&L->res, (struct cand){de, e}, true);
        if (L->res.n > L->ef)
            heap_pop(&L->res, true);
        if (L->bounded && (L->kth.n < L->f || de < L->kth.a[0].d)) {
            heap_push(&L->kth, (struct cand){de, e}, true);
            L->kth.best = de < L->kth.best ? de : L->kth.best;
            if (L->kth.n > L->f)
                heap_pop(&L->kth, true);
        }
        L->bound = beam_bound(L);
    }
    if (L->cand.n > 0)
        __builtin_prefetch(hnsw_links(h, L->cand.a[0].id, L->level));
}

static void search_layer(struct idx_hnsw_searcher *s, struct build *b, const float *q, uint32_t ep,
                         size_t ef, size_t k, float gbound, int l, st_filter_fn filter, void *fctx)
{
    struct lane *L = &s->lane[0];
    layer_begin(s->h, L, q, ep, ef, k, gbound, l, filter, fctx);
    for (;;) {
        layer_expand(s->h, L, b, s->links_copy);
        if (L->done)
            break;
        layer_score(s->h, L);
    }
}

/* Greedy descent through the upper levels to level `to` + 1's best node. */
static uint32_t descend(const struct idx_hnsw *h, const struct lane *L, struct build *b,
                        const float *q, uint32_t ep, int from, int to)
{
    float best = node_dist(h, L, q, ep);
    for (int l = from; l > to; l--) {
        bool changed = true;
        while (changed) {
            changed = false;
            node_lock(b, ep);
            const uint32_t *links = hnsw_links(h, ep, l);
            uint32_t cnt = links[0], copy[129];
            memcpy(copy, links + 1, cnt * sizeof(uint32_t));
            node_unlock(b, ep);
            for (uint32_t j = 0; j < cnt; j++) {
                float d = node_dist(h, L, q, copy[j]);
                if (d < best) {
                    best = d;
                    ep = copy[j];
                    changed = true;
                }
            }
        }
    }
    return ep;
}

/*
 * The query's side of the code distance: r = q - sq_lo, weights w[j] = sq_t[j] r[j] quantized
 * to signed bytes on the scale of the largest |w| (a query outside the nodes' range is not
 * clamped: its weights just grow), and
 *   l2: |q - x|^2 ~ |r|^2 - 2 sw (code . qcode) + cnorm[x];
 *   cosine (unit-length nodes): -q.x = (|q - x|^2 - |q|^2 - 1) / 2.
 */
static void quantize_query(const struct idx_hnsw *h, struct lane *L, const float *q)
{
    /* Per-part work of every query of a search over many windows: on the SIMD kernels (the
     * sums; the largest weights; the rounding, without a libm call per dimension). */
    const struct st_kernels *kn = st_kernels();
    uint32_t dim = h->dim;
    float rr = kn->l2sq(q, h->sq_lo, dim);
    float qq = h->metric == ST_METRIC_COSINE ? kn->dot(q, q, dim) : 0;
    /* The largest |w|, and the largest |w| summed over a pair of dimensions (2i, 2i + 1): a
     * kernel without VNNI sums products in such pairs into 16 bits (pair_max), so each pair's
     * sum is then scaled to at most pair_max - 1, and with both roundings it stays within
     * pair_max. On images, neighbouring dimensions are alike: up to a bit of the weights'
     * precision, for a kernel twice as fast. */
    float scale, pmax;
    kn->sq_absmax(q, h->sq_lo, h->sq_t, dim, &scale, &pmax);
    if (h->pair_max > 1) {
        pmax *= 127.0f / (float)(h->pair_max - 1);
        scale = pmax > scale ? pmax : scale;
    }
    /* Below 127 FLT_MIN the step would be subnormal and its inverse infinite (every weight
     * then +-127, past any pair bound; cdot, the step, made the product count for nothing
     * anyway): weights that small are all but 0, and step 1 rounds them so. Queries that are
     * not finite (the API refuses them) give garbage estimates, not undefined ones. */
    float sw = scale >= 127.0f * FLT_MIN && isfinite(scale) ? scale / 127.0f : 1.0f;
    float inv = 1.0f / sw;
    kn->sq_round(q, h->sq_lo, h->sq_t, inv, dim, L->qcode); /* clamped to +-127, NaN -127 */
    memset(L->qcode + dim, 0, h->qstride - dim);
    float half = h->metric == ST_METRIC_COSINE ? 0.5f : 1.0f;
    L->cx = half;
    L->cdot = half * 2 * sw;
    /* Less the rounding's mean, so that the estimates compare fairly with a bound found
     * exactly in other indexes (the ordering among nodes does not change). */
    L->cbias = half * (rr - h->sq_bias) - (h->metric == ST_METRIC_COSINE ? (qq + 1) / 2 : 0);
}

/* Sets lane L up for a search of q (codes or vectors) and takes it down to level 0's entry. */
static uint32_t query_begin(const struct idx_hnsw_searcher *s, struct lane *L, const float *q)
{
    const struct idx_hnsw *h = s->h;
    L->on_codes = h->codes != NULL && !s->codes_off;
    if (L->on_codes)
        quantize_query(h, L, q);
    return descend(h, L, NULL, q, h->entry, h->max_level, 0);
}

/* Lane L's hits once its level-0 search is done: the k best of its beam (re-ranked on the
 * vectors when it traversed codes), within the bound, closest first, ties by id. */
static size_t query_finish(const struct idx_hnsw *h, struct lane *L, const float *q, uint32_t k,
                           float bound, struct st_hit *out)
{
    size_t n;
    if (L->on_codes) {
        /* Re-rank the beam on the vectors: every distance returned is exact. */
        struct cand *c = L->res.a;
        n = L->res.n;
        for (size_t i = 0; i < n; i++) {
            if (i + 2 < n)
                __builtin_prefetch(hnsw_vec(h, c[i + 2].id));
            c[i].d = h->dist(q, hnsw_vec(h, c[i].id), h->dim);
        }
        for (size_t i = 0; h->labels != NULL && i < n; i++)
            c[i].id = h->labels[c[i].id]; /* ties ordered by id, however the nodes lie */
        qsort(c, n, sizeof(*c), cand_cmp);
        n = n < k ? n : k;
        for (size_t i = 0; i < n; i++)
            out[i] = (struct st_hit){c[i].id, c[i].d};
        L->res.n = 0;
    } else {
        while (L->res.n > k)
            heap_pop(&L->res, true);
        n = L->res.n;
        for (size_t i = n; i-- > 0;) {
            struct cand c = heap_pop(&L->res, true);
            out[i] = (struct st_hit){hnsw_label(h, c.id), c.d};
        }
    }
    /* Beyond the bound: of no use to the caller (ties at it are kept). */
    size_t kept = 0;
    while (kept < n && !(out[kept].dist > bound))
        kept++;
    return kept;
}

float idx_hnsw_code_estimate(const struct idx_hnsw *h, const float *q, uint32_t node)
{
    struct lane L = {.on_codes = true};
    if (h->codes == NULL || node >= h->n || (L.qcode = aligned_alloc(64, h->qstride)) == NULL)
        return NAN;
    quantize_query(h, &L, q);
    float d = node_dist(h, &L, q, node);
    free(L.qcode);
    return d;
}

size_t idx_hnsw_search(struct idx_hnsw_searcher *s, const float *q, uint32_t k, uint32_t ef,
                       st_filter_fn filter, void *fctx, struct st_hit *out)
{
    return idx_hnsw_search_bound(s, q, k, ef, INFINITY, filter, fctx, out);
}

size_t idx_hnsw_search_bound(struct idx_hnsw_searcher *s, const float *q, uint32_t k, uint32_t ef,
                             float bound, st_filter_fn filter, void *fctx, struct st_hit *out)
{
    const struct idx_hnsw *h = s->h;
    if (h->n == 0 || k == 0)
        return 0;
    if (ef < k)
        ef = k;
    struct lane *L = &s->lane[0];
    uint32_t ep = query_begin(s, L, q);
    search_layer(s, NULL, q, ep, ef, k, bound, 0, filter, fctx);
    return query_finish(h, L, q, k, bound, out);
}

int idx_hnsw_search_batch(struct idx_hnsw_searcher *s, const float *qs, size_t nq, uint32_t k,
                          uint32_t ef, st_filter_fn filter, void *fctx, struct st_hit *out,
                          size_t *counts)
{
    const struct idx_hnsw *h = s->h;
    if (!s->batch_ready) {
        for (size_t i = 1; i < BATCH_LANES; i++)
            if (lane_init(&s->lane[i], h) != ST_OK)
                return ST_ENOMEM; /* what was made is kept; the next call completes it */
        s->batch_ready = true;
    }
    if (h->n == 0 || k == 0) {
        for (size_t i = 0; i < nq; i++)
            counts[i] = 0;
        return ST_OK;
    }
    if (ef < k)
        ef = k;
    for (size_t q0 = 0; q0 < nq; q0 += BATCH_LANES) {
        size_t g = nq - q0 < BATCH_LANES ? nq - q0 : BATCH_LANES;
        for (size_t i = 0; i < g; i++) {
            struct lane *L = &s->lane[i];
            const float *q = qs + (q0 + i) * h->dim;
            uint32_t ep = query_begin(s, L, q);
            layer_begin(h, L, q, ep, ef, k, INFINITY, 0, filter, fctx);
        }
        /* In lock step: each lane's neighbour data is in flight while the others score. */
        for (size_t active = g; active > 0;) {
            active = 0;
            for (size_t i = 0; i < g; i++)
                if (!s->lane[i].done)
                    layer_expand(h, &s->lane[i], NULL, NULL);
            for (size_t i = 0; i < g; i++)
                if (!s->lane[i].done) {
                    layer_score(h, &s->lane[i]);
                    active++;
                }
        }
        for (size_t i = 0; i < g; i++)
            counts[q0 + i] = query_finish(h, &s->lane[i], qs + (q0 + i) * h->dim, k, INFINITY,
                                          out + (q0 + i) * k);
    }
    return ST_OK;
}

/* ---- build --------------------------------------------------------------------------------- */

/* Heuristic selection (Malkov & Yashunin, algorithm 4): from candidates sorted closest first,
 * keep one only if it is closer to the base than to every one already kept. */
static size_t select_neighbors(const struct idx_hnsw *h, struct cand *c, size_t n, size_t max,
                               uint32_t *out)
{
    size_t kept = 0;
    for (size_t i = 0; i < n && kept < max; i++) {
        bool good = true;
        const float *v = hnsw_vec(h, c[i].id);
        for (size_t j = 0; j < kept && good; j++)
            good = h->dist(v, hnsw_vec(h, out[j]), h->dim) > c[i].d;
        if (good)
            out[kept++] = c[i].id;
    }
    return kept;
}

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Adds `add` to the links of node `to` at level l, re-selecting if the list is full.
 * Caller holds to's lock. */
static void add_link(const struct idx_hnsw *h, uint32_t to, uint32_t add, int l)
{
    uint32_t *links = hnsw_links(h, to, l);
    uint32_t max = l == 0 ? h->m0 : h->m;
    uint32_t cnt = links[0];
    for (uint32_t j = 0; j < cnt; j++)
        if (links[1 + j] == add)
            return;
    if (cnt < max) {
        links[1 + cnt] = add;
        links[0] = cnt + 1;
        return;
    }
    struct cand c[257];
    const float *v = hnsw_vec(h, to);
    for (uint32_t j = 0; j < cnt; j++)
        c[j] = (struct cand){h->dist(v, hnsw_vec(h, links[1 + j]), h->dim), links[1 + j]};
    c[cnt] = (struct cand){h->dist(v, hnsw_vec(h, add), h->dim), add};
    qsort(c, cnt + 1, sizeof(c[0]), cand_cmp);
    links[0] = (uint32_t)select_neighbors(h, c, cnt + 1, max, links + 1);
}

/*
 * Inserts node i: its own lists at every level first, then the links to it. Until the second
 * phase no list names i, so no other thread can reach it half-linked: a node met through an
 * upper level whose lower lists were still empty became the only neighbour other nodes found
 * there (barely reachable), and links added to a list i had not written yet were then written
 * over (nodes left with no link to them at all). On one thread the order changes nothing: a
 * search on level l reads only level-l lists.
 */
static int insert(struct build *b, struct idx_hnsw_searcher *s, uint32_t i)
{
    struct idx_hnsw *h = b->h;
    const float *q = hnsw_vec(h, i);
    int level = h->levels[i];
    pthread_mutex_lock(&b->entry_mu);
    uint32_t ep = h->entry;
    int top = h->max_level;
    if (top < 0) { /* the first node: it is the graph */
        h->entry = i;
        h->max_level = level;
        pthread_mutex_unlock(&b->entry_mu);
        return ST_OK;
    }
    bool hold = level > top; /* we will become the new entry point: keep others out */
    if (!hold)
        pthread_mutex_unlock(&b->entry_mu);
    if (level < top)
        ep = descend(h, &s->lane[0], b, q, ep, top, level);
    int from = level < top ? level : top;
    struct cand *sorted = malloc(((size_t)h->ef_construction + 1) * sizeof(*sorted));
    /* per level l <= from: the count, then the neighbours chosen (at most m) */
    uint32_t *sel = malloc((size_t)(from + 1) * (1 + h->m) * sizeof(*sel));
    if (sorted == NULL || sel == NULL) {
        free(sorted);
        free(sel);
        if (hold)
            pthread_mutex_unlock(&b->entry_mu);
        return ST_ENOMEM;
    }
    for (int l = from; l >= 0; l--) {
        search_layer(s, b, q, ep, h->ef_construction, h->ef_construction, INFINITY, l, NULL, NULL);
        struct heap *res = &s->lane[0].res;
        size_t n = res->n;
        for (size_t j = n; j-- > 0;)
            sorted[j] = heap_pop(res, true);
        uint32_t *sl = sel + (size_t)l * (1 + h->m);
        sl[0] = (uint32_t)select_neighbors(h, sorted, n, h->m, sl + 1);
        node_lock(b, i);
        uint32_t *links = hnsw_links(h, i, l);
        memcpy(links, sl, (1 + sl[0]) * sizeof(uint32_t));
        node_unlock(b, i);
        ep = sorted[0].id;
    }
    for (int l = from; l >= 0; l--) {
        const uint32_t *sl = sel + (size_t)l * (1 + h->m);
        for (uint32_t j = 0; j < sl[0]; j++) {
            node_lock(b, sl[1 + j]);
            add_link(h, sl[1 + j], i, l);
            node_unlock(b, sl[1 + j]);
        }
    }
    free(sorted);
    free(sel);
    if (hold) {
        h->entry = i;
        h->max_level = level;
        pthread_mutex_unlock(&b->entry_mu);
    }
    return ST_OK;
}

static void *build_worker(void *arg)
{
    struct build *b = arg;
    struct idx_hnsw_searcher *s = idx_hnsw_searcher_new(b->h);
    if (s == NULL) {
        b->rc = ST_ENOMEM;
        return NULL;
    }
    for (;;) {
        uint32_t i = atomic_fetch_add(&b->next, 1);
        if (i >= b->h->n)
            break;
        int rc = insert(b, s, i);
        if (rc != ST_OK) {
            b->rc = rc;
            break;
        }
        idx_cpucap_tick(); /* between insertions: no node's lock is held */
    }
    idx_hnsw_searcher_free(s);
    return NULL;
}

/* A build thread of its own: named (top -H, perf), unlike a caller running build_worker. */
static void *build_thread(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "idx-hnsw-build"); /* by itself: a prctl */
    return build_worker(arg);
}

/* The byte products the codes are measured with, and the 8-bit one's pair bound
 * (quantize_query; 4-bit codes need none). */
static void code_kernel(struct idx_hnsw *h)
{
    h->dotu8 = st_kernels()->dotu8_paired;
    h->dotu4 = st_kernels()->dotu4;
    h->pair_max = h->code_bits == 4 ? 0 : st_kernels()->dotu8_pair_max;
}

int idx_hnsw_alloc(struct idx_hnsw *h, uint32_t n)
{
    h->n = n;
    h->vec_bytes = ((size_t)h->dim * sizeof(float) + 63) & ~(size_t)63;
    h->stride = (h->vec_bytes + (1 + h->m0) * sizeof(uint32_t) + 63) & ~(size_t)63;
    h->level0 = aligned_alloc(64, h->stride * (n ? n : 1));
    h->upper = calloc(n ? n : 1, sizeof(*h->upper));
    h->levels = calloc(n ? n : 1, 1);
    h->dist = st_metric_fn(st_kernels(), h->metric);
    code_kernel(h);
    if (h->level0 == NULL || h->upper == NULL || h->levels == NULL)
        return ST_ENOMEM;
    memset(h->level0, 0, h->stride * n);
    return ST_OK;
}

/*
 * Nodes from..h->n-1 get their vectors (rows of vecs, the first for node `from`) and their
 * levels, floor(-ln(U) / ln(m)) as in the paper, U from a xorshift generator seeded with seed
 * (0: a fixed default), one draw per node in id order; upper lists allocated, empty.
 */
static int place_nodes(struct idx_hnsw *h, uint32_t from, const float *vecs, uint64_t seed)
{
    uint64_t x = seed ? seed : 0x9e3779b97f4a7c15ull;
    double ml = 1.0 / log((double)h->m);
    for (uint32_t i = from; i < h->n; i++) {
        memcpy(h->level0 + (size_t)i * h->stride, vecs + (size_t)(i - from) * h->dim,
               h->dim * sizeof(float));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double u = ((double)(x >> 11) + 0.5) / 9007199254740992.0;
        int lv = (int)(-log(u) * ml);
        if (lv > 15)
            lv = 15;
        h->levels[i] = (uint8_t)lv;
        if (lv > 0 && (h->upper[i] = calloc((size_t)lv * (1 + h->m), sizeof(uint32_t))) == NULL)
            return ST_ENOMEM;
    }
    return ST_OK;
}

/*
 * Inserts nodes from..h->n-1 (placed, no links yet) into the graph nodes 0..from-1 form (its
 * entry and max_level set; max_level -1 when from is 0), in id order on one thread, or on
 * `threads` sharing them with per-node spinlocks. The one insertion loop of build and extend.
 */
static int insert_nodes(struct idx_hnsw *h, uint32_t from, uint32_t threads)
{
    struct build b = {.h = h};
    atomic_init(&b.next, from);
    pthread_mutex_init(&b.entry_mu, NULL);
    _Atomic uint8_t *lock_mem = NULL;
    if (threads > 1) {
        lock_mem = calloc(h->n ? h->n : 1, sizeof(*lock_mem));
        b.locks = lock_mem;
        if (b.locks == NULL) {
            pthread_mutex_destroy(&b.entry_mu);
            return ST_ENOMEM;
        }
    }
    if (threads <= 1) {
        build_worker(&b); /* on the caller's thread, its name kept */
    } else {
        pthread_t *t = calloc(threads, sizeof(*t));
        uint32_t started = 0;
        for (; t != NULL && started < threads; started++)
            if (pthread_create(&t[started], NULL, build_thread, &b) != 0)
                break;
        if (started == 0)
            build_worker(&b);
        for (uint32_t i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        free(t);
    }
    free((void *)(uintptr_t)lock_mem);
    pthread_mutex_destroy(&b.entry_mu);
    return b.rc;
}

/* Marks in seen[] every node reachable on level 0 from `from` (not yet marked), or stops as
 * soon as it marks `stop` (UINT32_MAX: never); stack: n entries of scratch. Returns how many
 * nodes it went through. */
static uint32_t mark_reachable(const struct idx_hnsw *h, uint32_t from, uint8_t *seen,
                               uint32_t *stack, uint32_t stop)
{
    uint32_t top = 0, marked = 0;
    if (seen[from])
        return 0;
    seen[from] = 1;
    stack[top++] = from;
    while (top > 0 && from != stop) {
        const uint32_t *links = hnsw_links0(h, stack[--top]);
        marked++;
        for (uint32_t j = 0; j < links[0]; j++) {
            uint32_t e = links[1 + j];
            if (!seen[e]) {
                seen[e] = 1;
                if (e == stop)
                    return marked;
                stack[top++] = e;
            }
        }
    }
    return marked;
}

/* Scratch of the reachability repair (connect_all). */
struct reach {
    struct idx_hnsw *h;
    struct idx_hnsw_searcher *s;
    uint8_t *fwd;      /* reached from the entry on level 0 */
    uint8_t *chk;      /* a fresh traversal, to verify a link given up */
    uint8_t *back;     /* can reach the entry on level 0 */
    uint32_t *stack;   /* n */
    uint32_t *indeg;   /* n: links to each node */
    size_t *roff;      /* n + 1: the reversed lists (CSR), built once for the backward step */
    uint32_t *radj;    /* sum of list lengths */
    struct cand *near; /* ef_construction + 1 */
    uint32_t verifies; /* traversals left for verifying replaced links */
};

/* The nodes nearest to q that pass ok[] (nonzero), closest first, in r->near; returns how many.
 * The entry is always a candidate if it passes. */
static size_t nearest_marked(struct reach *r, const float *q, uint32_t self, const uint8_t *ok)
{
    struct idx_hnsw *h = r->h;
    r->s->lane[0].on_codes = false;
    uint32_t ep = descend(h, &r->s->lane[0], NULL, q, h->entry, h->max_level, 0);
    search_layer(r->s, NULL, q, ep, h->ef_construction, h->ef_construction, INFINITY, 0, NULL,
                 NULL);
    size_t nn = 0;
    bool entry_in = false;
    while (r->s->lane[0].res.n > 0) {
        struct cand c = heap_pop(&r->s->lane[0].res, true);
        if (ok[c.id] && c.id != self) {
            r->near[nn++] = c;
            entry_in |= c.id == h->entry;
        }
    }
    if (!entry_in && ok[h->entry] && h->entry != self)
        r->near[nn++] = (struct cand){h->dist(q, hnsw_vec(h, h->entry), h->dim), h->entry};
    qsort(r->near, nn, sizeof(*r->near), cand_cmp);
    return nn;
}

/* Is `node` reached from the entry? A traversal that stops when it finds it (r->chk scratch).
 * After a swap that dropped a link to `node`, this is exact for the whole graph: whatever
 * lost its way in lost it through `node`. */
static bool reached_now(struct reach *r, uint32_t node)
{
    memset(r->chk, 0, r->h->n);
    mark_reachable(r->h, r->h->entry, r->chk, r->stack, node);
    return r->chk[node];
}

/* Puts `to` into node v's full level-0 list in place of one of its links, most-linked target
 * first, keeping the change only if the target dropped is still reached (reached_now: then
 * nothing reached was cut off). The caller marks what `to` reaches. False when no swap passed
 * or the budget is spent. */
static bool swap_link(struct reach *r, uint32_t v, uint32_t to)
{
    uint32_t *links = hnsw_links0(r->h, v);
    uint8_t tried[256] = {0};
    for (int attempt = 0; attempt < 2 && r->verifies > 0; attempt++) {
        uint32_t w = UINT32_MAX;
        for (uint32_t j = 0; j < links[0]; j++)
            if (!tried[j] && links[1 + j] != to &&
                (w == UINT32_MAX || r->indeg[links[1 + j]] > r->indeg[links[1 + w]]))
                w = j;
        if (w == UINT32_MAX || r->indeg[links[1 + w]] < 2)
            return false; /* a target linked from v alone would be cut off */
        tried[w] = 1;
        uint32_t old = links[1 + w];
        links[1 + w] = to;
        r->verifies--;
        if (!r->fwd[old] || reached_now(r, old)) {
            r->indeg[old]--;
            r->indeg[to]++;
            return true;
        }
        links[1 + w] = old;
    }
    return false;
}

/* Forward: a link to each node the entry does not reach, from the nearest reached node with
 * room; only once no append is left, by swap_link in a near one (an append elsewhere may
 * already have brought a node in); what the node reaches is reached from then on. */
static void connect_forward(struct reach *r)
{
    struct idx_hnsw *h = r->h;
    for (int swaps = 0; swaps < 2; swaps++)
        for (uint32_t u = 0; u < h->n; u++) {
            if (r->fwd[u])
                continue;
            size_t nn = nearest_marked(r, hnsw_vec(h, u), u, r->fwd);
            bool linked = false;
            for (size_t j = 0; j < nn && !linked; j++) {
                uint32_t *l = hnsw_links0(h, r->near[j].id);
                if (l[0] < h->m0) {
                    l[1 + l[0]++] = u;
                    r->indeg[u]++;
                    linked = true;
                }
            }
            for (size_t j = 0; swaps && j < nn && j < 4 && !linked; j++)
                linked = swap_link(r, r->near[j].id, u);
            if (linked)
                mark_reachable(h, u, r->fwd, r->stack, UINT32_MAX);
        }
}

/* Marks in r->back every node that reaches `to` (not yet marked) through the reversed lists
 * built at the start of the backward step (links added since only lead into marked nodes). */
static void mark_reaching(struct reach *r, uint32_t to)
{
    uint32_t top = 0;
    if (r->back[to])
        return;
    r->back[to] = 1;
    r->stack[top++] = to;
    while (top > 0) {
        uint32_t x = r->stack[--top];
        for (size_t j = r->roff[x]; j < r->roff[x + 1]; j++) {
            uint32_t e = r->radj[j];
            if (!r->back[e]) {
                r->back[e] = 1;
                r->stack[top++] = e;
            }
        }
    }
}

/* Backward: a search lands on level 0 wherever the upper levels lead it, so each node must
 * also reach the entry (then the level-0 graph is strongly connected). A node that cannot gets
 * a link to the nearest node that can, appended when its list has room, else by swap_link. */
static int connect_backward(struct reach *r)
{
    struct idx_hnsw *h = r->h;
    uint64_t total = 0;
    for (uint32_t i = 0; i < h->n; i++)
        total += hnsw_links0(h, i)[0];
    r->roff = calloc((size_t)h->n + 1, sizeof(*r->roff));
    r->radj = malloc((size_t)(total ? total : 1) * sizeof(*r->radj));
    size_t *fill = malloc((size_t)h->n * sizeof(*fill)); /* each node's next in-link slot */
    if (r->roff == NULL || r->radj == NULL || fill == NULL) {
        free(fill);
        return ST_ENOMEM; /* the caller skips this step: the build stands, unrepaired here */
    }
    for (uint32_t i = 0; i < h->n; i++) {
        const uint32_t *l = hnsw_links0(h, i);
        for (uint32_t j = 0; j < l[0]; j++)
            r->roff[l[1 + j] + 1]++;
    }
    for (uint32_t i = 0; i < h->n; i++)
        r->roff[i + 1] += r->roff[i];
    memcpy(fill, r->roff, (size_t)h->n * sizeof(*fill));
    for (uint32_t i = 0; i < h->n; i++) {
        const uint32_t *l = hnsw_links0(h, i);
        for (uint32_t j = 0; j < l[0]; j++)
            r->radj[fill[l[1 + j]]++] = i;
    }
    free(fill);
    memset(r->back, 0, h->n);
    mark_reaching(r, h->entry);
    /* Appends first (one may bring a whole sink in); swaps only for what is left. */
    for (int swaps = 0; swaps < 2; swaps++)
        for (uint32_t w = 0; w < h->n; w++) {
            if (r->back[w])
                continue;
            size_t nn = nearest_marked(r, hnsw_vec(h, w), w, r->back);
            if (nn == 0)
                continue;
            uint32_t *l = hnsw_links0(h, w);
            uint32_t x = UINT32_MAX;
            if (l[0] < h->m0) {
                x = r->near[0].id;
                l[1 + l[0]++] = x;
                r->indeg[x]++;
            }
            for (size_t j = 0; swaps && x == UINT32_MAX && j < nn && j < 4; j++)
                if (swap_link(r, w, r->near[j].id))
                    x = r->near[j].id;
            if (x == UINT32_MAX)
                continue;
            mark_reaching(r, w);
            if (r->fwd[w]) /* a node forward linking left out may be reached through w now */
                mark_reachable(h, x, r->fwd, r->stack, UINT32_MAX);
        }
    return ST_OK;
}

/*
 * Makes the level-0 graph strongly connected, as far as it can without growing a list. A
 * search can only return nodes its traversal reaches, and insertion does not promise that: a
 * full list's re-selection can drop the only link to a node (a one-thread build over
 * Fashion-MNIST left 136 of 60,000 unreached from the entry), threads vary the order of those
 * re-selections from run to run, and a search starts level 0 wherever the upper levels lead
 * it, not at the entry. So after the inserts: every node the entry does not reach gets a link
 * from its nearest reached node, then every node that cannot reach the entry a link to its
 * nearest node that can — appended where the list has room, else in place of a link to a
 * node linked from elsewhere too, kept only if a traversal from the entry still finds that
 * node (REACH_VERIFY_BUDGET such traversals at most); appends are tried for every node before
 * any swap. Single-threaded, after every insert thread has joined; a graph with nothing to
 * repair costs two traversals and the reversed lists (4 bytes a link, 8 a node; without the
 * memory for them the backward step is skipped, not the build). *left gets the nodes still
 * unreached or unable to reach the entry (0 unless lists are full everywhere near them; the
 * backward step's when it was skipped are not counted).
 */
static int connect_all(struct idx_hnsw *h, uint32_t *left)
{
    *left = 0;
    if (h->n < 2 || h->max_level < 0)
        return ST_OK;
    struct reach r = {.h = h, .verifies = REACH_VERIFY_BUDGET};
    int rc = ST_ENOMEM;
    r.fwd = calloc(h->n, 1);
    r.chk = malloc(h->n);
    r.back = malloc(h->n);
    r.stack = malloc((size_t)h->n * sizeof(*r.stack));
    r.indeg = calloc(h->n, sizeof(*r.indeg));
    r.s = idx_hnsw_searcher_new(h);
    /* A search's results (at most max(ef, 1)) and the entry node when they lack it. */
    r.near = malloc(((size_t)h->ef_construction + 2) * sizeof(*r.near));
    if (!r.fwd || !r.chk || !r.back || !r.stack || !r.indeg || !r.s || !r.near)
        goto out;
    for (uint32_t i = 0; i < h->n; i++) {
        const uint32_t *l = hnsw_links0(h, i);
        for (uint32_t j = 0; j < l[0]; j++)
            r.indeg[l[1 + j]]++;
    }
    if (mark_reachable(h, h->entry, r.fwd, r.stack, UINT32_MAX) < h->n)
        connect_forward(&r);
    rc = ST_OK;
    if (connect_backward(&r) != ST_OK) /* no memory for the reversed lists: not repaired */
        memset(r.back, 1, h->n);
    for (uint32_t i = 0; i < h->n; i++)
        *left += !r.fwd[i] || !r.back[i];
out:
    free(r.fwd);
    free(r.chk);
    free(r.back);
    free(r.stack);
    free(r.indeg);
    free(r.roff);
    free(r.radj);
    free(r.near);
    idx_hnsw_searcher_free(r.s);
    return rc;
}

int idx_hnsw_build(const struct idx_hnsw_opts *o, const float *vecs, uint32_t n,
                   struct idx_hnsw **out)
{
    *out = NULL;
    if (o->dim == 0 || (o->m != 0 && (o->m < 2 || o->m > 128)) || o->ef_construction > (1u << 20))
        return ST_EINVAL; /* (ef_construction: as the loader bounds it) */
    struct idx_hnsw *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return ST_ENOMEM;
    h->dim = o->dim;
    h->metric = o->metric;
    h->m = o->m ? o->m : 16;
    h->m0 = 2 * h->m;
    h->ef_construction = o->ef_construction ? o->ef_construction : 200;
    if (h->ef_construction < h->m)
        h->ef_construction = h->m;
    h->max_level = -1;
    int rc = idx_hnsw_alloc(h, n);
    if (rc == ST_OK)
        rc = place_nodes(h, 0, vecs, o->seed);
    if (rc == ST_OK)
        rc = insert_nodes(h, 0, o->threads ? o->threads : 1);
    if (rc == ST_OK)
        rc = connect_all(h, &h->unreached);
    if (rc == ST_OK)
        rc = idx_hnsw_make_codes(h);
    if (rc != ST_OK) {
        idx_hnsw_free(h);
        return rc;
    }
    *out = h;
    return ST_OK;
}

int idx_hnsw_extend(const struct idx_hnsw *base, const float *vecs, uint32_t n, uint32_t threads,
                    uint64_t seed, struct idx_hnsw **out)
{
    *out = NULL;
    uint32_t nb = base->n;
    if ((n > 0 && vecs == NULL) || n > UINT32_MAX - nb)
        return ST_EINVAL;
    struct idx_hnsw *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return ST_ENOMEM;
    h->dim = base->dim;
    h->metric = base->metric;
    h->m = base->m;
    h->m0 = base->m0;
    h->ef_construction = base->ef_construction;
    /* An empty file may name any entry and top level (nothing reads them): start empty. */
    h->entry = nb > 0 ? base->entry : 0;
    h->max_level = nb > 0 ? base->max_level : -1;
    int rc = idx_hnsw_alloc(h, nb + n);
    /* base's nodes as they are, node by node: a loaded base is laid out with the file's
     * stride and vec_bytes (any the format allows), and its upper lists live in its map.
     * Whole lists are copied, unused slots too, so the bytes are those a build would hold. */
    size_t list0 = (1 + (size_t)h->m0) * sizeof(uint32_t);
    for (uint32_t i = 0; rc == ST_OK && i < nb; i++) {
        memcpy(h->level0 + (size_t)i * h->stride, hnsw_vec(base, i), h->dim * sizeof(float));
        memcpy(hnsw_links0(h, i), hnsw_links0(base, i), list0);
        h->levels[i] = base->levels[i];
        size_t up = (size_t)base->levels[i] * (1 + h->m) * sizeof(uint32_t);
        if (up > 0 && (h->upper[i] = malloc(up)) == NULL)
            rc = ST_ENOMEM;
        else if (up > 0)
            memcpy(h->upper[i], base->upper[i], up);
    }
    /* A reordered base keeps its ids: the new nodes' ids follow them (nb + j). */
    if (rc == ST_OK && base->labels != NULL) {
        if ((h->labels = malloc(((size_t)nb + n) * sizeof(*h->labels))) == NULL)
            rc = ST_ENOMEM;
        for (uint32_t i = 0; rc == ST_OK && i < nb + n; i++)
            h->labels[i] = i < nb ? base->labels[i] : i;
    }
    if (rc == ST_OK)
        rc = place_nodes(h, nb, vecs, seed);
    if (rc == ST_OK)
        rc = insert_nodes(h, nb, threads ? threads : 1);
    if (rc == ST_OK)
        rc = connect_all(h, &h->unreached);
    if (rc == ST_OK)
        rc = idx_hnsw_make_codes(h);
    if (rc != ST_OK) {
        idx_hnsw_free(h);
        return rc;
    }
    *out = h;
    return ST_OK;
}

void idx_hnsw_free(struct idx_hnsw *h)
{
    if (h == NULL)
        return;
    if (h->map != NULL) {
        munmap(h->map, h->map_len); /* level0, levels and upper lists live in the map */
    } else {
        for (uint32_t i = 0; h->upper != NULL && i < h->n; i++)
            free(h->upper[i]);
        free(h->level0);
        free(h->levels);
    }
    free(h->upper);
    if (h->map == NULL)
        free(h->labels); /* a loaded file's labels live in its map */
    free(h->codes);
    free(h->sq_lo);
    free(h->sq_t);
    free(h->cnorm);
    free(h);
}

static void drop_codes(struct idx_hnsw *h)
{
    free(h->codes);
    free(h->sq_lo);
    free(h->sq_t);
    free(h->cnorm);
    h->codes = NULL;
    h->sq_lo = h->sq_t = h->cnorm = NULL;
}

/*
 * Whether the codes cost no recall on this data: up to `queries` queries between the nodes
 * (the midpoint of a node and its first neighbour: near the data, not on it), searched on codes
 * and on the vectors (k = 10, beam ef: 16 for 4-bit codes, 32 for 8-bit). Both return exact
 * distances, so the union's ten best are the truth both are measured against; the codes fail
 * if their recall is more than `tolerance` (0.01 for 4 bits chosen by default, else 0.02)
 * below the vectors'. The midpoints are easy queries (their two nodes are near-certain hits),
 * and a beam of k is not checked: there 4-bit codes cost recall even where kept (Fashion-MNIST
 * 0.928 -> 0.908 at ef 10; the service's default beam is max(64, k)). (Agreement with the float
 * traversal was the first measure: on a weak graph the two miss different neighbours, and codes
 * exactly as good were dropped.) Per-dimension steps with the query's weights in signed bytes
 * lose the narrow dimensions where ranges differ by far more than 127x: one dimension 30x wider
 * cost recall 0.38 against 0.999.
 */
static int hit_cmp(const void *a, const void *b);

static bool codes_self_check(struct idx_hnsw *h, const uint32_t *inv, uint32_t queries, uint32_t ef,
                             double tolerance)
{
    uint32_t nq = h->n < queries ? h->n : queries, hit_c = 0, hit_v = 0;
    struct idx_hnsw_searcher *sc = idx_hnsw_searcher_new(h), *sv = idx_hnsw_searcher_new(h);
    float *q = malloc(h->dim * sizeof(float));
    if (sc == NULL || sv == NULL || q == NULL) {
        idx_hnsw_searcher_free(sc);
        idx_hnsw_searcher_free(sv);
        free(q);
        return false; /* optional: without memory for the check, go without */
    }
    sv->codes_off = true;
    for (uint32_t k = 0; k < nq; k++) {
        uint32_t i = (uint32_t)((uint64_t)k * h->n / nq);
        if (inv != NULL)
            i = inv[i]; /* by id: the same queries however the nodes are numbered */
        uint32_t *l0 = hnsw_links0(h, i);
        uint32_t j = l0[0] > 0 ? l0[1] : i;
        for (uint32_t d = 0; d < h->dim; d++)
            q[d] = 0.5f * (hnsw_vec(h, i)[d] + hnsw_vec(h, j)[d]);
        struct st_hit a[10], b[10], u[20];
        size_t na = idx_hnsw_search(sc, q, 10, ef, NULL, NULL, a);
        size_t nb = idx_hnsw_search(sv, q, 10, ef, NULL, NULL, b);
        size_t nu = 0;
        for (size_t x = 0; x < na; x++)
            u[nu++] = a[x];
        for (size_t y = 0; y < nb; y++) {
            bool dup = false;
            for (size_t x = 0; x < na && !dup; x++)
                dup = a[x].id == b[y].id;
            if (!dup)
                u[nu++] = b[y];
        }
        qsort(u, nu, sizeof(u[0]), hit_cmp);
        size_t top = nu < 10 ? nu : 10;
        for (size_t t = 0; t < top; t++) {
            for (size_t x = 0; x < na; x++)
                hit_c += a[x].id == u[t].id;
            for (size_t y = 0; y < nb; y++)
                hit_v += b[y].id == u[t].id;
        }
    }
    idx_hnsw_searcher_free(sc);
    idx_hnsw_searcher_free(sv);
    free(q);
    return (double)hit_c >= (double)hit_v - tolerance * 10 * nq;
}

static int hit_cmp(const void *a, const void *b)
{
    const struct st_hit *x = a, *y = b;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Offsets, steps, codes and norms at `bits` (4 or 8) from rng (per dimension: the true least
 * and greatest value, the sample's middle 99.8 % bounds); false when a step is not usable (no
 * codes then). */
static bool fill_codes(struct idx_hnsw *h, int bits, const float *rng, const uint32_t *inv)
{
    free(h->codes);
    h->code_bits = bits;
    code_kernel(h);
    h->cstride = bits == 4 ? (h->qstride / 2 + 63) & ~(size_t)63 : h->qstride;
    h->codes = aligned_alloc(64, h->cstride * h->n);
    if (h->codes == NULL)
        return false;
    float top = bits == 4 ? 15.0f : 255.0f;
    float widen = bits == 8 ? 1.0f : 0.0f;
    for (uint32_t j = 0; j < h->dim; j++) {
        const float *r = rng + 4 * (size_t)j; /* true least and greatest, middle's bounds */
        float lo = r[0], hi = r[1], w = r[3] - r[2];
        if (w > 0 && isfinite(w)) {
            lo = r[2] - widen * w > lo ? r[2] - widen * w : lo;
            hi = r[3] + widen * w < hi ? r[3] + widen * w : hi;
        }
        h->sq_lo[j] = lo;
        float t = (hi - lo) / top; /* 0: one value, exact */
        if (!isfinite(t) || (t > 0 && !isfinite(1.0f / t)))
            return false;
        h->sq_t[j] = t;
    }
    memset(h->codes, 0, h->cstride * h->n);
    double bias = 0;
    for (uint32_t id = 0; id < h->n; id++) {
        /* by id: a renumbered graph sums the bias in the same order, to the same float */
        uint32_t i = inv != NULL ? inv[id] : id;
        const float *v = hnsw_vec(h, i);
        uint8_t *c = h->codes + (size_t)i * h->cstride;
        double xx = 0, yy = 0;
        for (uint32_t j = 0; j < h->dim; j++) {
            float t = h->sq_t[j], x = t > 0 ? (v[j] - h->sq_lo[j]) / t : 0;
            uint8_t cj = (uint8_t)lrintf(x < 0 ? 0 : x < top ? x : top);
            if (bits == 4) /* st_dotu4_fn's layout: 64 dimensions in 32 bytes, low nibbles first */
                c[j / 64 * 32 + j % 32] |= (uint8_t)(cj << (j % 64 >= 32 ? 4 : 0));
            else
                c[j] = cj;
            double y = (double)t * cj, e = (double)v[j] - h->sq_lo[j];
            xx += y * y;
            yy += e * e;
        }
        h->cnorm[i] = (float)xx;
        bias += xx - yy;
    }
    /* What the codes add to a node's norm on average: rounding (t^2 / 12 a dimension where
     * values spread evenly within steps) and clamping; the estimates subtract it. */
    h->sq_bias = (float)(bias / h->n);
    return true;
}

int idx_hnsw_make_codes(struct idx_hnsw *h)
{
    return idx_hnsw_make_codes_bits(h, 0);
}

int idx_hnsw_make_codes_bits(struct idx_hnsw *h, int bits)
{
    if (bits != 0 && bits != 4 && bits != 8)
        return ST_EINVAL;
    drop_codes(h);
    h->code_bits = 8;
    code_kernel(h);
    /* Past 65,536 dimensions the sums could overflow 32 bits: no codes (a loaded file may
     * claim any dimension; collections are smaller). */
    if (h->metric == ST_METRIC_IP || h->n == 0 || h->dim > 65536)
        return ST_OK;
    h->qstride = ((size_t)h->dim + 63) & ~(size_t)63;
    h->sq_lo = malloc(h->dim * sizeof(float));
    h->sq_t = malloc(h->dim * sizeof(float));
    h->cnorm = malloc(h->n * sizeof(float));
    float *rng = malloc(4 * (size_t)h->dim * sizeof(float));
    if (h->sq_lo == NULL || h->sq_t == NULL || h->cnorm == NULL || rng == NULL) {
        free(rng);
        drop_codes(h); /* the codes are optional: without memory, traverse on the vectors */
        return ST_OK;
    }
    for (uint32_t j = 0; j < h->dim; j++) {
        rng[4 * j] = INFINITY;
        rng[4 * j + 1] = -INFINITY;
    }
    for (uint32_t i = 0; i < h->n; i++) {
        const float *v = hnsw_vec(h, i);
        for (uint32_t j = 0; j < h->dim; j++) {
            if (!isfinite(v[j])) {
                free(rng);
                drop_codes(h); /* no codes: the search traverses on the vectors */
                return ST_OK;
            }
            rng[4 * j] = v[j] < rng[4 * j] ? v[j] : rng[4 * j];
            rng[4 * j + 1] = v[j] > rng[4 * j + 1] ? v[j] : rng[4 * j + 1];
        }
    }
    /* A few outlying values must not squeeze a dimension (one value of 1000 among values
     * within +-8 cut recall on codes from 0.88 to 0.67): each range is that of the middle
     * 99.8 % of a sample of the nodes (fill_codes: at eight bits widened by its own width on
     * each side, within the true range). Values beyond it are clamped: only those nodes'
     * traversal distances suffer (the re-rank is exact). A dimension whose middle is one
     * value keeps its true range. */
    uint32_t ns = h->n < 4096 ? h->n : 4096;
    float *col = malloc(ns * sizeof(float));
    /* The sample (and the self-check's queries) are chosen by id, not by node number, so a
     * renumbered graph (idx_hnsw_reorder) gets the very same codes and verdict. */
    uint32_t *inv = h->labels != NULL ? malloc((size_t)h->n * sizeof(*inv)) : NULL;
    if (col == NULL || (h->labels != NULL && inv == NULL)) {
        free(col);
        free(inv);
        free(rng);
        drop_codes(h);
        return ST_OK;
    }
    for (uint32_t i = 0; inv != NULL && i < h->n; i++)
        inv[h->labels[i]] = i;
    for (uint32_t j = 0; j < h->dim; j++) {
        for (uint32_t k = 0; k < ns; k++) {
            uint32_t id = (uint32_t)((uint64_t)k * h->n / ns);
            col[k] = hnsw_vec(h, inv != NULL ? inv[id] : id)[j];
        }
        qsort(col, ns, sizeof(float), float_cmp);
        rng[4 * j + 2] = col[ns / 1000];
        rng[4 * j + 3] = col[ns - 1 - ns / 1000];
    }
    free(col);
    /* Four bits a dimension where they cost no recall (half the bytes a node's traversal
     * reads: on a CPU that waits for memory, 1.75-1.85x the QPS of eight bits on
     * Fashion-MNIST at the same recall, docs/benchmarks.md), held to half the tolerance eight
     * bits are, since eight bits are there to fall back to; else eight bits, else none. */
    /* Up to 64 dimensions a 4-bit row is a cache line, as an 8-bit one: nothing to gain. */
    int first = bits == 4 || (bits == 0 && h->qstride > 64) ? 4 : 8, last = bits == 4 ? 4 : 8;
    bool kept = false;
    for (int b = first; b <= last && !kept; b += 4) {
        if (!fill_codes(h, b, rng, inv))
            break;
        kept = b == 4 ? codes_self_check(h, inv, 128, 16, bits == 0 ? 0.01 : 0.02)
                      : codes_self_check(h, inv, 64, 32, 0.02);
    }
    free(inv);
    free(rng);
    if (!kept)
        drop_codes(h);
    return ST_OK;
}

uint32_t idx_hnsw_count(const struct idx_hnsw *h)
{
    return h->n;
}

uint32_t idx_hnsw_unreached(const struct idx_hnsw *h)
{
    return h->unreached;
}

bool idx_hnsw_has_codes(const struct idx_hnsw *h)
{
    return h->codes != NULL;
}

int idx_hnsw_code_bits(const struct idx_hnsw *h)
{
    return h->codes != NULL ? h->code_bits : 0;
}

uint32_t idx_hnsw_dim(const struct idx_hnsw *h)
{
    return h->dim;
}

enum st_metric idx_hnsw_metric(const struct idx_hnsw *h)
{
    return h->metric;
}

size_t idx_hnsw_memory(const struct idx_hnsw *h)
{
    size_t m = h->stride * h->n + h->n * (sizeof(*h->upper) + 1);
    if (h->codes != NULL)
        m += (h->cstride + sizeof(float)) * h->n + 2 * sizeof(float) * h->dim;
    for (uint32_t i = 0; i < h->n; i++)
        m += (size_t)h->levels[i] * (1 + h->m) * sizeof(uint32_t);
    if (h->labels != NULL) /* read in full on load and by every search, like the blocks */
        m += h->n * sizeof(*h->labels);
    return m;
}

const float *idx_hnsw_vector(const struct idx_hnsw *h, uint32_t node)
{
    return hnsw_vec(h, node);
}

uint32_t idx_hnsw_label(const struct idx_hnsw *h, uint32_t node)
{
    return hnsw_label(h, node);
}

float idx_hnsw_entry_distance(const struct idx_hnsw *h, const float *q)
{
    return h->n == 0 ? INFINITY : h->dist(q, hnsw_vec(h, h->entry), h->dim);
}

/* Row v of rows (n rows of size bytes) takes old row order[v], in place: each cycle of the
 * permutation is followed once with one row of scratch (tmp); mark (n words) is scratch too. */
static void permute_rows(uint8_t *rows, size_t size, const uint32_t *order, uint32_t n,
                         uint32_t *mark, uint8_t *tmp)
{
    memset(mark, 0, (size_t)n * sizeof(*mark));
    for (uint32_t start = 0; start < n; start++) {
        if (mark[start] || order[start] == start)
            continue;
        memcpy(tmp, rows + (size_t)start * size, size);
        uint32_t v = start;
        while (order[v] != start) {
            mark[v] = 1;
            memcpy(rows + (size_t)v * size, rows + (size_t)order[v] * size, size);
            v = order[v];
        }
        mark[v] = 1;
        memcpy(rows + (size_t)v * size, tmp, size);
    }
}

/*
 * Renumbers the nodes in breadth-first order over level 0 from the entry (nodes no traversal
 * reaches last, in id order), so that a node's neighbours sit near it in memory: a search reads
 * their codes and vectors from fewer pages (Coleman et al., "Graph reordering for cache-efficient
 * near neighbor search", 2022, measured BFS-like orders among the best for HNSW). Ids as callers
 * see them do not change: labels[node] keeps each node's id. The level-0 blocks, code rows and
 * norms are permuted in place along the permutation's cycles (one block of scratch), so the
 * graph's memory is not held twice; the rest takes 21 bytes a node for the call. Fails
 * (ST_ENOMEM) only before anything changed.
 */
int idx_hnsw_reorder(struct idx_hnsw *h)
{
    if (h->map != NULL)
        return ST_EINVAL; /* a loaded file is used in place */
    uint32_t n = h->n;
    if (n < 2)
        return ST_OK;
    uint32_t *order = malloc((size_t)n * sizeof(*order)); /* new -> old */
    uint32_t *pos = malloc((size_t)n * sizeof(*pos));     /* old -> new */
    uint32_t *labels = malloc((size_t)n * sizeof(*labels));
    uint8_t *levels = malloc(n), *tmp = malloc(h->stride); /* >= a code row (dim <= vec) */
    uint32_t **upper = malloc((size_t)n * sizeof(*upper));
    int rc = ST_ENOMEM;
    if (order == NULL || pos == NULL || labels == NULL || levels == NULL || tmp == NULL ||
        upper == NULL)
        goto out; /* nothing changed yet: the graph stays as it was */
    memset(pos, 0xff, (size_t)n * sizeof(*pos));
    uint32_t head = 0, tail = 0;
    order[tail++] = h->entry;
    pos[h->entry] = 0;
    while (head < tail) {
        const uint32_t *links = hnsw_links0(h, order[head++]);
        for (uint32_t j = 0; j < links[0]; j++)
            if (pos[links[1 + j]] == UINT32_MAX) {
                pos[links[1 + j]] = tail;
                order[tail++] = links[1 + j];
            }
    }
    for (uint32_t i = 0; i < n; i++)
        if (pos[i] == UINT32_MAX) {
            pos[i] = tail;
            order[tail++] = i;
        }
    /* Links name new numbers (lists stay with their nodes), then the small arrays move. */
    for (uint32_t i = 0; i < n; i++)
        for (int l = 0; l <= h->levels[i]; l++) {
            uint32_t *lk = hnsw_links(h, i, l);
            for (uint32_t j = 0; j < lk[0]; j++)
                lk[1 + j] = pos[lk[1 + j]];
        }
    for (uint32_t v = 0; v < n; v++) {
        levels[v] = h->levels[order[v]];
        upper[v] = h->upper[order[v]];
        labels[v] = hnsw_label(h, order[v]);
    }
    /* Block v takes old block order[v], and so do the code rows and norms (the codes are
     * derived by id, so moved rows are what a derivation would give). */
    permute_rows(h->level0, h->stride, order, n, pos, tmp);
    if (h->codes != NULL) {
        permute_rows(h->codes, h->cstride, order, n, pos, tmp);
        permute_rows((uint8_t *)h->cnorm, sizeof(float), order, n, pos, tmp);
    }
    h->entry = 0; /* the search starts where the order does */
    free(h->levels);
    free(h->upper);
    free(h->labels);
    h->levels = levels;
    h->upper = upper;
    h->labels = labels;
    levels = NULL, upper = NULL, labels = NULL;
    rc = ST_OK;
out:
    free(order);
    free(pos);
    free(labels);
    free(levels);
    free(upper);
    free(tmp);
    return rc;
}
