/*
 * Kafka -> durable ingest, measured honestly (issue 14): strata's real consumer and TWCS, ticked
 * as the daemon ticks them, beside a do-nothing consumer of the same topic, the disk's own
 * sequential write + fdatasync of the same bytes in the same directory, and RocksDB storing the
 * same records durably, fed from the same topic. One run, one machine, one directory.
 *
 *   bench_ingest --brokers HOST:PORT [--dir /tmp] [--records 400000] [--json-records 20000]
 *                [--dims 768,384] [--formats binary,json] [--per-msg 100] [--partitions 4]
 *                [--windows 10] [--fifo-frac 0.5] [--rounds 1] [--warmup 1]
 *                [--systems nop,disk,disk-direct,strata,strata-buffered,strata-syncw,
 *                           strata-inline,strata-fifo,rocksdb]
 *
 * For every configuration (dim x format) the records are produced once with the producer
 * behind `strata produce` (produce_run: binary frames by rec_frame_encode, or SPEC §4.1 JSON
 * with 9 significant digits), event times spread evenly over `windows` one-minute windows in
 * order, and one closing record per partition a window later, so that the watermark passes
 * every data window and all of them seal. Then, each in its own process (so /proc/self/io,
 * getrusage and VmHWM are that system's alone):
 *   - nop:     a librdkafka consumer (fresh group) that polls and frees every message;
 *   - disk:    the vector payload's size written sequentially (1 MiB writes) + one fdatasync;
 *   - disk-direct: the same with O_DIRECT from an aligned buffer (no page-cache copy); the
 *              disk's ceiling in the ratios is the faster of the two;
 *   - strata:  ing_consumer + twcs opened as ingest_node.c opens them (wal_sync batch 5 ms,
 *              default memtable_size, tick_ms 1000: the timer thread seals and merges during
 *              the run); "durable" = every record handled and a final commit round done
 *              (fsync + offsets committed); "sealed" = every data window sealed, no merge running;
 *   - strata-syncw: the same with vlog_append_in_write (vector-log rows appended by the write on
 *              the polling thread, as before the store's writer thread), for comparison;
 *   - strata-buffered: the same with vlog_buffered (vector-log rows through the page cache, as
 *              before O_DIRECT), for comparison;
 *   - strata-inline: the same with inline_vectors (the layout before vector logs: every vector
 *              in the WAL, in a run and again in the sealed segment), for comparison;
 *   - strata-fifo: the same with a collection byte cap (max_bytes) of fifo-frac of the vector
 *              bytes, so that the oldest sealed windows are dropped during the run (0: not run);
 *   - rocksdb: (when built with RocksDB) a plain librdkafka consumer decoding with the same
 *              decoder, one WriteBatch per message (key id, value ts + vector + meta) written
 *              with WAL on and sync=true, offsets stored after the write and auto-committed
 *              every 200 ms, a final synchronous commit ("durable"); "sealed" = memtable
 *              flushed and no compaction pending or running.
 * Before them, --warmup (default 1) unreported do-nothing reads of the topic, so that no system
 * is timed on a broker whose JIT has not compiled its fetch path yet.
 * Times run from the first message received (group joins are not throughput). JSON decoding
 * is ~20x slower than frames, hence fewer JSON records by default (rates are per second).
 * Prints the details, then markdown tables for docs/benchmarks.md. BENCH_LOG_INFO=1 in the
 * environment shows the store's and twcs's info lines (flushes, seals, drops). A phase that makes
 * no progress for a minute fails with what it saw (per-partition lag for strata).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef STRATA_HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#include "consumer.h"
#include "dlq.h"
#include "produce.h"
#include "rec_format.h"
#include "st_clock.h"
#include "st_distance.h"
#include "st_log.h"
#include "twcs.h"

#define WINDOW_MS   60000
#define GRACE_MS    1000
#define SEAL_WAIT   300 /* seconds for the windows to seal after the last record */
#define STALL_S     60  /* seconds without a message before a consumer gives up */
#define PHASE_MAX_S 900 /* seconds before a phase is taken for hung and killed */
#define STR2(x)     #x
#define STR(x)      STR2(x)

static const char META[] = "{\"lang\":\"en\",\"src\":\"bench\"}";

struct opts {
    const char *brokers, *dir;
    uint32_t records, per_msg, windows, rounds;
    uint32_t warmup; /* unreported passes of the do-nothing consumer before the measured ones */
    uint32_t json_records;
    int parts;
    double fifo_frac;    /* the strata-fifo row's max_bytes, a fraction of the vector bytes */
    const char *systems; /* which rows to run, comma-separated */
};

/* One configuration: the topic and what is in it. */
struct conf {
    uint32_t dim;
    bool json;
    char topic[96];
    uint32_t data;    /* data records: --records, or --json-records for JSON */
    uint64_t records; /* data + closing records */
    uint64_t msgs;
    uint64_t vec_bytes;   /* records * dim * 4: the unit of every rate and ratio */
    uint64_t value_bytes; /* Kafka message values */
    int64_t t0;           /* event time of the first record (window-aligned) */
};

/* What one measured process reports back through a pipe. */
struct res {
    char err[256];
    double secs;        /* first message -> durable + committed */
    double secs_sealed; /* first message -> sealed (strata) / flushed + compacted (rocksdb) */
    uint64_t wbytes, wbytes_sealed; /* /proc/self/io write_bytes delta */
    uint64_t rbytes_sealed;         /* /proc/self/io read_bytes delta (fetched from the device) */
    double user, sys, user_sealed, sys_sealed;
    uint64_t hwm_kb;
    double busy_durable, busy; /* the device's busy fraction (any process's I/O) up to durable,
                                  and up to sealed */
    uint64_t records, retries, paused_ms, holds, held_ms;
    uint64_t rejected; /* messages to the dead-letter topic (FIFO: windows already dropped) */
    uint64_t sealed_at_durable, sealed, merges, dropped, tw_written, tw_ingested, compaction;
    uint64_t poll_ms[4]; /* strata: the polling thread in librdkafka, waiting for decode,
                            writing, committing (ing_stats) */
    uint64_t wait_ms[3]; /* strata, to the durable point: writes waiting on the vector-log queue,
                            on a WAL roll, on creating a window */
    double decode_s;     /* rocksdb consumer: seconds inside rec_decode */
    uint64_t value_bytes, msgs;
};

static double now_s(void)
{
    return (double)st_clock_mono_ns(NULL) / 1e9;
}

/* Records why a phase failed (the parent reports it). */
static void fail(struct res *r, const char *fmt, ...) ST_PRINTF(2, 3);
static void fail(struct res *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_ingest: %s: %s\n", what, why);
    exit(1);
}

