/*
 * demo.c — `strata demo`, the embedded default (SPEC.md §9): one process with an embedded
 * Kafka-protocol broker (librdkafka's mock cluster on 127.0.0.1), the in-process bus instead
 * of NATS, an ingest node and an indexer node. It produces Fashion-MNIST through Kafka over
 * several event-time windows, waits until they are sealed and indexed, measures produce ->
 * searchable latency, runs the test queries over HTTP and reports recall@10 against exact
 * search and QPS, then keeps serving until Ctrl-C (or exits with --exit-after-report).
 *
 * Stages print one line each on stdout; the report ends with the search URL and a
 * ready-to-paste curl and `strata search` line.
 */
#include "demo.h"
#include "demo_recall.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "idx_service.h"
#include "indexer_node.h"
#include "ingest_node.h"
#include "produce.h"
#include "st_api.h"
#include "st_clock.h"
#include "st_coding.h"
#include "st_distance.h"
#include "st_log.h"

#define DEMO_TOPIC "fmnist"
#define DEMO_COLL  "fmnist"
/* librdkafka's mock cluster keeps the newest 5 MiB of each partition (its retention): 48
 * partitions hold all of Fashion-MNIST's 189 MB, so nothing is lost to it however far the
 * consumer lags behind the producer. */
#define DEMO_PARTITIONS 48
#define DEMO_K          10
#define DEMO_BATCH      250             /* 784-d float frames: ~0.8 MB, under the broker's 1 MB */
#define DEMO_PROBES     DEMO_PARTITIONS /* one a partition: every watermark moves */
#define HOUR_MS         (3600 * 1000LL)
#define DEMO_GRACE_MS   (60 * 1000LL) /* the collection's grace */

static volatile sig_atomic_t demo_stop;

static int64_t now_us(void)
{
    return st_clock_mono_ns(NULL) / 1000;
}

static void on_signal(int sig)
{
    (void)sig;
    demo_stop = 1;
}

struct demo_opts {
    const char *dataset, *data_dir, *listen, *index, *nats;
    size_t train, queries;
    int windows, threads;
    bool exit_after, keep;
};

struct demo;
struct gt_job {
    struct demo *d;
    size_t from, to;
    bool failed;
};

#define DEMO_MAX_THREADS 8

struct demo {
    struct demo_opts o;
    char dir[512], yaml[640], url[128];
    bool made_dir;
    /* data */
    float *train, *test;
    size_t ntrain, nq;
    uint32_t dim;
    /* the broker */
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;
    /* the nodes */
    struct cfg *cfg;
    struct ingest_node *ing;
    struct indexer_node *idx;
    pthread_t ing_thr;
    bool ing_running;
    _Atomic bool ing_stop, ing_failed;
    /* exact ground truth: DEMO_K ids and the k-th distance per query */
    uint32_t *gt;
    float *gt_kth;
    pthread_t gt_th[DEMO_MAX_THREADS];
    struct gt_job gt_jobs[DEMO_MAX_THREADS];
    int gt_running;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: strata demo [options]\n"
               "\n"
               "The embedded default (SPEC.md §9): one process with an embedded Kafka-protocol\n"
               "broker on 127.0.0.1, an in-process bus instead of NATS, an ingest node and an\n"
               "indexer node. Produces Fashion-MNIST through Kafka over several event-time\n"
               "windows, waits until they are sealed and indexed, runs the test queries and\n"
               "reports recall@10 against exact search, QPS and produce -> searchable latency,\n"
               "then serves search until Ctrl-C.\n"
               "\n"
               "options:\n"
               "  --dataset DIR         Fashion-MNIST idx3-ubyte.gz files\n"
               "                        (default /usr/share/datasets/fashion-mnist)\n"
               "  --train N             images to produce (default 60000, at most 60000)\n"
               "  --queries N           test queries to run (default 10000)\n"
               "  --windows W           event-time windows (1 h each) to spread them over (6)\n"
               "  --index hnsw|ivfpq    the index type (default hnsw)\n"
               "  --listen ADDR         the search endpoint (default 127.0.0.1:7080; port 0: any)\n"
               "  --data-dir DIR        keep the data here (default: a new temporary directory,\n"
               "                        removed at exit)\n"
               "  --nats URL            a NATS server instead of the in-process bus\n"
               "  --exit-after-report   exit 0 after the report instead of serving\n"
               "  --help                this text\n");
}

/* ---- data --------------------------------------------------------------------------------- */

