/*
 * The schema of SPEC.md §6: which keys exist, their types, ranges and defaults, and the
 * checks that span several keys.
 */
#include "cfg_int.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_log.h"

#define KiB  (1ll << 10)
#define MiB  (1ll << 20)
#define GiB  (1ll << 30)
#define SEC  1000ll
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)
#define YEAR (366 * DAY)

/* ---- string validators ------------------------------------------------------------------- */

static const char *check_chars(const char *s, size_t max, const char *extra, const char *what)
{
    if (strlen(s) > max)
        return what;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && strchr(extra, *p) == NULL)
            return what;
    return NULL;
}

static const char *check_collection_name(const char *s)
{
    /* strata.nodes.<node_id> carries node announcements (SPEC.md §7): a collection "nodes"
     * would have its events on strata.nodes.sealed, a node's announcement subject. */
    if (strcmp(s, "nodes") == 0)
        return "is reserved (strata.nodes.> carries node announcements on NATS)";
    return check_chars(s, CFG_NAME_MAX, "_-",
                       "must be 1-64 characters of A-Z a-z 0-9 _ - (it names files and NATS "
                       "subjects)");
}

static const char *check_node_id(const char *s)
{
    /* The node announces itself on strata.nodes.<node_id>; these three would make that a
     * window-event subject (strata.*.sealed, ...) and land in the JetStream stream. */
    if (strcmp(s, "sealed") == 0 || strcmp(s, "expired") == 0 || strcmp(s, "indexed") == 0)
        return "is reserved (strata.nodes.<node_id> must not look like a window event subject)";
    return check_chars(s, CFG_NAME_MAX, "._-", "must be 1-64 characters of A-Z a-z 0-9 . _ -");
}

static const char *check_topic(const char *s)
{
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return "is not a legal Kafka topic name";
    return check_chars(s, 249, "._-",
                       "is not a legal Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)");
}

static const char *check_stream(const char *s)
{
    return check_chars(s, 64, "_-", "must be 1-64 characters of A-Z a-z 0-9 _ -");
}

/* "host:port" or "[v6]:port" with min_port <= port <= 65535. */
static bool hostport_ok(const char *s, size_t len, long min_port)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL || colon == s)
        return false;
    if (s[0] == '[' && colon[-1] != ']')
        return false;
    const char *p = colon + 1;
    size_t plen = len - (size_t)(p - s);
    if (plen == 0 || plen > 5)
        return false;
    long port = 0;
    for (size_t i = 0; i < plen; i++) {
        if (!isdigit((unsigned char)p[i]))
            return false;
        port = port * 10 + (p[i] - '0');
    }
    return port >= min_port && port <= 65535;
}

static const char *check_listen(const char *s)
{
    /* port 0: any free port (tests; the daemon logs and advertises the one it got) */
    return hostport_ok(s, strlen(s), 0) ? NULL : "expected host:port (port 0-65535)";
}

static const char *check_brokers(const char *s)
{
    if (strcmp(s, "embedded") == 0)
        return NULL;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!hostport_ok(p, len, 1))
            return "expected \"embedded\" or a comma-separated list of host:port";
        if (comma == NULL)
            return NULL;
        p = comma + 1;
    }
}

static const char *check_nats_url(const char *s)
{
    if (strcmp(s, "embedded") == 0)
        return NULL;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        size_t skip = 0;
        if (len > 7 && strncmp(p, "nats://", 7) == 0)
            skip = 7;
        else if (len > 6 && strncmp(p, "tls://", 6) == 0)
            skip = 6;
        if (skip == 0)
            return "expected \"embedded\" or nats://host:port (comma-separated for a cluster)";
        const char *hp = p + skip;
        const char *at = memchr(hp, '@', len - skip); /* user:pass@host:port */
        if (at != NULL)
            hp = at + 1;
        if (!hostport_ok(hp, len - (size_t)(hp - p), 1))
            return "expected \"embedded\" or nats://host:port (comma-separated for a cluster)";
        if (comma == NULL)
            return NULL;
        p = comma + 1;
    }
}

/* ---- enums ------------------------------------------------------------------------------- */

static const struct cfg_enum_opt metric_opts[] = {
    {"l2", CFG_METRIC_L2}, {"ip", CFG_METRIC_IP}, {"cosine", CFG_METRIC_COSINE}, {NULL, 0}};
static const struct cfg_enum_opt id_type_opts[] = {
    {"string", CFG_ID_STRING}, {"uint64", CFG_ID_UINT64}, {NULL, 0}};
static const struct cfg_enum_opt index_type_opts[] = {
    {"hnsw", CFG_INDEX_HNSW}, {"ivfpq", CFG_INDEX_IVFPQ}, {NULL, 0}};
