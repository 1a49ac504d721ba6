/*
 * store_write.c — the write path: WAL encoding, group commit (the syncer thread), apply to the
 * memtable, freezing a full memtable.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_log.h"
#include "st_prom.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

/* ---- WAL ---------------------------------------------------------------------------------- */

/* Creates WAL file number n with its directory entry durable (nothing in it may be
 * acknowledged before that). Needs no store lock. */
static int wal_create(struct store *s, uint64_t n, struct store_file **out)
{
    *out = NULL;
    char *path = store_file_path(s->dir, STORE_FILE_LOG, n);
    if (path == NULL)
        return ST_ENOMEM;
    struct store_file *f = NULL;
    int rc = store_fs_create(s->o.fs, path, &f, "store.wal.create");
    if (rc == ST_OK)
        rc = store_fs_sync_dir(s->o.fs, s->dir, "store.wal.sync_dir");
    if (rc != ST_OK) {
        store_fs_close(f);
        store_best_effort(store_fs_unlink(s->o.fs, path, "store.wal.unlink_new"));
        free(path);
        return rc;
    }
    free(path);
    *out = f;
    return ST_OK;
}

/* Makes f (number n) the WAL writers append to; returns the previous file for the caller to
 * close. Caller holds mu (or is single-threaded at open). */
static struct store_file *wal_install(struct store *s, struct store_file *f, uint64_t n)
{
    struct store_file *old = s->wal_file;
    if (old != NULL)
        store_log_writer_destroy(&s->wal);
    s->wal_file = f;
    s->wal_number = n;
    store_best_effort(store_log_writer_init(&s->wal, f, "store.wal.write"));
    return old;
}

/* Starts a new WAL file. Single-threaded (open). */
int store_wal_new_file(struct store *s)
{
    uint64_t n = s->mf.next_file++;
    struct store_file *f;
    int rc = wal_create(s, n, &f);
    if (rc == ST_OK)
        store_fs_close(wal_install(s, f, n));
    return rc;
}

/*
 * Group commit: the syncer fsyncs when the oldest append not covered yet is
 * wal_sync_interval_ms old, or when this many bytes wait (a burst then does not sit in the
 * page cache for the whole interval, and one fsync never has to write back more than about
 * this much).
 */
#define STORE_SYNC_BYTES (8u << 20)

/* Publishes durability of everything written up to seq (appended bytes up to `bytes`) with
 * marks `snap`; `started_ns`: when the fsync covering it began. Caller holds mu. */
static void durable_publish_locked(struct store *s, uint64_t seq, uint64_t bytes,
                                   int64_t started_ns, const struct store_marks *snap)
{
    if (seq > s->durable_seq)
        s->durable_seq = seq;
    if (bytes > s->wal_synced)
        s->wal_synced = bytes;
    /* Appends made during the fsync are not covered; the earliest of them is no older than
     * the fsync's start, so the next deadline counts from there. */
    s->unsynced_since_ns = s->written_seq > s->durable_seq ? started_ns : 0;
    if (store_marks_copy(&s->durable, snap) != ST_OK)
        store_fail_locked(s, ST_ENOMEM, "durable marks");
    pthread_cond_broadcast(&s->durable_cv);
}

/* fsyncs the WAL if anything is unsynced. Caller holds sync_mu, not mu. */
int store_wal_sync_locked(struct store *s)
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
    uint64_t seq = s->written_seq, bytes = s->wal_appended;
    struct store_marks snap = {0};
    struct store_vlog **logs = NULL;
    size_t nlogs = 0;
    int rc = store_marks_copy(&snap, &s->applied);
    /* Every row the records up to seq name is in its log first (the writer thread may still
     * hold some: mu is released while waiting, sync_mu keeps the WAL file ours). */
    if (rc == ST_OK)
        rc = store_vw_wait_locked(s, seq);
    if (rc == ST_OK)
        rc = store_vlog_capture_dirty_locked(s, &logs, &nlogs);
    struct store_file *f = s->wal_file;
    pthread_mutex_unlock(&s->mu);
    int64_t t0 = st_clock_mono_ns(NULL);
    if (rc == ST_OK)
        rc = store_vlog_sync_captured(logs, nlogs); /* the rows before the records naming them */
    if (rc == ST_OK) {
        rc = store_fs_sync(f, "store.wal.fsync");
        st_hist_observe(&s->wal_sync_hist, (double)(st_clock_mono_ns(NULL) - t0) / 1e9);
    }
    pthread_mutex_lock(&s->mu);
    if (rc == ST_OK) {
        durable_publish_locked(s, seq, bytes, t0, &snap);
        s->st.wal_syncs++;
    } else {
        /* After a failed fsync the page cache cannot be trusted: stop. */
        store_fail_locked(s, rc, "wal fsync");
    }
    pthread_mutex_unlock(&s->mu);
    store_marks_free(&snap);
    return rc;
}

