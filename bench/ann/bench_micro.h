/*
 * bench_micro.h — what the kernel micro-benchmarks of bench/ann share: a fixed-seed xorshift
 * (the same inputs every run) and a monotonic clock in nanoseconds.
 */
#ifndef BENCH_MICRO_H
#define BENCH_MICRO_H

#include <stdint.h>
#include <time.h>

static uint64_t bench_rng = 88172645463325252ull;

static inline uint64_t bench_next(void)
{
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return bench_rng;
}

static inline double bench_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

#endif
