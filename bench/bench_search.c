/*
 * HTTP search vs the same searches in-process, and produce -> searchable / indexed latency
 * (issue 12), in one run against a real Kafka broker and nats-server with both daemons.
 *
 *   bench_search --brokers HOST:PORT --nats nats://HOST:PORT --ingest BIN --indexer BIN
 *                [--dir /tmp] [--train 60000] [--seconds 10] [--fresh 200]
 *
 * 1. Fashion-MNIST train (Debian dataset-fashion-mnist) is produced as binary frames into six
 *    one-minute windows 20+ minutes old; strata-ingest seals them, strata-indexer builds HNSW
 *    (M=16, ef_construction=200) indexes. The run waits until every window is indexed.
 * 2. HTTP: 1, 2 and 8 clients (one thread and one keep-alive connection each) search the 10,000
 *    test images (k=10, ef=64, consistency "indexed") for --seconds each: QPS, p50, p99. One
 *    client also runs "strong" searches (the fan-out to the ingest node included).
 * 3. In-process: the indexer is stopped and the same engine (idx_service + idx_search_run) is
 *    started inside this process on the same data (nothing rebuilt); the same searches with 1,
 *    2 and 8 threads. The HTTP/in-process QPS ratio is the HTTP overhead.
 * 4. Freshness: the indexer restarted, a second collection with 2-second windows gets one
 *    record every 100 ms; for each, the time from produce until a strong search finds it, and
 *    until an indexed search finds it (its window sealed, published, fetched, built and
 *    swapped in): p50, p99.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfg.h"
#include "idx_client.h"
#include "idx_search.h"
#include "idx_service.h"
#include "rec_format.h"
#include "st_clock.h"
#include "st_distance.h"
#include "st_log.h"

#define DIM 784
#define NQ  10000

static const char *brokers, *nats, *ingest_bin, *indexer_bin, *dir = "/tmp";
static unsigned ntrain = 60000, seconds = 10, nfresh = 200;
static float *train, *test;
static char cfg_path[512], data[512], logdir[512], topic[64], topic2[64];

static double now_s(void)
{
    return (double)st_clock_mono_ns(NULL) / 1e9;
}

static pid_t children[2];

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_search: %s: %s\n", what, why);
    for (int i = 0; i < 2; i++)
        if (children[i] > 0)
            kill(children[i], SIGTERM);
    exit(1);
}

static float *load_idx(const char *name, size_t n)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "gzip -dc /usr/share/datasets/fashion-mnist/%s", name);
    FILE *p = popen(cmd, "r");
    unsigned char hdr[16];
    unsigned char *px = malloc(n * DIM);
    if (p == NULL || fread(hdr, 1, 16, p) != 16 || fread(px, 1, n * DIM, p) != n * DIM)
        die(name, "cannot read (is dataset-fashion-mnist installed?)");
    pclose(p);
    float *v = malloc(n * DIM * sizeof(float));
    for (size_t i = 0; i < n * DIM; i++)
        v[i] = px[i];
    free(px);
    return v;
}

/* ---- processes ---- */

static pid_t spawn(const char *bin, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execl(bin, bin, "--config", cfg_path, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
}

/* The number logged after "HTTP on port " in log (waits up to 60 s). */
static unsigned logged_port(const char *log)
{
    for (int i = 0; i < 600; i++) {
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            char *p = strstr(line, "HTTP on port ");
            if (p != NULL) {
                fclose(f);
                return (unsigned)atoi(p + 13);
            }
        }
        if (f != NULL)
            fclose(f);
        usleep(100000);
    }
    die(log, "no HTTP port logged");
    return 0;
}

/* ---- HTTP ---- */

struct buf {
    char *p;
    size_t n;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct buf *b = ud;
    char *q = realloc(b->p, b->n + sz * n + 1);
    if (q == NULL)
        return 0;
    memcpy(q + b->n, p, sz * n);
    b->p = q;
    b->n += sz * n;
    q[b->n] = '\0';
    return sz * n;
}

