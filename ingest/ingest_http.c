/* strata-ingest's HTTP endpoints: probes, metrics, reads of its own data, segment files. */
#include "ingest_http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_distance.h"
#include "st_http.h"
#include "st_prom.h"
#include "store_search.h"

#define SEARCH_K_MAX 1000u

struct ingest_http {
    struct st_http *srv;
    char *node;
    const struct ingest_http_coll *colls;
    size_t n;
    struct ing_consumer *cons;
    _Atomic bool ready;
    struct st_hist search_hist;
};

static const struct ingest_http_coll *coll_find(const struct ingest_http *h, const char *name,
                                                size_t len)
{
    for (size_t i = 0; i < h->n; i++)
        if (strlen(h->colls[i].cfg->name) == len && memcmp(h->colls[i].cfg->name, name, len) == 0)
            return &h->colls[i];
    return NULL;
}

static bool is_u64(const struct ingest_http_coll *c)
{
    return c->cfg->id_type == CFG_ID_UINT64;
}

static json_t *id_json(const struct ingest_http_coll *c, const uint8_t *id, uint32_t len)
{
    if (is_u64(c) && len == 8) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | id[i];
        return json_integer((json_int_t)v);
    }
    return json_stringn((const char *)id, len);
}

/* Meta is stored as the producer's JSON text; anything else comes back as a string. */
static json_t *meta_json(const uint8_t *meta, uint32_t len)
{
    if (meta == NULL || len == 0)
        return json_object();
    json_t *j = json_loadb((const char *)meta, len, JSON_DECODE_ANY, NULL);
    return j != NULL ? j : json_stringn((const char *)meta, len);
}

static json_t *vec_json(const float *v, uint32_t dim)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < dim; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

static const char *state_name(enum twcs_state s)
{
    return s == TWCS_SEALED ? "sealed" : "open";
}

/* How many windows t has, and how many of them are open (0, 0 when they cannot be listed). */
static void window_counts(struct twcs *t, size_t *total, size_t *open)
{
    struct twcs_window_info *w = NULL;
    size_t n = 0;
    *total = *open = 0;
    if (twcs_windows(t, &w, &n) != ST_OK)
        return;
    for (size_t i = 0; i < n; i++)
        *open += w[i].state == TWCS_OPEN;
    *total = n;
    free(w);
}

/* ---- collections ------------------------------------------------------------------------- */

static json_t *index_json(const struct cfg_index *ix)
{
    if (ix->type == CFG_INDEX_HNSW)
        return json_pack("{s:s,s:I,s:I}", "type", "hnsw", "m", (json_int_t)ix->m, "ef_construction",
                         (json_int_t)ix->ef_construction);
    if (ix->type == CFG_INDEX_IVFPQ)
        return json_pack("{s:s,s:I,s:I,s:I}", "type", "ivfpq", "nlist", (json_int_t)ix->nlist, "m",
                         (json_int_t)ix->pq_m, "nbits", (json_int_t)ix->nbits);
    return json_pack("{s:s}", "type", "none");
}

static json_t *coll_json(const struct ingest_http_coll *c)
{
    const struct cfg_collection *cc = c->cfg;
    struct twcs_stats ts;
    twcs_stats(c->twcs, &ts);
    struct store_stats ss;
    store_stats(twcs_store(c->twcs), &ss);
    size_t nw, open;
    window_counts(c->twcs, &nw, &open);
    int64_t wm = twcs_watermark(c->twcs);
    json_t *stats = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "windows_open", (json_int_t)open, "windows_sealed",
        (json_int_t)(nw - open), "segments", (json_int_t)ss.segments, "segment_bytes",
        (json_int_t)ss.segment_bytes, "memtable_bytes", (json_int_t)ss.memtable_bytes,
        "memtable_records", (json_int_t)ss.memtable_records, "sealed", (json_int_t)ts.sealed,
        "expired_records", (json_int_t)ts.expired_records, "watermark",
        wm == INT64_MIN ? json_null() : json_integer(wm));
    json_t *o = json_pack(
        "{s:s,s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "name", cc->name, "dim",
        (json_int_t)cc->dim, "metric", cfg_metric_name(cc->metric), "id_type",
        is_u64(c) ? "uint64" : "string", "topic", cc->topic, "window_ms", (json_int_t)cc->window_ms,
        "grace_ms", (json_int_t)cc->grace_ms, "max_lateness_ms", (json_int_t)cc->max_lateness_ms,
        "ttl_ms", (json_int_t)cc->ttl_ms, "max_bytes", (json_int_t)cc->max_bytes, "index",
        index_json(&cc->index), "stats", stats);
    return o;
}

