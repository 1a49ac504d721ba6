/* Exact top-k over the data no index covers yet. */
#include "store_search.h"

#include <stdlib.h>
#include <string.h>

struct cand {
    uint8_t id[STORE_ID_MAX];
    uint32_t id_len;
    int64_t ts, window;
    int32_t partition;
    int64_t offset;
    uint32_t idx;
};

struct scan_ctx {
    const struct store_search_query *q;
    st_dist_fn fn;
    struct st_hit *heap; /* id = slot in cands */
    struct cand *cands;
    size_t n, cap;
    uint64_t scanned;
    uint32_t segments;
    int64_t *wins;
    size_t nwins, capwins;
    int rc;
};

static bool is_indexed(const struct store_search_query *q, int64_t start, uint32_t version)
{
    for (size_t i = 0; i < q->n_indexed; i++)
        if (q->indexed[i].start == start && q->indexed[i].version == version)
            return true;
    return false;
}

static void note_window(struct scan_ctx *c, int64_t w)
{
    for (size_t i = c->nwins; i-- > 0;)
        if (c->wins[i] == w)
            return;
    if (c->nwins == c->capwins) {
        size_t cap = c->capwins ? c->capwins * 2 : 16;
        int64_t *p = realloc(c->wins, cap * sizeof(*p));
        if (p == NULL) {
            c->rc = ST_ENOMEM;
            return;
        }
        c->wins = p;
        c->capwins = cap;
    }
    c->wins[c->nwins++] = w;
}

static void offer(struct scan_ctx *c, const struct store_scan_rec *r, float d)
{
    size_t slot;
    if (c->n < c->cap)
        slot = c->n;
    else if (d < c->heap[0].dist)
        slot = c->heap[0].id; /* the worst kept makes room */
    else
        return;
    struct cand *cd = &c->cands[slot];
    memcpy(cd->id, r->id, r->id_len);
    cd->id_len = r->id_len;
    cd->ts = r->ts;
    cd->window = r->window;
    cd->partition = r->partition;
    cd->offset = r->offset;
    cd->idx = r->idx;
    st_topk_push(c->heap, &c->n, c->cap, (struct st_hit){(uint32_t)slot, d});
}

static int on_src(void *ctx, const struct store_scan_src *src)
{
    struct scan_ctx *c = ctx;
    const struct store_search_query *q = c->q;
    if (src->dim != q->dim)
        return ST_EINVAL;
    if (!src->memtable) {
        if (src->window_end <= q->from_ts || src->window_start > q->to_ts ||
            src->max_ts < q->from_ts || src->min_ts > q->to_ts)
            return ST_OK; /* pruned by time */
        if (src->kind == STORE_SEG_SEALED && is_indexed(q, src->window_start, src->version))
            return ST_OK; /* the caller searched its index */
        c->segments++;
        note_window(c, src->window_start);
    }
    for (uint64_t i = 0; i < src->n; i++) {
        struct store_scan_rec r;
        store_scan_record(src, i, &r);
        if (r.op != STORE_OP_UPSERT || r.superseded || r.ts < q->from_ts || r.ts > q->to_ts)
            continue;
        if (src->memtable)
            note_window(c, r.window);
        c->scanned++;
        offer(c, &r, c->fn(q->vec, src->vecs + i * src->dim, src->dim));
    }
    return c->rc;
}

static int cand_cmp(const void *a, const void *b)
{
    const struct st_hit *x = a, *y = b;
    return x->dist < y->dist ? -1 : x->dist > y->dist ? 1 : 0;
}

static bool same_id(const struct store_search_hit *h, const struct cand *c)
{
    return h->id_len == c->id_len && memcmp(h->id, c->id, c->id_len) == 0;
}

/* One pass with room for cap candidates. *more: candidates were dropped as superseded and
 * the heap was full, so a bigger pass could find more hits. */
static int pass(struct store *s, const struct store_search_query *q, size_t cap,
                struct store_search_result *out, bool *more)
{
    struct scan_ctx c = {.q = q, .fn = st_metric_fn(st_kernels(), q->metric), .cap = cap};
    c.heap = malloc(cap * sizeof(*c.heap));
    c.cands = malloc(cap * sizeof(*c.cands));
    out->hits = calloc(q->k ? q->k : 1, sizeof(*out->hits));
    int rc = ST_ENOMEM;
    float *vec = malloc(q->dim * sizeof(float));
    if (c.heap == NULL || c.cands == NULL || out->hits == NULL || vec == NULL)
        goto done;
    if ((rc = store_scan(s, on_src, &c)) != ST_OK)
        goto done;
    qsort(c.heap, c.n, sizeof(*c.heap), cand_cmp);
    size_t dropped = 0;
    for (size_t i = 0; i < c.n && out->n < q->k; i++) {
        const struct cand *cd = &c.cands[c.heap[i].id];
        bool dup = false;
        for (size_t j = 0; j < out->n && !dup; j++)
            dup = same_id(&out->hits[j], cd);
        if (dup)
            continue; /* seen twice while moving from a memtable to a segment */
        struct store_value v = {.vec = vec};
        rc = store_get(s, cd->id, cd->id_len, &v);
        if (rc == ST_ENOTFOUND) { /* deleted since */
            dropped++;
            rc = ST_OK;
            continue;
        }
        if (rc != ST_OK)
            goto done;
        if (v.ts != cd->ts || v.partition != cd->partition || v.offset != cd->offset ||
            v.idx != cd->idx) {
            free(v.meta); /* superseded by a newer version elsewhere */
            dropped++;
            continue;
        }
        struct store_search_hit *h = &out->hits[out->n++];
        memcpy(h->id, cd->id, cd->id_len);
        h->id_len = cd->id_len;
        h->dist = c.heap[i].dist;
        h->ts = cd->ts;
        h->window = cd->window;
        if (q->with_meta) {
            h->meta = v.meta;
            h->meta_len = v.meta_len;
        } else {
            free(v.meta);
        }
        if (q->with_vector) {
            h->vec = malloc(q->dim * sizeof(float));
            if (h->vec == NULL) {
                rc = ST_ENOMEM;
                goto done;
            }
            memcpy(h->vec, vec, q->dim * sizeof(float));
        }
    }
    *more = out->n < q->k && c.n == cap && dropped > 0;
    out->scanned = c.scanned;
    out->segments = c.segments;
    out->windows = (uint32_t)c.nwins;
done:
    free(vec);
    free(c.heap);
    free(c.cands);
    free(c.wins);
    return rc;
}

int store_search(struct store *s, const struct store_search_query *q,
                 struct store_search_result *out)
{
    *out = (struct store_search_result){0};
    if (q->k == 0)
        return ST_OK;
    size_t cap = (size_t)q->k * 2 + 16;
    for (;;) {
        bool more = false;
        int rc = pass(s, q, cap, out, &more);
        if (rc != ST_OK || !more || cap >= ((size_t)1 << 24)) {
            if (rc != ST_OK)
                store_search_result_free(out);
            return rc;
        }
        /* Many of the closest were superseded: look again with more room. */
        store_search_result_free(out);
        cap *= 4;
    }
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
