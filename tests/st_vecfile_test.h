/*
 * st_vecfile_test.h — writes the input files `strata produce` reads (tests only): .fvecs,
 * .npy, idx3-ubyte (optionally gzip'd) and JSON Lines, from rows of floats. Fails the test on
 * an I/O error. vec(row, col) gives the values; idx files store them as bytes (0..255).
 */
#ifndef ST_VECFILE_TEST_H
#define ST_VECFILE_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The value of row r, column c in every file these helpers write. */
float st_vec_value(uint32_t r, uint32_t c);

void st_write_fvecs(const char *path, uint32_t rows, uint32_t dim);
/* descr e.g. "<f4"; shape_text e.g. "(3, 4)" (written as given: lies are the caller's). */
void st_write_npy(const char *path, const char *descr, const char *shape_text, uint32_t rows,
                  uint32_t dim);
/* rows images of h x w; gz: gzip-compressed. */
void st_write_idx3(const char *path, uint32_t rows, uint32_t h, uint32_t w, bool gz);
/* One record per line: id "rec-<r>", ts ts0 + r (when ts0 != 0), meta {"r": r}. */
void st_write_jsonl(const char *path, uint32_t rows, uint32_t dim, int64_t ts0);
/* Writes len bytes. */
void st_write_bytes(const char *path, const void *data, size_t len);
/* XORs the byte at off with mask. */
void st_flip_byte(const char *path, long off, uint8_t mask);
/* The file's size in bytes. */
long st_file_size(const char *path);

#endif
