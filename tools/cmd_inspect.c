/*
 * strata inspect — read-only verification of everything under a data_dir (SPEC.md §6):
 * the ingest half (stores, WALs, segments, manifests: store_inspect) and the indexer half
 * (<data_dir>/indexer/<collection>/: CATALOG, segment copies, HNSW and IVF-PQ index files,
 * each fully loaded by the indexer's own verifying loaders). Every problem is one line
 * "CORRUPT <file>: ..." and makes the exit status 1.
 */
#include <dirent.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd.h"
#include "idx_catalog.h"
#include "idx_hnsw.h"
#include "idx_ivfpq.h"
#include "store.h"
#include "twcs.h"

struct ictx {
    int problems;
    int failures; /* could not read something (not corruption) */
};

static void problem(struct ictx *c, const char *path, const char *msg)
{
    if (strstr(msg, path) != NULL)
        printf("CORRUPT %s\n", msg);
    else
        printf("CORRUPT %s: %s\n", path, msg);
    c->problems++;
}

/* An index file that did not load: corruption (exit 1), or a read failure. */
static void load_failed(struct ictx *c, const char *path, int rc, const char *msg)
{
    if (rc == ST_ECORRUPT || rc == ST_EUNSUPP) {
        problem(c, path, msg);
    } else {
        printf("%s: cannot read: %s\n", path, msg);
        c->failures++;
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* An index file, fully verified by its loader; *count gets the vectors it holds. */
static bool inspect_index(struct ictx *c, const char *path, uint64_t *count)
{
    struct st_err err = {0};
    uint8_t h[64] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f != NULL ? fread(h, 1, sizeof(h), f) : 0;
    if (f != NULL)
        fclose(f);
    struct stat sb;
    long long size = stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
    if (ends_with(path, ".hnsw")) {
        struct idx_hnsw *x = NULL;
        int rc = idx_hnsw_load(path, &x, &err);
        if (rc != ST_OK) {
            load_failed(c, path, rc, err.msg);
            return false;
        }
        uint32_t n = idx_hnsw_count(x);
        printf("hnsw %s: nodes=%" PRIu32 " dim=%" PRIu32 " m=%" PRIu32 " ef_construction=%" PRIu32
               " metric=%" PRIu32 " bytes=%lld checksums=ok\n",
               path, n, got == 64 ? le32(h + 12) : 0, got == 64 ? le32(h + 16) : 0,
               got == 64 ? le32(h + 20) : 0, got == 64 ? le32(h + 24) : 0, size);
        if (count != NULL)
            *count = n;
        idx_hnsw_free(x);
        return true;
    }
    struct idx_ivfpq *x = NULL;
    int rc = idx_ivfpq_load(path, &x, &err);
    if (rc != ST_OK) {
        load_failed(c, path, rc, err.msg);
        return false;
    }
    uint32_t n = got == 64 ? le32(h + 32) : 0;
    printf("ivfpq %s: vectors=%" PRIu32 " dim=%" PRIu32 " nlist=%" PRIu32 " m=%" PRIu32
           " nbits=%" PRIu32 " metric=%" PRIu32 " bytes=%lld checksums=ok\n",
           path, n, le32(h + 12), le32(h + 16), le32(h + 20), le32(h + 24), le32(h + 28), size);
    if (count != NULL)
        *count = n;
    idx_ivfpq_free(x);
    return true;
}

/* A segment copy the catalog names: verified in full, and the very file the entry names. */
static bool inspect_seg_copy(struct ictx *c, const char *path, const struct idx_cat_entry *e)
{
    struct store_segment *g = NULL;
    struct st_err err = {0};
    int rc = store_segment_open_file(path, &g, &err);
    if (rc == ST_OK)
        rc = store_segment_verify(g, &err);
    if (rc != ST_OK) {
        if (rc == ST_ECORRUPT || rc == ST_EUNSUPP)
            problem(c, path, err.msg);
        else {
            printf("%s: cannot read: %s\n", path, err.msg[0] ? err.msg : st_strerror(rc));
            c->failures++;
        }
        store_segment_unref(g);
        return false;
    }
    struct store_segment_info in;
    store_segment_info(g, &in);
    bool ok = true;
    char msg[256];
    if (e != NULL && (in.checksum != e->checksum || in.window_start != e->start)) {
        snprintf(msg, sizeof(msg),
                 "segment (window %" PRId64 ", checksum %" PRIu32
                 ") is not the one CATALOG names (window %" PRId64 ", checksum %" PRIu32 ")",
                 in.window_start, in.checksum, e->start, e->checksum);
        problem(c, path, msg);
        ok = false;
    }
    printf("  segment %s: window=[%" PRId64 ",%" PRId64 ") version=%" PRIu32 " records=%" PRIu64
           " dim=%" PRIu32 " bytes=%" PRIu64 " checksums=%s\n",
           path, in.window_start, in.window_end, in.version, in.count, in.dim, in.bytes,
           ok ? "ok" : "BAD");
    store_segment_unref(g);
    return ok;
}

static bool name_in(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (names[i] != NULL && strcmp(names[i], name) == 0)
            return true;
    return false;
}

/*
 * <data_dir>/indexer/<collection>/: its CATALOG and every part the catalog names; then any
 * other complete segment copy or index file there (a leftover the indexer's sweep removes:
 * verified, not required).
 */
static void inspect_collection_dir(struct ictx *c, const char *dir)
{
    struct idx_catalog *cat = NULL;
    struct st_err err = {0};
    char *cpath = NULL, **named = NULL;
    size_t nnamed = 0, windows = 0;
    if (asprintf(&cpath, "%s/CATALOG", dir) < 0) {
        c->failures++;
        return;
    }
    int rc = exists(cpath) ? idx_catalog_open(dir, &cat, &err) : ST_ENOTFOUND;
    if (rc == ST_ENOTFOUND) {
        printf("indexer %s: no CATALOG (nothing indexed yet)\n", dir);
    } else if (rc != ST_OK) {
        if (rc == ST_ECORRUPT || rc == ST_EUNSUPP)
            problem(c, cpath, err.msg);
        else {
            printf("%s: cannot read: %s\n", cpath, err.msg);
            c->failures++;
        }
    } else {
        windows = cat->n;
        printf("indexer catalog %s: windows=%zu expired_horizons=%zu\n", cpath, cat->n, cat->ngone);
        named = calloc(cat->n * 2 + 1, sizeof(char *));
        if (named == NULL)
            c->failures++;
    }
    for (size_t i = 0; cat != NULL && named != NULL && i < cat->n; i++) {
        const struct idx_cat_entry *e = &cat->e[i];
        printf("  window [%" PRId64 ",%" PRId64 ") node=%s version=%" PRIu32 " state=indexed "
               "index=%s%s records=%" PRIu64 " bytes=%" PRIu64 "\n",
               e->start, e->end, e->node, e->version, e->index, e->cold ? " (cold)" : "",
               e->records, e->bytes);
        char *seg = idx_catalog_seg_path(cat, e->node, e->start, e->version);
        char *ix = idx_catalog_index_path(cat, e->node, e->start, e->version, e->index, e->cold);
        named[nnamed++] = seg;
        named[nnamed++] = ix;
        if (seg == NULL || ix == NULL) {
            c->failures++;
            continue;
        }
        if (!exists(seg))
            problem(c, seg, "named in CATALOG but missing");
        else
            inspect_seg_copy(c, seg, e);
        uint64_t n = 0;
        if (!exists(ix))
            problem(c, ix, "named in CATALOG but missing");
        else if (inspect_index(c, ix, &n) && n > e->records) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "holds %" PRIu64 " vectors, the window has %" PRIu64 " records", n,
                     e->records);
            problem(c, ix, msg);
        }
    }
    size_t segs = 0, idxs = 0, other = 0;
    DIR *d = opendir(dir);
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        char *p = NULL;
        if (de->d_name[0] == '.' || strcmp(de->d_name, "CATALOG") == 0 ||
            asprintf(&p, "%s/%s", dir, de->d_name) < 0)
            continue;
        if (name_in(named, nnamed, p)) {
        } else if (ends_with(p, ".seg")) {
            segs++;
            inspect_seg_copy(c, p, NULL);
        } else if (ends_with(p, ".hnsw") || ends_with(p, ".ivfpq")) {
            idxs++;
            inspect_index(c, p, NULL);
        } else {
            other++;
        }
        free(p);
    }
    if (d != NULL)
        closedir(d);
    printf("indexer %s: %zu catalogued windows, %zu other segment copies and %zu other index "
           "files verified, %zu other files\n",
           dir, windows, segs, idxs, other);
    for (size_t i = 0; i < nnamed; i++)
        free(named[i]);
    free(named);
    idx_catalog_free(cat);
    free(cpath);
}

