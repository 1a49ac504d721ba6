/*
 * strata-indexer — the indexer daemon (SPEC.md §2): consumes sealed/expired window events from
 * JetStream, builds and persists indexes, hot-swaps them, serves search over HTTP. Every
 * indexer is a full replica.
 *
 *   strata-indexer --config FILE        run (systemd Type=notify: READY, STATUS, WATCHDOG)
 *   strata-indexer --config FILE --check-config
 *
 * It shares the YAML and data_dir with a strata-ingest on the same host and keeps its files
 * under <data_dir>/indexer/. SIGTERM/SIGINT: stop consuming, abandon builds in progress (their
 * events stay unacked and come back after a restart), exit 0 within shutdown_timeout.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "cfg.h"
#include "idx_client.h"
#include "idx_service.h"
#include "indexer_http.h"
#include "st_clock.h"
#include "st_daemon.h"
#include "st_log.h"
#include "store.h"
#include "store_fs.h"

static volatile sig_atomic_t stop_requested;

/* The bearer token the daemons share (http.auth_token_file's first line), for calls to ingest. */
static char *read_token(const char *path)
{
    if (path == NULL)
        return NULL;
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

int main(int argc, char **argv)
{
    const char *path;
    bool check;
    int rc0 = st_daemon_args(argc, argv, "strata-indexer",
                             "Builds and serves indexes of the sealed windows that ingest nodes\n"
                             "publish on NATS; serves search on indexer.listen (docs/http.md).\n",
                             &path, &check);
    if (rc0 >= 0)
        return rc0;
    if (check)
        return cfg_check_main(path, stdout, stderr);
    struct cfg *cfg;
    struct cfg_errors errs = {0};
    if (cfg_load(path, &cfg, &errs) != ST_OK) {
        cfg_errors_print(&errs, stderr);
        cfg_errors_clear(&errs);
        return 2;
    }
    st_log_set_level((enum st_log_level)cfg->log.level);
    st_daemon_arm_test_faults("indexer");
    if (strcmp(cfg->nats.url, "embedded") == 0) {
        fprintf(stderr,
                "%s: nats.url \"embedded\" is for `strata demo` (one process); strata-indexer "
                "needs a NATS server\n",
                path);
        cfg_free(cfg);
        return 2;
    }
    st_daemon_signals(&stop_requested);
    int exit_code = 1;
    struct st_err err = {0};
    struct indexer_http *http = NULL;
    struct idx_service *svc = NULL;
    char *dir = NULL, *token = read_token(cfg->http.auth_token_file);
    if (cfg->http.auth_token_file != NULL && token == NULL) {
        st_log_error("indexer", "%s: cannot read the auth token", cfg->http.auth_token_file);
        goto out;
    }
    if (idx_client_init() != ST_OK) {
        st_log_error("indexer", "libcurl did not initialise");
        goto out;
    }
    int mrc = store_fs_mkdir(NULL, cfg->data_dir, "indexer.mkdir");
    if (mrc != ST_OK || asprintf(&dir, "%s/indexer", cfg->data_dir) < 0) {
        st_log_error("indexer", "data_dir %s: %s", cfg->data_dir, st_strerror(mrc));
        goto out;
    }
    struct indexer_http_opts ho = {.listen = cfg->indexer.listen,
                                   .max_body = cfg->http.max_body,
                                   .auth_token_file = cfg->http.auth_token_file,
                                   .node_id = cfg->node_id};
    if (indexer_http_start(&ho, &http, &err) != ST_OK)
        goto fail;
    struct idx_service_opts so = {.cfg = cfg,
                                  .dir = dir,
                                  .token = token,
                                  .ingest_nodes = (const char *const *)cfg->indexer.ingest_nodes,
                                  .n_ingest_nodes = cfg->indexer.n_ingest_nodes};
    if (idx_service_start(&so, &svc, &err) != ST_OK)
        goto fail;
    indexer_http_ready(http, svc);
    st_log_notice("indexer", "%s: serving %zu collection(s); HTTP on port %u", cfg->node_id,
                  cfg->n_collections, indexer_http_port(http));
    char status[128];
    snprintf(status, sizeof(status), "serving %zu collection(s)", cfg->n_collections);
    struct st_daemon_notify sn;
    st_daemon_notify_ready(&sn, status);
    while (!stop_requested) {
        usleep(100 * 1000);
        if (st_daemon_notify_tick(&sn)) {
            snprintf(status, sizeof(status), "%" PRIu64 " index builds", idx_service_builds(svc));
            st_daemon_notify_status(status);
        }
    }
    st_log_notice("indexer", "stopping: abandoning builds in progress");
    st_daemon_stopping(cfg->shutdown_timeout_ms); /* SIGALRM ends a stuck stop */
    exit_code = 0;
    goto out;
fail:
    st_log_error("indexer", "%s", err.msg[0] ? err.msg : "failed");
    exit_code = 1;
out:
    indexer_http_stop(http); /* no searches while the service goes */
    idx_service_stop(svc);
    idx_client_cleanup();
    free(dir);
    free(token);
    cfg_free(cfg);
    return exit_code;
}