int store_sync(struct store *s)
{
    pthread_mutex_lock(&s->sync_mu);
    int rc = store_wal_sync_locked(s);
    pthread_mutex_unlock(&s->sync_mu);
    return rc;
}

/*
 * The group-commit thread (wal_sync = batch). It does not fsync per write: it sleeps until the
 * oldest unsynced append is wal_sync_interval_ms old or STORE_SYNC_BYTES are unsynced (writers
 * wake it for the first append after a sync and when they cross the byte threshold), so one
 * fsync covers every message of every partition written meanwhile.
 */
void *store_syncer_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-wal-sync"); /* by itself: a prctl (ing_pipe.c) */
    struct store *s = arg;
    int64_t interval_ns = (s->o.wal_sync_interval_ms > 0 ? s->o.wal_sync_interval_ms : 1) * 1000000;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t wait_ms = 1000; /* nothing unsynced: a writer wakes us */
        if (s->written_seq > s->durable_seq && s->failed == ST_OK) {
            int64_t now = st_clock_mono_ns(NULL);
            int64_t due = s->unsynced_since_ns + interval_ns;
            if (s->unsynced_since_ns == 0 || now >= due ||
                s->wal_appended - s->wal_synced >= STORE_SYNC_BYTES) {
                pthread_mutex_unlock(&s->mu);
                store_best_effort(store_sync(s));
                pthread_mutex_lock(&s->mu);
                continue;
            }
            wait_ms = (due - now + 999999) / 1000000;
        }
        store_cond_wait_ms(&s->work_cv, &s->mu, wait_ms);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- write path --------------------------------------------------------------------------- */

int store_batch_validate(const struct store *s, const struct store_batch *b)
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

/*
 * Encodes b as a WAL payload (wal_format.h) into s->wiov: the fixed fields, ids and meta are
 * written into s->wbuf, inline vectors are referenced where the caller holds them (the format
 * is little-endian float32, the host's layout), so store_log_appendv writes them without a
 * copy. refs (NULL: a BATCH record, every vector inline) gives per record the vector log row
 * its vector is in (vfile 0: inline), making a BATCH_REFS record.
 * Caller holds mu (wbuf and wiov are the store's).
 */
static int wal_encode(struct store *s, const struct store_batch *b, const struct store_vref *refs,
                      int *iovcnt, size_t *len)
{
    size_t vb = (size_t)s->o.dim * sizeof(float);
    bool inline_vecs = __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__;
    size_t need = STORE_WAL_BATCH_HEADER, nv = 1;
    for (uint32_t i = 0; i < b->n; i++) {
        need += 1 + 10 + b->recs[i].id_len + 24 + 10 + b->recs[i].meta_len + 17;
        if (b->recs[i].op == STORE_OP_UPSERT) {
            need += inline_vecs ? vb : 0;
            nv += 2;
        }
    }
    if (need > s->wcap) {
        uint8_t *p = realloc(s->wbuf, need);
        if (p == NULL)
            return ST_ENOMEM;
        s->wbuf = p;
        s->wcap = need;
    }
    if (nv > s->wiov_cap) {
        struct iovec *v = realloc(s->wiov, nv * sizeof(*v));
        if (v == NULL)
            return ST_ENOMEM;
        s->wiov = v;
        s->wiov_cap = nv;
    }
    uint8_t *p = s->wbuf;
    p[0] = refs != NULL ? STORE_WAL_BATCH_REFS : STORE_WAL_BATCH;
    st_put_le32(p + 1, (uint32_t)b->partition);
    st_put_le64(p + 5, (uint64_t)b->offset);
    st_put_le32(p + 13, b->n);
    size_t o = STORE_WAL_BATCH_HEADER, from = 0, total = 0; /* from: wbuf not yet in wiov */
    int n = 0;
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
        if (r->op != STORE_OP_UPSERT)
            continue;
        if (refs != NULL && refs[i].vfile != 0) {
            p[o++] = STORE_WAL_VEC_REF;
            st_put_le64(p + o, refs[i].vfile);
            st_put_le32(p + o + 8, refs[i].row);
            st_put_le32(p + o + 12, refs[i].sum);
            o += 16;
            continue;
        }
        if (refs != NULL)
            p[o++] = STORE_WAL_VEC_INLINE;
        if (inline_vecs) {
            for (uint32_t d = 0; d < s->o.dim; d++)
                st_put_f32(p + o + 4 * d, r->vec[d]);
            o += vb;
            continue;
        }
        s->wiov[n++] = (struct iovec){p + from, o - from};
        s->wiov[n++] = (struct iovec){(void *)(uintptr_t)r->vec, vb};
        total += o - from + vb;
        from = o;
    }
    if (o > from) {
        s->wiov[n++] = (struct iovec){p + from, o - from};
        total += o - from;
    }
    *iovcnt = n;
    *len = total;
    return ST_OK;
}

