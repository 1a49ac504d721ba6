/* Record formats (SPEC.md §4): the binary frame and JSON, every bad-input class, golden frames. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame_format.h"
#include "rec_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_test.h"
#include "store_fs.h"

static const struct rec_collection colls[] = {
    {"docs", 3, false},
    {"events", 4, true},
};
static const struct rec_schema schema = {colls, 2, NULL, 0};
static const struct rec_schema schema_docs = {colls, 2, &colls[0], 0};

static struct rec_decoder *dec;
static char detail[512];
static struct rec_batch batch;

static enum rec_reason json(const struct rec_schema *s, const char *text)
{
    return rec_decode(dec, s, REC_KIND_AUTO, text, strlen(text), &batch, detail, sizeof(detail));
}

#define EXPECT_JSON(s, text, reason)                                                               \
    do {                                                                                           \
        enum rec_reason r_ = json(s, text);                                                        \
        ck_assert_msg(r_ == (reason), "%s: got %s (%s), want %s", text, rec_reason_str(r_),        \
                      detail, rec_reason_str(reason));                                             \
        ck_assert_msg(r_ == REC_OK || detail[0] != '\0', "no detail for %s", text);                \
    } while (0)

static void setup(void)
{
    dec = rec_decoder_new();
    ck_assert_ptr_nonnull(dec);
}

static void teardown(void)
{
    rec_decoder_free(dec);
}

START_TEST(test_reason_codes_stable)
{
    /* These strings are an interface (DLQ header, metric label): changing one is a break. */
    static const char *const want[] = {"ok",
                                       "garbage",
                                       "truncated",
                                       "checksum",
                                       "unsupported",
                                       "too_large",
                                       "unknown_collection",
                                       "wrong_dim",
                                       "non_finite",
                                       "bad_id",
                                       "bad_ts",
                                       "bad_op",
                                       "bad_meta",
                                       "bad_record",
                                       "duplicate_id",
                                       "empty_batch"};
    ck_assert_int_eq(REC_REASON_COUNT, sizeof(want) / sizeof(want[0]));
    for (int i = 0; i < REC_REASON_COUNT; i++)
        ck_assert_str_eq(rec_reason_str((enum rec_reason)i), want[i]);
    ck_assert_int_eq(rec_kind_of("application/json; charset=utf-8", 31), REC_KIND_JSON);
    ck_assert_int_eq(rec_kind_of("application/vnd.strata.batch", 28), REC_KIND_FRAME);
    ck_assert_int_eq(rec_kind_of("text/plain", 10), REC_KIND_AUTO);
    ck_assert_int_eq(rec_kind_of(NULL, 0), REC_KIND_AUTO);
}
END_TEST

