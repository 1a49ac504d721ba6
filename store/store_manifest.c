/* Manifest edit groups (manifest_format.h), the state they describe, CURRENT, file names. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest_format.h"
#include "st_coding.h"
#include "store_int.h"

/* ---- file names --------------------------------------------------------------------------- */

char *store_file_path(const char *dir, enum store_file_kind kind, uint64_t number)
{
    char *p = NULL;
    int r = -1;
    switch (kind) {
    case STORE_FILE_LOG:
        r = asprintf(&p, "%s/%06" PRIu64 ".log", dir, number);
        break;
    case STORE_FILE_SEG:
        r = asprintf(&p, "%s/%06" PRIu64 ".seg", dir, number);
        break;
    case STORE_FILE_MANIFEST:
        r = asprintf(&p, "%s/MANIFEST-%06" PRIu64, dir, number);
        break;
    default:
        break;
    }
    return r < 0 ? NULL : p;
}

/* A collection's dim as config allows it (1..65536); an INFO edit outside that is corruption. */
static bool store_mf_dim_ok(uint32_t dim)
{
    return dim >= 1 && dim <= 65536;
}

static bool parse_digits(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

enum store_file_kind store_file_parse(const char *name, uint64_t *number)
{
    size_t n = strlen(name);
    if (n > 4 && strcmp(name + n - 4, ".log") == 0 && parse_digits(name, n - 4, number))
        return STORE_FILE_LOG;
    if (n > 4 && strcmp(name + n - 4, ".seg") == 0 && parse_digits(name, n - 4, number))
        return STORE_FILE_SEG;
    if (strncmp(name, "MANIFEST-", 9) == 0 && parse_digits(name + 9, n - 9, number))
        return STORE_FILE_MANIFEST;
    return STORE_FILE_OTHER;
}

/* ---- encoding ----------------------------------------------------------------------------- */

static int ed_reserve(struct store_mf_edit *e, size_t n)
{
    if (e->len + n <= e->cap)
        return ST_OK;
    size_t cap = e->cap ? e->cap * 2 : 256;
    while (cap < e->len + n)
        cap *= 2;
    uint8_t *b = realloc(e->buf, cap);
    if (b == NULL)
        return ST_ENOMEM;
    e->buf = b;
    e->cap = cap;
    return ST_OK;
}

static void ed_u8(struct store_mf_edit *e, uint8_t v)
{
    e->buf[e->len++] = v;
}
static void ed_u32(struct store_mf_edit *e, uint32_t v)
{
    st_put_le32(e->buf + e->len, v);
    e->len += 4;
}
static void ed_u64(struct store_mf_edit *e, uint64_t v)
{
    st_put_le64(e->buf + e->len, v);
    e->len += 8;
}

void store_mf_edit_free(struct store_mf_edit *e)
{
    free(e->buf);
    memset(e, 0, sizeof(*e));
}

int store_mf_edit_info(struct store_mf_edit *e, uint32_t dim)
{
    if (ed_reserve(e, 9) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, STORE_MF_INFO);
    ed_u32(e, dim);
    ed_u32(e, STORE_MANIFEST_VERSION);
    return ST_OK;
}

int store_mf_edit_add_segment(struct store_mf_edit *e, const struct store_mf_seg *g)
{
    if (ed_reserve(e, 1 + 8 * 3 + 4 * 2 + 8 * 4) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, STORE_MF_ADD_SEGMENT);
    ed_u64(e, g->file_number);
    ed_u64(e, (uint64_t)g->meta.window_start);
    ed_u64(e, (uint64_t)g->meta.window_end);
    ed_u32(e, (uint32_t)g->meta.kind);
    ed_u32(e, g->meta.version);
    ed_u64(e, g->count);
    ed_u64(e, g->bytes);
    ed_u64(e, (uint64_t)g->min_ts);
    ed_u64(e, (uint64_t)g->max_ts);
    return ST_OK;
}

static int ed_tag_u64(struct store_mf_edit *e, uint8_t tag, uint64_t v)
{
    if (ed_reserve(e, 9) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, tag);
    ed_u64(e, v);
    return ST_OK;
}

int store_mf_edit_add_vlog(struct store_mf_edit *e, const struct store_mf_vlog *v)
{
    if (ed_reserve(e, 25) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, STORE_MF_ADD_VLOG);
    ed_u64(e, v->file_number);
    ed_u64(e, (uint64_t)v->window_start);
    ed_u64(e, (uint64_t)v->window_end);
    return ST_OK;
}

int store_mf_edit_del_vlog(struct store_mf_edit *e, uint64_t file_number)
{
    return ed_tag_u64(e, STORE_MF_DEL_VLOG, file_number);
}

int store_mf_edit_del_segment(struct store_mf_edit *e, uint64_t n)
{
    return ed_tag_u64(e, STORE_MF_DEL_SEGMENT, n);
}
int store_mf_edit_log_number(struct store_mf_edit *e, uint64_t n)
{
    return ed_tag_u64(e, STORE_MF_LOG_NUMBER, n);
}
int store_mf_edit_next_file(struct store_mf_edit *e, uint64_t n)
{
    return ed_tag_u64(e, STORE_MF_NEXT_FILE, n);
}

int store_mf_edit_mark(struct store_mf_edit *e, int32_t partition, int64_t offset)
{
    if (ed_reserve(e, 13) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, STORE_MF_MARK);
    ed_u32(e, (uint32_t)partition);
    ed_u64(e, (uint64_t)offset);
    return ST_OK;
}

int store_mf_edit_window(struct store_mf_edit *e, const struct store_window_rec *w)
{
    if (ed_reserve(e, 22) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, STORE_MF_WINDOW);
    ed_u64(e, (uint64_t)w->start);
    ed_u64(e, (uint64_t)w->end);
    ed_u8(e, w->state);
    ed_u32(e, w->version);
    return ST_OK;
}

int store_mf_edit_kv(struct store_mf_edit *e, const struct store_kv *kv)
{
    size_t kl = strlen(kv->key);
    if (ed_reserve(e, 1 + 10 + kl + 10 + kv->vlen) != ST_OK)
        return ST_ENOMEM;
    ed_u8(e, STORE_MF_KV_SET);
    e->len += st_put_varint(e->buf + e->len, kl);
    memcpy(e->buf + e->len, kv->key, kl);
    e->len += kl;
    e->len += st_put_varint(e->buf + e->len, kv->vlen);
    if (kv->vlen)
        memcpy(e->buf + e->len, kv->val, kv->vlen);
    e->len += kv->vlen;
    return ST_OK;
}

/* ---- state -------------------------------------------------------------------------------- */

void store_mf_state_free(struct store_mf_state *st)
{
    free(st->segs);
    store_marks_free(&st->marks);
    free(st->windows);
    for (size_t i = 0; i < st->nkv; i++) {
        free(st->kv[i].key);
        free(st->kv[i].val);
    }
    free(st->kv);
    free(st->vlogs);
    memset(st, 0, sizeof(*st));
}

static int st_add_vlog(struct store_mf_state *st, const struct store_mf_vlog *v)
{
    for (size_t i = 0; i < st->nvlogs; i++)
        if (st->vlogs[i].file_number == v->file_number)
            return ST_ECORRUPT; /* listed twice */
    for (size_t i = 0; i < st->nsegs; i++)
        if (st->segs[i].file_number == v->file_number)
            return ST_ECORRUPT; /* a segment already */
    if (st->nvlogs == st->capvlogs) {
        size_t cap = st->capvlogs ? st->capvlogs * 2 : 8;
        struct store_mf_vlog *n = realloc(st->vlogs, cap * sizeof(*n));
        if (n == NULL)
            return ST_ENOMEM;
        st->vlogs = n;
        st->capvlogs = cap;
    }
    st->vlogs[st->nvlogs++] = *v;
    return ST_OK;
}

static int st_del_vlog(struct store_mf_state *st, uint64_t n)
{
    for (size_t i = 0; i < st->nvlogs; i++) {
        if (st->vlogs[i].file_number == n) {
            st->vlogs[i] = st->vlogs[--st->nvlogs];
            return ST_OK;
        }
    }
    return ST_ECORRUPT; /* removing what is not there */
}

static int st_add_seg(struct store_mf_state *st, const struct store_mf_seg *g)
{
    for (size_t i = 0; i < st->nsegs; i++)
        if (st->segs[i].file_number == g->file_number)
            return ST_ECORRUPT; /* listed twice */
    for (size_t i = 0; i < st->nvlogs; i++)
        if (st->vlogs[i].file_number == g->file_number)
            return ST_ECORRUPT; /* still a vector log: a seal deletes that first */
    if (st->nsegs == st->capsegs) {
        size_t cap = st->capsegs ? st->capsegs * 2 : 16;
        struct store_mf_seg *s = realloc(st->segs, cap * sizeof(*s));
        if (s == NULL)
            return ST_ENOMEM;
        st->segs = s;
        st->capsegs = cap;
    }
    st->segs[st->nsegs++] = *g;
    return ST_OK;
}

static int st_del_seg(struct store_mf_state *st, uint64_t n)
{
    for (size_t i = 0; i < st->nsegs; i++) {
        if (st->segs[i].file_number == n) {
            memmove(&st->segs[i], &st->segs[i + 1], (st->nsegs - i - 1) * sizeof(st->segs[0]));
            st->nsegs--;
            return ST_OK;
        }
    }
    return ST_ECORRUPT; /* removing what is not there */
}

static int st_set_window(struct store_mf_state *st, const struct store_window_rec *w)
{
    for (size_t i = 0; i < st->nwindows; i++) {
        if (st->windows[i].start == w->start) {
            if (w->state == STORE_WINDOW_REMOVE)
                st->windows[i] = st->windows[--st->nwindows];
            else
                st->windows[i] = *w;
            return ST_OK;
        }
    }
    if (w->state == STORE_WINDOW_REMOVE)
        return ST_OK;
    if (st->nwindows == st->capwindows) {
        size_t cap = st->capwindows ? st->capwindows * 2 : 16;
        struct store_window_rec *n = realloc(st->windows, cap * sizeof(*n));
        if (n == NULL)
            return ST_ENOMEM;
        st->windows = n;
        st->capwindows = cap;
    }
    st->windows[st->nwindows++] = *w;
    return ST_OK;
}

static int st_kv(struct store_mf_state *st, const uint8_t *k, size_t kl, const uint8_t *v,
                 size_t vl, bool del)
{
    for (size_t i = 0; i < st->nkv; i++) {
        if (strlen(st->kv[i].key) == kl && memcmp(st->kv[i].key, k, kl) == 0) {
            free(st->kv[i].key);
            free(st->kv[i].val);
            st->kv[i] = st->kv[--st->nkv];
            break;
        }
    }
    if (del)
        return ST_OK;
    if (st->nkv == st->capkv) {
        size_t cap = st->capkv ? st->capkv * 2 : 16;
        struct store_kv *n = realloc(st->kv, cap * sizeof(*n));
        if (n == NULL)
            return ST_ENOMEM;
        st->kv = n;
        st->capkv = cap;
    }
    struct store_kv *kv = &st->kv[st->nkv];
    kv->key = strndup((const char *)k, kl);
    kv->val = malloc(vl ? vl : 1);
    if (kv->key == NULL || kv->val == NULL) {
        free(kv->key);
        free(kv->val);
        return ST_ENOMEM;
    }
    if (vl)
        memcpy(kv->val, v, vl);
    kv->vlen = vl;
    st->nkv++;
    return ST_OK;
}

int store_mf_apply(struct store_mf_state *st, const uint8_t *p, size_t len)
{
    size_t i = 0;
#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (len - i < (size_t)(n))                                                                 \
            return ST_ECORRUPT;                                                                    \
    } while (0)
    while (i < len) {
        uint8_t tag = p[i++];
        int rc = ST_OK;
        switch (tag) {
        case STORE_MF_INFO:
            NEED(8);
            if (st_get_le32(p + i + 4) != STORE_MANIFEST_VERSION)
                return ST_EUNSUPP;
            /* a collection's dim (1..65536, cfg): 0 once reached a division in inspect */
            if (!store_mf_dim_ok(st_get_le32(p + i)))
                return ST_ECORRUPT;
            st->dim = st_get_le32(p + i);
            st->have_info = true;
            i += 8;
            break;
        case STORE_MF_ADD_SEGMENT: {
            NEED(8 * 3 + 4 * 2 + 8 * 4);
            struct store_mf_seg g = {0};
            g.file_number = st_get_le64(p + i);
            g.meta.window_start = (int64_t)st_get_le64(p + i + 8);
            g.meta.window_end = (int64_t)st_get_le64(p + i + 16);
            g.meta.kind = (enum store_seg_kind)st_get_le32(p + i + 24);
            g.meta.version = st_get_le32(p + i + 28);
            g.count = st_get_le64(p + i + 32);
            g.bytes = st_get_le64(p + i + 40);
            g.min_ts = (int64_t)st_get_le64(p + i + 48);
            g.max_ts = (int64_t)st_get_le64(p + i + 56);
            i += 64;
            /* the manifest, not the footer, says what a segment is: a kind no code knows is
             * corruption here as in a footer */
            rc = g.file_number != 0 && g.file_number <= STORE_FILE_NUMBER_MAX &&
                         (uint32_t)g.meta.kind <= STORE_SEG_DELTA
                     ? st_add_seg(st, &g)
                     : ST_ECORRUPT;
            break;
        }
        case STORE_MF_DEL_SEGMENT:
            NEED(8);
            rc = st_del_seg(st, st_get_le64(p + i));
            i += 8;
            break;
        case STORE_MF_LOG_NUMBER:
            NEED(8);
            if (st_get_le64(p + i) > STORE_FILE_NUMBER_MAX)
                return ST_ECORRUPT;
            st->log_number = st_get_le64(p + i);
            i += 8;
            break;
        case STORE_MF_NEXT_FILE:
            NEED(8);
            /* Monotonic: an edit built before a later allocation must not hand out a file
             * number twice. Bounded: numbers past the bound name files open would not see. */
            if (st_get_le64(p + i) > STORE_FILE_NUMBER_MAX)
                return ST_ECORRUPT;
            if (st_get_le64(p + i) > st->next_file)
                st->next_file = st_get_le64(p + i);
            i += 8;
            break;
        case STORE_MF_MARK:
            NEED(12);
            rc = store_marks_raise(&st->marks, (int32_t)st_get_le32(p + i),
                                   (int64_t)st_get_le64(p + i + 4));
            i += 12;
            break;
        case STORE_MF_WINDOW: {
            NEED(21);
            struct store_window_rec w = {(int64_t)st_get_le64(p + i),
                                         (int64_t)st_get_le64(p + i + 8), p[i + 16],
                                         st_get_le32(p + i + 17)};
            i += 21;
            rc = st_set_window(st, &w);
            break;
        }
        case STORE_MF_KV_SET:
        case STORE_MF_KV_DEL: {
            uint64_t kl, vl = 0;
            size_t c = st_get_varint(p + i, len - i, &kl);
            if (c == 0)
                return ST_ECORRUPT;
            i += c;
            NEED(kl);
            const uint8_t *k = p + i;
            i += kl;
            const uint8_t *v = NULL;
            if (tag == STORE_MF_KV_SET) {
                c = st_get_varint(p + i, len - i, &vl);
                if (c == 0)
                    return ST_ECORRUPT;
                i += c;
                NEED(vl);
                v = p + i;
                i += vl;
            }
            rc = st_kv(st, k, kl, v, vl, tag == STORE_MF_KV_DEL);
            break;
        }
        case STORE_MF_ADD_VLOG: {
            NEED(24);
            struct store_mf_vlog v = {st_get_le64(p + i), (int64_t)st_get_le64(p + i + 8),
                                      (int64_t)st_get_le64(p + i + 16)};
            i += 24;
            rc = v.window_end > v.window_start && v.file_number != 0 &&
                         v.file_number <= STORE_FILE_NUMBER_MAX
                     ? st_add_vlog(st, &v)
                     : ST_ECORRUPT;
            break;
        }
        case STORE_MF_DEL_VLOG:
            NEED(8);
            rc = st_del_vlog(st, st_get_le64(p + i));
            i += 8;
            break;
        default:
            return ST_ECORRUPT;
        }
        if (rc != ST_OK)
            return rc;
    }
#undef NEED
    return ST_OK;
}

