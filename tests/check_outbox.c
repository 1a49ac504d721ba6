/* Sealed-window events through the outbox to a real nats-server (JetStream), across an outage
 * and a restart of ingest: each event arrives, and arrives once. The test runs its own
 * nats-server so it can kill and restart it. */
#include <check.h>
#include <jansson.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "outbox_pub.h"
#include "st_bus.h"
#include "st_clock.h"
#include "st_log.h"
#include "st_nats_test.h"
#include "st_test.h"
#include "st_twcs_test.h"
#include "twcs.h"

#define T0 1763798400000

static struct st_clock clk;
static char url[64], port_s[16], *sd, *dir;
static pid_t nats_pid = -1;

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

static void nats_start(void)
{
    nats_pid = fork();
    ck_assert_int_ge(nats_pid, 0);
    if (nats_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port_s, "-sd", sd,
               (char *)NULL);
        _exit(127);
    }
    ck_assert_msg(ST_WAIT_UNTIL(nats_up(), 30000), "nats-server did not come up on %s", url);
}

static void nats_kill(void)
{
    kill(nats_pid, SIGKILL);
    waitpid(nats_pid, NULL, 0);
    nats_pid = -1;
}

/* Five records in window w (1 s windows), then one that moves the watermark past its seal. */
static void fill_and_seal(struct twcs *t, int w)
{
    int64_t s = T0 - 100000 + (int64_t)w * 1000;
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(st_twcs_put(t, 0, w * 10 + k, w * 10 + k, s + k, NULL), TWCS_ACCEPTED);
    ck_assert_int_eq(st_twcs_put(t, 0, w * 10 + 5, w * 10 + 5, s + 1200, NULL), TWCS_ACCEPTED);
    ck_assert_int_eq(twcs_tick(t), ST_OK);
}

static struct outbox_pub *pub_start(const char *stream)
{
    struct outbox_pub_opts po = {.url = url,
                                 .stream = stream,
                                 .node_id = "n1",
                                 .collection = "docs",
                                 .segment_base = "http://127.0.0.1:7070/v1/segments/docs",
                                 .retry_max_ms = 200};
    struct outbox_pub *p;
    struct st_err err = {0};
    ck_assert_msg(outbox_pub_start(&po, &p, &err) == ST_OK, "%s", err.msg);
    return p;
}

static struct twcs *twcs_start(struct outbox_pub *p)
{
    struct twcs_opts o = {
        .store = {.dir = dir,
                  .dim = 4,
                  .wal_sync = STORE_SYNC_ALWAYS,
                  .no_background = true,
                  .clock = &clk},
        .window_ms = 1000,
        .grace_ms = 200,
        .max_lateness_ms = 100,
        .max_future_ms = 3600000,
        .on_event = outbox_pub_event,
        .ctx = p,
    };
    struct twcs *t;
    struct st_err err = {0};
    ck_assert_msg(twcs_open(&o, &t, &err) == ST_OK, "%s", err.msg);
    outbox_pub_attach(p, t);
    return t;
}

