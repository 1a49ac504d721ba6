/*
 * produce_src.c — the file readers of produce.h: .fvecs, .npy, idx3-ubyte[.gz], JSON Lines.
 *
 * Every reader works on one byte buffer (a read-only mapping of the file, a gzip stream
 * inflated into memory, or a caller's buffer) and validates at open everything that can be
 * checked without decoding each value: headers against the buffer's size, dims, row framing,
 * and for JSON Lines every line in full. Values are copied out row by row (the buffer need
 * not be aligned) and checked to be finite as they are read.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "produce.h"
#include "st_api.h"
#include "st_coding.h"

struct jl_line {
    size_t off, len;
};

struct produce_src {
    char *name;
    enum produce_in kind;
    bool u64;
    const uint8_t *data; /* the whole input */
    size_t len;
    void *map; /* munmap(map, map_len) at close; NULL when not mapped */
    size_t map_len;
    uint8_t *owned; /* inflated gzip data, freed at close */

    uint64_t rows, next;
    uint64_t count; /* records to yield: rows, or produce_src_repeat's count (next counts them) */
    uint32_t dim;
    size_t first;  /* offset of row 0 (npy, idx) */
    size_t stride; /* bytes per row (fvecs, npy, idx) */

    struct jl_line *lines; /* JSON Lines: the non-blank lines */
    json_t *cur;           /* the parsed current line (its strings back the record) */
    char *meta;            /* the current record's meta, compact */

    float *row;        /* dim floats: the current row */
    char idbuf[24];    /* a row-number id */
    struct st_err err; /* detail of the last failed next */
};

/* ---- little helpers ---- */

static uint32_t rd_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t rd_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static enum produce_in kind_by_name(const char *name)
{
    if (ends_with(name, ".fvecs"))
        return PRODUCE_IN_FVECS;
    if (ends_with(name, ".npy"))
        return PRODUCE_IN_NPY;
    if (ends_with(name, "idx3-ubyte") || ends_with(name, "idx3-ubyte.gz") ||
        ends_with(name, ".idx3") || ends_with(name, ".idx3.gz"))
        return PRODUCE_IN_IDX;
    if (ends_with(name, ".jsonl") || ends_with(name, ".ndjson") || ends_with(name, ".json"))
        return PRODUCE_IN_JSONL;
    return PRODUCE_IN_AUTO;
}

/*
 * One pass over a gzip stream (every member): into out (cap bytes) when out is not NULL,
 * else only counting (through a small scratch buffer). *total gets the inflated size.
 */
static int gz_pass(const struct produce_src *s, uint8_t *out, size_t cap, size_t *total,
                   struct st_err *err)
{
    z_stream z = {0};
    uint8_t scratch[65536];
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return st_err_set(err, ST_ENOMEM, "%s: cannot start gzip decoding", s->name);
    int rc = ST_OK;
    size_t n = 0, fed = 0;
    for (;;) {
        if (z.avail_in == 0 && fed < s->len) {
            size_t left = s->len - fed;
            z.next_in = (Bytef *)(uintptr_t)(s->data + fed);
            z.avail_in = (uInt)(left > (1u << 30) ? (1u << 30) : left);
            fed += z.avail_in;
        }
        size_t room;
        if (out != NULL) {
            room = cap - n;
            z.next_out = out + n;
        } else {
            room = sizeof(scratch);
            z.next_out = scratch;
        }
        if (room == 0) { /* more data than the counting pass saw: cannot happen */
            rc = st_err_set(err, ST_ECORRUPT, "%s: gzip data changed while reading", s->name);
            break;
        }
        z.avail_out = (uInt)(room > (1u << 30) ? (1u << 30) : room);
        size_t before = z.avail_out;
        int zr = inflate(&z, Z_NO_FLUSH);
        n += before - z.avail_out;
        if (n > PRODUCE_GZ_MAX) {
            rc = st_err_set(err, ST_ERANGE, "%s: inflates to more than %llu bytes", s->name,
                            (unsigned long long)PRODUCE_GZ_MAX);
            break;
        }
        if (zr == Z_STREAM_END) {
            if (z.avail_in == 0 && fed == s->len)
                break;
            if (inflateReset(&z) != Z_OK) { /* another member follows */
                rc = st_err_set(err, ST_ECORRUPT, "%s: bad gzip member", s->name);
                break;
            }
            continue;
        }
        if (zr == Z_BUF_ERROR && z.avail_in == 0 && fed == s->len) {
            rc = st_err_set(err, ST_EINVAL, "%s: gzip data is truncated", s->name);
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = st_err_set(err, ST_EINVAL, "%s: not valid gzip data (%s)", s->name,
                            z.msg != NULL ? z.msg : "inflate failed");
            break;
        }
    }
    inflateEnd(&z);
    *total = n;
    return rc;
}

