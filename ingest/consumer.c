/* The consumer loop: decode, write or dead-letter, group-commit offsets after fsync. */
#include "consumer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_clock.h"
#include "st_log.h"

struct part {
    const struct ing_collection *coll; /* the topic's first collection (for twcs assignment) */
    char *topic;
    int32_t partition;
    int64_t handled;   /* last offset whose effect is in a store or the DLQ (-1: none) */
    int64_t committed; /* next offset committed to Kafka (-1: none by us) */
    bool assigned;
    bool paused;
    int64_t retry_offset; /* paused: the message to read again */
    int64_t resume_at_ms;
    int64_t paused_at_ms; /* paused: since when (for ing_stats.paused_ms) */
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
    struct rec_decoder *dec;
    struct ing_writer **writers; /* per collection */
    struct topic_schema *topics;
    size_t n_topics;
    struct part *parts;
    size_t n_parts, cap_parts;
    int64_t next_commit_ms;
    struct ing_stats st;
    struct st_err fatal; /* set in the rebalance callback, reported by the next poll */
    bool rebalanced;     /* the rebalance callback ran at least once */

    /* What /metrics reads from other threads, guarded by mu. */
    pthread_mutex_t mu;
    struct ing_stats pub_st;
    uint64_t *coll_records;
    struct ing_reject_count *rej;
    size_t nrej, caprej;
    struct ing_lag *lag;
    size_t nlag;
    int64_t next_lag_ms;
};

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

/* Commits l (offsets whose messages are durable) and remembers what was committed. */
static void commit_list(struct ing_consumer *c, rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_resp_err_t ke = rd_kafka_commit(c->rk, l, 0 /* sync */);
    if (ke == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < l->cnt; i++) {
            struct part *p = part_get(c, l->elems[i].topic, l->elems[i].partition, false);
            if (p != NULL && l->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
                p->committed = l->elems[i].offset;
        }
        c->st.commits++;
    } else {
        /* Not fatal: the data is durable, the next round commits again (a rebalance in
         * between means redelivery, which the applied marks skip). */
        st_log_warn("ingest", "offset commit failed: %s", rd_kafka_err2str(ke));
    }
}

/*
 * Makes everything written so far durable, then commits for each partition in `only` (or all
 * assigned ones) the position after its last handled message.
 */
static int commit_round(struct ing_consumer *c, const rd_kafka_topic_partition_list_t *only,
                        struct st_err *err)
{
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
    commit_list(c, l);
    rd_kafka_topic_partition_list_destroy(l);
    return ST_OK;
}

