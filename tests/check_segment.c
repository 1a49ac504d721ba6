/*
 * Segment files as untrusted input (store/segment_format.h). Each test builds a real segment,
 * makes its footer or tables lie about the layout and recomputes every checksum
 * (fuzz_reseal_segment), so only bounds checks can catch the lie: open must refuse with
 * ST_ECORRUPT naming the file and offset, and nothing may read out of bounds (the suite runs
 * under ASan + UBSan in scripts/test).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_reseal.h"
#include "segment_format.h"
#include "st_coding.h"
#include "st_test.h"
#include "store_int.h"

#define DIM  4u
#define NREC 600u /* 19 sparse entries, 3 meta blocks (the last partial) */

/* A segment of n records (ids "id-00000"...; every 7th a delete; most with a meta). With
 * extra > 0: the rows layout (format version 2), record i's vector in row n - 1 - i + extra,
 * rows 0..extra-1 named by no record (versions superseded before the file was finished). */
static uint8_t *make_segment_rows(uint32_t n, uint32_t extra, size_t *len)
{
    char *dir = st_test_tmpdir("seg");
    char path[600];
    snprintf(path, sizeof(path), "%s/1.seg", dir);
    struct store_seg_in *in = calloc(n ? n : 1, sizeof(*in));
    char(*ids)[16] = calloc(n ? n : 1, 16);
    char(*metas)[32] = calloc(n ? n : 1, 32);
    float *vecs = calloc((size_t)(n ? n : 1) * DIM, sizeof(float));
    for (uint32_t i = 0; i < n; i++) {
        snprintf(ids[i], 16, "id-%05u", i);
        int ml = snprintf(metas[i], 32, "{\"k\":%u}", i);
        for (uint32_t d = 0; d < DIM; d++)
            vecs[(size_t)i * DIM + d] = (float)i + (float)d / 8;
        in[i] = (struct store_seg_in){.id = (const uint8_t *)ids[i],
                                      .id_len = (uint32_t)strlen(ids[i]),
                                      .ts = 1000 + i,
                                      .partition = 0,
                                      .offset = i,
                                      .op = i % 7 == 3 ? STORE_OP_DELETE : STORE_OP_UPSERT,
                                      .vec = vecs + (size_t)i * DIM,
                                      .meta = (const uint8_t *)metas[i],
                                      .meta_len = i % 5 == 0 ? 0 : (uint32_t)ml,
                                      .row = (uint64_t)(n - 1 - i + extra)};
    }
    struct store_seg_meta meta = {0, 3600000, STORE_SEG_SEALED, 1, extra > 0, 0, 0};
    struct st_err err = {0};
    uint64_t bytes;
    ck_assert_msg(store_segment_write(NULL, path, DIM, &meta, in, n, &bytes, &err) == ST_OK, "%s",
                  err.msg);
    uint8_t *b;
    ck_assert_int_eq(store_fs_read_all(path, &b, len, SIZE_MAX), ST_OK);
    ck_assert_uint_eq(*len, bytes);
    st_test_rmrf(dir);
    free(dir);
    free(in);
    free(ids);
    free(metas);
    free(vecs);
    return b;
}

static uint8_t *make_segment(uint32_t n, size_t *len)
{
    return make_segment_rows(n, 0, len);
}

