/* strata produce — a file of vectors or records to a Kafka topic (produce.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cmd.h"
#include "produce.h"

static void help(void)
{
    printf("usage: strata produce --brokers B --topic T [options] INPUT\n"
           "       strata produce --config strata.yaml --collection C [options] INPUT\n"
           "\n"
           "Sends the records of INPUT to Kafka topic T in strata's record formats (SPEC.md §4),\n"
           "batch records per message, with an idempotent producer; exits 0 only when every\n"
           "message was acknowledged by the brokers.\n"
           "\n"
           "INPUT (by name, or --input-format):\n"
           "  *.fvecs              rows of [int32 dim][dim float32]\n"
           "  *.npy                a float32 ('<f4') 2-D array in C order\n"
           "  *idx3-ubyte[.gz]     MNIST / Fashion-MNIST images (pixels as floats 0..255)\n"
           "  *.jsonl, *.ndjson    one record per line: {\"id\", \"vector\", \"ts\", \"meta\", "
           "\"op\"}\n"
           "Ids are row numbers (0, 1, ...) unless a JSON line has an id.\n"
           "\n"
           "options:\n"
           "  --config FILE        the daemons' YAML: kafka.brokers and kafka.properties (TLS,\n"
           "                       SASL: ${ENV} expanded) unless given here, and the topic of\n"
           "                       --collection\n"
           "  --brokers B          Kafka bootstrap servers (host:port,...)\n"
           "  --topic T            the topic the collection is fed from\n"
           "  --collection C       name C in every message (default: the topic's collection)\n"
           "  --format json|binary record format on the wire (default json)\n"
           "  --batch N            records per Kafka message (default 100)\n"
           "  --rate R             at most R records per second (default: as fast as possible)\n"
           "  --count N            send N records: fewer than INPUT holds, or its rows again and\n"
           "                       again with ids counting on past the last row (a file of R\n"
           "                       rows: R, R+1, ...) for a long load from a small file (not\n"
           "                       JSON Lines, whose ids are their own)\n"
           "  --start S            begin at record S (id S; with --count, S past the rows is a\n"
           "                       later pass): runs that must not share ids start apart\n"
           "  --dim D              refuse INPUT unless its vectors have D dims (JSON Lines of\n"
           "                       deletes only: the dim their binary frames carry, else\n"
           "                       --collection's in --config)\n"
           "  --u64-ids            ids are unsigned integers (collections with id_type uint64;\n"
           "                       implied by --collection's id_type in --config)\n"
           "  --input-format F     fvecs | npy | idx | jsonl (default: by file name)\n"
           "  -X, --property K=V   a librdkafka property (repeatable), e.g. -X linger.ms=20;\n"
           "                       after the config's kafka.properties (a secret is better\n"
           "                       kept there than on a command line)\n"
           "  --quiet              no progress output\n"
           "  --help               this help\n"
           "\n"
           "Progress goes to stderr: a bar with records/s and ETA on a terminal, a line every\n"
           "second otherwise. The summary line goes to stdout.\n"
           "\n"
           "Ctrl-C stops reading, sends what was read and waits for its acknowledgements; a\n"
           "second Ctrl-C gives up waiting (what is not acknowledged is counted as undelivered).\n"
           "\n"
           "exit codes: 0 all delivered, 1 Kafka failure or interrupted (nothing is silently\n"
           "dropped: the count of undelivered messages is printed), 2 bad usage or bad INPUT\n");
}

static atomic_bool stop_flag, abandon_flag;

/* The first Ctrl-C (or SIGTERM) stops reading; the rest is still sent and waited for. The
 * second stops the wait: what is not acknowledged by then is counted as undelivered. */
static void on_signal(int sig)
{
    (void)sig;
    if (atomic_exchange(&stop_flag, true)) {
        atomic_store(&abandon_flag, true);
        return;
    }
    static const char msg[] = "\nstrata produce: interrupted: sending what was read and waiting "
                              "for acknowledgements (Ctrl-C again to give up waiting)\n";
    int e = errno;
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
    }
    errno = e;
}