/* Inflates a gzip stream into s->owned: counts first, so memory is never over-allocated. */
static int gunzip(struct produce_src *s, struct st_err *err)
{
    size_t total, got;
    int rc = gz_pass(s, NULL, 0, &total, err);
    if (rc != ST_OK)
        return rc;
    uint8_t *out = malloc(total + 1);
    if (out == NULL)
        return st_err_set(err, ST_ENOMEM, "%s: no memory to inflate %zu bytes", s->name, total);
    rc = gz_pass(s, out, total + 1, &got, err);
    if (rc != ST_OK) {
        free(out);
        return rc;
    }
    s->owned = out;
    s->data = out;
    s->len = got;
    return ST_OK;
}

/* ---- .fvecs: rows of [i32 dim][dim float32], little-endian ---- */

static int open_fvecs(struct produce_src *s, struct st_err *err)
{
    if (s->len < 4)
        return st_err_set(err, ST_EINVAL, "%s: too short for an .fvecs row (%zu bytes)", s->name,
                          s->len);
    uint32_t dim = rd_le32(s->data);
    if (dim == 0 || dim > PRODUCE_DIM_MAX)
        return st_err_set(err, ST_EINVAL, "%s: row 0 claims dim %" PRIu32 " (1..%u allowed)",
                          s->name, dim, PRODUCE_DIM_MAX);
    s->dim = dim;
    s->stride = 4 + (size_t)dim * 4;
    if (s->len % s->stride != 0)
        return st_err_set(err, ST_EINVAL,
                          "%s: %zu bytes is not a whole number of dim-%" PRIu32
                          " rows (%zu bytes each): truncated, or not .fvecs",
                          s->name, s->len, dim, s->stride);
    s->rows = s->len / s->stride;
    for (uint64_t r = 1; r < s->rows; r++) {
        uint32_t d = rd_le32(s->data + r * s->stride);
        if (d != dim)
            return st_err_set(err, ST_EINVAL,
                              "%s: row %" PRIu64 " claims dim %" PRIu32 ", row 0 has %" PRIu32,
                              s->name, r, d, dim);
    }
    s->first = 4;
    return ST_OK;
}

/* ---- .npy: "\x93NUMPY" v1/v2/v3, a Python dict header, float32 C-order rows ---- */

