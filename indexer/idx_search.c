/* idx_search.c — indexed + fresh search with newest-version-wins across nodes (idx_search.h). */
#include "idx_search.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_client.h"

#define CAND_MAX 4000 /* candidates asked of the indexes at most (k <= 1000) */

static bool u64_ids(const struct idx_coll *c)
{
    return idx_coll_cfg(c)->id_type == CFG_ID_UINT64;
}

/* The request body for one ingest node. */
static char *node_body(const struct idx_coll *c, const struct idx_search_req *q,
                       const struct idx_view *v, const char *node, const struct idx_view_hit *cand,
                       size_t ncand)
{
    const struct cfg_collection *cc = idx_coll_cfg(c);
    json_t *b = json_object();
    json_object_set_new(b, "vector", st_api_vec_json(q->vec, cc->dim));
    json_object_set_new(b, "k", json_integer(q->k));
    if (q->from_ts != INT64_MIN)
        json_object_set_new(b, "from_ts", json_integer(q->from_ts));
    if (q->to_ts != INT64_MAX)
        json_object_set_new(b, "to_ts", json_integer(q->to_ts));
    json_object_set_new(b, "include_meta", json_boolean(q->with_meta));
    json_object_set_new(b, "include_vector", json_boolean(q->with_vec));
    json_t *ix = json_array();
    for (size_t i = 0; i < v->n; i++) /* every live window part of node, units' members too */
        for (size_t j = 0; j < v->parts[i]->nmem; j++) {
            const struct idx_cat_entry *m = &v->parts[i]->mem[j].e;
            if (strcmp(m->node, node) == 0 && idx_view_member_live(v, i, j))
                json_array_append_new(ix, json_pack("{s:I,s:I}", "start", (json_int_t)m->start,
                                                    "version", (json_int_t)m->version));
        }
    json_object_set_new(b, "indexed", ix);
    json_t *ck = json_array();
    for (size_t i = 0; i < ncand; i++) {
        struct store_seg_record r;
        idx_part_record(cand[i].part, cand[i].rec, &r);
        json_array_append_new(
            ck, json_pack("{s:o,s:I,s:I,s:I,s:I}", "id", st_api_id_json(u64_ids(c), r.id, r.id_len),
                          "ts", (json_int_t)r.ts, "partition", (json_int_t)r.partition, "offset",
                          (json_int_t)r.offset, "idx", (json_int_t)r.idx));
    }
    json_object_set_new(b, "check", ck);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static int hit_cmp(const void *a, const void *b)
{
    const struct idx_search_hit *x = a, *y = b;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    uint32_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
    int c = memcmp(x->id, y->id, n);
    return c != 0 ? c : (x->id_len < y->id_len ? -1 : x->id_len > y->id_len);
}

static bool same_id(const struct idx_search_hit *h, const uint8_t *id, uint32_t len)
{
    return h->id_len == len && memcmp(h->id, id, len) == 0;
}

/* Is version a newer than b? (ts, partition, offset, idx), the store's order. */
static bool newer(const struct idx_search_hit *a, const struct idx_search_hit *b)
{
    struct store_version x = {a->ts, a->partition, a->offset, a->idx};
    struct store_version y = {b->ts, b->partition, b->offset, b->idx};
    return store_version_cmp(&x, &y) > 0;
}

/* Adds a hit unless the same id is there already; then the newer version stays. */
static void add_hit(struct idx_search_res *res, const struct idx_search_hit *h)
{
    for (size_t i = 0; i < res->n; i++) {
        if (same_id(&res->hits[i], h->id, h->id_len)) {
            if (newer(h, &res->hits[i]))
                res->hits[i] = *h;
            return;
        }
    }
    res->hits[res->n++] = *h;
}

/* Round two (several nodes): asks every node whether it holds a newer version of any fresh hit
 * (fresh on one node, newer — or deleted — fresh or unindexed on another) and drops those.
 * ST_EBUSY naming a node that does not answer. */
static int check_fresh(struct idx_service *s, struct idx_coll *c, const struct idx_search_req *q,
                       const struct idx_node *nodes, size_t nn, struct idx_search_res *res,
                       struct st_err *err)
{
    const struct cfg_collection *cc = idx_coll_cfg(c);
    json_t *ck = json_array();
    for (size_t i = 0; i < res->n; i++) {
        const struct idx_search_hit *h = &res->hits[i];
        if (h->fresh != NULL)
            json_array_append_new(ck, json_pack("{s:o,s:I,s:I,s:I,s:I}", "id",
                                                st_api_id_json(u64_ids(c), h->id, h->id_len), "ts",
                                                (json_int_t)h->ts, "partition",
                                                (json_int_t)h->partition, "offset",
                                                (json_int_t)h->offset, "idx", (json_int_t)h->idx));
    }
    if (json_array_size(ck) == 0) {
        json_decref(ck);
        return ST_OK;
    }
    json_t *b = json_pack("{s:o,s:b,s:o}", "vector", st_api_vec_json(q->vec, cc->dim), "check_only",
                          1, "check", ck);
    char *body = b != NULL ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    struct idx_call *calls = calloc(nn, sizeof(*calls));
    char(*urls)[600] = calloc(nn, sizeof(*urls));
    int rc = body != NULL && calls != NULL && urls != NULL ? ST_OK : ST_ENOMEM;
    for (size_t i = 0; rc == ST_OK && i < nn; i++) {
        snprintf(urls[i], sizeof(urls[i]), "%s/v1/collections/%s/search", nodes[i].url, cc->name);
        calls[i].url = urls[i];
        calls[i].body = body;
    }
    if (rc == ST_OK)
        idx_client_run(calls, nn, idx_service_opts(s)->token,
                       idx_service_opts(s)->fresh_timeout_ms);
    for (size_t i = 0; rc == ST_OK && i < nn; i++) {
        json_t *a = calls[i].status == 200 ? json_loads(calls[i].resp, 0, NULL) : NULL;
        json_t *sup = json_object_get(a, "superseded");
        if (!json_is_array(sup)) {
            rc = st_err_set(err, ST_EBUSY, "ingest node %s (%s) did not answer: %s",
                            nodes[i].node[0] ? nodes[i].node : "?", nodes[i].url,
                            calls[i].status != 0 ? "an error" : calls[i].error);
            json_decref(a);
            break;
        }
        size_t k;
        json_t *x;
        json_array_foreach(sup, k, x)
        {
            uint8_t id[ST_API_ID_MAX];
            uint32_t len;
            if (!st_api_json_id(u64_ids(c), x, id, &len))
                continue;
            for (size_t h = 0; h < res->n; h++) {
                if (res->hits[h].fresh != NULL && same_id(&res->hits[h], id, len)) {
                    res->hits[h] = res->hits[--res->n]; /* order is restored by the caller */
                    break;
                }
            }
        }
        json_decref(a);
    }
    for (size_t i = 0; calls != NULL && i < nn; i++)
        idx_call_free(&calls[i]);
    free(calls);
    free(urls);
    free(body);
    return rc;
}

int idx_search_run(struct idx_service *s, struct idx_coll *c, const struct idx_search_req *q,
                   struct idx_search_res *res, struct st_err *err)
{
    memset(res, 0, sizeof(*res));
    const struct cfg_collection *cc = idx_coll_cfg(c);
    bool cosine = cc->metric == CFG_METRIC_COSINE;
    res->view = idx_coll_view(c);
    uint32_t kk = q->strong ? q->k * 2 + 8 : q->k;
    struct idx_view_hit *cand = NULL;
    struct idx_node *nodes = NULL;
    struct idx_call *calls = NULL;
    char **bodies = NULL;
    size_t ncand = 0, nn = 0;
    bool *superseded = NULL;
    int rc = ST_OK;
    if (q->strong) {
        if (!idx_nodes_settled(idx_service_nodes(s))) {
            rc = st_err_set(err, ST_EBUSY,
                            "discovering ingest nodes: a strong search would miss the ones "
                            "not heard from yet; retry in a few seconds or ask for "
                            "consistency \"indexed\"");
            goto out;
        }
        if ((rc = idx_nodes_live(idx_service_nodes(s), cc->name, &nodes, &nn)) != ST_OK)
            goto out;
        if (nn == 0) { /* its fresh data is out of reach: refuse rather than leave it out */
            rc = st_err_set(err, ST_EBUSY,
                            "no live ingest node serves collection '%s': a strong search "
                            "cannot include its fresh data; ask for consistency \"indexed\"",
                            cc->name);
            goto out;
        }
    }
    for (int round = 0;; round++) {
        free(cand);
        free(superseded);
        superseded = NULL;
        cand = malloc(kk * sizeof(*cand));
        if (cand == NULL) {
            rc = ST_ENOMEM;
            goto out;
        }
        struct idx_view_query vq = {q->vec,     kk,       q->ef, q->nprobe,
                                    q->from_ts, q->to_ts, false, idx_service_search_pool(s),
                                    false};
        struct idx_view_stats vs;
        if ((rc = idx_view_search(res->view, &vq, cand, &ncand, &vs)) != ST_OK)
            goto out;
        res->windows = vs.windows_searched;
        res->segments = vs.parts_searched;
        res->parts += vs.parts_searched; /* every round's, as the work done */
        res->parts_by_helpers += vs.parts_by_helpers;
        res->parts_again += vs.parts_again;
        if (!q->strong || nn == 0)
            break;
        /* Ask every live node; all must answer. */
        if (calls != NULL)
            for (size_t i = 0; i < nn; i++) {
                idx_call_free(&calls[i]);
                free(bodies[i]);
            }
        free(calls);
        free(bodies);
        calls = calloc(nn, sizeof(*calls));
        bodies = calloc(nn, sizeof(*bodies));
        char(*urls)[600] = calloc(nn, sizeof(*urls));
        if (calls == NULL || bodies == NULL || urls == NULL) {
            free(urls);
            rc = ST_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < nn; i++) {
            snprintf(urls[i], sizeof(urls[i]), "%s/v1/collections/%s/search", nodes[i].url,
                     cc->name);
            bodies[i] = node_body(c, q, res->view, nodes[i].node, cand, ncand);
            calls[i].url = urls[i];
            calls[i].body = bodies[i];
        }
        idx_client_run(calls, nn, idx_service_opts(s)->token,
                       idx_service_opts(s)->fresh_timeout_ms);
        for (size_t i = 0; i < nn && rc == ST_OK; i++) {
            if (calls[i].status == 200 && bodies[i] != NULL)
                continue;
            json_t *e = calls[i].resp != NULL ? json_loads(calls[i].resp, 0, NULL) : NULL;
            const char *m =
                json_string_value(json_object_get(json_object_get(e, "error"), "message"));
            rc = st_err_set(err, ST_EBUSY, "ingest node %s (%s) did not answer: %s",
                            nodes[i].node[0] ? nodes[i].node : "?", nodes[i].url,
                            calls[i].status != 0 ? (m != NULL ? m : "an error") : calls[i].error);
            json_decref(e);
        }
        free(urls);
        if (rc != ST_OK)
            goto out;
        /* Which candidates did any node supersede? */
        json_decref(res->answers);
        res->answers = json_array();
        superseded = calloc(ncand + 1, sizeof(*superseded));
        if (superseded == NULL) {
            rc = ST_ENOMEM;
            goto out;
        }
        size_t nsup = 0;
        for (size_t i = 0; i < nn; i++) {
            json_t *a = json_loads(calls[i].resp, 0, NULL);
            json_t *sup = json_object_get(a, "superseded");
            if (a == NULL || !json_is_array(json_object_get(a, "hits"))) {
                json_decref(a);
                rc = st_err_set(err, ST_EBUSY, "ingest node %s (%s) gave an unreadable answer",
                                nodes[i].node, nodes[i].url);
                goto out;
            }
            json_array_append_new(res->answers, a);
            size_t k;
            json_t *x;
            json_array_foreach(sup, k, x)
            {
                uint8_t id[ST_API_ID_MAX];
                uint32_t len;
                if (!st_api_json_id(u64_ids(c), x, id, &len))
                    continue;
                for (size_t j = 0; j < ncand; j++) {
                    struct store_seg_record r;
                    idx_part_record(cand[j].part, cand[j].rec, &r);
                    if (!superseded[j] && r.id_len == len && memcmp(r.id, id, len) == 0) {
                        superseded[j] = true;
                        nsup++;
                    }
                }
            }
        }
        /* Too many of the closest were superseded: ask the indexes for more. */
        if (ncand == kk && ncand - nsup < q->k && kk < CAND_MAX && round < 3) {
            kk = kk * 4 < CAND_MAX ? kk * 4 : CAND_MAX;
            continue;
        }
        break;
    }
    /* Merge. */
    size_t nfresh = 0;
    for (size_t i = 0; res->answers != NULL && i < json_array_size(res->answers); i++)
        nfresh += json_array_size(json_object_get(json_array_get(res->answers, i), "hits"));
    res->hits = calloc(ncand + nfresh + 1, sizeof(*res->hits));
    if (res->hits == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    for (size_t j = 0; j < ncand; j++) {
        if (superseded != NULL && superseded[j])
            continue;
        struct store_seg_record r;
        idx_part_record(cand[j].part, cand[j].rec, &r);
        struct idx_search_hit h = {.dist = cand[j].dist,
                                   .ts = r.ts,
                                   .id_len = r.id_len,
                                   .part = cand[j].part,
                                   .rec = cand[j].rec};
        memcpy(h.id, r.id, r.id_len);
        add_hit(res, &h);
    }
    for (size_t i = 0; res->answers != NULL && i < json_array_size(res->answers); i++) {
        json_t *a = json_array_get(res->answers, i);
        res->windows += (uint32_t)json_integer_value(json_object_get(a, "windows_searched"));
        res->segments += (uint32_t)json_integer_value(json_object_get(a, "segments_searched"));
        res->fresh_scanned +=
            (uint64_t)json_integer_value(json_object_get(a, "fresh_records_scanned"));
        res->fresh_pruned +=
            (uint64_t)json_integer_value(json_object_get(a, "fresh_records_pruned"));
        size_t k;
        json_t *x;
        json_array_foreach(json_object_get(a, "hits"), k, x)
        {
            struct idx_search_hit h = {.fresh = x};
            if (!st_api_json_id(u64_ids(c), json_object_get(x, "id"), h.id, &h.id_len))
                continue;
            double d = json_number_value(json_object_get(x, "distance"));
            h.dist = (float)(cosine ? d - 1.0 : d);
            h.ts = json_integer_value(json_object_get(x, "ts"));
            h.partition = (int32_t)json_integer_value(json_object_get(x, "partition"));
            h.offset = json_integer_value(json_object_get(x, "offset"));
            h.idx = (uint32_t)json_integer_value(json_object_get(x, "idx"));
            /* A newer version (or a delete) among the indexed windows supersedes it. */
            struct idx_part *p;
            uint32_t rec;
            if (idx_view_get(res->view, h.id, h.id_len, true, &p, &rec) == ST_OK) {
                struct store_seg_record r;
                idx_part_record(p, rec, &r);
                struct idx_search_hit ix = {
                    .ts = r.ts, .partition = r.partition, .offset = r.offset, .idx = r.idx};
                if (newer(&ix, &h))
                    continue;
            }
            add_hit(res, &h);
        }
    }
    if (nn > 1 && (rc = check_fresh(s, c, q, nodes, nn, res, err)) != ST_OK)
        goto out;
    if (res->n > 1)
        qsort(res->hits, res->n, sizeof(*res->hits), hit_cmp);
    if (res->n > q->k)
        res->n = q->k;
    res->nodes = (uint32_t)nn;
out:
    if (calls != NULL)
        for (size_t i = 0; i < nn; i++) {
            idx_call_free(&calls[i]);
            free(bodies[i]);
        }
    free(calls);
    free(bodies);
    free(nodes);
    free(cand);
    free(superseded);
    if (rc != ST_OK)
        idx_search_res_free(res);
    return rc;
}

void idx_search_res_free(struct idx_search_res *res)
{
    free(res->hits);
    json_decref(res->answers);
    idx_view_release(res->view);
    memset(res, 0, sizeof(*res));
}
