#include "store_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
}

int store_log_append(struct store_log_writer *w, const void *payload, size_t len)
{
    /* Worst case: every fragment adds a header and may follow a block trailer's padding. */
    size_t nfrag = len / (STORE_LOG_BLOCK - STORE_LOG_HEADER) + 2;
    size_t need = len + nfrag * (2 * STORE_LOG_HEADER);
    if (need > w->cap) {
        uint8_t *b = realloc(w->buf, need);
        if (b == NULL)
            return ST_ENOMEM;
        w->buf = b;
        w->cap = need;
    }
    const uint8_t *p = payload;
    size_t left = len, out = 0;
    uint32_t boff = w->block_off;
    bool first = true;
    do {
        uint32_t room = STORE_LOG_BLOCK - boff;
        if (room < STORE_LOG_HEADER) {
            memset(w->buf + out, 0, room);
            out += room;
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
        st_put_le32(w->buf + out, frag_checksum(type, p, n));
        st_put_le16(w->buf + out + 4, (uint16_t)n);
        w->buf[out + 6] = type;
        if (n > 0)
            memcpy(w->buf + out + STORE_LOG_HEADER, p, n);
        out += STORE_LOG_HEADER + n;
        boff += (uint32_t)(STORE_LOG_HEADER + n);
        p += n;
        left -= n;
        first = false;
    } while (left > 0);
    int rc = store_fs_write(w->file, w->buf, out, w->site_write);
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
