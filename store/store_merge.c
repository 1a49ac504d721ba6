/*
 * store_merge.c — replacing a window's segments (seal, run merges) and dropping whole windows.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "st_coding.h"
#include "st_log.h"
#include "st_prom.h"
#include "store_int.h"
#include "wal_format.h"

#define LOG_COMP "store"

int store_drop_window(struct store *s, int64_t window_start, const struct store_edit_extra *extra,
                      size_t *removed)
{
    *removed = 0;
    if (s->o.read_only)
        return ST_EINVAL;
    pthread_mutex_lock(&s->mf_mu);
    struct store_mf_edit e = {0};
    int rc = ST_OK;
    size_t ndel = 0;
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    for (size_t i = 0; rc == ST_OK && i < s->nsegs; i++) {
        if (s->segs[i]->info.window_start == window_start) {
            rc = store_mf_edit_del_segment(&e, s->segs[i]->file_number);
            ndel++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == ST_OK)
        rc = store_mf_edit_extra(&e, extra);
    if (rc == ST_OK && e.len > 0)
        rc = store_mf_append(s, &e); /* the intent is durable before any file goes */
    if (rc == ST_OK && ndel > 0) {
        pthread_mutex_lock(&s->mu);
        size_t keep = 0;
        for (size_t i = 0; i < s->nsegs; i++) {
            struct store_segment *g = s->segs[i];
            if (g->info.window_start == window_start) {
                g->doomed = true; /* unlinked when the last reader lets go */
                store_segment_unref(g);
                (*removed)++;
            } else {
                s->segs[keep++] = g;
            }
        }
        s->nsegs = keep;
        pthread_mutex_unlock(&s->mu);
    }
    store_mf_edit_free(&e);
    pthread_mutex_unlock(&s->mf_mu);
    return rc;
}

struct merge_item {
    struct store_segment *g;
    uint64_t idx;
    size_t meta_off;
    const uint8_t *meta_base;
};

static int merge_item_cmp(const void *a, const void *b)
{
    const struct merge_item *x = a, *y = b;
    struct store_seg_record rx, ry;
    store_segment_record(x->g, x->idx, &rx);
    store_segment_record(y->g, y->idx, &ry);
    int c = store_id_cmp(rx.id, rx.id_len, ry.id, ry.id_len);
    if (c != 0)
        return c;
    struct store_version vx = {rx.ts, rx.partition, rx.offset, rx.idx};
    struct store_version vy = {ry.ts, ry.partition, ry.offset, ry.idx};
    return -store_version_cmp(&vx, &vy); /* newest first */
}

