/* IVF-PQ: k-means training, residual product quantization, ADC search, exact re-ranking. */
#include "idx_ivfpq.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "idx_file_int.h"
#include "ivfpq_format.h"
#include "st_checksum.h"
#include "st_coding.h"
#include "store_fs.h"

#define KSUB 256u

struct ivf_list {
    uint32_t *ids;
    uint8_t *codes; /* n * m bytes */
    uint32_t n, cap;
};

struct idx_ivfpq {
    uint32_t dim, nlist, m, dsub;
    enum idx_metric metric;
    float *centroids; /* nlist * dim */
    float *codebooks; /* m * KSUB * dsub: sub-quantizer j's centroid c at (j*KSUB + c)*dsub */
    struct ivf_list *lists;
    uint32_t n;
    idx_dist_fn dist;
    void *map; /* loaded from a file: arrays point into it */
    size_t map_len;
};

/* ---- k-means ------------------------------------------------------------------------------ */

struct assign_job {
    const float *x, *c;
    uint32_t n, d, k, from, to;
    uint32_t *out;
    float *err;
};

static void *assign_range(void *arg)
{
    struct assign_job *j = arg;
    idx_dist_fn l2 = idx_kernels()->l2sq;
    double err = 0;
    for (uint32_t i = j->from; i < j->to; i++) {
        const float *xi = j->x + (size_t)i * j->d;
        float best = INFINITY;
        uint32_t bi = 0;
        for (uint32_t c = 0; c < j->k; c++) {
            float dd = l2(xi, j->c + (size_t)c * j->d, j->d);
            if (dd < best) {
                best = dd;
                bi = c;
            }
        }
        j->out[i] = bi;
        err += best;
    }
    *j->err = (float)err;
    return NULL;
}

/* Nearest centroid of each of n points (threads share the range). */
static void assign_all(const float *x, uint32_t n, uint32_t d, const float *c, uint32_t k,
                       uint32_t *out, uint32_t threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > 16)
        threads = 16;
    struct assign_job jobs[16];
    float errs[16];
    pthread_t th[16];
    uint32_t started = 0;
    for (uint32_t t = 0; t < threads; t++) {
        jobs[t] = (struct assign_job){x,
                                      c,
                                      n,
                                      d,
                                      k,
                                      (uint32_t)((uint64_t)n * t / threads),
                                      (uint32_t)((uint64_t)n * (t + 1) / threads),
                                      out,
                                      &errs[t]};
        if (t > 0 && pthread_create(&th[t], NULL, assign_range, &jobs[t]) == 0)
            started |= 1u << t;
        else if (t > 0)
            assign_range(&jobs[t]);
    }
    assign_range(&jobs[0]);
    for (uint32_t t = 1; t < threads; t++)
        if (started & (1u << t))
            pthread_join(th[t], NULL);
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Lloyd's k-means: random distinct initial points, empty clusters re-seeded by splitting the
 * largest one. x: n * d; c: k * d out. */