/* The value text after 'key': in the header dict, or NULL. */
static const char *npy_value(const char *h, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "'%s'", key);
    const char *p = strstr(h, pat);
    if (p == NULL) {
        snprintf(pat, sizeof(pat), "\"%s\"", key);
        p = strstr(h, pat);
    }
    if (p == NULL)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != ':')
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static int open_npy(struct produce_src *s, struct st_err *err)
{
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (s->len < 10 || memcmp(s->data, magic, 6) != 0)
        return st_err_set(err, ST_EINVAL, "%s: not a .npy file (no \\x93NUMPY magic)", s->name);
    uint8_t major = s->data[6];
    size_t hlen, hoff;
    if (major == 1) {
        hlen = (size_t)s->data[8] | (size_t)s->data[9] << 8;
        hoff = 10;
    } else if (major == 2 || major == 3) {
        if (s->len < 12)
            return st_err_set(err, ST_EINVAL, "%s: truncated .npy header", s->name);
        hlen = rd_le32(s->data + 8);
        hoff = 12;
    } else {
        return st_err_set(err, ST_EUNSUPP, "%s: .npy format version %u is not supported", s->name,
                          major);
    }
    if (hlen > s->len - hoff || hlen > 65536)
        return st_err_set(err, ST_EINVAL, "%s: .npy header of %zu bytes runs past the file",
                          s->name, hlen);
    char *h = strndup((const char *)s->data + hoff, hlen);
    if (h == NULL)
        return st_err_set(err, ST_ENOMEM, "%s: no memory", s->name);
    int rc = ST_OK;
    const char *descr = npy_value(h, "descr");
    const char *fortran = npy_value(h, "fortran_order");
    const char *shape = npy_value(h, "shape");
    if (descr == NULL || fortran == NULL || shape == NULL) {
        rc = st_err_set(err, ST_EINVAL, "%s: .npy header lacks descr, fortran_order or shape",
                        s->name);
        goto out;
    }
    if (strncmp(descr, "'<f4'", 5) != 0 && strncmp(descr, "'=f4'", 5) != 0) {
        /* the value may be cut short by the header's end: never step past its NUL */
        const char *v = *descr == '\'' || *descr == '"' ? descr + 1 : descr;
        size_t n = strcspn(v, "'\",}");
        rc = st_err_set(err, ST_EUNSUPP,
                        "%s: dtype '%.*s' is not little-endian float32 ('<f4'): convert it with "
                        "a.astype('<f4')",
                        s->name, (int)(n < 16 ? n : 16), v);
        goto out;
    }
    if (strncmp(fortran, "False", 5) != 0) {
        rc = st_err_set(err, ST_EUNSUPP,
                        "%s: Fortran-order array: save it in C order (np.ascontiguousarray)",
                        s->name);
        goto out;
    }
    if (*shape != '(') {
        rc = st_err_set(err, ST_EINVAL, "%s: bad .npy shape", s->name);
        goto out;
    }
    uint64_t dims[3];
    int nd = 0;
    const char *p = shape + 1;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            break;
        if (!isdigit((unsigned char)*p) || nd == 3) {
            rc = st_err_set(err, ST_EINVAL, "%s: bad .npy shape", s->name);
            goto out;
        }
        errno = 0;
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno != 0 || v > UINT32_MAX) {
            rc = st_err_set(err, ST_EINVAL, "%s: .npy shape dimension out of range", s->name);
            goto out;
        }
        dims[nd++] = v;
        p = end;
    }
    if (nd != 2) {
        rc = st_err_set(err, ST_EUNSUPP, "%s: array is %d-D; a 2-D (rows, dim) array is needed",
                        s->name, nd);
        goto out;
    }
    if (dims[1] == 0 || dims[1] > PRODUCE_DIM_MAX) {
        rc = st_err_set(err, ST_EINVAL, "%s: dim %" PRIu64 " (1..%u allowed)", s->name, dims[1],
                        PRODUCE_DIM_MAX);
        goto out;
    }
    s->dim = (uint32_t)dims[1];
    s->rows = dims[0];
    s->stride = (size_t)s->dim * 4;
    s->first = hoff + hlen;
    if ((s->len - s->first) / s->stride != s->rows || (s->len - s->first) % s->stride != 0)
        rc = st_err_set(err, ST_EINVAL,
                        "%s: shape (%" PRIu64 ", %" PRIu32 ") needs %" PRIu64
                        " data bytes, the file has %zu: truncated or lying header",
                        s->name, s->rows, s->dim, s->rows * s->stride, s->len - s->first);
out:
    free(h);
    return rc;
}

/* ---- idx3-ubyte: big-endian header 00 00 08 03, n, rows, cols; n*rows*cols pixels ---- */

