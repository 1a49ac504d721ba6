/*
 * twcs.h — time-window compaction on top of one store (one collection).
 *
 * Records are placed in event-time windows; a window is sealed once the watermark passes
 * end + grace (its runs merged into one sealed segment, or its single run promoted), late
 * records within max_lateness go into delta runs and re-seal the window as version n+1, and
 * whole windows are dropped by TTL (wall clock) and a FIFO byte cap, oldest first, without
 * rewriting anything. Policy lives here; mechanism (files, manifest) in store/.
 *
 * Threads: twcs_write from one ingest thread per partition set; twcs_tick from the internal
 * timer thread (or the caller when tick_ms = 0). All functions are thread-safe.
 */
#ifndef TWCS_H
#define TWCS_H

#include <stdbool.h>
#include <stdint.h>

#include "st_error.h"
#include "store.h"

enum twcs_state { TWCS_OPEN = 0, TWCS_SEALED = 1 };

enum twcs_event_kind { TWCS_EV_SEALED = 1, TWCS_EV_EXPIRED = 2 };

struct twcs_event {
    enum twcs_event_kind kind;
    int64_t start, end;
    uint32_t version;
    uint64_t records, bytes; /* sealed segment */
    uint64_t file_number;    /* sealed segment; its path is store dir + %06llu.seg */
    uint32_t checksum;       /* sealed segment's footer checksum */
    const char *path;        /* sealed segment's file, valid during the callback */
    const char *reason;      /* expired: "ttl" or "fifo" */
    const char *key;         /* pass to twcs_event_done once delivered */
};

/*
 * Called for every sealed/expired window, from the thread that sealed or dropped it, and on
 * open for every event not yet confirmed with twcs_event_done (at-least-once: the event is in
 * the same manifest edit as the seal or drop). Must not call back into twcs.
 */
typedef void (*twcs_event_fn)(void *ctx, const struct twcs_event *ev);

struct twcs_opts {
    struct store_opts store; /* dir, dim, sync, fs, clock, ... */
    int64_t window_ms;       /* size of new windows */
    int64_t grace_ms;
    int64_t max_lateness_ms;
    int64_t max_future_ms;      /* 0: 1h */
    int64_t ttl_ms;             /* 0: none */
    uint64_t max_bytes;         /* 0: no FIFO cap */
    int64_t idle_timeout_ms;    /* 0: 60s; silent partitions stop holding the watermark back */
    uint32_t max_open_windows;  /* 0: 64 */
    uint32_t drops_per_tick;    /* 0: 4 */
    uint32_t runs_min_merge;    /* 0: 4 runs of an open window trigger a merge */
    uint32_t runs_max_merge;    /* 0: 32 */
    int64_t reseal_delay_ms;    /* late deltas re-seal after this long (0: next tick) */
    uint32_t reseal_min_ratio;  /* 0: re-seal after reseal_delay whatever the deltas; N: only
                                 * once they reach 1/N of the sealed segment's bytes, or have
                                 * waited reseal_max_wait, or the window is past max_lateness
                                 * (each re-seal rewrites the window and rebuilds its index) */
    int64_t reseal_max_wait_ms; /* with reseal_min_ratio; 0: window_ms */
    int64_t tick_ms;            /* timer period; 0: no thread, call twcs_tick yourself */
    twcs_event_fn on_event;
    void *ctx;
};

struct twcs;

int twcs_open(const struct twcs_opts *o, struct twcs **out, struct st_err *err) ST_WUR;
int twcs_close(struct twcs *t);

enum twcs_verdict {
    TWCS_ACCEPTED = 0,       /* applied (records older than the TTL dropped: see expired) */
    TWCS_DUPLICATE = 1,      /* a replay of an applied (partition, offset): skipped */
    TWCS_REJECT_FUTURE = 2,  /* a record beyond max_future of the wall clock */
    TWCS_REJECT_LATE = 3,    /* a record for a sealed window beyond max_lateness */
    TWCS_REJECT_WINDOWS = 4, /* it would open more than max_open_windows */
    TWCS_REJECT_TS = 5       /* a timestamp whose window cannot be represented */
};

