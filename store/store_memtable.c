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

#define MT_CHUNK_MAX   (1u << 20) /* bytes of one chunk at most */
#define MT_CHUNK_MIN   (16u << 10)
#define MT_CHUNK_DEF   (64u << 20) /* the size hint when none is given */
#define MT_CHUNK_RECS0 16u         /* records per chunk at least */

static size_t clamp_sz(uint64_t x, size_t lo, size_t hi)
{
    return x < lo ? lo : x > hi ? hi : (size_t)x;
}

struct store_memtable *store_mt_new(uint32_t dim, uint64_t first_log, uint64_t size_hint)
{
    struct store_memtable *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->dim = dim;
    m->first_log = first_log;
    atomic_store(&m->refs, 1);
    atomic_init(&m->published, 0);
    /* About 1/16 of the memtable per chunk, so the one partly filled chunk wastes little. */
    size_t target =
        clamp_sz((size_hint ? size_hint : MT_CHUNK_DEF) / 16, MT_CHUNK_MIN, MT_CHUNK_MAX);
    size_t per = (size_t)dim * sizeof(float) + sizeof(struct store_mt_entry);
    m->chunk_recs = target / per < MT_CHUNK_RECS0 ? MT_CHUNK_RECS0 : target / per;
    m->chunk_vbytes = ((size_t)dim * sizeof(float) * m->chunk_recs + 63) & ~(size_t)63;
    m->heap_chunk = target;
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
    for (size_t i = 0; i < m->nchunks; i++)
        free(m->chunks[i]);
    for (size_t i = 0; i < m->nheaps; i++)
        free(m->heaps[i]);
    free(m->chunks);
    free(m->heaps);
    free(m->slots);
    free(m->wins);
    free(m->vfiles);
    store_marks_free(&m->marks);
    free(m);
}

static uint32_t id_hash(const uint8_t *id, uint32_t len)
{
    return (uint32_t)st_hash64(id, len);
}

/* A slot: the id's 32-bit hash above its entry index + 1 (0 = empty). A probe compares hashes
 * before it touches an entry, and a growth re-places slots from their hashes alone: with ids
 * unique in the stream almost every probe would otherwise miss the cache twice (the entry,
 * then its id). The table stays below 2^32 slots (entry indexes are 32-bit anyway). */
#define SLOT(h, v)   (((uint64_t)(h) << 32) | (uint64_t)(v))
#define SLOT_HASH(s) ((uint32_t)((s) >> 32))
#define SLOT_V(s)    ((uint32_t)(s))

static const struct store_mt_entry *entry_at(const struct store_memtable *m, uint32_t v)
{
    return store_mt_at(m, v - 1);
}

