/*
 * store_vlog.c — a window's vector log: the file its vectors are appended to once, in arrival
 * order, that its runs name rows of and that its seal completes into the sealed segment
 * (store/README.md, "The write-once path").
 *
 * Durability order: a log's file, header and directory entry, then the manifest edit listing
 * it, all before any WAL record names a row of it; rows are appended before the WAL record
 * naming them, and group commit fsyncs every log appended to since the last capture before it
 * fsyncs the WAL. So a durable WAL record names rows that are durable too, unless the record
 * reached the disk on its own (write-back before the fsync): recovery checks each named row's
 * checksum, and a mismatch ends the replay there (nothing from that point was acknowledged).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_fault.h"
#include "st_log.h"
#include "store_int.h"

#define LOG_COMP "store"

struct store_vlog *store_vlog_find_locked(const struct store *s, int64_t window)
{
    for (size_t i = 0; i < s->nvlogs; i++)
        if (s->vlogs[i]->window == window)
            return s->vlogs[i];
    return NULL;
}

struct store_vlog *store_vlog_by_number_locked(const struct store *s, uint64_t number)
{
    for (size_t i = 0; i < s->nvlogs; i++)
        if (s->vlogs[i]->number == number)
            return s->vlogs[i];
    return NULL;
}

void store_vlog_unref(struct store_vlog *v)
{
    if (v == NULL || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    store_fs_close(v->f);
    st_hash_stream_free(v->bs);
    free(v->sums);
    free(v);
}

/* The seal of v reads its rows back: said once, with why. */
static void sums_stop(struct store_vlog *v, const char *why)
{
    st_hash_stream_free(v->bs);
    v->bs = NULL;
    st_log_info(LOG_COMP,
                "vector log block sums stopped file=%s why=\"%s\" (its seal reads the rows back)",
                v->f->path, why);
}

/* Before an append of rows at file offset off: whether they are to be summed (false: the sums
 * stopped, or had already). */
static bool sum_begin(struct store_vlog *v, uint64_t off)
{
    if (v->bs == NULL)
        return false;
    if (ST_FAULT("store.vlog.sums") != 0) {
        sums_stop(v, "fault injected");
        return false;
    }
    if (off != STORE_SEG_HEADER + v->summed) {
        sums_stop(v, "rows appended where the sums do not stand");
        return false;
    }
    return true;
}

/* store_fs_seen_fn: feeds rows to v's block sums as the append copies them. */
static void sum_seen(void *arg, const void *bytes, size_t len)
{
    struct store_vlog *v = arg;
    const uint8_t *p = bytes;
    while (len > 0 && v->bs != NULL) {
        size_t room = STORE_SEG_VEC_BLOCK - (size_t)(v->summed % STORE_SEG_VEC_BLOCK);
        size_t take = len < room ? len : room;
        st_hash_stream_update(v->bs, p, take);
        p += take;
        len -= take;
        v->summed += take;
        if (take < room)
            continue;
        if (v->nsums == v->capsums) {
            size_t cap = v->capsums ? v->capsums * 2 : 64;
            uint32_t *n = realloc(v->sums, cap * sizeof(*n));
            if (n == NULL) {
                sums_stop(v, "out of memory");
                return;
            }
            v->sums = n;
            v->capsums = cap;
        }
        /* st_checksum32 of the block: the low 32 bits of its XXH3-64 */
        v->sums[v->nsums++] = (uint32_t)st_hash_stream_digest(v->bs);
        st_hash_stream_reset(v->bs);
    }
}

int store_vlog_append(struct store_vlog *v, uint64_t off, const struct iovec *iov, int cnt,
                      struct store_fs_io *io)
{
    struct store_fs_append how = {.io = io};
    if (sum_begin(v, off)) {
        how.seen = sum_seen;
        how.seen_arg = v;
    }
    int rc = store_fs_writev_how(v->f, iov, cnt, &how, "store.vlog.append");
    if (rc != ST_OK && how.seen != NULL && v->bs != NULL) /* sums may hold rows not there */
        sums_stop(v, "an append failed after its rows were summed");
    return rc;
}

const uint32_t *store_vlog_sums_locked(const struct store_vlog *v, uint64_t vbytes)
{
    bool whole = v->bs != NULL && v->summed == vbytes && v->nsums == vbytes / STORE_SEG_VEC_BLOCK;
    return whole ? v->sums : NULL;
}

static int table_add_locked(struct store *s, struct store_vlog *v)
{
    if (s->nvlogs == s->capvlogs) {
        size_t cap = s->capvlogs ? s->capvlogs * 2 : 8;
        struct store_vlog **n = realloc(s->vlogs, cap * sizeof(*n));
        if (n == NULL)
            return ST_ENOMEM;
        s->vlogs = n;
        s->capvlogs = cap;
    }
    s->vlogs[s->nvlogs++] = v;
    return ST_OK;
}

