/* Tests for config/: the SPEC.md §6 schema, defaults, units, ${ENV}, and FILE:LINE:COL errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfg.h"
#include "st_log.h"
#include "st_test.h"

#define BASE                                                                                       \
    "node_id: n1\n"                                                                                \
    "data_dir: /tmp/x\n"                                                                           \
    "kafka: {brokers: '127.0.0.1:9092'}\n"

static struct cfg *load_ok(const char *text)
{
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    int rc = cfg_load_string("t.yaml", text, strlen(text), &c, &errs);
    if (rc != ST_OK) {
        cfg_errors_print(&errs, stderr);
        ck_abort_msg("expected a valid config, got %zu errors (first: %s)", errs.n,
                     errs.n ? errs.lines[0] : "-");
    }
    cfg_errors_clear(&errs);
    return c;
}

/* Asserts that loading fails and that one error line starts with `prefix` and contains `sub`. */
static void load_bad(const char *text, const char *prefix, const char *sub)
{
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    int rc = cfg_load_string("t.yaml", text, strlen(text), &c, &errs);
    ck_assert_int_eq(rc, ST_EINVAL);
    ck_assert_ptr_null(c);
    bool found = false;
    for (size_t i = 0; i < errs.n && !found; i++)
        found = strncmp(errs.lines[i], prefix, strlen(prefix)) == 0 &&
                strstr(errs.lines[i], sub) != NULL;
    if (!found) {
        cfg_errors_print(&errs, stderr);
        ck_abort_msg("no error line starting '%s' containing '%s'", prefix, sub);
    }
    cfg_errors_clear(&errs);
}

START_TEST(test_spec_sample)
{
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    ck_assert_int_eq(cfg_load(st_test_source("config/spec_sample.yaml"), &c, &errs), ST_OK);
    ck_assert_uint_eq(errs.n, 0);
    ck_assert_str_eq(c->node_id, "ingest-1");
    ck_assert_str_eq(c->data_dir, "/var/lib/strata");
    ck_assert_str_eq(c->kafka.brokers, "127.0.0.1:9092");
    ck_assert_str_eq(c->kafka.group_id, "strata-ingest");
    ck_assert_str_eq(c->kafka.dead_letter_topic, "strata.dlq");
    ck_assert_uint_eq(c->kafka.n_properties, 1);
    ck_assert_str_eq(c->kafka.properties[0].key, "security.protocol");
    ck_assert_str_eq(c->kafka.properties[0].value, "PLAINTEXT");
    ck_assert_str_eq(c->nats.url, "nats://127.0.0.1:4222");
    ck_assert_str_eq(c->nats.stream, "STRATA");
    ck_assert_uint_eq(c->n_collections, 1);
    const struct cfg_collection *d = cfg_collection_find(c, "docs");
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_null(cfg_collection_find(c, "nope"));
    ck_assert_uint_eq(d->dim, 384);
    ck_assert_int_eq(d->metric, CFG_METRIC_COSINE);
    ck_assert_int_eq(d->id_type, CFG_ID_STRING);
    ck_assert_str_eq(d->topic, "embeddings.docs");
    ck_assert_int_eq(d->window_ms, 3600000);
    ck_assert_int_eq(d->grace_ms, 300000);
    ck_assert_int_eq(d->max_lateness_ms, 6 * 3600000);
    ck_assert_int_eq(d->ttl_ms, 30ll * 86400000);
    ck_assert_uint_eq(d->max_bytes, 50ull << 30);
    ck_assert_int_eq(d->max_future_ms, 3600000);
    ck_assert_int_eq(d->index.type, CFG_INDEX_HNSW);
    ck_assert_uint_eq(d->index.m, 16);
    ck_assert_uint_eq(d->index.ef_construction, 200);
    ck_assert_uint_eq(c->store.memtable_size, 64u << 20);
    ck_assert_int_eq(c->store.wal_sync, CFG_WAL_SYNC_BATCH);
    ck_assert_int_eq(c->store.wal_sync_interval_ms, 5);
    ck_assert_str_eq(c->ingest.listen, "127.0.0.1:7070");
    ck_assert_str_eq(c->indexer.listen, "127.0.0.1:7080");
    ck_assert_uint_eq(c->indexer.build_threads, 2);
    ck_assert_uint_eq(c->indexer.search_threads, 2);
    ck_assert_uint_eq(c->indexer.memory_budget, 8ull << 30);
    ck_assert_ptr_null(c->http.auth_token_file);
    ck_assert_uint_eq(c->http.max_body, 16u << 20);
    ck_assert_int_eq(c->log.level, ST_LOG_INFO);
    cfg_free(c);
    cfg_free(NULL);
}
END_TEST

