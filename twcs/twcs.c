/* Time-window compaction: window assignment, watermarks, seal, late data, TTL and FIFO drops. */
#include "twcs.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "st_clock.h"
#include "st_coding.h"
#include "st_fault.h"
#include "st_log.h"

#define LOG_COMP     "twcs"
#define TWCS_EXPIRED 2 /* window-table state of the newest dropped window: the horizon */
#define KV_WATERMARK "twcs.watermark"
#define EV_PREFIX    "ev/"
#define RS_PREFIX    "rs/" /* a sealed window's first pending late data: wall ms + version */
#define EV_LEN       53

struct part_wm {
    int32_t partition;
    int64_t max_ts;
    int64_t last_seen_ms; /* monotonic */
    int64_t lag_ts;       /* FIFO cap: the earliest time of the last lagging batch taken */
    int64_t lag_hwm;      /* the highest of those earliest times */
    int64_t lag_off;      /* the offset of the last lagging batch taken */
    uint32_t lag_stalls;  /* batches not rising since lag_hwm last rose */
};

struct twcs {
    struct twcs_opts o;
    struct store *s;
    pthread_mutex_t mu;        /* windows, watermarks, stats; never held across store I/O */
    pthread_mutex_t tick_mu;   /* one tick at a time */
    pthread_mutex_t create_mu; /* one window creation at a time (a manifest append) */
    pthread_rwlock_t gate;     /* writes hold it shared from classification to applied; a
                                * drop takes it exclusively to move the horizon, so no write
                                * classified before lands in a window being dropped */
    struct store_window *win;  /* sorted by start; the store's table is the durable copy */
    size_t nwin;
    int64_t *delta_since; /* per window: monotonic ms + 1 when a pending re-seal was first
                           * seen, or 0. A cache: whether a sealed window needs a re-seal is
                           * derived from durable state (runs, unflushed rows) every tick, and
                           * when it was first seen is kept under RS_PREFIX (rs_persist), so a
                           * restart does not start the wait again. */
    int64_t horizon;      /* every window ending at or before it has been dropped */
    int64_t prepared;     /* start of the window prepare_next created that no write has reached
                           * yet (INT64_MIN: none): it takes no slot of max_open_windows */
    struct part_wm *pw;
    size_t npw;
    uint64_t big_window; /* bytes of the largest sealed segment seen (the FIFO cap's slack) */
    int64_t watermark;
    int64_t wm_persisted; /* last watermark written to the manifest */
    struct twcs_stats st;
    _Atomic uint32_t merging; /* merges in progress */
    struct st_ratelimit alarm_rl;
    pthread_t thread;
    bool have_thread, stop;
    bool kicked; /* a writer hit the FIFO cap: tick now, not at the next period (mu) */
    struct st_ratelimit cap_rl;  /* "over the FIFO cap with no sealed window" (mu) */
    struct st_ratelimit prep_rl; /* "could not prepare the next window" (tick_mu) */
    pthread_cond_t cv;
};

int64_t twcs_window_start(int64_t ts, int64_t w)
{
    int64_t q = ts / w;
    if (ts % w != 0 && ts < 0)
        q--;
    return q * w;
}

/* a + b, clamped to the int64 range (window math near INT64_MIN/MAX never overflows). */
static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

/* a - b, clamped; b is never INT64_MIN here (window bounds and durations). */
static int64_t sat_sub(int64_t a, int64_t b)
{
    return b == INT64_MIN ? INT64_MAX : sat_add(a, -b);
}

static int64_t mono_ms(const struct twcs *t)
{
    return st_clock_mono_ns(t->o.store.clock) / 1000000;
}

static int64_t wall_ms(const struct twcs *t)
{
    return st_clock_wall_ms(t->o.store.clock);
}

/* ---- the re-seal clock, across restarts ------------------------------------------------------ */

/*
 * The time a sealed window's pending late data was first seen, kept in the manifest as
 * rs/<start> = {wall ms, the window's version then}. Without it every restart started
 * reseal_max_wait again, and late rows of a node restarted more often than that stayed out
 * of `indexed` searches until max_lateness (or forever on a quiet stream). A record whose
 * version is not the window's (re-sealed since) or whose window is gone is stale: removed at
 * open and after each re-seal. Written by the tick, never under mu.
 */
struct rs_rec {
    int64_t wall_ms;
    uint32_t version;
};

static void rs_key(char *buf, size_t n, int64_t start)
{
    snprintf(buf, n, RS_PREFIX "%" PRId64, start);
}

/* Records window w's re-seal clock (since_mono: monotonic ms + 1) unless it is already. */
static int rs_persist(struct twcs *t, const struct store_window *w, int64_t since_mono)
{
    char key[48];
    rs_key(key, sizeof(key), w->start);
    struct rs_rec r;
    size_t len;
    if (store_kv_get(t->s, key, &r, sizeof(r), &len) == ST_OK && len == sizeof(r) &&
        r.version == w->version)
        return ST_OK;
    r = (struct rs_rec){wall_ms(t) - (mono_ms(t) - (since_mono - 1)), w->version};
    return store_kv_put(t->s, key, &r, sizeof(r));
}

/* Removes window start's record, if any (failing, it stays stale until the next open's). */
static void rs_forget(struct twcs *t, int64_t start)
{
    char key[48];
    rs_key(key, sizeof(key), start);
    struct rs_rec r;
    size_t len;
    int rc;
    if (store_kv_get(t->s, key, &r, sizeof(r), &len) == ST_OK &&
        (rc = store_kv_del(t->s, key)) != ST_OK)
        st_log_warn(LOG_COMP, "cannot remove %s (removed at the next open): %s", key,
                    st_strerror(rc));
}

/* At open: each sealed window's clock from its record (the wall time since, as monotonic). */
static int rs_load(struct twcs *t)
{
    char **keys = NULL;
    size_t nk = 0;
    int rc = store_kv_keys(t->s, RS_PREFIX, &keys, &nk);
    if (rc != ST_OK)
        return rc;
    int64_t now_wall = wall_ms(t), now_mono = mono_ms(t);
    for (size_t i = 0; i < nk; i++) {
        struct rs_rec r;
        size_t len;
        char *end;
        long long start = strtoll(keys[i] + strlen(RS_PREFIX), &end, 10);
        bool live = false;
        if (*end == '\0' && store_kv_get(t->s, keys[i], &r, sizeof(r), &len) == ST_OK &&
            len == sizeof(r)) {
            for (size_t j = 0; j < t->nwin; j++) {
                if (t->win[j].start != start || t->win[j].state != TWCS_SEALED ||
                    t->win[j].version != r.version)
                    continue;
                int64_t waited = sat_sub(now_wall, r.wall_ms); /* set back: no wait yet */
                if (waited > ((int64_t)1 << 50)) /* an absurd record: long enough, no overflow */
                    waited = (int64_t)1 << 50;
                int64_t since = (waited > 0 ? sat_sub(now_mono, waited) : now_mono) + 1;
                t->delta_since[j] = since != 0 ? since : -1; /* 0 means "no delta" */
                live = true;
            }
        }
        if (!live && rc == ST_OK)
            rc = store_kv_del(t->s, keys[i]);
        free(keys[i]);
    }
    free(keys);
    return rc;
}

/* ---- window cache ---------------------------------------------------------------------------- */

