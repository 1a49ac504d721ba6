/*
 * store_flush.c — flushing frozen memtables into one run segment per window (the flusher
 * thread).
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
#include "st_fault.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

/* ---- flush -------------------------------------------------------------------------------- */

static int entry_cmp(const void *a, const void *b, void *arg)
{
    const struct store_memtable *m = arg;
    const struct store_mt_entry *x = store_mt_at(m, *(const uint32_t *)a);
    const struct store_mt_entry *y = store_mt_at(m, *(const uint32_t *)b);
    if (x->window != y->window)
        return x->window < y->window ? -1 : 1;
    if (x->vfile != y->vfile)
        return x->vfile < y->vfile ? -1 : 1;
    return store_id_cmp(x->id, x->id_len, y->id, y->id_len);
}

/*
 * Writes the oldest frozen memtable into one segment per window and records them in the
 * manifest. Caller holds flush_mu only (flushes are serialised so that frozen memtables are
 * installed oldest first and each once).
 *
 * Locks, as a merge: the segment files are written, fsynced, renamed and the directory fsynced
 * with no store lock held; mf_mu is taken only to reserve room in the segment list, append the
 * edit (log_number and next_file read then, under mu) and install the result. So a seal,
 * a drop or a key/value put never waits for a flush's I/O, nor a flush for theirs.
 *
 * A drop of one of the flushed windows that lands during the I/O is ordered before the flush:
 * the flush's segments are installed after it, exactly as if the flush had run second (a
 * caller that wants a window gone drains the memtables first, as twcs does).
 */
