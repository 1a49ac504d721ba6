/*
 * cmd.h — the `strata` subcommands (SPEC.md §2). Each is one file, cmd_<name>.c, with a
 * main-like entry point: argv[0] is the subcommand's name, the return value the exit code
 * (0 ok, 1 runtime failure or corruption found, 2 bad usage or bad input). Each prints its
 * own --help. Adding one is a file and a line in strata.c's table.
 */
#ifndef CMD_H
#define CMD_H

int cmd_check_config(int argc, char **argv);
int cmd_produce(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_inspect(int argc, char **argv);

/* A usage error: prints "strata NAME: reason" and a pointer to --help; returns 2. */
int cmd_usage_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
