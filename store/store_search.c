/* Exact top-k over the data no index covers yet, in memory bounded by k (store_search.h). */
#include "store_search.h"

#include <stdlib.h>
#include <string.h>

/* A scanned record's version and distance; once confirmed, its meta (with_meta). */
struct cand {
    uint64_t hash; /* of the id: compared before the bytes */
    float dist;
    uint32_t id_len;
    int64_t ts, window;
    int32_t partition;
    int64_t offset;
    uint32_t idx;
    uint8_t *meta;
    uint32_t meta_len;
    uint8_t id[STORE_ID_MAX];
};

/* A max-heap of slot numbers into an array of candidates: the root is the worst kept. */
struct heap {
    struct cand *c;
    uint32_t *h;
    size_t n;
};

struct search {
    struct store *s;
    const struct store_search_query *q;
    st_dist_fn fn;
    size_t k;
    struct heap best; /* confirmed hits, at most k */
    size_t capbest;
    float *best_vecs; /* with_vector: slot i's vector at i * dim */
    float *vec;       /* dim floats: store_get's copy */
    uint64_t scanned, lookups, peak, pruned;
    uint32_t segments;
    int64_t *wins;
    size_t nwins, capwins;
};

static uint64_t id_hash(const uint8_t *id, uint32_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ id[i]) * 0x100000001b3ull;
    return h;
}

/* Farther is worse; equal distances are ordered by id so that results are deterministic. */
static int rank_cmp(float da, const uint8_t *ia, uint32_t la, float db, const uint8_t *ib,
                    uint32_t lb)
{
    if (da != db)
        return da < db ? -1 : 1;
    int r = memcmp(ia, ib, la < lb ? la : lb);
    if (r != 0)
        return r;
    return (la > lb) - (la < lb);
}

static int cand_cmp(const struct cand *a, const struct cand *b)
{
    return rank_cmp(a->dist, a->id, a->id_len, b->dist, b->id, b->id_len);
}

static bool heap_above(const struct heap *hp, size_t i, size_t j)
{
    return cand_cmp(&hp->c[hp->h[i]], &hp->c[hp->h[j]]) > 0;
}

static void heap_swap(struct heap *hp, size_t i, size_t j)
{
    uint32_t t = hp->h[i];
    hp->h[i] = hp->h[j];
    hp->h[j] = t;
}

static void heap_up(struct heap *hp, size_t i)
{
    while (i > 0 && heap_above(hp, i, (i - 1) / 2)) {
        heap_swap(hp, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct heap *hp, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < hp->n && heap_above(hp, l, m))
            m = l;
        if (r < hp->n && heap_above(hp, r, m))
            m = r;
        if (m == i)
            return;
        heap_swap(hp, i, m);
        i = m;
    }
}

/* Would (d, id) rank among the kept when the heap holds cap entries? */
static bool heap_admits(const struct heap *hp, size_t cap, float d, const uint8_t *id,
                        uint32_t id_len)
{
    if (hp->n < cap)
        return true;
    const struct cand *w = &hp->c[hp->h[0]];
    return rank_cmp(d, id, id_len, w->dist, w->id, w->id_len) < 0;
}

static void cand_fill(struct cand *c, const struct store_scan_rec *r, float d)
{
    c->hash = id_hash(r->id, r->id_len);
    c->dist = d;
    c->id_len = r->id_len;
    memcpy(c->id, r->id, r->id_len);
    c->ts = r->ts;
    c->window = r->window;
    c->partition = r->partition;
    c->offset = r->offset;
    c->idx = r->idx;
    c->meta = NULL;
    c->meta_len = 0;
}

static void note_peak(struct search *x)
{
    if (x->best.n > x->peak)
        x->peak = x->best.n;
}