/* Everything a reader can do with an open segment (must stay in bounds whatever it holds). */
static void exercise(struct store_segment *g)
{
    struct store_segment_info info;
    store_segment_info(g, &info);
    struct st_err err = {0};
    int vrc = store_segment_verify(g, &err);
    ck_assert(vrc == ST_OK || vrc == ST_ECORRUPT);
    uint8_t *all;
    size_t alen;
    if (store_segment_meta_all(g, &all, &alen) == ST_OK)
        free(all);
    for (uint64_t i = 0; i < info.count; i++) {
        struct store_seg_record r;
        store_segment_record(g, i, &r);
        uint64_t idx;
        if (store_segment_find(g, r.id, r.id_len, &idx) == ST_OK)
            ck_assert_uint_lt(idx, info.count);
        uint8_t *meta;
        uint32_t mlen;
        if (store_segment_meta(g, i, &meta, &mlen) == ST_OK)
            free(meta);
        /* In the vectors section: a row past it would read the record table, still inside
         * the mmap where ASan cannot see it, so check the pointer itself. */
        const float *v = store_segment_vector(g, i);
        const uint8_t *vlo = g->map + STORE_SEG_HEADER;
        ck_assert((const uint8_t *)v >= vlo);
        ck_assert((const uint8_t *)(v + info.dim) <= vlo + g->nrows * info.dim * 4);
        volatile float f = v[info.dim - 1];
        (void)f;
    }
    for (uint64_t b = 0; b * STORE_SEG_META_BLOCK < info.count; b++) {
        uint8_t *raw;
        size_t rlen;
        if (store_segment_meta_block(g, b, &raw, &rlen, &err) == ST_OK)
            free(raw);
    }
    uint64_t idx;
    ck_assert_int_eq(store_segment_find(g, (const uint8_t *)"id-zzzzz", 8, &idx), ST_ENOTFOUND);
    ck_assert_int_eq(store_segment_find(g, (const uint8_t *)"a", 1, &idx), ST_ENOTFOUND);
}

/* Every id of make_segment_rows(n, ...) is found, at its record. */
static void find_every_id(const struct store_segment *g, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof(id), "id-%05u", i);
        uint64_t idx;
        ck_assert_int_eq(store_segment_find(g, (const uint8_t *)id, 8, &idx), ST_OK);
        ck_assert_uint_eq(idx, i);
    }
}

/* Reseals b and opens it: the result of store_segment_open_file (the segment exercised and
 * released when it opened). */
static int open_resealed(uint8_t *b, size_t len, struct st_err *err)
{
    fuzz_reseal_segment(b, len);
    const char *path = fuzz_memfile(b, len);
    ck_assert_ptr_nonnull(path);
    struct store_segment *g;
    st_err_clear(err);
    int rc = store_segment_open_file(path, &g, err);
    if (rc == ST_OK) {
        exercise(g);
        store_segment_unref(g);
    }
    return rc;
}

static void expect_corrupt(uint8_t *b, size_t len, const char *what)
{
    struct st_err err = {0};
    int rc = open_resealed(b, len, &err);
    ck_assert_msg(rc == ST_ECORRUPT, "%s: open returned %d (%s)", what, rc, err.msg);
    ck_assert_msg(strstr(err.msg, "/proc/self/fd/") != NULL && strstr(err.msg, "offset") != NULL,
                  "%s: %s", what, err.msg);
}

static uint64_t foot64(const uint8_t *b, size_t len, unsigned off)
{
    return st_get_le64(b + len - STORE_SEG_FOOTER + off);
}

START_TEST(test_segment_resealed_opens)
{
    /* The reseal helper is faithful: an untouched file still opens and verifies. */
    static const uint32_t counts[] = {0, 1, 31, 32, 33, 255, 256, 257, NREC};
    for (size_t t = 0; t < sizeof(counts) / sizeof(counts[0]); t++) {
        size_t len;
        uint8_t *b = make_segment(counts[t], &len);
        fuzz_reseal_segment(b, len);
        struct store_segment *g;
        struct st_err err = {0};
        ck_assert_msg(store_segment_open_file(fuzz_memfile(b, len), &g, &err) == ST_OK,
                      "count %u: %s", counts[t], err.msg);
        ck_assert_msg(store_segment_verify(g, &err) == ST_OK, "%s", err.msg);
        exercise(g);
        find_every_id(g, counts[t]);
        store_segment_unref(g);
        free(b);
    }
}
END_TEST

