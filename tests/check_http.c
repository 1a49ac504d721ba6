/*
 * The HTTP server both daemons use (common/st_http.h) under what clients can do to it: bearer
 * tokens, body limits, connections that never send a whole request (slow clients), headers
 * larger than any real request, and more connections than it allows. Raw sockets, so the test
 * controls every byte and every stall; each wait has a deadline.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_http.h"
#include "st_test.h"

/* /slow blocks its handler until the test releases it (or 20 s pass), as a long search does. */
static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cv; /* CLOCK_MONOTONIC (st_cond_init_mono, in main) */
static bool slow_released;
static int slow_in; /* /slow handlers running */

static void slow_wait(void)
{
    pthread_mutex_lock(&slow_mu);
    slow_in++;
    pthread_cond_broadcast(&slow_cv);
    for (int64_t dl = st_test_now_ms() + 20000; !slow_released && st_test_now_ms() < dl;)
        st_cond_wait_ms(&slow_cv, &slow_mu, 50);
    slow_in--;
    pthread_mutex_unlock(&slow_mu);
}

static void handler(void *ctx, const struct st_http_req *req, struct st_http_resp *resp)
{
    (void)ctx;
    if (strcmp(req->path, "/slow") == 0) {
        slow_wait();
        st_http_json(resp, 200, json_pack("{s:s}", "status", "slow"));
    } else if (strcmp(req->path, "/echo") == 0)
        st_http_json(resp, 200, json_pack("{s:I}", "len", (json_int_t)req->body_len));
    else if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/v1/x") == 0)
        st_http_json(resp, 200, json_pack("{s:s}", "status", "ok"));
    else
        st_http_error(resp, 404, "not_found", "no route for %s", req->path);
}

static struct st_http *start_n(const char *token_file, unsigned max_conns, unsigned idle_s,
                               unsigned max_active)
{
    static const char *const open_paths[] = {"/healthz", NULL};
    struct st_http_opts o = {.listen = "127.0.0.1:0",
                             .max_body = 1024,
                             .auth_token_file = token_file,
                             .open_paths = open_paths,
                             .max_connections = max_conns,
                             .idle_timeout_s = idle_s,
                             .max_active = max_active,
                             .handler = handler};
    struct st_http *h;
    struct st_err err = {0};
    ck_assert_msg(st_http_start(&o, &h, &err) == ST_OK, "%s", err.msg);
    return h;
}

static struct st_http *start(const char *token_file, unsigned max_conns, unsigned idle_s)
{
    return start_n(token_file, max_conns, idle_s, 0);
}

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* The status of the response on fd (read until the status line is in), 0 when the server
 * closed the connection without one, -1 when nothing came within timeout_ms. */
static int read_status(int fd, int timeout_ms)
{
    char buf[256];
    size_t len = 0;
    int64_t deadline = st_test_now_ms() + timeout_ms;
    while (len < sizeof(buf) - 1) {
        int64_t left = deadline - st_test_now_ms();
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return -1;
        ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "\r\n") != NULL)
            break;
    }
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    return status;
}

/* A whole response on a keep-alive connection (headers and Content-Length bytes of body),
 * so that the next one starts clean: its status, 0 when closed first, -1 when it did not all
 * come within timeout_ms. */
static int read_whole(int fd, int timeout_ms)
{
    char buf[4096];
    size_t len = 0;
    int64_t deadline = st_test_now_ms() + timeout_ms;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t want = (size_t)(end + 4 - buf) + (cl != NULL ? strtoul(cl + 17, NULL, 10) : 0);
            if (len >= want) {
                int status = 0;
                return sscanf(buf, "HTTP/1.%*d %d", &status) == 1 ? status : 0;
            }
        }
        int64_t left = deadline - st_test_now_ms();
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (len >= sizeof(buf) - 1 || left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return -1;
        ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        len += (size_t)r;
    }
}

/* One whole request on a fresh connection: its status (0: closed without one). */
static int request(uint16_t port, const char *method, const char *path, const char *token,
                   const char *body)
{
    int fd = dial(port);
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s%s%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "", body ? strlen(body) : 0, body ? body : "");
    ck_assert(n > 0 && (size_t)n < sizeof(req));
    ck_assert(send_all(fd, req, (size_t)n));
    int st = read_status(fd, 10000);
    close(fd);
    return st;
}

