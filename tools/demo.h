/*
 * demo.h — `strata demo` (SPEC.md §9): see demo.c.
 */
#ifndef STRATA_DEMO_H
#define STRATA_DEMO_H

/* argv[0] is "demo". Returns the exit code. */
int demo_main(int argc, char **argv);

#endif
