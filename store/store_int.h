/* store_int.h — private to store/: memtable, segments, manifest state, the store object. */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/uio.h>

#include "st_checksum.h"
#include "store.h"
#include "st_prom.h"
#include "store_log.h"

/* For cleanup whose failure is harmless (the next open removes leftovers): say so. */
static inline void store_best_effort(int rc)
{
    (void)rc;
}

static inline int store_id_cmp(const uint8_t *a, uint32_t al, const uint8_t *b, uint32_t bl)
{
    uint32_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl;
}

/* ---- partition marks ---- */
struct store_mark {
    int32_t partition;
    int64_t offset;
};

struct store_marks {
    struct store_mark *m;
    size_t n, cap;
};

/* Sets partition's mark to max(current, offset). */
int store_marks_raise(struct store_marks *ms, int32_t partition, int64_t offset) ST_WUR;
bool store_marks_get(const struct store_marks *ms, int32_t partition, int64_t *offset);
void store_marks_free(struct store_marks *ms);
int store_marks_copy(struct store_marks *dst, const struct store_marks *src) ST_WUR;

/* ---- memtable ---- */
/*
 * Append-only, in fixed-size chunks that are never moved or freed before the memtable is:
 * a chunk holds `chunk_recs` vectors (64-byte aligned, contiguous) followed by their entries;
 * ids and metas live in heap chunks and entries point at them. Records are published by a
 * release store of `published` after they are complete, so a reader that captured `published`
 * and the chunk pointers (under the store lock, briefly) scans that prefix WITHOUT the lock
 * while the writer appends. The only field of a published entry that changes is `superseded`
 * (`superseded_by`, atomic; a reader may see it late — callers confirm candidates with
 * store_get). The id hash
 * index (`slots`) is the writer's and is read under the store lock only (active memtable) or
 * freely once frozen.
 * `bytes` counts what is really allocated (chunks, heap chunks, the hash index), so a
 * memtable_size of M allocates about M, not the doubled capacity of growing arrays.
 */
struct store_mt_entry {
    const uint8_t *id;   /* in a heap chunk */
    const uint8_t *meta; /* in a heap chunk; NULL when meta_len is 0 */
    const float *vec;    /* dim floats in the entry's chunk (zeros for deletes) */
    int64_t ts;
    int64_t window;
    int64_t window_end;
    int64_t offset;
    uint64_t vfile; /* the vector's row is also row `row` of vector log vfile; 0: only here */
    int32_t partition;
    uint32_t idx;
    uint32_t row;
    uint32_t meta_len;
    uint16_t id_len;
    uint8_t op;
    /* 1 + index of the entry holding a newer version of the id, 0 while none. A reader that
     * scans a prefix of n records treats the entry as superseded only when that index is < n:
     * otherwise it would skip the old version without seeing the new one. */
    _Atomic uint32_t superseded_by;
};

struct store_memtable {
    uint32_t dim;
    _Atomic int refs;
    size_t chunk_recs;   /* records per chunk */
    size_t chunk_vbytes; /* bytes of a chunk's vector area (64-byte multiple) */
    uint8_t **chunks;    /* writer's directory; readers copy the pointers they need */
    size_t nchunks, capchunks;
    size_t n;                 /* records written (writer) */
    _Atomic size_t published; /* records complete and visible to lock-free readers */
    uint8_t **heaps;          /* id/meta chunks */
    size_t nheaps, capheaps;
    size_t heap_len, heap_cap; /* use of the newest heap chunk */
    size_t heap_chunk;         /* default heap chunk size */
    uint64_t *slots;           /* open addressing: id hash << 32 | entry index + 1, 0 = empty */
    size_t nslots;
    uint64_t bytes; /* really allocated */
    int64_t *wins;  /* distinct windows of its records (a memtable spans few) */
    size_t nwins, capwins;
    uint64_t *vfiles; /* distinct vector logs its records' rows are in */
    size_t nvfiles, capvfiles;
    uint64_t first_log;       /* oldest WAL file holding its batches */
    struct store_marks marks; /* max offset per partition in this memtable */
};

/* A memtable whose chunks are sized for a memtable of size_hint bytes (0: the default). */
struct store_memtable *store_mt_new(uint32_t dim, uint64_t first_log, uint64_t size_hint);
void store_mt_ref(struct store_memtable *m);
void store_mt_unref(struct store_memtable *m);
/* Where an upsert's vector was also written: row `row` of vector log `vfile` (whose bytes
 * checksum32 to `sum`). vfile 0: nowhere but the WAL record. */
