/*
 * store_read.c — reads: get-by-id, exact scans of every source, reader snapshots.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "st_coding.h"
#include "st_log.h"
#include "st_prom.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

/* ---- reads -------------------------------------------------------------------------------- */

static void value_from_mt(const struct store_memtable *m, const struct store_mt_entry *e,
                          struct store_value *out, int *rc)
{
    out->op = e->op;
    out->ts = e->ts;
    out->window = e->window;
    out->window_end = e->window_end;
    out->partition = e->partition;
    out->offset = e->offset;
    out->idx = e->idx;
    if (out->vec != NULL)
        memcpy(out->vec, m->vecs + (size_t)(e - m->e) * m->dim, m->dim * sizeof(float));
    free(out->meta);
    out->meta = NULL;
    out->meta_len = e->meta_len;
    if (e->meta_len > 0) {
        out->meta = malloc(e->meta_len);
        if (out->meta == NULL)
            *rc = ST_ENOMEM;
        else
            memcpy(out->meta, m->heap + e->meta_off, e->meta_len);
    }
}

/* References every frozen memtable (oldest first) into a malloc'd array; caller holds mu and
 * releases them with store_frozen_release. NULL only when out of memory. */
struct store_memtable **store_frozen_capture_locked(struct store *s, size_t *n)
{
    struct store_memtable **fz = malloc((s->nfrozen ? s->nfrozen : 1) * sizeof(*fz));
    *n = 0;
    for (size_t i = 0; fz != NULL && i < s->nfrozen; i++) {
        store_mt_ref(s->frozen[i]);
        fz[(*n)++] = s->frozen[i];
    }
    return fz;
}

void store_frozen_release(struct store_memtable **fz, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_mt_unref(fz[i]);
    free(fz);
}

int store_get(struct store *s, const uint8_t *id, uint32_t id_len, struct store_value *out)
{
    out->meta = NULL;
    out->meta_len = 0;
    bool found = false;
    struct store_version best = {0};
    int rc = ST_OK;
    struct store_snapshot *snap = NULL;
    struct store_memtable **fz = NULL;
    size_t nfz = 0;

    pthread_mutex_lock(&s->mu);
    const struct store_mt_entry *e = store_mt_get(s->mem, id, id_len);
    if (e != NULL) {
        found = true;
        best = (struct store_version){e->ts, e->partition, e->offset, e->idx};
        value_from_mt(s->mem, e, out, &rc);
    }
    fz = store_frozen_capture_locked(s, &nfz);
    pthread_mutex_unlock(&s->mu);
    if (fz == NULL) {
        free(out->meta);
        out->meta = NULL;
        return ST_ENOMEM;
    }

    for (size_t i = 0; i < nfz && rc == ST_OK; i++) {
        e = store_mt_get(fz[i], id, id_len);
        if (e == NULL)
            continue;
        struct store_version v = {e->ts, e->partition, e->offset, e->idx};
        if (!found || store_version_cmp(&v, &best) > 0) {
            found = true;
            best = v;
            value_from_mt(fz[i], e, out, &rc);
        }
    }
    if (rc == ST_OK)
        rc = store_snapshot_acquire(s, &snap);
    for (size_t i = 0; rc == ST_OK && i < snap->n; i++) {
        struct store_segment *g = snap->segs[i];
        uint64_t idx;
        if (store_segment_find(g, id, id_len, &idx) != ST_OK)
            continue;
        struct store_seg_record r;
        store_segment_record(g, idx, &r);
        struct store_version v = {r.ts, r.partition, r.offset, r.idx};
        if (found && store_version_cmp(&v, &best) <= 0)
            continue;
        found = true;
        best = v;
        out->op = r.op;
        out->ts = r.ts;
        out->window = g->info.window_start;
        out->window_end = g->info.window_end;
        out->partition = r.partition;
        out->offset = r.offset;
        out->idx = r.idx;
        if (out->vec != NULL)
            memcpy(out->vec, store_segment_vectors(g) + idx * g->info.dim,
                   g->info.dim * sizeof(float));
        free(out->meta);
        out->meta = NULL;
        out->meta_len = 0;
        rc = store_segment_meta(g, idx, &out->meta, &out->meta_len);
    }
    store_snapshot_release(snap);
    store_frozen_release(fz, nfz);
    if (rc == ST_OK && (!found || out->op == STORE_OP_DELETE))
        rc = ST_ENOTFOUND;
    if (rc != ST_OK) {
        free(out->meta);
        out->meta = NULL;
        out->meta_len = 0;
    }
    return rc;
}

