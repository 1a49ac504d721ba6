/*
 * libFuzzer target: the simdjson JSON decoder against the jansson reference (issue 14). The
 * same bytes go through rec_decode and rec_decode_ref; any difference in reason or decoded
 * bits aborts. Both schemas of fuzz_rec.h's collections are tried: with the topic's default
 * collection and without one.
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
    static const struct rec_schema no_default = {fuzz_colls, 2, NULL, 1u << 20};
    const struct rec_schema *schemas[] = {&fuzz_schema, &no_default};
    for (int k = 0; k < 2; k++) {
        char why[640];
        enum rec_reason r;
        if (json_diff(fast, ref, schemas[k], data, size, &r, why, sizeof(why)) != NULL) {
            fprintf(stderr, "fuzz_json_diff: the decoders disagree: %s\n", why);
            abort();
        }
    }
    return 0;
}
