/*
 * st_http_test.h — one HTTP request from a test (libcurl): what the daemon tests ask of
 * strata's HTTP API.
 */
#ifndef ST_HTTP_TEST_H
#define ST_HTTP_TEST_H

#include <stddef.h>

struct st_test_resp {
    long status; /* 0 when no answer came */
    char *body;  /* never NULL (caller frees) */
    size_t len;
    char ctype[128];   /* Content-Type */
    char checksum[64]; /* X-Strata-Checksum */
};

/* GET url (body NULL) or POST body as JSON, with a bearer token unless NULL; 60 s at most. */
struct st_test_resp st_test_http(const char *url, const char *token, const char *body);
/* The same on http://127.0.0.1:port + path. */
struct st_test_resp st_test_http_port(unsigned port, const char *path, const char *token,
                                      const char *body);

/* A Prometheus sample's value in text ("name{labels} value" at the start of a line), -1 when
 * absent. */
double st_test_metric(const char *text, const char *series);
/* The same from GET url (the scrape's /metrics URL), -1 also when nothing answered. */
double st_test_metric_at(const char *url, const char *series);
/* The same from http://127.0.0.1:port/metrics. */
double st_test_metric_port(unsigned port, const char *series);

/*
 * Walks every route of a daemon serving collection coll on port with token set: each /v1
 * route of SPEC.md §5 (plus the daemon's own `extra` paths, NULL-terminated, GET) answers 401
 * with a JSON error without a token and with a wrong one, and something else with the right
 * one; the probes and the status page answer without a token.
 */
void st_test_http_auth_walk(unsigned port, const char *coll, const char *token,
                            const char *const *extra);

#endif