int store_mf_snapshot(const struct store_mf_state *st, struct store_mf_edit *e)
{
    if (!store_mf_dim_ok(st->dim))
        return ST_EINVAL; /* a snapshot that would not load again is never written */
    int rc = store_mf_edit_info(e, st->dim);
    for (size_t i = 0; rc == ST_OK && i < st->nsegs; i++)
        rc = store_mf_edit_add_segment(e, &st->segs[i]);
    if (rc == ST_OK)
        rc = store_mf_edit_log_number(e, st->log_number);
    if (rc == ST_OK)
        rc = store_mf_edit_next_file(e, st->next_file);
    for (size_t i = 0; rc == ST_OK && i < st->marks.n; i++)
        rc = store_mf_edit_mark(e, st->marks.m[i].partition, st->marks.m[i].offset);
    for (size_t i = 0; rc == ST_OK && i < st->nwindows; i++)
        rc = store_mf_edit_window(e, &st->windows[i]);
    for (size_t i = 0; rc == ST_OK && i < st->nkv; i++)
        rc = store_mf_edit_kv(e, &st->kv[i]);
    for (size_t i = 0; rc == ST_OK && i < st->nvlogs; i++)
        rc = store_mf_edit_add_vlog(e, &st->vlogs[i]);
    return rc;
}

