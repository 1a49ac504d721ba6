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

/* One window part inside a part: a unit holds several, a plain part exactly one. */
struct idx_part_member {
    struct idx_cat_entry e; /* the (node, window, version) the records come from */
    char *seg_path;
    struct store_segment *seg;
    uint32_t first, count; /* its records, as the part's record numbers [first, first + count) */
    _Atomic bool doom_seg; /* unlink the segment copy at the part's last unref */
};

struct idx_part {
    _Atomic int refs;
    /* A plain part: its catalog entry. A unit: node "", start/end the span of its members'
     * windows, version its generation, index/cold its index. */
    struct idx_cat_entry e;
    uint64_t unit; /* 0: one window part; else the id of the unit (index compaction) */
    struct idx_part_member *mem;
    size_t nmem;
    uint32_t nrec; /* records of all members (upserts and deletes) */
    char *idx_path;
    uint32_t dim;
    enum st_metric metric;
    uint32_t n;    /* vectors indexed (upserts) */
    uint32_t *rec; /* label -> record number */
    struct idx_hnsw *hnsw;
    struct idx_ivfpq *ivf;
    const float *raw; /* label-ordered exact vectors (IVF-PQ re-ranking); NULL for HNSW */
    float *raw_owned; /* when raw is not the segment's own array (deletes, rows layout, units) */
    /* IVF-PQ: raw's one-byte re-ranking codes (idx_refine.h), derived at build and load (not
     * stored); NULL: every candidate re-ranked from raw. */
    struct idx_refine *refine;
    int64_t min_ts, max_ts;
    size_t memory;         /* bytes of the index in memory */
    _Atomic bool doom_idx; /* unlink the index file at the last unref */
    bool adopted;          /* built here with a donor's IVF-PQ quantizer (idx_part_build_on) */
    struct idx_part_pool *pool;
};

/* Record rec of the part (rec < p->nrec), its vector, its meta (malloc'd, caller frees), and
 * the member it belongs to. */
void idx_part_record(const struct idx_part *p, uint32_t rec, struct store_seg_record *out);
const float *idx_part_vector(const struct idx_part *p, uint32_t rec);
int idx_part_meta(const struct idx_part *p, uint32_t rec, uint8_t **meta, uint32_t *len) ST_WUR;
const struct idx_part_member *idx_part_member_of(const struct idx_part *p, uint32_t rec);
/* The position of (node, start) among p's members, or -1. */
long idx_part_find_member(const struct idx_part *p, const char *node, int64_t start);

/* Bytes a build of a window with `records` records of dim floats is expected to need at its
 * peak (vectors copied into the index, graph or codes, build scratch): the unit of the
 * memory budget. */
uint64_t idx_part_build_memory(const struct cfg_index *ix, uint32_t dim, uint64_t records);
/* What a build for collection cc reserves from the budget: a build decides its tier (index or
 * cold_index) when it runs, which can be long after it was queued, so with a cold tier
 * configured it is the larger of the two indexes' estimates. */
uint64_t idx_part_coll_build_memory(const struct cfg_collection *cc, uint64_t records);

/*
 * Builds the index of entry e over the verified segment at seg_path with the index options
 * ix, saves it to idx_path (tmp, fsync, rename, directory fsync) and returns the loaded part.
 * threads: build threads for this one index. *stop (may be NULL) is polled between phases:
 * when it becomes true the build is abandoned with ST_ECLOSED and nothing is left behind.
 */
int idx_part_build(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                   const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                   const _Atomic bool *stop, struct idx_part **out, struct st_err *err) ST_WUR;
/*
 * idx_part_build, where an IVF-PQ index may adopt the quantizer of donor (NULL: none), another
 * part of the collection, instead of training one (idx_ivfpq_adopt): when donor's index has
 * the shape ix asks for (its nlist not capped by a small window), the new window has at least
 * nlist vectors, and they lie no farther from its coarse centroids (the 95th percentile over a
 * sample) than IDX_PART_FIT_RATIO times the vectors it was trained on (idx_ivfpq_fit_ref,
 * recorded at training, saved with the index and handed on): content that drifted, even a
 * twentieth of the window's, trains its own. Parts sharing a
 * quantizer are searched as one index (idx_part_search_shared). p->adopted says which happened.
 * donor is borrowed for the call.
 */
#define IDX_PART_FIT_RATIO 1.5
/* Could p's quantizer serve a build with ix (an IVF-PQ part with its vectors, of the shape ix
 * asks for)? The service picks its donor among such parts. */
