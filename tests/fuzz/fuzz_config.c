/*
 * libFuzzer target: the YAML config loader (config/cfg.h) on arbitrary text. It either loads
 * (and then validates: what it accepted is a whole config) or refuses with at least one
 * FILE:LINE:COL message; it never crashes or leaks.
 */
#include <stdlib.h>
#include <string.h>

#include "cfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg *c = NULL;
    struct cfg_errors errs = {0};
    int rc = cfg_load_string("fuzz.yaml", (const char *)data, size, &c, &errs);
    if (rc == ST_OK) {
        if (c == NULL || errs.n != 0)
            abort();
        cfg_free(c);
    } else {
        if (c != NULL)
            abort();
        if (rc == ST_EINVAL && errs.n == 0)
            abort(); /* a refusal always says why */
        for (size_t i = 0; i < errs.n; i++)
            if (strncmp(errs.lines[i], "fuzz.yaml:", 10) != 0)
                abort(); /* every message starts FILE:LINE:COL */
    }
    cfg_errors_clear(&errs);
    return 0;
}
