/* Unit tests for common/: errors, coding, checksums, clock, fault points, logging. */
#include <check.h>
#include <inttypes.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "st_api.h"
#include "st_checksum.h"
#include "st_clock.h"
#include "st_coding.h"
#include "st_error.h"
#include "st_fault.h"
#include "st_log.h"
#include "st_mem.h"
#include "st_test.h"
#include "st_utf8.h"

#include <xxhash.h> /* the library's plain (SSE2) entry points: the reference below */

START_TEST(test_error_codes)
{
    ck_assert_str_eq(st_strerror(ST_OK), "ok");
    ck_assert_str_eq(st_strerror(ST_ECORRUPT), "data corruption");
    ck_assert_str_eq(st_strerror(-999), "unknown error");
    ck_assert_int_eq(st_from_errno(ENOSPC), ST_ENOSPC);
    ck_assert_int_eq(st_from_errno(EDQUOT), ST_ENOSPC);
    ck_assert_int_eq(st_from_errno(EIO), ST_EIO);
    ck_assert_int_eq(st_from_errno(ENOENT), ST_ENOTFOUND);

    struct st_err e;
    ck_assert_int_eq(st_err_set(&e, ST_ECORRUPT, "bad block at %s:%d", "wal.000001", 4096),
                     ST_ECORRUPT);
    ck_assert_str_eq(e.msg, "bad block at wal.000001:4096");
    ck_assert_int_eq(st_err_sys(&e, ENOSPC, "write %s", "x"), ST_ENOSPC);
    ck_assert_int_eq(e.sys_errno, ENOSPC);
    ck_assert_ptr_nonnull(strstr(e.msg, "write x: "));
    ck_assert_ptr_nonnull(strstr(e.msg, strerror(ENOSPC)));
    /* A NULL error struct is allowed everywhere. */
    ck_assert_int_eq(st_err_set(NULL, ST_EIO, "ignored"), ST_EIO);
    st_err_clear(&e);
    ck_assert_str_eq(e.msg, "");
}
END_TEST