START_TEST(test_defaults)
{
    struct cfg *c = load_ok(BASE "collections:\n"
                                 "  - {name: a, dim: 8, topic: t, window: 1h}\n");
    const struct cfg_collection *a = &c->collections[0];
    ck_assert_int_eq(a->metric, CFG_METRIC_L2);
    ck_assert_int_eq(a->id_type, CFG_ID_STRING);
    ck_assert_int_eq(a->grace_ms, 0);
    ck_assert_int_eq(a->ttl_ms, 0);
    ck_assert_uint_eq(a->max_bytes, 0);
    ck_assert_ptr_null(a->dead_letter_topic);
    ck_assert_int_eq(a->index.type, CFG_INDEX_HNSW);
    ck_assert_uint_eq(a->index.m, 16);
    ck_assert_int_eq(a->compact_after_ms, 0); /* index compaction is off */
    ck_assert_int_eq(a->compact_span_ms, 86400000);
    ck_assert_int_eq(c->shutdown_timeout_ms, 30000);
    ck_assert_str_eq(c->nats.stream, "STRATA");
    ck_assert_int_eq(c->store.wal_sync, CFG_WAL_SYNC_BATCH);
    ck_assert_uint_eq(c->kafka.n_properties, 0);
    ck_assert_uint_eq(c->indexer.build_cpu_mc, 0); /* builds uncapped */
    cfg_free(c);
}
END_TEST

static void build_cpu_yaml(char *y, size_t n, const char *v)
{
    snprintf(y, n,
             BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "indexer: {build_cpu: %s}\n",
             v);
}