static int open_idx(struct produce_src *s, struct st_err *err)
{
    if (s->len >= 2 && s->data[0] == 0x1f && s->data[1] == 0x8b) {
        int rc = gunzip(s, err);
        if (rc != ST_OK)
            return rc;
    }
    if (s->len < 16)
        return st_err_set(err, ST_EINVAL, "%s: too short for an idx3-ubyte header (%zu bytes)",
                          s->name, s->len);
    if (s->data[0] != 0 || s->data[1] != 0)
        return st_err_set(err, ST_EINVAL, "%s: not an idx file (bad magic)", s->name);
    if (s->data[2] != 0x08)
        return st_err_set(err, ST_EUNSUPP, "%s: idx element type 0x%02x is not unsigned byte",
                          s->name, s->data[2]);
    if (s->data[3] != 3)
        return st_err_set(err, ST_EUNSUPP,
                          "%s: idx file of %u dimensions (labels?); images (idx3) are needed",
                          s->name, s->data[3]);
    uint64_t n = rd_be32(s->data + 4), r = rd_be32(s->data + 8), c = rd_be32(s->data + 12);
    if (r == 0 || c == 0 || r * c > PRODUCE_DIM_MAX)
        return st_err_set(err, ST_EINVAL, "%s: images of %" PRIu64 "x%" PRIu64 " (dim 1..%u)",
                          s->name, r, c, PRODUCE_DIM_MAX);
    s->dim = (uint32_t)(r * c);
    s->stride = s->dim;
    s->rows = n;
    s->first = 16;
    if ((s->len - 16) != n * s->stride)
        return st_err_set(err, ST_EINVAL,
                          "%s: header says %" PRIu64 " images of %" PRIu32
                          " bytes, the data is %zu bytes: truncated or lying header",
                          s->name, n, s->dim, s->len - 16);
    return ST_OK;
}

/* ---- JSON Lines: one SPEC §4.1 record object per line ---- */

/* Checks one parsed record line; sets *dim from a vector (0 when it has none). */
static int jl_check(struct produce_src *s, uint64_t row, json_t *o, uint32_t *dim,
                    struct st_err *err)
{
    if (!json_is_object(o))
        return st_err_set(err, ST_EINVAL, "%s: line %" PRIu64 ": not a JSON object", s->name,
                          row + 1);
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        static const char *const known[] = {"id", "ts", "vector", "meta", "op"};
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok)
            return st_err_set(err, ST_EINVAL,
                              "%s: line %" PRIu64 ": unknown key '%s' (id, vector, ts, meta, op)",
                              s->name, row + 1, key);
    }
    json_t *id = json_object_get(o, "id");
    if (id != NULL) {
        uint8_t be[8];
        uint32_t len;
        if (s->u64 && !st_api_json_id(true, id, be, &len))
            return st_err_set(err, ST_EINVAL,
                              "%s: line %" PRIu64
                              ": id must be an integer >= 0 or a string of its decimal digits "
                              "(uint64 ids, up to 18446744073709551615)",
                              s->name, row + 1);
        if (!s->u64 &&
            !(json_is_string(id) && json_string_length(id) >= 1 && json_string_length(id) <= 256 &&
              strlen(json_string_value(id)) == json_string_length(id)))
            return st_err_set(err, ST_EINVAL,
                              "%s: line %" PRIu64 ": id must be a string of 1..256 bytes", s->name,
                              row + 1);
    }
    json_t *ts = json_object_get(o, "ts");
    if (ts != NULL && !(json_is_integer(ts) && json_integer_value(ts) >= 0))
        return st_err_set(err, ST_EINVAL,
                          "%s: line %" PRIu64 ": ts must be integer milliseconds since the epoch",
                          s->name, row + 1);
    json_t *meta = json_object_get(o, "meta");
    if (meta != NULL && !json_is_null(meta) && !json_is_object(meta))
        return st_err_set(err, ST_EINVAL, "%s: line %" PRIu64 ": meta must be an object", s->name,
                          row + 1);
    json_t *op = json_object_get(o, "op");
    bool del = false;
    if (op != NULL) {
        const char *ops = json_is_string(op) ? json_string_value(op) : "";
        del = strcmp(ops, "delete") == 0;
        if (!del && strcmp(ops, "upsert") != 0)
            return st_err_set(err, ST_EINVAL,
                              "%s: line %" PRIu64 ": op must be \"upsert\" or \"delete\"", s->name,
                              row + 1);
    }
    if (del && id == NULL) /* the row's number would delete a record nobody named */
        return st_err_set(err, ST_EINVAL, "%s: line %" PRIu64 ": a delete needs an id", s->name,
                          row + 1);
    json_t *vec = json_object_get(o, "vector");
    *dim = 0;
    if (vec == NULL) {
        if (!del)
            return st_err_set(err, ST_EINVAL, "%s: line %" PRIu64 ": no vector", s->name, row + 1);
        return ST_OK;
    }
    if (!json_is_array(vec) || json_array_size(vec) == 0 || json_array_size(vec) > PRODUCE_DIM_MAX)
        return st_err_set(err, ST_EINVAL,
                          "%s: line %" PRIu64 ": vector must be an array of 1..%u numbers", s->name,
                          row + 1, PRODUCE_DIM_MAX);
    size_t i;
    json_array_foreach(vec, i, v)
    {
        if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
            fabs(json_number_value(v)) > 3.4028234663852886e38)
            return st_err_set(err, ST_EINVAL,
                              "%s: line %" PRIu64 ": vector[%zu] is not a finite float", s->name,
                              row + 1, i);
    }
    *dim = (uint32_t)json_array_size(vec);
    return ST_OK;
}

