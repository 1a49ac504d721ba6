/* st_api.c — SPEC.md §5 request and response JSON shared by strata-ingest and strata-indexer. */
#include "st_api.h"
#include "st_coding.h"
#include "st_utf8.h"

#include "st_distance.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *st_api_id_json(bool u64, const uint8_t *id, uint32_t len)
{
    if (u64 && len == 8) {
        uint64_t v = st_get_be64(id);
        if (v > (uint64_t)INT64_MAX) { /* beyond JSON integers as jansson writes them */
            char d[24];
            snprintf(d, sizeof(d), "%" PRIu64, v);
            return json_string(d);
        }
        return json_integer((json_int_t)v);
    }
    json_t *j = json_stringn((const char *)id, len);
    if (j == NULL && len <= ST_API_ID_MAX) {
        /* Not UTF-8: stored before frames' ids were checked. Shown with '?' for the bad bytes
         * rather than dropped from a response (or failing it). */
        char s[ST_API_ID_MAX + 1];
        memcpy(s, id, len);
        s[len] = '\0';
        st_utf8_scrub(s);
        j = json_string(s);
    }
    return j;
}

json_t *st_api_id_path_json(bool u64, const uint8_t *id, uint32_t len)
{
    json_t *j = st_api_id_json(u64, id, len);
    if (json_is_integer(j)) {
        char d[24];
        snprintf(d, sizeof(d), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        json_decref(j);
        return json_string(d);
    }
    return j;
}

json_t *st_api_meta_json(const uint8_t *meta, uint32_t len)
{
    if (meta == NULL || len == 0)
        return json_object();
    json_t *j = json_loadb((const char *)meta, len, JSON_DECODE_ANY, NULL);
    return j != NULL ? j : json_stringn((const char *)meta, len);
}

json_t *st_api_vec_json(const float *v, uint32_t dim)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < dim; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

bool st_api_parse_id(bool u64, const char *coll, const char *s, uint8_t *buf, uint32_t *len,
                     struct st_http_resp *resp)
{
    size_t n = strlen(s);
    if (u64) {
        uint64_t v;
        if (!st_parse_u64_dec(s, n, &v)) {
            st_http_error(resp, 400, "invalid_argument",
                          "collection '%s' has uint64 ids: '%.64s' is not one", coll, s);
            return false;
        }
        st_put_be64(buf, v);
        *len = 8;
        return true;
    }
    if (n == 0 || n > ST_API_ID_MAX) {
        st_http_error(resp, 400, "invalid_argument", "an id has 1..%u bytes; this one has %zu",
                      ST_API_ID_MAX, n);
        return false;
    }
    if (!st_utf8_valid((const uint8_t *)s, n)) { /* no record has it (SPEC §3): and it would
                                                     not survive the JSON of a forwarded lookup */
        st_http_error(resp, 400, "invalid_argument", "an id is UTF-8; this one is not");
        return false;
    }
    memcpy(buf, s, n);
    *len = (uint32_t)n;
    return true;
}

bool st_api_json_id(bool u64, json_t *j, uint8_t *buf, uint32_t *len)
{
    if (u64) {
        uint64_t v;
        if (json_is_string(j)) { /* ids >= 2^63 travel as decimal strings */
            if (!st_parse_u64_dec(json_string_value(j), json_string_length(j), &v))
                return false;
        } else if (json_is_integer(j) && json_integer_value(j) >= 0) {
            v = (uint64_t)json_integer_value(j);
        } else {
            return false;
        }
        st_put_be64(buf, v);
        *len = 8;
        return true;
    }
    size_t n = json_string_length(j);
    if (!json_is_string(j) || n == 0 || n > ST_API_ID_MAX)
        return false;
    memcpy(buf, json_string_value(j), n);
    *len = (uint32_t)n;
    return true;
}

bool st_api_get_i64(json_t *obj, const char *key, int64_t *out, struct st_http_resp *resp)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return true;
    if (!json_is_integer(v)) {
        st_http_error(resp, 400, "invalid_argument", "'%s' must be an integer", key);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

bool st_api_get_bool(json_t *obj, const char *key, bool *out, struct st_http_resp *resp)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return true;
    if (!json_is_boolean(v)) {
        st_http_error(resp, 400, "invalid_argument", "'%s' must be true or false", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

json_t *st_api_body(const struct st_http_req *req, struct st_http_resp *resp)
{
    json_error_t je;
    json_t *b = json_loadb((const char *)req->body, req->body_len, 0, &je);
    if (b == NULL) {
        st_http_error(resp, 400, "invalid_argument", "body is not JSON: %s (line %d, column %d)",
                      je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(b)) {
        st_http_error(resp, 400, "invalid_argument", "body must be a JSON object");
        json_decref(b);
        return NULL;
    }
    return b;
}

static bool known_field(const char *key, const char *const *extra)
{
    static const char *const spec[] = {"vector",         "k",  "from_ts", "to_ts",
                                       "consistency",    "ef", "nprobe",  "include_meta",
                                       "include_vector", NULL};
    for (size_t i = 0; spec[i] != NULL; i++)
        if (strcmp(spec[i], key) == 0)
            return true;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strcmp(extra[i], key) == 0)
            return true;
    return false;
}

static bool get_u32(json_t *b, const char *key, uint32_t max, uint32_t *out,
                    struct st_http_resp *resp)
{
    int64_t v = 0;
    if (!st_api_get_i64(b, key, &v, resp))
        return false;
    if (v < 0 || v > (int64_t)max) {
        st_http_error(resp, 400, "invalid_argument", "'%s' must be 0..%u, not %" PRId64, key, max,
                      v);
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

bool st_api_search_parse(const struct st_http_req *req, const char *coll, uint32_t dim, bool cosine,
                         const char *const *extra, struct st_api_search *out,
                         struct st_http_resp *resp)
{
    memset(out, 0, sizeof(*out));
    json_t *b = st_api_body(req, resp);
    if (b == NULL)
        return false;
    out->body = b;
    const char *key;
    json_t *val;
    json_object_foreach(b, key, val)
    {
        if (!known_field(key, extra)) {
            st_http_error(resp, 400, "invalid_argument", "unknown field '%s'", key);
            goto bad;
        }
    }
    json_t *jv = json_object_get(b, "vector");
    if (!json_is_array(jv)) {
        st_http_error(resp, 400, "invalid_argument",
                      "'vector' (an array of %u numbers) is required", dim);
        goto bad;
    }
    if (json_array_size(jv) != dim) {
        st_http_error(resp, 400, "invalid_argument", "vector has %zu dims; collection '%s' has %u",
                      json_array_size(jv), coll, dim);
        goto bad;
    }
    if ((out->vec = malloc((dim ? dim : 1) * sizeof(float))) == NULL) {
        st_http_error(resp, 500, "internal", "out of memory");
        goto bad;
    }
    double sq = 0;
    for (uint32_t i = 0; i < dim; i++) {
        json_t *x = json_array_get(jv, i);
        double d = json_number_value(x);
        if (!json_is_number(x) || !isfinite(d) || !isfinite((float)d)) {
            st_http_error(resp, 400, "invalid_argument", "vector[%u] is not a finite number", i);
            goto bad;
        }
        out->vec[i] = (float)d;
        sq += d * d;
    }
    int64_t k = 10;
    out->from_ts = INT64_MIN;
    out->to_ts = INT64_MAX;
    out->with_meta = true;
    if (!st_api_get_i64(b, "k", &k, resp) || !st_api_get_i64(b, "from_ts", &out->from_ts, resp) ||
        !st_api_get_i64(b, "to_ts", &out->to_ts, resp) ||
        !get_u32(b, "ef", 100000, &out->ef, resp) ||
        !get_u32(b, "nprobe", 1u << 20, &out->nprobe, resp) ||
        !st_api_get_bool(b, "include_meta", &out->with_meta, resp) ||
        !st_api_get_bool(b, "include_vector", &out->with_vec, resp))
        goto bad;
    if (k < 1 || k > ST_API_K_MAX) {
        st_http_error(resp, 400, "invalid_argument", "k must be 1..%u, not %" PRId64, ST_API_K_MAX,
                      k);
        goto bad;
    }
    out->k = (uint32_t)k;
    if (out->from_ts > out->to_ts) {
        st_http_error(resp, 400, "invalid_argument",
                      "from_ts (%" PRId64 ") is after to_ts (%" PRId64 ")", out->from_ts,
                      out->to_ts);
        goto bad;
    }
    json_t *cons = json_object_get(b, "consistency");
    out->strong = true;
    if (cons != NULL) {
        const char *cs = json_string_value(cons);
        if (cs == NULL || (strcmp(cs, "strong") != 0 && strcmp(cs, "indexed") != 0)) {
            st_http_error(resp, 400, "invalid_argument",
                          "consistency is \"strong\" or \"indexed\"");
            goto bad;
        }
        out->strong = strcmp(cs, "strong") == 0;
    }
    if (cosine) {
        if (sq == 0) {
            st_http_error(resp, 400, "invalid_argument",
                          "a zero vector has no direction: collection '%s' uses cosine", coll);
            goto bad;
        }
        st_normalize(out->vec, dim);
    }
    return true;
bad:
    st_api_search_free(out);
    return false;
}

void st_api_search_free(struct st_api_search *s)
{
    free(s->vec);
    json_decref(s->body);
    memset(s, 0, sizeof(*s));
}

bool st_api_route(const struct st_http_req *req, struct st_api_path *out, struct st_http_resp *resp)
{
    memset(out, 0, sizeof(*out));
    const char *p = req->path;
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    bool post = strcmp(req->method, "POST") == 0;
    static const char colls[] = "/v1/collections";
    if (get && strcmp(p, "/healthz") == 0)
        out->route = ST_API_HEALTHZ;
    else if (get && strcmp(p, "/readyz") == 0)
        out->route = ST_API_READYZ;
    else if (get && strcmp(p, "/metrics") == 0)
        out->route = ST_API_METRICS;
    else if (get && strcmp(p, colls) == 0)
        out->route = ST_API_COLLECTIONS;
    else if (get && strcmp(p, "/v1/status") == 0)
        out->route = ST_API_STATUS;
    else if (get && strcmp(p, "/") == 0) {
        st_http_text(resp, 200, "text/html; charset=utf-8", st_status_html, st_status_html_len);
        st_http_resp_header(resp, "Cache-Control", "no-cache");
        return false;
    }
    if (out->route != ST_API_OTHER || strncmp(p, colls, sizeof(colls) - 1) != 0 ||
        p[sizeof(colls) - 1] != '/')
        return true;
    const char *name = p + sizeof(colls), *slash = strchr(name, '/');
    const char *rest = slash != NULL ? slash : "";
    out->name = name;
    out->nl = slash != NULL ? (size_t)(slash - name) : strlen(name);
    if (get && rest[0] == '\0') {
        out->route = ST_API_COLLECTION;
    } else if (get && strcmp(rest, "/windows") == 0) {
        out->route = ST_API_WINDOWS;
    } else if (get && strncmp(rest, "/records/", 9) == 0) {
        out->route = ST_API_RECORD;
        out->arg = rest + 9;
    } else if (strcmp(rest, "/search") == 0) {
        if (!post) {
            st_http_error(resp, 405, "method_not_allowed", "search is POST");
            st_http_resp_header(resp, "Allow", "POST");
            return false;
        }
        out->route = ST_API_SEARCH;
    }
    return true;
}

void st_api_metrics_resp(struct st_http_resp *resp, struct st_text *t)
{
    if (t->oom)
        st_http_error(resp, 500, "internal", "out of memory");
    else
        st_http_text(resp, 200, "text/plain; version=0.0.4", t->p ? t->p : "", t->len);
    st_text_free(t);
}

/* ---- the status page's data ------------------------------------------------------------- */

/* Does the label section l (between the braces, or "" for none) satisfy the wanted pairs? */
static bool labels_match(const char *l, size_t ll, const char *const *want)
{
    for (size_t i = 0; want != NULL && want[i] != NULL; i += 2) {
        size_t kl = strlen(want[i]);
        bool found = false;
        const char *v = NULL;
        size_t vl = 0;
        for (size_t at = 0; at < ll && !found;) {
            /* key="value" (value escaped: \\ \" \n), pairs separated by commas */
            const char *eq = memchr(l + at, '=', ll - at);
            if (eq == NULL || (size_t)(eq - l) + 1 >= ll || eq[1] != '"')
                return false;
            size_t vs = (size_t)(eq - l) + 2, ve = vs;
            while (ve < ll && l[ve] != '"')
                ve += l[ve] == '\\' ? 2 : 1;
            if (ve >= ll)
                return false;
            if ((size_t)(eq - (l + at)) == kl && memcmp(l + at, want[i], kl) == 0) {
                found = true;
                v = l + vs;
                vl = ve - vs;
            }
            at = ve + 1;
            if (at < ll && l[at] == ',')
                at++;
        }
        if (want[i + 1] == NULL
                ? found
                : !found || vl != strlen(want[i + 1]) || memcmp(v, want[i + 1], vl) != 0)
            return false;
    }
    return true;
}

/* Calls fn for every sample line of metric `name` (exactly) whose labels match. */
static void prom_each(const char *text, const char *name, const char *const *labels,
                      void (*fn)(void *ctx, const char *l, size_t ll, double v), void *ctx)
{
    size_t nl = strlen(name);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        if (len > nl && line[0] != '#' && memcmp(line, name, nl) == 0 &&
            (line[nl] == '{' || line[nl] == ' ')) {
            const char *l = line + nl, *val = l;
            size_t ll = 0;
            if (*l == '{') {
                const char *close = memchr(l, '}', len - nl);
                if (close != NULL) {
                    ll = (size_t)(close - l) - 1;
                    val = close + 1;
                    l++;
                } else {
                    val = NULL;
                }
            } else {
                l = "";
            }
            char *e;
            double v = val != NULL ? strtod(val, &e) : 0;
            if (val != NULL && e != val && labels_match(l, ll, labels))
                fn(ctx, l, ll, v);
        }
        line = end != NULL ? end + 1 : NULL;
    }
}

struct prom_first {
    bool found;
    double v;
};

static void first_cb(void *ctx, const char *l, size_t ll, double v)
{
    (void)l;
    (void)ll;
    struct prom_first *f = ctx;
    if (!f->found) {
        f->found = true;
        f->v = v;
    }
}

bool st_api_prom_find(const char *text, const char *name, const char *const *labels, double *out)
{
    struct prom_first f = {0};
    prom_each(text, name, labels, first_cb, &f);
    if (f.found)
        *out = f.v;
    return f.found;
}

struct prom_quant {
    double target[2], at[2]; /* cumulative counts wanted; the bound that reached them */
    bool done[2];
};

/* _bucket lines come in ascending le with cumulative counts (st_prom_hist). */
static void quant_cb(void *ctx, const char *l, size_t ll, double v)
{
    struct prom_quant *q = ctx;
    const char *le = NULL;
    for (size_t i = 0; i + 4 <= ll; i++)
        if ((i == 0 || l[i - 1] == ',') && memcmp(l + i, "le=\"", 4) == 0) {
            le = l + i + 4;
            break;
        }
    if (le == NULL)
        return;
    double bound = strncmp(le, "+Inf", 4) == 0 ? INFINITY : strtod(le, NULL);
    for (int i = 0; i < 2; i++)
        if (!q->done[i] && v >= q->target[i]) {
            q->done[i] = true;
            q->at[i] = bound;
        }
}

json_t *st_api_prom_hist_json(const char *text, const char *name, const char *const *labels)
{
    char n[128];
    double count = 0, sum = 0;
    snprintf(n, sizeof(n), "%s_count", name);
    if (!st_api_prom_find(text, n, labels, &count) || count <= 0)
        return json_null();
    snprintf(n, sizeof(n), "%s_sum", name);
    if (!st_api_prom_find(text, n, labels, &sum))
        return json_null();
    struct prom_quant q = {.target = {count * 0.5, count * 0.99}};
    snprintf(n, sizeof(n), "%s_bucket", name);
    prom_each(text, n, labels, quant_cb, &q);
    json_t *o = json_pack("{s:I,s:f}", "count", (json_int_t)count, "mean_s", sum / count);
    static const char *const qn[2] = {"p50_s", "p99_s"};
    for (int i = 0; o != NULL && i < 2; i++)
        json_object_set_new(o, qn[i],
                            q.done[i] && isfinite(q.at[i]) ? json_real(q.at[i]) : json_null());
    return o;
}

const char *st_api_window_state(const char *state, int64_t end, int64_t ttl_ms, int64_t now_ms)
{
    if (ttl_ms > 0 && end <= now_ms - ttl_ms)
        return "expired";
    return state;
}

json_t *st_api_status_window(int64_t start, int64_t end, const char *state, uint32_t version,
                             uint64_t records, const char *index)
{
    return json_pack("{s:I,s:I,s:s,s:I,s:I,s:s}", "start", (json_int_t)start, "end",
                     (json_int_t)end, "state", state, "version", (json_int_t)version, "records",
                     (json_int_t)records, "index", index);
}

void st_api_status_metrics(json_t *coll, const char *name, const char *metrics)
{
    static const char *const stages[] = {"sealed", "indexed"};
    json_t *fresh = json_object();
    for (size_t i = 0; i < 2; i++) {
        const char *per_coll[] = {"collection", name, "stage", stages[i], NULL};
        const char *node[] = {"collection", NULL, "stage", stages[i], NULL};
        json_t *h = st_api_prom_hist_json(metrics, "strata_freshness_seconds", per_coll);
        if (json_is_null(h)) {
            json_decref(h);
            h = st_api_prom_hist_json(metrics, "strata_freshness_seconds", node);
            if (json_is_object(h))
                json_object_set_new(h, "scope", json_string("node"));
        }
        json_object_set_new(fresh, stages[i], h);
    }
    json_object_set_new(coll, "freshness", fresh);
    const char *bl[] = {"collection", name, NULL};
    double backlog;
    json_object_set_new(coll, "backlog",
                        st_api_prom_find(metrics, "strata_index_backlog", bl, &backlog)
                            ? json_integer((json_int_t)backlog)
                            : json_null());
}

void st_api_hist_merge(json_t *obj, const char *key, json_t *h)
{
    json_t *cur = json_object_get(obj, key);
    if (!json_is_object(h)) {
        json_decref(h);
        return;
    }
    if (!json_is_object(cur)) {
        json_object_set_new(obj, key, h);
        return;
    }
    json_int_t ca = json_integer_value(json_object_get(cur, "count"));
    json_int_t cb = json_integer_value(json_object_get(h, "count"));
    double ma = json_real_value(json_object_get(cur, "mean_s"));
    double mb = json_real_value(json_object_get(h, "mean_s"));
    json_object_set_new(cur, "count", json_integer(ca + cb));
    json_object_set_new(
        cur, "mean_s",
        json_real(ca + cb > 0 ? (ma * (double)ca + mb * (double)cb) / (double)(ca + cb) : 0));
    static const char *const qn[2] = {"p50_s", "p99_s"};
    for (int i = 0; i < 2; i++) {
        json_t *qa = json_object_get(cur, qn[i]), *qb = json_object_get(h, qn[i]);
        if (json_is_null(qb) || (json_is_real(qa) && json_real_value(qb) > json_real_value(qa)))
            json_object_set(cur, qn[i], qb);
    }
    json_decref(h);
}

json_t *st_api_status_doc(const char *role, const char *node, int64_t now_ms, json_t *colls)
{
    return json_pack("{s:s,s:s,s:I,s:o}", "role", role, "node", node, "now_ms", (json_int_t)now_ms,
                     "collections", colls);
}
