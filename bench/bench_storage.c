/*
 * Storage costs over a long run with late data and upserts (issue 17): write amplification
 * (bytes written per byte ingested) and space amplification (bytes on disk per live byte), per
 * window and overall, for strata and, in the same run, RocksDB given the same stream.
 *
 * The stream: W event-time windows of R records each (dim-d float32 vectors, 64 bytes of
 * metadata, 16-byte ids), in event-time order, 256 records a batch. A share --late of the
 * records belongs to an earlier window (which has sealed by then: its re-seal writes a
 * delta) — the previous one, or with --late-spread N one of the N before, evenly (strata's
 * max_lateness is N + 1 windows) — a share --upserts re-writes an id written earlier in the same
 * window with a new vector, and a TTL keeps the last --ttl-windows windows. strata gets it through
 * twcs as the ingest node writes it (WAL, vector logs, seals, re-seals, TTL drops; a manual clock
 * that follows event time, so the TTL sees the stream's time), each batch fsynced before the next;
 * RocksDB (leveled, no compression, WAL on, a synced write per batch as bench_ingest's
 * reference: the same durability) gets key = window
 * start (8 bytes, big-endian) + id and value = ts + vector + metadata, and a DeleteRange of each
 * window the same TTL expires. Both end with everything flushed; RocksDB then runs a full
 * compaction, the only way its deleted ranges give their space back before its own compactions
 * reach them: its bytes are shown apart (write amp with and without it).
 *
 * Written bytes: what the store says it wrote (strata: WAL + vector logs + segments +
 * manifest; RocksDB: WAL + flushes + compactions, from its statistics) and what the kernel
 * counted for the process (/proc/self/io write_bytes − cancelled_write_bytes). Space: the
 * files under the directory at the end, and per window (strata: its segments; RocksDB: the
 * approximate size of its key range), against the live logical bytes of the windows kept.
 *
 *   build/bench/bench_storage [--dir /tmp] [--windows 24] [--records 20000] [--dim 384]
 *                             [--late 0.05] [--late-spread 1] [--upserts 0.10] [--ttl-windows 8]
 *                             [--reseal-delay-ms 0] [--reseal-ratio 8]
 *                             [--systems strata,rocksdb] [--csv FILE]
 * (strata's re-seal settings default to the ingest node's: reseal_delay 0, reseal_min_ratio 8;
 * --reseal-ratio 0 re-seals at the first tick after the delay, as before.)
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef STRATA_HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#include "st_clock.h"
#include "st_log.h"
#include "store.h"
#include "twcs.h"

#define BATCH  256
#define META   64
#define IDLEN  16
#define WIN_MS 60000
#define GRACE  2000

struct opts {
    const char *dir, *systems, *csv;
    int windows, records, dim, ttl_windows, late_spread;
    long reseal_ms;
    int reseal_ratio;
    double late, upserts;
};

/* One record of the stream. */
struct rec {
    int win; /* its window's index */
    char id[IDLEN + 1];
    int64_t ts;
    uint64_t seed; /* vector and metadata */
};

/* Per window: what the stream put there (logical), and the results. */
struct wstat {
    uint64_t written, live; /* records written, distinct ids */
    double strata_mb, rocks_mb;
    uint32_t strata_segments;
};

struct sysres {
    const char *name;
    double secs;
    uint64_t ingested;              /* logical bytes of every record written */
    uint64_t store_written;         /* what the store says it wrote */
    uint64_t dev_written;           /* /proc/self/io */
    uint64_t disk_bytes;            /* files under the directory at the end */
    uint64_t wal, vlog, seg, other; /* strata's breakdown (RocksDB: wal, flush, compaction) */
    uint64_t seals, reseals, drops; /* strata */
    uint64_t final_compaction;      /* RocksDB: bytes the closing full compaction wrote */
    bool ran;
};

