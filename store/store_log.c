#include "store_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "log_format.h"
#include "st_checksum.h"
#include "st_coding.h"

static uint32_t frag_checksum(uint8_t type, const uint8_t *p, size_t n)
{
    return (uint32_t)st_hash64_seed(p, n, type);
}

int store_log_writer_init(struct store_log_writer *w, struct store_file *file,
                          const char *site_write)
{
    memset(w, 0, sizeof(*w));
    w->file = file;
    w->block_off = (uint32_t)(file->size % STORE_LOG_BLOCK);
    w->site_write = site_write;
    return ST_OK;
}

void store_log_writer_destroy(struct store_log_writer *w)
{
    free(w->buf);
    w->buf = NULL;
    free(w->iov);
    w->iov = NULL;
    XXH3_freeState(w->hash);
    w->hash = NULL;
}

int store_log_append(struct store_log_writer *w, const void *payload, size_t len)
{
    struct iovec v = {(void *)(uintptr_t)payload, len};
    return store_log_appendv(w, &v, 1);
}

/* Adds a piece to w->iov (room was reserved), merging it with the previous one when they are
 * adjacent in memory. */
static void iov_push(struct store_log_writer *w, size_t *n, const void *p, size_t len)
{
    if (len == 0)
        return;
    if (*n > 0 && (const uint8_t *)w->iov[*n - 1].iov_base + w->iov[*n - 1].iov_len == p) {
        w->iov[*n - 1].iov_len += len;
        return;
    }
    w->iov[(*n)++] = (struct iovec){(void *)(uintptr_t)p, len};
}

int store_log_appendv(struct store_log_writer *w, const struct iovec *iov, int iovcnt)
{
    static const uint8_t zeros[STORE_LOG_HEADER];
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    /* Worst case: every fragment has a header and may follow a block trailer's padding, and
     * cuts one payload piece in two. */
    size_t nfrag = len / (STORE_LOG_BLOCK - STORE_LOG_HEADER) + 2;
    if (nfrag * STORE_LOG_HEADER > w->cap) {
        uint8_t *b = realloc(w->buf, nfrag * STORE_LOG_HEADER);
        if (b == NULL)
            return ST_ENOMEM;
        w->buf = b;
        w->cap = nfrag * STORE_LOG_HEADER;
    }
    size_t need = (size_t)iovcnt + 3 * nfrag;
    if (need > w->iov_cap) {
        struct iovec *v = realloc(w->iov, need * sizeof(*v));
        if (v == NULL)
            return ST_ENOMEM;
        w->iov = v;
        w->iov_cap = need;
    }
    if (w->hash == NULL && (w->hash = XXH3_createState()) == NULL)
        return ST_ENOMEM;
    size_t left = len, nv = 0, frag = 0, skip = 0; /* skip: bytes of iov[pi] already framed */
    int pi = 0;
    uint32_t boff = w->block_off;
    bool first = true;
    do {
        uint32_t room = STORE_LOG_BLOCK - boff;
        if (room < STORE_LOG_HEADER) {
            iov_push(w, &nv, zeros, room);
            boff = 0;
            room = STORE_LOG_BLOCK;
        }
        size_t avail = room - STORE_LOG_HEADER;
        size_t n = left < avail ? left : avail;
        bool last = n == left;
        uint8_t type = first && last ? STORE_LOG_FULL
                       : first       ? STORE_LOG_FIRST
                       : last        ? STORE_LOG_LAST
                                     : STORE_LOG_MIDDLE;
        uint8_t *h = w->buf + frag++ * STORE_LOG_HEADER;
        iov_push(w, &nv, h, STORE_LOG_HEADER);
        /* The fragment's payload: the next n bytes of the pieces, hashed as they are listed
         * (XXH3 streamed with the type as seed equals the one-shot hash of frag_checksum). */
        XXH3_64bits_reset_withSeed(w->hash, type);
        for (size_t take = n; take > 0;) {
            size_t l = iov[pi].iov_len - skip;
            if (l > take)
                l = take;
            const uint8_t *p = (const uint8_t *)iov[pi].iov_base + skip;
            if (l > 0) {
                XXH3_64bits_update(w->hash, p, l);
                iov_push(w, &nv, p, l);
            }
            take -= l;
            skip += l;
            if (skip == iov[pi].iov_len) {
                pi++;
                skip = 0;
            }
        }
        st_put_le32(h, (uint32_t)XXH3_64bits_digest(w->hash));
        st_put_le16(h + 4, (uint16_t)n);
        h[6] = type;
        boff += (uint32_t)(STORE_LOG_HEADER + n);
        left -= n;
        first = false;
    } while (left > 0);
    int rc = store_fs_writev(w->file, w->iov, (int)nv, w->site_write);
    if (rc == ST_OK)
        w->block_off = boff % STORE_LOG_BLOCK;
    return rc;
}

void store_log_reader_init(struct store_log_reader *r, const uint8_t *data, size_t len)
{
    memset(r, 0, sizeof(*r));
    r->data = data;
    r->len = len;
}

void store_log_reader_destroy(struct store_log_reader *r)
{
    free(r->rec);
    r->rec = NULL;
}

/* Result of decoding one fragment header at pos. */
enum frag_res { FRAG_OK, FRAG_PAD, FRAG_BAD, FRAG_EOF };

