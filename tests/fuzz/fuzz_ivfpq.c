/* libFuzzer target: the IVF-PQ index loader (indexer/ivfpq_format.h), resealed like
 * fuzz_segment.c; a loaded index is searched with every list probed. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_reseal.h"
#include "idx_ivfpq.h"
#include "st_coding.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (b == NULL)
        return 0;
    memcpy(b, data, size);
    fuzz_reseal_ivfpq(b, size);
    const char *path = fuzz_memfile(b, size);
    free(b);
    struct idx_ivfpq *ix;
    struct st_err err = {0};
    if (path == NULL || idx_ivfpq_load(path, &ix, &err) != ST_OK)
        return 0;
    /* A loaded header is valid: dim is at 12 and bounded by the file. */
    uint32_t dim = st_get_le32(data + 12);
    float *q = calloc(dim, sizeof(float));
    struct idx_ivfpq_searcher *s = idx_ivfpq_searcher_new(ix);
    if (q != NULL && s != NULL) {
        struct st_hit hits[8];
        for (uint32_t d = 0; d < dim; d++)
            q[d] = (float)(d % 7) - 3;
        (void)idx_ivfpq_search(s, q, 8, UINT32_MAX, 0, NULL, NULL, NULL, hits);
    }
    idx_ivfpq_searcher_free(s);
    free(q);
    idx_ivfpq_free(ix);
    return 0;
}
