/*
 * store_open.c — open and crash recovery (manifest, then WAL replay), close.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_log.h"
#include "st_prom.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

/* ---- open and recovery -------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * The rows of the vector logs that recovery finds named, per log (by position in s->vlogs):
 * named[k], how many rows of log k must stay (the highest named + 1), and seen[k], a bit per
 * row once a run or a replayed record names it — grown as rows are named, so its size follows
 * what is named (rows are 32-bit), never a log's file size. A row is written once and named by
 * one record only: a second naming (bytes with valid checksums that lie) would make every later
 * seal of the window (and, for two records, every flush) refuse its run forever, so open
 * refuses it instead, saying where.
 */
struct row_claims {
    size_t n;
    uint64_t *named;
    uint8_t **seen;
    size_t *seen_len; /* bytes of seen[k] */
};

static void claims_free(struct row_claims *c)
{
    for (size_t k = 0; c->seen != NULL && k < c->n; k++)
        free(c->seen[k]);
    free(c->seen);
    free(c->named);
    free(c->seen_len);
    memset(c, 0, sizeof(*c));
}

/* Claims row `row` (< 2^32) of log k: 1, or 0 if something named it already, or -1 (ENOMEM). */
static int claims_take(struct row_claims *c, size_t k, uint32_t row)
{
    size_t byte = row / 8;
    if (byte >= c->seen_len[k]) {
        size_t want = c->seen_len[k] ? c->seen_len[k] : 4096;
        while (want <= byte)
            want *= 2;
        uint8_t *nb = realloc(c->seen[k], want);
        if (nb == NULL)
            return -1;
        memset(nb + c->seen_len[k], 0, want - c->seen_len[k]);
        c->seen[k] = nb;
        c->seen_len[k] = want;
    }
    uint8_t bit = (uint8_t)(1u << (row % 8));
    if (c->seen[k][byte] & bit)
        return 0;
    c->seen[k][byte] |= bit;
    if (row + 1ull > c->named[k])
        c->named[k] = row + 1ull;
    return 1;
}

/* The runs' claims: a run maps (and so needs) the rows its footer claims, and names each of
 * its records' rows once (checked by its open); two runs naming one row is corruption. */
static int claims_init(struct store *s, struct row_claims *c, struct st_err *err)
{
    c->n = s->nvlogs;
    size_t n = c->n ? c->n : 1;
    c->named = calloc(n, sizeof(*c->named));
    c->seen = calloc(n, sizeof(*c->seen));
    c->seen_len = calloc(n, sizeof(*c->seen_len));
    if (c->named == NULL || c->seen == NULL || c->seen_len == NULL)
        return ST_ENOMEM;
    for (size_t i = 0; i < s->nsegs; i++) {
        const struct store_segment *g = s->segs[i];
        if (g->vfile == 0)
            continue; /* its rows are its own */
        size_t k = 0;
        while (k < c->n && s->vlogs[k]->number != g->vfile)
            k++;
        /* A run names rows of its own window's log, which a seal or a drop takes out in the
         * edit that takes out the run: anything else would make the window's seal fail for
         * good, or a drop delete rows another window's run still names. */
        if (k == c->n || s->vlogs[k]->window != g->info.window_start)
            return st_err_set(err, ST_ECORRUPT,
                              "%s: names rows of file %llu, which is not the vector log of its "
                              "window %lld",
                              g->path, (unsigned long long)g->vfile,
                              (long long)g->info.window_start);
        uint64_t need = g->max_row > g->nrows ? g->max_row : g->nrows;
        if (need > c->named[k])
            c->named[k] = need;
        for (uint64_t r = 0; r < g->info.count; r++) {
            uint64_t row = store_segment_row(g, r); /* a u32 row table entry */
            int t = claims_take(c, k, (uint32_t)row);
            if (t < 0)
                return st_err_set(err, ST_ENOMEM, "%s: no memory for the rows it names", g->path);
            if (t == 0)
                return st_err_set(err, ST_ECORRUPT,
                                  "%s: record %llu names row %llu of vector log %llu, which "
                                  "another run names too",
                                  g->path, (unsigned long long)r, (unsigned long long)row,
                                  (unsigned long long)g->vfile);
        }
    }
    return ST_OK;
}

