/*
 * store_merge.c — replacing a window's segments (seal, run merges) and dropping whole windows.
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
#include "segment_format.h"
#include "st_prom.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

/* Does a memtable (active or frozen) hold a record naming rows of vector log vfile? Caller
 * holds mu. */
static bool mt_names_locked(const struct store *s, uint64_t vfile)
{
    if (store_mt_has_vfile(s->mem, vfile))
        return true;
    for (size_t i = 0; i < s->nfrozen; i++)
        if (store_mt_has_vfile(s->frozen[i], vfile))
            return true;
    return false;
}

int store_drop_window(struct store *s, int64_t window_start, const struct store_edit_extra *extra,
                      size_t *removed)
{
    *removed = 0;
    if (s->o.read_only)
        return ST_EINVAL;
    pthread_mutex_lock(&s->mf_mu);
    struct store_mf_edit e = {0};
    int rc = ST_OK;
    size_t ndel = 0;
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    for (size_t i = 0; rc == ST_OK && i < s->nsegs; i++) {
        if (s->segs[i]->info.window_start == window_start) {
            rc = store_mf_edit_del_segment(&e, s->segs[i]->file_number);
            ndel++;
        }
    }
    /* The window's vector log goes too (unsealed data of a dropped window): closed first, so
     * no write appends to it from here, and only once no memtable names its rows (their WAL
     * records would name a log the manifest no longer lists): ST_EAGAIN, flush first. */
    struct store_vlog *vl = store_vlog_find_locked(s, window_start);
    uint64_t vnum = vl != NULL ? vl->number : 0;
    if (vl != NULL) {
        vl->closed = true;
        if (rc == ST_OK && (mt_names_locked(s, vnum) || store_vw_pending_locked(s, vl)))
            rc = ST_EAGAIN;
    }
    if (rc == ST_OK && vnum != 0)
        rc = store_mf_edit_del_vlog(&e, vnum);
    pthread_mutex_unlock(&s->mu);
    if (rc == ST_OK)
        rc = store_mf_edit_extra(&e, extra);
    if (rc == ST_OK && e.len > 0)
        rc = store_mf_append(s, &e); /* the intent is durable before any file goes */
    if (rc == ST_OK && vnum != 0) {
        pthread_mutex_lock(&s->mu);
        vl = store_vlog_detach_locked(s, vnum);
        uint64_t vbytes = vl != NULL && vl->f != NULL ? vl->f->size : 0;
        pthread_mutex_unlock(&s->mu);
        store_vlog_unref(vl); /* a sync in flight keeps the handle until it is done */
        char *vp = store_file_path(s->dir, STORE_FILE_SEG, vnum);
        if (vp != NULL) /* readers of its runs keep their mappings; a leftover is an orphan */
            store_reclaim_unlink(s->reclaim, vp, "store.vlog.unlink", vbytes);
    }
    struct store_segment **gone = NULL;
    if (rc == ST_OK && ndel > 0) {
        pthread_mutex_lock(&s->mu);
        gone = malloc(s->nsegs * sizeof(*gone)); /* NULL: released under the lock after all */
        size_t keep = 0;
        for (size_t i = 0; i < s->nsegs; i++) {
            struct store_segment *g = s->segs[i];
            if (g->info.window_start == window_start) {
                store_segment_doom(g, s->reclaim, true); /* goes with its last reader */
                if (gone != NULL)
                    gone[(*removed)++] = g;
                else {
                    store_segment_unref(g);
                    (*removed)++;
                }
            } else {
                s->segs[keep++] = g;
            }
        }
        s->nsegs = keep;
        pthread_mutex_unlock(&s->mu);
    }
    store_mf_edit_free(&e);
    pthread_mutex_unlock(&s->mf_mu);
    /* The list's references go with no lock held: the last one unmaps and unlinks. */
    for (size_t i = 0; gone != NULL && i < *removed; i++)
        store_segment_unref(gone[i]);
    free(gone);
    return rc;
}