/* A boolean stored negated (a zeroed struct means true). */
static const struct cfg_enum_opt not_bool_opts[] = {{"true", 0}, {"false", 1}, {NULL, 0}};
static const struct cfg_enum_opt wal_sync_opts[] = {{"always", CFG_WAL_SYNC_ALWAYS},
                                                    {"batch", CFG_WAL_SYNC_BATCH},
                                                    {"none", CFG_WAL_SYNC_NONE},
                                                    {NULL, 0}};
static const struct cfg_enum_opt log_level_opts[] = {
    {"error", ST_LOG_ERROR}, {"warning", ST_LOG_WARNING}, {"notice", ST_LOG_NOTICE},
    {"info", ST_LOG_INFO},   {"debug", ST_LOG_DEBUG},     {NULL, 0}};

const char *cfg_metric_name(enum cfg_metric m)
{
    for (const struct cfg_enum_opt *o = metric_opts; o->name; o++)
        if (o->value == (int)m)
            return o->name;
    return "?";
}

const char *cfg_index_type_name(enum cfg_index_type t)
{
    for (const struct cfg_enum_opt *o = index_type_opts; o->name; o++)
        if (o->value == (int)t)
            return o->name;
    return "none";
}

/* ---- field tables ------------------------------------------------------------------------ */

#define STR(k, type_, member, req, null_, chk)                                                     \
    {                                                                                              \
        .key = k, .type = CFG_F_STRING, .off = offsetof(type_, member), .required = req,           \
        .nullable = null_, .check = chk                                                            \
    }
#define DUR(k, type_, member, req, null_, lo, hi)                                                  \
    {                                                                                              \
        .key = k, .type = CFG_F_DURATION, .off = offsetof(type_, member), .required = req,         \
        .nullable = null_, .min = lo, .max = hi                                                    \
    }
#define SIZE(k, type_, member, req, null_, lo, hi)                                                 \
    {                                                                                              \
        .key = k, .type = CFG_F_SIZE, .off = offsetof(type_, member), .required = req,             \
        .nullable = null_, .min = lo, .max = hi                                                    \
    }
#define U32(k, type_, member, req, lo, hi)                                                         \
    {                                                                                              \
        .key = k, .type = CFG_F_U32, .off = offsetof(type_, member), .required = req, .min = lo,   \
        .max = hi                                                                                  \
    }
#define ENUM(k, type_, member, o)                                                                  \
    {                                                                                              \
        .key = k, .type = CFG_F_ENUM, .off = offsetof(type_, member), .opts = o                    \
    }

static const struct cfg_field hnsw_fields[] = {
    ENUM("type", struct cfg_index, type, index_type_opts),
    U32("m", struct cfg_index, m, false, 2, 128),
    U32("ef_construction", struct cfg_index, ef_construction, false, 8, 4096),
    {0},
};

static const struct cfg_field ivfpq_fields[] = {
    ENUM("type", struct cfg_index, type, index_type_opts),
    U32("nlist", struct cfg_index, nlist, false, 1, 65536),
    U32("m", struct cfg_index, pq_m, false, 1, 4096),
    U32("nbits", struct cfg_index, nbits, false, 4, 8),
    ENUM("rerank_codes", struct cfg_index, no_rerank_codes, not_bool_opts),
    {0},
};

static void parse_index(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base,
                        struct cfg_index *ix)
{
    (void)base;
    if (v->type != YAML_MAPPING_NODE) {
        cfg_ld_error(ld, v, path, "expected a mapping such as {type: hnsw, m: 16}");
        return;
    }
    yaml_node_t *t = cfg_mapping_get(ld, v, "type");
    if (t == NULL) {
        cfg_ld_error(ld, v, path, "missing required key 'type' (hnsw | ivfpq)");
        return;
    }
    char tp[CFG_PATH_MAX];
    cfg_path_join(tp, path, "type");
    char *s = cfg_scalar_nonnull(ld, t, tp);
    if (s == NULL)
        return;
    const struct cfg_field *fields = NULL;
    if (strcmp(s, "hnsw") == 0) {
        ix->type = CFG_INDEX_HNSW;
        ix->m = 16;
        ix->ef_construction = 200;
        fields = hnsw_fields;
    } else if (strcmp(s, "ivfpq") == 0) {
        ix->type = CFG_INDEX_IVFPQ;
        ix->nlist = 1024;
        ix->pq_m = 0; /* derived from dim in cfg_validate */
        ix->nbits = 8;
        ix->no_rerank_codes = 0;
        fields = ivfpq_fields;
    } else {
        cfg_ld_error(ld, t, tp, "\"%s\" is not one of hnsw | ivfpq", s);
    }
    free(s);
    if (fields != NULL)
        cfg_walk_mapping(ld, v, path, fields, ix);
}

