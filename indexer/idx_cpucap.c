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

void idx_cpucap_set(uint32_t millicores)
{
    atomic_store(&cap_mc, millicores);
}

uint32_t idx_cpucap_get(void)
{
    return atomic_load_explicit(&cap_mc, memory_order_relaxed);
}

uint64_t idx_cpucap_slept_ns(void)
{
    return atomic_load_explicit(&slept, memory_order_relaxed);
}

void idx_cpucap_reset(const struct idx_cpucap_clock *c)
{
    pthread_mutex_lock(&mu);
    clk = c != NULL ? c : &real_clock;
    level = 0;
    last_refill = 0;
    pthread_mutex_unlock(&mu);
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
    int64_t cpu = c->thread_cpu_ns();
    int64_t now = c->wall_ns();
    pthread_mutex_lock(&mu);
    /* A thread's first tick charges nothing: what it ran before is not known to be a build. */
    int64_t used = *last_cpu > 0 && cpu > *last_cpu ? cpu - *last_cpu : 0;
    *last_cpu = cpu > 0 ? cpu : 1;
    if (last_refill != 0 && now > last_refill)
        level += (now - last_refill) * (int64_t)mc / 1000;
    last_refill = now;
    if (level > IDX_CPUCAP_BURST_NS)
        level = IDX_CPUCAP_BURST_NS;
    level -= used;
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

void idx_cpucap_tick(void)
{
    if (atomic_load_explicit(&cap_mc, memory_order_relaxed) == 0) {
        thread_last_cpu = 0;
        return;
    }
    idx_cpucap_tick_at(&thread_last_cpu);
}
