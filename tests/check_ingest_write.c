/* A decoded message into the windows: timestamps, cosine normalisation, replays, rejections. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ingest_layout.h"
#include "ingest_write.h"
#include "rec_format.h"
#include "st_clock.h"
#include "st_log.h"
#include "st_test.h"
#include "twcs.h"

#define T0 1763798400000 /* 2025-11-22, a window boundary for 1 s windows */

static struct st_clock clk;
static char *dir;
static struct twcs *t;
static struct rec_decoder *dec;

static void setup(void)
{
    st_log_set_level(ST_LOG_WARNING);
    st_clock_manual_init(&clk, T0 + 500);
    dir = st_test_tmpdir("ingw");
    struct twcs_opts o = {
        .store = {.dir = dir,
                  .dim = 3,
                  .wal_sync = STORE_SYNC_ALWAYS,
                  .no_background = true,
                  .clock = &clk},
        .window_ms = 1000,
        .grace_ms = 200,
        .max_lateness_ms = 1000,
        .max_future_ms = 60000,
    };
    struct st_err err = {0};
    ck_assert_msg(twcs_open(&o, &t, &err) == ST_OK, "%s", err.msg);
    dec = rec_decoder_new();
}

static void teardown(void)
{
    if (t != NULL)
        ck_assert_int_eq(twcs_close(t), ST_OK);
    rec_decoder_free(dec);
    st_test_rmrf(dir);
    free(dir);
}

static const struct rec_collection docs = {"docs", 3, false};
static const struct rec_schema schema = {&docs, 1, &docs, 0};

static void decode(const char *json, struct rec_batch *b)
{
    char detail[256];
    enum rec_reason r =
        rec_decode(dec, &schema, REC_KIND_JSON, json, strlen(json), b, detail, sizeof(detail));
    ck_assert_msg(r == REC_OK, "%s: %s", rec_reason_str(r), detail);
}

static struct ing_result put(struct ing_writer *w, const char *json, int64_t offset, int64_t msg_ts)
{
    struct rec_batch b;
    decode(json, &b);
    struct ing_result res;
    ck_assert_int_eq(ing_write(w, t, &b, 0, offset, msg_ts, &res), ST_OK);
    return res;
}

START_TEST(test_write_ts_replay_reject)
{
    struct ing_writer *w = ing_writer_new(3, false);
    char json[256];
    snprintf(json, sizeof(json),
             "{\"records\": [{\"id\": \"a\", \"ts\": %lld, \"vector\": [1, 2, 3]},"
             " {\"id\": \"b\", \"vector\": [4, 5, 6], \"meta\": {\"k\": 1}}]}",
             (long long)T0 + 10);
    struct ing_result r = put(w, json, 7, T0 + 300);
    ck_assert_int_eq(r.outcome, ING_APPLIED);
    struct store_value v = {0};
    float vec[3];
    v.vec = vec;
    ck_assert_int_eq(store_get(twcs_store(t), (const uint8_t *)"a", 1, &v), ST_OK);
    ck_assert_int_eq(v.ts, T0 + 10);
    ck_assert_int_eq(v.offset, 7);
    ck_assert_float_eq(vec[2], 3.0f);
    free(v.meta);
    v = (struct store_value){.vec = vec};
    ck_assert_int_eq(store_get(twcs_store(t), (const uint8_t *)"b", 1, &v), ST_OK);
    ck_assert_int_eq(v.ts, T0 + 300); /* no ts: the message timestamp */
    ck_assert_uint_eq(v.meta_len, 7);
    ck_assert(memcmp(v.meta, "{\"k\":1}", 7) == 0);
    free(v.meta);
    /* The same message again (a redelivery after a crash or rebalance): skipped. */
    r = put(w, "{\"id\": \"a\", \"vector\": [9, 9, 9]}", 7, T0 + 300);
    ck_assert_int_eq(r.outcome, ING_DUPLICATE);
    v = (struct store_value){.vec = vec};
    ck_assert_int_eq(store_get(twcs_store(t), (const uint8_t *)"a", 1, &v), ST_OK);
    ck_assert_float_eq(vec[0], 1.0f);
    free(v.meta);
    /* No ts anywhere: rejected, nothing written. */
    r = put(w, "{\"id\": \"c\", \"vector\": [1, 1, 1]}", 8, -1);
    ck_assert_int_eq(r.outcome, ING_REJECTED);
    ck_assert_str_eq(r.reason, "bad_ts");
    ck_assert_ptr_nonnull(strstr(r.detail, "record 0"));
    ck_assert_int_eq(store_get(twcs_store(t), (const uint8_t *)"c", 1, &v), ST_ENOTFOUND);
    /* Far in the future of the wall clock: twcs's reason comes through. */
    snprintf(json, sizeof(json), "{\"id\": \"d\", \"ts\": %lld, \"vector\": [1, 1, 1]}",
             (long long)T0 + 3600000);
    r = put(w, json, 9, -1);
    ck_assert_int_eq(r.outcome, ING_REJECTED);
    ck_assert_str_eq(r.reason, "ts_future");
    ing_writer_free(w);
}
END_TEST