static int load_images(struct demo *d, const char *name, size_t max, float **out, size_t *n)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", d->o.dataset, name);
    struct st_err err = {0};
    struct produce_matrix m;
    if (produce_read_matrix(path, max, &m, &err) != ST_OK) {
        fprintf(stderr,
                "strata demo: %s\n(install Debian's dataset-fashion-mnist, or pass "
                "--dataset DIR)\n",
                err.msg);
        return -1;
    }
    if (d->dim != 0 && m.dim != d->dim) {
        fprintf(stderr, "strata demo: %s: %u dims, expected %u\n", path, m.dim, d->dim);
        free(m.data);
        return -1;
    }
    d->dim = m.dim;
    *out = m.data;
    *n = m.rows;
    return 0;
}

/* ---- the embedded broker and the nodes ---------------------------------------------------- */

static int start_broker(struct demo *d)
{
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", es, sizeof(es));
    d->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    if (d->mock_rk == NULL) {
        fprintf(stderr, "strata demo: librdkafka: %s\n", es);
        return -1;
    }
    d->mock = rd_kafka_mock_cluster_new(d->mock_rk, 1);
    if (d->mock == NULL) {
        fprintf(stderr, "strata demo: librdkafka could not start its mock cluster\n");
        return -1;
    }
    d->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(d->mock));
    if (d->bootstrap == NULL ||
        rd_kafka_mock_topic_create(d->mock, DEMO_TOPIC, DEMO_PARTITIONS, 1) != 0 ||
        rd_kafka_mock_topic_create(d->mock, "strata.dlq", 1, 1) != 0) {
        fprintf(stderr, "strata demo: creating the demo topics failed\n");
        return -1;
    }
    return 0;
}

/* s as a YAML double-quoted scalar (malloc'd): a path or URL from the command line or TMPDIR
 * may hold " #", ": " or quotes, which a plain scalar would cut short or misread. */
static char *yaml_quote(const char *s)
{
    size_t n = strlen(s);
    char *q = malloc(n * 4 + 3), *o = q;
    if (q == NULL)
        return NULL;
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += sprintf(o, "\\x%02x", *p);
        } else {
            *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *o = '\0';
    return q;
}

/* 0, -1 (the reason printed), or 2 when the config written from the options is invalid. */
static int write_config(struct demo *d)
{
    snprintf(d->yaml, sizeof(d->yaml), "%s/strata-demo.yaml", d->dir);
    char *q_dir = yaml_quote(d->dir), *q_brokers = yaml_quote(d->bootstrap),
         *q_nats = yaml_quote(d->o.nats), *q_listen = yaml_quote(d->o.listen);
    FILE *f = q_dir != NULL && q_brokers != NULL && q_nats != NULL && q_listen != NULL
                  ? fopen(d->yaml, "w")
                  : NULL;
    if (f == NULL) {
        fprintf(stderr, "strata demo: %s: %s\n", d->yaml, strerror(errno));
        free(q_dir);
        free(q_brokers);
        free(q_nats);
        free(q_listen);
        return -1;
    }
    const char *index = strcmp(d->o.index, "ivfpq") == 0
                            ? "{type: ivfpq, nlist: 64, m: 49, nbits: 8}"
                            : "{type: hnsw, m: 16, ef_construction: 100}";
    fprintf(f,
            "# written by strata demo: the embedded default (SPEC.md section 9)\n"
            "node_id: demo\n"
            "data_dir: %s\n"
            "kafka:\n"
            "  brokers: %s            # the embedded broker (librdkafka mock cluster)\n"
            "  group_id: strata-demo\n"
            "  dead_letter_topic: strata.dlq\n"
            "  properties: {fetch.wait.max.ms: \"10\"}   # the demo shows latency\n"
            "nats:\n"
            "  url: %s\n"
            "collections:\n"
            "  - name: " DEMO_COLL "\n"
            "    dim: %u\n"
            "    metric: l2\n"
            "    id_type: uint64\n"
            "    topic: " DEMO_TOPIC "\n"
            "    window: 1h\n"
            "    grace: %llds\n"
            "    max_lateness: 1d\n"
            "    index: %s\n"
            "store: {memtable_size: 64MiB, wal_sync: batch}\n"
            "ingest: {listen: 127.0.0.1:0, announce_interval: 1s}\n"
            "indexer: {listen: %s, build_threads: 2}\n"
            "log: {level: warning}\n",
            q_dir, q_brokers, q_nats, d->dim, (long long)(DEMO_GRACE_MS / 1000), index, q_listen);
    free(q_dir);
    free(q_brokers);
    free(q_nats);
    free(q_listen);
    if (fclose(f) != 0) {
        fprintf(stderr, "strata demo: %s: %s\n", d->yaml, strerror(errno));
        return -1;
    }
    struct cfg_errors errs = {0};
    if (cfg_load(d->yaml, &d->cfg, &errs) != ST_OK) {
        cfg_errors_print(&errs, stderr);
        cfg_errors_clear(&errs);
        return 2; /* what it holds came from the options (--listen, --nats): bad usage */
    }
    return 0;
}

