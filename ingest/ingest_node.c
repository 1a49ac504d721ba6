/*
 * ingest_node.c — one ingest node: HTTP, stores, publishers, consumer, announcer
 * (ingest_node.h).
 */
#include "ingest_node.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "announce.h"
#include "consumer.h"
#include "dlq.h"
#include "ingest_http.h"
#include "ingest_layout.h"
#include "outbox_pub.h"
#include "st_log.h"
#include "store_fs.h"
#include "twcs.h"

/* How long a clean stop waits for its goodbye to reach the bus. */
#define BYE_WAIT_MS 1000

struct coll_rt {
    struct twcs *twcs;
    struct outbox_pub *pub;
    char *dir; /* the store */
};

struct ingest_node {
    const struct cfg *cfg;
    struct coll_rt *rt;
    struct ing_collection *ic;
    const char *(*props)[2];
    struct ingest_http_coll *hc;
    struct dlq *dlq;
    struct ing_consumer *cons;
    struct ingest_http *http;
    struct ingest_announce *ann;  /* read by on_assignment (consumer thread) */
    struct st_bus_auth nats_auth; /* from cfg; the publishers and the announcer borrow it */
    char url[512];
};

/* ing_assignment_fn: hands the assignment to the announcer (ctx: where the node keeps it). */
static void on_assignment(void *ctx, const struct ing_partition *parts, size_t n)
{
    struct ingest_announce *a = *(struct ingest_announce *const *)ctx;
    if (a != NULL) /* started before the first poll, so before the first assignment */
        ingest_announce_partitions(a, parts, n);
}

/* The announcer of this node (announce.h): its URL, collections and topics. */
static int start_announcer(const struct cfg *cfg, const struct st_bus_auth *auth, const char *url,
                           int64_t started_ms, struct ingest_announce **out, struct st_err *err)
{
    size_t nc = cfg->n_collections, nt = 0;
    const char **names = calloc(nc ? nc : 1, sizeof(*names));
    const char **topics = calloc(nc ? nc : 1, sizeof(*topics));
    int rc = ST_ENOMEM;
    if (names != NULL && topics != NULL) {
        for (size_t i = 0; i < nc; i++) {
            names[i] = cfg->collections[i].name;
            size_t j = 0;
            while (j < nt && strcmp(topics[j], cfg->collections[i].topic) != 0)
                j++;
            if (j == nt)
                topics[nt++] = cfg->collections[i].topic;
        }
        struct ingest_announce_opts ao = {.nats_url = cfg->nats.url,
                                          .auth = auth,
                                          .node_id = cfg->node_id,
                                          .url = url,
                                          .collections = names,
                                          .n_collections = nc,
                                          .topics = topics,
                                          .n_topics = nt,
                                          .interval_ms = cfg->ingest.announce_interval_ms,
                                          .started_ms = started_ms};
        rc = ingest_announce_start(&ao, out, err);
    } else {
        st_err_set(err, rc, "out of memory");
    }
    free(names);
    free(topics);
    return rc;
}

