#include "st_error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *st_strerror(int code)
{
    switch (code) {
    case ST_OK:
        return "ok";
    case ST_EINVAL:
        return "invalid argument";
    case ST_ENOMEM:
        return "out of memory";
    case ST_EIO:
        return "I/O error";
    case ST_ECORRUPT:
        return "data corruption";
    case ST_ENOTFOUND:
        return "not found";
    case ST_EEXIST:
        return "already exists";
    case ST_ENOSPC:
        return "no space left on device";
    case ST_EBUSY:
        return "resource busy";
    case ST_EAGAIN:
        return "try again";
    case ST_ETIMEDOUT:
        return "timed out";
    case ST_ECLOSED:
        return "closed";
    case ST_ERANGE:
        return "out of range";
    case ST_EUNSUPP:
        return "unsupported";
    case ST_EFAULT:
        return "injected fault";
    case ST_EINTERNAL:
        return "internal error";
    default:
        return "unknown error";
    }
}

int st_from_errno(int err)
{
    switch (err) {
    case 0:
        return ST_OK;
    case ENOMEM:
        return ST_ENOMEM;
    case ENOSPC:
    case EDQUOT:
        return ST_ENOSPC;
    case ENOENT:
        return ST_ENOTFOUND;
    case EEXIST:
        return ST_EEXIST;
    case EINVAL:
        return ST_EINVAL;
    case EBUSY:
        return ST_EBUSY;
    case EAGAIN:
        return ST_EAGAIN;
    case ETIMEDOUT:
        return ST_ETIMEDOUT;
    case ERANGE:
        return ST_ERANGE;
    default:
        return ST_EIO;
    }
}

ST_PRINTF(4, 0)
static void err_vset(struct st_err *err, int code, int sys_errno, const char *fmt, va_list ap)
{
    err->code = code;
    err->sys_errno = sys_errno;
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (n < 0)
        err->msg[0] = '\0';
    if (sys_errno != 0 && n >= 0 && (size_t)n < sizeof(err->msg)) {
        char buf[128];
        const char *s = strerror_r(sys_errno, buf, sizeof(buf));
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", s);
    }
}

int st_err_set(struct st_err *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err_vset(err, code, 0, fmt, ap);
        va_end(ap);
    }
    return code;
}

int st_err_sys(struct st_err *err, int sys_errno, const char *fmt, ...)
{
    int code = st_from_errno(sys_errno);
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err_vset(err, code, sys_errno, fmt, ap);
        va_end(ap);
    }
    return code;
}

void st_err_clear(struct st_err *err)
{
    if (err != NULL) {
        err->code = ST_OK;
        err->sys_errno = 0;
        err->msg[0] = '\0';
    }
}
