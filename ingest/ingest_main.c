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
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "announce.h"
#include "cfg.h"
#include "consumer.h"
#include "dlq.h"
#include "ingest_http.h"
#include "ingest_layout.h"
#include "outbox_pub.h"
#include "st_clock.h"
#include "st_daemon.h"
#include "st_fault.h"
#include "st_http.h"
#include "st_log.h"
#include "store_fs.h"
#include "st_version.h"
#include "twcs.h"

static volatile sig_atomic_t stop_requested;

/* How long a clean stop waits for its goodbye to reach NATS. */
#define BYE_WAIT_MS 1000

/* ing_assignment_fn: hands the assignment to the announcer (ctx: where main keeps it). */
static void on_assignment(void *ctx, const struct ing_partition *parts, size_t n)
{
    struct ingest_announce *a = *(struct ingest_announce *const *)ctx;
    if (a != NULL) /* started before the first poll, so before the first assignment */
        ingest_announce_partitions(a, parts, n);
}

/* The announcer of this node (announce.h): its URL, collections and topics. */
static int start_announcer(const struct cfg *cfg, const char *url, int64_t started_ms,
                           struct ingest_announce **out, struct st_err *err)
{
    size_t nc = cfg->n_collections, nt = 0;
    const char **names = calloc(nc ? nc : 1, sizeof(*names));
    const char **topics = calloc(nc ? nc : 1, sizeof(*topics));
    int rc = ST_ENOMEM;
    if (names != NULL && topics != NULL) {
        for (size_t i = 0; i < nc; i++) {
            names[i] = cfg->collections[i].name;
            size_t j = 0;
            while (j < nt && strcmp(topics[j], cfg->collections[i].topic) != 0)
                j++;
            if (j == nt)
                topics[nt++] = cfg->collections[i].topic;
        }
        struct ingest_announce_opts ao = {.nats_url = cfg->nats.url,
                                          .node_id = cfg->node_id,
                                          .url = url,
                                          .collections = names,
                                          .n_collections = nc,
                                          .topics = topics,
                                          .n_topics = nt,
                                          .interval_ms = cfg->ingest.announce_interval_ms,
                                          .started_ms = started_ms};
        rc = ingest_announce_start(&ao, out, err);
    } else {
        st_err_set(err, rc, "out of memory");
    }
    free(names);
    free(topics);
    return rc;
}