/* indexer.build_cpu: cores to a thousandth, 0 no cap; anything else a FILE:LINE:COL error. */
START_TEST(test_build_cpu)
{
    static const struct {
        const char *v;
        uint32_t mc;
    } ok[] = {{"0.5", 500},    {"2", 2000},     {"1.25", 1250},     {"0.001", 1},
              {".5", 500},     {"3.", 3000},    {"0", 0},           {"1024", 1024000},
              {"'1.5'", 1500}, {"0.5000", 500}, {"1.2500000", 1250}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char y[256];
        build_cpu_yaml(y, sizeof(y), ok[i].v);
        struct cfg *c = load_ok(y);
        ck_assert_msg(c->indexer.build_cpu_mc == ok[i].mc, "%s: %u", ok[i].v,
                      c->indexer.build_cpu_mc);
        cfg_free(c);
    }
    static const struct {
        const char *v, *sub;
    } bad[] = {
        {"-1", "number of cores"},    {"1e3", "number of cores"},    {"abc", "number of cores"},
        {"0.0001", "three decimals"}, {"0.50001", "three decimals"}, {"1025", "out of range"},
        {"1024.001", "out of range"}, {"123456", "out of range"},    {"nan", "number of cores"},
        {"'.'", "number of cores"},   {"null", "must not be null"},  {"[1]", "scalar"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char y[256];
        build_cpu_yaml(y, sizeof(y), bad[i].v);
        load_bad(y, "t.yaml:6:22: indexer.build_cpu:", bad[i].sub);
    }
}
END_TEST

START_TEST(test_ivfpq_and_cold)
{
    struct cfg *c = load_ok(BASE "collections:\n"
                                 "  - name: img\n"
                                 "    dim: 784\n"
                                 "    id_type: uint64\n"
                                 "    topic: fmnist\n"
                                 "    window: 1d\n"
                                 "    dead_letter_topic: img.dlq\n"
                                 "    index: {type: hnsw, m: 32, ef_construction: 400}\n"
                                 "    cold_after: 7d\n"
                                 "    cold_index: {type: ivfpq, nlist: 256, nbits: 4, "
                                 "rerank_codes: false}\n"
                                 "  - name: b\n"
                                 "    dim: 96\n"
                                 "    topic: fmnist\n"
                                 "    window: 90m\n"
                                 "    compact_after: 3h\n"
                                 "    index: {type: ivfpq, m: 12}\n"
                                 "  - {name: c, dim: 8, topic: t, window: 1h, compact_after: 1h, "
                                 "compact_span: 6h, cold_after: 1d, cold_index: {type: ivfpq}}\n");
    const struct cfg_collection *img = &c->collections[0];
    ck_assert_int_eq(img->id_type, CFG_ID_UINT64);
    ck_assert_str_eq(img->dead_letter_topic, "img.dlq");
    ck_assert_uint_eq(img->index.m, 32);
    ck_assert_int_eq(img->cold_after_ms, 7ll * 86400000);
    ck_assert_int_eq(img->cold_index.type, CFG_INDEX_IVFPQ);
    ck_assert_uint_eq(img->cold_index.nlist, 256);
    ck_assert_uint_eq(img->cold_index.nbits, 4);
    ck_assert_int_eq(img->cold_index.no_rerank_codes, 1);
    ck_assert_uint_eq(img->cold_index.pq_m, 98); /* default: 8-dim sub-vectors */
    const struct cfg_collection *b = &c->collections[1];
    ck_assert_int_eq(b->window_ms, 90 * 60000);
    ck_assert_uint_eq(b->index.pq_m, 12);
    ck_assert_uint_eq(b->index.nlist, 1024);
    ck_assert_uint_eq(b->index.nbits, 8);
    ck_assert_int_eq(b->index.no_rerank_codes, 0); /* default: codes kept */
    ck_assert_int_eq(b->compact_after_ms, 3 * 3600000);
    ck_assert_int_eq(b->compact_span_ms, 16 * 90 * 60000); /* a day, in whole 90m windows */
    ck_assert_int_eq(c->collections[2].compact_span_ms, 6 * 3600000);
    ck_assert_int_eq(c->collections[2].cold_index.no_rerank_codes, 1); /* cold: off by default */
    ck_assert_int_eq(img->compact_after_ms, 0);
    cfg_free(c);
}
END_TEST

START_TEST(test_units)
{
    int64_t ms;
    uint64_t sz;
    ck_assert_int_eq(cfg_parse_duration_ms("500ms", &ms), ST_OK);
    ck_assert_int_eq(ms, 500);
    ck_assert_int_eq(cfg_parse_duration_ms("1h30m", &ms), ST_OK);
    ck_assert_int_eq(ms, 5400000);
    ck_assert_int_eq(cfg_parse_duration_ms("30d", &ms), ST_OK);
    ck_assert_int_eq(ms, 2592000000ll);
    ck_assert_int_eq(cfg_parse_duration_ms("0", &ms), ST_OK);
    ck_assert_int_eq(ms, 0);
    ck_assert_int_eq(cfg_parse_duration_ms("5", &ms), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_duration_ms("-5s", &ms), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_duration_ms("1hour", &ms), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_duration_ms("", &ms), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_duration_ms("1 h", &ms), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_duration_ms("99999999999999999999d", &ms), ST_ERANGE);
    ck_assert_int_eq(cfg_parse_duration_ms("999999999999999d", &ms), ST_ERANGE);
    ck_assert_int_eq(cfg_parse_size("4096", &sz), ST_OK);
    ck_assert_uint_eq(sz, 4096);
    ck_assert_int_eq(cfg_parse_size("512KiB", &sz), ST_OK);
    ck_assert_uint_eq(sz, 512 * 1024);
    ck_assert_int_eq(cfg_parse_size("50GiB", &sz), ST_OK);
    ck_assert_uint_eq(sz, 50ull << 30);
    ck_assert_int_eq(cfg_parse_size("2TiB", &sz), ST_OK);
    ck_assert_uint_eq(sz, 2ull << 40);
    ck_assert_int_eq(cfg_parse_size("64MB", &sz), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_size("1.5GiB", &sz), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_size("GiB", &sz), ST_EINVAL);
    ck_assert_int_eq(cfg_parse_size("99999999999TiB", &sz), ST_ERANGE);
}
END_TEST

START_TEST(test_env_expansion)
{
    setenv("STRATA_T_DIR", "/srv/strata", 1);
    setenv("STRATA_T_DIM", "128", 1);
    unsetenv("STRATA_T_UNSET");
    struct cfg *c = load_ok("node_id: n1\n"
                            "data_dir: ${STRATA_T_DIR}/data\n"
                            "kafka: {brokers: '${STRATA_T_UNSET:-10.0.0.1:9092}'}\n"
                            "collections:\n"
                            "  - name: a\n"
                            "    dim: ${STRATA_T_DIM}\n"
                            "    topic: t\n"
                            "    window: 1h\n"
                            "http: {auth_token_file: '$${literal}'}\n");
    ck_assert_str_eq(c->data_dir, "/srv/strata/data");
    ck_assert_str_eq(c->kafka.brokers, "10.0.0.1:9092");
    ck_assert_uint_eq(c->collections[0].dim, 128);
    ck_assert_str_eq(c->http.auth_token_file, "${literal}");
    cfg_free(c);
    load_bad("node_id: n1\ndata_dir: ${STRATA_T_UNSET}\n",
             "t.yaml:2:11: data_dir:", "environment variable 'STRATA_T_UNSET' is not set");
    load_bad("node_id: n1\ndata_dir: ${STRATA_T_DIR\n", "t.yaml:2:11: data_dir:", "unterminated");
}
END_TEST

START_TEST(test_error_positions)
{
    /* Syntax error. */
    load_bad(BASE "collections: [\n", "t.yaml:", "YAML syntax error");
    load_bad("", "t.yaml:1:1:", "empty");
    load_bad("- a\n- b\n", "t.yaml:1:1:", "expected a mapping");
    /* Unknown key, top level and nested. */
    load_bad(BASE "colections: []\n", "t.yaml:4:1: colections:", "unknown key");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, windw: 2h}\n",
             "t.yaml:5:45: collections[0].windw:", "unknown key");
    load_bad(BASE "store: {memtable: 1MiB}\n", "t.yaml:4:9: store.memtable:", "unknown key");
    /* Wrong types. */
    load_bad(BASE "collections:\n  - {name: a, dim: eight, topic: t, window: 1h}\n",
             "t.yaml:5:20: collections[0].dim:", "expected an integer");
    load_bad(BASE "collections:\n  - {name: a, dim: '8', topic: t, window: 1h}\n",
             "t.yaml:5:20: collections[0].dim:", "quoted");
    load_bad(BASE "collections: {name: a}\n", "t.yaml:4:14: collections:", "list");
    load_bad(BASE "collections:\n  - {name: [a], dim: 8, topic: t, window: 1h}\n",
             "t.yaml:5:12: collections[0].name:", "scalar");
    load_bad(BASE "store: 5\n", "t.yaml:4:8: store:", "expected a mapping");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, metric: cos}\n",
             "t.yaml:5:53: collections[0].metric:", "not one of l2 | ip | cosine");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\nstore: {wal_sync: "
                  "sometimes}\n",
             "t.yaml:6:19: store.wal_sync:", "always | batch | none");
    /* Out of range. */
    load_bad(BASE "collections:\n  - {name: a, dim: 0, topic: t, window: 1h}\n",
             "t.yaml:5:20: collections[0].dim:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 70000, topic: t, window: 1h}\n",
             "t.yaml:5:20: collections[0].dim:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: -3, topic: t, window: 1h}\n",
             "t.yaml:5:20: collections[0].dim:", "expected an integer");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 10ms}\n",
             "t.yaml:5:41: collections[0].window:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, index: {type: "
                  "hnsw, m: 1000}}\n",
             "t.yaml:5:68: collections[0].index.m:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "indexer: {build_threads: 0}\n",
             "t.yaml:6:26: indexer.build_threads:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "indexer: {search_threads: 0}\n",
             "t.yaml:6:27: indexer.search_threads:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "indexer: {search_threads: 257}\n",
             "t.yaml:6:27: indexer.search_threads:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "http: {max_body: 2GiB}\n",
             "t.yaml:6:18: http.max_body:", "out of range");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "ingest: {listen: 'localhost:99999'}\n",
             "t.yaml:6:18: ingest.listen:", "host:port");
    load_bad("node_id: n1\ndata_dir: /x\nkafka: {brokers: 'a:1,b'}\n",
             "t.yaml:3:18: kafka.brokers:", "host:port");
    load_bad(BASE "nats: {url: 'http://x:1'}\n", "t.yaml:4:13: nats.url:", "nats://");
    /* Missing required keys are reported at the mapping that lacks them. */
    load_bad("data_dir: /x\nkafka: {brokers: 'a:1'}\ncollections: []\n",
             "t.yaml:1:1:", "missing required key 'node_id'");
    load_bad(BASE "collections: []\n", "t.yaml:4:14: collections:", "at least one");
    load_bad(BASE "collections:\n  - {name: a, topic: t, window: 1h}\n",
             "t.yaml:5:5: collections[0]:", "missing required key 'dim'");
    load_bad("node_id: n1\ndata_dir: /x\nkafka: {group_id: g}\n",
             "t.yaml:3:8: kafka:", "missing required key 'brokers'");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, index: {m: 8}}\n",
             "t.yaml:5:52: collections[0].index:", "missing required key 'type'");
    /* Duplicate keys and names. */
    load_bad(BASE "node_id: n2\n", "t.yaml:4:1: node_id:", "duplicate key");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"
                  "  - {name: a, dim: 16, topic: u, window: 1h}\n",
             "t.yaml:6:12: collections[1].name:", "duplicate collection name 'a'");
    /* Bad names. */
    load_bad(BASE "collections:\n  - {name: 'a.b', dim: 8, topic: t, window: 1h}\n",
             "t.yaml:5:12: collections[0].name:", "A-Z a-z 0-9 _ -");
    /* Cross-field rules. */
    load_bad(BASE "collections:\n  - {name: a, dim: 10, topic: t, window: 1h, index: {type: "
                  "ivfpq, m: 3}}\n",
             "t.yaml:5:70: collections[0].index:", "m (3) must divide dim (10)");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, index: {type: "
                  "ivfpq, nbits: 6}}\n",
             "t.yaml:5:73: collections[0].index:", "nbits must be 4 or 8");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, index: {type: "
                  "ivfpq, rerank_codes: yes}}\n",
             "t.yaml:5:80: collections[0].index.rerank_codes:", "not one of true | false");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, index: {type: "
                  "hnsw, rerank_codes: true}}\n",
             "t.yaml:5:", "rerank_codes");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1d, ttl: 1h}\n",
             "t.yaml:5:50: collections[0].ttl:", "at least one window");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1d, cold_after: 7d}\n",
             "t.yaml:5:5: collections[0]:", "together");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1d, compact_after: 1h}\n",
             "t.yaml:5:60: collections[0].compact_after:", "at least one window");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, compact_span: 90m}\n",
             "t.yaml:5:59: collections[0].compact_span:", "whole number of windows");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h, index: {type: "
                  "hnsw, m: 64, ef_construction: 32}}\n",
             "t.yaml:5:52: collections[0].index:", "ef_construction (32) must be at least m");
    load_bad(BASE "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n---\nnode_id: x\n",
             "t.yaml:7:1:", "second YAML document");
}
END_TEST

