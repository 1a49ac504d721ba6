/*
 * check_bus.c — one set of semantic tests of st_bus.h, run against both backends: the
 * embedded bus (test case "embedded", label unit) and the real nats-server of the brokers
 * fixture (test case "nats"; ctest selects the case with CK_RUN_CASE). Whatever strata relies
 * on must hold on both: wildcards, unsubscribe and close guarantees, stream create/narrow,
 * msg-id de-duplication, pull order, ack / no ack / nak / in-progress, durables that outlive
 * their pull consumer and connection, max ack pending. The nats case also loses and regains
 * a server of its own (state callbacks, reconnect).
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_bus.h"
#include "st_daemon_test.h"
#include "st_fault.h"
#include "st_log.h"
#include "st_nats_test.h"
#include "st_test.h"

static const char *url; /* the backend of the running case */

static void setup_embedded(void)
{
    url = ST_BUS_EMBEDDED;
    st_log_set_level(ST_LOG_ERROR);
}

static void setup_nats(void)
{
    url = st_test_broker("STRATA_TEST_NATS");
    st_log_set_level(ST_LOG_ERROR);
}

static struct st_bus *bus_open(void)
{
    struct st_bus_opts o = {.url = url, .name = "check_bus"};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_msg(st_bus_connect(&o, &b, &err) == ST_OK, "%s: %s", url, err.msg);
    ck_assert(st_bus_connected(b));
    ck_assert_str_eq(st_bus_url(b), url);
    return b;
}

/* A unique token for subjects and stream names ("b-<pid>-<n>-<ms>": no dots). */
static void unique(char *out, size_t cap, const char *prefix)
{
    snprintf(out, cap, "%s", st_test_unique(prefix));
}

/* ---- core subscriptions: what a callback saw ---- */

#define SEEN_MAX 64

struct seen {
    pthread_mutex_t mu;
    int n;
    char subject[SEEN_MAX][128];
    char data[SEEN_MAX][64];
    /* for the blocking callbacks */
    atomic_bool hold, in_cb, exited;
    atomic_int after_close; /* callbacks that started after the close/unsubscribe returned */
    atomic_bool gone;       /* set once close/unsubscribe returned */
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
}

