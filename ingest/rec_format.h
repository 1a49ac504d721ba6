/*
 * rec_format.h — Kafka message values to batches of records (SPEC.md §4): the JSON format
 * (jansson) and the binary frame (frame_format.h), with the validation of §4.3. One message
 * is one batch, accepted or rejected whole; a rejection carries a stable reason code (the
 * `strata.error` DLQ header and the `reason` label of strata_ingest_rejected_total) and a
 * human detail.
 *
 * Decoding never copies vectors that can be read in place (a binary frame in a 4-byte
 * aligned buffer); the records point into the message value or into the decoder's scratch,
 * valid until the next rec_decode call on the same decoder. One decoder per thread.
 */
#ifndef REC_FORMAT_H
#define REC_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

/* Stable reason codes: never renumbered or renamed (dashboards and DLQ consumers use them). */
enum rec_reason {
    REC_OK = 0,
    REC_GARBAGE,            /* neither format, or JSON that does not parse */
    REC_TRUNCATED,          /* a frame shorter than its sections */
    REC_CHECKSUM,           /* a frame checksum mismatch */
    REC_UNSUPPORTED,        /* frame version, element type or flags we do not know */
    REC_TOO_LARGE,          /* value over the size limit */
    REC_UNKNOWN_COLLECTION, /* named collection not configured, or none named and no default */
    REC_WRONG_DIM,          /* vector length != the collection's dim, or missing */
    REC_NON_FINITE,         /* NaN or infinity (also numbers beyond float range) */
    REC_BAD_ID,             /* missing, empty, too long, or the wrong type for the collection */
    REC_BAD_TS,             /* not an integer number of milliseconds */
    REC_BAD_OP,             /* op other than upsert/delete */
    REC_BAD_META,           /* meta not an object, or over 64 KiB */
    REC_BAD_RECORD,         /* a record that is not an object, or has an unknown key */
    REC_DUPLICATE_ID,       /* one id twice in a batch (which one wins would be arbitrary) */
    REC_EMPTY_BATCH,        /* no records */
    REC_REASON_COUNT
};

/* "garbage", "truncated", ... — the label values. */
const char *rec_reason_str(enum rec_reason r);

struct rec_collection {
    const char *name;
    uint32_t dim;
    bool u64_ids; /* ids are unsigned integers (stored as 8 bytes big-endian) */
};

struct rec_schema {
    const struct rec_collection *colls;
    size_t n;
    /* The collection of messages that name none (the topic's only collection), or NULL. */
    const struct rec_collection *fallback;
    size_t max_value; /* bytes; 0 = 64 MiB */
};

#define REC_TS_ABSENT INT64_MIN
#define REC_META_MAX  (64u * 1024u)
#define REC_ID_MAX    256u

enum rec_op { REC_UPSERT = 0, REC_DELETE = 1 };

struct rec_record {
    const uint8_t *id; /* string bytes, or 8 bytes big-endian for u64 ids */
    uint32_t id_len;
    int64_t ts; /* REC_TS_ABSENT: use the message timestamp */
    uint8_t op;
    const float *vec; /* dim floats (upserts); NULL for deletes */
    const uint8_t *meta;
    uint32_t meta_len; /* 0: none */
};

struct rec_batch {
    const struct rec_collection *coll;
    uint32_t n;
    const struct rec_record *recs;
    bool zero_copy; /* the vectors point into the message value */
};

enum rec_kind { REC_KIND_AUTO = 0, REC_KIND_JSON, REC_KIND_FRAME };

struct rec_decoder;
struct rec_decoder *rec_decoder_new(void);
void rec_decoder_free(struct rec_decoder *d);
/* Drops what the last rec_decode produced (its batch is invalid after this): the parsed JSON
 * and the arena's chunks past its first, so an idle decoder does not keep a large message's
 * memory until its next message. */
void rec_decoder_release(struct rec_decoder *d);

/*
 * Decodes one message value. kind: from the content-type header (rec_kind_of), or AUTO to
 * sniff (a frame's magic, or '{'). On rejection returns the reason and writes a one-line
 * detail (with the record index where one is at fault) to detail.
 */
enum rec_reason rec_decode(struct rec_decoder *d, const struct rec_schema *s, enum rec_kind kind,
                           const void *value, size_t len, struct rec_batch *out, char *detail,
                           size_t detail_cap);

/*
 * rec_decode with JSON decoded by the jansson decoder only: the reference that rec_decode's
 * faster simdjson path must match bit for bit (results, reasons). For the differential tests
 * and the benchmark; frames decode as in rec_decode but for their meta objects, which jansson
 * alone checks (rec_decode asks simdjson first).
 */
enum rec_reason rec_decode_ref(struct rec_decoder *d, const struct rec_schema *s,
                               enum rec_kind kind, const void *value, size_t len,
                               struct rec_batch *out, char *detail, size_t detail_cap);

/* How many JSON messages this decoder decoded on the fast path, and how many it handed to
 * the reference (every rejection, and the rare valid message the fast path declines). */
void rec_decoder_json_counts(const struct rec_decoder *d, uint64_t *fast, uint64_t *fallback);
/* The same for binary frames' meta objects: how many simdjson passed, how many jansson
 * decided (every meta that is not an object jansson takes, and the rare one simdjson cannot
 * tell; rec_decode_ref's are all the reference's). */
void rec_decoder_meta_counts(const struct rec_decoder *d, uint64_t *fast, uint64_t *fallback);

/* "application/json" -> JSON, "application/vnd.strata.batch" -> frame, else AUTO. */
enum rec_kind rec_kind_of(const char *content_type, size_t len);

/*
 * Encodes a batch as a frame (producers, tools, tests). coll_name may be NULL (the topic's
 * collection). Caller frees *out. Returns ST_EINVAL for records a decoder would reject in
 * form (bad id length, meta too long, count 0).
 */
int rec_frame_encode(const char *coll_name, uint32_t dim, bool u64_ids,
                     const struct rec_record *recs, uint32_t n, uint8_t **out,
                     size_t *out_len) ST_WUR;

#endif
