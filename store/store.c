/*
 * The store object: open + recovery, write path with group commit, flush, get, snapshots,
 * window drops.
 *
 * Locks (always taken in this order; never the reverse):
 *   mf_mu   — serialises manifest edits (flush, drop)
 *   sync_mu — serialises WAL fsyncs and WAL rolls (the file being synced stays open)
 *   mu      — everything else: memtables, segment list, marks, counters
 * The fsync itself runs without mu, so writers keep appending while a sync is in flight.
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

struct store_snapshot {
    struct store_segment **segs;
    size_t n;
};

struct store {
    struct store_opts o;
    char *dir;
    pthread_mutex_t mf_mu, sync_mu, mu;
    pthread_cond_t work_cv, durable_cv, flushed_cv;

    struct store_memtable *mem;
    struct store_memtable **frozen; /* oldest first */
    size_t nfrozen;
    struct store_segment **segs;
    size_t nsegs;
    struct store_mf_state mf; /* the manifest's view; guarded by mf_mu for edits, mu for reads */

    struct store_file *wal_file;
    struct store_log_writer wal;
    uint64_t wal_number;
    struct store_file *mf_file;
    struct store_log_writer mfw;
    uint64_t mf_number;

    struct store_marks applied, durable;
    uint64_t written_seq, durable_seq;
    int failed; /* first fatal WAL/manifest error; sticky */

    uint8_t *wbuf;
    size_t wcap;

    bool stop;
    bool have_syncer, have_flusher;
    pthread_t syncer, flusher;
    struct store_stats st;
    struct st_hist wal_sync_hist;
};

/* ---- small helpers ------------------------------------------------------------------------ */

static void cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* Records a fatal error: the store stops accepting writes and stops advancing durability. */
static int fail_locked(struct store *s, int rc, const char *what)
{
    if (s->failed == ST_OK) {
        s->failed = rc;
        st_log_error(LOG_COMP, "store failed dir=%s op=%s error=\"%s\"; restart to recover", s->dir,
                     what, st_strerror(rc));
    }
    pthread_cond_broadcast(&s->durable_cv);
    pthread_cond_broadcast(&s->flushed_cv);
    return rc;
}

/* ---- manifest writing --------------------------------------------------------------------- */