static void parse_main_index(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base)
{
    parse_index(ld, v, path, base, &((struct cfg_collection *)base)->index);
}

static void parse_cold_index(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base)
{
    struct cfg_index *ix = &((struct cfg_collection *)base)->cold_index;
    parse_index(ld, v, path, base, ix);
    /* A cold tier is chosen to save memory: no re-ranking codes unless asked for. */
    if (ix->type == CFG_INDEX_IVFPQ && v->type == YAML_MAPPING_NODE &&
        cfg_mapping_get(ld, v, "rerank_codes") == NULL)
        ix->no_rerank_codes = 1;
}

static const struct cfg_field collection_fields[] = {
    STR("name", struct cfg_collection, name, true, false, check_collection_name),
    U32("dim", struct cfg_collection, dim, true, 1, 65536),
    ENUM("metric", struct cfg_collection, metric, metric_opts),
    ENUM("id_type", struct cfg_collection, id_type, id_type_opts),
    STR("topic", struct cfg_collection, topic, true, false, check_topic),
    STR("dead_letter_topic", struct cfg_collection, dead_letter_topic, false, true, check_topic),
    DUR("window", struct cfg_collection, window_ms, true, false, SEC, YEAR),
    DUR("grace", struct cfg_collection, grace_ms, false, false, 0, YEAR),
    DUR("max_lateness", struct cfg_collection, max_lateness_ms, false, false, 0, 10 * YEAR),
    DUR("max_future", struct cfg_collection, max_future_ms, false, false, 0, 7 * DAY),
    DUR("ttl", struct cfg_collection, ttl_ms, false, true, SEC, 100 * YEAR),
    SIZE("max_bytes", struct cfg_collection, max_bytes, false, true, MiB, 0),
    {.key = "index",
     .type = CFG_F_CUSTOM,
     .custom = parse_main_index,
     .sub = hnsw_fields,
     .sub_alt = ivfpq_fields},
    DUR("cold_after", struct cfg_collection, cold_after_ms, false, true, SEC, 100 * YEAR),
    {.key = "cold_index",
     .type = CFG_F_CUSTOM,
     .custom = parse_cold_index,
     .sub = hnsw_fields,
     .sub_alt = ivfpq_fields},
    DUR("compact_after", struct cfg_collection, compact_after_ms, false, true, SEC, 100 * YEAR),
    DUR("compact_span", struct cfg_collection, compact_span_ms, false, false, SEC, 100 * YEAR),
    {0},
};

static void collection_defaults(struct cfg_collection *cc)
{
    cc->metric = CFG_METRIC_L2;
    cc->id_type = CFG_ID_STRING;
    cc->max_future_ms = HOUR;
    cc->index.type = CFG_INDEX_HNSW;
    cc->index.m = 16;
    cc->index.ef_construction = 200;
}

static void parse_collections(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base)
{
    struct cfg *c = base;
    if (v->type != YAML_SEQUENCE_NODE) {
        cfg_ld_error(ld, v, path, "expected a list of collections");
        return;
    }
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n == 0) {
        cfg_ld_error(ld, v, path, "at least one collection is required");
        return;
    }
    c->collections = calloc(n, sizeof(*c->collections));
    if (c->collections == NULL) {
        cfg_ld_error(ld, v, path, "out of memory");
        return;
    }
    c->n_collections = n;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, v->data.sequence.items.start[i]);
        char ip[CFG_PATH_MAX];
        snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
        collection_defaults(&c->collections[i]);
        if (item != NULL)
            cfg_walk_mapping(ld, item, ip, collection_fields, &c->collections[i]);
    }
}

static void parse_properties(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base)
{
    struct cfg *c = base;
    if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (v->data.scalar.length == 0 || strcmp((char *)v->data.scalar.value, "null") == 0))
        return;
    if (v->type != YAML_MAPPING_NODE) {
        cfg_ld_error(ld, v, path, "expected a mapping of librdkafka properties");
        return;
    }
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    c->kafka.properties = calloc(n ? n : 1, sizeof(*c->kafka.properties));
    if (c->kafka.properties == NULL) {
        cfg_ld_error(ld, v, path, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *pr = &v->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(ld->doc, pr->key);
        yaml_node_t *val = yaml_document_get_node(ld->doc, pr->value);
        if (k == NULL || val == NULL)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            cfg_ld_error(ld, k, path, "property names must be strings");
            continue;
        }
        char kp[CFG_PATH_MAX];
        cfg_path_join(kp, path, (const char *)k->data.scalar.value);
        for (size_t j = 0; j < c->kafka.n_properties; j++) {
            if (strcmp(c->kafka.properties[j].key, (const char *)k->data.scalar.value) == 0) {
                cfg_ld_error(ld, k, kp, "duplicate key");
                goto next;
            }
        }
        char *s = cfg_scalar_nonnull(ld, val, kp);
        if (s == NULL)
            continue;
        struct cfg_kv *kv = &c->kafka.properties[c->kafka.n_properties];
        kv->key = strdup((const char *)k->data.scalar.value);
        kv->value = s;
        if (kv->key == NULL) {
            free(s);
            kv->value = NULL;
            cfg_ld_error(ld, k, kp, "out of memory");
            continue;
        }
        c->kafka.n_properties++;
    next:;
    }
}