static void on_seen(void *ctx, const char *subject, const void *data, size_t len)
{
    struct seen *s = ctx;
    if (atomic_load(&s->gone))
        atomic_fetch_add(&s->after_close, 1);
    pthread_mutex_lock(&s->mu);
    if (s->n < SEEN_MAX) {
        snprintf(s->subject[s->n], sizeof(s->subject[0]), "%s", subject);
        snprintf(s->data[s->n], sizeof(s->data[0]), "%.*s", (int)len, (const char *)data);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
}

static int seen_n(struct seen *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Whether the last message seen carries data d. */
static bool seen_last(struct seen *s, const char *d)
{
    pthread_mutex_lock(&s->mu);
    bool ok = s->n > 0 && strcmp(s->data[s->n - 1], d) == 0;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void pub(struct st_bus *b, const char *subject, const char *data)
{
    ck_assert_int_eq(st_bus_publish(b, subject, data, strlen(data)), ST_OK);
}

static struct st_bus_sub *sub(struct st_bus *b, const char *subject, st_bus_msg_fn fn, void *ctx)
{
    struct st_bus_sub *s = NULL;
    struct st_err err = {0};
    ck_assert_msg(st_bus_subscribe(b, subject, fn, ctx, &s, &err) == ST_OK, "%s", err.msg);
    return s;
}

/* Makes sure the server has b's subscriptions (NATS: a flush round trip). */
static void sync_bus(struct st_bus *b)
{
    ck_assert_int_eq(st_bus_flush(b, 5000), ST_OK);
}

START_TEST(test_pubsub_wildcards)
{
    char p[64], s1[160], s2[160], s3[160];
    unique(p, sizeof(p), "b");
    struct st_bus *b = bus_open(), *pb = bus_open();
    struct seen star, gt, lit;
    seen_init(&star);
    seen_init(&gt);
    seen_init(&lit);
    snprintf(s1, sizeof(s1), "%s.*.x", p);
    snprintf(s2, sizeof(s2), "%s.>", p);
    snprintf(s3, sizeof(s3), "%s.a", p);
    struct st_bus_sub *u1 = sub(b, s1, on_seen, &star), *u2 = sub(b, s2, on_seen, &gt),
                      *u3 = sub(b, s3, on_seen, &lit);
    sync_bus(b);
    char subj[200];
    snprintf(subj, sizeof(subj), "%s.a", p);
    pub(pb, subj, "1");
    snprintf(subj, sizeof(subj), "%s.b.x", p);
    pub(pb, subj, "2");
    snprintf(subj, sizeof(subj), "%s.a.b.c", p);
    pub(pb, subj, "3");
    snprintf(subj, sizeof(subj), "%s.b.y", p);
    pub(pb, subj, "4");
    snprintf(subj, sizeof(subj), "%s", p); /* `>` needs at least one more token */
    pub(pb, subj, "5");
    /* Markers, last from the one publisher: once seen, everything before was delivered. */
    snprintf(subj, sizeof(subj), "%s.end.x", p);
    pub(pb, subj, "end");
    snprintf(subj, sizeof(subj), "%s.a", p);
    pub(pb, subj, "end");
    sync_bus(pb);
    ck_assert(ST_WAIT_UNTIL(seen_last(&star, "end"), 10000));
    ck_assert(ST_WAIT_UNTIL(seen_last(&gt, "end") && seen_n(&gt) == 6, 10000));
    ck_assert(ST_WAIT_UNTIL(seen_last(&lit, "end"), 10000));
    ck_assert_int_eq(seen_n(&star), 2); /* b.x, end.x */
    ck_assert_str_eq(star.data[0], "2");
    snprintf(subj, sizeof(subj), "%s.b.x", p);
    ck_assert_str_eq(star.subject[0], subj);
    ck_assert_int_eq(seen_n(&gt), 6); /* all but the bare prefix */
    const char *want[] = {"1", "2", "3", "4", "end", "end"};
    for (int i = 0; i < 6; i++)
        ck_assert_str_eq(gt.data[i], want[i]);
    ck_assert_int_eq(seen_n(&lit), 2);
    ck_assert_str_eq(lit.data[0], "1");

    /* Bad subjects are refused, not sent. */
    struct st_bus_sub *bad = NULL;
    struct st_err err = {0};
    snprintf(subj, sizeof(subj), "%s.>.x", p);
    ck_assert_int_eq(st_bus_subscribe(b, subj, on_seen, &lit, &bad, &err), ST_EINVAL);
    ck_assert_int_eq(st_bus_subscribe(b, "a..b", on_seen, &lit, &bad, &err), ST_EINVAL);
    ck_assert_ptr_null(bad);
    snprintf(subj, sizeof(subj), "%s.*", p);
    ck_assert_int_eq(st_bus_publish(b, subj, "x", 1), ST_EINVAL);
    ck_assert_int_eq(st_bus_publish(b, "", "x", 1), ST_EINVAL);

    st_bus_unsubscribe(u1);
    st_bus_unsubscribe(u2);
    st_bus_unsubscribe(u3);
    st_bus_unsubscribe(NULL);
    st_bus_close(b);
    st_bus_close(pb);
    st_bus_close(NULL);
}
END_TEST

/* A callback that blocks while s->hold, noting that it runs. */
static void on_block(void *ctx, const char *subject, const void *data, size_t len)
{
    struct seen *s = ctx;
    on_seen(ctx, subject, data, len);
    atomic_store(&s->exited, false);
    atomic_store(&s->in_cb, true);
    while (atomic_load(&s->hold))
        st_test_sleep_ms(1);
    atomic_store(&s->in_cb, false);
    atomic_store(&s->exited, true);
}

struct closer {
    struct seen *s;
    struct st_bus *b;     /* close this ... */
    struct st_bus_sub *u; /* ... or unsubscribe this */
    atomic_bool done;
    bool exited_at_return; /* the callback had returned when close/unsubscribe did */
};

static void *closer_main(void *arg)
{
    struct closer *c = arg;
    if (c->u != NULL)
        st_bus_unsubscribe(c->u);
    else
        st_bus_close(c->b);
    c->exited_at_return = atomic_load(&c->s->exited) && !atomic_load(&c->s->in_cb);
    atomic_store(&c->s->gone, true);
    atomic_store(&c->done, true);
    return NULL;
}

/* Unsubscribing (close_conn false) or closing the connection (true) while the callback runs:
 * it returns only after the callback did, and no callback runs after it. */
static void blocked_callback_case(bool close_conn)
{
    char p[64], subj[160];
    unique(p, sizeof(p), "b");
    snprintf(subj, sizeof(subj), "%s.x", p);
    struct st_bus *b = bus_open(), *pb = bus_open();
    struct seen s, other;
    seen_init(&s);
    seen_init(&other);
    atomic_store(&s.hold, true);
    struct st_bus_sub *u = sub(b, subj, on_block, &s);
    struct st_bus_sub *w = sub(pb, subj, on_seen, &other);
    sync_bus(b);
    sync_bus(pb);
    pub(pb, subj, "1");
    pub(pb, subj, "2"); /* queued behind the blocked callback */
    sync_bus(pb);
    ck_assert(ST_WAIT_UNTIL(atomic_load(&s.in_cb), 10000));
    struct closer c = {.s = &s, .b = close_conn ? b : NULL, .u = close_conn ? NULL : u};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, closer_main, &c), 0);
    /* While the callback runs, unsubscribe/close does not return. */
    ck_assert(!ST_WAIT_UNTIL(atomic_load(&c.done), 300));
    atomic_store(&s.hold, false);
    ck_assert(ST_WAIT_UNTIL(atomic_load(&c.done), 15000));
    pthread_join(th, NULL);
    ck_assert(c.exited_at_return);
    /* More messages: the other subscriber sees them, the removed one nothing more. */
    pub(pb, subj, "3");
    pub(pb, subj, "end");
    sync_bus(pb);
    ck_assert(ST_WAIT_UNTIL(seen_last(&other, "end"), 10000));
    ck_assert_int_eq(atomic_load(&s.after_close), 0);
    /* "2", queued behind the blocked callback, may have run before the return, not after */
    ck_assert_int_le(seen_n(&s), 2);
    if (close_conn) {
        st_bus_close(pb); /* w is left: close removes it */
    } else {
        st_bus_unsubscribe(w);
        st_bus_close(b);
        st_bus_close(pb);
    }
}

START_TEST(test_unsubscribe_waits)
{
    blocked_callback_case(false);
}
END_TEST

START_TEST(test_close_waits)
{
    blocked_callback_case(true);
}
END_TEST

/* ---- JetStream ---- */

static void ensure(struct st_bus *b, const char *name, const char *const *subj, size_t n,
                   const char *narrow, bool *narrowed)
{
    struct st_err err = {0};
    ck_assert_msg(st_bus_stream_ensure(b, name, subj, n, narrow, narrowed, &err) == ST_OK, "%s",
                  err.msg);
}

static int jpub(struct st_bus *b, const char *subject, const char *data, const char *id)
{
    struct st_err err = {0};
    return st_bus_js_publish(b, subject, data, strlen(data), id, 5000, &err);
}

static struct st_bus_pull *pull(struct st_bus *b, const char *stream, const char *durable,
                                const char *filter, int64_t ack_wait_ms, int max_pending)
{
    struct st_bus_pull_opts o = {.stream = stream,
                                 .durable = durable,
                                 .filter = filter,
                                 .ack_wait_ms = ack_wait_ms,
                                 .max_ack_pending = max_pending};
    struct st_bus_pull *p = NULL;
    struct st_err err = {0};
    ck_assert_msg(st_bus_pull_open(b, &o, &p, &err) == ST_OK, "%s", err.msg);
    return p;
}

/* Fetches until want messages arrived or timeout_ms passed; returns how many. */
static int fetch_n(struct st_bus_pull *p, struct st_bus_msg **m, int want, int timeout_ms)
{
    int n = 0;
    int64_t deadline = st_test_now_ms() + timeout_ms;
    while (n < want) {
        int64_t left = deadline - st_test_now_ms();
        if (left <= 0)
            break;
        struct st_err err = {0};
        int k = st_bus_pull_fetch(p, m + n, want - n, (int)(left < 1000 ? left : 1000), &err);
        ck_assert_msg(k >= 0, "fetch: %s", err.msg);
        n += k;
    }
    return n;
}

static const char *data_of(const struct st_bus_msg *m, char *buf, size_t cap)
{
    size_t len = 0;
    const void *d = st_bus_msg_data(m, &len);
    snprintf(buf, cap, "%.*s", (int)len, (const char *)d);
    return buf;
}

static void ack_free(struct st_bus_msg *m)
{
    ck_assert_int_eq(st_bus_msg_ack(m), ST_OK);
    st_bus_msg_free(m);
}

/* A stream of its own with subjects <p>.> (name and subject prefix into name, p). */
static void own_stream(struct st_bus *b, char *name, char *p, size_t cap)
{
    unique(p, cap, "bs");
    snprintf(name, cap, "S%s", p);
    char s[160];
    snprintf(s, sizeof(s), "%s.>", p);
    const char *subj[] = {s};
    ensure(b, name, subj, 1, NULL, NULL);
}

START_TEST(test_stream_ensure_narrow)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], all[160], sealed[160], expired[160], subj[200];
    unique(p, sizeof(p), "bn");
    snprintf(name, sizeof(name), "N%s", p);
    snprintf(all, sizeof(all), "%s.>", p);
    snprintf(sealed, sizeof(sealed), "%s.*.sealed", p);
    snprintf(expired, sizeof(expired), "%s.*.expired", p);
    const char *old[] = {all}, *now[] = {sealed, expired};

    /* Missing: created; again: nothing to do. */
    bool narrowed = true;
    ensure(b, name, old, 1, NULL, &narrowed);
    ck_assert(!narrowed);
    ensure(b, name, old, 1, NULL, &narrowed);
    ck_assert(!narrowed);
    snprintf(subj, sizeof(subj), "%s.nodes.n1", p);
    ck_assert_int_eq(jpub(b, subj, "{}", NULL), ST_OK); /* the catch-all stores it */

    /* Without `narrow`, an existing stream is left as it is. */
    ensure(b, name, now, 2, NULL, &narrowed);
    ck_assert(!narrowed);
    ck_assert_int_eq(jpub(b, subj, "{}", NULL), ST_OK);

    /* The old catch-all is narrowed: the announcement subject is no stream's any more. */
    ensure(b, name, now, 2, all, &narrowed);
    ck_assert(narrowed);
    ck_assert_int_eq(jpub(b, subj, "{}", NULL), ST_EIO);
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    ck_assert_int_eq(jpub(b, subj, "{}", NULL), ST_OK);
    ensure(b, name, now, 2, all, &narrowed); /* nothing more to narrow */
    ck_assert(!narrowed);

    /* An operator's subject list (more than the catch-all) is kept. */
    char q[64], qname[80], qall[160], qaudit[160];
    unique(q, sizeof(q), "bq");
    snprintf(qname, sizeof(qname), "Q%s", q);
    snprintf(qall, sizeof(qall), "%s.>", q);
    snprintf(qaudit, sizeof(qaudit), "%saudit.>", q);
    const char *mine[] = {qall, qaudit};
    ensure(b, qname, mine, 2, NULL, NULL);
    snprintf(sealed, sizeof(sealed), "%s.*.sealed", q);
    const char *qnow[] = {sealed};
    ensure(b, qname, qnow, 1, qall, &narrowed);
    ck_assert(!narrowed);
    snprintf(subj, sizeof(subj), "%s.nodes.n1", q);
    ck_assert_int_eq(jpub(b, subj, "{}", NULL), ST_OK);

    /* A second stream over the same subjects is refused; bad names are refused. */
    struct st_err err = {0};
    char other[90];
    snprintf(other, sizeof(other), "O%s", q);
    ck_assert_int_eq(st_bus_stream_ensure(b, other, mine, 2, NULL, NULL, &err), ST_EIO);
    ck_assert(err.msg[0] != '\0');
    ck_assert_int_eq(st_bus_stream_ensure(b, "a.b", mine, 2, NULL, NULL, &err), ST_EINVAL);
    ck_assert_int_eq(st_bus_stream_ensure(b, other, mine, 0, NULL, NULL, &err), ST_EINVAL);
    st_bus_close(b);
}
END_TEST

