"""
Freshness under load (issue 17): how long after it is produced a record is found by a strong
search, and by an indexed one, while the ingest node takes a steady load of 0 %, 50 % and 90 %
of the maximum rate measured in the same run, through the real daemons and brokers.

1. The maximum: BACKLOG records are produced before strata-ingest starts; the rate is the
   records it applies per second while working through them (strata_ingest_records_total on
   its /metrics, from its first record to the last). The run then waits until the indexer has
   indexed every window, so the phases start from a quiet system.
2. Each phase: a producer thread sends records at the phase's share of that rate (100 per
   message, JSON with vector_b64, no ts: the message timestamp is the event time) while a probe
   record goes out every PROBE_MS on a producer of its own (linger 0). A poller searches for
   each probe (k=1, its own vector, its time range) with consistency strong until found, then
   indexed until found. Latencies are from just before the probe's produce call to the search
   response that has it. After the phase a trickle (one record per 100 ms) keeps the watermark
   moving, so the last windows seal, until every probe is indexed or the deadline passes.

  fresh_load.py --build BUILD --out DIR --kafka HOST:PORT --nats URL [--quick]

bench/fresh/run starts the brokers; results in DIR/fresh.md and DIR/fresh.csv.
"""
import base64
import csv
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from strata_bench import (Daemons, Failed, arg_parser, create_topic, http,  # noqa: E402
                          main_guard, metric, percentile, wait_for)

PER_MSG = 100


def log(*a):
    print("fresh_load:", *a, file=sys.stderr, flush=True)


class Load:
    """Sends records at rate/s in messages of PER_MSG until stopped; counts what it sent."""

    def __init__(self, producer, topic, pool, rate, tag):
        self.p, self.topic, self.pool, self.rate, self.tag = producer, topic, pool, rate, tag
        self.sent = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.secs = 0.0

    def message(self, n0):
        recs = ",".join(f'{{"id":"{self.tag}{n}","vector_b64":"{self.pool[n % len(self.pool)]}"}}'
                        for n in range(n0, n0 + PER_MSG))
        return ('{"collection":"load","records":[' + recs + "]}").encode()

    def run(self):
        t0 = time.time()
        while not self.stop.is_set():
            due = int((time.time() - t0) * self.rate)
            while self.sent + PER_MSG <= due and not self.stop.is_set():
                try:
                    self.p.produce(self.topic, self.message(self.sent))
                except BufferError:  # the producer's queue is full: the rate is not reached
                    self.p.poll(0.01)
                    continue
                self.sent += PER_MSG
                self.p.poll(0)
            time.sleep(0.002)
        self.secs = time.time() - t0
        self.p.flush(60)


