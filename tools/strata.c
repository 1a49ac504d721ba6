/*
 * strata — the operator's CLI (SPEC.md §2). One table of subcommands, each in its own
 * cmd_<name>.c (cmd.h). Unknown subcommands are a usage error (exit 2).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "cmd.h"
#include "demo.h"
#include "st_version.h"

/* A new command: its cmd_<name>.c, a declaration in cmd.h, a row here. */
static const struct {
    const char *name, *args, *what;
    int (*main)(int argc, char **argv);
} cmds[] = {
    {"check-config", "FILE", "validate a strata YAML configuration (exit 0 ok, 2 bad)",
     cmd_check_config},
    {"produce", "--brokers B --topic T INPUT",
     "send .fvecs / .npy / idx3-ubyte[.gz] / JSON Lines records to Kafka", cmd_produce},
    {"search", "--url U --collection C (--vector JSON | --query-file F)",
     "query a daemon's search endpoint", cmd_search},
    {"inspect", "PATH",
     "verify a data dir, store, WAL, segment, manifest, index file or indexer dir read-only "
     "(exit 0 intact, 1 corruption found)",
     cmd_inspect},
    {"demo", "[options]",
     "the embedded default: broker, ingest and indexer in one process, Fashion-MNIST loaded, "
     "indexed and searched (demo.c)",
     demo_main},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: strata <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %-13s %s\n  %-13s   %s\n", cmds[i].name, cmds[i].args, "", cmds[i].what);
    fprintf(f, "\n'strata <command> --help' describes a command's options.\n"
               "\noptions:\n"
               "  --version     print the version and exit\n"
               "  --help        print this help and exit\n"
               "\nexit codes: 0 success, 1 runtime failure or corruption found, 2 bad usage or "
               "bad input\n");
}

int cmd_usage_error(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "strata %s: ", name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'strata %s --help')\n", name);
    va_end(ap);
    return 2;
}

int cmd_check_config(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: strata check-config FILE\n\n"
               "Validates a strata YAML configuration (SPEC.md §6) like `nginx -t`: prints\n"
               "FILE:LINE:COL: message for each error.\n\n"
               "exit codes: 0 valid, 2 invalid or unreadable\n");
        return 0;
    }
    if (argc != 2)
        return cmd_usage_error("check-config", "expects exactly one FILE");
    return cfg_check_main(argv[1], stdout, stderr);
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
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].main(argc - 1, argv + 1);
    fprintf(stderr, "strata: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
