/*
 * idx_service.h — strata-indexer's engine: per collection a catalog, the served parts and
 * their view; one JetStream durable consumer (`<node_id>-indexer`) for the window events of
 * every collection; a bounded pool of build workers under a memory budget; age tiering.
 *
 * Events (docs/events.md):
 *   sealed   fetch the segment from the URL in the event (or copy it from a shared path),
 *            verify it (checksum, structure, dimension), build the index, persist both
 *            (fsync, rename), record them in the catalog (the commit point), swap a new view
 *            in, ack, publish `strata.<coll>.indexed`. Version n+1 of (node, window) replaces
 *            version n; an event for a version already served, older, or expired is a no-op
 *            (acked). An unreachable node is retried with backoff, the event kept in progress.
 *   expired  unloads (node, window) and deletes its files once no search holds them, records
 *            the horizon in the catalog, acks.
 * Builds are ordered newest window first. Each takes a worker (indexer.build_threads) and an
 * estimated amount of memory (idx_part_build_memory) from indexer.memory_budget; a build that
 * does not fit waits for running ones to finish — except that a window larger than the whole
 * budget builds alone once nothing else runs (it cannot be split, and refusing it would leave
 * the window unsearchable forever).
 *
 * Restart: the catalog's parts are loaded (no rebuild); files it does not name are removed;
 * events not acked before the stop are redelivered and their builds redone. A part whose
 * files fail to load is rebuilt from its source URL.
 */
#ifndef IDX_SERVICE_H
#define IDX_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "idx_nodes.h"
#include "idx_view.h"
#include "st_error.h"
#include "st_prom.h"

struct idx_service_opts {
    const struct cfg *cfg;
    const char *dir;          /* the indexer's directory: <data_dir>/indexer */
    const char *token;        /* bearer token for calls to ingest nodes (NULL: none) */
    int64_t fetch_timeout_ms; /* one segment download (default 10 min) */
    int64_t fresh_timeout_ms; /* a strong search's wait for every ingest node (default 2 s) */
    int64_t settle_ms;        /* discovery settle time (default 3 s) */
    int64_t tier_check_ms;    /* how often windows are checked for age tiering (default 10 s) */
    const char *const *ingest_nodes; /* indexer.ingest_nodes: pinned URLs instead of discovery */
    size_t n_ingest_nodes;
};

struct idx_service;
struct idx_coll;

int idx_service_start(const struct idx_service_opts *o, struct idx_service **out,
                      struct st_err *err) ST_WUR;
/* Stops consuming, abandons builds in progress (their events stay unacked and are redelivered
 * after a restart), waits for the workers, closes its bus connection, frees. */
void idx_service_stop(struct idx_service *s);

size_t idx_service_ncoll(const struct idx_service *s);
struct idx_coll *idx_service_coll_at(struct idx_service *s, size_t i);
struct idx_coll *idx_service_coll(struct idx_service *s, const char *name, size_t len);
const struct cfg_collection *idx_coll_cfg(const struct idx_coll *c);
/* A reference to the collection's current view (release with idx_view_release); never NULL
 * once the service started (an empty view before any window is indexed). */
struct idx_view *idx_coll_view(struct idx_coll *c);

struct idx_window_info {
    char node[IDX_NODE_MAX + 1];
    int64_t start, end;
    uint32_t version;
    bool indexed; /* false: indexing (queued or building) */
    uint64_t records, bytes;
    char index[8]; /* "hnsw", "ivfpq", "none" */
    bool cold;
    uint64_t unit; /* 0, or the unit (index compaction) whose index serves it */
};
int idx_coll_windows(struct idx_coll *c, struct idx_window_info **out, size_t *n) ST_WUR;

struct idx_nodes *idx_service_nodes(struct idx_service *s);
/* The threads a search lends its index parts to (indexer.search_threads; NULL: none). */
struct idx_pool *idx_service_search_pool(struct idx_service *s);
const struct idx_service_opts *idx_service_opts(const struct idx_service *s);
/* Ready: catalogs loaded and the JetStream consumer subscribed (else why). */
bool idx_service_ready(struct idx_service *s, char *why, size_t cap);
/* Appends the engine's metrics (builds, backlog, freshness, served parts). */
void idx_service_metrics(struct idx_service *s, struct st_text *t);
/* Builds finished and events handled so far (tests, status). */
uint64_t idx_service_builds(struct idx_service *s);

#endif
