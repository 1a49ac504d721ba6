/* Decoded batch -> store records -> twcs. */
#include "ingest_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_checksum.h"

struct ing_writer {
    uint32_t dim;
    bool cosine;
    struct store_record *recs;
    float *vecs; /* cosine: normalised copies */
    uint32_t cap;
    uint32_t n; /* records prepared by the last ing_write_prepare */
};

struct ing_writer *ing_writer_new(uint32_t dim, bool cosine)
{
    struct ing_writer *w = calloc(1, sizeof(*w));
    if (w != NULL) {
        w->dim = dim;
        w->cosine = cosine;
    }
    return w;
}

void ing_writer_free(struct ing_writer *w)
{
    if (w == NULL)
        return;
    free(w->recs);
    free(w->vecs);
    free(w);
}

static int reserve(struct ing_writer *w, uint32_t n)
{
    if (n <= w->cap)
        return ST_OK;
    struct store_record *r = realloc(w->recs, (size_t)n * sizeof(*r));
    if (r == NULL)
        return ST_ENOMEM;
    w->recs = r;
    if (w->cosine) {
        float *v = realloc(w->vecs, (size_t)n * w->dim * sizeof(float));
        if (v == NULL)
            return ST_ENOMEM;
        w->vecs = v;
    }
    w->cap = n;
    return ST_OK;
}

static void reject(struct ing_result *res, const char *reason, uint32_t i, const char *what)
{
    res->outcome = ING_REJECTED;
    res->reason = reason;
    snprintf(res->detail, sizeof(res->detail), "record %u: %s", i, what);
}

int ing_write_prepare(struct ing_writer *w, const struct rec_batch *b, int64_t msg_ts_ms,
                      struct ing_result *res)
{
    memset(res, 0, sizeof(*res));
    w->n = 0;
    if (b->coll->dim != w->dim)
        return ST_EINVAL;
    if (reserve(w, b->n) != ST_OK)
        return ST_ENOMEM;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct rec_record *in = &b->recs[i];
        struct store_record *r = &w->recs[i];
        *r = (struct store_record){.id = in->id,
                                   .id_len = in->id_len,
                                   .ts = in->ts,
                                   .op = in->op == REC_DELETE ? STORE_OP_DELETE : STORE_OP_UPSERT,
                                   .vec = in->vec,
                                   .meta = in->meta,
                                   .meta_len = in->meta_len};
        if (in->ts == REC_TS_ABSENT) {
            if (msg_ts_ms < 0) {
                reject(res, "bad_ts", i, "no ts and the message has no timestamp");
                return ST_OK;
            }
            r->ts = msg_ts_ms;
        }
        if (w->cosine && in->op == REC_UPSERT) {
            double sq = 0;
            for (uint32_t j = 0; j < w->dim; j++)
                sq += (double)in->vec[j] * in->vec[j];
            if (!(sq > 0)) {
                reject(res, "zero_vector", i, "a zero vector has no cosine direction");
                return ST_OK;
            }
            float inv = (float)(1.0 / sqrt(sq)), *v = w->vecs + (size_t)i * w->dim;
            for (uint32_t j = 0; j < w->dim; j++)
                v[j] = in->vec[j] * inv;
            r->vec = v;
        }
        if (r->op == STORE_OP_UPSERT) { /* the row checksum here, on the decode worker */
            r->vec_sum = st_checksum32(r->vec, (size_t)w->dim * sizeof(float));
            r->vec_sum_set = true;
        }
    }
    w->n = b->n;
    res->outcome = ING_APPLIED;
    return ST_OK;
}

int ing_write_prepared(struct ing_writer *w, struct twcs *t, int32_t partition, int64_t offset,
                       struct ing_result *res)
{
    memset(res, 0, sizeof(*res));
    if (w->n == 0)
        return ST_EINVAL;
    struct twcs_result tr;
    int rc = twcs_write(t, partition, offset, w->recs, w->n, &tr);
    if (rc == ST_EAGAIN) {
        res->outcome = ING_RETRY;
        return ST_OK;
    }
    if (rc != ST_OK)
        return rc;
    res->expired = tr.expired;
    switch (tr.verdict) {
    case TWCS_ACCEPTED:
        res->outcome = ING_APPLIED;
        break;
    case TWCS_DUPLICATE:
        res->outcome = ING_DUPLICATE;
        break;
    default:
        res->outcome = ING_REJECTED;
        res->reason = tr.reason;
        snprintf(res->detail, sizeof(res->detail), "the batch was rejected by its windows: %s",
                 tr.reason);
        break;
    }
    return ST_OK;
}

int ing_write(struct ing_writer *w, struct twcs *t, const struct rec_batch *b, int32_t partition,
              int64_t offset, int64_t msg_ts_ms, struct ing_result *res)
{
    int rc = ing_write_prepare(w, b, msg_ts_ms, res);
    if (rc != ST_OK || res->outcome == ING_REJECTED)
        return rc;
    return ing_write_prepared(w, t, partition, offset, res);
}