static int slots_grow(struct store_memtable *m)
{
    size_t ns = m->nslots ? m->nslots * 2 : 256;
    if (ns > ((size_t)1 << 32))
        return ST_ENOMEM;
    uint64_t *s = calloc(ns, sizeof(*s));
    if (s == NULL)
        return ST_ENOMEM;
    for (size_t i = 0; i < m->nslots; i++) {
        uint64_t v = m->slots[i];
        if (v == 0)
            continue;
        size_t h = SLOT_HASH(v) & (ns - 1);
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
static size_t slot_find(const struct store_memtable *m, const uint8_t *id, uint32_t len,
                        uint32_t hash)
{
    size_t mask = m->nslots - 1;
    size_t h = hash & mask;
    for (;;) {
        uint64_t v = m->slots[h];
        if (v == 0)
            return h;
        if (SLOT_HASH(v) == hash) {
            const struct store_mt_entry *e = entry_at(m, SLOT_V(v));
            if (e->id_len == len && memcmp(e->id, id, len) == 0)
                return h;
        }
        h = (h + 1) & mask;
    }
}

static int grow_dir(uint8_t ***dir, size_t *cap, size_t need)
{
    if (need <= *cap)
        return ST_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    uint8_t **d = realloc(*dir, nc * sizeof(*d));
    if (d == NULL)
        return ST_ENOMEM;
    *dir = d;
    *cap = nc;
    return ST_OK;
}

/* Copies n bytes into the id/meta heap; an item never spans two heap chunks. */
static int heap_put(struct store_memtable *m, const uint8_t *p, size_t n, const uint8_t **out)
{
    *out = NULL;
    if (n == 0)
        return ST_OK;
    if (m->nheaps == 0 || m->heap_cap - m->heap_len < n) {
        size_t sz = n > m->heap_chunk ? n : m->heap_chunk;
        if (grow_dir(&m->heaps, &m->capheaps, m->nheaps + 1) != ST_OK)
            return ST_ENOMEM;
        uint8_t *h = malloc(sz);
        if (h == NULL)
            return ST_ENOMEM;
        m->heaps[m->nheaps++] = h;
        m->heap_len = 0;
        m->heap_cap = sz;
        m->bytes += sz;
    }
    uint8_t *dst = m->heaps[m->nheaps - 1] + m->heap_len;
    memcpy(dst, p, n);
    m->heap_len += n;
    *out = dst;
    return ST_OK;
}

static int chunk_add(struct store_memtable *m)
{
    if (grow_dir(&m->chunks, &m->capchunks, m->nchunks + 1) != ST_OK)
        return ST_ENOMEM;
    size_t sz = m->chunk_vbytes + m->chunk_recs * sizeof(struct store_mt_entry) +
                sizeof(struct store_mt_span);
    uint8_t *c = aligned_alloc(64, (sz + 63) & ~(size_t)63);
    if (c == NULL)
        return ST_ENOMEM;
    struct store_mt_span *span = store_mt_chunk_span(m, c);
    atomic_init(&span->min_ts, INT64_MAX);
    atomic_init(&span->max_ts, INT64_MIN);
    m->chunks[m->nchunks++] = c;
    m->bytes += (sz + 63) & ~(size_t)63;
    return ST_OK;
}

bool store_mt_has_window(const struct store_memtable *m, int64_t start)
{
    for (size_t i = m->nwins; i-- > 0;)
        if (m->wins[i] == start)
            return true;
    return false;
}

static int note_window(struct store_memtable *m, int64_t start)
{
    if (m->nwins > 0 && m->wins[m->nwins - 1] == start)
        return ST_OK;
    if (store_mt_has_window(m, start))
        return ST_OK;
    if (m->nwins == m->capwins) {
        size_t cap = m->capwins ? m->capwins * 2 : 8;
        int64_t *w = realloc(m->wins, cap * sizeof(*w));
        if (w == NULL)
            return ST_ENOMEM;
        m->wins = w;
        m->capwins = cap;
    }
    m->wins[m->nwins++] = start;
    return ST_OK;
}

bool store_mt_has_vfile(const struct store_memtable *m, uint64_t vfile)
{
    for (size_t i = 0; i < m->nvfiles; i++)
        if (m->vfiles[i] == vfile)
            return true;
    return false;
}

static int note_vfile(struct store_memtable *m, uint64_t vfile)
{
    if (vfile == 0 || store_mt_has_vfile(m, vfile))
        return ST_OK;
    if (m->nvfiles == m->capvfiles) {
        size_t cap = m->capvfiles ? m->capvfiles * 2 : 8;
        uint64_t *v = realloc(m->vfiles, cap * sizeof(*v));
        if (v == NULL)
            return ST_ENOMEM;
        m->vfiles = v;
        m->capvfiles = cap;
    }
    m->vfiles[m->nvfiles++] = vfile;
    return ST_OK;
}

int store_mt_add(struct store_memtable *m, const struct store_record *r, int32_t partition,
                 int64_t offset, uint32_t idx, const struct store_vref *ref, const float **vec_out)
{
    int rc;
    if (vec_out != NULL)
        *vec_out = NULL;
    bool has_ref = ref != NULL && ref->vfile != 0 && r->op == STORE_OP_UPSERT;
    if ((rc = note_window(m, r->window)) != ST_OK ||
        (rc = note_vfile(m, has_ref ? ref->vfile : 0)) != ST_OK)
        return rc;
    if (m->n == m->nchunks * m->chunk_recs && (rc = chunk_add(m)) != ST_OK)
        return rc;
    if ((m->n + 1) * 2 > m->nslots && (rc = slots_grow(m)) != ST_OK)
        return rc;
    struct store_version nv = {r->ts, partition, offset, idx};
    uint32_t hash = id_hash(r->id, r->id_len);
    size_t slot = slot_find(m, r->id, r->id_len, hash);
    struct store_mt_entry *old = NULL;
    if (m->slots[slot] != 0) {
        old = (struct store_mt_entry *)(uintptr_t)entry_at(m, SLOT_V(m->slots[slot]));
        struct store_version ov = {old->ts, old->partition, old->offset, old->idx};
        if (store_version_cmp(&nv, &ov) <= 0)
            return ST_OK; /* an older (or the same) version: it never becomes visible */
    }
    const uint8_t *id, *meta;
    if ((rc = heap_put(m, r->id, r->id_len, &id)) != ST_OK ||
        (rc = heap_put(m, r->meta, r->meta_len, &meta)) != ST_OK)
        return rc;
    uint8_t *chunk = m->chunks[m->n / m->chunk_recs];
    size_t ci = m->n % m->chunk_recs;
    float *vec = (float *)(void *)chunk + ci * m->dim;
    if (r->op == STORE_OP_UPSERT)
        memcpy(vec, r->vec, m->dim * sizeof(float));
    else
        memset(vec, 0, m->dim * sizeof(float));
    struct store_mt_entry *e = store_mt_chunk_entries(m, chunk) + ci;
    e->id = id;
    e->meta = meta;
    e->vec = vec;
    e->ts = r->ts;
    e->window = r->window;
    e->window_end = r->window_end;
    e->offset = offset;
    e->partition = partition;
    e->idx = idx;
    e->vfile = has_ref ? ref->vfile : 0;
    e->row = has_ref ? ref->row : 0;
    e->meta_len = r->meta_len;
    e->id_len = (uint16_t)r->id_len;
    e->op = r->op;
    atomic_init(&e->superseded_by, 0);
    struct store_mt_span *span = store_mt_chunk_span(m, chunk);
    if (r->ts < atomic_load_explicit(&span->min_ts, memory_order_relaxed))
        atomic_store_explicit(&span->min_ts, r->ts, memory_order_relaxed);
    if (r->ts > atomic_load_explicit(&span->max_ts, memory_order_relaxed))
        atomic_store_explicit(&span->max_ts, r->ts, memory_order_relaxed);
    if (vec_out != NULL)
        *vec_out = vec;
    m->slots[slot] = SLOT(hash, m->n + 1);
    m->n++;
    /* The entry, its vector and its id are complete: readers may see it now. */
    atomic_store_explicit(&m->published, m->n, memory_order_release);
    if (old != NULL)
        atomic_store_explicit(&old->superseded_by, (uint32_t)m->n, memory_order_relaxed);
    return ST_OK;
}

const struct store_mt_entry *store_mt_get(const struct store_memtable *m, const uint8_t *id,
                                          uint32_t id_len)
{
    if (m->nslots == 0)
        return NULL;
    uint64_t v = m->slots[slot_find(m, id, id_len, id_hash(id, id_len))];
    return v ? entry_at(m, SLOT_V(v)) : NULL;
}
