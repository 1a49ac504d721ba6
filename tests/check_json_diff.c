/*
 * The simdjson JSON decoder against the jansson reference (issue 14): for every input both
 * must return the same reason, and for a batch the same bits (ids, ts, op, meta bytes, every
 * float). tests/fuzz/fuzz_json_diff.h compares; this suite feeds it
 * - millions of numbers of every kind a producer or an attacker prints (shortest repr of
 *   float32-as-double, %.9g, %.17g of doubles, long digit strings, float halfway points and
 *   just off them, subnormals, integers, -0, overflow), each float also checked against
 *   (float)strtod, the reference's own definition;
 * - hand-written documents for each rule (whitespace, escapes, unicode, duplicate keys, meta,
 *   ids, ts, op, vector_b64, nesting), with the reason the reference gives;
 * - random documents from a grammar of the format, some with a byte mutated.
 * It also checks the fast path did the work: every message the reference accepts was decoded
 * by simdjson, not handed back.
 */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_json_diff.h"
#include "st_prom.h"
#include "st_test.h"

static const struct rec_collection colls[] = {{"docs", 3, false}, {"events", 4, true}};
static const struct rec_schema schema_docs = {colls, 2, &colls[0], 0};
static const struct rec_schema schema_none = {colls, 2, NULL, 0};

static struct rec_decoder *fast, *ref;

static void setup(void)
{
    fast = rec_decoder_new();
    ref = rec_decoder_new();
    ck_assert_ptr_nonnull(fast);
    ck_assert_ptr_nonnull(ref);
}

static void teardown(void)
{
    rec_decoder_free(fast);
    rec_decoder_free(ref);
}

static uint64_t fast_count(void)
{
    uint64_t f, b;
    rec_decoder_json_counts(fast, &f, &b);
    return f;
}

/* Decodes text with both; fails on any difference, and on an accepted message the fast path
 * handed back. Returns the reason. */
static enum rec_reason diff(const struct rec_schema *s, const char *text, size_t len)
{
    char why[700];
    enum rec_reason r;
    uint64_t before = fast_count();
    const char *d = json_diff(fast, ref, s, text, len, &r, why, sizeof(why));
    /* if + ck_abort_msg in the hot paths: every ck_assert writes to check's pipe */
    if (d != NULL)
        ck_abort_msg("%s\n  input (%zu bytes): %.*s", why, len, (int)(len > 4000 ? 4000 : len),
                     text);
    /* jansson skips one NUL byte right after a number or true/false/null (its lexer's unget
     * of the NUL ends its one-character buffer); simdjson refuses it, and the reference
     * decides such messages */
    if (r == REC_OK && fast_count() != before + 1 && memchr(text, 0, len) == NULL)
        ck_abort_msg("the fast path declined a valid message: %.*s", (int)(len > 4000 ? 4000 : len),
                     text);
    return r;
}

#define EXPECT(s, text, reason)                                                                    \
    do {                                                                                           \
        enum rec_reason r_ = diff(s, text, strlen(text));                                          \
        ck_assert_msg(r_ == (reason), "%s: %s, want %s", text, rec_reason_str(r_),                 \
                      rec_reason_str(reason));                                                     \
    } while (0)

/* ---- random numbers ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static uint32_t below(uint32_t n)
{
    return (uint32_t)(rng() % n);
}

static float random_float(bool subnormal)
{
    for (;;) {
        uint32_t u = (uint32_t)rng();
        if (subnormal)
            u &= 0x807fffffu;
        float f;
        memcpy(&f, &u, 4);
        if (isfinite(f))
            return f;
    }
}

/* The shortest of %.15g..%.17g that reads back (Python's repr of a float32 made double). */
static void put_repr(struct st_text *b, double x)
{
    char t[48];
    for (int p = 15; p <= 17; p++) {
        snprintf(t, sizeof(t), "%.*g", p, x);
        if (strtod(t, NULL) == x)
            break;
    }
    st_text_printf(b, "%s", t);
}

static void put_digits(struct st_text *b, int n, bool nonzero_first)
{
    for (int i = 0; i < n; i++)
        st_text_printf(b, "%c", (char)('0' + (i == 0 && nonzero_first ? 1 + below(9) : below(10))));
}

/*
 * One number that a valid message can hold (finite as a float after the reference's
 * (float)strtod, or an integer in int64 range), of a random kind.
 */
