/* idx_catalog.c — the indexer's durable catalog (idx_catalog.h). */
#include "idx_catalog.h"

#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_checksum.h"
#include "st_log.h"
#include "store_fs.h"

#define CATALOG_FORMAT 1

/*
 * CATALOG's own checksum: the top-level key "catalog_checksum32", written last, holds eight
 * lowercase hex digits, the checksum32 of the whole file as it is with those digits read as
 * "00000000". The file is written tmp → fsync → rename, so never torn; the sum refuses what
 * renaming does not guard against, a flipped bit that leaves valid JSON naming another window,
 * version or unit. The format stays 1: a release before the sum ignores the key (an indexer
 * rolled back loads its catalog), and a catalog written before it, without the key, loads
 * unchecked. So one flipped bit is refused or leaves the catalog as saved: in the digits or
 * anywhere else it fails the sum (checksum32 is 32 bits of XXH3, not a CRC: a change escapes
 * it with probability 2^-32); in the key's own name it hides the key, and what is read is what
 * was saved. A sum, not a signature: whoever can write the file can write its sum.
 */
#define CATALOG_SUM_KEY "\"catalog_checksum32\": \""

/* Checks buf's catalog_checksum32, when it has one (see above). */
static int check_sum(uint8_t *buf, size_t len, const char *path, struct st_err *err)
{
    const size_t kl = sizeof(CATALOG_SUM_KEY) - 1;
    uint8_t *at = NULL;
    for (uint8_t *p = buf; (p = memmem(p, len - (size_t)(p - buf), CATALOG_SUM_KEY, kl)) != NULL;
         p += kl) {
        if (at != NULL)
            return st_err_set(err, ST_ECORRUPT, "%s: catalog_checksum32 is there twice", path);
        at = p;
    }
    if (at == NULL)
        return ST_OK; /* written before the sum */
    uint8_t *digits = at + kl;
    uint32_t want = 0;
    bool ok = len - (size_t)(digits - buf) > 8 && digits[8] == '"';
    for (int k = 0; ok && k < 8; k++) {
        uint8_t ch = digits[k];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        ok = v >= 0;
        want = want << 4 | (uint32_t)(v & 15);
    }
    if (!ok)
        return st_err_set(err, ST_ECORRUPT, "%s: catalog_checksum32 is not 8 hex digits", path);
    uint8_t saved[8];
    memcpy(saved, digits, 8);
    memset(digits, '0', 8);
    uint32_t got = st_checksum32(buf, len);
    memcpy(digits, saved, 8);
    if (got != want)
        return st_err_set(err, ST_ECORRUPT,
                          "%s: checksum mismatch (catalog_checksum32 says %08" PRIx32
                          ", the file's %zu bytes sum to %08" PRIx32 "): the catalog is damaged",
                          path, want, len, got);
    return ST_OK;
}

bool idx_node_id_ok(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > IDX_NODE_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static bool bounded(int64_t start, int64_t end, int64_t max)
{
    return start >= -max && start <= max && end <= max && (end == 0 || end > start);
}

bool idx_window_ok(int64_t start, int64_t end)
{
    return bounded(start, end, IDX_TIME_MAX);
}

bool idx_span_ok(int64_t start, int64_t end)
{
    return bounded(start, end, IDX_SPAN_MAX);
}

/* One entry (or unit member) from its JSON object; false when malformed. */
static bool parse_entry(json_t *o, struct idx_cat_entry *e)
{
    memset(e, 0, sizeof(*e));
    const char *node = json_string_value(json_object_get(o, "node"));
    const char *ix = json_string_value(json_object_get(o, "index"));
    if (!json_is_object(o) || node == NULL || !idx_node_id_ok(node) || ix == NULL ||
        (strcmp(ix, "hnsw") != 0 && strcmp(ix, "ivfpq") != 0))
        return false;
    strcpy(e->node, node);
    strcpy(e->index, ix);
    e->start = json_integer_value(json_object_get(o, "start"));
    e->end = json_integer_value(json_object_get(o, "end"));
    e->version = (uint32_t)json_integer_value(json_object_get(o, "version"));
    e->records = (uint64_t)json_integer_value(json_object_get(o, "records"));
    e->bytes = (uint64_t)json_integer_value(json_object_get(o, "bytes"));
    e->checksum = (uint32_t)json_integer_value(json_object_get(o, "checksum"));
    e->cold = json_is_true(json_object_get(o, "cold"));
    e->sealed_ms = json_integer_value(json_object_get(o, "sealed_ms"));
    e->indexed_ms = json_integer_value(json_object_get(o, "indexed_ms"));
    e->unit = (uint64_t)json_integer_value(json_object_get(o, "unit"));
    const char *url = json_string_value(json_object_get(o, "url"));
    snprintf(e->url, sizeof(e->url), "%s", url != NULL ? url : "");
    return idx_window_ok(e->start, e->end);
}

#define UNIT_MEMBERS_MAX 100000

/*
 * Loading is O(n log n) in what the file holds: entries, tombstones and units are appended
 * as parsed, then duplicates are found by sorting (a lookup per item, as put does at run time,
 * made a catalog of 100,000 windows take 22 s to open). Keys are compared through an index
 * array, so the catalog's own order is kept.
 */
struct keyed {
    const void *base; /* entries (struct idx_cat_entry) or tombstones (struct idx_cat_gone) */
    bool gone;
};

static const char *key_node(const struct keyed *k, size_t i, int64_t *start)
{
    if (k->gone) {
        const struct idx_cat_gone *g = (const struct idx_cat_gone *)k->base + i;
        *start = g->start;
        return g->node;
    }
    const struct idx_cat_entry *e = (const struct idx_cat_entry *)k->base + i;
    *start = e->start;
    return e->node;
}

/* By (start, node), then position: equal keys end up together, in file order. */
static int key_cmp(const void *a, const void *b, void *arg)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int64_t sx, sy;
    const char *nx = key_node(arg, x, &sx), *ny = key_node(arg, y, &sy);
    if (sx != sy)
        return sx < sy ? -1 : 1;
    int c = strcmp(nx, ny);
    return c != 0 ? c : x < y ? -1 : x > y;
}

