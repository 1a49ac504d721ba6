/*
 * produce.c — produce_run (produce.h): records -> batches -> Kafka messages.
 *
 * A batch holds copies of its records (the source's pointers live only until its next call).
 * It is encoded when it closes: JSON per SPEC §4.1 (floats with 9 significant digits, which
 * round-trip float32 exactly) or a binary frame by rec_frame_encode. The encoded value is
 * handed to librdkafka (RD_KAFKA_MSG_F_FREE), so memory stays bounded by librdkafka's queue.
 */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "produce.h"
#include "rec_format.h"
#include "st_coding.h"

/* ---- a growable byte buffer ---- */

struct buf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void buf_grow(struct buf *b, size_t more)
{
    if (b->oom || b->n + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_add(struct buf *b, const void *s, size_t n)
{
    buf_grow(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* A string literal without its NUL: the length is the compiler's, never counted by hand. */
#define BUF_LIT(b, lit) buf_add((b), "" lit, sizeof(lit) - 1)

static void buf_printf(struct buf *b, const char *fmt, ...) ST_PRINTF(2, 3);
static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        buf_add(b, tmp, (size_t)n);
        return;
    }
    buf_grow(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* A JSON string literal of s (len bytes). */
static void buf_json_str(struct buf *b, const char *s, size_t len)
{
    BUF_LIT(b, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_add(b, &s[i], 1);
        }
    }
    BUF_LIT(b, "\"");
}

/* A float as JSON that parses back to the same float32: 9 significant digits, with a fast
 * path for small integers (pixels, counts), which are common and cost a printf each. */
static void buf_float(struct buf *b, float v, bool comma)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    if (v == (float)(int32_t)v && fabsf(v) < 1e7f && !(v == 0.0f && signbit(v))) {
        int32_t n = (int32_t)v;
        uint32_t u = n < 0 ? (uint32_t)(-(int64_t)n) : (uint32_t)n;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u != 0);
        if (n < 0)
            *--p = '-';
        if (comma)
            *--p = ',';
        buf_add(b, p, (size_t)(tmp + sizeof(tmp) - p));
        return;
    }
    buf_printf(b, comma ? ",%.9g" : "%.9g", (double)v);
}

/* ---- the open batch ---- */

struct batch {
    uint32_t n, cap, dim;
    int32_t partition;
    bool u64;
    struct buf ids;   /* string ids, each NUL-terminated */
    size_t *id_off;   /* cap: offset of record i's id in ids */
    uint8_t *id_be;   /* cap * 8: u64 ids, big-endian */
    int64_t *ts;      /* cap */
    uint8_t *op;      /* cap */
    float *vecs;      /* cap * dim */
    struct buf metas; /* each meta NUL-terminated; meta_off SIZE_MAX = none */
    size_t *meta_off;
    uint32_t *slots; /* open addressing on ids: record index + 1, 0 = empty */
    uint32_t nslots;
};

static uint64_t id_hash(const struct batch *b, uint32_t i)
{
    const uint8_t *p;
    size_t n;
    if (b->u64) {
        p = b->id_be + (size_t)i * 8;
        n = 8;
    } else {
        p = (const uint8_t *)b->ids.p + b->id_off[i];
        n = strlen((const char *)p);
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++)
        h = (h ^ p[k]) * 1099511628211ull;
    return h;
}

static bool id_eq(const struct batch *b, uint32_t i, uint32_t j)
{
    if (b->u64)
        return memcmp(b->id_be + (size_t)i * 8, b->id_be + (size_t)j * 8, 8) == 0;
    return strcmp(b->ids.p + b->id_off[i], b->ids.p + b->id_off[j]) == 0;
}

static int batch_init(struct batch *b, uint32_t cap, uint32_t dim, bool u64)
{
    *b = (struct batch){.cap = cap, .dim = dim, .u64 = u64, .partition = -1};
    b->nslots = 16;
    while (b->nslots < cap * 2)
        b->nslots *= 2;
    b->id_off = calloc(cap, sizeof(size_t));
    b->id_be = calloc(cap, 8);
    b->ts = calloc(cap, sizeof(int64_t));
    b->op = calloc(cap, 1);
    b->vecs = calloc((size_t)cap * dim, sizeof(float));
    b->meta_off = calloc(cap, sizeof(size_t));
    b->slots = calloc(b->nslots, sizeof(uint32_t));
    if (!b->id_off || !b->id_be || !b->ts || !b->op || !b->vecs || !b->meta_off || !b->slots)
        return ST_ENOMEM;
    return ST_OK;
}

static void batch_free(struct batch *b)
{
    free(b->ids.p);
    free(b->id_off);
    free(b->id_be);
    free(b->ts);
    free(b->op);
    free(b->vecs);
    free(b->metas.p);
    free(b->meta_off);
    free(b->slots);
}

static void batch_reset(struct batch *b)
{
    b->n = 0;
    b->ids.n = 0;
    b->metas.n = 0;
    b->partition = -1;
    memset(b->slots, 0, b->nslots * sizeof(uint32_t));
}

/* Adds r as record n; returns false (nothing added) when its id is already in the batch. */
static bool batch_add(struct batch *b, const struct produce_rec *r)
{
    uint32_t i = b->n;
    size_t ids_before = b->ids.n;
    if (b->u64) {
        st_put_be64(b->id_be + (size_t)i * 8, r->id_u64);
    } else {
        b->id_off[i] = b->ids.n;
        buf_add(&b->ids, r->id, strlen(r->id) + 1);
        if (b->ids.oom)
            return true; /* reported by the caller through ids.oom */
    }
    uint32_t mask = b->nslots - 1, h = (uint32_t)id_hash(b, i) & mask;
    for (; b->slots[h] != 0; h = (h + 1) & mask)
        if (id_eq(b, b->slots[h] - 1, i)) {
            b->ids.n = ids_before;
            return false;
        }
    b->slots[h] = i + 1;
    b->ts[i] = r->ts;
    b->op[i] = r->del ? REC_DELETE : REC_UPSERT;
    float *v = b->vecs + (size_t)i * b->dim;
    if (r->del || r->vec == NULL)
        memset(v, 0, (size_t)b->dim * sizeof(float));
    else
        memcpy(v, r->vec, (size_t)b->dim * sizeof(float));
    if (r->meta_json != NULL) {
        b->meta_off[i] = b->metas.n;
        buf_add(&b->metas, r->meta_json, strlen(r->meta_json) + 1);
    } else {
        b->meta_off[i] = SIZE_MAX;
    }
    if (i == 0)
        b->partition = r->partition;
    b->n++;
    return true;
}

static int batch_json(const struct batch *b, const char *coll, struct buf *o)
{
    BUF_LIT(o, "{");
    if (coll != NULL) {
        BUF_LIT(o, "\"collection\":");
        buf_json_str(o, coll, strlen(coll));
        BUF_LIT(o, ",");
    }
    BUF_LIT(o, "\"records\":[");
    for (uint32_t i = 0; i < b->n; i++) {
        if (i > 0)
            BUF_LIT(o, ",");
        BUF_LIT(o, "{\"id\":");
        if (b->u64) {
            /* 2^63 and above as a string of digits: JSON integers stop at 2^63 - 1 for the
             * ingest's reader (and for most others). */
            uint64_t v = st_get_be64(b->id_be + (size_t)i * 8);
            if (v > INT64_MAX)
                buf_printf(o, "\"%" PRIu64 "\"", v);
            else
                buf_printf(o, "%" PRIu64, v);
        } else {
            const char *id = b->ids.p + b->id_off[i];
            buf_json_str(o, id, strlen(id));
        }
        if (b->ts[i] != 0)
            buf_printf(o, ",\"ts\":%" PRId64, b->ts[i]);
        if (b->op[i] == REC_DELETE) {
            BUF_LIT(o, ",\"op\":\"delete\"");
        } else {
            BUF_LIT(o, ",\"vector\":[");
            const float *v = b->vecs + (size_t)i * b->dim;
            for (uint32_t d = 0; d < b->dim; d++)
                buf_float(o, v[d], d > 0);
            BUF_LIT(o, "]");
        }
        if (b->meta_off[i] != SIZE_MAX) {
            BUF_LIT(o, ",\"meta\":");
            const char *m = b->metas.p + b->meta_off[i];
            buf_add(o, m, strlen(m));
        }
        BUF_LIT(o, "}");
    }
    BUF_LIT(o, "]}");
    return o->oom ? ST_ENOMEM : ST_OK;
}

static int batch_frame(const struct batch *b, const char *coll, uint8_t **out, size_t *len)
{
    struct rec_record *r = calloc(b->n, sizeof(*r));
    if (r == NULL)
        return ST_ENOMEM;
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->u64) {
            r[i].id = b->id_be + (size_t)i * 8;
            r[i].id_len = 8;
        } else {
            r[i].id = (const uint8_t *)b->ids.p + b->id_off[i];
            r[i].id_len = (uint32_t)strlen(b->ids.p + b->id_off[i]);
        }
        r[i].ts = b->ts[i] != 0 ? b->ts[i] : REC_TS_ABSENT;
        r[i].op = b->op[i];
        r[i].vec = b->op[i] == REC_DELETE ? NULL : b->vecs + (size_t)i * b->dim;
        if (b->meta_off[i] != SIZE_MAX) {
            r[i].meta = (const uint8_t *)b->metas.p + b->meta_off[i];
            r[i].meta_len = (uint32_t)strlen(b->metas.p + b->meta_off[i]);
        }
    }
    int rc = rec_frame_encode(coll, b->dim, b->u64, r, b->n, out, len);
    free(r);
    return rc;
}