static void put_number(struct st_text *b)
{
    switch (below(10)) {
    case 0: /* Python json.dumps of a float32 -> float: the common producer */
    case 1:
        put_repr(b, (double)random_float(false));
        break;
    case 2:
        st_text_printf(b, "%.9g", (double)random_float(false));
        break;
    case 3: /* a double in and just beyond float range (underflow to subnormal or zero) */
        st_text_printf(b, "%.17g",
                       ldexp((double)(rng() >> 11) / 9007199254740992.0, (int)below(288) - 160) *
                           (rng() & 1 ? -1 : 1));
        break;
    case 4: { /* long digit strings, exponent kept so the value stays within float range */
        int intd = 1 + (int)below(25), fracd = (int)below(26);
        if (rng() & 1)
            st_text_printf(b, "-");
        if (intd == 1 && below(3) == 0)
            st_text_printf(b, "0");
        else
            put_digits(b, intd, true);
        if (fracd > 0) {
            st_text_printf(b, ".");
            put_digits(b, fracd, false);
        }
        int target = (int)below(84) - 46; /* 10^-46 .. 10^37 (x 9.99) */
        int e = target - (intd - 1);
        if (below(4) != 0 || e != 0 || (fracd == 0 && intd > 18)) /* else int64 or decimal */
            st_text_printf(b, "%c%s%d", rng() & 1 ? 'e' : 'E', e >= 0 && (rng() & 1) ? "+" : "", e);
        break;
    }
    case 5: { /* a float halfway point, exactly, or one digit off it (double rounding) */
        float f = random_float(below(4) == 0);
        float g = nextafterf(f, f > 0 ? INFINITY : -INFINITY);
        if (!isfinite(g))
            g = nextafterf(f, 0);
        double m = ((double)f + (double)g) / 2; /* exact: floats have 24 bits */
        char t[1100];
        snprintf(t, sizeof(t), "%.1000g", m);
        size_t n = strlen(t);
        while (n > 1 && t[n - 1] == '0' && strchr(t, '.') != NULL && strchr(t, 'e') == NULL)
            t[--n] = '\0';
        if (strpbrk(t, ".e") == NULL) /* %g prints large ones as integers: keep it a real */
            strcat(t, ".0");
        st_text_printf(b, "%s", t);
        if (strchr(t, 'e') == NULL && strchr(t, '.') != NULL && below(2) == 0)
            st_text_printf(b, "%s",
                           rng() & 1 ? "0000000000000000000001" : ""); /* above the midpoint */
        break;
    }
    case 6: /* float subnormals */
        put_repr(b, (double)random_float(true));
        break;
    case 7: { /* integers: small, around 2^24 and 2^53, and up to int64's ends */
        int64_t v;
        switch (below(6)) {
        case 0:
            v = (int64_t)below(2001) - 1000;
            break;
        case 1:
            v = (int64_t)(1 << 24) + (int64_t)below(9) - 4;
            break;
        case 2:
            v = ((int64_t)1 << 53) + (int64_t)below(9) - 4;
            break;
        case 3:
            v = INT64_MAX - (int64_t)below(3);
            break;
        case 4: { /* a float halfway point, +-1: lost in the double, so int64->double->float
                   * ties to even where int64->float would not */
            int sh = 31 + (int)below(8);
            v = (int64_t)((1u << 23 | below(1u << 23))) << sh;
            v += ((int64_t)1 << (sh - 1)) + (int64_t)below(3) - 1;
            break;
        }
        default:
            v = (int64_t)(rng() >> below(63));
            break;
        }
        if (rng() & 1)
            v = v == INT64_MIN ? v : -v;
        st_text_printf(b, "%" PRId64, v);
        break;
    }
    case 8: { /* zeros in every spelling */
        static const char *const z[] = {"0",     "-0",     "0.0",       "-0.0",     "0e0",
                                        "-0E-0", "0e+400", "-0.000e-9", "0.0e-999", "-0e999"};
        st_text_printf(b, "%s", z[below(10)]);
        break;
    }
    default: /* near the float range's ends */
        st_text_printf(b, "%.*g", 6 + (int)below(12),
                       (rng() & 1 ? 1 : -1) * (below(2)
                                                   ? 3.4028234e38 * (1 - ldexp(1, -(int)below(30)))
                                                   : 1.17549435e-38 * ldexp(1, -(int)below(30))));
        break;
    }
}

/* What the reference makes of a number token: jansson's integers (no '.', 'e' or 'E': "-0"
 * too) go (float)(double)strtoll, its reals (float)strtod. */
static float oracle(const char *tok)
{
    size_t n = strcspn(tok, ",] ");
    if (memchr(tok, '.', n) == NULL && memchr(tok, 'e', n) == NULL && memchr(tok, 'E', n) == NULL)
        return (float)(double)strtoll(tok, NULL, 10);
    return (float)strtod(tok, NULL);
}

/* Tokens that make a whole message fail, each with the reference's reason. */
static const struct {
    const char *tok;
    enum rec_reason reason;
} bad_numbers[] = {
    {"1e400", REC_NON_FINITE},
    {"-1e400", REC_NON_FINITE},
    {"1.7976931348623159e308", REC_NON_FINITE}, /* rounds to infinity as a double */
    {"1.7976931348623157e308", REC_NON_FINITE}, /* a double, infinite as a float */
    {"1e39", REC_NON_FINITE},
    {"3.4028235677973366e38", REC_NON_FINITE}, /* float max's upper halfway point: even is inf */
    {"99999999999999999999", REC_GARBAGE},     /* jansson: too big integer */
    {"9223372036854775808", REC_GARBAGE},
    {"-9223372036854775809", REC_GARBAGE},
    {"18446744073709551615", REC_GARBAGE},
    {"01", REC_GARBAGE},
    {"1.", REC_GARBAGE},
    {".5", REC_GARBAGE},
    {"+1", REC_GARBAGE},
    {"1e", REC_GARBAGE},
    {"-", REC_GARBAGE},
    {"NaN", REC_GARBAGE},
    {"Infinity", REC_GARBAGE},
    {"0x10", REC_GARBAGE},
    {"1e+", REC_GARBAGE},
    {"--1", REC_GARBAGE},
    {"1.5.5", REC_GARBAGE},
    {"\"1\"", REC_BAD_RECORD},
    {"null", REC_BAD_RECORD},
    {"[1]", REC_BAD_RECORD},
};

#define DIM     64
#define PER_MSG 16

START_TEST(test_numbers)
{
    static const struct rec_collection c64[] = {{"v", DIM, false}};
    static const struct rec_schema s64 = {c64, 1, &c64[0], 0};
    rng_state = 0x9e3779b97f4a7c15ull;
    struct st_text b = {0};
    size_t *starts = malloc(sizeof(size_t) * DIM * PER_MSG);
    ck_assert_ptr_nonnull(starts);
    uint64_t compared = 0, messages = 0, rejected = 0;
    while (compared < 2500000) {
        b.len = 0;
        bool dirty = below(8) == 0;
        uint32_t bad_at = dirty ? below(DIM * PER_MSG) : UINT32_MAX;
        uint32_t bad = below(sizeof(bad_numbers) / sizeof(bad_numbers[0]));
        st_text_printf(&b, "{\"records\":[");
        for (uint32_t i = 0; i < PER_MSG; i++) {
            st_text_printf(&b, "%s{\"id\":\"r%u\",\"vector\":[", i ? "," : "", i);
            for (uint32_t j = 0; j < DIM; j++) {
                uint32_t k = i * DIM + j;
                if (j)
                    st_text_printf(&b, below(16) == 0 ? " , " : ",");
                starts[k] = b.len;
                if (k == bad_at) {
                    st_text_printf(&b, "%s", bad_numbers[bad].tok);
                } else {
                    put_number(&b);
                }
            }
            st_text_printf(&b, "]}");
        }
        st_text_printf(&b, "]}");
        /* the oracle reads tokens in place: strtod stops at ',' or ']' */
        ck_assert(!b.oom);
        enum rec_reason r = diff(&s64, b.p, b.len);
        messages++;
        if (dirty) {
            if (r != bad_numbers[bad].reason)
                ck_abort_msg("%s: %s, want %s", bad_numbers[bad].tok, rec_reason_str(r),
                             rec_reason_str(bad_numbers[bad].reason));
            rejected++;
            continue;
        }
        struct rec_batch out;
        char detail[256];
        if (r != REC_OK) {
            rec_decode_ref(ref, &s64, REC_KIND_JSON, b.p, b.len, &out, detail, sizeof(detail));
            ck_abort_msg("a clean message was rejected: %s (%s)", rec_reason_str(r), detail);
        }
        if (rec_decode(fast, &s64, REC_KIND_JSON, b.p, b.len, &out, detail, sizeof(detail)) !=
            REC_OK)
            ck_abort_msg("decoded once, not twice: %s", detail);
        for (uint32_t i = 0; i < PER_MSG; i++)
            for (uint32_t j = 0; j < DIM; j++) {
                uint32_t k = i * DIM + j;
                float want = oracle(b.p + starts[k]);
                if (memcmp(&want, &out.recs[i].vec[j], 4) != 0)
                    ck_abort_msg("%.40s: got %a, (float)strtod says %a", b.p + starts[k],
                                 (double)out.recs[i].vec[j], (double)want);
                compared++;
            }
    }
    ck_assert_uint_gt(rejected, messages / 16); /* every bad token came up, many times */
    free(starts);
    free(b.p);
}
END_TEST