/* ---- what the kernel says about this process -------------------------------------------- */

static uint64_t proc_field(const char *file, const char *key)
{
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return 0;
    char line[256];
    uint64_t v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, kl) == 0) {
            v = strtoull(line + kl, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The block device holding --dir (major, minor), for its busy time in /proc/diskstats. */
static unsigned g_dev_major, g_dev_minor;

/* Milliseconds the device has spent doing I/O since boot (io_ticks; all processes). */
static uint64_t disk_busy_ms(void)
{
    FILE *f = fopen("/proc/diskstats", "r");
    if (f == NULL)
        return 0;
    char line[512];
    uint64_t v = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned ma, mi;
        unsigned long long x[10];
        if (sscanf(line, "%u %u %*s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &ma, &mi,
                   &x[0], &x[1], &x[2], &x[3], &x[4], &x[5], &x[6], &x[7], &x[8], &x[9]) == 12 &&
            ma == g_dev_major && mi == g_dev_minor) {
            v = x[9];
            break;
        }
    }
    fclose(f);
    return v;
}

struct sample {
    double t, user, sys;
    uint64_t wbytes, rbytes, busy_ms;
};

static struct sample sample_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (struct sample){
        .t = now_s(),
        .user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
        .sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
        .wbytes = proc_field("/proc/self/io", "write_bytes:"),
        .rbytes = proc_field("/proc/self/io", "read_bytes:"),
        .busy_ms = disk_busy_ms(),
    };
}

/* Fills the durable (sealed == false) or sealed half of r from the samples a and b. */
static void sample_diff(struct res *r, const struct sample *a, const struct sample *b, bool sealed)
{
    if (sealed) {
        r->secs_sealed = b->t - a->t;
        r->wbytes_sealed = b->wbytes - a->wbytes;
        r->rbytes_sealed = b->rbytes - a->rbytes;
        r->user_sealed = b->user - a->user;
        r->sys_sealed = b->sys - a->sys;
        r->busy = b->t > a->t ? (double)(b->busy_ms - a->busy_ms) / 1000.0 / (b->t - a->t) : 0;
    } else {
        r->secs = b->t - a->t;
        r->wbytes = b->wbytes - a->wbytes;
        r->user = b->user - a->user;
        r->sys = b->sys - a->sys;
        r->busy_durable =
            b->t > a->t ? (double)(b->busy_ms - a->busy_ms) / 1000.0 / (b->t - a->t) : 0;
    }
    r->hwm_kb = proc_field("/proc/self/status", "VmHWM:");
}

/* ---- one measured process per system ------------------------------------------------------ */

typedef void (*phase_fn)(const struct opts *o, const struct conf *c, const char *tag,
                         struct res *r);

/* Runs fn in a child process (a fresh address space: its own RSS peak, I/O and CPU counters;
 * the parent starts no threads, so fork is safe) and returns what it reported. */
