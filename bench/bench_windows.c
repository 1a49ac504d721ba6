/*
 * Search across many windows (issue 15): what splitting one collection into many window parts
 * costs a search, in-process, no brokers.
 *
 *   bench_windows [--dir /tmp/strata-bench-windows] [--queries 10000] [--layouts 1,6,24,24x2,24c]
 *                 [--ef 10,12,16,...] [--full] [--passes 1] [--threads 2] [--exhaustive
 *                 [--whole-beams]]
 *                 [--search-threads 1] [--gt-cache /tmp/strata-fmnist-gt.bin]
 *
 * Fashion-MNIST train (Debian dataset-fashion-mnist, 60,000 x 784) is split in row order into
 * W one-minute windows; "24x2" also splits each window's records between two ingest nodes
 * (alternate rows), 48 parts; "24c" orders the rows by class first, so each window holds one
 * or two of the ten classes, as windows of drifting content would. Each part is a sealed
 * segment written with the store's segment writer and indexed by idx_part_build (HNSW, M=16,
 * ef_construction=200) — the indexer's own code — and kept under --dir: a later run loads the
 * parts instead of building them. A "uK" suffix (e.g. "24x2u6") compacts the layout as the
 * indexer's index compaction does: one unit (idx_part_build_unit, same parameters) per K
 * windows, over every node's parts of them, searched instead of the parts. A view over a layout's
 * parts is searched through idx_view_search, single-threaded, with the 10,000 test images (k=10)
 * for each ef of the sweep (--search-threads N > 1: each query's parts searched side by side on
 * N threads, the indexer's indexer.search_threads; queries still one after another); recall@10
 * against exact ground truth (computed once with st_exact_topk and cached in
 * --gt-cache, the file bench_ann uses).
 *
 * Each layout's sweep stops after the first ef reaching recall 0.995, or the third reaching
 * 0.99, unless --full. With --exhaustive every layout is also searched as before issue 15
 * (every part for k with the full ef: idx_view_query.exhaustive), in the same run, alternating
 * per ef, and a last table compares the two; with --whole-beams as well, the reference is the
 * bounded search with every part searched for k with the whole ef (idx_view_query.whole_beams:
 * the search before each part's share) instead.
 * Output: markdown tables (per ef, then the lowest ef reaching recall 0.95 and 0.99 with its
 * QPS and the ratio to the one-window layout at its own lowest such ef).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx_part.h"
#include "idx_pool.h"
#include "idx_view.h"
#include "st_clock.h"
#include "st_distance.h"
#include "store_int.h"

#define DIM     784
#define K       10
#define WINDOW  60000 /* ms */
#define NTRAIN  60000
#define NTEST   10000
#define MAX_EFS 32

static float *train, *test;
static uint32_t *gt;
static unsigned nq = NTEST, passes = 1, threads = 2;
static const char *dir = "/tmp/strata-bench-windows", *gt_cache = "/tmp/strata-fmnist-gt.bin";

static double now_s(void)
{
    return (double)st_clock_mono_ns(NULL) / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_windows: %s: %s\n", what, why);
    exit(1);
}

static float *load_idx(const char *name, size_t n)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "gzip -dc /usr/share/datasets/fashion-mnist/%s", name);
    FILE *p = popen(cmd, "r");
    unsigned char hdr[16];
    unsigned char *px = malloc(n * DIM);
    if (p == NULL || px == NULL || fread(hdr, 1, 16, p) != 16 ||
        fread(px, 1, n * DIM, p) != n * DIM)
        die(name, "cannot read (is dataset-fashion-mnist installed?)");
    pclose(p);
    float *v = malloc(n * DIM * sizeof(float));
    if (v == NULL)
        die(name, "out of memory");
    for (size_t i = 0; i < n * DIM; i++)
        v[i] = px[i];
    free(px);
    return v;
}

/* ---- exact ground truth (shared with bench_ann: same file, same layout) ---- */