/* Streams whose subjects overlap only through wildcards on both sides are refused too, as
 * nats-server does (<p>.*.sealed and <p>.docs.> share <p>.docs.sealed); prefixes that merely
 * look alike (<p>.a vs <p>.ab, <p> vs <p>.>) do not overlap. */
START_TEST(test_stream_overlap)
{
    struct st_bus *b = bus_open();
    char p[64], n1[80], n2[80], n3[80], n4[80], s1[160], s2[160], s3[160], s4[160], s5[160];
    unique(p, sizeof(p), "bo");
    snprintf(n1, sizeof(n1), "A%s", p);
    snprintf(n2, sizeof(n2), "B%s", p);
    snprintf(n3, sizeof(n3), "C%s", p);
    snprintf(n4, sizeof(n4), "D%s", p);
    snprintf(s1, sizeof(s1), "%s.*.sealed", p);
    snprintf(s2, sizeof(s2), "%s.docs.>", p);
    snprintf(s3, sizeof(s3), "%s.a", p);
    snprintf(s4, sizeof(s4), "%s.ab", p);
    snprintf(s5, sizeof(s5), "%s.*.*.x", p);
    const char *v1[] = {s1}, *v2[] = {s2}, *v3[] = {s3}, *v4[] = {s4}, *v5[] = {s5};
    ensure(b, n1, v1, 1, NULL, NULL);
    struct st_err err = {0};
    ck_assert_int_eq(st_bus_stream_ensure(b, n2, v2, 1, NULL, NULL, &err), ST_EIO);
    ck_assert_int_eq(st_bus_stream_ensure(b, n2, v5, 1, NULL, NULL, &err), ST_OK); /* 4 tokens */
    ensure(b, n3, v3, 1, NULL, NULL);
    ensure(b, n4, v4, 1, NULL, NULL);
    /* Each subject is stored by its one stream. */
    char subj[200];
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    ck_assert_int_eq(jpub(b, subj, "x", NULL), ST_OK);
    st_bus_close(b);
}
END_TEST

