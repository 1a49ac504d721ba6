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

/* "PATH: WHAT at offset OFF" as ST_ECORRUPT. */
int idx_file_corrupt(struct st_err *err, const char *path, uint64_t off, const char *what);

#endif
