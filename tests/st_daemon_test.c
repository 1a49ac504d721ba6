#include "st_daemon_test.h"

#include "produce.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "st_test.h"

/* What the sanitizers print at the start of a report. */
static const char *const reports[] = {"AddressSanitizer", "LeakSanitizer",
                                      "runtime error:", "ThreadSanitizer"};

/* The whole log, malloc'd ("" when there is none). */
static char *log_read(const struct st_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    char *buf = NULL;
    size_t len = 0;
    if (f != NULL) {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            char *b = realloc(buf, len + n + 1);
            ck_assert_ptr_nonnull(b);
            buf = b;
            memcpy(buf + len, chunk, n);
            len += n;
        }
        fclose(f);
    }
    if (buf == NULL)
        buf = calloc(1, 1);
    ck_assert_ptr_nonnull(buf);
    buf[len] = '\0';
    return buf;
}

/* The last 6 KiB of the log, for failure messages (check truncates longer ones). */
static const char *tail_of(const char *text)
{
    size_t n = strlen(text);
    return n > 6144 ? text + n - 6144 : text;
}

void st_daemon_start(struct st_daemon *d, const char *log, const char *const argv[],
                     const char *const env[])
{
    memset(d, 0, sizeof(*d));
    snprintf(d->log, sizeof(d->log), "%s", log);
    const char *base = strrchr(argv[0], '/');
    snprintf(d->name, sizeof(d->name), "%s", base != NULL ? base + 1 : argv[0]);
    /* Truncated before the child exists: nothing of an earlier run on the same log is read
     * as this one's. */
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_msg(fd >= 0, "%s: %s", log, strerror(errno));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(fd, 2) < 0)
            _exit(126);
        /* Report and stop at the first error, leaks included, whatever ctest was run with. */
        setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1", 0);
        setenv("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1", 0);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++)
            putenv(strdup(env[i])); /* the child execs or exits: the copies need no free */
        char *args[64];
        size_t n = 0;
        while (n < 63 && argv[n] != NULL) {
            args[n] = strdup(argv[n]);
            n++;
        }
        args[n] = NULL;
        execv(args[0], args);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    d->pid = pid;
}

bool st_daemon_log_has(const struct st_daemon *d, const char *needle)
{
    char *text = log_read(d);
    bool has = strstr(text, needle) != NULL;
    free(text);
    return has;
}

bool st_daemon_has_thread(const struct st_daemon *d, const char *comm)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)d->pid);
    DIR *dp = d->pid > 0 ? opendir(dir) : NULL;
    bool found = false;
    for (struct dirent *e; dp != NULL && !found && (e = readdir(dp)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[400], name[32] = {0};
        snprintf(path, sizeof(path), "%s/%s/comm", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* the thread ended meanwhile */
        if (fgets(name, sizeof(name), f) != NULL) {
            name[strcspn(name, "\n")] = 0;
            found = strcmp(name, comm) == 0;
        }
        fclose(f);
    }
    if (dp != NULL)
        closedir(dp);
    return found;
}

/* Whether the child is still running (reaps it, keeping its status, when it is not). */
static bool alive(struct st_daemon *d, int *status)
{
    if (d->pid == 0)
        return false;
    pid_t r = waitpid(d->pid, status, WNOHANG);
    if (r == d->pid) {
        d->pid = 0;
        return false;
    }
    return true;
}

static void fail_with_log(const struct st_daemon *d, const char *what, int status)
{
    char *text = log_read(d);
    ck_abort_msg("%s: %s (status 0x%x); its stderr (%s) ends with:\n%s", d->name, what, status,
                 d->log, tail_of(text));
    free(text);
}

/* The number logged right after prefix, 0 when there is none yet. */
static unsigned logged_number(const struct st_daemon *d, const char *prefix)
{
    char *text = log_read(d);
    const char *p = strstr(text, prefix);
    unsigned v = p != NULL ? (unsigned)strtoul(p + strlen(prefix), NULL, 10) : 0;
    free(text);
    return v;
}

unsigned st_daemon_wait_logged_number(struct st_daemon *d, const char *prefix, int timeout_ms)
{
    unsigned v = 0;
    int status = 0;
    bool up = true;
    ST_WAIT_UNTIL((up = alive(d, &status)) == false || (v = logged_number(d, prefix)) != 0,
                  timeout_ms);
    if (!up)
        fail_with_log(d, "exited during start-up", status);
    if (v == 0)
        fail_with_log(d, "logged nothing like that in time", 0);
    return v;
}

int st_daemon_http_get(unsigned port, const char *path, char *body, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int code = 0;
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        write(fd, req, (size_t)n) == (ssize_t)n) {
        size_t len = 0, rcap = 65536;
        char *resp = malloc(rcap);
        ssize_t r;
        while (resp != NULL && (r = read(fd, resp + len, rcap - len - 1)) > 0) {
            len += (size_t)r;
            if (len + 1 == rcap) {
                char *b = realloc(resp, rcap * 2);
                if (b == NULL)
                    break;
                resp = b;
                rcap *= 2;
            }
        }
        if (resp != NULL) {
            resp[len] = '\0';
            if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
                code = 0;
            const char *b = strstr(resp, "\r\n\r\n");
            if (body != NULL && cap > 0)
                snprintf(body, cap, "%s", b != NULL ? b + 4 : "");
            free(resp);
        }
    }
    close(fd);
    return code;
}

