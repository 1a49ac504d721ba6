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

static int buf_put(struct buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc == ST_OK && n > 0) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
    return rc;
}

static void bloom_hashes(const uint8_t *id, uint32_t len, uint32_t *h1, uint32_t *h2)
{
    uint64_t h = st_hash64(id, len);
    *h1 = (uint32_t)h;
    *h2 = (uint32_t)(h >> 32) | 1u;
}

/* ---- writer ------------------------------------------------------------------------------- */

struct seg_writer {
    struct store_file *f;
    uint64_t off;
};

static int sw_put(struct seg_writer *w, const void *p, size_t n)
{
    int rc = store_fs_write(w->f, p, n, "store.seg.write");
    if (rc == ST_OK)
        w->off += n;
    return rc;
}

int store_segment_write(struct store_fs *fs, const char *path, uint32_t dim,
                        const struct store_seg_meta *meta, const struct store_seg_in *in, size_t n,
                        uint64_t *bytes, struct st_err *err)
{
    struct store_file *f = NULL;
    struct buf recs = {0}, ids = {0}, sparse = {0}, metab = {0}, mtab = {0}, raw = {0};
    struct buf vsum = {0}, bloom = {0};
    uint8_t *vblock = NULL;
    int rc = store_fs_create(fs, path, &f, "store.seg.create");
    if (rc != ST_OK) {
        st_err_set(err, rc, "create %s: %s", path, st_strerror(rc));
        return rc;
    }
    struct seg_writer w = {f, 0};
    int64_t min_ts = INT64_MAX, max_ts = INT64_MIN;

    uint8_t head[STORE_SEG_HEADER] = {0};
    memcpy(head, STORE_SEG_MAGIC, 8);
    st_put_le32(head + 8, STORE_SEG_VERSION);
    st_put_le32(head + 12, dim);
    if ((rc = sw_put(&w, head, sizeof(head))) != ST_OK)
        goto io;

    /* Vectors, in blocks of STORE_SEG_VEC_BLOCK bytes with a checksum each. */
    vblock = malloc(STORE_SEG_VEC_BLOCK);
    if (vblock == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    size_t vfill = 0, vecbytes = (size_t)dim * sizeof(float);
    for (size_t i = 0; i < n; i++) {
        uint8_t tmp[4];
        for (size_t done = 0; done < vecbytes;) {
            size_t take = vecbytes - done;
            if (take > STORE_SEG_VEC_BLOCK - vfill)
                take = STORE_SEG_VEC_BLOCK - vfill;
            if (in[i].op == STORE_OP_UPSERT && in[i].vec != NULL)
                memcpy(vblock + vfill, (const uint8_t *)in[i].vec + done, take);
            else
                memset(vblock + vfill, 0, take);
            vfill += take;
            done += take;
            if (vfill == STORE_SEG_VEC_BLOCK) {
                st_put_le32(tmp, st_checksum32(vblock, vfill));
                if ((rc = buf_put(&vsum, tmp, 4)) != ST_OK)
                    goto out;
                if ((rc = sw_put(&w, vblock, vfill)) != ST_OK)
                    goto io;
                vfill = 0;
            }
        }
    }
    if (vfill > 0) {
        uint8_t tmp[4];
        st_put_le32(tmp, st_checksum32(vblock, vfill));
        if ((rc = buf_put(&vsum, tmp, 4)) != ST_OK)
            goto out;
        if ((rc = sw_put(&w, vblock, vfill)) != ST_OK)
            goto io;
    }

    /* Record table, ids, sparse index, Bloom filter, meta blocks (built in memory). */
    size_t nbits = n * STORE_SEG_BLOOM_BITS_PER_KEY;
    if (nbits < 64)
        nbits = 64;
    size_t bloom_len = (nbits + 7) / 8;
    nbits = bloom_len * 8;
    if ((rc = buf_reserve(&bloom, bloom_len)) != ST_OK)
        goto out;
    memset(bloom.p, 0, bloom_len);
    bloom.len = bloom_len;
    for (size_t i = 0; i < n; i++) {
        uint8_t r[STORE_SEG_REC_SIZE] = {0};
        st_put_le64(r + 0, (uint64_t)in[i].ts);
        st_put_le64(r + 8, (uint64_t)in[i].offset);
        st_put_le32(r + 16, (uint32_t)in[i].partition);
        st_put_le32(r + 20, in[i].idx);
        st_put_le64(r + 24, ids.len);
        st_put_le16(r + 32, (uint16_t)in[i].id_len);
        r[34] = in[i].op;
        st_put_le32(r + 36, in[i].meta_len);
        if ((rc = buf_put(&recs, r, sizeof(r))) != ST_OK)
            goto out;
        if (i % STORE_SEG_SPARSE_EVERY == 0) {
            uint8_t s[STORE_SEG_SPARSE_SIZE] = {0};
            st_put_le32(s, (uint32_t)i);
            memcpy(s + 8, in[i].id, in[i].id_len < 8 ? in[i].id_len : 8);
            if ((rc = buf_put(&sparse, s, sizeof(s))) != ST_OK)
                goto out;
        }
        if ((rc = buf_put(&ids, in[i].id, in[i].id_len)) != ST_OK)
            goto out;
        uint32_t h1, h2;
        bloom_hashes(in[i].id, in[i].id_len, &h1, &h2);
        for (uint32_t k = 0; k < STORE_SEG_BLOOM_K; k++) {
            uint64_t bit = (h1 + (uint64_t)k * h2) % nbits;
            bloom.p[bit / 8] |= (uint8_t)(1u << (bit % 8));
        }
        if (in[i].ts < min_ts)
            min_ts = in[i].ts;
        if (in[i].ts > max_ts)
            max_ts = in[i].ts;
    }
    if (n == 0)
        min_ts = max_ts = 0;

    uint64_t recs_off = w.off;
    if ((rc = sw_put(&w, recs.p, recs.len)) != ST_OK)
        goto io;
    uint64_t ids_off = w.off;
    if ((rc = sw_put(&w, ids.p, ids.len)) != ST_OK)
        goto io;
    uint64_t sparse_off = w.off;
    if ((rc = sw_put(&w, sparse.p, sparse.len)) != ST_OK)
        goto io;
    uint64_t meta_off = w.off;
    size_t nmeta = 0;
    for (size_t b0 = 0; b0 < n; b0 += STORE_SEG_META_BLOCK) {
        size_t b1 = b0 + STORE_SEG_META_BLOCK < n ? b0 + STORE_SEG_META_BLOCK : n;
        raw.len = 0;
        for (size_t i = b0; i < b1; i++)
            if ((rc = buf_put(&raw, in[i].meta, in[i].meta_len)) != ST_OK)
                goto out;
        size_t bound = ZSTD_compressBound(raw.len);
        metab.len = 0;
        if ((rc = buf_reserve(&metab, bound)) != ST_OK)
            goto out;
        size_t clen = ZSTD_compress(metab.p, bound, raw.p, raw.len, 3);
        if (ZSTD_isError(clen)) {
            rc = st_err_set(err, ST_EINTERNAL, "zstd: %s", ZSTD_getErrorName(clen));
            goto out;
        }
        uint8_t t[STORE_SEG_MTAB_SIZE] = {0};
        st_put_le64(t, w.off);
        st_put_le32(t + 8, (uint32_t)clen);
        st_put_le32(t + 12, (uint32_t)raw.len);
        st_put_le32(t + 16, st_checksum32(metab.p, clen));
        if ((rc = buf_put(&mtab, t, sizeof(t))) != ST_OK)
            goto out;
        if ((rc = sw_put(&w, metab.p, clen)) != ST_OK)
            goto io;
        nmeta++;
    }
    uint64_t mtab_off = w.off;
    if ((rc = sw_put(&w, mtab.p, mtab.len)) != ST_OK)
        goto io;
    uint64_t bloom_off = w.off;
    if ((rc = sw_put(&w, bloom.p, bloom.len)) != ST_OK)
        goto io;
    uint64_t vsum_off = w.off;
    if ((rc = sw_put(&w, vsum.p, vsum.len)) != ST_OK)
        goto io;

    uint8_t ft[STORE_SEG_FOOTER] = {0};
    memcpy(ft, STORE_SEG_FOOTER_MAGIC, 8);
    st_put_le32(ft + 8, STORE_SEG_VERSION);
    st_put_le32(ft + 12, dim);
    st_put_le64(ft + 16, n);
    st_put_le64(ft + 24, (uint64_t)meta->window_start);
    st_put_le64(ft + 32, (uint64_t)meta->window_end);
    st_put_le64(ft + 40, (uint64_t)min_ts);
    st_put_le64(ft + 48, (uint64_t)max_ts);
    st_put_le32(ft + 56, (uint32_t)meta->kind);
    st_put_le32(ft + 60, meta->version);
    st_put_le64(ft + 64, recs_off);
    st_put_le64(ft + 72, ids_off);
    st_put_le64(ft + 80, ids.len);
    st_put_le64(ft + 88, sparse_off);
    st_put_le64(ft + 96, sparse.len / STORE_SEG_SPARSE_SIZE);
    st_put_le64(ft + 104, meta_off);
    st_put_le64(ft + 112, mtab_off);
    st_put_le64(ft + 120, nmeta);
    st_put_le64(ft + 128, bloom_off);
    st_put_le64(ft + 136, bloom.len);
    st_put_le32(ft + 144, STORE_SEG_BLOOM_K);
    st_put_le64(ft + 152, vsum_off);
    st_put_le64(ft + 160, vsum.len / 4);
    st_put_le32(ft + 168, st_checksum32(recs.p, recs.len));
    st_put_le32(ft + 172, st_checksum32(ids.p, ids.len));
    st_put_le32(ft + 176, st_checksum32(sparse.p, sparse.len));
    st_put_le32(ft + 180, st_checksum32(mtab.p, mtab.len));
    st_put_le32(ft + 184, st_checksum32(bloom.p, bloom.len));
    st_put_le32(ft + 188, st_checksum32(vsum.p, vsum.len));
    st_put_le32(ft + 248, st_checksum32(ft, 248));
    if ((rc = sw_put(&w, ft, sizeof(ft))) != ST_OK)
        goto io;
    if ((rc = store_fs_sync(f, "store.seg.fsync")) != ST_OK)
        goto io;
    *bytes = w.off;
    goto out;
io:
    st_err_set(err, rc, "write %s: %s", path, st_strerror(rc));
out:
    store_fs_close(f);
    free(vblock);
    free(recs.p);
    free(ids.p);
    free(sparse.p);
    free(metab.p);
    free(mtab.p);
    free(raw.p);
    free(vsum.p);
    free(bloom.p);
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

int store_segment_open_file(const char *path, struct store_segment **out, struct st_err *err)
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
    if (st_get_le32(ft + 8) != STORE_SEG_VERSION || st_get_le32(m + 8) != STORE_SEG_VERSION) {
        rc = st_err_set(err, ST_EUNSUPP, "%s: segment format version %u not supported", path,
                        st_get_le32(ft + 8));
        goto fail;
    }
    struct store_segment_info *in = &g->info;
    in->dim = st_get_le32(ft + 12);
    in->count = st_get_le64(ft + 16);
    in->window_start = (int64_t)st_get_le64(ft + 24);
    in->window_end = (int64_t)st_get_le64(ft + 32);
    in->min_ts = (int64_t)st_get_le64(ft + 40);
    in->max_ts = (int64_t)st_get_le64(ft + 48);
    in->kind = (enum store_seg_kind)st_get_le32(ft + 56);
    in->version = st_get_le32(ft + 60);
    in->bytes = len;
    in->checksum = st_get_le32(ft + 248);
    in->path = g->path;
    uint64_t recs_off = st_get_le64(ft + 64), ids_off = st_get_le64(ft + 72);
    g->ids_len = st_get_le64(ft + 80);
    uint64_t sparse_off = st_get_le64(ft + 88);
    g->nsparse = st_get_le64(ft + 96);
    uint64_t mtab_off = st_get_le64(ft + 112);
    g->nmeta = st_get_le64(ft + 120);
    uint64_t bloom_off = st_get_le64(ft + 128);
    g->bloom_len = st_get_le64(ft + 136);
    g->bloom_k = st_get_le32(ft + 144);
    uint64_t vsum_off = st_get_le64(ft + 152);
    g->nvblocks = st_get_le64(ft + 160);
    uint64_t vbytes = in->count * in->dim * 4;
    if (in->dim == 0 || in->count > len || !in_file(fo, STORE_SEG_HEADER, vbytes) ||
        STORE_SEG_HEADER + vbytes != recs_off ||
        !in_file(fo, recs_off, in->count * STORE_SEG_REC_SIZE) ||
        !in_file(fo, ids_off, g->ids_len) ||
        !in_file(fo, sparse_off, g->nsparse * STORE_SEG_SPARSE_SIZE) ||
        !in_file(fo, mtab_off, g->nmeta * STORE_SEG_MTAB_SIZE) ||
        !in_file(fo, bloom_off, g->bloom_len) || !in_file(fo, vsum_off, g->nvblocks * 4) ||
        g->nvblocks != (vbytes + STORE_SEG_VEC_BLOCK - 1) / STORE_SEG_VEC_BLOCK ||
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
    static const struct {
        const char *name;
        unsigned foot;
    } secs[] = {{"record table", 168}, {"ids", 172},   {"sparse index", 176},
                {"meta table", 180},   {"bloom", 184}, {"vector checksums", 188}};
    const uint8_t *sp[] = {g->recs, g->ids, g->sparse, g->mtab, g->bloom, g->vsum};
    uint64_t sl[] = {
        in->count * STORE_SEG_REC_SIZE, g->ids_len,   g->nsparse * STORE_SEG_SPARSE_SIZE,
        g->nmeta * STORE_SEG_MTAB_SIZE, g->bloom_len, g->nvblocks * 4};
    for (size_t i = 0; i < 6; i++) {
        if (st_checksum32(sp[i], sl[i]) != st_get_le32(ft + secs[i].foot)) {
            char what[64];
            snprintf(what, sizeof(what), "%s checksum mismatch", secs[i].name);
            rc = corrupt(err, path, (uint64_t)(sp[i] - m), what);
            goto fail;
        }
    }
    /* Record ids must lie inside the ids section. */
    for (uint64_t i = 0; i < in->count; i++) {
        const uint8_t *r = g->recs + i * STORE_SEG_REC_SIZE;
        uint64_t o = st_get_le64(r + 24);
        uint32_t l = st_get_le16(r + 32);
        if (l == 0 || l > STORE_ID_MAX || !in_file(g->ids_len, o, l) || r[34] > 1) {
            rc = corrupt(err, path, recs_off + i * STORE_SEG_REC_SIZE, "bad record entry");
            goto fail;
        }
    }
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
    munmap(g->map, g->map_len);
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
    free(g->path);
    free(g);
}

void store_segment_info(const struct store_segment *g, struct store_segment_info *out)
{
    *out = g->info;
}

const float *store_segment_vectors(const struct store_segment *g)
{
    return (const float *)(const void *)(g->map + STORE_SEG_HEADER);
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
    if (off + r.meta_len > rawlen) {
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
        if (rc == ST_OK && off + rawlen > total)
            rc = ST_ECORRUPT;
        if (rc != ST_OK) {
            if (rc == ST_OK)
                free(raw);
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
    uint64_t vbytes = g->info.count * g->info.dim * 4;
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
    return ST_OK;
}
