/* idx_part.c — a served window part: segment copy + index (idx_part.h). */
#include "idx_part.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "idx_cpucap.h"
#include "idx_hnsw.h"
#include "idx_ivfpq.h"
#include "idx_refine.h"
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
    if (ix->type == CFG_INDEX_IVFPQ) /* vectors (training, encoding), codes, ids, tables, and the
                                        re-ranking codes: a byte a dimension, 8 a vector */
        return records * (vec + (ix->no_rerank_codes ? 0 : dim + 8) + ix->pq_m + 8) +
               (uint64_t)ix->nlist * vec * 2 + (16u << 20);
    /* HNSW: vector + level-0 links (2m) + upper levels (~m/ln m each) + locks and scratch,
     * + the traversal codes (dim bytes rounded up to 64), + the reachability repair after the
     * inserts (idx_hnsw.c connect_all: three marks, a stack and an in-degree a node, and the
     * reversed level-0 lists: offsets and fill cursors, 16 bytes a node, and 4 a link), + the
     * ids kept once the nodes are renumbered (idx_hnsw_reorder; its own 21 bytes a node of
     * scratch come after the repair's are freed, and are fewer) */
    uint64_t m = ix->m ? ix->m : 16;
    uint64_t codes = (((uint64_t)dim + 63) & ~(uint64_t)63) + 4; /* and the norm */
    uint64_t repair = 3 + 4 + 4 + 16 + 2 * m * 4;
    return records * (vec + codes + 4 + 2 * m * 4 + m * 4 / 2 + 64 + repair) + (16u << 20);
}

uint64_t idx_part_coll_build_memory(const struct cfg_collection *cc, uint64_t records)
{
    uint64_t hot = idx_part_build_memory(&cc->index, cc->dim, records);
    if (cc->cold_after_ms <= 0 || cc->cold_index.type == CFG_INDEX_NONE)
        return hot;
    uint64_t cold = idx_part_build_memory(&cc->cold_index, cc->dim, records);
    return cold > hot ? cold : hot;
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
    idx_refine_free(p->refine);
    bool di = atomic_load(&p->doom_idx);
    if (di && p->idx_path != NULL)
        st_best_effort(store_fs_unlink(NULL, p->idx_path, "idx.part.unlink_index"));
    size_t segs = 0;
    for (size_t i = 0; p->mem != NULL && i < p->nmem; i++) {
        struct idx_part_member *m = &p->mem[i];
        if (m->seg != NULL)
            store_segment_unref(m->seg);
        if (atomic_load(&m->doom_seg) && m->seg_path != NULL) {
            st_best_effort(store_fs_unlink(NULL, m->seg_path, "idx.part.unlink_segment"));
            segs++;
        }
        free(m->seg_path);
    }
    if (di || segs > 0) {
        if (p->unit == 0)
            st_log_info("indexer", "removed part node=%s start=%lld version=%u files=%s", p->e.node,
                        (long long)p->e.start, p->e.version, segs > 0 ? "segment+index" : "index");
        else
            st_log_info("indexer", "removed unit=%llu generation=%u files=%s segments=%zu",
                        (unsigned long long)p->unit, p->e.version, di ? "index" : "none", segs);
    }
    free(p->mem);
    free(p->raw_owned);
    free(p->rec);
    free(p->idx_path);
    free(p);
}

void idx_part_ref(struct idx_part *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void idx_part_retire(struct idx_part *p, bool seg, bool idx)
{
    for (size_t i = 0; seg && i < p->nmem; i++)
        atomic_store(&p->mem[i].doom_seg, true);
    if (idx)
        atomic_store(&p->doom_idx, true);
}

void idx_part_retire_member(struct idx_part *p, size_t member)
{
    if (member < p->nmem)
        atomic_store(&p->mem[member].doom_seg, true);
}

void idx_part_unref(struct idx_part *p)
{
    if (p != NULL && atomic_fetch_sub(&p->refs, 1) == 1)
        part_free(p);
}

const struct idx_part_member *idx_part_member_of(const struct idx_part *p, uint32_t rec)
{
    size_t lo = 0, hi = p->nmem; /* the last member whose first <= rec */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->mem[mid].first <= rec)
            lo = mid;
        else
            hi = mid;
    }
    return &p->mem[lo];
}

