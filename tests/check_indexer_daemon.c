/*
 * strata-indexer as a process, with strata-ingest, the real Kafka broker and nats-server:
 * Fashion-MNIST produced through Kafka as JSON into four event-time windows is sealed,
 * indexed and searched over HTTP (recall against exact search), fresh records are found with
 * `strong` and not with `indexed`, get-by-id, upserts into a later window and deletes, every
 * bad request's 4xx, a SIGKILL and restart without rebuilds, a second indexer killed in the
 * middle of its builds that then answers exactly as the first, and redelivered events. The
 * tcase "faults": an error (or a SIGKILL) at each I/O site only the running indexer passes,
 * its sealed events left unacknowledged on JetStream, then a clean restart (issue 16).
 */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_daemon_test.h"
#include "st_http_test.h"
#include "st_kafka_test.h"
#include "st_nats_test.h"
#include "st_test.h"

#define DIM     784
#define PER_WIN 600 /* train vectors per window */
#define NWIN    4
#define NTRAIN  (PER_WIN * NWIN)
#define NQ      100
#define TOKEN   "s3cret"

static float *train, *test;

struct env {
    const char *brokers, *nats, *ingest_bin, *indexer_bin;
    char topic[128], dead[128], group[128], stream[64];
    char *dir;
    char cfg[600], cfg_b[600], data[600], data_b[600], token[600];
    int64_t w0; /* first window start */
};

/* A YAML for node on data; coll_extra goes into collection fm's block, more_colls after it
 * (further collections, "" for none). */
static void write_cfg(const struct env *e, const char *path, const char *node, const char *data,
                      const char *coll_extra, const char *more_colls)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "node_id: %s\n"
            "data_dir: %s\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: {session.timeout.ms: \"6000\"}\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n"
            "collections:\n  - name: fm\n    dim: %d\n    metric: l2\n    topic: %s\n%s"
            "    index: {type: hnsw, m: 16, ef_construction: 100}\n%s"
            "ingest: {listen: \"127.0.0.1:0\", announce_interval: 500ms}\n"
            "indexer: {listen: \"127.0.0.1:0\", build_threads: 1, memory_budget: 1GiB}\n"
            "http: {auth_token_file: \"%s\", max_body: 64KiB}\n"
            "log: {level: info}\n",
            node, data, e->brokers, e->group, e->dead, e->nats, e->stream, DIM, e->topic,
            coll_extra, more_colls, e->token);
    fclose(f);
}

static void env_init_cfg(struct env *e, const char *coll_extra);

static void env_init(struct env *e)
{
    env_init_cfg(e, "    window: 1m\n    grace: 1s\n    max_lateness: 1h\n");
}

static const char *nats_override;

static void env_init_cfg(struct env *e, const char *coll_extra)
{
    e->brokers = st_test_broker("STRATA_TEST_KAFKA");
    e->nats = nats_override != NULL ? nats_override : st_test_broker("STRATA_TEST_NATS");
    e->ingest_bin = getenv("STRATA_INGEST");
    e->indexer_bin = getenv("STRATA_INDEXER");
    ck_assert_ptr_nonnull(e->ingest_bin);
    ck_assert_ptr_nonnull(e->indexer_bin);
    snprintf(e->topic, sizeof(e->topic), "%s", st_test_unique("fm"));
    snprintf(e->dead, sizeof(e->dead), "%s", st_test_unique("fm-dlq"));
    snprintf(e->group, sizeof(e->group), "%s", st_test_unique("fm-g"));
    snprintf(e->stream, sizeof(e->stream), "IDX%d", (int)getpid());
    st_kafka_create_topic(e->brokers, e->topic, 2);
    st_kafka_create_topic(e->brokers, e->dead, 1);
    if (nats_override == NULL)
        st_nats_clean(e->nats);
    e->dir = st_test_tmpdir("idx");
    snprintf(e->cfg, sizeof(e->cfg), "%s/strata.yaml", e->dir);
    snprintf(e->cfg_b, sizeof(e->cfg_b), "%s/strata-b.yaml", e->dir);
    snprintf(e->data, sizeof(e->data), "%s/data", e->dir);
    snprintf(e->data_b, sizeof(e->data_b), "%s/data-b", e->dir);
    snprintf(e->token, sizeof(e->token), "%s/token", e->dir);
    FILE *tf = fopen(e->token, "w");
    ck_assert_ptr_nonnull(tf);
    fprintf(tf, TOKEN "\n");
    fclose(tf);
    write_cfg(e, e->cfg, "host-a", e->data, coll_extra, "");
    write_cfg(e, e->cfg_b, "host-b", e->data_b, coll_extra, ""); /* another "host" */
}

/* ---- HTTP ---- */

static long http_status(unsigned port, const char *path)
{
    struct st_test_resp r = st_test_http_port(port, path, TOKEN, NULL);
    free(r.body);
    return r.status;
}

/* Does GET path (no auth) hold needle? */
static bool http_has(unsigned port, const char *path, const char *needle)
{
    struct st_test_resp r = st_test_http_port(port, path, NULL, NULL);
    bool has = strstr(r.body, needle) != NULL;
    free(r.body);
    return has;
}

static json_t *http_json(unsigned port, const char *path, const char *body, long want)
{
    struct st_test_resp r = st_test_http_port(port, path, TOKEN, body);
    ck_assert_msg(r.status == want, "%s: HTTP %ld, want %ld: %s", path, r.status, want, r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    ck_assert_msg(j != NULL, "%s: not JSON: %s", path, r.body);
    free(r.body);
    return j;
}

static char *vec_text(const float *v)
{
    size_t cap = DIM * 8 + 16, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s + n, cap - n, "[");
    for (int i = 0; i < DIM; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s%g", i ? "," : "", v[i]);
    snprintf(s + n, cap - n, "]");
    return s;
}

/* POST search; returns the parsed response (status checked). */
static json_t *search(unsigned port, const float *q, int k, const char *consistency, bool with_vec,
                      long want)
{
    char *vt = vec_text(q);
    size_t cap = strlen(vt) + 256;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"vector\": %s, \"k\": %d, \"consistency\": \"%s\", \"ef\": 96%s}", vt, k,
             consistency, with_vec ? ", \"include_vector\": true" : "");
    json_t *j = http_json(port, "/v1/collections/fm/search", body, want);
    free(body);
    free(vt);
    return j;
}

static bool hits_have(json_t *res, const char *id)
{
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(res, "hits"), i, h)
    {
        if (strcmp(json_string_value(json_object_get(h, "id")), id) == 0)
            return true;
    }
    return false;
}

/* ---- producing ---- */

static void send_json(rd_kafka_t *p, const struct env *e, int part, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    st_kafka_send(p, e->topic, part, s, strlen(s));
    free(s);
    json_decref(msg);
}

static json_t *rec(const char *id, int64_t ts, const float *v)
{
    json_t *vec = json_array();
    for (int d = 0; d < DIM; d++)
        json_array_append_new(vec, json_integer((json_int_t)v[d]));
    return json_pack("{s:s,s:I,s:o}", "id", id, "ts", (json_int_t)ts, "vector", vec);
}

/* Records after window w's train vectors (see produce_windows); NULL: none. */
typedef void after_window_fn(rd_kafka_t *p, const struct env *e, int w);

/*
 * Sets e->w0 to a minute 15 minutes ago and sends train vectors t0..t<n-1>, per_win to each
 * one-minute window from w0, in batches of 20 alternating over the two partitions; after the
 * last batch of each window, after(p, e, w) if not NULL.
 */
static rd_kafka_t *produce_train(struct env *e, int n, int per_win, after_window_fn *after)
{
    /* Batches never straddle two windows (after() runs between them), and an idempotent
     * producer keeps each partition's order through retries. */
    ck_assert(per_win % 20 == 0 && n % 20 == 0);
    e->w0 = (st_clock_wall_ms(NULL) - 15 * 60000) / 60000 * 60000;
    rd_kafka_t *p = st_kafka_producer_idempotent(e->brokers);
    for (int b = 0; b < n / 20; b++) {
        json_t *recs = json_array();
        for (int i = b * 20; i < (b + 1) * 20; i++) {
            char id[32];
            snprintf(id, sizeof(id), "t%d", i);
            json_array_append_new(recs,
                                  rec(id, e->w0 + (int64_t)(i / per_win) * 60000 + i % per_win,
                                      train + (size_t)i * DIM));
        }
        send_json(p, e, b % 2, json_pack("{s:s,s:o}", "collection", "fm", "records", recs));
        int w = b * 20 / per_win;
        if (after != NULL && ((b + 1) * 20 >= n || (b + 1) * 20 / per_win != w))
            after(p, e, w);
    }
    return p;
}

/* One record per partition near now (moves the watermark past every produced window), then
 * flushes and closes the producer. */
