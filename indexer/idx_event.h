/*
 * idx_event.h — the window events an indexer consumes (docs/events.md): `sealed` and
 * `expired` on strata.<collection>.*, parsed from untrusted JSON into fixed fields. Anything
 * else on the stream (indexed events, announcements) is IDX_EV_OTHER.
 */
#ifndef IDX_EVENT_H
#define IDX_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "idx_catalog.h"

enum idx_event_kind { IDX_EV_OTHER, IDX_EV_SEALED, IDX_EV_EXPIRED };

struct idx_event {
    enum idx_event_kind kind;
    char coll[CFG_NAME_MAX + 1];
    char node[IDX_NODE_MAX + 1];
    int64_t start, end; /* end: sealed only */
    uint32_t version;
    /* sealed only */
    char url[512];
    uint64_t records; /* <= UINT32_MAX */
    uint64_t bytes;   /* > 0 */
    uint32_t checksum;
};

/*
 * Parses one event. Returns NULL with *ev filled (kind IDX_EV_OTHER for events that are not
 * an indexer's), or a static string saying what is malformed: then only ev->kind and ev->coll
 * (possibly empty) are meaningful. A sealed or expired event names a collection (1..
 * CFG_NAME_MAX bytes), a valid node id, an integer start within +-IDX_TIME_MAX and a version
 * 0..UINT32_MAX; a sealed one also an integer end > start (<= IDX_TIME_MAX), a segment
 * location shorter than url, records 0..UINT32_MAX and bytes > 0.
 */
const char *idx_event_parse(const void *data, size_t len, struct idx_event *ev);

#endif
