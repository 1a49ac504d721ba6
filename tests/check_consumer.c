/* The consumer loop against the real Kafka broker: JSON and binary messages over several
 * partitions land exactly once, bad ones go to the dead-letter topic, offsets are committed
 * to the end, and a full redelivery is recognised message by message. */
#include <check.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "consumer.h"
#include "dlq.h"
#include "rec_format.h"
#include "st_clock.h"
#include "st_kafka_test.h"
#include "st_log.h"
#include "st_mem.h"
#include "st_fault.h"
#include "st_test.h"
#include "st_twcs_test.h"
#include "twcs.h"

#define NPART 3
#define NMSG  60 /* good messages: even = JSON, odd = frame */
#define NREC  5  /* records per message */
#define DIM   4

static const char *brokers;
static char topic[128], dead[128], *dir;
static int64_t t_base;
static int nparts; /* of the current test's topic */
static struct twcs *tw;
static struct dlq *dq;
static size_t max_value; /* the consumer's message size cap (0: its default) */

/* A fresh topic (nparts partitions) and dead-letter topic named after tag. */
static void prepare(const char *tag, int parts)
{
    char dl[64];
    st_log_set_level(ST_LOG_WARNING);
    brokers = st_test_broker("STRATA_TEST_KAFKA");
    snprintf(dl, sizeof(dl), "%s-dlq", tag);
    snprintf(topic, sizeof(topic), "%s", st_test_unique(tag));
    snprintf(dead, sizeof(dead), "%s", st_test_unique(dl));
    nparts = parts;
    st_kafka_create_topic(brokers, topic, parts);
    st_kafka_create_topic(brokers, dead, 1);
    t_base = st_clock_wall_ms(NULL) - 60000;
}

static rd_kafka_t *producer(void)
{
    return st_kafka_producer(brokers);
}

static void produce(rd_kafka_t *p, int partition, const void *v, size_t len, const char *ct)
{
    rd_kafka_resp_err_t e =
        ct ? rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                               RD_KAFKA_V_VALUE((void *)(uintptr_t)v, len),
                               RD_KAFKA_V_HEADER("content-type", ct, -1),
                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)
           : rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                               RD_KAFKA_V_VALUE((void *)(uintptr_t)v, len),
                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    ck_assert_int_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void produce_str(rd_kafka_t *p, int partition, const char *s)
{
    produce(p, partition, s, strlen(s), NULL);
}

static void produce_good_to(rd_kafka_t *p, int m, int partition);

/* Message m: records "m<m>-<i>" = {m, i, 1, 2}, JSON for even m and a frame for odd m. */
static void produce_good(rd_kafka_t *p, int m)
{
    produce_good_to(p, m, m % NPART);
}

/* The same into the given partition. */
static void produce_good_to(rd_kafka_t *p, int m, int partition)
{
    if (m % 2 == 0) {
        char json[2048];
        int off = snprintf(json, sizeof(json), "{\"collection\": \"docs\", \"records\": [");
        for (int i = 0; i < NREC; i++)
            off +=
                snprintf(json + off, sizeof(json) - (size_t)off,
                         "%s{\"id\": \"m%d-%d\", \"ts\": %" PRId64 ", \"vector\": [%d, %d, 1, 2]}",
                         i ? ", " : "", m, i, t_base + m, m, i);
        snprintf(json + off, sizeof(json) - (size_t)off, "]}");
        produce(p, partition, json, strlen(json), m % 4 == 0 ? "application/json" : NULL);
        return;
    }
    char ids[NREC][16];
    float v[NREC][DIM];
    struct rec_record r[NREC];
    for (int i = 0; i < NREC; i++) {
        snprintf(ids[i], sizeof(ids[i]), "m%d-%d", m, i);
        v[i][0] = (float)m;
        v[i][1] = (float)i;
        v[i][2] = 1;
        v[i][3] = 2;
        r[i] = (struct rec_record){(const uint8_t *)ids[i],
                                   (uint32_t)strlen(ids[i]),
                                   t_base + m,
                                   REC_UPSERT,
                                   v[i],
                                   NULL,
                                   0};
    }
    uint8_t *f;
    size_t len;
    ck_assert_int_eq(rec_frame_encode("docs", DIM, false, r, NREC, &f, &len), ST_OK);
    produce(p, partition, f, len, m % 4 == 1 ? "application/vnd.strata.batch" : NULL);
    free(f);
}

/* What the assignment hook (opts.on_assignment) was told, for one consumer. */
struct seen {
    int calls;
    size_t n;
    int32_t parts[64];
    bool bad; /* another topic, or not sorted */
};

static void on_assignment(void *ctx, const struct ing_partition *p, size_t n)
{
    struct seen *s = ctx;
    s->calls++;
    s->n = n < 64 ? n : 64;
    for (size_t i = 0; i < s->n; i++) {
        s->parts[i] = p[i].partition;
        if (strcmp(p[i].topic, topic) != 0 || (i > 0 && p[i].partition <= p[i - 1].partition))
            s->bad = true;
    }
}

static struct seen *hook_to; /* the next consumer() reports its assignments here (or not) */
/* The next consumer() fetches about 1 KiB per partition at a time, so the messages it reads
 * alternate between its partitions instead of coming a partition's backlog at a time. */
static bool small_fetch;
static int64_t pause_ms;   /* the next consumer()'s back-pressure pause (0: the default) */
static int64_t hold_ms;    /* the next consumer()'s in-place wait (0: none, so the tests of
                            * the pause see one at every retry) */
static int commit_ms;      /* the next consumer()'s commit interval (0: 100 ms) */
static int64_t catchup_ms; /* the next consumer()'s close_catchup_ms (0: its default) */

static struct ing_consumer *consumer(const char *group)
{
    static struct ing_collection coll;
    coll = (struct ing_collection){.rc = {"docs", DIM, false}, .topic = topic, .twcs = tw};
    /* Passed through to librdkafka: a killed member's partitions move on sooner. */
    static const char *const props[][2] = {{"session.timeout.ms", "6000"},
                                           {"heartbeat.interval.ms", "500"},
                                           {"fetch.message.max.bytes", "1024"}};
    struct ing_consumer_opts o = {.brokers = brokers,
                                  .properties = props,
                                  .n_properties = small_fetch ? 3 : 2,
                                  .group_id = group,
                                  .colls = &coll,
                                  .n_colls = 1,
                                  .dlq = dq,
                                  .dead_letter_topic = dead,
                                  .commit_interval_ms = commit_ms > 0 ? commit_ms : 100,
                                  .pause_ms = pause_ms,
                                  .hold_ms = hold_ms != 0 ? hold_ms : -1,
                                  .max_value = max_value,
                                  .close_catchup_ms = catchup_ms,
                                  .on_assignment = hook_to != NULL ? on_assignment : NULL,
                                  .assignment_ctx = hook_to};
    struct ing_consumer *c;
    struct st_err err = {0};
    ck_assert_msg(ing_consumer_open(&o, &c, &err) == ST_OK, "%s", err.msg);
    return c;
}

/* Polls until cond(stats) or 90 s. */
#define POLL_UNTIL(c, cond)                                                                        \
    do {                                                                                           \
        struct ing_stats st_;                                                                      \
        int64_t dl_ = st_test_now_ms() + 90000;                                                    \
        for (;;) {                                                                                 \
            struct st_err e_ = {0};                                                                \
            ck_assert_msg(ing_consumer_poll(c, 100, &e_) == ST_OK, "%s", e_.msg);                  \
            ing_consumer_stats(c, &st_);                                                           \
            if (cond)                                                                              \
                break;                                                                             \
            ck_assert_msg(st_test_now_ms() < dl_,                                                  \
                          "timed out: %" PRIu64 " records %" PRIu64 " rejected %" PRIu64           \
                          " duplicates",                                                           \
                          st_.records, st_.rejected, st_.duplicates);                              \
        }                                                                                          \
    } while (0)

static void committed_at_end(const char *group)
{
    st_kafka_assert_committed_at_end(brokers, group, topic, nparts);
}

static struct st_clock *twcs_clk; /* the next open_twcs_fs's clock (NULL: the system's) */
static int64_t twcs_ttl_ms;       /* and its TTL (0: none) */

static struct twcs *open_twcs_fs(const char *d, struct store_fs *fs)
{
    struct twcs_opts to = {
        .store = {.dir = d, .dim = DIM, .wal_sync = STORE_SYNC_BATCH, .fs = fs, .clock = twcs_clk},
        .window_ms = 3600000,
        .grace_ms = 60000,
        .max_lateness_ms = 3600000,
        .ttl_ms = twcs_ttl_ms};
    struct twcs *t;
    struct st_err err = {0};
    ck_assert_msg(twcs_open(&to, &t, &err) == ST_OK, "%s", err.msg);
    return t;
}

static struct twcs *open_twcs_at(const char *d)
{
    return open_twcs_fs(d, NULL);
}

static void open_store(void)
{
    tw = open_twcs_at(dir);
    struct st_err err = {0};
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
}