static void finish_produce(struct env *e, rd_kafka_t *p)
{
    int64_t now = st_clock_wall_ms(NULL);
    for (int part = 0; part < 2; part++)
        send_json(p, e, part,
                  rec(part ? "wm-1" : "wm-0", now - 1000, test + (size_t)(NQ + 9) * DIM));
    ck_assert_int_eq(rd_kafka_flush(p, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

/* "up-1" upserted in w0 with test[NQ] and again in w2 with test[NQ+1]; "del-1" upserted in w0
 * with test[NQ+2] and deleted in w1. Each is sent after its window's train vectors and before
 * the next window's on its partition, so every partition's event times only grow: none of
 * these is late data. (Sent after all the train vectors, they were, once a tick sealed w0 or w1
 * between them: the window was re-sealed a minute later, version 2, rebuilt by indexers that the
 * test expects to have nothing left to build.) */
static void specials_after(rd_kafka_t *p, const struct env *e, int w)
{
    if (w == 0) {
        send_json(p, e, 0, rec("up-1", e->w0 + 700, test + (size_t)NQ * DIM));
        send_json(p, e, 0, rec("del-1", e->w0 + 701, test + (size_t)(NQ + 2) * DIM));
    } else if (w == 1) {
        send_json(p, e, 0,
                  json_pack("{s:s,s:s,s:I}", "id", "del-1", "op", "delete", "ts",
                            (json_int_t)(e->w0 + 60000 + 702)));
    } else if (w == 2) {
        send_json(p, e, 1, rec("up-1", e->w0 + 2 * 60000 + 700, test + (size_t)(NQ + 1) * DIM));
    }
}

/* Windows w0..w3 (1 minute each, 15 minutes old), PER_WIN train vectors each as t<i>, with the
 * records of specials_after; then one record per partition near now moves the watermark past
 * every window. */
static void produce_windows(struct env *e)
{
    finish_produce(e, produce_train(e, NTRAIN, PER_WIN, specials_after));
}

/* Waits until the indexer on port serves the NWIN produced windows indexed, each with at least
 * nparts parts. Windows sealed later (fresh records, as the clock moves on) do not count: the
 * indexer builds newest first, so counting them could return before the oldest window is in. */
static void wait_indexed_parts(const struct env *e, struct st_daemon *d, unsigned port,
                               int timeout_ms, size_t nparts)
{
    int64_t deadline = st_test_now_ms() + timeout_ms;
    for (;;) {
        struct st_test_resp r = st_test_http_port(port, "/v1/collections/fm/windows", TOKEN, NULL);
        json_t *a = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        size_t indexed = 0, i;
        json_t *w;
        json_array_foreach(a, i, w)
        {
            if (strcmp(json_string_value(json_object_get(w, "state")), "indexed") == 0 &&
                json_array_size(json_object_get(w, "parts")) >= nparts &&
                json_integer_value(json_object_get(w, "start")) >= e->w0 &&
                json_integer_value(json_object_get(w, "start")) < e->w0 + NWIN * 60000)
                indexed++;
        }
        json_decref(a);
        free(r.body);
        if (indexed >= NWIN)
            return;
        st_daemon_assert_clean(d);
        ck_assert_msg(st_test_now_ms() < deadline, "windows not indexed in time (%zu of %d)",
                      indexed, NWIN);
        st_test_sleep_ms(200);
    }
}

static void wait_indexed(const struct env *e, struct st_daemon *d, unsigned port, int timeout_ms)
{
    wait_indexed_parts(e, d, port, timeout_ms, 1);
}

static float l2(const float *a, const float *b)
{
    float s = 0;
    for (int i = 0; i < DIM; i++)
        s += (a[i] - b[i]) * (a[i] - b[i]);
    return s;
}

/* The ids of the exact top-10 of q over the live records (train + up-1's newest vector). */
static void exact10(const float *q, char ids[10][32])
{
    float best[10];
    for (int i = 0; i < 10; i++)
        best[i] = INFINITY;
    for (int i = 0; i <= NTRAIN; i++) {
        const float *v = i < NTRAIN ? train + (size_t)i * DIM : test + (size_t)(NQ + 1) * DIM;
        float d = l2(q, v);
        if (d >= best[9])
            continue;
        int j = 9;
        while (j > 0 && best[j - 1] > d) {
            best[j] = best[j - 1];
            memcpy(ids[j], ids[j - 1], 32);
            j--;
        }
        best[j] = d;
        if (i < NTRAIN)
            snprintf(ids[j], 32, "t%d", i);
        else
            snprintf(ids[j], 32, "up-1");
    }
}

/* The hit ids of NQ indexed searches, as one string (to compare two indexers). */
static char *answers(unsigned port)
{
    size_t cap = NQ * 10 * 12 + 1, n = 0;
    char *s = calloc(1, cap);
    for (int q = 0; q < 20; q++) {
        json_t *r = search(port, test + (size_t)q * DIM, 10, "indexed", false, 200);
        size_t i;
        json_t *h;
        json_array_foreach(json_object_get(r, "hits"), i, h) n +=
            (size_t)snprintf(s + n, cap - n, "%s,", json_string_value(json_object_get(h, "id")));
        n += (size_t)snprintf(s + n, cap - n, ";");
        json_decref(r);
    }
    return s;
}

static unsigned start_indexer(struct st_daemon *d, const struct env *e, const char *cfg,
                              const char *log)
{
    const char *const argv[] = {e->indexer_bin, "--config", cfg, NULL};
    st_daemon_start(d, log, argv, NULL);
    unsigned port = st_daemon_wait_logged_number(d, "HTTP on port ", 60000);
    return port;
}

/* One ingest daemon and one indexer on e->cfg, both ready; lx gets the indexer's log path. */
static void start_pair(const struct env *e, struct st_daemon *ing, struct st_daemon *ix, char *lx,
                       size_t cap, unsigned *ip, unsigned *xp)
{
    char li[700];
    snprintf(li, sizeof(li), "%s/ingest.log", e->dir);
    snprintf(lx, cap, "%s/indexer.log", e->dir);
    const char *const aa[] = {e->ingest_bin, "--config", e->cfg, NULL};
    st_daemon_start(ing, li, aa, NULL);
    *ip = st_daemon_wait_logged_number(ing, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(ing, *ip, "/readyz", 60000);
    *xp = start_indexer(ix, e, e->cfg, lx);
    st_daemon_wait_http_ok(ix, *xp, "/readyz", 60000);
}

/* How many lines of the log at path hold needle; echo: print them to stderr as well. */
static int grep_log(const char *path, const char *needle, bool echo)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        bool has = strstr(line, needle) != NULL;
        n += has;
        if (has && echo)
            fprintf(stderr, "%s: %s", path, line);
    }
    fclose(f);
    return n;
}

static int count_in_log(const char *path, const char *needle)
{
    return grep_log(path, needle, false);
}

/* How many lines about the NWIN produced windows the log shows (later windows, sealed as the
 * clock moves on, are not counted). */
static int old_lines(const struct env *e, const char *log, const char *verb)
{
    int n = 0;
    for (int w = 0; w < NWIN; w++) {
        char needle[128];
        snprintf(needle, sizeof(needle), "%s coll=fm node=host-a start=%" PRId64 " ", verb,
                 e->w0 + (int64_t)w * 60000);
        n += count_in_log(log, needle);
    }
    return n;
}

/* Asserts that the log at lx shows no build of the NWIN produced windows; if it does, prints
 * those lines and the seals in the ingest log li (a re-seal would explain one). */
static void assert_no_build(const struct env *e, const char *lx, const char *li)
{
    int n = old_lines(e, lx, "building");
    if (n != 0) {
        grep_log(lx, "building", true);
        grep_log(li, "sealed window", true);
    }
    ck_assert_msg(n == 0, "%d builds of windows already indexed (lines above)", n);
}

START_TEST(test_indexer_end_to_end)
{
    train = st_test_fmnist("train-images-idx3-ubyte.gz", NTRAIN, DIM);
    test = st_test_fmnist("t10k-images-idx3-ubyte.gz", NQ + 10, DIM);
    struct env e;
    env_init(&e);
    char log_i[700], log_a[700], log_b[700];
    snprintf(log_i, sizeof(log_i), "%s/ingest.log", e.dir);
    snprintf(log_a, sizeof(log_a), "%s/indexer-a.log", e.dir);
    snprintf(log_b, sizeof(log_b), "%s/indexer-b.log", e.dir);
    struct st_daemon ing, ia, ib;
    const char *const iargv[] = {e.ingest_bin, "--config", e.cfg, NULL};
    st_daemon_start(&ing, log_i, iargv, NULL);
    unsigned iport = st_daemon_wait_logged_number(&ing, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&ing, iport, "/readyz", 60000);
    unsigned port = start_indexer(&ia, &e, e.cfg, log_a);
    st_daemon_wait_http_ok(&ia, port, "/readyz", 60000);

    produce_windows(&e);
    wait_indexed(&e, &ia, port, 240000);
    static const char *const threads[] = {"idx-worker", "idx-puller", "idx-ticker"};
    for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++)
        ck_assert_msg(st_daemon_has_thread(&ia, threads[i]), "no thread named %s", threads[i]);

    /* Recall@10 of indexed search against exact search, over HTTP. */
    int found = 0;
    for (int q = 0; q < NQ; q++) {
        char want[10][32];
        exact10(test + (size_t)q * DIM, want);
        json_t *r = search(port, test + (size_t)q * DIM, 10, "indexed", false, 200);
        for (int k = 0; k < 10; k++)
            found += hits_have(r, want[k]);
        json_decref(r);
    }
    double recall = found / (double)(NQ * 10);
    fprintf(stderr, "indexer recall@10 = %.4f\n", recall);
    ck_assert_msg(recall >= 0.95, "recall@10 %.4f < 0.95", recall);

    /* up-1 only ever comes back with its newest vector; del-1 never. */
    for (int strong = 0; strong < 2; strong++) {
        json_t *r =
            search(port, test + (size_t)NQ * DIM, 10, strong ? "strong" : "indexed", true, 200);
        size_t i;
        json_t *h;
        json_array_foreach(json_object_get(r, "hits"), i, h)
        {
            if (strcmp(json_string_value(json_object_get(h, "id")), "up-1") != 0)
                continue;
            json_t *v = json_object_get(h, "vector");
            for (int d = 0; d < DIM; d++)
                ck_assert_double_eq_tol(json_number_value(json_array_get(v, (size_t)d)),
                                        test[(size_t)(NQ + 1) * DIM + (size_t)d], 1e-3);
        }
        json_decref(r);
        r = search(port, test + (size_t)(NQ + 2) * DIM, 10, strong ? "strong" : "indexed", false,
                   200);
        ck_assert(!hits_have(r, "del-1"));
        json_decref(r);
    }
    json_decref(http_json(port, "/v1/collections/fm/records/del-1", NULL, 404));
    json_decref(http_json(port, "/v1/collections/fm/records/del-1?consistency=indexed", NULL, 404));
    json_t *u = http_json(port, "/v1/collections/fm/records/up-1", NULL, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(u, "ts")), e.w0 + 2 * 60000 + 700);
    json_decref(u);

    /* Get-by-id of sampled ids: the vector that was produced. */
    for (int i = 0; i < NTRAIN; i += 97) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/collections/fm/records/t%d?consistency=indexed", i);
        json_t *g = http_json(port, path, NULL, 200);
        json_t *v = json_object_get(g, "vector");
        for (int d = 0; d < DIM; d += 31)
            ck_assert_double_eq_tol(json_number_value(json_array_get(v, (size_t)d)),
                                    train[(size_t)i * DIM + (size_t)d], 1e-3);
        json_decref(g);
    }

    /* Fresh records: found at once with strong (once ingest has them), never with indexed. */
    rd_kafka_t *p = st_kafka_producer(e.brokers);
    int64_t now = st_clock_wall_ms(NULL);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof(id), "fresh-%d", i);
        send_json(p, &e, i % 2, rec(id, now - 100, test + (size_t)(NQ + 3 + i) * DIM));
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    ck_assert(
        ST_WAIT_UNTIL(http_status(iport, "/v1/collections/fm/records/fresh-2") == 200, 30000));
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof(id), "fresh-%d", i);
        json_t *r = search(port, test + (size_t)(NQ + 3 + i) * DIM, 5, "strong", false, 200);
        ck_assert_str_eq(
            json_string_value(json_object_get(json_array_get(json_object_get(r, "hits"), 0), "id")),
            id);
        ck_assert_int_ge(json_integer_value(json_object_get(r, "ingest_nodes")), 1);
        json_decref(r);
        r = search(port, test + (size_t)(NQ + 3 + i) * DIM, 5, "indexed", false, 200);
        ck_assert(!hits_have(r, id));
        json_decref(r);
    }
    /* A range after every record: the nodes skip their fresh data unread, and say how much. */
    {
        char *fv = vec_text(test + (size_t)(NQ + 3) * DIM);
        size_t cap = strlen(fv) + 128;
        char *body = malloc(cap);
        snprintf(body, cap, "{\"vector\": %s, \"k\": 5, \"from_ts\": %" PRId64 "}", fv, now - 99);
        json_t *r = http_json(port, "/v1/collections/fm/search", body, 200);
        ck_assert_uint_eq(json_array_size(json_object_get(r, "hits")), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(r, "fresh_records_scanned")), 0);
        ck_assert_int_ge(json_integer_value(json_object_get(r, "fresh_records_pruned")), 3);
        json_decref(r);
        free(body);
        free(fv);
    }
    /* The index parts those searches went through, by thread: both series there, and together
     * at least one part for each of the searches above (dozens, over several windows). */
    double on_req = st_test_metric_port(port, "strata_search_parts_total{thread=\"request\"}");
    double on_help = st_test_metric_port(port, "strata_search_parts_total{thread=\"helper\"}");
    ck_assert_msg(on_req >= 0 && on_help >= 0 && on_req + on_help >= NQ,
                  "parts searched: %g on the request's thread, %g on helpers", on_req, on_help);
    /* Parts searched a second time (for their share of k first): exported, and never more
     * than the parts searched. */
    double twice = st_test_metric_port(port, "strata_search_parts_again_total");
    ck_assert_msg(twice >= 0 && twice <= on_req + on_help, "parts searched again: %g of %g", twice,
                  on_req + on_help);

    /* Bad requests: each its 4xx with a message. */
    char *vt = vec_text(test);
    char big[1024];
    struct {
        const char *body;
        long status;
        const char *token, *path;
    } bad[] = {
        {"{\"vector\": [1, 2, 3]}", 400, TOKEN, NULL},
        {"{\"vector\": [1, 2", 400, TOKEN, NULL},
        {"{\"vector\": 5}", 400, TOKEN, NULL},
        {NULL, 400, TOKEN, NULL}, /* k = 0 */
        {NULL, 400, TOKEN, NULL}, /* k = 1001 */
        {NULL, 400, TOKEN, NULL}, /* from_ts > to_ts */
        {NULL, 400, TOKEN, NULL}, /* a non-finite number */
        {NULL, 404, TOKEN, "/v1/collections/nope/search"},
        {NULL, 401, NULL, NULL},
        {NULL, 401, "wrong", NULL},
    };
    char *bodies[10] = {0};
    for (int i = 3; i < 10; i++) {
        size_t cap = strlen(vt) + 128;
        bodies[i] = malloc(cap);
        const char *extra = i == 3   ? ", \"k\": 0"
                            : i == 4 ? ", \"k\": 1001"
                            : i == 5 ? ", \"from_ts\": 5, \"to_ts\": 4"
                                     : "";
        snprintf(bodies[i], cap, "{\"vector\": %s%s}", vt, extra);
        if (i == 6) /* 1e999 is not a finite number */
            snprintf(bodies[i], cap, "{\"vector\": [1e999%s}", strchr(vt, ','));
        bad[i].body = bodies[i];
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct st_test_resp r =
            st_test_http_port(port, bad[i].path ? bad[i].path : "/v1/collections/fm/search",
                              bad[i].token, bad[i].body);
        ck_assert_msg(r.status == bad[i].status, "bad request %zu: HTTP %ld, want %ld: %s", i,
                      r.status, bad[i].status, r.body);
        json_t *j = json_loads(r.body, 0, NULL);
        ck_assert_msg(json_string_length(json_object_get(json_object_get(j, "error"), "message")) >
                          0,
                      "bad request %zu: no message: %s", i, r.body);
        json_decref(j);
        free(r.body);
    }
    /* An oversized body: 413. */
    size_t blen = 80 * 1024;
    char *huge = malloc(blen + 1);
    memset(huge, ' ', blen);
    huge[0] = '{';
    huge[blen - 1] = '}';
    huge[blen] = '\0';
    struct st_test_resp r413 = st_test_http_port(port, "/v1/collections/fm/search", TOKEN, huge);
    ck_assert_int_eq(r413.status, 413);
    free(r413.body);
    free(huge);
    for (int i = 0; i < 10; i++)
        free(bodies[i]);
    free(vt);
    (void)big;

    /* Every route wants the token (the probes and the status page do not). */
    st_test_http_auth_walk(port, "fm", TOKEN, NULL);

    /* SIGKILL and restart: the catalog's indexes load, nothing is rebuilt, answers equal. */
    char *before = answers(port);
    st_daemon_kill(&ia);
    int built = count_in_log(log_a, "indexed coll=fm");
    ck_assert_int_ge(built, NWIN);
    port = start_indexer(&ia, &e, e.cfg, log_a); /* the log starts over */
    st_daemon_wait_http_ok(&ia, port, "/readyz", 60000);
    wait_indexed(&e, &ia, port, 60000);
    char *after = answers(port);
    ck_assert_str_eq(after, before);
    assert_no_build(&e, log_a, log_i);

    /* A second indexer, killed in the middle of its builds, then restarted: it rebuilds what
     * was not committed, and its answers equal the first one's (builds are deterministic). */
    unsigned pb = start_indexer(&ib, &e, e.cfg_b, log_b);
    int64_t deadline = st_test_now_ms() + 120000;
    while (count_in_log(log_b, "building coll=fm") == 0) {
        st_daemon_assert_clean(&ib);
        ck_assert(st_test_now_ms() < deadline);
        st_test_sleep_ms(5);
    }
    st_daemon_kill(&ib);
    int b_done = old_lines(&e, log_b, "indexed");
    ck_assert_msg(b_done < NWIN, "the kill came after every build (%d)", b_done);
    pb = start_indexer(&ib, &e, e.cfg_b, log_b);
    st_daemon_wait_http_ok(&ib, pb, "/readyz", 60000);
    wait_indexed(&e, &ib, pb, 240000);
    char *other = answers(pb);
    ck_assert_str_eq(other, before);

    /* A redelivered sealed event changes nothing: republish the stream's sealed events. */
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(e.nats, &nc, &js);
    natsMsg *m = NULL;
    NATS_OK(js_GetLastMsg(&m, js, e.stream, "strata.fm.sealed", NULL, &jerr));
    jsPubAck *pa = NULL;
    NATS_OK(js_Publish(&pa, js, "strata.fm.sealed", natsMsg_GetData(m), natsMsg_GetDataLength(m),
                       NULL, &jerr));
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    st_nats_js_close(nc, js);
    ck_assert(
        ST_WAIT_UNTIL(!http_has(port, "/metrics",
                                "strata_indexer_events_total{collection=\"fm\",kind=\"noop\"} 0"),
                      30000));
    char *again = answers(port);
    ck_assert_str_eq(again, before);
    assert_no_build(&e, log_a, log_i);

    free(before);
    free(after);
    free(other);
    free(again);
    st_daemon_stop(&ib, 45000);
    st_daemon_stop(&ia, 45000);
    st_daemon_stop(&ing, 45000);
    st_test_rmrf(e.dir);
    free(e.dir);
    free(train);
    free(test);
}
END_TEST

