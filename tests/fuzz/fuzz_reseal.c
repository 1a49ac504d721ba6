/* Checksum resealing for adversarial tests and fuzz targets (see fuzz_reseal.h). */
#include "fuzz_reseal.h"

#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "st_checksum.h"
#include "st_coding.h"

/* [off, off + size) inside [0, len), with size = a * b computed without overflow. */
static bool span(size_t len, uint64_t off, uint64_t a, uint64_t b, uint64_t *size)
{
    if (__builtin_mul_overflow(a, b, size))
        return false;
    return off <= len && *size <= len - off;
}

static void seal(uint8_t *b, size_t len, uint8_t *at, uint64_t off, uint64_t size)
{
    if (off <= len && size <= len - off)
        st_put_le32(at, st_checksum32(b + off, size));
}

void fuzz_reseal_frame(uint8_t *b, size_t len)
{
    if (len < 32 || len > UINT32_MAX)
        return;
    st_put_le32(b + 16, (uint32_t)len);
    st_put_le32(b + 20, st_checksum32(b + 32, len - 32));
    st_put_le32(b + 28, st_checksum32(b, 28));
}

void fuzz_reseal_segment(uint8_t *b, size_t len)
{
    if (len < 64 + 256)
        return;
    size_t fo = len - 256;
    uint8_t *ft = b + fo;
    uint64_t dim = st_get_le32(ft + 12), count = st_get_le64(ft + 16);
    uint64_t mtab_off = st_get_le64(ft + 112), nmeta = st_get_le64(ft + 120);
    uint64_t vsum_off = st_get_le64(ft + 152), nvb = st_get_le64(ft + 160), sz;
    /* Meta block sums inside the meta table, then vector block sums inside the vsum table. */
    for (uint64_t i = 0; i < nmeta && mtab_off <= fo && i < (fo - mtab_off) / 24; i++) {
        uint8_t *t = b + mtab_off + i * 24;
        seal(b, len, t + 16, st_get_le64(t), st_get_le32(t + 8));
    }
    /* Version 2 keeps nrows vector rows and a row table of count entries. */
    bool v2 = st_get_le32(ft + 8) == 2;
    uint64_t rows = v2 ? st_get_le64(ft + 200) : count, vbytes;
    if (v2 && span(len, st_get_le64(ft + 192), count, 4, &sz))
        seal(b, len, ft + 208, st_get_le64(ft + 192), sz);
    if (!__builtin_mul_overflow(rows, dim * 4, &vbytes))
        for (uint64_t i = 0; i < nvb && vsum_off <= fo && i < (fo - vsum_off) / 4; i++) {
            uint64_t off = i * (256u * 1024u);
            if (off >= vbytes)
                break;
            uint64_t n = vbytes - off < 256u * 1024u ? vbytes - off : 256u * 1024u;
            seal(b, len, b + vsum_off + i * 4, 64 + off, n);
        }
    static const struct {
        unsigned off, n, unit, sum;
    } secs[] = {{64, 16, 40, 168},   {72, 80, 1, 172},   {88, 96, 16, 176},
                {112, 120, 24, 180}, {128, 136, 1, 184}, {152, 160, 4, 188}};
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
        uint64_t off = st_get_le64(ft + secs[i].off);
        if (span(len, off, st_get_le64(ft + secs[i].n), secs[i].unit, &sz))
            seal(b, len, ft + secs[i].sum, off, sz);
    }
    st_put_le32(ft + 248, st_checksum32(ft, 248));
}

void fuzz_reseal_hnsw(uint8_t *b, size_t len)
{
    if (len < 64 + 32)
        return;
    uint8_t *ft = b + len - 32;
    size_t body_end = len - 32;
    uint64_t n = st_get_le32(b + 28), stride = st_get_le64(b + 40), l0;
    bool labeled = st_get_le32(b + 8) == 2; /* version 2: labels after the level-0 blocks */
    if (span(body_end, 64, n, stride, &l0)) {
        seal(b, len, ft + 8, 64, l0);
        uint64_t lv = 64 + l0;
        if (labeled && lv <= body_end && n <= (body_end - lv) / 4) {
            seal(b, len, b + 56, lv, 4 * n);
            lv += 4 * n;
        }
        if (lv <= body_end && n <= body_end - lv) {
            seal(b, len, ft + 12, lv, n);
            seal(b, len, ft + 16, lv + n, body_end - lv - n);
        }
    }
    st_put_le32(b + 60, st_checksum32(b, 60));
    st_put_le64(ft + 20, len);
    st_put_le32(ft + 28, st_checksum32(ft, 28));
}

void fuzz_reseal_ivfpq(uint8_t *b, size_t len)
{
    if (len < 64 + 32)
        return;
    st_put_le32(b + 60, st_checksum32(b, 60));
    uint8_t *ft = b + len - 32;
    size_t body_end = len - 32;
    uint64_t dim = st_get_le32(b + 12), nlist = st_get_le32(b + 16), nbits = st_get_le32(b + 24);
    uint64_t cb, kb;
    /* codebooks: m * 2^nbits * (dim / m) floats = 2^nbits * dim floats */
    if (nbits < 32 && !__builtin_mul_overflow(nlist, dim * 4, &cb) &&
        !__builtin_mul_overflow((uint64_t)1 << nbits, dim * 4, &kb) && cb + kb >= cb &&
        64 + cb + kb <= body_end) {
        seal(b, len, ft + 8, 64, cb + kb);
        seal(b, len, ft + 12, 64 + cb + kb, body_end - 64 - cb - kb);
    }
    st_put_le64(ft + 16, len);
    st_put_le32(ft + 28, st_checksum32(ft, 28));
}

const char *fuzz_memfile(const uint8_t *b, size_t len)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz", MFD_CLOEXEC);
        if (fd < 0)
            return NULL;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0)
        return NULL;
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(fd, b + done, len - done, (off_t)done);
        if (w <= 0)
            return NULL;
        done += (size_t)w;
    }
    return path;
}