START_TEST(test_json_good)
{
    /* The SPEC.md §4.1 example. */
    EXPECT_JSON(&schema,
                "{\"collection\": \"docs\",\n \"records\": [\n"
                "   {\"id\": \"doc-17#3\", \"ts\": 1763798400123, \"vector\": [0.12, -0.5, 0.33], "
                "\"meta\": {\"lang\": \"en\"}},\n"
                "   {\"id\": \"doc-9#0\", \"op\": \"delete\", \"ts\": 1763798400200}\n ]}",
                REC_OK);
    ck_assert_str_eq(batch.coll->name, "docs");
    ck_assert_uint_eq(batch.n, 2);
    ck_assert_uint_eq(batch.recs[0].id_len, 8);
    ck_assert(memcmp(batch.recs[0].id, "doc-17#3", 8) == 0);
    ck_assert_int_eq(batch.recs[0].ts, 1763798400123);
    ck_assert_uint_eq(batch.recs[0].op, REC_UPSERT);
    ck_assert_float_eq(batch.recs[0].vec[0], 0.12f);
    ck_assert_float_eq(batch.recs[0].vec[1], -0.5f);
    ck_assert_float_eq(batch.recs[0].vec[2], 0.33f);
    ck_assert_uint_eq(batch.recs[0].meta_len, strlen("{\"lang\":\"en\"}"));
    ck_assert(memcmp(batch.recs[0].meta, "{\"lang\":\"en\"}", batch.recs[0].meta_len) == 0);
    ck_assert_uint_eq(batch.recs[1].op, REC_DELETE);
    ck_assert_ptr_null(batch.recs[1].vec);
    /* A single record (kcat one-liners), the topic's collection, no ts. */
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector\": [1, 2, 3]}", REC_OK);
    ck_assert_uint_eq(batch.n, 1);
    ck_assert_int_eq(batch.recs[0].ts, REC_TS_ABSENT);
    ck_assert_float_eq(batch.recs[0].vec[2], 3.0f);
    /* u64 ids are stored big-endian (so they sort numerically). */
    EXPECT_JSON(&schema, "{\"collection\": \"events\", \"id\": 258, \"vector\": [1,2,3,4]}",
                REC_OK);
    static const uint8_t be258[8] = {0, 0, 0, 0, 0, 0, 1, 2};
    ck_assert_uint_eq(batch.recs[0].id_len, 8);
    ck_assert(memcmp(batch.recs[0].id, be258, 8) == 0);
    /* 2^63 and above as strings of digits (JSON integers as jansson reads them stop at 2^63-1),
     * as the HTTP API writes them; a small one as a string is the same id as the integer. */
    EXPECT_JSON(&schema,
                "{\"collection\": \"events\", \"records\": [{\"id\": \"18446744073709551615\", "
                "\"vector\": [1,2,3,4]}, {\"id\": \"258\", \"vector\": [1,2,3,4]}, {\"id\": "
                "\"9223372036854775808\", \"vector\": [1,2,3,4]}]}",
                REC_OK);
    static const uint8_t bemax[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t be263[8] = {0x80, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_uint_eq(batch.n, 3);
    ck_assert(batch.recs[0].id_len == 8 && memcmp(batch.recs[0].id, bemax, 8) == 0);
    ck_assert(batch.recs[1].id_len == 8 && memcmp(batch.recs[1].id, be258, 8) == 0);
    ck_assert(batch.recs[2].id_len == 8 && memcmp(batch.recs[2].id, be263, 8) == 0);
    /* ... and an integer that large is refused with the way to send it */
    EXPECT_JSON(&schema,
                "{\"collection\": \"events\", \"id\": 9223372036854775808, \"vector\": [1,2,3,4]}",
                REC_GARBAGE);
    ck_assert_msg(strstr(detail, "a string of its decimal digits") != NULL, "%s", detail);
    EXPECT_JSON(
        &schema,
        "{\"collection\": \"events\", \"id\": \"18446744073709551616\", \"vector\": [1,2,3,4]}",
        REC_BAD_ID);
    ck_assert_msg(strstr(detail, "18446744073709551615") != NULL, "%s", detail);
    /* vector_b64: little-endian float32 1.0, -2.0, 0.5 */
    EXPECT_JSON(&schema_docs, "{\"id\": \"b\", \"vector_b64\": \"AACAPwAAAMAAAAA/\"}", REC_OK);
    ck_assert_float_eq(batch.recs[0].vec[0], 1.0f);
    ck_assert_float_eq(batch.recs[0].vec[1], -2.0f);
    ck_assert_float_eq(batch.recs[0].vec[2], 0.5f);
}
END_TEST

START_TEST(test_json_bad)
{
    char big[70 * 1024 + 100];
    EXPECT_JSON(&schema, "not json", REC_GARBAGE);
    EXPECT_JSON(&schema, "{\"id\": ", REC_GARBAGE);
    EXPECT_JSON(&schema, "[1, 2]", REC_GARBAGE);
    EXPECT_JSON(&schema, "", REC_GARBAGE);
    EXPECT_JSON(&schema, "{\"collection\": \"nope\", \"records\": [{\"id\": \"a\"}]}",
                REC_UNKNOWN_COLLECTION);
    EXPECT_JSON(&schema, "{\"id\": \"a\", \"vector\": [1, 2, 3]}", REC_UNKNOWN_COLLECTION);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector\": [1, 2]}", REC_WRONG_DIM);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector\": [1, 2, 3, 4]}", REC_WRONG_DIM);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\"}", REC_WRONG_DIM);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"AACAPwAAAMA=\"}", REC_WRONG_DIM);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector\": [1, 1e39, 3]}", REC_NON_FINITE);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector\": [1, 1e999, 3]}", REC_NON_FINITE);
    /* NaN in little-endian float32: 0x7fc00000 */
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"AACAPwAAwH8AAAA/\"}",
                REC_NON_FINITE);
    EXPECT_JSON(&schema_docs, "{\"id\": 7, \"vector\": [1, 2, 3]}", REC_BAD_ID);
    EXPECT_JSON(&schema_docs, "{\"id\": \"\", \"vector\": [1, 2, 3]}", REC_BAD_ID);
    EXPECT_JSON(&schema, "{\"collection\": \"events\", \"id\": \"7a\", \"vector\": [1,2,3,4]}",
                REC_BAD_ID);
    EXPECT_JSON(&schema, "{\"collection\": \"events\", \"id\": -1, \"vector\": [1,2,3,4]}",
                REC_BAD_ID);
    memset(big, 'x', sizeof(big));
    snprintf(big, sizeof(big), "{\"id\": \"%0257d\", \"vector\": [1, 2, 3]}", 0);
    EXPECT_JSON(&schema_docs, big, REC_BAD_ID);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"ts\": \"yesterday\", \"vector\": [1,2,3]}",
                REC_BAD_TS);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"ts\": 1.5, \"vector\": [1,2,3]}", REC_BAD_TS);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"op\": \"merge\", \"vector\": [1,2,3]}",
                REC_BAD_OP);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"meta\": [1], \"vector\": [1,2,3]}", REC_BAD_META);
    int off =
        snprintf(big, sizeof(big), "{\"id\": \"a\", \"vector\": [1,2,3], \"meta\": {\"k\": \"");
    memset(big + off, 'v', 65 * 1024);
    strcpy(big + off + 65 * 1024, "\"}}");
    EXPECT_JSON(&schema_docs, big, REC_BAD_META);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"timestamp\": 5, \"vector\": [1,2,3]}",
                REC_BAD_RECORD);
    EXPECT_JSON(&schema_docs, "{\"records\": [5]}", REC_BAD_RECORD);
    EXPECT_JSON(&schema_docs, "{\"records\": {}}", REC_BAD_RECORD);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector\": [1,\"2\",3]}", REC_BAD_RECORD);
    EXPECT_JSON(&schema_docs,
                "{\"records\": [{\"id\": \"a\", \"vector\": [1,2,3]}, {\"id\": \"b\", \"vector\": "
                "[1,2,3]}, {\"id\": \"a\", \"op\": \"delete\"}]}",
                REC_DUPLICATE_ID);
    ck_assert_msg(strstr(detail, "0 and 2") != NULL, "%s", detail);
    EXPECT_JSON(&schema_docs, "{\"records\": []}", REC_EMPTY_BATCH);
    struct rec_schema tiny = schema_docs;
    tiny.max_value = 16;
    EXPECT_JSON(&tiny, "{\"id\": \"a\", \"vector\": [1,2,3]}", REC_TOO_LARGE);
}
END_TEST

