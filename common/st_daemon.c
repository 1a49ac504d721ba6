/* st_daemon.c — command line, signals and test faults shared by the daemons. */
#include "st_daemon.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "st_clock.h"
#include "st_fault.h"
#include "st_log.h"
#include "st_version.h"

static void usage(FILE *f, const char *name, const char *about)
{
    fprintf(f,
            "usage: %s --config FILE [--check-config]\n"
            "       %s --version | --help\n"
            "%s"
            "Exit: 0 clean stop, 1 runtime failure, 2 bad usage or configuration.\n",
            name, name, about);
}

int st_daemon_args(int argc, char **argv, const char *name, const char *about, const char **path,
                   bool *check)
{
    *path = NULL;
    *check = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            *path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            *check = true;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout, name, about);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", name, STRATA_VERSION);
            return 0;
        } else {
            fprintf(stderr, "%s: unknown or incomplete argument '%s'\n", name, argv[i]);
            usage(stderr, name, about);
            return 2;
        }
    }
    if (*path == NULL) {
        usage(stderr, name, about);
        return 2;
    }
    return -1;
}

static volatile sig_atomic_t *stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    if (stop_flag != NULL)
        *stop_flag = 1;
}

void st_daemon_signals(volatile sig_atomic_t *flag)
{
    stop_flag = flag;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void st_daemon_arm_test_faults(const char *comp)
{
#ifndef NDEBUG
    const char *env = getenv("STRATA_FAULT_POINTS");
    static char sites[1024]; /* st_fault keeps the names: they must outlive the run */
    if (env == NULL || *env == '\0')
        return;
    snprintf(sites, sizeof(sites), "%s", env);
    char *save = NULL;
    for (char *site = strtok_r(sites, ",", &save); site != NULL;
         site = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(site, '=');
        int code = ST_EIO;
        unsigned long skip = 0;
        if (eq != NULL) { /* "site=crash" or "site=crash@N": SIGKILL there, after N passes */
            *eq = '\0';
            char *end = NULL;
            errno = 0;
            if (strncmp(eq + 1, "crash", 5) == 0 && eq[6] == '@')
                skip = strtoul(eq + 7, &end, 10);
            bool ok =
                strcmp(eq + 1, "crash") == 0 ||
                (end != NULL && end != eq + 7 && *end == '\0' && errno == 0 && skip <= UINT32_MAX);
            if (!ok) {
                st_log_warn(comp, "test fault point %s: \"%s\" is not crash or crash@N; ignored",
                            site, eq + 1);
                continue;
            }
            code = ST_FAULT_CRASH;
        }
        if (st_fault_arm(site, (uint32_t)skip, 0, code) == ST_OK)
            st_log_warn(comp, "test fault point armed: %s%s after %lu passes", site,
                        code == ST_FAULT_CRASH ? " (crash)" : "", skip);
        else
            st_log_warn(comp, "test fault point %s: the table of armed sites is full", site);
    }
#else
    (void)comp;
#endif
}

void st_daemon_notify_ready(struct st_daemon_notify *n, const char *status)
{
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    n->wd_usec = 0;
    n->watchdog = sd_watchdog_enabled(0, &n->wd_usec) > 0;
    n->next_wd = 0;
    n->next_status = st_clock_mono_ns(NULL) / 1000000 + 5000;
}

bool st_daemon_notify_tick(struct st_daemon_notify *n)
{
    int64_t now = st_clock_mono_ns(NULL) / 1000000;
    if (n->watchdog && now >= n->next_wd) {
        sd_notify(0, "WATCHDOG=1");
        n->next_wd = now + (int64_t)(n->wd_usec / 2000);
    }
    if (now < n->next_status)
        return false;
    n->next_status = now + 5000;
    return true;
}

void st_daemon_notify_status(const char *status)
{
    sd_notifyf(0, "STATUS=%s", status);
}

void st_daemon_stopping(int64_t shutdown_timeout_ms)
{
    sd_notify(0, "STOPPING=1");
    alarm((unsigned)((shutdown_timeout_ms + 999) / 1000));
}
