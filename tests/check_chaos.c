/*
 * Chaos across both daemons (issue 16): strata-ingest and strata-indexer on one data_dir, the
 * real Kafka broker and nats-server, a producer that never stops, and SIGKILLs of either
 * daemon (or both) at random moments — and, in builds with assertions (the ASan build), at
 * named kill points: flush, seal, vector-log append, TTL drop, segment fetch, index build,
 * swap, catalog update (STRATA_FAULT_POINTS "site=crash@N"). Event time runs faster than the
 * clock at first, then with it, so windows seal, take late data, re-seal and expire under the
 * kills. The oracle (every record produced, its window and vector) lives in this process.
 *
 * Afterwards, with both daemons up: the group's offsets reach the end of every partition;
 * every record of a window the TTL keeps is returned by get-by-id on the indexer (from an
 * index once its window is sealed) with its timestamp and vector; each indexed window holds
 * exactly the oracle's records (none lost, none twice); sampled records are found by search
 * as their own nearest neighbour, every hit list without a repeated id; records of windows
 * the TTL dropped are gone; the dead-letter topic is empty; both daemons stop with exit 0;
 * and `strata inspect` verifies the data dir (stores, catalog, every index file).
 *
 * STRATA_CHAOS_SECONDS sets the chaos phase (default 60: the bounded run of scripts/test);
 * the long run and its figures are in docs/reliability.md. The last line printed is the
 * summary the long run reports.
 */
#include <check.h>
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

#define DIM       8
#define TOKEN     "chaos"
#define WINDOW_MS 10000
#define GRACE_MS  1000
#define TTL_MS    600000
#define PER_MSG   5
#define NPARTS    2
/* Around the TTL's edge a window may or may not be dropped yet: neither checked. */
#define EDGE_MS 25000
/* The checks after the load finish within this; a window expected present must stay inside
 * the TTL for all of it, so none can age out while the test waits for it. */
#define VERIFY_MS 300000

struct rec {
    int64_t ts;
    int part;
};

static struct rec *recs;
static size_t n_recs, cap_recs;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Record i's vector: components in [-1, 1) from a hash of i (distinct for distinct i). */
static void vec_of(size_t i, float *v)
{
    for (int d = 0; d < DIM; d++)
        v[d] = (float)(mix(i * DIM + (uint64_t)d + 1) >> 40) / (float)(1u << 23) - 1.0f;
}

static int64_t win_start(int64_t ts)
{
    return ts / WINDOW_MS * WINDOW_MS;
}

struct env {
    const char *brokers, *nats;
    char topic[128], dead[128], group[128], stream[64];
    char *dir;
    char cfg[600], data[600];
    char cfg_b[600], data_b[600]; /* a second ingest node, "another host" */
};

struct proc;
static void procs_init(const struct env *e, struct proc *ing, struct proc *idx);

/* A fresh topic, stream and data dir with their YAML; ing and idx to run on them. */
static void env_init(struct env *e, struct proc *ing, struct proc *idx)
{
    e->brokers = st_test_broker("STRATA_TEST_KAFKA");
    e->nats = st_test_broker("STRATA_TEST_NATS");
    st_kafka_names("chaos", e->topic, e->dead, e->group);
    snprintf(e->stream, sizeof(e->stream), "CHAOS%d", (int)getpid());
    st_kafka_create_topic(e->brokers, e->topic, NPARTS);
    st_kafka_create_topic(e->brokers, e->dead, 1);
    st_nats_clean(e->nats);
    e->dir = st_test_tmpdir("chaos");
    char token[700];
    snprintf(token, sizeof(token), "%s/token", e->dir);
    FILE *f = fopen(token, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, TOKEN "\n");
    fclose(f);
    for (int k = 0; k < 2; k++) {
        snprintf(k ? e->cfg_b : e->cfg, sizeof(e->cfg), "%s/%s.yaml", e->dir,
                 k ? "strata-b" : "strata");
        snprintf(k ? e->data_b : e->data, sizeof(e->data), "%s/%s", e->dir, k ? "data-b" : "data");
        f = fopen(k ? e->cfg_b : e->cfg, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f,
                "node_id: %s-%d\n" /* one per run: announcements are per node_id */
                "data_dir: %s\n"
                "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
                "  properties: {session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"}\n"
                "nats:\n  url: \"%s\"\n  stream: %s\n"
                "collections:\n  - name: ch\n    dim: %d\n    metric: l2\n    topic: %s\n"
                "    window: 10s\n    grace: 1s\n    max_lateness: 10m\n    ttl: 10m\n"
                "    index: {type: hnsw, m: 8, ef_construction: 64}\n"
                "ingest: {listen: \"127.0.0.1:0\", announce_interval: 500ms}\n"
                "indexer: {listen: \"127.0.0.1:0\", build_threads: 1, memory_budget: 256MiB}\n"
                "http: {auth_token_file: \"%s\"}\n"
                "log: {level: info}\n",
                k ? "chaos-b" : "chaos", (int)getpid(), k ? e->data_b : e->data, e->brokers,
                e->group, e->dead, e->nats, e->stream, DIM, e->topic, token);
        fclose(f);
    }
    procs_init(e, ing, idx);
}

