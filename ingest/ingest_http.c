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

#include "cfg_json.h"
#include "st_api.h"
#include "st_clock.h"
#include "st_distance.h"
#include "st_http.h"
#include "st_prom.h"
#include "store_search.h"

_Static_assert(ST_API_ID_MAX == STORE_ID_MAX, "ids: the API and the store agree on the limit");

struct ingest_http {
    struct st_http *srv;
    char *node;
    const struct ingest_http_coll *colls;
    size_t n;
    struct ing_consumer *cons;
    _Atomic bool ready;
    struct st_hist search_hist;
    /* Per collection (index as in colls): records a strong search read, and records it
     * skipped unread because their segment or memtable chunk lay outside its time range. */
    struct search_counts {
        _Atomic uint64_t scanned, pruned;
    } * counts;
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
    return st_api_id_json(is_u64(c), id, len);
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
    json_t *o = cfg_collection_json(cc, stats);
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

/* ?deleted=true (what an indexer asks): a delete as the newest version is answered as
 * {"id", "deleted": true, "ts", "partition", "offset"} instead of 404, so the newest version
 * across nodes can be found. */
static void do_record(const struct ingest_http_coll *c, const char *ids,
                      const struct st_http_req *req, struct st_http_resp *resp)
{
    const char *dq = st_http_query(req, "deleted");
    bool deletes = dq != NULL && strcmp(dq, "true") == 0;
    uint8_t id[ST_API_ID_MAX];
    uint32_t len;
    if (!st_api_parse_id(is_u64(c), c->cfg->name, ids, id, &len, resp))
        return;
    float *vec = malloc(c->cfg->dim * sizeof(float));
    if (vec == NULL) {
        st_http_error(resp, 500, "internal", "out of memory");
        return;
    }
    struct store_value v = {.vec = vec};
    int rc = deletes ? store_get_version(twcs_store(c->twcs), id, len, &v)
                     : store_get(twcs_store(c->twcs), id, len, &v);
    if (rc == ST_OK && v.op == STORE_OP_DELETE)
        st_http_json(resp, 200,
                     json_pack("{s:o,s:b,s:I,s:I,s:I}", "id", id_json(c, id, len), "deleted", 1,
                               "ts", (json_int_t)v.ts, "partition", (json_int_t)v.partition,
                               "offset", (json_int_t)v.offset));
    else if (rc == ST_ENOTFOUND)
        st_http_error(resp, 404, "not_found", "no record '%s' in collection '%s'", ids,
                      c->cfg->name);
    else if (rc != ST_OK)
        st_http_error(resp, 500, "internal", "reading '%s': %s", ids, st_strerror(rc));
    else
        st_http_json(resp, 200,
                     json_pack("{s:o,s:I,s:o,s:o,s:{s:I,s:I},s:I,s:I}", "id", id_json(c, id, len),
                               "ts", (json_int_t)v.ts, "vector", st_api_vec_json(vec, c->cfg->dim),
                               "meta", st_api_meta_json(v.meta, v.meta_len), "window", "start",
                               (json_int_t)v.window, "end", (json_int_t)v.window_end, "partition",
                               (json_int_t)v.partition, "offset", (json_int_t)v.offset));
    free(v.meta);
    free(vec);
}

/* ---- search ------------------------------------------------------------------------------- */

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

#define CHECK_MAX 10000

/*
 * "check": [{"id", "ts", "partition", "offset", "idx"}, ...] — versions an indexer found in its
 * indexes; answers the ids whose newest version on this node is newer or a delete, so that a
 * strong search never returns a version this node has superseded. NULL with a 400 on bad input.
 */
static json_t *check_versions(const struct ingest_http_coll *c, json_t *a,
                              struct st_http_resp *resp)
{
    if (!json_is_array(a) || json_array_size(a) > CHECK_MAX) {
        st_http_error(resp, 400, "invalid_argument",
                      "'check' must be an array of at most %d {\"id\", \"ts\", \"partition\", "
                      "\"offset\", \"idx\"}",
                      CHECK_MAX);
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        uint8_t id[ST_API_ID_MAX];
        uint32_t len;
        json_t *ts = json_object_get(e, "ts"), *pa = json_object_get(e, "partition"),
               *of = json_object_get(e, "offset"), *ix = json_object_get(e, "idx");
        if (!st_api_json_id(is_u64(c), json_object_get(e, "id"), id, &len) ||
            !json_is_integer(ts) || !json_is_integer(pa) || !json_is_integer(of) ||
            (ix != NULL && !json_is_integer(ix))) {
            st_http_error(resp, 400, "invalid_argument",
                          "check[%zu] must be {\"id\", \"ts\", \"partition\", \"offset\"[, "
                          "\"idx\"]}",
                          i);
            json_decref(out);
            return NULL;
        }
        struct store_value v = {0};
        int rc = store_get_version(twcs_store(c->twcs), id, len, &v);
        free(v.meta);
        if (rc == ST_ENOTFOUND)
            continue;
        if (rc != ST_OK) {
            st_http_error(resp, 500, "internal", "check[%zu]: %s", i, st_strerror(rc));
            json_decref(out);
            return NULL;
        }
        int64_t gts = json_integer_value(ts), gof = json_integer_value(of);
        int64_t gpa = json_integer_value(pa), gix = ix != NULL ? json_integer_value(ix) : 0;
        bool newer = v.ts != gts          ? v.ts > gts
                     : v.partition != gpa ? v.partition > gpa
                     : v.offset != gof    ? v.offset > gof
                                          : (int64_t)v.idx > gix;
        if (newer) /* a newer upsert, or a newer delete */
            json_array_append_new(out, id_json(c, id, len));
    }
    return out;
}

static void do_search(struct ingest_http *h, const struct ingest_http_coll *c,
                      const struct st_http_req *req, struct st_http_resp *resp)
{
    int64_t t0 = st_clock_mono_ns(NULL);
    static const char *const extra[] = {"indexed", "check", "check_only", NULL};
    enum st_metric m = c->cfg->metric == CFG_METRIC_L2   ? ST_METRIC_L2
                       : c->cfg->metric == CFG_METRIC_IP ? ST_METRIC_IP
                                                         : ST_METRIC_COSINE;
    uint32_t dim = c->cfg->dim;
    struct st_api_search sq;
    if (!st_api_search_parse(req, c->cfg->name, dim, m == ST_METRIC_COSINE, extra, &sq, resp))
        return;
    json_t *b = sq.body;
    struct store_window_ver *indexed = NULL;
    size_t n_indexed = 0;
    if (!sq.strong) {
        st_http_error(resp, 400, "invalid_argument",
                      "ingest holds no indexes: ask an indexer for consistency \"indexed\"");
        goto out;
    }
    if (!parse_indexed(b, &indexed, &n_indexed, resp))
        goto out;
    json_t *superseded = NULL;
    if (json_object_get(b, "check") != NULL &&
        (superseded = check_versions(c, json_object_get(b, "check"), resp)) == NULL)
        goto out;
    if (json_is_true(json_object_get(b, "check_only"))) { /* versions only, no scan */
        st_http_json(resp, 200,
                     json_pack("{s:o,s:o}", "hits", json_array(), "superseded",
                               superseded != NULL ? superseded : json_array()));
        goto out;
    }
    struct store_search_query q = {.vec = sq.vec,
                                   .dim = dim,
                                   .metric = m,
                                   .k = sq.k,
                                   .from_ts = sq.from_ts,
                                   .to_ts = sq.to_ts,
                                   .indexed = indexed,
                                   .n_indexed = n_indexed,
                                   .with_meta = sq.with_meta,
                                   .with_vector = sq.with_vec};
    struct store_search_result res;
    int rc = store_search(twcs_store(c->twcs), &q, &res);
    if (rc != ST_OK) {
        json_decref(superseded);
        st_http_error(resp, 500, "internal", "search: %s", st_strerror(rc));
        goto out;
    }
    json_t *hits = json_array();
    for (size_t i = 0; i < res.n; i++) {
        const struct store_search_hit *x = &res.hits[i];
        double dist = m == ST_METRIC_COSINE ? 1.0 + x->dist : x->dist;
        json_t *o =
            json_pack("{s:o,s:f,s:I,s:I,s:I,s:I}", "id", id_json(c, x->id, x->id_len), "distance",
                      dist, "ts", (json_int_t)x->ts, "partition", (json_int_t)x->partition,
                      "offset", (json_int_t)x->offset, "idx", (json_int_t)x->idx);
        if (sq.with_meta)
            json_object_set_new(o, "meta", st_api_meta_json(x->meta, x->meta_len));
        if (sq.with_vec)
            json_object_set_new(o, "vector", st_api_vec_json(x->vec, dim));
        json_array_append_new(hits, o);
    }
    double took = (double)(st_clock_mono_ns(NULL) - t0) / 1e9;
    st_hist_observe(&h->search_hist, took);
    struct search_counts *sc = &h->counts[c - h->colls];
    atomic_fetch_add_explicit(&sc->scanned, res.scanned, memory_order_relaxed);
    atomic_fetch_add_explicit(&sc->pruned, res.pruned, memory_order_relaxed);
    json_t *body = json_pack("{s:o,s:I,s:I,s:I,s:I,s:f}", "hits", hits, "windows_searched",
                             (json_int_t)res.windows, "segments_searched", (json_int_t)res.segments,
                             "fresh_records_scanned", (json_int_t)res.scanned,
                             "fresh_records_pruned", (json_int_t)res.pruned, "took_ms", took * 1e3);
    if (superseded != NULL && body != NULL)
        json_object_set_new(body, "superseded", superseded);
    else
        json_decref(superseded);
    st_http_json(resp, 200, body);
    store_search_result_free(&res);
out:
    free(indexed);
    st_api_search_free(&sq);
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
        double v;
    } tot[] = {
        {"strata_ingest_messages_total", "Kafka messages handled.", (double)im.total.messages},
        {"strata_ingest_duplicates_total", "Redelivered messages skipped as already applied.",
         (double)im.total.duplicates},
        {"strata_ingest_backpressure_total",
         "Partitions paused for back-pressure (store full for longer than the in-place wait).",
         (double)im.total.retries},
        {"strata_ingest_backpressure_waits_total",
         "Writes that waited in place for the store to take them (a flush, a FIFO drop).",
         (double)im.total.holds},
        {"strata_ingest_backpressure_wait_seconds_total",
         "Time the consumer spent waiting in place for back-pressure.",
         (double)im.total.held_ms / 1000.0},
        {"strata_ingest_commits_total", "Offset commit rounds (each after an fsync).",
         (double)im.total.commits},
    };
    for (size_t i = 0; have && i < sizeof(tot) / sizeof(tot[0]); i++) {
        st_prom_head(t, tot[i].name, "counter", tot[i].help);
        st_prom_sample(t, tot[i].name, NULL, tot[i].v);
    }
    /* Where the polling thread's time goes: a consumer that spends its time in librdkafka
     * with lag on its partitions is waiting for fetches (docs/operations.md, "Capacity"). */
    st_prom_head(t, "strata_ingest_poll_seconds_total", "counter",
                 "The consumer's polling thread: seconds in librdkafka's poll, waiting for the "
                 "decode stage, writing to the store, committing offsets.");
    const struct {
        const char *what;
        uint64_t ns;
    } poll[] = {{"kafka", im.total.kafka_ns},
                {"decode_wait", im.total.decode_wait_ns},
                {"write", im.total.write_ns},
                {"commit", im.total.commit_ns}};
    for (size_t i = 0; have && i < sizeof(poll) / sizeof(poll[0]); i++) {
        const char *l[] = {"activity", poll[i].what, NULL};
        st_prom_sample(t, "strata_ingest_poll_seconds_total", l, (double)poll[i].ns / 1e9);
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
    /* One store_stats per collection for every store series below (the write waits too). */
    static const char *const store_series[3][3] = {
        {"strata_memtable_size_bytes", "gauge", "Bytes held in memtables."},
        {"strata_store_reclaim_pending_bytes", "gauge",
         "Bytes of dropped or merged files not freed yet (the reclaimer thread)."},
        {"strata_store_seal_read_bytes_total", "counter",
         "Vector-log bytes read back at seals to checksum their blocks."},
    };
    struct store_stats *sst = calloc(h->n ? h->n : 1, sizeof(*sst));
    for (size_t i = 0; sst != NULL && i < h->n; i++)
        store_stats(twcs_store(h->colls[i].twcs), &sst[i]);
    for (size_t k = 0; sst != NULL && k < 3; k++) {
        st_prom_head(t, store_series[k][0], store_series[k][1], store_series[k][2]);
        for (size_t i = 0; i < h->n; i++) {
            const uint64_t v[3] = {sst[i].memtable_bytes, sst[i].reclaim_bytes,
                                   sst[i].seal_read_bytes};
            const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
            st_prom_sample(t, store_series[k][0], l, (double)v[k]);
        }
    }
    /* Where writes stalled on the write path, by cause (the consumer waits with them): the
     * count and the seconds, so that a latency tail can be lined up with its cause. */
    static const char *const wait_cause[4] = {"window_create", "vector_log_create", "wal_roll",
                                              "vector_log_queue"};
    uint64_t(*wv)[8] = calloc(h->n ? h->n : 1, sizeof(*wv)); /* counts, then ns: one snapshot */
    for (size_t i = 0; wv != NULL && sst != NULL && i < h->n; i++) {
        const struct store_stats ss = sst[i];
        struct twcs_stats tw;
        twcs_stats(h->colls[i].twcs, &tw);
        const uint64_t v[8] = {tw.window_creates, ss.vlog_creates,     ss.roll_waits,
                               ss.vlog_waits,     tw.window_create_ns, ss.vlog_create_ns,
                               ss.roll_wait_ns,   ss.vlog_wait_ns};
        memcpy(wv[i], v, sizeof(v));
    }
    for (int sec = 0; sec < 2; sec++) {
        const char *name = sec ? "strata_write_wait_seconds_total" : "strata_write_waits_total";
        st_prom_head(t, name, "counter",
                     sec ? "Time writes waited on the write path, by cause."
                         : "Waits on the write path, by cause: a window not in the table yet "
                           "(window_create) or without its vector log (vector_log_create), "
                           "a WAL roll's fsync (wal_roll), the vector-log writer thread behind "
                           "(vector_log_queue).");
        for (size_t i = 0; wv != NULL && i < h->n; i++)
            for (int c = 0; c < 4; c++) {
                const char *l[] = {"collection", h->colls[i].cfg->name, "cause", wait_cause[c],
                                   NULL};
                st_prom_sample(t, name, l, sec ? (double)wv[i][4 + c] / 1e9 : (double)wv[i][c]);
            }
    }
    free(wv);
    free(sst);
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
    st_prom_head(t, "strata_windows_prepared_total", "counter",
                 "Windows the tick created ahead of their data, with their vector logs.");
    for (size_t i = 0; ts != NULL && i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_windows_prepared_total", l, (double)ts[i].windows_prepared);
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
                 "Bytes written (WAL + vector logs + segments) per byte ingested.");
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
    st_prom_head(t, "strata_ingest_apply_lag_seconds", "histogram",
                 "Kafka message timestamp to its records applied (searchable by a strong "
                 "search), per message.");
    for (size_t i = 0; i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_hist(t, "strata_ingest_apply_lag_seconds", l, ing_consumer_apply_lag(h->cons, i));
    }
    st_prom_head(t, "strata_outbox_pending", "gauge", "Window events not yet stored by NATS.");
    for (size_t i = 0; i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_outbox_pending", l, (double)outbox_pub_pending(h->colls[i].pub));
    }
    st_prom_head(t, "strata_search_seconds", "histogram", "Search latency (exact fresh scans).");
    st_prom_hist(t, "strata_search_seconds", NULL, &h->search_hist);
    st_prom_head(t, "strata_search_records_total", "counter",
                 "Records of unindexed data a search read (scanned) or skipped unread as outside "
                 "its time range (pruned).");
    for (size_t i = 0; i < h->n; i++) {
        const char *l[] = {"collection", h->colls[i].cfg->name, "outcome", "scanned", NULL};
        st_prom_sample(t, "strata_search_records_total", l, (double)h->counts[i].scanned);
        l[3] = "pruned";
        st_prom_sample(t, "strata_search_records_total", l, (double)h->counts[i].pruned);
    }
}

/* ---- the status page's data (GET /v1/status) ---------------------------------------------- */

/* A live record's id picked at random (reservoir over the scan's sources, then a random record
 * of the chosen one), for the page's "search with a stored record's vector". */
struct sample {
    uint64_t rng, seen;
    uint8_t id[ST_API_ID_MAX];
    uint32_t len;
};

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int sample_src(void *ctx, const struct store_scan_src *src)
{
    struct sample *sm = ctx;
    if (src->n == 0)
        return ST_OK;
    sm->seen += src->n;
    if (rnd(&sm->rng) % sm->seen >= src->n) /* keep the one picked from earlier sources */
        return ST_OK;
    for (int tries = 0; tries < 4; tries++) {
        struct store_scan_rec r;
        store_scan_record(src, rnd(&sm->rng) % src->n, &r);
        if (r.op == STORE_OP_UPSERT && !r.superseded && r.id_len <= ST_API_ID_MAX) {
            memcpy(sm->id, r.id, r.id_len);
            sm->len = r.id_len;
            return ST_OK;
        }
    }
    return ST_OK;
}

static json_t *sample_id(const struct ingest_http_coll *c)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        struct sample sm = {.rng = (uint64_t)st_clock_mono_ns(NULL) | 1};
        if (store_scan(twcs_store(c->twcs), sample_src, &sm) != ST_OK || sm.len == 0)
            return json_null();
        struct store_value v = {0}; /* no vector buffer: only whether it is live */
        int rc = store_get(twcs_store(c->twcs), sm.id, sm.len, &v);
        free(v.meta);
        if (rc == ST_OK && v.op == STORE_OP_UPSERT)
            return st_api_id_path_json(is_u64(c), sm.id, sm.len);
    }
    return json_null();
}