/* Appends and fsyncs one edit group. Caller holds mf_mu. */
static int mf_append(struct store *s, const struct store_mf_edit *e)
{
    int rc = store_log_append(&s->mfw, e->buf, e->len);
    if (rc == ST_OK)
        rc = store_fs_sync(s->mf_file, "store.manifest.fsync");
    if (rc != ST_OK) {
        pthread_mutex_lock(&s->mu);
        fail_locked(s, rc, "manifest write");
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    pthread_mutex_lock(&s->mu); /* other threads read s->mf (next_file) under mu */
    s->st.manifest_bytes_written += e->len;
    rc = store_mf_apply(&s->mf, e->buf, e->len);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Writes the whole state as a new manifest and points CURRENT at it (tmp, fsync, rename,
 * fsync dir), then removes the old manifest. Used at open: this is manifest compaction. */
static int mf_rewrite(struct store *s, struct st_err *err)
{
    uint64_t n = s->mf.next_file++;
    struct store_mf_edit e = {0};
    char *path = store_file_path(s->dir, STORE_FILE_MANIFEST, n);
    char *cur = NULL, *tmp = NULL;
    struct store_file *f = NULL, *cf = NULL;
    int rc = ST_ENOMEM;
    if (path == NULL || asprintf(&cur, "%s/CURRENT", s->dir) < 0 ||
        asprintf(&tmp, "%s/CURRENT.tmp", s->dir) < 0)
        goto out;
    if ((rc = store_mf_snapshot(&s->mf, &e)) != ST_OK)
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
    if ((rc = store_fs_rename(s->o.fs, tmp, cur, "store.current.rename")) != ST_OK ||
        (rc = store_fs_sync_dir(s->o.fs, s->dir, "store.current.sync_dir")) != ST_OK)
        goto io;
    if (s->mf_number != 0) {
        char *old = store_file_path(s->dir, STORE_FILE_MANIFEST, s->mf_number);
        if (old != NULL)
            store_best_effort(store_fs_unlink(s->o.fs, old, "store.manifest.unlink_old"));
        free(old);
    }
    store_fs_close(s->mf_file);
    store_log_writer_destroy(&s->mfw);
    s->mf_file = f;
    f = NULL;
    s->mf_number = n;
    rc = store_log_writer_init(&s->mfw, s->mf_file, "store.manifest.write");
    goto out;
io:
    st_err_set(err, rc, "%s: writing the manifest: %s", s->dir, st_strerror(rc));
out:
    store_fs_close(f);
    store_fs_close(cf);
    store_mf_edit_free(&e);
    free(path);
    free(cur);
    free(tmp);
    return rc;
}

/* ---- WAL ---------------------------------------------------------------------------------- */

/* Starts a new WAL file. Caller holds sync_mu and mu (or is single-threaded at open). */
static int wal_new_file(struct store *s)
{
    uint64_t n = s->mf.next_file++;
    char *path = store_file_path(s->dir, STORE_FILE_LOG, n);
    if (path == NULL)
        return ST_ENOMEM;
    struct store_file *f = NULL;
    int rc = store_fs_create(s->o.fs, path, &f, "store.wal.create");
    free(path);
    /* The directory entry must be durable before anything in the file is acknowledged. */
    if (rc == ST_OK)
        rc = store_fs_sync_dir(s->o.fs, s->dir, "store.wal.sync_dir");
    if (rc != ST_OK) {
        store_fs_close(f);
        return rc;
    }
    if (s->wal_file != NULL) {
        store_log_writer_destroy(&s->wal);
        store_fs_close(s->wal_file);
    }
    s->wal_file = f;
    s->wal_number = n;
    return store_log_writer_init(&s->wal, f, "store.wal.write");
}

/* Publishes durability of everything written up to seq with marks `snap`. Caller holds mu. */
static void durable_publish_locked(struct store *s, uint64_t seq, const struct store_marks *snap)
{
    if (seq > s->durable_seq)
        s->durable_seq = seq;
    if (store_marks_copy(&s->durable, snap) != ST_OK)
        fail_locked(s, ST_ENOMEM, "durable marks");
    pthread_cond_broadcast(&s->durable_cv);
}

/* fsyncs the WAL if anything is unsynced. Caller holds sync_mu, not mu. */
static int wal_sync_locked(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->failed != ST_OK) {
        int rc = s->failed;
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    if (s->durable_seq >= s->written_seq) {
        pthread_mutex_unlock(&s->mu);
        return ST_OK;
    }
    uint64_t seq = s->written_seq;
    struct store_marks snap = {0};
    int rc = store_marks_copy(&snap, &s->applied);
    struct store_file *f = s->wal_file;
    pthread_mutex_unlock(&s->mu);
    if (rc == ST_OK) {
        int64_t t0 = st_clock_mono_ns(NULL);
        rc = store_fs_sync(f, "store.wal.fsync");
        st_hist_observe(&s->wal_sync_hist, (double)(st_clock_mono_ns(NULL) - t0) / 1e9);
    }
    pthread_mutex_lock(&s->mu);
    if (rc == ST_OK) {
        durable_publish_locked(s, seq, &snap);
        s->st.wal_syncs++;
    } else {
        /* After a failed fsync the page cache cannot be trusted: stop. */
        fail_locked(s, rc, "wal fsync");
    }
    pthread_mutex_unlock(&s->mu);
    store_marks_free(&snap);
    return rc;
}

int store_sync(struct store *s)
{
    pthread_mutex_lock(&s->sync_mu);
    int rc = wal_sync_locked(s);
    pthread_mutex_unlock(&s->sync_mu);
    return rc;
}

static void *syncer_main(void *arg)
{
    struct store *s = arg;
    int64_t interval = s->o.wal_sync_interval_ms > 0 ? s->o.wal_sync_interval_ms : 1;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        cond_wait_ms(&s->work_cv, &s->mu, interval);
        bool need = s->written_seq > s->durable_seq && s->failed == ST_OK;
        pthread_mutex_unlock(&s->mu);
        if (need)
            store_best_effort(store_sync(s));
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- write path --------------------------------------------------------------------------- */

static int batch_validate(const struct store *s, const struct store_batch *b)
{
    if (b->n == 0 || b->recs == NULL)
        return ST_EINVAL;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct store_record *r = &b->recs[i];
        if (r->id == NULL || r->id_len == 0 || r->id_len > STORE_ID_MAX)
            return ST_EINVAL;
        if (r->op > STORE_OP_DELETE || (r->op == STORE_OP_UPSERT && r->vec == NULL))
            return ST_EINVAL;
        if (r->window_end <= r->window || r->ts < r->window || r->ts >= r->window_end)
            return ST_EINVAL; /* a record lies inside the window it names */
        if (r->meta_len > STORE_META_MAX || (r->meta_len > 0 && r->meta == NULL))
            return ST_EINVAL;
    }
    (void)s;
    return ST_OK;
}

static int wal_encode(struct store *s, const struct store_batch *b, size_t *len)
{
    size_t vb = (size_t)s->o.dim * sizeof(float);
    size_t need = STORE_WAL_BATCH_HEADER;
    for (uint32_t i = 0; i < b->n; i++)
        need += 1 + 10 + b->recs[i].id_len + 24 + 10 + b->recs[i].meta_len +
                (b->recs[i].op == STORE_OP_UPSERT ? vb : 0);
    if (need > s->wcap) {
        uint8_t *p = realloc(s->wbuf, need);
        if (p == NULL)
            return ST_ENOMEM;
        s->wbuf = p;
        s->wcap = need;
    }
    uint8_t *p = s->wbuf;
    p[0] = STORE_WAL_BATCH;
    st_put_le32(p + 1, (uint32_t)b->partition);
    st_put_le64(p + 5, (uint64_t)b->offset);
    st_put_le32(p + 13, b->n);
    size_t o = STORE_WAL_BATCH_HEADER;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct store_record *r = &b->recs[i];
        p[o++] = r->op;
        o += st_put_varint(p + o, r->id_len);
        memcpy(p + o, r->id, r->id_len);
        o += r->id_len;
        st_put_le64(p + o, (uint64_t)r->ts);
        st_put_le64(p + o + 8, (uint64_t)r->window);
        st_put_le64(p + o + 16, (uint64_t)r->window_end);
        o += 24;
        o += st_put_varint(p + o, r->meta_len);
        if (r->meta_len)
            memcpy(p + o, r->meta, r->meta_len);
        o += r->meta_len;
        if (r->op == STORE_OP_UPSERT) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(p + o, r->vec, vb); /* the format is little-endian float32 */
#else
            for (uint32_t d = 0; d < s->o.dim; d++)
                st_put_f32(p + o + 4 * d, r->vec[d]);
#endif
            o += vb;
        }
    }
    *len = o;
    return ST_OK;
}

