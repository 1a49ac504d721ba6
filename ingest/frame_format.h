/*
 * frame_format.h — the binary batch frame (SPEC.md §4.2): one Kafka message value, one
 * batch. Little-endian. Sections start at multiples of 8 from the frame start, so when the
 * Kafka buffer is 4-byte aligned the vectors are read in place (no copy, no per-element
 * decode). Do not change: producers write it. A new layout gets a new version.
 *
 *   OFFSET  SIZE  FIELD
 *   0       4     magic "STRB"
 *   4       1     version (1)
 *   5       1     flags: bit 0 ids are u64 (else byte strings), bit 1 meta section present;
 *                 bits 2-7 reserved, must be 0
 *   6       1     element type: 1 = float32
 *   7       1     collection name length L (0..64; 0 = the topic's collection)
 *   8       4     dim
 *   12      4     count (records, >= 1)
 *   16      4     frame length (bytes, = the message value length)
 *   20      4     checksum32 (XXH3-64 low 32 bits) of bytes 32..length-1
 *   24      4     reserved, 0
 *   28      4     checksum32 of bytes 0..27
 *   32      L     collection name, then zero padding to a multiple of 8
 *   ...           ids. u64: count * 8 bytes. Strings: count * u32 end offsets (cumulative,
 *                 relative to the id bytes), then the id bytes; zero padding to 8
 *   ...           count * i64 event times, ms since the epoch; INT64_MIN = absent (the Kafka
 *                 message timestamp is used)
 *   ...           count * u8 ops (0 upsert, 1 delete), zero padding to 8
 *   ...           count * dim * 4 bytes vectors, row i for record i (delete rows: ignored,
 *                 written as zeros)
 *   ...           meta, if flag bit 1: count * u32 end offsets, then the bytes (each record's
 *                 meta is a JSON object or empty), zero padding to 8
 *   end           (the frame length must land exactly here)
 */
#ifndef FRAME_FORMAT_H
#define FRAME_FORMAT_H

#define FRAME_MAGIC     "STRB"
#define FRAME_VERSION   1u
#define FRAME_HEADER    32u
#define FRAME_F_U64_IDS 0x01u
#define FRAME_F_META    0x02u
#define FRAME_F_KNOWN   0x03u
#define FRAME_ELEM_F32  1u
#define FRAME_TS_ABSENT INT64_MIN
#define FRAME_NAME_MAX  64u

#endif
