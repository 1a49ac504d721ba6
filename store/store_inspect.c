/* strata inspect: read-only verification and summaries of stores and their files. */
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "manifest_format.h"
#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "store_int.h"

struct ictx {
    FILE *out;
    int problems;
};

static void problem(struct ictx *c, const char *fmt, ...) ST_PRINTF(2, 3);
static void problem(struct ictx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(c->out, "CORRUPT ");
    vfprintf(c->out, fmt, ap);
    fprintf(c->out, "\n");
    va_end(ap);
    c->problems++;
}

/* dim 0: framing and batch headers only. newest: the store's newest WAL file holding data,
 * the only one where recovery takes a torn tail for a crash mid-append (store_open.c). */
static int inspect_wal(struct ictx *c, const char *path, uint32_t dim, bool newest)
{
    uint8_t *data;
    size_t len;
    int rc = store_fs_read_all(path, &data, &len, SIZE_MAX);
    if (rc != ST_OK) {
        fprintf(c->out, "%s: cannot read: %s\n", path, st_strerror(rc));
        return rc;
    }
    struct store_log_reader r;
    store_log_reader_init(&r, data, len);
    const uint8_t *p;
    size_t n, off;
    uint64_t batches = 0, records = 0;
    int32_t minp = INT32_MAX, maxp = INT32_MIN;
    int64_t mino = INT64_MAX, maxo = INT64_MIN;
    while (store_log_next(&r, &p, &n, &off)) {
        struct store_batch b;
        if (dim > 0) {
            struct store_record *recs;
            float *vecs;
            struct store_vref *refs;
            if (store_wal_decode(dim, p, n, &b, &recs, &vecs, &refs) != ST_OK) {
                problem(c, "%s: undecodable WAL record at offset %zu", path, off);
                continue;
            }
            free(recs);
            free(vecs);
            free(refs);
        } else {
            if (n < 17 || (p[0] != 1 && p[0] != 2)) {
                problem(c, "%s: bad batch header at offset %zu", path, off);
                continue;
            }
            b.partition = (int32_t)(p[1] | p[2] << 8 | p[3] << 16 | (uint32_t)p[4] << 24);
            b.offset = 0;
            for (int i = 7; i >= 0; i--)
                b.offset = b.offset << 8 | p[5 + i];
            b.n = (uint32_t)(p[13] | p[14] << 8 | p[15] << 16 | (uint32_t)p[16] << 24);
        }
        batches++;
        records += b.n;
        if (b.partition < minp)
            minp = b.partition;
        if (b.partition > maxp)
            maxp = b.partition;
        if (b.offset < mino)
            mino = b.offset;
        if (b.offset > maxo)
            maxo = b.offset;
    }
    fprintf(c->out, "wal %s: bytes=%zu batches=%" PRIu64 " records=%" PRIu64, path, len, batches,
            records);
    if (batches > 0)
        fprintf(c->out, " partitions=%d..%d offsets=%" PRId64 "..%" PRId64, minp, maxp, mino, maxo);
    fprintf(c->out, "%s\n", dim ? "" : " (framing and headers only: no dim known)");
    if (r.end == STORE_LOG_END_TORN && !newest)
        problem(c,
                "%s: damaged record at offset %zu (%s) in a WAL file that is not the newest "
                "holding data: recovery refuses to start",
                path, r.end_offset, r.why);
    else if (r.end == STORE_LOG_END_TORN)
        fprintf(c->out, "  torn tail at offset %zu (%s): recovery truncates it\n", r.end_offset,
                r.why);
    else if (r.end == STORE_LOG_END_CORRUPT)
        problem(c, "%s: %s", path, r.why);
    store_log_reader_destroy(&r);
    free(data);
    return ST_OK;
}

/* in_store: a segment a store's manifest lists (a run may name rows of the store's vector
 * logs); otherwise a file that must stand alone (a copy, a file named on the command line). */
