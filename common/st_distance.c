#include "st_distance.h"

#include <assert.h>
#include <cpuid.h>
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

static float sq8_l2sq_scalar(const float *q, const uint8_t *c, const float *lo, const float *t,
                             size_t d)
{
    float s0 = 0, s1 = 0;
    size_t i = 0;
    for (; i + 2 <= d; i += 2) {
        float e0 = q[i] - (lo[i] + t[i] * c[i]), e1 = q[i + 1] - (lo[i + 1] + t[i + 1] * c[i + 1]);
        s0 += e0 * e0;
        s1 += e1 * e1;
    }
    for (; i < d; i++) {
        float e = q[i] - (lo[i] + t[i] * c[i]);
        s0 += e * e;
    }
    return s0 + s1;
}

static float sq8_dot_scalar(const float *q, const uint8_t *c, const float *lo, const float *t,
                            size_t d)
{
    float s0 = 0, s1 = 0;
    size_t i = 0;
    for (; i + 2 <= d; i += 2) {
        s0 += q[i] * (lo[i] + t[i] * c[i]);
        s1 += q[i + 1] * (lo[i + 1] + t[i + 1] * c[i + 1]);
    }
    for (; i < d; i++)
        s0 += q[i] * (lo[i] + t[i] * c[i]);
    return s0 + s1;
}

/* Index of the first value that is not finite (exponent bits all ones: inf or NaN), or n. */
static size_t finite_prefix_scalar(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof(u));
        if ((u & 0x7f800000u) == 0x7f800000u)
            return i;
    }
    return n;
}

static void sq_absmax_scalar(const float *q, const float *lo, const float *t, size_t d, float *max,
                             float *pair_max)
{
    float m = 0, pm = 0;
    for (size_t i = 0; i < d; i += 2) {
        float a = fabsf(t[i] * (q[i] - lo[i]));
        float b = i + 1 < d ? fabsf(t[i + 1] * (q[i + 1] - lo[i + 1])) : 0, p = a + b;
        m = a > m ? a : m; /* NaN stays out */
        m = b > m ? b : m;
        pm = p > pm ? p : pm;
    }
    *max = m;
    *pair_max = pm;
}

/* Clamped first (NaN: -127), then rounded to nearest, ties to even: adding and subtracting
 * 1.5 * 2^23 leaves no fraction bits for |w| <= 127 (no libm call, the same as lrintf). */
static inline int8_t sq_round1(float w)
{
    w = w > -127 ? (w < 127 ? w : 127) : -127;
    return (int8_t)(int)((w + 0x1.8p23f) - 0x1.8p23f);
}

static void sq_round_scalar(const float *q, const float *lo, const float *t, float inv, size_t d,
                            int8_t *out)
{
    for (size_t i = 0; i < d; i++)
        out[i] = sq_round1(t[i] * (q[i] - lo[i]) * inv);
}

static int32_t dotu8_scalar(const uint8_t *a, const int8_t *b, size_t d)
{
    int32_t s0 = 0, s1 = 0;
    size_t i = 0;
    for (; i + 2 <= d; i += 2) {
        s0 += (int32_t)a[i] * b[i];
        s1 += (int32_t)a[i + 1] * b[i + 1];
    }
    if (i < d)
        s0 += (int32_t)a[i] * b[i];
    return s0 + s1;
}

static int32_t dotu4_scalar(const uint8_t *a, const int8_t *b, size_t d)
{
    int32_t s0 = 0, s1 = 0;
    for (size_t blk = 0; blk + 64 <= d; blk += 64, a += 32)
        for (size_t j = 0; j < 32; j++) {
            s0 += (int32_t)(a[j] & 15) * b[blk + j];
            s1 += (int32_t)(a[j] >> 4) * b[blk + 32 + j];
        }
    return s0 + s1;
}

/* The argmins' last step (and the scalar one's only): the least of the SIMD lanes' first least
 * values lb (their columns li), the lowest column among equals (a lane holding nothing below
 * +inf is +inf at column 0: never taken), then the columns from c on one at a time. The
 * library builds with -ffp-contract=off: an FMA would round norms - 2 dots once where the
 * scalar set rounds twice (they differ where 2 dots overflows). */
static uint32_t argmin_l2_finish(const float *lb, const uint32_t *li, int lanes, const float *dots,
                                 const float *norms, size_t c, size_t k)
{
    uint32_t bi = 0;
    float best = INFINITY;
    for (int j = 0; j < lanes; j++)
        if (lb[j] < best || (lb[j] == best && li[j] < bi)) {
            best = lb[j];
            bi = li[j];
        }
    for (; c < k; c++) {
        float v = norms[c] - 2 * dots[c];
        if (v < best) {
            best = v;
            bi = (uint32_t)c;
        }
    }
    return bi;
}

static uint32_t argmin_l2_scalar(const float *dots, const float *norms, size_t k)
{
    return argmin_l2_finish(NULL, NULL, 0, dots, norms, 0, k);
}

static uint32_t pq4_block_scalar(const uint8_t *codes, const uint8_t *lut, size_t m2, uint16_t thr,
                                 uint16_t out[32])
{
    uint32_t acc[32] = {0};
    for (size_t j = 0; j < m2; j++) {
        const uint8_t *c = codes + 16 * j, *t = lut + 16 * j;
        for (size_t i = 0; i < 16; i++) {
            acc[i] += t[c[i] & 15];
            acc[i + 16] += t[c[i] >> 4];
        }
    }
    uint32_t mask = 0;
    for (size_t i = 0; i < 32; i++) {
        out[i] = (uint16_t)acc[i];
        mask |= (uint32_t)(out[i] <= thr) << i;
    }
    return mask;
}

static void dots_t_scalar(const float *x, const float *ct, size_t d, size_t k, float *out)
{
    for (size_t c = 0; c < k; c++)
        out[c] = 0;
    for (size_t i = 0; i < d; i++)
        for (size_t c = 0; c < k; c++)
            out[c] += x[i] * ct[i * k + c];
}

static void dots_blocks_scalar(const float *x, const float *ct, size_t d, size_t k, size_t nb,
                               float *out)
{
    for (size_t b = 0; b < nb; b++)
        dots_t_scalar(x + b * d, ct + b * d * k, d, k, out + b * k);
}

static void dots_tn_scalar(const float *x, size_t nx, size_t ldx, const float *ct, size_t d,
                           size_t k, float *out)
{
    for (size_t r = 0; r < nx; r++)
        dots_t_scalar(x + r * ldx, ct, d, k, out + r * k);
}

/* (255, one bit finer, left recall@10 and the exact distances a query of the re-ranked 4-bit
 * search the same to the fourth decimal: Fashion-MNIST, nprobe 1-64.) */
float st_pq4_qmax(size_t m2)
{
    return (float)(65535 / m2 < 127 ? 65535 / m2 : 127);
}

static float pq4_lut_scalar(const float *a, const float *b, const float *lo, float range, size_t m,
                            size_t m2, float *tab, uint8_t *lut, float *bias)
{
    float sum = 0;
    if (lo == NULL) {
        range = 0;
        for (size_t j = 0; j < m; j++) {
            float *t = tab + 16 * j;
            for (size_t c = 0; c < 16; c++)
                t[c] = b != NULL ? a[16 * j + c] + b[16 * j + c] : a[16 * j + c];
            float mn = t[0], mx = t[0];
            for (size_t c = 1; c < 16; c++) {
                mn = t[c] < mn ? t[c] : mn;
                mx = t[c] > mx ? t[c] : mx;
            }
            for (size_t c = 0; c < 16; c++)
                t[c] -= mn;
            sum += mn;
            range = mx - mn > range ? mx - mn : range;
        }
    } else {
        for (size_t j = 0; j < m; j++) {
            for (size_t c = 0; c < 16; c++)
                tab[16 * j + c] =
                    (b != NULL ? a[16 * j + c] + b[16 * j + c] : a[16 * j + c]) - lo[j];
            sum += lo[j];
        }
    }
    float qmax = st_pq4_qmax(m2), scale = range > 0 ? qmax / range : 1.0f;
    for (size_t i = 0; i < 16 * m; i++) {
        float v = tab[i] * scale + 0.5f;
        lut[i] = (uint8_t)(!(v >= 0) ? 0 : v > qmax ? (int)qmax : (int)v); /* NaN: 0 */
    }
    *bias = sum;
    return scale;
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

/* Eight bytes a step widened to floats; x~ = lo + t c is exact in float, so the FMA that
 * forms it rounds nothing (idx_refine.h). */
__attribute__((target("avx2,fma"))) static inline __m256 sq8_x8(const uint8_t *c, const float *lo,
                                                                const float *t)
{
    __m256 cf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c)));
    return _mm256_fmadd_ps(_mm256_loadu_ps(t), cf, _mm256_loadu_ps(lo));
}

