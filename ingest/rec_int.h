/* rec_int.h — shared between the two decoders (not part of the ingest contract). */
#ifndef REC_INT_H
#define REC_INT_H

#include <stdarg.h>

#include "rec_format.h"
#include "st_arena.h"

struct json_t;

struct rec_decoder {
    struct st_arena arena;   /* ids, vectors, meta of the current message */
    struct rec_record *recs; /* cap entries */
    uint32_t cap;
    uint32_t *order;        /* duplicate-id check */
    struct json_t *root;    /* the parsed JSON of the current message */
    void *fast;             /* the simdjson decoder's state (rec_json_fast.h), or NULL */
    bool json_ref_only;     /* rec_decode_ref: the jansson decoder only */
    uint64_t json_fast;     /* JSON messages decoded by the fast path */
    uint64_t json_fallback; /* ... that it declined (the reference decided) */
    uint64_t meta_fast;     /* frame meta objects simdjson passed (rec_json_fast_meta) */
    uint64_t meta_fallback; /* ... that jansson checked */
    char *detail;
    size_t detail_cap;
};

/* Writes the detail and returns r. */
enum rec_reason rec_fail(struct rec_decoder *d, enum rec_reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Room for n records (d->recs). */
int rec_reserve(struct rec_decoder *d, uint32_t n);
const struct rec_collection *rec_find(const struct rec_schema *s, const char *name, size_t len);
/* Checks that every upsert vector is finite and no id repeats. */
enum rec_reason rec_check_batch(struct rec_decoder *d, const struct rec_batch *b);

/* The JSON format: the fast decoder (rec_json_fast.h), falling back to the reference. */
enum rec_reason rec_decode_json(struct rec_decoder *d, const struct rec_schema *s,
                                const void *value, size_t len, struct rec_batch *out);
/* The JSON format with jansson: the reference, and the reasons for every rejection. */
enum rec_reason rec_decode_json_ref(struct rec_decoder *d, const struct rec_schema *s,
                                    const void *value, size_t len, struct rec_batch *out);
enum rec_reason rec_decode_frame(struct rec_decoder *d, const struct rec_schema *s,
                                 const void *value, size_t len, struct rec_batch *out);

#endif
