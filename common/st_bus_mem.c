/*
 * st_bus_mem.c — the embedded bus of `strata demo` (st_bus.h): one registry per process.
 *
 * Everything shared lives in the registry under g_mu: streams (messages in memory, seq =
 * index + 1), durable consumers (per-message ack state), core subscriptions. Streams and
 * durables are never freed (they are the "server": gone at exit). A core publish to a subject a
 * stream holds is stored, as with NATS; a JetStream publish is also seen by core subscribers.
 *
 * Core delivery: each subscription has a queue and a thread of its own that runs its
 * callback, one message at a time, holding the subscription's cb_mu; unsubscribing marks it
 * dead under cb_mu (so it waits for a running callback), then stops the thread.
 *
 * Pull consumers: fetch computes redeliveries when asked (a delivered message whose due time
 * passed, or that was nak'ed, is due again), redeliveries first, then new messages in stream
 * order while fewer than max_ack_pending are unacked. Waiting fetches sleep on g_cv.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "st_bus_int.h"
#include "st_clock.h"
#include "st_log.h"

#define DUP_WINDOW_MS (2 * 60 * 1000) /* JetStream's default duplicate window */

struct mem_smsg {
    char *subject;
    void *data;
    size_t len;
    char *msg_id; /* may be NULL */
    int64_t at_ms;
};

struct mem_stream {
    char *name;
    char **subjects;
    size_t nsubj;
    struct mem_smsg *m;
    size_t n, cap;
    struct mem_stream *next;
};

struct mem_pend {
    uint64_t seq;
    uint64_t delivered;
    int64_t due_ms; /* delivered and unacked: due again at this time */
};

struct mem_durable {
    struct mem_stream *st;
    char *name;
    char *filter;
    int64_t ack_wait_ms;
    size_t max_pending;
    uint64_t next_seq;     /* the next stream message not yet delivered */
    struct mem_pend *pend; /* sorted by seq */
    size_t npend, cap;
    struct mem_durable *next;
};

struct mem_qmsg {
    struct mem_qmsg *next;
    char *subject;
    size_t len;
    char data[];
};

struct mem_conn;

struct mem_sub {
    struct mem_conn *c;
    char *subject;
    st_bus_msg_fn fn;
    void *ctx;
    pthread_mutex_t mu; /* the queue, stop */
    pthread_cond_t cv;
    struct mem_qmsg *head, *tail;
    bool stop;
    pthread_mutex_t cb_mu; /* held while fn runs */
    bool dead;             /* under cb_mu: fn never runs again */
    _Atomic bool dying;    /* set before dead: skip queued messages at once */
    pthread_t th;
    struct mem_sub *next; /* the registry's list, under g_mu */
};

struct mem_conn {
    bool closed; /* under g_mu */
};

struct mem_pull {
    struct mem_durable *d;
};

struct mem_msg {
    struct mem_durable *d;
    uint64_t seq, delivered;
    char *subject;
    void *data;
    size_t len;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv; /* CLOCK_MONOTONIC; a stream grew or a message became due */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct mem_stream *g_streams;
static struct mem_durable *g_durables;
static struct mem_sub *g_subs;

static void g_init(void)
{
    st_cond_init_mono(&g_cv);
}

static int64_t now_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

static char *dup_n(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        if (n > 0)
            memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- connections ---- */

static int mem_connect(const struct st_bus_opts *o, void **impl, struct st_err *err)
{
    (void)o;
    pthread_once(&g_once, g_init);
    struct mem_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    *impl = c; /* always connected: on_state never runs */
    return ST_OK;
}

static void mem_unsubscribe(void *impl, void *sub);

static void mem_close(void *impl)
{
    struct mem_conn *c = impl;
    for (;;) { /* subscriptions left: removed as if unsubscribed */
        pthread_mutex_lock(&g_mu);
        c->closed = true;
        struct mem_sub *s = g_subs;
        while (s != NULL && s->c != c)
            s = s->next;
        pthread_mutex_unlock(&g_mu);
        if (s == NULL)
            break;
        mem_unsubscribe(c, s);
    }
    free(c);
}

static bool mem_connected(void *impl)
{
    (void)impl;
    return true;
}

static int mem_flush(void *impl, int timeout_ms)
{
    (void)impl;
    (void)timeout_ms;
    return ST_OK; /* publishing hands messages to subscribers' queues at once */
}

/* ---- core pub/sub ---- */

static void *sub_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "bus-sub"); /* by itself: a prctl (ing_pipe.c) */
    struct mem_sub *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->head == NULL)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop)
            break;
        struct mem_qmsg *q = s->head;
        s->head = q->next;
        if (s->head == NULL)
            s->tail = NULL;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->cb_mu);
        if (!s->dead && !atomic_load(&s->dying))
            s->fn(s->ctx, q->subject, q->data, q->len);
        pthread_mutex_unlock(&s->cb_mu);
        free(q);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues a copy for every live subscription matching subject. Caller holds g_mu. */
