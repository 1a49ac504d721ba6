/*
 * st_bus_int.h — what st_bus.c shares with its two backends (st_bus_nats.c, st_bus_mem.c).
 *
 * st_bus.c owns the public objects and dispatches through a backend's ops; each object
 * carries its backend's state in `impl`. A backend may keep (leak) its own impl after close
 * when something outside it (nats.c) may still call into it; the public object is always
 * freed.
 */
#ifndef ST_BUS_INT_H
#define ST_BUS_INT_H

#include "st_bus.h"

struct st_bus_ops {
    int (*connect)(const struct st_bus_opts *o, void **impl, struct st_err *err);
    void (*close)(void *impl);
    bool (*connected)(void *impl);
    int (*publish)(void *impl, const char *subject, const void *data, size_t len);
    int (*flush)(void *impl, int timeout_ms);
    int (*subscribe)(void *impl, const char *subject, st_bus_msg_fn fn, void *ctx, void **sub,
                     struct st_err *err);
    void (*unsubscribe)(void *impl, void *sub);
    int (*stream_ensure)(void *impl, const char *name, const char *const *subjects, size_t n,
                         const char *narrow, bool *narrowed, struct st_err *err);
    int (*js_publish)(void *impl, const char *subject, const void *data, size_t len,
                      const char *msg_id, int timeout_ms, struct st_err *err);
    int (*pull_open)(void *impl, const struct st_bus_pull_opts *o, void **pull, struct st_err *err);
    /* Fills msgs[i]->impl (the public objects are allocated by st_bus.c). */
    int (*pull_fetch)(void *pull, void **msgs, int max, int timeout_ms, struct st_err *err);
    void (*pull_close)(void *pull);
    const char *(*msg_subject)(const void *m);
    const void *(*msg_data)(const void *m, size_t *len);
    uint64_t (*msg_delivered)(const void *m);
    int (*msg_ack)(void *m);
    int (*msg_nak)(void *m);
    int (*msg_in_progress)(void *m);
    void (*msg_free)(void *m);
};

extern const struct st_bus_ops st_bus_nats_ops;
extern const struct st_bus_ops st_bus_mem_ops;

/* NATS subject matching: `*` is one token, `>` (last) one or more. Both are valid subjects. */
bool st_bus_subject_match(const char *pattern, const char *subject);
/* Whether s is a valid subject (a pattern when wildcards): non-empty tokens, `>` last. */
bool st_bus_subject_valid(const char *s, bool wildcards);

#endif