/*
 * Reads the rows a replayed record names from their vector logs into its vectors, checking
 * each against the checksum the record carries, and claims them. *torn: a row is missing or
 * does not match (the log's bytes never reached the disk: this record and everything after it
 * were never acknowledged). ST_ECORRUPT: a row that a run or an earlier record names.
 */
static int read_rows(struct store *s, const struct store_batch *b, const struct store_vref *refs,
                     struct row_claims *c, bool *torn, const char *path, size_t off,
                     struct st_err *err)
{
    size_t vb = (size_t)s->o.dim * sizeof(float);
    *torn = false;
    for (uint32_t i = 0; i < b->n; i++) {
        if (refs[i].vfile == 0)
            continue;
        size_t k = 0;
        while (k < s->nvlogs && s->vlogs[k]->number != refs[i].vfile)
            k++;
        if (k == s->nvlogs)
            return st_err_set(err, ST_ECORRUPT,
                              "%s: WAL record at offset %zu names vector log %llu, which the "
                              "manifest does not list",
                              path, off, (unsigned long long)refs[i].vfile);
        struct store_vlog *v = s->vlogs[k];
        if (v->window != b->recs[i].window)
            return st_err_set(err, ST_ECORRUPT,
                              "%s: WAL record at offset %zu names vector log %llu of window "
                              "%lld for a record of window %lld",
                              path, off, (unsigned long long)refs[i].vfile, (long long)v->window,
                              (long long)b->recs[i].window);
        float *dst = (float *)(uintptr_t)b->recs[i].vec;
        if (refs[i].row >= v->nrows ||
            pread(v->f->fd, dst, vb, (off_t)(STORE_SEG_HEADER + (uint64_t)refs[i].row * vb)) !=
                (ssize_t)vb ||
            st_checksum32(dst, vb) != refs[i].sum) {
            *torn = true;
            st_log_warn(LOG_COMP,
                        "wal record names a vector row that is not on disk file=%s offset=%zu "
                        "log=%llu row=%u",
                        path, off, (unsigned long long)refs[i].vfile, refs[i].row);
            return ST_OK;
        }
    }
    for (uint32_t i = 0; i < b->n; i++) {
        for (size_t k = 0; refs[i].vfile != 0 && k < s->nvlogs; k++)
            if (s->vlogs[k]->number == refs[i].vfile) {
                int t = claims_take(c, k, refs[i].row);
                if (t < 0)
                    return st_err_set(err, ST_ENOMEM, "%s: no memory for the rows it names", path);
                if (t == 0)
                    return st_err_set(err, ST_ECORRUPT,
                                      "%s: WAL record at offset %zu names row %u of vector log "
                                      "%llu, which a run or an earlier record names too",
                                      path, off, refs[i].row, (unsigned long long)refs[i].vfile);
            }
    }
    return ST_OK;
}

