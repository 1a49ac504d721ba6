/*
 * store.h — strata's LSM store for one collection: WAL, memtable, immutable per-window
 * segment files, manifest, crash recovery, get-by-id and reader snapshots.
 *
 * The store has no policy: the caller (twcs/, ingest/) chooses each record's window, when to
 * flush, which segments to merge and which windows to drop. The store guarantees:
 *   - a batch is applied all-or-nothing, in the WAL before it is visible;
 *   - store_durable_offset() never reports an offset whose batch could be lost by a crash
 *     (for wal_sync = none: by a process crash; power loss may lose it);
 *   - replay of a (partition, offset) at or below the applied mark is a no-op;
 *   - a file is never removed while a snapshot that lists it is alive;
 *   - the newest version of an id wins, ordered by (ts, partition, offset, index in batch);
 *     deletes are versions too.
 *
 * Threads: all functions are thread-safe unless noted. Background threads: one WAL syncer
 * (wal_sync = batch) and one flusher.
 */
#ifndef STORE_H
#define STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "st_clock.h"
#include "st_error.h"
#include "store_fs.h"

#define STORE_ID_MAX   256u
#define STORE_META_MAX (64u * 1024u)

enum store_wal_sync { STORE_SYNC_ALWAYS = 0, STORE_SYNC_BATCH = 1, STORE_SYNC_NONE = 2 };
enum store_op { STORE_OP_UPSERT = 0, STORE_OP_DELETE = 1 };
enum store_seg_kind { STORE_SEG_RUN = 0, STORE_SEG_SEALED = 1, STORE_SEG_DELTA = 2 };

struct store_opts {
    const char *dir; /* the collection's directory; created if missing */
    uint32_t dim;
    enum store_wal_sync wal_sync;
    int64_t wal_sync_interval_ms; /* batch mode: longest wait before an fsync (default 5) */
    uint64_t memtable_size;       /* freeze, roll the WAL and flush beyond this (default 64 MiB) */
    uint32_t max_frozen;          /* frozen memtables before writes get ST_EAGAIN (default 2) */
    bool point_in_time_recovery;  /* on mid-WAL corruption: keep the prefix instead of failing */
    bool read_only;               /* no writes, no recovery side effects (inspect) */
    bool no_background;           /* no threads: flushes run inside store_flush (tests) */
    bool inline_vectors;          /* vectors in WAL records and runs, no vector logs (the layout
                                     before vector logs: every vector written 2-3 times) */
    bool vlog_append_in_write;    /* rows appended by the write itself, not by the vector-log
                                     writer thread (the path before it; benchmarks, tests) */
    bool vlog_buffered;           /* vector-log rows through the page cache, not O_DIRECT (the
                                     path before it; benchmarks, tests). tmpfs, file systems
                                     without O_DIRECT and stores whose writes append their own
                                     rows (wal_sync none, vlog_append_in_write) get it anyway */
    uint64_t manifest_max_bytes;  /* compact the manifest beyond this and twice its snapshot
                                     (default 4 MiB) */
    struct store_fs *fs;          /* NULL: the OS */
    const struct st_clock *clock; /* NULL: system clock */
};

/* Versions: the newest of an id wins by (ts, partition, offset, index in batch) — in the store
 * and wherever versions from several stores meet (the indexer). */
struct store_version {
    int64_t ts;
    int32_t partition;
    int64_t offset;
    uint32_t idx;
};

static inline int store_version_cmp(const struct store_version *a, const struct store_version *b)
{
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    if (a->partition != b->partition)
        return a->partition < b->partition ? -1 : 1;
    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    if (a->idx != b->idx)
        return a->idx < b->idx ? -1 : 1;
    return 0;
}

