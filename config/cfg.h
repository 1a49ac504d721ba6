/*
 * cfg.h — strata's YAML configuration (SPEC.md §6) as plain structs.
 *
 * Only the daemons' and the CLI's main() use this module; every other module takes its own
 * options struct, filled from these fields by the caller.
 *
 * Errors: every problem found is reported as "FILE:LINE:COL: message" (1-based line and
 * column of the offending node), collected in a struct cfg_errors so that an operator sees all
 * of them at once.
 */
#ifndef CFG_H
#define CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "st_bus.h"
#include "st_error.h"

#define CFG_NAME_MAX 64

enum cfg_metric { CFG_METRIC_L2 = 0, CFG_METRIC_IP = 1, CFG_METRIC_COSINE = 2 };
enum cfg_id_type { CFG_ID_STRING = 0, CFG_ID_UINT64 = 1 };
enum cfg_index_type { CFG_INDEX_NONE = 0, CFG_INDEX_HNSW = 1, CFG_INDEX_IVFPQ = 2 };
enum cfg_wal_sync { CFG_WAL_SYNC_ALWAYS = 0, CFG_WAL_SYNC_BATCH = 1, CFG_WAL_SYNC_NONE = 2 };

struct cfg_index {
    enum cfg_index_type type;
    /* hnsw */
    uint32_t m;               /* default 16 */
    uint32_t ef_construction; /* default 200 */
    /* ivfpq */
    uint32_t nlist; /* default 1024 */
    uint32_t pq_m;  /* YAML key "m" under type ivfpq; must divide dim; default dim/8 or 1 */
    uint32_t nbits; /* 4 or 8; default 8 */
    /* YAML "rerank_codes: false" (ivfpq): keep no one-byte re-ranking codes of the vectors
     * (dim + 8 bytes a vector, with which a re-rank computes few exact distances). 0, the
     * default (and what a zeroed cfg_index means): keep them. */
    int no_rerank_codes;
};

struct cfg_kv {
    char *key;
    char *value;
};

struct cfg_collection {
    char *name; /* [A-Za-z0-9_-]{1,64}: used in file names and NATS subjects */
    uint32_t dim;
    enum cfg_metric metric;
    enum cfg_id_type id_type;
    char *topic;
    char *dead_letter_topic; /* NULL: use kafka.dead_letter_topic */
    int64_t window_ms;
    int64_t grace_ms;
    int64_t max_lateness_ms;
    int64_t max_future_ms; /* default 1h */
    int64_t ttl_ms;        /* 0: no TTL */
    uint64_t max_bytes;    /* 0: no FIFO cap */
    struct cfg_index index;
    int64_t cold_after_ms; /* 0: no age tiering */
    struct cfg_index cold_index;
    int64_t compact_after_ms; /* 0: no index compaction (one index per window part) */
    int64_t compact_span_ms;  /* the event time one compacted index covers (default: a day,
                               * rounded up to whole windows) */
};

struct cfg {
    char *path; /* the file this was loaded from */
    char *node_id;
    char *data_dir;
    int64_t shutdown_timeout_ms; /* default 30s */
    struct {
        char *brokers; /* "host:port,..." or "embedded" */
        char *group_id;
        char *dead_letter_topic;
        struct cfg_kv *properties; /* passed to librdkafka as-is */
        size_t n_properties;
    } kafka;
    struct {
        char *url; /* "nats://..." or "embedded" */
        char *stream;
        /* Credentials (at most one way: user + password, token, or creds_file) and TLS (on
         * with a tls:// URL or any tls file; cert and key together). NULL: not set. */
        char *user, *password, *token, *creds_file;
        char *tls_ca_file, *tls_cert_file, *tls_key_file, *tls_server_name;
    } nats;
    struct cfg_collection *collections;
    size_t n_collections;
    struct {
        uint64_t memtable_size;
        enum cfg_wal_sync wal_sync;
        int64_t wal_sync_interval_ms;
    } store;
    struct {
        char *listen;
        /* How other hosts reach this node (segment URLs, announcements): http[s]://host[:port]
         * [/prefix] without trailing '/'. NULL: derived at start, cfg_ingest_advertise_url. */
        char *advertise_url;
        int64_t announce_interval_ms; /* strata.nodes.<node_id> cadence, 100ms-1m (default 2s) */
    } ingest;
    struct {
        char *listen;
        uint32_t build_threads;
        /* indexer.build_cpu in thousandths of a core: the CPU every index build together may
         * use (idx_cpucap.h); 0: no cap */
        uint32_t build_cpu_mc;
        uint32_t
            search_threads; /* threads one search's index parts are searched on, its own included */
        uint64_t memory_budget;
        /* Pinned ingest node URLs instead of discovery on NATS (NULL and 0: discover); when
         * set, at least one, distinct, without trailing '/'. */
        char **ingest_nodes;
        size_t n_ingest_nodes;
    } indexer;
    struct {
        char *auth_token_file; /* NULL: no auth */
        uint64_t max_body;
    } http;
    struct {
        int level; /* enum st_log_level */
    } log;
};

