/* libFuzzer target: the fvecs reader of `strata produce` (tools/produce_src.c). */
#include "fuzz_src.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_src_read("x.fvecs", data, size, PRODUCE_IN_FVECS, 0);
    return 0;
}