/* One record of a batch. All pointers are borrowed for the duration of the call. */
struct store_record {
    const uint8_t *id; /* 1..STORE_ID_MAX bytes; uint64 ids as 8 bytes big-endian */
    uint32_t id_len;
    int64_t ts;         /* event time, ms */
    int64_t window;     /* window start, ms, chosen by the caller (twcs) */
    int64_t window_end; /* window end (exclusive), ms; > window */
    uint8_t op;         /* enum store_op */
    const float *vec;   /* dim floats for upserts; ignored for deletes */
    const uint8_t *meta;
    uint32_t meta_len; /* <= STORE_META_MAX */
    /* st_checksum32 of vec's dim * 4 bytes, when vec_sum_set: a caller that decodes on threads
     * of its own (the ingest decode stage) computes it there, off the store's lock and the
     * writing thread; else the store computes it. A wrong sum is a row recovery refuses. */
    uint32_t vec_sum;
    bool vec_sum_set;
};

/* One Kafka message. */
struct store_batch {
    int32_t partition; /* -1 when not from Kafka (never deduplicated) */
    int64_t offset;
    uint32_t n;
    const struct store_record *recs;
};

struct store;

/* Opens (recovering if needed) or creates the store. Caller owns *out (store_close). */
int store_open(const struct store_opts *o, struct store **out, struct st_err *err) ST_WUR;
/* Makes everything written durable (fsync), stops threads, frees. NULL is a no-op.
 * Returns the first error met (the store is freed regardless). */
int store_close(struct store *s);

/*
 * Appends a batch to the WAL and the memtable. *applied (may be NULL) is false when the
 * batch was skipped as a replay. Returns ST_EAGAIN when flushes are behind (back off and
 * retry), ST_EINVAL for a malformed batch (nothing applied), ST_EIO/ST_ENOSPC when the WAL
 * failed (the store is then failed: every later write fails until reopened).
 */
int store_write(struct store *s, const struct store_batch *b, bool *applied) ST_WUR;
/* Forces an fsync of everything written so far (group commit for the caller). */
int store_sync(struct store *s) ST_WUR;
/* Highest offset of partition whose batch is durable. ST_ENOTFOUND when none. */
int store_durable_offset(struct store *s, int32_t partition, int64_t *offset) ST_WUR;
/* Highest offset of partition applied (durable or about to be). ST_ENOTFOUND when none. */
int store_applied_offset(struct store *s, int32_t partition, int64_t *offset) ST_WUR;
/* Freezes the memtable and waits until it and every memtable frozen before it are in
 * segments (memtables frozen meanwhile by writers are not waited for). A flush attempt that
 * fails meanwhile ends the wait with its error (ST_ENOSPC, ...): the data stays in the WAL and
 * the flusher keeps retrying; call again to wait again. */
int store_flush(struct store *s) ST_WUR;

/* The newest version of one id. */
struct store_value {
    uint8_t op;
    int64_t ts;
    int64_t window;
    int64_t window_end;
    int32_t partition;
    int64_t offset;
    uint32_t idx;  /* index in its batch: (ts, partition, offset, idx) is the version */
    float *vec;    /* caller-supplied buffer of dim floats, or NULL to skip */
    uint8_t *meta; /* malloc'd copy (caller frees), NULL when none */
    uint32_t meta_len;
};
/* ST_ENOTFOUND when the id was never written or its newest version is a delete. */
int store_get(struct store *s, const uint8_t *id, uint32_t id_len, struct store_value *out) ST_WUR;
/* The newest version of id, a delete included (out->op tells); ST_ENOTFOUND only when the id
 * was never written (or its versions were dropped with their windows). */
int store_get_version(struct store *s, const uint8_t *id, uint32_t id_len,
                      struct store_value *out) ST_WUR;

/* Does a memtable (active or frozen, not yet in segments) hold a record of the window that
 * starts at window_start? (twcs: a sealed window with such records needs a re-seal.) */
bool store_window_unflushed(struct store *s, int64_t window_start);

/*
 * Vector logs. Unless inline_vectors is set, the first upsert into a window creates the
 * window's vector log (a file listed in the manifest), and every upsert's vector is appended
 * to it once, in arrival order; WAL records and runs then name rows of it instead of holding
 * the vector. A merge of the window into a SEALED segment completes the log into that segment
 * (its vectors are not rewritten). Before sealing, close the window's log: later writes to the
 * window keep their vectors inline (late data), and a store_flush afterwards leaves no record
 * naming the log outside the runs a seal can take. No-op when the window has no log.
 */
