/*
 * indexer_http.h — strata-indexer's HTTP side on `indexer.listen` (SPEC.md §5, §8;
 * docs/http.md).
 *
 *   GET  /healthz, /readyz, /metrics              (no auth: probes and scrapers)
 *   GET  /v1/collections[/{name}[/windows]]       config, stats, windows (indexing / indexed)
 *   GET  /v1/collections/{name}/records/{id}      newest version (?consistency=indexed|strong)
 *   POST /v1/collections/{name}/search            SPEC.md §5 (idx_search.h)
 *
 * The server starts before the catalogs are loaded and answers 503 until indexer_http_ready.
 */
#ifndef INDEXER_HTTP_H
#define INDEXER_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "idx_service.h"
#include "st_error.h"

struct indexer_http_opts {
    const char *listen;
    size_t max_body;
    const char *auth_token_file;
    const char *node_id;
};

struct indexer_http;

int indexer_http_start(const struct indexer_http_opts *o, struct indexer_http **out,
                       struct st_err *err) ST_WUR;
uint16_t indexer_http_port(const struct indexer_http *h);
void indexer_http_ready(struct indexer_http *h, struct idx_service *svc);
void indexer_http_stop(struct indexer_http *h);

#endif