long idx_part_find_member(const struct idx_part *p, const char *node, int64_t start)
{
    for (size_t i = 0; i < p->nmem; i++)
        if (p->mem[i].e.start == start && strcmp(p->mem[i].e.node, node) == 0)
            return (long)i;
    return -1;
}

void idx_part_record(const struct idx_part *p, uint32_t rec, struct store_seg_record *out)
{
    const struct idx_part_member *m = idx_part_member_of(p, rec);
    store_segment_record(m->seg, rec - m->first, out);
}

const float *idx_part_vector(const struct idx_part *p, uint32_t rec)
{
    const struct idx_part_member *m = idx_part_member_of(p, rec);
    return store_segment_vector(m->seg, rec - m->first);
}

int idx_part_meta(const struct idx_part *p, uint32_t rec, uint8_t **meta, uint32_t *len)
{
    const struct idx_part_member *m = idx_part_member_of(p, rec);
    return store_segment_meta(m->seg, rec - m->first, meta, len);
}

/* Opens the members' segments and maps labels to their upsert records (deterministic: member
 * order, then record order). want_raw: also the label-ordered exact vectors (a build, IVF-PQ
 * re-ranking) — a one-member part's own array when its upserts are its records in order, else a
 * gathered heap copy. */
static int part_open(const struct idx_cat_entry *e, uint64_t unit, const struct idx_cat_entry *mem,
                     const char *const *seg_paths, size_t nmem, const char *idx_path,
                     enum st_metric metric, bool want_raw, struct idx_part **out,
                     struct st_err *err)
{
    if (nmem == 0)
        return st_err_set(err, ST_EINVAL, "%s: a part needs a member", idx_path);
    struct idx_part *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->pool = calloc(1, sizeof(*p->pool))) == NULL ||
        (p->mem = calloc(nmem, sizeof(*p->mem))) == NULL ||
        (p->idx_path = strdup(idx_path)) == NULL) {
        part_free(p);
        return ST_ENOMEM;
    }
    pthread_mutex_init(&p->pool->mu, NULL);
    atomic_init(&p->refs, 1);
    p->e = *e;
    p->unit = unit;
    p->metric = metric;
    p->min_ts = INT64_MAX;
    p->max_ts = INT64_MIN;
    p->nmem = nmem;
    uint64_t total = 0;
    int rc = ST_OK;
    for (size_t i = 0; i < nmem && rc == ST_OK; i++) {
        struct idx_part_member *m = &p->mem[i];
        m->e = mem[i];
        atomic_init(&m->doom_seg, false);
        if ((m->seg_path = strdup(seg_paths[i])) == NULL) {
            rc = ST_ENOMEM;
            break;
        }
        if ((rc = store_segment_open_file(m->seg_path, &m->seg, err)) != ST_OK)
            break;
        struct store_segment_info si;
        store_segment_info(m->seg, &si);
        if (mem[i].end != 0 && si.window_start != mem[i].start)
            rc = st_err_set(err, ST_ECORRUPT, "%s: holds window %lld, the catalog says %lld",
                            m->seg_path, (long long)si.window_start, (long long)mem[i].start);
        else if (mem[i].checksum != 0 && si.checksum != mem[i].checksum)
            rc = st_err_set(err, ST_ECORRUPT,
                            "%s: footer checksum %08x, the catalog's (the sealed event's) %08x: "
                            "not the segment it names",
                            m->seg_path, si.checksum, mem[i].checksum);
        else if (i > 0 && si.dim != p->dim)
            rc = st_err_set(err, ST_ECORRUPT, "%s: %u dims, the unit's other members %u",
                            m->seg_path, si.dim, p->dim);
        else if (total + si.count > UINT32_MAX)
            rc = st_err_set(err, ST_ERANGE, "%s: %llu records: more than one index holds",
                            m->seg_path, (unsigned long long)(total + si.count));
        if (rc != ST_OK)
            break;
        p->dim = si.dim;
        m->first = (uint32_t)total;
        m->count = (uint32_t)si.count;
        total += si.count;
        if (si.count > 0) {
            p->min_ts = si.min_ts < p->min_ts ? si.min_ts : p->min_ts;
            p->max_ts = si.max_ts > p->max_ts ? si.max_ts : p->max_ts;
        }
    }
    if (rc == ST_OK && (p->rec = malloc((total ? total : 1) * sizeof(*p->rec))) == NULL)
        rc = ST_ENOMEM;
    if (rc != ST_OK) {
        part_free(p);
        return rc;
    }
    if (total == 0) { /* empty: the ranges mean nothing, keep them empty */
        p->min_ts = INT64_MAX;
        p->max_ts = INT64_MIN;
    }
    p->nrec = (uint32_t)total;
    for (size_t i = 0; i < nmem; i++)
        for (uint32_t r = 0; r < p->mem[i].count; r++) {
            struct store_seg_record x;
            store_segment_record(p->mem[i].seg, r, &x);
            if (x.op == STORE_OP_UPSERT)
                p->rec[p->n++] = p->mem[i].first + r;
        }
    const float *all = nmem == 1 ? store_segment_contiguous(p->mem[0].seg) : NULL;
    if (!want_raw) {
        /* an HNSW part keeps its own copy of the vectors */
    } else if (p->n == p->nrec && all != NULL) {
        p->raw = all;
    } else if (p->n > 0) {
        p->raw_owned = malloc((size_t)p->n * p->dim * sizeof(float));
        if (p->raw_owned == NULL) {
            part_free(p);
            return ST_ENOMEM;
        }
        for (uint32_t l = 0; l < p->n; l++)
            memcpy(p->raw_owned + (size_t)l * p->dim, idx_part_vector(p, p->rec[l]),
                   p->dim * sizeof(float));
        p->raw = p->raw_owned;
    }
    *out = p;
    return ST_OK;
}

