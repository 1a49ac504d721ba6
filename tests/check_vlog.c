/*
 * check_vlog.c — the write-once path: window vector logs, metadata-only runs, seal by
 * completing the log, and recovery when a log and the WAL reached the disk unevenly.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_fault.h"
#include "st_test.h"
#include "store.h"
#include "store_int.h"
#include "store_log.h"
#include "store_fs.h"

#define WIN 1000 /* windows are [k*1000, (k+1)*1000) ms */

struct vt {
    char *dir;
    uint32_t dim;
    struct store *s;
};

static struct store *vt_open_opts(const char *dir, uint32_t dim, uint64_t memtable, bool pitr,
                                  struct st_err *err, int *rc)
{
    struct store_opts o = {.dir = dir,
                           .dim = dim,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .memtable_size = memtable,
                           .max_frozen = 64,
                           .point_in_time_recovery = pitr};
    struct store *s = NULL;
    *rc = store_open(&o, &s, err);
    return s;
}

static struct store *vt_open(const char *dir, uint32_t dim, uint64_t memtable)
{
    struct st_err err = {0};
    int rc;
    struct store *s = vt_open_opts(dir, dim, memtable, false, &err, &rc);
    ck_assert_msg(rc == ST_OK, "store_open(%s): %s", dir, err.msg);
    return s;
}

static void vec_of(float *v, uint32_t dim, int val)
{
    for (uint32_t d = 0; d < dim; d++)
        v[d] = (float)val + (float)d / 1024.0f;
}

/* One batch (Kafka offset off) of n records id-<k0+i>, value val+i, in the window of ts. */
static int put_batch(struct store *s, uint32_t dim, int64_t off, int k0, int n, int64_t ts, int val,
                     uint8_t op)
{
    struct store_record *r = calloc((size_t)n, sizeof(*r));
    float *v = malloc((size_t)n * dim * sizeof(float));
    char(*ids)[32] = malloc((size_t)n * 32);
    ck_assert(r != NULL && v != NULL && ids != NULL);
    for (int i = 0; i < n; i++) {
        snprintf(ids[i], 32, "id-%d", k0 + i);
        vec_of(v + (size_t)i * dim, dim, val + i);
        r[i] = (struct store_record){.id = (const uint8_t *)ids[i],
                                     .id_len = (uint32_t)strlen(ids[i]),
                                     .ts = ts,
                                     .window = ts - ts % WIN,
                                     .window_end = ts - ts % WIN + WIN,
                                     .op = op,
                                     .vec = v + (size_t)i * dim};
    }
    struct store_batch b = {.partition = 0, .offset = off, .n = (uint32_t)n, .recs = r};
    bool applied;
    int rc;
    while ((rc = store_write(s, &b, &applied)) == ST_EAGAIN)
        ck_assert_int_eq(store_flush(s), ST_OK);
    free(r);
    free(v);
    free(ids);
    return rc;
}

/* The value of id-<k> (its vector checked against it), or -1 when absent or deleted. */
static int val_of(struct store *s, uint32_t dim, int k)
{
    char id[32];
    snprintf(id, sizeof(id), "id-%d", k);
    float *v = malloc(dim * sizeof(float)), *want = malloc(dim * sizeof(float));
    struct store_value val = {.vec = v};
    int rc = store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &val);
    int out = -1;
    if (rc == ST_OK) {
        out = (int)v[0];
        vec_of(want, dim, out);
        ck_assert_msg(memcmp(v, want, dim * sizeof(float)) == 0, "id-%d: vector differs", k);
        free(val.meta);
    } else {
        ck_assert_int_eq(rc, ST_ENOTFOUND);
    }
    free(v);
    free(want);
    return out;
}

/* File numbers of the segments of one window, and how many of them are sealed. */
static uint64_t *segs_of(struct store *s, int64_t start, size_t *n, size_t *sealed)
{
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    uint64_t *out = calloc(store_snapshot_count(snap) + 1, sizeof(*out));
    *n = 0;
    if (sealed != NULL)
        *sealed = 0;
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment_info in;
        store_segment_info(store_snapshot_segment(snap, i), &in);
        if (in.window_start != start)
            continue;
        out[(*n)++] = in.file_number;
        if (sealed != NULL && in.kind == STORE_SEG_SEALED)
            (*sealed)++;
    }
    store_snapshot_release(snap);
    return out;
}

/* Seals window start as twcs does: close its log, flush, merge every segment of it. */
static int seal(struct store *s, int64_t start, uint32_t version, struct store_segment_info *out)
{
    store_window_close_log(s, start);
    ck_assert_int_eq(store_flush(s), ST_OK);
    size_t n;
    uint64_t *in = segs_of(s, start, &n, NULL);
    ck_assert_uint_gt(n, 0);
    int rc = store_merge(s, in, n, STORE_SEG_SEALED, version, NULL, out);
    free(in);
    return rc;
}

static uint64_t file_size(const char *dir, uint64_t number)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%06llu.seg", dir, (unsigned long long)number);
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Every vector byte reaches the disk once: the log holds each upsert's vector, the runs and
 * the seal write only tables, the sealed segment is the log itself, and all bytes written
 * (WAL, logs, runs, seal) stay within 1.2x the vectors for 768-d. */
START_TEST(test_write_once)
{
    const uint32_t dim = 768;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 4u << 20); /* ~1300 records a memtable: many runs */
    int64_t off = 0;
    uint64_t upserts = 0;
    for (int w = 0; w < 3; w++) {
        for (int b = 0; b < 60; b++) { /* 60 batches of 50: 3000 records, 300 ids rewritten */
            int k0 = w * 100000 + (b % 54) * 50;
            ck_assert_int_eq(
                put_batch(s, dim, off++, k0, 50, w * WIN + b, w * 100000 + b * 50, STORE_OP_UPSERT),
                ST_OK);
            upserts += 50;
        }
        ck_assert_int_eq(
            put_batch(s, dim, off++, w * 100000, 10, w * WIN + 500, 0, STORE_OP_DELETE), ST_OK);
    }
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(st.vlogs, 3);
    ck_assert_uint_eq(st.vlog_bytes_written, upserts * dim * 4); /* each vector once */
    for (int w = 0; w < 3; w++) {
        size_t n;
        free(segs_of(s, w * WIN, &n, NULL));
        struct store_segment_info out;
        ck_assert_int_eq(seal(s, w * WIN, 1, &out), ST_OK);
        ck_assert_int_eq(out.kind, STORE_SEG_SEALED);
        ck_assert_uint_eq(out.count, 54 * 50);     /* deletes included, rewritten ids once */
        ck_assert_uint_eq(out.rows, 60 * 50 + 10); /* superseded rows stay; deletes' zero rows */
        ck_assert_uint_eq(file_size(dir, out.file_number), out.bytes);
    }
    store_stats(s, &st);
    ck_assert_uint_eq(st.vlogs, 0);
    uint64_t vec_bytes = upserts * dim * 4;
    uint64_t written = st.wal_bytes_written + st.vlog_bytes_written + st.segment_bytes_written;
    ck_assert_msg(written <= vec_bytes * 12 / 10, "wrote %llu bytes for %llu of vectors",
                  (unsigned long long)written, (unsigned long long)vec_bytes);
    /* deletes' rows (zeros) are appended at the seal: that is all a seal writes of vectors */
    ck_assert_uint_lt(st.segment_bytes_written, vec_bytes / 10);
    for (int pass = 0; pass < 2; pass++) {
        for (int w = 0; w < 3; w++) {
            for (int i = 0; i < 54 * 50; i++) {
                int k = w * 100000 + i;
                /* ids 0..299 of each window were written twice (b and b + 54), then the first
                 * 10 deleted */
                int want = i < 10 ? -1 : i < 300 ? w * 100000 + 54 * 50 + i : w * 100000 + i;
                ck_assert_int_eq(val_of(s, dim, k), want);
            }
        }
        struct store_snapshot *snap;
        ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
        ck_assert_uint_eq(store_snapshot_count(snap), 3);
        for (size_t i = 0; i < 3; i++) {
            struct st_err err = {0};
            ck_assert_msg(store_segment_verify(store_snapshot_segment(snap, i), &err) == ST_OK,
                          "%s", err.msg);
        }
        store_snapshot_release(snap);
        ck_assert_int_eq(store_close(s), ST_OK);
        s = vt_open(dir, dim, 4u << 20);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* The process dies (no close, no fsync) after writing batches 0..9 of window 0: what the page
 * cache holds survives a process crash, so everything is there. */
static void crash_after_batches(const char *dir, int batches, bool roll, bool flush_first)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store *s = vt_open(dir, 8, 1u << 20);
        for (int b = 0; b < batches; b++) {
            if (put_batch(s, 8, b, b * 10, 10, 100 + b, b * 10, STORE_OP_UPSERT) != ST_OK)
                _exit(2);
            if (flush_first && b == 0 && store_flush(s) != ST_OK)
                _exit(4); /* batch 0 in a run, the rest in a newer WAL file */
            if (roll && b == batches / 2) {
                /* a WAL roll: the first file stops being the last one (no flush: no_background
                 * keeps the frozen memtable, and its WAL file, until store_flush) */
                pthread_mutex_lock(&s->sync_mu);
                int rc = store_freeze(s);
                pthread_mutex_unlock(&s->sync_mu);
                if (rc != ST_OK)
                    _exit(3);
            }
        }
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static uint64_t only_vlog(const char *dir)
{
    /* the window's log is the only .seg in a store that never flushed */
    DIR *d = opendir(dir);
    uint64_t num = 0;
    int n = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0) {
            num = strtoull(de->d_name, NULL, 10);
            n++;
        }
    }
    closedir(d);
    ck_assert_int_eq(n, 1);
    return num;
}

static void check_prefix(struct store *s, int kept, int batches)
{
    int64_t mark = -2;
    int rc = store_applied_offset(s, 0, &mark);
    if (kept == 0)
        ck_assert_int_eq(rc, ST_ENOTFOUND);
    else
        ck_assert_int_eq(mark, kept - 1);
    for (int b = 0; b < batches; b++)
        for (int i = 0; i < 10; i++)
            ck_assert_int_eq(val_of(s, 8, b * 10 + i), b < kept ? b * 10 + i : -1);
}

