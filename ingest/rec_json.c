/*
 * The JSON format (SPEC.md §4.1). rec_decode_json_ref parses with jansson: the reference, and
 * what finds the reason for every rejection. rec_decode_json first tries the simdjson decoder
 * (rec_json_fast.h), which decodes the same bits or declines.
 */
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "rec_int.h"
#include "st_api.h"
#include "rec_json_fast.h"

static enum rec_reason parse_vector(struct rec_decoder *d, const struct rec_collection *c,
                                    uint32_t i, json_t *vec, json_t *b64, const float **out)
{
    float *f = st_arena_alloc(&d->arena, (size_t)c->dim * sizeof(float) + 3);
    if (f == NULL)
        return rec_fail(d, REC_TOO_LARGE, "no memory for record %u's vector", i);
    if (vec != NULL) {
        if (!json_is_array(vec))
            return rec_fail(d, REC_BAD_RECORD, "record %u: vector is not an array", i);
        if (json_array_size(vec) != c->dim)
            return rec_fail(d, REC_WRONG_DIM, "record %u: vector has %zu numbers, '%s' has dim %u",
                            i, json_array_size(vec), c->name, c->dim);
        for (uint32_t j = 0; j < c->dim; j++) {
            json_t *x = json_array_get(vec, j);
            if (!json_is_number(x))
                return rec_fail(d, REC_BAD_RECORD, "record %u: vector[%u] is not a number", i, j);
            f[j] = (float)json_number_value(x); /* beyond float range: inf, rejected later */
        }
    } else {
        const char *s = json_string_value(b64);
        size_t n = json_string_length(b64);
        if (s == NULL || n % 4 != 0)
            return rec_fail(d, REC_BAD_RECORD, "record %u: vector_b64 is not base64", i);
        size_t pad = (n >= 1 && s[n - 1] == '=') + (n >= 2 && s[n - 2] == '=');
        size_t want = (size_t)c->dim * 4;
        if (n / 4 * 3 - pad != want)
            return rec_fail(d, REC_WRONG_DIM,
                            "record %u: vector_b64 holds %zu bytes, '%s' needs %zu (dim %u)", i,
                            n / 4 * 3 - pad, c->name, want, c->dim);
        unsigned char *raw = st_arena_alloc(&d->arena, n / 4 * 3 + 1);
        if (raw == NULL)
            return rec_fail(d, REC_TOO_LARGE, "no memory for record %u's vector", i);
        if (EVP_DecodeBlock(raw, (const unsigned char *)s, (int)n) != (int)(n / 4 * 3))
            return rec_fail(d, REC_BAD_RECORD, "record %u: vector_b64 is not base64", i);
        for (uint32_t j = 0; j < c->dim; j++) { /* little-endian float32 */
            uint32_t u = (uint32_t)raw[4 * j] | (uint32_t)raw[4 * j + 1] << 8 |
                         (uint32_t)raw[4 * j + 2] << 16 | (uint32_t)raw[4 * j + 3] << 24;
            memcpy(&f[j], &u, 4);
        }
    }
    *out = f;
    return REC_OK;
}

static enum rec_reason parse_record(struct rec_decoder *d, const struct rec_collection *c,
                                    uint32_t i, json_t *o, bool single, struct rec_record *r)
{
    if (!json_is_object(o))
        return rec_fail(d, REC_BAD_RECORD, "record %u is not an object", i);
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        static const char *const known[] = {"id", "ts", "vector", "vector_b64", "meta", "op"};
        bool ok = single && strcmp(key, "collection") == 0;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]) && !ok; k++)
            ok = strcmp(key, known[k]) == 0;
        if (!ok)
            return rec_fail(d, REC_BAD_RECORD,
                            "record %u: unknown key '%s' (id, ts, vector, vector_b64, meta, op)", i,
                            key);
    }
    memset(r, 0, sizeof(*r));
    json_t *id = json_object_get(o, "id");
    if (c->u64_ids) {
        /* An integer, or (2^63 and above, beyond JSON integers as jansson reads them) its
         * decimal digits as a string, as the HTTP API writes such ids. */
        uint8_t *be = st_arena_alloc(&d->arena, 8);
        if (be == NULL)
            return rec_fail(d, REC_TOO_LARGE, "no memory");
        if (!st_api_json_id(true, id, be, &r->id_len))
            return rec_fail(d, REC_BAD_ID,
                            "record %u: '%s' has u64 ids: id must be an integer >= 0 or a string "
                            "of its decimal digits (up to 18446744073709551615)",
                            i, c->name);
        r->id = be;
    } else {
        if (!json_is_string(id) || json_string_length(id) < 1 ||
            json_string_length(id) > REC_ID_MAX)
            return rec_fail(d, REC_BAD_ID, "record %u: id must be a string of 1..%u bytes", i,
                            REC_ID_MAX);
        r->id = (const uint8_t *)json_string_value(id);
        r->id_len = (uint32_t)json_string_length(id);
    }
    json_t *ts = json_object_get(o, "ts");
    if (ts != NULL && !json_is_integer(ts))
        return rec_fail(d, REC_BAD_TS, "record %u: ts must be integer milliseconds since the epoch",
                        i);
    r->ts = ts != NULL ? (int64_t)json_integer_value(ts) : REC_TS_ABSENT;
    if (r->ts == REC_TS_ABSENT && ts != NULL)
        return rec_fail(d, REC_BAD_TS, "record %u: ts out of range", i);
    json_t *op = json_object_get(o, "op");
    if (op == NULL || (json_is_string(op) && strcmp(json_string_value(op), "upsert") == 0))
        r->op = REC_UPSERT;
    else if (json_is_string(op) && strcmp(json_string_value(op), "delete") == 0)
        r->op = REC_DELETE;
    else
        return rec_fail(d, REC_BAD_OP, "record %u: op must be \"upsert\" or \"delete\"", i);
    json_t *vec = json_object_get(o, "vector"), *b64 = json_object_get(o, "vector_b64");
    if (vec != NULL && b64 != NULL)
        return rec_fail(d, REC_BAD_RECORD, "record %u: both vector and vector_b64", i);
    if (r->op == REC_UPSERT) {
        if (vec == NULL && b64 == NULL)
            return rec_fail(d, REC_WRONG_DIM, "record %u: an upsert needs a vector", i);
        enum rec_reason rr = parse_vector(d, c, i, vec, b64, &r->vec);
        if (rr != REC_OK)
            return rr;
    }
    json_t *meta = json_object_get(o, "meta");
    if (meta != NULL && !json_is_null(meta)) {
        if (!json_is_object(meta))
            return rec_fail(d, REC_BAD_META, "record %u: meta must be an object", i);
        size_t n = json_dumpb(meta, NULL, 0, JSON_COMPACT);
        if (n > REC_META_MAX)
            return rec_fail(d, REC_BAD_META, "record %u: meta is %zu bytes, the limit is %u", i, n,
                            REC_META_MAX);
        uint8_t *m = st_arena_alloc(&d->arena, n ? n : 1);
        if (m == NULL || json_dumpb(meta, (char *)m, n, JSON_COMPACT) != n)
            return rec_fail(d, REC_TOO_LARGE, "no memory for record %u's meta", i);
        r->meta = m;
        r->meta_len = (uint32_t)n;
    }
    return REC_OK;
}

