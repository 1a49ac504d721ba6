#include "store_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <time.h>
#include <unistd.h>

#include "st_fault.h"

/*
 * Simulation state. For each file path: the size at its last fsync (bytes beyond it are lost
 * in a crash). For each directory: the operations since its last fsync, undone in reverse
 * order by a crash. Overwritten and unlinked files are kept as hidden copies until the
 * directory is synced so that the undo can restore them.
 */
struct sim_file {
    char *path;
    uint64_t synced;
};

enum sim_op_kind { SIM_CREATE, SIM_RENAME, SIM_UNLINK, SIM_MKDIR };

struct sim_op {
    enum sim_op_kind kind;
    char *dir;    /* directory whose fsync makes the op durable */
    char *path;   /* created / rename target / unlinked / made dir */
    char *from;   /* rename source */
    char *backup; /* copy of what the op destroyed (overwritten target, unlinked file) */
};

struct store_fs {
    pthread_mutex_t lock;
    struct sim_file *files;
    size_t nfiles, capfiles;
    struct sim_op *ops;
    size_t nops, capops;
    uint64_t backup_seq;
    bool dead;                 /* after sim_crash: nothing reaches the disk */
    _Atomic int sync_delay_ms; /* slow disks: every fsync first waits this long */
};

/*
 * With a simulated fs every operation runs under its lock, so none can straddle a simulated
 * crash (a write landing after the truncation would leave a hole no power loss produces).
 */
static bool sim_enter(struct store_fs *fs)
{
    if (fs == NULL)
        return true;
    pthread_mutex_lock(&fs->lock);
    if (fs->dead) {
        pthread_mutex_unlock(&fs->lock);
        return false;
    }
    return true;
}

static void sim_leave(struct store_fs *fs)
{
    if (fs != NULL)
        pthread_mutex_unlock(&fs->lock);
}

static char *dir_of(const char *path)
{
    char *tmp = strdup(path);
    if (tmp == NULL)
        return NULL;
    char *d = strdup(dirname(tmp));
    free(tmp);
    return d;
}

static struct sim_file *sim_file_get(struct store_fs *fs, const char *path, bool create)
{
    for (size_t i = 0; i < fs->nfiles; i++)
        if (strcmp(fs->files[i].path, path) == 0)
            return &fs->files[i];
    if (!create)
        return NULL;
    if (fs->nfiles == fs->capfiles) {
        size_t cap = fs->capfiles ? fs->capfiles * 2 : 16;
        struct sim_file *n = realloc(fs->files, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        fs->files = n;
        fs->capfiles = cap;
    }
    struct sim_file *sf = &fs->files[fs->nfiles];
    sf->path = strdup(path);
    if (sf->path == NULL)
        return NULL;
    sf->synced = 0;
    fs->nfiles++;
    return sf;
}

static void sim_file_forget(struct store_fs *fs, const char *path)
{
    for (size_t i = 0; i < fs->nfiles; i++) {
        if (strcmp(fs->files[i].path, path) == 0) {
            free(fs->files[i].path);
            fs->files[i] = fs->files[--fs->nfiles];
            return;
        }
    }
}

static int sim_op_add(struct store_fs *fs, enum sim_op_kind kind, const char *path,
                      const char *from, const char *backup)
{
    if (fs->nops == fs->capops) {
        size_t cap = fs->capops ? fs->capops * 2 : 16;
        struct sim_op *n = realloc(fs->ops, cap * sizeof(*n));
        if (n == NULL)
            return ST_ENOMEM;
        fs->ops = n;
        fs->capops = cap;
    }
    struct sim_op *op = &fs->ops[fs->nops];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    op->dir = dir_of(path);
    op->path = strdup(path);
    op->from = from ? strdup(from) : NULL;
    op->backup = backup ? strdup(backup) : NULL;
    if (op->dir == NULL || op->path == NULL || (from && !op->from) || (backup && !op->backup)) {
        free(op->dir);
        free(op->path);
        free(op->from);
        free(op->backup);
        return ST_ENOMEM;
    }
    fs->nops++;
    return ST_OK;
}

static void sim_op_free(struct sim_op *op)
{
    free(op->dir);
    free(op->path);
    free(op->from);
    free(op->backup);
}

/* A hidden name in the same directory for a backup copy. */
static char *sim_backup_name(struct store_fs *fs, const char *path)
{
    char *b = NULL;
    if (asprintf(&b, "%s.simbak%llu", path, (unsigned long long)++fs->backup_seq) < 0)
        return NULL;
    return b;
}

static int copy_file(const char *from, const char *to)
{
    uint8_t *buf;
    size_t len;
    int rc = store_fs_read_all(from, &buf, &len, SIZE_MAX);
    if (rc != ST_OK)
        return rc;
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(buf);
        return st_from_errno(errno);
    }
    ssize_t w = write(fd, buf, len);
    close(fd);
    free(buf);
    return w == (ssize_t)len ? ST_OK : ST_EIO;
}