/* "The WAL reached the disk, the log did not": rows cut from the end of the log (or a byte of
 * one row damaged) end the replay at the first record naming a missing row; the records before
 * it are intact, the log is cut to the rows they name, and writing goes on from there. */
START_TEST(test_rows_missing_end_replay)
{
    const uint32_t rb = 8 * 4;
    for (int variant = 0; variant < 3; variant++) {
        char *dir = st_test_tmpdir("vlog");
        crash_after_batches(dir, 10, false, false);
        uint64_t vnum = only_vlog(dir);
        char p[600];
        snprintf(p, sizeof(p), "%s/%06llu.seg", dir, (unsigned long long)vnum);
        ck_assert_uint_eq(file_size(dir, vnum), STORE_SEG_HEADER + 100 * rb);
        int kept;
        if (variant == 0) { /* the last 25 rows (batch 7's last 5, 8, 9) never made it */
            ck_assert_int_eq(truncate(p, STORE_SEG_HEADER + 75 * rb), 0);
            kept = 7;
        } else if (variant == 1) { /* a torn row: half of row 42 */
            ck_assert_int_eq(truncate(p, STORE_SEG_HEADER + 42 * rb + rb / 2), 0);
            kept = 4;
        } else { /* row 55 holds other bytes (written back out of order, then lost) */
            int fd = open(p, O_RDWR);
            uint8_t x = 0x5a;
            ck_assert_int_eq(pwrite(fd, &x, 1, STORE_SEG_HEADER + 55 * rb + 3), 1);
            close(fd);
            kept = 5;
        }
        struct store *s = vt_open(dir, 8, 1u << 20);
        check_prefix(s, kept, 10);
        ck_assert_uint_eq(file_size(dir, vnum), STORE_SEG_HEADER + (uint64_t)kept * 10 * rb);
        /* the lost batches come again from Kafka and land after the rows kept */
        for (int b = kept; b < 10; b++)
            ck_assert_int_eq(put_batch(s, 8, b, b * 10, 10, 100 + b, b * 10, STORE_OP_UPSERT),
                             ST_OK);
        check_prefix(s, 10, 10);
        ck_assert_int_eq(store_close(s), ST_OK);
        s = vt_open(dir, 8, 1u << 20);
        check_prefix(s, 10, 10);
        struct store_segment_info out;
        ck_assert_int_eq(seal(s, 0, 1, &out), ST_OK);
        ck_assert_uint_eq(out.file_number, vnum);
        check_prefix(s, 10, 10);
        ck_assert_int_eq(store_close(s), ST_OK);
        st_test_rmrf(dir);
        free(dir);
    }
}
END_TEST

/* A missing row named by a WAL file that is not the last one cannot be a torn group commit
 * (a roll fsyncs the logs, then the old file): refused as corruption, with its file; point-in-
 * time recovery keeps the prefix. */
START_TEST(test_rows_missing_before_last_wal)
{
    char *dir = st_test_tmpdir("vlog");
    crash_after_batches(dir, 10, true,
                        false); /* roll after batch 5: batches 0..5 in the first file */
    uint64_t vnum = only_vlog(dir);
    char p[600];
    snprintf(p, sizeof(p), "%s/%06llu.seg", dir, (unsigned long long)vnum);
    int fd = open(p, O_RDWR);
    uint8_t x = 0xa5;
    ck_assert_int_eq(pwrite(fd, &x, 1, STORE_SEG_HEADER + 21 * 32), 1); /* row 21: batch 2 */
    close(fd);
    struct st_err err = {0};
    int rc;
    struct store *s = vt_open_opts(dir, 8, 1u << 20, false, &err, &rc);
    ck_assert_int_eq(rc, ST_ECORRUPT);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, ".log") != NULL && strstr(err.msg, "vector row") != NULL, "%s",
                  err.msg);
    s = vt_open_opts(dir, 8, 1u << 20, true, &err, &rc);
    ck_assert_msg(rc == ST_OK, "%s", err.msg);
    check_prefix(s, 2, 10);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Late data: records written after the log closed keep their vectors inline and join the seal
 * as appended rows; records after the seal get a new log, whose re-seal takes the sealed
 * segment's vectors as appended rows. Each step survives a reopen. */
START_TEST(test_late_data_and_reseal)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 50, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 50, 50, 200, 50, STORE_OP_UPSERT), ST_OK);
    store_window_close_log(s, 0);
    /* after the close: inline (ids 100..119 new, 0..9 rewritten) */
    ck_assert_int_eq(put_batch(s, dim, 2, 100, 20, 300, 1100, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 3, 0, 10, 301, 1000, STORE_OP_UPSERT), ST_OK);
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(st.vlog_bytes_written, 100 * dim * 4); /* the closed log got no more */
    struct store_segment_info s1;
    ck_assert_int_eq(seal(s, 0, 1, &s1), ST_OK);
    ck_assert_uint_eq(s1.count, 120);
    ck_assert_uint_eq(s1.rows, 100 + 30); /* the log's 100 rows, then 30 inline ones appended */
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < 120; k++)
            ck_assert_int_eq(val_of(s, dim, k), k < 10 ? 1000 + k : k < 100 ? k : 1000 + k);
        ck_assert_int_eq(store_close(s), ST_OK);
        s = vt_open(dir, dim, 1u << 20);
    }
    /* after the seal: a new log for the same window */
    ck_assert_int_eq(put_batch(s, dim, 4, 200, 10, 400, 200, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 5, 20, 5, 401, 2020, STORE_OP_UPSERT), ST_OK);
    store_stats(s, &st);
    ck_assert_uint_eq(st.vlogs, 1);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = vt_open(dir, dim, 1u << 20); /* the new log's rows come back from the WAL */
    struct store_segment_info s2;
    ck_assert_int_eq(seal(s, 0, 2, &s2), ST_OK);
    ck_assert_uint_ne(s2.file_number, s1.file_number);
    ck_assert_uint_eq(s2.count, 130);
    /* its own 15 rows, then the old sealed segment's 120 records but the 5 superseded here */
    ck_assert_uint_eq(s2.rows, 15 + 115);
    ck_assert_uint_eq(file_size(dir, s1.file_number), 0); /* the old sealed segment is gone */
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < 120; k++)
            ck_assert_int_eq(val_of(s, dim, k), k < 10    ? 1000 + k
                                                : k < 20  ? k
                                                : k < 25  ? 2000 + k
                                                : k < 100 ? k
                                                          : 1000 + k);
        for (int k = 200; k < 210; k++)
            ck_assert_int_eq(val_of(s, dim, k), k);
        ck_assert_int_eq(store_close(s), ST_OK);
        s = vt_open(dir, dim, 1u << 20);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A seal must take every record naming the log's rows: while a memtable still names some it is
 * refused with ST_EAGAIN, and a run naming them left out of the inputs is ST_ENOTFOUND. */
START_TEST(test_seal_takes_every_row)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 20, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 20, 20, 100, 20, STORE_OP_UPSERT), ST_OK);
    size_t n;
    uint64_t *in = segs_of(s, 0, &n, NULL);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, NULL), ST_EAGAIN);
    free(in);
    /* the merge closed the log: the next records are inline */
    ck_assert_int_eq(put_batch(s, dim, 2, 40, 5, 100, 40, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    in = segs_of(s, 0, &n, NULL);
    ck_assert_uint_eq(n, 3); /* two runs naming log rows, one holding the inline vectors */
    ck_assert_int_eq(store_merge(s, in, 1, STORE_SEG_SEALED, 1, NULL, NULL), ST_ENOTFOUND);
    struct store_segment_info out;
    ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, &out), ST_OK);
    ck_assert_uint_eq(out.count, 45);
    for (int k = 0; k < 45; k++)
        ck_assert_int_eq(val_of(s, dim, k), k);
    free(in);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Dropping a window whose log is open removes the log with its runs; nothing is left over. */
