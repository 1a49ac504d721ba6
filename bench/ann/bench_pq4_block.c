/*
 * bench_pq4_block — what the 4-bit fast-scan kernel (st_kernels.pq4_block) costs a block of 32
 * codes, in every kernel set this CPU runs: the figures behind docs/benchmarks.md, "Two
 * lookups summed in a byte". Blocks of m2 = 196 sub-quantizers (Fashion-MNIST's 4-bit index),
 * grouped in 256 lists of 8 blocks (6 MiB, as that index's codes: beyond the L2 cache, within
 * most L3s), scanned as a query's probes reach them: random lists, each list's blocks in order;
 * and one list over and over (in L1 and L2).
 *
 *   bench_pq4_block [--m2 M] [--lists L] [--probes P]
 *
 * Prints ns a block for each set, both ways, after checking that every set's sums agree.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_micro.h"
#include "st_distance.h"

enum { PER_LIST = 8 };

int main(int argc, char **argv)
{
    size_t m2 = 196, nlist = 256, probes = 100000;
    for (int i = 1; i < argc; i += 2) {
        size_t *to = strcmp(argv[i], "--m2") == 0       ? &m2
                     : strcmp(argv[i], "--lists") == 0  ? &nlist
                     : strcmp(argv[i], "--probes") == 0 ? &probes
                                                        : NULL;
        char *end = NULL;
        long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
        if (to == NULL || end == NULL || *end != '\0' || v < 1 || v > 10000000) {
            fprintf(stderr, "usage: bench_pq4_block [--m2 M (even, 2..65534)] [--lists L] "
                            "[--probes P] (L, P: 1..10000000)\n");
            return 2;
        }
        *to = (size_t)v;
    }
    if (m2 % 2 != 0 || m2 > 65534) {
        fprintf(stderr, "bench_pq4_block: --m2 must be even and at most 65534\n");
        return 2;
    }
    size_t bs = 16 * m2, nb = nlist * PER_LIST;
    uint8_t *codes = malloc(nb * bs), *lut = malloc(bs);
    uint32_t *order = malloc(probes * sizeof(uint32_t));
    if (codes == NULL || lut == NULL || order == NULL) {
        fprintf(stderr, "bench_pq4_block: out of memory (%zu MiB of codes)\n", nb * bs / 1048576);
        return 1;
    }
    for (size_t i = 0; i < nb * bs; i++)
        codes[i] = (uint8_t)bench_next();
    uint32_t emax = (uint32_t)st_pq4_qmax(m2); /* entries as pq4_lut makes them */
    for (size_t i = 0; i < bs; i++)
        lut[i] = (uint8_t)(bench_next() % (emax + 1));
    for (size_t i = 0; i < probes; i++)
        order[i] = (uint32_t)(bench_next() % nlist);
    const struct st_kernels *ks[] = {st_kernels_scalar(), st_kernels_avx2(), st_kernels_avx512()};
    /* The threshold: the first block's 8th smallest sum, so that masks are neither all ones
     * nor all zeros (a scan's threshold passes a few vectors a block). */
    uint16_t want[32], got[32], thr = 0;
    (void)ks[0]->pq4_block(codes, lut, m2, 0, want);
    for (int i = 0; i < 32; i++) {
        int below = 0;
        for (int j = 0; j < 32; j++)
            below += want[j] < want[i];
        if (below <= 7 && want[i] > thr)
            thr = want[i];
    }
    for (size_t b = 0; b < nb; b += 97) {
        uint32_t wm = ks[0]->pq4_block(codes + b * bs, lut, m2, thr, want);
        for (size_t k = 1; k < 3; k++)
            if (ks[k] != NULL && (ks[k]->pq4_block(codes + b * bs, lut, m2, thr, got) != wm ||
                                  memcmp(want, got, sizeof(want)) != 0)) {
                fprintf(stderr, "bench_pq4_block: %s differs from scalar\n", ks[k]->name);
                return 1;
            }
    }
    printf("m2 = %zu, %zu lists of %d blocks (%.1f MiB), %zu probes\n", m2, nlist, PER_LIST,
           (double)(nb * bs) / 1048576.0, probes);
    printf("%-8s %14s %14s\n", "kernels", "ns/block lists", "ns/block cache");
    uint32_t sink = 0; /* the masks' sum, printed: keeps the calls */
    for (size_t k = 0; k < 3; k++) {
        if (ks[k] == NULL)
            continue;
        size_t rounds = k == 0 ? probes / 10 + 1 : probes; /* the scalar set is slow */
        double t0 = bench_now_ns();
        for (size_t p = 0; p < rounds; p++)
            for (size_t b = 0; b < PER_LIST; b++)
                sink += ks[k]->pq4_block(codes + ((size_t)order[p] * PER_LIST + b) * bs, lut, m2,
                                         thr, got);
        double t1 = bench_now_ns();
        for (size_t p = 0; p < rounds; p++)
            for (size_t b = 0; b < PER_LIST; b++)
                sink += ks[k]->pq4_block(codes + b * bs, lut, m2, thr, got);
        double t2 = bench_now_ns();
        printf("%-8s %14.1f %14.1f\n", ks[k]->name, (t1 - t0) / (rounds * PER_LIST),
               (t2 - t1) / (rounds * PER_LIST));
    }
    printf("(masks summed: %u)\n", sink);
    free(codes);
    free(lut);
    free(order);
    return 0;
}