/* SPEC.md §6: ingest.advertise_url, ingest.announce_interval, indexer.ingest_nodes. */
#define ONE_COLL "collections:\n  - {name: a, dim: 8, topic: t, window: 1h}\n"

START_TEST(test_nodes_keys)
{
    struct cfg *c = load_ok(BASE ONE_COLL);
    ck_assert_ptr_null(c->ingest.advertise_url);
    ck_assert_int_eq(c->ingest.announce_interval_ms, 2000);
    ck_assert_ptr_null(c->indexer.ingest_nodes);
    ck_assert_uint_eq(c->indexer.n_ingest_nodes, 0);
    cfg_free(c);
    c = load_ok(BASE ONE_COLL "ingest: {advertise_url: 'http://ingest-1.example:7070', "
                              "announce_interval: 500ms}\n"
                              "indexer: {ingest_nodes: ['http://a:7070', 'https://b:7071/x/']}\n");
    ck_assert_str_eq(c->ingest.advertise_url, "http://ingest-1.example:7070");
    ck_assert_int_eq(c->ingest.announce_interval_ms, 500);
    ck_assert_uint_eq(c->indexer.n_ingest_nodes, 2);
    ck_assert_str_eq(c->indexer.ingest_nodes[0], "http://a:7070");
    ck_assert_str_eq(c->indexer.ingest_nodes[1], "https://b:7071/x"); /* trailing '/' dropped */
    cfg_free(c);
    /* The range's ends; IPv6 in brackets; a path prefix; null keeps the defaults. */
    c = load_ok(BASE ONE_COLL "ingest: {advertise_url: 'http://[fd00::7]:8080/strata/', "
                              "announce_interval: 100ms}\n"
                              "indexer: {ingest_nodes: ~}\n");
    ck_assert_str_eq(c->ingest.advertise_url, "http://[fd00::7]:8080/strata");
    ck_assert_int_eq(c->ingest.announce_interval_ms, 100);
    ck_assert_uint_eq(c->indexer.n_ingest_nodes, 0);
    cfg_free(c);
    c = load_ok(BASE ONE_COLL "ingest: {advertise_url: null, announce_interval: 1m}\n");
    ck_assert_ptr_null(c->ingest.advertise_url);
    ck_assert_int_eq(c->ingest.announce_interval_ms, 60000);
    cfg_free(c);

    /* Wrong types. */
    load_bad(BASE ONE_COLL "ingest: {advertise_url: [http://a:1]}\n",
             "t.yaml:6:25: ingest.advertise_url:", "expected a scalar");
    load_bad(BASE ONE_COLL "ingest: {advertise_url: {url: 'http://a:1'}}\n",
             "t.yaml:6:25: ingest.advertise_url:", "expected a scalar");
    load_bad(BASE ONE_COLL "ingest: {announce_interval: fast}\n",
             "t.yaml:6:29: ingest.announce_interval:", "expected a duration");
    load_bad(BASE ONE_COLL "ingest: {announce_interval: 5}\n",
             "t.yaml:6:29: ingest.announce_interval:", "expected a duration");
    load_bad(BASE ONE_COLL "indexer: {ingest_nodes: 'http://a:1'}\n",
             "t.yaml:6:25: indexer.ingest_nodes:", "list");
    load_bad(BASE ONE_COLL "indexer: {ingest_nodes: {a: 'http://a:1'}}\n",
             "t.yaml:6:25: indexer.ingest_nodes:", "list");
    load_bad(BASE ONE_COLL "indexer: {ingest_nodes: ['http://a:1', [x]]}\n",
             "t.yaml:6:40: indexer.ingest_nodes[1]:", "expected a scalar");
    load_bad(BASE ONE_COLL "indexer: {ingest_nodes: ['http://a:1', ~]}\n",
             "t.yaml:6:40: indexer.ingest_nodes[1]:", "must not be null");
    /* Out of range, empty, duplicates. */
    load_bad(BASE ONE_COLL "ingest: {announce_interval: 10ms}\n",
             "t.yaml:6:29: ingest.announce_interval:", "out of range");
    load_bad(BASE ONE_COLL "ingest: {announce_interval: 2m}\n",
             "t.yaml:6:29: ingest.announce_interval:", "out of range");
    load_bad(BASE ONE_COLL "indexer: {ingest_nodes: []}\n",
             "t.yaml:6:25: indexer.ingest_nodes:", "empty list");
    load_bad(BASE ONE_COLL "indexer: {ingest_nodes: ['http://a:1', 'http://a:1/']}\n",
             "t.yaml:6:40: indexer.ingest_nodes[1]:", "listed twice");
    /* Bad URLs: scheme first, then the shape of the rest. */
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"ftp://x:1", "http:// or https://"},
        {"a:2", "http:// or https://"},
        {"HTTP://a:1", "http:// or https://"},
        {"http://", "must name a host"},
        {"http:///v1", "must name a host"},
        {"http://:80", "must name a host"},
        {"http://a b:1", "no spaces"},
        {"http://user:pw@a:1", "user info"},
        {"http://a:1/?x=1", "query"},
        {"http://a:1/#top", "fragment"},
        {"http://a:0", "bad port"},
        {"http://a:99999", "bad port"},
        {"http://a:x1", "bad port"},
        {"http://fd00::1:80", "brackets"},
        {"http://[::1", "must name a host"},
        {"http://[::1]x:1", "host[:port]"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char doc[512];
        snprintf(doc, sizeof(doc), BASE ONE_COLL "ingest: {advertise_url: '%s'}\n", bad[i].url);
        load_bad(doc, "t.yaml:6:25: ingest.advertise_url:", bad[i].why);
        snprintf(doc, sizeof(doc), BASE ONE_COLL "indexer:\n  ingest_nodes:\n    - '%s'\n",
                 bad[i].url);
        load_bad(doc, "t.yaml:8:7: indexer.ingest_nodes[0]:", bad[i].why);
    }
    /* Names that would collide with strata.nodes.<node_id> on NATS. */
    load_bad(BASE "collections:\n  - {name: nodes, dim: 8, topic: t, window: 1h}\n",
             "t.yaml:5:12: collections[0].name:", "reserved");
    load_bad("node_id: sealed\ndata_dir: /x\nkafka: {brokers: 'a:1'}\n" ONE_COLL,
             "t.yaml:1:10: node_id:", "reserved");
    c = load_ok("node_id: sealed-1\ndata_dir: /x\nkafka: {brokers: 'a:1'}\n"
                "collections:\n  - {name: nodes-1, dim: 8, topic: t, window: 1h}\n");
    cfg_free(c);
}
END_TEST

