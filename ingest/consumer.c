/*
 * The consumer loop: decode, write or dead-letter, group-commit offsets after fsync.
 *
 * Two stages. The thread in ing_consumer_poll polls Kafka and hands each message to the
 * decode stage (ing_pipe.h: DECODE_WORKERS threads, a bounded queue of DECODE_DEPTH slots,
 * handed back in order); a worker decodes and validates it (rec_decode, then ing_write_prepare:
 * timestamps, cosine normalisation) into the slot's own decoder and writer, so message n+1 is
 * decoded while message n is written. The poll thread takes slots back in order and does
 * everything else: the store write, the DLQ, offsets, pause/seek, rebalances and stats — the
 * worker touches only its slot and the immutable schema.
 *
 * A decoded message is written only if its partition is still as it was when the message was
 * read: each partition has an epoch, bumped when it is paused (back-pressure), assigned or
 * revoked, and a slot read under an older epoch is dropped unhandled. So after a pause the
 * messages queued behind the paused one are dropped and read again after the seek (order
 * kept, nothing applied twice), and a revoked partition's queued messages are never written
 * (its commit in the rebalance callback covers only what was handled, and the new owner
 * reads them again).
 */
#include "consumer.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ing_pipe.h"
#include "st_clock.h"
#include "st_log.h"
#include "st_mem.h"

/* Messages in the decode stage at most (read and not yet written), and the threads decoding
 * them in parallel (JSON decoding is CPU-bound: a second thread uses the second core). */
#define DECODE_DEPTH 4
/* Raw message bytes the stage holds at most (it always takes one message, however large):
 * librdkafka's own queue limits stop counting a message once it is polled. */
#define DECODE_BYTES   (64u << 20)
#define DECODE_WORKERS 2

struct part {
    const struct ing_collection *coll; /* the topic's first collection (for twcs assignment) */
    char *topic;
    int32_t partition;
    int64_t handled;    /* last offset whose effect is in a store or the DLQ (-1: none) */
    int64_t committed;  /* the group's next offset as far as we know: what we committed, or
                         * where the fetch started after an assign (-1: not known yet) */
    bool lost;          /* given up by a failed member (not to another one) until reassigned */
    int64_t close_upto; /* while closing: messages at or past it are not read (-1: none) */
    bool assigned;
    bool paused;
    int64_t retry_offset; /* paused: the message to read again */
    int64_t resume_at_ms;
    int64_t paused_at_ms; /* paused: since when (for ing_stats.paused_ms) */
    uint64_t epoch; /* bumped by pause, assign and revoke: older queued messages are dropped */
};

struct topic_schema;

/* One message in the decode stage. Filled by the poll thread (m, epoch, ts), then by the
 * worker (the rest), then read back by the poll thread after ing_pipe_pop. */
struct slot {
    rd_kafka_message_t *m;
    uint64_t epoch; /* its partition's epoch when it was read */
    const struct topic_schema *ts;
    struct rec_decoder *dec;     /* the records point into it (and into m) */
    struct ing_writer **writers; /* per collection: the prepared store records */
    enum rec_reason rr;
    char detail[256];
    size_t ci;             /* decoded: the collection (index into opts.colls) */
    uint32_t n;            /* decoded: records in the batch */
    int prc;               /* decoded: ing_write_prepare's return code */
    struct ing_result pre; /* decoded: ING_APPLIED (prepared) or ING_REJECTED */
};

struct topic_schema {
    const char *topic;
    struct rec_collection *colls;
    const struct ing_collection **src;
    size_t n;
    struct rec_schema schema;
};

struct ing_consumer {
    struct ing_consumer_opts o;
    rd_kafka_t *rk;
    struct slot slots[DECODE_DEPTH];
    size_t queued_bytes;   /* raw bytes of the messages in the decode stage (poll thread) */
    size_t next_slot;      /* the slot the next pushed message takes */
    struct ing_pipe *pipe; /* the decode stage */
    struct topic_schema *topics;
    size_t n_topics;
    struct part *parts;
    size_t n_parts, cap_parts;
    int64_t next_commit_ms;
    /* The periodic round's commits are asynchronous (a broker round trip, tens of ms on a busy
     * host, must not hold up the writes behind it): their results come back on commit_q,
     * served by the poll thread. One round is in flight at a time. A result is applied only if
     * no rebalance came in between (commit_gen, bumped by assign and revoke): an older round's
     * answer must not stand for an assignment it was not made for. */
    rd_kafka_queue_t *commit_q;
    uint64_t commit_gen;
    bool commit_out; /* a round is sent and not answered yet */
    struct ing_stats st;
    struct st_ratelimit auth_rl; /* credentials/TLS errors once running (polling thread) */
    struct st_err fatal;         /* set in the rebalance callback, reported by the next poll */
    bool closing;                /* ing_consumer_close is under way: feed reads nothing new */
    bool *held_out;    /* per collection: its last hold outlasted hold_ms, so its writes wait at
                          most HOLD_SHORT_MS until one goes through (poll thread) */
    int64_t *short_at; /* per collection: when its last short wait began (poll thread) */

    /* What /metrics reads from other threads, guarded by mu. */
    pthread_mutex_t mu;
    struct ing_stats pub_st;
    uint64_t *coll_records;
    struct st_hist *apply_lag; /* per collection: message timestamp to applied (atomic) */
    struct ing_reject_count *rej;
    size_t nrej, caprej;
    struct ing_lag *lag;
    size_t nlag;
    int64_t next_lag_ms;
};

static void decode_slot(void *ctx, void *item);

static int64_t now_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

static struct part *part_get(struct ing_consumer *c, const char *topic, int32_t partition,
                             bool create)
{
    for (size_t i = 0; i < c->n_parts; i++)
        if (c->parts[i].partition == partition && strcmp(c->parts[i].topic, topic) == 0)
            return &c->parts[i];
    if (!create)
        return NULL;
    if (c->n_parts == c->cap_parts) {
        size_t cap = c->cap_parts ? c->cap_parts * 2 : 16;
        struct part *p = realloc(c->parts, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        c->parts = p;
        c->cap_parts = cap;
    }
    struct part *p = &c->parts[c->n_parts];
    *p = (struct part){
        .topic = strdup(topic), .partition = partition, .handled = -1, .committed = -1};
    if (p->topic == NULL)
        return NULL;
    for (size_t i = 0; i < c->n_topics; i++)
        if (strcmp(c->topics[i].topic, topic) == 0)
            p->coll = c->topics[i].src[0];
    c->n_parts++;
    return p;
}

static struct topic_schema *schema_of(struct ing_consumer *c, const char *topic)
{
    for (size_t i = 0; i < c->n_topics; i++)
        if (strcmp(c->topics[i].topic, topic) == 0)
            return &c->topics[i];
    return NULL;
}

/* Tells each collection's twcs which partitions of its topic this member holds now. */
static int tell_twcs(struct ing_consumer *c)
{
    for (size_t ci = 0; ci < c->o.n_colls; ci++) {
        const struct ing_collection *coll = &c->o.colls[ci];
        int32_t ids[1024];
        size_t n = 0;
        for (size_t i = 0; i < c->n_parts && n < 1024; i++)
            if (c->parts[i].assigned && strcmp(c->parts[i].topic, coll->topic) == 0)
                ids[n++] = c->parts[i].partition;
        int rc = twcs_partitions_assigned(coll->twcs, ids, n);
        if (rc != ST_OK)
            return rc;
    }
    return ST_OK;
}

/* Remembers what an accepted commit of l committed, for the partitions still ours (an offset
 * only moves forward). */
static void took_commit(struct ing_consumer *c, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; i < l->cnt; i++) {
        struct part *p = part_get(c, l->elems[i].topic, l->elems[i].partition, false);
        if (p != NULL && p->assigned && l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
            l->elems[i].offset > p->committed)
            p->committed = l->elems[i].offset;
    }
}

