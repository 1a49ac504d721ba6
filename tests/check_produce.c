/*
 * The `strata` CLI without brokers: the producer's file readers (values, ids, every kind of
 * bad input with its "FILE: message" and exit 2), usage errors and --help of every
 * subcommand, and `strata inspect` of HNSW / IVF-PQ index files with one flipped byte.
 */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "idx_hnsw.h"
#include "idx_ivfpq.h"
#include "produce.h"
#include "st_coding.h"
#include "rec_format.h"
#include "st_test.h"
#include "st_vecfile_test.h"

static char *tmp;

static void setup(void)
{
    tmp = st_test_tmpdir("produce");
}

static void teardown(void)
{
    st_test_rmrf(tmp);
    free(tmp);
}

static const char *tpath(const char *name)
{
    static char buf[4][700];
    static int n;
    char *p = buf[n++ % 4];
    snprintf(p, 700, "%s/%s", tmp, name);
    return p;
}

/* Every row of path: ids are row numbers, values st_vec_value (as bytes when idx). */
static void check_rows(const char *path, uint32_t rows, uint32_t dim, bool bytes)
{
    struct produce_src *s;
    struct st_err err = {0};
    ck_assert_msg(produce_src_open(path, PRODUCE_IN_AUTO, false, &s, &err) == ST_OK, "%s", err.msg);
    ck_assert_uint_eq(produce_src_rows(s), rows);
    ck_assert_uint_eq(produce_src_dim(s), dim);
    struct produce_rec r;
    for (uint32_t i = 0; i < rows; i++) {
        ck_assert_int_eq(produce_src_next(s, &r), 1);
        char id[16];
        snprintf(id, sizeof(id), "%" PRIu32, i);
        ck_assert_str_eq(r.id, id);
        ck_assert_uint_eq(r.dim, dim);
        ck_assert_int_eq(r.partition, -1);
        ck_assert(!r.del);
        for (uint32_t c = 0; c < dim; c++) {
            float want = bytes ? (float)(uint8_t)st_vec_value(i, c) : st_vec_value(i, c);
            ck_assert_msg(r.vec[c] == want, "%s row %u col %u: %g != %g", path, i, c,
                          (double)r.vec[c], (double)want);
        }
    }
    ck_assert_int_eq(produce_src_next(s, &r), 0);
    ck_assert_int_eq(produce_src_seek(s, rows - 1), ST_OK);
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert_int_eq(produce_src_seek(s, rows), ST_ERANGE);
    produce_src_close(s);
}

START_TEST(test_readers)
{
    st_write_fvecs(tpath("a.fvecs"), 7, 5);
    check_rows(tpath("a.fvecs"), 7, 5, false);
    st_write_npy(tpath("a.npy"), "<f4", "(6, 3)", 6, 3);
    check_rows(tpath("a.npy"), 6, 3, false);
    st_write_idx3(tpath("a-idx3-ubyte"), 4, 2, 3, false);
    check_rows(tpath("a-idx3-ubyte"), 4, 6, true);
    st_write_idx3(tpath("a-idx3-ubyte.gz"), 9, 3, 3, true);
    check_rows(tpath("a-idx3-ubyte.gz"), 9, 9, true);

    /* JSON Lines: ids, ts, meta and deletes as written */
    static const char jl[] =
        "{\"id\": \"x\", \"ts\": 1700000000000, \"vector\": [1, 2.5], \"meta\": "
        "{\"k\": [1, \"v\"]}}\n\n  {\"vector\": [3, 4]}\r\n"
        "{\"id\": \"x\", \"op\": \"delete\"}\n";
    st_write_bytes(tpath("a.jsonl"), jl, strlen(jl));
    struct produce_src *s;
    struct st_err err = {0};
    ck_assert_msg(produce_src_open(tpath("a.jsonl"), PRODUCE_IN_AUTO, false, &s, &err) == ST_OK,
                  "%s", err.msg);
    ck_assert_uint_eq(produce_src_rows(s), 3);
    ck_assert_uint_eq(produce_src_dim(s), 2);
    struct produce_rec r;
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert_str_eq(r.id, "x");
    ck_assert_int_eq(r.ts, 1700000000000);
    ck_assert(r.vec[0] == 1.0f && r.vec[1] == 2.5f);
    ck_assert_str_eq(r.meta_json, "{\"k\":[1,\"v\"]}");
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert_str_eq(r.id, "1"); /* no id: the row number */
    ck_assert_int_eq(r.ts, 0);
    ck_assert_ptr_null(r.meta_json);
    ck_assert(r.vec[0] == 3.0f && r.vec[1] == 4.0f);
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert(r.del);
    ck_assert_ptr_null(r.vec);
    ck_assert_int_eq(produce_src_next(s, &r), 0);
    produce_src_close(s);

    /* Deletes only: no dim (0), every record a delete; not a matrix of queries (and no
     * division by its dim there). */
    static const char dj[] = "{\"id\": \"a\", \"op\": \"delete\"}\n"
                             "{\"id\": \"b\", \"op\": \"delete\", \"ts\": 5}\n";
    st_write_bytes(tpath("d.jsonl"), dj, strlen(dj));
    ck_assert_msg(produce_src_open(tpath("d.jsonl"), PRODUCE_IN_AUTO, false, &s, &err) == ST_OK,
                  "%s", err.msg);
    ck_assert_uint_eq(produce_src_rows(s), 2);
    ck_assert_uint_eq(produce_src_dim(s), 0);
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(produce_src_next(s, &r), 1);
        ck_assert(r.del && r.vec == NULL);
        ck_assert_str_eq(r.id, k ? "b" : "a");
    }
    ck_assert_int_eq(produce_src_next(s, &r), 0);
    produce_src_close(s);
    struct produce_matrix pm;
    ck_assert_int_eq(produce_read_matrix(tpath("d.jsonl"), 10, &pm, &err), ST_EINVAL);
    ck_assert_msg(strstr(err.msg, "no record has a vector") != NULL, "%s", err.msg);

    /* uint64 ids: row numbers, or the JSON integers */
    ck_assert_int_eq(produce_src_open(tpath("a.fvecs"), PRODUCE_IN_AUTO, true, &s, &err), ST_OK);
    ck_assert_int_eq(produce_src_seek(s, 3), ST_OK);
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert(r.u64 && r.id_u64 == 3);
    produce_src_close(s);
    static const char uj[] = "{\"id\": 18446744073709551, \"vector\": [1]}\n";
    st_write_bytes(tpath("u.jsonl"), uj, strlen(uj));
    ck_assert_int_eq(produce_src_open(tpath("u.jsonl"), PRODUCE_IN_AUTO, true, &s, &err), ST_OK);
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert(r.u64 && r.id_u64 == 18446744073709551ull);
    produce_src_close(s);
    /* 2^63 and above as strings of digits (as the HTTP API writes them); an integer literal
     * that large is refused with the way to write it; a delete names its id */
    static const char uj2[] = "{\"id\": \"18446744073709551615\", \"vector\": [1]}\n"
                              "{\"id\": \"9223372036854775808\", \"op\": \"delete\"}\n"
                              "{\"id\": \"42\", \"vector\": [2]}\n";
    st_write_bytes(tpath("u2.jsonl"), uj2, strlen(uj2));
    ck_assert_int_eq(produce_src_open(tpath("u2.jsonl"), PRODUCE_IN_AUTO, true, &s, &err), ST_OK);
    static const uint64_t want[] = {UINT64_MAX, 9223372036854775808ull, 42};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(produce_src_next(s, &r), 1);
        ck_assert(r.u64 && r.id_u64 == want[k]);
        ck_assert(r.del == (k == 1));
    }
    produce_src_close(s);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"id\": 9223372036854775808, \"vector\": [1]}\n", "a string of its decimal digits"},
        {"{\"id\": \"18446744073709551616\", \"vector\": [1]}\n", "up to 18446744073709551615"},
        {"{\"id\": \"0x10\", \"vector\": [1]}\n", "string of its decimal digits"},
        {"{\"id\": -1, \"vector\": [1]}\n", "integer >= 0"},
        {"{\"vector\": [1]}\n{\"op\": \"delete\"}\n", "line 2: a delete needs an id"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        st_write_bytes(tpath("ub.jsonl"), bad[k].text, strlen(bad[k].text));
        ck_assert_int_eq(produce_src_open(tpath("ub.jsonl"), PRODUCE_IN_AUTO, true, &s, &err),
                         ST_EINVAL);
        ck_assert_msg(strstr(err.msg, bad[k].want) != NULL, "%s: %s", bad[k].text, err.msg);
    }
    /* string ids: a delete without an id is refused too */
    st_write_bytes(tpath("ub.jsonl"), bad[4].text, strlen(bad[4].text));
    ck_assert_int_eq(produce_src_open(tpath("ub.jsonl"), PRODUCE_IN_AUTO, false, &s, &err),
                     ST_EINVAL);
    ck_assert_msg(strstr(err.msg, "a delete needs an id") != NULL, "%s", err.msg);
}
END_TEST

