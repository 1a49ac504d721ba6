#!/usr/bin/python3
"""Recall@10 vs single-thread QPS from bench/ann/run's all.csv: plot.py IN.csv OUT.png

Left: HNSW (strata vs hnswlib). Right: IVF-PQ (strata vs FAISS, 8-bit and 4-bit fast-scan)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
engines = sorted({r["engine"] for r in rows})
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, family, title in (
    (axes[0], "hnsw", "HNSW, M=16, ef_construction=200"),
    (axes[1], "ivf", "IVF-PQ, nlist=256, re-rank 100"),
):
    for engine in engines:
        if family not in engine:
            continue
        pts = sorted((float(r["recall"]), float(r["qps"])) for r in rows if r["engine"] == engine)
        style = ("o-" if engine.startswith("strata") else "s--")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=engine)
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (1 thread)")
    ax.set_yscale("log")
    ax.set_xlim(left=0.92)
    ax.grid(True, which="both", alpha=0.3)
    ax.axvline(0.95, color="grey", lw=0.8)
    ax.axvline(0.99, color="grey", lw=0.8)
    ax.set_title("Fashion-MNIST 60k x 784: " + title)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