__attribute__((target("avx2,fma"))) static float
sq8_l2sq_avx2(const float *q, const uint8_t *c, const float *lo, const float *t, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(q + i), sq8_x8(c + i, lo + i, t + i));
        __m256 e1 =
            _mm256_sub_ps(_mm256_loadu_ps(q + i + 8), sq8_x8(c + i + 8, lo + i + 8, t + i + 8));
        s0 = _mm256_fmadd_ps(e0, e0, s0);
        s1 = _mm256_fmadd_ps(e1, e1, s1);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(q + i), sq8_x8(c + i, lo + i, t + i));
        s0 = _mm256_fmadd_ps(e0, e0, s0);
    }
    return hsum256(_mm256_add_ps(s0, s1)) + sq8_l2sq_scalar(q + i, c + i, lo + i, t + i, d - i);
}

__attribute__((target("avx2,fma"))) static float
sq8_dot_avx2(const float *q, const uint8_t *c, const float *lo, const float *t, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), sq8_x8(c + i, lo + i, t + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), sq8_x8(c + i + 8, lo + i + 8, t + i + 8),
                             s1);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), sq8_x8(c + i, lo + i, t + i), s0);
    return hsum256(_mm256_add_ps(s0, s1)) + sq8_dot_scalar(q + i, c + i, lo + i, t + i, d - i);
}

/* u8 x s8 without VNNI: both widened to i16, vpmaddwd sums pairs into i32 (255 * 127 * 2 fits). */
__attribute__((target("avx2"))) static int32_t dotu8_avx2(const uint8_t *a, const int8_t *b,
                                                          size_t d)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(a + i)));
        __m256i x1 =
            _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(a + i + 16)));
        __m256i y0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(b + i)));
        __m256i y1 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(b + i + 16)));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(x0, y0));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(x1, y1));
    }
    __m256i sv = _mm256_add_epi32(s0, s1);
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(sv), _mm256_extracti128_si256(sv, 1));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return _mm_cvtsi128_si32(v) + dotu8_scalar(a + i, b + i, d - i);
}

/* u8 x s8 in pairs: vpmaddubsw sums each pair of products into 16 bits (saturating), vpmaddwd
 * with ones widens the pairs into 32. Exact where |b[2i]| + |b[2i + 1]| <= 128 (255 * 128 fits
 * 16 bits): st_kernels.dotu8_pair_max. One multiply per 32 bytes and no byte widening, against
 * dotu8_avx2's four widening loads and two multiplies. */
__attribute__((target("avx2"))) static int32_t dotu8p_avx2(const uint8_t *a, const int8_t *b,
                                                           size_t d)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        __m256i p0 =
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(a + i)),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i)));
        __m256i p1 =
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(a + i + 32)),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i + 32)));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, ones));
    }
    for (; i + 32 <= d; i += 32) {
        __m256i p0 =
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(a + i)),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i)));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
    }
    __m256i sv = _mm256_add_epi32(s0, s1);
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(sv), _mm256_extracti128_si256(sv, 1));
    if (i + 16 <= d) { /* 784-d rows end in 16 bytes: one more step, not a scalar loop */
        __m128i p = _mm_maddubs_epi16(_mm_loadu_si128((const __m128i *)(const void *)(a + i)),
                                      _mm_loadu_si128((const __m128i *)(const void *)(b + i)));
        v = _mm_add_epi32(v, _mm_madd_epi16(p, _mm256_castsi256_si128(ones)));
        i += 16;
    }
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return _mm_cvtsi128_si32(v) + dotu8_scalar(a + i, b + i, d - i);
}

/* 4-bit codes: the nibbles masked out of 32 bytes (64 dimensions), each half multiplied with
 * its 32 weights by vpmaddubsw, the halves added in 16 bits (4 * 15 * 128 fits: no bound on the
 * weights), widened by vpmaddwd. */
__attribute__((target("avx2"))) static int32_t dotu4_avx2(const uint8_t *a, const int8_t *b,
                                                          size_t d)
{
    const __m256i ones = _mm256_set1_epi16(1), lo4 = _mm256_set1_epi8(15);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 128 <= d; i += 128, a += 64) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)a);
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(const void *)(a + 32));
        __m256i p0 = _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_and_si256(x0, lo4),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i))),
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x0, 4), lo4),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i + 32))));
        __m256i p1 = _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_and_si256(x1, lo4),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i + 64))),
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x1, 4), lo4),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i + 96))));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, ones));
    }
    if (i + 64 <= d) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)a);
        __m256i p0 = _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_and_si256(x0, lo4),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i))),
            _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(x0, 4), lo4),
                                 _mm256_loadu_si256((const __m256i *)(const void *)(b + i + 32))));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
    }
    __m256i sv = _mm256_add_epi32(s0, s1);
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(sv), _mm256_extracti128_si256(sv, 1));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return _mm_cvtsi128_si32(v);
}

/* Eight dimensions a step (four pairs); vmaxps(a, m) is a > m ? a : m, so NaN stays out as in
 * the scalar loop; the maxima are exact, so the order they are taken in does not matter. */
__attribute__((target("avx2"))) static void sq_absmax_avx2(const float *q, const float *lo,
                                                           const float *t, size_t d, float *max,
                                                           float *pair_max)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps(), pm = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 w = _mm256_mul_ps(_mm256_loadu_ps(t + i),
                                 _mm256_sub_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(lo + i)));
        __m256 a = _mm256_andnot_ps(sign, w);
        m = _mm256_max_ps(a, m);
        /* lane j: a[j] + a[j ^ 1], each pair's sum (twice; a + b = b + a exactly) */
        pm = _mm256_max_ps(_mm256_add_ps(a, _mm256_permute_ps(a, 0xb1)), pm);
    }
    float ml[8], pl[8], mt, pt;
    _mm256_storeu_ps(ml, m);
    _mm256_storeu_ps(pl, pm);
    sq_absmax_scalar(q + i, lo + i, t + i, d - i, &mt, &pt); /* i is even: pairs stay aligned */
    for (int j = 0; j < 8; j++) {
        mt = ml[j] > mt ? ml[j] : mt;
        pt = pl[j] > pt ? pl[j] : pt;
    }
    *max = mt;
    *pair_max = pt;
}

/* Eight weights a step as the scalar loop computes them (multiply, multiply, clamp, add and
 * subtract 1.5 * 2^23), truncated to integers (exact by then), 32 packed to bytes at a time. */
__attribute__((target("avx2"))) static inline __m256i
sq_round8_avx2(const float *q, const float *lo, const float *t, __m256 inv)
{
    const __m256 lo127 = _mm256_set1_ps(-127.0f), hi127 = _mm256_set1_ps(127.0f),
                 magic = _mm256_set1_ps(0x1.8p23f);
    __m256 w = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_loadu_ps(t), _mm256_sub_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(lo))),
        inv);
    w = _mm256_min_ps(_mm256_max_ps(w, lo127), hi127); /* max first: NaN -> -127 */
    return _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(w, magic), magic));
}

__attribute__((target("avx2"))) static void
sq_round_avx2(const float *q, const float *lo, const float *t, float inv, size_t d, int8_t *out)
{
    const __m256 iv = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256i a = sq_round8_avx2(q + i, lo + i, t + i, iv);
        __m256i b = sq_round8_avx2(q + i + 8, lo + i + 8, t + i + 8, iv);
        __m256i c = sq_round8_avx2(q + i + 16, lo + i + 16, t + i + 16, iv);
        __m256i e = sq_round8_avx2(q + i + 24, lo + i + 24, t + i + 24, iv);
        /* packs work per 128-bit lane: a0-3 b0-3 c0-3 e0-3 | a4-7 b4-7 c4-7 e4-7, reordered */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
        _mm256_storeu_si256((__m256i *)(void *)(out + i), _mm256_permutevar8x32_epi32(p, order));
    }
    sq_round_scalar(q + i, lo + i, t + i, inv, d - i, out + i);
}

