/* The binary batch frame (frame_format.h): encode, and decode with every bound checked. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame_format.h"
#include "rec_int.h"
#include "rec_json_fast.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "st_utf8.h"

/* Whether meta[0, len) is a JSON object: what jansson's json_loadb accepts (the reference,
 * and what the daemons later load it with), asked of simdjson first: a frame of 100 records
 * with short meta objects decodes 2.8-3.3x as fast (bench_json_decode), and simdjson answers
 * only where jansson agrees. */
static bool meta_object(struct rec_decoder *d, const uint8_t *meta, size_t len)
{
    if (!d->json_ref_only && rec_json_fast_meta(d, meta, len)) {
        d->meta_fast++;
        return true;
    }
    d->meta_fallback++;
    json_error_t je;
    json_t *m = json_loadb((const char *)meta, len, 0, &je);
    bool ok = json_is_object(m);
    json_decref(m);
    return ok;
}

static uint64_t pad8(uint64_t x)
{
    return (x + 7) & ~(uint64_t)7;
}

/* Bytes left after cursor p. Padding can move p past the end of a lying frame: then none
 * (never the wrapped-around len - p). */
static uint64_t room(uint64_t len, uint64_t p)
{
    return p > len ? 0 : len - p;
}

/* Reads n u32 end offsets at v+*p and the bytes after them; checks each length <= max (and
 * >= min). Sets *bytes to where the bytes start and advances *p past them (padded). */
static enum rec_reason ends_section(struct rec_decoder *d, const uint8_t *v, uint64_t len,
                                    uint64_t *p, uint32_t n, uint32_t min, uint32_t max,
                                    enum rec_reason bad, const char *what, const uint8_t **ends,
                                    const uint8_t **bytes)
{
    if (room(len, *p) < (uint64_t)n * 4)
        return rec_fail(d, REC_TRUNCATED, "%s offsets run past the frame", what);
    *ends = v + *p;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t e = st_get_le32(*ends + (size_t)i * 4);
        if (e < prev || e - prev < min || e - prev > max)
            return rec_fail(d, bad, "record %u: %s length %u is not in %u..%u", i, what,
                            e < prev ? 0 : e - prev, min, max);
        prev = e;
    }
    *p += (uint64_t)n * 4;
    if (room(len, *p) < prev)
        return rec_fail(d, REC_TRUNCATED, "%s bytes run past the frame", what);
    *bytes = v + *p;
    *p = pad8(*p + prev);
    return REC_OK;
}