static enum frag_res frag_at(const struct store_log_reader *r, size_t pos, uint8_t *type,
                             const uint8_t **payload, size_t *n, size_t *next, const char **why,
                             bool *truncated)
{
    *truncated = false;
    size_t boff = pos % STORE_LOG_BLOCK;
    size_t room = STORE_LOG_BLOCK - boff;
    if (pos >= r->len)
        return FRAG_EOF;
    if (room < STORE_LOG_HEADER) {
        /* Block trailer: must be zero padding. */
        for (size_t i = pos; i < pos + room && i < r->len; i++)
            if (r->data[i] != 0) {
                *why = "non-zero block trailer";
                return FRAG_BAD;
            }
        *next = pos + room;
        return FRAG_PAD;
    }
    if (r->len - pos < STORE_LOG_HEADER) {
        *why = "truncated fragment header";
        *truncated = true;
        return FRAG_BAD;
    }
    const uint8_t *h = r->data + pos;
    uint32_t crc = st_get_le32(h);
    size_t len = st_get_le16(h + 4);
    *type = h[6];
    if (*type == STORE_LOG_ZERO && len == 0 && crc == 0) {
        *why = "zeroed space";
        return FRAG_BAD;
    }
    if (*type < STORE_LOG_FULL || *type > STORE_LOG_LAST) {
        *why = "unknown fragment type";
        return FRAG_BAD;
    }
    if (STORE_LOG_HEADER + len > room) {
        *why = "fragment length past the block end";
        return FRAG_BAD;
    }
    if (pos + STORE_LOG_HEADER + len > r->len) {
        *why = "truncated fragment payload";
        *truncated = true;
        return FRAG_BAD;
    }
    if (frag_checksum(*type, h + STORE_LOG_HEADER, len) != crc) {
        *why = "fragment checksum mismatch";
        return FRAG_BAD;
    }
    *payload = h + STORE_LOG_HEADER;
    *n = len;
    *next = pos + STORE_LOG_HEADER + len;
    return FRAG_OK;
}

/* Is there any valid fragment that starts a record (FULL or FIRST) at or after pos? */
static bool valid_record_after(const struct store_log_reader *r, size_t pos)
{
    /* Fragments start at block starts or right after other fragments; scanning every byte
     * offset is exhaustive and cheap relative to recovery. */
    for (size_t p = pos; p + STORE_LOG_HEADER <= r->len; p++) {
        uint8_t type;
        const uint8_t *pl;
        size_t n, next;
        const char *why;
        if (STORE_LOG_BLOCK - p % STORE_LOG_BLOCK < STORE_LOG_HEADER)
            continue;
        bool tr;
        if (frag_at(r, p, &type, &pl, &n, &next, &why, &tr) == FRAG_OK &&
            (type == STORE_LOG_FULL || type == STORE_LOG_FIRST) && n > 0)
            return true;
    }
    return false;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static int reader_fail(struct store_log_reader *r, size_t rec_start, size_t bad_pos,
                       const char *why)
{
    if (all_zero(r->data + rec_start, r->len - rec_start) && rec_start == bad_pos) {
        r->end = STORE_LOG_END_CLEAN; /* preallocated or zero-filled tail */
    } else {
        /* Even damage that seems to run into EOF (a fragment length past it) is corruption
         * when valid records follow: a crash mid-append leaves nothing valid behind the torn
         * record, but a flipped length byte mid-file does, and truncating there would drop
         * acknowledged records. */
        r->end = valid_record_after(r, bad_pos + 1) ? STORE_LOG_END_CORRUPT : STORE_LOG_END_TORN;
    }
    r->end_offset = rec_start;
    snprintf(r->why, sizeof(r->why), "%s at offset %zu", why, bad_pos);
    r->pos = r->len;
    return 0;
}

int store_log_next(struct store_log_reader *r, const uint8_t **payload, size_t *len, size_t *offset)
{
    if (r->pos >= r->len && r->end != STORE_LOG_END_CLEAN)
        return 0;
    r->rec_len = 0;
    size_t rec_start = r->pos;
    bool in_record = false;
    for (;;) {
        uint8_t type = 0;
        const uint8_t *pl = NULL;
        size_t n = 0, next = 0;
        const char *why = "";
        bool truncated = false;
        enum frag_res fr = frag_at(r, r->pos, &type, &pl, &n, &next, &why, &truncated);
        if (fr == FRAG_EOF) {
            if (in_record)
                return reader_fail(r, rec_start, r->pos, "record without its LAST fragment");
            r->end = STORE_LOG_END_CLEAN;
            r->end_offset = r->len;
            return 0;
        }
        if (fr == FRAG_PAD) {
            r->pos = next;
            if (!in_record)
                rec_start = r->pos;
            continue;
        }
        if (fr == FRAG_BAD)
            return reader_fail(r, rec_start, r->pos, why);
        bool starts = type == STORE_LOG_FULL || type == STORE_LOG_FIRST;
        if (in_record == starts)
            return reader_fail(r, rec_start, r->pos,
                               in_record ? "new record before LAST fragment"
                                         : "MIDDLE/LAST fragment without FIRST");
        if (!in_record)
            rec_start = r->pos;
        if (r->rec_len + n > r->rec_cap) {
            size_t cap = (r->rec_len + n) * 2 + 64;
            uint8_t *b = realloc(r->rec, cap);
            if (b == NULL)
                return reader_fail(r, rec_start, r->pos, "out of memory");
            r->rec = b;
            r->rec_cap = cap;
        }
        if (n > 0)
            memcpy(r->rec + r->rec_len, pl, n);
        r->rec_len += n;
        r->pos = next;
        if (type == STORE_LOG_FULL || type == STORE_LOG_LAST) {
            *payload = r->rec;
            *len = r->rec_len;
            *offset = rec_start;
            return 1;
        }
        in_record = true;
    }
}