int store_merge(struct store *s, const uint64_t *inputs, size_t n, enum store_seg_kind kind,
                uint32_t version, const struct store_edit_extra *extra,
                struct store_segment_info *out)
{
    if (s->o.read_only || n == 0)
        return ST_EINVAL;
    struct store_segment **in = calloc(n, sizeof(*in));
    uint8_t **metas = calloc(n, sizeof(*metas));
    struct merge_item *items = NULL;
    struct store_seg_in *sin = NULL;
    struct store_mf_edit e = {0};
    struct store_segment *ng = NULL;
    struct st_err err = {0};
    int rc = ST_OK;
    if (in == NULL || metas == NULL) {
        free(in);
        free(metas);
        return ST_ENOMEM;
    }
    pthread_mutex_lock(&s->mf_mu);
    pthread_mutex_lock(&s->mu);
    rc = s->failed;
    for (size_t k = 0; rc == ST_OK && k < n; k++) {
        for (size_t i = 0; i < s->nsegs && in[k] == NULL; i++)
            if (s->segs[i]->file_number == inputs[k])
                in[k] = s->segs[i];
        if (in[k] == NULL || in[k]->info.window_start != in[0]->info.window_start)
            rc = ST_EINVAL;
        else
            store_segment_ref(in[k]);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != ST_OK)
        goto out;
    struct store_mf_seg mg = {.meta = {.window_start = in[0]->info.window_start,
                                       .window_end = in[0]->info.window_end,
                                       .kind = kind,
                                       .version = version}};
    uint64_t written = 0;
    if (n == 1) {
        /* Promotion: the file already is the window's only run; only the manifest changes. */
        mg.file_number = in[0]->file_number;
        mg.count = in[0]->info.count;
        mg.bytes = in[0]->info.bytes;
        mg.min_ts = in[0]->info.min_ts;
        mg.max_ts = in[0]->info.max_ts;
        rc = store_mf_edit_del_segment(&e, mg.file_number);
    } else {
        size_t total = 0;
        for (size_t k = 0; k < n; k++)
            total += in[k]->info.count;
        items = malloc((total ? total : 1) * sizeof(*items));
        sin = malloc((total ? total : 1) * sizeof(*sin));
        if (items == NULL || sin == NULL) {
            rc = ST_ENOMEM;
            goto out;
        }
        size_t ni = 0;
        for (size_t k = 0; k < n && rc == ST_OK; k++) {
            size_t mlen;
            rc = store_segment_meta_all(in[k], &metas[k], &mlen);
            size_t moff = 0;
            for (uint64_t i = 0; rc == ST_OK && i < in[k]->info.count; i++) {
                struct store_seg_record r;
                store_segment_record(in[k], i, &r);
                if (moff + r.meta_len > mlen) {
                    rc = ST_ECORRUPT;
                    break;
                }
                items[ni++] = (struct merge_item){in[k], i, moff, metas[k]};
                moff += r.meta_len;
            }
        }
        if (rc != ST_OK)
            goto out;
        qsort(items, ni, sizeof(*items), merge_item_cmp);
        size_t nout = 0;
        for (size_t i = 0; i < ni; i++) {
            struct store_seg_record r;
            store_segment_record(items[i].g, items[i].idx, &r);
            if (nout > 0 &&
                store_id_cmp(sin[nout - 1].id, sin[nout - 1].id_len, r.id, r.id_len) == 0)
                continue; /* an older version of the id just written */
            sin[nout++] = (struct store_seg_in){
                .id = r.id,
                .id_len = r.id_len,
                .ts = r.ts,
                .partition = r.partition,
                .offset = r.offset,
                .idx = r.idx,
                .op = r.op,
                .vec = store_segment_vectors(items[i].g) + items[i].idx * items[i].g->info.dim,
                .meta = items[i].meta_base ? items[i].meta_base + items[i].meta_off : NULL,
                .meta_len = r.meta_len};
        }
        pthread_mutex_lock(&s->mu);
        mg.file_number = s->mf.next_file++;
        pthread_mutex_unlock(&s->mu);
        char *path = store_file_path(s->dir, STORE_FILE_SEG, mg.file_number);
        char *tmp = NULL;
        if (path == NULL || asprintf(&tmp, "%s.tmp", path) < 0) {
            free(path);
            rc = ST_ENOMEM;
            goto out;
        }
        rc = store_segment_write(s->o.fs, tmp, s->o.dim, &mg.meta, sin, nout, &written, &err);
        if (rc == ST_OK)
            rc = store_fs_rename(s->o.fs, tmp, path, "store.merge.rename");
        if (rc != ST_OK)
            store_best_effort(store_fs_unlink(s->o.fs, tmp, "store.merge.unlink_tmp"));
        if (rc == ST_OK)
            rc = store_fs_sync_dir(s->o.fs, s->dir, "store.merge.sync_dir");
        if (rc == ST_OK)
            rc = store_segment_open_file(path, &ng, &err);
        free(tmp);
        free(path);
        if (rc != ST_OK)
            goto out;
        ng->fs = s->o.fs;
        ng->file_number = mg.file_number;
        ng->info.file_number = mg.file_number;
        mg.count = ng->info.count;
        mg.bytes = written;
        mg.min_ts = ng->info.min_ts;
        mg.max_ts = ng->info.max_ts;
        for (size_t k = 0; k < n && rc == ST_OK; k++)
            rc = store_mf_edit_del_segment(&e, in[k]->file_number);
        if (rc == ST_OK)
            rc = store_mf_edit_next_file(&e, mg.file_number + 1);
    }
    if (rc == ST_OK)
        rc = store_mf_edit_add_segment(&e, &mg);
    if (rc == ST_OK)
        rc = store_mf_edit_extra(&e, extra);
    if (rc == ST_OK)
        rc = store_mf_append(s, &e);
    if (rc != ST_OK)
        goto out;
    pthread_mutex_lock(&s->mu);
    if (n == 1) {
        in[0]->info.kind = kind;
        in[0]->info.version = version;
        if (out != NULL)
            *out = in[0]->info;
    } else {
        size_t keep = 0;
        for (size_t i = 0; i < s->nsegs; i++) {
            bool gone = false;
            for (size_t k = 0; k < n && !gone; k++)
                gone = s->segs[i] == in[k];
            if (gone) {
                s->segs[i]->doomed = true;
                store_segment_unref(s->segs[i]); /* the list's reference */
            } else {
                s->segs[keep++] = s->segs[i];
            }
        }
        ng->info.kind = kind;
        ng->info.version = version;
        s->segs[keep++] = ng; /* the list had room for the n >= 2 inputs */
        s->nsegs = keep;
        s->st.segment_bytes_written += written;
        if (out != NULL)
            *out = ng->info;
        ng = NULL;
    }
    pthread_mutex_unlock(&s->mu);
out:
    if (ng != NULL) {
        ng->doomed = true;
        store_segment_unref(ng);
    }
    for (size_t k = 0; k < n; k++) {
        if (in[k] != NULL)
            store_segment_unref(in[k]);
        free(metas[k]);
    }
    pthread_mutex_unlock(&s->mf_mu);
    if (rc != ST_OK)
        st_log_warn(LOG_COMP, "merge failed dir=%s inputs=%zu error=\"%s\" detail=\"%s\"", s->dir,
                    n, st_strerror(rc), err.msg);
    free(in);
    free(metas);
    free(items);
    free(sin);
    store_mf_edit_free(&e);
    return rc;
}
