/* indexer_http.c — strata-indexer's HTTP API (indexer_http.h, docs/http.md). */
#include "indexer_http.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg_json.h"
#include "idx_client.h"
#include "idx_search.h"
#include "st_api.h"
#include "st_clock.h"
#include "st_http.h"
#include "st_prom.h"

struct indexer_http {
    struct st_http *srv;
    char *node;
    struct idx_service *svc;
    _Atomic bool ready;
    struct st_hist search_hist;
    _Atomic uint64_t searches, search_errors;
    _Atomic uint64_t parts_request, parts_helper; /* index parts searched, by which thread */
    _Atomic uint64_t parts_again;                 /* of them, HNSW parts searched a second time */
};

static bool is_u64(const struct idx_coll *c)
{
    return idx_coll_cfg(c)->id_type == CFG_ID_UINT64;
}

static json_t *coll_json(struct idx_coll *c)
{
    struct idx_view *v = idx_coll_view(c);
    struct idx_window_info *w = NULL;
    size_t nw = 0, indexing = 0, indexed = 0;
    if (idx_coll_windows(c, &w, &nw) == ST_OK)
        for (size_t i = 0; i < nw; i++)
            w[i].indexed ? indexed++ : indexing++;
    free(w);
    uint64_t recs = 0, bytes = 0, parts = idx_view_live_parts(v);
    for (size_t i = 0; v != NULL && i < v->n; i++) {
        recs += v->parts[i]->n;
        bytes += v->parts[i]->memory;
    }
    json_t *stats =
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "windows_indexed", (json_int_t)indexed,
                  "windows_indexing", (json_int_t)indexing, "parts", (json_int_t)parts, "indexes",
                  (json_int_t)(v != NULL ? v->n : 0), "vectors", (json_int_t)recs, "ids",
                  (json_int_t)(v != NULL ? v->ids : 0), "index_bytes", (json_int_t)bytes);
    idx_view_release(v);
    return cfg_collection_json(idx_coll_cfg(c), stats);
}

static int win_cmp(const void *a, const void *b)
{
    const struct idx_window_info *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return strcmp(x->node, y->node);
}

/* One entry per window: its parts (one per ingest node that sealed a part of it) summed; the
 * state is "indexing" while any part is queued or building. */
static void do_windows(struct idx_coll *c, struct st_http_resp *resp)
{
    struct idx_window_info *w = NULL;
    size_t nw = 0;
    int rc = idx_coll_windows(c, &w, &nw);
    if (rc != ST_OK) {
        st_http_error(resp, 500, "internal", "listing windows: %s", st_strerror(rc));
        return;
    }
    if (nw > 1)
        qsort(w, nw, sizeof(*w), win_cmp);
    json_t *a = json_array();
    for (size_t i = 0; i < nw;) {
        size_t j = i;
        uint64_t recs = 0, bytes = 0;
        uint32_t version = 0;
        bool indexing = false, cold = false;
        const char *index = "none";
        json_t *parts = json_array();
        for (; j < nw && w[j].start == w[i].start; j++) {
            if (!w[j].indexed) {
                indexing = true;
            } else {
                recs += w[j].records;
                bytes += w[j].bytes;
                index = w[j].index;
                cold = cold || w[j].cold;
            }
            if (w[j].version > version)
                version = w[j].version;
            json_array_append_new(parts, json_pack("{s:s,s:I,s:s,s:I,s:I}", "node", w[j].node,
                                                   "version", (json_int_t)w[j].version, "state",
                                                   w[j].indexed ? "indexed" : "indexing", "records",
                                                   (json_int_t)w[j].records, "unit",
                                                   (json_int_t)w[j].unit));
        }
        json_array_append_new(
            a, json_pack("{s:I,s:I,s:s,s:I,s:I,s:I,s:s,s:b,s:o}", "start", (json_int_t)w[i].start,
                         "end", (json_int_t)w[i].end, "state", indexing ? "indexing" : "indexed",
                         "version", (json_int_t)version, "records", (json_int_t)recs, "bytes",
                         (json_int_t)bytes, "index", index, "cold", cold, "parts", parts));
        i = j;
    }
    free(w);
    st_http_json(resp, 200, a);
}

