/*
 * idx_nodes.h — the live ingest nodes an indexer asks for fresh data (SPEC.md §7).
 *
 * Discovery: every ingest node announces itself on core NATS `strata.nodes.<node_id>` (node,
 * url, collections, interval_ms, seq; "bye": true on a clean stop). A node silent for three of
 * its intervals is gone. Until the set has settled (settle_ms after subscribing: every live
 * node has announced once) it is not trusted, so a strong search is refused rather than
 * silently missing a node. With `indexer.ingest_nodes` the set is pinned instead: every
 * listed URL serves every collection, and a node's id is asked from its /healthz once.
 */
#ifndef IDX_NODES_H
#define IDX_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idx_catalog.h"
#include "st_bus.h"
#include "st_error.h"

struct idx_node {
    char node[IDX_NODE_MAX + 1]; /* "" for a pinned node whose id is not known yet */
    char url[512];
};

struct idx_nodes_opts {
    const char *const *pinned; /* URLs, or NULL: discover on NATS (idx_nodes_attach) */
    size_t npinned;
    const char *token; /* bearer token for pinned /healthz (may be NULL) */
    int64_t settle_ms; /* default 3000 */
};

struct idx_nodes;

int idx_nodes_start(const struct idx_nodes_opts *o, struct idx_nodes **out,
                    struct st_err *err) ST_WUR;
/* Discovery: subscribes to strata.nodes.> on b (connected; borrowed until idx_nodes_detach)
 * and starts the settle time. */
int idx_nodes_attach(struct idx_nodes *ns, struct st_bus *b, struct st_err *err) ST_WUR;
/* Unsubscribes (call before st_bus_close of the connection attached to): after it no
 * announcement callback runs. Idempotent; idx_nodes_stop does it too. */
void idx_nodes_detach(struct idx_nodes *ns);
/* The NATS connection went down (false) or came back (true): while it is down the set is not
 * trusted, and after it comes back it settles again (announcements were missed meanwhile). */
void idx_nodes_connection(struct idx_nodes *ns, bool up);
/* Has the set settled (pinned: at once; discovery: attached, connected, and settle_ms since)? */
bool idx_nodes_settled(struct idx_nodes *ns);
/* The live nodes serving collection coll (a malloc'd copy; caller frees *out). */
int idx_nodes_live(struct idx_nodes *ns, const char *coll, struct idx_node **out, size_t *n) ST_WUR;
/* Feeds one announcement (the discovery callback's work; exposed for tests). */
void idx_nodes_announce(struct idx_nodes *ns, const char *json, size_t len);
void idx_nodes_stop(struct idx_nodes *ns);

#endif