void store_window_close_log(struct store *s, int64_t window_start);
/*
 * Creates the vector log of the window [window_start, window_end) ahead of its first upsert:
 * the file, its header and directory entry, then the manifest edit listing it (three fsyncs), so
 * that the write reaching the window does not wait for them. twcs calls it from its tick for the
 * window after the newest, once that window is in the table (store_window_put). Any thread;
 * takes mf_mu, then mu, never across the file I/O. ST_OK and nothing done with inline_vectors,
 * or when the window has a log already (a writer's won a race); ST_EINVAL on a read-only store
 * or empty bounds. A log that never receives a row goes with its window (store_drop_window).
 */
int store_prepare_window_log(struct store *s, int64_t window_start, int64_t window_end) ST_WUR;

/* ---- segments and snapshots ---- */

struct store_segment; /* immutable, refcounted, mmap'd */

struct store_segment_info {
    uint64_t file_number;
    int64_t window_start, window_end;
    enum store_seg_kind kind;
    uint32_t version;
    uint64_t count;
    uint64_t rows; /* vector rows: count, or more in a version-2 file (unreferenced rows) */
    uint64_t bytes;
    int64_t min_ts, max_ts;
    uint32_t dim;
    uint32_t checksum;    /* the footer's checksum: identifies this exact file */
    uint64_t vector_file; /* a run naming rows of a vector log: its number; 0: self-contained */
    uint64_t written;     /* store_merge's out only: bytes the merge wrote (0 for a promotion;
                             what it appended when it completed a vector log) */
    const char *path;     /* borrowed, valid while the segment is referenced */
};

struct store_seg_record {
    const uint8_t *id; /* borrowed from the mmap */
    uint32_t id_len;
    int64_t ts;
    int32_t partition;
    int64_t offset;
    uint32_t idx;
    uint8_t op;
    uint32_t meta_len;
};

void store_segment_info(const struct store_segment *g, struct store_segment_info *out);
/* Record i's vector (dim floats; zeros for a delete); valid while g is referenced. */
const float *store_segment_vector(const struct store_segment *g, uint64_t i);
/* All vectors in record order, count * dim floats, contiguous and 64-byte aligned; NULL when
 * the file keeps its vectors in row order (format version 2: use store_segment_vector). */
const float *store_segment_contiguous(const struct store_segment *g);
void store_segment_record(const struct store_segment *g, uint64_t i, struct store_seg_record *out);
/* Index of id in the segment, or ST_ENOTFOUND (Bloom filter first). */
int store_segment_find(const struct store_segment *g, const uint8_t *id, uint32_t id_len,
                       uint64_t *index) ST_WUR;
/* Copies record i's meta into a malloc'd buffer (decompressing its block). */
int store_segment_meta(const struct store_segment *g, uint64_t i, uint8_t **meta,
                       uint32_t *len) ST_WUR;
/* Verifies every checksum of the file (vectors and meta blocks too). */
int store_segment_verify(const struct store_segment *g, struct st_err *err) ST_WUR;
/* Opens a segment file read-only, verifying footer and small sections. */
int store_segment_open_file(const char *path, struct store_segment **out,
                            struct st_err *err) ST_WUR;
void store_segment_ref(struct store_segment *g);
void store_segment_unref(struct store_segment *g);

/* A consistent set of segments; files stay on disk while it lives. */
struct store_snapshot;
int store_snapshot_acquire(struct store *s, struct store_snapshot **out) ST_WUR;
void store_snapshot_release(struct store_snapshot *snap);
size_t store_snapshot_count(const struct store_snapshot *snap);
struct store_segment *store_snapshot_segment(const struct store_snapshot *snap, size_t i);

/* ---- exact scans (strong-consistency search over data not yet indexed) ---- */

