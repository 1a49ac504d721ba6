/* The memtable: append-only entries, vectors contiguous (ready for an exact SIMD scan), and an
 * open-addressing id index pointing at each id's newest entry. */
#include <stdlib.h>
#include <string.h>

#include "st_checksum.h"
#include "store_int.h"

/* ---- marks -------------------------------------------------------------------------------- */

int store_marks_raise(struct store_marks *ms, int32_t partition, int64_t offset)
{
    for (size_t i = 0; i < ms->n; i++) {
        if (ms->m[i].partition == partition) {
            if (offset > ms->m[i].offset)
                ms->m[i].offset = offset;
            return ST_OK;
        }
    }
    if (ms->n == ms->cap) {
        size_t cap = ms->cap ? ms->cap * 2 : 8;
        struct store_mark *m = realloc(ms->m, cap * sizeof(*m));
        if (m == NULL)
            return ST_ENOMEM;
        ms->m = m;
        ms->cap = cap;
    }
    ms->m[ms->n].partition = partition;
    ms->m[ms->n].offset = offset;
    ms->n++;
    return ST_OK;
}

bool store_marks_get(const struct store_marks *ms, int32_t partition, int64_t *offset)
{
    for (size_t i = 0; i < ms->n; i++) {
        if (ms->m[i].partition == partition) {
            *offset = ms->m[i].offset;
            return true;
        }
    }
    return false;
}

void store_marks_free(struct store_marks *ms)
{
    free(ms->m);
    ms->m = NULL;
    ms->n = ms->cap = 0;
}

int store_marks_copy(struct store_marks *dst, const struct store_marks *src)
{
    for (size_t i = 0; i < src->n; i++) {
        int rc = store_marks_raise(dst, src->m[i].partition, src->m[i].offset);
        if (rc != ST_OK)
            return rc;
    }
    return ST_OK;
}

/* ---- memtable ----------------------------------------------------------------------------- */

struct store_memtable *store_mt_new(uint32_t dim, uint64_t first_log)
{
    struct store_memtable *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->dim = dim;
    m->first_log = first_log;
    atomic_store(&m->refs, 1);
    return m;
}

void store_mt_ref(struct store_memtable *m)
{
    atomic_fetch_add(&m->refs, 1);
}

void store_mt_unref(struct store_memtable *m)
{
    if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    free(m->e);
    free(m->vecs);
    free(m->heap);
    free(m->slots);
    store_marks_free(&m->marks);
    free(m);
}

static uint64_t id_hash(const uint8_t *id, uint32_t len)
{
    return st_hash64(id, len);
}

static int slots_grow(struct store_memtable *m)
{
    size_t ns = m->nslots ? m->nslots * 2 : 1024;
    uint32_t *s = calloc(ns, sizeof(*s));
    if (s == NULL)
        return ST_ENOMEM;
    for (size_t i = 0; i < m->nslots; i++) {
        uint32_t v = m->slots[i];
        if (v == 0)
            continue;
        const struct store_mt_entry *e = &m->e[v - 1];
        size_t h = id_hash(m->heap + e->id_off, e->id_len) & (ns - 1);
        while (s[h] != 0)
            h = (h + 1) & (ns - 1);
        s[h] = v;
    }
    free(m->slots);
    m->slots = s;
    m->bytes += (ns - m->nslots) * sizeof(*s);
    m->nslots = ns;
    return ST_OK;
}

/* Slot holding id, or the empty slot where it would go. */
static size_t slot_find(const struct store_memtable *m, const uint8_t *id, uint32_t len)
{
    size_t mask = m->nslots - 1;
    size_t h = id_hash(id, len) & mask;
    for (;;) {
        uint32_t v = m->slots[h];
        if (v == 0)
            return h;
        const struct store_mt_entry *e = &m->e[v - 1];
        if (e->id_len == len && memcmp(m->heap + e->id_off, id, len) == 0)
            return h;
        h = (h + 1) & mask;
    }
}

static int heap_put(struct store_memtable *m, const uint8_t *p, size_t n, uint64_t *off)
{
    if (m->heap_len + n > m->heap_cap) {
        size_t cap = m->heap_cap ? m->heap_cap * 2 : 65536;
        while (cap < m->heap_len + n)
            cap *= 2;
        uint8_t *h = realloc(m->heap, cap);
        if (h == NULL)
            return ST_ENOMEM;
        m->bytes += cap - m->heap_cap;
        m->heap = h;
        m->heap_cap = cap;
    }
    *off = m->heap_len;
    if (n > 0)
        memcpy(m->heap + m->heap_len, p, n);
    m->heap_len += n;
    return ST_OK;
}

static int entries_grow(struct store_memtable *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    struct store_mt_entry *e = realloc(m->e, cap * sizeof(*e));
    if (e == NULL)
        return ST_ENOMEM;
    m->e = e;
    size_t vbytes = cap * m->dim * sizeof(float);
    float *v = aligned_alloc(64, (vbytes + 63) & ~(size_t)63);
    if (v == NULL)
        return ST_ENOMEM;
    if (m->vecs != NULL)
        memcpy(v, m->vecs, m->n * m->dim * sizeof(float));
    free(m->vecs);
    m->vecs = v;
    m->bytes += (cap - m->cap) * (sizeof(*e) + m->dim * sizeof(float));
    m->cap = cap;
    return ST_OK;
}

int store_mt_add(struct store_memtable *m, const struct store_record *r, int32_t partition,
                 int64_t offset, uint32_t idx)
{
    int rc;
    if (m->n == m->cap && (rc = entries_grow(m)) != ST_OK)
        return rc;
    if ((m->n + 1) * 2 > m->nslots && (rc = slots_grow(m)) != ST_OK)
        return rc;
    struct store_version nv = {r->ts, partition, offset, idx};
    size_t slot = slot_find(m, r->id, r->id_len);
    if (m->slots[slot] != 0) {
        struct store_mt_entry *old = &m->e[m->slots[slot] - 1];
        struct store_version ov = {old->ts, old->partition, old->offset, old->idx};
        if (store_version_cmp(&nv, &ov) <= 0)
            return ST_OK; /* an older (or the same) version: it never becomes visible */
        old->superseded = 1;
    }
    struct store_mt_entry *e = &m->e[m->n];
    memset(e, 0, sizeof(*e));
    if ((rc = heap_put(m, r->id, r->id_len, &e->id_off)) != ST_OK)
        return rc;
    if ((rc = heap_put(m, r->meta, r->meta_len, &e->meta_off)) != ST_OK)
        return rc;
    e->id_len = (uint16_t)r->id_len;
    e->meta_len = r->meta_len;
    e->ts = r->ts;
    e->window = r->window;
    e->window_end = r->window_end;
    e->partition = partition;
    e->offset = offset;
    e->idx = idx;
    e->op = r->op;
    float *dst = m->vecs + m->n * m->dim;
    if (r->op == STORE_OP_UPSERT)
        memcpy(dst, r->vec, m->dim * sizeof(float));
    else
        memset(dst, 0, m->dim * sizeof(float));
    m->slots[slot] = (uint32_t)(m->n + 1);
    m->n++;
    return ST_OK;
}

const struct store_mt_entry *store_mt_get(const struct store_memtable *m, const uint8_t *id,
                                          uint32_t id_len)
{
    if (m->nslots == 0)
        return NULL;
    uint32_t v = m->slots[slot_find(m, id, id_len)];
    return v ? &m->e[v - 1] : NULL;
}