/* Two hosts, each with one YAML running an ingest node and an indexer: the two ingest nodes
 * share the topic's partitions (one consumer group), each seals its part of every window, and
 * both indexers serve both parts with the same answers; an id whose newest version lives on
 * the other node wins; strong searches see fresh records held by either ingest node. */
START_TEST(test_two_ingest_two_indexers)
{
    train = st_test_fmnist("train-images-idx3-ubyte.gz", NTRAIN, DIM);
    test = st_test_fmnist("t10k-images-idx3-ubyte.gz", NQ + 10, DIM);
    struct env e;
    env_init(&e);
    char li_a[700], li_b[700], lx_a[700], lx_b[700];
    snprintf(li_a, sizeof(li_a), "%s/ingest-a.log", e.dir);
    snprintf(li_b, sizeof(li_b), "%s/ingest-b.log", e.dir);
    snprintf(lx_a, sizeof(lx_a), "%s/indexer-a.log", e.dir);
    snprintf(lx_b, sizeof(lx_b), "%s/indexer-b.log", e.dir);
    struct st_daemon ina, inb, ixa, ixb;
    const char *const aa[] = {e.ingest_bin, "--config", e.cfg, NULL};
    const char *const ab[] = {e.ingest_bin, "--config", e.cfg_b, NULL};
    st_daemon_start(&ina, li_a, aa, NULL);
    st_daemon_start(&inb, li_b, ab, NULL);
    unsigned pa = st_daemon_wait_logged_number(&ina, "HTTP on port ", 60000);
    unsigned pb = st_daemon_wait_logged_number(&inb, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&ina, pa, "/readyz", 60000);
    st_daemon_wait_http_ok(&inb, pb, "/readyz", 60000);
    /* One partition each, before anything is produced. */
    ck_assert(ST_WAIT_UNTIL(http_has(pa, "/metrics", "strata_kafka_consumer_lag{") &&
                                http_has(pb, "/metrics", "strata_kafka_consumer_lag{"),
                            60000));
    unsigned xa = start_indexer(&ixa, &e, e.cfg, lx_a);
    unsigned xb = start_indexer(&ixb, &e, e.cfg_b, lx_b);
    st_daemon_wait_http_ok(&ixa, xa, "/readyz", 60000);
    st_daemon_wait_http_ok(&ixb, xb, "/readyz", 60000);

    produce_windows(&e);
    wait_indexed_parts(&e, &ixa, xa, 240000, 2);
    wait_indexed_parts(&e, &ixb, xb, 240000, 2);
    char *ans_a = answers(xa), *ans_b = answers(xb);
    ck_assert_str_eq(ans_a, ans_b);
    /* Both nodes' data: ids from both partitions are served by both indexers. */
    for (int i = 0; i < NTRAIN; i += 20 * 7 + 1) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/collections/fm/records/t%d?consistency=indexed", i);
        ck_assert_int_eq(http_status(xa, path), 200);
        ck_assert_int_eq(http_status(xb, path), 200);
    }
    /* up-1: its old version was sealed by one node, its newest by the other. */
    json_t *u = http_json(xb, "/v1/collections/fm/records/up-1?consistency=indexed", NULL, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(u, "ts")), e.w0 + 2 * 60000 + 700);
    json_decref(u);
    json_t *r = search(xa, test + (size_t)NQ * DIM, 10, "indexed", true, 200);
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(r, "hits"), i, h)
    {
        if (strcmp(json_string_value(json_object_get(h, "id")), "up-1") == 0)
            ck_assert_double_eq_tol(
                json_number_value(json_array_get(json_object_get(h, "vector"), 300)),
                test[(size_t)(NQ + 1) * DIM + 300], 1e-3);
    }
    json_decref(r);
    /* Fresh records on each ingest node: strong sees both, from either indexer. */
    rd_kafka_t *p = st_kafka_producer(e.brokers);
    int64_t now = st_clock_wall_ms(NULL);
    send_json(p, &e, 0, rec("fresh-p0", now - 100, test + (size_t)(NQ + 3) * DIM));
    send_json(p, &e, 1, rec("fresh-p1", now - 100, test + (size_t)(NQ + 4) * DIM));
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    ck_assert(ST_WAIT_UNTIL(http_status(pa, "/v1/collections/fm/records/fresh-p0") == 200 ||
                                http_status(pb, "/v1/collections/fm/records/fresh-p0") == 200,
                            30000));
    ck_assert(ST_WAIT_UNTIL(http_status(pa, "/v1/collections/fm/records/fresh-p1") == 200 ||
                                http_status(pb, "/v1/collections/fm/records/fresh-p1") == 200,
                            30000));
    /* Each fresh record is on exactly one ingest node. */
    ck_assert_int_ne(http_status(pa, "/v1/collections/fm/records/fresh-p0"),
                     http_status(pb, "/v1/collections/fm/records/fresh-p0"));
    for (int x = 0; x < 2; x++) {
        unsigned port = x ? xb : xa;
        for (int f = 0; f < 2; f++) {
            json_t *sr = search(port, test + (size_t)(NQ + 3 + f) * DIM, 3, "strong", false, 200);
            ck_assert_str_eq(json_string_value(json_object_get(
                                 json_array_get(json_object_get(sr, "hits"), 0), "id")),
                             f ? "fresh-p1" : "fresh-p0");
            ck_assert_int_eq(json_integer_value(json_object_get(sr, "ingest_nodes")), 2);
            json_decref(sr);
        }
    }
    /* An id whose old version is fresh on one node and whose newer version is fresh on the
     * other: a strong search near the old vector never returns the old version. */
    p = st_kafka_producer(e.brokers);
    now = st_clock_wall_ms(NULL);
    send_json(p, &e, 0, rec("cross-1", now - 300, test + (size_t)(NQ + 6) * DIM));
    send_json(p, &e, 1, rec("cross-1", now - 200, test + (size_t)(NQ + 7) * DIM));
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    /* both versions applied: each node has one (both answer 200) */
    ck_assert(ST_WAIT_UNTIL(http_status(pa, "/v1/collections/fm/records/cross-1") == 200 &&
                                http_status(pb, "/v1/collections/fm/records/cross-1") == 200,
                            30000));
    for (int x = 0; x < 2; x++) {
        json_t *sr = search(x ? xb : xa, test + (size_t)(NQ + 6) * DIM, 10, "strong", false, 200);
        size_t k;
        json_t *hh;
        json_array_foreach(json_object_get(sr, "hits"), k, hh)
        {
            if (strcmp(json_string_value(json_object_get(hh, "id")), "cross-1") == 0)
                ck_assert_int_eq(json_integer_value(json_object_get(hh, "ts")), now - 200);
        }
        json_decref(sr);
    }
    json_t *cg = http_json(xa, "/v1/collections/fm/records/cross-1", NULL, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(cg, "ts")), now - 200);
    json_decref(cg);

    /* An ingest node that stops says goodbye: strong searches then ask only the other. */
    st_daemon_stop(&inb, 45000);
    ck_assert(ST_WAIT_UNTIL(http_has(xa, "/metrics", "strata_indexer_parts"), 5000));
    int64_t deadline = st_test_now_ms() + 10000;
    for (;;) {
        json_t *sr = search(xa, test + (size_t)(NQ + 3) * DIM, 3, "strong", false, 200);
        json_int_t nodes = json_integer_value(json_object_get(sr, "ingest_nodes"));
        json_decref(sr);
        if (nodes == 1)
            break;
        ck_assert(st_test_now_ms() < deadline);
        st_test_sleep_ms(50);
    }
    free(ans_a);
    free(ans_b);
    st_daemon_stop(&ixa, 45000);
    st_daemon_stop(&ixb, 45000);
    st_daemon_stop(&ina, 45000);
    st_test_rmrf(e.dir);
    free(e.dir);
    free(train);
    free(test);
}
END_TEST