/* ---- exact scans (fresh data for strong-consistency search) ------------------------------ */

void store_scan_record(const struct store_scan_src *src, uint64_t i, struct store_scan_rec *out)
{
    if (src->memtable_) {
        const struct store_memtable *m = src->memtable_;
        const struct store_mt_entry *e = &m->e[i];
        *out = (struct store_scan_rec){.id = store_mt_id(m, e),
                                       .id_len = e->id_len,
                                       .ts = e->ts,
                                       .window = e->window,
                                       .partition = e->partition,
                                       .offset = e->offset,
                                       .idx = e->idx,
                                       .op = e->op,
                                       .superseded = e->superseded != 0};
        return;
    }
    struct store_seg_record r;
    store_segment_record(src->segment, i, &r);
    *out = (struct store_scan_rec){.id = r.id,
                                   .id_len = r.id_len,
                                   .ts = r.ts,
                                   .window = src->window_start,
                                   .partition = r.partition,
                                   .offset = r.offset,
                                   .idx = r.idx,
                                   .op = r.op,
                                   .superseded = false};
}

static int scan_mt(const struct store_memtable *m, store_scan_fn fn, void *ctx)
{
    struct store_scan_src src = {.memtable = true,
                                 .window_start = INT64_MIN,
                                 .window_end = INT64_MAX,
                                 .n = m->n,
                                 .dim = m->dim,
                                 .vecs = m->vecs,
                                 .memtable_ = m};
    return m->n > 0 ? fn(ctx, &src) : ST_OK;
}

int store_scan(struct store *s, store_scan_fn fn, void *ctx)
{
    /* mem -> frozen -> segments: data only ever moves in that order, so capturing the stages
     * in the same order sees every record at least once. */
    pthread_mutex_lock(&s->mu);
    int rc = scan_mt(s->mem, fn, ctx);
    size_t nfz = 0;
    struct store_memtable **fz = store_frozen_capture_locked(s, &nfz);
    pthread_mutex_unlock(&s->mu);
    if (fz == NULL && rc == ST_OK)
        rc = ST_ENOMEM;
    for (size_t i = 0; rc == ST_OK && i < nfz; i++)
        rc = scan_mt(fz[i], fn, ctx);
    store_frozen_release(fz, nfz);
    struct store_snapshot *snap = NULL;
    if (rc == ST_OK)
        rc = store_snapshot_acquire(s, &snap);
    for (size_t i = 0; rc == ST_OK && i < snap->n; i++) {
        const struct store_segment *g = snap->segs[i];
        struct store_scan_src src = {.memtable = false,
                                     .segment = g,
                                     .window_start = g->info.window_start,
                                     .window_end = g->info.window_end,
                                     .kind = g->info.kind,
                                     .version = g->info.version,
                                     .min_ts = g->info.min_ts,
                                     .max_ts = g->info.max_ts,
                                     .n = g->info.count,
                                     .dim = g->info.dim,
                                     .vecs = store_segment_vectors(g)};
        rc = fn(ctx, &src);
    }
    store_snapshot_release(snap);
    return rc;
}

const struct st_hist *store_wal_sync_seconds(struct store *s)
{
    return &s->wal_sync_hist;
}

int store_snapshot_acquire(struct store *s, struct store_snapshot **out)
{
    struct store_snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        return ST_ENOMEM;
    pthread_mutex_lock(&s->mu);
    snap->segs = malloc((s->nsegs ? s->nsegs : 1) * sizeof(*snap->segs));
    if (snap->segs == NULL) {
        pthread_mutex_unlock(&s->mu);
        free(snap);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < s->nsegs; i++) {
        store_segment_ref(s->segs[i]);
        snap->segs[snap->n++] = s->segs[i];
    }
    pthread_mutex_unlock(&s->mu);
    *out = snap;
    return ST_OK;
}

void store_snapshot_release(struct store_snapshot *snap)
{
    if (snap == NULL)
        return;
    for (size_t i = 0; i < snap->n; i++)
        store_segment_unref(snap->segs[i]);
    free(snap->segs);
    free(snap);
}

size_t store_snapshot_count(const struct store_snapshot *snap)
{
    return snap->n;
}

struct store_segment *store_snapshot_segment(const struct store_snapshot *snap, size_t i)
{
    return i < snap->n ? snap->segs[i] : NULL;
}
