/* libFuzzer target: the idx reader of `strata produce` (tools/produce_src.c). */
#include "fuzz_src.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_src_read("x-idx3-ubyte", data, size, PRODUCE_IN_IDX, 0);
    return 0;
}
