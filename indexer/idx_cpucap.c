/*
 * idx_cpucap.c — the build CPU cap: a token bucket of CPU time (idx_cpucap.h).
 */
#include "idx_cpucap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static int64_t real_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static int64_t real_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void real_sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000ll, .tv_nsec = ns % 1000000000ll};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static const struct idx_cpucap_clock real_clock = {real_thread_cpu_ns, real_wall_ns, real_sleep_ns};

static _Atomic uint32_t cap_mc; /* millicores; 0: no cap */
static _Atomic uint64_t slept;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const struct idx_cpucap_clock *clk = &real_clock;
static int64_t level;       /* CPU ns the builds may still use; negative: owed */
static int64_t last_refill; /* wall ns of the last refill; 0: none yet */
static _Thread_local int64_t thread_last_cpu;
static _Thread_local int64_t thread_last_wall; /* of its last accounted tick */

static void bucket_reset(void)
{
    pthread_mutex_lock(&mu);
    level = 0;
    last_refill = 0;
    pthread_mutex_unlock(&mu);
}

void idx_cpucap_set(uint32_t millicores)
{
    bucket_reset(); /* a new cap starts from an empty bucket, owing nothing */
    atomic_store(&cap_mc, millicores);
}

uint64_t idx_cpucap_slept_ns(void)
{
    return atomic_load_explicit(&slept, memory_order_relaxed);
}

void idx_cpucap_reset(const struct idx_cpucap_clock *c)
{
    pthread_mutex_lock(&mu);
    clk = c != NULL ? c : &real_clock;
    pthread_mutex_unlock(&mu);
    bucket_reset();
    atomic_store(&slept, 0);
}

void idx_cpucap_tick_at(int64_t *last_cpu)
{
    uint32_t mc = atomic_load_explicit(&cap_mc, memory_order_relaxed);
    if (mc == 0) {
        *last_cpu = 0; /* a cap set later starts from the thread's next tick */
        return;
    }
    const struct idx_cpucap_clock *c = clk; /* changed by tests only, with no build running */
    int64_t cpu = c->thread_cpu_ns();       /* a system call: outside the lock */
    /* A thread's first tick charges nothing: what it ran before is not known to be a build. */
    int64_t used = *last_cpu > 0 && cpu > *last_cpu ? cpu - *last_cpu : 0;
    *last_cpu = cpu > 0 ? cpu : 1;
    pthread_mutex_lock(&mu);
    /* Read under the lock, so that refills never go back in time (each interval once). */
    int64_t now = c->wall_ns();
    if (last_refill == 0 || now > last_refill) {
        int64_t dt = last_refill != 0 ? now - last_refill : 0;
        if (dt > 1000000000ll)
            dt = 1000000000ll; /* a second fills any burst; and dt * mc cannot overflow */
        level += dt * (int64_t)mc / 1000;
        last_refill = now;
    }
    /* The burst bounds what is banked after this tick's charge: a thread whose units of work
     * are long (a refill while it ran larger than the burst) is charged against all of it. */
    level -= used;
    if (level > IDX_CPUCAP_BURST_NS)
        level = IDX_CPUCAP_BURST_NS;
    if (level < -1000000000000ll)
        level = -1000000000000ll; /* bounded however the clocks misbehave */
    /* Every thread that finds the bucket owing sleeps until it is paid back: while they all
     * sleep it fills at the cap's rate, so the debt is paid in debt / rate, whoever used it. */
    int64_t wait = level <= -IDX_CPUCAP_MIN_DEBT_NS ? -level * 1000 / (int64_t)mc : 0;
    pthread_mutex_unlock(&mu);
    if (wait > 0) {
        if (wait > IDX_CPUCAP_MAX_SLEEP_NS)
            wait = IDX_CPUCAP_MAX_SLEEP_NS;
        c->sleep_ns(wait);
        atomic_fetch_add_explicit(&slept, (uint64_t)wait, memory_order_relaxed);
    }
}

void idx_cpucap_begin(void)
{
    thread_last_cpu = 0;
    thread_last_wall = 0;
    idx_cpucap_tick();
}

void idx_cpucap_tick(void)
{
    if (atomic_load_explicit(&cap_mc, memory_order_relaxed) == 0) {
        thread_last_cpu = 0;
        return;
    }
    /* Accounted at most every IDX_CPUCAP_TICK_NS of wall time: reading a thread's CPU clock is
     * a system call, too dear for every unit of work (a codebook batch is ~1 us). */
    int64_t now = clk->wall_ns();
    if (thread_last_cpu != 0 && now - thread_last_wall < IDX_CPUCAP_TICK_NS)
        return;
    thread_last_wall = now;
    idx_cpucap_tick_at(&thread_last_cpu);
}
