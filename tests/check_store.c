/*
 * Tests for store/: log framing and recovery rules, WAL torn tails at every byte, corruption
 * detection with file and offset, upsert/delete semantics across memtable and segments,
 * idempotent replay, power loss through the simulated file system, readers vs. removal,
 * fault points.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log_format.h"
#include "st_fault.h"
#include "st_log.h"
#include "st_test.h"
#include "store.h"
#include "store_int.h"
#include "store_log.h"

#define DIM 8

/* ---- helpers ------------------------------------------------------------------------------ */

static void fill_vec(float *v, int seed)
{
    for (int d = 0; d < DIM; d++)
        v[d] = (float)seed + (float)d / 16.0f;
}

static struct store *open_store(const char *dir, struct store_fs *fs, enum store_wal_sync sync,
                                bool background)
{
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = sync,
                           .fs = fs,
                           .no_background = !background,
                           .memtable_size = 1u << 20};
    struct store *s = NULL;
    struct st_err err = {0};
    int rc = store_open(&o, &s, &err);
    ck_assert_msg(rc == ST_OK, "store_open(%s): %s", dir, err.msg);
    return s;
}

static int try_open(const char *dir, bool pitr, struct st_err *err)
{
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_ALWAYS,
                           .no_background = true,
                           .point_in_time_recovery = pitr};
    struct store *s = NULL;
    int rc = store_open(&o, &s, err);
    if (rc == ST_OK)
        ck_assert_int_eq(store_close(s), ST_OK);
    return rc;
}

/* Writes one record "id-<k>" with ts, window, vector seeded by val, meta "m<val>". */
static int put(struct store *s, int32_t part, int64_t off, int k, int64_t ts, int val, uint8_t op)
{
    char id[32], meta[32];
    snprintf(id, sizeof(id), "id-%d", k);
    snprintf(meta, sizeof(meta), "m%d", val);
    float v[DIM];
    fill_vec(v, val);
    struct store_record r = {.id = (const uint8_t *)id,
                             .id_len = (uint32_t)strlen(id),
                             .ts = ts,
                             .window = ts - ts % 1000,
                             .window_end = ts - ts % 1000 + 1000,
                             .op = op,
                             .vec = v,
                             .meta = (const uint8_t *)meta,
                             .meta_len = (uint32_t)strlen(meta)};
    struct store_batch b = {.partition = part, .offset = off, .n = 1, .recs = &r};
    bool applied;
    return store_write(s, &b, &applied);
}

/* Returns the value seed stored for id-<k> (checking vector and meta agree), or -1. */
static int get_val(struct store *s, int k)
{
    char id[32];
    snprintf(id, sizeof(id), "id-%d", k);
    float v[DIM];
    struct store_value val = {.vec = v};
    int rc = store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &val);
    if (rc == ST_ENOTFOUND)
        return -1;
    ck_assert_int_eq(rc, ST_OK);
    int seed = (int)v[0];
    float want[DIM];
    fill_vec(want, seed);
    ck_assert(memcmp(v, want, sizeof(v)) == 0);
    char meta[32];
    snprintf(meta, sizeof(meta), "m%d", seed);
    ck_assert_uint_eq(val.meta_len, strlen(meta));
    ck_assert(memcmp(val.meta, meta, val.meta_len) == 0);
    free(val.meta);
    return seed;
}

static char *wal_path(const char *dir)
{
    /* The newest WAL file that has data. */
    char *best = NULL;
    for (int n = 1; n < 100; n++) {
        char *p = NULL;
        ck_assert_int_ge(asprintf(&p, "%s/%06d.log", dir, n), 0);
        struct stat st;
        if (stat(p, &st) == 0 && st.st_size > 0) {
            free(best);
            best = p;
        } else {
            free(p);
        }
    }
    ck_assert_ptr_nonnull(best);
    return best;
}

static void copy_dir(const char *from, const char *to)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
    ck_assert_int_eq(system(cmd), 0);
}

static void flip_byte(const char *path, off_t off, uint8_t mask)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, off), 1);
    b ^= mask;
    ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* ---- log framing -------------------------------------------------------------------------- */