static json_t *indexed_record(struct idx_coll *c, struct idx_part *p, uint32_t rec)
{
    const struct cfg_collection *cc = idx_coll_cfg(c);
    struct store_seg_record r;
    idx_part_record(p, rec, &r);
    uint8_t *meta = NULL;
    uint32_t ml = 0;
    if (idx_part_meta(p, rec, &meta, &ml) != ST_OK)
        return NULL;
    const struct idx_cat_entry *w = &idx_part_member_of(p, rec)->e; /* its window part */
    json_t *o = json_pack("{s:o,s:I,s:o,s:o,s:{s:I,s:I},s:I,s:I,s:s}", "id",
                          st_api_id_json(is_u64(c), r.id, r.id_len), "ts", (json_int_t)r.ts,
                          "vector", st_api_vec_json(idx_part_vector(p, rec), cc->dim), "meta",
                          st_api_meta_json(meta, ml), "window", "start", (json_int_t)w->start,
                          "end", (json_int_t)w->end, "partition", (json_int_t)r.partition, "offset",
                          (json_int_t)r.offset, "node", w->node);
    free(meta);
    return o;
}

/* Is version a (ts, partition, offset) newer than b? */
static bool newer(json_t *a, json_t *b)
{
    int64_t x[3] = {json_integer_value(json_object_get(a, "ts")),
                    json_integer_value(json_object_get(a, "partition")),
                    json_integer_value(json_object_get(a, "offset"))};
    int64_t y[3] = {json_integer_value(json_object_get(b, "ts")),
                    json_integer_value(json_object_get(b, "partition")),
                    json_integer_value(json_object_get(b, "offset"))};
    for (int i = 0; i < 3; i++)
        if (x[i] != y[i])
            return x[i] > y[i];
    return false;
}

/* GET /records/{id}: the newest version among the indexed windows and (strong, the default)
 * every live ingest node's data, deletes included. */
static void do_record(struct indexer_http *h, struct idx_coll *c, const char *ids,
                      const struct st_http_req *req, struct st_http_resp *resp)
{
    const struct cfg_collection *cc = idx_coll_cfg(c);
    uint8_t id[ST_API_ID_MAX];
    uint32_t len;
    if (!st_api_parse_id(is_u64(c), cc->name, ids, id, &len, resp))
        return;
    const char *cons = st_http_query(req, "consistency");
    if (cons != NULL && strcmp(cons, "strong") != 0 && strcmp(cons, "indexed") != 0) {
        st_http_error(resp, 400, "invalid_argument", "consistency is \"strong\" or \"indexed\"");
        return;
    }
    bool strong = cons == NULL || strcmp(cons, "strong") == 0;
    struct idx_view *v = idx_coll_view(c);
    struct idx_part *p;
    uint32_t rec;
    json_t *best = NULL;
    bool best_deleted = false;
    if (idx_view_get(v, id, len, true, &p, &rec) == ST_OK) {
        if ((best = indexed_record(c, p, rec)) == NULL) {
            st_http_error(resp, 500, "internal", "reading '%s' from %s: damaged or no memory", ids,
                          idx_part_member_of(p, rec)->seg_path);
            goto out;
        }
        struct store_seg_record r;
        idx_part_record(p, rec, &r);
        best_deleted = r.op != STORE_OP_UPSERT;
    }
    if (strong) {
        struct idx_nodes *ns = idx_service_nodes(h->svc);
        struct idx_node *nodes = NULL;
        size_t nn = 0;
        if (!idx_nodes_settled(ns) || idx_nodes_live(ns, cc->name, &nodes, &nn) != ST_OK) {
            st_http_error(resp, 503, "not_ready",
                          "discovering ingest nodes; retry, or ask with ?consistency=indexed");
            goto out;
        }
        struct idx_call *calls = calloc(nn + 1, sizeof(*calls));
        char(*urls)[1024] = calloc(nn + 1, sizeof(*urls));
        bool failed = calls == NULL || urls == NULL;
        for (size_t i = 0; !failed && i < nn; i++) {
            char *esc = NULL;
            json_t *ij = st_api_id_json(is_u64(c), id, len);
            /* the id is percent-encoded byte by byte: ids may hold any character */
            size_t el = 0;
            const char *raw = json_is_string(ij) ? json_string_value(ij) : NULL;
            char num[32];
            if (raw == NULL) {
                snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(ij));
                raw = num;
            }
            esc = malloc(strlen(raw) * 3 + 1);
            for (const char *q = raw; esc != NULL && *q; q++)
                el += (size_t)sprintf(esc + el, "%%%02X", (unsigned char)*q);
            if (esc != NULL)
                snprintf(urls[i], sizeof(urls[i]), "%s/v1/collections/%s/records/%s?deleted=true",
                         nodes[i].url, cc->name, esc);
            free(esc);
            json_decref(ij);
            calls[i].url = urls[i];
        }
        if (!failed)
            idx_client_run(calls, nn, idx_service_opts(h->svc)->token,
                           idx_service_opts(h->svc)->fresh_timeout_ms);
        for (size_t i = 0; !failed && i < nn; i++) {
            if (calls[i].status == 404)
                continue;
            json_t *o = calls[i].status == 200 ? json_loads(calls[i].resp, 0, NULL) : NULL;
            if (o == NULL) {
                st_http_error(resp, 503, "not_ready", "ingest node %s (%s) did not answer: %s",
                              nodes[i].node, nodes[i].url,
                              calls[i].status ? "an error" : calls[i].error);
                failed = true;
                break;
            }
            if (best == NULL || newer(o, best)) {
                json_decref(best);
                best = o;
                best_deleted = json_is_true(json_object_get(o, "deleted"));
            } else {
                json_decref(o);
            }
        }
        for (size_t i = 0; calls != NULL && i < nn; i++)
            idx_call_free(&calls[i]);
        free(calls);
        free(urls);
        free(nodes);
        if (failed) {
            if (resp->status == 0)
                st_http_error(resp, 500, "internal", "out of memory");
            goto out;
        }
    }
    if (best == NULL || best_deleted)
        st_http_error(resp, 404, "not_found", "no record '%s' in collection '%s'", ids, cc->name);
    else
        st_http_json(resp, 200, json_incref(best));