/* <data_dir>/indexer: every collection directory below it. */
static void inspect_indexer_root(struct ictx *c, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        printf("%s: cannot open\n", dir);
        c->failures++;
        return;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char *sub = NULL;
        if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0) {
            c->failures++;
            break;
        }
        if (is_dir(sub))
            inspect_collection_dir(c, sub);
        free(sub);
    }
    closedir(d);
}

/* What a store's manifest is at this moment: CURRENT's text and the size of the manifest it
 * names (every edit appends to it; a compaction switches CURRENT). Empty when unreadable. */
static void manifest_stamp(const char *dir, char *out, size_t cap)
{
    char *p = NULL, name[128] = {0};
    out[0] = '\0';
    if (asprintf(&p, "%s/CURRENT", dir) < 0)
        return;
    FILE *f = fopen(p, "r");
    free(p);
    if (f == NULL)
        return;
    size_t n = fread(name, 1, sizeof(name) - 1, f);
    fclose(f);
    name[n] = '\0';
    name[strcspn(name, "\n")] = '\0';
    struct stat st;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return;
    if (stat(p, &st) == 0)
        snprintf(out, cap, "%s:%lld", name, (long long)st.st_size);
    free(p);
}

/* The window table twcs keeps in a store's manifest, through a read-only open — which also
 * checks what only recovery sees whole (a vector-log row named twice, a run naming another
 * window's log, WAL records against the logs): a store it refuses as corrupt is a problem.
 * A daemon may be writing the store meanwhile: a log created after the manifest was read is
 * named by WAL records the open reads later, a WAL file a flush retired is gone when the open
 * reads it. A refusal counts only when the manifest did not change during the open; otherwise
 * the open is tried again (a few times). */
