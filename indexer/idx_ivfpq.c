/*
 * IVF-PQ: k-means training, residual product quantization, ADC search, exact re-ranking.
 *
 * 8-bit codes are scanned with float tables. 4-bit codes are stored in blocks of 32 vectors
 * (the layout st_pq4_fn reads) and scanned with 8-bit quantized tables and SIMD shuffles
 * (André et al., "Cache locality is not enough", VLDB 2015); the quantized sums only choose
 * candidates, and their float estimates (or the exact re-rank) decide.
 *
 * Every probe scans with the query's own table, built (and at 4 bits quantized) once per
 * query. For L2, ||q - c - r^||^2 (c the list's centroid, r^ the vector's reconstructed
 * residual) = ||q - c||^2 + (||r^||^2 + 2<c - mu, r^>) - 2<q - mu, r^> for any mu (the
 * centroids' mean: the table's spread then follows |q - mu|, not |q|): the middle term depends
 * on the vector only and is summed over its codes once, at build or load, into one float per
 * vector (`vn`); the last is the query's table. Before, each probe built its list's table (list
 * terms + query terms, precomputed per list: 24.5 MiB on Fashion-MNIST at 8 bits) and, at 4
 * bits, quantized it: the 8-bit sum was a quarter of a search, the 4-bit quantization a tenth.
 * For inner product -<q, c + r^> = -<q, c> - <q, r^> has no per-vector term.
 */
#include "idx_ivfpq.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "idx_cpucap.h"
#include "idx_file_int.h"
#include "idx_refine.h"
#include "ivfpq_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "store_fs.h"

#define PQ4_BLOCK 32u
/* 4 bits: m2 sums of table entries must fit 16 bits with at least one step per entry (beyond,
 * the tables quantize to nothing and every estimate is NaN). */
#define PQ4_M_MAX 65534u

struct ivf_list {
    uint32_t *ids;
    uint8_t *codes; /* 8 bits: n * m bytes; 4 bits: ceil(n/32) blocks of 16 * m2 bytes */
    float *vn;      /* L2: per entry ||r^||^2 + 2<c - mu, r^> (derived, never stored) */
    float *vmin;    /* 4-bit L2: per block of 32 the least vn (its threshold for the kernel) */
    uint32_t n, cap;
};

struct idx_ivfpq {
    uint32_t dim, nlist, m, dsub, nbits, ksub;
    uint32_t m2; /* 4 bits: m rounded up to even (the pad sub-quantizer is all zero) */
    enum st_metric metric;
    float *centroids; /* nlist * dim */
    float *codebooks; /* m * ksub * dsub: sub-quantizer j's centroid c at (j*ksub + c)*dsub */
    float *cbt;       /* per sub-quantizer: its codebook transposed (dsub rows of ksub) */
    float *cbn;       /* m * ksub squared norms of the codebook centroids */
    float *ct;        /* coarse centroids (L2: minus mu) transposed (dim rows of nlist) */
    float *cn;        /* nlist squared norms of the coarse centroids (L2: minus mu) */
    float *mu;        /* L2: the coarse centroids' mean, the origin of the per-vector terms */
    struct ivf_list *lists;
    uint32_t n;
    uint64_t qid;   /* the quantizer's identity: a hash of its shape, centroids and codebooks */
    double fit_ref; /* the quantizer's fit reference (idx_ivfpq_fit_ref); 0: unknown */
    st_dist_fn dist;
    void *map; /* loaded from a file: arrays point into it */
    size_t map_len;
};

/* L2: each vector's list-dependent terms summed once (vn) instead of a table per probe. */
static bool per_vector_terms(const struct idx_ivfpq *ix)
{
    return ix->metric == ST_METRIC_L2;
}

static size_t code_bytes(const struct idx_ivfpq *ix, uint32_t n)
{
    if (ix->nbits == 8)
        return (size_t)n * ix->m;
    return (size_t)((n + PQ4_BLOCK - 1) / PQ4_BLOCK) * 16 * ix->m2;
}

/* Sets entry e's 4-bit code c for sub-quantizer j in a list's blocks (replacing what the slot
 * held): byte 16*j + e%16 of block e/32, bits 0-3 for e%32 < 16, else bits 4-7. */
static void put4(const struct idx_ivfpq *ix, uint8_t *blocks, uint32_t e, uint32_t j, uint8_t c)
{
    uint8_t *b = blocks + (size_t)(e / PQ4_BLOCK) * 16 * ix->m2 + 16 * j + e % 16;
    *b = e % PQ4_BLOCK < 16 ? (uint8_t)((*b & 0xf0) | c) : (uint8_t)((*b & 0x0f) | c << 4);
}

/* ---- k-means ------------------------------------------------------------------------------ */

/* Centroids transposed (d rows of k) and their squared norms: the layout st_dots_fn reads. */
static void transpose_norms(const float *c, uint32_t k, uint32_t d, float *ct, float *norms)
{
    for (uint32_t i = 0; i < k; i++) {
        float s = 0;
        for (uint32_t j = 0; j < d; j++) {
            float v = c[(size_t)i * d + j];
            ct[(size_t)j * k + i] = v;
            s += v * v;
        }
        norms[i] = s;
    }
}

/* Points per call of the batched dots kernel: each centroid column it loads serves them all. */
#define NEAREST_BATCH 16
/* Queries whose 8-bit tables a batched search computes together, each codebook column loaded
 * once for them all: a table alone streams the dim * 256 floats of codebooks from L2 (784
 * dimensions: ~24,000 cycles on Zen 4, four together ~17,500 each; docs/benchmarks.md). The
 * four tables take 4 m KiB (392 KiB at m = 98: within a 1 MiB L2 beside a query's scan; at
 * m = 392 they do not fit: not measured). */
#define TAB_BATCH 4

/* Rows x[0..nb) (ldx floats apart) minus origin, into xb (nb * d); x itself without one. */
static const float *centred(const float *x, uint32_t nb, size_t ldx, uint32_t d,
                            const float *origin, float *xb)
{
    if (origin == NULL)
        return x;
    for (uint32_t b = 0; b < nb; b++)
        for (uint32_t j = 0; j < d; j++)
            xb[(size_t)b * d + j] = x[(size_t)b * ldx + j] - origin[j];
    return xb;
}

/* The nearest centroid of n points (rows ldx floats apart): out[i] for point i. ct and norms
 * are of the centroids minus origin (NULL: none), and so are the points before their dot
 * products: ||c||^2 - 2<x, c> cancels catastrophically in float when the data lie far from the
 * origin, measured from near their middle it does not. dots: NEAREST_BATCH * k floats of
 * scratch; xb: NEAREST_BATCH * d (unused without origin). */
static void nearest_n(const float *x, uint32_t n, size_t ldx, const float *origin, const float *ct,
                      const float *norms, uint32_t d, uint32_t k, float *dots, float *xb,
                      uint32_t *out)
{
    st_dots_tn_fn tn = st_kernels()->dots_tn;
    /* argmin_c ||c||^2 - 2 dots[c] (= argmin_c ||x - c||^2): on SIMD, since a scalar loop's
     * chain through the running minimum cost more than the dots for short sub-vectors (8-bit
     * codebooks: 256 centroids of 8 floats), 61 % of an 8-bit build. */
    st_argmin_fn argmin = st_kernels()->argmin_l2;
    for (uint32_t i = 0; i < n; i += NEAREST_BATCH) {
        uint32_t nb = n - i < NEAREST_BATCH ? n - i : NEAREST_BATCH;
        const float *xc = centred(x + (size_t)i * ldx, nb, ldx, d, origin, xb);
        tn(xc, nb, origin != NULL ? d : ldx, ct, d, k, dots);
        for (uint32_t b = 0; b < nb; b++)
            out[i + b] = argmin(dots + (size_t)b * k, norms, k);
        idx_cpucap_tick(); /* builds only call this; no lock is held here */
    }
}

struct assign_job {
    const float *x, *origin, *ct, *norms;
    uint32_t n, d, k, from, to;
    uint32_t *out;
};

static void *assign_range(void *arg)
{
    struct assign_job *j = arg;
    float *dots = malloc((size_t)NEAREST_BATCH * j->k * sizeof(float));
    float *xb = malloc((size_t)NEAREST_BATCH * j->d * sizeof(float));
    if (dots == NULL || xb == NULL) {
        free(dots);
        free(xb);
        return (void *)1;
    }
    nearest_n(j->x + (size_t)j->from * j->d, j->to - j->from, j->d, j->origin, j->ct, j->norms,
              j->d, j->k, dots, xb, j->out + j->from);
    free(dots);
    free(xb);
    return NULL;
}

/* An assignment thread of its own: named, unlike the caller running assign_range itself. */
static void *assign_thread(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "idx-ivf-assign"); /* by itself: a prctl */
    return assign_range(arg);
}

/* Nearest centroid of each of n points (threads share the range), the distances measured
 * from origin (NULL: from 0; see nearest_n). */
static int assign_all(const float *x, uint32_t n, uint32_t d, const float *c, uint32_t k,
                      const float *origin, uint32_t *out, uint32_t threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > 16)
        threads = 16;
    float *ct = malloc((size_t)k * d * sizeof(float)), *norms = malloc(k * sizeof(float));
    float *cc = origin != NULL ? malloc((size_t)k * d * sizeof(float)) : NULL;
    if (ct == NULL || norms == NULL || (origin != NULL && cc == NULL)) {
        free(ct);
        free(norms);
        free(cc);
        return ST_ENOMEM;
    }
    transpose_norms(centred(c, k, d, d, origin, cc), k, d, ct, norms);
    free(cc);
    struct assign_job jobs[16];
    pthread_t th[16];
    uint32_t started = 0;
    int rc = ST_OK;
    for (uint32_t t = 0; t < threads; t++) {
        jobs[t] = (struct assign_job){x,
                                      origin,
                                      ct,
                                      norms,
                                      n,
                                      d,
                                      k,
                                      (uint32_t)((uint64_t)n * t / threads),
                                      (uint32_t)((uint64_t)n * (t + 1) / threads),
                                      out};
        if (t > 0 && pthread_create(&th[t], NULL, assign_thread, &jobs[t]) == 0)
            started |= 1u << t;
        else if (t > 0 && assign_range(&jobs[t]) != NULL)
            rc = ST_ENOMEM;
    }
    if (assign_range(&jobs[0]) != NULL)
        rc = ST_ENOMEM;
    for (uint32_t t = 1; t < threads; t++) {
        void *ret = NULL;
        if ((started & (1u << t)) && pthread_join(th[t], &ret) == 0 && ret != NULL)
            rc = ST_ENOMEM;
    }
    free(ct);
    free(norms);
    return rc;
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Lloyd's k-means: random distinct initial points, empty clusters re-seeded by splitting the
 * largest one. x: n * d; c: k * d out. */
