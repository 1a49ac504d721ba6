/*
 * ingest_node.h — one strata-ingest node as a library: what the strata-ingest daemon runs
 * under systemd, and what `strata demo` runs in-process beside an indexer (SPEC.md §9).
 *
 * A node serves HTTP on ingest.listen, opens every configured collection's store (TWCS, its
 * outbox publisher), joins the Kafka consumer group and announces itself on the bus
 * (strata.nodes.<node_id>). The caller drives the consumer with ingest_node_poll from one
 * thread until it wants to stop, then calls ingest_node_stop.
 *
 * Stop order (SPEC.md §2): say goodbye on the bus (a clean stop only), stop HTTP, commit what
 * is durable and leave the group, then per collection detach the publisher, close TWCS and
 * stop the publisher (unpublished events stay in the outbox).
 */
#ifndef INGEST_NODE_H
#define INGEST_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "st_error.h"

struct ingest_node;

/* Starts a node for cfg (which must outlive it). started_ms (wall clock) is announced so
 * that indexers tell restarts apart. On failure nothing is left running. */
int ingest_node_start(const struct cfg *cfg, int64_t started_ms, struct ingest_node **out,
                      struct st_err *err) ST_WUR;

/* One round of the consumer (waits up to timeout_ms for messages). Not thread-safe: one
 * polling thread. An error is fatal for the node: stop it. */
int ingest_node_poll(struct ingest_node *n, int timeout_ms, struct st_err *err) ST_WUR;

/* The HTTP port actually bound (ingest.listen may ask for port 0). */
unsigned ingest_node_port(const struct ingest_node *n);

/* The URL other nodes reach this one on (ingest.advertise_url, or http:// + the bound port). */
const char *ingest_node_url(const struct ingest_node *n);

/* A one-line status for systemd's STATUS= (records, rejected, commits). */
void ingest_node_status(struct ingest_node *n, char *buf, size_t cap);

/* Stops and frees the node (see the header comment). clean: a requested stop (goodbye on the
 * bus); false after a failure. Returns ST_OK when everything closed cleanly. NULL: ST_OK. */
int ingest_node_stop(struct ingest_node *n, bool clean);

#endif