def main():
    ap = arg_parser()
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--backlog", type=int, default=0, help="records (default 400000; 40000 quick)")
    ap.add_argument("--seconds", type=float, default=0, help="per phase (default 10; 3 quick)")
    ap.add_argument("--loads", default="0,0.5,0.9")
    ap.add_argument("--probe-ms", type=float, default=50)
    a = ap.parse_args()
    backlog = a.backlog or (40000 if a.quick else 400000)
    secs = a.seconds or (3 if a.quick else 10)
    loads = [float(x) for x in a.loads.split(",")]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from confluent_kafka import Producer

    rng = np.random.default_rng(7)
    pool = [base64.b64encode(v.astype("<f4").tobytes()).decode()
            for v in rng.standard_normal((1000, a.dim), dtype=np.float32)]
    topic = f"load-{os.getpid()}"
    create_topic(a.kafka, topic)
    bulk = Producer({"bootstrap.servers": a.kafka, "linger.ms": 20, "message.max.bytes": 8 << 20,
                     "queue.buffering.max.kbytes": 1 << 20})
    t = time.time()
    pre = Load(bulk, topic, pool, 0, "b")
    for n in range(0, backlog, PER_MSG):
        while True:
            try:
                bulk.produce(topic, pre.message(n))
                break
            except BufferError:
                bulk.poll(0.05)
        bulk.poll(0)
    if bulk.flush(120) != 0:
        raise Failed("backlog: messages left unflushed")
    log(f"backlog of {backlog} records produced in {time.time() - t:.1f} s")

    d = Daemons(a.build, out / f"fresh-run-{os.getpid()}", a.kafka, a.nats,
                [f"{{name: load, dim: {a.dim}, metric: l2, topic: {topic}, window: 2s, "
                 "grace: 200ms, max_lateness: 1m, index: {type: hnsw, m: 16, ef_construction: 100}}"],
                node_id="fresh-bench")
    rows = []
    try:
        iport = d.start_ingest()
        d.start_indexer()
        base = d.base("load")

        # 1. The maximum ingest rate, from the ingest node's own count.
        def applied():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{iport}/metrics", timeout=10) as r:
                    text = r.read().decode()
            except OSError:
                return None
            return metric(text, "strata_ingest_records_total", 'collection="load"')
        samples = []

        def through():
            v = applied()
            if v is not None and v > 0:
                samples.append((time.time(), v))
            return v is not None and v >= backlog
        wait_for("the backlog applied", 120 if a.quick else 600, through, 0.02)
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        if len(samples) < 5 or c1 - c0 < backlog / 2:
            raise Failed(f"the backlog was applied too fast to measure ({len(samples)} samples "
                         f"of the count, {c1 - c0:.0f} records between the first and the last): "
                         "raise --backlog")
        max_rate = (c1 - c0) / (t1 - t0)
        log(f"maximum ingest rate {max_rate:.0f} records/s ({c1 - c0:.0f} records in "
            f"{t1 - t0:.2f} s)")

        # A trickle moves the watermark past the backlog's windows; they seal and are indexed.
        trickle = Producer({"bootstrap.servers": a.kafka, "linger.ms": 0})
        tk = [0]

        def quiet():
            trickle.produce(topic, ('{"collection":"load","records":[{"id":"q%d",'
                                    '"vector_b64":"%s"}]}' % (tk[0], pool[0])).encode())
            trickle.poll(0)
            tk[0] += 1
            st, ws = http("GET", base + "/windows")
            return (st == 200 and sum(w["records"] for w in ws if w["state"] == "indexed") >=
                    backlog and all(w["state"] in ("indexed", "open") for w in ws))
        tq = time.time()
        wait_for("every window of the backlog indexed", 180 if a.quick else 900, quiet, 0.1)
        trickle.flush(30)
        log(f"backlog indexed {time.time() - tq:.1f} s later")
        probe_vec = rng.standard_normal((100000, a.dim), dtype=np.float32)
        d.wait_strong_ready("load", [float(x) for x in probe_vec[0]])

        # 2. The phases.
        nprobe = 0
        for li, share in enumerate(loads):
            prod = Producer({"bootstrap.servers": a.kafka, "linger.ms": 5,
                             "message.max.bytes": 8 << 20})
            probe_p = Producer({"bootstrap.servers": a.kafka, "linger.ms": 0})
            load = Load(prod, topic, pool, share * max_rate, f"l{li}-")
            if share > 0:
                load.t.start()
            probes = []  # [id, vector, t0, strong_s, indexed_s]
            took = []  # the strong searches' own time (took_ms), for the reading
            lock = threading.Lock()
            done = threading.Event()

            def poller(stage):
                # One thread per stage, so that probes waiting to be indexed (many, under load)
                # do not delay the first strong search of a new one. One search at a time per
                # stage, and sweeps paced (strong: 2 ms apart; indexed: 100 ms, its resolution)
                # so that the probing does not take the cores the load needs.
                col = 3 if stage == "strong" else 4
                pace = 0.002 if stage == "strong" else 0.1
                while not done.is_set():
                    t_sweep = time.time()
                    with lock:
                        pending = [p for p in probes
                                   if p[col] is None and (col == 3 or p[3] is not None)]
                    for p in pending:
                        ms = int(p[2] * 1000)
                        # the message timestamp (its event time) is taken in produce(): at
                        # or just after t0; the range keeps the search to one or two windows
                        st, r = http("POST", base + "/search",
                                     {"vector": p[1], "k": 1, "consistency": stage,
                                      "from_ts": ms - 100, "to_ts": ms + 2000,
                                      "include_meta": False})
                        if st == 200 and stage == "strong":
                            took.append(r["took_ms"])
                        if st == 200 and r["hits"] and r["hits"][0]["id"] == p[0]:
                            el = time.time() - p[2]
                            with lock:
                                p[col] = el
                    time.sleep(max(0.0, pace - (time.time() - t_sweep)))
            pts = [threading.Thread(target=poller, args=(st,), daemon=True)
                   for st in ("strong", "indexed")]
            for pt in pts:
                pt.start()
            t_phase = time.time()
            while time.time() - t_phase < secs:
                v = [float(x) for x in probe_vec[nprobe]]
                pid = f"probe-{nprobe}"
                nprobe += 1
                t0 = time.time()
                probe_p.produce(topic, ('{"collection":"load","records":[{"id":"%s","vector_b64":"%s"}]}'
                                        % (pid, base64.b64encode(
                                            np.asarray(v, "<f4").tobytes()).decode())).encode())
                probe_p.poll(0)
                with lock:
                    probes.append([pid, v, t0, None, None])
                time.sleep(max(0.0, a.probe_ms / 1000 - (time.time() - t0)))
            load.stop.set()
            if share > 0:
                load.t.join()
            achieved = load.sent / load.secs if load.secs > 0 else 0.0
            # The trickle: windows seal only when newer records move the watermark.
            deadline = time.time() + (30 if a.quick else 60)
            k = 0
            while time.time() < deadline:
                with lock:
                    left = sum(p[4] is None for p in probes)
                if left == 0:
                    break
                probe_p.produce(topic, ('{"collection":"load","records":[{"id":"t%d-%d",'
                                        '"vector_b64":"%s"}]}' % (li, k, pool[0])).encode())
                probe_p.poll(0)
                k += 1
                time.sleep(0.1)
            done.set()
            for pt in pts:
                pt.join()
            prod.flush(30)
            probe_p.flush(30)
            s_lat = [p[3] * 1000 for p in probes if p[3] is not None]
            i_lat = [p[4] * 1000 for p in probes if p[4] is not None]
            row = {"load": share, "target_rec_s": round(share * max_rate),
                   "achieved_rec_s": round(achieved), "probes": len(probes),
                   "strong_found": len(s_lat),
                   "strong_p50_ms": percentile(s_lat, 0.5), "strong_p99_ms": percentile(s_lat, 0.99),
                   "indexed_found": len(i_lat),
                   "indexed_p50_ms": percentile(i_lat, 0.5),
                   "indexed_p99_ms": percentile(i_lat, 0.99),
                   "strong_search_p50_ms": percentile(took, 0.5),
                   "strong_search_p99_ms": percentile(took, 0.99)}
            rows.append(row)
            log(f"load {share:.0%}: strong p50 {row['strong_p50_ms']:.1f} ms p99 "
                f"{row['strong_p99_ms']:.1f} ms; indexed p50 {row['indexed_p50_ms']:.0f} ms p99 "
                f"{row['indexed_p99_ms']:.0f} ms ({len(i_lat)}/{len(probes)} indexed)")
            if len(s_lat) < len(probes):
                raise Failed(f"load {share:.0%}: {len(probes) - len(s_lat)} probes never found "
                             "by a strong search (an acknowledged record must be)")
    finally:
        d.stop()

    with open(out / "fresh.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = [f"maximum ingest rate (reference, this run): {max_rate:.0f} records/s of {a.dim}-d "
          f"float32 as JSON with vector_b64, 100 per message, through strata-ingest working "
          f"through a backlog of {backlog} records",
          f"probes: one every {a.probe_ms:.0f} ms for {secs:.0f} s per load; windows of 2 s, "
          "grace 200 ms; HNSW (M=16, ef_construction=100) built per window by strata-indexer",
          "",
          "| load | target records/s | achieved | probes | strong p50 ms | strong p99 ms "
          "| indexed p50 ms | indexed p99 ms | indexed within the deadline "
          "| a strong search's took_ms p50 / p99 |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['load']:.0%} | {r['target_rec_s']} | {r['achieved_rec_s']} | "
                  f"{r['probes']} | {r['strong_p50_ms']:.1f} | {r['strong_p99_ms']:.1f} | "
                  f"{r['indexed_p50_ms']:.0f} | {r['indexed_p99_ms']:.0f} | "
                  f"{r['indexed_found']}/{r['probes']} | "
                  f"{r['strong_search_p50_ms']:.1f} / {r['strong_search_p99_ms']:.1f} |")
    (out / "fresh.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    main_guard("fresh_load", main)
