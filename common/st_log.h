/*
 * st_log.h — logging to stderr, one line per event, with syslog "<N>" prefixes so that
 * journald keeps the level when the daemons run under systemd.
 *
 * Line format:  <N>LEVEL component: message key=value ...
 * Thread-safe: each line is written with a single write(2).
 */
#ifndef ST_LOG_H
#define ST_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "st_error.h"

/* syslog priorities (do not change: they are the <N> prefix). */
enum st_log_level {
    ST_LOG_ERROR = 3,
    ST_LOG_WARNING = 4,
    ST_LOG_NOTICE = 5,
    ST_LOG_INFO = 6,
    ST_LOG_DEBUG = 7,
};

/* Sets the most verbose level that is written (default ST_LOG_INFO). Any thread. */
void st_log_set_level(enum st_log_level level);
enum st_log_level st_log_get_level(void);
bool st_log_enabled(enum st_log_level level);

/* Parses "error|warning|notice|info|debug"; returns ST_EINVAL otherwise. */
int st_log_level_parse(const char *s, enum st_log_level *out) ST_WUR;
const char *st_log_level_name(enum st_log_level level);

/*
 * Redirects log output to fd (default 2). Tests use it to capture lines. Not thread-safe
 * against concurrent logging; call at start-up.
 */
void st_log_set_fd(int fd);

void st_log(enum st_log_level level, const char *component, const char *fmt, ...) ST_PRINTF(3, 4);

/*
 * Rate limit for hot paths: allows `burst` events per `interval_ms`, then suppresses and
 * counts; the next allowed line reports how many were suppressed. One static state per site.
 */
struct st_ratelimit {
    int64_t window_start_ms;
    uint32_t in_window;
    uint32_t suppressed;
};
/* Returns true when the caller may log now; *suppressed receives the count dropped before. */
bool st_ratelimit_ok(struct st_ratelimit *rl, uint32_t burst, int64_t interval_ms,
                     uint32_t *suppressed);

#define st_log_error(comp, ...)  st_log(ST_LOG_ERROR, comp, __VA_ARGS__)
#define st_log_warn(comp, ...)   st_log(ST_LOG_WARNING, comp, __VA_ARGS__)
#define st_log_notice(comp, ...) st_log(ST_LOG_NOTICE, comp, __VA_ARGS__)
#define st_log_info(comp, ...)   st_log(ST_LOG_INFO, comp, __VA_ARGS__)
#define st_log_debug(comp, ...)                                                                    \
    do {                                                                                           \
        if (st_log_enabled(ST_LOG_DEBUG))                                                          \
            st_log(ST_LOG_DEBUG, comp, __VA_ARGS__);                                               \
    } while (0)

#endif
