/*
 * produce.h — writes records to Kafka in strata's record formats (SPEC.md §4): the library
 * behind `strata produce`, and what `strata demo` calls in-process to load its data set.
 *
 * Two halves:
 *   - file readers (struct produce_src): .fvecs, .npy (float32, 2-D, C order), MNIST /
 *     Fashion-MNIST idx3-ubyte[.gz] and JSON Lines of SPEC §4.1 records. Every reader
 *     validates its whole input up front where the format allows (sizes against headers,
 *     dims, each JSON line) and reports "FILE: message" in the st_err, so nothing half-sent
 *     is discovered to be garbage later.
 *   - produce_run: pulls records from any source callback (a reader, or a program's own) and
 *     sends them as batches of `batch` records per Kafka message, JSON or binary frames, with
 *     an idempotent producer, an optional rate limit, progress reports and a final flush
 *     that fails when any message was not delivered.
 *
 * Thread safety: a produce_src is used by one thread at a time; produce_run runs on the
 * caller's thread (librdkafka adds its own) and calls the source and progress callbacks there.
 */
#ifndef PRODUCE_H
#define PRODUCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "st_error.h"

/* One record. Every pointer is borrowed from the source, valid until its next call. */
struct produce_rec {
    const char *id;  /* string id (u64 == false), NUL-terminated, 1..256 bytes */
    uint64_t id_u64; /* the id when u64 */
    bool u64;
    const float *vec; /* dim floats; NULL for a delete */
    uint32_t dim;
    int64_t ts;            /* ms since the epoch; 0 = none: the Kafka timestamp is used */
    const char *meta_json; /* a JSON object, compact; may be NULL */
    int32_t partition;     /* -1 = by key */
    bool del;              /* op: delete (vec is NULL) */
};

/* Fills *out with the next record: returns 1, 0 at the end, or a negative ST_E* code (with
 * detail in the source's own error, see produce_src_error). */
typedef int (*produce_next_fn)(void *ctx, struct produce_rec *out);

/* ---- file readers ---- */

enum produce_in {
    PRODUCE_IN_AUTO = 0, /* by name: *.fvecs, *.npy, *idx3-ubyte[.gz], *.jsonl / *.ndjson */
    PRODUCE_IN_FVECS,
    PRODUCE_IN_NPY,
    PRODUCE_IN_IDX,   /* idx3-ubyte; gzip-compressed when the data starts with 1f 8b */
    PRODUCE_IN_JSONL, /* one SPEC §4.1 record per line: id, vector, ts, meta, op */
};

struct produce_src;

/* Largest dim a reader accepts (a header claiming more is refused as lying). */
#define PRODUCE_DIM_MAX 65536u
/* Largest decompressed size of an idx3-ubyte.gz (bigger is refused, not half-read). */
#define PRODUCE_GZ_MAX (4ull << 30)

/*
 * Opens path (mapped read-only; an idx3-ubyte.gz is inflated into memory) and validates it. AUTO
 * picks the reader by name. u64_ids: ids are uint64 (row numbers, or JSON integers in
 * JSON Lines) instead of strings. ST_EINVAL / ST_ECORRUPT / ST_EUNSUPP with "path: message"
 * for bad input, ST_EIO / ST_ENOTFOUND when it cannot be read. Caller owns *out.
 */
int produce_src_open(const char *path, enum produce_in kind, bool u64_ids, struct produce_src **out,
                     struct st_err *err) ST_WUR;
/* The same over a buffer (borrowed until produce_src_close); name is for messages and AUTO. */
int produce_src_open_mem(const char *name, const void *data, size_t len, enum produce_in kind,
                         bool u64_ids, struct produce_src **out, struct st_err *err) ST_WUR;
void produce_src_close(struct produce_src *s);

/* A produce_next_fn: ctx is the struct produce_src. */
int produce_src_next(void *ctx, struct produce_rec *out);
/* Records the source yields (the input's rows, or produce_src_repeat's count) and their dim
 * (known after open for every format). */
uint64_t produce_src_rows(const struct produce_src *s);
/* Yields count records instead of the input's rows: fewer, or the rows again and again, ids
 * going on counting (row r of pass k gets id k * rows + r), so a small file drives a long load.
 * ST_EINVAL for 0, or for more than the lines of JSON Lines (their ids are their own). */
int produce_src_repeat(struct produce_src *s, uint64_t count, struct st_err *err) ST_WUR;
/* The vectors' dim; 0 for JSON Lines of deletes only (none has a vector). */
uint32_t produce_src_dim(const struct produce_src *s);
/* Makes record `row` (of produce_src_rows) the next one produce_src_next returns (ST_ERANGE
 * past the end). */
