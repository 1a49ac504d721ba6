/* Format dispatch and the checks both formats share. */
#include "rec_format.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "frame_format.h"
#include "rec_int.h"
#include "rec_json_fast.h"
#include "st_distance.h"

static const char *const reasons[REC_REASON_COUNT] = {
    [REC_OK] = "ok",
    [REC_GARBAGE] = "garbage",
    [REC_TRUNCATED] = "truncated",
    [REC_CHECKSUM] = "checksum",
    [REC_UNSUPPORTED] = "unsupported",
    [REC_TOO_LARGE] = "too_large",
    [REC_UNKNOWN_COLLECTION] = "unknown_collection",
    [REC_WRONG_DIM] = "wrong_dim",
    [REC_NON_FINITE] = "non_finite",
    [REC_BAD_ID] = "bad_id",
    [REC_BAD_TS] = "bad_ts",
    [REC_BAD_OP] = "bad_op",
    [REC_BAD_META] = "bad_meta",
    [REC_BAD_RECORD] = "bad_record",
    [REC_DUPLICATE_ID] = "duplicate_id",
    [REC_EMPTY_BATCH] = "empty_batch",
};

const char *rec_reason_str(enum rec_reason r)
{
    return (unsigned)r < REC_REASON_COUNT ? reasons[r] : "unknown";
}

struct rec_decoder *rec_decoder_new(void)
{
    return calloc(1, sizeof(struct rec_decoder));
}

void rec_decoder_free(struct rec_decoder *d)
{
    if (d == NULL)
        return;
    st_arena_free(&d->arena);
    json_decref(d->root);
    rec_json_fast_free(d->fast);
    free(d->recs);
    free(d->order);
    free(d);
}

void rec_decoder_release(struct rec_decoder *d)
{
    if (d == NULL)
        return;
    json_decref(d->root);
    d->root = NULL;
    st_arena_reset(&d->arena);
}

enum rec_reason rec_fail(struct rec_decoder *d, enum rec_reason r, const char *fmt, ...)
{
    if (d->detail != NULL && d->detail_cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->detail, d->detail_cap, fmt, ap);
        va_end(ap);
    }
    return r;
}

int rec_reserve(struct rec_decoder *d, uint32_t n)
{
    if (n <= d->cap)
        return ST_OK;
    struct rec_record *r = realloc(d->recs, (size_t)n * sizeof(*r));
    if (r == NULL)
        return ST_ENOMEM;
    d->recs = r;
    uint32_t *o = realloc(d->order, (size_t)n * sizeof(*o));
    if (o == NULL)
        return ST_ENOMEM;
    d->order = o;
    d->cap = n;
    return ST_OK;
}

const struct rec_collection *rec_find(const struct rec_schema *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->colls[i].name) == len && memcmp(s->colls[i].name, name, len) == 0)
            return &s->colls[i];
    return NULL;
}

static _Thread_local const struct rec_record *sort_recs; /* qsort has no context argument */

static int id_cmp(const void *a, const void *b)
{
    const struct rec_record *x = &sort_recs[*(const uint32_t *)a];
    const struct rec_record *y = &sort_recs[*(const uint32_t *)b];
    if (x->id_len != y->id_len)
        return x->id_len < y->id_len ? -1 : 1;
    return memcmp(x->id, y->id, x->id_len);
}

enum rec_reason rec_check_batch(struct rec_decoder *d, const struct rec_batch *b)
{
    st_finite_fn finite = st_kernels()->finite_prefix; /* SIMD: a scalar loop was ~20 % of decode */
    for (uint32_t i = 0; i < b->n; i++) {
        const struct rec_record *r = &b->recs[i];
        if (r->op != REC_UPSERT)
            continue;
        size_t j = finite(r->vec, b->coll->dim);
        if (j < b->coll->dim)
            return rec_fail(d, REC_NON_FINITE, "record %u: vector[%zu] is not finite", i, j);
    }
    for (uint32_t i = 0; i < b->n; i++)
        d->order[i] = i;
    sort_recs = b->recs;
    qsort(d->order, b->n, sizeof(uint32_t), id_cmp);
    for (uint32_t i = 1; i < b->n; i++)
        if (id_cmp(&d->order[i - 1], &d->order[i]) == 0)
            return rec_fail(d, REC_DUPLICATE_ID, "records %u and %u have the same id",
                            d->order[i - 1] < d->order[i] ? d->order[i - 1] : d->order[i],
                            d->order[i - 1] < d->order[i] ? d->order[i] : d->order[i - 1]);
    return REC_OK;
}

enum rec_kind rec_kind_of(const char *ct, size_t len)
{
    if (ct == NULL)
        return REC_KIND_AUTO;
    size_t n = 0; /* the media type, without parameters such as "; charset=utf-8" */
    while (n < len && ct[n] != ';' && ct[n] != ' ')
        n++;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return REC_KIND_JSON;
    if (n == 28 && strncasecmp(ct, "application/vnd.strata.batch", 28) == 0)
        return REC_KIND_FRAME;
    return REC_KIND_AUTO;
}

enum rec_reason rec_decode(struct rec_decoder *d, const struct rec_schema *s, enum rec_kind kind,
                           const void *value, size_t len, struct rec_batch *out, char *detail,
                           size_t detail_cap)
{
    memset(out, 0, sizeof(*out));
    st_arena_reset(&d->arena);
    json_decref(d->root);
    d->root = NULL;
    d->detail = detail;
    d->detail_cap = detail_cap;
    if (detail_cap > 0)
        detail[0] = '\0';
    size_t max = s->max_value ? s->max_value : 64u << 20;
    if (len > max)
        return rec_fail(d, REC_TOO_LARGE, "value is %zu bytes, the limit is %zu", len, max);
    const uint8_t *v = value;
    if (kind == REC_KIND_AUTO) {
        size_t i = 0;
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r'))
            i++;
        if (len >= 4 && memcmp(v, FRAME_MAGIC, 4) == 0)
            kind = REC_KIND_FRAME;
        else if (i < len && v[i] == '{')
            kind = REC_KIND_JSON;
        else
            return rec_fail(d, REC_GARBAGE, "neither a JSON object nor a strata frame");
    }
    enum rec_reason r = kind == REC_KIND_JSON ? rec_decode_json(d, s, value, len, out)
                                              : rec_decode_frame(d, s, value, len, out);
    if (r == REC_OK && out->n == 0)
        r = rec_fail(d, REC_EMPTY_BATCH, "the batch has no records");
    if (r == REC_OK)
        r = rec_check_batch(d, out);
    if (r != REC_OK)
        memset(out, 0, sizeof(*out));
    return r;
}

enum rec_reason rec_decode_ref(struct rec_decoder *d, const struct rec_schema *s,
                               enum rec_kind kind, const void *value, size_t len,
                               struct rec_batch *out, char *detail, size_t detail_cap)
{
    d->json_ref_only = true;
    enum rec_reason r = rec_decode(d, s, kind, value, len, out, detail, detail_cap);
    d->json_ref_only = false;
    return r;
}

void rec_decoder_json_counts(const struct rec_decoder *d, uint64_t *fast, uint64_t *fallback)
{
    *fast = d->json_fast;
    *fallback = d->json_fallback;
}

void rec_decoder_meta_counts(const struct rec_decoder *d, uint64_t *fast, uint64_t *fallback)
{
    *fast = d->meta_fast;
    *fallback = d->meta_fallback;
}