static struct res run_phase(phase_fn fn, const struct opts *o, const struct conf *c,
                            const char *tag)
{
    int fd[2];
    if (pipe(fd) != 0)
        die("pipe", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        alarm(PHASE_MAX_S); /* a phase that hangs is killed, and the parent says so */
        struct res r = {0};
        fn(o, c, tag, &r);
        ssize_t w = write(fd[1], &r, sizeof(r));
        _exit(w == (ssize_t)sizeof(r) ? 0 : 1);
    }
    close(fd[1]);
    struct res r = {0};
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = read(fd[0], (char *)&r + got, sizeof(r) - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    if (got != sizeof(r) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFSIGNALED(status))
            fprintf(
                stderr, "bench_ingest: the %s phase died of signal %d%s\n", tag, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (still running after " STR(PHASE_MAX_S) " s)" : "");
        else
            fprintf(stderr, "bench_ingest: the %s phase failed (exit status %d)\n", tag,
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        exit(1);
    }
    if (r.err[0] != '\0')
        die(tag, r.err);
    return r;
}

/* ---- topic and records ---------------------------------------------------------------------- */

static void admin_topic(const struct opts *o, const struct conf *c, bool create)
{
    char es[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", o->brokers, es, sizeof(es));
    rd_kafka_t *a = rd_kafka_new(RD_KAFKA_PRODUCER, kc, es, sizeof(es));
    if (a == NULL)
        die("admin", es);
    rd_kafka_queue_t *q = rd_kafka_queue_new(a);
    if (create) {
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(c->topic, o->parts, 1, es, sizeof(es));
        rd_kafka_NewTopic_set_config(nt, "max.message.bytes", "16000000");
        rd_kafka_CreateTopics(a, &nt, 1, NULL, q);
        rd_kafka_NewTopic_destroy(nt);
    } else {
        rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(c->topic);
        rd_kafka_DeleteTopics(a, &dt, 1, NULL, q);
        rd_kafka_DeleteTopic_destroy(dt);
    }
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (ev == NULL)
        die(create ? "create topic" : "delete topic", "timed out");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    /* A new topic: wait until every partition has a leader, so the first batches are not
     * sent while the broker still sets them up (see check_topic). */
    for (int tries = 0; create && tries < 300; tries++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(a, c->topic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        int ready = 0;
        if (rd_kafka_metadata(a, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            for (int i = 0; i < md->topics[0].partition_cnt; i++)
                ready += md->topics[0].partitions[i].leader >= 0 &&
                         md->topics[0].partitions[i].err == RD_KAFKA_RESP_ERR_NO_ERROR;
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
        if (ready == o->parts)
            break;
        usleep(100000);
    }
    rd_kafka_destroy(a);
}

/* Messages the broker holds in the topic (sum of high - low watermarks), -1 when unknown. */
static int64_t topic_messages(const struct opts *o, const struct conf *c)
{
    char es[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", o->brokers, es, sizeof(es));
    rd_kafka_t *a = rd_kafka_new(RD_KAFKA_PRODUCER, kc, es, sizeof(es));
    if (a == NULL)
        return -1;
    int64_t n = 0;
    for (int p = 0; p < o->parts && n >= 0; p++) {
        int64_t lo = -1, hi = -1;
        if (rd_kafka_query_watermark_offsets(a, c->topic, p, &lo, &hi, 10000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            n = -1;
        else
            n += hi - lo;
    }
    rd_kafka_destroy(a);
    return n;
}

struct src {
    const struct opts *o;
    const struct conf *c;
    uint32_t i;
    float *vec;
    char id[32];
};

/* produce_next_fn: the data records in event-time order, batches of per_msg round-robin over
 * the partitions, then one closing record per partition in the window after the data. */
static int src_next(void *ctx, struct produce_rec *out)
{
    struct src *s = ctx;
    const struct opts *o = s->o;
    uint32_t dim = s->c->dim, i = s->i;
    if (i >= s->c->data + (uint32_t)o->parts)
        return 0;
    s->i++;
    *out = (struct produce_rec){.id = s->id, .vec = s->vec, .dim = dim, .meta_json = META};
    if (i < s->c->data) {
        uint64_t seed = (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
        for (uint32_t j = 0; j < dim; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            s->vec[j] = (float)(seed >> 40) / (float)(1 << 24) - 0.5f;
        }
        snprintf(s->id, sizeof(s->id), "doc-%u", i);
        out->ts = s->c->t0 + (int64_t)((uint64_t)i * o->windows * WINDOW_MS / s->c->data);
        out->partition = (int32_t)((i / o->per_msg) % (uint32_t)o->parts);
    } else {
        snprintf(s->id, sizeof(s->id), "end-%u", i - s->c->data);
        out->ts = s->c->t0 + (int64_t)o->windows * WINDOW_MS + WINDOW_MS / 2;
        out->partition = (int32_t)(i - s->c->data);
    }
    return 1;
}

static void phase_produce(const struct opts *o, const struct conf *c, const char *tag,
                          struct res *r)
{
    (void)tag;
    admin_topic(o, c, true);
    struct src s = {.o = o, .c = c, .vec = malloc((size_t)c->dim * sizeof(float))};
    static const char *const props[] = {"message.max.bytes=16000000", "linger.ms=20", NULL};
    struct produce_opts po = {.brokers = o->brokers,
                              .topic = c->topic,
                              .format = c->json ? PRODUCE_JSON : PRODUCE_BINARY,
                              .batch = o->per_msg,
                              .props = props,
                              .flush_timeout_ms = 300000};
    struct produce_stats ps;
    struct st_err err = {0};
    double t = now_s();
    if (produce_run(&po, src_next, &s, &ps, &err) != ST_OK)
        fail(r, "produce: %s", err.msg);
    r->secs = now_s() - t;
    /* Seen with Debian's librdkafka 2.0.2 on a loaded machine: the idempotent producer
     * reported every message delivered while the broker's log lacked a partition's first
     * batch (its sequence numbers start at 3). Every system would then wait for records that
     * are not there; say so instead. */
    int64_t held = topic_messages(o, c);
    if (r->err[0] == '\0' && held != (int64_t)ps.messages)
        fail(r,
             "the broker holds %" PRId64 " of the %" PRIu64 " messages the producer reported "
             "delivered (librdkafka %s); run again",
             held, ps.messages, rd_kafka_version_str());
    r->records = ps.records;
    r->value_bytes = ps.bytes;
    r->msgs = ps.messages;
    free(s.vec);
}

static void phase_delete(const struct opts *o, const struct conf *c, const char *tag, struct res *r)
{
    (void)tag;
    (void)r;
    admin_topic(o, c, false);
}

static rd_kafka_t *plain_consumer(const struct opts *o, const char *group, bool auto_commit)
{
    char es[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", o->brokers, es, sizeof(es));
    rd_kafka_conf_set(kc, "group.id", group, es, sizeof(es));
    rd_kafka_conf_set(kc, "auto.offset.reset", "earliest", es, sizeof(es));
    rd_kafka_conf_set(kc, "enable.auto.commit", auto_commit ? "true" : "false", es, sizeof(es));
    rd_kafka_conf_set(kc, "auto.commit.interval.ms", "200", es, sizeof(es));
    rd_kafka_conf_set(kc, "enable.auto.offset.store", "false", es, sizeof(es));
    /* The prefetch strata's consumer uses (ing_consumer_prefetch_kb: librdkafka 2.0 pauses
     * fetching for a second once its queue holds this much), so no reference runs with less. */
    char prefetch[32];
    snprintf(prefetch, sizeof(prefetch), "%" PRIu64, ing_consumer_prefetch_kb());
    rd_kafka_conf_set(kc, "queued.max.messages.kbytes", prefetch, es, sizeof(es));
    rd_kafka_conf_set(kc, "queued.min.messages", "10000000", es, sizeof(es));
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, kc, es, sizeof(es));
    if (k == NULL)
        die("consumer", es);
    rd_kafka_poll_set_consumer(k);
    return k;
}

static void subscribe(rd_kafka_t *k, const char *topic)
{
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(k, sub);
    rd_kafka_topic_partition_list_destroy(sub);
}

/* ---- the do-nothing consumer ---------------------------------------------------------------- */

static void phase_nop(const struct opts *o, const struct conf *c, const char *tag, struct res *r)
{
    char group[160];
    snprintf(group, sizeof(group), "%s-%s", c->topic, tag);
    rd_kafka_t *k = plain_consumer(o, group, false);
    subscribe(k, c->topic);
    uint64_t got = 0;
    struct sample a = {0};
    double progress = now_s();
    while (got < c->msgs) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k, 100);
        if (m == NULL) {
            if (now_s() - progress > STALL_S) {
                fail(r, "no message for %d s: %" PRIu64 " of %" PRIu64, STALL_S, got, c->msgs);
                break;
            }
            continue;
        }
        progress = now_s();
        if (!m->err && got++ == 0)
            a = sample_now(); /* from the first message: the group join is not throughput */
        rd_kafka_message_destroy(m);
    }
    struct sample b = sample_now();
    sample_diff(r, &a, &b, false);
    sample_diff(r, &a, &b, true);
    r->records = c->records;
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
}

/* ---- the disk's ceiling -----------------------------------------------------------------------
 */

/* The vector bytes written sequentially in 1 MiB writes, then one fdatasync: through the page
 * cache, or (direct) with O_DIRECT from an aligned buffer, the device's rate without the
 * kernel's copy. The ceiling is the faster of the two. */
static void disk_run(const struct opts *o, const struct conf *c, const char *tag, bool direct,
                     struct res *r)
{
    char path[1100];
    snprintf(path, sizeof(path), "%.900s/seqwrite-%s-%d.bin", o->dir, tag, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
    if (fd < 0) {
        fail(r, "%s: %s", path, strerror(errno));
        return;
    }
    size_t chunk = 1u << 20;
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, chunk) != 0) {
        fail(r, "posix_memalign");
        close(fd);
        return;
    }
    char *buf = mem;
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)(i * 7);
    struct sample a = sample_now();
    for (uint64_t done = 0; done < c->vec_bytes; done += chunk) {
        size_t n = c->vec_bytes - done < chunk ? (size_t)(c->vec_bytes - done) : chunk;
        if (direct)
            n = chunk; /* whole aligned blocks: at most one chunk past the payload */
        if (write(fd, buf, n) != (ssize_t)n) {
            fail(r, "write: %s", strerror(errno));
            break;
        }
    }
    if (fdatasync(fd) != 0)
        fail(r, "fdatasync: %s", strerror(errno));
    struct sample b = sample_now();
    sample_diff(r, &a, &b, false);
    sample_diff(r, &a, &b, true);
    r->records = c->records;
    close(fd);
    unlink(path);
    free(buf);
}

static void phase_disk(const struct opts *o, const struct conf *c, const char *tag, struct res *r)
{
    disk_run(o, c, tag, false, r);
}

static void phase_disk_direct(const struct opts *o, const struct conf *c, const char *tag,
                              struct res *r)
{
    disk_run(o, c, tag, true, r);
}

/* ---- strata -----------------------------------------------------------------------------------
 */

/* Events the timer thread hands over; confirmed from the poll loop (as outbox_pub confirms
 * them after publishing). */
struct events {
    pthread_mutex_t mu;
    char **keys;
    size_t n, cap;
};

static void on_event(void *ctx, const struct twcs_event *ev)
{
    struct events *e = ctx;
    pthread_mutex_lock(&e->mu);
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        char **k = realloc(e->keys, cap * sizeof(*k));
        if (k == NULL) {
            pthread_mutex_unlock(&e->mu);
            return; /* stays in the outbox; harmless here */
        }
        e->keys = k;
        e->cap = cap;
    }
    e->keys[e->n] = strdup(ev->key);
    if (e->keys[e->n] != NULL)
        e->n++;
    pthread_mutex_unlock(&e->mu);
}

static void events_done(struct events *e, struct twcs *t)
{
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->n; i++) {
        if (twcs_event_done(t, e->keys[i]) != ST_OK)
            st_log_warn("bench", "event_done %s failed", e->keys[i]);
        free(e->keys[i]);
    }
    e->n = 0;
    pthread_mutex_unlock(&e->mu);
}

/* True when every data window is sealed (or already dropped) and no merge runs. */
static bool all_sealed(struct twcs *t, const struct opts *o, const struct conf *c)
{
    struct twcs_stats ts;
    twcs_stats(t, &ts);
    if (ts.sealed < o->windows || ts.merging > 0)
        return false;
    struct twcs_window_info *w;
    size_t n;
    if (twcs_windows(t, &w, &n) != ST_OK)
        return false;
    bool ok = true;
    int64_t end = c->t0 + (int64_t)o->windows * WINDOW_MS;
    for (size_t i = 0; i < n; i++)
        if (w[i].start < end && w[i].state != TWCS_SEALED)
            ok = false;
    free(w);
    return ok;
}

enum layout { L_DEFAULT, L_INLINE, L_APPEND_IN_WRITE, L_BUFFERED };

static void strata_run(const struct opts *o, const struct conf *c, const char *tag,
                       uint64_t max_bytes, enum layout lay, struct res *r)
{
    char sdir[1100], group[160];
    snprintf(sdir, sizeof(sdir), "%.900s/strata-%s-%d", o->dir, tag, (int)getpid());
    snprintf(group, sizeof(group), "%s-%s", c->topic, tag);
    struct st_err err = {0};
    struct events ev = {.mu = PTHREAD_MUTEX_INITIALIZER};
    /* As ingest_node.c's open_collection with the configuration defaults (cfg_set_defaults):
     * wal_sync batch every 5 ms, memtable_size 0 = the store's default, tick every second. */
    struct twcs_opts to = {
        .store = {.dir = sdir,
                  .dim = c->dim,
                  .wal_sync = STORE_SYNC_BATCH,
                  .wal_sync_interval_ms = 5,
                  .memtable_size = 0,
                  .inline_vectors = lay == L_INLINE,
                  .vlog_append_in_write = lay == L_APPEND_IN_WRITE,
                  .vlog_buffered = lay == L_BUFFERED},
        .window_ms = WINDOW_MS,
        .grace_ms = GRACE_MS,
        .max_lateness_ms = WINDOW_MS,
        .max_bytes = max_bytes,
        .tick_ms = 1000,
        .on_event = on_event,
        .ctx = &ev,
    };
    struct twcs *t;
    if (twcs_open(&to, &t, &err) != ST_OK) {
        fail(r, "twcs_open: %s", err.msg);
        return;
    }
    struct dlq *d;
    struct dlq_opts dopt = {.brokers = o->brokers};
    if (dlq_open(&dopt, &d, &err) != ST_OK) {
        fail(r, "dlq: %s", err.msg);
        return;
    }
    struct ing_collection coll = {.rc = {"docs", c->dim, false}, .topic = c->topic, .twcs = t};
    struct ing_consumer_opts co = {.brokers = o->brokers,
                                   .group_id = group,
                                   .colls = &coll,
                                   .n_colls = 1,
                                   .dlq = d,
                                   .dead_letter_topic = "bench-dlq"};
    static const char *props[1][2];
    if (getenv("BENCH_KPROP") != NULL) { /* NAME=VALUE: a librdkafka property (experiments) */
        static char kv[256];
        snprintf(kv, sizeof(kv), "%s", getenv("BENCH_KPROP"));
        char *eq = strchr(kv, '=');
        if (eq != NULL) {
            *eq = 0;
            props[0][0] = kv;
            props[0][1] = eq + 1;
            co.properties = (const char *const(*)[2])props;
            co.n_properties = 1;
        }
    }
    struct ing_consumer *cons;
    if (ing_consumer_open(&co, &cons, &err) != ST_OK) {
        fail(r, "consumer: %s", err.msg);
        return;
    }
    struct ing_stats st = {0};
    struct sample a = {0};
    uint64_t seen = 0;
    double progress = now_s();
    /* Under a FIFO cap a partition that lags writes into windows the cap has already dropped:
     * those messages go to the dead-letter topic as the policy says (counted, not a failure). */
    while (st.records + (max_bytes > 0 ? st.rejected * o->per_msg : 0) < c->records) {
        if (ing_consumer_poll(cons, 100, &err) != ST_OK) {
            fail(r, "poll: %s", err.msg);
            return;
        }
        ing_consumer_stats(cons, &st);
        if (st.records + st.retries != seen) {
            seen = st.records + st.retries;
            progress = now_s();
        } else if (now_s() - progress > STALL_S) {
            struct ing_metrics mt;
            if (ing_consumer_metrics(cons, &mt) == ST_OK) {
                for (size_t i = 0; i < mt.nlag; i++)
                    fprintf(stderr, "bench_ingest: stalled: %s/%d lag %" PRId64 "\n",
                            mt.lag[i].topic, (int)mt.lag[i].partition, mt.lag[i].lag);
                ing_metrics_free(&mt);
            }
            fail(r,
                 "no progress for %d s: %" PRIu64 " of %" PRIu64 " records, %" PRIu64
                 " messages, %" PRIu64 " duplicates, %" PRIu64 " pauses",
                 STALL_S, st.records, c->records, st.messages, st.duplicates, st.retries);
            return;
        }
        if (a.t == 0 && st.messages > 0)
            a = sample_now();
        events_done(&ev, t);
        if (st.rejected > 0 && max_bytes == 0) {
            fail(r, "%" PRIu64 " messages rejected", st.rejected);
            return;
        }
    }
    if (ing_consumer_commit(cons, &err) != ST_OK) { /* fsync every store, commit everything */
        fail(r, "commit: %s", err.msg);
        return;
    }
    struct sample b = sample_now();
    sample_diff(r, &a, &b, false);
    struct twcs_stats ts;
    twcs_stats(t, &ts);
    r->sealed_at_durable = ts.sealed;
    struct store_stats ss;
    store_stats(twcs_store(t), &ss);
    r->wait_ms[0] = ss.vlog_wait_ns / 1000000;
    r->wait_ms[1] = ss.roll_wait_ns / 1000000;
    r->wait_ms[2] = ts.window_create_ns / 1000000;
    struct ing_stats pst;
    ing_consumer_stats(cons, &pst);
    r->poll_ms[0] = pst.kafka_ns / 1000000;
    r->poll_ms[1] = pst.decode_wait_ns / 1000000;
    r->poll_ms[2] = pst.write_ns / 1000000;
    r->poll_ms[3] = pst.commit_ns / 1000000;
    /* The daemon keeps polling while the timer thread seals what the watermark passed. */
    double deadline = now_s() + SEAL_WAIT;
    while (!all_sealed(t, o, c)) {
        if (now_s() > deadline) {
            fail(r, "windows not sealed %d s after the last record", SEAL_WAIT);
            return;
        }
        if (ing_consumer_poll(cons, 20, &err) != ST_OK) {
            fail(r, "poll: %s", err.msg);
            return;
        }
        events_done(&ev, t);
    }
    b = sample_now();
    sample_diff(r, &a, &b, true);
    ing_consumer_stats(cons, &st);
    twcs_stats(t, &ts);
    r->records = st.records;
    r->retries = st.retries;
    r->paused_ms = st.paused_ms;
    r->holds = st.holds;
    r->held_ms = st.held_ms;
    r->rejected = st.rejected;
    r->sealed = ts.sealed;
    r->merges = ts.merges;
    r->dropped = ts.dropped_fifo + ts.dropped_ttl;
    r->tw_written = ts.bytes_written;
    r->tw_ingested = ts.bytes_ingested;
    r->compaction = ts.compaction_bytes;
    if (ing_consumer_close(cons) != ST_OK)
        fail(r, "consumer close failed");
    dlq_close(d);
    events_done(&ev, t);
    if (twcs_close(t) != ST_OK)
        fail(r, "twcs close failed");
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sdir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_ingest: could not remove %s\n", sdir);
}

/* As the daemon with its defaults: no byte cap, nothing dropped. */
static void phase_strata(const struct opts *o, const struct conf *c, const char *tag, struct res *r)
{
    strata_run(o, c, tag, 0, L_DEFAULT, r);
}

/* Vector-log rows appended by the write itself on the polling thread (before the store's
 * writer thread), for the comparison in the same run. */
static void phase_strata_syncw(const struct opts *o, const struct conf *c, const char *tag,
                               struct res *r)
{
    strata_run(o, c, tag, 0, L_APPEND_IN_WRITE, r);
}

/* Vector-log rows written through the page cache (before O_DIRECT), for the comparison in the
 * same run. */
static void phase_strata_buffered(const struct opts *o, const struct conf *c, const char *tag,
                                  struct res *r)
{
    strata_run(o, c, tag, 0, L_BUFFERED, r);
}

/* The layout before vector logs (vectors in the WAL, in every run and rewritten by the seal),
 * for the comparison in the same run. */
static void phase_strata_inline(const struct opts *o, const struct conf *c, const char *tag,
                                struct res *r)
{
    strata_run(o, c, tag, 0, L_INLINE, r);
}

/* With a FIFO byte cap (collection max_bytes) below the data's size: the oldest sealed windows
 * are dropped during the run, and writes pause while the cap is reached until a tick drops. */
static void phase_strata_fifo(const struct opts *o, const struct conf *c, const char *tag,
                              struct res *r)
{
    strata_run(o, c, tag, (uint64_t)(o->fifo_frac * (double)c->vec_bytes), L_DEFAULT, r);
}

/* ---- RocksDB ----------------------------------------------------------------------------------
 */

#ifdef STRATA_HAVE_ROCKSDB
static uint64_t rocks_prop(rocksdb_t *db, const char *name)
{
    uint64_t v = 0;
    if (rocksdb_property_int(db, name, &v) != 0)
        return 0;
    return v;
}

static void phase_rocksdb(const struct opts *o, const struct conf *c, const char *tag,
                          struct res *r)
{
    char rdir[1100], group[160];
    snprintf(rdir, sizeof(rdir), "%.900s/rocksdb-%s-%d", o->dir, tag, (int)getpid());
    snprintf(group, sizeof(group), "%s-%s", c->topic, tag);
    /* Durable as a user would set it up: WAL on (the default), every write synced. Random
     * float vectors do not compress: compression off spares RocksDB the CPU. Everything else
     * default (64 MiB write buffer, as strata's memtable; 2 background jobs). */
    rocksdb_options_t *ro = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(ro, 1);
    rocksdb_options_set_compression(ro, rocksdb_no_compression);
    char *e = NULL;
    rocksdb_t *db = rocksdb_open(ro, rdir, &e);
    if (db == NULL) {
        fail(r, "rocksdb_open: %s", e ? e : "?");
        return;
    }
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();

    struct rec_decoder *dec = rec_decoder_new();
    struct rec_collection rc = {"docs", c->dim, false};
    struct rec_schema schema = {.colls = &rc, .n = 1, .fallback = &rc};
    size_t vlen_max = 8 + (size_t)c->dim * 4 + REC_META_MAX;
    uint8_t *val = malloc(vlen_max);

    rd_kafka_t *k = plain_consumer(o, group, true);
    subscribe(k, c->topic);
    uint64_t recs = 0, msgs = 0;
    struct sample a = {0};
    double decode = 0;
    double progress = now_s();
    while (recs < c->records) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k, 100);
        if (m == NULL) {
            if (now_s() - progress > STALL_S) {
                fail(r, "no message for %d s: %" PRIu64 " of %" PRIu64 " records", STALL_S, recs,
                     c->records);
                return;
            }
            continue;
        }
        progress = now_s();
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (msgs++ == 0)
            a = sample_now();
        const char *ct = NULL;
        size_t ct_len = 0;
        rd_kafka_headers_t *h;
        if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_header_get_last(h, "content-type", (const void **)&ct, &ct_len);
        struct rec_batch b;
        char detail[256];
        double td = now_s();
        enum rec_reason rr = rec_decode(dec, &schema, rec_kind_of(ct, ct_len), m->payload, m->len,
                                        &b, detail, sizeof(detail));
        decode += now_s() - td;
        if (rr != REC_OK) {
            fail(r, "decode: %s: %s", rec_reason_str(rr), detail);
            return;
        }
        rocksdb_writebatch_clear(wb);
        for (uint32_t i = 0; i < b.n; i++) {
            const struct rec_record *x = &b.recs[i];
            memcpy(val, &x->ts, 8);
            memcpy(val + 8, x->vec, (size_t)c->dim * 4);
            memcpy(val + 8 + (size_t)c->dim * 4, x->meta, x->meta_len);
            rocksdb_writebatch_put(wb, (const char *)x->id, x->id_len, (const char *)val,
                                   8 + (size_t)c->dim * 4 + x->meta_len);
        }
        rocksdb_write(db, wo, wb, &e);
        if (e != NULL) {
            fail(r, "rocksdb_write: %s", e);
            return;
        }
        recs += b.n;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition)->offset =
            m->offset + 1;
        rd_kafka_offsets_store(k, l);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_resp_err_t ce = rd_kafka_commit(k, NULL, 0); /* the stored offsets, synchronously */
    if (ce != RD_KAFKA_RESP_ERR_NO_ERROR && ce != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        fail(r, "commit: %s", rd_kafka_err2str(ce));
        return;
    }
    struct sample b = sample_now();
    sample_diff(r, &a, &b, false);
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(db, fo, &e);
    rocksdb_flushoptions_destroy(fo);
    if (e != NULL) {
        fail(r, "rocksdb_flush: %s", e);
        return;
    }
    double deadline = now_s() + SEAL_WAIT;
    while (rocks_prop(db, "rocksdb.compaction-pending") != 0 ||
           rocks_prop(db, "rocksdb.num-running-compactions") != 0 ||
           rocks_prop(db, "rocksdb.num-running-flushes") != 0) {
        if (now_s() > deadline) {
            fail(r, "compactions still running after %d s", SEAL_WAIT);
            return;
        }
        usleep(10000);
    }
    b = sample_now();
    sample_diff(r, &a, &b, true);
    r->records = recs;
    r->decode_s = decode;
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    rocksdb_writebatch_destroy(wb);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_options_destroy(ro);
    rec_decoder_free(dec);
    free(val);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rdir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_ingest: could not remove %s\n", rdir);
}
#endif

/* ---- report --------------------------------------------------------------------------------- */

static bool is_strata(const char *name)
{
    return strncmp(name, "strata", 6) == 0;
}

/* A row's name in the tables. */
static const char *label(const char *name, const struct opts *o)
{
    static char fifo[64];
    if (strcmp(name, "nop") == 0)
        return "do-nothing consumer";
    if (strcmp(name, "disk") == 0)
        return "disk: write + fdatasync";
    if (strcmp(name, "disk-direct") == 0)
        return "disk: O_DIRECT write + fdatasync";
    if (strcmp(name, "strata-buffered") == 0)
        return "strata, vector logs through the page cache (before O_DIRECT)";
    if (strcmp(name, "strata-inline") == 0)
        return "strata, vectors inline (before vector logs)";
    if (strcmp(name, "strata-syncw") == 0)
        return "strata, rows appended in the write (before the writer thread)";
    if (strcmp(name, "strata-fifo") == 0) {
        snprintf(fifo, sizeof(fifo), "strata, FIFO cap %.0f%%", o->fifo_frac * 100);
        return fifo;
    }
    return name;
}

struct row {
    const struct conf *c;
    const char *name;
    struct res r;
    bool have;
};

static double rate_mb(const struct row *w)
{
    return (double)w->c->vec_bytes / 1e6 / w->r.secs;
}

static void print_detail(const struct row *w)
{
    const struct res *r = &w->r;
    double gb = (double)w->c->vec_bytes / 1e9;
    printf("  %-11s %9.0f rec/s %8.1f MB/s  durable %6.2f s  sealed %6.2f s  written/ingested "
           "%.2f (durable) %.2f (sealed)  read/ingested %.2f (sealed)  cpu %.2f user + %.2f sys = "
           "%.1f s/GB  peak RSS %.0f "
           "MiB  disk busy %.0f%% (durable) %.0f%% (sealed)\n",
           w->name, (double)w->c->records / r->secs, rate_mb(w), r->secs, r->secs_sealed,
           (double)r->wbytes / (double)w->c->vec_bytes,
           (double)r->wbytes_sealed / (double)w->c->vec_bytes,
           (double)r->rbytes_sealed / (double)w->c->vec_bytes, r->user_sealed, r->sys_sealed,
           (r->user_sealed + r->sys_sealed) / gb, (double)r->hwm_kb / 1024.0, r->busy_durable * 100,
           r->busy * 100);
    if (is_strata(w->name))
        printf("           windows sealed %" PRIu64 " (%" PRIu64 " by the durable point), merges "
               "%" PRIu64 ", dropped %" PRIu64 ", compaction %.0f MB; twcs written/ingested "
               "%.2f; back-pressure: %" PRIu64 " waits in place (%" PRIu64 " ms), %" PRIu64
               " pauses (%" PRIu64 " ms, summed over partitions); %" PRIu64
               " messages rejected (for windows the FIFO cap had dropped); writes waited %" PRIu64
               " ms on the vector-log queue, %" PRIu64 " ms on WAL rolls, %" PRIu64
               " ms on window creation; the polling thread to the durable point: %" PRIu64
               " ms in librdkafka, %" PRIu64 " ms waiting for decode, %" PRIu64
               " ms writing, %" PRIu64 " ms committing\n",
               r->sealed, r->sealed_at_durable, r->merges, r->dropped, (double)r->compaction / 1e6,
               r->tw_ingested ? (double)r->tw_written / (double)r->tw_ingested : 0.0, r->holds,
               r->held_ms, r->retries, r->paused_ms, r->rejected, r->wait_ms[0], r->wait_ms[1],
               r->wait_ms[2], r->poll_ms[0], r->poll_ms[1], r->poll_ms[2], r->poll_ms[3]);
    if (strcmp(w->name, "rocksdb") == 0 && r->decode_s > 0)
        printf("           decode (strata's decoder, 1 thread): %.2f s, %.0f MB/s of message "
               "value\n",
               r->decode_s, (double)w->c->value_bytes / 1e6 / r->decode_s);
    fflush(stdout);
}

/* True when the comma-separated list names w. */
static bool has_word(const char *list, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = list; p != NULL && *p != '\0';) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, w, n) == 0)
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

