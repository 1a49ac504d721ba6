/* strata search — one query against POST /v1/collections/{name}/search (SPEC.md §5). */
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "produce.h"

#define RESP_MAX (64u << 20)

static void help(void)
{
    printf(
        "usage: strata search --url U --collection C [options] (--vector JSON | --query-file F)\n"
        "\n"
        "Sends one search to U (an indexer's, or an ingest node's for its own data) and prints\n"
        "the hits: a table on a terminal, the server's JSON response otherwise or with --json.\n"
        "\n"
        "options:\n"
        "  --url U              base URL, e.g. http://127.0.0.1:7080\n"
        "  --collection C       collection name\n"
        "  --vector JSON        the query vector, e.g. '[0.1, 0.2, 0.3]'\n"
        "  --query-file F       take the query from F (.fvecs, .npy, idx3-ubyte[.gz], .jsonl)\n"
        "  --row N              which row of --query-file (default 0)\n"
        "  --k K                hits to return, 1..1000 (default 10)\n"
        "  --ef N               HNSW search breadth\n"
        "  --nprobe N           IVF-PQ lists to probe\n"
        "  --consistency M      strong (default: includes unindexed data) or indexed\n"
        "  --from-ts MS         only windows ending after MS (ms since the epoch)\n"
        "  --to-ts MS           only windows starting before MS\n"
        "  --token-file F       send 'Authorization: Bearer <first line of F>'\n"
        "  --no-meta            do not ask for meta\n"
        "  --json               print the raw JSON response even on a terminal\n"
        "  --timeout S          give up after S seconds (default 30)\n"
        "  --help               this help\n"
        "\n"
        "exit codes: 0 hits printed, 1 the server answered an error (its message is printed)\n"
        "or could not be reached, 2 bad usage or bad query input\n");
}

struct resp {
    char *p;
    size_t n;
    bool too_big;
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    struct resp *r = ud;
    size_t n = sz * nm;
    if (r->n + n > RESP_MAX) {
        r->too_big = true;
        return 0;
    }
    char *q = realloc(r->p, r->n + n + 1);
    if (q == NULL)
        return 0;
    memcpy(q + r->n, p, n);
    r->p = q;
    r->n += n;
    r->p[r->n] = '\0';
    return n;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* The query vector from a file row. */
static int vector_from_file(const char *path, int64_t row, json_t **out)
{
    struct produce_src *src = NULL;
    struct st_err err = {0};
    int rc = produce_src_open(path, PRODUCE_IN_AUTO, false, &src, &err);
    if (rc == ST_EINVAL) { /* JSON Lines with integer ids: only the vector matters here */
        struct st_err e2 = {0};
        if (produce_src_open(path, PRODUCE_IN_AUTO, true, &src, &e2) == ST_OK)
            rc = ST_OK;
    }
    if (rc != ST_OK) {
        fprintf(stderr, "strata search: %s\n", err.msg);
        return rc == ST_EIO || rc == ST_ENOMEM ? 1 : 2;
    }
    if (produce_src_seek(src, (uint64_t)row) != ST_OK) {
        fprintf(stderr, "strata search: %s: no row %" PRId64 " (%" PRIu64 " rows)\n", path, row,
                produce_src_rows(src));
        produce_src_close(src);
        return 2;
    }
    struct produce_rec r;
    int n = produce_src_next(src, &r);
    if (n != 1 || r.vec == NULL) {
        fprintf(stderr, "strata search: %s: row %" PRId64 ": %s\n", path, row,
                n < 0 ? produce_src_error(src)->msg : "no vector");
        produce_src_close(src);
        return 2;
    }
    json_t *a = json_array();
    for (uint32_t i = 0; i < r.dim; i++)
        json_array_append_new(a, json_real(r.vec[i]));
    produce_src_close(src);
    *out = a;
    return 0;
}

static char *url_escape(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n * 3 + 1), *p = o;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            *p++ = (char)c;
        else
            p += sprintf(p, "%%%02X", c);
    }
    *p = '\0';
    return o;
}