bool idx_part_can_donate(const struct idx_part *p, const struct cfg_index *ix);
int idx_part_build_on(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                      const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                      const struct idx_part *donor, const _Atomic bool *stop, struct idx_part **out,
                      struct st_err *err) ST_WUR;
/* Loads a part whose files are complete (at start, from the catalog). rerank_codes: derive an
 * IVF-PQ part's re-ranking codes (the index's cfg_index.no_rerank_codes, negated; a build takes
 * it from its cfg_index). */
int idx_part_load(const struct idx_cat_entry *e, const char *seg_path, const char *idx_path,
                  enum st_metric metric, bool rerank_codes, struct idx_part **out,
                  struct st_err *err) ST_WUR;

/*
 * A unit (index compaction): one index over the upserts of several window parts — of one
 * window from several ingest nodes, and of adjacent windows as they age. Its members keep
 * their own segment copies (the files of the plain parts they were; nothing is rewritten);
 * record numbers run through the members in order, labels through their upserts in record
 * order. A member that expires or is replaced by a newer version is hidden by the view (its
 * records masked: idx_view_build's dead) until the unit is built again without it.
 */
struct idx_part_unit {
    uint64_t id;
    struct idx_cat_entry e;          /* the unit's own entry (span, generation, index, cold) */
    const struct idx_cat_entry *mem; /* members, in record order */
    const char *const *seg_paths;    /* their segment copies */
    size_t n;                        /* >= 1 */
    /* Build only: NULL, or the unit's previous generation when its members are exactly
     * mem[0 .. base->nmem) (none dead) and its index is of the type being built: its graph or
     * codes are grown by the other members' upserts (idx_hnsw_extend / idx_ivfpq_extend: the
     * same labels, no retraining) instead of a build from scratch. */
    const struct idx_part *base;
    /* Build only, without base: NULL, or a part whose IVF-PQ quantizer the unit adopts when it
     * fits its vectors, as a window's build does (idx_part_build_on): windows that shared a
     * quantizer still share it once compacted. */
    const struct idx_part *donor;
};
int idx_part_build_unit(const struct idx_part_unit *u, const char *idx_path,
                        const struct cfg_index *ix, enum st_metric metric, uint32_t threads,
                        const _Atomic bool *stop, struct idx_part **out, struct st_err *err) ST_WUR;
int idx_part_load_unit(const struct idx_part_unit *u, const char *idx_path, enum st_metric metric,
                       bool rerank_codes, struct idx_part **out, struct st_err *err) ST_WUR;

void idx_part_ref(struct idx_part *p);
/* Marks files for removal at the last unref: every member's segment copy and/or the index
 * file. */
void idx_part_retire(struct idx_part *p, bool seg, bool idx);
/* Marks one member's segment copy for removal at the last unref. */
void idx_part_retire_member(struct idx_part *p, size_t member);
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
/* The HNSW beam idx_part_search uses for k and the query's ef (0: the default, max(k, 64)). */
uint32_t idx_part_ef(uint32_t k, uint32_t ef);

/* Do a and b hold IVF-PQ indexes (not empty) of the same quantizer (idx_ivfpq_same_quantizer)? */
bool idx_part_same_quantizer(const struct idx_part *a, const struct idx_part *b);

/* One part of a shared-quantizer search, with the filter of its labels. */
struct idx_part_shared {
    struct idx_part *p;
    idx_part_filter filter;
    void *fctx;
};
/*
 * The k nearest of q over n IVF-PQ parts of one quantizer (idx_part_same_quantizer with the
 * first) searched as one index: one coarse step and query table, one candidate set re-ranked
 * as idx_part_search re-ranks one part (idx_ivfpq_search_shared). *got hits closest first
 * (out and which: capacity k), which[i] the position in parts of hit i. ST_EINVAL for a part
 * that is not IVF-PQ or holds no vectors, parts of another quantizer's shape or hash, or more
 * than 2^32 - 1 vectors together; ST_ENOMEM without scratch.
 */
int idx_part_search_shared(const struct idx_part_shared *parts, size_t n, const float *q,
                           uint32_t k, uint32_t nprobe, float bound, struct idx_part_hit *out,
                           uint32_t *which, size_t *got) ST_WUR;

/* A cheap hint of how close the part's vectors come to q, smaller = closer, for ordering a
 * search over many parts (HNSW: the distance to the graph's entry node; IVF-PQ and empty
 * parts: -INFINITY, searched first). One kernel call at most. */
float idx_part_probe(const struct idx_part *p, const float *q);

#endif