START_TEST(test_drop_open_window)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 20, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 100, 20, 1100, 100, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    /* a snapshot reading a run of the window keeps reading while the drop unlinks */
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    size_t removed;
    ck_assert_int_eq(store_drop_window(s, 0, NULL, &removed), ST_OK);
    ck_assert_uint_eq(removed, 1);
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(st.vlogs, 1);
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment *g = store_snapshot_segment(snap, i);
        struct store_segment_info in;
        store_segment_info(g, &in);
        for (uint64_t r = 0; r < in.count; r++)
            ck_assert(store_segment_vector(g, r)[0] >= 0.0f); /* mapped, readable */
    }
    store_snapshot_release(snap);
    for (int k = 0; k < 20; k++) {
        ck_assert_int_eq(val_of(s, dim, k), -1);
        ck_assert_int_eq(val_of(s, dim, 100 + k), 100 + k);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    /* two .seg files: the other window's log and its run */
    DIR *d = opendir(dir);
    int segs = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        segs += strstr(de->d_name, ".seg") != NULL;
    closedir(d);
    ck_assert_int_eq(segs, 2);
    s = vt_open(dir, dim, 1u << 20);
    for (int k = 0; k < 20; k++)
        ck_assert_int_eq(val_of(s, dim, 100 + k), 100 + k);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A run naming rows of a vector file is only as good as that file: one too short for the rows
 * it claims, one of another dim, or none at all is refused with the file named. */
START_TEST(test_external_rows_untrusted)
{
    const uint32_t dim = 4;
    char *dir = st_test_tmpdir("vlog");
    char vpath[600], rpath[600];
    snprintf(vpath, sizeof(vpath), "%s/000007.seg", dir);
    snprintf(rpath, sizeof(rpath), "%s/000008.seg", dir);
    struct store_seg_in in[2] = {
        {.id = (const uint8_t *)"a", .id_len = 1, .ts = 5, .row = 3},
        {.id = (const uint8_t *)"b", .id_len = 1, .ts = 6, .row = 1},
    };
    struct store_seg_meta meta = {0, 1000, STORE_SEG_RUN, 0, true, 7, 4};
    struct st_err err = {0};
    uint64_t bytes;
    ck_assert_int_eq(store_segment_write(NULL, rpath, dim, &meta, in, 2, &bytes, &err), ST_OK);
    struct store_segment *g = NULL;
    for (int variant = 0; variant < 4; variant++) {
        unlink(vpath);
        uint8_t head[STORE_SEG_HEADER] = {0};
        memcpy(head, STORE_SEG_MAGIC, 8);
        head[8] = STORE_SEG_VERSION_ROWS;
        head[12] = (uint8_t)(variant == 2 ? dim + 1 : dim);
        size_t rows = variant == 1 ? 3 : 4;
        if (variant != 0) {
            FILE *f = fopen(vpath, "wb");
            fwrite(head, 1, sizeof(head), f);
            for (size_t r = 0; r < rows; r++) {
                float v[4] = {(float)r, 1, 2, 3};
                fwrite(v, 1, sizeof(v), f);
            }
            fclose(f);
        }
        st_err_clear(&err);
        int rc = store_segment_open(rpath, true, &g, &err);
        if (variant == 3) {
            ck_assert_msg(rc == ST_OK, "%s", err.msg);
            ck_assert(store_segment_vector(g, 0)[0] == 3.0f); /* "a" names row 3 */
            ck_assert(store_segment_vector(g, 1)[0] == 1.0f);
            ck_assert_ptr_null(store_segment_contiguous(g));
            ck_assert_int_eq(store_segment_verify(g, &err), ST_OK);
            store_segment_unref(g);
            /* what may travel to another host (store_segment_open_file: indexers, fuzzers)
             * must stand alone: a run naming another file's rows is refused, unopened */
            g = NULL;
            ck_assert_int_eq(store_segment_open_file(rpath, &g, &err), ST_ECORRUPT);
            ck_assert_ptr_null(g);
            ck_assert_msg(strstr(err.msg, "another file") != NULL, "%s", err.msg);
        } else {
            ck_assert_int_ne(rc, ST_OK);
            ck_assert_msg(strstr(err.msg, "000007.seg") != NULL, "%s", err.msg);
        }
    }
    /* a run may not name a row at or past the rows it claims (checked as for any v2 file) */
    in[0].row = 4;
    unlink(rpath);
    ck_assert_int_eq(store_segment_write(NULL, rpath, dim, &meta, in, 2, &bytes, &err), ST_EINVAL);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * The write path's crash matrix: a workload that creates two windows' logs, appends rows,
 * group-commits every batch (wal_sync always), rolls the WAL, flushes metadata-only runs and
 * seals one window by completing its log — killed at every I/O site it passes (three hit
 * counts each). After each kill the store opens, every batch acknowledged before the kill is
 * there with its vectors, nothing is there that was never written, and the workload finishes
 * on top of what survived (the lost batches written again, as Kafka would redeliver them).
 */
#define CM_BATCHES 12

/* The workload from batch `from` on, with fs (NULL: the OS). Every batch whose write returned
 * goes to wfd (when >= 0) and *acked (when not NULL). Returns 0, or the step that failed. */
static bool cm_in_write; /* rows appended by the write itself, not the writer thread */

static int cm_run(const char *dir, struct store_fs *fs, int from, int wfd, int *acked)
{
    struct store_opts o = {.dir = dir,
                           .dim = 8,
                           .wal_sync = STORE_SYNC_ALWAYS,
                           .no_background = true,
                           .memtable_size = 1u << 20,
                           .max_frozen = 64,
                           .vlog_append_in_write = cm_in_write,
                           .fs = fs};
    struct store *s = NULL;
    struct st_err err = {0};
    if (store_open(&o, &s, &err) != ST_OK)
        return 4;
    int rc = 0;
    for (int b = from; rc == 0 && b < CM_BATCHES; b++) {
        /* batches alternate between windows 0 and 1; ids are per batch */
        int64_t ts = (b % 2) * WIN + 100 + b;
        if (put_batch(s, 8, b, b * 10, 10, ts, b * 10, STORE_OP_UPSERT) != ST_OK) {
            rc = 5;
            break;
        }
        if (wfd >= 0 && write(wfd, &b, sizeof(b)) != (ssize_t)sizeof(b))
            rc = 6;
        if (acked != NULL)
            *acked = b;
        if (b == 5) {
            pthread_mutex_lock(&s->sync_mu);
            int frc = store_freeze(s); /* a roll: logs fsynced, then the old WAL file */
            pthread_mutex_unlock(&s->sync_mu);
            if (frc != ST_OK)
                rc = 7;
        }
        if (rc == 0 && b == 8 && store_flush(s) != ST_OK) /* metadata-only runs */
            rc = 8;
    }
    /* seal window 0 by completing its log (a second run of the workload finds it sealed) */
    struct store_snapshot *snap;
    if (rc == 0 && store_snapshot_acquire(s, &snap) != ST_OK)
        rc = 9;
    if (rc == 0) {
        size_t sealed = 0;
        for (size_t i = 0; i < store_snapshot_count(snap); i++) {
            struct store_segment_info in;
            store_segment_info(store_snapshot_segment(snap, i), &in);
            sealed += in.window_start == 0 && in.kind == STORE_SEG_SEALED;
        }
        store_snapshot_release(snap);
        if (sealed == 0) {
            store_window_close_log(s, 0);
            size_t n;
            if (store_flush(s) != ST_OK)
                rc = 10;
            uint64_t *in = rc == 0 ? segs_of(s, 0, &n, NULL) : NULL;
            if (rc == 0 && store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, NULL) != ST_OK)
                rc = 11;
            free(in);
        }
    }
    if (store_close(s) != ST_OK && rc == 0)
        rc = 12;
    return rc;
}

static void cm_workload(const char *dir, int from, int wfd)
{
    int rc = cm_run(dir, NULL, from, wfd, NULL);
    if (rc != 0)
        _exit(rc);
}

/* Opens dir and checks every batch: acknowledged ones (<= acked) present; others present or
 * absent but never wrong. Returns the first batch not present (batches are present as a
 * prefix: each waits for the one before to be durable). */
static int cm_check_fs(const char *dir, struct store_fs *fs, int acked)
{
    struct store_opts o = {.dir = dir, .dim = 8, .no_background = true, .fs = fs};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s: %s", dir, err.msg);
    int first_missing = CM_BATCHES;
    for (int b = 0; b < CM_BATCHES; b++) {
        int present = 0;
        for (int i = 0; i < 10; i++) {
            int v = val_of(s, 8, b * 10 + i);
            ck_assert(v == -1 || v == b * 10 + i);
            present += v != -1;
        }
        ck_assert_msg(present == 0 || present == 10, "batch %d half there", b);
        if (b <= acked)
            ck_assert_msg(present == 10, "acknowledged batch %d lost", b);
        if (present == 0 && first_missing == CM_BATCHES)
            first_missing = b;
        if (present == 10)
            ck_assert_msg(first_missing == CM_BATCHES, "batch %d there after a missing one", b);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    return first_missing;
}

static int cm_check(const char *dir, int acked)
{
    return cm_check_fs(dir, NULL, acked);
}

/* Where "store.vlog.append" ran: on the writer thread (async) or the writing thread. */
static pthread_t append_thread;
static int appends;

static void note_append_thread(void *ctx)
{
    (void)ctx;
    append_thread = pthread_self();
    appends++;
}

/* _i 0: rows appended by the store's writer thread; 1: by the write itself (wal_sync none's
 * path, and the one before the writer thread). The append runs where the variant says. */
static void cm_variant(int i, const char *dir)
{
    cm_in_write = i == 1;
    ck_assert_int_eq(st_fault_hook("store.vlog.append", note_append_thread, NULL), ST_OK);
    ck_assert_int_eq(cm_run(dir, NULL, 0, -1, NULL), 0);
    st_fault_disarm_all();
    ck_assert_int_gt(appends, 0);
    ck_assert_int_eq(pthread_equal(append_thread, pthread_self()) != 0, cm_in_write);
    st_test_rmrf(dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
}

START_TEST(test_write_crash_matrix)
{
    char *dir = st_test_tmpdir("vlog");
    cm_variant(_i, dir);
    st_fault_record(true);
    cm_workload(dir, 0, -1);
    st_fault_record(false);
    const char *sites[128];
    size_t nsites = st_fault_recorded(sites, 128);
    size_t vlog_sites = 0, extend_sites = 0;
    for (size_t i = 0; i < nsites; i++) {
        vlog_sites += strncmp(sites[i], "store.vlog.", 11) == 0;
        extend_sites += strncmp(sites[i], "store.seg.extend", 16) == 0;
    }
    ck_assert_uint_ge(vlog_sites, 4); /* create, write, fsync, sync_dir */
    ck_assert_uint_ge(extend_sites, 1);
    ck_assert_int_eq(cm_check(dir, CM_BATCHES - 1), CM_BATCHES);
    int kills = 0;
    for (size_t i = 0; i < nsites; i++) {
        for (uint32_t skip = 0; skip < 3; skip++) {
            st_test_rmrf(dir);
            ck_assert_int_eq(mkdir(dir, 0755), 0);
            int p[2];
            ck_assert_int_eq(pipe(p), 0);
            pid_t pid = fork();
            ck_assert_int_ge(pid, 0);
            if (pid == 0) {
                close(p[0]);
                if (st_fault_arm(sites[i], skip, 1, ST_FAULT_CRASH) != ST_OK)
                    _exit(3);
                cm_workload(dir, 0, p[1]);
                _exit(0);
            }
            close(p[1]);
            int acked = -1, b;
            while (read(p[0], &b, sizeof(b)) == (ssize_t)sizeof(b))
                acked = b;
            close(p[0]);
            int status;
            ck_assert_int_eq(waitpid(pid, &status, 0), pid);
            ck_assert_msg(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
                          "site %s skip %u: exit %d", sites[i], skip, WEXITSTATUS(status));
            kills += WIFSIGNALED(status);
            int from = cm_check(dir, acked);
            /* the rest comes again; then everything is there, window 0 sealed */
            pid = fork();
            ck_assert_int_ge(pid, 0);
            if (pid == 0) {
                cm_workload(dir, from, -1);
                _exit(0);
            }
            ck_assert_int_eq(waitpid(pid, &status, 0), pid);
            ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                          "site %s skip %u: finishing exited %d", sites[i], skip,
                          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            ck_assert_int_eq(cm_check(dir, CM_BATCHES - 1), CM_BATCHES);
        }
    }
    fprintf(stderr, "write crash matrix: %zu sites, %d kills\n", nsites, kills);
    ck_assert_int_gt(kills, (int)nsites); /* most sites are passed more than once */
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * The same workload with the power cut (simulated file system) at every I/O site it passes,
 * three hit counts each: only what was fsynced survives. Every batch whose write returned
 * (wal_sync always: acknowledged durable) is there after the cut, as a prefix; the store opens
 * and the workload finishes on top. Unlike a kill, this fails if any fsync that durability
 * needs is missing (a log's before the WAL's in group commit or a roll, a log's at recovery).
 */
struct cut {
    struct store_fs *fs;
    uint32_t at, seen;
};

static void cut_power(void *ctx)
{
    struct cut *c = ctx;
    if (c->seen++ == c->at)
        store_fs_sim_crash(c->fs); /* from here every write and fsync fails, nothing lands */
}

START_TEST(test_power_cut_matrix)
{
    char *dir = st_test_tmpdir("vlog");
    cm_variant(_i, dir);
    st_fault_record(true);
    ck_assert_int_eq(cm_run(dir, NULL, 0, -1, NULL), 0);
    st_fault_record(false);
    const char *sites[128];
    size_t nsites = st_fault_recorded(sites, 128);
    ck_assert_uint_ge(nsites, 10);
    int cuts = 0;
    for (size_t i = 0; i < nsites; i++) {
        for (uint32_t at = 0; at < 3; at++) {
            st_test_rmrf(dir);
            ck_assert_int_eq(mkdir(dir, 0755), 0);
            struct store_fs *fs = store_fs_sim_new();
            struct cut c = {fs, at, 0};
            ck_assert_int_eq(st_fault_hook(sites[i], cut_power, &c), ST_OK);
            int acked = -1;
            int rc = cm_run(dir, fs, 0, -1, &acked);
            st_fault_disarm_all();
            cuts += c.seen > at;
            ck_assert_msg(rc == 0 || c.seen > at, "site %s at %u: step %d failed, no cut", sites[i],
                          at, rc);
            store_fs_sim_revive(fs);
            int from = cm_check_fs(dir, fs, acked);
            ck_assert_int_eq(cm_run(dir, fs, from, -1, NULL), 0);
            ck_assert_int_eq(cm_check_fs(dir, fs, CM_BATCHES - 1), CM_BATCHES);
            store_fs_free(fs);
        }
    }
    ck_assert_int_gt(cuts, (int)nsites);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A flush writes window 0's run, then window 1's; while the first is being fsynced a writer
 * appends rows to window 1's log (not fsynced: wal_sync none). Window 1's run must claim only
 * the rows it names, so that after a power cut (the new rows gone) it still opens. */
static struct store *hook_store;
static int hook_calls;

static void append_during_flush(void *ctx)
{
    (void)ctx;
    if (hook_calls++ == 0) /* the first segment fsync: window 0's run */
        ck_assert_int_eq(put_batch(hook_store, 8, 100, 5000, 10, WIN + 50, 5000, STORE_OP_UPSERT),
                         ST_OK);
}

START_TEST(test_run_claims_only_named_rows)
{
    char *dir = st_test_tmpdir("vlog");
    struct store_fs *fs = store_fs_sim_new();
    struct store_opts o = {.dir = dir,
                           .dim = 8,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .memtable_size = 1u << 20,
                           .fs = fs};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    ck_assert_int_eq(put_batch(s, 8, 0, 0, 10, 50, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, 8, 1, 1000, 10, WIN + 50, 1000, STORE_OP_UPSERT), ST_OK);
    hook_store = s;
    hook_calls = 0;
    ck_assert_int_eq(st_fault_hook("store.seg.fsync", append_during_flush, NULL), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK); /* the roll fsyncs rows 0..9 of both logs */
    st_fault_disarm_all();
    ck_assert_int_ge(hook_calls, 2);
    store_fs_sim_crash(fs); /* window 1's rows 10..19 were never fsynced */
    (void)store_close(s);
    store_fs_sim_revive(fs);
    s = NULL;
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "reopen: %s", err.msg);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(val_of(s, 8, i), i);
        ck_assert_int_eq(val_of(s, 8, 1000 + i), 1000 + i);
        ck_assert_int_eq(val_of(s, 8, 5000 + i), -1);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    store_fs_free(fs);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * Power loss while the flusher writes runs and writers keep appending rows (slow fsyncs, so
 * rows appended after a memtable froze are often not durable when its run is written). After
 * every cut the store opens, keeps everything it reported durable and nothing else; a run
 * never claims rows a power cut can take.
 */
START_TEST(test_power_loss_during_flushes)
{
    char *dir = st_test_tmpdir("vlog");
    struct store_fs *fs = store_fs_sim_new();
    store_fs_sim_sync_delay(fs, 3);
    int64_t next = 0; /* next batch offset; batch b holds ids b*10 .. b*10+9 */
    uint64_t runs_seen = 0;
    for (int round = 0; round < 8; round++) {
        /* wal_sync none: nothing is fsynced but by a WAL roll, so rows appended while the
         * flusher sorts a frozen memtable are certainly not durable when its run is written */
        bool none = round % 2 == 1;
        struct store_opts o = {.dir = dir,
                               .dim = 8,
                               .wal_sync = none ? STORE_SYNC_NONE : STORE_SYNC_BATCH,
                               .wal_sync_interval_ms = 2,
                               .memtable_size = 48 * 1024,
                               .max_frozen = 4,
                               .fs = fs};
        struct store *s = NULL;
        struct st_err err = {0};
        ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "round %d: %s", round, err.msg);
        int64_t reported = -1;
        for (int i = 0; i < 400; i++, next++) {
            int rc = put_batch(s, 8, next, (int)next * 10, 10, (next % 2) * WIN + 10,
                               (int)next * 10, STORE_OP_UPSERT);
            ck_assert_int_eq(rc, ST_OK);
            if (i % 25 == 0 && store_durable_offset(s, 0, &reported) != ST_OK)
                reported = -1;
        }
        if (store_durable_offset(s, 0, &reported) != ST_OK)
            reported = -1;
        struct store_stats st;
        store_stats(s, &st);
        runs_seen += st.segments;
        store_fs_sim_crash(fs);
        (void)store_close(s);
        store_fs_sim_revive(fs);
        s = NULL;
        ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "round %d: reopen: %s", round, err.msg);
        int64_t recovered = -1;
        if (store_durable_offset(s, 0, &recovered) != ST_OK)
            recovered = -1;
        /* (with wal_sync none "durable" means a process crash cannot lose it, not a power cut) */
        ck_assert_msg(none || recovered >= reported, "round %d: recovered %lld < reported %lld",
                      round, (long long)recovered, (long long)reported);
        for (int64_t b = 0; b < next; b++)
            for (int i = 0; i < 10; i += 3)
                ck_assert_int_eq(val_of(s, 8, (int)b * 10 + i),
                                 b <= recovered ? (int)b * 10 + i : -1);
        next = recovered + 1;
        ck_assert_int_eq(store_close(s), ST_OK);
    }
    ck_assert_uint_gt(runs_seen, 10); /* the flusher did write runs under the writers */
    store_fs_free(fs);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* the log's last row is superseded in the memtable (upsert then delete of the same
 * id); the flush drops it. Open #1 cuts the log to the rows named; open #2 must still open. */
START_TEST(test_reopen_twice_after_flush)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 10, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 9, 1, 101, 0, STORE_OP_DELETE), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    for (int pass = 0; pass < 2; pass++) {
        s = vt_open(dir, dim, 1u << 20); /* fails the test, with its message, unless it opens */
        ck_assert_int_eq(val_of(s, dim, 3), 3);
        ck_assert_int_eq(val_of(s, dim, 9), -1);
        ck_assert_int_eq(store_close(s), ST_OK);
    }
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* a run merge (MERGE_META) drops the log's highest named row (an older-ts version
 * of an id the other input holds newer). Open #1 cuts the log to the rows still named; open
 * #2 must still open. */
START_TEST(test_reopen_twice_after_meta_merge)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 5, 100, 0, STORE_OP_UPSERT), ST_OK); /* rows 0..4 */
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 5, 4, 100, 5, STORE_OP_UPSERT), ST_OK); /* rows 5..8 */
    ck_assert_int_eq(put_batch(s, dim, 2, 0, 1, 50, 900, STORE_OP_UPSERT),
                     ST_OK); /* row 9, older ts */
    ck_assert_int_eq(store_flush(s), ST_OK);
    size_t n;
    uint64_t *in = segs_of(s, 0, &n, NULL);
    ck_assert_uint_eq(n, 2);
    struct store_segment_info out;
    ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_RUN, 0, NULL, &out), ST_OK);
    free(in);
    ck_assert_uint_ne(out.vector_file, 0); /* MERGE_META */
    ck_assert_int_eq(val_of(s, dim, 0), 0);
    ck_assert_int_eq(store_close(s), ST_OK);
    for (int pass = 0; pass < 2; pass++) {
        s = vt_open(dir, dim, 1u << 20); /* fails the test, with its message, unless it opens */
        ck_assert_int_eq(val_of(s, dim, 0), 0);
        ck_assert_int_eq(val_of(s, dim, 8), 8);
        ck_assert_int_eq(store_close(s), ST_OK);
    }
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* drop a window whose records are still only in the memtable/WAL (no flush first):
 * the store must still open afterwards. */