/* Every message in the stream: the starts of the sealed windows, with their Nats-Msg-Id. */
static int stream_events(const char *stream, int64_t *starts, int cap)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    jsStreamInfo *si = NULL;
    NATS_OK(js_GetStreamInfo(&si, js, stream, NULL, &jerr));
    int n = (int)si->State.Msgs;
    jsStreamInfo_Destroy(si);
    ck_assert_int_le(n, cap);
    for (int i = 0; i < n; i++) {
        natsMsg *m = NULL;
        NATS_OK(js_GetMsg(&m, js, stream, (uint64_t)i + 1, NULL, &jerr));
        json_error_t je;
        json_t *o = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &je);
        ck_assert_ptr_nonnull(o);
        ck_assert_str_eq(natsMsg_GetSubject(m), "strata.docs.sealed");
        ck_assert_str_eq(json_string_value(json_object_get(o, "kind")), "sealed");
        ck_assert_str_eq(json_string_value(json_object_get(o, "collection")), "docs");
        /* window 0: its five; later windows also hold the previous window's sixth record */
        ck_assert_int_eq(json_integer_value(json_object_get(o, "records")), i == 0 ? 5 : 6);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "version")), 1);
        const char *seg = json_string_value(json_object_get(o, "segment"));
        ck_assert_ptr_nonnull(strstr(seg, "http://127.0.0.1:7070/v1/segments/docs/"));
        ck_assert_ptr_nonnull(strstr(seg, ".seg"));
        starts[i] = json_integer_value(json_object_get(o, "start"));
        const char *id = NULL;
        NATS_OK(natsMsgHeader_Get(m, "Nats-Msg-Id", &id));
        char want[128];
        snprintf(want, sizeof(want), "n1/docs/ev/sealed/%lld/1", (long long)starts[i]);
        ck_assert_str_eq(id, want);
        json_decref(o);
        natsMsg_Destroy(m);
    }
    st_nats_js_close(nc, js);
    return n;
}

START_TEST(test_outbox_outage_restart)
{
    st_log_set_level(ST_LOG_ERROR);
    st_clock_manual_init(&clk, T0);
    snprintf(port_s, sizeof(port_s), "%d", free_port());
    snprintf(url, sizeof(url), "nats://127.0.0.1:%s", port_s);
    sd = st_test_tmpdir("obx-nats");
    dir = st_test_tmpdir("obx");
    char stream[32];
    snprintf(stream, sizeof(stream), "OBX%d", (int)getpid());
    nats_start();

    /* 1. NATS up: a seal is published and confirmed. */
    struct outbox_pub *p = pub_start(stream);
    struct twcs *t = twcs_start(p);
    fill_and_seal(t, 0);
    ck_assert(ST_WAIT_UNTIL(outbox_pub_published(p) == 1, 30000));
    int64_t starts[8];
    ck_assert_int_eq(stream_events(stream, starts, 8), 1);
    ck_assert_int_eq(starts[0], T0 - 100000);

    /* 2. NATS down while a window seals: the event waits, then arrives once NATS is back. */
    nats_kill();
    fill_and_seal(t, 1);
    ck_assert_uint_eq(outbox_pub_pending(p), 1);
    nats_start();
    ck_assert(ST_WAIT_UNTIL(outbox_pub_published(p) == 2, 60000));
    ck_assert_uint_eq(outbox_pub_pending(p), 0);
    ck_assert_int_eq(stream_events(stream, starts, 8), 2);
    ck_assert_int_eq(starts[1], T0 - 99000);

    /* 3. NATS down, a seal, and ingest stops before it could publish: the event stays in the
     *    durable outbox and is published after both come back. */
    nats_kill();
    fill_and_seal(t, 2);
    ck_assert_uint_eq(outbox_pub_pending(p), 1);
    outbox_pub_stop(p);
    ck_assert_int_eq(twcs_close(t), ST_OK);
    nats_start();
    p = pub_start(stream);
    t = twcs_start(p); /* hands the unconfirmed event over again */
    ck_assert(ST_WAIT_UNTIL(outbox_pub_published(p) == 1, 60000));
    ck_assert_int_eq(stream_events(stream, starts, 8), 3);
    ck_assert_int_eq(starts[2], T0 - 98000);
    outbox_pub_stop(p);
    ck_assert_int_eq(twcs_close(t), ST_OK);

    /* 4. Everything confirmed: a restart hands nothing over, publishes nothing twice. */
    p = pub_start(stream);
    t = twcs_start(p);
    ck_assert_uint_eq(outbox_pub_pending(p), 0);
    ck_assert_int_eq(stream_events(stream, starts, 8), 3);
    outbox_pub_stop(p);
    ck_assert_int_eq(twcs_close(t), ST_OK);
    nats_kill();
    st_test_rmrf(dir);
    st_test_rmrf(sd);
    free(dir);
    free(sd);
}
END_TEST