/* Vectors sampled from each side to tell whether a quantizer fits a new window. */
#define FIT_SAMPLE 1024u

/* The IVF-PQ build options of ix for p's vectors. */
static struct idx_ivfpq_opts ivf_opts(const struct cfg_index *ix, uint32_t dim,
                                      enum st_metric metric, uint64_t seed, uint32_t threads)
{
    return (struct idx_ivfpq_opts){.dim = dim,
                                   .metric = metric,
                                   .nlist = ix->nlist,
                                   .m = ix->pq_m,
                                   .nbits = ix->nbits,
                                   .seed = seed,
                                   .threads = threads ? threads : 1};
}

bool idx_part_can_donate(const struct idx_part *p, const struct cfg_index *ix)
{
    if (p->ivf == NULL || p->raw == NULL || p->n == 0 || ix->type != CFG_INDEX_IVFPQ)
        return false;
    struct idx_ivfpq_opts o = ivf_opts(ix, p->dim, p->metric, 0, 1);
    return idx_ivfpq_built_as(p->ivf, &o);
}

/* How far vectors like those a quantizer was trained on lie from its coarse centroids: the
 * reference the build that trained it recorded in the index (a leave-one-out estimate,
 * saved in the file, handed on to the indexes that adopt or extend it). An index from before
 * that reference existed (0: unknown) measures its own vectors as they are. */
static double fit_ref(const struct idx_part *p)
{
    double r = idx_ivfpq_fit_ref(p->ivf);
    return r > 0 ? r : idx_ivfpq_coarse_error(p->ivf, p->raw, p->n, FIT_SAMPLE, false);
}

