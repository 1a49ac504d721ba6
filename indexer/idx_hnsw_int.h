/* idx_hnsw_int.h — private to indexer/: the HNSW graph's memory layout. */
#ifndef IDX_HNSW_INT_H
#define IDX_HNSW_INT_H

#include <stdatomic.h>

#include "idx_hnsw.h"

/*
 * Level 0: one block per node, `stride` bytes, 64-byte aligned:
 *   [dim floats][u32 count][u32 links[m0]][padding]
 * Upper levels: for a node of level L > 0, upper[node] holds L lists of (1 + m) u32:
 *   count, then links.
 */
struct idx_hnsw {
    uint32_t dim, m, m0, ef_construction;
    enum st_metric metric;
    uint32_t n;
    uint32_t unreached; /* after a build or extend: connect_all's nodes left (0 normally) */
    size_t stride;
    uint8_t *level0;
    uint32_t **upper;
    uint8_t *levels;
    uint32_t entry;
    int max_level;
    st_dist_fn dist;
    size_t vec_bytes;
    /*
     * Traversal codes (idx_hnsw_make_codes; search only, never saved): code_bits (4 or 8) a
     * dimension, x[j] ~ sq_lo[j] + sq_t[j] * code[j], the offset and step of each dimension
     * from its own range over the nodes (a wide or outlying dimension squeezes only itself; a
     * constant one is exact with step 0); cstride bytes a node (8 bits: dim rounded up to 64,
     * zeros past it; 4 bits: qstride / 2 rounded up to 64, in st_dotu4_fn's layout, 64
     * dimensions in 32 bytes, low nibbles first), and cnorm[i] = sum_j (sq_t[j] code[j])^2, so
     * that with r = q - sq_lo, |q - x|^2 ~ |r|^2 - 2 sum_j (sq_t[j] r[j]) code[j] + cnorm: one
     * byte dot product against the query's weights quantized to signed bytes (qstride of
     * them, zeros past dim). NULL for the ip metric (L2 does not order like -dot), for vectors
     * or ranges that are not finite, and past 65,536 dimensions.
     */
    uint8_t *codes;
    size_t cstride;
    int code_bits;
    size_t qstride;
    float *sq_lo, *sq_t, *cnorm;
    float sq_bias; /* the mean over the nodes of cnorm - |x - sq_lo|^2: what the codes add */
    /* The kernel's dotu8_paired (8-bit codes); pair_max > 0: the query's weights are scaled so
     * that each pair's magnitudes sum to at most it (quantize_query), which keeps that kernel
     * exact. dotu4 (4-bit codes) needs no bound. */
    st_dotu8_fn dotu8;
    st_dotu4_fn dotu4;
    int pair_max;
    /* labels[node]: the id a node is returned and filtered as (its row in the vectors the
     * graph was built from) once idx_hnsw_reorder has renumbered the nodes; NULL: node = id. */
    uint32_t *labels;
    void *map; /* loaded from a file: level0 and upper point into it */
    size_t map_len;
};

static inline const float *hnsw_vec(const struct idx_hnsw *h, uint32_t i)
{
    return (const float *)(const void *)(h->level0 + (size_t)i * h->stride);
}

static inline uint32_t *hnsw_links0(const struct idx_hnsw *h, uint32_t i)
{
    return (uint32_t *)(void *)(h->level0 + (size_t)i * h->stride + h->vec_bytes);
}

/* Links of node i at level l: [count, ids...]. */
static inline uint32_t *hnsw_links(const struct idx_hnsw *h, uint32_t i, int l)
{
    if (l == 0)
        return hnsw_links0(h, i);
    return h->upper[i] + (size_t)(l - 1) * (1 + h->m);
}

static inline uint32_t hnsw_label(const struct idx_hnsw *h, uint32_t node)
{
    return h->labels != NULL ? h->labels[node] : node;
}

int idx_hnsw_alloc(struct idx_hnsw *h, uint32_t n);
/* Tests: the distance from q to node as a search on codes estimates it (NAN without codes). */
float idx_hnsw_code_estimate(const struct idx_hnsw *h, const float *q, uint32_t node);
/* Derives the traversal codes from the vectors (after a build, an extend or a load). */
int idx_hnsw_make_codes(struct idx_hnsw *h);

/* Verifications (one level-0 traversal each) the reachability repair may spend on links given
 * up in full lists; the lists nearly always have room (none were needed on Fashion-MNIST). */
#define REACH_VERIFY_BUDGET 64

#endif