START_TEST(test_write_cosine)
{
    struct ing_writer *w = ing_writer_new(3, true);
    struct ing_result r = put(w, "{\"id\": \"u\", \"vector\": [3, 0, 4]}", 1, T0 + 1);
    ck_assert_int_eq(r.outcome, ING_APPLIED);
    struct store_value v = {0};
    float vec[3];
    v.vec = vec;
    ck_assert_int_eq(store_get(twcs_store(t), (const uint8_t *)"u", 1, &v), ST_OK);
    ck_assert_float_eq_tol(vec[0], 0.6f, 1e-6f);
    ck_assert_float_eq_tol(vec[2], 0.8f, 1e-6f);
    free(v.meta);
    /* The decoded batch itself is untouched (the normalised copy is the writer's). */
    struct rec_batch b;
    decode("{\"id\": \"z\", \"vector\": [0, 0, 0]}", &b);
    ck_assert_int_eq(ing_write(w, t, &b, 0, 2, T0 + 1, &r), ST_OK);
    ck_assert_int_eq(r.outcome, ING_REJECTED);
    ck_assert_str_eq(r.reason, "zero_vector");
    ing_writer_free(w);
}
END_TEST

/* The writer computes each row's checksum on the decode worker, after cosine normalisation:
 * the normalised vectors replay after a crash (a sum of the raw vector would name rows that
 * recovery refuses, and the records would be gone). */
START_TEST(test_write_row_sums_replay)
{
    /* The fixture's store has threads (its vector-log writer): closed first, so that the
     * fork below happens in a process with one thread (ThreadSanitizer refuses the rest). */
    ck_assert_int_eq(twcs_close(t), ST_OK);
    t = NULL;
    char *d2 = st_test_tmpdir("ingw2");
    struct twcs_opts o = {
        .store = {.dir = d2, .dim = 3, .wal_sync = STORE_SYNC_ALWAYS, .clock = &clk},
        .window_ms = 1000,
        .grace_ms = 200,
        .max_lateness_ms = 1000,
        .max_future_ms = 60000,
    };
    struct st_err err = {0};
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* its own twcs: the threads of one opened before the fork are not here */
        struct twcs *t2;
        if (twcs_open(&o, &t2, &err) != ST_OK)
            _exit(3);
        struct ing_writer *w = ing_writer_new(3, true);
        for (int k = 0; k < 5; k++) {
            char json[128];
            snprintf(json, sizeof(json), "{\"id\": \"c%d\", \"vector\": [3, %d, 4]}", k, k);
            struct rec_batch b;
            decode(json, &b);
            struct ing_result res;
            if (ing_write(w, t2, &b, 0, 10 + k, T0 + 1, &res) != ST_OK ||
                res.outcome != ING_APPLIED)
                _exit(2);
        }
        _exit(0); /* no close: the reopen replays the WAL and checks every row's sum */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct twcs *t2;
    ck_assert_msg(twcs_open(&o, &t2, &err) == ST_OK, "%s", err.msg);
    for (int k = 0; k < 5; k++) {
        char id[8];
        snprintf(id, sizeof(id), "c%d", k);
        float vec[3];
        struct store_value v = {.vec = vec};
        ck_assert_msg(store_get(twcs_store(t2), (const uint8_t *)id, 2, &v) == ST_OK,
                      "%s lost in the replay", id);
        float n = sqrtf(25.0f + (float)(k * k));
        ck_assert_float_eq_tol(vec[0], 3.0f / n, 1e-6f);
        ck_assert_float_eq_tol(vec[1], (float)k / n, 1e-6f);
        free(v.meta);
    }
    ck_assert_int_eq(twcs_close(t2), ST_OK);
    st_test_rmrf(d2);
    free(d2);
}
END_TEST