static int open_jsonl(struct produce_src *s, struct st_err *err)
{
    size_t cap = 0;
    uint32_t dim = 0;
    for (size_t off = 0; off < s->len;) {
        const uint8_t *nl = memchr(s->data + off, '\n', s->len - off);
        size_t end = nl != NULL ? (size_t)(nl - s->data) : s->len;
        size_t a = off, b = end;
        while (a < b && isspace(s->data[a]))
            a++;
        while (b > a && isspace(s->data[b - 1]))
            b--;
        off = end + 1;
        if (a == b)
            continue;
        json_error_t je;
        json_t *o = json_loadb((const char *)s->data + a, b - a, JSON_REJECT_DUPLICATES, &je);
        if (o == NULL)
            return st_err_set(err, ST_EINVAL, "%s: line %" PRIu64 ": %s%s", s->name, s->rows + 1,
                              je.text,
                              strncmp(je.text, "too big integer", 15) == 0
                                  ? " (JSON integers stop at 9223372036854775807; a uint64 id "
                                    "beyond it goes as a string of its decimal digits)"
                                  : "");
        uint32_t d;
        int rc = jl_check(s, s->rows, o, &d, err);
        json_decref(o);
        if (rc != ST_OK)
            return rc;
        if (d != 0 && dim != 0 && d != dim)
            return st_err_set(err, ST_EINVAL,
                              "%s: line %" PRIu64 ": vector has %" PRIu32
                              " dims, earlier lines have %" PRIu32,
                              s->name, s->rows + 1, d, dim);
        if (d != 0)
            dim = d;
        if (s->rows == cap) {
            cap = cap ? cap * 2 : 256;
            struct jl_line *l = realloc(s->lines, cap * sizeof(*l));
            if (l == NULL)
                return st_err_set(err, ST_ENOMEM, "%s: no memory", s->name);
            s->lines = l;
        }
        s->lines[s->rows++] = (struct jl_line){a, b - a};
    }
    s->dim = dim; /* 0: deletes only (produce_src_dim) */
    return ST_OK;
}

/* ---- open / close ---- */