/* Replays WAL files >= log_number, oldest first, into the memtable. */
static int recover_wal(struct store *s, const uint64_t *logs, size_t nlogs,
                       struct row_claims *claims, struct st_err *err)
{
    /* The "last" file is the newest one holding any bytes: a roll that failed (or crashed)
     * after creating its new file leaves that file empty, and the older file before it may
     * then end in a torn record exactly like a last file does. */
    size_t last_nonempty = 0;
    for (size_t li = 0; li < nlogs; li++) {
        char *path = store_file_path(s->dir, STORE_FILE_LOG, logs[li]);
        struct stat sb;
        if (path == NULL)
            return ST_ENOMEM;
        if (stat(path, &sb) != 0 || sb.st_size > 0)
            last_nonempty = li;
        free(path);
    }
    for (size_t li = 0; li < nlogs; li++) {
        bool last = li >= last_nonempty;
        char *path = store_file_path(s->dir, STORE_FILE_LOG, logs[li]);
        if (path == NULL)
            return ST_ENOMEM;
        uint8_t *data;
        size_t len;
        int rc = store_fs_read_all(path, &data, &len, SIZE_MAX);
        if (rc != ST_OK) {
            st_err_set(err, rc, "%s: cannot read: %s", path, st_strerror(rc));
            free(path);
            return rc;
        }
        struct store_log_reader r;
        store_log_reader_init(&r, data, len);
        const uint8_t *p;
        size_t plen, off;
        uint64_t batches = 0, skipped = 0;
        s->st.wal_live_bytes += len;
        bool rows_torn = false;
        while (rc == ST_OK && store_log_next(&r, &p, &plen, &off)) {
            struct store_batch b;
            struct store_record *recs = NULL;
            float *vecs = NULL;
            struct store_vref *refs = NULL;
            rc = store_wal_decode(s->o.dim, p, plen, &b, &recs, &vecs, &refs);
            if (rc != ST_OK) {
                st_err_set(err, ST_ECORRUPT, "%s: undecodable WAL record at offset %zu", path, off);
                rc = ST_ECORRUPT;
                break;
            }
            int64_t mark;
            if (b.partition >= 0 && store_marks_get(&s->applied, b.partition, &mark) &&
                b.offset <= mark) {
                skipped++;
            } else if ((rc = read_rows(s, &b, refs, claims, &rows_torn, path, off, err)) == ST_OK &&
                       !rows_torn) {
                rc = store_apply_locked(s, &b, refs, NULL);
                batches++;
                s->written_seq++;
            }
            free(recs);
            free(vecs);
            free(refs);
            if (rows_torn) {
                r.end = STORE_LOG_END_TORN;
                r.end_offset = off;
                snprintf(r.why, sizeof(r.why), "a named vector row is not on disk");
                break;
            }
        }
        bool truncate_here = false;
        if (rc == ST_OK && r.end == STORE_LOG_END_TORN && last) {
            st_log_warn(LOG_COMP,
                        "wal torn tail truncated file=%s offset=%zu dropped_bytes=%zu why=\"%s\"",
                        path, r.end_offset, len - r.end_offset, r.why);
            truncate_here = true;
        } else if (rc == ST_OK && r.end != STORE_LOG_END_CLEAN) {
            if (!s->o.point_in_time_recovery) {
                rc = st_err_set(err, ST_ECORRUPT,
                                "%s: %s; refusing to start (point-in-time recovery would keep "
                                "the data before offset %zu and drop the rest)",
                                path, r.why, r.end_offset);
            } else {
                st_log_warn(LOG_COMP,
                            "point-in-time recovery file=%s offset=%zu why=\"%s\"; later WAL "
                            "files are set aside",
                            path, r.end_offset, r.why);
                truncate_here = true;
                for (size_t k = li + 1; k < nlogs; k++) {
                    char *lp = store_file_path(s->dir, STORE_FILE_LOG, logs[k]);
                    char *cp = NULL;
                    if (lp == NULL || asprintf(&cp, "%s.corrupt", lp) < 0)
                        rc = ST_ENOMEM;
                    else if (rc == ST_OK)
                        rc = store_fs_rename(s->o.fs, lp, cp, "store.wal.set_aside");
                    free(lp);
                    free(cp);
                }
                nlogs = li + 1;
            }
        }
        if (s->o.read_only) {
            /* inspect: report, change nothing */
        } else if (rc == ST_OK && truncate_here) {
            struct store_file *f = NULL;
            rc = store_fs_open_append(s->o.fs, path, &f, "store.wal.open");
            if (rc == ST_OK)
                rc = store_fs_truncate(f, r.end_offset, "store.wal.truncate");
            if (rc == ST_OK)
                rc = store_fs_sync(f, "store.wal.fsync");
            store_fs_close(f);
        } else if (rc == ST_OK) {
            /* What we replayed may sit only in the page cache after a process crash. */
            struct store_file *f = NULL;
            rc = store_fs_open_append(s->o.fs, path, &f, "store.wal.open");
            if (rc == ST_OK)
                rc = store_fs_sync(f, "store.wal.fsync");
            store_fs_close(f);
        }
        if (rc != ST_OK && err->msg[0] == '\0')
            st_err_set(err, rc, "%s: recovery: %s", path, st_strerror(rc));
        if (rc == ST_OK && (batches > 0 || skipped > 0))
            st_log_info(LOG_COMP, "wal replayed file=%s batches=%" PRIu64 " skipped=%" PRIu64, path,
                        batches, skipped);
        store_log_reader_destroy(&r);
        free(data);
        free(path);
        if (rc != ST_OK)
            return rc;
        if (truncate_here)
            break;
    }
    return ST_OK;
}

