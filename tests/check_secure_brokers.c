/* Authenticated and encrypted brokers (scripts/brokers --secure): strata-ingest consumes over
 * Kafka SASL_SSL, SASL_PLAINTEXT (SCRAM-SHA-512) and SSL through kafka.properties, with its
 * dead-letter producer and `strata produce --config` on the same properties, and publishes
 * sealed events to a nats-server that wants TLS, a client certificate and a password (the
 * secrets from ${ENV}); a wrong Kafka password stops the daemon with the reason within a
 * deadline and commits nothing; NATS refuses a wrong password, a missing client certificate
 * and plain text, clearly; no password reaches a log. */
#include <check.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_bus.h"
#include "st_clock.h"
#include "st_daemon_test.h"
#include "st_kafka_test.h"
#include "st_log.h"
#include "st_test.h"

#define NREC    10
#define STOP_MS 45000

/* DIR/env of the secure brokers, copied (st_test_broker's buffers are reused). */
static struct {
    char *kafka, *ssl, *sasl_ssl, *sasl, *user, *pw, *ca, *cert, *key, *nats, *nuser, *npw;
} S;

static char *env_of(const char *key)
{
    const char *v = st_test_broker(key);
    ck_assert_msg(v != NULL && *v != '\0', "%s is not set (scripts/brokers start DIR --secure)",
                  key);
    return strdup(v);
}

static void setup(void)
{
    S.kafka = env_of("STRATA_TEST_KAFKA");
    S.ssl = env_of("STRATA_TEST_KAFKA_SSL");
    S.sasl_ssl = env_of("STRATA_TEST_KAFKA_SASL_SSL");
    S.sasl = env_of("STRATA_TEST_KAFKA_SASL");
    S.user = env_of("STRATA_TEST_KAFKA_USER");
    S.pw = env_of("STRATA_TEST_KAFKA_PASSWORD");
    S.ca = env_of("STRATA_TEST_CA");
    S.cert = env_of("STRATA_TEST_TLS_CLIENT_CERT");
    S.key = env_of("STRATA_TEST_TLS_CLIENT_KEY");
    S.nats = env_of("STRATA_TEST_NATS_TLS");
    S.nuser = env_of("STRATA_TEST_NATS_USER");
    S.npw = env_of("STRATA_TEST_NATS_PASSWORD");
    st_log_set_level(ST_LOG_ERROR);
}

/* ---- NATS over TLS with credentials, from the test's side ---------------------------------- */

static struct st_bus_auth nats_auth(const char *password)
{
    return (struct st_bus_auth){.user = S.nuser,
                                .password = password,
                                .tls_ca = S.ca,
                                .tls_cert = S.cert,
                                .tls_key = S.key};
}

/* A nats.c connection with the good credentials and a JetStream context. */
static void js_open(natsConnection **nc, jsCtx **js)
{
    natsOptions *o = NULL;
    ck_assert_int_eq(natsOptions_Create(&o), NATS_OK);
    ck_assert_int_eq(natsOptions_SetURL(o, S.nats), NATS_OK);
    ck_assert_int_eq(natsOptions_SetUserInfo(o, S.nuser, S.npw), NATS_OK);
    ck_assert_int_eq(natsOptions_SetSecure(o, true), NATS_OK);
    ck_assert_int_eq(natsOptions_LoadCATrustedCertificates(o, S.ca), NATS_OK);
    ck_assert_int_eq(natsOptions_LoadCertificatesChain(o, S.cert, S.key), NATS_OK);
    natsStatus s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    ck_assert_msg(s == NATS_OK, "%s: %s", S.nats, nats_GetLastError(NULL));
    ck_assert_int_eq(natsConnection_JetStream(js, *nc, NULL), NATS_OK);
}