/* ---- hand-written documents ---- */

START_TEST(test_documents)
{
    const struct rec_schema *S = &schema_docs;
    /* whitespace: the four JSON ones anywhere, nothing else */
    EXPECT(S, " \t\r\n{ \"id\" :\t\"a\" ,\n\"vector\" : [ 1 ,2, 3 ] }\r\n ", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]}\f", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]}\v", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]}\xc2\xa0", REC_GARBAGE);
    EXPECT(S, "\xef\xbb\xbf{\"id\":\"a\",\"vector\":[1,2,3]}", REC_GARBAGE); /* BOM */
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]} x", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]}{}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3,]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\" \"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{'id':'a','vector':[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]", REC_GARBAGE);
    static const char nul_after[] = "{\"id\":\"a\",\"vector\":[1,2,3]}\0";
    static const char nul_in[] = "{\"id\":\"a\0\",\"vector\":[1,2,3]}";
    ck_assert_int_eq(diff(S, nul_after, sizeof(nul_after) - 2), REC_OK);
    ck_assert_int_eq(diff(S, nul_after, sizeof(nul_after) - 1), REC_GARBAGE);
    ck_assert_int_eq(diff(S, nul_in, sizeof(nul_in) - 1), REC_GARBAGE);
    static const char nul_num[] = "{\"id\":\"a\",\"vector\":[1\0,2,3],\"ts\":5\0}";
    static const char nul_lit[] = "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":null\0}";
    static const char nul_two[] = "{\"id\":\"a\",\"vector\":[1\0\0,2,3]}";
    static const char nul_ws[] = "{\"id\":\"a\",\"vector\":[1 \0,2,3]}";
    ck_assert_int_eq(diff(S, nul_num, sizeof(nul_num) - 1), REC_OK); /* sic: jansson */
    ck_assert_int_eq(diff(S, nul_lit, sizeof(nul_lit) - 1), REC_OK);
    ck_assert_int_eq(diff(S, nul_two, sizeof(nul_two) - 1), REC_GARBAGE);
    ck_assert_int_eq(diff(S, nul_ws, sizeof(nul_ws) - 1), REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3]} // c", REC_GARBAGE);
    EXPECT(S, "", REC_GARBAGE);
    EXPECT(S, "   ", REC_GARBAGE);
    EXPECT(S, "[{\"id\":\"a\",\"vector\":[1,2,3]}]", REC_GARBAGE);
    EXPECT(S, "{}", REC_BAD_RECORD);
    EXPECT(S, "{\"x\":1}", REC_BAD_RECORD);
    /* escapes and unicode in ids: the same bytes either way */
    EXPECT(S, "{\"id\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"\\u00e9\\u4e2d\\ud83d\\ude00\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"\\u00E9\\uD83D\\uDE00\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"\\u0001\\u001f\\u007f\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"\\u0000\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\\u0000b\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\ud83d\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\ude00\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\ud83d\\u0041\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\ude00\\ud83d\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\u12\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\x41\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\\'\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\tb\",\"vector\":[1,2,3]}", REC_GARBAGE); /* raw control char */
    EXPECT(S, "{\"id\":\"a\nb\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\x7f\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"\xff\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\xc0\xaf\",\"vector\":[1,2,3]}", REC_GARBAGE);     /* overlong */
    EXPECT(S, "{\"id\":\"\xed\xa0\x80\",\"vector\":[1,2,3]}", REC_GARBAGE); /* surrogate */
    EXPECT(S, "{\"id\":\"\xf4\x90\x80\x80\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"\xe4\xb8\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"\\u0069d\":\"a\",\"v\\u0065ctor\":[1,2,3]}", REC_OK); /* escaped keys */
    EXPECT(S, "{\"id\\u0000\":\"a\",\"vector\":[1,2,3]}", REC_GARBAGE);
    /* duplicate keys, at every level, also spelt differently */
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"id\":\"a\"}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"\\u0069d\":\"b\"}", REC_GARBAGE);
    EXPECT(S, "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]}],\"records\":[]}", REC_GARBAGE);
    EXPECT(S, "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3],\"ts\":1,\"ts\":2}]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"k\":1,\"k\":2}}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"k\":[{\"x\":1,\"x\":1}]}}",
           REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector\":{\"x\":1,\"x\":1}}", REC_GARBAGE);
    EXPECT(S, "{\"collection\":\"docs\",\"id\":\"a\",\"vector\":[1,2,3],\"collection\":\"docs\"}",
           REC_GARBAGE);
    /* collection */
    EXPECT(S, "{\"collection\":\"docs\",\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]}]}", REC_OK);
    EXPECT(S, "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]}],\"collection\":\"docs\"}", REC_OK);
    EXPECT(S, "{\"collection\":\"d\\u006fcs\",\"id\":\"a\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"collection\":\"nope\",\"id\":\"a\",\"vector\":[1,2,3]}", REC_UNKNOWN_COLLECTION);
    EXPECT(S, "{\"collection\":\"docs\\u0000\",\"id\":\"a\",\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"collection\":7,\"id\":\"a\",\"vector\":[1,2,3]}", REC_UNKNOWN_COLLECTION);
    EXPECT(&schema_none, "{\"id\":\"a\",\"vector\":[1,2,3]}", REC_UNKNOWN_COLLECTION);
    EXPECT(S, "{\"records\":[{\"id\":\"a\",\"collection\":\"docs\",\"vector\":[1,2,3]}]}",
           REC_BAD_RECORD);
    EXPECT(S, "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]}],\"id\":\"b\"}", REC_BAD_RECORD);
    EXPECT(S, "{\"records\":[]}", REC_EMPTY_BATCH);
    EXPECT(S, "{\"records\":null}", REC_BAD_RECORD);
    EXPECT(S, "{\"records\":[[]]}", REC_BAD_RECORD);
    /* ids */
    EXPECT(S, "{\"id\":\"\",\"vector\":[1,2,3]}", REC_BAD_ID);
    EXPECT(S, "{\"id\":null,\"vector\":[1,2,3]}", REC_BAD_ID);
    EXPECT(S, "{\"id\":1,\"vector\":[1,2,3]}", REC_BAD_ID);
    EXPECT(S, "{\"records\":[{\"vector\":[1,2,3]}]}", REC_BAD_ID);
    static const struct {
        const char *id;
        enum rec_reason r;
    } u64[] = {{"0", REC_OK},
               {"-0", REC_OK},
               {"9223372036854775807", REC_OK},
               {"9223372036854775808", REC_GARBAGE}, /* jansson: too big integer */
               {"18446744073709551615", REC_GARBAGE},
               {"-1", REC_BAD_ID},
               {"1.0", REC_BAD_ID},
               {"1e3", REC_BAD_ID},
               {"true", REC_BAD_ID},
               /* 2^63 and above as strings of digits (as the HTTP API writes them) */
               {"\"7\"", REC_OK},
               {"\"0\"", REC_OK},
               {"\"007\"", REC_OK},
               {"\"9223372036854775808\"", REC_OK},
               {"\"18446744073709551615\"", REC_OK},
               {"\"\\u0031\\u0038\"", REC_OK},           /* escaped digits: 18 */
               {"\"18446744073709551616\"", REC_BAD_ID}, /* 2^64 */
               {"\"99999999999999999999\"", REC_BAD_ID},
               {"\"\"", REC_BAD_ID},
               {"\"-1\"", REC_BAD_ID},
               {"\"+1\"", REC_BAD_ID},
               {"\" 1\"", REC_BAD_ID},
               {"\"1 \"", REC_BAD_ID},
               {"\"0x10\"", REC_BAD_ID},
               {"\"1e3\"", REC_BAD_ID},
               {"\"1\\u0000\"", REC_GARBAGE}};
    for (size_t i = 0; i < sizeof(u64) / sizeof(u64[0]); i++) {
        char t[200];
        snprintf(t, sizeof(t), "{\"collection\":\"events\",\"id\":%s,\"vector\":[1,2,3,4]}",
                 u64[i].id);
        EXPECT(S, t, u64[i].r);
    }
    char big[400];
    for (int n = 255; n <= 257; n++) {
        snprintf(big, sizeof(big), "{\"id\":\"%0*d\",\"vector\":[1,2,3]}", n, 0);
        EXPECT(S, big, n <= 256 ? REC_OK : REC_BAD_ID);
    }
    /* 256 bytes of id as 128 two-byte characters, and 86 escapes of three-byte ones */
    size_t o = (size_t)snprintf(big, sizeof(big), "{\"id\":\"");
    for (int i = 0; i < 128; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "\xc3\xa9");
    snprintf(big + o, sizeof(big) - o, "\",\"vector\":[1,2,3]}");
    EXPECT(S, big, REC_OK);
    char esc[1000];
    o = (size_t)snprintf(esc, sizeof(esc), "{\"id\":\"");
    for (int i = 0; i < 86; i++)
        o += (size_t)snprintf(esc + o, sizeof(esc) - o, "\\u4e2d");
    snprintf(esc + o, sizeof(esc) - o, "\",\"vector\":[1,2,3]}");
    EXPECT(S, esc, REC_BAD_ID); /* 258 bytes */
    /* ts and op */
    EXPECT(S, "{\"id\":\"a\",\"ts\":-9223372036854775807,\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"ts\":-9223372036854775808,\"vector\":[1,2,3]}", REC_BAD_TS);
    EXPECT(S, "{\"id\":\"a\",\"ts\":-0,\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"ts\":1e3,\"vector\":[1,2,3]}", REC_BAD_TS);
    EXPECT(S, "{\"id\":\"a\",\"ts\":null,\"vector\":[1,2,3]}", REC_BAD_TS);
    EXPECT(S, "{\"id\":\"a\",\"ts\":9223372036854775808,\"vector\":[1,2,3]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"upsert\",\"vector\":[1,2,3]}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"\\u0064elete\"}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\\u0000\"}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"Delete\"}", REC_BAD_OP);
    EXPECT(S, "{\"id\":\"a\",\"op\":null,\"vector\":[1,2,3]}", REC_BAD_OP);
    /* a delete's vector is not read, but jansson had to parse it */
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector\":\"junk\"}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector\":[1e39,[{}],\"x\"]}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector\":[18446744073709551615]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector\":[\"\\u0000\"]}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector_b64\":\"\\u0000\"}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector_b64\":7}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"op\":\"delete\",\"vector\":[1],\"vector_b64\":\"\"}",
           REC_BAD_RECORD);
    /* vectors */
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2]}", REC_WRONG_DIM);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[]}", REC_WRONG_DIM);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,true]}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,[3]]}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector\":{\"0\":1}}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[-0,-0.0,0]}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1e-400,-1e-400,4.9e-324]}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"vector_b64\":\"AACAPwAAAEAAAEBA\"}",
           REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAEBA\"}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAEB\\u0041\"}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAEBA\\/\"}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAE*A\"}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\" ACAPwAAAEAAAEBA\"}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAEB \"}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAEBAAAAA====\"}", REC_WRONG_DIM);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAAEAAAEBA\\u0000AAA\"}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":null}", REC_BAD_RECORD);
    EXPECT(S, "{\"id\":\"a\",\"vector_b64\":\"AACAPwAAwH8AAAA/\"}", REC_NON_FINITE);
    /* meta: rewritten compact by jansson in both */
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":null}", REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{}}", REC_OK);
    EXPECT(S,
           "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\": { \"z\" : 1 , \"a\":[ -0, -0.0, 1.0, 1e2, "
           "0.1, 1E+300, 5e-324, 123456789012345678, -9223372036854775808, true, false, null, "
           "\"\\u00e9\\n\\u001f\\\"/\\\\\", \"\\ud83d\\ude00\", {\"\":{\"\":[]}}]}}",
           REC_OK);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"x\":1e400}}", REC_NON_FINITE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"x\":9223372036854775808}}",
           REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"x\":\"\\u0000\"}}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"\\u0000\":1}}", REC_GARBAGE);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":[]}", REC_BAD_META);
    EXPECT(S, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":\"x\"}", REC_BAD_META);
    /* meta at the 64 KiB limit, as jansson writes it */
    char *m = malloc(70000);
    ck_assert_ptr_nonnull(m);
    for (int extra = -1; extra <= 1; extra++) {
        /* {"k":"vvv..."} is 8 bytes + the string */
        size_t n = 65536 - 8 + (size_t)(extra + 0);
        int off = snprintf(m, 70000, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"k\":\"");
        memset(m + off, 'v', n);
        strcpy(m + off + n, "\"}}");
        EXPECT(S, m, extra <= 0 ? REC_OK : REC_BAD_META);
    }
    /* nesting: jansson's limit is 2048 levels, simdjson's 1024 (it declines deeper) */
    for (int depth = 1000; depth <= 2100; depth += 100) {
        int off = snprintf(m, 70000, "{\"id\":\"a\",\"vector\":[1,2,3],\"meta\":{\"k\":");
        for (int i = 0; i < depth; i++)
            m[off++] = '[';
        for (int i = 0; i < depth; i++)
            m[off++] = ']';
        strcpy(m + off, "}}");
        /* only the fast path's coverage differs: accepted ones deeper than simdjson's limit
         * come from the reference */
        char why[700];
        enum rec_reason r;
        ck_assert_msg(json_diff(fast, ref, S, m, strlen(m), &r, why, sizeof(why)) == NULL, "%s",
                      why);
        ck_assert_int_eq(r, depth + 3 <= 2048 ? REC_OK : REC_GARBAGE);
    }
    free(m);
    /* a rejection after an accepted batch leaves nothing of it behind */
    EXPECT(S, "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]},{\"id\":\"a\",\"op\":\"delete\"}]}",
           REC_DUPLICATE_ID);
    EXPECT(S,
           "{\"records\":[{\"id\":\"a\",\"vector\":[1,2,3]},{\"id\":\"b\",\"vector\":[1,2,1e39]}]}",
           REC_NON_FINITE);
}
END_TEST