/* ---- the run ---- */

struct run {
    const struct produce_opts *o;
    rd_kafka_t *rk;
    struct produce_stats st;
    uint64_t failed;
    char first_fail[256];
    char refused[512]; /* the brokers refused the credentials or the TLS handshake */
    struct timespec t0;
    double last_progress;
    bool bucket; /* the rate limit's token bucket (pace) */
    double tokens, filled;
};

static double since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct run *r = opaque;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r->st.delivered++;
        return;
    }
    if (r->failed++ == 0)
        snprintf(r->first_fail, sizeof(r->first_fail), "%s", rd_kafka_err2str(m->err));
}

static void progress(struct run *r, bool final)
{
    r->st.seconds = since(&r->t0);
    int every = r->o->progress_ms > 0 ? r->o->progress_ms : 500;
    if (!final && r->st.seconds - r->last_progress < every / 1000.0)
        return;
    r->last_progress = r->st.seconds;
    if (r->o->progress != NULL) {
        r->o->progress(r->o->progress_ud, &r->st, r->o->total, final);
    } else if (r->o->progress_file != NULL) {
        double rps = r->st.seconds > 0 ? (double)r->st.records / r->st.seconds : 0;
        if (r->o->total > 0)
            fprintf(r->o->progress_file,
                    "produced %" PRIu64 "/%" PRIu64 " records (%.0f%%) %.0f records/s\n",
                    r->st.records, r->o->total, 100.0 * (double)r->st.records / (double)r->o->total,
                    rps);
        else
            fprintf(r->o->progress_file, "produced %" PRIu64 " records %.0f records/s\n",
                    r->st.records, rps);
        fflush(r->o->progress_file);
    }
}