int produce_src_seek(struct produce_src *s, uint64_t row) ST_WUR;
/* The detail of the last error produce_src_next returned ("path: row N: message"). */
const struct st_err *produce_src_error(const struct produce_src *s);

/* ---- producing ---- */

enum produce_wire { PRODUCE_JSON = 0, PRODUCE_BINARY };

struct produce_stats {
    uint64_t records;   /* handed to Kafka */
    uint64_t messages;  /* Kafka messages (batches) */
    uint64_t bytes;     /* message value bytes */
    uint64_t delivered; /* messages acknowledged by the brokers so far */
    double seconds;     /* since produce_run started */
};

/* Largest batch of vectors produce_run holds (batch * dim * 4 bytes). */
#define PRODUCE_BATCH_MAX (256u << 20)

/* Called on the producing thread about every progress_ms and once at the end (final true). */
typedef void (*produce_progress_fn)(void *ud, const struct produce_stats *s, uint64_t total,
                                    bool final);

struct produce_opts {
    const char *brokers; /* bootstrap.servers (e.g. a mock cluster's) */
    const char *topic;
    const char *collection; /* named in every message; NULL = the topic's collection */
    enum produce_wire format;
    uint32_t batch; /* records per Kafka message; 0 = 100 */
    uint32_t dim;   /* the collection's dim (binary frames carry it); 0 = the first record's
                       (a delete's may be 0: then binary is refused, ST_EINVAL) */
    double rate; /* records per second (token bucket, bursts of at most one batch); 0 = no limit */
    const char *const
        *props;     /* extra librdkafka properties "key=value", NULL-terminated, or NULL */
    uint64_t total; /* expected records for progress/ETA; 0 = unknown */
    produce_progress_fn progress; /* or NULL */
    void *progress_ud;
    FILE *progress_file;        /* when progress is NULL: plain progress lines here (NULL = none) */
    int progress_ms;            /* 0 = 500 */
    int flush_timeout_ms;       /* final flush; 0 = 60000 */
    const atomic_bool *cancel;  /* stop early, also out of a rate-limit wait (still flushes)
                                   when it becomes true; may be NULL */
    const atomic_bool *abandon; /* stop waiting for acknowledgements: the final flush gives up
                                   at once and what is left counts as undelivered; may be NULL */
};

/*
 * Sends every record of next(ctx) to opts->topic. A batch is sent at `batch` records, when the
 * next record names another partition, or when its id is already in the batch (ingest refuses
 * a batch holding one id twice). The message key is the batch's first id, so batches of 1
 * are keyed exactly by id. Message header content-type says the format.
 *
 * Returns ST_OK only when every message was delivered (acks=all, enable.idempotence=true);
 * otherwise the source's error, ST_EINVAL for a record the format cannot carry (dims that
 * differ, non-finite values, an id over 256 bytes, meta that is not an object) naming the
 * record, or ST_EIO naming the Kafka error and the count of undelivered messages. *out is
 * filled in every case.
 */
int produce_run(const struct produce_opts *opts, produce_next_fn next, void *ctx,
                struct produce_stats *out, struct st_err *err) ST_WUR;

/*
 * The message produce_run sends for recs[0..n) as one batch (JSON or a binary frame, as
 * opts->format says, naming opts->collection, with opts->dim as produce_run takes it): for
 * tests and for tools that hand messages to Kafka themselves. *out is malloc'd (caller frees).
 * ST_EINVAL for a record the format cannot carry (as produce_run) or an id twice.
 */
int produce_encode(const struct produce_opts *opts, const struct produce_rec *recs, size_t n,
                   uint8_t **out, size_t *len, struct st_err *err) ST_WUR;

/* One record as one message (binary frame, the topic's collection), delivered before it
 * returns: what a produce-to-searchable probe times. */
int produce_one(const char *brokers, const char *topic, const struct produce_rec *r,
                struct st_err *err) ST_WUR;

/* ---- whole files ---- */

struct produce_matrix {
    float *data; /* rows * dim floats, row-major; caller frees */
    size_t rows;
    uint32_t dim;
};

/* Reads the first max_rows rows (all when there are fewer) of any file produce_src_open
 * reads into one matrix. Errors as produce_src_open's, and a row's "FILE: row N: ...". */
int produce_read_matrix(const char *path, size_t max_rows, struct produce_matrix *m,
                        struct st_err *err) ST_WUR;

#endif
