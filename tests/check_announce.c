/* Node announcements (ingest/announce.h): the JSON, and the announcer against a real
 * nats-server of the test's own — started late, killed and restarted — listened to on
 * strata.nodes.> like an indexer does. */
#include <check.h>
#include <pthread.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "announce.h"
#include "st_log.h"
#include "st_nats_test.h"
#include "st_bus.h"
#include "st_test.h"

/* ---- the message -------------------------------------------------------------------------- */

static const char *const colls[] = {"docs", "img"};
static const char *const topics[] = {"t1", "t2", "t3"};

static struct ingest_announce_opts opts(const char *url, const char *node, int64_t interval_ms)
{
    return (struct ingest_announce_opts){.nats_url = url,
                                         .node_id = node,
                                         .url = "http://ingest-1.example:7070",
                                         .collections = colls,
                                         .n_collections = 2,
                                         .topics = topics,
                                         .n_topics = 3,
                                         .interval_ms = interval_ms,
                                         .started_ms = 1763798400123,
                                         .connect_timeout_ms = 500};
}

/* The partitions of topic in an announcement, as JSON text ("[0,3]"), or "absent". */
static char *parts_of(json_t *j, const char *topic)
{
    json_t *a = json_object_get(json_object_get(j, "partitions"), topic);
    return a != NULL ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("absent");
}

static void assert_parts(json_t *j, const char *topic, const char *want)
{
    char *got = parts_of(j, topic);
    ck_assert_msg(strcmp(got, want) == 0, "partitions of %s: %s, want %s", topic, got, want);
    free(got);
}

START_TEST(test_announce_json)
{
    struct ingest_announce_opts o = opts("nats://127.0.0.1:1", "ingest-1", 2000);
    const struct ing_partition parts[] = {{"t2", 5}, {"t1", 3}, {"t1", 0}, {"zz", 1}};
    char *s = ingest_announce_json(&o, parts, 4, 7, false);
    ck_assert_ptr_nonnull(s);
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    ck_assert_msg(j != NULL, "%s: %s", s, je.text);
    ck_assert_uint_eq(json_object_size(j), 9); /* exactly the documented fields */
    ck_assert_str_eq(json_string_value(json_object_get(j, "node")), "ingest-1");
    ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "ingest");
    ck_assert_str_eq(json_string_value(json_object_get(j, "url")), "http://ingest-1.example:7070");
    json_t *c = json_object_get(j, "collections");
    ck_assert_uint_eq(json_array_size(c), 2);
    ck_assert_str_eq(json_string_value(json_array_get(c, 0)), "docs");
    ck_assert_str_eq(json_string_value(json_array_get(c, 1)), "img");
    /* sorted per topic; every consumed topic listed, [] without partitions; an unexpected
     * topic still reported */
    ck_assert_uint_eq(json_object_size(json_object_get(j, "partitions")), 4);
    assert_parts(j, "t1", "[0,3]");
    assert_parts(j, "t2", "[5]");
    assert_parts(j, "t3", "[]");
    assert_parts(j, "zz", "[1]");
    ck_assert(json_is_integer(json_object_get(j, "seq")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "seq")), 7);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "started")), 1763798400123);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "interval_ms")), 2000);
    ck_assert(json_is_false(json_object_get(j, "bye")));
    json_decref(j);
    free(s);
    /* The goodbye, with nothing assigned. */
    s = ingest_announce_json(&o, NULL, 0, 8, true);
    j = json_loads(s, 0, &je);
    ck_assert_ptr_nonnull(j);
    ck_assert(json_is_true(json_object_get(j, "bye")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "seq")), 8);
    assert_parts(j, "t1", "[]");
    assert_parts(j, "t2", "[]");
    assert_parts(j, "t3", "[]");
    json_decref(j);
    free(s);
}
END_TEST

/* ---- a nats-server of the test's own ------------------------------------------------------ */

