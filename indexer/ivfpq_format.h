/*
 * ivfpq_format.h — IVF-PQ index files (*.ivfpq). Little-endian; loaded with mmap and used in
 * place. Do not change: on disk.
 *
 *   OFFSET   SIZE                      FIELD
 *   0        8                         magic "STRIVFPQ"
 *   8        4                         format version (1)
 *   12       4 dim     16 4 nlist      20 4 m       24 4 nbits (8 or 4)
 *   28       4 metric  32 4 n (vectors) 36 8 fit reference (float64; 0: unknown, else
 *                                      finite and > 0)  44 16 zero  60 4 checksum32 of 0..59
 *   64       nlist*dim*4               coarse centroids, float32
 *   ...      m*K*(dim/m)*4             PQ codebooks, float32, K = 2^nbits (sub-quantizer j,
 *                                      centroid c at (j*K + c) * dim/m)
 *   ...      nlist*4                   list sizes (u32)
 *   ...      per list: size*4 ids (u32), then the codes, then zero padding to 4 bytes.
 *            nbits 8: size*m bytes, vector by vector. nbits 4: ceil(size/32) blocks of 32
 *            vectors, 16*m2 bytes each (m2 = m rounded up to even; the pad sub-quantizer is
 *            all zero); in a block, sub-quantizer j's 16 bytes are at 16*j and byte i holds
 *            vector i's code in bits 0-3 and vector i+16's in bits 4-7 (zero past size).
 *   end-32   32                        footer: 0 8 magic "STRIVFPF", 8 4 checksum32(centroids +
 *                                      codebooks), 12 4 checksum32(list sizes and lists),
 *                                      16 8 file size, 24 4 zero, 28 4 checksum32 of bytes 0..27
 *
 * Loading verifies magic, version, both checksums, sizes, that list sizes sum to n, that
 * every id is < n and that the fit reference is finite and not negative. (The fit reference
 * came in 2026-11 into bytes that were zero: files from before read as "unknown".)
 */
#ifndef IVFPQ_FORMAT_H
#define IVFPQ_FORMAT_H

#define IDX_IVFPQ_MAGIC        "STRIVFPQ"
#define IDX_IVFPQ_FOOTER_MAGIC "STRIVFPF"
#define IDX_IVFPQ_VERSION      1u
#define IDX_IVFPQ_HEADER       64u
#define IDX_IVFPQ_FOOTER       32u

#endif
