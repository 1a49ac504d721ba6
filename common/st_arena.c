#include "st_arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct st_arena_chunk {
    struct st_arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

void *st_arena_alloc(struct st_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct st_arena_chunk *c = a->head;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = a->chunk_size ? a->chunk_size : 64 * 1024;
        if (cap < n)
            cap = n;
        c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void *st_arena_dup(struct st_arena *a, const void *p, size_t n)
{
    void *q = st_arena_alloc(a, n ? n : 1);
    if (q != NULL && n > 0)
        memcpy(q, p, n);
    return q;
}

void st_arena_reset(struct st_arena *a)
{
    struct st_arena_chunk *c = a->head;
    if (c == NULL)
        return;
    /* Keep the oldest chunk (the usual size), free the rest. */
    while (c->next != NULL) {
        struct st_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    c->used = 0;
    a->head = c;
}

void st_arena_free(struct st_arena *a)
{
    for (struct st_arena_chunk *c = a->head, *n; c != NULL; c = n) {
        n = c->next;
        free(c);
    }
    a->head = NULL;
}