static uint8_t *make_log(const size_t *sizes, size_t n, size_t *len, size_t *starts)
{
    char *dir = st_test_tmpdir("log");
    char path[512];
    snprintf(path, sizeof(path), "%s/x.log", dir);
    struct store_file *f;
    ck_assert_int_eq(store_fs_open_append(NULL, path, &f, "t.open"), ST_OK);
    struct store_log_writer w;
    ck_assert_int_eq(store_log_writer_init(&w, f, "t.write"), ST_OK);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = malloc(sizes[i] + 1);
        for (size_t j = 0; j < sizes[i]; j++)
            p[j] = (uint8_t)(i * 31 + j);
        if (starts)
            starts[i] = f->size;
        ck_assert_int_eq(store_log_append(&w, p, sizes[i]), ST_OK);
        free(p);
    }
    store_log_writer_destroy(&w);
    store_fs_close(f);
    uint8_t *data;
    ck_assert_int_eq(store_fs_read_all(path, &data, len, SIZE_MAX), ST_OK);
    st_test_rmrf(dir);
    free(dir);
    return data;
}

static size_t read_all_records(const uint8_t *data, size_t len, const size_t *sizes,
                               enum store_log_end *end)
{
    struct store_log_reader r;
    store_log_reader_init(&r, data, len);
    const uint8_t *p;
    size_t n, off, count = 0;
    while (store_log_next(&r, &p, &n, &off)) {
        ck_assert_uint_eq(n, sizes[count]);
        bool same = true;
        for (size_t j = 0; j < n && same; j++)
            same = p[j] == (uint8_t)(count * 31 + j);
        ck_assert_msg(same, "record %zu differs", count);
        count++;
    }
    *end = r.end;
    store_log_reader_destroy(&r);
    return count;
}

START_TEST(test_log_roundtrip)
{
    size_t sizes[] = {0,
                      1,
                      100,
                      STORE_LOG_BLOCK - 2 * STORE_LOG_HEADER,
                      STORE_LOG_BLOCK * 3 + 5,
                      7,
                      STORE_LOG_BLOCK - STORE_LOG_HEADER - 3,
                      12};
    size_t n = sizeof(sizes) / sizeof(sizes[0]), len;
    uint8_t *data = make_log(sizes, n, &len, NULL);
    enum store_log_end end;
    ck_assert_uint_eq(read_all_records(data, len, sizes, &end), n);
    ck_assert_int_eq(end, STORE_LOG_END_CLEAN);
    /* Zeroed preallocated space after the last record is a clean end. */
    uint8_t *z = calloc(1, len + 4096);
    memcpy(z, data, len);
    ck_assert_uint_eq(read_all_records(z, len + 4096, sizes, &end), n);
    ck_assert_int_eq(end, STORE_LOG_END_CLEAN);
    free(z);
    free(data);
}
END_TEST

START_TEST(test_log_torn_tail_every_byte)
{
    /* The last record spans blocks (FIRST, MIDDLE, LAST) so cuts hit every fragment kind. */
    size_t sizes[] = {50, STORE_LOG_BLOCK - 100, 300, 2 * STORE_LOG_BLOCK + 77};
    size_t n = 4, len, starts[4];
    uint8_t *data = make_log(sizes, n, &len, starts);
    for (size_t cut = starts[3]; cut < len; cut++) {
        enum store_log_end end;
        size_t got = read_all_records(data, cut, sizes, &end);
        ck_assert_msg(got == 3, "cut at %zu: %zu records", cut, got);
        ck_assert_msg(end == STORE_LOG_END_TORN || (end == STORE_LOG_END_CLEAN && cut == starts[3]),
                      "cut at %zu: end %d", cut, end);
    }
    free(data);
}
END_TEST