static int inspect_seg(struct ictx *c, const char *path, uint32_t want_dim, bool in_store)
{
    struct store_segment *g;
    struct st_err err = {0};
    int rc = store_segment_open(path, in_store, &g, &err);
    if (rc == ST_OK)
        rc = store_segment_verify(g, &err);
    if (rc == ST_ECORRUPT || rc == ST_EUNSUPP) {
        problem(c, "%s", err.msg);
        if (rc == ST_ECORRUPT && g == NULL)
            return ST_OK;
    } else if (rc != ST_OK) {
        fprintf(c->out, "%s: %s\n", path, err.msg);
        store_segment_unref(g);
        return rc;
    }
    if (g != NULL) {
        struct store_segment_info in;
        store_segment_info(g, &in);
        static const char *kinds[] = {"run", "sealed", "delta"};
        fprintf(c->out,
                "segment %s: window=[%" PRId64 ",%" PRId64 ") kind=%s version=%u records=%" PRIu64
                " dim=%u bytes=%" PRIu64 " ts=%" PRId64 "..%" PRId64 " checksums=%s\n",
                path, in.window_start, in.window_end, in.kind <= 2 ? kinds[in.kind] : "?",
                in.version, in.count, in.dim, in.bytes, in.min_ts, in.max_ts,
                rc == ST_OK ? "ok" : "BAD");
        if (store_segment_contiguous(g) == NULL) /* format version 2 */
            fprintf(c->out, "  rows layout: %" PRIu64 " vector rows, %" PRIu64 " unreferenced\n",
                    in.rows, in.rows > in.count ? in.rows - in.count : 0);
        if (want_dim && in.dim != want_dim)
            problem(c, "%s: dim %u differs from the store's %u", path, in.dim, want_dim);
        store_segment_unref(g);
    }
    return ST_OK;
}

static int inspect_store(struct ictx *c, const char *dir)
{
    struct store_mf_state st;
    uint64_t mfn;
    struct st_err err = {0};
    int rc = store_mf_load(dir, &st, &mfn, &err);
    if (rc == ST_ECORRUPT || rc == ST_EUNSUPP) {
        problem(c, "%s", err.msg);
        return ST_OK;
    }
    if (rc != ST_OK) {
        fprintf(c->out, "%s: %s\n", dir, err.msg[0] ? err.msg : st_strerror(rc));
        return rc;
    }
    fprintf(c->out,
            "store %s: MANIFEST-%06" PRIu64 " dim=%u segments=%zu wal_from=%06" PRIu64
            " partitions=%zu\n",
            dir, mfn, st.dim, st.nsegs, st.log_number, st.marks.n);
    for (size_t i = 0; i < st.marks.n; i++)
        fprintf(c->out, "  partition %d: flushed through offset %" PRId64 "\n",
                st.marks.m[i].partition, st.marks.m[i].offset);
    for (size_t i = 0; i < st.nsegs && rc == ST_OK; i++) {
        char *p = store_file_path(dir, STORE_FILE_SEG, st.segs[i].file_number);
        if (p == NULL) {
            rc = ST_ENOMEM;
            break;
        }
        struct stat sb;
        if (stat(p, &sb) != 0)
            problem(c, "%s: listed in the manifest but missing", p);
        else
            rc = inspect_seg(c, p, st.dim, true);
        free(p);
    }
    /* Vector logs: a header and whole rows (a torn row at the end is cut by recovery). */
    for (size_t i = 0; i < st.nvlogs && rc == ST_OK; i++) {
        char *p = store_file_path(dir, STORE_FILE_SEG, st.vlogs[i].file_number);
        if (p == NULL) {
            rc = ST_ENOMEM;
            break;
        }
        struct stat sb;
        uint8_t head[64];
        FILE *f = fopen(p, "rb");
        if (f == NULL || stat(p, &sb) != 0) {
            problem(c, "%s: vector log listed in the manifest but missing", p);
        } else if (fread(head, 1, sizeof(head), f) != sizeof(head) ||
                   !store_seg_header_is_log(head, st.dim)) {
            problem(c, "%s: bad vector log header at offset 0", p);
        } else {
            uint64_t rb = (uint64_t)st.dim * 4;
            fprintf(c->out,
                    "  vector log %s: window=[%" PRId64 ",%" PRId64 ") rows=%" PRIu64
                    " tail_bytes=%" PRIu64 "\n",
                    p, st.vlogs[i].window_start, st.vlogs[i].window_end,
                    ((uint64_t)sb.st_size - 64) / rb, ((uint64_t)sb.st_size - 64) % rb);
        }
        if (f != NULL)
            fclose(f);
        free(p);
    }
    /* The newest live WAL file holding data (as recovery picks it). */
    uint64_t newest = 0;
    DIR *d = opendir(dir);
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        uint64_t num;
        struct stat sb;
        char *p;
        if (store_file_parse(de->d_name, &num) != STORE_FILE_LOG || num < st.log_number ||
            num <= newest || (p = store_file_path(dir, STORE_FILE_LOG, num)) == NULL)
            continue;
        if (stat(p, &sb) != 0 || sb.st_size > 0)
            newest = num;
        free(p);
    }
    if (d != NULL)
        rewinddir(d);
    for (struct dirent *de; rc == ST_OK && d != NULL && (de = readdir(d)) != NULL;) {
        uint64_t num;
        if (store_file_parse(de->d_name, &num) == STORE_FILE_LOG && num >= st.log_number) {
            char *p = store_file_path(dir, STORE_FILE_LOG, num);
            if (p != NULL)
                rc = inspect_wal(c, p, st.dim, num >= newest);
            free(p);
        }
    }
    if (d != NULL)
        closedir(d);
    store_mf_state_free(&st);
    return rc;
}

