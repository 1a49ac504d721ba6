/*
 * The reclaimer: files the manifest no longer lists are removed on a thread of their own.
 *
 * Dropping a window is one manifest edit, but giving its space back is not free: unlinking a
 * file makes the kernel free every page and extent of it (ext4_evict_inode, truncating the page
 * cache), about 0.2 s per GB here, and unmapping a large mapping tears down its page tables.
 * Done where the last reference went (a TTL or FIFO tick, a merge, a search releasing its
 * snapshot) that cost grew with the window and stalled whatever held the tick. Queued here, a
 * drop costs the edit; the space comes back a moment later. The order a crash can see is
 * unchanged: the manifest edit is durable before anything is queued, and a file left behind
 * (a crash before its unlink) is an orphan that the next open removes.
 */
#include <stdlib.h>
#include <time.h>

#include "store_int.h"

struct store_reclaim_job {
    struct store_reclaim_job *next;
    struct store_segment *seg; /* a doomed segment's last reference, or */
    char *path;                /* a file to unlink */
    const char *site;          /* its fault-injection site */
    uint64_t bytes;
};

static void run_job(struct store_reclaim *rq, struct store_reclaim_job *j)
{
    if (j->seg != NULL)
        store_segment_release(j->seg);
    else
        store_best_effort(store_fs_unlink(rq->fs, j->path, j->site));
    free(j->path);
    free(j);
}

static void *reclaim_main(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-reclaim"); /* by itself: a prctl (ing_pipe.c) */
    struct store_reclaim *rq = arg;
    pthread_mutex_lock(&rq->mu);
    for (;;) {
        struct store_reclaim_job *j = rq->head;
        if (j == NULL) {
            if (rq->stop)
                break;
            pthread_cond_wait(&rq->cv, &rq->mu);
            continue;
        }
        rq->head = j->next;
        if (rq->head == NULL)
            rq->tail = NULL;
        pthread_mutex_unlock(&rq->mu);
        bool unlink = j->seg == NULL;
        uint64_t bytes = j->bytes;
        run_job(rq, j); /* a segment's own release counts its bytes off (doomed_bytes) */
        pthread_mutex_lock(&rq->mu);
        rq->pending--;
        if (unlink) {
            rq->unlink_files--;
            rq->unlink_bytes -= bytes;
        }
        rq->done++;
        pthread_cond_broadcast(&rq->idle_cv);
    }
    pthread_mutex_unlock(&rq->mu);
    return NULL;
}

struct store_reclaim *store_reclaim_new(struct store_fs *fs)
{
    struct store_reclaim *rq = calloc(1, sizeof(*rq));
    if (rq == NULL)
        return NULL;
    rq->fs = fs;
    atomic_init(&rq->refs, 1);
    pthread_mutex_init(&rq->mu, NULL);
    pthread_cond_init(&rq->cv, NULL);
    store_cond_init_mono(&rq->idle_cv);
    return rq;
}

void store_reclaim_ref(struct store_reclaim *rq)
{
    atomic_fetch_add(&rq->refs, 1);
}

void store_reclaim_doomed(struct store_reclaim *rq, int sign, uint64_t bytes)
{
    pthread_mutex_lock(&rq->mu);
    if (sign > 0) {
        rq->doomed_files++;
        rq->doomed_bytes += bytes;
    } else {
        rq->doomed_files--;
        rq->doomed_bytes -= bytes;
    }
    pthread_mutex_unlock(&rq->mu);
}

void store_reclaim_unref(struct store_reclaim *rq)
{
    if (rq == NULL || atomic_fetch_sub(&rq->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&rq->mu);
    pthread_cond_destroy(&rq->cv);
    pthread_cond_destroy(&rq->idle_cv);
    free(rq);
}

int store_reclaim_start(struct store_reclaim *rq)
{
    if (pthread_create(&rq->thread, NULL, reclaim_main, rq) != 0)
        return ST_ENOMEM;
    rq->running = true;
    return ST_OK;
}

void store_reclaim_stop(struct store_reclaim *rq)
{
    if (rq == NULL || !rq->running)
        return;
    pthread_mutex_lock(&rq->mu);
    rq->stop = true; /* it empties the queue first; later work is done inline */
    pthread_cond_signal(&rq->cv);
    pthread_mutex_unlock(&rq->mu);
    pthread_join(rq->thread, NULL);
    pthread_mutex_lock(&rq->mu);
    rq->running = false;
    pthread_mutex_unlock(&rq->mu);
}

static bool push(struct store_reclaim *rq, struct store_segment *seg, char *path, const char *site,
                 uint64_t bytes)
{
    if (rq == NULL)
        return false;
    struct store_reclaim_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return false; /* the caller does it itself */
    *j = (struct store_reclaim_job){NULL, seg, path, site, bytes};
    pthread_mutex_lock(&rq->mu);
    bool ok = rq->running && !rq->stop;
    if (ok) {
        if (rq->tail != NULL)
            rq->tail->next = j;
        else
            rq->head = j;
        rq->tail = j;
        rq->pending++;
        if (seg == NULL) {
            rq->unlink_files++;
            rq->unlink_bytes += bytes;
        }
        pthread_cond_signal(&rq->cv);
    }
    pthread_mutex_unlock(&rq->mu);
    if (!ok)
        free(j);
    return ok;
}

bool store_reclaim_segment(struct store_reclaim *rq, struct store_segment *g)
{
    return push(rq, g, NULL, NULL, 0); /* its bytes count from its doom to its release */
}

void store_reclaim_unlink(struct store_reclaim *rq, char *path, const char *site, uint64_t bytes)
{
    if (!push(rq, NULL, path, site, bytes)) {
        store_best_effort(store_fs_unlink(rq->fs, path, site));
        free(path);
    }
}

void store_reclaim_pending(struct store_reclaim *rq, uint64_t *files, uint64_t *bytes)
{
    *files = *bytes = 0;
    if (rq == NULL)
        return;
    pthread_mutex_lock(&rq->mu);
    *files = rq->doomed_files + rq->unlink_files;
    *bytes = rq->doomed_bytes + rq->unlink_bytes;
    pthread_mutex_unlock(&rq->mu);
}

bool store_reclaim_wait(struct store_reclaim *rq, int64_t timeout_ms)
{
    if (rq == NULL)
        return true;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&rq->mu);
    while (rq->pending > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t left = timeout_ms - ((int64_t)(t.tv_sec - t0.tv_sec) * 1000 +
                                     (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        store_cond_wait_ms(&rq->idle_cv, &rq->mu, left);
    }
    bool idle = rq->pending == 0;
    pthread_mutex_unlock(&rq->mu);
    return idle;
}