/* ---- merge -------------------------------------------------------------------------------- */
/*
 * A merge streams: every input is sorted by id with one version per id, so a k-way merge over
 * one cursor per input (a binary heap ordered by id, newest version first) yields the output
 * in id order, and the streaming segment writer takes it record by record. A cursor reads its
 * record table and vectors from the input's mmap and holds one decompressed meta block. So
 * the merge holds, whatever the window's size: per input one meta block (at most
 * STORE_SEG_META_BLOCK metas), plus the writer's buffers (store_segment_writer_memory: about
 * 0.7 MiB, plus its Bloom filter of 1.25 B per record). store_merge_memory states the bound.
 *
 * Locks: the I/O runs without mf_mu and without mu. Under mu the merge takes references to its
 * inputs and its file number (from s->mf.next_file); only once the output is durable (file
 * fsynced, renamed, directory fsynced) does it take mf_mu, check under mu that every input is
 * still live (a drop or another merge may have removed one meanwhile: then the output is
 * discarded and the merge fails with ST_ENOTFOUND), append the edit (with s->mf.next_file read
 * then) and install the result.
 */

struct store_merge_probe store_merge_probe;

struct merge_cur {
    struct store_segment *g;
    uint64_t i; /* current record; == count when exhausted */
    struct store_seg_record r;
    uint8_t *mraw; /* meta block mblock of g, decompressed; NULL when none loaded */
    size_t mlen;
    uint64_t mblock;
    size_t moff; /* offset of record i's meta in its block */
};

struct merge_state {
    struct merge_cur *cur;
    struct merge_cur **heap;
    size_t nheap;
    uint64_t buffered, peak;
    struct st_err *err;
};

static void merge_account(struct merge_state *m, int64_t delta)
{
    m->buffered = (uint64_t)((int64_t)m->buffered + delta);
    if (m->buffered > m->peak)
        m->peak = m->buffered;
}

static void cur_drop_block(struct merge_state *m, struct merge_cur *c)
{
    if (c->mraw != NULL)
        merge_account(m, -(int64_t)c->mlen);
    free(c->mraw);
    c->mraw = NULL;
    c->mlen = 0;
}

static void cur_read(struct merge_cur *c)
{
    if (c->i < c->g->info.count)
        store_segment_record(c->g, c->i, &c->r);
}

static void cur_next(struct merge_state *m, struct merge_cur *c)
{
    c->moff += c->r.meta_len;
    c->i++;
    if (c->i % STORE_SEG_META_BLOCK == 0) {
        c->moff = 0;
        cur_drop_block(m, c); /* a block is read once: let it go as soon as it is passed */
    }
    cur_read(c);
}

/* Points *meta at the current record's meta, loading its block when needed. */
static int cur_meta(struct merge_state *m, struct merge_cur *c, const uint8_t **meta)
{
    *meta = NULL;
    if (c->r.meta_len == 0)
        return ST_OK;
    uint64_t b = c->i / STORE_SEG_META_BLOCK;
    if (c->mraw == NULL || c->mblock != b) {
        cur_drop_block(m, c);
        int rc = store_segment_meta_block(c->g, b, &c->mraw, &c->mlen, m->err);
        if (rc != ST_OK)
            return rc;
        c->mblock = b;
        merge_account(m, (int64_t)c->mlen);
    }
    if (c->moff + c->r.meta_len > c->mlen)
        return st_err_set(m->err, ST_ECORRUPT, "%s: record %llu: meta beyond its block", c->g->path,
                          (unsigned long long)c->i);
    *meta = c->mraw + c->moff;
    return ST_OK;
}

/* Heap order: id ascending, then the newest version first. */
static bool cur_less(const struct merge_cur *a, const struct merge_cur *b)
{
    int c = store_id_cmp(a->r.id, a->r.id_len, b->r.id, b->r.id_len);
    if (c != 0)
        return c < 0;
    struct store_version va = {a->r.ts, a->r.partition, a->r.offset, a->r.idx};
    struct store_version vb = {b->r.ts, b->r.partition, b->r.offset, b->r.idx};
    return store_version_cmp(&va, &vb) > 0;
}

static void heap_down(struct merge_state *m, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, min = i;
        if (l < m->nheap && cur_less(m->heap[l], m->heap[min]))
            min = l;
        if (r < m->nheap && cur_less(m->heap[r], m->heap[min]))
            min = r;
        if (min == i)
            return;
        struct merge_cur *t = m->heap[i];
        m->heap[i] = m->heap[min];
        m->heap[min] = t;
        i = min;
    }
}