/* One source of applied records: a chunk of a memtable (active or frozen) or a segment. */
struct store_scan_src {
    bool memtable;                       /* records carry their own windows */
    const struct store_segment *segment; /* segment sources */
    int64_t window_start, window_end;    /* segment: its window; memtable: INT64_MIN/MAX */
    enum store_seg_kind kind;            /* segment */
    uint32_t version;                    /* segment */
    int64_t min_ts, max_ts; /* least and greatest ts of its records (a memtable chunk: of the
                               records written into it, possibly more than this scan covers) */
    uint64_t n;
    uint32_t dim;
    const float *vecs;        /* vectors: use store_scan_vec (record i's is at i * dim unless the
                                 segment keeps a row table) */
    const uint8_t *rows_;     /* private: a segment's row table, NULL when record i is row i */
    const void *memtable_;    /* private: the chunk's entries */
    uint64_t memtable_limit_; /* private: records of the memtable the scan covers */
};

struct store_scan_rec {
    const uint8_t *id; /* borrowed: valid during the callback only */
    uint32_t id_len;
    int64_t ts;
    int64_t window;
    int32_t partition;
    int64_t offset;
    uint32_t idx;
    uint8_t op;
    bool superseded; /* a newer version of the id is in the same source */
};

void store_scan_record(const struct store_scan_src *src, uint64_t i, struct store_scan_rec *out);
/* Record i's vector: dim floats (zeros for deletes). */
static inline const float *store_scan_vec(const struct store_scan_src *src, uint64_t i)
{
    uint64_t row = i;
    if (src->rows_ != NULL) {
        const uint8_t *p = src->rows_ + i * 4;
        row = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
    }
    return src->vecs + row * src->dim;
}

/* Called once per source; a non-ST_OK return stops the scan and is returned. */
typedef int (*store_scan_fn)(void *ctx, const struct store_scan_src *src);

/*
 * Visits every source of applied data: the active memtable first (the records published when
 * the scan starts, one source per chunk), then the frozen memtables and the segments of a
 * snapshot. No store lock is held during a callback: fn may be slow and may call into the
 * store (store_get), and writers keep appending meanwhile. Everything applied before the call
 * is seen at least once; a record that moves from a memtable to a segment meanwhile may be
 * seen twice (same version), and a record superseded in another source (or later in the same
 * memtable) is still visited: callers check candidates with store_get. Pointers are valid
 * during each callback only.
 */
int store_scan(struct store *s, store_scan_fn fn, void *ctx) ST_WUR;

/* The WAL group-commit fsync latency histogram (st_prom.h); valid while s lives. */
struct st_hist;
const struct st_hist *store_wal_sync_seconds(struct store *s);

/* ---- windows (the table twcs/ keeps in the manifest) ---- */
#define STORE_WINDOW_REMOVE 0xffu /* state that deletes the entry */

struct store_window {
    int64_t start, end; /* [start, end) in ms */
    uint8_t state;      /* owned by the caller (twcs: open, sealed, ...) */
    uint32_t version;
};

/* Records (or with STORE_WINDOW_REMOVE deletes) a window durably: one manifest edit. */
int store_window_put(struct store *s, const struct store_window *w) ST_WUR;
/* The window table sorted by start, malloc'd (caller frees). */
int store_windows(struct store *s, struct store_window **out, size_t *n) ST_WUR;
/* A small durable key/value (watermarks, horizons, outbox entries). */
int store_kv_put(struct store *s, const char *key, const void *val, size_t len) ST_WUR;
/* Deletes a key (no-op when absent). */
int store_kv_del(struct store *s, const char *key) ST_WUR;
/* Keys starting with prefix, malloc'd array of malloc'd strings (caller frees all). */
int store_kv_keys(struct store *s, const char *prefix, char ***keys, size_t *n) ST_WUR;
/* Copies up to cap bytes; *len gets the full length. ST_ENOTFOUND when absent. */
int store_kv_get(struct store *s, const char *key, void *val, size_t cap, size_t *len) ST_WUR;

/*
 * Records committed atomically with a merge or a drop, in the same manifest edit: the
 * caller's own bookkeeping (window states, key/values such as an outbox entry). The store
 * gives them no meaning. All pointers are borrowed for the call.
 */
struct store_kv_put {
    const char *key;
    const void *val;
    size_t len;
};
struct store_edit_extra {
    const struct store_window *windows; /* each put as by store_window_put */
    size_t nwindows;
    const struct store_kv_put *kvs; /* each put as by store_kv_put */
    size_t nkvs;
};