static void print_table(json_t *resp)
{
    json_t *hits = json_object_get(resp, "hits");
    printf("%4s  %-24s  %12s  %14s  %s\n", "rank", "id", "distance", "ts", "meta");
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h)
    {
        json_t *id = json_object_get(h, "id");
        char ids[64];
        if (json_is_string(id))
            snprintf(ids, sizeof(ids), "%s", json_string_value(id));
        else if (json_is_integer(id))
            snprintf(ids, sizeof(ids), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        else
            snprintf(ids, sizeof(ids), "?");
        json_t *meta = json_object_get(h, "meta");
        char *ms = meta != NULL && !json_is_null(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
        json_t *ts = json_object_get(h, "ts");
        printf("%4zu  %-24s  %12.6g  %14" JSON_INTEGER_FORMAT "  %.60s%s\n", i + 1, ids,
               json_number_value(json_object_get(h, "distance")),
               json_is_integer(ts) ? json_integer_value(ts) : 0, ms != NULL ? ms : "",
               ms != NULL && strlen(ms) > 60 ? "..." : "");
        free(ms);
    }
    json_t *took = json_object_get(resp, "took_ms");
    printf("%zu hit(s); windows_searched=%" JSON_INTEGER_FORMAT
           " segments_searched=%" JSON_INTEGER_FORMAT " fresh_records_scanned=%" JSON_INTEGER_FORMAT
           " fresh_records_pruned=%" JSON_INTEGER_FORMAT " took_ms=%.3f\n",
           json_array_size(hits), json_integer_value(json_object_get(resp, "windows_searched")),
           json_integer_value(json_object_get(resp, "segments_searched")),
           json_integer_value(json_object_get(resp, "fresh_records_scanned")),
           json_integer_value(json_object_get(resp, "fresh_records_pruned")),
           json_number_value(took));
}

int cmd_search(int argc, char **argv)
{
    enum {
        O_URL = 256,
        O_COLL,
        O_VEC,
        O_QF,
        O_ROW,
        O_K,
        O_EF,
        O_NPROBE,
        O_CONS,
        O_FROM,
        O_TO,
        O_TOKEN,
        O_NOMETA,
        O_JSON,
        O_TIMEOUT,
        O_HELP
    };
    static const struct option lo[] = {
        {"url", required_argument, NULL, O_URL},
        {"collection", required_argument, NULL, O_COLL},
        {"vector", required_argument, NULL, O_VEC},
        {"query-file", required_argument, NULL, O_QF},
        {"row", required_argument, NULL, O_ROW},
        {"k", required_argument, NULL, O_K},
        {"ef", required_argument, NULL, O_EF},
        {"nprobe", required_argument, NULL, O_NPROBE},
        {"consistency", required_argument, NULL, O_CONS},
        {"from-ts", required_argument, NULL, O_FROM},
        {"to-ts", required_argument, NULL, O_TO},
        {"token-file", required_argument, NULL, O_TOKEN},
        {"no-meta", no_argument, NULL, O_NOMETA},
        {"json", no_argument, NULL, O_JSON},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL, *coll = NULL, *vec = NULL, *qf = NULL, *token_file = NULL;
    int64_t row = 0, timeout = 30;
    bool raw = false;
    json_t *req = json_object(), *resp = NULL;
    int rc = 2, c;
    char *body = NULL, *full = NULL, *ecoll = NULL, auth[600] = "";
    struct resp r = {0};
    CURL *h = NULL;
    struct curl_slist *hdrs = NULL;
    bool curl_ready = false;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
        int64_t v;
        switch (c) {
        case O_URL:
            url = optarg;
            break;
        case O_COLL:
            coll = optarg;
            break;
        case O_VEC:
            vec = optarg;
            break;
        case O_QF:
            qf = optarg;
            break;
        case O_ROW:
            if (!parse_i64(optarg, 0, INT64_MAX, &row)) {
                rc = cmd_usage_error("search", "--row must be a row number, not '%s'", optarg);
                goto out;
            }
            break;
        case O_K:
        case O_EF:
        case O_NPROBE:
            if (!parse_i64(optarg, 1, c == O_K ? 1000 : 1000000, &v)) {
                rc = cmd_usage_error("search", "--%s must be a positive integer%s, not '%s'",
                                     c == O_K    ? "k"
                                     : c == O_EF ? "ef"
                                                 : "nprobe",
                                     c == O_K ? " <= 1000" : "", optarg);
                goto out;
            }
            json_object_set_new(req, c == O_K ? "k" : c == O_EF ? "ef" : "nprobe", json_integer(v));
            break;
        case O_CONS:
            if (strcmp(optarg, "strong") != 0 && strcmp(optarg, "indexed") != 0) {
                rc = cmd_usage_error("search", "--consistency must be strong or indexed");
                goto out;
            }
            json_object_set_new(req, "consistency", json_string(optarg));
            break;
        case O_FROM:
        case O_TO:
            if (!parse_i64(optarg, 0, INT64_MAX, &v)) {
                rc = cmd_usage_error("search", "%s must be milliseconds since the epoch",
                                     c == O_FROM ? "--from-ts" : "--to-ts");
                goto out;
            }
            json_object_set_new(req, c == O_FROM ? "from_ts" : "to_ts", json_integer(v));
            break;
        case O_TOKEN:
            token_file = optarg;
            break;
        case O_NOMETA:
            json_object_set_new(req, "include_meta", json_false());
            break;
        case O_JSON:
            raw = true;
            break;
        case O_TIMEOUT:
            if (!parse_i64(optarg, 1, 3600, &timeout)) {
                rc = cmd_usage_error("search", "--timeout must be 1..3600 seconds");
                goto out;
            }
            break;
        case O_HELP:
            help();
            rc = 0;
            goto out;
        case ':':
            rc = cmd_usage_error("search", "%s needs a value", argv[optind - 1]);
            goto out;
        default:
            rc = cmd_usage_error("search", "unknown option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (optind != argc) {
        rc = cmd_usage_error("search", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (url == NULL || coll == NULL) {
        rc = cmd_usage_error("search", "--url and --collection are required");
        goto out;
    }
    if ((vec == NULL) == (qf == NULL)) {
        rc = cmd_usage_error("search", "give exactly one of --vector and --query-file");
        goto out;
    }
    if (vec != NULL) {
        json_error_t je;
        json_t *a = json_loads(vec, JSON_DECODE_ANY, &je);
        size_t i;
        json_t *x;
        bool ok = json_is_array(a) && json_array_size(a) > 0;
        json_array_foreach(a, i, x) ok = ok && json_is_number(x);
        if (!ok) {
            json_decref(a);
            rc = cmd_usage_error("search", "--vector must be a JSON array of numbers");
            goto out;
        }
        json_object_set_new(req, "vector", a);
    } else {
        json_t *a = NULL;
        rc = vector_from_file(qf, row, &a);
        if (rc != 0)
            goto out;
        json_object_set_new(req, "vector", a);
        rc = 2;
    }
    if (token_file != NULL) {
        FILE *f = fopen(token_file, "r");
        char tok[512] = "";
        if (f == NULL || fgets(tok, sizeof(tok), f) == NULL) {
            if (f != NULL)
                fclose(f);
            fprintf(stderr, "strata search: %s: cannot read the token\n", token_file);
            goto out;
        }
        fclose(f);
        tok[strcspn(tok, "\r\n")] = '\0';
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
    }
    body = json_dumps(req, JSON_COMPACT);
    ecoll = url_escape(coll);
    size_t ul = strlen(url);
    while (ul > 0 && url[ul - 1] == '/')
        ul--;
    if (body == NULL || ecoll == NULL ||
        asprintf(&full, "%.*s/v1/collections/%s/search", (int)ul, url, ecoll) < 0) {
        full = NULL;
        rc = 1;
        goto out;
    }
    rc = 1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "strata search: cannot initialise libcurl\n");
        goto out;
    }
    curl_ready = true;
    if ((h = curl_easy_init()) == NULL) {
        fprintf(stderr, "strata search: cannot initialise libcurl\n");
        goto out;
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (auth[0])
        hdrs = curl_slist_append(hdrs, auth);
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)timeout);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode ce = curl_easy_perform(h);
    if (ce != CURLE_OK) {
        fprintf(stderr, "strata search: %s: %s\n", full,
                r.too_big ? "response over 64 MiB"
                : cerr[0] ? cerr
                          : curl_easy_strerror(ce));
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    json_error_t je;
    resp = r.p != NULL ? json_loadb(r.p, r.n, 0, &je) : NULL;
    if (status != 200) {
        json_t *e = json_object_get(resp, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *code = json_string_value(json_object_get(e, "code"));
        fprintf(stderr, "strata search: HTTP %ld%s%s: %s\n", status, code ? " " : "",
                code ? code : "", msg ? msg : (r.p ? r.p : "(no body)"));
        goto out;
    }
    if (!json_is_array(json_object_get(resp, "hits"))) {
        fprintf(stderr, "strata search: %s: the response is not a search result\n", full);
        goto out;
    }
    if (raw || !isatty(STDOUT_FILENO))
        printf("%s\n", r.p);
    else
        print_table(resp);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    json_decref(req);
    json_decref(resp);
    free(body);
    free(full);
    free(ecoll);
    free(r.p);
    curl_slist_free_all(hdrs);
    if (h != NULL)
        curl_easy_cleanup(h);
    if (curl_ready)
        curl_global_cleanup();
    return rc;
}
