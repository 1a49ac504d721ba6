/* cfg_int.h — private to config/: the loader context and schema tables shared by its .c files. */
#ifndef CFG_INT_H
#define CFG_INT_H

#include <yaml.h>

#include "cfg.h"

#define CFG_PATH_MAX  256
#define CFG_MAX_DEPTH 32
#define CFG_MAX_FILE  (16u << 20)

struct cfg_ld {
    const char *file;
    yaml_document_t *doc;
    struct cfg_errors *errs;
    size_t nerr;
    int depth;
};

enum cfg_ftype {
    CFG_F_STRING,
    CFG_F_DURATION,
    CFG_F_SIZE,
    CFG_F_U32,
    CFG_F_ENUM,
    CFG_F_SECTION, /* nested mapping whose fields are offsets into the same base */
    CFG_F_CUSTOM,  /* handler parses the value itself */
};

struct cfg_enum_opt {
    const char *name;
    int value;
};

/* A string validator returns NULL when s is acceptable, else a message. */
typedef const char *(*cfg_str_check_fn)(const char *s);

struct cfg_field;
typedef void (*cfg_custom_fn)(struct cfg_ld *ld, yaml_node_t *value, const char *path, void *base);

struct cfg_field {
    const char *key;
    enum cfg_ftype type;
    size_t off;
    bool required;
    bool nullable; /* YAML null leaves the default in place */
    int64_t min, max;
    const struct cfg_enum_opt *opts; /* CFG_F_ENUM, NULL-name terminated */
    cfg_str_check_fn check;          /* CFG_F_STRING */
    const struct cfg_field *sub;     /* CFG_F_SECTION, NULL-key terminated */
    cfg_custom_fn custom;            /* CFG_F_CUSTOM */
    /*
     * CFG_F_CUSTOM whose handler walks tables of its own: the table(s) it walks (sub, and
     * sub_alt for a second variant such as ivfpq beside hnsw), and whether the value is a list
     * of such mappings (list: key paths get "[]"). cfg_keys() enumerates the schema from these;
     * the handler must walk exactly these tables.
     */
    const struct cfg_field *sub_alt;
    bool list;
};

void cfg_ld_error(struct cfg_ld *ld, const yaml_node_t *n, const char *path, const char *fmt, ...)
    ST_PRINTF(4, 5);
void cfg_walk_mapping(struct cfg_ld *ld, yaml_node_t *n, const char *path,
                      const struct cfg_field *fields, void *base);
/* Value node for key in mapping n, or NULL. */
yaml_node_t *cfg_mapping_get(struct cfg_ld *ld, yaml_node_t *n, const char *key);
/*
 * Scalar text of n after ${ENV} expansion (caller frees), or NULL after recording an error.
 * *is_null is set for YAML null (plain null, ~ or empty).
 */
char *cfg_scalar(struct cfg_ld *ld, yaml_node_t *n, const char *path, bool *is_null);
/* cfg_scalar for a value that must be there: null is an error ("must not be null") too. */
char *cfg_scalar_nonnull(struct cfg_ld *ld, yaml_node_t *n, const char *path);
void cfg_path_join(char *dst, const char *path, const char *key);

/* Schema (cfg_schema.c). */
extern const struct cfg_field cfg_top_fields[];
void cfg_set_defaults(struct cfg *c);
void cfg_validate(struct cfg_ld *ld, yaml_node_t *root, struct cfg *c);

#endif
