/*
 * Re-ranking codes (idx_refine.h). The exactness argument: x~ is representable (t a power of
 * two, lo = L t with |L| + 255 < 2^24), so every kernel variant forms the same x~; eps and nrm
 * are summed in double and rounded up. A float sum of dim terms, each rounded, is within
 * gamma = (2 dim + 4) 2^-24 (twice the classic bound dim u, for the pairwise and lane orders the
 * kernels use) of the exact sum of the rounded terms, relative to the sum of their magnitudes.
 */
#include "idx_refine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define L_MAX 16776960.0f /* 2^24 - 256: |L| + 255 stays an exact float integer */

static float round_up(double v)
{
    float f = (float)v;
    if ((double)f < v)
        f = nextafterf(f, INFINITY);
    return nextafterf(f, INFINITY); /* one more step: the double sum's own rounding */
}

int idx_refine_build(const float *raw, uint32_t n, uint32_t dim, enum st_metric metric,
                     struct idx_refine **out)
{
    *out = NULL;
    if (dim == 0)
        return ST_EINVAL;
    const struct st_kernels *k = st_kernels();
    struct idx_refine *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return ST_ENOMEM;
    r->n = n;
    r->dim = dim;
    r->metric = metric;
    r->gamma = (float)((2.0 * dim + 4) * 0x1p-24);
    size_t rows = n > 0 ? n : 1; /* never malloc(0), which may return NULL */
    r->codes = malloc(rows * dim);
    r->lo = malloc(dim * sizeof(float));
    r->t = malloc(dim * sizeof(float));
    r->eps = malloc(rows * sizeof(float));
    r->nrm = malloc(rows * sizeof(float));
    if (r->codes == NULL || r->lo == NULL || r->t == NULL || r->eps == NULL || r->nrm == NULL) {
        idx_refine_free(r);
        return ST_ENOMEM;
    }
    /* Each dimension's least and greatest value, in one pass over the rows (a column at a time
     * would stride through the whole segment dim times). */
    float *mn = r->t, *mx = r->lo; /* scratch until each dimension's step is chosen */
    for (uint32_t j = 0; j < dim; j++) {
        mn[j] = n > 0 ? INFINITY : 0;
        mx[j] = n > 0 ? -INFINITY : 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        const float *x = raw + (size_t)i * dim;
        if (k->finite_prefix(x, dim) != dim) {
            idx_refine_free(r);
            return ST_EINVAL;
        }
        for (uint32_t j = 0; j < dim; j++) {
            mn[j] = x[j] < mn[j] ? x[j] : mn[j];
            mx[j] = x[j] > mx[j] ? x[j] : mx[j];
        }
    }
    for (uint32_t j = 0; j < dim; j++) {
        /* The least power of two that spans the range in 255 steps (ldexpf: exact), then as
         * many doublings as keep L = floor(mn / t) and mx / t within 2^24 - 256. */
        float t = 0x1p-126f;
        float lo_j = mn[j], hi_j = mx[j];
        float range = hi_j - lo_j; /* may be inf: |hi - lo| <= 2 FLT_MAX */
        if (!isfinite(range))
            t = 0x1p127f;
        else
            while (t * 255.0f < range)
                t *= 2;
        while (t < 0x1p127f && (fabsf(lo_j) / t >= L_MAX || fabsf(hi_j) / t >= L_MAX))
            t *= 2;
        float lo = floorf(lo_j / t) * t;
        if (!isfinite(lo) || !isfinite(lo + t * 255)) {
            idx_refine_free(r); /* a span past FLT_MAX: no code value would be exact */
            return ST_EINVAL;
        }
        r->t[j] = t;
        r->lo[j] = lo;
    }
    for (uint32_t i = 0; i < n; i++) {
        const float *x = raw + (size_t)i * dim;
        uint8_t *c = r->codes + (size_t)i * dim;
        double e = 0, nn = 0;
        for (uint32_t j = 0; j < dim; j++) {
            float q = (x[j] - r->lo[j]) / r->t[j];
            float cj = q < 0 ? 0 : q > 255 ? 255 : rintf(q);
            c[j] = (uint8_t)cj;
            double xt = (double)r->lo[j] + (double)r->t[j] * cj; /* == the float x~ */
            double d = (double)x[j] - xt;
            e += d * d;
            nn += xt * xt;
        }
        r->eps[i] = round_up(sqrt(e));
        r->nrm[i] = round_up(sqrt(nn));
    }
    *out = r;
    return ST_OK;
}

void idx_refine_free(struct idx_refine *r)
{
    if (r == NULL)
        return;
    free(r->codes);
    free(r->lo);
    free(r->t);
    free(r->eps);
    free(r->nrm);
    free(r);
}

size_t idx_refine_memory(const struct idx_refine *r)
{
    return r == NULL ? 0
                     : (size_t)r->n * r->dim + 2 * (size_t)r->dim * sizeof(float) +
                           2 * (size_t)r->n * sizeof(float);
}

float idx_refine_qnorm(const float *q, uint32_t dim)
{
    double s = 0; /* double: no square of a float underflows or overflows */
    for (uint32_t j = 0; j < dim; j++)
        s += (double)q[j] * q[j];
    return round_up(sqrt(s) * (1 + 0x1p-40));
}

/* Beyond this a sum may have overflowed part way (a lane's partial sum) where the other did not:
 * no bound. */
#define SUM_MAX 0x1p120f

float idx_refine_lower(const struct idx_refine *r, const struct st_kernels *k, const float *q,
                       float qn, uint32_t id)
{
    const uint8_t *c = idx_refine_row(r, id);
    float g = r->gamma, lb;
    /* Each rounded term of either sum may also be off by up to 2^-149 absolutely (a result in
     * the subnormal range), which the relative gamma does not cover. */
    float tiny = (float)r->dim * 0x1p-148f;
    if (r->metric == ST_METRIC_L2) {
        /* ||q - x|| >= ||q - x~|| - eps; the code sum and the exact one each within gamma (and
         * tiny). */
        float ds = k->sq8_l2sq(q, c, r->lo, r->t, r->dim);
        if (!(ds <= SUM_MAX) || !(r->eps[id] <= 0x1p59f))
            return -INFINITY; /* NaN, or near overflow: nothing known */
        float lo_ds = ds / (1 + g) - tiny;
        float a = sqrtf(lo_ds > 0 ? lo_ds : 0) * (1 - 0x1p-22f) - r->eps[id];
        if (a <= 0)
            return 0;
        lb = a * a * (1 - g) * (1 - 0x1p-21f) - tiny;
        return lb > 0 ? lb : 0;
    } else {
        /* -<q, x> >= -<q, x~> - qn eps; the code sum within gamma qn nrm, the exact sum within
         * gamma qn (nrm + eps). */
        float dt = k->sq8_dot(q, c, r->lo, r->t, r->dim);
        float e = r->eps[id], nm = r->nrm[id];
        /* Every partial sum of either is within qn (nm + e) in magnitude. */
        if (!(qn * (nm + e) <= SUM_MAX) || dt != dt)
            return -INFINITY;
        lb = -dt - qn * (e + g * nm + g * (nm + e)) * (1 + 0x1p-20f);
        lb -= fabsf(dt) * 0x1p-22f + 2 * tiny;
    }
    return lb == lb ? lb : -INFINITY;
}
