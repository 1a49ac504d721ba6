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

void st_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

void st_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}