/* Does donor's IVF-PQ quantizer fit p's vectors: the shape a build with o gives, at least as
 * many vectors as its lists (a smaller window builds fewer lists: adopting would carry a
 * quantizer far larger than its data), and p's vectors (a sample) no farther from its coarse
 * centroids than IDX_PART_FIT_RATIO times the vectors it was trained on (95th percentiles:
 * content that drifted, even a part of the window's, trains its own)? */
static bool quantizer_fits(const struct idx_part *donor, const struct idx_part *p,
                           const struct idx_ivfpq_opts *o, double *ref)
{
    if (donor == NULL || donor->ivf == NULL || donor->raw == NULL || donor->n == 0 ||
        !idx_ivfpq_built_as(donor->ivf, o) || p->n < (o->nlist ? o->nlist : 1024))
        return false;
    *ref = fit_ref(donor);
    double mine = idx_ivfpq_coarse_error(donor->ivf, p->raw, p->n, FIT_SAMPLE, false);
    return *ref > 0 && mine >= 0 && mine <= IDX_PART_FIT_RATIO * *ref;
}

/* IVF-PQ: the re-ranking codes of p's raw vectors, and p->memory with them. Optional: without
 * them (no memory, values not finite) every candidate is re-ranked from the raw vectors, the
 * same hits a little slower. */
static void part_refine(struct idx_part *p)
{
    if (p->ivf == NULL || p->raw == NULL || p->n == 0 || p->refine != NULL)
        return;
    int rc = idx_refine_build(p->raw, p->n, p->dim, p->metric, &p->refine);
    if (rc != ST_OK)
        st_log_warn("indexer",
                    "index %s: no re-ranking codes (%s): searches re-rank from the "
                    "vectors only",
                    p->idx_path, st_strerror(rc));
    p->memory += idx_refine_memory(p->refine);
}

/* Builds p's index (p opened with its raw vectors) and saves it to p->idx_path. With base (its
 * labels the first base->n of p's, its index of ix's type): base's index grown by the rest.
 * Without, an IVF-PQ index adopts donor's quantizer when it fits (quantizer_fits). */
