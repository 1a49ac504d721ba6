/*
 * store_search.h — exact top-k over a store's data that no index covers yet: the memtables, the
 * runs of open windows, late-data deltas and sealed windows the caller has not indexed.
 *
 * This is the "fresh" half of a strong-consistency search (SPEC.md §5): ingest answers it for
 * its own data, and an indexer merges it with what its indexes return. The caller lists the
 * sealed window versions it searched by index; their sealed segments are skipped, everything
 * else is scanned exactly. Only the newest version of an id is ever returned (versions in
 * other sources, including skipped ones, are checked with store_get), deletes never are.
 * Windows and segments wholly outside [from_ts, to_ts] are pruned before any distance.
 */
#ifndef STORE_SEARCH_H
#define STORE_SEARCH_H

#include <stdbool.h>
#include <stdint.h>

#include "st_distance.h"
#include "st_error.h"
#include "store.h"

struct store_window_ver {
    int64_t start;
    uint32_t version;
};

struct store_search_query {
    const float *vec; /* dim floats (normalised by the caller for cosine) */
    uint32_t dim;
    enum st_metric metric;
    uint32_t k;
    int64_t from_ts, to_ts; /* inclusive event-time bounds (INT64_MIN / INT64_MAX: none) */
    const struct store_window_ver *indexed; /* sealed window versions searched elsewhere */
    size_t n_indexed;
    bool with_meta, with_vector;
};

struct store_search_hit {
    uint8_t id[STORE_ID_MAX];
    uint32_t id_len;
    float dist; /* the kernels' smaller-is-closer distance (-dot for ip and cosine) */
    int64_t ts;
    int64_t window;
    uint8_t *meta; /* with_meta: malloc'd (NULL when none) */
    uint32_t meta_len;
    float *vec; /* with_vector: malloc'd dim floats */
};

struct store_search_result {
    struct store_search_hit *hits; /* closest first */
    size_t n;
    uint64_t scanned;  /* records whose distance was computed */
    uint32_t windows;  /* distinct windows with scanned records */
    uint32_t segments; /* segments scanned */
};

int store_search(struct store *s, const struct store_search_query *q,
                 struct store_search_result *out) ST_WUR;
void store_search_result_free(struct store_search_result *r);

#endif