/*
 * Replaces the segments `inputs` (file numbers, all of one window) by one segment of `kind`
 * and `version`, in one manifest edit that also records `extra` (may be NULL). Newest version
 * per id wins; deletes are kept. With one input the file is kept and only its kind and version
 * change in the manifest (no rewrite); readers holding the old handle keep seeing the old kind.
 * When the window has a vector log and kind is SEALED, the log becomes the output (its rows
 * stay where they are, the inputs' other vectors are appended, then the tables): the log is
 * closed first, and the inputs must include every run naming its rows and no memtable may
 * name any (ST_EAGAIN: store_window_close_log, store_flush, re-plan).
 * The inputs' files go when their last reader does. out (may be NULL) describes the result;
 * its path is valid until the store closes.
 *
 * The merge streams (memory bounded per input, not per record) and holds no manifest lock
 * while it reads and writes files, so flushes and writes go on meanwhile. Errors:
 *   ST_ENOTFOUND  an input is not a live segment — at the start, or no longer at install
 *                 because a concurrent store_drop_window or merge removed it; the output is
 *                 discarded and nothing changed (re-plan from a fresh snapshot)
 *   ST_EINVAL     n == 0, inputs of different windows or listed twice, or a read-only store
 *   other codes   I/O or corruption (ST_ECORRUPT names the input file and offset); nothing
 *                 changed unless the manifest append itself failed, which fails the store
 */
int store_merge(struct store *s, const uint64_t *inputs, size_t n, enum store_seg_kind kind,
                uint32_t version, const struct store_edit_extra *extra,
                struct store_segment_info *out) ST_WUR;

/*
 * Removes every segment of a window in one manifest edit that also records `extra` (e.g. an
 * expired window state, STORE_WINDOW_REMOVE, an outbox entry): no rewrite, O(files). The files
 * go once the last snapshot holding them is released.
 */
int store_drop_window(struct store *s, int64_t window_start, const struct store_edit_extra *extra,
                      size_t *removed) ST_WUR;

/* ---- inspection (strata inspect) ---- */
/*
 * Verifies path read-only and prints a summary to out: a data dir (every store below it), a
 * store dir (manifest, every segment fully verified, every WAL record decoded), or a single
 * *.log, *.seg or MANIFEST-* file. Returns ST_OK when everything checked is intact,
 * ST_ECORRUPT when anything is damaged (each problem printed with file and offset), another
 * code when path cannot be read. A torn WAL tail is reported but is not corruption.
 */
int store_inspect(const char *path, FILE *out, struct st_err *err) ST_WUR;

/* ---- statistics ---- */
struct store_stats {
    uint64_t memtable_bytes;
    uint64_t memtable_records;
    uint32_t frozen_memtables;
    uint64_t segments;
    uint64_t segment_bytes;
    uint64_t wal_bytes_written;
    uint64_t segment_bytes_written;
    uint64_t bytes_ingested; /* logical bytes of accepted batches */
    uint64_t wal_syncs;
    uint64_t wal_live_bytes; /* WAL files still needed (not yet flushed) */
    uint64_t vlog_bytes;     /* vector logs of windows not sealed yet */
    uint64_t vlogs;          /* how many */
    uint64_t vlog_bytes_written;
    uint64_t manifest_bytes_written;
    uint64_t manifest_rewrites; /* manifest compactions, the one at open included */
    uint64_t roll_waits;        /* writes that waited for a WAL roll's fsync */
    uint64_t vlog_waits;        /* writes that waited for the vector-log writer thread */
    uint64_t vlog_creates;      /* writes that created their window's vector log themselves */
    uint64_t roll_wait_ns, vlog_wait_ns, vlog_create_ns; /* the time those writes waited */
    uint64_t seal_read_bytes; /* vector-log rows read back at seals to checksum their blocks:
                               * a partial last block, or every row of a log reopened after a
                               * restart (the others' whole blocks were summed as appended) */
    uint64_t reclaim_files;   /* files out of the manifest whose space is not freed yet */
    uint64_t reclaim_bytes;   /* (the reclaimer thread unlinks them; segment_bytes and the
                               * FIFO cap no longer count them) */
};
void store_stats(struct store *s, struct store_stats *out);

#endif
