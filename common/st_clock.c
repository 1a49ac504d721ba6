#include "st_clock.h"

#include <time.h>

int64_t st_clock_wall_ms(const struct st_clock *c)
{
    if (c != NULL && c->manual)
        return atomic_load(&c->wall_ms);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t st_clock_mono_ns(const struct st_clock *c)
{
    if (c != NULL && c->manual)
        return atomic_load(&c->mono_ns);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void st_clock_manual_init(struct st_clock *c, int64_t wall_ms)
{
    c->manual = true;
    atomic_store(&c->wall_ms, wall_ms);
    atomic_store(&c->mono_ns, 0);
}

void st_clock_manual_set_wall(struct st_clock *c, int64_t wall_ms)
{
    atomic_store(&c->wall_ms, wall_ms);
}

void st_clock_manual_advance(struct st_clock *c, int64_t ms)
{
    if (ms < 0)
        return;
    atomic_fetch_add(&c->wall_ms, ms);
    atomic_fetch_add(&c->mono_ns, ms * 1000000);
}
