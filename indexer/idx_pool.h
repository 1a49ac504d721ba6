/*
 * idx_pool.h — a small fork-join pool: the threads a search lends to one query so its parts
 * are searched side by side (indexer.search_threads).
 *
 * idx_pool_run(p, helpers, fn, arg) runs fn(arg) on the calling thread and on up to `helpers`
 * pool threads that take it up while the caller's own run lasts, and returns only when every
 * run of fn has returned: fn shares its work through arg (an atomic cursor), so a helper that
 * arrives late finds nothing left and returns at once, and one that never arrives is simply
 * withdrawn. Offers of different callers are taken oldest first; a pool busy with other
 * queries leaves a caller to do its work alone, never waiting for a thread.
 */
#ifndef IDX_POOL_H
#define IDX_POOL_H

#include <stdint.h>

#include "st_error.h"

struct idx_pool;

/* threads >= 1 named "idx-search". ST_ENOMEM, or ST_EIO when no thread could be started. */
int idx_pool_new(uint32_t threads, struct idx_pool **out) ST_WUR;
/* Stops and joins the threads (no run may be in progress). NULL is a no-op. */
void idx_pool_free(struct idx_pool *p);
uint32_t idx_pool_threads(const struct idx_pool *p);
/* p NULL or helpers 0: fn(arg) on the caller alone. */
void idx_pool_run(struct idx_pool *p, uint32_t helpers, void (*fn)(void *arg), void *arg);

#endif