START_TEST(test_js_dedup_and_order)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200], buf[64];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    ck_assert_int_eq(jpub(b, subj, "a", "id-a"), ST_OK);
    ck_assert_int_eq(jpub(b, subj, "b", "id-b"), ST_OK);
    ck_assert_int_eq(jpub(b, subj, "a again", "id-a"), ST_OK); /* acked, not stored */
    ck_assert_int_eq(jpub(b, subj, "c", NULL), ST_OK);
    ck_assert_int_eq(jpub(b, subj, "c", NULL), ST_OK); /* no id: stored twice */
    char nosuch[200];
    snprintf(nosuch, sizeof(nosuch), "%snone.x", p);
    ck_assert_int_eq(jpub(b, nosuch, "x", NULL), ST_EIO); /* no stream holds it */

    snprintf(filter, sizeof(filter), "%s.>", p);
    struct st_bus_pull *pl = pull(b, name, "d1", filter, 30000, 0);
    struct st_bus_msg *m[8] = {0};
    ck_assert_int_eq(fetch_n(pl, m, 8, 2000), 4);
    const char *want[] = {"a", "b", "c", "c"};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(data_of(m[i], buf, sizeof(buf)), want[i]);
        ck_assert_str_eq(st_bus_msg_subject(m[i]), subj);
        ck_assert_uint_eq(st_bus_msg_delivered(m[i]), 1);
        ack_free(m[i]);
    }
    /* A filter: a second durable sees only its subjects. */
    char other[200], f2[200];
    snprintf(other, sizeof(other), "%s.docs.expired", p);
    ck_assert_int_eq(jpub(b, other, "e", NULL), ST_OK);
    snprintf(f2, sizeof(f2), "%s.*.expired", p);
    struct st_bus_pull *p2 = pull(b, name, "d2", f2, 30000, 0);
    ck_assert_int_eq(fetch_n(p2, m, 8, 1500), 1);
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "e");
    ack_free(m[0]);
    st_bus_pull_close(p2);
    /* Bad options, a missing stream. */
    struct st_bus_pull *bad = NULL;
    struct st_err err = {0};
    struct st_bus_pull_opts o = {
        .stream = "NOSUCHSTREAM", .durable = "d", .filter = filter, .ack_wait_ms = 1000};
    ck_assert_int_eq(st_bus_pull_open(b, &o, &bad, &err), ST_EIO);
    o.stream = name;
    o.durable = "a.b";
    ck_assert_int_eq(st_bus_pull_open(b, &o, &bad, &err), ST_EINVAL);
    ck_assert_ptr_null(bad);
    st_bus_pull_close(pl);
    st_bus_pull_close(NULL);
    st_bus_close(b);
}
END_TEST

START_TEST(test_ack_and_no_ack)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200], buf[64];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    ck_assert_int_eq(jpub(b, subj, "acked", NULL), ST_OK);
    ck_assert_int_eq(jpub(b, subj, "dropped", NULL), ST_OK);
    struct st_bus_pull *pl = pull(b, name, "d", filter, 1000, 0);
    struct st_bus_msg *m[4] = {0};
    ck_assert_int_eq(fetch_n(pl, m, 2, 5000), 2);
    int64_t t0 = st_test_now_ms();
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "acked");
    ack_free(m[0]);
    st_bus_msg_free(m[1]); /* neither acked nor nak'ed */
    st_bus_msg_free(NULL);
    /* Only the unacked one comes back, after ack_wait, counted as a redelivery. (With
     * nats-server, a copy of the first delivery may still be queued in the client: under load
     * fetch_n's first pull request can be answered after its fetch returned. It is the same
     * delivery, not a redelivery: skip it. And under load a redelivery the server sends as
     * a pull request expires may never reach a fetch (seen once in CI: delivered 3, no 2); the
     * server counts it all the same and redelivers after another ack_wait. So the embedded bus must
     * count exactly 2, nats-server at least 2.) */
    for (;;) {
        ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
        ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "dropped");
        if (st_bus_msg_delivered(m[0]) != 1 || strcmp(url, ST_BUS_EMBEDDED) == 0)
            break;
        st_bus_msg_free(m[0]);
    }
    ck_assert_int_ge(st_test_now_ms() - t0, 900);
    if (strcmp(url, ST_BUS_EMBEDDED) == 0)
        ck_assert_uint_eq(st_bus_msg_delivered(m[0]), 2);
    else
        ck_assert_uint_ge(st_bus_msg_delivered(m[0]), 2);
    ack_free(m[0]);
    /* Both acked: nothing comes back, even after several ack waits. */
    ck_assert_int_eq(fetch_n(pl, m, 1, 2500), 0);
    st_bus_pull_close(pl);
    st_bus_close(b);
}
END_TEST