struct store_vlog *store_vlog_detach_locked(struct store *s, uint64_t number)
{
    for (size_t i = 0; i < s->nvlogs; i++) {
        if (s->vlogs[i]->number == number) {
            struct store_vlog *v = s->vlogs[i];
            s->vlogs[i] = s->vlogs[--s->nvlogs];
            s->st.vlog_bytes -= v->f->size < s->st.vlog_bytes ? v->f->size : s->st.vlog_bytes;
            return v;
        }
    }
    return NULL;
}

/* Rows bypass the page cache unless the store says otherwise: each is written once and read
 * back rarely (a seal's block checksums, a scan of a run), while copying it into the page
 * cache cost more CPU than everything else on the write path (docs/benchmarks.md, issue 14).
 * Only where the vector-log writer thread appends (store_open starts it on the same terms):
 * an O_DIRECT write waits for the device, which a write appending under mu must not. */
static void direct_appends(const struct store *s, struct store_file *f)
{
    bool writer =
        !s->o.inline_vectors && !s->o.vlog_append_in_write && s->o.wal_sync != STORE_SYNC_NONE;
    if (!writer || s->o.vlog_buffered || s->o.read_only)
        return;
    if (!store_fs_direct(f))
        st_log_debug(LOG_COMP, "vector log without O_DIRECT file=%s", f->path);
}

int store_vlog_create(struct store *s, int64_t window, int64_t window_end)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->failed;
    bool exists = store_vlog_find_locked(s, window) != NULL;
    uint64_t number = rc == ST_OK && !exists ? s->mf.next_file++ : 0;
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK || exists)
        return rc;
    struct store_vlog *v = calloc(1, sizeof(*v));
    char *path = store_file_path(s->dir, STORE_FILE_SEG, number);
    struct store_mf_edit e = {0};
    bool listed = false; /* the manifest edit was attempted: the file is no longer ours alone */
    rc = ST_ENOMEM;
    if (v == NULL || path == NULL)
        goto out;
    atomic_init(&v->refs, 1);
    v->number = number;
    v->window = window;
    v->window_end = window_end;
    /* The file, its header and its directory entry, with no store lock held. */
    uint8_t head[STORE_SEG_HEADER];
    store_seg_header_put(head, STORE_SEG_VERSION_ROWS, s->o.dim);
    if ((rc = store_fs_create(s->o.fs, path, &v->f, "store.vlog.create")) != ST_OK ||
        (rc = store_fs_write(v->f, head, sizeof(head), "store.vlog.write")) != ST_OK ||
        (rc = store_fs_sync(v->f, "store.vlog.fsync")) != ST_OK ||
        (rc = store_fs_sync_dir(s->o.fs, s->dir, "store.vlog.sync_dir")) != ST_OK)
        goto out;
    direct_appends(s, v->f);
    v->bs = st_hash_stream_new(); /* NULL: the seal reads the rows back */
    /* Then the manifest edit, unless another writer listed a log for the window meanwhile. */
    pthread_mutex_lock(&s->mf_mu);
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    exists = store_vlog_find_locked(s, window) != NULL;
    uint64_t next_file = s->mf.next_file;
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK || exists) {
        pthread_mutex_unlock(&s->mf_mu);
        goto out; /* ours goes: the other one serves */
    }
    struct store_mf_vlog mv = {number, window, window_end};
    if ((rc = store_mf_edit_add_vlog(&e, &mv)) == ST_OK &&
        (rc = store_mf_edit_next_file(&e, next_file)) == ST_OK) {
        listed = true;
        rc = store_mf_append(s, &e); /* a failure fails the store: the next open decides */
    }
    if (rc == ST_OK) {
        pthread_mutex_lock(&s->mu);
        rc = table_add_locked(s, v);
        if (rc == ST_OK) {
            s->st.vlog_bytes += v->f->size;
            v = NULL;
        } else {
            store_fail_locked(s, rc, "vector log table"); /* the manifest lists it already */
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&s->mf_mu);
    if (rc == ST_OK)
        st_log_info(LOG_COMP, "vector log created dir=%s file=%" PRIu64 " window=%" PRId64, s->dir,
                    number, window);
out:
    if (v != NULL) {
        if (v->f != NULL && !listed)
            store_best_effort(store_fs_unlink(s->o.fs, path, "store.vlog.unlink_new"));
        store_fs_close(v->f);
        st_hash_stream_free(v->bs);
        free(v);
    }
    free(path);
    store_mf_edit_free(&e);
    return rc;
}

int store_prepare_window_log(struct store *s, int64_t window_start, int64_t window_end)
{
    if (s->o.read_only || window_end <= window_start)
        return ST_EINVAL;
    if (s->o.inline_vectors)
        return ST_OK;
    return store_vlog_create(s, window_start, window_end);
}