/* Decodes a WAL payload into records pointing into p (vectors copied into *vecs). */
int store_wal_decode(uint32_t dim, const uint8_t *p, size_t len, struct store_batch *b,
                     struct store_record **recs, float **vecs)
{
    if (len < STORE_WAL_BATCH_HEADER || p[0] != STORE_WAL_BATCH)
        return ST_ECORRUPT;
    b->partition = (int32_t)st_get_le32(p + 1);
    b->offset = (int64_t)st_get_le64(p + 5);
    b->n = st_get_le32(p + 13);
    if (b->n == 0 || b->n > len)
        return ST_ECORRUPT;
    struct store_record *r = calloc(b->n, sizeof(*r));
    float *v = malloc((size_t)b->n * dim * sizeof(float));
    if (r == NULL || v == NULL) {
        free(r);
        free(v);
        return ST_ENOMEM;
    }
    size_t o = STORE_WAL_BATCH_HEADER;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t idl, ml;
        size_t c;
        if (o >= len)
            goto bad;
        r[i].op = p[o++];
        if (r[i].op > STORE_OP_DELETE || (c = st_get_varint(p + o, len - o, &idl)) == 0)
            goto bad;
        o += c;
        if (idl == 0 || idl > STORE_ID_MAX || len - o < idl + 24)
            goto bad;
        r[i].id = p + o;
        r[i].id_len = (uint32_t)idl;
        o += idl;
        r[i].ts = (int64_t)st_get_le64(p + o);
        r[i].window = (int64_t)st_get_le64(p + o + 8);
        r[i].window_end = (int64_t)st_get_le64(p + o + 16);
        if (r[i].window_end <= r[i].window)
            goto bad;
        o += 24;
        if ((c = st_get_varint(p + o, len - o, &ml)) == 0)
            goto bad;
        o += c;
        if (ml > STORE_META_MAX || len - o < ml)
            goto bad;
        r[i].meta = ml ? p + o : NULL;
        r[i].meta_len = (uint32_t)ml;
        o += ml;
        if (r[i].op == STORE_OP_UPSERT) {
            if (len - o < (size_t)dim * 4)
                goto bad;
            float *dst = v + (size_t)i * dim;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(dst, p + o, (size_t)dim * 4);
#else
            for (uint32_t d = 0; d < dim; d++)
                dst[d] = st_get_f32(p + o + 4 * d);
#endif
            r[i].vec = dst;
            o += (size_t)dim * 4;
        }
    }
    if (o != len)
        goto bad;
    b->recs = r;
    *recs = r;
    *vecs = v;
    return ST_OK;
bad:
    free(r);
    free(v);
    return ST_ECORRUPT;
}

/* Applies a batch to the memtable and marks. Caller holds mu. */
static int apply_locked(struct store *s, const struct store_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        int rc = store_mt_add(s->mem, &b->recs[i], b->partition, b->offset, i);
        if (rc != ST_OK)
            return rc;
    }
    if (b->partition >= 0) {
        int rc = store_marks_raise(&s->applied, b->partition, b->offset);
        if (rc == ST_OK)
            rc = store_marks_raise(&s->mem->marks, b->partition, b->offset);
        if (rc != ST_OK)
            return rc;
    }
    return ST_OK;
}

/* Moves the active memtable to the frozen list and rolls the WAL so that the frozen memtable
 * is covered exactly by WAL files < the new one. Caller holds sync_mu and mu. */
static int freeze_locked(struct store *s)
{
    if (s->mem->n == 0)
        return ST_OK;
    struct store_memtable **fz = realloc(s->frozen, (s->nfrozen + 1) * sizeof(*fz));
    if (fz == NULL)
        return ST_ENOMEM;
    s->frozen = fz;
    /* Settle the old WAL file's durability first: its data must not depend on a file we are
     * about to stop syncing. */
    if (s->durable_seq < s->written_seq) {
        int rc = store_fs_sync(s->wal_file, "store.wal.fsync");
        if (rc != ST_OK)
            return fail_locked(s, rc, "wal fsync at roll");
        durable_publish_locked(s, s->written_seq, &s->applied);
    }
    int rc = wal_new_file(s);
    if (rc != ST_OK)
        return fail_locked(s, rc, "wal roll");
    struct store_memtable *m = store_mt_new(s->o.dim, s->wal_number);
    if (m == NULL)
        return ST_ENOMEM;
    s->frozen[s->nfrozen++] = s->mem;
    s->mem = m;
    pthread_cond_broadcast(&s->work_cv);
    return ST_OK;
}