out:
    json_decref(best);
    idx_view_release(v);
}

static void do_search(struct indexer_http *h, struct idx_coll *c, const struct st_http_req *req,
                      struct st_http_resp *resp)
{
    int64_t t0 = st_clock_mono_ns(NULL);
    const struct cfg_collection *cc = idx_coll_cfg(c);
    bool cosine = cc->metric == CFG_METRIC_COSINE;
    struct st_api_search sq;
    if (!st_api_search_parse(req, cc->name, cc->dim, cosine, NULL, &sq, resp))
        return;
    struct idx_search_req q = {.vec = sq.vec,
                               .k = sq.k,
                               .ef = sq.ef,
                               .nprobe = sq.nprobe,
                               .from_ts = sq.from_ts,
                               .to_ts = sq.to_ts,
                               .strong = sq.strong,
                               .with_meta = sq.with_meta,
                               .with_vec = sq.with_vec};
    struct idx_search_res res;
    struct st_err err = {0};
    int rc = idx_search_run(h->svc, c, &q, &res, &err);
    atomic_fetch_add(&h->searches, 1);
    if (rc != ST_OK) {
        atomic_fetch_add(&h->search_errors, 1);
        if (rc == ST_EBUSY)
            st_http_error(resp, 503, "not_ready", "%s", err.msg);
        else
            st_http_error(resp, 500, "internal", "search: %s",
                          err.msg[0] ? err.msg : st_strerror(rc));
        st_api_search_free(&sq);
        return;
    }
    json_t *hits = json_array();
    for (size_t i = 0; i < res.n; i++) {
        const struct idx_search_hit *x = &res.hits[i];
        double dist = cosine ? 1.0 + x->dist : x->dist;
        json_t *o = json_pack("{s:o,s:f,s:I}", "id", st_api_id_json(is_u64(c), x->id, x->id_len),
                              "distance", dist, "ts", (json_int_t)x->ts);
        if (x->fresh != NULL) {
            if (sq.with_meta)
                json_object_set(o, "meta", json_object_get(x->fresh, "meta"));
            if (sq.with_vec)
                json_object_set(o, "vector", json_object_get(x->fresh, "vector"));
        } else {
            if (sq.with_meta) {
                uint8_t *meta = NULL;
                uint32_t ml = 0;
                if (idx_part_meta(x->part, x->rec, &meta, &ml) != ST_OK) {
                    json_decref(o);
                    json_decref(hits);
                    st_http_error(resp, 500, "internal",
                                  "reading a meta from %s: damaged or no "
                                  "memory",
                                  idx_part_member_of(x->part, x->rec)->seg_path);
                    goto out;
                }
                json_object_set_new(o, "meta", st_api_meta_json(meta, ml));
                free(meta);
            }
            if (sq.with_vec)
                json_object_set_new(o, "vector",
                                    st_api_vec_json(idx_part_vector(x->part, x->rec), cc->dim));
        }
        json_array_append_new(hits, o);
    }
    double took = (double)(st_clock_mono_ns(NULL) - t0) / 1e9;
    st_hist_observe(&h->search_hist, took);
    atomic_fetch_add(&h->parts_request, res.parts - res.parts_by_helpers);
    atomic_fetch_add(&h->parts_helper, res.parts_by_helpers);
    atomic_fetch_add(&h->parts_again, res.parts_again);
    st_http_json(resp, 200,
                 json_pack("{s:o,s:I,s:I,s:I,s:I,s:I,s:f}", "hits", hits, "windows_searched",
                           (json_int_t)res.windows, "segments_searched", (json_int_t)res.segments,
                           "fresh_records_scanned", (json_int_t)res.fresh_scanned,
                           "fresh_records_pruned", (json_int_t)res.fresh_pruned, "ingest_nodes",
                           (json_int_t)res.nodes, "took_ms", took * 1e3));
out:
    idx_search_res_free(&res);
    st_api_search_free(&sq);
}

