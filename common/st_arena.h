/*
 * st_arena.h — a bump allocator for per-message scratch: allocations never move, are 16-byte
 * aligned, and are all released at once by st_arena_reset (which keeps the first chunk).
 */
#ifndef ST_ARENA_H
#define ST_ARENA_H

#include <stddef.h>

struct st_arena_chunk;

struct st_arena {
    struct st_arena_chunk *head; /* newest chunk first */
    size_t chunk_size;           /* default size of a new chunk (0: 64 KiB) */
};

/* NULL when out of memory. */
void *st_arena_alloc(struct st_arena *a, size_t n);
/* Copies n bytes into the arena. */
void *st_arena_dup(struct st_arena *a, const void *p, size_t n);
void st_arena_reset(struct st_arena *a);
void st_arena_free(struct st_arena *a);

#endif