struct store_vref {
    uint64_t vfile;
    uint32_t row;
    uint32_t sum;
};
/* Inserts one record (superseding an older version of its id); ref (NULL: none) says where
 * its vector's row is. *vec (may be NULL) gets the memtable's copy of the vector, or NULL when
 * the record was older than the version held and was not inserted. Caller holds the store
 * lock. */
int store_mt_add(struct store_memtable *m, const struct store_record *r, int32_t partition,
                 int64_t offset, uint32_t idx, const struct store_vref *ref,
                 const float **vec) ST_WUR;
/* Does the memtable hold a record whose row is in vector log vfile? (Caller as above.) */
bool store_mt_has_vfile(const struct store_memtable *m, uint64_t vfile);
/* Newest entry for id, or NULL. Active memtable: caller holds the store lock. */
const struct store_mt_entry *store_mt_get(const struct store_memtable *m, const uint8_t *id,
                                          uint32_t id_len);
/* Does the memtable hold a record of the window starting at start? Active memtable: caller
 * holds the store lock. */
bool store_mt_has_window(const struct store_memtable *m, int64_t start);
/* Entry i (< n) and its chunk's entries. */
static inline struct store_mt_entry *store_mt_chunk_entries(const struct store_memtable *m,
                                                            const uint8_t *chunk)
{
    return (struct store_mt_entry *)(void *)((uint8_t *)(uintptr_t)chunk + m->chunk_vbytes);
}
/* A chunk's event-time span: the least and greatest ts of the records written into it, so a
 * time-bounded scan skips chunks wholly outside its range. Written by store_mt_add before it
 * publishes the record (relaxed: the release store of `published` orders them); a reader that
 * acquired `published` sees a span covering every record it may read (the span only widens). */
struct store_mt_span {
    _Atomic int64_t min_ts, max_ts;
};
static inline struct store_mt_span *store_mt_chunk_span(const struct store_memtable *m,
                                                        const uint8_t *chunk)
{
    return (struct store_mt_span *)(void *)(store_mt_chunk_entries(m, chunk) + m->chunk_recs);
}
static inline const struct store_mt_entry *store_mt_at(const struct store_memtable *m, size_t i)
{
    return store_mt_chunk_entries(m, m->chunks[i / m->chunk_recs]) + i % m->chunk_recs;
}
static inline const uint8_t *store_mt_id(const struct store_memtable *m,
                                         const struct store_mt_entry *e)
{
    (void)m;
    return e->id;
}

/* ---- segments ---- */
struct store_seg_in {
    const uint8_t *id;
    uint32_t id_len;
    int64_t ts;
    int32_t partition;
    int64_t offset;
    uint32_t idx;
    uint8_t op;
    const float *vec; /* NULL for deletes; unused by a writer in rows mode */
    const uint8_t *meta;
    uint32_t meta_len;
    uint64_t row; /* rows mode: the vector row (store_segment_writer_put_row) */
};

struct store_seg_meta {
    int64_t window_start, window_end;
    enum store_seg_kind kind;
    uint32_t version;
    bool rows; /* format version 2: vectors are rows put in any order, records name theirs */
    /* Rows mode, external rows: the vectors are rows 0..vrows of file number vfile in the same
     * directory (a window's vector log); the writer writes no vectors (put_row is refused) and
     * records may name any row below vrows. 0: the rows are in the file itself. */
    uint64_t vfile;
    uint64_t vrows;
};

/*
 * Streaming segment writer (store_segment.c; memory use in the comment above its code): the
 * records are added one at a time in strictly increasing id order, so a merge never holds
 * more than a block per input. One thread uses a writer.
 *
 *   open    creates path exclusively (plus side files "<path>.<section>.tmp"); expect sizes
 *           the Bloom filter (10 bits per record): pass the record count, or an upper bound.
 *   add     copies everything it needs from r (r is borrowed for the call). ST_EINVAL when r's
 *           id is not greater than the previous one. After a failed add only close is allowed.
 *   finish  completes and fsyncs the file (not renamed, directory not synced); *bytes gets
 *           the file size.
 *   close   frees w (NULL is a no-op) and removes the side files; unless finish succeeded it
 *           removes the file too (so closing is how a writer is aborted).
 */