/* A deterministic batch for the golden frames: strings with meta, or u64 ids without. */
static uint8_t *sample_frame(bool u64, size_t *len)
{
    static const float v[3][4] = {{1, -2, 0.5f, 3}, {0.25f, 0, 0, 0}, {-1, 1e-3f, 7, 8}};
    static const char *const ids[] = {"doc-1", "doc-22", "d"};
    static const char *const meta[] = {"{\"lang\":\"en\"}", "", "{\"n\":3}"};
    uint8_t be[3][8] = {{0}};
    struct rec_record r[3];
    for (int i = 0; i < 3; i++) {
        be[i][7] = (uint8_t)(i + 1);
        be[i][0] = (uint8_t)(u64 && i == 2 ? 0x80 : 0); /* above INT64_MAX */
        r[i] = (struct rec_record){u64 ? be[i] : (const uint8_t *)ids[i],
                                   u64 ? 8 : (uint32_t)strlen(ids[i]),
                                   i == 1 ? REC_TS_ABSENT : 1763798400000 + i,
                                   i == 1 ? REC_DELETE : REC_UPSERT,
                                   v[i],
                                   u64 ? NULL : (const uint8_t *)meta[i],
                                   u64 ? 0 : (uint32_t)strlen(meta[i])};
    }
    uint8_t *f;
    ck_assert_int_eq(rec_frame_encode(u64 ? "events" : "docs", u64 ? 4 : 3, u64, r, 3, &f, len),
                     ST_OK);
    return f;
}

static enum rec_reason frame(const struct rec_schema *s, const uint8_t *f, size_t len)
{
    return rec_decode(dec, s, REC_KIND_AUTO, f, len, &batch, detail, sizeof(detail));
}