static const struct cfg_field kafka_fields[] = {
    STR("brokers", struct cfg, kafka.brokers, true, false, check_brokers),
    STR("group_id", struct cfg, kafka.group_id, false, false, NULL),
    STR("dead_letter_topic", struct cfg, kafka.dead_letter_topic, false, false, check_topic),
    {.key = "properties", .type = CFG_F_CUSTOM, .custom = parse_properties},
    {0},
};

static const char *check_user(const char *s)
{
    if (s[0] == '\0')
        return "must not be empty (leave the key out instead)";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == ':' || *p == '@' || *p == '/')
            return "must not contain spaces, control characters, ':', '@' or '/'";
    return NULL;
}

/* A file the daemon reads at start: readable now, so a typo is found by --check-config. */
static const char *check_readable(const char *s)
{
    if (s[0] == '\0')
        return "must not be empty (leave the key out instead)";
    return access(s, R_OK) == 0 ? NULL : "cannot be read (no such file, or no permission)";
}

/* A DNS name (wildcards are the certificate's business, not ours). */
static const char *check_server_name(const char *s)
{
    return check_chars(s, 253, ".-", "must be a DNS host name (A-Z a-z 0-9 . -)");
}

static const struct cfg_field nats_tls_fields[] = {
    STR("ca_file", struct cfg, nats.tls_ca_file, false, true, check_readable),
    STR("cert_file", struct cfg, nats.tls_cert_file, false, true, check_readable),
    STR("key_file", struct cfg, nats.tls_key_file, false, true, check_readable),
    STR("server_name", struct cfg, nats.tls_server_name, false, true, check_server_name),
    {0},
};

static const struct cfg_field nats_fields[] = {
    STR("url", struct cfg, nats.url, false, false, check_nats_url),
    STR("stream", struct cfg, nats.stream, false, false, check_stream),
    STR("user", struct cfg, nats.user, false, true, check_user),
    /* no check may print these values: parse_field quotes the value it rejects */
    STR("password", struct cfg, nats.password, false, true, NULL),
    STR("token", struct cfg, nats.token, false, true, NULL),
    STR("creds_file", struct cfg, nats.creds_file, false, true, check_readable),
    {.key = "tls",
     .type = CFG_F_SECTION,
     .required = false,
     .nullable = true,
     .sub = nats_tls_fields},
    {0},
};

static const struct cfg_field store_fields[] = {
    SIZE("memtable_size", struct cfg, store.memtable_size, false, false, MiB, 64 * GiB),
    ENUM("wal_sync", struct cfg, store.wal_sync, wal_sync_opts),
    DUR("wal_sync_interval", struct cfg, store.wal_sync_interval_ms, false, false, 0, 10 * SEC),
    {0},
};

/*
 * An ingest node's URL as other hosts use it: http[s]://host[:port][/path-prefix], no user
 * info, query or fragment (segment URLs and API paths are appended to it). Trailing slashes
 * are dropped by cfg_validate.
 */
static const char *check_http_url(const char *s)
{
    size_t skip = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;
    if (skip == 0)
        return "must be an http:// or https:// URL";
    if (strlen(s) > 400)
        return "must be at most 400 characters";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#' || *p == '@')
            return "must be http[s]://host[:port][/path] (no spaces, user info, query or "
                   "fragment)";
    const char *host = s + skip;
    size_t alen = strcspn(host, "/");
    if (alen == 0 || *host == ':')
        return "must name a host";
    /* a port, when given, is 1-65535 (an IPv6 host is in brackets: its colons do not count) */
    const char *end = host + alen, *colon = NULL;
    for (const char *p = host; p < end; p++)
        if (*p == ':')
            colon = p;
    if (*host == '[') {
        const char *rb = memchr(host, ']', alen);
        if (rb == NULL || rb == host + 1)
            return "must name a host";
        if (colon != NULL && colon < rb)
            colon = NULL;
        if (rb + 1 != end && rb + 1 != colon)
            return "must be http[s]://host[:port][/path]";
    } else if (colon != NULL && memchr(host, ':', (size_t)(colon - host)) != NULL) {
        return "must put an IPv6 address in brackets (http://[::1]:7070)";
    }
    if (colon != NULL && !hostport_ok(host, alen, 1))
        return "has a bad port (1-65535)";
    return NULL;
}

