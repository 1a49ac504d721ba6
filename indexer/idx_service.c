/* idx_service.c — strata-indexer's engine: events, builds, catalogs, views (idx_service.h). */
#include "idx_service.h"

#include "idx_cpucap.h"
#include "idx_pool.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idx_client.h"
#include "idx_event.h"
#include "st_bus.h"
#include "st_clock.h"
#include "st_fault.h"
#include "st_log.h"
#include "store_fs.h"

#define LOG_COMP     "indexer"
#define ACK_WAIT_MS  60000 /* JetStream redelivers an event not acked (or touched) this long */
#define TOUCH_MS     20000 /* held events are marked in progress this often */
#define ATTEMPTS_MAX 8     /* a segment that keeps failing verification is given up */
#define BACKOFF_MAX  30000

/* JOB_COMPACT: e.node "" and e.start the bucket (compact_span) whose unit it builds. */
enum job_kind { JOB_SEALED, JOB_RETIER, JOB_REBUILD, JOB_COMPACT };
enum job_rc { JOB_DONE, JOB_RETRY, JOB_ABANDON };

struct job {
    enum job_kind kind;
    struct idx_coll *c;
    struct idx_cat_entry e; /* from the event (or the catalog) */
    struct st_bus_msg *msg; /* acked when the job is done; NULL for tiering and rebuilds */
    int attempts;
    int64_t not_before; /* monotonic ms */
    bool running;
    uint64_t mem;
    struct job *next;
};

struct idx_coll {
    struct idx_service *s;
    const struct cfg_collection *cfg;
    enum st_metric metric;
    struct idx_catalog *cat;
    pthread_mutex_t mu; /* cat and parts; never held across fetches or builds */
    struct idx_part **parts;
    size_t nparts;
    struct idx_view_slot view;
    bool view_stale; /* under mu: the published view lags the parts (build failed) */
    _Atomic uint64_t ev_sealed, ev_expired, builds, failures, noops;
    _Atomic uint64_t adoptions; /* windows built with another part's IVF-PQ quantizer */
    _Atomic uint64_t retries;   /* jobs that failed and wait for another attempt */
    _Atomic uint64_t compactions;
};

struct idx_service {
    struct idx_service_opts o;
    const struct cfg *cfg;
    char durable[80];
    struct idx_coll *colls;
    size_t ncoll;
    struct st_bus *bus;         /* set by the puller once connected; read by others after `up` */
    struct st_bus_pull *pull;   /* the puller's */
    char last_connect_err[512]; /* the puller's: the last NATS connect failure it logged */
    _Atomic bool up, subscribed, stop;
    struct idx_nodes *nodes;
    struct idx_pool *search_pool; /* indexer.search_threads - 1 helpers; NULL with 1 */
    pthread_mutex_t mu;           /* the job list and the memory account */
    pthread_cond_t cv;
    struct job *jobs;
    uint64_t mem_in_use;
    unsigned running;
    pthread_t puller, ticker, *workers;
    unsigned nworkers;
    bool have_puller, have_ticker;
    struct st_hist build_hist[2]; /* hnsw, ivfpq */
    struct st_hist fresh_hist;
    _Atomic uint64_t builds_total;
};

static int64_t mono_ms(void)
{
    return st_clock_mono_ns(NULL) / 1000000;
}

static int64_t wall_ms(void)
{
    return st_clock_wall_ms(NULL);
}

static enum st_metric metric_of(const struct cfg_collection *c)
{
    return c->metric == CFG_METRIC_L2   ? ST_METRIC_L2
           : c->metric == CFG_METRIC_IP ? ST_METRIC_IP
                                        : ST_METRIC_COSINE;
}

static void wait_ms(struct idx_service *s, int64_t ms)
{
    pthread_mutex_lock(&s->mu);
    if (!atomic_load(&s->stop))
        st_cond_wait_ms(&s->cv, &s->mu, ms);
    pthread_mutex_unlock(&s->mu);
}

static void msg_ack(struct st_bus_msg *m)
{
    if (m == NULL)
        return;
    int rc = st_bus_msg_ack(m);
    if (rc != ST_OK)
        st_log_warn(LOG_COMP, "ack of %s failed: %s (it will be redelivered and be a no-op)",
                    st_bus_msg_subject(m), st_strerror(rc));
    st_bus_msg_free(m);
}

/* ---- views ---- */

/* Publishes a view over c's parts; a unit's members the catalog no longer serves through it
 * (expired, or replaced by a newer version) are dead in it. Caller holds c->mu. */
static int republish_locked(struct idx_coll *c)
{
    uint8_t **dead = calloc(c->nparts ? c->nparts : 1, sizeof(*dead));
    int rc = dead != NULL ? ST_OK : ST_ENOMEM;
    for (size_t i = 0; rc == ST_OK && i < c->nparts; i++) {
        const struct idx_part *p = c->parts[i];
        for (size_t j = 0; p->unit != 0 && j < p->nmem; j++) {
            if (idx_catalog_member_live(c->cat, p->unit, &p->mem[j].e))
                continue;
            if (dead[i] == NULL && (dead[i] = calloc(p->nmem / 8 + 1, 1)) == NULL) {
                rc = ST_ENOMEM;
                break;
            }
            dead[i][j / 8] |= (uint8_t)(1u << (j % 8));
        }
    }
    struct idx_view *v;
    if (rc == ST_OK &&
        (rc = idx_view_build(c->parts, c->nparts, (const uint8_t *const *)dead, &v)) == ST_OK)
        idx_view_swap(&c->view, v);
    for (size_t i = 0; dead != NULL && i < c->nparts; i++)
        free(dead[i]);
    free(dead);
    return rc;
}

/* Publishes, or leaves it to the ticker when there is no memory for a view now. */
static void republish_or_later_locked(struct idx_coll *c, const char *after)
{
    if (republish_locked(c) != ST_OK) {
        c->view_stale = true;
        st_log_warn(LOG_COMP, "coll=%s: no memory for a new view after %s; retrying", c->cfg->name,
                    after);
    }
}

static int part_cmp(const void *a, const void *b)
{
    const struct idx_part *x = *(struct idx_part *const *)a, *y = *(struct idx_part *const *)b;
    if (x->e.start != y->e.start)
        return x->e.start > y->e.start ? -1 : 1; /* newest window first */
    return strcmp(x->e.node, y->e.node);
}

/* Is the segment copy of a part's member e still named by the catalog (the entry of its
 * window at its version)? Then no drop deletes it: a copy has one owner in a catalog written by
 * this code, and a catalog that says otherwise (a unit's dead member that is also a plain
 * entry) must not lose a window that is served. Caller holds c->mu. */
static bool copy_named_locked(const struct idx_coll *c, const struct idx_cat_entry *e)
{
    const struct idx_cat_entry *x = idx_catalog_find(c->cat, e->node, e->start);
    return x != NULL && x->version == e->version;
}

/* Puts p in c's parts (replacing the part of the same (node, window), which is retired with
 * the files it does not share with p) and publishes a new view. Caller holds c->mu. */
static int install_locked(struct idx_coll *c, struct idx_part *p)
{
    size_t i = 0;
    while (i < c->nparts &&
           !(c->parts[i]->e.start == p->e.start && strcmp(c->parts[i]->e.node, p->e.node) == 0))
        i++;
    if (i == c->nparts) {
        struct idx_part **np = realloc(c->parts, (c->nparts + 1) * sizeof(*np));
        if (np == NULL)
            return ST_ENOMEM;
        c->parts = np;
        idx_part_ref(p); /* the list's own reference */
        c->parts[c->nparts++] = p;
    } else {
        idx_part_ref(p);
        struct idx_part *old = c->parts[i];
        bool same_seg = strcmp(old->mem[0].seg_path, p->mem[0].seg_path) == 0;
        bool same_idx = strcmp(old->idx_path, p->idx_path) == 0;
        idx_part_retire(old, !same_seg, !same_idx);
        c->parts[i] = p;
        idx_part_unref(old);
    }
    if (c->nparts > 1)
        qsort(c->parts, c->nparts, sizeof(*c->parts), part_cmp);
    /* The part is installed (the catalog names it): a view that cannot be built now is built
     * again by the ticker; nothing of the part may be undone. */
    republish_or_later_locked(c, "an install");
    return ST_OK;
}

/* Removes part i from c's parts, retiring its index and (seg) its segment copies. Caller
 * holds c->mu. */
static void drop_at_locked(struct idx_coll *c, size_t i, bool seg)
{
    struct idx_part *p = c->parts[i];
    memmove(c->parts + i, c->parts + i + 1, (c->nparts - i - 1) * sizeof(*c->parts));
    c->nparts--;
    idx_part_retire(p, false, true);
    for (size_t k = 0; seg && k < p->nmem; k++)
        if (!copy_named_locked(c, &p->mem[k].e))
            idx_part_retire_member(p, k);
    idx_part_unref(p);
}

/* The position of the plain part of (node, start), or of unit (node NULL), in c's parts; -1
 * when none. Caller holds c->mu. */
static long find_part_locked(const struct idx_coll *c, const char *node, int64_t start,
                             uint64_t unit)
{
    for (size_t i = 0; i < c->nparts; i++) {
        const struct idx_part *p = c->parts[i];
        if (node == NULL ? p->unit == unit
                         : p->unit == 0 && p->e.start == start && strcmp(p->e.node, node) == 0)
            return (long)i;
    }
    return -1;
}

/* Removes (node, start) from c's parts, retiring its files. Caller holds c->mu. */
static void remove_locked(struct idx_coll *c, const char *node, int64_t start)
{
    long i = find_part_locked(c, node, start, 0);
    if (i >= 0)
        drop_at_locked(c, (size_t)i, true);
}

/* Does any catalog entry still name unit id? Caller holds c->mu. */
static bool unit_has_live_locked(const struct idx_coll *c, uint64_t id)
{
    const struct idx_cat_unit *u = idx_catalog_unit(c->cat, id);
    for (size_t k = 0; u != NULL && k < u->nmem; k++)
        if (idx_catalog_member_live(c->cat, id, &u->mem[k]))
            return true;
    return false;
}

/* ---- the job list ---- */

static void job_free(struct job *j)
{
    if (j->msg != NULL)
        st_bus_msg_free(j->msg); /* not acked: JetStream redelivers it */
    free(j);
}