int store_write(struct store *s, const struct store_batch *b, bool *applied)
{
    if (applied != NULL)
        *applied = false;
    if (s->o.read_only)
        return ST_EINVAL;
    int rc = batch_validate(s, b);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->failed != ST_OK) {
            rc = s->failed;
            goto out;
        }
        int64_t mark;
        if (b->partition >= 0 && store_marks_get(&s->applied, b->partition, &mark) &&
            b->offset <= mark) {
            rc = ST_OK; /* a replay: already applied */
            goto out;
        }
        if (s->mem->bytes < s->o.memtable_size)
            break;
        if (s->nfrozen >= s->o.max_frozen) {
            rc = ST_EAGAIN; /* flushes are behind: back-pressure */
            goto out;
        }
        /* Freeze: take the locks in order, then look again. */
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->sync_mu);
        pthread_mutex_lock(&s->mu);
        if (s->failed == ST_OK && s->mem->bytes >= s->o.memtable_size &&
            s->nfrozen < s->o.max_frozen)
            rc = freeze_locked(s);
        pthread_mutex_unlock(&s->sync_mu);
        if (rc != ST_OK)
            goto out;
    }
    size_t len;
    if ((rc = wal_encode(s, b, &len)) != ST_OK)
        goto out;
    rc = store_log_append(&s->wal, s->wbuf, len);
    if (rc != ST_OK) {
        fail_locked(s, rc, "wal write");
        goto out;
    }
    s->st.wal_bytes_written += len;
    s->st.wal_live_bytes += len;
    s->st.bytes_ingested += len;
    if ((rc = apply_locked(s, b)) != ST_OK) {
        fail_locked(s, rc, "memtable insert");
        goto out;
    }
    uint64_t seq = ++s->written_seq;
    if (applied != NULL)
        *applied = true;
    if (s->o.wal_sync == STORE_SYNC_NONE) {
        durable_publish_locked(s, seq, &s->applied);
    } else if (s->o.wal_sync == STORE_SYNC_BATCH) {
        pthread_cond_signal(&s->work_cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->o.wal_sync == STORE_SYNC_ALWAYS ||
        (s->o.wal_sync == STORE_SYNC_BATCH && !s->have_syncer))
        return store_sync(s);
    return ST_OK;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_durable_offset(struct store *s, int32_t partition, int64_t *offset)
{
    pthread_mutex_lock(&s->mu);
    bool ok = store_marks_get(&s->durable, partition, offset);
    pthread_mutex_unlock(&s->mu);
    return ok ? ST_OK : ST_ENOTFOUND;
}

int store_applied_offset(struct store *s, int32_t partition, int64_t *offset)
{
    pthread_mutex_lock(&s->mu);
    bool ok = store_marks_get(&s->applied, partition, offset);
    pthread_mutex_unlock(&s->mu);
    return ok ? ST_OK : ST_ENOTFOUND;
}

/* ---- flush -------------------------------------------------------------------------------- */

static int entry_cmp(const void *a, const void *b, void *arg)
{
    const struct store_memtable *m = arg;
    const struct store_mt_entry *x = &m->e[*(const uint32_t *)a];
    const struct store_mt_entry *y = &m->e[*(const uint32_t *)b];
    if (x->window != y->window)
        return x->window < y->window ? -1 : 1;
    return store_id_cmp(m->heap + x->id_off, x->id_len, m->heap + y->id_off, y->id_len);
}

/* Writes the oldest frozen memtable into one segment per window and records them in the
 * manifest. Caller holds mf_mu only. */
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
        if (!m->e[i].superseded)
            order[n++] = (uint32_t)i;
    qsort_r(order, n, sizeof(*order), entry_cmp, m);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        int64_t w = m->e[order[i]].window;
        while (j < n && m->e[order[j]].window == w) {
            const struct store_mt_entry *x = &m->e[order[j]];
            struct store_seg_in *g = &in[j - i];
            g->id = m->heap + x->id_off;
            g->id_len = x->id_len;
            g->ts = x->ts;
            g->partition = x->partition;
            g->offset = x->offset;
            g->idx = x->idx;
            g->op = x->op;
            g->vec = m->vecs + (size_t)order[j] * m->dim;
            g->meta = m->heap + x->meta_off;
            g->meta_len = x->meta_len;
            j++;
        }
        pthread_mutex_lock(&s->mu);
        uint64_t fnum = s->mf.next_file++;
        pthread_mutex_unlock(&s->mu);
        struct store_mf_seg mg = {.file_number = fnum,
                                  .meta = {.window_start = w,
                                           .window_end = m->e[order[i]].window_end,
                                           .kind = STORE_SEG_RUN}};
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
            rc = store_segment_open_file(path, &g, &err);
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
    /* One edit group: the new segments, the WAL files they make obsolete, the marks. */
    pthread_mutex_lock(&s->mu);
    uint64_t log_number = s->nfrozen > 1 ? s->frozen[1]->first_log : s->mem->first_log;
    uint64_t next_file = s->mf.next_file;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; rc == ST_OK && i < ngs; i++)
        rc = store_mf_edit_add_segment(&e, &gs[i]);
    for (size_t i = 0; rc == ST_OK && i < m->marks.n; i++)
        rc = store_mf_edit_mark(&e, m->marks.m[i].partition, m->marks.m[i].offset);
    if (rc == ST_OK)
        rc = store_mf_edit_log_number(&e, log_number);
    if (rc == ST_OK)
        rc = store_mf_edit_next_file(&e, next_file);
    if (rc == ST_OK)
        rc = mf_append(s, &e);
    if (rc != ST_OK)
        goto out;

    pthread_mutex_lock(&s->mu);
    struct store_segment **ns = realloc(s->segs, (s->nsegs + nadded) * sizeof(*ns));
    if (ns == NULL) {
        fail_locked(s, ST_ENOMEM, "segment list");
        pthread_mutex_unlock(&s->mu);
        rc = ST_ENOMEM;
        goto out;
    }
    s->segs = ns;
    for (size_t i = 0; i < nadded; i++)
        s->segs[s->nsegs++] = added[i];
    nadded = 0;
    memmove(s->frozen, s->frozen + 1, (s->nfrozen - 1) * sizeof(*s->frozen));
    s->nfrozen--;
    store_mt_unref(m); /* the frozen list's reference */
    s->st.segment_bytes_written += written;
    pthread_cond_broadcast(&s->flushed_cv);
    pthread_mutex_unlock(&s->mu);

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
    }
    store_mt_unref(m);
    free(order);
    free(in);
    free(added);
    free(gs);
    store_mf_edit_free(&e);
    return rc;
}