/* ---- searches while the serving set changes ---- */

struct searcher {
    unsigned port;
    int seed;
    _Atomic bool *stop;
    long total, errors;
    char last_error[512];
};

static void *searcher_main(void *arg)
{
    struct searcher *sc = arg;
    for (int n = 0; !atomic_load(sc->stop); n++) {
        int q = (sc->seed * 7 + n) % NQ;
        bool strong = n % 2 == 0;
        char *vt = vec_text(test + (size_t)q * DIM);
        size_t cap = strlen(vt) + 128;
        char *body = malloc(cap);
        snprintf(body, cap, "{\"vector\": %s, \"k\": 10, \"consistency\": \"%s\"}", vt,
                 strong ? "strong" : "indexed");
        struct st_test_resp r =
            st_test_http_port(sc->port, "/v1/collections/fm/search", TOKEN, body);
        json_t *j = json_loads(r.body, 0, NULL);
        size_t nh = json_array_size(json_object_get(j, "hits"));
        /* strong always has hits: the watermark records stay fresh in the open window */
        bool ok = r.status == 200 && nh <= 10 && (!strong || nh > 0);
        if (ok && n % 5 == 0) { /* and get-by-id of the first hit */
            const char *id = json_string_value(
                json_object_get(json_array_get(json_object_get(j, "hits"), 0), "id"));
            char path[128];
            snprintf(path, sizeof(path), "/v1/collections/fm/records/%s?consistency=indexed",
                     id ? id : "none");
            long st = id != NULL ? http_status(sc->port, path) : 200;
            ok = st == 200 || st == 404; /* 404: the window expired meanwhile */
        }
        sc->total++;
        if (!ok) {
            sc->errors++;
            snprintf(sc->last_error, sizeof(sc->last_error), "HTTP %ld: %.400s", r.status, r.body);
        }
        json_decref(j);
        free(r.body);
        free(body);
        free(vt);
    }
    return NULL;
}

/* Train vectors t0..t899, 300 to each of the three 10 s windows from w0, in batches of 20
 * alternating over the two partitions, then one record per partition at now - 500 ms (the
 * watermark). Returns the producer (not flushed). */
static rd_kafka_t *produce_three(struct env *e, int64_t w0, int64_t now)
{
    rd_kafka_t *p = st_kafka_producer(e->brokers);
    for (int b = 0; b < 900 / 20; b++) {
        json_t *recs = json_array();
        for (int i = b * 20; i < (b + 1) * 20; i++) {
            char id[32];
            snprintf(id, sizeof(id), "t%d", i);
            json_array_append_new(
                recs, rec(id, w0 + (int64_t)(i / 300) * 10000 + i % 300, train + (size_t)i * DIM));
        }
        send_json(p, e, b % 2, json_pack("{s:s,s:o}", "collection", "fm", "records", recs));
    }
    for (int part = 0; part < 2; part++)
        send_json(p, e, part,
                  rec(part ? "wm-1" : "wm-0", now - 500, test + (size_t)(NQ + 9) * DIM));
    return p;
}

/* Four clients searching and getting by id on port until stop. */
static void searchers_start(struct searcher sc[4], pthread_t th[4], unsigned port,
                            _Atomic bool *stop)
{
    for (int i = 0; i < 4; i++) {
        sc[i] = (struct searcher){.port = port, .seed = i, .stop = stop};
        ck_assert_int_eq(pthread_create(&th[i], NULL, searcher_main, &sc[i]), 0);
    }
}

/* Stops them: none may have seen an error, and together they made more than 100 requests. */
static void searchers_stop(struct searcher sc[4], pthread_t th[4], _Atomic bool *stop)
{
    atomic_store(stop, true);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += sc[i].total;
        ck_assert_msg(sc[i].errors == 0, "searcher %d: %ld errors of %ld, last: %s", i,
                      sc[i].errors, sc[i].total, sc[i].last_error);
    }
    ck_assert_int_gt(total, 100);
}

static double fx_metric(unsigned port, const char *name, const char *coll);

/* Windows of 10 s: sealed, indexed, re-sealed with late data (version 2), tiered to IVF-PQ
 * after cold_after, expired by TTL — while four clients search (strong and indexed) and get
 * records without pause: no error, and every expired window's files are gone at the end. The
 * newest window goes cold after the others: its IVF-PQ index adopts their quantizer (the
 * records are alike), and the searches above ran over parts searched as one index. */
START_TEST(test_search_during_swaps)
{
    train = st_test_fmnist("train-images-idx3-ubyte.gz", NTRAIN, DIM);
    test = st_test_fmnist("t10k-images-idx3-ubyte.gz", NQ + 10, DIM);
    struct env e;
    /* ttl leaves the late record's re-seal (version 2) time to be indexed before the window
     * expires even on a loaded machine (a CI run under ASan once took longer than 45 s). */
    env_init_cfg(&e, "    window: 10s\n    grace: 1s\n    max_lateness: 1m\n    ttl: 80s\n"
                     "    cold_after: 15s\n"
                     "    cold_index: {type: ivfpq, nlist: 16, m: 98, nbits: 8}\n");
    char lx[700];
    struct st_daemon ing, ix;
    unsigned ip, xp;
    start_pair(&e, &ing, &ix, lx, sizeof(lx), &ip, &xp);

    /* Three windows ending 5-25 s ago, 300 records each, then the watermark. */
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 35000) / 10000 * 10000;
    rd_kafka_t *p = produce_three(&e, w0, now);
    ck_assert_int_eq(rd_kafka_flush(p, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    /* The searchers start once the watermark records are fresh on the ingest node: from then
     * on a strong search always has hits. */
    ck_assert(ST_WAIT_UNTIL(http_status(ip, "/v1/collections/fm/records/wm-0") == 200 &&
                                http_status(ip, "/v1/collections/fm/records/wm-1") == 200,
                            30000));
    _Atomic bool stop = false;
    struct searcher sc[4];
    pthread_t th[4];
    searchers_start(sc, th, xp, &stop);
    /* Watch: a window at version 2 (after the late record below), a cold window, then none. */
    bool saw_v2 = false, saw_cold = false, late_sent = false;
    int64_t deadline = st_test_now_ms() + 240000;
    for (;;) {
        struct st_test_resp r = st_test_http_port(xp, "/v1/collections/fm/windows", TOKEN, NULL);
        json_t *a = json_loads(r.body, 0, NULL);
        free(r.body);
        size_t i, old = 0;
        json_t *w;
        json_array_foreach(a, i, w)
        {
            int64_t st = json_integer_value(json_object_get(w, "start"));
            if (st > w0 + 20000)
                continue; /* the watermark's window */
            old++;
            bool indexed = strcmp(json_string_value(json_object_get(w, "state")), "indexed") == 0;
            saw_cold = saw_cold || json_is_true(json_object_get(w, "cold"));
            saw_v2 = saw_v2 || (indexed && json_integer_value(json_object_get(w, "version")) >= 2);
            if (!late_sent && indexed && st == w0 + 20000) { /* late data for the newest */
                send_json(p, &e, 0, rec("late-1", w0 + 20000 + 400, test + (size_t)(NQ + 5) * DIM));
                ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
                late_sent = true;
            }
        }
        json_decref(a);
        if (late_sent && saw_v2 && saw_cold && old == 0)
            break;
        st_daemon_assert_clean(&ix);
        ck_assert_msg(st_test_now_ms() < deadline,
                      "late sent %d, version 2 seen %d, cold seen %d, %zu windows left", late_sent,
                      saw_v2, saw_cold, old);
        st_test_sleep_ms(100);
    }
    rd_kafka_destroy(p);
    searchers_stop(sc, th, &stop);
    ck_assert_double_ge(fx_metric(xp, "strata_index_quantizers_adopted_total", "fm"), 1);
    /* Only the catalog (and the open window's parts, if it sealed) remain on disk. */
    char idir[700];
    snprintf(idir, sizeof(idir), "%s/indexer/fm", e.data);
    DIR *d = opendir(idir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "CATALOG") == 0)
            continue;
        long long st = 0;
        ck_assert_msg(sscanf(strchr(de->d_name, '@') + 1, "%lld", &st) == 1 && st > w0 + 20000,
                      "%s left behind", de->d_name);
    }
    closedir(d);
    st_daemon_stop(&ix, 45000);
    st_daemon_stop(&ing, 45000);
    st_test_rmrf(e.dir);
    free(e.dir);
    free(train);
    free(test);
}
END_TEST

static long search_status(unsigned port, const char *consistency)
{
    char *vt = vec_text(test);
    size_t cap = strlen(vt) + 96;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"vector\": %s, \"k\": 5, \"consistency\": \"%s\"}", vt, consistency);
    struct st_test_resp r = st_test_http_port(port, "/v1/collections/fm/search", TOKEN, body);
    free(r.body);
    free(body);
    free(vt);
    return r.status;
}

/* NATS down when the indexer starts: it serves indexed searches (none yet), refuses strong
 * ones and readiness, and stops on SIGTERM. NATS lost later: strong searches are refused
 * (503), never answered from a node set that can no longer be trusted; indexed searches go
 * on; when NATS is back, strong searches work again once discovery has settled. */
