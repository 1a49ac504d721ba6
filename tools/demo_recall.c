/*
 * demo_recall.c — judging search answers against exact search (demo_recall.h).
 */
#include "demo_recall.h"

#include <stdbool.h>
#include <stdlib.h>

#include "st_api.h"
#include "st_coding.h"
#include "st_distance.h"

/* The hit's id, or false when it is not a uint64 id (an integer, or a string of digits). */
static bool hit_id(json_t *jid, uint64_t *out)
{
    uint8_t be[8];
    uint32_t len;
    if (!st_api_json_id(true, jid, be, &len))
        return false;
    *out = st_get_be64(be);
    return true;
}

size_t demo_recall_hits(json_t *hits, const float *q, const float *base, size_t n, uint32_t dim,
                        const uint32_t *gt, float kth, size_t k)
{
    st_dist_fn l2 = st_kernels()->l2sq;
    uint64_t seen[1000]; /* k <= 1000 (SPEC.md §5) */
    if (k > 1000)
        k = 1000;
    size_t nseen = 0, ok = 0;
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h)
    {
        if (i >= k)
            break;
        uint64_t id;
        if (!hit_id(json_object_get(h, "id"), &id) || id >= n)
            continue;
        bool dup = false;
        for (size_t j = 0; j < nseen && !dup; j++)
            dup = seen[j] == id;
        if (dup)
            continue;
        seen[nseen++] = id;
        bool good = false;
        for (size_t j = 0; j < k && !good; j++)
            good = gt[j] == id;
        /* ties: as close as the k-th is as good, by the distance computed here */
        if (!good)
            good = l2(q, base + id * dim, dim) <= kth * (1 + 1e-5f) + 1e-3f;
        ok += good;
    }
    return ok;
}

size_t demo_probe_id(size_t p, size_t nprobes, size_t ntrain)
{
    return p * (ntrain / nprobes) % ntrain;
}

int64_t demo_first_window(int64_t now_ms, int windows, int64_t grace_ms)
{
    const int64_t hour = 3600 * 1000LL;
    /* Ending at this hour's start stranded the last window open whenever the demo ran in
     * an hour's first grace. The margin covers the seconds between this and the probes. */
    int64_t end = (now_ms - grace_ms - 5 * 60 * 1000LL) / hour * hour;
    return end - (int64_t)windows * hour;
}