/* Drops trailing slashes: paths are appended to the URL with their own leading '/'. */
static void url_trim(char *u)
{
    size_t n = strlen(u);
    while (n > 0 && u[n - 1] == '/')
        u[--n] = '\0';
}

/* indexer.ingest_nodes: a non-empty list of distinct ingest node URLs. */
static void parse_ingest_nodes(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base)
{
    struct cfg *c = base;
    if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (v->data.scalar.length == 0 || strcmp((char *)v->data.scalar.value, "null") == 0 ||
         strcmp((char *)v->data.scalar.value, "~") == 0))
        return; /* null: discover the nodes on NATS */
    if (v->type != YAML_SEQUENCE_NODE) {
        cfg_ld_error(ld, v, path, "expected a list of ingest node URLs (http://host:port)");
        return;
    }
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n == 0) {
        cfg_ld_error(ld, v, path,
                     "an empty list pins no ingest node; leave the key out (or null) to "
                     "discover them on NATS");
        return;
    }
    c->indexer.ingest_nodes = calloc(n, sizeof(*c->indexer.ingest_nodes));
    if (c->indexer.ingest_nodes == NULL) {
        cfg_ld_error(ld, v, path, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(ld->doc, v->data.sequence.items.start[i]);
        char ip[CFG_PATH_MAX];
        snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
        bool is_null;
        char *u = it != NULL ? cfg_scalar(ld, it, ip, &is_null) : NULL;
        if (u == NULL) {
            if (it != NULL && is_null)
                cfg_ld_error(ld, it, ip, "must not be null");
            continue;
        }
        const char *why = *u == '\0' ? "must not be empty" : check_http_url(u);
        if (why != NULL) {
            cfg_ld_error(ld, it, ip, "%s (got \"%s\")", why, u);
            free(u);
            continue;
        }
        url_trim(u);
        for (size_t j = 0; j < c->indexer.n_ingest_nodes && u != NULL; j++) {
            if (strcmp(c->indexer.ingest_nodes[j], u) == 0) {
                cfg_ld_error(ld, it, ip, "\"%s\" is listed twice", u);
                free(u);
                u = NULL;
            }
        }
        if (u != NULL)
            c->indexer.ingest_nodes[c->indexer.n_ingest_nodes++] = u;
    }
}

/* indexer.build_cpu: cores as a decimal number (0.5, 1.25, 2), to a thousandth; 0: no cap. */
static void parse_build_cpu(struct cfg_ld *ld, yaml_node_t *v, const char *path, void *base)
{
    struct cfg *c = base;
    char *s = cfg_scalar_nonnull(ld, v, path);
    if (s == NULL)
        return;
    /* Digits, at most one '.', decimals beyond the third only zeros: no exponent, sign, "inf"
     * or "nan". Ten integer digits at most (then out of range, not overflowed). */
    uint64_t whole = 0, frac = 0;
    int nd = 0, nf = -1;
    const char *p = s;
    for (; *p >= '0' && *p <= '9' && nd < 10; p++, nd++)
        whole = whole * 10 + (uint64_t)(*p - '0');
    if (*p == '.') {
        for (p++, nf = 0; *p >= '0' && *p <= '9' && nf < 3; p++, nf++)
            frac = frac * 10 + (uint64_t)(*p - '0');
        while (*p == '0')
            p++;
    }
    for (int i = nf < 0 ? 0 : nf; i < 3; i++)
        frac *= 10;
    uint64_t mc = whole * 1000 + frac;
    if (*p != '\0' || (nd == 0 && nf <= 0))
        cfg_ld_error(ld, v, path,
                     "expected a number of cores, e.g. 0.5 or 2, at most three "
                     "decimals (got \"%s\")",
                     s);
    else if (mc > 1024 * 1000)
        cfg_ld_error(ld, v, path, "out of range: 0 (no cap) or 0.001 to 1024 cores (got %s)", s);
    else
        c->indexer.build_cpu_mc = (uint32_t)mc;
    free(s);
}

static const struct cfg_field ingest_fields[] = {
    STR("listen", struct cfg, ingest.listen, false, false, check_listen),
    STR("advertise_url", struct cfg, ingest.advertise_url, false, true, check_http_url),
    DUR("announce_interval", struct cfg, ingest.announce_interval_ms, false, false, 100, MIN),
    {0},
};

static const struct cfg_field indexer_fields[] = {
    STR("listen", struct cfg, indexer.listen, false, false, check_listen),
    U32("build_threads", struct cfg, indexer.build_threads, false, 1, 256),
    {.key = "build_cpu", .type = CFG_F_CUSTOM, .custom = parse_build_cpu},
    U32("search_threads", struct cfg, indexer.search_threads, false, 1, 256),
    SIZE("memory_budget", struct cfg, indexer.memory_budget, false, false, 64 * MiB, 0),
    {.key = "ingest_nodes", .type = CFG_F_CUSTOM, .custom = parse_ingest_nodes},
    {0},
};