START_TEST(test_drop_unflushed)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 10, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 100, 10, 1100, 100, STORE_OP_UPSERT), ST_OK);
    size_t removed;
    /* the memtable names the log's rows: refused, nothing changed (the log is closed) */
    ck_assert_int_eq(store_drop_window(s, 0, NULL, &removed), ST_EAGAIN);
    ck_assert_int_eq(val_of(s, dim, 3), 3);
    ck_assert_int_eq(put_batch(s, dim, 2, 50, 5, 100, 50, STORE_OP_UPSERT), ST_OK); /* inline */
    ck_assert_int_eq(store_close(s), ST_OK);
    s = vt_open(dir, dim, 1u << 20); /* reopens after a refused drop */
    ck_assert_int_eq(val_of(s, dim, 3), 3);
    ck_assert_int_eq(val_of(s, dim, 52), 52);
    ck_assert_int_eq(store_flush(s), ST_OK); /* as twcs does before a drop */
    ck_assert_int_eq(store_drop_window(s, 0, NULL, &removed), ST_OK);
    ck_assert_uint_gt(removed, 0);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = vt_open(dir, dim, 1u << 20); /* and after the drop */
    ck_assert_int_eq(val_of(s, dim, 3), -1);
    ck_assert_int_eq(val_of(s, dim, 100), 100);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A process crash leaves WAL records and their log rows in the page cache only.
 * Recovery replays them, fsyncs the WAL and reports them durable; the logs it read the rows
 * from are not fsynced. A power cut then must not lose what the reopen reported durable. */
