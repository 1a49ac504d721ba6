/*
 * st_http.h — the daemons' HTTP server: libmicrohttpd underneath, one handler callback, JSON
 * bodies (jansson), the SPEC.md §5 error shape, bearer-token auth and a body size cap.
 *
 * Each connection is served by a thread of its own (at most max_connections of them), so a
 * handler may block for as long as its request takes without delaying another connection's;
 * at most max_active handlers run at once (the open paths, cheap and needed under load, do
 * not count), a request past that waiting in its own thread for a slot, so that a burst of
 * clients cannot run unbounded searches side by side. The handler runs with the whole
 * request body read, fills a response and returns. Requests whose
 * body exceeds max_body get 413 without reaching the handler; with an auth token set,
 * requests to paths not listed in open_paths need "Authorization: Bearer <token>" or get 401.
 */
#ifndef ST_HTTP_H
#define ST_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

struct st_http_req {
    const char *method;  /* "GET", "POST", "HEAD", ... */
    const char *path;    /* percent-decoded path, without the query string */
    const uint8_t *body; /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    void *conn_; /* private */
};

/* A request header (case-insensitive name) or query argument; NULL when absent. */
const char *st_http_header(const struct st_http_req *r, const char *name);
const char *st_http_query(const struct st_http_req *r, const char *key);

#define ST_HTTP_MAX_HEADERS 4

struct st_http_resp {
    int status;
    const char *content_type; /* static string */
    char *body;               /* malloc'd; freed by the server */
    size_t len;
    int fd;          /* >= 0: send fd_len bytes of this file instead of body (closed for you) */
    uint64_t fd_len; /* with fd */
    const char *hname[ST_HTTP_MAX_HEADERS];
    char hval[ST_HTTP_MAX_HEADERS][128];
    unsigned nh;
};

typedef void (*st_http_handler)(void *ctx, const struct st_http_req *req,
                                struct st_http_resp *resp);

struct st_http_opts {
    const char *listen;            /* "host:port", "[v6]:port"; port 0 picks a free one */
    size_t max_body;               /* 0: 16 MiB */
    const char *auth_token_file;   /* NULL: no auth */
    const char *const *open_paths; /* NULL-terminated paths served without auth (or NULL) */
    unsigned max_connections;      /* connections (a thread each) at most; a new one
                                    * past it is closed at once (0: 512) */
    unsigned idle_timeout_s;       /* a connection idle this long is closed (0: 30) */
    unsigned max_active;           /* handlers running at once, open paths aside (0: 4) */
    st_http_handler handler;
    void *ctx;
};

struct st_http;

/* Binds, listens and starts serving. Errors name the address and the reason. */
int st_http_start(const struct st_http_opts *o, struct st_http **out, struct st_err *err) ST_WUR;
/* The port actually bound (useful with port 0). */
uint16_t st_http_port(const struct st_http *h);
/* Stops accepting, waits for handlers in flight, frees. NULL is a no-op. */
void st_http_stop(struct st_http *h);

/* Sets a JSON body (steals the reference to j; NULL gives a 500). */
void st_http_json(struct st_http_resp *resp, int status, json_t *j);
/* Sets the error body {"error": {"code": code, "message": ...}} with status. */
void st_http_error(struct st_http_resp *resp, int status, const char *code, const char *fmt, ...)
    ST_PRINTF(4, 5);
/* Sets a text body (copied). */
void st_http_text(struct st_http_resp *resp, int status, const char *content_type, const char *text,
                  size_t len);
/* Adds a response header (value formatted, at most 127 bytes). */
void st_http_resp_header(struct st_http_resp *resp, const char *name, const char *fmt, ...)
    ST_PRINTF(3, 4);

/* Parses "host:port" / "[v6]:port" into host and port (host without brackets). */
int st_http_split_hostport(const char *s, char *host, size_t hcap, uint16_t *port) ST_WUR;

#endif
