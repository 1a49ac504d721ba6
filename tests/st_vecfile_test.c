/* st_vecfile_test.c — input files for `strata produce` tests (st_vecfile_test.h). */
#include "st_vecfile_test.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

float st_vec_value(uint32_t r, uint32_t c)
{
    /* small integers and halves: exact in float32 and in the idx files' bytes */
    return (float)((r * 7 + c * 3) % 200) + (c % 2 ? 0.5f : 0.0f);
}

static FILE *wopen(const char *path)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    return f;
}

void st_write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = wopen(path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

void st_write_fvecs(const char *path, uint32_t rows, uint32_t dim)
{
    FILE *f = wopen(path);
    for (uint32_t r = 0; r < rows; r++) {
        int32_t d = (int32_t)dim;
        ck_assert_uint_eq(fwrite(&d, 4, 1, f), 1);
        for (uint32_t c = 0; c < dim; c++) {
            float v = st_vec_value(r, c);
            ck_assert_uint_eq(fwrite(&v, 4, 1, f), 1);
        }
    }
    ck_assert_int_eq(fclose(f), 0);
}

void st_write_npy(const char *path, const char *descr, const char *shape_text, uint32_t rows,
                  uint32_t dim)
{
    char h[256];
    int n = snprintf(h, sizeof(h), "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                     shape_text);
    /* pad with spaces so that the data starts at a multiple of 64, ending in '\n' */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    FILE *f = wopen(path);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    uint16_t hl = (uint16_t)((size_t)n + pad + 1);
    fwrite(&hl, 2, 1, f);
    fwrite(h, 1, (size_t)n, f);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t c = 0; c < dim; c++) {
            float v = st_vec_value(r, c);
            fwrite(&v, 4, 1, f);
        }
    ck_assert_int_eq(fclose(f), 0);
}

void st_write_idx3(const char *path, uint32_t rows, uint32_t h, uint32_t w, bool gz)
{
    size_t len = 16 + (size_t)rows * h * w;
    uint8_t *b = malloc(len);
    ck_assert_ptr_nonnull(b);
    uint32_t hdr[4] = {0x03080000u, rows, h, w};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++)
            b[i * 4 + k] = (uint8_t)(i == 0 ? (hdr[0] >> (8 * k)) : (hdr[i] >> (24 - 8 * k)));
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t c = 0; c < h * w; c++)
            b[16 + (size_t)r * h * w + c] = (uint8_t)st_vec_value(r, c);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, b, (unsigned)len), (int)len);
        ck_assert_int_eq(gzclose(f), Z_OK);
    } else {
        st_write_bytes(path, b, len);
    }
    free(b);
}

void st_write_jsonl(const char *path, uint32_t rows, uint32_t dim, int64_t ts0)
{
    FILE *f = wopen(path);
    for (uint32_t r = 0; r < rows; r++) {
        fprintf(f, "{\"id\": \"rec-%" PRIu32 "\", ", r);
        if (ts0 != 0)
            fprintf(f, "\"ts\": %" PRId64 ", ", ts0 + r);
        fprintf(f, "\"meta\": {\"r\": %" PRIu32 "}, \"vector\": [", r);
        for (uint32_t c = 0; c < dim; c++)
            fprintf(f, "%s%.9g", c ? ", " : "", (double)st_vec_value(r, c));
        fprintf(f, "]}\n");
    }
    ck_assert_int_eq(fclose(f), 0);
}

void st_flip_byte(const char *path, long off, uint8_t mask)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    int c = fgetc(f);
    ck_assert_int_ne(c, EOF);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    fputc(c ^ mask, f);
    ck_assert_int_eq(fclose(f), 0);
}

long st_file_size(const char *path)
{
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    return (long)sb.st_size;
}