struct store_segment_writer;
int store_segment_writer_open(struct store_fs *fs, const char *path, uint32_t dim,
                              const struct store_seg_meta *meta, uint64_t expect,
                              struct store_segment_writer **out, struct st_err *err) ST_WUR;
int store_segment_writer_add(struct store_segment_writer *w, const struct store_seg_in *r,
                             struct st_err *err) ST_WUR;
/* Rows mode: appends one vector row (zeros when vec is NULL) and gives its number. Rows and
 * records may interleave; every record's row must exist by finish (else ST_EINVAL), and no
 * two records may name the same row (the second add is ST_EINVAL: readers refuse such a file).
 * A row no record names (a version superseded before the file was finished) stays in the file.
 * A delete's vector is its row's: put it as zeros (vec NULL), as version 1 stores tombstones. */
int store_segment_writer_put_row(struct store_segment_writer *w, const float *vec, uint64_t *row,
                                 struct st_err *err) ST_WUR;
/*
 * Extend mode: completes the existing file at path (a window's vector log: the version-2 header
 * and rows 0..nrows) into a segment whose vectors section starts with those rows. Bytes past
 * the rows (a torn earlier attempt) are cut first, and the rows themselves are never rewritten
 * (readers may have them mapped): their whole blocks' checksums are sums[0..) when the caller
 * has them (the log's, taken as the rows were appended: exactly nrows * dim * 4 /
 * STORE_SEG_VEC_BLOCK of them), else computed by reading the rows back; a partial last block
 * is read either way. meta->rows must be set and meta->vfile 0. More rows may be put, records name
 * any of them. close without finish leaves the file (a vector log) in place, possibly with bytes
 * past its rows: the next extend or recovery cuts them.
 */
int store_segment_writer_extend(struct store_fs *fs, const char *path, uint32_t dim,
                                const struct store_seg_meta *meta, uint64_t expect, uint64_t nrows,
                                const uint32_t *sums, struct store_segment_writer **out,
                                struct st_err *err) ST_WUR;
int store_segment_writer_finish(struct store_segment_writer *w, uint64_t *bytes,
                                struct st_err *err) ST_WUR;
void store_segment_writer_close(struct store_segment_writer *w);
uint64_t store_segment_writer_peak(const struct store_segment_writer *w);
/* Records added so far. */
uint64_t store_segment_writer_count(const struct store_segment_writer *w);
/* Bytes a writer opened with `expect` holds at most when no record's meta exceeds meta_max
 * bytes: the bound store_segment_writer_peak stays under (zstd's own per-call context, about
 * 1 MiB, is not counted). */
uint64_t store_segment_writer_memory(uint64_t expect, uint32_t meta_max);

/* Writes a complete segment to path through one writer (created exclusively, fsynced, not
 * renamed). in must be sorted by id with unique ids. *bytes gets the file size. With
 * meta->rows, each in[i].row places its vector: row r holds the vector of the record naming r
 * (zeros when none does, up to the highest row named). */
int store_segment_write(struct store_fs *fs, const char *path, uint32_t dim,
                        const struct store_seg_meta *meta, const struct store_seg_in *in, size_t n,
                        uint64_t *bytes, struct st_err *err) ST_WUR;

struct store_reclaim;
struct store_reclaim_job;

struct store_segment {
    _Atomic int refs;
    char *path;
    uint64_t file_number;
    uint8_t *map;
    size_t map_len;
    struct store_segment_info info;
    const uint8_t *recs, *ids, *sparse, *mtab, *bloom, *vsum;
    const uint8_t *rows; /* version 2: record i's row at rows + 4 i; NULL: row i */
    uint64_t ids_len, nsparse, nmeta, bloom_len, nvblocks, nrows;
    uint64_t max_row; /* version 2: highest row a record names, + 1 (0: none) */
    /* External rows (segment_format.h): the vector file's number and its mapped rows (the
     * first 64 + nrows*dim*4 bytes of it); vmap is NULL when the rows are in the file. */
    uint64_t vfile;
    uint8_t *vmap;
    size_t vmap_len;
    uint32_t bloom_k;
    bool doomed;              /* removed from the manifest: unlink when the last ref goes */
    struct store_reclaim *rq; /* where a doomed one's last reference sends it (NULL: inline) */
    struct store_fs *fs;
};

/* The reclaimer (store_reclaim.c): unmaps and unlinks files the manifest no longer lists on a
 * thread of its own, so that a drop or a merge costs its manifest edit, not the kernel's work
 * of freeing a large file. Without it (no_background, read-only, or once stopped) the same
 * work is done inline by whoever calls. */
