/*
 * libFuzzer target: ingest-node announcements as an indexer hears them on NATS
 * (indexer/idx_nodes.h, docs/events.md "Discovery"). The input is split at NUL bytes into
 * several announcements fed in turn (so a node can be announced, updated and said goodbye
 * to); the live list for a collection is then read back and must hold valid, bounded,
 * NUL-terminated entries.
 */
#include <stdlib.h>
#include <string.h>

#include "idx_nodes.h"
#include "st_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_log_set_level(ST_LOG_ERROR); /* every new node is logged at info */
    struct idx_nodes_opts o = {0};
    struct idx_nodes *ns;
    struct st_err err = {0};
    if (idx_nodes_start(&o, &ns, &err) != ST_OK)
        abort();
    for (size_t at = 0; at <= size;) {
        const uint8_t *end = memchr(data + at, '\0', size - at);
        size_t len = end != NULL ? (size_t)(end - (data + at)) : size - at;
        idx_nodes_announce(ns, (const char *)data + at, len);
        at += len + 1;
    }
    static const char *const colls[] = {"docs", "a", ""};
    for (size_t c = 0; c < 3; c++) {
        struct idx_node *live = NULL;
        size_t n = 0;
        if (idx_nodes_live(ns, colls[c], &live, &n) != ST_OK)
            continue;
        for (size_t i = 0; i < n; i++)
            if (memchr(live[i].node, '\0', sizeof(live[i].node)) == NULL ||
                memchr(live[i].url, '\0', sizeof(live[i].url)) == NULL)
                abort();
        free(live);
    }
    idx_nodes_stop(ns);
    return 0;
}
