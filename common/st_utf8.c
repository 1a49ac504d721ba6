#include "st_utf8.h"

#include <string.h>

size_t st_utf8_seq(const uint8_t *s, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t c = s[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xc2 && c <= 0xdf ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n)
        return 0;
    /* The second byte's range narrows for E0 (overlong), ED (surrogates), F0 and F4. */
    uint8_t lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
    uint8_t hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    for (size_t i = 1; i < len; i++)
        if (i == 1 ? s[i] < lo || s[i] > hi : s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

bool st_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { /* ASCII runs, the common case */
            i++;
            continue;
        }
        size_t l = st_utf8_seq(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

void st_utf8_scrub(char *str)
{
    uint8_t *s = (uint8_t *)str;
    size_t n = strlen(str);
    for (size_t i = 0; i < n;) {
        size_t l = st_utf8_seq(s + i, n - i);
        if (l == 0)
            s[i++] = '?';
        else
            i += l;
    }
}
