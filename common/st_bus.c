/* st_bus.c — the bus's public objects and the dispatch by URL to a backend (st_bus.h). */
#include "st_bus.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "st_bus_int.h"

struct st_bus {
    const struct st_bus_ops *ops;
    char *url;
    void *impl;
    pthread_mutex_t mu;      /* subs */
    struct st_bus_sub *subs; /* still subscribed: st_bus_close removes them */
};

struct st_bus_sub {
    struct st_bus *b;
    void *impl;
    struct st_bus_sub *next;
};

struct st_bus_pull {
    struct st_bus *b;
    void *impl;
};

struct st_bus_msg {
    const struct st_bus_ops *ops;
    void *impl;
};

int st_bus_connect(const struct st_bus_opts *o, struct st_bus **out, struct st_err *err)
{
    *out = NULL;
    if (o->url == NULL || o->url[0] == '\0')
        return st_err_set(err, ST_EINVAL, "bus: no URL");
    const struct st_bus_ops *ops = NULL;
    if (strcmp(o->url, ST_BUS_EMBEDDED) == 0)
        ops = &st_bus_mem_ops;
    else if (strncmp(o->url, "nats://", 7) == 0 || strncmp(o->url, "tls://", 6) == 0)
        ops = &st_bus_nats_ops;
    else
        return st_err_set(err, ST_EINVAL, "bus: '%s' is neither \"%s\" nor nats://host:port",
                          o->url, ST_BUS_EMBEDDED);
    struct st_bus *b = calloc(1, sizeof(*b));
    char shown[1024];
    st_bus_url_redact(o->url, shown, sizeof(shown));
    if (b == NULL || (b->url = strdup(shown)) == NULL) {
        free(b);
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    }
    b->ops = ops;
    pthread_mutex_init(&b->mu, NULL);
    int rc = ops->connect(o, &b->impl, err);
    if (rc != ST_OK) {
        pthread_mutex_destroy(&b->mu);
        free(b->url);
        free(b);
        return rc;
    }
    *out = b;
    return ST_OK;
}

void st_bus_close(struct st_bus *b)
{
    if (b == NULL)
        return;
    for (;;) { /* subscriptions left open: removed first */
        pthread_mutex_lock(&b->mu);
        struct st_bus_sub *s = b->subs;
        pthread_mutex_unlock(&b->mu);
        if (s == NULL)
            break;
        st_bus_unsubscribe(s);
    }
    b->ops->close(b->impl);
    pthread_mutex_destroy(&b->mu);
    free(b->url);
    free(b);
}

bool st_bus_connected(struct st_bus *b)
{
    return b->ops->connected(b->impl);
}

void st_bus_url_redact(const char *url, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t o = 0;
    const char *p = url;
    while (*p != '\0') {
        /* one server: scheme://[userinfo@]host:port, up to the next ',' */
        size_t len = strcspn(p, ",");
        const char *sch = strstr(p, "://");
        const char *host = sch != NULL && (size_t)(sch - p) < len ? sch + 3 : p;
        const char *at = memrchr(host, '@', len - (size_t)(host - p)); /* a password may hold '@' */
        const char *keep_end = p + len, *resume = p + len;
        if (at != NULL) {
            const char *colon = memchr(host, ':', (size_t)(at - host));
            keep_end = colon != NULL ? colon + 1 : host; /* user: kept; a token alone is not */
            resume = at;
        }
        for (const char *q = p; q < keep_end && o + 1 < cap; q++)
            out[o++] = *q;
        if (at != NULL)
            for (const char *q = "***"; *q && o + 1 < cap; q++)
                out[o++] = *q;
        for (const char *q = resume; q < p + len && o + 1 < cap; q++)
            out[o++] = *q;
        p += len;
        if (*p == ',') {
            if (o + 1 < cap)
                out[o++] = ',';
            p++;
        }
    }
    out[o] = '\0';
}

const char *st_bus_url(const struct st_bus *b)
{
    return b->url;
}

int st_bus_publish(struct st_bus *b, const char *subject, const void *data, size_t len)
{
    if (!st_bus_subject_valid(subject, false))
        return ST_EINVAL;
    return b->ops->publish(b->impl, subject, data, len);
}

int st_bus_flush(struct st_bus *b, int timeout_ms)
{
    return b->ops->flush(b->impl, timeout_ms);
}

int st_bus_subscribe(struct st_bus *b, const char *subject, st_bus_msg_fn fn, void *ctx,
                     struct st_bus_sub **out, struct st_err *err)
{
    *out = NULL;
    if (!st_bus_subject_valid(subject, true))
        return st_err_set(err, ST_EINVAL, "bus: '%s' is not a valid subject", subject);
    struct st_bus_sub *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    s->b = b;
    int rc = b->ops->subscribe(b->impl, subject, fn, ctx, &s->impl, err);
    if (rc != ST_OK) {
        free(s);
        return rc;
    }
    pthread_mutex_lock(&b->mu);
    s->next = b->subs;
    b->subs = s;
    pthread_mutex_unlock(&b->mu);
    *out = s;
    return ST_OK;
}