/* The positions 0..n-1 of k's items sorted by key (NULL: no memory). */
static size_t *key_order(struct keyed *k, size_t n)
{
    size_t *ix = malloc((n ? n : 1) * sizeof(*ix));
    if (ix == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        ix[i] = i;
    qsort_r(ix, n, sizeof(*ix), key_cmp, k);
    return ix;
}

/*
 * Entries or tombstones (gone) with one key more than once, made one as the run-time
 * put makes them: the first one's place, and the last one's value (an entry) or the greatest
 * version (a tombstone). The rest are removed, the order otherwise kept.
 */
static int dedupe(void *base, size_t *n, bool gone)
{
    struct keyed k = {base, gone};
    size_t size = gone ? sizeof(struct idx_cat_gone) : sizeof(struct idx_cat_entry);
    size_t *ix = key_order(&k, *n);
    uint8_t *dead = calloc(*n ? *n : 1, 1);
    if (ix == NULL || dead == NULL) {
        free(ix);
        free(dead);
        return ST_ENOMEM;
    }
    char *b = base;
    for (size_t i = 0; i < *n;) {
        size_t j = i + 1;
        int64_t s0, s1;
        const char *n0 = key_node(&k, ix[i], &s0);
        while (j < *n && strcmp(key_node(&k, ix[j], &s1), n0) == 0 && s1 == s0)
            j++;
        size_t first = ix[i]; /* the least position: sorted by position within a key */
        for (size_t m = i + 1; m < j; m++) {
            dead[ix[m]] = 1;
            if (gone) {
                struct idx_cat_gone *g = (void *)(b + first * size),
                                    *o = (void *)(b + ix[m] * size);
                if (o->version > g->version)
                    g->version = o->version;
            }
        }
        if (!gone && j - i > 1)
            memcpy(b + first * size, b + ix[j - 1] * size, size);
        i = j;
    }
    size_t w = 0;
    for (size_t i = 0; i < *n; i++)
        if (!dead[i]) {
            if (w != i)
                memcpy(b + w * size, b + i * size, size);
            w++;
        }
    *n = w;
    free(ix);
    free(dead);
    return ST_OK;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The units (absent in catalogs written before index compaction), appended as they come. */
static int load_units(struct idx_catalog *c, const char *path, json_t *units, struct st_err *err)
{
    size_t nu = json_array_size(units);
    if (nu > 0 && (c->units = calloc(nu, sizeof(*c->units))) == NULL)
        return ST_ENOMEM;
    c->capunits = nu;
    size_t i;
    json_t *o;
    json_array_foreach(units, i, o)
    {
        json_t *mem = json_object_get(o, "members");
        struct idx_cat_unit u = {0};
        json_int_t id = json_integer_value(json_object_get(o, "id"));
        const char *ix = json_string_value(json_object_get(o, "index"));
        if (!json_is_object(o) || id <= 0 || (uint64_t)id >= IDX_UNIT_ID_MAX || ix == NULL ||
            (strcmp(ix, "hnsw") != 0 && strcmp(ix, "ivfpq") != 0) || !json_is_array(mem) ||
            json_array_size(mem) == 0 || json_array_size(mem) > UNIT_MEMBERS_MAX)
            return st_err_set(err, ST_ECORRUPT, "%s: unit %zu is malformed", path, i);
        u.id = (uint64_t)id;
        strcpy(u.e.index, ix);
        u.e.start = json_integer_value(json_object_get(o, "start"));
        u.e.end = json_integer_value(json_object_get(o, "end"));
        u.e.version = (uint32_t)json_integer_value(json_object_get(o, "generation"));
        u.e.records = (uint64_t)json_integer_value(json_object_get(o, "records"));
        u.e.cold = json_is_true(json_object_get(o, "cold"));
        u.e.indexed_ms = json_integer_value(json_object_get(o, "indexed_ms"));
        if (!idx_span_ok(u.e.start, u.e.end))
            return st_err_set(err, ST_ECORRUPT, "%s: unit %zu spans [%" PRId64 ",%" PRId64 ")",
                              path, i, u.e.start, u.e.end);
        u.nmem = json_array_size(mem);
        if ((u.mem = calloc(u.nmem, sizeof(*u.mem))) == NULL)
            return ST_ENOMEM;
        c->units[c->nunits++] = u; /* owned by c from here (freed with it) */
        size_t k;
        json_t *m;
        json_array_foreach(mem, k, m)
        {
            if (!parse_entry(m, &u.mem[k]))
                return st_err_set(err, ST_ECORRUPT, "%s: unit %zu member %zu is malformed", path, i,
                                  k);
            u.mem[k].unit = u.id;
        }
        if (u.id >= c->next_unit)
            c->next_unit = u.id + 1;
    }
    uint64_t *ids = malloc((nu ? nu : 1) * sizeof(*ids));
    if (ids == NULL)
        return ST_ENOMEM;
    for (size_t k = 0; k < nu; k++)
        ids[k] = c->units[k].id;
    qsort(ids, nu, sizeof(*ids), u64_cmp);
    int rc = ST_OK;
    for (size_t k = 1; k < nu && rc == ST_OK; k++)
        if (ids[k] == ids[k - 1])
            rc = st_err_set(err, ST_ECORRUPT, "%s: unit id %" PRIu64 " twice", path, ids[k]);
    /* One unit per span start: compaction finds a bucket's unit by its start (a twin would
     * never be rebuilt or dropped, and its bucket rebuilt at every check). The starts are
     * sorted as unsigned with the sign bit flipped, which orders them as signed. */
    for (size_t k = 0; k < nu; k++)
        ids[k] = (uint64_t)c->units[k].e.start ^ (UINT64_C(1) << 63);
    qsort(ids, nu, sizeof(*ids), u64_cmp);
    for (size_t k = 1; k < nu && rc == ST_OK; k++)
        if (ids[k] == ids[k - 1])
            rc = st_err_set(err, ST_ECORRUPT, "%s: two units start at %" PRId64, path,
                            (int64_t)(ids[k] ^ (UINT64_C(1) << 63)));
    free(ids);
    return rc;
}

/* Units by id, for the entries' references (c->units keeps its order). */
struct unit_ix {
    uint64_t id;
    size_t at;
};

static int unit_ix_cmp(const void *a, const void *b)
{
    return u64_cmp(&((const struct unit_ix *)a)->id, &((const struct unit_ix *)b)->id);
}

static struct idx_cat_unit *unit_by_id(struct idx_catalog *c, const struct unit_ix *ux, uint64_t id)
{
    struct unit_ix key = {id, 0};
    const struct unit_ix *f = bsearch(&key, ux, c->nunits, sizeof(*ux), unit_ix_cmp);
    return f != NULL ? &c->units[f->at] : NULL;
}

/* (start, node, version) of unit members: a window listed twice sorts next to itself, and an
 * entry's exact member is found by bsearch. */
static int member_cmp(const void *a, const void *b)
{
    const struct idx_cat_entry *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    int c = strcmp(x->node, y->node);
    if (c != 0)
        return c;
    return x->version != y->version ? (x->version < y->version ? -1 : 1) : 0;
}

/*
 * Each unit's members are sorted once in a scratch copy. A unit names each window part once: a
 * compaction takes an entry's current version, and a second listing would map its segment copy
 * once more per listing (a crafted list of 70,000 ran the service out of mappings at every
 * start). An entry naming a unit it is no member of (that version) is served by nothing: make
 * it a plain entry again (its own index, missing, is then rebuilt), never a window lost.
 */
static int check_membership(struct idx_catalog *c, const struct unit_ix *ux, const char *path,
                            struct st_err *err)
{
    struct idx_cat_entry **sorted = calloc(c->nunits ? c->nunits : 1, sizeof(*sorted));
    if (sorted == NULL)
        return ST_ENOMEM;
    int rc = ST_OK;
    for (size_t k = 0; k < c->nunits && rc == ST_OK; k++) {
        const struct idx_cat_unit *u = &c->units[k];
        if ((sorted[k] = malloc(u->nmem * sizeof(**sorted))) == NULL) {
            rc = ST_ENOMEM;
            break;
        }
        struct idx_cat_entry *m = sorted[k];
        memcpy(m, u->mem, u->nmem * sizeof(*m));
        qsort(m, u->nmem, sizeof(*m), member_cmp);
        for (size_t i = 1; i < u->nmem && rc == ST_OK; i++)
            if (m[i].start == m[i - 1].start && strcmp(m[i].node, m[i - 1].node) == 0)
                rc = st_err_set(err, ST_ECORRUPT,
                                "%s: unit %" PRIu64 " lists window %s/%" PRId64 " twice", path,
                                u->id, m[i].node, m[i].start);
    }
    for (size_t k = 0; k < c->n && rc == ST_OK; k++) {
        struct idx_cat_entry *e = &c->e[k];
        if (e->unit == 0)
            continue;
        size_t at = (size_t)(unit_by_id(c, ux, e->unit) - c->units);
        if (bsearch(e, sorted[at], c->units[at].nmem, sizeof(**sorted), member_cmp) == NULL)
            e->unit = 0;
    }
    for (size_t k = 0; k < c->nunits; k++)
        free(sorted[k]);
    free(sorted);
    return rc;
}

/*
 * An entry at or below its window's tombstone was expired: the expiry removes the entry and
 * records the tombstone in one save, so a catalog holding both lies (by hand, or bytes gone
 * bad), and the entry would be served for good — no later event removes it. It is dropped
 * here, as the expiry would have; its files are then leftovers for the sweep. Entries and
 * tombstones are each one per key (deduped) and matched by one merge walk.
 */
static int drop_expired(struct idx_catalog *c, const char *path)
{
    struct keyed ke = {c->e, false}, kg = {c->gone, true};
    size_t *ie = key_order(&ke, c->n), *ig = key_order(&kg, c->ngone);
    uint8_t *dead = calloc(c->n ? c->n : 1, 1);
    if (ie == NULL || ig == NULL || dead == NULL) {
        free(ie);
        free(ig);
        free(dead);
        return ST_ENOMEM;
    }
    size_t a = 0, b = 0, ndead = 0;
    while (a < c->n && b < c->ngone) {
        const struct idx_cat_entry *e = &c->e[ie[a]];
        const struct idx_cat_gone *g = &c->gone[ig[b]];
        int cmp = e->start != g->start ? (e->start < g->start ? -1 : 1) : strcmp(e->node, g->node);
        if (cmp < 0) {
            a++;
        } else if (cmp > 0) {
            b++;
        } else {
            if (e->version <= g->version) {
                st_log_warn("indexer",
                            "%s: entry node=%s start=%" PRId64 " version=%u is at or below its "
                            "tombstone (version %u): dropped as expired",
                            path, e->node, e->start, e->version, g->version);
                dead[ie[a]] = 1;
                ndead++;
            }
            a++;
            b++;
        }
    }
    if (ndead > 0) {
        size_t w = 0;
        for (size_t i = 0; i < c->n; i++)
            if (!dead[i])
                c->e[w++] = c->e[i];
        c->n = w;
    }
    free(ie);
    free(ig);
    free(dead);
    return ST_OK;
}

static int load(struct idx_catalog *c, const char *path, struct st_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = store_fs_read_all(path, &buf, &len, 64u << 20);
    if (rc == ST_ENOTFOUND)
        return ST_OK;
    if (rc != ST_OK)
        return st_err_set(err, rc, "%s: cannot read: %s", path, st_strerror(rc));
    if ((rc = check_sum(buf, len, path, err)) != ST_OK) {
        free(buf);
        return rc;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)buf, len, 0, &je);
    free(buf);
    json_t *ents = json_object_get(j, "entries"), *gone = json_object_get(j, "gone");
    json_t *units = json_object_get(j, "units");
    if (j == NULL || !json_is_array(ents) || !json_is_array(gone) ||
        (units != NULL && !json_is_array(units)) ||
        json_integer_value(json_object_get(j, "format")) != CATALOG_FORMAT) {
        json_decref(j);
        return st_err_set(err, ST_ECORRUPT, "%s: not an indexer catalog (format %d)%s%s", path,
                          CATALOG_FORMAT, j == NULL ? ": " : "", j == NULL ? je.text : "");
    }
    c->next_unit = 1;
    json_int_t next = json_integer_value(json_object_get(j, "next_unit"));
    if (next > 0 && (uint64_t)next <= IDX_UNIT_ID_MAX)
        c->next_unit = (uint64_t)next;
    else if (next != 0) {
        json_decref(j);
        return st_err_set(err, ST_ECORRUPT, "%s: next_unit %" PRId64 " is out of range", path,
                          (int64_t)next);
    }
    rc = units != NULL ? load_units(c, path, units, err) : ST_OK;
    struct unit_ix *ux = NULL;
    if (rc == ST_OK && (ux = malloc((c->nunits ? c->nunits : 1) * sizeof(*ux))) == NULL)
        rc = ST_ENOMEM;
    for (size_t k = 0; rc == ST_OK && k < c->nunits; k++)
        ux[k] = (struct unit_ix){c->units[k].id, k};
    if (rc == ST_OK)
        qsort(ux, c->nunits, sizeof(*ux), unit_ix_cmp);
    size_t ne = json_array_size(ents), ng = json_array_size(gone), i;
    if (rc == ST_OK && ne > 0) {
        if ((c->e = calloc(ne, sizeof(*c->e))) == NULL)
            rc = ST_ENOMEM;
        else
            c->cap = ne;
    }
    json_t *o;
    json_array_foreach(ents, i, o)
    {
        if (rc != ST_OK)
            break;
        struct idx_cat_entry *e = &c->e[c->n];
        if (!parse_entry(o, e) || (e->unit != 0 && unit_by_id(c, ux, e->unit) == NULL)) {
            rc = st_err_set(err, ST_ECORRUPT, "%s: entry %zu is malformed", path, i);
            break;
        }
        c->n++;
    }
    if (rc == ST_OK)
        rc = dedupe(c->e, &c->n, false);
    if (rc == ST_OK)
        rc = check_membership(c, ux, path, err);
    free(ux);
    if (rc == ST_OK && ng > 0) {
        if ((c->gone = calloc(ng, sizeof(*c->gone))) == NULL)
            rc = ST_ENOMEM;
        else
            c->capgone = ng;
    }
    json_array_foreach(gone, i, o)
    {
        const char *node = json_string_value(json_object_get(o, "node"));
        if (rc != ST_OK)
            break;
        if (node == NULL || !idx_node_id_ok(node)) {
            rc = st_err_set(err, ST_ECORRUPT, "%s: gone %zu is malformed", path, i);
            break;
        }
        struct idx_cat_gone *g = &c->gone[c->ngone++];
        strcpy(g->node, node);
        g->start = json_integer_value(json_object_get(o, "start"));
        g->version = (uint32_t)json_integer_value(json_object_get(o, "version"));
    }
    if (rc == ST_OK)
        rc = dedupe(c->gone, &c->ngone, true);
    if (rc == ST_OK)
        rc = drop_expired(c, path);
    json_decref(j);
    return rc;
}

int idx_catalog_open(const char *dir, struct idx_catalog **out, struct st_err *err)
{
    *out = NULL;
    struct idx_catalog *c = calloc(1, sizeof(*c));
    char *path = NULL;
    if (c == NULL || (c->dir = strdup(dir)) == NULL || asprintf(&path, "%s/CATALOG", dir) < 0) {
        idx_catalog_free(c);
        return ST_ENOMEM;
    }
    c->next_unit = 1;
    int rc = store_fs_mkdir(NULL, dir, "idx.catalog.mkdir");
    if (rc != ST_OK)
        st_err_set(err, rc, "%s: cannot create: %s", dir, st_strerror(rc));
    else
        rc = load(c, path, err);
    free(path);
    if (rc != ST_OK) {
        idx_catalog_free(c);
        return rc;
    }
    *out = c;
    return ST_OK;
}

void idx_catalog_free(struct idx_catalog *c)
{
    if (c == NULL)
        return;
    free(c->dir);
    free(c->e);
    free(c->gone);
    for (size_t i = 0; i < c->nunits; i++)
        free(c->units[i].mem);
    free(c->units);
    free(c);
}

struct idx_cat_unit *idx_catalog_unit(struct idx_catalog *c, uint64_t id)
{
    for (size_t i = 0; i < c->nunits; i++)
        if (c->units[i].id == id)
            return &c->units[i];
    return NULL;
}

static int unit_dup(const struct idx_cat_unit *u, struct idx_cat_unit *out)
{
    *out = *u;
    out->mem = malloc((u->nmem ? u->nmem : 1) * sizeof(*out->mem));
    if (out->mem == NULL)
        return ST_ENOMEM;
    memcpy(out->mem, u->mem, u->nmem * sizeof(*out->mem));
    return ST_OK;
}

int idx_catalog_take_unit_id(struct idx_catalog *c, uint64_t *id)
{
    if (c->next_unit >= IDX_UNIT_ID_MAX)
        return ST_ERANGE;
    *id = c->next_unit++;
    return ST_OK;
}

int idx_catalog_unit_put(struct idx_catalog *c, const struct idx_cat_unit *u)
{
    struct idx_cat_unit copy;
    if (u->id == 0 || unit_dup(u, &copy) != ST_OK)
        return u->id == 0 ? ST_EINVAL : ST_ENOMEM;
    struct idx_cat_unit *x = idx_catalog_unit(c, u->id);
    if (x != NULL) {
        free(x->mem);
        *x = copy;
        return ST_OK;
    }
    if (c->nunits == c->capunits) {
        size_t cap = c->capunits ? 2 * c->capunits : 4;
        struct idx_cat_unit *nu = realloc(c->units, cap * sizeof(*nu));
        if (nu == NULL) {
            free(copy.mem);
            return ST_ENOMEM;
        }
        c->units = nu;
        c->capunits = cap;
    }
    c->units[c->nunits++] = copy;
    if (u->id >= c->next_unit)
        c->next_unit = u->id + 1;
    return ST_OK;
}

void idx_catalog_unit_del(struct idx_catalog *c, uint64_t id)
{
    struct idx_cat_unit *x = idx_catalog_unit(c, id);
    if (x != NULL) {
        free(x->mem);
        *x = c->units[--c->nunits];
    }
}

int idx_catalog_unit_copy(const struct idx_catalog *c, uint64_t id, struct idx_cat_unit *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < c->nunits; i++)
        if (c->units[i].id == id)
            return unit_dup(&c->units[i], out);
    return ST_ENOTFOUND;
}