/*
 * The periodic round, which never waits for an fsync: per assigned partition it commits the
 * position up to which every handled message is durable, read from the stores' marks (the WAL
 * syncer's group commits advance them in the background). For each store of the partition's
 * topic that holds an applied but not yet durable message of it, the commit stops just after
 * that store's durable mark; messages between that point and the last handled one are
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
    if (l->cnt > 0)
        commit_list(c, l);
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

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct ing_consumer *c = opaque;
    c->rebalanced = true;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            struct part *p = part_get(c, parts->elems[i].topic, parts->elems[i].partition, true);
            if (p != NULL) {
                if (p->paused)
                    c->st.paused_ms += (uint64_t)(now_ms() - p->paused_at_ms);
                p->assigned = true;
                p->paused = false;
                p->handled = -1; /* resume from the committed offset: replays are skipped */
                p->committed = -1;
            }
        }
        rd_kafka_error_t *ke = rd_kafka_incremental_assign(rk, parts);
        if (ke != NULL) {
            st_err_set(&c->fatal, ST_EIO, "incremental assign: %s", rd_kafka_error_string(ke));
            rd_kafka_error_destroy(ke);
        }
    } else if (e == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* Durable, committed, then released. */
        struct st_err err = {0};
        if (commit_round(c, parts, &err) != ST_OK)
            st_err_set(&c->fatal, err.code, "%s", err.msg);
        for (int i = 0; i < parts->cnt; i++) {
            struct part *p = part_get(c, parts->elems[i].topic, parts->elems[i].partition, false);
            if (p != NULL)
                p->assigned = false;
        }
        rd_kafka_error_t *ke = rd_kafka_incremental_unassign(rk, parts);
        if (ke != NULL)
            rd_kafka_error_destroy(ke);
    } else {
        st_log_error("ingest", "rebalance error: %s", rd_kafka_err2str(e));
        for (int i = 0; i < parts->cnt; i++) { /* released: no longer ours to report */
            struct part *p = part_get(c, parts->elems[i].topic, parts->elems[i].partition, false);
            if (p != NULL)
                p->assigned = false;
        }
        rd_kafka_error_t *ke = rd_kafka_incremental_unassign(rk, parts);
        if (ke != NULL)
            rd_kafka_error_destroy(ke);
    }
    int rc = tell_twcs(c);
    if (rc != ST_OK && c->fatal.code == ST_OK)
        st_err_set(&c->fatal, rc, "telling the windows about partitions: %s", st_strerror(rc));
    tell_hook(c);
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
    if (c->o.pause_ms <= 0)
        c->o.pause_ms = 50;
    int rc = ST_ENOMEM;
    c->dec = rec_decoder_new();
    c->writers = calloc(o->n_colls, sizeof(*c->writers));
    c->coll_records = calloc(o->n_colls ? o->n_colls : 1, sizeof(*c->coll_records));
    c->topics = calloc(o->n_colls, sizeof(*c->topics));
    if (c->dec == NULL || c->writers == NULL || c->topics == NULL || c->coll_records == NULL)
        goto fail;
    for (size_t i = 0; i < o->n_colls; i++) {
        const struct ing_collection *coll = &o->colls[i];
        if ((c->writers[i] = ing_writer_new(coll->rc.dim, coll->cosine)) == NULL)
            goto fail;
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
        {"partition.assignment.strategy", "cooperative-sticky"},
        {"enable.auto.commit", "false"}, /* offsets only after fsync */
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "false"},
    };
    /* The operator's properties first, ours last: the guarantees depend on ours. */
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
    rd_kafka_conf_set_opaque(conf, c);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof(es));
    if (c->rk == NULL) {
        rc = st_err_set(err, ST_EINVAL, "kafka consumer: %s", es);
        goto fail;
    }
    rd_kafka_poll_set_consumer(c->rk);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new((int)c->n_topics);
    for (size_t i = 0; i < c->n_topics; i++)
        rd_kafka_topic_partition_list_add(sub, c->topics[i].topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t ke = rd_kafka_subscribe(c->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (ke != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = st_err_set(err, ST_EINVAL, "kafka subscribe: %s", rd_kafka_err2str(ke));
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

static int handle(struct ing_consumer *c, rd_kafka_message_t *m, struct st_err *err)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    struct part *p = part_get(c, topic, m->partition, true);
    if (p == NULL)
        return st_err_set(err, ST_ENOMEM, "out of memory");
    if (p->paused || !p->assigned || m->offset <= p->handled)
        return ST_OK; /* read again after the pause / not ours any more / already handled */
    const struct topic_schema *ts = schema_of(c, topic);
    const char *ct = NULL;
    size_t ct_len = 0;
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_header_get_last(h, "content-type", (const void **)&ct, &ct_len);
    struct rec_batch b;
    char detail[256];
    enum rec_reason rr = rec_decode(c->dec, &ts->schema, rec_kind_of(ct, ct_len), m->payload,
                                    m->len, &b, detail, sizeof(detail));
    const char *reason = NULL;
    const struct ing_collection *dl = p->coll; /* whose dead-letter topic */
    /* Whose rejection it is: the decoded collection, else the topic's only one. */
    size_t mcoll = ts->n == 1 ? (size_t)(ts->src[0] - c->o.colls) : SIZE_MAX;
    c->st.messages++;
    if (rr != REC_OK) {
        reason = rec_reason_str(rr);
    } else {
        size_t ci = coll_index(c, b.coll, ts);
        mcoll = ci;
        dl = &c->o.colls[ci];
        rd_kafka_timestamp_type_t tt;
        int64_t mts = rd_kafka_message_timestamp(m, &tt);
        struct ing_result res;
        int rc = ing_write(c->writers[ci], c->o.colls[ci].twcs, &b, m->partition, m->offset,
                           tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : mts, &res);
        if (rc != ST_OK)
            return st_err_set(err, rc, "%s: writing %s/%" PRId32 "/%" PRId64 ": %s",
                              c->o.colls[ci].rc.name, topic, m->partition, m->offset,
                              st_strerror(rc));
        switch (res.outcome) {
        case ING_APPLIED:
            c->st.records += b.n;
            pthread_mutex_lock(&c->mu);
            c->coll_records[ci] += b.n;
            pthread_mutex_unlock(&c->mu);
            break;
        case ING_DUPLICATE:
            c->st.duplicates++;
            break;
        case ING_RETRY: {
            /* Full: pause the partition, come back to this very message later. */
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, topic, m->partition)->offset = m->offset;
            rd_kafka_pause_partitions(c->rk, l);
            rd_kafka_error_t *se = rd_kafka_seek_partitions(c->rk, l, 5000);
            if (se != NULL)
                rd_kafka_error_destroy(se);
            rd_kafka_topic_partition_list_destroy(l);
            p->paused = true;
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
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    int rc = ST_OK;
    if (m != NULL) {
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = handle(c, m, err);
        else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            st_log_warn("ingest", "kafka: %s", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
    if (rc == ST_OK && now_ms() >= c->next_commit_ms) {
        rc = durable_round(c);
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
    return commit_round(c, NULL, err);
}

void ing_consumer_stats(struct ing_consumer *c, struct ing_stats *out)
{
    *out = c->st;
}

int ing_consumer_close(struct ing_consumer *c)
{
    if (c == NULL)
        return ST_OK;
    int rc = ST_OK;
    if (c->rk != NULL) {
        struct st_err err = {0};
        rc = commit_round(c, NULL, &err);
        /* librdkafka before 2.3 aborts when a cooperative-sticky consumer is destroyed after
         * joining the group but before its first assignment (its issue 4312; Debian 12 ships
         * 2.0.2): give that assignment up to 3 s to arrive. Messages polled meanwhile are not
         * handled, so their offsets are not committed: they are consumed again later. */
        for (int i = 0; i < 30 && !c->rebalanced; i++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);
            if (m != NULL)
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(c->rk); /* revokes (the callback commits) and leaves */
        rd_kafka_destroy(c->rk);
    }
    for (size_t i = 0; i < c->n_parts; i++)
        free(c->parts[i].topic);
    free(c->parts);
    for (size_t i = 0; c->writers != NULL && i < c->o.n_colls; i++)
        ing_writer_free(c->writers[i]);
    free(c->writers);
    for (size_t i = 0; c->topics != NULL && i < c->n_topics; i++) {
        free(c->topics[i].colls);
        free(c->topics[i].src);
    }
    free(c->topics);
    rec_decoder_free(c->dec);
    free(c->coll_records);
    free(c->rej);
    free(c->lag);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return rc;
}