static void print_windows(struct ictx *c, const char *dir, uint32_t dim)
{
    struct store_opts o = {.dir = dir, .dim = dim, .read_only = true, .no_background = true};
    struct store *s = NULL;
    struct st_err err = {0};
    struct store_window *w = NULL;
    size_t n = 0;
    int rc = ST_ECORRUPT;
    bool changed = true;
    for (int attempt = 0; attempt < 5 && (rc == ST_ECORRUPT || rc == ST_ENOTFOUND) && changed;
         attempt++) {
        char before[256], after[256];
        manifest_stamp(dir, before, sizeof(before));
        st_err_clear(&err);
        rc = store_open(&o, &s, &err);
        manifest_stamp(dir, after, sizeof(after));
        changed = strcmp(before, after) != 0;
    }
    if (rc == ST_ECORRUPT && !changed) {
        problem(c, dir, err.msg);
        return;
    }
    if ((rc == ST_ECORRUPT || rc == ST_ENOTFOUND) && changed) {
        /* refused each time, each time overtaken: no verdict, and not "intact" either */
        printf("  windows: not verified (changed during each of 5 opens; last: %s)\n", err.msg);
        c->failures++;
        return;
    }
    if (rc != ST_OK || store_windows(s, &w, &n) != ST_OK) {
        printf("  windows: not listed (%s)\n", err.msg[0] ? err.msg : "cannot open read-only");
        if (s != NULL)
            st_best_effort(store_close(s));
        return;
    }
    printf("  windows: %zu\n", n);
    for (size_t i = 0; i < n; i++) {
        const char *st = w[i].state == TWCS_OPEN     ? "open"
                         : w[i].state == TWCS_SEALED ? "sealed"
                                                     : "other";
        printf("  window [%" PRId64 ",%" PRId64 ") state=%s version=%" PRIu32 "\n", w[i].start,
               w[i].end, st, w[i].version);
    }
    free(w);
    st_best_effort(store_close(s));
}

