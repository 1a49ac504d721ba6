/* libFuzzer target: the HNSW index loader (indexer/hnsw_format.h), resealed like
 * fuzz_segment.c; a loaded index is searched from one of its own vectors. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_reseal.h"
#include "idx_hnsw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    if (s != NULL && n > 0) {
        struct st_hit hits[8];
        for (uint32_t q = 0; q < n && q < 4; q++)
            (void)idx_hnsw_search(s, idx_hnsw_vector(h, q * (n / 4 + 1) % n), 8, 16, NULL, NULL,
                                  hits);
    }
    idx_hnsw_searcher_free(s);
    idx_hnsw_free(h);
    return 0;
}
