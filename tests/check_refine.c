/* check_refine — IVF-PQ re-ranking codes (indexer/idx_refine.h): the kernels, the lower bound
 * on adversarial value layouts, and searches that return exactly what re-ranking every
 * candidate returns, from fewer exact distances. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "idx_ivfpq.h"
#include "idx_refine.h"
#include "st_distance.h"
#include "st_test.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) /* [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* The kernel sets this CPU can run. */
static size_t kernel_sets(const struct st_kernels *ks[3])
{
    size_t n = 0;
    ks[n++] = st_kernels_scalar();
    if (st_kernels_avx2() != NULL)
        ks[n++] = st_kernels_avx2();
    if (st_kernels_avx512() != NULL)
        ks[n++] = st_kernels_avx512();
    return n;
}

/* Each set's sq8 sums against a double reference over x~ = lo + t c, every length 0..70 and
 * a long one (masked tails, the scalar remainder). */
START_TEST(test_sq8_kernels)
{
    const struct st_kernels *ks[3];
    size_t nk = kernel_sets(ks);
    enum { D = 832 };
    float q[D], lo[D], t[D];
    uint8_t c[D + 64];
    for (size_t j = 0; j < D; j++) {
        q[j] = frand() * 100;
        t[j] = ldexpf(1, (int)(j % 7) - 3);
        lo[j] = t[j] * (float)((int)(frand() * 1000));
        c[j] = (uint8_t)(rng >> 24);
    }
    for (size_t d = 0; d <= 71; d++) {
        size_t len = d == 71 ? 803 : d; /* 803: a long one with a tail */
        double l2 = 0, dot = 0, mag = 0;
        for (size_t j = 0; j < len; j++) {
            double x = (double)lo[j] + (double)t[j] * c[j];
            l2 += (q[j] - x) * (q[j] - x);
            dot += q[j] * x;
            mag += fabs(q[j] * x);
        }
        for (size_t i = 0; i < nk; i++) {
            float a = ks[i]->sq8_l2sq(q, c, lo, t, len), b = ks[i]->sq8_dot(q, c, lo, t, len);
            ck_assert_msg(fabs(a - l2) <= 1e-5 * l2 + 1e-30, "%s l2 d=%zu: %g vs %g", ks[i]->name,
                          len, a, l2);
            ck_assert_msg(fabs(b - dot) <= 1e-5 * mag + 1e-30, "%s dot d=%zu: %g vs %g",
                          ks[i]->name, len, b, dot);
        }
    }
}
END_TEST

/* Layouts that break a careless quantizer: offsets far beyond the spread (1e6 + noise), one
 * value per dimension, ranges near FLT_MIN, huge ranges, mixed scales, negative values, and
 * outliers that stretch a dimension's range. Queries inside and far outside the data. */
static float *layout(int kind, uint32_t n, uint32_t dim)
{
    float *v = malloc((size_t)n * dim * sizeof(float));
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < dim; j++) {
            float r = frand();
            float x;
            switch (kind) {
            case 0:
                x = r * 3;
                break; /* plain */
            case 1:
                x = 1e6f + r * 0.01f;
                break; /* offset >> spread */
            case 2:
                x = j % 3 == 0 ? 42.5f : r;
                break; /* constant dimensions */
            case 3:
                x = r * 1e-36f;
                break; /* near FLT_MIN */
            case 4:
                x = r * 1e30f;
                break; /* huge */
            case 5:
                x = r * ldexpf(1, (int)(j % 40) - 20);
                break; /* mixed scales */
            case 6:
                x = i == 7 && j % 5 == 0 ? 1e4f : r - 5;
                break; /* an outlier row */
            case 7:
                x = 1e6f + (float)(int)((r + 1) * 100);
                break; /* exact codes (eps 0) */
            case 8:    /* differences whose squares and products are subnormal */
                x = ldexpf((float)(int)((r + 1) * 100) + 0.25f * frand(), -73);
                break;
            default: /* sums that overflow part way */
                x = r * 3e37f;
                break;
            }
            v[(size_t)i * dim + j] = x;
        }
    return v;
}

/* For every kernel set, metric, layout, query and row: the bound is at most the exact
 * distance the metric's kernel computes. A bound that dropped the rounding allowance or eps
 * fails on the offset and FLT_MIN layouts. */