START_TEST(test_nak_and_in_progress)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200], buf[64];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    ck_assert_int_eq(jpub(b, subj, "x", NULL), ST_OK);

    /* Nak: back at once, though ack_wait is long. */
    struct st_bus_pull *pl = pull(b, name, "nak", filter, 60000, 0);
    struct st_bus_msg *m[2] = {0};
    ck_assert_int_eq(fetch_n(pl, m, 1, 5000), 1);
    ck_assert_int_eq(st_bus_msg_nak(m[0]), ST_OK);
    st_bus_msg_free(m[0]);
    int64_t t0 = st_test_now_ms();
    ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
    ck_assert_int_lt(st_test_now_ms() - t0, 10000);
    ck_assert_uint_eq(st_bus_msg_delivered(m[0]), 2);
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "x");
    ack_free(m[0]);
    st_bus_pull_close(pl);

    /* In progress: not redelivered while touched (3 ack waits), then back once let go. */
    pl = pull(b, name, "touch", filter, 1000, 0);
    ck_assert_int_eq(fetch_n(pl, m, 1, 5000), 1);
    struct st_bus_msg *held = m[0];
    int64_t end = st_test_now_ms() + 3000;
    while (st_test_now_ms() < end) {
        ck_assert_int_eq(st_bus_msg_in_progress(held), ST_OK);
        ck_assert_int_eq(fetch_n(pl, m, 1, 300), 0);
    }
    st_bus_msg_free(held);
    ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
    ck_assert_uint_eq(st_bus_msg_delivered(m[0]), 2);
    ack_free(m[0]);
    st_bus_pull_close(pl);
    st_bus_close(b);
}
END_TEST

/* Pulls closed while the server is still sending them a batch (a fetch that returned before
 * most of it came): nothing reaches a freed subscription — libnats 3.4's read loop did (a use
 * after free, SIGABRT in CI; st_bus_nats.c, sub_off), and the connection works after. Most
 * telling under ASan, whose allocator overwrites the freed subscription's mutex pointer (the
 * old code failed 4 runs of 4 there). nats-server only: the embedded bus has no such loop. */
START_TEST(test_pull_close_while_delivering)
{
    enum { N = 1500, ROUNDS = 400 };
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(jpub(b, subj, "x", NULL), ST_OK);
    struct st_bus_msg **m = calloc(N, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    for (int round = 0; round < ROUNDS; round++) {
        char dur[32];
        snprintf(dur, sizeof(dur), "race%d", round);
        struct st_bus_pull *pl = pull(b, name, dur, filter, 60000, 0);
        struct st_err err = {0};
        int n = st_bus_pull_fetch(pl, m, N, 1, &err);
        ck_assert_msg(n >= 0, "fetch: %s", err.msg);
        st_bus_pull_close(pl);
        for (int k = 0; k < n; k++)
            st_bus_msg_free(m[k]);
    }
    /* The connection serves on: a publish is stored and a new durable gets the first message. */
    ck_assert(st_bus_connected(b));
    ck_assert_int_eq(jpub(b, subj, "after", NULL), ST_OK);
    struct st_bus_pull *pl = pull(b, name, "after", filter, 60000, 0);
    ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
    st_bus_msg_free(m[0]);
    st_bus_pull_close(pl);
    free(m);
    st_bus_close(b);
    /* The stream and its 401 durables off the shared test server. */
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    NATS_OK(js_DeleteStream(js, name, NULL, &jerr));
    st_nats_js_close(nc, js);
}
END_TEST

/* A subscription and a pull whose close is not proven past libnats's read loop (its flush not
 * answered: fault point bus.nats.flush) are kept, then freed once st_bus_close has closed the
 * connection — under ASan, LeakSanitizer fails the test if they are not; the bus works on. */
START_TEST(test_unproven_close_kept_until_bus_close)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    struct seen a;
    seen_init(&a);
    struct st_bus_sub *s1 = sub(b, subj, on_seen, &a);
    struct st_bus_pull *pl = pull(b, name, "kept", filter, 60000, 0);
    ck_assert_int_eq(st_fault_arm("bus.nats.flush", 0, 0, ST_EIO), ST_OK);
    st_bus_unsubscribe(s1);
    st_bus_pull_close(pl);
    ck_assert_uint_eq(st_fault_fired("bus.nats.flush"), 2);
    st_fault_disarm_all();
    /* Still serving: a subscription, a publish, a pull. */
    struct seen c;
    seen_init(&c);
    struct st_bus_sub *s2 = sub(b, subj, on_seen, &c);
    sync_bus(b);
    ck_assert_int_eq(jpub(b, subj, "after", NULL), ST_OK);
    ck_assert(ST_WAIT_UNTIL(seen_last(&c, "after"), 10000));
    ck_assert_int_eq(seen_n(&a), 0);
    pl = pull(b, name, "kept", filter, 60000, 0);
    struct st_bus_msg *m[1] = {0};
    ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
    ack_free(m[0]);
    st_bus_pull_close(pl);
    st_bus_unsubscribe(s2);
    st_bus_close(b);
}
END_TEST