void idx_catalog_unit_free(struct idx_cat_unit *u)
{
    free(u->mem);
    u->mem = NULL;
    u->nmem = 0;
}

bool idx_catalog_member_live(const struct idx_catalog *c, uint64_t id,
                             const struct idx_cat_entry *m)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].start == m->start && strcmp(c->e[i].node, m->node) == 0)
            return c->e[i].unit == id && c->e[i].version == m->version;
    return false;
}

struct idx_cat_entry *idx_catalog_find(struct idx_catalog *c, const char *node, int64_t start)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].start == start && strcmp(c->e[i].node, node) == 0)
            return &c->e[i];
    return NULL;
}

int idx_catalog_put(struct idx_catalog *c, const struct idx_cat_entry *e)
{
    struct idx_cat_entry *x = idx_catalog_find(c, e->node, e->start);
    if (x != NULL) {
        *x = *e;
        return ST_OK;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        struct idx_cat_entry *ne = realloc(c->e, cap * sizeof(*ne));
        if (ne == NULL)
            return ST_ENOMEM;
        c->e = ne;
        c->cap = cap;
    }
    c->e[c->n++] = *e;
    return ST_OK;
}

void idx_catalog_del(struct idx_catalog *c, const char *node, int64_t start)
{
    struct idx_cat_entry *x = idx_catalog_find(c, node, start);
    if (x != NULL)
        *x = c->e[--c->n];
}

