/* idx_part.c — a served window part: segment copy + index (idx_part.h). */
#include "idx_part.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "idx_hnsw.h"
#include "idx_ivfpq.h"
#include "st_log.h"
#include "store_fs.h"

#define POOL_MAX 64

struct idx_part_pool {
    pthread_mutex_t mu;
    void *free[POOL_MAX];
    size_t n;
};

uint64_t idx_part_build_memory(const struct cfg_index *ix, uint32_t dim, uint64_t records)
{
    /* records is at most UINT32_MAX (a part holds no more) and per-record bytes stay below
     * 2^31 (dim <= 65536, m <= 128, pq_m <= 4096): the products cannot overflow. */
    if (records > UINT32_MAX)
        records = UINT32_MAX;
    uint64_t vec = (uint64_t)dim * 4;
    if (ix->type == CFG_INDEX_IVFPQ) /* vectors (training, encoding), codes, ids, tables */
        return records * (vec + ix->pq_m + 8) + (uint64_t)ix->nlist * vec * 2 + (16u << 20);
    /* HNSW: vector + level-0 links (2m) + upper levels (~m/ln m each) + locks and scratch */
    uint64_t m = ix->m ? ix->m : 16;
    return records * (vec + 2 * m * 4 + m * 4 / 2 + 64) + (16u << 20);
}

static void part_free(struct idx_part *p)
{
    if (p == NULL)
        return;
    if (p->pool != NULL) {
        for (size_t i = 0; i < p->pool->n; i++) {
            if (p->hnsw != NULL)
                idx_hnsw_searcher_free(p->pool->free[i]);
            else
                idx_ivfpq_searcher_free(p->pool->free[i]);
        }
        pthread_mutex_destroy(&p->pool->mu);
        free(p->pool);
    }
    idx_hnsw_free(p->hnsw);
    idx_ivfpq_free(p->ivf);
    if (p->seg != NULL)
        store_segment_unref(p->seg);
    bool di = atomic_load(&p->doom_idx), ds = atomic_load(&p->doom_seg);
    if (di && p->idx_path != NULL)
        st_best_effort(store_fs_unlink(NULL, p->idx_path, "idx.part.unlink_index"));
    if (ds && p->seg_path != NULL)
        st_best_effort(store_fs_unlink(NULL, p->seg_path, "idx.part.unlink_segment"));
    if (di || ds)
        st_log_info("indexer", "removed part node=%s start=%lld version=%u files=%s", p->e.node,
                    (long long)p->e.start, p->e.version, ds ? "segment+index" : "index");
    free(p->raw_owned);
    free(p->rec);
    free(p->seg_path);
    free(p->idx_path);
    free(p);
}

