/* TEMPORARY (replaced by the producer library of the CLI change) */
#ifndef STRATA_PRODUCE_H
#define STRATA_PRODUCE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "st_error.h"
struct produce_rec {
    const char *id;
    uint64_t id_u64;
    bool u64;
    const float *vec;
    uint32_t dim;
    int64_t ts;
    const char *meta_json;
    int32_t partition;
};
struct produce_stats {
    uint64_t records, messages, bytes;
    double seconds;
};
enum produce_format { PRODUCE_JSON, PRODUCE_BINARY };
struct produce_opts {
    const char *brokers, *topic, *collection;
    enum produce_format format;
    size_t batch;
    void (*on_progress)(void *ctx, const struct produce_stats *st, bool done);
    void *progress_ctx;
};
typedef int (*produce_source_fn)(void *ctx, struct produce_rec *out);
int produce_run(const struct produce_opts *o, produce_source_fn next, void *ctx,
                struct produce_stats *st, struct st_err *err);
int produce_one(const char *brokers, const char *topic, const struct produce_rec *r,
                struct st_err *err);
struct produce_matrix {
    float *data;
    size_t rows;
    uint32_t dim;
};
int produce_read_matrix(const char *path, size_t max_rows, struct produce_matrix *m,
                        struct st_err *err);
#endif
