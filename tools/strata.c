/*
 * strata — the operator's CLI (SPEC.md §2). Subcommands are added as the modules behind
 * them land; unknown subcommands are a usage error (exit 2).
 */
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "demo.h"
#include "store.h"
#include "st_version.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: strata <command> [options]\n"
            "\n"
            "commands:\n"
            "  demo                the embedded default: Kafka, ingest, indexer in one process\n"
            "  check-config FILE   validate a strata YAML configuration (exit 0 ok, 2 bad)\n"
            "  inspect PATH        verify a data dir, store, WAL, segment or manifest read-only;\n"
            "                      print a summary (exit 0 intact, 1 corruption found)\n"
            "\n"
            "options:\n"
            "  --version           print the version and exit\n"
            "  --help              print this help and exit\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0) {
        printf("strata %s\n", STRATA_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "demo") == 0)
        return demo_main(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: strata check-config FILE\n");
            return 2;
        }
        return cfg_check_main(argv[2], stdout, stderr);
    }
    if (strcmp(cmd, "inspect") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: strata inspect PATH\n");
            return 2;
        }
        struct st_err err = {0};
        int rc = store_inspect(argv[2], stdout, &err);
        if (rc == ST_OK)
            return 0;
        fprintf(stderr, "strata inspect: %s\n", err.msg);
        return rc == ST_ENOTFOUND || rc == ST_EINVAL ? 2 : 1;
    }
    fprintf(stderr, "strata: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
