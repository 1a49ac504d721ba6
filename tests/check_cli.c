/*
 * The `strata` CLI against the real Kafka broker and a real strata-ingest: every input format
 * produced as JSON and as binary frames round-trips ids and vectors exactly to
 * GET /v1/collections/{c}/records/{id}; --rate is honoured; `strata search` prints the
 * daemon's hits (JSON, and a table on a pseudo-terminal) and its errors; `strata inspect`
 * verifies the daemon's data dir plus an indexer half built beside it, and names the file
 * when one byte of a sealed segment, a WAL or an HNSW index is flipped.
 */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx_catalog.h"
#include "idx_hnsw.h"
#include "produce.h"
#include "st_clock.h"
#include "st_daemon_test.h"
#include "st_kafka_test.h"
#include "st_nats_test.h"
#include "st_test.h"
#include "st_vecfile_test.h"
#include "store.h"

#define DIM    4
#define ROWS   20
#define IDXDIM 6 /* 2 x 3 images */

/* One collection per (input format, wire format), each fed from its own topic. */
static const char *const colls[] = {"fvecs_json", "fvecs_bin",  "npy_json",  "npy_bin", "idx_json",
                                    "idx_bin",    "jsonl_json", "jsonl_bin", "rate",    "lib_json",
                                    "lib_bin",    "u64_json",   "u64_bin"};
#define NCOLL (sizeof(colls) / sizeof(colls[0]))

struct env {
    const char *brokers, *nats;
    char *dir;
    char cfg[600], data[600], log[600], stream[64];
    char topics[NCOLL][128];
    struct st_daemon d;
    unsigned port;
    int64_t w0; /* the old window the JSON Lines records are in */
};

static const char *path_in(const struct env *e, const char *name)
{
    static char buf[4][700];
    static int n;
    char *p = buf[n++ % 4];
    snprintf(p, 700, "%s/%s", e->dir, name);
    return p;
}

static void env_start(struct env *e)
{
    e->brokers = st_test_broker("STRATA_TEST_KAFKA");
    e->nats = st_test_broker("STRATA_TEST_NATS");
    e->dir = st_test_tmpdir("cli");
    snprintf(e->cfg, sizeof(e->cfg), "%s/strata.yaml", e->dir);
    snprintf(e->data, sizeof(e->data), "%s/data", e->dir);
    snprintf(e->log, sizeof(e->log), "%s/ingest.log", e->dir);
    snprintf(e->stream, sizeof(e->stream), "CLI%d", (int)getpid());
    st_nats_clean(e->nats);
    char dlq[128];
    snprintf(dlq, sizeof(dlq), "%s", st_test_unique("cli-dlq"));
    st_kafka_create_topic(e->brokers, dlq, 1);
    FILE *f = fopen(e->cfg, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "node_id: ingest-t\ndata_dir: %s\n"
            "kafka:\n  brokers: \"%s\"\n  group_id: %s\n  dead_letter_topic: %s\n"
            "  properties: {session.timeout.ms: \"6000\"}\n"
            "nats:\n  url: \"%s\"\n  stream: %s\n"
            "ingest: {listen: \"127.0.0.1:0\"}\nlog: {level: notice}\ncollections:\n",
            e->data, e->brokers, st_test_unique("cli-g"), dlq, e->nats, e->stream);
    for (size_t i = 0; i < NCOLL; i++) {
        char t[64];
        snprintf(t, sizeof(t), "cli-%s", colls[i]);
        snprintf(e->topics[i], sizeof(e->topics[i]), "%s", st_test_unique(t));
        for (char *c = e->topics[i]; *c; c++)
            if (*c == '_')
                *c = '-';
        st_kafka_create_topic(e->brokers, e->topics[i], 1);
        fprintf(f,
                "  - name: %s\n    dim: %d\n    metric: l2\n    topic: %s\n"
                "    window: 1m\n    grace: %s\n    max_lateness: 1h\n    id_type: %s\n",
                colls[i], strncmp(colls[i], "idx", 3) == 0 ? IDXDIM : DIM, e->topics[i],
                /* "rate" is produced at the clock for a second or more and its WAL must keep
                 * every version (inspect below): a minute boundary inside the run would seal
                 * the first window a second later, merging the versions away */
                strcmp(colls[i], "rate") == 0 ? "1h" : "1s",
                strncmp(colls[i], "u64", 3) == 0 ? "uint64" : "string");
    }
    fclose(f);
    const char *const argv[] = {getenv("STRATA_INGEST"), "--config", e->cfg, NULL};
    ck_assert_ptr_nonnull(argv[0]);
    st_daemon_start(&e->d, e->log, argv, NULL);
    e->port = st_daemon_wait_logged_number(&e->d, "HTTP on port ", 60000);
}