int idx_catalog_mark_gone(struct idx_catalog *c, const char *node, int64_t start, uint32_t version)
{
    for (size_t i = 0; i < c->ngone; i++) {
        struct idx_cat_gone *g = &c->gone[i];
        if (g->start == start && strcmp(g->node, node) == 0) {
            if (version > g->version)
                g->version = version;
            return ST_OK;
        }
    }
    if (strlen(node) > IDX_NODE_MAX)
        return ST_EINVAL;
    if (c->ngone == c->capgone) {
        size_t cap = c->capgone ? 2 * c->capgone : 16;
        struct idx_cat_gone *ng = realloc(c->gone, cap * sizeof(*ng));
        if (ng == NULL)
            return ST_ENOMEM;
        c->gone = ng;
        c->capgone = cap;
    }
    struct idx_cat_gone *g = &c->gone[c->ngone++];
    memset(g, 0, sizeof(*g));
    strcpy(g->node, node);
    g->start = start;
    g->version = version;
    return ST_OK;
}

bool idx_catalog_is_gone(const struct idx_catalog *c, const char *node, int64_t start,
                         uint32_t version)
{
    for (size_t i = 0; i < c->ngone; i++)
        if (c->gone[i].start == start && strcmp(c->gone[i].node, node) == 0)
            return version <= c->gone[i].version;
    return false;
}