static int kmeans(const float *x, uint32_t n, uint32_t d, uint32_t k, uint32_t iters, uint64_t seed,
                  uint32_t threads, float *c)
{
    uint32_t *a = malloc((size_t)n * sizeof(*a));
    uint32_t *cnt = malloc((size_t)k * sizeof(*cnt));
    double *sum = malloc((size_t)k * d * sizeof(*sum));
    uint32_t *perm = malloc((size_t)n * sizeof(*perm));
    if (a == NULL || cnt == NULL || sum == NULL || perm == NULL) {
        free(a);
        free(cnt);
        free(sum);
        free(perm);
        return ST_ENOMEM;
    }
    uint64_t s = seed ? seed : 1;
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = 0; i < k && i < n; i++) {
        uint32_t j = i + (uint32_t)(xs(&s) % (n - i));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(c + (size_t)i * d, x + (size_t)perm[i] * d, d * sizeof(float));
    }
    int rc = ST_OK;
    for (uint32_t it = 0; it < iters && rc == ST_OK; it++) {
        if ((rc = assign_all(x, n, d, c, k, NULL, a, threads)) != ST_OK)
            break;
        memset(cnt, 0, k * sizeof(*cnt));
        memset(sum, 0, (size_t)k * d * sizeof(*sum));
        for (uint32_t i = 0; i < n; i++) {
            cnt[a[i]]++;
            const float *xi = x + (size_t)i * d;
            double *si = sum + (size_t)a[i] * d;
            for (uint32_t j = 0; j < d; j++)
                si[j] += xi[j];
        }
        for (uint32_t ci = 0; ci < k; ci++) {
            if (cnt[ci] == 0)
                continue;
            for (uint32_t j = 0; j < d; j++)
                c[(size_t)ci * d + j] = (float)(sum[(size_t)ci * d + j] / cnt[ci]);
        }
        for (uint32_t ci = 0; ci < k; ci++) {
            if (cnt[ci] != 0)
                continue;
            uint32_t big = 0;
            for (uint32_t cj = 1; cj < k; cj++)
                if (cnt[cj] > cnt[big])
                    big = cj;
            for (uint32_t j = 0; j < d; j++) {
                float v = c[(size_t)big * d + j];
                float eps = (v != 0 ? fabsf(v) : 1.0f) * 1e-4f;
                c[(size_t)ci * d + j] = v + eps;
                c[(size_t)big * d + j] = v - eps;
            }
            cnt[ci] = cnt[big] / 2;
            cnt[big] -= cnt[ci];
        }
    }
    free(a);
    free(cnt);
    free(sum);
    free(perm);
    return rc;
}

static const float *cbt_of(const struct idx_ivfpq *ix, uint32_t j)
{
    return ix->cbt + (size_t)j * ix->dsub * ix->ksub;
}

/* Derived from the codebooks (prepare): the index's quantizer id, the transposed codebooks and
 * their norms. */
static int prepare_codebooks(struct idx_ivfpq *ix)
{
    size_t mk = (size_t)ix->m * ix->ksub;
    uint32_t shape[5] = {ix->dim, ix->nlist, ix->m, ix->nbits, (uint32_t)ix->metric};
    ix->qid =
        st_hash64_seed(ix->codebooks, mk * ix->dsub * sizeof(float),
                       st_hash64_seed(ix->centroids, (size_t)ix->nlist * ix->dim * sizeof(float),
                                      st_hash64(shape, sizeof(shape))));
    ix->cbt = malloc(mk * ix->dsub * sizeof(float));
    ix->cbn = malloc(mk * sizeof(float));
    if (ix->cbt == NULL || ix->cbn == NULL)
        return ST_ENOMEM;
    for (uint32_t j = 0; j < ix->m; j++)
        transpose_norms(ix->codebooks + (size_t)j * ix->ksub * ix->dsub, ix->ksub, ix->dsub,
                        ix->cbt + (size_t)j * ix->dsub * ix->ksub, ix->cbn + (size_t)j * ix->ksub);
    return ST_OK;
}

/* Derived from the coarse centroids (prepare): transposed, their norms, and (L2) their mean. */
static int prepare_coarse(struct idx_ivfpq *ix)
{
    ix->ct = malloc((size_t)ix->nlist * ix->dim * sizeof(float));
    ix->cn = malloc((size_t)ix->nlist * sizeof(float));
    if (ix->ct == NULL || ix->cn == NULL)
        return ST_ENOMEM;
    if (ix->metric != ST_METRIC_L2) {
        transpose_norms(ix->centroids, ix->nlist, ix->dim, ix->ct, ix->cn);
        return ST_OK;
    }
    /* L2 terms are measured from the centroids' mean: the query's table is -2<q_j - mu_j, cb>,
     * whose spread (and at 4 bits its quantization step) follows |q - mu|, not |q|, so data
     * far from the origin quantizes as finely as centred data; and the coarse step's
     * ||q - mu||^2 + ||c - mu||^2 - 2<q - mu, c - mu> keeps its digits there (ct, cn are of
     * c - mu). */
    double *sum = calloc(ix->dim, sizeof(*sum));
    float *cc = malloc((size_t)ix->nlist * ix->dim * sizeof(float));
    if ((ix->mu = malloc(ix->dim * sizeof(float))) == NULL || sum == NULL || cc == NULL) {
        free(sum);
        free(cc);
        return ST_ENOMEM;
    }
    for (uint32_t l = 0; l < ix->nlist; l++)
        for (uint32_t d = 0; d < ix->dim; d++)
            sum[d] += ix->centroids[(size_t)l * ix->dim + d];
    for (uint32_t d = 0; d < ix->dim; d++)
        ix->mu[d] = (float)(sum[d] / ix->nlist);
    transpose_norms(centred(ix->centroids, ix->nlist, ix->dim, ix->dim, ix->mu, cc), ix->nlist,
                    ix->dim, ix->ct, ix->cn);
    free(sum);
    free(cc);
    return ST_OK;
}

/*
 * Derived in memory after training or loading (never stored): the transposed codebooks and
 * coarse centroids, and their norms. (The per-vector terms follow the lists: derive_vn.)
 */
static int prepare(struct idx_ivfpq *ix)
{
    int rc = prepare_coarse(ix);
    return rc == ST_OK ? prepare_codebooks(ix) : rc;
}

/* Entry e's code for sub-quantizer j (j < m) in a list's codes, either width. */
static uint32_t code_at(const struct idx_ivfpq *ix, const uint8_t *codes, uint32_t e, uint32_t j)
{
    if (ix->nbits == 8)
        return codes[(size_t)e * ix->m + j];
    uint8_t b = codes[(size_t)(e / PQ4_BLOCK) * 16 * ix->m2 + 16 * j + e % 16];
    return e % PQ4_BLOCK < 16 ? b & 0x0fu : (uint32_t)b >> 4;
}

/* Sub-quantizer j's codeword c: ||cb_jc||^2 + 2<cen_j, cb_jc>, from the list's table t when
 * there is one (cen = c - mu). Without, the same bits: the codeword's own dsub floats are a
 * one-column transposed table, and every kernel set's dots_t sums a column alike whatever
 * the column count — so a vector's term does not depend on the size of the list it is in
 * (an adopted index's short lists and an extended index's long ones agree to the bit). */
static float code_term(const struct idx_ivfpq *ix, const float *t, const float *cen, uint32_t j,
                       uint32_t c)
{
    if (t != NULL)
        return t[(size_t)j * ix->ksub + c];
    const float *cb = ix->codebooks + ((size_t)j * ix->ksub + c) * ix->dsub;
    float dot;
    st_kernels()->dots_t(cen + (size_t)j * ix->dsub, cb, ix->dsub, 1, &dot);
    return ix->cbn[(size_t)j * ix->ksub + c] + 2 * dot;
}

/*
 * L2: every entry's vn, the sum over its codes of ||cb_jc||^2 + 2<c_j - mu_j, cb_jc>, and at 4 bits
 * each block's least vn. A list of at least ksub/2 entries gets its terms in a scratch table
 * first (dim * ksub multiply-adds, then m lookups an entry); a shorter one sums each entry's
 * own terms (2 * dim an entry), so a load costs O(n * dim) whatever nlist is. Empty lists keep
 * vn NULL. Lists must be complete; codes are bytes < ksub, so any file's codes stay in range.
 */
static int derive_vn(struct idx_ivfpq *ix)
{
    if (!per_vector_terms(ix))
        return ST_OK;
    uint32_t m = ix->m, ksub = ix->ksub;
    float *t = malloc((size_t)m * ksub * sizeof(float));
    float *cen = malloc((size_t)ix->dim * sizeof(float));
    if (t == NULL || cen == NULL) {
        free(t);
        free(cen);
        return ST_ENOMEM;
    }
    const struct st_kernels *k = st_kernels();
    int rc = ST_OK;
    for (uint32_t li = 0; li < ix->nlist && rc == ST_OK; li++) {
        struct ivf_list *l = &ix->lists[li];
        free(l->vn);
        free(l->vmin);
        l->vn = l->vmin = NULL;
        if (l->n == 0)
            continue;
        /* 4 bits: vn padded to whole blocks (+inf: never a candidate), read 32 at a time. */
        uint32_t nblocks = (l->n + PQ4_BLOCK - 1) / PQ4_BLOCK;
        size_t nvn = ix->nbits == 4 ? (size_t)nblocks * PQ4_BLOCK : l->n;
        if ((l->vn = malloc(nvn * sizeof(float))) == NULL ||
            (ix->nbits == 4 && (l->vmin = malloc((size_t)nblocks * sizeof(float))) == NULL)) {
            rc = ST_ENOMEM;
            break;
        }
        for (uint32_t d = 0; d < ix->dim; d++) /* c - mu */
            cen[d] = ix->centroids[(size_t)li * ix->dim + d] - ix->mu[d];
        bool table = l->n >= ksub / 2;
        for (uint32_t j = 0; table && j < m; j++) {
            float *row = t + (size_t)j * ksub;
            k->dots_t(cen + (size_t)j * ix->dsub, cbt_of(ix, j), ix->dsub, ksub, row);
            for (uint32_t c = 0; c < ksub; c++)
                row[c] = ix->cbn[(size_t)j * ksub + c] + 2 * row[c];
        }
        for (uint32_t e = 0; e < l->n; e++) {
            float v = 0;
            for (uint32_t j = 0; j < m; j++)
                v += code_term(ix, table ? t : NULL, cen, j, code_at(ix, l->codes, e, j));
            l->vn[e] = v;
            if (l->vmin != NULL && (e % PQ4_BLOCK == 0 || v < l->vmin[e / PQ4_BLOCK]))
                l->vmin[e / PQ4_BLOCK] = v;
        }
        for (size_t e = l->n; e < nvn; e++)
            l->vn[e] = INFINITY;
    }
    free(t);
    free(cen);
    return rc;
}