/*
 * Where each upsert of b puts its vector (s->wrefs): the next rows of its window's vector log,
 * in record order, or inline when the window's log is closed. The distinct logs the batch
 * appends to go to s->wplan (a batch spans few windows: the work is records x logs).
 * *create gets a window that has no log yet (the caller creates it without mu and plans
 * again). Caller holds mu.
 */
static int vlog_plan_locked(struct store *s, const struct store_batch *b, bool *create, int64_t *cw,
                            int64_t *cwe)
{
    *create = false;
    s->nwplan = 0;
    if (b->n > s->wrefs_cap) {
        struct store_vref *r = realloc(s->wrefs, b->n * sizeof(*r));
        if (r == NULL)
            return ST_ENOMEM;
        s->wrefs = r;
        const float **w = realloc(s->wvec, b->n * sizeof(*w));
        if (w == NULL)
            return ST_ENOMEM;
        s->wvec = w;
        s->wrefs_cap = b->n;
    }
    for (uint32_t i = 0; i < b->n; i++) {
        const struct store_record *r = &b->recs[i];
        s->wrefs[i] = (struct store_vref){0};
        if (r->op != STORE_OP_UPSERT)
            continue;
        size_t k = 0;
        while (k < s->nwplan && s->wplan[k].v->window != r->window)
            k++;
        if (k == s->nwplan) {
            struct store_vlog *v = store_vlog_find_locked(s, r->window);
            if (v == NULL) {
                *create = true;
                *cw = r->window;
                *cwe = r->window_end;
                return ST_OK;
            }
            if (s->nwplan == s->wplan_cap) {
                size_t cap = s->wplan_cap ? s->wplan_cap * 2 : 4;
                struct store_wplan *p = realloc(s->wplan, cap * sizeof(*p));
                if (p == NULL)
                    return ST_ENOMEM;
                s->wplan = p;
                s->wplan_cap = cap;
            }
            s->wplan[s->nwplan++] = (struct store_wplan){v, v->nrows, 0};
        }
        struct store_wplan *pl = &s->wplan[k];
        if (pl->v->closed)
            continue;
        if (pl->next >= UINT32_MAX)
            return ST_ERANGE; /* more rows than a row table names: see store/README.md */
        s->wrefs[i].vfile = pl->v->number;
        s->wrefs[i].row = (uint32_t)pl->next++;
        s->wrefs[i].sum =
            r->vec_sum_set ? r->vec_sum : st_checksum32(r->vec, (size_t)s->o.dim * sizeof(float));
        /* A wrong caller sum names a row recovery refuses: debug builds (the sanitizer runs)
         * check every one. */
        assert(!r->vec_sum_set ||
               r->vec_sum == st_checksum32(r->vec, (size_t)s->o.dim * sizeof(float)));
        pl->count++;
    }
    return ST_OK;
}

/*
 * Appends the planned rows to their logs (one writev per log, straight from the caller's
 * vectors). On failure the store is failed by the caller (a log may hold part of the rows:
 * recovery cuts rows no record names). *bytes gets the vector bytes written. Caller holds mu,
 * as it did for the plan.
 */
static int vlog_append_locked(struct store *s, const struct store_batch *b, uint64_t *bytes)
{
    size_t vb = (size_t)s->o.dim * sizeof(float);
    *bytes = 0;
    if (b->n > s->viov_cap) {
        struct iovec *v = realloc(s->viov, b->n * sizeof(*v));
        if (v == NULL)
            return ST_ENOMEM;
        s->viov = v;
        s->viov_cap = b->n;
    }
    for (size_t k = 0; k < s->nwplan; k++) {
        struct store_vlog *v = s->wplan[k].v;
        if (s->wplan[k].count == 0)
            continue; /* closed: its records are inline */
        int cnt = 0;
        for (uint32_t i = 0; i < b->n; i++)
            if (s->wrefs[i].vfile == v->number)
                s->viov[cnt++] = (struct iovec){(void *)(uintptr_t)b->recs[i].vec, vb};
        if (v->f->size != STORE_SEG_HEADER + v->nrows * vb)
            return ST_EINTERNAL; /* the log's append position disagrees with its rows */
        int rc = store_vlog_append(v, v->f->size, s->viov, cnt, NULL);
        if (rc != ST_OK)
            return rc;
        v->nrows += (uint64_t)cnt;
        v->dirty = true;
        s->st.vlog_bytes += (uint64_t)cnt * vb;
        *bytes += (uint64_t)cnt * vb;
    }
    return ST_OK;
}

