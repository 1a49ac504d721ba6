/* cfg_json.h — configuration as JSON for the daemons' HTTP APIs (GET /v1/collections). */
#ifndef CFG_JSON_H
#define CFG_JSON_H

#include <jansson.h>

#include "cfg.h"

json_t *cfg_index_json(const struct cfg_index *ix);
/* {"name", "dim", "metric", "id_type", "topic", "window_ms", ..., "index", "stats": stats}
 * (steals the reference to stats). */
json_t *cfg_collection_json(const struct cfg_collection *cc, json_t *stats);

#endif