struct store_reclaim {
    _Atomic uint32_t refs; /* the store's, and one per doomed segment sent here */
    pthread_mutex_t mu;
    pthread_cond_t cv, idle_cv;
    struct store_reclaim_job *head, *tail;
    uint64_t pending, done;              /* queued jobs (store_reclaim_wait), jobs run */
    uint64_t unlink_files, unlink_bytes; /* queued unlinks of files without a segment */
    uint64_t doomed_files, doomed_bytes; /* doomed segments not freed yet: held by a reader
                                          * (a snapshot) or queued. Not counted: a file a
                                          * segment download still has open after its
                                          * snapshot went, and a vector log unlinked while
                                          * runs naming its rows are still mapped */
    bool running, stop; /* under mu (running is set by the store's open, before the thread can
                         * see it and while no other thread has the store) */
    pthread_t thread;
    struct store_fs *fs;
};
/* A reclaimer without its thread (work is done inline until store_reclaim_start); NULL on
 * ENOMEM. Refcounted: a doomed segment keeps it alive, even past the store's close. */
struct store_reclaim *store_reclaim_new(struct store_fs *fs);
void store_reclaim_ref(struct store_reclaim *rq);
void store_reclaim_unref(struct store_reclaim *rq);
/* A segment of `bytes` doomed (+1) or freed or reprieved (-1): counted as pending until then. */
void store_reclaim_doomed(struct store_reclaim *rq, int sign, uint64_t bytes);
int store_reclaim_start(struct store_reclaim *rq) ST_WUR;
/* Empties the queue, then stops the thread; later work is done inline. */
void store_reclaim_stop(struct store_reclaim *rq);
/* Takes a doomed segment's last reference: false when the caller must release it itself. */
bool store_reclaim_segment(struct store_reclaim *rq, struct store_segment *g);
/* Unlinks path (takes it, malloc'd; site: its fault-injection site) there, or at once when
 * there is no thread. */
void store_reclaim_unlink(struct store_reclaim *rq, char *path, const char *site, uint64_t bytes);
/* Files and bytes given up but not freed yet: doomed segments (queued or still held by a
 * reader) and queued unlinks. */
void store_reclaim_pending(struct store_reclaim *rq, uint64_t *files, uint64_t *bytes);
/* Waits up to timeout_ms for the queue to empty; true if it did. */
bool store_reclaim_wait(struct store_reclaim *rq, int64_t timeout_ms);
/* A segment's last reference: unmaps it, and unlinks a doomed one (rename aside first). */
void store_segment_release(struct store_segment *g);
/* Marks g removed from the manifest (or, doomed false, not): its last reference unlinks it, on
 * rq's thread when there is one. */
static inline void store_segment_doom(struct store_segment *g, struct store_reclaim *rq,
                                      bool doomed)
{
    if (doomed && g->rq == NULL && rq != NULL) {
        store_reclaim_ref(rq);
        store_reclaim_doomed(rq, 1, g->info.bytes);
        g->rq = rq;
    } else if (!doomed && g->rq != NULL) {
        store_reclaim_doomed(g->rq, -1, g->info.bytes);
        store_reclaim_unref(g->rq);
        g->rq = NULL;
    }
    g->doomed = doomed;
}

/* store_segment_open_file, and with external_ok a run naming rows of a vector log in its own
 * directory (the store's own files only: store_segment_open_file refuses those). */
int store_segment_open(const char *path, bool external_ok, struct store_segment **out,
                       struct st_err *err) ST_WUR;
/* The 64-byte segment header (segment_format.h) of a file of format `version` and dim. */
void store_seg_header_put(uint8_t *head, uint32_t version, uint32_t dim);
/* Is head (64 bytes) the header of a vector log of dim (a version-2 segment header)? */
bool store_seg_header_is_log(const uint8_t *head, uint32_t dim);
/* Record i's vector row (in g's vectors section, or in its vector file). */
uint64_t store_segment_row(const struct store_segment *g, uint64_t i);
/* The vectors section: row r's vector at r * dim (record i's row: rows, or i). */
const float *store_segment_rows_base(const struct store_segment *g);

/* All metas of g concatenated in record order (malloc'd, caller frees; NULL when none). */
int store_segment_meta_all(const struct store_segment *g, uint8_t **buf, size_t *len) ST_WUR;
/* Meta block b of g decompressed (malloc'd, caller frees; checksum verified). ST_ECORRUPT
 * with file and offset when damaged or missing. */
