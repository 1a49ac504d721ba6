/*
 * Tests that keep the operator's documentation true to the code, so it cannot drift:
 *
 *   - docs/config.md's key table lists exactly the keys the loader accepts (cfg_keys(), taken
 *     from the loader's own schema tables), both ways;
 *   - every ```yaml block in README.md, docs/config.md and docs/operations.md loads with the
 *     real loader; the "every key" example sets every accepted key; the SPEC.md §6 example in
 *     docs/config.md is byte for byte tests/config/spec_sample.yaml;
 *   - the Grafana dashboard parses, and every metric its PromQL uses is one the daemons
 *     export (names read from the C sources of common/, ingest/ and indexer/ at test time; a
 *     _bucket/_sum/_count series only for a histogram); the same for every `strata_*` metric
 *     named in docs/operations.md and README.md; every SPEC.md §8 metric is exported and has a
 *     panel;
 *   - every `strata …` command the docs tell the operator to run is a SPEC.md §2 subcommand.
 *
 * STRATA_DOCS_SOURCE_DIR (a compile definition) is the source tree the documents are read from;
 * STRATA_SPEC_MD, when CMake found SPEC.md beside the tree, adds the check of its §6 example.
 */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cfg.h"
#include "st_test.h"

#ifndef STRATA_DOCS_SOURCE_DIR
#error "STRATA_DOCS_SOURCE_DIR must be defined (tests/CMakeLists.txt)"
#endif

/* ---- small helpers ------------------------------------------------------------------------ */

struct strs {
    char **v;
    size_t n, cap;
};

static void strs_add(struct strs *s, const char *p, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->v[i]) == len && memcmp(s->v[i], p, len) == 0)
            return;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        ck_assert_ptr_nonnull(s->v);
    }
    s->v[s->n] = strndup(p, len);
    ck_assert_ptr_nonnull(s->v[s->n]);
    s->n++;
}

static bool strs_has(const struct strs *s, const char *p)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], p) == 0)
            return true;
    return false;
}

static void strs_free(struct strs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* The whole file under the source tree, NUL-terminated (caller frees). Fails the test if absent. */
static char *slurp(const char *rel)
{
    char path[4096];
    if (rel[0] == '/')
        snprintf(path, sizeof(path), "%s", rel);
    else
        snprintf(path, sizeof(path), "%s/%s", STRATA_DOCS_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int line_of(const char *text, const char *p)
{
    int line = 1;
    for (const char *q = text; q < p; q++)
        line += *q == '\n';
    return line;
}

/* ---- markdown ------------------------------------------------------------------------------ */

/* One fenced ```yaml block: its text (without the fences) and the line of its opening fence. */
struct block {
    char *text;
    int line;
    char heading[256]; /* the nearest "## " heading above it */
};

/* Every ```yaml block of a Markdown text, in order. Returns the count; *out caller frees. */
static size_t yaml_blocks(const char *md, struct block **out)
{
    size_t n = 0, cap = 0;
    struct block *v = NULL;
    char heading[256] = "";
    const char *p = md;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > 3 && strncmp(p, "## ", 3) == 0)
            snprintf(heading, sizeof(heading), "%.*s", (int)(len - 3), p + 3);
        if (len >= 7 && strncmp(p, "```yaml", 7) == 0) {
            ck_assert_msg(eol != NULL, "unterminated ```yaml block at line %d", line_of(md, p));
            const char *body = eol + 1, *end = strstr(body, "\n```");
            if (strncmp(body, "```", 3) == 0)
                end = body - 1;
            ck_assert_msg(end != NULL, "unterminated ```yaml block at line %d", line_of(md, p));
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                v = realloc(v, cap * sizeof(*v));
                ck_assert_ptr_nonnull(v);
            }
            v[n].text = strndup(body, (size_t)(end + 1 - body));
            ck_assert_ptr_nonnull(v[n].text);
            v[n].line = line_of(md, p);
            snprintf(v[n].heading, sizeof(v[n].heading), "%s", heading);
            n++;
            p = end + 1;
            p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p); /* skip the closing ``` */
            continue;
        }
        p = eol ? eol + 1 : p + len;
    }
    *out = v;
    return n;
}

static void blocks_free(struct block *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].text);
    free(v);
}