/* Footer fields whose products wrap 64 bits, and counts that disagree with each other. */
START_TEST(test_segment_footer_counts_lie)
{
    size_t len;
    uint8_t *orig = make_segment(NREC, &len);
    uint8_t *b = malloc(len);
    uint8_t *ft = b + len - STORE_SEG_FOOTER;
    uint64_t count = foot64(orig, len, 16), nsparse = foot64(orig, len, 96);
    uint64_t nmeta = foot64(orig, len, 120), nvb = foot64(orig, len, 160);
    const struct {
        unsigned off, size;
        uint64_t val;
        const char *what;
    } lies[] = {
        /* nsparse * 16 and nmeta * 24 wrap to the true section sizes */
        {96, 8, nsparse + (1ull << 60), "nsparse*16 wraps"},
        {120, 8, nmeta + (1ull << 61), "nmeta*24 wraps"},
        {160, 8, nvb + (1ull << 62), "nvblocks*4 wraps"},
        {16, 8, count + (1ull << 61), "count*40 wraps"},
        {16, 8, 1ull << 62, "count*dim*4 wraps"},
        {12, 4, 0x80000000u, "dim*count*4 past the file"},
        {12, 4, 0, "dim 0"},
        {12, 4, DIM + 1, "dim disagrees with the record table's place"},
        {16, 8, count - 1, "count one short"},
        {16, 8, count + 1, "count one over"},
        {96, 8, nsparse - 1, "nsparse one short"},
        {96, 8, nsparse + 1, "nsparse one over"},
        {120, 8, nmeta - 1, "nmeta one short"},
        {120, 8, nmeta + 1, "nmeta one over"},
        {56, 4, 3, "unknown kind"},
        {144, 4, 0, "bloom_k 0"},
        {144, 4, 33, "bloom_k 33"},
        {136, 8, 0, "bloom_len 0"},
        {80, 8, foot64(orig, len, 80) + 1, "ids_len one over"},
        {80, 8, foot64(orig, len, 80) - 1, "ids_len one short"},
        {80, 8, UINT64_MAX, "ids_len huge"},
        {64, 8, foot64(orig, len, 64) + 40, "recs_off moved"},
        {72, 8, len, "ids past the end"},
        {72, 8, UINT64_MAX - 3, "ids_off wraps"},
        {88, 8, len - STORE_SEG_FOOTER - 8, "sparse into the footer"},
        {104, 8, foot64(orig, len, 112) + 1, "meta_off after mtab_off"},
        {104, 8, foot64(orig, len, 104) + 1, "meta_off one over"},
        {112, 8, len - STORE_SEG_FOOTER, "mtab at the footer"},
        {128, 8, len, "bloom past the end"},
        {152, 8, UINT64_MAX, "vsum_off huge"},
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        memcpy(b, orig, len);
        if (lies[i].size == 8)
            st_put_le64(ft + lies[i].off, lies[i].val);
        else
            st_put_le32(ft + lies[i].off, (uint32_t)lies[i].val);
        expect_corrupt(b, len, lies[i].what);
    }
    free(b);
    free(orig);
}
END_TEST

