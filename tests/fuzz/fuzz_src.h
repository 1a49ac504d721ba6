/*
 * fuzz_src.h — the shared body of the `strata produce` file-reader targets (fuzz_npy,
 * fuzz_idx, fuzz_fvecs, fuzz_jsonl): open arbitrary bytes as one input kind, then read every
 * row (and seek back to the middle) as `strata produce` and `strata search --query-file` do.
 * A reader may refuse the input; it must never crash, leak or read outside the buffer.
 */
#ifndef FUZZ_SRC_H
#define FUZZ_SRC_H

#include <stdint.h>
#include <stdlib.h>

#include "produce.h"

static inline void fuzz_src_read(const char *name, const uint8_t *data, size_t size,
                                 enum produce_in kind, int u64)
{
    struct produce_src *s = NULL;
    struct st_err err = {0};
    if (produce_src_open_mem(name, data, size, kind, u64 != 0, &s, &err) != ST_OK)
        return;
    struct produce_rec r;
    volatile float sink = 0;
    uint64_t rows = 0;
    int n;
    while ((n = produce_src_next(s, &r)) == 1) {
        rows++;
        for (uint32_t i = 0; r.vec != NULL && i < r.dim; i++)
            sink += r.vec[i];
        if (r.id != NULL && !r.u64)
            sink += (float)r.id[0];
    }
    if (n == 0 && rows != produce_src_rows(s))
        abort(); /* the count promised at open is what was read */
    if (produce_src_rows(s) > 0 && produce_src_seek(s, produce_src_rows(s) / 2) == ST_OK)
        (void)produce_src_next(s, &r);
    (void)sink;
    produce_src_close(s);
}

#endif
