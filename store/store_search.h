/*
 * store_search.h — exact top-k over a store's data that no index covers yet: the memtables, the
 * runs of open windows, late-data deltas and sealed windows the caller has not indexed.
 *
 * This is the "fresh" half of a strong-consistency search (SPEC.md §5): ingest answers it for
 * its own data, and an indexer merges it with what its indexes return. The caller lists the
 * sealed window versions it searched by index; their sealed segments are skipped, everything
 * else is scanned exactly (store_scan). Only the newest version of an id is ever returned,
 * deletes never are, and an id is returned at most once (a record that moves from a memtable
 * to a segment during the scan is seen twice). Windows, segments and memtable chunks (a few
 * hundred records written in a row: fresh data arrives roughly in event-time order) wholly
 * outside [from_ts, to_ts] are pruned before any record is read.
 *
 * Memory is bounded whatever the data: at most k confirmed hits (peak_candidates <= k), however
 * many of the closest records turn out to be superseded in another source or deleted. A record
 * whose distance would enter the current top-k is confirmed with store_get — its id's newest
 * version is not a delete and is the very version scanned — before it is admitted, so stale
 * candidates never accumulate. One scan of the store (store_scan holds no lock during the
 * callbacks, so every source is confirmed as it comes).
 *
 * Cost: one store_get per record that would enter the top-k when it is met. For records in
 * random order that is O(k log(n / k)) expected lookups over n scanned; records met in
 * decreasing distance, or many superseded records near the query, cost up to one lookup
 * each. A lookup is a memtable probe plus a Bloom-filter probe per segment.
 *
 * Thread safety: any thread, concurrently with writers, flushes and merges; the search holds
 * no lock of its own. Records applied before the call are seen; later writes may or may not be.
 * An id live throughout the call is never missing for having been updated during it: a met
 * version found superseded is replaced by the newest one (ranked on its own vector and ts).
 * While writes race the scan the answer is not a snapshot: a kept version replaced by a farther
 * one, or dropped (deleted, or its newest version out of range), leaves room that records
 * passed over earlier do not fill, so such an answer may be short of k or miss a record that
 * would rank.
 */
#ifndef STORE_SEARCH_H
#define STORE_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_distance.h"
#include "st_error.h"
#include "store.h"

struct store_window_ver {
    int64_t start;
    uint32_t version;
};

struct store_search_query {
    const float *vec; /* borrowed for the call: dim floats (normalised by the caller for cosine) */
    uint32_t dim;
    enum st_metric metric;
    uint32_t k;
    int64_t from_ts, to_ts; /* inclusive event-time bounds (INT64_MIN / INT64_MAX: none) */
    const struct store_window_ver
        *indexed; /* borrowed: sealed window versions searched elsewhere */
    size_t n_indexed;
    bool with_meta, with_vector;
};

struct store_search_hit {
    uint8_t id[STORE_ID_MAX];
    uint32_t id_len;
    float dist; /* the kernels' smaller-is-closer distance (-dot for ip and cosine) */
    int64_t ts;
    int64_t window;
    int32_t partition; /* the version: (ts, partition, offset, idx) */
    int64_t offset;
    uint32_t idx;
    uint8_t *meta; /* with_meta: owned by the result (NULL when none) */
    uint32_t meta_len;
    float *vec; /* with_vector: dim floats owned by the result */
};

struct store_search_result {
    struct store_search_hit *hits; /* closest first (ties by id); owned, store_search_result_free */
    size_t n;
    uint64_t scanned;         /* records whose distance was computed (first pass) */
    uint32_t windows;         /* distinct windows with scanned records */
    uint32_t segments;        /* segments scanned */
    uint64_t pruned;          /* records skipped unread: segments and memtable chunks out of range
                               * (not the sealed windows listed in `indexed`: counted nowhere) */
    uint64_t lookups;         /* store_get calls made to confirm candidates */
    uint64_t peak_candidates; /* most candidates held at once (<= k) */
};

/* Fills *out, which the caller frees with store_search_result_free; on error *out is empty. */
int store_search(struct store *s, const struct store_search_query *q,
                 struct store_search_result *out) ST_WUR;
/* Frees the hits and zeroes *r; r may hold nothing. */
void store_search_result_free(struct store_search_result *r);

#endif