/* ---- the status page's data (GET /v1/status) ---------------------------------------------- */

struct tl_win {
    int64_t start, end;
    const char *state; /* static */
    uint32_t version;
    uint64_t records;
    char index[8];
    bool from_indexer;
};

static int tl_cmp(const void *a, const void *b)
{
    const struct tl_win *x = a, *y = b;
    return x->start != y->start ? (x->start < y->start ? -1 : 1) : 0;
}

static int iw_cmp(const void *a, const void *b)
{
    const struct idx_window_info *x = a, *y = b;
    return x->start != y->start ? (x->start < y->start ? -1 : 1) : 0;
}

/* The entry for start among w[0..n) sorted by start, or NULL. */
static struct tl_win *tl_find(struct tl_win *w, size_t n, int64_t start)
{
    struct tl_win key = {.start = start};
    return bsearch(&key, w, n, sizeof(*w), tl_cmp);
}

/*
 * What the status asks of the live ingest nodes, all in one parallel round within the strong
 * search deadline: per collection and node GET .../windows (calls[first[c] + j] for node j of
 * nodes[c]), and each distinct node's /metrics once (calls[nwin..n)).
 */
struct ask {
    size_t ncoll;
    struct idx_node **nodes; /* per collection, idx_nodes_live's list */
    size_t *nn, *first;
    struct idx_call *calls;
    char (*urls)[1024];
    size_t n, nwin;
};

static void ask_free(struct ask *a)
{
    for (size_t i = 0; a->calls != NULL && i < a->n; i++)
        idx_call_free(&a->calls[i]);
    for (size_t i = 0; a->nodes != NULL && i < a->ncoll; i++)
        free(a->nodes[i]);
    free(a->nodes);
    free(a->nn);
    free(a->first);
    free(a->calls);
    free(a->urls);
}