static void do_status(struct ingest_http *h, struct st_http_resp *resp)
{
    struct st_text t = {0};
    metrics_text(h, &t);
    int64_t now = st_clock_wall_ms(NULL);
    json_t *colls = json_array();
    for (size_t i = 0; i < h->n; i++) {
        const struct ingest_http_coll *c = &h->colls[i];
        struct twcs_window_info *w = NULL;
        size_t nw = 0;
        int rc = twcs_windows(c->twcs, &w, &nw);
        if (rc != ST_OK) {
            st_http_error(resp, 500, "internal", "listing the windows of '%s': %s", c->cfg->name,
                          st_strerror(rc));
            json_decref(colls);
            st_text_free(&t);
            return;
        }
        json_t *wa = json_array();
        for (size_t j = 0; j < nw; j++)
            json_array_append_new(
                wa, st_api_status_window(
                        w[j].start, w[j].end,
                        st_api_window_state(state_name(w[j].state), w[j].end, c->cfg->ttl_ms, now),
                        w[j].version, w[j].records, "none"));
        free(w);
        json_t *o = coll_json(c);
        json_object_set_new(o, "windows", wa);
        json_object_set_new(o, "sample_id", sample_id(c));
        st_api_status_metrics(o, c->cfg->name, t.p != NULL ? t.p : "");
        json_array_append_new(colls, o);
    }
    st_text_free(&t);
    st_http_json(resp, 200, st_api_status_doc("ingest", h->node, now, colls));
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
    struct st_api_path ap;
    if (!st_api_route(req, &ap, resp))
        return;
    if (ap.route == ST_API_HEALTHZ) {
        st_http_json(resp, 200, json_pack("{s:s,s:s}", "status", "ok", "node", h->node));
        return;
    }
    if (ap.route == ST_API_READYZ) {
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
    static const char segs[] = "/v1/segments/";
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (ap.route == ST_API_OTHER && strncmp(p, segs, sizeof(segs) - 1) == 0 && get) {
        const char *name = p + sizeof(segs) - 1, *slash = strchr(name, '/');
        const struct ingest_http_coll *c =
            slash != NULL ? coll_find(h, name, (size_t)(slash - name)) : NULL;
        if (c == NULL)
            st_http_error(resp, 404, "not_found", "no collection in '%s'", p);
        else
            do_segment(c, slash + 1, resp);
        return;
    }
    const struct ingest_http_coll *c = ap.name != NULL ? coll_find(h, ap.name, ap.nl) : NULL;
    if (ap.name != NULL && c == NULL) {
        st_http_error(resp, 404, "not_found", "no collection '%.*s'", (int)ap.nl, ap.name);
        return;
    }
    switch (ap.route) {
    case ST_API_METRICS: {
        struct st_text t = {0};
        metrics_text(h, &t);
        st_api_metrics_resp(resp, &t);
        return;
    }
    case ST_API_COLLECTIONS: {
        json_t *a = json_array();
        for (size_t i = 0; i < h->n; i++)
            json_array_append_new(a, coll_json(&h->colls[i]));
        st_http_json(resp, 200, json_pack("{s:o}", "collections", a));
        return;
    }
    case ST_API_COLLECTION:
        st_http_json(resp, 200, coll_json(c));
        return;
    case ST_API_WINDOWS:
        do_windows(c, resp);
        return;
    case ST_API_RECORD:
        do_record(c, ap.arg, req, resp);
        return;
    case ST_API_SEARCH:
        do_search(h, c, req, resp);
        return;
    case ST_API_STATUS:
        do_status(h, resp);
        return;
    default:
        st_http_error(resp, 404, "not_found", "no route for %s %s", req->method, p);
        return;
    }
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
    /* "/": the status page itself holds no data (its API calls carry the token) */
    static const char *const open_paths[] = {"/healthz", "/readyz", "/metrics", "/", NULL};
    struct st_http_opts ho = {.listen = o->listen,
                              .max_body = o->max_body,
                              .auth_token_file = o->auth_token_file,
                              .open_paths = open_paths,
                              /* scans beside the polling thread: two at a time, as before */
                              .max_active = 2,
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

int ingest_http_ready(struct ingest_http *h, const struct ingest_http_coll *colls, size_t n,
                      struct ing_consumer *c)
{
    if ((h->counts = calloc(n ? n : 1, sizeof(*h->counts))) == NULL)
        return ST_ENOMEM;
    h->colls = colls;
    h->n = n;
    h->cons = c;
    atomic_store(&h->ready, true);
    return ST_OK;
}

void ingest_http_stop(struct ingest_http *h)
{
    if (h == NULL)
        return;
    st_http_stop(h->srv);
    free(h->counts);
    free(h->node);
    free(h);
}