/* Commits l (offsets whose messages are durable) and remembers what was committed; returns
 * librdkafka's answer. */
static rd_kafka_resp_err_t commit_list(struct ing_consumer *c, rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_resp_err_t ke = rd_kafka_commit(c->rk, l, 0 /* sync */);
    if (ke == RD_KAFKA_RESP_ERR_NO_ERROR) {
        took_commit(c, l);
        c->st.commits++;
    } else {
        /* Not fatal: the data is durable, the next round commits again (a rebalance in
         * between means redelivery, which the applied marks skip). */
        st_log_warn("ingest", "offset commit failed: %s", rd_kafka_err2str(ke));
    }
    return ke;
}

/* A commit refused because the group is between generations: it succeeds once the consumer
 * has served the rebalance (rejoined with the new generation). */
static bool commit_retriable(rd_kafka_resp_err_t ke)
{
    return ke == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
           ke == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
           ke == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID || ke == RD_KAFKA_RESP_ERR_NOT_COORDINATOR ||
           ke == RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE ||
           ke == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS;
}

/* The answer to an asynchronous round (poll thread, served from commit_q). */
static void on_commit_async(rd_kafka_t *rk, rd_kafka_resp_err_t ke,
                            rd_kafka_topic_partition_list_t *l, void *opaque)
{
    struct ing_consumer *c = rd_kafka_opaque(rk);
    c->commit_out = false;
    if (ke != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* Not fatal: the data is durable, the next round commits again. */
        if (!commit_retriable(ke))
            st_log_warn("ingest", "offset commit failed: %s", rd_kafka_err2str(ke));
        return;
    }
    c->st.commits++;
    if ((uint64_t)(uintptr_t)opaque != c->commit_gen)
        return; /* a rebalance came in between: what is committed now is not known */
    if (l != NULL)
        took_commit(c, l);
}

/* How long a synchronous commit waits for the asynchronous round still out. */
#define COMMIT_AWAIT_MS 10000

/*
 * Waits (serving commit_q, at most COMMIT_AWAIT_MS) until no asynchronous round is out; true
 * if none is. A synchronous commit must not go out while one is: librdkafka sends a commit
 * refused with a retriable error (coordinator moving, timeout) again later, after requests
 * queued meanwhile, so the older offsets could land after the newer ones and move the group's
 * position back. librdkafka answers every commit in the end (an error or a timeout at worst),
 * so no second round is ever sent beside one still out.
 */
static bool await_async_commits(struct ing_consumer *c)
{
    for (int64_t dl = now_ms() + COMMIT_AWAIT_MS; c->commit_out && now_ms() < dl;)
        (void)rd_kafka_queue_poll_callback(c->commit_q, 50);
    return !c->commit_out;
}

/*
 * Makes everything written so far durable, then commits for each partition in `only` (or all
 * assigned ones) the position after its last handled message.
 */