int store_segment_meta_block(const struct store_segment *g, uint64_t b, uint8_t **raw, size_t *len,
                             struct st_err *err) ST_WUR;
/* The largest raw meta block of g, in bytes (from the meta table). */
uint64_t store_segment_meta_block_max(const struct store_segment *g);

/* ---- merges (store_merge.c) ---- */
/* The most bytes a merge of n inputs buffers when its output holds at most expect records and
 * no meta exceeds meta_max bytes: one meta block per input plus the segment writer's buffers
 * (store_segment_writer_memory). Memory does not otherwise grow with the window. */
uint64_t store_merge_memory(size_t n, uint64_t expect, uint32_t meta_max);

/* Test probes of store_merge. Production leaves them zero; a test sets them while no merge
 * runs and clears them afterwards. */
struct store_merge_probe {
    /* Called with no store lock held once the merge's output is durable (for a promotion: its
     * new handle is open), just before it takes mf_mu to install it: a test can hold a merge
     * provably in flight. */
    void (*in_flight)(void *ctx);
    void *ctx;
    _Atomic uint64_t last_peak; /* bytes the last rewriting merge buffered at most */
};
extern struct store_merge_probe store_merge_probe;

/* ---- manifest ---- */
struct store_window_rec {
    int64_t start, end;
    uint8_t state;
    uint32_t version;
};

struct store_kv {
    char *key;
    uint8_t *val;
    size_t vlen;
};

struct store_mf_seg {
    uint64_t file_number;
    struct store_seg_meta meta;
    uint64_t count, bytes;
    int64_t min_ts, max_ts;
};

/* A window's vector log, as the manifest lists it. */
struct store_mf_vlog {
    uint64_t file_number;
    int64_t window_start, window_end;
};

/* The state a manifest describes. */
struct store_mf_state {
    uint32_t dim;
    bool have_info;
    struct store_mf_seg *segs;
    size_t nsegs, capsegs;
    uint64_t log_number;
    uint64_t next_file;
    struct store_marks marks;
    struct store_window_rec *windows;
    size_t nwindows, capwindows;
    struct store_kv *kv;
    size_t nkv, capkv;
    struct store_mf_vlog *vlogs;
    size_t nvlogs, capvlogs;
};

/* An edit group being built. */
struct store_mf_edit {
    uint8_t *buf;
    size_t len, cap;
};

void store_mf_edit_free(struct store_mf_edit *e);
int store_mf_edit_info(struct store_mf_edit *e, uint32_t dim) ST_WUR;
int store_mf_edit_add_segment(struct store_mf_edit *e, const struct store_mf_seg *g) ST_WUR;
int store_mf_edit_del_segment(struct store_mf_edit *e, uint64_t file_number) ST_WUR;
int store_mf_edit_log_number(struct store_mf_edit *e, uint64_t n) ST_WUR;
int store_mf_edit_next_file(struct store_mf_edit *e, uint64_t n) ST_WUR;
int store_mf_edit_mark(struct store_mf_edit *e, int32_t partition, int64_t offset) ST_WUR;
int store_mf_edit_window(struct store_mf_edit *e, const struct store_window_rec *w) ST_WUR;
int store_mf_edit_kv(struct store_mf_edit *e, const struct store_kv *kv) ST_WUR;
int store_mf_edit_add_vlog(struct store_mf_edit *e, const struct store_mf_vlog *v) ST_WUR;
int store_mf_edit_del_vlog(struct store_mf_edit *e, uint64_t file_number) ST_WUR;
/* Applies an encoded edit group to st. ST_ECORRUPT on a malformed group. */
int store_mf_apply(struct store_mf_state *st, const uint8_t *p, size_t len) ST_WUR;
/* Encodes the whole state as one edit group (manifest compaction). ST_EINVAL for a state whose
 * dim no INFO edit could carry (it would not load again). */
int store_mf_snapshot(const struct store_mf_state *st, struct store_mf_edit *e) ST_WUR;
void store_mf_state_free(struct store_mf_state *st);

/* Reads CURRENT and the manifest it names into st. *mf_number gets its file number.
 * ST_ENOTFOUND when dir holds no store. Corruption is reported with file and offset. */
int store_mf_load(const char *dir, struct store_mf_state *st, uint64_t *mf_number,
                  struct st_err *err) ST_WUR;

