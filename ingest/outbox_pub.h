/*
 * outbox_pub.h — sealed/expired window events to NATS JetStream (SPEC.md §7).
 *
 * twcs keeps every event in a durable outbox (the same manifest edit as the seal or drop) and
 * hands it to outbox_pub_event; a publisher thread sends it to `strata.<coll>.sealed|expired`
 * with `Nats-Msg-Id: <node>/<coll>/<event key>` and, once JetStream acknowledged it (stored),
 * confirms it with twcs_event_done. While NATS is unreachable events wait, in order, and are
 * retried with backoff; after a restart twcs hands the unconfirmed ones over again. A retry
 * that reaches JetStream twice within its duplicate window (2 min) is stored once; later
 * duplicates are possible, so indexers treat (collection, start, version) idempotently.
 */
#ifndef OUTBOX_PUB_H
#define OUTBOX_PUB_H

#include <stdbool.h>
#include <stdint.h>

#include "st_bus.h"
#include "st_error.h"
#include "twcs.h"

struct outbox_pub_opts {
    const char *url;                /* nats://host:port (st_bus.h; "embedded": strata demo) */
    const struct st_bus_auth *auth; /* credentials and TLS (NULL: none); borrowed until stop */
    const char *stream;       /* JetStream stream, created if missing with subjects strata.*.sealed,
                               * .expired, .indexed (an old one holding strata.> is narrowed) */
    const char *node_id;      /* this ingest node */
    const char *collection;   /* events of one collection's twcs */
    const char *segment_base; /* sealed segment location prefix: an URL or a shared path */
    int64_t retry_max_ms;     /* backoff cap (default 5 s) */
    int64_t close_wait_ms;    /* its bus connection's close waits this long for nats.c (10 s) */
};

struct outbox_pub;

/* Starts the publisher thread. Connecting is retried in the background (NATS may be down). */
int outbox_pub_start(const struct outbox_pub_opts *o, struct outbox_pub **out,
                     struct st_err *err) ST_WUR;
/* The twcs it confirms events to (set once twcs_open returned; events queued before wait).
 * t is borrowed until it is detached with t = NULL: that waits for a confirmation in
 * progress, so twcs may be closed as soon as it returns (events still queued then stay in
 * twcs's durable outbox). */
void outbox_pub_attach(struct outbox_pub *p, struct twcs *t);
/* twcs_event_fn: queues a copy of ev. ctx is the outbox_pub. */
void outbox_pub_event(void *ctx, const struct twcs_event *ev);
/* Events queued and not yet confirmed. */
uint64_t outbox_pub_pending(struct outbox_pub *p);
uint64_t outbox_pub_published(struct outbox_pub *p);
/* Whether the NATS connection is up now (readiness). */
bool outbox_pub_connected(struct outbox_pub *p);
/* Seconds from a window's end until its sealed event was stored by JetStream
 * (strata_freshness_seconds{stage="sealed"}); valid while p lives. */
struct st_hist;
const struct st_hist *outbox_pub_freshness(struct outbox_pub *p);
/*
 * Stops the thread, closes its bus connection (st_bus_close: after it no bus callback runs
 * into p) and frees. Events not yet published stay in twcs's outbox. Call it after twcs_close
 * (twcs hands events to p until then) and so after detaching twcs.
 */
void outbox_pub_stop(struct outbox_pub *p);

#endif
