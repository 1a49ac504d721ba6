/*
 * announce.h — an ingest node telling indexers that it is there (SPEC.md §7; the message is
 * documented in docs/events.md, "Discovery").
 *
 * Core NATS (not JetStream: nothing is stored), subject `strata.nodes.<node_id>`, JSON:
 *
 *   {"node": "ingest-1", "role": "ingest", "url": "http://ingest-1:7070",
 *    "collections": ["docs"], "partitions": {"embeddings.docs": [0, 2]},
 *    "seq": 17, "started": 1763798400123, "interval_ms": 2000, "bye": false}
 *
 * `partitions` lists every consumed topic, with [] when none of its partitions is assigned.
 * `seq` grows by one per message sent since this process started (`started`, ms since the
 * epoch, tells restarts apart). A message goes out as soon as NATS is connected, at once
 * when the assignment changes (ingest_announce_partitions, the consumer's assignment hook)
 * or the connection comes back after an outage, and otherwise every interval_ms. Indexers
 * count a node silent for three intervals as gone; a clean stop says so at once with
 * "bye": true.
 *
 * One thread of its own owns the NATS connection: the caller never waits for NATS. While
 * NATS is unreachable the thread retries connecting with backoff (each attempt bounded by
 * connect_timeout_ms), and nothing is queued: an announcement is only worth its moment, so
 * none is sent late after an outage.
 */
#ifndef ANNOUNCE_H
#define ANNOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer.h"
#include "st_bus.h"
#include "st_error.h"

struct ingest_announce_opts {
    const char *nats_url;           /* nats://host:port[,...] (st_bus.h; or "embedded") */
    const struct st_bus_auth *auth; /* credentials and TLS (NULL: none); borrowed until stop */
    const char *node_id;            /* subject strata.nodes.<node_id> */
    const char *url;                /* the advertise URL (cfg_ingest_advertise_url) */
    const char *const *collections; /* the collections this node serves */
    size_t n_collections;
    const char *const *topics; /* the topics it consumes (listed even with no partition) */
    size_t n_topics;
    int64_t interval_ms;        /* default 2000 */
    int64_t started_ms;         /* the process start, ms since the epoch (0: now) */
    int64_t connect_timeout_ms; /* one connection attempt (default 1000) */
    int64_t close_wait_ms;      /* its bus connection's close waits this long for nats.c (5000) */
};

struct ingest_announce;

/* Copies o (strings included; auth is borrowed) and starts the thread; it connects in the
 * background. */
int ingest_announce_start(const struct ingest_announce_opts *o, struct ingest_announce **out,
                          struct st_err *err) ST_WUR;

/*
 * The assignment is now parts (copied). Announced at once when it differs from the last one
 * announced. Any thread; cheap (no NATS call): fit for the consumer's assignment hook. After
 * ingest_announce_stop it only records.
 */
void ingest_announce_partitions(struct ingest_announce *a, const struct ing_partition *parts,
                                size_t n);

/*
 * Stops announcing and closes the connection. With bye, a last message with "bye": true is
 * sent first when NATS is connected, and flushed for at most bye_wait_ms. Returns after the
 * thread ended — at most bye_wait_ms plus one connection attempt in progress — and closed
 * its bus connection (no bus callback runs into a after it). Idempotent; a stays valid for
 * ingest_announce_partitions and the counters until ingest_announce_free.
 */
void ingest_announce_stop(struct ingest_announce *a, bool bye, int64_t bye_wait_ms);

/* Stops (without bye) if still running, and frees. NULL is a no-op. */
void ingest_announce_free(struct ingest_announce *a);

/* Messages sent so far (the last one's seq). */
uint64_t ingest_announce_sent(struct ingest_announce *a);

/* One announcement as published (malloc'd, caller frees; NULL when out of memory): exposed
 * for tests and tools. parts need not be sorted. */
char *ingest_announce_json(const struct ingest_announce_opts *o, const struct ing_partition *parts,
                           size_t n, uint64_t seq, bool bye);

#endif