/* uint64 ids, both wire formats: what produce sends decodes to the same ids at the ingest,
 * 2^63 and above included (JSON carries those as strings of digits). */
START_TEST(test_encode_u64_ids)
{
    static const struct rec_collection coll = {"events", 2, true};
    const struct rec_schema schema = {&coll, 1, &coll, 0};
    static const float v[2] = {1, 2};
    static const uint64_t ids[] = {0, 258, INT64_MAX, 9223372036854775808ull, UINT64_MAX};
    struct produce_rec recs[5];
    for (int i = 0; i < 5; i++)
        recs[i] =
            (struct produce_rec){.u64 = true, .id_u64 = ids[i], .vec = v, .dim = 2, .del = i == 3};
    for (int f = 0; f < 2; f++) {
        struct produce_opts o = {.format = f ? PRODUCE_BINARY : PRODUCE_JSON, .dim = 2};
        uint8_t *msg;
        size_t len;
        struct st_err err = {0};
        ck_assert_msg(produce_encode(&o, recs, 5, &msg, &len, &err) == ST_OK, "%s", err.msg);
        struct rec_decoder *d = rec_decoder_new();
        struct rec_batch b;
        char detail[256] = "";
        enum rec_reason why =
            rec_decode(d, &schema, REC_KIND_AUTO, msg, len, &b, detail, sizeof(detail));
        ck_assert_msg(why == REC_OK, "%s (%s): %.*s", rec_reason_str(why), detail, f ? 0 : (int)len,
                      msg);
        ck_assert_uint_eq(b.n, 5);
        for (int i = 0; i < 5; i++) {
            ck_assert_uint_eq(b.recs[i].id_len, 8);
            ck_assert(st_get_be64(b.recs[i].id) == ids[i]);
            ck_assert_int_eq(b.recs[i].op, i == 3 ? REC_DELETE : REC_UPSERT);
        }
        rec_decoder_free(d);
        free(msg);
    }
}
END_TEST

/* produce_src_repeat: the rows again and again with ids counting on, or fewer; never JSON
 * Lines past their lines (their ids would repeat). */
/* What produce sends decodes as the ingest decodes it: upserts with meta and ts, deletes, in
 * JSON and in binary frames, with no stray byte (a delete's JSON once carried a NUL, and the
 * ingest sent every such batch to the dead-letter topic); deletes alone decode as JSON, and as
 * frames once given the collection's dim. */
static void expect_decodes(const struct produce_opts *o, const struct produce_rec *recs, size_t n,
                           uint32_t dim)
{
    static const struct rec_collection coll = {"docs", 4, false};
    const struct rec_schema schema = {&coll, 1, &coll, 0};
    uint8_t *msg;
    size_t len;
    struct st_err err = {0};
    ck_assert_msg(produce_encode(o, recs, n, &msg, &len, &err) == ST_OK, "%s", err.msg);
    if (o->format == PRODUCE_JSON)
        ck_assert_msg(memchr(msg, 0, len) == NULL, "a NUL in %.*s", (int)len, msg);
    struct rec_decoder *d = rec_decoder_new();
    struct rec_batch b;
    char detail[256] = "";
    enum rec_reason why =
        rec_decode(d, &schema, REC_KIND_AUTO, msg, len, &b, detail, sizeof(detail));
    ck_assert_msg(why == REC_OK, "%s (%s): %.*s", rec_reason_str(why), detail,
                  o->format == PRODUCE_JSON ? (int)len : 0, msg);
    ck_assert_uint_eq(b.n, n);
    for (size_t i = 0; i < n; i++) {
        const struct rec_record *r = &b.recs[i];
        ck_assert_uint_eq(r->id_len, strlen(recs[i].id));
        ck_assert(memcmp(r->id, recs[i].id, r->id_len) == 0);
        ck_assert_int_eq(r->op, recs[i].del ? REC_DELETE : REC_UPSERT);
        ck_assert_int_eq(r->ts, recs[i].ts ? recs[i].ts : REC_TS_ABSENT);
        if (recs[i].del) {
            ck_assert_ptr_null(r->vec);
        } else {
            for (uint32_t c = 0; c < dim; c++)
                ck_assert(r->vec[c] == recs[i].vec[c]);
        }
        ck_assert_uint_eq(r->meta_len, recs[i].meta_json ? strlen(recs[i].meta_json) : 0);
    }
    rec_decoder_free(d);
    free(msg);
}