/* Record table entries: ids outside or out of order in the ids section, bad op, metas. */
START_TEST(test_segment_records_lie)
{
    size_t len;
    uint8_t *orig = make_segment(NREC, &len);
    uint8_t *b = malloc(len);
    uint64_t recs = foot64(orig, len, 64), ids_len = foot64(orig, len, 80);
    const struct {
        uint32_t rec;
        unsigned off, size;
        uint64_t val;
        const char *what;
    } lies[] = {
        {NREC - 1, 24, 8, ids_len, "id_off at the end of the ids"},
        {NREC - 1, 24, 8, UINT64_MAX - 2, "id_off wraps"},
        {5, 24, 8, 4 * 8, "id_off overlaps the previous id"},
        {0, 24, 8, 1, "first id_off not 0"},
        {7, 32, 2, 0, "id_len 0"},
        {7, 32, 2, 300, "id_len over STORE_ID_MAX"},
        {NREC - 1, 32, 2, 9, "last id runs past the ids"},
        {9, 34, 1, 2, "op 2"},
        {11, 36, 4, STORE_META_MAX + 1, "meta_len over STORE_META_MAX"},
        {11, 36, 4, UINT32_MAX, "meta_len huge"},
        {12, 36, 4, 1, "meta_len disagrees with the block's raw length"},
        {NREC - 1, 36, 4, 0, "last meta missing from the raw length"},
        /* min_ts = 1000, max_ts = 1000 + NREC - 1: pruning by time trusts them */
        {5, 0, 8, 999, "ts below the footer's min_ts"},
        {5, 0, 8, 1000 + NREC, "ts above the footer's max_ts"},
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        memcpy(b, orig, len);
        uint8_t *r = b + recs + (uint64_t)lies[i].rec * STORE_SEG_REC_SIZE + lies[i].off;
        if (lies[i].size == 8)
            st_put_le64(r, lies[i].val);
        else if (lies[i].size == 4)
            st_put_le32(r, (uint32_t)lies[i].val);
        else if (lies[i].size == 2)
            st_put_le16(r, (uint16_t)lies[i].val);
        else
            *r = (uint8_t)lies[i].val;
        expect_corrupt(b, len, lies[i].what);
    }
    /* Ids that are not strictly increasing (lookups bisect them, merges stream them): two
     * neighbours swapped ("id-00004" before "id-00003"), then one id equal to the next. */
    uint64_t ids = foot64(orig, len, 72);
    memcpy(b, orig, len);
    memcpy(b + ids + 3 * 8, "id-00004", 8);
    memcpy(b + ids + 4 * 8, "id-00003", 8);
    expect_corrupt(b, len, "ids out of order");
    memcpy(b, orig, len);
    memcpy(b + ids + 3 * 8, "id-00004", 8);
    expect_corrupt(b, len, "an id twice");
    free(b);
    free(orig);
}
END_TEST

/* Sparse index entries naming records past count, or out of order. */
START_TEST(test_segment_sparse_lies)
{
    size_t len;
    uint8_t *orig = make_segment(NREC, &len);
    uint8_t *b = malloc(len);
    uint64_t sp = foot64(orig, len, 88);
    const struct {
        uint32_t entry, val;
        const char *what;
    } lies[] = {
        {3, NREC, "record number == count"},     {3, UINT32_MAX, "record number huge"},
        {18, NREC + 5, "last entry past count"}, {2, 32, "not increasing"},
        {1, 33, "not every 32nd record"},        {0, 1, "first entry not record 0"},
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        memcpy(b, orig, len);
        st_put_le32(b + sp + (uint64_t)lies[i].entry * STORE_SEG_SPARSE_SIZE, lies[i].val);
        expect_corrupt(b, len, lies[i].what);
    }
    free(b);
    free(orig);
}
END_TEST