static int kmeans(const float *x, uint32_t n, uint32_t d, uint32_t k, uint32_t iters, uint64_t seed,
                  uint32_t threads, float *c)
{
    uint32_t *a = malloc((size_t)n * sizeof(*a));
    uint32_t *cnt = malloc((size_t)k * sizeof(*cnt));
    double *sum = malloc((size_t)k * d * sizeof(*sum));
    uint32_t *perm = malloc((size_t)n * sizeof(*perm));
    if (a == NULL || cnt == NULL || sum == NULL || perm == NULL) {
        free(a);
        free(cnt);
        free(sum);
        free(perm);
        return ST_ENOMEM;
    }
    uint64_t s = seed ? seed : 1;
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = 0; i < k && i < n; i++) {
        uint32_t j = i + (uint32_t)(xs(&s) % (n - i));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(c + (size_t)i * d, x + (size_t)perm[i] * d, d * sizeof(float));
    }
    for (uint32_t it = 0; it < iters; it++) {
        assign_all(x, n, d, c, k, a, threads);
        memset(cnt, 0, k * sizeof(*cnt));
        memset(sum, 0, (size_t)k * d * sizeof(*sum));
        for (uint32_t i = 0; i < n; i++) {
            cnt[a[i]]++;
            const float *xi = x + (size_t)i * d;
            double *si = sum + (size_t)a[i] * d;
            for (uint32_t j = 0; j < d; j++)
                si[j] += xi[j];
        }
        for (uint32_t ci = 0; ci < k; ci++) {
            if (cnt[ci] == 0)
                continue;
            for (uint32_t j = 0; j < d; j++)
                c[(size_t)ci * d + j] = (float)(sum[(size_t)ci * d + j] / cnt[ci]);
        }
        for (uint32_t ci = 0; ci < k; ci++) {
            if (cnt[ci] != 0)
                continue;
            uint32_t big = 0;
            for (uint32_t cj = 1; cj < k; cj++)
                if (cnt[cj] > cnt[big])
                    big = cj;
            for (uint32_t j = 0; j < d; j++) {
                float v = c[(size_t)big * d + j];
                float eps = (v != 0 ? fabsf(v) : 1.0f) * 1e-4f;
                c[(size_t)ci * d + j] = v + eps;
                c[(size_t)big * d + j] = v - eps;
            }
            cnt[ci] = cnt[big] / 2;
            cnt[big] -= cnt[ci];
        }
    }
    free(a);
    free(cnt);
    free(sum);
    free(perm);
    return ST_OK;
}

/* ---- build --------------------------------------------------------------------------------- */

static uint32_t nearest(const float *v, const float *c, uint32_t k, uint32_t d, idx_dist_fn l2)
{
    float best = INFINITY;
    uint32_t bi = 0;
    for (uint32_t i = 0; i < k; i++) {
        float dd = l2(v, c + (size_t)i * d, d);
        if (dd < best) {
            best = dd;
            bi = i;
        }
    }
    return bi;
}

static int list_add(struct ivf_list *l, uint32_t id, const uint8_t *code, uint32_t m)
{
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        uint32_t *ids = realloc(l->ids, cap * sizeof(*ids));
        if (ids == NULL)
            return ST_ENOMEM;
        l->ids = ids;
        uint8_t *codes = realloc(l->codes, (size_t)cap * m);
        if (codes == NULL)
            return ST_ENOMEM;
        l->codes = codes;
        l->cap = cap;
    }
    l->ids[l->n] = id;
    memcpy(l->codes + (size_t)l->n * m, code, m);
    l->n++;
    return ST_OK;
}

