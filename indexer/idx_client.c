/* idx_client.c — HTTP calls from an indexer to ingest nodes (idx_client.h). */
#include "idx_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_fault.h"
#include "store_fs.h"

#define RESP_MAX (64u << 20)

/*
 * Multi handles kept between calls. libcurl keeps the connections a multi handle's transfers
 * opened in that handle's cache, so the next call to the same ingest node reuses one instead
 * of connecting anew (a handshake, and a thread started on the node's thread-per-connection
 * server, on the way of every strong search). A multi handle serves one thread at a time:
 * idx_client_run takes one from this list and gives it back after. (One connection cache
 * shared by threads, CURLSH with CURL_LOCK_DATA_CONNECT, is not supported by libcurl.) The
 * list grows to the number of calls that ran at once, at most POOL_MAX; a call that finds it
 * empty makes a handle, and one given back to a full list is closed. What is kept is bounded:
 * a handle keeps at most as many idle connections as its last call asked distinct nodes
 * (CURLMOPT_MAXCONNECTS, a limit for the handle: libcurl closes the least recently used, so a
 * call asking one node several things at once keeps one, and a node whose connection was
 * closed that way is connected again by its next call), a connection idle CONN_MAX_AGE_S is
 * not reused, and a handle left in the list that long is closed (its connections, which the
 * node has closed or soon will, with it) whenever a call takes or gives back one.
 * Names are resolved on every call (no DNS cache): a node restarted at a new address under
 * the same name is reached at once; a kept connection is found by name and port all the same.
 */
#define POOL_MAX 8
/* below st_http's 30 s idle timeout: never reuse a connection the node is about to close */
#define CONN_MAX_AGE_S 20
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    CURLM *m;
    int64_t at; /* monotonic ns when given back */
} pool[POOL_MAX];
static size_t npool;
static _Atomic uint64_t connects;
static const struct st_clock *_Atomic pool_clock; /* NULL: the system's (tests set another) */

int idx_client_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? ST_OK : ST_EINTERNAL;
}

void idx_client_cleanup(void)
{
    pthread_mutex_lock(&pool_mu);
    while (npool > 0)
        curl_multi_cleanup(pool[--npool].m);
    pthread_mutex_unlock(&pool_mu);
    curl_global_cleanup();
}

uint64_t idx_client_connects(void)
{
    return atomic_load(&connects);
}

/* Takes the handles idle past CONN_MAX_AGE_S out of the list, into stale (pool_mu held). */
static size_t take_stale_locked(CURLM **stale, int64_t now)
{
    int64_t old = now - (int64_t)CONN_MAX_AGE_S * 1000000000;
    size_t nstale = 0, keep = 0;
    for (size_t i = 0; i < npool; i++) {
        if (pool[i].at < old)
            stale[nstale++] = pool[i].m;
        else
            pool[keep++] = pool[i];
    }
    npool = keep;
    return nstale;
}

static void close_all(CURLM **m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        curl_multi_cleanup(m[i]);
}

void idx_client_set_clock(const struct st_clock *c)
{
    /* The kept handles' times are on the old clock: closed, so that none is compared with
     * the new one. */
    CURLM *old[POOL_MAX];
    pthread_mutex_lock(&pool_mu);
    size_t n = npool;
    for (size_t i = 0; i < n; i++)
        old[i] = pool[i].m;
    npool = 0;
    atomic_store(&pool_clock, c);
    pthread_mutex_unlock(&pool_mu);
    close_all(old, n);
}

/* The most recently given back handle (its connections the likeliest alive). */
static CURLM *multi_take(void)
{
    CURLM *stale[POOL_MAX], *m = NULL;
    pthread_mutex_lock(&pool_mu);
    size_t nstale = take_stale_locked(stale, st_clock_mono_ns(atomic_load(&pool_clock)));
    if (npool > 0)
        m = pool[--npool].m;
    pthread_mutex_unlock(&pool_mu);
    close_all(stale, nstale);
    return m != NULL ? m : curl_multi_init();
}

static void multi_give(CURLM *m)
{
    if (m == NULL)
        return;
    CURLM *stale[POOL_MAX + 1];
    int64_t now = st_clock_mono_ns(atomic_load(&pool_clock));
    pthread_mutex_lock(&pool_mu);
    size_t nstale = take_stale_locked(stale, now);
    if (npool < POOL_MAX) {
        pool[npool].m = m;
        pool[npool++].at = now;
    } else {
        stale[nstale++] = m;
    }
    pthread_mutex_unlock(&pool_mu);
    close_all(stale, nstale);
}

/* How many distinct nodes (scheme://host:port) the calls name. */
static long distinct_nodes(const struct idx_call *calls, size_t n)
{
    long d = 0;
    for (size_t i = 0; i < n; i++) {
        const char *u = calls[i].url, *h = strstr(u, "://");
        size_t len = h != NULL ? (size_t)(h + 3 - u) + strcspn(h + 3, "/?#") : strlen(u);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strncmp(calls[j].url, u, len) == 0 &&
                   strchr("/?#", calls[j].url[len]) != NULL; /* also matches its NUL */
        d += !seen;
    }
    return d;
}

