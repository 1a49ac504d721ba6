/*
 * Tests for store/: log framing and recovery rules, WAL torn tails at every byte, corruption
 * detection with file and offset, upsert/delete semantics across memtable and segments,
 * idempotent replay, power loss through the simulated file system, readers vs. removal,
 * fault points.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log_format.h"
#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_fault.h"
#include "st_log.h"
#include "st_test.h"
#include "store.h"
#include "store_int.h"
#include "wal_format.h"
#include "store_log.h"

#define DIM 8
/* The WAL of golden_batches (test_wal_bytes_golden). */
#define WAL_GOLDEN_LEN  687302
#define WAL_GOLDEN_HASH 0x75e3eac5370d38a7ull

/* ---- helpers ------------------------------------------------------------------------------ */

static void fill_vec(float *v, int seed)
{
    for (int d = 0; d < DIM; d++)
        v[d] = (float)seed + (float)d / 16.0f;
}

/* The layout before vector logs (vectors in WAL records and runs): tests of that layout's own
 * mechanics (promotion in place, byte offsets, the golden WAL) set it; the rest run on vector
 * logs, the default. Each test runs in its own process, so a test's setting is its own. */
static bool g_inline;

/* Before every test: tests share one process when CK_FORK=no (TSan runs). */
static void reset_layout(void)
{
    g_inline = false;
}

static struct store *open_store(const char *dir, struct store_fs *fs, enum store_wal_sync sync,
                                bool background)
{
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = sync,
                           .fs = fs,
                           .no_background = !background,
                           .memtable_size = 1u << 20,
                           .inline_vectors = g_inline};
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
    /* Bad fragment order, its checksum re-seeded with the new type so that it is valid and only
     * the order check can refuse it: record 2 claims to be a MIDDLE (no FIRST before it), or a
     * FIRST (then record 3, a FULL, starts a new record before the LAST). */
    static const struct {
        uint8_t type;
        const char *why;
    } order[] = {{STORE_LOG_MIDDLE, "without FIRST"}, {STORE_LOG_FIRST, "before LAST"}};
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        memcpy(c, data, len);
        c[starts[1] + 6] = order[k].type;
        size_t plen = (size_t)c[starts[1] + 4] | (size_t)c[starts[1] + 5] << 8;
        st_put_le32(c + starts[1], (uint32_t)st_hash64_seed(c + starts[1] + STORE_LOG_HEADER, plen,
                                                            order[k].type));
        struct store_log_reader lr;
        store_log_reader_init(&lr, c, len);
        const uint8_t *lp;
        size_t ll, lo;
        ck_assert(store_log_next(&lr, &lp, &ll, &lo));
        ck_assert(!store_log_next(&lr, &lp, &ll, &lo));
        ck_assert_int_eq(lr.end, STORE_LOG_END_CORRUPT);
        ck_assert_msg(strstr(lr.why, order[k].why) != NULL, "type %u refused for: %s",
                      order[k].type, lr.why);
        store_log_reader_destroy(&lr);
    }
    /* Length past the block end. */
    memcpy(c, data, len);
    c[starts[2] + 4] = 0xff;
    c[starts[2] + 5] = 0xff;
    ck_assert_uint_eq(read_all_records(c, len, sizes, &end), 2);
    ck_assert_int_eq(end, STORE_LOG_END_CORRUPT);
    /* A length that runs past EOF, with intact records after it: a flipped length byte, not a
     * crash mid-append (that leaves nothing valid behind it). Truncating there would drop the
     * acknowledged records 3 and 4. */
    memcpy(c, data, len);
    c[starts[2] + 5] ^= 0x40;
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
        /* the vectors section (here the window's log, mapped by the run) starts 64-aligned */
        ck_assert_ptr_nonnull(store_segment_rows_base(g));
        ck_assert_uint_eq((uintptr_t)store_segment_rows_base(g) % 64, 0);
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
    g_inline = true; /* the layout before vector logs */
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
    char *mpath = st_test_manifest_path(work);
    const char *mname = strrchr(mpath, '/') + 1;
    flip_byte(mpath, 12, 0x04);
    /* Append a valid-looking second group so the damage is not at the tail. */
    st_err_clear(&err);
    int rc = try_open(work, false, &err);
    ck_assert_int_ne(rc, ST_OK);
    ck_assert_msg(strstr(err.msg, mname) != NULL && strstr(err.msg, "offset") != NULL, "%s",
                  err.msg);
    free(mpath);

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
                               .memtable_size = 256 * 1024,
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

/* The store's one segment (asserted the only one), in *snap, which the caller releases. */
static struct store_segment *only_segment(struct store *s, struct store_snapshot **snap,
                                          struct store_segment_info *info)
{
    ck_assert_int_eq(store_snapshot_acquire(s, snap), ST_OK);
    ck_assert_uint_eq(store_snapshot_count(*snap), 1);
    struct store_segment *g = store_snapshot_segment(*snap, 0);
    store_segment_info(g, info);
    return g;
}

