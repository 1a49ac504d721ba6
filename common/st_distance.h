/*
 * st_distance.h — distance kernels with run-time dispatch, and exact top-k scans.
 *
 * "Distance" is always smaller-is-closer: squared L2 for l2, -dot for ip and for cosine
 * (vectors are normalised at ingest, so cosine = 1 + (-dot) up to a constant: callers add 1
 * when reporting). Kernels exist for AVX-512F, AVX2+FMA and plain C; st_kernels() picks the
 * best the CPU supports once, and every variant gives the same result up to float rounding.
 */
#ifndef ST_DISTANCE_H
#define ST_DISTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

enum st_metric { ST_METRIC_L2 = 0, ST_METRIC_IP = 1, ST_METRIC_COSINE = 2 };

typedef float (*st_dist_fn)(const float *a, const float *b, size_t dim);

/*
 * 4-bit PQ fast-scan over one block of 32 codes: sums, for each of the 32 vectors, the
 * m2 (even) 8-bit table entries its 4-bit codes select. Block layout: for sub-quantizer j,
 * 16 bytes at codes + 16*j; byte i holds vector i's code in the low nibble and vector i+16's
 * in the high nibble. lut: 16 bytes per sub-quantizer, every entry at most 127 (the SIMD
 * kernels sum two in a byte), and m2 times the largest entry at most 65535 (each sum fits 16
 * bits): pq4_lut's tables are so for any m2. Returns the mask of the vectors whose sum is
 * <= thr (bit i: vector i).
 */
typedef uint32_t (*st_pq4_fn)(const uint8_t *codes, const uint8_t *lut, size_t m2, uint16_t thr,
                              uint16_t out[32]);

/* out[c] = <x, column c of ct> for c < k, where ct is d rows of k floats (centroids
 * transposed): one query against many short centroids (PQ tables, k-means assignment). */
typedef void (*st_dots_fn)(const float *x, const float *ct, size_t d, size_t k, float *out);

/* nb dots_t calls at once, block b's query x + b d, its centroids ct + b d k and its k sums
 * out + b k (a PQ table: one block a sub-quantizer), bit for bit as those calls give them.
 * Where k is small (4-bit tables: 16) blocks run side by side, so that their chains of fused
 * multiply-adds overlap instead of each waiting on the last. */
typedef void (*st_dots_blocks_fn)(const float *x, const float *ct, size_t d, size_t k, size_t nb,
                                  float *out);

/* out[r * k + c] = <row r of x, column c of ct> for r < nx, c < k; rows of x are ldx floats
 * apart. Many queries or points against the same transposed centroids (k-means assignment,
 * batched coarse quantization): each loaded column block serves several rows. Within one
 * kernel set each row equals dots_t's result bit for bit. */
typedef void (*st_dots_tn_fn)(const float *x, size_t nx, size_t ldx, const float *ct, size_t d,
                              size_t k, float *out);

/*
 * The 4-bit fast-scan tables: tab = a + b (b may be NULL), m rows of 16 floats, each row
 * shifted to start at 0 and all scaled by one factor so that every entry is at most
 * qmax = min(127, 65535 / m2) (two entries sum in a byte, m2 in u16), rounded into lut (16
 * bytes a row).
 * lo == NULL: the shifts are the exact row minima and the scale comes from the widest row.
 * Otherwise lo[j] is a known lower bound of row j and range an upper bound of every row's
 * (max - lo[j]) — one pass, no reductions, slightly coarser steps.
 * Returns the scale; *bias = the sum of the shifts, so a code's distance is about
 * bias + (sum of its lut entries) / scale. tab: m * 16 floats of scratch.
 */
/* The largest entry of a 4-bit table over m2 sub-quantizers: min(127, 65535 / m2), two entries
 * summed in a byte (the SIMD pq4_block kernels) and m2 of them within 16 bits. */
float st_pq4_qmax(size_t m2);

typedef float (*st_pq4_lut_fn)(const float *a, const float *b, const float *lo, float range,
                               size_t m, size_t m2, float *tab, uint8_t *lut, float *bias);

/* The dot product of unsigned bytes a (scalar-quantized codes) and signed bytes b, exact: every
 * variant gives the same integer. d up to 65,536 (255 * 128 * d fits 31 bits). */
typedef int32_t (*st_dotu8_fn)(const uint8_t *a, const int8_t *b, size_t d);

/* The dot product of 4-bit codes a and signed bytes b, exact: d (a multiple of 64) dimensions
 * in blocks of 64, each block 32 bytes of a whose low nibbles are its dimensions 0..31 and high
 * nibbles 32..63 (b in plain order, d bytes). Any weights: 4 * 15 * 128 fits 16 bits. Reads
 * d / 2 bytes of a. Every variant gives the same integer; d up to 65,536. */
typedef int32_t (*st_dotu4_fn)(const uint8_t *a, const int8_t *b, size_t d);

/* argmin_c norms[c] - 2 dots[c] over c < k (the nearest centroid, dots[c] = <x, c>, norms[c] =
 * ||c||^2): the first least (NaN never least; 0 when no value is below +inf, or k = 0). Every
 * variant gives the same index. k <= UINT32_MAX. */
