/* ingest_layout.c — the data_dir layout of strata-ingest (ingest_layout.h). */
#include "ingest_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "st_log.h"
#include "store_fs.h"

/* Whether <dir>/<a>[/<b>] exists. */
static bool exists(const char *dir, const char *a, const char *b)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s%s%s", dir, a, b != NULL ? "/" : "", b != NULL ? b : "") < 0)
        return false;
    struct stat sb;
    bool yes = stat(p, &sb) == 0;
    free(p);
    return yes;
}

int ingest_layout_store_dir(const char *data_dir, const char *coll, char **out, bool *legacy,
                            struct st_err *err)
{
    bool old_place;
    if (legacy == NULL)
        legacy = &old_place;
    *out = NULL;
    *legacy = false;
    char *dir = NULL;
    if (exists(data_dir, "ingest", "CURRENT")) {
        /* <data_dir>/ingest is the pre-rule store of a collection named "ingest". */
        *legacy = true;
        if (asprintf(&dir, "%s/%s", data_dir, coll) < 0)
            return st_err_set(err, ST_ENOMEM, "out of memory");
        st_log_notice("ingest",
                      "collection %s: using %s (the old data_dir layout: %s/ingest is the store "
                      "of a collection named 'ingest', so every collection stays at "
                      "<data_dir>/<name>)",
                      coll, dir, data_dir);
        *out = dir;
        return ST_OK;
    }
    bool old = exists(data_dir, coll, "CURRENT");
    bool cur = exists(data_dir, "ingest", coll);
    if (old && !cur) {
        *legacy = true;
        if (asprintf(&dir, "%s/%s", data_dir, coll) < 0)
            return st_err_set(err, ST_ENOMEM, "out of memory");
        st_log_notice("ingest",
                      "collection %s: using %s, a store from before the %s/ingest/ layout "
                      "(stop strata-ingest and move it to %s/ingest/%s to follow it)",
                      coll, dir, data_dir, data_dir, coll);
        *out = dir;
        return ST_OK;
    }
    if (old)
        st_log_warn("ingest",
                    "collection %s: both %s/%s (old layout) and %s/ingest/%s hold a store; "
                    "using the latter, the former is not read",
                    coll, data_dir, coll, data_dir, coll);
    char *base = NULL;
    if (asprintf(&base, "%s/ingest", data_dir) < 0 || asprintf(&dir, "%s/%s", base, coll) < 0) {
        free(base);
        return st_err_set(err, ST_ENOMEM, "out of memory");
    }
    int rc = store_fs_mkdir(NULL, base, "ingest.mkdir");
    if (rc != ST_OK) {
        rc = st_err_set(err, rc, "%s: %s", base, st_strerror(rc));
        free(base);
        free(dir);
        return rc;
    }
    free(base);
    *out = dir;
    return ST_OK;
}