/* The machine, for the reader of the numbers: CPU, the SIMD it offers, the kernels chosen. */
static void print_machine(const struct opts *o)
{
    char model[256] = "?", flags[8200] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f != NULL) {
        char line[8192];
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "model name", 10) == 0 && model[0] == '?') {
                const char *p = strchr(line, ':');
                snprintf(model, sizeof(model), "%.200s", p ? p + 2 : line);
                model[strcspn(model, "\n")] = '\0';
            } else if (strncmp(line, "flags", 5) == 0 && flags[0] == '\0') {
                line[strcspn(line, "\n")] = '\0';
                flags[0] = ' ';
                memcpy(flags + 1, line, strlen(line) + 1);
                strcat(flags, " ");
            }
        }
        fclose(f);
    }
    printf("machine: %s, %ld CPUs online; avx512f %s, avx2 %s, fma %s; strata kernels: %s\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), strstr(flags, " avx512f ") ? "yes" : "no",
           strstr(flags, " avx2 ") ? "yes" : "no", strstr(flags, " fma ") ? "yes" : "no",
           st_kernels()->name);
    printf("librdkafka %s; RocksDB %s; directory %s\n", rd_kafka_version_str(),
#ifdef STRATA_HAVE_ROCKSDB
           STRATA_ROCKSDB_VERSION,
#else
           "not built (install librocksdb-dev: scripts/deps --bench)",
#endif
           o->dir);
}