static int part_index(struct idx_part *p, const struct idx_part *base, const struct idx_part *donor,
                      const struct cfg_index *ix, uint64_t seed, uint32_t threads,
                      const _Atomic bool *stop, struct st_err *err)
{
    int rc = ST_OK;
    idx_cpucap_begin(); /* indexer.build_cpu charges the build from here */
    const float *more = base != NULL && p->raw != NULL ? p->raw + (size_t)base->n * p->dim : NULL;
    uint32_t nmore = base != NULL ? p->n - base->n : 0;
    if (base != NULL && base->ivf != NULL) {
        rc = idx_ivfpq_extend(base->ivf, more, nmore, threads ? threads : 1, &p->ivf);
    } else if (base != NULL && base->hnsw != NULL) {
        rc = idx_hnsw_extend(base->hnsw, more, nmore, threads ? threads : 1, seed, &p->hnsw);
    } else if (p->n > 0 && ix->type == CFG_INDEX_IVFPQ) {
        struct idx_ivfpq_opts o = ivf_opts(ix, p->dim, p->metric, seed, threads);
        double ref = 0;
        if (quantizer_fits(donor, p, &o, &ref)) {
            if ((rc = idx_ivfpq_adopt(donor->ivf, p->raw, p->n, o.threads, &p->ivf)) == ST_OK)
                idx_ivfpq_set_fit_ref(p->ivf, ref); /* the donor's, measured if it had none */
            p->adopted = rc == ST_OK;
        } else if ((rc = idx_ivfpq_build(&o, p->raw, p->n, &p->ivf)) == ST_OK) {
            idx_ivfpq_set_fit_ref(p->ivf,
                                  idx_ivfpq_coarse_error(p->ivf, p->raw, p->n, FIT_SAMPLE, true));
        }
    } else if (p->n > 0) {
        struct idx_hnsw_opts o = {.dim = p->dim,
                                  .metric = p->metric,
                                  .m = ix->m,
                                  .ef_construction = ix->ef_construction,
                                  .seed = seed,
                                  .threads = threads ? threads : 1};
        rc = idx_hnsw_build(&o, p->raw, p->n, &p->hnsw);
    }
    /* Neighbours near each other in memory (ids unchanged): ~10 % more searches a second. An
     * optimisation only: without the memory for it the graph is served in insertion order. */
    idx_cpucap_tick(); /* the graph's last passes (codes, links) */
    bool stopped = stop != NULL && atomic_load(stop);
    if (rc == ST_OK && p->hnsw != NULL && !stopped) {
        int rr = idx_hnsw_reorder(p->hnsw);
        idx_cpucap_tick();
        if (rr != ST_OK)
            st_log_warn("indexer", "index %s: nodes not renumbered for locality: %s", p->idx_path,
                        st_strerror(rr));
    }
    if (p->ivf != NULL) {
        if (rc == ST_OK && !stopped)
            rc = idx_ivfpq_save(p->ivf, p->idx_path, err);
        p->memory = idx_ivfpq_memory(p->ivf);
        if (rc == ST_OK && !stopped && !ix->no_rerank_codes)
            part_refine(p);
    } else if (p->hnsw != NULL) {
        if (rc == ST_OK && idx_hnsw_unreached(p->hnsw) > 0)
            st_log_warn("indexer",
                        "index %s: %u of %u nodes not mutually reachable with the entry (full "
                        "neighbour lists); searches may miss their records",
                        p->idx_path, idx_hnsw_unreached(p->hnsw), idx_hnsw_count(p->hnsw));
        if (rc == ST_OK && !stopped)
            rc = idx_hnsw_save(p->hnsw, p->idx_path, err);
        p->memory = idx_hnsw_memory(p->hnsw);
        /* The graph holds its own copy: a gathered one is not needed past the build. */
        free(p->raw_owned);
        p->raw_owned = NULL;
        p->raw = NULL;
    }
    idx_cpucap_tick(); /* the save */
    if (rc == ST_OK && stop != NULL && atomic_load(stop))
        rc = ST_ECLOSED;
    if (rc != ST_OK) {
        if (err->code == ST_OK)
            st_err_set(err, rc, "%s: index build: %s", p->idx_path, st_strerror(rc));
        st_best_effort(store_fs_unlink(NULL, p->idx_path, "idx.part.unlink_abandoned"));
    }
    return rc;
}

/* An index file that checks out on its own may still not be p's: its vector count, dimension
 * and metric must be p's, or a search would read query and raw vectors past their ends (ids up
 * to its count index p's rows) and measure with the wrong metric. */
static int part_index_fits(struct idx_part *p, uint32_t n, uint32_t dim, enum st_metric metric,
                           struct st_err *err)
{
    if (n != p->n)
        return st_err_set(err, ST_ECORRUPT, "%s: %u vectors; its segments have %u upserts",
                          p->idx_path, n, p->n);
    if (dim != p->dim)
        return st_err_set(err, ST_ECORRUPT, "%s: dimension %u; its segments have %u", p->idx_path,
                          dim, p->dim);
    if (metric != p->metric)
        return st_err_set(err, ST_ECORRUPT, "%s: metric %d; the collection's is %d", p->idx_path,
                          (int)metric, (int)p->metric);
    return ST_OK;
}

/* Loads p's index file (p opened, with raw vectors for IVF-PQ) and checks it covers p. */
static int part_load_index(struct idx_part *p, bool codes, struct st_err *err)
{
    int rc = ST_OK;
    if (p->n > 0 && strcmp(p->e.index, "ivfpq") == 0) {
        rc = idx_ivfpq_load(p->idx_path, &p->ivf, err);
        if (rc == ST_OK)
            rc = part_index_fits(p, idx_ivfpq_count(p->ivf), idx_ivfpq_dim(p->ivf),
                                 idx_ivfpq_metric(p->ivf), err);
        if (rc == ST_OK) {
            p->memory = idx_ivfpq_memory(p->ivf);
            if (codes)
                part_refine(p);
        }
    } else if (p->n > 0) {
        rc = idx_hnsw_load(p->idx_path, &p->hnsw, err);
        if (rc == ST_OK)
            rc = part_index_fits(p, idx_hnsw_count(p->hnsw), idx_hnsw_dim(p->hnsw),
                                 idx_hnsw_metric(p->hnsw), err);
        if (rc == ST_OK)
            p->memory = idx_hnsw_memory(p->hnsw);
    }
    return rc;
}