void idx_part_ref(struct idx_part *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void idx_part_retire(struct idx_part *p, bool seg, bool idx)
{
    if (seg)
        atomic_store(&p->doom_seg, true);
    if (idx)
        atomic_store(&p->doom_idx, true);
}

void idx_part_unref(struct idx_part *p)
{
    if (p != NULL && atomic_fetch_sub(&p->refs, 1) == 1)
        part_free(p);
}

/* Opens the segment and maps labels to its upsert records (deterministic: record order).
 * want_raw: also the label-ordered exact vectors (a build, IVF-PQ re-ranking) — the segment's
 * own array when its upserts are its records in order, else a gathered heap copy. */
static int part_open(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                     enum st_metric metric, bool want_raw, struct idx_part **out,
                     struct st_err *err)
{
    struct idx_part *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->pool = calloc(1, sizeof(*p->pool))) == NULL ||
        (p->seg_path = strdup(seg_path)) == NULL || (p->idx_path = strdup(idx_path)) == NULL) {
        part_free(p);
        return ST_ENOMEM;
    }
    pthread_mutex_init(&p->pool->mu, NULL);
    atomic_init(&p->refs, 1);
    p->e = *e;
    p->metric = metric;
    int rc = store_segment_open_file(seg_path, &p->seg, err);
    if (rc != ST_OK) {
        part_free(p);
        return rc;
    }
    struct store_segment_info si;
    store_segment_info(p->seg, &si);
    p->dim = si.dim;
    if (e->end != 0 && si.window_start != e->start) {
        part_free(p);
        return st_err_set(err, ST_ECORRUPT, "%s: holds window %lld, the catalog says %lld",
                          seg_path, (long long)si.window_start, (long long)e->start);
    }
    p->min_ts = si.min_ts;
    p->max_ts = si.max_ts;
    if (si.count > UINT32_MAX) {
        part_free(p);
        return st_err_set(err, ST_ERANGE, "%s: %llu records: more than one index holds", seg_path,
                          (unsigned long long)si.count);
    }
    p->rec = malloc((si.count ? si.count : 1) * sizeof(*p->rec));
    if (p->rec == NULL) {
        part_free(p);
        return ST_ENOMEM;
    }
    for (uint64_t i = 0; i < si.count; i++) {
        struct store_seg_record r;
        store_segment_record(p->seg, i, &r);
        if (r.op == STORE_OP_UPSERT)
            p->rec[p->n++] = (uint32_t)i;
    }
    const float *all = store_segment_contiguous(p->seg);
    if (!want_raw) {
        /* an HNSW part keeps its own copy of the vectors */
    } else if (p->n == si.count && all != NULL) {
        p->raw = all;
    } else if (p->n > 0) {
        p->raw_owned = malloc((size_t)p->n * p->dim * sizeof(float));
        if (p->raw_owned == NULL) {
            part_free(p);
            return ST_ENOMEM;
        }
        for (uint32_t l = 0; l < p->n; l++)
            memcpy(p->raw_owned + (size_t)l * p->dim, store_segment_vector(p->seg, p->rec[l]),
                   p->dim * sizeof(float));
        p->raw = p->raw_owned;
    }
    *out = p;
    return ST_OK;
}

