/*
 * YAML → struct cfg. Parsing uses libyaml's document API so that every node keeps its
 * start mark; errors are "FILE:LINE:COL: key.path: message" with 1-based positions.
 */
#include "cfg_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- errors ------------------------------------------------------------------------------ */

static void errors_add(struct cfg_errors *errs, char *line)
{
    if (errs == NULL) {
        free(line);
        return;
    }
    if (errs->n == errs->cap) {
        size_t cap = errs->cap ? errs->cap * 2 : 8;
        char **l = realloc(errs->lines, cap * sizeof(*l));
        if (l == NULL) {
            free(line);
            return;
        }
        errs->lines = l;
        errs->cap = cap;
    }
    errs->lines[errs->n++] = line;
}

static void errors_addf(struct cfg_errors *errs, const char *fmt, ...) ST_PRINTF(2, 3);
static void errors_addf(struct cfg_errors *errs, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    if (vasprintf(&line, fmt, ap) < 0)
        line = NULL;
    va_end(ap);
    if (line != NULL)
        errors_add(errs, line);
}

void cfg_errors_clear(struct cfg_errors *errs)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->lines[i]);
    free(errs->lines);
    errs->lines = NULL;
    errs->n = errs->cap = 0;
}

void cfg_errors_print(const struct cfg_errors *errs, FILE *f)
{
    for (size_t i = 0; errs != NULL && i < errs->n; i++)
        fprintf(f, "%s\n", errs->lines[i]);
}

void cfg_ld_error(struct cfg_ld *ld, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t line = n ? n->start_mark.line + 1 : 1, col = n ? n->start_mark.column + 1 : 1;
    if (path != NULL && *path != '\0')
        errors_addf(ld->errs, "%s:%zu:%zu: %s: %s", ld->file, line, col, path, msg);
    else
        errors_addf(ld->errs, "%s:%zu:%zu: %s", ld->file, line, col, msg);
    ld->nerr++;
}

/* ---- scalars and ${ENV} ------------------------------------------------------------------ */

static bool scalar_is_null(const yaml_node_t *n)
{
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static bool sbuf_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

/*
 * Expands ${NAME} and ${NAME:-default}; "$${" is a literal "${". An unset NAME without a
 * default is an error: silently substituting "" would hide a broken deployment.
 */
static char *expand_env(struct cfg_ld *ld, const yaml_node_t *n, const char *path, const char *in)
{
    struct sbuf b = {0};
    if (!sbuf_put(&b, "", 0))
        goto oom;
    const char *p = in;
    while (*p != '\0') {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            if (!sbuf_put(&b, "${", 2))
                goto oom;
            p += 3;
            continue;
        }
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            if (end == NULL) {
                cfg_ld_error(ld, n, path, "unterminated ${ in \"%s\"", in);
                goto fail;
            }
            char name[256];
            size_t nl = (size_t)(end - (p + 2));
            if (nl == 0 || nl >= sizeof(name)) {
                cfg_ld_error(ld, n, path, "bad ${...} reference in \"%s\"", in);
                goto fail;
            }
            memcpy(name, p + 2, nl);
            name[nl] = '\0';
            const char *def = NULL;
            char *sep = strstr(name, ":-");
            if (sep != NULL) {
                *sep = '\0';
                def = sep + 2;
            }
            for (const char *q = name; *q; q++) {
                if (!(*q == '_' || (*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') ||
                      (q != name && *q >= '0' && *q <= '9'))) {
                    cfg_ld_error(ld, n, path, "bad environment variable name '%s'", name);
                    goto fail;
                }
            }
            const char *val = getenv(name);
            if (val == NULL || (*val == '\0' && def != NULL))
                val = def;
            if (val == NULL) {
                cfg_ld_error(ld, n, path, "environment variable '%s' is not set", name);
                goto fail;
            }
            if (!sbuf_put(&b, val, strlen(val)))
                goto oom;
            p = end + 1;
            continue;
        }
        if (!sbuf_put(&b, p, 1))
            goto oom;
        p++;
    }
    return b.p;
oom:
    cfg_ld_error(ld, n, path, "out of memory");
fail:
    free(b.p);
    return NULL;
}