/*
 * The keys of docs/config.md's reference: the first `code` cell of every table row between
 * "## Keys" and the next "## " heading.
 */
static void doc_table_keys(const char *md, struct strs *keys)
{
    const char *sec = strstr(md, "\n## Keys\n");
    ck_assert_msg(sec != NULL, "docs/config.md has no '## Keys' section");
    sec += 9;
    const char *end = strstr(sec, "\n## ");
    if (end == NULL)
        end = sec + strlen(sec);
    for (const char *p = sec; p < end;) {
        const char *eol = strchr(p, '\n');
        if (eol == NULL || eol > end)
            eol = end;
        if (strncmp(p, "| `", 3) == 0) {
            const char *k = p + 3, *q = memchr(k, '`', (size_t)(eol - k));
            ck_assert_msg(q != NULL, "docs/config.md:%d: unterminated `key`", line_of(md, p));
            strs_add(keys, k, (size_t)(q - k));
        }
        p = eol + 1;
    }
}

/* ---- config keys --------------------------------------------------------------------------- */

START_TEST(test_config_keys_table)
{
    char **keys = NULL;
    size_t nk = 0;
    ck_assert_int_eq(cfg_keys(&keys, &nk), ST_OK);
    /* The loader's list itself: what the docs' notation and SPEC.md §6 rely on. */
    struct strs loader = {0};
    for (size_t i = 0; i < nk; i++)
        strs_add(&loader, keys[i], strlen(keys[i]));
    ck_assert_uint_eq(loader.n, nk); /* no duplicates */
    const char *must[] = {"node_id",
                          "data_dir",
                          "kafka.brokers",
                          "kafka.properties",
                          "nats.stream",
                          "collections",
                          "collections[].name",
                          "collections[].index",
                          "collections[].index.type",
                          "collections[].index.ef_construction",
                          "collections[].index.nlist",
                          "collections[].cold_index.nbits",
                          "store.wal_sync_interval",
                          "ingest.advertise_url",
                          "indexer.memory_budget",
                          "indexer.ingest_nodes",
                          "http.max_body",
                          "log.level"};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
        ck_assert_msg(strs_has(&loader, must[i]), "cfg_keys() lacks %s", must[i]);
    ck_assert_msg(!strs_has(&loader, "kafka") && !strs_has(&loader, "store"),
                  "cfg_keys() lists a grouping section as a key");

    char *md = slurp("docs/config.md");
    struct strs doc = {0};
    doc_table_keys(md, &doc);
    ck_assert_uint_ge(doc.n, 10);

    char missing[4096] = "", extra[4096] = "";
    for (size_t i = 0; i < nk; i++)
        if (!strs_has(&doc, keys[i]))
            snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), " %s", keys[i]);
    for (size_t i = 0; i < doc.n; i++)
        if (!strs_has(&loader, doc.v[i]))
            snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), " %s", doc.v[i]);
    ck_assert_msg(missing[0] == '\0', "keys the loader accepts but docs/config.md's table lacks:%s",
                  missing);
    ck_assert_msg(extra[0] == '\0', "keys docs/config.md documents but the loader rejects:%s",
                  extra);
    strs_free(&doc);
    strs_free(&loader);
    free(md);
    cfg_keys_free(keys, nk);
}
END_TEST

/* Loads a block with the real loader; fails with every error line when it does not load. */
static struct cfg *load_block(const char *file, const struct block *b)
{
    char name[512];
    snprintf(name, sizeof(name), "%s(```yaml at line %d)", file, b->line);
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    int rc = cfg_load_string(name, b->text, strlen(b->text), &c, &errs);
    if (rc != ST_OK) {
        cfg_errors_print(&errs, stderr);
        ck_abort_msg("%s does not load: %s", name, errs.n ? errs.lines[0] : st_strerror(rc));
    }
    cfg_errors_clear(&errs);
    return c;
}

START_TEST(test_yaml_blocks_load)
{
    /* Fragments in these files are fenced as ```text; every ```yaml block is a whole config. */
    static const struct {
        const char *file;
        size_t min_blocks;
    } docs[] = {{"README.md", 1}, {"docs/config.md", 2}, {"docs/operations.md", 2}};
    for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
        char *md = slurp(docs[d].file);
        struct block *b = NULL;
        size_t n = yaml_blocks(md, &b);
        ck_assert_msg(n >= docs[d].min_blocks, "%s: %zu ```yaml blocks, expected at least %zu",
                      docs[d].file, n, docs[d].min_blocks);
        for (size_t i = 0; i < n; i++)
            cfg_free(load_block(docs[d].file, &b[i]));
        blocks_free(b, n);
        free(md);
    }
}
END_TEST