struct twcs_result {
    enum twcs_verdict verdict;
    uint32_t expired;   /* records dropped as older than the TTL / an already dropped window */
    const char *reason; /* stable reason code for rejections: "ts_future", "late", ... */
};

/*
 * Writes one Kafka message's records (their window fields are ignored and set here). The
 * array is reordered (kept records first, in order) but stays a permutation of the batch, so
 * after ST_EAGAIN the same array is retried as it is. A rejected batch applies nothing. Returns
 * ST_EAGAIN for back-pressure (memtable full, FIFO cap reached): pause the partition and retry
 * later. Hitting the FIFO cap wakes the timer thread (when there is one) for a tick at once, so
 * sealed windows are dropped without waiting for the next period (at most one such tick per
 * 10 ms); with no sealed window there is nothing to drop, no tick is asked for, and a warning
 * (once a minute) says writes wait until a window seals. Two rules keep that wait finite when
 * windows can seal: a refused batch's earliest event time counts towards its partition's
 * watermark (it is retried after everything before it), and over the cap with no window sealed
 * or due, a partition whose event time is still before the oldest open window's end + grace
 * while another partition's is past it writes anyway (its records are what lets that window
 * seal; stats.fifo_lagging_writes counts them, retries included) while its batches' earliest
 * event time moves (at most TWCS_FIFO_LAG_STALLS batches that do not raise its high mark are
 * counted) and the store stays within the larger of max_bytes / 8 and the largest sealed window
 * seen, at most max_bytes / 2, over the cap. The cap counts files given up but not freed yet
 * (store_stats.reclaim_bytes): over it only by those, no tick is asked for. Before, every
 * partition waited for the idle timeout to release the watermark; past those bounds they still do
 * (refused batches do not keep a partition from going idle).
 */
#define TWCS_FIFO_LAG_STALLS 16
int twcs_write(struct twcs *t, int32_t partition, int64_t offset, struct store_record *recs,
               uint32_t n, struct twcs_result *res) ST_WUR;

/*
 * Tells twcs which partitions this node consumes (after a rebalance). An assigned partition
 * that has produced nothing yet holds the watermark back until it does or goes idle;
 * partitions not listed stop counting.
 */
int twcs_partitions_assigned(struct twcs *t, const int32_t *partitions, size_t n) ST_WUR;

/* One round of background work: seal, re-seal, merge runs, TTL and FIFO drops. */
int twcs_tick(struct twcs *t) ST_WUR;

/* Confirms delivery of an event (deletes it from the durable outbox). */
int twcs_event_done(struct twcs *t, const char *key) ST_WUR;

/* The window a timestamp belongs to under size w: floor division, correct for negatives. */
int64_t twcs_window_start(int64_t ts, int64_t w);

/* The global watermark (INT64_MIN before any record). */
int64_t twcs_watermark(struct twcs *t);

struct twcs_window_info {
    int64_t start, end;
    enum twcs_state state;
    uint32_t version;
    uint32_t segments;
    uint64_t records, bytes;
};
/* Windows sorted by start (malloc'd, caller frees). */
int twcs_windows(struct twcs *t, struct twcs_window_info **out, size_t *n) ST_WUR;

struct twcs_stats {
    uint64_t expired_records;
    uint64_t rejected_future, rejected_late, rejected_windows;
    uint64_t dropped_ttl, dropped_fifo;
    uint64_t sealed, resealed, merges;
    uint64_t bytes_ingested, bytes_written; /* write amplification = written / ingested */
    uint64_t compaction_bytes;    /* segment bytes written by merges and seals (not flushes) */
    uint32_t merging;             /* merges running now */
    uint64_t ticks;               /* twcs_tick runs (the timer's and callers') */
    uint64_t fifo_lagging_writes; /* writes over the FIFO cap from a partition holding the
                                   * oldest open window's seal back (see twcs_write) */
    uint64_t windows_prepared;    /* created ahead of their data by the tick (prepare_next) */
    uint64_t window_creates;      /* writes whose records needed a window not in the table:
                                   * they waited for its creation (theirs or another's) */
    uint64_t window_create_ns;    /* the time those writes waited */
};
void twcs_stats(struct twcs *t, struct twcs_stats *out);

/* The underlying store, for reads (get, snapshots). Borrowed while t lives. */
struct store *twcs_store(struct twcs *t);

#endif