struct gt_job {
    unsigned t, nt;
};

static void *gt_worker(void *arg)
{
    struct gt_job *j = arg;
    struct st_hit hits[K];
    for (unsigned q = j->t; q < NTEST; q += j->nt) {
        size_t n = st_exact_topk(test + (size_t)q * DIM, train, NTRAIN, DIM, ST_METRIC_L2, K, NULL,
                                 NULL, hits);
        for (size_t i = 0; i < n; i++)
            gt[(size_t)q * K + i] = hits[i].id;
    }
    return NULL;
}

static void ground_truth(void)
{
    gt = malloc((size_t)NTEST * K * sizeof(*gt));
    char name[600];
    snprintf(name, sizeof(name), "%s.%u.%u", gt_cache, NTRAIN, NTEST);
    FILE *f = fopen(name, "rb");
    if (f != NULL && fread(gt, sizeof(*gt), (size_t)NTEST * K, f) == (size_t)NTEST * K) {
        fclose(f);
        printf("ground truth: %s\n", name);
        return;
    }
    if (f != NULL)
        fclose(f);
    double t0 = now_s();
    unsigned nt = threads ? threads : 1;
    pthread_t th[64];
    struct gt_job jobs[64];
    for (unsigned t = 0; t < nt && t < 64; t++) {
        jobs[t] = (struct gt_job){t, nt};
        if (pthread_create(&th[t], NULL, gt_worker, &jobs[t]) != 0)
            die("ground truth", "pthread_create");
    }
    for (unsigned t = 0; t < nt && t < 64; t++)
        pthread_join(th[t], NULL);
    printf("ground truth: exact scan in %.1f s, cached in %s\n", now_s() - t0, name);
    if ((f = fopen(name, "wb")) != NULL) {
        if (fwrite(gt, sizeof(*gt), (size_t)NTEST * K, f) != (size_t)NTEST * K)
            fprintf(stderr, "bench_windows: %s: short write\n", name);
        fclose(f);
    }
}

/* ---- layouts ---- */

/* Train rows ordered by class (stable): windows of a "c" layout hold one or a few classes
 * each, as windows of drifting content would. */
static uint32_t *by_class;

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void load_classes(void)
{
    FILE *p = popen("gzip -dc /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", "r");
    unsigned char hdr[8], *lab = malloc(NTRAIN);
    if (p == NULL || lab == NULL || fread(hdr, 1, 8, p) != 8 || fread(lab, 1, NTRAIN, p) != NTRAIN)
        die("train-labels-idx1-ubyte.gz", "cannot read");
    pclose(p);
    by_class = malloc(NTRAIN * sizeof(*by_class));
    size_t n = 0;
    for (unsigned c = 0; c < 256; c++)
        for (unsigned i = 0; i < NTRAIN; i++)
            if (lab[i] == c)
                by_class[n++] = i;
    free(lab);
}

struct layout {
    char name[64];
    unsigned windows, nodes;
    bool by_class;           /* "c": rows ordered by class before the split (drifting content) */
    unsigned unit;           /* "uK": parts compacted into units of K windows (0: none) */
    bool shared;             /* "s" (--index ivfpq): each window adopts the previous window's
                                quantizer when it fits (idx_part_build_on, as the indexer does) */
    unsigned adopted;        /* of the parts built, how many adopted a quantizer */
    struct idx_part **parts; /* newest window first, as a view orders them */
    size_t nparts;
    struct idx_view *view;
    double build_s;
    bool built; /* false: every part loaded from --dir */
};

/* --index ivfpq: IVF-PQ parts (nlist 256, 196 x 4-bit fast-scan, bench_ann's 4-bit
 * settings; the sweep's values are nprobe) instead of HNSW. */
