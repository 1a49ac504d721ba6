/* The daemons' HTTP server on libmicrohttpd. */
#include "st_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "st_log.h"
#include "st_utf8.h"

struct st_http {
    struct st_http_opts o;
    struct MHD_Daemon *d;
    int lfd;
    uint16_t port;
    char *token;
    size_t token_len;
    /* Handlers running at once, at most o.max_active (guarded by amu); a request past it
     * waits on acv, in its own connection's thread. */
    pthread_mutex_t amu;
    pthread_cond_t acv;
    unsigned active;
};

struct conn_state {
    uint8_t *buf;
    size_t len, cap;
    bool too_big;
};

const char *st_http_header(const struct st_http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn_, MHD_HEADER_KIND, name);
}

const char *st_http_query(const struct st_http_req *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn_, MHD_GET_ARGUMENT_KIND, key);
}

void st_http_text(struct st_http_resp *resp, int status, const char *content_type, const char *text,
                  size_t len)
{
    free(resp->body);
    resp->body = malloc(len + 1);
    resp->status = resp->body != NULL ? status : 500;
    resp->len = resp->body != NULL ? len : 0;
    resp->content_type = content_type;
    if (resp->body != NULL) {
        memcpy(resp->body, text, len);
        resp->body[len] = '\0';
    }
}

void st_http_json(struct st_http_resp *resp, int status, json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    free(resp->body);
    resp->body = NULL;
    resp->len = 0;
    resp->content_type = "application/json";
    if (s == NULL) { /* still a JSON error body, as every error response has */
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"response not encodable\"}}";
        resp->status = 500;
        if ((s = strdup(oom)) == NULL)
            return;
        status = 500;
    }
    resp->status = status;
    resp->len = strlen(s);
    /* jansson allocates with malloc by default: the server frees it with free(). */
    resp->body = s;
}

void st_http_error(struct st_http_resp *resp, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A message may quote a client's bytes (a JSON parse error near them) or be cut inside a
     * character by the buffer: jansson would refuse it and the client get an empty 500. */
    st_utf8_scrub(msg);
    st_http_json(resp, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

void st_http_resp_header(struct st_http_resp *resp, const char *name, const char *fmt, ...)
{
    if (resp->nh >= ST_HTTP_MAX_HEADERS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(resp->hval[resp->nh], sizeof(resp->hval[0]), fmt, ap);
    va_end(ap);
    resp->hname[resp->nh++] = name;
}

int st_http_split_hostport(const char *s, char *host, size_t hcap, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':')
            return ST_EINVAL;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return ST_EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hcap)
        return ST_EINVAL;
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || p > 65535)
        return ST_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return ST_OK;
}

static bool is_open_path(const struct st_http *h, const char *path)
{
    for (size_t i = 0; h->o.open_paths != NULL && h->o.open_paths[i] != NULL; i++)
        if (strcmp(h->o.open_paths[i], path) == 0)
            return true;
    return false;
}

/* Constant-time comparison of the presented token with ours. */
static bool auth_ok(const struct st_http *h, const char *authz)
{
    if (authz == NULL || strncmp(authz, "Bearer ", 7) != 0)
        return false;
    const char *t = authz + 7;
    size_t n = strlen(t);
    unsigned char diff = (unsigned char)(n != h->token_len);
    for (size_t i = 0; i < h->token_len; i++)
        diff |= (unsigned char)(h->token[i] ^ (i < n ? t[i] : 0));
    return diff == 0;
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct st_http_resp *r)
{
    struct MHD_Response *mr;
    if (r->fd >= 0) {
        mr = MHD_create_response_from_fd64(r->fd_len, r->fd);
        if (mr == NULL)
            close(r->fd);
        free(r->body);
    } else {
        if (r->body == NULL) {
            r->body = calloc(1, 1);
            r->len = 0;
        }
        mr = r->body != NULL
                 ? MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE)
                 : NULL;
        if (mr == NULL)
            free(r->body);
    }
    if (mr == NULL)
        return MHD_NO;
    if (r->content_type != NULL)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    for (unsigned i = 0; i < r->nh; i++)
        MHD_add_response_header(mr, r->hname[i], r->hval[i]);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct st_http *h = cls;
    struct conn_state *cs = *con_cls;
    struct st_http_resp resp = {.status = 500, .fd = -1};
    if (cs == NULL) {
        cs = calloc(1, sizeof(*cs));
        if (cs == NULL)
            return MHD_NO;
        *con_cls = cs;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > h->o.max_body) {
            /* Refused before reading it (no 100-continue). */
            st_http_error(&resp, 413, "payload_too_large",
                          "request body of %s bytes is over "
                          "http.max_body (%zu bytes)",
                          cl, h->o.max_body);
            return send_resp(conn, &resp);
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!cs->too_big && cs->len + *upload_size > h->o.max_body) {
            cs->too_big = true;
            free(cs->buf);
            cs->buf = NULL;
            cs->len = cs->cap = 0;
        }
        if (!cs->too_big) {
            if (cs->len + *upload_size + 1 > cs->cap) {
                size_t cap = cs->cap ? cs->cap : 4096;
                while (cap < cs->len + *upload_size + 1)
                    cap *= 2;
                uint8_t *b = realloc(cs->buf, cap);
                if (b == NULL)
                    return MHD_NO;
                cs->buf = b;
                cs->cap = cap;
            }
            memcpy(cs->buf + cs->len, upload, *upload_size);
            cs->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    /* The open paths (health, readiness, metrics, the status page) need no token, and they
     * are cheap and must answer under load: they take none of the max_active slots. */
    bool open = is_open_path(h, url);
    if (cs->too_big) {
        st_http_error(&resp, 413, "payload_too_large",
                      "request body is over http.max_body (%zu bytes)", h->o.max_body);
    } else if (h->token != NULL && !open &&
               !auth_ok(h, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION))) {
        st_http_error(&resp, 401, "unauthenticated", "missing or wrong bearer token");
        st_http_resp_header(&resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    } else {
        if (cs->buf != NULL)
            cs->buf[cs->len] = '\0';
        struct st_http_req req = {.method = method,
                                  .path = url,
                                  .body = cs->buf != NULL ? cs->buf : (const uint8_t *)"",
                                  .body_len = cs->len,
                                  .conn_ = conn};
        if (!open) {
            pthread_mutex_lock(&h->amu);
            while (h->active >= h->o.max_active)
                pthread_cond_wait(&h->acv, &h->amu);
            h->active++;
            pthread_mutex_unlock(&h->amu);
        }
        h->o.handler(h->o.ctx, &req, &resp);
        if (!open) {
            pthread_mutex_lock(&h->amu);
            h->active--;
            pthread_cond_signal(&h->acv);
            pthread_mutex_unlock(&h->amu);
        }
    }
    return send_resp(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct conn_state *cs = *con_cls;
    if (cs != NULL) {
        free(cs->buf);
        free(cs);
        *con_cls = NULL;
    }
}

ST_PRINTF(2, 0) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    /* At the connection limit MHD accepts and closes each new connection and says so each
     * time: a flood of clients must not become a flood of log lines. */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static struct st_ratelimit rl;
    uint32_t dropped = 0;
    pthread_mutex_lock(&mu);
    bool ok = st_ratelimit_ok(&rl, 10, 10000, &dropped);
    pthread_mutex_unlock(&mu);
    if (!ok)
        return;
    if (dropped > 0)
        st_log_warn("http", "%u messages of the HTTP server suppressed", dropped);
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    st_log_warn("http", "%s", msg);
}