/* ---- random documents ---- */

static void ws(struct st_text *b)
{
    static const char *const w[] = {" ", "\t", "\n", "\r", "  ", " \n "};
    if (below(4) == 0)
        st_text_printf(b, "%s", w[below(6)]);
}

static void put_string(struct st_text *b, int maxlen)
{
    st_text_printf(b, "\"");
    int n = (int)below((uint32_t)maxlen + 1);
    for (int i = 0; i < n; i++) {
        switch (below(20)) {
        case 0: {
            static const char *const e[] = {"\\\"", "\\\\", "\\/", "\\b",
                                            "\\f",  "\\n",  "\\r", "\\t"};
            st_text_printf(b, "%s", e[below(8)]);
            break;
        }
        case 1: {
            uint32_t cp = 1 + below(0xFFFF);
            if (cp >= 0xD800 && cp <= 0xDFFF && below(8) != 0)
                cp = 0x41; /* lone surrogates now and then */
            st_text_printf(b, "\\u%04X", cp);
            break;
        }
        case 2:
            if (below(8) == 0) /* a high surrogate, then an escape that is not a low one */
                st_text_printf(b, "\\u%04x\\u%04x", 0xD800 + below(0x400),
                               below(2) ? 0xD800 + below(0x400) : below(0xDC00));
            else
                st_text_printf(b, "\\u%04x\\u%04x", 0xD800 + below(0x400), 0xDC00 + below(0x400));
            break;
        case 3: {
            static const char *const u[] = {"\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
                                            "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf"};
            st_text_printf(b, "%s", u[below(6)]);
            break;
        }
        case 4:
            if (below(30) == 0)
                st_text_printf(b, "%s", below(2) ? "\\u0000" : "\xc0\x80");
            else
                st_text_printf(b, "x");
            break;
        default: {
            char c = (char)(' ' + below(95)); /* printable ASCII */
            st_text_printf(b, "%c", c == '"' || c == '\\' ? 'q' : c);
            break;
        }
        }
    }
    st_text_printf(b, "\"");
}

