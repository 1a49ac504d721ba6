#include "idx_file_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_checksum.h"
#include "st_coding.h"

int idx_file_map(const char *path, size_t min_len, void **map, size_t *len, struct st_err *err)
{
    *map = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_err_sys(err, errno, "open %s", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int rc = st_err_sys(err, errno, "stat %s", path);
        close(fd);
        return rc;
    }
    *len = (size_t)sb.st_size;
    if (*len < min_len) {
        close(fd);
        return idx_file_corrupt(err, path, 0, "file too short for an index");
    }
    void *m = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return st_err_sys(err, errno, "mmap %s", path);
    *map = m;
    return ST_OK;
}

int idx_file_corrupt(struct st_err *err, const char *path, uint64_t off, const char *what)
{
    return st_err_set(err, ST_ECORRUPT, "%s: %s at offset %llu", path, what,
                      (unsigned long long)off);
}

int idx_file_begin(struct idx_file_out *o, const char *path, struct st_err *err)
{
    o->path = path;
    o->f = NULL;
    if (asprintf(&o->tmp, "%s.tmp", path) < 0) {
        o->tmp = NULL;
        return st_err_set(err, ST_ENOMEM, "%s: out of memory", path);
    }
    unlink(o->tmp); /* a leftover of an interrupted save */
    int rc = store_fs_create(NULL, o->tmp, &o->f, "idx.file.create");
    if (rc != ST_OK)
        st_err_set(err, rc, "%s: writing the index: %s", path, st_strerror(rc));
    return rc;
}

int idx_file_publish(struct idx_file_out *o, struct st_err *err)
{
    int rc = store_fs_sync(o->f, "idx.file.fsync");
    store_fs_close(o->f);
    o->f = NULL;
    if (rc == ST_OK)
        rc = store_fs_rename(NULL, o->tmp, o->path, "idx.file.rename");
    if (rc == ST_OK) {
        char *d = strdup(o->path);
        rc = d != NULL ? store_fs_sync_dir(NULL, dirname(d), "idx.file.sync_dir") : ST_ENOMEM;
        free(d);
        free(o->tmp); /* published: nothing left to remove */
        o->tmp = NULL;
    }
    if (rc != ST_OK)
        st_err_set(err, rc, "%s: writing the index: %s", o->path, st_strerror(rc));
    return rc;
}

void idx_file_abort(struct idx_file_out *o)
{
    store_fs_close(o->f);
    o->f = NULL;
    if (o->tmp != NULL)
        unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
}

int idx_file_finish(struct idx_file_out *o, int rc, struct st_err *err)
{
    if (rc == ST_OK)
        rc = idx_file_publish(o, err);
    else if (err != NULL && err->code == ST_OK)
        st_err_set(err, rc, "%s: writing the index: %s", o->path, st_strerror(rc));
    idx_file_abort(o);
    return rc;
}

int idx_file_open(const char *path, const struct idx_file_kind *k, void **map, size_t *len,
                  struct st_err *err)
{
    int rc = idx_file_map(path, IDX_FILE_HEADER + IDX_FILE_FOOTER, map, len, err);
    if (rc != ST_OK)
        return rc;
    const uint8_t *m = *map, *ft = m + *len - IDX_FILE_FOOTER;
    if (memcmp(m, k->magic, 8) != 0)
        rc = idx_file_corrupt(err, path, 0, "bad magic");
    else if (st_get_le32(m + 60) != st_checksum32(m, 60))
        rc = idx_file_corrupt(err, path, 60, "header checksum mismatch");
    else if (st_get_le32(m + 8) > k->version ||
             st_get_le32(m + 8) < (k->oldest ? k->oldest : k->version))
        rc = st_err_set(err, ST_EUNSUPP, "%s: index format version %u not supported", path,
                        st_get_le32(m + 8));
    else if (memcmp(ft, k->footer_magic, 8) != 0 || st_get_le32(ft + 28) != st_checksum32(ft, 28) ||
             st_get_le64(ft + k->size_off) != *len)
        rc = idx_file_corrupt(err, path, *len - IDX_FILE_FOOTER, "bad footer (truncated file?)");
    if (rc != ST_OK) {
        munmap(*map, *len);
        *map = NULL;
    }
    return rc;
}
