/* Window events from the bus (idx_event.h). */
#include "idx_event.h"

#include <jansson.h>
#include <string.h>

static const char *copy(char *dst, size_t cap, const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) >= cap)
        return "missing or too long";
    memcpy(dst, s, strlen(s) + 1);
    return NULL;
}

const char *idx_event_parse(const void *data, size_t len, struct idx_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    json_t *j = json_loadb(data, len, 0, NULL);
    const char *kind = json_string_value(json_object_get(j, "kind"));
    const char *why = NULL;
    if (kind != NULL && strcmp(kind, "sealed") == 0)
        ev->kind = IDX_EV_SEALED;
    else if (kind != NULL && strcmp(kind, "expired") == 0)
        ev->kind = IDX_EV_EXPIRED;
    else
        goto out; /* indexed events, announcements: not an indexer's */
    json_t *jstart = json_object_get(j, "start"), *jver = json_object_get(j, "version");
    if (copy(ev->coll, sizeof(ev->coll), json_string_value(json_object_get(j, "collection"))) !=
        NULL) {
        ev->coll[0] = '\0';
        why = "no collection";
        goto out;
    }
    const char *node = json_string_value(json_object_get(j, "node"));
    if (!idx_node_id_ok(node) || !json_is_integer(jstart) || !json_is_integer(jver) ||
        json_integer_value(jver) < 0 || json_integer_value(jver) > UINT32_MAX) {
        why = "malformed";
        goto out;
    }
    strcpy(ev->node, node); /* idx_node_id_ok: at most IDX_NODE_MAX bytes */
    ev->start = json_integer_value(jstart);
    ev->version = (uint32_t)json_integer_value(jver);
    if (!idx_window_ok(ev->start, 0)) {
        why = "malformed"; /* a window no clock reaches: its arithmetic would overflow */
        goto out;
    }
    if (ev->kind == IDX_EV_EXPIRED)
        goto out;
    json_t *jend = json_object_get(j, "end");
    json_int_t rec = json_integer_value(json_object_get(j, "records"));
    json_int_t bytes = json_integer_value(json_object_get(j, "bytes"));
    if (copy(ev->url, sizeof(ev->url), json_string_value(json_object_get(j, "segment"))) != NULL ||
        !json_is_integer(jend) || rec < 0 || rec > (json_int_t)UINT32_MAX || bytes <= 0) {
        why = "no usable segment location";
        goto out;
    }
    ev->end = json_integer_value(jend);
    if (ev->end <= ev->start || !idx_window_ok(ev->start, ev->end)) {
        why = "malformed";
        goto out;
    }
    ev->records = (uint64_t)rec;
    ev->bytes = (uint64_t)bytes;
    ev->checksum = (uint32_t)json_integer_value(json_object_get(j, "checksum"));
out:
    json_decref(j);
    return why;
}