char *cfg_scalar(struct cfg_ld *ld, yaml_node_t *n, const char *path, bool *is_null)
{
    *is_null = false;
    if (n->type != YAML_SCALAR_NODE) {
        cfg_ld_error(ld, n, path, "expected a scalar value, got a %s",
                     n->type == YAML_MAPPING_NODE ? "mapping" : "sequence");
        return NULL;
    }
    if (scalar_is_null(n)) {
        *is_null = true;
        return NULL;
    }
    return expand_env(ld, n, path, (const char *)n->data.scalar.value);
}

char *cfg_scalar_nonnull(struct cfg_ld *ld, yaml_node_t *n, const char *path)
{
    bool is_null;
    char *s = cfg_scalar(ld, n, path, &is_null);
    if (s == NULL && is_null)
        cfg_ld_error(ld, n, path, "must not be null");
    return s;
}

void cfg_path_join(char *dst, const char *path, const char *key)
{
    if (path == NULL || *path == '\0')
        snprintf(dst, CFG_PATH_MAX, "%s", key);
    else
        snprintf(dst, CFG_PATH_MAX, "%s.%s", path, key);
}

yaml_node_t *cfg_mapping_get(struct cfg_ld *ld, yaml_node_t *n, const char *key)
{
    if (n == NULL || n->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pr->key);
        if (k != NULL && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(ld->doc, pr->value);
    }
    return NULL;
}

/* ---- typed fields ------------------------------------------------------------------------ */

static const char *plain_kind(const yaml_node_t *n)
{
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? "" : "quoted ";
}

static void parse_field(struct cfg_ld *ld, const struct cfg_field *f, yaml_node_t *v,
                        const char *path, void *base)
{
    char *fp = (char *)base + f->off;
    if (f->type == CFG_F_SECTION) {
        if (v->type == YAML_SCALAR_NODE && scalar_is_null(v) && f->nullable)
            return;
        cfg_walk_mapping(ld, v, path, f->sub, base);
        return;
    }
    if (f->type == CFG_F_CUSTOM) {
        f->custom(ld, v, path, base);
        return;
    }
    bool is_null;
    char *s = cfg_scalar(ld, v, path, &is_null);
    if (s == NULL) {
        if (is_null && !f->nullable)
            cfg_ld_error(ld, v, path, "must not be null");
        return;
    }
    switch (f->type) {
    case CFG_F_STRING: {
        const char *bad = NULL;
        if (*s == '\0')
            bad = "must not be empty";
        else if (f->check != NULL)
            bad = f->check(s);
        if (bad != NULL) {
            cfg_ld_error(ld, v, path, "%s (got \"%s\")", bad, s);
            break;
        }
        char **dst = (char **)(void *)fp;
        free(*dst);
        *dst = s;
        s = NULL;
        break;
    }
    case CFG_F_DURATION: {
        int64_t ms;
        int rc = cfg_parse_duration_ms(s, &ms);
        if (rc == ST_ERANGE) {
            cfg_ld_error(ld, v, path, "duration \"%s\" is too large", s);
        } else if (rc != ST_OK) {
            cfg_ld_error(ld, v, path,
                         "expected a duration such as 500ms, 30s, 5m, 1h or 30d, got %s\"%s\"",
                         plain_kind(v), s);
        } else if (ms < f->min || ms > f->max) {
            cfg_ld_error(ld, v, path, "duration %s is out of range (%lldms..%lldms)", s,
                         (long long)f->min, (long long)f->max);
        } else {
            *(int64_t *)(void *)fp = ms;
        }
        break;
    }
    case CFG_F_SIZE: {
        uint64_t sz;
        int rc = cfg_parse_size(s, &sz);
        if (rc == ST_ERANGE) {
            cfg_ld_error(ld, v, path, "size \"%s\" is too large", s);
        } else if (rc != ST_OK) {
            cfg_ld_error(ld, v, path,
                         "expected a size such as 4096, 512KiB, 64MiB or 50GiB, got \"%s\"%s", s,
                         strpbrk(s, "KMGT") && strchr(s, 'i') == NULL
                             ? " (sizes are binary: KiB, MiB, GiB, TiB)"
                             : "");
        } else if ((int64_t)sz < f->min || (f->max > 0 && sz > (uint64_t)f->max)) {
            cfg_ld_error(ld, v, path, "size %s is out of range (%lld..%lld bytes)", s,
                         (long long)f->min, (long long)f->max);
        } else {
            *(uint64_t *)(void *)fp = sz;
        }
        break;
    }
    case CFG_F_U32: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || *s == '-' || *s == '+' || end == s ||
            *end != '\0') {
            cfg_ld_error(ld, v, path, "expected an integer, got %s\"%s\"", plain_kind(v), s);
        } else if (errno == ERANGE || x < (unsigned long long)f->min ||
                   x > (unsigned long long)f->max) {
            cfg_ld_error(ld, v, path, "%s is out of range (%lld..%lld)", s, (long long)f->min,
                         (long long)f->max);
        } else {
            *(uint32_t *)(void *)fp = (uint32_t)x;
        }
        break;
    }
    case CFG_F_ENUM: {
        const struct cfg_enum_opt *o = f->opts;
        for (; o->name != NULL; o++)
            if (strcmp(o->name, s) == 0)
                break;
        if (o->name == NULL) {
            char allowed[256] = "";
            for (const struct cfg_enum_opt *a = f->opts; a->name != NULL; a++) {
                if (a != f->opts)
                    strncat(allowed, " | ", sizeof(allowed) - strlen(allowed) - 1);
                strncat(allowed, a->name, sizeof(allowed) - strlen(allowed) - 1);
            }
            cfg_ld_error(ld, v, path, "\"%s\" is not one of %s", s, allowed);
        } else {
            *(int *)(void *)fp = o->value;
        }
        break;
    }
    default:
        cfg_ld_error(ld, v, path, "internal error: bad field type");
        break;
    }
    free(s);
}

