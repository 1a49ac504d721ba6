/* strata-ingest as a process, against the real Kafka broker and nats-server: it consumes,
 * seals, publishes the sealed window on JetStream, serves its HTTP API (probes, metrics,
 * reads, exact search of fresh data, segment files), and on SIGTERM commits and exits 0. */
#include <check.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rec_format.h"
#include "st_clock.h"
#include "st_daemon_test.h"
#include "st_http_test.h"
#include "st_kafka_test.h"
#include "st_nats_test.h"
#include "st_test.h"
#include "store.h"

#define NMSG 12

/* ---- helpers ------------------------------------------------------------------------------ */

struct env {
    const char *brokers, *nats, *bin;
    char topic[128], dead[128], group[128], stream[64];
    char *dir;
    char cfg[600], data[600], log[600];
    char node[64]; /* node_id */
};

/* Set before env_init*: the next config's node_id (default ingest-t) and extra keys of its
 * ingest: section (e.g. ", announce_interval: 300ms"). Cleared by env_init*. */
static const char *next_node, *next_ingest_keys;

/* Topics, a data dir and a config; with_token: bearer auth with token "t0ken" and a 2 KiB
 * body cap. */
static void env_init_nats(struct env *e, const char *tag, bool with_token, const char *nats)
{
    e->brokers = st_test_broker("STRATA_TEST_KAFKA");
    e->nats = nats != NULL ? nats : st_test_broker("STRATA_TEST_NATS");
    e->bin = getenv("STRATA_INGEST");
    snprintf(e->node, sizeof(e->node), "%s", next_node != NULL ? next_node : "ingest-t");
    const char *ingest_keys = next_ingest_keys != NULL ? next_ingest_keys : "";
    next_node = next_ingest_keys = NULL;
    ck_assert_ptr_nonnull(e->bin);
    st_kafka_names(tag, e->topic, e->dead, e->group);
    snprintf(e->stream, sizeof(e->stream), "%c%d%s", tag[0] & ~0x20, (int)getpid(), tag);
    for (char *c = e->stream; *c; c++)
        if (*c == '-')
            *c = '_';
    st_kafka_create_topic(e->brokers, e->topic, 2);
    st_kafka_create_topic(e->brokers, e->dead, 1);
    st_nats_clean(e->nats);
    e->dir = st_test_tmpdir(tag);
    snprintf(e->cfg, sizeof(e->cfg), "%s/strata.yaml", e->dir);
    snprintf(e->data, sizeof(e->data), "%s/data", e->dir);
    snprintf(e->log, sizeof(e->log), "%s/ingest.log", e->dir);
    char extra[800] = "";
    if (with_token) {
        char tp[700];
        snprintf(tp, sizeof(tp), "%s/token", e->dir);
        FILE *tf = fopen(tp, "w");
        ck_assert_ptr_nonnull(tf);
        fprintf(tf, "t0ken\n");
        fclose(tf);
        snprintf(extra, sizeof(extra), "http: {auth_token_file: \"%s\", max_body: 2KiB}\n", tp);
    }
    FILE *f = fopen(e->cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "node_id: %s\n"
            "data_dir: %s\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: {session.timeout.ms: \"6000\"}\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n"
            "collections:\n  - name: docs\n    dim: 4\n    metric: l2\n    topic: %s\n"
            "    window: 1m\n    grace: 1s\n    max_lateness: 1m\n"
            "ingest: {listen: \"127.0.0.1:0\"%s}\n"
            "log: {level: notice}\n%s",
            e->node, e->data, e->brokers, e->group, e->dead, e->nats, e->stream, e->topic,
            ingest_keys, extra);
    fclose(f);
}

static void env_init(struct env *e, const char *tag, bool with_token)
{
    env_init_nats(e, tag, with_token, NULL);
}

static void env_free(struct env *e)
{
    st_test_rmrf(e->dir);
    free(e->dir);
}

/*
 * NMSG records r0..r{NMSG-1} 10 minutes old in one 1-minute window (vector [m, 1, 2, 3]),
 * then one per partition at now - 1 s that moves the watermark past it.
 */
static int64_t produce_window(const struct env *e)
{
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 600000) / 60000 * 60000;
    rd_kafka_t *p = st_kafka_producer(e->brokers);
    char json[256];
    for (int m = 0; m < NMSG; m++) {
        snprintf(json, sizeof(json),
                 "{\"collection\": \"docs\", \"id\": \"r%d\", \"ts\": %" PRId64
                 ", \"vector\": [%d, 1, 2, 3], \"meta\": {\"n\": %d}}",
                 m, w0 + m, m, m);
        st_kafka_send(p, e->topic, m % 2, json, strlen(json));
    }
    /* every partition must pass the window's end for the watermark to move */
    for (int part = 0; part < 2; part++) {
        snprintf(json, sizeof(json),
                 "{\"collection\": \"docs\", \"id\": \"w%d\", \"ts\": %" PRId64
                 ", \"vector\": [0, 0, 0, 1]}",
                 part, now - 1000);
        st_kafka_send(p, e->topic, part, json, strlen(json));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    return w0;
}