START_TEST(test_log_corruption_before_tail)
{
    size_t sizes[] = {40, 40, 40, 40, 40};
    size_t len, starts[5];
    uint8_t *data = make_log(sizes, 5, &len, starts);
    enum store_log_end end;
    /* Bit flip in the payload of record 2. */
    uint8_t *c = malloc(len);
    memcpy(c, data, len);
    c[starts[1] + STORE_LOG_HEADER + 5] ^= 0x10;
    ck_assert_uint_eq(read_all_records(c, len, sizes, &end), 1);
    ck_assert_int_eq(end, STORE_LOG_END_CORRUPT);
    /* Bad fragment order: record 2 claims to be a MIDDLE (its checksum re-seeded). */
    memcpy(c, data, len);
    c[starts[1] + 6] = STORE_LOG_MIDDLE;
    ck_assert_uint_eq(read_all_records(c, len, sizes, &end), 1);
    ck_assert_int_eq(end, STORE_LOG_END_CORRUPT);
    /* Length past the block end. */
    memcpy(c, data, len);
    c[starts[2] + 4] = 0xff;
    c[starts[2] + 5] = 0xff;
    ck_assert_uint_eq(read_all_records(c, len, sizes, &end), 2);
    ck_assert_int_eq(end, STORE_LOG_END_CORRUPT);
    /* The same damage in the last record is a torn tail. */
    memcpy(c, data, len);
    c[starts[4] + STORE_LOG_HEADER + 1] ^= 0x01;
    ck_assert_uint_eq(read_all_records(c, len, sizes, &end), 4);
    ck_assert_int_eq(end, STORE_LOG_END_TORN);
    free(c);
    free(data);
}
END_TEST

/* ---- store semantics ---------------------------------------------------------------------- */