/* Eight floats a step: the exponent field masked and compared with all ones; the scalar loop
 * names the index once a step finds one (and takes the tail). */
__attribute__((target("avx2"))) static size_t finite_prefix_avx2(const float *v, size_t n)
{
    const __m256i em = _mm256_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x =
            _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(v + i)), em);
        if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(x, em)) != 0)
            break;
    }
    return i + finite_prefix_scalar(v + i, n - i);
}

/* Eight lanes, each the first least value of its columns (strict <, so NaN never wins), then
 * the least over the lanes, the lowest column among equals: the scalar loop's answer. */
__attribute__((target("avx2,fma"))) static uint32_t argmin_l2_avx2(const float *dots,
                                                                   const float *norms, size_t k)
{
    __m256 vb = _mm256_set1_ps(INFINITY), two = _mm256_set1_ps(2.0f);
    __m256i vi = _mm256_setzero_si256(), idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step = _mm256_set1_epi32(8);
    size_t c = 0;
    for (; c + 8 <= k; c += 8) {
        /* norms - 2 * dots rounded once, as the scalar expression (2 * dots is exact) */
        __m256 v = _mm256_sub_ps(_mm256_loadu_ps(norms + c),
                                 _mm256_mul_ps(two, _mm256_loadu_ps(dots + c)));
        __m256 lt = _mm256_cmp_ps(v, vb, _CMP_LT_OQ);
        vb = _mm256_blendv_ps(vb, v, lt);
        vi = _mm256_blendv_epi8(vi, idx, _mm256_castps_si256(lt));
        idx = _mm256_add_epi32(idx, step);
    }
    float lb[8];
    uint32_t li[8];
    _mm256_storeu_ps(lb, vb);
    _mm256_storeu_si256((__m256i *)(void *)li, vi);
    return argmin_l2_finish(lb, li, 8, dots, norms, c, k);
}

/* AVX-VNNI (256-bit vpdpbusd): four u8 x s8 products summed into each i32 lane, one
 * instruction per 32 bytes. */
__attribute__((target("avx2,avxvnni"))) static int32_t dotu8_avxvnni(const uint8_t *a,
                                                                     const int8_t *b, size_t d)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        s0 = _mm256_dpbusd_avx_epi32(s0, _mm256_loadu_si256((const __m256i *)(const void *)(a + i)),
                                     _mm256_loadu_si256((const __m256i *)(const void *)(b + i)));
        s1 = _mm256_dpbusd_avx_epi32(
            s1, _mm256_loadu_si256((const __m256i *)(const void *)(a + i + 32)),
            _mm256_loadu_si256((const __m256i *)(const void *)(b + i + 32)));
    }
    for (; i + 32 <= d; i += 32)
        s0 = _mm256_dpbusd_avx_epi32(s0, _mm256_loadu_si256((const __m256i *)(const void *)(a + i)),
                                     _mm256_loadu_si256((const __m256i *)(const void *)(b + i)));
    __m256i sv = _mm256_add_epi32(s0, s1);
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(sv), _mm256_extracti128_si256(sv, 1));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return _mm_cvtsi128_si32(v) + dotu8_scalar(a + i, b + i, d - i);
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

/*
 * Sub-quantizers j and j+1 in one 32-byte load: the low lane holds j's 16 bytes, the high lane
 * j+1's, and so do the tables, so one in-lane pshufb looks up both. Two loads a step (four
 * sub-quantizers): entries are at most 127, so their lookups are summed in bytes before they
 * are widened. Each byte sum is added to two u16 accumulators: as a word w (its even byte plus
 * 256 times its odd byte, modulo 2^16) and its odd byte alone o; the even sums are w - 256 o at
 * the end, exact because every sum fits 16 bits (FAISS's fast-scan kernels accumulate the same
 * way). Vectors 2k and 2k+1 of a lane so stay apart; lanes and pairs are folded back into
 * vector order at the end. A trailing pair (m2 % 4 == 2) is one load.
 */
__attribute__((target("avx2"))) static inline void pq4_acc_avx2(__m256i d, __m256i *w, __m256i *o)
{
    *w = _mm256_add_epi16(*w, d);
    *o = _mm256_add_epi16(*o, _mm256_srli_epi16(d, 8));
}

__attribute__((target("avx2"))) static uint32_t
pq4_block_avx2(const uint8_t *codes, const uint8_t *lut, size_t m2, uint16_t thr, uint16_t out[32])
{
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i lo_w = _mm256_setzero_si256(), lo_odd = lo_w, hi_w = lo_w, hi_odd = lo_w;
    size_t j = 0;
    for (; j + 4 <= m2; j += 4) {
        __m256i c0 = _mm256_loadu_si256((const __m256i *)(const void *)(codes + 16 * j));
        __m256i c1 = _mm256_loadu_si256((const __m256i *)(const void *)(codes + 16 * j + 32));
        __m256i t0 = _mm256_loadu_si256((const __m256i *)(const void *)(lut + 16 * j));
        __m256i t1 = _mm256_loadu_si256((const __m256i *)(const void *)(lut + 16 * j + 32));
        __m256i dl = _mm256_add_epi8(_mm256_shuffle_epi8(t0, _mm256_and_si256(c0, low4)),
                                     _mm256_shuffle_epi8(t1, _mm256_and_si256(c1, low4)));
        __m256i dh = _mm256_add_epi8(
            _mm256_shuffle_epi8(t0, _mm256_and_si256(_mm256_srli_epi16(c0, 4), low4)),
            _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(c1, 4), low4)));
        pq4_acc_avx2(dl, &lo_w, &lo_odd);
        pq4_acc_avx2(dh, &hi_w, &hi_odd);
    }
    if (j < m2) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(const void *)(codes + 16 * j));
        __m256i t = _mm256_loadu_si256((const __m256i *)(const void *)(lut + 16 * j));
        pq4_acc_avx2(_mm256_shuffle_epi8(t, _mm256_and_si256(c, low4)), &lo_w, &lo_odd);
        pq4_acc_avx2(_mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(c, 4), low4)), &hi_w,
                     &hi_odd);
    }
    __m256i lo_even = _mm256_sub_epi16(lo_w, _mm256_slli_epi16(lo_odd, 8));
    __m256i hi_even = _mm256_sub_epi16(hi_w, _mm256_slli_epi16(hi_odd, 8));
    /* Fold lanes: u16 k of a lane sum is vector 2k (even) or 2k+1 (odd). */
    __m128i le =
        _mm_add_epi16(_mm256_castsi256_si128(lo_even), _mm256_extracti128_si256(lo_even, 1));
    __m128i lo = _mm_add_epi16(_mm256_castsi256_si128(lo_odd), _mm256_extracti128_si256(lo_odd, 1));
    __m128i he =
        _mm_add_epi16(_mm256_castsi256_si128(hi_even), _mm256_extracti128_si256(hi_even, 1));
    __m128i ho = _mm_add_epi16(_mm256_castsi256_si128(hi_odd), _mm256_extracti128_si256(hi_odd, 1));
    __m128i v0 = _mm_unpacklo_epi16(le, lo), v1 = _mm_unpackhi_epi16(le, lo);
    __m128i v2 = _mm_unpacklo_epi16(he, ho), v3 = _mm_unpackhi_epi16(he, ho);
    _mm_storeu_si128((__m128i *)(void *)out, v0);
    _mm_storeu_si128((__m128i *)(void *)(out + 8), v1);
    _mm_storeu_si128((__m128i *)(void *)(out + 16), v2);
    _mm_storeu_si128((__m128i *)(void *)(out + 24), v3);
    /* x <= thr (unsigned) <=> min(x, thr) == x; packed to one byte per vector. */
    __m128i t = _mm_set1_epi16((short)thr);
    __m128i c0 = _mm_cmpeq_epi16(_mm_min_epu16(v0, t), v0);
    __m128i c1 = _mm_cmpeq_epi16(_mm_min_epu16(v1, t), v1);
    __m128i c2 = _mm_cmpeq_epi16(_mm_min_epu16(v2, t), v2);
    __m128i c3 = _mm_cmpeq_epi16(_mm_min_epu16(v3, t), v3);
    uint32_t lo16 = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(c0, c1));
    uint32_t hi16 = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(c2, c3));
    return lo16 | hi16 << 16;
}

/* Columns [c, k) (c a multiple of 8): 32 at a time (four accumulators share each broadcast),
 * then 8, then the tail, every column the same chain of fused multiply-adds in row order.
 * dots_tn_avx2 runs its last columns through here: same bits. */
