/*
 * idx_view.h — the serving set of one collection: an immutable, refcounted snapshot of the
 * window parts an indexer serves, with the id index that makes "newest version wins" hold
 * across every window and every ingest node.
 *
 * The id index maps each id to its newest version among all parts — by (event time, Kafka
 * partition, offset, index in batch), the store's order — deletes included. From it every
 * part gets a mask of the labels that must never be returned: superseded by a version in
 * another part, or whose id's newest version is a delete. A view is built whole (O(records)
 * of all parts) when a part is swapped in or out; searches never see a half-built one.
 *
 * Hot swap: the owner publishes a new view by exchanging one pointer (idx_view_swap); a search
 * takes a reference to the current view (idx_view_acquire) and keeps it, parts and files
 * included, until idx_view_release — nothing is freed or unmapped under a reader.
 */
#ifndef IDX_VIEW_H
#define IDX_VIEW_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idx_part.h"

struct idx_view {
    _Atomic int refs;
    struct idx_part **parts; /* newest window first */
    size_t n;
    uint8_t **mask; /* per part: bit l set = label l hidden */
    uint8_t **dead; /* per part: NULL, or bit j set = member j dead (its records hidden) */
    /* per part: the first part of the view with the same IVF-PQ quantizer
     * (idx_part_same_quantizer; itself when none before it, and for HNSW parts) */
    uint32_t *qgroup;
    uint32_t *live;  /* per part: labels not masked (idx_view_search sizes shares by them) */
    uint64_t hidden; /* labels masked, all parts */
    /* id index: open addressing over (part, record) of each id's newest version */
    uint64_t *slots; /* (part + 1) << 32 | record, 0 = empty */
    size_t nslots;
    uint64_t ids;
};

/* Builds a view over parts (each referenced by the view). dead (NULL: none; dead[i] NULL: none
 * in part i): bit j of dead[i] (a bitmap of at least (nmem + 7) / 8 bytes) set = member j of part i
 * is dead — expired, or replaced by a newer version of its window served elsewhere: its records are
 * no version of any id and are never returned (a unit keeps such members until it is built again).
 */
int idx_view_build(struct idx_part *const *parts, size_t n, const uint8_t *const *dead,
                   struct idx_view **out) ST_WUR;
/* Is member j of part i served (not dead) in v? */
bool idx_view_member_live(const struct idx_view *v, size_t part, size_t member);
/* The window parts v serves: plain parts and the live members of units. */
uint64_t idx_view_live_parts(const struct idx_view *v);
void idx_view_release(struct idx_view *v);

/* The published view of a collection, exchanged atomically. */
struct idx_view_slot {
    pthread_mutex_t mu; /* held only to exchange or to take a reference: never across work */
    struct idx_view *cur;
};
void idx_view_slot_init(struct idx_view_slot *s);
/* A reference to the current view (NULL when none yet). */
struct idx_view *idx_view_acquire(struct idx_view_slot *s);
/* Publishes v (the slot takes the caller's reference) and drops the slot's reference to the
 * previous view. */
void idx_view_swap(struct idx_view_slot *s, struct idx_view *v);
void idx_view_slot_destroy(struct idx_view_slot *s);

/* ---- queries ---- */
struct idx_pool;

struct idx_view_hit {
    struct idx_part *part; /* borrowed from the view */
    uint32_t rec;
    float dist;
};

struct idx_view_query {
    const float *vec; /* normalised for cosine */
    uint32_t k, ef, nprobe;
    int64_t from_ts, to_ts; /* inclusive */
    /* Every part searched in view order for k with its full ef / nprobe and nothing passed from
     * one part to the next (the search before issue 15): the reference for tests and
     * benchmarks. */
    bool exhaustive;
    /* Threads lent to this query (NULL: its own thread alone): the next parts in the order are
     * searched side by side, each bounded by the k-th best found when it starts. Not used by
     * an exhaustive search. */
    struct idx_pool *pool;
    /* Every HNSW part searched for k with the whole ef (the bounded search without each part's
     * share, below): the reference for tests and benchmarks. */
    bool whole_beams;
};

struct idx_view_stats {
    uint32_t windows_searched; /* distinct windows with a part searched */
    uint32_t parts_searched;
    uint32_t parts_by_helpers; /* of them, searched on the pool's threads (query.pool; a
                                  group's members all count) */
    uint32_t parts_grouped;    /* of them, searched in groups of one IVF-PQ quantizer */
    uint32_t parts_shared;     /* HNSW parts searched first for their share of k (part_share) */
    uint32_t share_kp_min, share_kp_max; /* their hit counts kp (0 when none) */
    uint32_t share_ef_max;               /* and the largest beam one got */
    uint32_t parts_again; /* HNSW parts searched a second time with the whole beam (they
                             count once in parts_searched and parts_by_helpers) */
};

/*
 * Top-k over the parts whose windows and event-time range meet [from_ts, to_ts] and that hold
 * a label not masked (the others are pruned before any distance), each searched with the query's ef
 * / nprobe (IVF-PQ parts of one quantizer together, HNSW parts for their share of k first: below),
 * merged closest first (ties by part order, then record). Hidden labels and records outside the
 * time range are filtered inside each index search, so k results come back when k exist. *n gets
 * the number of hits written to out (capacity k).
 *
 * Parts are searched most promising first (idx_part_probe: one distance each), and each part's
 * search gets the k-th best distance found so far (idx_part_search's bound): hits beyond it
 * are dropped, IVF-PQ parts give exactly the hits they would without it, and an HNSW part
 * searched for k that finds nothing within it stops at about half its beam. Every part passing
 * the time range is still searched (the bound narrows a search, it never skips a part).
 *
 * Each HNSW part's share (part_share in idx_view.c; not with whole_beams): an HNSW part that
 * starts once k hits are held (after the first, or the first few side by side), whose records
 * all lie in the time range, is searched first for kp = ceil(3 k live / total) + 2 hits (live:
 * its labels not masked; total: those of the parts the range does not cut) when that is below
 * k (never for k <= 3), with an explicit ef scaled by kp / k (the default ef is not: max(kp,
 * 64)) and without the bound; a part with all but one of its kp hits within the final k-th
 * best is searched again for k with the whole ef (its hits merged without duplicates). More
 * QPS at a given recall over many windows, less recall at a given ef (docs/benchmarks.md,
 * "Each part's share"). When the second pass gets no scratch the first pass's answer stands.
 * IVF-PQ
 * parts of one quantizer (windows that adopted it: idx_part_build_on) are searched together as one
 * index (idx_part_search_shared: one coarse step, one table, one re-ranking; the recall of one
 * index over them at that nprobe), not one by one; a group is one item of work for the pool. A
 * group whose search fails fails the search with its error.
 */
int idx_view_search(const struct idx_view *v, const struct idx_view_query *q,
                    struct idx_view_hit *out, size_t *n, struct idx_view_stats *st) ST_WUR;

/* The newest version of id across the view: ST_ENOTFOUND when absent or (unless deletes) a
 * delete. */
int idx_view_get(const struct idx_view *v, const uint8_t *id, uint32_t id_len, bool deletes,
                 struct idx_part **part, uint32_t *rec) ST_WUR;

#endif
