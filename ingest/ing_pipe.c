/* The bounded in-order worker hand-off (ing_pipe.h): a ring of item pointers. */
#include "ing_pipe.h"

#include <pthread.h>
#include <stdlib.h>

#include "st_clock.h"

struct ing_pipe {
    ing_pipe_fn fn;
    void *ctx;
    pthread_t worker;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* the worker waits for items */
    pthread_cond_t done_cv; /* the owner waits for the oldest item */
    void **ring;
    size_t depth;
    /* Monotonic counts (guarded by mu): items pushed, items fn finished, items popped.
     * popped <= done <= pushed <= popped + depth; item k is at ring[k % depth]. */
    size_t pushed, done, popped;
    bool stop;
};

static void *worker_main(void *arg)
{
    struct ing_pipe *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->done == p->pushed && !p->stop)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->done == p->pushed)
            break; /* stopped with nothing left */
        void *item = p->ring[p->done % p->depth];
        pthread_mutex_unlock(&p->mu);
        p->fn(p->ctx, item);
        pthread_mutex_lock(&p->mu);
        p->done++;
        pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int ing_pipe_open(size_t depth, ing_pipe_fn fn, void *ctx, struct ing_pipe **out)
{
    *out = NULL;
    if (depth == 0 || fn == NULL)
        return ST_EINVAL;
    struct ing_pipe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return ST_ENOMEM;
    p->ring = calloc(depth, sizeof(*p->ring));
    if (p->ring == NULL) {
        free(p);
        return ST_ENOMEM;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->depth = depth;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    st_cond_init_mono(&p->done_cv);
    if (pthread_create(&p->worker, NULL, worker_main, p) != 0) {
        pthread_cond_destroy(&p->done_cv);
        pthread_cond_destroy(&p->work_cv);
        pthread_mutex_destroy(&p->mu);
        free(p->ring);
        free(p);
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
    while (p->done == p->popped) {
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
    if (p->done > p->popped)
        item = p->ring[p->popped++ % p->depth];
    pthread_mutex_unlock(&p->mu);
    return item;
}

void ing_pipe_close(struct ing_pipe *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->worker, NULL);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->ring);
    free(p);
}
