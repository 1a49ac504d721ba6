/*
 * ivfpq_format.h — IVF-PQ index files (*.ivfpq). Little-endian; loaded with mmap and used in
 * place. Do not change: on disk.
 *
 *   OFFSET   SIZE                      FIELD
 *   0        8                         magic "STRIVFPQ"
 *   8        4                         format version (1)
 *   12       4 dim     16 4 nlist      20 4 m       24 4 nbits (8)
 *   28       4 metric  32 4 n (vectors) 36 24 zero  60 4 checksum32 of bytes 0..59
 *   64       nlist*dim*4               coarse centroids, float32
 *   ...      m*256*(dim/m)*4           PQ codebooks, float32 (sub-quantizer j, centroid c at
 *                                      (j*256 + c) * dim/m)
 *   ...      nlist*4                   list sizes (u32)
 *   ...      per list: size*4 ids (u32), then size*m codes, then zero padding to 4 bytes
 *   end-32   32                        footer: 0 8 magic "STRIVFPF", 8 4 checksum32(centroids +
 *                                      codebooks), 12 4 checksum32(list sizes and lists),
 *                                      16 8 file size, 24 4 zero, 28 4 checksum32 of bytes 0..27
 *
 * Loading verifies magic, version, both checksums, sizes, that list sizes sum to n and that
 * every id is < n.
 */
#ifndef IVFPQ_FORMAT_H
#define IVFPQ_FORMAT_H

#define IDX_IVFPQ_MAGIC        "STRIVFPQ"
#define IDX_IVFPQ_FOOTER_MAGIC "STRIVFPF"
#define IDX_IVFPQ_VERSION      1u
#define IDX_IVFPQ_HEADER       64u
#define IDX_IVFPQ_FOOTER       32u

#endif
