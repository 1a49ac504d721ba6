/*
 * Kafka -> durable throughput of the ingest consumer next to a do-nothing consumer of the same
 * topic, in one run against one real broker (issue 5).
 *
 *   bench_ingest --brokers HOST:PORT [--records 100000] [--dim 768] [--per-msg 100]
 *                [--partitions 4] [--dir /tmp] [--rounds 2] [--json]
 *
 * Produces the records once as binary frames (--json: as JSON, whose decoding costs far more
 * CPU), then alternates, `rounds` times each: a
 * librdkafka consumer in a fresh group that only polls and frees every message until it has
 * seen them all (the ceiling: fetch + deliver), and strata's consumer in a fresh group into a
 * fresh store (decode, WAL, memtable, group-commit fsync, offset commit) until every record is
 * handled and the last commit round is done. Prints records/s, MB/s of vector payload, and
 * the ratio of the best rounds.
 */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consumer.h"
#include "dlq.h"
#include "rec_format.h"
#include "st_clock.h"
#include "st_log.h"
#include "twcs.h"

static double now_s(void)
{
    return (double)st_clock_mono_ns(NULL) / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_ingest: %s: %s\n", what, why);
    exit(1);
}

/* The records as one JSON message (SPEC.md §4.1; floats printed with 9 significant digits,
 * enough to read back the same float). Caller frees *out. */
static void json_encode(const struct rec_record *r, uint32_t n, uint32_t dim, uint8_t **out,
                        size_t *out_len)
{
    size_t cap = 64 + (size_t)n * (96 + (size_t)dim * 18), len = 0;
    char *j = malloc(cap);
    if (j == NULL)
        die("json", "out of memory");
    len += (size_t)snprintf(j + len, cap - len, "{\"collection\": \"docs\", \"records\": [");
    for (uint32_t i = 0; i < n; i++) {
        len += (size_t)snprintf(j + len, cap - len,
                                "%s{\"id\": \"%.*s\", \"ts\": %" PRId64 ", \"vector\": [",
                                i ? ", " : "", (int)r[i].id_len, (const char *)r[i].id, r[i].ts);
        for (uint32_t d = 0; d < dim; d++)
            len +=
                (size_t)snprintf(j + len, cap - len, "%s%.9g", d ? "," : "", (double)r[i].vec[d]);
        len += (size_t)snprintf(j + len, cap - len, "]}");
    }
    len += (size_t)snprintf(j + len, cap - len, "]}");
    *out = (uint8_t *)j;
    *out_len = len;
}

static void produce_all(const char *brokers, const char *topic, int parts, uint32_t dim,
                        uint32_t records, uint32_t per_msg, bool json)
{
    char es[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, es, sizeof(es));
    rd_kafka_conf_set(c, "linger.ms", "20", es, sizeof(es));
    rd_kafka_conf_set(c, "message.max.bytes", "10000000", es, sizeof(es));
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof(es));
    if (p == NULL)
        die("producer", es);
    float *v = malloc((size_t)per_msg * dim * sizeof(float));
    struct rec_record *r = calloc(per_msg, sizeof(*r));
    char(*ids)[24] = calloc(per_msg, sizeof(*ids));
    int64_t t0 = st_clock_wall_ms(NULL) - 60000;
    uint64_t seed = 1;
    for (uint32_t base = 0; base < records; base += per_msg) {
        uint32_t n = records - base < per_msg ? records - base : per_msg;
        for (uint32_t i = 0; i < n; i++) {
            snprintf(ids[i], sizeof(ids[i]), "doc-%u", base + i);
            for (uint32_t j = 0; j < dim; j++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                v[(size_t)i * dim + j] = (float)(seed >> 40) / (float)(1 << 24) - 0.5f;
            }
            r[i] = (struct rec_record){(const uint8_t *)ids[i],
                                       (uint32_t)strlen(ids[i]),
                                       t0 + base + i,
                                       REC_UPSERT,
                                       v + (size_t)i * dim,
                                       NULL,
                                       0};
        }
        uint8_t *f;
        size_t len;
        if (json)
            json_encode(r, n, dim, &f, &len);
        else if (rec_frame_encode("docs", dim, false, r, n, &f, &len) != ST_OK)
            die("encode", "frame");
        while (
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                              RD_KAFKA_V_PARTITION((int32_t)((base / per_msg) % (uint32_t)parts)),
                              RD_KAFKA_V_VALUE(f, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                              RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 50);
        rd_kafka_poll(p, 0);
    }
    if (rd_kafka_flush(p, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("produce", "flush timed out");
    rd_kafka_destroy(p);
    free(v);
    free(r);
    free(ids);
}

/* Seconds for a consumer that does nothing to receive `msgs` messages. */
static double do_nothing(const char *brokers, const char *topic, const char *group, uint32_t msgs)
{
    char es[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, es, sizeof(es));
    rd_kafka_conf_set(c, "group.id", group, es, sizeof(es));
    rd_kafka_conf_set(c, "auto.offset.reset", "earliest", es, sizeof(es));
    rd_kafka_conf_set(c, "enable.auto.commit", "false", es, sizeof(es));
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, c, es, sizeof(es));
    rd_kafka_poll_set_consumer(k);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(k, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    uint32_t got = 0;
    double t0 = 0;
    while (got < msgs) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k, 100);
        if (m == NULL)
            continue;
        if (!m->err && got++ == 0)
            t0 = now_s(); /* from the first message: group join is not throughput */
        rd_kafka_message_destroy(m);
    }
    double t = now_s() - t0;
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    return t;
}