START_TEST(test_indexer_nats_outage)
{
    train = st_test_fmnist("train-images-idx3-ubyte.gz", NTRAIN, DIM);
    test = st_test_fmnist("t10k-images-idx3-ubyte.gz", NQ + 10, DIM);
    struct st_own_nats n = {0};
    n.port = st_free_port();
    snprintf(n.url, sizeof(n.url), "nats://127.0.0.1:%u", n.port);
    n.dir = st_test_tmpdir("nats");
    nats_override = n.url;
    struct env e;
    env_init(&e);
    char li[700], lx[700];
    snprintf(li, sizeof(li), "%s/ingest.log", e.dir);
    snprintf(lx, sizeof(lx), "%s/indexer.log", e.dir);
    struct st_daemon ing, ix;

    /* NATS down at start. */
    unsigned xp = start_indexer(&ix, &e, e.cfg, lx);
    ck_assert_int_eq(http_status(xp, "/healthz"), 200);
    ck_assert(ST_WAIT_UNTIL(http_status(xp, "/v1/collections/fm") == 200, 10000));
    ck_assert_int_eq(http_status(xp, "/readyz"), 503);
    ck_assert_int_eq(search_status(xp, "indexed"), 200);
    ck_assert_int_eq(search_status(xp, "strong"), 503);
    int64_t t0 = st_test_now_ms();
    st_daemon_stop(&ix, 15000);
    ck_assert_int_lt(st_test_now_ms() - t0, 15000);

    /* NATS up, data indexed. */
    st_own_nats_start(&n);
    xp = start_indexer(&ix, &e, e.cfg, lx);
    const char *const aa[] = {e.ingest_bin, "--config", e.cfg, NULL};
    st_daemon_start(&ing, li, aa, NULL);
    unsigned ip = st_daemon_wait_logged_number(&ing, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&ing, ip, "/readyz", 60000);
    st_daemon_wait_http_ok(&ix, xp, "/readyz", 60000);
    produce_windows(&e);
    wait_indexed(&e, &ix, xp, 240000);
    ck_assert(ST_WAIT_UNTIL(search_status(xp, "strong") == 200, 30000));

    /* NATS lost: strong refused, indexed served. */
    st_own_nats_kill(&n);
    ck_assert(ST_WAIT_UNTIL(search_status(xp, "strong") == 503, 15000));
    ck_assert_int_eq(search_status(xp, "indexed"), 200);
    json_t *r = search(xp, test, 10, "indexed", false, 200);
    ck_assert_uint_eq(json_array_size(json_object_get(r, "hits")), 10);
    json_decref(r);
    ck_assert_int_eq(http_status(xp, "/readyz"), 503);

    /* Back: strong works again (after re-settling). */
    st_own_nats_start(&n);
    ck_assert(ST_WAIT_UNTIL(search_status(xp, "strong") == 200, 60000));

    /* The stream deleted under the running indexer (its durable consumer goes with it): the
     * indexer binds again, creating both, and consumes what is published there afterwards (a
     * sealed event of a window it serves: acked as a no-op). */
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(n.url, &nc, &js);
    natsMsg *m = NULL;
    NATS_OK(js_GetLastMsg(&m, js, e.stream, "strata.fm.sealed", NULL, &jerr));
    NATS_OK(js_DeleteStream(js, e.stream, NULL, &jerr));
    jsConsumerInfo *ci = NULL;
    ck_assert(ST_WAIT_UNTIL(
        js_GetConsumerInfo(&ci, js, e.stream, "host-a-indexer", NULL, &jerr) == NATS_OK, 30000));
    jsConsumerInfo_Destroy(ci);
    ci = NULL;
    ck_assert_int_ge(count_in_log(lx, "binding again"), 1);
    jsPubAck *pa = NULL;
    NATS_OK(js_Publish(&pa, js, "strata.fm.sealed", natsMsg_GetData(m), natsMsg_GetDataLength(m),
                       NULL, &jerr));
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    bool acked = false;
    int64_t dl = st_test_now_ms() + 30000;
    while (!acked && st_test_now_ms() < dl) {
        if (js_GetConsumerInfo(&ci, js, e.stream, "host-a-indexer", NULL, &jerr) == NATS_OK)
            acked = ci->AckFloor.Stream >= 1 && ci->NumAckPending == 0;
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        if (!acked)
            st_test_sleep_ms(100);
    }
    ck_assert_msg(acked, "the sealed event on the new stream was not consumed");
    st_nats_js_close(nc, js);
    st_daemon_stop(&ix, 45000);
    st_daemon_stop(&ing, 45000);
    nats_override = NULL;
    st_own_nats_free(&n);
    st_test_rmrf(e.dir);
    free(e.dir);
    free(train);
    free(test);
}
END_TEST

/* ---- error returns at the running indexer's own I/O sites (issue 16) ---- */

/*
 * The daemons come from the same build as this test: with assertions (the ASan build) the
 * fault points STRATA_FAULT_POINTS names are armed; under NDEBUG (the normal build) they are
 * compiled out and the variable must change nothing.
 */
#ifdef NDEBUG
#define FX_LIVE false
#else
#define FX_LIVE true
#endif

#define FX_WIN       3   /* windows produced */
#define FX_PER       100 /* records per window */
#define FX_N         (FX_WIN * FX_PER)
#define FX_Q         20 /* queries compared */
#define FX_WINDOWING "    window: 1m\n    grace: 1s\n    max_lateness: 1h\n"

/* Polls cond every 100 ms until it holds or ms pass; yields whether it held. */
#define FX_WAIT(cond, ms)                                                                          \
    __extension__({                                                                                \
        int64_t fx_dl_ = st_test_now_ms() + (ms);                                                  \
        bool fx_ok_;                                                                               \
        while (!(fx_ok_ = (cond)) && st_test_now_ms() < fx_dl_)                                    \
            st_test_sleep_ms(100);                                                                 \
        fx_ok_;                                                                                    \
    })

enum { FX_RENAME, FX_SYNC, FX_COMMIT, FX_CRASH, FX_MKDIR, FX_BAD, FX_OK, FX_COUNT };

struct fx_idx {
    const char *node;   /* its node_id: its own durable consumer <node>-indexer */
    const char *fault;  /* STRATA_FAULT_POINTS of its first run (NULL: none) */
    const char *step;   /* the log line of a failed attempt ("fetch failed", "commit failed") */
    const char *reason; /* and what that line must say */
    struct st_daemon d;
    unsigned port;
    char cfg[700], data[700], dir[720], log[2][700];
};

static struct fx_idx fx[FX_COUNT] = {
    [FX_RENAME] = {.node = "fx-rename",
                   .fault = "idx.fetch.rename",
                   .step = "fetch failed",
                   .reason = "cannot rename to"},
    [FX_SYNC] = {.node = "fx-sync",
                 .fault = "idx.fetch.sync_dir",
                 .step = "fetch failed",
                 .reason = "cannot sync the directory after renaming"},
    [FX_COMMIT] = {.node = "fx-commit",
                   .fault = "idx.build.before_commit",
                   .step = "commit failed",
                   .reason = "before the catalog commit"},
    [FX_CRASH] = {.node = "fx-crash", .fault = "idx.build.before_commit=crash@0"},
    [FX_MKDIR] = {.node = "fx-mkdir", .fault = "idx.mkdir"},
    [FX_BAD] = {.node = "fx-bad", .fault = "idx.fetch.unlink_bad"},
    [FX_OK] = {.node = "fx-ok"},
};

static void fx_start(struct fx_idx *x, const struct env *e, int run)
{
    char fault[160];
    snprintf(fault, sizeof(fault), "STRATA_FAULT_POINTS=%s", x->fault ? x->fault : "");
    const char *const env[] = {fault, NULL};
    const char *const argv[] = {e->indexer_bin, "--config", x->cfg, NULL};
    st_daemon_start(&x->d, x->log[run], argv, run == 0 && x->fault != NULL ? env : NULL);
}

static void fx_start_port(struct fx_idx *x, const struct env *e, int run)
{
    fx_start(x, e, run);
    x->port = st_daemon_wait_logged_number(&x->d, "HTTP on port ", 60000);
}

/* Lines of the log at path holding a and (unless NULL) b. */
static int fx_lines(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL);
    fclose(f);
    return n;
}

static int64_t fx_start_of(const struct env *e, int w)
{
    return e->w0 + (int64_t)w * 60000;
}

/* "<verb> coll=fm node=host-a start=<window w> " */
static const char *fx_about(const struct env *e, const char *verb, const char *coll, int w)
{
    static char s[160];
    snprintf(s, sizeof(s), "%s coll=%s node=host-a start=%" PRId64 " ", verb, coll,
             fx_start_of(e, w));
    return s;
}

/* FX_WIN windows of FX_PER train vectors (t0, t1, ...), 13-15 minutes old, then one record
 * per partition near now that moves the watermark past them. */
static void fx_produce(struct env *e)
{
    finish_produce(e, produce_train(e, FX_N, FX_PER, NULL));
}

/* The stream's sealed events of collection fm up to stream sequence upto. */
struct fx_sealed {
    int n;          /* how many (the produced windows' and any sealed since) */
    int ours;       /* of the FX_WIN produced windows */
    uint64_t first; /* stream sequence of the first, 0 when none */
    uint64_t last_ours;
    char *w0_event; /* the first window's event (malloc'd JSON), NULL when not there */
};

static struct fx_sealed fx_scan(jsCtx *js, const struct env *e, uint64_t upto)
{
    struct fx_sealed r = {0};
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    NATS_OK(js_GetStreamInfo(&si, js, e->stream, NULL, &jerr));
    uint64_t last = si->State.LastSeq < upto ? si->State.LastSeq : upto;
    jsStreamInfo_Destroy(si);
    for (uint64_t seq = 1; seq <= last; seq++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, js, e->stream, seq, NULL, &jerr) != NATS_OK)
            continue;
        if (strcmp(natsMsg_GetSubject(m), "strata.fm.sealed") == 0) {
            json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
            int64_t start = json_integer_value(json_object_get(j, "start"));
            r.n++;
            if (r.first == 0)
                r.first = seq;
            if (start >= e->w0 && start < fx_start_of(e, FX_WIN)) {
                r.ours++;
                r.last_ours = seq;
            }
            if (start == e->w0 && r.w0_event == NULL)
                r.w0_event = strndup(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
            json_decref(j);
        }
        natsMsg_Destroy(m);
    }
    return r;
}

/* A durable consumer's state, and the sealed events of fm delivered to it. */
struct fx_cons {
    bool exists;
    int64_t pending; /* delivered, not acknowledged */
    uint64_t floor;  /* stream sequence below which everything is acknowledged */
    struct fx_sealed sealed;
};

static struct fx_cons fx_consumer(jsCtx *js, const struct env *e, const char *node)
{
    struct fx_cons c = {0};
    char durable[96];
    snprintf(durable, sizeof(durable), "%s-indexer", node);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    if (js_GetConsumerInfo(&ci, js, e->stream, durable, NULL, &jerr) != NATS_OK)
        return c;
    c.exists = true;
    c.pending = ci->NumAckPending;
    c.floor = ci->AckFloor.Stream;
    uint64_t delivered = ci->Delivered.Stream;
    jsConsumerInfo_Destroy(ci);
    c.sealed = fx_scan(js, e, delivered);
    free(c.sealed.w0_event);
    c.sealed.w0_event = NULL;
    return c;
}

/* Every sealed event of fm delivered to node's consumer is unacknowledged, the produced
 * windows' among them, and nothing else is: the pending count is theirs, the ack floor below
 * the first. */