START_TEST(test_encode_decodes)
{
    static const float v[2][4] = {{1, -2.5f, 3e-7f, 4}, {0, 0.125f, -1, 1e30f}};
    const struct produce_rec mixed[] = {
        {.id = "a", .vec = v[0], .dim = 4, .ts = 1700000000001, .meta_json = "{\"k\":[1,\"v\"]}"},
        {.id = "b", .dim = 4, .del = true, .ts = 1700000000002},
        {.id = "c", .vec = v[1], .dim = 4},
        {.id = "d", .dim = 4, .del = true, .meta_json = "{}"},
    };
    const struct produce_rec dels[] = {{.id = "x", .del = true}, {.id = "y", .del = true, .ts = 9}};
    for (int f = 0; f < 2; f++) {
        struct produce_opts o = {.collection = "docs", .format = f ? PRODUCE_BINARY : PRODUCE_JSON};
        expect_decodes(&o, mixed, 4, 4);
        o.collection = NULL; /* the topic's collection */
        expect_decodes(&o, mixed + 1, 3, 4);
        if (f == 0) {
            expect_decodes(&o, dels, 2, 0); /* JSON deletes need no dim */
        } else {
            uint8_t *m = NULL;
            size_t len;
            struct st_err err = {0};
            ck_assert_int_eq(produce_encode(&o, dels, 2, &m, &len, &err), ST_EINVAL);
            ck_assert_msg(strstr(err.msg, "opts.dim") != NULL, "%s", err.msg);
            ck_assert_ptr_null(m);
            o.dim = 4;
            expect_decodes(&o, dels, 2, 0);
        }
    }
    /* An id twice in one batch (the ingest refuses such a batch): refused here. */
    const struct produce_rec twice[] = {{.id = "a", .vec = v[0], .dim = 4},
                                        {.id = "a", .dim = 4, .del = true}};
    struct produce_opts o = {.format = PRODUCE_JSON};
    uint8_t *m = NULL;
    size_t len;
    struct st_err err = {0};
    ck_assert_int_eq(produce_encode(&o, twice, 2, &m, &len, &err), ST_EINVAL);
    ck_assert_ptr_null(m);
}
END_TEST

START_TEST(test_repeat)
{
    st_write_npy(tpath("r.npy"), "<f4", "(3, 4)", 3, 4);
    struct produce_src *s;
    struct st_err err = {0};
    struct produce_rec r;
    for (int u64 = 0; u64 < 2; u64++) {
        ck_assert_int_eq(produce_src_open(tpath("r.npy"), PRODUCE_IN_AUTO, u64, &s, &err), ST_OK);
        ck_assert_int_eq(produce_src_repeat(s, 8, &err), ST_OK);
        ck_assert_uint_eq(produce_src_rows(s), 8);
        for (uint32_t i = 0; i < 8; i++) {
            ck_assert_int_eq(produce_src_next(s, &r), 1);
            if (u64) {
                ck_assert(r.u64 && r.id_u64 == i);
            } else {
                char id[16];
                snprintf(id, sizeof(id), "%" PRIu32, i);
                ck_assert_str_eq(r.id, id);
            }
            for (uint32_t c = 0; c < 4; c++)
                ck_assert(r.vec[c] == st_vec_value(i % 3, c));
        }
        ck_assert_int_eq(produce_src_next(s, &r), 0);
        ck_assert_int_eq(produce_src_seek(s, 7), ST_OK); /* a record of a later pass */
        ck_assert_int_eq(produce_src_next(s, &r), 1);
        ck_assert(r.vec[0] == st_vec_value(1, 0));
        ck_assert(u64 ? r.id_u64 == 7 : strcmp(r.id, "7") == 0);
        ck_assert_int_eq(produce_src_seek(s, 8), ST_ERANGE);
        produce_src_close(s);
    }
    /* fewer than the rows */
    ck_assert_int_eq(produce_src_open(tpath("r.npy"), PRODUCE_IN_AUTO, false, &s, &err), ST_OK);
    ck_assert_int_eq(produce_src_repeat(s, 2, &err), ST_OK);
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert_int_eq(produce_src_next(s, &r), 1);
    ck_assert_int_eq(produce_src_next(s, &r), 0);
    ck_assert_int_eq(produce_src_repeat(s, 0, &err), ST_EINVAL);
    produce_src_close(s);
    /* JSON Lines: up to their lines, not past them */
    st_write_jsonl(tpath("r.jsonl"), 3, 4, 0);
    ck_assert_int_eq(produce_src_open(tpath("r.jsonl"), PRODUCE_IN_AUTO, false, &s, &err), ST_OK);
    ck_assert_int_eq(produce_src_repeat(s, 3, &err), ST_OK);
    ck_assert_int_eq(produce_src_repeat(s, 4, &err), ST_EINVAL);
    ck_assert_msg(strstr(err.msg, "r.jsonl") && strstr(err.msg, "more than once"), "%s", err.msg);
    ck_assert_uint_eq(produce_src_rows(s), 3);
    produce_src_close(s);
}
END_TEST

