/*
 * st_utf8.h — UTF-8 well-formedness (RFC 3629: no overlong forms, surrogates, or code points
 * past U+10FFFF), for bytes that reach JSON: jansson refuses strings that are not UTF-8.
 */
#ifndef ST_UTF8_H
#define ST_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The length (1..4) of the well-formed sequence that starts s (n bytes available), or 0. */
size_t st_utf8_seq(const uint8_t *s, size_t n);

/* Are all n bytes well-formed UTF-8? (NUL is a character: string ids may not hold it, callers
 * that care check it themselves.) */
bool st_utf8_valid(const uint8_t *s, size_t n);

/* In place: every byte of s (NUL-terminated) not in a well-formed sequence becomes '?'. */
void st_utf8_scrub(char *s);

#endif