int idx_ivfpq_build(const struct idx_ivfpq_opts *o, const float *vecs, uint32_t n,
                    struct idx_ivfpq **out)
{
    *out = NULL;
    uint32_t nbits = o->nbits ? o->nbits : 8;
    if (nbits == 4)
        return ST_EUNSUPP; /* 4-bit fast-scan codes: refused until they exist (README) */
    if (o->dim == 0 || nbits != 8 || n == 0)
        return ST_EINVAL;
    uint32_t m = o->m;
    if (m == 0) {
        static const uint32_t sub[] = {8, 4, 2, 1};
        for (size_t i = 0; i < 4 && m == 0; i++)
            if (o->dim % sub[i] == 0)
                m = o->dim / sub[i];
    }
    if (o->dim % m != 0)
        return ST_EINVAL;
    struct idx_ivfpq *ix = calloc(1, sizeof(*ix));
    if (ix == NULL)
        return ST_ENOMEM;
    ix->dim = o->dim;
    ix->m = m;
    ix->dsub = o->dim / m;
    ix->metric = o->metric;
    ix->nlist = o->nlist ? o->nlist : 1024;
    if (ix->nlist > n)
        ix->nlist = n;
    ix->dist = idx_metric_fn(idx_kernels(), o->metric);
    uint32_t iters = o->iterations ? o->iterations : 12;
    uint32_t threads = o->threads ? o->threads : 1;
    uint64_t seed = o->seed ? o->seed : 12345;
    uint32_t ntrain = o->train_size ? o->train_size : 256 * ix->nlist;
    if (ntrain > n)
        ntrain = n;
    if (ntrain < KSUB && n >= KSUB)
        ntrain = KSUB;
    int rc = ST_ENOMEM;
    float *train = malloc((size_t)ntrain * ix->dim * sizeof(float));
    float *resid = malloc((size_t)ntrain * ix->dim * sizeof(float));
    float *subv = malloc((size_t)ntrain * ix->dsub * sizeof(float));
    uint32_t *asg = malloc((size_t)(ntrain > n ? ntrain : n) * sizeof(uint32_t));
    uint8_t *code = malloc(m);
    float *r = malloc(ix->dim * sizeof(float));
    ix->centroids = malloc((size_t)ix->nlist * ix->dim * sizeof(float));
    ix->codebooks = calloc((size_t)m * KSUB * ix->dsub, sizeof(float));
    ix->lists = calloc(ix->nlist, sizeof(*ix->lists));
    if (!train || !resid || !subv || !asg || !code || !r || !ix->centroids || !ix->codebooks ||
        !ix->lists)
        goto out;
    /* A deterministic sample without replacement (partial Fisher-Yates over row numbers). */
    uint32_t *perm = malloc((size_t)n * sizeof(*perm));
    if (perm == NULL)
        goto out;
    uint64_t s = seed;
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = 0; i < ntrain; i++) {
        uint32_t j = i + (uint32_t)(xs(&s) % (n - i));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        memcpy(train + (size_t)i * ix->dim, vecs + (size_t)perm[i] * ix->dim,
               ix->dim * sizeof(float));
    }
    free(perm);
    if ((rc = kmeans(train, ntrain, ix->dim, ix->nlist, iters, seed, threads, ix->centroids)) !=
        ST_OK)
        goto out;
    /* Residuals of the sample, then one codebook per sub-space. */
    assign_all(train, ntrain, ix->dim, ix->centroids, ix->nlist, asg, threads);
    for (uint32_t i = 0; i < ntrain; i++)
        for (uint32_t d = 0; d < ix->dim; d++)
            resid[(size_t)i * ix->dim + d] =
                train[(size_t)i * ix->dim + d] - ix->centroids[(size_t)asg[i] * ix->dim + d];
    uint32_t k = ntrain < KSUB ? ntrain : KSUB;
    for (uint32_t j = 0; j < m; j++) {
        for (uint32_t i = 0; i < ntrain; i++)
            memcpy(subv + (size_t)i * ix->dsub, resid + (size_t)i * ix->dim + (size_t)j * ix->dsub,
                   ix->dsub * sizeof(float));
        if ((rc = kmeans(subv, ntrain, ix->dsub, k, iters, seed + j + 1, 1,
                         ix->codebooks + (size_t)j * KSUB * ix->dsub)) != ST_OK)
            goto out;
        /* Unused slots (tiny training sets) repeat slot 0 so they are never closer. */
        for (uint32_t c = k; c < KSUB; c++)
            memcpy(ix->codebooks + ((size_t)j * KSUB + c) * ix->dsub,
                   ix->codebooks + (size_t)j * KSUB * ix->dsub, ix->dsub * sizeof(float));
    }
    /* Encode everything. */
    assign_all(vecs, n, ix->dim, ix->centroids, ix->nlist, asg, threads);
    idx_dist_fn l2 = idx_kernels()->l2sq;
    for (uint32_t i = 0; i < n; i++) {
        const float *v = vecs + (size_t)i * ix->dim;
        const float *c = ix->centroids + (size_t)asg[i] * ix->dim;
        for (uint32_t d = 0; d < ix->dim; d++)
            r[d] = v[d] - c[d];
        for (uint32_t j = 0; j < m; j++)
            code[j] =
                (uint8_t)nearest(r + (size_t)j * ix->dsub,
                                 ix->codebooks + (size_t)j * KSUB * ix->dsub, KSUB, ix->dsub, l2);
        if ((rc = list_add(&ix->lists[asg[i]], i, code, m)) != ST_OK)
            goto out;
    }
    ix->n = n;
    rc = ST_OK;