static bool ivf;
static const char *ix_ext(void)
{
    return ivf ? "ivfpq" : "hnsw";
}
static const char *ix_desc(void)
{
    return ivf ? "IVF-PQ nlist=256 m=196 nbits=4 rerank 64 (the sweep's values are nprobe)"
               : "HNSW M=16 ef_construction=200";
}
static struct cfg_index bench_cix(void)
{
    return ivf ? (struct cfg_index){.type = CFG_INDEX_IVFPQ, .nlist = 256, .pq_m = 196, .nbits = 4}
               : (struct cfg_index){.type = CFG_INDEX_HNSW, .m = 16, .ef_construction = 200};
}

/* Writes the segment of (window w, node) if it is not there, then builds or loads its part
 * (built: with donor's quantizer when it fits, donor NULL or not). */
static struct idx_part *make_part(struct layout *l, unsigned w, unsigned node,
                                  const struct idx_part *donor, bool *built)
{
    unsigned lo = (unsigned)((uint64_t)w * NTRAIN / l->windows);
    unsigned hi = (unsigned)((uint64_t)(w + 1) * NTRAIN / l->windows);
    /* The rows of the window (by class in "c" layouts), ascending: ids sorted. */
    uint32_t *rows = malloc((hi - lo) * sizeof(*rows));
    size_t nr = 0;
    for (unsigned i = lo; i < hi; i++)
        if (l->nodes == 1 || i % l->nodes == node)
            rows[nr++] = l->by_class ? by_class[i] : i;
    qsort(rows, nr, sizeof(*rows), u32_cmp);
    int64_t start = (int64_t)w * WINDOW;
    struct idx_cat_entry e = {.start = start, .end = start + WINDOW, .version = 1};
    snprintf(e.node, sizeof(e.node), "n%u", node);
    snprintf(e.index, sizeof(e.index), "%s", ix_ext());
    char seg[4096], ix[4096];
    char sub[40];
    snprintf(sub, sizeof(sub), "%ux%u%s", l->windows, l->nodes, l->by_class ? "-by-class" : "");
    if (snprintf(seg, sizeof(seg), "%s/%s/%s@%lld@v1.seg", dir, sub, e.node, (long long)start) >=
            (int)sizeof(seg) ||
        snprintf(ix, sizeof(ix), "%s/%s/%s@%lld@v1%s.%s", dir, sub, e.node, (long long)start,
                 l->shared ? "-shared" : "", ix_ext()) >= (int)sizeof(ix))
        die(dir, "path too long");
    struct idx_part *p = NULL;
    struct st_err err = {0};
    /* A shared layout's parts depend on their donors: built again all together. */
    if (!l->shared && access(seg, F_OK) == 0 && access(ix, F_OK) == 0 &&
        idx_part_load(&e, seg, ix, ST_METRIC_L2, true, &p, &err) == ST_OK)
        return p;
    err = (struct st_err){0};
    unlink(seg);
    unlink(ix);
    size_t n = 0;
    struct store_seg_in *in = calloc(hi - lo, sizeof(*in));
    char(*ids)[8] = calloc(hi - lo, 8);
    if (in == NULL || ids == NULL)
        die("segment", "out of memory");
    for (size_t j = 0; j < nr; j++) {
        uint32_t i = rows[j];
        snprintf(ids[n], 8, "%06u", i);
        in[n] = (struct store_seg_in){.id = (const uint8_t *)ids[n],
                                      .id_len = 6,
                                      .ts = start + (int64_t)j,
                                      .partition = (int32_t)node,
                                      .offset = i,
                                      .op = STORE_OP_UPSERT,
                                      .vec = train + (size_t)i * DIM};
        n++;
    }
    free(rows);
    struct store_seg_meta m = {start, start + WINDOW, STORE_SEG_SEALED, 1, false, 0, 0};
    uint64_t bytes;
    if (store_segment_write(NULL, seg, DIM, &m, in, n, &bytes, &err) != ST_OK)
        die(seg, err.msg);
    free(in);
    free(ids);
    struct cfg_index cix = bench_cix();
    if (idx_part_build_on(&e, seg, ix, &cix, ST_METRIC_L2, threads, donor, NULL, &p, &err) != ST_OK)
        die(ix, err.msg);
    l->adopted += p->adopted;
    *built = true;
    return p;
}