/* Adds j unless a job for the same (collection, node, window) makes it redundant. Takes
 * ownership of j. Caller holds s->mu. */
static void enqueue_locked(struct idx_service *s, struct job *j)
{
    for (struct job *x = s->jobs; x != NULL; x = x->next) {
        if (x->c != j->c || x->e.start != j->e.start || strcmp(x->e.node, j->e.node) != 0 ||
            x->kind == JOB_RETIER)
            continue;
        if (x->e.version == j->e.version) {
            /* A redelivery of an event we hold: keep the newest handle (same stream message). */
            if (j->msg != NULL) {
                if (x->msg != NULL)
                    st_bus_msg_free(x->msg);
                x->msg = j->msg;
                j->msg = NULL;
            }
            job_free(j);
            return;
        }
        if (x->e.version > j->e.version) {
            msg_ack(j->msg); /* an older version: the newer job replaces it */
            j->msg = NULL;
            job_free(j);
            return;
        }
        if (!x->running) { /* a newer version replaces a queued older one */
            msg_ack(x->msg);
            x->msg = j->msg;
            j->msg = NULL;
            x->e = j->e;
            x->kind = j->kind;
            x->attempts = 0;
            x->not_before = 0;
            job_free(j);
            pthread_cond_broadcast(&s->cv);
            return;
        }
    }
    j->next = s->jobs;
    s->jobs = j;
    pthread_cond_broadcast(&s->cv);
}

static void enqueue(struct idx_service *s, struct job *j)
{
    pthread_mutex_lock(&s->mu);
    enqueue_locked(s, j);
    pthread_mutex_unlock(&s->mu);
}

/* ---- one build ---- */

static bool is_path(const char *url)
{
    return url[0] == '/' || strncmp(url, "file://", 7) == 0;
}

/*
 * Points e's URL at its node's current address: an ingest node restarted on another address
 * (an ephemeral port, a host moved) serves its segments there, and the address it sealed
 * under, baked into the event, would be retried for ever. The node's live announcement gives
 * the address; the part from "/v1/segments/" on stays (the segment is checked against the
 * event's checksum all the same). Only an http(s) URL is replaced, and only by one: an
 * announcement never turns a download into a local file read. Unchanged when the node is not
 * live. Called on retries only (a pinned node's id may cost a request to learn).
 */
static bool is_http(const char *url)
{
    return strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0;
}

static void url_now(struct idx_service *s, const struct idx_coll *c, struct idx_cat_entry *e)
{
    const char *path = strstr(e->url, "/v1/segments/");
    struct idx_node *ns = NULL;
    size_t n = 0;
    if (!is_http(e->url) || path == NULL ||
        idx_nodes_live(s->nodes, c->cfg->name, &ns, &n) != ST_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ns[i].node, e->node) != 0)
            continue;
        size_t bl = strlen(ns[i].url);
        while (bl > 0 && ns[i].url[bl - 1] == '/')
            bl--;
        if (!is_http(ns[i].url) ||
            (bl == (size_t)(path - e->url) && strncmp(ns[i].url, e->url, bl) == 0))
            break; /* not a web address, or the same one */
        char u[sizeof(e->url)];
        int w = snprintf(u, sizeof(u), "%.*s%s", (int)bl, ns[i].url, path);
        if (w > 0 && (size_t)w < sizeof(u)) {
            st_log_info(LOG_COMP,
                        "coll=%s node=%s start=%" PRId64 ": fetching from the node's "
                        "current address %s (the event named %s)",
                        c->cfg->name, e->node, e->start, u, e->url);
            memcpy(e->url, u, (size_t)w + 1);
        } else {
            st_log_warn(LOG_COMP,
                        "coll=%s node=%s start=%" PRId64 ": the node's current address %s "
                        "makes the segment URL too long; fetching from %s",
                        c->cfg->name, e->node, e->start, ns[i].url, e->url);
        }
        break;
    }
    free(ns);
}

/* Is the downloaded file at path the segment the event describes? */
static int verify_segment(const struct idx_coll *c, const struct idx_cat_entry *e, const char *path,
                          uint32_t hdr_checksum, struct st_err *err)
{
    if (hdr_checksum != 0 && hdr_checksum != e->checksum)
        return st_err_set(err, ST_ECORRUPT, "%s: served with checksum %u; the sealed event says %u",
                          e->url, hdr_checksum, e->checksum);
    struct store_segment *g;
    int rc = store_segment_open_file(path, &g, err);
    if (rc != ST_OK)
        return rc;
    struct store_segment_info si;
    store_segment_info(g, &si);
    if (si.checksum != e->checksum)
        rc = st_err_set(err, ST_ECORRUPT, "%s: checksum %u; the sealed event says %u", e->url,
                        si.checksum, e->checksum);
    else if (si.count != e->records || si.bytes != e->bytes)
        rc = st_err_set(err, ST_ECORRUPT,
                        "%s: %" PRIu64 " records in %" PRIu64
                        " bytes; the sealed event says %" PRIu64 " in %" PRIu64,
                        e->url, si.count, si.bytes, e->records, e->bytes);
    else if (si.dim != c->cfg->dim)
        rc = st_err_set(err, ST_ECORRUPT, "%s: %u dims; collection '%s' has %u", e->url, si.dim,
                        c->cfg->name, c->cfg->dim);
    else if (si.window_start != e->start)
        rc = st_err_set(err, ST_ECORRUPT, "%s: holds window %" PRId64 ", the event says %" PRId64,
                        e->url, si.window_start, e->start);
    else
        rc = store_segment_verify(g, err);
    store_segment_unref(g);
    return rc;
}

/* Is (node, window, version) already served at this or a newer version, or expired? */
static bool stale(struct idx_coll *c, const struct idx_cat_entry *e, bool same_ok)
{
    pthread_mutex_lock(&c->mu);
    bool gone = idx_catalog_is_gone(c->cat, e->node, e->start, e->version);
    const struct idx_cat_entry *x = idx_catalog_find(c->cat, e->node, e->start);
    bool newer = x != NULL && (same_ok ? x->version > e->version : x->version >= e->version);
    pthread_mutex_unlock(&c->mu);
    return gone || newer;
}

static void publish_indexed(struct idx_service *s, const struct idx_coll *c,
                            const struct idx_cat_entry *e)
{
    if (!atomic_load(&s->up) || s->bus == NULL)
        return;
    char subject[128], id[256];
    snprintf(subject, sizeof(subject), "strata.%s.indexed", c->cfg->name);
    snprintf(id, sizeof(id), "%s/%s/indexed/%s/%" PRId64 "/%u/%s", s->cfg->node_id, c->cfg->name,
             e->node, e->start, e->version, e->cold ? "cold" : "hot");
    json_t *j = json_pack(
        "{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:b,s:I,s:I}", "collection", c->cfg->name, "node",
        s->cfg->node_id, "source", e->node, "kind", "indexed", "start", (json_int_t)e->start, "end",
        (json_int_t)e->end, "version", (json_int_t)e->version, "index", e->index, "cold", e->cold,
        "records", (json_int_t)e->records, "indexed_ms", (json_int_t)e->indexed_ms);
    char *body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (body == NULL)
        return;
    struct st_err err = {0};
    if (st_bus_js_publish(s->bus, subject, body, strlen(body), id, 2000, &err) != ST_OK)
        st_log_warn(LOG_COMP, "publishing %s failed: %s (the index is served all the same)",
                    subject, err.msg);
    free(body);
}

static bool cold_now(const struct idx_coll *c, const struct idx_cat_entry *e)
{
    return c->cfg->cold_after_ms > 0 && c->cfg->cold_index.type != CFG_INDEX_NONE &&
           e->end < wall_ms() - c->cfg->cold_after_ms;
}

static const char *index_name(enum cfg_index_type t)
{
    return t == CFG_INDEX_IVFPQ ? "ivfpq" : "hnsw";
}

static enum job_rc run_compact(struct idx_service *s, struct job *j);

/* The end of the newest window p holds: its own for a plain part, its newest member's for a
 * unit (whose own end is its span's, which may lie ahead of every window it holds). */
static int64_t newest_window_end(const struct idx_part *p)
{
    int64_t end = p->unit == 0 ? p->e.end : INT64_MIN;
    for (size_t j = 0; p->unit != 0 && j < p->nmem; j++)
        end = p->mem[j].e.end > end ? p->mem[j].e.end : end;
    return end;
}

/* The part whose IVF-PQ quantizer a build with ix may adopt (idx_part_build_on decides whether
 * it fits): of the served parts whose quantizer has the shape ix asks for
 * (idx_part_can_donate), the one holding the newest window, so that a quantizer follows
 * content that drifts. NULL when none (or ix is not IVF-PQ); else a reference the caller
 * drops. */
/* Does a loaded part of c keep re-ranking codes (cold: its cold_index's setting)? */
static bool rerank_codes(const struct idx_coll *c, bool cold)
{
    return !(cold ? c->cfg->cold_index : c->cfg->index).no_rerank_codes;
}

