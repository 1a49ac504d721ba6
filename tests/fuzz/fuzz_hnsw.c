/* libFuzzer target: the HNSW index loader (indexer/hnsw_format.h), resealed like
 * fuzz_segment.c; a loaded index is searched from its own vectors (with and without a filter
 * that reads a byte per id: ids must name records), searched batched (the same hits as one
 * search a query) and grown by two vectors. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_reseal.h"
#include "idx_hnsw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_mask_filter(void *ctx, uint32_t id)
{
    const uint8_t *mask = ctx;
    return mask[id] == 0; /* out of bounds (ASan) for an id past the records */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (b == NULL)
        return 0;
    memcpy(b, data, size);
    fuzz_reseal_hnsw(b, size);
    const char *path = fuzz_memfile(b, size);
    free(b);
    struct idx_hnsw *h;
    struct st_err err = {0};
    if (path == NULL || idx_hnsw_load(path, &h, &err) != ST_OK)
        return 0;
    uint32_t n = idx_hnsw_count(h);
    struct idx_hnsw_searcher *s = idx_hnsw_searcher_new(h);
    /* Ids index per-record arrays (the indexer's masks): the filter reads one byte per id, and
     * every hit must name a record. */
    uint8_t *mask = calloc(n ? n : 1, 1);
    for (uint32_t i = 0; mask != NULL && i < n; i++)
        mask[i] = i % 3 == 1; /* a third of the ids filtered out */
    if (s != NULL && mask != NULL && n > 0) {
        struct st_hit hits[8];
        for (uint32_t q = 0; q < n && q < 4; q++) {
            size_t got = idx_hnsw_search(s, idx_hnsw_vector(h, q * (n / 4 + 1) % n), 8, 16,
                                         q % 2 ? fuzz_mask_filter : NULL, mask, hits);
            for (size_t i = 0; i < got; i++)
                if (hits[i].id >= n)
                    __builtin_trap();
        }
        /* Five queries batched (two lane groups) give what five searches give. */
        uint32_t dim0 = idx_hnsw_dim(h), nb = 5;
        float *qb = dim0 <= 4096 ? malloc((size_t)nb * dim0 * sizeof(float)) : NULL;
        struct st_hit bh[5 * 8], one[8];
        size_t cnt[5];
        if (qb != NULL) {
            for (uint32_t q = 0; q < nb; q++)
                memcpy(qb + (size_t)q * dim0, idx_hnsw_vector(h, q * (n / 5 + 1) % n),
                       dim0 * sizeof(float));
            if (idx_hnsw_search_batch(s, qb, nb, 8, 16, fuzz_mask_filter, mask, bh, cnt) == ST_OK)
                for (uint32_t q = 0; q < nb; q++) {
                    size_t got = idx_hnsw_search(s, qb + (size_t)q * dim0, 8, 16, fuzz_mask_filter,
                                                 mask, one);
                    if (got != cnt[q] || memcmp(one, bh + (size_t)q * 8, got * sizeof(*one)) != 0)
                        __builtin_trap();
                }
        }
        free(qb);
        /* Grown by two vectors (its ids kept, the new ones n and n + 1). */
        struct idx_hnsw *e;
        uint32_t dim = idx_hnsw_dim(h);
        float *more = calloc(2 * (size_t)dim, sizeof(float));
        if (more != NULL && dim <= 4096 && idx_hnsw_extend(h, more, 2, 1, 7, &e) == ST_OK) {
            struct idx_hnsw_searcher *se = idx_hnsw_searcher_new(e);
            size_t got = se != NULL ? idx_hnsw_search(se, more, 8, 16, NULL, NULL, hits) : 0;
            for (size_t i = 0; i < got; i++)
                if (hits[i].id >= n + 2)
                    __builtin_trap();
            idx_hnsw_searcher_free(se);
            idx_hnsw_free(e);
        }
        free(more);
    }
    free(mask);
    idx_hnsw_searcher_free(s);
    idx_hnsw_free(h);
    return 0;
}