static int flush_oldest(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->nfrozen == 0 || s->failed != ST_OK) {
        int rc = s->failed;
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    struct store_memtable *m = s->frozen[0];
    store_mt_ref(m);
    pthread_mutex_unlock(&s->mu);

    int rc = ST_OK;
    struct st_err err = {0};
    uint32_t *order = malloc((m->n ? m->n : 1) * sizeof(*order));
    struct store_seg_in *in = malloc((m->n ? m->n : 1) * sizeof(*in));
    struct store_mf_edit e = {0};
    struct store_segment **added = NULL;
    struct store_mf_seg *gs = NULL;
    size_t nadded = 0, ngs = 0;
    uint64_t written = 0;
    if (order == NULL || in == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        if (atomic_load_explicit(&store_mt_at(m, i)->superseded_by, memory_order_relaxed) == 0)
            order[n++] = (uint32_t)i;
    qsort_r(order, n, sizeof(*order), entry_cmp, m);
    /* One run per window and vector log: the records whose rows are in a log get a
     * metadata-only run naming them (format version 2, external rows); the others (deletes,
     * late data after a log closed, inline_vectors) a run holding their vectors. */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int64_t w = store_mt_at(m, order[i])->window;
        uint64_t vf = store_mt_at(m, order[i])->vfile, vrows = 0;
        while (j < n && store_mt_at(m, order[j])->window == w &&
               store_mt_at(m, order[j])->vfile == vf) {
            const struct store_mt_entry *x = store_mt_at(m, order[j]);
            struct store_seg_in *g = &in[j - i];
            g->id = x->id;
            g->id_len = x->id_len;
            g->ts = x->ts;
            g->partition = x->partition;
            g->offset = x->offset;
            g->idx = x->idx;
            g->op = x->op;
            g->vec = x->vec;
            g->meta = x->meta;
            g->meta_len = x->meta_len;
            g->row = x->row;
            if (vf != 0 && (uint64_t)x->row + 1 > vrows)
                vrows = (uint64_t)x->row + 1;
            j++;
        }
        pthread_mutex_lock(&s->mu);
        uint64_t fnum = s->mf.next_file++;
        /* The run claims the log's rows up to the last it names, no further: those were
         * fsynced before this memtable froze, while rows appended since may still be lost to a
         * power cut (a run claiming them could not be opened after one). A log gone (its
         * window dropped meanwhile) leaves the memtable's copies: the run holds the vectors. */
        struct store_vlog *vl = vf != 0 ? store_vlog_by_number_locked(s, vf) : NULL;
        pthread_mutex_unlock(&s->mu);
        struct store_mf_seg mg = {.file_number = fnum,
                                  .meta = {.window_start = w,
                                           .window_end = store_mt_at(m, order[i])->window_end,
                                           .kind = STORE_SEG_RUN,
                                           .rows = vl != NULL,
                                           .vfile = vl != NULL ? vf : 0,
                                           .vrows = vrows}};
        char *path = store_file_path(s->dir, STORE_FILE_SEG, fnum);
        char *tmp = NULL;
        if (path == NULL || asprintf(&tmp, "%s.tmp", path) < 0) {
            free(path);
            rc = ST_ENOMEM;
            goto out;
        }
        uint64_t bytes = 0;
        rc = store_segment_write(s->o.fs, tmp, m->dim, &mg.meta, in, j - i, &bytes, &err);
        if (rc == ST_OK)
            rc = store_fs_rename(s->o.fs, tmp, path, "store.seg.rename");
        if (rc != ST_OK)
            store_best_effort(store_fs_unlink(s->o.fs, tmp, "store.seg.unlink_tmp"));
        struct store_segment *g = NULL;
        if (rc == ST_OK)
            rc = store_segment_open(path, true, &g, &err);
        free(tmp);
        free(path);
        if (rc != ST_OK)
            goto out;
        g->fs = s->o.fs;
        g->file_number = fnum;
        g->info.file_number = fnum;
        mg.count = g->info.count;
        mg.bytes = bytes;
        mg.min_ts = g->info.min_ts;
        mg.max_ts = g->info.max_ts;
        written += bytes;
        struct store_segment **na = realloc(added, (nadded + 1) * sizeof(*na));
        struct store_mf_seg *ng = realloc(gs, (ngs + 1) * sizeof(*ng));
        if (na != NULL)
            added = na;
        if (ng != NULL)
            gs = ng;
        if (na == NULL || ng == NULL) {
            store_segment_unref(g);
            rc = ST_ENOMEM;
            goto out;
        }
        added[nadded++] = g;
        gs[ngs++] = mg;
        i = j;
    }
    if ((rc = store_fs_sync_dir(s->o.fs, s->dir, "store.seg.sync_dir")) != ST_OK)
        goto out;
    /* Room in the segment list before the edit: once the edit is durable nothing may fail
     * and undo it (the files it lists must stay). mf_mu is held from here to the install, so
     * the list cannot grow meanwhile. */
    pthread_mutex_lock(&s->mf_mu);
    pthread_mutex_lock(&s->mu);
    struct store_segment **ns = ST_FAULT("store.flush.reserve")
                                    ? NULL
                                    : realloc(s->segs, (s->nsegs + nadded) * sizeof(*ns));
    if (ns != NULL)
        s->segs = ns;
    pthread_mutex_unlock(&s->mu);
    if (ns == NULL) {
        pthread_mutex_unlock(&s->mf_mu);
        rc = ST_ENOMEM;
        goto out;
    }
    /* One edit group: the new segments, the WAL files they make obsolete, the marks. A run
     * naming rows of a log that a drop took out meanwhile is not installed: the next attempt
     * writes those records' vectors from the memtable instead. */
    pthread_mutex_lock(&s->mu);
    uint64_t log_number = s->nfrozen > 1 ? s->frozen[1]->first_log : s->mem->first_log;
    uint64_t next_file = s->mf.next_file;
    for (size_t i = 0; rc == ST_OK && i < ngs; i++)
        if (gs[i].meta.vfile != 0 && store_vlog_by_number_locked(s, gs[i].meta.vfile) == NULL)
            rc = ST_ENOTFOUND;
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK) {
        pthread_mutex_unlock(&s->mf_mu);
        goto out;
    }
    for (size_t i = 0; rc == ST_OK && i < ngs; i++)
        rc = store_mf_edit_add_segment(&e, &gs[i]);
    for (size_t i = 0; rc == ST_OK && i < m->marks.n; i++)
        rc = store_mf_edit_mark(&e, m->marks.m[i].partition, m->marks.m[i].offset);
    if (rc == ST_OK)
        rc = store_mf_edit_log_number(&e, log_number);
    if (rc == ST_OK)
        rc = store_mf_edit_next_file(&e, next_file);
    bool appending = rc == ST_OK;
    if (rc == ST_OK)
        rc = store_mf_append(s, &e);
    if (rc != ST_OK) {
        pthread_mutex_unlock(&s->mf_mu);
        if (appending) {
            /* The append failed (and failed the store), but its edit may be durable all the
             * same: the files it lists stay. The next open keeps or removes them. */
            for (size_t i = 0; i < nadded; i++)
                store_segment_unref(added[i]);
            nadded = 0;
        }
        goto out;
    }

    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < nadded; i++)
        s->segs[s->nsegs++] = added[i];
    nadded = 0;
    memmove(s->frozen, s->frozen + 1, (s->nfrozen - 1) * sizeof(*s->frozen));
    s->nfrozen--;
    s->flushed_total++;
    store_mt_unref(m); /* the frozen list's reference */
    s->st.segment_bytes_written += written;
    pthread_cond_broadcast(&s->flushed_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->mf_mu);

    /* WAL files below log_number are now obsolete. */
    bool removed = false;
    DIR *d = opendir(s->dir);
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        uint64_t num;
        if (store_file_parse(de->d_name, &num) == STORE_FILE_LOG && num < log_number) {
            char *p = store_file_path(s->dir, STORE_FILE_LOG, num);
            struct stat sb;
            uint64_t size = p != NULL && stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
            if (p != NULL && store_fs_unlink(s->o.fs, p, "store.wal.unlink") == ST_OK) {
                removed = true;
                pthread_mutex_lock(&s->mu);
                s->st.wal_live_bytes -= size < s->st.wal_live_bytes ? size : s->st.wal_live_bytes;
                pthread_mutex_unlock(&s->mu);
            }
            free(p);
        }
    }
    if (d != NULL)
        closedir(d);
    if (removed)
        store_best_effort(store_fs_sync_dir(s->o.fs, s->dir, "store.wal.sync_dir"));
    st_log_info(LOG_COMP, "flushed dir=%s records=%zu segments=%zu bytes=%" PRIu64, s->dir, n, ngs,
                written);