__attribute__((target("avx2,fma"))) static void
dots_t_avx2_cols(const float *x, const float *ct, size_t d, size_t k, size_t c, float *out)
{
    for (; c + 32 <= k; c += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i < d; i++) {
            __m256 xi = _mm256_set1_ps(x[i]);
            const float *row = ct + i * k + c;
            a0 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(row), a0);
            a1 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(row + 8), a1);
            a2 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(row + 16), a2);
            a3 = _mm256_fmadd_ps(xi, _mm256_loadu_ps(row + 24), a3);
        }
        _mm256_storeu_ps(out + c, a0);
        _mm256_storeu_ps(out + c + 8, a1);
        _mm256_storeu_ps(out + c + 16, a2);
        _mm256_storeu_ps(out + c + 24, a3);
    }
    for (; c + 8 <= k; c += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (size_t i = 0; i < d; i++)
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(x[i]), _mm256_loadu_ps(ct + i * k + c), a0);
        _mm256_storeu_ps(out + c, a0);
    }
    for (; c < k; c++) { /* fused as the vector columns are: a column's bits do not depend on k */
        float a = 0;
        for (size_t i = 0; i < d; i++)
            a = __builtin_fmaf(x[i], ct[i * k + c], a);
        out[c] = a;
    }
}

__attribute__((target("avx2,fma"))) static void dots_t_avx2(const float *x, const float *ct,
                                                            size_t d, size_t k, float *out)
{
    dots_t_avx2_cols(x, ct, d, k, 0, out);
}

/* Blocks of 16 columns (4-bit PQ tables), four side by side (eight chains of fused
 * multiply-adds in flight, where one block has two); returns how many it did (a multiple of
 * four). Every column the same chain in row order as dots_t's, in both sets. */
__attribute__((target("avx2,fma"))) static size_t blocks16_avx2(const float *x, const float *ct,
                                                                size_t d, size_t nb, float *out)
{
    size_t b = 0, bs = d * 16; /* one block's centroids */
    for (; b + 4 <= nb; b += 4) {
        const float *x0 = x + b * d, *c0 = ct + b * bs;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, e0 = a0, e1 = a0, f0 = a0,
               f1 = a0;
        for (size_t i = 0; i < d; i++) {
            const float *r0 = c0 + i * 16, *r1 = r0 + bs, *r2 = r1 + bs, *r3 = r2 + bs;
            __m256 v0 = _mm256_set1_ps(x0[i]), v1 = _mm256_set1_ps(x0[d + i]),
                   v2 = _mm256_set1_ps(x0[2 * d + i]), v3 = _mm256_set1_ps(x0[3 * d + i]);
            a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(r0), a0);
            a1 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(r0 + 8), a1);
            b0 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(r1), b0);
            b1 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(r1 + 8), b1);
            e0 = _mm256_fmadd_ps(v2, _mm256_loadu_ps(r2), e0);
            e1 = _mm256_fmadd_ps(v2, _mm256_loadu_ps(r2 + 8), e1);
            f0 = _mm256_fmadd_ps(v3, _mm256_loadu_ps(r3), f0);
            f1 = _mm256_fmadd_ps(v3, _mm256_loadu_ps(r3 + 8), f1);
        }
        float *o = out + b * 16;
        _mm256_storeu_ps(o, a0);
        _mm256_storeu_ps(o + 8, a1);
        _mm256_storeu_ps(o + 16, b0);
        _mm256_storeu_ps(o + 24, b1);
        _mm256_storeu_ps(o + 32, e0);
        _mm256_storeu_ps(o + 40, e1);
        _mm256_storeu_ps(o + 48, f0);
        _mm256_storeu_ps(o + 56, f1);
    }
    return b;
}

__attribute__((target("avx2,fma"))) static void
dots_blocks_avx2(const float *x, const float *ct, size_t d, size_t k, size_t nb, float *out)
{
    size_t b = k == 16 ? blocks16_avx2(x, ct, d, nb, out) : 0;
    for (; b < nb; b++)
        dots_t_avx2_cols(x + b * d, ct + b * d * k, d, k, 0, out + b * k);
}

/*
 * Six or four rows (x, ldx floats apart) against 16 columns [c, c + 16): twice as many
 * accumulators, each column load serving every row and each broadcast two loads. Six rows keep
 * twelve fused multiply-adds in flight per step, enough for two FMA pipes of 4-5 cycles' latency
 * (Zen 2: eight reached 83 % of the peak, twelve all of it); 15 of the 16 registers. Every column
 * the same chain in row order.
 */
#define TN_STEP(v, acc0, acc1)                                                                     \
    do {                                                                                           \
        acc0 = _mm256_fmadd_ps(v, l0, acc0);                                                       \
        acc1 = _mm256_fmadd_ps(v, l1, acc1);                                                       \
    } while (0)
/* Row q's 16 sums into out at column c. */
#define TN_STORE(q, acc0, acc1)                                                                    \
    do {                                                                                           \
        _mm256_storeu_ps(out + (q)*k + c, acc0);                                                   \
        _mm256_storeu_ps(out + (q)*k + c + 8, acc1);                                               \
    } while (0)

/* The tiles are written out, not looped over an array of accumulators: a compiler that does
 * not unroll such a loop (clang 14 did not for four rows) keeps the sums in memory, at half
 * the speed. */
__attribute__((target("avx2,fma"))) static void dots_tn_avx2_6(const float *x, size_t ldx,
                                                               const float *ct, size_t d, size_t k,
                                                               size_t c, float *out)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0,
           e0 = a0, e1 = a0, f0 = a0, f1 = a0;
    for (size_t i = 0; i < d; i++) {
        const float *row = ct + i * k + c;
        __m256 l0 = _mm256_loadu_ps(row), l1 = _mm256_loadu_ps(row + 8);
        TN_STEP(_mm256_broadcast_ss(x + i), a0, a1);
        TN_STEP(_mm256_broadcast_ss(x + ldx + i), b0, b1);
        TN_STEP(_mm256_broadcast_ss(x + 2 * ldx + i), c0, c1);
        TN_STEP(_mm256_broadcast_ss(x + 3 * ldx + i), d0, d1);
        TN_STEP(_mm256_broadcast_ss(x + 4 * ldx + i), e0, e1);
        TN_STEP(_mm256_broadcast_ss(x + 5 * ldx + i), f0, f1);
    }
    TN_STORE(0, a0, a1);
    TN_STORE(1, b0, b1);
    TN_STORE(2, c0, c1);
    TN_STORE(3, d0, d1);
    TN_STORE(4, e0, e1);
    TN_STORE(5, f0, f1);
}

__attribute__((target("avx2,fma"))) static void dots_tn_avx2_4(const float *x, size_t ldx,
                                                               const float *ct, size_t d, size_t k,
                                                               size_t c, float *out)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    for (size_t i = 0; i < d; i++) {
        const float *row = ct + i * k + c;
        __m256 l0 = _mm256_loadu_ps(row), l1 = _mm256_loadu_ps(row + 8);
        TN_STEP(_mm256_broadcast_ss(x + i), a0, a1);
        TN_STEP(_mm256_broadcast_ss(x + ldx + i), b0, b1);
        TN_STEP(_mm256_broadcast_ss(x + 2 * ldx + i), c0, c1);
        TN_STEP(_mm256_broadcast_ss(x + 3 * ldx + i), d0, d1);
    }
    TN_STORE(0, a0, a1);
    TN_STORE(1, b0, b1);
    TN_STORE(2, c0, c1);
    TN_STORE(3, d0, d1);
}
#undef TN_STEP
#undef TN_STORE

/* Six rows at a time, then four, against 16 columns; then the single-row kernel for the
 * columns left and the rows left. */
__attribute__((target("avx2,fma"))) static void
dots_tn_avx2(const float *x, size_t nx, size_t ldx, const float *ct, size_t d, size_t k, float *out)
{
    size_t r = 0, k16 = k & ~(size_t)15, rows;
    for (; r + 4 <= nx; r += rows) {
        rows = r + 6 <= nx ? 6 : 4;
        for (size_t c = 0; c < k16; c += 16) {
            if (rows == 6)
                dots_tn_avx2_6(x + r * ldx, ldx, ct, d, k, c, out + r * k);
            else
                dots_tn_avx2_4(x + r * ldx, ldx, ct, d, k, c, out + r * k);
        }
        if (k16 < k) /* the last k % 16 columns, one row at a time, as dots_t sums them */
            for (size_t q = 0; q < rows; q++)
                dots_t_avx2_cols(x + (r + q) * ldx, ct, d, k, k16, out + (r + q) * k);
    }
    for (; r < nx; r++)
        dots_t_avx2(x + r * ldx, ct, d, k, out + r * k);
}

