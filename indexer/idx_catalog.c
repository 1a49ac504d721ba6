/* idx_catalog.c — the indexer's durable catalog (idx_catalog.h). */
#include "idx_catalog.h"

#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"
#include "store_fs.h"

#define CATALOG_FORMAT 1

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

static int load(struct idx_catalog *c, const char *path, struct st_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = store_fs_read_all(path, &buf, &len, 64u << 20);
    if (rc == ST_ENOTFOUND)
        return ST_OK;
    if (rc != ST_OK)
        return st_err_set(err, rc, "%s: cannot read: %s", path, st_strerror(rc));
    json_error_t je;
    json_t *j = json_loadb((const char *)buf, len, 0, &je);
    free(buf);
    json_t *ents = json_object_get(j, "entries"), *gone = json_object_get(j, "gone");
    if (j == NULL || !json_is_array(ents) || !json_is_array(gone) ||
        json_integer_value(json_object_get(j, "format")) != CATALOG_FORMAT) {
        json_decref(j);
        return st_err_set(err, ST_ECORRUPT, "%s: not an indexer catalog (format %d)%s%s", path,
                          CATALOG_FORMAT, j == NULL ? ": " : "", j == NULL ? je.text : "");
    }
    size_t i;
    json_t *o;
    rc = ST_OK;
    json_array_foreach(ents, i, o)
    {
        struct idx_cat_entry e = {0};
        const char *node = json_string_value(json_object_get(o, "node"));
        const char *ix = json_string_value(json_object_get(o, "index"));
        if (node == NULL || !idx_node_id_ok(node) || ix == NULL ||
            (strcmp(ix, "hnsw") != 0 && strcmp(ix, "ivfpq") != 0)) {
            rc = st_err_set(err, ST_ECORRUPT, "%s: entry %zu is malformed", path, i);
            break;
        }
        strcpy(e.node, node);
        strcpy(e.index, ix);
        e.start = json_integer_value(json_object_get(o, "start"));
        e.end = json_integer_value(json_object_get(o, "end"));
        e.version = (uint32_t)json_integer_value(json_object_get(o, "version"));
        e.records = (uint64_t)json_integer_value(json_object_get(o, "records"));
        e.bytes = (uint64_t)json_integer_value(json_object_get(o, "bytes"));
        e.checksum = (uint32_t)json_integer_value(json_object_get(o, "checksum"));
        e.cold = json_is_true(json_object_get(o, "cold"));
        e.sealed_ms = json_integer_value(json_object_get(o, "sealed_ms"));
        e.indexed_ms = json_integer_value(json_object_get(o, "indexed_ms"));
        const char *url = json_string_value(json_object_get(o, "url"));
        snprintf(e.url, sizeof(e.url), "%s", url != NULL ? url : "");
        if ((rc = idx_catalog_put(c, &e)) != ST_OK)
            break;
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
        rc = idx_catalog_mark_gone(c, node, json_integer_value(json_object_get(o, "start")),
                                   (uint32_t)json_integer_value(json_object_get(o, "version")));
    }
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
    free(c);
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

int idx_catalog_save(struct idx_catalog *c, struct st_err *err)
{
    json_t *ents = json_array(), *gone = json_array();
    for (size_t i = 0; i < c->n; i++) {
        const struct idx_cat_entry *e = &c->e[i];
        json_array_append_new(
            ents, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:b,s:I,s:I,s:s}", "node", e->node,
                            "start", (json_int_t)e->start, "end", (json_int_t)e->end, "version",
                            (json_int_t)e->version, "records", (json_int_t)e->records, "bytes",
                            (json_int_t)e->bytes, "checksum", (json_int_t)e->checksum, "index",
                            e->index, "cold", e->cold, "sealed_ms", (json_int_t)e->sealed_ms,
                            "indexed_ms", (json_int_t)e->indexed_ms, "url", e->url));
    }
    for (size_t i = 0; i < c->ngone; i++)
        json_array_append_new(gone, json_pack("{s:s,s:I,s:I}", "node", c->gone[i].node, "start",
                                              (json_int_t)c->gone[i].start, "version",
                                              (json_int_t)c->gone[i].version));
    json_t *j = json_pack("{s:i,s:o,s:o}", "format", CATALOG_FORMAT, "entries", ents, "gone", gone);
    char *text = j != NULL ? json_dumps(j, JSON_INDENT(1)) : NULL;
    json_decref(j);
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

/* Is name one of the catalog's files? */
static bool named(const struct idx_catalog *c, const char *name)
{
    if (strcmp(name, "CATALOG") == 0)
        return true;
    for (size_t i = 0; i < c->n; i++) {
        const struct idx_cat_entry *e = &c->e[i];
        char buf[256];
        snprintf(buf, sizeof(buf), "%s@%" PRId64 "@v%" PRIu32 ".seg", e->node, e->start,
                 e->version);
        if (strcmp(buf, name) == 0)
            return true;
        snprintf(buf, sizeof(buf), "%s@%" PRId64 "@v%" PRIu32 ".%s%s", e->node, e->start,
                 e->version, e->cold ? "cold." : "", e->index);
        if (strcmp(buf, name) == 0)
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