/* ---- build --------------------------------------------------------------------------------- */

/*
 * Where list assignment measures from: lists are the nearest centroid in L2 whatever the
 * metric, measured from the centroids' mean as k-means measured from the sample's (mu for L2;
 * the same mean, computed into *own (caller frees), for inner product, whose search terms stay
 * uncentred). NULL without memory.
 */
static const float *list_origin(const struct idx_ivfpq *ix, float **own)
{
    *own = NULL;
    if (ix->mu != NULL)
        return ix->mu;
    if ((*own = calloc(ix->dim, sizeof(**own))) == NULL)
        return NULL;
    for (uint32_t c = 0; c < ix->nlist; c++)
        for (uint32_t d = 0; d < ix->dim; d++)
            (*own)[d] += ix->centroids[(size_t)c * ix->dim + d] / (float)ix->nlist;
    return *own;
}

/* The nearest list of each of n vectors (the coarse centroids prepared): out[i]. */
static int coarse_lists(const struct idx_ivfpq *ix, const float *vecs, uint32_t n, uint32_t threads,
                        uint32_t *out)
{
    float *own;
    const float *origin = list_origin(ix, &own);
    if (origin == NULL)
        return ST_ENOMEM;
    int rc = assign_all(vecs, n, ix->dim, ix->centroids, ix->nlist, origin, out, threads);
    free(own);
    return rc;
}

/*
 * Adds the n vectors vecs to ix (quantizers trained, derived tables prepared, lists empty) as
 * ids base_n..base_n+n-1, base_n = base's count (0 without base): each to its nearest list,
 * encoded as the nearest codeword of its residual in every sub-space, after base's entries of
 * that list (base: NULL, or an index with ix's quantizers and layout; its ids and codes are
 * copied as they are). Every list is allocated once, for its final size. The one encoder of
 * the build and of extend. lists: NULL, or each vector's list as coarse_lists gives it (the
 * build has it already).
 */
static int add_vectors(struct idx_ivfpq *ix, const struct idx_ivfpq *base, const float *vecs,
                       uint32_t n, uint32_t threads, const uint32_t *lists)
{
    uint32_t m = ix->m, ksub = ix->ksub, idx8[NEAREST_BATCH];
    uint32_t *own = lists == NULL ? malloc((size_t)(n ? n : 1) * sizeof(*own)) : NULL;
    const uint32_t *asg = lists != NULL ? lists : own;
    uint32_t *add = calloc(ix->nlist, sizeof(*add));
    uint8_t *code = malloc((size_t)NEAREST_BATCH * m);
    float *r = malloc((size_t)NEAREST_BATCH * ix->dim * sizeof(float));
    float *dots = malloc((size_t)NEAREST_BATCH * ksub * sizeof(float));
    int rc = ST_ENOMEM;
    if (!asg || !add || !code || !r || !dots)
        goto out;
    if (own != NULL && (rc = coarse_lists(ix, vecs, n, threads, own)) != ST_OK)
        goto out;
    for (uint32_t i = 0; i < n; i++)
        add[asg[i]]++;
    rc = ST_ENOMEM;
    for (uint32_t li = 0; li < ix->nlist; li++) {
        struct ivf_list *l = &ix->lists[li];
        uint32_t have = base != NULL ? base->lists[li].n : 0, total = have + add[li];
        l->ids = malloc((size_t)(total ? total : 1) * sizeof(*l->ids));
        l->codes = calloc(code_bytes(ix, total) + 1, 1);
        if (l->ids == NULL || l->codes == NULL)
            goto out;
        l->cap = total;
        if (have == 0)
            continue;
        memcpy(l->ids, base->lists[li].ids, (size_t)have * sizeof(*l->ids));
        memcpy(l->codes, base->lists[li].codes, code_bytes(ix, have));
        l->n = have;
        /* The slots past base's last entry in its last block are zero by the format; make
         * sure (a file is not checked for it), so the new index is a valid file whatever. */
        for (uint32_t e = have; ix->nbits == 4 && e % PQ4_BLOCK != 0; e++)
            for (uint32_t j = 0; j < ix->m2; j++)
                put4(ix, l->codes, e, j, 0);
    }
    uint32_t id0 = base != NULL ? base->n : 0;
    /* In batches of points: residuals, then per sub-space the nearest codeword of each. */
    for (uint32_t i0 = 0; i0 < n; i0 += NEAREST_BATCH) {
        uint32_t nb = n - i0 < NEAREST_BATCH ? n - i0 : NEAREST_BATCH;
        for (uint32_t b = 0; b < nb; b++) {
            const float *v = vecs + (size_t)(i0 + b) * ix->dim;
            const float *c = ix->centroids + (size_t)asg[i0 + b] * ix->dim;
            for (uint32_t d = 0; d < ix->dim; d++)
                r[(size_t)b * ix->dim + d] = v[d] - c[d];
        }
        for (uint32_t j = 0; j < m; j++) {
            nearest_n(r + (size_t)j * ix->dsub, nb, ix->dim, NULL, cbt_of(ix, j),
                      ix->cbn + (size_t)j * ksub, ix->dsub, ksub, dots, NULL, idx8);
            for (uint32_t b = 0; b < nb; b++)
                code[(size_t)b * m + j] = (uint8_t)idx8[b];
        }
        for (uint32_t b = 0; b < nb; b++) {
            struct ivf_list *l = &ix->lists[asg[i0 + b]];
            uint32_t e = l->n++;
            l->ids[e] = id0 + i0 + b;
            if (ix->nbits == 8)
                memcpy(l->codes + (size_t)e * m, code + (size_t)b * m, m);
            else
                for (uint32_t j = 0; j < m; j++)
                    put4(ix, l->codes, e, j, code[(size_t)b * m + j]);
        }
    }
    ix->n = id0 + n;
    rc = ST_OK;
out:
    free(own);
    free(add);
    free(code);
    free(r);
    free(dots);
    return rc;
}

/* The sub-quantizer count a build with o uses: o->m, or dim/8 (dim/4, dim/2, dim) by default. */
static uint32_t opts_m(const struct idx_ivfpq_opts *o)
{
    uint32_t m = o->m;
    static const uint32_t sub[] = {8, 4, 2, 1};
    for (size_t i = 0; i < 4 && m == 0; i++)
        if (o->dim % sub[i] == 0)
            m = o->dim / sub[i];
    return m;
}

bool idx_ivfpq_built_as(const struct idx_ivfpq *ix, const struct idx_ivfpq_opts *o)
{
    return ix->dim == o->dim && ix->metric == o->metric && ix->m == opts_m(o) &&
           ix->nbits == (o->nbits ? o->nbits : 8) && ix->nlist == (o->nlist ? o->nlist : 1024);
}

int idx_ivfpq_build(const struct idx_ivfpq_opts *o, const float *vecs, uint32_t n,
                    struct idx_ivfpq **out)
{
    *out = NULL;
    uint32_t nbits = o->nbits ? o->nbits : 8;
    if (o->dim == 0 || (nbits != 8 && nbits != 4) || n == 0)
        return ST_EINVAL;
    uint32_t m = opts_m(o);
    if (o->dim % m != 0 || (nbits == 4 && m > PQ4_M_MAX))
        return ST_EINVAL;
    struct idx_ivfpq *ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return ST_ENOMEM;
    ix->dim = o->dim;
    ix->m = m;
    ix->dsub = o->dim / m;
    ix->nbits = nbits;
    ix->ksub = 1u << nbits;
    ix->m2 = nbits == 4 ? (m + 1) & ~1u : m;
    ix->metric = o->metric;
    ix->nlist = o->nlist ? o->nlist : 1024;
    if (ix->nlist > n)
        ix->nlist = n;
    ix->dist = st_metric_fn(st_kernels(), o->metric);
    /* The coarse quantizer: 10 Lloyd iterations, as FAISS 1.15's IndexIVF trains it (each a
     * pass over up to 256 * nlist vectors of full dimension: the 4-bit build's largest cost;
     * recall within 0.001 of 12 on Fashion-MNIST); the codebooks 12 (FAISS: 25). */
    uint32_t iters = o->iterations ? o->iterations : 10;
    uint32_t pq_iters = o->iterations ? o->iterations : 12;
    uint32_t threads = o->threads ? o->threads : 1;
    uint64_t seed = o->seed ? o->seed : 12345;
    uint32_t ntrain = o->train_size ? o->train_size : 256 * ix->nlist;
    if (ntrain > n)
        ntrain = n;
    if (ntrain < ix->ksub && n >= ix->ksub)
        ntrain = ix->ksub;
    if (ntrain < ix->nlist) /* k-means starts from nlist distinct sample points */
        ntrain = ix->nlist;
    int rc = ST_ENOMEM;
    float *train = malloc((size_t)ntrain * ix->dim * sizeof(float));
    /* Each codebook learns from at most 256 points per codeword (the sample is already in
     * random order, so its head is a random subset): 4,096 for 4 bits instead of every
     * training vector, which made the 4-bit build twice FAISS's; 8 bits keep 65,536. */
    uint32_t ksub = ix->ksub, k = ntrain < ksub ? ntrain : ksub;
    uint32_t npq = ntrain < 256 * ksub ? ntrain : 256 * ksub;
    float *resid = malloc((size_t)npq * ix->dim * sizeof(float));
    float *subv = malloc((size_t)npq * ix->dsub * sizeof(float));
    uint32_t *lists = malloc((size_t)n * sizeof(uint32_t));
    uint32_t *perm = malloc((size_t)n * sizeof(*perm));
    ix->centroids = malloc((size_t)ix->nlist * ix->dim * sizeof(float));
    ix->codebooks = calloc((size_t)m * ix->ksub * ix->dsub, sizeof(float));
    ix->lists = calloc(ix->nlist, sizeof(*ix->lists));
    if (!train || !resid || !subv || !lists || !perm || !ix->centroids || !ix->codebooks ||
        !ix->lists)
        goto out;
    /* A deterministic sample without replacement (partial Fisher-Yates over row numbers): row i
     * of the sample is vector perm[i]. */
    uint64_t s = seed;
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = 0; i < ntrain; i++) {
        uint32_t j = i + (uint32_t)(xs(&s) % (n - i));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(train + (size_t)i * ix->dim, vecs + (size_t)perm[i] * ix->dim,
               ix->dim * sizeof(float));
    }
    /* The coarse quantizer learns on the sample moved to its mean: k-means' assignments sum
     * ||c||^2 - 2<x, c>, which loses every digit that matters when the data lie far from the
     * origin (the centroids are moved back after). */
    double *mean = calloc(ix->dim, sizeof(*mean));
    if (mean == NULL)
        goto out;
    for (uint32_t i = 0; i < ntrain; i++)
        for (uint32_t d = 0; d < ix->dim; d++)
            mean[d] += train[(size_t)i * ix->dim + d];
    for (uint32_t d = 0; d < ix->dim; d++)
        mean[d] /= ntrain;
    for (uint32_t i = 0; i < ntrain; i++)
        for (uint32_t d = 0; d < ix->dim; d++)
            train[(size_t)i * ix->dim + d] -= (float)mean[d];
    rc = kmeans(train, ntrain, ix->dim, ix->nlist, iters, seed, threads, ix->centroids);
    for (uint32_t c = 0; rc == ST_OK && c < ix->nlist; c++)
        for (uint32_t d = 0; d < ix->dim; d++)
            ix->centroids[(size_t)c * ix->dim + d] += (float)mean[d];
    free(mean);
    free(train); /* the residuals come from the vectors themselves */
    train = NULL;
    /* Every vector's list, once: the sample's rows are among the vectors, so the codebooks
     * learn from the residuals the encoder will quantize, and add_vectors takes the lists as
     * they are (one pass of n * nlist * dim fewer than assigning the sample, then all). */
    if (rc != ST_OK || (rc = prepare_coarse(ix)) != ST_OK ||
        (rc = coarse_lists(ix, vecs, n, threads, lists)) != ST_OK)
        goto out;
    /* Residuals of the sample's first npq rows, then one codebook per sub-space. */
    for (uint32_t i = 0; i < npq; i++) {
        const float *v = vecs + (size_t)perm[i] * ix->dim;
        const float *c = ix->centroids + (size_t)lists[perm[i]] * ix->dim;
        for (uint32_t d = 0; d < ix->dim; d++)
            resid[(size_t)i * ix->dim + d] = v[d] - c[d];
    }
    free(perm);
    perm = NULL;
    for (uint32_t j = 0; j < m; j++) {
        for (uint32_t i = 0; i < npq; i++)
            memcpy(subv + (size_t)i * ix->dsub, resid + (size_t)i * ix->dim + (size_t)j * ix->dsub,
                   ix->dsub * sizeof(float));
        if ((rc = kmeans(subv, npq, ix->dsub, k, pq_iters, seed + j + 1, 1,
                         ix->codebooks + (size_t)j * ksub * ix->dsub)) != ST_OK)
            goto out;
        /* Unused slots (tiny training sets) repeat slot 0 so they are never closer. */
        for (uint32_t c = k; c < ksub; c++)
            memcpy(ix->codebooks + ((size_t)j * ksub + c) * ix->dsub,
                   ix->codebooks + (size_t)j * ksub * ix->dsub, ix->dsub * sizeof(float));
    }
    if ((rc = prepare_codebooks(ix)) != ST_OK)
        goto out;
    /* Encode everything (the training buffers are no longer needed). */
    free(resid);
    free(subv);
    resid = subv = NULL;
    if ((rc = add_vectors(ix, NULL, vecs, n, threads, lists)) == ST_OK)
        rc = derive_vn(ix);