static void produce_one(const struct env *e, int part, const char *json)
{
    rd_kafka_t *p = st_kafka_producer(e->brokers);
    st_kafka_send(p, e->topic, part, json, strlen(json));
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

/* The daemon with stderr in e->log; env: extra "KEY=VALUE" entries or NULL. Every way it
 * ends checks its exit and its stderr for sanitizer reports (st_daemon_test.h). */
static void start_daemon_env(struct st_daemon *d, const struct env *e, const char *const env[])
{
    const char *const argv[] = {e->bin, "--config", e->cfg, NULL};
    st_daemon_start(d, e->log, argv, env);
}

static void start_daemon(struct st_daemon *d, const struct env *e)
{
    start_daemon_env(d, e, NULL);
}

/* Within the default shutdown_timeout (30 s) plus the sanitizers' exit-time work. */
#define STOP_MS 45000

/* The last message on subject (its body, malloc'd), NULL when there is none yet. */
static char *last_event(const char *url, const char *stream, const char *subject)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    natsMsg *m = NULL;
    char *body = NULL;
    jsStreamInfo *si = NULL;
    /* Ask for the last message only once the stream holds one: Debian's nats-server 2.9
     * panics (nil dereference in jsMsgGetRequest) on a get from a stream being created. */
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) == NATS_OK && si->State.Msgs > 0 &&
        js_GetLastMsg(&m, js, stream, subject, NULL, &jerr) == NATS_OK) {
        body = strndup(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    st_nats_js_close(nc, js);
    return body;
}

static long http_status(const char *url, const char *token, const char *body)
{
    struct st_test_resp r = st_test_http(url, token, body);
    free(r.body);
    return r.status;
}

/* The store at <data_dir>/<rel>, read-only (after the daemon stopped). */
static struct store *open_store_at(const struct env *e, const char *rel)
{
    char sdir[700];
    snprintf(sdir, sizeof(sdir), "%s/%s", e->data, rel);
    struct store_opts so = {.dir = sdir, .dim = 4, .read_only = true};
    struct store *s;
    struct st_err err = {0};
    ck_assert_msg(store_open(&so, &s, &err) == ST_OK, "%s", err.msg);
    return s;
}

/* The daemon's store of collection docs (SPEC.md §6 layout), read-only. */
static struct store *open_daemon_store(const struct env *e)
{
    return open_store_at(e, "ingest/docs");
}

/* The status of base + path. */
static long status_of(const char *base, const char *path, const char *token, const char *body)
{
    char url[600];
    snprintf(url, sizeof(url), "%s%s", base, path);
    return http_status(url, token, body);
}

/* ---- tests -------------------------------------------------------------------------------- */

START_TEST(test_daemon_consume_seal_publish_stop)
{
    struct env e;
    env_init(&e, "daemon", false);

    /* Bad config: FILE:LINE:COL and exit 2, nothing started. */
    char bad[600], cmd[1400], outbuf[2048];
    snprintf(bad, sizeof(bad), "%s/bad.yaml", e.dir);
    FILE *f = fopen(bad, "w");
    fprintf(f, "node_id: x\ndata_dir: /tmp\ncollections:\n  - name: docs\n    dim: zero\n");
    fclose(f);
    snprintf(cmd, sizeof(cmd), "%s --config %s --check-config 2>&1", e.bin, bad);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 2);
    ck_assert_msg(strstr(outbuf, "bad.yaml:5:") != NULL, "%s", outbuf);
    snprintf(cmd, sizeof(cmd), "%s --config %s 2>&1", e.bin, bad);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 2);
    /* --version, --help: exit 0; a stray argument: usage and exit 2. */
    snprintf(cmd, sizeof(cmd), "%s --version", e.bin);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 0);
    ck_assert_msg(strncmp(outbuf, "strata-ingest ", 14) == 0, "%s", outbuf);
    snprintf(cmd, sizeof(cmd), "%s --help", e.bin);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 0);
    ck_assert_ptr_nonnull(strstr(outbuf, "usage: strata-ingest"));
    snprintf(cmd, sizeof(cmd), "%s --frobnicate 2>&1", e.bin);
    ck_assert_int_eq(st_test_run(cmd, outbuf, sizeof(outbuf)), 2);
    ck_assert_ptr_nonnull(strstr(outbuf, "usage: strata-ingest"));

    produce_window(&e);
    struct st_daemon d;
    start_daemon(&d, &e);
    /* The sealed window reaches JetStream. */
    char *ev = NULL;
    ck_assert_msg(
        ST_WAIT_UNTIL((ev = last_event(e.nats, e.stream, "strata.docs.sealed")) != NULL, 90000),
        "no sealed event on %s", e.stream);
    ck_assert_ptr_nonnull(strstr(ev, "\"kind\":\"sealed\""));
    free(ev);
    /* SIGTERM: commit, leave, exit 0. */
    st_daemon_stop(&d, STOP_MS);

    /* Offsets committed to the end; every record in the store. */
    st_kafka_assert_committed_at_end(e.brokers, e.group, e.topic, 2);
    struct store *s = open_daemon_store(&e);
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
    env_free(&e);
}
END_TEST

/* Whether a search's closest hit is id at distance dist. */
static bool top_hit_is(const char *url, const char *token, const char *body, const char *id,
                       double dist)
{
    struct st_test_resp r = st_test_http(url, token, body);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *h0 = json_array_get(json_object_get(j, "hits"), 0);
    bool ok = r.status == 200 && h0 != NULL &&
              strcmp(json_string_value(json_object_get(h0, "id")), id) == 0 &&
              json_number_value(json_object_get(h0, "distance")) == dist;
    json_decref(j);
    free(r.body);
    return ok;
}

static json_t *json_of(const struct st_test_resp *r)
{
    json_t *j = json_loads(r->body, 0, NULL);
    ck_assert_msg(j != NULL, "not JSON: %s", r->body);
    return j;
}