/* ---- WAL records (wal_format.h) ---- */
/* Decodes one WAL payload. On success *recs, *vecs and *refs are malloc'd (caller frees all);
 * the records point into p for ids and meta. An upsert whose vector is a row of a vector log
 * has refs[i].vfile != 0 and its vector (in *vecs) is zeros until the caller reads the row;
 * every other refs[i] is zero. ST_ECORRUPT when malformed. */
int store_wal_decode(uint32_t dim, const uint8_t *p, size_t len, struct store_batch *b,
                     struct store_record **recs, float **vecs, struct store_vref **refs) ST_WUR;

/* ---- file names ---- */
enum store_file_kind { STORE_FILE_LOG, STORE_FILE_SEG, STORE_FILE_MANIFEST, STORE_FILE_OTHER };
/* The largest file number a manifest may name: names have at most 19 digits (parse_digits), so
 * numbers handed out after it (next_file++) still name files that open recognises. */
#define STORE_FILE_NUMBER_MAX 1000000000000000000ull
/* "dir/000012.log" etc. Caller frees. */
char *store_file_path(const char *dir, enum store_file_kind kind, uint64_t number);
/* Parses a directory entry name. */
enum store_file_kind store_file_parse(const char *name, uint64_t *number);

/* ---- the store object (store*.c) ---- */
/*
 * Locks (always taken in this order; never the reverse):
 *   flush_mu — serialises flushes (oldest frozen memtable first, each once); held across a
 *              flush's segment I/O, so it is never taken by anything that must not wait for it
 *   mf_mu    — serialises manifest edits (flush, merge, drop, window/kv puts, compaction):
 *              held to build and append an edit and install its result, never across segment
 *              I/O (a flush or merge writes, fsyncs and renames its files first)
 *   sync_mu  — serialises WAL fsyncs and WAL rolls (the file being synced stays open)
 *   mu       — everything else: memtables, segment list, vector log table, marks, counters,
 *              s->mf reads; never held across I/O except a write's appends (its vector-log
 *              rows, then its WAL record) and the manifest's own in-memory apply
 * A WAL fsync runs without mu, so writers keep appending while a sync is in flight. A WAL
 * roll (store_freeze) creates the new file and fsyncs the old one without mu; writers wait
 * for it on roll_cv (s->rolling) so that nothing is appended to the new file before the old
 * one is durable (recovery treats a torn non-last WAL file as corruption), while readers,
 * scans, statistics and manifest edits go on.
 *
 * File numbers: taken under mu as s->mf.next_file++, before the I/O that uses them. An edit
 * that records next_file writes the value of s->mf.next_file read under mu while its writer
 * holds mf_mu for the append — never a value computed before its I/O — so two concurrent
 * operations can never make the manifest's next_file go backwards (store_mf_apply keeps the
 * maximum as well).
 *
 * Inputs that may vanish: an operation that referenced segments before its I/O (a merge)
 * checks under mf_mu + mu, before appending, that each is still in s->segs (a drop or another
 * merge may have removed it); if not, it discards its output and fails (ST_ENOTFOUND).
 *
 * Segments are shared immutable objects: nothing writes a struct store_segment's info once it
 * is in s->segs (readers read it with no lock). A promotion installs a new handle of the same
 * file instead of changing the old one.
 */
struct store_snapshot {
    struct store_segment **segs;
    size_t n;
};

/*
 * A window's vector log (store_vlog.c): file `number` (NNNNNN.seg, a version-2 header then
 * rows), appended to under mu by writers, fsynced by group commit before the WAL. Listed in
 * s->vlogs while the window is unsealed; a seal or a drop takes it out. Referenced (refs,
 * atomic) by the table and by a sync in flight, so the file handle outlives neither.
 */
struct store_vlog {
    _Atomic int refs;
    uint64_t number;
    int64_t window, window_end;
    struct store_file *f; /* append handle: f->size = 64 + nrows * dim * 4 between writes */
    uint64_t nrows;       /* mu */
    bool dirty;           /* mu: appended since the last capture for an fsync */
    bool closed;          /* mu: no more appends (a seal is coming) */
    /*
     * The checksums of the rows' whole blocks (the sealed segment's VSUM side), taken from the
     * rows as they are appended (store_vlog_append), so that a seal need not read every
     * row back from the disk. Only a log created by this process has them: a reopened one
     * holds rows nobody summed here, and the seal reads those (as it does after a failed
     * allocation, which stops the summing). Written by the appender with no lock; read by
     * the seal only after mu showed the log closed with no append pending.
     */
    struct st_hash_stream *bs; /* the block being filled; NULL: not summed */
    uint64_t summed;           /* vector bytes fed to the sums */
    uint32_t *sums;            /* sums of blocks [0, nsums) */
    size_t nsums, capsums;
};

