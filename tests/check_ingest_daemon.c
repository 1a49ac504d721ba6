/* strata-ingest as a process, against the real Kafka broker and nats-server: it consumes,
 * seals, publishes the sealed window on JetStream, and on SIGTERM commits and exits 0. */
#include <check.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_kafka_test.h"
#include "st_nats_test.h"
#include "st_test.h"
#include "store.h"

#define NMSG 12

static uint64_t stream_msgs(const char *url, const char *stream, const char *subject)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    NATS_OK(natsConnection_ConnectTo(&nc, url));
    NATS_OK(natsConnection_JetStream(&js, nc, NULL));
    jsStreamInfo *si = NULL;
    uint64_t n = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK) {
        n = si->State.Msgs;
        if (n > 0) {
            natsMsg *m = NULL;
            NATS_OK(js_GetLastMsg(&m, js, stream, subject, NULL, &jerr));
            ck_assert_ptr_nonnull(strstr(natsMsg_GetData(m), "\"kind\":\"sealed\""));
            natsMsg_Destroy(m);
        }
        jsStreamInfo_Destroy(si);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return n;
}

START_TEST(test_daemon_consume_seal_publish_stop)
{
    const char *brokers = st_test_broker("STRATA_TEST_KAFKA");
    const char *nats = st_test_broker("STRATA_TEST_NATS");
    const char *bin = getenv("STRATA_INGEST");
    ck_assert_ptr_nonnull(bin);
    char topic[128], dead[128], group[128], stream[64];
    snprintf(topic, sizeof(topic), "%s", st_test_unique("d-docs"));
    snprintf(dead, sizeof(dead), "%s", st_test_unique("d-dlq"));
    snprintf(group, sizeof(group), "%s", st_test_unique("d-g"));
    snprintf(stream, sizeof(stream), "D%d", (int)getpid());
    st_kafka_create_topic(brokers, topic, 2);
    st_kafka_create_topic(brokers, dead, 1);
    char *dir = st_test_tmpdir("daemon");
    char cfgp[600], data[600];
    snprintf(cfgp, sizeof(cfgp), "%s/strata.yaml", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    FILE *f = fopen(cfgp, "w");
    fprintf(f,
            "node_id: ingest-t\n"
            "data_dir: %s\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: {session.timeout.ms: \"6000\"}\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n"
            "collections:\n  - name: docs\n    dim: 4\n    metric: l2\n    topic: %s\n"
            "    window: 1m\n    grace: 1s\n    max_lateness: 1m\n"
            "ingest: {listen: \"127.0.0.1:7070\"}\n"
            "log: {level: warning}\n",
            data, brokers, group, dead, nats, stream, topic);
    fclose(f);

    /* Bad config: FILE:LINE:COL and exit 2, nothing started. */
    char bad[600], cmd[1400], outbuf[2048];
    snprintf(bad, sizeof(bad), "%s/bad.yaml", dir);
    f = fopen(bad, "w");
    fprintf(f, "node_id: x\ndata_dir: /tmp\ncollections:\n  - name: docs\n    dim: zero\n");
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s --config %s --check-config 2>&1", bin, bad);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 2);
    ck_assert_msg(strstr(outbuf, "bad.yaml:5:") != NULL, "%s", outbuf);
    snprintf(cmd, sizeof(cmd), "%s --config %s 2>&1", bin, bad);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 2);

    /* Records 10 minutes old in one 1-minute window, then one that moves the watermark on. */
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 600000) / 60000 * 60000;
    char es[256];
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    ck_assert_int_eq(rd_kafka_conf_set(pc, "bootstrap.servers", brokers, es, sizeof(es)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, es, sizeof(es));
    for (int m = 0; m <= NMSG; m++) {
        char json[256];
        int64_t ts = m < NMSG ? w0 + m : now - 1000;
        snprintf(json, sizeof(json),
                 "{\"collection\": \"docs\", \"id\": \"r%d\", \"ts\": %" PRId64
                 ", \"vector\": [%d, 1, 2, 3]}",
                 m, ts, m);
        /* every partition must pass the window's end for the watermark to move */
        for (int part = 0; part < 2; part++) {
            if (m < NMSG && part != m % 2)
                continue;
            if (m == NMSG)
                snprintf(json, sizeof(json),
                         "{\"collection\": \"docs\", \"id\": \"w%d\", \"ts\": %" PRId64
                         ", \"vector\": [0, 0, 0, 1]}",
                         part, ts);
            ck_assert_int_eq(
                rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
                                  RD_KAFKA_V_VALUE(json, strlen(json)),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(bin, bin, "--config", cfgp, (char *)NULL);
        _exit(127);
    }
    /* The sealed window reaches JetStream. */
    ck_assert_msg(ST_WAIT_UNTIL(stream_msgs(nats, stream, "strata.docs.sealed") >= 1, 90000),
                  "no sealed event on %s", stream);
    /* SIGTERM: commit, leave, exit 0. */
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    int status = 0;
    ck_assert(ST_WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid, 60000));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x", status);

    /* Offsets committed to the end; every record in the store. */
    st_kafka_assert_committed_at_end(brokers, group, topic, 2);
    char sdir[700];
    snprintf(sdir, sizeof(sdir), "%s/docs", data);
    struct store_opts so = {.dir = sdir, .dim = 4, .read_only = true};
    struct store *s;
    struct st_err err = {0};
    ck_assert_msg(store_open(&so, &s, &err) == ST_OK, "%s", err.msg);
    for (int m = 0; m < NMSG; m++) {
        char id[16];
        float v[4];
        snprintf(id, sizeof(id), "r%d", m);
        struct store_value sv = {.vec = v};
        ck_assert_msg(store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &sv) == ST_OK, "%s",
                      id);
        ck_assert(v[0] == (float)m);
        free(sv.meta);
    }
    ck_assert_int_eq(store_close(s), ST_OK);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("ingest_daemon");
    TCase *tc = tcase_create("ingest_daemon");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_daemon_consume_seal_publish_stop);
    suite_add_tcase(su, tc);
    int rc = st_test_run_suite(su);
    nats_Close();
    return rc;
}
