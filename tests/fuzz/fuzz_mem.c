/*
 * libFuzzer target: st_mem_limit_from (common/st_mem.c), the reader of /proc/self/cgroup and of
 * the cgroup limit files. The input is the cgroup text, a NUL, then what the limit files hold:
 * written to <root>/a/b/memory.max and <root>/memory/a/b/memory.limit_in_bytes of a scratch
 * cgroup tree, so that lines naming /a/b (or /a, /) find them. Aborts when the answer exceeds
 * physical memory (a limit only ever lowers it) or is 0 while physical memory is known.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[256];
static const char *const dirs[] = {"", "/a", "/a/b", "/memory", "/memory/a", "/memory/a/b"};
static const char *const files[] = {"a/b/memory.max", "memory/a/b/memory.limit_in_bytes"};

/* The scratch tree goes when the process ends. */
static void cleanup(void)
{
    char p[512];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", root, files[i]);
        (void)unlink(p);
    }
    for (size_t i = sizeof(dirs) / sizeof(dirs[0]); i-- > 0;) {
        snprintf(p, sizeof(p), "%s%s", root, dirs[i]);
        (void)rmdir(p);
    }
}

static void put(const char *rel, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        abort();
    if (n > 0 && fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (root[0] == '\0') { /* one scratch tree per process */
        snprintf(root, sizeof(root), "%s/strata-fuzz-mem-%d",
                 getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp", (int)getpid());
        atexit(cleanup);
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
            char d[512];
            snprintf(d, sizeof(d), "%s%s", root, dirs[i]);
            (void)mkdir(d, 0755);
        }
    }
    const uint8_t *nul = memchr(data, '\0', size);
    size_t tlen = nul != NULL ? (size_t)(nul - data) : size;
    const uint8_t *val = nul != NULL ? nul + 1 : data + size;
    size_t vlen = (size_t)(data + size - val);
    char *text = malloc(tlen + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, tlen);
    text[tlen] = '\0';
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        put(files[i], val, vlen);
    const uint64_t phys = UINT64_C(8) << 30;
    uint64_t got = st_mem_limit_from(phys, text, root);
    if (got > phys || got == 0)
        abort();
    (void)st_mem_limit_from(0, text, root); /* physical memory unknown: any limit, or 0 */
    free(text);
    return 0;
}
