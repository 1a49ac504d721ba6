/* twcs helpers shared by the test suites. */
#include "st_twcs_test.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_error.h"

enum twcs_verdict st_twcs_put(struct twcs *t, int32_t part, int64_t off, int k, int64_t ts,
                              uint32_t *expired)
{
    return st_twcs_put_why(t, part, off, k, ts, expired, NULL);
}

enum twcs_verdict st_twcs_put_why(struct twcs *t, int32_t part, int64_t off, int k, int64_t ts,
                                  uint32_t *expired, const char **reason)
{
    char id[32];
    snprintf(id, sizeof(id), "id-%d", k);
    float v[ST_TWCS_TEST_DIM] = {(float)k, 1, 2, 3};
    struct store_record r = {.id = (const uint8_t *)id,
                             .id_len = (uint32_t)strlen(id),
                             .ts = ts,
                             .op = STORE_OP_UPSERT,
                             .vec = v};
    struct twcs_result res;
    int rc = twcs_write(t, part, off, &r, 1, &res);
    ck_assert_msg(rc == ST_OK, "twcs_write: %s", st_strerror(rc));
    if (expired)
        *expired = res.expired;
    if (reason)
        *reason = res.reason ? res.reason : "";
    return res.verdict;
}

struct twcs_window_info st_twcs_window(struct twcs *t, int64_t start, bool *found)
{
    struct twcs_window_info *w, r = {0};
    size_t n;
    ck_assert_int_eq(twcs_windows(t, &w, &n), ST_OK);
    *found = false;
    for (size_t i = 0; i < n; i++)
        if (w[i].start == start) {
            r = w[i];
            *found = true;
        }
    free(w);
    return r;
}