/* false when out of memory */
static bool ask_nodes(struct indexer_http *h, struct ask *a)
{
    memset(a, 0, sizeof(*a));
    a->ncoll = idx_service_ncoll(h->svc);
    a->nodes = calloc(a->ncoll + 1, sizeof(*a->nodes));
    a->nn = calloc(a->ncoll + 1, sizeof(*a->nn));
    a->first = calloc(a->ncoll + 1, sizeof(*a->first));
    if (a->nodes == NULL || a->nn == NULL || a->first == NULL)
        return false;
    size_t cap = 0;
    for (size_t i = 0; i < a->ncoll; i++) {
        const char *name = idx_coll_cfg(idx_service_coll_at(h->svc, i))->name;
        if (idx_nodes_live(idx_service_nodes(h->svc), name, &a->nodes[i], &a->nn[i]) != ST_OK)
            a->nn[i] = 0;
        cap += 2 * a->nn[i]; /* its windows, and at most one /metrics per node */
    }
    a->calls = calloc(cap + 1, sizeof(*a->calls));
    a->urls = calloc(cap + 1, sizeof(*a->urls));
    if (a->calls == NULL || a->urls == NULL)
        return false;
    for (size_t i = 0; i < a->ncoll; i++) {
        const char *name = idx_coll_cfg(idx_service_coll_at(h->svc, i))->name;
        a->first[i] = a->n;
        for (size_t j = 0; j < a->nn[i]; j++, a->n++) {
            snprintf(a->urls[a->n], sizeof(a->urls[a->n]), "%s/v1/collections/%s/windows",
                     a->nodes[i][j].url, name);
            a->calls[a->n].url = a->urls[a->n];
        }
    }
    a->nwin = a->n;
    for (size_t i = 0; i < a->ncoll; i++)
        for (size_t j = 0; j < a->nn[i]; j++) {
            char u[1024];
            snprintf(u, sizeof(u), "%s/metrics", a->nodes[i][j].url);
            bool dup = false;
            for (size_t k = a->nwin; k < a->n && !dup; k++)
                dup = strcmp(a->urls[k], u) == 0;
            if (!dup) {
                memcpy(a->urls[a->n], u, sizeof(u));
                a->calls[a->n].url = a->urls[a->n];
                a->n++;
            }
        }
    if (a->n > 0)
        idx_client_run(a->calls, a->n, idx_service_opts(h->svc)->token,
                       idx_service_opts(h->svc)->fresh_timeout_ms);
    return true;
}

/*
 * Collection ci's timeline: its windows as this indexer serves them (indexing, indexed), and
 * the windows of the live ingest nodes it has no part of (open, or sealed and not yet here);
 * a node whose answer is missing is named in unreachable.
 */
static json_t *timeline(struct idx_coll *c, const struct ask *a, size_t ci, int64_t now,
                        json_t *unreachable)
{
    const struct cfg_collection *cc = idx_coll_cfg(c);
    struct idx_window_info *iw = NULL;
    size_t niw = 0;
    if (idx_coll_windows(c, &iw, &niw) != ST_OK)
        niw = 0;
    size_t nn = a->nn[ci];
    const struct idx_call *calls = a->calls + a->first[ci];
    json_t **answers = calloc(nn + 1, sizeof(*answers));
    size_t cap = niw;
    for (size_t i = 0; answers != NULL && i < nn; i++) {
        answers[i] = calls[i].status == 200 ? json_loads(calls[i].resp, 0, NULL) : NULL;
        if (!json_is_array(answers[i]))
            json_array_append_new(unreachable, json_string(a->nodes[ci][i].url));
        else
            cap += json_array_size(answers[i]);
    }
    /* O(w log w): the indexer's windows sorted and summed per start, then ingest's for the
     * starts the indexer does not hold, sorted and combined per start. */
    struct tl_win *w = calloc(cap + 1, sizeof(*w));
    size_t n = 0;
    if (niw > 1)
        qsort(iw, niw, sizeof(*iw), iw_cmp);
    for (size_t i = 0; w != NULL && i < niw; i++) { /* parts summed, as GET .../windows */
        struct tl_win *t = &w[n - (n > 0 && w[n - 1].start == iw[i].start)];
        if (t == &w[n]) {
            n++;
            t->start = iw[i].start;
            t->end = iw[i].end;
            t->from_indexer = true;
            t->state = "indexed";
            snprintf(t->index, sizeof(t->index), "none");
        }
        if (!iw[i].indexed) {
            t->state = "indexing";
        } else {
            t->records += iw[i].records;
            snprintf(t->index, sizeof(t->index), "%s", iw[i].index);
        }
        if (iw[i].version > t->version)
            t->version = iw[i].version;
    }
    size_t nidx = n;
    for (size_t i = 0; w != NULL && answers != NULL && i < nn; i++) {
        size_t j;
        json_t *e;
        json_array_foreach(answers[i], j, e)
        {
            json_t *st = json_object_get(e, "start"), *en = json_object_get(e, "end");
            const char *state = json_string_value(json_object_get(e, "state"));
            if (!json_is_integer(st) || !json_is_integer(en) || state == NULL ||
                tl_find(w, nidx, json_integer_value(st)) != NULL)
                continue;
            w[n++] = (struct tl_win){
                .start = json_integer_value(st),
                .end = json_integer_value(en),
                .state = strcmp(state, "open") == 0 ? "open" : "sealed",
                .records = (uint64_t)json_integer_value(json_object_get(e, "records")),
                .version = (uint32_t)json_integer_value(json_object_get(e, "version")),
                .index = "none"};
        }
    }
    if (w != NULL && n - nidx > 1) /* one entry per start: open on any node is open */
        qsort(w + nidx, n - nidx, sizeof(*w), tl_cmp);
    size_t m = nidx;
    for (size_t i = nidx; w != NULL && i < n; i++) {
        if (m > nidx && w[m - 1].start == w[i].start) {
            struct tl_win *t = &w[m - 1];
            if (strcmp(w[i].state, "open") == 0)
                t->state = "open";
            t->end = w[i].end;
            t->records += w[i].records;
            if (w[i].version > t->version)
                t->version = w[i].version;
        } else {
            w[m++] = w[i];
        }
    }
    n = m;
    if (n > 1)
        qsort(w, n, sizeof(*w), tl_cmp);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            out, st_api_status_window(w[i].start, w[i].end,
                                      st_api_window_state(w[i].state, w[i].end, cc->ttl_ms, now),
                                      w[i].version, w[i].records, w[i].index));
    for (size_t i = 0; answers != NULL && i < nn; i++)
        json_decref(answers[i]);
    free(w);
    free(answers);
    free(iw);
    return out;
}