/* One request on handle c (kept alive across calls); returns the status, body in *out. */
static long request(CURL *c, const char *url, const char *body, struct buf *out)
{
    out->n = 0;
    if (out->p != NULL)
        out->p[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    else
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    long st = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    return st;
}

static char *query_body(const float *q, const char *consistency, int k)
{
    size_t cap = DIM * 6 + 128, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s, cap,
                          "{\"k\": %d, \"ef\": 64, \"consistency\": \"%s\", "
                          "\"include_meta\": false, \"vector\": [",
                          k, consistency);
    for (int i = 0; i < DIM; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s%d", i ? "," : "", (int)q[i]);
    snprintf(s + n, cap - n, "]}");
    return s;
}

static char **bodies_indexed, **bodies_strong;

/* ---- load generation ---- */

struct worker {
    int id, nthreads;
    unsigned port;
    bool http, strong;
    struct idx_service *svc;
    struct idx_coll *coll;
    _Atomic bool *stop;
    double *lat;
    size_t nlat, cap;
    long errors;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    CURL *c = w->http ? curl_easy_init() : NULL;
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
    if (c != NULL)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/collections/fm/search", w->port);
    struct buf b = {0};
    for (size_t i = (size_t)w->id; !atomic_load(w->stop); i += (size_t)w->nthreads) {
        size_t q = i % NQ;
        double t0 = now_s();
        bool ok;
        if (w->http) {
            ok = request(c, url, w->strong ? bodies_strong[q] : bodies_indexed[q], &b) == 200;
        } else {
            struct idx_search_req rq = {.vec = test + q * DIM,
                                        .k = 10,
                                        .ef = 64,
                                        .from_ts = INT64_MIN,
                                        .to_ts = INT64_MAX,
                                        .strong = w->strong};
            struct idx_search_res res;
            struct st_err err = {0};
            ok = idx_search_run(w->svc, w->coll, &rq, &res, &err) == ST_OK;
            if (ok) {
                /* what the HTTP handler does with each hit, minus the JSON */
                volatile int64_t sink = 0;
                for (size_t h = 0; h < res.n; h++)
                    sink += res.hits[h].ts;
                (void)sink;
                idx_search_res_free(&res);
            }
        }
        double dt = now_s() - t0;
        if (!ok) {
            w->errors++;
            continue;
        }
        if (w->nlat == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 4096;
            w->lat = realloc(w->lat, w->cap * sizeof(*w->lat));
        }
        w->lat[w->nlat++] = dt;
    }
    free(b.p);
    curl_slist_free_all(hs);
    if (c != NULL)
        curl_easy_cleanup(c);
    return NULL;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct result {
    double qps, p50, p99;
    long errors;
};

static struct result run(int threads, bool http, bool strong, unsigned port,
                         struct idx_service *svc, struct idx_coll *coll)
{
    _Atomic bool stopf = false;
    struct worker *w = calloc((size_t)threads, sizeof(*w));
    pthread_t *th = calloc((size_t)threads, sizeof(*th));
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.id = i,
                               .nthreads = threads,
                               .port = port,
                               .http = http,
                               .strong = strong,
                               .svc = svc,
                               .coll = coll,
                               .stop = &stopf};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    sleep(seconds);
    atomic_store(&stopf, true);
    size_t n = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        n += w[i].nlat;
    }
    double el = now_s() - t0;
    double *all = malloc((n ? n : 1) * sizeof(*all));
    size_t k = 0;
    struct result r = {0};
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat, w[i].nlat * sizeof(*all));
        k += w[i].nlat;
        r.errors += w[i].errors;
        free(w[i].lat);
    }
    qsort(all, n, sizeof(*all), dcmp);
    r.qps = (double)n / el;
    r.p50 = n ? all[n / 2] * 1e3 : 0;
    r.p99 = n ? all[(size_t)((double)n * 0.99)] * 1e3 : 0;
    free(all);
    free(w);
    free(th);
    return r;
}

/* ---- producing ---- */