/* The ingest half (or any store path): store_inspect, then each intact store's windows.
 * missing_ok: a data dir without one. */
/* The manifest stamps of every store at or under path (two levels: a data dir's ingest/ and
 * its collections), concatenated into f: equal before and after a read means no store there
 * changed its manifest meanwhile. */
static void tree_stamp(const char *path, int depth, FILE *f)
{
    char one[256];
    manifest_stamp(path, one, sizeof(one));
    if (one[0] != '\0') {
        fprintf(f, "%s=%s;", path, one);
        return;
    }
    DIR *d = depth < 3 ? opendir(path) : NULL;
    if (d == NULL)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        char *sub = NULL;
        if (de->d_name[0] == '.' || asprintf(&sub, "%s/%s", path, de->d_name) < 0)
            continue;
        if (is_dir(sub))
            tree_stamp(sub, depth + 1, f);
        free(sub);
    }
    closedir(d);
}

static char *stamp_of(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    tree_stamp(path, 0, f);
    fclose(f);
    return text;
}

static void inspect_store_path(struct ictx *c, const char *path, bool missing_ok)
{
    struct st_err err = {0};
    char *text = NULL;
    size_t len = 0;
    int rc = ST_ECORRUPT;
    bool changed = true;
    /* A store a daemon is writing: a segment a merge or a drop removed, or a WAL file a flush
     * retired, after the manifest was read reads as missing. A finding counts when no manifest
     * changed during the read; otherwise it is read again (a few times). */
    for (int attempt = 0; attempt < 5 && (rc == ST_ECORRUPT || rc == ST_ENOTFOUND) && changed;
         attempt++) {
        free(text);
        text = NULL;
        st_err_clear(&err);
        FILE *mem = open_memstream(&text, &len);
        if (mem == NULL) {
            c->failures++;
            return;
        }
        char *before = stamp_of(path);
        rc = store_inspect(path, mem, &err);
        fclose(mem);
        char *after = stamp_of(path);
        changed = before == NULL || after == NULL || strcmp(before, after) != 0;
        free(before);
        free(after);
    }
    if ((rc == ST_ECORRUPT || rc == ST_ENOTFOUND) && changed) {
        /* every read overtaken: what it found may be a daemon's work in flight, not damage */
        free(text);
        printf("%s: changed during each of 5 reads (a daemon is writing it); stop the node for "
               "a verdict\n",
               path);
        c->failures++;
        return;
    }
    for (char *line = text, *next; line != NULL && *line; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        printf("%s\n", line);
        /* "store DIR: MANIFEST-000002 dim=4 ..." */
        char *sep = strstr(line, ": MANIFEST-"), *d = strstr(line, " dim=");
        if (strncmp(line, "store ", 6) == 0 && sep != NULL && d != NULL && rc == ST_OK) {
            *sep = '\0';
            print_windows(c, line + 6, (uint32_t)strtoul(d + 5, NULL, 10));
        }
    }
    free(text);
    if (rc == ST_ECORRUPT)
        c->problems++; /* already listed line by line */
    else if (rc == ST_ENOTFOUND && missing_ok)
        return;
    else if (rc != ST_OK) {
        printf("%s\n", err.msg);
        c->failures += rc == ST_ENOTFOUND || rc == ST_EINVAL ? 100 : 1;
    }
}