static void layout_open(struct layout *l)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%ux%u%s", dir, l->windows, l->nodes,
             l->by_class ? "-by-class" : "");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die(dir, strerror(errno));
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die(path, strerror(errno));
    l->nparts = (size_t)l->windows * l->nodes;
    l->parts = calloc(l->nparts, sizeof(*l->parts));
    double t0 = now_s();
    size_t i = 0;
    /* Built oldest first, as windows seal (a shared layout's donor is the part built last),
     * kept newest first, as a view orders them. */
    (void)i;
    const struct idx_part *donor = NULL;
    for (unsigned w = 0; w < l->windows; w++)
        for (unsigned node = 0; node < l->nodes; node++) {
            struct idx_part *p = make_part(l, w, node, l->shared ? donor : NULL, &l->built);
            l->parts[(size_t)(l->windows - 1 - w) * l->nodes + node] = p;
            donor = p;
        }
    if (l->unit > 0) { /* index compaction: one unit per K windows (every node's parts) */
        size_t nu = (l->windows + l->unit - 1) / l->unit;
        struct idx_part **units = calloc(nu, sizeof(*units));
        for (size_t u = 0; u < nu; u++) {
            unsigned w0 = (unsigned)u * l->unit, w1 = w0 + l->unit;
            w1 = w1 < l->windows ? w1 : l->windows;
            size_t nm = 0;
            struct idx_cat_entry *mem = calloc((w1 - w0) * l->nodes, sizeof(*mem));
            const char **segs = calloc((w1 - w0) * l->nodes, sizeof(*segs));
            for (size_t pi = l->nparts; pi-- > 0;) { /* oldest first */
                const struct idx_part *p = l->parts[pi];
                if (p->e.start >= (int64_t)w0 * WINDOW && p->e.start < (int64_t)w1 * WINDOW) {
                    mem[nm] = p->e;
                    segs[nm++] = p->mem[0].seg_path;
                }
            }
            struct idx_part_unit spec = {.id = u + 1, .mem = mem, .seg_paths = segs, .n = nm};
            spec.e = (struct idx_cat_entry){
                .start = (int64_t)w0 * WINDOW, .end = (int64_t)w1 * WINDOW, .version = 1};
            snprintf(spec.e.index, sizeof(spec.e.index), "%s", ix_ext());
            char ix[800];
            snprintf(ix, sizeof(ix), "%s/unit%u-%zu@g1.%s", path, l->unit, u, ix_ext());
            struct st_err err = {0};
            if (access(ix, F_OK) != 0 || idx_part_load_unit(&spec, ix, ST_METRIC_L2, true,
                                                            &units[nu - 1 - u], &err) != ST_OK) {
                struct cfg_index cix = bench_cix();
                err = (struct st_err){0};
                if (idx_part_build_unit(&spec, ix, &cix, ST_METRIC_L2, threads, NULL,
                                        &units[nu - 1 - u], &err) != ST_OK)
                    die(ix, err.msg);
                l->built = true;
            }
            free(mem);
            free(segs);
        }
        for (size_t pi = 0; pi < l->nparts; pi++)
            idx_part_unref(l->parts[pi]);
        free(l->parts);
        l->parts = units;
        l->nparts = nu;
    }
    l->build_s = now_s() - t0;
    if (idx_view_build(l->parts, l->nparts, NULL, &l->view) != ST_OK)
        die(l->name, "idx_view_build failed");
}

