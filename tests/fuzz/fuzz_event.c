/*
 * libFuzzer target: the window events an indexer consumes from NATS (indexer/idx_event.h,
 * docs/events.md). Whatever the bytes, a parsed sealed/expired event has bounded, valid
 * fields: a collection name that fits, a valid node id, a window within +-2^61 ms that ends
 * after it starts, a version and record count that fit 32 bits, a positive byte count and a
 * NUL-terminated segment location.
 */
#include <stdlib.h>
#include <string.h>

#include "idx_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct idx_event ev;
    const char *why = idx_event_parse(data, size, &ev);
    if (why != NULL && ev.kind == IDX_EV_OTHER)
        abort(); /* only an indexer's events are called malformed */
    if (why != NULL || ev.kind == IDX_EV_OTHER)
        return 0;
    if (ev.coll[0] == '\0' || memchr(ev.coll, '\0', sizeof(ev.coll)) == NULL ||
        !idx_node_id_ok(ev.node) || !idx_window_ok(ev.start, 0))
        abort();
    if (ev.kind == IDX_EV_SEALED && (ev.end <= ev.start || !idx_window_ok(ev.start, ev.end)))
        abort(); /* window arithmetic (spans, TTLs) cannot overflow */
    if (ev.kind == IDX_EV_SEALED &&
        (ev.url[0] == '\0' || memchr(ev.url, '\0', sizeof(ev.url)) == NULL || ev.bytes == 0 ||
         ev.records > UINT32_MAX))
        abort();
    return 0;
}
