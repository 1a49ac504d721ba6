/* st_kafka_test.h — Kafka helpers for integration tests (real broker, DESIGN.md §6). */
#ifndef ST_KAFKA_TEST_H
#define ST_KAFKA_TEST_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* Creates topic with partitions (replication 1); fails the test on error. */
void st_kafka_create_topic(const char *brokers, const char *topic, int partitions);
/* A group consumer (roundrobin, the eager protocol strata-ingest uses) subscribed to topic, from
 * the earliest offset, with auto-commit off. */
rd_kafka_t *st_kafka_consumer(const char *brokers, const char *group, const char *topic);

/* group's committed offsets of topic's partitions 0..nparts-1 into offs (-1: none). */
void st_kafka_committed(const char *brokers, const char *group, const char *topic, int nparts,
                        int64_t *offs);
/* Fails the test unless group has committed every partition of topic up to its end. */
void st_kafka_assert_committed_at_end(const char *brokers, const char *group, const char *topic,
                                      int nparts);
/* A consumer handle of group that subscribes to nothing (committed offsets, watermarks). */
rd_kafka_t *st_kafka_group_client(const char *brokers, const char *group);

/* Names unique to this process and call for a test's topic, dead-letter topic and consumer
 * group: "<tag>-docs-…", "<tag>-dlq-…", "<tag>-g-…" (each buffer 128 bytes). */
void st_kafka_names(const char *tag, char topic[128], char dead[128], char group[128]);

/* A plain producer (acks=all by default). */
rd_kafka_t *st_kafka_producer(const char *brokers);
/* An idempotent producer whose messages wait up to 5 minutes for a broker: each message is in
 * the topic once however the broker answers (restarts included). */
rd_kafka_t *st_kafka_producer_idempotent(const char *brokers);
/* Queues one message (copied) to topic's partition; fails the test on error. Flush after. */
void st_kafka_send(rd_kafka_t *p, const char *topic, int partition, const void *value, size_t len);

#endif
