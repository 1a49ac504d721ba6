/* The dead-letter producer: one message at a time, acknowledged before dlq_send returns. */
#include "dlq.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_clock.h"
#include "st_log.h"

struct dlq {
    rd_kafka_t *rk;
    int64_t timeout_ms;
};

/* Heap-allocated: a report can arrive after dlq_send gave up (then the report frees it).
 * Reports are only served by rd_kafka_poll on the caller's thread, so no locking. */
struct ack {
    bool done, abandoned;
    rd_kafka_resp_err_t err;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    struct ack *a = m->_private; /* the msg_opaque given to producev */
    if (a->abandoned) {
        free(a);
        return;
    }
    a->err = m->err;
    a->done = true;
}

static int64_t now_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

/* librdkafka's log lines, through ours. kafka.properties is shared by the consumer and this
 * producer, so its warnings about consumer-only properties say nothing to an operator. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "consumer property") != NULL)
        return;
    st_log(level <= 3   ? ST_LOG_ERROR
           : level <= 4 ? ST_LOG_WARNING
                        : ST_LOG_INFO,
           "dlq", "librdkafka %s: %s", fac, buf);
}

int dlq_open(const struct dlq_opts *o, struct dlq **out, struct st_err *err)
{
    *out = NULL;
    char es[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *fixed[][2] = {
        {"bootstrap.servers", o->brokers},
        {"enable.idempotence", "true"}, /* acks=all, no duplicates on internal retries */
        {"linger.ms", "0"},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], es, sizeof(es)) != RD_KAFKA_CONF_OK)
            goto bad;
    for (size_t i = 0; i < o->n_properties; i++) /* consumer-only keys are not errors here */
        if (rd_kafka_conf_set(conf, o->properties[i][0], o->properties[i][1], es, sizeof(es)) ==
            RD_KAFKA_CONF_INVALID)
            goto bad;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_log_cb(conf, on_log);
    struct dlq *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        rd_kafka_conf_destroy(conf);
        return ST_ENOMEM;
    }
    d->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es)); /* takes conf */
    if (d->rk == NULL) {
        free(d);
        return st_err_set(err, ST_EINVAL, "dead-letter producer: %s", es);
    }
    *out = d;
    return ST_OK;
bad:
    rd_kafka_conf_destroy(conf);
    return st_err_set(err, ST_EINVAL, "dead-letter producer: %s", es);
}

void dlq_close(struct dlq *d)
{
    if (d == NULL)
        return;
    rd_kafka_flush(d->rk, (int)d->timeout_ms);
    rd_kafka_destroy(d->rk);
    free(d);
}

int dlq_send(struct dlq *d, const char *topic, const rd_kafka_message_t *m, const char *reason,
             const char *detail, struct st_err *err)
{
    rd_kafka_headers_t *src = NULL, *h;
    if (rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR && src != NULL)
        h = rd_kafka_headers_copy(src);
    else
        h = rd_kafka_headers_new(3);
    char source[512];
    snprintf(source, sizeof(source), "%s/%" PRId32 "/%" PRId64, rd_kafka_topic_name(m->rkt),
             m->partition, m->offset);
    rd_kafka_header_add(h, "strata.error", -1, reason, -1);
    rd_kafka_header_add(h, "strata.error.detail", -1, detail, -1);
    rd_kafka_header_add(h, "strata.source", -1, source, -1);
    struct ack *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        rd_kafka_headers_destroy(h);
        return ST_ENOMEM;
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        d->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(m->key, m->key_len),
        RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(a), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(h); /* not taken on failure */
        free(a);
        return st_err_set(err, ST_EIO, "dead-letter topic %s: %s", topic, rd_kafka_err2str(e));
    }
    int64_t deadline = now_ms() + d->timeout_ms;
    while (!a->done && now_ms() < deadline)
        rd_kafka_poll(d->rk, 50);
    if (!a->done) {
        a->abandoned = true;
        /* The message may still be delivered later; the caller will retry and the DLQ may
         * then hold it twice, which a DLQ reader tolerates (strata.source identifies it). */
        rd_kafka_purge(d->rk, RD_KAFKA_PURGE_F_QUEUE);
        rd_kafka_poll(d->rk, 0);
        return st_err_set(err, ST_ETIMEDOUT, "dead-letter topic %s: no ack within %" PRId64 " ms",
                          topic, d->timeout_ms);
    }
    rd_kafka_resp_err_t de = a->err;
    free(a);
    if (de != RD_KAFKA_RESP_ERR_NO_ERROR)
        return st_err_set(err, ST_EIO, "dead-letter topic %s: %s", topic, rd_kafka_err2str(de));
    return ST_OK;
}