int store_mf_load(const char *dir, struct store_mf_state *st, uint64_t *mf_number,
                  struct st_err *err)
{
    memset(st, 0, sizeof(*st));
    char *cur = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (asprintf(&cur, "%s/CURRENT", dir) < 0)
        return ST_ENOMEM;
    int rc = store_fs_read_all(cur, &buf, &len, 4096);
    if (rc == ST_ENOTFOUND) {
        free(cur);
        return ST_ENOTFOUND;
    }
    if (rc != ST_OK) {
        st_err_set(err, rc, "%s: cannot read: %s", cur, st_strerror(rc));
        free(cur);
        return rc;
    }
    uint64_t n;
    if (len < 2 || buf[len - 1] != '\n') {
        rc = st_err_set(err, ST_ECORRUPT, "%s: malformed at offset 0", cur);
        goto out;
    }
    buf[len - 1] = '\0';
    if (store_file_parse((const char *)buf, &n) != STORE_FILE_MANIFEST) {
        rc = st_err_set(err, ST_ECORRUPT, "%s: does not name a manifest at offset 0", cur);
        goto out;
    }
    free(buf);
    buf = NULL;
    char *mp = store_file_path(dir, STORE_FILE_MANIFEST, n);
    if (mp == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    rc = store_fs_read_all(mp, &buf, &len, SIZE_MAX);
    if (rc != ST_OK) {
        st_err_set(err, rc, "%s: cannot read: %s", mp, st_strerror(rc));
        free(mp);
        goto out;
    }
    struct store_log_reader r;
    store_log_reader_init(&r, buf, len);
    const uint8_t *p;
    size_t plen, off;
    while (store_log_next(&r, &p, &plen, &off)) {
        rc = store_mf_apply(st, p, plen);
        if (rc != ST_OK) {
            st_err_set(err, ST_ECORRUPT, "%s: bad edit group at offset %zu", mp, off);
            rc = ST_ECORRUPT;
            break;
        }
    }
    /* The manifest is synced after every edit group: a torn final group was never acted on
     * (its files are orphans, deleted on open); damage before the end is corruption. */
    if (rc == ST_OK && r.end == STORE_LOG_END_CORRUPT)
        rc = st_err_set(err, ST_ECORRUPT, "%s: %s", mp, r.why);
    if (rc == ST_OK && !st->have_info)
        rc = st_err_set(err, ST_ECORRUPT, "%s: no INFO edit at offset 0", mp);
    store_log_reader_destroy(&r);
    free(mp);
    *mf_number = n;
out:
    free(cur);
    free(buf);
    if (rc != ST_OK)
        store_mf_state_free(st);
    return rc;
}