out:
    free(train);
    free(resid);
    free(subv);
    free(asg);
    free(code);
    free(r);
    if (rc != ST_OK)
        idx_ivfpq_free(ix);
    else
        *out = ix;
    return rc;
}

void idx_ivfpq_free(struct idx_ivfpq *ix)
{
    if (ix == NULL)
        return;
    if (ix->map != NULL) {
        munmap(ix->map, ix->map_len);
    } else {
        for (uint32_t i = 0; ix->lists != NULL && i < ix->nlist; i++) {
            free(ix->lists[i].ids);
            free(ix->lists[i].codes);
        }
        free(ix->centroids);
        free(ix->codebooks);
    }
    free(ix->lists);
    free(ix);
}

size_t idx_ivfpq_memory(const struct idx_ivfpq *ix)
{
    size_t b = (size_t)ix->nlist * ix->dim * 4 + (size_t)ix->m * KSUB * ix->dsub * 4;
    for (uint32_t i = 0; i < ix->nlist; i++)
        b += (size_t)ix->lists[i].cap * (4 + ix->m);
    return b;
}

/* ---- search -------------------------------------------------------------------------------- */

struct idx_ivfpq_searcher {
    const struct idx_ivfpq *ix;
    float *table; /* m * KSUB */
    float *r;     /* residual query */
    struct idx_hit *coarse;
    struct idx_hit *cand;
    size_t cand_cap;
};

struct idx_ivfpq_searcher *idx_ivfpq_searcher_new(const struct idx_ivfpq *ix)
{
    struct idx_ivfpq_searcher *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->ix = ix;
    s->table = malloc((size_t)ix->m * KSUB * sizeof(float));
    s->r = malloc(ix->dim * sizeof(float));
    s->coarse = malloc(ix->nlist * sizeof(*s->coarse));
    if (!s->table || !s->r || !s->coarse) {
        idx_ivfpq_searcher_free(s);
        return NULL;
    }
    return s;
}

void idx_ivfpq_searcher_free(struct idx_ivfpq_searcher *s)
{
    if (s == NULL)
        return;
    free(s->table);
    free(s->r);
    free(s->coarse);
    free(s->cand);
    free(s);
}

/* Max-heap of the best `cap` hits (root = worst kept). */
static void hit_push(struct idx_hit *h, size_t *n, size_t cap, struct idx_hit x)
{
    if (*n < cap) {
        size_t i = (*n)++;
        while (i > 0 && h[(i - 1) / 2].dist < x.dist) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = x;
        return;
    }
    if (x.dist >= h[0].dist)
        return;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, b = i;
        float bd = x.dist;
        if (l < *n && h[l].dist > bd) {
            b = l;
            bd = h[l].dist;
        }
        if (l + 1 < *n && h[l + 1].dist > bd)
            b = l + 1;
        if (b == i)
            break;
        h[i] = h[b];
        i = b;
    }
    h[i] = x;
}

