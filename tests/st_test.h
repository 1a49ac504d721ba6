/*
 * st_test.h — helpers shared by the check suites: broker addresses from the harness,
 * temporary directories, and waiting for a condition with a deadline (never sleep-and-hope).
 */
#ifndef ST_TEST_H
#define ST_TEST_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

/*
 * check records a mark point for every assertion that passes: a message to the runner, which
 * unpacks each one with a memmove of its whole message buffer (CK_MAX_MSG_SIZE, raised to 256 KiB
 * by st_test_run_suite so that a failure can quote a log). A loop asserting per iteration paid
 * that per assertion: 39 of 41 s of one ThreadSanitizer case, and most of the CI's time in the
 * suites with cut-every-byte loops. st_mark_point forwards a location only when it is not one
 * of the last few this thread forwarded, so a crash still names the last new line reached.
 */
void st_mark_point(const char *file, int line);
#undef _mark_point
#define _mark_point(file, line) st_mark_point(file, line)

/*
 * Address of a broker started by scripts/brokers: key is "STRATA_TEST_KAFKA" or
 * "STRATA_TEST_NATS". Looks in the environment, then in $STRATA_BROKERS_DIR/env.
 * Fails the current test with a clear message when the harness is not running.
 * Returns a static string.
 */
const char *st_test_broker(const char *key);

/* A fresh directory under $TMPDIR (caller frees the string; st_test_rmrf removes it). */
char *st_test_tmpdir(const char *tag);
/* The same on a disk's file system (not tmpfs): TMPDIR's, else the working directory's (the
 * build tree) — for tests of what only a disk does (O_DIRECT, the page cache). */
char *st_test_disk_tmpdir(const char *tag);
void st_test_rmrf(const char *path);
/* The path of the manifest a store directory's CURRENT names (malloc'd). */
char *st_test_manifest_path(const char *dir);

/* A name unique to this process and call, e.g. for topics and streams: "<prefix>-<pid>-<n>". */
const char *st_test_unique(const char *prefix);

/* Path of a file under tests/ in the source tree ($STRATA_SOURCE_DIR/tests/rel). Static. */
const char *st_test_source(const char *rel);

int64_t st_test_now_ms(void);

/* Runs a shell command, captures its stdout into out (NUL-terminated), returns its exit
 * status; fails the test if it did not exit normally. */
int st_test_run(const char *cmd, char *out, size_t outsz);
/* Runs `$STRATA_CLI ARGS 2>&1` (ARGS from fmt): the exit status, the output in out. */
int st_test_cli(char *out, size_t outsz, const char *fmt, ...) ST_PRINTF(3, 4);
/* Runs a suite (check's normal output) and returns main's exit status; frees the suite. */
int st_test_run_suite(Suite *su);

/* Evaluates cond every 5 ms until it holds or timeout_ms passes; yields whether it held. */
#define ST_WAIT_UNTIL(cond, timeout_ms)                                                            \
    __extension__({                                                                                \
        int64_t st_deadline_ = st_test_now_ms() + (timeout_ms);                                    \
        bool st_ok_ = false;                                                                       \
        for (;;) {                                                                                 \
            if (cond) {                                                                            \
                st_ok_ = true;                                                                     \
                break;                                                                             \
            }                                                                                      \
            if (st_test_now_ms() > st_deadline_)                                                   \
                break;                                                                             \
            st_test_sleep_ms(5);                                                                   \
        }                                                                                          \
        st_ok_;                                                                                    \
    })

void st_test_sleep_ms(int ms);

/* A fault matrix's sites (st_fault_recorded) listed on stderr, those after the first clean
 * ones marked "(error path)"; returns how many start with prefix. */
size_t st_test_fault_sites(const char *const *sites, size_t n, size_t clean, const char *prefix);

#endif