static void do_windows(const struct ingest_http_coll *c, struct st_http_resp *resp)
{
    struct twcs_window_info *w = NULL;
    size_t nw = 0;
    int rc = twcs_windows(c->twcs, &w, &nw);
    if (rc != ST_OK) {
        st_http_error(resp, 500, "internal", "listing windows: %s", st_strerror(rc));
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < nw; i++)
        json_array_append_new(
            a, json_pack("{s:I,s:I,s:s,s:I,s:I,s:I,s:I,s:s}", "start", (json_int_t)w[i].start,
                         "end", (json_int_t)w[i].end, "state", state_name(w[i].state), "version",
                         (json_int_t)w[i].version, "records", (json_int_t)w[i].records, "bytes",
                         (json_int_t)w[i].bytes, "segments", (json_int_t)w[i].segments, "index",
                         "none"));
    free(w);
    st_http_json(resp, 200, a);
}

/* ---- get by id ---------------------------------------------------------------------------- */

static int parse_id(const struct ingest_http_coll *c, const char *s, uint8_t *buf, uint32_t *len,
                    struct st_http_resp *resp)
{
    size_t n = strlen(s);
    if (is_u64(c)) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (n == 0 || *end != '\0' || errno != 0 || s[0] == '-' || s[0] == '+') {
            st_http_error(resp, 400, "invalid_argument",
                          "collection '%s' has uint64 ids: '%.64s' is not one", c->cfg->name, s);
            return ST_EINVAL;
        }
        for (int i = 7; i >= 0; i--, v >>= 8)
            buf[i] = (uint8_t)v;
        *len = 8;
        return ST_OK;
    }
    if (n == 0 || n > STORE_ID_MAX) {
        st_http_error(resp, 400, "invalid_argument", "an id has 1..%u bytes; this one has %zu",
                      STORE_ID_MAX, n);
        return ST_EINVAL;
    }
    memcpy(buf, s, n);
    *len = (uint32_t)n;
    return ST_OK;
}

static void do_record(const struct ingest_http_coll *c, const char *ids, struct st_http_resp *resp)
{
    uint8_t id[STORE_ID_MAX];
    uint32_t len;
    if (parse_id(c, ids, id, &len, resp) != ST_OK)
        return;
    float *vec = malloc(c->cfg->dim * sizeof(float));
    if (vec == NULL) {
        st_http_error(resp, 500, "internal", "out of memory");
        return;
    }
    struct store_value v = {.vec = vec};
    int rc = store_get(twcs_store(c->twcs), id, len, &v);
    if (rc == ST_ENOTFOUND)
        st_http_error(resp, 404, "not_found", "no record '%s' in collection '%s'", ids,
                      c->cfg->name);
    else if (rc != ST_OK)
        st_http_error(resp, 500, "internal", "reading '%s': %s", ids, st_strerror(rc));
    else
        st_http_json(resp, 200,
                     json_pack("{s:o,s:I,s:o,s:o,s:{s:I,s:I},s:I,s:I}", "id", id_json(c, id, len),
                               "ts", (json_int_t)v.ts, "vector", vec_json(vec, c->cfg->dim), "meta",
                               meta_json(v.meta, v.meta_len), "window", "start",
                               (json_int_t)v.window, "end", (json_int_t)v.window_end, "partition",
                               (json_int_t)v.partition, "offset", (json_int_t)v.offset));
    free(v.meta);
    free(vec);
}