static pid_t nats_pid = -1;
static char port_s[16], url[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool nats_up(void)
{
    natsConnection *nc = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, url);
    natsConnection_Destroy(nc);
    return s == NATS_OK;
}

static void nats_pick_port(void)
{
    snprintf(port_s, sizeof(port_s), "%d", free_port());
    snprintf(url, sizeof(url), "nats://127.0.0.1:%s", port_s);
}

static void nats_start(void)
{
    nats_pid = fork();
    ck_assert_int_ge(nats_pid, 0);
    if (nats_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", port_s, (char *)NULL);
        _exit(127);
    }
    ck_assert_msg(ST_WAIT_UNTIL(nats_up(), 30000), "nats-server did not come up on %s", url);
}

static void nats_kill(void)
{
    if (nats_pid <= 0)
        return;
    kill(nats_pid, SIGKILL);
    waitpid(nats_pid, NULL, 0);
    nats_pid = -1;
}

/* ---- listening like an indexer -------------------------------------------------------------- */

struct listener {
    natsConnection *nc;
    natsSubscription *sub;
};

static void listen_start(struct listener *l)
{
    NATS_OK(natsConnection_ConnectTo(&l->nc, url));
    NATS_OK(natsConnection_SubscribeSync(&l->sub, l->nc, "strata.nodes.>"));
    NATS_OK(natsConnection_Flush(l->nc)); /* the server has the subscription */
}

static void listen_stop(struct listener *l)
{
    natsSubscription_Destroy(l->sub);
    natsConnection_Destroy(l->nc);
    *l = (struct listener){0};
}

/* The next announcement of node within timeout_ms (parsed; caller decrefs), or NULL. */
static json_t *next_of(struct listener *l, const char *node, int timeout_ms)
{
    char subject[128];
    snprintf(subject, sizeof(subject), "strata.nodes.%s", node);
    int64_t deadline = st_test_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - st_test_now_ms();
        if (left <= 0)
            return NULL;
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, l->sub, left) != NATS_OK)
            return NULL;
        json_t *j = NULL;
        if (strcmp(natsMsg_GetSubject(m), subject) == 0) {
            j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
            ck_assert_msg(j != NULL, "not JSON on %s", subject);
            ck_assert_str_eq(json_string_value(json_object_get(j, "node")), node);
        }
        natsMsg_Destroy(m);
        if (j != NULL)
            return j;
    }
}

static int64_t seq_of(json_t *j)
{
    return json_integer_value(json_object_get(j, "seq"));
}

/* Waits for an announcement of node whose topic t1 has partitions want (JSON text). */
static json_t *wait_parts(struct listener *l, const char *node, const char *want, int timeout_ms)
{
    int64_t deadline = st_test_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - st_test_now_ms();
        json_t *j = left > 0 ? next_of(l, node, (int)left) : NULL;
        ck_assert_msg(j != NULL, "%s never announced t1 = %s", node, want);
        char *got = parts_of(j, "t1");
        bool ok = strcmp(got, want) == 0;
        free(got);
        if (ok)
            return j;
        json_decref(j);
    }
}

static struct ingest_announce *announcer(struct ingest_announce_opts *o)
{
    struct ingest_announce *a = NULL;
    struct st_err err = {0};
    ck_assert_msg(ingest_announce_start(o, &a, &err) == ST_OK, "%s", err.msg);
    return a;
}

/*
 * Started while NATS is down: it connects once NATS is there and announces its assignment,
 * then announces every interval with a growing seq and the same start; it survives NATS
 * being killed and restarted; a clean stop says goodbye with the last seq.
 */