bool idx_catalog_gone_at(const struct idx_catalog *c, const char *node, int64_t start,
                         uint32_t *version)
{
    for (size_t i = 0; i < c->ngone; i++) {
        if (c->gone[i].start == start && strcmp(c->gone[i].node, node) == 0) {
            *version = c->gone[i].version;
            return true;
        }
    }
    return false;
}

void idx_catalog_restore_gone(struct idx_catalog *c, const char *node, int64_t start, bool had,
                              uint32_t version)
{
    for (size_t i = 0; i < c->ngone; i++) {
        if (c->gone[i].start == start && strcmp(c->gone[i].node, node) == 0) {
            if (had)
                c->gone[i].version = version;
            else
                c->gone[i] = c->gone[--c->ngone];
            return;
        }
    }
}

static json_t *entry_json(const struct idx_cat_entry *e)
{
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:b,s:I,s:I,s:s,s:I}", "node", e->node,
                     "start", (json_int_t)e->start, "end", (json_int_t)e->end, "version",
                     (json_int_t)e->version, "records", (json_int_t)e->records, "bytes",
                     (json_int_t)e->bytes, "checksum", (json_int_t)e->checksum, "index", e->index,
                     "cold", e->cold, "sealed_ms", (json_int_t)e->sealed_ms, "indexed_ms",
                     (json_int_t)e->indexed_ms, "url", e->url, "unit", (json_int_t)e->unit);
}

