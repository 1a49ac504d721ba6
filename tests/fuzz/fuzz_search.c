/*
 * libFuzzer target: the search request body both daemons parse (common/st_api.h, SPEC.md §5)
 * for a plain and a cosine collection. A refusal is a 400 with a JSON message; an accepted
 * request has a finite vector of the collection's dim and k in 1..1000.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "st_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size + 1);
    if (body == NULL)
        return 0;
    memcpy(body, data, size);
    body[size] = '\0';
    struct st_http_req req = {.method = "POST",
                              .path = "/v1/collections/c/search",
                              .body = (const uint8_t *)body,
                              .body_len = size};
    static const char *const extra[] = {"indexed_only", NULL};
    for (int cosine = 0; cosine < 2; cosine++) {
        struct st_http_resp resp = {.fd = -1};
        struct st_api_search s;
        if (st_api_search_parse(&req, "c", 3, cosine != 0, extra, &s, &resp)) {
            if (s.vec == NULL || s.k < 1 || s.k > ST_API_K_MAX || s.from_ts > s.to_ts)
                abort();
            for (int d = 0; d < 3; d++)
                if (!isfinite(s.vec[d]))
                    abort();
            st_api_search_free(&s);
        } else {
            json_t *j = json_loadb(resp.body, resp.len, 0, NULL);
            if (resp.status != 400 || j == NULL)
                abort();
            json_decref(j);
        }
        free(resp.body);
    }
    free(body);
    return 0;
}
