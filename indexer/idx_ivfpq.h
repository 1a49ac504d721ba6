/*
 * idx_ivfpq.h — IVF-PQ index (Jégou et al.): a k-means coarse quantizer with `nlist` lists,
 * vectors stored as product-quantized residuals (`m` sub-quantizers of 2^nbits centroids),
 * searched by asymmetric distance over `nprobe` lists and re-ranked exactly from the raw
 * vectors. Without re-ranking, distances are PQ estimates (4 bits: quantized estimates). Ids are
 * row numbers 0..n-1 of the build input.
 */
#ifndef IDX_IVFPQ_H
#define IDX_IVFPQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_distance.h"

struct idx_ivfpq_opts {
    uint32_t dim;
    enum st_metric metric; /* cosine: vectors already normalised */
    uint32_t nlist;        /* coarse lists (default 1024, capped at n) */
    uint32_t m;            /* sub-quantizers; must divide dim (default dim/8 or smaller) */
    uint32_t nbits;        /* 8 (float-table ADC) or 4 (fast-scan: SIMD shuffles of u8 tables,
                              blocks of 32 codes; re-rank to get exact distances) */
    uint32_t train_size;   /* vectors sampled for training (default min(n, 256*nlist)) */
    uint32_t iterations;   /* k-means iterations (default 10 coarse, as FAISS; 12 codebooks) */
    uint64_t seed;
    uint32_t threads; /* training/encoding threads (default 1) */
};

struct idx_ivfpq;

/* Trains on a sample of vecs and adds all n. Caller owns *out (idx_ivfpq_free). */
int idx_ivfpq_build(const struct idx_ivfpq_opts *o, const float *vecs, uint32_t n,
                    struct idx_ivfpq **out) ST_WUR;
/*
 * A new index with base's coarse centroids, PQ codebooks, nbits and layout, holding base's
 * encoded vectors (ids 0..nb-1, their lists and codes unchanged) and the n vectors vecs
 * assigned to their nearest list and encoded as ids nb..nb+n-1 exactly as a build encodes them
 * (the same code; no training), after base's entries of each list. 8-bit codes and 4-bit
 * fast-scan blocks alike (a list's last block takes the new codes where base's ended). The
 * per-vector L2 terms are derived for every entry as a build derives them. threads share the
 * list assignment (the result does not depend on them). base is borrowed, never changed (it
 * may be a loaded, mmap'd index). n = 0 gives a copy. Caller owns *out (idx_ivfpq_free).
 * ST_EINVAL when nb + n does not fit 32 bits or vecs is NULL with n > 0.
 */
int idx_ivfpq_extend(const struct idx_ivfpq *base, const float *vecs, uint32_t n, uint32_t threads,
                     struct idx_ivfpq **out) ST_WUR;
/*
 * A new index with q's coarse centroids, PQ codebooks, nbits and layout (its quantizer, copied)
 * holding only the n vectors vecs, as ids 0..n-1, encoded exactly as a build encodes them (no
 * training; none of q's entries). Indexes that share one quantizer are searched together as
 * one (idx_ivfpq_search_shared). q is borrowed. Caller owns *out.
 */
int idx_ivfpq_adopt(const struct idx_ivfpq *q, const float *vecs, uint32_t n, uint32_t threads,
                    struct idx_ivfpq **out) ST_WUR;
/* Do a and b have the same quantizer: shape, metric, coarse centroids and codebooks equal byte
 * for byte (an adopted index and its source, or indexes extended from one)? */
bool idx_ivfpq_same_quantizer(const struct idx_ivfpq *a, const struct idx_ivfpq *b);
/* A hash of the quantizer (equal for the same quantizer; unequal ones almost surely differ):
 * for grouping; idx_ivfpq_same_quantizer decides. */
uint64_t idx_ivfpq_quantizer_id(const struct idx_ivfpq *ix);
/* Has ix the shape a build with o gives when it is not capped: o's dim, metric, m, nbits and
 * nlist, defaults resolved (a build over fewer than nlist vectors has fewer lists)? */
bool idx_ivfpq_built_as(const struct idx_ivfpq *ix, const struct idx_ivfpq_opts *o);
/* The 95th percentile of the squared L2 distances from up to `sample` of the n rows vecs
 * (spread evenly) to their nearest coarse centroid: how well the quantizer fits those vectors,
 * which a few far records (under 5 %) do not move and a larger share of drifted ones does (0
 * for none; -1 without memory or when it is not a number).
 * own: vecs are the vectors ix holds and was trained on, and each distance is scaled by
 * (s / (s - 1))^2 for a list of s entries (its centroid without that vector's pull, had it been
 * their mean): an estimate of the error on unseen vectors like them, which the in-sample error
 * understates (by ~1.35x with ~10 vectors a list). */
double idx_ivfpq_coarse_error(const struct idx_ivfpq *ix, const float *vecs, uint32_t n,
                              uint32_t sample, bool own);
/* The quantizer's fit reference: idx_ivfpq_coarse_error of the vectors it was trained on,
 * as its builder recorded it (idx_ivfpq_set_fit_ref: not finite or <= 0 records 0, unknown).
 * Saved in the index file, copied by idx_ivfpq_adopt and idx_ivfpq_extend. */
double idx_ivfpq_fit_ref(const struct idx_ivfpq *ix);
void idx_ivfpq_set_fit_ref(struct idx_ivfpq *ix, double ref);
void idx_ivfpq_free(struct idx_ivfpq *ix);
/* Codes, ids, centroids, codebooks and what is derived from them (L2: a float per vector, and
 * at 4 bits one per block of 32). */
