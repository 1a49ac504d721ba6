/*
 * announce.h — an ingest node telling indexers where it is (SPEC.md §7, docs/events.md).
 *
 * Core NATS, subject `strata.nodes.<node_id>`, JSON:
 *   {"node", "role": "ingest", "url" (its advertise URL), "collections": [...],
 *    "partitions": {"<topic>": [assigned partitions]}, "seq", "started", "interval_ms",
 *    "bye": false}
 * published at start, whenever the partition assignment changes, and every interval; "bye":
 * true on a clean stop. Indexers treat a node silent for three intervals as gone. NATS being
 * down never blocks the caller: the connection is retried in the background and publishes are
 * buffered by nats.c.
 */
#ifndef ANNOUNCE_H
#define ANNOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer.h"
#include "st_error.h"

struct announce_opts {
    const char *nats_url;
    const char *node_id;
    const char *url; /* advertise URL */
    const char *const *collections;
    size_t ncoll;
    int64_t interval_ms; /* default 2000 */
};

struct announce;

int announce_start(const struct announce_opts *o, struct announce **out, struct st_err *err) ST_WUR;
/* Called from the poll loop with the assigned partitions: publishes when the interval has
 * passed or the assignment differs from the last one announced. */
void announce_tick(struct announce *a, const struct ing_lag *parts, size_t n);
/* Publishes the goodbye (waiting up to 1 s for it to be flushed), closes, frees. */
void announce_stop(struct announce *a);

/* The message itself (malloc'd): exposed for tests. */
char *announce_json(const struct announce_opts *o, uint64_t seq, int64_t started_ms,
                    const struct ing_lag *parts, size_t n, bool bye);

#endif