static const struct block *block_under(const struct block *b, size_t n, const char *heading)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(b[i].heading, heading) != NULL)
            return &b[i];
    ck_abort_msg("no ```yaml block under a heading containing '%s'", heading);
    return NULL;
}

/* Writes text to a temporary file and loads it with cfg_load, as the daemons read a file. */
static struct cfg *load_as_file(const char *text)
{
    char *dir = st_test_tmpdir("docs");
    char path[4096];
    snprintf(path, sizeof(path), "%s/strata.yaml", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
    struct cfg_errors errs = {0};
    struct cfg *c = NULL;
    int rc = cfg_load(path, &c, &errs);
    if (rc != ST_OK)
        cfg_errors_print(&errs, stderr);
    ck_assert_int_eq(rc, ST_OK);
    cfg_errors_clear(&errs);
    st_test_rmrf(dir);
    free(dir);
    return c;
}

START_TEST(test_spec_example)
{
    char *md = slurp("docs/config.md");
    struct block *b = NULL;
    size_t n = yaml_blocks(md, &b);
    const struct block *ex = block_under(b, n, "SPEC.md");
    char *sample = slurp("tests/config/spec_sample.yaml");
    ck_assert_msg(strcmp(ex->text, sample) == 0,
                  "docs/config.md's SPEC.md §6 example (line %d) differs from "
                  "tests/config/spec_sample.yaml",
                  ex->line);
    struct cfg *c = load_as_file(ex->text);
    ck_assert_str_eq(c->node_id, "ingest-1");
    ck_assert_uint_eq(c->n_collections, 1);
    ck_assert_uint_eq(c->collections[0].dim, 384);
    ck_assert_int_eq(c->collections[0].index.type, CFG_INDEX_HNSW);
    cfg_free(c);
    free(sample);
    blocks_free(b, n);
    free(md);
}
END_TEST

#ifdef STRATA_SPEC_MD
/* SPEC.md itself: its §6 example is the one docs/config.md and spec_sample.yaml carry. */
START_TEST(test_spec_md_example)
{
    char *md = slurp(STRATA_SPEC_MD);
    struct block *b = NULL;
    size_t n = yaml_blocks(md, &b);
    const struct block *ex = block_under(b, n, "6. Configuration");
    char *sample = slurp("tests/config/spec_sample.yaml");
    ck_assert_msg(strcmp(ex->text, sample) == 0,
                  "%s §6 example (line %d) differs from tests/config/spec_sample.yaml",
                  STRATA_SPEC_MD, ex->line);
    struct cfg *c = load_as_file(ex->text);
    ck_assert_str_eq(c->collections[0].name, "docs");
    cfg_free(c);
    free(sample);
    blocks_free(b, n);
    free(md);
}
END_TEST
#endif

/* Every key path of a YAML document, in cfg_keys() notation (a list of mappings adds "[]"). */
static void yaml_paths(yaml_document_t *doc, yaml_node_t *n, const char *prefix, struct strs *out)
{
    if (n == NULL)
        return;
    if (n->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
             pr++) {
            yaml_node_t *k = yaml_document_get_node(doc, pr->key);
            ck_assert_int_eq(k->type, YAML_SCALAR_NODE);
            char p[512];
            snprintf(p, sizeof(p), "%s%s%s", prefix, *prefix ? "." : "",
                     (const char *)k->data.scalar.value);
            strs_add(out, p, strlen(p));
            yaml_paths(doc, yaml_document_get_node(doc, pr->value), p, out);
        }
    } else if (n->type == YAML_SEQUENCE_NODE) {
        char p[512];
        snprintf(p, sizeof(p), "%s[]", prefix);
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++)
            yaml_paths(doc, yaml_document_get_node(doc, *it), p, out);
    }
}

