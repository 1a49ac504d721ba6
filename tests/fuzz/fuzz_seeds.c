/*
 * Writes the seed corpus of the fuzz targets: fuzz_seeds DIR creates DIR/<target>/seed-* for
 * frame, json, json_diff, frame_meta, segment, hnsw and ivfpq (small valid inputs of each shape the
 * decoders know). Deterministic; the output is checked in under tests/fuzz/corpus/. Run it again
 * only when a format changes (findings live next to the seeds as crash-* / regress-* files).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx_hnsw.h"
#include "idx_ivfpq.h"
#include "rec_format.h"
#include "store.h"
#include "store_fs.h"
#include "store_int.h"

static const char *root;

static void put(const char *target, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/seed-%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "fuzz_seeds: cannot write %s\n", path);
        exit(1);
    }
}

/* Each text as seed-PREFIXi. */
static void put_texts(const char *target, const char *prefix, const char *const *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "%s%zu", prefix, i);
        put(target, name, t[i], strlen(t[i]));
    }
}

/* Moves a file written by a saver into the corpus. */
static void put_file(const char *target, const char *name, const char *path)
{
    uint8_t *b;
    size_t n;
    if (store_fs_read_all(path, &b, &n, SIZE_MAX) != ST_OK) {
        fprintf(stderr, "fuzz_seeds: cannot read %s\n", path);
        exit(1);
    }
    put(target, name, b, n);
    free(b);
    unlink(path);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffff) / 4096.0f - 8.0f;
}

static void frames(void)
{
    static const float v[4][4] = {{1, -2, 0.5f, 3}, {0.25f, 0, 0, 0}, {-1, 1e-3f, 7, 8}, {0}};
    static const char *const ids[] = {"doc-1", "doc-22", "d", "x"};
    static const char *const meta[] = {"{\"lang\":\"en\"}", "", "{\"n\":3}", "{}"};
    for (int shape = 0; shape < 6; shape++) {
        bool u64 = shape % 2 == 1;
        uint32_t n = shape < 2 ? 3 : shape < 4 ? 1 : 4;
        uint8_t be[4][8] = {{0}};
        struct rec_record r[4];
        for (uint32_t i = 0; i < n; i++) {
            be[i][7] = (uint8_t)(i + 1);
            r[i] = (struct rec_record){u64 ? be[i] : (const uint8_t *)ids[i],
                                       u64 ? 8 : (uint32_t)strlen(ids[i]),
                                       i == 1 ? REC_TS_ABSENT : 1763798400000 + i,
                                       i == 1 && shape < 4 ? REC_DELETE : REC_UPSERT,
                                       v[i],
                                       u64 || shape == 2 ? NULL : (const uint8_t *)meta[i],
                                       u64 || shape == 2 ? 0 : (uint32_t)strlen(meta[i])};
        }
        uint8_t *f;
        size_t len;
        const char *coll = shape >= 4 ? NULL : u64 ? "events" : "docs";
        if (rec_frame_encode(coll, u64 ? 4 : 3, u64, r, n, &f, &len) != ST_OK) {
            fprintf(stderr, "fuzz_seeds: frame encode failed\n");
            exit(1);
        }
        char name[32];
        snprintf(name, sizeof(name), "%d", shape);
        put("frame", name, f, len);
        free(f);
    }
}

