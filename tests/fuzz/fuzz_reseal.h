/*
 * fuzz_reseal.h — recompute every checksum of a frame, segment or index file in memory, trusting
 * whatever layout its header and footer claim (sections that fall outside the buffer are left
 * alone). Tests and fuzz targets use it so that a mutated file gets past the checksums and
 * only its layout lies: the loaders must catch that by bounds, not by luck.
 */
#ifndef FUZZ_RESEAL_H
#define FUZZ_RESEAL_H

#include <stddef.h>
#include <stdint.h>

/* ingest/frame_format.h: the frame length field := len, body and header sums. */
void fuzz_reseal_frame(uint8_t *b, size_t len);
/* store/segment_format.h: meta block and vector block sums, section sums, footer sum. */
void fuzz_reseal_segment(uint8_t *b, size_t len);
/* indexer/hnsw_format.h: header sum, section sums, file size, footer sum. */
void fuzz_reseal_hnsw(uint8_t *b, size_t len);
/* indexer/ivfpq_format.h: header sum, both section sums, file size, footer sum. */
void fuzz_reseal_ivfpq(uint8_t *b, size_t len);

/* Writes b to a fresh memfd and returns a path that opens it ("/proc/self/fd/N"); the fd is
 * kept (one per process) and reused by the next call. NULL on failure. */
const char *fuzz_memfile(const uint8_t *b, size_t len);

#endif
