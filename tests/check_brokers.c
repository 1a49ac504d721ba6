/*
 * Integration smoke test against the real brokers started by scripts/brokers (ctest fixture):
 * Apache Kafka through librdkafka (topic creation, produce, consumer group with the eager
 * roundrobin protocol strata-ingest uses, committed offsets read back, resume from them) and
 * nats-server through nats.c (JetStream stream, Nats-Msg-Id de-duplication, durable pull consumer,
 * acks persisted).
 */
#include <check.h>
#include <librdkafka/rdkafka.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_kafka_test.h"
#include "st_nats_test.h"
#include "st_test.h"

#define NPART 3
#define NMSG  300

static int delivered_ok, delivered_err;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        delivered_ok++;
    else
        delivered_err++;
}

static rd_kafka_t *make_producer(const char *brokers)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr));
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(p != NULL, "producer: %s", errstr);
    return p;
}

static void produce(rd_kafka_t *p, const char *topic, int partition, const char *value)
{
    rd_kafka_resp_err_t err =
        rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_VALUE((void *)(uintptr_t)value, strlen(value)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s", rd_kafka_err2str(err));
}

START_TEST(test_kafka_group_commit_resume)
{
    const char *brokers = st_test_broker("STRATA_TEST_KAFKA");
    char topic[128], group[128];
    snprintf(topic, sizeof(topic), "%s", st_test_unique("smoke"));
    snprintf(group, sizeof(group), "%s", st_test_unique("grp"));
    st_kafka_create_topic(brokers, topic, NPART);

    rd_kafka_t *p = make_producer(brokers);
    for (int i = 0; i < NMSG; i++) {
        char v[32];
        snprintf(v, sizeof(v), "m%d", i);
        produce(p, topic, i % NPART, v);
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(delivered_ok, NMSG);
    ck_assert_int_eq(delivered_err, 0);

    rd_kafka_t *c = st_kafka_consumer(brokers, group, topic);
    static bool seen[NMSG];
    int64_t last[NPART] = {-1, -1, -1};
    int got = 0, dups = 0;
    int64_t deadline = st_test_now_ms() + 60000;
    while (got < NMSG && st_test_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            int i = atoi((const char *)m->payload + 1);
            ck_assert_int_ge(i, 0);
            ck_assert_int_lt(i, NMSG);
            ck_assert_int_eq(m->partition, i % NPART);
            dups += seen[i];
            seen[i] = true;
            ck_assert_int_gt(m->offset, last[m->partition]); /* in order per partition */
            last[m->partition] = m->offset;
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    ck_assert_int_eq(got, NMSG);
    ck_assert_int_eq(dups, 0);
    ck_assert_int_eq(rd_kafka_commit(c, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);

    /* Committed offsets, read back from the broker, are last consumed + 1 per partition. */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(NPART);
    for (int i = 0; i < NPART; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i);
    ck_assert_int_eq(rd_kafka_committed(c, parts, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < parts->cnt; i++) {
        ck_assert_int_eq(parts->elems[i].err, RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_int_eq(parts->elems[i].offset, last[parts->elems[i].partition] + 1);
        ck_assert_int_eq(parts->elems[i].offset, NMSG / NPART);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    ck_assert_int_eq(rd_kafka_consumer_close(c), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(c);

    /* A new member of the group resumes at the committed offsets: the first message it sees
     * is the one produced after the commit, never a redelivery. */
    produce(p, topic, 1, "after-commit");
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    c = st_kafka_consumer(brokers, group, topic);
    rd_kafka_message_t *m = NULL;
    deadline = st_test_now_ms() + 60000;
    while (st_test_now_ms() < deadline) {
        m = rd_kafka_consumer_poll(c, 200);
        if (m != NULL && m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (m != NULL)
            rd_kafka_message_destroy(m);
        m = NULL;
    }
    ck_assert_msg(m != NULL, "no message after resume");
    ck_assert_int_eq(m->partition, 1);
    ck_assert_int_eq(m->offset, NMSG / NPART);
    ck_assert_int_eq((int)m->len, (int)strlen("after-commit"));
    ck_assert(memcmp(m->payload, "after-commit", m->len) == 0);
    rd_kafka_message_destroy(m);
    ck_assert_int_eq(rd_kafka_consumer_close(c), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(c);
    rd_kafka_destroy(p);
}
END_TEST

START_TEST(test_nats_jetstream_durable)
{
    const char *url = st_test_broker("STRATA_TEST_NATS");
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsErrCode jerr = 0;
    st_nats_js_open(url, &nc, &js);

    char stream[64], subj[96], wildcard[96];
    snprintf(stream, sizeof(stream), "SMOKE_%d", (int)getpid());
    snprintf(subj, sizeof(subj), "smoke%d.docs.sealed", (int)getpid());
    snprintf(wildcard, sizeof(wildcard), "smoke%d.>", (int)getpid());
    const char *subjects[] = {wildcard};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Duplicates = 120LL * 1000000000LL;
    jsStreamInfo *si = NULL;
    NATS_OK(js_AddStream(&si, js, &sc, NULL, &jerr));
    jsStreamInfo_Destroy(si);

    jsPubOptions po;
    for (int i = 0; i < 10; i++) {
        char id[32], body[32];
        snprintf(id, sizeof(id), "w-%d", i);
        snprintf(body, sizeof(body), "{\"window\":%d}", i);
        jsPubOptions_Init(&po);
        po.MsgId = id;
        jsPubAck *pa = NULL;
        NATS_OK(js_Publish(&pa, js, subj, body, (int)strlen(body), &po, &jerr));
        ck_assert(!pa->Duplicate);
        ck_assert_uint_eq(pa->Sequence, (uint64_t)i + 1);
        jsPubAck_Destroy(pa);
    }
    /* The same Nats-Msg-Id again is recognised as a duplicate and not stored twice. */
    jsPubOptions_Init(&po);
    po.MsgId = "w-3";
    jsPubAck *pa = NULL;
    NATS_OK(js_Publish(&pa, js, subj, "dup", 3, &po, &jerr));
    ck_assert(pa->Duplicate);
    jsPubAck_Destroy(pa);

    natsSubscription *sub = NULL;
    NATS_OK(js_PullSubscribe(&sub, js, subj, "indexer-1", NULL, NULL, &jerr));
    int got = 0;
    bool seen[10] = {0};
    int64_t deadline = st_test_now_ms() + 30000;
    while (got < 10 && st_test_now_ms() < deadline) {
        natsMsgList list = {0};
        natsStatus s = natsSubscription_Fetch(&list, sub, 10, 1000, &jerr);
        if (s == NATS_TIMEOUT)
            continue;
        NATS_OK(s);
        for (int i = 0; i < list.Count; i++) {
            int w = -1;
            ck_assert_int_eq(sscanf(natsMsg_GetData(list.Msgs[i]), "{\"window\":%d}", &w), 1);
            ck_assert(w >= 0 && w < 10 && !seen[w]);
            seen[w] = true;
            NATS_OK(natsMsg_AckSync(list.Msgs[i], NULL, &jerr));
            got++;
        }
        natsMsgList_Destroy(&list);
    }
    ck_assert_int_eq(got, 10);

    /* The durable consumer remembers the acks: nothing pending, nothing redelivered. */
    jsConsumerInfo *ci = NULL;
    NATS_OK(js_GetConsumerInfo(&ci, js, stream, "indexer-1", NULL, &jerr));
    ck_assert_int_eq(ci->NumAckPending, 0);
    ck_assert_uint_eq(ci->NumPending, 0);
    ck_assert_uint_eq(ci->Delivered.Stream, 10);
    ck_assert_uint_eq(ci->AckFloor.Stream, 10);
    jsConsumerInfo_Destroy(ci);

    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    NATS_OK(js_DeleteStream(js, stream, NULL, &jerr));
    st_nats_js_close(nc, js);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("brokers");
    TCase *tc = tcase_create("smoke");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_kafka_group_commit_resume);
    tcase_add_test(tc, test_nats_jetstream_durable);
    suite_add_tcase(s, tc);
    int rc = st_test_run_suite(s);
    nats_Close();
    return rc;
}
