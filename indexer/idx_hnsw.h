/*
 * idx_hnsw.h — HNSW graph index (Malkov & Yashunin) over float32 vectors.
 *
 * Build once (in parallel or deterministically on one thread), then search from any number of
 * threads, each with its own idx_hnsw_searcher (scratch space: visited tags, heaps).
 * Ids are row numbers 0..n-1 of the vectors given to the build (whatever order the nodes are
 * kept in: idx_hnsw_reorder).
 */
#ifndef IDX_HNSW_H
#define IDX_HNSW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_distance.h"

struct idx_hnsw_opts {
    uint32_t dim;
    enum st_metric metric;    /* cosine: vectors must already be normalised */
    uint32_t m;               /* links per node on upper levels; 2*m on level 0 (default 16) */
    uint32_t ef_construction; /* default 200 */
    uint64_t seed;            /* level generator seed */
    uint32_t threads;         /* build threads; 1 = deterministic (default 1) */
};

struct idx_hnsw;

/* Builds over n vectors (copied). Caller owns *out (idx_hnsw_free). */
int idx_hnsw_build(const struct idx_hnsw_opts *o, const float *vecs, uint32_t n,
                   struct idx_hnsw **out) ST_WUR;

/*
 * A new graph holding every node of base (ids 0..nb-1, their levels and links as they are)
 * and the n vectors vecs (copied) inserted as ids nb..nb+n-1, exactly as a build inserts them
 * (the same insertion code), with base's dim, metric, m and ef_construction; the entry node
 * moves to a new node whose level is above base's top. base is borrowed, never changed (it
 * may be a loaded, mmap'd index; searchers of base may run meanwhile). threads: 1 =
 * deterministic (the same result on every run for the same inputs and seed), more = parallel
 * inserts as in idx_hnsw_build. seed: the level generator for the new nodes (0: the build's
 * default); the generator's state after a build's first nb draws gives node for node the graph
 * a one-thread build over base's vectors then vecs would (for a base never renumbered: a
 * renumbered one gives an equally built graph, node for node only where no distances tie). n = 0
 * gives a copy. The new graph is allocated once for nb + n nodes. Caller owns *out (idx_hnsw_free).
 * ST_EINVAL when nb + n does not fit 32 bits or vecs is NULL with n > 0.
 */
int idx_hnsw_extend(const struct idx_hnsw *base, const float *vecs, uint32_t n, uint32_t threads,
                    uint64_t seed, struct idx_hnsw **out) ST_WUR;
void idx_hnsw_free(struct idx_hnsw *h);

/*
 * Renumbers h's nodes in breadth-first order over level 0 from the entry, so that neighbours
 * sit near each other in memory (searches read fewer pages; docs/benchmarks.md). Ids do not
 * change for callers: searches return and filter the ids the build gave (rows of its vectors),
 * an extend of a reordered graph keeps them (its new nodes are nb..nb+n-1 as always), and a
 * saved reordered graph carries them (format version 2). The graph is otherwise the same: a
 * search visits the same nodes in the same order and returns the same hits (an extend of it
 * may choose other neighbours than an extend of the graph before where distances tie: ties in
 * neighbour selection are broken by node number). Memory: 4 bytes a node for the ids, and 21
 * bytes a node during the call. Not while h is searched (it changes the graph in place); on
 * failure (ST_ENOMEM) h is as it was. ST_EINVAL for a loaded (mmap'd) graph.
 */
int idx_hnsw_reorder(struct idx_hnsw *h) ST_WUR;

uint32_t idx_hnsw_count(const struct idx_hnsw *h);
/* After a build or extend: nodes the reachability repair could not make reachable from the
 * entry and able to reach it on level 0 (0 normally; a search may miss such a node's record
 * whatever its ef). 0 for a loaded file. */
uint32_t idx_hnsw_unreached(const struct idx_hnsw *h);
/* The dimension and metric the index was built with (a loaded file's own claim). */
uint32_t idx_hnsw_dim(const struct idx_hnsw *h);
enum st_metric idx_hnsw_metric(const struct idx_hnsw *h);
/* Bytes of memory held by the index (graph + vectors + traversal codes). */
size_t idx_hnsw_memory(const struct idx_hnsw *h);
/* The vector of node `node` (borrowed while h lives) and its id: nodes are numbered as the ids
 * unless the graph was reordered (idx_hnsw_reorder). */
const float *idx_hnsw_vector(const struct idx_hnsw *h, uint32_t node);
uint32_t idx_hnsw_label(const struct idx_hnsw *h, uint32_t node);
/* The distance from q to the entry node (where every search starts): one kernel call, a cheap
 * hint of how close the graph's nodes come to q. INFINITY for an empty graph. */
float idx_hnsw_entry_distance(const struct idx_hnsw *h, const float *q);