/* ---- the vector-log writer ------------------------------------------------------------------ */

/* One log's rows of one write, appended by the writer thread. */
struct store_vjob {
    struct store_vjob *next;
    struct store_vlog *v;     /* referenced */
    struct store_memtable *m; /* referenced: holds the rows' bytes */
    uint64_t seq;             /* the write's written_seq */
    uint64_t off;             /* where the rows go: the log's end when they were reserved */
    uint8_t *own;             /* copies of rows the memtable did not take (older versions) */
    int iovcnt;
    struct iovec iov[];
};

/* Jobs queued at most before writers wait for the writer thread (each names rows the
 * memtables hold anyway: the bound keeps the file's page-cache backlog short, not memory). */
#define STORE_VJ_MAX 64

/* Reserves the planned rows at the end of their logs (async: the writer appends them later).
 * *bytes gets the vector bytes reserved. Caller holds mu, as it did for the plan. */
static void vlog_reserve_locked(struct store *s, uint64_t *bytes)
{
    size_t vb = (size_t)s->o.dim * sizeof(float);
    *bytes = 0;
    for (size_t k = 0; k < s->nwplan; k++) {
        struct store_vlog *v = s->wplan[k].v;
        uint32_t cnt = s->wplan[k].count;
        v->nrows += cnt;
        s->st.vlog_bytes += (uint64_t)cnt * vb;
        *bytes += (uint64_t)cnt * vb;
    }
}

/*
 * Queues one job per log of the write just applied: its rows, in row order, from the
 * memtable's copies (contiguous rows of a chunk coalesced into one iovec), or from a copy of
 * the caller's vector for a record the memtable did not insert (an older version of an id:
 * its row exists all the same, and recovery checks it against the WAL's checksum). Caller
 * holds mu; on failure (ST_ENOMEM) the caller fails the store.
 */
static int vlog_enqueue_locked(struct store *s, const struct store_batch *b, uint64_t seq)
{
    size_t vb = (size_t)s->o.dim * sizeof(float);
    for (size_t k = 0; k < s->nwplan; k++) {
        struct store_vlog *v = s->wplan[k].v;
        uint32_t cnt = s->wplan[k].count;
        if (cnt == 0)
            continue; /* closed: its records are inline */
        size_t nown = 0;
        for (uint32_t i = 0; i < b->n; i++)
            nown += s->wrefs[i].vfile == v->number && s->wvec[i] == NULL;
        struct store_vjob *j = malloc(sizeof(*j) + cnt * sizeof(struct iovec));
        uint8_t *own = nown > 0 ? malloc(nown * vb) : NULL;
        if (j == NULL || (nown > 0 && own == NULL)) {
            free(j);
            free(own);
            return ST_ENOMEM;
        }
        *j = (struct store_vjob){.v = v, .m = s->mem, .seq = seq, .own = own};
        j->off = STORE_SEG_HEADER + (s->wplan[k].next - cnt) * vb;
        uint8_t *o = own;
        for (uint32_t i = 0; i < b->n; i++) {
            if (s->wrefs[i].vfile != v->number)
                continue;
            const uint8_t *src = (const uint8_t *)s->wvec[i];
            if (src == NULL) {
                memcpy(o, b->recs[i].vec, vb);
                src = o;
                o += vb;
            }
            struct iovec *last = j->iovcnt > 0 ? &j->iov[j->iovcnt - 1] : NULL;
            if (last != NULL && (const uint8_t *)last->iov_base + last->iov_len == src)
                last->iov_len += vb;
            else
                j->iov[j->iovcnt++] = (struct iovec){(void *)(uintptr_t)src, vb};
        }
        atomic_fetch_add(&v->refs, 1);
        store_mt_ref(s->mem);
        if (s->vj_tail != NULL)
            s->vj_tail->next = j;
        else
            s->vj_head = j;
        s->vj_tail = j;
        s->vj_n++;
    }
    pthread_cond_signal(&s->vw_cv);
    return ST_OK;
}

static void vjob_free(struct store_vjob *j)
{
    store_vlog_unref(j->v);
    store_mt_unref(j->m);
    free(j->own);
    free(j);
}

int store_vw_wait_locked(struct store *s, uint64_t seq)
{
    while (s->failed == ST_OK && s->vj_head != NULL && s->vj_head->seq <= seq)
        pthread_cond_wait(&s->vw_done_cv, &s->mu);
    return s->failed;
}

