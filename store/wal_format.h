/*
 * wal_format.h — payload of one WAL record (framed by log_format.h). One record = one Kafka
 * message = one batch, applied all-or-nothing. Little-endian. Do not change: on disk.
 *
 *   OFFSET SIZE FIELD
 *   0      1    record type: 1 = BATCH, 2 = BATCH_REFS
 *   1      4    partition (i32; -1 when not from Kafka)
 *   5      8    offset (i64)
 *   13     4    n records (u32)
 *   17     ...  n records:
 *                 1 op (0 upsert, 1 delete)
 *                 varint id_len (1..256), id bytes
 *                 8 ts (i64 ms)     8 window start (i64 ms)   8 window end (i64 ms)
 *                 varint meta_len, meta bytes
 *                 upsert only: dim * 4 bytes float32 vector                     [BATCH]
 *                 upsert only, BATCH_REFS: 1 byte where the vector is, then
 *                   0: dim * 4 bytes float32 vector (a window with no vector log)
 *                   1: 8 vector log file number, 4 row, 4 checksum32 of the row's bytes
 *                      (the vector is row `row` of that log, written before this record;
 *                      recovery reads it back and checks it: a row that is missing or
 *                      does not match means the log's bytes never reached the disk, so
 *                      this record was never acknowledged, and neither was anything after)
 *
 * WAL files are named NNNNNN.log (decimal file number, 6+ digits). Records are replayed in
 * file-number order; a batch whose (partition, offset) is at or below the applied mark of its
 * partition is skipped, which makes replay idempotent.
 */
#ifndef WAL_FORMAT_H
#define WAL_FORMAT_H

#define STORE_WAL_BATCH        1u
#define STORE_WAL_BATCH_REFS   2u
#define STORE_WAL_VEC_INLINE   0u
#define STORE_WAL_VEC_REF      1u
#define STORE_WAL_BATCH_HEADER 17u

#endif
