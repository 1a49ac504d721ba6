/* The outbox publisher: one thread, one ordered queue, JetStream acks before confirmation. */
#include "outbox_pub.h"

#include <inttypes.h>
#include <jansson.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_clock.h"
#include "st_fault.h"
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
    /* NATS connections whose closed callback nats.c has not run yet (under mu). nats.c calls
     * the connection callbacks with p as closure from its own thread, in order, the closed
     * one last: p may be freed only once this is 0. */
    int conns;
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

/* The connection callbacks run on nats.c's callback thread, whenever it gets to them. The
 * fault point models a late callback thread (a loaded host): each callback runs 5 ms later —
 * late enough to come after anything the caller of natsConnection_Destroy does next, early
 * enough to come before the process exits. */
static void late_callback(void)
{
    if (ST_FAULT("outbox.nats.late_callback") != 0)
        nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    late_callback();
    struct outbox_pub *p = closure;
    atomic_store(&p->connected, false);
}

/* The last callback nats.c makes for a connection: after it, p may go. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    late_callback();
    struct outbox_pub *p = closure;
    pthread_mutex_lock(&p->mu);
    p->conns--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    late_callback();
    struct outbox_pub *p = closure;
    atomic_store(&p->connected, true);
}

/* The stream's subjects: the window events only. Not strata.>: node announcements
 * (strata.nodes.<node_id>, core NATS, every few seconds) must not be stored. */
static const char *stream_subjects[] = {"strata.*.sealed", "strata.*.expired", "strata.*.indexed"};

/*
 * A stream created by strata before node announcements existed holds strata.>, which would
 * store every announcement forever. Such a stream (exactly that one subject: what strata
 * made) is narrowed to the event subjects; a subject list an operator chose is left alone.
 */
static void narrow_old_stream(struct outbox_pub *p, jsCtx *js)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, js, p->stream, NULL, &jerr) != NATS_OK || si->Config == NULL) {
        jsStreamInfo_Destroy(si);
        return;
    }
    jsStreamConfig *sc = si->Config;
    if (sc->SubjectsLen == 1 && strcmp(sc->Subjects[0], "strata.>") == 0) {
        const char **had = sc->Subjects;
        sc->Subjects = stream_subjects;
        sc->SubjectsLen = 3;
        jsStreamInfo *ui = NULL;
        natsStatus s = js_UpdateStream(&ui, js, sc, NULL, &jerr);
        sc->Subjects = had; /* si frees its own */
        sc->SubjectsLen = 1;
        jsStreamInfo_Destroy(ui);
        if (s == NATS_OK)
            st_log_notice("outbox",
                          "stream %s: subjects strata.> narrowed to strata.*.sealed|expired|"
                          "indexed (node announcements on strata.nodes.> are not to be stored)",
                          p->stream);
        else
            st_log_warn("outbox",
                        "stream %s holds strata.>, so it stores node announcements too; "
                        "narrowing it failed: %s, JetStream error %d",
                        p->stream, natsStatus_GetText(s), (int)jerr);
    }
    jsStreamInfo_Destroy(si);
}

static natsStatus connect_js(struct outbox_pub *p, natsConnection **nc, jsCtx **js)
{
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, p);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, p);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, p);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, p->url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, 2000);
    if (s == NATS_OK) /* reconnect forever: an outage must not need a restart */
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, 200);
    if (s == NATS_OK)
        s = natsConnection_Connect(nc, no);
    natsOptions_Destroy(no);
    if (s == NATS_OK) { /* a failed connect makes no callbacks; a made one ends with on_closed */
        pthread_mutex_lock(&p->mu);
        p->conns++;
        pthread_mutex_unlock(&p->mu);
    }
    if (s == NATS_OK)
        s = natsConnection_JetStream(js, *nc, NULL);
    if (s == NATS_OK) {
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = p->stream;
        sc.Subjects = stream_subjects;
        sc.SubjectsLen = 3;
        sc.Storage = js_FileStorage;
        jsErrCode jerr = 0;
        jsStreamInfo *si = NULL;
        s = js_AddStream(&si, *js, &sc, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK && jerr == JSStreamNameExistErr) {
            s = NATS_OK; /* created by another node, an indexer or an earlier run */
            narrow_old_stream(p, *js);
        } else if (s != NATS_OK)
            st_log_warn("outbox",
                        "creating stream %s (subjects strata.*.sealed|expired|indexed): %s, "
                        "JetStream error %d%s",
                        p->stream, natsStatus_GetText(s), (int)jerr,
                        jerr == JSStreamSubjectOverlapErr
                            ? " (another stream already holds strata.* subjects)"
                            : "");
    }
    if (s != NATS_OK) {
        jsCtx_Destroy(*js);
        natsConnection_Destroy(*nc);
        *js = NULL;
        *nc = NULL;
    }
    return s;
}

static void *run(void *arg)
{
    struct outbox_pub *p = arg;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    int64_t backoff = 100;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        /* Connect eagerly (readiness reports it), then wait for events. */
        while (!p->stop && js != NULL && (p->head == NULL || p->t == NULL))
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        struct pending *e = p->t != NULL ? p->head : NULL;
        pthread_mutex_unlock(&p->mu);
        natsStatus s = js != NULL ? NATS_OK : connect_js(p, &nc, &js);
        if (js != NULL && s == NATS_OK)
            atomic_store(&p->connected, true);
        if (s == NATS_OK && e == NULL)
            continue;
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        if (s == NATS_OK) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = e->msg_id;
            po.MaxWait = 5000;
            s = js_Publish(&pa, js, e->subject, e->body, (int)strlen(e->body), &po, &jerr);
            jsPubAck_Destroy(pa);
        }
        if (s != NATS_OK) {
            uint32_t dropped;
            if (nc == NULL || natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED)
                atomic_store(&p->connected, false);
            if (st_ratelimit_ok(&p->warn_rl, 1, 10000, &dropped))
                st_log_warn("outbox", "%s %s failed: %s; retrying (%u similar suppressed)",
                            e != NULL ? "publishing" : "connecting to",
                            e != NULL ? e->msg_id : p->url, natsStatus_GetText(s), dropped);
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
        int rc = p->t != NULL ? twcs_event_done(p->t, e->key) : ST_OK;
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
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
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
    pthread_join(p->th, NULL); /* the thread destroyed its connection: on_closed is queued */
    int64_t deadline = st_clock_mono_ns(NULL) + p->o.close_wait_ms * 1000000;
    pthread_mutex_lock(&p->mu);
    while (p->conns > 0 && st_clock_mono_ns(NULL) < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    int conns = p->conns;
    pthread_mutex_unlock(&p->mu);
    if (conns > 0) {
        /* nats.c may still call into p: keeping it is the only safe choice (the process is
         * about to exit). */
        st_log_error("outbox",
                     "NATS callbacks for %s still pending after %" PRId64
                     " ms; the publisher is not freed",
                     p->coll, p->o.close_wait_ms);
        return;
    }
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
