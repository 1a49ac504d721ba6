/* libFuzzer target: the jsonl reader of `strata produce` (tools/produce_src.c). */
#include "fuzz_src.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_src_read("x.jsonl", data, size, PRODUCE_IN_JSONL, 0);
    fuzz_src_read("x.jsonl", data, size, PRODUCE_IN_JSONL, 1);
    return 0;
}
