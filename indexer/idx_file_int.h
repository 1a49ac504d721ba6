/* idx_file_int.h — private to indexer/: helpers shared by the index file formats. */
#ifndef IDX_FILE_INT_H
#define IDX_FILE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"
#include "store_fs.h"

/*
 * Publishing an index file: idx_file_begin creates path.tmp (replacing a stale one), the
 * caller appends to o->f, idx_file_publish fsyncs, closes, renames onto path and fsyncs the
 * directory. idx_file_abort (always safe to call, also after publish) closes and removes what
 * is left and frees o.
 */
struct idx_file_out {
    const char *path; /* borrowed */
    char *tmp;
    struct store_file *f;
};
int idx_file_begin(struct idx_file_out *o, const char *path, struct st_err *err) ST_WUR;
int idx_file_publish(struct idx_file_out *o, struct st_err *err) ST_WUR;
void idx_file_abort(struct idx_file_out *o);

/* Maps path privately (pages shared with the page cache until written, which an index never
 * is). Files shorter than min_len are ST_ECORRUPT. Caller munmaps *map. */
int idx_file_map(const char *path, size_t min_len, void **map, size_t *len,
                 struct st_err *err) ST_WUR;

/*
 * Ends a save: publishes when rc is ST_OK, otherwise reports "writing the index" (unless err
 * already says why); always removes what is left. Returns the final result.
 */
int idx_file_finish(struct idx_file_out *o, int rc, struct st_err *err) ST_WUR;

/*
 * The envelope both index formats share: a 64-byte header (magic at 0, format version at 8,
 * checksum32 of bytes 0..59 at 60) and a 32-byte footer (magic at 0, the file size at
 * size_off, checksum32 of bytes 0..27 at 28).
 */
#define IDX_FILE_HEADER 64u
#define IDX_FILE_FOOTER 32u
struct idx_file_kind {
    const char *magic, *footer_magic; /* 8 bytes each */
    uint32_t version;                 /* the newest version read */
    size_t size_off;
    uint32_t oldest; /* the oldest version read (0: only `version`) */
};
/* Maps path (idx_file_map) and verifies the envelope: ST_ECORRUPT with the offset, or
 * ST_EUNSUPP for a format version outside oldest..version. */
int idx_file_open(const char *path, const struct idx_file_kind *k, void **map, size_t *len,
                  struct st_err *err) ST_WUR;

/* "PATH: WHAT at offset OFF" as ST_ECORRUPT. */
int idx_file_corrupt(struct st_err *err, const char *path, uint64_t off, const char *what);

#endif