static void deliver_locked(const char *subject, const void *data, size_t len)
{
    size_t sl = strlen(subject);
    for (struct mem_sub *s = g_subs; s != NULL; s = s->next) {
        if (!st_bus_subject_match(s->subject, subject))
            continue;
        struct mem_qmsg *q = malloc(sizeof(*q) + len + sl + 2);
        if (q == NULL) { /* like a slow consumer's drop on a server */
            st_log_warn("bus", "embedded: out of memory delivering %s; dropped", subject);
            continue;
        }
        q->next = NULL;
        q->len = len;
        if (len > 0)
            memcpy(q->data, data, len);
        q->data[len] = '\0';
        q->subject = q->data + len + 1;
        memcpy(q->subject, subject, sl + 1);
        pthread_mutex_lock(&s->mu);
        if (s->tail != NULL)
            s->tail->next = q;
        else
            s->head = q;
        s->tail = q;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

static struct mem_stream *stream_of_locked(const char *subject)
{
    for (struct mem_stream *st = g_streams; st != NULL; st = st->next)
        for (size_t i = 0; i < st->nsubj; i++)
            if (st_bus_subject_match(st->subjects[i], subject))
                return st;
    return NULL;
}

/* Appends to st. Caller holds g_mu. */
static int store_locked(struct mem_stream *st, const char *subject, const void *data, size_t len,
                        const char *msg_id)
{
    if (st->n == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 64;
        struct mem_smsg *m = realloc(st->m, cap * sizeof(*m));
        if (m == NULL)
            return ST_ENOMEM;
        st->m = m;
        st->cap = cap;
    }
    struct mem_smsg *m = &st->m[st->n];
    m->subject = strdup(subject);
    m->data = dup_n(data, len);
    m->msg_id = msg_id != NULL ? strdup(msg_id) : NULL;
    m->len = len;
    m->at_ms = now_ms();
    if (m->subject == NULL || m->data == NULL || (msg_id != NULL && m->msg_id == NULL)) {
        free(m->subject);
        free(m->data);
        free(m->msg_id);
        return ST_ENOMEM;
    }
    st->n++;
    pthread_cond_broadcast(&g_cv);
    return ST_OK;
}

static int mem_publish(void *impl, const char *subject, const void *data, size_t len)
{
    struct mem_conn *c = impl;
    pthread_mutex_lock(&g_mu);
    int rc = c->closed ? ST_EIO : ST_OK;
    struct mem_stream *st = rc == ST_OK ? stream_of_locked(subject) : NULL;
    if (st != NULL)
        rc = store_locked(st, subject, data, len, NULL);
    if (rc == ST_OK)
        deliver_locked(subject, data, len);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

static int mem_subscribe(void *impl, const char *subject, st_bus_msg_fn fn, void *ctx, void **out,
                         struct st_err *err)
{
    struct mem_sub *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->subject = strdup(subject)) == NULL) {
        free(s);
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    }
    s->c = impl;
    s->fn = fn;
    s->ctx = ctx;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cb_mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->th, NULL, sub_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->cb_mu);
        pthread_cond_destroy(&s->cv);
        free(s->subject);
        free(s);
        return st_err_set(err, ST_ENOMEM, "bus: cannot start a delivery thread");
    }
    pthread_mutex_lock(&g_mu);
    s->next = g_subs;
    g_subs = s;
    pthread_mutex_unlock(&g_mu);
    *out = s;
    return ST_OK;
}