struct idx_hnsw_searcher;
struct idx_hnsw_searcher *idx_hnsw_searcher_new(const struct idx_hnsw *h);
void idx_hnsw_searcher_free(struct idx_hnsw_searcher *s);

/*
 * Searches traverse the graph on scalar codes of the vectors and re-rank the ef candidates they
 * end with on the vectors themselves, so every distance returned is exact. The codes are 4 bits
 * a dimension (an eighth of the bytes a float32 node costs to read) where a self-check (beam
 * 16) finds their recall within 0.01 of the vectors', else one byte (a quarter; beam 32,
 * within 0.02); the query is quantized to 7 bits, so that one u8 x s8 dot product gives the
 * distance. 4-bit codes lose some recall at a beam of k itself (ef = k = 10: 0.928 -> 0.908 on
 * Fashion-MNIST), none measurable from ef 16. On by default for the l2 and cosine metrics; on =
 * false traverses on the vectors (the ip metric always does).
 */
void idx_hnsw_searcher_use_codes(struct idx_hnsw_searcher *s, bool on);
/* Does h have traversal codes? Not for ip, for vectors or ranges that are not finite, nor
 * where the self-check at build and load time (nodes' midpoints as queries, searched on codes
 * and on the vectors) refused both widths: 4 bits (recall more than 0.01 below the vectors' at
 * beam 16; not tried up to 64 dimensions, where they save nothing) and then 8 bits (0.02 at
 * beam 32). Then every search traverses on the vectors. */
bool idx_hnsw_has_codes(const struct idx_hnsw *h);
/* Bits a dimension of h's traversal codes: 4 or 8, 0 without codes. */
int idx_hnsw_code_bits(const struct idx_hnsw *h);
/* Derives h's codes again at `bits` 4 or 8 only (kept if the self-check keeps them at 0.02,
 * 4 bits at beam 16 with 128 queries, 8 at beam 32 with 64), 0: the build's and load's choice;
 * ST_EINVAL for other bits. For benchmarks and tests: no search of h may run meanwhile
 * (searchers made before stay usable). */
int idx_hnsw_make_codes_bits(struct idx_hnsw *h, int bits);

/*
 * k nearest of q with beam width ef (>= k; raised to k if smaller). Ids the filter rejects
 * are traversed but never returned. Writes up to k hits, closest first; returns the count.
 */
size_t idx_hnsw_search(struct idx_hnsw_searcher *s, const float *q, uint32_t k, uint32_t ef,
                       st_filter_fn filter, void *fctx, struct st_hit *out);

/*
 * The same search as one part of a search over many indexes. bound (INFINITY: none, then this
 * is idx_hnsw_search node for node) is the k-th best distance the other indexes have already
 * found: only hits within it can enter the caller's result, and hits beyond it are not
 * returned. As long as this search has found nothing within the bound and already has its own
 * max(k, ef/2) best, nodes beyond both are neither explored nor waited for: a graph whose nodes
 * all lie beyond the bound costs about an ef/2 search instead of an ef one. Once it finds a
 * node within the bound it searches with its whole beam. Not exact (neither is ef): recall@10
 * within 0.002 of the plain search at the same ef on Fashion-MNIST (bench/bench_windows.c,
 * docs/benchmarks.md) and in tests/check_idx_view.c.
 */
size_t idx_hnsw_search_bound(struct idx_hnsw_searcher *s, const float *q, uint32_t k, uint32_t ef,
                             float bound, st_filter_fn filter, void *fctx, struct st_hit *out);

/*
 * The same search for nq queries (rows of dim floats at qs), as nq calls of idx_hnsw_search
 * would give them, bit for bit: query i's hits at out + i * k, their count in counts[i]; out
 * holds nq * k hits. Queries run four at a time in lock step, each with scratch of its own (a
 * lane), so that one query's reads from memory overlap the others' arithmetic. There is no
 * bound (idx_hnsw_search_bound): a search over many indexes searches one query at a time.
 * The filter is called for the four queries interleaved, so it must not depend on which query
 * asks. The first batched call of a searcher allocates the three extra lanes (2 bytes a node
 * each, plus about 5 KB), kept until idx_hnsw_searcher_free; ST_ENOMEM (counts not set) when it
 * cannot, and a later call completes them.
 */
int idx_hnsw_search_batch(struct idx_hnsw_searcher *s, const float *qs, size_t nq, uint32_t k,
                          uint32_t ef, st_filter_fn filter, void *fctx, struct st_hit *out,
                          size_t *counts) ST_WUR;

/* Index files (hnsw_format.h): written to path.tmp, fsynced, renamed. */
int idx_hnsw_save(const struct idx_hnsw *h, const char *path, struct st_err *err) ST_WUR;
int idx_hnsw_load(const char *path, struct idx_hnsw **out, struct st_err *err) ST_WUR;

#endif