enum rec_reason rec_decode_frame(struct rec_decoder *d, const struct rec_schema *s,
                                 const void *value, size_t len, struct rec_batch *out)
{
    const uint8_t *v = value;
    if (len < FRAME_HEADER)
        return rec_fail(d, REC_TRUNCATED, "frame of %zu bytes is shorter than its header", len);
    if (memcmp(v, FRAME_MAGIC, 4) != 0)
        return rec_fail(d, REC_GARBAGE, "no frame magic");
    if (st_get_le32(v + 28) != st_checksum32(v, 28))
        return rec_fail(d, REC_CHECKSUM, "frame header checksum mismatch");
    if (v[4] != FRAME_VERSION || (v[5] & ~FRAME_F_KNOWN) != 0 || v[6] != FRAME_ELEM_F32)
        return rec_fail(d, REC_UNSUPPORTED, "frame version %u, flags 0x%02x, element type %u", v[4],
                        v[5], v[6]);
    uint32_t name_len = v[7], dim = st_get_le32(v + 8), n = st_get_le32(v + 12);
    uint32_t flen = st_get_le32(v + 16);
    if (flen > len)
        return rec_fail(d, REC_TRUNCATED, "frame says %u bytes, the value has %zu", flen, len);
    if (flen < len)
        return rec_fail(d, REC_GARBAGE, "%zu bytes after the frame's end", len - flen);
    if (st_get_le32(v + 20) != st_checksum32(v + FRAME_HEADER, len - FRAME_HEADER))
        return rec_fail(d, REC_CHECKSUM, "frame body checksum mismatch");
    if (name_len > FRAME_NAME_MAX)
        return rec_fail(d, REC_GARBAGE, "collection name of %u bytes", name_len);
    uint64_t p = FRAME_HEADER;
    if (room(len, p) < name_len)
        return rec_fail(d, REC_TRUNCATED, "collection name runs past the frame");
    const struct rec_collection *c =
        name_len ? rec_find(s, (const char *)v + p, name_len) : s->fallback;
    if (c == NULL)
        return name_len ? rec_fail(d, REC_UNKNOWN_COLLECTION, "collection '%.*s' is not configured",
                                   (int)name_len, (const char *)v + p)
                        : rec_fail(d, REC_UNKNOWN_COLLECTION,
                                   "the frame names no collection and the topic feeds several");
    p = pad8(p + name_len);
    if (dim != c->dim)
        return rec_fail(d, REC_WRONG_DIM, "frame dim %u, collection '%s' has dim %u", dim, c->name,
                        c->dim);
    bool u64 = (v[5] & FRAME_F_U64_IDS) != 0;
    if (u64 != c->u64_ids)
        return rec_fail(d, REC_BAD_ID, "frame has %s ids, collection '%s' has %s ids",
                        u64 ? "u64" : "string", c->name, c->u64_ids ? "u64" : "string");
    if (n == 0)
        return rec_fail(d, REC_EMPTY_BATCH, "the batch has no records");
    /* Every record takes at least 9 bytes (time and op) after the name: a count the frame
     * cannot hold is refused before anything is sized by it. */
    if (room(len, p) / 9 < n)
        return rec_fail(d, REC_TRUNCATED, "%u records cannot fit in a %zu-byte frame", n, len);
    if (rec_reserve(d, n) != ST_OK)
        return rec_fail(d, REC_TOO_LARGE, "no memory for %u records", n);
    const uint8_t *id_ends = NULL, *ids;
    enum rec_reason r;
    if (u64) {
        if (room(len, p) < (uint64_t)n * 8)
            return rec_fail(d, REC_TRUNCATED, "ids run past the frame");
        ids = v + p;
        p += (uint64_t)n * 8;
    } else if ((r = ends_section(d, v, len, &p, n, 1, REC_ID_MAX, REC_BAD_ID, "id", &id_ends,
                                 &ids)) != REC_OK) {
        return r;
    }
    if (room(len, p) < (uint64_t)n * 9)
        return rec_fail(d, REC_TRUNCATED, "times or ops run past the frame");
    const uint8_t *ts = v + p, *ops = v + p + (uint64_t)n * 8;
    p = pad8(p + (uint64_t)n * 9);
    uint64_t vbytes = (uint64_t)n * dim * 4;
    if (room(len, p) < vbytes)
        return rec_fail(d, REC_TRUNCATED, "vectors run past the frame");
    const float *vecs;
    out->zero_copy = ((uintptr_t)(v + p) & 3) == 0;
    if (out->zero_copy) {
        vecs = (const float *)(const void *)(v + p);
    } else {
        float *copy = st_arena_dup(&d->arena, v + p, vbytes); /* unaligned buffer */
        if (copy == NULL)
            return rec_fail(d, REC_TOO_LARGE, "no memory for the vectors");
        vecs = copy;
    }
    p += vbytes;
    const uint8_t *meta_ends = NULL, *meta = NULL;
    if ((v[5] & FRAME_F_META) && (r = ends_section(d, v, len, &p, n, 0, REC_META_MAX, REC_BAD_META,
                                                   "meta", &meta_ends, &meta)) != REC_OK)
        return r;
    if (p != len)
        return rec_fail(d, REC_GARBAGE, "sections end at %llu, the frame at %zu",
                        (unsigned long long)p, len);
    uint8_t *be = u64 ? st_arena_alloc(&d->arena, (size_t)n * 8) : NULL;
    if (u64 && be == NULL)
        return rec_fail(d, REC_TOO_LARGE, "no memory for the ids");
    uint32_t id_prev = 0, meta_prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct rec_record *rec = &d->recs[i];
        if (u64) {
            st_put_be64(be + (size_t)i * 8, st_get_le64(ids + (size_t)i * 8));
            rec->id = be + (size_t)i * 8;
            rec->id_len = 8;
        } else {
            uint32_t e = st_get_le32(id_ends + (size_t)i * 4);
            rec->id = ids + id_prev;
            rec->id_len = e - id_prev;
            id_prev = e;
            /* SPEC §3: string ids are UTF-8 (they are JSON strings in every response). */
            if (!st_utf8_valid(rec->id, rec->id_len))
                return rec_fail(d, REC_BAD_ID, "record %u: id is not UTF-8", i);
        }
        rec->ts = (int64_t)st_get_le64(ts + (size_t)i * 8);
        if (ops[i] > REC_DELETE)
            return rec_fail(d, REC_BAD_OP, "record %u: op %u (0 upsert, 1 delete)", i, ops[i]);
        rec->op = ops[i];
        rec->vec = rec->op == REC_UPSERT ? vecs + (size_t)i * dim : NULL;
        rec->meta = NULL;
        rec->meta_len = 0;
        if (meta_ends != NULL) {
            uint32_t e = st_get_le32(meta_ends + (size_t)i * 4);
            rec->meta = meta + meta_prev;
            rec->meta_len = e - meta_prev;
            meta_prev = e;
            if (rec->meta_len > 0 && !meta_object(d, rec->meta, rec->meta_len))
                return rec_fail(d, REC_BAD_META, "record %u: meta is not a JSON object", i);
        }
    }
    out->coll = c;
    out->n = n;
    out->recs = d->recs;
    return REC_OK;
}