static const struct cfg_field http_fields[] = {
    STR("auth_token_file", struct cfg, http.auth_token_file, false, true, NULL),
    SIZE("max_body", struct cfg, http.max_body, false, false, KiB, GiB),
    {0},
};

static const struct cfg_field log_fields[] = {
    ENUM("level", struct cfg, log.level, log_level_opts),
    {0},
};

#define SECTION(k, f, req)                                                                         \
    {                                                                                              \
        .key = k, .type = CFG_F_SECTION, .required = req, .nullable = !(req), .sub = f             \
    }

const struct cfg_field cfg_top_fields[] = {
    STR("node_id", struct cfg, node_id, true, false, check_node_id),
    STR("data_dir", struct cfg, data_dir, true, false, NULL),
    DUR("shutdown_timeout", struct cfg, shutdown_timeout_ms, false, false, SEC, HOUR),
    SECTION("kafka", kafka_fields, true),
    SECTION("nats", nats_fields, false),
    {.key = "collections",
     .type = CFG_F_CUSTOM,
     .required = true,
     .custom = parse_collections,
     .sub = collection_fields,
     .list = true},
    SECTION("store", store_fields, false),
    SECTION("ingest", ingest_fields, false),
    SECTION("indexer", indexer_fields, false),
    SECTION("http", http_fields, false),
    SECTION("log", log_fields, false),
    {0},
};

void cfg_set_defaults(struct cfg *c)
{
    /* strdup failures leave NULL; cfg_validate reports them as out of memory. */
    c->shutdown_timeout_ms = 30 * SEC;
    c->kafka.group_id = strdup("strata-ingest");
    c->kafka.dead_letter_topic = strdup("strata.dlq");
    c->nats.url = strdup("nats://127.0.0.1:4222");
    c->nats.stream = strdup("STRATA");
    c->store.memtable_size = 64 * MiB;
    c->store.wal_sync = CFG_WAL_SYNC_BATCH;
    c->store.wal_sync_interval_ms = 5;
    c->ingest.listen = strdup("127.0.0.1:7070");
    c->ingest.announce_interval_ms = 2 * SEC;
    c->indexer.listen = strdup("127.0.0.1:7080");
    c->indexer.build_threads = 2;
    c->indexer.search_threads = 2;
    c->indexer.memory_budget = 8 * GiB;
    c->http.max_body = 16 * MiB;
    c->log.level = ST_LOG_INFO;
}

/* ---- cross-field validation -------------------------------------------------------------- */

static uint32_t default_pq_m(uint32_t dim)
{
    static const uint32_t sub[] = {8, 4, 2, 1};
    for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
        if (dim % sub[i] == 0)
            return dim / sub[i];
    return dim;
}

static void validate_index(struct cfg_ld *ld, yaml_node_t *coll_node, const char *path,
                           const char *key, struct cfg_collection *cc, struct cfg_index *ix)
{
    yaml_node_t *in = cfg_mapping_get(ld, coll_node, key);
    char ip[CFG_PATH_MAX];
    cfg_path_join(ip, path, key);
    if (ix->type == CFG_INDEX_HNSW && ix->ef_construction < ix->m) {
        cfg_ld_error(ld, in ? in : coll_node, ip, "ef_construction (%u) must be at least m (%u)",
                     ix->ef_construction, ix->m);
    }
    if (ix->type == CFG_INDEX_IVFPQ) {
        if (ix->pq_m == 0)
            ix->pq_m = default_pq_m(cc->dim);
        yaml_node_t *mn = cfg_mapping_get(ld, in, "m");
        if (cc->dim % ix->pq_m != 0)
            cfg_ld_error(ld, mn ? mn : in, ip, "m (%u) must divide dim (%u)", ix->pq_m, cc->dim);
        if (ix->nbits != 4 && ix->nbits != 8) {
            yaml_node_t *nb = cfg_mapping_get(ld, in, "nbits");
            cfg_ld_error(ld, nb ? nb : in, ip, "nbits must be 4 or 8 (got %u)", ix->nbits);
        }
    }
}