/* The subjects of stream (count into n, the first into first). */
static void stream_subjects_of(const char *stream, int *n, char *first, size_t cap)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    jsStreamInfo *si = NULL;
    NATS_OK(js_GetStreamInfo(&si, js, stream, NULL, &jerr));
    *n = si->Config->SubjectsLen;
    snprintf(first, cap, "%s", *n > 0 ? si->Config->Subjects[0] : "");
    jsStreamInfo_Destroy(si);
    st_nats_js_close(nc, js);
}

static bool narrowed(const char *stream)
{
    int n;
    char first[64];
    stream_subjects_of(stream, &n, first, sizeof(first));
    return n == 3 && strcmp(first, "strata.*.sealed") == 0;
}

/*
 * A stream strata created before node announcements existed holds strata.>, and would store
 * every announcement (core NATS, every few seconds) forever. The publisher narrows it to the
 * event subjects; a durable consumer on it (as an indexer has, filter strata.>) keeps
 * receiving events, and an announcement is no longer stored.
 */
START_TEST(test_outbox_narrows_old_stream)
{
    st_log_set_level(ST_LOG_ERROR);
    st_clock_manual_init(&clk, T0);
    snprintf(port_s, sizeof(port_s), "%d", free_port());
    snprintf(url, sizeof(url), "nats://127.0.0.1:%s", port_s);
    sd = st_test_tmpdir("obx-nats");
    dir = st_test_tmpdir("obx");
    char stream[32];
    snprintf(stream, sizeof(stream), "OLD%d", (int)getpid());
    nats_start();

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);
    const char *all[] = {"strata.>"};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = stream;
    sc.Subjects = all;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    NATS_OK(js_AddStream(&si, js, &sc, NULL, &jerr));
    jsStreamInfo_Destroy(si);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Config.Durable = "n1-indexer";
    so.Config.AckPolicy = js_AckExplicit;
    natsSubscription *sub = NULL;
    NATS_OK(js_PullSubscribe(&sub, js, "strata.>", "n1-indexer", NULL, &so, &jerr));

    struct outbox_pub *p = pub_start(stream);
    struct twcs *t = twcs_start(p);
    ck_assert_msg(ST_WAIT_UNTIL(narrowed(stream), 30000), "stream %s still holds strata.>", stream);
    /* An announcement (core NATS), then a sealed window: only the latter is stored. */
    NATS_OK(natsConnection_PublishString(nc, "strata.nodes.n1", "{\"node\": \"n1\"}"));
    NATS_OK(natsConnection_Flush(nc));
    fill_and_seal(t, 0);
    ck_assert(ST_WAIT_UNTIL(outbox_pub_published(p) == 1, 30000));
    int64_t starts[4];
    ck_assert_int_eq(stream_events(stream, starts, 4), 1); /* every message is the event */
    natsMsgList list = {0};
    NATS_OK(natsSubscription_Fetch(&list, sub, 4, 10000, &jerr));
    ck_assert_int_eq(list.Count, 1);
    ck_assert_str_eq(natsMsg_GetSubject(list.Msgs[0]), "strata.docs.sealed");
    NATS_OK(natsMsg_Ack(list.Msgs[0], NULL));
    natsMsgList_Destroy(&list);

    /* A stream whose subjects an operator chose is left as it is. */
    outbox_pub_stop(p);
    ck_assert_int_eq(twcs_close(t), ST_OK);
    const char *mine[] = {"strata.>", "audit.>"};
    jsStreamConfig_Init(&sc);
    sc.Name = stream;
    sc.Subjects = mine;
    sc.SubjectsLen = 2;
    sc.Storage = js_FileStorage;
    NATS_OK(js_UpdateStream(&si, js, &sc, NULL, &jerr));
    jsStreamInfo_Destroy(si);
    p = pub_start(stream);
    t = twcs_start(p);
    fill_and_seal(t, 1);
    ck_assert(ST_WAIT_UNTIL(outbox_pub_published(p) == 1, 30000)); /* connected, stream seen */
    int n;
    char first[64];
    stream_subjects_of(stream, &n, first, sizeof(first));
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(first, "strata.>");
    outbox_pub_stop(p);
    ck_assert_int_eq(twcs_close(t), ST_OK);

    natsSubscription_Destroy(sub);
    st_nats_js_close(nc, js);
    nats_kill();
    st_test_rmrf(dir);
    st_test_rmrf(sd);
    free(dir);
    free(sd);
}
END_TEST

