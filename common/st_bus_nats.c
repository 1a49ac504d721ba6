/*
 * st_bus_nats.c — st_bus on NATS and JetStream through nats.c (st_bus.h).
 *
 * Lifetime. nats.c calls the connection callbacks (disconnected, reconnected, closed) on its
 * own thread, whenever it gets to them, with our state as closure; the closed callback is the
 * last. So: a user callback runs only while `closing` is false, counted in in_cb; st_bus_close
 * sets closing and waits for in_cb to reach 0 — from then on no user callback runs, whatever
 * nats.c still does. Then it closes the connection and waits (close_wait_ms) for the closed
 * callback before freeing its state; if that never comes, the state is logged and leaked
 * (never the caller's). Subscriptions likewise: the handler runs under the subscription's
 * cb_mu only while it is not dead, and its state is freed once nats.c's on-complete callback
 * said the handler will not be called again. Pull consumers: a fetched natsMsg points at its
 * subscription without holding it (its ack publishes through msg->sub->conn), so each message
 * holds a reference on its npull and the subscription is destroyed only when the consumer is
 * closed and its last message freed; the subscription holds the connection, so an ack after
 * st_bus_close fails (connection closed) instead of reading freed memory.
 */
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_bus_int.h"
#include "st_clock.h"
#include "st_fault.h"
#include "st_log.h"

struct nsub;

struct nconn {
    natsConnection *nc;
    jsCtx *js;
    void (*on_state)(void *ctx, enum st_bus_state state);
    void *ctx;
    int64_t close_wait_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* CLOCK_MONOTONIC */
    bool closing;            /* under mu: no user callback starts any more */
    int in_cb;               /* under mu: user callbacks running */
    bool closed;             /* under mu: nats.c ran the closed callback */
    struct nsub *subs;       /* under mu */
    natsSubscription **kept; /* under mu: closed, freed after natsConnection_Close (sub_off) */
    size_t nkept, capkept;
};

struct nsub {
    struct nconn *c;
    natsSubscription *sub;
    st_bus_msg_fn fn;
    void *ctx;
    pthread_mutex_t cb_mu; /* held while fn runs */
    bool dead;             /* under cb_mu */
    _Atomic bool dying;    /* set before dead: skip queued messages at once */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool complete;     /* under mu: nats.c will not call the handler again */
    struct nsub *next; /* c->subs, under c->mu */
};

struct npull {
    struct nconn *c;
    natsSubscription *sub;
    pthread_mutex_t mu;
    int refs;  /* under mu: 1 while open, plus one per fetched message not yet freed */
    bool safe; /* set by n_pull_close: sub_off's answer */
};

struct nmsg {
    natsMsg *m;
    struct npull *p; /* a reference */
};

static int64_t mono_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

/* Waits on cv (mu held) until pred or deadline (monotonic ms). */
#define WAIT_UNTIL(cv, mu, pred, deadline)                                                         \
    do {                                                                                           \
        while (!(pred)) {                                                                          \
            int64_t left_ = (deadline)-mono_ms();                                                  \
            if (left_ <= 0)                                                                        \
                break;                                                                             \
            st_cond_wait_ms((cv), (mu), left_);                                                    \
        }                                                                                          \
    } while (0)

/* The fault point models a late callback thread (a loaded host): each connection callback runs
 * 5 ms later — late enough to come after anything the closer does next, early enough to come
 * before the process exits. */
static void late_callback(void)
{
    if (ST_FAULT("bus.nats.late_callback") != 0)
        nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
}

static void user_state(struct nconn *c, enum st_bus_state state)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing || c->on_state == NULL) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->in_cb++;
    pthread_mutex_unlock(&c->mu);
    c->on_state(c->ctx, state);
    pthread_mutex_lock(&c->mu);
    c->in_cb--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    late_callback();
    user_state(closure, ST_BUS_DISCONNECTED);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    late_callback();
    user_state(closure, ST_BUS_RECONNECTED);
}

/* The last callback nats.c makes for a connection: after it, c may go. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    late_callback();
    struct nconn *c = closure;
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void nconn_free(struct nconn *c)
{
    free(c->kept);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void n_close(void *impl);

/* nats.c's reason for the last failure on this thread (it has the server's "Authorization
 * Violation", the TLS error), else the status's text. */
static const char *nats_reason(natsStatus s)
{
    natsStatus ls = NATS_OK;
    const char *t = nats_GetLastError(&ls);
    return t != NULL && t[0] != '\0' ? t : natsStatus_GetText(s);
}