/* Same operations as pq4_lut_scalar, two 8-float halves per row (results are identical). */
__attribute__((target("avx2"))) static float pq4_lut_avx2(const float *a, const float *b,
                                                          const float *lo, float range, size_t m,
                                                          size_t m2, float *tab, uint8_t *lut,
                                                          float *bias)
{
    float sum = 0;
    if (lo == NULL) {
        __m256 rg = _mm256_setzero_ps();
        for (size_t j = 0; j < m; j++) {
            __m256 t0 = _mm256_loadu_ps(a + 16 * j), t1 = _mm256_loadu_ps(a + 16 * j + 8);
            if (b != NULL) {
                t0 = _mm256_add_ps(t0, _mm256_loadu_ps(b + 16 * j));
                t1 = _mm256_add_ps(t1, _mm256_loadu_ps(b + 16 * j + 8));
            }
            __m256 mn = _mm256_min_ps(t0, t1), mx = _mm256_max_ps(t0, t1);
            mn = _mm256_min_ps(mn, _mm256_permute2f128_ps(mn, mn, 1));
            mx = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
            mn = _mm256_min_ps(mn, _mm256_shuffle_ps(mn, mn, 0x4e));
            mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0x4e));
            mn = _mm256_min_ps(mn, _mm256_shuffle_ps(mn, mn, 0xb1));
            mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0xb1));
            _mm256_storeu_ps(tab + 16 * j, _mm256_sub_ps(t0, mn));
            _mm256_storeu_ps(tab + 16 * j + 8, _mm256_sub_ps(t1, mn));
            rg = _mm256_max_ps(rg, _mm256_sub_ps(mx, mn));
            sum += _mm256_cvtss_f32(mn);
        }
        range = _mm256_cvtss_f32(rg);
    }
    float qmax = st_pq4_qmax(m2), scale = range > 0 ? qmax / range : 1.0f;
    __m256 vs = _mm256_set1_ps(scale), half = _mm256_set1_ps(0.5f);
    __m256 vmax = _mm256_set1_ps(qmax), zero = _mm256_setzero_ps();
    for (size_t j = 0; j < m; j++) {
        __m256 t0, t1;
        if (lo == NULL) {
            t0 = _mm256_loadu_ps(tab + 16 * j);
            t1 = _mm256_loadu_ps(tab + 16 * j + 8);
        } else {
            t0 = _mm256_loadu_ps(a + 16 * j);
            t1 = _mm256_loadu_ps(a + 16 * j + 8);
            if (b != NULL) {
                t0 = _mm256_add_ps(t0, _mm256_loadu_ps(b + 16 * j));
                t1 = _mm256_add_ps(t1, _mm256_loadu_ps(b + 16 * j + 8));
            }
            __m256 l = _mm256_set1_ps(lo[j]);
            t0 = _mm256_sub_ps(t0, l);
            t1 = _mm256_sub_ps(t1, l);
            sum += lo[j];
        }
        /* v = t*scale + 0.5 clamped to [0, qmax], then truncated: as the scalar code. */
        t0 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_mul_ps(t0, vs), half), zero), vmax);
        t1 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_mul_ps(t1, vs), half), zero), vmax);
        __m256i w = _mm256_permute4x64_epi64(
            _mm256_packs_epi32(_mm256_cvttps_epi32(t0), _mm256_cvttps_epi32(t1)), 0xd8);
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(void *)(lut + 16 * j), bytes);
    }
    *bias = sum;
    return scale;
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

/* Sixteen floats a step, as finite_prefix_avx2; the tail through a masked load. */
__attribute__((target("avx512f"))) static size_t finite_prefix_avx512(const float *v, size_t n)
{
    const __m512i em = _mm512_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i x = _mm512_and_si512(_mm512_loadu_si512((const void *)(v + i)), em);
        if (_mm512_cmpeq_epi32_mask(x, em) != 0)
            break;
    }
    if (i + 16 > n && i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512i x = _mm512_and_si512(_mm512_maskz_loadu_epi32(k, (const void *)(v + i)), em);
        if (_mm512_mask_cmpeq_epi32_mask(k, x, em) == 0)
            return n;
    }
    return i + finite_prefix_scalar(v + i, n - i);
}

/* As argmin_l2_avx2, sixteen lanes. */
__attribute__((target("avx512f"))) static uint32_t argmin_l2_avx512(const float *dots,
                                                                    const float *norms, size_t k)
{
    __m512 vb = _mm512_set1_ps(INFINITY), two = _mm512_set1_ps(2.0f);
    __m512i vi = _mm512_setzero_si512(),
            idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    size_t c = 0;
    for (; c + 16 <= k; c += 16) {
        __m512 v = _mm512_sub_ps(_mm512_loadu_ps(norms + c),
                                 _mm512_mul_ps(two, _mm512_loadu_ps(dots + c)));
        __mmask16 lt = _mm512_cmp_ps_mask(v, vb, _CMP_LT_OQ);
        vb = _mm512_mask_mov_ps(vb, lt, v);
        vi = _mm512_mask_mov_epi32(vi, lt, idx);
        idx = _mm512_add_epi32(idx, step);
    }
    float lb[16];
    uint32_t li[16];
    _mm512_storeu_ps(lb, vb);
    _mm512_storeu_si512(li, vi);
    return argmin_l2_finish(lb, li, 16, dots, norms, c, k);
}

/* As dotu8_avx2, 64 bytes a step (a masked load at the tail: zero bytes add nothing), each half
 * widened; F and BW only. */
__attribute__((target("avx512f,avx512bw"))) static int32_t dotu8_avx512(const uint8_t *a,
                                                                        const int8_t *b, size_t d)
{
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (size_t i = 0; i < d; i += 64) {
        size_t left = d - i;
        __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        __m512i x = _mm512_maskz_loadu_epi8(m, a + i), y = _mm512_maskz_loadu_epi8(m, b + i);
        __m512i x0 = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(x));
        __m512i x1 = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(x, 1));
        __m512i y0 = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(y));
        __m512i y1 = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(y, 1));
        s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(x0, y0));
        s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(x1, y1));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
}

/* As dotu8p_avx2, 64 bytes a step (a masked load at the tail: zero bytes add nothing); F and
 * BW only. Exact where |b[2i]| + |b[2i + 1]| <= 128. */
__attribute__((target("avx512f,avx512bw"))) static int32_t dotu8p_avx512(const uint8_t *a,
                                                                         const int8_t *b, size_t d)
{
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 128 <= d; i += 128) {
        __m512i p0 = _mm512_maddubs_epi16(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
        __m512i p1 =
            _mm512_maddubs_epi16(_mm512_loadu_si512(a + i + 64), _mm512_loadu_si512(b + i + 64));
        s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(p0, ones));
        s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(p1, ones));
    }
    for (; i < d; i += 64) {
        size_t left = d - i;
        __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        __m512i p0 = _mm512_maddubs_epi16(_mm512_maskz_loadu_epi8(m, a + i),
                                          _mm512_maskz_loadu_epi8(m, b + i));
        s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(p0, ones));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
}

/* AVX512-VNNI: one vpdpbusd per 64 bytes (two accumulators), the tail a masked load. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static int32_t
dotu8_avx512vnni(const uint8_t *a, const int8_t *b, size_t d)
{
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 128 <= d; i += 128) {
        s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
        s1 =
            _mm512_dpbusd_epi32(s1, _mm512_loadu_si512(a + i + 64), _mm512_loadu_si512(b + i + 64));
    }
    for (; i < d; i += 64) {
        size_t left = d - i;
        __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        s0 = _mm512_dpbusd_epi32(s0, _mm512_maskz_loadu_epi8(m, a + i),
                                 _mm512_maskz_loadu_epi8(m, b + i));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
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

/*
 * Four sub-quantizers per 64-byte load (AVX-512BW): lane l of the load holds j+l's 16 bytes,
 * and so does the table load, so one in-lane vpshufb looks up all four. Two loads a step
 * (eight sub-quantizers), their lookups summed in bytes and accumulated as in the AVX2 kernel
 * (words and odd bytes). The tail (m2 % 8 = 2, 4 or 6) is one step of masked loads: the bytes
 * past the block are zero codes against zero tables, adding nothing and reading nothing.
 */
