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
        memcpy(out->vec, e->vec, m->dim * sizeof(float));
    free(out->meta);
    out->meta = NULL;
    out->meta_len = e->meta_len;
    if (e->meta_len > 0) {
        out->meta = malloc(e->meta_len);
        if (out->meta == NULL)
            *rc = ST_ENOMEM;
        else
            memcpy(out->meta, e->meta, e->meta_len);
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

static int get_newest(struct store *s, const uint8_t *id, uint32_t id_len, struct store_value *out,
                      bool deletes)
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
            memcpy(out->vec, store_segment_vector(g, idx), g->info.dim * sizeof(float));
        free(out->meta);
        out->meta = NULL;
        out->meta_len = 0;
        rc = store_segment_meta(g, idx, &out->meta, &out->meta_len);
    }
    store_snapshot_release(snap);
    store_frozen_release(fz, nfz);
    if (rc == ST_OK && (!found || (out->op == STORE_OP_DELETE && !deletes)))
        rc = ST_ENOTFOUND;
    if (rc != ST_OK) {
        free(out->meta);
        out->meta = NULL;
        out->meta_len = 0;
    }
    return rc;
}

int store_get(struct store *s, const uint8_t *id, uint32_t id_len, struct store_value *out)
{
    return get_newest(s, id, id_len, out, false);
}

int store_get_version(struct store *s, const uint8_t *id, uint32_t id_len, struct store_value *out)
{
    return get_newest(s, id, id_len, out, true);
}

/* ---- exact scans (fresh data for strong-consistency search) ------------------------------ */

void store_scan_record(const struct store_scan_src *src, uint64_t i, struct store_scan_rec *out)
{
    if (src->memtable_) {
        const struct store_mt_entry *e = (const struct store_mt_entry *)src->memtable_ + i;
        uint32_t by = atomic_load_explicit(&e->superseded_by, memory_order_relaxed);
        *out = (struct store_scan_rec){.id = e->id,
                                       .id_len = e->id_len,
                                       .ts = e->ts,
                                       .window = e->window,
                                       .partition = e->partition,
                                       .offset = e->offset,
                                       .idx = e->idx,
                                       .op = e->op,
                                       .superseded = by != 0 && by <= src->memtable_limit_};
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

/* The first n records of m, whose chunk pointers are chunks[] (captured by the caller): one
 * source per chunk so that each hands the kernels contiguous vectors. No lock is held. */
static int scan_mt(const struct store_memtable *m, size_t n, uint8_t *const *chunks,
                   store_scan_fn fn, void *ctx)
{
    int rc = ST_OK;
    for (size_t c = 0; rc == ST_OK && c * m->chunk_recs < n; c++) {
        size_t left = n - c * m->chunk_recs;
        const struct store_mt_span *span = store_mt_chunk_span(m, chunks[c]);
        struct store_scan_src src = {
            .memtable = true,
            .window_start = INT64_MIN,
            .window_end = INT64_MAX,
            .min_ts = atomic_load_explicit(&span->min_ts, memory_order_relaxed),
            .max_ts = atomic_load_explicit(&span->max_ts, memory_order_relaxed),
            .n = left < m->chunk_recs ? left : m->chunk_recs,
            .dim = m->dim,
            .vecs = (const float *)(const void *)chunks[c],
            .memtable_ = store_mt_chunk_entries(m, chunks[c]),
            .memtable_limit_ = n};
        rc = fn(ctx, &src);
    }
    return rc;
}

int store_scan(struct store *s, store_scan_fn fn, void *ctx)
{
    /* mem -> frozen -> segments: data only ever moves in that order, so capturing the stages
     * in the same order sees every record at least once. The active memtable's published
     * prefix and its chunk pointers are captured under the lock; the scan itself runs without
     * it while writers append (chunks never move; the memtable is referenced). */
    pthread_mutex_lock(&s->mu);
    struct store_memtable *mem = s->mem;
    store_mt_ref(mem);
    size_t n = atomic_load_explicit(&mem->published, memory_order_acquire);
    size_t nch = (n + mem->chunk_recs - 1) / mem->chunk_recs;
    uint8_t **chunks = malloc((nch ? nch : 1) * sizeof(*chunks));
    if (chunks != NULL && nch > 0) /* an empty memtable has no chunk directory yet */
        memcpy(chunks, mem->chunks, nch * sizeof(*chunks));
    size_t nfz = 0;
    struct store_memtable **fz = store_frozen_capture_locked(s, &nfz);
    pthread_mutex_unlock(&s->mu);
    int rc = chunks == NULL || fz == NULL ? ST_ENOMEM : ST_OK;
    if (rc == ST_OK)
        rc = scan_mt(mem, n, chunks, fn, ctx);
    free(chunks);
    store_mt_unref(mem);
    for (size_t i = 0; rc == ST_OK && i < nfz; i++)
        rc = scan_mt(fz[i], fz[i]->n, fz[i]->chunks, fn, ctx);
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
                                     .vecs = store_segment_rows_base(g),
                                     .rows_ = g->rows};
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

bool store_window_unflushed(struct store *s, int64_t window_start)
{
    pthread_mutex_lock(&s->mu);
    bool found = store_mt_has_window(s->mem, window_start);
    for (size_t i = 0; !found && i < s->nfrozen; i++)
        found = store_mt_has_window(s->frozen[i], window_start);
    pthread_mutex_unlock(&s->mu);
    return found;
}