/* Asserts record m<m>-<i> is stored with vector {m, i, ...}; returns its value (meta freed). */
static struct store_value expect_record(struct twcs *t, int m, int i)
{
    char id[16];
    float v[DIM];
    snprintf(id, sizeof(id), "m%d-%d", m, i);
    struct store_value sv = {.vec = v};
    ck_assert_msg(store_get(twcs_store(t), (const uint8_t *)id, (uint32_t)strlen(id), &sv) == ST_OK,
                  "%s missing", id);
    ck_assert_msg(v[0] == (float)m && v[1] == (float)i, "%s has the wrong vector", id);
    free(sv.meta);
    sv.meta = NULL;
    sv.vec = NULL;
    return sv;
}

START_TEST(test_consume_exactly_once)
{
    prepare("cons", NPART);
    dir = st_test_tmpdir("cons");
    open_store();
    struct st_err err = {0};

    rd_kafka_t *p = producer();
    for (int m = 0; m < NMSG; m++) {
        produce_good(p, m);
        if (m == 10) /* bad input between good messages, one per partition */
            produce_str(p, 0, "garbage!");
        if (m == 20)
            produce_str(p, 1, "{\"collection\": \"docs\", \"id\": \"x\", \"vector\": [1]}");
        if (m == 30)
            produce_str(p, 2,
                        "{\"records\": [{\"id\": \"d\", \"vector\": [1,2,3,4]}, {\"id\": \"d\", "
                        "\"op\": \"delete\"}]}");
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);

    /* 1. Everything arrives once; the three bad messages are dead-lettered. */
    const char *group = st_test_unique("cons-g");
    struct ing_consumer *c = consumer(group);
    POLL_UNTIL(c, st_.records == NMSG * NREC && st_.rejected == 3);
    ck_assert_int_eq(ing_consumer_commit(c, &err), ST_OK);
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    ck_assert_uint_eq(st.duplicates, 0);
    for (int m = 0; m < NMSG; m++)
        for (int i = 0; i < NREC; i++) {
            struct store_value sv = expect_record(tw, m, i);
            ck_assert_int_eq(sv.ts, t_base + m);
            ck_assert_int_eq(sv.partition, m % NPART);
        }
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);

    /* 2. The same group again: nothing old comes back, only a new message. */
    c = consumer(group);
    produce_good(p, NMSG);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.records == NREC);
    ing_consumer_stats(c, &st);
    ck_assert_uint_eq(st.messages, 1);
    ck_assert_uint_eq(st.duplicates, 0);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);

    /* 3. A full redelivery (new group, from the start) changes nothing: every good message is
     *    recognised as applied; the bad ones are dead-lettered again (a DLQ is at-least-once). */
    c = consumer(st_test_unique("cons-replay"));
    POLL_UNTIL(c, st_.duplicates == NMSG + 1 && st_.rejected == 3);
    ing_consumer_stats(c, &st);
    ck_assert_uint_eq(st.records, 0);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);

    /* The dead-letter topic: garbage, wrong_dim, duplicate_id (twice, by the replay). */
    rd_kafka_t *dc = st_kafka_consumer(brokers, st_test_unique("cons-dlq-g"), dead);
    int seen[3] = {0};
    int64_t dl = st_test_now_ms() + 60000;
    while (seen[0] + seen[1] + seen[2] < 6 && st_test_now_ms() < dl) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(dc, 200);
        if (m == NULL)
            continue;
        rd_kafka_headers_t *h;
        const void *val;
        size_t n;
        if (!m->err && rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(h, "strata.error", &val, &n) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (n == 7 && memcmp(val, "garbage", 7) == 0)
                seen[0]++;
            else if (n == 9 && memcmp(val, "wrong_dim", 9) == 0)
                seen[1]++;
            else if (n == 12 && memcmp(val, "duplicate_id", 12) == 0)
                seen[2]++;
        }
        rd_kafka_message_destroy(m);
    }
    ck_assert_msg(seen[0] == 2 && seen[1] == 2 && seen[2] == 2, "dlq: %d %d %d", seen[0], seen[1],
                  seen[2]);
    rd_kafka_consumer_close(dc);
    rd_kafka_destroy(dc);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A frame of one record "f" with vector v (encoded by the product's encoder). */
static uint8_t *frame_of(const float *v, size_t *len)
{
    struct rec_record r = {(const uint8_t *)"f", 1, t_base, REC_UPSERT, v, NULL, 0};
    uint8_t *f;
    ck_assert_int_eq(rec_frame_encode("docs", DIM, false, &r, 1, &f, len), ST_OK);
    return f;
}

/* A message expected on the dead-letter topic: its payload and the reason it carries. */
struct dead_letter {
    const void *v;
    size_t len;
    const char *reason;
};

/* Reads the dead-letter topic from the start (a group of its own named after tag) and asserts
 * that it holds exactly want[0..n) first, in order, each unchanged, with its reason and a
 * non-empty detail. */
static void expect_dead_letters(const char *tag, const struct dead_letter *want, int n)
{
    rd_kafka_t *dc = st_kafka_consumer(brokers, st_test_unique(tag), dead);
    int got = 0;
    int64_t dl = st_test_now_ms() + 60000;
    while (got < n && st_test_now_ms() < dl) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(dc, 200);
        if (m == NULL)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        rd_kafka_headers_t *h;
        const void *val, *det;
        size_t vn, dn;
        ck_assert_int_eq(rd_kafka_message_headers(m, &h), RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_int_eq(rd_kafka_header_get_last(h, "strata.error", &val, &vn),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_int_eq(rd_kafka_header_get_last(h, "strata.error.detail", &det, &dn),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_uint_gt(dn, 0);
        /* In order on the one partition: the got-th expected message. */
        ck_assert_msg(vn == strlen(want[got].reason) && memcmp(val, want[got].reason, vn) == 0,
                      "message %d: reason %.*s, expected %s (%.*s)", got, (int)vn,
                      (const char *)val, want[got].reason, (int)dn, (const char *)det);
        ck_assert_uint_eq(m->len, want[got].len);
        ck_assert(memcmp(m->payload, want[got].v, m->len) == 0);
        got++;
        rd_kafka_message_destroy(m);
    }
    ck_assert_int_eq(got, n);
    rd_kafka_consumer_close(dc);
    rd_kafka_destroy(dc);
}

/*
 * One message of every bad-input class (SPEC.md §4.3 and the list), each between two
 * good messages: every one lands in the dead-letter topic unchanged with its reason, every
 * good message is stored, the offsets are committed to the end, and the loop never fails.
 */
START_TEST(test_every_bad_class)
{
    prepare("bad", 1);
    dir = st_test_tmpdir("bad");
    open_store();
    max_value = 64 * 1024;
    float ok[DIM] = {1, 2, 3, 4}, nan[DIM] = {1, NAN, 3, 4};
    size_t flen;
    uint8_t *f_nan = frame_of(nan, &flen);
    size_t nan_len = flen;
    uint8_t *f_cut = frame_of(ok, &flen);
    size_t cut_len = flen / 2;
    uint8_t *f_sum = frame_of(ok, &flen);
    size_t sum_len = flen;
    f_sum[sum_len - 1] ^= 0x40; /* a flipped bit in the vectors */
    uint8_t *f_ver = frame_of(ok, &flen);
    size_t ver_len = flen;
    f_ver[4] = 9; /* a version from the future (the header checksum catches it first) */
    char *huge = malloc(100 * 1024);
    memset(huge, ' ', 100 * 1024);
    memcpy(huge, "{\"id\": \"h\", \"vector\": [1, 2, 3, 4]}", 34);
    char future[256];
    snprintf(future, sizeof(future), "{\"id\": \"t\", \"ts\": %" PRId64 ", \"vector\": [1,2,3,4]}",
             st_clock_wall_ms(NULL) + 3 * 3600000);
    struct dead_letter bad[] = {
        {"garbage!", 8, "garbage"},
        {"{\"collection\": \"nope\", \"id\": \"x\", \"vector\": [1, 2, 3, 4]}", 0,
         "unknown_collection"},
        {"{\"id\": \"x\", \"vector\": [1, 2, 3]}", 0, "wrong_dim"},
        {"{\"id\": \"x\", \"vector\": [1e999, 2, 3, 4]}", 0, "non_finite"},
        {f_nan, nan_len, "non_finite"},
        {"{\"id\": \"\", \"vector\": [1, 2, 3, 4]}", 0, "bad_id"},
        {"{\"id\": 7, \"vector\": [1, 2, 3, 4]}", 0, "bad_id"},
        {"{\"id\": \"x\", \"ts\": \"noon\", \"vector\": [1, 2, 3, 4]}", 0, "bad_ts"},
        {"{\"id\": \"x\", \"op\": \"merge\", \"vector\": [1, 2, 3, 4]}", 0, "bad_op"},
        {"{\"id\": \"x\", \"meta\": 5, \"vector\": [1, 2, 3, 4]}", 0, "bad_meta"},
        {huge, 100 * 1024, "too_large"},
        {f_cut, cut_len, "truncated"},
        {f_sum, sum_len, "checksum"},
        {f_ver, ver_len, "checksum"},
        {"{\"records\": [{\"id\": \"d\", \"vector\": [1,2,3,4]}, {\"id\": \"d\", \"vector\": "
         "[1,2,3,4]}]}",
         0, "duplicate_id"},
        {"{\"collection\": \"docs\", \"records\": []}", 0, "empty_batch"},
        {future, 0, "ts_future"},
    };
    const int nbad = (int)(sizeof(bad) / sizeof(bad[0]));
    rd_kafka_t *p = producer();
    produce_good(p, 0);
    for (int i = 0; i < nbad; i++) {
        if (bad[i].len == 0)
            bad[i].len = strlen(bad[i].v);
        produce(p, 0, bad[i].v, bad[i].len, NULL);
        produce_good(p, (i + 1) * NPART); /* partition 0 */
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);

    const char *group = st_test_unique("bad-g");
    struct ing_consumer *c = consumer(group);
    POLL_UNTIL(c, st_.rejected == (uint64_t)nbad && st_.records == (uint64_t)(nbad + 1) * NREC);
    for (int i = 0; i <= nbad; i++)
        for (int r = 0; r < NREC; r++)
            expect_record(tw, i * NPART, r);
    struct ing_metrics im;
    ck_assert_int_eq(ing_consumer_metrics(c, &im), ST_OK);
    uint64_t counted = 0;
    for (size_t i = 0; i < im.nrej; i++) {
        ck_assert_uint_eq(im.rej[i].coll, 0);
        counted += im.rej[i].n;
    }
    ck_assert_uint_eq(counted, (uint64_t)nbad);
    ing_metrics_free(&im);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);

    /* Each bad message, unchanged, with its reason and a detail. */
    expect_dead_letters("bad-dlq-g", bad, nbad);
    rd_kafka_destroy(p);
    free(huge);
    free(f_nan);
    free(f_cut);
    free(f_sum);
    free(f_ver);
    max_value = 0;
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

static int64_t committed_sum(const char *group)
{
    int64_t offs[16], sum = 0;
    st_kafka_committed(brokers, group, topic, nparts, offs);
    for (int i = 0; i < nparts; i++)
        sum += offs[i] > 0 ? offs[i] : 0;
    return sum;
}

/* kill -9 of a consuming ingest in the middle of a stream, then a restart: every record of
 * every message is there, and the restarted member handles exactly the messages after the
 * last commit (the ones applied before the kill come back as recognised duplicates). */
START_TEST(test_kill9_restart)
{
    prepare("k9", NPART);
    dir = st_test_tmpdir("k9");
    const char *group = st_test_unique("k9-g");
    /* No librdkafka handle exists in this process while it forks. */
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        open_store();
        struct ing_consumer *c = consumer(group);
        for (;;) {
            struct st_err e = {0};
            if (ing_consumer_poll(c, 100, &e) != ST_OK)
                _exit(3);
        }
    }
    rd_kafka_t *p = producer();
    const int total = 4 * NMSG;
    for (int m = 0; m < total / 2; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    /* Kill it once it has committed part of the stream. */
    ck_assert_msg(ST_WAIT_UNTIL(committed_sum(group) >= total / 8, 90000),
                  "the child committed nothing");
    ck_assert_int_eq(kill(child, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status));
    for (int m = total / 2; m < total; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    /* Restart: recover the store, rejoin the group (after the dead member's session ends). */
    int64_t before = committed_sum(group);
    ck_assert_int_lt(before, total);
    open_store();
    struct ing_consumer *c = consumer(group);
    POLL_UNTIL(c, (int64_t)st_.messages >= total - before);
    struct st_err err = {0};
    ck_assert_int_eq(ing_consumer_commit(c, &err), ST_OK);
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    ck_assert_int_eq((int64_t)st.messages, total - before); /* nothing before the commit again */
    ck_assert_uint_eq(st.records + st.duplicates * NREC, (uint64_t)(total - before) * NREC);
    for (int m = 0; m < total; m++)
        for (int i = 0; i < NREC; i++)
            (void)expect_record(tw, m, i);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

static bool has_id(struct twcs *t, int m, int i)
{
    char id[16];
    snprintf(id, sizeof(id), "m%d-%d", m, i);
    struct store_value sv = {0};
    int rc = store_get(twcs_store(t), (const uint8_t *)id, (uint32_t)strlen(id), &sv);
    free(sv.meta);
    ck_assert(rc == ST_OK || rc == ST_ENOTFOUND);
    return rc == ST_OK;
}

static uint64_t handled(struct ing_consumer *c)
{
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    return st.messages;
}

/* Polls both members (b may be NULL) until together they handled `want` messages. */
static void poll_pair(struct ing_consumer *a, struct ing_consumer *b, uint64_t want)
{
    int64_t dl = st_test_now_ms() + 90000;
    for (;;) {
        struct st_err e = {0};
        ck_assert_msg(a == NULL || ing_consumer_poll(a, 50, &e) == ST_OK, "%s", e.msg);
        ck_assert_msg(b == NULL || ing_consumer_poll(b, 50, &e) == ST_OK, "%s", e.msg);
        uint64_t n = (a ? handled(a) : 0) + (b ? handled(b) : 0);
        if (n >= want)
            return;
        ck_assert_msg(st_test_now_ms() < dl, "handled %" PRIu64 " of %" PRIu64, n, want);
    }
}

/*
 * A power loss right after a burst, on a disk whose fsyncs are slow: every offset committed
 * before the loss has its message in the store afterwards. The consumer keeps handling and
 * committing while the WAL syncer is still behind, so committing what was handled rather
 * than what is durable would lose committed messages here.
 */
START_TEST(test_commit_only_durable_power_loss)
{
    prepare("pl", NPART);
    dir = st_test_tmpdir("pl");
    struct store_fs *fs = store_fs_sim_new();
    store_fs_sim_sync_delay(fs, 300);
    tw = open_twcs_fs(dir, fs);
    struct st_err err = {0};
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
    const char *group = st_test_unique("pl-g");
    rd_kafka_t *p = producer();
    for (int m = 0; m < NMSG / 2; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    struct ing_consumer *c = consumer(group);
    /* The first half handled and (after the slow fsyncs) committed. */
    POLL_UNTIL(c, st_.messages == NMSG / 2 && st_.commits >= 1);
    for (int m = NMSG / 2; m < NMSG; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.messages == NMSG);
    /* Commit rounds go on for less than one fsync, then the power goes. */
    int64_t until = st_test_now_ms() + 150;
    while (st_test_now_ms() < until) {
        struct st_err e = {0};
        ck_assert_msg(ing_consumer_poll(c, 20, &e) == ST_OK, "%s", e.msg);
    }
    store_fs_sim_crash(fs);
    (void)ing_consumer_close(c); /* its last fsync fails: nothing more is committed */
    int64_t offs[NPART];
    st_kafka_committed(brokers, group, topic, NPART, offs);
    (void)twcs_close(tw);
    store_fs_sim_revive(fs);

    tw = open_twcs_at(dir); /* recovery from what the power loss left */
    int committed = 0, lost = 0;
    for (int m = 0; m < NMSG; m++) {
        bool in_commit = m / NPART < offs[m % NPART]; /* k-th message of a partition: offset k */
        bool present = has_id(tw, m, 0);
        for (int i = 1; i < NREC; i++)
            ck_assert_msg(has_id(tw, m, i) == present, "message %d applied in part", m);
        ck_assert_msg(present || !in_commit, "message %d was committed and is lost", m);
        committed += in_commit;
        lost += !present;
    }
    ck_assert_int_gt(committed, 0); /* something was committed ... */
    ck_assert_int_gt(lost, 0);      /* ... and the loss really took unsynced messages */
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    store_fs_free(fs);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A mock cluster (fault injection only: the one broker that refuses or delays on request) of
 * one broker, with a fresh topic of `parts` partitions and its dead-letter topic named after
 * tag, and a fresh store; *mrk is the mock's own handle. */
static rd_kafka_mock_cluster_t *mock_start(const char *tag, int parts, rd_kafka_t **mrk)
{
    st_log_set_level(ST_LOG_WARNING);
    char es[256], dl[64];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The mock's own handle has no bootstrap servers, which librdkafka notes on stderr. */
    ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "4", es, sizeof(es)), RD_KAFKA_CONF_OK);
    *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    ck_assert_msg(*mrk != NULL, "%s", es);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(*mrk, 1);
    ck_assert_ptr_nonnull(mc);
    brokers = rd_kafka_mock_cluster_bootstraps(mc);
    snprintf(dl, sizeof(dl), "%s-dlq", tag);
    snprintf(topic, sizeof(topic), "%s", st_test_unique(tag));
    snprintf(dead, sizeof(dead), "%s", st_test_unique(dl));
    nparts = parts;
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, topic, parts, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, dead, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    t_base = st_clock_wall_ms(NULL) - 60000;
    dir = st_test_tmpdir(tag);
    open_store();
    return mc;
}

/* Undoes mock_start (and destroys producer p). */
static void mock_finish(rd_kafka_mock_cluster_t *mc, rd_kafka_t *mrk, rd_kafka_t *p)
{
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    st_test_rmrf(dir);
    free(dir);
}

/*
 * Fault injection (librdkafka's mock cluster, the only broker that refuses on request): the
 * commits at close are refused twice with "illegal generation", as when a member joined or left
 * a moment before a shutdown (librdkafka then gives the assignment up as lost and rejoins). The
 * consumer reads again what it had handled and commits again, so the group's offsets end at
 * what it wrote and the records are stored once. Meanwhile it reads nothing new: messages
 * produced just before the close are neither stored nor committed. An idle partition (nothing
 * to catch up) does not hold the close until its deadline.
 */
START_TEST(test_close_commit_through_rebalance)
{
    rd_kafka_t *mrk;
    rd_kafka_mock_cluster_t *mc = mock_start("cr", NPART + 1, &mrk); /* the last one stays idle */
    rd_kafka_t *p = producer();
    for (int m = 0; m < NMSG; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *group = st_test_unique("cr-g");
    commit_ms = 3600000; /* only the close commits */
    catchup_ms = 60000;
    struct ing_consumer *c = consumer(group);
    commit_ms = 0;
    catchup_ms = 0;
    POLL_UNTIL(c, st_.messages == NMSG);
    ck_assert_uint_eq(handled(c), NMSG);
    for (int m = NMSG; m < NMSG + 3; m++) /* after the last poll: not to be read by the close */
        produce_good_to(p, m, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_mock_push_request_errors(mc, 8 /* OffsetCommit */, 2,
                                      RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
                                      RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    int64_t t0 = st_test_now_ms();
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    ck_assert_msg(st_test_now_ms() - t0 < 30000, "the close waited %" PRId64 " ms for nothing",
                  st_test_now_ms() - t0);
    int64_t offs[NPART + 1];
    st_kafka_committed(brokers, group, topic, NPART + 1, offs);
    for (int part = 0; part < NPART; part++) /* what it had handled, nothing more */
        ck_assert_int_eq(offs[part], NMSG / NPART);
    ck_assert_int_lt(offs[NPART], 0); /* the idle one: nothing */
    for (int m = 0; m < NMSG; m++)
        (void)expect_record(tw, m, 0);
    for (int m = NMSG; m < NMSG + 3; m++)
        ck_assert_msg(!has_id(tw, m, 0), "m%d was read during the close", m);
    mock_finish(mc, mrk, p);
}
END_TEST

/*
 * Fault injection (the mock cluster): the group coordinator answers each of the first three
 * offset commits 1.5 s late, as a broker on a busy host does. The periodic commits must not
 * hold up the writes (a strong search sees a record only once it is written): no poll call
 * takes anywhere near that long while the messages go in. One round is in flight at a time
 * (the three slow answers come one after another, not together), and once they are through
 * the asynchronous rounds commit everything handled, before any close.
 */
START_TEST(test_commit_does_not_block_polls)
{
    rd_kafka_t *mrk;
    rd_kafka_mock_cluster_t *mc = mock_start("ca", NPART, &mrk);
    rd_kafka_t *p = producer();
    const char *group = st_test_unique("ca-g");
    struct ing_consumer *c = consumer(group);
    /* Joined and fetching (one message handled) before the coordinator slows down. */
    produce_good(p, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.messages == 1);
    POLL_UNTIL(c, st_.commits >= 1);
    ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                         mc, 1, 8 /* OffsetCommit */, 3, RD_KAFKA_RESP_ERR_NO_ERROR, 1500,
                         RD_KAFKA_RESP_ERR_NO_ERROR, 1500, RD_KAFKA_RESP_ERR_NO_ERROR, 1500),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    uint64_t commits0 = st.commits;
    /* When the first slow commit was taken off the stack and when the last was. Messages go
     * out one after another for as long as that takes (so every round has something new). */
    int64_t first = -1, last = -1, slowest = 0, dl = st_test_now_ms() + 120000;
    int sent = 1;
    while (sent < NMSG || last < 0 || st.commits < commits0 + 3) {
        if (handled(c) == (uint64_t)sent) {
            produce_good(p, sent++);
            ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        struct st_err e = {0};
        int64_t a = st_test_now_ms();
        ck_assert_msg(ing_consumer_poll(c, 20, &e) == ST_OK, "%s", e.msg);
        int64_t now = st_test_now_ms();
        if (now - a > slowest)
            slowest = now - a;
        size_t left = 3;
        ck_assert_int_eq(rd_kafka_mock_broker_error_stack_cnt(mc, 1, 8 /* OffsetCommit */, &left),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        if (left < 3 && first < 0)
            first = now;
        if (left == 0 && last < 0)
            last = now;
        ing_consumer_stats(c, &st);
        ck_assert_msg(now < dl, "timed out at message %d, %" PRIu64 " commits", sent,
                      st.commits - commits0);
    }
    ck_assert_msg(slowest < 1000, "a poll took %" PRId64 " ms: it waited for a commit", slowest);
    /* Each slow round was sent only after the one before was answered (1.5 s each). */
    ck_assert_msg(last - first >= 2500, "three slow commits sent within %" PRId64 " ms",
                  last - first);
    /* The periodic rounds alone commit every message handled (no close, no explicit commit). */
    POLL_UNTIL(c, st_.messages == (uint64_t)sent);
    int64_t want[NPART] = {0}, offs[NPART];
    for (int i = 0; i < sent; i++)
        want[i % NPART]++;
    for (int64_t until = st_test_now_ms() + 60000;;) {
        st_kafka_committed(brokers, group, topic, NPART, offs);
        bool all = true;
        for (int part = 0; part < NPART; part++)
            all &= offs[part] == want[part];
        if (all)
            break;
        ck_assert_msg(st_test_now_ms() < until,
                      "committed %" PRId64 "/%" PRId64 "/%" PRId64 ", handled %" PRId64 "/%" PRId64
                      "/%" PRId64,
                      offs[0], offs[1], offs[2], want[0], want[1], want[2]);
        for (int64_t t = st_test_now_ms() + 300; st_test_now_ms() < t;) {
            struct st_err e = {0};
            ck_assert_msg(ing_consumer_poll(c, 20, &e) == ST_OK, "%s", e.msg);
        }
    }
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    for (int m = 0; m < NMSG; m++)
        (void)expect_record(tw, m, 0);
    mock_finish(mc, mrk, p);
}
END_TEST

/*
 * Fault injection (the mock cluster): a periodic (asynchronous) commit is refused with a
 * retriable error 2 s late, which librdkafka sends again after its backoff. An explicit commit
 * of more messages made meanwhile must not be overtaken by that retry: the group's offset ends
 * at the newer position, not back at the older one (redelivery to the next owner otherwise).
 */
START_TEST(test_sync_commit_after_async_retry)
{
    rd_kafka_t *mrk;
    rd_kafka_mock_cluster_t *mc = mock_start("cs", 1, &mrk);
    st_log_set_level(ST_LOG_ERROR); /* the refused commit is logged */
    rd_kafka_t *p = producer();
    const char *group = st_test_unique("cs-g");
    struct ing_consumer *c = consumer(group);
    produce_good_to(p, 0, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.messages == 1 && st_.commits >= 1);
    /* The next round (for message 1) is refused 2 s late and retried. */
    ck_assert_int_eq(
        rd_kafka_mock_broker_push_request_error_rtts(
            mc, 1, 8 /* OffsetCommit */, 1, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, 2000),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    uint64_t commits0 = st.commits;
    produce_good_to(p, 1, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    size_t left = 1;
    for (int64_t dl = st_test_now_ms() + 60000; left > 0;) { /* the round is out */
        struct st_err e = {0};
        ck_assert_msg(ing_consumer_poll(c, 20, &e) == ST_OK, "%s", e.msg);
        ck_assert_int_eq(rd_kafka_mock_broker_error_stack_cnt(mc, 1, 8, &left),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_msg(st_test_now_ms() < dl, "the round for message 1 never went out");
    }
    /* Two more messages handled while that round waits, then an explicit commit. */
    produce_good_to(p, 2, 0);
    produce_good_to(p, 3, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.messages == 4);
    struct st_err err = {0};
    ck_assert_msg(ing_consumer_commit(c, &err) == ST_OK, "%s", err.msg);
    /* Both answered (the retried round and the explicit commit), then the group's offset. */
    POLL_UNTIL(c, st_.commits >= commits0 + 2);
    int64_t off;
    st_kafka_committed(brokers, group, topic, 1, &off);
    ck_assert_int_eq(off, 4);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    mock_finish(mc, mrk, p);
}
END_TEST

/* A second member joins and later the first leaves: partitions move with their commits, so
 * every message is applied by exactly one of the two members' stores — none lost, none twice.
 * The assignment hook tells each member's partitions as they move. */
START_TEST(test_rebalance_join_leave)
{
    prepare("rb", NPART * 2);
    char *da = st_test_tmpdir("rb-a"), *db = st_test_tmpdir("rb-b");
    struct twcs *ta = open_twcs_at(da), *tb = open_twcs_at(db);
    struct st_err err = {0};
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
    const char *group = st_test_unique("rb-g");
    rd_kafka_t *p = producer();

    struct seen sa = {0}, sb = {0};
    tw = ta;
    hook_to = &sa;
    struct ing_consumer *a = consumer(group);
    for (int m = 0; m < NMSG; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    poll_pair(a, NULL, NMSG);
    /* The hook saw A's whole assignment, sorted. */
    ck_assert_uint_eq(sa.n, NPART * 2);
    for (size_t i = 0; i < sa.n; i++)
        ck_assert_int_eq(sa.parts[i], (int32_t)i);

    tw = tb; /* B joins: some partitions move from A to B */
    hook_to = &sb;
    struct ing_consumer *b = consumer(group);
    hook_to = NULL;
    for (int m = NMSG; m < 2 * NMSG; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    poll_pair(a, b, 2 * NMSG);
    ck_assert_uint_gt(handled(b), 0); /* B really got partitions */
    /* Once the rebalance is over, the hooks split the partitions between A and B:
     * each partition in exactly one member's last report. */
    int64_t dl = st_test_now_ms() + 60000;
    while (sa.n + sb.n != NPART * 2 || sa.n == 0 || sb.n == 0) {
        struct st_err e = {0};
        ck_assert_msg(ing_consumer_poll(a, 50, &e) == ST_OK, "%s", e.msg);
        ck_assert_msg(ing_consumer_poll(b, 50, &e) == ST_OK, "%s", e.msg);
        ck_assert_msg(st_test_now_ms() < dl, "hooks report %zu + %zu partitions", sa.n, sb.n);
    }
    for (int32_t part = 0; part < NPART * 2; part++) {
        int owners = 0;
        for (size_t i = 0; i < sa.n; i++)
            owners += sa.parts[i] == part;
        for (size_t i = 0; i < sb.n; i++)
            owners += sb.parts[i] == part;
        ck_assert_msg(owners == 1, "partition %d reported by %d members", part, owners);
    }

    uint64_t by_a = handled(a);
    int calls_a = sa.calls;
    ck_assert_int_eq(ing_consumer_close(a), ST_OK); /* A leaves: commits, releases */
    ck_assert_int_gt(sa.calls, calls_a);            /* told that it holds nothing now */
    ck_assert_uint_eq(sa.n, 0);
    for (int m = 2 * NMSG; m < 3 * NMSG; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    poll_pair(NULL, b, 3 * NMSG - by_a);
    dl = st_test_now_ms() + 60000;
    while (sb.n != NPART * 2) { /* B takes A's partitions over */
        struct st_err e = {0};
        ck_assert_msg(ing_consumer_poll(b, 50, &e) == ST_OK, "%s", e.msg);
        ck_assert_msg(st_test_now_ms() < dl, "B reports %zu partitions", sb.n);
    }
    ck_assert(!sa.bad && !sb.bad);
    ck_assert_int_eq(ing_consumer_close(b), ST_OK);
    committed_at_end(group);

    for (int m = 0; m < 3 * NMSG; m++)
        for (int i = 0; i < NREC; i++) {
            bool in_a = has_id(ta, m, i), in_b = has_id(tb, m, i);
            ck_assert_msg(in_a != in_b, "m%d-%d: in A %d, in B %d", m, i, in_a, in_b);
        }
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(ta), ST_OK);
    ck_assert_int_eq(twcs_close(tb), ST_OK);
    st_test_rmrf(da);
    st_test_rmrf(db);
    free(da);
    free(db);
}
END_TEST

/*
 * Members come and go while messages keep arriving and every member commits every 5 ms, so
 * commits race the group's rebalances. With cooperative-sticky, librdkafka 2.0.2 sends a
 * member's commit while its own rejoin bumps the generation; the commit is refused, the
 * assignment declared lost (librdkafka issue 4059), and a partition's next owner reads again
 * what the old one had stored: a record held by two members' stores. Every message must be in
 * exactly one store, and the group's offsets at the end.
 */
START_TEST(test_rebalance_churn)
{
    prepare("churn", NPART * 2);
    char *dirs[3];
    struct twcs *ts[3];
    for (int k = 0; k < 3; k++) {
        dirs[k] = st_test_tmpdir("churn-m");
        ts[k] = open_twcs_at(dirs[k]);
    }
    struct st_err err = {0};
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
    const char *group = st_test_unique("churn-g");
    rd_kafka_t *p = producer();
    struct ing_consumer *m[3] = {NULL, NULL, NULL};
    commit_ms = 5;
    for (int k = 0; k < 2; k++) {
        tw = ts[k];
        m[k] = consumer(group);
    }
    int sent = 0;
    for (int cycle = 0; cycle < 8; cycle++) {
        if (m[2] == NULL) { /* the third member joins (again, with its own store) ... */
            tw = ts[2];
            m[2] = consumer(group);
        } else { /* ... and leaves */
            ck_assert_int_eq(ing_consumer_close(m[2]), ST_OK);
            m[2] = NULL;
        }
        for (int64_t until = st_test_now_ms() + 2500; st_test_now_ms() < until;) {
            produce_good(p, sent++);
            rd_kafka_poll(p, 0);
            for (int k = 0; k < 3; k++)
                ck_assert_msg(m[k] == NULL || ing_consumer_poll(m[k], 10, &err) == ST_OK, "%s",
                              err.msg);
        }
    }
    commit_ms = 0;
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    /* The rest is read by whoever holds the partitions now. */
    int64_t dl = st_test_now_ms() + 90000;
    for (int next = 0; next < sent;) {
        for (int k = 0; k < 3; k++)
            ck_assert_msg(m[k] == NULL || ing_consumer_poll(m[k], 50, &err) == ST_OK, "%s",
                          err.msg);
        while (next < sent &&
               (has_id(ts[0], next, 0) || has_id(ts[1], next, 0) || has_id(ts[2], next, 0)))
            next++;
        ck_assert_msg(st_test_now_ms() < dl, "message %d of %d stored nowhere", next, sent);
    }
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(ing_consumer_close(m[k]), ST_OK);
    committed_at_end(group);
    int twice = 0, first = -1;
    for (int msg = 0; msg < sent; msg++)
        for (int i = 0; i < NREC; i++) {
            int in = has_id(ts[0], msg, i) + has_id(ts[1], msg, i) + has_id(ts[2], msg, i);
            ck_assert_msg(in >= 1, "m%d-%d is stored nowhere", msg, i);
            if (in > 1 && twice++ == 0)
                first = msg;
        }
    ck_assert_msg(twice == 0, "%d of %d records are held by two members (the first: m%d)", twice,
                  sent * NREC, first);
    rd_kafka_destroy(p);
    dlq_close(dq);
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(twcs_close(ts[k]), ST_OK);
        st_test_rmrf(dirs[k]);
        free(dirs[k]);
    }
}
END_TEST

/*
 * A topic of NPART partitions holding NMSG good messages, and tw on a store with tiny
 * memtables (one frozen at most) flushed only when the test says so: it fills up at once.
 * Returns the producer.
 */
static rd_kafka_t *tiny_store_backlog(const char *tag)
{
    prepare(tag, NPART);
    dir = st_test_tmpdir(tag);
    struct twcs_opts to = {.store = {.dir = dir,
                                     .dim = DIM,
                                     .wal_sync = STORE_SYNC_BATCH,
                                     .memtable_size = 4096,
                                     .max_frozen = 1,
                                     .no_background = true},
                           .window_ms = 3600000,
                           .grace_ms = 60000,
                           .max_lateness_ms = 3600000};
    struct st_err err = {0};
    ck_assert_msg(twcs_open(&to, &tw, &err) == ST_OK, "%s", err.msg);
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
    rd_kafka_t *p = producer();
    for (int m = 0; m < NMSG; m++)
        produce_good(p, m);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    return p;
}

/*
 * Another member joins the group on a topic of its own: under the eager protocol every member's
 * whole assignment is revoked and given again, so c keeps its partitions but goes through a
 * rebalance. Polls c and the new member until c's hook (seen) has been told an assignment again
 * with all nparts partitions; returns the new member (the caller closes it).
 */
static rd_kafka_t *rebalance_in_place(struct ing_consumer *c, const char *group, struct seen *seen)
{
    char other[128];
    snprintf(other, sizeof(other), "%s", st_test_unique("other"));
    st_kafka_create_topic(brokers, other, 1);
    int calls = seen->calls;
    rd_kafka_t *b = st_kafka_consumer(brokers, group, other);
    struct st_err err = {0};
    int64_t dl = st_test_now_ms() + 60000;
    while (seen->calls == calls || seen->n != (size_t)nparts) {
        ck_assert_msg(ing_consumer_poll(c, 50, &err) == ST_OK, "%s", err.msg);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(b, 10);
        if (m != NULL)
            rd_kafka_message_destroy(m);
        ck_assert_msg(st_test_now_ms() < dl, "no rebalance: %d hook calls, %zu partitions",
                      seen->calls, seen->n);
    }
    return b;
}

/*
 * A rebalance keeps the event-time progress of the partitions that stay: p0 at t+1 and p1 at
 * t+5 hold the watermark at t+1; after a rebalance that gives both back, a new record on p0 at
 * t+9 moves it to t+5 (p1's progress carried over). Telling twcs the empty set during the eager
 * revoke restarted every partition from nothing: the watermark stayed frozen at t+1 until p1
 * wrote again or went idle (60 s).
 */
START_TEST(test_watermark_kept_across_rebalance)
{
    prepare("wmr", 2);
    dir = st_test_tmpdir("wmr");
    open_store();
    rd_kafka_t *p = producer();
    produce_good_to(p, 1, 0);
    produce_good_to(p, 5, 1);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *group = st_test_unique("wmr-g");
    struct seen seen = {0};
    hook_to = &seen;
    struct ing_consumer *c = consumer(group);
    hook_to = NULL;
    POLL_UNTIL(c, st_.records == 2 * NREC);
    ck_assert_int_eq(twcs_tick(tw), ST_OK);
    ck_assert_int_eq(twcs_watermark(tw), t_base + 1);
    rd_kafka_t *b = rebalance_in_place(c, group, &seen);
    produce_good_to(p, 9, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.records == 3 * NREC);
    ck_assert_int_eq(twcs_tick(tw), ST_OK);
    ck_assert_int_eq(twcs_watermark(tw), t_base + 5);
    ck_assert(!seen.bad);
    rd_kafka_consumer_close(b);
    rd_kafka_destroy(b);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * A partition paused for back-pressure (a long pause: 30 s) when a rebalance gives it back:
 * librdkafka keeps an application's pause across a release and a new assign, so unless the
 * assign resumes it, nothing ever does (the consumer forgets the pause with the assignment).
 * Every record is in long before the pause would have ended by itself, each applied once.
 */
/* What librdkafka runs with: strata's prefetch defaults unless kafka.properties sets them, and
 * strata's fixed delivery settings whatever kafka.properties says. The prefetch default is a
 * sixteenth of the memory the process may use, within 64 MiB .. 1 GiB (KiB). */
START_TEST(test_kafka_settings)
{
    const uint64_t GiB = UINT64_C(1) << 30;
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(0), 65536);          /* unknown: the least */
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(512u << 20), 65536); /* small host: the least */
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(GiB), 65536);        /* 64 MiB exactly */
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(4 * GiB), 262144);   /* 256 MiB */
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(4 * GiB + 16384), 262145);
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(16 * GiB), 1048576); /* 1 GiB exactly */
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(24 * GiB), 1048576); /* capped */
    ck_assert_uint_eq(ing_consumer_prefetch_kb_for(UINT64_MAX), 1048576);
    uint64_t d = ing_consumer_prefetch_kb(), mem = st_mem_limit();
    ck_assert_uint_eq(d, ing_consumer_prefetch_kb_for(mem));
    prepare("ks", 1);
    dir = st_test_tmpdir("ks");
    open_store();
    static struct ing_collection coll;
    coll = (struct ing_collection){.rc = {"docs", DIM, false}, .topic = topic, .twcs = tw};
    static const char *const props[][2] = {{"queued.max.messages.kbytes", "65536"},
                                           {"enable.auto.commit", "true"}};
    for (int own = 0; own < 2; own++) {
        struct ing_consumer_opts o = {.brokers = brokers,
                                      .properties = own ? props : NULL,
                                      .n_properties = own ? 2 : 0,
                                      .group_id = "settings",
                                      .colls = &coll,
                                      .n_colls = 1,
                                      .dlq = dq,
                                      .dead_letter_topic = dead};
        struct ing_consumer *c;
        struct st_err err = {0};
        ck_assert_msg(ing_consumer_open(&o, &c, &err) == ST_OK, "%s", err.msg);
        char v[64];
        ck_assert_int_eq(ing_consumer_kafka_setting(c, "queued.max.messages.kbytes", v, sizeof(v)),
                         ST_OK);
        char want[32];
        snprintf(want, sizeof(want), "%" PRIu64, ing_consumer_prefetch_kb());
        ck_assert_str_eq(v, own ? "65536" : want);
        ck_assert_int_eq(ing_consumer_kafka_setting(c, "queued.min.messages", v, sizeof(v)), ST_OK);
        ck_assert_str_eq(v, "10000000");
        ck_assert_int_eq(ing_consumer_kafka_setting(c, "enable.auto.commit", v, sizeof(v)), ST_OK);
        ck_assert_str_eq(v, "false"); /* offsets only after fsync, whatever the properties say */
        ck_assert_int_eq(ing_consumer_kafka_setting(c, "no.such.property", v, sizeof(v)),
                         ST_ENOTFOUND);
        char tiny[2];
        ck_assert_int_eq(
            ing_consumer_kafka_setting(c, "queued.max.messages.kbytes", tiny, sizeof(tiny)),
            ST_ERANGE);
        ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    }
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_pause_across_rebalance)
{
    rd_kafka_t *p = tiny_store_backlog("pr");
    struct st_err err = {0};
    const char *group = st_test_unique("pr-g");
    struct seen seen = {0};
    hook_to = &seen;
    pause_ms = 30000;
    struct ing_consumer *c = consumer(group);
    pause_ms = 0;
    hook_to = NULL;
    POLL_UNTIL(c, st_.retries >= 1); /* a partition is paused, for 30 s */
    int64_t t0 = st_test_now_ms();
    rd_kafka_t *b = rebalance_in_place(c, group, &seen);
    struct ing_stats st;
    /* Flush before every poll (a poll handles one message at most), until everything is in:
     * the store still full when the resumed partitions' first message comes would pause them
     * again for 30 s — a failure that says nothing about the resume (seen when that message
     * came with the first poll after the rebalance). */
    for (;;) {
        ck_assert_int_eq(store_flush(twcs_store(tw)), ST_OK);
        ck_assert_msg(ing_consumer_poll(c, 50, &err) == ST_OK, "%s", err.msg);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(b, 0);
        if (m != NULL)
            rd_kafka_message_destroy(m);
        ing_consumer_stats(c, &st);
        if (st.records == NMSG * NREC)
            break;
        ck_assert_msg(st_test_now_ms() < t0 + 25000,
                      "%" PRIu64 " of %d records before the 30 s pause could end by itself",
                      st.records, NMSG * NREC);
    }
    for (int m = 0; m < NMSG; m++)
        ck_assert(has_id(tw, m, NREC - 1));
    rd_kafka_consumer_close(b);
    rd_kafka_destroy(b);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A store that cannot take more (frozen memtables not flushed yet) pauses the partitions
 * instead of blocking or dropping; once flushed, the same messages are read again and
 * applied — each once. */
START_TEST(test_backpressure_pause_resume)
{
    rd_kafka_t *p = tiny_store_backlog("bp");
    struct st_err err = {0};
    struct ing_consumer *c = consumer(st_test_unique("bp-g"));
    /* Full: the consumer keeps polling (never blocks) and retries. */
    POLL_UNTIL(c, st_.retries >= 3);
    /* Flush whenever it is full, until everything is in. */
    int64_t dl = st_test_now_ms() + 90000;
    struct ing_stats st;
    for (;;) {
        ck_assert_msg(ing_consumer_poll(c, 50, &err) == ST_OK, "%s", err.msg);
        ing_consumer_stats(c, &st);
        if (st.records == NMSG * NREC)
            break;
        ck_assert_int_eq(store_flush(twcs_store(tw)), ST_OK);
        ck_assert_msg(st_test_now_ms() < dl, "%" PRIu64 " records", st.records);
    }
    ck_assert_uint_eq(st.duplicates, 0);
    ck_assert_uint_eq(st.messages, NMSG); /* each message handled once, retries aside */
    ck_assert_uint_gt(st.retries, 0);
    /* Every pause ended (everything is in) and none ends before the default 50 ms. */
    ck_assert_uint_ge(st.paused_ms, st.retries * 50);
    for (int m = 0; m < NMSG; m++)
        ck_assert(has_id(tw, m, NREC - 1));
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * Back-pressure on one partition with the decode stage full of that partition's messages:
 * when a write gets ST_EAGAIN, the messages decoded behind it are dropped and read again
 * after the seek. A queued message written after the paused one would make the paused one a
 * "replay" (its offset below the store's mark): it would be counted as a duplicate and its
 * records lost. So: every record stored, no duplicate, each message handled once, the store's
 * mark at the last offset, everything committed. pause: the consumer's pause_ms (0: default).
 */
static void backpressure_queued(const char *name, int64_t pause)
{
    pause_ms = pause;
    prepare(name, 1);
    dir = st_test_tmpdir(name);
    struct twcs_opts to = {.store = {.dir = dir,
                                     .dim = DIM,
                                     .wal_sync = STORE_SYNC_BATCH,
                                     .memtable_size = 2048,
                                     .max_frozen = 1,
                                     .no_background = true},
                           .window_ms = 3600000,
                           .grace_ms = 60000,
                           .max_lateness_ms = 3600000};
    struct st_err err = {0};
    ck_assert_msg(twcs_open(&to, &tw, &err) == ST_OK, "%s", err.msg);
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
    rd_kafka_t *p = producer();
    for (int m = 0; m < NMSG; m++)
        produce_good_to(p, m, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    char gname[32];
    snprintf(gname, sizeof(gname), "%s-g", name);
    const char *group = st_test_unique(gname);
    struct ing_consumer *c = consumer(group);
    POLL_UNTIL(c, st_.retries >= 3);
    int64_t dl = st_test_now_ms() + 90000;
    struct ing_stats st;
    uint64_t flushes = 0;
    for (;;) {
        ck_assert_msg(ing_consumer_poll(c, 20, &err) == ST_OK, "%s", err.msg);
        ing_consumer_stats(c, &st);
        if (st.messages == NMSG)
            break;
        /* Flush only every few polls, so that the stage fills up behind a paused message. */
        if (st.retries > flushes) {
            ck_assert_int_eq(store_flush(twcs_store(tw)), ST_OK);
            flushes = st.retries;
        }
        ck_assert_msg(st_test_now_ms() < dl, "%" PRIu64 " messages", st.messages);
    }
    pause_ms = 0;
    ck_assert_msg(st.duplicates == 0, "duplicates %" PRIu64 ", records %" PRIu64, st.duplicates,
                  st.records);
    ck_assert_uint_eq(st.records, NMSG * NREC);
    ck_assert_uint_ge(st.retries, 3);
    for (int m = 0; m < NMSG; m++)
        for (int i = 0; i < NREC; i++)
            (void)expect_record(tw, m, i);
    int64_t applied = -1;
    ck_assert_int_eq(store_applied_offset(twcs_store(tw), 0, &applied), ST_OK);
    ck_assert_int_eq(applied, NMSG - 1);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}

START_TEST(test_backpressure_queued_behind_pause)
{
    backpressure_queued("bpq", 0);
}
END_TEST

/*
 * A member with a backlog in its decode stage loses partitions to a joining member: the
 * queued messages of the revoked partitions are not written by the first member after its
 * revoke commit (the new owner reads them from that commit). Every record is applied by
 * exactly one member — the applied counts add up to the records, every other handling is a
 * recognised duplicate — and is in exactly one of the two stores.
 */
START_TEST(test_revoke_with_queued_messages)
{
    enum { NP = 6, N = 6 * NMSG };
    prepare("rvq", NP);
    char *da = st_test_tmpdir("rvq-a"), *db = st_test_tmpdir("rvq-b");
    /* A writes slowly (an fsync of at least 15 ms per message), so that it is still working
     * through its backlog, the decode stage full, when B's join revokes partitions from it. */
    struct store_fs *fs = store_fs_sim_new();
    store_fs_sim_sync_delay(fs, 15);
    struct twcs_opts slow = {
        .store = {.dir = da, .dim = DIM, .wal_sync = STORE_SYNC_ALWAYS, .fs = fs},
        .window_ms = 3600000,
        .grace_ms = 60000,
        .max_lateness_ms = 3600000};
    struct twcs *ta, *tb = open_twcs_at(db);
    struct st_err oerr = {0};
    ck_assert_msg(twcs_open(&slow, &ta, &oerr) == ST_OK, "%s", oerr.msg);
    struct st_err err = {0};
    struct dlq_opts dopt = {.brokers = brokers};
    ck_assert_msg(dlq_open(&dopt, &dq, &err) == ST_OK, "%s", err.msg);
    const char *group = st_test_unique("rvq-g");
    rd_kafka_t *p = producer();
    for (int m = 0; m < N; m++)
        produce_good_to(p, m, m % NP);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    tw = ta;
    small_fetch = true; /* A's decode stage holds messages of several partitions */
    struct ing_consumer *a = consumer(group);
    small_fetch = false;
    poll_pair(a, NULL, 20); /* A is busy with its backlog ... */
    tw = tb;
    struct ing_consumer *b = consumer(group); /* ... when B joins and takes partitions */
    /* Until every record is applied somewhere. A message may be redelivered (a commit that
     * failed during the rebalance): then it is a recognised duplicate, never applied again. */
    int64_t dl = st_test_now_ms() + 90000;
    struct ing_stats sa, sb;
    for (;;) {
        struct st_err e = {0};
        ck_assert_msg(ing_consumer_poll(a, 5, &e) == ST_OK, "%s", e.msg);
        ck_assert_msg(ing_consumer_poll(b, 5, &e) == ST_OK, "%s", e.msg);
        ing_consumer_stats(a, &sa);
        ing_consumer_stats(b, &sb);
        if (sa.records + sb.records >= (uint64_t)N * NREC && sb.messages > 0)
            break;
        ck_assert_msg(st_test_now_ms() < dl, "records %" PRIu64 " + %" PRIu64, sa.records,
                      sb.records);
    }
    ck_assert_msg(sa.records + sb.records == (uint64_t)N * NREC,
                  "records %" PRIu64 " + %" PRIu64 " (duplicates %" PRIu64 " + %" PRIu64 ")",
                  sa.records, sb.records, sa.duplicates, sb.duplicates);
    ck_assert_uint_eq(sa.messages + sb.messages, N + sa.duplicates + sb.duplicates);
    ck_assert_int_eq(ing_consumer_close(a), ST_OK);
    ck_assert_int_eq(ing_consumer_close(b), ST_OK);
    committed_at_end(group);
    for (int m = 0; m < N; m++)
        for (int i = 0; i < NREC; i++) {
            bool in_a = has_id(ta, m, i), in_b = has_id(tb, m, i);
            ck_assert_msg(in_a != in_b, "m%d-%d: in A %d, in B %d", m, i, in_a, in_b);
        }
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(ta), ST_OK);
    ck_assert_int_eq(twcs_close(tb), ST_OK);
    store_fs_free(fs);
    st_test_rmrf(da);
    st_test_rmrf(db);
    free(da);
    free(db);
}
END_TEST

/* Back-pressure with a 1 ms pause: the paused partition resumes before the messages queued in
 * the decode stage behind the paused one are popped. Only the partition's epoch tells them
 * stale; without it the message after the paused one is written, and the paused one, read
 * again, is dropped as already handled — lost and committed past (found in review). */
START_TEST(test_backpressure_fast_resume)
{
    backpressure_queued("bpf", 1);
}
END_TEST

struct flusher {
    struct store *s;
    _Atomic bool stop;
    int failed;
};

static void *flush_every_5ms(void *arg)
{
    struct flusher *f = arg;
    while (!atomic_load(&f->stop)) {
        int rc = store_flush(f->s);
        if (rc != ST_OK)
            f->failed = rc;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/*
 * Back-pressure that ends within hold_ms is waited out in place: a store that is full all the
 * time (tiny memtables, one frozen at most) but flushed every 5 ms by another thread takes
 * every message without a single pause (a paused partition is fetched again only when
 * librdkafka's broker thread next looks, up to a second later), each message once.
 */
START_TEST(test_backpressure_held_in_place)
{
    rd_kafka_t *p = tiny_store_backlog("bh");
    struct flusher f = {.s = twcs_store(tw)};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, flush_every_5ms, &f), 0);
    const char *group = st_test_unique("bh-g");
    hold_ms = 20000;
    struct ing_consumer *c = consumer(group);
    hold_ms = 0;
    POLL_UNTIL(c, st_.records == NMSG * NREC);
    atomic_store(&f.stop, true);
    pthread_join(th, NULL);
    ck_assert_int_eq(f.failed, ST_OK);
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    ck_assert_uint_eq(st.retries, 0); /* never paused */
    ck_assert_uint_eq(st.paused_ms, 0);
    ck_assert_uint_gt(st.holds, 0); /* the store did push back */
    ck_assert_uint_eq(st.messages, NMSG);
    ck_assert_uint_eq(st.duplicates, 0);
    for (int m = 0; m < NMSG; m++)
        for (int i = 0; i < NREC; i++)
            (void)expect_record(tw, m, i);
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/*
 * Back-pressure that outlasts hold_ms (nobody flushes) pauses the partition after waiting
 * hold_ms in place once; from then on the collection's writes told to retry wait only 20 ms
 * (one such wait per 250 ms) before pausing, until one goes through (the poll thread does not
 * wait hold_ms per message on a store known to be stuck): six pauses cost one long wait, where
 * each waited hold_ms before. Once the test flushes, everything goes in, each message once.
 */
START_TEST(test_backpressure_hold_then_pause)
{
    rd_kafka_t *p = tiny_store_backlog("bhp");
    const char *group = st_test_unique("bhp-g");
    hold_ms = 400;
    struct ing_consumer *c = consumer(group);
    hold_ms = 0;
    POLL_UNTIL(c, st_.retries >= 6);
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    /* One long wait (one more after a group rejoin, which clears the mark), the rest short. */
    ck_assert_msg(st.holds_long >= 1 && st.holds_long <= 2,
                  "%" PRIu64 " long waits for %" PRIu64 " pauses", st.holds_long, st.retries);
    ck_assert_uint_ge(st.held_ms, 400);
    int64_t dl = st_test_now_ms() + 90000;
    for (;;) {
        struct st_err err = {0};
        ck_assert_msg(ing_consumer_poll(c, 50, &err) == ST_OK, "%s", err.msg);
        ing_consumer_stats(c, &st);
        if (st.records == NMSG * NREC)
            break;
        ck_assert_int_eq(store_flush(twcs_store(tw)), ST_OK);
        ck_assert_msg(st_test_now_ms() < dl, "%" PRIu64 " records", st.records);
    }
    ck_assert_uint_eq(st.messages, NMSG);
    ck_assert_uint_eq(st.duplicates, 0);
    for (int m = 0; m < NMSG; m++)
        ck_assert(has_id(tw, m, NREC - 1));
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* The 11th WAL write fails (EIO) with the decode stage full behind it: the poll returns the
 * error and keeps returning it, nothing after the failed message is written, and nothing at or
 * after it is committed. */
START_TEST(test_write_failure_sticky)
{
    prepare("wfs", 1);
    dir = st_test_tmpdir("wfs");
    open_store();
    rd_kafka_t *p = producer();
    for (int m = 0; m < NMSG; m++)
        produce_good_to(p, m, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *group = st_test_unique("wfs-g");
    struct ing_consumer *c = consumer(group);
    ck_assert_int_eq(st_fault_arm("store.wal.write", 10, 0, ST_EIO), ST_OK);
    int64_t dl = st_test_now_ms() + 60000;
    struct st_err e = {0};
    while (ing_consumer_poll(c, 20, &e) == ST_OK)
        ck_assert_msg(st_test_now_ms() < dl, "no error");
    st_fault_disarm_all();
    for (int i = 0; i < 5; i++) {
        struct st_err e2 = {0};
        ck_assert_int_ne(ing_consumer_poll(c, 20, &e2), ST_OK);
        ck_assert_int_ne(ing_consumer_poll(c, 20, NULL), ST_OK);
    }
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    ck_assert_msg(st.records == 10 * NREC, "records %" PRIu64, st.records);
    for (int m = 10; m < NMSG; m++)
        ck_assert_msg(!has_id(tw, m, 0), "message %d written after the failure", m);
    (void)ing_consumer_close(c);
    int64_t off = -1;
    st_kafka_committed(brokers, group, topic, 1, &off);
    ck_assert_msg(off <= 10, "committed %" PRId64 " past the failed message 10", off);
    rd_kafka_destroy(p);
    dlq_close(dq);
    (void)twcs_close(tw);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* The DLQ is unreachable when message 5 (garbage) is rejected, with good messages queued behind
 * it in the decode stage: every later poll fails, nothing after 5 is written, nothing at or
 * after 5 is committed. */
START_TEST(test_dlq_failure_sticky)
{
    prepare("dfs", 1);
    dir = st_test_tmpdir("dfs");
    tw = open_twcs_at(dir);
    struct st_err err = {0};
    struct dlq_opts o2 = {.brokers = "127.0.0.1:1", .timeout_ms = 1500};
    ck_assert_int_eq(dlq_open(&o2, &dq, &err), ST_OK);
    rd_kafka_t *p = producer();
    for (int m = 0; m < 10; m++)
        if (m == 5)
            produce_str(p, 0, "garbage");
        else
            produce_good_to(p, m, 0);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *group = st_test_unique("dfs-g");
    struct ing_consumer *c = consumer(group);
    int64_t dl = st_test_now_ms() + 60000;
    struct st_err e = {0};
    while (ing_consumer_poll(c, 20, &e) == ST_OK)
        ck_assert_msg(st_test_now_ms() < dl, "no error");
    for (int i = 0; i < 20; i++) {
        struct st_err e2 = {0};
        ck_assert_int_ne(ing_consumer_poll(c, 20, &e2), ST_OK);
    }
    struct ing_stats st;
    ing_consumer_stats(c, &st);
    ck_assert_msg(st.records == 5 * NREC, "records %" PRIu64, st.records);
    for (int m = 6; m < 10; m++)
        ck_assert_msg(!has_id(tw, m, 0), "message %d written after the failure", m);
    (void)ing_consumer_close(c);
    int64_t off = -1;
    st_kafka_committed(brokers, group, topic, 1, &off);
    ck_assert_msg(off <= 5, "committed %" PRId64 " past the failed message 5", off);
    rd_kafka_destroy(p);
    dlq_close(dq);
    (void)twcs_close(tw);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Is id stored in t? */
static bool has_key(struct twcs *t, const char *id)
{
    struct store_value sv = {0};
    int rc = store_get(twcs_store(t), (const uint8_t *)id, (uint32_t)strlen(id), &sv);
    free(sv.meta);
    ck_assert(rc == ST_OK || rc == ST_ENOTFOUND);
    return rc == ST_OK;
}

/*
 * §8 case 7 through Kafka, on one partition, windows of 1 h with max_lateness 1 h and a TTL of
 * 12 h on a manual clock. Window A gets ten records and a record 2.5 h after A's start moves
 * the watermark 1.5 h past A's end: a tick seals A. A record for A then is beyond
 * max_lateness: it reaches the dead-letter topic unchanged with strata.error = late (counted
 * by the consumer and by twcs), and is not stored. The clock passes A's end + TTL: a tick
 * drops A; the clock steps back, so that only A's being dropped decides the next record: one
 * for A, counted as expired, not stored, A not recreated, nothing dead-lettered, and its offset
 * is committed by the consumer's periodic round (the committed position reaches the end).
 */
START_TEST(test_late_and_dropped_through_kafka)
{
    const int64_t H = 3600000;
    prepare("late", 1);
    dir = st_test_tmpdir("late");
    struct st_clock clk;
    int64_t now = st_clock_wall_ms(NULL);
    st_clock_manual_init(&clk, now);
    int64_t a = now / H * H - 10 * H; /* window A = [a, a + H) */
    twcs_clk = &clk;
    twcs_ttl_ms = 12 * H;
    open_store();
    t_base = a + 60000; /* produce_good's records: in A */
    rd_kafka_t *p = producer();
    produce_good_to(p, 0, 0);
    produce_good_to(p, 1, 0);
    char ahead[256], late[256], gone[256];
    snprintf(ahead, sizeof(ahead),
             "{\"id\": \"ahead\", \"ts\": %" PRId64 ", \"vector\": [1,2,3,4]}", a + 2 * H + H / 2);
    snprintf(late, sizeof(late), "{\"id\": \"late\", \"ts\": %" PRId64 ", \"vector\": [1,2,3,4]}",
             a + 5 * 60000);
    snprintf(gone, sizeof(gone), "{\"id\": \"gone\", \"ts\": %" PRId64 ", \"vector\": [1,2,3,4]}",
             a + 6 * 60000);
    produce_str(p, 0, ahead);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *group = st_test_unique("late-g");
    struct ing_consumer *c = consumer(group);
    POLL_UNTIL(c, st_.records == 2 * NREC + 1);
    ck_assert_int_eq(twcs_tick(tw), ST_OK);
    bool f;
    ck_assert_int_eq(st_twcs_window(tw, a, &f).state, TWCS_SEALED);
    ck_assert(f);
    ck_assert_int_eq(twcs_watermark(tw), a + 2 * H + H / 2);

    /* Beyond max_lateness: dead-lettered as late. */
    produce_str(p, 0, late);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, st_.rejected == 1);
    struct twcs_stats ts;
    twcs_stats(tw, &ts);
    ck_assert_uint_eq(ts.rejected_late, 1);
    ck_assert(!has_key(tw, "late"));
    struct twcs_window_info wa = st_twcs_window(tw, a, &f);
    ck_assert(f && wa.state == TWCS_SEALED && wa.version == 1 && wa.records == 2 * NREC);
    struct ing_metrics im;
    ck_assert_int_eq(ing_consumer_metrics(c, &im), ST_OK);
    ck_assert_uint_eq(im.nrej, 1);
    ck_assert_str_eq(im.rej[0].reason, "late");
    ck_assert_uint_eq(im.rej[0].n, 1);
    ing_metrics_free(&im);

    /* A expires, then the clock steps back below A's end + TTL. */
    st_clock_manual_set_wall(&clk, a + H + twcs_ttl_ms + 1);
    ck_assert_int_eq(twcs_tick(tw), ST_OK);
    (void)st_twcs_window(tw, a, &f);
    ck_assert(!f);
    ck_assert(!has_id(tw, 0, 0) && !has_id(tw, 1, 0));
    twcs_stats(tw, &ts);
    ck_assert_uint_eq(ts.dropped_ttl, 1);
    st_clock_manual_set_wall(&clk, now);

    /* A record for the dropped window: counted as expired, not stored, A not recreated. */
    uint64_t commits0;
    {
        struct ing_stats is;
        ing_consumer_stats(c, &is);
        commits0 = is.commits;
    }
    produce_str(p, 0, gone);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    POLL_UNTIL(c, (twcs_stats(tw, &ts), ts.expired_records == 1));
    ck_assert(!has_key(tw, "gone"));
    (void)st_twcs_window(tw, a, &f);
    ck_assert(!f);
    /* Its offset (4, the partition's last) is committed without a commit call or a close. */
    POLL_UNTIL(c, st_.commits > commits0 && committed_sum(group) == 5);
    struct ing_stats is;
    ing_consumer_stats(c, &is);
    ck_assert_uint_eq(is.rejected, 1);
    ck_assert_uint_eq(is.records, 2 * NREC + 1); /* "gone" expired: not counted as applied */
    ck_assert_int_eq(ing_consumer_close(c), ST_OK);
    committed_at_end(group);

    /* The dead-letter topic: the late record, unchanged, with its reason and a detail. */
    expect_dead_letters("late-dlq-g", &(struct dead_letter){late, strlen(late), "late"}, 1);
    rd_kafka_destroy(p);
    dlq_close(dq);
    ck_assert_int_eq(twcs_close(tw), ST_OK);
    twcs_clk = NULL;
    twcs_ttl_ms = 0;
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("consumer");
    TCase *tc = tcase_create("consumer");
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, test_consume_exactly_once);
    tcase_add_test(tc, test_every_bad_class);
    tcase_add_test(tc, test_commit_only_durable_power_loss);
    tcase_add_test(tc, test_kill9_restart);
    tcase_add_test(tc, test_rebalance_join_leave);
    tcase_add_test(tc, test_rebalance_churn);
    tcase_add_test(tc, test_watermark_kept_across_rebalance);
    tcase_add_test(tc, test_kafka_settings);
    tcase_add_test(tc, test_pause_across_rebalance);
    tcase_add_test(tc, test_close_commit_through_rebalance);
    tcase_add_test(tc, test_commit_does_not_block_polls);
    tcase_add_test(tc, test_sync_commit_after_async_retry);
    tcase_add_test(tc, test_backpressure_pause_resume);
    tcase_add_test(tc, test_backpressure_queued_behind_pause);
    tcase_add_test(tc, test_revoke_with_queued_messages);
    tcase_add_test(tc, test_backpressure_fast_resume);
    tcase_add_test(tc, test_backpressure_held_in_place);
    tcase_add_test(tc, test_backpressure_hold_then_pause);
    tcase_add_test(tc, test_write_failure_sticky);
    tcase_add_test(tc, test_dlq_failure_sticky);
    tcase_add_test(tc, test_late_and_dropped_through_kafka);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