/* Meta block table entries pointing outside the meta section or claiming absurd sizes. */
START_TEST(test_segment_meta_table_lies)
{
    size_t len;
    uint8_t *orig = make_segment(NREC, &len);
    uint8_t *b = malloc(len);
    uint64_t mt = foot64(orig, len, 112), mo = foot64(orig, len, 104);
    const uint8_t *e1 = orig + mt + STORE_SEG_MTAB_SIZE;
    uint64_t off1 = st_get_le64(e1);
    uint32_t clen1 = st_get_le32(e1 + 8), rlen1 = st_get_le32(e1 + 12);
    const struct {
        uint32_t entry;
        unsigned off, size;
        uint64_t val;
        const char *what;
    } lies[] = {
        {1, 0, 8, len - STORE_SEG_FOOTER, "block in the footer"},
        {1, 0, 8, 0, "block at the file start"},
        {1, 0, 8, UINT64_MAX - 4, "block offset wraps"},
        {0, 0, 8, mo + 1, "first block not at meta_off"},
        {1, 0, 8, off1 - 1, "blocks overlap"},
        {1, 8, 4, UINT32_MAX, "compressed length huge"},
        {1, 8, 4, clen1 + 1, "compressed length runs into the next block"},
        {2, 8, 4, (uint32_t)(mt - st_get_le64(orig + mt + 2 * STORE_SEG_MTAB_SIZE)) + 1,
         "last block runs into the meta table"},
        {1, 12, 4, UINT32_MAX, "raw length 4 GiB (an allocation the header asked for)"},
        {1, 12, 4, rlen1 + 1, "raw length disagrees with the records' meta_len"},
        {1, 12, 4, rlen1 - 1, "raw length one short"},
    };
    for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
        memcpy(b, orig, len);
        uint8_t *t = b + mt + (uint64_t)lies[i].entry * STORE_SEG_MTAB_SIZE + lies[i].off;
        if (lies[i].size == 8)
            st_put_le64(t, lies[i].val);
        else
            st_put_le32(t, (uint32_t)lies[i].val);
        expect_corrupt(b, len, lies[i].what);
    }
    (void)clen1;
    free(b);
    free(orig);
}
END_TEST

/* Every single-byte change of the footer, resealed: opens cleanly or is refused, never more. */
START_TEST(test_segment_footer_bytes_resealed)
{
    size_t len;
    uint8_t *orig = make_segment_rows(40, (uint32_t)_i * 3, &len); /* both layouts */
    uint8_t *b = malloc(len);
    static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    size_t refused = 0;
    for (size_t at = len - STORE_SEG_FOOTER + 8; at < len - 8; at++)
        for (size_t v = 0; v < sizeof(vals); v++) {
            memcpy(b, orig, len);
            if (b[at] == vals[v])
                continue;
            b[at] = vals[v];
            struct st_err err = {0};
            int rc = open_resealed(b, len, &err);
            ck_assert_msg(rc == ST_OK || rc == ST_ECORRUPT || rc == ST_EUNSUPP, "byte %zu = %u: %d",
                          at, vals[v], rc);
            refused += rc != ST_OK;
        }
    ck_assert_uint_gt(refused, 100);
    free(b);
    free(orig);
}
END_TEST

/* The rows layout (version 2): vectors in any row order, unreferenced rows allowed; every
 * accessor gives record i its own vector, and the file verifies. */
START_TEST(test_segment_rows_layout)
{
    static const uint32_t counts[] = {0, 1, 33, NREC};
    static const uint32_t extras[] = {1, 5, 64, 300};
    for (size_t t = 0; t < sizeof(counts) / sizeof(counts[0]); t++) {
        size_t len;
        uint8_t *b = make_segment_rows(counts[t], extras[t], &len);
        ck_assert_uint_eq(st_get_le32(b + 8), STORE_SEG_VERSION_ROWS);
        struct store_segment *g;
        struct st_err err = {0};
        ck_assert_msg(store_segment_open_file(fuzz_memfile(b, len), &g, &err) == ST_OK,
                      "count %u: %s", counts[t], err.msg);
        ck_assert_msg(store_segment_verify(g, &err) == ST_OK, "%s", err.msg);
        struct store_segment_info info;
        store_segment_info(g, &info);
        ck_assert_uint_eq(info.count, counts[t]);
        /* store_segment_write writes rows up to the highest one named */
        uint32_t rows = counts[t] ? counts[t] + extras[t] : 0;
        ck_assert_uint_eq(info.rows, rows);
        ck_assert_ptr_null(store_segment_contiguous(g));
        exercise(g);
        find_every_id(g, counts[t]);
        for (uint32_t i = 0; i < counts[t]; i++) {
            const float *v = store_segment_vector(g, i);
            for (uint32_t d = 0; d < DIM; d++)
                ck_assert_float_eq(v[d], i % 7 == 3 ? 0.0f : (float)i + (float)d / 8);
        }
        /* The unreferenced rows are zeros (store_segment_write fills rows no record names). */
        for (uint32_t r = 0; r < extras[t] && r < rows; r++)
            ck_assert_float_eq(((const float *)(const void *)(b + STORE_SEG_HEADER))[r * DIM], 0);
        store_segment_unref(g);
        free(b);
    }
}
END_TEST