/* The message of batch b as o->format says: *val (malloc'd) of *len bytes, its content-type. */
static int encode_batch(const struct produce_opts *o, const struct batch *b, uint64_t first,
                        uint8_t **val, size_t *len, const char **ctype, struct st_err *err)
{
    int rc;
    *val = NULL;
    *len = 0;
    if (o->format == PRODUCE_BINARY) {
        rc = batch_frame(b, o->collection, val, len);
        *ctype = "application/vnd.strata.batch";
        if (rc == ST_EINVAL)
            return st_err_set(err, rc,
                              "record %" PRIu64 "..%" PRIu64 ": the binary frame cannot carry "
                              "them (id or meta too long?)",
                              first, first + b->n - 1);
    } else {
        struct buf jb = {0};
        rc = batch_json(b, o->collection, &jb);
        *val = (uint8_t *)jb.p;
        *len = jb.n;
        *ctype = "application/json";
        if (rc != ST_OK) {
            free(jb.p);
            *val = NULL;
        }
    }
    if (rc != ST_OK)
        return st_err_set(err, rc, "encoding a batch: %s", st_strerror(rc));
    return ST_OK;
}

static void pace(struct run *r, const struct batch *b);

static int send_batch(struct run *r, struct batch *b, struct st_err *err)
{
    if (b->n == 0)
        return ST_OK;
    /* What was read is sent, even when a cancel cut the rate limit's wait short: one batch
     * early, the burst the limit allows anyway. */
    pace(r, b);
    const struct produce_opts *o = r->o;
    uint8_t *val = NULL;
    size_t len = 0;
    const char *ctype;
    int rc = encode_batch(o, b, r->st.records, &val, &len, &ctype, err);
    if (rc != ST_OK)
        return rc;
    char key[32];
    const char *k;
    if (b->u64) {
        snprintf(key, sizeof(key), "%" PRIu64, st_get_be64(b->id_be));
        k = key;
    } else {
        k = b->ids.p;
    }
    int32_t part = b->partition >= 0 ? b->partition : RD_KAFKA_PARTITION_UA;
    for (;;) {
        rd_kafka_resp_err_t e =
            rd_kafka_producev(r->rk, RD_KAFKA_V_TOPIC(o->topic), RD_KAFKA_V_PARTITION(part),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_VALUE(val, len),
                              /* the macro casts its key to void *: clang's -Wcast-qual sees
                               * it here (gcc not, in a system header's macro) */
                              RD_KAFKA_V_KEY((void *)(uintptr_t)k, strlen(k)),
                              RD_KAFKA_V_HEADER("content-type", ctype, -1), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (o->abandon != NULL && atomic_load(o->abandon)) { /* a second Ctrl-C */
                free(val);
                return st_err_set(err, ST_EIO,
                                  "producing to %s: the queue stayed full and the wait was "
                                  "abandoned",
                                  o->topic);
            }
            rd_kafka_poll(r->rk, 50);
            continue;
        }
        free(val);
        return st_err_set(err, ST_EIO, "producing to %s: %s%s", o->topic, rd_kafka_err2str(e),
                          e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? " (use a smaller --batch)"
                                                                    : "");
    }
    r->st.records += b->n;
    r->st.messages++;
    r->st.bytes += len;
    batch_reset(b);
    rd_kafka_poll(r->rk, 0);
    return ST_OK;
}