static int hit_cmp(const void *a, const void *b)
{
    const struct idx_hit *x = a, *y = b;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

size_t idx_ivfpq_search(struct idx_ivfpq_searcher *s, const float *q, uint32_t k, uint32_t nprobe,
                        uint32_t rerank, const float *raw, idx_filter_fn filter, void *fctx,
                        struct idx_hit *out)
{
    const struct idx_ivfpq *ix = s->ix;
    if (k == 0 || ix->n == 0)
        return 0;
    if (nprobe == 0)
        nprobe = 1;
    if (nprobe > ix->nlist)
        nprobe = ix->nlist;
    size_t keep = raw != NULL && rerank > k ? rerank : k;
    if (keep > s->cand_cap) {
        struct idx_hit *c = realloc(s->cand, keep * sizeof(*c));
        if (c == NULL)
            return 0;
        s->cand = c;
        s->cand_cap = keep;
    }
    /* Coarse: the nprobe closest lists. */
    size_t nc = idx_exact_topk(q, ix->centroids, ix->nlist, ix->dim, ix->metric, nprobe, NULL, NULL,
                               s->coarse);
    idx_dist_fn l2 = idx_kernels()->l2sq, dot = idx_kernels()->dot;
    bool is_l2 = ix->metric == IDX_L2;
    if (!is_l2) {
        /* -<q, c + r> = -<q, c> - sum_j <q_j, cb_j>: one table for every list. */
        for (uint32_t j = 0; j < ix->m; j++)
            for (uint32_t c = 0; c < KSUB; c++)
                s->table[j * KSUB + c] =
                    -dot(q + (size_t)j * ix->dsub,
                         ix->codebooks + ((size_t)j * KSUB + c) * ix->dsub, ix->dsub);
    }
    size_t nk = 0;
    for (size_t p = 0; p < nc; p++) {
        uint32_t li = s->coarse[p].id;
        const struct ivf_list *l = &ix->lists[li];
        if (l->n == 0)
            continue;
        float base = 0;
        if (is_l2) {
            const float *c = ix->centroids + (size_t)li * ix->dim;
            for (uint32_t d = 0; d < ix->dim; d++)
                s->r[d] = q[d] - c[d];
            for (uint32_t j = 0; j < ix->m; j++)
                for (uint32_t c2 = 0; c2 < KSUB; c2++)
                    s->table[j * KSUB + c2] =
                        l2(s->r + (size_t)j * ix->dsub,
                           ix->codebooks + ((size_t)j * KSUB + c2) * ix->dsub, ix->dsub);
        } else {
            base = s->coarse[p].dist; /* -<q, c> */
        }
        for (uint32_t e = 0; e < l->n; e++) {
            const uint8_t *code = l->codes + (size_t)e * ix->m;
            if (e + 1 < l->n)
                __builtin_prefetch(code + ix->m);
            float d = base;
            for (uint32_t j = 0; j < ix->m; j++)
                d += s->table[j * KSUB + code[j]];
            if (nk == keep && d >= s->cand[0].dist)
                continue;
            if (filter != NULL && !filter(fctx, l->ids[e]))
                continue;
            hit_push(s->cand, &nk, keep, (struct idx_hit){l->ids[e], d});
        }
    }
    if (keep > k) {
        /* Exact re-ranking from the raw vectors. */
        for (size_t i = 0; i < nk; i++)
            s->cand[i].dist = ix->dist(q, raw + (size_t)s->cand[i].id * ix->dim, ix->dim);
    }
    qsort(s->cand, nk, sizeof(*s->cand), hit_cmp);
    size_t n = nk < k ? nk : k;
    memcpy(out, s->cand, n * sizeof(*out));
    return n;
}

/* ---- files --------------------------------------------------------------------------------- */

int idx_ivfpq_save(const struct idx_ivfpq *ix, const char *path, struct st_err *err)
{
    struct idx_file_out o = {0};
    struct st_hash_stream *h1 = st_hash_stream_new(), *h2 = st_hash_stream_new();
    int rc = ST_ENOMEM;
    if (h1 == NULL || h2 == NULL || (rc = idx_file_begin(&o, path, err)) != ST_OK)
        goto out;
    struct store_file *f = o.f;
    uint8_t hd[IDX_IVFPQ_HEADER] = {0};
    memcpy(hd, IDX_IVFPQ_MAGIC, 8);
    st_put_le32(hd + 8, IDX_IVFPQ_VERSION);
    st_put_le32(hd + 12, ix->dim);
    st_put_le32(hd + 16, ix->nlist);
    st_put_le32(hd + 20, ix->m);
    st_put_le32(hd + 24, 8);
    st_put_le32(hd + 28, (uint32_t)ix->metric);
    st_put_le32(hd + 32, ix->n);
    st_put_le32(hd + 60, st_checksum32(hd, 60));
    size_t cb = (size_t)ix->nlist * ix->dim * 4, kb = (size_t)ix->m * KSUB * ix->dsub * 4;
    st_hash_stream_update(h1, ix->centroids, cb);
    st_hash_stream_update(h1, ix->codebooks, kb);
    if ((rc = store_fs_write(f, hd, sizeof(hd), "idx.ivfpq.write")) != ST_OK ||
        (rc = store_fs_write(f, ix->centroids, cb, "idx.ivfpq.write")) != ST_OK ||
        (rc = store_fs_write(f, ix->codebooks, kb, "idx.ivfpq.write")) != ST_OK)
        goto io;
    for (uint32_t i = 0; i < ix->nlist; i++) {
        uint8_t b[4];
        st_put_le32(b, ix->lists[i].n);
        st_hash_stream_update(h2, b, 4);
        if ((rc = store_fs_write(f, b, 4, "idx.ivfpq.write")) != ST_OK)
            goto io;
    }
    for (uint32_t i = 0; i < ix->nlist; i++) {
        const struct ivf_list *l = &ix->lists[i];
        size_t cl = (size_t)l->n * ix->m, pad = (4 - cl % 4) % 4;
        static const uint8_t zero[4];
        st_hash_stream_update(h2, l->ids, (size_t)l->n * 4);
        st_hash_stream_update(h2, l->codes, cl);
        st_hash_stream_update(h2, zero, pad);
        if ((l->n > 0 &&
             ((rc = store_fs_write(f, l->ids, (size_t)l->n * 4, "idx.ivfpq.write")) != ST_OK ||
              (rc = store_fs_write(f, l->codes, cl, "idx.ivfpq.write")) != ST_OK)) ||
            (pad > 0 && (rc = store_fs_write(f, zero, pad, "idx.ivfpq.write")) != ST_OK))
            goto io;
    }
    uint8_t ft[IDX_IVFPQ_FOOTER] = {0};
    memcpy(ft, IDX_IVFPQ_FOOTER_MAGIC, 8);
    st_put_le32(ft + 8, (uint32_t)st_hash_stream_digest(h1));
    st_put_le32(ft + 12, (uint32_t)st_hash_stream_digest(h2));
    st_put_le64(ft + 16, f->size + IDX_IVFPQ_FOOTER);
    st_put_le32(ft + 28, st_checksum32(ft, 28));
    if ((rc = store_fs_write(f, ft, sizeof(ft), "idx.ivfpq.write")) != ST_OK)
        goto io;
    rc = idx_file_publish(&o, err);
    goto out;
io:
    st_err_set(err, rc, "%s: writing the index: %s", path, st_strerror(rc));
out:
    idx_file_abort(&o);
    st_hash_stream_free(h1);
    st_hash_stream_free(h2);
    return rc;
}

int idx_ivfpq_load(const char *path, struct idx_ivfpq **out, struct st_err *err)
{
    *out = NULL;
    void *map;
    size_t len;
    int mrc = idx_file_map(path, IDX_IVFPQ_HEADER + IDX_IVFPQ_FOOTER, &map, &len, err);
    if (mrc != ST_OK)
        return mrc;
    uint8_t *m = map;
    const uint8_t *ft = m + len - IDX_IVFPQ_FOOTER;
    struct idx_ivfpq *ix = calloc(1, sizeof(*ix));
    int rc = ST_OK;
    if (ix == NULL) {
        munmap(map, len);
        return ST_ENOMEM;
    }
    ix->map = map;
    ix->map_len = len;
    if (memcmp(m, IDX_IVFPQ_MAGIC, 8) != 0 || st_get_le32(m + 60) != st_checksum32(m, 60)) {
        rc = idx_file_corrupt(err, path, 0, "bad header");
        goto fail;
    }
    if (st_get_le32(m + 8) != IDX_IVFPQ_VERSION || st_get_le32(m + 24) != 8) {
        rc = st_err_set(err, ST_EUNSUPP, "%s: index version/nbits not supported", path);
        goto fail;
    }
    if (memcmp(ft, IDX_IVFPQ_FOOTER_MAGIC, 8) != 0 ||
        st_get_le32(ft + 28) != st_checksum32(ft, 28) || st_get_le64(ft + 16) != len) {
        rc = idx_file_corrupt(err, path, len - IDX_IVFPQ_FOOTER, "bad footer (truncated file?)");
        goto fail;
    }
    ix->dim = st_get_le32(m + 12);
    ix->nlist = st_get_le32(m + 16);
    ix->m = st_get_le32(m + 20);
    ix->metric = (enum idx_metric)st_get_le32(m + 28);
    ix->n = st_get_le32(m + 32);
    size_t body = len - IDX_IVFPQ_HEADER - IDX_IVFPQ_FOOTER;
    if (ix->dim == 0 || ix->m == 0 || ix->dim % ix->m != 0 || ix->nlist == 0 ||
        ix->metric > IDX_COSINE || (uint64_t)ix->nlist * ix->dim * 4 > body) {
        rc = idx_file_corrupt(err, path, 12, "header values out of range");
        goto fail;
    }
    ix->dsub = ix->dim / ix->m;
    size_t cb = (size_t)ix->nlist * ix->dim * 4, kb = (size_t)ix->m * KSUB * ix->dsub * 4;
    if (cb + kb + (size_t)ix->nlist * 4 > body) {
        rc = idx_file_corrupt(err, path, 12, "header values out of range");
        goto fail;
    }
    uint8_t *p = m + IDX_IVFPQ_HEADER, *end = m + len - IDX_IVFPQ_FOOTER;
    if (st_checksum32(p, cb + kb) != st_get_le32(ft + 8)) {
        rc = idx_file_corrupt(err, path, IDX_IVFPQ_HEADER, "centroid/codebook checksum mismatch");
        goto fail;
    }
    if (st_checksum32(p + cb + kb, (size_t)(end - (p + cb + kb))) != st_get_le32(ft + 12)) {
        rc = idx_file_corrupt(err, path, IDX_IVFPQ_HEADER + cb + kb, "lists checksum mismatch");
        goto fail;
    }
    ix->centroids = (float *)(void *)p;
    ix->codebooks = (float *)(void *)(p + cb);
    const uint8_t *sizes = p + cb + kb;
    uint8_t *q = p + cb + kb + (size_t)ix->nlist * 4;
    ix->lists = calloc(ix->nlist, sizeof(*ix->lists));
    if (ix->lists == NULL) {
        rc = ST_ENOMEM;
        goto fail;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < ix->nlist; i++) {
        uint32_t cnt = st_get_le32(sizes + (size_t)i * 4);
        size_t cl = (size_t)cnt * ix->m, need = (size_t)cnt * 4 + cl + (4 - cl % 4) % 4;
        if ((size_t)(end - q) < need) {
            rc = idx_file_corrupt(err, path, (uint64_t)(q - m), "list past the end");
            goto fail;
        }
        ix->lists[i] = (struct ivf_list){(uint32_t *)(void *)q, q + (size_t)cnt * 4, cnt, cnt};
        for (uint32_t e = 0; e < cnt; e++)
            if (ix->lists[i].ids[e] >= ix->n) {
                rc = idx_file_corrupt(err, path, (uint64_t)(q - m) + (uint64_t)e * 4,
                                      "id out of range");
                goto fail;
            }
        q += need;
        total += cnt;
    }
    if (q != end || total != ix->n) {
        rc = idx_file_corrupt(err, path, (uint64_t)(q - m), "list sizes disagree with n");
        goto fail;
    }
    ix->dist = idx_metric_fn(idx_kernels(), ix->metric);
    *out = ix;
    return ST_OK;
fail:
    idx_ivfpq_free(ix);
    return rc;
}