/* The URL other hosts reach an ingest node by: advertise_url, else http:// + listen. */
START_TEST(test_advertise_url)
{
    char url[256], want[512], host[256];
    ck_assert_int_eq(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    struct cfg *c = load_ok(BASE ONE_COLL);
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 0, url, sizeof(url)), ST_OK);
    ck_assert_str_eq(url, "http://127.0.0.1:7070");
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 41234, url, sizeof(url)), ST_OK);
    ck_assert_str_eq(url, "http://127.0.0.1:41234"); /* the port actually bound */
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 0, url, 10), ST_ERANGE);
    cfg_free(c);
    c = load_ok(BASE ONE_COLL "ingest: {listen: '0.0.0.0:7070'}\n");
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 0, url, sizeof(url)), ST_OK);
    snprintf(want, sizeof(want), "http://%s:7070", host); /* a wildcard: the hostname */
    ck_assert_str_eq(url, want);
    cfg_free(c);
    c = load_ok(BASE ONE_COLL "ingest: {listen: '[::]:0'}\n");
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 9000, url, sizeof(url)), ST_OK);
    snprintf(want, sizeof(want), "http://%s:9000", host);
    ck_assert_str_eq(url, want);
    cfg_free(c);
    c = load_ok(BASE ONE_COLL "ingest: {listen: '[::1]:7070'}\n");
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 0, url, sizeof(url)), ST_OK);
    ck_assert_str_eq(url, "http://[::1]:7070");
    cfg_free(c);
    /* Set: used as is (the bound port does not matter: a proxy may sit in front). */
    c = load_ok(BASE ONE_COLL "ingest: {listen: '0.0.0.0:0', advertise_url: "
                              "'https://ingest-1.example/strata//'}\n");
    ck_assert_int_eq(cfg_ingest_advertise_url(c, 9000, url, sizeof(url)), ST_OK);
    ck_assert_str_eq(url, "https://ingest-1.example/strata");
    cfg_free(c);
}
END_TEST

