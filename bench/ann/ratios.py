#!/usr/bin/env python3
"""IVF-PQ, strata vs FAISS at FAISS's recall, from the CSVs bench/ann/run-kernels writes.

    bench/ann/ratios.py OUT_DIR [LEVEL ...]      (levels: avx2, avx512; default: those present)

For each kernel level and index (8-bit, 4-bit fast-scan) prints one table row: at every nprobe
FAISS ran, strata's batched QPS with re-ranking codes ("-rc"), interpolated linearly on its
recall-QPS curve at the recall FAISS reached there, divided by FAISS's QPS ("-" where FAISS's
recall is beyond strata's curve). Where strata's first point already exceeds FAISS's recall,
that point's QPS is used (strata is at least that fast there).

A run-kernels with REPEAT > 1 leaves strata-LEVEL.rN.csv and faiss-LEVEL.rN.csv, one pair a
round (the two engines alternating); each engine's QPS at a point is then its best round's,
as ann-benchmarks keeps each configuration's best run: a few seconds of another tenant's load
then cost one round, not the ratio.
"""
import csv
import os
import re
import sys


def load(paths):
    """engine -> {nprobe: (recall, best qps over the files)}; every round must have found the
    same recall at a point (the builds are deterministic), else one round's QPS would be paired
    with another's recall."""
    out = {}
    for p in paths:
        with open(p) as f:
            for r in csv.DictReader(f):
                pts = out.setdefault(r["engine"], {})
                n, rec, q = int(r["param"]), float(r["recall"]), float(r["qps"])
                old = pts.get(n)
                if old is not None and old[0] != rec:
                    sys.exit(f"bench/ann/ratios.py: {r['engine']} nprobe {n}: recall {rec} in "
                             f"{p}, {old[0]} in an earlier round")
                pts[n] = (rec, q if old is None else max(old[1], q))
    return out


def interp(curve, rec):
    pts = sorted(curve.values())
    if rec <= pts[0][0]:
        return pts[0][1]
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= rec <= r1:
            return q0 + (q1 - q0) * (rec - r0) / (r1 - r0) if r1 > r0 else max(q0, q1)
    return None


def files(d, engine, lv):
    """{round: path}: ENGINE-LEVEL.rN.csv, or ENGINE-LEVEL.csv as round 0."""
    pat = re.compile(re.escape(f"{engine}-{lv}") + r"\.r([0-9]+)\.csv$")
    rounds = {int(m.group(1)): os.path.join(d, f) for f in os.listdir(d)
              for m in [pat.match(f)] if m}
    one = os.path.join(d, f"{engine}-{lv}.csv")
    return rounds if rounds else ({0: one} if os.path.exists(one) else {})


def main():
    if len(sys.argv) < 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: bench/ann/ratios.py OUT_DIR [LEVEL ...]")
    d = sys.argv[1]
    levels = sys.argv[2:] or [lv for lv in ("avx512", "avx2") if files(d, "strata", lv)]
    for lv in levels:
        sf, ff = files(d, "strata", lv), files(d, "faiss", lv)
        if not sf or not ff:
            sys.exit(f"bench/ann/ratios.py: no strata or FAISS results for {lv} in {d}")
        if sorted(sf) != sorted(ff):
            sys.exit(f"bench/ann/ratios.py: {lv}: strata has rounds {sorted(sf)}, FAISS "
                     f"{sorted(ff)} (a run cut short?): best rounds would not be comparable")
        s, f = load(sf.values()), load(ff.values())
        kn = "AVX-512" if lv == "avx512" else "AVX2"
        for bits, fe, label in (("pq98x8", "faiss-ivf256-pq98x8", "8-bit"),
                                ("pq196x4", "faiss-ivf256-pq196x4fs", "4-bit fast-scan")):
            rc = s.get(f"strata-ivf256-{bits}-rc")
            if rc is None or fe not in f:
                continue
            ps = sorted(f[fe])
            vals = []
            for p in ps:
                rec, q = f[fe][p]
                ir = interp(rc, rec)
                vals.append(None if ir is None else ir / q)
            got = [v for v in vals if v is not None]
            cells = " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
            rng = f"{min(got):.2f}–{max(got):.2f}" if got else "-"
            if len(got) < len(vals):
                rng += f" ({len(got)} of {len(vals)})"
            print(f"| {kn} | {label} ({len(sf)} round{'s' if len(sf) > 1 else ''}) | "
                  f"nprobe {','.join(map(str, ps))} | {cells} | {rng} |")


if __name__ == "__main__":
    main()
