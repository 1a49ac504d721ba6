/*
 * The status page (GET /) and its data (GET /v1/status) on strata-ingest and strata-indexer
 * as processes, with the real Kafka broker and nats-server, looked at by a real headless
 * browser (Debian's chromium; scripts/deps installs it, and its absence fails the test):
 * Fashion-MNIST vectors produced into two old event-time windows and a current one; once the
 * indexer has indexed an old window, chromium loads both daemons' pages with
 * ?collection=fm&search=sample and the dumped DOM must show the windows with their states
 * (indexed and open on the indexer's timeline, open and sealed on ingest's) and the hits of a
 * search with a stored record's vector. Auth is on: the page is served without the token, its
 * API calls carry it (given in the URL fragment, kept in localStorage); a browser without it
 * gets the page, no data, and the 401 on the page.
 *
 * STRATA_STATUS_SCREENSHOT=<file.png> also saves a screenshot of the indexer's page.
 */
#include <check.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
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

#define DIM     784
#define PER_WIN 300 /* vectors per old window */
#define NOLD    2   /* old windows (sealed at once, then indexed) */
#define NNOW    20  /* vectors in the current (open) window */
#define TOKEN   "s3cret"

struct env {
    const char *brokers, *nats, *ingest_bin, *indexer_bin;
    char topic[128], dead[128], group[128], stream[64];
    char *dir;
    char cfg[600], token[600];
};

static void env_init(struct env *e)
{
    e->brokers = st_test_broker("STRATA_TEST_KAFKA");
    e->nats = st_test_broker("STRATA_TEST_NATS");
    e->ingest_bin = getenv("STRATA_INGEST");
    e->indexer_bin = getenv("STRATA_INDEXER");
    ck_assert_ptr_nonnull(e->ingest_bin);
    ck_assert_ptr_nonnull(e->indexer_bin);
    snprintf(e->topic, sizeof(e->topic), "%s", st_test_unique("st"));
    snprintf(e->dead, sizeof(e->dead), "%s", st_test_unique("st-dlq"));
    snprintf(e->group, sizeof(e->group), "%s", st_test_unique("st-g"));
    snprintf(e->stream, sizeof(e->stream), "STP%d", (int)getpid());
    st_kafka_create_topic(e->brokers, e->topic, 2);
    st_kafka_create_topic(e->brokers, e->dead, 1);
    st_nats_clean(e->nats);
    e->dir = st_test_tmpdir("status");
    snprintf(e->cfg, sizeof(e->cfg), "%s/strata.yaml", e->dir);
    snprintf(e->token, sizeof(e->token), "%s/token", e->dir);
    FILE *tf = fopen(e->token, "w");
    ck_assert_ptr_nonnull(tf);
    fprintf(tf, TOKEN "\n");
    fclose(tf);
    FILE *f = fopen(e->cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "node_id: host-a\n"
            "data_dir: %s/data\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: {session.timeout.ms: \"6000\"}\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n"
            "collections:\n  - name: fm\n    dim: %d\n    metric: l2\n    topic: %s\n"
            "    window: 1m\n    grace: 1s\n    max_lateness: 1h\n"
            "    index: {type: hnsw, m: 16, ef_construction: 100}\n"
            "ingest: {listen: \"127.0.0.1:0\", announce_interval: 500ms}\n"
            "indexer: {listen: \"127.0.0.1:0\", build_threads: 1, memory_budget: 1GiB}\n"
            "http: {auth_token_file: \"%s\", max_body: 64KiB}\n"
            "log: {level: info}\n",
            e->dir, e->brokers, e->group, e->dead, e->nats, e->stream, DIM, e->topic, e->token);
    fclose(f);
}

/* ---- HTTP ---- */

