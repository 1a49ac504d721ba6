/*
 * DESIGN.md §8 case 15 (issue 16): an error at every I/O site of the store.
 *
 * A representative workload (group-committed writes, WAL rolls, flushes of runs, a manifest
 * compaction, kv puts, a seal merge of one window, a drop of another, a power cut, reopen with
 * recovery of a torn WAL tail, more writes, a compaction merge) runs once recording every fault
 * site it passes. Then, for each site, each error (EIO; ENOSPC, which at a write site is also a
 * short write: store_fs writes half the bytes) and each skip (0, 1), the site fails from that pass
 * on (a disk that stays broken) while the workload runs to its end. Every call must return (no
 * crash, no hang: the tcase timeout) and a fault that fired must surface as an error of some call,
 * unless the site is a cleanup unlink (documented as best effort). Then the power is cut (simulated
 * file system: only what was fsynced survives), the fault cleared and the store reopened: every
 * batch whose write returned ST_OK (wal_sync batch without a syncer thread: the write's own group
 * commit fsync returned ST_OK), every offset store_durable_offset reported and every acknowledged
 * kv is there, with the values written; nothing that was never written is; a window whose drop
 * returned ST_OK stays dropped. Finally the whole workload runs again on top (replays are
 * no-ops) and must succeed at every step, leaving everything in place.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_fault.h"
#include "st_log.h"
#include "st_test.h"
#include "store.h"

#define DIM   4
#define P1_N  36 /* batches of the first session */
#define ALL_N 48 /* and of the second */
#define WIN   1000
#define WA    0    /* window A: written throughout */
#define WB    1000 /* window B: sealed by a merge */
#define WC    2000 /* window C: dropped */
#define NKV   (ALL_N / 8)

static int64_t window_of(int k)
{
    if (k >= P1_N) /* after the seal and the drop: A and (late data) B only */
        return k % 2 ? WB : WA;
    return (k % 3) * WIN;
}

/* What one run saw. */
struct fw_out {
    bool acked[ALL_N];
    bool kv_acked[NKV];
    int64_t durable;  /* highest offset store_durable_offset reported, -1 */
    bool gone[ALL_N]; /* acknowledged before a drop of its window that returned ST_OK */
    int next;         /* the first batch not acknowledged: where a consumer resumes */
    int errors;       /* calls that returned an error */
    int first_err;
    const char *first_step;
};

static void fw_note(struct fw_out *r, int rc, const char *step)
{
    if (rc == ST_OK)
        return;
    if (r->errors++ == 0) {
        r->first_err = rc;
        r->first_step = step;
    }
}

/* Batch BIG_K's meta is STORE_META_MAX incompressible bytes: its segments spill their meta
 * sections to side files. Others: "meta-<k>". */
#define BIG_K 4
static uint8_t big_meta[STORE_META_MAX];

static uint32_t fw_meta(int k, uint8_t *out)
{
    if (k == BIG_K) {
        memcpy(out, big_meta, sizeof(big_meta));
        return sizeof(big_meta);
    }
    return (uint32_t)sprintf((char *)out, "meta-%d", k);
}

static int fw_put(struct store *s, int k)
{
    char id[32];
    static uint8_t meta[STORE_META_MAX];
    snprintf(id, sizeof(id), "id-%d", k);
    uint32_t meta_len = fw_meta(k, meta);
    float v[DIM] = {(float)k, 1, 2, 3};
    int64_t w = window_of(k);
    struct store_record r = {.id = (const uint8_t *)id,
                             .id_len = (uint32_t)strlen(id),
                             .ts = w + 10 + k,
                             .window = w,
                             .window_end = w + WIN,
                             .op = STORE_OP_UPSERT,
                             .vec = v,
                             .meta = meta,
                             .meta_len = meta_len};
    struct store_batch b = {.partition = 0, .offset = k, .n = 1, .recs = &r};
    int rc = store_write(s, &b, NULL);
    if (rc == ST_EAGAIN) { /* no background flusher: flush here and retry once */
        int frc = store_flush(s);
        if (frc != ST_OK)
            return frc;
        rc = store_write(s, &b, NULL);
    }
    return rc;
}

/* Writes batches from..to-1 in order and stops at the first that fails, as the consumer does
 * (nothing after a batch that was not written is committed; it resumes from there). */
