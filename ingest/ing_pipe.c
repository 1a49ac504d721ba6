/* The bounded in-order worker hand-off (ing_pipe.h): a ring of item pointers, each with a done
 * flag; workers claim items in push order, the owner pops them in push order once done. */
#include "ing_pipe.h"

#include <pthread.h>
#include <stdlib.h>

#include "st_clock.h"

struct ing_pipe {
    ing_pipe_fn fn;
    void *ctx;
    pthread_t *workers;
    size_t nworkers;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* the worker waits for items */
    pthread_cond_t done_cv; /* the owner waits for the oldest item */
    void **ring;
    bool *done; /* ring[i]'s item has been through fn (guarded by mu) */
    size_t depth;
    /* Monotonic counts (guarded by mu): items pushed, items claimed by a worker, items popped.
     * popped <= claimed <= pushed <= popped + depth; item k is at ring[k % depth]. */
    size_t pushed, claimed, popped;
    bool stop;
};

static void *worker_main(void *arg)
{
    struct ing_pipe *p = arg;
    /* Named by itself (top -H, perf): naming another thread makes glibc open
     * /proc/self/task/TID/comm for writing, a write outside data_dir for the unit's sandbox
     * (ops_sandbox_trace); a thread naming itself is a prctl. */
    (void)pthread_setname_np(pthread_self(), "ing-pipe");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->claimed == p->pushed && !p->stop)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->claimed == p->pushed)
            break; /* stopped with nothing left */
        size_t k = p->claimed++ % p->depth;
        void *item = p->ring[k];
        pthread_mutex_unlock(&p->mu);
        p->fn(p->ctx, item);
        pthread_mutex_lock(&p->mu);
        p->done[k] = true;
        pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ing_pipe_open(size_t depth, size_t workers, ing_pipe_fn fn, void *ctx, struct ing_pipe **out)
{
    *out = NULL;
    if (depth == 0 || workers == 0 || fn == NULL)
        return ST_EINVAL;
    struct ing_pipe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return ST_ENOMEM;
    p->ring = calloc(depth, sizeof(*p->ring));
    p->done = calloc(depth, sizeof(*p->done));
    p->workers = calloc(workers, sizeof(*p->workers));
    if (p->ring == NULL || p->done == NULL || p->workers == NULL) {
        free(p->ring);
        free(p->done);
        free(p->workers);
        free(p);
        return ST_ENOMEM;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->depth = depth;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    st_cond_init_mono(&p->done_cv);
    for (; p->nworkers < workers; p->nworkers++)
        if (pthread_create(&p->workers[p->nworkers], NULL, worker_main, p) != 0) {
            ing_pipe_close(p); /* stops the ones started */
            return ST_ENOMEM;
        }
    *out = p;
    return ST_OK;
}

size_t ing_pipe_count(const struct ing_pipe *p)
{
    /* pushed and popped change only on the owner's thread, the caller. */
    return p->pushed - p->popped;
}

bool ing_pipe_full(const struct ing_pipe *p)
{
    return ing_pipe_count(p) >= p->depth;
}

void ing_pipe_push(struct ing_pipe *p, void *item)
{
    pthread_mutex_lock(&p->mu);
    p->ring[p->pushed % p->depth] = item;
    p->pushed++;
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

void *ing_pipe_pop(struct ing_pipe *p, int timeout_ms)
{
    pthread_mutex_lock(&p->mu);
    if (p->popped == p->pushed) {
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    int64_t deadline = st_clock_mono_ns(NULL) / 1000000 + timeout_ms;
    size_t k = p->popped % p->depth;
    while (!p->done[k]) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&p->done_cv, &p->mu);
            continue;
        }
        int64_t left = deadline - st_clock_mono_ns(NULL) / 1000000;
        if (left <= 0)
            break;
        st_cond_wait_ms(&p->done_cv, &p->mu, left);
    }
    void *item = NULL;
    if (p->done[k]) {
        item = p->ring[k];
        p->done[k] = false;
        p->popped++;
    }
    pthread_mutex_unlock(&p->mu);
    return item;
}

void ing_pipe_close(struct ing_pipe *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nworkers; i++)
        pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->ring);
    free(p->done);
    free(p->workers);
    free(p);
}
