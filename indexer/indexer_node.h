/*
 * indexer_node.h — one strata-indexer node as a library: what the strata-indexer daemon runs
 * under systemd, and what `strata demo` runs in-process beside an ingest node (SPEC.md §9).
 *
 * A node serves HTTP on indexer.listen (503 until its catalogs are loaded), keeps its files
 * under <data_dir>/indexer/, consumes sealed/expired events from the bus and builds, swaps and
 * serves indexes (idx_service.h). Stopping abandons builds in progress: their events stay
 * unacked and come back after a restart.
 */
#ifndef INDEXER_NODE_H
#define INDEXER_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "st_error.h"

struct indexer_node;
struct idx_service;

/* Starts a node for cfg (which must outlive it). On failure nothing is left running. */
int indexer_node_start(const struct cfg *cfg, struct indexer_node **out, struct st_err *err) ST_WUR;

/* The HTTP port actually bound (indexer.listen may ask for port 0). */
unsigned indexer_node_port(const struct indexer_node *n);

/* The service (for in-process callers such as the demo: windows, search). */
struct idx_service *indexer_node_service(struct indexer_node *n);

/* A one-line status for systemd's STATUS=. */
void indexer_node_status(struct indexer_node *n, char *buf, size_t cap);

/* Stops HTTP, then the service, and frees the node. NULL is a no-op. */
void indexer_node_stop(struct indexer_node *n);

#endif