START_TEST(test_durable_survives)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200], buf[64];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    for (int i = 1; i <= 4; i++) {
        char d[8];
        snprintf(d, sizeof(d), "%d", i);
        ck_assert_int_eq(jpub(b, subj, d, NULL), ST_OK);
    }
    struct st_bus_pull *pl = pull(b, name, "dur", filter, 1000, 0);
    struct st_bus_msg *m[8] = {0};
    ck_assert_int_eq(fetch_n(pl, m, 2, 5000), 2);
    ack_free(m[0]);
    ack_free(m[1]);
    st_bus_pull_close(pl);

    /* Reopened: it goes on where it was. */
    pl = pull(b, name, "dur", filter, 1000, 0);
    ck_assert_int_eq(fetch_n(pl, m, 2, 5000), 2);
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "3");
    ck_assert_str_eq(data_of(m[1], buf, sizeof(buf)), "4");
    ack_free(m[0]);
    st_bus_msg_free(m[1]); /* "4" unacked when everything closes */
    st_bus_pull_close(pl);
    st_bus_close(b);

    /* A new connection: "4" comes back, then what was published meanwhile; 1-3 never. */
    b = bus_open();
    ck_assert_int_eq(jpub(b, subj, "5", NULL), ST_OK);
    pl = pull(b, name, "dur", filter, 1000, 0);
    /* "5" may come first: "4" is due again only ack_wait after its delivery. Each is acked as
     * it comes (holding "5" while waiting for "4" would let its own ack_wait pass). */
    bool four = false, five = false;
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
        data_of(m[0], buf, sizeof(buf));
        if (strcmp(buf, "4") == 0) {
            ck_assert(!four);
            four = true;
            ck_assert_uint_eq(st_bus_msg_delivered(m[0]), 2);
        } else {
            ck_assert_str_eq(buf, "5");
            ck_assert(!five);
            five = true;
            ck_assert_uint_eq(st_bus_msg_delivered(m[0]), 1);
        }
        ack_free(m[0]);
    }
    int extra = fetch_n(pl, m, 1, 1500);
    ck_assert_msg(extra == 0, "again: %s delivered %d", data_of(m[0], buf, sizeof(buf)),
                  (int)st_bus_msg_delivered(m[0]));
    st_bus_pull_close(pl);
    st_bus_close(b);
}
END_TEST

START_TEST(test_max_ack_pending)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200], buf[64];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    for (int i = 1; i <= 5; i++) {
        char d[8];
        snprintf(d, sizeof(d), "%d", i);
        ck_assert_int_eq(jpub(b, subj, d, NULL), ST_OK);
    }
    struct st_bus_pull *pl = pull(b, name, "mp", filter, 60000, 2);
    struct st_bus_msg *m[8] = {0};
    /* Two unacked at most: asking for more yields nothing more. */
    ck_assert_int_eq(fetch_n(pl, m, 5, 2500), 2);
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "1");
    ck_assert_str_eq(data_of(m[1], buf, sizeof(buf)), "2");
    ack_free(m[0]);
    /* One acked: one more comes. */
    ck_assert_int_eq(fetch_n(pl, m + 2, 4, 2500), 1);
    ck_assert_str_eq(data_of(m[2], buf, sizeof(buf)), "3");
    ack_free(m[1]);
    ack_free(m[2]);
    ck_assert_int_eq(fetch_n(pl, m, 2, 5000), 2);
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "4");
    ck_assert_str_eq(data_of(m[1], buf, sizeof(buf)), "5");
    ack_free(m[0]);
    ack_free(m[1]);
    st_bus_pull_close(pl);
    st_bus_close(b);
}
END_TEST

/* Fetched messages may outlive their pull consumer and their connection (st_bus.h): reading,
 * ack, nak and in-progress then succeed or fail but touch nothing freed (ASan), and an ack
 * that succeeded holds while one that failed lets the message come back. */
START_TEST(test_msg_outlives_pull)
{
    struct st_bus *b = bus_open();
    char p[64], name[80], subj[200], filter[200], buf[64];
    own_stream(b, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.docs.sealed", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    const char *data[] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(jpub(b, subj, data[i], NULL), ST_OK);
    struct st_bus_pull *pl = pull(b, name, "late", filter, 1000, 0);
    struct st_bus_msg *m[4] = {0};
    ck_assert_int_eq(fetch_n(pl, m, 3, 5000), 3);
    st_bus_pull_close(pl);
    /* The consumer is gone, the connection is not. */
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "1");
    int rc0 = st_bus_msg_ack(m[0]);
    ck_assert_msg(rc0 == ST_OK || rc0 == ST_EIO, "ack after pull_close: %d", rc0);
    st_bus_msg_free(m[0]);
    sync_bus(b);
    st_bus_close(b);
    /* The connection is gone too. */
    ck_assert_str_eq(data_of(m[1], buf, sizeof(buf)), "2");
    ck_assert_str_eq(st_bus_msg_subject(m[1]), subj);
    ck_assert_uint_eq(st_bus_msg_delivered(m[1]), 1);
    int rc1 = st_bus_msg_ack(m[1]);
    ck_assert_msg(rc1 == ST_OK || rc1 == ST_EIO, "ack after close: %d", rc1);
    int rc2 = st_bus_msg_nak(m[2]);
    ck_assert_msg(rc2 == ST_OK || rc2 == ST_EIO, "nak after close: %d", rc2);
    rc2 = st_bus_msg_in_progress(m[2]);
    ck_assert_msg(rc2 == ST_OK || rc2 == ST_EIO, "in progress after close: %d", rc2);
    st_bus_msg_free(m[1]);
    st_bus_msg_free(m[2]);

    /* Back: "3" (never acked) and whatever ack failed come again; nothing else does. */
    b = bus_open();
    pl = pull(b, name, "late", filter, 1000, 0);
    bool want[3] = {rc0 != ST_OK, rc1 != ST_OK, true}, got[3] = {false, false, false};
    int n_want = (int)want[0] + (int)want[1] + 1;
    for (int i = 0; i < n_want; i++) {
        ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
        data_of(m[0], buf, sizeof(buf));
        int k = buf[0] - '1';
        ck_assert_msg(k >= 0 && k < 3 && want[k] && !got[k], "redelivered: %s", buf);
        got[k] = true;
        ack_free(m[0]);
    }
    ck_assert_int_eq(fetch_n(pl, m, 1, 1500), 0);
    st_bus_pull_close(pl);
    st_bus_close(b);
}
END_TEST

/* ---- nats only: a server of the test's own, lost and back ---- */

struct states {
    atomic_int down, up;
};

static void on_state(void *ctx, enum st_bus_state st)
{
    struct states *s = ctx;
    atomic_fetch_add(st == ST_BUS_DISCONNECTED ? &s->down : &s->up, 1);
}