/* A random indexed record whose indexed version is its newest (NULL when none is found). */
static json_t *sample_id(struct idx_coll *c)
{
    struct idx_view *v = idx_coll_view(c);
    uint64_t x = (uint64_t)st_clock_mono_ns(NULL) | 1;
    json_t *out = json_null();
    for (int tries = 0; v != NULL && v->n > 0 && tries < 8; tries++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        struct idx_part *p = v->parts[x % v->n];
        if (p->n == 0)
            continue;
        uint32_t rec = p->rec[(x >> 20) % p->n];
        struct store_seg_record r;
        idx_part_record(p, rec, &r);
        struct idx_part *np;
        uint32_t nrec;
        if (idx_view_get(v, r.id, r.id_len, false, &np, &nrec) == ST_OK && np == p && nrec == rec) {
            json_decref(out);
            out = st_api_id_path_json(is_u64(c), r.id, r.id_len);
            break;
        }
    }
    idx_view_release(v);
    return out;
}

static void metrics_text(struct indexer_http *h, struct st_text *t);

/* Event time -> sealed happens on the ingest nodes: their /metrics per collection, merged over
 * the nodes (st_api_hist_merge), where this indexer has none. */
static void sealed_freshness(json_t *o, const struct ask *a)
{
    json_t *fr = json_object_get(o, "freshness");
    if (!json_is_null(json_object_get(fr, "sealed")))
        return;
    const char *l[] = {"collection", json_string_value(json_object_get(o, "name")), "stage",
                       "sealed", NULL};
    for (size_t j = a->nwin; j < a->n; j++)
        if (a->calls[j].status == 200 && a->calls[j].resp != NULL)
            st_api_hist_merge(
                fr, "sealed",
                st_api_prom_hist_json(a->calls[j].resp, "strata_freshness_seconds", l));
}

static void do_status(struct indexer_http *h, struct st_http_resp *resp)
{
    struct ask a;
    if (!ask_nodes(h, &a)) {
        ask_free(&a);
        st_http_error(resp, 500, "internal", "out of memory");
        return;
    }
    struct st_text t = {0};
    metrics_text(h, &t);
    int64_t now = st_clock_wall_ms(NULL);
    json_t *colls = json_array(), *unreachable = json_array();
    for (size_t i = 0; i < a.ncoll; i++) {
        struct idx_coll *c = idx_service_coll_at(h->svc, i);
        json_t *o = coll_json(c);
        json_object_set_new(o, "windows", timeline(c, &a, i, now, unreachable));
        json_object_set_new(o, "sample_id", sample_id(c));
        st_api_status_metrics(o, idx_coll_cfg(c)->name, t.p != NULL ? t.p : "");
        sealed_freshness(o, &a);
        json_array_append_new(colls, o);
    }
    st_text_free(&t);
    ask_free(&a);
    json_t *doc = st_api_status_doc("indexer", h->node, now, colls);
    if (doc != NULL)
        json_object_set_new(doc, "unreachable", unreachable);
    else
        json_decref(unreachable);
    st_http_json(resp, 200, doc);
}

