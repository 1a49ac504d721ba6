/*
 * libFuzzer target: the segment loader (store/segment_format.h). The input is resealed (every
 * checksum recomputed for the layout it claims) so mutations reach the layout checks instead
 * of dying on a checksum; whatever opens is then read through every accessor.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_reseal.h"
#include "segment_format.h"
#include "store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (b == NULL)
        return 0;
    memcpy(b, data, size);
    fuzz_reseal_segment(b, size);
    const char *path = fuzz_memfile(b, size);
    free(b);
    struct store_segment *g;
    struct st_err err = {0};
    if (path == NULL || store_segment_open_file(path, &g, &err) != ST_OK)
        return 0;
    struct store_segment_info info;
    store_segment_info(g, &info);
    volatile uint64_t sink = 0;
    const uint8_t *vlo = g->map + STORE_SEG_HEADER, *vhi = vlo + g->nrows * info.dim * 4;
    struct store_scan_src src = {
        .n = info.count, .dim = info.dim, .vecs = store_segment_rows_base(g), .rows_ = g->rows};
    sink += (uint64_t)store_segment_verify(g, &err);
    uint8_t *buf;
    size_t len;
    if (store_segment_meta_all(g, &buf, &len) == ST_OK)
        free(buf);
    for (uint64_t i = 0; i < info.count; i++) {
        struct store_seg_record r;
        store_segment_record(g, i, &r);
        uint64_t idx;
        if (store_segment_find(g, r.id, r.id_len, &idx) == ST_OK)
            sink += idx;
        uint8_t *meta;
        uint32_t mlen;
        if (store_segment_meta(g, i, &meta, &mlen) == ST_OK)
            free(meta);
        /* Record i's vector, through both accessors, lies in the vectors section: ASan cannot
         * see a read past the section (the record table follows it in the same mmap), so
         * check the pointers themselves. */
        const float *v = store_segment_vector(g, i), *sv = store_scan_vec(&src, i);
        if (v != sv || (const uint8_t *)v < vlo || (const uint8_t *)(v + info.dim) > vhi)
            __builtin_trap();
        sink += (v[0] != 0) + (v[info.dim - 1] != 0);
    }
    for (uint64_t blk = 0; blk <= info.count / STORE_SEG_META_BLOCK; blk++)
        if (store_segment_meta_block(g, blk, &buf, &len, &err) == ST_OK)
            free(buf);
    sink += store_segment_meta_block_max(g);
    uint64_t idx;
    sink += (uint64_t)store_segment_find(g, (const uint8_t *)"zz", 2, &idx);
    (void)sink;
    store_segment_unref(g);
    return 0;
}