START_TEST(test_reader_blocks_removal)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(put(s, 0, k, k, 5000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct store_snapshot *snap;
    struct store_segment_info info;
    struct store_segment *g = only_segment(s, &snap, &info);
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
    ck_assert(store_segment_vector(g, idx)[0] == 3.0f);
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

/* A WAL payload's record count is bounded by what its bytes can hold (the smallest record is
 * 28 bytes) before anything is sized by it: a count of `len` once asked calloc for
 * len * dim * 4 bytes. */
START_TEST(test_wal_decode_count_bound)
{
    enum { K = 10 };
    uint8_t p[STORE_WAL_BATCH_HEADER + K * 28];
    memset(p, 0, sizeof(p));
    p[0] = STORE_WAL_BATCH;
    st_put_le32(p + 13, K);
    for (int i = 0; i < K; i++) {
        uint8_t *r = p + STORE_WAL_BATCH_HEADER + i * 28;
        r[0] = STORE_OP_DELETE;
        r[1] = 1;                  /* id length */
        r[2] = 'a';                /* id */
        st_put_le64(r + 3, 1000);  /* ts */
        st_put_le64(r + 11, 0);    /* window */
        st_put_le64(r + 19, 6000); /* window end */
        r[27] = 0;                 /* meta length */
    }
    struct store_batch b;
    struct store_record *recs;
    float *vecs;
    struct store_vref *refs;
    ck_assert_int_eq(store_wal_decode(65536, p, sizeof(p), &b, &recs, &vecs, &refs), ST_OK);
    ck_assert_uint_eq(b.n, K);
    ck_assert_int_eq(recs[K - 1].op, STORE_OP_DELETE);
    free(recs);
    free(vecs);
    free(refs);
    /* a record lies inside the window it names, as a write checks (time pruning trusts it) */
    static const int64_t ts_lies[] = {-1, 6000, 6001};
    for (size_t i = 0; i < 3; i++) {
        st_put_le64(p + STORE_WAL_BATCH_HEADER + 3, (uint64_t)ts_lies[i]);
        ck_assert_int_eq(store_wal_decode(65536, p, sizeof(p), &b, &recs, &vecs, &refs),
                         ST_ECORRUPT);
    }
    st_put_le64(p + STORE_WAL_BATCH_HEADER + 3, 5999);
    ck_assert_int_eq(store_wal_decode(65536, p, sizeof(p), &b, &recs, &vecs, &refs), ST_OK);
    free(recs);
    free(vecs);
    free(refs);
    static const uint32_t lies[] = {K + 1, sizeof(p), UINT32_MAX};
    for (size_t i = 0; i < 3; i++) {
        st_put_le32(p + 13, lies[i]);
        ck_assert_int_eq(store_wal_decode(65536, p, sizeof(p), &b, &recs, &vecs, &refs),
                         ST_ECORRUPT);
    }
}
END_TEST

/* An edit naming file number n: NEXT_FILE, LOG_NUMBER, ADD_SEGMENT or ADD_VLOG (kind 0..3). */
static void file_number_edit(struct store_mf_edit *e, int kind, uint64_t n)
{
    struct store_mf_seg sg = {
        .file_number = n, .meta = {.window_start = 0, .window_end = 1000, .kind = STORE_SEG_RUN}};
    struct store_mf_vlog vl = {n, 0, 1000};
    int rc = kind == 0   ? store_mf_edit_next_file(e, n)
             : kind == 1 ? store_mf_edit_log_number(e, n)
             : kind == 2 ? store_mf_edit_add_segment(e, &sg)
                         : store_mf_edit_add_vlog(e, &vl);
    ck_assert_int_eq(rc, ST_OK);
}

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
    /* an INFO edit with a dim no collection can have is corruption (inspect divided by it) */
    static const uint32_t dims[] = {0, 65537, UINT32_MAX};
    for (size_t i = 0; i < 3; i++) {
        struct store_mf_state bad = {0};
        ck_assert_int_eq(store_mf_edit_info(&e, dims[i]), ST_OK);
        ck_assert_int_eq(store_mf_apply(&bad, e.buf, e.len), ST_ECORRUPT);
        ck_assert_uint_eq(bad.dim, 0); /* a refused edit leaves nothing behind */
        store_mf_edit_free(&e);
        /* nor is such a state snapshotted (it would not load again: fuzz_manifest) */
        bad.dim = dims[i];
        ck_assert_int_eq(store_mf_snapshot(&bad, &e), ST_EINVAL);
        store_mf_edit_free(&e);
        store_mf_state_free(&bad);
    }
    /* File numbers past STORE_FILE_NUMBER_MAX would name files (20 digits) that open does not
     * recognise: their WALs never replayed, next_file never raised past them. */
    for (int kind = 0; kind < 4; kind++) {
        struct store_mf_state bad = {.dim = 4, .have_info = true};
        file_number_edit(&e, kind, STORE_FILE_NUMBER_MAX + 1);
        ck_assert_int_eq(store_mf_apply(&bad, e.buf, e.len), ST_ECORRUPT);
        store_mf_edit_free(&e);
        /* the bound itself is a file number like any other */
        file_number_edit(&e, kind, STORE_FILE_NUMBER_MAX);
        ck_assert_int_eq(store_mf_apply(&bad, e.buf, e.len), ST_OK);
        store_mf_edit_free(&e);
        store_mf_state_free(&bad);
    }
    {
        struct store_mf_state bad = {.dim = 4, .have_info = true};
        struct store_mf_seg sg = {
            .file_number = 9,
            .meta = {.window_start = 0, .window_end = 1000, .kind = STORE_SEG_DELTA + 1}};
        ck_assert_int_eq(store_mf_edit_add_segment(&e, &sg), ST_OK);
        ck_assert_int_eq(store_mf_apply(&bad, e.buf, e.len), ST_ECORRUPT); /* unknown kind */
        store_mf_edit_free(&e);
        store_mf_state_free(&bad);
    }
    struct store_mf_state good = {0};
    ck_assert_int_eq(store_mf_edit_info(&e, 65536), ST_OK);
    ck_assert_int_eq(store_mf_apply(&good, e.buf, e.len), ST_OK);
    ck_assert_uint_eq(good.dim, 65536);
    store_mf_edit_free(&e);
    store_mf_state_free(&good);

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

/* A torn tail is only a crash's doing in the newest WAL file holding data (recovery then starts
 * a new one); in an older one recovery refuses to start, so inspect must call it corruption. */
START_TEST(test_inspect_torn_older_wal)
{
    char *dir = st_test_tmpdir("torn");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(put(s, 1, k, k, 5000, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* the reopen replays that WAL file and starts a newer one, which gets records too; the
     * old one stays live */
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 10; k < 15; k++)
        ck_assert_int_eq(put(s, 1, k, k, 5000, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    char *older = NULL;
    uint64_t oldest = UINT64_MAX;
    size_t nlogs = 0;
    DIR *d = opendir(dir);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        uint64_t num;
        if (store_file_parse(de->d_name, &num) == STORE_FILE_LOG) {
            nlogs++;
            if (num < oldest)
                oldest = num;
        }
    }
    closedir(d);
    ck_assert_uint_ge(nlogs, 2);
    older = store_file_path(dir, STORE_FILE_LOG, oldest);
    struct stat sb;
    ck_assert_int_eq(stat(older, &sb), 0);
    ck_assert_int_eq(truncate(older, sb.st_size - 3), 0); /* its last record torn */
    struct st_err err = {0};
    struct store_opts o = {.dir = dir, .dim = DIM, .read_only = true, .no_background = true};
    ck_assert_int_eq(store_open(&o, &s, &err), ST_ECORRUPT); /* what the daemon would do */
    char *buf = NULL;
    size_t blen = 0;
    FILE *out = open_memstream(&buf, &blen);
    err = (struct st_err){0};
    ck_assert_int_eq(store_inspect(dir, out, &err), ST_ECORRUPT);
    fclose(out);
    ck_assert_msg(strstr(buf, "CORRUPT") && strstr(buf, older) && strstr(buf, "not the newest"),
                  "%s", buf);
    free(buf);
    free(older);
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

/* Copies file from to to (the test's own small files). */
static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

/* A shared data_dir (SPEC.md §6): ingest's stores under ingest/, one store of the layout from
 * before that rule at the top, and the indexer's directory — whose segment copies are
 * verified and whose other files are not taken for corruption. */
START_TEST(test_inspect_layouts)
{
    g_inline = true; /* the layout before vector logs */
    char *data = st_test_tmpdir("layout");
    char a[600], b[600], idx[600], path[800];
    snprintf(path, sizeof(path), "%s/ingest", data);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(a, sizeof(a), "%s/ingest/a", data);
    snprintf(b, sizeof(b), "%s/b", data);
    for (int i = 0; i < 2; i++) {
        struct store *s = open_store(i == 0 ? a : b, NULL, STORE_SYNC_ALWAYS, false);
        for (int k = 0; k < 50; k++)
            ck_assert_int_eq(put(s, 0, k, k, 1000, k, STORE_OP_UPSERT), ST_OK);
        ck_assert_int_eq(store_flush(s), ST_OK);
        ck_assert_int_eq(store_close(s), ST_OK);
    }
    /* indexer/docs: a segment copy (the indexer's file name), a catalog, an index file */
    snprintf(idx, sizeof(idx), "%s/indexer", data);
    ck_assert_int_eq(mkdir(idx, 0755), 0);
    snprintf(idx, sizeof(idx), "%s/indexer/docs", data);
    ck_assert_int_eq(mkdir(idx, 0755), 0);
    struct store *s = open_store(a, NULL, STORE_SYNC_ALWAYS, false);
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    struct store_segment_info info;
    store_segment_info(store_snapshot_segment(snap, 0), &info);
    char copy[900];
    snprintf(copy, sizeof(copy), "%s/ingest-1@0@v1.seg", idx);
    copy_file(info.path, copy);
    store_snapshot_release(snap);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* a leftover of a build cut short (the indexer's sweep removes it); CATALOG and index
     * files are verified too (tests/check_cli.c): junk there is corruption, below */
    static const char *const junk[] = {"CURRENT.tmp"};
    for (size_t i = 0; i < 1; i++) {
        snprintf(path, sizeof(path), "%s/%s", idx, junk[i]);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("{\"not\": \"a store file\"}\n", f);
        fclose(f);
    }

    char cmd[1200], o[16384], want[1000];
    snprintf(cmd, sizeof(cmd), "%s inspect %s 2>&1", getenv("STRATA_CLI"), data);
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    snprintf(want, sizeof(want), "store %s: ", a);
    ck_assert_msg(strstr(o, want) != NULL, "no %s in:\n%s", want, o);
    snprintf(want, sizeof(want), "store %s: ", b);
    ck_assert_msg(strstr(o, want) != NULL, "no %s in:\n%s", want, o);
    snprintf(want, sizeof(want),
             "indexer %s: 0 catalogued windows, 1 other segment copies and 0 other index files "
             "verified, 1 other files",
             idx);
    ck_assert_msg(strstr(o, want) != NULL, "no %s in:\n%s", want, o);
    ck_assert_msg(strstr(o, copy) != NULL && strstr(o, "checksums=ok"), "%s", o);
    ck_assert_ptr_null(strstr(o, "CORRUPT"));
    /* The ingest/ directory alone, and the indexer's alone, are inspectable too. */
    snprintf(cmd, sizeof(cmd), "%s inspect %s/ingest 2>&1", getenv("STRATA_CLI"), data);
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    snprintf(cmd, sizeof(cmd), "%s inspect %s/indexer 2>&1", getenv("STRATA_CLI"), data);
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    /* A damaged segment copy is corruption like any other segment's. */
    flip_byte(copy, 64 + 8, 0x01);
    snprintf(cmd, sizeof(cmd), "%s inspect %s 2>&1", getenv("STRATA_CLI"), data);
    ck_assert_int_eq(st_test_run(cmd, o, sizeof(o)), 1);
    ck_assert_msg(strstr(o, "CORRUPT") && strstr(o, copy), "%s", o);
    flip_byte(copy, 64 + 8, 0x01);
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    /* A CATALOG that is not the indexer's is corruption, named. */
    snprintf(path, sizeof(path), "%s/CATALOG", idx);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"not\": \"a catalog\"}\n", f);
    fclose(f);
    ck_assert_int_eq(st_test_run(cmd, o, sizeof(o)), 1);
    ck_assert_msg(strstr(o, "CORRUPT") && strstr(o, path), "%s", o);
    st_test_rmrf(data);
    free(data);
}
END_TEST

/* Regression (issue 11, defect 1): a promotion (a window's only run sealed in place) changes
 * only the manifest; after a restart the segment must still be SEALED at its version, and
 * a manifest that disagrees with the file's window is corruption. */
START_TEST(test_promotion_survives_reopen)
{
    g_inline = true; /* the layout before vector logs */
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

/* ---- streaming seal merges (issue 11, defects 4 and 5) ------------------------------------ */

#define MW_START 1000 /* the merged window: [1000, 2000) */
#define MW_KEYS  600

/* The newest version written per key of the merged window (the oracle). */
struct mw_oracle {
    int64_t ts[MW_KEYS], off[MW_KEYS];
    int val[MW_KEYS];
    uint8_t op[MW_KEYS];
    bool have[MW_KEYS];
    int64_t next_off;
};

/* put() that flushes and retries when a store without a flusher thread pushes back. */
static void put_flushing(struct store *s, int64_t off, int k, int64_t ts, int val, uint8_t op)
{
    int rc;
    while ((rc = put(s, 0, off, k, ts, val, op)) == ST_EAGAIN)
        ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_msg(rc == ST_OK, "put: %s", st_strerror(rc));
}

/* Writes nruns runs of the merged window, each flushed into its own segment, with several
 * versions per id across runs (a later run may hold an older version), deletes and metas. */
static void mw_write_runs(struct store *s, struct mw_oracle *o, int nruns, int nkeys)
{
    for (int r = 0; r < nruns; r++) {
        for (int k = 0; k < nkeys; k++) {
            if ((k * 31 + r * 17) % 3 == 0 && r > 0)
                continue;
            int64_t ts = MW_START + (r * 7 + k * 13) % 900;
            int val = r * 10000 + k;
            uint8_t op = (k + r) % 5 == 0 ? STORE_OP_DELETE : STORE_OP_UPSERT;
            int64_t off = o->next_off++;
            put_flushing(s, off, k, ts, val, op);
            if (!o->have[k] || ts > o->ts[k] || (ts == o->ts[k] && off > o->off[k])) {
                o->have[k] = true;
                o->ts[k] = ts;
                o->off[k] = off;
                o->val[k] = val;
                o->op[k] = op;
            }
        }
        ck_assert_int_eq(store_flush(s), ST_OK);
    }
}

/* File numbers of the segments of a window (malloc'd). */
static uint64_t *window_segs(struct store *s, int64_t start, size_t *n, uint64_t *bytes)
{
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    uint64_t *f = calloc(store_snapshot_count(snap) + 1, sizeof(*f));
    *n = 0;
    if (bytes != NULL)
        *bytes = 0;
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment_info info;
        store_segment_info(store_snapshot_segment(snap, i), &info);
        if (info.window_start == start) {
            f[(*n)++] = info.file_number;
            if (bytes != NULL)
                *bytes += info.bytes;
        }
    }
    store_snapshot_release(snap);
    return f;
}

/* The merged window's single segment agrees with the oracle record by record, deletes and
 * metas included, and every checksum verifies. */
static void mw_check_segment(struct store *s, const struct mw_oracle *o, int nkeys)
{
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    struct store_segment *g = NULL;
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment_info info;
        store_segment_info(store_snapshot_segment(snap, i), &info);
        if (info.window_start == MW_START) {
            ck_assert_ptr_null(g);
            g = store_snapshot_segment(snap, i);
        }
    }
    ck_assert_ptr_nonnull(g);
    struct st_err err = {0};
    ck_assert_msg(store_segment_verify(g, &err) == ST_OK, "%s", err.msg);
    struct store_segment_info info;
    store_segment_info(g, &info);
    int want = 0, deletes = 0;
    for (int k = 0; k < nkeys; k++)
        want += o->have[k];
    ck_assert_uint_eq(info.count, (uint64_t)want);
    ck_assert_int_eq(info.kind, STORE_SEG_SEALED);
    for (uint64_t i = 0; i < info.count; i++) {
        struct store_seg_record r;
        store_segment_record(g, i, &r);
        char id[32];
        ck_assert_uint_lt(r.id_len, sizeof(id));
        memcpy(id, r.id, r.id_len);
        id[r.id_len] = 0;
        int k = atoi(id + 3);
        ck_assert(k >= 0 && k < nkeys && o->have[k]);
        ck_assert_int_eq(r.ts, o->ts[k]);
        ck_assert_int_eq(r.offset, o->off[k]);
        ck_assert_int_eq(r.op, o->op[k]);
        deletes += r.op == STORE_OP_DELETE;
        if (r.op == STORE_OP_UPSERT)
            ck_assert(store_segment_vector(g, i)[0] == (float)o->val[k]);
        uint8_t *meta;
        uint32_t mlen;
        ck_assert_int_eq(store_segment_meta(g, i, &meta, &mlen), ST_OK);
        char wm[32];
        snprintf(wm, sizeof(wm), "m%d", o->val[k]);
        ck_assert_uint_eq(mlen, strlen(wm));
        ck_assert(memcmp(meta, wm, mlen) == 0);
        free(meta);
    }
    ck_assert_int_gt(deletes, 0);
    store_snapshot_release(snap);
    for (int k = 0; k < nkeys; k++)
        ck_assert_int_eq(get_val(s, k), o->have[k] && o->op[k] == STORE_OP_UPSERT ? o->val[k] : -1);
}

static void mw_merge_case(int nruns)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    struct mw_oracle *o = calloc(1, sizeof(*o));
    mw_write_runs(s, o, nruns, MW_KEYS);
    size_t n;
    uint64_t *in = window_segs(s, MW_START, &n, NULL);
    ck_assert_uint_ge(n, (size_t)nruns); /* vector logs: a flush's deletes are a run apart */
    struct store_segment_info out;
    ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, &out), ST_OK);
    ck_assert_int_eq(out.kind, STORE_SEG_SEALED);
    mw_check_segment(s, o, MW_KEYS);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    mw_check_segment(s, o, MW_KEYS);
    ck_assert_int_eq(store_close(s), ST_OK);
    free(in);
    free(o);
    st_test_rmrf(dir);
    free(dir);
}

START_TEST(test_merge_streaming_matches_oracle)
{
    static const int runs[] = {2, 3, 20};
    mw_merge_case(runs[_i]);
}
END_TEST

/* A window many times larger than the merge's memory bound seals correctly, and the merge's
 * buffers never held more than the bound. */
START_TEST(test_merge_larger_than_memory_bound)
{
    enum { NK = 60000 };
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    struct mw_oracle *o = calloc(1, sizeof(*o));
    /* Three runs of NK distinct ids (k >= MW_KEYS are checked by value only). */
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < NK; k++) {
            int64_t ts = MW_START + (r * 7 + k) % 900;
            int64_t off = o->next_off++;
            uint8_t op = (k + r) % 5 == 0 ? STORE_OP_DELETE : STORE_OP_UPSERT;
            put_flushing(s, off, k, ts, r * 100000 + k, op);
            if (k < MW_KEYS &&
                (!o->have[k] || ts > o->ts[k] || (ts == o->ts[k] && off > o->off[k]))) {
                o->have[k] = true;
                o->ts[k] = ts;
                o->off[k] = off;
                o->val[k] = r * 100000 + k;
                o->op[k] = op;
            }
        }
        ck_assert_int_eq(store_flush(s), ST_OK);
    }
    size_t n;
    uint64_t in_bytes;
    uint64_t *in = window_segs(s, MW_START, &n, &in_bytes);
    ck_assert_uint_ge(n, 3);
    uint64_t bound = store_merge_memory(n, 3 * NK, 16); /* metas "m<val>": under 16 bytes */
    ck_assert_msg(bound * 8 < in_bytes, "bound %llu, inputs %llu", (unsigned long long)bound,
                  (unsigned long long)in_bytes);
    atomic_store(&store_merge_probe.last_peak, 0);
    struct store_segment_info out;
    ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, &out), ST_OK);
    uint64_t peak = atomic_load(&store_merge_probe.last_peak);
    ck_assert_uint_gt(peak, 0);
    ck_assert_msg(peak <= bound, "peak %llu > bound %llu", (unsigned long long)peak,
                  (unsigned long long)bound);
    ck_assert_uint_eq(out.count, NK);
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    ck_assert_uint_eq(store_snapshot_count(snap), 1);
    struct st_err err = {0};
    ck_assert_msg(store_segment_verify(store_snapshot_segment(snap, 0), &err) == ST_OK, "%s",
                  err.msg);
    store_snapshot_release(snap);
    /* Every id's newest version (run 2 wrote them all last, at the highest ts for most). */
    for (int k = 0; k < MW_KEYS; k++)
        ck_assert_int_eq(get_val(s, k), o->op[k] == STORE_OP_UPSERT ? o->val[k] : -1);
    for (int k = MW_KEYS; k < NK; k += 997) {
        int best = -1;
        int64_t bts = -1;
        for (int r = 0; r < 3; r++) {
            int64_t ts = MW_START + (r * 7 + k) % 900;
            if (ts >= bts) {
                bts = ts;
                best = (k + r) % 5 == 0 ? -1 : r * 100000 + k;
            }
        }
        ck_assert_int_eq(get_val(s, k), best);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    free(in);
    free(o);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A merge held in flight by the probe until the test releases it. */
struct mw_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
};
static struct mw_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};