static rd_kafka_t *producer(void)
{
    char es[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, es, sizeof(es));
    rd_kafka_conf_set(c, "linger.ms", "5", es, sizeof(es));
    rd_kafka_conf_set(c, "message.max.bytes", "10000000", es, sizeof(es));
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof(es));
    if (p == NULL)
        die("producer", es);
    return p;
}

static void send_frame(rd_kafka_t *p, const char *t, int32_t part, const char *coll,
                       struct rec_record *r, uint32_t n)
{
    uint8_t *f;
    size_t len;
    if (rec_frame_encode(coll, DIM, false, r, n, &f, &len) != ST_OK)
        die("encode", "frame");
    while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC(t), RD_KAFKA_V_PARTITION(part),
                             RD_KAFKA_V_VALUE(f, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(p, 50);
    rd_kafka_poll(p, 0);
}

static void produce_train(int64_t w0)
{
    rd_kafka_t *p = producer();
    unsigned per_win = ntrain / 6;
    char(*ids)[24] = calloc(100, sizeof(*ids));
    struct rec_record r[100];
    for (unsigned base = 0; base < ntrain; base += 100) {
        unsigned n = ntrain - base < 100 ? ntrain - base : 100;
        for (unsigned i = 0; i < n; i++) {
            unsigned k = base + i;
            snprintf(ids[i], sizeof(ids[i]), "t%u", k);
            r[i] = (struct rec_record){(const uint8_t *)ids[i],
                                       (uint32_t)strlen(ids[i]),
                                       w0 + (int64_t)(k / per_win) * 60000 + k % per_win,
                                       REC_UPSERT,
                                       train + (size_t)k * DIM,
                                       NULL,
                                       0};
        }
        send_frame(p, topic, (int32_t)(base / 100 % 2), "fm", r, n);
    }
    /* the watermark: past every window */
    r[0] = (struct rec_record){
        (const uint8_t *)"wm", 2, st_clock_wall_ms(NULL) - 1000, REC_UPSERT, test, NULL, 0};
    for (int i = 0; i < 2; i++)
        send_frame(p, topic, i, "fm", r, 1);
    if (rd_kafka_flush(p, 300000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("produce", "flush timed out");
    rd_kafka_destroy(p);
    free(ids);
}

/* Every produced window of fm indexed? */
static bool all_indexed(unsigned port, int64_t w0)
{
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/collections/fm/windows", port);
    struct buf b = {0};
    long st = request(c, url, NULL, &b);
    json_t *a = st == 200 ? json_loads(b.p, 0, NULL) : NULL;
    size_t i, done = 0;
    json_t *w;
    json_array_foreach(a, i, w)
    {
        int64_t s = json_integer_value(json_object_get(w, "start"));
        if (s >= w0 && s < w0 + 6 * 60000 &&
            strcmp(json_string_value(json_object_get(w, "state")), "indexed") == 0)
            done++;
    }
    json_decref(a);
    free(b.p);
    curl_easy_cleanup(c);
    return done == 6;
}

/* ---- freshness ---- */

struct fresh {
    unsigned port;
    double *strong, *indexed;
    size_t n;
};

static bool found(CURL *c, unsigned port, const float *q, const char *id, const char *cons)
{
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/collections/live/search", port);
    char *body = query_body(q, cons, 3);
    struct buf b = {0};
    long st = request(c, url, body, &b);
    bool ok = st == 200 && b.p != NULL && strstr(b.p, id) != NULL;
    free(b.p);
    free(body);
    return ok;
}

static void freshness(unsigned port, struct fresh *fr)
{
    rd_kafka_t *p = producer();
    CURL *c = curl_easy_init();
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    fr->strong = calloc(nfresh, sizeof(double));
    fr->indexed = calloc(nfresh, sizeof(double));
    double *t0 = calloc(nfresh, sizeof(double));
    bool *got_s = calloc(nfresh, 1), *got_i = calloc(nfresh, 1);
    char(*ids)[32] = calloc(nfresh, sizeof(*ids));
    double next = now_s();
    unsigned sent = 0, done_i = 0;
    double deadline = 0;
    /* Send one record every 100 ms; between sends poll the pending ones. */
    while (done_i < nfresh) {
        if (sent < nfresh && now_s() >= next) {
            snprintf(ids[sent], sizeof(ids[sent]), "\"live-%u\"", sent);
            struct rec_record r = {(const uint8_t *)ids[sent] + 1,
                                   (uint32_t)strlen(ids[sent]) - 2,
                                   st_clock_wall_ms(NULL),
                                   REC_UPSERT,
                                   test + (size_t)(sent % NQ) * DIM,
                                   NULL,
                                   0};
            send_frame(p, topic2, (int32_t)(sent % 2), "live", &r, 1);
            rd_kafka_flush(p, 10000);
            t0[sent] = now_s();
            sent++;
            next += 0.1;
            if (sent == nfresh)
                deadline = now_s() + 60;
        }
        /* the keep-going stream: windows only seal when newer records move the watermark */
        if (sent == nfresh && now_s() >= next) {
            struct rec_record r = {
                (const uint8_t *)"tick", 4, st_clock_wall_ms(NULL), REC_UPSERT, test, NULL, 0};
            static int32_t tp;
            send_frame(p, topic2, tp++ % 2, "live", &r, 1);
            rd_kafka_poll(p, 0);
            next += 0.1;
        }
        for (unsigned i = 0; i < sent; i++) {
            if (!got_s[i] && found(c, port, test + (size_t)(i % NQ) * DIM, ids[i], "strong")) {
                got_s[i] = true;
                fr->strong[i] = now_s() - t0[i];
            }
            if (got_s[i] && !got_i[i] &&
                found(c, port, test + (size_t)(i % NQ) * DIM, ids[i], "indexed")) {
                got_i[i] = true;
                fr->indexed[i] = now_s() - t0[i];
                done_i++;
            }
        }
        if (deadline > 0 && now_s() > deadline) {
            unsigned ns = 0;
            for (unsigned i = 0; i < sent; i++)
                ns += got_s[i];
            fprintf(stderr, "bench_search: %u of %u found by strong, %u by indexed\n", ns, sent,
                    done_i);
            die("freshness", "records not indexed within 60 s of the last one");
        }
    }
    fr->n = nfresh;
    rd_kafka_destroy(p);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    free(t0);
    free(got_s);
    free(got_i);
    free(ids);
}

static void pct(double *v, size_t n, double *p50, double *p99)
{
    qsort(v, n, sizeof(*v), dcmp);
    *p50 = v[n / 2] * 1e3;
    *p99 = v[(size_t)((double)n * 0.99)] * 1e3;
}

/* The bench expects brokers of its own: streams left on the NATS server by earlier runs would
 * hold the strata.* subjects, so they go first. */
static void nats_clean(void)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    if (natsConnection_ConnectTo(&nc, nats) != NATS_OK ||
        natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
        die("nats", "cannot connect");
    jsStreamNamesList *l = NULL;
    if (js_StreamNames(&l, js, NULL, &jerr) == NATS_OK) {
        for (int i = 0; i < l->Count; i++)
            (void)js_DeleteStream(js, l->List[i], NULL, &jerr);
        jsStreamNamesList_Destroy(l);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* Creates topic t with two partitions (the admin API; it may exist). */
static void create_topic(const char *t)
{
    char es[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, es, sizeof(es));
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof(es));
    if (k == NULL)
        die("admin", es);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(t, 2, 1, es, sizeof(es));
    rd_kafka_queue_t *q = rd_kafka_queue_new(k);
    rd_kafka_CreateTopics(k, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (ev == NULL)
        die("admin", "CreateTopics timed out");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(k);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--brokers") == 0)
            brokers = argv[i + 1];
        else if (strcmp(argv[i], "--nats") == 0)
            nats = argv[i + 1];
        else if (strcmp(argv[i], "--ingest") == 0)
            ingest_bin = argv[i + 1];
        else if (strcmp(argv[i], "--indexer") == 0)
            indexer_bin = argv[i + 1];
        else if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--train") == 0)
            ntrain = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--fresh") == 0)
            nfresh = (unsigned)atoi(argv[i + 1]);
        else
            die("usage", "bench_search --brokers B --nats URL --ingest BIN --indexer BIN "
                         "[--dir D] [--train N] [--seconds S] [--fresh N]");
    }
    if (nfresh >= NQ - 1)
        die("usage", "--fresh must be below 9999");
    if (brokers == NULL || nats == NULL || ingest_bin == NULL || indexer_bin == NULL)
        die("usage", "--brokers, --nats, --ingest and --indexer are required");
    st_log_set_level(ST_LOG_WARNING);
    setvbuf(stdout, NULL, _IOLBF, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    train = load_idx("train-images-idx3-ubyte.gz", ntrain);
    test = load_idx("t10k-images-idx3-ubyte.gz", NQ);
    bodies_indexed = calloc(NQ, sizeof(char *));
    bodies_strong = calloc(NQ, sizeof(char *));
    for (int q = 0; q < NQ; q++) {
        bodies_indexed[q] = query_body(test + (size_t)q * DIM, "indexed", 10);
        bodies_strong[q] = query_body(test + (size_t)q * DIM, "strong", 10);
    }
    char run_dir[400];
    snprintf(run_dir, sizeof(run_dir), "%s/strata-bench-search-%d", dir, (int)getpid());
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die(dir, strerror(errno));
    if (mkdir(run_dir, 0755) != 0)
        die(run_dir, strerror(errno));
    snprintf(cfg_path, sizeof(cfg_path), "%s/strata.yaml", run_dir);
    snprintf(data, sizeof(data), "%s/data", run_dir);
    snprintf(logdir, sizeof(logdir), "%s", run_dir);
    snprintf(topic, sizeof(topic), "bench-fm-%d", (int)getpid());
    snprintf(topic2, sizeof(topic2), "bench-live-%d", (int)getpid());
    nats_clean();
    create_topic(topic);
    create_topic(topic2);
    FILE *f = fopen(cfg_path, "w");
    if (f == NULL)
        die(cfg_path, strerror(errno));
    fprintf(f,
            "node_id: bench\ndata_dir: %s\n"
            "kafka: {brokers: \"%s\", group_id: bench-%d}\n"
            "nats: {url: \"%s\", stream: BENCH%d}\n"
            "collections:\n"
            "  - {name: fm, dim: %d, metric: l2, topic: %s, window: 1m, grace: 1s,\n"
            "     index: {type: hnsw, m: 16, ef_construction: 200}}\n"
            "  - {name: live, dim: %d, metric: l2, topic: %s, window: 2s, grace: 200ms,\n"
            "     max_lateness: 1m, index: {type: hnsw, m: 16, ef_construction: 100}}\n"
            "ingest: {listen: \"127.0.0.1:0\", announce_interval: 500ms}\n"
            "indexer: {listen: \"127.0.0.1:0\", build_threads: 2, memory_budget: 4GiB}\n"
            "log: {level: notice}\n",
            data, brokers, (int)getpid(), nats, (int)getpid(), DIM, topic, DIM, topic2);
    fclose(f);
    char log_ing[600], log_idx[600];
    snprintf(log_ing, sizeof(log_ing), "%s/ingest.log", logdir);
    snprintf(log_idx, sizeof(log_idx), "%s/indexer.log", logdir);
    pid_t ing = spawn(ingest_bin, log_ing);
    children[0] = ing;
    (void)logged_port(log_ing);
    pid_t idx = spawn(indexer_bin, log_idx);
    children[1] = idx;
    unsigned port = logged_port(log_idx);

    int64_t w0 = (st_clock_wall_ms(NULL) - 30 * 60000) / 60000 * 60000;
    double t0 = now_s();
    produce_train(w0);
    while (!all_indexed(port, w0)) {
        if (now_s() - t0 > 1800)
            die("setup", "windows not indexed within 30 minutes");
        usleep(200000);
    }
    printf("setup: %u vectors in 6 windows produced, sealed and indexed in %.1f s\n", ntrain,
           now_s() - t0);
    printf("kernels: %s\n", st_kernels()->name);

    static const int clients[] = {1, 2, 8};
    struct result h[3], hs;
    for (int i = 0; i < 3; i++)
        h[i] = run(clients[i], true, false, port, NULL, NULL);
    hs = run(1, true, true, port, NULL, NULL);
    fprintf(stderr, "bench_search: HTTP rows done; stopping the indexer\n");
    stop(idx);

    /* In-process: the same engine on the same files. */
    struct cfg *cfg;
    struct cfg_errors errs = {0};
    if (cfg_load(cfg_path, &cfg, &errs) != ST_OK)
        die("config", "does not load");
    char idir[600];
    snprintf(idir, sizeof(idir), "%s/indexer", data);
    if (idx_client_init() != ST_OK)
        die("libcurl", "init");
    struct idx_service_opts so = {.cfg = cfg, .dir = idir};
    struct idx_service *svc;
    struct st_err err = {0};
    if (idx_service_start(&so, &svc, &err) != ST_OK)
        die("in-process indexer", err.msg);
    fprintf(stderr, "bench_search: in-process engine started\n");
    struct idx_coll *coll = idx_service_coll(svc, "fm", 2);
    while (idx_coll_view(coll) == NULL)
        usleep(10000);
    usleep(3500000); /* discovery settles (strong) */
    struct result in[3], ins;
    for (int i = 0; i < 3; i++)
        in[i] = run(clients[i], false, false, 0, svc, coll);
    ins = run(1, false, true, 0, svc, coll);
    idx_service_stop(svc);
    cfg_free(cfg);

    printf("\nsearch, Fashion-MNIST %u vectors in 6 windows, k=10, ef=64 (%u s per row)\n", ntrain,
           seconds);
    printf("%-9s %-8s | %10s %8s %8s | %10s %8s %8s | %s\n", "clients", "mode", "HTTP qps",
           "p50 ms", "p99 ms", "in-proc", "p50 ms", "p99 ms", "HTTP/in-process");
    for (int i = 0; i < 3; i++)
        printf("%-9d %-8s | %10.0f %8.3f %8.3f | %10.0f %8.3f %8.3f | %.2f\n", clients[i],
               "indexed", h[i].qps, h[i].p50, h[i].p99, in[i].qps, in[i].p50, in[i].p99,
               h[i].qps / in[i].qps);
    printf("%-9d %-8s | %10.0f %8.3f %8.3f | %10.0f %8.3f %8.3f | %.2f\n", 1, "strong", hs.qps,
           hs.p50, hs.p99, ins.qps, ins.p50, ins.p99, hs.qps / ins.qps);
    long errors = hs.errors + ins.errors;
    for (int i = 0; i < 3; i++)
        errors += h[i].errors + in[i].errors;
    printf("errors: %ld\n", errors);

    /* Freshness. */
    fprintf(stderr, "bench_search: freshness\n");
    snprintf(log_idx, sizeof(log_idx), "%s/indexer-2.log", logdir); /* a fresh log: its port */
    idx = spawn(indexer_bin, log_idx);
    children[1] = idx;
    port = logged_port(log_idx);
    usleep(4000000); /* ready: discovery settled */
    struct fresh fr = {.port = port};
    freshness(port, &fr);
    double s50, s99, i50, i99;
    pct(fr.strong, fr.n, &s50, &s99);
    pct(fr.indexed, fr.n, &i50, &i99);
    printf("\nfreshness, %u records one per 100 ms into 2-second windows (grace 200 ms)\n", nfresh);
    printf("produce -> searchable (strong): p50 %.0f ms, p99 %.0f ms\n", s50, s99);
    printf("produce -> indexed:             p50 %.0f ms, p99 %.0f ms\n", i50, i99);
    stop(idx);
    stop(ing);
    free(fr.strong);
    free(fr.indexed);
    return errors == 0 ? 0 : 1;
}