static void *ingest_loop(void *arg)
{
    struct demo *d = arg;
    while (!atomic_load(&d->ing_stop)) {
        struct st_err err = {0};
        if (ingest_node_poll(d->ing, 100, &err) != ST_OK) {
            fprintf(stderr, "strata demo: ingest: %s\n", err.msg);
            atomic_store(&d->ing_failed, true);
            break;
        }
    }
    return NULL;
}

static int start_nodes(struct demo *d)
{
    struct st_err err = {0};
    if (ingest_node_start(d->cfg, st_clock_wall_ms(NULL), &d->ing, &err) != ST_OK) {
        fprintf(stderr, "strata demo: ingest: %s\n", err.msg);
        return -1;
    }
    if (pthread_create(&d->ing_thr, NULL, ingest_loop, d) != 0) {
        fprintf(stderr, "strata demo: cannot start the ingest thread\n");
        return -1;
    }
    d->ing_running = true;
    if (indexer_node_start(d->cfg, &d->idx, &err) != ST_OK) {
        fprintf(stderr, "strata demo: indexer: %s\n", err.msg);
        return -1;
    }
    snprintf(d->url, sizeof(d->url), "http://127.0.0.1:%u", indexer_node_port(d->idx));
    return 0;
}

/* ---- producing ---------------------------------------------------------------------------- */

struct train_src {
    const struct demo *d;
    size_t next;
    int64_t base, step;
};

/* produce_source_fn: train image i as id i at base + i * step, partition by ts slice. */
static int train_next(void *ctx, struct produce_rec *r)
{
    struct train_src *s = ctx;
    if (s->next >= s->d->ntrain)
        return 0;
    size_t i = s->next++;
    *r = (struct produce_rec){.u64 = true,
                              .id_u64 = i,
                              .vec = s->d->train + i * s->d->dim,
                              .dim = s->d->dim,
                              .ts = s->base + (int64_t)i * s->step,
                              .partition = (int32_t)(i / DEMO_BATCH % DEMO_PARTITIONS)};
    return 1;
}

static void progress(void *ctx, const struct produce_stats *st, uint64_t total, bool done)
{
    (void)total;
    const struct demo *d = ctx;
    if (!done)
        return;
    printf("      %" PRIu64 " records in %" PRIu64 " messages, %.1f MB in %.1f s (%.0f "
           "records/s)\n",
           st->records, st->messages, (double)st->bytes / 1e6, st->seconds,
           st->seconds > 0 ? (double)st->records / st->seconds : 0.0);
    (void)d;
}