static bool has(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Credentials and TLS (st_bus.h) into no. `what` names the option that failed. */
static natsStatus set_auth(natsOptions *no, const char *url, const struct st_bus_auth *a,
                           const char **what)
{
    natsStatus s = NATS_OK;
    bool tls = strstr(url, "tls://") != NULL;
    if (a != NULL)
        tls =
            tls || has(a->tls_ca) || has(a->tls_cert) || has(a->tls_key) || has(a->tls_server_name);
    if (tls && (s = natsOptions_SetSecure(no, true)) != NATS_OK) {
        *what = "TLS";
        return s;
    }
    if (a == NULL)
        return NATS_OK;
    if (has(a->user) && (s = natsOptions_SetUserInfo(no, a->user, a->password)) != NATS_OK) {
        *what = "user";
        return s;
    }
    if (has(a->token) && (s = natsOptions_SetToken(no, a->token)) != NATS_OK) {
        *what = "token";
        return s;
    }
    if (has(a->creds_file) &&
        (s = natsOptions_SetUserCredentialsFromFiles(no, a->creds_file, NULL)) != NATS_OK) {
        *what = a->creds_file;
        return s;
    }
    if (has(a->tls_ca) && (s = natsOptions_LoadCATrustedCertificates(no, a->tls_ca)) != NATS_OK) {
        *what = a->tls_ca;
        return s;
    }
    if (has(a->tls_cert) &&
        (s = natsOptions_LoadCertificatesChain(no, a->tls_cert, a->tls_key)) != NATS_OK) {
        *what = a->tls_cert;
        return s;
    }
    if (has(a->tls_server_name) &&
        (s = natsOptions_SetExpectedHostname(no, a->tls_server_name)) != NATS_OK) {
        *what = "TLS server name";
        return s;
    }
    return NATS_OK;
}

static int n_connect(const struct st_bus_opts *o, void **impl, struct st_err *err)
{
    const struct st_bus_auth *a = o->auth;
    if (a != NULL) {
        int ways = has(a->user) + has(a->token) + has(a->creds_file);
        if (ways > 1)
            return st_err_set(err, ST_EINVAL,
                              "bus: give one of user+password, token, creds_file (not %d)", ways);
        if (has(a->user) != has(a->password))
            return st_err_set(err, ST_EINVAL, "bus: user and password go together");
        if (has(a->tls_cert) != has(a->tls_key))
            return st_err_set(err, ST_EINVAL, "bus: TLS cert and key go together");
    }
    char shown[1024];
    st_bus_url_redact(o->url, shown, sizeof(shown));
    struct nconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    c->on_state = o->on_state;
    c->ctx = o->ctx;
    c->close_wait_ms = o->close_wait_ms > 0 ? o->close_wait_ms : 5000;
    pthread_mutex_init(&c->mu, NULL);
    st_cond_init_mono(&c->cv);
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, o->url);
    const char *what = NULL;
    if (s == NATS_OK && (s = set_auth(no, o->url, a, &what)) != NATS_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", nats_reason(s));
        natsOptions_Destroy(no);
        nconn_free(c);
        return st_err_set(err, ST_EINVAL, "NATS %s: %s", what, why);
    }
    if (s == NATS_OK && o->name != NULL)
        s = natsOptions_SetName(no, o->name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000);
    if (s == NATS_OK) /* once connected, reconnect forever: an outage must not need a restart */
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, o->reconnect_wait_ms > 0 ? o->reconnect_wait_ms : 250);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, c);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, c);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, c);
    if (s == NATS_OK)
        s = natsConnection_Connect(&c->nc, no);
    natsOptions_Destroy(no);
    if (s != NATS_OK) { /* a failed connect makes no callbacks */
        nconn_free(c);
        return st_err_set(err, ST_EIO, "connecting to %s: %s", shown, nats_reason(s));
    }
    s = natsConnection_JetStream(&c->js, c->nc, NULL);
    if (s != NATS_OK) {
        n_close(c);
        return st_err_set(err, ST_EIO, "JetStream on %s: %s", shown, natsStatus_GetText(s));
    }
    *impl = c;
    return ST_OK;
}

static void n_unsubscribe(void *impl, void *sub);

