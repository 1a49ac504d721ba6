"""
Freshness under load (issue 17): how long after it is produced a record is found by a strong
search, and by an indexed one, while the ingest node takes a steady load of 0 %, 50 % and 90 %
of the maximum rate measured in the same run, through the real daemons and brokers.

1. The references. Catch-up: BACKLOG records are produced before strata-ingest starts; the
   rate at which it applies them (strata_ingest_records_total on its /metrics, first record to
   last), nothing else running. The maximum ingest rate, which the loads are shares of: then
   `strata produce` offers all it can for REF_SECONDS while the node ingests live and the
   indexer builds, as in the phases; the node's applied rate over the run's last two thirds.
   The run then waits until the indexer has indexed every window, so the phases start from a
   quiet system.
2. Each phase: `strata produce` sends the phase's share of that rate for SECONDS (binary
   frames, 100 records a message, ids after every earlier run's, no ts: the message timestamp
   is the event time) while a probe record goes out every PROBE_MS on a Python producer of
   its own (JSON, linger 0). A poller searches for
   each probe (k=1, its own vector, its time range) with consistency strong until found, then
   indexed until found (an indexed search only once /windows says an index serves the
   probe's window). Latencies are from just before the probe's produce call to the search
   response that has it. After the phase a trickle (one record per 100 ms) keeps the watermark
   moving, so the last windows seal, until every probe is indexed or the deadline passes.
3. The floor, beside the phases: a consumer that does nothing (plain_consumer.py, a process of
   its own, librdkafka's defaults) reads the same topic and times every message from its Kafka
   timestamp to librdkafka handing it over: how fresh any consumer on this machine can be.

  fresh_load.py --build BUILD --out DIR --kafka HOST:PORT --nats URL [--quick]

bench/fresh/run starts the brokers; results in DIR/fresh.md, DIR/fresh.csv (a row per load),
DIR/fresh-ref.csv (the references), DIR/fresh-probes.csv (every probe's latencies) and
DIR/fresh-searches.csv (every strong search: its took_ms, the time the client saw, what it scanned)
and DIR/fresh-plain.csv (every message the do-nothing consumer read, with its times).
"""
import base64
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from strata_bench import (Client, Daemons, Failed, arg_parser, create_topic,  # noqa: E402
                          death_prefix, http,
                          main_guard, metric, percentile, wait_for)

PER_MSG = 100
STRONG_WORKERS = 4
LIVE = []  # every Load (and the Sleeper) started: killed when the run ends, however it ends


def log(*a):
    print("fresh_load:", *a, file=sys.stderr, flush=True)


class Load:
    """`strata produce` of the pool as binary frames (PER_MSG records a message) at rate/s
    (0: as fast as it can), `count` records from id `first` on: a C producer, so that the load
    generator takes little of the cores the daemons need. stop() interrupts it (it still
    flushes what it read); records()/secs() are from its summary line."""

    def __init__(self, build, kafka, topic, pool, rate, count, first, log_path):
        cmd = [str(Path(build) / "tools" / "strata"), "produce", "--brokers", kafka,
               "--topic", topic, "--collection", "load", "--format", "binary",
               "--batch", str(PER_MSG), "--count", str(int(count)), "--start", str(int(first)),
               "--quiet", "-X", "linger.ms=5", str(pool)]
        if rate > 0:
            cmd[2:2] = ["--rate", f"{rate:.0f}"]
        self.log_path = log_path
        with open(log_path, "w") as lf:  # stopped with this process, even by SIGKILL
            self.p = subprocess.Popen(list(death_prefix()) + cmd, stdout=subprocess.PIPE, stderr=lf, text=True)
        LIVE.append(self)
        self.out = ""

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)

    def wait(self, timeout):
        try:
            self.out, _ = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failed(f"strata produce did not finish within {timeout:.0f} s "
                         f"(see {self.log_path})")
        m = re.search(r"produced (\d+) records in \d+ messages in ([0-9.]+) s", self.out)
        if m is None or self.p.returncode not in (0, 1):
            raise Failed(f"strata produce: exit {self.p.returncode}: {self.out} "
                         f"(see {self.log_path})")
        if self.p.returncode == 1 and "interrupted" not in Path(self.log_path).read_text():
            raise Failed(f"strata produce failed: see {self.log_path}")
        self.records, self.secs = int(m.group(1)), float(m.group(2))


# A sleeper that wakes every millisecond at real-time priority (SCHED_FIFO) when it may and
# logs each wake-up later than 5 ms: then nothing in the machine kept it from a core, so a gap
# is the machine itself stopped (the hypervisor, a non-preemptible kernel path), which no
# process here can help. Without the privilege it runs at normal priority and its gaps
# include waiting for a core.
SLEEPER = r"""
import os, sys, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    print("fifo", flush=True)
except OSError:
    print("normal", flush=True)
last = time.monotonic()
while True:
    time.sleep(0.001)
    now = time.monotonic()
    if now - last > 0.005:
        print(f"{time.time():.4f} {(now - last) * 1000:.2f}", flush=True)
    last = now
"""