/* Removes the test's files and forgets its records. */
static void env_free(struct env *e)
{
    free(recs);
    recs = NULL;
    n_recs = cap_recs = 0;
    st_test_rmrf(e->dir);
    free(e->dir);
}

/* ---- the daemons and their kills ---- */

enum who { INGEST, INDEXER };

struct proc {
    struct st_daemon d;
    const char *bin, *cfg;
    char log[700];
    int64_t next_kill;   /* when the next kill is due (ms) */
    int64_t armed_until; /* > 0: started armed with a kill point, which must fire by then */
    unsigned runs, kills, crashed_at_point, armed;
};

/* Kill points per daemon: "site" (armed as "site=crash@N", N random in 0..1). */
/* The first of each list is passed often: a daemon's first armed restart uses it, so every
 * run crashes at a kill point at least once. */
static const char *const ingest_points[] = {
    "store.vlog.fsync",      /* group commit */
    "store.seg.create",      /* a run flushed, a seal's output */
    "store.seg.fsync",       /* flush and seal durability */
    "store.seg.extend_open", /* a seal completing the window's vector log */
    "store.vlog.append",     /* vectors appended (the writer thread) */
    "store.manifest.write",  /* every manifest edit: flush, seal, re-seal, drop, watermark */
    "store.seg.unlink",      /* a TTL drop, a superseded run */
    "store.vlog.unlink",     /* a drop of a window's log */
};
static const char *const indexer_points[] = {
    "idx.catalog.rename",      /* the catalog update */
    "idx.fetch.rename",        /* a fetched segment made durable */
    "idx.build.before_commit", /* a built index before the catalog names it */
    "idx.file.rename",         /* an index file into place (the swap) */
    "idx.part.unlink_index",   /* an expired window's files */
};

static void procs_init(const struct env *e, struct proc *ing, struct proc *idx)
{
    *ing = (struct proc){.bin = getenv("STRATA_INGEST"), .cfg = e->cfg};
    *idx = (struct proc){.bin = getenv("STRATA_INDEXER"), .cfg = e->cfg};
    ck_assert_ptr_nonnull(ing->bin);
    ck_assert_ptr_nonnull(idx->bin);
    snprintf(ing->log, sizeof(ing->log), "%s/ingest.log", e->dir);
    snprintf(idx->log, sizeof(idx->log), "%s/indexer.log", e->dir);
}

static unsigned rnd(unsigned n)
{
    return (unsigned)(mix((uint64_t)st_test_now_ms() ^ ((uint64_t)rand() << 20)) % n);
}

static void proc_start(struct proc *p, const char *point)
{
    const char *const argv[] = {p->bin, "--config", p->cfg, NULL};
    char fault[200];
    const char *env[] = {NULL, NULL};
    if (point != NULL) {
        snprintf(fault, sizeof(fault), "STRATA_FAULT_POINTS=%s=crash@%u", point, rnd(2));
        env[0] = fault;
    }
    /* Each run's stderr in a file of its own: a crash's log stays for the post-mortem. */
    char log[800];
    snprintf(log, sizeof(log), "%s.%u", p->log, p->runs++);
    st_daemon_start(&p->d, log, argv, env);
    p->armed_until = point != NULL ? st_test_now_ms() + 20000 : 0;
    p->next_kill = st_test_now_ms() + 3000 + (int64_t)rnd(6000);
}

/* One step of a daemon's life under chaos: a kill when due (at a random moment, or by
 * restarting it armed with a kill point), and a restart after every death. */
