/* libFuzzer target: the binary frame decoder (ingest/frame_format.h) on arbitrary bytes. */
#include <stdlib.h>

#include "fuzz_rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_rec_decode(REC_KIND_FRAME, data, size);
    return 0;
}