static struct idx_part *quantizer_donor(struct idx_coll *c, const struct cfg_index *ix)
{
    struct idx_part *best = NULL;
    if (ix->type != CFG_INDEX_IVFPQ)
        return NULL;
    pthread_mutex_lock(&c->mu);
    int64_t best_end = INT64_MIN;
    for (size_t i = 0; i < c->nparts; i++) {
        struct idx_part *p = c->parts[i];
        int64_t end = newest_window_end(p);
        if ((best == NULL || end > best_end) && idx_part_can_donate(p, ix)) {
            best = p;
            best_end = end;
        }
    }
    if (best != NULL)
        idx_part_ref(best);
    pthread_mutex_unlock(&c->mu);
    return best;
}
static enum job_rc run_job(struct idx_service *s, struct job *j)
{
    if (j->kind == JOB_COMPACT)
        return run_compact(s, j);
    struct idx_coll *c = j->c;
    struct idx_cat_entry e = j->e;
    struct st_err err = {0};
    char *seg = idx_catalog_seg_path(c->cat, e.node, e.start, e.version), *tmp = NULL, *idxp = NULL;
    struct idx_part *p = NULL;
    enum job_rc out = JOB_DONE;
    int rc = ST_OK;
    if (seg == NULL || asprintf(&tmp, "%s.fetch", seg) < 0) {
        out = JOB_RETRY;
        goto done;
    }
    if (j->kind == JOB_RETIER) {
        /* The served part of exactly this version, re-indexed with cold_index. */
        pthread_mutex_lock(&c->mu);
        const struct idx_cat_entry *x = idx_catalog_find(c->cat, e.node, e.start);
        bool ok = x != NULL && x->version == e.version && !x->cold && x->unit == 0;
        if (ok)
            e = *x;
        pthread_mutex_unlock(&c->mu);
        if (!ok)
            goto done;
    } else {
        if (stale(c, &e, false)) {
            atomic_fetch_add(&c->noops, 1);
            goto done; /* already served, older, or expired: the event is a no-op */
        }
        /* Fetch (a rebuild keeps a copy that still verifies). */
        uint32_t hdr = 0;
        bool have = j->kind == JOB_REBUILD && verify_segment(c, &e, seg, 0, &err) == ST_OK;
        err = (struct st_err){0};
        if (!have) {
            uint64_t max = e.bytes; /* the event's size: verified exactly below */
            if (j->attempts > 0)
                url_now(s, c, &e);
            rc = is_path(e.url) ? idx_client_copy_path(e.url, tmp, max, &s->stop, &err)
                                : idx_client_fetch(e.url, tmp, s->o.token, max,
                                                   s->o.fetch_timeout_ms, &s->stop, &hdr, &err);
            if (rc == ST_ECLOSED) {
                out = JOB_ABANDON;
                goto done;
            }
            if (rc == ST_ENOTFOUND && (stale(c, &e, false) || j->attempts + 1 >= ATTEMPTS_MAX)) {
                /* No longer served there: replaced by a newer version (whose event follows) or
                 * dropped (its expired event follows) — or a misrouted URL: say so loudly. */
                atomic_fetch_add(&c->failures, stale(c, &e, false) ? 0 : 1);
                st_log_error(LOG_COMP,
                             "segment gone coll=%s node=%s start=%" PRId64 " version=%u after %d "
                             "attempts: %s; the window part stays unindexed unless a newer event "
                             "names it",
                             c->cfg->name, e.node, e.start, e.version, j->attempts + 1, err.msg);
                goto done;
            }
            if (rc == ST_OK && (rc = verify_segment(c, &e, tmp, hdr, &err)) != ST_OK)
                st_best_effort(store_fs_unlink(NULL, tmp, "idx.fetch.unlink_bad"));
            if (rc == ST_OK &&
                (rc = store_fs_rename(NULL, tmp, seg, "idx.fetch.rename")) != ST_OK) {
                st_err_set(&err, rc, "%s: cannot rename to %s: %s", tmp, seg, st_strerror(rc));
                /* The download is of no use to the retry, which fetches again. */
                st_best_effort(store_fs_unlink(NULL, tmp, "idx.fetch.unlink_failed"));
            }
            if (rc == ST_OK &&
                (rc = store_fs_sync_dir(NULL, c->cat->dir, "idx.fetch.sync_dir")) != ST_OK) {
                st_err_set(&err, rc, "%s: cannot sync the directory after renaming %s: %s",
                           c->cat->dir, seg, st_strerror(rc));
                /* The renamed copy goes too. The catalog does not name this version yet (it
                 * is committed after the build), so no part uses the file, and the retry
                 * fetches again to tmp and renames over it. Kept, it would be a copy whose
                 * directory entry may not be durable and, should the window never come back
                 * (an expiry, a newer version), it would stay until the next start. If this
                 * unlink fails too, or a crash comes before it is durable, the sweep at the
                 * next start removes it: the catalog does not name it. */
                st_best_effort(store_fs_unlink(NULL, seg, "idx.fetch.unlink_unsynced"));
            }
            if (rc != ST_OK) {
                st_log_warn(LOG_COMP,
                            "fetch failed coll=%s node=%s start=%" PRId64
                            " version=%u attempt=%d: %s",
                            c->cfg->name, e.node, e.start, e.version, j->attempts + 1, err.msg);
                /* A segment that does not verify, or is larger than announced, is tried again a
                 * few times (a bad transfer), then given up; an unreachable node (EIO) is
                 * retried for as long as it takes. */
                bool bad = rc == ST_ECORRUPT || rc == ST_ERANGE;
                out = bad && j->attempts + 1 >= ATTEMPTS_MAX ? JOB_DONE : JOB_RETRY;
                if (out == JOB_DONE) {
                    atomic_fetch_add(&c->failures, 1);
                    st_log_error(LOG_COMP,
                                 "giving up coll=%s node=%s start=%" PRId64
                                 " version=%u: the segment never verified",
                                 c->cfg->name, e.node, e.start, e.version);
                }
                goto done;
            }
        }
    }
    /* Build and persist the index. */
    bool cold = cold_now(c, &e);
    const struct cfg_index *ix = cold ? &c->cfg->cold_index : &c->cfg->index;
    snprintf(e.index, sizeof(e.index), "%s", index_name(ix->type));
    e.cold = cold;
    if ((idxp = idx_catalog_index_path(c->cat, e.node, e.start, e.version, e.index, cold)) ==
        NULL) {
        out = JOB_RETRY;
        goto done;
    }
    st_log_info(
        LOG_COMP,
        "building coll=%s node=%s start=%" PRId64 " version=%u records=%" PRIu64 " index=%s%s",
        c->cfg->name, e.node, e.start, e.version, e.records, e.index, cold ? " (cold)" : "");
    int64_t t0 = st_clock_mono_ns(NULL);
    struct idx_part *donor = quantizer_donor(c, ix);
    rc = idx_part_build_on(&e, seg, idxp, ix, c->metric, 1, donor, &s->stop, &p, &err);
    if (donor != NULL)
        idx_part_unref(donor);
    if (rc == ST_OK && p->adopted)
        atomic_fetch_add(&c->adoptions, 1);
    if (rc == ST_ECLOSED) {
        out = JOB_ABANDON;
        goto done;
    }
    if (rc != ST_OK) {
        st_log_warn(LOG_COMP, "build failed coll=%s node=%s start=%" PRId64 " version=%u: %s",
                    c->cfg->name, e.node, e.start, e.version, err.msg);
        out = JOB_RETRY;
        goto done;
    }
    st_hist_observe(&s->build_hist[ix->type == CFG_INDEX_IVFPQ],
                    (double)(st_clock_mono_ns(NULL) - t0) / 1e9);
    if ((rc = ST_FAULT("idx.build.before_commit")) != 0) {
        st_log_warn(LOG_COMP,
                    "commit failed coll=%s node=%s start=%" PRId64
                    " version=%u attempt=%d: %s before the catalog commit; retrying",
                    c->cfg->name, e.node, e.start, e.version, j->attempts + 1, st_strerror(rc));
        idx_part_retire(p, j->kind != JOB_RETIER, true);
        idx_part_unref(p);
        p = NULL;
        out = JOB_RETRY;
        goto done;
    }
    /* Commit: catalog first (durable), then the view; the event is acked after both. */
    e.indexed_ms = wall_ms();
    p->e = e;
    pthread_mutex_lock(&c->mu);
    const struct idx_cat_entry *x = idx_catalog_find(c->cat, e.node, e.start);
    /* A retier of a window a compaction took meanwhile is moot too: writing the entry back
     * with unit 0 would give one segment copy two owners (the unit and the plain part). */
    bool lost = idx_catalog_is_gone(c->cat, e.node, e.start, e.version) ||
                (x != NULL &&
                 (x->version > e.version || (x->version == e.version && j->kind != JOB_RETIER) ||
                  (j->kind == JOB_RETIER && x->unit != 0)));
    struct idx_cat_entry prev = x != NULL ? *x : (struct idx_cat_entry){0};
    bool had = x != NULL;
    if (!lost && (rc = idx_catalog_put(c->cat, &e)) == ST_OK &&
        (rc = idx_catalog_save(c->cat, &err)) != ST_OK) {
        if (had) /* the file may or may not hold it: keep memory as it was before */
            st_best_effort(idx_catalog_put(c->cat, &prev)); /* in place */
        else
            idx_catalog_del(c->cat, e.node, e.start);
    }
    bool installed = false;
    if (!lost && rc == ST_OK) {
        rc = install_locked(c, p);
        installed = rc == ST_OK;
        if (!installed) { /* no room in the list: undo the catalog entry (not yet served) */
            if (had)
                st_best_effort(idx_catalog_put(c->cat, &prev)); /* in place */
            else
                idx_catalog_del(c->cat, e.node, e.start);
            st_best_effort(idx_catalog_save(c->cat, &err));
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (lost) {
        /* An expiry or a newer version won the race: this build is not needed. */
        idx_part_retire(p, j->kind != JOB_RETIER, true);
        atomic_fetch_add(&c->noops, 1);
        goto done;
    }
    if (rc != ST_OK) {
        st_log_warn(LOG_COMP, "recording coll=%s node=%s start=%" PRId64 " failed: %s",
                    c->cfg->name, e.node, e.start, err.msg[0] ? err.msg : st_strerror(rc));
        idx_part_retire(p, j->kind != JOB_RETIER, true);
        out = JOB_RETRY;
        goto done;
    }
    (void)installed;
    atomic_fetch_add(&c->builds, 1);
    atomic_fetch_add(&s->builds_total, 1);
    if (j->kind != JOB_RETIER)
        st_hist_observe(&s->fresh_hist, (double)(e.indexed_ms - e.end) / 1e3);
    st_log_info(LOG_COMP,
                "indexed coll=%s node=%s start=%" PRId64 " version=%u records=%" PRIu64
                " index=%s%s seconds=%.2f",
                c->cfg->name, e.node, e.start, e.version, e.records, e.index, cold ? " (cold)" : "",
                (double)(st_clock_mono_ns(NULL) - t0) / 1e9);
    publish_indexed(s, c, &e);
done:
    if (p != NULL)
        idx_part_unref(p);
    free(seg);
    free(tmp);
    free(idxp);
    return out;
}

/* ---- index compaction ---- */

/* The unit of the bucket starting at b0, or NULL. Caller holds c->mu. */
static struct idx_cat_unit *bucket_unit_locked(struct idx_coll *c, int64_t b0)
{
    for (size_t i = 0; i < c->cat->nunits; i++)
        if (c->cat->units[i].e.start == b0)
            return &c->cat->units[i];
    return NULL;
}

static int64_t bucket_of(const struct idx_coll *c, int64_t start)
{
    int64_t span = c->cfg->compact_span_ms;
    int64_t q = start / span;
    if (start % span != 0 && start < 0)
        q--;
    return q * span;
}

/* A plain entry that compaction takes: its window ended compact_after ago. */
static bool compactable(const struct idx_coll *c, const struct idx_cat_entry *e, int64_t now)
{
    return e->unit == 0 && e->end <= now - c->cfg->compact_after_ms;
}

static int member_cmp(const void *a, const void *b)
{
    const struct idx_cat_entry *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return strcmp(x->node, y->node);
}

/*
 * Builds the unit of bucket j->e.start: the live members of the bucket's unit (if any) and
 * every plain entry of the bucket that is old enough, one index over them; commit = index file
 * fsynced and renamed → catalog (unit + entries naming it) durable → parts swapped (the plain
 * parts' index files and the old unit's index go, and the segment copies of the old unit's dead
 * members) → view. Anything that changed meanwhile (an expiry, a newer version) abandons the
 * build; the next check plans again.
 */
static enum job_rc run_compact(struct idx_service *s, struct job *j)
{
    struct idx_coll *c = j->c;
    int64_t b0 = j->e.start, now = wall_ms();
    struct idx_cat_unit old = {0}, nu = {0};
    char **segs = NULL, *idxp = NULL;
    struct idx_part *p = NULL;
    struct st_err err = {0};
    enum job_rc out = JOB_DONE;
    bool had_old = false, exhausted = false;
    size_t from_old = 0;          /* members that were live members of the unit before */
    struct idx_part *base = NULL; /* the unit before, to grow, when none of it is dead */

    /* Plan. */
    pthread_mutex_lock(&c->mu);
    const struct idx_cat_unit *ou = bucket_unit_locked(c, b0);
    int rc = ou != NULL ? idx_catalog_unit_copy(c->cat, ou->id, &old) : ST_OK;
    had_old = ou != NULL && rc == ST_OK;
    size_t cap = c->cat->n + (had_old ? old.nmem : 0);
    nu.mem = rc == ST_OK ? calloc(cap ? cap : 1, sizeof(*nu.mem)) : NULL;
    if (nu.mem != NULL) {
        for (size_t k = 0; had_old && k < old.nmem; k++)
            if (idx_catalog_member_live(c->cat, old.id, &old.mem[k]))
                nu.mem[nu.nmem++] = old.mem[k];
        size_t first_new = from_old = nu.nmem;
        for (size_t k = 0; k < c->cat->n; k++)
            if (bucket_of(c, c->cat->e[k].start) == b0 && compactable(c, &c->cat->e[k], now))
                nu.mem[nu.nmem++] = c->cat->e[k];
        qsort(nu.mem + first_new, nu.nmem - first_new, sizeof(*nu.mem), member_cmp);
        if (had_old)
            nu.id = old.id;
        else if (idx_catalog_take_unit_id(c->cat, &nu.id) != ST_OK)
            exhausted = true; /* no id left: the parts stay served as they are */
        long bi = had_old && from_old == old.nmem ? find_part_locked(c, NULL, 0, old.id) : -1;
        if (bi >= 0 && c->parts[bi]->nmem == old.nmem) {
            base = c->parts[bi];
            idx_part_ref(base);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (nu.mem == NULL) {
        out = JOB_RETRY;
        goto done;
    }
    if (exhausted) {
        st_log_error(LOG_COMP, "coll=%s: no unit id left (%" PRIu64 " used): windows not compacted",
                     c->cfg->name, IDX_UNIT_ID_MAX);
        goto done;
    }
    if (nu.nmem == 0) { /* a unit with no live member left (the expiry normally drops it) */
        pthread_mutex_lock(&c->mu);
        struct idx_cat_unit *cur = had_old ? idx_catalog_unit(c->cat, old.id) : NULL;
        if (cur != NULL && cur->e.version == old.e.version && !unit_has_live_locked(c, old.id)) {
            idx_catalog_unit_del(c->cat, old.id);
            if ((rc = idx_catalog_save(c->cat, &err)) != ST_OK) {
                st_best_effort(idx_catalog_unit_put(c->cat, &old));
                out = JOB_RETRY;
            } else {
                long ui = find_part_locked(c, NULL, 0, old.id);
                if (ui >= 0)
                    drop_at_locked(c, (size_t)ui, true);
                republish_or_later_locked(c, "a unit drop");
                st_log_info(LOG_COMP, "coll=%s unit=%" PRIu64 " dropped: no live window part",
                            c->cfg->name, old.id);
            }
        }
        pthread_mutex_unlock(&c->mu);
        goto done;
    }
    if (!had_old && nu.nmem < 2)
        goto done; /* one part: nothing to merge */
    for (size_t k = 0; k < nu.nmem; k++) {
        nu.e.records += nu.mem[k].records;
        nu.mem[k].unit = nu.id;
    }
    /* The span, widened to its members' windows (members of a unit built under a longer
     * compact_span stay searchable by time range) */
    nu.e.start = b0;
    nu.e.end = b0 + c->cfg->compact_span_ms;
    for (size_t k = 0; k < nu.nmem; k++) {
        nu.e.start = nu.mem[k].start < nu.e.start ? nu.mem[k].start : nu.e.start;
        nu.e.end = nu.mem[k].end > nu.e.end ? nu.mem[k].end : nu.e.end;
    }
    nu.e.version = had_old ? old.e.version + 1 : 1;
    nu.e.cold = cold_now(c, &nu.e);
    const struct cfg_index *ix = nu.e.cold ? &c->cfg->cold_index : &c->cfg->index;
    snprintf(nu.e.index, sizeof(nu.e.index), "%s", index_name(ix->type));
    if (base != NULL && (base->e.cold != nu.e.cold || strcmp(base->e.index, nu.e.index) != 0)) {
        idx_part_unref(base); /* another index type now (cold_index): a build */
        base = NULL;
    }
    segs = calloc(nu.nmem, sizeof(*segs));
    for (size_t k = 0; segs != NULL && k < nu.nmem; k++)
        if ((segs[k] = idx_catalog_seg_path(c->cat, nu.mem[k].node, nu.mem[k].start,
                                            nu.mem[k].version)) == NULL)
            break;
    idxp = idx_catalog_unit_path(c->cat, nu.id, nu.e.version, nu.e.index, nu.e.cold);
    if (segs == NULL || segs[nu.nmem - 1] == NULL || idxp == NULL) {
        out = JOB_RETRY;
        goto done;
    }
    st_log_info(LOG_COMP,
                "compacting coll=%s unit=%" PRIu64 " generation=%u span=[%" PRId64 ",%" PRId64
                ") parts=%zu (%zu from the unit before) records=%" PRIu64 " index=%s%s (%s)",
                c->cfg->name, nu.id, nu.e.version, nu.e.start, nu.e.end, nu.nmem, from_old,
                nu.e.records, nu.e.index, nu.e.cold ? " (cold)" : "",
                base != NULL ? "growing the unit before" : "a build");
    int64_t t0 = st_clock_mono_ns(NULL);
    struct idx_part *udonor = base == NULL ? quantizer_donor(c, ix) : NULL;
    struct idx_part_unit spec = {.id = nu.id,
                                 .e = nu.e,
                                 .mem = nu.mem,
                                 .seg_paths = (const char *const *)segs,
                                 .n = nu.nmem,
                                 .base = base,
                                 .donor = udonor};
    rc = idx_part_build_unit(&spec, idxp, ix, c->metric, 1, &s->stop, &p, &err);
    if (udonor != NULL)
        idx_part_unref(udonor);
    if (rc == ST_OK && p->adopted)
        atomic_fetch_add(&c->adoptions, 1);
    if (rc == ST_ECLOSED) {
        out = JOB_ABANDON;
        goto done;
    }
    if (rc == ST_OK && (rc = ST_FAULT("idx.compact.before_commit")) != 0) {
        st_err_set(&err, rc, "%s before the catalog commit", st_strerror(rc));
        idx_part_retire(p, false, true);
    }
    if (rc != ST_OK) {
        st_log_warn(LOG_COMP, "compaction failed coll=%s unit=%" PRIu64 ": %s; retrying",
                    c->cfg->name, nu.id, err.msg);
        out = JOB_RETRY;
        goto done;
    }
    /* Commit. */
    nu.e.indexed_ms = wall_ms();
    p->e = nu.e;
    pthread_mutex_lock(&c->mu);
    struct idx_cat_unit *cur = idx_catalog_unit(c->cat, nu.id);
    bool valid = had_old ? cur != NULL && cur->e.version == old.e.version : cur == NULL;
    for (size_t k = 0; valid && k < nu.nmem; k++) {
        const struct idx_cat_entry *x = idx_catalog_find(c->cat, nu.mem[k].node, nu.mem[k].start);
        valid = x != NULL && x->version == nu.mem[k].version &&
                (x->unit == 0 || (had_old && x->unit == old.id));
    }
    /* every member's entry as it was: 0, or (from the unit before) the same id; and room in the
     * list for the unit, before anything changes */
    uint64_t *prev = valid ? calloc(nu.nmem, sizeof(*prev)) : NULL;
    struct idx_part **room = valid ? realloc(c->parts, (c->nparts + 1) * sizeof(*room)) : NULL;
    if (room != NULL)
        c->parts = room;
    if (valid && (prev == NULL || room == NULL))
        rc = ST_ENOMEM;
    if (prev != NULL && (rc = idx_catalog_unit_put(c->cat, &nu)) == ST_OK) {
        for (size_t k = 0; k < nu.nmem; k++) {
            struct idx_cat_entry *x = idx_catalog_find(c->cat, nu.mem[k].node, nu.mem[k].start);
            prev[k] = x->unit;
            x->unit = nu.id;
        }
        if ((rc = idx_catalog_save(c->cat, &err)) != ST_OK) {
            /* memory as before (the file holds one or the other: a restart sweeps either) */
            for (size_t k = 0; k < nu.nmem; k++)
                idx_catalog_find(c->cat, nu.mem[k].node, nu.mem[k].start)->unit = prev[k];
            if (had_old)
                st_best_effort(idx_catalog_unit_put(c->cat, &old)); /* fits: replaces */
            else
                idx_catalog_unit_del(c->cat, nu.id);
        }
    }
    free(prev);
    if (valid && rc == ST_OK) {
        /* The plain parts it takes lose their index files (their segment copies are the
         * unit's now); the unit before loses its index and its dead members' copies. */
        for (size_t k = 0; k < nu.nmem; k++) {
            long pi = find_part_locked(c, nu.mem[k].node, nu.mem[k].start, 0);
            if (pi >= 0)
                drop_at_locked(c, (size_t)pi, false);
        }
        long ui = find_part_locked(c, NULL, 0, nu.id);
        idx_part_ref(p);
        if (ui >= 0) {
            struct idx_part *op = c->parts[ui];
            for (size_t k = 0; k < op->nmem; k++) { /* its members the new one leaves out */
                long m = idx_part_find_member(p, op->mem[k].e.node, op->mem[k].e.start);
                if ((m < 0 || p->mem[m].e.version != op->mem[k].e.version) &&
                    !copy_named_locked(c, &op->mem[k].e))
                    idx_part_retire_member(op, k);
            }
            idx_part_retire(op, false, true);
            c->parts[ui] = p;
            idx_part_unref(op);
        } else {
            c->parts[c->nparts++] = p; /* room made above */
        }
        if (c->nparts > 1)
            qsort(c->parts, c->nparts, sizeof(*c->parts), part_cmp);
        republish_or_later_locked(c, "a compaction");
        /* counted with the commit, under the lock: whoever sees the unit listed sees it */
        atomic_fetch_add(&c->compactions, 1);
    }
    pthread_mutex_unlock(&c->mu);
    if (!valid) {
        st_log_info(LOG_COMP,
                    "compaction coll=%s unit=%" PRIu64 " abandoned: its parts changed meanwhile",
                    c->cfg->name, nu.id);
        idx_part_retire(p, false, true);
        goto done;
    }
    if (rc != ST_OK) {
        st_log_warn(LOG_COMP, "recording coll=%s unit=%" PRIu64 " failed: %s; retrying",
                    c->cfg->name, nu.id, err.msg[0] ? err.msg : st_strerror(rc));
        /* The index file stays: a failed save may still have reached the disk (renamed, its
         * directory not synced), and then the catalog there names it. The retry writes the
         * same generation over it; the next start's sweep removes it if nothing names it. */
        out = JOB_RETRY;
        goto done;
    }
    st_log_info(LOG_COMP,
                "compacted coll=%s unit=%" PRIu64 " generation=%u parts=%zu records=%" PRIu64
                " seconds=%.2f",
                c->cfg->name, nu.id, nu.e.version, nu.nmem, nu.e.records,
                (double)(st_clock_mono_ns(NULL) - t0) / 1e9);
done:
    if (p != NULL)
        idx_part_unref(p);
    if (base != NULL)
        idx_part_unref(base);
    for (size_t k = 0; segs != NULL && k < nu.nmem; k++)
        free(segs[k]);
    free(segs);
    free(idxp);
    idx_catalog_unit_free(&old);
    idx_catalog_unit_free(&nu);
    return out;
}

/* Queues the compactions due in c: buckets with old enough plain parts to merge (two, or one
 * and the bucket's unit), units with no live member, with more dead records than live ones, or
 * due for cold_index. */
static void plan_compactions(struct idx_service *s, struct idx_coll *c)
{
    struct bucket {
        int64_t start;
        size_t plain;     /* compactable plain parts */
        uint64_t records; /* of every entry in it: the build's memory, an upper bound */
        bool due;
    };
    int64_t now = wall_ms();
    pthread_mutex_lock(&c->mu);
    size_t cap = c->cat->n + c->cat->nunits, nb = 0;
    struct bucket *b = calloc(cap ? cap : 1, sizeof(*b));
    for (size_t k = 0; b != NULL && k < c->cat->n; k++) {
        const struct idx_cat_entry *e = &c->cat->e[k];
        int64_t start = bucket_of(c, e->start);
        size_t i = 0;
        while (i < nb && b[i].start != start)
            i++;
        if (i == nb)
            b[nb++] = (struct bucket){.start = start};
        b[i].records += e->records;
        b[i].plain += compactable(c, e, now);
    }
    for (size_t i = 0; b != NULL && i < nb; i++) /* two plain parts, or one and the unit */
        b[i].due = b[i].plain >= 2 || (b[i].plain == 1 && bucket_unit_locked(c, b[i].start));
    for (size_t u = 0; b != NULL && u < c->cat->nunits; u++) {
        const struct idx_cat_unit *x = &c->cat->units[u];
        uint64_t live = 0, all = 0;
        for (size_t k = 0; k < x->nmem; k++) {
            all += x->mem[k].records;
            if (idx_catalog_member_live(c->cat, x->id, &x->mem[k]))
                live += x->mem[k].records + 1;
        }
        if (!(live == 0 || 2 * live < all || x->e.cold != cold_now(c, &x->e)))
            continue;
        size_t i = 0;
        while (i < nb && b[i].start != x->e.start)
            i++;
        if (i == nb)
            b[nb++] = (struct bucket){.start = x->e.start};
        b[i].due = true;
    }
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; b != NULL && i < nb; i++) {
        struct job *jb = b[i].due ? calloc(1, sizeof(*jb)) : NULL;
        if (jb == NULL)
            continue;
        jb->kind = JOB_COMPACT;
        jb->c = c;
        jb->e.start = b[i].start;
        jb->e.end = b[i].start + c->cfg->compact_span_ms;
        jb->e.records = b[i].records;
        jb->mem = idx_part_coll_build_memory(c->cfg, jb->e.records);
        enqueue(s, jb); /* one per bucket: a queued or running one makes this a no-op */
    }
    free(b);
}

/* The job to run next: not running, due, newest window first among those that fit the memory
 * budget (a build larger than the whole budget runs alone). Caller holds s->mu. */
static struct job *pick_locked(struct idx_service *s)
{
    uint64_t budget = s->cfg->indexer.memory_budget;
    int64_t now = mono_ms();
    struct job *best = NULL;
    for (struct job *j = s->jobs; j != NULL; j = j->next) {
        if (j->running || j->not_before > now)
            continue;
        bool fits = budget == 0 || s->running == 0 || s->mem_in_use + j->mem <= budget;
        if (fits && (best == NULL || j->e.start > best->e.start))
            best = j;
    }
    return best;
}

static void unlink_job_locked(struct idx_service *s, struct job *j)
{
    for (struct job **pp = &s->jobs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            return;
        }
    }
}

static void *worker_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "idx-worker"); /* by itself: a prctl (ing_pipe.c) */
    struct idx_service *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&s->stop)) {
        struct job *j = pick_locked(s);
        if (j == NULL) {
            pthread_mutex_unlock(&s->mu);
            wait_ms(s, 250);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        j->running = true;
        s->mem_in_use += j->mem;
        s->running++;
        pthread_mutex_unlock(&s->mu);
        enum job_rc rc = run_job(s, j);
        pthread_mutex_lock(&s->mu);
        s->mem_in_use -= j->mem;
        s->running--;
        j->running = false;
        if (rc == JOB_RETRY && !atomic_load(&s->stop)) {
            atomic_fetch_add(&j->c->retries, 1);
            j->attempts++;
            int64_t b = 1000LL << (j->attempts < 5 ? j->attempts : 5);
            j->not_before = mono_ms() + (b < BACKOFF_MAX ? b : BACKOFF_MAX);
        } else {
            unlink_job_locked(s, j);
            if (rc == JOB_DONE) {
                msg_ack(j->msg);
                j->msg = NULL;
            }
            job_free(j); /* abandoned or retried at stop: unacked, redelivered */
        }
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- events ---- */

static void on_expired(struct idx_service *s, struct idx_coll *c, const char *node, int64_t start,
                       uint32_t version, struct st_bus_msg *m)
{
    atomic_fetch_add(&c->ev_expired, 1);
    struct st_err err = {0};
    pthread_mutex_lock(&c->mu);
    const struct idx_cat_entry *x = idx_catalog_find(c->cat, node, start);
    struct idx_cat_entry prev = x != NULL ? *x : (struct idx_cat_entry){0};
    bool had = x != NULL && x->version <= version;
    uint64_t unit = had ? x->unit : 0;
    uint32_t gone_prev = 0;
    bool gone_had = idx_catalog_gone_at(c->cat, node, start, &gone_prev);
    int rc = idx_catalog_mark_gone(c->cat, node, start, version);
    if (rc == ST_OK && had)
        idx_catalog_del(c->cat, node, start);
    /* Served by a unit: the member is dead from now on (hidden at once). The unit goes with its
     * last live member; until then its files stay (its index has the member's vectors) and
     * index compaction builds it again without the dead ones. */
    struct idx_cat_unit uprev = {0};
    bool drop_unit = rc == ST_OK && unit != 0 && !unit_has_live_locked(c, unit) &&
                     idx_catalog_unit_copy(c->cat, unit, &uprev) == ST_OK;
    if (drop_unit)
        idx_catalog_unit_del(c->cat, unit);
    if (rc == ST_OK)
        rc = idx_catalog_save(c->cat, &err);
    if (rc != ST_OK) { /* memory as before: the event comes back (nak) */
        idx_catalog_restore_gone(c->cat, node, start, gone_had, gone_prev);
        if (had)
            st_best_effort(idx_catalog_put(c->cat, &prev)); /* fits: the entry was there */
        if (drop_unit)
            st_best_effort(idx_catalog_unit_put(c->cat, &uprev)); /* fits: it was there */
    }
    idx_catalog_unit_free(&uprev);
    if (rc == ST_OK && had) {
        long ui = unit != 0 && drop_unit ? find_part_locked(c, NULL, 0, unit) : -1;
        if (unit == 0)
            remove_locked(c, node, start);
        else if (ui >= 0)
            drop_at_locked(c, (size_t)ui, true);
        republish_or_later_locked(c, "an expiry");
    }
    pthread_mutex_unlock(&c->mu);
    if (rc != ST_OK) {
        st_log_warn(LOG_COMP, "expiry coll=%s node=%s start=%" PRId64 " not recorded: %s",
                    c->cfg->name, node, start, err.msg[0] ? err.msg : st_strerror(rc));
        st_best_effort(st_bus_msg_nak(m)); /* lost: back after ack_wait */
        st_bus_msg_free(m);
        return;
    }
    /* Queued builds of the expired versions are moot. */
    pthread_mutex_lock(&s->mu);
    for (struct job **pp = &s->jobs; *pp != NULL;) {
        struct job *j = *pp;
        if (!j->running && j->c == c && j->e.start == start && strcmp(j->e.node, node) == 0 &&
            j->e.version <= version) {
            *pp = j->next;
            msg_ack(j->msg);
            j->msg = NULL;
            job_free(j);
        } else {
            pp = &j->next;
        }
    }
    pthread_mutex_unlock(&s->mu);
    st_log_info(LOG_COMP, "expired coll=%s node=%s start=%" PRId64 " version=%u%s", c->cfg->name,
                node, start, version, had ? "" : " (nothing served)");
    msg_ack(m);
}

_Static_assert(sizeof(((struct idx_event *)0)->url) == sizeof(((struct idx_cat_entry *)0)->url),
               "an event's segment location fits a catalog entry");

static void on_msg(struct idx_service *s, struct st_bus_msg *m)
{
    size_t len = 0;
    const void *data = st_bus_msg_data(m, &len);
    struct idx_event ev;
    const char *why = idx_event_parse(data, len, &ev);
    if (ev.kind == IDX_EV_OTHER) { /* indexed events, announcements: not ours to handle */
        msg_ack(m);
        return;
    }
    struct idx_coll *c = ev.coll[0] != '\0' ? idx_service_coll(s, ev.coll, strlen(ev.coll)) : NULL;
    if (why == NULL && c == NULL)
        why = "collection not configured here";
    if (why != NULL && (ev.kind == IDX_EV_EXPIRED || c == NULL || strcmp(why, "malformed") == 0)) {
        st_log_warn(LOG_COMP, "ignoring event on %s: %s", st_bus_msg_subject(m), why);
        msg_ack(m);
        return;
    }
    if (ev.kind == IDX_EV_EXPIRED) {
        on_expired(s, c, ev.node, ev.start, ev.version, m);
        return;
    }
    atomic_fetch_add(&c->ev_sealed, 1);
    struct job *jb = why == NULL ? calloc(1, sizeof(*jb)) : NULL;
    if (jb == NULL) {
        st_log_warn(LOG_COMP, "ignoring sealed event on %s: %s", st_bus_msg_subject(m),
                    why != NULL ? why : "out of memory");
        if (why == NULL)
            st_bus_msg_free(m); /* redelivered later */
        else
            msg_ack(m);
        return;
    }
    jb->kind = JOB_SEALED;
    jb->c = c;
    jb->msg = m;
    strcpy(jb->e.node, ev.node);
    strcpy(jb->e.url, ev.url); /* both bounded by the parser to these very sizes */
    jb->e.start = ev.start;
    jb->e.end = ev.end;
    jb->e.version = ev.version;
    jb->e.records = ev.records;
    jb->e.bytes = ev.bytes;
    jb->e.checksum = ev.checksum;
    jb->e.sealed_ms = wall_ms();
    jb->mem = idx_part_coll_build_memory(c->cfg, jb->e.records);
    if (stale(c, &jb->e, false)) {
        atomic_fetch_add(&c->noops, 1);
        msg_ack(jb->msg); /* a redelivery of what is served, an older version, or expired */
        jb->msg = NULL;
        job_free(jb);
        return;
    }
    enqueue(s, jb);
}

/* The bus's state callback (a bus thread; never after st_bus_close returned). */
static void on_state(void *ctx, enum st_bus_state state)
{
    struct idx_service *s = ctx;
    idx_nodes_connection(s->nodes, state == ST_BUS_RECONNECTED);
}

static int js_connect(struct idx_service *s)
{
    /* The stream: ingest creates it too; whoever starts first does ("exists" is fine). */
    static const char *const subjects[] = {"strata.*.sealed", "strata.*.expired",
                                           "strata.*.indexed"};
    struct st_err err = {0};
    if (st_bus_stream_ensure(s->bus, s->cfg->nats.stream, subjects, 3, NULL, NULL, &err) != ST_OK)
        st_log_debug(LOG_COMP, "%s", err.msg);
    struct st_bus_pull_opts po = {.stream = s->cfg->nats.stream,
                                  .durable = s->durable,
                                  .filter = "strata.>",
                                  .ack_wait_ms = ACK_WAIT_MS,
                                  .max_ack_pending = 10000};
    int rc = st_bus_pull_open(s->bus, &po, &s->pull, &err);
    if (rc != ST_OK)
        st_log_warn(LOG_COMP, "JetStream consumer %s on stream %s: %s; retrying", s->durable,
                    s->cfg->nats.stream, err.msg);
    return rc;
}

static void *puller_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "idx-puller"); /* by itself: a prctl (ing_pipe.c) */
    struct idx_service *s = arg;
    while (!atomic_load(&s->stop)) {
        if (s->bus == NULL) {
            /* Connect here, not at start: NATS may be down; searches are served meanwhile
             * and SIGTERM is honoured (each attempt is bounded by the connect timeout). */
            struct st_bus_auth auth;
            cfg_nats_auth(s->cfg, &auth);
            struct st_bus_opts bo = {.url = s->cfg->nats.url,
                                     .auth = &auth,
                                     .name = s->durable,
                                     .connect_timeout_ms = 2000,
                                     .reconnect_wait_ms = 250,
                                     .on_state = on_state,
                                     .ctx = s};
            struct st_bus *b = NULL;
            struct st_err err = {0};
            if (st_bus_connect(&bo, &b, &err) != ST_OK) {
                /* said once per reason: a refused password must not go unnoticed, nor flood */
                if (strcmp(err.msg, s->last_connect_err) != 0) {
                    st_log_warn(LOG_COMP, "%s (retrying every second)", err.msg);
                    snprintf(s->last_connect_err, sizeof(s->last_connect_err), "%s", err.msg);
                }
                wait_ms(s, 1000);
                continue;
            }
            s->bus = b;
            s->last_connect_err[0] = '\0';
            if (idx_nodes_attach(s->nodes, b, &err) != ST_OK)
                st_log_warn(LOG_COMP, "%s (retrying)", err.msg);
            st_log_info(LOG_COMP, "connected to NATS %s", st_bus_url(b));
            continue;
        }
        if (s->pull == NULL) {
            if (st_bus_connected(s->bus) && js_connect(s) == ST_OK) {
                atomic_store(&s->up, true);
                struct st_err err = {0};
                if (idx_nodes_attach(s->nodes, s->bus, &err) != ST_OK)
                    st_log_warn(LOG_COMP, "%s", err.msg);
                atomic_store(&s->subscribed, true);
                st_log_info(LOG_COMP, "consuming stream=%s durable=%s", s->cfg->nats.stream,
                            s->durable);
            } else {
                wait_ms(s, 500);
            }
            continue;
        }
        struct st_bus_msg *msgs[32];
        struct st_err err = {0};
        int n = st_bus_pull_fetch(s->pull, msgs, 32, 1000, &err);
        if (n < 0) {
            /* Disconnected: nats.c subscribes again once back. Connected, yet the fetch failed:
             * the stream or the consumer is gone (deleted under us) — bind again, which
             * creates both anew (a retry alone would fail forever, without a word). Messages
             * still held keep the old binding until they are freed. */
            if (st_bus_connected(s->bus)) {
                st_log_warn(LOG_COMP, "consumer %s on stream %s: %s; binding again", s->durable,
                            s->cfg->nats.stream, err.msg);
                st_bus_pull_close(s->pull);
                s->pull = NULL;
            }
            wait_ms(s, 500);
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (atomic_load(&s->stop))
                st_bus_msg_free(msgs[i]);
            else
                on_msg(s, msgs[i]);
        }
    }
    return NULL;
}

