/* Segment files: writer, mmap reader, lookups and verification. Format: segment_format.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "segment_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "store_int.h"

/* ---- growable buffer ---------------------------------------------------------------------- */
struct buf {
    uint8_t *p;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return ST_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL)
        return ST_ENOMEM;
    b->p = p;
    b->cap = cap;
    return ST_OK;
}

static void bloom_hashes(const uint8_t *id, uint32_t len, uint32_t *h1, uint32_t *h2)
{
    uint64_t h = st_hash64(id, len);
    *h1 = (uint32_t)h;
    *h2 = (uint32_t)(h >> 32) | 1u;
}

/* ---- writer ------------------------------------------------------------------------------- */
/*
 * The streaming writer. The format puts the vectors first and every other section after them,
 * but a section's size is only known once the last record is in. So the vectors go straight
 * to the destination file, and the record table, ids, sparse index, meta blocks, meta table and
 * vector checksums each go through a buffer of SEG_SIDE_BUF bytes that spills, once full, to a
 * side file "<path>.<section>.tmp" (a small segment, e.g. most flushes, creates none); finish
 * appends each section to the destination in format order (computing its checksum as it
 * copies), then the Bloom filter and the footer, and fsyncs. Side files are never fsynced (the
 * destination is); a crash leaves only *.tmp files, which the next store_open removes.
 *
 * Memory (every buffer the writer owns is counted in its peak, store_segment_writer_peak):
 *   - one vector block: STORE_SEG_VEC_BLOCK (256 KiB);
 *   - one buffer of SEG_SIDE_BUF (64 KiB) per side file (6; 7 in rows mode, the row table),
 *     and one copy buffer at finish;
 *   - one raw meta block and its compressed form: at most STORE_SEG_META_BLOCK metas each
 *     (a few KiB typically; 16 MiB + zstd's bound at STORE_META_MAX metas);
 *   - the Bloom filter: STORE_SEG_BLOOM_BITS_PER_KEY (10) bits per *expected* record, sized at
 *     open. Bits are set at random positions, so it cannot be streamed; it is the one term
 *     that grows with the segment (1.25 B per record: ~190 MB for a 150M-record window, against
 *     ~100 B plus the decompressed metas per record for an in-memory sort). Adding more records
 *     than expected keeps the file valid; the filter only gets denser.
 * The sparse index (16 B per 32 records) and the meta table (24 B per 256 records) stream to
 * side files like the rest, so nothing else grows with the record count but, in rows mode,
 * one bit per row up to the highest row a record names (two records may not share a row).
 */

/* A multiple of every fixed entry size (40, 24, 16, 4 bytes: 240), so a side file and each
 * chunk copied from it hold whole entries: the meta table's are rebased while copying. */
#define SEG_SIDE_BUF (273u * 240u) /* 65520 */
#define SEG_COPY_BUF SEG_SIDE_BUF

enum { SIDE_RECS, SIDE_IDS, SIDE_SPARSE, SIDE_META, SIDE_MTAB, SIDE_VSUM, SIDE_ROWS, SIDE_N };
static const char *const side_name[SIDE_N] = {"recs", "ids",  "sparse", "meta",
                                              "mtab", "vsum", "rows"};

struct seg_side {
    struct store_file *f; /* created when the buffer first fills: small sections never spill */
    char *path;
    uint8_t *buf;
    size_t len;
    uint64_t spilled; /* bytes in f */
    uint64_t total;   /* bytes of the section so far (spilled + len) */
};

struct store_segment_writer {
    struct store_fs *fs;
    struct store_file *f; /* the destination; holds the header and vectors until finish */
    char *path;
    uint32_t dim;
    struct store_seg_meta meta;
    uint64_t n;
    uint64_t nrows;   /* vector rows written */
    uint64_t max_row; /* rows mode: the highest row a record named, +1 (0: none) */
    uint8_t *named;   /* rows mode: bit r set once a record names row r (readers refuse two) */
    size_t named_len; /* bytes of named */
    int64_t min_ts, max_ts;
    uint8_t *vblock;
    size_t vfill;
    struct seg_side side[SIDE_N];
    struct buf raw;  /* metas of the current meta block */
    struct buf zbuf; /* its compressed form */
    uint8_t *bloom;
    uint64_t bloom_len;
    uint8_t last_id[STORE_ID_MAX];
    uint32_t last_len;
    uint64_t buffered, peak;
    size_t vskip; /* bytes at the start of vblock already in the file (extend mode) */
    int failed;   /* sticky: after a failed add or finish only close is allowed */
    bool done;    /* finish succeeded: close keeps the file */
    bool extend;  /* the file was a vector log: close never removes it */
};

static void sw_account(struct store_segment_writer *w, int64_t delta)
{
    w->buffered = (uint64_t)((int64_t)w->buffered + delta);
    if (w->buffered > w->peak)
        w->peak = w->buffered;
}

/* Grows b to hold extra more bytes, keeping the writer's byte count. */
static int sw_reserve(struct store_segment_writer *w, struct buf *b, size_t extra)
{
    size_t before = b->cap;
    int rc = buf_reserve(b, extra);
    if (rc == ST_OK)
        sw_account(w, (int64_t)(b->cap - before));
    return rc;
}

/* Moves a full buffer to the side file (creating it on the first spill). */
static int side_spill(struct store_fs *fs, struct seg_side *sd)
{
    int rc = ST_OK;
    if (sd->f == NULL) {
        /* A leftover of a crashed writer with this number would make the create fail. */
        store_best_effort(store_fs_unlink(fs, sd->path, "store.seg.unlink_stale"));
        rc = store_fs_create(fs, sd->path, &sd->f, "store.seg.create_side");
    }
    if (rc == ST_OK)
        rc = store_fs_write(sd->f, sd->buf, sd->len, "store.seg.write");
    if (rc == ST_OK) {
        sd->spilled += sd->len;
        sd->len = 0;
    }
    return rc;
}

static int side_put(struct store_fs *fs, struct seg_side *sd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        size_t take = SEG_SIDE_BUF - sd->len < n ? SEG_SIDE_BUF - sd->len : n;
        memcpy(sd->buf + sd->len, q, take);
        sd->len += take;
        sd->total += take;
        q += take;
        n -= take;
        if (sd->len == SEG_SIDE_BUF) {
            int rc = side_spill(fs, sd);
            if (rc != ST_OK)
                return rc;
        }
    }
    return ST_OK;
}

static int vec_block_done(struct store_segment_writer *w)
{
    uint8_t t[4];
    st_put_le32(t, st_checksum32(w->vblock, w->vfill));
    int rc = side_put(w->fs, &w->side[SIDE_VSUM], t, 4);
    if (rc == ST_OK)
        rc = store_fs_write(w->f, w->vblock + w->vskip, w->vfill - w->vskip, "store.seg.write");
    w->vfill = w->vskip = 0;
    return rc;
}

/* Compresses the pending metas into one meta block (offsets relative to the meta section). */
static int meta_block_done(struct store_segment_writer *w, struct st_err *err)
{
    size_t bound = ZSTD_compressBound(w->raw.len);
    w->zbuf.len = 0;
    int rc = sw_reserve(w, &w->zbuf, bound);
    if (rc != ST_OK)
        return rc;
    size_t clen = ZSTD_compress(w->zbuf.p, bound, w->raw.p, w->raw.len, 3);
    if (ZSTD_isError(clen))
        return st_err_set(err, ST_EINTERNAL, "zstd: %s", ZSTD_getErrorName(clen));
    uint8_t t[STORE_SEG_MTAB_SIZE] = {0};
    st_put_le64(t, w->side[SIDE_META].total);
    st_put_le32(t + 8, (uint32_t)clen);
    st_put_le32(t + 12, (uint32_t)w->raw.len);
    st_put_le32(t + 16, st_checksum32(w->zbuf.p, clen));
    rc = side_put(w->fs, &w->side[SIDE_MTAB], t, sizeof(t));
    if (rc == ST_OK)
        rc = side_put(w->fs, &w->side[SIDE_META], w->zbuf.p, clen);
    w->raw.len = 0;
    return rc;
}

