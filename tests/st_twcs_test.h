/* st_twcs_test.h — twcs helpers for tests. */
#ifndef ST_TWCS_TEST_H
#define ST_TWCS_TEST_H

#include <stdbool.h>
#include <stdint.h>

#include "twcs.h"

#define ST_TWCS_TEST_DIM 4

/* Writes one record "id-<k>" = {k, 1, 2, 3} at ts as (part, off); fails the test if the write
 * errs. Returns the verdict; *expired (may be NULL) the records dropped as expired. */
enum twcs_verdict st_twcs_put(struct twcs *t, int32_t part, int64_t off, int k, int64_t ts,
                              uint32_t *expired);
/* The same, and *reason (may be NULL) the rejection's reason ("" when accepted). */
enum twcs_verdict st_twcs_put_why(struct twcs *t, int32_t part, int64_t off, int k, int64_t ts,
                                  uint32_t *expired, const char **reason);

/* The window starting at start as twcs_windows lists it (expired windows are not listed);
 * *found says whether it is. Fails the test if the listing errs. */
struct twcs_window_info st_twcs_window(struct twcs *t, int64_t start, bool *found);

#endif