/* Bad credentials or certificates: librdkafka would retry until message.timeout.ms (5
 * minutes); nothing will be delivered, so the run gives up at once with the reason. */
static void on_error(rd_kafka_t *rk, int e, const char *reason, void *opaque)
{
    (void)rk;
    struct run *r = opaque;
    if ((e == RD_KAFKA_RESP_ERR__AUTHENTICATION || e == RD_KAFKA_RESP_ERR__SSL ||
         e == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED) &&
        r->refused[0] == '\0')
        snprintf(r->refused, sizeof(r->refused), "kafka %s: %s",
                 e == RD_KAFKA_RESP_ERR__SSL ? "TLS" : "authentication", reason);
}

static bool abandoned(const struct run *r)
{
    return (r->o->abandon != NULL && atomic_load(r->o->abandon)) || r->refused[0] != '\0';
}

static bool cancelled(const struct run *r)
{
    return (r->o->cancel != NULL && atomic_load(r->o->cancel)) || abandoned(r);
}

/* The rate limit, a token bucket of one batch's tokens (b->cap) filled at rate per second
 * (full at the start), paid for by whole batches: waits (serving delivery reports) until the
 * bucket holds the b->n records of the batch, then takes them. At most a batch + rate * t records
 * leave in any t seconds, as when the limit was paid for per record; while the source keeps up, a
 * full message leaves when it did then (with the tokens of its last record). But the producer
 * wakes once a message instead of once a record (67 us apart at 15,000 records/s, which on a
 * host shared with what it loads preempted those threads thousands of times a second). Idle
 * time never banks more than one burst, so a stall (a slow source, a full queue) is not
 * followed by a catch-up flood. Returns at once when a cancel comes (the wait may be long:
 * b->n / rate). */
static void pace(struct run *r, const struct batch *b)
{
    double rate = r->o->rate;
    if (rate <= 0)
        return;
    double burst = b->cap, n = b->n;
    if (!r->bucket) {
        r->bucket = true;
        r->tokens = burst;
        r->filled = since(&r->t0);
    }
    for (;;) {
        double now = since(&r->t0);
        r->tokens += (now - r->filled) * rate;
        r->filled = now;
        if (r->tokens > burst)
            r->tokens = burst;
        if (r->tokens >= n) {
            r->tokens -= n;
            return;
        }
        if (cancelled(r))
            return;
        double wait_ms = (n - r->tokens) / rate * 1000.0;
        if (wait_ms >= 1.0) {
            rd_kafka_poll(r->rk, wait_ms > 100 ? 100 : (int)wait_ms);
        } else {
            struct timespec ts = {0, (long)(wait_ms * 1e6) + 1000};
            nanosleep(&ts, NULL);
        }
    }
}

