/*
 * st_clock.h — injectable clock. Every component that reads time takes a
 * `const struct st_clock *`; NULL means the system clock. Tests use a manual clock whose wall
 * time can step backwards or jump years ahead, while monotonic time only moves forward.
 */
#ifndef ST_CLOCK_H
#define ST_CLOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct st_clock {
    bool manual;
    _Atomic int64_t wall_ms; /* manual clocks only */
    _Atomic int64_t mono_ns; /* manual clocks only */
};

/* Wall-clock milliseconds since the Unix epoch. c may be NULL (system clock). Any thread. */
int64_t st_clock_wall_ms(const struct st_clock *c);
/* Monotonic nanoseconds (arbitrary origin). c may be NULL. Any thread. */
int64_t st_clock_mono_ns(const struct st_clock *c);

/* Initialises c as a manual clock at wall time wall_ms and monotonic time 0. */
void st_clock_manual_init(struct st_clock *c, int64_t wall_ms);
/* Sets the wall time only (steps back or forward); monotonic time is untouched. */
void st_clock_manual_set_wall(struct st_clock *c, int64_t wall_ms);
/* Advances both wall and monotonic time by ms (ms >= 0). */
void st_clock_manual_advance(struct st_clock *c, int64_t ms);

/* Waits on cv (created with CLOCK_MONOTONIC, see st_cond_init_mono) at most ms. */
void st_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
/* A condition variable whose timed waits use CLOCK_MONOTONIC. */
void st_cond_init_mono(pthread_cond_t *cv);

#endif