START_TEST(test_refine_lower_bound)
{
    const struct st_kernels *ks[3];
    size_t nks = kernel_sets(ks);
    static const uint32_t dims[] = {1, 5, 16, 33, 100, 384};
    uint64_t checked = 0, tight = 0;
    for (int kind = 0; kind < 10; kind++)
        for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            uint32_t dim = dims[di], n = 60;
            float *v = layout(kind, n, dim);
            for (int metric = 0; metric < 2; metric++) {
                enum st_metric m = metric == 0 ? ST_METRIC_L2 : ST_METRIC_IP;
                struct idx_refine *r;
                ck_assert_int_eq(idx_refine_build(v, n, dim, m, &r), ST_OK);
                for (uint32_t qi = 0; qi < 20; qi++) {
                    float *q = malloc(dim * sizeof(float));
                    /* rows, near rows, far away, and signs alternating (inner products whose
                     * terms cancel: the sums' rounding is all the bound has to allow for) */
                    for (uint32_t j = 0; j < dim; j++)
                        q[j] = qi < 4    ? v[(size_t)qi * dim + j]
                               : qi < 8  ? v[(size_t)qi * dim + j] * (1 + 1e-6f * frand())
                               : qi < 12 ? frand() * ldexpf(1, (int)qi * 3)
                               : qi < 16
                                   ? (j % 2 ? 1.0f : -1.0f) * (1 + 1e-3f * frand())
                                   /* tiny norms: float squares of q underflow */
                                   : v[(size_t)qi * dim + j] * ldexpf(1, -60 - 5 * (int)(qi - 16));
                    for (size_t s = 0; s < nks; s++) {
                        st_dist_fn dist = st_metric_fn(ks[s], m);
                        float qn = idx_refine_qnorm(q, dim);
                        for (uint32_t id = 0; id < n; id++) {
                            float lb = idx_refine_lower(r, ks[s], q, qn, id);
                            float d = dist(q, v + (size_t)id * dim, dim);
                            if (d != d || d == INFINITY)
                                continue; /* NaN (inf - inf), or +inf: any bound holds */
                            ck_assert_msg(lb <= d,
                                          "kind %d dim %u %s %s q %u id %u: bound %.9g > exact "
                                          "%.9g",
                                          kind, dim, m == ST_METRIC_L2 ? "l2" : "ip", ks[s]->name,
                                          qi, id, lb, d);
                            checked++;
                            tight += m == ST_METRIC_L2 ? lb >= 0.9f * d : lb >= d - 0.1f * fabsf(d);
                        }
                    }
                    free(q);
                }
                idx_refine_free(r);
            }
            free(v);
        }
    /* Not vacuous: most bounds are within 10 % of the distance (plain data, 8 bits). */
    ck_assert_uint_gt(tight, checked / 2);
}
END_TEST

START_TEST(test_refine_build_refuses)
{
    float v[8] = {1, 2, 3, 4, 5, 6, 7, NAN};
    struct idx_refine *r = (struct idx_refine *)1;
    ck_assert_int_eq(idx_refine_build(v, 2, 4, ST_METRIC_L2, &r), ST_EINVAL);
    ck_assert_ptr_null(r);
    v[7] = INFINITY;
    ck_assert_int_eq(idx_refine_build(v, 2, 4, ST_METRIC_L2, &r), ST_EINVAL);
    ck_assert_int_eq(idx_refine_build(v, 1, 0, ST_METRIC_L2, &r), ST_EINVAL);
    /* n = 0: codes for nothing, a bound never asked. */
    ck_assert_int_eq(idx_refine_build(v, 0, 4, ST_METRIC_L2, &r), ST_OK);
    ck_assert_uint_eq(r->n, 0);
    idx_refine_free(r);
    /* Every x~ is exact: t a power of two, lo a multiple of it, codes within 0..255. */
    float *w = layout(1, 50, 20);
    ck_assert_int_eq(idx_refine_build(w, 50, 20, ST_METRIC_L2, &r), ST_OK);
    for (uint32_t j = 0; j < 20; j++) {
        int e;
        ck_assert_float_eq(frexpf(r->t[j], &e), 0.5f);
        ck_assert_float_eq(fmodf(r->lo[j], r->t[j]), 0);
        for (uint32_t i = 0; i < 50; i++) {
            float x = r->lo[j] + r->t[j] * idx_refine_row(r, i)[j];
            ck_assert_float_eq((double)x,
                               (double)r->lo[j] + (double)r->t[j] * idx_refine_row(r, i)[j]);
        }
    }
    idx_refine_free(r);
    free(w);
}
END_TEST