__attribute__((target("avx512f,avx512bw"))) static inline __m512i pq4_lookup_avx512(__m512i t,
                                                                                    __m512i c)
{
    return _mm512_shuffle_epi8(t, _mm512_and_si512(c, _mm512_set1_epi8(0x0f)));
}

__attribute__((target("avx512f,avx512bw"))) static uint32_t
pq4_block_avx512(const uint8_t *codes, const uint8_t *lut, size_t m2, uint16_t thr,
                 uint16_t out[32])
{
    __m512i lo_w = _mm512_setzero_si512(), lo_odd = lo_w, hi_w = lo_w, hi_odd = lo_w;
    for (size_t j = 0; j < m2; j += 8) {
        __m512i c0, c1, t0, t1;
        if (j + 8 <= m2) {
            c0 = _mm512_loadu_si512((const void *)(codes + 16 * j));
            c1 = _mm512_loadu_si512((const void *)(codes + 16 * j + 64));
            t0 = _mm512_loadu_si512((const void *)(lut + 16 * j));
            t1 = _mm512_loadu_si512((const void *)(lut + 16 * j + 64));
        } else {
            size_t left = 16 * (m2 - j); /* 32, 64 or 96 bytes */
            __mmask64 m0 = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
            __mmask64 m1 = left > 64 ? ((__mmask64)1 << (left - 64)) - 1 : 0;
            c0 = _mm512_maskz_loadu_epi8(m0, codes + 16 * j);
            t0 = _mm512_maskz_loadu_epi8(m0, lut + 16 * j);
            c1 = _mm512_maskz_loadu_epi8(m1, codes + 16 * j + 64);
            t1 = _mm512_maskz_loadu_epi8(m1, lut + 16 * j + 64);
        }
        __m512i dl = _mm512_add_epi8(pq4_lookup_avx512(t0, c0), pq4_lookup_avx512(t1, c1));
        __m512i dh = _mm512_add_epi8(pq4_lookup_avx512(t0, _mm512_srli_epi16(c0, 4)),
                                     pq4_lookup_avx512(t1, _mm512_srli_epi16(c1, 4)));
        lo_w = _mm512_add_epi16(lo_w, dl);
        lo_odd = _mm512_add_epi16(lo_odd, _mm512_srli_epi16(dl, 8));
        hi_w = _mm512_add_epi16(hi_w, dh);
        hi_odd = _mm512_add_epi16(hi_odd, _mm512_srli_epi16(dh, 8));
    }
    __m512i lo_even = _mm512_sub_epi16(lo_w, _mm512_slli_epi16(lo_odd, 8));
    __m512i hi_even = _mm512_sub_epi16(hi_w, _mm512_slli_epi16(hi_odd, 8));
    /* Fold the four lanes: 512 -> 256 -> 128 bits. */
    __m128i s[4];
    __m512i acc[4] = {lo_even, lo_odd, hi_even, hi_odd};
    for (int i = 0; i < 4; i++) {
        __m256i h =
            _mm256_add_epi16(_mm512_castsi512_si256(acc[i]), _mm512_extracti64x4_epi64(acc[i], 1));
        s[i] = _mm_add_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    }
    __m128i v0 = _mm_unpacklo_epi16(s[0], s[1]), v1 = _mm_unpackhi_epi16(s[0], s[1]);
    __m128i v2 = _mm_unpacklo_epi16(s[2], s[3]), v3 = _mm_unpackhi_epi16(s[2], s[3]);
    _mm_storeu_si128((__m128i *)(void *)out, v0);
    _mm_storeu_si128((__m128i *)(void *)(out + 8), v1);
    _mm_storeu_si128((__m128i *)(void *)(out + 16), v2);
    _mm_storeu_si128((__m128i *)(void *)(out + 24), v3);
    __m128i th = _mm_set1_epi16((short)thr);
    __m128i c0 = _mm_cmpeq_epi16(_mm_min_epu16(v0, th), v0);
    __m128i c1 = _mm_cmpeq_epi16(_mm_min_epu16(v1, th), v1);
    __m128i c2 = _mm_cmpeq_epi16(_mm_min_epu16(v2, th), v2);
    __m128i c3 = _mm_cmpeq_epi16(_mm_min_epu16(v3, th), v3);
    uint32_t lo16 = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(c0, c1));
    uint32_t hi16 = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(c2, c3));
    return lo16 | hi16 << 16;
}

static inline __mmask16 tail16(size_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* Sixteen bytes a step (the tail through masked loads, reading nothing past d). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512
sq8_x16(__mmask16 m, const uint8_t *c, const float *lo, const float *t)
{
    __m512 cf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, c)));
    return _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, t), cf, _mm512_maskz_loadu_ps(m, lo));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static float
sq8_l2sq_avx512(const float *q, const uint8_t *c, const float *lo, const float *t, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 e0 = _mm512_sub_ps(_mm512_loadu_ps(q + i), sq8_x16(0xffff, c + i, lo + i, t + i));
        __m512 e1 = _mm512_sub_ps(_mm512_loadu_ps(q + i + 16),
                                  sq8_x16(0xffff, c + i + 16, lo + i + 16, t + i + 16));
        s0 = _mm512_fmadd_ps(e0, e0, s0);
        s1 = _mm512_fmadd_ps(e1, e1, s1);
    }
    for (; i < d; i += 16) {
        __mmask16 m = tail16(d - i);
        __m512 e = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, q + i), sq8_x16(m, c + i, lo + i, t + i));
        s0 = _mm512_fmadd_ps(e, e, s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static float
sq8_dot_avx512(const float *q, const uint8_t *c, const float *lo, const float *t, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), sq8_x16(0xffff, c + i, lo + i, t + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16),
                             sq8_x16(0xffff, c + i + 16, lo + i + 16, t + i + 16), s1);
    }
    for (; i < d; i += 16) {
        __mmask16 m = tail16(d - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), sq8_x16(m, c + i, lo + i, t + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* 64 columns at a time (four accumulators share each broadcast), then 16 with a masked tail. */
__attribute__((target("avx512f"))) static void dots_t_avx512(const float *x, const float *ct,
                                                             size_t d, size_t k, float *out)
{
    size_t c = 0;
    for (; c + 64 <= k; c += 64) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i < d; i++) {
            __m512 xi = _mm512_set1_ps(x[i]);
            const float *row = ct + i * k + c;
            a0 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(row), a0);
            a1 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(row + 16), a1);
            a2 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(row + 32), a2);
            a3 = _mm512_fmadd_ps(xi, _mm512_loadu_ps(row + 48), a3);
        }
        _mm512_storeu_ps(out + c, a0);
        _mm512_storeu_ps(out + c + 16, a1);
        _mm512_storeu_ps(out + c + 32, a2);
        _mm512_storeu_ps(out + c + 48, a3);
    }
    for (; c < k; c += 16) {
        __mmask16 m = tail16(k - c);
        __m512 a0 = _mm512_setzero_ps();
        for (size_t i = 0; i < d; i++)
            a0 =
                _mm512_fmadd_ps(_mm512_set1_ps(x[i]), _mm512_maskz_loadu_ps(m, ct + i * k + c), a0);
        _mm512_mask_storeu_ps(out + c, m, a0);
    }
}

/* 4-bit tables through the AVX2 groups (one 512-bit register a block, eight blocks side by
 * side, measured no faster on Zen 4); other shapes one block at a time. */
__attribute__((target("avx512f,avx2,fma"))) static void
dots_blocks_avx512(const float *x, const float *ct, size_t d, size_t k, size_t nb, float *out)
{
    size_t b = k == 16 ? blocks16_avx2(x, ct, d, nb, out) : 0;
    for (; b < nb; b++)
        dots_t_avx512(x + b * d, ct + b * d * k, d, k, out + b * k);
}

/*
 * Four rows against 64 columns (sixteen accumulators: a column load serves four rows, so the
 * loop is bound by the FMAs rather than the loads, where the single-row kernel is not); the
 * last columns with masks, then the rows left one at a time.
 */