int idx_catalog_save(struct idx_catalog *c, struct st_err *err)
{
    json_t *ents = json_array(), *gone = json_array();
    json_t *units = json_array();
    for (size_t i = 0; i < c->n; i++)
        json_array_append_new(ents, entry_json(&c->e[i]));
    for (size_t i = 0; i < c->nunits; i++) {
        const struct idx_cat_unit *u = &c->units[i];
        json_t *mem = json_array();
        for (size_t k = 0; k < u->nmem; k++)
            json_array_append_new(mem, entry_json(&u->mem[k]));
        json_array_append_new(
            units, json_pack("{s:I,s:I,s:I,s:I,s:I,s:s,s:b,s:I,s:o}", "id", (json_int_t)u->id,
                             "start", (json_int_t)u->e.start, "end", (json_int_t)u->e.end,
                             "generation", (json_int_t)u->e.version, "records",
                             (json_int_t)u->e.records, "index", u->e.index, "cold", u->e.cold,
                             "indexed_ms", (json_int_t)u->e.indexed_ms, "members", mem));
    }
    for (size_t i = 0; i < c->ngone; i++)
        json_array_append_new(gone, json_pack("{s:s,s:I,s:I}", "node", c->gone[i].node, "start",
                                              (json_int_t)c->gone[i].start, "version",
                                              (json_int_t)c->gone[i].version));
    json_t *j = json_pack("{s:i,s:o,s:o,s:o,s:I}", "format", CATALOG_FORMAT, "entries", ents,
                          "gone", gone, "units", units, "next_unit", (json_int_t)c->next_unit);
    /* The sum's key appended by hand after the object's last member (its spelling is the
     * reader's, whatever jansson's dump flags), its digits zero; then the sum of the whole
     * text written into them. */
    char *json = j != NULL ? json_dumps(j, JSON_INDENT(1)) : NULL, *text = NULL;
    json_decref(j);
    size_t jl = json != NULL ? strlen(json) : 0;
    while (jl > 0 && json[jl - 1] != '}')
        jl--;
    size_t body = jl > 0 ? jl - 1 : 0; /* up to the last member, without the space before } */
    while (body > 0 && (json[body - 1] == '\n' || json[body - 1] == ' '))
        body--;
    if (body > 0 &&
        asprintf(&text, "%.*s,\n " CATALOG_SUM_KEY "00000000\"\n}", (int)body, json) < 0)
        text = NULL;
    free(json);
    if (text != NULL) {
        size_t tl = strlen(text);
        char hex[9];
        snprintf(hex, sizeof(hex), "%08" PRIx32, st_checksum32(text, tl));
        memcpy(text + tl - 11, hex, 8); /* the digits: before `"\n}` */
    }
    char *path = NULL, *tmp = NULL;
    struct store_file *f = NULL;
    int rc = ST_ENOMEM;
    if (text == NULL || asprintf(&path, "%s/CATALOG", c->dir) < 0 ||
        asprintf(&tmp, "%s/CATALOG.tmp", c->dir) < 0)
        goto out;
    st_best_effort(store_fs_unlink(NULL, tmp, "idx.catalog.unlink_stale"));
    if ((rc = store_fs_create(NULL, tmp, &f, "idx.catalog.create")) == ST_OK &&
        (rc = store_fs_write(f, text, strlen(text), "idx.catalog.write")) == ST_OK &&
        (rc = store_fs_sync(f, "idx.catalog.fsync")) == ST_OK &&
        (rc = store_fs_rename(NULL, tmp, path, "idx.catalog.rename")) == ST_OK)
        rc = store_fs_sync_dir(NULL, c->dir, "idx.catalog.sync_dir");
out:
    store_fs_close(f);
    if (rc != ST_OK)
        st_err_set(err, rc, "%s/CATALOG: cannot write: %s", c->dir, st_strerror(rc));
    free(text);
    free(path);
    free(tmp);
    return rc;
}

