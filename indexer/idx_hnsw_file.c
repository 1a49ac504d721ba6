/* HNSW index files: save (tmp, fsync, rename, fsync dir) and mmap load with full checks. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hnsw_format.h"
#include "idx_file_int.h"
#include "idx_hnsw_int.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "store_fs.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "index files are used in place by mmap: little-endian hosts only"
#endif

static int put(struct store_file *f, const void *p, size_t n, struct st_hash_stream *hs)
{
    if (hs != NULL)
        st_hash_stream_update(hs, p, n);
    return store_fs_write(f, p, n, "idx.hnsw.write");
}

int idx_hnsw_save(const struct idx_hnsw *h, const char *path, struct st_err *err)
{
    struct idx_file_out o;
    struct st_hash_stream *hs = NULL;
    int rc = idx_file_begin(&o, path, err);
    if (rc != ST_OK)
        goto out;
    struct store_file *f = o.f;
    uint8_t hd[IDX_HNSW_HEADER] = {0};
    memcpy(hd, IDX_HNSW_MAGIC, 8);
    /* Version 1 unless the nodes were renumbered: then the labels follow the blocks. */
    bool labeled = h->labels != NULL;
    st_put_le32(hd + 8, labeled ? IDX_HNSW_VERSION_LABELS : IDX_HNSW_VERSION);
    st_put_le32(hd + 12, h->dim);
    st_put_le32(hd + 16, h->m);
    st_put_le32(hd + 20, h->ef_construction);
    st_put_le32(hd + 24, (uint32_t)h->metric);
    st_put_le32(hd + 28, h->n);
    st_put_le32(hd + 32, h->entry);
    st_put_le32(hd + 36, (uint32_t)h->max_level);
    st_put_le64(hd + 40, h->stride);
    st_put_le64(hd + 48, h->vec_bytes);
    if (labeled)
        st_put_le32(hd + 56, st_checksum32(h->labels, (size_t)h->n * sizeof(uint32_t)));
    st_put_le32(hd + 60, st_checksum32(hd, 60));
    uint32_t c0, c1;
    if ((rc = put(f, hd, sizeof(hd), NULL)) != ST_OK)
        goto out;
    c0 = st_checksum32(h->level0, h->stride * h->n);
    if ((rc = put(f, h->level0, h->stride * h->n, NULL)) != ST_OK)
        goto out;
    if (labeled && (rc = put(f, h->labels, (size_t)h->n * sizeof(uint32_t), NULL)) != ST_OK)
        goto out;
    c1 = st_checksum32(h->levels, h->n);
    if ((rc = put(f, h->levels, h->n, NULL)) != ST_OK)
        goto out;
    hs = st_hash_stream_new();
    if (hs == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < h->n; i++)
        if (h->levels[i] > 0 &&
            (rc = put(f, h->upper[i], (size_t)h->levels[i] * (1 + h->m) * 4, hs)) != ST_OK)
            goto out;
    uint8_t ft[IDX_HNSW_FOOTER] = {0};
    memcpy(ft, IDX_HNSW_FOOTER_MAGIC, 8);
    st_put_le32(ft + 8, c0);
    st_put_le32(ft + 12, c1);
    st_put_le32(ft + 16, (uint32_t)st_hash_stream_digest(hs));
    st_put_le64(ft + 20, f->size + IDX_HNSW_FOOTER);
    st_put_le32(ft + 28, st_checksum32(ft, 28));
    rc = put(f, ft, sizeof(ft), NULL);
out:
    rc = idx_file_finish(&o, rc, err);
    st_hash_stream_free(hs);
    return rc;
}