START_TEST(test_recovery_fsyncs_logs)
{
    char *dir = st_test_tmpdir("vlog");
    struct store_fs *fs = store_fs_sim_new();
    struct store_opts o = {.dir = dir,
                           .dim = 8,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .memtable_size = 1u << 20,
                           .fs = fs};
    struct store *crashed = NULL, *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &crashed, &err) == ST_OK, "%s", err.msg);
    for (int b = 0; b < 10; b++)
        ck_assert_int_eq(put_batch(crashed, 8, b, b * 10, 10, 100 + b, b * 10, STORE_OP_UPSERT),
                         ST_OK);
    /* the process dies here: nothing fsynced, the page cache keeps it all; a new process */
    o.wal_sync = STORE_SYNC_ALWAYS;
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    int64_t reported = -1;
    ck_assert_int_eq(store_durable_offset(s, 0, &reported), ST_OK);
    ck_assert_int_eq(reported, 9);
    store_fs_sim_crash(fs); /* power cut: unsynced bytes vanish */
    (void)store_close(s);
    (void)store_close(crashed);
    store_fs_sim_revive(fs);
    s = NULL;
    int rc = store_open(&o, &s, &err);
    ck_assert_msg(rc == ST_OK, "reopen after power cut: %s", err.msg);
    int64_t recovered = -1;
    if (store_durable_offset(s, 0, &recovered) != ST_OK)
        recovered = -1;
    ck_assert_msg(recovered >= reported, "recovered %lld < reported durable %lld",
                  (long long)recovered, (long long)reported);
    ck_assert_int_eq(store_close(s), ST_OK);
    store_fs_free(fs);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* a fetched run naming another file's rows with a lying row count: refused as
 * corruption (not ENOMEM, no giant allocation first). */
START_TEST(test_external_huge_nrows)
{
    char *dir = st_test_tmpdir("vlog");
    char rpath[600];
    snprintf(rpath, sizeof(rpath), "%s/000008.seg", dir);
    struct store_seg_in in[1] = {{.id = (const uint8_t *)"a", .id_len = 1, .ts = 5, .row = 3}};
    struct store_seg_meta meta = {0, 1000, STORE_SEG_RUN, 0, true, 7, 4};
    struct st_err err = {0};
    uint64_t bytes;
    ck_assert_int_eq(store_segment_write(NULL, rpath, 4, &meta, in, 1, &bytes, &err), ST_OK);
    int fd = open(rpath, O_RDWR);
    uint8_t ft[256];
    ck_assert_int_eq(pread(fd, ft, 256, (off_t)bytes - 256), 256);
    st_put_le64(ft + 200, 1ull << 45); /* 4 PiB bitmap / 2^45 rows */
    st_put_le32(ft + 248, st_checksum32(ft, 248));
    ck_assert_int_eq(pwrite(fd, ft, 256, (off_t)bytes - 256), 256);
    close(fd);
    struct store_segment *g = NULL;
    int rc = store_segment_open_file(rpath, &g, &err);
    ck_assert_int_eq(rc, ST_ECORRUPT);
    ck_assert_ptr_null(g);
    /* inside its store too: more rows than 32-bit row entries name */
    rc = store_segment_open(rpath, true, &g, &err);
    ck_assert_int_eq(rc, ST_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "row table") != NULL, "%s", err.msg);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* The newest .log file of dir (its number). */
static uint64_t newest_wal(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t num = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        uint64_t n = strtoull(de->d_name, NULL, 10);
        if (l > 4 && strcmp(de->d_name + l - 4, ".log") == 0 && n > num)
            num = n;
    }
    closedir(d);
    ck_assert_uint_gt(num, 0);
    return num;
}

/* What wal_rewrite changes in the first record of a WAL record (a BATCH_REFS record whose
 * first record is an upsert with a 1-byte id length and no meta). */
struct wal_lie {
    bool row_set; /* it names row `row` of its log, with checksum `sum` */
    uint32_t row, sum;
    bool window_set; /* it moves to window [win, win + WIN) with ts win + 50 */
    int64_t win;
};

/* Rewrites WAL file `num` with `lie` told in its record `rec`. Every frame is written again,
 * so every checksum is valid: the bytes lie only about layout. */
static void wal_rewrite(const char *dir, uint64_t num, size_t rec, const struct wal_lie *lie)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%06llu.log", dir, (unsigned long long)num);
    uint8_t *data;
    size_t len;
    ck_assert_int_eq(store_fs_read_all(path, &data, &len, SIZE_MAX), ST_OK);
    struct store_log_reader r;
    store_log_reader_init(&r, data, len);
    uint8_t *pay[64];
    size_t plen[64], n = 0, off;
    const uint8_t *p;
    while (n < 64 && store_log_next(&r, &p, &plen[n], &off) == 1) {
        pay[n] = malloc(plen[n]);
        memcpy(pay[n], p, plen[n]);
        n++;
    }
    store_log_reader_destroy(&r);
    free(data);
    ck_assert_uint_gt(n, rec);
    uint8_t *q = pay[rec];
    ck_assert_uint_eq(q[0], 2); /* BATCH_REFS */
    size_t o = 17;
    ck_assert_uint_eq(q[o++], STORE_OP_UPSERT);
    ck_assert_uint_lt(q[o], 128);
    o += 1 + q[o]; /* id */
    if (lie->window_set) {
        st_put_le64(q + o, (uint64_t)(lie->win + 50));
        st_put_le64(q + o + 8, (uint64_t)lie->win);
        st_put_le64(q + o + 16, (uint64_t)(lie->win + WIN));
    }
    o += 24;                      /* ts, window */
    ck_assert_uint_eq(q[o++], 0); /* no meta */
    ck_assert_uint_eq(q[o++], 1); /* the vector is a row of a log */
    if (lie->row_set) {
        st_put_le32(q + o + 8, lie->row);
        st_put_le32(q + o + 12, lie->sum);
    }
    ck_assert_int_eq(unlink(path), 0);
    struct store_file *f;
    ck_assert_int_eq(store_fs_open_append(NULL, path, &f, "t.open"), ST_OK);
    struct store_log_writer w;
    ck_assert_int_eq(store_log_writer_init(&w, f, "t.write"), ST_OK);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(store_log_append(&w, pay[i], plen[i]), ST_OK);
        free(pay[i]);
    }
    store_log_writer_destroy(&w);
    store_fs_close(f);
}

/* Record `rec` of WAL file `num` names row `row` of its log with checksum sum. */
static void wal_rename_row(const char *dir, uint64_t num, size_t rec, uint32_t row, uint32_t sum)
{
    struct wal_lie lie = {.row_set = true, .row = row, .sum = sum};
    wal_rewrite(dir, num, rec, &lie);
}

/* The checksum of row `row` of log vnum as a WAL record carries it. */
static uint32_t row_sum(const char *dir, uint64_t vnum, uint32_t dim, uint32_t row)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%06llu.seg", dir, (unsigned long long)vnum);
    float v[64];
    ck_assert_uint_le(dim, 64);
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, v, dim * 4, (off_t)(STORE_SEG_HEADER + (uint64_t)row * dim * 4)),
                     (ssize_t)(dim * 4));
    close(fd);
    return st_checksum32(v, dim * 4);
}

/* Appends one edit group to the manifest CURRENT names (the store closed). */
static void mf_append(const char *dir, const struct store_mf_edit *e)
{
    char *p = st_test_manifest_path(dir);
    struct store_file *f;
    ck_assert_int_eq(store_fs_open_append(NULL, p, &f, "t.open"), ST_OK);
    struct store_log_writer w;
    ck_assert_int_eq(store_log_writer_init(&w, f, "t.write"), ST_OK);
    ck_assert_int_eq(store_log_append(&w, e->buf, e->len), ST_OK);
    store_log_writer_destroy(&w);
    store_fs_close(f);
    free(p);
}

/* The one vector log the manifest lists (its number), and the manifest's next file number. */
static uint64_t listed_log(const char *dir, uint64_t *next_file)
{
    struct st_err err = {0};
    struct store_mf_state mf = {0};
    uint64_t mfn;
    ck_assert_int_eq(store_mf_load(dir, &mf, &mfn, &err), ST_OK);
    ck_assert_uint_eq(mf.nvlogs, 1);
    uint64_t vnum = mf.vlogs[0].file_number;
    if (next_file != NULL)
        *next_file = mf.next_file;
    store_mf_state_free(&mf);
    return vnum;
}

/* A run numbered num, listed by the manifest (the store closed), of window [win, win + WIN)
 * whose one record "x" names row `row` of file vf (its vector file, 10 rows claimed). */
static void craft_run(const char *dir, uint64_t num, int64_t win, uint64_t vf, uint32_t row)
{
    char rpath[600];
    snprintf(rpath, sizeof(rpath), "%s/%06llu.seg", dir, (unsigned long long)num);
    struct store_seg_in in = {.id = (const uint8_t *)"x", .id_len = 1, .ts = win + 50, .row = row};
    struct store_seg_meta meta = {win, win + WIN, STORE_SEG_RUN, 0, true, vf, 10};
    uint64_t bytes;
    struct st_err err = {0};
    ck_assert_int_eq(store_segment_write(NULL, rpath, 8, &meta, &in, 1, &bytes, &err), ST_OK);
    struct store_mf_edit e = {0};
    struct store_mf_seg g = {.file_number = num,
                             .meta = meta,
                             .count = 1,
                             .bytes = bytes,
                             .min_ts = win + 50,
                             .max_ts = win + 50};
    ck_assert_int_eq(store_mf_edit_add_segment(&e, &g), ST_OK);
    ck_assert_int_eq(store_mf_edit_next_file(&e, num + 1), ST_OK);
    mf_append(dir, &e);
    store_mf_edit_free(&e);
}