static void n_close(void *impl)
{
    struct nconn *c = impl;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    while (c->in_cb > 0) /* a running on_state finishes; none starts any more */
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    for (;;) { /* subscriptions left: removed as if unsubscribed */
        pthread_mutex_lock(&c->mu);
        struct nsub *s = c->subs;
        pthread_mutex_unlock(&c->mu);
        if (s == NULL)
            break;
        n_unsubscribe(c, s);
    }
    jsCtx_Destroy(c->js);
    natsConnection_Close(c->nc); /* joins the read loop: what sub_off kept is safe to free */
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nkept; i++)
        natsSubscription_Destroy(c->kept[i]);
    c->nkept = 0;
    pthread_mutex_unlock(&c->mu);
    int64_t deadline = mono_ms() + c->close_wait_ms;
    pthread_mutex_lock(&c->mu);
    WAIT_UNTIL(&c->cv, &c->mu, c->closed, deadline);
    bool closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    natsConnection_Destroy(c->nc);
    if (!closed) { /* nats.c may still call into c: keep it (the process is about to exit) */
        st_log_error("bus",
                     "nats.c did not run the closed callback within %" PRId64
                     " ms; leaking the connection's state",
                     c->close_wait_ms);
        return;
    }
    nconn_free(c);
}

static bool n_connected(void *impl)
{
    struct nconn *c = impl;
    return natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
}

static int n_publish(void *impl, const char *subject, const void *data, size_t len)
{
    struct nconn *c = impl;
    natsStatus s = natsConnection_Publish(c->nc, subject, data, (int)len);
    return s == NATS_OK ? ST_OK : s == NATS_NO_MEMORY ? ST_ENOMEM : ST_EIO;
}

static int n_flush(void *impl, int timeout_ms)
{
    struct nconn *c = impl;
    natsStatus s = natsConnection_FlushTimeout(c->nc, timeout_ms > 0 ? timeout_ms : 1);
    return s == NATS_OK ? ST_OK : s == NATS_TIMEOUT ? ST_ETIMEDOUT : ST_EIO;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct nsub *s = closure;
    pthread_mutex_lock(&s->cb_mu);
    if (!s->dead && !atomic_load(&s->dying))
        s->fn(s->ctx, natsMsg_GetSubject(msg), natsMsg_GetData(msg),
              (size_t)natsMsg_GetDataLength(msg));
    pthread_mutex_unlock(&s->cb_mu);
    natsMsg_Destroy(msg);
}