static int produce_train(struct demo *d)
{
    int64_t now = st_clock_wall_ms(NULL);
    int64_t first = demo_first_window(now, d->o.windows, DEMO_GRACE_MS);
    struct train_src src = {
        .d = d, .base = first, .step = (int64_t)d->o.windows * HOUR_MS / (int64_t)d->ntrain};
    struct produce_opts po = {.brokers = d->bootstrap,
                              .topic = DEMO_TOPIC,
                              .collection = DEMO_COLL,
                              .format = PRODUCE_BINARY,
                              .batch = DEMO_BATCH,
                              .progress = progress,
                              .progress_ud = d};
    struct produce_stats st;
    struct st_err err = {0};
    if (produce_run(&po, train_next, &src, &st, &err) != ST_OK) {
        fprintf(stderr, "strata demo: producing: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t n, cap;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    size_t n = size * nmemb;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* POSTs body to url on a reused handle; returns the parsed JSON answer of a 200, else NULL
 * with the reason in why. */
static json_t *post_json(CURL *h, const char *url, const char *body, char *why, size_t cap)
{
    struct buf b = {0};
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode cc = curl_easy_perform(h);
    curl_slist_free_all(hd);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = NULL;
    if (cc != CURLE_OK)
        snprintf(why, cap, "%s", curl_easy_strerror(cc));
    else if (status != 200)
        snprintf(why, cap, "HTTP %ld: %s", status, b.p != NULL ? b.p : "");
    else if ((j = json_loadb(b.p != NULL ? b.p : "", b.n, 0, NULL)) == NULL)
        snprintf(why, cap, "unparsable answer");
    free(b.p);
    return j;
}

/* The search request body for vector v. */
static char *search_body(const float *v, uint32_t dim, int k)
{
    size_t cap = (size_t)dim * 16 + 64, n = 0;
    char *s = malloc(cap);
    if (s == NULL)
        return NULL;
    n += (size_t)snprintf(s + n, cap - n, "{\"k\":%d,\"vector\":[", k);
    for (uint32_t i = 0; i < dim; i++)
        n += (size_t)snprintf(s + n, cap - n, i ? ",%.9g" : "%.9g", (double)v[i]);
    snprintf(s + n, cap - n, "]}");
    return s;
}

/* ---- waiting for windows ------------------------------------------------------------------ */

struct wstate {
    size_t indexed, indexing, total;
    uint64_t records;
};

static void window_state(struct demo *d, struct wstate *w)
{
    *w = (struct wstate){0};
    struct idx_coll *c =
        idx_service_coll(indexer_node_service(d->idx), DEMO_COLL, strlen(DEMO_COLL));
    struct idx_window_info *wi = NULL;
    size_t n = 0;
    if (c == NULL || idx_coll_windows(c, &wi, &n) != ST_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        w->total++;
        if (wi[i].indexed) {
            w->indexed++;
            w->records += wi[i].records;
        } else {
            w->indexing++;
        }
    }
    free(wi);
}

/* ---- produce -> searchable latency (and the watermark past every data window) ---------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Does the answer hold id with event time ts? */
static bool has_hit(json_t *j, uint64_t id, int64_t ts)
{
    json_t *hits = json_object_get(j, "hits");
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h)
    {
        json_t *jid = json_object_get(h, "id");
        uint8_t be[8];
        uint32_t len;
        uint64_t got = st_api_json_id(true, jid, be, &len) ? st_get_be64(be) : UINT64_MAX;
        if (got == id && json_integer_value(json_object_get(h, "ts")) == ts)
            return true;
    }
    return false;
}

/*
 * Re-produces DEMO_PROBES train images (same ids, same vectors, event time now: the data is
 * unchanged, and the watermark passes the end of every data window on every partition) one
 * at a time through one producer, and measures how long until a strong search finds each new
 * version. The probes are a produce_run source: before handing out probe p it waits until
 * probe p-1 is searchable (a batch of one goes out as soon as it is handed out), so the
 * latency is the pipeline's and not a client's start-up.
 */
struct probe_src {
    struct demo *d;
    CURL *h;
    char url[256];
    size_t p;          /* probes handed out */
    size_t id;         /* the last one's id ... */
    int64_t ts, t0_us; /* ... event time, and when it was handed out */
    int64_t *lat_us;
    size_t nlat;
    char why[512];
};

/* Polls strong search until the last probe's new version is a hit (30 s at most). */
static int probe_wait(struct probe_src *s)
{
    struct demo *d = s->d;
    char *body = search_body(d->train + s->id * d->dim, d->dim, DEMO_K);
    bool found = false;
    while (body != NULL && !found && !demo_stop && now_us() - s->t0_us < 30 * 1000000LL) {
        json_t *j = post_json(s->h, s->url, body, s->why, sizeof(s->why));
        found = j != NULL && has_hit(j, s->id, s->ts);
        json_decref(j);
    }
    free(body);
    if (demo_stop)
        return ST_ECLOSED;
    if (!found) {
        fprintf(stderr, "strata demo: record %zu not searchable after 30 s (%s)\n", s->id, s->why);
        return ST_ETIMEDOUT;
    }
    s->lat_us[s->nlat++] = now_us() - s->t0_us;
    return ST_OK;
}

/* produce_next_fn */
static int probe_next(void *ctx, struct produce_rec *r)
{
    struct probe_src *s = ctx;
    struct demo *d = s->d;
    if (s->p > 0) {
        int rc = probe_wait(s);
        if (rc != ST_OK)
            return rc;
    }
    if (s->p == DEMO_PROBES)
        return 0;
    s->id = demo_probe_id(s->p, DEMO_PROBES, d->ntrain); /* distinct ids */
    s->ts = st_clock_wall_ms(NULL);
    *r = (struct produce_rec){.u64 = true,
                              .id_u64 = s->id,
                              .vec = d->train + s->id * d->dim,
                              .dim = d->dim,
                              .ts = s->ts,
                              .partition = (int32_t)(s->p % DEMO_PARTITIONS)};
    s->p++;
    s->t0_us = now_us();
    return 1;
}

static int probe_latency(struct demo *d, int64_t *lat_us, size_t *nlat)
{
    struct probe_src s = {.d = d, .h = curl_easy_init(), .lat_us = lat_us};
    if (s.h == NULL)
        return -1;
    snprintf(s.url, sizeof(s.url), "%s/v1/collections/" DEMO_COLL "/search", d->url);
    struct produce_opts po = {
        .brokers = d->bootstrap, .topic = DEMO_TOPIC, .format = PRODUCE_BINARY, .batch = 1};
    struct produce_stats st;
    struct st_err err = {0};
    int rc = produce_run(&po, probe_next, &s, &st, &err);
    if (rc != ST_OK && rc != ST_ECLOSED && rc != ST_ETIMEDOUT)
        fprintf(stderr, "strata demo: probes: %s\n", err.msg);
    curl_easy_cleanup(s.h);
    *nlat = s.nlat;
    return rc == ST_OK && s.nlat == DEMO_PROBES ? 0 : -1;
}

/* ---- exact ground truth ------------------------------------------------------------------- */

/* Train rows per tile: a tile stays in cache while every query of the thread scans it, so
 * the scan is bound by the kernel, not by memory (60,000 x 784 floats is 188 MB). */
#define GT_TILE 256

static void *gt_main(void *arg)
{
    struct gt_job *j = arg;
    struct demo *d = j->d;
    st_dist_fn l2 = st_kernels()->l2sq;
    size_t nq = j->to - j->from;
    struct st_hit *heaps = malloc((nq ? nq : 1) * DEMO_K * sizeof(*heaps));
    size_t *counts = calloc(nq ? nq : 1, sizeof(*counts));
    if (heaps == NULL || counts == NULL) {
        j->failed = true;
        goto out;
    }
    for (size_t t0 = 0; t0 < d->ntrain; t0 += GT_TILE) {
        size_t t1 = t0 + GT_TILE < d->ntrain ? t0 + GT_TILE : d->ntrain;
        for (size_t q = 0; q < nq; q++) {
            const float *qv = d->test + (j->from + q) * d->dim;
            for (size_t i = t0; i < t1; i++)
                st_topk_push(heaps + q * DEMO_K, &counts[q], DEMO_K,
                             (struct st_hit){.id = (uint32_t)i,
                                             .dist = l2(qv, d->train + i * d->dim, d->dim)});
        }
        if (demo_stop)
            goto out;
    }
    for (size_t q = 0; q < nq; q++) {
        struct st_hit *h = heaps + q * DEMO_K;
        size_t n = counts[q];
        st_hits_sort(h, n);
        for (size_t k = 0; k < DEMO_K; k++)
            d->gt[(j->from + q) * DEMO_K + k] = k < n ? h[k].id : UINT32_MAX;
        d->gt_kth[j->from + q] = n > 0 ? h[n - 1].dist : INFINITY;
    }
out:
    free(heaps);
    free(counts);
    return NULL;
}

/* Starts the exact scan on o.threads threads (joined by ground_truth_join). */
static int ground_truth_start(struct demo *d)
{
    d->gt = malloc(d->nq * DEMO_K * sizeof(*d->gt));
    d->gt_kth = malloc(d->nq * sizeof(*d->gt_kth));
    if (d->gt == NULL || d->gt_kth == NULL)
        return -1;
    for (int t = 0; t < d->o.threads; t++) {
        d->gt_jobs[t] = (struct gt_job){d, d->nq * (size_t)t / (size_t)d->o.threads,
                                        d->nq * (size_t)(t + 1) / (size_t)d->o.threads, false};
        if (pthread_create(&d->gt_th[t], NULL, gt_main, &d->gt_jobs[t]) != 0)
            return -1;
        d->gt_running = t + 1;
    }
    return 0;
}

static int ground_truth_join(struct demo *d)
{
    bool failed = false;
    for (int t = 0; t < d->gt_running; t++) {
        pthread_join(d->gt_th[t], NULL);
        failed |= d->gt_jobs[t].failed;
    }
    d->gt_running = 0;
    return failed ? -1 : 0;
}

/* ---- the queries -------------------------------------------------------------------------- */

struct q_job {
    struct demo *d;
    size_t from, to;
    double hits_ok; /* recall numerator */
    size_t failed;
    char why[512];
    int64_t *lat_us;
};

static void *query_main(void *arg)
{
    struct q_job *j = arg;
    struct demo *d = j->d;
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/collections/" DEMO_COLL "/search", d->url);
    for (size_t q = j->from; q < j->to && h != NULL && !demo_stop; q++) {
        char *body = search_body(d->test + q * d->dim, d->dim, DEMO_K);
        int64_t t0 = now_us();
        json_t *r = body != NULL ? post_json(h, url, body, j->why, sizeof(j->why)) : NULL;
        j->lat_us[q] = now_us() - t0;
        free(body);
        if (r == NULL) {
            j->failed++;
            continue;
        }
        j->hits_ok +=
            (double)demo_recall_hits(json_object_get(r, "hits"), d->test + q * d->dim, d->train,
                                     d->ntrain, d->dim, d->gt + q * DEMO_K, d->gt_kth[q], DEMO_K);
        json_decref(r);
    }
    if (h != NULL)
        curl_easy_cleanup(h);
    return NULL;
}

/* ---- main --------------------------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* Removes dir and what it holds, without a shell (a quote in TMPDIR must not make it remove
 * anything else) and without following symbolic links. */
static void rm_rf(const char *dir)
{
    if (nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "strata demo: could not remove %s: %s\n", dir, strerror(errno));
}

static void teardown(struct demo *d)
{
    (void)ground_truth_join(d);
    indexer_node_stop(d->idx);
    if (d->ing_running) {
        atomic_store(&d->ing_stop, true);
        pthread_join(d->ing_thr, NULL);
    }
    if (d->ing != NULL && ingest_node_stop(d->ing, true) != ST_OK)
        fprintf(stderr, "strata demo: ingest did not stop cleanly\n");
    if (d->mock != NULL)
        rd_kafka_mock_cluster_destroy(d->mock);
    if (d->mock_rk != NULL)
        rd_kafka_destroy(d->mock_rk);
    cfg_free(d->cfg);
    if (d->made_dir && !d->o.keep)
        rm_rf(d->dir);
    free(d->bootstrap);
    free(d->train);
    free(d->test);
    free(d->gt);
    free(d->gt_kth);
}

static int parse_args(int argc, char **argv, struct demo_opts *o)
{
    *o = (struct demo_opts){.dataset = "/usr/share/datasets/fashion-mnist",
                            .listen = "127.0.0.1:7080",
                            .index = "hnsw",
                            .nats = "embedded",
                            .train = 60000,
                            .queries = 10000,
                            .windows = 6,
                            .threads = 2};
    static const struct option lo[] = {{"dataset", required_argument, NULL, 'd'},
                                       {"train", required_argument, NULL, 't'},
                                       {"queries", required_argument, NULL, 'q'},
                                       {"windows", required_argument, NULL, 'w'},
                                       {"index", required_argument, NULL, 'i'},
                                       {"listen", required_argument, NULL, 'l'},
                                       {"data-dir", required_argument, NULL, 'D'},
                                       {"nats", required_argument, NULL, 'n'},
                                       {"exit-after-report", no_argument, NULL, 'x'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        char *end = NULL;
        const char *what = NULL; /* the numeric option being parsed */
        switch (c) {
        case 'd':
            o->dataset = optarg;
            break;
        case 't':
            what = "train";
            o->train = strtoul(optarg, &end, 10);
            break;
        case 'q':
            what = "queries";
            o->queries = strtoul(optarg, &end, 10);
            break;
        case 'w': {
            what = "windows";
            long w = strtol(optarg, &end, 10);
            o->windows = w >= 1 && w <= 48 ? (int)w : 0; /* out of range: 0, refused below */
            break;
        }
        case 'i':
            o->index = optarg;
            break;
        case 'l':
            o->listen = optarg;
            break;
        case 'D':
            o->data_dir = optarg;
            break;
        case 'n':
            o->nats = optarg;
            break;
        case 'x':
            o->exit_after = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (end != NULL && (*end != '\0' || end == optarg)) {
            fprintf(stderr, "strata demo: --%s: not a number: %s\n", what, optarg);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "strata demo: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->train < 100 || o->train > 60000 || o->queries < 1 || o->queries > 10000 ||
        o->windows < 1 || o->windows > 48 ||
        (strcmp(o->index, "hnsw") != 0 && strcmp(o->index, "ivfpq") != 0)) {
        fprintf(stderr, "strata demo: --train 100..60000, --queries 1..10000, --windows "
                        "1..48, --index hnsw|ivfpq\n");
        return 2;
    }
    return -1;
}

int demo_main(int argc, char **argv)
{
    struct demo d = {0};
    int prc = parse_args(argc, argv, &d.o);
    if (prc >= 0)
        return prc;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    st_log_set_level(ST_LOG_WARNING);
    int exit_code = 1;
    int64_t t_start = now_us();

    printf("strata demo: Fashion-MNIST through Kafka into time windows, indexed, searched\n");
    printf("[1/7] loading Fashion-MNIST from %s\n", d.o.dataset);
    if (load_images(&d, "train-images-idx3-ubyte.gz", d.o.train, &d.train, &d.ntrain) != 0 ||
        load_images(&d, "t10k-images-idx3-ubyte.gz", d.o.queries, &d.test, &d.nq) != 0)
        goto out;
    printf("      %zu train images, %zu test queries, %u dims\n", d.ntrain, d.nq, d.dim);

    if (d.o.data_dir != NULL) {
        snprintf(d.dir, sizeof(d.dir), "%s", d.o.data_dir);
        if (mkdir(d.dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "strata demo: %s: %s\n", d.dir, strerror(errno));
            goto out;
        }
        d.o.keep = true;
        /* An earlier run's windows would be indexed, counted and searched as this run's. */
        DIR *dd = opendir(d.dir);
        if (dd == NULL) {
            fprintf(stderr, "strata demo: %s: %s\n", d.dir, strerror(errno));
            goto out;
        }
        struct dirent *de;
        bool empty = dd != NULL;
        while (dd != NULL && empty && (de = readdir(dd)) != NULL)
            empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
        if (dd != NULL)
            closedir(dd);
        if (!empty) {
            fprintf(stderr,
                    "strata demo: --data-dir %s: not empty (an earlier run's data would "
                    "mix with this run's); give a new or empty directory\n",
                    d.dir);
            exit_code = 2;
            goto out;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(d.dir, sizeof(d.dir), "%s/strata-demo.XXXXXX", tmp ? tmp : "/tmp");
        if (mkdtemp(d.dir) == NULL) {
            fprintf(stderr, "strata demo: mkdtemp: %s\n", strerror(errno));
            goto out;
        }
        d.made_dir = true;
    }

    printf("[2/7] starting the embedded Kafka-protocol broker (librdkafka mock cluster)\n");
    int wrc = 0;
    if (start_broker(&d) != 0 || (wrc = write_config(&d)) != 0) {
        exit_code = wrc == 2 ? 2 : 1;
        goto out;
    }
    printf("      brokers %s, topic " DEMO_TOPIC " (%d partitions); config %s\n", d.bootstrap,
           DEMO_PARTITIONS, d.yaml);

    printf("[3/7] starting ingest and indexer (bus: %s)\n", d.o.nats);
    if (start_nodes(&d) != 0)
        goto out;
    printf("      ingest on %s, indexer (search) on %s\n", ingest_node_url(d.ing), d.url);

    printf("[4/7] producing %zu images through Kafka over %d one-hour event-time windows\n",
           d.ntrain, d.o.windows);
    if (produce_train(&d) != 0)
        goto out;

    printf("[5/7] produce -> searchable latency (%d single-record probes, strong search)\n",
           DEMO_PROBES);
    int64_t lat[DEMO_PROBES];
    size_t nlat = 0;
    if (probe_latency(&d, lat, &nlat) != 0 || demo_stop)
        goto out;
    qsort(lat, nlat, sizeof(lat[0]), cmp_i64);
    /* p90, not max: the first probe also waits for the producer's first connection */
    double lat_p50 = (double)lat[nlat / 2] / 1000, lat_p90 = (double)lat[nlat * 9 / 10] / 1000;
    printf("      p50 %.1f ms, p90 %.1f ms\n", lat_p50, lat_p90);

    printf("[6/7] sealing and indexing %d windows; exact ground truth meanwhile\n", d.o.windows);
    int64_t t_idx = now_us();
    if (ground_truth_start(&d) != 0) {
        fprintf(stderr, "strata demo: ground truth: out of memory\n");
        goto out;
    }
    struct wstate ws;
    size_t last = SIZE_MAX;
    for (;;) {
        window_state(&d, &ws);
        if (ws.indexed != last) {
            printf("      %zu/%d windows indexed (%" PRIu64 " records), %zu indexing\n", ws.indexed,
                   d.o.windows, ws.records, ws.indexing);
            last = ws.indexed;
        }
        if (ws.indexed >= (size_t)d.o.windows && ws.indexing == 0) {
            /* every image is in a window (the probes' older versions are superseded) */
            if (ws.records + DEMO_PROBES < d.ntrain || ws.records > d.ntrain) {
                fprintf(stderr, "strata demo: %" PRIu64 " records indexed, %zu produced\n",
                        ws.records, d.ntrain);
                goto out;
            }
            break;
        }
        if (demo_stop || atomic_load(&d.ing_failed))
            goto out;
        if (now_us() - t_idx > 20 * 60 * 1000000LL) {
            fprintf(stderr, "strata demo: windows not indexed after 20 minutes\n");
            goto out;
        }
        usleep(200 * 1000);
    }
    printf("      indexed in %.1f s\n", (double)(now_us() - t_idx) / 1e6);
    if (ground_truth_join(&d) != 0) {
        fprintf(stderr, "strata demo: ground truth: out of memory\n");
        goto out;
    }
    if (demo_stop)
        goto out;
    printf("      exact ground truth in %.1f s (%s kernels)\n", (double)(now_us() - t_idx) / 1e6,
           st_kernels()->name);

    printf("[7/7] running %zu test queries over HTTP (k=%d, consistency strong, %d clients)\n",
           d.nq, DEMO_K, d.o.threads);
    int64_t *qlat = calloc(d.nq, sizeof(*qlat));
    struct q_job jobs[DEMO_MAX_THREADS];
    pthread_t th[DEMO_MAX_THREADS];
    int64_t t_q = now_us();
    for (int t = 0; t < d.o.threads && qlat != NULL; t++) {
        jobs[t] = (struct q_job){.d = &d,
                                 .from = d.nq * (size_t)t / (size_t)d.o.threads,
                                 .to = d.nq * (size_t)(t + 1) / (size_t)d.o.threads,
                                 .lat_us = qlat};
        pthread_create(&th[t], NULL, query_main, &jobs[t]);
    }
    double ok = 0;
    size_t failed = 0;
    for (int t = 0; t < d.o.threads && qlat != NULL; t++) {
        pthread_join(th[t], NULL);
        ok += jobs[t].hits_ok;
        failed += jobs[t].failed;
        if (jobs[t].failed)
            fprintf(stderr, "strata demo: %zu queries failed: %s\n", jobs[t].failed, jobs[t].why);
    }
    double secs = (double)(now_us() - t_q) / 1e6;
    if (qlat == NULL || failed > 0 || demo_stop) {
        free(qlat);
        goto out;
    }
    qsort(qlat, d.nq, sizeof(*qlat), cmp_i64);
    double recall = ok / (double)(d.nq * DEMO_K);
    printf("\n== strata demo report ==\n");
    printf("recall@10          %.4f  (against exact search over the %zu stored vectors)\n", recall,
           d.ntrain);
    printf("QPS                %.0f  (%zu queries, %d HTTP clients; p50 %.2f ms, p99 %.2f ms)\n",
           (double)d.nq / secs, d.nq, d.o.threads, (double)qlat[d.nq / 2] / 1000,
           (double)qlat[d.nq * 99 / 100] / 1000);
    printf("produce->search    p50 %.1f ms, p90 %.1f ms  (%zu probes, strong consistency)\n",
           lat_p50, lat_p90, nlat);
    printf("windows            %zu indexed (%s) + 1 open, scanned exactly\n", ws.indexed,
           d.o.index);
    printf("elapsed            %.0f s\n", (double)(now_us() - t_start) / 1e6);
    free(qlat);

    char qpath[700];
    snprintf(qpath, sizeof(qpath), "%s/query.json", d.dir);
    char *body = search_body(d.test, d.dim, 5);
    FILE *qf = fopen(qpath, "w");
    if (qf != NULL && body != NULL) {
        fputs(body, qf);
        fclose(qf);
    }
    free(body);
    printf("\nsearch URL         %s/v1/collections/" DEMO_COLL "/search\n", d.url);
    printf("try                curl -s %s/v1/collections/" DEMO_COLL
           "/search -H 'content-type: application/json' -d @%s\n",
           d.url, qpath);
    printf("                   strata search --url %s --collection " DEMO_COLL
           " --k 5 --query-file %s/t10k-images-idx3-ubyte.gz --row 0\n",
           d.url, d.o.dataset);
    printf("status page        %s/\n", d.url);
    printf("kafka              %s (topic " DEMO_TOPIC "; strata produce and kcat reach it)\n",
           d.bootstrap);
    exit_code = recall >= 0 ? 0 : 1;
    if (!d.o.exit_after) {
        printf("\nserving until Ctrl-C\n");
        while (!demo_stop && !atomic_load(&d.ing_failed))
            usleep(200 * 1000);
        if (atomic_load(&d.ing_failed))
            exit_code = 1;
    }
out:
    if (exit_code != 0 && demo_stop)
        exit_code = 0; /* Ctrl-C before the report: a clean stop */
    printf("strata demo: stopping\n");
    teardown(&d);
    return exit_code;
}
