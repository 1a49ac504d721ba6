/* announce.c — ingest node announcements on strata.nodes.<node_id> (announce.h). */
#include "announce.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_bus.h"
#include "st_clock.h"
#include "st_log.h"

#define LOG_COMP       "ingest"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000

struct ingest_announce {
    struct ingest_announce_opts o; /* its strings point at the copies below */
    char *nats_url, *node, *url;
    char **colls, **topics;
    char subject[160];

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    /* Under mu. */
    struct ing_partition *parts; /* the assignment now, sorted; topics owned */
    size_t nparts;
    bool changed; /* to announce at once: a new assignment, a (re)connection */
    bool stop;    /* the thread is to end */
    bool bye;     /* ... saying goodbye */
    bool stopped; /* ingest_announce_stop ran */
    uint64_t seq; /* messages sent */
    int64_t bye_wait_ms;
    struct st_ratelimit warn_rl;

    pthread_t th;
};

static int64_t mono_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

/* Waits on a->cv (a->mu held) until the monotonic time at_ms or a signal. */
static void wait_until(struct ingest_announce *a, int64_t at_ms)
{
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (at_ms % 1000) * 1000000L};
    pthread_cond_timedwait(&a->cv, &a->mu, &ts);
}

static int part_cmp(const void *x, const void *y)
{
    const struct ing_partition *p = x, *q = y;
    int t = strcmp(p->topic, q->topic);
    return t != 0 ? t : (p->partition > q->partition) - (p->partition < q->partition);
}

/* ---- the message -------------------------------------------------------------------------- */

char *ingest_announce_json(const struct ingest_announce_opts *o, const struct ing_partition *parts,
                           size_t n, uint64_t seq, bool bye)
{
    char *text = NULL;
    struct ing_partition *sorted = calloc(n ? n : 1, sizeof(*sorted));
    json_t *j = json_object(), *colls = json_array(), *pj = json_object();
    if (sorted == NULL || j == NULL || colls == NULL || pj == NULL)
        goto out;
    for (size_t i = 0; i < o->n_collections; i++)
        if (json_array_append_new(colls, json_string(o->collections[i])) != 0)
            goto out;
    /* every topic consumed, [] when none of its partitions is ours */
    for (size_t i = 0; i < o->n_topics; i++)
        if (json_object_get(pj, o->topics[i]) == NULL &&
            json_object_set_new(pj, o->topics[i], json_array()) != 0)
            goto out;
    if (n > 0)
        memcpy(sorted, parts, n * sizeof(*parts));
    if (n > 1)
        qsort(sorted, n, sizeof(*sorted), part_cmp);
    for (size_t i = 0; i < n; i++) {
        json_t *arr = json_object_get(pj, sorted[i].topic);
        if (arr == NULL) { /* not in o->topics: still the truth */
            if (json_object_set_new(pj, sorted[i].topic, json_array()) != 0)
                goto out;
            arr = json_object_get(pj, sorted[i].topic);
        }
        if (json_array_append_new(arr, json_integer(sorted[i].partition)) != 0)
            goto out;
    }
    int bad = json_object_set_new(j, "node", json_string(o->node_id));
    bad |= json_object_set_new(j, "role", json_string("ingest"));
    bad |= json_object_set_new(j, "url", json_string(o->url));
    bad |= json_object_set(j, "collections", colls);
    bad |= json_object_set(j, "partitions", pj);
    bad |= json_object_set_new(j, "seq", json_integer((json_int_t)seq));
    bad |= json_object_set_new(j, "started", json_integer(o->started_ms));
    bad |= json_object_set_new(j, "interval_ms", json_integer(o->interval_ms));
    bad |= json_object_set_new(j, "bye", json_boolean(bye));
    if (bad == 0)
        text = json_dumps(j, JSON_COMPACT);
out:
    json_decref(colls);
    json_decref(pj);
    json_decref(j);
    free(sorted);
    return text;
}

/* ---- the bus ---------------------------------------------------------------------------- */

