/* The outbox publisher: one thread, one ordered queue, JetStream acks before confirmation. */
#include "outbox_pub.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_bus.h"
#include "st_clock.h"
#include "st_log.h"
#include "st_prom.h"

struct pending {
    struct pending *next;
    char subject[160];
    char msg_id[320];
    char key[128];
    char *body;
    bool sealed;
    int64_t end; /* the window's end, ms */
};

struct outbox_pub {
    struct outbox_pub_opts o;
    char *url, *stream, *node, *coll, *seg_base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pending *head, *tail;
    struct twcs *t; /* written under mu and t_mu; read under either */
    /* Held across every call into t, so that detaching (attach NULL) waits for the call in
     * progress: after it, twcs may close while the publisher lives on. */
    pthread_mutex_t t_mu;
    bool stop;
    uint64_t pending, published;
    _Atomic bool connected;
    struct st_hist fresh; /* window end -> sealed event stored by JetStream */
    struct st_ratelimit warn_rl;
    pthread_t th;
};

static char *json_event(const struct outbox_pub *p, const struct twcs_event *ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "collection", json_string(p->coll));
    json_object_set_new(o, "node", json_string(p->node));
    json_object_set_new(o, "kind", json_string(ev->kind == TWCS_EV_SEALED ? "sealed" : "expired"));
    json_object_set_new(o, "start", json_integer(ev->start));
    json_object_set_new(o, "end", json_integer(ev->end));
    json_object_set_new(o, "version", json_integer(ev->version));
    if (ev->kind == TWCS_EV_SEALED) {
        char file[32], seg[1024];
        snprintf(file, sizeof(file), "%06" PRIu64 ".seg", ev->file_number);
        snprintf(seg, sizeof(seg), "%s/%s", p->seg_base, file);
        json_object_set_new(o, "segment", json_string(seg));
        json_object_set_new(o, "records", json_integer((json_int_t)ev->records));
        json_object_set_new(o, "bytes", json_integer((json_int_t)ev->bytes));
        json_object_set_new(o, "checksum", json_integer(ev->checksum));
    } else {
        json_object_set_new(o, "reason", json_string(ev->reason ? ev->reason : ""));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

void outbox_pub_event(void *ctx, const struct twcs_event *ev)
{
    struct outbox_pub *p = ctx;
    struct pending *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->body = json_event(p, ev)) == NULL) {
        /* Still in twcs's outbox: it comes back on the next open. */
        st_log_error("outbox", "out of memory queueing event %s (kept in the outbox)", ev->key);
        free(e);
        return;
    }
    snprintf(e->subject, sizeof(e->subject), "strata.%s.%s", p->coll,
             ev->kind == TWCS_EV_SEALED ? "sealed" : "expired");
    snprintf(e->msg_id, sizeof(e->msg_id), "%s/%s/%s", p->node, p->coll, ev->key);
    snprintf(e->key, sizeof(e->key), "%s", ev->key);
    e->sealed = ev->kind == TWCS_EV_SEALED;
    e->end = ev->end;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = e;
    else
        p->head = e;
    p->tail = e;
    p->pending++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void pause_ms(struct outbox_pub *p, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&p->mu);
    if (!p->stop)
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    pthread_mutex_unlock(&p->mu);
}

/* The bus's state callback (a bus thread; never after st_bus_close returned). */
static void on_state(void *ctx, enum st_bus_state state)
{
    struct outbox_pub *p = ctx;
    atomic_store(&p->connected, state == ST_BUS_RECONNECTED);
}

/* The stream's subjects: the window events only. Not strata.>: node announcements
 * (strata.nodes.<node_id>, core NATS, every few seconds) must not be stored. A stream created
 * by strata before node announcements existed holds strata.>, which would store every
 * announcement forever: such a stream (exactly that one subject: what strata made) is narrowed
 * to the event subjects; a subject list an operator chose is left alone. */
static const char *const stream_subjects[] = {"strata.*.sealed", "strata.*.expired",
                                              "strata.*.indexed"};

static int connect_bus(struct outbox_pub *p, struct st_bus **out, struct st_err *err)
{
    char name[200];
    snprintf(name, sizeof(name), "strata-ingest %s outbox %s", p->node, p->coll);
    struct st_bus_opts bo = {.url = p->url,
                             .auth = p->o.auth,
                             .name = name,
                             .connect_timeout_ms = 2000,
                             .reconnect_wait_ms = 200,
                             .close_wait_ms = (int)p->o.close_wait_ms,
                             .on_state = on_state,
                             .ctx = p};
    struct st_bus *b = NULL;
    int rc = st_bus_connect(&bo, &b, err);
    bool narrowed = false;
    if (rc == ST_OK)
        rc = st_bus_stream_ensure(b, p->stream, stream_subjects, 3, "strata.>", &narrowed, err);
    if (rc == ST_OK && narrowed)
        st_log_notice("outbox",
                      "stream %s: subjects strata.> narrowed to strata.*.sealed|expired|"
                      "indexed (node announcements on strata.nodes.> are not to be stored)",
                      p->stream);
    if (rc != ST_OK && b != NULL) {
        st_log_warn("outbox", "stream %s (subjects strata.*.sealed|expired|indexed): %s", p->stream,
                    err->msg);
        st_bus_close(b);
        b = NULL;
    }
    *out = b;
    return rc;
}

