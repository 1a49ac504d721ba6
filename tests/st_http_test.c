#include "st_http_test.h"

#include <check.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct st_test_resp *r = ud;
    char *b = realloc(r->body, r->len + sz * n + 1);
    if (b == NULL)
        return 0;
    memcpy(b + r->len, p, sz * n);
    r->body = b;
    r->len += sz * n;
    b[r->len] = '\0';
    return sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct st_test_resp *r = ud;
    static const char h[] = "X-Strata-Checksum: ";
    if (sz * n > sizeof(h) - 1 && strncasecmp(p, h, sizeof(h) - 1) == 0)
        sscanf(p + sizeof(h) - 1, "%63[0-9]", r->checksum);
    return sz * n;
}

struct st_test_resp st_test_http(const char *url, const char *token, const char *body)
{
    struct st_test_resp r = {0};
    CURL *c = curl_easy_init();
    struct curl_slist *hs = NULL;
    char auth[256];
    if (c != NULL) {
        if (token != NULL) {
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
            hs = curl_slist_append(hs, auth);
        }
        if (body != NULL) {
            hs = curl_slist_append(hs, "Content-Type: application/json");
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
        if (curl_easy_perform(c) == CURLE_OK) {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
            char *ct = NULL;
            curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
            snprintf(r.ctype, sizeof(r.ctype), "%s", ct != NULL ? ct : "");
        }
        curl_slist_free_all(hs);
        curl_easy_cleanup(c);
    }
    if (r.body == NULL)
        r.body = strdup("");
    return r;
}

struct st_test_resp st_test_http_port(unsigned port, const char *path, const char *token,
                                      const char *body)
{
    char url[2048];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    return st_test_http(url, token, body);
}

void st_test_http_auth_walk(unsigned port, const char *coll, const char *token,
                            const char *const *extra)
{
    char p[8][256];
    snprintf(p[0], sizeof(p[0]), "/v1/collections");
    snprintf(p[1], sizeof(p[1]), "/v1/collections/%s", coll);
    snprintf(p[2], sizeof(p[2]), "/v1/collections/%s/windows", coll);
    snprintf(p[3], sizeof(p[3]), "/v1/collections/%s/records/x", coll);
    snprintf(p[4], sizeof(p[4]), "/v1/collections/%s/search", coll);
    snprintf(p[5], sizeof(p[5]), "/v1/status");
    snprintf(p[6], sizeof(p[6]), "/v1/collections/nope/windows"); /* 401 before 404 */
    snprintf(p[7], sizeof(p[7]), "/v1/no-such-route");
    struct route {
        const char *path, *body;
    } routes[32];
    size_t n = 0;
    for (size_t i = 0; i < 8; i++)
        routes[n++] = (struct route){p[i], i == 4 ? "{\"vector\": [0]}" : NULL};
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 32; i++)
        routes[n++] = (struct route){extra[i], NULL};
    const char *const wrong[] = {NULL, "wrong", "", "x" /* a prefix-length mismatch */};
    for (size_t i = 0; i < n; i++) {
        for (size_t w = 0; w < sizeof(wrong) / sizeof(wrong[0]); w++) {
            struct st_test_resp r =
                st_test_http_port(port, routes[i].path, wrong[w], routes[i].body);
            ck_assert_msg(r.status == 401 && strstr(r.body, "\"error\"") != NULL,
                          "%s with token '%s': HTTP %ld %s", routes[i].path,
                          wrong[w] ? wrong[w] : "(none)", r.status, r.body);
            free(r.body);
        }
        struct st_test_resp r = st_test_http_port(port, routes[i].path, token, routes[i].body);
        ck_assert_msg(r.status != 401 && r.status != 0, "%s with the token: HTTP %ld %s",
                      routes[i].path, r.status, r.body);
        free(r.body);
    }
    static const char *const open[] = {"/healthz", "/readyz", "/metrics", "/"};
    for (size_t i = 0; i < sizeof(open) / sizeof(open[0]); i++) {
        struct st_test_resp r = st_test_http_port(port, open[i], NULL, NULL);
        ck_assert_msg(r.status != 401 && r.status != 0, "%s without a token: HTTP %ld", open[i],
                      r.status);
        free(r.body);
    }
}

double st_test_metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

double st_test_metric_at(const char *url, const char *series)
{
    struct st_test_resp r = st_test_http(url, NULL, NULL);
    double v = r.status == 200 ? st_test_metric(r.body, series) : -1;
    free(r.body);
    return v;
}

double st_test_metric_port(unsigned port, const char *series)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", port);
    return st_test_metric_at(url, series);
}
