/* Kafka helpers shared by the integration suites. */
#include "st_kafka_test.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "st_test.h"

void st_kafka_create_topic(const char *brokers, const char *topic, int partitions)
{
    char errstr[512];
    rd_kafka_t *rk = st_kafka_producer(brokers);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
    ck_assert_msg(nt != NULL, "NewTopic: %s", errstr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    ck_assert_msg(ev != NULL, "CreateTopics timed out");
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    ck_assert_ptr_nonnull(res);
    size_t n;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_msg(rd_kafka_topic_result_error(tr[0]) == RD_KAFKA_RESP_ERR_NO_ERROR,
                  "create topic: %s", rd_kafka_topic_result_error_string(tr[0]));
    rd_kafka_event_destroy(ev);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

rd_kafka_t *st_kafka_consumer(const char *brokers, const char *group, const char *topic)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {
        {"bootstrap.servers", brokers},
        {"group.id", group},
        {"auto.offset.reset", "earliest"},
        {"enable.auto.commit", "false"},
        {"partition.assignment.strategy", "roundrobin"}, /* strata-ingest's: joins its groups */
        {"session.timeout.ms", "6000"},
    };
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        ck_assert_int_eq(rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(c != NULL, "consumer: %s", errstr);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    ck_assert_int_eq(rd_kafka_subscribe(c, sub), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(sub);
    return c;
}

rd_kafka_t *st_kafka_group_client(const char *brokers, const char *group)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(c != NULL, "consumer: %s", errstr);
    return c;
}

void st_kafka_committed(const char *brokers, const char *group, const char *topic, int nparts,
                        int64_t *offs)
{
    rd_kafka_t *c = st_kafka_group_client(brokers, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(l, topic, i);
    ck_assert_int_eq(rd_kafka_committed(c, l, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < nparts; i++)
        offs[i] = l->elems[i].offset >= 0 ? l->elems[i].offset : -1;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
}

void st_kafka_assert_committed_at_end(const char *brokers, const char *group, const char *topic,
                                      int nparts)
{
    int64_t *offs = calloc((size_t)nparts, sizeof(*offs));
    st_kafka_committed(brokers, group, topic, nparts, offs);
    rd_kafka_t *c = st_kafka_group_client(brokers, group);
    for (int i = 0; i < nparts; i++) {
        int64_t lo, hi;
        ck_assert_int_eq(rd_kafka_query_watermark_offsets(c, topic, i, &lo, &hi, 30000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        ck_assert_msg(offs[i] == hi || (offs[i] < 0 && hi == 0),
                      /* empty: nothing to commit */ "%s[%d]: committed %" PRId64 ", end %" PRId64,
                      topic, i, offs[i], hi);
    }
    rd_kafka_destroy(c);
    free(offs);
}

void st_kafka_names(const char *tag, char topic[128], char dead[128], char group[128])
{
    static const char *const kind[3] = {"docs", "dlq", "g"};
    char *out[3] = {topic, dead, group};
    for (int i = 0; i < 3; i++) {
        char t[96];
        snprintf(t, sizeof(t), "%.80s-%s", tag, kind[i]);
        snprintf(out[i], 128, "%s", st_test_unique(t));
    }
}

rd_kafka_t *st_kafka_producer(const char *brokers)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(p != NULL, "producer: %s", errstr);
    return p;
}

rd_kafka_t *st_kafka_producer_idempotent(const char *brokers)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {{"bootstrap.servers", brokers},
                           {"enable.idempotence", "true"},
                           {"message.timeout.ms", "300000"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        ck_assert_int_eq(rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(p != NULL, "producer: %s", errstr);
    return p;
}

void st_kafka_send(rd_kafka_t *p, const char *topic, int partition, const void *value, size_t len)
{
    ck_assert_int_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                       RD_KAFKA_V_VALUE((void *)(uintptr_t)value, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
}