__attribute__((target("avx512f"))) static void dots_tn_avx512(const float *x, size_t nx, size_t ldx,
                                                              const float *ct, size_t d, size_t k,
                                                              float *out)
{
    size_t r = 0;
    for (; r + 4 <= nx; r += 4) {
        const float *x0 = x + r * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
        size_t c = 0;
        for (; c + 64 <= k; c += 64) {
            __m512 a[16];
            for (int t = 0; t < 16; t++)
                a[t] = _mm512_setzero_ps();
            for (size_t i = 0; i < d; i++) {
                const float *row = ct + i * k + c;
                __m512 l0 = _mm512_loadu_ps(row), l1 = _mm512_loadu_ps(row + 16);
                __m512 l2 = _mm512_loadu_ps(row + 32), l3 = _mm512_loadu_ps(row + 48);
                __m512 v0 = _mm512_set1_ps(x0[i]), v1 = _mm512_set1_ps(x1[i]);
                __m512 v2 = _mm512_set1_ps(x2[i]), v3 = _mm512_set1_ps(x3[i]);
                a[0] = _mm512_fmadd_ps(v0, l0, a[0]);
                a[1] = _mm512_fmadd_ps(v0, l1, a[1]);
                a[2] = _mm512_fmadd_ps(v0, l2, a[2]);
                a[3] = _mm512_fmadd_ps(v0, l3, a[3]);
                a[4] = _mm512_fmadd_ps(v1, l0, a[4]);
                a[5] = _mm512_fmadd_ps(v1, l1, a[5]);
                a[6] = _mm512_fmadd_ps(v1, l2, a[6]);
                a[7] = _mm512_fmadd_ps(v1, l3, a[7]);
                a[8] = _mm512_fmadd_ps(v2, l0, a[8]);
                a[9] = _mm512_fmadd_ps(v2, l1, a[9]);
                a[10] = _mm512_fmadd_ps(v2, l2, a[10]);
                a[11] = _mm512_fmadd_ps(v2, l3, a[11]);
                a[12] = _mm512_fmadd_ps(v3, l0, a[12]);
                a[13] = _mm512_fmadd_ps(v3, l1, a[13]);
                a[14] = _mm512_fmadd_ps(v3, l2, a[14]);
                a[15] = _mm512_fmadd_ps(v3, l3, a[15]);
            }
            for (int q = 0; q < 4; q++)
                for (int t = 0; t < 4; t++)
                    _mm512_storeu_ps(out + (r + (size_t)q) * k + c + 16 * (size_t)t, a[4 * q + t]);
        }
        for (; c < k; c += 16) {
            __mmask16 m = tail16(k - c);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (size_t i = 0; i < d; i++) {
                __m512 l = _mm512_maskz_loadu_ps(m, ct + i * k + c);
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(x0[i]), l, a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(x1[i]), l, a1);
                a2 = _mm512_fmadd_ps(_mm512_set1_ps(x2[i]), l, a2);
                a3 = _mm512_fmadd_ps(_mm512_set1_ps(x3[i]), l, a3);
            }
            _mm512_mask_storeu_ps(out + r * k + c, m, a0);
            _mm512_mask_storeu_ps(out + (r + 1) * k + c, m, a1);
            _mm512_mask_storeu_ps(out + (r + 2) * k + c, m, a2);
            _mm512_mask_storeu_ps(out + (r + 3) * k + c, m, a3);
        }
    }
    for (; r < nx; r++)
        dots_t_avx512(x + r * ldx, ct, d, k, out + r * k);
}

/*
 * Same operations as pq4_lut_scalar, one 16-float row per register (results are identical:
 * min and max are exact, and the multiply and add are rounded separately — the explicit
 * rounding forms keep the compiler from fusing them into an FMA the scalar code lacks).
 * The rounding operand must be a constant expression, at -O0 too.
 */
#define PQ4_RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
__attribute__((target("avx512f"))) static float pq4_lut_avx512(const float *a, const float *b,
                                                               const float *lo, float range,
                                                               size_t m, size_t m2, float *tab,
                                                               uint8_t *lut, float *bias)
{
    float sum = 0;
    if (lo == NULL) {
        float rg = 0;
        for (size_t j = 0; j < m; j++) {
            __m512 t = _mm512_loadu_ps(a + 16 * j);
            if (b != NULL)
                t = _mm512_add_round_ps(t, _mm512_loadu_ps(b + 16 * j), PQ4_RN);
            float mn = _mm512_reduce_min_ps(t), mx = _mm512_reduce_max_ps(t);
            _mm512_storeu_ps(tab + 16 * j, _mm512_sub_round_ps(t, _mm512_set1_ps(mn), PQ4_RN));
            rg = mx - mn > rg ? mx - mn : rg;
            sum += mn;
        }
        range = rg;
    }
    float qmax = st_pq4_qmax(m2), scale = range > 0 ? qmax / range : 1.0f;
    __m512 vs = _mm512_set1_ps(scale), half = _mm512_set1_ps(0.5f);
    __m512 vmax = _mm512_set1_ps(qmax), zero = _mm512_setzero_ps();
    for (size_t j = 0; j < m; j++) {
        __m512 t;
        if (lo == NULL) {
            t = _mm512_loadu_ps(tab + 16 * j);
        } else {
            t = _mm512_loadu_ps(a + 16 * j);
            if (b != NULL)
                t = _mm512_add_round_ps(t, _mm512_loadu_ps(b + 16 * j), PQ4_RN);
            t = _mm512_sub_round_ps(t, _mm512_set1_ps(lo[j]), PQ4_RN);
            sum += lo[j];
        }
        t = _mm512_add_round_ps(_mm512_mul_round_ps(t, vs, PQ4_RN), half, PQ4_RN);
        t = _mm512_min_ps(_mm512_max_ps(t, zero), vmax);
        _mm_storeu_si128((__m128i *)(void *)(lut + 16 * j),
                         _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t)));
    }
    *bias = sum;
    return scale;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

#define KERNELS(tag)                                                                               \
    {                                                                                              \
        .name = #tag, .l2sq = l2sq_##tag, .dot = dot_##tag, .pq4_block = pq4_block_##tag,          \
        .dots_t = dots_t_##tag, .dots_blocks = dots_blocks_##tag, .pq4_lut = pq4_lut_##tag,        \
        .dots_tn = dots_tn_##tag, .dotu8 = dotu8_##tag, .finite_prefix = finite_prefix_##tag,      \
        .argmin_l2 = argmin_l2_##tag, .dotu8_paired = dotu8p_##tag,                                \
        .dotu8_pair_max = DOTU8P_MAX_##tag, .dotu4 = dotu4_##tag, .sq8_l2sq = sq8_l2sq_##tag,      \
        .sq8_dot = sq8_dot_##tag, .sq_absmax = sq_absmax_##tag, .sq_round = sq_round_##tag         \
    }
/* The portable set has no 16-bit pairs to overflow: its dotu8 takes any bytes. */
#define dotu8p_scalar     dotu8_scalar
#define DOTU8P_MAX_scalar 0
#define DOTU8P_MAX_avx2   128
#define DOTU8P_MAX_avx512 128
/* 4-bit codes on AVX-512 machines: the AVX2 kernel (its 32-byte steps hold one 64-dimension
 * block; a 512-bit step would need the weights of two blocks shuffled together). */
#define dotu4_avx512 dotu4_avx2
/* The query's side of the traversal codes: once per query and part, a few hundred floats. */
#define sq_absmax_avx512 sq_absmax_avx2
#define sq_round_avx512  sq_round_avx2
static const struct st_kernels k_scalar = KERNELS(scalar);
static const struct st_kernels k_avx2 = KERNELS(avx2);
static const struct st_kernels k_avx512 = KERNELS(avx512);
#undef KERNELS
#undef dotu8p_scalar
#undef DOTU8P_MAX_scalar
#undef DOTU8P_MAX_avx2
#undef DOTU8P_MAX_avx512
#undef dotu4_avx512
#undef sq_absmax_avx512
#undef sq_round_avx512

const struct st_kernels *st_kernels_scalar(void)
{
    return &k_scalar;
}

/* The AVX2 and AVX-512 sets again with the VNNI byte dot product (vpdpbusd) where the CPU
 * has it; everything else is the same function. */
static struct st_kernels k_avx2_vnni, k_avx512_vnni;
static bool has_avxvnni, has_avx512vnni;
static pthread_once_t vnni_once = PTHREAD_ONCE_INIT;