START_TEST(test_daemon_http)
{
    struct env e;
    env_init(&e, "http", true);
    int64_t w0 = produce_window(&e);
    /* A bad message between good ones: dead-lettered and counted by reason. */
    produce_one(&e, 0, "{\"collection\": \"docs\", \"id\": \"bad\", \"vector\": [1, 2]}");

    struct st_daemon d;
    start_daemon(&d, &e);
    unsigned port = st_daemon_wait_logged_number(&d, "HTTP on port ", 60000);
    char base[64], url[512];
    snprintf(base, sizeof(base), "http://127.0.0.1:%u", port);
    const char *tok = "t0ken";

    /* Probes need no token; /v1 does. */
    ck_assert_int_eq(status_of(base, "/healthz", NULL, NULL), 200);
    snprintf(url, sizeof(url), "%s/readyz", base);
    ck_assert_msg(ST_WAIT_UNTIL(http_status(url, NULL, NULL) == 200, 60000), "never ready");
    /* Every thread of ours is named for top -H, perf and /proc (operators profile by role). */
    static const char *const threads[] = {"st-wal-sync", "st-flush", "st-vlog-write", "st-reclaim",
                                          "st-tick",     "ing-pipe", "ing-announce",  "ing-outbox"};
    for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++)
        ck_assert_msg(ST_WAIT_UNTIL(st_daemon_has_thread(&d, threads[i]), 10000),
                      "no thread named %s", threads[i]);
    ck_assert(!st_daemon_has_thread(&d, "no-such-thread"));
    static const char *const own[] = {"/v1/segments/docs/000001.seg", NULL};
    st_test_http_auth_walk(port, "docs", tok, own);
    snprintf(url, sizeof(url), "%s/v1/collections", base);
    struct st_test_resp r = st_test_http(url, tok, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"name\":\"docs\""));
    free(r.body);

    /* The sealed event names a segment URL on this node; the file is served with the
     * checksum the event carries, and it is the complete window. */
    char *ev = NULL;
    ck_assert_msg(
        ST_WAIT_UNTIL((ev = last_event(e.nats, e.stream, "strata.docs.sealed")) != NULL, 90000),
        "no sealed event");
    json_t *evj = json_loads(ev, 0, NULL);
    ck_assert_ptr_nonnull(evj);
    const char *seg_url = json_string_value(json_object_get(evj, "segment"));
    ck_assert_ptr_nonnull(seg_url);
    ck_assert_msg(strncmp(seg_url, base, strlen(base)) == 0, "%s vs %s", seg_url, base);
    ck_assert_int_eq(json_integer_value(json_object_get(evj, "start")), w0);
    r = st_test_http(seg_url, tok, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.len, (size_t)json_integer_value(json_object_get(evj, "bytes")));
    ck_assert_uint_eq(strtoull(r.checksum, NULL, 10),
                      (uint64_t)json_integer_value(json_object_get(evj, "checksum")));
    char segp[800];
    snprintf(segp, sizeof(segp), "%s/fetched.seg", e.dir);
    FILE *f = fopen(segp, "wb");
    ck_assert_uint_eq(fwrite(r.body, 1, r.len, f), r.len);
    fclose(f);
    free(r.body);
    struct store_segment *g;
    struct st_err err = {0};
    ck_assert_msg(store_segment_open_file(segp, &g, &err) == ST_OK, "%s", err.msg);
    ck_assert_msg(store_segment_verify(g, &err) == ST_OK, "%s", err.msg);
    struct store_segment_info gi;
    store_segment_info(g, &gi);
    ck_assert_uint_eq(gi.count, NMSG);
    ck_assert_uint_eq(gi.checksum, (uint32_t)json_integer_value(json_object_get(evj, "checksum")));
    store_segment_unref(g);
    json_decref(evj);
    free(ev);
    ck_assert_int_eq(status_of(base, "/v1/segments/docs/999999.seg", tok, NULL), 404);
    ck_assert_int_eq(status_of(base, "/v1/segments/docs/..%2F..%2FMANIFEST-000001", tok, NULL),
                     404);
    ck_assert_int_eq(status_of(base, "/v1/segments/nope/000001.seg", tok, NULL), 404);

    /* Get by id: the newest version with its meta; 404 for an unknown id or collection. */
    snprintf(url, sizeof(url), "%s/v1/collections/docs/records/r3", base);
    r = st_test_http(url, tok, NULL);
    ck_assert_int_eq(r.status, 200);
    json_t *j = json_of(&r);
    ck_assert_double_eq(json_number_value(json_array_get(json_object_get(j, "vector"), 0)), 3.0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "meta"), "n")), 3);
    json_decref(j);
    free(r.body);
    ck_assert_int_eq(status_of(base, "/v1/collections/docs/records/nope", tok, NULL), 404);
    ck_assert_int_eq(status_of(base, "/v1/collections/nope/records/r3", tok, NULL), 404);

    /* Windows: the sealed one is listed. */
    snprintf(url, sizeof(url), "%s/v1/collections/docs/windows", base);
    r = st_test_http(url, tok, NULL);
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    bool sealed_listed = false;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *w = json_array_get(j, i);
        if (json_integer_value(json_object_get(w, "start")) == w0)
            sealed_listed = strcmp(json_string_value(json_object_get(w, "state")), "sealed") == 0 &&
                            json_integer_value(json_object_get(w, "records")) == NMSG;
    }
    ck_assert_msg(sealed_listed, "%s", r.body);
    json_decref(j);
    free(r.body);

    /* Search: exact over everything this node holds. */
    char surl[512];
    snprintf(surl, sizeof(surl), "%s/v1/collections/docs/search", base);
    r = st_test_http(surl, tok, "{\"vector\": [5, 1, 2, 3], \"k\": 2}");
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    json_t *hits = json_object_get(j, "hits");
    ck_assert_uint_eq(json_array_size(hits), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(hits, 0), "id")), "r5");
    ck_assert_double_eq(json_number_value(json_object_get(json_array_get(hits, 0), "distance")),
                        0.0);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(json_array_get(hits, 0), "meta"), "n")),
        5);
    ck_assert_int_ge(json_integer_value(json_object_get(j, "fresh_records_scanned")), NMSG);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "fresh_records_pruned")), 0);
    json_decref(j);
    free(r.body);
    /* The sealed window listed as indexed by the caller: skipped, only fresh data answers. */
    char body[512];
    snprintf(body, sizeof(body),
             "{\"vector\": [5, 1, 2, 3], \"k\": 3, \"indexed\": [{\"start\": %" PRId64
             ", \"version\": 1}]}",
             w0);
    r = st_test_http(surl, tok, body);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\"r") == NULL, "sealed records returned: %s", r.body);
    free(r.body);
    /* A time range before every window: pruned, nothing scanned; the counters move by the
     * answer's counts exactly. */
    char murl[512];
    snprintf(murl, sizeof(murl), "%s/metrics", base);
    static const char *const pruned_series =
        "strata_search_records_total{collection=\"docs\",outcome=\"pruned\"}";
    static const char *const scanned_series =
        "strata_search_records_total{collection=\"docs\",outcome=\"scanned\"}";
    r = st_test_http(murl, NULL, NULL);
    double pruned0 = st_test_metric(r.body, pruned_series);
    double scanned0 = st_test_metric(r.body, scanned_series);
    free(r.body);
    ck_assert(scanned0 >= NMSG); /* the searches above */
    snprintf(body, sizeof(body), "{\"vector\": [5, 1, 2, 3], \"to_ts\": %" PRId64 "}", w0 - 1);
    r = st_test_http(surl, tok, body);
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "hits")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "fresh_records_scanned")), 0);
    json_int_t pruned = json_integer_value(json_object_get(j, "fresh_records_pruned"));
    ck_assert_int_ge(pruned, NMSG); /* the sealed window's records, skipped unread */
    json_decref(j);
    free(r.body);
    r = st_test_http(murl, NULL, NULL);
    ck_assert_double_eq(st_test_metric(r.body, pruned_series) - pruned0, (double)pruned);
    ck_assert_double_eq(st_test_metric(r.body, scanned_series), scanned0);
    free(r.body);
    /* Strong consistency: a record is searchable as soon as it is applied (memtable). */
    char json[256];
    snprintf(json, sizeof(json),
             "{\"collection\": \"docs\", \"id\": \"fresh\", \"ts\": %" PRId64
             ", \"vector\": [100, 100, 100, 100]}",
             st_clock_wall_ms(NULL));
    produce_one(&e, 1, json);
    snprintf(url, sizeof(url), "%s/v1/collections/docs/records/fresh", base);
    ck_assert(ST_WAIT_UNTIL(http_status(url, tok, NULL) == 200, 30000));
    r = st_test_http(surl, tok,
                     "{\"vector\": [99, 99, 99, 99], \"k\": 1, \"include_vector\": true}");
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    json_t *h0 = json_array_get(json_object_get(j, "hits"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(h0, "id")), "fresh");
    ck_assert_double_eq(json_number_value(json_object_get(h0, "distance")), 4.0);
    ck_assert_double_eq(json_number_value(json_array_get(json_object_get(h0, "vector"), 3)), 100.0);
    json_decref(j);
    free(r.body);
    /* An update supersedes: only the newest version is ever returned. */
    snprintf(json, sizeof(json),
             "{\"collection\": \"docs\", \"id\": \"fresh\", \"ts\": %" PRId64
             ", \"vector\": [-100, -100, -100, -100]}",
             st_clock_wall_ms(NULL) + 1);
    produce_one(&e, 0, json);
    ck_assert(ST_WAIT_UNTIL(
        top_hit_is(surl, tok, "{\"vector\": [-100, -100, -100, -100]}", "fresh", 0.0), 30000));
    r = st_test_http(surl, tok, "{\"vector\": [100, 100, 100, 100], \"k\": 20}");
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    hits = json_object_get(j, "hits");
    int seen_fresh = 0;
    for (size_t i = 0; i < json_array_size(hits); i++) {
        json_t *hx = json_array_get(hits, i);
        if (strcmp(json_string_value(json_object_get(hx, "id")), "fresh") == 0) {
            seen_fresh++;
            ck_assert_double_eq(json_number_value(json_object_get(hx, "distance")), 160000.0);
        }
    }
    ck_assert_int_eq(seen_fresh, 1);
    json_decref(j);
    free(r.body);

    /* Bad requests: 4xx with a message. */
    r = st_test_http(surl, tok, "{\"vector\": [1, 2, 3]}");
    ck_assert_int_eq(r.status, 400);
    ck_assert_msg(strstr(r.body, "vector has 3 dims; collection 'docs' has 4") != NULL, "%s",
                  r.body);
    free(r.body);
    ck_assert_int_eq(http_status(surl, tok, "{\"vector\": [1, 2, 3, 4], \"k\": 0}"), 400);
    ck_assert_int_eq(http_status(surl, tok, "{\"vector\": [1, 2, 3, 4], \"k\": 1001}"), 400);
    ck_assert_int_eq(http_status(surl, tok, "{\"vector\": [1, 2, \"x\", 4]}"), 400);
    ck_assert_int_eq(http_status(surl, tok, "{\"vector\": [1, 2, 3, 4], \"kk\": 1}"), 400);
    ck_assert_int_eq(http_status(surl, tok,
                                 "{\"vector\": [1, 2, 3, 4], \"consistency\": "
                                 "\"indexed\"}"),
                     400);
    ck_assert_int_eq(http_status(surl, tok, "not json"), 400);
    char big[4096];
    memset(big, ' ', sizeof(big) - 1);
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    big[sizeof(big) - 1] = '\0';
    r = st_test_http(surl, tok, big);
    ck_assert_int_eq(r.status, 413);
    ck_assert_ptr_nonnull(strstr(r.body, "max_body"));
    free(r.body);
    ck_assert_int_eq(
        status_of(base, "/v1/collections/nope/search", tok, "{\"vector\": [1, 2, 3, 4]}"), 404);
    ck_assert_int_eq(http_status(surl, tok, NULL), 405);

    /* Metrics: the counters move with what happened above. */
    snprintf(url, sizeof(url), "%s/metrics", base);
    r = st_test_http(url, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(st_test_metric(r.body, "strata_ingest_records_total{collection=\"docs\"}") >=
                      NMSG + 4,
                  "%s", r.body);
    ck_assert_double_eq(
        st_test_metric(r.body,
                       "strata_ingest_rejected_total{collection=\"docs\",reason=\"wrong_dim\"}"),
        1);
    ck_assert_double_eq(
        st_test_metric(r.body, "strata_windows{collection=\"docs\",state=\"sealed\"}"), 1);
    ck_assert(st_test_metric(r.body, "strata_wal_sync_seconds_count{collection=\"docs\"}") >= 1);
    ck_assert(st_test_metric(r.body, "strata_freshness_seconds_count{collection=\"docs\",stage="
                                     "\"sealed\"}") >= 1);
    ck_assert(st_test_metric(r.body, "strata_search_seconds_count") >= 5);
    ck_assert(st_test_metric(r.body, pruned_series) >= (double)pruned);
    ck_assert_double_eq(st_test_metric(r.body, "strata_segments_total{collection=\"docs\",state="
                                               "\"sealed\"}"),
                        1);
    ck_assert(st_test_metric(r.body, "strata_store_reclaim_pending_bytes{collection=\"docs\"}") >=
              0);
    /* The metric is there and moved with the one seal: its log (a few 4-d rows) is a partial
     * block, read back whole either way. Whether a seal reads only its partial last block is
     * check_store's (store_stats.seal_read_bytes on logs of several blocks). */
    double seal_read =
        st_test_metric(r.body, "strata_store_seal_read_bytes_total{collection=\"docs\"}");
    ck_assert_msg(seal_read > 0 && seal_read < 256 * 1024, "%g",
                  seal_read); /* STORE_SEG_VEC_BLOCK */
    /* The first records of a window created it and its vector log on the write path (nothing
     * was there for the tick to prepare ahead): counted, with the time they took. */
    static const char *const causes[] = {"window_create", "vector_log_create", "wal_roll",
                                         "vector_log_queue"};
    for (int c = 0; c < 4; c++) {
        char sn[160], ss[160];
        snprintf(sn, sizeof(sn), "strata_write_waits_total{collection=\"docs\",cause=\"%s\"}",
                 causes[c]);
        snprintf(ss, sizeof(ss),
                 "strata_write_wait_seconds_total{collection=\"docs\",cause=\"%s\"}", causes[c]);
        double n = st_test_metric(r.body, sn), sec = st_test_metric(r.body, ss);
        ck_assert_msg(n >= (c < 2 ? 1 : 0) && sec >= 0 && (n == 0) == (sec == 0) && sec < 60,
                      "%s %g, %s %g", sn, n, ss, sec);
    }
    ck_assert(st_test_metric(r.body, "strata_windows_prepared_total{collection=\"docs\"}") >= 0);
    /* The polling thread's time by activity: it wrote records and waited in librdkafka (idle
     * between the batches), and the four add up to no more than the daemon has lived. */
    double poll_sum = 0;
    static const char *const acts[] = {"kafka", "decode_wait", "write", "commit"};
    for (int a = 0; a < 4; a++) {
        char pn[160];
        snprintf(pn, sizeof(pn), "strata_ingest_poll_seconds_total{activity=\"%s\"}", acts[a]);
        double v = st_test_metric(r.body, pn);
        ck_assert_msg(a >= 2 ? v >= 0 : v > 0, "%s %g", pn, v);
        if (a == 2)
            ck_assert_msg(v > 0, "%s %g: records were written", pn, v);
        poll_sum += v;
    }
    ck_assert_msg(poll_sum < 600, "polling thread seconds %g", poll_sum);
    /* Every applied message's delay from its Kafka timestamp (produced during this test) to
     * searchable: one observation per message applied (handled, less the one dead-lettered
     * and any redelivery), none over a minute. */
    double lag_n =
        st_test_metric(r.body, "strata_ingest_apply_lag_seconds_count{collection=\"docs\"}");
    double lag_60 = st_test_metric(
        r.body, "strata_ingest_apply_lag_seconds_bucket{collection=\"docs\",le=\"60\"}");
    double handled = st_test_metric(r.body, "strata_ingest_messages_total"),
           dups = st_test_metric(r.body, "strata_ingest_duplicates_total");
    ck_assert_msg(lag_n >= 2 && lag_n == handled - dups - 1 && lag_60 == lag_n,
                  "apply lag: %g observations, %g within 60 s; %g messages handled, %g "
                  "duplicates, 1 rejected",
                  lag_n, lag_60, handled, dups);
    free(r.body);
    /* Lag per assigned partition (refreshed every second). */
    char lag0[300];
    snprintf(lag0, sizeof(lag0), "strata_kafka_consumer_lag{topic=\"%s\",partition=\"0\"}",
             e.topic);
    ck_assert_msg(ST_WAIT_UNTIL(st_test_metric_at(url, lag0) == 0, 30000),
                  "no lag 0 for partition 0");

    st_daemon_stop(&d, STOP_MS);
    st_kafka_assert_committed_at_end(e.brokers, e.group, e.topic, 2);
    env_free(&e);
}
END_TEST

