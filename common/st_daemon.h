/*
 * st_daemon.h — what both daemons' main() share (SPEC.md §2): the command line, signals, and
 * the test fault points of sanitizer builds.
 */
#ifndef ST_DAEMON_H
#define ST_DAEMON_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Parses `--config FILE [--check-config] | --version | --help` for program `name`. Returns -1
 * when the daemon should run with *path (and *check), else the exit code to return now
 * (0 after --help/--version, 2 for bad usage; usage text printed).
 */
int st_daemon_args(int argc, char **argv, const char *name, const char *about, const char **path,
                   bool *check);
/* SIGTERM and SIGINT set *flag (to 1). */
void st_daemon_signals(volatile sig_atomic_t *flag);
/*
 * Builds with assertions (the sanitizer builds the tests run in) arm the fault points named in
 * $STRATA_FAULT_POINTS ("site,site=crash,site=crash@N": each fires every time it is evaluated,
 * failing with ST_EIO, or with "=crash" killing the process there; "@N" lets the first N
 * evaluations pass): how black-box tests make a race lose or crash a daemon at a chosen point
 * (docs/testing.md). Release builds ignore the variable.
 */
void st_daemon_arm_test_faults(const char *comp);

/* systemd notifications (Type=notify): READY with a status, then from the main loop WATCHDOG
 * at half the watchdog interval and a STATUS line when one is due (every 5 s). */
struct st_daemon_notify {
    bool watchdog;
    uint64_t wd_usec;
    int64_t next_wd, next_status;
};
void st_daemon_notify_ready(struct st_daemon_notify *n, const char *status);
/* Sends WATCHDOG=1 when due; returns true when the caller should send a STATUS line now. */
bool st_daemon_notify_tick(struct st_daemon_notify *n);
void st_daemon_notify_status(const char *status);
/* STOPPING=1, and SIGALRM after shutdown_timeout ends a stop that hangs. */
void st_daemon_stopping(int64_t shutdown_timeout_ms);

#endif