static json_t *http_json(unsigned port, const char *path, long want)
{
    struct st_test_resp r = st_test_http_port(port, path, TOKEN, NULL);
    ck_assert_msg(r.status == want, "%s: HTTP %ld, want %ld: %s", path, r.status, want, r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    ck_assert_msg(j != NULL, "%s: not JSON: %s", path, r.body);
    free(r.body);
    return j;
}

/* ---- producing ---- */

static void send_rec(rd_kafka_t *p, const struct env *e, int part, const char *id, int64_t ts,
                     const float *v)
{
    json_t *vec = json_array();
    for (int d = 0; d < DIM; d++)
        json_array_append_new(vec, json_integer((json_int_t)v[d]));
    json_t *m = json_pack("{s:s,s:s,s:I,s:o}", "collection", "fm", "id", id, "ts", (json_int_t)ts,
                          "vector", vec);
    char *s = json_dumps(m, JSON_COMPACT);
    st_kafka_send(p, e->topic, part, s, strlen(s));
    free(s);
    json_decref(m);
}

/* NOLD one-minute windows 10+ minutes old, then NNOW records in the current minute (which
 * also move the watermark past the old windows: they seal at once). */
static void produce(const struct env *e, const float *train)
{
    int64_t now = st_clock_wall_ms(NULL);
    int64_t w0 = (now - 12 * 60000) / 60000 * 60000;
    rd_kafka_t *p = st_kafka_producer(e->brokers);
    for (int i = 0; i < NOLD * PER_WIN; i++) {
        char id[32];
        snprintf(id, sizeof(id), "t%d", i);
        send_rec(p, e, i % 2, id, w0 + (int64_t)(i / PER_WIN) * 60000 + i % PER_WIN,
                 train + (size_t)i * DIM);
    }
    for (int i = 0; i < NNOW; i++) {
        char id[32];
        snprintf(id, sizeof(id), "now%d", i);
        size_t row = (size_t)(NOLD * PER_WIN + i);
        send_rec(p, e, i % 2, id, now - 500, train + row * DIM);
    }
    ck_assert_int_eq(rd_kafka_flush(p, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

/* ---- /v1/status ---- */

static json_t *status_coll(json_t *st, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(st, "collections"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    }
    return NULL;
}

static size_t count_state(json_t *coll, const char *state)
{
    size_t n = 0, i;
    json_t *w;
    json_array_foreach(json_object_get(coll, "windows"), i, w)
    {
        n += strcmp(json_string_value(json_object_get(w, "state")), state) == 0;
    }
    return n;
}

/* Does the indexer's /v1/status show an indexed window and the open one? */
static bool timeline_ready(unsigned port)
{
    struct st_test_resp r = st_test_http_port(port, "/v1/status", TOKEN, NULL);
    json_t *st = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    json_t *c = st != NULL ? status_coll(st, "fm") : NULL;
    bool ok = c != NULL && count_state(c, "indexed") >= 1 && count_state(c, "open") >= 1;
    json_decref(st);
    return ok;
}

/* ---- the browser ---- */

static const char *chromium(void)
{
    static const char *const bins[] = {"/usr/bin/chromium", "/usr/bin/chromium-headless-shell",
                                       NULL};
    for (size_t i = 0; bins[i] != NULL; i++)
        if (access(bins[i], X_OK) == 0)
            return bins[i];
    ck_abort_msg("chromium is not installed: run scripts/deps (it installs Debian's chromium)");
    return NULL;
}

/* Runs chromium headless on url with extra arguments and a browser profile of its own (its
 * localStorage: the token); returns its stdout (malloc'd). */
static char *browse_as(const struct env *e, const char *prof, const char *url, const char *args)
{
    char cmd[4096], profile[700];
    snprintf(profile, sizeof(profile), "%s/%s", e->dir, prof);
    snprintf(cmd, sizeof(cmd),
             "timeout 120 %s --headless --no-sandbox --disable-gpu --no-first-run "
             "--user-data-dir=%s --virtual-time-budget=10000 %s '%s' 2>>%s/chromium.log",
             chromium(), profile, args, url, e->dir);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, n = 0, got;
    char *out = malloc(cap);
    while ((got = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap)
            out = realloc(out, cap *= 2);
    }
    out[n] = '\0';
    int rc = pclose(p);
    ck_assert_msg(rc == 0, "%s: exit status %d (see %s/chromium.log)", cmd, rc, e->dir);
    return out;
}

static char *browse(const struct env *e, const char *url, const char *args)
{
    return browse_as(e, "chromium", url, args);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The page of the daemon on port, rendered: windows by state, hits of the sample search. */
static char *page_dom(const struct env *e, unsigned port)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/?collection=fm&search=sample#token=" TOKEN,
             port);
    char *dom = browse(e, url, "--dump-dom");
    ck_assert_msg(strstr(dom, "id=\"windows\"") != NULL, "no page at %s:\n%.2000s", url, dom);
    return dom;
}

/* The content of the element with id in dom (up to its first closing tag of that kind): a
 * crude cut, enough for the page's own markup. */
static char *section(const char *dom, const char *id, const char *close)
{
    char open[64];
    snprintf(open, sizeof(open), "id=\"%s\"", id);
    const char *a = strstr(dom, open);
    ck_assert_msg(a != NULL, "no #%s in the page", id);
    const char *b = strstr(a, close);
    ck_assert_ptr_nonnull(b);
    return strndup(a, (size_t)(b - a));
}

START_TEST(test_status_page)
{
    const char *browser = chromium(); /* fails first when the browser is missing */
    ck_assert_ptr_nonnull(browser);
    float *train = st_test_fmnist("train-images-idx3-ubyte.gz", NOLD * PER_WIN + NNOW, DIM);
    struct env e;
    env_init(&e);
    char log_i[700], log_x[700];
    snprintf(log_i, sizeof(log_i), "%s/ingest.log", e.dir);
    snprintf(log_x, sizeof(log_x), "%s/indexer.log", e.dir);
    struct st_daemon ing, idx;
    const char *const iargv[] = {e.ingest_bin, "--config", e.cfg, NULL};
    st_daemon_start(&ing, log_i, iargv, NULL);
    unsigned iport = st_daemon_wait_logged_number(&ing, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&ing, iport, "/readyz", 60000);
    const char *const xargv[] = {e.indexer_bin, "--config", e.cfg, NULL};
    st_daemon_start(&idx, log_x, xargv, NULL);
    unsigned xport = st_daemon_wait_logged_number(&idx, "HTTP on port ", 60000);
    st_daemon_wait_http_ok(&idx, xport, "/readyz", 60000);

    /* Auth on: the page is open, its data is not. */
    unsigned ports[2] = {iport, xport};
    for (int i = 0; i < 2; i++) {
        struct st_test_resp r = st_test_http_port(ports[i], "/", NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.ctype, "text/html; charset=utf-8");
        ck_assert_ptr_nonnull(strstr(r.body, "<title>strata status</title>"));
        free(r.body);
        r = st_test_http_port(ports[i], "/v1/status", NULL, NULL);
        ck_assert_int_eq(r.status, 401);
        free(r.body);
    }

    produce(&e, train);
    int64_t deadline = st_test_now_ms() + 240000;
    while (!timeline_ready(xport)) {
        st_daemon_assert_clean(&idx);
        st_daemon_assert_clean(&ing);
        ck_assert_msg(st_test_now_ms() < deadline,
                      "the indexer's timeline never showed an indexed and an open window");
        st_test_sleep_ms(200);
    }

    /* /v1/status on ingest: open and sealed windows, records, a live sample id, the sealed
     * freshness of this collection, no backlog (it builds no indexes). */
    json_t *st = http_json(iport, "/v1/status", 200);
    ck_assert_str_eq(json_string_value(json_object_get(st, "role")), "ingest");
    ck_assert_str_eq(json_string_value(json_object_get(st, "node")), "host-a");
    ck_assert_int_gt(json_integer_value(json_object_get(st, "now_ms")), 0);
    json_t *c = status_coll(st, "fm");
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_ge(count_state(c, "open"), 1);
    ck_assert_uint_ge(count_state(c, "sealed"), NOLD);
    ck_assert_uint_eq(count_state(c, "indexed"), 0);
    uint64_t recs = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(c, "windows"), i, w)
    {
        recs += (uint64_t)json_integer_value(json_object_get(w, "records"));
        ck_assert_int_eq(json_integer_value(json_object_get(w, "end")) -
                             json_integer_value(json_object_get(w, "start")),
                         60000);
    }
    ck_assert_uint_eq(recs, NOLD * PER_WIN + NNOW);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(c, "index"), "type")),
                     "hnsw");
    ck_assert(json_is_null(json_object_get(c, "backlog")));
    json_t *fs = json_object_get(json_object_get(c, "freshness"), "sealed");
    ck_assert_msg(json_integer_value(json_object_get(fs, "count")) >= NOLD, "sealed freshness: %s",
                  json_dumps(fs, 0));
    ck_assert(json_real_value(json_object_get(fs, "mean_s")) > 60.0); /* 10+ minutes old */
    const char *sid = json_string_value(json_object_get(c, "sample_id"));
    ck_assert_ptr_nonnull(sid);
    char path[256];
    snprintf(path, sizeof(path), "/v1/collections/fm/records/%s", sid);
    json_t *rec = http_json(iport, path, 200);
    ck_assert_uint_eq(json_array_size(json_object_get(rec, "vector")), DIM);
    json_decref(rec);
    json_decref(st);

    /* /v1/status on the indexer: its windows merged with ingest's open one, the backlog, the
     * indexed freshness (node-wide), a sample id it serves. */
    st = http_json(xport, "/v1/status", 200);
    ck_assert_str_eq(json_string_value(json_object_get(st, "role")), "indexer");
    ck_assert_uint_eq(json_array_size(json_object_get(st, "unreachable")), 0);
    c = status_coll(st, "fm");
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_ge(count_state(c, "indexed"), 1);
    ck_assert_uint_ge(count_state(c, "open"), 1);
    int64_t prev = INT64_MIN;
    json_array_foreach(json_object_get(c, "windows"), i, w)
    {
        int64_t s = json_integer_value(json_object_get(w, "start"));
        ck_assert_int_gt(s, prev); /* one entry per window, oldest first */
        prev = s;
        if (strcmp(json_string_value(json_object_get(w, "state")), "indexed") == 0) {
            ck_assert_str_eq(json_string_value(json_object_get(w, "index")), "hnsw");
            ck_assert_int_eq(json_integer_value(json_object_get(w, "records")), PER_WIN);
        }
    }
    ck_assert(json_is_integer(json_object_get(c, "backlog")));
    json_t *fx = json_object_get(json_object_get(c, "freshness"), "indexed");
    ck_assert_msg(json_integer_value(json_object_get(fx, "count")) >= 1, "indexed freshness: %s",
                  json_dumps(fx, 0));
    ck_assert_str_eq(json_string_value(json_object_get(fx, "scope")), "node");
    fs = json_object_get(json_object_get(c, "freshness"), "sealed"); /* ingest's, asked */
    ck_assert_msg(json_integer_value(json_object_get(fs, "count")) >= NOLD,
                  "sealed freshness on the indexer: %s", json_dumps(fs, 0));
    sid = json_string_value(json_object_get(c, "sample_id"));
    ck_assert_ptr_nonnull(sid);
    ck_assert_msg(sid[0] == 't', "sample %s is not an indexed record", sid);
    snprintf(path, sizeof(path), "/v1/collections/fm/records/%s?consistency=indexed", sid);
    json_decref(http_json(xport, path, 200));
    json_decref(st);

    /* The page in a real browser, on both daemons. */
    char *dom = page_dom(&e, xport);
    char *wins = section(dom, "windows", "</table>");
    ck_assert_msg(count(wins, "data-state=\"indexed\"") >= 1, "no indexed window:\n%s", wins);
    ck_assert_msg(count(wins, "data-state=\"open\"") >= 1, "no open window:\n%s", wins);
    char *hits = section(dom, "hits", "</table>");
    ck_assert_msg(strstr(hits, "data-status=\"done\"") != NULL, "search not done:\n%s\n%s", hits,
                  strstr(dom, "id=\"error\""));
    ck_assert_msg(count(hits, "class=\"hit\"") >= 1, "no hit rows:\n%s", hits);
    ck_assert_ptr_nonnull(strstr(dom, "indexer · host-a"));
    free(hits);
    free(wins);
    free(dom);

    dom = page_dom(&e, iport);
    wins = section(dom, "windows", "</table>");
    ck_assert_msg(count(wins, "data-state=\"open\"") >= 1, "no open window:\n%s", wins);
    ck_assert_msg(count(wins, "data-state=\"sealed\"") >= NOLD, "no sealed windows:\n%s", wins);
    hits = section(dom, "hits", "</table>");
    ck_assert_msg(strstr(hits, "data-status=\"done\"") != NULL, "search not done:\n%s\n%s", hits,
                  strstr(dom, "id=\"error\""));
    /* ingest searches exactly: the sampled record itself comes first, at distance 0 */
    ck_assert_msg(count(hits, "class=\"hit\"") == 10, "not 10 hit rows:\n%s", hits);
    ck_assert_msg(strstr(hits, "<td class=\"num\">0</td>") != NULL, "no exact match in:\n%s", hits);
    ck_assert_ptr_nonnull(strstr(dom, "ingest · host-a"));
    free(hits);
    free(wins);
    free(dom);

    /* A browser that never got the token: the page loads, its data does not, and it says why. */
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/?collection=fm&search=sample", xport);
    dom = browse_as(&e, "chromium-no-token", url, "--dump-dom");
    char *err = section(dom, "error", "</div>");
    ck_assert_msg(strstr(err, "HTTP 401") != NULL && strstr(err, "set the token") != NULL,
                  "no 401 shown:\n%s", err);
    wins = section(dom, "windows", "</table>");
    ck_assert_msg(count(wins, "data-state=") == 0, "windows shown without the token:\n%s", wins);
    hits = section(dom, "hits", "</table>");
    ck_assert_msg(count(hits, "class=\"hit\"") == 0, "hits shown without the token:\n%s", hits);
    free(hits);
    free(wins);
    free(err);
    free(dom);

    const char *shot = getenv("STRATA_STATUS_SCREENSHOT");
    if (shot != NULL && shot[0] != '\0') {
        char args[700];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/?collection=fm&search=sample#token=" TOKEN,
                 xport);
        snprintf(args, sizeof(args), "--screenshot=%s --window-size=1280,900 --hide-scrollbars",
                 shot);
        free(browse(&e, url, args));
        ck_assert_int_eq(access(shot, R_OK), 0);
    }

    st_daemon_stop(&idx, 60000);
    st_daemon_stop(&ing, 60000);
    free(train);
    st_test_rmrf(e.dir);
    free(e.dir);
}
END_TEST

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("status_page");
    TCase *tc = tcase_create("browser");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_status_page);
    suite_add_tcase(s, tc);
    int rc = st_test_run_suite(s);
    curl_global_cleanup();
    return rc;
}
