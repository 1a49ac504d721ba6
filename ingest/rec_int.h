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
    uint32_t *order;     /* duplicate-id check */
    struct json_t *root; /* the parsed JSON of the current message */
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

enum rec_reason rec_decode_json(struct rec_decoder *d, const struct rec_schema *s,
                                const void *value, size_t len, struct rec_batch *out);
enum rec_reason rec_decode_frame(struct rec_decoder *d, const struct rec_schema *s,
                                 const void *value, size_t len, struct rec_batch *out);

#endif
