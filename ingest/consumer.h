/*
 * consumer.h — the Kafka side of strata-ingest: a consumer-group member (eager protocol,
 * roundrobin: a revoke commits before anyone rejoins) that turns messages into window writes with
 * exactly-once effect.
 *
 * For every message: decode (rec_format.h) → write through the collection's twcs
 * (ingest_write.h) or, when rejected, produce it to the dead-letter topic (dlq.h). Offsets are
 * committed only for messages whose effect is durable. The periodic round (commit_interval_ms)
 * never waits for an fsync: it reads each store's durable marks — advanced by the store's WAL
 * syncer (group commit: one fsync covers many messages) — and commits, per partition, the
 * position after the last handled message that is durable everywhere (dead-lettered and
 * duplicate messages count as done; a store with an applied but unsynced message of the
 * partition holds the position just after its durable mark). Nor does it wait for the broker:
 * the round's commit is asynchronous, its answer served by a later poll, one round in flight at
 * a time. On revoke, close and ing_consumer_commit the round fsyncs every store first and
 * commits everything handled (synchronously).
 * A message applied but not yet covered by a commit is redelivered after a crash or a
 * rebalance and recognised as a duplicate by its (partition, offset) — never applied twice.
 *
 * Back-pressure never blocks the poll loop: a message the store cannot take yet (ST_EAGAIN)
 * pauses its partition, seeks back to it and resumes after a short delay. On revoke the
 * partitions' data is made durable and committed before they are released.
 *
 * Decoding runs on two threads of the consumer's own (up to 4 messages ahead of the writes,
 * handed back in order); everything else runs on the thread calling ing_consumer_poll. Messages
 * decoded ahead for a partition that was paused or revoked meanwhile are dropped and read again.
 */
#ifndef CONSUMER_H
#define CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "dlq.h"
#include "ingest_write.h"
#include "rec_format.h"
#include "st_error.h"
#include "st_prom.h"
#include "twcs.h"

struct ing_collection {
    struct rec_collection rc; /* name, dim, id type */
    const char *topic;
    const char *dead_letter_topic; /* NULL: the consumer's */
    struct twcs *twcs;
    bool cosine;
};

/* One partition of this member's assignment (borrowed for the call it is passed to). */
struct ing_partition {
    const char *topic;
    int32_t partition;
};

/*
 * Told every change of this member's assignment: all partitions assigned now, sorted by topic
 * then partition (n may be 0: everything was revoked, e.g. on close). Runs on the thread in
 * ing_consumer_poll or ing_consumer_close (inside librdkafka's rebalance callback), after the
 * change took effect; it must be quick and must not call into the consumer. ingest uses it to
 * announce its partitions (announce.h) without the consumer knowing about NATS.
 */
typedef void (*ing_assignment_fn)(void *ctx, const struct ing_partition *parts, size_t n);

struct ing_consumer_opts {
    const char *brokers;
    const char *group_id;
    const char *const (*properties)[2]; /* passed through to librdkafka (SASL, SSL, ...) */
    size_t n_properties;
    struct ing_collection *colls;
    size_t n_colls;
    struct dlq *dlq;
    const char *dead_letter_topic;   /* kafka.dead_letter_topic */
    int64_t commit_interval_ms;      /* commit round of what is durable (default 200) */
    int64_t pause_ms;                /* back-pressure pause before retrying (default 50) */
    int64_t hold_ms;                 /* back-pressure first retried in place for this long
                                      * (0: default 1000; < 0: pause at once) */
    size_t max_value;                /* largest accepted message value (default 64 MiB) */
    int64_t close_catchup_ms;        /* how long a close re-reads to make a refused commit stick
                                      * (default 10 s; keep it well inside the shutdown timeout) */
    ing_assignment_fn on_assignment; /* NULL: nobody is told */
    void *assignment_ctx;
};

struct ing_stats {
    uint64_t messages, records, duplicates, rejected, retries, commits;
    uint64_t paused_ms;  /* back-pressure: time partitions spent paused, summed over partitions */
    uint64_t holds;      /* back-pressure waited out in place (no pause) */
    uint64_t held_ms;    /* time spent waiting in place */
    uint64_t holds_long; /* waits that lasted the whole hold_ms (then a pause) */
    /* Where the polling thread's time goes, ns: inside librdkafka's poll, waiting for the
     * decode stage's oldest message, writing decoded messages (the store and twcs, back-pressure
     * waits included), and the periodic durable-offset commits. */
    uint64_t kafka_ns, decode_wait_ns, write_ns, commit_ns;
};