static void stop_threads(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->have_syncer)
        pthread_join(s->syncer, NULL);
    if (s->have_flusher)
        pthread_join(s->flusher, NULL);
    /* Last: it empties its queue before it stops (the close's sync waits for nothing). */
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->vw_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->have_vwriter)
        pthread_join(s->vwriter, NULL);
    s->vw_async = false;
    s->have_syncer = s->have_flusher = s->have_vwriter = false;
}

static void store_free(struct store *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nsegs; i++)
        store_segment_unref(s->segs[i]);
    free(s->segs);
    for (size_t i = 0; i < s->nfrozen; i++)
        store_mt_unref(s->frozen[i]);
    free(s->frozen);
    store_mt_unref(s->mem);
    for (size_t i = 0; i < s->nvlogs; i++)
        store_vlog_unref(s->vlogs[i]);
    free(s->vlogs);
    store_vw_free_jobs(s);          /* none after a clean stop of the writer */
    store_reclaim_stop(s->reclaim); /* last: the references above may have queued files */
    store_reclaim_unref(s->reclaim);
    free(s->wrefs);
    free(s->wvec);
    free(s->wplan);
    free(s->viov);
    store_log_writer_destroy(&s->wal);
    store_fs_close(s->wal_file);
    store_log_writer_destroy(&s->mfw);
    store_fs_close(s->mf_file);
    store_mf_state_free(&s->mf);
    store_marks_free(&s->applied);
    store_marks_free(&s->durable);
    free(s->wbuf);
    free(s->wiov);
    free(s->dir);
    pthread_mutex_destroy(&s->flush_mu);
    pthread_mutex_destroy(&s->mf_mu);
    pthread_mutex_destroy(&s->sync_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->durable_cv);
    pthread_cond_destroy(&s->flushed_cv);
    pthread_cond_destroy(&s->roll_cv);
    pthread_cond_destroy(&s->vw_cv);
    pthread_cond_destroy(&s->vw_done_cv);
    free(s);
}

