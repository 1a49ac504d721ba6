/*
 * idx_catalog.h — an indexer's durable record of what it serves for one collection.
 *
 * One entry per (ingest node, window): the version whose segment copy and index file are on
 * disk, complete (fsynced and renamed before the entry is written). Plus the horizon of
 * expired windows per node, so a sealed event redelivered after its window's `expired` event
 * stays a no-op. The catalog is one small JSON file, CATALOG, replaced atomically (CATALOG.tmp,
 * fsync, rename, directory fsync) on every change: entries number (nodes × windows), a few
 * thousand at most, and change once per seal.
 *
 * A JetStream event is acked only after the catalog that reflects it is durable, so after a
 * crash the catalog names exactly the parts whose events were (or may be) acked, and files
 * it does not name are leftovers (idx_catalog_sweep removes them).
 *
 * Not thread-safe: the owner (idx_service) serialises access.
 */
#ifndef IDX_CATALOG_H
#define IDX_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_error.h"

#define IDX_NODE_MAX 64

/* Is s a node id as the configuration allows (1-64 of A-Z a-z 0-9 . _ -, not "." or "..")?
 * Node ids from events name files: anything else is refused. */
bool idx_node_id_ok(const char *s);

/* Window bounds (ms) as events and catalog entries may carry them: |t| <= IDX_TIME_MAX (2^61
 * ms, ~73 million years; sums with a span or a TTL cannot overflow), and start < end — end 0
 * also passes (a catalog written before entries carried their end). A unit's span, widened to
 * its bucket (which starts up to a compaction span before its members), is bounded by
 * IDX_SPAN_MAX (2^62) instead (idx_span_ok). */
#define IDX_TIME_MAX (INT64_C(1) << 61)
#define IDX_SPAN_MAX (INT64_C(1) << 62)
bool idx_window_ok(int64_t start, int64_t end);
bool idx_span_ok(int64_t start, int64_t end);

struct idx_cat_entry {
    char node[IDX_NODE_MAX + 1];
    int64_t start, end;
    uint32_t version;
    uint64_t records, bytes;
    uint32_t checksum;  /* the segment footer's checksum32 (the sealed event's) */
    char index[8];      /* "hnsw" | "ivfpq" */
    bool cold;          /* built with the collection's cold_index */
    int64_t sealed_ms;  /* when the event said the window sealed (0: unknown) */
    int64_t indexed_ms; /* wall clock when the index was recorded */
    char url[512];      /* where the segment came from (a rebuild fetches it again) */
    uint64_t unit;      /* 0: served by its own index; else by that unit's (its index is gone) */
};

/*
 * A unit (index compaction): one index over several window parts' upserts, their segment
 * copies kept as they are. Members are copies of the entries they were when the unit was built
 * (record order). A member is live while the catalog's entry of its (node, window) is that
 * version and names this unit; an expired or replaced member is dead: hidden at once, its
 * segment copy kept (the unit's index still has its vectors) until the unit is built again or
 * dropped.
 */
struct idx_cat_unit {
    uint64_t id;
    struct idx_cat_entry e; /* start/end: the span; version: generation; index, cold, records */
    struct idx_cat_entry *mem;
    size_t nmem;
};

struct idx_cat_gone {
    char node[IDX_NODE_MAX + 1];
    int64_t start;
    uint32_t version; /* versions <= this of (node, start) are expired */
};

/* Unit ids are counted up from 1 and saved as JSON integers: ids stay below this bound (a
 * catalog naming one at or past it, or a next_unit past it, does not load). */
#define IDX_UNIT_ID_MAX (UINT64_C(1) << 62)

struct idx_catalog {
    char *dir;
    struct idx_cat_entry *e;
    size_t n, cap;
    struct idx_cat_gone *gone;
    size_t ngone, capgone;
    struct idx_cat_unit *units;
    size_t nunits, capunits;
    uint64_t next_unit; /* ids are never reused */
};