static int note_window(struct search *x, int64_t w)
{
    for (size_t i = x->nwins; i-- > 0;)
        if (x->wins[i] == w)
            return ST_OK;
    if (x->nwins == x->capwins) {
        size_t cap = x->capwins ? x->capwins * 2 : 16;
        int64_t *p = realloc(x->wins, cap * sizeof(*p));
        if (p == NULL)
            return ST_ENOMEM;
        x->wins = p;
        x->capwins = cap;
    }
    x->wins[x->nwins++] = w;
    return ST_OK;
}

/* Room for one more confirmed hit (the arrays grow up to k, so a large k costs nothing
 * until that many hits exist). */
static int best_reserve(struct search *x)
{
    if (x->best.n < x->capbest)
        return ST_OK;
    size_t cap = x->capbest ? x->capbest * 2 : 16;
    if (cap > x->k)
        cap = x->k;
    struct cand *c = realloc(x->best.c, cap * sizeof(*c));
    if (c == NULL)
        return ST_ENOMEM;
    x->best.c = c;
    uint32_t *h = realloc(x->best.h, cap * sizeof(*h));
    if (h == NULL)
        return ST_ENOMEM;
    x->best.h = h;
    if (x->q->with_vector) {
        float *v = realloc(x->best_vecs, cap * x->q->dim * sizeof(*v));
        if (v == NULL)
            return ST_ENOMEM;
        x->best_vecs = v;
    }
    x->capbest = cap;
    return ST_OK;
}

static struct store_version cand_version(const struct cand *c)
{
    return (struct store_version){c->ts, c->partition, c->offset, c->idx};
}

static bool same_version(const struct cand *a, const struct cand *b)
{
    struct store_version va = cand_version(a), vb = cand_version(b);
    return store_version_cmp(&va, &vb) == 0;
}

/* Drops kept slot `slot` (a version known to be superseded): the last slot moves into it and
 * the heap is rebuilt (rare: only when an id changes during the scan). */
static void best_remove(struct search *x, size_t slot)
{
    size_t last = x->best.n - 1;
    free(x->best.c[slot].meta);
    if (slot != last) {
        x->best.c[slot] = x->best.c[last];
        if (x->q->with_vector)
            memcpy(x->best_vecs + slot * x->q->dim, x->best_vecs + last * x->q->dim,
                   x->q->dim * sizeof(float));
    }
    x->best.n = last;
    for (size_t i = 0; i < x->best.n; i++)
        x->best.h[i] = (uint32_t)i;
    for (size_t i = x->best.n / 2; i-- > 0;)
        heap_down(&x->best, i);
}

/*
 * Admits c into the confirmed top-k if it ranks there and is live: its id's newest version is
 * c's own (not a delete, not superseded anywhere). No store lock is held here (store_scan).
 *
 * A candidate superseded by a newer upsert is replaced by that version, ranked on its own
 * vector and time: when the newer version was written after the scan captured its sources,
 * nothing else visits it, and the id — live throughout — would be missing from the answer (a
 * later write may be seen; an acknowledged id may not vanish). A newer version the scan also
 * visits is then a duplicate. One outside the query's time range is not admitted, and an
 * older version of the id already kept is dropped with it (known stale); one that is kept is
 * replaced in place by the newer. (A caller merging index hits keeps the newest version of an
 * id: a version its index also holds is not returned twice.)
 */