static int check_rec(const struct produce_rec *x, uint32_t dim, uint64_t i, struct st_err *err)
{
    if (!x->u64 && (x->id == NULL || x->id[0] == '\0' || strlen(x->id) > REC_ID_MAX))
        return st_err_set(err, ST_EINVAL, "record %" PRIu64 ": id must be 1..%u bytes", i,
                          REC_ID_MAX);
    if (x->del)
        return ST_OK;
    if (x->vec == NULL || x->dim != dim)
        return st_err_set(err, ST_EINVAL, "record %" PRIu64 ": vector of %" PRIu32 " dims, %s %u",
                          i, x->vec == NULL ? 0 : x->dim, i ? "earlier records have" : "expected",
                          dim);
    for (uint32_t d = 0; d < dim; d++)
        if (!isfinite(x->vec[d]))
            return st_err_set(err, ST_EINVAL, "record %" PRIu64 ": vector[%u] is not finite", i, d);
    if (x->meta_json != NULL && (x->meta_json[0] != '{' || strlen(x->meta_json) > REC_META_MAX))
        return st_err_set(err, ST_EINVAL,
                          "record %" PRIu64 ": meta must be a JSON object of at "
                          "most %u bytes",
                          i, REC_META_MAX);
    return ST_OK;
}

/* The producer, made when the first record is in hand (a source that fails at once, or is
 * empty, starts no librdkafka threads). */
static int start_producer(struct run *r, const struct produce_opts *o, struct st_err *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr))) {
        rd_kafka_conf_destroy(conf);
        return st_err_set(err, ST_EINVAL, "kafka: %s", errstr);
    }
    for (const char *const *p = o->props; p != NULL && *p != NULL; p++) {
        const char *eq = strchr(*p, '=');
        char key[256];
        if (eq == NULL || eq == *p || (size_t)(eq - *p) >= sizeof(key)) {
            rd_kafka_conf_destroy(conf);
            return st_err_set(err, ST_EINVAL, "kafka property '%s': not key=value", *p);
        }
        memcpy(key, *p, (size_t)(eq - *p));
        key[eq - *p] = '\0';
        if (rd_kafka_conf_set(conf, key, eq + 1, errstr, sizeof(errstr))) {
            rd_kafka_conf_destroy(conf);
            return st_err_set(err, ST_EINVAL, "kafka property '%s': %s", key, errstr);
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, r);
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (r->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return st_err_set(err, ST_EINVAL, "kafka: %s", errstr);
    }
    return ST_OK;
}

/* The final flush: waits up to tmo ms for every delivery report, in slices so that an abandon
 * is noticed. Abandoned, the queues are purged (those reports say so) and it returns true. */
static bool final_flush(struct run *r, int tmo)
{
    double end = since(&r->t0) + tmo / 1000.0;
    while (rd_kafka_outq_len(r->rk) > 0) {
        if (abandoned(r)) {
            rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            /* serve the purged messages' reports; bounded, nothing waits on a broker now */
            for (int k = 0; k < 20 && rd_kafka_outq_len(r->rk) > 0; k++)
                rd_kafka_poll(r->rk, 100);
            return true;
        }
        double left = end - since(&r->t0);
        if (left <= 0)
            break;
        rd_kafka_flush(r->rk, left > 0.1 ? 100 : (int)(left * 1000) + 1);
    }
    return false;
}

/* The dim of a batch of up to nrec records whose first is x (record i): opts.dim, else x's
 * own; a delete without one makes no frame (frames carry the collection's dim), and JSON needs
 * none. ST_EINVAL too when the batch's vectors would pass PRODUCE_BATCH_MAX. */
static int batch_dim(const struct produce_opts *o, const struct produce_rec *x, uint64_t i,
                     uint64_t nrec, uint32_t *dim, struct st_err *err)
{
    if (o->format == PRODUCE_BINARY && o->dim == 0 && x->dim == 0)
        return st_err_set(err, ST_EINVAL,
                          "record %" PRIu64 ": a delete without a dim: binary frames carry the "
                          "collection's dim (set opts.dim)",
                          i);
    *dim = o->dim ? o->dim : x->dim ? x->dim : 1;
    if (nrec * *dim * sizeof(float) > PRODUCE_BATCH_MAX)
        return st_err_set(err, ST_EINVAL,
                          "a batch of %" PRIu64 " records of dim %u is over %u MiB: use a smaller "
                          "batch",
                          nrec, *dim, (unsigned)(PRODUCE_BATCH_MAX >> 20));
    return ST_OK;
}

