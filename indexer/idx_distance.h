/*
 * idx_distance.h — distance kernels with run-time dispatch, and exact top-k scans.
 *
 * "Distance" is always smaller-is-closer: squared L2 for l2, -dot for ip and for cosine
 * (vectors are normalised at ingest, so cosine = 1 + (-dot) up to a constant: callers add 1
 * when reporting). Kernels exist for AVX-512F, AVX2+FMA and plain C; idx_kernels() picks the
 * best the CPU supports once, and every variant gives the same result up to float rounding.
 */
#ifndef IDX_DISTANCE_H
#define IDX_DISTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

enum idx_metric { IDX_L2 = 0, IDX_IP = 1, IDX_COSINE = 2 };

typedef float (*idx_dist_fn)(const float *a, const float *b, size_t dim);

struct idx_kernels {
    const char *name; /* "avx512", "avx2", "scalar" */
    idx_dist_fn l2sq;
    idx_dist_fn dot;
};

/* The best kernels for this CPU (chosen on first use; thread-safe). */
const struct idx_kernels *idx_kernels(void);
/* A specific variant, or NULL when this CPU cannot run it. */
const struct idx_kernels *idx_kernels_scalar(void);
const struct idx_kernels *idx_kernels_avx2(void);
const struct idx_kernels *idx_kernels_avx512(void);

/* The smaller-is-closer distance function for a metric. */
idx_dist_fn idx_metric_fn(const struct idx_kernels *k, enum idx_metric m);

/* Scales v to unit length in place (cosine collections); zero vectors stay zero. */
void idx_normalize(float *v, size_t dim);

/* Filter hook: return true to keep id (e.g. not deleted, not superseded). */
typedef bool (*idx_filter_fn)(void *ctx, uint32_t id);

struct idx_hit {
    uint32_t id;
    float dist;
};

/*
 * Exact top-k over n contiguous vectors (row i at base + i*dim): hits sorted closest first,
 * returns how many were written (min(k, n kept by the filter)). filter may be NULL.
 */
size_t idx_exact_topk(const float *query, const float *base, size_t n, size_t dim,
                      enum idx_metric m, size_t k, idx_filter_fn filter, void *fctx,
                      struct idx_hit *out);

#endif