START_TEST(test_read_matrix)
{
    st_write_fvecs(tpath("m.fvecs"), 9, 3);
    struct produce_matrix m;
    struct st_err err = {0};
    ck_assert_int_eq(produce_read_matrix(tpath("m.fvecs"), 4, &m, &err), ST_OK);
    ck_assert(m.rows == 4 && m.dim == 3);
    for (uint32_t r = 0; r < 4; r++)
        for (uint32_t c = 0; c < 3; c++)
            ck_assert(m.data[r * 3 + c] == st_vec_value(r, c));
    free(m.data);
    ck_assert_int_eq(produce_read_matrix(tpath("m.fvecs"), 100, &m, &err), ST_OK);
    ck_assert_uint_eq(m.rows, 9);
    free(m.data);
    st_write_idx3(tpath("m-idx3-ubyte.gz"), 5, 2, 2, true);
    ck_assert_int_eq(produce_read_matrix(tpath("m-idx3-ubyte.gz"), 100, &m, &err), ST_OK);
    ck_assert(m.rows == 5 && m.dim == 4 && m.data[4 * 4 + 3] == (float)(uint8_t)st_vec_value(4, 3));
    free(m.data);
    truncate(tpath("m.fvecs"), 7);
    ck_assert_int_eq(produce_read_matrix(tpath("m.fvecs"), 4, &m, &err), ST_EINVAL);
    ck_assert_msg(strstr(err.msg, "m.fvecs: too short") || strstr(err.msg, "m.fvecs: 7 bytes"),
                  "%s", err.msg);
    ck_assert_ptr_null(m.data);
}
END_TEST

/* The real Fashion-MNIST test set when its Debian package is installed (scripts/deps). */
START_TEST(test_fashion_mnist)
{
    const char *p = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    struct stat sb;
    ck_assert_msg(stat(p, &sb) == 0, "%s missing: scripts/deps installs dataset-fashion-mnist", p);
    struct produce_src *s;
    struct st_err err = {0};
    ck_assert_msg(produce_src_open(p, PRODUCE_IN_AUTO, false, &s, &err) == ST_OK, "%s", err.msg);
    ck_assert_uint_eq(produce_src_rows(s), 10000);
    ck_assert_uint_eq(produce_src_dim(s), 784);
    struct produce_rec r;
    double sum = 0;
    float lo = 0, hi = 0;
    for (int i = 0; produce_src_next(s, &r) == 1; i++)
        for (int c = 0; c < 784; c++) {
            lo = r.vec[c] < lo ? r.vec[c] : lo;
            hi = r.vec[c] > hi ? r.vec[c] : hi;
            sum += r.vec[c];
        }
    ck_assert(lo == 0.0f && hi == 255.0f && sum > 0);
    produce_src_close(s);
}
END_TEST

struct bad {
    const char *name;
    const char *data; /* NULL: built by the test */
    size_t len;
    const char *want;
};

START_TEST(test_bad_inputs)
{
    char o[8192];
    /* built files */
    st_write_fvecs(tpath("trunc.fvecs"), 3, 4);
    truncate(tpath("trunc.fvecs"), st_file_size(tpath("trunc.fvecs")) - 3);
    st_write_fvecs(tpath("mixed.fvecs"), 3, 4);
    st_flip_byte(tpath("mixed.fvecs"), 20, 0x01); /* row 1 claims dim 5 */
    st_write_npy(tpath("f8.npy"), "<f8", "(2, 2)", 2, 4);
    st_write_npy(tpath("big.npy"), ">f4", "(2, 2)", 2, 2);
    st_write_npy(tpath("oned.npy"), "<f4", "(8,)", 2, 4);
    st_write_npy(tpath("lying.npy"), "<f4", "(1000, 4)", 2, 4);
    st_write_npy(tpath("hugedim.npy"), "<f4", "(1, 4000000000)", 1, 4);
    st_write_idx3(tpath("lying-idx3-ubyte"), 3, 2, 2, false);
    st_flip_byte(tpath("lying-idx3-ubyte"), 7, 0x10); /* claims 19 images */
    st_write_idx3(tpath("trunc-idx3-ubyte.gz"), 50, 4, 4, true);
    truncate(tpath("trunc-idx3-ubyte.gz"), st_file_size(tpath("trunc-idx3-ubyte.gz")) / 2);
    static const struct bad cases[] = {
        {"trunc.fvecs", NULL, 0, "not a whole number of dim-4 rows"},
        {"mixed.fvecs", NULL, 0, "row 1 claims dim 5"},
        {"lie.fvecs", "\x00\xe1\xf5\x05\x00\x00\x00\x00", 8, "claims dim 100000000"},
        {"empty.fvecs", "", 0, "empty file"},
        {"f8.npy", NULL, 0, "dtype '<f8' is not little-endian float32"},
        {"big.npy", NULL, 0, "dtype '>f4'"},
        {"oned.npy", NULL, 0, "1-D; a 2-D"},
        {"lying.npy", NULL, 0, "truncated or lying header"},
        {"hugedim.npy", NULL, 0, "dim 4000000000"},
        {"magic.npy", "\x93NUMPZ\x01\x00\x00\x00", 10, "not a .npy file"},
        {"lying-idx3-ubyte", NULL, 0, "header says 19 images"},
        {"trunc-idx3-ubyte.gz", NULL, 0, "gzip data is truncated"},
        {"garbage-idx3-ubyte.gz", "\x1f\x8bnot gzip at all", 17, "not valid gzip data"},
        {"labels-idx1-ubyte", "\x00\x00\x08\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
         16, "images (idx3) are needed"},
        {"magic-idx3-ubyte", "\x01\x00\x08\x03\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01x",
         17, "not an idx file"},
        {"syntax.jsonl", "{\"vector\": [1, 2]}\n{\"vector\": [1,\n", 0, "line 2:"},
        {"dims.jsonl", "{\"vector\": [1, 2]}\n{\"vector\": [1, 2, 3]}\n", 0,
         "line 2: vector has 3 dims, earlier lines have 2"},
        {"key.jsonl", "{\"vector\": [1], \"colour\": 1}\n", 0, "line 1: unknown key 'colour'"},
        {"id.jsonl", "{\"id\": 7, \"vector\": [1]}\n", 0, "line 1: id must be a string"},
        {"ts.jsonl", "{\"ts\": \"soon\", \"vector\": [1]}\n", 0, "line 1: ts must be integer"},
        {"range.jsonl", "{\"vector\": [1e300]}\n", 0, "vector[0] is not a finite float"},
        {"op.jsonl", "{\"op\": \"merge\", \"vector\": [1]}\n", 0, "op must be"},
        {"what.bin", "\x05\x06", 2, "unknown input format"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct bad *b = &cases[i];
        const char *p = tpath(b->name);
        if (b->data != NULL)
            st_write_bytes(p, b->data, b->len ? b->len : strlen(b->data));
        int rc = st_test_cli(o, sizeof(o), "produce --brokers 127.0.0.1:1 --topic t %s", p);
        ck_assert_msg(rc == 2 && strstr(o, b->want) != NULL && strstr(o, p) != NULL,
                      "%s: exit %d, want 2 and '%s' with the file name:\n%s", b->name, rc, b->want,
                      o);
    }
    /* A non-finite value is found as its row is read, before anything is sent. */
    float nanrow[5] = {0};
    memcpy(nanrow, "\x04\x00\x00\x00", 4);
    nanrow[3] = NAN;
    st_write_bytes(tpath("nan.fvecs"), nanrow, sizeof(nanrow));
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --brokers 127.0.0.1:1 --topic t --quiet %s",
                                 tpath("nan.fvecs")),
                     2);
    ck_assert_msg(strstr(o, "row 0: value 2 is not finite") && strstr(o, "0 records"), "%s", o);
    /* --dim must match */
    st_write_fvecs(tpath("d.fvecs"), 2, 4);
    ck_assert_int_eq(
        st_test_cli(o, sizeof(o), "produce --brokers b --topic t --dim 8 %s", tpath("d.fvecs")), 2);
    ck_assert_msg(strstr(o, "vectors have 4 dims, --dim says 8"), "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o),
                                 "search --url http://127.0.0.1:1 --collection c "
                                 "--query-file %s --row 9",
                                 tpath("d.fvecs")),
                     2);
    ck_assert_msg(strstr(o, "no row 9 (2 rows)"), "%s", o);
    /* a librdkafka property it does not know */
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --brokers b --topic t -X no.such.prop=1 %s",
                                 tpath("d.fvecs")),
                     2);
    ck_assert_msg(strstr(o, "kafka property 'no.such.prop'"), "%s", o);
    ck_assert_int_eq(
        st_test_cli(o, sizeof(o), "produce --brokers b --topic t -X novalue %s", tpath("d.fvecs")),
        2);
    ck_assert_msg(strstr(o, "'novalue': not key=value"), "%s", o);
}
END_TEST