struct store_vlog *store_vlog_find_locked(const struct store *s, int64_t window);
struct store_vlog *store_vlog_by_number_locked(const struct store *s, uint64_t number);
void store_vlog_unref(struct store_vlog *v);
/* Creates the vector log of a window (file, directory entry and manifest edit durable before it
 * is used): the file I/O with no lock, then mf_mu and mu for the edit and the table. Caller
 * holds none. ST_OK when one exists already (a racing writer's: ours is then removed). */
int store_vlog_create(struct store *s, int64_t window, int64_t window_end) ST_WUR;
/* Group commit: refs every log appended since the last capture and clears its dirty flag.
 * Caller holds sync_mu and mu. *out is malloc'd (NULL when none). */
int store_vlog_capture_dirty_locked(struct store *s, struct store_vlog ***out, size_t *n) ST_WUR;
/* fsyncs the captured logs and unrefs them (all, whatever fails); frees arr. No lock. */
int store_vlog_sync_captured(struct store_vlog **arr, size_t n) ST_WUR;
/* The appender of v (the writer thread, or a write under mu): appends rows at file offset off
 * (site store.vlog.append; io: see store_fs_io, NULL for none) and feeds them to v's block
 * sums as the append copies them. Rows not where the sums stand (off is not the header plus
 * the bytes summed) stop the summing, as does a failed append (its sums may hold rows that did
 * not land): the seal then reads the rows. */
int store_vlog_append(struct store_vlog *v, uint64_t off, const struct iovec *iov, int cnt,
                      struct store_fs_io *io) ST_WUR;
/* The sums of v's whole row blocks, or NULL unless exactly its vbytes of rows were summed (the
 * seal reads the rows). Caller holds mu and has seen v closed with no append pending. */
const uint32_t *store_vlog_sums_locked(const struct store_vlog *v, uint64_t vbytes);
/* Takes the log out of the table (caller holds mu); returns the table's reference. */
struct store_vlog *store_vlog_detach_locked(struct store *s, uint64_t number);
/* Open: opens the manifest's logs, checks their headers and sizes. Before WAL replay. */
int store_vlogs_open(struct store *s, struct st_err *err) ST_WUR;
/* Open, after WAL replay: cuts every log to the rows runs and replayed records name
 * (named[k]: rows named for s->vlogs[k]) and fsyncs it. */
int store_vlogs_settle(struct store *s, const uint64_t *named, struct st_err *err) ST_WUR;

struct store {
    struct store_opts o;
    char *dir;
    pthread_mutex_t flush_mu, mf_mu, sync_mu, mu;
    pthread_cond_t work_cv, durable_cv, flushed_cv, roll_cv;
    bool rolling; /* a WAL roll is in flight: writers wait on roll_cv */
    /* Memtables frozen and flushed so far, and flush attempts that failed (not fatally: the
     * WAL keeps the data and the flusher retries): store_flush waits for the memtables it
     * froze, not for "none frozen" (a saturated writer keeps freezing more), and returns the
     * error of an attempt that failed meanwhile instead of waiting out the retries. */
    uint64_t frozen_total, flushed_total, flush_failures;
    int flush_error;

    struct store_memtable *mem;
    struct store_memtable **frozen; /* oldest first */
    size_t nfrozen;
    struct store_segment **segs;
    size_t nsegs;
    struct store_mf_state mf; /* the manifest's view; guarded by mf_mu for edits, mu for reads */

    struct store_file *wal_file;
    struct store_log_writer wal;
    uint64_t wal_number;
    struct store_file *mf_file;
    struct store_log_writer mfw;
    uint64_t mf_number;
    uint64_t mf_base_bytes; /* size of the manifest's snapshot when it was last rewritten */

    struct store_marks applied, durable;
    uint64_t written_seq, durable_seq;
    int failed; /* first fatal WAL/manifest error; sticky */