/* ---- data_dir layout (SPEC.md §6) --------------------------------------------------------- */

/* Whether <data_dir>/<rel> exists. */
static bool data_has(const struct env *e, const char *rel)
{
    char p[800];
    snprintf(p, sizeof(p), "%s/%s", e->data, rel);
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Whether GET /v1/collections/docs/records/<id> answers 200. */
static bool record_served(unsigned port, const char *id)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/collections/docs/records/%s", id);
    return st_daemon_http_get(port, path, NULL, 0) == 200;
}

/*
 * strata-ingest keeps its files under <data_dir>/ingest/<collection>/ (the indexer sharing
 * the data_dir has indexer/). A data_dir from before that rule — the store directly at
 * <data_dir>/<collection> — is still opened where it is, with its data, and keeps taking
 * writes there; `strata inspect` finds the store in either place.
 */
START_TEST(test_daemon_data_dir_layout)
{
    struct env e;
    env_init(&e, "layout", false);
    produce_window(&e);
    struct st_daemon d;
    start_daemon(&d, &e);
    unsigned port = st_daemon_wait_logged_number(&d, "HTTP on port ", 60000);
    ck_assert_msg(ST_WAIT_UNTIL(record_served(port, "r11") && record_served(port, "w1"), 90000),
                  "records never applied");
    st_daemon_stop(&d, STOP_MS);
    ck_assert(data_has(&e, "ingest/docs/CURRENT"));
    ck_assert(!data_has(&e, "docs"));
    ck_assert(!st_daemon_log_has(&d, "from before the"));

    /* The same data as an old data_dir: the store at <data_dir>/docs, no ingest/. */
    char from[800], to[800], cmd[1800], out[16384];
    snprintf(from, sizeof(from), "%s/ingest/docs", e.data);
    snprintf(to, sizeof(to), "%s/docs", e.data);
    ck_assert_int_eq(rename(from, to), 0);
    snprintf(from, sizeof(from), "%s/ingest", e.data);
    ck_assert_int_eq(rmdir(from), 0);
    snprintf(cmd, sizeof(cmd), "%s inspect %s 2>&1", getenv("STRATA_CLI"), e.data);
    ck_assert_msg(st_test_run(cmd, out, sizeof(out)) == 0, "%s", out);
    ck_assert_msg(strstr(out, to) != NULL, "inspect did not find %s:\n%s", to, out);

    start_daemon(&d, &e);
    port = st_daemon_wait_logged_number(&d, "HTTP on port ", 60000);
    ck_assert(st_daemon_log_has(&d, "from before the"));
    for (int m = 0; m < NMSG; m++) {
        char id[16];
        snprintf(id, sizeof(id), "r%d", m);
        ck_assert_msg(ST_WAIT_UNTIL(record_served(port, id), 30000), "%s not served", id);
    }
    char json[256];
    snprintf(json, sizeof(json),
             "{\"collection\": \"docs\", \"id\": \"after\", \"ts\": %" PRId64
             ", \"vector\": [9, 9, 9, 9]}",
             st_clock_wall_ms(NULL));
    produce_one(&e, 1, json);
    ck_assert_msg(ST_WAIT_UNTIL(record_served(port, "after"), 30000), "new record not applied");
    st_daemon_stop(&d, STOP_MS);
    st_kafka_assert_committed_at_end(e.brokers, e.group, e.topic, 2);
    /* Written where the store was; nothing new under ingest/. */
    ck_assert(!data_has(&e, "ingest/docs"));
    struct store *s = open_store_at(&e, "docs");
    float v[4];
    struct store_value sv = {.vec = v};
    ck_assert_int_eq(store_get(s, (const uint8_t *)"after", 5, &sv), ST_OK);
    ck_assert(v[0] == 9.0f);
    free(sv.meta);
    sv = (struct store_value){.vec = v};
    ck_assert_int_eq(store_get(s, (const uint8_t *)"r7", 2, &sv), ST_OK);
    ck_assert(v[0] == 7.0f);
    free(sv.meta);
    ck_assert_int_eq(store_close(s), ST_OK);
    env_free(&e);
}
END_TEST