/* ---- files -------------------------------------------------------------------------------- */

static int file_open(struct store_fs *fs, const char *path, int flags, struct store_file **out,
                     const char *site)
{
    *out = NULL;
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc;
    if (!sim_enter(fs))
        return ST_EIO;
    bool existed = access(path, F_OK) == 0;
    struct store_file *f = NULL;
    int fd = open(path, flags | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = st_from_errno(errno);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = st_from_errno(errno);
        close(fd);
        goto out;
    }
    f = calloc(1, sizeof(*f));
    char *p = strdup(path);
    if (f == NULL || p == NULL) {
        free(f);
        free(p);
        f = NULL;
        close(fd);
        rc = ST_ENOMEM;
        goto out;
    }
    f->fd = fd;
    f->dfd = -1;
    f->size = (uint64_t)st.st_size;
    f->path = p;
    f->fs = fs;
    if (fs != NULL) {
        struct sim_file *sf = sim_file_get(fs, path, false);
        if (sf == NULL) {
            sf = sim_file_get(fs, path, true);
            if (sf != NULL)
                sf->synced = existed ? f->size : 0;
        }
        if (!existed && sf != NULL)
            rc = sim_op_add(fs, SIM_CREATE, path, NULL, NULL);
        if (sf == NULL || rc != ST_OK) {
            store_fs_close(f);
            f = NULL;
            rc = ST_ENOMEM;
        }
    }
out:
    sim_leave(fs);
    *out = f;
    return rc;
}

int store_fs_open_append(struct store_fs *fs, const char *path, struct store_file **out,
                         const char *site)
{
    return file_open(fs, path, O_RDWR | O_CREAT, out, site);
}

int store_fs_create(struct store_fs *fs, const char *path, struct store_file **out,
                    const char *site)
{
    return file_open(fs, path, O_RDWR | O_CREAT | O_EXCL, out, site);
}

int store_fs_write(struct store_file *f, const void *buf, size_t len, const char *site)
{
    struct iovec v = {(void *)(uintptr_t)buf, len}; /* pwritev does not write through it */
    return store_fs_writev(f, &v, 1, site);
}

/* Pieces per pwritev call: the kernel's limit (IOV_MAX, 1024 on Linux), so a batch of small
 * vectors is one system call, not one per 64 pieces. */
#define STORE_FS_IOV_BATCH 1024

/* Writes up to limit bytes of iov at the file's end through the page cache; *done gets the
 * bytes written. */