/* Opens collection i: its store directory, publisher and TWCS. */
static int open_collection(struct ingest_node *n, size_t i, struct st_err *err)
{
    const struct cfg *cfg = n->cfg;
    const struct cfg_collection *cc = &cfg->collections[i];
    struct coll_rt *rt = &n->rt[i];
    /* SPEC.md §6: <data_dir>/ingest/<name>, or where a pre-rule data_dir keeps it. */
    int rc = ingest_layout_store_dir(cfg->data_dir, cc->name, &rt->dir, NULL, err);
    if (rc != ST_OK)
        return rc;
    char seg_base[700];
    snprintf(seg_base, sizeof(seg_base), "%s/v1/segments/%s", n->url, cc->name);
    struct outbox_pub_opts po = {.url = cfg->nats.url,
                                 .auth = &n->nats_auth,
                                 .stream = cfg->nats.stream,
                                 .node_id = cfg->node_id,
                                 .collection = cc->name,
                                 .segment_base = seg_base};
    rc = outbox_pub_start(&po, &rt->pub, err);
    if (rc != ST_OK)
        return rc;
    struct twcs_opts to = {
        .store = {.dir = rt->dir,
                  .dim = cc->dim,
                  .wal_sync = cfg->store.wal_sync == CFG_WAL_SYNC_ALWAYS  ? STORE_SYNC_ALWAYS
                              : cfg->store.wal_sync == CFG_WAL_SYNC_BATCH ? STORE_SYNC_BATCH
                                                                          : STORE_SYNC_NONE,
                  .wal_sync_interval_ms = cfg->store.wal_sync_interval_ms,
                  .memtable_size = cfg->store.memtable_size},
        .window_ms = cc->window_ms,
        .grace_ms = cc->grace_ms,
        .max_lateness_ms = cc->max_lateness_ms,
        .max_future_ms = cc->max_future_ms,
        .ttl_ms = cc->ttl_ms,
        .max_bytes = cc->max_bytes,
        /* Late data re-seals its window once it is an eighth of it, after a window's time, or
         * for the last time once max_lateness has passed (strong searches scan it meanwhile;
         * docs/operations.md, Late data). */
        .reseal_min_ratio = 8,
        .tick_ms = 1000,
        .on_event = outbox_pub_event,
        .ctx = rt->pub,
    };
    rc = twcs_open(&to, &rt->twcs, err);
    if (rc != ST_OK)
        return rc;
    outbox_pub_attach(rt->pub, rt->twcs);
    n->hc[i] = (struct ingest_http_coll){cc, rt->twcs, rt->pub};
    n->ic[i] = (struct ing_collection){.rc = {cc->name, cc->dim, cc->id_type == CFG_ID_UINT64},
                                       .topic = cc->topic,
                                       .dead_letter_topic = cc->dead_letter_topic,
                                       .twcs = rt->twcs,
                                       .cosine = cc->metric == CFG_METRIC_COSINE};
    return ST_OK;
}