enum rec_reason rec_decode_json_ref(struct rec_decoder *d, const struct rec_schema *s,
                                    const void *value, size_t len, struct rec_batch *out)
{
    json_error_t je;
    d->root = json_loadb(value, len, JSON_REJECT_DUPLICATES, &je);
    if (d->root == NULL) {
        /* jansson refuses numbers beyond double range as "real number overflow". */
        if (strstr(je.text, "overflow") != NULL && strstr(je.text, "real") != NULL)
            return rec_fail(d, REC_NON_FINITE, "line %d column %d: %s", je.line, je.column,
                            je.text);
        return rec_fail(d, REC_GARBAGE, "JSON line %d column %d: %s%s", je.line, je.column, je.text,
                        strncmp(je.text, "too big integer", 15) == 0
                            ? " (JSON integers stop at 9223372036854775807; a uint64 id "
                              "beyond it goes as a string of its decimal digits)"
                            : "");
    }
    if (!json_is_object(d->root))
        return rec_fail(d, REC_GARBAGE, "the value is JSON but not an object");
    json_t *recs = json_object_get(d->root, "records");
    bool single = recs == NULL;
    if (single && json_object_get(d->root, "id") == NULL)
        return rec_fail(d, REC_BAD_RECORD, "an object with neither \"records\" nor \"id\"");
    if (!single) {
        const char *key;
        json_t *val;
        json_object_foreach(d->root, key, val)
        {
            if (strcmp(key, "records") != 0 && strcmp(key, "collection") != 0)
                return rec_fail(d, REC_BAD_RECORD, "unknown key '%s' (collection, records)", key);
        }
        if (!json_is_array(recs))
            return rec_fail(d, REC_BAD_RECORD, "\"records\" is not an array");
    }
    json_t *cn = json_object_get(d->root, "collection");
    const struct rec_collection *c = s->fallback;
    if (cn != NULL) {
        if (!json_is_string(cn))
            return rec_fail(d, REC_UNKNOWN_COLLECTION, "\"collection\" is not a string");
        c = rec_find(s, json_string_value(cn), json_string_length(cn));
        if (c == NULL)
            return rec_fail(d, REC_UNKNOWN_COLLECTION, "collection '%s' is not configured",
                            json_string_value(cn));
    } else if (c == NULL) {
        return rec_fail(d, REC_UNKNOWN_COLLECTION,
                        "no \"collection\" and the topic feeds several collections");
    }
    uint32_t n = single ? 1 : (uint32_t)json_array_size(recs);
    if (n == 0)
        return rec_fail(d, REC_EMPTY_BATCH, "\"records\" is empty");
    if (rec_reserve(d, n) != ST_OK)
        return rec_fail(d, REC_TOO_LARGE, "no memory for %u records", n);
    for (uint32_t i = 0; i < n; i++) {
        enum rec_reason r =
            parse_record(d, c, i, single ? d->root : json_array_get(recs, i), single, &d->recs[i]);
        if (r != REC_OK)
            return r;
    }
    out->coll = c;
    out->n = n;
    out->recs = d->recs;
    out->zero_copy = false;
    return REC_OK;
}

enum rec_reason rec_decode_json(struct rec_decoder *d, const struct rec_schema *s,
                                const void *value, size_t len, struct rec_batch *out)
{
    if (!d->json_ref_only) {
        if (rec_json_fast_decode(d, s, value, len, out)) {
            d->json_fast++;
            return REC_OK;
        }
        d->json_fallback++;
        st_arena_reset(&d->arena);
        memset(out, 0, sizeof(*out));
    }
    return rec_decode_json_ref(d, s, value, len, out);
}
