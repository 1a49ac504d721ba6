/* idx_nodes.c — live ingest nodes from NATS announcements or a pinned list (idx_nodes.h). */
#include "idx_nodes.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "idx_client.h"
#include "st_clock.h"
#include "st_log.h"

#define COLL_MAX 64
/* Ingest nodes known at once (about 5 KB each). A new node first makes room by forgetting the
 * gone ones; past this, announcements of further new nodes are ignored (and logged): a flood
 * of invented node names once grew the table by 1 GB. */
#define NODES_MAX 1024

struct entry {
    struct idx_node n;
    char colls[COLL_MAX][65];
    size_t ncolls;
    bool all;
    int64_t last_ms, interval_ms;
};

struct idx_nodes {
    pthread_mutex_t mu;
    struct entry *e;
    size_t n, cap;
    bool pinned;
    char *token;
    int64_t since_ms, settle_ms; /* since: when discovery (re)started hearing; under mu */
    bool connected;              /* under mu */
    struct st_bus_sub *sub;
    struct st_ratelimit full_rl; /* under mu */
};

static int64_t now_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

void idx_nodes_announce(struct idx_nodes *ns, const char *json, size_t len)
{
    json_t *j = json_loadb(json, len, 0, NULL);
    const char *node = json_string_value(json_object_get(j, "node"));
    const char *url = json_string_value(json_object_get(j, "url"));
    const char *role = json_string_value(json_object_get(j, "role"));
    json_t *colls = json_object_get(j, "collections");
    if (node == NULL || url == NULL || !idx_node_id_ok(node) || strlen(url) >= 512 ||
        (role != NULL && strcmp(role, "ingest") != 0) || !json_is_array(colls)) {
        json_decref(j);
        return;
    }
    bool bye = json_is_true(json_object_get(j, "bye"));
    int64_t interval = json_integer_value(json_object_get(j, "interval_ms"));
    if (interval <= 0 || interval > 600000)
        interval = 2000;
    pthread_mutex_lock(&ns->mu);
    size_t i = 0;
    while (i < ns->n && strcmp(ns->e[i].n.node, node) != 0)
        i++;
    if (bye) {
        if (i < ns->n) {
            st_log_info("indexer", "ingest node %s said goodbye", node);
            ns->e[i] = ns->e[--ns->n];
        }
    } else {
        if (i == ns->n) { /* a new node: forget the gone ones first */
            int64_t now = now_ms();
            for (size_t k = 0; k < ns->n;)
                if (now - ns->e[k].last_ms > 3 * ns->e[k].interval_ms)
                    ns->e[k] = ns->e[--ns->n];
                else
                    k++;
            i = ns->n;
        }
        if (i == ns->n && ns->n >= NODES_MAX) {
            uint32_t before = 0;
            bool say = st_ratelimit_ok(&ns->full_rl, 1, 60000, &before);
            pthread_mutex_unlock(&ns->mu);
            if (say)
                st_log_warn("indexer",
                            "ingest node %s ignored: %d live ingest nodes already announce "
                            "themselves (%u more ignored since the last warning)",
                            node, NODES_MAX, before);
            json_decref(j);
            return;
        }
        if (i == ns->n && ns->n == ns->cap) {
            size_t cap = ns->cap ? 2 * ns->cap : 8;
            struct entry *ne = realloc(ns->e, cap * sizeof(*ne));
            if (ne != NULL) {
                ns->e = ne;
                ns->cap = cap;
            }
        }
        if (i < ns->cap) {
            if (i == ns->n) {
                ns->n++;
                st_log_info("indexer", "ingest node %s at %s", node, url);
            }
            struct entry *e = &ns->e[i];
            memset(e, 0, sizeof(*e));
            strcpy(e->n.node, node);
            strcpy(e->n.url, url);
            size_t k;
            json_t *c;
            json_array_foreach(colls, k, c)
            {
                const char *cs = json_string_value(c);
                if (cs != NULL && strlen(cs) <= 64 && e->ncolls < COLL_MAX)
                    strcpy(e->colls[e->ncolls++], cs);
            }
            e->last_ms = now_ms();
            e->interval_ms = interval;
        }
    }
    pthread_mutex_unlock(&ns->mu);
    json_decref(j);
}

static void on_msg(void *ctx, const char *subject, const void *data, size_t len)
{
    (void)subject;
    idx_nodes_announce(ctx, data, len);
}

