/*
 * segment_format.h — immutable segment files (*.seg). One window per file, records sorted by
 * id, at most one version per id. All integers little-endian. Do not change: on disk.
 *
 * Two versions. Version 1: vector i is record i's. Version 2 (the "rows" layout, for vectors
 * written once in arrival order and never moved): the vectors section holds `nrows` rows in
 * any order, a row table names each record's row, and rows no record names (versions
 * superseded before the file was finished) are allowed; no two records may name the same row
 * (so count <= nrows). Everything else is the same; readers take both. Differences are
 * marked [v2] below.
 *
 * Layout (sections in this order; every offset is from the file start):
 *
 *   OFFSET      SIZE              FIELD
 *   0           8                 magic "STRSEG\0\1"
 *   8           4                 format version (1 or 2; the footer's must be equal)
 *   12          4                 dim
 *   16          48                zero
 *   64          count*dim*4       vectors, float32, record order; tombstones are zeros.
 *                                 64-byte aligned so an mmap can be scanned with SIMD loads.
 *                                 [v2] nrows*dim*4 bytes: row order, each record's row named
 *                                 by the row table; a delete's row is zeros.
 *   recs_off    count*40          record table (STORE_SEG_REC_SIZE bytes each):
 *                                   0  8 ts (ms)        8  8 offset (Kafka)
 *                                   16 4 partition      20 4 idx in batch
 *                                   24 8 id_off (into ids section)
 *                                   32 2 id_len         34 1 op (0 upsert, 1 delete)
 *                                   35 1 zero           36 4 meta_len (0: none)
 *   ids_off     ids_len           id bytes, concatenated in record order
 *   sparse_off  nsparse*16        every 32nd record: 0 4 record index, 4 4 zero,
 *                                 8 8 first 8 id bytes, zero padded (a search hint)
 *   meta_off    ...               meta blocks: zstd frames, each holding the metas of
 *                                 STORE_SEG_META_BLOCK consecutive records concatenated
 *   mtab_off    nmeta*24          meta block table: 0 8 file offset, 8 4 compressed len,
 *                                 12 4 raw len, 16 4 checksum32 of compressed bytes, 20 4 zero
 *   bloom_off   bloom_len         Bloom filter over ids, bloom_k probes (double hashing of
 *                                 XXH3-64: h1 = low 32, h2 = high 32 bits)
 *   vsum_off    nvblocks*4        checksum32 of each STORE_SEG_VEC_BLOCK bytes of vectors
 *   rows_off    count*4           [v2] row table: record i's vector row (< nrows), u32
 *   end-256     256               footer:
 *     0 8 magic "STRSEGFT"   8 4 version   12 4 dim     16 8 count
 *     24 8 window_start      32 8 window_end            40 8 min_ts    48 8 max_ts
 *     56 4 kind (0 run, 1 sealed, 2 delta)              60 4 seg version
 *     64 8 recs_off   72 8 ids_off   80 8 ids_len       88 8 sparse_off   96 8 nsparse
 *     104 8 meta_off  112 8 mtab_off 120 8 nmeta        128 8 bloom_off   136 8 bloom_len
 *     144 4 bloom_k   148 4 zero     152 8 vsum_off     160 8 nvblocks
 *     168 4 checksum32(record table)  172 4 checksum32(ids)  176 4 checksum32(sparse)
 *     180 4 checksum32(meta table)    184 4 checksum32(bloom) 188 4 checksum32(vsum table)
 *     192 56 zero; [v2] 192 8 rows_off   200 8 nrows   208 4 checksum32(row table)
 *                       212 8 vector file (0: the rows are in this file)   220 28 zero
 *     248 4 checksum32 of footer bytes 0..247      252 4 zero
 *
 * [v2] External rows: a file whose footer names a vector file F (a metadata-only run of a window
 * whose vectors go to the window's vector log, store/README.md) has no vectors section
 * (recs_off = 64, nvblocks = 0); its rows are rows of file F in the same directory, whose bytes
 * 64 .. 64 + nrows*dim*4 hold them (F has this header; F's own footer, once it has one, is not
 * read). Such a file is never shipped to another host: only self-contained files are.
 *
 * Validity: magic, version, footer checksum, section bounds within the file, and the small
 * sections' checksums are checked on open, as is [v2] every row the row table names (below
 * nrows, none named twice); vector blocks and meta blocks are checked by
 * store_segment_verify (and meta blocks whenever read). The footer's zero fields are not
 * checked (the footer checksum covers them).
 */
#ifndef SEGMENT_FORMAT_H
#define SEGMENT_FORMAT_H

#define STORE_SEG_MAGIC              "STRSEG\0\1"
#define STORE_SEG_FOOTER_MAGIC       "STRSEGFT"
#define STORE_SEG_VERSION            1u
#define STORE_SEG_VERSION_ROWS       2u
#define STORE_SEG_HEADER             64u
#define STORE_SEG_REC_SIZE           40u
#define STORE_SEG_SPARSE_EVERY       32u
#define STORE_SEG_SPARSE_SIZE        16u
#define STORE_SEG_META_BLOCK         256u
#define STORE_SEG_MTAB_SIZE          24u
#define STORE_SEG_VEC_BLOCK          (256u * 1024u)
#define STORE_SEG_FOOTER             256u
#define STORE_SEG_BLOOM_BITS_PER_KEY 10u
#define STORE_SEG_BLOOM_K            7u

#endif