static void proc_step(struct proc *p, const char *const *points, size_t n_points)
{
    int64_t now = st_test_now_ms();
    if (p->armed_until > 0) {
        if (st_daemon_wait_killed(&p->d, 0)) {
            p->crashed_at_point++;
            p->kills++;
            proc_start(p, NULL);
        } else if (now >= p->armed_until) { /* the point was not reached: a random kill */
            ck_assert_msg(st_daemon_log_has(&p->d, "test fault point armed"),
                          "%s ignored STRATA_FAULT_POINTS", p->d.name);
            st_daemon_kill(&p->d);
            p->kills++;
            proc_start(p, NULL);
        }
        return;
    }
    if (now < p->next_kill)
        return;
    st_daemon_kill(&p->d);
    p->kills++;
#ifndef NDEBUG
    if (p->armed == 0 || rnd(2) == 0) { /* restarted with a kill point */
        proc_start(p, points[p->armed++ == 0 ? 0 : rnd((unsigned)n_points)]);
        return;
    }
#else
    (void)points;
    (void)n_points;
#endif
    proc_start(p, NULL);
}

/* ---- producing, with the oracle ---- */

/* Appends records [first, first + n) at ts to a JSON batch and the oracle. */
static void send_batch(rd_kafka_t *pr, const struct env *e, int part, int64_t ts, size_t n)
{
    json_t *arr = json_array();
    for (size_t k = 0; k < n; k++) {
        if (n_recs == cap_recs) {
            cap_recs = cap_recs ? cap_recs * 2 : 4096;
            recs = realloc(recs, cap_recs * sizeof(*recs));
            ck_assert_ptr_nonnull(recs);
        }
        size_t i = n_recs++;
        recs[i] = (struct rec){ts, part};
        float v[DIM];
        vec_of(i, v);
        json_t *vec = json_array();
        for (int d = 0; d < DIM; d++)
            json_array_append_new(vec, json_real(v[d]));
        char id[32];
        snprintf(id, sizeof(id), "c%zu", i);
        json_array_append_new(
            arr, json_pack("{s:s,s:I,s:o}", "id", id, "ts", (json_int_t)ts, "vector", vec));
    }
    json_t *msg = json_pack("{s:s,s:o}", "collection", "ch", "records", arr);
    char *s = json_dumps(msg, JSON_COMPACT);
    st_kafka_send(pr, e->topic, part, s, strlen(s));
    free(s);
    json_decref(msg);
}

/* ---- checking ---- */

static json_t *get_json(unsigned port, const char *path, long *status)
{
    struct st_test_resp r = st_test_http_port(port, path, TOKEN, NULL);
    *status = r.status;
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    return j;
}

/* Does the indexer answer record i as the oracle has it? (consistency: "indexed" or
 * "strong"). 0: yes; 404: absent; other: the status. */
static long check_record(unsigned port, size_t i, const char *consistency)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/collections/ch/records/c%zu?consistency=%s", i, consistency);
    long st;
    json_t *j = get_json(port, path, &st);
    if (j == NULL)
        return st;
    ck_assert_int_eq(json_integer_value(json_object_get(j, "ts")), recs[i].ts);
    float v[DIM];
    vec_of(i, v);
    json_t *vec = json_object_get(j, "vector");
    ck_assert_uint_eq(json_array_size(vec), DIM);
    for (int d = 0; d < DIM; d++)
        ck_assert_msg((float)json_number_value(json_array_get(vec, (size_t)d)) == v[d],
                      "c%zu: component %d differs", i, d);
    json_decref(j);
    return 0;
}

static unsigned port_of(struct proc *p)
{
    return st_daemon_wait_logged_number(&p->d, "HTTP on port ", 120000);
}

