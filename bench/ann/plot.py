#!/usr/bin/python3
"""Recall@10 vs single-thread QPS from bench_ann's --csv output: plot.py IN.csv OUT.png"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
fig, ax = plt.subplots(figsize=(7, 4.5))
for engine, style in (("strata-hnsw", "o-"), ("hnswlib", "s--")):
    pts = sorted((float(r["recall"]), float(r["qps"])) for r in rows if r["engine"] == engine)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=engine)
ax.set_xlabel("recall@10")
ax.set_ylabel("queries per second (1 thread)")
ax.set_yscale("log")
ax.set_xlim(left=0.92)
ax.grid(True, which="both", alpha=0.3)
ax.axvline(0.95, color="grey", lw=0.8)
ax.axvline(0.99, color="grey", lw=0.8)
ax.set_title("Fashion-MNIST 60k x 784, M=16, ef_construction=200")
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