int rec_frame_encode(const char *coll_name, uint32_t dim, bool u64_ids,
                     const struct rec_record *recs, uint32_t n, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    size_t name_len = coll_name ? strlen(coll_name) : 0;
    if (n == 0 || name_len > FRAME_NAME_MAX)
        return ST_EINVAL;
    uint64_t id_bytes = 0, meta_bytes = 0;
    bool has_meta = false;
    for (uint32_t i = 0; i < n; i++) {
        if (u64_ids ? recs[i].id_len != 8 : recs[i].id_len < 1 || recs[i].id_len > REC_ID_MAX)
            return ST_EINVAL;
        if (recs[i].meta_len > REC_META_MAX)
            return ST_EINVAL;
        id_bytes += recs[i].id_len;
        meta_bytes += recs[i].meta_len;
        has_meta |= recs[i].meta_len > 0;
    }
    uint64_t len = pad8(FRAME_HEADER + name_len);
    len += u64_ids ? (uint64_t)n * 8 : pad8((uint64_t)n * 4 + id_bytes);
    len = pad8(len + (uint64_t)n * 9);
    len += (uint64_t)n * dim * 4;
    if (has_meta)
        len = pad8(len + (uint64_t)n * 4 + meta_bytes);
    if (len > UINT32_MAX)
        return ST_EINVAL;
    uint8_t *f = calloc(1, len);
    if (f == NULL)
        return ST_ENOMEM;
    memcpy(f, FRAME_MAGIC, 4);
    f[4] = FRAME_VERSION;
    f[5] = (uint8_t)((u64_ids ? FRAME_F_U64_IDS : 0) | (has_meta ? FRAME_F_META : 0));
    f[6] = FRAME_ELEM_F32;
    f[7] = (uint8_t)name_len;
    st_put_le32(f + 8, dim);
    st_put_le32(f + 12, n);
    st_put_le32(f + 16, (uint32_t)len);
    uint64_t p = FRAME_HEADER;
    if (name_len)
        memcpy(f + p, coll_name, name_len);
    p = pad8(p + name_len);
    if (u64_ids) {
        for (uint32_t i = 0; i < n; i++, p += 8)
            st_put_le64(f + p, st_get_be64(recs[i].id));
    } else {
        uint64_t b = p + (uint64_t)n * 4;
        uint32_t end = 0;
        for (uint32_t i = 0; i < n; i++) {
            memcpy(f + b + end, recs[i].id, recs[i].id_len);
            end += recs[i].id_len;
            st_put_le32(f + p + (uint64_t)i * 4, end);
        }
        p = pad8(b + end);
    }
    for (uint32_t i = 0; i < n; i++) {
        st_put_le64(f + p + (uint64_t)i * 8, (uint64_t)recs[i].ts);
        f[p + (uint64_t)n * 8 + i] = recs[i].op;
    }
    p = pad8(p + (uint64_t)n * 9);
    for (uint32_t i = 0; i < n; i++, p += (uint64_t)dim * 4)
        if (recs[i].op == REC_UPSERT && recs[i].vec != NULL)
            for (uint32_t j = 0; j < dim; j++)
                st_put_f32(f + p + (uint64_t)j * 4, recs[i].vec[j]);
    if (has_meta) {
        uint64_t b = p + (uint64_t)n * 4;
        uint32_t end = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (recs[i].meta_len)
                memcpy(f + b + end, recs[i].meta, recs[i].meta_len);
            end += recs[i].meta_len;
            st_put_le32(f + p + (uint64_t)i * 4, end);
        }
    }
    st_put_le32(f + 20, st_checksum32(f + FRAME_HEADER, len - FRAME_HEADER));
    st_put_le32(f + 28, st_checksum32(f, 28));
    *out = f;
    *out_len = len;
    return ST_OK;
}