static void mem_unsubscribe(void *impl, void *sub)
{
    (void)impl;
    struct mem_sub *s = sub;
    pthread_mutex_lock(&g_mu); /* no new messages */
    for (struct mem_sub **pp = &g_subs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&g_mu);
    atomic_store(&s->dying, true);
    pthread_mutex_lock(&s->cb_mu); /* waits for a running callback */
    s->dead = true;
    pthread_mutex_unlock(&s->cb_mu);
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    for (struct mem_qmsg *q = s->head, *n; q != NULL; q = n) {
        n = q->next;
        free(q);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->cb_mu);
    pthread_cond_destroy(&s->cv);
    free(s->subject);
    free(s);
}

/* ---- streams ---- */

static struct mem_stream *stream_find_locked(const char *name)
{
    struct mem_stream *st = g_streams;
    while (st != NULL && strcmp(st->name, name) != 0)
        st = st->next;
    return st;
}

/* Whether some subject matches both patterns (as nats-server refuses overlapping streams):
 * token by token, `>` on either side takes the rest (the other has a token here), `*` on
 * either side takes one token; otherwise the tokens must be equal and both end together.
 * Matching one against the other is not enough: a.*.x and a.b.> share a.b.x. */
static bool overlaps(const char *a, const char *b)
{
    for (;;) {
        const char *ad = strchr(a, '.'), *bd = strchr(b, '.');
        size_t al = ad != NULL ? (size_t)(ad - a) : strlen(a);
        size_t bl = bd != NULL ? (size_t)(bd - b) : strlen(b);
        if ((al == 1 && a[0] == '>') || (bl == 1 && b[0] == '>'))
            return true;
        bool star = (al == 1 && a[0] == '*') || (bl == 1 && b[0] == '*');
        if (!star && (al != bl || memcmp(a, b, al) != 0))
            return false;
        if (ad == NULL || bd == NULL)
            return ad == NULL && bd == NULL;
        a = ad + 1;
        b = bd + 1;
    }
}

/* Sets st's subjects to a copy of v. Caller holds g_mu. */
static int set_subjects_locked(struct mem_stream *st, const char *const *v, size_t n)
{
    char **s = calloc(n, sizeof(*s));
    for (size_t i = 0; s != NULL && i < n; i++) {
        if ((s[i] = strdup(v[i])) == NULL) {
            for (size_t k = 0; k < i; k++)
                free(s[k]);
            free(s);
            s = NULL;
        }
    }
    if (s == NULL)
        return ST_ENOMEM;
    for (size_t i = 0; i < st->nsubj; i++)
        free(st->subjects[i]);
    free(st->subjects);
    st->subjects = s;
    st->nsubj = n;
    return ST_OK;
}

static int mem_stream_ensure(void *impl, const char *name, const char *const *subjects, size_t n,
                             const char *narrow, bool *narrowed, struct st_err *err)
{
    (void)impl;
    int rc = ST_OK;
    pthread_mutex_lock(&g_mu);
    struct mem_stream *st = stream_find_locked(name);
    if (st != NULL) {
        if (narrow != NULL && st->nsubj == 1 && strcmp(st->subjects[0], narrow) == 0) {
            if (set_subjects_locked(st, subjects, n) == ST_OK) {
                if (narrowed != NULL)
                    *narrowed = true;
            } else {
                st_log_warn("bus", "stream %s: narrowing %s: out of memory", name, narrow);
            }
        }
        goto out;
    }
    for (struct mem_stream *o = g_streams; o != NULL; o = o->next)
        for (size_t i = 0; i < o->nsubj; i++)
            for (size_t k = 0; k < n; k++)
                if (overlaps(o->subjects[i], subjects[k])) {
                    rc = st_err_set(err, ST_EIO,
                                    "creating stream %s: subject %s overlaps %s of stream %s", name,
                                    subjects[k], o->subjects[i], o->name);
                    goto out;
                }
    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->name = strdup(name)) == NULL ||
        set_subjects_locked(st, subjects, n) != ST_OK) {
        if (st != NULL)
            free(st->name);
        free(st);
        rc = st_err_set(err, ST_ENOMEM, "creating stream %s: out of memory", name);
        goto out;
    }
    st->next = g_streams;
    g_streams = st;
out:
    pthread_mutex_unlock(&g_mu);
    return rc;
}