static void tty_progress(void *ud, const struct produce_stats *s, uint64_t total, bool final)
{
    (void)ud;
    double rps = s->seconds > 0 ? (double)s->records / s->seconds : 0;
    char eta[32] = "--:--";
    if (total > 0 && rps > 0 && s->records <= total) {
        uint64_t left = (uint64_t)((double)(total - s->records) / rps);
        snprintf(eta, sizeof(eta), "%02" PRIu64 ":%02" PRIu64, left / 60, left % 60);
    }
    double frac = total > 0 ? (double)s->records / (double)total : 0;
    if (frac > 1)
        frac = 1;
    char bar[41];
    int filled = (int)(frac * 40);
    for (int i = 0; i < 40; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\r[%s] %3.0f%% %" PRIu64 "/%" PRIu64 " %.0f rec/s ETA %s ", bar, frac * 100,
            s->records, total, rps, eta);
    if (final)
        fprintf(stderr, "\n");
    fflush(stderr);
}

/* A whole decimal number in lo..hi (no sign, nothing after it) into *v. */
static bool parse_count(const char *arg, unsigned long long lo, unsigned long long hi,
                        unsigned long long *v)
{
    char *end = NULL;
    if (*arg == '\0' || *arg == '-')
        return false;
    *v = strtoull(arg, &end, 10);
    return *end == '\0' && *v >= lo && *v <= hi;
}