static void put_value(struct st_text *b, int depth);

static void put_key(struct st_text *b, const char *k)
{
    if (below(20) == 0 && k[0] != '\0') { /* the same key, its first letter escaped */
        st_text_printf(b, "\"\\u%04x%s\"", (unsigned)(unsigned char)k[0], k + 1);
        return;
    }
    st_text_printf(b, "\"%s\"", k);
}

static void put_object(struct st_text *b, int depth)
{
    st_text_printf(b, "{");
    int n = (int)below(5);
    for (int i = 0; i < n; i++) {
        if (i)
            st_text_printf(b, ",");
        ws(b);
        if (below(12) == 0)
            st_text_printf(b, "\"k0\"");
        else
            put_string(b, 6);
        ws(b);
        st_text_printf(b, ":");
        ws(b);
        put_value(b, depth + 1);
        ws(b);
    }
    st_text_printf(b, "}");
}

static void put_value(struct st_text *b, int depth)
{
    switch (below(depth > 3 ? 5 : 7)) {
    case 0:
        put_number(b);
        break;
    case 1:
        put_string(b, 8);
        break;
    case 2:
        st_text_printf(b, "%s", below(3) == 0 ? "true" : below(2) ? "false" : "null");
        break;
    case 3:
        st_text_printf(b, "%s",
                       bad_numbers[below(sizeof(bad_numbers) / sizeof(bad_numbers[0]))].tok);
        break;
    case 4:
        st_text_printf(b, "%" PRId64, (int64_t)rng());
        break;
    case 5: {
        st_text_printf(b, "[");
        int n = (int)below(4);
        for (int i = 0; i < n; i++) {
            if (i)
                st_text_printf(b, ",");
            ws(b);
            put_value(b, depth + 1);
            ws(b);
        }
        st_text_printf(b, "]");
        break;
    }
    default:
        put_object(b, depth);
        break;
    }
}

