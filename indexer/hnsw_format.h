/*
 * hnsw_format.h — HNSW index files (*.hnsw). Little-endian; loaded with mmap, the level-0
 * block is used in place. Do not change: on disk.
 *
 *   OFFSET        SIZE            FIELD
 *   0             8               magic "STRHNSW\0"
 *   8             4               format version (1)
 *   12            4               dim
 *   16            4               m            20  4  ef_construction (<= 2^20)
 *   24            4               metric (0 l2, 1 ip, 2 cosine)
 *   28            4               n (nodes)    32  4  entry node
 *   36            4               max level (i32, -1 when empty)
 *   40            8               stride: bytes per level-0 block (multiple of 64)
 *   48            8               vec_bytes: bytes of the vector at the start of a block
 *   56            4               version 1: zero; version 2: checksum32 of the labels
 *                                                60  4  checksum32 of bytes 0..59
 *   64            n * stride      level-0 blocks: [dim float32][pad to vec_bytes]
 *                                 [u32 count][u32 links[2m]][pad]
 *   version 2 only:
 *   64+n*stride   4 * n           labels: u32 id of each node (a permutation of 0..n-1; a
 *                                 graph whose nodes were renumbered, idx_hnsw_reorder)
 *   L = 64+n*stride(+4n)  n       level of each node (u8)
 *   L + n         ...             upper links: for each node with level > 0, in id order,
 *                                 level * (1 + m) u32: per level a count and m links
 *   end - 32      32              footer: 0 8 magic "STRHNSWF", 8 4 checksum32(level-0
 *                                 blocks), 12 4 checksum32(levels), 16 4 checksum32(upper),
 *                                 20 8 file size, 28 4 checksum32 of footer bytes 0..27
 *
 * Version 1 (written for graphs never reordered) has no labels: node i is id i. Loading reads
 * both; it verifies magic, version, both header and footer checksums, sizes, every section
 * checksum, that every link names an existing node and that the labels are a permutation;
 * anything else is ST_ECORRUPT with the offset.
 */
#ifndef HNSW_FORMAT_H
#define HNSW_FORMAT_H

#define IDX_HNSW_MAGIC          "STRHNSW\0"
#define IDX_HNSW_FOOTER_MAGIC   "STRHNSWF"
#define IDX_HNSW_VERSION        1u /* no labels */
#define IDX_HNSW_VERSION_LABELS 2u
#define IDX_HNSW_HEADER         64u
#define IDX_HNSW_FOOTER         32u

#endif