char *idx_catalog_seg_path(const struct idx_catalog *c, const char *node, int64_t start,
                           uint32_t version)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s@%" PRId64 "@v%" PRIu32 ".seg", c->dir, node, start, version) < 0
               ? NULL
               : p;
}

char *idx_catalog_index_path(const struct idx_catalog *c, const char *node, int64_t start,
                             uint32_t version, const char *index, bool cold)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s@%" PRId64 "@v%" PRIu32 ".%s%s", c->dir, node, start, version,
                    cold ? "cold." : "", index) < 0
               ? NULL
               : p;
}

char *idx_catalog_unit_path(const struct idx_catalog *c, uint64_t id, uint32_t generation,
                            const char *index, bool cold)
{
    char *p = NULL;
    return asprintf(&p, "%s/unit-%" PRIu64 "@g%" PRIu32 ".%s%s", c->dir, id, generation,
                    cold ? "cold." : "", index) < 0
               ? NULL
               : p;
}

static bool is_seg_of(const struct idx_cat_entry *e, const char *name)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s@%" PRId64 "@v%" PRIu32 ".seg", e->node, e->start, e->version);
    return strcmp(buf, name) == 0;
}

/* Is name one of the catalog's files? An entry served by a unit keeps its segment copy only;
 * a unit keeps every member's (dead ones too: its index has their vectors) and its index. */