static void vnni_init(void)
{
    /* CPUID directly: clang's __builtin_cpu_supports knows no "avxvnni". The sets these
     * patch are handed out only where AVX2 / AVX-512 (and the OS's state for them) are. */
    unsigned a, b, c, d;
    has_avxvnni = __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1);     /* EAX 4 */
    has_avx512vnni = __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((c >> 11) & 1); /* ECX 11 */
    k_avx2_vnni = k_avx2;
    k_avx2_vnni.dotu8 = k_avx2_vnni.dotu8_paired = dotu8_avxvnni; /* 32-bit sums: any bytes */
    k_avx2_vnni.dotu8_pair_max = 0;
    k_avx512_vnni = k_avx512;
    k_avx512_vnni.dotu8 = k_avx512_vnni.dotu8_paired = dotu8_avx512vnni;
    k_avx512_vnni.dotu8_pair_max = 0;
}

const struct st_kernels *st_kernels_avx2_novnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &k_avx2 : NULL;
}

const struct st_kernels *st_kernels_avx2(void)
{
    const struct st_kernels *k = st_kernels_avx2_novnni();
    pthread_once(&vnni_once, vnni_init);
    return k != NULL && has_avxvnni ? &k_avx2_vnni : k;
}

const struct st_kernels *st_kernels_avx512_novnni(void)
{
    __builtin_cpu_init();
    /* BW for fast-scan's byte shuffles, VL for the re-ranking codes' 16-byte masked loads
     * (every AVX-512 CPU since Skylake-SP has both). */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl")
               ? &k_avx512
               : NULL;
}

const struct st_kernels *st_kernels_avx512(void)
{
    const struct st_kernels *k = st_kernels_avx512_novnni();
    pthread_once(&vnni_once, vnni_init);
    return k != NULL && has_avx512vnni ? &k_avx512_vnni : k;
}

static const struct st_kernels *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    /* "scalar" / "avx2" / "avx512", or "avx2-novnni" / "avx512-novnni" (as on CPUs without
     * VNNI): tests, bench */
    const char *force = getenv("STRATA_KERNELS");
    const struct st_kernels *k = NULL;
    if (force != NULL && *force == '\0')
        force = NULL; /* set but empty: as unset */
    if (force == NULL || strcmp(force, "avx512") == 0)
        k = st_kernels_avx512();
    else if (strcmp(force, "avx512-novnni") == 0)
        k = st_kernels_avx512_novnni();
    bool novnni =
        force != NULL && (strcmp(force, "avx2-novnni") == 0 || strcmp(force, "avx512-novnni") == 0);
    if (k == NULL && (force == NULL || strcmp(force, "scalar") != 0))
        k = novnni ? st_kernels_avx2_novnni() : st_kernels_avx2();
    chosen = k ? k : &k_scalar;
}

const struct st_kernels *st_kernels(void)
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

st_dist_fn st_metric_fn(const struct st_kernels *k, enum st_metric m)
{
    if (m == ST_METRIC_L2)
        return k->l2sq;
    /* By the set's dot kernel, not its address: the VNNI sets are copies of these. */
    if (k->dot == dot_avx512)
        return neg_dot_avx512;
    if (k->dot == dot_avx2)
        return neg_dot_avx2;
    return neg_dot_scalar;
}

void st_normalize(float *v, size_t dim)
{
    float n = sqrtf(st_kernels()->dot(v, v, dim));
    if (n > 0)
        for (size_t i = 0; i < dim; i++)
            v[i] /= n;
}

/* ---- exact top-k -------------------------------------------------------------------------- */

/* Max-heap on dist: the root is the worst of the current top-k. */
static void heap_sift_down(struct st_hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].dist > h[m].dist)
            m = l;
        if (r < n && h[r].dist > h[m].dist)
            m = r;
        if (m == i)
            return;
        struct st_hit t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_sift_up(struct st_hit *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].dist >= h[i].dist)
            return;
        struct st_hit t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static int hit_cmp(const void *a, const void *b)
{
    /* A NaN distance (overflowing inputs) sorts after every number, NaNs by id: a total
     * order, so the result does not depend on the input's order (qsort needs one). */
    const struct st_hit *x = a, *y = b;
    bool xn = x->dist != x->dist, yn = y->dist != y->dist;
    if (xn != yn)
        return xn ? 1 : -1;
    if (!xn && x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void st_topk_push(struct st_hit *h, size_t *n, size_t cap, struct st_hit x)
{
    if (*n < cap) {
        h[*n] = x;
        heap_sift_up(h, (*n)++);
    } else if (cap > 0 && x.dist < h[0].dist) {
        h[0] = x;
        heap_sift_down(h, *n, 0);
    }
}

void st_hits_sort(struct st_hit *hits, size_t n)
{
    qsort(hits, n, sizeof(*hits), hit_cmp);
}

#define ST_SWAP(T, a, b)                                                                           \
    do {                                                                                           \
        T t_ = (a);                                                                                \
        (a) = (b);                                                                                 \
        (b) = t_;                                                                                  \
    } while (0)

/* Without branches: which of two candidates goes first is a coin toss to the predictor. */
static inline bool hit_less(struct st_hit a, struct st_hit b)
{
    return (a.dist < b.dist) | ((a.dist == b.dist) & (a.id < b.id));
}

/*
 * Quickselect with an out-of-place partition written without a branch on the comparison: each
 * element of the range is written to both free ends of tmp's range and the end it belongs to
 * moves by the comparison's outcome, then the range is copied back. An in-place Lomuto
 * partition (a swap with the boundary each step) made every step wait on the store before it;
 * Hoare's branched on every comparison, and half of them mispredicted: the selections of an
 * IVF-PQ scan's candidates were a tenth of a 4-bit query's time. The pivot (median of three)
 * is left out of both sides, so each round shrinks the range whatever the ties. Inputs of a
 * few sorted runs (two descending runs, an organ pipe) can make the median of three pick
 * pivots near the ends, round after round: after 2 log2(n) + 4 rounds the rest of the range is
 * sorted instead (introselect), O(n log n) at worst.
 */
void st_hits_select(struct st_hit *h, size_t n, size_t k, struct st_hit *tmp)
{
    if (k == 0 || k >= n)
        return;
    assert(tmp + n <= h || h + n <= tmp);
    size_t lo = 0, hi = n - 1, want = k - 1; /* the k-th smallest (index k - 1) in [lo, hi] */
    unsigned rounds = 2 * (64 - (unsigned)__builtin_clzll((unsigned long long)n)) + 4;
    while (lo < hi) {
        if (rounds-- == 0) {
            st_hits_sort(h + lo, hi - lo + 1);
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        if (hit_less(h[mid], h[lo]))
            ST_SWAP(struct st_hit, h[mid], h[lo]);
        if (hit_less(h[hi], h[lo]))
            ST_SWAP(struct st_hit, h[hi], h[lo]);
        if (hit_less(h[mid], h[hi]))
            ST_SWAP(struct st_hit, h[mid], h[hi]); /* the median of the three at hi */
        struct st_hit pivot = h[hi];
        /* tmp[lo, a) below the pivot, tmp(b, hi] not; a <= b throughout, a == b at the end
         * (hi - lo elements into hi - lo + 1 places): the pivot's place. */
        size_t a = lo, b = hi;
        for (size_t i = lo; i < hi; i++) {
            struct st_hit x = h[i];
            bool lt = hit_less(x, pivot);
            tmp[a] = x;
            tmp[b] = x;
            a += lt;
            b -= !lt;
        }
        tmp[a] = pivot;
        memcpy(h + lo, tmp + lo, (hi - lo + 1) * sizeof(*h));
        if (want == a)
            return;
        if (want < a)
            hi = a - 1;
        else
            lo = a + 1;
    }
}

size_t st_exact_topk(const float *query, const float *base, size_t n, size_t dim, enum st_metric m,
                     size_t k, st_filter_fn filter, void *fctx, struct st_hit *out)
{
    if (k == 0)
        return 0;
    st_dist_fn fn = st_metric_fn(st_kernels(), m);
    size_t h = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 4 < n)
            __builtin_prefetch(base + (i + 4) * dim);
        if (filter != NULL && !filter(fctx, (uint32_t)i))
            continue;
        st_topk_push(out, &h, k, (struct st_hit){(uint32_t)i, fn(query, base + i * dim, dim)});
    }
    st_hits_sort(out, h);
    return h;
}