static void fw_writes(struct store *s, int from, int to, struct fw_out *r)
{
    for (int k = from; k < to; k++) {
        int rc = fw_put(s, k);
        fw_note(r, rc, "write");
        if (rc != ST_OK)
            return;
        r->acked[k] = true;
        r->next = k + 1;
        int64_t d;
        if (store_durable_offset(s, 0, &d) == ST_OK && d > r->durable)
            r->durable = d;
        if (k % 8 == 7) {
            char key[32];
            snprintf(key, sizeof(key), "kv-%d", k / 8);
            rc = store_kv_put(s, key, &k, sizeof(k));
            fw_note(r, rc, "kv_put");
            if (rc == ST_OK)
                r->kv_acked[k / 8] = true;
        }
    }
}

/* The file numbers (up to 64) of window start's segments (its runs only, if runs_only). */
static int fw_inputs(struct store *s, int64_t start, bool runs_only, uint64_t in[64], size_t *n)
{
    struct store_snapshot *snap;
    int rc = store_snapshot_acquire(s, &snap);
    if (rc != ST_OK)
        return rc;
    *n = 0;
    for (size_t i = 0; i < store_snapshot_count(snap) && *n < 64; i++) {
        struct store_segment_info si;
        store_segment_info(store_snapshot_segment(snap, i), &si);
        if (si.window_start == start && (!runs_only || si.kind == STORE_SEG_RUN))
            in[(*n)++] = si.file_number;
    }
    store_snapshot_release(snap);
    return ST_OK;
}

/* Seals window B: every segment of it merged into one SEALED segment. */
static int fw_seal(struct store *s, uint32_t version)
{
    store_window_close_log(s, WB);
    int rc = store_flush(s);
    for (int attempt = 0; rc == ST_OK && attempt < 2; attempt++) {
        uint64_t in[64];
        size_t n = 0;
        if ((rc = fw_inputs(s, WB, false, in, &n)) != ST_OK || n == 0)
            return rc;
        struct store_window w = {.start = WB, .end = WB + WIN, .state = 1, .version = version};
        struct store_edit_extra ex = {.windows = &w, .nwindows = 1};
        rc = store_merge(s, in, n, STORE_SEG_SEALED, version, &ex, NULL);
        if (rc != ST_EAGAIN)
            return rc;
        rc = store_flush(s);
    }
    return rc;
}

/* Compacts window A's runs into one run (a merge that writes a new file). */
static int fw_compact(struct store *s)
{
    uint64_t in[64];
    size_t n = 0;
    int rc = fw_inputs(s, WA, true, in, &n);
    if (rc != ST_OK)
        return rc;
    return n < 2 ? ST_OK : store_merge(s, in, n, STORE_SEG_RUN, 0, NULL, NULL);
}

static int fw_drop(struct store *s)
{
    struct store_window w = {.start = WC, .end = WC + WIN, .state = STORE_WINDOW_REMOVE};
    struct store_edit_extra ex = {.windows = &w, .nwindows = 1};
    size_t removed;
    return store_drop_window(s, WC, &ex, &removed);
}

static struct store_opts fw_opts(const char *dir, struct store_fs *fs)
{
    return (struct store_opts){.dir = dir,
                               .dim = DIM,
                               .wal_sync = STORE_SYNC_BATCH, /* no syncer: each write commits */
                               .no_background = true,
                               .memtable_size = 2048, /* a roll and a flush every few batches */
                               .max_frozen = 2,
                               .manifest_max_bytes = 1024, /* compactions */
                               .fs = fs};
}

/* A torn WAL tail, as a write cut by the power loss leaves: junk after the last record of the
 * newest WAL file. Recovery truncates it (store.wal.truncate). */
static void fw_tear(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    unsigned long best = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        unsigned long n;
        char ext[8];
        if (sscanf(de->d_name, "%lu.%7s", &n, ext) == 2 && strcmp(ext, "log") == 0 && n > best)
            best = n;
    }
    closedir(d);
    if (best == 0)
        return;
    char path[600];
    snprintf(path, sizeof(path), "%s/%06lu.log", dir, best);
    FILE *f = fopen(path, "ab");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite("\x17torn\xff\x01", 1, 7, f), 7);
    ck_assert_int_eq(fclose(f), 0);
}

/* The workload: two sessions (the second reopens: recovery). Every call's error is noted;
 * nothing stops early except a session whose open failed. */
