/* libFuzzer target: the JSON record decoder (SPEC.md §4.1) on arbitrary bytes. */
#include <stdlib.h>

#include "fuzz_rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_rec_decode(REC_KIND_JSON, data, size);
    return 0;
}