    struct store_vlog **vlogs; /* mu: vector logs of unsealed windows */
    size_t nvlogs, capvlogs;
    struct store_vref *wrefs; /* per record of the batch being written (mu) */
    const float **wvec;       /* per record: the memtable's copy of its vector (mu) */
    struct store_wplan {      /* per log the batch appends to (mu) */
        struct store_vlog *v;
        uint64_t next;  /* its next row */
        uint32_t count; /* rows of the batch */
    } * wplan;
    size_t nwplan, wplan_cap;
    size_t wrefs_cap;
    struct iovec *viov; /* the vectors appended to one log (mu) */
    size_t viov_cap;

    uint8_t *wbuf; /* a WAL record's bytes other than its vectors (wal_encode) */
    size_t wcap;
    struct iovec *wiov; /* the record as wbuf pieces and the writer's vectors */
    size_t wiov_cap;
    /* Group commit (wal_sync = batch; guarded by mu): bytes appended to the WAL so far, the
     * count the last fsync covered, and when the oldest append not covered yet was made
     * (0: none). The syncer fsyncs once that append is wal_sync_interval_ms old or
     * STORE_SYNC_BYTES are waiting, whichever comes first. */
    uint64_t wal_appended, wal_synced;
    int64_t unsynced_since_ns;

    /* The vector-log writer (background stores with wal_sync batch or always; see "The
     * vector-log writer" in store/README.md). A write reserves its rows and queues one job per
     * log (appending the rows from the memtable's copy of the vectors); the writer thread
     * appends them in queue order with no lock held and removes a job only once its bytes are
     * in the file. An fsync of the logs first waits until no job of the writes it covers is
     * left (store_vw_wait_locked). Guarded by mu. */
    bool vw_async;
    struct store_vjob *vj_head, *vj_tail;
    size_t vj_n;
    pthread_cond_t vw_cv;      /* jobs queued, or stop: the writer wakes */
    pthread_cond_t vw_done_cv; /* a job done (or the store failed): waiters look again */

    struct store_reclaim *reclaim;

    bool stop;
    bool have_syncer, have_flusher, have_vwriter;
    pthread_t syncer, flusher, vwriter;
    struct store_stats st;
    struct st_hist wal_sync_hist;
};

/* Shared by the store*.c files. "_locked": the caller holds s->mu. */
void store_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
void store_cond_init_mono(pthread_cond_t *cv);
/* Records the first fatal error (sticky: every later write fails) and returns rc. */
int store_fail_locked(struct store *s, int rc, const char *what);
/* Appends one edit group to the manifest and fsyncs it. Caller holds mf_mu. */
int store_mf_append(struct store *s, const struct store_mf_edit *e) ST_WUR;
/* Writes a fresh manifest holding the whole state and switches CURRENT to it (compaction).
 * Caller holds mf_mu. *switched: CURRENT was renamed (a later failure cannot be undone). */
int store_mf_rewrite(struct store *s, bool *switched, struct st_err *err) ST_WUR;
/* Adds the caller's window and key/value records to an edit group. x may be NULL. */
int store_mf_edit_extra(struct store_mf_edit *e, const struct store_edit_extra *x) ST_WUR;
int store_wal_new_file(struct store *s) ST_WUR;
int store_wal_sync_locked(struct store *s) ST_WUR;
/* Waits (mu released meanwhile) until every vector-log job of the writes up to seq is in its
 * file; returns s->failed. Caller holds mu. */
int store_vw_wait_locked(struct store *s, uint64_t seq) ST_WUR;
void *store_vwriter_main(void *arg);
/* Is a job of log v queued or being written? Caller holds mu. */
bool store_vw_pending_locked(const struct store *s, const struct store_vlog *v);
/* Frees every queued job (close, after the writer stopped). Caller holds no lock. */
void store_vw_free_jobs(struct store *s);
void *store_syncer_main(void *arg);
void *store_flusher_main(void *arg);
int store_batch_validate(const struct store *s, const struct store_batch *b) ST_WUR;
/* refs: per record, where its vector's row is (NULL: nowhere but the WAL). vecs (may be NULL)
 * gets per record the memtable's copy of its vector (NULL: not inserted, an older version). */
int store_apply_locked(struct store *s, const struct store_batch *b, const struct store_vref *refs,
                       const float **vecs) ST_WUR;
/* Freezes the active memtable (if it holds anything) and rolls the WAL. Caller holds sync_mu,
 * not mu. */
int store_freeze(struct store *s) ST_WUR;
struct store_memtable **store_frozen_capture_locked(struct store *s, size_t *n);
void store_frozen_release(struct store_memtable **fz, size_t n);

#endif