static int read_token(struct st_http *h, const char *path, struct st_err *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return st_err_sys(err, errno, "http.auth_token_file %s", path);
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    if (n == 0)
        return st_err_set(err, ST_EINVAL, "http.auth_token_file %s is empty", path);
    h->token = strdup(buf);
    h->token_len = n;
    return h->token != NULL ? ST_OK : ST_ENOMEM;
}

static int listen_on(struct st_http *h, const char *addr, struct st_err *err)
{
    char host[256], port[8];
    uint16_t p;
    if (st_http_split_hostport(addr, host, sizeof(host), &p) != ST_OK)
        return st_err_set(err, ST_EINVAL, "listen address '%s': expected host:port", addr);
    snprintf(port, sizeof(port), "%u", p);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0)
        return st_err_set(err, ST_EINVAL, "listen address '%s': %s", addr, gai_strerror(gai));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return st_err_sys(err, e, "cannot listen on %s", addr);
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    h->lfd = fd;
    return ST_OK;
}

int st_http_start(const struct st_http_opts *o, struct st_http **out, struct st_err *err)
{
    *out = NULL;
    struct st_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return ST_ENOMEM;
    h->o = *o;
    h->lfd = -1;
    if (h->o.max_body == 0)
        h->o.max_body = 16u << 20;
    if (h->o.max_connections == 0)
        h->o.max_connections = 512;
    if (h->o.max_active == 0)
        h->o.max_active = 4;
    pthread_mutex_init(&h->amu, NULL);
    pthread_cond_init(&h->acv, NULL);
    if (h->o.idle_timeout_s == 0)
        h->o.idle_timeout_s = 30;
    int rc = ST_OK;
    if (o->auth_token_file != NULL && (rc = read_token(h, o->auth_token_file, err)) != ST_OK)
        goto fail;
    if ((rc = listen_on(h, o->listen, err)) != ST_OK)
        goto fail;
    /* A thread per connection: a handler blocks for as long as its request takes (a search
     * over many windows, a strong search waiting for ingest nodes), and with a pool of
     * threads each serving many connections a keep-alive connection's request waited behind
     * another connection's on a busy thread while other threads idled (check_http,
     * test_http_keepalive_no_head_of_line). max_connections bounds the threads. */
    h->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG,
                            0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
                            MHD_OPTION_LISTEN_SOCKET, h->lfd, MHD_OPTION_CONNECTION_TIMEOUT,
                            h->o.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, h->o.max_connections,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    if (h->d == NULL) {
        rc = st_err_set(err, ST_EIO, "cannot start the HTTP server on %s", o->listen);
        goto fail;
    }
    *out = h;
    return ST_OK;
fail:
    if (h->lfd >= 0)
        close(h->lfd);
    pthread_cond_destroy(&h->acv);
    pthread_mutex_destroy(&h->amu);
    free(h->token);
    free(h);
    return rc;
}

uint16_t st_http_port(const struct st_http *h)
{
    return h->port;
}

void st_http_stop(struct st_http *h)
{
    if (h == NULL)
        return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    MHD_stop_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    pthread_cond_destroy(&h->acv);
    pthread_mutex_destroy(&h->amu);
    free(h->token);
    free(h);
}