void cfg_walk_mapping(struct cfg_ld *ld, yaml_node_t *n, const char *path,
                      const struct cfg_field *fields, void *base)
{
    if (n->type != YAML_MAPPING_NODE) {
        cfg_ld_error(ld, n, path, "expected a mapping, got a %s",
                     n->type == YAML_SCALAR_NODE ? "scalar" : "sequence");
        return;
    }
    if (++ld->depth > CFG_MAX_DEPTH) {
        cfg_ld_error(ld, n, path, "nesting too deep");
        ld->depth--;
        return;
    }
    size_t nfields = 0;
    while (fields[nfields].key != NULL)
        nfields++;
    uint64_t seen = 0;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(ld->doc, pr->value);
        if (k == NULL || v == NULL)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            cfg_ld_error(ld, k, path, "keys must be plain strings");
            continue;
        }
        const char *key = (const char *)k->data.scalar.value;
        char kp[CFG_PATH_MAX];
        cfg_path_join(kp, path, key);
        size_t i = 0;
        while (i < nfields && strcmp(fields[i].key, key) != 0)
            i++;
        if (i == nfields) {
            char known[512] = "";
            for (size_t j = 0; j < nfields; j++) {
                if (j > 0)
                    strncat(known, ", ", sizeof(known) - strlen(known) - 1);
                strncat(known, fields[j].key, sizeof(known) - strlen(known) - 1);
            }
            cfg_ld_error(ld, k, kp, "unknown key (expected one of: %s)", known);
            continue;
        }
        if (seen & (1ull << i)) {
            cfg_ld_error(ld, k, kp, "duplicate key");
            continue;
        }
        seen |= 1ull << i;
        parse_field(ld, &fields[i], v, kp, base);
    }
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].required && !(seen & (1ull << i)))
            cfg_ld_error(ld, n, path, "missing required key '%s'", fields[i].key);
    }
    ld->depth--;
}

/* ---- entry points ------------------------------------------------------------------------ */