out:
    free(train);
    free(resid);
    free(subv);
    free(perm);
    free(lists);
    if (rc != ST_OK)
        idx_ivfpq_free(ix);
    else
        *out = ix;
    return rc;
}

/* A new index with base's quantizers holding n vectors vecs, after base's entries when keep
 * (idx_ivfpq_extend) or alone (idx_ivfpq_adopt). */
static int derive_from(const struct idx_ivfpq *base, bool keep, const float *vecs, uint32_t n,
                       uint32_t threads, struct idx_ivfpq **out)
{
    *out = NULL;
    if ((n > 0 && vecs == NULL) || (keep && n > UINT32_MAX - base->n))
        return ST_EINVAL;
    struct idx_ivfpq *ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return ST_ENOMEM;
    ix->dim = base->dim;
    ix->nlist = base->nlist;
    ix->m = base->m;
    ix->dsub = base->dsub;
    ix->nbits = base->nbits;
    ix->ksub = base->ksub;
    ix->m2 = base->m2;
    ix->metric = base->metric;
    ix->fit_ref = base->fit_ref; /* the same quantizer */
    ix->dist = st_metric_fn(st_kernels(), ix->metric);
    size_t cb = (size_t)ix->nlist * ix->dim * sizeof(float);
    size_t kb = (size_t)ix->m * ix->ksub * ix->dsub * sizeof(float);
    ix->centroids = malloc(cb);
    ix->codebooks = malloc(kb);
    ix->lists = calloc(ix->nlist, sizeof(*ix->lists));
    int rc = ST_ENOMEM;
    if (ix->centroids == NULL || ix->codebooks == NULL || ix->lists == NULL)
        goto out;
    /* base's quantizers (it may be mmap'd: copied), the derived tables as a build or a load
     * derives them, then base's lists followed by the new vectors. */
    memcpy(ix->centroids, base->centroids, cb);
    memcpy(ix->codebooks, base->codebooks, kb);
    if ((rc = prepare(ix)) == ST_OK &&
        (rc = add_vectors(ix, keep ? base : NULL, vecs, n, threads ? threads : 1, NULL)) == ST_OK)
        rc = derive_vn(ix);
out:
    if (rc != ST_OK)
        idx_ivfpq_free(ix);
    else
        *out = ix;
    return rc;
}

int idx_ivfpq_extend(const struct idx_ivfpq *base, const float *vecs, uint32_t n, uint32_t threads,
                     struct idx_ivfpq **out)
{
    return derive_from(base, true, vecs, n, threads, out);
}

int idx_ivfpq_adopt(const struct idx_ivfpq *q, const float *vecs, uint32_t n, uint32_t threads,
                    struct idx_ivfpq **out)
{
    return derive_from(q, false, vecs, n, threads, out);
}

bool idx_ivfpq_same_quantizer(const struct idx_ivfpq *a, const struct idx_ivfpq *b)
{
    if (a == b)
        return true;
    if (a->qid != b->qid || a->dim != b->dim || a->nlist != b->nlist || a->m != b->m ||
        a->nbits != b->nbits || a->metric != b->metric)
        return false;
    return memcmp(a->centroids, b->centroids, (size_t)a->nlist * a->dim * sizeof(float)) == 0 &&
           memcmp(a->codebooks, b->codebooks, (size_t)a->m * a->ksub * a->dsub * sizeof(float)) ==
               0;
}

uint64_t idx_ivfpq_quantizer_id(const struct idx_ivfpq *ix)
{
    return ix->qid;
}

double idx_ivfpq_fit_ref(const struct idx_ivfpq *ix)
{
    return ix->fit_ref;
}

void idx_ivfpq_set_fit_ref(struct idx_ivfpq *ix, double ref)
{
    ix->fit_ref = isfinite(ref) && ref > 0 ? ref : 0;
}

/* The percentile idx_ivfpq_coarse_error reports. */
#define FIT_PERCENTILE 95u

/* NaN sorts last. */
static int double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    if (isnan(x) || isnan(y))
        return isnan(x) - isnan(y);
    return x < y ? -1 : x > y;
}

double idx_ivfpq_coarse_error(const struct idx_ivfpq *ix, const float *vecs, uint32_t n,
                              uint32_t sample, bool own)
{
    if (n == 0 || sample == 0)
        return 0;
    uint32_t ns = n < sample ? n : sample;
    float *x = malloc((size_t)ns * ix->dim * sizeof(float)), *mid;
    uint32_t *asg = malloc((size_t)ns * sizeof(*asg));
    double *e = malloc((size_t)ns * sizeof(*e));
    const float *origin = list_origin(ix, &mid);
    double err = -1;
    /* Rows spread evenly over the input (row i * n / ns), each in the list a build assigns it. */
    for (uint32_t i = 0; x != NULL && i < ns; i++)
        memcpy(x + (size_t)i * ix->dim, vecs + (size_t)((uint64_t)i * n / ns) * ix->dim,
               ix->dim * sizeof(float));
    if (x != NULL && asg != NULL && e != NULL && origin != NULL &&
        assign_all(x, ns, ix->dim, ix->centroids, ix->nlist, origin, asg, 1) == ST_OK) {
        for (uint32_t i = 0; i < ns; i++) {
            const float *v = x + (size_t)i * ix->dim;
            const float *c = ix->centroids + (size_t)asg[i] * ix->dim;
            double d2 = 0;
            for (uint32_t d = 0; d < ix->dim; d++)
                d2 += ((double)v[d] - c[d]) * ((double)v[d] - c[d]);
            /* Its own vector pulled the centroid towards it: without it, the mean of the
             * s - 1 others in its list lies s / (s - 1) times as far. */
            double s = own ? ix->lists[asg[i]].n : 0;
            e[i] = s >= 2 ? d2 * (s / (s - 1)) * (s / (s - 1)) : d2;
        }
        /* Their 95th percentile: a few far records (up to 5 %) cannot move it as they move a
         * mean, and a share of drifted content beyond that does (a median would hide up to
         * half). */
        qsort(e, ns, sizeof(*e), double_cmp);
        err = e[(size_t)((uint64_t)(ns - 1) * FIT_PERCENTILE / 100)];
        if (isnan(err))
            err = -1; /* not finite vectors: no fit */
    }
    free(x);
    free(asg);
    free(e);
    free(mid);
    return err;
}

void idx_ivfpq_free(struct idx_ivfpq *ix)
{
    if (ix == NULL)
        return;
    if (ix->map != NULL) {
        munmap(ix->map, ix->map_len);
    } else {
        for (uint32_t i = 0; ix->lists != NULL && i < ix->nlist; i++) {
            free(ix->lists[i].ids);
            free(ix->lists[i].codes);
        }
        free(ix->centroids);
        free(ix->codebooks);
    }
    for (uint32_t i = 0; ix->lists != NULL && i < ix->nlist; i++) {
        free(ix->lists[i].vn);
        free(ix->lists[i].vmin);
    }
    free(ix->cbt);
    free(ix->cbn);
    free(ix->ct);
    free(ix->cn);
    free(ix->mu);
    free(ix->lists);
    free(ix);
}

/* Everything searching needs in memory, derived tables included. */
uint32_t idx_ivfpq_count(const struct idx_ivfpq *ix)
{
    return ix->n;
}

uint32_t idx_ivfpq_dim(const struct idx_ivfpq *ix)
{
    return ix->dim;
}

enum st_metric idx_ivfpq_metric(const struct idx_ivfpq *ix)
{
    return ix->metric;
}