static void jsons(void)
{
    static const char *const js[] = {
        "{\"id\":\"a\",\"vector\":[1,2,3]}",
        "{\"collection\":\"docs\",\"id\":\"doc-1\",\"ts\":1763798400000,\"vector\":[1,-2.5,3e-3],"
        "\"meta\":{\"lang\":\"en\",\"n\":[1,2]}}",
        "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]},{\"id\":\"b\",\"op\":\"delete\"},"
        "{\"id\":\"c\",\"vector_b64\":\"AACAPwAAAEAAAEBA\",\"meta\":null}]}",
        "{\"collection\":\"events\",\"records\":[{\"id\":18446744073709551615,\"vector\":[1,2,3,4]}"
        ","
        "{\"id\":0,\"op\":\"upsert\",\"vector_b64\":\"AACAPwAAAEAAAEBAAACAQA==\"}]}",
        "{\"collection\":\"events\",\"id\":7,\"vector\":[1e39,0,0,0]}",
        "{\"id\":\"dup\",\"vector\":[1,2,3],\"id\":\"dup\"}",
        "{\"records\":[]}",
        "{\"id\":\"q\",\"ts\":-9223372036854775808,\"vector\":[0,0,0]}",
        "{\"id\":\"u\\u0000v\",\"vector_b64\":\"AAAAAAAAAAAAAAA=\"}",
    };
    put_texts("json", "", js, sizeof(js) / sizeof(js[0]));
    put_texts("json_diff", "", js, sizeof(js) / sizeof(js[0]));
    /* fuzz_json_diff: numbers and strings where simdjson and jansson could part */
    static const char *const diff[] = {
        "{\"id\":\"a\",\"vector\":[0.12345677614212036,-1.1754943508222875e-38,1.401298464324817e-"
        "45]}",
        "{\"id\":\"a\",\"vector\":[-0,-0.0,0e999],\"ts\":-0}",
        "{\"id\":\"a\",\"vector\":[16777217,9007199254740993,-9223372036854775808]}",
        "{\"id\":\"a\",\"vector\":[1.00000005960464477539062500000000000000001,"
        "3.4028235677973366e38,1e-400]}",
        "{\"id\":\"\\u00e9\\ud83d\\ude00\\n\",\"vector\":[1,2,3],\"meta\":{\"a\":[1.0,-0,1e2,"
        "\"\\u001f\"],\"b\":{}}}",
        "{\"records\":[{\"id\":\"a\",\"op\":\"delete\",\"vector\":[18446744073709551615]},"
        "{\"id\":\"b\",\"vector_b64\":\"AACAPwAAAEAAAEB\\u0041\"}]}",
        "{\"collection\":\"events\",\"id\":9223372036854775807,\"vector\":[1,2,3,4],"
        "\"meta\":{\"k\":1,\"k\":2}}",
    };
    put_texts("json_diff", "n", diff, sizeof(diff) / sizeof(diff[0]));
}

/* fuzz_frame_meta: a record's meta where simdjson and jansson could part */
static void frame_metas(void)
{
    static const char *const m[] = {
        "{\"lang\":\"en\",\"n\":3}",
        "{\"a\":[1.5,-0,1e2,true,null,{}],\"a\":{\"b\":\"\\u00e9\\ud83d\\ude00\"}}",
        "{\"a\":\"\\u0000\",\"\\ud800\":1}",
        "{\"a\":9223372036854775808,\"b\":-9223372036854775809,\"c\":1e400}",
        " {\"a\":1}\n",
        "[{\"a\":1}]",
    };
    put_texts("frame_meta", "", m, sizeof(m) / sizeof(m[0]));
}