/* With nats.url "embedded" (strata demo) the publisher creates the stream on the in-process bus
 * and publishes there, with the same subject, body and de-duplicating id; a durable consumer in
 * the same process gets the event once, even when the publisher is restarted before it could
 * confirm. */
START_TEST(test_outbox_embedded)
{
    st_log_set_level(ST_LOG_ERROR);
    st_clock_manual_init(&clk, T0);
    snprintf(url, sizeof(url), "%s", ST_BUS_EMBEDDED);
    dir = st_test_tmpdir("obx");
    struct outbox_pub *p = pub_start("DEMO");
    ck_assert(ST_WAIT_UNTIL(outbox_pub_connected(p), 10000));
    struct twcs *t = twcs_start(p);
    fill_and_seal(t, 0);
    ck_assert(ST_WAIT_UNTIL(outbox_pub_published(p) == 1, 10000));
    outbox_pub_stop(p);
    ck_assert_int_eq(twcs_close(t), ST_OK);

    struct st_bus_opts bo = {.url = ST_BUS_EMBEDDED};
    struct st_bus *b = NULL;
    struct st_err err = {0};
    ck_assert_int_eq(st_bus_connect(&bo, &b, &err), ST_OK);
    /* The same event again (as after a crash before the confirmation): stored once. */
    char id[128];
    snprintf(id, sizeof(id), "n1/docs/ev/sealed/%lld/1", (long long)(T0 - 100000));
    ck_assert_int_eq(st_bus_js_publish(b, "strata.docs.sealed", "{}", 2, id, 1000, &err), ST_OK);
    struct st_bus_pull_opts po = {
        .stream = "DEMO", .durable = "n1-indexer", .filter = "strata.>", .ack_wait_ms = 60000};
    struct st_bus_pull *pl = NULL;
    ck_assert_msg(st_bus_pull_open(b, &po, &pl, &err) == ST_OK, "%s", err.msg);
    struct st_bus_msg *m[4];
    ck_assert_int_eq(st_bus_pull_fetch(pl, m, 4, 1000, &err), 1);
    ck_assert_str_eq(st_bus_msg_subject(m[0]), "strata.docs.sealed");
    size_t len = 0;
    const char *d = st_bus_msg_data(m[0], &len);
    json_t *o = json_loadb(d, len, 0, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_string_value(json_object_get(o, "kind")), "sealed");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "start")), T0 - 100000);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "records")), 5);
    json_decref(o);
    ck_assert_int_eq(st_bus_msg_ack(m[0]), ST_OK);
    st_bus_msg_free(m[0]);
    ck_assert_int_eq(st_bus_pull_fetch(pl, m, 4, 200, &err), 0);
    st_bus_pull_close(pl);
    st_bus_close(b);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("outbox");
    TCase *tc = tcase_create("outbox");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_outbox_outage_restart);
    tcase_add_test(tc, test_outbox_narrows_old_stream);
    tcase_add_test(tc, test_outbox_embedded);
    suite_add_tcase(su, tc);
    int rc = st_test_run_suite(su);
    if (nats_pid > 0) /* a failed assertion left it running (no-fork mode) */
        nats_kill();
    nats_Close();
    return rc;
}