START_TEST(test_usage)
{
    char o[16384];
    static const char *const helps[] = {"produce", "search", "inspect", "check-config"};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(st_test_cli(o, sizeof(o), "%s --help", helps[i]), 0);
        char want[64];
        snprintf(want, sizeof(want), "usage: strata %s", helps[i]);
        ck_assert_msg(strstr(o, want) && strstr(o, "exit codes"), "%s", o);
    }
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "--help"), 0);
    static const char *const listed[] = {"check-config", "produce", "search", "inspect", "demo"};
    for (size_t i = 0; i < 5; i++)
        ck_assert_msg(strstr(o, listed[i]) != NULL, "--help lacks %s:\n%s", listed[i], o);
    static const struct {
        const char *args, *want;
    } bad[] = {
        {"produce", "--brokers and --topic are required"},
        {"produce --brokers b --topic t", "no INPUT file"},
        {"produce --brokers b --topic t --format xml f", "--format must be json or binary"},
        {"produce --brokers b --topic t --batch 0 f", "--batch must be"},
        {"produce --brokers b --topic t --rate -3 f", "--rate must be a positive number"},
        {"produce --brokers b --topic t --count 0 f", "--count must be 1..2^48"},
        {"produce --brokers b --topic t --count -1 f", "--count must be 1..2^48"},
        {"produce --brokers b --topic t --count 5x f", "--count must be 1..2^48"},
        {"produce --brokers b --topic t --start -1 f", "--start must be 0..2^48"},
        {"produce --brokers b --topic t --start x f", "--start must be 0..2^48"},
        {"produce --brokers b --topic t --start 281474976710657 f", "--start must be 0..2^48"},
        {"produce --brokers b --topic t --frobnicate f", "unknown option '--frobnicate'"},
        {"produce --brokers", "--brokers needs a value"},
        {"search --collection c --vector [1]", "--url and --collection are required"},
        {"search --url u --collection c", "exactly one of --vector and --query-file"},
        {"search --url u --collection c --vector '{\"a\":1}'", "--vector must be a JSON array"},
        {"search --url u --collection c --vector [1] --k 5000", "--k must be a positive integer"},
        {"search --url u --collection c --vector [1] --consistency eventual",
         "--consistency must be strong or indexed"},
        {"inspect", "no PATH"},
        {"inspect a b", "expects exactly one PATH"},
        {"check-config", "expects exactly one FILE"},
        {"frobnicate", "unknown command 'frobnicate'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = st_test_cli(o, sizeof(o), "%s", bad[i].args);
        ck_assert_msg(rc == 2 && strstr(o, bad[i].want) != NULL,
                      "strata %s: exit %d, want 2 and '%s':\n%s", bad[i].args, rc, bad[i].want, o);
    }
    /* the reason is one line (plus the pointer to --help on it) */
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --batch x"), 2);
    ck_assert_msg(strchr(o, '\n') == o + strlen(o) - 1, "not one line:\n%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "inspect %s/nope", tmp), 2);
    /* --config: its errors as FILE:LINE:COL, an unknown collection, "embedded" brokers */
    char cp[600];
    snprintf(cp, sizeof(cp), "%s/p.yaml", tmp);
    FILE *f = fopen(cp, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "node_id: n\ndata_dir: /tmp/x\nkafka: {brokers: embedded}\n"
               "collections:\n  - {name: docs, dim: 4, topic: t.docs, window: 1h}\n");
    fclose(f);
    ck_assert_int_eq(
        st_test_cli(o, sizeof(o), "produce --config %s --brokers b:1 --collection nope f", cp), 2);
    ck_assert_msg(strstr(o, "has no collection 'nope'") != NULL, "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s --collection docs f", cp), 2);
    ck_assert_msg(strstr(o, "kafka.brokers is \"embedded\"") != NULL, "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s/nope.yaml --topic t f", tmp),
                     2);
    ck_assert_msg(strstr(o, "nope.yaml") != NULL, "%s", o);
    f = fopen(cp, "w");
    fprintf(f, "node_id: n\ndata_dir: /tmp/x\nkafka: {brokers: 'h:1', propertes: {}}\n");
    fclose(f);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s --topic t f", cp), 2);
    ck_assert_msg(strstr(o, "p.yaml:3:") != NULL && strstr(o, "unknown key") != NULL, "%s", o);
    /* dims, checked before any broker is asked: vectors or --dim against --collection's in
     * --config (with --topic too), and deletes alone as binary frames without a dim */
    f = fopen(cp, "w");
    fprintf(f, "node_id: n\ndata_dir: /tmp/x\nkafka: {brokers: '127.0.0.1:1'}\n"
               "collections:\n  - {name: docs, dim: 4, topic: t.docs, window: 1h}\n");
    fclose(f);
    static const char v2[] = "{\"id\": \"a\", \"vector\": [1, 2]}\n";
    static const char dl[] = "{\"id\": \"a\", \"op\": \"delete\"}\n";
    st_write_bytes(tpath("v2.jsonl"), v2, strlen(v2));
    st_write_bytes(tpath("dl.jsonl"), dl, strlen(dl));
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s --collection docs %s %s",
                                     cp, t ? "--topic other" : "", tpath("v2.jsonl")),
                         2);
        ck_assert_msg(strstr(o, "vectors have 2 dims, collection docs has 4") != NULL, "%s", o);
    }
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s --collection docs --dim 3 %s",
                                 cp, tpath("dl.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "--dim 3, but collection docs has 4") != NULL, "%s", o);
    /* the id type follows --collection's in --config: uint64 ids read as such without
     * --u64-ids (a string id is refused before any broker is asked; as string ids, binary
     * frames to that collection would all go to the dead-letter topic), and --u64-ids with a
     * string collection is a usage error */
    f = fopen(cp, "w");
    fprintf(f, "node_id: n\ndata_dir: /tmp/x\nkafka: {brokers: '127.0.0.1:1'}\n"
               "collections:\n  - {name: docs, dim: 2, topic: t.docs, window: 1h}\n"
               "  - {name: events, dim: 2, topic: t.ev, window: 1h, id_type: uint64}\n");
    fclose(f);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s --collection events %s", cp,
                                 tpath("v2.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "line 1: id must be an integer >= 0 or a string of its decimal") !=
                      NULL,
                  "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "produce --config %s --collection docs --u64-ids %s",
                                 cp, tpath("v2.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "--u64-ids, but collection 'docs'") != NULL, "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o),
                                 "produce --brokers 127.0.0.1:1 --topic t --format "
                                 "binary %s",
                                 tpath("dl.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "deletes only") != NULL && strstr(o, "--dim") != NULL, "%s", o);
    /* --count past JSON Lines: refused before any broker is asked */
    st_write_jsonl(tpath("c.jsonl"), 2, 4, 0);
    ck_assert_int_eq(st_test_cli(o, sizeof(o),
                                 "produce --brokers 127.0.0.1:1 --topic t --count 3 %s",
                                 tpath("c.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "c.jsonl: records up to #3 (--start + --count) from 2 lines") != NULL,
                  "%s", o);
    /* --start within JSON Lines is allowed (it only skips); past the rows it is refused */
    ck_assert_int_eq(st_test_cli(o, sizeof(o),
                                 "produce --brokers 127.0.0.1:1 --topic t --start 2 %s",
                                 tpath("c.jsonl")),
                     2);
    ck_assert_msg(strstr(o, "--start 2 is past its 2 records") != NULL, "%s", o);
}
END_TEST

static float *random_vecs(uint32_t n, uint32_t dim)
{
    float *v = malloc((size_t)n * dim * sizeof(float));
    ck_assert_ptr_nonnull(v);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)n * dim; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[i] = (float)(x % 1000) / 100.0f;
    }
    return v;
}

START_TEST(test_inspect_index_files)
{
    char o[16384];
    float *v = random_vecs(300, 16);
    struct idx_hnsw *h;
    struct idx_hnsw_opts ho = {
        .dim = 16, .metric = ST_METRIC_L2, .m = 8, .ef_construction = 40, .seed = 1, .threads = 1};
    ck_assert_int_eq(idx_hnsw_build(&ho, v, 300, &h), ST_OK);
    const char *hp = tpath("w@0@v1.hnsw");
    struct st_err err = {0};
    ck_assert_int_eq(idx_hnsw_save(h, hp, &err), ST_OK);
    idx_hnsw_free(h);
    struct idx_ivfpq *q;
    struct idx_ivfpq_opts qo = {
        .dim = 16, .metric = ST_METRIC_L2, .nlist = 8, .m = 4, .nbits = 8, .seed = 1, .threads = 1};
    ck_assert_int_eq(idx_ivfpq_build(&qo, v, 300, &q), ST_OK);
    const char *qp = tpath("w@0@v1.ivfpq");
    ck_assert_int_eq(idx_ivfpq_save(q, qp, &err), ST_OK);
    idx_ivfpq_free(q);
    free(v);

    ck_assert_int_eq(st_test_cli(o, sizeof(o), "inspect %s", hp), 0);
    ck_assert_msg(strstr(o, "nodes=300 dim=16 m=8") && strstr(o, "checksums=ok"), "%s", o);
    ck_assert_int_eq(st_test_cli(o, sizeof(o), "inspect %s", qp), 0);
    ck_assert_msg(strstr(o, "vectors=300 dim=16 nlist=8 m=4 nbits=8"), "%s", o);
    /* one flipped byte anywhere: the header, the middle, the footer */
    const char *files[] = {hp, qp};
    for (int f = 0; f < 2; f++) {
        long size = st_file_size(files[f]);
        long offs[] = {13, size / 2, size - 5};
        for (int i = 0; i < 3; i++) {
            st_flip_byte(files[f], offs[i], 0x04);
            int rc = st_test_cli(o, sizeof(o), "inspect %s", files[f]);
            ck_assert_msg(rc == 1 && strstr(o, "CORRUPT") && strstr(o, files[f]),
                          "%s flipped at %ld: exit %d\n%s", files[f], offs[i], rc, o);
            st_flip_byte(files[f], offs[i], 0x04);
        }
        ck_assert_int_eq(st_test_cli(o, sizeof(o), "inspect %s", files[f]), 0);
    }
}
END_TEST

/* ---- cancelling produce_run (Kafka unreachable: nothing is ever acknowledged) ---- */

struct cnt_src {
    int n, next, cancel_at;
    atomic_bool *cancel, done;
    int64_t *at; /* when record i was asked for, at[n] the end (n + 1 slots); may be NULL */
    char id[16];
    float v[4];
};

/* Records "0".."n-1" of dim 4; sets *cancel as it hands out record cancel_at, done at the end. */
static int cnt_next(void *ctx, struct produce_rec *out)
{
    struct cnt_src *g = ctx;
    if (g->at != NULL && g->next <= g->n)
        g->at[g->next] = st_test_now_ms();
    if (g->next >= g->n) {
        atomic_store(&g->done, true);
        return 0;
    }
    if (g->cancel != NULL && g->next == g->cancel_at)
        atomic_store(g->cancel, true);
    snprintf(g->id, sizeof(g->id), "%d", g->next);
    for (int c = 0; c < 4; c++)
        g->v[c] = (float)g->next;
    *out = (struct produce_rec){.id = g->id, .vec = g->v, .dim = 4, .partition = -1};
    g->next++;
    return 1;
}

static void *cancel_later(void *arg)
{
    st_test_sleep_ms(300);
    atomic_store((atomic_bool *)arg, true);
    return NULL;
}

START_TEST(test_cancel_while_pacing)
{
    /* At 0.2 records/s in batches of 1, record 1 may leave 5 s after the start. A cancel that
     * comes 300 ms into that wait (Ctrl-C under --rate) ends it within a poll (100 ms at most
     * each), not when the 5 s are up. */
    atomic_bool cancel = false;
    struct cnt_src g = {.n = 10};
    struct produce_opts o = {.brokers = "127.0.0.1:1",
                             .topic = "t",
                             .batch = 1,
                             .rate = 0.2,
                             .flush_timeout_ms = 500,
                             .cancel = &cancel};
    struct produce_stats st;
    struct st_err err = {0};
    pthread_t t;
    int64_t t0 = st_test_now_ms();
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_later, &cancel), 0);
    int rc = produce_run(&o, cnt_next, &g, &st, &err);
    int64_t took = st_test_now_ms() - t0;
    pthread_join(t, NULL);
    ck_assert_msg(took < 3000, "a cancel during the rate limit's wait took %" PRId64 " ms", took);
    ck_assert_int_ne(rc, ST_OK); /* record 0 was never acknowledged */
    /* what was read is sent: record 1, read before the wait, goes out with the burst the
     * limit allows; record 2 is never read */
    ck_assert_uint_eq(st.records, 2);
    ck_assert_int_eq(g.next, 2);
    ck_assert_uint_eq(st.delivered, 0);
}
END_TEST