START_TEST(test_every_key_example)
{
    char *md = slurp("docs/config.md");
    struct block *b = NULL;
    size_t n = yaml_blocks(md, &b);
    const struct block *ex = block_under(b, n, "Every key");
    cfg_free(load_block("docs/config.md", ex)); /* the loader takes all of it */

    yaml_parser_t ps;
    yaml_document_t doc;
    ck_assert(yaml_parser_initialize(&ps));
    yaml_parser_set_input_string(&ps, (const unsigned char *)ex->text, strlen(ex->text));
    ck_assert(yaml_parser_load(&ps, &doc));
    struct strs paths = {0};
    yaml_paths(&doc, yaml_document_get_root_node(&doc), "", &paths);
    yaml_document_delete(&doc);
    yaml_parser_delete(&ps);

    char **keys = NULL;
    size_t nk = 0;
    ck_assert_int_eq(cfg_keys(&keys, &nk), ST_OK);
    char missing[4096] = "";
    for (size_t i = 0; i < nk; i++)
        if (!strs_has(&paths, keys[i]))
            snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), " %s", keys[i]);
    ck_assert_msg(missing[0] == '\0',
                  "docs/config.md's 'every key' example (line %d) does not set:%s", ex->line,
                  missing);
    cfg_keys_free(keys, nk);
    strs_free(&paths);
    blocks_free(b, n);
    free(md);
}
END_TEST

/* ---- metrics ------------------------------------------------------------------------------- */

/*
 * Metric names the daemons export: every "strata_..." string literal in the C sources of the
 * directories that build /metrics; a literal followed by "histogram" (st_prom_head's type
 * argument) marks a histogram.
 */
static void exported_metrics(struct strs *names, struct strs *hists)
{
    static const char *const dirs[] = {"common", "ingest", "indexer"};
    for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", STRATA_DOCS_SOURCE_DIR, dirs[d]);
        DIR *dh = opendir(path);
        ck_assert_msg(dh != NULL, "cannot list %s", path);
        struct dirent *de;
        while ((de = readdir(dh)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len < 3 || strcmp(de->d_name + len - 2, ".c") != 0)
                continue;
            char rel[512];
            snprintf(rel, sizeof(rel), "%s/%s", dirs[d], de->d_name);
            char *src = slurp(rel);
            for (const char *p = strstr(src, "\"strata_"); p; p = strstr(p + 1, "\"strata_")) {
                const char *q = p + 1;
                while (islower((unsigned char)*q) || isdigit((unsigned char)*q) || *q == '_')
                    q++;
                if (*q != '"')
                    continue;
                strs_add(names, p + 1, (size_t)(q - p - 1));
                const char *r = q + 1;
                while (*r == ',' || isspace((unsigned char)*r))
                    r++;
                if (strncmp(r, "\"histogram\"", 11) == 0)
                    strs_add(hists, p + 1, (size_t)(q - p - 1));
            }
            free(src);
        }
        closedir(dh);
    }
}

/* NULL when name is an exported series, else why not. */
static const char *metric_problem(const struct strs *names, const struct strs *hists,
                                  const char *name)
{
    if (strs_has(names, name))
        return NULL;
    static const char *const suf[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t nl = strlen(name), sl = strlen(suf[i]);
        if (nl > sl && strcmp(name + nl - sl, suf[i]) == 0) {
            char base[256];
            snprintf(base, sizeof(base), "%.*s", (int)(nl - sl), name);
            if (strs_has(hists, base))
                return NULL;
            if (strs_has(names, base))
                return "is a suffix series of a metric that is not a histogram";
        }
    }
    return "is not exported by any daemon";
}

/* Every strata_* identifier in s. */
static void metric_idents(const char *s, struct strs *out)
{
    for (const char *p = strstr(s, "strata_"); p; p = strstr(p + 1, "strata_")) {
        if (p > s && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
            continue;
        const char *q = p;
        while (isalnum((unsigned char)*q) || *q == '_')
            q++;
        strs_add(out, p, (size_t)(q - p));
    }
}

static void collect_exprs(json_t *j, struct strs *exprs)
{
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            if (strcmp(k, "expr") == 0 && json_is_string(v))
                strs_add(exprs, json_string_value(v), strlen(json_string_value(v)));
            else
                collect_exprs(v, exprs);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) collect_exprs(v, exprs);
    }
}

