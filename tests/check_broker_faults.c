/*
 * Broker faults against real brokers of the test's own (scripts/brokers in a private
 * directory, so that stopping them disturbs no other test): Kafka stopped and started again
 * while strata-ingest consumes and a producer keeps producing; NATS down for a minute while
 * windows seal. Nothing is lost, nothing is applied twice, the backlogs drain, and the metrics
 * show the backlog while it lasts.
 */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_daemon_test.h"
#include "st_http_test.h"
#include "st_kafka_test.h"
#include "st_nats_test.h"
#include "st_test.h"

/* The private brokers, started once for the suite (in the parent, before the tests fork). */
static char g_dir[512], g_kafka[512], g_nats[512];

static void run_brokers(const char *verb)
{
    char cmd[1200], out[4096];
    snprintf(cmd, sizeof(cmd), "'%s' %s '%s' 2>&1", st_test_source("../scripts/brokers"), verb,
             g_dir);
    int rc = st_test_run(cmd, out, sizeof(out));
    ck_assert_msg(rc == 0, "scripts/brokers %s: exit %d\n%s", verb, rc, out);
}

static void brokers_up(void)
{
    char *d = st_test_tmpdir("faults-brokers");
    snprintf(g_dir, sizeof(g_dir), "%s", d);
    free(d);
    run_brokers("start");
    char envp[600];
    snprintf(envp, sizeof(envp), "%s/env", g_dir);
    FILE *f = fopen(envp, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "STRATA_TEST_KAFKA=", 18) == 0)
            snprintf(g_kafka, sizeof(g_kafka), "%s", line + 18);
        else if (strncmp(line, "STRATA_TEST_NATS=", 17) == 0)
            snprintf(g_nats, sizeof(g_nats), "%s", line + 17);
    }
    fclose(f);
    ck_assert(g_kafka[0] != '\0' && g_nats[0] != '\0');
}

static void brokers_down(void)
{
    run_brokers("stop");
    st_test_rmrf(g_dir);
}

struct env {
    char topic[128], dead[128], group[128], stream[64];
    char *dir;
    char cfg[600], log[600];
};

static void env_init(struct env *e, const char *tag, const char *nats, const char *window)
{
    st_kafka_names(tag, e->topic, e->dead, e->group);
    snprintf(e->stream, sizeof(e->stream), "F%d%s", (int)getpid(), tag);
    st_kafka_create_topic(g_kafka, e->topic, 2);
    st_kafka_create_topic(g_kafka, e->dead, 1);
    e->dir = st_test_tmpdir(tag);
    snprintf(e->cfg, sizeof(e->cfg), "%s/strata.yaml", e->dir);
    snprintf(e->log, sizeof(e->log), "%s/ingest.log", e->dir);
    FILE *f = fopen(e->cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "node_id: faults\n"
            "data_dir: %s/data\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: {session.timeout.ms: \"6000\"}\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n"
            "collections:\n  - name: docs\n    dim: 4\n    metric: l2\n    topic: %s\n"
            "    window: %s\n    grace: 1s\n    max_lateness: 1h\n"
            "ingest: {listen: \"127.0.0.1:0\"}\n"
            "log: {level: info}\n",
            e->dir, g_kafka, e->group, e->dead, nats, e->stream, e->topic, window);
    fclose(f);
}

static unsigned start_ingest(struct st_daemon *d, const struct env *e)
{
    const char *bin = getenv("STRATA_INGEST");
    ck_assert_ptr_nonnull(bin);
    const char *const argv[] = {bin, "--config", e->cfg, NULL};
    st_daemon_start(d, e->log, argv, NULL);
    unsigned port = st_daemon_wait_logged_number(d, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(d, port, "/readyz", 60000);
    return port;
}

static void produce(rd_kafka_t *p, const struct env *e, int from, int to, int64_t ts)
{
    char json[256];
    for (int k = from; k < to; k++) {
        snprintf(json, sizeof(json),
                 "{\"collection\": \"docs\", \"id\": \"r%d\", \"ts\": %" PRId64
                 ", \"vector\": [%d, 1, 2, 3]}",
                 k, ts + k % 1000, k);
        st_kafka_send(p, e->topic, k % 2, json, strlen(json));
    }
}

/* Every id r<from>..r<to-1> is readable at ingest with its own vector. */
static void assert_all_there(unsigned port, int from, int to)
{
    for (int k = from; k < to; k++) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/collections/docs/records/r%d", k);
        struct st_test_resp r = st_test_http_port(port, path, NULL, NULL);
        ck_assert_msg(r.status == 200, "r%d: HTTP %ld", k, r.status);
        json_t *j = json_loads(r.body, 0, NULL);
        ck_assert_double_eq(json_number_value(json_array_get(json_object_get(j, "vector"), 0)),
                            (double)k);
        json_decref(j);
        free(r.body);
    }
}

#define RECORDS_DOCS "strata_ingest_records_total{collection=\"docs\"}"

/*
 * Kafka stops (SIGTERM, data kept) while ingest consumes and the producer goes on producing
 * into its buffer; Kafka starts again. Every record is applied exactly once (the applied-records
 * counter equals the distinct records produced), each is readable with its vector, ingest never
 * exits, and its committed offsets reach the end of every partition.
 */
