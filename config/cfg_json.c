/* cfg_json.c — a collection's configuration as the JSON both daemons' HTTP APIs return. */
#include "cfg_json.h"

json_t *cfg_index_json(const struct cfg_index *ix)
{
    if (ix->type == CFG_INDEX_HNSW)
        return json_pack("{s:s,s:I,s:I}", "type", "hnsw", "m", (json_int_t)ix->m, "ef_construction",
                         (json_int_t)ix->ef_construction);
    if (ix->type == CFG_INDEX_IVFPQ)
        return json_pack("{s:s,s:I,s:I,s:I,s:b}", "type", "ivfpq", "nlist", (json_int_t)ix->nlist,
                         "m", (json_int_t)ix->pq_m, "nbits", (json_int_t)ix->nbits, "rerank_codes",
                         ix->no_rerank_codes == 0);
    return json_pack("{s:s}", "type", "none");
}

json_t *cfg_collection_json(const struct cfg_collection *cc, json_t *stats)
{
    json_t *o = json_pack(
        "{s:s,s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "name", cc->name, "dim",
        (json_int_t)cc->dim, "metric", cfg_metric_name(cc->metric), "id_type",
        cc->id_type == CFG_ID_UINT64 ? "uint64" : "string", "topic", cc->topic, "window_ms",
        (json_int_t)cc->window_ms, "grace_ms", (json_int_t)cc->grace_ms, "max_lateness_ms",
        (json_int_t)cc->max_lateness_ms, "ttl_ms", (json_int_t)cc->ttl_ms, "max_bytes",
        (json_int_t)cc->max_bytes, "index", cfg_index_json(&cc->index), "stats", stats);
    if (o != NULL && cc->cold_after_ms > 0) {
        json_object_set_new(o, "cold_after_ms", json_integer(cc->cold_after_ms));
        json_object_set_new(o, "cold_index", cfg_index_json(&cc->cold_index));
    }
    if (o != NULL && cc->compact_after_ms > 0) {
        json_object_set_new(o, "compact_after_ms", json_integer(cc->compact_after_ms));
        json_object_set_new(o, "compact_span_ms", json_integer(cc->compact_span_ms));
    }
    return o;
}