int main(int argc, char **argv)
{
    struct opts o = {.dir = "/tmp",
                     .records = 400000, /* 1.2 GB at 768-d: at 100,000 the references ended
                                           within 0.2 s, inside the page cache and startup */
                     .json_records = 20000,
                     .per_msg = 100,
                     .windows = 10,
                     .rounds = 1,
                     .warmup = 1,
                     .parts = 4,
                     .fifo_frac = 0.5,
                     .systems = "nop,disk,disk-direct,strata,strata-buffered,strata-syncw,strata-"
                                "inline,strata-fifo,rocksdb"};
    const char *dims = "768,384", *formats = "binary,json";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            die("usage", a);
        i++;
        if (strcmp(a, "--brokers") == 0)
            o.brokers = v;
        else if (strcmp(a, "--dir") == 0)
            o.dir = v;
        else if (strcmp(a, "--records") == 0)
            o.records = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--json-records") == 0)
            o.json_records = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--per-msg") == 0)
            o.per_msg = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--windows") == 0)
            o.windows = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--partitions") == 0)
            o.parts = atoi(v);
        else if (strcmp(a, "--rounds") == 0)
            o.rounds = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--warmup") == 0)
            o.warmup = (uint32_t)strtoul(v, NULL, 10);
        else if (strcmp(a, "--fifo-frac") == 0)
            o.fifo_frac = strtod(v, NULL);
        else if (strcmp(a, "--systems") == 0)
            o.systems = v;
        else if (strcmp(a, "--dims") == 0)
            dims = v;
        else if (strcmp(a, "--formats") == 0)
            formats = v;
        else
            die("unknown option", a);
    }
    if (o.brokers == NULL)
        die("usage", "--brokers HOST:PORT (bench/ingest/run starts real brokers)");
    if (o.records == 0 || o.json_records == 0 || o.per_msg == 0 || o.parts <= 0 || o.windows < 1 ||
        o.rounds == 0 || o.fifo_frac < 0)
        die("usage", "records, per-msg, partitions, windows and rounds must be positive");
    if ((o.records < o.json_records ? o.records : o.json_records) / o.per_msg <
        (uint32_t)o.parts * o.windows)
        die("usage", "too few records: every partition needs messages in every window");
    st_log_set_level(getenv("BENCH_LOG_INFO") ? ST_LOG_INFO : ST_LOG_WARNING);
    mkdir(o.dir, 0755);
    struct stat sd;
    if (stat(o.dir, &sd) != 0)
        die(o.dir, strerror(errno));
    g_dev_major = major(sd.st_dev);
    g_dev_minor = minor(sd.st_dev);
    print_machine(&o);

    struct conf confs[16];
    struct row rows[64] = {0}; /* best[k].have must start false */
    size_t nc = 0, nr = 0;
    char dbuf[64], fbuf[64];
    snprintf(dbuf, sizeof(dbuf), "%s", dims);
    char *dsave = NULL;
    for (char *dt = strtok_r(dbuf, ",", &dsave); dt != NULL; dt = strtok_r(NULL, ",", &dsave)) {
        snprintf(fbuf, sizeof(fbuf), "%s", formats);
        char *fsave = NULL;
        for (char *ft = strtok_r(fbuf, ",", &fsave); ft != NULL; ft = strtok_r(NULL, ",", &fsave)) {
            if (nc == sizeof(confs) / sizeof(confs[0]))
                die("usage", "too many configurations");
            struct conf *c = &confs[nc++];
            *c = (struct conf){.dim = (uint32_t)strtoul(dt, NULL, 10)};
            if (strcmp(ft, "json") == 0)
                c->json = true;
            else if (strcmp(ft, "binary") != 0)
                die("--formats", ft);
            if (c->dim == 0 || c->dim > 65536)
                die("--dims", dt);
            snprintf(c->topic, sizeof(c->topic), "bench-ingest-%d-%u-%s", (int)getpid(), c->dim,
                     ft);
            int64_t now = st_clock_wall_ms(NULL);
            c->t0 = now - now % WINDOW_MS - (int64_t)(o.windows + 2) * WINDOW_MS;
            c->data = c->json ? o.json_records : o.records;
            c->records = (uint64_t)c->data + (uint64_t)o.parts;
            c->vec_bytes = c->records * c->dim * 4;
            printf("\n== %u-d, %s: %" PRIu64 " records (%u data + %d closing) in %u one-minute "
                   "windows, %u per message, %d partitions, %.0f MB of vectors\n",
                   c->dim, ft, c->records, c->data, o.parts, o.windows, o.per_msg, o.parts,
                   (double)c->vec_bytes / 1e6);
            struct res p = run_phase(phase_produce, &o, c, "produce");
            c->msgs = p.msgs;
            c->value_bytes = p.value_bytes;
            printf("  produced %" PRIu64 " messages, %.0f MB of message values, in %.1f s\n",
                   c->msgs, (double)c->value_bytes / 1e6, p.secs);
            static const struct {
                const char *name;
                phase_fn fn;
            } all[] = {{"nop", phase_nop},
                       {"disk", phase_disk},
                       {"disk-direct", phase_disk_direct},
                       {"strata", phase_strata},
                       {"strata-buffered", phase_strata_buffered},
                       {"strata-inline", phase_strata_inline},
                       {"strata-syncw", phase_strata_syncw},
                       {"strata-fifo", phase_strata_fifo},
#ifdef STRATA_HAVE_ROCKSDB
                       {"rocksdb", phase_rocksdb}
#endif
            };
            struct {
                const char *name;
                phase_fn fn;
            } sys[16];
            size_t nsys = 0;
            for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++)
                if (has_word(o.systems, all[k].name) &&
                    (strcmp(all[k].name, "strata-fifo") != 0 || o.fifo_frac > 0)) {
                    sys[nsys].name = all[k].name;
                    sys[nsys++].fn = all[k].fn;
                }
            if (nr + nsys > sizeof(rows) / sizeof(rows[0]))
                die("usage", "too many configurations");
            struct row *best = &rows[nr];
            nr += nsys;
            /* The broker is a fresh JVM, and the first read of a topic runs while its JIT is
             * still compiling the fetch path: the do-nothing consumer read 768-d topics at
             * 1,878 and 1,964 MB/s the first time, 2,457 and 2,610 the second (2026-11-28),
             * which charged whichever system read first. A long-running broker is warm; this
             * one reads each topic --warmup times (default 1) before anything is timed. */
            for (uint32_t k = 0; k < o.warmup; k++) {
                char tag[32];
                snprintf(tag, sizeof(tag), "warmup-%u", k);
                struct res wr = run_phase(phase_nop, &o, c, tag);
                printf("  warm-up %u: the topic read by a do-nothing consumer in %.2f s (%.0f "
                       "MB/s), not reported\n",
                       k + 1, wr.secs, (double)c->vec_bytes / 1e6 / wr.secs);
            }
            for (uint32_t round = 0; round < o.rounds; round++)
                for (size_t k = 0; k < nsys; k++) {
                    char tag[64];
                    snprintf(tag, sizeof(tag), "%s-r%u", sys[k].name, round);
                    struct row w = {c, sys[k].name, run_phase(sys[k].fn, &o, c, tag), true};
                    if (o.rounds > 1)
                        printf("  round %u:", round + 1);
                    print_detail(&w);
                    if (!best[k].have || w.r.secs < best[k].r.secs)
                        best[k] = w;
                }
            (void)run_phase(phase_delete, &o, c, "delete");
        }
    }

    printf("\n%s-run results (best of %u round%s; rates are of vector payload, float32):\n\n",
           o.rounds > 1 ? "Best" : "Single", o.rounds, o.rounds > 1 ? "s" : "");
    printf("| config | system | records/s | MB/s | durable + committed | sealed | disk bytes "
           "written / vector byte (durable; sealed) | CPU s/GB (user + sys) | peak RSS | disk busy "
           "(durable; sealed) | back-pressure (waited in place; paused) "
           "|\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < nr; i++) {
        const struct row *w = &rows[i];
        const struct res *r = &w->r;
        double gb = (double)w->c->vec_bytes / 1e9;
        bool store = is_strata(w->name) || strcmp(w->name, "rocksdb") == 0;
        char bp[96] = "";
        if (is_strata(w->name))
            snprintf(bp, sizeof(bp),
                     "%.1f s waiting (%" PRIu64 " waits), %.1f s paused (%" PRIu64 " pauses)",
                     (double)r->held_ms / 1000.0, r->holds, (double)r->paused_ms / 1000.0,
                     r->retries);
        char sealed[32] = "—";
        if (store)
            snprintf(sealed, sizeof(sealed), "%.2f s", r->secs_sealed);
        printf("| %u-d %s | %s | %.0f | %.1f | %.2f s | %s | %.2f; %.2f | %.1f (%.1f + "
               "%.1f) | %.0f MiB | %.0f%%; %.0f%% | %s |\n",
               w->c->dim, w->c->json ? "JSON" : "binary", label(w->name, &o),
               (double)w->c->records / r->secs, rate_mb(w), r->secs, sealed,
               (double)r->wbytes / (double)w->c->vec_bytes,
               (double)r->wbytes_sealed / (double)w->c->vec_bytes,
               (r->user_sealed + r->sys_sealed) / gb, r->user_sealed / gb, r->sys_sealed / gb,
               (double)r->hwm_kb / 1024.0, r->busy_durable * 100, r->busy * 100, bp);
    }
    printf(
        "\n| config | system | ingest / min(do-nothing, disk) | ingest / RocksDB | windows "
        "sealed (by the durable point) | open-window merges | MB rewritten by merges and seals | "
        "windows dropped | peak RSS / memtable_size (64 MiB) | decode MB/s, 1 core |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < nr; i++) {
        const struct row *s = &rows[i];
        if (!is_strata(s->name))
            continue;
        const struct row *nop = NULL, *disk = NULL, *rocks = NULL;
        for (size_t j = 0; j < nr; j++)
            if (rows[j].c == s->c) {
                if (strcmp(rows[j].name, "nop") == 0)
                    nop = &rows[j];
                else if ((strcmp(rows[j].name, "disk") == 0 ||
                          strcmp(rows[j].name, "disk-direct") == 0) &&
                         (disk == NULL || rate_mb(&rows[j]) > rate_mb(disk)))
                    disk = &rows[j]; /* the disk's ceiling: the faster way to write it */
                else if (strcmp(rows[j].name, "rocksdb") == 0)
                    rocks = &rows[j];
            }
        char ref[64] = "not run", rr[32] = "not run", dec[32] = "";
        if (nop != NULL || disk != NULL) {
            const struct row *lo = nop == NULL                                    ? disk
                                   : disk == NULL || rate_mb(nop) < rate_mb(disk) ? nop
                                                                                  : disk;
            snprintf(ref, sizeof(ref), "**%.2f** (of the %s)", rate_mb(s) / rate_mb(lo),
                     lo == nop ? "consumer" : "disk");
        }
        if (rocks != NULL) {
            snprintf(rr, sizeof(rr), "**%.2f**", rate_mb(s) / rate_mb(rocks));
            if (rocks->r.decode_s > 0)
                snprintf(dec, sizeof(dec), "%.0f",
                         (double)s->c->value_bytes / 1e6 / rocks->r.decode_s);
        }
        printf("| %u-d %s | %s | %s | %s | %" PRIu64 " (%" PRIu64 ") | %" PRIu64
               " | %.0f | %" PRIu64 " | %.1f | %s |\n",
               s->c->dim, s->c->json ? "JSON" : "binary", label(s->name, &o), ref, rr, s->r.sealed,
               s->r.sealed_at_durable, s->r.merges, (double)s->r.compaction / 1e6, s->r.dropped,
               (double)s->r.hwm_kb * 1024.0 / (double)(64u << 20), dec);
    }
    return 0;
}
