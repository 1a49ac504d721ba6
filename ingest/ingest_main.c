/*
 * strata-ingest — the ingest daemon (SPEC.md §2): one Kafka consumer-group member writing
 * every configured collection's windows, publishing sealed/expired windows on NATS.
 *
 *   strata-ingest --config FILE        run (systemd Type=notify: READY, STATUS, WATCHDOG)
 *   strata-ingest --config FILE --check-config
 *
 * It announces itself on NATS (strata.nodes.<node_id>, announce.h) once it serves, at every
 * change of its partition assignment and every ingest.announce_interval.
 *
 * SIGTERM/SIGINT: say goodbye on NATS, stop polling, commit what is durable, leave the group,
 * publish nothing half-way (unpublished events stay in the outbox), exit 0 — within
 * shutdown_timeout, or exit 1 if that passes.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "ingest_node.h"
#include "st_clock.h"
#include "st_daemon.h"
#include "st_log.h"

static volatile sig_atomic_t stop_requested;

int main(int argc, char **argv)
{
    const char *path;
    bool check;
    int rc0 = st_daemon_args(argc, argv, "strata-ingest",
                             "Consumes the configured Kafka topics into time-windowed stores, "
                             "publishes\nsealed windows on NATS and serves HTTP on ingest.listen "
                             "(docs/http.md).\n",
                             &path, &check);
    if (rc0 >= 0)
        return rc0;
    if (check)
        return cfg_check_main(path, stdout, stderr);
    int64_t started_ms = st_clock_wall_ms(NULL); /* announced: tells restarts apart */
    struct cfg *cfg;
    struct cfg_errors errs = {0};
    if (cfg_load(path, &cfg, &errs) != ST_OK) {
        cfg_errors_print(&errs, stderr);
        cfg_errors_clear(&errs);
        return 2;
    }
    st_log_set_level((enum st_log_level)cfg->log.level);
    st_daemon_arm_test_faults("ingest");
    if (strcmp(cfg->kafka.brokers, "embedded") == 0 || strcmp(cfg->nats.url, "embedded") == 0) {
        fprintf(stderr,
                "%s: kafka.brokers / nats.url \"embedded\" is for `strata demo` (one "
                "process); strata-ingest needs real brokers\n",
                path);
        cfg_free(cfg);
        return 2;
    }
    st_daemon_signals(&stop_requested);

    int exit_code = 1;
    struct st_err err = {0};
    struct ingest_node *node = NULL;
    if (ingest_node_start(cfg, started_ms, &node, &err) != ST_OK)
        goto fail;
    st_log_notice("ingest", "%s: consuming %zu collection(s) in group %s; HTTP on port %u",
                  cfg->node_id, cfg->n_collections, cfg->kafka.group_id, ingest_node_port(node));
    char status[128];
    snprintf(status, sizeof(status), "consuming %zu collection(s)", cfg->n_collections);
    struct st_daemon_notify sn;
    st_daemon_notify_ready(&sn, status);
    while (!stop_requested) {
        if (ingest_node_poll(node, 100, &err) != ST_OK)
            goto fail;
        if (st_daemon_notify_tick(&sn)) {
            ingest_node_status(node, status, sizeof(status));
            st_daemon_notify_status(status);
        }
    }
    st_log_notice("ingest", "stopping: committing and leaving the group");
    st_daemon_stopping(cfg->shutdown_timeout_ms); /* SIGALRM ends a stuck stop */
    exit_code = 0;
    goto out;
fail:
    st_log_error("ingest", "%s", err.msg[0] ? err.msg : "failed");
    exit_code = 1;
out:
    if (ingest_node_stop(node, exit_code == 0) != ST_OK)
        exit_code = 1;
    cfg_free(cfg);
    return exit_code;
}
