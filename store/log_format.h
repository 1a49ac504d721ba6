/*
 * log_format.h — the block-framed record log used by the WAL and the manifest.
 * Modelled on LevelDB's log format (doc/log_format.md); written independently.
 *
 * A log file is a sequence of 32 KiB blocks. A logical record is split into fragments, each
 * fully inside one block:
 *
 *   OFFSET SIZE FIELD
 *   0      4    checksum  LE u32: low 32 bits of XXH3-64(payload, seed = type)
 *   4      2    length    LE u16: payload bytes that follow
 *   6      1    type      1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST (0 = preallocated/zeroed space)
 *   7      len  payload
 *
 * A block tail of fewer than 7 bytes is zero padding. The checksum covers the payload and,
 * through the seed, the type. A record is FULL, or FIRST MIDDLE* LAST in consecutive
 * fragments. Do not change any of these values: they are on disk.
 *
 * Recovery rules (store_log_reader):
 *  - clean end: EOF at a fragment boundary, or only zero bytes from there to EOF.
 *  - torn tail: a damaged or incomplete record after which the file holds no valid fragment
 *    that starts a record. Reported with the offset where it starts; the owner truncates
 *    there (the WAL's last file only).
 *  - corruption: a damaged record followed by more valid records. Never skipped silently.
 */
#ifndef LOG_FORMAT_H
#define LOG_FORMAT_H

#define STORE_LOG_BLOCK  32768u
#define STORE_LOG_HEADER 7u

enum store_log_type {
    STORE_LOG_ZERO = 0,
    STORE_LOG_FULL = 1,
    STORE_LOG_FIRST = 2,
    STORE_LOG_MIDDLE = 3,
    STORE_LOG_LAST = 4,
};

#endif