int store_vlog_capture_dirty_locked(struct store *s, struct store_vlog ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t k = 0;
    for (size_t i = 0; i < s->nvlogs; i++)
        k += s->vlogs[i]->dirty;
    if (k == 0)
        return ST_OK;
    struct store_vlog **arr = malloc(k * sizeof(*arr));
    if (arr == NULL)
        return ST_ENOMEM;
    for (size_t i = 0; i < s->nvlogs; i++) {
        struct store_vlog *v = s->vlogs[i];
        if (v->dirty) {
            v->dirty = false;
            atomic_fetch_add(&v->refs, 1);
            arr[(*n)++] = v;
        }
    }
    *out = arr;
    return ST_OK;
}

int store_vlog_sync_captured(struct store_vlog **arr, size_t n)
{
    int rc = ST_OK;
    for (size_t i = 0; i < n; i++) {
        if (rc == ST_OK)
            rc = store_fs_sync(arr[i]->f, "store.vlog.fsync");
        store_vlog_unref(arr[i]);
    }
    free(arr);
    return rc;
}

void store_window_close_log(struct store *s, int64_t window_start)
{
    pthread_mutex_lock(&s->mu);
    struct store_vlog *v = store_vlog_find_locked(s, window_start);
    if (v != NULL)
        v->closed = true;
    pthread_mutex_unlock(&s->mu);
}

/* Opens an existing file for reading only (inspect): a store_file whose appends nobody makes. */
static int open_read_only(const char *path, struct store_file **out)
{
    struct store_file *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->path = strdup(path)) == NULL) {
        free(f);
        return ST_ENOMEM;
    }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t end = f->fd >= 0 ? lseek(f->fd, 0, SEEK_END) : -1;
    if (end < 0) {
        int e = errno;
        store_fs_close(f);
        return st_from_errno(e);
    }
    f->size = (uint64_t)end;
    *out = f;
    return ST_OK;
}

int store_vlogs_open(struct store *s, struct st_err *err)
{
    uint64_t rb = (uint64_t)s->o.dim * 4;
    for (size_t k = 0; k < s->mf.nvlogs; k++) {
        const struct store_mf_vlog *mv = &s->mf.vlogs[k];
        char *path = store_file_path(s->dir, STORE_FILE_SEG, mv->file_number);
        struct store_vlog *v = calloc(1, sizeof(*v));
        int rc = path != NULL && v != NULL ? ST_OK : ST_ENOMEM;
        if (rc == ST_OK) {
            atomic_init(&v->refs, 1);
            v->number = mv->file_number;
            v->window = mv->window_start;
            v->window_end = mv->window_end;
            rc = s->o.read_only ? open_read_only(path, &v->f)
                                : store_fs_open_append(s->o.fs, path, &v->f, "store.vlog.open");
            if (rc != ST_OK)
                st_err_set(err, rc, "%s: vector log the manifest lists: %s", path, st_strerror(rc));
        }
        uint8_t head[STORE_SEG_HEADER];
        if (rc == ST_OK && (v->f->size < STORE_SEG_HEADER ||
                            pread(v->f->fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
                            !store_seg_header_is_log(head, s->o.dim)))
            rc = st_err_set(err, ST_ECORRUPT, "%s: bad vector log header at offset 0", path);
        if (rc == ST_OK) {
            direct_appends(s, v->f);
            v->nrows = (v->f->size - STORE_SEG_HEADER) / rb; /* until settled */
            rc = table_add_locked(s, v);
        }
        free(path);
        if (rc != ST_OK) {
            if (v != NULL)
                store_fs_close(v->f);
            free(v);
            return rc;
        }
    }
    return ST_OK;
}

int store_vlogs_settle(struct store *s, const uint64_t *named, struct st_err *err)
{
    uint64_t rb = (uint64_t)s->o.dim * 4;
    for (size_t k = 0; k < s->nvlogs; k++) {
        struct store_vlog *v = s->vlogs[k];
        uint64_t keep = STORE_SEG_HEADER + named[k] * rb;
        if (named[k] > v->nrows)
            return st_err_set(err, ST_ECORRUPT,
                              "%s: runs name row %" PRIu64 " of a vector log of %" PRIu64 " rows",
                              v->f->path, named[k] - 1, v->nrows);
        if (!s->o.read_only) {
            /* Rows past the last one named were never acknowledged (their records did not
             * survive), or are a seal's torn tail: cut them before appending after them. And
             * fsync what stays, cut or not: replay read the named rows from the page cache (a
             * process crash leaves them there unsynced), and the offsets of their records are
             * about to be reported durable. */
            int rc = ST_OK;
            if (v->f->size != keep) {
                st_log_info(LOG_COMP,
                            "vector log cut file=%s rows=%" PRIu64 " dropped_bytes=%" PRIu64,
                            v->f->path, named[k], v->f->size - keep);
                rc = store_fs_truncate(v->f, keep, "store.vlog.truncate");
            }
            if (rc == ST_OK)
                rc = store_fs_sync(v->f, "store.vlog.fsync");
            if (rc != ST_OK)
                return st_err_set(err, rc, "%s: cannot cut or fsync: %s", v->f->path,
                                  st_strerror(rc));
        }
        if (!s->o.read_only)
            v->nrows = named[k];
        s->st.vlog_bytes += v->f->size;
    }
    return ST_OK;
}
