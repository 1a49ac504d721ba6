/*
 * idx_refine.h — re-ranking codes: the raw vectors an index re-ranks from, one byte a
 * dimension, so that a re-rank reads a quarter of the bytes and computes exact distances only
 * for the candidates that can still be among the best.
 *
 * Dimension j's value x is coded c = round((x - lo[j]) / t[j]) clamped to 0..255, with t[j] a
 * power of two and lo[j] a multiple of it, so that x~ = lo[j] + t[j] c is exact in float
 * whatever the arithmetic that forms it (the sq8 kernels' FMA or a multiply and an add). Each
 * vector keeps eps >= ||x - x~|| (rounded up) and, for inner products, nrm >= ||x~||. By the
 * triangle inequality a candidate's exact distance is then bounded below from its code
 * distance (idx_refine_lower), with room for the float rounding of both sums: a candidate
 * whose bound exceeds the k-th exact distance found so far cannot be among the k best, so a
 * re-rank in the bounds' order that stops there returns the hits, distances and order of
 * re-ranking every candidate exactly.
 */
#ifndef IDX_REFINE_H
#define IDX_REFINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_distance.h"

struct idx_refine {
    uint32_t n, dim;
    enum st_metric metric;
    uint8_t *codes; /* n rows of dim bytes */
    float *lo, *t;  /* dim each */
    float *eps;     /* n: ||x - x~||, rounded up */
    float *nrm;     /* n: ||x~||, rounded up */
    float gamma;    /* relative rounding allowance of a dim-term float sum */
};

/* Codes for the n rows of dim floats at raw. ST_EINVAL when a value is not finite (no codes:
 * re-rank every candidate exactly), ST_ENOMEM. Caller owns *out (idx_refine_free). */
int idx_refine_build(const float *raw, uint32_t n, uint32_t dim, enum st_metric metric,
                     struct idx_refine **out) ST_WUR;
void idx_refine_free(struct idx_refine *r);
size_t idx_refine_memory(const struct idx_refine *r);

/* Row id's codes. */
static inline const uint8_t *idx_refine_row(const struct idx_refine *r, uint32_t id)
{
    return r->codes + (size_t)id * r->dim;
}

/* Starts fetching what idx_refine_lower reads of row id: its codes and its per-vector terms.
 * Always inlined: a call to a function of prefetches alone can be deleted (idx_hnsw.c,
 * node_prefetch). */
static inline __attribute__((always_inline)) void idx_refine_prefetch(const struct idx_refine *r,
                                                                      uint32_t id)
{
    /* Rows are dim bytes apart, not line-aligned: every line the row touches, its last one
     * included. */
    uintptr_t c = (uintptr_t)idx_refine_row(r, id), end = c + r->dim;
    for (uintptr_t a = c & ~(uintptr_t)63; a < end; a += 64)
        __builtin_prefetch((const void *)a);
    __builtin_prefetch(r->eps + id);
    if (r->metric != ST_METRIC_L2)
        __builtin_prefetch(r->nrm + id);
}

/* ||q|| rounded up (summed in double: no float square of q underflows), for idx_refine_lower. */
float idx_refine_qnorm(const float *q, uint32_t dim);

/*
 * A lower bound of the exact distance (as the metric's st_dist_fn computes it: squared L2, or
 * -<q, x> for inner product and cosine) from q to row id, from its codes; qn =
 * idx_refine_qnorm(q) (inner products; ignored for L2). -INFINITY when nothing is known (sums
 * near overflow, NaN). Holds against the exact distance the metric's kernel computes in any
 * kernel set, subnormal results included.
 */
float idx_refine_lower(const struct idx_refine *r, const struct st_kernels *k, const float *q,
                       float qn, uint32_t id);

#endif