static int inspect_manifest_file(struct ictx *c, const char *path)
{
    uint8_t *data;
    size_t len;
    int rc = store_fs_read_all(path, &data, &len, SIZE_MAX);
    if (rc != ST_OK) {
        fprintf(c->out, "%s: cannot read: %s\n", path, st_strerror(rc));
        return rc;
    }
    struct store_mf_state st = {0};
    struct store_log_reader r;
    store_log_reader_init(&r, data, len);
    const uint8_t *p;
    size_t n, off, groups = 0;
    while (store_log_next(&r, &p, &n, &off)) {
        groups++;
        if (store_mf_apply(&st, p, n) != ST_OK) {
            problem(c, "%s: bad edit group at offset %zu", path, off);
            break;
        }
    }
    fprintf(c->out, "manifest %s: edit_groups=%zu dim=%u segments=%zu\n", path, groups, st.dim,
            st.nsegs);
    if (r.end == STORE_LOG_END_CORRUPT)
        problem(c, "%s: %s", path, r.why);
    else if (r.end == STORE_LOG_END_TORN)
        fprintf(c->out, "  torn final edit group at offset %zu (never acted on)\n", r.end_offset);
    store_log_reader_destroy(&r);
    store_mf_state_free(&st);
    free(data);
    return ST_OK;
}

/*
 * <data_dir>/indexer/: strata-indexer's files (SPEC.md §6), one directory per collection. Its
 * segment copies (<node>@<start>@v<version>.seg) are segment files and are verified like the
 * store's; its CATALOG and index files belong to the indexer and are only counted here.
 */