/* The train row of a hit (ids are row numbers). */
static uint32_t hit_row(const struct idx_view_hit *h)
{
    struct store_seg_record r;
    idx_part_record(h->part, h->rec, &r);
    uint32_t row = 0;
    for (uint32_t i = 0; i < r.id_len; i++)
        row = row * 10 + (uint32_t)(r.id[i] - '0');
    return row;
}

/* --search-threads N > 1: the helpers each query lends its parts to. */
static unsigned search_threads = 1;
/* --whole-beams: the reference (--exhaustive) is the bounded search without parts' shares */
static bool ref_whole;
static struct idx_pool *search_pool;

struct result {
    double recall, qps, parts_per_query, again_per_query;
};

static struct result run(const struct layout *l, uint32_t ef, bool exhaustive)
{
    struct idx_view_hit *hits = malloc((size_t)nq * K * sizeof(*hits));
    size_t *counts = malloc(nq * sizeof(*counts));
    struct result r = {0};
    uint64_t parts = 0, again = 0;
    for (unsigned pass = 0; pass < passes; pass++) {
        parts = again = 0;
        double t0 = now_s();
        for (unsigned q = 0; q < nq; q++) {
            struct idx_view_query vq = {.vec = test + (size_t)q * DIM,
                                        .k = K,
                                        .ef = ivf ? 0 : ef,
                                        .nprobe = ivf ? ef : 0,
                                        .from_ts = INT64_MIN,
                                        .to_ts = INT64_MAX,
                                        .exhaustive = exhaustive && !ref_whole,
                                        .whole_beams = exhaustive && ref_whole,
                                        .pool = search_pool};
            struct idx_view_stats st;
            if (idx_view_search(l->view, &vq, hits + (size_t)q * K, &counts[q], &st) != ST_OK)
                die(l->name, "idx_view_search failed");
            parts += st.parts_searched;
            again += st.parts_again;
        }
        double qps = nq / (now_s() - t0);
        if (qps > r.qps)
            r.qps = qps;
    }
    size_t found = 0;
    for (unsigned q = 0; q < nq; q++)
        for (size_t j = 0; j < counts[q]; j++) {
            uint32_t row = hit_row(&hits[(size_t)q * K + j]);
            for (unsigned g = 0; g < K; g++)
                if (gt[(size_t)q * K + g] == row) {
                    found++;
                    break;
                }
        }
    r.recall = (double)found / ((double)nq * K);
    r.parts_per_query = (double)parts / nq;
    r.again_per_query = (double)again / nq;
    free(hits);
    free(counts);
    return r;
}

