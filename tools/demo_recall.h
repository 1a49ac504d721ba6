/*
 * demo_recall.h — how `strata demo` (demo.c) judges a search answer against exact search.
 */
#ifndef STRATA_DEMO_RECALL_H
#define STRATA_DEMO_RECALL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * How many of the first k entries of hits (a search answer's "hits" array, ids as JSON
 * integers or decimal strings) are true nearest neighbours of query q among the n vectors of
 * base (row i is id i): an id among the exact top k gt[0..k), or, for ties (Fashion-MNIST
 * has duplicate images), an id whose exact distance to q — computed here from base, never
 * taken from the answer — is within kth, the exact k-th distance. Each id counts once; ids
 * outside [0, n) and unparsable ones count as misses.
 */
size_t demo_recall_hits(json_t *hits, const float *q, const float *base, size_t n, uint32_t dim,
                        const uint32_t *gt, float kth, size_t k);

/* The train image that latency probe p (of nprobes) produces again: distinct for every p as
 * long as ntrain >= nprobes, so each probe supersedes exactly one stored record. */
size_t demo_probe_id(size_t p, size_t nprobes, size_t ntrain);

/* Where the demo's data starts (ms, an hour's start): `windows` one-hour windows that end
 * more than grace_ms (plus a margin) before now_ms, so records with event time now — the
 * probes — move the watermark past the last one's end + grace and every window seals. */
int64_t demo_first_window(int64_t now_ms, int windows, int64_t grace_ms);

#endif
