/*
 * dlq.h — the dead-letter producer (SPEC.md §4.3). A rejected Kafka message is produced
 * unchanged (key, value, headers) to the dead-letter topic with three headers added:
 * `strata.error` (a stable reason code, rec_format.h), `strata.error.detail` (one line) and
 * `strata.source` ("topic/partition/offset"). dlq_send returns only once the broker has
 * acknowledged it (idempotent producer, acks=all): only then may the consumer commit the
 * rejected message's offset, so a crash in between redelivers it rather than losing it.
 */
#ifndef DLQ_H
#define DLQ_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

struct dlq_opts {
    const char *brokers;
    const char *const (*properties)[2]; /* extra librdkafka settings (SASL/SSL), may be NULL */
    size_t n_properties;
    int64_t timeout_ms; /* how long dlq_send waits for the ack (default 30 s) */
};

struct dlq;

int dlq_open(const struct dlq_opts *o, struct dlq **out, struct st_err *err) ST_WUR;
/* Flushes what is in flight (up to the timeout) and frees. NULL is a no-op. */
void dlq_close(struct dlq *d);

/*
 * Produces m to topic as described above and waits for the ack. ST_ETIMEDOUT or ST_EIO
 * (err says why) when it was not acknowledged: do not commit m's offset; retry later.
 */
int dlq_send(struct dlq *d, const char *topic, const rd_kafka_message_t *m, const char *reason,
             const char *detail, struct st_err *err) ST_WUR;

#endif
