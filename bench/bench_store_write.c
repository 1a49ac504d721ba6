/*
 * Store write benchmark (issue: store). Writes N 768-d float32 vectors in batches of 256
 * through the store (WAL group commit + background flush to per-window segments) and, in the
 * same run and directory, the same number of bytes as plain sequential writes + fdatasync:
 * the machine's ceiling. Reports MB/s, vectors/s, the ratio, and write amplification.
 *
 *   build/bench/bench_store_write [--dir D] [--vectors N] [--dim 768] [--batch 256]
 *                                 [--sync batch|always|none] [--windows W]
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "st_log.h"
#include "store.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double seq_write(const char *dir, uint64_t bytes)
{
    char path[1100];
    snprintf(path, sizeof(path), "%.1000s/seqwrite.bin", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    size_t chunk = 1u << 20;
    char *buf = malloc(chunk);
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)(i * 7);
    double t0 = now_s();
    for (uint64_t done = 0; done < bytes; done += chunk) {
        size_t n = bytes - done < chunk ? (size_t)(bytes - done) : chunk;
        if (write(fd, buf, n) != (ssize_t)n) {
            perror("write");
            exit(1);
        }
    }
    if (fdatasync(fd) != 0) {
        perror("fdatasync");
        exit(1);
    }
    double t = now_s() - t0;
    close(fd);
    unlink(path);
    free(buf);
    return t;
}

int main(int argc, char **argv)
{
    const char *base = "/tmp";
    uint64_t nvec = 200000;
    uint32_t dim = 768, batch = 256, windows = 4;
    enum store_wal_sync sync = STORE_SYNC_BATCH;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0)
            base = argv[i + 1];
        else if (strcmp(argv[i], "--vectors") == 0)
            nvec = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--dim") == 0)
            dim = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--windows") == 0)
            windows = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--sync") == 0)
            sync = strcmp(argv[i + 1], "always") == 0 ? STORE_SYNC_ALWAYS
                   : strcmp(argv[i + 1], "none") == 0 ? STORE_SYNC_NONE
                                                      : STORE_SYNC_BATCH;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    st_log_set_level(ST_LOG_WARNING);
    char dir[1024];
    snprintf(dir, sizeof(dir), "%.900s/strata-bench-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char sdir[1100];
    snprintf(sdir, sizeof(sdir), "%.1000s/store", dir);

    /* Payload: random-ish vectors, string ids, 32-byte meta, spread over `windows` windows. */
    float *vecs = malloc((size_t)batch * dim * sizeof(float));
    struct store_record *recs = calloc(batch, sizeof(*recs));
    char(*ids)[24] = malloc((size_t)batch * 24);
    uint32_t seed = 12345;
    for (size_t i = 0; i < (size_t)batch * dim; i++) {
        seed = seed * 1664525u + 1013904223u;
        vecs[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    static const char meta[] = "{\"lang\":\"en\",\"src\":\"bench\"}";
    uint64_t payload = nvec * (uint64_t)dim * 4;

    double seq_t = seq_write(dir, payload);

    struct store_opts o = {.dir = sdir,
                           .dim = dim,
                           .wal_sync = sync,
                           .wal_sync_interval_ms = 5,
                           .memtable_size = 256u << 20};
    struct store *s;
    struct st_err err = {0};
    if (store_open(&o, &s, &err) != ST_OK) {
        fprintf(stderr, "store_open: %s\n", err.msg);
        return 1;
    }
    uint64_t eagain = 0;
    double t0 = now_s();
    int64_t off = 0;
    for (uint64_t done = 0; done < nvec; off++) {
        uint32_t n = nvec - done < batch ? (uint32_t)(nvec - done) : batch;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t k = done + i;
            snprintf(ids[i], 24, "doc-%" PRIu64, k);
            recs[i].id = (const uint8_t *)ids[i];
            recs[i].id_len = (uint32_t)strlen(ids[i]);
            recs[i].ts = 1763798400000 + (int64_t)(k % windows) * 3600000;
            recs[i].window = recs[i].ts - recs[i].ts % 3600000;
            recs[i].window_end = recs[i].window + 3600000;
            recs[i].op = STORE_OP_UPSERT;
            recs[i].vec = vecs + (size_t)i * dim;
            recs[i].meta = (const uint8_t *)meta;
            recs[i].meta_len = sizeof(meta) - 1;
        }
        struct store_batch b = {.partition = 0, .offset = off, .n = n, .recs = recs};
        int rc;
        while ((rc = store_write(s, &b, NULL)) == ST_EAGAIN) {
            eagain++;
            usleep(500);
        }
        if (rc != ST_OK) {
            fprintf(stderr, "store_write: %s\n", st_strerror(rc));
            return 1;
        }
        done += n;
    }
    if (store_sync(s) != ST_OK) {
        fprintf(stderr, "store_sync failed\n");
        return 1;
    }
    double durable_t = now_s() - t0;
    if (store_flush(s) != ST_OK) {
        fprintf(stderr, "store_flush failed\n");
        return 1;
    }
    double flushed_t = now_s() - t0;
    struct store_stats st;
    store_stats(s, &st);
    if (store_close(s) != ST_OK)
        return 1;

    double mb = (double)payload / 1e6;
    printf("store write benchmark: %" PRIu64 " vectors x %u dims (float32), batches of %u, "
           "wal_sync=%s, %u windows\n",
           nvec, dim, batch,
           sync == STORE_SYNC_ALWAYS ? "always"
           : sync == STORE_SYNC_NONE ? "none"
                                     : "batch",
           windows);
    printf("  sequential write + fdatasync (same dir):  %8.1f MB/s\n", mb / seq_t);
    printf("  store, acknowledged durable (WAL):        %8.1f MB/s  %10.0f vectors/s  ratio %.2f\n",
           mb / durable_t, (double)nvec / durable_t, (mb / durable_t) / (mb / seq_t));
    printf("  store, incl. flush to segments:           %8.1f MB/s  %10.0f vectors/s  ratio %.2f\n",
           mb / flushed_t, (double)nvec / flushed_t, (mb / flushed_t) / (mb / seq_t));
    printf("  write amplification (WAL + vector logs + segments) / ingested: %.2f   wal fsyncs: "
           "%" PRIu64 "   back-pressure retries: %" PRIu64 "\n",
           (double)(st.wal_bytes_written + st.vlog_bytes_written + st.segment_bytes_written) /
               (double)st.bytes_ingested,
           st.wal_syncs, eagain);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%.1000s'", dir);
    if (system(cmd) != 0)
        return 1;
    free(vecs);
    free(recs);
    free(ids);
    return 0;
}