/* Open refuses dir as corrupt, saying `want`. */
static void expect_refused(const char *dir, bool pitr, int variant, const char *want)
{
    struct st_err err = {0};
    int rc;
    struct store *s = vt_open_opts(dir, 8, 1u << 20, pitr, &err, &rc);
    ck_assert_msg(rc == ST_ECORRUPT, "variant %d: open gave %d (%s)", variant, rc, err.msg);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err.msg, want) != NULL, "variant %d: %s", variant, err.msg);
}

/*
 * A vector-log row is written once and named by one record. Bytes with valid checksums that
 * name one row twice — two WAL records, a WAL record and a run, two runs — once opened, made
 * every later flush or seal of the window refuse its run ("names row R, already another's")
 * and retry forever while writes stalled behind it. Open refuses them, saying where; the same
 * store without the lie opens and seals.
 */
START_TEST(test_row_named_twice_refused)
{
    for (int variant = 0; variant < 3; variant++) {
        char *dir = st_test_tmpdir("vlog");
        if (variant == 0) {
            crash_after_batches(dir, 2, false,
                                false); /* rows 0..19, both batches in one WAL file */
            uint64_t vnum = only_vlog(dir);
            /* batch 1's id-10 names row 0 (id-0's) with row 0's true checksum */
            wal_rename_row(dir, newest_wal(dir), 1, 0, row_sum(dir, vnum, 8, 0));
        } else if (variant == 1) {
            crash_after_batches(dir, 2, false,
                                true); /* a run names rows 0..9; batch 1 in a new WAL */
            uint64_t vnum = listed_log(dir, NULL);
            wal_rename_row(dir, newest_wal(dir), 0, 3, row_sum(dir, vnum, 8, 3));
        } else {
            crash_after_batches(dir, 1, false, true); /* a run names rows 0..9 */
            uint64_t num, vnum = listed_log(dir, &num);
            craft_run(dir, num, 0, vnum, 3); /* a second run, whose "x" names row 3 too */
        }
        const char *want[] = {"names row 0 of vector log", "names row 3 of vector log",
                              "another run names too"};
        expect_refused(dir, false, variant, want[variant]);
        /* point-in-time recovery does not paper over it either: it is not a torn tail */
        expect_refused(dir, true, variant, want[variant]);
        /* and `strata inspect` says so (exit 1), though every file's checksums are valid */
        char text[8192];
        ck_assert_int_eq(st_test_cli(text, sizeof(text), "inspect '%s'", dir), 1);
        ck_assert_msg(strstr(text, "CORRUPT") != NULL && strstr(text, want[variant]) != NULL, "%s",
                      text);
        st_test_rmrf(dir);
        free(dir);
        /* the same history without the lie opens, and its window seals */
        dir = st_test_tmpdir("vlog");
        crash_after_batches(dir, variant == 2 ? 1 : 2, false, variant != 0);
        struct store *s = vt_open(dir, 8, 1u << 20);
        struct store_segment_info out;
        ck_assert_int_eq(seal(s, 0, 1, &out), ST_OK);
        for (int k = 0; k < (variant == 2 ? 10 : 20); k++)
            ck_assert_int_eq(val_of(s, 8, k), k);
        ck_assert_int_eq(store_close(s), ST_OK);
        st_test_rmrf(dir);
        free(dir);
    }
}
END_TEST

/* Record `rec` of WAL file `num` moves to window [win, win + WIN), naming the same row. */
static void wal_move_window(const char *dir, uint64_t num, size_t rec, int64_t win)
{
    struct wal_lie lie = {.window_set = true, .win = win};
    wal_rewrite(dir, num, rec, &lie);
}

/*
 * A run or a WAL record names rows of its own window's vector log, which a seal or a drop takes
 * out together with the runs naming it. Valid bytes that say otherwise — a WAL record of window
 * 1000 naming a row of window 0's log, a run of window 1000 naming window 0's log, a run naming
 * a file the manifest lists as no log (a copy of the log numbered past next_file, which a later
 * flush would have been handed and renamed over) — opened, made window 0's seal fail for good
 * and a drop delete rows another window still named. Open refuses them, and removes nothing.
 */
START_TEST(test_log_of_another_window_refused)
{
    for (int variant = 0; variant < 3; variant++) {
        char *dir = st_test_tmpdir("vlog");
        char keep[600] = "";
        if (variant == 0) {
            crash_after_batches(dir, 2, false, false);
            wal_move_window(dir, newest_wal(dir), 1, WIN);
        } else {
            crash_after_batches(dir, 1, false, true); /* a run names rows 0..9 of log L */
            uint64_t num, vnum = listed_log(dir, &num), vf = vnum;
            if (variant == 2) { /* a copy of the log, numbered past next_file, listed nowhere */
                vf = num + 5;
                char from[600], cmd[1400];
                snprintf(from, sizeof(from), "%s/%06llu.seg", dir, (unsigned long long)vnum);
                snprintf(keep, sizeof(keep), "%s/%06llu.seg", dir, (unsigned long long)vf);
                snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, keep);
                ck_assert_int_eq(system(cmd), 0);
            }
            craft_run(dir, num, variant == 1 ? WIN : 0, vf, 3);
        }
        expect_refused(dir, false, variant,
                       variant == 0 ? "of window 0 for a record of window 1000"
                                    : "which is not the vector log of its window");
        if (variant == 2) { /* what a listed run names is never removed as a leftover */
            struct stat st;
            ck_assert_int_eq(stat(keep, &st), 0);
        }
        st_test_rmrf(dir);
        free(dir);
    }
}
END_TEST

/*
 * strata inspect on a store a process is writing: windows created, flushed, sealed and merged
 * under it. A read that a manifest change overtook (a log created, a run merged away, a WAL file
 * retired) is read again: never CORRUPT, never "not found" for a store that is whole (before,
 * about 6 % of such inspects reported one or the other).
 */
START_TEST(test_inspect_live_store)
{
    char *dir = st_test_tmpdir("vlog");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store *s = vt_open(dir, 8, 64u << 10);
        for (int b = 0;; b++) {
            int64_t win = (int64_t)(b / 4) * WIN;
            if (put_batch(s, 8, b, (b % 40) * 10, 10, win + 10 + b % 4, b, STORE_OP_UPSERT) !=
                ST_OK)
                _exit(2);
            if (b % 2 == 1 && store_flush(s) != ST_OK)
                _exit(3);
            if (b % 4 == 3 && b >= 11) { /* seal the window before the last one */
                int64_t old = win - WIN;
                store_window_close_log(s, old);
                size_t n;
                uint64_t *in = segs_of(s, old, &n, NULL);
                struct store_segment_info out;
                int rc = n > 0 ? store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, &out) : ST_OK;
                free(in);
                if (rc != ST_OK && rc != ST_EAGAIN && rc != ST_ENOTFOUND)
                    _exit(4);
                /* and windows older than four go (a drop: the store stays small) */
                size_t gone;
                int drc = old >= 4 * WIN ? store_drop_window(s, old - 4 * WIN, NULL, &gone) : ST_OK;
                if (drc != ST_OK && drc != ST_EAGAIN)
                    _exit(5);
            }
        }
    }
    char cur[700];
    snprintf(cur, sizeof(cur), "%s/CURRENT", dir);
    int64_t deadline = st_test_now_ms() + 10000;
    while (access(cur, F_OK) != 0 && st_test_now_ms() < deadline)
        st_test_sleep_ms(5);
    ck_assert_int_eq(access(cur, F_OK), 0);
    int verdicts = 0;
    for (int i = 0; i < 60; i++) {
        char text[1 << 16];
        int rc = st_test_cli(text, sizeof(text), "inspect '%s'", dir);
        /* "not found" only inside a give-up's own line, which names the last read that a
         * change overtook (as it did under a loaded CI run: "changed during each of 5 opens;
         * last: …: cannot read: not found") */
        bool stray = false;
        for (const char *l = text; l != NULL && *l != '\0';) {
            const char *e = strchr(l, '\n');
            size_t len = e != NULL ? (size_t)(e - l) : strlen(l);
            char line[1024];
            snprintf(line, sizeof(line), "%.*s", (int)(len < 1023 ? len : 1023), l);
            stray |=
                strstr(line, "not found") != NULL && strstr(line, "changed during each") == NULL;
            l = e != NULL ? e + 1 : NULL;
        }
        ck_assert_msg(strstr(text, "CORRUPT") == NULL && !stray,
                      "inspect %d of a live store: exit %d\n%s", i, rc, text);
        if (rc == 0)
            verdicts++;
        else
            ck_assert_msg(rc == 1 && strstr(text, "changed during each") != NULL, "exit %d\n%s", rc,
                          text);
    }
    ck_assert_int_gt(verdicts, 0);
    int status;
    ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "the writer stopped (status %d)", status);
    kill(pid, SIGKILL); /* it was writing throughout */
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* every record of window 0 is superseded (same ids, newer ts, window 1) inside one
 * memtable: window 0 gets no run, so twcs's seal_window takes the nin == 0 path and removes the
 * window without a store_merge; nothing ever takes window 0's log out. */