int store_open(const struct store_opts *o, struct store **out, struct st_err *errp)
{
    struct st_err local = {0};
    struct st_err *err = errp ? errp : &local;
    st_err_clear(err);
    *out = NULL;
    if (o->dir == NULL || o->dim == 0 || o->dim > 65536)
        return st_err_set(err, ST_EINVAL, "store_open: dir and dim (1..65536) are required");
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return ST_ENOMEM;
    s->o = *o;
    if ((s->reclaim = store_reclaim_new(o->fs)) == NULL) { /* its thread starts with the others */
        free(s);
        return ST_ENOMEM;
    }
    if (s->o.memtable_size == 0)
        s->o.memtable_size = 64u << 20;
    if (s->o.max_frozen == 0)
        s->o.max_frozen = 2;
    if (s->o.wal_sync_interval_ms <= 0)
        s->o.wal_sync_interval_ms = 5;
    if (s->o.manifest_max_bytes == 0)
        s->o.manifest_max_bytes = 4u << 20;
    pthread_mutex_init(&s->flush_mu, NULL);
    pthread_mutex_init(&s->mf_mu, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    store_cond_init_mono(&s->work_cv);
    store_cond_init_mono(&s->durable_cv);
    store_cond_init_mono(&s->flushed_cv);
    store_cond_init_mono(&s->roll_cv);
    store_cond_init_mono(&s->vw_cv);
    store_cond_init_mono(&s->vw_done_cv);
    st_hist_init(&s->wal_sync_hist, &st_hist_latency);
    uint64_t *logs = NULL;
    struct row_claims claims = {0};
    size_t nlogs = 0;
    DIR *d = NULL;
    int rc = ST_ENOMEM;
    if ((s->dir = strdup(o->dir)) == NULL)
        goto fail;
    s->o.dir = s->dir;
    if (!o->read_only && (rc = store_fs_mkdir(o->fs, s->dir, "store.mkdir")) != ST_OK) {
        st_err_set(err, rc, "%s: cannot create: %s", s->dir, st_strerror(rc));
        goto fail;
    }
    rc = store_mf_load(s->dir, &s->mf, &s->mf_number, err);
    if (rc == ST_ENOTFOUND) {
        if (o->read_only) {
            rc = st_err_set(err, ST_ENOTFOUND, "%s: no store here (no CURRENT)", s->dir);
            goto fail;
        }
        memset(&s->mf, 0, sizeof(s->mf));
        s->mf.dim = o->dim;
        s->mf.have_info = true;
        s->mf.next_file = 1;
        s->mf.log_number = 0;
        s->mf_number = 0;
        rc = ST_OK;
    } else if (rc != ST_OK) {
        goto fail;
    }
    if (s->mf.dim != o->dim) {
        rc = st_err_set(err, ST_EINVAL, "%s: the store holds dim %u vectors, configured dim is %u",
                        s->dir, s->mf.dim, o->dim);
        goto fail;
    }
    if ((rc = store_marks_copy(&s->applied, &s->mf.marks)) != ST_OK)
        goto fail;

    /* Open the manifest's segments. */
    rc = ST_ENOMEM;
    s->segs = calloc(s->mf.nsegs ? s->mf.nsegs : 1, sizeof(*s->segs));
    if (s->segs == NULL)
        goto fail;
    for (size_t i = 0; i < s->mf.nsegs; i++) {
        char *p = store_file_path(s->dir, STORE_FILE_SEG, s->mf.segs[i].file_number);
        if (p == NULL)
            goto fail;
        struct store_segment *g = NULL;
        rc = store_segment_open(p, true, &g, err);
        free(p);
        if (rc != ST_OK)
            goto fail;
        g->fs = o->fs;
        g->file_number = s->mf.segs[i].file_number;
        g->info.file_number = g->file_number;
        const struct store_seg_meta *mm = &s->mf.segs[i].meta;
        if (g->info.dim != o->dim || g->info.count != s->mf.segs[i].count ||
            g->info.window_start != mm->window_start || g->info.window_end != mm->window_end) {
            rc = st_err_set(err, ST_ECORRUPT, "%s: disagrees with the manifest (count/dim/window)",
                            g->path);
            store_segment_unref(g);
            goto fail;
        }
        /* The manifest, not the footer, says what a segment is: a promotion (a window's only
         * run sealed in place) changes only the manifest, never the file. */
        g->info.kind = mm->kind;
        g->info.version = mm->version;
        s->segs[s->nsegs++] = g;
    }

    /* Classify the directory: live WAL files, and leftovers of interrupted operations. */
    d = opendir(s->dir);
    if (d == NULL) {
        rc = st_err_sys(err, errno, "%s: opendir", s->dir);
        goto fail;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        uint64_t num;
        enum store_file_kind k = store_file_parse(de->d_name, &num);
        char *p = NULL;
        if (asprintf(&p, "%s/%s", s->dir, de->d_name) < 0) {
            rc = ST_ENOMEM;
            goto fail;
        }
        bool orphan = false;
        if (k == STORE_FILE_LOG) {
            if (num >= s->mf.log_number) {
                uint64_t *nl = realloc(logs, (nlogs + 1) * sizeof(*nl));
                if (nl == NULL) {
                    free(p);
                    rc = ST_ENOMEM;
                    goto fail;
                }
                logs = nl;
                logs[nlogs++] = num;
            } else {
                orphan = true; /* already flushed; its unlink was interrupted */
            }
        } else if (k == STORE_FILE_SEG) {
            bool listed = false;
            for (size_t i = 0; i < s->mf.nsegs && !listed; i++)
                listed = s->mf.segs[i].file_number == num;
            for (size_t i = 0; i < s->mf.nvlogs && !listed; i++)
                listed = s->mf.vlogs[i].file_number == num; /* a vector log */
            for (size_t i = 0; i < s->nsegs && !listed; i++)
                listed = s->segs[i]->vfile == num; /* rows a run names: never removed */
            orphan = !listed; /* written by a flush whose manifest edit never landed */
        } else if (k == STORE_FILE_MANIFEST) {
            orphan = num != s->mf_number;
        } else {
            size_t l = strlen(de->d_name);
            orphan = (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0) ||
                     (l > 9 && strcmp(de->d_name + l - 9, ".deleting") == 0);
        }
        if (orphan && !o->read_only) {
            st_log_info(LOG_COMP, "removing leftover file=%s", p);
            store_best_effort(store_fs_unlink(o->fs, p, "store.open.unlink_orphan"));
        }
        free(p);
    }
    closedir(d);
    d = NULL;
    if (nlogs > 1)
        qsort(logs, nlogs, sizeof(*logs), cmp_u64);
    for (size_t i = 0; i < nlogs; i++)
        if (logs[i] >= s->mf.next_file)
            s->mf.next_file = logs[i] + 1;
    for (size_t i = 0; i < s->mf.nsegs; i++)
        if (s->mf.segs[i].file_number >= s->mf.next_file)
            s->mf.next_file = s->mf.segs[i].file_number + 1;
    for (size_t i = 0; i < s->mf.nvlogs; i++)
        if (s->mf.vlogs[i].file_number >= s->mf.next_file)
            s->mf.next_file = s->mf.vlogs[i].file_number + 1;
    if (s->mf_number >= s->mf.next_file)
        s->mf.next_file = s->mf_number + 1;

    s->mem = store_mt_new(o->dim, nlogs ? logs[0] : s->mf.next_file, s->o.memtable_size);
    if (s->mem == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    /* Vector logs: rows named by runs, then by replayed records; the rest is cut. */
    if ((rc = store_vlogs_open(s, err)) != ST_OK)
        goto fail;
    if ((rc = claims_init(s, &claims, err)) != ST_OK)
        goto fail;
    if ((rc = recover_wal(s, logs, nlogs, &claims, err)) != ST_OK)
        goto fail;
    if ((rc = store_vlogs_settle(s, claims.named, err)) != ST_OK)
        goto fail;
    if ((rc = store_marks_copy(&s->durable, &s->applied)) != ST_OK)
        goto fail;
    s->durable_seq = s->written_seq;
    s->st.bytes_ingested = 0;

    if (!o->read_only) {
        /* The replayed memtable stays covered by its WAL files; new writes go to a new one. */
        if ((rc = store_wal_new_file(s)) != ST_OK) {
            st_err_set(err, rc, "%s: cannot start a WAL file: %s", s->dir, st_strerror(rc));
            goto fail;
        }
        if (nlogs == 0)
            s->mem->first_log = s->wal_number;
        s->mf.log_number = s->mem->first_log;
        bool switched;
        if ((rc = store_mf_rewrite(s, &switched, err)) != ST_OK)
            goto fail;
        if (!o->no_background) {
            if (store_reclaim_start(s->reclaim) != ST_OK) {
                rc = st_err_set(err, ST_ENOMEM, "cannot start the reclaim thread");
                goto fail;
            }
            if (o->wal_sync == STORE_SYNC_BATCH) {
                if (pthread_create(&s->syncer, NULL, store_syncer_main, s) != 0) {
                    rc = st_err_set(err, ST_ENOMEM, "cannot start the WAL sync thread");
                    goto fail;
                }
                s->have_syncer = true;
            }
            if (pthread_create(&s->flusher, NULL, store_flusher_main, s) != 0) {
                rc = st_err_set(err, ST_ENOMEM, "cannot start the flush thread");
                goto fail;
            }
            s->have_flusher = true;
        }
        /* Also without the other threads (no_background): a write then waits for its rows
         * in its own sync. wal_sync none publishes durability at the write itself, so its
         * rows must be in the file by then: it appends them in the write. */
        if (!o->inline_vectors && !o->vlog_append_in_write && o->wal_sync != STORE_SYNC_NONE) {
            if (pthread_create(&s->vwriter, NULL, store_vwriter_main, s) != 0) {
                rc = st_err_set(err, ST_ENOMEM, "cannot start the vector-log writer thread");
                goto fail;
            }
            s->have_vwriter = true;
            s->vw_async = true;
        }
    }
    free(logs);
    claims_free(&claims);
    *out = s;
    return ST_OK;
fail:
    if (d != NULL)
        closedir(d);
    free(logs);
    claims_free(&claims);
    stop_threads(s);
    if (err->code == ST_OK)
        st_err_set(err, rc, "%s: %s", o->dir, st_strerror(rc));
    store_free(s);
    return rc;
}

int store_close(struct store *s)
{
    if (s == NULL)
        return ST_OK;
    stop_threads(s);
    int rc = ST_OK;
    if (!s->o.read_only && s->wal_file != NULL)
        rc = store_sync(s);
    store_free(s);
    return rc;
}