/* SPEC.md §8: the metrics every release exports. */
static const char *const spec_metrics[] = {
    "strata_ingest_records_total",
    "strata_ingest_rejected_total",
    "strata_kafka_consumer_lag",
    "strata_wal_sync_seconds",
    "strata_memtable_size_bytes",
    "strata_segments_total",
    "strata_windows",
    "strata_compaction_running",
    "strata_compaction_bytes_written_total",
    "strata_write_amplification_ratio",
    "strata_windows_dropped_total",
    "strata_index_build_seconds",
    "strata_index_backlog",
    "strata_search_seconds",
    "strata_freshness_seconds",
};
#define N_SPEC_METRICS (sizeof(spec_metrics) / sizeof(spec_metrics[0]))

START_TEST(test_exported_metrics_cover_spec)
{
    struct strs names = {0}, hists = {0};
    exported_metrics(&names, &hists);
    for (size_t i = 0; i < N_SPEC_METRICS; i++)
        ck_assert_msg(strs_has(&names, spec_metrics[i]), "SPEC.md §8 metric %s is not exported",
                      spec_metrics[i]);
    /* the parser itself: the four SPEC histograms are recognised as such */
    ck_assert(strs_has(&hists, "strata_wal_sync_seconds"));
    ck_assert(strs_has(&hists, "strata_search_seconds"));
    ck_assert(strs_has(&hists, "strata_index_build_seconds"));
    ck_assert(strs_has(&hists, "strata_freshness_seconds"));
    ck_assert(!strs_has(&hists, "strata_windows"));
    ck_assert_ptr_nonnull(metric_problem(&names, &hists, "strata_windows_bucket"));
    ck_assert_ptr_nonnull(metric_problem(&names, &hists, "strata_no_such_metric"));
    ck_assert_ptr_null(metric_problem(&names, &hists, "strata_search_seconds_bucket"));
    strs_free(&names);
    strs_free(&hists);
}
END_TEST

START_TEST(test_grafana_dashboard)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/docs/grafana/strata-dashboard.json", STRATA_DOCS_SOURCE_DIR);
    json_error_t jerr;
    json_t *dash = json_load_file(path, 0, &jerr);
    ck_assert_msg(dash != NULL, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    ck_assert(json_is_string(json_object_get(dash, "title")));
    json_t *panels = json_object_get(dash, "panels");
    ck_assert(json_is_array(panels));
    ck_assert_uint_ge(json_array_size(panels), 15);
    /* every panel queries the Prometheus datasource input */
    size_t i;
    json_t *pnl;
    json_array_foreach(panels, i, pnl)
    {
        json_t *ds = json_object_get(pnl, "datasource");
        if (json_object_get(pnl, "type") != NULL &&
            strcmp(json_string_value(json_object_get(pnl, "type")), "row") == 0)
            continue;
        ck_assert_msg(json_is_object(ds), "panel %zu has no datasource", i);
        ck_assert_str_eq(json_string_value(json_object_get(ds, "type")), "prometheus");
        ck_assert_msg(json_array_size(json_object_get(pnl, "targets")) > 0,
                      "panel %zu has no query", i);
    }

    struct strs exprs = {0}, used = {0}, names = {0}, hists = {0};
    collect_exprs(dash, &exprs);
    ck_assert_uint_ge(exprs.n, 15);
    for (size_t e = 0; e < exprs.n; e++)
        metric_idents(exprs.v[e], &used);
    exported_metrics(&names, &hists);
    for (size_t u = 0; u < used.n; u++) {
        const char *why = metric_problem(&names, &hists, used.v[u]);
        ck_assert_msg(why == NULL, "dashboard metric %s %s", used.v[u], why);
    }
    /* every SPEC.md §8 metric has a panel */
    for (size_t s = 0; s < N_SPEC_METRICS; s++) {
        bool found = false;
        for (size_t u = 0; u < used.n && !found; u++)
            found =
                strncmp(used.v[u], spec_metrics[s], strlen(spec_metrics[s])) == 0 &&
                metric_problem(&names, &hists, used.v[u]) == NULL &&
                (used.v[u][strlen(spec_metrics[s])] == '\0' || strs_has(&hists, spec_metrics[s]));
        ck_assert_msg(found, "the dashboard has no panel on %s", spec_metrics[s]);
    }
    strs_free(&exprs);
    strs_free(&used);
    strs_free(&names);
    strs_free(&hists);
    json_decref(dash);
}
END_TEST

