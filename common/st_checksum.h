/*
 * st_checksum.h — checksums and hashes for stored data, backed by XXH3 (Debian libxxhash).
 *
 * st_checksum32 is the low 32 bits of XXH3-64 with seed 0. It is written to disk by the WAL,
 * segment and manifest formats: do not change the definition.
 */
#ifndef ST_CHECKSUM_H
#define ST_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

uint32_t st_checksum32(const void *data, size_t len);
uint64_t st_hash64(const void *data, size_t len);
uint64_t st_hash64_seed(const void *data, size_t len, uint64_t seed);

/* Streaming form for data written in pieces; equals st_hash64 over the concatenation. */
struct st_hash_stream;
/* Returns NULL on allocation failure. Caller owns; free with st_hash_stream_free. */
struct st_hash_stream *st_hash_stream_new(void);
void st_hash_stream_update(struct st_hash_stream *s, const void *data, size_t len);
uint64_t st_hash_stream_digest(const struct st_hash_stream *s);
/* Starts s over, as st_hash_stream_new leaves it. */
void st_hash_stream_reset(struct st_hash_stream *s);
void st_hash_stream_free(struct st_hash_stream *s);

#endif
