/*
 * idx_cpucap.h — a CPU cap for index builds (indexer.build_cpu): every thread that builds an
 * index, together, uses at most `cores` cores' worth of CPU time, so that on a host it shares
 * with an ingest node (or with its own searches) the builds leave cores to the threads that
 * a fresh search waits for.
 *
 * A token bucket of CPU time: it fills at `cores` CPU-seconds per wall-second, up to a small
 * burst (IDX_CPUCAP_BURST_NS of CPU time); each build thread, between two units of its work
 * (an HNSW insertion, a batch of vectors assigned or encoded, and after each later phase of a
 * part's build: renumbering, saving), calls idx_cpucap_tick(), which takes the CPU time the
 * thread used since its last tick out of the bucket and, when the bucket owes at least
 * IDX_CPUCAP_MIN_DEBT_NS, sleeps until it is paid back (in slices of at most
 * IDX_CPUCAP_MAX_SLEEP_NS): the thread holds no lock there (a tick is never placed inside
 * one), so a throttled build never stalls a search. Within the insertion and assignment loops
 * the sleeps are a few milliseconds at a time, unlike a cgroup quota's 100 ms periods, in
 * which a capped group runs flat out and then stops; the phases after them are charged as a
 * whole when each ends.
 *
 * One process-wide bucket: builds run on the indexer's workers and on the threads each build
 * starts (HNSW insertion, IVF-PQ assignment), all ticking into it. With no cap (the default,
 * and in every tool that builds indexes without the service) a tick is one relaxed load.
 *
 * The clocks are injectable (struct idx_cpucap_clock) so the arithmetic is tested without
 * timing: check_indexer's test_cpucap.
 */
#ifndef IDX_CPUCAP_H
#define IDX_CPUCAP_H

#include <stdint.h>

/* The most CPU time the bucket banks while the builds are idle or under their share: a build
 * may run this far ahead of its rate before it sleeps. */
#define IDX_CPUCAP_BURST_NS 4000000ll
/* A thread sleeps once the bucket owes at least this much CPU time, and never longer than
 * IDX_CPUCAP_MAX_SLEEP_NS at a time: at half a core, sleeps of ~5 ms after ~5 ms of work, the
 * granularity of a cgroup quota with 5 ms periods, which measured better for the freshness of
 * co-located searches than 100 ms periods; a first version's 1 ms sleeps woke the build
 * threads a thousand times a second, each wake-up preempting another thread
 * (docs/benchmarks.md, "Freshness under load"). */
#define IDX_CPUCAP_MIN_DEBT_NS  2500000ll
#define IDX_CPUCAP_MAX_SLEEP_NS 50000000ll
/* idx_cpucap_tick accounts a thread's CPU at most this often (wall time); ticks in between
 * cost a clock read of the vDSO. */
#define IDX_CPUCAP_TICK_NS 200000ll

struct idx_cpucap_clock {
    int64_t (*thread_cpu_ns)(void); /* this thread's CPU time */
    int64_t (*wall_ns)(void);       /* a monotonic clock */
    void (*sleep_ns)(int64_t ns);
};

/* millicores 0: no cap (the default). Takes effect at the next tick of every thread, with an
 * empty bucket. */
void idx_cpucap_set(uint32_t millicores);
/* Between two units of a build's work, no lock held. */
void idx_cpucap_tick(void);
/* At the start of a build on this thread: what the thread ran since its last tick (a segment
 * fetched and checked, an earlier build's commit) is not charged to the builds. */
void idx_cpucap_begin(void);
/* Nanoseconds build threads have slept for the cap since the process started
 * (strata_index_build_throttled_seconds_total). */
uint64_t idx_cpucap_slept_ns(void);

/* Tests: the clocks (NULL: the real ones) and a fresh bucket; and a tick of the calling
 * "thread" whose previous CPU reading is *last_cpu (0 on its first tick), as idx_cpucap_tick
 * keeps it per thread. */
void idx_cpucap_reset(const struct idx_cpucap_clock *clk);
void idx_cpucap_tick_at(int64_t *last_cpu);

#endif
