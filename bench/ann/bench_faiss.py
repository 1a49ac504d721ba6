"""FAISS's IVF-PQ on the same data, parameters and ground truth as bench_ann's IVF-PQ rows.

Run by bench/ann/run with the interpreter of ~/.cache/strata/bench-venv (scripts/deps --bench:
PyPI faiss-cpu, which dispatches to its AVX2/AVX-512 build). Single-threaded (OpenMP 1).
Builds IndexIVFPQ (8-bit) and IndexIVFPQFastScan (4-bit), each under IndexRefineFlat with
k_factor = rerank / k (exact re-ranking of the same number of candidates as strata), and
searches the whole query set in one call per nprobe, best of three.

  bench_faiss.py --gt FILE [--n 60000] [--queries 10000] [--nlist 256] [--pq8-m 98]
                 [--pq4-m 196] [--rerank 100] [--nprobe 1,2,4,...] [--csv FILE]
"""
import argparse
import gzip
import struct
import sys
import time

import faiss
import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
K = 10


def load_idx3(path):
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            sys.exit(f"{path}: not an idx3-ubyte file")
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows * cols).astype(np.float32)


def rotate(count, *sets):
    """bench_ann --rotate: x -= 2 <v, x> v for count unit vectors v from one xorshift."""
    st, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    d = sets[0].shape[1]
    for _ in range(count):
        v = np.empty(d)
        for j in range(d):
            st ^= (st << 13) & mask
            st ^= st >> 7
            st ^= (st << 17) & mask
            v[j] = (st >> 11) / 9007199254740992.0 * 2 - 1
        v /= np.sqrt((v * v).sum())
        for x in sets:
            x[:] = (x - 2 * np.outer(x.astype(np.float64) @ v, v)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gt", required=True, help="ground truth written by bench_ann (u32 nq x 10)")
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--pq8-m", type=int, default=98)
    ap.add_argument("--pq4-m", type=int, default=196)
    ap.add_argument("--rerank", type=int, default=100)
    ap.add_argument("--nprobe", default="1,2,4,6,8,12,16,24,32,48,64")
    ap.add_argument("--csv")
    ap.add_argument("--rotate", type=int, default=0,
                    help="N random reflections of base and queries, the ones bench_ann --rotate "
                    "applies (distances kept, values no longer bytes); --gt is then its .rotN file")
    ap.add_argument("--refine", default="flat",
                    help="flat (exact re-ranking, IndexRefineFlat), sq8 (IndexRefine over an "
                    "8-bit scalar quantizer: FAISS's own cheaper re-rank), or both")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="one query per search call (as a search endpoint serves them) instead "
                    "of the whole set in one call; adds Python's per-call cost (~us)")
    a = ap.parse_args()

    faiss.omp_set_num_threads(1)
    xb = np.ascontiguousarray(load_idx3(f"{DATA}/train-images-idx3-ubyte.gz")[: a.n])
    xq = np.ascontiguousarray(load_idx3(f"{DATA}/t10k-images-idx3-ubyte.gz")[: a.queries])
    nq, d = xq.shape
    if a.rotate:
        rotate(a.rotate, xb, xq)
    gt = np.fromfile(a.gt, dtype=np.uint32)
    if gt.size != nq * K:
        sys.exit(f"{a.gt}: {gt.size} ids, expected {nq * K} (run bench_ann with the same --n/--queries)")
    gt = gt.reshape(nq, K)
    print(f"FAISS {faiss.__version__} ({faiss.get_compile_options().strip()}), {xb.shape[0]} x {d}, "
          f"{nq} queries, k={K}, 1 thread", flush=True)

    def recall(ids):
        return sum(len(set(ids[i]) & set(gt[i])) for i in range(nq)) / (nq * K)

    out = open(a.csv, "w") if a.csv else None
    if out:
        out.write("engine,param,recall,qps\n")
    refines = ("flat", "sq8") if a.refine == "both" else (a.refine,)
    for nbits, m, refine in ((nb, m, r) for nb, m in ((8, a.pq8_m), (4, a.pq4_m)) for r in refines):
        if m == 0:
            continue  # --pq8-m 0 / --pq4-m 0: skip that variant
        quantizer = faiss.IndexFlatL2(d)
        if nbits == 8:
            ivf = faiss.IndexIVFPQ(quantizer, d, a.nlist, m, 8)
            name = f"faiss-ivf{a.nlist}-pq{m}x8"
        else:
            ivf = faiss.IndexIVFPQFastScan(quantizer, d, a.nlist, m, 4)
            name = f"faiss-ivf{a.nlist}-pq{m}x4fs"
        if a.one_at_a_time:
            name += "-1q"
        if refine == "sq8":
            name += "-sq8r"
            index = faiss.IndexRefine(ivf, faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit))
        else:
            index = faiss.IndexRefineFlat(ivf)
        index.k_factor = a.rerank / K
        t0 = time.perf_counter()
        index.train(xb)
        index.add(xb)
        build = time.perf_counter() - t0
        mem = faiss.serialize_index(ivf).nbytes
        print(f"{name}: build (1 thread) {build:.1f} s, index memory {mem / 1048576:.1f} MiB "
              f"(+ raw vectors for re-ranking), rerank {a.rerank}", flush=True)
        print(f"{'nprobe':>8} | recall / QPS")
        for nprobe in (int(x) for x in a.nprobe.split(",")):
            ivf.nprobe = nprobe
            best, r = 1e30, 0.0
            for _ in range(3):
                t0 = time.perf_counter()
                if a.one_at_a_time:
                    ids = np.vstack([index.search(xq[i:i + 1], K)[1] for i in range(nq)])
                else:
                    _, ids = index.search(xq, K)
                best = min(best, time.perf_counter() - t0)
                r = recall(ids)
            print(f"{nprobe:>8} | {r:.4f}  {nq / best:10.0f}", flush=True)
            if out:
                out.write(f"{name},{nprobe},{r:.5f},{nq / best:.1f}\n")
    if out:
        out.close()


if __name__ == "__main__":
    main()