void store_segment_writer_close(struct store_segment_writer *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < SIDE_N; i++) {
        struct seg_side *sd = &w->side[i];
        store_fs_close(sd->f);
        if (sd->f != NULL)
            store_best_effort(store_fs_unlink(w->fs, sd->path, "store.seg.unlink_side"));
        free(sd->path);
        free(sd->buf);
    }
    if (w->f != NULL) {
        store_fs_close(w->f);
        if (!w->done && !w->extend)
            store_best_effort(store_fs_unlink(w->fs, w->path, "store.seg.unlink_tmp"));
    }
    free(w->path);
    free(w->vblock);
    free(w->raw.p);
    free(w->zbuf.p);
    free(w->bloom);
    free(w->named);
    free(w);
}

void store_seg_header_put(uint8_t *head, uint32_t version, uint32_t dim)
{
    memset(head, 0, STORE_SEG_HEADER);
    memcpy(head, STORE_SEG_MAGIC, 8);
    st_put_le32(head + 8, version);
    st_put_le32(head + 12, dim);
}

bool store_seg_header_is_log(const uint8_t *head, uint32_t dim)
{
    return memcmp(head, STORE_SEG_MAGIC, 8) == 0 &&
           st_get_le32(head + 8) == STORE_SEG_VERSION_ROWS && st_get_le32(head + 12) == dim;
}

/* The writer's buffers, before its destination exists. */
static int writer_new(struct store_fs *fs, const char *path, uint32_t dim,
                      const struct store_seg_meta *meta, uint64_t expect,
                      struct store_segment_writer **out)
{
    *out = NULL;
    struct store_segment_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return ST_ENOMEM;
    w->fs = fs;
    w->dim = dim;
    w->meta = *meta;
    w->min_ts = INT64_MAX;
    w->max_ts = INT64_MIN;
    uint64_t nbits = expect * STORE_SEG_BLOOM_BITS_PER_KEY;
    if (nbits < 64)
        nbits = 64;
    w->bloom_len = (nbits + 7) / 8;
    if ((w->path = strdup(path)) == NULL || (w->vblock = malloc(STORE_SEG_VEC_BLOCK)) == NULL ||
        (w->bloom = calloc(1, w->bloom_len)) == NULL)
        goto fail;
    sw_account(w, (int64_t)(STORE_SEG_VEC_BLOCK + w->bloom_len));
    for (int i = 0; i < SIDE_N; i++) {
        struct seg_side *sd = &w->side[i];
        if (asprintf(&sd->path, "%s.%s.tmp", path, side_name[i]) < 0) {
            sd->path = NULL;
            goto fail;
        }
        if (i == SIDE_ROWS && !meta->rows)
            continue; /* version 1 has no row table */
        if ((sd->buf = malloc(SEG_SIDE_BUF)) == NULL)
            goto fail;
        sw_account(w, SEG_SIDE_BUF);
    }
    *out = w;
    return ST_OK;
fail:
    store_segment_writer_close(w);
    return ST_ENOMEM;
}

int store_segment_writer_open(struct store_fs *fs, const char *path, uint32_t dim,
                              const struct store_seg_meta *meta, uint64_t expect,
                              struct store_segment_writer **out, struct st_err *err)
{
    *out = NULL;
    if (meta->vfile != 0 && (!meta->rows || meta->vrows >= UINT32_MAX))
        return st_err_set(err, ST_EINVAL, "%s: external rows need rows mode and < 2^32 rows", path);
    struct store_segment_writer *w;
    int rc = writer_new(fs, path, dim, meta, expect, &w);
    if (rc != ST_OK)
        return rc;
    if (meta->vfile != 0)
        w->nrows = meta->vrows; /* rows that exist already, in the vector file */
    if ((rc = store_fs_create(fs, path, &w->f, "store.seg.create")) != ST_OK) {
        st_err_set(err, rc, "create %s: %s", path, st_strerror(rc));
        goto fail;
    }
    uint8_t head[STORE_SEG_HEADER];
    store_seg_header_put(head, meta->rows ? STORE_SEG_VERSION_ROWS : STORE_SEG_VERSION, dim);
    if ((rc = store_fs_write(w->f, head, sizeof(head), "store.seg.write")) != ST_OK) {
        st_err_set(err, rc, "write %s: %s", path, st_strerror(rc));
        goto fail;
    }
    *out = w;
    return ST_OK;
fail:
    store_segment_writer_close(w);
    return rc;
}

/* Reads len bytes at off of f's file (EINTR and short reads retried). */
static int pread_full(struct store_file *f, void *buf, size_t len, uint64_t off, struct st_err *err)
{
    for (size_t have = 0; have < len;) {
        ssize_t got = pread(f->fd, (uint8_t *)buf + have, len - have, (off_t)(off + have));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return got < 0 ? st_err_sys(err, errno, "read %s", f->path)
                           : st_err_set(err, ST_EIO, "%s: short at offset %llu", f->path,
                                        (unsigned long long)(off + have));
        have += (size_t)got;
    }
    return ST_OK;
}

/* The checksums of a vector log's whole blocks, read with O_DIRECT where the file system has
 * it: the rows were written that way (store_fs_direct) and are not in the page cache, and
 * reading them through it would copy every byte once more in the kernel. Each block is read
 * with the aligned bytes around it into an aligned buffer and summed in place. *done gets the
 * vector bytes summed; the caller reads the rest through the page cache. */
