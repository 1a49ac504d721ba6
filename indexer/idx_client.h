/*
 * idx_client.h — what an indexer asks of ingest nodes over HTTP (libcurl): sealed segment
 * files, and the fresh half of strong searches and gets, fanned out to every live node in
 * parallel with one deadline.
 */
#ifndef IDX_CLIENT_H
#define IDX_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_clock.h"
#include "st_error.h"

/* Call once before any thread uses this module (curl_global_init). */
int idx_client_init(void) ST_WUR;
void idx_client_cleanup(void);

/*
 * Downloads url into path (created exclusively, fsynced; not renamed) with a bearer token
 * (NULL: none). At most max_bytes are accepted. *checksum gets the X-Strata-Checksum header
 * (0 when absent). Returns ST_ENOTFOUND on 404 (the segment is no longer live there), ST_EIO
 * when the node cannot be reached or answers another error (retry later), with err set.
 * A failed download leaves no file behind. A transfer slower than 1 KiB/s for 30 s is cut
 * (ST_EIO); when *stop (may be NULL) becomes true it is abandoned with ST_ECLOSED.
 */
int idx_client_fetch(const char *url, const char *path, const char *token, uint64_t max_bytes,
                     int64_t timeout_ms, const _Atomic bool *stop, uint32_t *checksum,
                     struct st_err *err) ST_WUR;

/*
 * Copies src (a path on a shared file system, or file://path) into path (created, fsynced;
 * not renamed), the local twin of idx_client_fetch for sealed events that name a path. Only a
 * regular file of at most max_bytes is read: anything else (a device, a FIFO, a directory) is
 * ST_ECORRUPT and a larger file ST_ERANGE before a byte is copied (both permanent: not the
 * segment the event describes); ST_EIO when src cannot be
 * opened (retry later). When *stop (may be NULL) becomes true the copy is abandoned with
 * ST_ECLOSED. A failed copy leaves no file behind.
 */
int idx_client_copy_path(const char *src, const char *path, uint64_t max_bytes,
                         const _Atomic bool *stop, struct st_err *err) ST_WUR;

struct idx_call {
    const char *url;
    const char *body; /* JSON for a POST; NULL: GET */
    char *resp;       /* the response body (malloc'd, NUL-terminated), or NULL */
    size_t resp_len;
    long status;     /* HTTP status; 0 when no answer came */
    char error[256]; /* why there is no answer */
    bool reused;     /* answered on a connection an earlier call had opened */
};

/* Runs the calls in parallel, all within timeout_ms; each call's outcome is in its fields.
 * Responses above 64 MiB are cut off and treated as failed. Connections are kept open
 * between calls and reused by the next call to the same node: up to 8 calls at once keep
 * theirs, each at most as many as it asked distinct nodes; one idle 20 s is not reused. Names are
 * resolved on every call. None may be running when idx_client_cleanup is called. */
void idx_client_run(struct idx_call *calls, size_t n, const char *token, int64_t timeout_ms);
/* Connections idx_client_run opened since the process started (reused ones not counted). */
uint64_t idx_client_connects(void);
/* The clock whose monotonic time ages the kept handles (NULL: the system's); the handles kept
 * until then are closed. For tests: set while no call runs. Connections' own age limit
 * (libcurl's) stays on the system clock. */
void idx_client_set_clock(const struct st_clock *c);
void idx_call_free(struct idx_call *c);

#endif