static void put_vector(struct st_text *b, uint32_t dim)
{
    if (below(10) == 0) {
        put_value(b, 2);
        return;
    }
    uint32_t n = below(10) == 0 ? below(6) : dim;
    st_text_printf(b, "[");
    for (uint32_t j = 0; j < n; j++) {
        if (j)
            st_text_printf(b, ",");
        ws(b);
        if (below(40) == 0)
            put_value(b, 3);
        else
            put_number(b);
        ws(b);
    }
    st_text_printf(b, "]");
}

static void put_b64(struct st_text *b, uint32_t dim)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[16];
    uint32_t n = below(8) == 0 ? below(5) : dim;
    for (uint32_t j = 0; j < n; j++) {
        float f = below(20) == 0 ? NAN : random_float(false);
        memcpy(raw + 4 * j, &f, 4);
    }
    st_text_printf(b, "\"");
    size_t len = n * 4;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < len ? (uint32_t)raw[i + 1] << 8 : 0) |
                     (i + 2 < len ? raw[i + 2] : 0);
        st_text_printf(b, "%c%c%c%c", tbl[v >> 18 & 63], tbl[v >> 12 & 63],
                       i + 1 < len ? tbl[v >> 6 & 63] : '=', i + 2 < len ? tbl[v & 63] : '=');
    }
    if (below(15) == 0)
        st_text_printf(b, "%s", below(2) ? "*" : "\\u0041");
    st_text_printf(b, "\"");
}

static void put_record(struct st_text *b, bool u64, uint32_t dim, bool single, const char *coll)
{
    const char *keys[8];
    int n = 0;
    keys[n++] = "id";
    if (below(2))
        keys[n++] = "ts";
    if (below(3) == 0)
        keys[n++] = "op";
    if (below(8) != 0)
        keys[n++] = below(4) == 0 ? "vector_b64" : "vector";
    if (below(3) == 0)
        keys[n++] = "meta";
    if (single && coll != NULL)
        keys[n++] = "collection";
    if (below(30) == 0) { /* an unknown key, or one twice */
        const char *k = below(2) ? "extra" : keys[below((uint32_t)n)];
        keys[n++] = k;
    }
    for (int i = n - 1; i > 0; i--) {
        int j = (int)below((uint32_t)i + 1);
        const char *t = keys[i];
        keys[i] = keys[j];
        keys[j] = t;
    }
    st_text_printf(b, "{");
    for (int i = 0; i < n; i++) {
        if (i)
            st_text_printf(b, ",");
        ws(b);
        put_key(b, keys[i]);
        ws(b);
        st_text_printf(b, ":");
        ws(b);
        const char *k = keys[i];
        if (strcmp(k, "id") == 0) {
            if (below(15) == 0)
                put_value(b, 2);
            else if (u64 && below(4) == 0)
                st_text_printf(b, "\"%" PRIu64 "\"", below(2) == 0 ? rng() : below(1000));
            else if (u64)
                st_text_printf(b, "%" PRIu64, below(4) == 0 ? rng() : below(1000));
            else
                put_string(b, below(10) == 0 ? 300 : 12);
        } else if (strcmp(k, "ts") == 0) {
            if (below(10) == 0)
                put_value(b, 2);
            else
                st_text_printf(b, "%" PRId64,
                               (int64_t)1763798400000 + (int64_t)below(100000) - 50000);
        } else if (strcmp(k, "op") == 0) {
            static const char *const ops[] = {"\"upsert\"", "\"delete\"", "\"\\u0064elete\"",
                                              "\"merge\"",  "null",       "1"};
            st_text_printf(b, "%s", ops[below(6)]);
        } else if (strcmp(k, "vector") == 0) {
            put_vector(b, dim);
        } else if (strcmp(k, "vector_b64") == 0) {
            put_b64(b, dim);
        } else if (strcmp(k, "meta") == 0) {
            if (below(6) == 0)
                put_value(b, 2);
            else
                put_object(b, 1);
        } else if (strcmp(k, "collection") == 0) {
            st_text_printf(b, "\"%s\"", coll);
        } else {
            put_value(b, 2);
        }
        ws(b);
    }
    st_text_printf(b, "}");
}

static void put_doc(struct st_text *b)
{
    static const char *const names[] = {"docs", "events", "nope"};
    const char *coll = below(2) ? names[below(3)] : NULL;
    bool u64 = coll != NULL && strcmp(coll, "events") == 0;
    uint32_t dim = u64 ? 4 : 3;
    ws(b);
    if (below(4) == 0) {
        put_record(b, u64, dim, true, coll);
    } else {
        st_text_printf(b, "{");
        ws(b);
        if (coll != NULL) {
            put_key(b, "collection");
            st_text_printf(b, ":\"%s\",", coll);
            ws(b);
        }
        put_key(b, "records");
        ws(b);
        st_text_printf(b, ":[");
        int n = (int)below(5);
        for (int i = 0; i < n; i++) {
            if (i)
                st_text_printf(b, ",");
            ws(b);
            put_record(b, u64, dim, false, NULL);
        }
        st_text_printf(b, "]");
        ws(b);
        st_text_printf(b, "}");
    }
    ws(b);
}