struct sink {
    const _Atomic bool *stop;
    struct store_file *f;
    uint64_t got, max;
    int rc;
    uint32_t checksum;
    char *buf;
    size_t len;
};

static size_t to_file(char *p, size_t sz, size_t nm, void *ctx)
{
    struct sink *s = ctx;
    size_t n = sz * nm;
    if (s->got + n > s->max) {
        s->rc = ST_ERANGE;
        return 0;
    }
    int rc = store_fs_write(s->f, p, n, "idx.fetch.write");
    if (rc != ST_OK) {
        s->rc = rc;
        return 0;
    }
    s->got += n;
    return n;
}

static size_t header(char *p, size_t sz, size_t nm, void *ctx)
{
    struct sink *s = ctx;
    size_t n = sz * nm;
    static const char name[] = "X-Strata-Checksum:";
    if (n > sizeof(name) && strncasecmp(p, name, sizeof(name) - 1) == 0)
        s->checksum = (uint32_t)strtoul(p + sizeof(name) - 1, NULL, 10);
    return n;
}

static int progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    struct sink *s = ctx;
    if (s->stop != NULL && atomic_load(s->stop)) {
        s->rc = ST_ECLOSED;
        return 1; /* abort the transfer */
    }
    return 0;
}

static struct curl_slist *auth(const char *token)
{
    if (token == NULL || token[0] == '\0')
        return NULL;
    char h[600];
    snprintf(h, sizeof(h), "Authorization: Bearer %s", token);
    return curl_slist_append(NULL, h);
}

int idx_client_fetch(const char *url, const char *path, const char *token, uint64_t max_bytes,
                     int64_t timeout_ms, const _Atomic bool *stop, uint32_t *checksum,
                     struct st_err *err)
{
    *checksum = 0;
    if (ST_FAULT("idx.fetch") != 0)
        return st_err_set(err, ST_EIO, "%s: injected fetch failure", url);
    struct sink s = {.max = max_bytes, .stop = stop};
    st_best_effort(store_fs_unlink(NULL, path, "idx.fetch.unlink_stale"));
    int rc = store_fs_create(NULL, path, &s.f, "idx.fetch.create");
    if (rc != ST_OK)
        return st_err_set(err, rc, "%s: cannot create: %s", path, st_strerror(rc));
    CURL *c = curl_easy_init();
    struct curl_slist *hs = auth(token);
    long status = 0;
    CURLcode cc = CURLE_FAILED_INIT;
    if (c != NULL) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_file);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
        if (hs != NULL)
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
        cc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    if (cc != CURLE_OK && s.rc != ST_OK)
        rc =
            st_err_set(err, s.rc, "%s: %s", url,
                       s.rc == ST_ERANGE ? "larger than its sealed event said" : st_strerror(s.rc));
    else if (cc != CURLE_OK)
        rc = st_err_set(err, ST_EIO, "%s: %s", url, curl_easy_strerror(cc));
    else if (status == 404)
        rc = st_err_set(err, ST_ENOTFOUND, "%s: 404 (no longer live on its node)", url);
    else if (status != 200)
        rc = st_err_set(err, ST_EIO, "%s: HTTP %ld", url, status);
    else
        rc = store_fs_sync(s.f, "idx.fetch.fsync");
    curl_slist_free_all(hs);
    if (c != NULL)
        curl_easy_cleanup(c);
    store_fs_close(s.f);
    if (rc != ST_OK) {
        if (err->code == ST_OK)
            st_err_set(err, rc, "%s: %s", path, st_strerror(rc));
        st_best_effort(store_fs_unlink(NULL, path, "idx.fetch.unlink_failed"));
        return rc;
    }
    *checksum = s.checksum;
    return ST_OK;
}

static size_t to_mem(char *p, size_t sz, size_t nm, void *ctx)
{
    struct idx_call *c = ctx;
    size_t n = sz * nm;
    if (c->resp_len + n > RESP_MAX)
        return 0;
    char *b = realloc(c->resp, c->resp_len + n + 1);
    if (b == NULL)
        return 0;
    memcpy(b + c->resp_len, p, n);
    c->resp = b;
    c->resp_len += n;
    b[c->resp_len] = '\0';
    return n;
}

