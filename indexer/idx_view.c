/* idx_view.c — serving snapshots, the id index and the merged search (idx_view.h). */
#include "idx_view.h"

#include "idx_pool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "st_checksum.h"

static void rec_at(struct idx_part *const *parts, uint64_t slot, struct store_seg_record *r)
{
    idx_part_record(parts[(slot >> 32) - 1], (uint32_t)slot, r);
}

static bool id_eq(const struct store_seg_record *r, const uint8_t *id, uint32_t len)
{
    return r->id_len == len && memcmp(r->id, id, len) == 0;
}

/* The slot of id, or the empty slot where it would go. */
static size_t find_slot(struct idx_part *const *parts, const uint64_t *slots, size_t nslots,
                        const uint8_t *id, uint32_t len)
{
    size_t i = st_hash64(id, len) & (nslots - 1);
    for (;; i = (i + 1) & (nslots - 1)) {
        if (slots[i] == 0)
            return i;
        struct store_seg_record r;
        rec_at(parts, slots[i], &r);
        if (id_eq(&r, id, len))
            return i;
    }
}

static bool dead_bit(const uint8_t *d, size_t j)
{
    return d != NULL && (d[j / 8] & (1u << (j % 8))) != 0;
}

bool idx_view_member_live(const struct idx_view *v, size_t part, size_t member)
{
    return !dead_bit(v->dead[part], member);
}

uint64_t idx_view_live_parts(const struct idx_view *v)
{
    uint64_t n = 0;
    for (size_t i = 0; v != NULL && i < v->n; i++)
        for (size_t j = 0; j < v->parts[i]->nmem; j++)
            n += v->parts[i]->unit == 0 || !dead_bit(v->dead[i], j);
    return n;
}

int idx_view_build(struct idx_part *const *parts, size_t n, const uint8_t *const *dead,
                   struct idx_view **out)
{
    *out = NULL;
    struct idx_view *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return ST_ENOMEM;
    atomic_init(&v->refs, 1);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += parts[i]->nrec;
    size_t ns = 16;
    while (ns < total * 2)
        ns *= 2;
    v->parts = calloc(n ? n : 1, sizeof(*v->parts));
    v->mask = calloc(n ? n : 1, sizeof(*v->mask));
    v->dead = calloc(n ? n : 1, sizeof(*v->dead));
    v->slots = calloc(ns, sizeof(*v->slots));
    v->qgroup = calloc(n ? n : 1, sizeof(*v->qgroup));
    v->live = calloc(n ? n : 1, sizeof(*v->live));
    if (n > UINT32_MAX) { /* parts are numbered in 32 bits (slots, groups) */
        idx_view_release(v);
        return ST_EINVAL;
    }
    if (v->parts == NULL || v->mask == NULL || v->dead == NULL || v->slots == NULL ||
        v->qgroup == NULL || v->live == NULL) {
        idx_view_release(v);
        return ST_ENOMEM;
    }
    v->nslots = ns;
    for (size_t i = 0; i < n; i++) {
        idx_part_ref(parts[i]);
        v->parts[v->n++] = parts[i];
    }
    /* Quantizer groups: each IVF-PQ part against the first part of every group so far (their
     * hashes first; the quantizers are compared byte for byte once here, not per search). */
    size_t nrep = 0; /* the groups so far: their first parts */
    uint32_t *rep = malloc((n ? n : 1) * sizeof(*rep));
    if (rep == NULL) {
        idx_view_release(v);
        return ST_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        v->qgroup[i] = (uint32_t)i;
        if (parts[i]->ivf == NULL || parts[i]->n == 0)
            continue; /* HNSW and empty parts: no group */
        size_t r = 0;
        while (r < nrep && !idx_part_same_quantizer(parts[rep[r]], parts[i]))
            r++;
        if (r < nrep)
            v->qgroup[i] = rep[r];
        else
            rep[nrep++] = (uint32_t)i;
    }
    free(rep);
    for (size_t i = 0; dead != NULL && i < n; i++) {
        bool any = false;
        for (size_t j = 0; dead[i] != NULL && j < parts[i]->nmem; j++)
            any = any || dead_bit(dead[i], j);
        if (!any)
            continue;
        size_t bytes = (parts[i]->nmem + 7) / 8; /* what the caller's bitmap holds */
        if ((v->dead[i] = malloc(bytes)) == NULL) {
            idx_view_release(v);
            return ST_ENOMEM;
        }
        memcpy(v->dead[i], dead[i], bytes);
    }
    /* The newest version of every id, deletes included; a dead member's records are no
     * version of anything (expired, or replaced by a newer version of its window). */
    for (size_t pi = 0; pi < n; pi++) {
        const struct idx_part *p = parts[pi];
        for (uint32_t ri = 0; ri < p->nrec; ri++) {
            const struct idx_part_member *m = idx_part_member_of(p, ri);
            if (dead_bit(v->dead[pi], (size_t)(m - p->mem))) {
                ri = m->first + m->count - 1;
                continue;
            }
            struct store_seg_record r;
            idx_part_record(p, ri, &r);
            size_t s = find_slot(v->parts, v->slots, ns, r.id, r.id_len);
            uint64_t mine = (uint64_t)(pi + 1) << 32 | ri;
            if (v->slots[s] == 0) {
                v->slots[s] = mine;
                v->ids++;
                continue;
            }
            struct store_seg_record o;
            rec_at(v->parts, v->slots[s], &o);
            struct store_version a = {r.ts, r.partition, r.offset, r.idx};
            struct store_version b = {o.ts, o.partition, o.offset, o.idx};
            if (store_version_cmp(&a, &b) > 0)
                v->slots[s] = mine;
        }
    }
    /* Masks: a label is hidden unless its record is its id's newest version. */
    for (size_t pi = 0; pi < n; pi++) {
        struct idx_part *p = v->parts[pi];
        if ((v->mask[pi] = calloc(p->n / 8 + 1, 1)) == NULL) {
            idx_view_release(v);
            return ST_ENOMEM;
        }
        v->live[pi] = p->n;
        for (uint32_t l = 0; l < p->n; l++) {
            struct store_seg_record r;
            idx_part_record(p, p->rec[l], &r);
            size_t s = find_slot(v->parts, v->slots, ns, r.id, r.id_len);
            if (v->slots[s] != ((uint64_t)(pi + 1) << 32 | p->rec[l])) {
                v->mask[pi][l / 8] |= (uint8_t)(1u << (l % 8));
                v->hidden++;
                v->live[pi]--;
            }
        }
    }
    *out = v;
    return ST_OK;
}