/* One byte of b flipped, dropped or doubled. */
static void mutate(struct st_text *b)
{
    if (b->len == 0)
        return;
    size_t at = below((uint32_t)b->len);
    switch (below(3)) {
    case 0:
        b->p[at] ^= (char)(1u << below(8));
        break;
    case 1:
        memmove(b->p + at, b->p + at + 1, b->len - at - 1);
        b->len--;
        break;
    default:
        st_text_printf(b, " ");
        memmove(b->p + at + 1, b->p + at, b->len - at - 1);
        break;
    }
}

START_TEST(test_random_documents)
{
    rng_state = 0x243f6a8885a308d3ull;
    struct st_text b = {0};
    uint32_t ok = 0, total = 150000;
    uint32_t seen[REC_REASON_COUNT] = {0};
    for (uint32_t i = 0; i < total; i++) {
        b.len = 0;
        put_doc(&b);
        if (below(8) == 0)
            mutate(&b);
        ck_assert(!b.oom);
        enum rec_reason r = diff(i & 1 ? &schema_docs : &schema_none, b.p, b.len);
        seen[r]++;
        ok += r == REC_OK;
    }
    /* the grammar reaches acceptance and most reasons, or this proves little */
    ck_assert_uint_gt(ok, total / 20);
    static const enum rec_reason want[] = {REC_GARBAGE,    REC_UNKNOWN_COLLECTION,
                                           REC_WRONG_DIM,  REC_NON_FINITE,
                                           REC_BAD_ID,     REC_BAD_TS,
                                           REC_BAD_OP,     REC_BAD_META,
                                           REC_BAD_RECORD, REC_DUPLICATE_ID,
                                           REC_EMPTY_BATCH};
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
        ck_assert_msg(seen[want[k]] > 0, "no %s document", rec_reason_str(want[k]));
    free(b.p);
}
END_TEST

/* ---- binary frames' meta objects (simdjson first, jansson deciding what it cannot) ---- */

/* Checks one meta with both; fails on a difference, and on a valid meta without a NUL byte
 * that simdjson did not pass. Returns the reference's reason; *took: simdjson passed it. */
static enum rec_reason meta_diff(const char *meta, size_t len, bool *took)
{
    char why[700];
    enum rec_reason r;
    if (frame_meta_diff(fast, ref, &schema_docs, meta, len, &r, took, why, sizeof(why)) != NULL)
        ck_abort_msg("%s\n  meta (%zu bytes): %.*s", why, len, (int)(len > 400 ? 400 : len), meta);
    return r;
}

START_TEST(test_frame_meta)
{
    /* want: 1 an object jansson takes, 0 not, -1 either (what the reference says is checked
     * by meta_diff); fast: simdjson must pass it */
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
        int want;
        bool fast;
    } cases[] = {
        {"{}", 0, 1, true},
        {"{\"lang\":\"en\"}", 0, 1, true},
        {" \t\r\n{\"a\" : 1 }\n ", 0, 1, true},
        {"{\"a\":1,\"a\":2}", 0, 1, true}, /* duplicates: loaded with flags 0 */
        {"{\"a\":[1.5,-0,0.0,1e2,true,false,null,{},[]],\"b\":{\"c\":\"\\u00e9\"}}", 0, 1, true},
        {"{\"a\":\"\\ud83d\\ude00\\n\\\"\\/\"}", 0, 1, true},
        {"{\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\":\"\xf4\x8f\xbf\xbf\"}", 0, 1, true},
        {"{\"a\":9223372036854775807,\"b\":-9223372036854775808}", 0, 1, true},
        {"{\"a\":1e-400,\"b\":4.9e-324,\"c\":1.7976931348623157e308}", 0, 1, true},
        {"[1]", 0, 0, false},
        {"\"s\"", 0, 0, false},
        {"1", 0, 0, false},
        {"null", 0, 0, false},
        {"{\"a\":\"\\u0000\"}", 0, 0, false},
        {"{\"\\u0000\":1}", 0, 0, false},
        {"{\"a\":\"\\ud800\"}", 0, 0, false},
        {"{\"a\":\"\\udc00\"}", 0, 0, false},
        {"{\"a\":\"\\ud800\\u0041\"}", 0, 0, false},
        {"{\"a\":9223372036854775808}", 0, 0, false},
        {"{\"a\":-9223372036854775809}", 0, 0, false},
        {"{\"a\":18446744073709551615}", 0, 0, false},
        {"{\"a\":18446744073709551616}", 0, 0, false},
        {"{\"a\":123456789012345678901234567890}", 0, 0, false},
        {"{\"a\":1e400}", 0, 0, false},
        {"{\"a\":-1e400}", 0, 0, false},
        {"{\"a\":1}x", 0, 0, false},
        {"{\"a\":1}{}", 0, 0, false},
        {"{\"a\":1,}", 0, 0, false},
        {"{'a':1}", 0, 0, false},
        {"{\"a\":01}", 0, 0, false},
        {"{\"a\":.5}", 0, 0, false},
        {"{\"a\":1.}", 0, 0, false},
        {"{\"a\":NaN}", 0, 0, false},
        {"{\"a\":Infinity}", 0, 0, false},
        {"{\"a\":\"\xff\"}", 0, 0, false},
        {"{\"a\":\"\xc0\x80\"}", 0, 0, false},
        {"{\"a\":\"\xed\xa0\x80\"}", 0, 0, false},
        {"{\"a\":\"\x01\"}", 0, 0, false},
        {"{\"a\":\"\t\"}", 0, 0, false},
        {"{\f}", 0, 0, false},
        {"\xef\xbb\xbf{}", 0, 0, false},
        /* jansson skips one NUL right after a number or true/false/null; simdjson refuses it,
         * and jansson decides */
        {"{\"a\":1\0}", 8, 1, false},
        {"{\"a\":true\0}", 11, 1, false},
        {"{\"a\":null\0,\"b\":2}", 17, 1, false},
        {"{\"a\":1\0\0}", 9, 0, false},
        {"{\"a\":1,\0\"b\":2}", 14, 0, false},
        {"{\"a\":\"x\0\"}", 10, 0, false},
        {"{\0\"a\":1}", 8, 0, false},
        {"{\"a\"", 0, 0, false},
        {"{", 0, 0, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);
        bool took;
        enum rec_reason r = meta_diff(cases[i].text, len, &took);
        if (cases[i].want >= 0)
            ck_assert_msg(r == (cases[i].want ? REC_OK : REC_BAD_META), "case %zu (%s): %s", i,
                          cases[i].text, rec_reason_str(r));
        if (cases[i].fast)
            ck_assert_msg(took, "case %zu (%s): simdjson did not pass it", i, cases[i].text);
    }
    /* nesting: simdjson passes 1023 levels, jansson 2047; and the 64 KiB bound */
    struct st_text b = {0};
    static const int depths[] = {1000, 1023, 1024, 1025, 2047, 2048, 2049, 5000};
    for (size_t k = 0; k < sizeof(depths) / sizeof(depths[0]); k++) {
        b.len = 0;
        for (int i = 0; i < depths[k]; i++)
            st_text_printf(&b, "{\"a\":");
        st_text_printf(&b, "1");
        for (int i = 0; i < depths[k]; i++)
            st_text_printf(&b, "}");
        ck_assert(!b.oom);
        bool took;
        enum rec_reason r = meta_diff(b.p, b.len, &took);
        ck_assert_msg(r == (depths[k] < 2048 ? REC_OK : REC_BAD_META), "depth %d: %s", depths[k],
                      rec_reason_str(r));
        ck_assert_msg(took == (depths[k] <= 1023), "depth %d: simdjson %s it", depths[k],
                      took ? "passed" : "did not pass");
    }
    b.len = 0;
    st_text_printf(&b, "{\"a\":\"");
    while (b.len < REC_META_MAX - 2)
        st_text_printf(&b, "x");
    st_text_printf(&b, "\"}");
    bool took;
    ck_assert_uint_eq(b.len, REC_META_MAX);
    ck_assert_int_eq(meta_diff(b.p, b.len, &took), REC_OK);
    ck_assert(took);
    free(b.p);
}
END_TEST