/* Advances the heap's top cursor and restores the heap. */
static void heap_advance_top(struct merge_state *m)
{
    struct merge_cur *c = m->heap[0];
    cur_next(m, c);
    if (c->i >= c->g->info.count) {
        cur_drop_block(m, c);
        m->heap[0] = m->heap[--m->nheap];
    }
    if (m->nheap > 0)
        heap_down(m, 0);
}

uint64_t store_merge_memory(size_t n, uint64_t expect, uint32_t meta_max)
{
    uint64_t per_input = sizeof(struct merge_cur) + sizeof(struct merge_cur *) +
                         (uint64_t)STORE_SEG_META_BLOCK * meta_max;
    return n * per_input + store_segment_writer_memory(expect, meta_max);
}

/*
 * What a merge writes:
 *   MERGE_PROMOTE  one self-contained input: no file written, the manifest changes its kind
 *   MERGE_REWRITE  a new self-contained file holding every vector (version 1)
 *   MERGE_META     inputs that all name rows of one vector log: a new metadata-only run
 *                  naming the same rows (nothing but the small tables written)
 *   MERGE_EXTEND   a seal of a window with a vector log: the log is completed into the
 *                  segment; rows in it stay, the other inputs' vectors are appended as rows
 */
enum merge_mode { MERGE_PROMOTE, MERGE_REWRITE, MERGE_META, MERGE_EXTEND };

/* Streams the merge of in[0..n) into the segment at path (meta->vfile: a metadata-only run of
 * that log; extend_rows != UINT64_MAX: completing the vector log at path, which holds that
 * many rows). Records of inputs whose rows are in file `own` keep those rows (0: none).
 * *bytes gets its size, *peak the bytes buffered at most (cursors plus writer). */
static int merge_write(struct store *s, struct store_segment **in, size_t n, const char *path,
                       const struct store_seg_meta *meta, uint64_t extend_rows,
                       const uint32_t *sums, uint64_t own, uint64_t *bytes, uint64_t *peak,
                       struct st_err *err)
{
    struct merge_state m = {.err = err};
    struct store_segment_writer *w = NULL;
    uint64_t expect = 0;
    for (size_t k = 0; k < n; k++)
        expect += in[k]->info.count;
    m.cur = calloc(n, sizeof(*m.cur));
    m.heap = calloc(n, sizeof(*m.heap));
    int rc = ST_ENOMEM;
    if (m.cur == NULL || m.heap == NULL)
        goto out;
    merge_account(&m, (int64_t)(n * (sizeof(*m.cur) + sizeof(*m.heap))));
    for (size_t k = 0; k < n; k++) {
        struct merge_cur *c = &m.cur[k];
        c->g = in[k];
        cur_read(c);
        if (c->g->info.count > 0)
            m.heap[m.nheap++] = c;
    }
    for (size_t i = m.nheap; i-- > 0;)
        heap_down(&m, i);
    /* own: inputs naming rows of this file keep their rows (META, EXTEND) */
    if (extend_rows != UINT64_MAX) {
        rc = store_segment_writer_extend(s->o.fs, path, s->o.dim, meta, expect, extend_rows, sums,
                                         &w, err);
    } else {
        rc = store_segment_writer_open(s->o.fs, path, s->o.dim, meta, expect, &w, err);
    }
    if (rc != ST_OK)
        goto out;
    while (rc == ST_OK && m.nheap > 0) {
        struct merge_cur *c = m.heap[0]; /* the newest version of the smallest id left */
        struct store_seg_in r = {.id = c->r.id,
                                 .id_len = c->r.id_len,
                                 .ts = c->r.ts,
                                 .partition = c->r.partition,
                                 .offset = c->r.offset,
                                 .idx = c->r.idx,
                                 .op = c->r.op,
                                 .meta_len = c->r.meta_len};
        if (c->r.op == STORE_OP_UPSERT)
            r.vec = store_segment_vector(c->g, c->i);
        if (meta->rows && own != 0 && c->g->vfile == own) {
            r.row = store_segment_row(c->g, c->i); /* already a row of the output */
        } else if (meta->rows && meta->vfile != 0) {
            rc = st_err_set(err, ST_EINTERNAL, "%s: input %s names no row of log %llu", path,
                            c->g->path, (unsigned long long)meta->vfile);
            break;
        } else if (meta->rows &&
                   (rc = store_segment_writer_put_row(w, r.vec, &r.row, err)) != ST_OK) {
            break; /* a delete's row is zeros (vec NULL) */
        }
        if ((rc = cur_meta(&m, c, &r.meta)) != ST_OK)
            break;
        if ((rc = store_segment_writer_add(w, &r, err)) != ST_OK)
            break;
        /* r.id points into c's mmap, which stays mapped: skip every older version of it. */
        heap_advance_top(&m);
        while (m.nheap > 0 &&
               store_id_cmp(m.heap[0]->r.id, m.heap[0]->r.id_len, r.id, r.id_len) == 0)
            heap_advance_top(&m);
    }
    if (rc == ST_OK)
        rc = store_segment_writer_finish(w, bytes, err);
    if (w != NULL)
        *peak = m.peak + store_segment_writer_peak(w);
out:
    store_segment_writer_close(w);
    for (size_t k = 0; m.cur != NULL && k < n; k++)
        cur_drop_block(&m, &m.cur[k]);
    free(m.cur);
    free(m.heap);
    return rc;
}