static int mem_js_publish(void *impl, const char *subject, const void *data, size_t len,
                          const char *msg_id, int timeout_ms, struct st_err *err)
{
    (void)timeout_ms;
    struct mem_conn *c = impl;
    int rc = ST_OK;
    pthread_mutex_lock(&g_mu);
    struct mem_stream *st = c->closed ? NULL : stream_of_locked(subject);
    if (st == NULL) {
        rc = st_err_set(err, ST_EIO, "publishing to %s: %s", subject,
                        c->closed ? "connection closed" : "no stream holds the subject");
        goto out;
    }
    if (msg_id != NULL) {
        int64_t since = now_ms() - DUP_WINDOW_MS;
        for (size_t i = st->n; i > 0 && st->m[i - 1].at_ms >= since; i--)
            if (st->m[i - 1].msg_id != NULL && strcmp(st->m[i - 1].msg_id, msg_id) == 0)
                goto out; /* a duplicate: acked, not stored again */
    }
    rc = store_locked(st, subject, data, len, msg_id);
    if (rc != ST_OK) {
        st_err_set(err, rc, "publishing to %s: out of memory", subject);
        goto out;
    }
    deliver_locked(subject, data, len);
out:
    pthread_mutex_unlock(&g_mu);
    return rc;
}

/* ---- durable pull consumers ---- */

static int mem_pull_open(void *impl, const struct st_bus_pull_opts *o, void **out,
                         struct st_err *err)
{
    (void)impl;
    int rc = ST_OK;
    struct mem_pull *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    pthread_mutex_lock(&g_mu);
    struct mem_stream *st = stream_find_locked(o->stream);
    if (st == NULL) {
        rc = st_err_set(err, ST_EIO, "consumer %s: stream %s not found", o->durable, o->stream);
        goto out;
    }
    struct mem_durable *d = g_durables;
    while (d != NULL && !(d->st == st && strcmp(d->name, o->durable) == 0))
        d = d->next;
    if (d == NULL) {
        d = calloc(1, sizeof(*d));
        if (d == NULL || (d->name = strdup(o->durable)) == NULL ||
            (d->filter = strdup(o->filter)) == NULL) {
            if (d != NULL)
                free(d->name);
            free(d);
            rc = st_err_set(err, ST_ENOMEM, "bus: out of memory");
            goto out;
        }
        d->st = st;
        d->next_seq = 1; /* deliver all */
        d->next = g_durables;
        g_durables = d;
    } else if (strcmp(d->filter, o->filter) != 0) {
        rc = st_err_set(err, ST_EIO, "consumer %s: exists with filter %s, not %s", o->durable,
                        d->filter, o->filter);
        goto out;
    }
    d->ack_wait_ms = o->ack_wait_ms;
    d->max_pending = o->max_ack_pending > 0 ? (size_t)o->max_ack_pending : 10000;
    p->d = d;
out:
    pthread_mutex_unlock(&g_mu);
    if (rc != ST_OK)
        free(p);
    else
        *out = p;
    return rc;
}

static struct mem_msg *msg_new_locked(struct mem_durable *d, uint64_t seq, uint64_t delivered)
{
    const struct mem_smsg *sm = &d->st->m[seq - 1];
    struct mem_msg *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->d = d;
    m->seq = seq;
    m->delivered = delivered;
    m->len = sm->len;
    m->subject = strdup(sm->subject);
    m->data = dup_n(sm->data, sm->len);
    if (m->subject == NULL || m->data == NULL) {
        free(m->subject);
        free(m->data);
        free(m);
        return NULL;
    }
    return m;
}