static int inspect_indexer(struct ictx *c, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(c->out, "%s: cannot open\n", dir);
        return ST_EIO;
    }
    int rc = ST_OK;
    for (struct dirent *de; rc == ST_OK && (de = readdir(d)) != NULL;) {
        char *sub = NULL;
        struct stat sb;
        if (de->d_name[0] == '.')
            continue;
        if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0) {
            rc = ST_ENOMEM;
            break;
        }
        DIR *cd = stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode) ? opendir(sub) : NULL;
        size_t segs = 0, other = 0;
        for (struct dirent *fe; rc == ST_OK && cd != NULL && (fe = readdir(cd)) != NULL;) {
            size_t l = strlen(fe->d_name);
            if (fe->d_name[0] == '.')
                continue;
            if (l <= 4 || strcmp(fe->d_name + l - 4, ".seg") != 0) {
                other++;
                continue;
            }
            char *p = NULL;
            if (asprintf(&p, "%s/%s", sub, fe->d_name) < 0) {
                rc = ST_ENOMEM;
                break;
            }
            rc = inspect_seg(c, p, 0, false);
            if (rc != ST_OK && stat(p, &sb) != 0)
                rc = ST_OK; /* the indexer replaced or dropped it meanwhile */
            else
                segs++;
            free(p);
        }
        if (cd != NULL) {
            closedir(cd);
            fprintf(c->out,
                    "indexer %s: %zu segment copies verified, %zu other files (catalog, "
                    "indexes: not checked here)\n",
                    sub, segs, other);
        }
        free(sub);
    }
    closedir(d);
    return rc;
}

static int inspect_path(struct ictx *c, const char *path, int depth)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(c->out, "%s: does not exist\n", path);
        return ST_ENOTFOUND;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    uint64_t num;
    if (S_ISREG(sb.st_mode)) {
        switch (store_file_parse(base, &num)) {
        case STORE_FILE_LOG:
            return inspect_wal(c, path, 0, true); /* alone: which is newest is unknown */
        case STORE_FILE_SEG:
            return inspect_seg(c, path, 0, true); /* a store's run: its log is beside it */
        case STORE_FILE_MANIFEST:
            return inspect_manifest_file(c, path);
        default:
            fprintf(c->out, "%s: not a strata file (*.log, *.seg, MANIFEST-*)\n", path);
            return ST_EINVAL;
        }
    }
    char *cur = NULL;
    if (asprintf(&cur, "%s/CURRENT", path) < 0)
        return ST_ENOMEM;
    bool is_store = stat(cur, &sb) == 0;
    free(cur);
    if (is_store)
        return inspect_store(c, path);
    if (strcmp(base, "indexer") == 0) /* the indexer's half of a shared data_dir */
        return inspect_indexer(c, path);
    if (depth > 2)
        return ST_OK;
    /* A data dir: every store below it — <data_dir>/ingest/<name> (SPEC.md §6), or
     * <data_dir>/<name> when it was written before that layout. */
    DIR *d = opendir(path);
    if (d == NULL) {
        fprintf(c->out, "%s: cannot open\n", path);
        return ST_EIO;
    }
    int rc = ST_OK, found = 0;
    for (struct dirent *de; rc == ST_OK && (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char *sub = NULL;
        if (asprintf(&sub, "%s/%s", path, de->d_name) < 0) {
            rc = ST_ENOMEM;
            break;
        }
        if (stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            found++;
            rc = inspect_path(c, sub, depth + 1);
        }
        free(sub);
    }
    closedir(d);
    if (rc == ST_OK && found == 0 && depth == 0) {
        fprintf(c->out, "%s: no strata store here\n", path);
        rc = ST_ENOTFOUND;
    }
    return rc;
}

int store_inspect(const char *path, FILE *out, struct st_err *err)
{
    struct ictx c = {.out = out};
    int rc = inspect_path(&c, path, 0);
    if (rc != ST_OK)
        return st_err_set(err, rc, "%s: %s", path, st_strerror(rc));
    if (c.problems > 0) {
        fprintf(out, "%d problem(s) found\n", c.problems);
        return st_err_set(err, ST_ECORRUPT, "%s: %d problem(s) found", path, c.problems);
    }
    fprintf(out, "all checksums verified\n");
    return ST_OK;
}
