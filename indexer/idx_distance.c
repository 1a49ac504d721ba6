#include "idx_distance.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- scalar ------------------------------------------------------------------------------- */

static float l2sq_scalar(const float *a, const float *b, size_t d)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        float e0 = a[i] - b[i], e1 = a[i + 1] - b[i + 1];
        float e2 = a[i + 2] - b[i + 2], e3 = a[i + 3] - b[i + 3];
        s0 += e0 * e0;
        s1 += e1 * e1;
        s2 += e2 * e2;
        s3 += e3 * e3;
    }
    for (; i < d; i++) {
        float e = a[i] - b[i];
        s0 += e * e;
    }
    return (s0 + s1) + (s2 + s3);
}

static float dot_scalar(const float *a, const float *b, size_t d)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* ---- AVX2 + FMA --------------------------------------------------------------------------- */

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) static float l2sq_avx2(const float *a, const float *b, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 e1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        s0 = _mm256_fmadd_ps(e0, e0, s0);
        s1 = _mm256_fmadd_ps(e1, e1, s1);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(e0, e0, s0);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) {
        float e = a[i] - b[i];
        s += e * e;
    }
    return s;
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++)
        s += a[i] * b[i];
    return s;
}

/* ---- AVX-512F ----------------------------------------------------------------------------- */

__attribute__((target("avx512f"))) static float l2sq_avx512(const float *a, const float *b,
                                                            size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 e0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 e1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        s0 = _mm512_fmadd_ps(e0, e0, s0);
        s1 = _mm512_fmadd_ps(e1, e1, s1);
    }
    if (i < d) { /* masked tail: up to 31 floats in two steps */
        for (; i < d; i += 16) {
            size_t left = d - i;
            __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            __m512 e =
                _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
            s0 = _mm512_fmadd_ps(e, e, s0);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < d; i += 16) {
        size_t left = d - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static const struct idx_kernels k_scalar = {"scalar", l2sq_scalar, dot_scalar};
static const struct idx_kernels k_avx2 = {"avx2", l2sq_avx2, dot_avx2};
static const struct idx_kernels k_avx512 = {"avx512", l2sq_avx512, dot_avx512};

const struct idx_kernels *idx_kernels_scalar(void)
{
    return &k_scalar;
}

const struct idx_kernels *idx_kernels_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &k_avx2 : NULL;
}

const struct idx_kernels *idx_kernels_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? &k_avx512 : NULL;
}

static const struct idx_kernels *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    const char *force = getenv("STRATA_KERNELS"); /* "scalar" / "avx2": for tests and bench */
    const struct idx_kernels *k = NULL;
    if (force == NULL || strcmp(force, "avx512") == 0)
        k = idx_kernels_avx512();
    if (k == NULL && (force == NULL || strcmp(force, "scalar") != 0))
        k = idx_kernels_avx2();
    chosen = k ? k : &k_scalar;
}

const struct idx_kernels *idx_kernels(void)
{
    pthread_once(&chosen_once, choose);
    return chosen;
}

static float neg_dot_scalar(const float *a, const float *b, size_t d)
{
    return -dot_scalar(a, b, d);
}
static float neg_dot_avx2(const float *a, const float *b, size_t d)
{
    return -dot_avx2(a, b, d);
}
static float neg_dot_avx512(const float *a, const float *b, size_t d)
{
    return -dot_avx512(a, b, d);
}

idx_dist_fn idx_metric_fn(const struct idx_kernels *k, enum idx_metric m)
{
    if (m == IDX_L2)
        return k->l2sq;
    if (k == &k_avx512)
        return neg_dot_avx512;
    if (k == &k_avx2)
        return neg_dot_avx2;
    return neg_dot_scalar;
}

void idx_normalize(float *v, size_t dim)
{
    float n = sqrtf(idx_kernels()->dot(v, v, dim));
    if (n > 0)
        for (size_t i = 0; i < dim; i++)
            v[i] /= n;
}

/* ---- exact top-k -------------------------------------------------------------------------- */

/* Max-heap on dist: the root is the worst of the current top-k. */
static void heap_sift_down(struct idx_hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].dist > h[m].dist)
            m = l;
        if (r < n && h[r].dist > h[m].dist)
            m = r;
        if (m == i)
            return;
        struct idx_hit t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_sift_up(struct idx_hit *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].dist >= h[i].dist)
            return;
        struct idx_hit t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static int hit_cmp(const void *a, const void *b)
{
    const struct idx_hit *x = a, *y = b;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

size_t idx_exact_topk(const float *query, const float *base, size_t n, size_t dim,
                      enum idx_metric m, size_t k, idx_filter_fn filter, void *fctx,
                      struct idx_hit *out)
{
    if (k == 0)
        return 0;
    idx_dist_fn fn = idx_metric_fn(idx_kernels(), m);
    size_t h = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 4 < n)
            __builtin_prefetch(base + (i + 4) * dim);
        if (filter != NULL && !filter(fctx, (uint32_t)i))
            continue;
        float d = fn(query, base + i * dim, dim);
        if (h < k) {
            out[h] = (struct idx_hit){(uint32_t)i, d};
            heap_sift_up(out, h++);
        } else if (d < out[0].dist) {
            out[0] = (struct idx_hit){(uint32_t)i, d};
            heap_sift_down(out, h, 0);
        }
    }
    qsort(out, h, sizeof(*out), hit_cmp);
    return h;
}
