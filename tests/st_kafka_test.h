/* st_kafka_test.h — Kafka helpers for integration tests (real broker, DESIGN.md §6). */
#ifndef ST_KAFKA_TEST_H
#define ST_KAFKA_TEST_H

#include <librdkafka/rdkafka.h>

/* Creates topic with partitions (replication 1); fails the test on error. */
void st_kafka_create_topic(const char *brokers, const char *topic, int partitions);
/* A cooperative-sticky group consumer subscribed to topic, from the earliest offset, with
 * auto-commit off. */
rd_kafka_t *st_kafka_consumer(const char *brokers, const char *group, const char *topic);

/* A consumer handle of group that subscribes to nothing (committed offsets, watermarks). */
rd_kafka_t *st_kafka_group_client(const char *brokers, const char *group);

#endif