out:
    if (rc != ST_OK) {
        /* Nothing references the files of a failed flush; remove them and retry later. */
        for (size_t i = 0; i < nadded; i++) {
            added[i]->doomed = true;
            store_segment_unref(added[i]);
        }
        st_log_warn(LOG_COMP, "flush failed dir=%s error=\"%s\" detail=\"%s\"", s->dir,
                    st_strerror(rc), err.msg);
        pthread_mutex_lock(&s->mu);
        s->flush_failures++;
        s->flush_error = rc;
        pthread_cond_broadcast(&s->flushed_cv);
        pthread_mutex_unlock(&s->mu);
    }
    store_mt_unref(m);
    free(order);
    free(in);
    free(added);
    free(gs);
    store_mf_edit_free(&e);
    return rc;
}

void *store_flusher_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-flush"); /* by itself: a prctl (ing_pipe.c) */
    struct store *s = arg;
    int64_t backoff = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (s->nfrozen == 0 || s->failed != ST_OK || backoff > 0) {
            store_cond_wait_ms(&s->work_cv, &s->mu, backoff > 0 ? backoff : 1000);
            backoff = 0;
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->flush_mu);
        int rc = flush_oldest(s);
        pthread_mutex_unlock(&s->flush_mu);
        pthread_mutex_lock(&s->mu);
        backoff = rc == ST_OK ? 0 : 1000; /* e.g. ENOSPC: the WAL still holds the data */
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int store_flush(struct store *s)
{
    pthread_mutex_lock(&s->sync_mu);
    int rc = store_freeze(s);
    pthread_mutex_unlock(&s->sync_mu);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&s->mu);
    uint64_t target = s->frozen_total, failures = s->flush_failures;
    pthread_mutex_unlock(&s->mu);
    if (!s->have_flusher) {
        for (;;) {
            pthread_mutex_lock(&s->mu);
            bool done = s->flushed_total >= target;
            pthread_mutex_unlock(&s->mu);
            if (done)
                return ST_OK;
            pthread_mutex_lock(&s->flush_mu);
            rc = flush_oldest(s);
            pthread_mutex_unlock(&s->flush_mu);
            if (rc != ST_OK)
                return rc;
        }
    }
    /* Wait for the memtables frozen up to now, not for none to be frozen: writers may keep
     * freezing new ones. A failed attempt ends the wait with its error (the flusher retries
     * on its own; the caller decides whether to wait again). */
    pthread_mutex_lock(&s->mu);
    while (s->flushed_total < target && s->failed == ST_OK && s->flush_failures == failures)
        pthread_cond_wait(&s->flushed_cv, &s->mu);
    rc = s->failed != ST_OK ? s->failed : s->flushed_total >= target ? ST_OK : s->flush_error;
    pthread_mutex_unlock(&s->mu);
    return rc;
}
