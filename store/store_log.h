/* store_log.h — writer and reader of log_format.h files (WAL and manifest). Private to store/. */
#ifndef STORE_LOG_H
#define STORE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/uio.h>

#include "st_error.h"
#include "store_fs.h"

struct store_log_writer {
    struct store_file *file; /* borrowed */
    uint32_t block_off;      /* position inside the current block */
    uint8_t *buf;            /* fragment headers of the record being appended */
    size_t cap;
    struct iovec *iov; /* headers, paddings and payload pieces of that record */
    size_t iov_cap;
    struct XXH3_state_s *hash; /* fragment checksums over payload pieces */
    const char *site_write;    /* fault-point names */
};

/* Starts appending to file at its current size. The file is borrowed. */
int store_log_writer_init(struct store_log_writer *w, struct store_file *file,
                          const char *site_write) ST_WUR;
void store_log_writer_destroy(struct store_log_writer *w);
/* Frames and appends one record with a single write. On error the file may end in a torn
 * record; the caller must stop using the log. */
int store_log_append(struct store_log_writer *w, const void *payload, size_t len) ST_WUR;
/* The same for a payload given in pieces (the concatenation of iov[0..iovcnt)): written with
 * pwritev straight from the pieces, the fragment headers between them — the bytes on disk are
 * those store_log_append writes for the concatenation, without copying the payload. */
int store_log_appendv(struct store_log_writer *w, const struct iovec *iov, int iovcnt) ST_WUR;

enum store_log_end {
    STORE_LOG_END_CLEAN = 0,
    STORE_LOG_END_TORN = 1,    /* damaged/incomplete final record: truncate at end_offset */
    STORE_LOG_END_CORRUPT = 2, /* damage with valid records after it */
};

struct store_log_reader {
    const uint8_t *data; /* whole file, borrowed */
    size_t len;
    size_t pos;
    uint8_t *rec; /* reassembly buffer */
    size_t rec_len, rec_cap;
    enum store_log_end end;
    size_t end_offset; /* where the valid prefix ends (torn/corrupt) */
    char why[128];     /* what was wrong there */
};

void store_log_reader_init(struct store_log_reader *r, const uint8_t *data, size_t len);
void store_log_reader_destroy(struct store_log_reader *r);
/*
 * Next record: returns 1 and sets *payload and *len (valid until the next call) and *offset (file
 * offset of its first fragment); returns 0 at the end, after which r->end says how it ended.
 */
int store_log_next(struct store_log_reader *r, const uint8_t **payload, size_t *len,
                   size_t *offset);

#endif