/* UTF-8 well-formedness at every boundary of RFC 3629's table, and the scrub of what is not. */
START_TEST(test_utf8)
{
    static const struct {
        const char *s;
        size_t n;
        bool ok;
    } cases[] = {{"", 0, true},
                 {"ascii \x7f", 7, true},
                 {"\xc2\x80 \xdf\xbf", 5, true},                 /* U+0080, U+07FF */
                 {"\xe0\xa0\x80 \xef\xbf\xbf", 7, true},         /* U+0800, U+FFFF */
                 {"\xed\x9f\xbf \xee\x80\x80", 7, true},         /* around the surrogates */
                 {"\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf", 9, true}, /* U+10000, U+10FFFF */
                 {"a\0b", 3, true},                              /* NUL is a character */
                 {"\xc0\x80", 2, false},                         /* overlong NUL */
                 {"\xc1\xbf", 2, false},
                 {"\xe0\x9f\xbf", 3, false},     /* overlong 3-byte */
                 {"\xed\xa0\x80", 3, false},     /* surrogate U+D800 */
                 {"\xf0\x8f\xbf\xbf", 4, false}, /* overlong 4-byte */
                 {"\xf4\x90\x80\x80", 4, false}, /* U+110000 */
                 {"\xf5\x80\x80\x80", 4, false},
                 {"\x80", 1, false},
                 {"\xc3", 1, false}, /* cut */
                 {"\xe2\x82", 2, false},
                 {"\xe2\x28\xa1", 3, false}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(st_utf8_valid((const uint8_t *)cases[i].s, cases[i].n) == cases[i].ok,
                      "case %zu", i);
    char buf[] = "ok \xc3\xa9 \xc3 \x80\x80 \xf0\x9f\x98\x80 \xe2\x82";
    st_utf8_scrub(buf);
    ck_assert_str_eq(buf, "ok \xc3\xa9 ? ?? \xf0\x9f\x98\x80 ??");
    ck_assert(st_utf8_valid((const uint8_t *)buf, strlen(buf)));
}
END_TEST

START_TEST(test_coding_le)
{
    uint8_t b[8];
    st_put_le16(b, 0x1234);
    ck_assert_uint_eq(b[0], 0x34);
    ck_assert_uint_eq(b[1], 0x12);
    ck_assert_uint_eq(st_get_le16(b), 0x1234);
    st_put_le32(b, 0xdeadbeef);
    ck_assert_uint_eq(b[0], 0xef);
    ck_assert_uint_eq(b[3], 0xde);
    ck_assert_uint_eq(st_get_le32(b), 0xdeadbeef);
    st_put_le64(b, 0x0102030405060708ull);
    ck_assert_uint_eq(b[0], 0x08);
    ck_assert_uint_eq(b[7], 0x01);
    ck_assert_uint_eq(st_get_le64(b), 0x0102030405060708ull);
    st_put_f32(b, -1.5f);
    ck_assert_uint_eq(st_get_le32(b), 0xbfc00000u);
    ck_assert(st_get_f32(b) == -1.5f);
    st_put_be64(b, 0x0102030405060708ull);
    ck_assert_uint_eq(b[0], 0x01);
    ck_assert_uint_eq(b[7], 0x08);
    ck_assert_uint_eq(st_get_be64(b), 0x0102030405060708ull);
    /* decimal u64: digits only, every value up to 2^64 - 1, nothing past it */
    static const struct {
        const char *s;
        bool ok;
        uint64_t v;
    } dec[] = {{"0", true, 0},
               {"7", true, 7},
               {"007", true, 7},
               {"000000000000000000000000018446744073709551615", true, UINT64_MAX},
               {"18446744073709551615", true, UINT64_MAX},
               {"18446744073709551610", true, UINT64_MAX - 5},
               {"9223372036854775808", true, 9223372036854775808ull},
               {"18446744073709551616", false, 0},
               {"18446744073709551620", false, 0},
               {"99999999999999999999", false, 0},
               {"184467440737095516150", false, 0},
               {"", false, 0},
               {" 7", false, 0},
               {"7 ", false, 0},
               {"+7", false, 0},
               {"-7", false, 0},
               {"7a", false, 0},
               {"0x7", false, 0},
               {"/", false, 0},
               {":", false, 0}};
    for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
        uint64_t v = 12345;
        bool ok = st_parse_u64_dec(dec[i].s, strlen(dec[i].s), &v);
        ck_assert_msg(ok == dec[i].ok, "'%s'", dec[i].s);
        ck_assert_msg(ok ? v == dec[i].v : v == 12345, "'%s': %" PRIu64, dec[i].s, v);
    }
    /* the length bounds the digits: a NUL or anything after it is not read */
    uint64_t v;
    ck_assert(st_parse_u64_dec("12x", 2, &v) && v == 12);
    ck_assert(!st_parse_u64_dec("1\0", 2, &v));
}
END_TEST

START_TEST(test_varint)
{
    static const uint64_t vals[] = {0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, UINT64_MAX};
    uint8_t b[16];
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        size_t n = st_put_varint(b, vals[i]);
        uint64_t v = 0;
        ck_assert_uint_eq(st_get_varint(b, n, &v), n);
        ck_assert_uint_eq(v, vals[i]);
        /* Truncated input is rejected, never over-read. */
        if (n > 1)
            ck_assert_uint_eq(st_get_varint(b, n - 1, &v), 0);
    }
    ck_assert_uint_eq(st_put_varint(b, UINT64_MAX), 10);
    /* Overlong: 10th byte carrying more than one bit would overflow. */
    memset(b, 0xff, 9);
    b[9] = 0x02;
    uint64_t v;
    ck_assert_uint_eq(st_get_varint(b, 10, &v), 0);
}
END_TEST

START_TEST(test_checksum)
{
    /* Reference values of XXH3-64 (seed 0); st_checksum32 is on disk and must not change. */
    ck_assert_uint_eq(st_hash64("", 0), 0x2D06800538D394C2ull);
    ck_assert_uint_eq(st_checksum32("", 0), 0x38D394C2u);
    const char *s = "strata: the quick brown fox jumps over the lazy dog";
    uint64_t h = st_hash64(s, strlen(s));
    struct st_hash_stream *hs = st_hash_stream_new();
    ck_assert_ptr_nonnull(hs);
    st_hash_stream_update(hs, s, 10);
    st_hash_stream_update(hs, s + 10, strlen(s) - 10);
    ck_assert_uint_eq(st_hash_stream_digest(hs), h);
    st_hash_stream_free(hs);
    st_hash_stream_free(NULL);
    /* A single flipped bit changes the checksum. */
    char buf[64];
    memcpy(buf, s, 40);
    uint32_t c = st_checksum32(buf, 40);
    buf[17] ^= 0x04;
    ck_assert_uint_ne(st_checksum32(buf, 40), c);
    ck_assert_uint_ne(st_hash64_seed(s, 8, 1), st_hash64_seed(s, 8, 2));
}
END_TEST