struct stall_src {
    int next;
    int64_t stalled_until, last_call;
    char id[16];
    float v[4];
};

/* 30 records; the source stalls for 1 s before record 10 (a slow disk, a busy broker). */
static int stall_next(void *ctx, struct produce_rec *out)
{
    struct stall_src *g = ctx;
    g->last_call = st_test_now_ms();
    if (g->next == 30)
        return 0;
    if (g->next == 10) {
        st_test_sleep_ms(1000);
        g->stalled_until = st_test_now_ms();
    }
    snprintf(g->id, sizeof(g->id), "%d", g->next);
    for (int c = 0; c < 4; c++)
        g->v[c] = (float)g->next;
    *out = (struct produce_rec){.id = g->id, .vec = g->v, .dim = 4, .partition = -1};
    g->next++;
    return 1;
}

START_TEST(test_rate_no_catch_up_burst)
{
    /* --rate 20 with batches of 5: a token bucket of 5. After the stall the bucket holds at
     * most 5 tokens, so the 20 records after it take at least (20 - 5) / 20 = 0.75 s; a
     * schedule fixed at the start would let them all out at once to catch up. */
    struct stall_src g = {0};
    struct produce_opts o = {
        .brokers = "127.0.0.1:1", .topic = "t", .batch = 5, .rate = 20, .flush_timeout_ms = 100};
    struct produce_stats st;
    struct st_err err = {0};
    /* no Kafka: nothing is acknowledged; the pacing is what is measured */
    ck_assert_int_ne(produce_run(&o, stall_next, &g, &st, &err), ST_OK);
    ck_assert_uint_eq(st.records, 30);
    int64_t after = g.last_call - g.stalled_until;
    ck_assert_msg(after >= 700, "20 records after a stall took %" PRId64 " ms at 20/s", after);
}
END_TEST

