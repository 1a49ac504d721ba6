/* fuzz_rec.h — shared by the record-format fuzz targets: the schema and a walk over a batch. */
#ifndef FUZZ_REC_H
#define FUZZ_REC_H

#include <stdint.h>
#include <string.h>

#include "fuzz_reseal.h"
#include "rec_format.h"

/* The collections of tests/check_formats.c (and the golden frames): "docs" (dim 3, string
 * ids, the topic's default) and "events" (dim 4, u64 ids). */
static const struct rec_collection fuzz_colls[] = {{"docs", 3, false}, {"events", 4, true}};
static const struct rec_schema fuzz_schema = {fuzz_colls, 2, &fuzz_colls[0], 1u << 20};

/* Reads every byte a decoded batch points at, so ASan sees any pointer past the input. */
static inline uint32_t fuzz_rec_touch(const struct rec_batch *b)
{
    uint32_t h = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        const struct rec_record *r = &b->recs[i];
        for (uint32_t k = 0; k < r->id_len; k++)
            h = h * 31 + r->id[k];
        for (uint32_t k = 0; k < r->meta_len; k++)
            h = h * 31 + r->meta[k];
        if (r->vec != NULL)
            for (uint32_t k = 0; k < b->coll->dim; k++) {
                uint32_t u;
                memcpy(&u, &r->vec[k], 4);
                h = h * 31 + u;
            }
        h += (uint32_t)r->ts + r->op;
    }
    return h;
}

/* Decodes data as kind from an aligned copy and from a copy one byte off alignment (the
 * frame decoder reads vectors in place only when they are aligned). Frames are decoded as
 * given and resealed (length field and checksums recomputed, fuzz_reseal_frame), so that
 * mutations also reach the layout checks behind the checksums. */
static inline void fuzz_rec_decode(enum rec_kind kind, const uint8_t *data, size_t size)
{
    static struct rec_decoder *d;
    if (d == NULL && (d = rec_decoder_new()) == NULL)
        return;
    uint8_t *buf = malloc(size + 8);
    if (buf == NULL)
        return;
    char detail[256];
    volatile uint32_t sink = 0;
    for (int pass = 0; pass < (kind == REC_KIND_FRAME ? 3 : 2); pass++) {
        uint8_t *p = buf + (pass == 1 ? 1 : 0);
        memcpy(p, data, size);
        if (pass > 0 && kind == REC_KIND_FRAME)
            fuzz_reseal_frame(p, size);
        struct rec_batch b;
        if (rec_decode(d, &fuzz_schema, kind, p, size, &b, detail, sizeof(detail)) == REC_OK)
            sink += fuzz_rec_touch(&b);
        else
            sink += (uint32_t)strlen(detail);
    }
    (void)sink;
    free(buf);
}

#endif
