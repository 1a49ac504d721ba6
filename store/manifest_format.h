/*
 * manifest_format.h — the manifest: an append-only log (log_format.h framing) of edit groups.
 * One log record = one edit group, applied atomically. Little-endian. Do not change.
 *
 * CURRENT holds the name of the live manifest ("MANIFEST-NNNNNN\n"), replaced by
 * tmp -> fsync -> rename -> fsync(dir). On open the manifest is rewritten as one snapshot
 * edit group into a new file (compaction), and CURRENT is switched to it.
 *
 * Edit group payload: a sequence of edits until the end of the record, each starting with
 * a tag byte:
 *   1 INFO          4 dim, 4 format version
 *   2 ADD_SEGMENT   8 file number, 8 window_start, 8 window_end, 4 kind, 4 seg version,
 *                   8 count, 8 bytes, 8 min_ts, 8 max_ts
 *   3 DEL_SEGMENT   8 file number
 *   4 LOG_NUMBER    8 oldest WAL file number still needed
 *   5 NEXT_FILE     8 next unused file number
 *   6 MARK          4 partition, 8 offset (all batches <= offset are in segments)
 *   7 WINDOW        8 start, 8 end, 1 state (0xff: remove the entry), 4 version
 *   8 KV_SET        varint klen, key, varint vlen, value
 *   9 KV_DEL        varint klen, key
 *  10 ADD_VLOG      8 file number, 8 window_start, 8 window_end: a window's vector log
 *                   (NNNNNN.seg without a footer yet; its rows are named by runs and WAL records)
 *  11 DEL_VLOG      8 file number (sealed into a segment of that number, or dropped)
 * An unknown tag is corruption (the file is newer than this code).
 */
#ifndef MANIFEST_FORMAT_H
#define MANIFEST_FORMAT_H

enum store_manifest_tag {
    STORE_MF_INFO = 1,
    STORE_MF_ADD_SEGMENT = 2,
    STORE_MF_DEL_SEGMENT = 3,
    STORE_MF_LOG_NUMBER = 4,
    STORE_MF_NEXT_FILE = 5,
    STORE_MF_MARK = 6,
    STORE_MF_WINDOW = 7,
    STORE_MF_KV_SET = 8,
    STORE_MF_KV_DEL = 9,
    STORE_MF_ADD_VLOG = 10,
    STORE_MF_DEL_VLOG = 11,
};

#define STORE_MANIFEST_VERSION 1u

#endif