void st_daemon_wait_http_ok(struct st_daemon *d, unsigned port, const char *path, int timeout_ms)
{
    int status = 0, code = 0;
    bool up = true;
    char body[512] = "";
    bool ok = ST_WAIT_UNTIL((up = alive(d, &status)) == false ||
                                (code = st_daemon_http_get(port, path, body, sizeof(body))) == 200,
                            timeout_ms);
    if (!up)
        fail_with_log(d, "exited while waiting for HTTP 200", status);
    if (!ok) {
        char what[800];
        snprintf(what, sizeof(what), "GET %s answered %d, not 200, until the deadline: %s", path,
                 code, body);
        fail_with_log(d, what, 0);
    }
}

void st_daemon_assert_clean(const struct st_daemon *d)
{
    char *text = log_read(d);
    for (size_t i = 0; i < sizeof(reports) / sizeof(reports[0]); i++) {
        const char *p = strstr(text, reports[i]);
        if (p != NULL) {
            /* from a little before the report's first line */
            const char *from = p - text > 200 ? p - 200 : text;
            ck_abort_msg("%s: sanitizer report in %s:\n%.6000s", d->name, d->log, from);
        }
    }
    free(text);
}

void st_daemon_stop(struct st_daemon *d, int timeout_ms)
{
    ck_assert_msg(d->pid > 0, "%s is not running", d->name);
    int status = 0;
    if (!alive(d, &status))
        fail_with_log(d, "exited before SIGTERM", status);
    ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
    pid_t pid = d->pid;
    bool gone = ST_WAIT_UNTIL(waitpid(pid, &status, WNOHANG) == pid, timeout_ms);
    if (!gone) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        d->pid = 0;
        fail_with_log(d, "did not exit within the shutdown timeout after SIGTERM", status);
    }
    d->pid = 0;
    st_daemon_assert_clean(d);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_with_log(d, "SIGTERM did not end in exit status 0", status);
}

void st_daemon_kill(struct st_daemon *d)
{
    ck_assert_msg(d->pid > 0, "%s is not running", d->name);
    int status = 0;
    if (!alive(d, &status))
        fail_with_log(d, "exited before SIGKILL", status);
    ck_assert_int_eq(kill(d->pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(d->pid, &status, 0), d->pid);
    d->pid = 0;
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    st_daemon_assert_clean(d);
}

int st_daemon_wait_exit(struct st_daemon *d, int timeout_ms)
{
    ck_assert_msg(d->pid > 0, "%s is not running", d->name);
    int status = 0;
    if (!ST_WAIT_UNTIL(!alive(d, &status), timeout_ms)) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
        d->pid = 0;
        char what[96];
        snprintf(what, sizeof(what), "still running %d ms after it started to be waited for",
                 timeout_ms);
        fail_with_log(d, what, status);
    }
    st_daemon_assert_clean(d);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool st_daemon_wait_killed(struct st_daemon *d, int timeout_ms)
{
    ck_assert_msg(d->pid > 0, "%s is not running", d->name);
    int status = 0;
    if (!ST_WAIT_UNTIL(!alive(d, &status), timeout_ms))
        return false;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_with_log(d, "exited, but not at its crash point", status);
    st_daemon_assert_clean(d);
    return true;
}

/* ---- a nats-server of the test's own ---- */

unsigned st_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Does something accept TCP connections on port? */
static bool port_open(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

void st_own_nats_start(struct st_own_nats *n)
{
    if (n->port == 0) {
        n->port = st_free_port();
        snprintf(n->url, sizeof(n->url), "nats://127.0.0.1:%u", n->port);
        n->dir = st_test_tmpdir("nats");
    }
    char port[16];
    snprintf(port, sizeof(port), "%u", n->port);
    n->pid = fork();
    ck_assert_int_ge(n->pid, 0);
    if (n->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        if (n->token != NULL)
            execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd",
                   n->dir, "--auth", n->token, (char *)NULL);
        else
            execlp("nats-server", "nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd",
                   n->dir, (char *)NULL);
        _exit(127);
    }
    ck_assert_msg(ST_WAIT_UNTIL(port_open(n->port), 30000), "nats-server not up on %s", n->url);
}

void st_own_nats_kill(struct st_own_nats *n)
{
    if (n->pid <= 0)
        return;
    ck_assert_int_eq(kill(n->pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(n->pid, NULL, 0), n->pid);
    n->pid = 0;
}

void st_own_nats_free(struct st_own_nats *n)
{
    if (n->pid > 0)
        st_own_nats_kill(n);
    if (n->dir != NULL)
        st_test_rmrf(n->dir);
    free(n->dir);
    n->dir = NULL;
}

float *st_test_fmnist(const char *file, size_t n, unsigned dim)
{
    char path[512];
    snprintf(path, sizeof(path), "/usr/share/datasets/fashion-mnist/%s", file);
    struct produce_matrix m;
    struct st_err err = {0};
    ck_assert_msg(produce_read_matrix(path, n, &m, &err) == ST_OK, "%s", err.msg);
    ck_assert_msg(m.rows == n && m.dim == dim, "%s: %zu rows of %u, want %zu of %u", path, m.rows,
                  m.dim, n, dim);
    return m.data;
}