static void js_close(natsConnection *nc, jsCtx *js)
{
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* Deletes every stream (an earlier test's would hold the strata.* subjects). */
static void nats_clean(void)
{
    natsConnection *nc;
    jsCtx *js;
    js_open(&nc, &js);
    jsStreamNamesList *l = NULL;
    jsErrCode jerr = 0;
    if (js_StreamNames(&l, js, NULL, &jerr) == NATS_OK) {
        for (int i = 0; i < l->Count; i++)
            ck_assert_int_eq(js_DeleteStream(js, l->List[i], NULL, &jerr), NATS_OK);
        jsStreamNamesList_Destroy(l);
    }
    js_close(nc, js);
}

/* The last message on subject in stream (malloc'd body), NULL when there is none yet. */
static char *last_event(const char *stream, const char *subject)
{
    natsConnection *nc;
    jsCtx *js;
    js_open(&nc, &js);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsMsg *m = NULL;
    char *body = NULL;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK && si->State.Msgs > 0 &&
        js_GetLastMsg(&m, js, stream, subject, NULL, &jerr) == NATS_OK) {
        body = strndup(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    js_close(nc, js);
    return body;
}

/* ---- Kafka -------------------------------------------------------------------------------- */

enum proto { P_SASL_SSL, P_SASL_PLAINTEXT, P_SSL };

static const char *listener(enum proto p)
{
    return p == P_SASL_SSL ? S.sasl_ssl : p == P_SASL_PLAINTEXT ? S.sasl : S.ssl;
}

/* kafka.properties for p as YAML flow mapping; the password comes from STRATA_T_KAFKA_PW. */
static void kafka_props(enum proto p, char *out, size_t cap)
{
    char sasl[256] = "", ssl[700] = "";
    if (p != P_SSL)
        snprintf(sasl, sizeof(sasl),
                 ", sasl.mechanisms: SCRAM-SHA-512, sasl.username: %s, "
                 "sasl.password: \"${STRATA_T_KAFKA_PW}\"",
                 S.user);
    if (p != P_SASL_PLAINTEXT)
        snprintf(ssl, sizeof(ssl), ", ssl.ca.location: \"%s\"", S.ca);
    snprintf(out, cap, "{security.protocol: %s%s%s, session.timeout.ms: \"6000\"}",
             p == P_SASL_SSL         ? "SASL_SSL"
             : p == P_SASL_PLAINTEXT ? "SASL_PLAINTEXT"
                                     : "SSL",
             sasl, ssl);
}

/* The end offset of topic's partition 0 (over the plaintext listener). */
static int64_t topic_end(const char *topic)
{
    rd_kafka_t *c = st_kafka_group_client(S.kafka, "secure-watermarks");
    int64_t lo = 0, hi = 0;
    ck_assert_int_eq(rd_kafka_query_watermark_offsets(c, topic, 0, &lo, &hi, 30000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(c);
    return hi;
}

struct env {
    char topic[128], dead[128], group[128], stream[64];
    char *dir;
    char cfg[600], log[600], data[600];
};

/* Topics (made over the plaintext listener), a data dir and a config for p; kafka_pw_env and
 * nats_pw_env are the values the daemon's STRATA_T_*_PW get (see daemon_env). */
static void env_init(struct env *e, const char *tag, enum proto p)
{
    st_kafka_names(tag, e->topic, e->dead, e->group);
    snprintf(e->stream, sizeof(e->stream), "SEC%d_%s", (int)getpid(), tag);
    for (char *c = e->stream; *c; c++)
        if (*c == '-')
            *c = '_';
    st_kafka_create_topic(S.kafka, e->topic, 1);
    st_kafka_create_topic(S.kafka, e->dead, 1);
    nats_clean();
    e->dir = st_test_tmpdir(tag);
    snprintf(e->cfg, sizeof(e->cfg), "%s/strata.yaml", e->dir);
    snprintf(e->data, sizeof(e->data), "%s/data", e->dir);
    snprintf(e->log, sizeof(e->log), "%s/ingest.log", e->dir);
    char props[1200];
    kafka_props(p, props, sizeof(props));
    FILE *f = fopen(e->cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "node_id: sec-%s\n"
            "data_dir: %s\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: %s\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n  user: %s\n"
            "  password: \"${STRATA_T_NATS_PW}\"\n"
            "  tls: {ca_file: \"%s\", cert_file: \"%s\", key_file: \"%s\"}\n"
            "collections:\n  - name: docs\n    dim: 4\n    metric: l2\n    topic: %s\n"
            "    window: 1m\n    grace: 1s\n    max_lateness: 1m\n"
            "ingest: {listen: \"127.0.0.1:0\"}\n"
            "log: {level: info}\n",
            tag, e->data, listener(p), e->group, e->dead, props, S.nats, e->stream, S.nuser, S.ca,
            S.cert, S.key, e->topic);
    fclose(f);
}

static void env_free(struct env *e)
{
    st_test_rmrf(e->dir);
    free(e->dir);
}

static void start_daemon(struct st_daemon *d, const struct env *e, const char *kafka_pw,
                         const char *nats_pw)
{
    const char *bin = getenv("STRATA_INGEST");
    ck_assert_ptr_nonnull(bin);
    char kv[300], nv[300];
    snprintf(kv, sizeof(kv), "STRATA_T_KAFKA_PW=%s", kafka_pw);
    snprintf(nv, sizeof(nv), "STRATA_T_NATS_PW=%s", nats_pw);
    const char *const env[] = {kv, nv, NULL};
    const char *const argv[] = {bin, "--config", e->cfg, NULL};
    st_daemon_start(d, e->log, argv, env);
}

/* Fails the test when the file at path holds needle. */
static void assert_file_lacks(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    while (fgets(line, sizeof(line), f) != NULL)
        ck_assert_msg(strstr(line, needle) == NULL, "%s shows a secret: %s", path, line);
    fclose(f);
}

/* NREC records ten minutes old in one 1-minute window, and one at now - 1 s that moves the
 * watermark past it, as JSON lines for `strata produce`. */
static void write_window(const char *path)
{
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 600000) / 60000 * 60000;
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < NREC; i++)
        fprintf(f, "{\"id\": \"r%d\", \"ts\": %" PRId64 ", \"vector\": [%d, 1, 2, 3]}\n", i, w0 + i,
                i);
    fprintf(f, "{\"id\": \"w\", \"ts\": %" PRId64 ", \"vector\": [0, 0, 0, 1]}\n", now - 1000);
    fclose(f);
}

/* `strata produce --config` with the daemon's config (its kafka.properties, the password in
 * the environment); returns the exit status, the output in out. */
static int produce_cli(const struct env *e, const char *kafka_pw, const char *input, char *out,
                       size_t cap)
{
    const char *cli = getenv("STRATA_CLI");
    ck_assert_ptr_nonnull(cli);
    char cmd[2000];
    snprintf(cmd, sizeof(cmd),
             "STRATA_T_KAFKA_PW='%s' STRATA_T_NATS_PW=unused timeout 120 %s produce --config %s "
             "--collection docs --quiet %s 2>&1",
             kafka_pw, cli, e->cfg, input);
    return st_test_run(cmd, out, cap);
}

/* The whole path over one kind of listener: produce (CLI, same properties), consume, a bad
 * message dead-lettered by the DLQ producer, the sealed window on NATS over TLS, a clean stop
 * with every offset committed, and no secret in the log. */
static void ingest_over(enum proto p, const char *tag)
{
    struct env e;
    env_init(&e, tag, p);
    char in[700], out[4096];
    snprintf(in, sizeof(in), "%s/in.jsonl", e.dir);
    write_window(in);
    int rc = produce_cli(&e, S.pw, in, out, sizeof(out));
    ck_assert_msg(rc == 0, "strata produce over %s: exit %d: %s", listener(p), rc, out);
    /* A message no collection can take: to the dead-letter topic, through the DLQ producer
     * (sent over the plaintext listener: what matters is how the daemon reads and writes). */
    rd_kafka_t *pr = st_kafka_producer(S.kafka);
    st_kafka_send(pr, e.topic, 0, "{not json", 9);
    ck_assert_int_eq(rd_kafka_flush(pr, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(pr);

    struct st_daemon d;
    start_daemon(&d, &e, S.pw, S.npw);
    char *ev = NULL;
    ck_assert_msg(ST_WAIT_UNTIL((ev = last_event(e.stream, "strata.docs.sealed")) != NULL, 90000),
                  "no sealed event on %s (NATS over TLS) after consuming over %s", e.stream,
                  listener(p));
    ck_assert_ptr_nonnull(strstr(ev, "\"kind\":\"sealed\""));
    ck_assert_msg(strstr(ev, "\"records\":10") != NULL, "%s", ev);
    free(ev);
    ck_assert_msg(ST_WAIT_UNTIL(topic_end(e.dead) == 1, 30000), "nothing dead-lettered");
    st_daemon_stop(&d, STOP_MS);
    st_kafka_assert_committed_at_end(S.kafka, e.group, e.topic, 1);
    assert_file_lacks(e.log, S.pw);
    assert_file_lacks(e.log, S.npw);
    env_free(&e);
}

START_TEST(test_ingest_sasl_ssl)
{
    ingest_over(P_SASL_SSL, "sasl-ssl");
}
END_TEST

START_TEST(test_ingest_sasl_plaintext)
{
    ingest_over(P_SASL_PLAINTEXT, "scram");
}
END_TEST

START_TEST(test_ingest_ssl)
{
    ingest_over(P_SSL, "ssl");
}
END_TEST

/* A wrong SCRAM password: the daemon stops with the reason (not a retry loop), commits
 * nothing, and never logs the password; `strata produce` fails at once the same way. */
START_TEST(test_wrong_kafka_password)
{
    struct env e;
    env_init(&e, "badpw", P_SASL_SSL);
    char in[700], out[4096];
    snprintf(in, sizeof(in), "%s/in.jsonl", e.dir);
    write_window(in);
    int64_t t0 = st_test_now_ms();
    int rc = produce_cli(&e, "not-the-password", in, out, sizeof(out));
    ck_assert_msg(rc == 1, "exit %d: %s", rc, out);
    ck_assert_msg(strstr(out, "strata produce: kafka authentication:") != NULL, "%s", out);
    ck_assert_msg(st_test_now_ms() - t0 < 30000, "strata produce took %" PRId64 " ms",
                  st_test_now_ms() - t0);
    ck_assert_int_eq(topic_end(e.topic), 0);
    ck_assert_ptr_null(strstr(out, "not-the-password"));
    /* the daemon, with data waiting for it */
    ck_assert_int_eq(produce_cli(&e, S.pw, in, out, sizeof(out)), 0);
    struct st_daemon d;
    start_daemon(&d, &e, "not-the-password", S.npw);
    ck_assert_int_eq(st_daemon_wait_exit(&d, 60000), 1);
    ck_assert_msg(st_daemon_log_has(&d, "kafka authentication"), "no reason logged");
    ck_assert(st_daemon_log_has(&d, "SCRAM-SHA-512"));
    assert_file_lacks(e.log, "not-the-password");
    int64_t off = 0;
    st_kafka_committed(S.kafka, e.group, e.topic, 1, &off);
    ck_assert_int_eq(off, -1);
    env_free(&e);
}
END_TEST

/* A CA that did not sign the broker's certificate: the daemon stops with a TLS reason. */
START_TEST(test_untrusted_kafka_certificate)
{
    struct env e;
    env_init(&e, "badca", P_SSL);
    /* the client certificate is no CA: nothing the broker shows chains to it */
    char y[8192];
    FILE *f = fopen(e.cfg, "r");
    size_t n = fread(y, 1, sizeof(y) - 1, f);
    fclose(f);
    y[n] = '\0';
    char *at = strstr(y, S.ca);
    ck_assert_ptr_nonnull(at);
    char fixed[8192];
    snprintf(fixed, sizeof(fixed), "%.*s%s%s", (int)(at - y), y, S.cert, at + strlen(S.ca));
    f = fopen(e.cfg, "w");
    fputs(fixed, f);
    fclose(f);
    struct st_daemon d;
    start_daemon(&d, &e, S.pw, S.npw);
    ck_assert_int_eq(st_daemon_wait_exit(&d, 60000), 1);
    ck_assert_msg(st_daemon_log_has(&d, "kafka TLS"), "no TLS reason logged");
    env_free(&e);
}
END_TEST

/* NATS over TLS: the right credentials publish to JetStream; a wrong password, a missing
 * client certificate and plain text are refused with the server's reason, within the connect
 * timeout; the password never shows in an error. */
START_TEST(test_nats_tls_credentials)
{
    nats_clean();
    struct st_bus_auth good = nats_auth(S.npw);
    struct st_bus_opts o = {.url = S.nats, .auth = &good, .connect_timeout_ms = 3000};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_msg(st_bus_connect(&o, &b, &err) == ST_OK, "%s", err.msg);
    static const char *const subj[] = {"strata.*.sealed"};
    ck_assert_msg(st_bus_stream_ensure(b, "SECBUS", subj, 1, NULL, NULL, &err) == ST_OK, "%s",
                  err.msg);
    ck_assert_msg(st_bus_js_publish(b, "strata.docs.sealed", "{}", 2, "m1", 5000, &err) == ST_OK,
                  "%s", err.msg);
    st_bus_close(b);
    char *ev = last_event("SECBUS", "strata.docs.sealed");
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(ev, "{}");
    free(ev);

    /* the host name in the server's certificate: localhost is in it, another name is not */
    struct st_bus_auth named = nats_auth(S.npw);
    named.tls_server_name = "localhost";
    o.auth = &named;
    ck_assert_msg(st_bus_connect(&o, &b, &err) == ST_OK, "%s", err.msg);
    st_bus_close(b);
    named.tls_server_name = "nats.example.net";
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_msg(strstr(err.msg, "hostname") != NULL, "%s", err.msg);

    struct st_bus_auth bad = nats_auth("not-the-password");
    o.auth = &bad;
    int64_t t0 = st_test_now_ms();
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_msg(strstr(err.msg, "Authorization Violation") != NULL, "%s", err.msg);
    ck_assert_ptr_null(strstr(err.msg, "not-the-password"));
    ck_assert_int_lt(st_test_now_ms() - t0, 10000);

    struct st_bus_auth nocert = {.user = S.nuser, .password = S.npw, .tls_ca = S.ca};
    o.auth = &nocert;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_msg(err.msg[0] != '\0', "no reason");

    char plain[256];
    snprintf(plain, sizeof(plain), "nats://%s", strstr(S.nats, "://") + 3);
    struct st_bus_auth notls = {.user = S.nuser, .password = S.npw};
    o.url = plain;
    o.auth = &notls;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    /* nats.c upgrades to TLS when the server asks; without the CA that handshake fails */
    ck_assert_msg(strstr(err.msg, "SSL") != NULL, "%s", err.msg);

    /* the password in the URL instead: masked in the error */
    char inurl[300];
    snprintf(inurl, sizeof(inurl), "tls://%s:not-the-password@%s", S.nuser,
             strstr(S.nats, "://") + 3);
    struct st_bus_auth tlsonly = {.tls_ca = S.ca, .tls_cert = S.cert, .tls_key = S.key};
    o.url = inurl;
    o.auth = &tlsonly;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_ptr_null(strstr(err.msg, "not-the-password"));
    ck_assert_msg(strstr(err.msg, ":***@") != NULL, "%s", err.msg);
}
END_TEST

/* strata-ingest with a wrong NATS password: it says why it cannot publish (and keeps
 * consuming: the events wait in its outbox), without the password. */
START_TEST(test_daemon_wrong_nats_password)
{
    struct env e;
    env_init(&e, "badnats", P_SASL_SSL);
    struct st_daemon d;
    start_daemon(&d, &e, S.pw, "not-the-password");
    unsigned port = st_daemon_wait_logged_number(&d, "HTTP on port ", 30000);
    ck_assert_msg(ST_WAIT_UNTIL(st_daemon_log_has(&d, "Authorization Violation"), 30000),
                  "the refusal is not logged");
    char body[2048];
    ck_assert_int_eq(st_daemon_http_get(port, "/readyz", body, sizeof(body)), 503);
    ck_assert_msg(strstr(body, "nats") != NULL || strstr(body, "NATS") != NULL, "%s", body);
    st_daemon_stop(&d, STOP_MS);
    assert_file_lacks(e.log, "not-the-password");
    env_free(&e);
}
END_TEST

/* strata-indexer on the same config: consumes the stream over TLS with the password; with a
 * wrong one it says why it cannot (once, not every second), without the password. */
START_TEST(test_indexer_nats_tls)
{
    struct env e;
    env_init(&e, "idx", P_SASL_SSL);
    const char *bin = getenv("STRATA_INDEXER");
    ck_assert_ptr_nonnull(bin);
    const char *const argv[] = {bin, "--config", e.cfg, NULL};
    char nv[300], log2[700];
    snprintf(nv, sizeof(nv), "STRATA_T_NATS_PW=%s", S.npw);
    const char *const good[] = {"STRATA_T_KAFKA_PW=unused", nv, NULL};
    struct st_daemon d;
    st_daemon_start(&d, e.log, argv, good);
    ck_assert_msg(ST_WAIT_UNTIL(st_daemon_log_has(&d, "consuming stream="), 30000),
                  "the indexer did not consume over TLS");
    ck_assert(st_daemon_log_has(&d, "connected to NATS tls://"));
    st_daemon_stop(&d, STOP_MS);
    assert_file_lacks(e.log, S.npw);

    snprintf(log2, sizeof(log2), "%s/indexer-bad.log", e.dir);
    const char *const bad[] = {"STRATA_T_KAFKA_PW=unused", "STRATA_T_NATS_PW=not-the-password",
                               NULL};
    st_daemon_start(&d, log2, argv, bad);
    ck_assert_msg(ST_WAIT_UNTIL(st_daemon_log_has(&d, "Authorization Violation"), 30000),
                  "the refusal is not logged");
    st_daemon_stop(&d, STOP_MS);
    assert_file_lacks(log2, "not-the-password");
    char cmd[800], out[4096];
    snprintf(cmd, sizeof(cmd), "grep -c 'Authorization Violation' %s", log2);
    st_test_run(cmd, out, sizeof(out));
    ck_assert_msg(atoi(out) == 1, "logged %s times", out);
    env_free(&e);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("secure_brokers");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_nats_tls_credentials);
    tcase_add_test(tc, test_ingest_sasl_ssl);
    tcase_add_test(tc, test_ingest_sasl_plaintext);
    tcase_add_test(tc, test_ingest_ssl);
    tcase_add_test(tc, test_wrong_kafka_password);
    tcase_add_test(tc, test_untrusted_kafka_certificate);
    tcase_add_test(tc, test_daemon_wrong_nats_password);
    tcase_add_test(tc, test_indexer_nats_tls);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