/* A GET /healthz on fresh connections until one is answered (a server at its connection
 * limit closes new ones at once) or ms pass: the last status. */
static int request_within(uint16_t port, int ms)
{
    int st = 0;
    for (int64_t dl = st_test_now_ms() + ms; st_test_now_ms() < dl;) {
        if ((st = request(port, "GET", "/healthz", NULL, NULL)) == 200)
            break;
        usleep(5000); /* between attempts only: each is answered or closed at once */
    }
    return st;
}

/*
 * An error message is JSON whatever bytes it quotes: a client's invalid UTF-8 (a JSON parse error
 * near them; fuzz_search found a 500 with an empty body), a character cut by the message buffer,
 * overlong forms and surrogates. Each bad byte becomes '?', valid characters stay.
 */
START_TEST(test_http_error_utf8)
{
    char cut[700];
    for (size_t i = 0; i + 2 < sizeof(cut); i += 2)
        memcpy(cut + i, "\xc3\xa9", 2); /* e-acute: the 512-byte buffer ends inside one */
    cut[sizeof(cut) - 1] = 0;
    static const struct {
        const char *in, *want;
    } cases[] = {{"near '(t\\\xc5\x9c\x01\x30`'", "near '(t\\\xc5\x9c\x01\x30`'"},
                 {"bad \xc5 lead", "bad ? lead"},
                 {"stray \x80\xbf", "stray ??"},
                 {"overlong \xc0\xaf \xe0\x80\xaf", "overlong ?? ???"},
                 {"surrogate \xed\xa0\x80", "surrogate ???"},
                 {"too big \xf4\x90\x80\x80 \xf5", "too big ???? ?"},
                 {"ok \xf0\x9f\x98\x80 \xe2\x82\xac", "ok \xf0\x9f\x98\x80 \xe2\x82\xac"},
                 {"end \xe2\x82", "end ??"}};
    for (size_t i = 0; i <= sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = i < sizeof(cases) / sizeof(cases[0]) ? cases[i].in : cut;
        struct st_http_resp resp = {.fd = -1};
        st_http_error(&resp, 400, "bad_request", "%s", in);
        ck_assert_int_eq(resp.status, 400);
        json_error_t je;
        json_t *j = json_loadb(resp.body, resp.len, 0, &je);
        ck_assert_msg(j != NULL, "case %zu: body is not JSON: %s", i, je.text);
        const char *msg =
            json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        ck_assert_ptr_nonnull(msg);
        if (i < sizeof(cases) / sizeof(cases[0]))
            ck_assert_str_eq(msg, cases[i].want);
        else /* 510 bytes of whole characters kept, the cut one replaced */
            ck_assert_msg(strlen(msg) == 511 && msg[510] == '?' &&
                              strncmp(msg + 508, "\xc3\xa9", 2) == 0,
                          "cut: %zu bytes, last %02x", strlen(msg), (unsigned char)msg[510]);
        json_decref(j);
        free(resp.body);
    }
}
END_TEST