START_TEST(test_frame_golden)
{
    for (int u64 = 0; u64 < 2; u64++) {
        size_t len;
        uint8_t *f = sample_frame(u64, &len);
        char rel[64];
        snprintf(rel, sizeof(rel), "golden/frame-v1-%s.bin", u64 ? "u64" : "strings");
        const char *path = st_test_source(rel);
        if (getenv("STRATA_GOLDEN_WRITE") != NULL) {
            FILE *o = fopen(path, "wb");
            ck_assert_ptr_nonnull(o);
            ck_assert_uint_eq(fwrite(f, 1, len, o), len);
            fclose(o);
        }
        /* The encoder still writes exactly the committed bytes (the format did not drift). */
        uint8_t *g;
        size_t glen;
        ck_assert_msg(store_fs_read_all(path, &g, &glen, SIZE_MAX) == ST_OK, "%s", path);
        ck_assert_uint_eq(glen, len);
        ck_assert_msg(memcmp(f, g, len) == 0, "%s differs from the encoder's output", path);
        /* And the golden bytes decode to the records, vectors in place (aligned buffer). */
        ck_assert_int_eq(frame(&schema, g, glen), REC_OK);
        ck_assert(batch.zero_copy);
        ck_assert_uint_eq(batch.n, 3);
        ck_assert_str_eq(batch.coll->name, u64 ? "events" : "docs");
        /* header 32, name padded to 40, ids to 64, times 64..87, ops padded to 96 */
        ck_assert_ptr_eq(batch.recs[0].vec, (const float *)(const void *)(g + 96));
        free(g);
        free(f);
    }
}
END_TEST

START_TEST(test_frame_round_trip)
{
    for (int u64 = 0; u64 < 2; u64++) {
        size_t len;
        uint8_t *f = sample_frame(u64, &len);
        /* Unaligned buffer: decoded by copy, same values. */
        uint8_t *buf = malloc(len + 1);
        memcpy(buf + 1, f, len);
        for (int aligned = 0; aligned < 2; aligned++) {
            const uint8_t *p = aligned ? f : buf + 1;
            ck_assert_msg(frame(&schema, p, len) == REC_OK, "%s", detail);
            ck_assert(batch.zero_copy == (aligned == 1));
            ck_assert_uint_eq(batch.n, 3);
            const struct rec_record *r = batch.recs;
            if (u64) {
                static const uint8_t id2[8] = {0x80, 0, 0, 0, 0, 0, 0, 3};
                ck_assert_uint_eq(r[2].id_len, 8);
                ck_assert(memcmp(r[2].id, id2, 8) == 0);
                ck_assert_uint_eq(r[0].meta_len, 0);
                ck_assert_float_eq(r[2].vec[3], 8.0f);
            } else {
                ck_assert_uint_eq(r[1].id_len, 6);
                ck_assert(memcmp(r[1].id, "doc-22", 6) == 0);
                ck_assert_uint_eq(r[0].meta_len, 13);
                ck_assert(memcmp(r[0].meta, "{\"lang\":\"en\"}", 13) == 0);
                ck_assert_uint_eq(r[1].meta_len, 0);
                ck_assert_float_eq(r[2].vec[1], 1e-3f);
            }
            ck_assert_int_eq(r[0].ts, 1763798400000);
            ck_assert_int_eq(r[1].ts, REC_TS_ABSENT);
            ck_assert_uint_eq(r[1].op, REC_DELETE);
            ck_assert_ptr_null(r[1].vec);
            ck_assert_float_eq(r[0].vec[1], -2.0f);
        }
        free(buf);
        free(f);
    }
}
END_TEST

/* Re-seals a hand-edited frame's checksums so the edit itself is what gets judged. */
static void reseal(uint8_t *f, size_t len)
{
    st_put_le32(f + 20, st_checksum32(f + FRAME_HEADER, len - FRAME_HEADER));
    st_put_le32(f + 28, st_checksum32(f, 28));
}