START_TEST(test_nats_reconnect)
{
    struct st_own_nats n = {0};
    n.port = st_free_port();
    snprintf(n.url, sizeof(n.url), "nats://127.0.0.1:%u", n.port);
    n.dir = st_test_tmpdir("busnats");
    /* Down: connecting fails within the timeout, with the reason. */
    struct st_bus_opts o = {.url = n.url, .connect_timeout_ms = 500};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, n.url));
    st_own_nats_start(&n);
    struct states st = {0};
    o.on_state = on_state;
    o.ctx = &st;
    o.reconnect_wait_ms = 100;
    ck_assert_msg(st_bus_connect(&o, &b, &err) == ST_OK, "%s", err.msg);
    const char *subj[] = {"r.>"};
    ensure(b, "R", subj, 1, NULL, NULL);
    struct seen s;
    seen_init(&s);
    struct st_bus_sub *u = sub(b, "r.core", on_seen, &s);
    struct st_bus_pull *pl = pull(b, "R", "rd", "r.>", 30000, 0);
    sync_bus(b);

    st_own_nats_kill(&n);
    ck_assert(ST_WAIT_UNTIL(atomic_load(&st.down) == 1, 10000));
    ck_assert(!st_bus_connected(b));
    ck_assert_int_eq(jpub(b, "r.js", "lost", NULL), ST_EIO);
    struct st_bus_msg *m[2] = {0};
    ck_assert_int_lt(st_bus_pull_fetch(pl, m, 1, 100, &err), 0);

    st_own_nats_start(&n);
    ck_assert(ST_WAIT_UNTIL(atomic_load(&st.up) == 1, 30000));
    ck_assert(st_bus_connected(b));
    /* The subscription and the consumer resume by themselves. */
    ck_assert(ST_WAIT_UNTIL(jpub(b, "r.js", "back", NULL) == ST_OK, 10000));
    ck_assert_int_eq(fetch_n(pl, m, 1, 10000), 1);
    char buf[16];
    ck_assert_str_eq(data_of(m[0], buf, sizeof(buf)), "back");
    ack_free(m[0]);
    pub(b, "r.core", "hello");
    ck_assert(ST_WAIT_UNTIL(seen_last(&s, "hello"), 10000));
    st_bus_pull_close(pl);
    st_bus_unsubscribe(u);
    st_bus_close(b);
    /* After close no state callback, even when the server goes. */
    int downs = atomic_load(&st.down);
    st_own_nats_kill(&n);
    ck_assert_int_eq(atomic_load(&st.down), downs);
    st_own_nats_free(&n);
}
END_TEST

/* A nats-server that wants a token: the right one connects and publishes to JetStream; a wrong
 * one and none are refused with the server's reason, and the token never shows in an error. */
START_TEST(test_nats_token)
{
    struct st_own_nats n = {.token = "t0ken-s3cret"};
    st_own_nats_start(&n);
    struct st_bus_auth good = {.token = "t0ken-s3cret"};
    struct st_bus_opts o = {.url = n.url, .auth = &good, .connect_timeout_ms = 3000};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_msg(st_bus_connect(&o, &b, &err) == ST_OK, "%s", err.msg);
    const char *subj[] = {"tok.>"};
    ensure(b, "TOK", subj, 1, NULL, NULL);
    ck_assert_int_eq(jpub(b, "tok.a", "hello", NULL), ST_OK);
    st_bus_close(b);

    struct st_bus_auth bad = {.token = "not-the-token"};
    o.auth = &bad;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_msg(strstr(err.msg, "Authorization Violation") != NULL, "%s", err.msg);
    ck_assert_ptr_null(strstr(err.msg, "not-the-token"));
    o.auth = NULL;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_msg(strstr(err.msg, "Authorization Violation") != NULL, "%s", err.msg);
    st_own_nats_free(&n);
}
END_TEST

/* A state callback that blocks while hold (the connection's on_state). */
struct blocked_state {
    atomic_bool hold, in_cb, exited, gone;
    atomic_int calls, after_close;
};

static void on_state_block(void *ctx, enum st_bus_state st)
{
    (void)st;
    struct blocked_state *s = ctx;
    if (atomic_load(&s->gone))
        atomic_fetch_add(&s->after_close, 1);
    atomic_fetch_add(&s->calls, 1);
    atomic_store(&s->exited, false);
    atomic_store(&s->in_cb, true);
    while (atomic_load(&s->hold))
        st_test_sleep_ms(1);
    atomic_store(&s->in_cb, false);
    atomic_store(&s->exited, true);
}

struct state_closer {
    struct st_bus *b;
    struct blocked_state *s;
    atomic_bool done;
    bool exited_at_return;
};

static void *state_closer_main(void *arg)
{
    struct state_closer *c = arg;
    st_bus_close(c->b);
    c->exited_at_return = atomic_load(&c->s->exited) && !atomic_load(&c->s->in_cb);
    atomic_store(&c->s->gone, true);
    atomic_store(&c->done, true);
    return NULL;
}

/* st_bus_close while on_state runs (the server went): it returns only after the callback did
 * (the caller may then free ctx), and none runs after it, even when the server comes back. */