/* Marks held events in progress (so JetStream waits for long builds) and queues age-tiering
 * rebuilds. */
static void *ticker_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "idx-ticker"); /* by itself: a prctl (ing_pipe.c) */
    struct idx_service *s = arg;
    int64_t last_touch = mono_ms(), last_tier = 0;
    while (!atomic_load(&s->stop)) {
        wait_ms(s, 1000);
        int64_t now = mono_ms();
        if (now - last_touch >= TOUCH_MS) {
            last_touch = now;
            pthread_mutex_lock(&s->mu);
            for (struct job *j = s->jobs; j != NULL; j = j->next)
                if (j->msg != NULL)
                    st_best_effort(st_bus_msg_in_progress(j->msg)); /* lost: redelivered, a no-op */
            pthread_mutex_unlock(&s->mu);
        }
        for (size_t i = 0; i < s->ncoll; i++) {
            struct idx_coll *c = &s->colls[i];
            pthread_mutex_lock(&c->mu);
            if (c->view_stale && republish_locked(c) == ST_OK)
                c->view_stale = false;
            pthread_mutex_unlock(&c->mu);
        }
        if (now - last_tier < s->o.tier_check_ms)
            continue;
        last_tier = now;
        for (size_t i = 0; i < s->ncoll; i++)
            if (s->colls[i].cfg->compact_after_ms > 0)
                plan_compactions(s, &s->colls[i]);
        for (size_t i = 0; i < s->ncoll; i++) {
            struct idx_coll *c = &s->colls[i];
            if (c->cfg->cold_after_ms <= 0 || c->cfg->cold_index.type == CFG_INDEX_NONE)
                continue;
            pthread_mutex_lock(&c->mu);
            size_t n = c->cat->n;
            struct idx_cat_entry *due = calloc(n ? n : 1, sizeof(*due));
            size_t nd = 0;
            for (size_t k = 0; due != NULL && k < n; k++) /* units are retiered whole */
                if (!c->cat->e[k].cold && c->cat->e[k].unit == 0 && cold_now(c, &c->cat->e[k]))
                    due[nd++] = c->cat->e[k];
            pthread_mutex_unlock(&c->mu);
            for (size_t k = 0; k < nd; k++) {
                pthread_mutex_lock(&s->mu);
                bool queued = false;
                for (struct job *j = s->jobs; j != NULL && !queued; j = j->next)
                    queued = j->c == c && j->e.start == due[k].start &&
                             strcmp(j->e.node, due[k].node) == 0;
                struct job *jb = queued ? NULL : calloc(1, sizeof(*jb));
                if (jb != NULL) {
                    jb->kind = JOB_RETIER;
                    jb->c = c;
                    jb->e = due[k];
                    jb->mem =
                        idx_part_build_memory(&c->cfg->cold_index, c->cfg->dim, due[k].records);
                    jb->next = s->jobs;
                    s->jobs = jb;
                    pthread_cond_broadcast(&s->cv);
                }
                pthread_mutex_unlock(&s->mu);
            }
            free(due);
        }
    }
    return NULL;
}