int idx_ivfpq_reconstruct(const struct idx_ivfpq *ix, uint32_t id, float *out)
{
    for (uint32_t li = 0; li < ix->nlist; li++) {
        const struct ivf_list *l = &ix->lists[li];
        for (uint32_t e = 0; e < l->n; e++) {
            if (l->ids[e] != id)
                continue;
            for (uint32_t j = 0; j < ix->m; j++) {
                uint32_t c = code_at(ix, l->codes, e, j);
                const float *cb = ix->codebooks + ((size_t)j * ix->ksub + c) * ix->dsub;
                const float *cen = ix->centroids + (size_t)li * ix->dim + (size_t)j * ix->dsub;
                for (uint32_t d = 0; d < ix->dsub; d++)
                    out[(size_t)j * ix->dsub + d] = cen[d] + cb[d];
            }
            return ST_OK;
        }
    }
    return ST_ENOTFOUND;
}

size_t idx_ivfpq_memory(const struct idx_ivfpq *ix)
{
    size_t b = (size_t)ix->nlist * ix->dim * 4 + (size_t)ix->m * ix->ksub * ix->dsub * 4;
    b += (size_t)ix->nlist * (ix->dim + 1) * 4 + (size_t)ix->m * ix->ksub * (ix->dsub + 1) * 4;
    if (ix->mu != NULL)
        b += (size_t)ix->dim * 4;
    for (uint32_t i = 0; i < ix->nlist; i++) {
        uint32_t n = ix->lists[i].n;
        b += (size_t)n * 4 + code_bytes(ix, n);
        if (per_vector_terms(ix)) /* vn (4 bits: padded to whole blocks), each block's least */
            b += ix->nbits == 4 ? (size_t)(n + PQ4_BLOCK - 1) / PQ4_BLOCK * (PQ4_BLOCK + 1) * 4
                                : (size_t)n * 4;
    }
    return b;
}

/* ---- search -------------------------------------------------------------------------------- */

struct idx_ivfpq_searcher {
    const struct idx_ivfpq *ix;
    float *qterm;     /* m * ksub: -2<q_j - mu_j, cb> (L2) or -<q_j, cb> (inner product) */
    const float *tab; /* the query's table: qterm, or its row of bterm (batches) */
    float *bterm;     /* TAB_BATCH * m * ksub: a batch's 8-bit tables (first use) */
    float *bqf;       /* TAB_BATCH * dim: their queries times the factor */
    float *btmp;      /* TAB_BATCH * ksub: one sub-quantizer's products */
    float *qc;        /* dim: q - mu (L2) */
    uint8_t *lut;     /* m2 * 16: qterm quantized (4 bits), once per query */
    float scale;      /* 4 bits: lut entries per distance unit */
    float bias;       /* 4 bits: what the lut's rows were shifted by, summed */
    float *qtab;      /* m * 16: scratch of the quantizer (4 bits) */
    float *qf;    /* dim: the centred query times the table's factor (-2 L2, -1 inner product) */
    float *cdots; /* nlist: <q, centroid> (L2: <q - mu, centroid - mu>) */
    float *bdots; /* NEAREST_BATCH * nlist: a batch's <q, centroid> (allocated on first use) */
    float *bq;    /* NEAREST_BATCH * dim: a batch's queries - mu (L2; allocated on first use) */
    const struct st_kernels *k;
    struct st_hit *coarse;
    struct st_hit *cand;
    struct st_hit *ctmp; /* cand_cap: the reservoir's selection scratch */
    size_t cand_cap;
    uint32_t *off; /* idx_ivfpq_search_shared: each member's first id */
    size_t off_cap;
    const struct idx_refine *refine; /* idx_ivfpq_searcher_refine */
    struct lb_item *lbh;             /* cand_cap: the re-rank's min-heap of lower bounds */
    struct st_hit *kth;              /* cand_cap: its max-heap of the k best exact distances */
    uint64_t exact;                  /* exact distances computed in re-ranks */
};

/* A candidate's lower bound from the re-ranking codes, and its id among the members. */
struct lb_item {
    float lb;
    uint32_t id;
};

/* Are r codes of ix's vectors: as many rows, the same dimension, a bound of the same kind? */
static bool refine_fits(const struct idx_ivfpq *ix, const struct idx_refine *r)
{
    return r->dim == ix->dim && r->n == ix->n &&
           (r->metric == ST_METRIC_L2) == (ix->metric == ST_METRIC_L2);
}

int idx_ivfpq_searcher_refine(struct idx_ivfpq_searcher *s, const struct idx_refine *r)
{
    if (r != NULL && !refine_fits(s->ix, r)) {
        s->refine = NULL;
        return ST_EINVAL;
    }
    s->refine = r;
    return ST_OK;
}

uint64_t idx_ivfpq_searcher_exact(const struct idx_ivfpq_searcher *s)
{
    return s->exact;
}

struct idx_ivfpq_searcher *idx_ivfpq_searcher_new(const struct idx_ivfpq *ix)
{
    struct idx_ivfpq_searcher *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->ix = ix;
    s->qterm = malloc((size_t)ix->m * ix->ksub * sizeof(float));
    s->qc = malloc((size_t)ix->dim * sizeof(float));
    s->qf = malloc((size_t)ix->dim * sizeof(float));
    s->lut = calloc((size_t)ix->m2 * 16 + 32, 1);
    s->qtab = malloc((size_t)ix->m * 16 * sizeof(float));
    s->cdots = malloc((size_t)ix->nlist * sizeof(float));
    s->k = st_kernels();
    s->coarse = malloc(ix->nlist * sizeof(*s->coarse));
    if (!s->qterm || !s->qc || !s->qf || !s->lut || !s->qtab || !s->cdots || !s->coarse) {
        idx_ivfpq_searcher_free(s);
        return NULL;
    }
    return s;
}

void idx_ivfpq_searcher_free(struct idx_ivfpq_searcher *s)
{
    if (s == NULL)
        return;
    free(s->qterm);
    free(s->qc);
    free(s->lut);
    free(s->qtab);
    free(s->qf);
    free(s->cdots);
    free(s->bdots);
    free(s->bq);
    free(s->bterm);
    free(s->bqf);
    free(s->btmp);
    free(s->coarse);
    free(s->cand);
    free(s->ctmp);
    free(s->off);
    free(s->lbh);
    free(s->kth);
    free(s);
}

/*
 * The best `keep` candidates of a query's scan, as a reservoir: candidates are appended until
 * there are 2 * keep, then the best keep are selected (expected O(keep)) and the worst of them
 * becomes the bar (thr) a candidate must beat to be appended. A heap paid a sift for every
 * candidate that entered (a tenth of a 4-bit search's time).
 */
struct scan {
    struct st_hit *cand; /* room for 2 * keep */
    struct st_hit *tmp;  /* as many: the selection's scratch */
    size_t nk, keep;
    float thr; /* INFINITY until the first selection */
    st_filter_fn filter;
    void *fctx;
    uint32_t off; /* added to the ids of the index scanned (its first id among the members) */
};

/* cand[0..keep) the best keep of the nk (nk > keep), thr the worst of them. */
static void scan_select(struct scan *sc)
{
    st_hits_select(sc->cand, sc->nk, sc->keep, sc->tmp);
    sc->nk = sc->keep;
    float w = sc->cand[0].dist;
    for (size_t i = 1; i < sc->keep; i++)
        w = sc->cand[i].dist > w ? sc->cand[i].dist : w;
    sc->thr = w;
}

static inline void consider(struct scan *sc, uint32_t id, float d)
{
    if (!(d < sc->thr)) /* also a NaN estimate (overflowing inputs): no candidate */
        return;
    if (sc->filter != NULL && !sc->filter(sc->fctx, id))
        return;
    sc->cand[sc->nk++] = (struct st_hit){id + sc->off, d};
    if (sc->nk == 2 * sc->keep)
        scan_select(sc);
}

/* One 8-bit code's table sum: four independent sums (one chain would wait on every add's
 * latency), j = 0, 4, 8, ... into the first, and so on; t steps a sub-quantizer's 256 entries
 * at a time, so each lookup is a load and an add with the code as the index. */
static inline float scan8_sum(const uint8_t *code, const float *t, uint32_t m)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint32_t j = 0;
    for (; j + 4 <= m; j += 4, t += 4 * 256) {
        s0 += t[code[j]];
        s1 += t[256 + code[j + 1]];
        s2 += t[512 + code[j + 2]];
        s3 += t[768 + code[j + 3]];
    }
    for (; j < m; j++, t += 256)
        s0 += t[code[j]];
    return (s0 + s1) + (s2 + s3);
}

/* Scans a list's 8-bit codes with the query's float table; base = the probe's coarse term.
 * (Two codes summed side by side, eight sums in flight, were no faster: measured.) */
static void scan8(struct idx_ivfpq_searcher *s, const struct ivf_list *l, float base,
                  struct scan *sc)
{
    uint32_t m = s->ix->m;
    assert(s->ix->ksub == 256);
    const float *t = s->tab;
    const float *vn = per_vector_terms(s->ix) ? l->vn : NULL;
    assert(!per_vector_terms(s->ix) || vn != NULL); /* derive_vn ran: lists scanned are not empty */
    for (uint32_t e = 0; e < l->n; e++) {
        const uint8_t *code = l->codes + (size_t)e * m;
        if (e + 1 < l->n)
            __builtin_prefetch(code + m);
        float d = scan8_sum(code, t, m);
        consider(sc, l->ids[e], base + (vn != NULL ? vn[e] + d : d));
    }
}

/* Scans a list's 4-bit blocks with the query's quantized table; candidates get float
 * estimates (base + vn + sum / scale). One kernel threshold a block, from its least vn. */
