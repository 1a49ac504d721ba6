/*
 * libFuzzer target: manifest edit groups (store/manifest_format.h) as recovery applies them —
 * arbitrary bytes framed as a log, each record applied to one state in turn, then the state
 * snapshotted (what compaction writes) and the snapshot applied to a fresh state, which must
 * describe the same thing.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "store_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const struct store_mf_state *a, const struct store_mf_state *b)
{
    if (a->nsegs != b->nsegs || a->nwindows != b->nwindows || a->nkv != b->nkv ||
        a->marks.n != b->marks.n || a->log_number != b->log_number ||
        a->next_file != b->next_file || a->dim != b->dim)
        abort();
    for (size_t i = 0; i < a->nsegs; i++)
        if (a->segs[i].file_number != b->segs[i].file_number ||
            a->segs[i].count != b->segs[i].count)
            abort();
    for (size_t i = 0; i < a->nkv; i++)
        if (strcmp(a->kv[i].key, b->kv[i].key) != 0 || a->kv[i].vlen != b->kv[i].vlen ||
            (a->kv[i].vlen > 0 && memcmp(a->kv[i].val, b->kv[i].val, a->kv[i].vlen) != 0))
            abort();
}

static void apply_all(struct store_mf_state *st, const uint8_t *data, size_t size)
{
    struct store_log_reader r;
    store_log_reader_init(&r, data, size);
    const uint8_t *p;
    size_t len, off;
    while (store_log_next(&r, &p, &len, &off) == 1)
        if (store_mf_apply(st, p, len) != ST_OK)
            break; /* recovery stops at a malformed group */
    store_log_reader_destroy(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_mf_state st;
    memset(&st, 0, sizeof(st));
    apply_all(&st, data, size);
    /* The raw bytes as one group too: the framing need not be valid to reach the decoder. */
    struct store_mf_state raw;
    memset(&raw, 0, sizeof(raw));
    volatile int refused = store_mf_apply(&raw, data, size) != ST_OK; /* either is fine */
    (void)refused;
    store_mf_state_free(&raw);
    struct store_mf_edit e = {0};
    if (store_mf_snapshot(&st, &e) == ST_OK) {
        struct store_mf_state again;
        memset(&again, 0, sizeof(again));
        if (store_mf_apply(&again, e.buf, e.len) != ST_OK)
            abort(); /* what compaction writes must load */
        same(&st, &again);
        store_mf_state_free(&again);
    }
    store_mf_edit_free(&e);
    store_mf_state_free(&st);
    return 0;
}