START_TEST(test_http_auth_and_limits)
{
    char *dir = st_test_tmpdir("http");
    char tf[600];
    snprintf(tf, sizeof(tf), "%s/token", dir);
    FILE *f = fopen(tf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("s3cret\n", f);
    fclose(f);
    struct st_http *h = start(tf, 0, 0);
    uint16_t port = st_http_port(h);
    ck_assert_int_eq(request(port, "GET", "/healthz", NULL, NULL), 200); /* open path */
    ck_assert_int_eq(request(port, "GET", "/v1/x", NULL, NULL), 401);
    ck_assert_int_eq(request(port, "GET", "/v1/x", "s3cre", NULL), 401);
    ck_assert_int_eq(request(port, "GET", "/v1/x", "s3cret!", NULL), 401);
    ck_assert_int_eq(request(port, "GET", "/v1/x", "s3cret", NULL), 200);
    ck_assert_int_eq(request(port, "GET", "/healthz/../v1/x", NULL, NULL), 401);
    ck_assert_int_eq(request(port, "GET", "/nope", "s3cret", NULL), 404);
    char body[2048];
    memset(body, 'a', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    ck_assert_int_eq(request(port, "POST", "/echo", "s3cret", "{}"), 200);
    ck_assert_int_eq(request(port, "POST", "/echo", "s3cret", body), 413); /* max_body 1024 */
    st_http_stop(h);
    st_test_rmrf(dir);
    free(dir);
}
END_TEST

/* Connections that open and say nothing, or stop in the middle of their headers or body, do
 * not stop anyone else being served; the idle timeout closes them. */
START_TEST(test_http_slow_clients)
{
    struct st_http *h = start(NULL, 0, 2);
    uint16_t port = st_http_port(h);
    enum { IDLE = 100, HALF = 60 };
    int idle[IDLE], half[HALF];
    for (int i = 0; i < IDLE; i++)
        idle[i] = dial(port);
    for (int i = 0; i < HALF; i++) {
        half[i] = dial(port);
        const char *part = i % 2 ? "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: abc"
                                 : "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{";
        ck_assert(send_all(half[i], part, strlen(part)));
    }
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(request(port, "GET", "/healthz", NULL, NULL), 200);
    /* The idle timeout (2 s) closes every stalled connection: each reads EOF (or a 408). */
    for (int i = 0; i < IDLE + HALF; i++) {
        int fd = i < IDLE ? idle[i] : half[i - IDLE];
        int st = read_status(fd, 15000);
        ck_assert_msg(st == 0 || st == 408, "stalled connection %d: %d", i, st);
        close(fd);
    }
    ck_assert_int_eq(request(port, "GET", "/healthz", NULL, NULL), 200);
    st_http_stop(h);
}
END_TEST

/* A header far larger than any real request is refused (4xx or closed), the server lives. */
START_TEST(test_http_oversized_header)
{
    struct st_http *h = start(NULL, 0, 0);
    uint16_t port = st_http_port(h);
    size_t big = 256 * 1024;
    char *req = malloc(big + 256);
    int n = snprintf(req, 256, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'x', big);
    memcpy(req + n + big, "\r\n\r\n", 5);
    int fd = dial(port);
    send_all(fd, req, (size_t)n + big + 4); /* the server may close before all is sent */
    int st = read_status(fd, 10000);
    ck_assert_msg(st == 0 || (st >= 400 && st < 500), "oversized header: %d", st);
    close(fd);
    free(req);
    ck_assert_int_eq(request(port, "GET", "/healthz", NULL, NULL), 200);
    st_http_stop(h);
}
END_TEST

/* More connections than allowed: past the limit the server closes each new connection at
 * once, without a response and without a thread for it (the client sees the close and may
 * retry), keeps serving the ones it has, and serves new ones as soon as earlier ones leave. */
START_TEST(test_http_connection_limit)
{
    enum { LIMIT = 16, EXTRA = 8 };
    struct st_http *h = start(NULL, LIMIT, 30);
    uint16_t port = st_http_port(h);
    static const char rq[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    int fds[LIMIT];
    for (int i = 0; i < LIMIT; i++) { /* keep-alive: each stays open after its answer */
        fds[i] = dial(port);
        ck_assert(send_all(fds[i], rq, sizeof(rq) - 1));
        ck_assert_int_eq(read_whole(fds[i], 10000), 200);
    }
    for (int i = 0; i < EXTRA; i++) {
        int fd = dial(port); /* the kernel completes the handshake; the server closes it */
        (void)send_all(fd, rq, sizeof(rq) - 1);
        int st = read_status(fd, 10000);
        ck_assert_msg(st == 0, "connection %d past the limit: %d, not closed", LIMIT + i, st);
        close(fd);
    }
    for (int i = 0; i < LIMIT; i++) { /* the ones within the limit are still served */
        ck_assert(send_all(fds[i], rq, sizeof(rq) - 1));
        ck_assert_int_eq(read_whole(fds[i], 10000), 200);
    }
    close(fds[0]);
    /* once one has left, a new connection is served: as soon as the server has seen the close
     * (a connection's thread notices it on its next poll) */
    ck_assert_int_eq(request_within(port, 10000), 200);
    for (int i = 1; i < LIMIT; i++)
        close(fds[i]);
    ck_assert_int_eq(request_within(port, 10000), 200);
    st_http_stop(h);
}
END_TEST

/*
 * A request that takes long (a search over many windows, a strong search waiting for ingest
 * nodes) delays no other connection's: a client keeping connections alive (as every HTTP
 * client library does) must not find its request queued behind another connection's on a
 * busy server thread while others idle. Eight keep-alive connections, one request blocked in
 * its handler; every other connection is answered meanwhile.
 */
START_TEST(test_http_keepalive_no_head_of_line)
{
    enum { CONNS = 8 };
    struct st_http *h = start(NULL, 0, 30);
    uint16_t port = st_http_port(h);
    static const char rq[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char slow[] = "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n";
    int fds[CONNS];
    for (int i = 0; i < CONNS; i++) { /* each connection opened and served once */
        fds[i] = dial(port);
        ck_assert(send_all(fds[i], rq, sizeof(rq) - 1));
        ck_assert_int_eq(read_whole(fds[i], 10000), 200);
    }
    pthread_mutex_lock(&slow_mu);
    slow_released = false;
    pthread_mutex_unlock(&slow_mu);
    ck_assert(send_all(fds[0], slow, sizeof(slow) - 1));
    pthread_mutex_lock(&slow_mu); /* the slow request is in its handler */
    for (int64_t dl = st_test_now_ms() + 10000; slow_in == 0 && st_test_now_ms() < dl;)
        st_cond_wait_ms(&slow_cv, &slow_mu, 50);
    ck_assert_int_eq(slow_in, 1);
    pthread_mutex_unlock(&slow_mu);
    for (int i = 1; i < CONNS; i++) {
        ck_assert(send_all(fds[i], rq, sizeof(rq) - 1));
        ck_assert_msg(read_whole(fds[i], 5000) == 200,
                      "connection %d waited behind the slow request on connection 0", i);
    }
    pthread_mutex_lock(&slow_mu);
    ck_assert_int_eq(slow_in, 1); /* all of that while it was still running */
    slow_released = true;
    pthread_cond_broadcast(&slow_cv);
    pthread_mutex_unlock(&slow_mu);
    ck_assert_int_eq(read_status(fds[0], 10000), 200);
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
    st_http_stop(h);
}
END_TEST

/*
 * At most max_active handlers run at once: a third slow request waits for a slot (in its own
 * thread) while two run, the open paths answer meanwhile, and it runs once one finishes.
 */
START_TEST(test_http_max_active)
{
    struct st_http *h = start_n(NULL, 0, 30, 2);
    uint16_t port = st_http_port(h);
    static const char slow[] = "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n";
    pthread_mutex_lock(&slow_mu);
    slow_released = false;
    pthread_mutex_unlock(&slow_mu);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = dial(port);
        ck_assert(send_all(fds[i], slow, sizeof(slow) - 1));
    }
    pthread_mutex_lock(&slow_mu);
    for (int64_t dl = st_test_now_ms() + 10000; slow_in < 2 && st_test_now_ms() < dl;)
        st_cond_wait_ms(&slow_cv, &slow_mu, 50);
    ck_assert_int_eq(slow_in, 2);
    pthread_mutex_unlock(&slow_mu);
    ck_assert_int_eq(request(port, "GET", "/healthz", NULL, NULL), 200); /* open: no slot */
    pthread_mutex_lock(&slow_mu); /* the third stays out for as long as two are in */
    for (int64_t dl = st_test_now_ms() + 300; slow_in < 3 && st_test_now_ms() < dl;)
        st_cond_wait_ms(&slow_cv, &slow_mu, 50);
    ck_assert_int_eq(slow_in, 2);
    slow_released = true;
    pthread_cond_broadcast(&slow_cv);
    pthread_mutex_unlock(&slow_mu);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(read_whole(fds[i], 10000), 200);
        close(fds[i]);
    }
    st_http_stop(h);
}
END_TEST

int main(void)
{
    st_cond_init_mono(&slow_cv);
    Suite *su = suite_create("http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_http_auth_and_limits);
    tcase_add_test(tc, test_http_error_utf8);
    tcase_add_test(tc, test_http_slow_clients);
    tcase_add_test(tc, test_http_oversized_header);
    tcase_add_test(tc, test_http_connection_limit);
    tcase_add_test(tc, test_http_keepalive_no_head_of_line);
    tcase_add_test(tc, test_http_max_active);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