static void *flusher_main(void *arg)
{
    struct store *s = arg;
    int64_t backoff = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (s->nfrozen == 0 || s->failed != ST_OK || backoff > 0) {
            cond_wait_ms(&s->work_cv, &s->mu, backoff > 0 ? backoff : 1000);
            backoff = 0;
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->mf_mu);
        int rc = flush_oldest(s);
        pthread_mutex_unlock(&s->mf_mu);
        pthread_mutex_lock(&s->mu);
        backoff = rc == ST_OK ? 0 : 1000; /* e.g. ENOSPC: the WAL still holds the data */
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int store_flush(struct store *s)
{
    pthread_mutex_lock(&s->sync_mu);
    pthread_mutex_lock(&s->mu);
    int rc = s->failed;
    if (rc == ST_OK)
        rc = freeze_locked(s);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->sync_mu);
    if (rc != ST_OK)
        return rc;
    if (!s->have_flusher) {
        for (;;) {
            pthread_mutex_lock(&s->mu);
            size_t nf = s->nfrozen;
            pthread_mutex_unlock(&s->mu);
            if (nf == 0)
                return ST_OK;
            pthread_mutex_lock(&s->mf_mu);
            rc = flush_oldest(s);
            pthread_mutex_unlock(&s->mf_mu);
            if (rc != ST_OK)
                return rc;
        }
    }
    pthread_mutex_lock(&s->mu);
    while (s->nfrozen > 0 && s->failed == ST_OK)
        pthread_cond_wait(&s->flushed_cv, &s->mu);
    rc = s->failed;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

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
 * releases them with frozen_release. NULL only when out of memory. */
static struct store_memtable **frozen_capture_locked(struct store *s, size_t *n)
{
    struct store_memtable **fz = malloc((s->nfrozen ? s->nfrozen : 1) * sizeof(*fz));
    *n = 0;
    for (size_t i = 0; fz != NULL && i < s->nfrozen; i++) {
        store_mt_ref(s->frozen[i]);
        fz[(*n)++] = s->frozen[i];
    }
    return fz;
}

static void frozen_release(struct store_memtable **fz, size_t n)
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
    fz = frozen_capture_locked(s, &nfz);
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
    frozen_release(fz, nfz);
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
    struct store_memtable **fz = frozen_capture_locked(s, &nfz);
    pthread_mutex_unlock(&s->mu);
    if (fz == NULL && rc == ST_OK)
        rc = ST_ENOMEM;
    for (size_t i = 0; rc == ST_OK && i < nfz; i++)
        rc = scan_mt(fz[i], fn, ctx);
    frozen_release(fz, nfz);
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

static int edit_window_kv(struct store_mf_edit *e, const struct store_window *w, const char *kv_key,
                          const void *kv, size_t kv_len)
{
    int rc = ST_OK;
    if (w != NULL) {
        struct store_window_rec r = {w->start, w->end, w->state, w->version};
        rc = store_mf_edit_window(e, &r);
    }
    if (rc == ST_OK && kv_key != NULL) {
        struct store_kv k = {(char *)(uintptr_t)kv_key, (uint8_t *)(uintptr_t)kv, kv_len};
        rc = store_mf_edit_kv(e, &k);
    }
    return rc;
}

int store_drop_window(struct store *s, int64_t window_start, const struct store_window *w,
                      size_t nw, const char *kv_key, const void *kv, size_t kv_len, size_t *removed)
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
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; rc == ST_OK && i < nw; i++)
        rc = edit_window_kv(&e, &w[i], NULL, NULL, 0);
    if (rc == ST_OK)
        rc = edit_window_kv(&e, NULL, kv_key, kv, kv_len);
    if (rc == ST_OK && e.len > 0)
        rc = mf_append(s, &e); /* the intent is durable before any file goes */
    if (rc == ST_OK && ndel > 0) {
        pthread_mutex_lock(&s->mu);
        size_t keep = 0;
        for (size_t i = 0; i < s->nsegs; i++) {
            struct store_segment *g = s->segs[i];
            if (g->info.window_start == window_start) {
                g->doomed = true; /* unlinked when the last reader lets go */
                store_segment_unref(g);
                (*removed)++;
            } else {
                s->segs[keep++] = g;
            }
        }
        s->nsegs = keep;
        pthread_mutex_unlock(&s->mu);
    }
    store_mf_edit_free(&e);
    pthread_mutex_unlock(&s->mf_mu);
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
    out->segment_bytes = 0;
    for (size_t i = 0; i < s->nsegs; i++)
        out->segment_bytes += s->segs[i]->info.bytes;
    pthread_mutex_unlock(&s->mu);
}

