/*
 * st_api.h — the SPEC.md §5 JSON that both daemons speak: ids, metas and vectors in responses,
 * ids in paths, and the search request. Parsing failures fill the response with the SPEC
 * error shape (400 invalid_argument and a message naming the field) and return false, so a
 * handler only has to return.
 */
#ifndef ST_API_H
#define ST_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "st_http.h"
#include "st_prom.h"

#define ST_API_ID_MAX 256 /* bytes of a string id (SPEC.md §3) */
#define ST_API_K_MAX  1000u

/* An id as JSON: a number for uint64 collections (8 bytes big-endian) — a decimal string for
 * ids >= 2^63, which JSON integers as jansson writes them cannot hold — else a string. */
json_t *st_api_id_json(bool u64, const uint8_t *id, uint32_t len);
/* An id as it goes into a path ("/records/{id}"): always a string, decimal for uint64
 * collections (JavaScript numbers cannot hold every uint64). */
json_t *st_api_id_path_json(bool u64, const uint8_t *id, uint32_t len);
/* Meta is stored as the producer's JSON text; anything else comes back as a string; none is
 * an empty object. */
json_t *st_api_meta_json(const uint8_t *meta, uint32_t len);
json_t *st_api_vec_json(const float *v, uint32_t dim);
/* The id in a path ("/records/{id}"): decimal for uint64 collections, else 1..256 bytes.
 * buf holds ST_API_ID_MAX bytes. */
bool st_api_parse_id(bool u64, const char *coll, const char *s, uint8_t *buf, uint32_t *len,
                     struct st_http_resp *resp);

/* An id given as JSON (a string; for uint64 collections a non-negative integer or a decimal
 * string) into buf (ST_API_ID_MAX bytes); false when it is not a valid id. */
bool st_api_json_id(bool u64, json_t *j, uint8_t *buf, uint32_t *len);

struct st_api_search {
    float *vec;             /* dim floats, finite; normalised for cosine collections */
    uint32_t k;             /* 1..1000, default 10 */
    int64_t from_ts, to_ts; /* inclusive; INT64_MIN / INT64_MAX when absent */
    bool strong;            /* consistency (default strong) */
    uint32_t ef, nprobe;    /* 0: the collection's default */
    bool with_meta, with_vec;
    json_t *body; /* the whole request, for fields only one daemon knows */
};

/*
 * Parses a search body for collection coll (dim floats; cosine: the vector is normalised and
 * a zero vector refused). Fields other than SPEC.md §5's and `extra` (NULL-terminated, may be
 * NULL) are refused, so a typo does not silently change a query. On success the caller frees
 * out with st_api_search_free.
 */
bool st_api_search_parse(const struct st_http_req *req, const char *coll, uint32_t dim, bool cosine,
                         const char *const *extra, struct st_api_search *out,
                         struct st_http_resp *resp);
void st_api_search_free(struct st_api_search *s);

/* An integer / boolean field of a JSON object, if present; a 400 when of the wrong type. */
bool st_api_get_i64(json_t *obj, const char *key, int64_t *out, struct st_http_resp *resp);
bool st_api_get_bool(json_t *obj, const char *key, bool *out, struct st_http_resp *resp);

/* The body parsed as a JSON object, or NULL with a 400 in resp. */
json_t *st_api_body(const struct st_http_req *req, struct st_http_resp *resp);

/* The SPEC.md §5 routes both daemons serve. */
enum st_api_route {
    ST_API_OTHER,       /* not one of these (the daemon's own routes, or 404) */
    ST_API_HEALTHZ,     /* GET /healthz */
    ST_API_READYZ,      /* GET /readyz */
    ST_API_METRICS,     /* GET /metrics */
    ST_API_COLLECTIONS, /* GET /v1/collections */
    ST_API_COLLECTION,  /* GET /v1/collections/{name} */
    ST_API_WINDOWS,     /* GET /v1/collections/{name}/windows */
    ST_API_RECORD,      /* GET /v1/collections/{name}/records/{id} (id in arg) */
    ST_API_SEARCH,      /* POST /v1/collections/{name}/search */
    ST_API_STATUS,      /* GET /v1/status (the status page's data) */
};

struct st_api_path {
    enum st_api_route route;
    const char *name; /* the collection (not NUL-terminated: nl bytes) */
    size_t nl;
    const char *arg;
};

/* Routes a request; false when resp is already answered: 405 for search not POSTed, and
 * GET / (the status page, the same for both daemons: served without auth, list "/" in
 * open_paths). */
bool st_api_route(const struct st_http_req *req, struct st_api_path *out,
                  struct st_http_resp *resp);
/* Answers /metrics with t (500 when building it ran out of memory) and frees t. */
void st_api_metrics_resp(struct st_http_resp *resp, struct st_text *t);

/* ---- the status page (GET /) and its data (GET /v1/status, docs/http.md) ---- */

/* common/status.html, embedded at build time (common/embed.cmake). */
extern const char *const st_status_html;
extern const size_t st_status_html_len;

/* The value of the first sample of metric `name` in Prometheus text whose labels match:
 * labels is a NULL-terminated list of key, value pairs; a NULL value means "this label is
 * absent". false when no sample matches. */
bool st_api_prom_find(const char *text, const char *name, const char *const *labels, double *out);
/* A histogram of Prometheus text as {"count", "mean_s", "p50_s", "p99_s"} (the quantiles are
 * bucket upper bounds; null above the last bound); JSON null when absent or empty. */
json_t *st_api_prom_hist_json(const char *text, const char *name, const char *const *labels);

/* The state the page shows for a window: "expired" once its end is more than ttl_ms (0: no
 * TTL) before now_ms (the daemon has not dropped it yet), else state. */
const char *st_api_window_state(const char *state, int64_t end, int64_t ttl_ms, int64_t now_ms);
/* {"start", "end", "state", "version", "records", "index"}: one window of the timeline. */
json_t *st_api_status_window(int64_t start, int64_t end, const char *state, uint32_t version,
                             uint64_t records, const char *index);
/*
 * Adds to a collection's status object what the daemon's own metrics text says about
 * collection name: "freshness": {"sealed", "indexed"} (st_api_prom_hist_json of
 * strata_freshness_seconds: the collection's series, else the node-wide one, else null) and
 * "backlog" (strata_index_backlog; null where the daemon builds no indexes).
 */
void st_api_status_metrics(json_t *coll, const char *name, const char *metrics);
/* Merges histogram summary h (st_api_prom_hist_json; stolen, null ignored) into obj[key]
 * (null or absent: set to h): counts add up, means are weighted, quantiles take the larger
 * (null, above the last bound, is the largest) — several nodes' view of one stage. */
void st_api_hist_merge(json_t *obj, const char *key, json_t *h);
/* The /v1/status document {"role", "node", "now_ms", "collections"} (steals colls). */
json_t *st_api_status_doc(const char *role, const char *node, int64_t now_ms, json_t *colls);

#endif