/* st_checksum.c hashes through libxxhash's runtime dispatch (AVX-512 or AVX2 where the CPU has
 * them): every length class of XXH3 (short, mid, the long-input loop and its stripes' tail)
 * gives what the library's plain SSE2 entry points give, seeded and streamed alike. */
START_TEST(test_checksum_dispatch_matches_plain)
{
    enum { MAX = 9000 };
    uint8_t *buf = malloc(MAX);
    ck_assert_ptr_nonnull(buf);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < MAX; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    for (size_t len = 0; len <= MAX; len += len < 300 ? 1 : len < 2100 ? 7 : 97) {
        const uint8_t *p = buf + (len % 13); /* unaligned starts too */
        size_t n = len + (len % 13) <= MAX ? len : MAX - (len % 13);
        ck_assert_uint_eq(st_hash64(p, n), XXH3_64bits(p, n));
        ck_assert_uint_eq(st_checksum32(p, n), (uint32_t)XXH3_64bits(p, n));
        ck_assert_uint_eq(st_hash64_seed(p, n, len * 31 + 1),
                          XXH3_64bits_withSeed(p, n, len * 31 + 1));
    }
    struct st_hash_stream *hs = st_hash_stream_new();
    ck_assert_ptr_nonnull(hs);
    for (size_t o = 0; o < MAX;) { /* pieces of uneven sizes */
        size_t k = 1 + (o * 7919) % 1500;
        k = k < MAX - o ? k : MAX - o;
        st_hash_stream_update(hs, buf + o, k);
        o += k;
    }
    ck_assert_uint_eq(st_hash_stream_digest(hs), XXH3_64bits(buf, MAX));
    st_hash_stream_free(hs);
    free(buf);
}
END_TEST

