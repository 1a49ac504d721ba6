/* The memory a process may use: physical memory, capped by its cgroup's limit. */
#include "st_mem.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A limit file's value: a decimal number of bytes, optionally followed by a newline. false for
 * "max", anything else that is not a whole number, 0, or a number of 2^62 and more (v1 writes
 * PAGE_COUNTER_MAX * page size, about 2^63, for "unlimited"). */
static bool read_limit(const char *path, uint64_t *out)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return false;
    char buf[64];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    if (n == 0 || n > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return false; /* "max", or not a number */
        unsigned d = (unsigned)(buf[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v == 0 || v >= (UINT64_C(1) << 62))
        return false; /* 0: no process runs under it, so it is not what this one has */
    *out = v;
    return true;
}

/* The cgroup path of a /proc/self/cgroup line "ID:CONTROLLERS:PATH" when CONTROLLERS is
 * what want says: "" for the v2 line ("0::/path"), or a v1 list that names want. */
static const char *line_path(const char *line, const char *want)
{
    const char *c1 = strchr(line, ':');
    if (c1 == NULL)
        return NULL;
    const char *c2 = strchr(c1 + 1, ':');
    if (c2 == NULL || c2[1] != '/')
        return NULL;
    size_t clen = (size_t)(c2 - (c1 + 1));
    if (*want == '\0')
        return clen == 0 && c1 - line == 1 && line[0] == '0' ? c2 + 1 : NULL;
    size_t wlen = strlen(want);
    for (const char *p = c1 + 1; p < c2;) { /* comma-separated controllers */
        const char *e = memchr(p, ',', (size_t)(c2 - p));
        if (e == NULL)
            e = c2;
        if ((size_t)(e - p) == wlen && memcmp(p, want, wlen) == 0)
            return c2 + 1;
        p = e + 1;
    }
    return NULL;
}

/* Whether a cgroup path has a component that is exactly ".." (the kernel shows one for a
 * cgroup outside the reader's namespace: not a path under this mount). */
static bool has_dotdot(const char *path)
{
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == '\0'))
            return true;
    return false;
}

/* The lowest limit, over the files named, of the cgroup the lines name for want and of its
 * ancestors (a limit on a parent, a slice's or a container's, binds as well), under dir (root,
 * or root/memory). */
static bool cgroup_limit(const char *proc_cgroup, const char *want, const char *dir,
                         const char *const *files, size_t nfiles, uint64_t *out)
{
    bool have = false;
    for (const char *l = proc_cgroup; l != NULL && *l != '\0';) {
        const char *nl = strchr(l, '\n');
        size_t len = nl != NULL ? (size_t)(nl - l) : strlen(l);
        char line[4096];
        const char *path = NULL;
        if (len < sizeof(line)) {
            memcpy(line, l, len);
            line[len] = '\0';
            path = line_path(line, want);
        }
        if (path != NULL && !has_dotdot(path)) {
            char cg[4096];
            snprintf(cg, sizeof(cg), "%s", strcmp(path, "/") == 0 ? "" : path);
            for (;;) { /* the cgroup, then each ancestor up to the mount's root */
                for (size_t i = 0; i < nfiles; i++) {
                    char full[8192];
                    uint64_t v;
                    if (snprintf(full, sizeof(full), "%s%s/%s", dir, cg, files[i]) <
                            (int)sizeof(full) &&
                        read_limit(full, &v) && (!have || v < *out)) {
                        *out = v;
                        have = true;
                    }
                }
                char *slash = strrchr(cg, '/');
                if (slash == NULL)
                    break;
                *slash = '\0';
            }
            return have; /* one line names the hierarchy */
        }
        l = nl != NULL ? nl + 1 : NULL;
    }
    return false;
}

uint64_t st_mem_limit_from(uint64_t phys, const char *proc_cgroup, const char *cgroup_root)
{
    /* v2: memory.high too, the bound systemd's MemoryHigh= sets (past it the kernel throttles
     * and reclaims: as much a limit for sizing as memory.max). */
    static const char *const v2[] = {"memory.max", "memory.high"};
    static const char *const v1[] = {"memory.limit_in_bytes"};
    uint64_t lim = 0;
    char v1dir[4200];
    bool have = false;
    if (proc_cgroup != NULL && cgroup_root != NULL) {
        have = cgroup_limit(proc_cgroup, "", cgroup_root, v2, 2, &lim);
        if (!have && snprintf(v1dir, sizeof(v1dir), "%s/memory", cgroup_root) < (int)sizeof(v1dir))
            have = cgroup_limit(proc_cgroup, "memory", v1dir, v1, 1, &lim);
    }
    if (have && (phys == 0 || lim < phys))
        return lim;
    return phys;
}

uint64_t st_mem_physical(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

uint64_t st_mem_limit(void)
{
    /* All of /proc/self/cgroup (it holds no NUL): a cut line would name an ancestor's path. */
    char *text = NULL;
    size_t cap = 0;
    ssize_t n = -1;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f != NULL) {
        n = getdelim(&text, &cap, '\0', f);
        fclose(f);
    }
    uint64_t lim = st_mem_limit_from(st_mem_physical(), n > 0 ? text : NULL, "/sys/fs/cgroup");
    free(text);
    return lim;
}
