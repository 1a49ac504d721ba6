/*
 * st_daemon_test.h — a daemon (strata-ingest, strata-indexer) as a black box in a test.
 *
 * The daemon runs as a child process with its stderr in a file. Every way a test ends it
 * checks the file for sanitizer reports (AddressSanitizer, LeakSanitizer, UBSan's "runtime
 * error:", ThreadSanitizer) and fails with the report; st_daemon_stop also requires exit
 * status 0 within the deadline. In the sanitizer builds the daemon itself is instrumented, so
 * a use-after-free, a leak or undefined behaviour in it fails the test that started it.
 * The child gets ASAN_OPTIONS / UBSAN_OPTIONS that report and stop on the first error (leak
 * checking on) unless the environment already sets them.
 */
#ifndef ST_DAEMON_TEST_H
#define ST_DAEMON_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct st_daemon {
    pid_t pid;     /* 0 once reaped */
    char log[600]; /* the child's stderr */
    char name[64]; /* for messages: the program's base name */
};

/*
 * Starts argv[0] (a path) with argv; stderr goes to log (truncated). env: extra "KEY=VALUE"
 * entries for the child (NULL-terminated array, or NULL). The child dies with the test.
 */
void st_daemon_start(struct st_daemon *d, const char *log, const char *const argv[],
                     const char *const env[]);

/* Whether the daemon's stderr holds needle so far. */
bool st_daemon_log_has(const struct st_daemon *d, const char *needle);

/* The number logged right after prefix (e.g. "HTTP on port "), waited for up to timeout_ms;
 * fails the test (with the log) when it does not come or the daemon exits. */
unsigned st_daemon_wait_logged_number(struct st_daemon *d, const char *prefix, int timeout_ms);

/* HTTP GET http://127.0.0.1:port/path: the status code, 0 when nothing answered. The body
 * (up to cap - 1 bytes, NUL-terminated) goes to body when it is not NULL. */
int st_daemon_http_get(unsigned port, const char *path, char *body, size_t cap);

/* Waits up to timeout_ms for GET path to answer 200; fails the test when it does not. */
void st_daemon_wait_http_ok(struct st_daemon *d, unsigned port, const char *path, int timeout_ms);

/* Whether one of the daemon's threads is named comm (/proc/PID/task/TID/comm). */
bool st_daemon_has_thread(const struct st_daemon *d, const char *comm);

/* Fails the test, quoting it, when the log holds a sanitizer report. */
void st_daemon_assert_clean(const struct st_daemon *d);

/* SIGTERM; requires exit status 0 within timeout_ms and a clean log. */
void st_daemon_stop(struct st_daemon *d, int timeout_ms);

/* SIGKILL (a crash the test wants) and reap; the log up to then must be clean. */
void st_daemon_kill(struct st_daemon *d);

/* Waits up to timeout_ms for the daemon to exit by itself (a start-up it must refuse): its
 * exit status, or 128 + the signal that ended it. Fails the test, quoting the log, when it still
 * runs at the deadline (it is then killed) or its log holds a sanitizer report. */
int st_daemon_wait_exit(struct st_daemon *d, int timeout_ms);

/* Whether the daemon has died of SIGKILL (a crash point it was armed with) within timeout_ms;
 * false while it still runs. Any other exit fails the test with its log. */
bool st_daemon_wait_killed(struct st_daemon *d, int timeout_ms);

/* A nats-server of the test's own (with JetStream, in dir), which the test kills and
 * restarts; it dies with the test. url is nats://127.0.0.1:<port>. */
struct st_own_nats {
    pid_t pid;
    unsigned port;
    char url[64];
    char *dir;
    const char *token; /* set before the start: clients must present it (--auth) */
};
/* Picks a free port and a directory (the first time) and starts it; waits until it answers. */
void st_own_nats_start(struct st_own_nats *n);
/* SIGKILL and reap. */
void st_own_nats_kill(struct st_own_nats *n);
/* Kills it if running and removes its directory. */
void st_own_nats_free(struct st_own_nats *n);
/* A loopback port nothing listens on now. */
unsigned st_free_port(void);

/* The first n images of Debian's Fashion-MNIST file (e.g. "train-images-idx3-ubyte.gz") as
 * floats 0..255, read with the producer's reader (produce_read_matrix); fails the test unless
 * n rows of dim floats come back. Caller frees. */
float *st_test_fmnist(const char *file, size_t n, unsigned dim);

#endif