static size_t parse_list(const char *s, uint32_t *out, size_t cap)
{
    size_t n = 0;
    while (*s != '\0' && n < cap) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0)
            die("--ef", "expects a comma-separated list of positive numbers");
        out[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv)
{
    uint32_t efs[MAX_EFS] = {10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128};
    size_t nefs = 11;
    const char *layouts = "1,6,24,24x2,24c";
    bool full = false, both = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--full") == 0) {
            full = true;
            continue;
        }
        if (strcmp(a, "--exhaustive") == 0) {
            both = true;
            continue;
        }
        if (strcmp(a, "--whole-beams") == 0) {
            ref_whole = true;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "usage: bench_windows [--dir D] [--queries N] [--layouts 1,6,24,24x2] "
                            "[--ef 10,16,...] [--full] [--passes N] [--threads N] [--exhaustive "
                            "[--whole-beams]] [--search-threads N] [--gt-cache FILE]\n");
            return 2;
        }
        if (strcmp(a, "--dir") == 0)
            dir = v;
        else if (strcmp(a, "--queries") == 0)
            nq = (unsigned)atoi(v);
        else if (strcmp(a, "--layouts") == 0)
            layouts = v;
        else if (strcmp(a, "--ef") == 0)
            nefs = parse_list(v, efs, MAX_EFS);
        else if (strcmp(a, "--passes") == 0)
            passes = (unsigned)atoi(v);
        else if (strcmp(a, "--threads") == 0)
            threads = (unsigned)atoi(v);
        else if (strcmp(a, "--gt-cache") == 0)
            gt_cache = v;
        else if (strcmp(a, "--search-threads") == 0)
            search_threads = (unsigned)atoi(v);
        else if (strcmp(a, "--index") == 0 && (strcmp(v, "ivfpq") == 0 || strcmp(v, "hnsw") == 0))
            ivf = strcmp(v, "ivfpq") == 0;
        else
            die(a, "unknown option");
        i++;
    }
    if (ref_whole && !both)
        die("--whole-beams", "names the reference of --exhaustive: give both");
    if (nq == 0 || nq > NTEST)
        nq = NTEST;
    if (passes == 0)
        passes = 1;
    train = load_idx("train-images-idx3-ubyte.gz", NTRAIN);
    test = load_idx("t10k-images-idx3-ubyte.gz", NTEST);
    if (search_threads > 1 && idx_pool_new(search_threads - 1, &search_pool) != ST_OK)
        die("--search-threads", "cannot start the threads");
    if (search_threads > 1)
        printf("Fashion-MNIST: %u x %u, %u queries, k=%u, %s, "
               "kernels=%s, each query's parts searched on %u threads\n",
               NTRAIN, DIM, nq, K, ix_desc(), st_kernels()->name, search_threads);
    else
        printf("Fashion-MNIST: %u x %u, %u queries, k=%u, %s, "
               "kernels=%s, single-threaded search\n",
               NTRAIN, DIM, nq, K, ix_desc(), st_kernels()->name);
    ground_truth();

    struct layout ls[8];
    size_t nl = 0;
    for (const char *s = layouts; *s != '\0' && nl < 8;) {
        struct layout *l = &ls[nl];
        memset(l, 0, sizeof(*l));
        char *end;
        l->windows = (unsigned)strtoul(s, &end, 10);
        l->nodes = *end == 'x' ? (unsigned)strtoul(end + 1, &end, 10) : 1;
        if (*end == 'c') {
            l->by_class = true;
            end++;
            if (by_class == NULL)
                load_classes();
        }
        if (*end == 's') {
            if (!ivf)
                die("--layouts", "the \"s\" suffix (a shared quantizer) needs --index ivfpq");
            l->shared = true;
            end++;
        }
        if (*end == 'u')
            l->unit = (unsigned)strtoul(end + 1, &end, 10);
        if (l->windows == 0 || l->nodes == 0)
            die("--layouts", "expects e.g. 1,6,24,24x2,24c");
        snprintf(l->name, sizeof(l->name), "%ux%u%s%s", l->windows, l->nodes,
                 l->by_class ? " by class" : "", l->shared ? " shared" : "");
        if (l->unit > 0)
            snprintf(l->name + strlen(l->name), sizeof(l->name) - strlen(l->name), ", units of %u",
                     l->unit);
        s = *end == ',' ? end + 1 : end;
        layout_open(l);
        printf("layout %s: %zu parts %s in %.1f s", l->name, l->nparts,
               l->built ? "built" : "loaded", l->build_s);
        if (l->shared)
            printf(" (%u of them adopted the previous window's quantizer)", l->adopted);
        printf("\n");
        fflush(stdout);
        nl++;
    }

    /* res[mode][layout][ef] */
    static struct result res[2][8][MAX_EFS];
    static size_t done[2][8];
    int modes = both ? 2 : 1;
    for (size_t li = 0; li < nl; li++) {
        size_t past99[2] = {0, 0};
        bool stop[2] = {false, false};
        for (size_t e = 0; e < nefs && !(stop[0] && stop[1 % modes]); e++)
            for (int mode = 0; mode < modes; mode++) { /* alternating: the same load for both */
                if (stop[mode])
                    continue;
                res[mode][li][e] = run(&ls[li], efs[e], both && mode == 0);
                done[mode][li] = e + 1;
                past99[mode] += res[mode][li][e].recall >= 0.99;
                stop[mode] = !full && (res[mode][li][e].recall >= 0.995 || past99[mode] == 3);
            }
    }

    for (int mode = 0; mode < modes; mode++) {
        const char *what = !both       ? ""
                           : mode == 1 ? " — bounded"
                           : ref_whole ? " — bounded, whole beams (before the parts' shares)"
                                       : " — exhaustive (as before)";
        const char *knob = ivf ? "nprobe" : "ef";
        printf("\n### per %s%s\n\n| layout | parts | %s | recall@10 | QPS | parts searched | "
               "searched again |\n|---|---|---|---|---|---|---|\n",
               knob, what, knob);
        for (size_t li = 0; li < nl; li++)
            for (size_t e = 0; e < done[mode][li]; e++) {
                const struct result *r = &res[mode][li][e];
                printf("| %s | %zu | %u | %.4f | %.0f | %.1f | %.2f |\n", ls[li].name,
                       ls[li].nparts, efs[e], r->recall, r->qps, r->parts_per_query,
                       r->again_per_query);
            }
        for (int t = 0; t < 2; t++) {
            double target = t == 0 ? 0.95 : 0.99;
            printf("\n### lowest %s with recall@10 >= %.2f%s\n\n"
                   "| layout | parts | %s | recall@10 | QPS | ratio to 1 window |\n"
                   "|---|---|---|---|---|---|\n",
                   knob, target, what, knob);
            /* The one-window layout (one part), else the first, at its own lowest such ef. */
            size_t bi = 0;
            for (size_t li = 0; li < nl; li++)
                if (ls[li].nparts == 1 && !ls[li].by_class) {
                    bi = li;
                    break;
                }
            size_t lowest[8];
            for (size_t li = 0; li < nl; li++) {
                lowest[li] = 0;
                while (lowest[li] < done[mode][li] && res[mode][li][lowest[li]].recall < target)
                    lowest[li]++;
            }
            double base = lowest[bi] < done[mode][bi] ? res[mode][bi][lowest[bi]].qps : 0;
            for (size_t li = 0; li < nl; li++) {
                size_t e = lowest[li];
                if (e == done[mode][li]) {
                    printf("| %s | %zu | — | not reached | | |\n", ls[li].name, ls[li].nparts);
                    continue;
                }
                const struct result *r = &res[mode][li][e];
                if (base > 0)
                    printf("| %s | %zu | %u | %.4f | %.0f | %.2f× |\n", ls[li].name, ls[li].nparts,
                           efs[e], r->recall, r->qps, r->qps / base);
                else
                    printf("| %s | %zu | %u | %.4f | %.0f | — |\n", ls[li].name, ls[li].nparts,
                           efs[e], r->recall, r->qps);
            }
        }
    }
    if (both) {
        printf("\n### before (%s) and after (bounded), same run, same ef\n\n"
               "| layout | ef | recall before | recall after | QPS before | QPS after | after / "
               "before |\n"
               "|---|---|---|---|---|---|---|\n",
               ref_whole ? "whole beams" : "exhaustive");
        for (size_t li = 0; li < nl; li++)
            for (size_t e = 0; e < done[0][li] && e < done[1][li]; e++) {
                const struct result *b = &res[0][li][e], *a = &res[1][li][e];
                printf("| %s | %u | %.4f | %.4f | %.0f | %.0f | %.2f× |\n", ls[li].name, efs[e],
                       b->recall, a->recall, b->qps, a->qps, a->qps / b->qps);
            }
    }
    for (size_t li = 0; li < nl; li++) {
        idx_view_release(ls[li].view);
        for (size_t p = 0; p < ls[li].nparts; p++)
            idx_part_unref(ls[li].parts[p]);
        free(ls[li].parts);
    }
    free(train);
    free(test);
    free(gt);
    return 0;
}