/* ---- search ------------------------------------------------------------------------------- */

static bool get_i64(json_t *b, const char *key, int64_t *out, struct st_http_resp *resp)
{
    json_t *v = json_object_get(b, key);
    if (v == NULL)
        return true;
    if (!json_is_integer(v)) {
        st_http_error(resp, 400, "invalid_argument", "'%s' must be an integer", key);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

static bool get_bool(json_t *b, const char *key, bool *out, struct st_http_resp *resp)
{
    json_t *v = json_object_get(b, key);
    if (v == NULL)
        return true;
    if (!json_is_boolean(v)) {
        st_http_error(resp, 400, "invalid_argument", "'%s' must be true or false", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

static bool parse_indexed(json_t *b, struct store_window_ver **out, size_t *n,
                          struct st_http_resp *resp)
{
    json_t *a = json_object_get(b, "indexed");
    *out = NULL;
    *n = 0;
    if (a == NULL)
        return true;
    if (!json_is_array(a)) {
        st_http_error(resp, 400, "invalid_argument",
                      "'indexed' must be an array of {\"start\": ms, \"version\": n}");
        return false;
    }
    *out = calloc(json_array_size(a) + 1, sizeof(**out));
    if (*out == NULL) {
        st_http_error(resp, 500, "internal", "out of memory");
        return false;
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        json_t *s = json_object_get(e, "start"), *v = json_object_get(e, "version");
        if (!json_is_integer(s) || !json_is_integer(v) || json_integer_value(v) < 0) {
            st_http_error(resp, 400, "invalid_argument",
                          "indexed[%zu] must be {\"start\": ms, \"version\": n}", i);
            free(*out);
            *out = NULL;
            return false;
        }
        (*out)[(*n)++] =
            (struct store_window_ver){json_integer_value(s), (uint32_t)json_integer_value(v)};
    }
    return true;
}

static void do_search(struct ingest_http *h, const struct ingest_http_coll *c,
                      const struct st_http_req *req, struct st_http_resp *resp)
{
    int64_t t0 = st_clock_mono_ns(NULL);
    json_error_t je;
    json_t *b = json_loadb((const char *)req->body, req->body_len, 0, &je);
    if (b == NULL || !json_is_object(b)) {
        if (b == NULL)
            st_http_error(resp, 400, "invalid_argument",
                          "body is not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        else
            st_http_error(resp, 400, "invalid_argument", "body must be a JSON object");
        json_decref(b);
        return;
    }
    static const char *const known[] = {"vector",         "k",       "from_ts", "to_ts",
                                        "consistency",    "ef",      "nprobe",  "include_meta",
                                        "include_vector", "indexed", NULL};
    const char *key;
    json_t *val;
    float *vec = NULL;
    struct store_window_ver *indexed = NULL;
    size_t n_indexed = 0;
    json_object_foreach(b, key, val)
    {
        size_t i = 0;
        while (known[i] != NULL && strcmp(known[i], key) != 0)
            i++;
        if (known[i] == NULL) {
            st_http_error(resp, 400, "invalid_argument", "unknown field '%s'", key);
            goto out;
        }
    }
    uint32_t dim = c->cfg->dim;
    json_t *jv = json_object_get(b, "vector");
    if (!json_is_array(jv)) {
        st_http_error(resp, 400, "invalid_argument",
                      "'vector' (an array of %u numbers) is required", dim);
        goto out;
    }
    if (json_array_size(jv) != dim) {
        st_http_error(resp, 400, "invalid_argument", "vector has %zu dims; collection '%s' has %u",
                      json_array_size(jv), c->cfg->name, dim);
        goto out;
    }
    vec = malloc(dim * sizeof(float));
    if (vec == NULL) {
        st_http_error(resp, 500, "internal", "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < dim; i++) {
        json_t *x = json_array_get(jv, i);
        double d = json_number_value(x);
        if (!json_is_number(x) || !isfinite(d) || !isfinite((float)d)) {
            st_http_error(resp, 400, "invalid_argument", "vector[%u] is not a finite number", i);
            goto out;
        }
        vec[i] = (float)d;
    }
    int64_t k = 10, from = INT64_MIN, to = INT64_MAX, ef = 0, nprobe = 0;
    bool with_meta = true, with_vec = false;
    if (!get_i64(b, "k", &k, resp) || !get_i64(b, "from_ts", &from, resp) ||
        !get_i64(b, "to_ts", &to, resp) || !get_i64(b, "ef", &ef, resp) ||
        !get_i64(b, "nprobe", &nprobe, resp) || !get_bool(b, "include_meta", &with_meta, resp) ||
        !get_bool(b, "include_vector", &with_vec, resp))
        goto out;
    if (k < 1 || k > SEARCH_K_MAX) {
        st_http_error(resp, 400, "invalid_argument", "k must be 1..%u, not %" PRId64, SEARCH_K_MAX,
                      k);
        goto out;
    }
    if (from > to) {
        st_http_error(resp, 400, "invalid_argument",
                      "from_ts (%" PRId64 ") is after to_ts (%" PRId64 ")", from, to);
        goto out;
    }
    json_t *cons = json_object_get(b, "consistency");
    if (cons != NULL &&
        (!json_is_string(cons) || (strcmp(json_string_value(cons), "strong") != 0 &&
                                   strcmp(json_string_value(cons), "indexed") != 0))) {
        st_http_error(resp, 400, "invalid_argument", "consistency is \"strong\" or \"indexed\"");
        goto out;
    }
    if (cons != NULL && strcmp(json_string_value(cons), "indexed") == 0) {
        st_http_error(resp, 400, "invalid_argument",
                      "ingest holds no indexes: ask an indexer for consistency \"indexed\"");
        goto out;
    }
    if (!parse_indexed(b, &indexed, &n_indexed, resp))
        goto out;
    enum st_metric m = c->cfg->metric == CFG_METRIC_L2   ? ST_METRIC_L2
                       : c->cfg->metric == CFG_METRIC_IP ? ST_METRIC_IP
                                                         : ST_METRIC_COSINE;
    if (m == ST_METRIC_COSINE) {
        double sq = 0;
        for (uint32_t i = 0; i < dim; i++)
            sq += (double)vec[i] * vec[i];
        if (sq == 0) {
            st_http_error(resp, 400, "invalid_argument",
                          "a zero vector has no direction: collection '%s' uses cosine",
                          c->cfg->name);
            goto out;
        }
        st_normalize(vec, dim);
    }
    struct store_search_query q = {.vec = vec,
                                   .dim = dim,
                                   .metric = m,
                                   .k = (uint32_t)k,
                                   .from_ts = from,
                                   .to_ts = to,
                                   .indexed = indexed,
                                   .n_indexed = n_indexed,
                                   .with_meta = with_meta,
                                   .with_vector = with_vec};
    struct store_search_result res;
    int rc = store_search(twcs_store(c->twcs), &q, &res);
    if (rc != ST_OK) {
        st_http_error(resp, 500, "internal", "search: %s", st_strerror(rc));
        goto out;
    }
    json_t *hits = json_array();
    for (size_t i = 0; i < res.n; i++) {
        const struct store_search_hit *x = &res.hits[i];
        double dist = m == ST_METRIC_COSINE ? 1.0 + x->dist : x->dist;
        json_t *o = json_pack("{s:o,s:f,s:I}", "id", id_json(c, x->id, x->id_len), "distance", dist,
                              "ts", (json_int_t)x->ts);
        if (with_meta)
            json_object_set_new(o, "meta", meta_json(x->meta, x->meta_len));
        if (with_vec)
            json_object_set_new(o, "vector", vec_json(x->vec, dim));
        json_array_append_new(hits, o);
    }
    double took = (double)(st_clock_mono_ns(NULL) - t0) / 1e9;
    st_hist_observe(&h->search_hist, took);
    st_http_json(resp, 200,
                 json_pack("{s:o,s:I,s:I,s:I,s:f}", "hits", hits, "windows_searched",
                           (json_int_t)res.windows, "segments_searched", (json_int_t)res.segments,
                           "fresh_records_scanned", (json_int_t)res.scanned, "took_ms",
                           took * 1e3));
    store_search_result_free(&res);
out:
    free(indexed);
    free(vec);
    json_decref(b);
}

/* ---- segment files ------------------------------------------------------------------------ */

static void do_segment(const struct ingest_http_coll *c, const char *file,
                       struct st_http_resp *resp)
{
    uint64_t num = 0;
    size_t nd = 0;
    while (file[nd] >= '0' && file[nd] <= '9' && nd < 19)
        num = num * 10 + (uint64_t)(file[nd++] - '0');
    if (nd < 6 || strcmp(file + nd, ".seg") != 0) {
        st_http_error(resp, 404, "not_found", "'%s' is not a segment file name (NNNNNN.seg)", file);
        return;
    }
    struct store_snapshot *snap;
    int rc = store_snapshot_acquire(twcs_store(c->twcs), &snap);
    if (rc != ST_OK) {
        st_http_error(resp, 500, "internal", "snapshot: %s", st_strerror(rc));
        return;
    }
    struct store_segment_info info = {0};
    bool found = false;
    for (size_t i = 0; i < store_snapshot_count(snap) && !found; i++) {
        store_segment_info(store_snapshot_segment(snap, i), &info);
        found = info.file_number == num && info.kind == STORE_SEG_SEALED;
    }
    int fd = -1;
    struct stat st;
    int e = 0;
    if (found) {
        /* Open while the snapshot pins the file: the descriptor keeps it readable even if a
         * re-seal or a drop removes it before the transfer ends. */
        fd = open(info.path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0)
            e = errno;
    }
    store_snapshot_release(snap);
    if (!found) {
        st_http_error(resp, 404, "not_found",
                      "segment %s of '%s' is not a live sealed segment (superseded by a re-seal, "
                      "expired, or never existed)",
                      file, c->cfg->name);
        return;
    }
    if (e != 0) {
        if (fd >= 0)
            close(fd);
        st_http_error(resp, 500, "internal", "opening %s: %s", file, strerror(e));
        return;
    }
    resp->status = 200;
    resp->content_type = "application/vnd.strata.segment";
    resp->fd = fd;
    resp->fd_len = (uint64_t)st.st_size;
    st_http_resp_header(resp, "X-Strata-Checksum", "%" PRIu32, info.checksum);
    st_http_resp_header(resp, "X-Strata-Window", "%" PRId64 "-%" PRId64, info.window_start,
                        info.window_end);
    st_http_resp_header(resp, "X-Strata-Version", "%" PRIu32, info.version);
    st_http_resp_header(resp, "X-Strata-Records", "%" PRIu64, info.count);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void metrics_text(struct ingest_http *h, struct st_text *t)
{
    struct ing_metrics im = {0};
    bool have = ing_consumer_metrics(h->cons, &im) == ST_OK;

    st_prom_head(t, "strata_ingest_records_total", "counter", "Records applied to the store.");
    for (size_t i = 0; have && i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_ingest_records_total", l, (double)im.coll_records[i]);
    }
    st_prom_head(t, "strata_ingest_rejected_total", "counter",
                 "Messages sent to the dead-letter topic, by reason.");
    for (size_t i = 0; have && i < im.nrej; i++) {
        const char *l[] = {"collection",
                           im.rej[i].coll < h->n ? h->colls[im.rej[i].coll].cfg->name : "",
                           "reason", im.rej[i].reason, NULL};
        st_prom_sample(t, "strata_ingest_rejected_total", l, (double)im.rej[i].n);
    }
    struct {
        const char *name, *help;
        uint64_t v;
    } tot[] = {
        {"strata_ingest_messages_total", "Kafka messages handled.", im.total.messages},
        {"strata_ingest_duplicates_total", "Redelivered messages skipped as already applied.",
         im.total.duplicates},
        {"strata_ingest_backpressure_total", "Messages paused and retried (store full).",
         im.total.retries},
        {"strata_ingest_commits_total", "Offset commit rounds (each after an fsync).",
         im.total.commits},
    };
    for (size_t i = 0; have && i < sizeof(tot) / sizeof(tot[0]); i++) {
        st_prom_head(t, tot[i].name, "counter", tot[i].help);
        st_prom_sample(t, tot[i].name, NULL, (double)tot[i].v);
    }
    st_prom_head(t, "strata_kafka_consumer_lag", "gauge",
                 "High watermark minus position, per assigned partition.");
    for (size_t i = 0; have && i < im.nlag; i++) {
        char part[16];
        snprintf(part, sizeof(part), "%" PRId32, im.lag[i].partition);
        const char *l[] = {"topic", im.lag[i].topic, "partition", part, NULL};
        st_prom_sample(t, "strata_kafka_consumer_lag", l, (double)im.lag[i].lag);
    }
    ing_metrics_free(&im);

    st_prom_head(t, "strata_wal_sync_seconds", "histogram", "WAL group-commit fsync latency.");
    for (size_t i = 0; i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_hist(t, "strata_wal_sync_seconds", l,
                     store_wal_sync_seconds(twcs_store(h->colls[i].twcs)));
    }
    uint32_t merging = 0;
    st_prom_head(t, "strata_memtable_size_bytes", "gauge", "Bytes held in memtables.");
    for (size_t i = 0; i < h->n; i++) {
        struct store_stats ss;
        store_stats(twcs_store(h->colls[i].twcs), &ss);
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_memtable_size_bytes", l, (double)ss.memtable_bytes);
    }
    st_prom_head(t, "strata_segments_total", "gauge", "Live segment files by state.");
    for (size_t i = 0; i < h->n; i++) {
        uint64_t kinds[3] = {0};
        struct store_snapshot *snap;
        if (store_snapshot_acquire(twcs_store(h->colls[i].twcs), &snap) == ST_OK) {
            for (size_t j = 0; j < store_snapshot_count(snap); j++) {
                struct store_segment_info si;
                store_segment_info(store_snapshot_segment(snap, j), &si);
                if ((unsigned)si.kind < 3)
                    kinds[si.kind]++;
            }
            store_snapshot_release(snap);
        }
        static const char *const kn[3] = {"run", "sealed", "delta"};
        for (int k = 0; k < 3; k++) {
            const char *l[] = {"collection", h->colls[i].cfg->name, "state", kn[k], NULL};
            st_prom_sample(t, "strata_segments_total", l, (double)kinds[k]);
        }
    }
    st_prom_head(t, "strata_windows", "gauge", "Windows by state.");
    for (size_t i = 0; i < h->n; i++) {
        size_t nw, open;
        window_counts(h->colls[i].twcs, &nw, &open);
        const char *lo[] = {"collection", h->colls[i].cfg->name, "state", "open", NULL};
        const char *ls[] = {"collection", h->colls[i].cfg->name, "state", "sealed", NULL};
        st_prom_sample(t, "strata_windows", lo, (double)open);
        st_prom_sample(t, "strata_windows", ls, (double)(nw - open));
    }
    struct twcs_stats *ts = calloc(h->n ? h->n : 1, sizeof(*ts));
    for (size_t i = 0; ts != NULL && i < h->n; i++) {
        twcs_stats(h->colls[i].twcs, &ts[i]);
        merging += ts[i].merging;
    }
    st_prom_head(t, "strata_compaction_running", "gauge", "Merges (seals, run merges) running.");
    st_prom_sample(t, "strata_compaction_running", NULL, merging);
    st_prom_head(t, "strata_compaction_bytes_written_total", "counter",
                 "Segment bytes written by merges and seals.");
    for (size_t i = 0; ts != NULL && i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_compaction_bytes_written_total", l,
                       (double)ts[i].compaction_bytes);
    }
    st_prom_head(t, "strata_write_amplification_ratio", "gauge",
                 "Bytes written (WAL + segments) per byte ingested.");
    for (size_t i = 0; ts != NULL && i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_write_amplification_ratio", l,
                       ts[i].bytes_ingested
                           ? (double)ts[i].bytes_written / (double)ts[i].bytes_ingested
                           : 0.0);
    }
    st_prom_head(t, "strata_windows_dropped_total", "counter", "Whole windows removed.");
    for (size_t i = 0; ts != NULL && i < h->n; i++) {
        const char *lt[] = {"collection", h->colls[i].cfg->name, "reason", "ttl", NULL};
        const char *lf[] = {"collection", h->colls[i].cfg->name, "reason", "fifo", NULL};
        st_prom_sample(t, "strata_windows_dropped_total", lt, (double)ts[i].dropped_ttl);
        st_prom_sample(t, "strata_windows_dropped_total", lf, (double)ts[i].dropped_fifo);
    }
    st_prom_head(t, "strata_expired_records_total", "counter",
                 "Records dropped on arrival as older than the TTL.");
    for (size_t i = 0; ts != NULL && i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_expired_records_total", l, (double)ts[i].expired_records);
    }
    free(ts);
    st_prom_head(t, "strata_freshness_seconds", "histogram",
                 "Window end to the stage (sealed: its event stored by JetStream).");
    for (size_t i = 0; i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, "stage", "sealed", NULL};
        st_prom_hist(t, "strata_freshness_seconds", l, outbox_pub_freshness(h->colls[i].pub));
    }
    st_prom_head(t, "strata_outbox_pending", "gauge", "Window events not yet stored by NATS.");
    for (size_t i = 0; i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_outbox_pending", l, (double)outbox_pub_pending(h->colls[i].pub));
    }
    st_prom_head(t, "strata_search_seconds", "histogram", "Search latency (exact fresh scans).");
    st_prom_hist(t, "strata_search_seconds", NULL, &h->search_hist);
}

/* ---- routing ------------------------------------------------------------------------------ */

static bool readiness(struct ingest_http *h, char *why, size_t cap)
{
    if (!atomic_load(&h->ready)) {
        snprintf(why, cap, "starting: collections not open yet");
        return false;
    }
    if (ing_consumer_ping(h->cons, 1000) != ST_OK) {
        snprintf(why, cap, "kafka: no broker answered within 1 s");
        return false;
    }
    for (size_t i = 0; i < h->n; i++)
        if (!outbox_pub_connected(h->colls[i].pub)) {
            snprintf(why, cap, "nats: not connected (events for '%s' wait in the outbox)",
                     h->colls[i].cfg->name);
            return false;
        }
    return true;
}

static void handle(void *ctx, const struct st_http_req *req, struct st_http_resp *resp)
{
    struct ingest_http *h = ctx;
    const char *p = req->path;
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    bool post = strcmp(req->method, "POST") == 0;
    if (strcmp(p, "/healthz") == 0 && get) {
        st_http_json(resp, 200, json_pack("{s:s,s:s}", "status", "ok", "node", h->node));
        return;
    }
    if (strcmp(p, "/readyz") == 0 && get) {
        char why[256];
        if (readiness(h, why, sizeof(why)))
            st_http_json(resp, 200, json_pack("{s:b,s:s}", "ready", 1, "node", h->node));
        else
            st_http_error(resp, 503, "not_ready", "%s", why);
        return;
    }
    if (!atomic_load(&h->ready)) {
        st_http_error(resp, 503, "not_ready", "starting: collections not open yet");
        return;
    }
    if (strcmp(p, "/metrics") == 0 && get) {
        struct st_text t = {0};
        metrics_text(h, &t);
        if (t.oom)
            st_http_error(resp, 500, "internal", "out of memory");
        else
            st_http_text(resp, 200, "text/plain; version=0.0.4", t.p ? t.p : "", t.len);
        st_text_free(&t);
        return;
    }
    static const char segs[] = "/v1/segments/", colls[] = "/v1/collections";
    if (strncmp(p, segs, sizeof(segs) - 1) == 0 && get) {
        const char *name = p + sizeof(segs) - 1, *slash = strchr(name, '/');
        const struct ingest_http_coll *c =
            slash != NULL ? coll_find(h, name, (size_t)(slash - name)) : NULL;
        if (c == NULL)
            st_http_error(resp, 404, "not_found", "no collection in '%s'", p);
        else
            do_segment(c, slash + 1, resp);
        return;
    }
    if (strcmp(p, colls) == 0 && get) {
        json_t *a = json_array();
        for (size_t i = 0; i < h->n; i++)
            json_array_append_new(a, coll_json(&h->colls[i]));
        st_http_json(resp, 200, json_pack("{s:o}", "collections", a));
        return;
    }
    if (strncmp(p, colls, sizeof(colls) - 1) == 0 && p[sizeof(colls) - 1] == '/') {
        const char *name = p + sizeof(colls), *slash = strchr(name, '/');
        size_t nl = slash != NULL ? (size_t)(slash - name) : strlen(name);
        const struct ingest_http_coll *c = coll_find(h, name, nl);
        if (c == NULL) {
            st_http_error(resp, 404, "not_found", "no collection '%.*s'", (int)nl, name);
            return;
        }
        const char *rest = slash != NULL ? slash : "";
        if (rest[0] == '\0' && get) {
            st_http_json(resp, 200, coll_json(c));
            return;
        }
        if (strcmp(rest, "/windows") == 0 && get) {
            do_windows(c, resp);
            return;
        }
        if (strncmp(rest, "/records/", 9) == 0 && get) {
            do_record(c, rest + 9, resp);
            return;
        }
        if (strcmp(rest, "/search") == 0 && post) {
            do_search(h, c, req, resp);
            return;
        }
        if (strcmp(rest, "/search") == 0) {
            st_http_error(resp, 405, "method_not_allowed", "search is POST");
            st_http_resp_header(resp, "Allow", "POST");
            return;
        }
    }
    st_http_error(resp, 404, "not_found", "no route for %s %s", req->method, p);
}

int ingest_http_start(const struct ingest_http_opts *o, struct ingest_http **out,
                      struct st_err *err)
{
    *out = NULL;
    struct ingest_http *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->node = strdup(o->node_id)) == NULL) {
        free(h);
        return ST_ENOMEM;
    }
    st_hist_init(&h->search_hist, &st_hist_latency);
    static const char *const open_paths[] = {"/healthz", "/readyz", "/metrics", NULL};
    struct st_http_opts ho = {.listen = o->listen,
                              .max_body = o->max_body,
                              .auth_token_file = o->auth_token_file,
                              .open_paths = open_paths,
                              .threads = 2,
                              .handler = handle,
                              .ctx = h};
    int rc = st_http_start(&ho, &h->srv, err);
    if (rc != ST_OK) {
        free(h->node);
        free(h);
        return rc;
    }
    *out = h;
    return ST_OK;
}

uint16_t ingest_http_port(const struct ingest_http *h)
{
    return st_http_port(h->srv);
}

void ingest_http_ready(struct ingest_http *h, const struct ingest_http_coll *colls, size_t n,
                       struct ing_consumer *c)
{
    h->colls = colls;
    h->n = n;
    h->cons = c;
    atomic_store(&h->ready, true);
}

void ingest_http_stop(struct ingest_http *h)
{
    if (h == NULL)
        return;
    st_http_stop(h->srv);
    free(h->node);
    free(h);
}