/* The NATS credentials: one way at most, its parts together. */
static void validate_nats(struct cfg_ld *ld, yaml_node_t *root, const struct cfg *c)
{
    yaml_node_t *nn = cfg_mapping_get(ld, root, "nats");
    yaml_node_t *tn = cfg_mapping_get(ld, nn, "tls");
    const char *ways[] = {c->nats.user != NULL ? "user" : NULL,
                          c->nats.token != NULL ? "token" : NULL,
                          c->nats.creds_file != NULL ? "creds_file" : NULL};
    const char *first = NULL;
    for (size_t i = 0; i < 3; i++) {
        if (ways[i] == NULL)
            continue;
        if (first != NULL) {
            char p[CFG_PATH_MAX];
            cfg_path_join(p, "nats", ways[i]);
            cfg_ld_error(ld, cfg_mapping_get(ld, nn, ways[i]), p,
                         "give one of user + password, token, creds_file (%s is set too)", first);
        } else {
            first = ways[i];
        }
    }
    if ((c->nats.user != NULL) != (c->nats.password != NULL)) {
        const char *set = c->nats.user != NULL ? "user" : "password";
        char p[CFG_PATH_MAX];
        cfg_path_join(p, "nats", set);
        cfg_ld_error(ld, cfg_mapping_get(ld, nn, set), p,
                     "nats.user and nats.password go together");
    }
    if ((c->nats.tls_cert_file != NULL) != (c->nats.tls_key_file != NULL)) {
        const char *set = c->nats.tls_cert_file != NULL ? "cert_file" : "key_file";
        char p[CFG_PATH_MAX];
        cfg_path_join(p, "nats.tls", set);
        cfg_ld_error(ld, cfg_mapping_get(ld, tn, set), p,
                     "nats.tls.cert_file and nats.tls.key_file go together");
    }
}

void cfg_validate(struct cfg_ld *ld, yaml_node_t *root, struct cfg *c)
{
    if (!c->kafka.group_id || !c->kafka.dead_letter_topic || !c->nats.url || !c->nats.stream ||
        !c->ingest.listen || !c->indexer.listen) {
        cfg_ld_error(ld, root, "", "out of memory");
        return;
    }
    if (c->ingest.advertise_url != NULL)
        url_trim(c->ingest.advertise_url);
    validate_nats(ld, root, c);
    yaml_node_t *seq = cfg_mapping_get(ld, root, "collections");
    for (size_t i = 0; i < c->n_collections; i++) {
        struct cfg_collection *cc = &c->collections[i];
        yaml_node_t *cn = yaml_document_get_node(ld->doc, seq->data.sequence.items.start[i]);
        char path[CFG_PATH_MAX];
        snprintf(path, sizeof(path), "collections[%zu]", i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->collections[j].name, cc->name) == 0) {
                char np[CFG_PATH_MAX];
                cfg_path_join(np, path, "name");
                cfg_ld_error(ld, cfg_mapping_get(ld, cn, "name"), np,
                             "duplicate collection name '%s' (first defined as collections[%zu])",
                             cc->name, j);
            }
        }
        if (cc->ttl_ms != 0 && cc->ttl_ms < cc->window_ms) {
            char tp[CFG_PATH_MAX];
            cfg_path_join(tp, path, "ttl");
            cfg_ld_error(ld, cfg_mapping_get(ld, cn, "ttl"), tp,
                         "ttl (%lldms) must be at least one window (%lldms)", (long long)cc->ttl_ms,
                         (long long)cc->window_ms);
        }
        validate_index(ld, cn, path, "index", cc, &cc->index);
        bool has_cold_index = cfg_mapping_get(ld, cn, "cold_index") != NULL;
        if (has_cold_index != (cc->cold_after_ms != 0)) {
            cfg_ld_error(ld, cn, path, "cold_after and cold_index must be given together");
        } else if (has_cold_index) {
            validate_index(ld, cn, path, "cold_index", cc, &cc->cold_index);
            if (cc->cold_after_ms < cc->window_ms) {
                char tp[CFG_PATH_MAX];
                cfg_path_join(tp, path, "cold_after");
                cfg_ld_error(ld, cfg_mapping_get(ld, cn, "cold_after"), tp,
                             "cold_after must be at least one window");
            }
        }
        if (cc->compact_after_ms != 0 && cc->compact_after_ms < cc->window_ms) {
            char tp[CFG_PATH_MAX];
            cfg_path_join(tp, path, "compact_after");
            cfg_ld_error(ld, cfg_mapping_get(ld, cn, "compact_after"), tp,
                         "compact_after must be at least one window");
        }
        if (cc->compact_span_ms == 0 && cc->window_ms > 0) /* a day, in whole windows */
            cc->compact_span_ms = (DAY + cc->window_ms - 1) / cc->window_ms * cc->window_ms;
        else if (cc->window_ms > 0 && (cc->compact_span_ms < cc->window_ms ||
                                       cc->compact_span_ms % cc->window_ms != 0)) {
            char tp[CFG_PATH_MAX];
            cfg_path_join(tp, path, "compact_span");
            yaml_node_t *sn = cfg_mapping_get(ld, cn, "compact_span");
            cfg_ld_error(ld, sn != NULL ? sn : cn, tp,
                         "compact_span (%lldms) must be a whole number of windows (%lldms)",
                         (long long)cc->compact_span_ms, (long long)cc->window_ms);
        }
    }
}