int cmd_produce(int argc, char **argv)
{
    enum {
        O_BROKERS = 256,
        O_TOPIC,
        O_COLL,
        O_FORMAT,
        O_BATCH,
        O_RATE,
        O_COUNT,
        O_START,
        O_DIM,
        O_U64,
        O_IN,
        O_QUIET,
        O_CONFIG,
        O_HELP
    };
    static const struct option lo[] = {
        {"brokers", required_argument, NULL, O_BROKERS},
        {"topic", required_argument, NULL, O_TOPIC},
        {"collection", required_argument, NULL, O_COLL},
        {"format", required_argument, NULL, O_FORMAT},
        {"batch", required_argument, NULL, O_BATCH},
        {"rate", required_argument, NULL, O_RATE},
        {"count", required_argument, NULL, O_COUNT},
        {"start", required_argument, NULL, O_START},
        {"dim", required_argument, NULL, O_DIM},
        {"u64-ids", no_argument, NULL, O_U64},
        {"input-format", required_argument, NULL, O_IN},
        {"property", required_argument, NULL, 'X'},
        {"quiet", no_argument, NULL, O_QUIET},
        {"config", required_argument, NULL, O_CONFIG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    struct produce_opts o = {0};
    enum produce_in in = PRODUCE_IN_AUTO;
    bool u64 = false, quiet = false;
    unsigned long long dim = 0;
    uint32_t cfg_dim = 0;         /* the dim of --collection in --config */
    unsigned long long count = 0; /* 0: the input's rows */
    unsigned long long start = 0; /* the first record sent */
    const char **cli_props = calloc((size_t)argc + 1, sizeof(char *));
    size_t n_cli = 0;
    const char **props = NULL; /* the config's kafka.properties, then -X */
    char **cfg_kv = NULL;      /* "key=value" of the config's, owned */
    const char *config = NULL;
    struct cfg *cfg = NULL;
    int rc = 2, c;
    struct produce_src *src = NULL;
    if (cli_props == NULL)
        return 1;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":X:", lo, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case O_BROKERS:
            o.brokers = optarg;
            break;
        case O_TOPIC:
            o.topic = optarg;
            break;
        case O_COLL:
            o.collection = optarg;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "json") == 0)
                o.format = PRODUCE_JSON;
            else if (strcmp(optarg, "binary") == 0)
                o.format = PRODUCE_BINARY;
            else {
                rc =
                    cmd_usage_error("produce", "--format must be json or binary, not '%s'", optarg);
                goto out;
            }
            break;
        case O_BATCH: {
            unsigned long long v;
            if (!parse_count(optarg, 1, 1000000, &v)) {
                rc = cmd_usage_error("produce", "--batch must be 1..1000000, not '%s'", optarg);
                goto out;
            }
            o.batch = (uint32_t)v;
            break;
        }
        case O_RATE:
            o.rate = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(o.rate > 0) || o.rate > 1e9) {
                rc = cmd_usage_error("produce", "--rate must be a positive number, not '%s'",
                                     optarg);
                goto out;
            }
            break;
        case O_COUNT:
            if (!parse_count(optarg, 1, 1ull << 48, &count)) {
                rc = cmd_usage_error("produce", "--count must be 1..2^48, not '%s'", optarg);
                goto out;
            }
            break;
        case O_START:
            if (!parse_count(optarg, 0, 1ull << 48, &start)) {
                rc = cmd_usage_error("produce", "--start must be 0..2^48, not '%s'", optarg);
                goto out;
            }
            break;
        case O_DIM:
            if (!parse_count(optarg, 1, PRODUCE_DIM_MAX, &dim)) {
                rc = cmd_usage_error("produce", "--dim must be 1..%u, not '%s'", PRODUCE_DIM_MAX,
                                     optarg);
                goto out;
            }
            break;
        case O_U64:
            u64 = true;
            break;
        case O_IN:
            if (strcmp(optarg, "fvecs") == 0)
                in = PRODUCE_IN_FVECS;
            else if (strcmp(optarg, "npy") == 0)
                in = PRODUCE_IN_NPY;
            else if (strcmp(optarg, "idx") == 0)
                in = PRODUCE_IN_IDX;
            else if (strcmp(optarg, "jsonl") == 0)
                in = PRODUCE_IN_JSONL;
            else {
                rc = cmd_usage_error("produce", "--input-format must be fvecs, npy, idx or jsonl");
                goto out;
            }
            break;
        case 'X':
            cli_props[n_cli++] = optarg;
            break;
        case O_CONFIG:
            config = optarg;
            break;
        case O_QUIET:
            quiet = true;
            break;
        case O_HELP:
            help();
            rc = 0;
            goto out;
        case ':':
            rc = cmd_usage_error("produce", "%s needs a value", argv[optind - 1]);
            goto out;
        default:
            rc = cmd_usage_error("produce", "unknown option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    size_t n_cfg = 0;
    if (config != NULL) {
        struct cfg_errors errs = {0};
        if (cfg_load(config, &cfg, &errs) != ST_OK) {
            cfg_errors_print(&errs, stderr);
            if (errs.n == 0)
                fprintf(stderr, "strata produce: %s: cannot be read\n", config);
            cfg_errors_clear(&errs);
            rc = 2;
            goto out;
        }
        if (o.brokers == NULL) {
            if (strcmp(cfg->kafka.brokers, "embedded") == 0) {
                rc = cmd_usage_error("produce",
                                     "%s: kafka.brokers is \"embedded\" (strata demo "
                                     "only); give --brokers",
                                     config);
                goto out;
            }
            o.brokers = cfg->kafka.brokers;
        }
        if (o.collection != NULL) {
            const struct cfg_collection *cc = cfg_collection_find(cfg, o.collection);
            if (cc == NULL && o.topic == NULL) {
                rc = cmd_usage_error("produce", "%s has no collection '%s'", config, o.collection);
                goto out;
            }
            if (cc != NULL) {
                if (o.topic == NULL)
                    o.topic = cc->topic;
                cfg_dim = cc->dim;
                /* The collection's id type decides: string ids in a frame to a uint64
                 * collection would all go to the dead-letter topic while this reports success. */
                if (u64 && cc->id_type != CFG_ID_UINT64) {
                    rc = cmd_usage_error("produce",
                                         "--u64-ids, but collection '%s' in %s has string ids",
                                         o.collection, config);
                    goto out;
                }
                u64 = cc->id_type == CFG_ID_UINT64;
            }
        }
        n_cfg = cfg->kafka.n_properties;
        cfg_kv = calloc(n_cfg + 1, sizeof(*cfg_kv));
        if (cfg_kv == NULL) {
            rc = 1;
            goto out;
        }
        for (size_t i = 0; i < n_cfg; i++) {
            const struct cfg_kv *kv = &cfg->kafka.properties[i];
            size_t len = strlen(kv->key) + strlen(kv->value) + 2;
            if ((cfg_kv[i] = malloc(len)) == NULL) {
                rc = 1;
                goto out;
            }
            snprintf(cfg_kv[i], len, "%s=%s", kv->key, kv->value);
        }
    }
    if (o.brokers == NULL || o.topic == NULL) {
        rc = cmd_usage_error("produce", "--brokers and --topic are required (or --config with "
                                        "--collection)");
        goto out;
    }
    props = calloc(n_cfg + n_cli + 1, sizeof(*props));
    if (props == NULL) {
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < n_cfg; i++)
        props[i] = cfg_kv[i];
    for (size_t i = 0; i < n_cli; i++)
        props[n_cfg + i] = cli_props[i];
    if (optind != argc - 1) {
        rc = cmd_usage_error("produce", optind == argc ? "no INPUT file" : "more than one INPUT");
        goto out;
    }
    const char *input = argv[optind];
    struct st_err err = {0};
    int r = produce_src_open(input, in, u64, &src, &err);
    if (r != ST_OK) {
        fprintf(stderr, "strata produce: %s\n", err.msg);
        rc = r == ST_EIO || r == ST_ENOMEM ? 1 : 2;
        goto out;
    }
    if (dim != 0 && cfg_dim != 0 && dim != cfg_dim) {
        rc = cmd_usage_error("produce", "--dim %llu, but collection %s has %u in %s", dim,
                             o.collection, cfg_dim, config);
        goto out;
    }
    uint32_t sdim = produce_src_dim(src);               /* 0: deletes only */
    uint32_t want = dim != 0 ? (uint32_t)dim : cfg_dim; /* the collection's, when known */
    if (want != 0 && sdim != 0 && sdim != want) {
        if (dim != 0)
            fprintf(stderr, "strata produce: %s: vectors have %u dims, --dim says %llu\n", input,
                    sdim, dim);
        else
            fprintf(stderr, "strata produce: %s: vectors have %u dims, collection %s has %u\n",
                    input, sdim, o.collection, cfg_dim);
        rc = 2;
        goto out;
    }
    /* JSON deletes carry no vector: only frames need a dim (and a batch of JSON deletes no
     * buffer sized by it) */
    o.dim = sdim != 0 ? sdim : o.format == PRODUCE_BINARY ? want : 0;
    if (o.dim == 0 && o.format == PRODUCE_BINARY) {
        fprintf(stderr,
                "strata produce: %s: deletes only: binary frames carry the collection's dim; "
                "give --dim (or --config with --collection)\n",
                input);
        rc = 2;
        goto out;
    }
    /* --start S --count N: records S .. S+N-1 (without --count: to the input's end) */
    uint64_t end_rec = count != 0 ? start + count : produce_src_rows(src);
    if (end_rec != produce_src_rows(src) && (r = produce_src_repeat(src, end_rec, &err)) != ST_OK) {
        fprintf(stderr, "strata produce: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    if (start > 0 && produce_src_seek(src, start) != ST_OK) {
        fprintf(stderr, "strata produce: %s: --start %llu is past its %" PRIu64 " records\n", input,
                start, produce_src_rows(src));
        rc = 2;
        goto out;
    }
    o.props = props;
    o.total = produce_src_rows(src) - start;
    o.cancel = &stop_flag;
    o.abandon = &abandon_flag;
    if (!quiet) {
        if (isatty(STDERR_FILENO)) {
            o.progress = tty_progress;
            o.progress_ms = 200;
        } else {
            o.progress_file = stderr;
            o.progress_ms = 1000;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct produce_stats st;
    r = produce_run(&o, produce_src_next, src, &st, &err);
    if (r != ST_OK) {
        const struct st_err *se = produce_src_error(src);
        fprintf(stderr, "strata produce: %s\n", se->code != 0 ? se->msg : err.msg);
        fprintf(stderr,
                "strata produce: %" PRIu64 " records in %" PRIu64 " messages sent, %" PRIu64
                " messages acknowledged\n",
                st.records, st.messages, st.delivered);
        rc = se->code != 0 || r == ST_EINVAL ? 2 : 1;
        goto out;
    }
    double secs = st.seconds > 0 ? st.seconds : 1e-9;
    printf("produced %" PRIu64 " records in %" PRIu64 " messages in %.2f s: %.0f records/s, "
           "%" PRIu64 " bytes, %.2f MB/s\n",
           st.records, st.messages, st.seconds, (double)st.records / secs, st.bytes,
           (double)st.bytes / secs / 1e6);
    if (atomic_load(&stop_flag)) {
        fprintf(stderr, "strata produce: interrupted after %" PRIu64 " of %" PRIu64 " records\n",
                st.records, o.total);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    produce_src_close(src);
    free(props);
    free(cli_props);
    for (size_t i = 0; cfg_kv != NULL && cfg_kv[i] != NULL; i++)
        free(cfg_kv[i]);
    free(cfg_kv);
    cfg_free(cfg);
    return rc;
}