/* nats.user/password/token/creds_file/tls.*: optional, ${ENV} for secrets, one way to log in,
 * parts together, files readable; no error line shows a password. */
START_TEST(test_nats_security_keys)
{
    char dir[] = "/tmp/strata-cfg-natsXXXXXX", ca[64], cert[64], key[64], creds[64], y[2048];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/c.pem", dir);
    snprintf(key, sizeof(key), "%s/c.key", dir);
    snprintf(creds, sizeof(creds), "%s/u.creds", dir);
    const char *files[] = {ca, cert, key, creds};
    for (size_t i = 0; i < 4; i++) {
        FILE *f = fopen(files[i], "w");
        ck_assert_ptr_nonnull(f);
        fputs("x\n", f);
        fclose(f);
    }
    /* none: all NULL */
    struct cfg *c = load_ok(BASE ONE_COLL);
    struct st_bus_auth a;
    cfg_nats_auth(c, &a);
    ck_assert(a.user == NULL && a.password == NULL && a.token == NULL && a.creds_file == NULL &&
              a.tls_ca == NULL && a.tls_cert == NULL && a.tls_key == NULL);
    cfg_free(c);
    /* user + password (from the environment) and TLS with a client certificate */
    setenv("STRATA_T_NATS_PW", "s3cret pw", 1);
    snprintf(y, sizeof(y),
             BASE ONE_COLL "nats:\n  url: tls://127.0.0.1:4443\n  user: strata\n"
                           "  password: ${STRATA_T_NATS_PW}\n"
                           "  tls: {ca_file: %s, cert_file: %s, key_file: %s}\n",
             ca, cert, key);
    c = load_ok(y);
    cfg_nats_auth(c, &a);
    ck_assert_str_eq(a.user, "strata");
    ck_assert_str_eq(a.password, "s3cret pw");
    ck_assert_str_eq(a.tls_ca, ca);
    ck_assert_str_eq(a.tls_cert, cert);
    ck_assert_str_eq(a.tls_key, key);
    ck_assert_ptr_null(a.token);
    cfg_free(c);
    snprintf(y, sizeof(y), BASE ONE_COLL "nats: {creds_file: %s, tls: {ca_file: %s}}\n", creds, ca);
    c = load_ok(y);
    ck_assert_str_eq(c->nats.creds_file, creds);
    ck_assert_ptr_null(c->nats.tls_cert_file);
    cfg_free(c);
    c = load_ok(BASE ONE_COLL "nats: {token: t0k, tls: null}\n");
    ck_assert_str_eq(c->nats.token, "t0k");
    cfg_free(c);
    /* errors, with their positions */
    load_bad(BASE ONE_COLL "nats: {user: strata}\n",
             "t.yaml:6:14: nats.user:", "nats.user and nats.password go together");
    load_bad(BASE ONE_COLL "nats: {password: hunter2}\n",
             "t.yaml:6:18: nats.password:", "go together");
    load_bad(BASE ONE_COLL "nats: {user: u, password: p, token: t}\n", "t.yaml:6:37: nats.token:",
             "give one of user + password, token, creds_file (user is set too)");
    load_bad(BASE ONE_COLL "nats: {user: 'a:b', password: p}\n",
             "t.yaml:6:14: nats.user:", "must not contain");
    load_bad(BASE ONE_COLL "nats: {user: u, password: ''}\n",
             "t.yaml:6:27: nats.password:", "must not be empty");
    load_bad(BASE ONE_COLL "nats: {tls: {ca_file: /nonexistent/ca.pem}}\n",
             "t.yaml:6:23: nats.tls.ca_file:", "cannot be read");
    load_bad(BASE ONE_COLL "nats: {tls: {ca_fil: x}}\n",
             "t.yaml:6:14: nats.tls.ca_fil:", "unknown key");
    c = load_ok(BASE ONE_COLL "nats: {tls: {server_name: nats-1.example.net}}\n");
    cfg_nats_auth(c, &a);
    ck_assert_str_eq(a.tls_server_name, "nats-1.example.net");
    cfg_free(c);
    load_bad(BASE ONE_COLL "nats: {tls: {server_name: 'nats:4222'}}\n",
             "t.yaml:6:27: nats.tls.server_name:", "must be a DNS host name");
    load_bad(BASE ONE_COLL "nats: {tls: 5}\n", "t.yaml:6:13: nats.tls:", "expected a mapping");
    snprintf(y, sizeof(y), BASE ONE_COLL "nats: {tls: {cert_file: %s}}\n", cert);
    load_bad(y, "t.yaml:6:25: nats.tls.cert_file:", "go together");
    load_bad(BASE ONE_COLL "nats: {creds_file: /nonexistent.creds}\n",
             "t.yaml:6:20: nats.creds_file:", "cannot be read");
    /* a rejected config never echoes the password */
    struct cfg_errors errs = {0};
    const char *t = BASE ONE_COLL "nats: {password: hunter2, token: t0k, user: [x]}\n";
    ck_assert_int_eq(cfg_load_string("t.yaml", t, strlen(t), &c, &errs), ST_EINVAL);
    ck_assert_uint_gt(errs.n, 0);
    for (size_t i = 0; i < errs.n; i++)
        ck_assert_msg(strstr(errs.lines[i], "hunter2") == NULL, "%s", errs.lines[i]);
    cfg_errors_clear(&errs);
    for (size_t i = 0; i < 4; i++)
        unlink(files[i]);
    rmdir(dir);
}
END_TEST