static void help(void)
{
    printf("usage: strata inspect PATH\n"
           "\n"
           "Verifies PATH read-only and prints a summary: windows, states, record counts, and\n"
           "every checksum. PATH may be\n"
           "  a data_dir           both halves: <data_dir>/ingest/ (stores) and\n"
           "                       <data_dir>/indexer/ (catalogs, segment copies, indexes)\n"
           "  a store dir          MANIFEST, every segment verified in full, every WAL record\n"
           "  <data_dir>/indexer   or one collection's directory below it (with its CATALOG)\n"
           "  a single file        *.log (WAL), *.seg, MANIFEST-*, *.hnsw, *.ivfpq, CATALOG\n"
           "\n"
           "Each problem is printed as 'CORRUPT <file>: <what> [at offset N]'. A torn WAL tail\n"
           "(a crash mid-write, which recovery truncates) is reported but is not corruption.\n"
           "\n"
           "exit codes: 0 intact, 1 corruption found (or a file could not be read), 2 bad usage\n"
           "or PATH is not a strata path\n");
}

int cmd_inspect(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        help();
        return 0;
    }
    if (argc != 2)
        return cmd_usage_error("inspect", argc < 2 ? "no PATH" : "expects exactly one PATH");
    if (argv[1][0] == '-')
        return cmd_usage_error("inspect", "unknown option '%s'", argv[1]);
    const char *path = argv[1];
    struct ictx c = {0};
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "strata inspect: %s: does not exist\n", path);
        return 2;
    }
    char *copy = strdup(path), *sub = NULL;
    if (copy == NULL)
        return 1;
    const char *base = basename(copy);
    if (S_ISREG(sb.st_mode)) {
        if (ends_with(path, ".hnsw") || ends_with(path, ".ivfpq")) {
            inspect_index(&c, path, NULL);
        } else if (strcmp(base, "CATALOG") == 0) {
            char *d2 = strdup(path);
            if (d2 != NULL)
                inspect_collection_dir(&c, dirname(d2));
            free(d2);
        } else {
            inspect_store_path(&c, path, false);
        }
    } else if (asprintf(&sub, "%s/CATALOG", path) >= 0 && exists(sub)) {
        inspect_collection_dir(&c, path);
    } else if (strcmp(base, "indexer") == 0) {
        inspect_indexer_root(&c, path);
    } else {
        free(sub);
        sub = NULL;
        if (asprintf(&sub, "%s/indexer", path) >= 0 && is_dir(sub)) {
            /* A data_dir shared by both daemons: ingest/ and, from before that layout, stores
             * directly in the data_dir; then the indexer's half. */
            DIR *d = opendir(path);
            for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
                char *p = NULL;
                if (de->d_name[0] == '.' || strcmp(de->d_name, "indexer") == 0 ||
                    asprintf(&p, "%s/%s", path, de->d_name) < 0)
                    continue;
                if (is_dir(p))
                    inspect_store_path(&c, p, true);
                free(p);
            }
            if (d != NULL)
                closedir(d);
            inspect_indexer_root(&c, sub);
        } else {
            inspect_store_path(&c, path, false);
        }
    }
    free(sub);
    free(copy);
    if (c.failures >= 100 && c.problems == 0)
        return 2;
    if (c.problems > 0) {
        printf("strata inspect: %s: corruption found\n", path);
        fprintf(stderr, "strata inspect: %s: corruption found (see the CORRUPT lines)\n", path);
        return 1;
    }
    if (c.failures > 0) {
        fprintf(stderr, "strata inspect: %s: some files could not be read\n", path);
        return 1;
    }
    printf("strata inspect: %s: intact\n", path);
    return 0;
}