START_TEST(test_roundtrip_flush_reopen)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_BATCH, true);
    for (int k = 0; k < 500; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000 + k * 10, k, STORE_OP_UPSERT), ST_OK);
    for (int k = 0; k < 500; k++)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(st.memtable_records, 0);
    ck_assert_uint_eq(st.segments, 5); /* windows of 1000 ms: ts 1000..5990 */
    for (int k = 0; k < 500; k++)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(get_val(s, 999), -1);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_BATCH, true);
    for (int k = 0; k < 500; k++)
        ck_assert_int_eq(get_val(s, k), k);
    int64_t off;
    ck_assert_int_eq(store_applied_offset(s, 0, &off), ST_OK);
    ck_assert_int_eq(off, 499);
    /* Segment contents are sorted, checksummed, and carry their window. */
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    ck_assert_uint_eq(store_snapshot_count(snap), 5);
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment *g = store_snapshot_segment(snap, i);
        struct store_segment_info info;
        store_segment_info(g, &info);
        ck_assert_uint_eq(info.count, 100);
        ck_assert_int_eq(info.window_start % 1000, 0);
        ck_assert_int_ge(info.min_ts, info.window_start);
        ck_assert_int_lt(info.max_ts, info.window_start + 1000);
        ck_assert_int_eq(info.window_end, info.window_start + 1000);
        ck_assert_int_eq(store_segment_verify(g, NULL), ST_OK);
        ck_assert_uint_eq((uintptr_t)store_segment_vectors(g) % 64, 0);
    }
    store_snapshot_release(snap);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_upsert_delete_across_sources)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(put(s, 0, 1, 7, 1500, 100, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK); /* v100 in a segment (window 1000) */
    ck_assert_int_eq(put(s, 0, 2, 7, 2500, 200, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(get_val(s, 7), 200); /* memtable beats segment: newer ts */
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(get_val(s, 7), 200); /* newer segment beats older segment */
    /* A record with an older event time arriving later does not win. */
    ck_assert_int_eq(put(s, 0, 3, 7, 1200, 300, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(get_val(s, 7), 200);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(get_val(s, 7), 200);
    /* Same ts: the later (partition, offset) wins. */
    ck_assert_int_eq(put(s, 0, 4, 7, 2500, 400, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(get_val(s, 7), 400);
    /* Delete hides every older version, in memtable and after flush and reopen. */
    ck_assert_int_eq(put(s, 0, 5, 7, 3000, 0, STORE_OP_DELETE), ST_OK);
    ck_assert_int_eq(get_val(s, 7), -1);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(get_val(s, 7), -1);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(get_val(s, 7), -1);
    /* An upsert newer than the delete brings it back. */
    ck_assert_int_eq(put(s, 0, 6, 7, 3500, 500, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(get_val(s, 7), 500);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_replay_idempotent)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(put(s, 3, 10, 1, 1000, 1, STORE_OP_UPSERT), ST_OK);
    /* The same (partition, offset) again with another payload is ignored. */
    ck_assert_int_eq(put(s, 3, 10, 1, 1000, 2, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(get_val(s, 1), 1);
    ck_assert_int_eq(put(s, 3, 9, 2, 1000, 9, STORE_OP_UPSERT), ST_OK); /* older offset */
    ck_assert_int_eq(get_val(s, 2), -1);
    ck_assert_int_eq(put(s, 4, 9, 2, 1000, 9, STORE_OP_UPSERT), ST_OK); /* other partition */
    ck_assert_int_eq(get_val(s, 2), 9);
    int64_t off;
    ck_assert_int_eq(store_durable_offset(s, 3, &off), ST_OK);
    ck_assert_int_eq(off, 10);
    ck_assert_int_eq(store_durable_offset(s, 5, &off), ST_ENOTFOUND);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* After reopen (WAL replay) and after flush (manifest marks) the marks hold. */
    for (int round = 0; round < 2; round++) {
        s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
        ck_assert_int_eq(store_applied_offset(s, 3, &off), ST_OK);
        ck_assert_int_eq(off, 10);
        ck_assert_int_eq(put(s, 3, 10, 1, 1000, 77, STORE_OP_UPSERT), ST_OK);
        ck_assert_int_eq(get_val(s, 1), 1);
        if (round == 0)
            ck_assert_int_eq(store_flush(s), ST_OK);
        ck_assert_int_eq(store_close(s), ST_OK);
    }
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_wal_cut_every_byte)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    char *wal = wal_path(dir);
    struct stat st;
    ck_assert_int_eq(stat(wal, &st), 0);
    /* Find where the last record starts: the WAL with 4 records is that long. */
    char *dir4 = st_test_tmpdir("store4");
    s = open_store(dir4, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    char *wal4 = wal_path(dir4);
    struct stat st4;
    ck_assert_int_eq(stat(wal4, &st4), 0);
    ck_assert_int_lt(st4.st_size, st.st_size);
    char *work = NULL;
    ck_assert_int_ge(asprintf(&work, "%s.work", dir), 0);
    for (off_t cut = st4.st_size; cut < st.st_size; cut++) {
        copy_dir(dir, work);
        char *w = wal_path(work);
        ck_assert_int_eq(truncate(w, cut), 0);
        s = open_store(work, NULL, STORE_SYNC_ALWAYS, false);
        for (int k = 0; k < 4; k++)
            ck_assert_int_eq(get_val(s, k), k);
        ck_assert_msg(get_val(s, 4) == -1, "cut at %lld shows the torn record", (long long)cut);
        int64_t off;
        ck_assert_int_eq(store_durable_offset(s, 0, &off), ST_OK);
        ck_assert_int_eq(off, 3);
        /* The store keeps working after the truncation. */
        ck_assert_int_eq(put(s, 0, 4, 4, 1000, 44, STORE_OP_UPSERT), ST_OK);
        ck_assert_int_eq(store_close(s), ST_OK);
        s = open_store(work, NULL, STORE_SYNC_ALWAYS, false);
        ck_assert_int_eq(get_val(s, 4), 44);
        ck_assert_int_eq(store_close(s), ST_OK);
        free(w);
    }
    st_test_rmrf(work);
    st_test_rmrf(dir);
    st_test_rmrf(dir4);
    free(work);
    free(wal);
    free(wal4);
    free(dir);
    free(dir4);
}
END_TEST

START_TEST(test_corruption_reported)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 20; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    char *work = NULL;
    ck_assert_int_ge(asprintf(&work, "%s.work", dir), 0);
    struct st_err err;

    /* WAL: a flipped bit in the 3rd record refuses to start, naming file and offset. */
    copy_dir(dir, work);
    char *w = wal_path(work);
    flip_byte(w, 300, 0x20);
    st_err_clear(&err);
    ck_assert_int_eq(try_open(work, false, &err), ST_ECORRUPT);
    ck_assert_msg(strstr(err.msg, w) != NULL && strstr(err.msg, "offset") != NULL, "%s", err.msg);
    /* Point-in-time recovery keeps the prefix before the damage. */
    st_err_clear(&err);
    ck_assert_int_eq(try_open(work, true, &err), ST_OK);
    s = open_store(work, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(get_val(s, 0), 0);
    ck_assert_int_eq(get_val(s, 19), -1);
    ck_assert_int_eq(store_close(s), ST_OK);
    free(w);

    /* Segment: flush, then flip a bit in the record table → open fails with file + offset. */
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    struct store_segment_info info;
    store_segment_info(store_snapshot_segment(snap, 0), &info);
    char *segname = strdup(strrchr(info.path, '/') + 1);
    store_snapshot_release(snap);
    ck_assert_int_eq(store_close(s), ST_OK);
    char *seg = NULL;
    ck_assert_int_ge(asprintf(&seg, "%s/%s", work, segname), 0);
    off_t rec_table = 64 + 20 * DIM * 4 + 5;
    copy_dir(dir, work);
    flip_byte(seg, rec_table, 0x01);
    st_err_clear(&err);
    ck_assert_int_eq(try_open(work, false, &err), ST_ECORRUPT);
    ck_assert_msg(strstr(err.msg, seg) != NULL && strstr(err.msg, "offset") != NULL, "%s", err.msg);
    /* A flipped vector bit is found by verify (inspect), with its offset. */
    copy_dir(dir, work);
    flip_byte(seg, 64 + 3, 0x01);
    struct store_segment *g;
    ck_assert_int_eq(store_segment_open_file(seg, &g, &err), ST_OK);
    st_err_clear(&err);
    ck_assert_int_eq(store_segment_verify(g, &err), ST_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "vector block") != NULL && strstr(err.msg, "offset 64") != NULL,
                  "%s", err.msg);
    store_segment_unref(g);

    /* Manifest: damage before its end refuses to start. */
    copy_dir(dir, work);
    char cur[600], mname[64] = {0};
    snprintf(cur, sizeof(cur), "%s/CURRENT", work);
    FILE *f = fopen(cur, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(mname, sizeof(mname), f));
    fclose(f);
    mname[strcspn(mname, "\n")] = '\0';
    char mpath[700];
    snprintf(mpath, sizeof(mpath), "%s/%s", work, mname);
    flip_byte(mpath, 12, 0x04);
    /* Append a valid-looking second group so the damage is not at the tail. */
    st_err_clear(&err);
    int rc = try_open(work, false, &err);
    ck_assert_int_ne(rc, ST_OK);
    ck_assert_msg(strstr(err.msg, mname) != NULL && strstr(err.msg, "offset") != NULL, "%s",
                  err.msg);

    st_test_rmrf(work);
    st_test_rmrf(dir);
    free(work);
    free(seg);
    free(segname);
    free(dir);
}
END_TEST

START_TEST(test_power_loss_keeps_durable)
{
    /* Several rounds: write with concurrent group commit and flushes, remember what the store
     * reported durable, pull the plug (drop unsynced bytes and un-synced directory entries),
     * reopen: everything reported durable is there, nothing is half-applied. */
    char *dir = st_test_tmpdir("store");
    struct store_fs *fs = store_fs_sim_new();
    int64_t next_off = 0;
    int last_val[4000];
    memset(last_val, -1, sizeof(last_val));
    for (int round = 0; round < 6; round++) {
        struct store_opts o = {.dir = dir,
                               .dim = DIM,
                               .wal_sync = STORE_SYNC_BATCH,
                               .wal_sync_interval_ms = 1,
                               .memtable_size = 64 * 1024,
                               .fs = fs};
        struct store *s = NULL;
        struct st_err err = {0};
        ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
        int64_t durable_before = -1;
        if (store_durable_offset(s, 0, &durable_before) != ST_OK)
            durable_before = -1;
        int64_t reported = durable_before;
        for (int i = 0; i < 600; i++, next_off++) {
            int k = (int)(next_off % 4000);
            int rc;
            while ((rc = put(s, 0, next_off, k, 1000 + next_off, (int)next_off, 0)) == ST_EAGAIN)
                st_test_sleep_ms(1);
            ck_assert_int_eq(rc, ST_OK);
            last_val[k] = (int)next_off;
            if (i % 50 == 0)
                if (store_durable_offset(s, 0, &reported) != ST_OK)
                    reported = -1;
        }
        if (store_durable_offset(s, 0, &reported) != ST_OK)
            reported = -1;
        /* Power loss: the disk keeps only what was synced, and from now on nothing the old
         * process does reaches it (its writes and syncs fail). Then free the old process. */
        store_fs_sim_crash(fs);
        (void)store_close(s);
        store_fs_sim_revive(fs);
        s = NULL;
        struct store_opts ro = o;
        ck_assert_msg(store_open(&ro, &s, &err) == ST_OK, "round %d: %s", round, err.msg);
        int64_t recovered = -1;
        if (store_durable_offset(s, 0, &recovered) != ST_OK)
            recovered = -1;
        ck_assert_msg(recovered >= reported, "round %d: recovered %lld < reported durable %lld",
                      round, (long long)recovered, (long long)reported);
        /* Exactly the prefix up to `recovered` is visible. */
        for (int64_t off = recovered - 700 > 0 ? recovered - 700 : 0; off <= recovered; off++) {
            int k = (int)(off % 4000);
            int v = get_val(s, k);
            ck_assert_msg(v >= (int)off, "round %d: id-%d has %d, want >= %lld", round, k, v,
                          (long long)off);
        }
        for (int64_t off = recovered + 1; off < next_off; off++) {
            int k = (int)(off % 4000);
            ck_assert_msg(get_val(s, k) < (int)off, "round %d: offset %lld resurrected", round,
                          (long long)off);
        }
        next_off = recovered + 1; /* Kafka redelivers from the committed offset */
        ck_assert_int_eq(store_close(s), ST_OK);
    }
    store_fs_free(fs);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_reader_blocks_removal)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(put(s, 0, k, k, 5000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    ck_assert_uint_eq(store_snapshot_count(snap), 1);
    struct store_segment *g = store_snapshot_segment(snap, 0);
    struct store_segment_info info;
    store_segment_info(g, &info);
    char *path = strdup(info.path);
    size_t removed;
    ck_assert_int_eq(store_drop_window(s, 5000, NULL, &removed), ST_OK);
    ck_assert_uint_eq(removed, 1);
    /* Gone for new readers, still intact for the old one. */
    ck_assert_int_eq(get_val(s, 3), -1);
    ck_assert_int_eq(access(path, F_OK), 0);
    ck_assert_int_eq(store_segment_verify(g, NULL), ST_OK);
    uint64_t idx;
    ck_assert_int_eq(store_segment_find(g, (const uint8_t *)"id-3", 4, &idx), ST_OK);
    ck_assert(store_segment_vectors(g)[idx * DIM] == 3.0f);
    ck_assert_int_eq(store_segment_find(g, (const uint8_t *)"id-77", 5, &idx), ST_ENOTFOUND);
    store_snapshot_release(snap);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* The drop is durable. */
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(get_val(s, 3), -1);
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(st.segments, 0);
    ck_assert_int_eq(store_close(s), ST_OK);
    free(path);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_backpressure)
{
    char *dir = st_test_tmpdir("store");
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .memtable_size = 1u << 20,
                           .max_frozen = 1};
    struct store *s;
    ck_assert_int_eq(store_open(&o, &s, NULL), ST_OK);
    int rc = ST_OK, k = 0;
    for (; k < 200000 && rc == ST_OK; k++)
        rc = put(s, 0, k, k, 1000, k, STORE_OP_UPSERT);
    ck_assert_int_eq(rc, ST_EAGAIN);
    /* Nothing of the refused batch is visible; flushing lets writes continue. */
    ck_assert_int_eq(get_val(s, k - 1), -1);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(put(s, 0, k - 1, k - 1, 1000, k - 1, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(get_val(s, k - 1), k - 1);
    ck_assert_int_eq(get_val(s, 0), 0);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_fault_points)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(put(s, 0, 0, 0, 1000, 0, STORE_OP_UPSERT), ST_OK);
    /* A failed segment fsync fails the flush; the data stays readable and a retry works. */
    ck_assert_int_eq(st_fault_arm("store.seg.fsync", 0, 1, ST_EIO), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_EIO);
    ck_assert_int_eq(get_val(s, 0), 0);
    st_fault_disarm_all();
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(get_val(s, 0), 0);
    /* ENOSPC mid-WAL-write (a short write): the batch fails, the store refuses further writes,
     * and reopening recovers exactly what was acknowledged. */
    ck_assert_int_eq(put(s, 0, 1, 1, 1000, 1, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(st_fault_arm("store.wal.write", 0, 1, ST_ENOSPC), ST_OK);
    ck_assert_int_eq(put(s, 0, 2, 2, 1000, 2, STORE_OP_UPSERT), ST_ENOSPC);
    st_fault_disarm_all();
    ck_assert_int_eq(put(s, 0, 3, 3, 1000, 3, STORE_OP_UPSERT), ST_ENOSPC);
    int64_t off;
    ck_assert_int_eq(store_durable_offset(s, 0, &off), ST_OK);
    ck_assert_int_eq(off, 1);
    ck_assert_int_eq(store_close(s), ST_ENOSPC); /* close reports the failure it met */
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(get_val(s, 0), 0);
    ck_assert_int_eq(get_val(s, 1), 1);
    ck_assert_int_eq(get_val(s, 2), -1);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* A failed WAL fsync is fatal too (the page cache cannot be trusted afterwards). */
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(st_fault_arm("store.wal.fsync", 0, 1, ST_EIO), ST_OK);
    ck_assert_int_eq(put(s, 0, 2, 2, 1000, 2, STORE_OP_UPSERT), ST_EIO);
    st_fault_disarm_all();
    ck_assert_int_eq(put(s, 0, 3, 3, 1000, 3, STORE_OP_UPSERT), ST_EIO);
    ck_assert_int_eq(store_durable_offset(s, 0, &off), ST_OK);
    ck_assert_int_eq(off, 1);
    (void)store_close(s);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Regression: a flush built its manifest edit with next_file = N, a concurrent WAL roll took
 * N, and applying the edit lowered the counter back to N: file N was handed out twice. */
START_TEST(test_next_file_never_regresses)
{
    struct store_mf_state st = {0};
    struct store_mf_edit e = {0};
    st.next_file = 10;
    ck_assert_int_eq(store_mf_edit_next_file(&e, 7), ST_OK);
    ck_assert_int_eq(store_mf_apply(&st, e.buf, e.len), ST_OK);
    ck_assert_uint_eq(st.next_file, 10);
    store_mf_edit_free(&e);
    ck_assert_int_eq(store_mf_edit_next_file(&e, 12), ST_OK);
    ck_assert_int_eq(store_mf_apply(&st, e.buf, e.len), ST_OK);
    ck_assert_uint_eq(st.next_file, 12);
    store_mf_edit_free(&e);
    store_mf_state_free(&st);

    /* And end to end: many freezes racing the background flusher. */
    char *dir = st_test_tmpdir("store");
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_NONE,
                           .memtable_size = 16 * 1024,
                           .max_frozen = 4};
    struct store *s;
    ck_assert_int_eq(store_open(&o, &s, NULL), ST_OK);
    for (int k = 0; k < 3000; k++) {
        int rc;
        while ((rc = put(s, 0, k, k, 1000 + k % 1000, k, STORE_OP_UPSERT)) == ST_EAGAIN)
            st_test_sleep_ms(1);
        ck_assert_msg(rc == ST_OK, "write %d: %s", k, st_strerror(rc));
    }
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int k = 0; k < 3000; k += 7)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_inspect)
{
    char *data = st_test_tmpdir("data");
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/docs", data);
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 300; k++)
        ck_assert_int_eq(put(s, 1, k, k, 1000 * (k % 3), k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    for (int k = 300; k < 310; k++)
        ck_assert_int_eq(put(s, 1, k, k, 5000, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);

    char *buf = NULL;
    size_t blen = 0;
    FILE *out = open_memstream(&buf, &blen);
    struct st_err err = {0};
    ck_assert_int_eq(store_inspect(data, out, &err), ST_OK);
    fclose(out);
    ck_assert_ptr_nonnull(strstr(buf, "segments=3"));
    ck_assert_ptr_nonnull(strstr(buf, "partition 1: flushed through offset 299"));
    ck_assert_ptr_nonnull(strstr(buf, "batches=10 records=10"));
    ck_assert_ptr_nonnull(strstr(buf, "all checksums verified"));
    free(buf);

    /* The CLI: 0 when intact, 1 with the damaged file and offset when not, 2 for a bad path. */
    char cmd[1200], o[16384];
    snprintf(cmd, sizeof(cmd), "%s inspect %s 2>&1", getenv("STRATA_CLI"), data);
    ck_assert_int_eq(st_test_run(cmd, o, sizeof(o)), 0);
    struct store_snapshot *snap;
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    struct store_segment_info info;
    store_segment_info(store_snapshot_segment(snap, 0), &info);
    char *seg = strdup(info.path);
    store_snapshot_release(snap);
    ck_assert_int_eq(store_close(s), ST_OK);
    flip_byte(seg, 64 + 40, 0x80); /* inside the vectors */
    ck_assert_int_eq(st_test_run(cmd, o, sizeof(o)), 1);
    ck_assert_msg(strstr(o, "CORRUPT") && strstr(o, seg) && strstr(o, "offset 64"), "%s", o);
    snprintf(cmd, sizeof(cmd), "%s inspect %s 2>&1", getenv("STRATA_CLI"), seg);
    ck_assert_int_eq(st_test_run(cmd, o, sizeof(o)), 1);
    snprintf(cmd, sizeof(cmd), "%s inspect %s/nope 2>&1", getenv("STRATA_CLI"), data);
    ck_assert_int_eq(st_test_run(cmd, o, sizeof(o)), 2);
    free(seg);
    st_test_rmrf(data);
    free(data);
}
END_TEST

/* Regression (issue 11, defect 1): a promotion (a window's only run sealed in place) changes
 * only the manifest; after a restart the segment must still be SEALED at its version, and
 * a manifest that disagrees with the file's window is corruption. */
START_TEST(test_promotion_survives_reopen)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_BATCH, true);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    ck_assert_uint_eq(store_snapshot_count(snap), 1);
    struct store_segment_info before;
    store_segment_info(store_snapshot_segment(snap, 0), &before);
    store_snapshot_release(snap);
    ck_assert_int_eq(before.kind, STORE_SEG_RUN);
    uint64_t in = before.file_number;
    struct store_segment_info out;
    ck_assert_int_eq(store_merge(s, &in, 1, STORE_SEG_SEALED, 3, NULL, &out), ST_OK);
    ck_assert_uint_eq(out.file_number, in); /* promoted in place, not rewritten */
    ck_assert_int_eq(out.kind, STORE_SEG_SEALED);
    ck_assert_int_eq(store_close(s), ST_OK);

    s = open_store(dir, NULL, STORE_SYNC_BATCH, true);
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    ck_assert_uint_eq(store_snapshot_count(snap), 1);
    struct store_segment_info after;
    store_segment_info(store_snapshot_segment(snap, 0), &after);
    store_snapshot_release(snap);
    ck_assert_uint_eq(after.file_number, in);
    ck_assert_int_eq(after.kind, STORE_SEG_SEALED);
    ck_assert_uint_eq(after.version, 3);
    ck_assert_uint_eq(after.checksum, before.checksum);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    st_log_set_level(ST_LOG_WARNING);
    Suite *su = suite_create("store");
    TCase *tc = tcase_create("log");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_log_roundtrip);
    tcase_add_test(tc, test_log_torn_tail_every_byte);
    tcase_add_test(tc, test_log_corruption_before_tail);
    suite_add_tcase(su, tc);
    tc = tcase_create("store");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip_flush_reopen);
    tcase_add_test(tc, test_upsert_delete_across_sources);
    tcase_add_test(tc, test_replay_idempotent);
    tcase_add_test(tc, test_wal_cut_every_byte);
    tcase_add_test(tc, test_corruption_reported);
    tcase_add_test(tc, test_power_loss_keeps_durable);
    tcase_add_test(tc, test_reader_blocks_removal);
    tcase_add_test(tc, test_backpressure);
    tcase_add_test(tc, test_fault_points);
    tcase_add_test(tc, test_inspect);
    tcase_add_test(tc, test_next_file_never_regresses);
    tcase_add_test(tc, test_promotion_survives_reopen);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