/* Writes text to root/rel (its directories made on the way). */
static void put_file(const char *root, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        (void)mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* The memory a process may use: physical memory, or less where its cgroup (or an ancestor)
 * says so, in v2 and v1 layouts; "max", v1's "unlimited", garbage and odd lines are no limit
 * and never crash the parse. A limit file sits wherever a mis-parse of an odd line would land,
 * so that reading it fails the test. */
START_TEST(test_mem_limit)
{
    const uint64_t MiB = UINT64_C(1) << 20, GiB = UINT64_C(1) << 30, phys = 8 * GiB;
    char *root = st_test_tmpdir("mem");
    /* v2: the service's own limit, then a tighter one on its slice, then none (max). */
    const char *v2 = "0::/system.slice/strata.service\n";
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), phys); /* no files: no limit */
    put_file(root, "system.slice/strata.service/memory.max", "1073741824\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), GiB);
    put_file(root, "system.slice/memory.max", "536870912\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), GiB / 2); /* the ancestor binds */
    put_file(root, "system.slice/strata.service/memory.max", "268435456\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), 256 * MiB); /* the lowest, not the top */
    put_file(root, "system.slice/memory.max", "max\n");
    put_file(root, "system.slice/strata.service/memory.max", "max\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), phys);
    /* MemoryHigh= (memory.high) bounds it as MemoryMax= does. */
    put_file(root, "system.slice/strata.service/memory.high", "2147483648\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), 2 * GiB);
    put_file(root, "system.slice/strata.service/memory.high", "max\n");
    put_file(root, "system.slice/strata.service/memory.max", "17179869184");
    ck_assert_uint_eq(st_mem_limit_from(phys, v2, root), phys);  /* above physical memory */
    ck_assert_uint_eq(st_mem_limit_from(0, v2, root), 16 * GiB); /* physical memory unknown */
    ck_assert_uint_eq(st_mem_limit_from(0, NULL, root), 0);
    ck_assert_uint_eq(st_mem_limit_from(phys, NULL, root), phys);
    /* A container's namespace root: "0::/" and root/memory.max. */
    put_file(root, "memory.max", "2147483648\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, "0::/\n", root), 2 * GiB);
    /* A cgroup whose name starts with two dots is a name, not a parent. */
    put_file(root, "..hidden/memory.max", "1073741824\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, "0::/..hidden\n", root), GiB);
    /* Not numbers, too large, or with anything after the number: no limit from that file. */
    const char *bad[] = {"",
                         "\n",
                         "0\n",
                         "12abc\n",
                         "-5\n",
                         " 5\n",
                         "5 \n",
                         "99999999999999999999999\n",
                         "18446744073709551616\n",
                         "9223372036854771712\n",
                         "1e9\n",
                         "1073741824\ngarbagegarbagegarbagegarbagegarbagegarbagegarbage\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        put_file(root, "memory.max", bad[i]);
        ck_assert_msg(st_mem_limit_from(phys, "0::/\n", root) == phys, "memory.max \"%s\"", bad[i]);
    }
    /* v1: the memory controller's line among others, in a controller list too. */
    const char *v1 = "12:pids:/docker/abc\n4:cpuacct,memory:/docker/abc\n1:name=systemd:/x\n";
    put_file(root, "memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v1, root), phys); /* v1's "unlimited" */
    ck_assert_uint_eq(st_mem_limit_from(0, v1, root), 0);       /* also with no physical size */
    put_file(root, "memory/docker/abc/memory.limit_in_bytes", "805306368\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, v1, root), 3 * GiB / 4);
    /* Hybrid: a "0::" line whose tree has no memory controller, the limit in v1. */
    ck_assert_uint_eq(st_mem_limit_from(phys, "4:memory:/docker/abc\n0::/docker/abc\n", root),
                      3 * GiB / 4);
    /* v1 in a container without a cgroup namespace: /proc names /docker/id, the mount is that
     * cgroup itself, its limit at the mount's root (found as an ancestor). */
    char *ct = st_test_tmpdir("memct");
    put_file(ct, "memory/memory.limit_in_bytes", "805306368\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, "4:memory:/docker/abc\n", ct), 3 * GiB / 4);
    st_test_rmrf(ct);
    free(ct);
    /* Lines that are not what they should be: ignored, though limits sit where each would
     * land if it were taken (v2 under root/x, root/y, root/docker/abc; v1 under root/memory). */
    put_file(root, "memory.max", "max\n");
    put_file(root, "x/memory.max", "1073741824\n");
    put_file(root, "y/memory.max", "1073741824\n");
    put_file(root, "docker/abc/memory.max", "1073741824\n");
    put_file(root, "memory/x/memory.limit_in_bytes", "1073741824\n");
    const char *odd[] = {"garbage",
                         "0::",
                         "0:",
                         ":",
                         "::/",
                         "0::x",
                         "1::/x",
                         "00::/x",
                         "0:memory:/x",
                         "4:memoryx:/docker/abc",
                         "4:xmemory:/docker/abc",
                         "0::/../../etc",
                         "0::/x/../y",
                         "4:memory:/docker/../abc",
                         "0::/x/..",
                         "4:memory:x"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        uint64_t got = st_mem_limit_from(phys, odd[i], root);
        if (strcmp(odd[i], "0:memory:/x") == 0) /* a v1 line (ID 0 is a name like any) */
            ck_assert_uint_eq(got, GiB);
        else
            ck_assert_msg(got == phys, "line \"%s\": %" PRIu64, odd[i], got);
    }
    /* A line longer than the parser takes is skipped, the next one still read. */
    char *lng = malloc(9000);
    ck_assert_ptr_nonnull(lng);
    memset(lng, 'a', 8000);
    snprintf(lng + 8000, 1000, "\n4:memory:/docker/abc\n");
    ck_assert_uint_eq(st_mem_limit_from(phys, lng, root), 3 * GiB / 4);
    free(lng);
    /* This process: something, and never above physical memory. */
    uint64_t here = st_mem_limit();
    ck_assert_uint_gt(here, 0);
    ck_assert_uint_le(here, st_mem_physical());
    st_test_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_clock_manual)
{
    struct st_clock c;
    st_clock_manual_init(&c, 1763798400000);
    ck_assert_int_eq(st_clock_wall_ms(&c), 1763798400000);
    ck_assert_int_eq(st_clock_mono_ns(&c), 0);
    st_clock_manual_advance(&c, 1500);
    ck_assert_int_eq(st_clock_wall_ms(&c), 1763798401500);
    ck_assert_int_eq(st_clock_mono_ns(&c), 1500000000);
    /* Wall time may step back; monotonic time does not move. */
    st_clock_manual_set_wall(&c, 1000);
    ck_assert_int_eq(st_clock_wall_ms(&c), 1000);
    ck_assert_int_eq(st_clock_mono_ns(&c), 1500000000);
    st_clock_manual_advance(&c, -5);
    ck_assert_int_eq(st_clock_mono_ns(&c), 1500000000);
    /* The system clock is sane. */
    ck_assert_int_gt(st_clock_wall_ms(NULL), 1700000000000);
    int64_t a = st_clock_mono_ns(NULL), b = st_clock_mono_ns(NULL);
    ck_assert_int_ge(b, a);
}
END_TEST

START_TEST(test_fault_points)
{
    ck_assert_int_eq(ST_FAULT("t.site"), 0);
    ck_assert_int_eq(st_fault_arm("t.site", 2, 1, ST_EIO), ST_OK);
    ck_assert_int_eq(ST_FAULT("t.site"), 0);
    ck_assert_int_eq(ST_FAULT("t.other"), 0);
    ck_assert_int_eq(ST_FAULT("t.site"), 0);
    ck_assert_int_eq(ST_FAULT("t.site"), ST_EIO);
    ck_assert_int_eq(ST_FAULT("t.site"), 0); /* times = 1 */
    ck_assert_uint_eq(st_fault_fired("t.site"), 1);

    ck_assert_int_eq(st_fault_arm("t.forever", 0, 0, ST_ENOSPC), ST_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(ST_FAULT("t.forever"), ST_ENOSPC);
    st_fault_disarm("t.forever");
    ck_assert_int_eq(ST_FAULT("t.forever"), 0);
    st_fault_disarm_all();
    ck_assert_int_eq(atomic_load(&st_fault_active), 0);

    /* Site discovery. */
    st_fault_record(true);
    (void)ST_FAULT("t.a");
    (void)ST_FAULT("t.b");
    (void)ST_FAULT("t.a");
    const char *names[8];
    ck_assert_uint_eq(st_fault_recorded(names, 8), 2);
    ck_assert_str_eq(names[0], "t.a");
    ck_assert_str_eq(names[1], "t.b");
    st_fault_record(false);
    ck_assert_int_eq(atomic_load(&st_fault_active), 0);
}
END_TEST

START_TEST(test_fault_crash)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (st_fault_arm("t.crash", 1, 1, ST_FAULT_CRASH) != ST_OK)
            _exit(3);
        (void)ST_FAULT("t.crash");
        (void)ST_FAULT("t.crash"); /* dies here */
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGKILL);
}
END_TEST

static char *capture_log(void (*fn)(void))
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    st_log_set_fd(fds[1]);
    fn();
    st_log_set_fd(2);
    close(fds[1]);
    static char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void log_some(void)
{
    st_log_set_level(ST_LOG_INFO);
    st_log_info("store", "flushed window=%d bytes=%d", 7, 42);
    st_log_debug("store", "hidden at info");
    st_log_error("ingest", "two\nlines");
}

START_TEST(test_log_format)
{
    const char *out = capture_log(log_some);
    ck_assert_str_eq(out, "<6>info store: flushed window=7 bytes=42\n"
                          "<3>error ingest: two lines\n");
    enum st_log_level l;
    ck_assert_int_eq(st_log_level_parse("debug", &l), ST_OK);
    ck_assert_int_eq(l, ST_LOG_DEBUG);
    ck_assert_int_eq(st_log_level_parse("loud", &l), ST_EINVAL);

    struct st_ratelimit rl = {0};
    uint32_t sup = 99;
    ck_assert(st_ratelimit_ok(&rl, 2, 60000, &sup));
    ck_assert_uint_eq(sup, 0);
    ck_assert(st_ratelimit_ok(&rl, 2, 60000, &sup));
    ck_assert(!st_ratelimit_ok(&rl, 2, 60000, &sup));
    ck_assert(!st_ratelimit_ok(&rl, 2, 60000, &sup));
    rl.window_start_ms -= 60000; /* the window has passed */
    ck_assert(st_ratelimit_ok(&rl, 2, 60000, &sup));
    ck_assert_uint_eq(sup, 2);
}
END_TEST

/* uint64 ids survive JSON both ways, those >= 2^63 (which JSON integers as jansson writes
 * them cannot hold) as decimal strings; anything else is refused. */
START_TEST(test_api_u64_ids)
{
    uint64_t vals[] = {0, 42, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX + 43, UINT64_MAX};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint8_t id[8], back[ST_API_ID_MAX];
        for (int b = 0; b < 8; b++)
            id[b] = (uint8_t)(vals[i] >> (56 - 8 * b));
        json_t *j = st_api_id_json(true, id, 8);
        ck_assert(vals[i] > (uint64_t)INT64_MAX ? json_is_string(j) : json_is_integer(j));
        char *text = json_dumps(j, JSON_ENCODE_ANY);
        json_t *k = json_loads(text, JSON_DECODE_ANY, NULL);
        uint32_t len = 0;
        ck_assert(st_api_json_id(true, k, back, &len));
        ck_assert_uint_eq(len, 8);
        ck_assert(memcmp(id, back, 8) == 0);
        free(text);
        json_decref(j);
        json_decref(k);
    }
    uint8_t buf[ST_API_ID_MAX];
    uint32_t len;
    const char *bad[] = {"-1",  "\"-1\"", "\"18446744073709551616\"", "\"12a\"", "\"\"",
                         "1.5", "null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *k = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        ck_assert_msg(!st_api_json_id(true, k, buf, &len), "%s accepted", bad[i]);
        json_decref(k);
    }
    /* a u64 id in a URL path: its digits and nothing else */
    static const char *const path_ok[] = {"7", "18446744073709551615"};
    static const char *const path_bad[] = {" 7", "+7", "-7", "7 ", "", "18446744073709551616", "x"};
    for (size_t i = 0; i < 2; i++) {
        struct st_http_resp r = {.fd = -1};
        ck_assert_msg(st_api_parse_id(true, "c", path_ok[i], buf, &len, &r), "%s", path_ok[i]);
        ck_assert_uint_eq(len, 8);
        free(r.body);
    }
    for (size_t i = 0; i < sizeof(path_bad) / sizeof(path_bad[0]); i++) {
        struct st_http_resp r = {.fd = -1};
        ck_assert_msg(!st_api_parse_id(true, "c", path_bad[i], buf, &len, &r), "'%s'", path_bad[i]);
        ck_assert_int_eq(r.status, 400);
        free(r.body);
    }
    /* A string id from a URL path must be UTF-8: "%C3" once became a NULL JSON string and the
     * indexer asked the ingest nodes for id "0". */
    struct st_http_resp resp = {.fd = -1};
    ck_assert(!st_api_parse_id(false, "c", "\xc3", buf, &len, &resp));
    ck_assert_int_eq(resp.status, 400);
    free(resp.body);
    memset(&resp, 0, sizeof(resp));
    resp.fd = -1;
    ck_assert(st_api_parse_id(false, "c", "d\xc3\xa9j\xc3\xa0", buf, &len, &resp));
    ck_assert_uint_eq(len, 6);
    /* An id stored before frames' ids were checked is shown scrubbed, not dropped. */
    json_t *bj = st_api_id_json(false,
                                (const uint8_t *)"a\xc3"
                                                 "b",
                                3);
    ck_assert_ptr_nonnull(bj);
    ck_assert_str_eq(json_string_value(bj), "a?b");
    json_decref(bj);
    free(resp.body);
}
END_TEST

/* What /v1/status reads from a daemon's own metrics text: a sample by labels (a NULL value:
 * the label must be absent), a histogram's count, mean and bucket quantiles. */
START_TEST(test_api_prom_status)
{
    struct st_hist h;
    st_hist_init(&h, &st_hist_age);
    for (int i = 0; i < 98; i++)
        st_hist_observe(&h, 3.0);
    st_hist_observe(&h, 100.0);
    st_hist_observe(&h, 200.0);
    struct st_text t = {0};
    st_prom_head(&t, "strata_index_backlog", "gauge", "backlog");
    const char *la[] = {"collection", "a", NULL}, *lb[] = {"collection", "b-2", NULL};
    st_prom_sample(&t, "strata_index_backlog", la, 3);
    st_prom_sample(&t, "strata_index_backlog", lb, 7);
    st_prom_sample(&t, "strata_index_backlog_other", la, 9);
    st_prom_head(&t, "strata_freshness_seconds", "histogram", "fresh");
    const char *ls[] = {"collection", "b-2", "stage", "sealed", NULL};
    st_prom_hist(&t, "strata_freshness_seconds", ls, &h);
    const char *ln[] = {"stage", "indexed", NULL};
    struct st_hist one;
    st_hist_init(&one, &st_hist_age);
    st_hist_observe(&one, 30.0);
    st_prom_hist(&t, "strata_freshness_seconds", ln, &one);
    ck_assert(!t.oom);

    double v = 0;
    ck_assert(st_api_prom_find(t.p, "strata_index_backlog", lb, &v));
    ck_assert_double_eq(v, 7);
    ck_assert(st_api_prom_find(t.p, "strata_index_backlog", la, &v));
    ck_assert_double_eq(v, 3);
    const char *lc[] = {"collection", "c", NULL}, *none[] = {"collection", NULL, NULL};
    ck_assert(!st_api_prom_find(t.p, "strata_index_backlog", lc, &v));
    ck_assert(!st_api_prom_find(t.p, "strata_index_backlog", none, &v));
    ck_assert(!st_api_prom_find(t.p, "strata_index", la, &v)); /* whole names only */

    json_t *j = st_api_prom_hist_json(t.p, "strata_freshness_seconds", ls);
    ck_assert(json_is_object(j));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "count")), 100);
    ck_assert_double_eq_tol(json_real_value(json_object_get(j, "mean_s")), 5.94, 1e-6);
    double p50 = json_real_value(json_object_get(j, "p50_s"));
    double p99 = json_real_value(json_object_get(j, "p99_s"));
    ck_assert_msg(p50 >= 3.0 && p50 < 100.0, "p50 %g", p50);
    ck_assert_msg(p99 >= 100.0 && p99 >= p50, "p99 %g", p99);
    json_decref(j);
    const char *absent[] = {"collection", "a", "stage", "sealed", NULL};
    j = st_api_prom_hist_json(t.p, "strata_freshness_seconds", absent);
    ck_assert(json_is_null(j));
    json_decref(j);

    /* Per collection first, else the node-wide series; backlog only where it is exported. */
    json_t *cb = json_object(), *ca = json_object();
    st_api_status_metrics(cb, "b-2", t.p);
    st_api_status_metrics(ca, "zzz", t.p);
    json_t *fb = json_object_get(cb, "freshness"), *fa = json_object_get(ca, "freshness");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(fb, "sealed"), "count")),
                     100);
    ck_assert(json_is_null(json_object_get(fa, "sealed")));
    json_t *ix = json_object_get(fa, "indexed");
    ck_assert_int_eq(json_integer_value(json_object_get(ix, "count")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(ix, "scope")), "node");
    ck_assert_int_eq(json_integer_value(json_object_get(cb, "backlog")), 7);
    ck_assert(json_is_null(json_object_get(ca, "backlog")));
    json_decref(ca);
    json_decref(cb);
    st_text_free(&t);

    ck_assert(st_api_prom_find("x 1\nbroken{a=\"1\" 2\ny{a=\"q\\\"\"} 4\n", "y", NULL, &v));
    ck_assert_double_eq(v, 4);
    ck_assert(!st_api_prom_find("broken{a=\"1\" 2\n", "broken", NULL, &v));
    ck_assert(!st_api_prom_find("", "x", NULL, &v));

    /* Two nodes' view of one stage: counts add, means weigh, quantiles take the larger. */
    json_t *m = json_object();
    st_api_hist_merge(m, "s", json_null());
    ck_assert_ptr_null(json_object_get(m, "s"));
    st_api_hist_merge(
        m, "s",
        json_pack("{s:I,s:f,s:f,s:f}", "count", 1, "mean_s", 10.0, "p50_s", 10.0, "p99_s", 20.0));
    st_api_hist_merge(
        m, "s", json_pack("{s:I,s:f,s:f,s:n}", "count", 3, "mean_s", 2.0, "p50_s", 5.0, "p99_s"));
    json_t *ms = json_object_get(m, "s");
    ck_assert_int_eq(json_integer_value(json_object_get(ms, "count")), 4);
    ck_assert_double_eq_tol(json_real_value(json_object_get(ms, "mean_s")), 4.0, 1e-9);
    ck_assert_double_eq_tol(json_real_value(json_object_get(ms, "p50_s")), 10.0, 1e-9);
    ck_assert(json_is_null(json_object_get(ms, "p99_s")));
    json_decref(m);

    ck_assert_str_eq(st_api_window_state("sealed", 1000, 0, 1000000), "sealed");
    ck_assert_str_eq(st_api_window_state("indexed", 1000, 5000, 5999), "indexed");
    ck_assert_str_eq(st_api_window_state("indexed", 1000, 5000, 6000), "expired");
}
END_TEST

/* GET / is the embedded page (answered by the router itself), GET /v1/status a route of
 * both daemons; other methods on / fall through (the daemon's 404). */
START_TEST(test_api_status_routes)
{
    struct st_http_req req = {.method = "GET", .path = "/"};
    struct st_http_resp resp = {.fd = -1};
    struct st_api_path ap;
    ck_assert(!st_api_route(&req, &ap, &resp));
    ck_assert_int_eq(resp.status, 200);
    ck_assert_str_eq(resp.content_type, "text/html; charset=utf-8");
    ck_assert_uint_eq(resp.len, st_status_html_len);
    ck_assert_uint_eq(strlen(st_status_html), st_status_html_len);
    ck_assert(strstr(resp.body, "<!DOCTYPE html>") == resp.body);
    ck_assert_ptr_nonnull(strstr(resp.body, "/v1/status"));
    ck_assert_ptr_null(strstr(resp.body, "http://")); /* nothing fetched from elsewhere */
    ck_assert_ptr_null(strstr(resp.body, "https://"));
    free(resp.body);

    struct st_http_resp r2 = {.fd = -1};
    req.path = "/v1/status";
    ck_assert(st_api_route(&req, &ap, &r2));
    ck_assert_int_eq(ap.route, ST_API_STATUS);
    req.method = "POST";
    ck_assert(st_api_route(&req, &ap, &r2));
    ck_assert_int_eq(ap.route, ST_API_OTHER);
    req.path = "/";
    ck_assert(st_api_route(&req, &ap, &r2));
    ck_assert_int_eq(ap.route, ST_API_OTHER);
    ck_assert_int_eq(r2.status, 0);

    uint8_t id[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    json_t *j = st_api_id_path_json(true, id, 8);
    ck_assert_str_eq(json_string_value(j), "18446744073709551614");
    json_decref(j);
    uint8_t small[8] = {0, 0, 0, 0, 0, 0, 1, 2};
    j = st_api_id_path_json(true, small, 8);
    ck_assert_str_eq(json_string_value(j), "258");
    json_decref(j);
    j = st_api_id_path_json(false, (const uint8_t *)"doc-1", 5);
    ck_assert_str_eq(json_string_value(j), "doc-1");
    json_decref(j);
}
END_TEST

int main(void)
{

    Suite *s = suite_create("common");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_error_codes);
    tcase_add_test(tc, test_coding_le);
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_varint);
    tcase_add_test(tc, test_checksum);
    tcase_add_test(tc, test_checksum_dispatch_matches_plain);
    tcase_add_test(tc, test_clock_manual);
    tcase_add_test(tc, test_mem_limit);
    tcase_add_test(tc, test_fault_points);
    tcase_add_test(tc, test_fault_crash);
    tcase_add_test(tc, test_log_format);
    tcase_add_test(tc, test_api_u64_ids);
    tcase_add_test(tc, test_api_prom_status);
    tcase_add_test(tc, test_api_status_routes);
    suite_add_tcase(s, tc);
    return st_test_run_suite(s);
}
