/* libFuzzer target: the npy reader of `strata produce` (tools/produce_src.c). */
#include "fuzz_src.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_src_read("x.npy", data, size, PRODUCE_IN_NPY, 0);
    return 0;
}
