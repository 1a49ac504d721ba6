/* announce.c — ingest node announcements on strata.nodes.<node_id> (announce.h). */
#include "announce.h"

#include <jansson.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_clock.h"
#include "st_log.h"

struct announce {
    struct announce_opts o;
    char **colls;
    char subject[128];
    natsConnection *nc;
    uint64_t seq;
    int64_t started_ms, last_ms;
    char *last_parts; /* the assignment last announced, as JSON text */
};

static json_t *parts_json(const struct ing_lag *parts, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_object_get(o, parts[i].topic);
        if (a == NULL) {
            a = json_array();
            json_object_set_new(o, parts[i].topic, a);
        }
        json_array_append_new(a, json_integer(parts[i].partition));
    }
    return o;
}

char *announce_json(const struct announce_opts *o, uint64_t seq, int64_t started_ms,
                    const struct ing_lag *parts, size_t n, bool bye)
{
    json_t *colls = json_array();
    for (size_t i = 0; i < o->ncoll; i++)
        json_array_append_new(colls, json_string(o->collections[i]));
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:o,s:o,s:I,s:I,s:I,s:b}", "node", o->node_id, "role", "ingest",
                  "url", o->url, "collections", colls, "partitions", parts_json(parts, n), "seq",
                  (json_int_t)seq, "started", (json_int_t)started_ms, "interval_ms",
                  (json_int_t)(o->interval_ms > 0 ? o->interval_ms : 2000), "bye", bye);
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

int announce_start(const struct announce_opts *o, struct announce **out, struct st_err *err)
{
    *out = NULL;
    struct announce *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return ST_ENOMEM;
    a->o = *o;
    if (a->o.interval_ms <= 0)
        a->o.interval_ms = 2000;
    snprintf(a->subject, sizeof(a->subject), "strata.nodes.%s", o->node_id);
    a->started_ms = st_clock_wall_ms(NULL);
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, o->nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, 250);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(no, true, NULL, NULL);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&a->nc, no);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    natsOptions_Destroy(no);
    if (s != NATS_OK) {
        free(a);
        return st_err_set(err, ST_EIO, "nats %s: %s", o->nats_url, natsStatus_GetText(s));
    }
    /* Keep our own copy of the names and URL: the caller's may not outlive us. */
    a->colls = calloc(o->ncoll ? o->ncoll : 1, sizeof(*a->colls));
    char *url = strdup(o->url), *node = strdup(o->node_id);
    if (a->colls == NULL || url == NULL || node == NULL) {
        free(url);
        free(node);
        free(a->colls);
        natsConnection_Destroy(a->nc);
        free(a);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < o->ncoll; i++)
        a->colls[i] = strdup(o->collections[i]);
    a->o.url = url;
    a->o.node_id = node;
    a->o.collections = (const char *const *)a->colls;
    *out = a;
    return ST_OK;
}

static void publish(struct announce *a, const struct ing_lag *parts, size_t n, bool bye)
{
    char *s = announce_json(&a->o, ++a->seq, a->started_ms, parts, n, bye);
    if (s == NULL)
        return;
    natsStatus st = natsConnection_PublishString(a->nc, a->subject, s);
    if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED)
        st_log_debug("ingest", "announce: %s", natsStatus_GetText(st));
    free(s);
}

void announce_tick(struct announce *a, const struct ing_lag *parts, size_t n)
{
    int64_t now = st_clock_mono_ns(NULL) / 1000000;
    json_t *pj = parts_json(parts, n);
    char *ps = pj != NULL ? json_dumps(pj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(pj);
    bool changed = ps != NULL && (a->last_parts == NULL || strcmp(ps, a->last_parts) != 0);
    if (a->seq == 0 || changed || now - a->last_ms >= a->o.interval_ms) {
        publish(a, parts, n, false);
        a->last_ms = now;
        if (changed) {
            free(a->last_parts);
            a->last_parts = ps;
            ps = NULL;
        }
    }
    free(ps);
}

void announce_stop(struct announce *a)
{
    if (a == NULL)
        return;
    publish(a, NULL, 0, true);
    (void)natsConnection_FlushTimeout(a->nc, 1000);
    natsConnection_Close(a->nc);
    natsConnection_Destroy(a->nc);
    for (size_t i = 0; i < a->o.ncoll; i++)
        free(a->colls[i]);
    free(a->colls);
    free((char *)(uintptr_t)a->o.url);
    free((char *)(uintptr_t)a->o.node_id);
    free(a->last_parts);
    free(a);
}