static int mem_pull_fetch(void *pull, void **msgs, int max, int timeout_ms, struct st_err *err)
{
    struct mem_durable *d = ((struct mem_pull *)pull)->d;
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int k = 0;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        int64_t now = now_ms(), next_due = INT64_MAX;
        for (size_t i = 0; i < d->npend && k < max; i++) { /* redeliveries first */
            struct mem_pend *e = &d->pend[i];
            if (e->due_ms > now) {
                next_due = e->due_ms < next_due ? e->due_ms : next_due;
                continue;
            }
            struct mem_msg *m = msg_new_locked(d, e->seq, e->delivered + 1);
            if (m == NULL)
                goto nomem;
            e->delivered++;
            e->due_ms = now + d->ack_wait_ms;
            msgs[k++] = m;
        }
        while (k < max && d->npend < d->max_pending && d->next_seq <= d->st->n) {
            uint64_t seq = d->next_seq;
            if (!st_bus_subject_match(d->filter, d->st->m[seq - 1].subject)) {
                d->next_seq++;
                continue;
            }
            if (d->npend == d->cap) {
                size_t cap = d->cap ? 2 * d->cap : 64;
                struct mem_pend *np = realloc(d->pend, cap * sizeof(*np));
                if (np == NULL)
                    goto nomem;
                d->pend = np;
                d->cap = cap;
            }
            struct mem_msg *m = msg_new_locked(d, seq, 1);
            if (m == NULL)
                goto nomem;
            d->pend[d->npend++] = (struct mem_pend){seq, 1, now + d->ack_wait_ms};
            d->next_seq++;
            msgs[k++] = m;
        }
        if (k > 0 || now >= deadline)
            break;
        int64_t until = next_due < deadline ? next_due : deadline;
        st_cond_wait_ms(&g_cv, &g_mu, until - now > 0 ? until - now : 1);
    }
    pthread_mutex_unlock(&g_mu);
    return k;
nomem:
    pthread_mutex_unlock(&g_mu);
    if (k > 0)
        return k; /* what was had; the rest comes on the next fetch */
    return st_err_set(err, ST_ENOMEM, "bus: out of memory fetching");
}

static void mem_pull_close(void *pull)
{
    free(pull); /* the durable stays */
}

static const char *mem_msg_subject(const void *m)
{
    return ((const struct mem_msg *)m)->subject;
}

static const void *mem_msg_data(const void *mv, size_t *len)
{
    const struct mem_msg *m = mv;
    if (len != NULL)
        *len = m->len;
    return m->data;
}

static uint64_t mem_msg_delivered(const void *m)
{
    return ((const struct mem_msg *)m)->delivered;
}

/* The pending entry of m. Caller holds g_mu. */
static struct mem_pend *pend_of_locked(const struct mem_msg *m, size_t *at)
{
    struct mem_durable *d = m->d;
    size_t lo = 0, hi = d->npend;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->pend[mid].seq < m->seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return lo < d->npend && d->pend[lo].seq == m->seq ? &d->pend[lo] : NULL;
}

static int mem_msg_ack(void *mv)
{
    struct mem_msg *m = mv;
    size_t at;
    pthread_mutex_lock(&g_mu);
    if (pend_of_locked(m, &at) != NULL) { /* else acked already: a no-op */
        struct mem_durable *d = m->d;
        memmove(d->pend + at, d->pend + at + 1, (d->npend - at - 1) * sizeof(*d->pend));
        d->npend--;
        pthread_cond_broadcast(&g_cv); /* room under max_ack_pending */
    }
    pthread_mutex_unlock(&g_mu);
    return ST_OK;
}

static int set_due(struct mem_msg *m, bool now)
{
    size_t at;
    pthread_mutex_lock(&g_mu);
    struct mem_pend *e = pend_of_locked(m, &at);
    if (e != NULL) {
        e->due_ms = now ? now_ms() : now_ms() + m->d->ack_wait_ms;
        pthread_cond_broadcast(&g_cv);
    }
    pthread_mutex_unlock(&g_mu);
    return ST_OK;
}

static int mem_msg_nak(void *m)
{
    return set_due(m, true);
}

static int mem_msg_in_progress(void *m)
{
    return set_due(m, false);
}

static void mem_msg_free(void *mv)
{
    struct mem_msg *m = mv;
    free(m->subject);
    free(m->data);
    free(m);
}

const struct st_bus_ops st_bus_mem_ops = {
    .connect = mem_connect,
    .close = mem_close,
    .connected = mem_connected,
    .publish = mem_publish,
    .flush = mem_flush,
    .subscribe = mem_subscribe,
    .unsubscribe = mem_unsubscribe,
    .stream_ensure = mem_stream_ensure,
    .js_publish = mem_js_publish,
    .pull_open = mem_pull_open,
    .pull_fetch = mem_pull_fetch,
    .pull_close = mem_pull_close,
    .msg_subject = mem_msg_subject,
    .msg_data = mem_msg_data,
    .msg_delivered = mem_msg_delivered,
    .msg_ack = mem_msg_ack,
    .msg_nak = mem_msg_nak,
    .msg_in_progress = mem_msg_in_progress,
    .msg_free = mem_msg_free,
};