/* Bytes one append of the writer thread takes at most: queued jobs of one log whose rows
 * follow each other go to the file in one call, so that with O_DIRECT they go as whole 1 MiB
 * blocks (store_fs.c's stage) rather than one small direct write, or one buffered one, per
 * job. */
#define STORE_VW_COALESCE (8u << 20)

/* The jobs from the head that one append can take: same log, each starting where the previous
 * ends, within STORE_VW_COALESCE bytes (the first one always). *iovcnt gets their pieces.
 * Caller holds mu. */
static size_t vw_take_locked(const struct store *s, int *iovcnt)
{
    const struct store_vjob *h = s->vj_head;
    size_t n = 0, bytes = 0;
    uint64_t end = h->off;
    *iovcnt = 0;
    for (const struct store_vjob *j = h; j != NULL; j = j->next) {
        size_t jb = 0;
        for (int i = 0; i < j->iovcnt; i++)
            jb += j->iov[i].iov_len;
        if (n > 0 && (j->v != h->v || j->off != end || bytes + jb > STORE_VW_COALESCE ||
                      *iovcnt > INT32_MAX / 2 - j->iovcnt))
            break;
        n++;
        bytes += jb;
        end = j->off + jb;
        *iovcnt += j->iovcnt;
    }
    return n;
}

/*
 * The writer thread: appends the oldest jobs' rows with no lock held (the run of jobs at the
 * head that continue one log, in one call), then marks the log dirty (for the next group
 * commit) and removes the jobs, waking whoever waits for them. A failed append fails the store
 * (sticky: nothing after it becomes durable); the remaining jobs are then dropped unwritten.
 * It stops once told to and the queue is empty.
 */
void *store_vwriter_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-vlog-write"); /* by itself: a prctl (ing_pipe.c) */
    struct store *s = arg;
    struct iovec *iov = NULL;
    int iovcap = 0;
    /* The stages' second thread, made at the first direct append: the device writes one
     * megabyte while the next is copied and summed. Without it (out of memory) each is
     * copied, summed and written in turn. */
    struct store_fs_io *io = NULL;
    bool io_tried = false;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->vj_head == NULL && !s->stop)
            pthread_cond_wait(&s->vw_cv, &s->mu);
        struct store_vjob *j = s->vj_head;
        if (j == NULL)
            break; /* stop, and nothing left */
        int rc = s->failed, cnt;
        size_t n = vw_take_locked(s, &cnt);
        if (n > 1 && cnt > iovcap) {
            struct iovec *g = realloc(iov, (size_t)cnt * sizeof(*g));
            if (g != NULL) {
                iov = g;
                iovcap = cnt;
            } else {
                n = 1; /* the head's own pieces need no gathering */
                cnt = j->iovcnt;
            }
        }
        const struct iovec *w = j->iov;
        if (n > 1) { /* the jobs stay queued (and their memtables referenced) until written */
            int k = 0;
            size_t m = 0;
            for (const struct store_vjob *x = j; m < n; x = x->next, m++)
                for (int i = 0; i < x->iovcnt; i++)
                    iov[k++] = x->iov[i];
            w = iov;
        }
        pthread_mutex_unlock(&s->mu);
        if (rc == ST_OK && j->v->f->size != j->off)
            rc = ST_EINTERNAL; /* the log's end disagrees with the rows reserved before */
        if (!io_tried && rc == ST_OK && store_fs_is_direct(j->v->f)) {
            io_tried = true;
            if (store_fs_io_new(&io) != ST_OK)
                st_log_warn(LOG_COMP,
                            "vector-log writer: no I/O thread; appends copy and write in turn");
        }
        if (rc == ST_OK) /* summed as it is copied: before mu, as a seal looks once the jobs
                          * are gone */
            rc = store_vlog_append(j->v, j->off, w, cnt, io);
        pthread_mutex_lock(&s->mu);
        if (rc != ST_OK && s->failed == ST_OK)
            store_fail_locked(s, rc, "vector log write");
        if (rc == ST_OK)
            j->v->dirty = true;
        struct store_vjob *done = j;
        for (size_t m = 0; m < n; m++) {
            struct store_vjob *x = s->vj_head;
            s->vj_head = x->next;
            s->vj_n--;
        }
        if (s->vj_head == NULL)
            s->vj_tail = NULL;
        pthread_cond_broadcast(&s->vw_done_cv);
        pthread_mutex_unlock(&s->mu);
        for (size_t m = 0; m < n; m++) {
            struct store_vjob *next = done->next;
            vjob_free(done);
            done = next;
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(iov);
    store_fs_io_free(io);
    return NULL;
}