START_TEST(test_announce_lifecycle)
{
    st_log_set_level(ST_LOG_ERROR);
    nats_pick_port();
    struct ingest_announce_opts o = opts(url, "n1", 200);
    struct ingest_announce *a = announcer(&o);
    const struct ing_partition parts[] = {{"t1", 1}, {"t1", 0}};
    ingest_announce_partitions(a, parts, 2); /* NATS is down: recorded, nothing sent */
    ck_assert_uint_eq(ingest_announce_sent(a), 0);

    nats_start();
    struct listener l = {0};
    listen_start(&l);
    json_t *j = wait_parts(&l, "n1", "[0,1]", 30000);
    ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "ingest");
    ck_assert_str_eq(json_string_value(json_object_get(j, "url")), "http://ingest-1.example:7070");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "started")), 1763798400123);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "interval_ms")), 200);
    ck_assert(json_is_false(json_object_get(j, "bye")));
    int64_t last = seq_of(j);
    json_decref(j);
    for (int i = 0; i < 3; i++) { /* periodic, seq growing */
        j = next_of(&l, "n1", 10000);
        ck_assert_msg(j != NULL, "no periodic announcement");
        ck_assert_int_gt(seq_of(j), last);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "started")), 1763798400123);
        assert_parts(j, "t1", "[0,1]");
        last = seq_of(j);
        json_decref(j);
    }

    /* NATS dies and comes back on the same port: the same announcer goes on. */
    listen_stop(&l);
    nats_kill();
    nats_start();
    listen_start(&l);
    j = next_of(&l, "n1", 30000);
    ck_assert_msg(j != NULL, "nothing announced after NATS came back");
    ck_assert_int_gt(seq_of(j), last);
    json_decref(j);

    /* A clean stop: the goodbye carries the last seq and the assignment. */
    ingest_announce_stop(a, true, 2000);
    uint64_t sent = ingest_announce_sent(a);
    json_t *bye = NULL;
    while (bye == NULL && (j = next_of(&l, "n1", 10000)) != NULL) {
        if (json_is_true(json_object_get(j, "bye")))
            bye = j;
        else
            json_decref(j);
    }
    ck_assert_msg(bye != NULL, "no goodbye");
    ck_assert_int_eq(seq_of(bye), (int64_t)sent);
    assert_parts(bye, "t1", "[0,1]");
    json_decref(bye);
    ingest_announce_stop(a, true, 2000); /* idempotent: nothing more is sent */
    ck_assert_uint_eq(ingest_announce_sent(a), sent);
    ingest_announce_partitions(a, parts, 1); /* after stop: only recorded */
    ingest_announce_free(a);
    listen_stop(&l);
    nats_kill();
}
END_TEST

/*
 * With a long interval, what is announced between intervals is exactly the assignment
 * changes: one message at once per change, none for a repeat of the same assignment.
 */
START_TEST(test_announce_on_change)
{
    st_log_set_level(ST_LOG_ERROR);
    nats_pick_port();
    nats_start();
    struct listener l = {0};
    listen_start(&l);
    struct ingest_announce_opts o = opts(url, "n2", 60000);
    struct ingest_announce *a = announcer(&o);
    json_t *j = next_of(&l, "n2", 30000); /* on connecting */
    ck_assert_msg(j != NULL, "no first announcement");
    ck_assert_int_eq(seq_of(j), 1);
    assert_parts(j, "t1", "[]");
    json_decref(j);
    const struct ing_partition p2[] = {{"t1", 2}}, p3[] = {{"t1", 3}, {"t2", 0}};
    ingest_announce_partitions(a, p2, 1);
    j = wait_parts(&l, "n2", "[2]", 10000); /* well before the 60 s interval */
    ck_assert_int_eq(seq_of(j), 2);
    json_decref(j);
    ingest_announce_partitions(a, p2, 1); /* the same again: no message */
    ingest_announce_partitions(a, p3, 2);
    j = wait_parts(&l, "n2", "[3]", 10000);
    ck_assert_int_eq(seq_of(j), 3); /* nothing was sent in between */
    assert_parts(j, "t2", "[0]");
    json_decref(j);
    ingest_announce_stop(a, false, 0); /* no goodbye asked: none sent */
    ck_assert_uint_eq(ingest_announce_sent(a), 3);
    ingest_announce_free(a);
    listen_stop(&l);
    nats_kill();
}
END_TEST