/* ---- derived values ---------------------------------------------------------------------- */

void cfg_nats_auth(const struct cfg *c, struct st_bus_auth *out)
{
    *out = (struct st_bus_auth){.user = c->nats.user,
                                .password = c->nats.password,
                                .token = c->nats.token,
                                .creds_file = c->nats.creds_file,
                                .tls_ca = c->nats.tls_ca_file,
                                .tls_cert = c->nats.tls_cert_file,
                                .tls_key = c->nats.tls_key_file,
                                .tls_server_name = c->nats.tls_server_name};
}

int cfg_ingest_advertise_url(const struct cfg *c, uint16_t bound_port, char *out, size_t cap)
{
    int n;
    if (c->ingest.advertise_url != NULL) {
        n = snprintf(out, cap, "%s", c->ingest.advertise_url);
        return n >= 0 && (size_t)n < cap ? ST_OK : ST_ERANGE;
    }
    /* ingest.listen passed check_listen: "host:port" or "[v6]:port". */
    const char *l = c->ingest.listen, *colon = strrchr(l, ':');
    char host[256];
    size_t hl = (size_t)(colon - l);
    if (l[0] == '[') { /* drop the brackets; they are put back below */
        l++;
        hl -= 2;
    }
    if (hl >= sizeof(host))
        return ST_ERANGE;
    memcpy(host, l, hl);
    host[hl] = '\0';
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || hl == 0) {
        /* a wildcard is no address to give others: the machine's name is */
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
    }
    unsigned port = bound_port != 0 ? bound_port : (unsigned)strtoul(colon + 1, NULL, 10);
    bool v6 = strchr(host, ':') != NULL;
    n = snprintf(out, cap, "http://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
    return n >= 0 && (size_t)n < cap ? ST_OK : ST_ERANGE;
}

/* ---- the key list ------------------------------------------------------------------------ */

struct keys_acc {
    char **v;
    size_t n, cap;
    int rc;
};

static void keys_add(struct keys_acc *a, const char *path)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], path) == 0)
            return; /* "type" and "m" are in both index variants */
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        char **v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) {
            a->rc = ST_ENOMEM;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    if ((a->v[a->n] = strdup(path)) == NULL) {
        a->rc = ST_ENOMEM;
        return;
    }
    a->n++;
}

static void keys_walk(struct keys_acc *a, const char *prefix, const struct cfg_field *fields)
{
    for (const struct cfg_field *f = fields; f->key != NULL && a->rc == ST_OK; f++) {
        char p[CFG_PATH_MAX];
        cfg_path_join(p, prefix, f->key);
        if (f->type == CFG_F_SECTION) {
            keys_walk(a, p, f->sub);
            continue;
        }
        keys_add(a, p);
        if (f->type == CFG_F_CUSTOM && f->sub != NULL) {
            char q[CFG_PATH_MAX + 2];
            snprintf(q, sizeof(q), "%s%s", p, f->list ? "[]" : "");
            keys_walk(a, q, f->sub);
            if (f->sub_alt != NULL)
                keys_walk(a, q, f->sub_alt);
        }
    }
}

int cfg_keys(char ***out, size_t *n)
{
    struct keys_acc a = {0};
    keys_walk(&a, "", cfg_top_fields);
    if (a.rc != ST_OK) {
        cfg_keys_free(a.v, a.n);
        *out = NULL;
        *n = 0;
        return a.rc;
    }
    *out = a.v;
    *n = a.n;
    return ST_OK;
}

void cfg_keys_free(char **keys, size_t n)
{
    for (size_t i = 0; keys != NULL && i < n; i++)
        free(keys[i]);
    free(keys);
}

/* ---- --check-config ---------------------------------------------------------------------- */

int cfg_check_main(const char *path, FILE *ok_out, FILE *err_out)
{
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    int rc = cfg_load(path, &c, &errs);
    if (rc != ST_OK) {
        cfg_errors_print(&errs, err_out);
        if (errs.n == 0)
            fprintf(err_out, "%s:1:1: %s\n", path, st_strerror(rc));
        cfg_errors_clear(&errs);
        return 2;
    }
    fprintf(ok_out, "%s: configuration ok: node_id=%s collections=%zu", path, c->node_id,
            c->n_collections);
    for (size_t i = 0; i < c->n_collections; i++) {
        const struct cfg_collection *cc = &c->collections[i];
        fprintf(ok_out, " %s(dim=%u,%s,%s,topic=%s)", cc->name, cc->dim,
                cfg_metric_name(cc->metric), cfg_index_type_name(cc->index.type), cc->topic);
    }
    fprintf(ok_out, "\n");
    cfg_free(c);
    return 0;
}
