/*
 * st_fault.h — fault points for tests.
 *
 * Every I/O site in the store (and other places a test wants to break) evaluates
 * ST_FAULT("module.site"). Unarmed, that is one relaxed atomic load and yields 0. A test arms
 * a site to fail after `skip` passes, `times` times (0 = forever), either by returning an
 * ST_E* code or by killing the process with SIGKILL (a crash point, for fork-based tests).
 *
 * Site names are string literals: "store.wal.write", "store.wal.fsync", ...
 * All functions are thread-safe.
 */
#ifndef ST_FAULT_H
#define ST_FAULT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

/* Special code: the armed site raises SIGKILL instead of returning. */
#define ST_FAULT_CRASH 1

extern _Atomic int st_fault_active;

/* Returns 0, or the armed code for site. Use through ST_FAULT. */
int st_fault_check(const char *site);

#define ST_FAULT(site)                                                                             \
    (atomic_load_explicit(&st_fault_active, memory_order_relaxed) ? st_fault_check(site) : 0)

/*
 * Arms site: the first `skip` evaluations pass, the next `times` (0 = unlimited) return code
 * (a negative ST_E* code, or ST_FAULT_CRASH). Re-arming a site replaces its entry.
 * Returns ST_ENOMEM when the table of armed sites (64) is full.
 */
int st_fault_arm(const char *site, uint32_t skip, uint32_t times, int code) ST_WUR;
/*
 * Calls fn(ctx) (with no lock of this module held) each time site is evaluated, before the
 * site returns 0: a test can hold an operation provably inside that site (e.g. a flush in its
 * I/O) and check what other threads can do meanwhile. Replaces any entry of site; disarm
 * removes it. ST_ENOMEM when the table is full.
 */
int st_fault_hook(const char *site, void (*fn)(void *ctx), void *ctx) ST_WUR;
void st_fault_disarm(const char *site);
void st_fault_disarm_all(void);
/* Number of times site returned a fault since it was armed. */
uint32_t st_fault_fired(const char *site);

/*
 * Site discovery: while recording, every distinct site evaluated is remembered, so a test can
 * run a workload once and then arm each site it touched in turn.
 */
void st_fault_record(bool on);
/* Copies up to max recorded site names (borrowed literals) into out; returns the total. */
size_t st_fault_recorded(const char **out, size_t max);

#endif
