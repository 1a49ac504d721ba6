#include "st_log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = ST_LOG_INFO;
static int log_fd = 2;

void st_log_set_level(enum st_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum st_log_level st_log_get_level(void)
{
    return (enum st_log_level)atomic_load(&log_level);
}

bool st_log_enabled(enum st_log_level level)
{
    return (int)level <= atomic_load(&log_level);
}

void st_log_set_fd(int fd)
{
    log_fd = fd;
}

static const struct {
    const char *name;
    enum st_log_level level;
} level_names[] = {
    {"error", ST_LOG_ERROR}, {"warning", ST_LOG_WARNING}, {"notice", ST_LOG_NOTICE},
    {"info", ST_LOG_INFO},   {"debug", ST_LOG_DEBUG},
};

int st_log_level_parse(const char *s, enum st_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i].name) == 0) {
            *out = level_names[i].level;
            return ST_OK;
        }
    }
    return ST_EINVAL;
}

const char *st_log_level_name(enum st_log_level level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (level_names[i].level == level)
            return level_names[i].name;
    return "unknown";
}

void st_log(enum st_log_level level, const char *component, const char *fmt, ...)
{
    if (!st_log_enabled(level))
        return;
    char line[2048];
    int n = snprintf(line, sizeof(line), "<%d>%s %s: ", (int)level, st_log_level_name(level),
                     component);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    va_end(ap);
    if (m > 0)
        len += (size_t)m < sizeof(line) - len ? (size_t)m : sizeof(line) - len - 1;
    /* One event, one line: newlines inside the message would split it in journald. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    if (len >= sizeof(line) - 1)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
}

bool st_ratelimit_ok(struct st_ratelimit *rl, uint32_t burst, int64_t interval_ms,
                     uint32_t *suppressed)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now - rl->window_start_ms >= interval_ms) {
        rl->window_start_ms = now;
        rl->in_window = 0;
    }
    if (rl->in_window < burst) {
        rl->in_window++;
        if (suppressed != NULL)
            *suppressed = rl->suppressed;
        rl->suppressed = 0;
        return true;
    }
    rl->suppressed++;
    return false;
}