static double cpu_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* What one strata round cost besides its wall time. */
struct strata_cost {
    double user_s, sys_s;         /* CPU of the whole process (all threads) during the round */
    uint64_t messages, wal_syncs; /* fsyncs per message = wal_syncs / messages */
    uint64_t retries;             /* back-pressure pauses (ST_EAGAIN) */
};

static double strata(const char *brokers, const char *topic, const char *group, const char *dir,
                     uint32_t dim, uint32_t records, struct strata_cost *cost)
{
    struct st_err err = {0};
    struct twcs_opts to = {.store = {.dir = dir, .dim = dim, .wal_sync = STORE_SYNC_BATCH},
                           .window_ms = 3600000,
                           .grace_ms = 60000,
                           .max_lateness_ms = 3600000};
    struct twcs *t;
    if (twcs_open(&to, &t, &err) != ST_OK)
        die("twcs", err.msg);
    struct dlq *d;
    struct dlq_opts dopt = {.brokers = brokers};
    if (dlq_open(&dopt, &d, &err) != ST_OK)
        die("dlq", err.msg);
    struct ing_collection coll = {.rc = {"docs", dim, false}, .topic = topic, .twcs = t};
    static const char *const props[][2] = {{"message.max.bytes", "10000000"}};
    struct ing_consumer_opts o = {.brokers = brokers,
                                  .group_id = group,
                                  .properties = props,
                                  .n_properties = 1,
                                  .colls = &coll,
                                  .n_colls = 1,
                                  .dlq = d,
                                  .dead_letter_topic = "bench-dlq"};
    struct ing_consumer *c;
    if (ing_consumer_open(&o, &c, &err) != ST_OK)
        die("consumer", err.msg);
    struct ing_stats st = {0};
    double t0 = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    while (st.records < records) {
        if (ing_consumer_poll(c, 100, &err) != ST_OK)
            die("poll", err.msg);
        ing_consumer_stats(c, &st);
        if (t0 == 0 && st.messages > 0)
            t0 = now_s();
    }
    if (ing_consumer_commit(c, &err) != ST_OK) /* durable and committed */
        die("commit", err.msg);
    double secs = now_s() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    struct store_stats ss;
    store_stats(twcs_store(t), &ss);
    ing_consumer_stats(c, &st);
    *cost = (struct strata_cost){cpu_s(&ru1.ru_utime) - cpu_s(&ru0.ru_utime),
                                 cpu_s(&ru1.ru_stime) - cpu_s(&ru0.ru_stime), st.messages,
                                 ss.wal_syncs, st.retries};
    ing_consumer_close(c);
    dlq_close(d);
    twcs_close(t);
    return secs;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *dir = "/tmp";
    uint32_t records = 100000, dim = 768, per_msg = 100, rounds = 2;
    bool json = false;
    int parts = 4;
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            i--;
            continue;
        }
        if (i + 1 >= argc)
            die("usage", argv[i]);
        if (strcmp(argv[i], "--brokers") == 0)
            brokers = argv[i + 1];
        else if (strcmp(argv[i], "--records") == 0)
            records = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dim") == 0)
            dim = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--per-msg") == 0)
            per_msg = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--partitions") == 0)
            parts = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = (uint32_t)atoi(argv[i + 1]);
        else
            die("usage", argv[i]);
    }
    if (brokers == NULL)
        die("usage", "--brokers HOST:PORT (scripts/brokers start DIR writes DIR/env)");
    st_log_set_level(ST_LOG_WARNING);
    char topic[64];
    snprintf(topic, sizeof(topic), "bench-ingest-%d", (int)getpid());
    /* Auto-created with the broker's default partitions; ask for ours via the admin API. */
    {
        char es[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        rd_kafka_conf_set(c, "bootstrap.servers", brokers, es, sizeof(es));
        rd_kafka_t *a = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof(es));
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, parts, 1, es, sizeof(es));
        rd_kafka_NewTopic_set_config(nt, "max.message.bytes", "10000000");
        rd_kafka_queue_t *q = rd_kafka_queue_new(a);
        rd_kafka_CreateTopics(a, &nt, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        if (ev == NULL)
            die("create topic", "timed out");
        rd_kafka_event_destroy(ev);
        rd_kafka_NewTopic_destroy(nt);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(a);
    }
    uint32_t msgs = (records + per_msg - 1) / per_msg;
    double mb = (double)records * dim * 4 / 1e6;
    printf("Kafka -> durable: %u records x %u dims (%.0f MB of vectors) in %u %s of %u, "
           "%d partitions, wal_sync=batch\n",
           records, dim, mb, msgs, json ? "JSON messages" : "frames", per_msg, parts);
    double t = now_s();
    produce_all(brokers, topic, parts, dim, records, per_msg, json);
    printf("produced in %.1f s\n", now_s() - t);
    double best_n = 1e30, best_s = 1e30;
    for (uint32_t r = 0; r < rounds; r++) {
        char group[96], sdir[512];
        snprintf(group, sizeof(group), "bench-nop-%d-%u", (int)getpid(), r);
        double tn = do_nothing(brokers, topic, group, msgs);
        snprintf(group, sizeof(group), "bench-strata-%d-%u", (int)getpid(), r);
        snprintf(sdir, sizeof(sdir), "%s/bench-ingest-%d-%u", dir, (int)getpid(), r);
        struct strata_cost cost;
        double ts = strata(brokers, topic, group, sdir, dim, records, &cost);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", sdir);
        printf("round %u: do-nothing %8.0f rec/s %7.1f MB/s | strata %8.0f rec/s %7.1f MB/s "
               "(durable + committed) | ratio %.2f\n",
               r + 1, records / tn, mb / tn, records / ts, mb / ts, tn / ts);
        printf("         strata CPU user %.2f s sys %.2f s (%.2f CPU-s/GB) | %" PRIu64
               " WAL fsyncs for %" PRIu64 " messages (%.3f per message) | %" PRIu64
               " back-pressure pauses\n",
               cost.user_s, cost.sys_s, (cost.user_s + cost.sys_s) / (mb / 1000), cost.wal_syncs,
               cost.messages, cost.messages ? (double)cost.wal_syncs / (double)cost.messages : 0.0,
               cost.retries);
        best_n = tn < best_n ? tn : best_n;
        best_s = ts < best_s ? ts : best_s;
        fflush(stdout);
    }
    printf("best: do-nothing %.0f rec/s, strata %.0f rec/s, ratio %.2f\n", records / best_n,
           records / best_s, best_n / best_s);
    return 0;
}