/* Whether g is still in the store's segment list. Caller holds mu. */
static bool seg_live_locked(const struct store *s, const struct store_segment *g)
{
    for (size_t i = 0; i < s->nsegs; i++)
        if (s->segs[i] == g)
            return true;
    return false;
}

static void probe_in_flight(void)
{
    if (store_merge_probe.in_flight != NULL)
        store_merge_probe.in_flight(store_merge_probe.ctx);
}

int store_merge(struct store *s, const uint64_t *inputs, size_t n, enum store_seg_kind kind,
                uint32_t version, const struct store_edit_extra *extra,
                struct store_segment_info *out)
{
    if (s->o.read_only || n == 0)
        return ST_EINVAL;
    struct store_segment **in = calloc(n, sizeof(*in));
    if (in == NULL)
        return ST_ENOMEM;
    struct store_mf_edit e = {0};
    struct store_segment *ng = NULL;
    struct store_vlog *vl = NULL; /* MERGE_EXTEND: the log being completed (a reference) */
    struct st_err err = {0};
    char *path = NULL, *tmp = NULL;
    bool renamed = false, append_failed = false;
    uint64_t written = 0, peak = 0, extend_rows = UINT64_MAX;
    const uint32_t *ext_sums = NULL; /* MERGE_EXTEND: the log's block sums (vl holds them) */
    enum merge_mode mode = n == 1 ? MERGE_PROMOTE : MERGE_REWRITE;
    int rc = ST_OK;

