/* Durations ("1h30m", "500ms", "30d") and sizes ("64MiB", "1024") for the YAML config. */
#include "cfg.h"

#include <ctype.h>
#include <string.h>

static int parse_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*s))
        return ST_EINVAL;
    while (isdigit((unsigned char)*s)) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return ST_ERANGE;
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return ST_OK;
}

int cfg_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return ST_OK;
    }
    if (*s == '\0')
        return ST_EINVAL;
    uint64_t total = 0;
    const char *p = s;
    while (*p != '\0') {
        uint64_t v;
        int rc = parse_digits(&p, &v);
        if (rc != ST_OK)
            return rc;
        size_t best = 0, best_len = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t ul = strlen(units[i].unit);
            /* longest match so that "ms" wins over "m" */
            if (strncmp(p, units[i].unit, ul) == 0 && ul > best_len &&
                !isalpha((unsigned char)p[ul])) {
                best = i;
                best_len = ul;
            }
        }
        if (best_len == 0)
            return ST_EINVAL;
        if (v > (uint64_t)INT64_MAX / units[best].ms)
            return ST_ERANGE;
        v *= units[best].ms;
        if (total > (uint64_t)INT64_MAX - v)
            return ST_ERANGE;
        total += v;
        p += best_len;
    }
    *out = (int64_t)total;
    return ST_OK;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        unsigned shift;
    } units[] = {{"", 0}, {"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}};
    const char *p = s;
    uint64_t v;
    int rc = parse_digits(&p, &v);
    if (rc != ST_OK)
        return rc;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (units[i].shift > 0 && v > (UINT64_MAX >> units[i].shift))
                return ST_ERANGE;
            *out = v << units[i].shift;
            return ST_OK;
        }
    }
    return ST_EINVAL;
}