static int confirm(struct search *x, const struct cand *c0)
{
    if (!heap_admits(&x->best, x->k, c0->dist, c0->id, c0->id_len))
        return ST_OK;
    const struct cand *c = c0;
    size_t dup = SIZE_MAX;
    for (size_t i = 0; i < x->best.n && dup == SIZE_MAX; i++) {
        const struct cand *b = &x->best.c[i];
        if (b->hash == c->hash && b->id_len == c->id_len && memcmp(b->id, c->id, c->id_len) == 0)
            dup = i;
    }
    if (dup != SIZE_MAX && same_version(&x->best.c[dup], c))
        return ST_OK; /* seen twice: it moved from a memtable to a segment during the scan */
    struct store_value v = {.vec = x->vec};
    x->lookups++;
    int rc = store_get(x->s, c->id, c->id_len, &v);
    if (rc == ST_ENOTFOUND) {
        if (dup != SIZE_MAX)
            best_remove(x, dup); /* deleted during the scan: the version kept is stale */
        return ST_OK;
    }
    if (rc != ST_OK)
        return rc;
    struct cand newer;
    struct store_version nv = {v.ts, v.partition, v.offset, v.idx}, cv = cand_version(c);
    int cmp = store_version_cmp(&nv, &cv);
    if (cmp != 0) {
        newer = *c;
        newer.dist = x->fn(x->q->vec, x->vec, x->q->dim);
        newer.ts = v.ts;
        newer.window = v.window;
        newer.partition = v.partition;
        newer.offset = v.offset;
        newer.idx = v.idx;
        bool later = cmp > 0;
        bool kept = dup != SIZE_MAX && same_version(&x->best.c[dup], &newer);
        bool admit =
            later && !kept && v.ts >= x->q->from_ts && v.ts <= x->q->to_ts &&
            (dup != SIZE_MAX || heap_admits(&x->best, x->k, newer.dist, newer.id, newer.id_len));
        if (!admit) {
            if (later && !kept && dup != SIZE_MAX)
                best_remove(x, dup); /* an older version of the id, out of range now */
            free(v.meta);
            return ST_OK;
        }
        c = &newer;
    }
    if (!x->q->with_meta) {
        free(v.meta);
        v.meta = NULL;
        v.meta_len = 0;
    }
    size_t slot;
    if (dup == SIZE_MAX && x->best.n < x->k) {
        if ((rc = best_reserve(x)) != ST_OK) {
            free(v.meta);
            return rc;
        }
        slot = x->best.n;
    } else {
        /* a newer version written during the scan replaces the one kept, or else the worst
         * kept makes room */
        slot = dup != SIZE_MAX ? dup : x->best.h[0];
        free(x->best.c[slot].meta);
    }
    struct cand *b = &x->best.c[slot];
    *b = *c;
    b->meta = v.meta;
    b->meta_len = v.meta_len;
    if (x->q->with_vector)
        memcpy(x->best_vecs + slot * x->q->dim, x->vec, x->q->dim * sizeof(float));
    if (slot == x->best.n) {
        x->best.h[x->best.n] = (uint32_t)slot;
        heap_up(&x->best, x->best.n++);
    } else if (dup == SIZE_MAX) {
        heap_down(&x->best, 0);
    } else {
        for (size_t i = x->best.n / 2; i-- > 0;)
            heap_down(&x->best, i); /* rare: rebuild rather than track heap positions */
    }
    note_peak(x);
    return ST_OK;
}

static bool is_indexed(const struct store_search_query *q, int64_t start, uint32_t version)
{
    for (size_t i = 0; i < q->n_indexed; i++)
        if (q->indexed[i].start == start && q->indexed[i].version == version)
            return true;
    return false;
}

static bool rec_wanted(const struct store_search_query *q, const struct store_scan_rec *r)
{
    return r->op == STORE_OP_UPSERT && !r->superseded && r->ts >= q->from_ts && r->ts <= q->to_ts;
}

/* Confirms every record of src that would rank, as it comes (no store lock is held). */
static int scan_inline(struct search *x, const struct store_scan_src *src)
{
    const struct store_search_query *q = x->q;
    for (uint64_t i = 0; i < src->n; i++) {
        struct store_scan_rec r;
        store_scan_record(src, i, &r);
        if (!rec_wanted(q, &r))
            continue;
        if (src->memtable) {
            int rc = note_window(x, r.window);
            if (rc != ST_OK)
                return rc;
        }
        x->scanned++;
        float d = x->fn(q->vec, store_scan_vec(src, i), src->dim);
        if (!heap_admits(&x->best, x->k, d, r.id, r.id_len))
            continue;
        struct cand c;
        cand_fill(&c, &r, d);
        int rc = confirm(x, &c);
        if (rc != ST_OK)
            return rc;
    }
    return ST_OK;
}