START_TEST(test_all_errors_reported)
{
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    const char *t = BASE "collections:\n  - {name: a, dim: x, topic: t, window: y}\n"
                         "log: {level: loud}\n";
    ck_assert_int_eq(cfg_load_string("t.yaml", t, strlen(t), &c, &errs), ST_EINVAL);
    ck_assert_uint_eq(errs.n, 3);
    cfg_errors_clear(&errs);
}
END_TEST

START_TEST(test_missing_file)
{
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    ck_assert_int_eq(cfg_load("/nonexistent/strata.yaml", &c, &errs), ST_EIO);
    ck_assert_uint_eq(errs.n, 1);
    ck_assert_ptr_nonnull(strstr(errs.lines[0], "/nonexistent/strata.yaml:1:1: cannot open"));
    cfg_errors_clear(&errs);
}
END_TEST

/* Runs the real CLI; returns its exit code and captures stdout+stderr into out. */
static int run_cli(const char *args, char *out, size_t outsz)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", getenv("STRATA_CLI"), args);
    return st_test_run(cmd, out, outsz);
}

START_TEST(test_cli_check_config)
{
    ck_assert_ptr_nonnull(getenv("STRATA_CLI"));
    char out[8192], args[1024];
    snprintf(args, sizeof(args), "check-config %s", st_test_source("config/spec_sample.yaml"));
    ck_assert_int_eq(run_cli(args, out, sizeof(out)), 0);
    ck_assert_ptr_nonnull(strstr(out, "configuration ok"));
    const char *bad = st_test_source("config/bad_many.yaml");
    snprintf(args, sizeof(args), "check-config %s", bad);
    ck_assert_int_eq(run_cli(args, out, sizeof(out)), 2);
    char want[1200];
    snprintf(want, sizeof(want), "%s:13:10: collections[0].dim: expected an integer", bad);
    ck_assert_msg(strstr(out, want) != NULL, "missing '%s' in:\n%s", want, out);
    snprintf(want, sizeof(want), "%s:23:18: store.memtable_size:", bad);
    ck_assert_msg(strstr(out, want) != NULL, "missing '%s' in:\n%s", want, out);
    snprintf(want, sizeof(want), "%s:31:3: log.colour: unknown key", bad);
    ck_assert_msg(strstr(out, want) != NULL, "missing '%s' in:\n%s", want, out);
    ck_assert_int_eq(run_cli("check-config /nonexistent.yaml", out, sizeof(out)), 2);
    ck_assert_ptr_nonnull(strstr(out, "/nonexistent.yaml:1:1: cannot open"));
    ck_assert_int_eq(run_cli("check-config", out, sizeof(out)), 2);
    ck_assert_int_eq(run_cli("frobnicate", out, sizeof(out)), 2);
    ck_assert_int_eq(run_cli("--version", out, sizeof(out)), 0);
    ck_assert_ptr_nonnull(strstr(out, "strata "));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_spec_sample);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_build_cpu);
    tcase_add_test(tc, test_ivfpq_and_cold);
    tcase_add_test(tc, test_units);
    tcase_add_test(tc, test_env_expansion);
    tcase_add_test(tc, test_error_positions);
    tcase_add_test(tc, test_all_errors_reported);
    tcase_add_test(tc, test_nodes_keys);
    tcase_add_test(tc, test_advertise_url);
    tcase_add_test(tc, test_nats_security_keys);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_cli_check_config);
    suite_add_tcase(s, tc);
    return st_test_run_suite(s);
}