/* Every short document over the bytes where the parsers could part, and every \\u escape. */
START_TEST(test_frame_meta_exhaustive)
{
    static const char alpha[] = "{}[]:,\"0123456789eE+-.tfnul\\/ \t\n\r\f\v\x01\x7f\x80\xc3\xa9"
                                "\xef\xbb\xbf\xed";
    const size_t na = sizeof(alpha); /* with its NUL, as a byte too */
    static const char *const frame[][2] = {
        {"{", "}"}, {"{\"a\":", "}"}, {"{\"a\":[", "]}"}, {"{\"", "\":1}"}, {"{\"a\":\"", "\"}"}};
    char t[64];
    uint64_t n = 0, ok = 0;
    for (size_t f = 0; f < sizeof(frame) / sizeof(frame[0]); f++) {
        size_t h = strlen(frame[f][0]), e = strlen(frame[f][1]);
        memcpy(t, frame[f][0], h);
        for (size_t len = 0; len <= 3; len++) {
            size_t total = 1;
            for (size_t k = 0; k < len; k++)
                total *= na;
            for (size_t x = 0; x < total; x++) {
                size_t v = x;
                for (size_t k = 0; k < len; k++, v /= na)
                    t[h + k] = alpha[v % na];
                memcpy(t + h + len, frame[f][1], e);
                bool took;
                ok += meta_diff(t, h + len + e, &took) == REC_OK;
                n++;
            }
        }
    }
    /* every \\uXXXX as a value and as a key; each high surrogate followed by other escapes
     * (every one after four of them, every 257th after the rest) */
    for (uint32_t u = 0; u <= 0xFFFF; u++) {
        bool took;
        int k = snprintf(t, sizeof(t), "{\"a\":\"\\u%04X\"}", u);
        ok += meta_diff(t, (size_t)k, &took) == REC_OK;
        k = snprintf(t, sizeof(t), "{\"\\u%04x\":1}", u);
        ok += meta_diff(t, (size_t)k, &took) == REC_OK;
        n += 2;
    }
    for (uint32_t hi = 0xD800; hi <= 0xDBFF; hi++) {
        uint32_t step = hi == 0xD800 || hi == 0xD83D || hi == 0xDB7F || hi == 0xDBFF ? 1 : 257;
        for (uint32_t u = hi & 7; u <= 0xFFFF; u += step) {
            bool took;
            int k = snprintf(t, sizeof(t), "{\"a\":\"\\u%04x\\u%04X\"}", hi, u);
            ok += meta_diff(t, (size_t)k, &took) == REC_OK;
            n++;
        }
    }
    ck_assert_uint_gt(n, 1000000);
    ck_assert_uint_gt(ok, 100000);
}
END_TEST

START_TEST(test_random_frame_meta)
{
    rng_state = 0x13198a2e03707344ull;
    struct st_text b = {0};
    uint32_t ok = 0, bad = 0, total = 200000;
    for (uint32_t i = 0; i < total; i++) {
        b.len = 0;
        if (below(10) == 0)
            put_value(&b, 0); /* anything: arrays, strings, numbers at the top */
        else
            put_object(&b, 0);
        if (below(6) == 0)
            mutate(&b);
        ck_assert(!b.oom);
        if (b.len == 0)
            continue;
        bool took;
        enum rec_reason r = meta_diff(b.p, b.len, &took);
        if (r == REC_OK && !took && memchr(b.p, 0, b.len) == NULL)
            ck_abort_msg("simdjson did not pass a valid meta: %.*s", (int)b.len, b.p);
        ok += r == REC_OK;
        bad += r == REC_BAD_META;
    }
    /* the grammar reaches both answers often, or this proves little */
    ck_assert_uint_gt(ok, total / 4);
    ck_assert_uint_gt(bad, total / 10);
    free(b.p);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("json_diff");
    TCase *tc = tcase_create("json_diff");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, test_documents);
    tcase_add_test(tc, test_numbers);
    tcase_add_test(tc, test_random_documents);
    tcase_add_test(tc, test_frame_meta);
    tcase_add_test(tc, test_frame_meta_exhaustive);
    tcase_add_test(tc, test_random_frame_meta);
    suite_add_tcase(su, tc);
    return st_test_run_suite(su);
}