static void segments(const char *tmp)
{
    static const uint32_t counts[] = {0, 1, 5, 33, 300, 70};
    static const uint32_t dims[] = {2, 3, 1, 4, 2, 3};
    char path[1024];
    snprintf(path, sizeof(path), "%s/s.seg", tmp);
    for (size_t t = 0; t < sizeof(counts) / sizeof(counts[0]); t++) {
        uint32_t n = counts[t], dim = dims[t];
        struct store_seg_in *in = calloc(n + 1, sizeof(*in));
        char(*ids)[16] = calloc(n + 1, 16);
        char(*metas)[16] = calloc(n + 1, 16);
        float *vecs = calloc((size_t)(n + 1) * dim, sizeof(float));
        for (uint32_t i = 0; i < n; i++) {
            snprintf(ids[i], 16, "k%04u", i);
            int ml = snprintf(metas[i], 16, "{\"i\":%u}", i);
            for (uint32_t d = 0; d < dim; d++)
                vecs[(size_t)i * dim + d] = frand();
            /* Odd seeds use the rows layout: rows in reverse, one unreferenced row first. */
            in[i] = (struct store_seg_in){(const uint8_t *)ids[i],
                                          (uint32_t)strlen(ids[i]),
                                          1000 + i,
                                          (int32_t)(i % 3),
                                          i,
                                          0,
                                          i % 4 == 2 ? STORE_OP_DELETE : STORE_OP_UPSERT,
                                          vecs + (size_t)i * dim,
                                          (const uint8_t *)metas[i],
                                          i % 3 == 0 ? 0 : (uint32_t)ml,
                                          (uint64_t)(n - i)};
        }
        struct store_seg_meta meta = {0, 60000, (enum store_seg_kind)(t % 3), 1, t % 2 == 1, 0, 0};
        struct st_err err = {0};
        uint64_t bytes;
        unlink(path);
        if (store_segment_write(NULL, path, dim, &meta, in, n, &bytes, &err) != ST_OK) {
            fprintf(stderr, "fuzz_seeds: %s\n", err.msg);
            exit(1);
        }
        char name[32];
        snprintf(name, sizeof(name), "%u", n);
        put_file("segment", name, path);
        free(in);
        free(ids);
        free(metas);
        free(vecs);
    }
}

static float *vectors(uint32_t n, uint32_t dim)
{
    float *v = malloc((size_t)n * dim * sizeof(float));
    for (size_t i = 0; i < (size_t)n * dim; i++)
        v[i] = frand();
    return v;
}

static void hnsws(const char *tmp)
{
    static const uint32_t ns[] = {1, 9, 61, 120};
    static const uint32_t dims[] = {3, 4, 2, 8};
    char path[1024];
    snprintf(path, sizeof(path), "%s/h.hnsw", tmp);
    for (size_t t = 0; t < sizeof(ns) / sizeof(ns[0]); t++) {
        float *v = vectors(ns[t], dims[t]);
        struct idx_hnsw_opts o = {.dim = dims[t],
                                  .metric = (enum st_metric)(t % 3),
                                  .m = t == 3 ? 3 : 2,
                                  .ef_construction = 16,
                                  .seed = 1,
                                  .threads = 1};
        struct idx_hnsw *h;
        struct st_err err = {0};
        if (idx_hnsw_build(&o, v, ns[t], &h) != ST_OK || idx_hnsw_save(h, path, &err) != ST_OK) {
            fprintf(stderr, "fuzz_seeds: hnsw %s\n", err.msg);
            exit(1);
        }
        char name[32];
        snprintf(name, sizeof(name), "%u", ns[t]);
        put_file("hnsw", name, path);
        /* The same graph renumbered (format version 2: the labels section). */
        if (ns[t] > 1 && (idx_hnsw_reorder(h) != ST_OK || idx_hnsw_save(h, path, &err) != ST_OK)) {
            fprintf(stderr, "fuzz_seeds: reordered hnsw %s\n", err.msg);
            exit(1);
        }
        snprintf(name, sizeof(name), "r%u", ns[t]);
        if (ns[t] > 1)
            put_file("hnsw", name, path);
        idx_hnsw_free(h);
        free(v);
    }
}

static void ivfpqs(const char *tmp)
{
    static const struct {
        uint32_t n, dim, nlist, m, nbits;
    } shapes[] = {{40, 4, 2, 2, 8}, {70, 6, 3, 3, 4}, {33, 2, 1, 1, 4}, {300, 8, 4, 4, 4}};
    char path[1024];
    snprintf(path, sizeof(path), "%s/i.ivfpq", tmp);
    for (size_t t = 0; t < sizeof(shapes) / sizeof(shapes[0]); t++) {
        float *v = vectors(shapes[t].n, shapes[t].dim);
        struct idx_ivfpq_opts o = {.dim = shapes[t].dim,
                                   .metric = (enum st_metric)(t % 2),
                                   .nlist = shapes[t].nlist,
                                   .m = shapes[t].m,
                                   .nbits = shapes[t].nbits,
                                   .iterations = 2,
                                   .seed = 5,
                                   .threads = 1};
        struct idx_ivfpq *ix;
        struct st_err err = {0};
        if (idx_ivfpq_build(&o, v, shapes[t].n, &ix) != ST_OK ||
            idx_ivfpq_save(ix, path, &err) != ST_OK) {
            fprintf(stderr, "fuzz_seeds: ivfpq %s\n", err.msg);
            exit(1);
        }
        char name[32];
        snprintf(name, sizeof(name), "%zu-%ubit", t, shapes[t].nbits);
        put_file("ivfpq", name, path);
        idx_ivfpq_free(ix);
        free(v);
    }
}