START_TEST(test_log_of_empty_window)
{
    const uint32_t dim = 8;
    char *dir = st_test_tmpdir("vlog");
    struct store *s = vt_open(dir, dim, 1u << 20);
    ck_assert_int_eq(put_batch(s, dim, 0, 0, 100, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, dim, 1, 0, 100, WIN + 100, 0, STORE_OP_UPSERT), ST_OK);
    store_window_close_log(s, 0);
    ck_assert_int_eq(store_flush(s), ST_OK);
    size_t n;
    free(segs_of(s, 0, &n, NULL));
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(st.vlogs, 2);
    /* twcs removes such a window with a drop of no segment, which takes its log */
    size_t removed;
    ck_assert_int_eq(store_drop_window(s, 0, NULL, &removed), ST_OK);
    ck_assert_uint_eq(removed, 0);
    store_stats(s, &st);
    ck_assert_uint_eq(st.vlogs, 1); /* only window 1's log remains */
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- the vector-log writer thread ------------------------------------------------------------ */

/* Holds the writer thread inside "store.vlog.append" (before its pwritev) while `hold`. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hold;
    int entered;
};

static struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};

static void gate_fn(void *ctx)
{
    struct gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->entered++;
    pthread_cond_broadcast(&g->cv);
    while (g->hold)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_set(bool hold)
{
    pthread_mutex_lock(&gate.mu);
    gate.hold = hold;
    if (hold)
        gate.entered = 0;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static int gate_entered(void)
{
    pthread_mutex_lock(&gate.mu);
    int e = gate.entered;
    pthread_mutex_unlock(&gate.mu);
    return e;
}

static struct store *bg_open(const char *dir)
{
    struct store_opts o = {.dir = dir,
                           .dim = 8,
                           .wal_sync = STORE_SYNC_BATCH,
                           .wal_sync_interval_ms = 1,
                           .memtable_size = 1u << 20};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    return s;
}

static int64_t durable0(struct store *s)
{
    int64_t d = -1;
    if (store_durable_offset(s, 0, &d) != ST_OK)
        return -1;
    return d;
}

/* A background store in dir with batch 0 (ids 0-9, offset 0) written and durable. */
static struct store *open_first_durable(const char *dir)
{
    struct store *s = bg_open(dir);
    ck_assert_int_eq(put_batch(s, 8, 0, 0, 10, 100, 0, STORE_OP_UPSERT), ST_OK);
    ck_assert(ST_WAIT_UNTIL(durable0(s) == 0, 10000));
    return s;
}

/* Holds the writer thread at its next vector-log append (gate_set(false) lets it go). */
static void hold_writer(void)
{
    gate_set(true);
    ck_assert_int_eq(st_fault_hook("store.vlog.append", gate_fn, &gate), ST_OK);
}

/* Lets the held writer thread go, joins th (the thread that waited on it), disarms the hook. */
static void release_writer(pthread_t th)
{
    gate_set(false);
    pthread_join(th, NULL);
    st_fault_disarm_all();
}

/* Reopens dir and finds ids 0..n-1 with their values, then closes it. */
static void assert_reopened(const char *dir, int n)
{
    struct store *s = bg_open(dir);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(val_of(s, 8, i), i);
    ck_assert_int_eq(store_close(s), ST_OK);
}

static uint64_t log_number(struct store *s, int64_t window)
{
    pthread_mutex_lock(&s->mu);
    struct store_vlog *v = store_vlog_find_locked(s, window);
    uint64_t n = v != NULL ? v->number : 0;
    pthread_mutex_unlock(&s->mu);
    ck_assert_uint_gt(n, 0);
    return n;
}

/*
 * A write returns once its WAL record and memtable copy are in, before the writer thread has
 * appended its rows: held inside the append, the rows are not in the log file, the batch is
 * readable (from the memtable) but never reported durable, however often the group commit
 * (every millisecond) runs; released, it becomes durable and the file holds exactly its rows.
 */
START_TEST(test_writer_thread_held)
{
    char *dir = st_test_tmpdir("vlog");
    struct store *s = open_first_durable(dir);
    uint64_t num = log_number(s, 0);
    uint64_t before = file_size(dir, num);
    ck_assert_uint_eq(before, STORE_SEG_HEADER + 10 * 8 * 4);
    hold_writer();
    ck_assert_int_eq(put_batch(s, 8, 1, 10, 10, 200, 10, STORE_OP_UPSERT), ST_OK);
    ck_assert(ST_WAIT_UNTIL(gate_entered() == 1, 10000)); /* the writer is inside the append */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(val_of(s, 8, 10 + i), 10 + i);
    /* 200 group-commit periods: the batch is never durable while its rows are not written */
    for (int64_t dl = st_test_now_ms() + 200; st_test_now_ms() < dl;)
        ck_assert_int_eq(durable0(s), 0);
    ck_assert_uint_eq(file_size(dir, num), before);
    gate_set(false);
    ck_assert(ST_WAIT_UNTIL(durable0(s) == 1, 10000));
    st_fault_disarm_all();
    ck_assert_uint_eq(file_size(dir, num), before + 10 * 8 * 4);
    ck_assert_int_eq(store_close(s), ST_OK);
    assert_reopened(dir, 20);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * Killed (SIGKILL) while the writer thread holds two written batches' rows: their WAL records
 * are in the page cache, their rows are not in the log, so they were never durable (the child
 * saw the durable mark stay at batch 0) and recovery cuts them off whole: batch 0 is there,
 * batches 1 and 2 are not, the store opens, and they can be written again.
 */
START_TEST(test_writer_thread_killed_while_held)
{
    char *dir = st_test_tmpdir("vlog");
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        struct store *s = bg_open(dir);
        if (put_batch(s, 8, 0, 0, 10, 100, 0, STORE_OP_UPSERT) != ST_OK ||
            !ST_WAIT_UNTIL(durable0(s) == 0, 10000))
            _exit(3);
        gate_set(true);
        if (st_fault_hook("store.vlog.append", gate_fn, &gate) != ST_OK ||
            put_batch(s, 8, 1, 10, 10, 200, 10, STORE_OP_UPSERT) != ST_OK ||
            put_batch(s, 8, 2, 20, 10, 300, 20, STORE_OP_UPSERT) != ST_OK ||
            !ST_WAIT_UNTIL(gate_entered() == 1, 10000))
            _exit(4);
        int64_t d = durable0(s);
        if (write(p[1], &d, sizeof(d)) != (ssize_t)sizeof(d))
            _exit(5);
        for (;;)
            pause(); /* held until killed */
    }
    close(p[1]);
    int64_t d = -2;
    ck_assert_int_eq(read(p[0], &d, sizeof(d)), (ssize_t)sizeof(d));
    close(p[0]);
    ck_assert_int_eq(d, 0);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    struct store *s = bg_open(dir);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(val_of(s, 8, i), i);
    for (int i = 10; i < 30; i++)
        ck_assert_int_eq(val_of(s, 8, i), -1);
    ck_assert_int_eq(put_batch(s, 8, 1, 10, 10, 200, 10, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, 8, 2, 20, 10, 300, 20, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_sync(s), ST_OK);
    ck_assert_int_eq(durable0(s), 2);
    ck_assert_int_eq(store_close(s), ST_OK);
    assert_reopened(dir, 30);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

struct writer_arg {
    struct store *s;
    int n;
    int rc;
};

static void *write_many(void *arg)
{
    struct writer_arg *w = arg;
    for (int b = 0; b < w->n && w->rc == ST_OK; b++)
        w->rc = put_batch(w->s, 8, b, b, 1, 100 + b, b, STORE_OP_UPSERT);
    return NULL;
}

/* The writer thread's queue is bounded: with the writer held, a writer of many batches stops
 * (counted in vlog_waits) instead of queueing without end, and goes on once released. */
START_TEST(test_writer_thread_queue_bound)
{
    char *dir = st_test_tmpdir("vlog");
    struct store *s = bg_open(dir);
    hold_writer();
    struct writer_arg w = {s, 200, ST_OK};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, write_many, &w), 0);
    struct store_stats st;
    ck_assert(ST_WAIT_UNTIL((store_stats(s, &st), st.vlog_waits > 0), 10000));
    ck_assert_uint_lt(st.memtable_records, 200); /* it stopped short of the end */
    release_writer(th);
    ck_assert_int_eq(w.rc, ST_OK);
    ck_assert_int_eq(store_sync(s), ST_OK);
    ck_assert_int_eq(durable0(s), 199);
    ck_assert_int_eq(store_close(s), ST_OK);
    assert_reopened(dir, 200);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * A record older than the version the memtable holds is not inserted, but its row was
 * reserved and its WAL record names it with a checksum: the writer must append that row's real
 * bytes (from a copy: the caller's buffer is gone). Recovery checks every named row, so with
 * wrong bytes it would cut the WAL there and lose the batch after it.
 */
START_TEST(test_writer_thread_older_version_row)
{
    char *dir = st_test_tmpdir("vlog");
    struct store *s = bg_open(dir);
    ck_assert_int_eq(put_batch(s, 8, 0, 0, 10, 500, 0, STORE_OP_UPSERT), ST_OK);
    /* ids 0..9 again, older (ts 100 < 500), other values: stored as rows, not inserted */
    ck_assert_int_eq(put_batch(s, 8, 1, 0, 10, 100, 70, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(put_batch(s, 8, 2, 10, 10, 600, 10, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_sync(s), ST_OK);
    ck_assert_int_eq(durable0(s), 2);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = bg_open(dir); /* replays all three records, each row checked */
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(val_of(s, 8, i), i);
    ck_assert_int_eq(durable0(s), 2);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

static void *flush_thread(void *arg)
{
    struct writer_arg *w = arg;
    w->rc = store_flush(w->s);
    return NULL;
}

/* A flush (a freeze) while the writer thread holds a batch's rows: the freeze waits for the
 * job before fsyncing the logs, so the batch is not durable while its rows are unwritten (a
 * freeze that did not wait published it durable: Kafka would have been told to commit it), and
 * every record is there after a reopen. */
START_TEST(test_writer_thread_freeze_waits)
{
    char *dir = st_test_tmpdir("vlog");
    struct store *s = open_first_durable(dir);
    hold_writer();
    ck_assert_int_eq(put_batch(s, 8, 1, 10, 10, 200, 10, STORE_OP_UPSERT), ST_OK);
    ck_assert(ST_WAIT_UNTIL(gate_entered() == 1, 10000));
    struct writer_arg w = {s, 0, ST_OK};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, flush_thread, &w), 0);
    /* for as long as the writer is held (300 ms here), offset 1 never becomes durable */
    for (int64_t dl = st_test_now_ms() + 300; st_test_now_ms() < dl;)
        ck_assert_int_eq(durable0(s), 0);
    release_writer(th);
    ck_assert_int_eq(w.rc, ST_OK);
    ck_assert_int_eq(durable0(s), 1);
    ck_assert_int_eq(store_close(s), ST_OK);
    assert_reopened(dir, 20);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* EIO in the writer thread: the store fails, the writer blocked on the full queue and a sync
 * wake with the error, the batch is never durable, and a reopen has at least what was. */
START_TEST(test_writer_thread_eio)
{
    char *dir = st_test_tmpdir("vlog");
    struct store *s = open_first_durable(dir);
    hold_writer();
    struct writer_arg w = {s, 200, ST_OK};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, write_many, &w), 0);
    struct store_stats st;
    ck_assert(ST_WAIT_UNTIL((store_stats(s, &st), st.vlog_waits > 0), 10000));
    st_fault_disarm_all();
    ck_assert_int_eq(st_fault_arm("store.vlog.append", 0, 1, ST_EIO), ST_OK);
    gate_set(false); /* the held job was past the hook already: the next one fails */
    pthread_join(th, NULL);
    ck_assert_int_ne(w.rc, ST_OK);
    ck_assert_int_ne(store_sync(s), ST_OK);
    int64_t d = durable0(s);
    ck_assert_int_ne(store_close(s), ST_OK);
    st_fault_disarm_all();
    s = bg_open(dir);
    int64_t applied = -1;
    if (store_applied_offset(s, 0, &applied) != ST_OK)
        applied = -1;
    ck_assert_int_ge(applied, d);
    for (int i = 0; i <= d; i++)
        ck_assert_int_eq(val_of(s, 8, i), i);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A caller's row checksum (vec_sum_set, computed on its own threads) is what the WAL carries:
 * the right one replays after a crash like the store's own; a wrong one names a row that
 * recovery refuses, so the replay ends before that batch (it was never acknowledged as
 * durable here: wal_sync none) and the batches before it stay. */
START_TEST(test_caller_row_sums)
{
    const uint32_t dim = 8;
    for (int wrong = 0; wrong < 2; wrong++) {
        char *dir = st_test_tmpdir("vlog");
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            struct store *s = vt_open(dir, dim, 1u << 20);
            for (int b = 0; b < 4; b++) {
                struct store_record r[10];
                float v[10][8];
                char ids[10][16];
                for (int i = 0; i < 10; i++) {
                    snprintf(ids[i], sizeof(ids[i]), "id-%d", b * 10 + i);
                    vec_of(v[i], dim, b * 10 + i);
                    uint32_t sum = st_checksum32(v[i], sizeof(v[i]));
                    r[i] =
                        (struct store_record){.id = (const uint8_t *)ids[i],
                                              .id_len = (uint32_t)strlen(ids[i]),
                                              .ts = 100,
                                              .window = 0,
                                              .window_end = WIN,
                                              .op = STORE_OP_UPSERT,
                                              .vec = v[i],
                                              .vec_sum = wrong && b == 2 && i == 3 ? sum ^ 1 : sum,
                                              .vec_sum_set = true};
                }
                struct store_batch batch = {.partition = 0, .offset = b, .n = 10, .recs = r};
                if (store_write(s, &batch, NULL) != ST_OK)
                    _exit(2);
            }
            _exit(0); /* no close: recovery replays the WAL and checks every row */
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
#ifndef NDEBUG
        if (wrong) { /* debug builds check every caller sum: the write itself aborts */
            ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                          "a wrong caller sum was not caught by the debug check");
            st_test_rmrf(dir);
            free(dir);
            continue;
        }
#endif
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        struct store *s = vt_open(dir, dim, 1u << 20);
        check_prefix(s, wrong ? 2 : 4, 4);
        ck_assert_int_eq(store_close(s), ST_OK);
        st_test_rmrf(dir);
        free(dir);
    }
}
END_TEST

/* A process crash while the writer thread appends rows with O_DIRECT (large batches, a disk's
 * file system): the reopen replays every batch the WAL holds, each row checked against its
 * record's sum, and every value reads back — from direct-written rows. */
START_TEST(test_crash_replays_direct_rows)
{
    const uint32_t dim = 512; /* 2 KiB rows, 200 a batch: 400 KiB appends */
    const int batches = 12, per = 200;
    char *dir = st_test_disk_tmpdir("vlog");
    struct store_opts o = {.dir = dir,
                           .dim = dim,
                           .wal_sync = STORE_SYNC_BATCH,
                           .memtable_size = 64u << 20,
                           .max_frozen = 64};
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct store *s = NULL;
        struct st_err err = {0};
        if (store_open(&o, &s, &err) != ST_OK)
            _exit(2);
        for (int b = 0; b < batches; b++) {
            if (put_batch(s, dim, b, b * per, per, 100, b * per, STORE_OP_UPSERT) != ST_OK)
                _exit(3);
            if (b == batches / 2 && store_sync(s) != ST_OK)
                _exit(4);
        }
        if (store_sync(s) != ST_OK)
            _exit(5);
        pthread_mutex_lock(&s->mu);
        bool direct = s->nvlogs == 1 && store_fs_is_direct(s->vlogs[0]->f);
        pthread_mutex_unlock(&s->mu);
        _exit(direct ? 0 : 6); /* no close: the WAL is replayed */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    struct st_err err = {0};
    struct store *s = NULL;
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    int64_t mark = -1;
    ck_assert_int_eq(store_applied_offset(s, 0, &mark), ST_OK);
    ck_assert_int_eq(mark, batches - 1);
    for (int k = 0; k < batches * per; k++)
        ck_assert_int_eq(val_of(s, dim, k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Page-cache pages of path's first len bytes that are resident (mincore on a mapping). */
static size_t resident_pages(const char *path, size_t len)
{
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(m, MAP_FAILED);
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (len + pg - 1) / pg, in = 0;
    unsigned char *vec = malloc(n);
    ck_assert_int_eq(mincore(m, len, vec), 0);
    for (size_t i = 0; i < n; i++)
        in += vec[i] & 1;
    free(vec);
    munmap(m, len);
    close(fd);
    return in;
}

/* A window's rows go to its log with O_DIRECT, not through the page cache, where the
 * vector-log writer thread appends them (wal_sync batch) and the file system is a disk's;
 * with vlog_buffered, or where writes append in place (wal_sync none), they go through the
 * cache. Either way the rows read back whole, before and after a reopen. */
START_TEST(test_log_rows_bypass_page_cache)
{
    const uint32_t dim = 512; /* 2 KiB rows, 200 a batch: 400 KiB appends */
    const int batches = 20, per = 200;
    for (int mode = 0; mode < 3; mode++) { /* direct, vlog_buffered, wal_sync none */
        char *dir = st_test_disk_tmpdir("vlog");
        struct store_opts o = {.dir = dir,
                               .dim = dim,
                               .wal_sync = mode == 2 ? STORE_SYNC_NONE : STORE_SYNC_BATCH,
                               .memtable_size = 64u << 20,
                               .vlog_buffered = mode == 1};
        struct store *s = NULL;
        struct st_err err = {0};
        ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
        for (int b = 0; b < batches; b++)
            ck_assert_int_eq(put_batch(s, dim, b, b * per, per, 100, b * per, STORE_OP_UPSERT),
                             ST_OK);
        ck_assert_int_eq(store_sync(s), ST_OK); /* the writer thread has appended every row */
        pthread_mutex_lock(&s->mu);
        ck_assert_uint_eq(s->nvlogs, 1);
        ck_assert_int_eq(store_fs_is_direct(s->vlogs[0]->f), mode == 0);
        char *path = strdup(s->vlogs[0]->f->path);
        size_t len = (size_t)s->vlogs[0]->f->size;
        pthread_mutex_unlock(&s->mu);
        ck_assert_uint_eq(len, STORE_SEG_HEADER + (size_t)batches * per * dim * 4);
        size_t in = resident_pages(path, len), all = (len + 4095) / 4096;
        if (mode == 0)
            ck_assert_msg(in <= (size_t)batches + 2, "%zu of %zu pages of direct rows cached", in,
                          all);
        else
            ck_assert_msg(in > all / 2, "%zu of %zu pages cached through the page cache", in, all);
        for (int k = 0; k < batches * per; k += 7)
            ck_assert_int_eq(val_of(s, dim, k), k);
        ck_assert_int_eq(store_close(s), ST_OK);
        ck_assert_int_eq(store_open(&o, &s, &err), ST_OK);
        for (int b = batches; b < batches + 3; b++)
            ck_assert_int_eq(put_batch(s, dim, b, b * per, per, 100, b * per, STORE_OP_UPSERT),
                             ST_OK);
        for (int k = 0; k < (batches + 3) * per; k += 7)
            ck_assert_int_eq(val_of(s, dim, k), k);
        ck_assert_int_eq(store_close(s), ST_OK);
        free(path);
        st_test_rmrf(dir);
        free(dir);
    }
}
END_TEST

int main(void)
{
    Suite *su = suite_create("vlog");
    TCase *tc = tcase_create("vlog");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_write_once);
    tcase_add_test(tc, test_log_rows_bypass_page_cache);
    tcase_add_test(tc, test_caller_row_sums);
    tcase_add_test(tc, test_crash_replays_direct_rows);
    tcase_add_test(tc, test_rows_missing_end_replay);
    tcase_add_test(tc, test_rows_missing_before_last_wal);
    tcase_add_test(tc, test_late_data_and_reseal);
    tcase_add_test(tc, test_seal_takes_every_row);
    tcase_add_test(tc, test_drop_open_window);
    tcase_add_test(tc, test_external_rows_untrusted);
    tcase_add_test(tc, test_row_named_twice_refused);
    tcase_add_test(tc, test_log_of_another_window_refused);
    tcase_add_test(tc, test_inspect_live_store);
    tcase_add_loop_test(tc, test_write_crash_matrix, 0, 2);
    tcase_add_loop_test(tc, test_power_cut_matrix, 0, 2);
    tcase_add_test(tc, test_writer_thread_held);
    tcase_add_test(tc, test_writer_thread_killed_while_held);
    tcase_add_test(tc, test_writer_thread_queue_bound);
    tcase_add_test(tc, test_writer_thread_older_version_row);
    tcase_add_test(tc, test_writer_thread_freeze_waits);
    tcase_add_test(tc, test_writer_thread_eio);
    tcase_add_test(tc, test_power_loss_during_flushes);
    tcase_add_test(tc, test_run_claims_only_named_rows);
    tcase_add_test(tc, test_reopen_twice_after_flush);
    tcase_add_test(tc, test_reopen_twice_after_meta_merge);
    tcase_add_test(tc, test_drop_unflushed);
    tcase_add_test(tc, test_recovery_fsyncs_logs);
    tcase_add_test(tc, test_external_huge_nrows);
    tcase_add_test(tc, test_log_of_empty_window);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