static bool fx_all_held(jsCtx *js, const struct env *e, const char *node, char *why, size_t cap)
{
    struct fx_cons c = fx_consumer(js, e, node);
    snprintf(why, cap,
             "consumer %s: exists %d, %" PRId64 " pending, ack floor %" PRIu64
             ", %d sealed events of fm delivered (%d of the produced windows, the first at %" PRIu64
             ")",
             node, c.exists, c.pending, c.floor, c.sealed.n, c.sealed.ours, c.sealed.first);
    return c.exists && c.sealed.ours == FX_WIN && c.pending == c.sealed.n &&
           c.floor < c.sealed.first;
}

/* node's consumer holds `pending` messages unacknowledged, and has acknowledged every sealed
 * event of the produced windows (its ack floor at or past the last). */
static bool fx_acked(jsCtx *js, const struct env *e, const char *node, int64_t pending, char *why,
                     size_t cap)
{
    struct fx_cons c = fx_consumer(js, e, node);
    snprintf(why, cap,
             "consumer %s: exists %d, %" PRId64 " pending (want %" PRId64 "), ack floor %" PRIu64
             ", the produced windows' last sealed event at %" PRIu64,
             node, c.exists, c.pending, pending, c.floor, c.sealed.last_ours);
    return c.exists && c.sealed.ours == FX_WIN && c.pending == pending &&
           c.floor >= c.sealed.last_ours;
}

/* How many of the produced windows the indexer lists as indexed with one part of FX_PER
 * records; *listed: how many of them it lists at all (indexed or not). */
static int fx_indexed(const struct env *e, unsigned port, int *listed)
{
    struct st_test_resp r = st_test_http_port(port, "/v1/collections/fm/windows", TOKEN, NULL);
    json_t *a = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    int indexed = 0, all = 0;
    size_t i;
    json_t *w;
    json_array_foreach(a, i, w)
    {
        int64_t start = json_integer_value(json_object_get(w, "start"));
        if (start < e->w0 || start >= fx_start_of(e, FX_WIN))
            continue;
        all++;
        json_t *parts = json_object_get(w, "parts");
        indexed +=
            strcmp(json_string_value(json_object_get(w, "state")), "indexed") == 0 &&
            json_array_size(parts) == 1 &&
            json_integer_value(json_object_get(json_array_get(parts, 0), "records")) == FX_PER;
    }
    json_decref(a);
    if (listed != NULL)
        *listed = all;
    return indexed;
}

static void fx_wait_indexed(const struct env *e, struct fx_idx *x, int timeout_ms)
{
    int n = 0;
    bool ok = FX_WAIT((st_daemon_assert_clean(&x->d), n = fx_indexed(e, x->port, NULL)) == FX_WIN,
                      timeout_ms);
    ck_assert_msg(ok, "%s: %d of the %d windows indexed in time", x->node, n, FX_WIN);
}

/* The files of the produced windows in a collection's directory (other windows' and the
 * CATALOG aside): how many; *parts: how many of them are a part's files at version 1 (the
 * segment, the HNSW index); the first other name goes to stray. */
static int fx_files(const struct env *e, const char *dir, int *parts, char *stray, size_t cap)
{
    int n = 0;
    *parts = 0;
    stray[0] = '\0';
    DIR *d = opendir(dir);
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        long long start = 0;
        if (de->d_name[0] == '.' || sscanf(de->d_name, "host-a@%lld@", &start) != 1 ||
            start < e->w0 || start >= fx_start_of(e, FX_WIN))
            continue;
        n++;
        char seg[96], hnsw[96];
        snprintf(seg, sizeof(seg), "host-a@%lld@v1.seg", start);
        snprintf(hnsw, sizeof(hnsw), "host-a@%lld@v1.hnsw", start);
        if (strcmp(de->d_name, seg) == 0 || strcmp(de->d_name, hnsw) == 0)
            (*parts)++;
        else if (stray[0] == '\0')
            snprintf(stray, cap, "%s", de->d_name);
    }
    if (d != NULL)
        closedir(d);
    return n;
}

/* An indexed search over the produced windows only (a window sealed since, as the clock moves
 * on, is not in every indexer yet). */
static json_t *fx_search(const struct env *e, unsigned port, const float *q)
{
    char *vt = vec_text(q);
    size_t cap = strlen(vt) + 256;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"vector\": %s, \"k\": 10, \"consistency\": \"indexed\", \"ef\": 96, "
             "\"from_ts\": %" PRId64 ", \"to_ts\": %" PRId64 "}",
             vt, e->w0, fx_start_of(e, FX_WIN) - 1);
    json_t *j = http_json(port, "/v1/collections/fm/search", body, 200);
    free(body);
    free(vt);
    return j;
}

/* The hit ids of FX_Q searches, as one string. */
static char *fx_answers(const struct env *e, unsigned port)
{
    size_t cap = FX_Q * 10 * 8 + FX_Q + 1, n = 0;
    char *s = calloc(1, cap);
    for (int q = 0; q < FX_Q; q++) {
        json_t *r = fx_search(e, port, test + (size_t)q * DIM);
        size_t i;
        json_t *h;
        json_array_foreach(json_object_get(r, "hits"), i, h) n +=
            (size_t)snprintf(s + n, cap - n, "%s,", json_string_value(json_object_get(h, "id")));
        n += (size_t)snprintf(s + n, cap - n, ";");
        json_decref(r);
    }
    return s;
}

static const float *fx_dist_base;
static float fx_dist[FX_N];

static int fx_by_dist(const void *a, const void *b)
{
    float x = fx_dist[*(const int *)a], y = fx_dist[*(const int *)b];
    return x < y ? -1 : x > y;
}

/* The healthy indexer's answers are the exact top-10 of the produced records (a query whose
 * 10th and 11th nearest tie is skipped: either is right); at least most queries count. */
static void fx_assert_exact(const struct env *e, unsigned port)
{
    int checked = 0;
    for (int q = 0; q < FX_Q; q++) {
        fx_dist_base = test + (size_t)q * DIM;
        int order[FX_N];
        for (int i = 0; i < FX_N; i++) {
            fx_dist[i] = l2(fx_dist_base, train + (size_t)i * DIM);
            order[i] = i;
        }
        qsort(order, FX_N, sizeof(order[0]), fx_by_dist);
        if (fx_dist[order[9]] == fx_dist[order[10]])
            continue;
        json_t *r = fx_search(e, port, fx_dist_base);
        ck_assert_uint_eq(json_array_size(json_object_get(r, "hits")), 10);
        for (int k = 0; k < 10; k++) {
            char id[32];
            snprintf(id, sizeof(id), "t%d", order[k]);
            ck_assert_msg(hits_have(r, id), "query %d: %s (exact rank %d) not found", q, id, k);
        }
        json_decref(r);
        checked++;
    }
    ck_assert_int_ge(checked, FX_Q - 2);
}

/* Get-by-id from the indexes finds every produced record with its timestamp (and, sampled,
 * its vector). */
static void fx_assert_records(const struct fx_idx *x, const struct env *e)
{
    for (int i = 0; i < FX_N; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/collections/fm/records/t%d?consistency=indexed", i);
        struct st_test_resp r = st_test_http_port(x->port, path, TOKEN, NULL);
        ck_assert_msg(r.status == 200, "%s: GET %s: HTTP %ld %s", x->node, path, r.status, r.body);
        json_t *g = json_loads(r.body, 0, NULL);
        free(r.body);
        ck_assert_int_eq(json_integer_value(json_object_get(g, "ts")),
                         fx_start_of(e, i / FX_PER) + i % FX_PER);
        if (i % 29 == 0) {
            json_t *v = json_object_get(g, "vector");
            ck_assert_uint_eq(json_array_size(v), DIM);
            for (int dd = 0; dd < DIM; dd += 7)
                ck_assert_double_eq_tol(json_number_value(json_array_get(v, (size_t)dd)),
                                        train[(size_t)i * DIM + (size_t)dd], 1e-3);
        }
        json_decref(g);
    }
}

static double fx_metric(unsigned port, const char *name, const char *coll)
{
    char series[128];
    snprintf(series, sizeof(series), "%s{collection=\"%s\"}", name, coll);
    return st_test_metric_port(port, series);
}

/* A faulted indexer of the first run serves nothing of the produced windows: none listed as
 * indexed (each still waiting: listed), no indexed search hit, no record by id. */
static void fx_assert_nothing_served(const struct env *e, const struct fx_idx *x)
{
    int listed = 0;
    ck_assert_int_eq(fx_indexed(e, x->port, &listed), 0);
    ck_assert_msg(listed == FX_WIN, "%s lists %d of the %d windows as waiting", x->node, listed,
                  FX_WIN);
    json_t *r = fx_search(e, x->port, test);
    ck_assert_uint_eq(json_array_size(json_object_get(r, "hits")), 0);
    json_decref(r);
    ck_assert_int_eq(http_status(x->port, "/v1/collections/fm/records/t0?consistency=indexed"),
                     404);
}

/* fx-bad lists fmbad's one window, not indexed, and finds nothing there. */
static void fx_assert_bad_unserved(const struct fx_idx *x)
{
    json_t *a = http_json(x->port, "/v1/collections/fmbad/windows", NULL, 200);
    ck_assert_uint_eq(json_array_size(a), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "state")), "indexing");
    json_decref(a);
    char *vt = vec_text(train);
    size_t cap = strlen(vt) + 64;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"vector\": %s, \"k\": 10, \"consistency\": \"indexed\"}", vt);
    json_t *r = http_json(x->port, "/v1/collections/fmbad/search", body, 200);
    ck_assert_uint_eq(json_array_size(json_object_get(r, "hits")), 0);
    json_decref(r);
    free(body);
    free(vt);
}

/*
 * Issue 16: an error (EIO, every time) at each I/O site only the running indexer passes, one
 * indexer daemon per site (each its own node_id, durable consumer and data_dir), against one
 * ingest node's FX_WIN sealed windows: the segment's rename into place (idx.fetch.rename), the
 * directory sync after it (idx.fetch.sync_dir), the point between a finished build and the
 * catalog commit (idx.build.before_commit), and there a SIGKILL at the first build; the
 * creation of the indexer's directory (idx.mkdir); the unlink of a download that failed
 * verification (idx.fetch.unlink_bad), provoked by a sealed event whose checksum does not match
 * the segment the ingest node serves (a bad announcement or transfer), on a collection only
 * that indexer has. While faulted: every sealed event stays unacknowledged on the indexer's
 * JetStream consumer (pending = the sealed events delivered, ack floor below the first),
 * nothing of those windows is searchable or found by id, each window's failure is logged with
 * the step and the reason, strata_index_retries_total moves and no window is given up, no file
 * is left beside the catalog (a killed build leaves its files to the sweep; a failed unlink of
 * a bad download leaves that download); idx.mkdir ends the daemon with exit 1 and the
 * directory named, without a consumer. Restarted without the fault, each indexer indexes every
 * window exactly once over both runs (the log's "indexed" lines), acknowledges every sealed
 * event, keeps only the parts' files (the sweep removes the killed build's files and the bad
 * download), finds every record by id and answers exactly as a healthy indexer, whose answers
 * are the exact top-10. Under NDEBUG the fault points are compiled out: the same indexers must
 * then index everything normally on the first run (the variable is ignored).
 */