int produce_run(const struct produce_opts *o, produce_next_fn next, void *ctx,
                struct produce_stats *out, struct st_err *err)
{
    struct run r = {.o = o};
    struct batch b = {0};
    bool have_batch = false;
    int rc = ST_OK;
    clock_gettime(CLOCK_MONOTONIC, &r.t0);
    uint32_t bsz = o->batch ? o->batch : 100;
    if (o->brokers == NULL || o->topic == NULL || o->topic[0] == '\0') {
        rc = st_err_set(err, ST_EINVAL, "brokers and topic are required");
        goto out;
    }
    if (o->collection != NULL && strlen(o->collection) > 64) {
        rc = st_err_set(err, ST_EINVAL, "collection name over 64 bytes");
        goto out;
    }
    uint64_t i = 0;
    for (;; i++) {
        if (cancelled(&r))
            break;
        struct produce_rec x = {.partition = -1};
        int n = next(ctx, &x);
        if (n < 0) {
            rc = n;
            if (err != NULL && err->msg[0] == '\0')
                st_err_set(err, n, "the record source failed at record %" PRIu64 ": %s", i,
                           st_strerror(n));
            goto out;
        }
        if (n == 0)
            break;
        if (!have_batch) {
            rc = start_producer(&r, o, err);
            if (rc != ST_OK)
                goto out;
            uint32_t dim = 0;
            if ((rc = batch_dim(o, &x, i, bsz, &dim, err)) != ST_OK)
                goto out;
            if (batch_init(&b, bsz, dim, x.u64) != ST_OK) {
                rc = st_err_set(err, ST_ENOMEM, "no memory for a batch of %u records", bsz);
                goto out;
            }
            have_batch = true;
        }
        if (x.u64 != b.u64) {
            rc = st_err_set(err, ST_EINVAL, "record %" PRIu64 ": mixes integer and string ids", i);
            goto out;
        }
        rc = check_rec(&x, b.dim, i, err);
        if (rc != ST_OK)
            goto out;
        if (b.n > 0 && x.partition != b.partition) {
            rc = send_batch(&r, &b, err);
            if (rc != ST_OK)
                goto out;
        }
        if (!batch_add(&b, &x)) {
            rc = send_batch(&r, &b, err);
            if (rc != ST_OK)
                goto out;
            (void)batch_add(&b, &x);
        }
        if (b.ids.oom || b.metas.oom) {
            rc = st_err_set(err, ST_ENOMEM, "no memory for a batch");
            goto out;
        }
        if (b.n == bsz) { /* full: out now, not when the next record comes */
            rc = send_batch(&r, &b, err);
            if (rc != ST_OK)
                goto out;
        }
        progress(&r, false);
    }
    if (have_batch)
        rc = send_batch(&r, &b, err);
out:
    if (r.rk != NULL) {
        int tmo = o->flush_timeout_ms > 0 ? o->flush_timeout_ms : 60000;
        bool gave_up = final_flush(&r, tmo);
        int left = rd_kafka_outq_len(r.rk);
        char fatal[256];
        rd_kafka_resp_err_t fe = rd_kafka_fatal_error(r.rk, fatal, sizeof(fatal));
        if (rc == ST_OK && r.refused[0] != '\0')
            rc = st_err_set(err, ST_EIO,
                            "%s (check the security.protocol, sasl.* and ssl.* "
                            "properties)",
                            r.refused);
        if (rc == ST_OK && fe != RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = st_err_set(err, ST_EIO, "kafka fatal error: %s", fatal);
        if (rc == ST_OK && gave_up && r.st.delivered < r.st.messages)
            rc = st_err_set(err, ST_EIO,
                            "gave up waiting for acknowledgements: %" PRIu64 " of %" PRIu64
                            " messages not acknowledged (any in flight may still have reached "
                            "Kafka)",
                            r.st.messages - r.st.delivered, r.st.messages);
        if (rc == ST_OK && r.failed > 0)
            rc = st_err_set(err, ST_EIO, "%" PRIu64 " of %" PRIu64 " messages not delivered: %s",
                            r.failed, r.st.messages, r.first_fail);
        if (rc == ST_OK && left > 0)
            rc = st_err_set(err, ST_ETIMEDOUT,
                            "%d message(s) still not delivered after %d ms (brokers unreachable?)",
                            left, tmo);
        rd_kafka_destroy(r.rk);
    }
    if (have_batch)
        batch_free(&b);
    r.st.seconds = since(&r.t0);
    if (rc == ST_OK)
        progress(&r, true);
    if (out != NULL)
        *out = r.st;
    return rc;
}

int produce_encode(const struct produce_opts *o, const struct produce_rec *recs, size_t n,
                   uint8_t **out, size_t *len, struct st_err *err)
{
    *out = NULL;
    *len = 0;
    if (n == 0 || n > UINT32_MAX / 2)
        return st_err_set(err, ST_EINVAL, "a batch of 1..%u records", UINT32_MAX / 2);
    uint32_t dim = 0;
    int rc = batch_dim(o, &recs[0], 0, n, &dim, err);
    if (rc != ST_OK)
        return rc;
    struct batch b = {0};
    if (batch_init(&b, (uint32_t)n, dim, recs[0].u64) != ST_OK)
        return st_err_set(err, ST_ENOMEM, "no memory for a batch of %zu records", n);
    for (size_t i = 0; i < n && rc == ST_OK; i++) {
        if (recs[i].u64 != b.u64)
            rc = st_err_set(err, ST_EINVAL, "record %zu: mixes integer and string ids", i);
        else if ((rc = check_rec(&recs[i], b.dim, i, err)) == ST_OK && !batch_add(&b, &recs[i]))
            rc = st_err_set(err, ST_EINVAL, "record %zu: its id is already in the batch", i);
        else if (rc == ST_OK && (b.ids.oom || b.metas.oom))
            rc = st_err_set(err, ST_ENOMEM, "no memory for the batch's ids");
    }
    const char *ctype;
    if (rc == ST_OK)
        rc = encode_batch(o, &b, 0, out, len, &ctype, err);
    batch_free(&b);
    return rc;
}

/* ---- one record; whole files ---- */

struct one_src {
    const struct produce_rec *r;
    bool done;
};

static int one_next(void *ctx, struct produce_rec *out)
{
    struct one_src *o = ctx;
    if (o->done)
        return 0;
    o->done = true;
    *out = *o->r;
    return 1;
}

int produce_one(const char *brokers, const char *topic, const struct produce_rec *r,
                struct st_err *err)
{
    struct one_src src = {.r = r};
    struct produce_opts o = {
        .brokers = brokers, .topic = topic, .format = PRODUCE_BINARY, .batch = 1};
    struct produce_stats st;
    return produce_run(&o, one_next, &src, &st, err);
}

int produce_read_matrix(const char *path, size_t max_rows, struct produce_matrix *m,
                        struct st_err *err)
{
    *m = (struct produce_matrix){0};
    struct produce_src *s;
    int rc = produce_src_open(path, PRODUCE_IN_AUTO, false, &s, err);
    if (rc != ST_OK)
        return rc;
    uint64_t rows = produce_src_rows(s);
    uint32_t dim = produce_src_dim(s);
    if (dim == 0) { /* deletes only */
        produce_src_close(s);
        return st_err_set(err, ST_EINVAL, "%s: no record has a vector", path);
    }
    if (rows > max_rows)
        rows = max_rows;
    if (rows > SIZE_MAX / sizeof(float) / dim) {
        produce_src_close(s);
        return st_err_set(err, ST_ENOMEM, "%s: %" PRIu64 " rows of %u floats do not fit", path,
                          rows, dim);
    }
    float *data = malloc((size_t)rows * dim * sizeof(float) + 1);
    if (data == NULL) {
        produce_src_close(s);
        return st_err_set(err, ST_ENOMEM, "%s: no memory for %" PRIu64 " rows", path, rows);
    }
    struct produce_rec r;
    for (uint64_t i = 0; i < rows; i++) {
        int n = produce_src_next(s, &r);
        if (n != 1 || r.vec == NULL) {
            rc = n < 0 ? st_err_set(err, n, "%s", produce_src_error(s)->msg)
                       : st_err_set(err, ST_EINVAL, "%s: row %" PRIu64 " has no vector", path, i);
            free(data);
            produce_src_close(s);
            return rc;
        }
        memcpy(data + (size_t)i * dim, r.vec, (size_t)dim * sizeof(float));
    }
    produce_src_close(s);
    *m = (struct produce_matrix){.data = data, .rows = (size_t)rows, .dim = dim};
    return ST_OK;
}