/* nats.c: the handler has returned for the last time. */
static void on_complete(void *closure)
{
    struct nsub *s = closure;
    pthread_mutex_lock(&s->mu);
    s->complete = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void nsub_free(struct nsub *s)
{
    pthread_mutex_destroy(&s->cb_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/*
 * Takes sub off the connection; true when it may then be freed. libnats 3.4 (Debian's) has a
 * race in natsSubscription_Destroy alone: its read loop looks a message's subscription up,
 * lets go of the lookup's lock and then uses the subscription without holding a reference
 * (fixed upstream in 3.6.1, nats.c#638), so a subscription freed while a message for it is
 * being processed is a use after free — seen as SIGABRT in CI, a pull closed as its last pull
 * request's timeout status came in. So: the subscription is first taken off the connection's
 * table (UNSUB; no message found afterwards can reach it), then a PING must be answered (the
 * read loop processes in order: any message it was handling when the UNSUB went out is done).
 * Without that answer (disconnected, or a stalled server: the read loop may still be working
 * through what it had read) it is not safe: the connection keeps the subscription until
 * n_close frees it after natsConnection_Close, which joins the read loop (keep_until_close; a
 * pull whose messages outlive it keeps it for good, sub_release). Unsubscribe
 * deletes a JetStream consumer that the library created itself; pulls are bound to consumers
 * created beforehand (n_pull_open), so nothing is deleted.
 */
static bool sub_off(struct nconn *c, natsSubscription *sub)
{
    (void)natsSubscription_Unsubscribe(sub); /* fails when already closed: fine */
    if (ST_FAULT("bus.nats.flush") != 0)     /* tests: the flush is not answered */
        return false;
    return natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED &&
           natsConnection_FlushTimeout(c->nc, 2000) == NATS_OK;
}

/* Keeps sub, taken off by sub_off without its proof, until n_close frees it after the
 * connection is closed (natsConnection_Close joins the read loop). */
static void keep_until_close(struct nconn *c, natsSubscription *sub)
{
    pthread_mutex_lock(&c->mu);
    if (c->nkept == c->capkept) {
        size_t cap = c->capkept ? 2 * c->capkept : 4;
        natsSubscription **k = realloc(c->kept, cap * sizeof(*k));
        if (k == NULL) {
            pthread_mutex_unlock(&c->mu);
            st_log_warn("bus", "out of memory: a closed subscription is kept for good");
            return;
        }
        c->kept = k;
        c->capkept = cap;
    }
    c->kept[c->nkept++] = sub;
    pthread_mutex_unlock(&c->mu);
}

/* Takes sub off the connection and frees it now, or once the connection is closed. */
static void sub_close(struct nconn *c, natsSubscription *sub)
{
    if (sub_off(c, sub))
        natsSubscription_Destroy(sub);
    else
        keep_until_close(c, sub);
}

/* Frees the subscription of a pull whose last message outlived it, if sub_off said it may;
 * else keeps it for good (logged: the connection may be gone, so it cannot keep it). Only a
 * pull closed while the connection was down or stalled, with messages still held, gets here. */
static void sub_release(natsSubscription *sub, bool safe)
{
    if (safe) {
        natsSubscription_Destroy(sub);
        return;
    }
    st_log_warn("bus", "a pull closed while the NATS connection was down or stalled, its "
                       "messages freed later: its subscription is kept, not freed");
}

static int n_subscribe(void *impl, const char *subject, st_bus_msg_fn fn, void *ctx, void **out,
                       struct st_err *err)
{
    struct nconn *c = impl;
    struct nsub *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    s->c = c;
    s->fn = fn;
    s->ctx = ctx;
    pthread_mutex_init(&s->cb_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    st_cond_init_mono(&s->cv);
    natsStatus st = natsConnection_Subscribe(&s->sub, c->nc, subject, on_msg, s);
    if (st == NATS_OK)
        st = natsSubscription_SetOnCompleteCB(s->sub, on_complete, s);
    if (st != NATS_OK) {
        if (s->sub != NULL) {
            pthread_mutex_lock(&s->cb_mu);
            s->dead = true;
            pthread_mutex_unlock(&s->cb_mu);
            sub_close(c, s->sub); /* without on_complete: s stays (small) */
            return st_err_set(err, ST_EIO, "subscribing to %s: %s", subject,
                              natsStatus_GetText(st));
        }
        nsub_free(s);
        return st_err_set(err, ST_EIO, "subscribing to %s: %s", subject, natsStatus_GetText(st));
    }
    pthread_mutex_lock(&c->mu);
    s->next = c->subs;
    c->subs = s;
    pthread_mutex_unlock(&c->mu);
    *out = s;
    return ST_OK;
}

static void n_unsubscribe(void *impl, void *sub)
{
    struct nconn *c = impl;
    struct nsub *s = sub;
    pthread_mutex_lock(&c->mu);
    for (struct nsub **pp = &c->subs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    atomic_store(&s->dying, true);
    pthread_mutex_lock(&s->cb_mu); /* waits for a running handler; none runs fn again */
    s->dead = true;
    pthread_mutex_unlock(&s->cb_mu);
    (void)natsSubscription_Unsubscribe(s->sub); /* fails when already closed: fine */
    int64_t deadline = mono_ms() + c->close_wait_ms;
    pthread_mutex_lock(&s->mu);
    WAIT_UNTIL(&s->cv, &s->mu, s->complete, deadline);
    bool complete = s->complete;
    pthread_mutex_unlock(&s->mu);
    sub_close(c, s->sub);
    if (!complete) {
        st_log_error("bus",
                     "nats.c did not complete a subscription within %" PRId64
                     " ms; leaking its state",
                     c->close_wait_ms);
        return;
    }
    nsub_free(s);
}

static int n_stream_ensure(void *impl, const char *name, const char *const *subjects, size_t n,
                           const char *narrow, bool *narrowed, struct st_err *err)
{
    struct nconn *c = impl;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = (const char **)(uintptr_t)subjects;
    sc.SubjectsLen = (int)n;
    sc.Storage = js_FileStorage;
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, c->js, &sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    si = NULL;
    if (s == NATS_OK)
        return ST_OK;
    if (jerr != JSStreamNameExistErr)
        return st_err_set(err, ST_EIO, "creating stream %s: %s, JetStream error %d%s", name,
                          natsStatus_GetText(s), (int)jerr,
                          jerr == JSStreamSubjectOverlapErr
                              ? " (another stream already holds these subjects)"
                              : "");
    /* It exists (made by another node or an earlier run). */
    if (narrow == NULL)
        return ST_OK;
    if (js_GetStreamInfo(&si, c->js, name, NULL, &jerr) != NATS_OK || si->Config == NULL) {
        jsStreamInfo_Destroy(si);
        return ST_OK; /* it exists: that is all this needs */
    }
    jsStreamConfig *cfg = si->Config;
    if (cfg->SubjectsLen == 1 && strcmp(cfg->Subjects[0], narrow) == 0) {
        const char **had = cfg->Subjects;
        cfg->Subjects = (const char **)(uintptr_t)subjects;
        cfg->SubjectsLen = (int)n;
        jsStreamInfo *ui = NULL;
        s = js_UpdateStream(&ui, c->js, cfg, NULL, &jerr);
        cfg->Subjects = had; /* si frees its own */
        cfg->SubjectsLen = 1;
        jsStreamInfo_Destroy(ui);
        if (s == NATS_OK && narrowed != NULL)
            *narrowed = true;
        else if (s != NATS_OK)
            st_log_warn("bus", "stream %s holds %s; narrowing it failed: %s, JetStream error %d",
                        name, narrow, natsStatus_GetText(s), (int)jerr);
    }
    jsStreamInfo_Destroy(si);
    return ST_OK;
}

static int n_js_publish(void *impl, const char *subject, const void *data, size_t len,
                        const char *msg_id, int timeout_ms, struct st_err *err)
{
    struct nconn *c = impl;
    if (natsConnection_Status(c->nc) != NATS_CONN_STATUS_CONNECTED)
        return st_err_set(err, ST_EIO, "publishing to %s: not connected", subject);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    po.MaxWait = timeout_ms > 0 ? timeout_ms : 5000;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&pa, c->js, subject, data, (int)len, &po, &jerr);
    jsPubAck_Destroy(pa);
    if (s == NATS_OK)
        return ST_OK;
    return st_err_set(err, s == NATS_TIMEOUT ? ST_ETIMEDOUT : ST_EIO,
                      "publishing to %s: %s (JetStream error %d)", subject, natsStatus_GetText(s),
                      (int)jerr);
}

static int n_pull_open(void *impl, const struct st_bus_pull_opts *o, void **out, struct st_err *err)
{
    struct nconn *c = impl;
    struct npull *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    p->c = c;
    p->refs = 1;
    pthread_mutex_init(&p->mu, NULL);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = o->stream;
    so.Config.Durable = o->durable;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = o->ack_wait_ms * 1000000;
    so.Config.MaxAckPending = o->max_ack_pending > 0 ? o->max_ack_pending : 10000;
    so.Config.DeliverPolicy = js_DeliverAll;
    jsErrCode jerr = 0;
    /* The consumer is created here, not by js_PullSubscribe, and the subscription bound to it
     * (so.Consumer): the library then never counts it as its own to delete when the
     * subscription is taken off (sub_off). An existing one is bound as before (its
     * configuration checked against ours by js_PullSubscribe). */
    jsConsumerInfo *ci = NULL;
    natsStatus s = js_GetConsumerInfo(&ci, c->js, o->stream, o->durable, NULL, &jerr);
    if (s == NATS_NOT_FOUND) {
        jsConsumerConfig cc = so.Config;
        cc.Durable = o->durable;
        cc.FilterSubject = o->filter;
        jerr = 0;
        s = js_AddConsumer(&ci, c->js, o->stream, &cc, NULL, &jerr);
        if (s != NATS_OK && (jerr == JSConsumerNameExistErr || jerr == JSConsumerExistingActiveErr))
            s = NATS_OK; /* another process made it meanwhile: bound below, checked there */
    }
    jsConsumerInfo_Destroy(ci);
    if (s == NATS_OK) {
        so.Consumer = o->durable;
        jerr = 0;
        s = js_PullSubscribe(&p->sub, c->js, o->filter, o->durable, NULL, &so, &jerr);
    }
    if (s != NATS_OK) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return st_err_set(err, ST_EIO, "consumer %s on stream %s: %s (JetStream error %d)",
                          o->durable, o->stream, natsStatus_GetText(s), (int)jerr);
    }
    *out = p;
    return ST_OK;
}

static int n_pull_fetch(void *pull, void **msgs, int max, int timeout_ms, struct st_err *err)
{
    struct npull *p = pull;
    if (natsConnection_Status(p->c->nc) != NATS_CONN_STATUS_CONNECTED)
        return st_err_set(err, ST_EIO, "fetching: not connected");
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    natsStatus s =
        natsSubscription_Fetch(&list, p->sub, max, timeout_ms > 0 ? timeout_ms : 1, &jerr);
    if (s == NATS_TIMEOUT) {
        natsMsgList_Destroy(&list);
        return 0;
    }
    if (s != NATS_OK) {
        natsMsgList_Destroy(&list);
        return st_err_set(err, ST_EIO, "fetching: %s (JetStream error %d)", natsStatus_GetText(s),
                          (int)jerr);
    }
    int n = 0, got = list.Count;
    for (int i = 0; i < list.Count && n < max; i++) {
        struct nmsg *m = malloc(sizeof(*m));
        if (m == NULL) /* the rest is destroyed unacked: redelivered after ack_wait */
            break;
        m->m = list.Msgs[i];
        m->p = p;
        list.Msgs[i] = NULL; /* ours now */
        msgs[n++] = m;
    }
    pthread_mutex_lock(&p->mu);
    p->refs += n;
    pthread_mutex_unlock(&p->mu);
    natsMsgList_Destroy(&list);
    if (n == 0 && got > 0)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory fetching");
    return n;
}

static void npull_release(struct npull *p)
{
    pthread_mutex_lock(&p->mu);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (!last)
        return;
    if (p->sub != NULL)
        sub_release(p->sub, p->safe); /* taken off by n_pull_close already */
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void n_pull_close(void *pull)
{
    struct npull *p = pull;
    /* Off the connection now, while it is open (pulls close before the bus): a message freed
     * later, after st_bus_close even, then only frees the subscription (the race sub_off
     * closes needs a message arriving for it, and none can). Bound: the durable consumer stays. */
    bool safe = sub_off(p->c, p->sub);
    pthread_mutex_lock(&p->mu); /* the last release reads safe (fetches are over: refs only
                                 * fall from here) */
    p->safe = safe;
    natsSubscription *kept = !safe && p->refs == 1 ? p->sub : NULL;
    if (kept != NULL)
        p->sub = NULL; /* no message holds it: the connection keeps it until closed */
    pthread_mutex_unlock(&p->mu);
    if (kept != NULL)
        keep_until_close(p->c, kept);
    npull_release(p); /* messages still held keep the subscription until they are freed */
}

static natsMsg *nmsg_of(const void *m)
{
    return ((const struct nmsg *)m)->m;
}

static const char *n_msg_subject(const void *m)
{
    return natsMsg_GetSubject(nmsg_of(m));
}

static const void *n_msg_data(const void *m, size_t *len)
{
    natsMsg *nm = nmsg_of(m);
    if (len != NULL)
        *len = (size_t)natsMsg_GetDataLength(nm);
    return natsMsg_GetData(nm);
}

static uint64_t n_msg_delivered(const void *m)
{
    jsMsgMetaData *meta = NULL;
    uint64_t n = 1;
    if (natsMsg_GetMetaData(&meta, nmsg_of(m)) == NATS_OK)
        n = meta->NumDelivered;
    jsMsgMetaData_Destroy(meta);
    return n;
}

static int n_status(natsStatus s)
{
    return s == NATS_OK ? ST_OK : s == NATS_TIMEOUT ? ST_ETIMEDOUT : ST_EIO;
}

static int n_msg_ack(void *m)
{
    return n_status(natsMsg_Ack(nmsg_of(m), NULL));
}

static int n_msg_nak(void *m)
{
    return n_status(natsMsg_Nak(nmsg_of(m), NULL));
}

static int n_msg_in_progress(void *m)
{
    return n_status(natsMsg_InProgress(nmsg_of(m), NULL));
}

static void n_msg_free(void *mv)
{
    struct nmsg *m = mv;
    natsMsg_Destroy(m->m);
    npull_release(m->p);
    free(m);
}

const struct st_bus_ops st_bus_nats_ops = {
    .connect = n_connect,
    .close = n_close,
    .connected = n_connected,
    .publish = n_publish,
    .flush = n_flush,
    .subscribe = n_subscribe,
    .unsubscribe = n_unsubscribe,
    .stream_ensure = n_stream_ensure,
    .js_publish = n_js_publish,
    .pull_open = n_pull_open,
    .pull_fetch = n_pull_fetch,
    .pull_close = n_pull_close,
    .msg_subject = n_msg_subject,
    .msg_data = n_msg_data,
    .msg_delivered = n_msg_delivered,
    .msg_ack = n_msg_ack,
    .msg_nak = n_msg_nak,
    .msg_in_progress = n_msg_in_progress,
    .msg_free = n_msg_free,
};
