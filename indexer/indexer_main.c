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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "indexer_node.h"
#include "st_daemon.h"
#include "st_log.h"

static volatile sig_atomic_t stop_requested;

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
    struct indexer_node *node = NULL;
    if (indexer_node_start(cfg, &node, &err) != ST_OK) {
        st_log_error("indexer", "%s", err.msg[0] ? err.msg : "failed");
        goto out;
    }
    st_log_notice("indexer", "%s: serving %zu collection(s); HTTP on port %u", cfg->node_id,
                  cfg->n_collections, indexer_node_port(node));
    char status[128];
    snprintf(status, sizeof(status), "serving %zu collection(s)", cfg->n_collections);
    struct st_daemon_notify sn;
    st_daemon_notify_ready(&sn, status);
    while (!stop_requested) {
        usleep(100 * 1000);
        if (st_daemon_notify_tick(&sn)) {
            indexer_node_status(node, status, sizeof(status));
            st_daemon_notify_status(status);
        }
    }
    st_log_notice("indexer", "stopping: abandoning builds in progress");
    st_daemon_stopping(cfg->shutdown_timeout_ms); /* SIGALRM ends a stuck stop */
    exit_code = 0;
out:
    indexer_node_stop(node);
    cfg_free(cfg);
    return exit_code;
}