static int commit_round(struct ing_consumer *c, const rd_kafka_topic_partition_list_t *only,
                        rd_kafka_resp_err_t *ke, struct st_err *err)
{
    *ke = RD_KAFKA_RESP_ERR_NO_ERROR;
    /* Snapshot first: what is handled now is covered by the fsync below. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->n_parts);
    for (size_t i = 0; i < c->n_parts; i++) {
        struct part *p = &c->parts[i];
        if (p->handled < 0 || p->handled + 1 == p->committed)
            continue;
        if (only != NULL &&
            rd_kafka_topic_partition_list_find(only, p->topic, p->partition) == NULL)
            continue;
        if (only == NULL && !p->assigned)
            continue;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = p->handled + 1;
    }
    if (l->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(l);
        return ST_OK;
    }
    for (size_t ci = 0; ci < c->o.n_colls; ci++) {
        int rc = store_sync(twcs_store(c->o.colls[ci].twcs));
        if (rc != ST_OK) {
            rd_kafka_topic_partition_list_destroy(l);
            return st_err_set(err, rc, "%s: fsync before commit: %s", c->o.colls[ci].rc.name,
                              st_strerror(rc));
        }
    }
    if (!await_async_commits(c)) {
        /* Not committed (the data is durable): what follows is redelivered and skipped. */
        st_log_warn("ingest", "offset commit skipped: an earlier commit is unanswered after %d ms",
                    COMMIT_AWAIT_MS);
        *ke = RD_KAFKA_RESP_ERR__TIMED_OUT;
    } else {
        *ke = commit_list(c, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return ST_OK;
}

/*
 * The periodic round, which never waits for an fsync nor for the broker: per assigned partition it
 * commits the position up to which every handled message is durable, read from the stores' marks
 * (the WAL syncer's group commits advance them in the background). For each store of the
 * partition's topic that holds an applied but not yet durable message of it, the commit stops just
 * after that store's durable mark; messages between that point and the last handled one are
 * redelivered after a crash and recognised as duplicates.
 */
static int durable_round(struct ing_consumer *c)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->n_parts);
    for (size_t i = 0; i < c->n_parts; i++) {
        struct part *p = &c->parts[i];
        if (!p->assigned || p->handled < 0 || p->handled + 1 == p->committed)
            continue;
        const struct topic_schema *ts = schema_of(c, p->topic);
        int64_t pos = p->handled + 1;
        for (size_t k = 0; ts != NULL && k < ts->n && pos > 0; k++) {
            struct store *s = twcs_store(ts->src[k]->twcs);
            int64_t applied, durable;
            if (store_applied_offset(s, p->partition, &applied) != ST_OK)
                continue; /* nothing of this partition in this store */
            if (store_durable_offset(s, p->partition, &durable) != ST_OK)
                pos = 0; /* nothing durable yet: wait for the syncer */
            else if (applied > durable && durable + 1 < pos)
                pos = durable + 1;
        }
        if (pos > 0 && pos > p->committed)
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = pos;
    }
    if (l->cnt > 0) {
        /* A refused or failed round is tried again at the next interval. */
        rd_kafka_resp_err_t ke = rd_kafka_commit_queue(c->rk, l, c->commit_q, on_commit_async,
                                                       (void *)(uintptr_t)c->commit_gen);
        if (ke == RD_KAFKA_RESP_ERR_NO_ERROR) {
            c->commit_out = true;
        } else {
            st_log_warn("ingest", "offset commit failed: %s", rd_kafka_err2str(ke));
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return ST_OK;
}

static int part_cmp(const void *a, const void *b)
{
    const struct ing_partition *x = a, *y = b;
    int t = strcmp(x->topic, y->topic);
    return t != 0 ? t : (x->partition > y->partition) - (x->partition < y->partition);
}

/* Hands the whole assignment as it is now to opts.on_assignment. */
static void tell_hook(struct ing_consumer *c)
{
    if (c->o.on_assignment == NULL)
        return;
    struct ing_partition *l = calloc(c->n_parts ? c->n_parts : 1, sizeof(*l));
    if (l == NULL) {
        st_log_error("ingest", "out of memory telling the assignment hook (it keeps the last)");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < c->n_parts; i++)
        if (c->parts[i].assigned)
            l[n++] = (struct ing_partition){c->parts[i].topic, c->parts[i].partition};
    if (n > 1)
        qsort(l, n, sizeof(*l), part_cmp);
    c->o.on_assignment(c->o.assignment_ctx, l, n);
    free(l);
}

/* Errors librdkafka reports for bad credentials or certificates (SASL authentication failed,
 * TLS handshake failed: an unknown CA, a wrong key, a protocol mismatch). It keeps retrying
 * them, so a daemon would wait forever for a broker that will never let it in. */
static bool credentials_error(rd_kafka_resp_err_t e)
{
    return e == RD_KAFKA_RESP_ERR__AUTHENTICATION || e == RD_KAFKA_RESP_ERR__SSL ||
           e == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED;
}

/* librdkafka's error events (served by rd_kafka_consumer_poll, on the polling thread). Bad
 * credentials or certificates before anything was consumed make the consumer fail with the
 * reason (a misconfiguration: nothing was read, nothing is committed). Once messages flowed
 * the same errors are taken for transient (a broker restarting its listeners, a rotation in
 * progress): logged, rate-limited, and left to librdkafka's retries, with consumer lag
 * showing whether they last. The rest are logged. */
static void on_error(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
    (void)rk;
    struct ing_consumer *c = opaque;
    if (credentials_error((rd_kafka_resp_err_t)e) && c->st.messages > 0) {
        uint32_t sup;
        if (st_ratelimit_ok(&c->auth_rl, 1, 10000, &sup))
            st_log_warn("ingest",
                        "kafka %s failed after consuming (retrying; %u more suppressed): %s",
                        e == RD_KAFKA_RESP_ERR__SSL ? "TLS" : "authentication", sup, reason);
        return;
    }
    if (credentials_error((rd_kafka_resp_err_t)e)) {
        if (c->fatal.code == ST_OK)
            st_err_set(&c->fatal, ST_EIO,
                       "kafka %s (check kafka.properties: security.protocol, sasl.*, ssl.*): %s",
                       e == RD_KAFKA_RESP_ERR__SSL ? "TLS" : "authentication", reason);
        return;
    }
    st_log_warn("ingest", "kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)e), reason);
}

/* librdkafka's log lines, through ours (priority and journald fields like every other line,
 * not its own stderr format). kafka.properties is shared with the DLQ producer, so warnings
 * about producer-only properties say nothing to an operator. Called on librdkafka's threads. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "producer property") != NULL)
        return;
    st_log(level <= 3   ? ST_LOG_ERROR
           : level <= 4 ? ST_LOG_WARNING
                        : ST_LOG_INFO,
           "ingest", "librdkafka %s: %s", fac, buf);
}

/*
 * The group uses the eager protocol: a rebalance revokes every member's whole assignment
 * before anyone rejoins, so the revoke callback's commit runs in the generation that owned
 * the partitions and is accepted. With cooperative-sticky, librdkafka 2.0.2 (Debian 12's; fixed
 * in v2.10.0) sends that commit while a second join bumps the generation: it is refused with
 * ILLEGAL_GENERATION, the assignment is declared lost (its issue 4059), and the next owner
 * reads the handled messages again into its own store — a record held by two nodes. These two
 * work for either protocol, should a later librdkafka make cooperative safe again.
 */
static bool cooperative(rd_kafka_t *rk)
{
    const char *proto = rd_kafka_rebalance_protocol(rk); /* NULL when not in a group */
    return proto != NULL && strcmp(proto, "COOPERATIVE") == 0;
}

/*
 * Takes parts and resumes them: a pause set by rd_kafka_pause_partitions (back-pressure)
 * survives a release and a new assign in librdkafka, and the assign branch forgets it
 * (p->paused = false), so nothing else would ever resume the partition.
 */
static int take_partitions(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    if (!cooperative(rk)) {
        rd_kafka_resp_err_t ke = rd_kafka_assign(rk, parts);
        if (ke == RD_KAFKA_RESP_ERR_NO_ERROR)
            (void)rd_kafka_resume_partitions(rk, parts);
        return (int)ke;
    }
    rd_kafka_error_t *ke = rd_kafka_incremental_assign(rk, parts);
    if (ke == NULL) {
        (void)rd_kafka_resume_partitions(rk, parts);
        return 0;
    }
    int rc = (int)rd_kafka_error_code(ke);
    rd_kafka_error_destroy(ke);
    return rc;
}

static void release_partitions(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    if (!cooperative(rk)) {
        (void)rd_kafka_assign(rk, NULL);
        return;
    }
    rd_kafka_error_t *ke = rd_kafka_incremental_unassign(rk, parts);
    if (ke != NULL)
        rd_kafka_error_destroy(ke);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct ing_consumer *c = opaque;
    c->commit_gen++; /* an asynchronous round's answer no longer tells what is committed */
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (size_t i = 0; i < c->n_parts; i++) /* the assignment after a rejoin is whole */
            c->parts[i].lost = false;
        memset(c->held_out, 0, (c->o.n_colls ? c->o.n_colls : 1) * sizeof(*c->held_out));
        for (int i = 0; i < parts->cnt; i++) {
            struct part *p = part_get(c, parts->elems[i].topic, parts->elems[i].partition, true);
            if (p != NULL) {
                if (p->paused)
                    c->st.paused_ms += (uint64_t)(now_ms() - p->paused_at_ms);
                p->assigned = true;
                p->paused = false;
                p->epoch++;      /* anything still queued from an earlier assignment is stale */
                p->handled = -1; /* resume from the committed offset: replays are skipped */
                p->committed = -1;
            }
        }
        int rc = take_partitions(rk, parts);
        if (rc != ST_OK)
            st_err_set(&c->fatal, ST_EIO, "assign: %s", rd_kafka_err2str((rd_kafka_resp_err_t)rc));
    } else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* Durable, committed, then released. */
        struct st_err err = {0};
        rd_kafka_resp_err_t cke; /* refused: the next owner reads those again and skips them */
        if (commit_round(c, parts, &cke, &err) != ST_OK)
            st_err_set(&c->fatal, err.code, "%s", err.msg);
        bool lost = rd_kafka_assignment_lost(rk);
        for (int i = 0; i < parts->cnt; i++) {
            struct part *p = part_get(c, parts->elems[i].topic, parts->elems[i].partition, false);
            if (p != NULL) {
                p->assigned = false;
                p->lost = lost;
                p->epoch++; /* its queued messages are the next owner's to read */
            }
        }
        release_partitions(rk, parts);
        /* Eager: the assign that follows names the whole new assignment. Telling twcs the
         * empty set in between would throw away the progress and idleness of every partition
         * that stays ours, freezing the watermark until each writes again (and announce an
         * empty assignment on every rebalance). Leaving the group is told. */
        if (!cooperative(rk) && !c->closing)
            return;
    } else {
        st_log_error("ingest", "rebalance error: %s", rd_kafka_err2str(e));
        bool all = !cooperative(rk);              /* eager releases the whole assignment */
        for (size_t i = 0; i < c->n_parts; i++) { /* released: no longer ours to report */
            struct part *p = &c->parts[i];
            bool named = all;
            for (int k = 0; k < parts->cnt && !named; k++)
                named = p->partition == parts->elems[k].partition &&
                        strcmp(p->topic, parts->elems[k].topic) == 0;
            if (named) {
                p->assigned = false;
                p->lost = true;
                p->epoch++; /* its queued messages are the next owner's to read */
            }
        }
        release_partitions(rk, parts);
    }
    int rc = tell_twcs(c);
    if (rc != ST_OK && c->fatal.code == ST_OK)
        st_err_set(&c->fatal, rc, "telling the windows about partitions: %s", st_strerror(rc));
    tell_hook(c);
}

