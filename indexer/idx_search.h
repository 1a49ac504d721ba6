/*
 * idx_search.h — a collection search as SPEC.md §5 defines it, over an indexer's view and,
 * for `consistency: strong`, every live ingest node's fresh data.
 *
 * indexed: the view's top-k (time-range pruning, per-window index search, merge, superseded
 * and deleted ids masked).
 * strong: the view is searched for more candidates than k; then every live ingest node of the
 * collection is asked, in parallel and within fresh_timeout, for an exact top-k of what it
 * holds that this indexer has not indexed (its "indexed" list names the window versions this
 * view serves from that node) and whether it holds a newer version (or a delete) of any
 * candidate ("check"). Superseded candidates are dropped (with more candidates fetched when too
 * many were), fresh hits superseded by a newer indexed version are dropped, and the rest are
 * merged by distance. With several nodes, the fresh hits are then checked against every node
 * the same way (a newer version may be fresh on another node). A node that does not answer, or
 * no live node at all, fails the search with ST_EBUSY naming it
 * (HTTP 503): never a silently partial answer. Before discovery has settled, strong searches
 * are refused the same way.
 *
 * The HTTP endpoint and in-process callers (benchmarks, tests) use the same function.
 */
#ifndef IDX_SEARCH_H
#define IDX_SEARCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "idx_service.h"
#include "st_api.h"

struct idx_search_req {
    const float *vec; /* normalised for cosine */
    uint32_t k, ef, nprobe;
    int64_t from_ts, to_ts;
    bool strong, with_meta, with_vec;
};

struct idx_search_hit {
    float dist; /* the kernels' distance (-dot for ip and cosine) */
    int64_t ts; /* the version: (ts, partition, offset, idx) */
    int32_t partition;
    int64_t offset;
    uint32_t idx;
    uint8_t id[ST_API_ID_MAX];
    uint32_t id_len;
    struct idx_part *part; /* an indexed hit: borrowed from the result's view */
    uint32_t rec;
    json_t *fresh; /* a fresh hit: the ingest node's JSON object (borrowed from the result) */
};

struct idx_search_res {
    struct idx_view *view;
    json_t *answers; /* the ingest nodes' responses */
    struct idx_search_hit *hits;
    size_t n;
    uint32_t windows, segments; /* searched: indexed parts + the nodes' fresh sources */
    uint64_t fresh_scanned, fresh_pruned;
    uint64_t parts, parts_by_helpers; /* index parts searched, and of them on the pool's threads */
    uint64_t parts_again;             /* HNSW parts searched a second time (idx_view_stats) */
    uint32_t nodes;                   /* ingest nodes asked */
};

/* On error *res is empty and err says why: ST_EBUSY when an ingest node (named) did not
 * answer or discovery has not settled, ST_ENOMEM. */
int idx_search_run(struct idx_service *s, struct idx_coll *c, const struct idx_search_req *q,
                   struct idx_search_res *res, struct st_err *err) ST_WUR;
void idx_search_res_free(struct idx_search_res *res);

#endif