/* The bus's state callback (a bus thread; never after st_bus_close returned). */
static void on_state(void *ctx, enum st_bus_state state)
{
    struct ingest_announce *a = ctx;
    if (state != ST_BUS_RECONNECTED)
        return;
    pthread_mutex_lock(&a->mu);
    a->changed = true; /* back: say so at once rather than at the next interval */
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* One connection attempt, bounded by connect_timeout_ms per server. Called without mu. */
static int bus_connect(struct ingest_announce *a, struct st_bus **b, struct st_err *err)
{
    char name[200];
    snprintf(name, sizeof(name), "strata-ingest %s announcements", a->node);
    struct st_bus_opts bo = {.url = a->nats_url,
                             .auth = a->o.auth,
                             .name = name,
                             .connect_timeout_ms = (int)a->o.connect_timeout_ms,
                             .reconnect_wait_ms = 200, /* then it reconnects on its own */
                             .close_wait_ms = (int)a->o.close_wait_ms,
                             .on_state = on_state,
                             .ctx = a};
    return st_bus_connect(&bo, b, err);
}

/* Sends one message (a->mu held; released during the publish). */
static int send_one(struct ingest_announce *a, struct st_bus *b, bool bye)
{
    char *msg = ingest_announce_json(&a->o, a->parts, a->nparts, a->seq + 1, bye);
    if (msg == NULL)
        return ST_ENOMEM;
    a->seq++;
    pthread_mutex_unlock(&a->mu);
    int s = st_bus_publish(b, a->subject, msg, strlen(msg));
    pthread_mutex_lock(&a->mu);
    free(msg);
    return s;
}

static void *run(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "ing-announce"); /* by itself: a prctl (ing_pipe.c) */
    struct ingest_announce *a = arg;
    struct st_bus *b = NULL;
    int64_t backoff = BACKOFF_MIN_MS, next = 0;
    bool up = false; /* logged as announcing */
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        if (b == NULL) {
            pthread_mutex_unlock(&a->mu);
            struct st_err err = {0};
            int s = bus_connect(a, &b, &err);
            pthread_mutex_lock(&a->mu);
            if (s != ST_OK) {
                uint32_t dropped;
                if (st_ratelimit_ok(&a->warn_rl, 1, 30000, &dropped))
                    st_log_warn(LOG_COMP,
                                "announcements: %s; retrying in the background "
                                "(%u similar suppressed)",
                                err.msg, dropped);
                if (!a->stop)
                    wait_until(a, mono_ms() + backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = BACKOFF_MIN_MS;
            a->changed = true;
        }
        int64_t now = mono_ms();
        if (a->changed || now >= next) {
            /* Disconnected: nothing is queued (it would only arrive stale); on_state asks for
             * a message as soon as the bus is back. */
            a->changed = false;
            if (st_bus_connected(b)) {
                int s = send_one(a, b, false);
                if (s != ST_OK) {
                    uint32_t dropped;
                    if (st_ratelimit_ok(&a->warn_rl, 1, 30000, &dropped))
                        st_log_warn(LOG_COMP, "announcing on %s: %s (%u similar suppressed)",
                                    a->subject, st_strerror(s), dropped);
                } else if (!up) {
                    up = true;
                    st_log_notice(LOG_COMP, "announcing %s on %s every %" PRId64 " ms", a->url,
                                  a->subject, a->o.interval_ms);
                }
            }
            next = now + a->o.interval_ms;
        }
        while (!a->stop && !a->changed && mono_ms() < next)
            wait_until(a, next);
    }
    if (b != NULL && a->bye && st_bus_connected(b)) {
        int s = send_one(a, b, true);
        int64_t wait = a->bye_wait_ms > 0 ? a->bye_wait_ms : 1;
        pthread_mutex_unlock(&a->mu);
        if (s == ST_OK) /* on the wire before the connection closes */
            s = st_bus_flush(b, (int)wait);
        pthread_mutex_lock(&a->mu);
        if (s == ST_OK)
            st_log_notice(LOG_COMP, "said goodbye on %s", a->subject);
        else
            st_log_warn(LOG_COMP, "goodbye on %s not confirmed: %s", a->subject, st_strerror(s));
    } else if (a->bye) {
        st_log_warn(LOG_COMP,
                    "no goodbye on %s: NATS is not connected (indexers drop this node "
                    "after three silent intervals)",
                    a->subject);
    }
    pthread_mutex_unlock(&a->mu);
    st_bus_close(b); /* after it, no bus callback runs into a */
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------- */

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

static char **copy_strings(const char *const *v, size_t n)
{
    char **c = calloc(n ? n : 1, sizeof(*c));
    for (size_t i = 0; c != NULL && i < n; i++) {
        if ((c[i] = strdup(v[i])) == NULL) {
            free_strings(c, i);
            return NULL;
        }
    }
    return c;
}

static void parts_free(struct ing_partition *p, size_t n)
{
    for (size_t i = 0; p != NULL && i < n; i++)
        free((char *)(uintptr_t)p[i].topic);
    free(p);
}

static void destroy(struct ingest_announce *a)
{
    free(a->nats_url);
    free(a->node);
    free(a->url);
    free_strings(a->colls, a->o.n_collections);
    free_strings(a->topics, a->o.n_topics);
    parts_free(a->parts, a->nparts);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

int ingest_announce_start(const struct ingest_announce_opts *o, struct ingest_announce **out,
                          struct st_err *err)
{
    *out = NULL;
    struct ingest_announce *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return st_err_set(err, ST_ENOMEM, "announcements: out of memory");
    a->o = *o;
    if (a->o.interval_ms <= 0)
        a->o.interval_ms = 2000;
    if (a->o.started_ms == 0)
        a->o.started_ms = st_clock_wall_ms(NULL);
    if (a->o.connect_timeout_ms <= 0)
        a->o.connect_timeout_ms = 1000;
    if (a->o.close_wait_ms <= 0)
        a->o.close_wait_ms = 5000;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    a->nats_url = strdup(o->nats_url);
    a->node = strdup(o->node_id);
    a->url = strdup(o->url);
    a->colls = copy_strings(o->collections, o->n_collections);
    a->topics = copy_strings(o->topics, o->n_topics);
    if (a->nats_url == NULL || a->node == NULL || a->url == NULL || a->colls == NULL ||
        a->topics == NULL) {
        destroy(a);
        return st_err_set(err, ST_ENOMEM, "announcements: out of memory");
    }
    a->o.nats_url = a->nats_url;
    a->o.node_id = a->node;
    a->o.url = a->url;
    a->o.collections = (const char *const *)a->colls;
    a->o.topics = (const char *const *)a->topics;
    int n = snprintf(a->subject, sizeof(a->subject), "strata.nodes.%s", a->node);
    if (n < 0 || (size_t)n >= sizeof(a->subject)) {
        destroy(a);
        return st_err_set(err, ST_EINVAL, "announcements: node id too long");
    }
    if (pthread_create(&a->th, NULL, run, a) != 0) {
        destroy(a);
        return st_err_set(err, ST_ENOMEM, "announcements: cannot start a thread");
    }
    *out = a;
    return ST_OK;
}

void ingest_announce_partitions(struct ingest_announce *a, const struct ing_partition *parts,
                                size_t n)
{
    struct ing_partition *copy = calloc(n ? n : 1, sizeof(*copy));
    for (size_t i = 0; copy != NULL && i < n; i++) {
        copy[i].partition = parts[i].partition;
        if ((copy[i].topic = strdup(parts[i].topic)) == NULL) {
            parts_free(copy, i);
            copy = NULL;
        }
    }
    if (copy == NULL) {
        st_log_error(LOG_COMP, "announcements: out of memory; the last assignment stays announced");
        return;
    }
    if (n > 1)
        qsort(copy, n, sizeof(*copy), part_cmp);
    pthread_mutex_lock(&a->mu);
    bool same = n == a->nparts;
    for (size_t i = 0; same && i < n; i++)
        same = part_cmp(&copy[i], &a->parts[i]) == 0;
    if (!same) {
        struct ing_partition *old = a->parts;
        size_t nold = a->nparts;
        a->parts = copy;
        a->nparts = n;
        a->changed = true;
        pthread_cond_broadcast(&a->cv);
        copy = old;
        n = nold;
    }
    pthread_mutex_unlock(&a->mu);
    parts_free(copy, n);
}

void ingest_announce_stop(struct ingest_announce *a, bool bye, int64_t bye_wait_ms)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    if (a->stopped) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    a->stopped = true;
    a->stop = true;
    a->bye = bye;
    a->bye_wait_ms = bye_wait_ms;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL); /* the thread closed its bus connection */
}

void ingest_announce_free(struct ingest_announce *a)
{
    if (a == NULL)
        return;
    ingest_announce_stop(a, false, 0);
    destroy(a);
}

uint64_t ingest_announce_sent(struct ingest_announce *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t n = a->seq;
    pthread_mutex_unlock(&a->mu);
    return n;
}