static bool named(const struct idx_catalog *c, const char *name)
{
    if (strcmp(name, "CATALOG") == 0)
        return true;
    for (size_t i = 0; i < c->n; i++) {
        const struct idx_cat_entry *e = &c->e[i];
        char buf[256];
        if (is_seg_of(e, name))
            return true;
        snprintf(buf, sizeof(buf), "%s@%" PRId64 "@v%" PRIu32 ".%s%s", e->node, e->start,
                 e->version, e->cold ? "cold." : "", e->index);
        if (e->unit == 0 && strcmp(buf, name) == 0)
            return true;
    }
    for (size_t i = 0; i < c->nunits; i++) {
        const struct idx_cat_unit *u = &c->units[i];
        char buf[256];
        snprintf(buf, sizeof(buf), "unit-%" PRIu64 "@g%" PRIu32 ".%s%s", u->id, u->e.version,
                 u->e.cold ? "cold." : "", u->e.index);
        if (strcmp(buf, name) == 0)
            return true;
        for (size_t k = 0; k < u->nmem; k++)
            if (is_seg_of(&u->mem[k], name))
                return true;
    }
    return false;
}

size_t idx_catalog_sweep(const struct idx_catalog *c)
{
    size_t removed = 0;
    DIR *d = opendir(c->dir);
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.' || named(c, de->d_name))
            continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", c->dir, de->d_name) < 0)
            continue;
        st_log_info("indexer", "removing leftover file=%s", p);
        if (store_fs_unlink(NULL, p, "idx.catalog.sweep") == ST_OK)
            removed++;
        free(p);
    }
    if (d != NULL)
        closedir(d);
    if (removed > 0)
        st_best_effort(store_fs_sync_dir(NULL, c->dir, "idx.catalog.sweep_sync"));
    return removed;
}