static void scan4(struct idx_ivfpq_searcher *s, const struct ivf_list *l, float base,
                  struct scan *sc)
{
    const struct idx_ivfpq *ix = s->ix;
    float scale = s->scale, inv = 1.0f / scale;
    base += s->bias;
    const float *vn = per_vector_terms(ix) ? l->vn : NULL;
    assert(!per_vector_terms(ix) || (vn != NULL && l->vmin != NULL));
    st_pq4_fn block = s->k->pq4_block;
    uint16_t acc[PQ4_BLOCK];
    float est[PQ4_BLOCK];
    size_t bstride = (size_t)16 * ix->m2;
    for (uint32_t b = 0; b * PQ4_BLOCK < l->n; b++) {
        /* Only sums that can beat the worst kept candidate come out of the kernel's mask. */
        uint32_t thr = UINT16_MAX, end = l->n - b * PQ4_BLOCK;
        if (sc->thr < INFINITY) {
            float t = (sc->thr - base - (vn != NULL ? l->vmin[b] : 0)) * scale + 1;
            if (t < 0)
                continue;
            thr = t < UINT16_MAX ? (uint32_t)t : UINT16_MAX;
        }
        uint32_t mask = block(l->codes + b * bstride, s->lut, ix->m2, (uint16_t)thr, acc);
        if (end < PQ4_BLOCK)
            mask &= (1u << end) - 1; /* the zero codes past the list's end */
        if (vn != NULL && mask != 0) {
            /* The block's threshold used its least vn: each vector's own estimate, 32 at a
             * time (a loop the compiler vectorizes), held against the worst kept before any
             * of them costs a call; consider() gets the very same values (no second sum that
             * a contracted multiply-add could round otherwise). */
            const float *v = vn + (size_t)b * PQ4_BLOCK;
            for (uint32_t i = 0; i < PQ4_BLOCK; i++)
                est[i] = base + (v[i] + acc[i] * inv);
            if (sc->thr < INFINITY) {
                float worst = sc->thr;
                uint32_t own = 0;
                for (uint32_t i = 0; i < PQ4_BLOCK; i++)
                    own |= (uint32_t)(est[i] < worst) << i;
                mask &= own;
            }
        }
        for (; mask != 0; mask &= mask - 1) {
            uint32_t i = (uint32_t)__builtin_ctz(mask);
            consider(sc, l->ids[b * PQ4_BLOCK + i], vn != NULL ? est[i] : base + acc[i] * inv);
        }
    }
}

/* Starts fetching the first 8 cache lines of a raw row of row bytes. (Always inlined: a call
 * to a function of prefetches alone can be deleted; idx_hnsw.c, node_prefetch.) */
static inline __attribute__((always_inline)) void prefetch_head(const float *v, size_t row)
{
    const char *p = (const char *)v;
    for (size_t off = 0; off < row && off < 8 * 64; off += 64)
        __builtin_prefetch(p + off);
}

/* Room for keep candidates; false when out of memory. */
static bool cand_room(struct idx_ivfpq_searcher *s, size_t keep)
{
    if (keep <= s->cand_cap)
        return true;
    struct st_hit *c = realloc(s->cand, keep * sizeof(*c));
    if (c == NULL)
        return false;
    s->cand = c;
    if ((c = realloc(s->ctmp, keep * sizeof(*c))) == NULL)
        return false;
    s->ctmp = c;
    struct lb_item *h = realloc(s->lbh, keep * sizeof(*h));
    if (h == NULL)
        return false;
    s->lbh = h;
    struct st_hit *kth = realloc(s->kth, keep * sizeof(*kth));
    if (kth == NULL)
        return false;
    s->kth = kth;
    s->cand_cap = keep;
    return true;
}

/* The member holding candidate id (ids run through the members: off[i] is member i's first). */
static size_t member_of(const uint32_t *off, size_t nmem, uint32_t id);

/* The raw row of candidate id among the members. */
static const float *raw_row(const struct idx_ivfpq_member *mem, const uint32_t *off, size_t nmem,
                            uint32_t id, uint32_t dim)
{
    size_t w = member_of(off, nmem, id);
    return mem[w].raw + (size_t)(id - off[w]) * dim;
}

