/*
 * JSON message decode throughput, one core (issue 14): rec_decode (simdjson, rec_json_fast.h)
 * next to rec_decode_ref (the jansson decoder) on the same messages.
 *
 *   bench_json_decode [--records 100] [--seconds 1] [--seed 1]
 *
 * Builds messages of `records` records of 768 and 384 floats (id, ts, vector, small meta), the
 * floats printed three ways: as Python's json.dumps prints a float32 turned float (the
 * shortest repr of the double: usually 16-17 digits), with "%.9g" (enough for any float32),
 * and as small integers (quantized embeddings). Decodes each message repeatedly for about
 * `seconds` of this thread's CPU time per decoder and prints input MB/s (JSON bytes) and
 * vector MB/s (dim x 4 bytes a record), both per core, and checks that both decoders return
 * the same bits.
 *
 * Then binary frames of the same records (with their meta objects): rec_decode, which checks
 * each meta on simdjson first, next to rec_decode_ref, which checks it with jansson alone.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rec_format.h"
#include "st_prom.h"

/* CPU time of this thread: per-core throughput, steady on a machine shared with other work. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_json_decode: %s\n", what);
    exit(1);
}

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The shortest "%.*g" that reads back as x (Python's repr of the double, near enough). */
static void put_shortest(struct st_text *b, double x)
{
    char t[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(t, sizeof(t), "%.*g", p, x);
        if (strtod(t, NULL) == x)
            break;
    }
    st_text_printf(b, "%s", t);
}

enum style { STYLE_REPR, STYLE_G9, STYLE_INT, STYLE_COUNT };
static const char *const style_name[STYLE_COUNT] = {"repr", "%.9g", "int"};

static void build(struct st_text *b, uint32_t dim, uint32_t records, enum style st, uint64_t *seed)
{
    b->len = 0;
    st_text_printf(b, "{\"collection\": \"c%u\", \"records\": [", dim);
    for (uint32_t i = 0; i < records; i++) {
        st_text_printf(b, "%s{\"id\": \"doc-%" PRIu64 "#%u\", \"ts\": %" PRId64 ", \"vector\": [",
                       i ? ", " : "", rng(seed) % 1000000, i,
                       (int64_t)1763798400000 + (int64_t)(rng(seed) % 3600000));
        for (uint32_t j = 0; j < dim; j++) {
            if (j)
                st_text_printf(b, ", ");
            /* embedding-like: roughly normal, scale 1/sqrt(dim) */
            double g = 0;
            for (int k = 0; k < 4; k++)
                g += (double)(rng(seed) >> 11) / 9007199254740992.0 - 0.5;
            float f = (float)(g / sqrt((double)dim) * 1.7);
            if (st == STYLE_REPR)
                put_shortest(b, (double)f);
            else if (st == STYLE_G9)
                st_text_printf(b, "%.9g", (double)f);
            else
                st_text_printf(b, "%d", (int)(rng(seed) % 255) - 127);
        }
        st_text_printf(b, "], \"meta\": {\"lang\": \"en\", \"chunk\": %u}}", i);
    }
    st_text_printf(b, "]}");
}

static double run(struct rec_decoder *d, const struct rec_schema *s, enum rec_kind kind,
                  const void *msg, size_t len, bool ref, double seconds, struct rec_batch *out)
{
    char detail[256];
    uint64_t n = 0;
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < 4; k++, n++) {
            enum rec_reason r =
                ref ? rec_decode_ref(d, s, kind, msg, len, out, detail, sizeof(detail))
                    : rec_decode(d, s, kind, msg, len, out, detail, sizeof(detail));
            if (r != REC_OK)
                die(detail);
        }
        t = now_s() - t0;
    } while (t < seconds);
    return (double)n / t; /* messages per second */
}

/* One row: the message size, each decoder's input and vector rate (messages/s mr and mf). */
static void print_row(uint32_t dim, const char *style, size_t len, uint32_t records, double mr,
                      double mf)
{
    double vec = (double)records * dim * 4;
    printf("%-5u %-5s %9.1f | %9.1f MB/s %7.1f MB/s | %9.1f MB/s %7.1f MB/s | %6.2fx\n", dim, style,
           (double)len / 1024, mr * (double)len / 1e6, mr * vec / 1e6, mf * (double)len / 1e6,
           mf * vec / 1e6, mf / mr);
}

int main(int argc, char **argv)
{
    uint32_t records = 100;
    double seconds = 1;
    uint64_t seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--records") == 0)
            records = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = strtod(argv[i + 1], NULL);
        else if (strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[i + 1], NULL, 10);
        else
            die("usage: bench_json_decode [--records N] [--seconds S] [--seed N]");
    }
    if (records == 0 || seed == 0)
        die("--records and --seed must be > 0");
    static const uint32_t dims[] = {768, 384};
    struct rec_collection colls[] = {{"c768", 768, false}, {"c384", 384, false}};
    struct rec_schema schema = {colls, 2, NULL, 0};
    struct rec_decoder *fast = rec_decoder_new(), *ref = rec_decoder_new();
    if (fast == NULL || ref == NULL)
        die("no memory");
    struct st_text b = {0};
    printf("%-5s %-5s %9s | %12s %12s | %12s %12s | %7s\n", "dim", "style", "msg KiB", "jansson in",
           "vec MB/s", "simdjson in", "vec MB/s", "speedup");
    for (size_t di = 0; di < 2; di++) {
        for (int st = 0; st < STYLE_COUNT; st++) {
            build(&b, dims[di], records, (enum style)st, &seed);
            if (b.oom)
                die("no memory");
            struct rec_batch bf, br;
            double mr = run(ref, &schema, REC_KIND_JSON, b.p, b.len, true, seconds, &br);
            double mf = run(fast, &schema, REC_KIND_JSON, b.p, b.len, false, seconds, &bf);
            uint64_t nfast, nfall;
            rec_decoder_json_counts(fast, &nfast, &nfall);
            if (nfall != 0)
                die("the fast path declined a benchmark message");
            for (uint32_t i = 0; i < records; i++)
                if (memcmp(bf.recs[i].vec, br.recs[i].vec, dims[di] * sizeof(float)) != 0 ||
                    bf.recs[i].meta_len != br.recs[i].meta_len ||
                    memcmp(bf.recs[i].meta, br.recs[i].meta, br.recs[i].meta_len) != 0)
                    die("the decoders disagree");
            print_row(dims[di], style_name[st], b.len, records, mr, mf);
        }
        /* the same records as a binary frame: the meta check is most of its decode */
        struct rec_batch bj;
        char detail[256];
        if (rec_decode_ref(ref, &schema, REC_KIND_JSON, b.p, b.len, &bj, detail, sizeof(detail)) !=
            REC_OK)
            die(detail);
        uint8_t *f;
        size_t flen;
        if (rec_frame_encode(colls[di].name, dims[di], false, bj.recs, bj.n, &f, &flen) != 0)
            die("cannot encode the frame");
        struct rec_batch bf, br;
        double mr = run(ref, &schema, REC_KIND_FRAME, f, flen, true, seconds, &br);
        double mf = run(fast, &schema, REC_KIND_FRAME, f, flen, false, seconds, &bf);
        uint64_t mfast, mfall;
        rec_decoder_meta_counts(fast, &mfast, &mfall);
        if (mfall != 0 || mfast == 0)
            die("simdjson did not pass a benchmark meta");
        print_row(dims[di], "frame", flen, records, mr, mf);
        free(f);
    }
    free(b.p);
    rec_decoder_free(fast);
    rec_decoder_free(ref);
    return 0;
}
