/*
 * rec_json_fast.h — the fast JSON decoder (simdjson's DOM parser, rec_json_fast.cpp) behind
 * rec_decode. It only ever accepts: a message it decodes is decoded bit for bit as the
 * jansson decoder (rec_json.c, the reference) decodes it — ids, ts, op, meta bytes and every
 * float — and on anything else (every input the reference rejects, and the few valid ones it
 * does not handle) it declines, and the caller runs the reference, which finds the reason and
 * the detail. tests/check_json_diff.c and tests/fuzz/fuzz_json_diff.c hold it to that.
 *
 * Why: jansson makes a json_t and calls strtod for each number, and a producer's float array
 * is ~4x the bytes of the vector (docs/benchmarks.md, "JSON decode").
 */
#ifndef REC_JSON_FAST_H
#define REC_JSON_FAST_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rec_decoder;
struct rec_schema;
struct rec_batch;

/*
 * Decodes a JSON message into out (records in d->recs, vectors and meta in d->arena, ids in
 * the parser's string buffer kept in d->fast until the next call of this or of
 * rec_json_fast_meta, i.e. until the next message, as rec_decode promises). true: decoded, out is
 * set (the caller still runs rec_check_batch, as for the reference); false: declined, out and
 * d->arena hold garbage to be reset.
 */
bool rec_json_fast_decode(struct rec_decoder *d, const struct rec_schema *s, const void *value,
                          size_t len, struct rec_batch *out);

/*
 * The binary frame's meta check, on simdjson: true when meta[0, len) is a JSON object that
 * jansson's json_loadb (flags 0, the reference check in rec_frame.c) accepts too; false when
 * it is not, or simdjson cannot tell, and the caller asks jansson. simdjson refuses what jansson
 * takes in two cases: one NUL byte right after a number or true/false/null, and nesting of
 * 1024 levels or more; integers from 2^63 to 2^64-1 it parses (as uint64) and we decline, as
 * jansson refuses them. Uses d->fast. The equivalence rests on Debian's simdjson 3.0.1: a new
 * simdjson must pass tests/check_json_diff.c (a case per rule, every short document over the
 * bytes where the two could part, every \u escape) and tests/fuzz/fuzz_frame_meta.c again.
 */
bool rec_json_fast_meta(struct rec_decoder *d, const void *meta, size_t len);

/* Frees d->fast (the parser and its buffers); NULL is fine. */
void rec_json_fast_free(void *fast);

#ifdef __cplusplus
}
#endif

#endif