/* The member holding candidate id (ids run through the members: off[i] is member i's first). */
static size_t member_of(const uint32_t *off, size_t nmem, uint32_t id)
{
    size_t lo = 0, hi = nmem;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (off[mid] <= id)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void lb_sift_down(struct lb_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && h[l].lb < h[m].lb)
            m = l;
        if (l + 1 < n && h[l + 1].lb < h[m].lb)
            m = l + 1;
        if (m == i)
            return;
        struct lb_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/*
 * Exact re-ranking of cand[0..nk) where members have re-ranking codes: every candidate's lower
 * bound from its codes (-inf without codes), then exact distances in the bounds' order until
 * the next bound exceeds both the k-th exact distance so far and the caller's bound. A candidate
 * left out has an exact distance beyond the k-th (or the caller's bound): the k best, their
 * distances and order are those of re-ranking all. Returns how many were re-ranked, at
 * cand[0..), with exact distances.
 */
static size_t rerank_refined(struct idx_ivfpq_searcher *s, const float *q, size_t nk, uint32_t k,
                             float bound, const struct idx_ivfpq_member *mem, const uint32_t *off,
                             size_t nmem)
{
    const struct idx_ivfpq *ix = s->ix;
    const struct st_kernels *kn = s->k;
    float qn = ix->metric == ST_METRIC_L2 ? 0 : idx_refine_qnorm(q, ix->dim);
    bool all = false; /* an exact distance was NaN: every candidate re-ranked, as without codes */
    struct lb_item *h = s->lbh;
    /* Each candidate's member once; its codes and terms two ahead in flight while one is
     * summed (a code row is a quarter of a raw row, and as scattered). */
    const struct idx_refine *ref_of[3] = {NULL, NULL, NULL}; /* candidates i, i - 1, i - 2 */
    uint32_t rid_of[3] = {0, 0, 0};
    for (size_t i = 0; i < nk + 2; i++) {
        if (i < nk) {
            uint32_t id = s->cand[i].id;
            size_t w = nmem == 1 ? 0 : member_of(off, nmem, id);
            const struct idx_refine *r = mem[w].refine;
            ref_of[i % 3] = r;
            rid_of[i % 3] = id - off[w];
            if (r != NULL)
                idx_refine_prefetch(r, id - off[w]);
        }
        if (i >= 2) {
            size_t j = i - 2;
            const struct idx_refine *r = ref_of[j % 3];
            h[j] = (struct lb_item){r != NULL ? idx_refine_lower(r, kn, q, qn, rid_of[j % 3])
                                              : -INFINITY,
                                    s->cand[j].id};
        }
    }
    for (size_t i = nk / 2; i-- > 0;)
        lb_sift_down(h, nk, i);
    size_t row = (size_t)ix->dim * sizeof(float), nh = nk, m = 0, nkth = 0;
    while (nh > 0) {
        float limit = nkth == k && s->kth[0].dist < bound ? s->kth[0].dist : bound;
        if (!all && h[0].lb > limit)
            break;
        uint32_t id = h[0].id;
        h[0] = h[--nh];
        lb_sift_down(h, nh, 0);
        const float *v = raw_row(mem, off, nmem, id, ix->dim);
        if (nh > 0)
            prefetch_head(raw_row(mem, off, nmem, h[0].id, ix->dim), row);
        float d = ix->dist(q, v, ix->dim);
        s->cand[m++] = (struct st_hit){id, d};
        if (d != d)
            all = true; /* NaN orders with nothing: no k-th to stop at */
        else
            st_topk_push(s->kth, &nkth, k, (struct st_hit){id, d});
    }
    s->exact += m;
    return m;
}

/* The rows a table is computed from: nq centred queries (dim apart) times the table's factor,
 * -2 (L2) or -1 (inner product). A power of two: the products and sums are those of scaling
 * each dot product afterwards, bit for bit. */
static void table_query(const struct idx_ivfpq *ix, const float *qt, size_t nq, float *qf)
{
    float f = ix->metric == ST_METRIC_L2 ? -2.0f : -1.0f;
    for (size_t i = 0; i < nq * ix->dim; i++)
        qf[i] = f * qt[i];
}

/* One query q (qt: q - mu for L2 (centred), q for inner product), its centroid dot products
 * cdots[c] = <qt, ct's c> already computed, over the nmem indexes mem of s's quantizer (their
 * ids offset by off[]) as one index: each probed list scanned in every member, one candidate
 * set, the best keep re-ranked from each member's own raw vectors. which (NULL with one
 * member): the member of each hit. */
static size_t search_one(struct idx_ivfpq_searcher *s, const float *q, const float *qt,
                         const float *cdots, const float *tab, uint32_t k, uint32_t nprobe,
                         size_t keep, const struct idx_ivfpq_member *mem, const uint32_t *off,
                         size_t nmem, float bound, struct st_hit *out, uint32_t *which)
{
    const struct idx_ivfpq *ix = s->ix;
    /* Coarse: the nprobe closest lists; L2 from mu: ||q - c||^2 = ||q - mu||^2 + ||c - mu||^2
     * - 2<q - mu, c - mu>. */
    float qn = ix->metric == ST_METRIC_L2 ? s->k->dot(qt, qt, ix->dim) : 0;
    size_t nc = 0;
    for (uint32_t c = 0; c < ix->nlist; c++) {
        float d = ix->metric == ST_METRIC_L2 ? qn + ix->cn[c] - 2 * cdots[c] : -cdots[c];
        if (ix->metric == ST_METRIC_L2 && !(d > 0))
            d = 0; /* rounding below 0, or NaN from overflowing inputs: as before */
        if (nc == nprobe && d >= s->coarse[0].dist)
            continue; /* cannot enter the heap: spare the call */
        st_topk_push(s->coarse, &nc, nprobe, (struct st_hit){c, d});
    }
    st_hits_sort(s->coarse, nc);
    /* The query's table: -2<q_j - mu_j, cb> (L2) or -<q_j, cb> (inner product), at 4 bits
     * also quantized, once for every list probed; the factor goes into the query (dim
     * multiplies, not m * ksub: table_query). */
    if (tab != NULL) {
        s->tab = tab; /* computed with the batch's (table_batch) */
    } else {
        table_query(ix, qt, 1, s->qf);
        s->k->dots_blocks(s->qf, cbt_of(ix, 0), ix->dsub, ix->ksub, ix->m, s->qterm);
        s->tab = s->qterm;
    }
    if (ix->nbits == 4)
        s->scale = s->k->pq4_lut(s->tab, NULL, NULL, 0, ix->m, ix->m2, s->qtab, s->lut, &s->bias);
    struct scan sc = {s->cand, s->ctmp, 0, keep, INFINITY, NULL, NULL, 0};
    for (size_t p = 0; p < nc; p++) {
        uint32_t li = s->coarse[p].id;
        if (nmem > 1) /* the members' lists are apart in memory: their headers in flight */
            __builtin_prefetch(&mem[0].ix->lists[li]);
        for (size_t i = 0; i < nmem; i++) {
            const struct ivf_list *l = &mem[i].ix->lists[li];
            if (i + 1 < nmem) {
                /* The next member's list header, and the heads of the arrays of the one after
                 * (whose header the previous step put in flight). */
                __builtin_prefetch(&mem[i + 1].ix->lists[li]);
                if (i + 2 < nmem)
                    __builtin_prefetch(&mem[i + 2].ix->lists[li]);
                const struct ivf_list *nl = &mem[i + 1].ix->lists[li];
                __builtin_prefetch(nl->codes);
                __builtin_prefetch(nl->ids);
                __builtin_prefetch(nl->vn);
                __builtin_prefetch(nl->vmin);
            }
            if (l->n == 0)
                continue;
            sc.filter = mem[i].filter;
            sc.fctx = mem[i].fctx;
            sc.off = off[i];
            /* ||q - c||^2 (L2) or -<q, c> (inner product) */
            if (ix->nbits == 8)
                scan8(s, l, s->coarse[p].dist, &sc);
            else
                scan4(s, l, s->coarse[p].dist, &sc);
        }
    }
    if (sc.nk > keep)
        scan_select(&sc);
    size_t nk = sc.nk;
    bool refined = false;
    for (size_t i = 0; keep > k && i < nmem && !refined; i++)
        refined = mem[i].refine != NULL && mem[i].raw != NULL;
    if (refined) {
        nk = rerank_refined(s, q, nk, k, bound, mem, off, nmem);
    } else if (keep > k) {
        /* Exact re-ranking from the raw vectors. */
        /* The candidates' rows are scattered: start fetching the one two ahead while this one
         * is summed (its first 8 lines; the hardware prefetcher follows the stream). Measured
         * on Fashion-MNIST (3 KiB rows, 100 candidates): 2 ahead x 8 lines beat 1 x 16 by
         * ~8%, none by ~12%; whole rows only fill the line-fill buffers. */
        size_t row = (size_t)ix->dim * sizeof(float);
#define RAW_ROW(c)                                                                                 \
    (nmem == 1 ? mem[0].raw + (size_t)(c).id * ix->dim : raw_row(mem, off, nmem, (c).id, ix->dim))
        for (size_t i = 0; i < nk && i < 2; i++)
            prefetch_head(RAW_ROW(s->cand[i]), row);
        for (size_t i = 0; i < nk; i++) {
            if (i + 2 < nk)
                prefetch_head(RAW_ROW(s->cand[i + 2]), row);
            s->cand[i].dist = ix->dist(q, RAW_ROW(s->cand[i]), ix->dim);
        }
        s->exact += nk;
#undef RAW_ROW
    }
    st_hits_sort(s->cand, nk);
    size_t n = nk < k ? nk : k;
    /* Beyond the bound: of no use to the caller (ties are kept). */
    while (n > 0 && s->cand[n - 1].dist > bound)
        n--;
    for (size_t i = 0; i < n; i++) {
        size_t w = nmem == 1 ? 0 : member_of(off, nmem, s->cand[i].id);
        out[i] = (struct st_hit){s->cand[i].id - off[w], s->cand[i].dist};
        if (which != NULL)
            which[i] = (uint32_t)w;
    }
    return n;
}

/* nprobe clamped to [1, nlist]. */
static uint32_t clamp_nprobe(const struct idx_ivfpq *ix, uint32_t nprobe)
{
    return nprobe == 0 ? 1 : nprobe > ix->nlist ? ix->nlist : nprobe;
}

size_t idx_ivfpq_search(struct idx_ivfpq_searcher *s, const float *q, uint32_t k, uint32_t nprobe,
                        uint32_t rerank, const float *raw, st_filter_fn filter, void *fctx,
                        struct st_hit *out)
{
    return idx_ivfpq_search_bound(s, q, k, nprobe, rerank, raw, INFINITY, filter, fctx, out);
}

size_t idx_ivfpq_search_bound(struct idx_ivfpq_searcher *s, const float *q, uint32_t k,
                              uint32_t nprobe, uint32_t rerank, const float *raw, float bound,
                              st_filter_fn filter, void *fctx, struct st_hit *out)
{
    const struct idx_ivfpq *ix = s->ix;
    size_t keep = raw != NULL && rerank > k ? rerank : k;
    if (k == 0 || ix->n == 0 || !cand_room(s, 2 * keep))
        return 0;
    /* All centroid dot products in one pass over the transposed centroids. */
    const float *qt = centred(q, 1, ix->dim, ix->dim, ix->mu, s->qc); /* mu: L2 only */
    s->k->dots_t(qt, ix->ct, ix->dim, ix->nlist, s->cdots);
    struct idx_ivfpq_member one = {ix, raw, filter, fctx, raw != NULL ? s->refine : NULL};
    static const uint32_t off0 = 0;
    return search_one(s, q, qt, s->cdots, NULL, k, clamp_nprobe(ix, nprobe), keep, &one, &off0, 1,
                      bound, out, NULL);
}

int idx_ivfpq_search_shared(struct idx_ivfpq_searcher *s, const struct idx_ivfpq_member *mem,
                            size_t nmem, const float *q, uint32_t k, uint32_t nprobe,
                            uint32_t rerank, float bound, struct st_hit *out, uint32_t *which,
                            size_t *n)
{
    const struct idx_ivfpq *ix = s->ix;
    *n = 0;
    bool raw = true;
    uint64_t total = 0;
    for (size_t i = 0; i < nmem; i++) {
        /* The query's coarse step and table serve every member: the caller has seen that the
         * quantizers are the same (idx_ivfpq_same_quantizer: byte for byte, too slow for every
         * query); the shape, which every scan's reads depend on, is checked here. */
        const struct idx_ivfpq *x = mem[i].ix;
        if (x->qid != ix->qid || x->dim != ix->dim || x->nlist != ix->nlist || x->m != ix->m ||
            x->nbits != ix->nbits || x->metric != ix->metric)
            return ST_EINVAL;
        raw = raw && mem[i].raw != NULL;
        total += mem[i].ix->n;
        if (mem[i].refine != NULL && !refine_fits(x, mem[i].refine))
            return ST_EINVAL;
    }
    size_t keep = raw && rerank > k ? rerank : k;
    if (total > UINT32_MAX)
        return ST_EINVAL;
    if (k == 0 || total == 0)
        return ST_OK;
    if (!cand_room(s, 2 * keep))
        return ST_ENOMEM;
    if (nmem > s->off_cap) {
        uint32_t *o = realloc(s->off, nmem * sizeof(*o));
        if (o == NULL)
            return ST_ENOMEM;
        s->off = o;
        s->off_cap = nmem;
    }
    for (size_t i = 0, at = 0; i < nmem; at += mem[i].ix->n, i++)
        s->off[i] = (uint32_t)at;
    const float *qt = centred(q, 1, ix->dim, ix->dim, ix->mu, s->qc);
    s->k->dots_t(qt, ix->ct, ix->dim, ix->nlist, s->cdots);
    *n = search_one(s, q, qt, s->cdots, NULL, k, clamp_nprobe(ix, nprobe), keep, mem, s->off, nmem,
                    bound, out, which);
    return ST_OK;
}

/* The 8-bit tables of nt <= TAB_BATCH queries (rows of qt, dim apart, centred as search_one
 * takes them) into bterm, a table of m * ksub each: dots_tn over the nt queries a sub-quantizer
 * at a time. */
static void table_batch(struct idx_ivfpq_searcher *s, const float *qt, size_t nt)
{
    const struct idx_ivfpq *ix = s->ix;
    table_query(ix, qt, nt, s->bqf);
    size_t tsz = (size_t)ix->m * ix->ksub;
    for (uint32_t j = 0; j < ix->m; j++) {
        s->k->dots_tn(s->bqf + (size_t)j * ix->dsub, nt, ix->dim, cbt_of(ix, j), ix->dsub, ix->ksub,
                      s->btmp);
        for (size_t r = 0; r < nt; r++)
            memcpy(s->bterm + r * tsz + (size_t)j * ix->ksub, s->btmp + r * ix->ksub,
                   ix->ksub * sizeof(float));
    }
}

int idx_ivfpq_search_batch(struct idx_ivfpq_searcher *s, const float *qs, size_t nq, uint32_t k,
                           uint32_t nprobe, uint32_t rerank, const float *raw, st_filter_fn filter,
                           void *fctx, struct st_hit *out, size_t *counts)
{
    const struct idx_ivfpq *ix = s->ix;
    size_t keep = raw != NULL && rerank > k ? rerank : k;
    if (k == 0 || ix->n == 0) {
        for (size_t i = 0; i < nq; i++)
            counts[i] = 0;
        return ST_OK;
    }
    if (!cand_room(s, 2 * keep))
        return ST_ENOMEM;
    if (s->bdots == NULL &&
        (s->bdots = malloc((size_t)NEAREST_BATCH * ix->nlist * sizeof(float))) == NULL)
        return ST_ENOMEM;
    if (s->bq == NULL && ix->mu != NULL &&
        (s->bq = malloc((size_t)NEAREST_BATCH * ix->dim * sizeof(float))) == NULL)
        return ST_ENOMEM;
    bool tables = ix->nbits == 8; /* 4-bit tables are cheap: one per query, in search_one */
    if (tables && s->bterm == NULL) {
        s->bterm = malloc((size_t)TAB_BATCH * ix->m * ix->ksub * sizeof(float));
        s->bqf = malloc((size_t)TAB_BATCH * ix->dim * sizeof(float));
        s->btmp = malloc((size_t)TAB_BATCH * ix->ksub * sizeof(float));
        if (s->bterm == NULL || s->bqf == NULL || s->btmp == NULL) {
            free(s->bterm);
            free(s->bqf);
            free(s->btmp);
            s->bterm = s->bqf = s->btmp = NULL;
            return ST_ENOMEM;
        }
    }
    nprobe = clamp_nprobe(ix, nprobe);
    for (size_t i = 0; i < nq; i += NEAREST_BATCH) {
        size_t nb = nq - i < NEAREST_BATCH ? nq - i : NEAREST_BATCH;
        /* The coarse products of the whole batch: each centroid column loaded serves them all
         * (summed in the same order as the one-query kernel: the same lists are probed). */
        const float *qt = centred(qs + i * ix->dim, (uint32_t)nb, ix->dim, ix->dim, ix->mu, s->bq);
        s->k->dots_tn(qt, nb, ix->dim, ix->ct, ix->dim, ix->nlist, s->bdots);
        struct idx_ivfpq_member one = {ix, raw, filter, fctx, raw != NULL ? s->refine : NULL};
        static const uint32_t off0 = 0;
        size_t tsz = (size_t)ix->m * ix->ksub;
        for (size_t b = 0; b < nb; b++) {
            /* 8 bits: the tables of TAB_BATCH queries at a time (table_batch), the same bits
             * as one query's (dots_tn equals dots_t column for column). */
            size_t tb = b % TAB_BATCH;
            if (tables && tb == 0)
                table_batch(s, qt + b * ix->dim, nb - b < TAB_BATCH ? nb - b : TAB_BATCH);
            counts[i + b] =
                search_one(s, qs + (i + b) * ix->dim, qt + b * ix->dim, s->bdots + b * ix->nlist,
                           tables ? s->bterm + tb * tsz : NULL, k, nprobe, keep, &one, &off0, 1,
                           INFINITY, out + (i + b) * k, NULL);
        }
    }
    return ST_OK;
}

/* ---- files --------------------------------------------------------------------------------- */

int idx_ivfpq_save(const struct idx_ivfpq *ix, const char *path, struct st_err *err)
{
    struct idx_file_out o;
    struct st_hash_stream *h1 = NULL, *h2 = NULL;
    int rc = idx_file_begin(&o, path, err);
    if (rc == ST_OK && ((h1 = st_hash_stream_new()) == NULL || (h2 = st_hash_stream_new()) == NULL))
        rc = ST_ENOMEM;
    if (rc != ST_OK)
        goto out;
    struct store_file *f = o.f;
    uint8_t hd[IDX_IVFPQ_HEADER] = {0};
    memcpy(hd, IDX_IVFPQ_MAGIC, 8);
    st_put_le32(hd + 8, IDX_IVFPQ_VERSION);
    st_put_le32(hd + 12, ix->dim);
    st_put_le32(hd + 16, ix->nlist);
    st_put_le32(hd + 20, ix->m);
    st_put_le32(hd + 24, ix->nbits);
    st_put_le32(hd + 28, (uint32_t)ix->metric);
    st_put_le32(hd + 32, ix->n);
    uint64_t fr;
    memcpy(&fr, &ix->fit_ref, sizeof(fr));
    st_put_le64(hd + 36, fr);
    st_put_le32(hd + 60, st_checksum32(hd, 60));
    size_t cb = (size_t)ix->nlist * ix->dim * 4, kb = (size_t)ix->m * ix->ksub * ix->dsub * 4;
    st_hash_stream_update(h1, ix->centroids, cb);
    st_hash_stream_update(h1, ix->codebooks, kb);
    if ((rc = store_fs_write(f, hd, sizeof(hd), "idx.ivfpq.write")) != ST_OK ||
        (rc = store_fs_write(f, ix->centroids, cb, "idx.ivfpq.write")) != ST_OK ||
        (rc = store_fs_write(f, ix->codebooks, kb, "idx.ivfpq.write")) != ST_OK)
        goto out;
    for (uint32_t i = 0; i < ix->nlist; i++) {
        uint8_t b[4];
        st_put_le32(b, ix->lists[i].n);
        st_hash_stream_update(h2, b, 4);
        if ((rc = store_fs_write(f, b, 4, "idx.ivfpq.write")) != ST_OK)
            goto out;
    }
    for (uint32_t i = 0; i < ix->nlist; i++) {
        const struct ivf_list *l = &ix->lists[i];
        size_t cl = code_bytes(ix, l->n), pad = (4 - cl % 4) % 4;
        static const uint8_t zero[4];
        st_hash_stream_update(h2, l->ids, (size_t)l->n * 4);
        st_hash_stream_update(h2, l->codes, cl);
        st_hash_stream_update(h2, zero, pad);
        if ((l->n > 0 &&
             ((rc = store_fs_write(f, l->ids, (size_t)l->n * 4, "idx.ivfpq.write")) != ST_OK ||
              (rc = store_fs_write(f, l->codes, cl, "idx.ivfpq.write")) != ST_OK)) ||
            (pad > 0 && (rc = store_fs_write(f, zero, pad, "idx.ivfpq.write")) != ST_OK))
            goto out;
    }
    uint8_t ft[IDX_IVFPQ_FOOTER] = {0};
    memcpy(ft, IDX_IVFPQ_FOOTER_MAGIC, 8);
    st_put_le32(ft + 8, (uint32_t)st_hash_stream_digest(h1));
    st_put_le32(ft + 12, (uint32_t)st_hash_stream_digest(h2));
    st_put_le64(ft + 16, f->size + IDX_IVFPQ_FOOTER);
    st_put_le32(ft + 28, st_checksum32(ft, 28));
    rc = store_fs_write(f, ft, sizeof(ft), "idx.ivfpq.write");
out:
    rc = idx_file_finish(&o, rc, err);
    st_hash_stream_free(h1);
    st_hash_stream_free(h2);
    return rc;
}

int idx_ivfpq_load(const char *path, struct idx_ivfpq **out, struct st_err *err)
{
    *out = NULL;
    void *map;
    size_t len;
    static const struct idx_file_kind kind = {IDX_IVFPQ_MAGIC, IDX_IVFPQ_FOOTER_MAGIC,
                                              IDX_IVFPQ_VERSION, 16, IDX_IVFPQ_VERSION};
    int mrc = idx_file_open(path, &kind, &map, &len, err);
    if (mrc != ST_OK)
        return mrc;
    uint8_t *m = map;
    const uint8_t *ft = m + len - IDX_IVFPQ_FOOTER;
    struct idx_ivfpq *ix = calloc(1, sizeof(*ix));
    uint8_t *seen = NULL; /* ids met so far, a bit each */
    int rc = ST_OK;
    if (ix == NULL) {
        munmap(map, len);
        return ST_ENOMEM;
    }
    ix->map = map;
    ix->map_len = len;
    ix->nbits = st_get_le32(m + 24);
    if (ix->nbits != 8 && ix->nbits != 4) {
        rc = st_err_set(err, ST_EUNSUPP, "%s: %u-bit codes not supported", path, ix->nbits);
        goto fail;
    }
    ix->dim = st_get_le32(m + 12);
    ix->nlist = st_get_le32(m + 16);
    ix->m = st_get_le32(m + 20);
    ix->metric = (enum st_metric)st_get_le32(m + 28);
    ix->n = st_get_le32(m + 32);
    uint64_t fr = st_get_le64(m + 36);
    memcpy(&ix->fit_ref, &fr, sizeof(fr));
    if (!isfinite(ix->fit_ref) || ix->fit_ref < 0) { /* a build writes 0 or a positive value */
        rc = idx_file_corrupt(err, path, 36, "fit reference is not a finite positive number");
        goto fail;
    }
    /* The file is untrusted: sizes are computed without overflow and bounded by the body
     * before anything is allocated or mapped by them. */
    size_t body = len - IDX_IVFPQ_HEADER - IDX_IVFPQ_FOOTER;
    uint64_t cb = 0, kb = 0;
    if (ix->dim == 0 || ix->m == 0 || ix->dim % ix->m != 0 || ix->nlist == 0 ||
        ix->metric > ST_METRIC_COSINE || (ix->nbits == 4 && ix->m > PQ4_M_MAX) ||
        __builtin_mul_overflow((uint64_t)ix->nlist, (uint64_t)ix->dim * 4, &cb) || cb > body ||
        (kb = ((uint64_t)ix->dim * 4) << ix->nbits) > body - cb ||
        (uint64_t)ix->nlist * 4 > body - cb - kb) {
        rc = idx_file_corrupt(err, path, 12, "header values out of range");
        goto fail;
    }
    ix->dsub = ix->dim / ix->m;
    ix->ksub = 1u << ix->nbits;
    ix->m2 = ix->nbits == 4 ? (ix->m + 1) & ~1u : ix->m;
    uint8_t *p = m + IDX_IVFPQ_HEADER, *end = m + len - IDX_IVFPQ_FOOTER;
    if (st_checksum32(p, cb + kb) != st_get_le32(ft + 8)) {
        rc = idx_file_corrupt(err, path, IDX_IVFPQ_HEADER, "centroid/codebook checksum mismatch");
        goto fail;
    }
    if (st_checksum32(p + cb + kb, (size_t)(end - (p + cb + kb))) != st_get_le32(ft + 12)) {
        rc = idx_file_corrupt(err, path, IDX_IVFPQ_HEADER + cb + kb, "lists checksum mismatch");
        goto fail;
    }
    ix->centroids = (float *)(void *)p;
    ix->codebooks = (float *)(void *)(p + cb);
    const uint8_t *sizes = p + cb + kb;
    uint8_t *q = p + cb + kb + (size_t)ix->nlist * 4;
    ix->lists = calloc(ix->nlist, sizeof(*ix->lists));
    if (ix->lists == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    uint64_t total = 0;
    /* Every id once: a list naming one id twice would hide others (and fill a top-k with
     * copies). Each id takes 4 bytes of the file: n is bounded by it before sizing by it. */
    if ((uint64_t)ix->n * 4 > (uint64_t)(end - q)) {
        rc = idx_file_corrupt(err, path, 32, "more vectors than the file has room for");
        goto fail;
    }
    seen = calloc((size_t)ix->n / 8 + 1, 1);
    if (seen == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    for (uint32_t i = 0; i < ix->nlist; i++) {
        uint32_t cnt = st_get_le32(sizes + (size_t)i * 4);
        /* An entry takes at least its 4-byte id: bound cnt before sizing codes by it. */
        size_t left = (size_t)(end - q), cl = 0, need = 0;
        uint64_t units = ix->nbits == 8 ? cnt : (cnt + (uint64_t)PQ4_BLOCK - 1) / PQ4_BLOCK;
        if (cnt > left / 4 ||
            __builtin_mul_overflow(units, ix->nbits == 8 ? ix->m : 16 * (uint64_t)ix->m2, &cl) ||
            cl > left || cl != code_bytes(ix, cnt) ||
            (need = (size_t)cnt * 4 + cl + (4 - cl % 4) % 4) > left) {
            rc = idx_file_corrupt(err, path, (uint64_t)(q - m), "list past the end");
            goto fail;
        }
        ix->lists[i] = (struct ivf_list){
            .ids = (uint32_t *)(void *)q, .codes = q + (size_t)cnt * 4, .n = cnt, .cap = cnt};
        for (uint32_t e = 0; e < cnt; e++) {
            uint32_t id = ix->lists[i].ids[e];
            if (id >= ix->n || (seen[id / 8] >> (id % 8) & 1) != 0) {
                rc = idx_file_corrupt(err, path, (uint64_t)(q - m) + (uint64_t)e * 4,
                                      id >= ix->n ? "id out of range" : "id listed twice");
                goto fail;
            }
            seen[id / 8] |= (uint8_t)(1u << (id % 8));
        }
        q += need;
        total += cnt;
    }
    free(seen);
    seen = NULL;
    if (q != end || total != ix->n) {
        rc = idx_file_corrupt(err, path, (uint64_t)(q - m), "list sizes disagree with n");
        goto fail;
    }
    ix->dist = st_metric_fn(st_kernels(), ix->metric);
    if ((rc = prepare(ix)) != ST_OK || (rc = derive_vn(ix)) != ST_OK)
        goto fail;
    *out = ix;
    return ST_OK;
fail:
    free(seen);
    idx_ivfpq_free(ix);
    return rc;
}