void idx_client_run(struct idx_call *calls, size_t n, const char *token, int64_t timeout_ms)
{
    CURLM *m = multi_take();
    if (m != NULL && n > 0) /* what the handle keeps: see the pool's comment */
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, distinct_nodes(calls, n));
    CURL **h = calloc(n ? n : 1, sizeof(*h));
    struct curl_slist *hs = auth(token);
    hs = curl_slist_append(hs, "Content-Type: application/json");
    for (size_t i = 0; i < n; i++) {
        struct idx_call *c = &calls[i];
        c->resp = NULL;
        c->resp_len = 0;
        c->status = 0;
        c->error[0] = '\0';
        c->reused = false;
        if (m == NULL || h == NULL || (h[i] = curl_easy_init()) == NULL) {
            snprintf(c->error, sizeof(c->error), "out of memory");
            continue;
        }
        curl_easy_setopt(h[i], CURLOPT_URL, c->url);
        curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, to_mem);
        curl_easy_setopt(h[i], CURLOPT_WRITEDATA, c);
        curl_easy_setopt(h[i], CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(h[i], CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h[i], CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h[i], CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, c);
        curl_easy_setopt(h[i], CURLOPT_MAXAGE_CONN, (long)CONN_MAX_AGE_S);
        curl_easy_setopt(h[i], CURLOPT_DNS_CACHE_TIMEOUT, 0L);
        if (c->body != NULL)
            curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, c->body);
        curl_multi_add_handle(m, h[i]);
    }
    int running = 0;
    do {
        if (m == NULL || curl_multi_perform(m, &running) != CURLM_OK)
            break;
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    } while (running > 0);
    CURLMsg *msg;
    int left;
    while (m != NULL && (msg = curl_multi_info_read(m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct idx_call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (c == NULL)
            continue;
        long nc = 0;
        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_NUM_CONNECTS, &nc) == CURLE_OK && nc > 0)
            atomic_fetch_add(&connects, (uint64_t)nc);
        c->reused = nc == 0 && msg->data.result == CURLE_OK;
        if (msg->data.result == CURLE_OK)
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &c->status);
        else
            snprintf(c->error, sizeof(c->error), "%s", curl_easy_strerror(msg->data.result));
    }
    for (size_t i = 0; i < n; i++) {
        if (h != NULL && h[i] != NULL) {
            curl_multi_remove_handle(m, h[i]);
            curl_easy_cleanup(h[i]);
        }
        if (calls[i].status == 0 && calls[i].error[0] == '\0')
            snprintf(calls[i].error, sizeof(calls[i].error), "no answer within %lld ms",
                     (long long)timeout_ms);
    }
    curl_slist_free_all(hs);
    free(h);
    multi_give(m);
}

void idx_call_free(struct idx_call *c)
{
    free(c->resp);
    c->resp = NULL;
    c->resp_len = 0;
}

/* Copies a segment from a shared filesystem path into path (fsynced), at most max bytes,
 * through a 1 MiB buffer. Only a regular file no larger than max is read (an event naming a
 * device, a FIFO or a directory is refused before any byte is copied: /dev/zero once filled
 * the disk), and a stop abandons the copy (ST_ECLOSED). */
int idx_client_copy_path(const char *src, const char *path, uint64_t max, const _Atomic bool *stop,
                         struct st_err *err)
{
    if (strncmp(src, "file://", 7) == 0)
        src += 7;
    int fd = open(src, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return st_err_set(err, ST_EIO, "%s: cannot open", src); /* retried: a mount may be back */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return st_err_set(err, ST_EIO, "%s: cannot stat", src);
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        bool reg = S_ISREG(st.st_mode);
        close(fd);
        st_best_effort(store_fs_unlink(NULL, path, "idx.fetch.unlink_stale"));
        /* permanent: the service gives up on the event after its attempts (ST_EINVAL would
         * be retried for ever) */
        return st_err_set(err, reg ? ST_ERANGE : ST_ECORRUPT, "%s: %s", src,
                          reg ? "larger than its sealed event said" : "not a regular file");
    }
    struct store_file *f = NULL;
    st_best_effort(store_fs_unlink(NULL, path, "idx.fetch.unlink_stale"));
    int rc = store_fs_create(NULL, path, &f, "idx.fetch.create");
    char *buf = rc == ST_OK ? malloc(1u << 20) : NULL;
    uint64_t total = 0;
    if (rc == ST_OK && buf == NULL)
        rc = ST_ENOMEM;
    while (rc == ST_OK) {
        if (stop != NULL && atomic_load(stop)) {
            rc = ST_ECLOSED;
            break;
        }
        ssize_t n = read(fd, buf, 1u << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                rc = ST_EIO;
            break;
        }
        if ((total += (uint64_t)n) > max)
            rc = ST_ERANGE;
        else
            rc = store_fs_write(f, buf, (size_t)n, "idx.fetch.write");
    }
    if (rc == ST_OK)
        rc = store_fs_sync(f, "idx.fetch.fsync");
    free(buf);
    close(fd);
    store_fs_close(f);
    if (rc != ST_OK) {
        st_best_effort(store_fs_unlink(NULL, path, "idx.fetch.unlink_failed"));
        return st_err_set(err, rc, "%s: %s", src,
                          rc == ST_ERANGE ? "larger than its sealed event said" : st_strerror(rc));
    }
    return ST_OK;
}