START_TEST(test_rate_waits_per_batch)
{
    /* --rate 1000 with batches of 50: a message leaves every 50 ms, when its 50 records'
     * tokens are there. The limit is paid for once a batch, so a batch's records are read
     * together: waiting for each record (1 ms apart) sent nothing sooner and woke the
     * producer 1,000 times a second. */
    static int64_t at[201];
    struct cnt_src g = {.n = 200, .at = at};
    struct produce_opts o = {
        .brokers = "127.0.0.1:1", .topic = "t", .batch = 50, .rate = 1000, .flush_timeout_ms = 100};
    struct produce_stats st;
    struct st_err err = {0};
    int64_t t0 = st_test_now_ms();
    /* no Kafka: nothing is acknowledged; the pacing is what is measured */
    ck_assert_int_ne(produce_run(&o, cnt_next, &g, &st, &err), ST_OK);
    ck_assert_uint_eq(st.records, 200);
    /* the quickest of batches 1-3 (one preempted on a busy machine does not fail it); paced
     * a record at a time, every one takes 49 ms (batch 0 comes from the full bucket) */
    int64_t span = INT64_MAX;
    for (int j = 1; j < 4; j++)
        if (at[50 * j + 49] - at[50 * j] < span)
            span = at[50 * j + 49] - at[50 * j];
    ck_assert_msg(span < 20, "every batch's records were read over >= %" PRId64 " ms", span);
    /* and the rate holds: the last batch leaves when 150 records' tokens have come after the
     * first full bucket, 150 ms at 1,000/s */
    int64_t took = at[200] - t0;
    ck_assert_msg(took >= 140, "200 records at 1000/s with a bucket of 50 in %" PRId64 " ms", took);
}
END_TEST

