/*
 * st_error.h — error codes shared by every strata module.
 *
 * Fallible functions return int: 0 (ST_OK) on success, a negative ST_E* code otherwise.
 * Detail (errno, file, offset, message) travels in an optional struct st_err supplied by the
 * caller, never in a global.
 */
#ifndef ST_ERROR_H
#define ST_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#define ST_WUR          __attribute__((warn_unused_result))
#define ST_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum st_code {
    ST_OK = 0,
    ST_EINVAL = -1,   /* invalid argument or input */
    ST_ENOMEM = -2,   /* allocation failed */
    ST_EIO = -3,      /* I/O error from the OS */
    ST_ECORRUPT = -4, /* checksum or structure mismatch in stored data */
    ST_ENOTFOUND = -5,
    ST_EEXIST = -6,
    ST_ENOSPC = -7, /* disk full */
    ST_EBUSY = -8,  /* resource in use; retry later */
    ST_EAGAIN = -9, /* back off and retry (back-pressure) */
    ST_ETIMEDOUT = -10,
    ST_ECLOSED = -11,   /* object is shutting down */
    ST_ERANGE = -12,    /* value out of range */
    ST_EUNSUPP = -13,   /* unsupported version or feature */
    ST_EFAULT = -14,    /* injected by a fault point (tests only) */
    ST_EINTERNAL = -15, /* broken invariant: a bug */
};

/* Human-readable name of a code; never NULL. */
const char *st_strerror(int code);

/* Maps an errno value to the closest ST_E* code. */
int st_from_errno(int err);

/*
 * Optional detail for an error. Functions that accept `struct st_err *err` may be passed NULL.
 * msg always holds a NUL-terminated string (empty when no detail was set).
 */
struct st_err {
    int code;
    int sys_errno; /* 0 when not from the OS */
    char msg[512];
};

/* Records code and a formatted message in err (if err is non-NULL); returns code. */
int st_err_set(struct st_err *err, int code, const char *fmt, ...) ST_PRINTF(3, 4);
/* Like st_err_set, appending ": strerror(sys_errno)" and mapping sys_errno to a code. */
int st_err_sys(struct st_err *err, int sys_errno, const char *fmt, ...) ST_PRINTF(3, 4);
void st_err_clear(struct st_err *err);

/* For a call whose failure is harmless (cleanup the next start redoes): say so. */
static inline void st_best_effort(int rc)
{
    (void)rc;
}

#endif