START_TEST(test_indexer_fault_sites)
{
    train = st_test_fmnist("train-images-idx3-ubyte.gz", FX_N, DIM);
    test = st_test_fmnist("t10k-images-idx3-ubyte.gz", NQ + 10, DIM);
    if (!FX_LIVE)
        fprintf(stderr, "test_indexer_fault_sites: NDEBUG build, fault points compiled out: "
                        "asserting STRATA_FAULT_POINTS is ignored\n");
    struct env e;
    env_init(&e);
    char bad_topic[160];
    snprintf(bad_topic, sizeof(bad_topic), "%s-bad", e.topic);
    char more[512];
    snprintf(more, sizeof(more),
             "  - name: fmbad\n    dim: %d\n    metric: l2\n    topic: %s\n" FX_WINDOWING
             "    index: {type: hnsw, m: 16, ef_construction: 100}\n",
             DIM, bad_topic);
    for (int i = 0; i < FX_COUNT; i++) {
        struct fx_idx *x = &fx[i];
        snprintf(x->cfg, sizeof(x->cfg), "%s/%s.yaml", e.dir, x->node);
        snprintf(x->data, sizeof(x->data), "%s/%s", e.dir, x->node);
        snprintf(x->dir, sizeof(x->dir), "%s/%s/indexer/fm", e.dir, x->node);
        for (int run = 0; run < 2; run++)
            snprintf(x->log[run], sizeof(x->log[run]), "%s/%s-%d.log", e.dir, x->node, run + 1);
        write_cfg(&e, x->cfg, x->node, x->data, FX_WINDOWING, i == FX_BAD ? more : "");
    }
    char log_i[700];
    snprintf(log_i, sizeof(log_i), "%s/ingest.log", e.dir);
    struct st_daemon ing;
    const char *const iargv[] = {e.ingest_bin, "--config", e.cfg, NULL};
    st_daemon_start(&ing, log_i, iargv, NULL);
    unsigned iport = st_daemon_wait_logged_number(&ing, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&ing, iport, "/readyz", 60000);
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(e.nats, &nc, &js);

    /* The windows sealed: their events in the stream before any indexer runs. */
    fx_produce(&e);
    struct fx_sealed sealed = {0};
    ck_assert_msg(FX_WAIT((free(sealed.w0_event), sealed = fx_scan(js, &e, UINT64_MAX),
                           st_daemon_assert_clean(&ing), sealed.ours == FX_WIN),
                          120000),
                  "%d of %d windows sealed", sealed.ours, FX_WIN);
    ck_assert_ptr_nonnull(sealed.w0_event);
    char why[512];

    /* SIGKILL at the first build's commit point, alone: nothing but sealed events is in the
     * stream, so an ack it sent and did not flush before dying cannot blur its pending count. */
    struct fx_idx *x = &fx[FX_CRASH];
    fx_start_port(x, &e, 0);
    if (FX_LIVE) {
        ck_assert_msg(st_daemon_wait_killed(&x->d, 120000), "%s not killed at its crash point",
                      x->node);
        ck_assert(st_daemon_log_has(&x->d, "test fault point armed: idx.build.before_commit"));
        ck_assert_int_ge(fx_lines(x->log[0], "building coll=fm ", NULL), 1);
        ck_assert_int_eq(fx_lines(x->log[0], "indexed coll=fm ", NULL), 0);
        ck_assert_msg(FX_WAIT(fx_all_held(js, &e, x->node, why, sizeof(why)), 30000), "%s", why);
        int parts = 0;
        char stray[256];
        ck_assert_msg(fx_files(&e, x->dir, &parts, stray, sizeof(stray)) >= 1,
                      "the killed build left no file for the sweep");
    } else {
        fx_wait_indexed(&e, x, 120000);
        ck_assert_msg(FX_WAIT(fx_acked(js, &e, x->node, 0, why, sizeof(why)), 30000), "%s", why);
    }

    /* A sealed event for collection fmbad (only fx-bad has it) naming w0's real segment with a
     * checksum that is not the segment's: fx-bad's download never verifies. */
    json_t *bad = json_loads(sealed.w0_event, 0, NULL);
    ck_assert_ptr_nonnull(bad);
    uint32_t sum = (uint32_t)json_integer_value(json_object_get(bad, "checksum"));
    json_object_set_new(bad, "collection", json_string("fmbad"));
    json_object_set_new(bad, "checksum", json_integer((json_int_t)(sum ^ 0x5a5a5a5au)));
    char *bad_body = json_dumps(bad, JSON_COMPACT);
    json_decref(bad);
    jsPubAck *pa = NULL;
    NATS_OK(
        js_Publish(&pa, js, "strata.fmbad.sealed", bad_body, (int)strlen(bad_body), NULL, &jerr));
    uint64_t bad_seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    free(bad_body);

    /* The other faulted indexers, side by side. */
    for (int i = 0; i < FX_OK; i++)
        if (i != FX_CRASH && i != FX_MKDIR)
            fx_start_port(&fx[i], &e, 0);
    x = &fx[FX_MKDIR];
    fx_start(x, &e, 0);
    if (FX_LIVE) {
        char want[800];
        snprintf(want, sizeof(want), "%s/indexer: cannot create: I/O error", x->data);
        ck_assert_int_eq(st_daemon_wait_exit(&x->d, 60000), 1);
        ck_assert_msg(st_daemon_log_has(&x->d, want), "%s: no \"%s\" in %s", x->node, want,
                      x->log[0]);
        ck_assert(!fx_consumer(js, &e, x->node).exists);
    } else {
        x->port = st_daemon_wait_logged_number(&x->d, "HTTP on port ", 60000);
    }
    for (int i = FX_RENAME; i <= FX_COMMIT; i++) {
        x = &fx[i];
        if (!FX_LIVE) {
            fx_wait_indexed(&e, x, 120000);
            continue;
        }
        /* every window fails at the step, with the reason, and waits for a retry */
        for (int w = 0; w < FX_WIN; w++) {
            const char *about = fx_about(&e, x->step, "fm", w);
            ck_assert_msg(
                FX_WAIT((st_daemon_assert_clean(&x->d), fx_lines(x->log[0], about, x->reason) >= 1),
                        120000),
                "%s: no \"%s... %s\" in %s", x->node, about, x->reason, x->log[0]);
        }
        char armed[128];
        snprintf(armed, sizeof(armed), "test fault point armed: %s", x->fault);
        ck_assert(st_daemon_log_has(&x->d, armed));
        ck_assert_int_eq(fx_lines(x->log[0], "indexed coll=fm ", NULL), 0);
        ck_assert_msg(FX_WAIT(fx_all_held(js, &e, x->node, why, sizeof(why)), 30000), "%s", why);
        fx_assert_nothing_served(&e, x);
        ck_assert_double_ge(fx_metric(x->port, "strata_index_retries_total", "fm"), FX_WIN);
        ck_assert_double_eq(fx_metric(x->port, "strata_index_failures_total", "fm"), 0);
        /* only an attempt in flight has a file (the next one starts seconds later) */
        int n = 0, parts = 0;
        char stray[256];
        ck_assert_msg(FX_WAIT((n = fx_files(&e, x->dir, &parts, stray, sizeof(stray))) == 0, 15000),
                      "%s left %d file(s) in %s, e.g. %s", x->node, n, x->dir, stray);
    }
    /* fx-bad: fm indexed as usual; the bad download of fmbad fails verification every time */
    x = &fx[FX_BAD];
    fx_wait_indexed(&e, x, 120000);
    char bad_dir[760], bad_fetch[900];
    snprintf(bad_dir, sizeof(bad_dir), "%s/indexer/fmbad", x->data);
    snprintf(bad_fetch, sizeof(bad_fetch), "%s/host-a@%" PRId64 "@v1.seg.fetch", bad_dir, e.w0);
    char bad_about[160];
    snprintf(bad_about, sizeof(bad_about), "%s", fx_about(&e, "fetch failed", "fmbad", 0));
    ck_assert_msg(FX_WAIT(fx_lines(x->log[0], bad_about, "the sealed event says") >= 1, 60000),
                  "no \"%s... the sealed event says\" in %s", bad_about, x->log[0]);
    fx_assert_bad_unserved(x);
    ck_assert_double_ge(fx_metric(x->port, "strata_index_retries_total", "fmbad"), 1);
    ck_assert_double_eq(fx_metric(x->port, "strata_index_failures_total", "fmbad"), 0);
    /* fm's events acked, fmbad's held */
    ck_assert_msg(FX_WAIT(fx_acked(js, &e, x->node, 1, why, sizeof(why)), 30000), "%s", why);
    ck_assert_int_lt(fx_consumer(js, &e, x->node).floor, bad_seq);
    if (FX_LIVE) /* the failed unlink leaves the download (the next attempt replaces it) */
        ck_assert_msg(access(bad_fetch, F_OK) == 0, "%s: no download left behind", bad_fetch);
    else
        ck_assert_msg(FX_WAIT(access(bad_fetch, F_OK) != 0, 15000), "%s left behind", bad_fetch);
    for (int i = 0; i < FX_OK; i++)
        if (!FX_LIVE && i != FX_BAD)
            ck_assert_msg(FX_WAIT(fx_acked(js, &e, fx[i].node, 0, why, sizeof(why)), 30000), "%s",
                          why);

    /* Restart without faults, beside a healthy indexer: held events come back after their
     * ack wait (60 s). */
    for (int i = 0; i < FX_COUNT; i++) {
        x = &fx[i];
        if (x->d.pid != 0)
            st_daemon_stop(&x->d, 45000);
        fx_start_port(x, &e, i == FX_OK ? 0 : 1);
    }
    for (int i = 0; i < FX_COUNT; i++)
        fx_wait_indexed(&e, &fx[i], 240000);
    struct fx_idx *ok = &fx[FX_OK];
    fx_assert_exact(&e, ok->port);
    char *want = fx_answers(&e, ok->port);
    for (int i = 0; i < FX_COUNT; i++) {
        x = &fx[i];
        ck_assert_msg(
            FX_WAIT(fx_acked(js, &e, x->node, i == FX_BAD ? 1 : 0, why, sizeof(why)), 30000), "%s",
            why);
        /* each window indexed exactly once over both runs */
        for (int w = 0; w < FX_WIN; w++) {
            const char *about = fx_about(&e, "indexed", "fm", w);
            int n = fx_lines(x->log[0], about, NULL) +
                    (i == FX_OK ? 0 : fx_lines(x->log[1], about, NULL));
            ck_assert_msg(n == 1, "%s: window %d indexed %d times", x->node, w, n);
        }
        int parts = 0;
        char stray[256];
        int n = fx_files(&e, x->dir, &parts, stray, sizeof(stray));
        ck_assert_msg(n == 2 * FX_WIN && parts == n,
                      "%s: %d file(s) of the windows, %d a part's; e.g. %s", x->node, n, parts,
                      stray);
        ck_assert_double_eq(fx_metric(x->port, "strata_index_failures_total", "fm"), 0);
        char *got = fx_answers(&e, x->port);
        ck_assert_msg(strcmp(got, want) == 0, "%s answers differ from the healthy indexer's",
                      x->node);
        free(got);
        fx_assert_records(x, &e);
    }
    if (FX_LIVE) { /* what the faults left, the sweep removed */
        ck_assert_int_ge(fx_lines(fx[FX_CRASH].log[1], "removing leftover file=", NULL), 1);
        ck_assert_int_ge(fx_lines(fx[FX_BAD].log[1], "removing leftover file=", ".seg.fetch"), 1);
    }
    /* fmbad's event, back after its ack wait, still fails; its downloads no longer stay */
    x = &fx[FX_BAD];
    ck_assert_msg(FX_WAIT(fx_lines(x->log[1], bad_about, "the sealed event says") >= 1, 120000),
                  "no \"%s... the sealed event says\" in %s", bad_about, x->log[1]);
    ck_assert_msg(FX_WAIT(access(bad_fetch, F_OK) != 0, 15000), "%s left behind", bad_fetch);
    ck_assert_int_eq(fx_indexed(&e, x->port, NULL), FX_WIN); /* fm: all of them */
    fx_assert_bad_unserved(x);

    free(want);
    free(sealed.w0_event);
    st_nats_js_close(nc, js);
    for (int i = 0; i < FX_COUNT; i++)
        st_daemon_stop(&fx[i].d, 45000);
    st_daemon_stop(&ing, 45000);
    st_test_rmrf(e.dir);
    free(e.dir);
    free(train);
    free(test);
}
END_TEST