static void *run(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "ing-outbox"); /* by itself: a prctl (ing_pipe.c) */
    struct outbox_pub *p = arg;
    struct st_bus *b = NULL;
    int64_t backoff = 100;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        /* Connect eagerly (readiness reports it), then wait for events. */
        while (!p->stop && b != NULL && (p->head == NULL || p->t == NULL))
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        struct pending *e = p->t != NULL ? p->head : NULL;
        pthread_mutex_unlock(&p->mu);
        struct st_err err = {0};
        int rc = b != NULL ? ST_OK : connect_bus(p, &b, &err);
        if (b != NULL && rc == ST_OK)
            atomic_store(&p->connected, st_bus_connected(b));
        if (rc == ST_OK && e == NULL)
            continue;
        if (rc == ST_OK)
            rc = st_bus_js_publish(b, e->subject, e->body, strlen(e->body), e->msg_id, 5000, &err);
        if (rc != ST_OK) {
            uint32_t dropped;
            if (b == NULL || !st_bus_connected(b))
                atomic_store(&p->connected, false);
            if (st_ratelimit_ok(&p->warn_rl, 1, 10000, &dropped))
                st_log_warn("outbox", "%s%s%s%s; retrying (%u similar suppressed)",
                            e != NULL ? "publishing " : "", e != NULL ? e->msg_id : "",
                            e != NULL ? " failed: " : "", err.msg, dropped);
            pause_ms(p, backoff);
            backoff = backoff * 2 > p->o.retry_max_ms ? p->o.retry_max_ms : backoff * 2;
            continue;
        }
        backoff = 100;
        if (e->sealed)
            st_hist_observe(&p->fresh, (double)(st_clock_wall_ms(NULL) - e->end) / 1000.0);
        /* Stored by JetStream: now it may leave the durable outbox (unless twcs was detached
         * meanwhile: then it is handed over again on the next open). */
        pthread_mutex_lock(&p->t_mu);
        rc = p->t != NULL ? twcs_event_done(p->t, e->key) : ST_OK;
        pthread_mutex_unlock(&p->t_mu);
        if (rc != ST_OK)
            st_log_error("outbox", "confirming %s: %s (it will be published again)", e->key,
                         st_strerror(rc));
        pthread_mutex_lock(&p->mu);
        p->head = e->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->pending--;
        p->published++;
        pthread_mutex_unlock(&p->mu);
        free(e->body);
        free(e);
    }
    st_bus_close(b); /* after it, no bus callback runs into p */
    return NULL;
}

int outbox_pub_start(const struct outbox_pub_opts *o, struct outbox_pub **out, struct st_err *err)
{
    *out = NULL;
    struct outbox_pub *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return ST_ENOMEM;
    p->o = *o;
    if (p->o.retry_max_ms <= 0)
        p->o.retry_max_ms = 5000;
    if (p->o.close_wait_ms <= 0)
        p->o.close_wait_ms = 10000;
    p->url = strdup(o->url);
    p->stream = strdup(o->stream ? o->stream : "STRATA");
    p->node = strdup(o->node_id);
    p->coll = strdup(o->collection);
    p->seg_base = strdup(o->segment_base ? o->segment_base : "");
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->t_mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    st_hist_init(&p->fresh, &st_hist_age);
    if (!p->url || !p->stream || !p->node || !p->coll || !p->seg_base ||
        pthread_create(&p->th, NULL, run, p) != 0) {
        free(p->url);
        free(p->stream);
        free(p->node);
        free(p->coll);
        free(p->seg_base);
        pthread_mutex_destroy(&p->mu);
        pthread_mutex_destroy(&p->t_mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return st_err_set(err, ST_ENOMEM, "outbox publisher: cannot start");
    }
    *out = p;
    return ST_OK;
}

void outbox_pub_attach(struct outbox_pub *p, struct twcs *t)
{
    pthread_mutex_lock(&p->t_mu); /* waits for a twcs_event_done in progress */
    pthread_mutex_lock(&p->mu);
    p->t = t;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->t_mu);
}

uint64_t outbox_pub_pending(struct outbox_pub *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->pending;
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint64_t outbox_pub_published(struct outbox_pub *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->published;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void outbox_pub_stop(struct outbox_pub *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL); /* the thread closed its bus connection: no callback comes */
    for (struct pending *e = p->head, *n; e != NULL; e = n) {
        n = e->next;
        free(e->body);
        free(e);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->t_mu);
    pthread_cond_destroy(&p->cv);
    free(p->url);
    free(p->stream);
    free(p->node);
    free(p->coll);
    free(p->seg_base);
    free(p);
}

bool outbox_pub_connected(struct outbox_pub *p)
{
    return atomic_load(&p->connected);
}

const struct st_hist *outbox_pub_freshness(struct outbox_pub *p)
{
    return &p->fresh;
}