static void gate_hold(void *ctx)
{
    struct mw_gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    while (!g->released)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static bool gate_entered(void)
{
    pthread_mutex_lock(&gate.mu);
    bool e = gate.entered;
    pthread_mutex_unlock(&gate.mu);
    return e;
}

static void gate_arm(void)
{
    gate.entered = gate.released = false;
    store_merge_probe.ctx = &gate;
    store_merge_probe.in_flight = gate_hold;
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.released = true;
    pthread_cond_broadcast(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

struct mw_job {
    struct store *s;
    uint64_t *in;
    size_t n;
    int rc;
    _Atomic bool done;
    uint64_t scanned;
};

static void *merge_thread(void *arg)
{
    struct mw_job *j = arg;
    j->rc = store_merge(j->s, j->in, j->n, STORE_SEG_SEALED, 1, NULL, NULL);
    atomic_store(&j->done, true);
    return NULL;
}

static int count_src(void *ctx, const struct store_scan_src *src)
{
    *(uint64_t *)ctx += src->n;
    return ST_OK;
}

/* Writes into another window (forcing freezes and flushes), then a strong scan and gets. */
static void *ingest_thread(void *arg)
{
    struct mw_job *j = arg;
    int rc = ST_OK;
    for (int k = 0; k < 4000 && rc == ST_OK; k++) {
        while ((rc = put(j->s, 1, k, 100000 + k, 7000 + k % 900, k, STORE_OP_UPSERT)) == ST_EAGAIN)
            st_test_sleep_ms(1);
    }
    if (rc == ST_OK)
        rc = store_flush(j->s);
    if (rc == ST_OK)
        rc = store_scan(j->s, count_src, &j->scanned);
    j->rc = rc;
    atomic_store(&j->done, true);
    return NULL;
}

/* Regression (issue 11, defect 4): a seal merge held mf_mu through all its I/O, so every flush
 * waited for it and ingest got ST_EAGAIN. On a slow disk, writes that need flushes and strong
 * scans must complete while a merge is provably in flight. */
START_TEST(test_writes_proceed_during_merge)
{
    char *dir = st_test_tmpdir("store");
    struct store_fs *fs = store_fs_sim_new();
    struct store_opts so = {.dir = dir,
                            .dim = DIM,
                            .wal_sync = STORE_SYNC_NONE,
                            .fs = fs,
                            .memtable_size = 256 * 1024,
                            .max_frozen = 2};
    struct store *s;
    ck_assert_int_eq(store_open(&so, &s, NULL), ST_OK);
    struct mw_oracle *o = calloc(1, sizeof(*o));
    mw_write_runs(s, o, 3, MW_KEYS);
    store_fs_sim_sync_delay(fs, 5);
    struct mw_job mj = {.s = s};
    mj.in = window_segs(s, MW_START, &mj.n, NULL);
    ck_assert_uint_ge(mj.n, 3);
    struct store_stats before;
    store_stats(s, &before);
    gate_arm();
    pthread_t mt, it;
    ck_assert_int_eq(pthread_create(&mt, NULL, merge_thread, &mj), 0);
    ck_assert(ST_WAIT_UNTIL(gate_entered(), 20000));
    struct mw_job ij = {.s = s};
    ck_assert_int_eq(pthread_create(&it, NULL, ingest_thread, &ij), 0);
    bool ingested = ST_WAIT_UNTIL(atomic_load(&ij.done), 20000);
    bool merge_blocked = !atomic_load(&mj.done);
    struct store_stats during;
    store_stats(s, &during);
    gate_release();
    pthread_join(mt, NULL);
    pthread_join(it, NULL);
    store_merge_probe.in_flight = NULL;
    ck_assert_msg(ingested, "writes and scans did not complete while the merge was in flight");
    ck_assert(merge_blocked);
    ck_assert_int_eq(ij.rc, ST_OK);
    /* Memtables filled, froze and flushed (and store_flush flushed the rest) meanwhile. */
    ck_assert_uint_ge(during.segments, before.segments + 2);
    ck_assert_uint_ge(ij.scanned, 4000);
    ck_assert_int_eq(mj.rc, ST_OK);
    store_fs_sim_sync_delay(fs, 0);
    mw_check_segment(s, o, MW_KEYS);
    for (int k = 0; k < 4000; k += 37)
        ck_assert_int_eq(get_val(s, 100000 + k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    store_fs_free(fs);
    free(mj.in);
    free(o);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Names of the *.seg and leftover files in dir; returns the number of *.seg files. */
static size_t count_files(const char *dir, size_t *leftovers)
{
    size_t segs = 0;
    *leftovers = 0;
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0)
            segs++;
        else if (strstr(de->d_name, ".tmp") != NULL || strstr(de->d_name, ".deleting") != NULL)
            (*leftovers)++;
    }
    closedir(d);
    return segs;
}

/* A drop of the window while its merge is in flight: the merge fails cleanly (ST_ENOTFOUND),
 * its output is discarded, and the other windows keep their data. */
START_TEST(test_drop_during_merge)
{
    g_inline = true; /* the layout before vector logs */
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    struct mw_oracle *o = calloc(1, sizeof(*o));
    mw_write_runs(s, o, 3, MW_KEYS);
    for (int k = 0; k < 200; k++)
        put_flushing(s, 100000 + k, 50000 + k, 3000 + k, k, STORE_OP_UPSERT);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct mw_job mj = {.s = s};
    mj.in = window_segs(s, MW_START, &mj.n, NULL);
    gate_arm();
    pthread_t mt;
    ck_assert_int_eq(pthread_create(&mt, NULL, merge_thread, &mj), 0);
    ck_assert(ST_WAIT_UNTIL(gate_entered(), 20000));
    size_t removed = 0;
    int drc = store_drop_window(s, MW_START, NULL, &removed);
    gate_release();
    pthread_join(mt, NULL);
    store_merge_probe.in_flight = NULL;
    ck_assert_int_eq(drc, ST_OK);
    ck_assert_uint_eq(removed, mj.n);
    ck_assert_int_eq(mj.rc, ST_ENOTFOUND);
    struct store_stats st;
    store_stats(s, &st);
    ck_assert_uint_eq(st.segments, 1);
    size_t left;
    ck_assert_uint_eq(count_files(dir, &left), 1); /* neither the inputs nor the output remain */
    ck_assert_uint_eq(left, 0);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    ck_assert_uint_eq(count_files(dir, &left), 1);
    ck_assert_uint_eq(left, 0);
    for (int k = 0; k < MW_KEYS; k++)
        ck_assert_int_eq(get_val(s, k), -1);
    for (int k = 0; k < 200; k++)
        ck_assert_int_eq(get_val(s, 50000 + k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    free(mj.in);
    free(o);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- no store lock across a flush's I/O or a WAL roll's fsync (issue 11, defect 4) ---- */

/* Holds the next thread that reaches fault site `site` until gate_release. */
static void hold_at(const char *site)
{
    gate.entered = gate.released = false;
    ck_assert_int_eq(st_fault_hook(site, gate_hold, &gate), ST_OK);
}

struct bg_job {
    struct store *s;
    int rc;
    _Atomic bool done;
    int64_t base;
};

static void *flush_thread(void *arg)
{
    struct bg_job *j = arg;
    j->rc = store_flush(j->s);
    atomic_store(&j->done, true);
    return NULL;
}

/* What other threads do while a flush is held in its I/O: manifest edits (a key/value put, a
 * window put, a merge of another window) must all complete. */
static void *manifest_edits_thread(void *arg)
{
    struct bg_job *j = arg;
    int rc = store_kv_put(j->s, "during-flush", "yes", 3);
    struct store_window w = {.start = 5000, .end = 6000, .state = 2, .version = 1};
    if (rc == ST_OK)
        rc = store_window_put(j->s, &w);
    size_t n = 0;
    uint64_t *in = rc == ST_OK ? window_segs(j->s, 5000, &n, NULL) : NULL;
    if (rc == ST_OK)
        rc = store_merge(j->s, in, n, STORE_SEG_SEALED, 1, NULL, NULL);
    free(in);
    j->rc = rc;
    atomic_store(&j->done, true);
    return NULL;
}

/* Regression: a flush held mf_mu across all its segment writes, so a seal, a drop or an
 * outbox put waited for every flush. With the flush provably inside its I/O, manifest edits
 * complete; the flush then installs its segments and everything survives a reopen. */
START_TEST(test_flush_io_does_not_hold_manifest_lock)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, true);
    /* Two runs of window [5000, 6000) to merge while the flush is held. */
    for (int r = 0; r < 2; r++) {
        for (int k = 0; k < 50; k++)
            ck_assert_int_eq(put(s, 0, r * 50 + k, k, 5000 + k, r * 100 + k, STORE_OP_UPSERT),
                             ST_OK);
        ck_assert_int_eq(store_flush(s), ST_OK);
    }
    for (int k = 0; k < 300; k++)
        ck_assert_int_eq(put(s, 0, 1000 + k, 1000 + k, 7000 + k, k, STORE_OP_UPSERT), ST_OK);
    hold_at("store.seg.sync_dir");
    struct bg_job fj = {.s = s}, ej = {.s = s};
    pthread_t ft, et;
    ck_assert_int_eq(pthread_create(&ft, NULL, flush_thread, &fj), 0);
    ck_assert(ST_WAIT_UNTIL(gate_entered(), 20000));
    ck_assert_int_eq(pthread_create(&et, NULL, manifest_edits_thread, &ej), 0);
    bool edited = ST_WAIT_UNTIL(atomic_load(&ej.done), 20000);
    bool flush_held = !atomic_load(&fj.done);
    gate_release();
    pthread_join(ft, NULL);
    pthread_join(et, NULL);
    st_fault_disarm_all();
    ck_assert_msg(edited, "manifest edits waited for a flush's I/O");
    ck_assert(flush_held);
    ck_assert_int_eq(ej.rc, ST_OK);
    ck_assert_int_eq(fj.rc, ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    char v[8];
    size_t vl = 0;
    ck_assert_int_eq(store_kv_get(s, "during-flush", v, sizeof(v), &vl), ST_OK);
    ck_assert_uint_eq(vl, 3);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(get_val(s, k), 100 + k);
    for (int k = 0; k < 300; k += 7)
        ck_assert_int_eq(get_val(s, 1000 + k), k);
    size_t n;
    uint64_t *segs = window_segs(s, 5000, &n, NULL);
    ck_assert_uint_eq(n, 1); /* the merge's output */
    free(segs);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

static void *writer_thread(void *arg)
{
    struct bg_job *j = arg;
    int rc = ST_OK;
    for (int k = 0; k < 20 && rc == ST_OK; k++)
        rc = put(j->s, 0, j->base + k, 5000 + k, 9000 + k, 5000 + k, STORE_OP_UPSERT);
    j->rc = rc;
    atomic_store(&j->done, true);
    return NULL;
}

static void *reader_thread(void *arg)
{
    struct bg_job *j = arg;
    struct store_stats st;
    store_stats(j->s, &st);
    uint64_t seen = 0;
    int rc = store_scan(j->s, count_src, &seen);
    if (rc == ST_OK && get_val(j->s, 3) != 3)
        rc = ST_EINVAL;
    j->rc = rc == ST_OK && seen >= 200 ? ST_OK : ST_EINVAL;
    atomic_store(&j->done, true);
    return NULL;
}

/* Regression: the fsync of the old WAL file at a memtable freeze ran under the store mutex,
 * so every reader (get, scan, statistics for /metrics) stalled behind it. With the roll held
 * in that fsync, readers complete; writers wait for the roll (nothing may reach the new WAL
 * file before the old one is durable) and proceed after it; what the roll synced is durable. */
START_TEST(test_wal_roll_fsync_does_not_block_readers)
{
    char *dir = st_test_tmpdir("store");
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_NONE, /* the roll fsyncs all the same */
                           .memtable_size = 1u << 20};
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&o, &s, NULL), ST_OK);
    for (int k = 0; k < 200; k++)
        ck_assert_int_eq(put(s, 0, k, k, 3000 + k, k, STORE_OP_UPSERT), ST_OK);
    int64_t d;
    hold_at("store.wal.roll_fsync");
    struct bg_job fj = {.s = s}, rj = {.s = s}, wj = {.s = s, .base = 1000};
    pthread_t ft, rt, wt;
    ck_assert_int_eq(pthread_create(&ft, NULL, flush_thread, &fj), 0);
    ck_assert(ST_WAIT_UNTIL(gate_entered(), 20000));
    ck_assert_int_eq(pthread_create(&rt, NULL, reader_thread, &rj), 0);
    ck_assert_int_eq(pthread_create(&wt, NULL, writer_thread, &wj), 0);
    bool read = ST_WAIT_UNTIL(atomic_load(&rj.done), 20000);
    /* The writer provably reached the roll and waits for it (not merely not started yet). */
    struct store_stats rs;
    bool parked = ST_WAIT_UNTIL((store_stats(s, &rs), rs.roll_waits >= 1), 20000);
    bool writer_parked = parked && !atomic_load(&wj.done);
    gate_release();
    pthread_join(ft, NULL);
    pthread_join(rt, NULL);
    pthread_join(wt, NULL);
    st_fault_disarm_all();
    ck_assert_msg(read, "readers waited for the WAL roll's fsync");
    ck_assert_int_eq(rj.rc, ST_OK);
    ck_assert_msg(writer_parked, "a write went on while the old WAL file was not yet durable");
    ck_assert_int_eq(wj.rc, ST_OK);
    ck_assert_int_eq(fj.rc, ST_OK);
    ck_assert_int_eq(store_durable_offset(s, 0, &d), ST_OK);
    ck_assert_int_ge(d, 199);
    for (int k = 0; k < 20; k++)
        ck_assert_int_eq(get_val(s, 5000 + k), 5000 + k);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A roll that created its new WAL file but crashed (or failed) before the swap leaves that
 * file empty after the older one, whose tail may be torn like any last file's: recovery
 * truncates the torn tail and opens. A torn file followed by one holding records is still
 * refused as corruption. */
START_TEST(test_wal_torn_before_empty_newer_file)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 20; k++)
        ck_assert_int_eq(put(s, 0, k, k, 3000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* The newest non-empty log gets half a record; an empty newer log follows it. */
    uint64_t newest = 0;
    DIR *dd = opendir(dir);
    for (struct dirent *de; (de = readdir(dd)) != NULL;) {
        unsigned long long num;
        char *path = NULL;
        struct stat sb;
        if (sscanf(de->d_name, "%llu.log", &num) == 1 && strstr(de->d_name, ".log") &&
            asprintf(&path, "%s/%s", dir, de->d_name) > 0 && stat(path, &sb) == 0 &&
            sb.st_size > 0 && num > newest)
            newest = num;
        free(path);
    }
    closedir(dd);
    ck_assert_uint_gt(newest, 0);
    char *lp = NULL, *ep = NULL;
    ck_assert_int_gt(asprintf(&lp, "%s/%06llu.log", dir, (unsigned long long)newest), 0);
    ck_assert_int_gt(asprintf(&ep, "%s/%06llu.log", dir, (unsigned long long)newest + 50), 0);
    struct stat sb;
    ck_assert_int_eq(stat(lp, &sb), 0);
    ck_assert_int_eq(truncate(lp, sb.st_size - 5), 0); /* the last record is cut in half */
    FILE *f = fopen(ep, "wb");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 19; k++)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(get_val(s, 19), -1);
    ck_assert_int_eq(put(s, 0, 20, 20, 3020, 20, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    ck_assert_int_eq(get_val(s, 20), 20);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* The same torn file followed by a log holding records is corruption, not a torn tail. */
    ck_assert_int_eq(stat(lp, &sb), 0);
    ck_assert_int_eq(truncate(lp, sb.st_size - 5), 0);
    struct st_err err = {0};
    ck_assert_int_eq(try_open(dir, false, &err), ST_ECORRUPT);
    free(lp);
    free(ep);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

struct promo_reader {
    struct store *s;
    _Atomic bool stop;
    uint64_t seen;
    bool torn;
};

static void *promo_reader_main(void *arg)
{
    struct promo_reader *r = arg;
    while (!atomic_load(&r->stop)) {
        struct store_snapshot *snap;
        if (store_snapshot_acquire(r->s, &snap) != ST_OK)
            continue;
        for (size_t i = 0; i < store_snapshot_count(snap); i++) {
            struct store_segment_info info;
            store_segment_info(store_snapshot_segment(snap, i), &info);
            /* The promotions below pair odd versions with SEALED, even ones with RUN. */
            if ((info.kind == STORE_SEG_SEALED) != (info.version % 2 == 1))
                r->torn = true;
            r->seen++;
        }
        store_snapshot_release(snap);
    }
    return NULL;
}

/* Regression (issue 11): a promotion wrote kind and version into the published segment under
 * mu while readers read them with no lock (a data race TSan reports). Promotions now install a
 * new handle. Run under the TSan build with CK_FORK=no. */
START_TEST(test_promotion_races_no_reader)
{
    g_inline = true; /* the layout before vector logs */
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    size_t n;
    uint64_t *in = window_segs(s, 1000, &n, NULL);
    ck_assert_uint_eq(n, 1);
    struct promo_reader r = {.s = s};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, promo_reader_main, &r), 0);
    for (uint32_t v = 2; v < 200; v++) {
        struct store_segment_info out;
        enum store_seg_kind kind = v % 2 ? STORE_SEG_SEALED : STORE_SEG_RUN;
        ck_assert_int_eq(store_merge(s, in, 1, kind, v, NULL, &out), ST_OK);
        ck_assert_uint_eq(out.file_number, in[0]);
        ck_assert_uint_eq(out.version, v);
    }
    atomic_store(&r.stop, true);
    pthread_join(t, NULL);
    ck_assert_uint_gt(r.seen, 0);
    ck_assert(!r.torn);
    for (int k = 0; k < 50; k += 7)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    free(in);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* After a crash anywhere in a merge of the window's nruns runs: either all the runs or the one
 * sealed segment (never both, never neither), the data intact, no file the manifest does not
 * list. Returns 0 for "before", 1 for "after". */
static int mw_observe(const char *dir, const struct mw_oracle *o, int nruns)
{
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    struct store_snapshot *snap;
    ck_assert_int_eq(store_snapshot_acquire(s, &snap), ST_OK);
    size_t runs = 0, sealed = 0, other = 0;
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment_info info;
        store_segment_info(store_snapshot_segment(snap, i), &info);
        if (info.window_start != MW_START)
            other++;
        else if (info.kind == STORE_SEG_SEALED && info.version == 1)
            sealed++;
        else if (info.kind == STORE_SEG_RUN)
            runs++;
    }
    size_t listed = store_snapshot_count(snap);
    store_snapshot_release(snap);
    struct store_stats ss;
    store_stats(s, &ss);
    listed += ss.vlogs; /* the other window's vector log, and this one's until sealed */
    ck_assert_uint_eq(other, 1);
    ck_assert_msg((runs == (size_t)nruns && sealed == 0) || (runs == 0 && sealed == 1),
                  "runs=%zu sealed=%zu", runs, sealed);
    size_t left;
    ck_assert_uint_eq(count_files(dir, &left), listed);
    ck_assert_uint_eq(left, 0);
    for (int k = 0; k < MW_KEYS; k += 3)
        ck_assert_int_eq(get_val(s, k), o->have[k] && o->op[k] == STORE_OP_UPSERT ? o->val[k] : -1);
    ck_assert_int_eq(get_val(s, 50000), 7);
    ck_assert_int_eq(store_close(s), ST_OK);
    return sealed;
}

static void mw_merge_once(const char *dir, bool arm, const char *site, uint32_t skip)
{
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    size_t n;
    uint64_t *in = window_segs(s, MW_START, &n, NULL);
    if (arm && st_fault_arm(site, skip, 1, ST_FAULT_CRASH) != ST_OK)
        _exit(3);
    if (!arm)
        st_fault_record(true);
    int rc = store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, NULL);
    if (!arm)
        st_fault_record(false);
    st_fault_disarm_all();
    ck_assert(arm || rc == ST_OK);
    (void)store_close(s);
    free(in);
}

static void mw_crash_matrix(int nruns, bool inline_layout)
{
    g_inline = inline_layout;
    char *dir = st_test_tmpdir("store");
    char *work = NULL;
    ck_assert_int_ge(asprintf(&work, "%s.work", dir), 0);
    struct store *s = open_store(dir, NULL, STORE_SYNC_NONE, false);
    struct mw_oracle *o = calloc(1, sizeof(*o));
    mw_write_runs(s, o, nruns, MW_KEYS);
    ck_assert_int_eq(put(s, 0, 100000, 50000, 3000, 7, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    size_t n0;
    free(window_segs(s, MW_START, &n0, NULL));
    ck_assert_int_eq(store_close(s), ST_OK);
    nruns = (int)n0; /* vector logs: a flush's deletes are a run of their own */
    ck_assert_int_eq(mw_observe(dir, o, nruns), 0);

    copy_dir(dir, work);
    mw_merge_once(work, false, NULL, 0); /* the dry run: which sites does a merge pass? */
    const char *sites[128];
    size_t nsites = st_fault_recorded(sites, 128);
    ck_assert_int_ge(nsites, nruns > 1 ? 6 : 2);
    ck_assert_int_eq(mw_observe(work, o, nruns), 1);
    int seen[2] = {0};
    for (size_t i = 0; i < nsites; i++) {
        for (uint32_t skip = 0; skip < 3; skip++) {
            copy_dir(dir, work);
            pid_t pid = fork();
            ck_assert_int_ge(pid, 0);
            if (pid == 0) {
                mw_merge_once(work, true, sites[i], skip);
                _exit(0);
            }
            int status;
            ck_assert_int_eq(waitpid(pid, &status, 0), pid);
            ck_assert(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0));
            seen[mw_observe(work, o, nruns)]++;
        }
    }
    /* Both outcomes occurred: the matrix cut the merge before and after its commit point. */
    ck_assert_int_gt(seen[0], 0);
    ck_assert_int_gt(seen[1], 0);
    free(o);
    st_test_rmrf(work);
    st_test_rmrf(dir);
    free(work);
    free(dir);
}

/* ---- manifest compaction ---- */

#define MC_LIMIT 16384

static struct store *mc_open(const char *dir)
{
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .manifest_max_bytes = MC_LIMIT};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    return s;
}

static size_t count_manifests(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        n += strncmp(de->d_name, "MANIFEST-", 9) == 0;
    closedir(d);
    return n;
}

/* One outbox-like cycle i: put entry i (200 bytes), delete entry i - 1, re-put a window. */
static int mc_cycle(struct store *s, int i)
{
    char key[32], val[200];
    snprintf(key, sizeof(key), "outbox/%06d", i);
    memset(val, 'a' + i % 26, sizeof(val));
    int rc = store_kv_put(s, key, val, sizeof(val));
    if (rc == ST_OK && i > 0) {
        snprintf(key, sizeof(key), "outbox/%06d", i - 1);
        rc = store_kv_del(s, key);
    }
    struct store_window w = {
        .start = 1000 * (i % 7), .end = 1000 * (i % 7) + 1000, .state = 1, .version = (uint32_t)i};
    if (rc == ST_OK)
        rc = store_window_put(s, &w);
    return rc;
}

/* The state after cycles 0..last: entry `last` present with its bytes, no other entry. */
static void mc_check(struct store *s, int last)
{
    char **keys;
    size_t n;
    ck_assert_int_eq(store_kv_keys(s, "outbox/", &keys, &n), ST_OK);
    ck_assert_uint_eq(n, last >= 0 ? 1 : 0);
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    if (last < 0)
        return;
    char key[32], val[256];
    size_t vl = 0;
    snprintf(key, sizeof(key), "outbox/%06d", last);
    ck_assert_int_eq(store_kv_get(s, key, val, sizeof(val), &vl), ST_OK);
    ck_assert_uint_eq(vl, 200);
    ck_assert_int_eq(val[0], 'a' + last % 26);
}

/* Regression (issue 11): every outbox put and delete appended to the manifest forever. With
 * the state constant, the manifest stays within its bound however many edits go by, only one
 * manifest file remains, and the compacted state reopens exactly. */
START_TEST(test_manifest_compacts_online)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = mc_open(dir);
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(put(s, 0, k, k, 3000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    struct store_stats a, b;
    store_stats(s, &a);
    uint64_t peak = 0;
    const int cycles = 3000;
    for (int i = 0; i < cycles; i++) {
        ck_assert_int_eq(mc_cycle(s, i), ST_OK);
        uint64_t size = s->mf_file->size;
        if (size > peak)
            peak = size;
        /* Bound: the limit (the snapshot is far smaller) plus one cycle's edits. */
        ck_assert_uint_le(size, MC_LIMIT + 1024);
    }
    store_stats(s, &b);
    ck_assert_uint_gt(b.manifest_bytes_written - a.manifest_bytes_written, 20 * MC_LIMIT);
    ck_assert_uint_ge(b.manifest_rewrites - a.manifest_rewrites, 20);
    ck_assert_uint_ge(peak, MC_LIMIT / 2);
    ck_assert_uint_eq(count_manifests(dir), 1);
    mc_check(s, cycles - 1);
    ck_assert_int_eq(store_close(s), ST_OK);
    s = mc_open(dir);
    mc_check(s, cycles - 1);
    struct store_window *w;
    size_t nw;
    ck_assert_int_eq(store_windows(s, &w, &nw), ST_OK);
    ck_assert_uint_eq(nw, 7);
    for (size_t i = 0; i < nw; i++) /* the newest put of each window won */
        ck_assert_uint_ge(w[i].version, (uint32_t)cycles - 7);
    free(w);
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_uint_eq(count_manifests(dir), 1);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* After cycles 0..a acknowledged and perhaps part of cycle a + 1: the outbox holds {a},
 * {a, a+1} or {a+1}, each with its own bytes. */
static void mc_check_prefix(struct store *s, int a)
{
    char **keys;
    size_t n;
    ck_assert_int_eq(store_kv_keys(s, "outbox/", &keys, &n), ST_OK);
    ck_assert_uint_ge(n, 1);
    ck_assert_uint_le(n, 2);
    for (size_t i = 0; i < n; i++) {
        int k = atoi(keys[i] + 7);
        ck_assert_msg(k == a || k == a + 1, "outbox entry %s after cycle %d", keys[i], a);
        char val[256];
        size_t vl = 0;
        ck_assert_int_eq(store_kv_get(s, keys[i], val, sizeof(val), &vl), ST_OK);
        ck_assert_uint_eq(vl, 200);
        ck_assert_int_eq(val[0], 'a' + k % 26);
        free(keys[i]);
    }
    free(keys);
}

/* Opens dir (which compacts the manifest: the count of cycles to the next compaction is then
 * deterministic), runs `quiet` cycles from `from`, arms site (crash on hit skip + 1), runs
 * three more. Reports each acknowledged cycle on fd. */
static void mc_run(const char *dir, int from, int quiet, const char *site, uint32_t skip, int fd)
{
    struct store *s = mc_open(dir);
    for (int i = from; i < from + quiet + 3; i++) {
        if (i == from + quiet && st_fault_arm(site, skip, 1, ST_FAULT_CRASH) != ST_OK)
            _exit(3);
        if (mc_cycle(s, i) != ST_OK)
            break;
        if (write(fd, "x", 1) != 1)
            _exit(4);
    }
    st_fault_disarm_all();
    (void)store_close(s);
}

static void read_current(const char *dir, char *buf, size_t cap)
{
    char *p = NULL;
    ck_assert_int_ge(asprintf(&p, "%s/CURRENT", dir), 0);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    free(p);
}

/* Crash at every I/O site of an online manifest compaction, at three hit counts: every
 * acknowledged edit is there after a restart (an unacknowledged one may be too), the state is
 * a prefix of the edits, exactly one manifest remains, and both sides of the commit point
 * (CURRENT's rename) are reached. */
START_TEST(test_crash_during_manifest_compaction)
{
    char *dir = st_test_tmpdir("store");
    char *work = NULL;
    ck_assert_int_ge(asprintf(&work, "%s.work", dir), 0);
    struct store *s = mc_open(dir);
    for (int k = 0; k < 50; k++)
        ck_assert_int_eq(put(s, 0, k, k, 3000 + k, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_OK);
    ck_assert_int_eq(mc_cycle(s, 0), ST_OK);
    ck_assert_int_eq(store_close(s), ST_OK);
    /* The dry run from a fresh open: how many cycles until one compacts, and its sites. The
     * manifest the open switches to is the one a compaction cut before its commit leaves. */
    copy_dir(dir, work);
    s = mc_open(work);
    char first_current[64];
    read_current(work, first_current, sizeof(first_current));
    int quiet = 0;
    const char *sites[128];
    size_t nsites = 0;
    for (;; quiet++) {
        ck_assert_int_lt(quiet, 2000);
        struct store_stats a, b;
        store_stats(s, &a);
        st_fault_record(true);
        ck_assert_int_eq(mc_cycle(s, 1 + quiet), ST_OK);
        st_fault_record(false);
        store_stats(s, &b);
        if (b.manifest_rewrites > a.manifest_rewrites) {
            nsites = st_fault_recorded(sites, 128);
            break;
        }
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    ck_assert_int_ge(nsites, 8);
    int cut_before = 0, cut_after = 0;
    for (size_t i = 0; i < nsites; i++) {
        for (uint32_t skip = 0; skip < 3; skip++) {
            copy_dir(dir, work);
            char opened_current[64];
            int pfd[2];
            ck_assert_int_eq(pipe(pfd), 0);
            pid_t pid = fork();
            ck_assert_int_ge(pid, 0);
            if (pid == 0) {
                close(pfd[0]);
                mc_run(work, 1, quiet, sites[i], skip, pfd[1]);
                _exit(0);
            }
            close(pfd[1]);
            char buf[64];
            ssize_t acked = 0, r;
            while ((r = read(pfd[0], buf, sizeof(buf))) > 0)
                acked += r;
            close(pfd[0]);
            int status;
            ck_assert_int_eq(waitpid(pid, &status, 0), pid);
            ck_assert(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0));
            ck_assert_int_ge(acked, quiet);
            /* The child's open switched CURRENT once; the compaction under test would switch
             * it again. */
            read_current(work, opened_current, sizeof(opened_current));
            s = mc_open(work);
            mc_check_prefix(s, (int)acked); /* cycles 0..acked are acknowledged */
            for (int k = 0; k < 50; k += 7)
                ck_assert_int_eq(get_val(s, k), k);
            ck_assert_uint_eq(count_manifests(work), 1);
            ck_assert_int_eq(store_close(s), ST_OK);
            if (WIFSIGNALED(status) && strcmp(opened_current, first_current) == 0)
                cut_before++;
            else if (WIFSIGNALED(status))
                cut_after++;
        }
    }
    ck_assert_int_gt(cut_before, 0);
    ck_assert_int_gt(cut_after, 0);
    st_test_rmrf(work);
    st_test_rmrf(dir);
    free(work);
    free(dir);
}
END_TEST

START_TEST(test_crash_during_merge)
{
    mw_crash_matrix(3, _i == 1); /* 0: a seal completing the vector log; 1: a rewrite */
}
END_TEST

START_TEST(test_crash_during_promotion)
{
    mw_crash_matrix(1, _i == 1); /* 0: one run's seal completing its log; 1: promotion */
}
END_TEST

/* ---- memtable: real bytes, lock-free readers (issue 11, defects 4 and 6) --------------------- */

static struct store *open_sized(const char *dir, uint64_t memtable_size, bool background)
{
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = !background,
                           .memtable_size = memtable_size};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "store_open: %s", err.msg);
    return s;
}

/* Writes record k with a meta of meta_len bytes. */
static int put_meta(struct store *s, int64_t off, int k, uint32_t meta_len)
{
    static uint8_t meta[8192];
    memset(meta, 'm', sizeof(meta));
    char id[32];
    snprintf(id, sizeof(id), "id-%d", k);
    float v[DIM];
    fill_vec(v, k);
    struct store_record r = {.id = (const uint8_t *)id,
                             .id_len = (uint32_t)strlen(id),
                             .ts = 1000,
                             .window = 1000,
                             .window_end = 2000,
                             .op = STORE_OP_UPSERT,
                             .vec = v,
                             .meta = meta,
                             .meta_len = meta_len};
    struct store_batch b = {.partition = 0, .offset = off, .n = 1, .recs = &r};
    return store_write(s, &b, NULL);
}

/*
 * A memtable of size M allocates about M: the old one counted the capacity of arrays that
 * doubled (so it held up to ~2M before a freeze), and with a small M its first allocation
 * alone was over the limit, so every write froze a memtable of one record.
 */
START_TEST(test_memtable_counts_real_bytes)
{
    static const uint64_t sizes[] = {64u << 10, 1u << 20};
    static const uint32_t metas[] = {0, 100, 4000};
    for (size_t si = 0; si < 2; si++) {
        for (size_t mi = 0; mi < 3; mi++) {
            char *dir = st_test_tmpdir("store");
            struct store *s = open_sized(dir, sizes[si], false);
            uint64_t most = 0, most_recs = 0, freezes = 0;
            uint64_t payload = (uint64_t)DIM * 4 + 8 + metas[mi];
            int nk = 0;
            for (int k = 0; freezes < 2 && k < 100000; k++, nk++) {
                ck_assert_int_eq(put_meta(s, k, k, metas[mi]), ST_OK);
                struct store_stats st;
                store_stats(s, &st);
                if (st.frozen_memtables > 0) {
                    freezes++;
                    ck_assert_int_eq(store_flush(s), ST_OK);
                    store_stats(s, &st);
                }
                /* Never under what the records need, never much over the limit. */
                ck_assert_uint_ge(st.memtable_bytes, st.memtable_records * payload);
                ck_assert_msg(st.memtable_bytes <= sizes[si] + sizes[si] / 4,
                              "memtable of %llu bytes for a limit of %llu (meta %u)",
                              (unsigned long long)st.memtable_bytes, (unsigned long long)sizes[si],
                              metas[mi]);
                most = st.memtable_bytes > most ? st.memtable_bytes : most;
                most_recs = st.memtable_records > most_recs ? st.memtable_records : most_recs;
            }
            /* A memtable fills most of its limit before it freezes (counting each record's
             * entry and hash slot too). */
            ck_assert_uint_ge(most_recs * (payload + sizeof(struct store_mt_entry) + 16),
                              sizes[si] / 2);
            ck_assert_uint_gt(freezes, 0);
            ck_assert_uint_ge(most, sizes[si] / 2);
            for (int k = 0; k < nk; k += 97) {
                char id[32];
                snprintf(id, sizeof(id), "id-%d", k);
                struct store_value v = {0};
                ck_assert_int_eq(store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &v),
                                 ST_OK);
                ck_assert_uint_eq(v.meta_len, metas[mi]);
                free(v.meta);
            }
            ck_assert_int_eq(store_close(s), ST_OK);
            st_test_rmrf(dir);
            free(dir);
        }
    }
}
END_TEST

struct scan_block {
    struct store *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool in_callback;
    int written; /* writes that returned while the callback was blocked */
    bool stop;
};

static void *blocked_writer(void *arg)
{
    struct scan_block *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->in_callback)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    for (int k = 0; k < 200; k++) {
        ck_assert_int_eq(put(b->s, 0, 1000 + k, 1000 + k, 1500, k, STORE_OP_UPSERT), ST_OK);
        pthread_mutex_lock(&b->mu);
        b->written++;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
    }
    return NULL;
}

/* Holds the first (active memtable) source until the writer did 200 writes, or 10 s. */
static int hold_scan(void *ctx, const struct store_scan_src *src)
{
    struct scan_block *b = ctx;
    if (!src->memtable || b->stop)
        return ST_OK;
    b->stop = true;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    pthread_mutex_lock(&b->mu);
    b->in_callback = true;
    pthread_cond_broadcast(&b->cv);
    while (b->written < 200 && pthread_cond_timedwait(&b->cv, &b->mu, &dl) == 0)
        ;
    int rc = b->written >= 200 ? ST_OK : ST_ETIMEDOUT;
    pthread_mutex_unlock(&b->mu);
    return rc;
}

/* A strong search's distance loop over the active memtable no longer holds the store lock:
 * writers keep going while a scan callback is blocked (the old scan deadlocked here, and the
 * deadline turns that into a failure). */
START_TEST(test_scan_does_not_block_writers)
{
    char *dir = st_test_tmpdir("store");
    struct scan_block b = {.s = open_store(dir, NULL, STORE_SYNC_NONE, true)};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(put(b.s, 0, k, k, 1500, k, STORE_OP_UPSERT), ST_OK);
    pthread_t t;
    pthread_create(&t, NULL, blocked_writer, &b);
    int rc = store_scan(b.s, hold_scan, &b);
    ck_assert_msg(rc == ST_OK, "writes did not complete while a scan callback ran (%d of 200)",
                  b.written);
    pthread_join(t, NULL);
    for (int k = 0; k < 200; k++)
        ck_assert_int_eq(get_val(b.s, 1000 + k), k);
    ck_assert_int_eq(store_close(b.s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

struct churn {
    struct store *s;
    _Atomic bool stop;
    _Atomic int64_t next; /* offsets written so far */
};

static void *churn_writer(void *arg)
{
    struct churn *c = arg;
    for (int64_t k = 0; !atomic_load(&c->stop) && k < 20000; k++) {
        /* ids cycle over 3000, so versions supersede each other inside a memtable too */
        int rc;
        while ((rc = put(c->s, 0, k, (int)(k % 3000), 1000 + k, (int)k, STORE_OP_UPSERT)) ==
               ST_EAGAIN)
            ;
        ck_assert_int_eq(rc, ST_OK);
        atomic_store(&c->next, k + 1);
    }
    atomic_store(&c->stop, true);
    return NULL;
}

struct seen {
    uint8_t *ids; /* ids[k % 3000] = 1 once id-k was visited */
    int64_t newest[3000];
};

static int note_seen(void *ctx, const struct store_scan_src *src)
{
    struct seen *sn = ctx;
    for (uint64_t i = 0; i < src->n; i++) {
        struct store_scan_rec r;
        store_scan_record(src, i, &r);
        char id[16] = {0};
        memcpy(id, r.id, r.id_len < 15 ? r.id_len : 15);
        int k = atoi(id + 3);
        ck_assert(k >= 0 && k < 3000);
        /* the vector is the one written with this version */
        ck_assert_float_eq(store_scan_vec(src, i)[0], (float)(r.ts - 1000));
        sn->ids[k] = 1;
        if (r.ts - 1000 > sn->newest[k])
            sn->newest[k] = r.ts - 1000;
    }
    return ST_OK;
}

/* Writers, freezes and flushes race scans (run under TSan too): every id applied before a scan
 * starts is visited by it, with its newest version at that point or a later one. */
START_TEST(test_scan_concurrent_with_writers)
{
    char *dir = st_test_tmpdir("store");
    struct churn c = {.s = open_sized(dir, 64u << 10, true)};
    pthread_t t;
    pthread_create(&t, NULL, churn_writer, &c);
    int scans = 0;
    static struct seen sn;
    static uint8_t ids[3000];
    while (!atomic_load(&c.stop) || scans < 3) {
        int64_t before = atomic_load(&c.next);
        memset(ids, 0, sizeof(ids));
        for (int i = 0; i < 3000; i++)
            sn.newest[i] = -1;
        sn.ids = ids;
        ck_assert_int_eq(store_scan(c.s, note_seen, &sn), ST_OK);
        for (int64_t k = before > 3000 ? before - 3000 : 0; k < before; k++) {
            ck_assert_msg(ids[k % 3000], "id-%d (offset %lld) missed by a scan", (int)(k % 3000),
                          (long long)k);
            ck_assert_int_ge(sn.newest[k % 3000], k);
        }
        scans++;
    }
    pthread_join(t, NULL);
    ck_assert_int_gt(scans, 2);
    ck_assert_int_eq(store_close(c.s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* An allocation failure in a flush never undoes a durable manifest edit: the segment list is
 * sized before the edit is appended (the old flush grew it afterwards, and on failure doomed
 * — unlinked — files the manifest already listed). The flush fails cleanly and is retried. */
START_TEST(test_flush_alloc_failure_keeps_listed_files)
{
    char *dir = st_test_tmpdir("store");
    struct store *s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(put(s, 0, k, k, 1000 + k * 10, k, STORE_OP_UPSERT), ST_OK);
    ck_assert_int_eq(st_fault_arm("store.flush.reserve", 0, 1, ST_ENOMEM), ST_OK);
    ck_assert_int_eq(store_flush(s), ST_ENOMEM);
    ck_assert_uint_eq(st_fault_fired("store.flush.reserve"), 1);
    st_fault_disarm_all();
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(get_val(s, k), k);  /* still served from the frozen memtable */
    ck_assert_int_eq(store_flush(s), ST_OK); /* the retry succeeds */
    ck_assert_int_eq(store_close(s), ST_OK);
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    for (int k = 0; k < 100; k++)
        ck_assert_int_eq(get_val(s, k), k);
    ck_assert_int_eq(store_close(s), ST_OK);
    char cmd[600], o[8192];
    snprintf(cmd, sizeof(cmd), "%s inspect %s 2>&1", getenv("STRATA_CLI"), dir);
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A new store directory's entry is made durable: its parent is fsynced on every open (a
 * failure there fails the open rather than risking a directory a power loss can erase). */
START_TEST(test_store_dir_parent_fsynced)
{
    char *base = st_test_tmpdir("store");
    char *dir = NULL;
    ck_assert_int_ge(asprintf(&dir, "%s/coll", base), 0);
    ck_assert_int_eq(st_fault_arm("store.mkdir.sync_parent", 0, 1, ST_EIO), ST_OK);
    struct st_err err = {0};
    struct store_opts o = {.dir = dir, .dim = DIM, .no_background = true};
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&o, &s, &err), ST_EIO);
    ck_assert_uint_eq(st_fault_fired("store.mkdir.sync_parent"), 1);
    st_fault_disarm_all();
    /* The directory exists now; the next open still syncs the parent, then works. */
    st_fault_record(true);
    s = open_store(dir, NULL, STORE_SYNC_ALWAYS, false);
    const char *sites[64];
    size_t n = st_fault_recorded(sites, 64);
    st_fault_record(false);
    bool synced = false;
    for (size_t i = 0; i < n && i < 64; i++)
        synced |= strcmp(sites[i], "store.mkdir.sync_parent") == 0;
    ck_assert(synced);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(base);
    free(dir);
    free(base);
}
END_TEST

/* ---- WAL bytes and group commit --------------------------------------------------------- */

/* Deterministic batches for the WAL golden hash: ids of varied length, deletes, meta from none
 * to 40 KB (a record over several log blocks), batches from 1 to 1500 records. */
static void golden_batches(struct store *s)
{
    static const uint32_t sizes[] = {1, 3, 700, 1, 50, 1500, 2, 9};
    uint8_t *meta = malloc(40000);
    float *vecs = malloc(1500 * DIM * sizeof(float));
    struct store_record *recs = calloc(1500, sizeof(*recs));
    char(*ids)[40] = calloc(1500, sizeof(*ids));
    ck_assert(meta != NULL && vecs != NULL && recs != NULL && ids != NULL);
    for (uint32_t i = 0; i < 40000; i++)
        meta[i] = (uint8_t)('a' + i % 26);
    uint32_t seq = 0;
    for (size_t b = 0; b < sizeof(sizes) / sizeof(sizes[0]); b++) {
        for (uint32_t i = 0; i < sizes[b]; i++, seq++) {
            int n = snprintf(ids[i], sizeof(ids[i]), "k%u-%.*s", seq, (int)(seq % 30),
                             "abcdefghijklmnopqrstuvwxyz0123");
            fill_vec(vecs + (size_t)i * DIM, (int)seq);
            uint32_t ml = seq % 7 == 0 ? 0 : seq % 331 == 5 ? 40000 - seq : seq % 300;
            recs[i] = (struct store_record){.id = (const uint8_t *)ids[i],
                                            .id_len = (uint32_t)n,
                                            .ts = 1000 + seq,
                                            .window = 0,
                                            .window_end = 3600000,
                                            .op = seq % 11 == 3 ? STORE_OP_DELETE : STORE_OP_UPSERT,
                                            .vec = vecs + (size_t)i * DIM,
                                            .meta = ml ? meta : NULL,
                                            .meta_len = ml};
        }
        struct store_batch batch = {
            .partition = (int32_t)(b % 3), .offset = (int64_t)b, .recs = recs, .n = sizes[b]};
        bool applied;
        ck_assert_int_eq(store_write(s, &batch, &applied), ST_OK);
        ck_assert(applied);
    }
    free(meta);
    free(vecs);
    free(recs);
    free(ids);
}

/*
 * The WAL's bytes do not change with how the write path builds them (wal_format.h and
 * log_format.h are on disk): the hash of the WAL written for golden_batches was taken with the
 * copy-into-a-buffer writer, before the writev one replaced it.
 */
START_TEST(test_wal_bytes_golden)
{
    g_inline = true; /* the layout before vector logs */
    char *dir = st_test_tmpdir("walgold");
    /* A memtable large enough that the batches stay in one WAL file whatever the memtable's
     * own bookkeeping costs (the bytes of the WAL do not depend on it). */
    struct store_opts o = {.dir = dir,
                           .dim = DIM,
                           .wal_sync = STORE_SYNC_NONE,
                           .no_background = true,
                           .memtable_size = 16u << 20,
                           .inline_vectors = true};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    golden_batches(s);
    /* The live WAL, read while the store is open (a close would flush and remove it). */
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int logs = 0;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 4 || strcmp(e->d_name + nl - 4, ".log") != 0)
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        ck_assert_ptr_nonnull(f);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (n > 0) {
            logs++;
            bytes = malloc((size_t)n);
            ck_assert_uint_eq(fread(bytes, 1, (size_t)n, f), (size_t)n);
            len = (size_t)n;
        }
        fclose(f);
    }
    closedir(d);
    ck_assert_int_eq(logs, 1);
    ck_assert_msg(len == WAL_GOLDEN_LEN && st_hash64(bytes, len) == WAL_GOLDEN_HASH,
                  "WAL of %zu bytes, hash 0x%016llx", len,
                  (unsigned long long)st_hash64(bytes, len));
    free(bytes);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Small writes in a burst share fsyncs: the syncer waits for the oldest unsynced write to be
 * wal_sync_interval_ms old instead of syncing after every write, and the marks become durable
 * once it has. */
START_TEST(test_group_commit_by_time)
{
    char *dir = st_test_tmpdir("gctime");
    struct store_opts o = {
        .dir = dir, .dim = DIM, .wal_sync = STORE_SYNC_BATCH, .wal_sync_interval_ms = 300};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    struct store_stats st0, st1;
    store_stats(s, &st0);
    int64_t t0 = st_test_now_ms();
    const int n = 40;
    for (int i = 0; i < n; i++) {
        float v[DIM];
        fill_vec(v, i);
        char id[16];
        snprintf(id, sizeof(id), "g%d", i);
        struct store_record r = {.id = (const uint8_t *)id,
                                 .id_len = (uint32_t)strlen(id),
                                 .ts = 10,
                                 .window = 0,
                                 .window_end = 3600000,
                                 .op = STORE_OP_UPSERT,
                                 .vec = v};
        struct store_batch b = {.partition = i % 2, .offset = i / 2, .recs = &r, .n = 1};
        ck_assert_int_eq(store_write(s, &b, NULL), ST_OK);
        st_test_sleep_ms(2); /* a message every 2 ms: the old syncer fsynced after each */
    }
    int64_t burst_ms = st_test_now_ms() - t0;
    /* Both partitions become durable through the syncer alone. */
    int64_t d0 = -1, d1 = -1;
    ck_assert(ST_WAIT_UNTIL(store_durable_offset(s, 0, &d0) == ST_OK &&
                                store_durable_offset(s, 1, &d1) == ST_OK && d0 == n / 2 - 1 &&
                                d1 == n / 2 - 1,
                            10000));
    store_stats(s, &st1);
    uint64_t syncs = st1.wal_syncs - st0.wal_syncs;
    /* One fsync per started interval of the burst, and one for its tail. */
    ck_assert_msg(syncs >= 1 && syncs <= (uint64_t)(burst_ms / 300 + 2),
                  "%llu fsyncs for %d writes in %lld ms", (unsigned long long)syncs, n,
                  (long long)burst_ms);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A write burst of more unsynced bytes than the group-commit threshold (8 MiB) is synced
 * without waiting out a long interval. */
START_TEST(test_group_commit_by_bytes)
{
    enum { BDIM = 1024, PER = 256 };
    char *dir = st_test_tmpdir("gcbytes");
    struct store_opts o = {.dir = dir,
                           .dim = BDIM,
                           .wal_sync = STORE_SYNC_BATCH,
                           .wal_sync_interval_ms = 600000,
                           .memtable_size = 256u << 20};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s", err.msg);
    float *v = calloc((size_t)PER * BDIM, sizeof(float));
    struct store_record *r = calloc(PER, sizeof(*r));
    char(*ids)[16] = calloc(PER, sizeof(*ids));
    ck_assert(v != NULL && r != NULL && ids != NULL);
    /* 10 batches of 1 MiB of vectors: past 8 MiB unsynced. */
    for (int b = 0; b < 10; b++) {
        for (int i = 0; i < PER; i++) {
            snprintf(ids[i], sizeof(ids[i]), "b%d-%d", b, i);
            v[(size_t)i * BDIM] = (float)(b * PER + i + 1);
            r[i] = (struct store_record){.id = (const uint8_t *)ids[i],
                                         .id_len = (uint32_t)strlen(ids[i]),
                                         .ts = 10,
                                         .window = 0,
                                         .window_end = 3600000,
                                         .op = STORE_OP_UPSERT,
                                         .vec = v + (size_t)i * BDIM};
        }
        struct store_batch batch = {.partition = 0, .offset = b, .recs = r, .n = PER};
        ck_assert_int_eq(store_write(s, &batch, NULL), ST_OK);
    }
    int64_t d = -1;
    ck_assert_msg(ST_WAIT_UNTIL(store_durable_offset(s, 0, &d) == ST_OK && d >= 7, 30000),
                  "durable mark %lld: the byte threshold did not trigger an fsync", (long long)d);
    free(v);
    free(r);
    free(ids);
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- direct appends (store_fs_direct) ---------------------------------------------------------
 */

/* A directory of the test's on a disk's file system, which takes O_DIRECT. */
static char *direct_dir(void)
{
    char *dir = st_test_disk_tmpdir("direct");
    char probe[600];
    snprintf(probe, sizeof(probe), "%s/probe", dir);
    int fd = open(probe, O_WRONLY | O_CREAT | O_DIRECT, 0644);
    ck_assert_msg(fd >= 0, "%s does not take O_DIRECT: %s", dir, strerror(errno));
    close(fd);
    unlink(probe);
    return dir;
}

/* What the direct twin's appends pass as store_fs_append (NULL: store_fs_writev), and the
 * bytes its seen function was shown, in order. */
static const struct store_fs_append *twin_how;
static uint8_t *seen_buf;
static size_t seen_len, seen_cap;

static void seen_keep(void *arg, const void *p, size_t len)
{
    ck_assert_ptr_eq(arg, &seen_len);
    ck_assert_uint_le(len, 1u << 20);
    if (seen_len + len > seen_cap) {
        seen_cap = (seen_len + len) * 2;
        seen_buf = realloc(seen_buf, seen_cap);
        ck_assert_ptr_nonnull(seen_buf);
    }
    memcpy(seen_buf + seen_len, p, len);
    seen_len += len;
}

/* Appends the same bytes to a plain file and to a direct one, as 1-3 pieces each. With a seen
 * function, it must have been shown exactly the bytes appended (those of a successful
 * append). */
static void twin_append(struct store_file *a, struct store_file *b, const uint8_t *src, size_t len,
                        int pieces, int want_rc)
{
    struct iovec v[3];
    size_t at = 0;
    ck_assert_int_le(pieces, 3);
    for (int i = 0; i < pieces; i++) {
        size_t l = i == pieces - 1 ? len - at : len / (size_t)pieces;
        v[i] = (struct iovec){(void *)(uintptr_t)(src + at), l};
        at += l;
    }
    ck_assert_int_eq(store_fs_writev(a, v, pieces, "t.plain"), want_rc);
    seen_len = 0;
    ck_assert_int_eq(store_fs_writev_how(b, v, pieces, twin_how, "t.direct"), want_rc);
    if (twin_how != NULL && twin_how->seen != NULL && want_rc == ST_OK) {
        ck_assert_uint_eq(seen_len, len);
        ck_assert_msg(memcmp(seen_buf, src, len) == 0, "seen bytes differ from those appended");
    }
}

/* The direct file's size, on disk and in f->size, and every byte equal to the plain twin's. */
static void twin_same(const struct store_file *a, const struct store_file *b)
{
    ck_assert_uint_eq(b->size, a->size);
    struct stat st;
    ck_assert_int_eq(fstat(b->fd, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, b->size); /* never padded past the bytes */
    uint8_t *x, *y;
    size_t lx, ly;
    ck_assert_int_eq(store_fs_read_all(a->path, &x, &lx, SIZE_MAX), ST_OK);
    ck_assert_int_eq(store_fs_read_all(b->path, &y, &ly, SIZE_MAX), ST_OK);
    ck_assert_uint_eq(lx, ly);
    ck_assert_msg(memcmp(x, y, lx) == 0, "direct file differs from the plain one");
    free(x);
    free(y);
}

/* Creates dir/plain (*a) and dir/direct (*b), both empty; *pb gets the direct one's path. */
static void twin_open(const char *dir, struct store_file **a, struct store_file **b, char *pb,
                      size_t pbcap)
{
    char pa[700];
    snprintf(pa, sizeof(pa), "%s/plain", dir);
    snprintf(pb, pbcap, "%s/direct", dir);
    ck_assert_int_eq(store_fs_create(NULL, pa, a, "t.open"), ST_OK);
    ck_assert_int_eq(store_fs_create(NULL, pb, b, "t.open"), ST_OK);
}

/* len pseudo-random bytes (xorshift from seed), malloc'd. */
static uint8_t *random_bytes(size_t len, uint64_t x)
{
    uint8_t *src = malloc(len);
    ck_assert_ptr_nonnull(src);
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = (uint8_t)x;
    }
    return src;
}

/* Appends of every shape around the 4 KiB alignment and the 1 MiB stage, a truncate, a short
 * write and a reopen: the direct file always holds exactly the bytes the plain one does. Mode
 * 0: the thread's one stage; 1: two stages and an I/O thread, with a seen function shown
 * exactly the bytes of each append; 2: the I/O thread without one. */
START_TEST(test_direct_appends_match_plain)
{
    for (int mode = 0; mode < 3; mode++) {
        struct store_fs_io *io = NULL;
        if (mode > 0)
            ck_assert_int_eq(store_fs_io_new(&io), ST_OK);
        struct store_fs_append how = {
            .io = io, .seen = mode == 1 ? seen_keep : NULL, .seen_arg = &seen_len};
        twin_how = mode > 0 ? &how : NULL;
        char *dir = direct_dir();
        ck_assert_msg(dir != NULL,
                      "no directory here takes O_DIRECT (TMPDIR, /tmp, the build tree)");
        char pb[700];
        struct store_file *a, *b;
        twin_open(dir, &a, &b, pb, sizeof(pb));
        size_t max = (3u << 20) + 4099;
        uint8_t *src = random_bytes(max, 88172645463325252ull);
        twin_append(a, b, src, 64, 1, ST_OK); /* a header, written before direct appends begin */
        ck_assert(store_fs_direct(b));
        ck_assert(store_fs_is_direct(b));
        const size_t sizes[] = {1,    4095,       4096, 4097,           3072 * 100, 0,    8191,
                                8192, (1u << 20), 3,    (1u << 20) + 3, max,        5000, 12288};
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            twin_append(a, b, src + (k * 977) % 4096, sizes[k] > max - 4096 ? max - 4096 : sizes[k],
                        1 + (int)(k % 3), ST_OK);
            twin_same(a, b);
            ck_assert(store_fs_is_direct(b));
        }
        /* A cut to an unaligned size, then appends after it. */
        uint64_t cut = a->size - 5000 - 17;
        ck_assert_int_eq(store_fs_truncate(a, cut, "t.cut"), ST_OK);
        ck_assert_int_eq(store_fs_truncate(b, cut, "t.cut"), ST_OK);
        twin_same(a, b);
        twin_append(a, b, src + 11, 70000, 2, ST_OK);
        twin_same(a, b);
        ck_assert(store_fs_is_direct(b));
        /* A short write (a full disk): the first half of the bytes lands, and appends go on. */
        ck_assert_int_eq(st_fault_arm("t.plain", 0, 1, ST_ENOSPC), ST_OK);
        ck_assert_int_eq(st_fault_arm("t.direct", 0, 1, ST_ENOSPC), ST_OK);
        twin_append(a, b, src + 5, 300001, 3, ST_ENOSPC);
        st_fault_disarm_all();
        twin_same(a, b);
        /* The same on the direct path (half of it still over the direct threshold). */
        ck_assert_int_eq(st_fault_arm("t.plain", 0, 1, ST_ENOSPC), ST_OK);
        ck_assert_int_eq(st_fault_arm("t.direct", 0, 1, ST_ENOSPC), ST_OK);
        twin_append(a, b, src + 6, 700001, 2, ST_ENOSPC);
        st_fault_disarm_all();
        twin_same(a, b);
        ck_assert(store_fs_is_direct(b));
        twin_append(a, b, src + 7, 9000, 1, ST_OK);
        twin_same(a, b);
        /* An append whose thread has no stage goes through the page cache; the next large one
         * starts from the right block again. */
        ck_assert_int_eq(st_fault_arm("store.fs.stage", 0, 1, ST_ENOMEM), ST_OK);
        twin_append(a, b, src + 9, (1u << 20) + 4001, 2, ST_OK);
        ck_assert_uint_eq(st_fault_fired("store.fs.stage"), 1);
        st_fault_disarm_all();
        twin_same(a, b);
        twin_append(a, b, src + 21, (2u << 20) + 333, 3, ST_OK);
        twin_same(a, b);
        ck_assert(store_fs_is_direct(b));
        /* Reopened at an unaligned size: the last partial block is read back and completed. */
        ck_assert_uint_ne(b->size % 4096, 0);
        store_fs_close(b);
        ck_assert_int_eq(store_fs_open_append(NULL, pb, &b, "t.open"), ST_OK);
        ck_assert(store_fs_direct(b));
        twin_append(a, b, src + 3, (1u << 20) + 12345, 2, ST_OK);
        twin_same(a, b);
        ck_assert_int_eq(store_fs_sync(b, "t.sync"), ST_OK);
        store_fs_close(a);
        store_fs_close(b);
        free(src);
        st_test_rmrf(dir);
        free(dir);
        store_fs_io_free(io);
        twin_how = NULL;
    }
    free(seen_buf);
    seen_buf = NULL;
    seen_len = seen_cap = 0;
}
END_TEST

/* A power loss takes direct appends made after the last fsync and keeps the ones before. */
START_TEST(test_direct_appends_power_loss)
{
    char *dir = direct_dir();
    ck_assert_msg(dir != NULL, "no directory here takes O_DIRECT (TMPDIR, /tmp, the build tree)");
    char p[700];
    snprintf(p, sizeof(p), "%s/log", dir);
    struct store_fs *fs = store_fs_sim_new();
    struct store_file *f;
    ck_assert_int_eq(store_fs_create(fs, p, &f, "t.open"), ST_OK);
    ck_assert_int_eq(store_fs_sync_dir(fs, dir, "t.dir"), ST_OK);
    ck_assert(store_fs_direct(f));
    uint8_t buf[10000];
    memset(buf, 0xab, sizeof(buf));
    ck_assert_int_eq(store_fs_write(f, buf, 6000, "t.w"), ST_OK);
    ck_assert_int_eq(store_fs_sync(f, "t.sync"), ST_OK);
    memset(buf, 0xcd, sizeof(buf));
    ck_assert_int_eq(store_fs_write(f, buf, 10000, "t.w"), ST_OK);
    store_fs_sim_crash(fs);
    ck_assert_int_eq(store_fs_write(f, buf, 10, "t.w"), ST_EIO); /* the machine is off */
    store_fs_close(f);
    uint8_t *got;
    size_t len;
    ck_assert_int_eq(store_fs_read_all(p, &got, &len, SIZE_MAX), ST_OK);
    ck_assert_uint_eq(len, 6000);
    for (size_t i = 0; i < len; i++)
        ck_assert_uint_eq(got[i], 0xab);
    free(got);
    store_fs_free(fs);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* The device refuses a direct write partway through an append (ST_EINVAL at site
 * store.fs.dio: an alignment it does not take), or fails it (ST_EIO), at the first, second or
 * third of its 1 MiB stages, with the thread's stage and with the I/O thread's two. Refused:
 * the append completes through the page cache and the file holds every byte; later appends go
 * the plain way. Failed: the append fails, and the file's size counts exactly the stages
 * written before the failing one (never a byte that is not there), every one of them intact.
 * Also at the aligned part of an append's last, partial stage (the fourth write). */
START_TEST(test_direct_device_refuses_or_fails)
{
    /* skip 0-2: a stage's write; 3: the aligned part (8 KiB) of the append's last one */
    const size_t lens[4] = {(3u << 20) + 777, (3u << 20) + 777, (3u << 20) + 777,
                            (3u << 20) + 9000};
    uint8_t *src = random_bytes(lens[3], 2463534242ull);
    for (int mode = 0; mode < 2; mode++) {
        for (int refuse = 0; refuse < 2; refuse++) {
            for (uint32_t skip = 0; skip < 4; skip++) {
                size_t len = lens[skip];
                struct store_fs_io *io = NULL;
                if (mode == 1)
                    ck_assert_int_eq(store_fs_io_new(&io), ST_OK);
                struct store_fs_append how = {.io = io};
                twin_how = &how;
                char *dir = direct_dir();
                char pb[700];
                struct store_file *a, *b;
                twin_open(dir, &a, &b, pb, sizeof(pb));
                twin_append(a, b, src, 64, 1, ST_OK);
                ck_assert(store_fs_direct(b));
                ck_assert_int_eq(st_fault_arm("store.fs.dio", skip, 1, refuse ? ST_EINVAL : ST_EIO),
                                 ST_OK);
                if (refuse) {
                    twin_append(a, b, src + 64, len - 64, 1 + (int)(skip % 3), ST_OK);
                } else {
                    struct iovec v[2] = {{src + 64, 100000}, {src + 100064, len - 100064}};
                    ck_assert_int_eq(store_fs_writev_how(b, v, 2, &how, "t.direct"), ST_EIO);
                }
                ck_assert_uint_eq(st_fault_fired("store.fs.dio"), 1);
                st_fault_disarm_all();
                ck_assert(!store_fs_is_direct(b));
                if (refuse) {
                    twin_same(a, b);
                    twin_append(a, b, src + 5, 600000, 2, ST_OK); /* the plain way now */
                    twin_same(a, b);
                } else {
                    uint64_t want = skip == 0 ? 64 : (uint64_t)skip << 20;
                    ck_assert_uint_eq(b->size, want);
                    uint8_t *y;
                    size_t ly;
                    ck_assert_int_eq(store_fs_read_all(pb, &y, &ly, SIZE_MAX), ST_OK);
                    ck_assert_uint_ge(ly, want);
                    ck_assert_msg(memcmp(y, src, (size_t)want) == 0,
                                  "mode %d skip %u: a counted byte differs", mode, skip);
                    free(y);
                }
                store_fs_close(a);
                store_fs_close(b);
                st_test_rmrf(dir);
                free(dir);
                store_fs_io_free(io);
                twin_how = NULL;
            }
        }
    }
    free(src);
}
END_TEST

/* Where O_DIRECT is refused (an open that fails: site store.fs.direct), or pointless (tmpfs,
 * which takes it since Linux 6.6 but has no cache to bypass), store_fs_direct says so and
 * appends go on through the page cache. */
START_TEST(test_direct_refused_falls_back)
{
    char *disk = direct_dir();
    struct stat st;
    const char *shm = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : NULL;
    for (int k = 0; k < 2; k++) {
        char dir[600];
        if (k == 0) {
            snprintf(dir, sizeof(dir), "%s", disk);
        } else {
            ck_assert_msg(shm != NULL, "no /dev/shm (tmpfs) here");
            snprintf(dir, sizeof(dir), "%s/strata-direct-XXXXXX", shm);
            ck_assert_ptr_nonnull(mkdtemp(dir));
        }
        char p[700];
        snprintf(p, sizeof(p), "%s/log", dir);
        struct store_file *f;
        ck_assert_int_eq(store_fs_create(NULL, p, &f, "t.open"), ST_OK);
        if (k == 0)
            ck_assert_int_eq(st_fault_arm("store.fs.direct", 0, 1, ST_EIO), ST_OK);
        ck_assert(!store_fs_direct(f));
        ck_assert(!store_fs_is_direct(f));
        st_fault_disarm_all();
        uint8_t *buf = calloc(1, 300000);
        buf[0] = 1;
        ck_assert_int_eq(store_fs_write(f, buf, 300000, "t.w"), ST_OK);
        ck_assert_int_eq(store_fs_write(f, buf, 7, "t.w"), ST_OK);
        ck_assert_uint_eq(f->size, 300007);
        ck_assert_int_eq(fstat(f->fd, &st), 0);
        ck_assert_uint_eq((uint64_t)st.st_size, 300007);
        free(buf);
        store_fs_close(f);
        if (k == 1)
            st_test_rmrf(dir);
    }
    st_test_rmrf(disk);
    free(disk);
}
END_TEST

/* ---- seals without reading the rows back ---------------------------------------------------- */

#define SS_DIM  100 /* 400-byte rows: 655.36 to a 256 KiB block, so rows straddle blocks */
#define SS_ROWS 5000
#define SS_FULL 16384 /* rows of exactly 25 blocks: no partial last block */

static struct store *ss_open(const char *dir, enum store_wal_sync sync, bool background)
{
    struct store_opts o = {
        .dir = dir, .dim = SS_DIM, .wal_sync = sync, .no_background = !background};
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "store_open(%s): %s", dir, err.msg);
    return s;
}

static void ss_vec(float *v, int k)
{
    for (int j = 0; j < SS_DIM; j++)
        v[j] = (float)(k * 7 + j) * 0.25f;
}

/* Records k in [from, to) of window [1000, 2000), per to a batch (at most 6000). */
static void ss_write(struct store *s, int from, int to, int per)
{
    static float vecs[6000][SS_DIM];
    static char ids[6000][16];
    static struct store_record r[6000];
    ck_assert_int_le(per, 6000);
    for (int k0 = from; k0 < to; k0 += per) {
        int n = to - k0 < per ? to - k0 : per;
        for (int i = 0; i < n; i++) {
            snprintf(ids[i], sizeof(ids[i]), "ss-%d", k0 + i);
            ss_vec(vecs[i], k0 + i);
            r[i] = (struct store_record){.id = (const uint8_t *)ids[i],
                                         .id_len = (uint32_t)strlen(ids[i]),
                                         .ts = 1000 + (k0 + i) % 1000,
                                         .window = 1000,
                                         .window_end = 2000,
                                         .op = STORE_OP_UPSERT,
                                         .vec = vecs[i]};
        }
        struct store_batch b = {.partition = 0, .offset = k0, .n = (uint32_t)n, .recs = r};
        bool applied;
        int rc;
        while ((rc = store_write(s, &b, &applied)) == ST_EAGAIN)
            ck_assert_int_eq(store_flush(s), ST_OK);
        ck_assert_msg(rc == ST_OK && applied, "write at %d: %s", k0, st_strerror(rc));
    }
}

/* A seal takes the checksums of its vector log's whole row blocks from the rows as they were
 * appended instead of reading every row back from the disk (which doubled the device's work
 * of an ingest that seals as it goes): appended by the write itself (wal_sync none) and by the
 * writer thread (batch), the sealed segment verifies and only the partial last block was read
 * (mode 3: rows filling whole blocks, nothing read). A log reopened by a restart (mode 2), or
 * whose summing stopped partway (mode 4: the fault site), holds rows nobody summed: its seal
 * reads them all, and verifies. Modes 5-7: the store's vector-log writer thread appends
 * batches of 2.4 MB with O_DIRECT, summing the rows as it copies them into its stages: with
 * its I/O thread writing the whole stages (5, checked by the thread that runs each direct
 * write), without one (6: site store.fs.io; every direct write on the writer thread), and
 * with the device refusing the second direct write, which is the first append's second stage,
 * on the I/O thread (7: site store.fs.dio; the rest through the page cache): the sums are
 * whole. */
static _Atomic int dio_writes, dio_on_io;

static void dio_count(void *ctx)
{
    (void)ctx;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof(name));
    atomic_fetch_add(&dio_writes, 1);
    if (strcmp(name, "st-dio") == 0)
        atomic_fetch_add(&dio_on_io, 1);
}

START_TEST(test_seal_sums_from_appends)
{
    for (int mode = 0; mode < 8; mode++) {
        bool background = mode >= 5;
        int rows = mode == 3 || background ? SS_FULL : SS_ROWS;
        const uint64_t vbytes = (uint64_t)rows * SS_DIM * 4;
        bool reads_all = mode == 2 || mode == 4;
        int per = background ? 6000 : 97;
        atomic_store(&dio_writes, 0);
        atomic_store(&dio_on_io, 0);
        if (mode == 5 || mode == 6)
            ck_assert_int_eq(st_fault_hook("store.fs.dio", dio_count, NULL), ST_OK);
        char *dir = direct_dir();
        ck_assert_ptr_nonnull(dir);
        enum store_wal_sync sync = mode == 0 ? STORE_SYNC_NONE : STORE_SYNC_BATCH;
        if (mode == 6)
            ck_assert_int_eq(st_fault_arm("store.fs.io", 0, 1, ST_ENOMEM), ST_OK);
        if (mode == 7)
            ck_assert_int_eq(st_fault_arm("store.fs.dio", 1, 1, ST_EINVAL), ST_OK);
        struct store *s = ss_open(dir, sync, background);
        if (mode == 2) { /* a restart halfway: the first half's rows are not summed */
            ss_write(s, 0, SS_ROWS / 2, per);
            ck_assert_int_eq(store_close(s), ST_OK);
            s = ss_open(dir, sync, background);
            ss_write(s, SS_ROWS / 2, SS_ROWS, per);
        } else {
            if (mode == 4) /* the sums stop at the third append */
                ck_assert_int_eq(st_fault_arm("store.vlog.sums", 2, 1, ST_ENOMEM), ST_OK);
            ss_write(s, 0, rows, per);
            if (background) {
                ck_assert_int_eq(store_sync(s), ST_OK); /* every row appended */
                pthread_mutex_lock(&s->mu);
                ck_assert_uint_eq(s->nvlogs, 1);
                ck_assert_int_eq(store_fs_is_direct(s->vlogs[0]->f), mode != 7);
                pthread_mutex_unlock(&s->mu);
            }
            if (mode == 4 || mode == 6 || mode == 7) {
                const char *site = mode == 4   ? "store.vlog.sums"
                                   : mode == 6 ? "store.fs.io"
                                               : "store.fs.dio";
                ck_assert_uint_eq(st_fault_fired(site), 1);
            }
            st_fault_disarm_all();
            if (mode == 5)
                ck_assert_int_gt(atomic_load(&dio_on_io), 0);
            if (mode == 6) {
                ck_assert_int_gt(atomic_load(&dio_writes), 0);
                ck_assert_int_eq(atomic_load(&dio_on_io), 0);
            }
        }
        ck_assert_int_eq(store_flush(s), ST_OK);
        size_t n;
        uint64_t *in = window_segs(s, 1000, &n, NULL);
        ck_assert_uint_ge(n, 1);
        struct store_segment_info out;
        ck_assert_int_eq(store_merge(s, in, n, STORE_SEG_SEALED, 1, NULL, &out), ST_OK);
        free(in);
        struct store_stats ss;
        store_stats(s, &ss);
        ck_assert_msg(ss.seal_read_bytes == (reads_all ? vbytes : vbytes % STORE_SEG_VEC_BLOCK),
                      "mode %d: %" PRIu64 " bytes read back at the seal", mode, ss.seal_read_bytes);
        struct store_snapshot *snap;
        struct store_segment_info info;
        struct store_segment *g = only_segment(s, &snap, &info);
        ck_assert_int_eq(info.kind, STORE_SEG_SEALED);
        ck_assert_uint_eq(info.count, (uint64_t)rows);
        struct st_err err = {0};
        ck_assert_msg(store_segment_verify(g, &err) == ST_OK, "mode %d: %s", mode, err.msg);
        store_snapshot_release(snap);
        for (int k = 0; k < rows; k += 499) {
            char id[16];
            float v[SS_DIM], want[SS_DIM];
            snprintf(id, sizeof(id), "ss-%d", k);
            struct store_value val = {.vec = v};
            ck_assert_int_eq(store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &val), ST_OK);
            ss_vec(want, k);
            ck_assert_mem_eq(v, want, sizeof(v));
        }
        ck_assert_int_eq(store_close(s), ST_OK);
        st_test_rmrf(dir);
        free(dir);
    }
}
END_TEST

int main(void)
{
    st_log_set_level(ST_LOG_WARNING);
    Suite *su = suite_create("store");
    TCase *tc = tcase_create("log");
    tcase_add_checked_fixture(tc, reset_layout, NULL);
    tcase_set_timeout(tc, 300); /* torn tail at every byte: slow under ASan on a loaded machine */
    tcase_add_test(tc, test_log_roundtrip);
    tcase_add_test(tc, test_log_torn_tail_every_byte);
    tcase_add_test(tc, test_log_corruption_before_tail);
    suite_add_tcase(su, tc);
    tc = tcase_create("store");
    tcase_add_checked_fixture(tc, reset_layout, NULL);
    tcase_set_timeout(tc, 300); /* cut-every-byte reopens a store per byte: slow under ASan */
    tcase_add_test(tc, test_roundtrip_flush_reopen);
    tcase_add_test(tc, test_upsert_delete_across_sources);
    tcase_add_test(tc, test_replay_idempotent);
    tcase_add_test(tc, test_wal_cut_every_byte);
    tcase_add_test(tc, test_corruption_reported);
    tcase_add_test(tc, test_power_loss_keeps_durable);
    tcase_add_test(tc, test_reader_blocks_removal);
    tcase_add_test(tc, test_backpressure);
    tcase_add_test(tc, test_fault_points);
    tcase_add_test(tc, test_inspect_torn_older_wal);
    tcase_add_test(tc, test_inspect);
    tcase_add_test(tc, test_inspect_layouts);
    tcase_add_test(tc, test_next_file_never_regresses);
    tcase_add_test(tc, test_wal_decode_count_bound);
    tcase_add_test(tc, test_promotion_survives_reopen);
    tcase_add_test(tc, test_flush_alloc_failure_keeps_listed_files);
    tcase_add_test(tc, test_store_dir_parent_fsynced);
    tcase_add_test(tc, test_wal_bytes_golden);
    tcase_add_test(tc, test_group_commit_by_time);
    tcase_add_test(tc, test_group_commit_by_bytes);
    suite_add_tcase(su, tc);
    tc = tcase_create("merge");
    tcase_add_checked_fixture(tc, reset_layout, NULL);
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_merge_streaming_matches_oracle, 0, 3);
    tcase_add_test(tc, test_merge_larger_than_memory_bound);
    tcase_add_test(tc, test_writes_proceed_during_merge);
    tcase_add_test(tc, test_drop_during_merge);
    tcase_add_test(tc, test_flush_io_does_not_hold_manifest_lock);
    tcase_add_test(tc, test_wal_roll_fsync_does_not_block_readers);
    tcase_add_test(tc, test_wal_torn_before_empty_newer_file);
    tcase_add_test(tc, test_manifest_compacts_online);
    tcase_add_test(tc, test_crash_during_manifest_compaction);
    tcase_add_test(tc, test_promotion_races_no_reader);
    tcase_add_loop_test(tc, test_crash_during_merge, 0, 2);
    tcase_add_loop_test(tc, test_crash_during_promotion, 0, 2);
    suite_add_tcase(su, tc);
    tc = tcase_create("memtable");
    tcase_add_checked_fixture(tc, reset_layout, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_memtable_counts_real_bytes);
    tcase_add_test(tc, test_scan_does_not_block_writers);
    tcase_add_test(tc, test_scan_concurrent_with_writers);
    suite_add_tcase(su, tc);
    tc = tcase_create("direct");
    tcase_add_checked_fixture(tc, reset_layout, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_direct_appends_match_plain);
    tcase_add_test(tc, test_direct_appends_power_loss);
    tcase_add_test(tc, test_direct_refused_falls_back);
    tcase_add_test(tc, test_direct_device_refuses_or_fails);
    tcase_add_test(tc, test_seal_sums_from_appends);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