bool store_vw_pending_locked(const struct store *s, const struct store_vlog *v)
{
    for (const struct store_vjob *j = s->vj_head; j != NULL; j = j->next)
        if (j->v == v)
            return true;
    return false;
}

void store_vw_free_jobs(struct store *s)
{
    while (s->vj_head != NULL) {
        struct store_vjob *j = s->vj_head;
        s->vj_head = j->next;
        vjob_free(j);
    }
    s->vj_tail = NULL;
    s->vj_n = 0;
}

/* Decodes a WAL payload into records pointing into p (inline vectors copied into *vecs). */
int store_wal_decode(uint32_t dim, const uint8_t *p, size_t len, struct store_batch *b,
                     struct store_record **recs, float **vecs, struct store_vref **refs)
{
    if (len < STORE_WAL_BATCH_HEADER || (p[0] != STORE_WAL_BATCH && p[0] != STORE_WAL_BATCH_REFS))
        return ST_ECORRUPT;
    bool with_refs = p[0] == STORE_WAL_BATCH_REFS;
    b->partition = (int32_t)st_get_le32(p + 1);
    b->offset = (int64_t)st_get_le64(p + 5);
    b->n = st_get_le32(p + 13);
    /* The smallest record is 28 bytes (op, id length, a 1-byte id, ts and window, meta
     * length): n is bounded by what the payload can hold before anything is sized by it. */
    if (b->n == 0 || b->n > (len - STORE_WAL_BATCH_HEADER) / 28)
        return ST_ECORRUPT;
    struct store_record *r = calloc(b->n, sizeof(*r));
    float *v = calloc((size_t)b->n * dim, sizeof(float));
    struct store_vref *f = calloc(b->n, sizeof(*f));
    if (r == NULL || v == NULL || f == NULL) {
        free(r);
        free(v);
        free(f);
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
        if (r[i].window_end <= r[i].window || r[i].ts < r[i].window || r[i].ts >= r[i].window_end)
            goto bad; /* as store_batch_validate: a record lies inside the window it names */
        o += 24;
        if ((c = st_get_varint(p + o, len - o, &ml)) == 0)
            goto bad;
        o += c;
        if (ml > STORE_META_MAX || len - o < ml)
            goto bad;
        r[i].meta = ml ? p + o : NULL;
        r[i].meta_len = (uint32_t)ml;
        o += ml;
        if (r[i].op != STORE_OP_UPSERT)
            continue;
        float *dst = v + (size_t)i * dim;
        r[i].vec = dst;
        if (with_refs) {
            if (o >= len || p[o] > STORE_WAL_VEC_REF)
                goto bad;
            if (p[o++] == STORE_WAL_VEC_REF) {
                if (len - o < 16)
                    goto bad;
                f[i].vfile = st_get_le64(p + o);
                f[i].row = st_get_le32(p + o + 8);
                f[i].sum = st_get_le32(p + o + 12);
                if (f[i].vfile == 0)
                    goto bad;
                o += 16;
                continue;
            }
        }
        if (len - o < (size_t)dim * 4)
            goto bad;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(dst, p + o, (size_t)dim * 4);
#else
        for (uint32_t d = 0; d < dim; d++)
            dst[d] = st_get_f32(p + o + 4 * d);
#endif
        o += (size_t)dim * 4;
    }
    if (o != len)
        goto bad;
    b->recs = r;
    *recs = r;
    *vecs = v;
    *refs = f;
    return ST_OK;
bad:
    free(r);
    free(v);
    free(f);
    return ST_ECORRUPT;
}