START_TEST(test_frame_bad)
{
    size_t len;
    uint8_t *f = sample_frame(false, &len);
    uint8_t *c = malloc(len + 8);
    /* Every single-bit flip anywhere is rejected, never accepted or crashed on. */
    for (size_t i = 0; i < len; i++) {
        memcpy(c, f, len);
        c[i] ^= 0x10;
        enum rec_reason r = frame(&schema, c, len);
        ck_assert_msg(r != REC_OK, "flip at %zu accepted", i);
    }
    /* Every truncation. */
    for (size_t n = 0; n < len; n++) {
        enum rec_reason r = frame(&schema, f, n);
        ck_assert_msg(r == REC_TRUNCATED || (n < 4 && r == REC_GARBAGE), "cut at %zu: %s", n,
                      rec_reason_str(r));
    }
    /* Trailing bytes. */
    memcpy(c, f, len);
    ck_assert_int_eq(frame(&schema, c, len + 8), REC_GARBAGE);
    /* A known-good frame with one field changed (checksums re-sealed). */
    memcpy(c, f, len);
    c[4] = 2;
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_UNSUPPORTED);
    memcpy(c, f, len);
    c[5] |= 0x80;
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_UNSUPPORTED);
    memcpy(c, f, len);
    st_put_le32(c + 8, 4);
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_WRONG_DIM);
    memcpy(c, f, len);
    c[32] = 'x'; /* "xocs" */
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_UNKNOWN_COLLECTION);
    memcpy(c, f, len);
    c[5] |= FRAME_F_U64_IDS;
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_BAD_ID);
    /* Layout: name 32..39, id ends 40..51, id bytes 52..63, times 64..87, ops 88..90,
     * vectors 96..131 (3 x 3 floats), meta 132... */
    memcpy(c, f, len);
    c[88 + 2] = 9;
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_BAD_OP);
    memcpy(c, f, len);
    st_put_f32(c + 96, NAN); /* record 0, vector[0] */
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_NON_FINITE);
    memcpy(c, f, len);
    st_put_f32(c + 96 + 2 * 12 + 4, INFINITY); /* record 2, vector[1] */
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_NON_FINITE);
    memcpy(c, f, len);
    st_put_le32(c + 44, 5); /* id ends 5, 5, 12: record 1 empty */
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_BAD_ID);
    /* String ids are UTF-8 (SPEC §3; every response carries them as JSON strings): record 1's
     * "doc-22" (bytes 57..62) with a lone lead byte, a stray continuation, a surrogate. */
    static const char *const bad_ids[] = {"doc-2\xc3",
                                          "d\x80"
                                          "c-22",
                                          "do\xed\xa0\x80"
                                          "c"};
    for (size_t b = 0; b < sizeof(bad_ids) / sizeof(bad_ids[0]); b++) {
        memcpy(c, f, len);
        memcpy(c + 57, bad_ids[b], 6);
        reseal(c, len);
        ck_assert_int_eq(frame(&schema, c, len), REC_BAD_ID);
        ck_assert_msg(strstr(detail, "record 1: id is not UTF-8") != NULL, "%s", detail);
    }
    memcpy(c, f, len);
    memcpy(c + 57,
           "d\xc3\xa9"
           "c-2",
           6); /* "déc-2": well-formed, taken */
    reseal(c, len);
    ck_assert_int_eq(frame(&schema, c, len), REC_OK);
    free(c);
    free(f);
    /* Duplicate ids and meta that is not an object, through the encoder. */
    float v[3] = {1, 2, 3};
    struct rec_record r[2] = {{(const uint8_t *)"x", 1, 5, REC_UPSERT, v, NULL, 0},
                              {(const uint8_t *)"x", 1, 6, REC_UPSERT, v, NULL, 0}};
    ck_assert_int_eq(rec_frame_encode("docs", 3, false, r, 2, &f, &len), ST_OK);
    ck_assert_int_eq(frame(&schema, f, len), REC_DUPLICATE_ID);
    free(f);
    r[1].id = (const uint8_t *)"y";
    r[1].meta = (const uint8_t *)"[1]";
    r[1].meta_len = 3;
    ck_assert_int_eq(rec_frame_encode(NULL, 3, false, r, 2, &f, &len), ST_OK);
    ck_assert_int_eq(frame(&schema, f, len), REC_UNKNOWN_COLLECTION); /* no name, no fallback */
    ck_assert_int_eq(frame(&schema_docs, f, len), REC_BAD_META);
    free(f);
    ck_assert_int_eq(rec_frame_encode("docs", 3, false, r, 0, &f, &len), ST_EINVAL);
}
END_TEST

/* Regression (issue 11, defect 2): frames whose checksums are valid but whose header lies
 * about the layout. Each is decoded from a buffer of exactly its length, so any read past the
 * end is an ASan report. Before the fix, padding after the name moved the cursor past the end
 * and the unsigned "bytes left" checks wrapped around. */
static enum rec_reason exact(const struct rec_schema *s, const uint8_t *f, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    memcpy(c, f, len);
    enum rec_reason r = frame(s, c, len);
    free(c);
    return r;
}