/* NATS unreachable: nothing is sent, and stopping (goodbye asked) does not hang on it. */
START_TEST(test_announce_nats_down)
{
    st_log_set_level(ST_LOG_ERROR);
    nats_pick_port(); /* nothing listens there */
    struct ingest_announce_opts o = opts(url, "n3", 100);
    struct ingest_announce *a = announcer(&o);
    const struct ing_partition p[] = {{"t1", 0}};
    ingest_announce_partitions(a, p, 1);
    int64_t t0 = st_test_now_ms();
    ingest_announce_stop(a, true, 1000);
    int64_t took = st_test_now_ms() - t0;
    ck_assert_msg(took < 5000, "stop took %lld ms with NATS down", (long long)took);
    ck_assert_uint_eq(ingest_announce_sent(a), 0);
    ingest_announce_free(a);
    ingest_announce_free(NULL);
}
END_TEST

/* ---- the embedded bus (strata demo) ------------------------------------------------------- */

struct heard {
    pthread_mutex_t mu;
    int n;
    bool bye;
    char node[64];
};

static void on_heard(void *ctx, const char *subject, const void *data, size_t len)
{
    struct heard *h = ctx;
    json_t *j = json_loadb(data, len, 0, NULL);
    pthread_mutex_lock(&h->mu);
    if (j != NULL && strcmp(subject, "strata.nodes.ingest-e") == 0) {
        h->n++;
        h->bye = json_is_true(json_object_get(j, "bye"));
        snprintf(h->node, sizeof(h->node), "%s", json_string_value(json_object_get(j, "node")));
    }
    pthread_mutex_unlock(&h->mu);
    json_decref(j);
}

static bool heard_bye(struct heard *h, int *n)
{
    pthread_mutex_lock(&h->mu);
    bool b = h->bye;
    *n = h->n;
    pthread_mutex_unlock(&h->mu);
    return b;
}

/* With nats.url "embedded" the announcer speaks on the in-process bus: a listener in the same
 * process hears it, and hears the goodbye. */
START_TEST(test_announce_embedded)
{
    st_log_set_level(ST_LOG_ERROR);
    struct heard h = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct st_bus_opts bo = {.url = ST_BUS_EMBEDDED};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_int_eq(st_bus_connect(&bo, &b, &err), ST_OK);
    struct st_bus_sub *sub = NULL;
    ck_assert_int_eq(st_bus_subscribe(b, "strata.nodes.>", on_heard, &h, &sub, &err), ST_OK);
    struct ingest_announce_opts o = opts(ST_BUS_EMBEDDED, "ingest-e", 100);
    struct ingest_announce *a = NULL;
    ck_assert_msg(ingest_announce_start(&o, &a, &err) == ST_OK, "%s", err.msg);
    int n = 0;
    ck_assert(ST_WAIT_UNTIL((heard_bye(&h, &n), n >= 3), 10000)); /* the first, then each 100 ms */
    ck_assert_str_eq(h.node, "ingest-e");
    ingest_announce_stop(a, true, 1000);
    ck_assert(ST_WAIT_UNTIL(heard_bye(&h, &n), 10000));
    ck_assert_uint_eq(ingest_announce_sent(a), (uint64_t)n);
    ingest_announce_free(a);
    st_bus_unsubscribe(sub);
    st_bus_close(b);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("announce");
    TCase *tc = tcase_create("announce");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_announce_json);
    tcase_add_test(tc, test_announce_lifecycle);
    tcase_add_test(tc, test_announce_on_change);
    tcase_add_test(tc, test_announce_nats_down);
    tcase_add_test(tc, test_announce_embedded);
    suite_add_tcase(su, tc);
    int rc = st_test_run_suite(su);
    nats_kill(); /* a failed assertion left it running (no-fork mode) */
    nats_Close();
    return rc;
}