START_TEST(test_kafka_restart_mid_ingest)
{
    struct env e;
    env_init(&e, "kafka-restart", g_nats, "1h");
    struct st_daemon ing;
    unsigned port = start_ingest(&ing, &e);
    int64_t ts = st_clock_wall_ms(NULL) - 600000;
    rd_kafka_t *p = st_kafka_producer_idempotent(g_kafka);
    produce(p, &e, 0, 300, ts);
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert(ST_WAIT_UNTIL(st_test_metric_port(port, RECORDS_DOCS) == 300, 60000));

    run_brokers("kafka-stop");
    produce(p, &e, 300, 600, ts); /* buffered by the producer until the broker is back */
    /* ingest notices (its consumer's librdkafka lines, through its logger) and keeps serving */
    ck_assert(ST_WAIT_UNTIL(st_daemon_log_has(&ing, "ingest: librdkafka"), 60000));
    ck_assert_double_eq(st_test_metric_port(port, RECORDS_DOCS), 300);
    st_daemon_assert_clean(&ing);

    run_brokers("kafka-start");
    ck_assert_int_eq(rd_kafka_flush(p, 120000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    ck_assert_msg(ST_WAIT_UNTIL(st_test_metric_port(port, RECORDS_DOCS) >= 600, 120000),
                  "applied %g of 600", st_test_metric_port(port, RECORDS_DOCS));
    assert_all_there(port, 0, 600);
    ck_assert_double_eq(st_test_metric_port(port, RECORDS_DOCS), 600); /* none applied twice */
    st_daemon_stop(&ing, 60000); /* commits everything handled */
    st_kafka_assert_committed_at_end(g_kafka, e.group, e.topic, 2);
    st_test_rmrf(e.dir);
    free(e.dir);
}
END_TEST

/* Messages of stream: its state's message count. */
static uint64_t stream_msgs(const char *url, const char *stream)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    st_nats_js_open(url, &nc, &js);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "stream %s: %s (%d)", stream, natsStatus_GetText(s), (int)jerr);
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    st_nats_js_close(nc, js);
    return n;
}

#define OUTBOX_DOCS "strata_outbox_pending{collection=\"docs\"}"

/*
 * NATS (a server of the test's own, with its JetStream directory) is killed; three windows
 * seal while it is down and stays down for a minute: the seals are not held up, the outbox
 * metric shows the three events waiting, ingest keeps running. NATS comes back on the same
 * port and store: the outbox drains, and the stream holds exactly one sealed event per window.
 */
START_TEST(test_nats_down_while_windows_seal)
{
    char pidf[600];
    snprintf(pidf, sizeof(pidf), "%s/kafka.pid", g_dir);
    if (access(pidf, F_OK) != 0)
        run_brokers("kafka-start"); /* an earlier test failed with Kafka stopped */
    struct st_own_nats n = {0};
    st_own_nats_start(&n);
    struct env e;
    env_init(&e, "nats-down", n.url, "1m");
    struct st_daemon ing;
    unsigned port = start_ingest(&ing, &e);
    ck_assert(ST_WAIT_UNTIL(st_test_metric_port(port, OUTBOX_DOCS) == 0, 30000));
    uint64_t before = stream_msgs(n.url, e.stream);

    st_own_nats_kill(&n);
    int64_t down_at = st_test_now_ms();
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 20 * 60000) / 60000 * 60000;
    rd_kafka_t *p = st_kafka_producer_idempotent(g_kafka);
    for (int w = 0; w < 3; w++)
        produce(p, &e, w * 100, w * 100 + 50, w0 + (int64_t)w * 60000);
    char json[256];
    for (int part = 0; part < 2; part++) { /* move the watermark past the three windows */
        snprintf(json, sizeof(json),
                 "{\"collection\": \"docs\", \"id\": \"wm%d\", \"ts\": %" PRId64
                 ", \"vector\": [0, 0, 0, 0]}",
                 part, now - 1000);
        st_kafka_send(p, e.topic, part, json, strlen(json));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    /* The windows seal without NATS; their events wait in the outbox, visible in /metrics. */
    ck_assert_msg(ST_WAIT_UNTIL(st_test_metric_port(port, OUTBOX_DOCS) == 3, 60000),
                  "outbox pending %g", st_test_metric_port(port, OUTBOX_DOCS));
    assert_all_there(port, 0, 50);
    /* A minute down, counted from the kill: ingest keeps running, the events keep waiting. */
    while (st_test_now_ms() - down_at < 60000) {
        st_daemon_assert_clean(&ing);
        ck_assert_double_eq(st_test_metric_port(port, OUTBOX_DOCS), 3);
        st_test_sleep_ms(500);
    }
    st_own_nats_start(&n); /* same port, same JetStream directory */
    ck_assert_msg(ST_WAIT_UNTIL(st_test_metric_port(port, OUTBOX_DOCS) == 0, 120000),
                  "outbox pending %g", st_test_metric_port(port, OUTBOX_DOCS));
    ck_assert_uint_eq(stream_msgs(n.url, e.stream), before + 3); /* each once */
    st_daemon_stop(&ing, 60000);
    st_kafka_assert_committed_at_end(g_kafka, e.group, e.topic, 2);
    st_own_nats_free(&n);
    st_test_rmrf(e.dir);
    free(e.dir);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("broker_faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, brokers_up, brokers_down);
    tcase_add_test(tc, test_nats_down_while_windows_seal);
    tcase_add_test(tc, test_kafka_restart_mid_ingest);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