int ingest_node_start(const struct cfg *cfg, int64_t started_ms, struct ingest_node **out,
                      struct st_err *err)
{
    *out = NULL;
    size_t nc = cfg->n_collections;
    struct ingest_node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return st_err_set(err, ST_ENOMEM, "out of memory");
    n->cfg = cfg;
    cfg_nats_auth(cfg, &n->nats_auth);
    n->rt = calloc(nc ? nc : 1, sizeof(*n->rt));
    n->ic = calloc(nc ? nc : 1, sizeof(*n->ic));
    n->props = calloc(cfg->kafka.n_properties + 1, sizeof(*n->props));
    n->hc = calloc(nc ? nc : 1, sizeof(*n->hc));
    int rc = ST_ENOMEM;
    if (n->rt == NULL || n->ic == NULL || n->props == NULL || n->hc == NULL) {
        st_err_set(err, rc, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->kafka.n_properties; i++) {
        n->props[i][0] = cfg->kafka.properties[i].key;
        n->props[i][1] = cfg->kafka.properties[i].value;
    }
    rc = store_fs_mkdir(NULL, cfg->data_dir, "ingest.mkdir"); /* parent fsynced too */
    if (rc != ST_OK) {
        st_err_set(err, rc, "data_dir %s: %s", cfg->data_dir, st_strerror(rc));
        goto fail;
    }
    /* HTTP first: sealed events name segment URLs with the port actually bound. */
    struct ingest_http_opts ho = {.listen = cfg->ingest.listen,
                                  .max_body = cfg->http.max_body,
                                  .auth_token_file = cfg->http.auth_token_file,
                                  .node_id = cfg->node_id};
    if ((rc = ingest_http_start(&ho, &n->http, err)) != ST_OK)
        goto fail;
    /* ingest.advertise_url, or http:// + the address actually bound */
    if (cfg_ingest_advertise_url(cfg, ingest_http_port(n->http), n->url, sizeof(n->url)) != ST_OK) {
        rc = st_err_set(err, ST_ERANGE, "ingest.advertise_url: longer than %zu bytes",
                        sizeof(n->url));
        goto fail;
    }
    for (size_t i = 0; i < nc; i++)
        if ((rc = open_collection(n, i, err)) != ST_OK)
            goto fail;
    struct dlq_opts dopt = {.brokers = cfg->kafka.brokers,
                            .properties = (const char *const(*)[2])n->props,
                            .n_properties = cfg->kafka.n_properties};
    if ((rc = dlq_open(&dopt, &n->dlq, err)) != ST_OK)
        goto fail;
    struct ing_consumer_opts co = {.brokers = cfg->kafka.brokers,
                                   .group_id = cfg->kafka.group_id,
                                   .properties = (const char *const(*)[2])n->props,
                                   .n_properties = cfg->kafka.n_properties,
                                   .colls = n->ic,
                                   .n_colls = nc,
                                   .dlq = n->dlq,
                                   .dead_letter_topic = cfg->kafka.dead_letter_topic,
                                   .close_catchup_ms = cfg->shutdown_timeout_ms / 3,
                                   .on_assignment = on_assignment,
                                   .assignment_ctx = &n->ann};
    if ((rc = ing_consumer_open(&co, &n->cons, err)) != ST_OK)
        goto fail;
    if ((rc = ingest_http_ready(n->http, n->hc, nc, n->cons)) != ST_OK) {
        st_err_set(err, rc, "out of memory");
        goto fail;
    }
    /* Announced once it serves (SPEC.md §7): an indexer may ask for fresh data at once. */
    if ((rc = start_announcer(cfg, &n->nats_auth, n->url, started_ms, &n->ann, err)) != ST_OK)
        goto fail;
    *out = n;
    return ST_OK;
fail:
    (void)ingest_node_stop(n, false);
    return rc != ST_OK ? rc : ST_EIO;
}

int ingest_node_poll(struct ingest_node *n, int timeout_ms, struct st_err *err)
{
    return ing_consumer_poll(n->cons, timeout_ms, err);
}

unsigned ingest_node_port(const struct ingest_node *n)
{
    return ingest_http_port(n->http);
}

const char *ingest_node_url(const struct ingest_node *n)
{
    return n->url;
}

void ingest_node_status(struct ingest_node *n, char *buf, size_t cap)
{
    struct ing_stats st;
    ing_consumer_stats(n->cons, &st);
    snprintf(buf, cap, "%" PRIu64 " records, %" PRIu64 " rejected, %" PRIu64 " commits", st.records,
             st.rejected, st.commits);
}

int ingest_node_stop(struct ingest_node *n, bool clean)
{
    if (n == NULL)
        return ST_OK;
    int rc = ST_OK;
    /* A clean stop says goodbye first (indexers stop asking this node for fresh data before
     * its HTTP goes); a failure does not: indexers find out from its silence. */
    ingest_announce_stop(n->ann, clean, BYE_WAIT_MS);
    ingest_http_stop(n->http); /* no reads while the stores close */
    if (ing_consumer_close(n->cons) != ST_OK)
        rc = ST_EIO;
    /* Per collection: the publisher stops calling twcs, twcs stops handing it events (its
     * timer thread seals and expires until twcs_close), then the publisher goes. */
    for (size_t i = 0; n->rt != NULL && i < n->cfg->n_collections; i++) {
        if (n->rt[i].pub != NULL)
            outbox_pub_attach(n->rt[i].pub, NULL);
        if (n->rt[i].twcs != NULL && twcs_close(n->rt[i].twcs) != ST_OK)
            rc = ST_EIO;
        outbox_pub_stop(n->rt[i].pub);
        free(n->rt[i].dir);
    }
    dlq_close(n->dlq);
    ingest_announce_free(n->ann); /* after the consumer: its last revoke calls the hook */
    free(n->rt);
    free(n->ic);
    free(n->hc);
    free(n->props);
    free(n);
    return rc;
}