size_t idx_ivfpq_memory(const struct idx_ivfpq *ix);
/* The vector that id's codes stand for (its list's centroid plus its codewords): dim floats
 * into out; ST_ENOTFOUND when no list holds id. O(n): for tests and tools. */
int idx_ivfpq_reconstruct(const struct idx_ivfpq *ix, uint32_t id, float *out) ST_WUR;
/* The vector count, dimension and metric (a loaded file's own claims). */
uint32_t idx_ivfpq_count(const struct idx_ivfpq *ix);
uint32_t idx_ivfpq_dim(const struct idx_ivfpq *ix);
enum st_metric idx_ivfpq_metric(const struct idx_ivfpq *ix);

struct idx_ivfpq_searcher;
struct idx_ivfpq_searcher *idx_ivfpq_searcher_new(const struct idx_ivfpq *ix);
void idx_ivfpq_searcher_free(struct idx_ivfpq_searcher *s);

/*
 * k nearest of q over the nprobe closest lists. With raw (n * dim floats, row = id) and
 * rerank > k, the best `rerank` candidates by PQ distance are re-ranked with exact distances;
 * otherwise distances are PQ estimates. Filtered ids are skipped. Returns the hit count.
 */
size_t idx_ivfpq_search(struct idx_ivfpq_searcher *s, const float *q, uint32_t k, uint32_t nprobe,
                        uint32_t rerank, const float *raw, st_filter_fn filter, void *fctx,
                        struct st_hit *out);

/*
 * The same search when only hits at distance <= bound are of use (the k-th best found so far
 * in other indexes; INFINITY: none, then it is idx_ivfpq_search exactly). Exact: the hits are
 * those of idx_ivfpq_search that lie within the bound, with the same distances.
 */
size_t idx_ivfpq_search_bound(struct idx_ivfpq_searcher *s, const float *q, uint32_t k,
                              uint32_t nprobe, uint32_t rerank, const float *raw, float bound,
                              st_filter_fn filter, void *fctx, struct st_hit *out);

/* One index among several that share a quantizer: its raw vectors (NULL: no re-ranking), the
 * filter of its ids, and the re-ranking codes of its raw vectors (NULL: none; idx_refine.h). */
struct idx_ivfpq_member {
    const struct idx_ivfpq *ix;
    const float *raw;
    st_filter_fn filter;
    void *fctx;
    const struct idx_refine *refine;
};

/*
 * The re-ranking codes of the raw vectors that s's next idx_ivfpq_search, _search_bound and
 * _search_batch calls pass (NULL, the default: none). With them a re-rank computes exact
 * distances in the order of the codes' lower bounds and stops at the first bound beyond the
 * k-th exact distance (or the caller's bound): the same hits, distances and order as re-ranking
 * every candidate, from fewer raw rows. Borrowed: it must outlive those calls.
 */
struct idx_refine;
/* ST_EINVAL (and no codes) when r is not of s's index: another row count or dimension, or built
 * for another kind of metric (L2 against inner product / cosine). */
int idx_ivfpq_searcher_refine(struct idx_ivfpq_searcher *s, const struct idx_refine *r) ST_WUR;
/* Exact distances s has computed in re-ranks so far (tests, benchmarks). */
uint64_t idx_ivfpq_searcher_exact(const struct idx_ivfpq_searcher *s);

/*
 * The k nearest of q over the nmem indexes mem, all of s's quantizer (the caller's to know:
 * idx_ivfpq_same_quantizer; only the shape and the hash are checked), searched as one index over
 * their union: the coarse step and the query's table once, each of the nprobe closest lists scanned
 * in every member into one candidate set, the best `rerank` (when every member has raw and rerank >
 * k) re-ranked from each member's own raw vectors; bound as idx_ivfpq_search_bound. *n hits at out,
 * closest first: ids are the member's own, which[i] the member of hit i. ST_EINVAL when a member's
 * quantizer has another shape or hash, its re-ranking codes are not of its vectors, or their
 * vectors together do not fit 32 bits, ST_ENOMEM without scratch.
 */
int idx_ivfpq_search_shared(struct idx_ivfpq_searcher *s, const struct idx_ivfpq_member *mem,
                            size_t nmem, const float *q, uint32_t k, uint32_t nprobe,
                            uint32_t rerank, float bound, struct st_hit *out, uint32_t *which,
                            size_t *n) ST_WUR;

/*
 * The same search for nq queries (rows of dim floats at qs): query i's hits at out + i * k,
 * their count in counts[i]. The coarse step runs for several queries at once through the
 * batched kernel (each centroid loaded once for them all), and so do 8-bit tables, four
 * queries at a time; hits equal those of nq calls of idx_ivfpq_search (each kernel set's
 * batched dots equal its one-row dots bit for bit). out holds nq * k hits. The first batched
 * call of a searcher allocates its batch scratch (8 bits: four tables of m * 1 KiB), kept
 * until idx_ivfpq_searcher_free. A searcher serves one thread at a time. Returns ST_OK, or
 * ST_ENOMEM (then counts are not set).
 */
int idx_ivfpq_search_batch(struct idx_ivfpq_searcher *s, const float *qs, size_t nq, uint32_t k,
                           uint32_t nprobe, uint32_t rerank, const float *raw, st_filter_fn filter,
                           void *fctx, struct st_hit *out, size_t *counts) ST_WUR;

/* Index files (ivfpq_format.h): written to path.tmp, fsynced, renamed; loaded by mmap with
 * every checksum verified. */
int idx_ivfpq_save(const struct idx_ivfpq *ix, const char *path, struct st_err *err) ST_WUR;
int idx_ivfpq_load(const char *path, struct idx_ivfpq **out, struct st_err *err) ST_WUR;

#endif
