/*
 * ing_pipe.h — a bounded, in-order hand-off to worker threads (the consumer's decode stage).
 *
 * The owner pushes items; the workers run fn on each (workers claim items in push order and
 * run them in parallel, one item per worker at a time); the owner pops them back, done, in
 * push order whatever order they finished in. At most `depth` items are in the pipe (pushed,
 * not popped yet), so memory is bounded and the owner decides when to stop feeding it.
 *
 * Threads: every function but fn is called by one owner thread. fn runs on a worker, on an
 * item that nothing else touches until it is popped: pushing hands the item over, popping
 * hands it back (the mutex orders both); fn runs concurrently on different items, so what it
 * shares (ctx) must be read-only. The pipe never frees items.
 */
#ifndef ING_PIPE_H
#define ING_PIPE_H

#include <stdbool.h>
#include <stddef.h>

#include "st_error.h"

typedef void (*ing_pipe_fn)(void *ctx, void *item);

struct ing_pipe;

/* depth >= 1 items in flight, workers >= 1 threads. ctx is borrowed until ing_pipe_close. */
int ing_pipe_open(size_t depth, size_t workers, ing_pipe_fn fn, void *ctx,
                  struct ing_pipe **out) ST_WUR;
/* Items pushed and not popped yet. */
size_t ing_pipe_count(const struct ing_pipe *p);
bool ing_pipe_full(const struct ing_pipe *p);
/* Hands item to the worker. The pipe must not be full. */
void ing_pipe_push(struct ing_pipe *p, void *item);
/*
 * The oldest item once fn has run on it: waits for that at most timeout_ms (< 0: as long as it
 * takes). NULL when the pipe is empty or the oldest item is still being worked on. The caller
 * owns the item again.
 */
void *ing_pipe_pop(struct ing_pipe *p, int timeout_ms);
/* Stops the workers after the items pushed so far and frees the pipe (NULL is a no-op). Items
 * not popped are not freed: pop them all first. */
void ing_pipe_close(struct ing_pipe *p);

#endif