int idx_part_build(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                   const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                   const _Atomic bool *stop, struct idx_part **out, struct st_err *err)
{
    *out = NULL;
    struct idx_part *p;
    int rc = part_open(e, seg_path, idx_path, metric, true, &p, err);
    if (rc != ST_OK)
        return rc;
    if (stop != NULL && atomic_load(stop)) {
        part_free(p);
        return ST_ECLOSED;
    }
    if (p->n > 0 && ix->type == CFG_INDEX_IVFPQ) {
        struct idx_ivfpq_opts o = {.dim = p->dim,
                                   .metric = metric,
                                   .nlist = ix->nlist,
                                   .m = ix->pq_m,
                                   .nbits = ix->nbits,
                                   .seed = (uint64_t)e->start ^ e->version,
                                   .threads = threads ? threads : 1};
        rc = idx_ivfpq_build(&o, p->raw, p->n, &p->ivf);
        if (rc == ST_OK && !(stop != NULL && atomic_load(stop)))
            rc = idx_ivfpq_save(p->ivf, idx_path, err);
        if (p->ivf != NULL)
            p->memory = idx_ivfpq_memory(p->ivf);
    } else if (p->n > 0) {
        struct idx_hnsw_opts o = {.dim = p->dim,
                                  .metric = metric,
                                  .m = ix->m,
                                  .ef_construction = ix->ef_construction,
                                  .seed = (uint64_t)e->start ^ e->version,
                                  .threads = threads ? threads : 1};
        rc = idx_hnsw_build(&o, p->raw, p->n, &p->hnsw);
        if (rc == ST_OK && !(stop != NULL && atomic_load(stop)))
            rc = idx_hnsw_save(p->hnsw, idx_path, err);
        if (p->hnsw != NULL)
            p->memory = idx_hnsw_memory(p->hnsw);
        /* The graph holds its own copy: a gathered one is not needed past the build. */
        free(p->raw_owned);
        p->raw_owned = NULL;
        p->raw = NULL;
    }
    if (rc == ST_OK && stop != NULL && atomic_load(stop))
        rc = ST_ECLOSED;
    if (rc != ST_OK) {
        if (err->code == ST_OK)
            st_err_set(err, rc, "%s: index build: %s", idx_path, st_strerror(rc));
        st_best_effort(store_fs_unlink(NULL, idx_path, "idx.part.unlink_abandoned"));
        part_free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

int idx_part_load(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                  enum st_metric metric, struct idx_part **out, struct st_err *err)
{
    *out = NULL;
    struct idx_part *p;
    bool ivf = strcmp(e->index, "ivfpq") == 0;
    int rc = part_open(e, seg_path, idx_path, metric, ivf, &p, err);
    if (rc != ST_OK)
        return rc;
    if (p->n > 0 && ivf) {
        rc = idx_ivfpq_load(idx_path, &p->ivf, err);
        if (rc == ST_OK)
            p->memory = idx_ivfpq_memory(p->ivf);
    } else if (p->n > 0) {
        rc = idx_hnsw_load(idx_path, &p->hnsw, err);
        if (rc == ST_OK && idx_hnsw_count(p->hnsw) != p->n)
            rc = st_err_set(err, ST_ECORRUPT, "%s: %u vectors; its segment has %u upserts",
                            idx_path, idx_hnsw_count(p->hnsw), p->n);
        if (rc == ST_OK)
            p->memory = idx_hnsw_memory(p->hnsw);
    }
    if (rc != ST_OK) {
        part_free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

static void *pool_get(struct idx_part *p)
{
    void *s = NULL;
    pthread_mutex_lock(&p->pool->mu);
    if (p->pool->n > 0)
        s = p->pool->free[--p->pool->n];
    pthread_mutex_unlock(&p->pool->mu);
    if (s == NULL)
        s = p->hnsw != NULL ? (void *)idx_hnsw_searcher_new(p->hnsw)
                            : (void *)idx_ivfpq_searcher_new(p->ivf);
    return s;
}

static void pool_put(struct idx_part *p, void *s)
{
    pthread_mutex_lock(&p->pool->mu);
    if (p->pool->n < POOL_MAX) {
        p->pool->free[p->pool->n++] = s;
        s = NULL;
    }
    pthread_mutex_unlock(&p->pool->mu);
    if (s != NULL && p->hnsw != NULL)
        idx_hnsw_searcher_free(s);
    else if (s != NULL)
        idx_ivfpq_searcher_free(s);
}

size_t idx_part_search(struct idx_part *p, const float *q, uint32_t k, uint32_t ef, uint32_t nprobe,
                       float bound, idx_part_filter filter, void *fctx, struct idx_part_hit *out)
{
    if (p->n == 0 || k == 0)
        return 0;
    struct st_hit stack[64];
    struct st_hit *hits = k <= 64 ? stack : malloc(k * sizeof(*hits));
    void *s = hits != NULL ? pool_get(p) : NULL;
    if (s == NULL) {
        if (hits != stack)
            free(hits);
        return 0;
    }
    size_t n;
    if (p->hnsw != NULL) {
        n = idx_hnsw_search_bound(s, q, k, ef ? ef : (k > 64 ? k : 64), bound, filter, fctx, hits);
    } else {
        uint32_t rerank = k * 4 > 64 ? k * 4 : 64;
        n = idx_ivfpq_search_bound(s, q, k, nprobe ? nprobe : 16, rerank, p->raw, bound, filter,
                                   fctx, hits);
    }
    pool_put(p, s);
    for (size_t i = 0; i < n; i++)
        out[i] = (struct idx_part_hit){p->rec[hits[i].id], hits[i].dist};
    if (hits != stack)
        free(hits);
    return n;
}

float idx_part_probe(const struct idx_part *p, const float *q)
{
    return p->hnsw != NULL ? idx_hnsw_entry_distance(p->hnsw, q) : -INFINITY;
}