/* ---- start / stop ---- */

/* Loads unit u at start. One that does not load is removed from the catalog (in memory; the
 * next save writes it) with its live members turned back into plain entries: ST_ECORRUPT. */
static int load_unit(struct idx_coll *c, const struct idx_cat_unit *u)
{
    char **segs = calloc(u->nmem, sizeof(*segs));
    char *idxp = idx_catalog_unit_path(c->cat, u->id, u->e.version, u->e.index, u->e.cold);
    int rc = segs != NULL && idxp != NULL ? ST_OK : ST_ENOMEM;
    for (size_t k = 0; rc == ST_OK && k < u->nmem; k++)
        if ((segs[k] = idx_catalog_seg_path(c->cat, u->mem[k].node, u->mem[k].start,
                                            u->mem[k].version)) == NULL)
            rc = ST_ENOMEM;
    struct idx_part *p = NULL;
    struct st_err perr = {0};
    struct idx_part_unit spec = {.id = u->id,
                                 .e = u->e,
                                 .mem = u->mem,
                                 .seg_paths = (const char *const *)segs,
                                 .n = u->nmem};
    if (rc == ST_OK)
        rc = idx_part_load_unit(&spec, idxp, c->metric, rerank_codes(c, spec.e.cold), &p, &perr);
    for (size_t k = 0; segs != NULL && k < u->nmem; k++)
        free(segs[k]);
    free(segs);
    free(idxp);
    if (rc == ST_ENOMEM)
        return rc;
    if (rc == ST_OK && p->dim != c->cfg->dim) {
        rc = st_err_set(&perr, ST_ECORRUPT, "%u dims; collection '%s' now has %u", p->dim,
                        c->cfg->name, c->cfg->dim);
        idx_part_unref(p);
        p = NULL;
    }
    struct idx_part **np = rc == ST_OK ? realloc(c->parts, (c->nparts + 1) * sizeof(*np)) : NULL;
    if (rc == ST_OK && np == NULL) {
        idx_part_unref(p);
        return ST_ENOMEM;
    }
    if (rc == ST_OK) {
        c->parts = np;
        c->parts[c->nparts++] = p;
        return ST_OK;
    }
    st_log_warn(LOG_COMP,
                "coll=%s unit=%" PRIu64 " does not load (%s); its window parts are indexed one "
                "by one again",
                c->cfg->name, u->id, perr.msg);
    uint64_t id = u->id;
    for (size_t k = 0; k < u->nmem; k++) {
        struct idx_cat_entry *x = idx_catalog_find(c->cat, u->mem[k].node, u->mem[k].start);
        if (x != NULL && x->unit == id)
            x->unit = 0;
    }
    idx_catalog_unit_del(c->cat, id); /* u is gone from here on */
    return ST_ECORRUPT;
}