/* A version-2 file whose checksums are all valid but whose row table or row count lies. */
START_TEST(test_segment_rows_lie)
{
    size_t len;
    uint8_t *orig = make_segment_rows(NREC, 8, &len);
    uint8_t *b = malloc(len);
    uint8_t *ft = b + len - STORE_SEG_FOOTER;
    uint64_t rows_off = foot64(orig, len, 192), nrows = foot64(orig, len, 200);
    ck_assert_uint_eq(nrows, NREC + 8);
    const struct {
        unsigned off;
        uint64_t val;
        const char *what;
    } feet[] = {
        {200, 0, "no rows"},
        {200, nrows - 1, "one row short of the highest row named"},
        {200, nrows + 1, "one row over: the vectors run into the record table"},
        {200, 1ull << 62, "nrows*dim*4 wraps"},
        {200, UINT64_MAX, "nrows huge"},
        {192, len, "row table past the end"},
        {192, len - STORE_SEG_FOOTER - 4, "row table into the footer"},
        {192, UINT64_MAX - 3, "rows_off wraps"},
        {16, NREC + 1, "count one over (the row table too short)"},
    };
    for (size_t i = 0; i < sizeof(feet) / sizeof(feet[0]); i++) {
        memcpy(b, orig, len);
        st_put_le64(ft + feet[i].off, feet[i].val);
        expect_corrupt(b, len, feet[i].what);
    }
    const struct {
        uint32_t rec;
        uint32_t val;
        const char *what;
    } rows[] = {
        {0, NREC + 8, "row == nrows"},
        {NREC - 1, UINT32_MAX, "row huge"},
        {300, NREC + 9, "row past the vectors"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        memcpy(b, orig, len);
        st_put_le32(b + rows_off + (uint64_t)rows[i].rec * 4, rows[i].val);
        expect_corrupt(b, len, rows[i].what);
    }
    /* Two records sharing a row: in bounds, but refused at open. Shared rows would let a
     * file name far more vector bytes than it holds (count records on one row of a huge dim:
     * the indexer's gather mallocs count * dim * 4, quadratic in the file size), and every
     * consumer of an open segment relies on count <= rows. */
    memcpy(b, orig, len);
    st_put_le32(b + rows_off + 5 * 4, st_get_le32(orig + rows_off + 6 * 4));
    struct st_err verr = {0};
    ck_assert_int_eq(open_resealed(b, len, &verr), ST_ECORRUPT);
    ck_assert_msg(strstr(verr.msg, "row named by two records") != NULL, "%s", verr.msg);
    /* The extreme: every record on row 0 of a file whose footer claims one row. */
    memcpy(b, orig, len);
    for (uint32_t i = 0; i < NREC; i++)
        st_put_le32(b + rows_off + (uint64_t)i * 4, 0);
    expect_corrupt(b, len, "all records on one row");
    /* Header and footer versions must agree, and only 1 and 2 exist. */
    static const uint32_t vers[][2] = {{1, 2}, {2, 1}, {3, 3}, {0, 0}};
    for (size_t i = 0; i < sizeof(vers) / sizeof(vers[0]); i++) {
        memcpy(b, orig, len);
        st_put_le32(b + 8, vers[i][0]);
        st_put_le32(ft + 8, vers[i][1]);
        struct st_err err = {0};
        int rc = open_resealed(b, len, &err);
        ck_assert_msg(rc == ST_EUNSUPP, "versions %u/%u: %d (%s)", vers[i][0], vers[i][1], rc,
                      err.msg);
    }
    free(b);
    free(orig);
}
END_TEST

/* The writer refuses rows outside rows mode, a record naming a row never written, and a
 * record naming a row another record names. */
START_TEST(test_segment_rows_writer_refuses)
{
    char *dir = st_test_tmpdir("segw");
    char path[600];
    snprintf(path, sizeof(path), "%s/1.seg", dir);
    float v[DIM] = {1, 2, 3, 4};
    struct st_err err = {0};
    uint64_t row, bytes;
    struct store_segment_writer *w;
    struct store_seg_meta m1 = {0, 1000, STORE_SEG_SEALED, 1, false, 0, 0};
    ck_assert_int_eq(store_segment_writer_open(NULL, path, DIM, &m1, 4, &w, &err), ST_OK);
    ck_assert_int_eq(store_segment_writer_put_row(w, v, &row, &err), ST_EINVAL);
    store_segment_writer_close(w);
    ck_assert_int_ne(access(path, F_OK), 0); /* an aborted writer leaves no file */
    struct store_seg_meta m2 = {0, 1000, STORE_SEG_SEALED, 1, true, 0, 0};
    ck_assert_int_eq(store_segment_writer_open(NULL, path, DIM, &m2, 4, &w, &err), ST_OK);
    ck_assert_int_eq(store_segment_writer_put_row(w, v, &row, &err), ST_OK);
    ck_assert_uint_eq(row, 0);
    struct store_seg_in r = {
        .id = (const uint8_t *)"a", .id_len = 1, .op = STORE_OP_UPSERT, .row = 1};
    ck_assert_int_eq(store_segment_writer_add(w, &r, &err), ST_OK);
    ck_assert_int_eq(store_segment_writer_finish(w, &bytes, &err), ST_EINVAL);
    ck_assert_msg(strstr(err.msg, "row 1 of 1") != NULL, "%s", err.msg);
    store_segment_writer_close(w);
    ck_assert_int_ne(access(path, F_OK), 0);
    /* Two records naming one row: a file no reader takes, so the writer refuses the second
     * record (rows named before they are put included). */
    for (int late = 0; late < 2; late++) {
        ck_assert_int_eq(store_segment_writer_open(NULL, path, DIM, &m2, 4, &w, &err), ST_OK);
        if (!late)
            ck_assert_int_eq(store_segment_writer_put_row(w, v, &row, &err), ST_OK);
        struct store_seg_in a = {
            .id = (const uint8_t *)"a", .id_len = 1, .op = STORE_OP_UPSERT, .row = 0};
        struct store_seg_in c = {
            .id = (const uint8_t *)"c", .id_len = 1, .op = STORE_OP_UPSERT, .row = 0};
        ck_assert_int_eq(store_segment_writer_add(w, &a, &err), ST_OK);
        st_err_clear(&err);
        ck_assert_int_eq(store_segment_writer_add(w, &c, &err), ST_EINVAL);
        ck_assert_msg(strstr(err.msg, "row 0") != NULL, "%s", err.msg);
        ck_assert_int_eq(store_segment_writer_finish(w, &bytes, &err), ST_EINVAL);
        store_segment_writer_close(w);
        ck_assert_int_ne(access(path, F_OK), 0);
    }
    /* The same through store_segment_write. */
    float vv[2 * DIM] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct store_seg_in two[2] = {
        {.id = (const uint8_t *)"a", .id_len = 1, .op = STORE_OP_UPSERT, .vec = vv, .row = 3},
        {.id = (const uint8_t *)"b",
         .id_len = 1,
         .op = STORE_OP_UPSERT,
         .vec = vv + DIM,
         .row = 3}};
    st_err_clear(&err);
    ck_assert_int_eq(store_segment_write(NULL, path, DIM, &m2, two, 2, &bytes, &err), ST_EINVAL);
    ck_assert_int_ne(access(path, F_OK), 0);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* A version-1 file reads footer bytes 192..247 as nothing: the v2 fields there (rows_off,
 * nrows, the row table's checksum) mean nothing in version 1, so garbage in them (under a valid
 * footer checksum) changes nothing a reader sees, as before version 2 existed. */
START_TEST(test_segment_v1_ignores_v2_footer_fields)
{
    size_t len;
    uint8_t *b = make_segment(NREC, &len);
    ck_assert_uint_eq(st_get_le32(b + 8), STORE_SEG_VERSION);
    memset(b + len - STORE_SEG_FOOTER + 192, 0xff, 56);
    fuzz_reseal_segment(b, len);
    struct store_segment *g;
    struct st_err err = {0};
    ck_assert_msg(store_segment_open_file(fuzz_memfile(b, len), &g, &err) == ST_OK, "%s", err.msg);
    ck_assert_msg(store_segment_verify(g, &err) == ST_OK, "%s", err.msg);
    struct store_segment_info info;
    store_segment_info(g, &info);
    ck_assert_uint_eq(info.rows, NREC);
    const float *all = store_segment_contiguous(g);
    ck_assert_ptr_eq(all, (const float *)(const void *)(g->map + STORE_SEG_HEADER));
    for (uint32_t i = 0; i < NREC; i++)
        ck_assert_ptr_eq(store_segment_vector(g, i), all + (size_t)i * DIM);
    exercise(g);
    store_segment_unref(g);
    free(b);
}
END_TEST

/* Bytes no checksum covers: the header's dim and reserved zeros, the footer's last 4 zero
 * bytes. A flip there is bit rot all the same: store_segment_verify (what `strata inspect`
 * runs) must call it corruption, naming the offset (of the field, for the dim). */
START_TEST(test_segment_unchecksummed_bytes_verified)
{
    size_t len;
    uint8_t *orig = make_segment(40, &len);
    uint8_t *b = malloc(len);
    size_t offs[64 - 12 + 4], n = 0;
    for (size_t at = 12; at < STORE_SEG_HEADER; at++)
        offs[n++] = at;
    for (size_t at = len - 4; at < len; at++)
        offs[n++] = at;
    for (size_t i = 0; i < n; i++) {
        memcpy(b, orig, len);
        b[offs[i]] ^= 0x10;
        struct store_segment *g;
        struct st_err err = {0};
        int rc = store_segment_open_file(fuzz_memfile(b, len), &g, &err);
        if (rc == ST_OK) {
            rc = store_segment_verify(g, &err);
            store_segment_unref(g);
        }
        ck_assert_msg(rc == ST_ECORRUPT, "byte %zu flipped: %d (%s)", offs[i], rc, err.msg);
        char want[48];
        snprintf(want, sizeof(want), "offset %zu", offs[i] < 16 ? (size_t)12 : offs[i]);
        ck_assert_msg(strstr(err.msg, want) != NULL, "byte %zu: %s", offs[i], err.msg);
    }
    free(b);
    free(orig);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("segment");
    TCase *tc = tcase_create("segment");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_segment_resealed_opens);
    tcase_add_test(tc, test_segment_footer_counts_lie);
    tcase_add_test(tc, test_segment_records_lie);
    tcase_add_test(tc, test_segment_sparse_lies);
    tcase_add_test(tc, test_segment_meta_table_lies);
    tcase_add_loop_test(tc, test_segment_footer_bytes_resealed, 0, 2);
    tcase_add_test(tc, test_segment_unchecksummed_bytes_verified);
    tcase_add_test(tc, test_segment_rows_layout);
    tcase_add_test(tc, test_segment_rows_lie);
    tcase_add_test(tc, test_segment_rows_writer_refuses);
    tcase_add_test(tc, test_segment_v1_ignores_v2_footer_fields);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