/* ---- data_dir layout (SPEC.md §6, ingest_layout.h) --------------------------------------- */

static bool is_dir(const char *a, const char *b)
{
    char p[1200];
    snprintf(p, sizeof(p), "%s/%s", a, b);
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* A store's CURRENT file under data/<rel> (enough for the layout to see a store there). */
static void fake_store(const char *data, const char *rel)
{
    char p[1200];
    snprintf(p, sizeof(p), "%s/%s", data, rel);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/%s/CURRENT", data, rel);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
}

static char *layout_dir(const char *data, const char *coll, bool *legacy)
{
    char *d = NULL;
    struct st_err err = {0};
    ck_assert_msg(ingest_layout_store_dir(data, coll, &d, legacy, &err) == ST_OK, "%s", err.msg);
    return d;
}

START_TEST(test_layout)
{
    st_log_set_level(ST_LOG_ERROR);
    char *data = st_test_tmpdir("layout");
    char want[1200];
    bool legacy;
    /* Fresh: <data_dir>/ingest/<name>, ingest/ created (the store creates its own dir). */
    char *d = layout_dir(data, "docs", &legacy);
    snprintf(want, sizeof(want), "%s/ingest/docs", data);
    ck_assert_str_eq(d, want);
    ck_assert(!legacy);
    ck_assert(is_dir(data, "ingest"));
    free(d);
    /* A store of the old layout stays where it is; another collection follows the rule. */
    fake_store(data, "old");
    d = layout_dir(data, "old", &legacy);
    snprintf(want, sizeof(want), "%s/old", data);
    ck_assert_str_eq(d, want);
    ck_assert(legacy);
    free(d);
    /* Once ingest/<name> exists it wins (an old copy next to it is not read). */
    fake_store(data, "ingest/old");
    d = layout_dir(data, "old", &legacy);
    snprintf(want, sizeof(want), "%s/ingest/old", data);
    ck_assert_str_eq(d, want);
    ck_assert(!legacy);
    free(d);
    /* A directory without CURRENT at the old place is not a store: the rule applies. */
    snprintf(want, sizeof(want), "%s/empty", data);
    ck_assert_int_eq(mkdir(want, 0755), 0);
    d = layout_dir(data, "empty", &legacy);
    snprintf(want, sizeof(want), "%s/ingest/empty", data);
    ck_assert_str_eq(d, want);
    ck_assert(!legacy);
    free(d);
    st_test_rmrf(data);
    free(data);

    /* <data_dir>/ingest is itself an old store (a collection named "ingest"): nothing may be
     * put inside it, so every collection keeps the old layout. */
    data = st_test_tmpdir("layout2");
    fake_store(data, "ingest");
    d = layout_dir(data, "ingest", &legacy);
    snprintf(want, sizeof(want), "%s/ingest", data);
    ck_assert_str_eq(d, want);
    ck_assert(legacy);
    free(d);
    d = layout_dir(data, "docs", &legacy);
    snprintf(want, sizeof(want), "%s/docs", data);
    ck_assert_str_eq(d, want);
    ck_assert(legacy);
    ck_assert(!is_dir(data, "ingest/docs"));
    free(d);
    st_test_rmrf(data);
    free(data);

    /* data_dir must exist: the error names the directory it could not create. */
    struct st_err err = {0};
    ck_assert_int_ne(ingest_layout_store_dir("/nonexistent-strata", "docs", &d, &legacy, &err),
                     ST_OK);
    ck_assert_ptr_null(d);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent-strata/ingest"));
}
END_TEST

int main(void)
{
    Suite *su = suite_create("ingest_write");
    TCase *tc = tcase_create("ingest_write");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_write_ts_replay_reject);
    tcase_add_test(tc, test_write_cosine);
    tcase_add_test(tc, test_write_row_sums_replay);
    suite_add_tcase(su, tc);
    tc = tcase_create("layout");
    tcase_add_test(tc, test_layout);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