/* A WAL and a manifest as a store writes them: batches with deletes and metas, a flush, a
 * window and a key/value edit. */
static void store_files(const char *tmp)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/store", tmp);
    struct store_opts o = {
        .dir = dir, .dim = 4, .wal_sync = STORE_SYNC_ALWAYS, .no_background = true};
    struct store *s;
    struct st_err err = {0};
    if (store_open(&o, &s, &err) != ST_OK) {
        fprintf(stderr, "fuzz_seeds: %s\n", err.msg);
        exit(1);
    }
    static const float v[3][4] = {{1, 2, 3, 4}, {-1, 0.5f, 0, 8}, {0}};
    for (int m = 0; m < 3; m++) {
        struct store_record r[3];
        char ids[3][16], meta[3][24];
        for (int i = 0; i < 3; i++) {
            snprintf(ids[i], sizeof(ids[i]), "id-%d-%d", m, i);
            int ml = snprintf(meta[i], sizeof(meta[i]), "{\"m\":%d}", i);
            r[i] = (struct store_record){.id = (const uint8_t *)ids[i],
                                         .id_len = (uint32_t)strlen(ids[i]),
                                         .ts = 1000 * m + i,
                                         .window = 0,
                                         .window_end = 60000,
                                         .op = i == 2 && m == 1 ? STORE_OP_DELETE : STORE_OP_UPSERT,
                                         .vec = v[i],
                                         .meta = i == 1 ? NULL : (const uint8_t *)meta[i],
                                         .meta_len = i == 1 ? 0 : (uint32_t)ml};
        }
        struct store_batch b = {.partition = m % 2, .offset = 10 + m, .n = 3, .recs = r};
        if (store_write(s, &b, NULL) != ST_OK) {
            fprintf(stderr, "fuzz_seeds: store_write\n");
            exit(1);
        }
        if (m == 1 && store_flush(s) != ST_OK) {
            fprintf(stderr, "fuzz_seeds: store_flush\n");
            exit(1);
        }
    }
    struct store_window w = {.start = 0, .end = 60000, .state = 1, .version = 2};
    if (store_window_put(s, &w) != ST_OK || store_kv_put(s, "outbox/0", "{\"x\":1}", 7) != ST_OK) {
        fprintf(stderr, "fuzz_seeds: window/kv\n");
        exit(1);
    }
    /* Copy the files while the store is open: close would compact the manifest. */
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        uint8_t *bytes;
        size_t n;
        const char *target = strstr(de->d_name, ".log")                 ? "wal"
                             : strncmp(de->d_name, "MANIFEST-", 9) == 0 ? "manifest"
                                                                        : NULL;
        if (target == NULL || store_fs_read_all(path, &bytes, &n, SIZE_MAX) != ST_OK || n == 0)
            continue;
        put(target, de->d_name, bytes, n);
        free(bytes);
    }
    if (d != NULL)
        closedir(d);
    if (store_close(s) != ST_OK)
        exit(1);
    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        exit(1);
}

