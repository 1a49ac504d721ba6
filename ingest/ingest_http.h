/*
 * ingest_http.h — strata-ingest's HTTP side on `ingest.listen` (SPEC.md §5, §8).
 *
 *   GET  /healthz, /readyz, /metrics            (no auth: probes and scrapers)
 *   GET  /v1/collections[/{name}[/windows]]     config and stats
 *   GET  /v1/collections/{name}/records/{id}    the newest version, or 404
 *   POST /v1/collections/{name}/search          exact scan of this node's data (fresh +
 *        not-yet-indexed): an indexer lists the sealed window versions it searched by index
 *        in "indexed": [{"start": ms, "version": n}] and merges the answer with its own
 *   GET|HEAD /v1/segments/{name}/{NNNNNN}.seg   a live sealed segment file for indexers on
 *        other hosts, with X-Strata-Checksum (the footer checksum named in the sealed event)
 *
 * The server starts first (so the daemon knows its port for segment URLs) and answers 503
 * on /readyz and /v1 until ingest_http_ready() hands it the collections and the consumer.
 */
#ifndef INGEST_HTTP_H
#define INGEST_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "consumer.h"
#include "outbox_pub.h"
#include "st_error.h"
#include "twcs.h"

struct ingest_http_coll {
    const struct cfg_collection *cfg;
    struct twcs *twcs;
    struct outbox_pub *pub;
};

struct ingest_http_opts {
    const char *listen; /* host:port (port 0: any free port) */
    size_t max_body;
    const char *auth_token_file; /* NULL: no auth */
    const char *node_id;
};

struct ingest_http;

int ingest_http_start(const struct ingest_http_opts *o, struct ingest_http **out,
                      struct st_err *err) ST_WUR;
uint16_t ingest_http_port(const struct ingest_http *h);
/* Serves colls (same order as the consumer's collections) from now on; borrowed until stop. */
int ingest_http_ready(struct ingest_http *h, const struct ingest_http_coll *colls, size_t n,
                      struct ing_consumer *c) ST_WUR;
void ingest_http_stop(struct ingest_http *h);

#endif