/* ---- open and recovery -------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Replays WAL files >= log_number, oldest first, into the memtable. */
static int recover_wal(struct store *s, const uint64_t *logs, size_t nlogs, struct st_err *err)
{
    for (size_t li = 0; li < nlogs; li++) {
        bool last = li + 1 == nlogs;
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
        while (rc == ST_OK && store_log_next(&r, &p, &plen, &off)) {
            struct store_batch b;
            struct store_record *recs = NULL;
            float *vecs = NULL;
            rc = store_wal_decode(s->o.dim, p, plen, &b, &recs, &vecs);
            if (rc != ST_OK) {
                st_err_set(err, ST_ECORRUPT, "%s: undecodable WAL record at offset %zu", path, off);
                rc = ST_ECORRUPT;
                break;
            }
            int64_t mark;
            if (b.partition >= 0 && store_marks_get(&s->applied, b.partition, &mark) &&
                b.offset <= mark) {
                skipped++;
            } else {
                rc = apply_locked(s, &b);
                batches++;
                s->written_seq++;
            }
            free(recs);
            free(vecs);
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
    s->have_syncer = s->have_flusher = false;
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
    store_log_writer_destroy(&s->wal);
    store_fs_close(s->wal_file);
    store_log_writer_destroy(&s->mfw);
    store_fs_close(s->mf_file);
    store_mf_state_free(&s->mf);
    store_marks_free(&s->applied);
    store_marks_free(&s->durable);
    free(s->wbuf);
    free(s->dir);
    pthread_mutex_destroy(&s->mf_mu);
    pthread_mutex_destroy(&s->sync_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->durable_cv);
    pthread_cond_destroy(&s->flushed_cv);
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
    if (s->o.memtable_size == 0)
        s->o.memtable_size = 64u << 20;
    if (s->o.max_frozen == 0)
        s->o.max_frozen = 2;
    if (s->o.wal_sync_interval_ms <= 0)
        s->o.wal_sync_interval_ms = 5;
    pthread_mutex_init(&s->mf_mu, NULL);
    pthread_mutex_init(&s->sync_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->work_cv);
    cond_init_mono(&s->durable_cv);
    cond_init_mono(&s->flushed_cv);
    st_hist_init(&s->wal_sync_hist, &st_hist_latency);
    uint64_t *logs = NULL;
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
        rc = store_segment_open_file(p, &g, err);
        free(p);
        if (rc != ST_OK)
            goto fail;
        g->fs = o->fs;
        g->file_number = s->mf.segs[i].file_number;
        g->info.file_number = g->file_number;
        if (g->info.dim != o->dim || g->info.count != s->mf.segs[i].count) {
            rc = st_err_set(err, ST_ECORRUPT, "%s: disagrees with the manifest (count/dim)",
                            g->path);
            store_segment_unref(g);
            goto fail;
        }
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
    if (s->mf_number >= s->mf.next_file)
        s->mf.next_file = s->mf_number + 1;

    s->mem = store_mt_new(o->dim, nlogs ? logs[0] : s->mf.next_file);
    if (s->mem == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    if ((rc = recover_wal(s, logs, nlogs, err)) != ST_OK)
        goto fail;
    if ((rc = store_marks_copy(&s->durable, &s->applied)) != ST_OK)
        goto fail;
    s->durable_seq = s->written_seq;
    s->st.bytes_ingested = 0;

    if (!o->read_only) {
        /* The replayed memtable stays covered by its WAL files; new writes go to a new one. */
        if ((rc = wal_new_file(s)) != ST_OK) {
            st_err_set(err, rc, "%s: cannot start a WAL file: %s", s->dir, st_strerror(rc));
            goto fail;
        }
        if (nlogs == 0)
            s->mem->first_log = s->wal_number;
        s->mf.log_number = s->mem->first_log;
        if ((rc = mf_rewrite(s, err)) != ST_OK)
            goto fail;
        if (!o->no_background) {
            if (o->wal_sync == STORE_SYNC_BATCH) {
                if (pthread_create(&s->syncer, NULL, syncer_main, s) != 0) {
                    rc = st_err_set(err, ST_ENOMEM, "cannot start the WAL sync thread");
                    goto fail;
                }
                s->have_syncer = true;
            }
            if (pthread_create(&s->flusher, NULL, flusher_main, s) != 0) {
                rc = st_err_set(err, ST_ENOMEM, "cannot start the flush thread");
                goto fail;
            }
            s->have_flusher = true;
        }
    }
    free(logs);
    *out = s;
    return ST_OK;
fail:
    if (d != NULL)
        closedir(d);
    free(logs);
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

/* ---- window table, key/values, merges ----------------------------------------------------- */

int store_window_put(struct store *s, const struct store_window *w)
{
    if (s->o.read_only)
        return ST_EINVAL;
    struct store_mf_edit e = {0};
    pthread_mutex_lock(&s->mf_mu);
    int rc = edit_window_kv(&e, w, NULL, NULL, 0);
    if (rc == ST_OK)
        rc = mf_append(s, &e);
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
    int rc = edit_window_kv(&e, NULL, key, val, len);
    if (rc == ST_OK)
        rc = mf_append(s, &e);
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
        rc = mf_append(s, &e);
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

struct merge_item {
    struct store_segment *g;
    uint64_t idx;
    size_t meta_off;
    const uint8_t *meta_base;
};

static int merge_item_cmp(const void *a, const void *b)
{
    const struct merge_item *x = a, *y = b;
    struct store_seg_record rx, ry;
    store_segment_record(x->g, x->idx, &rx);
    store_segment_record(y->g, y->idx, &ry);
    int c = store_id_cmp(rx.id, rx.id_len, ry.id, ry.id_len);
    if (c != 0)
        return c;
    struct store_version vx = {rx.ts, rx.partition, rx.offset, rx.idx};
    struct store_version vy = {ry.ts, ry.partition, ry.offset, ry.idx};
    return -store_version_cmp(&vx, &vy); /* newest first */
}

int store_merge(struct store *s, const uint64_t *inputs, size_t n, enum store_seg_kind kind,
                uint32_t version, const struct store_window *w, const char *kv_key, const void *kv,
                size_t kv_len, struct store_segment_info *out)
{
    if (s->o.read_only || n == 0)
        return ST_EINVAL;
    struct store_segment **in = calloc(n, sizeof(*in));
    uint8_t **metas = calloc(n, sizeof(*metas));
    struct merge_item *items = NULL;
    struct store_seg_in *sin = NULL;
    struct store_mf_edit e = {0};
    struct store_segment *ng = NULL;
    struct st_err err = {0};
    int rc = ST_OK;
    if (in == NULL || metas == NULL) {
        free(in);
        free(metas);
        return ST_ENOMEM;
    }
    pthread_mutex_lock(&s->mf_mu);
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    for (size_t k = 0; rc == ST_OK && k < n; k++) {
        for (size_t i = 0; i < s->nsegs && in[k] == NULL; i++)
            if (s->segs[i]->file_number == inputs[k])
                in[k] = s->segs[i];
        if (in[k] == NULL || in[k]->info.window_start != in[0]->info.window_start)
            rc = ST_EINVAL;
        else
            store_segment_ref(in[k]);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK)
        goto out;
    struct store_mf_seg mg = {.meta = {.window_start = in[0]->info.window_start,
                                       .window_end = in[0]->info.window_end,
                                       .kind = kind,
                                       .version = version}};
    uint64_t written = 0;
    if (n == 1) {
        /* Promotion: the file already is the window's only run; only the manifest changes. */
        mg.file_number = in[0]->file_number;
        mg.count = in[0]->info.count;
        mg.bytes = in[0]->info.bytes;
        mg.min_ts = in[0]->info.min_ts;
        mg.max_ts = in[0]->info.max_ts;
        rc = store_mf_edit_del_segment(&e, mg.file_number);
    } else {
        size_t total = 0;
        for (size_t k = 0; k < n; k++)
            total += in[k]->info.count;
        items = malloc((total ? total : 1) * sizeof(*items));
        sin = malloc((total ? total : 1) * sizeof(*sin));
        if (items == NULL || sin == NULL) {
            rc = ST_ENOMEM;
            goto out;
        }
        size_t ni = 0;
        for (size_t k = 0; k < n && rc == ST_OK; k++) {
            size_t mlen;
            rc = store_segment_meta_all(in[k], &metas[k], &mlen);
            size_t moff = 0;
            for (uint64_t i = 0; rc == ST_OK && i < in[k]->info.count; i++) {
                struct store_seg_record r;
                store_segment_record(in[k], i, &r);
                if (moff + r.meta_len > mlen) {
                    rc = ST_ECORRUPT;
                    break;
                }
                items[ni++] = (struct merge_item){in[k], i, moff, metas[k]};
                moff += r.meta_len;
            }
        }
        if (rc != ST_OK)
            goto out;
        qsort(items, ni, sizeof(*items), merge_item_cmp);
        size_t nout = 0;
        for (size_t i = 0; i < ni; i++) {
            struct store_seg_record r;
            store_segment_record(items[i].g, items[i].idx, &r);
            if (nout > 0 &&
                store_id_cmp(sin[nout - 1].id, sin[nout - 1].id_len, r.id, r.id_len) == 0)
                continue; /* an older version of the id just written */
            sin[nout++] = (struct store_seg_in){
                .id = r.id,
                .id_len = r.id_len,
                .ts = r.ts,
                .partition = r.partition,
                .offset = r.offset,
                .idx = r.idx,
                .op = r.op,
                .vec = store_segment_vectors(items[i].g) + items[i].idx * items[i].g->info.dim,
                .meta = items[i].meta_base ? items[i].meta_base + items[i].meta_off : NULL,
                .meta_len = r.meta_len};
        }
        pthread_mutex_lock(&s->mu);
        mg.file_number = s->mf.next_file++;
        pthread_mutex_unlock(&s->mu);
        char *path = store_file_path(s->dir, STORE_FILE_SEG, mg.file_number);
        char *tmp = NULL;
        if (path == NULL || asprintf(&tmp, "%s.tmp", path) < 0) {
            free(path);
            rc = ST_ENOMEM;
            goto out;
        }
        rc = store_segment_write(s->o.fs, tmp, s->o.dim, &mg.meta, sin, nout, &written, &err);
        if (rc == ST_OK)
            rc = store_fs_rename(s->o.fs, tmp, path, "store.merge.rename");
        if (rc != ST_OK)
            store_best_effort(store_fs_unlink(s->o.fs, tmp, "store.merge.unlink_tmp"));
        if (rc == ST_OK)
            rc = store_fs_sync_dir(s->o.fs, s->dir, "store.merge.sync_dir");
        if (rc == ST_OK)
            rc = store_segment_open_file(path, &ng, &err);
        free(tmp);
        free(path);
        if (rc != ST_OK)
            goto out;
        ng->fs = s->o.fs;
        ng->file_number = mg.file_number;
        ng->info.file_number = mg.file_number;
        mg.count = ng->info.count;
        mg.bytes = written;
        mg.min_ts = ng->info.min_ts;
        mg.max_ts = ng->info.max_ts;
        for (size_t k = 0; k < n && rc == ST_OK; k++)
            rc = store_mf_edit_del_segment(&e, in[k]->file_number);
        if (rc == ST_OK)
            rc = store_mf_edit_next_file(&e, mg.file_number + 1);
    }
    if (rc == ST_OK)
        rc = store_mf_edit_add_segment(&e, &mg);
    if (rc == ST_OK)
        rc = edit_window_kv(&e, w, kv_key, kv, kv_len);
    if (rc == ST_OK)
        rc = mf_append(s, &e);
    if (rc != ST_OK)
        goto out;
    pthread_mutex_lock(&s->mu);
    if (n == 1) {
        in[0]->info.kind = kind;
        in[0]->info.version = version;
        if (out != NULL)
            *out = in[0]->info;
    } else {
        size_t keep = 0;
        for (size_t i = 0; i < s->nsegs; i++) {
            bool gone = false;
            for (size_t k = 0; k < n && !gone; k++)
                gone = s->segs[i] == in[k];
            if (gone) {
                s->segs[i]->doomed = true;
                store_segment_unref(s->segs[i]); /* the list's reference */
            } else {
                s->segs[keep++] = s->segs[i];
            }
        }
        ng->info.kind = kind;
        ng->info.version = version;
        s->segs[keep++] = ng; /* the list had room for the n >= 2 inputs */
        s->nsegs = keep;
        s->st.segment_bytes_written += written;
        if (out != NULL)
            *out = ng->info;
        ng = NULL;
    }
    pthread_mutex_unlock(&s->mu);
out:
    if (ng != NULL) {
        ng->doomed = true;
        store_segment_unref(ng);
    }
    for (size_t k = 0; k < n; k++) {
        if (in[k] != NULL)
            store_segment_unref(in[k]);
        free(metas[k]);
    }
    pthread_mutex_unlock(&s->mf_mu);
    if (rc != ST_OK)
        st_log_warn(LOG_COMP, "merge failed dir=%s inputs=%zu error=\"%s\" detail=\"%s\"", s->dir,
                    n, st_strerror(rc), err.msg);
    free(in);
    free(metas);
    free(items);
    free(sin);
    store_mf_edit_free(&e);
    return rc;
}