/* Opens dir (created if missing, parent fsynced) and loads its CATALOG (empty when none).
 * ST_ECORRUPT with the file named when CATALOG is not what this module writes. */
int idx_catalog_open(const char *dir, struct idx_catalog **out, struct st_err *err) ST_WUR;
void idx_catalog_free(struct idx_catalog *c);

/* The entry of (node, start), or NULL. */
struct idx_cat_entry *idx_catalog_find(struct idx_catalog *c, const char *node, int64_t start);
/* Inserts or replaces the entry of (e->node, e->start) in memory. */
int idx_catalog_put(struct idx_catalog *c, const struct idx_cat_entry *e) ST_WUR;
/* Removes the entry of (node, start) in memory (no-op when absent). */
void idx_catalog_del(struct idx_catalog *c, const char *node, int64_t start);
/* Records that (node, start) expired at version (in memory); is a version of it gone? */
int idx_catalog_mark_gone(struct idx_catalog *c, const char *node, int64_t start,
                          uint32_t version) ST_WUR;
bool idx_catalog_is_gone(const struct idx_catalog *c, const char *node, int64_t start,
                         uint32_t version);
/* The horizon of (node, start): true and *version when there is one. */
bool idx_catalog_gone_at(const struct idx_catalog *c, const char *node, int64_t start,
                         uint32_t *version);
/* Puts the horizon of (node, start) back as it was (had: *version then), after a failed save. */
void idx_catalog_restore_gone(struct idx_catalog *c, const char *node, int64_t start, bool had,
                              uint32_t version);
/* The unit of id, or NULL. */
struct idx_cat_unit *idx_catalog_unit(struct idx_catalog *c, uint64_t id);
/* Inserts or replaces unit u->id (members copied) in memory. */
/* The next unit id (counted on), or ST_ERANGE once IDX_UNIT_ID_MAX is reached. */
int idx_catalog_take_unit_id(struct idx_catalog *c, uint64_t *id) ST_WUR;
int idx_catalog_unit_put(struct idx_catalog *c, const struct idx_cat_unit *u) ST_WUR;
/* Removes unit id in memory (no-op when absent). */
void idx_catalog_unit_del(struct idx_catalog *c, uint64_t id);
/* A deep copy of unit id (free with idx_catalog_unit_free), or ST_ENOTFOUND / ST_ENOMEM. */
int idx_catalog_unit_copy(const struct idx_catalog *c, uint64_t id,
                          struct idx_cat_unit *out) ST_WUR;
void idx_catalog_unit_free(struct idx_cat_unit *u);
/* Is member m of unit id live (the catalog's entry of its window is that version, served by
 * the unit)? */
bool idx_catalog_member_live(const struct idx_catalog *c, uint64_t id,
                             const struct idx_cat_entry *m);
/* The index file of a unit: "unit-<id>@g<generation>.[cold.]<index>". Caller frees. */
char *idx_catalog_unit_path(const struct idx_catalog *c, uint64_t id, uint32_t generation,
                            const char *index, bool cold);

/* Writes the whole catalog durably (the commit point of every change). */
int idx_catalog_save(struct idx_catalog *c, struct st_err *err) ST_WUR;

/* File names of an entry's parts under the catalog dir: "<node>@<start>@v<version>.seg" and
 * ".hnsw" / ".ivfpq" (".cold.hnsw" / ".cold.ivfpq" for an age-tiered rebuild). Caller
 * frees. */
char *idx_catalog_seg_path(const struct idx_catalog *c, const char *node, int64_t start,
                           uint32_t version);
char *idx_catalog_index_path(const struct idx_catalog *c, const char *node, int64_t start,
                             uint32_t version, const char *index, bool cold);
/* Removes every file in dir the catalog does not name (leftovers of builds cut short, *.tmp,
 * parts of replaced or expired versions). Returns the number removed. */
size_t idx_catalog_sweep(const struct idx_catalog *c);

#endif
