/* idx_file_int.h — private to indexer/: helpers shared by the index file formats. */
#ifndef IDX_FILE_INT_H
#define IDX_FILE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

/* Maps path privately (pages shared with the page cache until written, which an index never
 * is). Files shorter than min_len are ST_ECORRUPT. Caller munmaps *map. */
int idx_file_map(const char *path, size_t min_len, void **map, size_t *len,
                 struct st_err *err) ST_WUR;

/* "PATH: WHAT at offset OFF" as ST_ECORRUPT. */
int idx_file_corrupt(struct st_err *err, const char *path, uint64_t off, const char *what);

#endif