uint64_t ing_consumer_prefetch_kb_for(uint64_t mem_limit_bytes)
{
    const uint64_t lo = 64u << 10, hi = 1u << 20; /* KiB: 64 MiB .. 1 GiB */
    uint64_t kb = mem_limit_bytes / 16 / 1024;
    return kb < lo ? lo : kb > hi ? hi : kb;
}

uint64_t ing_consumer_prefetch_kb(void)
{
    return ing_consumer_prefetch_kb_for(st_mem_limit());
}

int ing_consumer_open(const struct ing_consumer_opts *o, struct ing_consumer **out,
                      struct st_err *err)
{
    *out = NULL;
    struct ing_consumer *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return ST_ENOMEM;
    c->o = *o;
    pthread_mutex_init(&c->mu, NULL);
    if (c->o.commit_interval_ms <= 0)
        c->o.commit_interval_ms = 200;
    if (c->o.close_catchup_ms <= 0)
        c->o.close_catchup_ms = 10000;
    if (c->o.pause_ms <= 0)
        c->o.pause_ms = 50;
    if (c->o.hold_ms == 0)
        c->o.hold_ms = 1000;
    int rc = ST_ENOMEM;
    c->coll_records = calloc(o->n_colls ? o->n_colls : 1, sizeof(*c->coll_records));
    c->apply_lag = calloc(o->n_colls ? o->n_colls : 1, sizeof(*c->apply_lag));
    for (size_t i = 0; c->apply_lag != NULL && i < o->n_colls; i++)
        st_hist_init(&c->apply_lag[i], &st_hist_latency);
    c->held_out = calloc(o->n_colls ? o->n_colls : 1, sizeof(*c->held_out));
    c->short_at = calloc(o->n_colls ? o->n_colls : 1, sizeof(*c->short_at));
    c->topics = calloc(o->n_colls ? o->n_colls : 1, sizeof(*c->topics));
    if (c->topics == NULL || c->coll_records == NULL || c->apply_lag == NULL ||
        c->held_out == NULL || c->short_at == NULL)
        goto fail;
    for (size_t k = 0; k < DECODE_DEPTH; k++) {
        struct slot *sl = &c->slots[k];
        sl->dec = rec_decoder_new();
        sl->writers = calloc(o->n_colls ? o->n_colls : 1, sizeof(*sl->writers));
        if (sl->dec == NULL || sl->writers == NULL)
            goto fail;
        for (size_t i = 0; i < o->n_colls; i++)
            if ((sl->writers[i] = ing_writer_new(o->colls[i].rc.dim, o->colls[i].cosine)) == NULL)
                goto fail;
    }
    for (size_t i = 0; i < o->n_colls; i++) {
        const struct ing_collection *coll = &o->colls[i];
        struct topic_schema *ts = schema_of(c, coll->topic);
        if (ts == NULL) {
            ts = &c->topics[c->n_topics++];
            ts->topic = coll->topic;
        }
        struct rec_collection *rc2 = realloc(ts->colls, (ts->n + 1) * sizeof(*rc2));
        const struct ing_collection **src = realloc(ts->src, (ts->n + 1) * sizeof(*src));
        if (rc2 != NULL)
            ts->colls = rc2;
        if (src != NULL)
            ts->src = src;
        if (rc2 == NULL || src == NULL)
            goto fail;
        ts->colls[ts->n] = coll->rc;
        ts->src[ts->n] = coll;
        ts->n++;
    }
    for (size_t i = 0; i < c->n_topics; i++) {
        struct topic_schema *ts = &c->topics[i];
        ts->schema =
            (struct rec_schema){ts->colls, ts->n, ts->n == 1 ? &ts->colls[0] : NULL, o->max_value};
    }
    char es[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *fixed[][2] = {
        {"bootstrap.servers", o->brokers},
        {"group.id", o->group_id},
        {"partition.assignment.strategy", "roundrobin"}, /* eager: see take_partitions */
        {"enable.auto.commit", "false"},                 /* offsets only after fsync */
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "false"},
    };
    /* Defaults an operator may override. queued.max.messages.kbytes: librdkafka 2.0 (Debian
     * 12) stops fetching once its local queue holds that much, until its broker thread next
     * wakes, up to a second (confluentinc/librdkafka#2879; fetch.queue.backoff.ms came in 2.2),
     * so a consumer that is slower than the broker — any catch-up — runs dry in between: 64 MiB,
     * the library's default, held 768-d ingest to 278 MB/s where 256 MiB gave 699 and 1 GiB 926
     * (docs/benchmarks.md, issue 14), at the cost of that much prefetched memory; hence a bound
     * sized from the memory the process may use (ing_consumer_prefetch_kb). The same pause
     * follows queued.min.messages (100,000 by default) messages queued in a partition, which
     * small messages reach first: the byte bound is the one that counts. */
    uint64_t mem = st_mem_limit(), prefetch_kb = ing_consumer_prefetch_kb_for(mem);
    char prefetch[32];
    snprintf(prefetch, sizeof(prefetch), "%" PRIu64, prefetch_kb);
    const char *defaults[][2] = {{"queued.max.messages.kbytes", prefetch},
                                 {"queued.min.messages", "10000000"}};
    bool own_prefetch = false;
    for (size_t i = 0; i < o->n_properties; i++)
        own_prefetch |= strcmp(o->properties[i][0], defaults[0][0]) == 0;
    if (!own_prefetch) /* what it costs, where an operator looks for it */
        st_log_info("ingest",
                    "prefetch: queued.max.messages.kbytes=%" PRIu64 " (1/16 of mem_limit=%" PRIu64
                    " MiB, physical=%" PRIu64 " MiB, within 64 MiB..1 GiB; set "
                    "kafka.properties.queued.max.messages.kbytes to bound it)",
                    prefetch_kb, mem >> 20, st_mem_physical() >> 20);
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], es, sizeof(es)) !=
            RD_KAFKA_CONF_OK)
            goto conf_fail;
    /* The operator's properties next, ours last: the guarantees depend on ours. */
    for (size_t i = 0; i < o->n_properties; i++) {
        for (size_t j = 0; j < sizeof(fixed) / sizeof(fixed[0]); j++)
            if (strcmp(o->properties[i][0], fixed[j][0]) == 0 && j >= 2)
                st_log_warn("ingest", "kafka.properties.%s is ignored: strata needs %s=%s",
                            fixed[j][0], fixed[j][0], fixed[j][1]);
        if (rd_kafka_conf_set(conf, o->properties[i][0], o->properties[i][1], es, sizeof(es)) !=
            RD_KAFKA_CONF_OK)
            goto conf_fail;
    }
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (rd_kafka_conf_set(conf, fixed[i][0], fixed[i][1], es, sizeof(es)) != RD_KAFKA_CONF_OK)
            goto conf_fail;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es));
    if (c->rk == NULL) {
        rc = st_err_set(err, ST_EINVAL, "kafka consumer: %s", es);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    if ((c->commit_q = rd_kafka_queue_new(c->rk)) == NULL) {
        rc = st_err_set(err, ST_ENOMEM, "kafka commit queue: out of memory");
        goto fail;
    }
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new((int)c->n_topics);
    for (size_t i = 0; i < c->n_topics; i++)
        rd_kafka_topic_partition_list_add(sub, c->topics[i].topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t ke = rd_kafka_subscribe(c->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (ke != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = st_err_set(err, ST_EINVAL, "kafka subscribe: %s", rd_kafka_err2str(ke));
        goto fail;
    }
    /* jansson seeds its hash function on first use, racily when threads race to it. */
    json_object_seed(0);
    if ((rc = ing_pipe_open(DECODE_DEPTH, DECODE_WORKERS, decode_slot, c, &c->pipe)) != ST_OK) {
        rc = st_err_set(err, rc, "decode thread: %s", st_strerror(rc));
        goto fail;
    }
    c->next_commit_ms = now_ms() + c->o.commit_interval_ms;
    *out = c;
    return ST_OK;
conf_fail:
    rd_kafka_conf_destroy(conf);
    rc = st_err_set(err, ST_EINVAL, "kafka: %s", es);
fail:
    ing_consumer_close(c);
    return rc;
}

static size_t coll_index(const struct ing_consumer *c, const struct rec_collection *rc,
                         const struct topic_schema *ts)
{
    const struct ing_collection *src = ts->src[rc - ts->colls];
    return (size_t)(src - c->o.colls);
}

static void count_reject(struct ing_consumer *c, size_t coll, const char *reason)
{
    pthread_mutex_lock(&c->mu);
    size_t i = 0;
    while (i < c->nrej && !(c->rej[i].coll == coll && strcmp(c->rej[i].reason, reason) == 0))
        i++;
    if (i == c->nrej) {
        if (c->nrej == c->caprej) {
            size_t cap = c->caprej ? c->caprej * 2 : 16;
            struct ing_reject_count *r = realloc(c->rej, cap * sizeof(*r));
            if (r == NULL) {
                pthread_mutex_unlock(&c->mu);
                return;
            }
            c->rej = r;
            c->caprej = cap;
        }
        c->rej[c->nrej++] = (struct ing_reject_count){coll, reason, 0};
    }
    c->rej[i].n++;
    pthread_mutex_unlock(&c->mu);
}

/* The decode stage (worker thread): the message's records into the slot's decoder, then its
 * store records into the slot's writer. Reads only the slot and the schema. */
static void decode_slot(void *ctx, void *item)
{
    struct ing_consumer *c = ctx;
    struct slot *sl = item;
    rd_kafka_message_t *m = sl->m;
    const char *ct = NULL;
    size_t ct_len = 0;
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_header_get_last(h, "content-type", (const void **)&ct, &ct_len);
    struct rec_batch b;
    sl->ci = SIZE_MAX;
    sl->prc = ST_OK;
    sl->rr = rec_decode(sl->dec, &sl->ts->schema, rec_kind_of(ct, ct_len), m->payload, m->len, &b,
                        sl->detail, sizeof(sl->detail));
    if (sl->rr != REC_OK)
        return;
    sl->ci = coll_index(c, b.coll, sl->ts);
    sl->n = b.n;
    rd_kafka_timestamp_type_t tt;
    int64_t mts = rd_kafka_message_timestamp(m, &tt);
    sl->prc = ing_write_prepare(sl->writers[sl->ci], &b,
                                tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : mts, &sl->pre);
}

/* Hands a polled message (owned: it is freed here or when its slot is handled) to the decode
 * stage, unless it is not to be handled at all. The pipe has room. */
static int feed(struct ing_consumer *c, rd_kafka_message_t *m, struct st_err *err)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    struct part *p = part_get(c, topic, m->partition, true);
    const struct topic_schema *ts = schema_of(c, topic);
    if (p == NULL) {
        rd_kafka_message_destroy(m);
        return st_err_set(err, ST_ENOMEM, "out of memory");
    }
    /* The first message after an assign is fetched at the group's committed offset: never
     * commit below it (a store's older durable mark, from before the partition last moved
     * away, would move the group's offset back). */
    if (p->assigned && !p->paused && p->handled < 0 && p->committed < 0)
        p->committed = m->offset;
    if (p->paused || !p->assigned || m->offset <= p->handled || ts == NULL ||
        (c->closing && m->offset >= p->close_upto)) {
        /* read again after the pause / not ours any more / already handled / closing: only
         * what had been handled before is read again */
        rd_kafka_message_destroy(m);
        return ST_OK;
    }
    struct slot *sl = &c->slots[c->next_slot++ % DECODE_DEPTH];
    sl->m = m;
    sl->epoch = p->epoch;
    sl->ts = ts;
    c->queued_bytes += m->len;
    ing_pipe_push(c->pipe, sl);
    return ST_OK;
}

/* A slot popped from the stage is done with: its message freed, its decoded data released. */
static void slot_done(struct ing_consumer *c, struct slot *sl)
{
    c->queued_bytes -= sl->m->len;
    rd_kafka_message_destroy(sl->m);
    sl->m = NULL;
    rec_decoder_release(sl->dec);
}

/*
 * The store write, with short back-pressure waited out in place: a full memtable is flushed,
 * and a FIFO cap makes room, within milliseconds, while a paused partition is fetched again
 * only when librdkafka's broker thread next looks at it (up to a second later with 2.0.2: it
 * is not woken by a resume). So a write told to retry is tried again with a growing sleep
 * (1 ms doubling to 16 ms) for up to hold_ms; only back-pressure that lasts longer (a cap with
 * nothing droppable, a failing flush) pauses the partition. Nothing else is polled meanwhile:
 * the wait is bounded far below max.poll.interval.ms. Once a hold of collection ci has lasted
 * hold_ms, its writes wait at most HOLD_SHORT_MS until one goes through (or a rebalance): the
 * messages of its other partitions (and of other collections, behind them on the one poll
 * thread) do not each wait hold_ms on a store known to be stuck, while a stall that ends soon
 * after still passes without a pause per partition. A consumer past its close's first commit
 * does not wait at all (what it cannot write is read again by the next owner).
 */
/* The wait of a collection whose last hold outlasted hold_ms, and the least time between two
 * such waits (the poll thread spends at most ~8 % of its time in them per stuck collection). */
#define HOLD_SHORT_MS     20
#define HOLD_SHORT_GAP_MS 250

static int write_held(struct ing_consumer *c, size_t ci, struct ing_writer *w, struct twcs *t,
                      int32_t partition, int64_t offset, struct ing_result *res)
{
    int64_t t0 = -1, sleep_us = 1000, limit = c->o.hold_ms;
    int rc;
    for (;;) {
        rc = ing_write_prepared(w, t, partition, offset, res);
        if (rc == ST_OK && res->outcome == ING_APPLIED)
            c->held_out[ci] = false; /* taken: the store has room again */
        if (rc != ST_OK || res->outcome != ING_RETRY || c->o.hold_ms < 0 || c->closing)
            break;
        int64_t now = now_ms();
        if (t0 < 0) {
            if (c->held_out[ci]) {
                /* Stuck lately: one short wait per HOLD_SHORT_GAP_MS at most, so that a
                 * topic of many partitions does not fill the poll thread with short waits. */
                if (now - c->short_at[ci] < HOLD_SHORT_GAP_MS)
                    break;
                c->short_at[ci] = now;
                limit = c->o.hold_ms > HOLD_SHORT_MS ? HOLD_SHORT_MS : c->o.hold_ms;
            }
            t0 = now;
            c->st.holds++;
        }
        if (now - t0 >= limit) {
            c->st.holds_long += limit == c->o.hold_ms;
            c->held_out[ci] = true;
            break; /* it lasts: the caller pauses the partition */
        }
        int64_t left_us = (limit - (now - t0)) * 1000;
        struct timespec ts = {0, (long)(sleep_us < left_us ? sleep_us : left_us) * 1000};
        nanosleep(&ts, NULL);
        if (sleep_us < 16000)
            sleep_us *= 2;
    }
    if (t0 >= 0)
        c->st.held_ms += (uint64_t)(now_ms() - t0);
    return rc;
}

/* How long after its Kafka timestamp (the producer's CreateTime, or the broker's
 * LogAppendTime) a message's records became visible to searches; clocks of other hosts may
 * disagree with ours, so a timestamp in the future counts as no delay. */
static void observe_apply_lag(struct ing_consumer *c, size_t ci, const rd_kafka_message_t *m)
{
    rd_kafka_timestamp_type_t tt;
    int64_t mts = rd_kafka_message_timestamp(m, &tt);
    if (tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || mts < 0)
        return;
    int64_t lag = st_clock_wall_ms(NULL) - mts;
    st_hist_observe(&c->apply_lag[ci], lag > 0 ? (double)lag / 1e3 : 0.0);
}

/* Writes or dead-letters a decoded message (poll thread). */
static int handle(struct ing_consumer *c, struct slot *sl, struct st_err *err)
{
    rd_kafka_message_t *m = sl->m;
    const char *topic = rd_kafka_topic_name(m->rkt);
    struct part *p = part_get(c, topic, m->partition, false);
    if (p == NULL || p->epoch != sl->epoch || p->paused || !p->assigned || m->offset <= p->handled)
        return ST_OK; /* paused, revoked or reassigned since it was read / already handled */
    const struct topic_schema *ts = sl->ts;
    const char *reason = NULL;
    char detail[256];
    snprintf(detail, sizeof(detail), "%s", sl->detail);
    const struct ing_collection *dl = p->coll; /* whose dead-letter topic */
    /* Whose rejection it is: the decoded collection, else the topic's only one. */
    size_t mcoll = ts->n == 1 ? (size_t)(ts->src[0] - c->o.colls) : SIZE_MAX;
    c->st.messages++;
    if (sl->rr != REC_OK) {
        reason = rec_reason_str(sl->rr);
    } else {
        size_t ci = sl->ci;
        mcoll = ci;
        dl = &c->o.colls[ci];
        struct ing_result res = sl->pre;
        int rc = sl->prc;
        if (rc == ST_OK && res.outcome != ING_REJECTED)
            rc = write_held(c, ci, sl->writers[ci], c->o.colls[ci].twcs, m->partition, m->offset,
                            &res);
        if (rc != ST_OK)
            return st_err_set(err, rc, "%s: writing %s/%" PRId32 "/%" PRId64 ": %s",
                              c->o.colls[ci].rc.name, topic, m->partition, m->offset,
                              st_strerror(rc));
        switch (res.outcome) {
        case ING_APPLIED:
            /* Records older than the TTL were dropped, not applied: twcs counts them
             * (strata_expired_records_total), the records counter must not. */
            c->st.records += sl->n - res.expired;
            pthread_mutex_lock(&c->mu);
            c->coll_records[ci] += sl->n - res.expired;
            pthread_mutex_unlock(&c->mu);
            observe_apply_lag(c, ci, m);
            break;
        case ING_DUPLICATE:
            c->st.duplicates++;
            break;
        case ING_RETRY: {
            /* Full: pause the partition, come back to this very message later. The messages
             * queued behind it are dropped (new epoch) and read again after the seek. */
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset;
            rd_kafka_pause_partitions(c->rk, l);
            rd_kafka_error_t *se = rd_kafka_seek_partitions(c->rk, l, 5000);
            if (se != NULL)
                rd_kafka_error_destroy(se);
            rd_kafka_topic_partition_list_destroy(l);
            p->paused = true;
            p->epoch++;
            p->retry_offset = m->offset;
            p->paused_at_ms = now_ms();
            p->resume_at_ms = p->paused_at_ms + c->o.pause_ms;
            c->st.retries++;
            c->st.messages--;
            return ST_OK;
        }
        case ING_REJECTED:
            reason = res.reason;
            snprintf(detail, sizeof(detail), "%s", res.detail);
            break;
        }
    }
    if (reason != NULL) {
        const char *dlq_topic = dl != NULL && dl->dead_letter_topic != NULL
                                    ? dl->dead_letter_topic
                                    : c->o.dead_letter_topic;
        int rc = dlq_send(c->o.dlq, dlq_topic, m, reason, detail, err);
        if (rc != ST_OK)
            return rc; /* not handled: nothing at or after it is committed */
        c->st.rejected++;
        count_reject(c, mcoll, reason);
    }
    p->handled = m->offset;
    return ST_OK;
}

/* Consumer lag per assigned partition from the positions and the cached high watermarks
 * (refreshed by fetches: no broker round trip). */
static void refresh_lag(struct ing_consumer *c)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(c->rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    rd_kafka_position(c->rk, l);
    struct ing_lag *lag = calloc(l->cnt ? (size_t)l->cnt : 1, sizeof(*lag));
    size_t n = 0;
    for (int i = 0; lag != NULL && i < l->cnt; i++) {
        int64_t lo = -1, hi = -1;
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        struct part *p = part_get(c, tp->topic, tp->partition, false);
        int64_t pos = tp->offset >= 0                ? tp->offset
                      : p != NULL && p->handled >= 0 ? p->handled + 1
                                                     : lo;
        snprintf(lag[n].topic, sizeof(lag[n].topic), "%s", tp->topic);
        lag[n].partition = tp->partition;
        lag[n].lag = hi > pos ? hi - pos : 0;
        n++;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (lag == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    free(c->lag);
    c->lag = lag;
    c->nlag = n;
    pthread_mutex_unlock(&c->mu);
}

static void resume_due(struct ing_consumer *c)
{
    int64_t now = now_ms();
    for (size_t i = 0; i < c->n_parts; i++) {
        struct part *p = &c->parts[i];
        if (!p->paused || now < p->resume_at_ms)
            continue;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        rd_kafka_resume_partitions(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        p->paused = false;
        c->st.paused_ms += (uint64_t)(now - p->paused_at_ms);
    }
}

int ing_consumer_poll(struct ing_consumer *c, int timeout_ms, struct st_err *err)
{
    if (c->fatal.code != ST_OK)
        return st_err_set(err, c->fatal.code, "%s", c->fatal.msg);
    resume_due(c);
    int rc = ST_OK;
    bool fed = false;
    /* Read one message into the decode stage while it has room; block in the poll only when
     * nothing is being decoded (else the decoded messages are what to wait for). */
    bool room =
        !ing_pipe_full(c->pipe) && (ing_pipe_count(c->pipe) == 0 || c->queued_bytes < DECODE_BYTES);
    if (room) {
        int64_t t0 = st_clock_mono_ns(NULL);
        rd_kafka_message_t *m =
            rd_kafka_consumer_poll(c->rk, ing_pipe_count(c->pipe) > 0 ? 0 : timeout_ms);
        c->st.kafka_ns += (uint64_t)(st_clock_mono_ns(NULL) - t0);
        if (c->fatal.code != ST_OK) { /* the rebalance callback failed (commit, assign) */
            if (m != NULL)
                rd_kafka_message_destroy(m);
            return st_err_set(err, c->fatal.code, "%s", c->fatal.msg);
        }
        if (m != NULL && m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rc = feed(c, m, err);
            fed = true;
        } else if (m != NULL) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                st_log_warn("ingest", "kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        }
    }
    /* Write the oldest decoded message: wait for it when the stage is full or nothing new
     * came, so the stage stays busy but the loop never spins. */
    if (rc == ST_OK) {
        bool wait = !fed || ing_pipe_full(c->pipe) || c->queued_bytes >= DECODE_BYTES;
        int64_t t0 = st_clock_mono_ns(NULL);
        struct slot *sl = ing_pipe_pop(c->pipe, wait ? timeout_ms : 0);
        int64_t t1 = st_clock_mono_ns(NULL);
        c->st.decode_wait_ns += (uint64_t)(t1 - t0);
        if (sl != NULL) {
            rc = handle(c, sl, err);
            slot_done(c, sl);
            c->st.write_ns += (uint64_t)(st_clock_mono_ns(NULL) - t1);
        }
    }
    if (rc != ST_OK && c->fatal.code == ST_OK) /* nothing after the failed message is written */
        st_err_set(&c->fatal, rc, "%s", err != NULL ? err->msg : st_strerror(rc));
    (void)rd_kafka_queue_poll_callback(c->commit_q, 0); /* answers to earlier rounds */
    if (rc == ST_OK && now_ms() >= c->next_commit_ms && !c->closing && !c->commit_out) {
        int64_t t0 = st_clock_mono_ns(NULL);
        rc = durable_round(c);
        c->st.commit_ns += (uint64_t)(st_clock_mono_ns(NULL) - t0);
        c->next_commit_ms = now_ms() + c->o.commit_interval_ms;
    }
    if (rc == ST_OK && c->fatal.code != ST_OK)
        rc = st_err_set(err, c->fatal.code, "%s", c->fatal.msg);
    if (now_ms() >= c->next_lag_ms) {
        refresh_lag(c);
        c->next_lag_ms = now_ms() + 1000;
    }
    pthread_mutex_lock(&c->mu);
    c->pub_st = c->st;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int ing_consumer_metrics(struct ing_consumer *c, struct ing_metrics *out)
{
    *out = (struct ing_metrics){0};
    pthread_mutex_lock(&c->mu);
    out->total = c->pub_st;
    out->n_colls = c->o.n_colls;
    out->coll_records = malloc((c->o.n_colls ? c->o.n_colls : 1) * sizeof(uint64_t));
    out->rej = malloc((c->nrej ? c->nrej : 1) * sizeof(*out->rej));
    out->lag = malloc((c->nlag ? c->nlag : 1) * sizeof(*out->lag));
    /* c->rej and c->lag stay NULL until the first rejection / lag refresh, and memcpy from
     * NULL is undefined even for 0 bytes. */
    if (out->coll_records != NULL && out->rej != NULL && out->lag != NULL) {
        if (c->o.n_colls > 0)
            memcpy(out->coll_records, c->coll_records, c->o.n_colls * sizeof(uint64_t));
        if (c->nrej > 0)
            memcpy(out->rej, c->rej, c->nrej * sizeof(*out->rej));
        out->nrej = c->nrej;
        if (c->nlag > 0)
            memcpy(out->lag, c->lag, c->nlag * sizeof(*out->lag));
        out->nlag = c->nlag;
    }
    pthread_mutex_unlock(&c->mu);
    if (out->coll_records == NULL || out->rej == NULL || out->lag == NULL) {
        ing_metrics_free(out);
        return ST_ENOMEM;
    }
    return ST_OK;
}

void ing_metrics_free(struct ing_metrics *m)
{
    free(m->coll_records);
    free(m->rej);
    free(m->lag);
    *m = (struct ing_metrics){0};
}

const struct st_hist *ing_consumer_apply_lag(const struct ing_consumer *c, size_t coll)
{
    return &c->apply_lag[coll];
}

int ing_consumer_ping(struct ing_consumer *c, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(c->rk, 0, NULL, &md, timeout_ms);
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? ST_OK : ST_ETIMEDOUT;
}

int ing_consumer_commit(struct ing_consumer *c, struct st_err *err)
{
    rd_kafka_resp_err_t ke;
    return commit_round(c, NULL, &ke, err);
}

void ing_consumer_stats(struct ing_consumer *c, struct ing_stats *out)
{
    *out = c->st;
}

int ing_consumer_kafka_setting(struct ing_consumer *c, const char *name, char *buf, size_t len)
{
    size_t n = len;
    rd_kafka_conf_res_t r = rd_kafka_conf_get(rd_kafka_conf(c->rk), name, buf, &n);
    if (r == RD_KAFKA_CONF_UNKNOWN)
        return ST_ENOTFOUND;
    return r == RD_KAFKA_CONF_OK && n <= len ? ST_OK : ST_ERANGE;
}

/* Frees the messages in the decode stage, unhandled (waits for the one being decoded). */
static void drop_queued(struct ing_consumer *c)
{
    struct slot *sl;
    while (c->pipe != NULL && (sl = ing_pipe_pop(c->pipe, -1)) != NULL)
        slot_done(c, sl);
}

/* Handles the messages in the decode stage, in order, until one fails; the rest (all of them
 * after an earlier fatal error) are dropped unhandled, to be read again later. */
static int finish_queued(struct ing_consumer *c, struct st_err *err)
{
    bool go = c->fatal.code == ST_OK;
    int rc = ST_OK;
    struct slot *sl;
    while (c->pipe != NULL && (sl = ing_pipe_pop(c->pipe, -1)) != NULL) {
        if (go && rc == ST_OK)
            rc = handle(c, sl, err);
        slot_done(c, sl);
    }
    return rc;
}

/*
 * The last commit, made to stick. A commit refused because the group is between generations (a
 * member joined or left a moment ago) makes librdkafka give the assignment up as lost and
 * rejoin; a partition assigned again resumes from its committed offset, so what was written
 * since is read again and skipped by the stores' applied marks. Consumption therefore goes on
 * (for up to close_catchup_ms, reading nothing past what had been handled) until every
 * partition still ours, or lost and not yet assigned again, has its last handled offset
 * committed: a clean shutdown leaves the group's offsets at what was written. Idle partitions
 * (nothing handled) are not waited for. Past the deadline, or for a partition that moved to
 * another member, the data is still durable and merely read again.
 * After a failure (!go_on) what was handled is committed once and nothing more is read.
 */
static int commit_at_close(struct ing_consumer *c, bool go_on, struct st_err *err)
{
    size_t n = c->n_parts; /* parts only grow: an index stays the same partition */
    for (size_t i = 0; i < c->n_parts; i++) {
        struct part *p = &c->parts[i];
        p->close_upto = p->assigned && p->handled >= 0 ? p->handled + 1 : -1;
    }
    c->closing = true; /* from here on nothing new is read (feed) */
    rd_kafka_resp_err_t ke;
    int rc = commit_round(c, NULL, &ke, err);
    for (int64_t dl = now_ms() + c->o.close_catchup_ms;
         go_on && rc == ST_OK && c->fatal.code == ST_OK && now_ms() < dl;) {
        bool behind = false;
        for (size_t i = 0; i < n; i++) {
            const struct part *p = &c->parts[i];
            behind |=
                p->close_upto >= 0 && (p->assigned || p->lost) && p->committed < p->close_upto;
        }
        if (!behind && !commit_retriable(ke))
            break;
        rc = ing_consumer_poll(c, 100, err);
        if (rc == ST_OK)
            rc = finish_queued(c, err);
        if (rc == ST_OK)
            rc = commit_round(c, NULL, &ke, err);
    }
    return rc;
}

int ing_consumer_close(struct ing_consumer *c)
{
    if (c == NULL)
        return ST_OK;
    int rc = ST_OK;
    if (c->rk != NULL) {
        struct st_err err = {0};
        /* What was read is handled (as before the decode stage existed), then committed. */
        rc = finish_queued(c, &err);
        int crc = commit_at_close(c, rc == ST_OK, &err);
        if (rc == ST_OK)
            rc = crc;
        drop_queued(c); /* empty already (finish_queued); never after the handle is gone */
        rd_kafka_consumer_close(c->rk); /* revokes (the callback commits) and leaves */
        if (c->commit_q != NULL) {
            /* An asynchronous round still out is superseded by the synchronous ones above. */
            (void)rd_kafka_queue_poll_callback(c->commit_q, 0);
            rd_kafka_queue_destroy(c->commit_q);
        }
        rd_kafka_destroy(c->rk);
    }
    for (size_t i = 0; i < c->n_parts; i++)
        free(c->parts[i].topic);
    free(c->parts);
    ing_pipe_close(c->pipe);
    for (size_t k = 0; k < DECODE_DEPTH; k++) {
        for (size_t i = 0; c->slots[k].writers != NULL && i < c->o.n_colls; i++)
            ing_writer_free(c->slots[k].writers[i]);
        free(c->slots[k].writers);
        rec_decoder_free(c->slots[k].dec);
    }
    for (size_t i = 0; c->topics != NULL && i < c->n_topics; i++) {
        free(c->topics[i].colls);
        free(c->topics[i].src);
    }
    free(c->topics);
    free(c->coll_records);
    free(c->apply_lag);
    free(c->held_out);
    free(c->short_at);
    free(c->rej);
    free(c->lag);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return rc;
}