START_TEST(test_doc_metric_names)
{
    struct strs names = {0}, hists = {0};
    exported_metrics(&names, &hists);
    static const char *const files[] = {"docs/operations.md", "README.md"};
    size_t total = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char *md = slurp(files[f]);
        struct strs used = {0};
        metric_idents(md, &used);
        for (size_t u = 0; u < used.n; u++) {
            const char *why = metric_problem(&names, &hists, used.v[u]);
            ck_assert_msg(why == NULL, "%s names metric %s, which %s", files[f], used.v[u],
                          why != NULL ? why : "");
        }
        total += used.n;
        strs_free(&used);
        free(md);
    }
    ck_assert_uint_ge(total, N_SPEC_METRICS); /* operations.md explains every SPEC metric */
    strs_free(&names);
    strs_free(&hists);
}
END_TEST

/* ---- commands ------------------------------------------------------------------------------ */

/* SPEC.md §2: the CLI's subcommands. */
static const char *const cli_commands[] = {"produce", "search", "inspect", "check-config", "demo"};

/* Whether `strata <word>` at p names a SPEC.md §2 subcommand or a flag; the word in word. */
static bool cli_word_ok(const char *p, char *word, size_t cap)
{
    size_t n = 0;
    while ((isalnum((unsigned char)p[n]) || p[n] == '-') && n + 1 < cap)
        n++;
    snprintf(word, cap, "%.*s", (int)n, p);
    if (word[0] == '-')
        return true; /* strata --help, --version */
    for (size_t i = 0; i < sizeof(cli_commands) / sizeof(cli_commands[0]); i++)
        if (strcmp(word, cli_commands[i]) == 0)
            return true;
    return false;
}

START_TEST(test_doc_commands)
{
    /* Every `strata …` the operator is told to run — a line of a ```sh block or an inline code
     * span — names a subcommand SPEC.md §2 defines. */
    static const char *const files[] = {"README.md", "docs/operations.md", "docs/config.md"};
    size_t seen = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char *md = slurp(files[f]);
        bool in_sh = false;
        for (const char *p = md; *p;) {
            const char *eol = strchr(p, '\n');
            size_t len = eol ? (size_t)(eol - p) : strlen(p);
            if (strncmp(p, "```", 3) == 0)
                in_sh = !in_sh && strncmp(p, "```sh", 5) == 0;
            else {
                for (const char *q = p; q < p + len; q++) {
                    bool at_cmd = strncmp(q, "strata ", 7) == 0 &&
                                  ((in_sh && (q == p || q[-1] == ' ' || q[-1] == '(')) ||
                                   (q > md && q[-1] == '`'));
                    if (!at_cmd || (q > p && (isalnum((unsigned char)q[-1]) || q[-1] == '-')))
                        continue;
                    char word[64];
                    ck_assert_msg(cli_word_ok(q + 7, word, sizeof(word)),
                                  "%s:%d: `strata %s` is not a subcommand of SPEC.md §2", files[f],
                                  line_of(md, q), word);
                    seen++;
                }
            }
            p = eol ? eol + 1 : p + len;
        }
        free(md);
    }
    ck_assert_uint_ge(seen, 5);
    char word[64];
    ck_assert(!cli_word_ok("frobnicate x", word, sizeof(word)));
    ck_assert_str_eq(word, "frobnicate");
}
END_TEST

int main(void)
{
    Suite *su = suite_create("docs");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_config_keys_table);
    tcase_add_test(tc, test_yaml_blocks_load);
    tcase_add_test(tc, test_spec_example);
#ifdef STRATA_SPEC_MD
    tcase_add_test(tc, test_spec_md_example);
#endif
    tcase_add_test(tc, test_every_key_example);
    suite_add_tcase(su, tc);
    tc = tcase_create("metrics");
    tcase_add_test(tc, test_exported_metrics_cover_spec);
    tcase_add_test(tc, test_grafana_dashboard);
    tcase_add_test(tc, test_doc_metric_names);
    suite_add_tcase(su, tc);
    tc = tcase_create("commands");
    tcase_add_test(tc, test_doc_commands);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