static double now_s(void)
{
    return (double)st_clock_mono_ns(NULL) / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_storage: %s: %s\n", what, why);
    exit(1);
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t proc_io(const char *key)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[256];
    uint64_t v = 0;
    size_t kl = strlen(key);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, kl) == 0)
            v = strtoull(line + kl, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static uint64_t dev_bytes(void)
{
    uint64_t w = proc_io("write_bytes:"), c = proc_io("cancelled_write_bytes:");
    return w > c ? w - c : 0;
}

/* Bytes of the regular files under dir, recursively. */
static uint64_t du(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t sum = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[1400];
        struct stat st;
        snprintf(p, sizeof(p), "%.1000s/%.255s", dir, e->d_name);
        if (lstat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            sum += du(p);
        else if (S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    if (d != NULL)
        closedir(d);
    return sum;
}

static int64_t win_start(const struct opts *o, int w)
{
    (void)o;
    return 1700000000000LL / WIN_MS * WIN_MS + (int64_t)w * WIN_MS;
}

/*
 * The stream, the same for every system: gen(o, w, i, &r) gives record i of window w's turn.
 * Returns false for a record the stream does not have.
 */
struct gen {
    const struct opts *o;
    uint64_t rng;
    uint32_t *ids;  /* per window: fresh ids so far */
    uint32_t *late; /* per window: late ids so far */
};

static void gen_next(struct gen *g, int w, int i, struct rec *r, struct wstat *ws)
{
    const struct opts *o = g->o;
    double u = (double)(xs(&g->rng) >> 11) / 9007199254740992.0;
    int64_t span = WIN_MS - 1;
    r->seed = xs(&g->rng);
    if (w > 0 && u < o->late) {
        int spread = o->late_spread < w ? o->late_spread : w;
        int lw = w - 1 - (int)(xs(&g->rng) % (uint64_t)spread);
        r->win = lw;
        snprintf(r->id, sizeof(r->id), "L%05u%010" PRIu32, (unsigned)lw % 100000u, g->late[lw]++);
        r->ts = win_start(o, lw) + (int64_t)(xs(&g->rng) % (uint64_t)span);
        ws[lw].written++;
        ws[lw].live++;
        return;
    }
    r->win = w;
    r->ts = win_start(o, w) + (int64_t)i * span / o->records;
    if (g->ids[w] > 0 && u < o->late + o->upserts) {
        uint32_t k = (uint32_t)(xs(&g->rng) % g->ids[w]);
        snprintf(r->id, sizeof(r->id), "F%05u%010" PRIu32, (unsigned)w % 100000u, k);
        ws[w].written++; /* the id is live already */
        return;
    }
    snprintf(r->id, sizeof(r->id), "F%05u%010" PRIu32, (unsigned)w % 100000u, g->ids[w]++);
    ws[w].written++;
    ws[w].live++;
}

static void fill(const struct rec *r, int dim, float *vec, uint8_t *meta)
{
    uint64_t s = r->seed | 1;
    for (int j = 0; j < dim; j++)
        vec[j] = (float)((double)(xs(&s) >> 40) / 16777216.0 - 0.5);
    for (int j = 0; j < META; j++)
        meta[j] = (uint8_t)xs(&s);
}

static uint64_t rec_bytes(const struct opts *o)
{
    return IDLEN + 8 + (uint64_t)o->dim * 4 + META;
}

/* Runs the stream through a system: put(batch), at each window's turn boundary turn(w). */
struct sink {
    void *ctx;
    void (*put)(void *ctx, const struct rec *r, int n);
    void (*turn)(void *ctx, int w); /* before window w's records (w = windows: the end) */
};

static void run_stream(const struct opts *o, struct sink *k, struct wstat *ws)
{
    struct gen g = {o, 0x9e3779b97f4a7c15ull, calloc((size_t)o->windows, 4),
                    calloc((size_t)o->windows, 4)};
    if (g.ids == NULL || g.late == NULL)
        die("calloc", "stream");
    struct rec batch[BATCH];
    for (int w = 0; w < o->windows; w++) {
        k->turn(k->ctx, w);
        for (int i = 0; i < o->records; i += BATCH) {
            int n = o->records - i < BATCH ? o->records - i : BATCH;
            for (int j = 0; j < n; j++)
                gen_next(&g, w, i + j, &batch[j], ws);
            k->put(k->ctx, batch, n);
        }
    }
    k->turn(k->ctx, o->windows);
    free(g.ids);
    free(g.late);
}

/* ---- strata ------------------------------------------------------------------------------- */

struct strata_ctx {
    const struct opts *o;
    struct twcs *t;
    struct st_clock clk;
    int64_t off;
    float *vecs;
    uint8_t *metas;
    struct store_record recs[BATCH];
    uint64_t batches;
};

static void strata_tick(struct strata_ctx *c)
{
    if (twcs_tick(c->t) != ST_OK)
        die("twcs_tick", "failed");
}

static void strata_put(void *ctx, const struct rec *r, int n)
{
    struct strata_ctx *c = ctx;
    int64_t hi = 0;
    for (int j = 0; j < n; j++) {
        float *v = c->vecs + (size_t)j * (size_t)c->o->dim;
        uint8_t *m = c->metas + (size_t)j * META;
        fill(&r[j], c->o->dim, v, m);
        c->recs[j] = (struct store_record){.id = (const uint8_t *)r[j].id,
                                           .id_len = IDLEN,
                                           .ts = r[j].ts,
                                           .op = STORE_OP_UPSERT,
                                           .vec = v,
                                           .meta = m,
                                           .meta_len = META};
        if (r[j].ts > hi)
            hi = r[j].ts;
    }
    /* The wall clock follows event time (the producer's), so the TTL sees the stream's. */
    int64_t wall = st_clock_wall_ms(&c->clk);
    if (hi > wall)
        st_clock_manual_advance(&c->clk, hi - wall);
    struct twcs_result res;
    for (;;) {
        int rc = twcs_write(c->t, 0, c->off, c->recs, (uint32_t)n, &res);
        if (rc == ST_OK && res.verdict == TWCS_ACCEPTED)
            break;
        if (rc != ST_EAGAIN)
            die("twcs_write",
                rc == ST_OK ? (res.reason ? res.reason : "rejected") : st_strerror(rc));
        usleep(1000);
    }
    c->off++;
    if (++c->batches % 8 == 0)
        strata_tick(c); /* seals, re-seals, merges, TTL drops: a tick per ~2k records */
}

static void strata_turn(void *ctx, int w)
{
    struct strata_ctx *c = ctx;
    if (w < c->o->windows)
        return;
    /* The end: a record past the last window's end + grace seals it, the clock moves past
     * the re-seal delay, and ticks run until nothing is left to do. */
    struct rec last = {.win = w, .ts = win_start(c->o, w) + GRACE + 1, .seed = 1};
    memcpy(last.id, "Z000000000000000", IDLEN + 1);
    strata_put(c, &last, 1);
    for (int i = 0; i < 20; i++) {
        st_clock_manual_advance(&c->clk, 1000);
        strata_tick(c);
    }
}

static void run_strata(const struct opts *o, struct sysres *res, struct wstat *ws)
{
    char dir[1100];
    snprintf(dir, sizeof(dir), "%.900s/strata-bench-storage-%d", o->dir, (int)getpid());
    mkdir(dir, 0755);
    struct strata_ctx c = {.o = o};
    st_clock_manual_init(&c.clk, win_start(o, 0));
    c.vecs = malloc((size_t)BATCH * (size_t)o->dim * sizeof(float));
    c.metas = malloc((size_t)BATCH * META);
    struct twcs_opts to = {
        .store = {.dir = dir,
                  .dim = (uint32_t)o->dim,
                  .wal_sync = STORE_SYNC_ALWAYS, /* as RocksDB's synced writes */
                  .clock = &c.clk},
        .window_ms = WIN_MS,
        .grace_ms = GRACE,
        .max_lateness_ms = (int64_t)(o->late_spread + 1) * WIN_MS,
        .ttl_ms = (int64_t)o->ttl_windows * WIN_MS,
        .reseal_delay_ms = o->reseal_ms,
        .reseal_min_ratio = (uint32_t)o->reseal_ratio,
        .max_open_windows = 8,
    };
    struct st_err err = {0};
    if (c.vecs == NULL || c.metas == NULL || twcs_open(&to, &c.t, &err) != ST_OK)
        die("twcs_open", err.msg);
    uint64_t d0 = dev_bytes();
    double t0 = now_s();
    struct sink k = {&c, strata_put, strata_turn};
    run_stream(o, &k, ws);
    struct store_stats ss;
    store_stats(twcs_store(c.t), &ss);
    struct twcs_stats ts;
    twcs_stats(c.t, &ts);
    struct twcs_window_info *wi = NULL;
    size_t nw = 0;
    if (twcs_windows(c.t, &wi, &nw) != ST_OK)
        die("twcs_windows", "failed");
    for (size_t i = 0; i < nw; i++) {
        long w = (long)((wi[i].start - win_start(o, 0)) / WIN_MS);
        if (w >= 0 && w < o->windows) {
            ws[w].strata_mb = (double)wi[i].bytes / 1e6;
            ws[w].strata_segments = wi[i].segments;
        }
    }
    free(wi);
    if (twcs_close(c.t) != ST_OK)
        die("twcs_close", dir);
    res->secs = now_s() - t0;
    res->dev_written = dev_bytes() - d0;
    res->wal = ss.wal_bytes_written;
    res->vlog = ss.vlog_bytes_written;
    res->seg = ss.segment_bytes_written;
    res->other = ss.manifest_bytes_written;
    res->store_written = res->wal + res->vlog + res->seg + res->other;
    res->disk_bytes = du(dir);
    res->ran = true;
    res->seals = ts.sealed;
    res->reseals = ts.resealed;
    res->drops = ts.dropped_ttl;
    if (ts.dropped_ttl == 0 && o->windows > o->ttl_windows + 1)
        die("strata", "the TTL dropped no window");
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_storage: could not remove %s\n", dir);
    free(c.vecs);
    free(c.metas);
}

/* ---- RocksDB ------------------------------------------------------------------------------ */

#ifdef STRATA_HAVE_ROCKSDB
struct rocks_ctx {
    const struct opts *o;
    rocksdb_t *db;
    rocksdb_writeoptions_t *wo;
    rocksdb_writebatch_t *wb;
    uint8_t *val;
    int dropped; /* windows [0, dropped) deleted */
};

static void rkey(const struct opts *o, int w, const char *id, uint8_t *k)
{
    uint64_t s = (uint64_t)win_start(o, w);
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(s >> (56 - 8 * i));
    if (id != NULL)
        memcpy(k + 8, id, IDLEN);
}

static void rocks_put(void *ctx, const struct rec *r, int n)
{
    struct rocks_ctx *c = ctx;
    const struct opts *o = c->o;
    size_t vl = 8 + (size_t)o->dim * 4 + META;
    rocksdb_writebatch_clear(c->wb);
    for (int j = 0; j < n; j++) {
        if (r[j].win < c->dropped)
            continue; /* expired on arrival, as strata does */
        uint8_t k[8 + IDLEN];
        rkey(o, r[j].win, r[j].id, k);
        memcpy(c->val, &r[j].ts, 8);
        fill(&r[j], o->dim, (float *)(void *)(c->val + 8), c->val + 8 + (size_t)o->dim * 4);
        rocksdb_writebatch_put(c->wb, (const char *)k, sizeof(k), (const char *)c->val, vl);
    }
    char *e = NULL;
    rocksdb_write(c->db, c->wo, c->wb, &e);
    if (e != NULL)
        die("rocksdb_write", e);
}

static void rocks_turn(void *ctx, int w)
{
    struct rocks_ctx *c = ctx;
    /* strata's rule: a window goes once its end is ttl behind the clock (the stream's time,
     * here the start of window w's turn: the previous window's records are in). */
    while (c->dropped < w && (int64_t)(c->dropped + 1) * WIN_MS <=
                                 (int64_t)(w)*WIN_MS - (int64_t)c->o->ttl_windows * WIN_MS) {
        uint8_t a[8], b[8];
        rkey(c->o, c->dropped, NULL, a);
        rkey(c->o, c->dropped + 1, NULL, b);
        char *e = NULL;
        rocksdb_writebatch_clear(c->wb);
        rocksdb_writebatch_delete_range(c->wb, (const char *)a, 8, (const char *)b, 8);
        rocksdb_write(c->db, c->wo, c->wb, &e);
        if (e != NULL)
            die("rocksdb_delete_range", e);
        c->dropped++;
    }
}

static uint64_t rprop(rocksdb_t *db, const char *name)
{
    uint64_t v = 0;
    if (rocksdb_property_int(db, name, &v) != 0)
        return 0;
    return v;
}

/* A statistics ticker's count (name as in its "NAME COUNT : n" line). */
static uint64_t rocks_stat(rocksdb_options_t *ro, const char *name)
{
    char *st = rocksdb_options_statistics_get_string(ro);
    uint64_t out = 0;
    size_t nl = strlen(name);
    for (char *p = st; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        unsigned long long v;
        if (strncmp(p, name, nl) == 0 && sscanf(p + nl, " COUNT : %llu", &v) == 1) {
            out = v;
            break;
        }
    }
    rocksdb_free(st);
    return out;
}

static void run_rocks(const struct opts *o, struct sysres *res, struct wstat *ws)
{
    char dir[1100];
    snprintf(dir, sizeof(dir), "%.900s/rocksdb-bench-storage-%d", o->dir, (int)getpid());
    rocksdb_options_t *ro = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(ro, 1);
    rocksdb_options_set_compression(ro, rocksdb_no_compression);
    rocksdb_options_enable_statistics(ro);
    char *e = NULL;
    struct rocks_ctx c = {.o = o};
    c.db = rocksdb_open(ro, dir, &e);
    if (e != NULL)
        die("rocksdb_open", e);
    c.wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(c.wo, 1);
    c.wb = rocksdb_writebatch_create();
    c.val = malloc(8 + (size_t)o->dim * 4 + META);
    uint64_t d0 = dev_bytes();
    double t0 = now_s();
    struct sink k = {&c, rocks_put, rocks_turn};
    run_stream(o, &k, ws);
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(c.db, fo, &e);
    rocksdb_flushoptions_destroy(fo);
    if (e != NULL)
        die("rocksdb_flush", e);
    /* A full compaction: what the deleted ranges cost to give back, and the space after. */
    uint64_t comp_before = rocks_stat(ro, "rocksdb.compact.write.bytes");
    rocksdb_compact_range(c.db, NULL, 0, NULL, 0);
    while (rprop(c.db, "rocksdb.compaction-pending") != 0 ||
           rprop(c.db, "rocksdb.num-running-compactions") != 0)
        usleep(10000);
    res->secs = now_s() - t0;
    for (int w = 0; w < o->windows; w++) {
        uint8_t a[8], b[8];
        rkey(o, w, NULL, a);
        rkey(o, w + 1, NULL, b);
        const char *sk[1] = {(const char *)a}, *lk[1] = {(const char *)b};
        size_t sl[1] = {8}, ll[1] = {8};
        uint64_t sz[1] = {0};
        rocksdb_approximate_sizes(c.db, 1, sk, sl, lk, ll, sz, &e);
        if (e != NULL)
            die("rocksdb_approximate_sizes", e);
        ws[w].rocks_mb = (double)sz[0] / 1e6;
    }
    /* Its own account: WAL, flush and compaction bytes (statistics tickers). */
    uint64_t wal = rocks_stat(ro, "rocksdb.wal.bytes");
    uint64_t flush = rocks_stat(ro, "rocksdb.flush.write.bytes");
    uint64_t comp = rocks_stat(ro, "rocksdb.compact.write.bytes");
    res->final_compaction = comp - comp_before;
    res->wal = wal;
    res->seg = flush;
    res->other = comp;
    res->store_written = wal + flush + comp;
    rocksdb_writebatch_destroy(c.wb);
    rocksdb_writeoptions_destroy(c.wo);
    rocksdb_close(c.db);
    rocksdb_options_destroy(ro);
    res->dev_written = dev_bytes() - d0;
    res->disk_bytes = du(dir);
    res->ran = true;
    free(c.val);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_storage: could not remove %s\n", dir);
}
#endif

/* ---- report ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct opts o = {.dir = "/tmp",
                     .systems = "strata,rocksdb",
                     .windows = 24,
                     .records = 20000,
                     .dim = 384,
                     .ttl_windows = 8,
                     .late_spread = 1,
                     .late = 0.05,
                     .upserts = 0.10,
                     .reseal_ms = 0,
                     .reseal_ratio = 8};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--dir") == 0)
            o.dir = v;
        else if (strcmp(a, "--systems") == 0)
            o.systems = v;
        else if (strcmp(a, "--csv") == 0)
            o.csv = v;
        else if (strcmp(a, "--windows") == 0)
            o.windows = atoi(v);
        else if (strcmp(a, "--records") == 0)
            o.records = atoi(v);
        else if (strcmp(a, "--dim") == 0)
            o.dim = atoi(v);
        else if (strcmp(a, "--ttl-windows") == 0)
            o.ttl_windows = atoi(v);
        else if (strcmp(a, "--late") == 0)
            o.late = atof(v);
        else if (strcmp(a, "--late-spread") == 0)
            o.late_spread = atoi(v);
        else if (strcmp(a, "--upserts") == 0)
            o.upserts = atof(v);
        else if (strcmp(a, "--reseal-delay-ms") == 0)
            o.reseal_ms = atol(v);
        else if (strcmp(a, "--reseal-ratio") == 0)
            o.reseal_ratio = atoi(v);
        else
            die("usage", "see the comment at the top of bench/bench_storage.c");
    }
    if (argc % 2 == 0)
        die("usage", "options take a value");
    if (o.reseal_ratio < 0 || o.reseal_ms < 0)
        die("usage", "--reseal-ratio and --reseal-delay-ms are >= 0");
    if (o.windows < 2 || o.records < BATCH || o.dim < 1 || o.dim > 4096 || o.ttl_windows < 1 ||
        o.late < 0 || o.upserts < 0 || o.late + o.upserts > 0.9 || o.late_spread < 1 ||
        o.late_spread >= o.ttl_windows)
        die("usage", "windows >= 2, records >= 256, dim 1..4096, ttl-windows >= 1, "
                     "late + upserts <= 0.9, 1 <= late-spread < ttl-windows");
    st_log_set_level(ST_LOG_WARNING);
    bool want_rocks = strstr(o.systems, "rocksdb") != NULL;
#ifndef STRATA_HAVE_ROCKSDB
    if (want_rocks)
        die("rocksdb", "built without librocksdb-dev (scripts/deps --bench)");
#endif
    struct wstat *ws = calloc((size_t)o.windows, sizeof(*ws));
    struct wstat *ws2 = calloc((size_t)o.windows, sizeof(*ws2));
    struct sysres rs[2] = {{.name = "strata"}, {.name = "RocksDB"}};
    if (ws == NULL || ws2 == NULL)
        die("calloc", "windows");
    if (strstr(o.systems, "strata") != NULL)
        run_strata(&o, &rs[0], ws);
#ifdef STRATA_HAVE_ROCKSDB
    if (want_rocks)
        run_rocks(&o, &rs[1], ws2);
#endif
    if (rs[1].ran) { /* the same stream: the same logical counts */
        for (int w = 0; w < o.windows; w++) {
            if (rs[0].ran && (ws[w].written != ws2[w].written || ws[w].live != ws2[w].live))
                die("stream", "the two systems were given different streams");
            ws[w].written = ws2[w].written;
            ws[w].live = ws2[w].live;
            ws[w].rocks_mb = ws2[w].rocks_mb;
        }
    }
    uint64_t rb = rec_bytes(&o), written = 0, live_kept = 0;
    int first_kept = o.windows - o.ttl_windows;
    for (int w = 0; w < o.windows; w++) {
        written += ws[w].written;
        if (w >= first_kept)
            live_kept += ws[w].live;
    }
    printf("storage costs: %d windows x %d records of %d-d float32 + %d B metadata + %d B id "
           "(%" PRIu64 " B a record), %.0f%% late (into one of the %d sealed windows before), "
           "%.0f%% upserts (an earlier id of the same window), TTL %d windows, strata's "
           "reseal_delay %ld ms and reseal_min_ratio %d (a window is %d ms of event time, a tick "
           "every %d records); %.1f MB written, %.1f MB live in the windows kept\n\n",
           o.windows, o.records, o.dim, META, IDLEN, rb, o.late * 100, o.late_spread,
           o.upserts * 100, o.ttl_windows, o.reseal_ms, o.reseal_ratio, WIN_MS, 8 * BATCH,
           (double)(written * rb) / 1e6, (double)(live_kept * rb) / 1e6);
    printf("| system | seconds | written by the store MB | write amp (store) | written, kernel "
           "count MB | write amp (kernel) | write amp without a final full compaction | on disk "
           "at the end MB | space amp | breakdown |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    FILE *csv = o.csv != NULL ? fopen(o.csv, "w") : NULL;
    if (o.csv != NULL && csv == NULL)
        die(o.csv, "cannot write");
    if (csv != NULL)
        fprintf(csv, "kind,system,window,records_written,records_live,logical_mb,store_mb,"
                     "store_written_mb,kernel_written_mb,write_amp,kernel_write_amp,space_amp,"
                     "late_spread,write_amp_no_final,seals,reseals\n");
    double logical = (double)(written * rb), live = (double)(live_kept * rb);
    for (int i = 0; i < 2; i++) {
        struct sysres *r = &rs[i];
        if (!r->ran)
            continue;
        char bd[300];
        if (i == 0)
            snprintf(bd, sizeof(bd),
                     "WAL %.0f + vector logs %.0f + segments %.0f + manifest %.1f; %" PRIu64
                     " seals, %" PRIu64 " re-seals, %" PRIu64 " TTL drops",
                     (double)r->wal / 1e6, (double)r->vlog / 1e6, (double)r->seg / 1e6,
                     (double)r->other / 1e6, r->seals, r->reseals, r->drops);
        else
            snprintf(bd, sizeof(bd),
                     "WAL %.0f + flushes %.0f + compactions %.0f (the final full one: %.0f)",
                     (double)r->wal / 1e6, (double)r->seg / 1e6, (double)r->other / 1e6,
                     (double)r->final_compaction / 1e6);
        double no_final = (double)(r->store_written - r->final_compaction) / logical;
        printf("| %s | %.1f | %.1f | %.2f | %.1f | %.2f | %.2f | %.1f | %.2f | %s |\n", r->name,
               r->secs, (double)r->store_written / 1e6, (double)r->store_written / logical,
               (double)r->dev_written / 1e6, (double)r->dev_written / logical, no_final,
               (double)r->disk_bytes / 1e6, (double)r->disk_bytes / live, bd);
        if (csv != NULL)
            fprintf(csv,
                    "total,%s,,%" PRIu64 ",%" PRIu64 ",%.3f,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f,%d,%.4f,"
                    "%" PRIu64 ",%" PRIu64 "\n",
                    r->name, written, live_kept, logical / 1e6, (double)r->disk_bytes / 1e6,
                    (double)r->store_written / 1e6, (double)r->dev_written / 1e6,
                    (double)r->store_written / logical, (double)r->dev_written / logical,
                    (double)r->disk_bytes / live, o.late_spread, no_final, r->seals, r->reseals);
    }
    printf("\nper window kept (space amp = its bytes on disk / its live logical bytes; strata: "
           "its segments, RocksDB: the approximate size of its key range):\n\n"
           "| window | records written | live | logical MB | strata MB (segments) | strata "
           "space amp | RocksDB MB | RocksDB space amp |\n|---|---|---|---|---|---|---|---|\n");
    for (int w = first_kept; w < o.windows; w++) {
        double lmb = (double)(ws[w].live * rb) / 1e6;
        printf("| %d | %" PRIu64 " | %" PRIu64 " | %.2f | %.2f (%u) | %.2f | %.2f | %.2f |\n", w,
               ws[w].written, ws[w].live, lmb, ws[w].strata_mb, ws[w].strata_segments,
               rs[0].ran ? ws[w].strata_mb / lmb : 0, ws[w].rocks_mb,
               rs[1].ran ? ws[w].rocks_mb / lmb : 0);
        for (int i = 0; csv != NULL && i < 2; i++)
            if (rs[i].ran) {
                double mb = i == 0 ? ws[w].strata_mb : ws[w].rocks_mb;
                fprintf(csv, "window,%s,%d,%" PRIu64 ",%" PRIu64 ",%.3f,%.3f,,,,,%.4f,%d,,,\n",
                        rs[i].name, w, ws[w].written, ws[w].live, lmb, mb, mb / lmb, o.late_spread);
            }
    }
    if (csv != NULL && fclose(csv) != 0)
        die(o.csv, "write failed");
    free(ws);
    free(ws2);
    return 0;
}
