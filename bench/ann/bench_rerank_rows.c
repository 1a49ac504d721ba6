/*
 * bench_rerank_rows — what one IVF-PQ re-ranking bound costs (idx_refine_lower over a one-byte
 * code row), from memory and from cache, and how the prefetch distance moves it: the figures
 * behind docs/benchmarks.md, "Tables four queries at a time, and where the re-rank's time
 * goes". 60,000 rows of 784 dimensions (Fashion-MNIST's shape, 45 MiB of codes: beyond the
 * caches), 100 random candidates a query as a re-rank sees them.
 *
 *   bench_rerank_rows [--rows N] [--dim D] [--queries Q]
 *
 * Prints ns a candidate for: the bound with its row prefetched 0, 1, 2, 4, 8 candidates ahead;
 * the same rows again (in cache); the sq8 kernel alone, from memory and in cache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_refine.h"
#include "bench_micro.h"
#include "st_distance.h"

enum { CAND = 100 };

int main(int argc, char **argv)
{
    uint32_t n = 60000, dim = 784, nq = 3000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0)
            n = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dim") == 0)
            dim = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--queries") == 0)
            nq = (uint32_t)atoi(argv[i + 1]);
    }
    float *v = malloc((size_t)n * dim * sizeof(float)), *q = malloc(dim * sizeof(float));
    if (v == NULL || q == NULL)
        return 1;
    for (size_t i = 0; i < (size_t)n * dim; i++)
        v[i] = (float)(bench_next() % 2000) * 0.37f;
    struct idx_refine *r;
    if (idx_refine_build(v, n, dim, ST_METRIC_L2, &r) != ST_OK)
        return 1;
    const struct st_kernels *k = st_kernels();
    printf("%u rows x %u dims (codes %.1f MiB), %d candidates a query, %u queries, kernels=%s\n", n,
           dim, (double)n * dim / 1048576.0, CAND, nq, k->name);
    static const int dists[] = {0, 1, 2, 4, 8};
    uint32_t ids[CAND];
    double sink = 0;
    for (int kernel_only = 0; kernel_only < 2; kernel_only++)
        for (size_t di = 0; di < sizeof(dists) / sizeof(dists[0]); di++) {
            int ahead = dists[di];
            double cold = 0, warm = 0;
            for (uint32_t qi = 0; qi < nq; qi++) {
                for (uint32_t j = 0; j < dim; j++)
                    q[j] = v[(size_t)(bench_next() % n) * dim + j] + 1.5f;
                for (int c = 0; c < CAND; c++)
                    ids[c] = (uint32_t)(bench_next() % n);
                for (int pass = 0; pass < 2; pass++) { /* from memory, then in cache */
                    double t0 = bench_now_ns();
                    for (int c = 0; c < CAND; c++) {
                        if (ahead > 0 && c + ahead < CAND)
                            idx_refine_prefetch(r, ids[c + ahead]);
                        sink += kernel_only
                                    ? k->sq8_l2sq(q, idx_refine_row(r, ids[c]), r->lo, r->t, dim)
                                    : idx_refine_lower(r, k, q, 0, ids[c]);
                    }
                    double t = bench_now_ns() - t0;
                    if (pass == 0)
                        cold += t;
                    else
                        warm += t;
                }
            }
            printf("%-16s prefetch %d ahead: %6.1f ns a candidate from memory, %6.1f in cache\n",
                   kernel_only ? "sq8 kernel alone" : "bound", ahead, cold / nq / CAND,
                   warm / nq / CAND);
        }
    printf("(checksum %g)\n", sink);
    idx_refine_free(r);
    free(v);
    free(q);
    return 0;
}