int idx_part_build(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                   const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                   const _Atomic bool *stop, struct idx_part **out, struct st_err *err)
{
    return idx_part_build_on(e, seg_path, idx_path, ix, metric, threads, NULL, stop, out, err);
}

int idx_part_build_on(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                      const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                      const struct idx_part *donor, const _Atomic bool *stop, struct idx_part **out,
                      struct st_err *err)
{
    *out = NULL;
    struct idx_part *p;
    int rc = part_open(e, 0, e, &seg_path, 1, idx_path, metric, true, &p, err);
    if (rc != ST_OK)
        return rc;
    if (stop != NULL && atomic_load(stop))
        rc = ST_ECLOSED;
    else
        rc = part_index(p, NULL, donor, ix, (uint64_t)e->start ^ e->version, threads, stop, err);
    if (rc != ST_OK) {
        part_free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

int idx_part_load(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                  enum st_metric metric, bool rerank_codes, struct idx_part **out,
                  struct st_err *err)
{
    *out = NULL;
    struct idx_part *p;
    bool ivf = strcmp(e->index, "ivfpq") == 0;
    int rc = part_open(e, 0, e, &seg_path, 1, idx_path, metric, ivf, &p, err);
    if (rc == ST_OK && (rc = part_load_index(p, rerank_codes, err)) != ST_OK)
        part_free(p);
    if (rc == ST_OK)
        *out = p;
    return rc;
}

int idx_part_build_unit(const struct idx_part_unit *u, const char *idx_path,
                        const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                        const _Atomic bool *stop, struct idx_part **out, struct st_err *err)
{
    *out = NULL;
    if (u->id == 0)
        return st_err_set(err, ST_EINVAL, "%s: a unit's id is not 0", idx_path);
    const struct idx_part *b = u->base;
    if (b != NULL && b->n > 0) { /* its members must be the first ones, its index of ix's type */
        bool ok = b->unit == u->id && b->nmem <= u->n &&
                  (ix->type == CFG_INDEX_IVFPQ ? b->ivf != NULL : b->hnsw != NULL);
        for (size_t i = 0; ok && i < b->nmem; i++)
            ok = b->mem[i].e.start == u->mem[i].start && b->mem[i].e.version == u->mem[i].version &&
                 strcmp(b->mem[i].e.node, u->mem[i].node) == 0;
        if (!ok)
            return st_err_set(err, ST_EINVAL,
                              "%s: the unit to grow is not this one's first members", idx_path);
    } else {
        b = NULL; /* nothing indexed to grow: a build */
    }
    struct idx_part *p;
    int rc = part_open(&u->e, u->id, u->mem, u->seg_paths, u->n, idx_path, metric, true, &p, err);
    if (rc != ST_OK)
        return rc;
    if (b != NULL && p->n < b->n) /* the same members cannot hold fewer upserts */
        rc = st_err_set(err, ST_ECORRUPT, "%s: %u upserts, fewer than the unit it grows (%u)",
                        idx_path, p->n, b->n);
    else if (stop != NULL && atomic_load(stop))
        rc = ST_ECLOSED;
    else
        rc = part_index(p, b, b == NULL ? u->donor : NULL, ix,
                        u->id * 0x9E3779B97F4A7C15ull ^ u->e.version, threads, stop, err);
    if (rc != ST_OK) {
        part_free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

int idx_part_load_unit(const struct idx_part_unit *u, const char *idx_path, enum st_metric metric,
                       bool rerank_codes, struct idx_part **out, struct st_err *err)
{
    *out = NULL;
    if (u->id == 0)
        return st_err_set(err, ST_EINVAL, "%s: a unit's id is not 0", idx_path);
    struct idx_part *p;
    bool ivf = strcmp(u->e.index, "ivfpq") == 0;
    int rc = part_open(&u->e, u->id, u->mem, u->seg_paths, u->n, idx_path, metric, ivf, &p, err);
    if (rc == ST_OK && (rc = part_load_index(p, rerank_codes, err)) != ST_OK)
        part_free(p);
    if (rc == ST_OK)
        *out = p;
    return rc;
}

/* The IVF-PQ candidates a search for k re-ranks exactly. */
static uint32_t part_rerank(uint32_t k)
{
    return k * 4 > 64 ? k * 4 : 64;
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

uint32_t idx_part_ef(uint32_t k, uint32_t ef)
{
    return ef ? ef : (k > 64 ? k : 64);
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
        n = idx_hnsw_search_bound(s, q, k, idx_part_ef(k, ef), bound, filter, fctx, hits);
    } else {
        if (idx_ivfpq_searcher_refine(s, p->refine) != ST_OK) /* built from p's own vectors */
            st_log_warn("indexer", "index %s: re-ranking codes not of its vectors", p->idx_path);
        n = idx_ivfpq_search_bound(s, q, k, nprobe ? nprobe : 16, part_rerank(k), p->raw, bound,
                                   filter, fctx, hits);
    }
    pool_put(p, s);
    for (size_t i = 0; i < n; i++)
        out[i] = (struct idx_part_hit){p->rec[hits[i].id], hits[i].dist};
    if (hits != stack)
        free(hits);
    return n;
}

bool idx_part_same_quantizer(const struct idx_part *a, const struct idx_part *b)
{
    return a->ivf != NULL && b->ivf != NULL && a->n > 0 && b->n > 0 &&
           idx_ivfpq_quantizer_id(a->ivf) == idx_ivfpq_quantizer_id(b->ivf) &&
           idx_ivfpq_same_quantizer(a->ivf, b->ivf);
}

int idx_part_search_shared(const struct idx_part_shared *parts, size_t n, const float *q,
                           uint32_t k, uint32_t nprobe, float bound, struct idx_part_hit *out,
                           uint32_t *which, size_t *got)
{
    *got = 0;
    if (n == 0 || k == 0)
        return ST_OK;
    struct idx_part *p0 = parts[0].p;
    for (size_t i = 0; i < n; i++)
        if (parts[i].p->ivf == NULL || parts[i].p->n == 0)
            return ST_EINVAL;
    struct idx_ivfpq_member *mem = malloc(n * sizeof(*mem));
    struct st_hit *hits = malloc(k * sizeof(*hits));
    void *s = mem != NULL && hits != NULL ? pool_get(p0) : NULL;
    int rc = ST_ENOMEM;
    if (s != NULL) {
        for (size_t i = 0; i < n; i++)
            mem[i] = (struct idx_ivfpq_member){parts[i].p->ivf, parts[i].p->raw, parts[i].filter,
                                               parts[i].fctx, parts[i].p->refine};
        /* As idx_part_search re-ranks one part: the union is searched as one index. */
        rc = idx_ivfpq_search_shared(s, mem, n, q, k, nprobe ? nprobe : 16, part_rerank(k), bound,
                                     hits, which, got);
        pool_put(p0, s);
        for (size_t i = 0; i < *got; i++)
            out[i] = (struct idx_part_hit){parts[which[i]].p->rec[hits[i].id], hits[i].dist};
    }
    free(mem);
    free(hits);
    return rc;
}

float idx_part_probe(const struct idx_part *p, const float *q)
{
    return p->hnsw != NULL ? idx_hnsw_entry_distance(p->hnsw, q) : -INFINITY;
}
