/*
 * ingest_layout.h — where strata-ingest keeps a collection's store under data_dir (SPEC.md §6).
 *
 *   <data_dir>/ingest/<collection>/    the layout: ingest and indexer each under their own
 *                                      subdirectory of the data_dir they share
 *   <data_dir>/<collection>/           a store written before that rule: still opened where
 *                                      it is (never moved behind the operator's back)
 *
 * The old place is used when <data_dir>/<collection>/CURRENT exists and
 * <data_dir>/ingest/<collection> does not, or when <data_dir>/ingest/ is itself a pre-rule
 * store (of a collection named "ingest": new stores inside it would be mistaken for its
 * files, so then every collection stays in the old layout). Each such choice is logged.
 */
#ifndef INGEST_LAYOUT_H
#define INGEST_LAYOUT_H

#include <stdbool.h>

#include "st_error.h"

/*
 * The directory of collection coll's store (*out, malloc'd; caller frees) and whether it is
 * the pre-rule place (*legacy, when legacy is not NULL). For the layout it creates
 * <data_dir>/ingest durably (store_fs_mkdir: the parent is fsynced too); data_dir itself must
 * exist. The store's own directory is created by store_open.
 */
int ingest_layout_store_dir(const char *data_dir, const char *coll, char **out, bool *legacy,
                            struct st_err *err) ST_WUR;

#endif
