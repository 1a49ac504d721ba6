#include "idx_file_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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
