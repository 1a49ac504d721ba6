/*
 * indexer_node.c — one indexer node: HTTP and the service (indexer_node.h).
 */
#include "indexer_node.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_client.h"
#include "idx_service.h"
#include "indexer_http.h"
#include "st_log.h"
#include "store_fs.h"

struct indexer_node {
    struct indexer_http *http;
    struct idx_service *svc;
    char *dir, *token;
    bool curl;
};

/* The bearer token the daemons share (http.auth_token_file's first line), for calls to ingest. */
static char *read_token(const char *path)
{
    uint8_t *buf;
    size_t len;
    if (store_fs_read_all(path, &buf, &len, 64 * 1024) != ST_OK)
        return NULL;
    size_t n = 0;
    while (n < len && buf[n] != '\n' && buf[n] != '\r')
        n++;
    buf[n] = '\0';
    return (char *)buf;
}

int indexer_node_start(const struct cfg *cfg, struct indexer_node **out, struct st_err *err)
{
    *out = NULL;
    struct indexer_node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return st_err_set(err, ST_ENOMEM, "out of memory");
    int rc;
    if (cfg->http.auth_token_file != NULL &&
        (n->token = read_token(cfg->http.auth_token_file)) == NULL) {
        rc = st_err_set(err, ST_EIO, "%s: cannot read the auth token", cfg->http.auth_token_file);
        goto fail;
    }
    if ((rc = idx_client_init()) != ST_OK) {
        st_err_set(err, rc, "libcurl did not initialise");
        goto fail;
    }
    n->curl = true;
    rc = store_fs_mkdir(NULL, cfg->data_dir, "indexer.mkdir");
    if (rc != ST_OK || asprintf(&n->dir, "%s/indexer", cfg->data_dir) < 0) {
        n->dir = NULL;
        rc = st_err_set(err, rc != ST_OK ? rc : ST_ENOMEM, "data_dir %s: %s", cfg->data_dir,
                        st_strerror(rc != ST_OK ? rc : ST_ENOMEM));
        goto fail;
    }
    struct indexer_http_opts ho = {.listen = cfg->indexer.listen,
                                   .max_body = cfg->http.max_body,
                                   .auth_token_file = cfg->http.auth_token_file,
                                   .node_id = cfg->node_id};
    if ((rc = indexer_http_start(&ho, &n->http, err)) != ST_OK)
        goto fail;
    struct idx_service_opts so = {.cfg = cfg,
                                  .dir = n->dir,
                                  .token = n->token,
                                  .ingest_nodes = (const char *const *)cfg->indexer.ingest_nodes,
                                  .n_ingest_nodes = cfg->indexer.n_ingest_nodes};
    if ((rc = idx_service_start(&so, &n->svc, err)) != ST_OK)
        goto fail;
    indexer_http_ready(n->http, n->svc);
    *out = n;
    return ST_OK;
fail:
    indexer_node_stop(n);
    return rc != ST_OK ? rc : ST_EIO;
}

unsigned indexer_node_port(const struct indexer_node *n)
{
    return indexer_http_port(n->http);
}

struct idx_service *indexer_node_service(struct indexer_node *n)
{
    return n->svc;
}

void indexer_node_status(struct indexer_node *n, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRIu64 " index builds", idx_service_builds(n->svc));
}

void indexer_node_stop(struct indexer_node *n)
{
    if (n == NULL)
        return;
    indexer_http_stop(n->http); /* no searches while the service goes */
    idx_service_stop(n->svc);
    if (n->curl)
        idx_client_cleanup();
    free(n->dir);
    free(n->token);
    free(n);
}