START_TEST(test_nats_close_waits_for_state)
{
    struct st_own_nats n = {0};
    n.port = st_free_port();
    snprintf(n.url, sizeof(n.url), "nats://127.0.0.1:%u", n.port);
    n.dir = st_test_tmpdir("busnatsc");
    st_own_nats_start(&n);
    struct blocked_state bs = {0};
    atomic_store(&bs.hold, true);
    struct st_bus_opts o = {.url = n.url,
                            .reconnect_wait_ms = 50,
                            .close_wait_ms = 1000,
                            .on_state = on_state_block,
                            .ctx = &bs};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_msg(st_bus_connect(&o, &b, &err) == ST_OK, "%s", err.msg);
    st_own_nats_kill(&n);
    ck_assert(ST_WAIT_UNTIL(atomic_load(&bs.in_cb), 10000));
    struct state_closer c = {.b = b, .s = &bs};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, state_closer_main, &c), 0);
    /* Longer than close_wait_ms: waiting for nats.c's closed callback (which comes only after
     * this one) is not what holds the close, the running user callback is. */
    ck_assert(!ST_WAIT_UNTIL(atomic_load(&c.done), 1500));
    atomic_store(&bs.hold, false);
    ck_assert(ST_WAIT_UNTIL(atomic_load(&c.done), 15000));
    pthread_join(th, NULL);
    ck_assert(c.exited_at_return);
    ck_assert_int_eq(atomic_load(&bs.calls), 1);
    /* The server is back (a new connection gets in): the closed one reports nothing. */
    st_own_nats_start(&n);
    struct st_bus *b2 = NULL;
    o.on_state = NULL;
    ck_assert_msg(ST_WAIT_UNTIL(st_bus_connect(&o, &b2, &err) == ST_OK, 10000), "%s", err.msg);
    st_bus_close(b2);
    ck_assert_int_eq(atomic_load(&bs.after_close), 0);
    ck_assert_int_eq(atomic_load(&bs.calls), 1);
    st_own_nats_kill(&n);
    st_own_nats_free(&n);
}
END_TEST

START_TEST(test_embedded_url)
{
    /* Every connection reaches the same bus; a bad URL is refused with the reason. */
    struct st_bus *a = bus_open(), *b = bus_open();
    char p[64], name[80], subj[200], filter[200];
    own_stream(a, name, p, sizeof(p));
    snprintf(subj, sizeof(subj), "%s.x", p);
    snprintf(filter, sizeof(filter), "%s.>", p);
    ck_assert_int_eq(jpub(a, subj, "1", NULL), ST_OK);
    struct st_bus_pull *pl = pull(b, name, "e", filter, 1000, 0);
    struct st_bus_msg *m[1];
    ck_assert_int_eq(fetch_n(pl, m, 1, 1000), 1);
    ack_free(m[0]);
    st_bus_pull_close(pl);
    st_bus_close(a);
    st_bus_close(b);
    struct st_bus_opts o = {.url = "kafka://x"};
    struct st_err err = {0};
    ck_assert_int_eq(st_bus_connect(&o, &a, &err), ST_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "kafka://x"));
}
END_TEST

static void add_common(TCase *tc)
{
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pubsub_wildcards);
    tcase_add_test(tc, test_unsubscribe_waits);
    tcase_add_test(tc, test_close_waits);
    tcase_add_test(tc, test_stream_ensure_narrow);
    tcase_add_test(tc, test_stream_overlap);
    tcase_add_test(tc, test_js_dedup_and_order);
    tcase_add_test(tc, test_ack_and_no_ack);
    tcase_add_test(tc, test_nak_and_in_progress);
    tcase_add_test(tc, test_durable_survives);
    tcase_add_test(tc, test_max_ack_pending);
    tcase_add_test(tc, test_msg_outlives_pull);
}

/* Passwords in NATS URLs never reach a message; bad credential sets are refused before any
 * connection attempt (no server needed: nothing listens on port 1). */
START_TEST(test_url_redact_and_auth_checks)
{
    static const char *const cases[][2] = {
        {"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
        {"nats://u:hunter2@h:4222", "nats://u:***@h:4222"},
        {"tls://t0ken@h:4222,nats://a:b@h2:1", "tls://***@h:4222,nats://a:***@h2:1"},
        {"nats://h1:1,nats://h2:2", "nats://h1:1,nats://h2:2"},
        {"nats://u:p@ss@h:4222", "nats://u:***@h:4222"},
        {"embedded", "embedded"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        st_bus_url_redact(cases[i][0], out, sizeof(out));
        ck_assert_str_eq(out, cases[i][1]);
    }
    st_bus_url_redact("nats://u:hunter2@h:4222", out, 12); /* truncated, terminated */
    ck_assert_str_eq(out, "nats://u:**");
    struct st_bus *b = NULL;
    struct st_err err = {0};
    struct st_bus_auth both = {.user = "u", .password = "p", .token = "t"};
    struct st_bus_opts o = {.url = "nats://u:hunter2@127.0.0.1:1", .auth = &both};
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "give one of"));
    struct st_bus_auth half = {.user = "u"};
    o.auth = &half;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "user and password go together"));
    struct st_bus_auth cert = {.tls_cert = "/x.pem"};
    o.auth = &cert;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "cert and key go together"));
    struct st_bus_auth noca = {.tls_ca = "/nonexistent/ca.pem"};
    o.auth = &noca;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EINVAL);
    ck_assert_msg(strstr(err.msg, "/nonexistent/ca.pem") != NULL, "%s", err.msg);
    o.auth = NULL; /* nothing listens: the failure names the URL without its password */
    o.connect_timeout_ms = 500;
    ck_assert_int_eq(st_bus_connect(&o, &b, &err), ST_EIO);
    ck_assert_msg(strstr(err.msg, "nats://u:***@127.0.0.1:1") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "hunter2") == NULL, "%s", err.msg);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("bus");
    TCase *emb = tcase_create("embedded");
    tcase_add_checked_fixture(emb, setup_embedded, NULL);
    add_common(emb);
    tcase_add_test(emb, test_embedded_url);
    tcase_add_test(emb, test_url_redact_and_auth_checks);
    suite_add_tcase(su, emb);
    TCase *nats = tcase_create("nats");
    tcase_add_checked_fixture(nats, setup_nats, NULL);
    add_common(nats);
    tcase_add_test(nats, test_nats_reconnect);
    tcase_add_test(nats, test_pull_close_while_delivering);
    tcase_add_test(nats, test_unproven_close_kept_until_bus_close);
    tcase_add_test(nats, test_nats_token);
    tcase_add_test(nats, test_nats_close_waits_for_state);
    suite_add_tcase(su, nats);
    return st_test_run_suite(su);
}
