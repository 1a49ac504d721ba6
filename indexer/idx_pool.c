/* idx_pool.c — see idx_pool.h. */
#include "idx_pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"

/* One caller's run: the tickets it offered and the helpers running fn now. */
struct run {
    void (*fn)(void *arg);
    void *arg;
    uint32_t running; /* helpers inside fn (under the pool's mutex) */
};

struct idx_pool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a ticket was offered, or stop */
    pthread_cond_t done; /* a helper left a run */
    struct run **queue;  /* offered tickets (a run appears once per helper it asked for) */
    size_t nq, capq;
    bool stop;
    pthread_t *th;
    uint32_t nth;
};

static void *worker(void *arg)
{
    struct idx_pool *p = arg;
    (void)pthread_setname_np(pthread_self(), "idx-search");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->nq == 0)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        struct run *r = p->queue[0]; /* oldest offer first */
        memmove(p->queue, p->queue + 1, --p->nq * sizeof(*p->queue));
        r->running++;
        pthread_mutex_unlock(&p->mu);
        r->fn(r->arg);
        pthread_mutex_lock(&p->mu);
        if (--r->running == 0)
            pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int idx_pool_new(uint32_t threads, struct idx_pool **out)
{
    *out = NULL;
    if (threads == 0)
        threads = 1;
    struct idx_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return ST_ENOMEM;
    p->capq = 4 * (size_t)threads;
    p->queue = malloc(p->capq * sizeof(*p->queue));
    p->th = calloc(threads, sizeof(*p->th));
    if (p->queue == NULL || p->th == NULL) {
        free(p->queue);
        free(p->th);
        free(p);
        return ST_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (; p->nth < threads; p->nth++)
        if (pthread_create(&p->th[p->nth], NULL, worker, p) != 0)
            break;
    if (p->nth == 0) {
        idx_pool_free(p);
        return ST_EIO;
    }
    if (p->nth < threads)
        st_log_warn("indexer", "search threads: %u of %u started", p->nth, threads);
    *out = p;
    return ST_OK;
}

void idx_pool_free(struct idx_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->nth; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->queue);
    free(p->th);
    free(p);
}

uint32_t idx_pool_threads(const struct idx_pool *p)
{
    return p != NULL ? p->nth : 0;
}

void idx_pool_run(struct idx_pool *p, uint32_t helpers, void (*fn)(void *arg), void *arg)
{
    struct run r = {fn, arg, 0};
    if (p != NULL && helpers > 0) {
        pthread_mutex_lock(&p->mu);
        /* Offered only where the queue has room: a pool busy with other callers' tickets
         * leaves this one to work alone rather than wait. */
        uint32_t offered = 0;
        for (; offered < helpers && offered < p->nth && p->nq < p->capq; offered++)
            p->queue[p->nq++] = &r;
        if (offered > 0)
            pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg);
    if (p == NULL || helpers == 0)
        return;
    pthread_mutex_lock(&p->mu);
    /* Withdraw the tickets no helper took, then wait for those that did. */
    size_t k = 0;
    for (size_t i = 0; i < p->nq; i++)
        if (p->queue[i] != &r)
            p->queue[k++] = p->queue[i];
    p->nq = k;
    while (r.running > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