/* Configs: small documents that reach each part of the schema. */
static void configs(void)
{
    static const char *const docs[] = {
        "node_id: a\ndata_dir: /tmp/x\nkafka: {brokers: \"h:1\", group_id: g}\n"
        "nats: {url: \"nats://h:4222\"}\ncollections:\n  - {name: c, dim: 3, metric: l2, topic: "
        "t, window: 10m}\n",
        "node_id: a\ndata_dir: /tmp/x\nkafka: {brokers: \"h:1\", group_id: g, properties: "
        "{a.b: \"1\"}}\nnats: {url: \"nats://h:4222\"}\nstore: {memtable_size: 64MiB}\n"
        "collections:\n  - name: c\n    dim: 8\n    metric: cosine\n    topic: t\n"
        "    window: 1h\n    ttl: 7d\n    index: {type: ivfpq, nlist: 16, m: 4, nbits: 4}\n",
        "collections: [1, 2\n",
        "node_id: &a x\ndata_dir: *a\n",
        "",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        char name[16];
        snprintf(name, sizeof(name), "%zu", i);
        put("config", name, docs[i], strlen(docs[i]));
    }
}

/* Search bodies: valid ones, each field, and near misses. */
static void searches(void)
{
    static const char *const bodies[] = {
        "{\"vector\": [1, 2, 3]}",
        ("{\"vector\": [1, 2, 3], \"k\": 5, \"from_ts\": 1, \"to_ts\": 9, \"consistency\": "
         "\"indexed\", \"ef\": 40, \"include\": [\"meta\", \"vector\"]}"),
        "{\"vector\": [0, 0, 0]}",
        "{\"vector\": [1e999, 2, 3]}",
        "{\"vector\": [1, 2], \"k\": 0}",
        "{\"vector\": [1, 2, 3], \"nprobe\": 8, \"indexed_only\": true}",
        "[1, 2, 3]",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char name[16];
        snprintf(name, sizeof(name), "%zu", i);
        put("search", name, bodies[i], strlen(bodies[i]));
    }
}

/* Window events (docs/events.md): sealed, expired, and the kinds an indexer ignores. */
static void events(void)
{
    static const char *const evs[] = {
        "{\"kind\":\"sealed\",\"collection\":\"docs\",\"node\":\"ingest-1\",\"start\":"
        "1700000000000,\"end\":1700003600000,\"version\":1,\"records\":1000,\"bytes\":"
        "3100000,\"checksum\":3735928559,\"segment\":\"http://10.0.0.5:8080/v1/segments/docs/"
        "000042.seg\"}",
        "{\"kind\":\"expired\",\"collection\":\"docs\",\"node\":\"ingest-1\",\"start\":"
        "1700000000000,\"version\":2}",
        "{\"kind\":\"indexed\",\"collection\":\"docs\",\"node\":\"indexer-1\"}",
        "{\"kind\":\"sealed\",\"collection\":\"docs\",\"node\":\"..\",\"start\":1,"
        "\"version\":1}",
    };
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++) {
        char name[16];
        snprintf(name, sizeof(name), "%zu", i);
        put("event", name, evs[i], strlen(evs[i]));
    }
}

/* Node announcements (docs/events.md "Discovery"), NUL-separated as fuzz_announce splits. */
static void announces(void)
{
    static const char a0[] =
        "{\"node\": \"ingest-1\", \"role\": \"ingest\", \"url\": \"http://ingest-1:7070\", "
        "\"collections\": [\"docs\"], \"partitions\": {\"embeddings.docs\": [0, 2]}, \"seq\": 17, "
        "\"started\": 1763798400123, \"interval_ms\": 2000, \"bye\": false}\0"
        "{\"node\": \"ingest-2\", \"role\": \"ingest\", \"url\": \"http://b:7070\", "
        "\"collections\": [\"docs\", \"a\"], \"interval_ms\": 0}\0"
        "{\"node\": \"ingest-1\", \"role\": \"ingest\", \"url\": \"http://ingest-1:7070\", "
        "\"collections\": [], \"bye\": true}";
    put("announce", "0", a0, sizeof(a0) - 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    char tmp[] = "/tmp/fuzz-seeds-XXXXXX";
    if (mkdtemp(tmp) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    frames();
    jsons();
    frame_metas();
    segments(tmp);
    hnsws(tmp);
    ivfpqs(tmp);
    store_files(tmp);
    configs();
    searches();
    events();
    announces();
    rmdir(tmp);
    return 0;
}