static int log_sums_direct(struct store_segment_writer *w, struct store_fs *fs, const char *path,
                           uint64_t vbytes, uint64_t *done, struct st_err *err)
{
    const uint64_t a = 4096, nblocks = vbytes / STORE_SEG_VEC_BLOCK;
    *done = 0;
    if (nblocks == 0)
        return ST_OK;
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    void *buf = NULL;
    if (fd < 0 || posix_memalign(&buf, (size_t)a, STORE_SEG_VEC_BLOCK + 2 * a) != 0) {
        if (fd >= 0)
            close(fd);
        return ST_OK; /* no O_DIRECT here: all through the page cache */
    }
    int rc = ST_OK;
    for (uint64_t k = 0; k < nblocks; k++) {
        uint64_t at = STORE_SEG_HEADER + k * STORE_SEG_VEC_BLOCK, start = at & ~(a - 1);
        size_t lead = (size_t)(at - start), need = lead + STORE_SEG_VEC_BLOCK;
        size_t want = (need + a - 1) & ~(size_t)(a - 1), got = 0;
        while (got < need) {
            ssize_t r = pread(fd, (uint8_t *)buf + got, want - got, (off_t)(start + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
            if (((size_t)r & (a - 1)) != 0)
                break; /* the file's end (or unaligned from here): enough, or the cache reads */
        }
        if (got < need)
            break;
        uint8_t t[4];
        st_put_le32(t, st_checksum32((const uint8_t *)buf + lead, STORE_SEG_VEC_BLOCK));
        if ((rc = side_put(fs, &w->side[SIDE_VSUM], t, 4)) != ST_OK) {
            st_err_set(err, rc, "write %s: %s", path, st_strerror(rc));
            break;
        }
        *done += STORE_SEG_VEC_BLOCK;
    }
    close(fd);
    free(buf);
    return rc;
}

int store_segment_writer_extend(struct store_fs *fs, const char *path, uint32_t dim,
                                const struct store_seg_meta *meta, uint64_t expect, uint64_t nrows,
                                const uint32_t *sums, struct store_segment_writer **out,
                                struct st_err *err)
{
    *out = NULL;
    uint64_t vbytes;
    if (!meta->rows || meta->vfile != 0 || nrows >= UINT32_MAX ||
        __builtin_mul_overflow(nrows, (uint64_t)dim * 4, &vbytes))
        return st_err_set(err, ST_EINVAL, "%s: extend needs rows mode and < 2^32 rows", path);
    struct store_segment_writer *w;
    int rc = writer_new(fs, path, dim, meta, expect, &w);
    if (rc != ST_OK)
        return rc;
    w->extend = true; /* close never removes the file: it is a vector log */
    uint8_t head[STORE_SEG_HEADER];
    if ((rc = store_fs_open_append(fs, path, &w->f, "store.seg.extend_open")) != ST_OK) {
        st_err_set(err, rc, "open %s: %s", path, st_strerror(rc));
        goto fail;
    }
    if (w->f->size < STORE_SEG_HEADER + vbytes) {
        rc = st_err_set(err, ST_ECORRUPT, "%s: %llu bytes, too short for %llu rows", path,
                        (unsigned long long)w->f->size, (unsigned long long)nrows);
        goto fail;
    }
    if ((rc = pread_full(w->f, head, sizeof(head), 0, err)) != ST_OK)
        goto fail;
    if (!store_seg_header_is_log(head, dim)) {
        rc = st_err_set(err, ST_ECORRUPT, "%s: not a vector log of dim %u", path, dim);
        goto fail;
    }
    /* Cut what follows the rows (a torn earlier attempt): never the rows, which readers of
     * the window's runs may have mapped. */
    if (w->f->size > STORE_SEG_HEADER + vbytes &&
        (rc = store_fs_truncate(w->f, STORE_SEG_HEADER + vbytes, "store.seg.extend_truncate")) !=
            ST_OK) {
        st_err_set(err, rc, "truncate %s: %s", path, st_strerror(rc));
        goto fail;
    }
    /* Block checksums of the rows there: whole blocks now (the caller's, or read back), the
     * partial last block stays in vblock (vskip: already in the file) and is completed by the
     * rows put next. */
    uint64_t off = 0;
    if (sums != NULL) {
        uint64_t nblocks = vbytes / STORE_SEG_VEC_BLOCK;
        for (uint64_t k = 0; k < nblocks; k++) {
            uint8_t t[4];
            st_put_le32(t, sums[k]);
            if ((rc = side_put(fs, &w->side[SIDE_VSUM], t, 4)) != ST_OK) {
                st_err_set(err, rc, "write %s: %s", path, st_strerror(rc));
                goto fail;
            }
        }
        off = nblocks * STORE_SEG_VEC_BLOCK;
    } else if ((rc = log_sums_direct(w, fs, path, vbytes, &off, err)) != ST_OK) {
        goto fail;
    }
    while (off < vbytes) {
        size_t take =
            vbytes - off < STORE_SEG_VEC_BLOCK ? (size_t)(vbytes - off) : STORE_SEG_VEC_BLOCK;
        if ((rc = pread_full(w->f, w->vblock, take, STORE_SEG_HEADER + off, err)) != ST_OK)
            goto fail;
        off += take;
        if (take < STORE_SEG_VEC_BLOCK) {
            w->vfill = w->vskip = take;
            break;
        }
        uint8_t t[4];
        st_put_le32(t, st_checksum32(w->vblock, take));
        if ((rc = side_put(fs, &w->side[SIDE_VSUM], t, 4)) != ST_OK) {
            st_err_set(err, rc, "write %s: %s", path, st_strerror(rc));
            goto fail;
        }
    }
    w->nrows = nrows;
    *out = w;
    return ST_OK;
fail:
    store_segment_writer_close(w);
    return rc;
}

/* Appends one vector row (zeros when vec is NULL) to the vectors section. */
static int vec_put(struct store_segment_writer *w, const float *vec)
{
    size_t vecbytes = (size_t)w->dim * sizeof(float);
    for (size_t done = 0; done < vecbytes;) {
        size_t take = vecbytes - done;
        if (take > STORE_SEG_VEC_BLOCK - w->vfill)
            take = STORE_SEG_VEC_BLOCK - w->vfill;
        if (vec != NULL)
            memcpy(w->vblock + w->vfill, (const uint8_t *)vec + done, take);
        else
            memset(w->vblock + w->vfill, 0, take);
        w->vfill += take;
        done += take;
        if (w->vfill == STORE_SEG_VEC_BLOCK) {
            int rc = vec_block_done(w);
            if (rc != ST_OK)
                return rc;
        }
    }
    w->nrows++;
    return ST_OK;
}

int store_segment_writer_put_row(struct store_segment_writer *w, const float *vec, uint64_t *row,
                                 struct st_err *err)
{
    if (w->failed != ST_OK || w->done)
        return w->done ? ST_EINVAL : w->failed;
    if (!w->meta.rows || w->meta.vfile != 0 || w->nrows >= UINT32_MAX) {
        w->failed = st_err_set(err, ST_EINVAL, "%s: %s", w->path,
                               !w->meta.rows        ? "vector rows need a writer in rows mode"
                               : w->meta.vfile != 0 ? "external rows are not written here"
                                                    : "more vector rows than a row table can name");
        return w->failed;
    }
    *row = w->nrows;
    int rc = vec_put(w, vec);
    if (rc != ST_OK) {
        st_err_set(err, rc, "write %s: %s", w->path, st_strerror(rc));
        w->failed = rc;
    }
    return rc;
}

int store_segment_writer_add(struct store_segment_writer *w, const struct store_seg_in *r,
                             struct st_err *err)
{
    if (w->failed != ST_OK || w->done)
        return w->done ? ST_EINVAL : w->failed;
    int rc = ST_OK;
    if (r->id_len == 0 || r->id_len > STORE_ID_MAX ||
        (w->n > 0 && store_id_cmp(w->last_id, w->last_len, r->id, r->id_len) >= 0)) {
        rc = st_err_set(err, ST_EINVAL, "%s: record %llu out of id order", w->path,
                        (unsigned long long)w->n);
        goto out;
    }
    if (w->meta.rows) {
        /* The vector is a row put earlier (or later: checked at finish). */
        if (r->row >= UINT32_MAX) {
            rc = st_err_set(err, ST_EINVAL, "%s: record %llu names row %llu", w->path,
                            (unsigned long long)w->n, (unsigned long long)r->row);
            goto out;
        }
        if (r->row / 8 >= w->named_len) {
            size_t want = w->named_len ? w->named_len : 4096;
            while (want <= r->row / 8)
                want *= 2;
            uint8_t *nb = realloc(w->named, want);
            if (nb == NULL) {
                rc = ST_ENOMEM;
                goto out;
            }
            memset(nb + w->named_len, 0, want - w->named_len);
            sw_account(w, (int64_t)(want - w->named_len));
            w->named = nb;
            w->named_len = want;
        }
        uint8_t bit = (uint8_t)(1u << (r->row % 8));
        if (w->named[r->row / 8] & bit) {
            rc = st_err_set(err, ST_EINVAL, "%s: record %llu names row %llu, already another's",
                            w->path, (unsigned long long)w->n, (unsigned long long)r->row);
            goto out;
        }
        w->named[r->row / 8] |= bit;
        uint8_t rw[4];
        st_put_le32(rw, (uint32_t)r->row);
        if ((rc = side_put(w->fs, &w->side[SIDE_ROWS], rw, sizeof(rw))) != ST_OK)
            goto io;
        if (r->row + 1 > w->max_row)
            w->max_row = r->row + 1;
    } else if ((rc = vec_put(w, r->op == STORE_OP_UPSERT ? r->vec : NULL)) != ST_OK) {
        goto io; /* zeros for a delete */
    }
    uint8_t rec[STORE_SEG_REC_SIZE] = {0};
    st_put_le64(rec + 0, (uint64_t)r->ts);
    st_put_le64(rec + 8, (uint64_t)r->offset);
    st_put_le32(rec + 16, (uint32_t)r->partition);
    st_put_le32(rec + 20, r->idx);
    st_put_le64(rec + 24, w->side[SIDE_IDS].total);
    st_put_le16(rec + 32, (uint16_t)r->id_len);
    rec[34] = r->op;
    st_put_le32(rec + 36, r->meta_len);
    if ((rc = side_put(w->fs, &w->side[SIDE_RECS], rec, sizeof(rec))) != ST_OK)
        goto io;
    if (w->n % STORE_SEG_SPARSE_EVERY == 0) {
        uint8_t sp[STORE_SEG_SPARSE_SIZE] = {0};
        st_put_le32(sp, (uint32_t)w->n);
        memcpy(sp + 8, r->id, r->id_len < 8 ? r->id_len : 8);
        if ((rc = side_put(w->fs, &w->side[SIDE_SPARSE], sp, sizeof(sp))) != ST_OK)
            goto io;
    }
    if ((rc = side_put(w->fs, &w->side[SIDE_IDS], r->id, r->id_len)) != ST_OK)
        goto io;
    uint32_t h1, h2;
    bloom_hashes(r->id, r->id_len, &h1, &h2);
    uint64_t nbits = w->bloom_len * 8;
    for (uint32_t k = 0; k < STORE_SEG_BLOOM_K; k++) {
        uint64_t bit = (h1 + (uint64_t)k * h2) % nbits;
        w->bloom[bit / 8] |= (uint8_t)(1u << (bit % 8));
    }
    if (r->ts < w->min_ts)
        w->min_ts = r->ts;
    if (r->ts > w->max_ts)
        w->max_ts = r->ts;
    if ((rc = sw_reserve(w, &w->raw, r->meta_len)) != ST_OK)
        goto out;
    if (r->meta_len > 0)
        memcpy(w->raw.p + w->raw.len, r->meta, r->meta_len);
    w->raw.len += r->meta_len;
    memcpy(w->last_id, r->id, r->id_len);
    w->last_len = r->id_len;
    w->n++;
    if (w->n % STORE_SEG_META_BLOCK == 0 && (rc = meta_block_done(w, err)) != ST_OK)
        goto out;
    return ST_OK;
io:
    st_err_set(err, rc, "write %s: %s", w->path, st_strerror(rc));
out:
    w->failed = rc;
    return rc;
}

/* Appends section sd (its side file, then its buffer) to the destination; *sum gets the
 * section's checksum32. The meta table's offsets are rebased by rebase (the meta section's
 * file offset) on the way. */
static int side_copy(struct store_segment_writer *w, struct seg_side *sd, uint8_t *cbuf,
                     uint64_t rebase, uint32_t *sum, struct st_err *err)
{
    struct st_hash_stream *h = st_hash_stream_new();
    if (h == NULL)
        return ST_ENOMEM;
    int rc = ST_OK;
    int fd = -1;
    if (sd->f != NULL && (fd = open(sd->path, O_RDONLY | O_CLOEXEC)) < 0) {
        rc = st_err_sys(err, errno, "open %s", sd->path);
        goto out;
    }
    for (uint64_t off = 0; off < sd->total;) {
        uint8_t *chunk = cbuf;
        size_t len;
        if (off < sd->spilled) {
            len = sd->spilled - off < SEG_COPY_BUF ? (size_t)(sd->spilled - off) : SEG_COPY_BUF;
            for (size_t have = 0; have < len;) {
                ssize_t got = pread(fd, cbuf + have, len - have, (off_t)(off + have));
                if (got < 0 && errno == EINTR)
                    continue;
                if (got <= 0) {
                    rc = got < 0 ? st_err_sys(err, errno, "read %s", sd->path)
                                 : st_err_set(err, ST_EIO, "%s: short at offset %llu", sd->path,
                                              (unsigned long long)(off + have));
                    goto out;
                }
                have += (size_t)got;
            }
        } else {
            chunk = sd->buf; /* the unspilled tail; its last use */
            len = sd->len;
        }
        if (rebase != 0) {
            /* Chunks hold whole entries (SEG_SIDE_BUF is a multiple of the entry size). */
            for (size_t e = 0; e + STORE_SEG_MTAB_SIZE <= len; e += STORE_SEG_MTAB_SIZE)
                st_put_le64(chunk + e, st_get_le64(chunk + e) + rebase);
        }
        st_hash_stream_update(h, chunk, len);
        if ((rc = store_fs_write(w->f, chunk, len, "store.seg.write")) != ST_OK) {
            st_err_set(err, rc, "write %s: %s", w->path, st_strerror(rc));
            goto out;
        }
        off += len;
    }
    *sum = (uint32_t)st_hash_stream_digest(h);
out:
    if (fd >= 0)
        close(fd);
    st_hash_stream_free(h);
    return rc;
}

int store_segment_writer_finish(struct store_segment_writer *w, uint64_t *bytes, struct st_err *err)
{
    int rc = w->done ? ST_EINVAL : w->failed;
    uint8_t *cbuf = NULL;
    if (rc != ST_OK)
        goto out;
    if (w->vfill > 0 && (rc = vec_block_done(w)) != ST_OK) {
        st_err_set(err, rc, "write %s: %s", w->path, st_strerror(rc));
        goto out;
    }
    if (w->n % STORE_SEG_META_BLOCK != 0 && (rc = meta_block_done(w, err)) != ST_OK)
        goto out;
    if (w->max_row > w->nrows) {
        rc = st_err_set(err, ST_EINVAL, "%s: a record names row %llu of %llu", w->path,
                        (unsigned long long)(w->max_row - 1), (unsigned long long)w->nrows);
        goto out;
    }
    /* External rows: claim exactly the rows named. Readers map (and so need) what the footer
     * claims, and recovery cuts a log to the rows named: never below what a run claims. */
    if (w->meta.vfile != 0)
        w->nrows = w->max_row;
    if ((cbuf = malloc(SEG_COPY_BUF)) == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    sw_account(w, SEG_COPY_BUF);
    /* Section offsets in format order: vectors end where the record table starts. */
    uint64_t off[SIDE_N];
    uint64_t at = w->f->size;
    static const int order[] = {SIDE_RECS, SIDE_IDS, SIDE_SPARSE, SIDE_META, SIDE_MTAB};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        off[order[i]] = at;
        at += w->side[order[i]].total;
    }
    uint64_t bloom_off = at;
    off[SIDE_VSUM] = bloom_off + w->bloom_len;
    off[SIDE_ROWS] = off[SIDE_VSUM] + w->side[SIDE_VSUM].total;
    uint32_t sum[SIDE_N] = {0};
    for (size_t i = 0; rc == ST_OK && i < sizeof(order) / sizeof(order[0]); i++) {
        int k = order[i];
        rc = side_copy(w, &w->side[k], cbuf, k == SIDE_MTAB ? off[SIDE_META] : 0, &sum[k], err);
    }
    if (rc == ST_OK &&
        (rc = store_fs_write(w->f, w->bloom, w->bloom_len, "store.seg.write")) != ST_OK)
        st_err_set(err, rc, "write %s: %s", w->path, st_strerror(rc));
    if (rc == ST_OK)
        rc = side_copy(w, &w->side[SIDE_VSUM], cbuf, 0, &sum[SIDE_VSUM], err);
    if (rc == ST_OK && w->meta.rows)
        rc = side_copy(w, &w->side[SIDE_ROWS], cbuf, 0, &sum[SIDE_ROWS], err);
    if (rc != ST_OK)
        goto out;
    int64_t min_ts = w->n ? w->min_ts : 0, max_ts = w->n ? w->max_ts : 0;
    uint8_t ft[STORE_SEG_FOOTER] = {0};
    memcpy(ft, STORE_SEG_FOOTER_MAGIC, 8);
    st_put_le32(ft + 8, w->meta.rows ? STORE_SEG_VERSION_ROWS : STORE_SEG_VERSION);
    st_put_le32(ft + 12, w->dim);
    st_put_le64(ft + 16, w->n);
    st_put_le64(ft + 24, (uint64_t)w->meta.window_start);
    st_put_le64(ft + 32, (uint64_t)w->meta.window_end);
    st_put_le64(ft + 40, (uint64_t)min_ts);
    st_put_le64(ft + 48, (uint64_t)max_ts);
    st_put_le32(ft + 56, (uint32_t)w->meta.kind);
    st_put_le32(ft + 60, w->meta.version);
    st_put_le64(ft + 64, off[SIDE_RECS]);
    st_put_le64(ft + 72, off[SIDE_IDS]);
    st_put_le64(ft + 80, w->side[SIDE_IDS].total);
    st_put_le64(ft + 88, off[SIDE_SPARSE]);
    st_put_le64(ft + 96, w->side[SIDE_SPARSE].total / STORE_SEG_SPARSE_SIZE);
    st_put_le64(ft + 104, off[SIDE_META]);
    st_put_le64(ft + 112, off[SIDE_MTAB]);
    st_put_le64(ft + 120, w->side[SIDE_MTAB].total / STORE_SEG_MTAB_SIZE);
    st_put_le64(ft + 128, bloom_off);
    st_put_le64(ft + 136, w->bloom_len);
    st_put_le32(ft + 144, STORE_SEG_BLOOM_K);
    st_put_le64(ft + 152, off[SIDE_VSUM]);
    st_put_le64(ft + 160, w->side[SIDE_VSUM].total / 4);
    st_put_le32(ft + 168, sum[SIDE_RECS]);
    st_put_le32(ft + 172, sum[SIDE_IDS]);
    st_put_le32(ft + 176, sum[SIDE_SPARSE]);
    st_put_le32(ft + 180, sum[SIDE_MTAB]);
    st_put_le32(ft + 184, st_checksum32(w->bloom, w->bloom_len));
    st_put_le32(ft + 188, sum[SIDE_VSUM]);
    if (w->meta.rows) {
        st_put_le64(ft + 192, off[SIDE_ROWS]);
        st_put_le64(ft + 200, w->nrows);
        st_put_le32(ft + 208, sum[SIDE_ROWS]);
        st_put_le64(ft + 212, w->meta.vfile);
    }
    st_put_le32(ft + 248, st_checksum32(ft, 248));
    if ((rc = store_fs_write(w->f, ft, sizeof(ft), "store.seg.write")) != ST_OK ||
        (rc = store_fs_sync(w->f, "store.seg.fsync")) != ST_OK) {
        st_err_set(err, rc, "write %s: %s", w->path, st_strerror(rc));
        goto out;
    }
    *bytes = w->f->size;
    w->done = true;
out:
    free(cbuf);
    if (cbuf != NULL)
        sw_account(w, -(int64_t)SEG_COPY_BUF);
    if (rc != ST_OK)
        w->failed = rc;
    return rc;
}

uint64_t store_segment_writer_peak(const struct store_segment_writer *w)
{
    return w->peak;
}

static uint64_t grown_cap(uint64_t need)
{
    uint64_t cap = 4096; /* buf_reserve's growth: doubling from 4 KiB */
    while (cap < need)
        cap *= 2;
    return cap;
}

uint64_t store_segment_writer_memory(uint64_t expect, uint32_t meta_max)
{
    uint64_t nbits = expect * STORE_SEG_BLOOM_BITS_PER_KEY;
    uint64_t bloom = ((nbits < 64 ? 64 : nbits) + 7) / 8;
    uint64_t raw = (uint64_t)STORE_SEG_META_BLOCK * meta_max;
    return STORE_SEG_VEC_BLOCK + bloom + (uint64_t)SIDE_N * SEG_SIDE_BUF + SEG_COPY_BUF +
           grown_cap(raw) + grown_cap(ZSTD_compressBound(raw));
}

uint64_t store_segment_writer_count(const struct store_segment_writer *w)
{
    return w->n;
}

int store_segment_write(struct store_fs *fs, const char *path, uint32_t dim,
                        const struct store_seg_meta *meta, const struct store_seg_in *in, size_t n,
                        uint64_t *bytes, struct st_err *err)
{
    struct store_segment_writer *w;
    int rc = store_segment_writer_open(fs, path, dim, meta, n, &w, err);
    if (rc == ST_OK && meta->rows && meta->vfile == 0) {
        /* Rows mode: row r holds the vector of the record naming r; zeros when none does. */
        uint64_t nrows = 0;
        for (size_t i = 0; i < n; i++)
            if (in[i].row < UINT32_MAX && in[i].row + 1 > nrows)
                nrows = in[i].row + 1;
        const struct store_seg_in **of = calloc(nrows ? nrows : 1, sizeof(*of));
        if (of == NULL)
            rc = ST_ENOMEM;
        for (size_t i = 0; rc == ST_OK && i < n; i++)
            if (in[i].row < nrows)
                of[in[i].row] = &in[i];
        for (uint64_t r = 0, got; rc == ST_OK && r < nrows; r++)
            rc = store_segment_writer_put_row(
                w, of[r] != NULL && of[r]->op == STORE_OP_UPSERT ? of[r]->vec : NULL, &got, err);
        free(of);
    }
    for (size_t i = 0; rc == ST_OK && i < n; i++)
        rc = store_segment_writer_add(w, &in[i], err);
    if (rc == ST_OK)
        rc = store_segment_writer_finish(w, bytes, err);
    store_segment_writer_close(w);
    return rc;
}

/* ---- reader ------------------------------------------------------------------------------- */

static int corrupt(struct st_err *err, const char *path, uint64_t off, const char *what)
{
    return st_err_set(err, ST_ECORRUPT, "%s: %s at offset %llu", path, what,
                      (unsigned long long)off);
}

static bool in_file(size_t len, uint64_t off, uint64_t size)
{
    return off <= len && size <= len - off;
}

/* *out = a * b; false when that does not fit 64 bits (a lying footer, never a real file). */
static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* Version 2: every row the table names is below nrows, and no two records name one row (so
 * count <= nrows: the vectors a file's records reach never exceed the vector bytes it holds).
 * The bitmap is nrows / 8 bytes, and nrows * dim * 4 already lies inside the file. */
static int check_rows(struct store_segment *g, struct st_err *err)
{
    uint8_t *seen = calloc(g->nrows / 8 + 1, 1);
    if (seen == NULL)
        return ST_ENOMEM;
    int rc = ST_OK;
    for (uint64_t i = 0; rc == ST_OK && i < g->info.count; i++) {
        uint32_t r = st_get_le32(g->rows + i * 4);
        uint64_t at = (uint64_t)(g->rows - g->map) + i * 4;
        if (r >= g->nrows)
            rc = corrupt(err, g->path, at, "row table names a row beyond the vectors");
        else if (seen[r / 8] & (1u << (r % 8)))
            rc = corrupt(err, g->path, at, "row named by two records");
        else
            seen[r / 8] |= (uint8_t)(1u << (r % 8));
        if (rc == ST_OK && (uint64_t)r + 1 > g->max_row)
            g->max_row = (uint64_t)r + 1;
    }
    free(seen);
    return rc;
}

/*
 * Everything the accessors rely on, checked once at open so they stay plain loads: the file
 * is untrusted (it may come over HTTP) and its checksums only prove it was written whole, not
 * that its writer told the truth. After this, for every record i < count: its id lies in the
 * ids section (the ids are packed in record order), id_len is 1..STORE_ID_MAX, op is 0 or 1,
 * its row (version 2) is below the row count and no other record's,
 * meta_len <= STORE_META_MAX; sparse entry j names record 32*j; meta block b lies in the meta
 * section (blocks packed in order) and its raw length is the sum of its records' meta_len.
 */
static int check_tables(struct store_segment *g, uint64_t recs_off, uint64_t meta_off,
                        uint64_t mtab_off, struct st_err *err)
{
    const char *path = g->path;
    uint64_t count = g->info.count, at = 0;
    uint32_t prev_len = 0;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *r = g->recs + i * STORE_SEG_REC_SIZE;
        uint32_t l = st_get_le16(r + 32);
        if (st_get_le64(r + 24) != at || l == 0 || l > STORE_ID_MAX || l > g->ids_len - at ||
            r[34] > STORE_OP_DELETE || st_get_le32(r + 36) > STORE_META_MAX)
            return corrupt(err, path, recs_off + i * STORE_SEG_REC_SIZE, "bad record entry");
        /* Lookups search the ids and merges stream them: strictly increasing, or a get misses
         * and every merge of the window refuses the file. Time pruning trusts min/max ts. */
        if (i > 0 && store_id_cmp(g->ids + at - prev_len, prev_len, g->ids + at, l) >= 0)
            return corrupt(err, path, recs_off + i * STORE_SEG_REC_SIZE, "record ids out of order");
        int64_t ts = (int64_t)st_get_le64(r);
        if (ts < g->info.min_ts || ts > g->info.max_ts)
            return corrupt(err, path, recs_off + i * STORE_SEG_REC_SIZE,
                           "record ts outside the footer's min/max");
        prev_len = l;
        at += l;
    }
    if (g->rows != NULL) {
        int rc = check_rows(g, err);
        if (rc != ST_OK)
            return rc;
    }
    if (at != g->ids_len)
        return corrupt(err, path, (uint64_t)(g->ids - g->map), "ids section length disagrees");
    for (uint64_t j = 0; j < g->nsparse; j++)
        if (st_get_le32(g->sparse + j * STORE_SEG_SPARSE_SIZE) != j * STORE_SEG_SPARSE_EVERY)
            return corrupt(err, path, (uint64_t)(g->sparse - g->map) + j * STORE_SEG_SPARSE_SIZE,
                           "bad sparse index entry");
    at = meta_off;
    for (uint64_t b = 0; b < g->nmeta; b++) {
        const uint8_t *t = g->mtab + b * STORE_SEG_MTAB_SIZE;
        uint64_t raw = 0, last = (b + 1) * STORE_SEG_META_BLOCK;
        for (uint64_t i = b * STORE_SEG_META_BLOCK; i < last && i < count; i++)
            raw += st_get_le32(g->recs + i * STORE_SEG_REC_SIZE + 36);
        uint32_t clen = st_get_le32(t + 8);
        if (st_get_le64(t) != at || clen > mtab_off - at || st_get_le32(t + 12) != raw)
            return corrupt(err, path, mtab_off + b * STORE_SEG_MTAB_SIZE,
                           "bad meta block table entry");
        at += clen;
    }
    if (at != mtab_off)
        return corrupt(err, path, meta_off, "meta section length disagrees");
    return ST_OK;
}

/* External rows: maps the first 64 + vbytes bytes of file g->vfile of g's directory, after
 * checking that it is that long and has a version-2 header of g's dim. */
static int map_vector_file(struct store_segment *g, uint64_t vbytes, struct st_err *err)
{
    const char *slash = strrchr(g->path, '/');
    char *dir = slash != NULL ? strndup(g->path, (size_t)(slash - g->path)) : strdup(".");
    char *vp = dir != NULL ? store_file_path(dir, STORE_FILE_SEG, g->vfile) : NULL;
    free(dir);
    if (vp == NULL)
        return ST_ENOMEM;
    int rc = ST_OK;
    int fd = open(vp, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = st_err_sys(err, errno, "%s: its vector file %s", g->path, vp);
        goto out;
    }
    uint64_t end;
    if (__builtin_add_overflow(vbytes, (uint64_t)STORE_SEG_HEADER, &end) || end > SIZE_MAX) {
        rc = corrupt(err, g->path, 0, "vector file size out of range");
        goto out;
    }
    size_t want = (size_t)end;
    if ((uint64_t)st.st_size < end) {
        rc = corrupt(err, vp, (uint64_t)st.st_size, "vector file shorter than the rows named");
        goto out;
    }
    void *map = mmap(NULL, want, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        rc = st_err_sys(err, errno, "mmap %s", vp);
        goto out;
    }
    if (!store_seg_header_is_log(map, g->info.dim)) {
        munmap(map, want);
        rc = corrupt(err, vp, 0, "not a vector file of this dim");
        goto out;
    }
    g->vmap = map;
    g->vmap_len = want;
out:
    if (fd >= 0)
        close(fd);
    free(vp);
    return rc;
}

int store_segment_open_file(const char *path, struct store_segment **out, struct st_err *err)
{
    return store_segment_open(path, false, out, err);
}

int store_segment_open(const char *path, bool external_ok, struct store_segment **out,
                       struct st_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_err_sys(err, errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = st_err_sys(err, errno, "stat %s", path);
        close(fd);
        return rc;
    }
    size_t len = (size_t)st.st_size;
    if (len < STORE_SEG_HEADER + STORE_SEG_FOOTER) {
        close(fd);
        return corrupt(err, path, 0, "file too short for a segment");
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return st_err_sys(err, errno, "mmap %s", path);
    struct store_segment *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->path = strdup(path)) == NULL) {
        free(g);
        munmap(map, len);
        return ST_ENOMEM;
    }
    g->map = map;
    g->map_len = len;
    atomic_store(&g->refs, 1);
    int rc = ST_OK;
    const uint8_t *m = map;
    const uint8_t *ft = m + len - STORE_SEG_FOOTER;
    uint64_t fo = len - STORE_SEG_FOOTER;
    if (memcmp(m, STORE_SEG_MAGIC, 8) != 0) {
        rc = corrupt(err, path, 0, "bad magic");
        goto fail;
    }
    if (memcmp(ft, STORE_SEG_FOOTER_MAGIC, 8) != 0) {
        rc = corrupt(err, path, fo, "bad footer magic");
        goto fail;
    }
    if (st_get_le32(ft + 248) != st_checksum32(ft, 248)) {
        rc = corrupt(err, path, fo, "footer checksum mismatch");
        goto fail;
    }
    uint32_t fver = st_get_le32(ft + 8);
    if ((fver != STORE_SEG_VERSION && fver != STORE_SEG_VERSION_ROWS) ||
        st_get_le32(m + 8) != fver) {
        rc = st_err_set(err, ST_EUNSUPP, "%s: segment format version %u not supported", path, fver);
        goto fail;
    }
    struct store_segment_info *in = &g->info;
    uint32_t kind = st_get_le32(ft + 56);
    in->dim = st_get_le32(ft + 12);
    in->count = st_get_le64(ft + 16);
    in->window_start = (int64_t)st_get_le64(ft + 24);
    in->window_end = (int64_t)st_get_le64(ft + 32);
    in->min_ts = (int64_t)st_get_le64(ft + 40);
    in->max_ts = (int64_t)st_get_le64(ft + 48);
    in->kind = kind <= STORE_SEG_DELTA ? (enum store_seg_kind)kind : STORE_SEG_RUN;
    in->version = st_get_le32(ft + 60);
    in->bytes = len;
    in->checksum = st_get_le32(ft + 248);
    in->path = g->path;
    uint64_t recs_off = st_get_le64(ft + 64), ids_off = st_get_le64(ft + 72);
    g->ids_len = st_get_le64(ft + 80);
    uint64_t sparse_off = st_get_le64(ft + 88);
    g->nsparse = st_get_le64(ft + 96);
    uint64_t meta_off = st_get_le64(ft + 104);
    uint64_t mtab_off = st_get_le64(ft + 112);
    g->nmeta = st_get_le64(ft + 120);
    uint64_t bloom_off = st_get_le64(ft + 128);
    g->bloom_len = st_get_le64(ft + 136);
    g->bloom_k = st_get_le32(ft + 144);
    uint64_t vsum_off = st_get_le64(ft + 152);
    g->nvblocks = st_get_le64(ft + 160);
    /* Version 2: vector rows in arrival order and a row table naming each record's row. */
    bool rows = fver == STORE_SEG_VERSION_ROWS;
    uint64_t rows_off = rows ? st_get_le64(ft + 192) : 0;
    g->nrows = rows ? st_get_le64(ft + 200) : in->count;
    g->vfile = rows ? st_get_le64(ft + 212) : 0; /* external rows: no vectors section here */
    in->vector_file = g->vfile;
    if (g->vfile != 0 && !external_ok) {
        /* before anything is sized from its footer: such a file never leaves its store */
        rc = corrupt(err, path, fo + 212,
                     "names the rows of another file (a run inside a store, never shipped)");
        goto fail;
    }
    if (rows && g->nrows > UINT32_MAX) { /* rows are named by 32-bit entries */
        rc = corrupt(err, path, fo + 200, "more rows than a row table can name");
        goto fail;
    }
    in->rows = g->nrows;
    /* Section sizes: a product that overflows would wrap to a size that fits the file. */
    uint64_t vbytes = 0, recs_len = 0, sparse_len = 0, mtab_len = 0, vsum_len = 0, rows_len = 0;
    if (kind > STORE_SEG_DELTA || in->dim == 0 || !mul_ok(g->nrows, in->dim, &vbytes) ||
        !mul_ok(rows ? in->count : 0, 4, &rows_len) || !mul_ok(vbytes, 4, &vbytes) ||
        !mul_ok(in->count, STORE_SEG_REC_SIZE, &recs_len) ||
        !mul_ok(g->nsparse, STORE_SEG_SPARSE_SIZE, &sparse_len) ||
        !mul_ok(g->nmeta, STORE_SEG_MTAB_SIZE, &mtab_len) || !mul_ok(g->nvblocks, 4, &vsum_len)) {
        rc = corrupt(err, path, fo, "footer values out of range");
        goto fail;
    }
    uint64_t ext_vbytes = 0;
    if (g->vfile != 0) {
        ext_vbytes = vbytes;
        vbytes = 0;
    }
    if (!in_file(fo, STORE_SEG_HEADER, vbytes) || STORE_SEG_HEADER + vbytes != recs_off ||
        !in_file(fo, recs_off, recs_len) || !in_file(fo, ids_off, g->ids_len) ||
        !in_file(fo, sparse_off, sparse_len) || !in_file(fo, mtab_off, mtab_len) ||
        meta_off > mtab_off || !in_file(fo, meta_off, mtab_off - meta_off) ||
        !in_file(fo, bloom_off, g->bloom_len) || !in_file(fo, vsum_off, vsum_len) ||
        !in_file(fo, rows_off, rows_len) ||
        g->nvblocks != (vbytes + STORE_SEG_VEC_BLOCK - 1) / STORE_SEG_VEC_BLOCK ||
        g->nsparse != (in->count + STORE_SEG_SPARSE_EVERY - 1) / STORE_SEG_SPARSE_EVERY ||
        g->nmeta != (in->count + STORE_SEG_META_BLOCK - 1) / STORE_SEG_META_BLOCK ||
        (in->count > 0 && g->bloom_len == 0) || g->bloom_k == 0 || g->bloom_k > 32) {
        rc = corrupt(err, path, fo, "footer describes sections outside the file");
        goto fail;
    }
    g->recs = m + recs_off;
    g->ids = m + ids_off;
    g->sparse = m + sparse_off;
    g->mtab = m + mtab_off;
    g->bloom = m + bloom_off;
    g->vsum = m + vsum_off;
    g->rows = rows ? m + rows_off : NULL;
    static const struct {
        const char *name;
        unsigned foot;
    } secs[] = {{"record table", 168}, {"ids", 172},   {"sparse index", 176},
                {"meta table", 180},   {"bloom", 184}, {"vector checksums", 188},
                {"row table", 208}};
    const uint8_t *sp[] = {g->recs, g->ids, g->sparse, g->mtab, g->bloom, g->vsum, m + rows_off};
    uint64_t sl[] = {recs_len, g->ids_len, sparse_len, mtab_len, g->bloom_len, vsum_len, rows_len};
    for (size_t i = 0; i < (rows ? 7u : 6u); i++) {
        if (st_checksum32(sp[i], sl[i]) != st_get_le32(ft + secs[i].foot)) {
            char what[64];
            snprintf(what, sizeof(what), "%s checksum mismatch", secs[i].name);
            rc = corrupt(err, path, (uint64_t)(sp[i] - m), what);
            goto fail;
        }
    }
    if ((rc = check_tables(g, recs_off, meta_off, mtab_off, err)) != ST_OK)
        goto fail;
    if (g->vfile != 0 && (rc = map_vector_file(g, ext_vbytes, err)) != ST_OK)
        goto fail;
    *out = g;
    return ST_OK;
fail:
    munmap(g->map, g->map_len);
    free(g->path);
    free(g);
    return rc;
}

void store_segment_ref(struct store_segment *g)
{
    atomic_fetch_add(&g->refs, 1);
}

void store_segment_unref(struct store_segment *g)
{
    if (g == NULL || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    if (g->doomed && store_reclaim_segment(g->rq, g))
        return;
    store_segment_release(g);
}

void store_segment_release(struct store_segment *g)
{
    munmap(g->map, g->map_len);
    if (g->vmap != NULL)
        munmap(g->vmap, g->vmap_len);
    if (g->doomed) {
        /* Removed from the manifest and no reader left: rename aside, then unlink. A crash in
         * between leaves a *.deleting file that the next open removes. */
        char *del = NULL;
        if (asprintf(&del, "%s.deleting", g->path) >= 0) {
            if (store_fs_rename(g->fs, g->path, del, "store.seg.delete_rename") == ST_OK)
                store_best_effort(store_fs_unlink(g->fs, del, "store.seg.unlink"));
            free(del);
        }
    }
    struct store_reclaim *rq = g->rq;
    if (g->doomed && rq != NULL)
        store_reclaim_doomed(rq, -1, g->info.bytes); /* (its own file: runs map a log's rows) */
    free(g->path);
    free(g);
    store_reclaim_unref(rq); /* a doomed segment's hold on the reclaimer */
}

void store_segment_info(const struct store_segment *g, struct store_segment_info *out)
{
    *out = g->info;
}

const float *store_segment_vector(const struct store_segment *g, uint64_t i)
{
    uint64_t row = g->rows != NULL ? st_get_le32(g->rows + i * 4) : i;
    return store_segment_rows_base(g) + row * g->info.dim;
}

uint64_t store_segment_row(const struct store_segment *g, uint64_t i)
{
    return g->rows != NULL ? st_get_le32(g->rows + i * 4) : i;
}

const float *store_segment_contiguous(const struct store_segment *g)
{
    return g->rows != NULL ? NULL : (const float *)(const void *)(g->map + STORE_SEG_HEADER);
}

const float *store_segment_rows_base(const struct store_segment *g)
{
    const uint8_t *base = g->vmap != NULL ? g->vmap : g->map;
    return (const float *)(const void *)(base + STORE_SEG_HEADER);
}

void store_segment_record(const struct store_segment *g, uint64_t i, struct store_seg_record *o)
{
    const uint8_t *r = g->recs + i * STORE_SEG_REC_SIZE;
    o->ts = (int64_t)st_get_le64(r);
    o->offset = (int64_t)st_get_le64(r + 8);
    o->partition = (int32_t)st_get_le32(r + 16);
    o->idx = st_get_le32(r + 20);
    o->id = g->ids + st_get_le64(r + 24);
    o->id_len = st_get_le16(r + 32);
    o->op = r[34];
    o->meta_len = st_get_le32(r + 36);
}

static bool bloom_may_contain(const struct store_segment *g, const uint8_t *id, uint32_t len)
{
    uint64_t nbits = g->bloom_len * 8;
    if (nbits == 0)
        return false;
    uint32_t h1, h2;
    bloom_hashes(id, len, &h1, &h2);
    for (uint32_t k = 0; k < g->bloom_k; k++) {
        uint64_t bit = (h1 + (uint64_t)k * h2) % nbits;
        if (!(g->bloom[bit / 8] & (1u << (bit % 8))))
            return false;
    }
    return true;
}

static int rec_cmp(const struct store_segment *g, uint64_t i, const uint8_t *id, uint32_t len)
{
    const uint8_t *r = g->recs + i * STORE_SEG_REC_SIZE;
    return store_id_cmp(g->ids + st_get_le64(r + 24), st_get_le16(r + 32), id, len);
}

int store_segment_find(const struct store_segment *g, const uint8_t *id, uint32_t id_len,
                       uint64_t *index)
{
    if (g->info.count == 0 || !bloom_may_contain(g, id, id_len))
        return ST_ENOTFOUND;
    /* Sparse index: the last sampled record whose id is <= id bounds the search. */
    uint64_t lo = 0, hi = g->nsparse;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        uint64_t ri = st_get_le32(g->sparse + mid * STORE_SEG_SPARSE_SIZE);
        if (rec_cmp(g, ri, id, id_len) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return ST_ENOTFOUND;
    uint64_t first = st_get_le32(g->sparse + (lo - 1) * STORE_SEG_SPARSE_SIZE);
    uint64_t last = first + STORE_SEG_SPARSE_EVERY;
    if (last > g->info.count)
        last = g->info.count;
    for (uint64_t i = first; i < last; i++) {
        int c = rec_cmp(g, i, id, id_len);
        if (c == 0) {
            *index = i;
            return ST_OK;
        }
        if (c > 0)
            break;
    }
    return ST_ENOTFOUND;
}

static int meta_block(const struct store_segment *g, uint64_t b, uint8_t **raw, size_t *rawlen,
                      struct st_err *err)
{
    const uint8_t *t = g->mtab + b * STORE_SEG_MTAB_SIZE;
    uint64_t off = st_get_le64(t);
    uint32_t clen = st_get_le32(t + 8), rlen = st_get_le32(t + 12);
    if (!in_file(g->map_len, off, clen))
        return corrupt(err, g->path, off, "meta block outside the file");
    if (st_checksum32(g->map + off, clen) != st_get_le32(t + 16))
        return corrupt(err, g->path, off, "meta block checksum mismatch");
    uint8_t *out = malloc(rlen ? rlen : 1);
    if (out == NULL)
        return ST_ENOMEM;
    size_t got = ZSTD_decompress(out, rlen, g->map + off, clen);
    if (ZSTD_isError(got) || got != rlen) {
        free(out);
        return corrupt(err, g->path, off, "meta block does not decompress");
    }
    *raw = out;
    *rawlen = rlen;
    return ST_OK;
}

int store_segment_meta(const struct store_segment *g, uint64_t i, uint8_t **meta, uint32_t *len)
{
    *meta = NULL;
    *len = 0;
    struct store_seg_record r;
    store_segment_record(g, i, &r);
    if (r.meta_len == 0)
        return ST_OK;
    uint64_t b = i / STORE_SEG_META_BLOCK;
    if (b >= g->nmeta)
        return ST_ECORRUPT;
    uint8_t *raw;
    size_t rawlen;
    int rc = meta_block(g, b, &raw, &rawlen, NULL);
    if (rc != ST_OK)
        return rc;
    size_t off = 0;
    for (uint64_t j = b * STORE_SEG_META_BLOCK; j < i; j++) {
        struct store_seg_record rj;
        store_segment_record(g, j, &rj);
        off += rj.meta_len;
    }
    if (off > rawlen || r.meta_len > rawlen - off) {
        free(raw);
        return ST_ECORRUPT;
    }
    *meta = malloc(r.meta_len);
    if (*meta == NULL) {
        free(raw);
        return ST_ENOMEM;
    }
    memcpy(*meta, raw + off, r.meta_len);
    *len = r.meta_len;
    free(raw);
    return ST_OK;
}

int store_segment_meta_all(const struct store_segment *g, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    size_t total = 0, off = 0;
    for (uint64_t b = 0; b < g->nmeta; b++)
        total += st_get_le32(g->mtab + b * STORE_SEG_MTAB_SIZE + 12);
    if (total == 0)
        return ST_OK;
    uint8_t *out = malloc(total);
    if (out == NULL)
        return ST_ENOMEM;
    for (uint64_t b = 0; b < g->nmeta; b++) {
        uint8_t *raw;
        size_t rawlen;
        int rc = meta_block(g, b, &raw, &rawlen, NULL);
        if (rc == ST_OK && rawlen > total - off) {
            free(raw);
            rc = ST_ECORRUPT;
        }
        if (rc != ST_OK) {
            free(out);
            return rc;
        }
        memcpy(out + off, raw, rawlen);
        off += rawlen;
        free(raw);
    }
    *buf = out;
    *len = total;
    return ST_OK;
}

int store_segment_verify(const struct store_segment *g, struct st_err *err)
{
    /* What no checksum covers: the header after its magic and version, the footer's last
     * bytes. Readers never use them, but a flip there is damage all the same. */
    if (st_get_le32(g->map + 12) != g->info.dim)
        return corrupt(err, g->path, 12, "header dim disagrees with the footer");
    for (size_t i = 16; i < STORE_SEG_HEADER; i++)
        if (g->map[i] != 0)
            return corrupt(err, g->path, i, "non-zero byte in the header's reserved space");
    for (size_t i = g->map_len - 4; i < g->map_len; i++)
        if (g->map[i] != 0)
            return corrupt(err, g->path, i, "non-zero byte after the footer checksum");
    uint64_t vbytes = g->nrows * g->info.dim * 4;
    const uint8_t *v = g->map + STORE_SEG_HEADER;
    for (uint64_t b = 0; b < g->nvblocks; b++) {
        uint64_t off = b * STORE_SEG_VEC_BLOCK;
        uint64_t n = vbytes - off < STORE_SEG_VEC_BLOCK ? vbytes - off : STORE_SEG_VEC_BLOCK;
        if (st_checksum32(v + off, n) != st_get_le32(g->vsum + b * 4))
            return corrupt(err, g->path, STORE_SEG_HEADER + off, "vector block checksum mismatch");
    }
    uint64_t metas = 0;
    for (uint64_t b = 0; b < g->nmeta; b++) {
        uint8_t *raw;
        size_t rawlen;
        int rc = meta_block(g, b, &raw, &rawlen, err);
        if (rc != ST_OK)
            return rc;
        free(raw);
        metas += rawlen;
    }
    uint64_t want = 0;
    for (uint64_t i = 0; i < g->info.count; i++) {
        struct store_seg_record r;
        store_segment_record(g, i, &r);
        want += r.meta_len;
        if (i > 0) {
            struct store_seg_record p;
            store_segment_record(g, i - 1, &p);
            if (store_id_cmp(p.id, p.id_len, r.id, r.id_len) >= 0)
                return corrupt(err, g->path, (uint64_t)(g->recs - g->map) + i * STORE_SEG_REC_SIZE,
                               "records not sorted by id");
        }
    }
    if (want != metas)
        return corrupt(err, g->path, (uint64_t)(g->mtab - g->map), "meta sizes disagree");
    /* Version 2's row table (in range, no row named twice) was checked by open. */
    return ST_OK;
}

/* ---- streaming reads for merges ----------------------------------------------------------- */

int store_segment_meta_block(const struct store_segment *g, uint64_t b, uint8_t **raw, size_t *len,
                             struct st_err *err)
{
    *raw = NULL;
    *len = 0;
    if (b >= g->nmeta)
        return corrupt(err, g->path, (uint64_t)(g->mtab - g->map), "meta block missing");
    return meta_block(g, b, raw, len, err);
}

uint64_t store_segment_meta_block_max(const struct store_segment *g)
{
    uint64_t max = 0;
    for (uint64_t b = 0; b < g->nmeta; b++) {
        uint64_t l = st_get_le32(g->mtab + b * STORE_SEG_MTAB_SIZE + 12);
        if (l > max)
            max = l;
    }
    return max;
}