struct ing_consumer;

/* Rejections by (collection, reason): coll indexes opts.colls, SIZE_MAX when unknown. */
struct ing_reject_count {
    size_t coll;
    const char *reason; /* static reason code */
    uint64_t n;
};

struct ing_lag {
    char topic[256];
    int32_t partition;
    int64_t lag; /* high watermark - position */
};

/* A copy of the counters for /metrics, readable from any thread. */
struct ing_metrics {
    struct ing_stats total;
    uint64_t *coll_records; /* per opts.colls */
    size_t n_colls;
    struct ing_reject_count *rej;
    size_t nrej;
    struct ing_lag *lag; /* assigned partitions, refreshed every second */
    size_t nlag;
};

int ing_consumer_open(const struct ing_consumer_opts *o, struct ing_consumer **out,
                      struct st_err *err) ST_WUR;
/*
 * Reads one message into the decode stage (waiting up to timeout_ms only when nothing is being
 * decoded), handles the oldest decoded one (waiting up to timeout_ms for it when the stage is
 * full or nothing new came), and runs a commit round when one is due. Returns ST_OK, or an
 * error that must stop consuming (the store failed, or the DLQ is unreachable: nothing at or
 * after the failing message is written or committed; every later call returns the error; or
 * the brokers refused the credentials or the TLS handshake — ST_EIO "kafka authentication: …"
 * or "kafka TLS: …" — which librdkafka would retry forever).
 * Memory: the decode stage holds at most 4 messages and 64 MiB of them (always at least one
 * message, however large); a decoder drops a message's decoded data once it is handled.
 */
int ing_consumer_poll(struct ing_consumer *c, int timeout_ms, struct st_err *err) ST_WUR;
/* A commit round now (fsync all stores, commit what they cover). */
int ing_consumer_commit(struct ing_consumer *c, struct st_err *err) ST_WUR;
void ing_consumer_stats(struct ing_consumer *c, struct ing_stats *out);
/*
 * The prefetch bound (librdkafka's queued.max.messages.kbytes, in KiB) a consumer runs with
 * unless kafka.properties sets one: a sixteenth of the memory this process may use
 * (st_mem_limit: physical memory, or its cgroup's bound), at least 64 MiB (librdkafka's own
 * default) and at most 1 GiB. librdkafka 2.0 stops fetching whenever its queue reaches the
 * bound, until its broker thread next wakes (up to a second), so a node catching up runs dry
 * for part of each such second unless the bound outlasts the pause (docs/ingest.md,
 * "librdkafka settings"). ing_consumer_open logs the value it chose.
 */
uint64_t ing_consumer_prefetch_kb(void);
/* The same bound for a process that may use mem_limit_bytes (0: unknown, the least). */
uint64_t ing_consumer_prefetch_kb_for(uint64_t mem_limit_bytes);
/* The value librdkafka runs with for property name (strata's fixed settings, its defaults,
 * the operator's properties, librdkafka's own defaults, in that order of precedence) into
 * buf: ST_OK, ST_ENOTFOUND for a name librdkafka does not know, ST_ERANGE if buf is short. */
int ing_consumer_kafka_setting(struct ing_consumer *c, const char *name, char *buf,
                               size_t len) ST_WUR;
/* Any thread: the counters as of the last poll. Free with ing_metrics_free. */
int ing_consumer_metrics(struct ing_consumer *c, struct ing_metrics *out) ST_WUR;
void ing_metrics_free(struct ing_metrics *m);
/* Any thread: per collection (index into opts.colls), how long after its Kafka timestamp each
 * applied message became visible to searches. Valid while c lives. */
const struct st_hist *ing_consumer_apply_lag(const struct ing_consumer *c, size_t coll);
/* Any thread: ST_OK when a Kafka broker answers a metadata request within timeout_ms. */
int ing_consumer_ping(struct ing_consumer *c, int timeout_ms) ST_WUR;
/* Handles the messages already read into the decode stage, runs a final commit round, leaves
 * the group (partitions revoked cleanly), frees. */
int ing_consumer_close(struct ing_consumer *c);

#endif
