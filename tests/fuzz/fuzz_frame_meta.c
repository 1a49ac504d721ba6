/*
 * libFuzzer target: a binary frame's meta check on simdjson against jansson (issue 14). The
 * input is one record's meta; it goes into a valid frame that rec_decode (simdjson first) and
 * rec_decode_ref (jansson only) both decode. Any difference in their reasons aborts, and so
 * does simdjson passing a meta jansson rejects.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_json_diff.h"
#include "fuzz_rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct rec_decoder *fast, *ref;
    if (!json_diff_decoders(&fast, &ref))
        return 0;
    char why[640];
    enum rec_reason r;
    bool took;
    if (frame_meta_diff(fast, ref, &fuzz_schema, data, size, &r, &took, why, sizeof(why)) != NULL) {
        fprintf(stderr, "fuzz_frame_meta: the checks disagree: %s\n", why);
        abort();
    }
    return 0;
}
