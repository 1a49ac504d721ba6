/*
 * store.c — the store object's shared core: condition helpers, the sticky failure, manifest
 * appends and rewrites, the window table and the durable key/values, statistics.
 *
 * Locks and the struct itself: store_int.h.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "st_clock.h"
#include "st_coding.h"
#include "st_log.h"
#include "st_prom.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

/* ---- small helpers ------------------------------------------------------------------------ */

void store_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    st_cond_wait_ms(cv, mu, ms);
}

void store_cond_init_mono(pthread_cond_t *cv)
{
    st_cond_init_mono(cv);
}

/* Records a fatal error: the store stops accepting writes and stops advancing durability. */
int store_fail_locked(struct store *s, int rc, const char *what)
{
    if (s->failed == ST_OK) {
        s->failed = rc;
        st_log_error(LOG_COMP, "store failed dir=%s op=%s error=\"%s\"; restart to recover", s->dir,
                     what, st_strerror(rc));
    }
    pthread_cond_broadcast(&s->durable_cv);
    pthread_cond_broadcast(&s->flushed_cv);
    pthread_cond_broadcast(&s->roll_cv);
    pthread_cond_broadcast(&s->vw_done_cv); /* waiters on the writer thread see it at once */
    return rc;
}

/* ---- manifest writing --------------------------------------------------------------------- */

/*
 * Manifest compaction. Every edit is appended, so a store whose state stays small (an outbox
 * whose entries come and go, windows re-put at each seal) would grow its manifest without
 * bound. When the file reaches manifest_max_bytes and twice the size of the last snapshot,
 * the state is written as one snapshot into a new manifest and CURRENT switched to it, under
 * mf_mu (no edit can interleave) but not mu. A failure before CURRENT is switched changes
 * nothing (the old manifest stays current; the next attempt waits for the file to double);
 * once CURRENT is renamed, a failed directory fsync leaves it unknown which manifest a
 * restart reads, so it fails the store like any failed manifest write.
 */