static int open_coll(struct idx_service *s, struct idx_coll *c, const struct cfg_collection *cc,
                     struct st_err *err)
{
    c->s = s;
    c->cfg = cc;
    c->metric = metric_of(cc);
    pthread_mutex_init(&c->mu, NULL);
    idx_view_slot_init(&c->view);
    char *dir = NULL;
    if (asprintf(&dir, "%s/%s", s->o.dir, cc->name) < 0)
        return ST_ENOMEM;
    int rc = idx_catalog_open(dir, &c->cat, err);
    free(dir);
    if (rc != ST_OK)
        return rc;
    idx_catalog_sweep(c->cat);
    /* Units first: one that does not load gives its live members back to their own parts,
     * which then do not load either (no index file of their own) and are rebuilt below. */
    for (size_t ui = 0; ui < c->cat->nunits;) {
        if ((rc = load_unit(c, &c->cat->units[ui])) == ST_ENOMEM)
            return rc;
        if (rc == ST_OK)
            ui++;
    }
    /* Load what the catalog names; a part that does not load is rebuilt. */
    for (size_t i = 0; i < c->cat->n;) {
        struct idx_cat_entry e = c->cat->e[i];
        if (e.unit != 0) { /* served by its unit (loaded above) */
            i++;
            continue;
        }
        char *seg = idx_catalog_seg_path(c->cat, e.node, e.start, e.version);
        char *idxp = idx_catalog_index_path(c->cat, e.node, e.start, e.version, e.index, e.cold);
        struct idx_part *p = NULL;
        struct st_err perr = {0};
        rc = seg != NULL && idxp != NULL
                 ? idx_part_load(&e, seg, idxp, c->metric, rerank_codes(c, e.cold), &p, &perr)
                 : ST_ENOMEM;
        free(seg);
        free(idxp);
        if (rc == ST_ENOMEM)
            return rc;
        if (rc == ST_OK && p->dim != cc->dim) { /* the collection's dim changed since */
            rc = st_err_set(&perr, ST_ECORRUPT, "%u dims; collection '%s' now has %u", p->dim,
                            cc->name, cc->dim);
            idx_part_unref(p);
            p = NULL;
        }
        if (rc != ST_OK) {
            st_log_warn(LOG_COMP,
                        "coll=%s part node=%s start=%" PRId64 " does not load (%s); "
                        "rebuilding it from %s",
                        cc->name, e.node, e.start, perr.msg, e.url);
            idx_catalog_del(c->cat, e.node, e.start);
            struct job *jb = calloc(1, sizeof(*jb));
            if (jb == NULL)
                return ST_ENOMEM;
            jb->kind = JOB_REBUILD;
            jb->c = c;
            jb->e = e;
            jb->mem = idx_part_coll_build_memory(c->cfg, e.records);
            jb->next = s->jobs;
            s->jobs = jb;
            continue; /* entry i is now another one */
        }
        struct idx_part **np = realloc(c->parts, (c->nparts + 1) * sizeof(*np));
        if (np == NULL) {
            idx_part_unref(p);
            return ST_ENOMEM;
        }
        c->parts = np;
        c->parts[c->nparts++] = p;
        i++;
    }
    if (c->nparts > 1)
        qsort(c->parts, c->nparts, sizeof(*c->parts), part_cmp);
    st_log_info(LOG_COMP, "coll=%s loaded parts=%zu", cc->name, c->nparts);
    return republish_locked(c);
}