static int scan_segment(struct search *x, const struct store_scan_src *src)
{
    x->segments++;
    int rc = note_window(x, src->window_start);
    if (rc != ST_OK)
        return rc;
    return scan_inline(x, src);
}

static int on_src(void *ctx, const struct store_scan_src *src)
{
    struct search *x = ctx;
    const struct store_search_query *q = x->q;
    if (src->dim != q->dim)
        return ST_EINVAL;
    if (!src->memtable && src->kind == STORE_SEG_SEALED &&
        is_indexed(q, src->window_start, src->version))
        return ST_OK; /* the caller searched its index: neither scanned nor pruned here */
    /* Pruned by time, unread: a segment by its window or the ts it holds, a memtable chunk
     * (records of any window) by the ts written into it. */
    if ((!src->memtable && (src->window_end <= q->from_ts || src->window_start > q->to_ts)) ||
        src->max_ts < q->from_ts || src->min_ts > q->to_ts) {
        x->pruned += src->n;
        return ST_OK;
    }
    return src->memtable ? scan_inline(x, src) : scan_segment(x, src);
}

/* Moves the confirmed hits, closest first, into out (heap sort: pop the worst to the end). */
static int take_hits(struct search *x, struct store_search_result *out)
{
    size_t n = x->best.n;
    out->hits = calloc(n ? n : 1, sizeof(*out->hits));
    if (out->hits == NULL)
        return ST_ENOMEM;
    for (size_t i = n; i-- > 0;) {
        size_t slot = x->best.h[0];
        x->best.h[0] = x->best.h[--x->best.n];
        heap_down(&x->best, 0);
        struct cand *c = &x->best.c[slot];
        struct store_search_hit *h = &out->hits[i];
        memcpy(h->id, c->id, c->id_len);
        h->id_len = c->id_len;
        h->dist = c->dist;
        h->ts = c->ts;
        h->window = c->window;
        h->partition = c->partition;
        h->offset = c->offset;
        h->idx = c->idx;
        h->meta = c->meta;
        h->meta_len = c->meta_len;
        c->meta = NULL;
        out->n++;
        if (x->q->with_vector) {
            h->vec = malloc(x->q->dim * sizeof(float));
            if (h->vec == NULL)
                return ST_ENOMEM;
            memcpy(h->vec, x->best_vecs + slot * x->q->dim, x->q->dim * sizeof(float));
        }
    }
    return ST_OK;
}

int store_search(struct store *s, const struct store_search_query *q,
                 struct store_search_result *out)
{
    *out = (struct store_search_result){0};
    if (q->k == 0)
        return ST_OK;
    struct search x = {.s = s, .q = q, .fn = st_metric_fn(st_kernels(), q->metric), .k = q->k};
    int rc = ST_ENOMEM;
    x.vec = malloc(q->dim * sizeof(float));
    if (x.vec == NULL)
        goto out;
    if ((rc = store_scan(s, on_src, &x)) != ST_OK)
        goto out;
    rc = take_hits(&x, out);
    out->scanned = x.scanned;
    out->segments = x.segments;
    out->pruned = x.pruned;
    out->windows = (uint32_t)x.nwins;
    out->lookups = x.lookups;
    out->peak_candidates = x.peak;
out:
    for (size_t i = 0; i < x.best.n; i++)
        free(x.best.c[x.best.h[i]].meta);
    free(x.best.c);
    free(x.best.h);
    free(x.best_vecs);
    free(x.vec);
    free(x.wins);
    if (rc != ST_OK)
        store_search_result_free(out);
    return rc;
}

void store_search_result_free(struct store_search_result *r)
{
    for (size_t i = 0; r->hits != NULL && i < r->n; i++) {
        free(r->hits[i].meta);
        free(r->hits[i].vec);
    }
    free(r->hits);
    *r = (struct store_search_result){0};
}