static void mf_maybe_compact(struct store *s)
{
    uint64_t size = s->mf_file->size;
    uint64_t limit = s->o.manifest_max_bytes;
    if (limit < 2 * s->mf_base_bytes)
        limit = 2 * s->mf_base_bytes;
    if (size < limit)
        return;
    bool switched = false;
    struct st_err err = {0};
    int rc = store_mf_rewrite(s, &switched, &err);
    if (rc == ST_OK) {
        st_log_info(LOG_COMP, "manifest compacted dir=%s from_bytes=%" PRIu64 " to_bytes=%" PRIu64,
                    s->dir, size, s->mf_base_bytes);
        return;
    }
    if (switched) {
        pthread_mutex_lock(&s->mu);
        store_fail_locked(s, rc, "manifest switch");
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->mf_base_bytes = size; /* retry once the file has doubled */
    st_log_warn(LOG_COMP,
                "manifest compaction failed dir=%s error=\"%s\" detail=\"%s\"; kept "
                "the current manifest",
                s->dir, st_strerror(rc), err.msg);
}

/* Appends and fsyncs one edit group. Caller holds mf_mu. */
int store_mf_append(struct store *s, const struct store_mf_edit *e)
{
    /* After any failure nothing more may reach the manifest: a failed append may have left a
     * torn record that later ones would follow, and a failed switch may have left CURRENT
     * naming another file than the one open here. */
    pthread_mutex_lock(&s->mu);
    int rc = s->failed;
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK)
        return rc;
    rc = store_log_append(&s->mfw, e->buf, e->len);
    if (rc == ST_OK)
        rc = store_fs_sync(s->mf_file, "store.manifest.fsync");
    if (rc != ST_OK) {
        pthread_mutex_lock(&s->mu);
        store_fail_locked(s, rc, "manifest write");
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    pthread_mutex_lock(&s->mu); /* other threads read s->mf (next_file) under mu */
    s->st.manifest_bytes_written += e->len;
    rc = store_mf_apply(&s->mf, e->buf, e->len);
    pthread_mutex_unlock(&s->mu);
    if (rc == ST_OK)
        mf_maybe_compact(s);
    return rc;
}

/* Writes the whole state as a new manifest and points CURRENT at it (tmp, fsync, rename,
 * fsync dir), then removes the old manifest: manifest compaction, at open and online. Caller
 * holds mf_mu (or is single-threaded at open); mu is taken only to snapshot the state.
 * *switched tells whether CURRENT was renamed (after which a failure is not undoable). */
int store_mf_rewrite(struct store *s, bool *switched, struct st_err *err)
{
    *switched = false;
    struct store_mf_edit e = {0};
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->mf.next_file++;
    int rc = store_mf_snapshot(&s->mf, &e);
    pthread_mutex_unlock(&s->mu);
    char *path = store_file_path(s->dir, STORE_FILE_MANIFEST, n);
    char *cur = NULL, *tmp = NULL;
    struct store_file *f = NULL, *cf = NULL;
    if (rc != ST_OK)
        goto out;
    rc = ST_ENOMEM;
    if (path == NULL || asprintf(&cur, "%s/CURRENT", s->dir) < 0 ||
        asprintf(&tmp, "%s/CURRENT.tmp", s->dir) < 0)
        goto out;
    store_best_effort(store_fs_unlink(s->o.fs, path, "store.manifest.unlink_stale"));
    if ((rc = store_fs_create(s->o.fs, path, &f, "store.manifest.create")) != ST_OK)
        goto io;
    struct store_log_writer w;
    if ((rc = store_log_writer_init(&w, f, "store.manifest.write")) != ST_OK)
        goto io;
    rc = store_log_append(&w, e.buf, e.len);
    store_log_writer_destroy(&w);
    if (rc != ST_OK || (rc = store_fs_sync(f, "store.manifest.fsync")) != ST_OK)
        goto io;
    char line[64];
    int ll = snprintf(line, sizeof(line), "MANIFEST-%06" PRIu64 "\n", n);
    store_best_effort(store_fs_unlink(s->o.fs, tmp, "store.current.unlink_stale"));
    if ((rc = store_fs_create(s->o.fs, tmp, &cf, "store.current.create")) != ST_OK ||
        (rc = store_fs_write(cf, line, (size_t)ll, "store.current.write")) != ST_OK ||
        (rc = store_fs_sync(cf, "store.current.fsync")) != ST_OK)
        goto io;
    if ((rc = store_fs_rename(s->o.fs, tmp, cur, "store.current.rename")) != ST_OK)
        goto io;
    /* CURRENT names the new manifest now: it is the one to append to, whatever follows. */
    *switched = true;
    uint64_t old_number = s->mf_number;
    store_fs_close(s->mf_file);
    store_log_writer_destroy(&s->mfw);
    s->mf_file = f;
    f = NULL;
    s->mf_number = n;
    s->mf_base_bytes = s->mf_file->size;
    pthread_mutex_lock(&s->mu);
    s->st.manifest_bytes_written += s->mf_file->size;
    s->st.manifest_rewrites++;
    pthread_mutex_unlock(&s->mu);
    store_best_effort(store_log_writer_init(&s->mfw, s->mf_file, "store.manifest.write"));
    /* Until the rename is durable a crash may bring the old CURRENT back: the old manifest
     * stays until then (and for good if this fails; the store fails and open removes it). */
    if ((rc = store_fs_sync_dir(s->o.fs, s->dir, "store.current.sync_dir")) != ST_OK)
        goto io;
    if (old_number != 0) {
        char *old = store_file_path(s->dir, STORE_FILE_MANIFEST, old_number);
        if (old != NULL)
            store_best_effort(store_fs_unlink(s->o.fs, old, "store.manifest.unlink_old"));
        free(old);
    }
    goto out;
io:
    st_err_set(err, rc, "%s: writing the manifest: %s", s->dir, st_strerror(rc));
    if (!*switched) { /* the old manifest stays current: leave nothing behind */
        store_fs_close(f);
        f = NULL;
        if (path != NULL)
            store_best_effort(store_fs_unlink(s->o.fs, path, "store.manifest.unlink_new"));
        if (tmp != NULL)
            store_best_effort(store_fs_unlink(s->o.fs, tmp, "store.current.unlink_tmp"));
    }
out:
    store_fs_close(f);
    store_fs_close(cf);
    store_mf_edit_free(&e);
    free(path);
    free(cur);
    free(tmp);
    return rc;
}

/* ---- window table, key/values ------------------------------------------------------------- */

int store_mf_edit_extra(struct store_mf_edit *e, const struct store_edit_extra *x)
{
    int rc = ST_OK;
    for (size_t i = 0; x != NULL && rc == ST_OK && i < x->nwindows; i++) {
        const struct store_window *w = &x->windows[i];
        struct store_window_rec r = {w->start, w->end, w->state, w->version};
        rc = store_mf_edit_window(e, &r);
    }
    for (size_t i = 0; x != NULL && rc == ST_OK && i < x->nkvs; i++) {
        const struct store_kv_put *p = &x->kvs[i];
        struct store_kv k = {(char *)(uintptr_t)p->key, (uint8_t *)(uintptr_t)p->val, p->len};
        rc = store_mf_edit_kv(e, &k);
    }
    return rc;
}

int store_window_put(struct store *s, const struct store_window *w)
{
    if (s->o.read_only)
        return ST_EINVAL;
    struct store_mf_edit e = {0};
    pthread_mutex_lock(&s->mf_mu);
    int rc = store_mf_edit_extra(&e, &(struct store_edit_extra){.windows = w, .nwindows = 1});
    if (rc == ST_OK)
        rc = store_mf_append(s, &e);
    pthread_mutex_unlock(&s->mf_mu);
    store_mf_edit_free(&e);
    return rc;
}

static int window_cmp(const void *a, const void *b)
{
    const struct store_window *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

int store_windows(struct store *s, struct store_window **out, size_t *n)
{
    pthread_mutex_lock(&s->mu);
    size_t nw = s->mf.nwindows;
    struct store_window *w = malloc((nw ? nw : 1) * sizeof(*w));
    if (w == NULL) {
        pthread_mutex_unlock(&s->mu);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < nw; i++) {
        w[i].start = s->mf.windows[i].start;
        w[i].end = s->mf.windows[i].end;
        w[i].state = s->mf.windows[i].state;
        w[i].version = s->mf.windows[i].version;
    }
    pthread_mutex_unlock(&s->mu);
    if (nw > 1)
        qsort(w, nw, sizeof(*w), window_cmp);
    *out = w;
    *n = nw;
    return ST_OK;
}

int store_kv_put(struct store *s, const char *key, const void *val, size_t len)
{
    if (s->o.read_only)
        return ST_EINVAL;
    struct store_mf_edit e = {0};
    pthread_mutex_lock(&s->mf_mu);
    struct store_kv_put kv = {key, val, len};
    int rc = store_mf_edit_extra(&e, &(struct store_edit_extra){.kvs = &kv, .nkvs = 1});
    if (rc == ST_OK)
        rc = store_mf_append(s, &e);
    pthread_mutex_unlock(&s->mf_mu);
    store_mf_edit_free(&e);
    return rc;
}

int store_kv_del(struct store *s, const char *key)
{
    if (s->o.read_only)
        return ST_EINVAL;
    struct store_mf_edit e = {0};
    size_t kl = strlen(key);
    int rc = ST_ENOMEM;
    pthread_mutex_lock(&s->mf_mu);
    if (kl < 1024 && (e.buf = malloc(kl + 12)) != NULL) {
        e.cap = kl + 12;
        e.buf[e.len++] = 9; /* STORE_MF_KV_DEL */
        e.len += st_put_varint(e.buf + e.len, kl);
        memcpy(e.buf + e.len, key, kl);
        e.len += kl;
        rc = store_mf_append(s, &e);
    }
    pthread_mutex_unlock(&s->mf_mu);
    store_mf_edit_free(&e);
    return rc;
}

int store_kv_keys(struct store *s, const char *prefix, char ***keys, size_t *n)
{
    size_t pl = strlen(prefix), cnt = 0;
    pthread_mutex_lock(&s->mu);
    char **out = malloc((s->mf.nkv ? s->mf.nkv : 1) * sizeof(*out));
    int rc = out ? ST_OK : ST_ENOMEM;
    for (size_t i = 0; rc == ST_OK && i < s->mf.nkv; i++) {
        if (strncmp(s->mf.kv[i].key, prefix, pl) != 0)
            continue;
        if ((out[cnt] = strdup(s->mf.kv[i].key)) == NULL)
            rc = ST_ENOMEM;
        else
            cnt++;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK) {
        for (size_t i = 0; i < cnt; i++)
            free(out[i]);
        free(out);
        return rc;
    }
    *keys = out;
    *n = cnt;
    return ST_OK;
}

int store_kv_get(struct store *s, const char *key, void *val, size_t cap, size_t *len)
{
    int rc = ST_ENOTFOUND;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->mf.nkv; i++) {
        if (strcmp(s->mf.kv[i].key, key) == 0) {
            *len = s->mf.kv[i].vlen;
            memcpy(val, s->mf.kv[i].val, s->mf.kv[i].vlen < cap ? s->mf.kv[i].vlen : cap);
            rc = ST_OK;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void store_stats(struct store *s, struct store_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->memtable_bytes = s->mem->bytes;
    out->memtable_records = s->mem->n;
    out->frozen_memtables = (uint32_t)s->nfrozen;
    for (size_t i = 0; i < s->nfrozen; i++) {
        out->memtable_bytes += s->frozen[i]->bytes;
        out->memtable_records += s->frozen[i]->n;
    }
    out->segments = s->nsegs;
    out->vlogs = s->nvlogs;
    out->segment_bytes = 0;
    for (size_t i = 0; i < s->nsegs; i++)
        out->segment_bytes += s->segs[i]->info.bytes;
    pthread_mutex_unlock(&s->mu);
    store_reclaim_pending(s->reclaim, &out->reclaim_files, &out->reclaim_bytes);
}