    /* References to the inputs (and, for a rewrite, the output's file number) under mu. */
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    for (size_t k = 0; rc == ST_OK && k < n; k++) {
        struct store_segment *g = NULL;
        for (size_t i = 0; i < s->nsegs && g == NULL; i++)
            if (s->segs[i]->file_number == inputs[k])
                g = s->segs[i];
        for (size_t j = 0; j < k; j++)
            if (inputs[j] == inputs[k])
                rc = ST_EINVAL;
        if (rc == ST_OK && g == NULL)
            rc = ST_ENOTFOUND;
        if (rc == ST_OK && k > 0 && g->info.window_start != in[0]->info.window_start)
            rc = ST_EINVAL;
        if (rc == ST_OK) {
            store_segment_ref(g);
            in[k] = g;
        }
    }
    struct store_mf_seg mg = {.meta = {.window_start = in[0] ? in[0]->info.window_start : 0,
                                       .window_end = in[0] ? in[0]->info.window_end : 0,
                                       .kind = kind,
                                       .version = version}};
    if (rc == ST_OK) {
        /* Inputs naming rows of one log merge into a run naming the same rows; a seal of a
         * window with a log completes the log; a lone input naming rows it does not hold is
         * never promoted (it is not self-contained). */
        uint64_t vf = in[0]->vfile;
        uint64_t vrows = 0;
        for (size_t k = 0; k < n; k++) {
            if (in[k]->vfile != vf)
                vf = 0;
            if (in[k]->max_row > vrows) /* rows named, not claimed: see store_flush.c */
                vrows = in[k]->max_row;
            if (in[k]->vfile != 0 && mode == MERGE_PROMOTE)
                mode = MERGE_REWRITE;
        }
        struct store_vlog *wl = store_vlog_find_locked(s, mg.meta.window_start);
        if (kind == STORE_SEG_SEALED && wl != NULL) {
            wl->closed = true; /* no appends from here: the tables go after the rows */
            if (mt_names_locked(s, wl->number) || store_vw_pending_locked(s, wl))
                rc = ST_EAGAIN; /* records naming its rows are not in runs yet: flush first */
            for (size_t i = 0; rc == ST_OK && i < s->nsegs; i++) {
                bool listed = false;
                for (size_t k = 0; k < n && !listed; k++)
                    listed = in[k] == s->segs[i];
                if (s->segs[i]->vfile == wl->number && !listed)
                    rc = ST_ENOTFOUND; /* a run naming its rows is not an input: re-plan */
            }
            if (rc == ST_OK) {
                mode = MERGE_EXTEND;
                vl = wl;
                atomic_fetch_add(&vl->refs, 1);
                extend_rows = vl->nrows;
                /* closed, nothing pending: the sums are complete and stay as they are */
                ext_sums = store_vlog_sums_locked(vl, extend_rows * s->o.dim * 4);
                mg.file_number = vl->number;
                mg.meta.rows = true;
            }
        } else if (kind != STORE_SEG_SEALED && vf != 0 && n > 1) {
            mode = MERGE_META;
            mg.meta.rows = true;
            mg.meta.vfile = vf;
            mg.meta.vrows = vrows;
        }
    }
    if (rc == ST_OK && mode != MERGE_PROMOTE && mode != MERGE_EXTEND)
        mg.file_number = s->mf.next_file++;
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK)
        goto out;

    /* The I/O, with no store lock held. */
    if (mode == MERGE_PROMOTE) {
        /* Promotion: the file already is the window's only run; only the manifest changes. A
         * published segment never changes, so readers holding the old handle keep seeing a
         * run: the promoted segment is a new handle of the same file. */
        mg.file_number = in[0]->file_number;
        if ((rc = store_segment_open(in[0]->path, true, &ng, &err)) != ST_OK)
            goto out;
    } else if (mode == MERGE_EXTEND) {
        /* The log is completed in place: rows stay, the tables and footer are appended and
         * fsynced. Until the manifest edit lands it is still a log (recovery cuts the tail). */
        if ((path = store_file_path(s->dir, STORE_FILE_SEG, mg.file_number)) == NULL) {
            rc = ST_ENOMEM;
            goto out;
        }
        rc = merge_write(s, in, n, path, &mg.meta, extend_rows, ext_sums, mg.file_number, &written,
                         &peak, &err);
        atomic_store(&store_merge_probe.last_peak, peak);
        if (rc != ST_OK || (rc = store_segment_open(path, true, &ng, &err)) != ST_OK)
            goto out;
        written -= STORE_SEG_HEADER + extend_rows * s->o.dim * 4; /* what this merge wrote */
    } else {
        path = store_file_path(s->dir, STORE_FILE_SEG, mg.file_number);
        if (path == NULL || asprintf(&tmp, "%s.tmp", path) < 0) {
            tmp = NULL;
            rc = ST_ENOMEM;
            goto out;
        }
        rc = merge_write(s, in, n, tmp, &mg.meta, UINT64_MAX, NULL, mg.meta.vfile, &written, &peak,
                         &err);
        atomic_store(&store_merge_probe.last_peak, peak);
        if (rc == ST_OK)
            rc = store_fs_rename(s->o.fs, tmp, path, "store.merge.rename");
        if (rc != ST_OK) {
            store_best_effort(store_fs_unlink(s->o.fs, tmp, "store.merge.unlink_tmp"));
            goto out;
        }
        renamed = true;
        if ((rc = store_fs_sync_dir(s->o.fs, s->dir, "store.merge.sync_dir")) != ST_OK)
            goto out;
        if ((rc = store_segment_open(path, true, &ng, &err)) != ST_OK)
            goto out;
    }
    ng->fs = s->o.fs;
    ng->file_number = mg.file_number;
    ng->info.file_number = mg.file_number;
    ng->info.kind = kind;
    ng->info.version = version;
    mg.count = ng->info.count;
    mg.bytes = mode == MERGE_PROMOTE ? in[0]->info.bytes : ng->info.bytes;
    mg.min_ts = ng->info.min_ts;
    mg.max_ts = ng->info.max_ts;
    probe_in_flight();

    /* Install: one manifest edit, then the segment list, with every input still live. */
    pthread_mutex_lock(&s->mf_mu);
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    for (size_t k = 0; rc == ST_OK && k < n; k++)
        if (!seg_live_locked(s, in[k]))
            rc = ST_ENOTFOUND; /* dropped or merged away while this merge ran */
    if (rc == ST_OK && vl != NULL && store_vlog_by_number_locked(s, vl->number) != vl)
        rc = ST_ENOTFOUND; /* the window was dropped meanwhile */
    uint64_t next_file = s->mf.next_file;
    pthread_mutex_unlock(&s->mu);
    for (size_t k = 0; rc == ST_OK && k < n; k++)
        rc = store_mf_edit_del_segment(&e, in[k]->file_number);
    if (rc == ST_OK && vl != NULL)
        rc = store_mf_edit_del_vlog(&e, vl->number); /* before the segment of its number */
    if (rc == ST_OK)
        rc = store_mf_edit_add_segment(&e, &mg);
    if (rc == ST_OK && mode != MERGE_PROMOTE)
        rc = store_mf_edit_next_file(&e, next_file);
    if (rc == ST_OK)
        rc = store_mf_edit_extra(&e, extra);
    if (rc == ST_OK && (rc = store_mf_append(s, &e)) != ST_OK)
        append_failed = true;
    struct store_vlog *sealed_log = NULL;
    if (rc == ST_OK) {
        pthread_mutex_lock(&s->mu);
        size_t keep = 0;
        for (size_t i = 0; i < s->nsegs; i++) {
            bool gone = false;
            for (size_t k = 0; k < n && !gone; k++)
                gone = s->segs[i] == in[k];
            if (gone) {
                /* A rewritten input's file goes with its last reader; a promoted one's file
                 * lives on in ng. */
                store_segment_doom(s->segs[i], s->reclaim, mode != MERGE_PROMOTE);
                store_segment_unref(s->segs[i]); /* the list's reference */
            } else {
                s->segs[keep++] = s->segs[i];
            }
        }
        s->segs[keep++] = ng; /* the list had room for the n >= 1 inputs */
        s->nsegs = keep;
        if (vl != NULL)
            sealed_log = store_vlog_detach_locked(s, vl->number);
        if (mode != MERGE_PROMOTE)
            s->st.segment_bytes_written += written;
        if (mode == MERGE_EXTEND) {
            uint64_t vbytes = extend_rows * s->o.dim * 4;
            s->st.seal_read_bytes += ext_sums != NULL ? vbytes % STORE_SEG_VEC_BLOCK : vbytes;
        }
        if (out != NULL) {
            *out = ng->info;
            out->written = mode == MERGE_PROMOTE ? 0 : written;
        }
        ng = NULL;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&s->mf_mu);
    store_vlog_unref(sealed_log); /* the table's reference */
