/*
 * idx_part.h — one served window part: an ingest node's sealed segment of one window (the
 * indexer's own verified copy, mmap'd) and the index built over its upserts.
 *
 * Index labels are the positions of the segment's upsert records in record order (deletes are
 * never indexed as vectors); rec[label] maps back to the record. The segment copy supplies
 * what the index does not keep: ids, event times, metas, and the exact vectors for IVF-PQ
 * re-ranking and get-by-id.
 *
 * A part is immutable once loaded and shared by reference (views hold references; a search
 * holds its view). When a part is retired (replaced by a newer version, expired, re-indexed
 * for age tiering), the owner marks which of its files go (idx_part_retire): they are
 * unlinked when the last reference goes, never under a reader.
 * Searchers (scratch space) are pooled per part, so concurrent searches need no allocation in
 * the steady state.
 */
#ifndef IDX_PART_H
#define IDX_PART_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "idx_catalog.h"
#include "st_distance.h"
#include "st_error.h"
#include "store.h"

struct idx_part {
    _Atomic int refs;
    struct idx_cat_entry e;
    char *seg_path, *idx_path;
    struct store_segment *seg;
    uint32_t dim;
    enum st_metric metric;
    uint32_t n;    /* vectors indexed (upserts) */
    uint32_t *rec; /* label -> record index in seg */
    struct idx_hnsw *hnsw;
    struct idx_ivfpq *ivf;
    const float *raw; /* label-ordered exact vectors (IVF-PQ re-ranking); NULL for HNSW */
    float *raw_owned; /* when raw is not the segment's own array (deletes, rows layout) */
    int64_t min_ts, max_ts;
    size_t memory;                   /* bytes of the index in memory */
    _Atomic bool doom_seg, doom_idx; /* unlink the segment copy / index file at the last unref */
    struct idx_part_pool *pool;
};

/* Bytes a build of a window with `records` records of dim floats is expected to need at its
 * peak (vectors copied into the index, graph or codes, build scratch): the unit of the
 * memory budget. */
uint64_t idx_part_build_memory(const struct cfg_index *ix, uint32_t dim, uint64_t records);

/*
 * Builds the index of entry e over the verified segment at seg_path with the index options
 * ix, saves it to idx_path (tmp, fsync, rename, directory fsync) and returns the loaded part.
 * threads: build threads for this one index. *stop (may be NULL) is polled between phases:
 * when it becomes true the build is abandoned with ST_ECLOSED and nothing is left behind.
 */
int idx_part_build(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                   const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                   const _Atomic bool *stop, struct idx_part **out, struct st_err *err) ST_WUR;
/* Loads a part whose files are complete (at start, from the catalog). */
int idx_part_load(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                  enum st_metric metric, struct idx_part **out, struct st_err *err) ST_WUR;

void idx_part_ref(struct idx_part *p);
/* Marks files for removal at the last unref: the segment copy and/or the index file. */
void idx_part_retire(struct idx_part *p, bool seg, bool idx);
/* Drops a reference; the last one frees the part, and unlinks its files if it is doomed. */
void idx_part_unref(struct idx_part *p);

struct idx_part_hit {
    uint32_t rec; /* record index in the segment */
    float dist;   /* the kernels' smaller-is-closer distance */
};

/* Keeps a label? (mask of superseded records, event-time bounds). */
typedef bool (*idx_part_filter)(void *ctx, uint32_t label);

/*
 * k nearest of q in the part (ef: HNSW beam, nprobe: IVF-PQ lists; 0 = defaults). Writes up
 * to k hits closest first, returns the count (0 on allocation failure of scratch).
 * bound: in a search over many parts, the k-th best distance the other parts have found so far
 * — only hits <= bound can enter the result (INFINITY: none, the plain search). Hits beyond it
 * are not returned, and the index search uses it to do less: an HNSW search that finds nothing
 * within it stops at about the cost of an ef = k search (idx_hnsw_search_bound: not exact, but
 * within the recall the plain search has at the same ef, measured); IVF-PQ is exact (the plain
 * search's hits within the bound).
 */
size_t idx_part_search(struct idx_part *p, const float *q, uint32_t k, uint32_t ef, uint32_t nprobe,
                       float bound, idx_part_filter filter, void *fctx, struct idx_part_hit *out);

/* A cheap hint of how close the part's vectors come to q, smaller = closer, for ordering a
 * search over many parts (HNSW: the distance to the graph's entry node; IVF-PQ and empty
 * parts: -INFINITY, searched first). One kernel call at most. */
float idx_part_probe(const struct idx_part *p, const float *q);

#endif