int cfg_load_string(const char *name, const char *text, size_t len, struct cfg **out,
                    struct cfg_errors *errs)
{
    *out = NULL;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_doc = false;
    int rc = ST_EINVAL;
    struct cfg_ld ld = {.file = name, .doc = &doc, .errs = errs};
    struct cfg *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return ST_ENOMEM;
    if (!yaml_parser_initialize(&parser)) {
        free(c);
        return ST_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        errors_addf(errs, "%s:%zu:%zu: YAML syntax error: %s%s%s", name,
                    parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                    parser.problem ? parser.problem : "unknown problem", parser.context ? " " : "",
                    parser.context ? parser.context : "");
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        errors_addf(errs, "%s:1:1: the configuration is empty", name);
        goto out;
    }
    c->path = strdup(name);
    if (c->path == NULL) {
        rc = ST_ENOMEM;
        goto out;
    }
    cfg_set_defaults(c);
    cfg_walk_mapping(&ld, root, "", cfg_top_fields, c);
    if (ld.nerr == 0)
        cfg_validate(&ld, root, c);
    if (ld.nerr == 0) {
        /* A second document is almost certainly a mistake (a stray "---"). */
        yaml_document_t extra;
        if (yaml_parser_load(&parser, &extra)) {
            yaml_node_t *r2 = yaml_document_get_root_node(&extra);
            if (r2 != NULL)
                cfg_ld_error(&ld, r2, "", "a second YAML document; strata reads exactly one");
            yaml_document_delete(&extra);
        }
    }
    if (ld.nerr == 0) {
        *out = c;
        c = NULL;
        rc = ST_OK;
    }
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    cfg_free(c);
    return rc;
}

int cfg_load(const char *path, struct cfg **out, struct cfg_errors *errs)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        errors_addf(errs, "%s:1:1: cannot open: %s", path, strerror(errno));
        return ST_EIO;
    }
    char *buf = malloc(CFG_MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return ST_ENOMEM;
    }
    size_t n = fread(buf, 1, CFG_MAX_FILE + 1, f);
    int rerr = ferror(f);
    fclose(f);
    int rc;
    if (rerr) {
        errors_addf(errs, "%s:1:1: read error", path);
        rc = ST_EIO;
    } else if (n > CFG_MAX_FILE) {
        errors_addf(errs, "%s:1:1: file is larger than %u bytes", path, CFG_MAX_FILE);
        rc = ST_EINVAL;
    } else {
        rc = cfg_load_string(path, buf, n, out, errs);
    }
    free(buf);
    return rc;
}

void cfg_free(struct cfg *c)
{
    if (c == NULL)
        return;
    free(c->path);
    free(c->node_id);
    free(c->data_dir);
    free(c->kafka.brokers);
    free(c->kafka.group_id);
    free(c->kafka.dead_letter_topic);
    for (size_t i = 0; i < c->kafka.n_properties; i++) {
        free(c->kafka.properties[i].key);
        free(c->kafka.properties[i].value);
    }
    free(c->kafka.properties);
    free(c->nats.url);
    free(c->nats.stream);
    free(c->nats.user);
    free(c->nats.password);
    free(c->nats.token);
    free(c->nats.creds_file);
    free(c->nats.tls_ca_file);
    free(c->nats.tls_cert_file);
    free(c->nats.tls_key_file);
    free(c->nats.tls_server_name);
    for (size_t i = 0; i < c->n_collections; i++) {
        free(c->collections[i].name);
        free(c->collections[i].topic);
        free(c->collections[i].dead_letter_topic);
    }
    free(c->collections);
    free(c->ingest.listen);
    free(c->ingest.advertise_url);
    free(c->indexer.listen);
    for (size_t i = 0; i < c->indexer.n_ingest_nodes; i++)
        free(c->indexer.ingest_nodes[i]);
    free(c->indexer.ingest_nodes);
    free(c->http.auth_token_file);
    free(c);
}

const struct cfg_collection *cfg_collection_find(const struct cfg *c, const char *name)
{
    for (size_t i = 0; i < c->n_collections; i++)
        if (strcmp(c->collections[i].name, name) == 0)
            return &c->collections[i];
    return NULL;
}