int idx_service_start(const struct idx_service_opts *o, struct idx_service **out,
                      struct st_err *err)
{
    *out = NULL;
    struct idx_service *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return ST_ENOMEM;
    s->o = *o;
    s->cfg = o->cfg;
    if (s->o.fetch_timeout_ms <= 0)
        s->o.fetch_timeout_ms = 600000;
    if (s->o.fresh_timeout_ms <= 0)
        s->o.fresh_timeout_ms = 2000;
    if (s->o.tier_check_ms <= 0)
        s->o.tier_check_ms = 10000;
    snprintf(s->durable, sizeof(s->durable), "%s-indexer", s->cfg->node_id);
    for (char *p = s->durable; *p; p++)
        if (*p == '.')
            *p = '_'; /* JetStream durable names cannot hold '.' */
    pthread_mutex_init(&s->mu, NULL);
    st_cond_init_mono(&s->cv);
    st_hist_init(&s->build_hist[0], &st_hist_latency);
    st_hist_init(&s->build_hist[1], &st_hist_latency);
    st_hist_init(&s->fresh_hist, &st_hist_age);
    int rc = store_fs_mkdir(NULL, o->dir, "idx.mkdir");
    if (rc != ST_OK) {
        st_err_set(err, rc, "%s: cannot create: %s", o->dir, st_strerror(rc));
        goto fail;
    }
    s->colls = calloc(s->cfg->n_collections ? s->cfg->n_collections : 1, sizeof(*s->colls));
    if (s->colls == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < s->cfg->n_collections; i++) {
        s->ncoll++;
        if ((rc = open_coll(s, &s->colls[i], &s->cfg->collections[i], err)) != ST_OK)
            goto fail;
    }
    /* The puller connects (NATS may be down: searches are served meanwhile). */
    struct idx_nodes_opts no2 = {.pinned = o->ingest_nodes,
                                 .npinned = o->n_ingest_nodes,
                                 .token = o->token,
                                 .settle_ms = o->settle_ms};
    if ((rc = idx_nodes_start(&no2, &s->nodes, err)) != ST_OK)
        goto fail;
    if (s->cfg->indexer.search_threads > 1 &&
        (rc = idx_pool_new(s->cfg->indexer.search_threads - 1, &s->search_pool)) != ST_OK) {
        st_err_set(err, rc, "cannot start the search threads");
        goto fail;
    }
    /* Process-wide, as the builds' threads are (idx_cpucap.h): the one service of a daemon. */
    idx_cpucap_set(s->cfg->indexer.build_cpu_mc);
    unsigned nw = s->cfg->indexer.build_threads ? s->cfg->indexer.build_threads : 1;
    s->workers = calloc(nw, sizeof(*s->workers));
    if (s->workers == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < nw; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            rc = st_err_set(err, ST_ENOMEM, "cannot start build workers");
            goto fail;
        }
        s->nworkers++;
    }
    if (pthread_create(&s->puller, NULL, puller_main, s) != 0) {
        rc = st_err_set(err, ST_ENOMEM, "cannot start the event consumer");
        goto fail;
    }
    s->have_puller = true;
    if (pthread_create(&s->ticker, NULL, ticker_main, s) != 0) {
        rc = st_err_set(err, ST_ENOMEM, "cannot start the ticker");
        goto fail;
    }
    s->have_ticker = true;
    *out = s;
    return ST_OK;
fail:
    idx_service_stop(s);
    return rc;
}