/* ---- discovery (SPEC.md §7) ---------------------------------------------------------------- */

/* Core NATS subscriber on strata.nodes.>, as an indexer listens. */
struct nodes_sub {
    natsConnection *nc;
    natsSubscription *sub;
    const char *node; /* only this node's announcements count (others share the server) */
};

static void nodes_sub_open(struct nodes_sub *ns, const char *url, const char *node)
{
    ns->node = node;
    NATS_OK(natsConnection_ConnectTo(&ns->nc, url));
    NATS_OK(natsConnection_SubscribeSync(&ns->sub, ns->nc, "strata.nodes.>"));
    NATS_OK(natsConnection_Flush(ns->nc)); /* registered before the daemon starts */
}

static void nodes_sub_close(struct nodes_sub *ns)
{
    natsSubscription_Destroy(ns->sub);
    natsConnection_Destroy(ns->nc);
}

/* The next announcement of ns->node within timeout_ms (caller decrefs), NULL when none. */
static json_t *next_announcement(struct nodes_sub *ns, int timeout_ms)
{
    char subject[128];
    snprintf(subject, sizeof(subject), "strata.nodes.%s", ns->node);
    int64_t deadline = st_test_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - st_test_now_ms();
        natsMsg *m = NULL;
        if (left <= 0 || natsSubscription_NextMsg(&m, ns->sub, left) != NATS_OK)
            return NULL;
        json_t *j = NULL;
        if (strcmp(natsMsg_GetSubject(m), subject) == 0) {
            j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
            ck_assert_msg(j != NULL, "an announcement on %s is not JSON", subject);
        }
        natsMsg_Destroy(m);
        if (j != NULL)
            return j;
    }
}