int idx_nodes_start(const struct idx_nodes_opts *o, struct idx_nodes **out, struct st_err *err)
{
    (void)err;
    *out = NULL;
    struct idx_nodes *ns = calloc(1, sizeof(*ns));
    if (ns == NULL)
        return ST_ENOMEM;
    pthread_mutex_init(&ns->mu, NULL);
    ns->since_ms = now_ms();
    ns->settle_ms = o->settle_ms > 0 ? o->settle_ms : 3000;
    ns->token = o->token != NULL ? strdup(o->token) : NULL;
    if (o->npinned > 0) {
        ns->pinned = true;
        ns->e = calloc(o->npinned, sizeof(*ns->e));
        if (ns->e == NULL) {
            idx_nodes_stop(ns);
            return ST_ENOMEM;
        }
        for (size_t i = 0; i < o->npinned; i++) {
            snprintf(ns->e[i].n.url, sizeof(ns->e[i].n.url), "%s", o->pinned[i]);
            size_t l = strlen(ns->e[i].n.url);
            while (l > 0 && ns->e[i].n.url[l - 1] == '/')
                ns->e[i].n.url[--l] = '\0';
            ns->e[i].all = true;
        }
        ns->n = ns->cap = o->npinned;
    }
    *out = ns;
    return ST_OK;
}

int idx_nodes_attach(struct idx_nodes *ns, struct st_bus *b, struct st_err *err)
{
    pthread_mutex_lock(&ns->mu);
    bool have = ns->sub != NULL;
    pthread_mutex_unlock(&ns->mu);
    if (ns->pinned || have)
        return ST_OK;
    struct st_bus_sub *sub = NULL;
    int rc = st_bus_subscribe(b, "strata.nodes.>", on_msg, ns, &sub, err);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&ns->mu);
    ns->sub = sub;
    pthread_mutex_unlock(&ns->mu);
    idx_nodes_connection(ns, true);
    return ST_OK;
}

void idx_nodes_connection(struct idx_nodes *ns, bool up)
{
    pthread_mutex_lock(&ns->mu);
    if (up && !ns->connected)
        ns->since_ms = now_ms(); /* announcements were missed: settle again */
    ns->connected = up;
    pthread_mutex_unlock(&ns->mu);
}

bool idx_nodes_settled(struct idx_nodes *ns)
{
    if (ns->pinned)
        return true;
    pthread_mutex_lock(&ns->mu);
    bool ok = ns->sub != NULL && ns->connected && now_ms() - ns->since_ms >= ns->settle_ms;
    pthread_mutex_unlock(&ns->mu);
    return ok;
}

/* A pinned node's id, from its /healthz. */
static void learn_id(struct idx_nodes *ns, struct entry *e)
{
    char url[600];
    snprintf(url, sizeof(url), "%s/healthz", e->n.url);
    struct idx_call c = {.url = url};
    idx_client_run(&c, 1, ns->token, 2000);
    json_t *j = c.status == 200 ? json_loads(c.resp, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(j, "node"));
    if (id != NULL && strlen(id) <= IDX_NODE_MAX) {
        pthread_mutex_lock(&ns->mu);
        strcpy(e->n.node, id);
        pthread_mutex_unlock(&ns->mu);
    }
    json_decref(j);
    idx_call_free(&c);
}

int idx_nodes_live(struct idx_nodes *ns, const char *coll, struct idx_node **out, size_t *n)
{
    if (ns->pinned)
        for (size_t i = 0; i < ns->n; i++)
            if (ns->e[i].n.node[0] == '\0')
                learn_id(ns, &ns->e[i]);
    pthread_mutex_lock(&ns->mu);
    struct idx_node *r = calloc(ns->n ? ns->n : 1, sizeof(*r));
    size_t k = 0;
    int64_t now = now_ms();
    for (size_t i = 0; r != NULL && i < ns->n; i++) {
        const struct entry *e = &ns->e[i];
        if (!ns->pinned && now - e->last_ms > 3 * e->interval_ms)
            continue; /* silent for three intervals: gone */
        bool serves = e->all;
        for (size_t c = 0; !serves && c < e->ncolls; c++)
            serves = strcmp(e->colls[c], coll) == 0;
        if (serves)
            r[k++] = e->n;
    }
    pthread_mutex_unlock(&ns->mu);
    if (r == NULL)
        return ST_ENOMEM;
    *out = r;
    *n = k;
    return ST_OK;
}

void idx_nodes_detach(struct idx_nodes *ns)
{
    pthread_mutex_lock(&ns->mu);
    struct st_bus_sub *sub = ns->sub;
    ns->sub = NULL;
    pthread_mutex_unlock(&ns->mu);
    st_bus_unsubscribe(sub); /* waits for a callback in progress (it takes mu: not held) */
}

void idx_nodes_stop(struct idx_nodes *ns)
{
    if (ns == NULL)
        return;
    idx_nodes_detach(ns); /* no callback may run into ns after it is freed */
    pthread_mutex_destroy(&ns->mu);
    free(ns->e);
    free(ns->token);
    free(ns);
}
