/*
 * ingest_write.h — one decoded Kafka message into a collection's windows: the record
 * conversion the consumer loop runs between rec_decode and the offset bookkeeping.
 *
 *  - `ts` absent in a record: the Kafka message timestamp (no timestamp either: rejected
 *    `bad_ts`, the batch goes to the dead-letter topic).
 *  - cosine collections: each upsert vector is scaled to unit length here, once, so that
 *    every index and the exact scan can use inner products (a zero vector is rejected
 *    `zero_vector`: it has no direction).
 *  - the batch is written through twcs with its (partition, offset), so a redelivered
 *    message is recognised and skipped (`ING_DUPLICATE`), never applied twice.
 */
#ifndef INGEST_WRITE_H
#define INGEST_WRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "rec_format.h"
#include "st_error.h"
#include "twcs.h"

enum ing_outcome {
    ING_APPLIED = 0, /* in the WAL (durable after the next sync covering it) */
    ING_DUPLICATE,   /* already applied earlier: commit its offset, nothing else */
    ING_REJECTED,    /* to the dead-letter topic with reason/detail, then commit */
    ING_RETRY,       /* back-pressure (ST_EAGAIN): pause the partition, retry this message */
};

struct ing_result {
    enum ing_outcome outcome;
    const char *reason; /* ING_REJECTED: a stable code (rec_format.h's or twcs's) */
    char detail[256];
    uint32_t expired; /* records dropped as older than the TTL (accepted batches) */
};

struct ing_writer;

/* cosine: the collection's metric is cosine (vectors get normalised). */
struct ing_writer *ing_writer_new(uint32_t dim, bool cosine);
void ing_writer_free(struct ing_writer *w);

/*
 * Writes b (from partition/offset, Kafka timestamp msg_ts_ms or -1) into t. Returns ST_OK with
 * res filled for the four outcomes, or an error when the store failed (I/O): stop consuming,
 * commit nothing more. The same as ing_write_prepare then ing_write_prepared.
 */
int ing_write(struct ing_writer *w, struct twcs *t, const struct rec_batch *b, int32_t partition,
              int64_t offset, int64_t msg_ts_ms, struct ing_result *res) ST_WUR;

/*
 * The part of ing_write that needs no store (the consumer runs it on its decode thread):
 * converts b into w's store records — timestamps defaulted to msg_ts_ms, cosine vectors
 * normalised into w. res->outcome is ING_REJECTED (bad_ts, zero_vector) or ING_APPLIED
 * (prepared; nothing written yet). The records point into b's storage and w: both must stay
 * unchanged until ing_write_prepared. Returns ST_ENOMEM or ST_EINVAL (b of another dim).
 */
int ing_write_prepare(struct ing_writer *w, const struct rec_batch *b, int64_t msg_ts_ms,
                      struct ing_result *res) ST_WUR;
/* Writes what the last successful ing_write_prepare on w prepared (which must not have been
 * rejected) into t, with res as in ing_write. */
int ing_write_prepared(struct ing_writer *w, struct twcs *t, int32_t partition, int64_t offset,
                       struct ing_result *res) ST_WUR;

#endif