/* Every partition's committed offset at its end (the ingest node handled everything). */
static bool committed_at_end(const struct env *e)
{
    int64_t offs[NPARTS];
    st_kafka_committed(e->brokers, e->group, e->topic, NPARTS, offs);
    rd_kafka_t *c = st_kafka_group_client(e->brokers, e->group);
    bool all = true;
    for (int i = 0; i < NPARTS; i++) {
        int64_t lo, hi;
        ck_assert_int_eq(rd_kafka_query_watermark_offsets(c, e->topic, i, &lo, &hi, 30000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        all &= offs[i] == hi;
    }
    rd_kafka_destroy(c);
    return all;
}

static int64_t dead_letters(const struct env *e)
{
    rd_kafka_t *c = st_kafka_group_client(e->brokers, e->group);
    int64_t lo, hi;
    ck_assert_int_eq(rd_kafka_query_watermark_offsets(c, e->dead, 0, &lo, &hi, 30000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(c);
    return hi;
}

/* The oracle's record count of window start w. */
static size_t oracle_count(int64_t w)
{
    size_t n = 0;
    for (size_t i = 0; i < n_recs; i++)
        n += win_start(recs[i].ts) == w;
    return n;
}

/* Whether each window of starts[0..n) is listed by the indexer as indexed with exactly the
 * oracle's records (why not, when not). */
static bool exact_windows(unsigned port, const int64_t *starts, size_t n, char *why, size_t cap)
{
    long st;
    json_t *wins = get_json(port, "/v1/collections/ch/windows", &st);
    if (wins == NULL) {
        snprintf(why, cap, "windows: HTTP %ld", st);
        return false;
    }
    bool all = true;
    for (size_t k = 0; k < n && all; k++) {
        size_t wi;
        json_t *w, *found = NULL;
        json_array_foreach(wins, wi, w)
        {
            if (json_integer_value(json_object_get(w, "start")) == starts[k])
                found = w;
        }
        const char *state = found ? json_string_value(json_object_get(found, "state")) : NULL;
        int64_t have = found ? json_integer_value(json_object_get(found, "records")) : -1;
        size_t want = oracle_count(starts[k]);
        if (state == NULL || strcmp(state, "indexed") != 0 || have != (int64_t)want) {
            snprintf(why, cap, "window %" PRId64 ": %s with %" PRId64 " records, %zu produced",
                     starts[k], state ? state : "not listed", have, want);
            all = false;
        }
    }
    json_decref(wins);
    return all;
}

/* The load: a batch every ~40 ms for ms, event time from just inside the TTL at 20× the
 * clock until it catches up with it, every 64th batch three windows late; step(ctx) after
 * each batch. Returns the number of messages. */
static unsigned run_load(const struct env *e, rd_kafka_t *pr, int64_t ms, void (*step)(void *),
                         void *ctx)
{
    int64_t t0 = st_clock_wall_ms(NULL), ts0 = t0 - TTL_MS + 20000;
    int64_t end = st_test_now_ms() + ms;
    unsigned msgs = 0;
    while (st_test_now_ms() < end) {
        int64_t wall = st_clock_wall_ms(NULL);
        int64_t ts = ts0 + (wall - t0) * 20;
        if (ts > wall - 1500)
            ts = wall - 1500;
        send_batch(pr, e, (int)(msgs % NPARTS), msgs % 64 == 63 ? ts - 3 * WINDOW_MS : ts, PER_MSG);
        msgs++;
        rd_kafka_poll(pr, 0);
        step(ctx);
        st_test_sleep_ms(40);
    }
    return msgs;
}

/* Record i is in a window the checks keep (present) and sealed (answered from an index). */
static bool searchable(size_t i, int64_t present_from, int64_t open_from)
{
    int64_t ws = win_start(recs[i].ts);
    return ws + WINDOW_MS >= present_from && ws < open_from;
}

struct outcome {
    size_t checked, indexed, gone, windows_exact;
    unsigned asked;
};

/*
 * After the load, with every daemon running (ing[0..n_ing), on e->cfg and e->cfg_b, and idx):
 * the final records, then every check of the file's header comment; stops the daemons.
 */
static struct outcome verify(const struct env *e, rd_kafka_t *pr, struct proc *ing, size_t n_ing,
                             struct proc *idx)
{
    /* One record per partition at the clock moves the watermark past every window produced. */
    int64_t final_ts = st_clock_wall_ms(NULL);
    size_t n_data = n_recs;
    for (int part = 0; part < NPARTS; part++)
        send_batch(pr, e, part, final_ts, 1);
    ck_assert_int_eq(rd_kafka_flush(pr, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(pr);

    for (size_t k = 0; k < n_ing; k++)
        st_daemon_wait_http_ok(&ing[k].d, port_of(&ing[k]), "/readyz", 120000);
    unsigned xport = port_of(idx);
    st_daemon_wait_http_ok(&idx->d, xport, "/readyz", 120000);
    ck_assert_msg(ST_WAIT_UNTIL(committed_at_end(e), 180000),
                  "the group's offsets did not reach the end");
    ck_assert_int_eq(dead_letters(e), 0);

    /* Which records are checked is decided once, now: present when their window stays inside
     * the TTL until the checks' deadline, absent when it was dropped already; the band between
     * is checked neither way. So no wait below can end because a window aged out. */
    int64_t open_from = win_start(final_ts - GRACE_MS);
    int64_t dl = st_test_now_ms() + VERIFY_MS, t0 = st_clock_wall_ms(NULL);
    int64_t present_from = t0 - TTL_MS + EDGE_MS + VERIFY_MS, gone_until = t0 - TTL_MS - EDGE_MS;
    struct outcome o = {0};
    int64_t *starts = calloc(n_data, sizeof(*starts));
    size_t n_starts = 0;
    ck_assert_ptr_nonnull(starts);
    for (size_t i = 0; i < n_data; i++) {
        int64_t ws = win_start(recs[i].ts), wend = ws + WINDOW_MS;
        long st = 0;
        if (wend <= gone_until) { /* dropped: absent everywhere (eventually) */
            ck_assert_msg(ST_WAIT_UNTIL((st = check_record(xport, i, "strong")) == 404,
                                        dl - st_test_now_ms()),
                          "c%zu (window ended %" PRId64 " ms ago) still answers %ld", i,
                          st_clock_wall_ms(NULL) - wend, st);
            o.gone++;
            continue;
        }
        if (wend < present_from)
            continue;
        /* From an index once its window is sealed (every window but the last data window,
         * which the final records may share); by get-by-id. */
        bool sealed = ws < open_from;
        ck_assert_msg(
            ST_WAIT_UNTIL((st = check_record(xport, i, sealed ? "indexed" : "strong")) == 0,
                          dl - st_test_now_ms()),
            "lost: c%zu (ts %" PRId64 ", partition %d) answers %ld", i, recs[i].ts, recs[i].part,
            st);
        o.checked++;
        o.indexed += sealed;
        if (sealed && (n_starts == 0 || starts[n_starts - 1] != ws)) {
            bool seen = false;
            for (size_t k = 0; k < n_starts && !seen; k++)
                seen = starts[k] == ws;
            if (!seen)
                starts[n_starts++] = ws;
        }
    }
    ck_assert_uint_gt(o.checked, 500);
    ck_assert_uint_gt(o.indexed, 200);

    /* Each of those sealed windows holds exactly the oracle's records (its parts summed),
     * once the re-seals its late records caused are indexed. */
    char why[256] = "";
    ck_assert_msg(ST_WAIT_UNTIL(exact_windows(xport, starts, n_starts, why, sizeof(why)),
                                dl - st_test_now_ms()),
                  "%s", why);
    o.windows_exact = n_starts;
    free(starts);
    ck_assert_uint_gt(o.windows_exact, 3);

    /* Searchable: sampled indexed records are their own nearest neighbour; no hit list repeats
     * an id. */
    unsigned found = 0;
    /* Sampled over the records of kept, sealed windows only: in a long run most records are in
     * windows the TTL dropped, so a stride over all of them would ask too few. */
    size_t n_searchable = 0;
    for (size_t i = 0; i < n_data; i++)
        n_searchable += searchable(i, present_from, open_from);
    for (size_t i = 0, seen = 0; i < n_data && o.asked < 100; i++) {
        if (!searchable(i, present_from, open_from) || seen++ % (1 + n_searchable / 150) != 0)
            continue;
        float v[DIM];
        vec_of(i, v);
        json_t *vec = json_array();
        for (int d = 0; d < DIM; d++)
            json_array_append_new(vec, json_real(v[d]));
        int64_t ws = win_start(recs[i].ts); /* its window's index only (pruned by time) */
        json_t *q = json_pack("{s:o,s:i,s:i,s:s,s:I,s:I}", "vector", vec, "k", 10, "ef", 128,
                              "consistency", "indexed", "from_ts", (json_int_t)ws, "to_ts",
                              (json_int_t)(ws + WINDOW_MS - 1));
        char *body = json_dumps(q, JSON_COMPACT);
        json_decref(q);
        struct st_test_resp r = st_test_http_port(xport, "/v1/collections/ch/search", TOKEN, body);
        free(body);
        ck_assert_msg(r.status == 200, "search: %ld %s", r.status, r.body);
        json_t *res = json_loads(r.body, 0, NULL);
        free(r.body);
        json_t *hits = json_object_get(res, "hits");
        char id[32];
        snprintf(id, sizeof(id), "c%zu", i);
        if (json_array_size(hits) > 0 &&
            strcmp(json_string_value(json_object_get(json_array_get(hits, 0), "id")), id) == 0)
            found++;
        for (size_t a = 0; a < json_array_size(hits); a++)
            for (size_t b = a + 1; b < json_array_size(hits); b++)
                ck_assert_msg(
                    strcmp(json_string_value(json_object_get(json_array_get(hits, a), "id")),
                           json_string_value(json_object_get(json_array_get(hits, b), "id"))) != 0,
                    "search for %s returned an id twice", id);
        json_decref(res);
        o.asked++;
    }
    ck_assert_uint_ge(o.asked, 50);
    /* HNSW promises no exact recall; 98 of 100 found is far above what a broken index or a
     * lost record allows (a missing record is caught above by get-by-id anyway). */
    ck_assert_msg(found * 100 >= o.asked * 98,
                  "%u of %u records found as their own nearest neighbour", found, o.asked);

    st_daemon_stop(&idx->d, 60000);
    for (size_t k = 0; k < n_ing; k++)
        st_daemon_stop(&ing[k].d, 60000);
    for (size_t k = 0; k < n_ing; k++) { /* each node's data dir (the first with the indexer's) */
        char out[8192];
        int rc = st_test_cli(out, sizeof(out), "inspect '%s'", k ? e->data_b : e->data);
        ck_assert_msg(rc == 0, "strata inspect: exit %d\n%s", rc, out);
    }
    return o;
}

struct chaos {
    struct proc *ing, *idx;
};

static void chaos_step(void *ctx)
{
    struct chaos *c = ctx;
    proc_step(c->ing, ingest_points, sizeof(ingest_points) / sizeof(ingest_points[0]));
    proc_step(c->idx, indexer_points, sizeof(indexer_points) / sizeof(indexer_points[0]));
}

START_TEST(test_chaos)
{
    const char *secs = getenv("STRATA_CHAOS_SECONDS");
    int64_t chaos_ms = (secs != NULL ? atoll(secs) : 60) * 1000;
    srand((unsigned)getpid());
    struct env e;
    struct proc ing, idx;
    env_init(&e, &ing, &idx);
    proc_start(&ing, NULL);
    proc_start(&idx, NULL);
    rd_kafka_t *pr = st_kafka_producer_idempotent(e.brokers);
    struct chaos c = {&ing, &idx};
    unsigned msgs = run_load(&e, pr, chaos_ms, chaos_step, &c);
    /* Settle: no more kills; an armed daemon is restarted plain. */
    for (struct proc *p = &ing; p != NULL; p = p == &ing ? &idx : NULL)
        if (p->armed_until > 0) {
            if (!st_daemon_wait_killed(&p->d, 0))
                st_daemon_kill(&p->d);
            else
                p->crashed_at_point++;
            p->kills++;
            proc_start(p, NULL);
        }
    struct outcome o = verify(&e, pr, &ing, 1, &idx);
#ifndef NDEBUG
    ck_assert_uint_gt(ing.crashed_at_point + idx.crashed_at_point, 0);
#endif
    ck_assert_uint_ge(ing.kills, chaos_ms / 15000);
    ck_assert_uint_ge(idx.kills, chaos_ms / 15000);
    printf("chaos: %" PRId64 " s, %u messages, kills ingest %u (at a kill point %u), indexer %u "
           "(at a kill point %u); records checked %zu (from an index %zu), dropped by TTL %zu, "
           "windows exact %zu, searches %u; lost 0, duplicated 0\n",
           chaos_ms / 1000, msgs + NPARTS, ing.kills, ing.crashed_at_point, idx.kills,
           idx.crashed_at_point, o.checked, o.indexed, o.gone, o.windows_exact, o.asked);
    fflush(stdout);
    env_free(&e);
}
END_TEST

/* The second node's schedule: joins at 10 s, leaves (SIGTERM) at 25 s, joins again at 40 s. */
struct join_leave {
    struct proc *b;
    int64_t t0;
    int phase;
};

static void join_leave_step(void *ctx)
{
    struct join_leave *j = ctx;
    int64_t t = st_test_now_ms() - j->t0;
    if ((j->phase == 0 && t >= 10000) || (j->phase == 2 && t >= 40000)) {
        proc_start(j->b, NULL);
        j->phase++;
    } else if (j->phase == 1 && t >= 25000) {
        st_daemon_stop(&j->b->d, 60000);
        j->phase++;
    }
}

/*
 * A second ingest node (another "host": its own YAML and data dir) joins the group while the
 * producer runs, leaves with SIGTERM, and joins again. Partitions move with their commits, so
 * every record is held by exactly one node: the indexer serves every record from an index,
 * and each window's parts (one per node) add up to exactly the oracle's records — none lost,
 * none held twice.
 */
START_TEST(test_ingest_join_leave)
{
    struct env e;
    struct proc ing[2], idx;
    env_init(&e, &ing[0], &idx);
    ing[1] = ing[0];
    ing[1].cfg = e.cfg_b;
    snprintf(ing[1].log, sizeof(ing[1].log), "%s/ingest-b.log", e.dir);
    proc_start(&ing[0], NULL);
    proc_start(&idx, NULL);
    rd_kafka_t *pr = st_kafka_producer_idempotent(e.brokers);
    struct join_leave j = {&ing[1], st_test_now_ms(), 0};
    (void)run_load(&e, pr, 55000, join_leave_step, &j);
    ck_assert_int_eq(j.phase, 3);
    /* The second node really holds records (of its second run). */
    unsigned bport = port_of(&ing[1]);
    ck_assert_msg(ST_WAIT_UNTIL(st_test_metric_port(
                                    bport, "strata_ingest_records_total{collection=\"ch\"}") > 0,
                                60000),
                  "the second node applied nothing");
    struct outcome o = verify(&e, pr, ing, 2, &idx);
    printf("join/leave: records checked %zu (from an index %zu), windows exact %zu\n", o.checked,
           o.indexed, o.windows_exact);
    env_free(&e);
}
END_TEST

/*
 * A sealed event names the segment's URL at the address the ingest node had when it sealed.
 * Sealed while no indexer runs, the node then restarts on another address (its port is
 * ephemeral here; a host can move too): the indexer started afterwards fetches from the
 * node's current address, learnt from its announcements, and indexes the window, instead of
 * retrying the dead address for ever.
 */
START_TEST(test_ingest_moved_before_fetch)
{
    struct env e;
    struct proc ing, idx;
    env_init(&e, &ing, &idx);
    proc_start(&ing, NULL);
    unsigned before = port_of(&ing);
    rd_kafka_t *pr = st_kafka_producer_idempotent(e.brokers);
    int64_t now = st_clock_wall_ms(NULL);
    send_batch(pr, &e, 0, now - 60000, 10); /* a window sealed as soon as ... */
    for (int part = 0; part < NPARTS; part++)
        send_batch(pr, &e, part, now, 1); /* ... these move the watermark on */
    ck_assert_int_eq(rd_kafka_flush(pr, 60000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(pr);
    /* Sealed and its event stored by JetStream (the outbox empty again). */
    ck_assert(ST_WAIT_UNTIL(
        st_test_metric_port(before, "strata_windows{collection=\"ch\",state=\"sealed\"}") == 1 &&
            st_test_metric_port(before, "strata_outbox_pending{collection=\"ch\"}") == 0,
        60000));
    st_daemon_stop(&ing.d, 60000);
    unsigned after;
    do { /* another address: a port that is not the one the event names */
        proc_start(&ing, NULL);
        after = port_of(&ing);
        if (after == before)
            st_daemon_stop(&ing.d, 60000);
    } while (after == before);
    proc_start(&idx, NULL);
    unsigned xport = port_of(&idx);
    st_daemon_wait_http_ok(&idx.d, xport, "/readyz", 120000);
    for (size_t i = 0; i < 10; i++) {
        long st = 0;
        ck_assert_msg(ST_WAIT_UNTIL((st = check_record(xport, i, "indexed")) == 0, 60000),
                      "c%zu: %ld from an index (the event named port %u, the node is on %u)", i, st,
                      before, after);
    }
    st_daemon_stop(&idx.d, 60000);
    st_daemon_stop(&ing.d, 60000);
    env_free(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos");
    TCase *tc = tcase_create("chaos");
    tcase_set_timeout(tc, 0);
    tcase_add_test(tc, test_ingest_moved_before_fetch);
    tcase_add_test(tc, test_ingest_join_leave);
    tcase_add_test(tc, test_chaos);
    suite_add_tcase(s, tc);
    return st_test_run_suite(s);
}
