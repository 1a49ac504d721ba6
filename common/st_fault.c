#include "st_fault.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

#define FAULT_MAX_ARMED    64
#define FAULT_MAX_RECORDED 256

struct fault_entry {
    const char *site; /* NULL when free */
    char name[96];
    uint32_t skip;
    uint32_t times;
    uint32_t fired;
    int code;
    void (*hook)(void *ctx);
    void *hctx;
};

_Atomic int st_fault_active = 0;

static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fault_entry armed[FAULT_MAX_ARMED];
static bool recording;
static const char *recorded[FAULT_MAX_RECORDED];
static size_t n_recorded;

static void fault_update_active(void)
{
    int any = recording;
    for (size_t i = 0; i < FAULT_MAX_ARMED && !any; i++)
        any = armed[i].site != NULL;
    atomic_store(&st_fault_active, any);
}

static struct fault_entry *fault_find(const char *site)
{
    for (size_t i = 0; i < FAULT_MAX_ARMED; i++)
        if (armed[i].site != NULL && strcmp(armed[i].name, site) == 0)
            return &armed[i];
    return NULL;
}

int st_fault_check(const char *site)
{
    int code = 0;
    void (*hook)(void *) = NULL;
    void *hctx = NULL;
    pthread_mutex_lock(&fault_lock);
    if (recording) {
        bool seen = false;
        for (size_t i = 0; i < n_recorded && !seen; i++)
            seen = strcmp(recorded[i], site) == 0;
        if (!seen && n_recorded < FAULT_MAX_RECORDED)
            recorded[n_recorded++] = site;
    }
    struct fault_entry *e = fault_find(site);
    if (e != NULL && e->hook != NULL) {
        hook = e->hook;
        hctx = e->hctx;
        e->fired++;
    } else if (e != NULL) {
        if (e->skip > 0) {
            e->skip--;
        } else if (e->times == 0 || e->fired < e->times) {
            e->fired++;
            code = e->code;
        }
    }
    pthread_mutex_unlock(&fault_lock);
    if (hook != NULL)
        hook(hctx);
    if (code == ST_FAULT_CRASH) {
        raise(SIGKILL);
        code = ST_EFAULT; /* not reached */
    }
    return code;
}

static int fault_set(const char *site, uint32_t skip, uint32_t times, int code,
                     void (*hook)(void *), void *hctx)
{
    int rc = ST_ENOMEM;
    if (strlen(site) >= sizeof(armed[0].name))
        return ST_EINVAL;
    pthread_mutex_lock(&fault_lock);
    struct fault_entry *e = fault_find(site);
    for (size_t i = 0; i < FAULT_MAX_ARMED && e == NULL; i++)
        if (armed[i].site == NULL)
            e = &armed[i];
    if (e != NULL) {
        strcpy(e->name, site);
        e->site = e->name;
        e->skip = skip;
        e->times = times;
        e->fired = 0;
        e->code = code;
        e->hook = hook;
        e->hctx = hctx;
        rc = ST_OK;
    }
    fault_update_active();
    pthread_mutex_unlock(&fault_lock);
    return rc;
}

int st_fault_arm(const char *site, uint32_t skip, uint32_t times, int code)
{
    return fault_set(site, skip, times, code, NULL, NULL);
}

int st_fault_hook(const char *site, void (*fn)(void *ctx), void *ctx)
{
    return fault_set(site, 0, 0, 0, fn, ctx);
}

void st_fault_disarm(const char *site)
{
    pthread_mutex_lock(&fault_lock);
    struct fault_entry *e = fault_find(site);
    if (e != NULL)
        e->site = NULL;
    fault_update_active();
    pthread_mutex_unlock(&fault_lock);
}

void st_fault_disarm_all(void)
{
    pthread_mutex_lock(&fault_lock);
    for (size_t i = 0; i < FAULT_MAX_ARMED; i++)
        armed[i].site = NULL;
    fault_update_active();
    pthread_mutex_unlock(&fault_lock);
}

uint32_t st_fault_fired(const char *site)
{
    uint32_t n = 0;
    pthread_mutex_lock(&fault_lock);
    struct fault_entry *e = fault_find(site);
    if (e != NULL)
        n = e->fired;
    pthread_mutex_unlock(&fault_lock);
    return n;
}

void st_fault_record(bool on)
{
    pthread_mutex_lock(&fault_lock);
    recording = on;
    if (on)
        n_recorded = 0;
    fault_update_active();
    pthread_mutex_unlock(&fault_lock);
}

size_t st_fault_recorded(const char **out, size_t max)
{
    pthread_mutex_lock(&fault_lock);
    size_t n = n_recorded;
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = recorded[i];
    pthread_mutex_unlock(&fault_lock);
    return n;
}