/* Three rows of D = 16 dimensions, each row one value a (0, x, y) in every dimension, and a query
 * of value b: the bound holds in every kernel set against the metric's exact distance. */
static void rows_bound_holds(float x, float y, float b, enum st_metric m)
{
    enum { D = 16 };
    float v[3 * D], q[D];
    for (int j = 0; j < D; j++) {
        v[j] = 0;
        v[D + j] = x;
        v[2 * D + j] = y;
        q[j] = b;
    }
    const struct st_kernels *ks[3];
    size_t nks = kernel_sets(ks);
    struct idx_refine *r;
    ck_assert_int_eq(idx_refine_build(v, 3, D, m, &r), ST_OK);
    float qn = idx_refine_qnorm(q, D);
    for (size_t s = 0; s < nks; s++)
        for (uint32_t id = 0; id < 3; id++) {
            float d = st_metric_fn(ks[s], m)(q, v + (size_t)id * D, D);
            ck_assert_msg(idx_refine_lower(r, ks[s], q, qn, id) <= d, "%s id %u: %g > %g",
                          ks[s]->name, id, idx_refine_lower(r, ks[s], q, qn, id), d);
        }
    idx_refine_free(r);
}

/* The reviews' counter-examples. L2: every square of the query's difference from the third row
 * rounds to 0 (its exact distance is 0), while its code distance is a few subnormal steps.
 * Inner product: every code product of the second row is 2^-150 and rounds to 0 (ties to
 * even), every exact one rounds up to 2^-149: exact -16 2^-149, the code sum 0. */
START_TEST(test_refine_subnormal_terms)
{
    rows_bound_holds(200 * 0x1p-73f, 10.2525f * 0x1p-73f, 10.5f * 0x1p-73f, ST_METRIC_L2);
    rows_bound_holds(1.1f * 0x1p-75f, 200 * 0x1p-75f, 0x1p-75f, ST_METRIC_IP);
    /* A dimension whose values span more than FLT_MAX: no exact codes, refused. */
    float w[2] = {-3e38f, 3e38f};
    struct idx_refine *r = (struct idx_refine *)1;
    ck_assert_int_eq(idx_refine_build(w, 2, 1, ST_METRIC_L2, &r), ST_EINVAL);
    ck_assert_ptr_null(r);
}
END_TEST

static bool not_fifth(void *ctx, uint32_t id)
{
    (void)ctx;
    return id % 5 != 0;
}

/* Clustered data (values not bytes): searches through the codes give the very hits, distances
 * and order of re-ranking every candidate, one query at a time, batched, bounded, filtered, and
 * over members sharing a quantizer (one without codes), at 8 and 4 bits, L2 and inner product;
 * and they compute fewer exact distances. _i: 0 L2 8 bits, 1 L2 4 bits, 2 IP 4 bits, 3 IP 8. */