static int buffered_writev(struct store_file *f, const struct iovec *iov, int iovcnt, size_t limit,
                           size_t *done_out)
{
    int rc = ST_OK;
    size_t done = 0, skip = 0; /* skip: bytes of iov[i] already written */
    int i = 0;
    while (done < limit) {
        struct iovec v[STORE_FS_IOV_BATCH];
        int n = 0;
        size_t want = 0;
        for (int k = i; k < iovcnt && n < STORE_FS_IOV_BATCH && want < limit - done; k++) {
            size_t off = k == i ? skip : 0, l = iov[k].iov_len - off;
            if (l > limit - done - want)
                l = limit - done - want;
            if (l == 0)
                continue;
            v[n++] = (struct iovec){(uint8_t *)iov[k].iov_base + off, l};
            want += l;
        }
        ssize_t w = pwritev(f->fd, v, n, (off_t)(f->size + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = st_from_errno(errno);
            break;
        }
        if (w == 0) { /* no progress and no error: never loop on it */
            rc = ST_EIO;
            break;
        }
        done += (size_t)w;
        for (size_t adv = (size_t)w; adv > 0 || (i < iovcnt && iov[i].iov_len == skip);) {
            size_t l = iov[i].iov_len - skip;
            if (adv < l) {
                skip += adv;
                adv = 0;
            } else {
                adv -= l;
                i++;
                skip = 0;
            }
        }
    }
    *done_out = done;
    return rc;
}

/* ---- direct appends ------------------------------------------------------------------------ */

/* Offsets, lengths and buffer addresses of O_DIRECT writes are multiples of this: the largest
 * logical block size in use (4 KiB sectors), so no device needs a probe. */
#define DIO_ALIGN 4096u
/* Bytes staged per O_DIRECT write: large enough that the device streams. The stage belongs to
 * the appending thread (one per store's vector-log writer), not to the file, so that an open
 * log costs one 4 KiB block of memory however many windows are open. */
#define DIO_STAGE (1u << 20)
/* Appends smaller than this (with the partial block before them) go through the page cache
 * even on a direct file: an O_DIRECT write waits for the device, and before it the kernel
 * writes back the partial block the previous append left in the cache — ~130 µs for a 4 KiB
 * append against ~2 µs buffered on the VMs here. Large appends are where the kernel's copy
 * costs more than the wait (docs/benchmarks.md, issue 14). */
#define DIO_MIN (256u << 10)

static pthread_key_t stage_key;
static pthread_once_t stage_once = PTHREAD_ONCE_INIT;
static bool stage_key_ok;

static void stage_key_make(void)
{
    stage_key_ok = pthread_key_create(&stage_key, free) == 0;
}

/* The calling thread's stage (NULL when it cannot be had: the append goes the plain way). */
static uint8_t *thread_stage(void)
{
    pthread_once(&stage_once, stage_key_make);
    if (!stage_key_ok)
        return NULL;
    void *p = pthread_getspecific(stage_key);
    if (p == NULL) {
        if (posix_memalign(&p, DIO_ALIGN, DIO_STAGE) != 0)
            return NULL;
        if (pthread_setspecific(stage_key, p) != 0) {
            free(p);
            return NULL;
        }
    }
    return p;
}

static void direct_off(struct store_file *f)
{
    if (f->dfd >= 0)
        close(f->dfd);
    f->dfd = -1;
    free(f->tailblk);
    f->tailblk = NULL;
    f->tail = 0;
}

/* Reads the file's last partial block (the bytes a direct append writes again) into tailblk. */
static bool direct_load_tail(struct store_file *f)
{
    size_t tail = (size_t)(f->size % DIO_ALIGN);
    for (size_t got = 0; got < tail;) {
        ssize_t r = pread(f->fd, f->tailblk + got, tail - got, (off_t)(f->size - tail + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    f->tail = tail;
    return true;
}

/* After done bytes of iov were appended through the page cache (size already advanced):
 * tailblk again holds the file's last partial block, from the old tail and the bytes of iov. */
static void tail_after(struct store_file *f, const struct iovec *iov, int iovcnt, size_t done)
{
    /* Either no block boundary was crossed (done < nt: the old tail stays in front, nt =
     * old_tail + done) or the new tail is the last nt bytes appended. */
    size_t nt = (size_t)(f->size % DIO_ALIGN), from_iov = done < nt ? done : nt;
    size_t skip = done - from_iov, at = nt - from_iov; /* at: the old tail's length if kept */
    for (int i = 0; i < iovcnt && at < nt; i++) {
        size_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        size_t c = l - skip < nt - at ? l - skip : nt - at;
        memcpy(f->tailblk + at, (const uint8_t *)iov[i].iov_base + skip, c);
        at += c;
        skip = 0;
    }
    f->tail = nt;
}

bool store_fs_direct(struct store_file *f)
{
    if (f->dfd >= 0)
        return true;
    struct statfs sfs;
    if (ST_FAULT("store.fs.direct") != 0 || fstatfs(f->fd, &sfs) != 0 ||
        sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC)
        return false; /* memory file systems (O_DIRECT since Linux 6.6): no cache to bypass */
    void *blk = NULL;
    if (posix_memalign(&blk, DIO_ALIGN, DIO_ALIGN) != 0)
        return false;
    /* The same file as f->fd, whatever became of its path meanwhile. */
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", f->fd);
    int dfd = open(self, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT) /* no /proc (a minimal chroot): the path, as opened */
        dfd = open(f->path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (dfd < 0) { /* EINVAL: the file system has no O_DIRECT */
        free(blk);
        return false;
    }
    f->dfd = dfd;
    f->tailblk = blk;
    if (!direct_load_tail(f)) {
        direct_off(f);
        return false;
    }
    return true;
}

bool store_fs_is_direct(const struct store_file *f)
{
    return f->dfd >= 0;
}

static int pwrite_full(int fd, const uint8_t *b, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, b, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return st_from_errno(errno);
        if (w == 0)
            return ST_EIO;
        b += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return ST_OK;
}

/* The O_DIRECT part of writing len aligned bytes of stage at an aligned offset: *done gets the
 * bytes the device took, *refused whether it stopped taking them (a refused alignment, EINVAL,
 * or a short or empty write: the rest, unaligned now, must go through the page cache). Returns
 * 0 or the errno of a failed write. Touches nothing of the file's but the descriptor, so that
 * the I/O thread can run it (fault site store.fs.dio: ST_EINVAL is a refusal, other codes a
 * failed write). */
static int dio_pwrite(int dfd, const uint8_t *stage, size_t len, uint64_t off, size_t *done_out,
                      bool *refused)
{
    size_t done = 0;
    *refused = false;
    int fault = ST_FAULT("store.fs.dio");
    if (fault == ST_EINVAL)
        *refused = true;
    else if (fault != 0)
        return fault == ST_ENOSPC ? ENOSPC : EIO;
    while (!*refused && done < len) {
        ssize_t w = pwrite(dfd, stage + done, len - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EINVAL) {
            *done_out = done;
            return errno;
        }
        if (w <= 0)
            *refused = true;
        else if ((done += (size_t)w) < len)
            *refused = true; /* short */
    }
    *done_out = done;
    return 0;
}

/* After dio_pwrite: direct appends stop for a file whose device stopped taking them (tailblk
 * stays until the end of this append), and what it left undone goes through the page cache. */
static int dio_finish(struct store_file *f, const uint8_t *stage, size_t len, uint64_t off, int err,
                      size_t done, bool refused)
{
    if (err != 0)
        return st_from_errno(err);
    if (refused && f->dfd >= 0) {
        close(f->dfd);
        f->dfd = -1;
    }
    return pwrite_full(f->fd, stage + done, len - done, off + done);
}

/* Writes len aligned bytes of stage at an aligned offset, straight to the device while the
 * file takes direct writes, through the page cache otherwise or for what the device refused. */
static int direct_write(struct store_file *f, const uint8_t *stage, size_t len, uint64_t off)
{
    size_t done = 0;
    bool refused = f->dfd < 0;
    int err = refused ? 0 : dio_pwrite(f->dfd, stage, len, off, &done, &refused);
    return dio_finish(f, stage, len, off, err, done, refused);
}

/* ---- the I/O thread ---- */

struct store_fs_io {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *stage[2];
    int cur; /* the stage the appender fills */
    /* The write in flight (mu): requested by the appender, done by the thread. */
    bool busy, stop;
    int dfd;
    const uint8_t *buf;
    size_t len, done;
    uint64_t off;
    int err;
    bool refused;
};

static void *io_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-dio");
    struct store_fs_io *io = arg;
    pthread_mutex_lock(&io->mu);
    for (;;) {
        while (!io->stop && !(io->busy && io->dfd >= 0))
            pthread_cond_wait(&io->cv, &io->mu);
        if (io->stop)
            break;
        int dfd = io->dfd;
        const uint8_t *buf = io->buf;
        size_t len = io->len, done = 0;
        uint64_t off = io->off;
        pthread_mutex_unlock(&io->mu);
        bool refused;
        int err = dio_pwrite(dfd, buf, len, off, &done, &refused);
        pthread_mutex_lock(&io->mu);
        io->done = done;
        io->err = err;
        io->refused = refused;
        io->dfd = -1; /* done: the appender collects it */
        pthread_cond_broadcast(&io->cv);
    }
    pthread_mutex_unlock(&io->mu);
    return NULL;
}

int store_fs_io_new(struct store_fs_io **out)
{
    *out = NULL;
    if (ST_FAULT("store.fs.io") != 0)
        return ST_ENOMEM;
    struct store_fs_io *io = calloc(1, sizeof(*io));
    if (io == NULL)
        return ST_ENOMEM;
    void *p[2] = {NULL, NULL};
    bool started = false;
    if (posix_memalign(&p[0], DIO_ALIGN, DIO_STAGE) == 0 &&
        posix_memalign(&p[1], DIO_ALIGN, DIO_STAGE) == 0) {
        io->stage[0] = p[0];
        io->stage[1] = p[1];
        io->dfd = -1;
        pthread_mutex_init(&io->mu, NULL);
        pthread_cond_init(&io->cv, NULL);
        started = pthread_create(&io->thread, NULL, io_main, io) == 0;
        if (!started) {
            pthread_cond_destroy(&io->cv);
            pthread_mutex_destroy(&io->mu);
        }
    }
    if (!started) {
        free(p[0]);
        free(p[1]);
        free(io);
        return ST_ENOMEM;
    }
    *out = io;
    return ST_OK;
}

void store_fs_io_free(struct store_fs_io *io)
{
    if (io == NULL)
        return;
    pthread_mutex_lock(&io->mu);
    io->stop = true;
    pthread_cond_broadcast(&io->cv);
    pthread_mutex_unlock(&io->mu);
    pthread_join(io->thread, NULL);
    pthread_cond_destroy(&io->cv);
    pthread_mutex_destroy(&io->mu);
    free(io->stage[0]);
    free(io->stage[1]);
    free(io);
}

/* Waits for the write in flight (if any) and finishes it (dio_finish). Returns its result. */
static int io_collect(struct store_fs_io *io, struct store_file *f)
{
    pthread_mutex_lock(&io->mu);
    bool had = io->busy;
    while (io->busy && io->dfd >= 0)
        pthread_cond_wait(&io->cv, &io->mu);
    io->busy = false;
    const uint8_t *buf = io->buf;
    size_t len = io->len, done = io->done;
    uint64_t off = io->off;
    int err = io->err;
    bool refused = io->refused;
    pthread_mutex_unlock(&io->mu);
    return had ? dio_finish(f, buf, len, off, err, done, refused) : ST_OK;
}

/* Hands stage[cur] (len aligned bytes for off) to the thread after finishing the write before
 * it (every byte before off is then in the file: *landed = off), and makes the other stage the
 * one to fill. A file that no longer takes direct writes is written here, through the page
 * cache (*landed stays at off if that fails). */
static int io_submit(struct store_fs_io *io, struct store_file *f, size_t len, uint64_t off,
                     uint64_t *landed)
{
    int rc = io_collect(io, f);
    if (rc != ST_OK)
        return rc;
    *landed = off;
    const uint8_t *buf = io->stage[io->cur];
    if (f->dfd < 0) {
        rc = pwrite_full(f->fd, buf, len, off);
    } else {
        pthread_mutex_lock(&io->mu);
        io->busy = true;
        io->dfd = f->dfd;
        io->buf = buf;
        io->len = len;
        io->off = off;
        io->done = 0;
        io->err = 0;
        io->refused = false;
        pthread_cond_broadcast(&io->cv);
        pthread_mutex_unlock(&io->mu);
    }
    io->cur ^= 1;
    return rc;
}

/* Bytes copied into a stage between two calls of the seen function: small enough that they
 * are still in the core's cache when it reads them. */
#define SEEN_PIECE (64u << 10)

/* Appends up to limit bytes of iov through a stage (the I/O thread's two, or the calling
 * thread's one), after the file's last partial block (see store_fs_direct); *done gets the
 * bytes of iov known to be in the file. ST_EAGAIN (nothing done) when there is no stage. On
 * failure direct appends stop (the last block's contents are no longer known for certain). */
static int direct_writev(struct store_file *f, const struct iovec *iov, int iovcnt, size_t limit,
                         const struct store_fs_append *how, size_t *done_out)
{
    *done_out = 0;
    struct store_fs_io *io = how->io;
    uint8_t *stage = ST_FAULT("store.fs.stage") != 0 ? NULL
                     : io != NULL                    ? io->stage[io->cur]
                                                     : thread_stage();
    if (stage == NULL)
        return ST_EAGAIN;
    uint64_t end0 = f->size;
    uint64_t base = end0 - f->tail; /* aligned: where stage[0] goes */
    uint64_t landed = base;         /* every byte before this is in the file */
    memcpy(stage, f->tailblk, f->tail);
    size_t fill = f->tail, taken = 0;
    int rc = ST_OK;
    for (int i = 0; i < iovcnt && taken < limit && rc == ST_OK; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len < limit - taken ? iov[i].iov_len : limit - taken;
        while (left > 0) {
            size_t c = DIO_STAGE - fill < left ? DIO_STAGE - fill : left;
            if (how->seen != NULL && c > SEEN_PIECE)
                c = SEEN_PIECE;
            memcpy(stage + fill, p, c);
            if (how->seen != NULL)
                how->seen(how->seen_arg, stage + fill, c);
            fill += c;
            p += c;
            left -= c;
            taken += c;
            if (fill < DIO_STAGE)
                continue;
            if (io != NULL) { /* the device writes this stage while the next one fills */
                if ((rc = io_submit(io, f, DIO_STAGE, base, &landed)) != ST_OK)
                    break;
                stage = io->stage[io->cur];
            } else {
                if ((rc = direct_write(f, stage, DIO_STAGE, base)) != ST_OK)
                    break;
                landed = base + DIO_STAGE;
            }
            base += DIO_STAGE;
            fill = 0;
        }
    }
    if (io != NULL) {
        int crc = io_collect(io, f);
        if (rc == ST_OK && (rc = crc) == ST_OK)
            landed = base;
    }
    size_t full = fill & ~(size_t)(DIO_ALIGN - 1);
    if (rc == ST_OK && full > 0)
        rc = direct_write(f, stage, full, base);
    if (rc == ST_OK && fill > full)
        rc = pwrite_full(f->fd, stage + full, fill - full, base + full);
    if (rc != ST_OK) {
        /* What is certainly there: the blocks written before the failing one, and never less
         * than before the call. */
        *done_out = landed > end0 ? (size_t)(landed - end0) : 0;
        direct_off(f);
        return rc;
    }
    memcpy(f->tailblk, stage + full, fill - full);
    f->tail = fill - full;
    if (f->dfd < 0) /* refused on the way: later appends go the plain way */
        direct_off(f);
    *done_out = taken;
    return ST_OK;
}

/* Calls seen over the first n bytes of iov. */
static void seen_iov(const struct store_fs_append *how, const struct iovec *iov, int iovcnt,
                     size_t n)
{
    for (int i = 0; i < iovcnt && n > 0; i++) {
        size_t l = iov[i].iov_len < n ? iov[i].iov_len : n;
        if (l > 0)
            how->seen(how->seen_arg, iov[i].iov_base, l);
        n -= l;
    }
}

int store_fs_writev_how(struct store_file *f, const struct iovec *iov, int iovcnt,
                        const struct store_fs_append *how, const char *site)
{
    static const struct store_fs_append plain = {0};
    if (how == NULL)
        how = &plain;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    int rc = ST_FAULT(site);
    size_t limit = len;
    if (rc == ST_ENOSPC || rc == ST_EIO)
        limit = len / 2; /* a short write, as a full disk produces */
    else if (rc != 0)
        return rc;
    if (!sim_enter(f->fs))
        return ST_EIO;
    size_t done = 0;
    int wrc = f->dfd >= 0 && f->tail + limit >= DIO_MIN
                  ? direct_writev(f, iov, iovcnt, limit, how, &done)
                  : ST_EAGAIN;
    bool buffered = wrc == ST_EAGAIN; /* not direct, a small append, or no stage here */
    if (buffered) {
        wrc = buffered_writev(f, iov, iovcnt, limit, &done);
        if (f->dfd >= 0 && wrc != ST_OK)
            direct_off(f); /* the last block is no longer known for certain */
        if (how->seen != NULL)
            seen_iov(how, iov, iovcnt, done);
    }
    if (rc == ST_OK)
        rc = wrc;
    /* Relaxed atomic: a group commit's fsync reads the size on another thread (below). */
    __atomic_store_n(&f->size, f->size + done, __ATOMIC_RELAXED);
    if (buffered && f->dfd >= 0) /* a direct file's last block, kept from the bytes written */
        tail_after(f, iov, iovcnt, done);
    sim_leave(f->fs);
    return rc;
}

int store_fs_writev(struct store_file *f, const struct iovec *iov, int iovcnt, const char *site)
{
    return store_fs_writev_how(f, iov, iovcnt, NULL, site);
}

int store_fs_sync(struct store_file *f, const char *site)
{
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc; /* like a failed fsync: nothing is known to be durable */
    int delay = f->fs != NULL ? atomic_load(&f->fs->sync_delay_ms) : 0;
    if (delay > 0) /* outside the lock: writes go on meanwhile, as on a slow disk */
        nanosleep(&(struct timespec){delay / 1000, (long)(delay % 1000) * 1000000L}, NULL);
    if (!sim_enter(f->fs))
        return ST_EIO;
    /* What was written before the fsync began is durable after it; appends made meanwhile
     * (by a writer on another thread) are not known to be. */
    uint64_t size = __atomic_load_n(&f->size, __ATOMIC_RELAXED);
    if (fdatasync(f->fd) != 0) {
        rc = st_from_errno(errno);
    } else if (f->fs != NULL) {
        struct sim_file *sf = sim_file_get(f->fs, f->path, true);
        if (sf != NULL && size > sf->synced)
            sf->synced = size;
    }
    sim_leave(f->fs);
    return rc;
}

int store_fs_truncate(struct store_file *f, uint64_t size, const char *site)
{
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc;
    if (!sim_enter(f->fs))
        return ST_EIO;
    if (ftruncate(f->fd, (off_t)size) != 0) {
        rc = st_from_errno(errno);
    } else {
        f->size = size;
        if (f->dfd >= 0 && !direct_load_tail(f))
            direct_off(f);
        struct sim_file *sf = f->fs ? sim_file_get(f->fs, f->path, false) : NULL;
        if (sf != NULL && sf->synced > size)
            sf->synced = size;
    }
    sim_leave(f->fs);
    return rc;
}

void store_fs_close(struct store_file *f)
{
    if (f == NULL)
        return;
    direct_off(f);
    close(f->fd);
    free(f->path);
    free(f);
}

/* ---- directory operations ----------------------------------------------------------------- */

int store_fs_rename(struct store_fs *fs, const char *from, const char *to, const char *site)
{
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc;
    if (!sim_enter(fs))
        return ST_EIO;
    char *backup = NULL;
    if (fs != NULL && access(to, F_OK) == 0) {
        backup = sim_backup_name(fs, to);
        if (backup == NULL || copy_file(to, backup) != ST_OK) {
            rc = ST_EIO;
            goto out;
        }
    }
    if (rename(from, to) != 0) {
        rc = st_from_errno(errno);
        if (backup)
            unlink(backup);
        goto out;
    }
    if (fs != NULL) {
        struct sim_file *sf = sim_file_get(fs, from, false);
        uint64_t synced = sf ? sf->synced : 0;
        sim_file_forget(fs, from);
        sim_file_forget(fs, to);
        struct sim_file *nf = sim_file_get(fs, to, true);
        if (nf != NULL)
            nf->synced = synced;
        rc = sim_op_add(fs, SIM_RENAME, to, from, backup);
    }
out:
    sim_leave(fs);
    free(backup);
    return rc;
}

int store_fs_unlink(struct store_fs *fs, const char *path, const char *site)
{
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc;
    if (fs == NULL) {
        if (unlink(path) != 0 && errno != ENOENT)
            return st_from_errno(errno);
        return ST_OK;
    }
    if (!sim_enter(fs))
        return ST_EIO;
    /* Keep the data under a hidden name until the directory is synced. */
    char *backup = sim_backup_name(fs, path);
    if (backup == NULL) {
        sim_leave(fs);
        return ST_ENOMEM;
    }
    if (rename(path, backup) != 0) {
        rc = errno == ENOENT ? ST_OK : st_from_errno(errno);
    } else {
        struct sim_file *sf = sim_file_get(fs, path, false);
        /* The hidden copy is what the crash restores: only its synced bytes. */
        if (sf != NULL && truncate(backup, (off_t)sf->synced) != 0)
            rc = st_from_errno(errno);
        sim_file_forget(fs, path);
        if (rc == ST_OK)
            rc = sim_op_add(fs, SIM_UNLINK, path, NULL, backup);
    }
    sim_leave(fs);
    free(backup);
    return rc;
}

int store_fs_mkdir(struct store_fs *fs, const char *path, const char *site)
{
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc;
    if (!sim_enter(fs))
        return ST_EIO;
    if (mkdir(path, 0755) != 0)
        rc = errno == EEXIST ? ST_OK : st_from_errno(errno);
    else if (fs != NULL)
        rc = sim_op_add(fs, SIM_MKDIR, path, NULL, NULL);
    sim_leave(fs);
    if (rc != ST_OK)
        return rc;
    /* The new directory's entry is durable only once its parent is fsynced. Done on every
     * call, not only when mkdir created it: an earlier call may have created it and failed
     * (or crashed) before its parent sync. */
    char *parent = strdup(path);
    if (parent == NULL)
        return ST_ENOMEM;
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        strcpy(parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    rc = store_fs_sync_dir(fs, parent, "store.mkdir.sync_parent");
    free(parent);
    return rc;
}

int store_fs_sync_dir(struct store_fs *fs, const char *dir, const char *site)
{
    int rc = ST_FAULT(site);
    if (rc != 0)
        return rc;
    if (!sim_enter(fs))
        return ST_EIO;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = st_from_errno(errno);
        goto out;
    }
    if (fsync(fd) != 0)
        rc = st_from_errno(errno);
    close(fd);
    if (rc != ST_OK || fs == NULL)
        goto out;
    size_t keep = 0;
    for (size_t i = 0; i < fs->nops; i++) {
        struct sim_op *op = &fs->ops[i];
        if (strcmp(op->dir, dir) == 0) {
            if (op->backup)
                unlink(op->backup);
            sim_op_free(op);
        } else {
            fs->ops[keep++] = *op;
        }
    }
    fs->nops = keep;
out:
    sim_leave(fs);
    return rc;
}

int store_fs_read_all(const char *path, uint8_t **buf, size_t *len, size_t max)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_from_errno(errno);
    struct stat st;
    int rc = ST_OK;
    if (fstat(fd, &st) != 0) {
        rc = st_from_errno(errno);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = ST_ERANGE;
        goto out;
    }
    uint8_t *b = malloc((size_t)st.st_size + 1);
    if (b == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t r = pread(fd, b + done, (size_t)st.st_size - done, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? st_from_errno(errno) : ST_EIO;
            free(b);
            goto out;
        }
        done += (size_t)r;
    }
    *buf = b;
    *len = done;
out:
    close(fd);
    return rc;
}

/* ---- simulation ---------------------------------------------------------------------------- */

struct store_fs *store_fs_sim_new(void)
{
    struct store_fs *fs = calloc(1, sizeof(*fs));
    if (fs != NULL)
        pthread_mutex_init(&fs->lock, NULL);
    return fs;
}

void store_fs_sim_crash(struct store_fs *fs)
{
    pthread_mutex_lock(&fs->lock);
    /* 1. Unsynced bytes vanish. */
    for (size_t i = 0; i < fs->nfiles; i++) {
        struct stat st;
        if (stat(fs->files[i].path, &st) == 0 && (uint64_t)st.st_size > fs->files[i].synced)
            if (truncate(fs->files[i].path, (off_t)fs->files[i].synced) != 0)
                perror("store_fs_sim_crash: truncate");
    }
    /* 2. Directory operations not made durable are undone, newest first. */
    for (size_t i = fs->nops; i-- > 0;) {
        struct sim_op *op = &fs->ops[i];
        switch (op->kind) {
        case SIM_CREATE:
            unlink(op->path);
            break;
        case SIM_RENAME:
            if (rename(op->path, op->from) != 0)
                unlink(op->path);
            if (op->backup && rename(op->backup, op->path) != 0)
                perror("store_fs_sim_crash: restore");
            break;
        case SIM_UNLINK:
            if (rename(op->backup, op->path) != 0)
                perror("store_fs_sim_crash: restore unlinked");
            break;
        case SIM_MKDIR:
            rmdir(op->path);
            break;
        }
        sim_op_free(op);
    }
    fs->nops = 0;
    for (size_t i = 0; i < fs->nfiles; i++)
        free(fs->files[i].path);
    fs->nfiles = 0;
    fs->dead = true;
    pthread_mutex_unlock(&fs->lock);
}

void store_fs_sim_sync_delay(struct store_fs *fs, int ms)
{
    atomic_store(&fs->sync_delay_ms, ms);
}

void store_fs_sim_revive(struct store_fs *fs)
{
    pthread_mutex_lock(&fs->lock);
    fs->dead = false;
    pthread_mutex_unlock(&fs->lock);
}

void store_fs_free(struct store_fs *fs)
{
    if (fs == NULL)
        return;
    for (size_t i = 0; i < fs->nops; i++) {
        if (fs->ops[i].backup)
            unlink(fs->ops[i].backup);
        sim_op_free(&fs->ops[i]);
    }
    for (size_t i = 0; i < fs->nfiles; i++)
        free(fs->files[i].path);
    free(fs->ops);
    free(fs->files);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
}