int idx_hnsw_load(const char *path, struct idx_hnsw **out, struct st_err *err)
{
    *out = NULL;
    void *map;
    size_t len;
    static const struct idx_file_kind kind = {IDX_HNSW_MAGIC, IDX_HNSW_FOOTER_MAGIC,
                                              IDX_HNSW_VERSION_LABELS, 20, IDX_HNSW_VERSION};
    int mrc = idx_file_open(path, &kind, &map, &len, err);
    if (mrc != ST_OK)
        return mrc;
    uint8_t *m = map;
    const uint8_t *ft = m + len - IDX_HNSW_FOOTER;
    struct idx_hnsw *h = calloc(1, sizeof(*h));
    int rc = ST_OK;
    if (h == NULL) {
        munmap(map, len);
        return ST_ENOMEM;
    }
    h->map = map;
    h->map_len = len;
    h->dim = st_get_le32(m + 12);
    h->m = st_get_le32(m + 16);
    h->m0 = 2 * h->m;
    h->ef_construction = st_get_le32(m + 20);
    h->metric = (enum st_metric)st_get_le32(m + 24);
    h->n = st_get_le32(m + 28);
    h->entry = st_get_le32(m + 32);
    h->max_level = (int32_t)st_get_le32(m + 36);
    h->stride = st_get_le64(m + 40);
    h->vec_bytes = st_get_le64(m + 48);
    bool labeled = st_get_le32(m + 8) == IDX_HNSW_VERSION_LABELS;
    /* The file is untrusted: every size is bounded by the body before anything adds or
     * multiplies with it (a stride near 2^64 once wrapped n * (stride + 1) to a small value),
     * and the link lists must be 4-byte aligned inside a block. */
    size_t body = len - IDX_HNSW_HEADER - IDX_HNSW_FOOTER;
    uint64_t l0 = 0;
    /* ef_construction >= m as every build makes it: growing a loaded graph (index compaction)
     * sizes its scratch by it, and 0 once let a repair write past that scratch. */
    if (h->dim == 0 || h->m < 2 || h->m > 128 || h->ef_construction < h->m ||
        h->ef_construction > (1u << 20) || h->metric > ST_METRIC_COSINE || h->stride % 64 ||
        h->stride > body || h->vec_bytes > h->stride || h->vec_bytes % 4 != 0 ||
        h->vec_bytes < (size_t)h->dim * 4 || h->stride - h->vec_bytes < (1 + h->m0) * 4 ||
        (h->n > 0 && (h->entry >= h->n || h->max_level < 0 || h->max_level > 15)) ||
        __builtin_mul_overflow((uint64_t)h->n, h->stride + 1 + (labeled ? 4 : 0), &l0) ||
        l0 > body) {
        rc = idx_file_corrupt(err, path, 12, "header values out of range");
        goto fail;
    }
    h->level0 = m + IDX_HNSW_HEADER;
    h->levels = h->level0 + h->stride * h->n;
    if (st_checksum32(h->level0, h->stride * h->n) != st_get_le32(ft + 8)) {
        rc = idx_file_corrupt(err, path, IDX_HNSW_HEADER, "level-0 checksum mismatch");
        goto fail;
    }
    if (labeled) { /* 64-byte aligned: right after the blocks */
        h->labels = (uint32_t *)(void *)h->levels;
        h->levels += (size_t)h->n * sizeof(uint32_t);
        if (st_checksum32(h->labels, (size_t)h->n * sizeof(uint32_t)) != st_get_le32(m + 56)) {
            rc = idx_file_corrupt(err, path, IDX_HNSW_HEADER + h->stride * h->n,
                                  "labels checksum mismatch");
            goto fail;
        }
        /* Ids are used to index per-record arrays (masks, record tables): each must be below
         * n and named once, whatever the checksums say. */
        uint8_t *seen = calloc((size_t)h->n / 8 + 1, 1);
        if (seen == NULL) {
            rc = ST_ENOMEM;
            goto fail;
        }
        uint32_t bad = UINT32_MAX;
        for (uint32_t i = 0; i < h->n && bad == UINT32_MAX; i++) {
            uint32_t id = h->labels[i];
            if (id >= h->n || (seen[id / 8] >> (id % 8)) & 1)
                bad = i;
            else
                seen[id / 8] |= (uint8_t)(1u << (id % 8));
        }
        free(seen);
        if (bad != UINT32_MAX) {
            rc = idx_file_corrupt(err, path, IDX_HNSW_HEADER + h->stride * h->n + (uint64_t)bad * 4,
                                  "labels are not a permutation of the node ids");
            goto fail;
        }
    }
    if (st_checksum32(h->levels, h->n) != st_get_le32(ft + 12)) {
        rc = idx_file_corrupt(err, path, (uint64_t)(h->levels - m), "levels checksum mismatch");
        goto fail;
    }
    h->upper = calloc(h->n ? h->n : 1, sizeof(*h->upper));
    if (h->upper == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    uint8_t *up = h->levels + h->n, *end = m + len - IDX_HNSW_FOOTER;
    uint8_t *up0 = up;
    /* The upper links start right after n level bytes, so they are 4-byte aligned only when
     * n is a multiple of 4 (the format is fixed). Otherwise they are shifted up to the next
     * 4-byte boundary inside the private map once their checksum is checked, over the first
     * bytes of the footer (not read again): u32 loads from them must be aligned. */
    size_t shift = (4 - (uintptr_t)up0 % 4) % 4;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->levels[i] > h->max_level) {
            rc = idx_file_corrupt(err, path, (uint64_t)(h->levels + i - m),
                                  "node level above the top");
            goto fail;
        }
        if (h->levels[i] == 0)
            continue;
        size_t bytes = (size_t)h->levels[i] * (1 + h->m) * 4;
        if ((size_t)(end - up) < bytes) {
            rc = idx_file_corrupt(err, path, (uint64_t)(up - m), "upper links past the end");
            goto fail;
        }
        h->upper[i] = (uint32_t *)(void *)(up + shift);
        up += bytes;
    }
    if (up != end || st_checksum32(up0, (size_t)(up - up0)) != st_get_le32(ft + 16)) {
        rc = idx_file_corrupt(err, path, (uint64_t)(up0 - m), "upper links checksum mismatch");
        goto fail;
    }
    if (h->n > 0 && h->levels[h->entry] != h->max_level) {
        /* Search starts at the entry's top level: a lower entry would index past its lists. */
        rc = idx_file_corrupt(err, path, 32, "entry node is not on the top level");
        goto fail;
    }
    if (shift != 0)
        memmove(up0 + shift, up0, (size_t)(up - up0));
    /* Every link must name a node: a bad id would be an out-of-bounds read in search. */
    for (uint32_t i = 0; i < h->n; i++) {
        for (int l = 0; l <= h->levels[i]; l++) {
            const uint32_t *lk = hnsw_links(h, i, l);
            uint32_t cap = l == 0 ? h->m0 : h->m;
            bool ok = lk[0] <= cap;
            for (uint32_t j = 0; ok && j < lk[0]; j++)
                ok = lk[1 + j] < h->n && h->levels[lk[1 + j]] >= l;
            if (!ok) {
                uint64_t at = (uint64_t)((const uint8_t *)lk - m) - (l > 0 ? shift : 0);
                rc = idx_file_corrupt(err, path, at, "bad link");
                goto fail;
            }
        }
    }
    h->dist = st_metric_fn(st_kernels(), h->metric);
    rc = idx_hnsw_make_codes(h);
    if (rc != ST_OK)
        goto fail;
    *out = h;
    return ST_OK;
fail:
    idx_hnsw_free(h);
    return rc;
}
