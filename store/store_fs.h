/*
 * store_fs.h — the one file-system layer store/ writes through.
 *
 * Every write, fsync, rename, unlink and directory sync passes a site name to ST_FAULT, so a
 * test can fail any I/O site ("store.wal.write", "store.seg.fsync", ...) or kill the process
 * there. With a simulated file system (store_fs_sim_new) the layer also remembers what was
 * made durable, and store_fs_sim_crash() turns the directory tree into what a power loss
 * would leave: bytes written after a file's last fsync vanish, and creations, renames and
 * unlinks not followed by an fsync of their directory are undone.
 *
 * Reads go straight to the OS; they are never "unsynced".
 * Thread-safety: a struct store_file is used by one thread at a time; the fs object is
 * internally locked.
 */
#ifndef STORE_FS_H
#define STORE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/uio.h>

#include "st_error.h"

struct store_fs; /* NULL means the real OS with no tracking */

struct store_file {
    int fd;
    uint64_t size; /* bytes written so far = append position */
    char *path;
    struct store_fs *fs;
    /* Direct appends (store_fs_direct): a second descriptor opened with O_DIRECT, and the file's
     * last partial block as written (tailblk[0..tail), one aligned 4 KiB block). */
    int dfd; /* -1: appends go through the page cache */
    uint8_t *tailblk;
    size_t tail;
};

/* Opens path for appending, creating it if missing. Caller owns *out (store_fs_close). */
int store_fs_open_append(struct store_fs *fs, const char *path, struct store_file **out,
                         const char *site) ST_WUR;
/* Creates path exclusively (fails with ST_EEXIST). */
int store_fs_create(struct store_fs *fs, const char *path, struct store_file **out,
                    const char *site) ST_WUR;
/* Appends len bytes. On failure the file may hold a prefix of buf (as after a short write). */
int store_fs_write(struct store_file *f, const void *buf, size_t len, const char *site) ST_WUR;
/* Appends the concatenation of iov[0..iovcnt) with as few syscalls as pwritev allows (any
 * iovcnt). On failure the file may hold a prefix of it, as with store_fs_write. */
int store_fs_writev(struct store_file *f, const struct iovec *iov, int iovcnt,
                    const char *site) ST_WUR;
int store_fs_sync(struct store_file *f, const char *site) ST_WUR;
/*
 * Makes f's later appends bypass the page cache (O_DIRECT): whole blocks are staged in an
 * aligned buffer of the appending thread's (1 MiB, kept until the thread ends) and written
 * straight to the device; the last partial block of each append is
 * written through the page cache as well, so the file's size is always the bytes appended and
 * readers see every byte, and it is written again, completed, by the next append. What is
 * durable is unchanged: store_fs_sync (fdatasync) still makes every append durable.
 * Returns false, and leaves f as it was, on a memory file system (tmpfs, ramfs: no cache to
 * bypass), where O_DIRECT is refused (fault site store.fs.direct) or the block cannot be had;
 * a device that later refuses an aligned write turns it off again. An append on a thread
 * whose stage cannot be had goes through the page cache (fault site store.fs.stage).
 */
bool store_fs_direct(struct store_file *f);
/* Appends smaller than 256 KiB (with the partial block before them) still go through the page
 * cache: an O_DIRECT write waits for the device. After a failed append f->size may be less
 * than the file's size (a direct write landed but was not counted): the store fails on any
 * append error and recovery cuts a log to the rows its records name. */
/* Whether f's appends currently bypass the page cache. */
bool store_fs_is_direct(const struct store_file *f);

/*
 * A direct appender's second thread (one per appending thread that wants it, e.g. a store's
 * vector-log writer): with it, a direct append fills one of two 1 MiB stages while the device
 * writes the other, instead of copying and then waiting. One write is in flight at a time and
 * each is finished (a short or refused write completed through the page cache) before the next
 * starts, so the file goes through the same states as without it; the append returns once all
 * its bytes are in the file. 2 MiB and a thread. ST_ENOMEM (fault site store.fs.io) when
 * either cannot be had: the caller appends without it.
 */
struct store_fs_io;
int store_fs_io_new(struct store_fs_io **out) ST_WUR;
/* Stops the thread and frees the stages (NULL is a no-op). No append may be using it. */
void store_fs_io_free(struct store_fs_io *io);

/* Called by an append with the bytes it appends, in order, each once, on the appending thread
 * right after they were copied into a stage (still in the cache): so that a checksum of the
 * bytes needs no second pass over them. On failure it may have seen bytes that did not land. */
typedef void (*store_fs_seen_fn)(void *arg, const void *p, size_t len);

struct store_fs_append {
    struct store_fs_io *io; /* NULL: one stage, the copy and the write in turn */
    store_fs_seen_fn seen;  /* NULL: none */
    void *seen_arg;
};

/* store_fs_writev, with the options above (a NULL how is store_fs_writev). */
int store_fs_writev_how(struct store_file *f, const struct iovec *iov, int iovcnt,
                        const struct store_fs_append *how, const char *site) ST_WUR;
int store_fs_truncate(struct store_file *f, uint64_t size, const char *site) ST_WUR;
/* Closes and frees f (NULL is a no-op). Does not sync. */
void store_fs_close(struct store_file *f);

int store_fs_rename(struct store_fs *fs, const char *from, const char *to, const char *site) ST_WUR;
int store_fs_unlink(struct store_fs *fs, const char *path, const char *site) ST_WUR;
int store_fs_mkdir(struct store_fs *fs, const char *path, const char *site) ST_WUR;
int store_fs_sync_dir(struct store_fs *fs, const char *dir, const char *site) ST_WUR;

/* Reads a whole file into a malloc'd buffer (caller frees). */
int store_fs_read_all(const char *path, uint8_t **buf, size_t *len, size_t max) ST_WUR;

/* --- simulation (tests) --- */
struct store_fs *store_fs_sim_new(void);
/* Applies a simulated power loss to every file and directory this fs touched. From then on
 * the fs is dead: every mutating call fails with ST_EIO and changes nothing, as for a process
 * on a machine that lost power, until store_fs_sim_revive. */
void store_fs_sim_crash(struct store_fs *fs);
void store_fs_sim_revive(struct store_fs *fs);
/* Makes every fsync through fs take at least ms longer (a slow disk): durability then lags
 * well behind the writes, which is what tests of "commit only what is durable" need. */
void store_fs_sim_sync_delay(struct store_fs *fs, int ms);
void store_fs_free(struct store_fs *fs);

#endif
