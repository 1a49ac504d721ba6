/*
 * libFuzzer target: the WAL as recovery reads it — the block framing (store/log_format.h:
 * fragments, checksums, torn tail vs corruption) over arbitrary file bytes, and every record
 * it yields decoded as a batch (store/wal_format.h) for two dims. A reader may refuse; it must
 * never read outside the buffer, and a record it yields must lie inside the file.
 */
#include <stdlib.h>

#include "store_int.h"
#include "store_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_log_reader r;
    store_log_reader_init(&r, data, size);
    const uint8_t *p;
    size_t len, off;
    volatile uint64_t sink = 0;
    while (store_log_next(&r, &p, &len, &off) == 1) {
        if (off >= size)
            abort(); /* a record starts inside the file */
        static const uint32_t dims[] = {1, 4};
        for (size_t d = 0; d < 2; d++) {
            struct store_batch b;
            struct store_record *recs;
            float *vecs;
            struct store_vref *refs;
            if (store_wal_decode(dims[d], p, len, &b, &recs, &vecs, &refs) != ST_OK)
                continue;
            for (uint32_t i = 0; i < b.n; i++) {
                sink += recs[i].id_len + recs[i].meta_len;
                if (recs[i].id_len > 0)
                    sink += recs[i].id[recs[i].id_len - 1];
                if (recs[i].meta_len > 0)
                    sink += recs[i].meta[recs[i].meta_len - 1];
                if (recs[i].vec != NULL)
                    sink += recs[i].vec[dims[d] - 1] != 0;
                if (refs[i].vfile != 0 && recs[i].op != STORE_OP_UPSERT)
                    abort(); /* only an upsert's vector is a row */
                sink += refs[i].row;
            }
            free(refs);
            free(recs);
            free(vecs);
        }
    }
    if (r.end != STORE_LOG_END_CLEAN && r.end_offset > size)
        abort();
    store_log_reader_destroy(&r);
    (void)sink;
    return 0;
}
