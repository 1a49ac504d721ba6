/*
 * fuzz_json_diff.h — the JSON decoders side by side (issue 14): rec_decode (simdjson, falling
 * back to jansson) against rec_decode_ref (jansson only) on the same bytes. Shared by
 * tests/check_json_diff.c and the fuzz target fuzz_json_diff.
 */
#ifndef FUZZ_JSON_DIFF_H
#define FUZZ_JSON_DIFF_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rec_format.h"

/* The fuzz targets' two decoders, made at the first input; false on no memory. */
static inline bool json_diff_decoders(struct rec_decoder **fast, struct rec_decoder **ref)
{
    if (*fast == NULL)
        *fast = rec_decoder_new();
    if (*ref == NULL)
        *ref = rec_decoder_new();
    return *fast != NULL && *ref != NULL;
}

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

/*
 * A binary frame's meta check, simdjson (rec_decode) against jansson (rec_decode_ref): a
 * frame of one "docs" record (dim 3) with meta[0, len) is decoded by both, whose reasons must
 * agree (REC_OK or REC_BAD_META). Returns NULL when they do, else what differs; *reason: the
 * reference's (REC_TOO_LARGE when the encoder refuses the meta: over 64 KiB). *fast_took:
 * whether simdjson passed it (rec_decoder_meta_counts).
 */
static inline const char *frame_meta_diff(struct rec_decoder *fast, struct rec_decoder *ref,
                                          const struct rec_schema *s, const void *meta, size_t len,
                                          enum rec_reason *reason, bool *fast_took, char *why,
                                          size_t why_cap)
{
    static const float v[3] = {1, 2, 3};
    struct rec_record r = {(const uint8_t *)"a", 1, 0, REC_UPSERT, v, (const uint8_t *)meta,
                           (uint32_t)len};
    uint8_t *f;
    size_t flen;
    *reason = REC_TOO_LARGE;
    *fast_took = false;
    if (len == 0 || len > REC_META_MAX || rec_frame_encode("docs", 3, false, &r, 1, &f, &flen))
        return NULL;
    char df[256], dr[256];
    struct rec_batch bf, br;
    uint64_t before, after, fb;
    rec_decoder_meta_counts(fast, &before, &fb);
    enum rec_reason rf = rec_decode(fast, s, REC_KIND_FRAME, f, flen, &bf, df, sizeof(df));
    enum rec_reason rr = rec_decode_ref(ref, s, REC_KIND_FRAME, f, flen, &br, dr, sizeof(dr));
    rec_decoder_meta_counts(fast, &after, &fb);
    free(f);
    *reason = rr;
    *fast_took = after != before;
    if (rf != rr) {
        snprintf(why, why_cap, "frame meta: fast %s (%s), reference %s (%s)", rec_reason_str(rf),
                 df, rec_reason_str(rr), dr);
        return why;
    }
    if (*fast_took && rr != REC_OK) {
        snprintf(why, why_cap, "frame meta: simdjson passed a meta the reference rejects");
        return why;
    }
    return NULL;
}

#endif
