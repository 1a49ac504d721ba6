/*
 * Window drop time against window size (issue 17): TTL and FIFO remove a whole window, "no
 * rewrite", so the time to drop one should not grow with its size. For each size a fresh store
 * gets one event-time window of that many bytes of 768-d float32 records through twcs (as the
 * ingest node writes them), sealed by a tick; reopened with a FIFO cap of one byte, the next
 * tick drops it — the time of that tick is the drop time, and the time until its files are
 * gone (the store's reclaimer thread unlinks them) the space's (warm: the window as written, its
 * pages in the page cache; cold: a copy written back and evicted first, as an old window a TTL
 * drops; needs root for /proc/sys/vm/drop_caches). The reference, in the same run and
 * directory: rewriting the same bytes (read the window's files, write them to a new file,
 * fdatasync), which is what a store that deletes by compaction pays at least once.
 *
 *   build/bench/bench_drop [--dir /tmp] [--sizes-mb 1,10,100,1000] [--csv FILE]
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_log.h"
#include "store.h"
#include "twcs.h"

#define DIM    768
#define BATCH  256
#define WIN_MS 60000

static double now_s(void)
{
    return (double)st_clock_mono_ns(NULL) / 1e9;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_drop: %s: %s\n", what, why);
    exit(1);
}

static struct twcs *open_twcs(const char *dir, uint64_t max_bytes)
{
    struct twcs_opts o = {.store = {.dir = dir, .dim = DIM, .wal_sync = STORE_SYNC_BATCH},
                          .window_ms = WIN_MS,
                          .grace_ms = 1000,
                          .max_lateness_ms = WIN_MS,
                          .max_bytes = max_bytes};
    struct twcs *t;
    struct st_err err = {0};
    if (twcs_open(&o, &t, &err) != ST_OK)
        die("twcs_open", err.msg);
    return t;
}

static void put(struct twcs *t, int64_t off, struct store_record *r, uint32_t n)
{
    struct twcs_result res;
    for (;;) {
        int rc = twcs_write(t, 0, off, r, n, &res);
        if (rc == ST_OK && res.verdict == TWCS_ACCEPTED)
            return;
        if (rc != ST_EAGAIN)
            die("twcs_write", rc == ST_OK ? "rejected" : st_strerror(rc));
        usleep(1000); /* back-pressure: a flush is behind */
    }
}

/* Bytes of the regular files under dir (the store's files). */
static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t sum = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char p[1400];
        struct stat st;
        snprintf(p, sizeof(p), "%.1000s/%.255s", dir, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    if (d != NULL)
        closedir(d);
    return sum;
}

/* The reference: every .seg file under dir read and written to one new file, fdatasync. */
static double rewrite(const char *dir)
{
    char out[1100];
    snprintf(out, sizeof(out), "%.1000s/rewrite.bin", dir);
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0)
        die(out, "open");
    size_t cap = 1u << 20;
    char *buf = malloc(cap);
    double t0 = now_s();
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".seg") != 0)
            continue;
        char p[1400];
        snprintf(p, sizeof(p), "%.1000s/%.255s", dir, e->d_name);
        int fi = open(p, O_RDONLY);
        ssize_t n;
        while (fi >= 0 && (n = read(fi, buf, cap)) > 0)
            if (write(fo, buf, (size_t)n) != n)
                die(out, "write");
        if (fi >= 0)
            close(fi);
    }
    if (d != NULL)
        closedir(d);
    if (fdatasync(fo) != 0)
        die(out, "fdatasync");
    double t = now_s() - t0;
    close(fo);
    unlink(out);
    free(buf);
    return t;
}