START_TEST(test_frame_lies_about_layout)
{
    static const struct rec_collection one[] = {{"d", 3, false}};
    static const struct rec_schema schema_d = {one, 1, NULL, 0};
    /* 33 bytes: header + a 1-byte name, nothing after it. */
    uint8_t h[33] = {0};
    memcpy(h, FRAME_MAGIC, 4);
    h[4] = FRAME_VERSION;
    h[6] = FRAME_ELEM_F32;
    h[7] = 1;
    st_put_le32(h + 8, 3);
    st_put_le32(h + 12, 1);
    st_put_le32(h + 16, sizeof(h));
    h[32] = 'd';
    reseal(h, sizeof(h));
    ck_assert_int_eq(exact(&schema_d, h, sizeof(h)), REC_TRUNCATED);
    h[5] = FRAME_F_META;
    reseal(h, sizeof(h));
    ck_assert_int_eq(exact(&schema_d, h, sizeof(h)), REC_TRUNCATED);
    /* Counts the frame cannot hold: refused before anything is sized by them. */
    static const uint32_t counts[] = {1, 2, 4, 1000, 1u << 20, 1u << 28, UINT32_MAX};
    size_t len;
    uint8_t *f = sample_frame(false, &len);
    uint8_t *c = malloc(len);
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        memcpy(c, f, len);
        st_put_le32(c + 12, counts[i]);
        reseal(c, len);
        enum rec_reason r = exact(&schema, c, len);
        ck_assert_msg(r != REC_OK, "count %u accepted", counts[i]);
    }
    /* Every shorter frame length, re-sealed: the frame ends inside each section in turn. */
    for (size_t n = FRAME_HEADER; n < len; n++) {
        memcpy(c, f, len);
        st_put_le32(c + 16, (uint32_t)n);
        reseal(c, n);
        enum rec_reason r = exact(&schema, c, n);
        ck_assert_msg(r == REC_TRUNCATED || r == REC_GARBAGE, "length %zu: %s", n,
                      rec_reason_str(r));
    }
    /* Every collection-name length, re-sealed (the name runs into the ids, or past the end). */
    for (unsigned nl = 0; nl <= FRAME_NAME_MAX + 1; nl++) {
        if (nl == 4) /* "docs": the true length */
            continue;
        memcpy(c, f, len);
        c[7] = (uint8_t)nl;
        reseal(c, len);
        ck_assert_int_ne(exact(&schema, c, len), REC_OK);
    }
    free(c);
    free(f);
}
END_TEST

/* JSON audit (issue 11): base64 whose text length and decoded length disagree — whitespace
 * OpenSSL trims, padding — never leaves part of a vector undecoded or reads past it. */
START_TEST(test_json_b64_lengths)
{
    /* 1, 2, 3, 4 as float32 (16 bytes, two padding characters). */
    EXPECT_JSON(
        &schema,
        "{\"collection\": \"events\", \"id\": 1, \"vector_b64\": \"AACAPwAAAEAAAEBAAACAQA==\"}",
        REC_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(batch.recs[0].vec[i], (float)(i + 1));
    /* 16 characters claim 12 bytes, but OpenSSL skips the leading blanks and decodes 9. */
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"    AACAPwAAAMAA\"}",
                REC_BAD_RECORD);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"AACAPwAAAMAAAA\\n\\n\"}",
                REC_BAD_RECORD);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"AACAPwAA\\u0000MAAAAA/\"}",
                REC_GARBAGE); /* jansson refuses NUL in strings */
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"AACAPwAAAMAAAA*/\"}",
                REC_BAD_RECORD);
    /* Three padding characters, and none where the length needs them. */
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"AACAPwAAAMAAAAA=AAA=\"}",
                REC_WRONG_DIM);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": \"\"}", REC_WRONG_DIM);
    EXPECT_JSON(&schema_docs, "{\"id\": \"a\", \"vector_b64\": 12}", REC_BAD_RECORD);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("formats");
    TCase *tc = tcase_create("formats");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_reason_codes_stable);
    tcase_add_test(tc, test_json_good);
    tcase_add_test(tc, test_json_bad);
    tcase_add_test(tc, test_frame_golden);
    tcase_add_test(tc, test_frame_round_trip);
    tcase_add_test(tc, test_frame_bad);
    tcase_add_test(tc, test_frame_lies_about_layout);
    tcase_add_test(tc, test_json_b64_lengths);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