START_TEST(test_rate_short_last_batch)
{
    /* 110 records at 100/s in batches of 100: the first batch comes from the full bucket, the
     * last holds 10 records and leaves once their 10 tokens are there, 100 ms later, not when
     * a whole batch's would be (1 s: records that never come). */
    struct cnt_src g = {.n = 110};
    struct produce_opts o = {
        .brokers = "127.0.0.1:1", .topic = "t", .batch = 100, .rate = 100, .flush_timeout_ms = 100};
    struct produce_stats st;
    struct st_err err = {0};
    int64_t t0 = st_test_now_ms();
    ck_assert_int_ne(produce_run(&o, cnt_next, &g, &st, &err), ST_OK); /* no Kafka */
    int64_t took = st_test_now_ms() - t0;
    ck_assert_uint_eq(st.records, 110);
    ck_assert_uint_eq(st.messages, 2);
    ck_assert_msg(took >= 90, "the last 10 records at 100/s left after %" PRId64 " ms", took);
    ck_assert_msg(took < 700, "a short last batch waited %" PRId64 " ms (flush: 100)", took);
}
END_TEST

struct abandon_arg {
    struct cnt_src *g;
    atomic_bool *abandon;
};

static void *abandon_later(void *arg)
{
    struct abandon_arg *a = arg;
    /* once every record is handed to Kafka: produce_run is flushing (or about to) */
    ck_assert(ST_WAIT_UNTIL(atomic_load(&a->g->done), 10000));
    atomic_store(a->abandon, true);
    return NULL;
}

START_TEST(test_abandon_flush)
{
    /* The final flush would wait 60 s for a broker that is not there; abandon ends it at once
     * and every message still queued is reported as not acknowledged. */
    atomic_bool abandon = false;
    struct cnt_src g = {.n = 10};
    struct produce_opts o = {.brokers = "127.0.0.1:1",
                             .topic = "t",
                             .batch = 1,
                             .flush_timeout_ms = 60000,
                             .abandon = &abandon};
    struct abandon_arg a = {.g = &g, .abandon = &abandon};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, abandon_later, &a), 0);
    struct produce_stats st;
    struct st_err err = {0};
    int64_t t0 = st_test_now_ms();
    int rc = produce_run(&o, cnt_next, &g, &st, &err);
    int64_t took = st_test_now_ms() - t0;
    pthread_join(t, NULL);
    ck_assert_msg(took < 5000, "an abandoned flush took %" PRId64 " ms", took);
    ck_assert_int_eq(rc, ST_EIO);
    ck_assert_uint_eq(st.messages, 10);
    ck_assert_uint_eq(st.delivered, 0);
    ck_assert_msg(strstr(err.msg, "10 of 10 messages not acknowledged"), "%s", err.msg);
}
END_TEST

/* Reads the child's stderr (fd) into buf until it holds needle or deadline_ms passes. */
static bool read_until(int fd, char *buf, size_t cap, size_t *len, const char *needle,
                       int deadline_ms)
{
    int64_t end = st_test_now_ms() + deadline_ms;
    while (strstr(buf, needle) == NULL) {
        int64_t left = end - st_test_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return false;
        ssize_t n = read(fd, buf + *len, cap - 1 - *len);
        if (n <= 0)
            return strstr(buf, needle) != NULL;
        *len += (size_t)n;
        buf[*len] = '\0';
    }
    return true;
}

START_TEST(test_cli_ctrl_c_twice)
{
    /* strata produce at 1 record/s to a Kafka that is not there: the first Ctrl-C stops
     * reading and waits for acknowledgements (60 s by default), the second gives up waiting:
     * exit 1 within moments, the undelivered messages counted. */
    st_write_fvecs(tpath("c.fvecs"), 100, 4);
    int errp[2];
    ck_assert_int_eq(pipe(errp), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(errp[1], 2);
        close(errp[0]);
        close(errp[1]);
        execl(getenv("STRATA_CLI"), "strata", "produce", "--brokers", "127.0.0.1:1", "--topic", "t",
              "--rate", "1", "--batch", "1", tpath("c.fvecs"), (char *)NULL);
        _exit(127);
    }
    close(errp[1]);
    static char buf[1 << 16];
    size_t len = 0;
    buf[0] = '\0';
    bool running = read_until(errp[0], buf, sizeof(buf), &len, "produced ", 15000);
    if (running) {
        kill(pid, SIGINT);
        running = read_until(errp[0], buf, sizeof(buf), &len, "again to give up", 5000);
    }
    int64_t t0 = st_test_now_ms();
    kill(pid, SIGINT);
    int status = 0;
    bool exited = false;
    while (!exited && st_test_now_ms() - t0 < 10000) {
        exited = waitpid(pid, &status, WNOHANG) == pid;
        if (!exited)
            st_test_sleep_ms(20);
    }
    int64_t took = st_test_now_ms() - t0;
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    read_until(errp[0], buf, sizeof(buf), &len, "\x01", 1000); /* the rest, to EOF */
    close(errp[0]);
    ck_assert_msg(running, "no progress, or no word that a second Ctrl-C gives up:\n%s", buf);
    ck_assert_msg(exited && took < 5000,
                  "still running %" PRId64 " ms after the second Ctrl-C:\n%s", took, buf);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d:\n%s", status, buf);
    ck_assert_msg(strstr(buf, "not acknowledged") && strstr(buf, "0 messages acknowledged"), "%s",
                  buf);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("produce");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_readers);
    tcase_add_test(tc, test_encode_decodes);
    tcase_add_test(tc, test_encode_u64_ids);
    tcase_add_test(tc, test_repeat);
    tcase_add_test(tc, test_read_matrix);
    tcase_add_test(tc, test_fashion_mnist);
    tcase_add_test(tc, test_bad_inputs);
    tcase_add_test(tc, test_usage);
    tcase_add_test(tc, test_inspect_index_files);
    suite_add_tcase(s, tc);
    /* A librdkafka producer in this process or a child (its threads): ctest runs this case as
     * check_produce_kafka, outside the ThreadSanitizer build, whose interceptors crash in
     * librdkafka's threads (uninstrumented) — as for every other librdkafka test. */
    tc = tcase_create("kafka_client");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cancel_while_pacing);
    tcase_add_test(tc, test_abandon_flush);
    tcase_add_test(tc, test_rate_no_catch_up_burst);
    tcase_add_test(tc, test_rate_waits_per_batch);
    tcase_add_test(tc, test_rate_short_last_batch);
    tcase_add_test(tc, test_cli_ctrl_c_twice);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return st_test_run_suite(suite());
}