/* An announcement's partitions of topic as JSON text ("[0,1]"), malloc'd. */
static char *announced_parts(json_t *j, const char *topic)
{
    json_t *a = json_object_get(json_object_get(j, "partitions"), topic);
    return a != NULL ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("absent");
}

/*
 * Waits for an announcement whose partitions of e->topic satisfy ok (with want: the exact
 * JSON text, or NULL: exactly one partition), polling the extra group member c meanwhile so
 * it keeps its membership. Returns it (caller decrefs); fails the test at the deadline.
 */
static json_t *wait_announced(struct nodes_sub *ns, const struct env *e, const char *want,
                              rd_kafka_t *c, int timeout_ms)
{
    int64_t deadline = st_test_now_ms() + timeout_ms;
    char last[64] = "none";
    for (;;) {
        if (c != NULL) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 0);
            if (m != NULL)
                rd_kafka_message_destroy(m);
        }
        json_t *j = next_announcement(ns, 100);
        if (j != NULL) {
            char *p = announced_parts(j, e->topic);
            bool ok = want != NULL ? strcmp(p, want) == 0
                                   : (p[0] == '[' && strchr(p, ',') == NULL && p[1] != ']');
            snprintf(last, sizeof(last), "%s", p);
            free(p);
            if (ok)
                return j;
            json_decref(j);
        }
        ck_assert_msg(st_test_now_ms() < deadline, "%s: never announced %s for %s (last: %s)",
                      ns->node, want != NULL ? want : "one partition", e->topic, last);
    }
}

/*
 * The daemon announces itself on strata.nodes.<node_id>: once serving (its URL, collections
 * and, once the consumer has it, its assignment), every announce_interval with a growing seq,
 * at once when a second group member takes a partition and when it gives it back, and with
 * "bye": true on SIGTERM. Its sealed events name segments under ingest.advertise_url.
 */
START_TEST(test_daemon_announces)
{
    struct env e;
    char node[64];
    snprintf(node, sizeof(node), "%s", st_test_unique("node"));
    next_node = node;
    next_ingest_keys =
        ", advertise_url: \"http://node-a.invalid:7443/strata/\", announce_interval: 300ms";
    env_init(&e, "nodes", false);
    struct nodes_sub ns;
    nodes_sub_open(&ns, e.nats, node);
    produce_window(&e);
    int64_t before = st_clock_wall_ms(NULL);
    struct st_daemon d;
    start_daemon(&d, &e);

    /* Serving, with both partitions of the topic. */
    json_t *j = wait_announced(&ns, &e, "[0,1]", NULL, 90000);
    ck_assert_str_eq(json_string_value(json_object_get(j, "node")), node);
    ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "ingest");
    ck_assert_str_eq(json_string_value(json_object_get(j, "url")),
                     "http://node-a.invalid:7443/strata");
    json_t *colls = json_object_get(j, "collections");
    ck_assert_uint_eq(json_array_size(colls), 1);
    ck_assert_str_eq(json_string_value(json_array_get(colls, 0)), "docs");
    ck_assert_uint_eq(json_object_size(json_object_get(j, "partitions")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "interval_ms")), 300);
    ck_assert(json_is_false(json_object_get(j, "bye")));
    int64_t started = json_integer_value(json_object_get(j, "started"));
    ck_assert_int_ge(started, before);
    ck_assert_int_le(started, st_clock_wall_ms(NULL));
    int64_t seq = json_integer_value(json_object_get(j, "seq"));
    json_decref(j);
    /* Every interval: the same start, seq growing. */
    for (int i = 0; i < 3; i++) {
        j = next_announcement(&ns, 10000);
        ck_assert_msg(j != NULL, "no periodic announcement");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "started")), started);
        ck_assert_int_gt(json_integer_value(json_object_get(j, "seq")), seq);
        seq = json_integer_value(json_object_get(j, "seq"));
        json_decref(j);
    }

    /* The sealed window's segment URL is under the advertise URL. */
    char *ev = NULL;
    ck_assert_msg(
        ST_WAIT_UNTIL((ev = last_event(e.nats, e.stream, "strata.docs.sealed")) != NULL, 90000),
        "no sealed event");
    json_t *evj = json_loads(ev, 0, NULL);
    const char *seg = json_string_value(json_object_get(evj, "segment"));
    ck_assert_msg(seg != NULL &&
                      strncmp(seg, "http://node-a.invalid:7443/strata/v1/segments/docs/", 51) == 0,
                  "%s", ev);
    json_decref(evj);
    free(ev);

    /* A second member of the group takes one partition, then leaves: both moves announced. */
    rd_kafka_t *other = st_kafka_consumer(e.brokers, e.group, e.topic);
    j = wait_announced(&ns, &e, NULL, other, 90000);
    json_decref(j);
    /* The daemon announces its half first: wait until this member holds the other half. */
    int64_t until = st_test_now_ms() + 60000;
    for (;;) {
        rd_kafka_topic_partition_list_t *mine = NULL;
        ck_assert_int_eq(rd_kafka_assignment(other, &mine), RD_KAFKA_RESP_ERR_NO_ERROR);
        int got = mine->cnt;
        rd_kafka_topic_partition_list_destroy(mine);
        if (got > 0)
            break;
        ck_assert_msg(st_test_now_ms() < until, "the second member got no partition");
        rd_kafka_message_t *m = rd_kafka_consumer_poll(other, 100);
        if (m != NULL)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(other);
    rd_kafka_destroy(other);
    j = wait_announced(&ns, &e, "[0,1]", NULL, 90000);
    seq = json_integer_value(json_object_get(j, "seq"));
    json_decref(j);

    /* SIGTERM: goodbye, then exit 0. */
    st_daemon_stop(&d, STOP_MS);
    json_t *bye = NULL;
    while (bye == NULL && (j = next_announcement(&ns, 10000)) != NULL) {
        ck_assert_int_gt(json_integer_value(json_object_get(j, "seq")), seq);
        seq = json_integer_value(json_object_get(j, "seq"));
        if (json_is_true(json_object_get(j, "bye")))
            bye = j;
        else
            json_decref(j);
    }
    ck_assert_msg(bye != NULL, "no goodbye after SIGTERM");
    ck_assert_int_eq(json_integer_value(json_object_get(bye, "started")), started);
    ck_assert_str_eq(json_string_value(json_object_get(bye, "url")),
                     "http://node-a.invalid:7443/strata");
    json_decref(bye);
    ck_assert(st_daemon_log_has(&d, "said goodbye on strata.nodes."));
    nodes_sub_close(&ns);
    env_free(&e);
}
END_TEST

