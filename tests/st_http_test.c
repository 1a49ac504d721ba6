#include "st_http_test.h"

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