/* The unit id serving every part of the windows [w0, w0 + n * 10 s) of a compaction test's
 * collection (0 unless all n are indexed, each with one part, all served by one unit), and
 * the version of window w0 + 10 s. */
static uint64_t cx_unit(unsigned port, int64_t w0, int n, int64_t *v_mid)
{
    struct st_test_resp r = st_test_http_port(port, "/v1/collections/fm/windows", TOKEN, NULL);
    json_t *a = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    uint64_t unit = 0;
    int seen = 0;
    bool ok = true;
    size_t i;
    json_t *w;
    json_array_foreach(a, i, w)
    {
        int64_t st = json_integer_value(json_object_get(w, "start"));
        if (st < w0 || st >= w0 + n * 10000)
            continue;
        json_t *parts = json_object_get(w, "parts");
        json_t *p0 = json_array_get(parts, 0);
        uint64_t u = (uint64_t)json_integer_value(json_object_get(p0, "unit"));
        ok = ok && json_array_size(parts) == 1 && u != 0 && (unit == 0 || u == unit) &&
             strcmp(json_string_value(json_object_get(w, "state")), "indexed") == 0;
        unit = u;
        seen++;
        if (st == w0 + 10000 && v_mid != NULL)
            *v_mid = json_integer_value(json_object_get(p0, "version"));
    }
    json_decref(a);
    return ok && seen == n ? unit : 0;
}

static bool cx_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* recall@10 of NQ/2 indexed searches against the exact top-10 over t0..t<n-1> */
static double cx_recall(unsigned port, int n)
{
    int found = 0, total = 0;
    for (int q = 0; q < NQ / 2; q++) {
        const float *qv = test + (size_t)q * DIM;
        float best[10];
        int ids[10];
        for (int k = 0; k < 10; k++) {
            best[k] = INFINITY;
            ids[k] = -1;
        }
        for (int i = 0; i < n; i++) {
            float d = l2(qv, train + (size_t)i * DIM);
            if (d >= best[9])
                continue;
            int j = 9;
            while (j > 0 && best[j - 1] > d) {
                best[j] = best[j - 1];
                ids[j] = ids[j - 1];
                j--;
            }
            best[j] = d;
            ids[j] = i;
        }
        json_t *r = search(port, qv, 10, "indexed", false, 200);
        for (int k = 0; k < 10; k++) {
            char id[32];
            snprintf(id, sizeof(id), "t%d", ids[k]);
            found += hits_have(r, id);
            total++;
        }
        json_decref(r);
    }
    return (double)found / total;
}

/*
 * Index compaction (compact_after 10 s, compact_span 30 s, windows of 10 s) in a running
 * indexer, with real brokers: three sealed windows of one span are served by one index (a
 * unit): the windows list names it, the parts' own index files are gone, recall holds; a
 * restart loads the unit (no rebuild) and answers the same; late data re-seals a member
 * (version 2), which is served at once by its own part (the old version hidden in the unit) and
 * then compacted into the unit's next generation, whose files replace the first's; TTL expires
 * the windows one by one inside the unit and, with the last, the unit and every file of it go.
 * Four clients search and get by id throughout without an error.
 */
START_TEST(test_index_compaction)
{
    enum { PER = 300, N = 3 * PER };
    train = st_test_fmnist("train-images-idx3-ubyte.gz", N, DIM);
    test = st_test_fmnist("t10k-images-idx3-ubyte.gz", NQ + 10, DIM);
    struct env e;
    env_init_cfg(&e, "    window: 10s\n    grace: 1s\n    max_lateness: 2m\n    ttl: 180s\n"
                     "    compact_after: 10s\n    compact_span: 30s\n");
    char lx[700], idir[700];
    snprintf(idir, sizeof(idir), "%s/indexer/fm", e.data);
    struct st_daemon ing, ix;
    unsigned ip, xp;
    start_pair(&e, &ing, &ix, lx, sizeof(lx), &ip, &xp);

    /* Three windows of one 30 s span, ended 15-65 s ago, 300 records each; the watermark. */
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 45000) / 30000 * 30000;
    rd_kafka_t *p = produce_three(&e, w0, now);
    ck_assert_int_eq(rd_kafka_flush(p, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);

    /* One unit serves the three windows. */
    uint64_t unit = 0;
    ck_assert_msg(ST_WAIT_UNTIL((unit = cx_unit(xp, w0, 3, NULL)) != 0, 240000),
                  "the three windows are not served by one unit");
    ck_assert_int_ge(fx_metric(xp, "strata_index_compactions_total", "fm"), 1);
    ck_assert_int_eq(fx_metric(xp, "strata_indexer_parts", "fm") -
                         fx_metric(xp, "strata_indexer_indexes", "fm"),
                     2); /* 3 window parts in 1 index (+ the open window's, if it sealed) */
    char name[256];
    for (int w = 0; w < 3; w++) {
        snprintf(name, sizeof(name), "host-a@%" PRId64 "@v1.seg", w0 + w * 10000);
        ck_assert_msg(cx_file(idir, name), "%s missing: the unit reads it", name);
        snprintf(name, sizeof(name), "host-a@%" PRId64 "@v1.hnsw", w0 + w * 10000);
        ck_assert_msg(ST_WAIT_UNTIL(!cx_file(idir, name), 30000), "%s stays", name);
    }
    double recall = cx_recall(xp, N);
    fprintf(stderr, "compacted recall@10 = %.4f\n", recall);
    ck_assert_msg(recall >= 0.95, "recall@10 %.4f", recall);
    char *before = answers(xp);

    /* A restart loads the unit as it is: the same answers, no build of it or its windows. */
    st_daemon_stop(&ix, 45000);
    snprintf(lx, sizeof(lx), "%s/indexer-2.log", e.dir);
    xp = start_indexer(&ix, &e, e.cfg, lx);
    st_daemon_wait_http_ok(&ix, xp, "/readyz", 60000);
    ck_assert_uint_eq(cx_unit(xp, w0, 3, NULL), unit);
    char *after = answers(xp);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    snprintf(name, sizeof(name), "compacting coll=fm unit=%" PRIu64 " ", unit);
    ck_assert_int_eq(count_in_log(lx, name), 0);
    for (int w = 0; w < 3; w++) {
        snprintf(name, sizeof(name), "building coll=fm node=host-a start=%" PRId64 " ",
                 w0 + w * 10000);
        ck_assert_int_eq(count_in_log(lx, name), 0);
    }

    _Atomic bool stop = false;
    struct searcher sc[4];
    pthread_t th[4];
    searchers_start(sc, th, xp, &stop);
    /* Late data re-seals the middle window: version 2 is served at once (by its own part or a
     * unit), then the unit's next generation takes it and the first generation's files go. */
    send_json(p, &e, 0, rec("late-1", w0 + 10000 + 400, test + (size_t)(NQ + 5) * DIM));
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
    ck_assert(ST_WAIT_UNTIL(
        http_status(xp, "/v1/collections/fm/records/late-1?consistency=indexed") == 200, 120000));
    json_t *r = search(xp, test + (size_t)(NQ + 5) * DIM, 3, "indexed", false, 200);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(json_object_get(r, "hits"), 0), "id")),
        "late-1");
    json_decref(r);
    int64_t vmid = 0;
    ck_assert_msg(ST_WAIT_UNTIL(cx_unit(xp, w0, 3, &vmid) == unit && vmid == 2, 120000),
                  "version 2 of the middle window not compacted into the unit");
    snprintf(name, sizeof(name), "unit-%" PRIu64 "@g1.hnsw", unit);
    ck_assert_msg(ST_WAIT_UNTIL(!cx_file(idir, name), 30000), "%s stays", name);
    snprintf(name, sizeof(name), "host-a@%" PRId64 "@v1.seg", w0 + 10000);
    ck_assert_msg(ST_WAIT_UNTIL(!cx_file(idir, name), 30000), "%s stays", name);
    recall = cx_recall(xp, N);
    ck_assert_msg(recall >= 0.95, "recall@10 %.4f after the re-seal", recall);

    /* TTL: the windows expire inside the unit, then the unit goes with every file of it. */
    ck_assert_msg(ST_WAIT_UNTIL(cx_unit(xp, w0, 0, NULL) == 0 &&
                                    http_status(xp, "/v1/collections/fm/records/t0") == 404 &&
                                    http_status(xp, "/v1/collections/fm/records/t899") == 404,
                                300000),
                  "the windows did not expire");
    searchers_stop(sc, th, &stop);
    bool clean = false;
    char left[300] = "";
    for (int64_t deadline = st_test_now_ms() + 30000; !clean && st_test_now_ms() < deadline;) {
        clean = true;
        DIR *d = opendir(idir);
        ck_assert_ptr_nonnull(d);
        for (struct dirent *de; (de = readdir(d)) != NULL;) {
            long long st = 0;
            const char *at = strchr(de->d_name, '@');
            if (de->d_name[0] == '.' || strcmp(de->d_name, "CATALOG") == 0 ||
                (strncmp(de->d_name, "host-a@", 7) == 0 && at != NULL &&
                 sscanf(at + 1, "%lld", &st) == 1 && st >= w0 + 30000))
                continue; /* later windows (the watermark's) may be served */
            char mine[64];
            snprintf(mine, sizeof(mine), "unit-%" PRIu64 "@", unit);
            if (strncmp(de->d_name, "unit-", 5) == 0 && strncmp(de->d_name, mine, strlen(mine)))
                continue; /* a later span's unit */
            clean = false;
            snprintf(left, sizeof(left), "%s", de->d_name);
        }
        closedir(d);
        if (!clean)
            st_test_sleep_ms(200);
    }
    ck_assert_msg(clean, "%s left behind", left);
    ck_assert_int_eq(count_in_log(lx, "unit=") > 0, 1);
    st_daemon_stop(&ix, 45000);
    st_daemon_stop(&ing, 45000);
    st_test_rmrf(e.dir);
    free(e.dir);
    free(train);
    free(test);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("indexer_daemon");
    TCase *tc = tcase_create("e2e");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_indexer_end_to_end);
    tcase_add_test(tc, test_two_ingest_two_indexers);
    tcase_add_test(tc, test_search_during_swaps);
    tcase_add_test(tc, test_indexer_nats_outage);
    suite_add_tcase(s, tc);
    tc = tcase_create("compaction");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_index_compaction);
    suite_add_tcase(s, tc);
    tc = tcase_create("faults");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_indexer_fault_sites);
    suite_add_tcase(s, tc);
    int rc = st_test_run_suite(s);
    curl_global_cleanup();
    return rc;
}