/* Applies a batch to the memtable and marks. Caller holds mu. */
int store_apply_locked(struct store *s, const struct store_batch *b, const struct store_vref *refs,
                       const float **vecs)
{
    for (uint32_t i = 0; i < b->n; i++) {
        int rc = store_mt_add(s->mem, &b->recs[i], b->partition, b->offset, i,
                              refs != NULL ? &refs[i] : NULL, vecs != NULL ? &vecs[i] : NULL);
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

/*
 * Moves the active memtable to the frozen list and rolls the WAL, so that the frozen memtable
 * is covered exactly by WAL files < the new one. Caller holds sync_mu (no concurrent fsync or
 * roll), not mu.
 *
 * The I/O runs without mu: the new file is created (directory entry fsynced) first; then, with
 * writers parked on roll_cv, the old file is fsynced and the two are swapped under mu. Writers
 * must not append to the new file before the old one is durable: after a power loss recovery
 * would find a torn older file followed by newer records (refused as corruption).
 */
int store_freeze(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->failed;
    if (rc != ST_OK || s->mem->n == 0) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    uint64_t n = s->mf.next_file++;
    pthread_mutex_unlock(&s->mu);

    struct store_file *f = NULL;
    struct store_memtable *m = NULL;
    struct store_marks snap = {0};
    rc = wal_create(s, n, &f);
    if (rc != ST_OK) {
        pthread_mutex_lock(&s->mu);
        rc = store_fail_locked(s, rc, "wal roll");
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    if ((m = store_mt_new(s->o.dim, n, s->o.memtable_size)) == NULL)
        goto nomem;
    /* Most of the logs' dirty rows are fsynced before writers are held (they keep appending
     * meanwhile): inside the roll only what they add during this fsync remains. */
    pthread_mutex_lock(&s->mu);
    struct store_vlog **early = NULL;
    size_t nearly = 0;
    rc = store_vlog_capture_dirty_locked(s, &early, &nearly);
    pthread_mutex_unlock(&s->mu);
    if (rc == ST_OK)
        rc = store_vlog_sync_captured(early, nearly);
    if (rc != ST_OK) {
        store_fs_close(f);
        store_mt_unref(m);
        pthread_mutex_lock(&s->mu);
        rc = store_fail_locked(s, rc, "vector log fsync at roll");
        pthread_mutex_unlock(&s->mu);
        return rc;
    }

    pthread_mutex_lock(&s->mu);
    struct store_memtable **fz = realloc(s->frozen, (s->nfrozen + 1) * sizeof(*fz));
    if (fz == NULL || store_marks_copy(&snap, &s->applied) != ST_OK) {
        pthread_mutex_unlock(&s->mu);
        goto nomem;
    }
    s->frozen = fz;
    s->rolling = true; /* from here no append until the swap */
    uint64_t seq = s->written_seq, bytes = s->wal_appended;
    bool publish = s->durable_seq < seq;
    struct store_file *old = s->wal_file;
    struct store_vlog **logs = NULL;
    size_t nlogs = 0;
    /* The frozen memtable's rows are all in their logs before they are fsynced (and before a
     * flush can name them in a run): the writer thread finishes what it holds. */
    rc = store_vw_wait_locked(s, seq);
    if (rc == ST_OK)
        rc = store_vlog_capture_dirty_locked(s, &logs, &nlogs);
    pthread_mutex_unlock(&s->mu);
    int64_t t0 = st_clock_mono_ns(NULL);

    /* Always, also with wal_sync none: a file that stops being the last must be complete,
     * and so must the rows its records name (recovery refuses a bad row before the last file). */
    if (rc == ST_OK)
        rc = store_vlog_sync_captured(logs, nlogs);
    if (rc == ST_OK)
        rc = store_fs_sync(old, "store.wal.roll_fsync");

    pthread_mutex_lock(&s->mu);
    if (rc == ST_OK)
        rc = s->failed;
    if (rc == ST_OK) {
        if (publish)
            durable_publish_locked(s, seq, bytes, t0, &snap);
        old = wal_install(s, f, n);
        f = NULL;
        s->frozen[s->nfrozen++] = s->mem;
        s->frozen_total++;
        s->mem = m;
        m = NULL;
        pthread_cond_broadcast(&s->work_cv);
    } else {
        /* After a failed fsync the page cache cannot be trusted: stop. */
        store_fail_locked(s, rc, "wal fsync at roll");
        old = NULL;
    }
    s->rolling = false;
    pthread_cond_broadcast(&s->roll_cv);
    pthread_mutex_unlock(&s->mu);
    store_fs_close(old);
    store_fs_close(f); /* a failed roll: the empty file is harmless, recovery skips it */
    if (m != NULL)
        store_mt_unref(m);
    store_marks_free(&snap);
    return rc;
nomem:
    store_fs_close(f);
    if (m != NULL)
        store_mt_unref(m);
    store_marks_free(&snap);
    return ST_ENOMEM;
}

int store_write(struct store *s, const struct store_batch *b, bool *applied)
{
    if (applied != NULL)
        *applied = false;
    if (s->o.read_only)
        return ST_EINVAL;
    int rc = store_batch_validate(s, b);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->failed != ST_OK) {
            rc = s->failed;
            goto out;
        }
        if (s->rolling) {
            int64_t w0 = st_clock_mono_ns(NULL);
            s->st.roll_waits++;
            pthread_cond_wait(&s->roll_cv, &s->mu);
            s->st.roll_wait_ns += (uint64_t)(st_clock_mono_ns(NULL) - w0);
            continue;
        }
        int64_t mark;
        if (b->partition >= 0 && store_marks_get(&s->applied, b->partition, &mark) &&
            b->offset <= mark) {
            rc = ST_OK; /* a replay: already applied */
            goto out;
        }
        if (s->vw_async && s->vj_n >= STORE_VJ_MAX) {
            int64_t w0 = st_clock_mono_ns(NULL);
            s->st.vlog_waits++;
            pthread_cond_wait(&s->vw_done_cv, &s->mu); /* the writer thread is behind */
            s->st.vlog_wait_ns += (uint64_t)(st_clock_mono_ns(NULL) - w0);
            continue;
        }
        if (s->mem->bytes < s->o.memtable_size) {
            if (s->o.inline_vectors)
                break;
            bool create;
            int64_t cw, cwe;
            if ((rc = vlog_plan_locked(s, b, &create, &cw, &cwe)) != ST_OK)
                goto out;
            if (!create)
                break;
            /* The window's first vector: its log first (file and manifest edit, no mu), unless
             * twcs's tick created it ahead (store_prepare_window_log). */
            pthread_mutex_unlock(&s->mu);
            int64_t w0 = st_clock_mono_ns(NULL);
            rc = store_vlog_create(s, cw, cwe);
            pthread_mutex_lock(&s->mu);
            s->st.vlog_creates++;
            s->st.vlog_create_ns += (uint64_t)(st_clock_mono_ns(NULL) - w0);
            if (rc != ST_OK)
                goto out;
            continue;
        }
        if (s->nfrozen >= s->o.max_frozen) {
            rc = ST_EAGAIN; /* flushes are behind: back-pressure */
            goto out;
        }
        /* Freeze: take the locks in order, then look again (another writer may have). */
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->sync_mu);
        pthread_mutex_lock(&s->mu);
        bool still = s->failed == ST_OK && s->mem->bytes >= s->o.memtable_size &&
                     s->nfrozen < s->o.max_frozen;
        pthread_mutex_unlock(&s->mu);
        if (still)
            rc = store_freeze(s);
        pthread_mutex_unlock(&s->sync_mu);
        pthread_mutex_lock(&s->mu);
        if (rc != ST_OK)
            goto out;
    }
    size_t len;
    int iovcnt;
    uint64_t vbytes = 0;
    const struct store_vref *refs = s->o.inline_vectors ? NULL : s->wrefs;
    if (refs != NULL && s->vw_async) {
        vlog_reserve_locked(s, &vbytes);
    } else if (refs != NULL && (rc = vlog_append_locked(s, b, &vbytes)) != ST_OK) {
        store_fail_locked(s, rc, "vector log write");
        goto out;
    }
    if ((rc = wal_encode(s, b, refs, &iovcnt, &len)) != ST_OK) {
        /* Rows reserved in the vector logs with no job to write them would leave a hole that
         * every later job and the seal's extend would trip over: fail instead. */
        if (refs != NULL && s->vw_async)
            store_fail_locked(s, rc, "wal encode after reserving vector-log rows");
        goto out;
    }
    rc = store_log_appendv(&s->wal, s->wiov, iovcnt);
    if (rc != ST_OK) {
        store_fail_locked(s, rc, "wal write");
        goto out;
    }
    s->st.wal_bytes_written += len;
    s->st.wal_live_bytes += len;
    s->st.vlog_bytes_written += vbytes;
    s->st.bytes_ingested += len + vbytes;
    if ((rc = store_apply_locked(s, b, refs, refs != NULL ? s->wvec : NULL)) != ST_OK) {
        store_fail_locked(s, rc, "memtable insert");
        goto out;
    }
    uint64_t seq = ++s->written_seq;
    if (refs != NULL && s->vw_async && (rc = vlog_enqueue_locked(s, b, seq)) != ST_OK) {
        store_fail_locked(s, rc, "vector log queue");
        goto out;
    }
    s->wal_appended += len + vbytes; /* group commit counts the log rows it must fsync too */
    if (applied != NULL)
        *applied = true;
    if (s->o.wal_sync == STORE_SYNC_NONE) {
        durable_publish_locked(s, seq, s->wal_appended, st_clock_mono_ns(NULL), &s->applied);
    } else if (s->o.wal_sync == STORE_SYNC_BATCH) {
        /* Wake the syncer only to arm its deadline (first unsynced append) or when enough
         * bytes wait; other appends ride along with the fsync already due. */
        bool first = s->unsynced_since_ns == 0;
        if (first)
            s->unsynced_since_ns = st_clock_mono_ns(NULL);
        uint64_t waiting = s->wal_appended - s->wal_synced;
        if (first || (waiting >= STORE_SYNC_BYTES && waiting - len - vbytes < STORE_SYNC_BYTES))
            pthread_cond_broadcast(&s->work_cv);
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