out:
    /* A discarded output goes; a promotion's file is not ours, nor a completed log's (still a
     * log until the edit lands: the next extend or open cuts its tail). After a failed
     * manifest append the edit may yet be on disk (the store is failed now): the next open
     * decides. */
    if (ng != NULL) {
        ng->doomed = (mode == MERGE_REWRITE || mode == MERGE_META) && !append_failed;
        store_segment_unref(ng);
    } else if (renamed && rc != ST_OK) {
        store_best_effort(store_fs_unlink(s->o.fs, path, "store.merge.unlink_output"));
    }
    store_vlog_unref(vl);
    for (size_t k = 0; k < n; k++)
        if (in[k] != NULL)
            store_segment_unref(in[k]);
    if (rc != ST_OK && rc != ST_EAGAIN)
        st_log_warn(LOG_COMP, "merge failed dir=%s inputs=%zu error=\"%s\" detail=\"%s\"", s->dir,
                    n, st_strerror(rc), err.msg);
    else if (rc == ST_OK && mode != MERGE_PROMOTE)
        st_log_info(LOG_COMP,
                    "merged dir=%s window=%" PRId64 " inputs=%zu records=%" PRIu64 " bytes=%" PRIu64
                    " mode=%s peak_buffered=%" PRIu64,
                    s->dir, mg.meta.window_start, n, mg.count, written,
                    mode == MERGE_EXTEND ? "extend"
                    : mode == MERGE_META ? "meta"
                                         : "rewrite",
                    peak);
    free(in);
    free(path);
    free(tmp);
    store_mf_edit_free(&e);
    return rc;
}