static void metrics_text(struct indexer_http *h, struct st_text *t)
{
    idx_service_metrics(h->svc, t);
    st_prom_head(t, "strata_search_seconds", "histogram", "Search latency (HTTP handler)");
    st_prom_hist(t, "strata_search_seconds", NULL, &h->search_hist);
    st_prom_head(t, "strata_search_errors_total", "counter", "Searches answered with an error");
    st_prom_sample(t, "strata_search_errors_total", NULL, (double)atomic_load(&h->search_errors));
    st_prom_head(t, "strata_search_parts_total", "counter",
                 "Index parts searched, on the request's thread or on a helper of "
                 "indexer.search_threads");
    const char *lr[] = {"thread", "request", NULL}, *lh[] = {"thread", "helper", NULL};
    st_prom_sample(t, "strata_search_parts_total", lr, (double)atomic_load(&h->parts_request));
    st_prom_sample(t, "strata_search_parts_total", lh, (double)atomic_load(&h->parts_helper));
    st_prom_head(t, "strata_search_parts_again_total", "counter",
                 "HNSW index parts searched a second time with the whole beam, after a first "
                 "search for their share of k found hits that count");
    st_prom_sample(t, "strata_search_parts_again_total", NULL,
                   (double)atomic_load(&h->parts_again));
    st_prom_head(t, "strata_indexer_ingest_connects_total", "counter",
                 "Connections opened to ingest nodes for strong searches, gets and status "
                 "(kept open and reused between calls)");
    st_prom_sample(t, "strata_indexer_ingest_connects_total", NULL, (double)idx_client_connects());
}

static void handle(void *ctx, const struct st_http_req *req, struct st_http_resp *resp)
{
    struct indexer_http *h = ctx;
    struct st_api_path ap;
    if (!st_api_route(req, &ap, resp))
        return;
    if (ap.route == ST_API_HEALTHZ) {
        st_http_json(
            resp, 200,
            json_pack("{s:s,s:s,s:s}", "status", "ok", "node", h->node, "role", "indexer"));
        return;
    }
    if (!atomic_load(&h->ready)) {
        st_http_error(resp, 503, "not_ready", "starting: loading the catalogs");
        return;
    }
    struct idx_coll *c = ap.name != NULL ? idx_service_coll(h->svc, ap.name, ap.nl) : NULL;
    if (ap.name != NULL && c == NULL) {
        st_http_error(resp, 404, "not_found", "no collection '%.*s'", (int)ap.nl, ap.name);
        return;
    }
    switch (ap.route) {
    case ST_API_READYZ: {
        char why[256];
        if (idx_service_ready(h->svc, why, sizeof(why)))
            st_http_json(resp, 200, json_pack("{s:b,s:s}", "ready", 1, "node", h->node));
        else
            st_http_error(resp, 503, "not_ready", "%s", why);
        return;
    }
    case ST_API_METRICS: {
        struct st_text t = {0};
        metrics_text(h, &t);
        st_api_metrics_resp(resp, &t);
        return;
    }
    case ST_API_COLLECTIONS: {
        json_t *a = json_array();
        for (size_t i = 0; i < idx_service_ncoll(h->svc); i++)
            json_array_append_new(a, coll_json(idx_service_coll_at(h->svc, i)));
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
        do_record(h, c, ap.arg, req, resp);
        return;
    case ST_API_SEARCH:
        do_search(h, c, req, resp);
        return;
    case ST_API_STATUS:
        do_status(h, resp);
        return;
    default:
        st_http_error(resp, 404, "not_found", "no route for %s %s", req->method, req->path);
        return;
    }
}

int indexer_http_start(const struct indexer_http_opts *o, struct indexer_http **out,
                       struct st_err *err)
{
    *out = NULL;
    struct indexer_http *h = calloc(1, sizeof(*h));
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
                              .max_active = 4, /* searches at once (fan-outs included) */
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

uint16_t indexer_http_port(const struct indexer_http *h)
{
    return st_http_port(h->srv);
}

void indexer_http_ready(struct indexer_http *h, struct idx_service *svc)
{
    h->svc = svc;
    atomic_store(&h->ready, true);
}

void indexer_http_stop(struct indexer_http *h)
{
    if (h == NULL)
        return;
    st_http_stop(h->srv);
    free(h->node);
    free(h);
}