void idx_service_stop(struct idx_service *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stop, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    /* Builds in flight finish (or see the stop) at full speed: the shutdown timeout is not
     * spent sleeping for indexer.build_cpu. */
    idx_cpucap_set(0);
    if (s->have_puller)
        pthread_join(s->puller, NULL);
    if (s->have_ticker)
        pthread_join(s->ticker, NULL);
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    while (s->jobs != NULL) { /* unacked: redelivered after a restart */
        struct job *j = s->jobs;
        s->jobs = j->next;
        job_free(j);
    }
    st_bus_pull_close(s->pull); /* the durable consumer stays on the server */
    if (s->nodes != NULL)
        idx_nodes_detach(s->nodes); /* before the close, as st_bus asks */
    st_bus_close(s->bus);           /* on_state touches s->nodes: after it, none runs */
    idx_nodes_stop(s->nodes);
    idx_pool_free(s->search_pool); /* after the HTTP server: no search is running */
    for (size_t i = 0; i < s->ncoll; i++) {
        struct idx_coll *c = &s->colls[i];
        idx_view_slot_destroy(&c->view);
        for (size_t k = 0; k < c->nparts; k++)
            idx_part_unref(c->parts[k]);
        free(c->parts);
        idx_catalog_free(c->cat);
        pthread_mutex_destroy(&c->mu);
    }
    free(s->colls);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* ---- accessors ---- */

size_t idx_service_ncoll(const struct idx_service *s)
{
    return s->ncoll;
}

struct idx_coll *idx_service_coll_at(struct idx_service *s, size_t i)
{
    return i < s->ncoll ? &s->colls[i] : NULL;
}

struct idx_coll *idx_service_coll(struct idx_service *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->ncoll; i++)
        if (strlen(s->colls[i].cfg->name) == len && memcmp(s->colls[i].cfg->name, name, len) == 0)
            return &s->colls[i];
    return NULL;
}

const struct cfg_collection *idx_coll_cfg(const struct idx_coll *c)
{
    return c->cfg;
}

struct idx_view *idx_coll_view(struct idx_coll *c)
{
    return idx_view_acquire(&c->view);
}

struct idx_nodes *idx_service_nodes(struct idx_service *s)
{
    return s->nodes;
}

struct idx_pool *idx_service_search_pool(struct idx_service *s)
{
    return s->search_pool;
}

const struct idx_service_opts *idx_service_opts(const struct idx_service *s)
{
    return &s->o;
}

uint64_t idx_service_builds(struct idx_service *s)
{
    return atomic_load(&s->builds_total);
}

int idx_coll_windows(struct idx_coll *c, struct idx_window_info **out, size_t *n)
{
    struct idx_service *s = c->s;
    pthread_mutex_lock(&c->mu);
    size_t cap = c->cat->n;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&s->mu);
    for (struct job *j = s->jobs; j != NULL; j = j->next)
        cap++;
    pthread_mutex_unlock(&s->mu);
    struct idx_window_info *w = calloc(cap + 1, sizeof(*w));
    if (w == NULL)
        return ST_ENOMEM;
    size_t k = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->cat->n && k < cap; i++) {
        const struct idx_cat_entry *e = &c->cat->e[i];
        struct idx_window_info *x = &w[k++];
        strcpy(x->node, e->node);
        x->start = e->start;
        x->end = e->end;
        x->version = e->version;
        x->indexed = true;
        x->records = e->records;
        x->bytes = e->bytes;
        const struct idx_cat_unit *u = e->unit != 0 ? idx_catalog_unit(c->cat, e->unit) : NULL;
        snprintf(x->index, sizeof(x->index), "%s", u != NULL ? u->e.index : e->index);
        x->cold = u != NULL ? u->e.cold : e->cold;
        x->unit = e->unit;
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&s->mu);
    for (struct job *j = s->jobs; j != NULL && k < cap; j = j->next) {
        if (j->c != c || j->kind == JOB_RETIER || j->kind == JOB_COMPACT)
            continue;
        struct idx_window_info *x = &w[k++];
        strcpy(x->node, j->e.node);
        x->start = j->e.start;
        x->end = j->e.end;
        x->version = j->e.version;
        x->indexed = false;
        x->records = j->e.records;
        x->bytes = j->e.bytes;
        strcpy(x->index, "none");
    }
    pthread_mutex_unlock(&s->mu);
    *out = w;
    *n = k;
    return ST_OK;
}

bool idx_service_ready(struct idx_service *s, char *why, size_t cap)
{
    if (!atomic_load(&s->subscribed)) {
        char shown[512];
        st_bus_url_redact(s->cfg->nats.url, shown, sizeof(shown));
        snprintf(why, cap, "nats: JetStream consumer %s not subscribed yet (%s)", s->durable,
                 shown);
        return false;
    }
    if (!atomic_load(&s->up) || !st_bus_connected(s->bus)) {
        char shown[512];
        st_bus_url_redact(s->cfg->nats.url, shown, sizeof(shown));
        snprintf(why, cap, "nats: not connected to %s", shown);
        return false;
    }
    if (!idx_nodes_settled(s->nodes)) {
        snprintf(why, cap, "discovering ingest nodes (strong searches need all of them)");
        return false;
    }
    return true;
}

void idx_service_metrics(struct idx_service *s, struct st_text *t)
{
    uint64_t *backlog = calloc(s->ncoll ? s->ncoll : 1, sizeof(*backlog));
    pthread_mutex_lock(&s->mu);
    for (struct job *j = s->jobs; backlog != NULL && j != NULL; j = j->next)
        backlog[j->c - s->colls]++;
    uint64_t mem = s->mem_in_use;
    unsigned running = s->running;
    pthread_mutex_unlock(&s->mu);
    st_prom_head(t, "strata_index_backlog", "gauge", "Windows waiting for or in an index build");
    for (size_t i = 0; i < s->ncoll; i++) {
        const char *l[] = {"collection", s->colls[i].cfg->name, NULL};
        st_prom_sample(t, "strata_index_backlog", l, backlog != NULL ? (double)backlog[i] : 0);
    }
    free(backlog);
    st_prom_head(t, "strata_index_build_seconds", "histogram", "Index build time");
    const char *lh[] = {"type", "hnsw", NULL}, *li[] = {"type", "ivfpq", NULL};
    st_prom_hist(t, "strata_index_build_seconds", lh, &s->build_hist[0]);
    st_prom_hist(t, "strata_index_build_seconds", li, &s->build_hist[1]);
    st_prom_head(t, "strata_freshness_seconds", "histogram",
                 "Window end (event time) to the stage");
    const char *lf[] = {"stage", "indexed", NULL};
    st_prom_hist(t, "strata_freshness_seconds", lf, &s->fresh_hist);
    st_prom_head(t, "strata_index_builds_running", "gauge", "Index builds in progress");
    st_prom_sample(t, "strata_index_builds_running", NULL, running);
    st_prom_head(t, "strata_index_build_memory_bytes", "gauge",
                 "Memory reserved by running builds (estimate)");
    st_prom_sample(t, "strata_index_build_memory_bytes", NULL, (double)mem);
    st_prom_head(t, "strata_index_build_throttled_seconds_total", "counter",
                 "Time build threads slept to keep under indexer.build_cpu");
    st_prom_sample(t, "strata_index_build_throttled_seconds_total", NULL,
                   (double)idx_cpucap_slept_ns() / 1e9);
    size_t nc = s->ncoll;
    enum { NCOL = 12 }; /* values per collection, by fam[].col */
    double *val = calloc(nc * NCOL + 1, sizeof(*val));
    for (size_t i = 0; val != NULL && i < nc; i++) {
        struct idx_coll *c = &s->colls[i];
        struct idx_view *v = idx_coll_view(c);
        double *x = val + i * NCOL;
        for (size_t k = 0; v != NULL && k < v->n; k++) {
            const struct idx_part *p = v->parts[k];
            x[1] += p->n;
            x[2] += (double)p->memory;
            x[10] += p->ivf != NULL && p->n > 0 && v->qgroup[k] == k;
        }
        x[11] = (double)atomic_load(&c->adoptions);
        x[0] = (double)idx_view_live_parts(v);
        x[8] = v != NULL ? (double)v->n : 0;
        x[9] = (double)atomic_load(&c->compactions);
        idx_view_release(v);
        x[3] = (double)atomic_load(&c->ev_sealed);
        x[4] = (double)atomic_load(&c->ev_expired);
        x[5] = (double)atomic_load(&c->noops);
        x[6] = (double)atomic_load(&c->failures);
        x[7] = (double)atomic_load(&c->retries);
    }
    static const struct {
        const char *name, *type, *help, *kind;
        int col;
    } fam[] = {
        {"strata_indexer_parts", "gauge", "Window parts served", NULL, 0},
        {"strata_indexer_records", "gauge", "Vectors in served parts", NULL, 1},
        {"strata_indexer_index_bytes", "gauge", "Memory of served indexes", NULL, 2},
        {"strata_indexer_events_total", "counter", "Window events handled", "sealed", 3},
        {NULL, NULL, NULL, "expired", 4},
        {NULL, NULL, NULL, "noop", 5},
        {"strata_index_failures_total", "counter", "Windows given up", NULL, 6},
        {"strata_index_retries_total", "counter",
         "Window fetches, builds or commits that failed and are retried", NULL, 7},
        {"strata_indexer_indexes", "gauge",
         "Indexes served (a unit of index compaction counts once)", NULL, 8},
        {"strata_index_compactions_total", "counter", "Units built by index compaction (committed)",
         NULL, 9},
        {"strata_indexer_quantizers", "gauge",
         "Distinct IVF-PQ quantizers served (parts sharing one are searched as one index)", NULL,
         10},
        {"strata_index_quantizers_adopted_total", "counter",
         "Window indexes built with the quantizer of an earlier window (IVF-PQ)", NULL, 11},
    };
    const char *cur = NULL;
    for (size_t f = 0; val != NULL && f < sizeof(fam) / sizeof(fam[0]); f++) {
        if (fam[f].name != NULL) {
            cur = fam[f].name;
            st_prom_head(t, cur, fam[f].type, fam[f].help);
        }
        for (size_t i = 0; i < nc; i++) {
            const char *l[] = {"collection", s->colls[i].cfg->name, fam[f].kind ? "kind" : NULL,
                               fam[f].kind, NULL};
            st_prom_sample(t, cur, l, val[i * NCOL + (size_t)fam[f].col]);
        }
    }
    free(val);
}