static int src_init(struct produce_src *s, enum produce_in kind, struct st_err *err)
{
    if (kind == PRODUCE_IN_AUTO)
        kind = kind_by_name(s->name);
    if (kind == PRODUCE_IN_AUTO) {
        /* by content: npy and idx have magics; JSON starts with '{' */
        if (s->len >= 6 && memcmp(s->data, "\x93NUMPY", 6) == 0)
            kind = PRODUCE_IN_NPY;
        else if (s->len >= 4 && ((s->data[0] == 0 && s->data[1] == 0 && s->data[2] == 8) ||
                                 (s->data[0] == 0x1f && s->data[1] == 0x8b)))
            kind = PRODUCE_IN_IDX;
        else if (s->len >= 1 && s->data[0] == '{')
            kind = PRODUCE_IN_JSONL;
        else
            return st_err_set(err, ST_EINVAL,
                              "%s: unknown input format (use .fvecs, .npy, idx3-ubyte[.gz] or "
                              ".jsonl)",
                              s->name);
    }
    s->kind = kind;
    if (s->len == 0)
        return st_err_set(err, ST_EINVAL, "%s: empty file", s->name);
    int rc;
    switch (kind) {
    case PRODUCE_IN_FVECS:
        rc = open_fvecs(s, err);
        break;
    case PRODUCE_IN_NPY:
        rc = open_npy(s, err);
        break;
    case PRODUCE_IN_IDX:
        rc = open_idx(s, err);
        break;
    case PRODUCE_IN_JSONL:
        rc = open_jsonl(s, err);
        break;
    default:
        return st_err_set(err, ST_EINVAL, "%s: unknown input kind %d", s->name, (int)kind);
    }
    if (rc != ST_OK)
        return rc;
    if (s->rows == 0)
        return st_err_set(err, ST_EINVAL, "%s: no records", s->name);
    s->count = s->rows;
    s->row = malloc((size_t)(s->dim ? s->dim : 1) * sizeof(float));
    if (s->row == NULL)
        return st_err_set(err, ST_ENOMEM, "%s: no memory", s->name);
    return ST_OK;
}

int produce_src_open_mem(const char *name, const void *data, size_t len, enum produce_in kind,
                         bool u64_ids, struct produce_src **out, struct st_err *err)
{
    *out = NULL;
    struct produce_src *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(name)) == NULL) {
        free(s);
        return st_err_set(err, ST_ENOMEM, "%s: no memory", name);
    }
    s->data = data;
    s->len = len;
    s->u64 = u64_ids;
    int rc = src_init(s, kind, err);
    if (rc != ST_OK) {
        produce_src_close(s);
        return rc;
    }
    *out = s;
    return ST_OK;
}

int produce_src_open(const char *path, enum produce_in kind, bool u64_ids, struct produce_src **out,
                     struct st_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_err_sys(err, errno, "%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return st_err_sys(err, e, "%s: cannot stat", path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return st_err_set(err, ST_EINVAL, "%s: not a regular file", path);
    }
    void *map = NULL;
    if (sb.st_size > 0) {
        map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return st_err_sys(err, e, "%s: cannot map", path);
        }
    }
    close(fd);
    struct produce_src *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->name = strdup(path)) == NULL) {
        free(s);
        if (map != NULL)
            munmap(map, (size_t)sb.st_size);
        return st_err_set(err, ST_ENOMEM, "%s: no memory", path);
    }
    s->map = map;
    s->map_len = (size_t)sb.st_size;
    s->data = map != NULL ? map : (const uint8_t *)"";
    s->len = (size_t)sb.st_size;
    s->u64 = u64_ids;
    int rc = src_init(s, kind, err);
    if (rc != ST_OK) {
        produce_src_close(s);
        return rc;
    }
    *out = s;
    return ST_OK;
}

void produce_src_close(struct produce_src *s)
{
    if (s == NULL)
        return;
    if (s->map != NULL)
        munmap(s->map, s->map_len);
    free(s->owned);
    free(s->lines);
    json_decref(s->cur);
    free(s->meta);
    free(s->row);
    free(s->name);
    free(s);
}

uint64_t produce_src_rows(const struct produce_src *s)
{
    return s->count;
}

int produce_src_repeat(struct produce_src *s, uint64_t count, struct st_err *err)
{
    if (count == 0)
        return st_err_set(err, ST_EINVAL, "%s: a count of 0 records", s->name);
    if (count > s->rows && s->kind == PRODUCE_IN_JSONL)
        return st_err_set(err, ST_EINVAL,
                          "%s: records up to #%" PRIu64 " (--start + --count) from %" PRIu64
                          " lines: only inputs whose ids are row numbers (fvecs, npy, idx) can be "
                          "sent more than once",
                          s->name, count, s->rows);
    s->count = count;
    if (s->next > count)
        s->next = count;
    return ST_OK;
}

uint32_t produce_src_dim(const struct produce_src *s)
{
    return s->dim;
}

