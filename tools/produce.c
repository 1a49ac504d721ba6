/* TEMPORARY (replaced by the producer library of the CLI change) */
#include "produce.h"
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "rec_format.h"
#include "st_clock.h"

static int64_t now_us(void)
{
    return st_clock_mono_ns(NULL) / 1000;
}
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int produce_read_matrix(const char *path, size_t max_rows, struct produce_matrix *m,
                        struct st_err *err)
{
    gzFile f = gzopen(path, "rb");
    if (f == NULL)
        return st_err_set(err, ST_EIO, "%s: cannot open", path);
    uint8_t h[16];
    if (gzread(f, h, 16) != 16 || be32(h) != 0x803) {
        gzclose(f);
        return st_err_set(err, ST_EINVAL, "%s: not idx3", path);
    }
    size_t n = be32(h + 4), dim = (size_t)be32(h + 8) * be32(h + 12);
    if (n > max_rows)
        n = max_rows;
    uint8_t *px = malloc(n * dim);
    float *out = malloc(n * dim * sizeof(float));
    if (gzread(f, px, (unsigned)(n * dim)) != (int)(n * dim)) {
        gzclose(f);
        free(px);
        free(out);
        return st_err_set(err, ST_EINVAL, "%s: truncated", path);
    }
    for (size_t i = 0; i < n * dim; i++)
        out[i] = px[i];
    free(px);
    gzclose(f);
    *m = (struct produce_matrix){out, n, (uint32_t)dim};
    return ST_OK;
}

static rd_kafka_t *mk(const char *brokers, struct st_err *err)
{
    char es[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", brokers, es, sizeof(es));
    rd_kafka_conf_set(c, "linger.ms", "1", es, sizeof(es));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof(es));
    if (rk == NULL)
        st_err_set(err, ST_EIO, "%s", es);
    return rk;
}

static int send_batch(rd_kafka_t *rk, const char *topic, const struct produce_rec *rs, uint32_t n,
                      uint64_t *ids, struct produce_stats *st, struct st_err *err)
{
    struct rec_record rr[1000];
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *b = (uint8_t *)&ids[i];
        uint64_t v = rs[i].id_u64;
        for (int k = 0; k < 8; k++)
            b[k] = (uint8_t)(v >> (56 - 8 * k));
        rr[i] = (struct rec_record){
            .id = b, .id_len = 8, .ts = rs[i].ts, .op = REC_UPSERT, .vec = rs[i].vec};
    }
    uint8_t *f;
    size_t len;
    if (rec_frame_encode(NULL, rs[0].dim, true, rr, n, &f, &len) != ST_OK)
        return st_err_set(err, ST_EINVAL, "encode");
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(rs[0].partition),
        RD_KAFKA_V_VALUE(f, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END);
    if (e) {
        free(f);
        return st_err_set(err, ST_EIO, "%s", rd_kafka_err2str(e));
    }
    st->messages++;
    st->bytes += len;
    st->records += n;
    rd_kafka_poll(rk, 0);
    return ST_OK;
}

int produce_run(const struct produce_opts *o, produce_source_fn next, void *ctx,
                struct produce_stats *st, struct st_err *err)
{
    *st = (struct produce_stats){0};
    rd_kafka_t *rk = mk(o->brokers, err);
    if (!rk)
        return ST_EIO;
    int64_t t0 = now_us();
    struct produce_rec rs[500];
    uint64_t ids[500];
    uint32_t n = 0;
    int rc = ST_OK;
    for (;;) {
        struct produce_rec r;
        int g = next(ctx, &r);
        if (g <= 0 || (n > 0 && (n == o->batch || r.partition != rs[0].partition))) {
            if (n > 0 && (rc = send_batch(rk, o->topic, rs, n, ids, st, err)) != ST_OK)
                break;
            n = 0;
        }
        if (g <= 0)
            break;
        rs[n++] = r;
    }
    /* Records of a partition must be contiguous for batching: this stub batches per run. */
    rd_kafka_flush(rk, 60000);
    rd_kafka_destroy(rk);
    st->seconds = (double)(now_us() - t0) / 1e6;
    if (o->on_progress)
        o->on_progress(o->progress_ctx, st, true);
    return rc;
}

int produce_one(const char *brokers, const char *topic, const struct produce_rec *r,
                struct st_err *err)
{
    rd_kafka_t *rk = mk(brokers, err);
    if (!rk)
        return ST_EIO;
    struct produce_stats st = {0};
    uint64_t id;
    int rc = send_batch(rk, topic, r, 1, &id, &st, err);
    rd_kafka_flush(rk, 10000);
    rd_kafka_destroy(rk);
    return rc;
}