static void fw_run(const char *dir, struct store_fs *fs, struct fw_out *r, bool cut_power)
{
    struct store_opts o = fw_opts(dir, fs);
    for (int session = 0; session < 2; session++) {
        struct store *s = NULL;
        int rc = store_open(&o, &s, NULL);
        fw_note(r, rc, "open");
        if (rc != ST_OK)
            continue;
        if (session == 0) {
            fw_writes(s, 0, P1_N, r);
            fw_note(r, store_flush(s), "flush");
            fw_note(r, fw_seal(s, 1), "seal");
            rc = fw_drop(s);
            fw_note(r, rc, "drop");
            for (int k = 0; k < ALL_N && rc == ST_OK; k++)
                r->gone[k] = r->acked[k] && window_of(k) == WC;
        } else {
            fw_writes(s, r->next, ALL_N, r);
            fw_note(r, store_flush(s), "flush");
            fw_note(r, fw_compact(s), "compact");
            fw_note(r, fw_seal(s, 2), "seal");
        }
        /* The first session ends in a power loss (the second opens by recovery: WAL replay,
         * a torn tail, orphans); so does the second when cut_power (what the check sees). */
        bool cut = session == 0 || cut_power;
        if (cut)
            store_fs_sim_crash(fs);
        rc = store_close(s);
        if (cut)
            store_fs_sim_revive(fs);
        if (session == 0)
            fw_tear(dir);
        else
            fw_note(r, rc, "close");
    }
}

/* -1 absent; k when record id-k is there with what was written; fails the test on anything
 * else (a wrong value or window). */
static int fw_val(struct store *s, int k, const char *ctx)
{
    char id[32];
    snprintf(id, sizeof(id), "id-%d", k);
    float v[DIM];
    struct store_value sv = {.vec = v};
    int rc = store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &sv);
    if (rc == ST_ENOTFOUND)
        return -1;
    ck_assert_msg(rc == ST_OK, "%s: get id-%d: %s", ctx, k, st_strerror(rc));
    static uint8_t meta[STORE_META_MAX];
    uint32_t meta_len = fw_meta(k, meta);
    bool ok = v[0] == (float)k && v[1] == 1 && v[3] == 3 && sv.offset == k &&
              sv.window == window_of(k) && sv.ts == window_of(k) + 10 + k &&
              sv.meta_len == meta_len && memcmp(sv.meta, meta, meta_len) == 0;
    free(sv.meta);
    ck_assert_msg(ok, "%s: id-%d has a value never written", ctx, k);
    return k;
}

/* Opens dir and checks it against what a run saw (r NULL: the finished workload). */
static void fw_check(const char *dir, struct store_fs *fs, const struct fw_out *r, const char *ctx)
{
    struct store_opts o = fw_opts(dir, fs);
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s: reopen: %s", ctx, err.msg);
    int64_t applied = -1;
    if (store_applied_offset(s, 0, &applied) != ST_OK)
        applied = -1;
    if (r != NULL)
        ck_assert_msg(applied >= r->durable, "%s: applied %lld < reported durable %lld", ctx,
                      (long long)applied, (long long)r->durable);
    for (int k = 0; k < ALL_N; k++) {
        int v = fw_val(s, k, ctx);
        if (r == NULL) {
            bool in_c = window_of(k) == WC;
            ck_assert_msg(v == (in_c ? -1 : k), "%s: finished, id-%d %s", ctx, k,
                          in_c ? "in the dropped window" : "missing");
            continue;
        }
        if (r->gone[k])
            ck_assert_msg(v == -1, "%s: id-%d back after its window's drop", ctx, k);
        else if (r->acked[k] || k <= r->durable)
            ck_assert_msg(v == k, "%s: acknowledged id-%d lost (durable %lld)", ctx, k,
                          (long long)r->durable);
        else if (k > r->next) /* never written: the writes stopped at next */
            ck_assert_msg(v == -1, "%s: id-%d there, never written", ctx, k);
        if (v != -1)
            ck_assert_msg(k <= applied, "%s: id-%d there, applied mark %lld", ctx, k,
                          (long long)applied);
    }
    for (int i = 0; i < NKV; i++) {
        char key[32];
        snprintf(key, sizeof(key), "kv-%d", i);
        int val = -1;
        size_t len = 0;
        int rc = store_kv_get(s, key, &val, sizeof(val), &len);
        ck_assert_msg(rc == ST_OK || rc == ST_ENOTFOUND, "%s: kv %s: %s", ctx, key,
                      st_strerror(rc));
        if (rc == ST_OK)
            ck_assert_msg(len == sizeof(val) && val == i * 8 + 7, "%s: kv %s wrong", ctx, key);
        if (r == NULL || r->kv_acked[i])
            ck_assert_msg(rc == ST_OK, "%s: acknowledged kv %s lost", ctx, key);
    }
    /* never written */
    struct store_value sv = {0};
    ck_assert_int_eq(store_get(s, (const uint8_t *)"id-999", 6, &sv), ST_ENOTFOUND);
    ck_assert_int_eq(store_close(s), ST_OK);
}