class Sleeper:
    """SLEEPER in a process of its own (not under this one's GIL); gaps() -> [(start, end)]."""

    def __init__(self):
        self.p = subprocess.Popen(list(death_prefix()) + [sys.executable, "-c", SLEEPER],
                                  stdout=subprocess.PIPE, text=True)
        self.policy = self.p.stdout.readline().strip()
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for ln in self.p.stdout:
            self.lines.append(ln)

    def gaps(self):
        out = []
        for ln in list(self.lines):
            end, ms = ln.split()
            out.append((float(end) - float(ms) / 1000, float(end)))
        return out

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class PlainConsumer:
    """plain_consumer.py in a process of its own: the freshness floor, a consumer that does
    nothing. lags(t0, t1) -> ({probe: s}, [s]) for the messages stamped in [t0, t1)."""

    def __init__(self, kafka, topic, out):
        self.csv, ready = out / "fresh-plain.csv", out / "fresh-plain.ready"
        self.pos, self.got = 0, []  # how far rows() has read, and what
        ready.unlink(missing_ok=True)
        self.p = subprocess.Popen(list(death_prefix()) + [
            sys.executable, str(Path(__file__).with_name("plain_consumer.py")), kafka, topic,
            str(self.csv), str(ready)])
        LIVE.append(self)
        wait_for("the plain consumer assigned", 60, lambda: ready.exists() or
                 self.p.poll() is not None, 0.05)
        if self.p.poll() is not None:
            raise Failed(f"plain_consumer.py exited {self.p.returncode}")

    def rows(self):
        """The rows written so far, read on from where the last call stopped; a line the
        writer has not finished is left for the next call."""
        if self.p.poll() is not None:
            raise Failed(f"plain_consumer.py exited {self.p.returncode} during the run")
        with open(self.csv, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        done = data.rfind(b"\n") + 1
        self.pos += done
        for line in data[:done].decode().splitlines():
            part, _, ts, got, probe = (line.split(",") + [""] * 5)[:5]
            if part != "partition":  # the header
                self.got.append((int(ts) / 1000, float(got), probe))
        return self.got

    def caught_up(self, t, deadline_s=30):
        """Waits until it has read a message stamped at t or later (all before it read too:
        it reads each partition in order)."""
        wait_for("the plain consumer past the phase", deadline_s,
                 lambda: any(ts >= t for ts, _, _ in self.rows()), 0.1)

    def lags(self, t0, t1):
        """({probe id: when it was handed over, unix s}, [timestamp to handed over, s, of every
        message stamped in [t0, t1)])."""
        probes, lat = {}, []
        for ts, got, probe in self.rows():
            if probe:
                probes[probe] = got
            if t0 <= ts < t1:
                lat.append(got - ts)
        return probes, lat

    def kill(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


WAIT_CAUSES = ("window_create", "vector_log_create", "wal_roll", "vector_log_queue")


POLL_ACTIVITIES = ("kafka", "decode_wait", "write", "commit")
APPLY_LE = ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
            "+Inf")


GC_PAUSE = re.compile(r"^\[([^\]]+)\].*\bPause\b.*?([\d.]+)ms\s*$")


def broker_pauses():
    """The Kafka broker's stop-the-world GC pauses so far, [(start, end)] in Unix seconds,
    from its GC log (scripts/brokers writes BROKERS/kafka-gc.log; a restarted broker's earlier
    one is kafka-gc.log.0); None without one. A pause is logged when it ends, with its length;
    lines of another form are skipped."""
    d = os.environ.get("STRATA_BENCH_BROKERS")
    paths = [Path(d) / n for n in ("kafka-gc.log.0", "kafka-gc.log")] if d else []
    if not any(p.exists() for p in paths):
        return None
    out = []
    for path in (p for p in paths if p.exists()):
        for line in path.read_text(errors="replace").splitlines():
            m = GC_PAUSE.match(line)
            try:
                end = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
            except (AttributeError, ValueError):
                continue
            out.append((end - float(m.group(2)) / 1000, end))
    return out


def node_counters(text):
    """What a phase reads from the ingest node's /metrics text, so far: seconds its writes
    waited by cause (wait_*), seconds its polling thread spent by activity (poll_*), and its
    apply-lag histogram's cumulative counts (le_*: message timestamp to applied)."""
    if text is None:
        raise Failed("ingest /metrics did not answer")
    series = ([(f"wait_{c}", "strata_write_wait_seconds_total", f'cause="{c}"')
               for c in WAIT_CAUSES] +
              [(f"poll_{c}", "strata_ingest_poll_seconds_total", f'activity="{c}"')
               for c in POLL_ACTIVITIES] +
              [(f"le_{le}", "strata_ingest_apply_lag_seconds_bucket",
                f'collection="load",le="{le}"') for le in APPLY_LE] +
              search_series("ingest"))
    return {k: metric(text, name, labels) or 0.0 for k, name, labels in series}


def search_series(who):
    """A daemon's searches (strata_search_seconds): how many, and how many within 50 ms."""
    return [(f"search_{who}_all", "strata_search_seconds_count", ""),
            (f"search_{who}_le50", "strata_search_seconds_bucket", 'le="0.05"')]


# What strata-indexer builds per window: a description for the report, the config mapping.
# IVF-PQ: 4-bit fast-scan with re-ranking; each window adopts the quantizer of the one before
# when it fits (indexer/README.md), so a window's build is mostly encoding.
INDEXES = {
    "hnsw": ("HNSW (M=16, ef_construction=100)", "{type: hnsw, m: 16, ef_construction: 100}"),
    "ivfpq": ("IVF-PQ (nlist 256, m 96, 4-bit fast-scan)",
              "{type: ivfpq, nlist: 256, m: 96, nbits: 4}"),
}


def main():
    ap = arg_parser()
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--backlog", type=int, default=0, help="records (default 200000; 40000 quick)")
    ap.add_argument("--ref-seconds", type=float, default=0,
                    help="the sustained maximum's run (default 12; 4 quick)")
    ap.add_argument("--seconds", type=float, default=0, help="per phase (default 10; 3 quick)")
    ap.add_argument("--loads", default="0,0.5,0.9")
    ap.add_argument("--strong-pace-ms", type=float, default=2,
                    help="least time between two strong searches of one worker (default 2)")
    ap.add_argument("--append-times", action="store_true",
                    help="topic with LogAppendTime: split each probe's latency at the broker's "
                         "append (event times are then the broker's)")
    ap.add_argument("--probe-ms", type=float, default=50)
    ap.add_argument("--rate", type=float, default=0,
                    help="records/s that the loads are shares of, instead of the maximum measured "
                    "(for comparing configurations at one load; the maximum is still reported)")
    ap.add_argument("--index", choices=sorted(INDEXES), default="hnsw",
                    help="what strata-indexer builds per window (default hnsw: " +
                    INDEXES["hnsw"][0] + "; ivfpq: " + INDEXES["ivfpq"][0] + ")")
    ap.add_argument("--no-floor", action="store_true",
                    help="without the do-nothing consumer beside the phases (plain_consumer.py), "
                    "e.g. to see what it costs the machine")
    ap.add_argument("--cpu-weights", default="",
                    help="e.g. ingest=100,indexer=20: each daemon in a CPU cgroup of that weight, "
                    "as systemd's CPUWeight= puts its unit (needs root and a writable cgroup cpu "
                    "controller)")
    a = ap.parse_args()
    try:
        weights = {k: int(v) for k, v in (x.split("=") for x in a.cpu_weights.split(",") if x)}
    except ValueError:
        ap.error("--cpu-weights: NAME=WEIGHT[,NAME=WEIGHT], NAME ingest or indexer")
    if set(weights) - {"ingest", "indexer"}:
        ap.error("--cpu-weights: NAME is ingest or indexer")
    if a.index == "ivfpq" and a.dim % 96:
        ap.error(f"--index ivfpq has m 96 sub-quantizers, which must divide --dim ({a.dim})")
    backlog = a.backlog or (40000 if a.quick else 200000)
    ref_secs = a.ref_seconds or (4 if a.quick else 12)
    secs = a.seconds or (3 if a.quick else 10)
    loads = [float(x) for x in a.loads.split(",")]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Producer

    rng = np.random.default_rng(7)
    pool = out / "pool.npy"  # what the load sends, again and again (ids count on)
    np.save(pool, rng.standard_normal((10000, a.dim), dtype=np.float32))
    pool0 = base64.b64encode(np.load(pool)[0].astype("<f4").tobytes()).decode()
    topic = f"load-{os.getpid()}"
    # --append-times: the broker stamps each message when it appends it (LogAppendTime), so
    # each probe's way splits into produce → appended (its delivery report) and appended →
    # searchable; the ingest node's apply lag then starts at the append too.
    create_topic(a.kafka, topic, config={"message.timestamp.type": "LogAppendTime"}
                 if a.append_times else None)
    next_id = [0]  # the next load record's id: every run of the producer starts after the last

    def load(rate, count, tag):
        ld = Load(a.build, a.kafka, topic, pool, rate, count, next_id[0],
                  out / f"produce-{tag}.log")
        next_id[0] += int(count)
        return ld
    t = time.time()
    pre = load(0, backlog, "backlog")
    pre.wait(600)
    log(f"backlog of {backlog} records produced in {time.time() - t:.1f} s")

    d = Daemons(a.build, out / f"fresh-run-{os.getpid()}", a.kafka, a.nats,
                [f"{{name: load, dim: {a.dim}, metric: l2, topic: {topic}, window: 2s, "
                 f"grace: 200ms, max_lateness: 1m, index: {INDEXES[a.index][1]}}}"],
                node_id="fresh-bench", cpu_weights=weights)
    rows = []
    probe_rows = []
    searches = []  # every strong search's own figures, for finding what a slow one did
    appended = {}  # probe id -> the broker's append time, s (--append-times)
    try:
        iport = d.start_ingest()
        d.start_indexer()
        base = d.base("load")

        def metrics(port=None):  # a daemon's /metrics text (the ingest node's by default)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port or iport}/metrics",
                                            timeout=10) as r:
                    return r.read().decode()
            except OSError:
                return None

        def indexer_counters():  # its searches, for the phase's strong searches over 50 ms
            text = metrics(d.indexer_port)
            if text is None:
                raise Failed("indexer /metrics did not answer")
            return {k: metric(text, name, labels) or 0.0
                    for k, name, labels in search_series("indexer")}

        def applied():
            text = metrics()
            return None if text is None else metric(text, "strata_ingest_records_total",
                                                    'collection="load"')

        # 1a. Catch-up: the rate at which the node works through a backlog it alone is busy with.
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
        catchup = (c1 - c0) / (t1 - t0)
        log(f"catch-up rate {catchup:.0f} records/s ({c1 - c0:.0f} records in {t1 - t0:.2f} s)")

        # 1b. The maximum ingest rate, the reference: the producer as fast as it can while the
        # node ingests live (the broker taking the produce load and the indexer building, as in
        # the phases); the rate the node applies records at over the run's last two thirds.
        ld = load(0, 1 << 40, "max")
        samples = []
        t_ref = time.time()
        while time.time() - t_ref < ref_secs:
            v = applied()
            if v is not None:
                samples.append((time.time() - t_ref, v))
            time.sleep(0.1)
        ld.stop()
        ld.wait(120)
        late = [x for x in samples if x[0] >= ref_secs / 3]
        if len(late) < 5:
            raise Failed(f"{len(late)} samples of the applied count in the reference run")
        applied_rate = max_rate = (late[-1][1] - late[0][1]) / (late[-1][0] - late[0][0])
        offered = ld.records / ld.secs if ld.secs > 0 else 0.0
        total = next_id[0] = backlog + ld.records  # the run was stopped: what it sent
        log(f"maximum ingest rate {max_rate:.0f} records/s sustained (the producer offered "
            f"{offered:.0f} records/s; catch-up {catchup:.0f})")
        limit = "node"
        if offered < max_rate * 1.05:
            # The producer offered about what the node took, or less. What the node applied
            # over the last two thirds then includes catching up on the first third's lag
            # (2026-11-27: 100,717 records/s "sustained" against 70,826 offered, and the 50 %
            # phase, at 50,000, was more than the node sustains), so the reference is the
            # lesser of the two, and may be below the node's own limit.
            limit = "producer" if offered <= max_rate else "producer or node"
            max_rate = min(max_rate, offered)
            log(f"the producer offered no more than 1.05x what the node took: the reference is "
                f"the lesser, {max_rate:.0f} records/s (the node's own limit may be higher)")
        if max_rate < 100:
            raise Failed(f"the reference run: the node applied {applied_rate:.0f} records/s, "
                         f"the producer offered {offered:.0f}")
        ref_rate = a.rate or max_rate

        # A trickle moves the watermark past the windows so far; they seal and are indexed.
        trickle = Producer({"bootstrap.servers": a.kafka, "linger.ms": 0})
        tk = [0]

        def quiet():
            trickle.produce(topic, ('{"collection":"load","records":[{"id":"q%d",'
                                    '"vector_b64":"%s"}]}' % (tk[0], pool0)).encode())
            trickle.poll(0)
            tk[0] += 1
            st, ws = http("GET", base + "/windows")
            return (st == 200 and sum(w["records"] for w in ws if w["state"] == "indexed") >=
                    total and all(w["state"] in ("indexed", "open") for w in ws))
        tq = time.time()
        # (builds under indexer.build_cpu take longer: up to 1200 s then, quick or not)
        wait_for("every window so far indexed",
                 300 if a.quick and not os.environ.get("STRATA_BENCH_BUILD_CPU") else 1200,
                 quiet, 0.1)
        trickle.flush(30)
        log(f"backlog and reference run indexed {time.time() - tq:.1f} s later")
        probe_vec = rng.standard_normal((100000, a.dim), dtype=np.float32)
        d.wait_strong_ready("load", [float(x) for x in probe_vec[0]])

        # 2. The phases.
        nprobe = 0
        sleeper = Sleeper()
        LIVE.append(sleeper)
        plain = None if a.no_floor else PlainConsumer(a.kafka, topic, out)

        def delivered(err, msg, pid):  # --append-times: the broker's stamp of each probe
            ty, ts = msg.timestamp()
            if err is None and ty == TIMESTAMP_LOG_APPEND_TIME and ts > 0:
                appended[pid] = ts / 1000

        for li, share in enumerate(loads):
            probe_p = Producer({"bootstrap.servers": a.kafka, "linger.ms": 0})
            # the phase's records at its rate, for its time (it ends by itself, in time)
            rate = share * ref_rate
            ld = load(rate, rate * secs, f"load{li}") if rate >= 1 else None
            probes = []  # [id, vector, t0, strong_s, indexed_s, last searched]
            took = []  # the strong searches' own time (took_ms), for the reading
            lock = threading.Lock()
            done = threading.Event()

            busy = set()  # probes a strong worker is searching for right now
            reconnects = [0]  # keep-alive connections the daemon closed, opened again
            errors = []  # searches that failed (the run fails on any)

            def poller(stage):
                # Strong: STRONG_WORKERS threads, each taking the oldest pending probe that no
                # other worker holds, one search, then the next: a probe that became visible
                # waits for one search, not for a sweep over every pending probe (a sequential
                # sweep measured its own queue under load: seconds with ~30 probes pending and
                # searches slowed by the busy cores). Each worker paced to a search per
                # --strong-pace-ms at most, so that only probes waiting add searches. Indexed: one thread sweeping every 100 ms (its resolution).
                col = 3 if stage == "strong" else 4
                pace = a.strong_pace_ms / 1000 if stage == "strong" else 0.1
                client = Client(base)  # a keep-alive connection of this worker's own
                while not done.is_set():
                    t_sweep = time.time()
                    indexed = None  # the indexed poller: windows an index serves, [(start, end)]
                    if stage == "indexed":
                        with lock:  # nothing to look up while no probe awaits an index
                            awaiting = any(p[3] is not None and p[4] is None for p in probes)
                        indexed = windows_indexed(client) if awaiting else []
                    with lock:
                        pending = [p for p in probes
                                   if p[col] is None and (col == 3 or p[3] is not None)
                                   and id(p) not in busy
                                   and (indexed is None or near_indexed(p, indexed))]
                        if stage == "strong":  # the one searched least recently (never first)
                            pending = sorted(pending, key=lambda p: p[5])[:1]
                            busy.update(id(p) for p in pending)
                    for p in pending:
                        try:
                            t_req = time.time()
                            st, r = client.post("/search", p[6][stage])
                            now = time.time()
                            hit = st == 200 and r["hits"] and r["hits"][0]["id"] == p[0]
                            if st == 200 and stage == "strong":
                                took.append(r["took_ms"])
                                searches.append({
                                    "load": share, "start_unix_s": round(t_req, 4),
                                    "took_ms": r["took_ms"],
                                    "client_ms": round((now - t_req) * 1000, 2),
                                    "fresh_records_scanned": r.get("fresh_records_scanned"),
                                    "segments_searched": r.get("segments_searched"),
                                    "windows_searched": r.get("windows_searched")})
                            if st != 200:
                                errors.append(f"{stage} search: HTTP {st}")
                        except (OSError, ValueError, KeyError, TypeError) as e:
                            now, hit = time.time(), False
                            errors.append(f"{stage} search: {e!r}")
                        finally:
                            with lock:
                                p[5] = time.time()
                                busy.discard(id(p))
                        if hit:
                            with lock:
                                p[col] = now - p[2]
                    time.sleep(max(0.0, pace - (time.time() - t_sweep)))
                client.close()
                with lock:
                    reconnects[0] += client.reconnects
            def windows_indexed(client):
                try:
                    st, ws = client.get("/windows")
                except OSError as e:
                    st, ws = 0, repr(e)
                if st != 200:
                    errors.append(f"GET windows: HTTP {st}: {ws}")
                    return []
                # a window being indexed again may have a part an index serves
                return [(w["start"], w["end"]) for w in ws if w["state"] == "indexed"
                        or any(x.get("state") == "indexed" for x in w.get("parts", []))]

            def near_indexed(p, indexed):
                # An indexed search only for a probe whose window an index serves (its event
                # time the broker's append when known, else its produce time; 50 ms either
                # side for the clocks): searching every pending probe every sweep made the
                # indexed poller 95 % of the indexer's searches (12,000 in a 20 s phase against
                # 655 strong), the daemon and this harness busy with searches that could not
                # hit. A probe searched and missed is searched again next sweep.
                ts = appended.get(p[0], p[2]) * 1000
                return any(b - 50 <= ts < e + 50 for b, e in indexed)

            def guarded(stage):  # a poller that dies fails the run, never silently
                try:
                    poller(stage)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{stage} poller died: {e!r}")
            counters0 = node_counters(metrics())
            idx0 = indexer_counters()
            pts = [threading.Thread(target=guarded, args=(st,), daemon=True)
                   for st in ["strong"] * STRONG_WORKERS + ["indexed"]]
            for pt in pts:
                pt.start()
            t_phase = time.time()
            while time.time() - t_phase < secs:
                v = [float(x) for x in probe_vec[nprobe]]
                pid = f"probe-{nprobe}"
                nprobe += 1
                msg = ('{"collection":"load","records":[{"id":"%s","vector_b64":"%s"}]}'
                       % (pid, base64.b64encode(np.asarray(v, "<f4").tobytes()).decode())).encode()
                # its searches' requests, encoded once and before the clock starts: the range
                # is from 100 ms before (the message timestamp, its event time, is taken in
                # produce(), just after) to 2 s after, one or two windows
                ms = int(time.time() * 1000)
                bodies = {st: json.dumps({"vector": v, "k": 1, "consistency": st,
                                          "from_ts": ms - 100, "to_ts": ms + 2000,
                                          "include_meta": False}).encode()
                          for st in ("strong", "indexed")}
                t0 = time.time()
                probe_p.produce(topic, msg,
                                on_delivery=lambda err, msg, pid=pid: delivered(err, msg, pid))
                probe_p.poll(0)
                with lock:  # [5]: last searched, [6]: the requests
                    probes.append([pid, v, t0, None, None, 0.0, bodies])
                time.sleep(max(0.0, a.probe_ms / 1000 - (time.time() - t0)))
            achieved = 0.0
            if ld is not None:
                ld.wait(secs + 120)
                achieved = ld.records / ld.secs if ld.secs > 0 else 0.0
            # where the node's writes waited during the phase (strata_write_wait_seconds_total)
            # the node's counters over the phase: where its writes waited, where its polling
            # thread's time went, and how late after their timestamps its messages were applied
            # (load and probes alike)
            counters1 = node_counters(metrics())
            idx1 = indexer_counters()
            t_phase_end = time.time()
            delta = {k: counters1[k] - counters0[k] for k in counters0}
            lagd = {le: delta[f"le_{le}"] for le in APPLY_LE}
            n_applied = lagd["+Inf"]
            over50 = (n_applied - lagd["0.05"]) / n_applied if n_applied else 0.0
            lag_p99 = next((le for le in APPLY_LE if n_applied and lagd[le] >= 0.99 * n_applied),
                           "-")
            # The trickle: windows seal only when newer records move the watermark.
            deadline = time.time() + (30 if a.quick else 60)
            k = 0
            while time.time() < deadline:
                with lock:
                    left = sum(p[4] is None for p in probes)
                if left == 0:
                    break
                probe_p.produce(topic, ('{"collection":"load","records":[{"id":"t%d-%d",'
                                        '"vector_b64":"%s"}]}' % (li, k, pool0)).encode())
                probe_p.poll(0)
                k += 1
                time.sleep(0.1)
            done.set()
            for pt in pts:
                pt.join()
            # one record more, stamped after the phase: the floor has read the phase once it
            # has read this (plain.caught_up)
            probe_p.produce(topic, ('{"collection":"load","records":[{"id":"end%d",'
                                    '"vector_b64":"%s"}]}' % (li, pool0)).encode())
            probe_p.flush(30)
            for p in probes:  # each probe's own latencies, for finding what a tail lines up with
                probe_rows.append({"load": share, "id": p[0], "produced_unix_s": round(p[2], 3),
                                   "strong_ms": None if p[3] is None else round(p[3] * 1000, 1),
                                   "indexed_ms": None if p[4] is None else round(p[4] * 1000)})
            s_lat = [p[3] * 1000 for p in probes if p[3] is not None]
            # The broker's GC pauses in the phase, and how many of the probes a strong search
            # found only after 50 ms had a pause within their way (produce to found).
            # (A probe's way may end after the phase: it is matched against every pause.)
            all_gc = broker_pauses()
            gc = [(b, e) for b, e in all_gc or [] if e > t_phase and b < t_phase_end]
            slow = [(p[2], p[2] + p[3]) for p in probes if p[3] is not None and p[3] > 0.05]
            slow_gc = sum(any(e > b0 and b < e0 for b, e in all_gc or []) for b0, e0 in slow)
            # and the machine's own stops (the sleeper's gaps over 20 ms) in the phase
            all_stops = [(b, e) for b, e in sleeper.gaps() if e - b > 0.02]
            stops = [(b, e) for b, e in all_stops if e > t_phase and b < t_phase_end]
            slow_stop = sum(any(e > b0 and b < e0 for b, e in all_stops) for b0, e0 in slow)
            i_lat = [p[4] * 1000 for p in probes if p[4] is not None]
            # The floor: how late the same messages reached a consumer that does nothing
            # (stamped in the phase; with --append-times, from the broker's append).
            # The probes from the produce call, as the strong latencies are; a probe it has no
            # row for counts as missing, never as on time.
            if plain is not None:
                plain.caught_up(t_phase_end)
            pl_got, pl_all = plain.lags(t_phase, t_phase_end) if plain else ({}, [])
            pl_ms = [x * 1000 for x in pl_all]
            pl_probe = {p[0]: pl_got[p[0]] - p[2] for p in probes if p[0] in pl_got}
            pl_slow = [p for p in probes if p[3] is not None and p[3] > 0.05]
            row = {"load": share, "target_rec_s": round(share * ref_rate),
                   "achieved_rec_s": round(achieved), "probes": len(probes),
                   "strong_found": len(s_lat),
                   "strong_p50_ms": percentile(s_lat, 0.5), "strong_p99_ms": percentile(s_lat, 0.99),
                   "indexed_found": len(i_lat),
                   "indexed_p50_ms": percentile(i_lat, 0.5),
                   "indexed_p99_ms": percentile(i_lat, 0.99),
                   "strong_searches": len(took),
                   "strong_search_p50_ms": percentile(took, 0.5),
                   "strong_search_p99_ms": percentile(took, 0.99),
                   # what the client waited beyond the search's own took_ms: HTTP, the
                   # daemon's threads getting a core, this harness
                   "client_over_took_p99_ms": percentile(
                       [x["client_ms"] - x["took_ms"] for x in searches if x["load"] == share],
                       0.99),
                   **{f"{k}_ms": round(v * 1000, 1) for k, v in delta.items()
                      if not k.startswith(("le_", "search_"))},
                   "apply_messages": round(n_applied), "apply_over_50ms": round(over50, 4),
                   "apply_p99_le_s": lag_p99,
                   "broker_gc_pauses": len(gc) if all_gc is not None else None,
                   "broker_gc_ms": round(sum(e - b for b, e in gc) * 1000, 1),
                   "broker_gc_max_ms": round(max((e - b for b, e in gc), default=0) * 1000, 1),
                   "strong_over_50ms": len(slow), "strong_over_50ms_in_gc": slow_gc,
                   "client_reconnects": reconnects[0],
                   "machine_stops": len(stops), "sleeper": sleeper.policy,
                   "machine_stop_max_ms":
                       round(max((e - b for b, e in stops), default=0) * 1000, 1),
                   "strong_over_50ms_in_stop": slow_stop,
                   # searches over 50 ms in the phase as each daemon timed them: the indexer's
                   # include its fan-out to the ingest node, whose own are the scans
                   **{f"searches_{w}": round(c1[f"search_{w}_all"] - c0[f"search_{w}_all"])
                      for w, c0, c1 in (("ingest", counters0, counters1),
                                        ("indexer", idx0, idx1))},
                   **{f"searches_over_50ms_{w}": round(
                       (c1[f"search_{w}_all"] - c0[f"search_{w}_all"]) -
                       (c1[f"search_{w}_le50"] - c0[f"search_{w}_le50"]))
                      for w, c0, c1 in (("ingest", counters0, counters1),
                                        ("indexer", idx0, idx1))},
                   **({} if plain is None else {
                   "plain_messages": len(pl_ms),
                   "plain_over_50ms": round(sum(x > 50 for x in pl_ms) / len(pl_ms), 4)
                   if pl_ms else None,
                   "plain_p50_ms": percentile(pl_ms, 0.5), "plain_p99_ms": percentile(pl_ms, 0.99),
                   "plain_probe_p99_ms": percentile([x * 1000 for x in pl_probe.values()], 0.99),
                   "plain_probes_missing": sum(p[0] not in pl_probe for p in probes),
                   # of the probes found after 50 ms, how many reached the plain consumer
                   # after 50 ms too: the machine's, not the node's
                   "strong_over_50ms_plain_over_50ms": sum(
                       pl_probe[p[0]] > 0.05 for p in pl_slow if p[0] in pl_probe)})}
            rows.append(row)
            log(f"load {share:.0%}: strong p50 {row['strong_p50_ms']:.1f} ms p99 "
                f"{row['strong_p99_ms']:.1f} ms; indexed p50 {row['indexed_p50_ms']:.0f} ms p99 "
                f"{row['indexed_p99_ms']:.0f} ms ({len(i_lat)}/{len(probes)} indexed)" +
                ("" if plain is None else
                 f"; a plain consumer: p50 {row['plain_p50_ms']:.1f} ms p99 "
                 f"{row['plain_p99_ms']:.1f} ms, probes p99 {row['plain_probe_p99_ms']:.1f} ms; "
                 f"of {len(pl_slow)} probes found after 50 ms, "
                 f"{row['strong_over_50ms_plain_over_50ms']} reached it after 50 ms"))
            if errors:
                raise Failed(f"load {share:.0%}: {len(errors)} searches failed, the first: "
                             f"{errors[0]}")
            if len(s_lat) < len(probes):
                raise Failed(f"load {share:.0%}: {len(probes) - len(s_lat)} probes never found "
                             "by a strong search (an acknowledged record must be)")
    finally:
        for ld in LIVE:
            ld.kill()
        d.stop()
    d.remove_data()  # after a failed run the data stays, for finding out why

    if a.append_times:  # each probe's broker append time, from its delivery report
        for r in probe_rows:
            t = appended.get(r["id"])
            r["appended_ms"] = None if t is None else round((t - r["produced_unix_s"]) * 1000, 1)
        for row in rows:
            mine = [r for r in probe_rows if r["load"] == row["load"] and
                    r["appended_ms"] is not None and r["strong_ms"] is not None]
            row["append_p50_ms"] = percentile([r["appended_ms"] for r in mine], 0.5)
            row["append_p99_ms"] = percentile([r["appended_ms"] for r in mine], 0.99)
            rest = [r["strong_ms"] - r["appended_ms"] for r in mine]
            row["appended_to_strong_p50_ms"] = percentile(rest, 0.5)
            row["appended_to_strong_p99_ms"] = percentile(rest, 0.99)
            log(f"load {row['load']:.0%}: produce → appended p50 {row['append_p50_ms']:.1f} "
                f"p99 {row['append_p99_ms']:.1f} ms; appended → strong p50 "
                f"{row['appended_to_strong_p50_ms']:.1f} p99 "
                f"{row['appended_to_strong_p99_ms']:.1f} ms")
    with open(out / "fresh-probes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(probe_rows[0]))
        w.writeheader()
        w.writerows(probe_rows)
    ref = {"max_rec_s": round(max_rate), "offered_rec_s": round(offered),
           "catchup_rec_s": round(catchup), "limited_by": limit,
           "applied_rec_s": round(applied_rate), "loads_of_rec_s": round(ref_rate),
           "ref_seconds": ref_secs, "backlog": backlog, "dim": a.dim,
           "cpu_weights": a.cpu_weights, "index": a.index}
    if searches:
        with open(out / "fresh-searches.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(searches[0]))
            w.writeheader()
            w.writerows(searches)
    with open(out / "fresh-ref.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ref))
        w.writeheader()
        w.writerow(ref)
    with open(out / "fresh.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = [f"maximum ingest rate (reference, this run): {max_rate:.0f} records/s of {a.dim}-d "
          f"float32 in binary frames, 100 per message, sustained by strata-ingest over the last "
          f"two thirds of {ref_secs:.0f} s with `strata produce` offering all it could "
          f"({offered:.0f} records/s) and the indexer building; the same node works through a "
          f"backlog of {backlog} records (nothing else running) at {catchup:.0f} records/s"
          + (f"; the lesser of that and what the node applied ({applied_rate:.0f}): the "
             "producer's limit, or near it" if limit != "node" else "")
          + (f"; loads are shares of {ref_rate:.0f} records/s (--rate)" if a.rate else ""),
          f"probes: one every {a.probe_ms:.0f} ms for {secs:.0f} s per load; windows of 2 s, "
          f"grace 200 ms; {INDEXES[a.index][0]} built per window by strata-indexer"
          + ("; CPU weights (a cgroup each, as systemd's CPUWeight=): " +
             ", ".join(f"{k} {v}" for k, v in sorted(weights.items())) if weights else ""),
          "",
          "| load | target records/s | achieved | probes | strong p50 ms | strong p99 ms "
          "| indexed p50 ms | indexed p99 ms | indexed within the deadline "
          "| a strong search's took_ms p50 / p99; its client waited beyond it, p99 "
          "| writes waited, ms: window / vector log created, WAL roll, log queue "
          "| polling thread, ms: librdkafka / decode wait / write / commit "
          "| messages applied > 50 ms after their timestamp (produce; the append with "
          "--append-times); their p99 within (s) "
          "| broker GC pauses: count, total / longest ms "
          "| machine stops > 20 ms (a sleeper's late wake-ups): count, longest ms "
          "| probes found after 50 ms: all, with a broker GC pause, with a machine stop on "
          "their way |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['load']:.0%} | {r['target_rec_s']} | {r['achieved_rec_s']} | "
                  f"{r['probes']} | {r['strong_p50_ms']:.1f} | {r['strong_p99_ms']:.1f} | "
                  f"{r['indexed_p50_ms']:.0f} | {r['indexed_p99_ms']:.0f} | "
                  f"{r['indexed_found']}/{r['probes']} | "
                  f"{r['strong_search_p50_ms']:.1f} / {r['strong_search_p99_ms']:.1f}; "
                  f"{r['client_over_took_p99_ms']:.1f} | "
                  + " / ".join(f"{r[f'wait_{c}_ms']:.0f}" for c in WAIT_CAUSES) + " | "
                  + " / ".join(f"{r[f'poll_{c}_ms']:.0f}" for c in POLL_ACTIVITIES) + " | "
                  f"{r['apply_over_50ms']:.2%} of {r['apply_messages']}; "
                  f"≤ {r['apply_p99_le_s']} | "
                  + (f"{r['broker_gc_pauses']}, {r['broker_gc_ms']:.0f} / "
                     f"{r['broker_gc_max_ms']:.0f} | " if r['broker_gc_pauses'] is not None
                     else "no GC log | ") +
                  f"{r['machine_stops']}, {r['machine_stop_max_ms']:.0f} ({r['sleeper']}) | "
                  f"{r['strong_over_50ms']}, {r['strong_over_50ms_in_gc']}, "
                  f"{r['strong_over_50ms_in_stop']} |")
    if not a.no_floor:
        md += ["", "The floor, measured in the same phases: a consumer that does nothing "
               "(`plain_consumer.py`, librdkafka's defaults, a process of its own) reading the same "
               "topic, each message timed from its Kafka timestamp to librdkafka handing it over "
               "(the probes from their produce call, as the strong latencies are); "
               "and the searches each daemon timed over 50 ms (the indexer's include its fan-out "
               "to the ingest node):", "",
               "| load | do-nothing consumer: all messages p50 / p99 ms, share > 50 ms "
               "| its probes p99 ms | strong p99 / the floor's probes p99 "
               "| probes found after 50 ms: all, reached the do-nothing consumer after 50 ms "
               "| searches over 50 ms: ingest node, indexer (of all the indexer's) |",
               "|---|---|---|---|---|---|"]
        md += [f"| {r['load']:.0%} | {r['plain_p50_ms']:.1f} / {r['plain_p99_ms']:.1f}, "
               f"{(r['plain_over_50ms'] or 0):.2%} of {r['plain_messages']} | "
               f"{r['plain_probe_p99_ms']:.1f} | "
               f"{r['strong_p99_ms'] / max(r['plain_probe_p99_ms'], 1):.1f}× | "
               f"{r['strong_over_50ms']}, {r['strong_over_50ms_plain_over_50ms']}"
               + (f" ({r['plain_probes_missing']} probes it never read)"
                  if r['plain_probes_missing'] else "") + " | "
               f"{r['searches_over_50ms_ingest']}, {r['searches_over_50ms_indexer']} "
               f"({r['searches_indexer']}) |" for r in rows]
    if a.append_times:
        md += ["", "Each probe's way split at the broker's append (LogAppendTime):", "",
               "| load | produce → appended p50 / p99 ms | appended → strong p50 / p99 ms |",
               "|---|---|---|"]
        md += [f"| {r['load']:.0%} | {r['append_p50_ms']:.1f} / {r['append_p99_ms']:.1f} | "
               f"{r['appended_to_strong_p50_ms']:.1f} / {r['appended_to_strong_p99_ms']:.1f} |"
               for r in rows]
    (out / "fresh.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    main_guard("fresh_load", main)
