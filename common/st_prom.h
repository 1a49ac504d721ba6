/*
 * st_prom.h — Prometheus text exposition (format 0.0.4): a growable text buffer, helpers for
 * counters/gauges with labels, and lock-free histograms with fixed bucket bounds.
 *
 * Daemons build /metrics on request from their modules' stats (pull, no global registry);
 * only histograms are kept continuously (observed on hot paths: atomic adds, no locks).
 */
#ifndef ST_PROM_H
#define ST_PROM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

/* A growable NUL-terminated text buffer. oom is sticky: the text is then incomplete. */
struct st_text {
    char *p;
    size_t len, cap;
    bool oom;
};
void st_text_printf(struct st_text *t, const char *fmt, ...) ST_PRINTF(2, 3);
/* Appends s as a JSON/Prometheus label value: \ " and newline escaped. */
void st_text_escaped(struct st_text *t, const char *s);
void st_text_free(struct st_text *t);

#define ST_HIST_MAX_BUCKETS 24

/* Bucket upper bounds in seconds, ascending (the +Inf bucket is implicit). */
struct st_hist_bounds {
    const double *le;
    unsigned n; /* <= ST_HIST_MAX_BUCKETS */
};
/* 100 µs … 60 s: request, fsync and build latencies. */
extern const struct st_hist_bounds st_hist_latency;
/* 1 s … 7 d: ages (event time to a stage). */
extern const struct st_hist_bounds st_hist_age;

struct st_hist {
    const struct st_hist_bounds *b;
    _Atomic uint64_t count[ST_HIST_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    _Atomic uint64_t sum_us;
};
void st_hist_init(struct st_hist *h, const struct st_hist_bounds *b);
void st_hist_observe(struct st_hist *h, double seconds);

/* "# HELP name help\n# TYPE name type\n" */
void st_prom_head(struct st_text *t, const char *name, const char *type, const char *help);
/*
 * One sample: name{labels} value. labels is a NULL-terminated list of key, value pairs
 * (values escaped here), or NULL.
 */
void st_prom_sample(struct st_text *t, const char *name, const char *const *labels, double v);
/* A histogram's _bucket/_sum/_count series with labels (as above) added to each. */
void st_prom_hist(struct st_text *t, const char *name, const char *const *labels,
                  const struct st_hist *h);

#endif