static const char *topic_of(const struct env *e, const char *coll)
{
    for (size_t i = 0; i < NCOLL; i++)
        if (strcmp(colls[i], coll) == 0)
            return e->topics[i];
    ck_abort_msg("no collection %s", coll);
    return NULL;
}

/* GET the record; NULL while it is not there. */
static json_t *get_record(const struct env *e, const char *coll, const char *id)
{
    char path[256];
    static char body[1 << 16];
    snprintf(path, sizeof(path), "/v1/collections/%s/records/%s", coll, id);
    if (st_daemon_http_get(e->port, path, body, sizeof(body)) != 200)
        return NULL;
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    ck_assert_msg(j != NULL, "GET %s: %s", path, body);
    return j;
}

/* Waits for every row's record and compares id and vector exactly (bytes: idx pixels). */
static void check_collection(const struct env *e, const char *coll, const char *idprefix,
                             uint32_t rows, uint32_t dim, bool bytes, int64_t ts0)
{
    for (uint32_t r = 0; r < rows; r++) {
        char id[32];
        snprintf(id, sizeof(id), "%s%u", idprefix, r);
        json_t *j = NULL;
        ck_assert_msg(ST_WAIT_UNTIL((j = get_record(e, coll, id)) != NULL, 60000),
                      "%s: record %s never served", coll, id);
        ck_assert_str_eq(json_string_value(json_object_get(j, "id")), id);
        json_t *v = json_object_get(j, "vector");
        ck_assert_uint_eq(json_array_size(v), dim);
        for (uint32_t c = 0; c < dim; c++) {
            float want = bytes ? (float)(uint8_t)st_vec_value(r, c) : st_vec_value(r, c);
            float got = (float)json_number_value(json_array_get(v, c));
            ck_assert_msg(got == want, "%s %s[%u]: %.9g != %.9g", coll, id, c, (double)got,
                          (double)want);
        }
        if (ts0 != 0) {
            ck_assert_int_eq(json_integer_value(json_object_get(j, "ts")), ts0 + r);
            ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "meta"), "r")),
                             r);
        }
        json_decref(j);
    }
}

static void produce(const struct env *e, const char *coll, const char *fmt, const char *file,
                    const char *extra, uint32_t want_records)
{
    char o[8192];
    int rc = st_test_cli(o, sizeof(o),
                         "produce --brokers %s --topic %s --collection %s --format %s %s %s",
                         e->brokers, topic_of(e, coll), coll, fmt, extra, file);
    char want[64];
    snprintf(want, sizeof(want), "produced %u records", want_records);
    ck_assert_msg(rc == 0 && strstr(o, want) != NULL, "produce %s to %s: exit %d\n%s", file, coll,
                  rc, o);
    ck_assert_msg(strstr(o, "records/s") && strstr(o, "MB/s"), "%s", o);
}

/* The value of "key=" in line (a number), summed over the lines of out starting with prefix
 * and holding needle. */
static uint64_t sum_field(const char *out, const char *prefix, const char *needle, const char *key)
{
    uint64_t sum = 0;
    for (const char *l = out; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        char line[2048];
        snprintf(line, sizeof(line), "%.*s", (int)(len < 2047 ? len : 2047), l);
        if (strncmp(line, prefix, strlen(prefix)) != 0 || strstr(line, needle) == NULL)
            continue;
        const char *k = strstr(line, key);
        if (k != NULL)
            sum += strtoull(k + strlen(key), NULL, 10);
    }
    return sum;
}

/* The path on the first line of out starting with prefix and holding needle (malloc'd). */
static char *line_path(const char *out, const char *prefix, const char *needle)
{
    for (const char *l = out; l != NULL && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        if (strncmp(l, prefix, strlen(prefix)) != 0)
            continue;
        char *line = strndup(l, len);
        if (strstr(line, needle) != NULL) {
            char *p = line + strlen(prefix);
            *strchr(p, ':') = '\0';
            char *r = strdup(p);
            free(line);
            return r;
        }
        free(line);
    }
    return NULL;
}

static bool window_sealed(const struct env *e, const char *coll)
{
    char path[128], body[8192];
    snprintf(path, sizeof(path), "/v1/collections/%s/windows", coll);
    return st_daemon_http_get(e->port, path, body, sizeof(body)) == 200 &&
           strstr(body, "\"sealed\"") != NULL;
}

/* An indexer half beside the ingest one: <data>/indexer/<coll>/ with a CATALOG naming a copy
 * of seg and an HNSW index built from its vectors. Returns the index file's path. */
