/*
 * fuzz_json_diff.h — the JSON decoders side by side (issue 14): rec_decode (simdjson, falling
 * back to jansson) against rec_decode_ref (jansson only) on the same bytes. Shared by
 * tests/check_json_diff.c and the fuzz target fuzz_json_diff.
 */
#ifndef FUZZ_JSON_DIFF_H
#define FUZZ_JSON_DIFF_H

#include <stdio.h>
#include <string.h>

#include "rec_format.h"

/*
 * Decodes data with both (each with its own decoder) and compares: the reason; for a batch
 * the collection, count, and every record's id bytes, ts, op, vector bits (memcmp: -0.0 and
 * NaN payloads count) and meta bytes; for a rejection that both wrote a detail. Returns NULL
 * when they agree, else what differs (in why, why_cap). *reason: the reference's.
 */
static inline const char *json_diff(struct rec_decoder *fast, struct rec_decoder *ref,
                                    const struct rec_schema *s, const void *data, size_t size,
                                    enum rec_reason *reason, char *why, size_t why_cap)
{
    char df[256], dr[256];
    struct rec_batch bf, br;
    enum rec_reason rf = rec_decode(fast, s, REC_KIND_JSON, data, size, &bf, df, sizeof(df));
    enum rec_reason rr = rec_decode_ref(ref, s, REC_KIND_JSON, data, size, &br, dr, sizeof(dr));
    *reason = rr;
    if (rf != rr) {
        snprintf(why, why_cap, "reason: fast %s (%s), reference %s (%s)", rec_reason_str(rf), df,
                 rec_reason_str(rr), dr);
        return why;
    }
    if (rr != REC_OK) {
        if (df[0] == '\0' || dr[0] == '\0') {
            snprintf(why, why_cap, "%s without a detail", rec_reason_str(rr));
            return why;
        }
        return NULL;
    }
    if (bf.coll != br.coll || bf.n != br.n || bf.zero_copy != br.zero_copy) {
        snprintf(why, why_cap, "batch: collection/count/zero_copy differ (%u vs %u records)", bf.n,
                 br.n);
        return why;
    }
    for (uint32_t i = 0; i < br.n; i++) {
        const struct rec_record *a = &bf.recs[i], *b = &br.recs[i];
        const char *what = NULL;
        if (a->id_len != b->id_len || memcmp(a->id, b->id, b->id_len) != 0)
            what = "id";
        else if (a->ts != b->ts)
            what = "ts";
        else if (a->op != b->op)
            what = "op";
        else if ((a->vec == NULL) != (b->vec == NULL) ||
                 (b->vec != NULL && memcmp(a->vec, b->vec, br.coll->dim * sizeof(float)) != 0))
            what = "vector";
        else if (a->meta_len != b->meta_len ||
                 (b->meta_len > 0 && memcmp(a->meta, b->meta, b->meta_len) != 0))
            what = "meta";
        if (what != NULL) {
            snprintf(why, why_cap, "record %u: %s differs", i, what);
            return why;
        }
    }
    return NULL;
}

#endif