START_TEST(test_refine_same_hits)
{
    enum { N = 3000, D = 52, NQ = 60, K = 10 }; /* 52: the kernels' tails too */
    rng = 99 + (uint64_t)_i;
    float *base = malloc((size_t)N * D * sizeof(float)),
          *qs = malloc((size_t)NQ * D * sizeof(float));
    float cen[16][D];
    for (int c = 0; c < 16; c++)
        for (int j = 0; j < D; j++)
            cen[c][j] = frand() * 5;
    for (uint32_t i = 0; i < N + NQ; i++) {
        float *x = i < N ? base + (size_t)i * D : qs + (size_t)(i - N) * D;
        int c = (int)((frand() + 1) * 8) % 16;
        for (int j = 0; j < D; j++)
            x[j] = cen[c][j] + frand() + frand();
    }
    /* Near-duplicates: ties in the codes and close exact distances. */
    memcpy(base + (size_t)11 * D, base + (size_t)10 * D, D * sizeof(float));
    base[(size_t)12 * D] = base[(size_t)10 * D] + 1e-4f;
    memcpy(base + (size_t)12 * D + 1, base + (size_t)10 * D + 1, (D - 1) * sizeof(float));
    memcpy(qs, base + (size_t)10 * D, D * sizeof(float));
    /* Tiny queries: an inner product's ranking does not depend on the query's scale, its float
     * norm does (squares underflow); at L2 the distances are the data's own. */
    for (int j = 0; j < D; j++)
        qs[(size_t)1 * D + j] *= 0x1p-80f;
    /* 13 copies of one vector, ids apart, and a query on it: at L2 more than k candidates at
     * distance 0 exactly, whose bounds are 0 too; the k hits are the lowest ids among them. */
    for (uint32_t i = 0; i < 13; i++)
        memcpy(base + (size_t)(i * 200 + 5) * D, qs + (size_t)(NQ - 1) * D, D * sizeof(float));
    enum st_metric metric = _i == 0 || _i == 1 ? ST_METRIC_L2 : ST_METRIC_IP;
    struct idx_ivfpq_opts o = {.dim = D,
                               .metric = metric,
                               .nlist = 32,
                               .m = 13,
                               .nbits = _i == 1 || _i == 2 ? 4 : 8,
                               .seed = 5,
                               .threads = 1};
    struct idx_ivfpq *ix;
    ck_assert_int_eq(idx_ivfpq_build(&o, base, N, &ix), ST_OK);
    struct idx_refine *rc;
    ck_assert_int_eq(idx_refine_build(base, N, D, metric, &rc), ST_OK);
    struct idx_ivfpq_searcher *plain = idx_ivfpq_searcher_new(ix),
                              *coded = idx_ivfpq_searcher_new(ix);
    ck_assert_int_eq(idx_ivfpq_searcher_refine(plain, rc), ST_OK);
    ck_assert_int_eq(idx_ivfpq_searcher_refine(plain, NULL), ST_OK);
    ck_assert_int_eq(idx_ivfpq_searcher_refine(coded, rc), ST_OK);
    static const uint32_t nprobes[] = {1, 4, 32};
    static const uint32_t reranks[] = {0, 11, 40, 200};
    for (size_t pi = 0; pi < 3; pi++)
        for (size_t ri = 0; ri < 4; ri++)
            for (int mode = 0; mode < 3; mode++) /* plain, filtered, bounded */
                for (uint32_t q = 0; q < NQ; q++) {
                    const float *qv = qs + (size_t)q * D;
                    struct st_hit a[K], b[K];
                    st_filter_fn f = mode == 1 ? not_fifth : NULL;
                    float bound = INFINITY;
                    if (mode == 2) { /* the 4th best of the full search as the bound */
                        size_t n = idx_ivfpq_search(plain, qv, K, nprobes[pi], reranks[ri], base,
                                                    NULL, NULL, a);
                        bound = n > 3 ? a[3].dist : INFINITY;
                    }
                    size_t na = idx_ivfpq_search_bound(plain, qv, K, nprobes[pi], reranks[ri], base,
                                                       bound, f, NULL, a);
                    size_t nb = idx_ivfpq_search_bound(coded, qv, K, nprobes[pi], reranks[ri], base,
                                                       bound, f, NULL, b);
                    ck_assert_uint_eq(na, nb);
                    for (size_t i = 0; i < na; i++) {
                        ck_assert_msg(
                            a[i].id == b[i].id && a[i].dist == b[i].dist,
                            "nprobe %u rerank %u mode %d q %u hit %zu: %u %.9g vs %u %.9g",
                            nprobes[pi], reranks[ri], mode, q, i, a[i].id, a[i].dist, b[i].id,
                            b[i].dist);
                    }
                }
    /* Fewer exact distances: at rerank 200 the codes leave most candidates out. */
    uint64_t p0 = idx_ivfpq_searcher_exact(plain), c0 = idx_ivfpq_searcher_exact(coded);
    struct st_hit h[NQ * K];
    size_t cnt[NQ], cnt2[NQ];
    ck_assert_int_eq(idx_ivfpq_search_batch(plain, qs, NQ, K, 8, 200, base, NULL, NULL, h, cnt),
                     ST_OK);
    struct st_hit h2[NQ * K];
    ck_assert_int_eq(idx_ivfpq_search_batch(coded, qs, NQ, K, 8, 200, base, NULL, NULL, h2, cnt2),
                     ST_OK);
    for (uint32_t q = 0; q < NQ; q++) {
        ck_assert_uint_eq(cnt[q], cnt2[q]);
        ck_assert(memcmp(h + q * K, h2 + q * K, cnt[q] * sizeof(h[0])) == 0);
    }
    uint64_t pe = idx_ivfpq_searcher_exact(plain) - p0, ce = idx_ivfpq_searcher_exact(coded) - c0;
    ck_assert_uint_eq(pe, (uint64_t)NQ * 200);
    ck_assert_msg(ce * 3 < pe, "exact distances: %llu with codes, %llu without",
                  (unsigned long long)ce, (unsigned long long)pe);
    ck_assert_uint_ge(ce, (uint64_t)NQ * K);

    /* Members sharing the quantizer, the second without codes: the same as none have them. */
    struct idx_ivfpq *half;
    ck_assert_int_eq(idx_ivfpq_adopt(ix, base, N / 2, 1, &half), ST_OK);
    struct idx_ivfpq *rest;
    ck_assert_int_eq(idx_ivfpq_adopt(ix, base + (size_t)(N / 2) * D, N - N / 2, 1, &rest), ST_OK);
    struct idx_refine *rc1;
    ck_assert_int_eq(idx_refine_build(base, N / 2, D, metric, &rc1), ST_OK);
    for (int with_second = 0; with_second < 2; with_second++) {
        struct idx_refine *rc2 = NULL;
        if (with_second)
            ck_assert_int_eq(
                idx_refine_build(base + (size_t)(N / 2) * D, N - N / 2, D, metric, &rc2), ST_OK);
        for (int mode = 0; mode < 3; mode++) { /* plain, filtered (the second member), bounded */
            st_filter_fn f = mode == 1 ? not_fifth : NULL;
            struct idx_ivfpq_member m0[2] = {{half, base, NULL, NULL, NULL},
                                             {rest, base + (size_t)(N / 2) * D, f, NULL, NULL}};
            struct idx_ivfpq_member m1[2] = {{half, base, NULL, NULL, rc1},
                                             {rest, base + (size_t)(N / 2) * D, f, NULL, rc2}};
            for (uint32_t q = 0; q < NQ; q++) {
                struct st_hit a[K], b[K];
                uint32_t wa[K], wb[K];
                size_t na, nb;
                float bound = INFINITY;
                if (mode == 2) {
                    ck_assert_int_eq(idx_ivfpq_search_shared(plain, m0, 2, qs + (size_t)q * D, K, 4,
                                                             40, INFINITY, a, wa, &na),
                                     ST_OK);
                    bound = na > 2 ? a[2].dist : INFINITY;
                }
                ck_assert_int_eq(idx_ivfpq_search_shared(plain, m0, 2, qs + (size_t)q * D, K, 4, 40,
                                                         bound, a, wa, &na),
                                 ST_OK);
                ck_assert_int_eq(idx_ivfpq_search_shared(coded, m1, 2, qs + (size_t)q * D, K, 4, 40,
                                                         bound, b, wb, &nb),
                                 ST_OK);
                ck_assert_uint_eq(na, nb);
                ck_assert(memcmp(a, b, na * sizeof(a[0])) == 0);
                ck_assert(memcmp(wa, wb, na * sizeof(wa[0])) == 0);
            }
        }
        /* Codes of another index are refused, not read past their rows. */
        struct idx_ivfpq_member bad[2] = {{half, base, NULL, NULL, rc},
                                          {rest, base + (size_t)(N / 2) * D, NULL, NULL, rc2}};
        struct st_hit hb[K];
        uint32_t wbad[K];
        size_t nbad;
        ck_assert_int_eq(
            idx_ivfpq_search_shared(coded, bad, 2, qs, K, 4, 40, INFINITY, hb, wbad, &nbad),
            ST_EINVAL);
        idx_refine_free(rc2);
    }
    idx_refine_free(rc1);
    idx_ivfpq_free(half);
    idx_ivfpq_free(rest);
    idx_ivfpq_searcher_free(plain);
    idx_ivfpq_searcher_free(coded);
    idx_refine_free(rc);
    idx_ivfpq_free(ix);
    free(base);
    free(qs);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("refine");
    TCase *tc = tcase_create("refine");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_sq8_kernels);
    tcase_add_test(tc, test_refine_lower_bound);
    tcase_add_test(tc, test_refine_build_refuses);
    tcase_add_test(tc, test_refine_subnormal_terms);
    tcase_add_loop_test(tc, test_refine_same_hits, 0, 4);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