/* With no fault: the whole workload on top of what is there, every step ST_OK. */
static void fw_finish(const char *dir, struct store_fs *fs, const char *ctx)
{
    struct store_opts o = fw_opts(dir, fs);
    struct store *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(store_open(&o, &s, &err) == ST_OK, "%s: finish open: %s", ctx, err.msg);
    struct fw_out r = {.durable = -1};
    fw_writes(s, 0, ALL_N, &r);
    fw_note(&r, store_flush(s), "flush");
    fw_note(&r, fw_compact(s), "compact");
    fw_note(&r, fw_seal(s, 3), "seal");
    fw_note(&r, fw_drop(s), "drop");
    fw_note(&r, store_close(s), "close");
    ck_assert_msg(r.errors == 0, "%s: finishing: %s failed: %s", ctx, r.first_step,
                  st_strerror(r.first_err));
}

/* Sites whose failure the store may swallow (store_best_effort): removing a file nothing
 * needs any more (a failed unlink or rename aside leaves an orphan the next open removes);
 * and sites whose failure takes another path to the same bytes (O_DIRECT refused, no stage for
 * a direct append: through the page cache; no I/O thread for the vector-log writer: it copies
 * and writes in turn; a vector log's block sums stopped: its seal reads the rows back).
 * fw_check still checks every byte after them. */
static bool best_effort(const char *site)
{
    return strstr(site, "unlink") != NULL || strcmp(site, "store.seg.delete_rename") == 0 ||
           strcmp(site, "store.fs.direct") == 0 || strcmp(site, "store.fs.stage") == 0 ||
           strcmp(site, "store.fs.io") == 0 || strcmp(site, "store.vlog.sums") == 0;
}

START_TEST(test_error_at_every_store_site)
{
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < sizeof(big_meta); i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        big_meta[i] = (uint8_t)x;
    }
    char *dir = st_test_tmpdir("faults");
    struct store_fs *fs = store_fs_sim_new();
    struct fw_out r0 = {.durable = -1};
    st_fault_record(true);
    fw_run(dir, fs, &r0, false);
    ck_assert_msg(r0.errors == 0, "fault-free run: %s failed: %s", r0.first_step,
                  st_strerror(r0.first_err));
    fw_check(dir, fs, &r0, "fault-free");
    store_fs_free(fs);
    const char *sites[128];
    size_t nsites = st_fault_recorded(sites, 128), clean_sites = nsites;
    ck_assert_uint_ge(nsites, 25);

    static const int codes[] = {ST_EIO, ST_ENOSPC};
    int runs = 0, fired_runs = 0, surfaced = 0;
    for (size_t i = 0; i < nsites; i++) {
        for (size_t c = 0; c < 2; c++) {
            for (uint32_t skip = 0; skip < 2; skip++) {
                char ctx[160];
                snprintf(ctx, sizeof(ctx), "%s %s skip %u", sites[i], st_strerror(codes[c]), skip);
                st_test_rmrf(dir);
                ck_assert_int_eq(mkdir(dir, 0755), 0);
                fs = store_fs_sim_new();
                struct fw_out r = {.durable = -1};
                ck_assert_int_eq(st_fault_arm(sites[i], skip, 0, codes[c]), ST_OK);
                fw_run(dir, fs, &r, true);
                uint32_t fired = st_fault_fired(sites[i]);
                st_fault_disarm_all();
                runs++;
                if (fired > 0) {
                    fired_runs++;
                    surfaced += r.errors > 0;
                    ck_assert_msg(r.errors > 0 || best_effort(sites[i]),
                                  "%s: the fault fired %u times and every call returned ST_OK", ctx,
                                  fired);
                }
                fw_check(dir, fs, &r, ctx);
                fw_finish(dir, fs, ctx);
                fw_check(dir, fs, NULL, ctx);
                store_fs_free(fs);
                /* Sites only error paths reach (cleanup of a failed write, ...) join the
                 * matrix as the runs discover them. */
                nsites = st_fault_recorded(sites, 128);
            }
        }
    }
    st_fault_record(false);
    size_t store_sites = st_test_fault_sites(sites, nsites, clean_sites, "store.");
    fprintf(stderr, "store fault matrix: %zu sites (%zu on the clean run), ", store_sites,
            clean_sites);
    /* The workload passes (nearly) every named site of the store: not a vacuous matrix. */
    ck_assert_uint_ge(store_sites, 40);
    fprintf(stderr, "%d runs, %d with the fault fired, %d surfaced\n", runs, fired_runs, surfaced);
    ck_assert_int_ge(fired_runs, (int)(3 * nsites)); /* skip 1 misses sites passed once */
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    st_log_set_level((enum st_log_level)2) /* quiet: the matrix fails on purpose */;
    Suite *su = suite_create("store_faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_error_at_every_store_site);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
