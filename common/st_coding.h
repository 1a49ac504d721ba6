/*
 * st_coding.h — explicit little-endian encoding for every on-disk and wire format.
 * Never write a struct to disk; encode each field with these helpers. Unaligned access is
 * fine: the helpers go through memcpy, which compilers lower to single moves on x86-64.
 */
#ifndef ST_CODING_H
#define ST_CODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void st_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void st_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void st_put_le64(uint8_t *p, uint64_t v)
{
    st_put_le32(p, (uint32_t)v);
    st_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t st_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t st_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t st_get_le64(const uint8_t *p)
{
    return (uint64_t)st_get_le32(p) | (uint64_t)st_get_le32(p + 4) << 32;
}

static inline void st_put_f32(uint8_t *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, sizeof(v));
    st_put_le32(p, v);
}

static inline float st_get_f32(const uint8_t *p)
{
    uint32_t v = st_get_le32(p);
    float f;
    memcpy(&f, &v, sizeof(f));
    return f;
}

/*
 * Unsigned LEB128 varint. st_put_varint writes at most 10 bytes and returns the count.
 * st_get_varint returns bytes consumed, or 0 when the input is truncated or overlong.
 */
static inline size_t st_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static inline size_t st_get_varint(const uint8_t *p, size_t avail, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < avail && i < 10; i++) {
        uint64_t b = p[i];
        if (i == 9 && b > 1)
            return 0; /* would overflow 64 bits */
        v |= (b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

/*
 * A uint64 written in decimal: s[0..n) must be one or more ASCII digits and nothing else (no
 * sign, space or terminator needed; leading zeros allowed). False when it is not, or when the
 * value exceeds 2^64 - 1. How u64 ids of 2^63 and above travel in JSON, which jansson's
 * integers (int64) cannot hold.
 */
static inline bool st_parse_u64_dec(const char *s, size_t n, uint64_t *out)
{
    if (n == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* v as 8 bytes big-endian (u64 ids: stored so that they sort numerically), and back. */
static inline void st_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static inline uint64_t st_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

#endif