int produce_src_seek(struct produce_src *s, uint64_t row)
{
    if (row >= s->count)
        return ST_ERANGE;
    s->next = row;
    return ST_OK;
}

const struct st_err *produce_src_error(const struct produce_src *s)
{
    return &s->err;
}

/* ---- reading ---- */

static void row_id(struct produce_src *s, struct produce_rec *out, uint64_t row)
{
    if (s->u64) {
        out->u64 = true;
        out->id_u64 = row;
        out->id = NULL;
    } else {
        snprintf(s->idbuf, sizeof(s->idbuf), "%" PRIu64, row);
        out->id = s->idbuf;
    }
}

/* A u64 id jl_check accepted (an integer, or a string of its digits). */
static uint64_t json_u64_id(json_t *id)
{
    uint8_t be[8];
    uint32_t len;
    return st_api_json_id(true, id, be, &len) ? st_get_be64(be) : 0;
}

static int next_jsonl(struct produce_src *s, struct produce_rec *out, uint64_t row)
{
    json_decref(s->cur);
    free(s->meta);
    s->meta = NULL;
    json_error_t je;
    s->cur = json_loadb((const char *)s->data + s->lines[row].off, s->lines[row].len,
                        JSON_REJECT_DUPLICATES, &je);
    uint32_t d;
    if (s->cur == NULL)
        return st_err_set(&s->err, ST_EINVAL, "%s: record %" PRIu64 ": %s", s->name, row + 1,
                          je.text);
    int rc = jl_check(s, row, s->cur, &d, &s->err);
    if (rc != ST_OK)
        return rc;
    json_t *id = json_object_get(s->cur, "id");
    if (id == NULL)
        row_id(s, out, row);
    else if (s->u64)
        out->id_u64 = json_u64_id(id);
    else
        out->id = json_string_value(id);
    json_t *ts = json_object_get(s->cur, "ts");
    out->ts = ts != NULL ? (int64_t)json_integer_value(ts) : 0;
    json_t *op = json_object_get(s->cur, "op");
    out->del = op != NULL && strcmp(json_string_value(op), "delete") == 0;
    json_t *meta = json_object_get(s->cur, "meta");
    if (meta != NULL && json_is_object(meta)) {
        s->meta = json_dumps(meta, JSON_COMPACT);
        if (s->meta == NULL)
            return st_err_set(&s->err, ST_ENOMEM, "%s: no memory", s->name);
        out->meta_json = s->meta;
    }
    json_t *vec = json_object_get(s->cur, "vector");
    if (vec != NULL) {
        if (d != s->dim)
            return st_err_set(&s->err, ST_EINVAL, "%s: line %" PRIu64 ": dim %u, expected %u",
                              s->name, row + 1, d, s->dim);
        for (uint32_t i = 0; i < d; i++)
            s->row[i] = (float)json_number_value(json_array_get(vec, i));
        out->vec = out->del ? NULL : s->row;
    }
    return 1;
}

int produce_src_next(void *ctx, struct produce_rec *out)
{
    struct produce_src *s = ctx;
    if (s->next >= s->count)
        return 0;
    uint64_t seq = s->next++;     /* the record's id: row numbers go on counting when repeated */
    uint64_t row = seq % s->rows; /* JSON Lines never wrap (produce_src_repeat) */
    *out = (struct produce_rec){.u64 = s->u64, .dim = s->dim, .partition = -1};
    if (s->kind == PRODUCE_IN_JSONL)
        return next_jsonl(s, out, row);
    row_id(s, out, seq);
    const uint8_t *p = s->data + s->first + row * s->stride;
    if (s->kind == PRODUCE_IN_IDX) {
        for (uint32_t i = 0; i < s->dim; i++)
            s->row[i] = (float)p[i];
    } else {
        memcpy(s->row, p, (size_t)s->dim * 4);
        for (uint32_t i = 0; i < s->dim; i++)
            if (!isfinite(s->row[i]))
                return st_err_set(&s->err, ST_EINVAL,
                                  "%s: row %" PRIu64 ": value %" PRIu32 " is not finite", s->name,
                                  row, i);
    }
    out->vec = s->row;
    return 1;
}