static char *build_indexer_half(const struct env *e, const char *coll, const char *seg)
{
    char dir[800];
    snprintf(dir, sizeof(dir), "%s/indexer", e->data);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    snprintf(dir, sizeof(dir), "%s/indexer/%s", e->data, coll);
    struct idx_catalog *cat;
    struct st_err err = {0};
    ck_assert_msg(idx_catalog_open(dir, &cat, &err) == ST_OK, "%s", err.msg);
    struct store_segment *g;
    ck_assert_msg(store_segment_open_file(seg, &g, &err) == ST_OK, "%s", err.msg);
    struct store_segment_info in;
    store_segment_info(g, &in);
    struct idx_cat_entry ent = {.start = in.window_start,
                                .end = in.window_end,
                                .version = in.version,
                                .records = in.count,
                                .bytes = in.bytes,
                                .checksum = in.checksum,
                                .indexed_ms = 1};
    snprintf(ent.node, sizeof(ent.node), "ingest-t");
    snprintf(ent.index, sizeof(ent.index), "hnsw");
    char *copy = idx_catalog_seg_path(cat, "ingest-t", in.window_start, in.version);
    char *ix = idx_catalog_index_path(cat, "ingest-t", in.window_start, in.version, "hnsw", false);
    FILE *from = fopen(seg, "rb"), *to = fopen(copy, "wb");
    ck_assert(from != NULL && to != NULL);
    char buf[8192];
    for (size_t n; (n = fread(buf, 1, sizeof(buf), from)) > 0;)
        ck_assert_uint_eq(fwrite(buf, 1, n, to), n);
    fclose(from);
    ck_assert_int_eq(fclose(to), 0);
    struct idx_hnsw_opts ho = {.dim = in.dim,
                               .metric = ST_METRIC_L2,
                               .m = 8,
                               .ef_construction = 40,
                               .seed = 1,
                               .threads = 1};
    struct idx_hnsw *h;
    /* the sealed segment is its window's completed vector log: rows in arrival order */
    float *vecs = malloc(in.count * in.dim * sizeof(float));
    ck_assert_ptr_nonnull(vecs);
    for (uint64_t i = 0; i < in.count; i++)
        memcpy(vecs + i * in.dim, store_segment_vector(g, i), in.dim * sizeof(float));
    ck_assert_int_eq(idx_hnsw_build(&ho, vecs, (uint32_t)in.count, &h), ST_OK);
    free(vecs);
    ck_assert_msg(idx_hnsw_save(h, ix, &err) == ST_OK, "%s", err.msg);
    idx_hnsw_free(h);
    store_segment_unref(g);
    ck_assert_int_eq(idx_catalog_put(cat, &ent), ST_OK);
    ck_assert_msg(idx_catalog_save(cat, &err) == ST_OK, "%s", err.msg);
    idx_catalog_free(cat);
    free(copy);
    return ix;
}

/* ---- produce_run as a library (what `strata demo` calls) ---- */

struct gen {
    int n, cancel_at, fail_at;
    char id[32], meta[64];
    float v[DIM];
    atomic_bool *cancel;
};

/* Records lib-0.. (vector [i, i, i, i], meta {"i": i}) on partition 0; then "dup" twice. */
static int gen_next(void *ctx, struct produce_rec *out)
{
    struct gen *g = ctx;
    int i = g->n++;
    if (i == g->fail_at)
        return ST_EIO;
    if (g->cancel != NULL && i == g->cancel_at)
        atomic_store(g->cancel, true);
    if (i > 31)
        return 0;
    if (i >= 30)
        snprintf(g->id, sizeof(g->id), "dup");
    else
        snprintf(g->id, sizeof(g->id), "lib-%d", i);
    snprintf(g->meta, sizeof(g->meta), "{\"i\":%d}", i);
    for (int c = 0; c < DIM; c++)
        g->v[c] = (float)i;
    *out = (struct produce_rec){
        .id = g->id, .vec = g->v, .dim = DIM, .meta_json = g->meta, .partition = 0};
    return 1;
}

struct prog {
    int calls, finals;
    uint64_t last_records, total;
};

static void on_progress(void *ud, const struct produce_stats *s, uint64_t total, bool final)
{
    struct prog *p = ud;
    p->calls++;
    p->finals += final;
    p->last_records = s->records;
    p->total = total;
}