typedef uint32_t (*st_argmin_fn)(const float *dots, const float *norms, size_t k);

/* Against scalar-quantized bytes: with x~[j] = lo[j] + t[j] * c[j] (each exact in float: the
 * re-ranking codes choose t a power of two and lo a multiple of it, idx_refine.h),
 * sq8_l2sq = sum (q[j] - x~[j])^2 and sq8_dot = sum q[j] x~[j]. Variants differ only by float
 * rounding of the sums. */
typedef float (*st_sq8_fn)(const float *q, const uint8_t *c, const float *lo, const float *t,
                           size_t d);

/* The index of the first of v[0..n) that is not finite (inf or NaN), or n when all are. */
typedef size_t (*st_finite_fn)(const float *v, size_t n);

/* A query against per-dimension scalar-quantization ranges, w[i] = t[i] * (q[i] - lo[i]) (the
 * product rounded once, then the next: no fused multiply-add). sq_absmax: the largest |w[i]| and
 * the largest |w[2i]| + |w[2i + 1]| (a last odd dimension alone), NaN never the largest, 0 for
 * d = 0. sq_round: out[i] = w[i] * inv clamped to [-127, 127] (NaN: -127) and rounded to
 * nearest, ties to even (as lrintf in the default mode). Every variant gives the same floats
 * and bytes. */
typedef void (*st_sq_absmax_fn)(const float *q, const float *lo, const float *t, size_t d,
                                float *max, float *pair_max);
typedef void (*st_sq_round_fn)(const float *q, const float *lo, const float *t, float inv, size_t d,
                               int8_t *out);

struct st_kernels {
    const char *name; /* "avx512", "avx2", "scalar" */
    st_dist_fn l2sq;
    st_dist_fn dot;
    st_pq4_fn pq4_block;
    st_dots_fn dots_t;
    st_dots_blocks_fn dots_blocks;
    st_pq4_lut_fn pq4_lut;
    st_dots_tn_fn dots_tn;
    st_dotu8_fn dotu8; /* VNNI (vpdpbusd) in the avx2 and avx512 sets where the CPU has it */
    /* dotu8 for signed bytes bounded in pairs: exact where |b[2i]| + |b[2i + 1]| <=
     * dotu8_pair_max for every i, any bytes when dotu8_pair_max is 0 (then it is dotu8).
     * Without VNNI it multiplies pairs into 16 bits (vpmaddubsw, no widening: about twice as
     * fast as dotu8 there), so a quantizer that keeps its weights so bounded uses it. Bytes
     * past the bound give a defined, saturated sum. */
    st_dotu8_fn dotu8_paired;
    int dotu8_pair_max;
    st_dotu4_fn dotu4;
    st_finite_fn finite_prefix;
    st_argmin_fn argmin_l2;
    st_sq8_fn sq8_l2sq;
    st_sq8_fn sq8_dot;
    st_sq_absmax_fn sq_absmax; /* a query's side of the HNSW traversal codes (idx_hnsw.c) */
    st_sq_round_fn sq_round;
};

/* The best kernels for this CPU (chosen on first use; thread-safe). */
const struct st_kernels *st_kernels(void);
/* A specific variant, or NULL when this CPU cannot run it. */
const struct st_kernels *st_kernels_scalar(void);
const struct st_kernels *st_kernels_avx2(void);
const struct st_kernels *st_kernels_avx512(void);
/* The same sets without the VNNI byte dot product (tests: the widening and pair kernels run
 * there too; STRATA_KERNELS=avx2-novnni or avx512-novnni chooses them as CPUs without VNNI
 * would). */
const struct st_kernels *st_kernels_avx2_novnni(void);
const struct st_kernels *st_kernels_avx512_novnni(void);

/* The smaller-is-closer distance function for a metric. */
st_dist_fn st_metric_fn(const struct st_kernels *k, enum st_metric m);

/* Scales v to unit length in place (cosine collections); zero vectors stay zero. */
void st_normalize(float *v, size_t dim);

/* Filter hook: return true to keep id (e.g. not deleted, not superseded). */
typedef bool (*st_filter_fn)(void *ctx, uint32_t id);

struct st_hit {
    uint32_t id;
    float dist;
};

/*
 * Exact top-k over n contiguous vectors (row i at base + i*dim): hits sorted closest first,
 * returns how many were written (min(k, n kept by the filter)). filter may be NULL.
 */
/* Bounded max-heap of the best `cap` hits (the root is the worst kept); *n grows to cap. */
void st_topk_push(struct st_hit *heap, size_t *n, size_t cap, struct st_hit x);
/* Sorts hits closest first (ties by id). */
void st_hits_sort(struct st_hit *hits, size_t n);
/* Reorders hits so that the first k are the k smallest by (dist, id), in no order (expected
 * O(n): a reservoir's compaction). No dist may be NaN (it orders with nothing). tmp: scratch of
 * n hits, not overlapping hits. k >= n leaves hits as they are. */
void st_hits_select(struct st_hit *hits, size_t n, size_t k, struct st_hit *tmp);

size_t st_exact_topk(const float *query, const float *base, size_t n, size_t dim, enum st_metric m,
                     size_t k, st_filter_fn filter, void *fctx, struct st_hit *out);

#endif
