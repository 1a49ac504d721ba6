#include "st_test.h"

#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <linux/magic.h>
#include <unistd.h>

#undef _mark_point /* the real one, declared by check.h */

void st_mark_point(const char *file, int line)
{
    enum { RECENT = 8 };
    static _Thread_local struct {
        const char *file;
        int line;
    } recent[RECENT];
    static _Thread_local unsigned next;
    static _Thread_local int64_t last_ms;
    /* A repeated location still goes out every 50 ms, so that a hang or crash in a loop names
     * a line it reached lately rather than one of the last 8 new ones. */
    int64_t now = st_test_now_ms();
    bool stale = now - last_ms >= 50;
    for (unsigned i = 0; i < RECENT && !stale; i++)
        if (recent[i].line == line && recent[i].file == file)
            return;
    last_ms = now;
    recent[next % RECENT].file = file;
    recent[next % RECENT].line = line;
    next++;
    _mark_point(file, line);
}

const char *st_test_broker(const char *key)
{
    const char *v = getenv(key);
    if (v != NULL && *v != '\0')
        return v;
    const char *dir = getenv("STRATA_BROKERS_DIR");
    static char buf[4][256];
    static int next;
    if (dir != NULL) {
        char path[512];
        snprintf(path, sizeof(path), "%s/env", dir);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            char line[512];
            size_t kl = strlen(key);
            while (fgets(line, sizeof(line), f) != NULL) {
                if (strncmp(line, key, kl) == 0 && line[kl] == '=') {
                    char *out = buf[next++ % 4];
                    snprintf(out, 256, "%s", line + kl + 1);
                    out[strcspn(out, "\r\n")] = '\0';
                    fclose(f);
                    return out;
                }
            }
            fclose(f);
        }
    }
    ck_abort_msg("%s is not set and no broker harness is running: run the tests with ctest "
                 "(which starts real brokers) or scripts/brokers start DIR and set "
                 "STRATA_BROKERS_DIR=DIR",
                 key);
    return NULL;
}

/* A new directory strata-TAG-XXXXXX under base. */
static char *tmpdir_in(const char *base, const char *tag)
{
    char *p = NULL;
    if (asprintf(&p, "%s/strata-%s-XXXXXX", base, tag) < 0)
        ck_abort_msg("asprintf failed");
    if (mkdtemp(p) == NULL)
        ck_abort_msg("mkdtemp(%s): %s", p, strerror(errno));
    return p;
}

char *st_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    return tmpdir_in(base ? base : "/tmp", tag);
}

char *st_test_manifest_path(const char *dir)
{
    char cur[4200], name[128] = {0};
    snprintf(cur, sizeof(cur), "%s/CURRENT", dir);
    FILE *f = fopen(cur, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(name, sizeof(name), f));
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    char *out = NULL;
    ck_assert_int_ge(asprintf(&out, "%s/%s", dir, name), 0);
    return out;
}

static bool on_memory_fs(const char *path)
{
    struct statfs sfs;
    return statfs(path, &sfs) != 0 || sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC;
}

char *st_test_disk_tmpdir(const char *tag)
{
    char *p = st_test_tmpdir(tag);
    if (!on_memory_fs(p))
        return p;
    st_test_rmrf(p);
    free(p);
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        ck_abort_msg("getcwd: %s", strerror(errno));
    p = tmpdir_in(cwd, tag);
    if (on_memory_fs(p))
        ck_abort_msg("neither TMPDIR nor the working directory (%s) is on a disk's file system",
                     cwd);
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void st_test_rmrf(const char *path)
{
    if (path != NULL)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *st_test_unique(const char *prefix)
{
    static char buf[8][128];
    static int n;
    char *out = buf[n % 8];
    snprintf(out, 128, "%s-%d-%d-%lld", prefix, (int)getpid(), n,
             (long long)(st_test_now_ms() % 100000000));
    n++;
    return out;
}

const char *st_test_source(const char *rel)
{
    static char buf[4][1024];
    static int n;
    const char *src = getenv("STRATA_SOURCE_DIR");
    char *out = buf[n++ % 4];
    snprintf(out, 1024, "%s/tests/%s", src ? src : ".", rel);
    return out;
}

int st_test_run(const char *cmd, char *out, size_t outsz)
{
    FILE *p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "popen(%s)", cmd);
    size_t n = fread(out, 1, outsz - 1, p);
    out[n] = '\0';
    char rest[4096]; /* what does not fit is read and dropped: never a SIGPIPE to the command */
    while (fread(rest, 1, sizeof(rest), p) > 0) {
    }
    int st = pclose(p);
    ck_assert_msg(WIFEXITED(st), "%s did not exit normally", cmd);
    return WEXITSTATUS(st);
}

int64_t st_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void st_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int st_test_cli(char *out, size_t outsz, const char *fmt, ...)
{
    char args[3000], cmd[3600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    const char *cli = getenv("STRATA_CLI");
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", cli != NULL ? cli : "strata", args);
    return st_test_run(cmd, out, outsz);
}

int st_test_run_suite(Suite *su)
{
    /* Failure messages quote command output and logs; past check's default 4 KiB the child
     * exits with "Message string too long" and the failure itself is never shown. */
    if (getenv("CK_MAX_MSG_SIZE") == NULL)
        check_set_max_msg_size(256 * 1024);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

size_t st_test_fault_sites(const char *const *sites, size_t n, size_t clean, const char *prefix)
{
    size_t matching = 0;
    for (size_t i = 0; i < n; i++) {
        matching += strncmp(sites[i], prefix, strlen(prefix)) == 0;
        fprintf(stderr, "  %s%s\n", sites[i], i < clean ? "" : " (error path)");
    }
    return matching;
}