/* Collected "FILE:LINE:COL: message" lines. */
struct cfg_errors {
    char **lines;
    size_t n;
    size_t cap;
};

/*
 * Loads and validates path. On success *out is a new config (caller owns; cfg_free).
 * On failure returns ST_EINVAL (bad config) or ST_EIO/ST_ENOMEM, *out is NULL and errs (if
 * non-NULL) holds one line per problem. errs must be zero-initialised or cleared.
 */
int cfg_load(const char *path, struct cfg **out, struct cfg_errors *errs) ST_WUR;
/* Same, from an in-memory document; `name` is used as FILE in messages. */
int cfg_load_string(const char *name, const char *text, size_t len, struct cfg **out,
                    struct cfg_errors *errs) ST_WUR;
void cfg_free(struct cfg *c);

void cfg_errors_clear(struct cfg_errors *errs);
void cfg_errors_print(const struct cfg_errors *errs, FILE *f);

/* nats.user/password/token/creds_file/tls.* as the bus takes them (strings borrowed from c). */
void cfg_nats_auth(const struct cfg *c, struct st_bus_auth *out);

/* Looks a collection up by name; borrowed pointer valid while c lives. NULL if absent. */
const struct cfg_collection *cfg_collection_find(const struct cfg *c, const char *name);

/*
 * The --check-config behaviour both daemons and `strata check-config` share: loads path,
 * prints every error as FILE:LINE:COL to err_out, or "FILE: configuration ok" plus a one-line
 * summary to ok_out. Returns the process exit code: 0 valid, 2 invalid or unreadable.
 */
int cfg_check_main(const char *path, FILE *ok_out, FILE *err_out);

/*
 * The URL other hosts reach this ingest node by (SPEC.md §6): ingest.advertise_url when set,
 * else "http://" + ingest.listen with bound_port (the port actually bound, or 0 for the
 * configured one) and a wildcard host (0.0.0.0, ::) replaced by the machine's hostname;
 * IPv6 hosts in brackets. ST_ERANGE when it does not fit in cap.
 */
int cfg_ingest_advertise_url(const struct cfg *c, uint16_t bound_port, char *out,
                             size_t cap) ST_WUR;

/*
 * Every key path the loader accepts, from its own schema tables: "node_id", "kafka.brokers",
 * "collections", "collections[].index", "collections[].index.ef_construction", ... Sections
 * that only group keys ("kafka", "store") are not listed; keys whose value is a list or a
 * mapping the loader parses itself are ("collections", "kafka.properties",
 * "indexer.ingest_nodes"), followed by their own keys where they have a fixed set. No
 * duplicates; schema order. *out is caller-owned (cfg_keys_free). ST_OK or ST_ENOMEM.
 */
int cfg_keys(char ***out, size_t *n) ST_WUR;
void cfg_keys_free(char **keys, size_t n);

/* Unit parsing, exposed for the CLI and tests. Return ST_OK or ST_EINVAL/ST_ERANGE. */
int cfg_parse_duration_ms(const char *s, int64_t *out) ST_WUR;
int cfg_parse_size(const char *s, uint64_t *out) ST_WUR;

const char *cfg_metric_name(enum cfg_metric m);
const char *cfg_index_type_name(enum cfg_index_type t);

#endif
