/* The dead-letter path against the real Kafka broker: rejected messages arrive unchanged with
 * their reason headers; an unreachable broker is an error, not an ack. */
#include <check.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "rec_format.h"
#include "st_clock.h"
#include "st_kafka_test.h"
#include "st_test.h"

#define NBAD 4

static const char *const bad_values[NBAD] = {
    "this is not json",
    "{\"collection\": \"docs\", \"records\": [{\"id\": \"a\", \"vector\": [1, 2]}]}",
    "{\"collection\": \"nope\", \"records\": [{\"id\": \"a\", \"vector\": [1, 2, 3]}]}",
    "{\"collection\": \"docs\", \"records\": []}",
};
static const char *const want_reason[NBAD] = {"garbage", "wrong_dim", "unknown_collection",
                                              "empty_batch"};

static int64_t now_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

/* Polls until n messages arrived (each kept), or fails after 60 s. */
static void consume_n(rd_kafka_t *c, rd_kafka_message_t **out, int n)
{
    int got = 0;
    int64_t deadline = now_ms() + 60000;
    while (got < n) {
        ck_assert_msg(now_ms() < deadline, "only %d of %d messages within 60 s", got, n);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (m == NULL)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        out[got++] = m;
    }
}

static const char *header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap)
{
    rd_kafka_headers_t *h;
    const void *v;
    size_t n;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || n >= cap)
        return NULL;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return buf;
}

START_TEST(test_dlq_unchanged_with_reason)
{
    const char *brokers = st_test_broker("STRATA_TEST_KAFKA");
    char src[128], dead[128];
    snprintf(src, sizeof(src), "%s", st_test_unique("dlq-src"));
    snprintf(dead, sizeof(dead), "%s", st_test_unique("dlq-dead"));
    st_kafka_create_topic(brokers, src, 1);
    st_kafka_create_topic(brokers, dead, 1);

    /* Produce the bad messages with a key and headers of their own. */
    char es[256];
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    ck_assert_int_eq(rd_kafka_conf_set(pc, "bootstrap.servers", brokers, es, sizeof(es)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, es, sizeof(es));
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < NBAD; i++) {
        char key[16];
        snprintf(key, sizeof(key), "key-%d", i);
        ck_assert_int_eq(
            rd_kafka_producev(
                p, RD_KAFKA_V_TOPIC(src), RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_KEY(key, strlen(key)),
                RD_KAFKA_V_VALUE((void *)(uintptr_t)bad_values[i], strlen(bad_values[i])),
                RD_KAFKA_V_HEADER("x-trace", "t-1", -1), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    ck_assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);

    /* Consume, decode (each is rejected), dead-letter. */
    rd_kafka_t *c = st_kafka_consumer(brokers, st_test_unique("dlq-g"), src);
    rd_kafka_message_t *in[NBAD];
    consume_n(c, in, NBAD);
    static const struct rec_collection docs = {"docs", 3, false};
    struct rec_schema schema = {&docs, 1, NULL, 0};
    struct rec_decoder *dec = rec_decoder_new();
    struct dlq *d;
    struct st_err err = {0};
    struct dlq_opts o = {.brokers = brokers};
    ck_assert_msg(dlq_open(&o, &d, &err) == ST_OK, "%s", err.msg);
    for (int i = 0; i < NBAD; i++) {
        struct rec_batch b;
        char detail[256];
        enum rec_reason r = rec_decode(dec, &schema, REC_KIND_AUTO, in[i]->payload, in[i]->len, &b,
                                       detail, sizeof(detail));
        ck_assert_str_eq(rec_reason_str(r), want_reason[in[i]->offset]);
        ck_assert_msg(dlq_send(d, dead, in[i], rec_reason_str(r), detail, &err) == ST_OK, "%s",
                      err.msg);
    }

    /* An unreachable DLQ broker: an error after the timeout, never a false ack. */
    struct dlq *nowhere;
    struct dlq_opts o2 = {.brokers = "127.0.0.1:1", .timeout_ms = 1500};
    ck_assert_int_eq(dlq_open(&o2, &nowhere, &err), ST_OK);
    st_err_clear(&err);
    ck_assert_int_eq(dlq_send(nowhere, dead, in[0], "garbage", "x", &err), ST_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(err.msg, "no ack"));
    dlq_close(nowhere);
    dlq_close(d);
    rec_decoder_free(dec);

    /* The dead-letter topic holds each message unchanged, with its reason. */
    rd_kafka_t *c2 = st_kafka_consumer(brokers, st_test_unique("dlq-g2"), dead);
    rd_kafka_message_t *outm[NBAD];
    consume_n(c2, outm, NBAD);
    for (int i = 0; i < NBAD; i++) {
        const rd_kafka_message_t *m = outm[i];
        int64_t so = -1;
        char buf[512], want_src[256];
        ck_assert_ptr_nonnull(header(m, "strata.source", buf, sizeof(buf)));
        ck_assert_int_eq(sscanf(strrchr(buf, '/') + 1, "%" SCNd64, &so), 1);
        ck_assert(so >= 0 && so < NBAD);
        snprintf(want_src, sizeof(want_src), "%s/0/%" PRId64, src, so);
        ck_assert_str_eq(buf, want_src);
        ck_assert_uint_eq(m->len, strlen(bad_values[so]));
        ck_assert(memcmp(m->payload, bad_values[so], m->len) == 0);
        char key[16];
        snprintf(key, sizeof(key), "key-%" PRId64, so);
        ck_assert_uint_eq(m->key_len, strlen(key));
        ck_assert(memcmp(m->key, key, m->key_len) == 0);
        ck_assert_str_eq(header(m, "x-trace", buf, sizeof(buf)), "t-1");
        ck_assert_str_eq(header(m, "strata.error", buf, sizeof(buf)), want_reason[so]);
        ck_assert_ptr_nonnull(header(m, "strata.error.detail", buf, sizeof(buf)));
        ck_assert_uint_gt(strlen(buf), 0);
    }
    for (int i = 0; i < NBAD; i++) {
        rd_kafka_message_destroy(in[i]);
        rd_kafka_message_destroy(outm[i]);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_consumer_close(c2);
    rd_kafka_destroy(c2);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("dlq");
    TCase *tc = tcase_create("dlq");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_dlq_unchanged_with_reason);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