static void check_produce_lib(const struct env *e)
{
    for (int fmt = 0; fmt < 2; fmt++) {
        const char *coll = fmt ? "lib_bin" : "lib_json";
        struct gen g = {.fail_at = -1};
        struct prog p = {0};
        struct produce_opts o = {.brokers = e->brokers,
                                 .topic = topic_of(e, coll),
                                 .collection = coll,
                                 .format = fmt ? PRODUCE_BINARY : PRODUCE_JSON,
                                 .batch = 7,
                                 .total = 32,
                                 .progress = on_progress,
                                 .progress_ud = &p,
                                 .progress_ms = 1};
        struct produce_stats st;
        struct st_err err = {0};
        ck_assert_msg(produce_run(&o, gen_next, &g, &st, &err) == ST_OK, "%s", err.msg);
        /* 30 in batches of 7 (5 messages: 7 7 7 7 2+dup), and the second "dup" in its own
         * message: one id twice in a batch would be rejected whole by ingest */
        ck_assert_uint_eq(st.records, 32);
        ck_assert_uint_eq(st.messages, 6);
        ck_assert_uint_eq(st.delivered, 6);
        ck_assert(st.bytes > 0 && st.seconds > 0);
        ck_assert_int_eq(p.finals, 1);
        ck_assert_uint_eq(p.last_records, 32);
        ck_assert_uint_eq(p.total, 32);
        for (int i = 0; i < 32; i++) {
            char id[32];
            snprintf(id, sizeof(id), i >= 30 ? "dup" : "lib-%d", i);
            json_t *j = NULL;
            ck_assert_msg(
                ST_WAIT_UNTIL((j = get_record(e, coll, id)) != NULL &&
                                  json_number_value(json_array_get(json_object_get(j, "vector"),
                                                                   0)) == (i >= 30 ? 31 : i),
                              60000),
                "%s: %s not served as produced", coll, id);
            ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "meta"), "i")),
                             i >= 30 ? 31 : i);
            json_decref(j);
        }
    }
    /* one record, delivered when produce_one returns */
    float one[DIM] = {7, 7, 7, 7};
    struct produce_rec r1 = {.id = "one", .vec = one, .dim = DIM, .partition = -1};
    struct st_err e1 = {0};
    ck_assert_msg(produce_one(e->brokers, topic_of(e, "lib_bin"), &r1, &e1) == ST_OK, "%s", e1.msg);
    json_t *j1 = NULL;
    ck_assert_msg(ST_WAIT_UNTIL((j1 = get_record(e, "lib_bin", "one")) != NULL, 60000),
                  "produce_one's record never served");
    ck_assert(json_number_value(json_array_get(json_object_get(j1, "vector"), 3)) == 7.0);
    json_decref(j1);

    /* cancel: stops after the record that set it, still delivers what was sent */
    atomic_bool cancel = false;
    struct gen g = {.fail_at = -1, .cancel_at = 9, .cancel = &cancel};
    struct produce_opts o = {.brokers = e->brokers,
                             .topic = topic_of(e, "lib_json"),
                             .collection = "lib_json",
                             .batch = 4,
                             .cancel = &cancel};
    struct produce_stats st;
    struct st_err err = {0};
    ck_assert_msg(produce_run(&o, gen_next, &g, &st, &err) == ST_OK, "%s", err.msg);
    ck_assert_uint_eq(st.records, 10);
    ck_assert_uint_eq(st.delivered, st.messages);
    /* a failing source: its error, what was sent before it delivered */
    g = (struct gen){.fail_at = 5};
    atomic_store(&cancel, false);
    err = (struct st_err){0};
    ck_assert_int_eq(produce_run(&o, gen_next, &g, &st, &err), ST_EIO);
    ck_assert_msg(strstr(err.msg, "record 5"), "%s", err.msg);
    ck_assert_uint_eq(st.records, 4);
    ck_assert_uint_eq(st.delivered, 1);
}