int main(int argc, char **argv)
{
    const char *base = "/tmp", *sizes = "1,10,100,1000", *csv_path = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0)
            base = argv[i + 1];
        else if (strcmp(argv[i], "--sizes-mb") == 0)
            sizes = argv[i + 1];
        else if (strcmp(argv[i], "--csv") == 0)
            csv_path = argv[i + 1];
        else
            die("usage", "bench_drop [--dir D] [--sizes-mb 1,10,100,1000] [--csv FILE]");
    }
    st_log_set_level(ST_LOG_WARNING);
    printf("window drop time against window size: %d-d float32 records, one window per store, "
           "sealed, then dropped by a FIFO tick; the reference rewrites the window's segment "
           "files (read + write + fdatasync) in the same directory\n\n",
           DIM);
    printf("drop ms: the tick that drops the window (it is gone from the table and from reads "
           "when it returns); space freed ms: until its files are unlinked (the store's "
           "reclaimer thread, after the tick)\n\n");
    printf("| window MB | records | store MB after seal | seal s | drop ms | space freed ms | "
           "drop ms, cold | space freed ms, cold | rewrite ms | drop / rewrite | "
           "drop / the first size's drop |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|\n");
    FILE *csv = csv_path != NULL ? fopen(csv_path, "w") : NULL;
    if (csv_path != NULL && csv == NULL)
        die(csv_path, "cannot write");
    if (csv != NULL)
        fprintf(csv, "window_mb,records,store_mb,seal_s,drop_ms,freed_ms,drop_cold_ms,"
                     "freed_cold_ms,rewrite_ms\n");
    double first = 0;
    char *list = strdup(sizes);
    for (char *tok = strtok(list, ","); tok != NULL; tok = strtok(NULL, ",")) {
        long mb = atol(tok);
        if (mb <= 0)
            die("--sizes-mb", tok);
        char dir[1100];
        snprintf(dir, sizeof(dir), "%.900s/strata-bench-drop-%d-%ld", base, (int)getpid(), mb);
        mkdir(dir, 0755);
        struct twcs *t = open_twcs(dir, 0);
        uint64_t nrec = (uint64_t)mb * 1000000 / (DIM * 4);
        int64_t w0 = (st_clock_wall_ms(NULL) - 30 * 60000) / WIN_MS * WIN_MS;
        static float vecs[BATCH][DIM];
        char ids[BATCH][24];
        struct store_record r[BATCH];
        int64_t off = 0;
        for (uint64_t k = 0; k < nrec; k += BATCH, off++) {
            uint32_t n = nrec - k < BATCH ? (uint32_t)(nrec - k) : BATCH;
            for (uint32_t i = 0; i < n; i++) {
                snprintf(ids[i], sizeof(ids[i]), "r%" PRIu64, k + i);
                for (int j = 0; j < DIM; j++)
                    vecs[i][j] = (float)((k + i) * 31 + (uint64_t)j) * 1e-3f;
                r[i] = (struct store_record){.id = (const uint8_t *)ids[i],
                                             .id_len = (uint32_t)strlen(ids[i]),
                                             .ts = w0 + (int64_t)((k + i) % WIN_MS),
                                             .op = STORE_OP_UPSERT,
                                             .vec = vecs[i]};
            }
            put(t, off, r, n);
        }
        /* One record two windows later moves the watermark past the window: the tick seals. */
        r[0].ts = w0 + 2 * WIN_MS;
        r[0].id = (const uint8_t *)"wm";
        r[0].id_len = 2;
        put(t, off++, r, 1);
        double ts0 = now_s();
        if (twcs_tick(t) != ST_OK)
            die("tick", "seal");
        double seal = now_s() - ts0;
        if (twcs_close(t) != ST_OK)
            die("twcs_close", dir);
        double store_mb = (double)dir_bytes(dir) / 1e6;
        double rw = rewrite(dir);
        /* Twice: the window as it was written (its pages in the page cache), and a copy of it
         * made cold (written back and evicted first: an old window a TTL drops). */
        double drop = 0, cold = -1, drop_freed = 0, cold_freed = -1;
        for (int pass = 0; pass < 2; pass++) {
            char copy[1200];
            snprintf(copy, sizeof(copy), "%s.cold", dir);
            const char *d = pass == 0 ? dir : copy;
            if (pass == 0) {
                char cmd[2600];
                snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s.cold'", dir, dir);
                if (system(cmd) != 0)
                    die("cp", dir);
            } else {
                sync();
                FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
                bool ok = f != NULL && fputs("1", f) >= 0;
                if (f != NULL && fclose(f) != 0)
                    ok = false;
                if (!ok) {
                    fprintf(stderr, "bench_drop: cannot drop the page cache (not root?): "
                                    "no cold figure\n");
                    break;
                }
            }
            t = open_twcs(d, 1);
            double td0 = now_s();
            if (twcs_tick(t) != ST_OK)
                die("tick", "drop");
            double el = now_s() - td0;
            /* The space comes back on the store's reclaimer thread: until its queue is empty
             * (each unlink has returned, the kernel's freeing of the file done), polled every
             * millisecond. (The directory entry goes before that: not a measure of it.) */
            struct store_stats ss;
            do {
                store_stats(twcs_store(t), &ss);
                if (ss.reclaim_files > 0)
                    usleep(1000);
            } while (ss.reclaim_files > 0 && now_s() - td0 < 120);
            double freed = now_s() - td0;
            if (ss.reclaim_files > 0)
                die("drop", "the window's files are still not freed after 120 s");
            struct twcs_stats st;
            twcs_stats(t, &st);
            if (st.dropped_fifo != 1)
                die("drop", "the tick did not drop the window");
            if (twcs_close(t) != ST_OK)
                die("twcs_close", d);
            if (pass == 0) {
                drop = el;
                drop_freed = freed;
            } else {
                cold = el;
                cold_freed = freed;
            }
        }
        if (first == 0)
            first = drop;
        printf("| %ld | %" PRIu64
               " | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.4f | %.2f |\n",
               mb, nrec, store_mb, seal, drop * 1e3, drop_freed * 1e3, cold * 1e3, cold_freed * 1e3,
               rw * 1e3, drop / rw, drop / first);
        fflush(stdout);
        if (csv != NULL)
            fprintf(csv, "%ld,%" PRIu64 ",%.3f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n", mb, nrec, store_mb,
                    seal, drop * 1e3, drop_freed * 1e3, cold * 1e3, cold_freed * 1e3, rw * 1e3);
        char cmd[2600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s.cold'", dir, dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_drop: could not remove %s\n", dir);
    }
    free(list);
    if (csv != NULL && fclose(csv) != 0)
        die(csv_path, "write failed");
    return 0;
}