static int reload_windows(struct twcs *t)
{
    struct store_window *w;
    size_t n;
    int rc = store_windows(t->s, &w, &n);
    if (rc != ST_OK)
        return rc;
    int64_t *ds = calloc(n ? n : 1, sizeof(*ds));
    if (ds == NULL) {
        free(w);
        return ST_ENOMEM;
    }
    /* Keep the delta clocks of windows that survive. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < t->nwin; j++)
            if (t->win[j].start == w[i].start)
                ds[i] = t->delta_since[j];
    free(t->win);
    free(t->delta_since);
    t->win = w;
    t->nwin = n;
    t->delta_since = ds;
    for (size_t i = 0; i < n; i++)
        if (w[i].state == TWCS_EXPIRED && w[i].end > t->horizon)
            t->horizon = w[i].end;
    return ST_OK;
}

/* Index of the window containing ts, or -1; *next gets the first window starting after ts. */
static long find_window(const struct twcs *t, int64_t ts, long *next)
{
    long lo = 0, hi = (long)t->nwin;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (t->win[mid].start <= ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    *next = lo;
    if (lo > 0 && ts < t->win[lo - 1].end && t->win[lo - 1].state != TWCS_EXPIRED)
        return lo - 1;
    return -1;
}

/* ---- watermark ------------------------------------------------------------------------------ */

/* Recomputes the global watermark. Caller holds mu. */
static void watermark_update(struct twcs *t)
{
    int64_t now = mono_ms(t);
    int64_t idle = t->o.idle_timeout_ms;
    int64_t active_min = INT64_MAX, all_max = INT64_MIN;
    bool any_active = false;
    for (size_t i = 0; i < t->npw; i++) {
        if (t->pw[i].max_ts > all_max)
            all_max = t->pw[i].max_ts;
        if (now - t->pw[i].last_seen_ms < idle) {
            any_active = true;
            if (t->pw[i].max_ts < active_min)
                active_min = t->pw[i].max_ts;
        }
    }
    if (t->npw == 0)
        return;
    /* Idle partitions do not hold the watermark back; when all are idle the stream has gone
     * quiet and the newest event time seen is the best estimate. */
    int64_t cand = any_active ? active_min : all_max;
    if (cand > t->watermark)
        t->watermark = cand; /* never moves backwards */
}

/* Partition's event time has reached max_ts. seen: a write was taken (the partition is active
 * now); a refused batch shows progress without keeping its partition from going idle, so the
 * idle timeout stays the backstop that releases the watermark. */
static int pw_note(struct twcs *t, int32_t partition, int64_t max_ts, bool seen)
{
    for (size_t i = 0; i < t->npw; i++) {
        if (t->pw[i].partition == partition) {
            if (max_ts > t->pw[i].max_ts)
                t->pw[i].max_ts = max_ts;
            if (seen)
                t->pw[i].last_seen_ms = mono_ms(t);
            return ST_OK;
        }
    }
    struct part_wm *n = realloc(t->pw, (t->npw + 1) * sizeof(*n));
    if (n == NULL)
        return ST_ENOMEM;
    t->pw = n;
    t->pw[t->npw++] =
        (struct part_wm){partition, max_ts, mono_ms(t), INT64_MIN, INT64_MIN, INT64_MIN, 0};
    return ST_OK;
}

/*
 * A batch refused at the FIFO cap still shows how far its partition has come: it is retried as
 * it is, after everything before it. Its earliest event time counts towards the partition's
 * watermark (not its latest: none of its own records can become late by it), so a window that
 * every partition has left can seal, and the cap's drop follow, while writes wait. Not when
 * even its earliest record would need a window beyond max_open_windows. (A batch noted here and
 * later rejected for its other records goes to the dead-letter topic: its partition moves on
 * past it all the same.)
 */
/* Open windows against max_open_windows: a prepared window no write has reached takes no slot
 * (prepare_next). Caller holds mu. */
static uint32_t open_slots_locked(const struct twcs *t)
{
    uint32_t open = 0;
    for (size_t i = 0; i < t->nwin; i++)
        open += t->win[i].state == TWCS_OPEN && t->win[i].start != t->prepared;
    return open;
}

static void fifo_note_refused_locked(struct twcs *t, int32_t partition, int64_t lo)
{
    if (partition < 0)
        return;
    long next;
    if (find_window(t, lo, &next) >= 0 || open_slots_locked(t) < t->o.max_open_windows)
        (void)pw_note(t, partition, lo, false); /* ST_ENOMEM: not noted, the write waits */
}

/*
 * Over the FIFO cap (used bytes) with no window sealed or due, may this partition write anyway?
 * Yes when it is one of those holding the oldest open window's seal back while another
 * partition is already past it: its records are what lets that window seal (and the cap's drop
 * follow). Pausing it would stall every partition until the idle timeout released the
 * watermark. With one partition, or none ahead, nothing is admitted: ingest pauses (SPEC 3).
 * Two bounds keep a partition that never gets there (a stuck producer clock) from writing
 * without end: its event time must move — a batch whose earliest event time (lo) is above every
 * earlier one's resets the count; one below the previous batch's, or equal to it, counts; a
 * batch rising from below (the batches after one record ahead of the others) does not count
 * and does not reset it, so at most TWCS_FIFO_LAG_STALLS batches that do not raise the high
 * mark are counted (up to twice as many taken when they alternate down and up) and a retry of
 * a batch already counted, at the same offset, does not count again; and the overshoot stays
 * within the larger of max_bytes / 8 and the largest sealed window seen (what a partition may
 * have to write to finish its share of one; a fixed fraction of the cap would stall again
 * wherever windows are larger than it), never more than max_bytes / 2. Past either, every
 * partition waits and the idle timeout is the backstop.
 */
static bool fifo_lagging_locked(struct twcs *t, int32_t partition, int64_t offset, int64_t lo,
                                uint64_t used)
{
    if (partition < 0)
        return false;
    uint64_t slack = t->o.max_bytes / 8 > t->big_window ? t->o.max_bytes / 8 : t->big_window;
    if (slack > t->o.max_bytes / 2)
        slack = t->o.max_bytes / 2; /* one oversized window does not double the cap */
    int64_t oldest = INT64_MAX, end = 0;
    for (size_t i = 0; i < t->nwin; i++) {
        if (t->win[i].state == TWCS_OPEN && t->win[i].start < oldest) {
            oldest = t->win[i].start;
            end = t->win[i].end;
        }
    }
    if (oldest == INT64_MAX || used - t->o.max_bytes > slack) /* used > max_bytes here */
        return false;
    int64_t due_at = sat_add(end, t->o.grace_ms), now = mono_ms(t);
    bool ahead = false;
    struct part_wm *lag = NULL;
    for (size_t i = 0; i < t->npw; i++) {
        if (t->pw[i].max_ts >= due_at)
            ahead = true;
        else if (t->pw[i].partition == partition &&
                 now - t->pw[i].last_seen_ms < t->o.idle_timeout_ms)
            lag = &t->pw[i]; /* active and behind: it holds the watermark below due_at */
    }
    if (!ahead || lag == NULL)
        return false;
    if (lo > lag->lag_hwm) {
        lag->lag_hwm = lag->lag_ts = lo;
        lag->lag_off = offset;
        lag->lag_stalls = 0;
        return true;
    }
    if (offset <= lag->lag_off)
        return true;        /* a retry of a batch taken before (the store pushed back) */
    if (lo > lag->lag_ts) { /* rising, below the high mark: neither counted nor a reset */
        lag->lag_ts = lo;
        lag->lag_off = offset;
        return true;
    }
    if (lag->lag_stalls >= TWCS_FIFO_LAG_STALLS)
        return false; /* until a batch's time rises */
    lag->lag_stalls++;
    lag->lag_ts = lo;
    lag->lag_off = offset;
    return true;
}

int twcs_partitions_assigned(struct twcs *t, const int32_t *partitions, size_t n)
{
    pthread_mutex_lock(&t->mu);
    struct part_wm *nw = malloc((n ? n : 1) * sizeof(*nw));
    if (nw == NULL) {
        pthread_mutex_unlock(&t->mu);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        nw[i] = (struct part_wm){partitions[i], INT64_MIN, mono_ms(t), INT64_MIN,
                                 INT64_MIN,     INT64_MIN, 0};
        for (size_t j = 0; j < t->npw; j++)
            if (t->pw[j].partition == partitions[i])
                nw[i] = t->pw[j]; /* kept: its progress and idleness carry over */
    }
    free(t->pw);
    t->pw = nw;
    t->npw = n;
    pthread_mutex_unlock(&t->mu);
    return ST_OK;
}

int64_t twcs_watermark(struct twcs *t)
{
    pthread_mutex_lock(&t->mu);
    watermark_update(t);
    int64_t w = t->watermark;
    pthread_mutex_unlock(&t->mu);
    return w;
}

/* ---- events (durable outbox in the manifest) ------------------------------------------------ */

static void store_best_effort_del(struct twcs *t, const char *key)
{
    if (store_kv_del(t->s, key) != ST_OK)
        st_log_warn(LOG_COMP, "cannot remove stale outbox entry key=%s", key);
}

static void ev_key(char *buf, size_t n, enum twcs_event_kind k, int64_t start, uint32_t version)
{
    snprintf(buf, n, EV_PREFIX "%s/%" PRId64 "/%u", k == TWCS_EV_SEALED ? "sealed" : "expired",
             start, version);
}

static void ev_encode(uint8_t *p, const struct twcs_event *e)
{
    p[0] = (uint8_t)e->kind;
    st_put_le64(p + 1, (uint64_t)e->start);
    st_put_le64(p + 9, (uint64_t)e->end);
    st_put_le32(p + 17, e->version);
    st_put_le64(p + 21, e->records);
    st_put_le64(p + 29, e->bytes);
    st_put_le64(p + 37, e->file_number);
    p[45] = e->reason && strcmp(e->reason, "fifo") == 0 ? 2 : e->reason ? 1 : 0;
    memset(p + 46, 0, EV_LEN - 46);
}

static void ev_decode(const uint8_t *p, struct twcs_event *e)
{
    e->kind = (enum twcs_event_kind)p[0];
    e->start = (int64_t)st_get_le64(p + 1);
    e->end = (int64_t)st_get_le64(p + 9);
    e->version = st_get_le32(p + 17);
    e->records = st_get_le64(p + 21);
    e->bytes = st_get_le64(p + 29);
    e->file_number = st_get_le64(p + 37);
    e->reason = p[45] == 2 ? "fifo" : p[45] == 1 ? "ttl" : NULL;
}

static void note_big_window(struct twcs *t, uint64_t bytes)
{
    pthread_mutex_lock(&t->mu);
    if (bytes > t->big_window)
        t->big_window = bytes;
    pthread_mutex_unlock(&t->mu);
}

/* Emits e. A sealed event gets its segment's details from the current state; one whose
 * version is no longer the window's sealed segment (re-sealed or dropped since) is stale and
 * is removed from the outbox instead. */
static void emit(struct twcs *t, struct twcs_event *e, const char *key)
{
    e->key = key;
    struct store_snapshot *snap = NULL;
    if (e->kind == TWCS_EV_SEALED) {
        bool found = false;
        if (store_snapshot_acquire(t->s, &snap) != ST_OK)
            return; /* stays in the outbox; delivered on the next open */
        for (size_t i = 0; i < store_snapshot_count(snap) && !found; i++) {
            struct store_segment_info in;
            store_segment_info(store_snapshot_segment(snap, i), &in);
            if (in.window_start == e->start && in.kind == STORE_SEG_SEALED &&
                in.version == e->version) {
                e->records = in.count;
                e->bytes = in.bytes;
                e->file_number = in.file_number;
                e->checksum = in.checksum;
                e->path = in.path;
                found = true;
                note_big_window(t, in.bytes);
            }
        }
        if (!found) {
            store_snapshot_release(snap);
            store_best_effort_del(t, key);
            return;
        }
    }
    if (t->o.on_event != NULL)
        t->o.on_event(t->o.ctx, e);
    store_snapshot_release(snap);
}

int twcs_event_done(struct twcs *t, const char *key)
{
    return store_kv_del(t->s, key);
}

/* ---- write path ------------------------------------------------------------------------------ */

static int new_window(struct twcs *t, int64_t ts, long next, struct store_window *out)
{
    int64_t start = twcs_window_start(ts, t->o.window_ms);
    int64_t end = start + t->o.window_ms;
    /* A changed window size applies to new windows only: clip against existing neighbours. */
    if (next > 0 && t->win[next - 1].end > start)
        start = t->win[next - 1].end;
    if ((size_t)next < t->nwin && t->win[next].start < end)
        end = t->win[next].start;
    if (t->horizon != INT64_MIN && start < t->horizon)
        start = t->horizon;
    *out = (struct store_window){start, end, TWCS_OPEN, 0};
    return ST_OK;
}

/* How a batch classifies against the window cache. Caller holds mu. */
struct classify {
    struct store_window created[8]; /* windows the batch would create */
    size_t ncreated;
    uint32_t keep;
    int64_t max_ts;
};

/*
 * Places every record of the batch in a window (in place: window, window_end; kept records
 * moved to the front), or sets a rejection verdict. Windows that do not exist yet are listed
 * in c->created. Caller holds mu; no I/O.
 */
static int classify_locked(struct twcs *t, int64_t now, struct store_record *recs, uint32_t n,
                           struct twcs_result *res, struct classify *c)
{
    c->ncreated = 0;
    c->keep = 0;
    c->max_ts = INT64_MIN;
    res->expired = 0;
    res->verdict = TWCS_ACCEPTED;
    res->reason = NULL;
    watermark_update(t);
    for (uint32_t i = 0; i < n; i++) {
        struct store_record *r = &recs[i];
        if ((t->horizon != INT64_MIN && r->ts < t->horizon) ||
            (t->o.ttl_ms > 0 && r->ts < sat_sub(now, t->o.ttl_ms))) {
            res->expired++;        /* older than the TTL or in a dropped window: never recreated */
            r->window = INT64_MIN; /* marked (no window starts there: ts is range-checked) */
            continue;
        }
        long next;
        long wi = find_window(t, r->ts, &next);
        struct store_window w;
        if (wi >= 0) {
            w = t->win[wi];
        } else {
            bool found = false;
            for (size_t k = 0; k < c->ncreated && !found; k++) {
                if (r->ts >= c->created[k].start && r->ts < c->created[k].end) {
                    w = c->created[k];
                    found = true;
                }
            }
            if (!found) {
                new_window(t, r->ts, next, &w);
                for (size_t k = 0; k < c->ncreated; k++) { /* and against this batch's windows */
                    if (c->created[k].end > w.start && c->created[k].start <= r->ts)
                        w.start = c->created[k].end;
                    if (c->created[k].start < w.end && c->created[k].start > r->ts)
                        w.end = c->created[k].start;
                }
                if (open_slots_locked(t) + c->ncreated + 1 > t->o.max_open_windows ||
                    c->ncreated == sizeof(c->created) / sizeof(c->created[0])) {
                    res->verdict = TWCS_REJECT_WINDOWS;
                    res->reason = "too_many_windows";
                    return ST_OK;
                }
                c->created[c->ncreated++] = w;
            }
        }
        bool sealed = w.state == TWCS_SEALED;
        bool known = t->watermark != INT64_MIN; /* nothing is late before any watermark */
        bool past_seal = known && t->watermark >= sat_add(w.end, t->o.grace_ms);
        if (known && (sealed || (wi < 0 && past_seal)) &&
            sat_sub(t->watermark, w.end) > t->o.max_lateness_ms) {
            res->verdict = TWCS_REJECT_LATE;
            res->reason = "late";
            return ST_OK;
        }
        r->window = w.start;
        r->window_end = w.end;
        c->keep++;
        if (r->ts > c->max_ts)
            c->max_ts = r->ts;
    }
    /* The kept records first, in their order, the expired after them: the caller's array stays
     * a permutation of its batch, so a retry of the same array after ST_EAGAIN (or another
     * round here) classifies the same records again, none twice and none lost. */
    if (res->expired > 0) {
        struct store_record *x = malloc(res->expired * sizeof(*x));
        if (x == NULL)
            return ST_ENOMEM;
        uint32_t k = 0, e = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (recs[i].window == INT64_MIN)
                x[e++] = recs[i];
            else
                recs[k++] = recs[i];
        }
        memcpy(recs + k, x, e * sizeof(*x));
        free(x);
    }
    return ST_OK;
}

/*
 * Creates the windows the batch needs, durably, before any record in them is written. Takes
 * create_mu (one creation at a time) and re-classifies under mu, since another writer may
 * have created them meanwhile; mu is never held across the manifest append.
 */
static int create_windows(struct twcs *t, int64_t now, struct store_record *recs, uint32_t n,
                          struct twcs_result *res)
{
    pthread_mutex_lock(&t->create_mu);
    struct classify c;
    struct twcs_result r = *res; /* the caller classifies again and decides */
    pthread_mutex_lock(&t->mu);
    int rc = classify_locked(t, now, recs, n, &r, &c);
    pthread_mutex_unlock(&t->mu);
    for (size_t k = 0; rc == ST_OK && r.verdict == TWCS_ACCEPTED && k < c.ncreated; k++)
        rc = store_window_put(t->s, &c.created[k]);
    if (rc == ST_OK && c.ncreated > 0) {
        pthread_mutex_lock(&t->mu);
        rc = reload_windows(t);
        pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_unlock(&t->create_mu);
    return rc;
}

int twcs_write(struct twcs *t, int32_t partition, int64_t offset, struct store_record *recs,
               uint32_t n, struct twcs_result *res)
{
    memset(res, 0, sizeof(*res));
    int64_t now = wall_ms(t);
    for (uint32_t i = 0; i < n; i++) {
        if (recs[i].ts < INT64_MIN + t->o.window_ms) {
            res->verdict = TWCS_REJECT_TS;
            res->reason = "ts_range";
            pthread_mutex_lock(&t->mu);
            t->st.rejected_future++;
            pthread_mutex_unlock(&t->mu);
            return ST_OK;
        }
        if (recs[i].ts > sat_add(now, t->o.max_future_ms) ||
            recs[i].ts > INT64_MAX - t->o.window_ms) {
            res->verdict = TWCS_REJECT_FUTURE;
            res->reason = "ts_future";
            pthread_mutex_lock(&t->mu);
            t->st.rejected_future++;
            pthread_mutex_unlock(&t->mu);
            return ST_OK; /* never moves the watermark */
        }
    }
    int64_t applied;
    if (partition >= 0 && store_applied_offset(t->s, partition, &applied) == ST_OK &&
        offset <= applied) {
        res->verdict = TWCS_DUPLICATE;
        return ST_OK;
    }
    if (t->o.max_bytes > 0) {
        struct store_stats ss;
        store_stats(t->s, &ss);
        /* Files a drop or merge let go count until they are freed (queued for the reclaimer
         * or still held by a reader): the cap is on the disk space. The tick's drops look at
         * the live bytes only, or they would drop more than the cap asks for while an unlink
         * is under way; so a writer at the cap waits for the space itself, not only for the
         * drop. */
        uint64_t used = ss.segment_bytes + ss.wal_live_bytes + ss.vlog_bytes + ss.reclaim_bytes;
        if (used > t->o.max_bytes) {
            /* FIFO cap: pause until a tick drops sealed windows, and ask for one now — a
             * writer must not wait out the tick period (a window's worth per second). With no
             * sealed window a tick has nothing to drop: no kick (a writer retrying every few
             * ms would make the timer tick back to back), a warning a minute; the tick that
             * seals a window drops it. */
            int64_t lo = INT64_MAX;
            for (uint32_t i = 0; i < n; i++)
                if (recs[i].ts < lo)
                    lo = recs[i].ts;
            pthread_mutex_lock(&t->mu);
            fifo_note_refused_locked(t, partition, lo);
            watermark_update(t);
            bool sealed = false; /* or due: the tick seals it (step 1) before the FIFO drop */
            for (size_t i = 0; i < t->nwin && !sealed; i++)
                sealed = t->win[i].state == TWCS_SEALED ||
                         (t->win[i].state == TWCS_OPEN && t->watermark != INT64_MIN &&
                          t->watermark >= sat_add(t->win[i].end, t->o.grace_ms));
            uint32_t sup;
            bool admit = !sealed && fifo_lagging_locked(t, partition, offset, lo, used);
            if (admit) {
                t->st.fifo_lagging_writes++; /* over the cap, so that a window can seal */
            } else if (sealed) {
                /* Over only by what is being freed, there is no drop to ask for (a kick per
                 * retry would tick back to back for nothing): the write waits for the space. */
                if (used - ss.reclaim_bytes > t->o.max_bytes) {
                    t->kicked = true;
                    pthread_cond_signal(&t->cv);
                } else if (st_ratelimit_ok(&t->cap_rl, 1, 60000, &sup)) {
                    st_log_warn(LOG_COMP,
                                "over the FIFO cap (max_bytes=%" PRIu64 " used=%" PRIu64
                                ") by files given up but not freed yet (pending=%" PRIu64
                                " files=%" PRIu64 "): writes wait for the reclaimer, or for "
                                "a search holding them suppressed=%u",
                                t->o.max_bytes, used, ss.reclaim_bytes, ss.reclaim_files, sup);
                }
            } else if (st_ratelimit_ok(&t->cap_rl, 1, 60000, &sup)) {
                st_log_warn(LOG_COMP,
                            "over the FIFO cap (max_bytes=%" PRIu64 " used=%" PRIu64
                            ") with no sealed window to drop: writes wait until a window seals "
                            "(raise the cap or shorten the window) suppressed=%u",
                            t->o.max_bytes, used, sup);
            }
            pthread_mutex_unlock(&t->mu);
            if (!admit)
                return ST_EAGAIN;
        }
    }
    pthread_rwlock_rdlock(&t->gate);
    struct classify c;
    int rc;
    int64_t create_ns = -1; /* time spent creating windows (this write's or another's) */
    for (int round = 0;; round++) {
        pthread_mutex_lock(&t->mu);
        rc = classify_locked(t, now, recs, n, res, &c);
        if (rc != ST_OK || res->verdict != TWCS_ACCEPTED || c.ncreated == 0 || round == 8) {
            if (rc == ST_OK && res->verdict == TWCS_ACCEPTED && c.ncreated == 0)
                t->st.expired_records += res->expired;
            t->st.rejected_windows += res->verdict == TWCS_REJECT_WINDOWS;
            t->st.rejected_late += res->verdict == TWCS_REJECT_LATE;
            pthread_mutex_unlock(&t->mu);
            break;
        }
        pthread_mutex_unlock(&t->mu);
        /* New windows first: durable before any record in them is. */
        int64_t w0 = st_clock_mono_ns(NULL);
        rc = create_windows(t, now, recs, n, res);
        create_ns = (create_ns < 0 ? 0 : create_ns) + (st_clock_mono_ns(NULL) - w0);
        if (rc != ST_OK)
            goto out;
    }
    if (rc != ST_OK || res->verdict != TWCS_ACCEPTED)
        goto out;
    if (c.ncreated > 0) {
        rc = ST_EAGAIN; /* windows kept changing under us (a drop racing creation): retry */
        goto out;
    }
    if (c.keep == 0)
        goto out;
    /* The store call runs without mu: a slow fsync or a freeze does not stall the other
     * partitions, the tick or the metrics. A tick that seals a window meanwhile finds these
     * records (in a memtable or a run) and re-seals it (tick_needs_reseal). */
    struct store_batch b = {.partition = partition, .offset = offset, .n = c.keep, .recs = recs};
    bool was_applied = false;
    rc = ST_FAULT("twcs.write.store"); /* tests: the store pushing back (ST_EAGAIN) */
    if (rc == ST_OK)
        rc = store_write(t->s, &b, &was_applied);
    if (rc != ST_OK)
        goto out;
    res->verdict = was_applied ? TWCS_ACCEPTED : TWCS_DUPLICATE;
    if (was_applied) {
        pthread_mutex_lock(&t->mu);
        rc = pw_note(t, partition, c.max_ts, true);
        for (uint32_t i = 0; i < c.keep; i++) {
            if (recs[i].window == t->prepared)
                t->prepared = INT64_MIN; /* reached by data: an open window like any other */
            long next, wi = find_window(t, recs[i].ts, &next);
            if (wi >= 0 && t->win[wi].state == TWCS_SEALED && t->delta_since[wi] == 0)
                t->delta_since[wi] = mono_ms(t) + 1; /* +1: 0 means "no delta" */
        }
        pthread_mutex_unlock(&t->mu);
    }
out:
    pthread_rwlock_unlock(&t->gate);
    if (create_ns >= 0) {
        pthread_mutex_lock(&t->mu);
        t->st.window_creates++;
        t->st.window_create_ns += (uint64_t)create_ns;
        pthread_mutex_unlock(&t->mu);
    }
    return rc;
}

/* ---- tick: seal, re-seal, merge, drop -------------------------------------------------------- */

/*
 * The window after the newest, created ahead of its data. A write whose record opens a window
 * waits for the window's manifest edit and, unless vectors are inline, for its vector log (file,
 * directory entry, manifest edit): four fsyncs, 100 ms and more on a disk shared with a broker,
 * stalling every partition behind it at each window boundary. So once the newest records come
 * within PREPARE_LEAD of the newest window's end, the tick creates the next window and its log.
 * Never more than one ahead (the newest must hold data), never a window the writes could not fill
 * yet (max_future_ms), never past the FIFO cap or max_open_windows, never after the newest window
 * is due for its seal. Until a write reaches it, it takes no slot of max_open_windows (a batch
 * needing other windows is classified as if it were not there). Left empty, it goes without an
 * event when the watermark passes it (seal_window) or the TTL does (remove_if_empty). Failures
 * are logged, not returned: the first write creates what is missing. Caller holds tick_mu.
 */
#define PREPARE_LEAD_TICKS  2
#define PREPARE_LEAD_MIN_MS 2000

static void prepare_next(struct twcs *t)
{
    if (t->o.max_bytes > 0) { /* at the FIFO cap writes wait: nothing to prepare for */
        struct store_stats ss;
        store_stats(t->s, &ss);
        if (ss.segment_bytes + ss.wal_live_bytes + ss.vlog_bytes + ss.reclaim_bytes >=
            t->o.max_bytes)
            return;
    }
    pthread_mutex_lock(&t->create_mu);
    pthread_mutex_lock(&t->mu);
    watermark_update(t);
    int64_t max_ts = INT64_MIN;
    for (size_t i = 0; i < t->npw; i++)
        if (t->pw[i].max_ts > max_ts)
            max_ts = t->pw[i].max_ts;
    int64_t lead = t->o.tick_ms * PREPARE_LEAD_TICKS;
    if (lead < PREPARE_LEAD_MIN_MS)
        lead = PREPARE_LEAD_MIN_MS;
    const struct store_window *nw = t->nwin > 0 ? &t->win[t->nwin - 1] : NULL;
    struct store_window w = {0};
    /* The newest window: open, holding data near its end, not due for its seal yet (else the
     * window after it would be sealed away empty right after), and room for one more. */
    bool want = nw != NULL && nw->state == TWCS_OPEN && t->prepared == INT64_MIN &&
                max_ts >= nw->start && max_ts < nw->end && max_ts >= sat_sub(nw->end, lead) &&
                (t->watermark == INT64_MIN || t->watermark < sat_add(nw->end, t->o.grace_ms)) &&
                open_slots_locked(t) + 1 <= t->o.max_open_windows &&
                (t->o.ttl_ms == 0 || nw->end > sat_sub(wall_ms(t), t->o.ttl_ms)) &&
                nw->end <= sat_add(wall_ms(t), t->o.max_future_ms) &&
                nw->end <= INT64_MAX - t->o.window_ms;
    if (want)
        new_window(t, nw->end, (long)t->nwin, &w);
    pthread_mutex_unlock(&t->mu);
    int rc = ST_OK;
    if (want && w.end > w.start) {
        rc = store_window_put(t->s, &w);
        if (rc == ST_OK) {
            pthread_mutex_lock(&t->mu);
            rc = reload_windows(t);
            if (rc == ST_OK) {
                t->st.windows_prepared++;
                t->prepared = w.start;
            }
            pthread_mutex_unlock(&t->mu);
        }
        if (rc == ST_OK) /* a failure leaves the window without its log: the write makes it */
            rc = store_prepare_window_log(t->s, w.start, w.end);
    }
    pthread_mutex_unlock(&t->create_mu);
    uint32_t sup;
    /* Only a head start: the write creates what is missing, and fails on what fails for it. */
    if (rc != ST_OK && st_ratelimit_ok(&t->prep_rl, 1, 60000, &sup))
        st_log_warn(LOG_COMP,
                    "could not prepare the next window start=%" PRId64 " error=%s (its first "
                    "write creates it) suppressed=%u",
                    w.start, st_strerror(rc), sup);
}

struct wsegs {
    uint64_t *runs; /* RUN segments */
    size_t nruns;
    uint64_t sealed; /* file number of the SEALED base, 0 if none */
    uint64_t records, bytes;
    uint64_t *run_bytes;
    uint64_t *run_vfile; /* the vector log a run names rows of (0: it holds its vectors) */
};

static int segs_of(struct twcs *t, int64_t start, struct wsegs *ws)
{
    memset(ws, 0, sizeof(*ws));
    struct store_snapshot *snap;
    int rc = store_snapshot_acquire(t->s, &snap);
    if (rc != ST_OK)
        return rc;
    size_t n = store_snapshot_count(snap);
    ws->runs = malloc((n ? n : 1) * sizeof(*ws->runs));
    ws->run_bytes = malloc((n ? n : 1) * sizeof(*ws->run_bytes));
    ws->run_vfile = malloc((n ? n : 1) * sizeof(*ws->run_vfile));
    if (ws->runs == NULL || ws->run_bytes == NULL || ws->run_vfile == NULL) {
        store_snapshot_release(snap);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct store_segment_info in;
        store_segment_info(store_snapshot_segment(snap, i), &in);
        if (in.window_start != start)
            continue;
        ws->records += in.count;
        ws->bytes += in.bytes;
        if (in.kind == STORE_SEG_SEALED) {
            ws->sealed = in.file_number;
        } else {
            ws->run_bytes[ws->nruns] = in.bytes;
            ws->run_vfile[ws->nruns] = in.vector_file;
            ws->runs[ws->nruns++] = in.file_number;
        }
    }
    store_snapshot_release(snap);
    return ST_OK;
}

/* The windows that have segments other than their sealed one (runs, deltas), malloc'd. */
/* A segment of the current version, for the tick's re-seal decisions. */
struct seg_brief {
    int64_t start;
    bool sealed;
    uint64_t bytes;
};

/* Every segment's window, kind and size (malloc'd). */
static int segments_brief(struct twcs *t, struct seg_brief **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    struct store_snapshot *snap;
    int rc = store_snapshot_acquire(t->s, &snap);
    if (rc != ST_OK)
        return rc;
    size_t ns = store_snapshot_count(snap);
    struct seg_brief *b = malloc((ns ? ns : 1) * sizeof(*b));
    if (b == NULL) {
        store_snapshot_release(snap);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < ns; i++) {
        struct store_segment_info in;
        store_segment_info(store_snapshot_segment(snap, i), &in);
        b[(*n)++] = (struct seg_brief){in.window_start, in.kind == STORE_SEG_SEALED, in.bytes};
    }
    store_snapshot_release(snap);
    *out = b;
    return ST_OK;
}

/*
 * Is a sealed window whose late data has waited reseal_delay re-sealed now? Always, without
 * reseal_min_ratio. With it, a re-seal (a rewrite of the whole window, and a rebuild of its
 * index) waits until the deltas are worth it: their bytes reach 1/reseal_min_ratio of the
 * sealed segment's, or they have waited reseal_max_wait, or the window can take no more late
 * data (the watermark past end + max_lateness: this one is the last). Late data trickling in
 * rewrote a window at every tick otherwise (write amplification 9 in bench_storage with 5 %
 * late records); strong searches scan the deltas exactly meanwhile.
 */
static bool reseal_worth_it(struct twcs *t, const struct store_window *w, int64_t waited,
                            int64_t wm, const struct seg_brief *b, size_t nb)
{
    if (t->o.reseal_min_ratio == 0)
        return true;
    int64_t max_wait = t->o.reseal_max_wait_ms > 0 ? t->o.reseal_max_wait_ms : t->o.window_ms;
    /* Twice as long after each re-seal of the window: late data spread over many windows
     * re-sealed each of them once per max_wait until max_lateness (123 re-seals of 24 windows
     * and write amplification 5.7 with max_lateness 7 windows in bench_storage); now about
     * log2(max_lateness / max_wait) + 2 times. At most max_lateness (or max_wait if longer). */
    int64_t cap = max_wait > t->o.max_lateness_ms ? max_wait : t->o.max_lateness_ms;
    for (uint32_t v = 1; v < w->version && max_wait < cap; v++)
        max_wait = max_wait < cap / 2 ? max_wait * 2 : cap; /* no longer than max_lateness:
                                                             * a stalled watermark never
                                                             * reaches the last re-seal */
    if (waited >= max_wait || (wm != INT64_MIN && wm > sat_add(w->end, t->o.max_lateness_ms)))
        return true;
    uint64_t delta = 0, base = 0;
    for (size_t k = 0; k < nb; k++) {
        if (b[k].start != w->start)
            continue;
        if (b[k].sealed)
            base += b[k].bytes;
        else
            delta += b[k].bytes;
    }
    return delta >= base / t->o.reseal_min_ratio;
}

static void segs_free(struct wsegs *ws)
{
    free(ws->runs);
    free(ws->run_bytes);
    free(ws->run_vfile);
}

/*
 * Removes window w from the table if it holds nothing (its records all superseded elsewhere, or
 * never written: a window prepared ahead that got no data), with its vector log if it has one,
 * in one manifest edit and with no event: nothing of it was ever searchable. A write may be
 * between creating this window and storing its records: the gate waits for writes classified
 * before, and what they stored is looked for (in segments and memtables); if anything is there,
 * *gone stays false. Caller holds tick_mu.
 */
/* Does the window starting at start hold nothing, in segments or in memtables? */
static int window_empty(struct twcs *t, int64_t start, bool *empty)
{
    struct wsegs ws;
    int rc = segs_of(t, start, &ws);
    *empty = rc == ST_OK && ws.nruns == 0 && ws.sealed == 0 && !store_window_unflushed(t->s, start);
    if (rc == ST_OK)
        segs_free(&ws);
    return rc;
}

static int remove_if_empty(struct twcs *t, struct store_window w, bool *gone)
{
    *gone = false;
    bool empty;
    pthread_rwlock_wrlock(&t->gate);
    int rc = window_empty(t, w.start, &empty);
    if (empty) {
        struct store_window rm = w;
        rm.state = STORE_WINDOW_REMOVE;
        struct store_edit_extra x = {.windows = &rm, .nwindows = 1};
        size_t removed;
        rc = store_drop_window(t->s, w.start, &x, &removed);
        pthread_mutex_lock(&t->mu);
        if (rc == ST_OK) { /* the cache too, or every tick would remove it again */
            rc = reload_windows(t);
            *gone = true;
            if (t->prepared == w.start)
                t->prepared = INT64_MIN;
        }
        pthread_mutex_unlock(&t->mu);
    }
    pthread_rwlock_unlock(&t->gate);
    return rc;
}

/* Seals (version 1) or re-seals (version+1) window w. Caller holds tick_mu. */
static int seal_window(struct twcs *t, struct store_window w)
{
    struct wsegs ws;
    int rc = segs_of(t, w.start, &ws);
    if (rc != ST_OK)
        return rc;
    size_t nin = ws.nruns + (ws.sealed ? 1 : 0);
    if (nin == 0) {
        segs_free(&ws);
        bool gone;
        return remove_if_empty(t, w, &gone);
    }
    uint64_t *in = malloc(nin * sizeof(*in));
    if (in == NULL) {
        segs_free(&ws);
        return ST_ENOMEM;
    }
    memcpy(in, ws.runs, ws.nruns * sizeof(*in));
    if (ws.sealed)
        in[ws.nruns] = ws.sealed;
    struct store_window nw = {w.start, w.end, TWCS_SEALED, w.version + 1};
    struct twcs_event ev = {
        .kind = TWCS_EV_SEALED, .start = w.start, .end = w.end, .version = nw.version};
    char key[96];
    ev_key(key, sizeof(key), TWCS_EV_SEALED, w.start, nw.version);
    /* The outbox entry rides in the seal's own manifest edit: a crash cannot separate them.
     * Segment details are looked up when the event is emitted. */
    uint8_t payload[EV_LEN];
    ev_encode(payload, &ev);
    struct store_segment_info mi = {0};
    atomic_fetch_add(&t->merging, 1);
    struct store_kv_put evkv = {key, payload, EV_LEN};
    struct store_edit_extra x = {.windows = &nw, .nwindows = 1, .kvs = &evkv, .nkvs = 1};
    rc = store_merge(t->s, in, nin, STORE_SEG_SEALED, nw.version, &x, &mi);
    atomic_fetch_sub(&t->merging, 1);
    free(in);
    segs_free(&ws);
    if (rc != ST_OK)
        return rc;
    pthread_mutex_lock(&t->mu);
    t->st.compaction_bytes += mi.written; /* a promotion writes nothing, a completed log its
                                           * tables (and the vectors not in it) */
    if (nw.version == 1)
        t->st.sealed++;
    else
        t->st.resealed++;
    rc = reload_windows(t);
    for (size_t i = 0; i < t->nwin; i++)
        if (t->win[i].start == w.start)
            t->delta_since[i] = 0;
    pthread_mutex_unlock(&t->mu);
    if (nw.version > 1)
        rs_forget(t, w.start); /* its re-seal clock is stale now */
    st_log_info(LOG_COMP, "sealed window=[%" PRId64 ",%" PRId64 ") version=%u inputs=%zu", w.start,
                w.end, nw.version, nin);
    emit(t, &ev, key);
    return rc;
}

static int drop_window(struct twcs *t, struct store_window w, const char *reason)
{
    /* Hide first: from here on writes for this window count as expired. The gate waits for
     * writes classified before (they may be about to land in this window). */
    pthread_rwlock_wrlock(&t->gate);
    pthread_mutex_lock(&t->mu);
    int64_t prev_horizon = t->horizon;
    if (w.end > t->horizon)
        t->horizon = w.end;
    struct store_window prev_exp = {0};
    bool have_prev = false;
    for (size_t i = 0; i < t->nwin; i++) {
        if (t->win[i].state == TWCS_EXPIRED) {
            prev_exp = t->win[i];
            have_prev = true;
        }
    }
    pthread_mutex_unlock(&t->mu);
    pthread_rwlock_unlock(&t->gate);
    /* Records of this window still in the memtable must reach segments to be dropped. */
    int rc = store_flush(t->s);
    if (rc != ST_OK)
        goto fail;
    struct store_window edits[2];
    size_t ne = 0;
    edits[ne++] = (struct store_window){w.start, w.end, TWCS_EXPIRED, w.version};
    if (have_prev && prev_exp.start != w.start) {
        prev_exp.state = STORE_WINDOW_REMOVE; /* the newest expired window is the horizon */
        edits[ne++] = prev_exp;
    }
    struct twcs_event ev = {.kind = TWCS_EV_EXPIRED,
                            .start = w.start,
                            .end = w.end,
                            .version = w.version,
                            .reason = reason};
    char key[96];
    ev_key(key, sizeof(key), TWCS_EV_EXPIRED, w.start, w.version);
    uint8_t payload[EV_LEN];
    ev_encode(payload, &ev);
    size_t removed;
    struct store_kv_put evkv = {key, payload, EV_LEN};
    struct store_edit_extra x = {.windows = edits, .nwindows = ne, .kvs = &evkv, .nkvs = 1};
    rc = store_drop_window(t->s, w.start, &x, &removed);
    if (rc != ST_OK)
        goto fail;
    pthread_mutex_lock(&t->mu);
    if (strcmp(reason, "fifo") == 0)
        t->st.dropped_fifo++;
    else
        t->st.dropped_ttl++;
    rc = reload_windows(t);
    pthread_mutex_unlock(&t->mu);
    rs_forget(t, w.start); /* its re-seal clock, if it had one */
    st_log_info(LOG_COMP, "dropped window=[%" PRId64 ",%" PRId64 ") reason=%s segments=%zu",
                w.start, w.end, reason, removed);
    emit(t, &ev, key);
    return rc;
fail:
    pthread_mutex_lock(&t->mu);
    t->horizon = prev_horizon;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static int cmp_u64triple(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    for (int i = 0; i < 3; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

/*
 * Size-tiered merge of an open window's runs: merge the smallest runs once there are enough.
 * Runs are merged only with runs of their kind: those naming rows of the same vector log (the
 * merge writes only their tables), or those holding their own vectors (deletes, late data).
 * Mixing would copy the log's vectors into a new file: a second write of each.
 */
static int merge_runs(struct twcs *t, struct store_window w)
{
    struct wsegs ws;
    int rc = segs_of(t, w.start, &ws);
    if (rc != ST_OK || ws.nruns < t->o.runs_min_merge) {
        segs_free(&ws);
        return rc;
    }
    uint64_t(*trip)[3] = malloc(ws.nruns * sizeof(*trip)); /* vector file, bytes, number */
    if (trip == NULL) {
        segs_free(&ws);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < ws.nruns; i++) {
        trip[i][0] = ws.run_vfile[i];
        trip[i][1] = ws.run_bytes[i];
        trip[i][2] = ws.runs[i];
    }
    qsort(trip, ws.nruns, sizeof(*trip), cmp_u64triple);
    /* the kind with the most runs */
    size_t best = 0, best_n = 0;
    for (size_t i = 0; i < ws.nruns;) {
        size_t j = i;
        while (j < ws.nruns && trip[j][0] == trip[i][0])
            j++;
        if (j - i > best_n) {
            best = i;
            best_n = j - i;
        }
        i = j;
    }
    uint64_t *in = NULL;
    if (best_n >= t->o.runs_min_merge) {
        size_t n = best_n < t->o.runs_max_merge ? best_n : t->o.runs_max_merge;
        in = malloc(n * sizeof(*in));
        if (in == NULL) {
            rc = ST_ENOMEM;
        } else {
            for (size_t i = 0; i < n; i++)
                in[i] = trip[best + i][2]; /* the smallest of that kind */
            struct store_segment_info mi = {0};
            atomic_fetch_add(&t->merging, 1);
            rc = store_merge(t->s, in, n, STORE_SEG_RUN, 0, NULL, &mi);
            atomic_fetch_sub(&t->merging, 1);
            if (rc == ST_OK) {
                pthread_mutex_lock(&t->mu);
                t->st.merges++;
                t->st.compaction_bytes += mi.written;
                pthread_mutex_unlock(&t->mu);
            }
        }
    }
    free(in);
    free(trip);
    segs_free(&ws);
    return rc;
}

/* Persists the watermark when it advanced, so a restart does not forget which windows are
 * due. Caller holds tick_mu. */
static int persist_watermark(struct twcs *t)
{
    pthread_mutex_lock(&t->mu);
    watermark_update(t);
    int64_t wm = t->watermark;
    bool need = wm != INT64_MIN && wm > t->wm_persisted;
    pthread_mutex_unlock(&t->mu);
    if (!need)
        return ST_OK;
    int rc = store_kv_put(t->s, KV_WATERMARK, &wm, sizeof(wm));
    if (rc == ST_OK)
        t->wm_persisted = wm;
    return rc;
}

int twcs_tick(struct twcs *t)
{
    pthread_mutex_lock(&t->tick_mu);
    int rc = ST_OK, first = ST_OK;
    pthread_mutex_lock(&t->mu);
    t->st.ticks++;
    watermark_update(t);
    int64_t wm = t->watermark;
    size_t nw = t->nwin;
    struct store_window *ws = malloc((nw ? nw : 1) * sizeof(*ws));
    int64_t *ds = malloc((nw ? nw : 1) * sizeof(*ds));
    if (ws != NULL && ds != NULL) {
        memcpy(ws, t->win, nw * sizeof(*ws));
        memcpy(ds, t->delta_since, nw * sizeof(*ds));
    }
    pthread_mutex_unlock(&t->mu);
    if (ws == NULL || ds == NULL) {
        free(ws);
        free(ds);
        pthread_mutex_unlock(&t->tick_mu);
        return ST_ENOMEM;
    }
    /* 0. The next window ahead of its data (prepare_next), before the seals: a tick busy
     *    sealing would otherwise create it late. */
    prepare_next(t);
    int64_t now_wall = wall_ms(t), now_mono = mono_ms(t);
    /* Which sealed windows need a re-seal is derived from durable state every tick — runs
     * (late data already flushed) or unflushed rows of the window — not only from the
     * in-memory clock the write path starts: after a restart, or for records written while
     * the window's seal was merging, that clock is not there. */
    struct seg_brief *segs = NULL;
    size_t nsegs = 0;
    if ((rc = segments_brief(t, &segs, &nsegs)) != ST_OK) {
        free(ws);
        free(ds);
        pthread_mutex_unlock(&t->tick_mu);
        return rc;
    }
    for (size_t i = 0; i < nw; i++) {
        if (ws[i].state != TWCS_SEALED)
            continue;
        bool pending = store_window_unflushed(t->s, ws[i].start);
        for (size_t k = 0; k < nsegs && !pending; k++)
            pending = !segs[k].sealed && segs[k].start == ws[i].start;
        if (pending == (ds[i] != 0))
            continue;
        /* Pending with no clock: the re-seal delay starts now. A clock with nothing pending
         * (a writer set it just after a re-seal took its record; or a record of it, loaded at
         * open): dropped, or it would re-seal the window for nothing — a new version, and the
         * indexer rebuilding it. */
        int64_t was = ds[i];
        ds[i] = pending ? now_mono + 1 : 0;
        pthread_mutex_lock(&t->mu);
        for (size_t j = 0; j < t->nwin; j++)
            if (t->win[j].start == ws[i].start && t->delta_since[j] == was)
                t->delta_since[j] = ds[i];
        pthread_mutex_unlock(&t->mu);
        if (!pending)
            rs_forget(t, ws[i].start);
    }

    /* 1. Seal every open window the watermark has passed (oldest first), and re-seal sealed
     *    windows whose late deltas have waited long enough. Their vector logs are closed
     *    first (later records keep their vectors inline), then one flush serves them all: it
     *    leaves every record naming a log's rows in the runs the seal takes. */
    bool *sealing = calloc(nw ? nw : 1, sizeof(*sealing));
    size_t nsealing = 0;
    for (size_t i = 0; sealing != NULL && i < nw; i++) {
        bool due =
            ws[i].state == TWCS_OPEN && wm != INT64_MIN && wm >= sat_add(ws[i].end, t->o.grace_ms);
        bool reseal = ws[i].state == TWCS_SEALED && ds[i] != 0 &&
                      now_mono - (ds[i] - 1) >= t->o.reseal_delay_ms &&
                      reseal_worth_it(t, &ws[i], now_mono - (ds[i] - 1), wm, segs, nsegs);
        if (!due && !reseal)
            continue;
        store_window_close_log(t->s, ws[i].start);
        sealing[i] = true;
        nsealing++;
    }
    if (sealing == NULL)
        rc = ST_ENOMEM;
    else if (nsealing > 0)
        rc = store_flush(t->s);
    if (rc != ST_OK && first == ST_OK)
        first = rc; /* kept: a later step's ST_OK must not hide it */
    for (size_t i = 0; rc == ST_OK && i < nw; i++) {
        if (!sealing[i])
            continue;
        int src = seal_window(t, ws[i]);
        if (src != ST_OK && first == ST_OK)
            first = src;
    }
    /* The clocks of the windows still waiting survive a restart: a manifest edit once per
     * wait (none for a window re-sealed above: its wait is over). */
    for (size_t i = 0; rc == ST_OK && sealing != NULL && i < nw; i++) {
        if (ws[i].state != TWCS_SEALED || ds[i] == 0 || sealing[i])
            continue;
        int prc = rs_persist(t, &ws[i], ds[i]);
        if (prc != ST_OK && first == ST_OK)
            first = prc;
    }
    free(sealing);
    free(segs);
    /* 2. Bound the number of runs of open windows, and of the delta runs of sealed windows
     *    whose late data waits for its re-seal (one per memtable flush: every get and strong
     *    search visits each; merging them rewrites only the deltas). A window sealed or
     *    re-sealed in step 1 has none left. */
    for (size_t i = 0; rc == ST_OK && i < nw; i++)
        if (ws[i].state == TWCS_OPEN || ws[i].state == TWCS_SEALED)
            (void)merge_runs(t, ws[i]);

    /* 3. TTL: whole windows whose end is older than the TTL, oldest first, capped per tick. */
    uint32_t drops = 0, droppable = 0;
    for (size_t i = 0; i < nw; i++) {
        if (ws[i].state == TWCS_EXPIRED || t->o.ttl_ms == 0 ||
            ws[i].end > sat_sub(now_wall, t->o.ttl_ms))
            continue;
        if (ws[i].state == TWCS_OPEN) { /* never written (prepared ahead): no drop, no event */
            bool gone;
            rc = remove_if_empty(t, ws[i], &gone);
            if (rc != ST_OK && first == ST_OK)
                first = rc;
            if (gone || rc != ST_OK)
                continue;
        }
        droppable++;
        if (drops >= t->o.drops_per_tick)
            continue;
        rc = drop_window(t, ws[i], "ttl");
        if (rc != ST_OK && first == ST_OK)
            first = rc;
        drops++;
    }
    if (droppable > t->o.drops_per_tick) {
        uint32_t sup;
        if (st_ratelimit_ok(&t->alarm_rl, 1, 60000, &sup))
            st_log_warn(LOG_COMP,
                        "many windows expired at once droppable=%u cap_per_tick=%u wall_ms=%" PRId64
                        " (a clock jump?); dropping at most the cap per tick",
                        droppable, t->o.drops_per_tick, now_wall);
    }
    /* 4. FIFO: while over the byte cap, drop the oldest sealed windows; never an open one. */
    while (t->o.max_bytes > 0 && drops < t->o.drops_per_tick) {
        struct store_stats ss;
        store_stats(t->s, &ss);
        if (ss.segment_bytes + ss.wal_live_bytes + ss.vlog_bytes <= t->o.max_bytes)
            break;
        pthread_mutex_lock(&t->mu);
        struct store_window victim = {0};
        bool have = false;
        for (size_t i = 0; i < t->nwin && !have; i++) {
            if (t->win[i].state == TWCS_SEALED) {
                victim = t->win[i];
                have = true;
            }
        }
        pthread_mutex_unlock(&t->mu);
        if (!have)
            break; /* only open windows: ingest stays paused (twcs_write says ST_EAGAIN) */
        rc = drop_window(t, victim, "fifo");
        if (rc != ST_OK) {
            if (first == ST_OK)
                first = rc;
            break;
        }
        drops++;
    }
    free(ws);
    free(ds);
    int prc = persist_watermark(t);
    pthread_mutex_unlock(&t->tick_mu);
    if (first == ST_OK && rc == ST_OK)
        rc = prc;
    return first != ST_OK ? first : rc;
}

/* ---- info ------------------------------------------------------------------------------------ */

int twcs_windows(struct twcs *t, struct twcs_window_info **out, size_t *n)
{
    pthread_mutex_lock(&t->mu);
    size_t nw = 0;
    struct twcs_window_info *w = malloc((t->nwin ? t->nwin : 1) * sizeof(*w));
    for (size_t i = 0; w != NULL && i < t->nwin; i++) {
        if (t->win[i].state == TWCS_EXPIRED)
            continue;
        w[nw++] = (struct twcs_window_info){t->win[i].start,
                                            t->win[i].end,
                                            (enum twcs_state)t->win[i].state,
                                            t->win[i].version,
                                            0,
                                            0,
                                            0};
    }
    pthread_mutex_unlock(&t->mu);
    if (w == NULL)
        return ST_ENOMEM;
    struct store_snapshot *snap;
    int rc = store_snapshot_acquire(t->s, &snap);
    if (rc != ST_OK) {
        free(w);
        return rc;
    }
    for (size_t j = 0; j < store_snapshot_count(snap); j++) {
        struct store_segment_info in;
        store_segment_info(store_snapshot_segment(snap, j), &in);
        for (size_t i = 0; i < nw; i++) {
            if (w[i].start == in.window_start) {
                w[i].segments++;
                w[i].records += in.count;
                w[i].bytes += in.bytes;
            }
        }
    }
    store_snapshot_release(snap);
    *out = w;
    *n = nw;
    return ST_OK;
}

void twcs_stats(struct twcs *t, struct twcs_stats *out)
{
    struct store_stats ss;
    store_stats(t->s, &ss);
    pthread_mutex_lock(&t->mu);
    *out = t->st;
    pthread_mutex_unlock(&t->mu);
    out->bytes_ingested = ss.bytes_ingested;
    out->bytes_written = ss.wal_bytes_written + ss.vlog_bytes_written + ss.segment_bytes_written;
    out->merging = (uint32_t)atomic_load(&t->merging);
}

struct store *twcs_store(struct twcs *t)
{
    return t->s;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void *tick_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-tick"); /* by itself: a prctl (ing_pipe.c) */
    struct twcs *t = arg;
    int64_t gap_ms = 10;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += t->o.tick_ms / 1000;
        ts.tv_nsec += (t->o.tick_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (!t->kicked)
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        if (t->stop)
            break;
        bool kicked = t->kicked;
        t->kicked = false;
        pthread_mutex_unlock(&t->mu);
        int rc = twcs_tick(t);
        if (rc != ST_OK && rc != ST_EAGAIN)
            st_log_warn(LOG_COMP, "tick failed error=\"%s\"; retrying next tick", st_strerror(rc));
        if (kicked) { /* kicks come from writers retrying: kicked ticks at least 10 ms apart,
                       * and, while they fail (a drop refused by the disk), twice as far each
                       * time up to the period */
            int64_t cap = t->o.tick_ms < 1000 ? t->o.tick_ms : 1000;
            gap_ms = rc != ST_OK && rc != ST_EAGAIN ? (gap_ms * 2 < cap ? gap_ms * 2 : cap) : 10;
            /* on the condition variable, not asleep: close (stop) ends the wait */
            pthread_mutex_lock(&t->mu);
            struct timespec dl;
            clock_gettime(CLOCK_MONOTONIC, &dl);
            dl.tv_sec += gap_ms / 1000;
            dl.tv_nsec += (gap_ms % 1000) * 1000000;
            if (dl.tv_nsec >= 1000000000) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000;
            }
            while (!t->stop && pthread_cond_timedwait(&t->cv, &t->mu, &dl) == 0)
                ; /* a kick meanwhile waits for the gap's end */
            pthread_mutex_unlock(&t->mu);
        }
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int twcs_open(const struct twcs_opts *o, struct twcs **out, struct st_err *err)
{
    *out = NULL;
    if (o->window_ms <= 0 || o->grace_ms < 0 || o->max_lateness_ms < 0)
        return st_err_set(err, ST_EINVAL, "twcs: window must be > 0, grace and lateness >= 0");
    struct twcs *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return ST_ENOMEM;
    t->o = *o;
    if (t->o.max_future_ms <= 0)
        t->o.max_future_ms = 3600000;
    if (t->o.idle_timeout_ms <= 0)
        t->o.idle_timeout_ms = 60000;
    if (t->o.max_open_windows == 0)
        t->o.max_open_windows = 64;
    if (t->o.drops_per_tick == 0)
        t->o.drops_per_tick = 4;
    if (t->o.runs_min_merge == 0)
        t->o.runs_min_merge = 4;
    else if (t->o.runs_min_merge < 2)
        t->o.runs_min_merge = 2; /* one run "merged" alone: a rewrite at every tick */
    if (t->o.runs_max_merge < t->o.runs_min_merge)
        t->o.runs_max_merge = t->o.runs_min_merge > 32 ? t->o.runs_min_merge : 32;
    t->horizon = INT64_MIN;
    t->prepared = INT64_MIN;
    t->watermark = INT64_MIN;
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->tick_mu, NULL);
    pthread_mutex_init(&t->create_mu, NULL);
    pthread_rwlock_init(&t->gate, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = store_open(&o->store, &t->s, err);
    if (rc != ST_OK)
        goto fail;
    if ((rc = reload_windows(t)) != ST_OK)
        goto fail;
    if ((rc = rs_load(t)) != ST_OK)
        goto fail;
    struct store_snapshot *snap;
    if ((rc = store_snapshot_acquire(t->s, &snap)) != ST_OK)
        goto fail;
    for (size_t i = 0; i < store_snapshot_count(snap); i++) {
        struct store_segment_info in;
        store_segment_info(store_snapshot_segment(snap, i), &in);
        if (in.kind == STORE_SEG_SEALED)
            note_big_window(t, in.bytes);
    }
    store_snapshot_release(snap);
    /* A window prepared before the restart that no write has reached (the newest, open, with
     * nothing in segments or in the memtables replay filled) is again one that takes no slot. */
    if (t->nwin > 0 && t->win[t->nwin - 1].state == TWCS_OPEN) {
        bool empty;
        if ((rc = window_empty(t, t->win[t->nwin - 1].start, &empty)) != ST_OK)
            goto fail;
        if (empty)
            t->prepared = t->win[t->nwin - 1].start;
    }
    size_t len;
    int64_t wm;
    t->wm_persisted = INT64_MIN;
    if (store_kv_get(t->s, KV_WATERMARK, &wm, sizeof(wm), &len) == ST_OK && len == sizeof(wm))
        t->watermark = t->wm_persisted = wm;
    /* Events not confirmed before the last stop are delivered again (at-least-once). */
    char **keys = NULL;
    size_t nk = 0;
    if ((rc = store_kv_keys(t->s, EV_PREFIX, &keys, &nk)) != ST_OK)
        goto fail;
    for (size_t i = 0; i < nk; i++) {
        uint8_t p[EV_LEN];
        if (store_kv_get(t->s, keys[i], p, sizeof(p), &len) == ST_OK && len == EV_LEN) {
            struct twcs_event ev;
            ev_decode(p, &ev);
            emit(t, &ev, keys[i]);
        }
        free(keys[i]);
    }
    free(keys);
    if (o->tick_ms > 0) {
        if (pthread_create(&t->thread, NULL, tick_main, t) != 0) {
            rc = st_err_set(err, ST_ENOMEM, "twcs: cannot start the tick thread");
            goto fail;
        }
        t->have_thread = true;
    }
    *out = t;
    return ST_OK;
fail:
    (void)twcs_close(t);
    return rc;
}

int twcs_close(struct twcs *t)
{
    if (t == NULL)
        return ST_OK;
    if (t->have_thread) {
        pthread_mutex_lock(&t->mu);
        t->stop = true;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    if (t->s != NULL) {
        pthread_mutex_lock(&t->tick_mu);
        int prc = persist_watermark(t);
        pthread_mutex_unlock(&t->tick_mu);
        if (prc != ST_OK)
            st_log_warn(LOG_COMP, "cannot persist the watermark at close: %s", st_strerror(prc));
    }
    int rc = store_close(t->s);
    free(t->win);
    free(t->delta_since);
    free(t->pw);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->tick_mu);
    pthread_mutex_destroy(&t->create_mu);
    pthread_rwlock_destroy(&t->gate);
    pthread_cond_destroy(&t->cv);
    free(t);
    return rc;
}