START_TEST(test_cli_against_ingest)
{
    struct env e;
    env_start(&e);
    static char o[1 << 18]; /* inspect of every store, and a sanitizer's report if any */

    /* ---- produce: every input format, both wire formats ---- */
    st_write_fvecs(path_in(&e, "v.fvecs"), ROWS, DIM);
    st_write_npy(path_in(&e, "v.npy"), "<f4", "(20, 4)", ROWS, DIM);
    st_write_idx3(path_in(&e, "v-idx3-ubyte.gz"), ROWS, 2, 3, true);
    int64_t now = st_clock_wall_ms(NULL);
    e.w0 = (now - 600000) / 60000 * 60000;
    st_write_jsonl(path_in(&e, "v.jsonl"), ROWS, DIM, e.w0);
    static const struct {
        const char *file, *coll_json, *coll_bin;
        uint32_t dim;
        bool bytes, jsonl;
    } in[] = {
        {"v.fvecs", "fvecs_json", "fvecs_bin", DIM, false, false},
        {"v.npy", "npy_json", "npy_bin", DIM, false, false},
        {"v-idx3-ubyte.gz", "idx_json", "idx_bin", IDXDIM, true, false},
        {"v.jsonl", "jsonl_json", "jsonl_bin", DIM, false, true},
    };
    for (size_t i = 0; i < 4; i++) {
        produce(&e, in[i].coll_json, "json", path_in(&e, in[i].file), "--batch 3", ROWS);
        produce(&e, in[i].coll_bin, "binary", path_in(&e, in[i].file), "--batch 3", ROWS);
    }
    for (size_t i = 0; i < 4; i++) {
        const char *idf = in[i].jsonl ? "rec-" : "";
        int64_t ts0 = in[i].jsonl ? e.w0 : 0;
        check_collection(&e, in[i].coll_json, idf, ROWS, in[i].dim, in[i].bytes, ts0);
        check_collection(&e, in[i].coll_bin, idf, ROWS, in[i].dim, in[i].bytes, ts0);
    }

    /* ---- no --collection: the topic's only collection takes it (JSON and binary) ---- */
    for (int b = 0; b < 2; b++) {
        const char *coll = b ? "npy_bin" : "npy_json";
        char o3[8192];
        ck_assert_int_eq(
            st_test_cli(o3, sizeof(o3), "produce --brokers %s --topic %s --format %s %s", e.brokers,
                        topic_of(&e, coll), b ? "binary" : "json", path_in(&e, "v.jsonl")),
            0);
        check_collection(&e, coll, "rec-", ROWS, DIM, false, e.w0);
    }

    /* ---- deletes, as JSON Lines say them, through both wire formats: the ids go away (a
     * delete written with a stray NUL went to the dead-letter topic as garbage once) ---- */
    char dl[256];
    int dn = snprintf(dl, sizeof(dl),
                      "{\"id\": \"rec-3\", \"op\": \"delete\", \"ts\": %" PRId64 "}\n"
                      "{\"id\": \"rec-5\", \"op\": \"delete\", \"ts\": %" PRId64 "}\n",
                      e.w0 + 1000, e.w0 + 1001);
    st_write_bytes(path_in(&e, "del.jsonl"), dl, (size_t)dn);
    produce(&e, "jsonl_json", "json", path_in(&e, "del.jsonl"), "", 2);
    /* binary frames carry a dim: deletes alone have none, so --dim gives it */
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --brokers %s --topic %s --format binary %s",
                                 e.brokers, topic_of(&e, "jsonl_bin"), path_in(&e, "del.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "deletes only") != NULL && strstr(o, "--dim") != NULL, "%s", o);
    produce(&e, "jsonl_bin", "binary", path_in(&e, "del.jsonl"), "--dim 4", 2);
    for (int b = 0; b < 2; b++) {
        const char *coll = b ? "jsonl_bin" : "jsonl_json";
        json_t *j = NULL;
        ck_assert_msg(ST_WAIT_UNTIL(get_record(&e, coll, "rec-3") == NULL &&
                                        get_record(&e, coll, "rec-5") == NULL,
                                    60000),
                      "%s: the deletes never took effect", coll);
        ck_assert_ptr_nonnull(j = get_record(&e, coll, "rec-4"));
        json_decref(j);
    }

    /* ---- uint64 ids across the whole range, both wire formats: 2^63 and above travel in
     * JSON as strings of digits (jansson's integers stop at 2^63 - 1; such ids once went to
     * the dead-letter topic as garbage), come back from the HTTP API as strings, and a delete
     * names one that way ---- */
    static const char *const u64ids[] = {"18446744073709551615", "9223372036854775808",
                                         "9223372036854775807", "5"};
    char uj[512];
    int un = snprintf(uj, sizeof(uj),
                      "{\"id\": \"%s\", \"vector\": [1, 2, 3, 4]}\n"
                      "{\"id\": \"%s\", \"vector\": [5, 6, 7, 8]}\n"
                      "{\"id\": %s, \"vector\": [9, 10, 11, 12]}\n"
                      "{\"id\": %s, \"vector\": [13, 14, 15, 16]}\n",
                      u64ids[0], u64ids[1], u64ids[2], u64ids[3]);
    st_write_bytes(path_in(&e, "u64.jsonl"), uj, (size_t)un);
    produce(&e, "u64_json", "json", path_in(&e, "u64.jsonl"), "--u64-ids", 4);
    produce(&e, "u64_bin", "binary", path_in(&e, "u64.jsonl"), "--u64-ids", 4);
    for (int b = 0; b < 2; b++) {
        const char *coll = b ? "u64_bin" : "u64_json";
        for (int i = 0; i < 4; i++) {
            json_t *j = NULL;
            ck_assert_msg(ST_WAIT_UNTIL((j = get_record(&e, coll, u64ids[i])) != NULL, 60000),
                          "%s: record %s never served", coll, u64ids[i]);
            json_t *id = json_object_get(j, "id");
            char got[32];
            if (i < 2)
                snprintf(got, sizeof(got), "%s",
                         json_string_value(id) ? json_string_value(id) : "?");
            else
                snprintf(got, sizeof(got), "%" PRId64, (int64_t)json_integer_value(id));
            ck_assert_msg(strcmp(got, u64ids[i]) == 0, "%s: id %s came back as %s", coll, u64ids[i],
                          got);
            ck_assert(json_number_value(json_array_get(json_object_get(j, "vector"), 0)) ==
                      (double)(1 + 4 * i));
            json_decref(j);
        }
    }
    char ud[128];
    int udn = snprintf(ud, sizeof(ud), "{\"id\": \"%s\", \"op\": \"delete\"}\n", u64ids[0]);
    st_write_bytes(path_in(&e, "u64del.jsonl"), ud, (size_t)udn);
    produce(&e, "u64_json", "json", path_in(&e, "u64del.jsonl"), "--u64-ids", 1);
    ck_assert_msg(ST_WAIT_UNTIL(get_record(&e, "u64_json", u64ids[0]) == NULL, 60000),
                  "the delete of %s never took effect", u64ids[0]);
    json_t *kept = get_record(&e, "u64_json", u64ids[1]);
    ck_assert_ptr_nonnull(kept);
    json_decref(kept);

    /* ---- --start S --count N past the rows: ids S.., vectors of the rows again ---- */
    produce(&e, "fvecs_bin", "binary", path_in(&e, "v.fvecs"), "--start 30 --count 7 --batch 3", 7);
    for (uint32_t id = 30; id < 37; id++) {
        char ids[16];
        snprintf(ids, sizeof(ids), "%u", id);
        json_t *j = NULL;
        ck_assert_msg(ST_WAIT_UNTIL((j = get_record(&e, "fvecs_bin", ids)) != NULL, 60000),
                      "--start/--count: record %s never served", ids);
        json_t *v = json_object_get(j, "vector");
        for (uint32_t c = 0; c < DIM; c++)
            ck_assert(json_number_value(json_array_get(v, c)) ==
                      (double)st_vec_value(id % ROWS, c));
        json_decref(j);
    }
    ck_assert_ptr_null(get_record(&e, "fvecs_bin", "37"));
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --brokers %s --topic t --start 20 %s",
                                 e.brokers, path_in(&e, "v.fvecs")),
                     2);
    ck_assert_msg(strstr(o, "--start 20 is past its 20 records") != NULL, "%s", o);

    /* ---- --rate: N records at R/s in bursts of one batch take at least (N - batch) / R ---- */
    st_write_fvecs(path_in(&e, "r.fvecs"), 100, DIM);
    int64_t t0 = st_test_now_ms();
    produce(&e, "rate", "binary", path_in(&e, "r.fvecs"), "--rate 100 --batch 5", 100);
    int64_t took = st_test_now_ms() - t0;
    ck_assert_msg(took >= 950, "100 records at 100/s in bursts of 5 took only %" PRId64 " ms",
                  took);
    check_collection(&e, "rate", "", 100, DIM, false, 0);
    /* progress: plain lines when stderr is not a terminal, a bar with ETA on one */
    char o2[8192];
    ck_assert_int_eq(
        st_test_cli(o2, sizeof(o2),
                    "produce --brokers %s --topic %s --collection rate --rate 50 --batch 2 %s",
                    e.brokers, topic_of(&e, "rate"), path_in(&e, "v.fvecs")),
        0);
    ck_assert_msg(strstr(o2, "produced 20/20 records (100%)") && !strstr(o2, "ETA"), "%s", o2);
    char pcmd[2000];
    snprintf(pcmd, sizeof(pcmd),
             "script -q -e -c \"%s produce --brokers %s --topic %s --collection rate --rate 50 "
             "--batch 2 %s\" /dev/null 2>&1",
             getenv("STRATA_CLI"), e.brokers, topic_of(&e, "rate"), path_in(&e, "v.fvecs"));
    ck_assert_int_eq(st_test_run(pcmd, o2, sizeof(o2)), 0);
    ck_assert_msg(strstr(o2, "[########################################] 100% 20/20") &&
                      strstr(o2, "rec/s ETA") && strstr(o2, "produced 20 records"),
                  "no progress bar:\n%s", o2);

    /* ---- search ---- */
    char url[64], vec[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", e.port);
    snprintf(vec, sizeof(vec), "[%.9g,%.9g,%.9g,%.9g]", (double)st_vec_value(5, 0),
             (double)st_vec_value(5, 1), (double)st_vec_value(5, 2), (double)st_vec_value(5, 3));
    ck_assert_int_eq(st_test_cli(o, sizeof(o),
                                 "search --url %s --collection fvecs_json --k 3 --vector '%s'", url,
                                 vec),
                     0);
    json_error_t je;
    json_t *j = json_loads(o, 0, &je);
    ck_assert_msg(j != NULL, "not JSON (stdout is not a terminal): %s", o);
    json_t *hits = json_object_get(j, "hits");
    ck_assert_uint_eq(json_array_size(hits), 3);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(hits, 0), "id")), "5");
    ck_assert(json_number_value(json_object_get(json_array_get(hits, 0), "distance")) == 0.0);
    json_decref(j);
    /* the query from a file row; the table on a pseudo-terminal (script(1)) */
    char cmd[2000];
    snprintf(cmd, sizeof(cmd),
             "script -q -e -c \"%s search --url %s --collection jsonl_bin --k 2 "
             "--query-file %s --row 7\" /dev/null 2>&1",
             getenv("STRATA_CLI"), url, path_in(&e, "v.fvecs"));
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    ck_assert_msg(strstr(o, "rank") && strstr(o, "distance") && strstr(o, "rec-7") &&
                      strstr(o, "{\"r\":7}") && strstr(o, "2 hit(s)"),
                  "no table:\n%s", o);
    ck_assert_msg(strchr(o, '{') == strstr(o, "{\"r\":"), "raw JSON on a terminal:\n%s", o);
    snprintf(cmd, sizeof(cmd),
             "script -q -e -c \"%s search --json --url %s --collection jsonl_bin --k 2 "
             "--query-file %s --row 7\" /dev/null 2>&1",
             getenv("STRATA_CLI"), url, path_in(&e, "v.fvecs"));
    ck_assert_msg(st_test_run(cmd, o, sizeof(o)) == 0, "%s", o);
    ck_assert_msg(strstr(o, "\"hits\"") && !strstr(o, "rank"), "--json on a terminal:\n%s", o);
    /* time pruning: the JSON Lines records are all in the window starting at w0 */
    for (int before = 0; before < 2; before++) {
        ck_assert_int_eq(
            st_test_cli(o, sizeof(o),
                        "search --url %s --collection jsonl_json --k 5 --vector '%s' %s %" PRId64,
                        url, vec, before ? "--to-ts" : "--from-ts", before ? e.w0 - 1 : e.w0),
            0);
        j = json_loads(o, 0, &je);
        ck_assert_msg(j != NULL, "%s", o);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "hits")), before ? 0 : 5);
        json_decref(j);
    }
    /* errors: the server's message, exit 1 */
    ck_assert_int_eq(
        st_test_cli(o, sizeof(o), "search --url %s --collection nope --vector '%s'", url, vec), 1);
    ck_assert_msg(strstr(o, "HTTP 404") && strstr(o, "nope"), "%s", o);
    ck_assert_int_eq(
        st_test_cli(o, sizeof(o), "search --url %s --collection fvecs_json --vector '[1,2]'", url),
        1);
    ck_assert_msg(strstr(o, "HTTP 400") && strstr(o, "dim"), "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o),
                                 "search --url http://127.0.0.1:%u --collection c "
                                 "--vector [1] --timeout 5",
                                 st_free_port()),
                     1);

    check_produce_lib(&e);

    /* ---- a sealed window: one newer record moves the watermark past the old window ---- */
    char wm[256];
    snprintf(wm, sizeof(wm), "{\"id\": \"wm\", \"ts\": %" PRId64 ", \"vector\": [0, 0, 0, 1]}\n",
             st_clock_wall_ms(NULL) - 1000);
    st_write_bytes(path_in(&e, "wm.jsonl"), wm, strlen(wm));
    produce(&e, "jsonl_json", "json", path_in(&e, "wm.jsonl"), "", 1);
    ck_assert_msg(ST_WAIT_UNTIL(window_sealed(&e, "jsonl_json"), 60000), "never sealed");
    /* A crash keeps the WALs on disk for the checks below (acknowledged data is durable). */
    st_daemon_kill(&e.d);

    /* ---- inspect: the intact data dir, counts ---- */
    int rc = st_test_cli(o, sizeof(o), "inspect %s", e.data);
    ck_assert_msg(rc == 0 && strstr(o, "intact"), "exit %d\n%s", rc, o);
    char needle[700];
    snprintf(needle, sizeof(needle), "%s/ingest/fvecs_json/", e.data);
    uint64_t n =
        sum_field(o, "wal ", needle, " records=") + sum_field(o, "segment ", needle, " records=");
    ck_assert_msg(n == ROWS, "fvecs_json holds %" PRIu64 " records, want %d:\n%s", n, ROWS, o);
    snprintf(needle, sizeof(needle), "%s/ingest/rate/", e.data);
    n = sum_field(o, "wal ", needle, " records=") + sum_field(o, "segment ", needle, " records=");
    /* the WAL keeps every version: 100, then ids 0..19 twice more (the progress runs) */
    ck_assert_msg(n == 140, "rate holds %" PRIu64 " records:\n%s", n, o);
    snprintf(needle, sizeof(needle), "%s/ingest/jsonl_json/", e.data);
    /* the segment of the sealed window (a run until compaction rewrites it) */
    char wneedle[64];
    snprintf(wneedle, sizeof(wneedle), "window=[%" PRId64 ",", e.w0);
    char *seg = line_path(o, "segment ", wneedle);
    char wstate[96];
    snprintf(wstate, sizeof(wstate), "  window [%" PRId64 ",%" PRId64 ") state=sealed", e.w0,
             e.w0 + 60000);
    ck_assert_msg(strstr(o, wstate) != NULL, "no '%s':\n%s", wstate, o);
    ck_assert_msg(strstr(o, ") state=open") != NULL, "no open window:\n%s", o);
    ck_assert_msg(seg != NULL && strstr(seg, needle) == seg, "no sealed segment:\n%s", o);
    snprintf(needle, sizeof(needle), "%s/ingest/fvecs_json/", e.data);
    char *wal = line_path(o, "wal ", needle);
    ck_assert_msg(wal != NULL, "no WAL of fvecs_json:\n%s", o);

    /* ---- the indexer's half beside it ---- */
    char *hnsw = build_indexer_half(&e, "jsonl_json", seg);
    rc = st_test_cli(o, sizeof(o), "inspect %s", e.data);
    ck_assert_msg(rc == 0 && strstr(o, "indexer catalog") && strstr(o, "state=indexed") &&
                      strstr(o, hnsw) && strstr(o, "checksums=ok"),
                  "exit %d\n%s", rc, o);

    /* ---- one flipped byte: a sealed segment, a WAL, an HNSW index ---- */
    struct {
        const char *file;
        long off;
    } flips[] = {
        {seg, 64 + 40},                 /* inside the vectors */
        {wal, st_file_size(wal) / 4},   /* an early batch; later ones are intact */
        {hnsw, st_file_size(hnsw) / 2}, /* the level-0 blocks */
    };
    for (size_t i = 0; i < 3; i++) {
        st_flip_byte(flips[i].file, flips[i].off, 0x20);
        rc = st_test_cli(o, sizeof(o), "inspect %s", e.data);
        /* on failure the end of the output: the indexer's half, and what a sanitizer said */
        size_t len = strlen(o);
        ck_assert_msg(rc == 1 && strstr(o, "CORRUPT") && strstr(o, flips[i].file),
                      "%s flipped at %ld: exit %d\n...%s", flips[i].file, flips[i].off, rc,
                      o + (len > 6000 ? len - 6000 : 0));
        st_flip_byte(flips[i].file, flips[i].off, 0x20);
    }
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "inspect %s", e.data), 0);
    free(seg);
    free(wal);
    free(hnsw);
    st_test_rmrf(e.dir);
    free(e.dir);
}
END_TEST

/* Kafka unreachable: the records are not silently dropped, the count is reported, exit 1. */
START_TEST(test_produce_undeliverable)
{
    char *dir = st_test_tmpdir("cli-undeliv");
    char f[600], o[8192];
    snprintf(f, sizeof(f), "%s/v.fvecs", dir);
    st_write_fvecs(f, 10, DIM);
    int rc = st_test_cli(
        o, sizeof(o),
        "produce --brokers 127.0.0.1:%u --topic t -X message.timeout.ms=1500 --quiet %s",
        st_free_port(), f);
    ck_assert_msg(rc == 1 && strstr(o, "not delivered") && strstr(o, "0 messages acknowledged"),
                  "exit %d\n%s", rc, o);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("ingest");
    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, test_cli_against_ingest);
    tcase_add_test(tc, test_produce_undeliverable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return st_test_run_suite(suite());
}