void st_bus_unsubscribe(struct st_bus_sub *s)
{
    if (s == NULL)
        return;
    struct st_bus *b = s->b;
    pthread_mutex_lock(&b->mu);
    for (struct st_bus_sub **pp = &b->subs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    b->ops->unsubscribe(b->impl, s->impl);
    free(s);
}

int st_bus_stream_ensure(struct st_bus *b, const char *name, const char *const *subjects,
                         size_t n_subjects, const char *narrow, bool *narrowed, struct st_err *err)
{
    if (narrowed != NULL)
        *narrowed = false;
    if (name == NULL || name[0] == '\0' || strpbrk(name, ".*> \t") != NULL || n_subjects == 0)
        return st_err_set(err, ST_EINVAL, "bus: bad stream name or no subjects");
    for (size_t i = 0; i < n_subjects; i++)
        if (!st_bus_subject_valid(subjects[i], true))
            return st_err_set(err, ST_EINVAL, "bus: '%s' is not a valid subject", subjects[i]);
    return b->ops->stream_ensure(b->impl, name, subjects, n_subjects, narrow, narrowed, err);
}

int st_bus_js_publish(struct st_bus *b, const char *subject, const void *data, size_t len,
                      const char *msg_id, int timeout_ms, struct st_err *err)
{
    if (!st_bus_subject_valid(subject, false))
        return st_err_set(err, ST_EINVAL, "bus: '%s' is not a valid subject", subject);
    return b->ops->js_publish(b->impl, subject, data, len, msg_id, timeout_ms, err);
}

int st_bus_pull_open(struct st_bus *b, const struct st_bus_pull_opts *o, struct st_bus_pull **out,
                     struct st_err *err)
{
    *out = NULL;
    if (o->stream == NULL || o->durable == NULL || o->durable[0] == '\0' ||
        strpbrk(o->durable, ".*> \t") != NULL || o->filter == NULL ||
        !st_bus_subject_valid(o->filter, true) || o->ack_wait_ms <= 0)
        return st_err_set(err, ST_EINVAL, "bus: bad pull consumer options");
    struct st_bus_pull *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    p->b = b;
    int rc = b->ops->pull_open(b->impl, o, &p->impl, err);
    if (rc != ST_OK) {
        free(p);
        return rc;
    }
    *out = p;
    return ST_OK;
}

int st_bus_pull_fetch(struct st_bus_pull *p, struct st_bus_msg **msgs, int max, int timeout_ms,
                      struct st_err *err)
{
    if (max <= 0)
        return st_err_set(err, ST_EINVAL, "bus: fetch of %d messages", max);
    void **impls = calloc((size_t)max, sizeof(*impls));
    if (impls == NULL)
        return st_err_set(err, ST_ENOMEM, "bus: out of memory");
    int n = p->b->ops->pull_fetch(p->impl, impls, max, timeout_ms, err);
    for (int i = 0; i < n; i++) {
        msgs[i] = calloc(1, sizeof(*msgs[i]));
        if (msgs[i] == NULL) { /* not acked: they come back after ack_wait */
            for (int k = i; k < n; k++)
                p->b->ops->msg_free(impls[k]);
            n = i > 0 ? i : st_err_set(err, ST_ENOMEM, "bus: out of memory");
            break;
        }
        msgs[i]->ops = p->b->ops;
        msgs[i]->impl = impls[i];
    }
    free(impls);
    return n;
}

void st_bus_pull_close(struct st_bus_pull *p)
{
    if (p == NULL)
        return;
    p->b->ops->pull_close(p->impl);
    free(p);
}

const char *st_bus_msg_subject(const struct st_bus_msg *m)
{
    return m->ops->msg_subject(m->impl);
}

const void *st_bus_msg_data(const struct st_bus_msg *m, size_t *len)
{
    return m->ops->msg_data(m->impl, len);
}

uint64_t st_bus_msg_delivered(const struct st_bus_msg *m)
{
    return m->ops->msg_delivered(m->impl);
}

int st_bus_msg_ack(struct st_bus_msg *m)
{
    return m->ops->msg_ack(m->impl);
}

int st_bus_msg_nak(struct st_bus_msg *m)
{
    return m->ops->msg_nak(m->impl);
}

int st_bus_msg_in_progress(struct st_bus_msg *m)
{
    return m->ops->msg_in_progress(m->impl);
}

void st_bus_msg_free(struct st_bus_msg *m)
{
    if (m == NULL)
        return;
    m->ops->msg_free(m->impl);
    free(m);
}

/* ---- subjects ---- */

bool st_bus_subject_valid(const char *s, bool wildcards)
{
    if (s == NULL || s[0] == '\0')
        return false;
    const char *t = s;
    for (;;) {
        const char *dot = strchr(t, '.');
        size_t len = dot != NULL ? (size_t)(dot - t) : strlen(t);
        if (len == 0)
            return false;
        for (size_t i = 0; i < len; i++)
            if (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' || t[i] == '\n')
                return false;
        bool star = len == 1 && t[0] == '*', gt = len == 1 && t[0] == '>';
        if ((star || gt) && !wildcards)
            return false;
        if (gt && dot != NULL)
            return false; /* `>` only last */
        if (dot == NULL)
            return true;
        t = dot + 1;
    }
}

bool st_bus_subject_match(const char *pattern, const char *subject)
{
    const char *p = pattern, *s = subject;
    for (;;) {
        const char *pd = strchr(p, '.'), *sd = strchr(s, '.');
        size_t pl = pd != NULL ? (size_t)(pd - p) : strlen(p);
        size_t sl = sd != NULL ? (size_t)(sd - s) : strlen(s);
        if (pl == 1 && p[0] == '>')
            return true; /* the rest: at least this one token, which s has */
        if (!(pl == 1 && p[0] == '*') && (pl != sl || memcmp(p, s, pl) != 0))
            return false;
        if (pd == NULL || sd == NULL)
            return pd == NULL && sd == NULL;
        p = pd + 1;
        s = sd + 1;
    }
}