/* ---- kill -9 during a continuous produce ------------------------------------------------- */

#define KREC 4 /* records per message */

struct feeder {
    const struct env *e;
    _Atomic bool stop;
    _Atomic int sent; /* messages produced (delivered once flushed) */
    _Atomic int failed;
};

/* Produces message m = {k<m>-0..3} to partition m % 2 until told to stop. */
static void *feed(void *arg)
{
    struct feeder *fd = arg;
    rd_kafka_t *p = st_kafka_producer(fd->e->brokers);
    int m = 0;
    while (!atomic_load(&fd->stop)) {
        char json[1024];
        int off = snprintf(json, sizeof(json), "{\"records\": [");
        for (int i = 0; i < KREC; i++)
            off +=
                snprintf(json + off, sizeof(json) - (size_t)off,
                         "%s{\"id\": \"k%d-%d\", \"ts\": %" PRId64 ", \"vector\": [%d, %d, 0, 1]}",
                         i ? ", " : "", m, i, st_clock_wall_ms(NULL) - 1000, m, i);
        snprintf(json + off, sizeof(json) - (size_t)off, "]}");
        if (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(fd->e->topic), RD_KAFKA_V_PARTITION(m % 2),
                              RD_KAFKA_V_VALUE(json, strlen(json)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            atomic_store(&fd->failed, 1);
            break;
        }
        atomic_store(&fd->sent, ++m);
        rd_kafka_poll(p, 0);
        usleep(2000); /* a steady stream, ~500 messages/s */
    }
    if (rd_kafka_flush(p, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_store(&fd->failed, 1);
    rd_kafka_destroy(p);
    return NULL;
}

static int64_t committed_total(const struct env *e)
{
    int64_t offs[2], sum = 0;
    st_kafka_committed(e->brokers, e->group, e->topic, 2, offs);
    for (int i = 0; i < 2; i++)
        sum += offs[i] > 0 ? offs[i] : 0;
    return sum;
}

struct scan_count {
    uint64_t live;
};

static int count_live(void *ctx, const struct store_scan_src *src)
{
    struct scan_count *c = ctx;
    for (uint64_t i = 0; i < src->n; i++) {
        struct store_scan_rec r;
        store_scan_record(src, i, &r);
        c->live += r.op == STORE_OP_UPSERT && !r.superseded;
    }
    return ST_OK;
}

/*
 * strata-ingest is killed with SIGKILL while a producer keeps writing, and restarted while it
 * still writes. Afterwards every record of every message is stored exactly once (each id
 * once across all memtables and segments, with its own vector) and the offsets are
 * committed to the end.
 */
START_TEST(test_daemon_kill9_continuous)
{
    struct env e;
    env_init(&e, "kill", false);
    struct feeder fd = {.e = &e};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, feed, &fd), 0);
    struct st_daemon d;
    start_daemon(&d, &e);
    ck_assert_msg(ST_WAIT_UNTIL(committed_total(&e) >= 200, 90000), "nothing committed");
    st_daemon_kill(&d);
    int64_t at_kill = committed_total(&e);
    ck_assert_int_lt(at_kill, atomic_load(&fd.sent)); /* killed mid-stream */
    start_daemon(&d, &e);
    ck_assert_msg(ST_WAIT_UNTIL(committed_total(&e) >= at_kill + 200, 120000),
                  "the restarted daemon committed nothing new");
    atomic_store(&fd.stop, true);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(atomic_load(&fd.failed), 0);
    int sent = atomic_load(&fd.sent);
    ck_assert_msg(ST_WAIT_UNTIL(committed_total(&e) == sent, 120000), "committed %" PRId64 " of %d",
                  committed_total(&e), sent);
    st_daemon_stop(&d, STOP_MS);
    st_kafka_assert_committed_at_end(e.brokers, e.group, e.topic, 2);

    struct store *s = open_daemon_store(&e);
    for (int m = 0; m < sent; m++)
        for (int i = 0; i < KREC; i++) {
            char id[32];
            float v[4];
            snprintf(id, sizeof(id), "k%d-%d", m, i);
            struct store_value sv = {.vec = v};
            ck_assert_msg(store_get(s, (const uint8_t *)id, (uint32_t)strlen(id), &sv) == ST_OK,
                          "%s lost", id);
            ck_assert(v[0] == (float)m && v[1] == (float)i);
            ck_assert_int_eq(sv.partition, m % 2);
            free(sv.meta);
        }
    struct scan_count cnt = {0};
    ck_assert_int_eq(store_scan(s, count_live, &cnt), ST_OK);
    ck_assert_uint_eq(cnt.live, (uint64_t)sent * KREC); /* nothing stored twice */
    ck_assert_int_eq(store_close(s), ST_OK);
    env_free(&e);
}
END_TEST

/* ---- the whole session in the sanitizer build ------------------------------------------- */

/* One series of GET /metrics (-1 when absent); a daemon that does not answer fails the test
 * with its sanitizer report, when it has one. */
static double scraped(const struct st_daemon *d, unsigned port, const char *series)
{
    static char body[1 << 17];
    if (st_daemon_http_get(port, "/metrics", body, sizeof(body)) != 200) {
        st_daemon_assert_clean(d);
        return -1;
    }
    return st_test_metric(body, series);
}

/* Messages in topic (one partition) now: its high watermark. */
static int64_t topic_end(const char *brokers, const char *topic)
{
    rd_kafka_t *c = st_kafka_group_client(brokers, st_test_unique("end"));
    int64_t lo = -1, hi = -1;
    rd_kafka_query_watermark_offsets(c, topic, 0, &lo, &hi, 10000);
    rd_kafka_destroy(c);
    return hi;
}

/*
 * strata-ingest through a realistic session, as a black box in the sanitizer build: it starts
 * with nothing counted (a /metrics scrape then), takes good JSON and binary batches and bad
 * ones (garbage, wrong dimension, an empty value), seals and publishes, loses NATS and gets it
 * back, stops on SIGTERM, restarts on the same data and stops again. Each stop must be exit 0
 * within the shutdown timeout with no sanitizer report on stderr. nats.c's callback thread is
 * made late (fault point bus.nats.late_callback, test builds only): the publisher must
 * outlive every callback nats.c still has queued for it at shutdown.
 */
START_TEST(test_daemon_sanitized_session)
{
    struct st_own_nats n = {0}; /* killed and restarted mid-run */
    st_own_nats_start(&n);
    struct env e;
    env_init_nats(&e, "san", false, n.url);
    static const char *const late[] = {"STRATA_FAULT_POINTS=bus.nats.late_callback", NULL};
    struct st_daemon d;
    start_daemon_env(&d, &e, late);
    unsigned port = st_daemon_wait_logged_number(&d, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&d, port, "/readyz", 60000);

    /* Nothing consumed, nothing rejected yet: the scrape copies empty tables. */
    ck_assert_double_eq(scraped(&d, port, "strata_ingest_records_total{collection=\"docs\"}"), 0);

    /* Good: a JSON window (NMSG + 2 records) and a binary frame of two records. */
    produce_window(&e);
    float v0[4] = {7, 7, 7, 7}, v1[4] = {8, 8, 8, 8};
    int64_t now = st_clock_wall_ms(NULL);
    struct rec_record recs[2] = {
        {.id = (const uint8_t *)"b0", .id_len = 2, .ts = now, .vec = v0},
        {.id = (const uint8_t *)"b1", .id_len = 2, .ts = now, .vec = v1},
    };
    uint8_t *frame = NULL;
    size_t frame_len = 0;
    ck_assert_int_eq(rec_frame_encode("docs", 4, false, recs, 2, &frame, &frame_len), ST_OK);
    rd_kafka_t *pr = st_kafka_producer(e.brokers);
    st_kafka_send(pr, e.topic, 1, frame, frame_len);
    free(frame);
    /* Bad: garbage, a wrong dimension, an empty value. */
    st_kafka_send(pr, e.topic, 0, "\x01garbage", 8);
    const char *wrong = "{\"collection\": \"docs\", \"id\": \"bad\", \"vector\": [1, 2]}";
    st_kafka_send(pr, e.topic, 1, wrong, strlen(wrong));
    st_kafka_send(pr, e.topic, 0, NULL, 0);
    ck_assert_int_eq(rd_kafka_flush(pr, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(pr);

    /* Stored, dead-lettered (acknowledged by Kafka), counted, sealed and published. */
    ck_assert_msg(
        ST_WAIT_UNTIL(scraped(&d, port, "strata_ingest_records_total{collection=\"docs\"}") ==
                          NMSG + 4,
                      90000),
        "records never all applied");
    ck_assert_msg(ST_WAIT_UNTIL(topic_end(e.brokers, e.dead) == 3, 30000), "not dead-lettered");
    ck_assert_double_eq(
        scraped(&d, port, "strata_ingest_rejected_total{collection=\"docs\",reason=\"garbage\"}"),
        2);
    ck_assert_double_eq(
        scraped(&d, port, "strata_ingest_rejected_total{collection=\"docs\",reason=\"wrong_dim\"}"),
        1);
    char *ev = NULL;
    ck_assert_msg(
        ST_WAIT_UNTIL((ev = last_event(e.nats, e.stream, "strata.docs.sealed")) != NULL, 90000),
        "no sealed event");
    free(ev);

    /* NATS goes away (readiness says so), then comes back (ready again). */
    st_own_nats_kill(&n);
    ck_assert(ST_WAIT_UNTIL(st_daemon_http_get(port, "/readyz", NULL, 0) == 503, 30000));
    st_own_nats_start(&n);
    st_daemon_wait_http_ok(&d, port, "/readyz", 60000);

    /* SIGTERM with NATS connected: the disconnected and closed callbacks come late. */
    st_daemon_stop(&d, STOP_MS);

    /* The same data dir again: everything is there; then a clean stop once more. */
    start_daemon_env(&d, &e, late);
    port = st_daemon_wait_logged_number(&d, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&d, port, "/readyz", 60000);
    const char *ids[] = {"r0", "r11", "w0", "w1", "b0", "b1"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/collections/docs/records/%s", ids[i]);
        ck_assert_msg(st_daemon_http_get(port, path, NULL, 0) == 200, "%s lost", ids[i]);
    }
    ck_assert_int_eq(st_daemon_http_get(port, "/v1/collections/docs/records/bad", NULL, 0), 404);
    ck_assert_double_eq(scraped(&d, port, "strata_windows{collection=\"docs\",state=\"sealed\"}"),
                        1);
    st_daemon_stop(&d, STOP_MS);
    st_kafka_assert_committed_at_end(e.brokers, e.group, e.topic, 2);

    st_own_nats_free(&n);
    env_free(&e);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *su = suite_create("ingest_daemon");
    TCase *tc = tcase_create("ingest_daemon");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_daemon_consume_seal_publish_stop);
    tcase_add_test(tc, test_daemon_http);
    tcase_add_test(tc, test_daemon_kill9_continuous);
    tcase_add_test(tc, test_daemon_sanitized_session);
    suite_add_tcase(su, tc);
    tc = tcase_create("layout"); /* CK_RUN_CASE=layout runs it alone */
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_daemon_data_dir_layout);
    suite_add_tcase(su, tc);
    tc = tcase_create("discovery"); /* CK_RUN_CASE=discovery */
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_daemon_announces);
    suite_add_tcase(su, tc);
    int rc = st_test_run_suite(su);
    nats_Close();
    curl_global_cleanup();
    return rc;
}