struct coll_rt {
    struct twcs *twcs;
    struct outbox_pub *pub;
    char *dir; /* the store */
};

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
    size_t nc = cfg->n_collections;
    struct coll_rt *rt = calloc(nc, sizeof(*rt));
    struct ing_collection *ic = calloc(nc, sizeof(*ic));
    const char *(*props)[2] = calloc(cfg->kafka.n_properties + 1, sizeof(*props));
    struct ingest_http_coll *hc = calloc(nc, sizeof(*hc));
    struct dlq *dlq = NULL;
    struct ing_consumer *cons = NULL;
    struct ingest_http *http = NULL;
    struct ingest_announce *ann = NULL;
    if (rt == NULL || ic == NULL || props == NULL || hc == NULL)
        goto out;
    for (size_t i = 0; i < cfg->kafka.n_properties; i++) {
        props[i][0] = cfg->kafka.properties[i].key;
        props[i][1] = cfg->kafka.properties[i].value;
    }
    int mrc = store_fs_mkdir(NULL, cfg->data_dir, "ingest.mkdir"); /* parent fsynced too */
    if (mrc != ST_OK) {
        st_log_error("ingest", "data_dir %s: %s", cfg->data_dir, st_strerror(mrc));
        goto out;
    }
    /* HTTP first: sealed events name segment URLs with the port actually bound. */
    struct ingest_http_opts ho = {.listen = cfg->ingest.listen,
                                  .max_body = cfg->http.max_body,
                                  .auth_token_file = cfg->http.auth_token_file,
                                  .node_id = cfg->node_id};
    if (ingest_http_start(&ho, &http, &err) != ST_OK)
        goto fail;
    char url[512]; /* ingest.advertise_url, or http:// + the address actually bound */
    if (cfg_ingest_advertise_url(cfg, ingest_http_port(http), url, sizeof(url)) != ST_OK) {
        st_err_set(&err, ST_ERANGE, "ingest.advertise_url: longer than %zu bytes", sizeof(url));
        goto fail;
    }
    for (size_t i = 0; i < nc; i++) {
        const struct cfg_collection *cc = &cfg->collections[i];
        /* SPEC.md §6: <data_dir>/ingest/<name>, or where a pre-rule data_dir keeps it. */
        if (ingest_layout_store_dir(cfg->data_dir, cc->name, &rt[i].dir, NULL, &err) != ST_OK)
            goto fail;
        char seg_base[700];
        snprintf(seg_base, sizeof(seg_base), "%s/v1/segments/%s", url, cc->name);
        struct outbox_pub_opts po = {.url = cfg->nats.url,
                                     .stream = cfg->nats.stream,
                                     .node_id = cfg->node_id,
                                     .collection = cc->name,
                                     .segment_base = seg_base};
        if (outbox_pub_start(&po, &rt[i].pub, &err) != ST_OK)
            goto fail;
        struct twcs_opts to = {
            .store = {.dir = rt[i].dir,
                      .dim = cc->dim,
                      .wal_sync = cfg->store.wal_sync == CFG_WAL_SYNC_ALWAYS  ? STORE_SYNC_ALWAYS
                                  : cfg->store.wal_sync == CFG_WAL_SYNC_BATCH ? STORE_SYNC_BATCH
                                                                              : STORE_SYNC_NONE,
                      .wal_sync_interval_ms = cfg->store.wal_sync_interval_ms,
                      .memtable_size = cfg->store.memtable_size},
            .window_ms = cc->window_ms,
            .grace_ms = cc->grace_ms,
            .max_lateness_ms = cc->max_lateness_ms,
            .max_future_ms = cc->max_future_ms,
            .ttl_ms = cc->ttl_ms,
            .max_bytes = cc->max_bytes,
            .tick_ms = 1000,
            .on_event = outbox_pub_event,
            .ctx = rt[i].pub,
        };
        if (twcs_open(&to, &rt[i].twcs, &err) != ST_OK)
            goto fail;
        outbox_pub_attach(rt[i].pub, rt[i].twcs);
        hc[i] = (struct ingest_http_coll){cc, rt[i].twcs, rt[i].pub};
        ic[i] = (struct ing_collection){.rc = {cc->name, cc->dim, cc->id_type == CFG_ID_UINT64},
                                        .topic = cc->topic,
                                        .dead_letter_topic = cc->dead_letter_topic,
                                        .twcs = rt[i].twcs,
                                        .cosine = cc->metric == CFG_METRIC_COSINE};
    }
    struct dlq_opts dopt = {.brokers = cfg->kafka.brokers,
                            .properties = (const char *const(*)[2])props,
                            .n_properties = cfg->kafka.n_properties};
    if (dlq_open(&dopt, &dlq, &err) != ST_OK)
        goto fail;
    struct ing_consumer_opts co = {.brokers = cfg->kafka.brokers,
                                   .group_id = cfg->kafka.group_id,
                                   .properties = (const char *const(*)[2])props,
                                   .n_properties = cfg->kafka.n_properties,
                                   .colls = ic,
                                   .n_colls = nc,
                                   .dlq = dlq,
                                   .dead_letter_topic = cfg->kafka.dead_letter_topic,
                                   .on_assignment = on_assignment,
                                   .assignment_ctx = &ann};
    if (ing_consumer_open(&co, &cons, &err) != ST_OK)
        goto fail;
    ingest_http_ready(http, hc, nc, cons);
    /* Announced once it serves (SPEC.md §7): an indexer may ask for fresh data at once. */
    if (start_announcer(cfg, url, started_ms, &ann, &err) != ST_OK)
        goto fail;
    st_log_notice("ingest", "%s: consuming %zu collection(s) in group %s; HTTP on port %u",
                  cfg->node_id, nc, cfg->kafka.group_id, ingest_http_port(http));
    char status[128];
    snprintf(status, sizeof(status), "consuming %zu collection(s)", nc);
    struct st_daemon_notify sn;
    st_daemon_notify_ready(&sn, status);
    while (!stop_requested) {
        if (ing_consumer_poll(cons, 100, &err) != ST_OK)
            goto fail;
        if (st_daemon_notify_tick(&sn)) {
            struct ing_stats st;
            ing_consumer_stats(cons, &st);
            snprintf(status, sizeof(status),
                     "%" PRIu64 " records, %" PRIu64 " rejected, %" PRIu64 " commits", st.records,
                     st.rejected, st.commits);
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
    /* A clean stop says goodbye first (indexers stop asking this node for fresh data before
     * its HTTP goes); a failure does not: indexers find out from its silence. */
    ingest_announce_stop(ann, exit_code == 0, BYE_WAIT_MS);
    ingest_http_stop(http); /* no reads while the stores close */
    if (ing_consumer_close(cons) != ST_OK)
        exit_code = 1;
    /* Per collection: the publisher stops calling twcs, twcs stops handing it events (its
     * timer thread seals and expires until twcs_close), then the publisher goes, once nats.c
     * can no longer call into it. */
    for (size_t i = 0; rt != NULL && i < nc; i++) {
        if (rt[i].pub != NULL)
            outbox_pub_attach(rt[i].pub, NULL);
        if (rt[i].twcs != NULL && twcs_close(rt[i].twcs) != ST_OK)
            exit_code = 1;
        outbox_pub_stop(rt[i].pub);
        free(rt[i].dir);
    }
    dlq_close(dlq);
    ingest_announce_free(ann); /* after the consumer: its last revoke calls the hook */
    free(rt);
    free(ic);
    free(hc);
    free(props);
    cfg_free(cfg);
    return exit_code;
}