void idx_view_release(struct idx_view *v)
{
    if (v == NULL || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    for (size_t i = 0; i < v->n; i++) {
        if (v->mask != NULL)
            free(v->mask[i]);
        if (v->dead != NULL)
            free(v->dead[i]);
        idx_part_unref(v->parts[i]);
    }
    free(v->mask);
    free(v->dead);
    free(v->qgroup);
    free(v->live);
    free(v->parts);
    free(v->slots);
    free(v);
}

void idx_view_slot_init(struct idx_view_slot *s)
{
    pthread_mutex_init(&s->mu, NULL);
    s->cur = NULL;
}

struct idx_view *idx_view_acquire(struct idx_view_slot *s)
{
    pthread_mutex_lock(&s->mu);
    struct idx_view *v = s->cur;
    if (v != NULL)
        atomic_fetch_add(&v->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return v;
}

void idx_view_swap(struct idx_view_slot *s, struct idx_view *v)
{
    pthread_mutex_lock(&s->mu);
    struct idx_view *old = s->cur;
    s->cur = v;
    pthread_mutex_unlock(&s->mu);
    idx_view_release(old); /* frees only when no search holds it */
}

void idx_view_slot_destroy(struct idx_view_slot *s)
{
    idx_view_release(s->cur);
    s->cur = NULL;
    pthread_mutex_destroy(&s->mu);
}

/* ---- search ---- */

struct filt {
    const struct idx_part *p;
    const uint8_t *mask;
    bool by_ts;
    int64_t from, to;
};

static bool keep(void *ctx, uint32_t label)
{
    const struct filt *f = ctx;
    if (f->mask[label / 8] & (1u << (label % 8)))
        return false;
    if (f->by_ts) {
        struct store_seg_record r;
        idx_part_record(f->p, f->p->rec[label], &r);
        return r.ts >= f->from && r.ts <= f->to;
    }
    return true;
}

static int hit_cmp(const void *a, const void *b)
{
    const struct idx_view_hit *x = a, *y = b;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    if (x->part->e.start != y->part->e.start) /* newer window first */
        return x->part->e.start > y->part->e.start ? -1 : 1;
    /* Two nodes' parts of one window: by node, so that the order is total (a heap and qsort
     * need cmp(a, b) = -cmp(b, a); "-1 : 1" on the start alone gave 1 both ways). */
    int c = x->part != y->part ? strcmp(x->part->e.node, y->part->e.node) : 0;
    if (c != 0)
        return c;
    return x->rec < y->rec ? -1 : x->rec > y->rec;
}

/* The best k hits as a max-heap under hit_cmp (the root is the worst kept). */
static void best_push(struct idx_view_hit *h, size_t *n, size_t k, struct idx_view_hit x)
{
    size_t i;
    if (*n < k) {
        i = (*n)++;
        while (i > 0 && hit_cmp(&h[(i - 1) / 2], &x) < 0) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = x;
        return;
    }
    if (hit_cmp(&x, &h[0]) >= 0)
        return;
    for (i = 0;;) { /* replace the root, sift down */
        size_t c = 2 * i + 1;
        if (c >= k)
            break;
        if (c + 1 < k && hit_cmp(&h[c + 1], &h[c]) > 0)
            c++;
        if (hit_cmp(&h[c], &x) <= 0)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

struct probe {
    float d;
    uint32_t i; /* position in the view */
};

static int probe_cmp(const void *a, const void *b)
{
    const struct probe *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/*
 * The parts of one IVF-PQ quantizer among the np to search, each group of two or more turned
 * into one entry of order (i = v->n + g for group g, whose parts are gmem[gstart[g] ..
 * gstart[g + 1])); np shrinks accordingly. ST_ENOMEM leaves order as it was.
 */
static int group_parts(const struct idx_view *v, struct probe *order, size_t *np, uint32_t **gmem,
                       uint32_t **gstart)
{
    *gmem = *gstart = NULL;
    /* per part of the view: how many of the parts to search have it as their group's first,
     * then (groups of two or more) the group's number + 1 */
    uint32_t *cnt = calloc(v->n ? v->n : 1, sizeof(*cnt));
    if (cnt == NULL)
        return ST_ENOMEM;
    size_t ng = 0, grouped = 0;
    for (size_t oi = 0; oi < *np; oi++)
        cnt[v->qgroup[order[oi].i]]++;
    for (size_t i = 0; i < v->n; i++)
        if (cnt[i] >= 2) {
            ng++;
            grouped += cnt[i];
        }
    if (ng == 0) {
        free(cnt);
        return ST_OK;
    }
    uint32_t *mem = malloc(grouped * sizeof(*mem));
    uint32_t *start = malloc((ng + 1) * sizeof(*start));
    uint32_t *fill = malloc(ng * sizeof(*fill));
    if (mem == NULL || start == NULL || fill == NULL) {
        free(cnt);
        free(mem);
        free(start);
        free(fill);
        return ST_ENOMEM;
    }
    uint32_t g = 0, at = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (cnt[i] < 2) {
            cnt[i] = 0;
            continue;
        }
        start[g] = fill[g] = at;
        at += cnt[i];
        cnt[i] = ++g;
    }
    start[ng] = at;
    /* Grouped parts leave order (in their order: a group's parts keep the view's order); each
     * group takes the place of its first. */
    size_t keep = 0;
    for (size_t oi = 0; oi < *np; oi++) {
        struct probe o = order[oi]; /* order[keep] may be this very entry */
        uint32_t gi = cnt[v->qgroup[o.i]];
        if (gi == 0) {
            order[keep++] = o;
            continue;
        }
        if (fill[gi - 1] == start[gi - 1])
            order[keep++] = (struct probe){o.d, (uint32_t)(v->n + gi - 1)};
        mem[fill[gi - 1]++] = o.i;
    }
    *np = keep;
    free(cnt);
    free(fill);
    *gmem = mem;
    *gstart = start;
    return ST_OK;
}

/* A part the first pass searched for its share (part_share) and got all kp hits from. */
struct again {
    uint32_t i;  /* position in the view */
    float worst; /* the second worst of its kp hits (kp >= 3) */
};

/* One bounded search over the ordered parts, shared by the threads idx_pool_run lends it. */
struct vjob {
    const struct idx_view *v;
    const struct idx_view_query *q;
    const struct probe *order;
    size_t np;
    bool second;    /* the second pass: order holds parts to search again with the whole beam */
    uint64_t total; /* live vectors in the parts to search that the time range does not cut */
    struct again *again; /* first pass: parts to search again, if still within the final bound */
    size_t nagain;       /* (guarded by mu) */
    uint32_t kp_min, kp_max, ef_max; /* the shares' hit counts and beams (guarded by mu) */
    const uint32_t *gmem, *gstart;   /* group_parts */
    _Atomic int rc;                  /* a group's search failed: its error (ST_OK: none) */
    _Atomic uint32_t grouped;        /* parts searched within groups */
    _Atomic uint32_t shared;         /* parts searched first for their share (part_share) */
    _Atomic size_t next;             /* the next part (in order) to claim */
    pthread_t caller;
    _Atomic uint32_t by_helpers; /* parts claimed by runs on other threads than the caller's */
    pthread_mutex_t mu;          /* guards all and have */
    struct idx_view_hit *all;    /* the best k so far, a max-heap under hit_cmp */
    size_t have;
};

/* The filter of part i of v for query q: its mask, and its records' times when the part's
 * range is not wholly inside the query's. */
static struct filt part_filter(const struct idx_view *v, size_t i, const struct idx_view_query *q)
{
    const struct idx_part *p = v->parts[i];
    return (struct filt){p, v->mask[i], p->min_ts < q->from_ts || p->max_ts > q->to_ts, q->from_ts,
                         q->to_ts};
}

/* Searches group g (group_parts) as one index — in slices of at most 2^32 - 1 vectors, what
 * one shared search can number — and merges its hits. A failure (no scratch) is kept in j->rc
 * and fails the whole search rather than answer without the group. */
static void search_group(struct vjob *j, size_t g, float bound, struct idx_part_hit *ph)
{
    const struct idx_view_query *q = j->q;
    size_t n = j->gstart[g + 1] - j->gstart[g];
    const uint32_t *gm = j->gmem + j->gstart[g];
    struct filt *fs = malloc(n * sizeof(*fs));
    struct idx_part_shared *sh = malloc(n * sizeof(*sh));
    uint32_t *which = malloc(q->k * sizeof(*which));
    int rc = fs != NULL && sh != NULL && which != NULL ? ST_OK : ST_ENOMEM;
    for (size_t m = 0; rc == ST_OK && m < n; m++) {
        fs[m] = part_filter(j->v, gm[m], q);
        sh[m] = (struct idx_part_shared){j->v->parts[gm[m]], keep, &fs[m]};
    }
    for (size_t at = 0; rc == ST_OK && at < n;) {
        size_t end = at;
        uint64_t total = 0;
        while (end < n && (end == at || total + sh[end].p->n <= UINT32_MAX))
            total += sh[end++].p->n;
        size_t got = 0;
        rc = idx_part_search_shared(sh + at, end - at, q->vec, q->k, q->nprobe, bound, ph, which,
                                    &got);
        pthread_mutex_lock(&j->mu);
        for (size_t h = 0; h < got; h++)
            best_push(j->all, &j->have, q->k,
                      (struct idx_view_hit){sh[at + which[h]].p, ph[h].rec, ph[h].dist});
        if (end < n && j->have == q->k)
            bound = j->all[0].dist; /* the next slice starts from what this one found */
        pthread_mutex_unlock(&j->mu);
        at = end;
    }
    if (rc != ST_OK) {
        int none = ST_OK;
        atomic_compare_exchange_strong(&j->rc, &none, rc);
    }
    atomic_fetch_add_explicit(&j->grouped, (uint32_t)n, memory_order_relaxed);
    free(fs);
    free(sh);
    free(which);
}

/*
 * A part's share of a search over many: the beam and hit count its first search gets. On
 * random splits of one distribution a part of n of the `total` vectors holds e = k n / total
 * of the k nearest on average (0.42 of 10 for a window of 24), and an HNSW search for k with
 * beam ef spends most of its distances on a beam it needs only for the hits it returns: the
 * part is searched for kp = ceil(3 e) + 2 hits (k at most) with the beam ef scaled alike,
 * ceil(ef kp / k) (kp at least; the default beam, ef = 0, is not scaled: max(kp, 64)), without
 * the bound's narrowing (idx_hnsw_search_bound: on a beam this small it cost recall and saved
 * little). n and total count live labels (not masked), total only in parts the time range
 * does not cut (what lies in range of a cut one is not known: leaving it out makes the other
 * shares larger, never smaller). ceil(3 e): of 2 e, 3 e and 4 e, the best QPS at recall 0.95
 * and 0.99 on Fashion-MNIST (docs/benchmarks.md). A part with all but one of its kp hits
 * within the final bound may hold more than its share (windows of drifting content, where one
 * part holds most of the k; or a narrow beam that missed some of its best): the second pass
 * searches it again for k with the whole ef (0.16 such parts a query on random splits of
 * Fashion-MNIST into 24 windows; all kp instead of all but one lost recall on weak graphs:
 * tests/check_idx_view.c). IVF-PQ parts (exact within the bound), parts with
 * records outside the query's time range (a filter a narrow beam may not see past) and the
 * first part to find anything (no bound yet) get the whole beam. One part or two of equal size
 * are never cut (kp >= k).
 */
static bool part_share(const struct vjob *j, const struct idx_part *p, uint32_t live,
                       const struct filt *f, float bound, uint32_t *kp, uint32_t *efp)
{
    const struct idx_view_query *q = j->q;
    *kp = q->k;
    *efp = q->ef;
    if (j->second || q->whole_beams || p->hnsw == NULL || f->by_ts || !(bound < INFINITY) ||
        j->total == 0)
        return false;
    double e = (double)q->k * live / (double)j->total;
    double want = ceil(3 * e) + 2;
    if (!(want < q->k))
        return false;
    *kp = (uint32_t)want;
    *efp = q->ef == 0 ? idx_part_ef(*kp, 0) : (uint32_t)ceil((double)q->ef * *kp / q->k);
    *efp = *efp > *kp ? *efp : *kp;
    return true;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Merges the hits of part p's second search (under j->mu): the best k may hold some of them
 * already, from its first (at most kp, and only p's: found once, with the heap, sorted). */
static void merge_again(struct vjob *j, struct idx_part *p, const struct idx_part_hit *ph,
                        size_t got, uint32_t *mine)
{
    size_t nm = 0;
    for (size_t i = 0; i < j->have; i++)
        if (j->all[i].part == p)
            mine[nm++] = j->all[i].rec;
    if (nm > 1)
        qsort(mine, nm, sizeof(*mine), u32_cmp);
    for (size_t h = 0; h < got; h++)
        if (nm == 0 || bsearch(&ph[h].rec, mine, nm, sizeof(*mine), u32_cmp) == NULL)
            best_push(j->all, &j->have, j->q->k, (struct idx_view_hit){p, ph[h].rec, ph[h].dist});
}

/* Claims parts in order until none is left; a run that cannot get its scratch claims none
 * (the others, or the caller's run, search them). */
static void vjob_work(void *arg)
{
    struct vjob *j = arg;
    const struct idx_view_query *q = j->q;
    if (atomic_load_explicit(&j->next, memory_order_relaxed) >= j->np)
        return; /* a helper arriving after the work: nothing to allocate for */
    struct idx_part_hit *ph = malloc(q->k * sizeof(*ph));
    uint32_t *mine = j->second ? malloc(q->k * sizeof(*mine)) : NULL;
    if (ph == NULL || (j->second && mine == NULL)) {
        free(ph);
        free(mine);
        return;
    }
    for (;;) {
        size_t oi = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (oi >= j->np)
            break;
        size_t i = j->order[oi].i;
        if (!j->second && !pthread_equal(pthread_self(), j->caller)) /* a group's members count */
            atomic_fetch_add_explicit(
                &j->by_helpers,
                i >= j->v->n ? j->gstart[i - j->v->n + 1] - j->gstart[i - j->v->n] : 1,
                memory_order_relaxed);
        /* Only what beats the k-th best so far can enter the result (ties are kept: the merge
         * orders them); the part's search does less with that bound (idx_part_search). Parts
         * searched side by side see the bound as it stands when they start. */
        pthread_mutex_lock(&j->mu);
        float bound = j->have == q->k ? j->all[0].dist : INFINITY;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->v->n) {
            search_group(j, i - j->v->n, bound, ph);
            continue;
        }
        struct idx_part *p = j->v->parts[i];
        struct filt f = part_filter(j->v, i, q);
        uint32_t kp, ef;
        bool share = part_share(j, p, j->v->live[i], &f, bound, &kp, &ef);
        if (share)
            atomic_fetch_add_explicit(&j->shared, 1, memory_order_relaxed);
        size_t got =
            idx_part_search(p, q->vec, kp, ef, q->nprobe, share ? INFINITY : bound, keep, &f, ph);
        pthread_mutex_lock(&j->mu);
        if (j->second) {
            merge_again(j, p, ph, got, mine);
        } else {
            for (size_t h = 0; h < got; h++)
                best_push(j->all, &j->have, q->k, (struct idx_view_hit){p, ph[h].rec, ph[h].dist});
        }
        if (share) {
            j->kp_min = kp < j->kp_min ? kp : j->kp_min;
            j->kp_max = kp > j->kp_max ? kp : j->kp_max;
            j->ef_max = ef > j->ef_max ? ef : j->ef_max;
        }
        if (share && got == kp) /* kp >= 3: live > 0 (idx_view_search prunes the others) */
            j->again[j->nagain++] = (struct again){(uint32_t)i, ph[got - 2].dist};
        pthread_mutex_unlock(&j->mu);
    }
    free(ph);
    free(mine);
}

/* Runs j's parts (j->order[0 .. np)) on the caller's thread and the helpers the pool lends. */
static int run_pass(struct vjob *j)
{
    atomic_store(&j->next, 0);
    uint32_t helpers = idx_pool_threads(j->q->pool);
    if (helpers > j->np - (j->np > 0))
        helpers = (uint32_t)(j->np - (j->np > 0));
    idx_pool_run(j->q->pool, helpers, vjob_work, j);
    if (atomic_load(&j->rc) != ST_OK)
        return atomic_load(&j->rc); /* a group left unsearched */
    if (atomic_load(&j->next) < j->np)
        return ST_ENOMEM; /* no run got its scratch: parts left unsearched */
    return ST_OK;
}

int idx_view_search(const struct idx_view *v, const struct idx_view_query *q,
                    struct idx_view_hit *out, size_t *n, struct idx_view_stats *st)
{
    *n = 0;
    memset(st, 0, sizeof(*st));
    if (v == NULL || q->k == 0)
        return ST_OK;
    /* (the bounded search's runs hold their own part-hit scratch: vjob_work) */
    struct idx_part_hit *ph = q->exhaustive ? malloc(q->k * sizeof(*ph)) : NULL;
    struct idx_view_hit *all = malloc(q->k * 2 * sizeof(*all));
    struct probe *order = malloc((v->n ? v->n : 1) * sizeof(*order));
    if ((q->exhaustive && ph == NULL) || all == NULL || order == NULL) {
        free(ph);
        free(all);
        free(order);
        return ST_ENOMEM;
    }
    /* The parts to search, pruned by the window, then by the part's event-time range. */
    size_t np = 0;
    uint64_t total = 0;
    int64_t last_window = INT64_MIN;
    for (size_t i = 0; i < v->n; i++) {
        struct idx_part *p = v->parts[i];
        if (p->e.end - 1 < q->from_ts || p->e.start > q->to_ts || p->max_ts < q->from_ts ||
            p->min_ts > q->to_ts || v->live[i] == 0) /* nothing it holds can be returned */
            continue;
        if (p->unit != 0) { /* a unit: the distinct windows of its live members in range */
            int64_t prev = INT64_MIN;
            for (size_t j = 0; j < p->nmem; j++) {
                const struct idx_cat_entry *m = &p->mem[j].e;
                if (m->start == prev || dead_bit(v->dead[i], j) || m->end - 1 < q->from_ts ||
                    m->start > q->to_ts)
                    continue;
                st->windows_searched++;
                prev = m->start;
            }
        } else if (st->parts_searched == 0 || p->e.start != last_window) {
            st->windows_searched++;
        }
        st->parts_searched++;
        last_window = p->e.start;
        if (p->min_ts >= q->from_ts && p->max_ts <= q->to_ts) /* not cut (part_filter) */
            total += v->live[i];
        order[np++] = (struct probe){q->exhaustive ? 0 : idx_part_probe(p, q->vec), (uint32_t)i};
    }
    size_t have = 0;
    int rc = ST_OK;
    if (q->exhaustive) { /* the reference: every part for k, in view order, merged by sorting */
        for (size_t oi = 0; oi < np; oi++) {
            size_t i = order[oi].i;
            struct idx_part *p = v->parts[i];
            struct filt f = part_filter(v, i, q);
            size_t got = idx_part_search(p, q->vec, q->k, q->ef, q->nprobe, INFINITY, keep, &f, ph);
            for (size_t j = 0; j < got; j++)
                all[have++] = (struct idx_view_hit){p, ph[j].rec, ph[j].dist};
            if (have >= q->k) { /* keep the best k of what we have */
                if (have > 1)
                    qsort(all, have, sizeof(*all), hit_cmp);
                have = q->k;
            }
        }
    } else {
        /* Most promising first (a cheap hint each), so that the k-th best distance found so
         * far, which bounds every next part's search, tightens early; with a pool, the next
         * parts in that order are searched side by side. */
        uint32_t *gmem = NULL, *gstart = NULL;
        if (np > 1 && (rc = group_parts(v, order, &np, &gmem, &gstart)) != ST_OK) {
            free(all);
            free(order);
            return rc;
        }
        if (np > 1)
            qsort(order, np, sizeof(*order), probe_cmp);
        struct again *again = malloc((np ? np : 1) * sizeof(*again));
        if (again == NULL) {
            free(gmem);
            free(gstart);
            free(all);
            free(order);
            return ST_ENOMEM;
        }
        struct vjob j = {.v = v,
                         .q = q,
                         .order = order,
                         .np = np,
                         .total = total,
                         .again = again,
                         .kp_min = UINT32_MAX,
                         .gmem = gmem,
                         .gstart = gstart,
                         .all = all};
        atomic_init(&j.rc, ST_OK);
        atomic_init(&j.grouped, 0);
        atomic_init(&j.shared, 0);
        j.caller = pthread_self();
        atomic_init(&j.by_helpers, 0);
        pthread_mutex_init(&j.mu, NULL);
        rc = run_pass(&j);
        if (rc == ST_OK && j.nagain > 0) {
            /* The parts whose first search may have stopped short of hits that count: all but
             * one of its hits lie within the final bound. Searched again, most promising first. */
            float bound = j.have == q->k ? j.all[0].dist : INFINITY;
            size_t n2 = 0;
            for (size_t a = 0; a < j.nagain; a++)
                if (!(again[a].worst > bound))
                    order[n2++] = (struct probe){again[a].worst, again[a].i};
            if (n2 > 1)
                qsort(order, n2, sizeof(*order), probe_cmp);
            j.second = true;
            j.np = n2;
            /* When no run gets its scratch (ST_ENOMEM), the first pass's answer stands (every
             * part searched once, the k best merged), with the recall of the parts' shares. */
            if (n2 > 0)
                (void)run_pass(&j);
            size_t ran = atomic_load(&j.next);
            st->parts_again = (uint32_t)(ran < n2 ? ran : n2);
        }
        pthread_mutex_destroy(&j.mu);
        have = j.have;
        st->parts_by_helpers = atomic_load(&j.by_helpers);
        st->parts_grouped = atomic_load(&j.grouped);
        st->parts_shared = atomic_load(&j.shared);
        if (st->parts_shared > 0) {
            st->share_kp_min = j.kp_min;
            st->share_kp_max = j.kp_max;
            st->share_ef_max = j.ef_max;
        }
        free(again);
        free(gmem);
        free(gstart);
    }
    if (rc == ST_OK) {
        if (have > 1)
            qsort(all, have, sizeof(*all), hit_cmp);
        memcpy(out, all, have * sizeof(*out));
        *n = have;
    }
    free(ph);
    free(all);
    free(order);
    return rc;
}

int idx_view_get(const struct idx_view *v, const uint8_t *id, uint32_t id_len, bool deletes,
                 struct idx_part **part, uint32_t *rec)
{
    if (v == NULL || v->nslots == 0)
        return ST_ENOTFOUND;
    size_t s = find_slot(v->parts, v->slots, v->nslots, id, id_len);
    if (v->slots[s] == 0)
        return ST_ENOTFOUND;
    struct store_seg_record r;
    rec_at(v->parts, v->slots[s], &r);
    if (r.op != STORE_OP_UPSERT && !deletes)
        return ST_ENOTFOUND;
    *part = v->parts[(v->slots[s] >> 32) - 1];
    *rec = (uint32_t)v->slots[s];
    return ST_OK;
}
