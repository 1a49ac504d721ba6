"""
What the Python benchmarks share: the two daemons started from one YAML (SPEC section 6) against
brokers that bench/*/run started, HTTP calls, and waiting for a condition with a deadline.
"""
import atexit
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPConnection, HTTPException, RemoteDisconnected
from pathlib import Path


@functools.lru_cache(maxsize=None)
def death_prefix():
    """The command prefix that sends SIGTERM to a child when this process dies, even by
    SIGKILL: setpriv --pdeathsig (util-linux 2.33 or later), or nothing where it is missing."""
    if shutil.which("setpriv") is None:
        return ()
    r = subprocess.run(["setpriv", "--help"], capture_output=True, text=True)
    return ("setpriv", "--pdeathsig", "TERM", "--") if "--pdeathsig" in r.stdout else ()


def arg_parser():
    """The options every bench/lib/run-with-brokers script takes."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kafka", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--quick", action="store_true")
    return ap


def log(tag, *a):
    print(f"{tag}:", *a, file=sys.stderr, flush=True)


class Failed(Exception):
    """A step failed or missed its deadline: the benchmark stops with this message."""


def http(method, url, body=None, timeout=30):
    """(status, parsed JSON body or the error text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class Client:
    """One keep-alive HTTP/1.1 connection to one daemon, for a thread that sends it many
    requests, as a real client would: no connect and no urllib machinery per request, so that
    a latency measured through it is the daemon's more than the harness's. post(path, body
    bytes) and get(path) -> (status, parsed JSON or the text); a reused connection the daemon has closed
    meanwhile (closed, reset) is opened again once and counted in .reconnects; other failures,
    timeouts included, raise OSError."""

    def __init__(self, base, timeout=30):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.prefix, self.timeout = u.hostname, u.port, u.path, timeout
        self.conn = None
        self.reconnects = 0

    def post(self, path, body):
        return self.request("POST", path, body)

    def get(self, path):
        return self.request("GET", path)

    def request(self, method, path, body=None):
        for attempt in (0, 1):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, self.prefix + path, body=body,
                                  headers={"content-type": "application/json"} if body else {})
                r = self.conn.getresponse()
                data = r.read()
                break
            except (OSError, HTTPException) as e:
                self.conn.close()
                self.conn = None
                closed = isinstance(e, (RemoteDisconnected, ConnectionResetError,
                                        BrokenPipeError))
                if not reused or not closed or attempt == 1:
                    raise OSError(f"{method} {self.prefix}{path}: {e!r}") from e
                self.reconnects += 1
        try:
            return r.status, json.loads(data or b"null")
        except ValueError:
            return r.status, data.decode(errors="replace")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_for(what, deadline_s, fn, every=0.2):
    t_end = time.time() + deadline_s
    while True:
        v = fn()
        if v:
            return v
        if time.time() > t_end:
            raise Failed(f"{what}: not within {deadline_s} s")
        time.sleep(every)


def metric(text, name, labels=""):
    """The value of one Prometheus sample (name{labels...}) in text, or None."""
    m = re.search(r"^" + re.escape(name) + r"(\{[^}]*" + re.escape(labels) + r"[^}]*\})? (\S+)$",
                  text, re.M)
    return float(m.group(2)) if m else None


CGROUPS = []  # CPU cgroups made by cgroup_prefix, removed at exit


def _rm_cgroups():
    for d in CGROUPS:
        try:
            d.rmdir()  # empty once its daemon has exited
        except OSError:
            pass


def cgroup_prefix(name, weight):
    """A command prefix that runs a daemon in a CPU cgroup of its own with `weight` (1-10000,
    what `CPUWeight=` gives a systemd unit: its share of contended cores against sibling units,
    default 100), on cgroup v2 (cpu.weight) or v1 (cpu.shares = weight * 1024 / 100). The
    cgroup is made at the hierarchy's root: a daemon there competes with the root's other
    children (on v1 with every root-level thread, the broker and the load generator among them,
    at 1024 each; on v2 with the slices), so the weights compare the daemons with each other as
    sibling units would, and with the rest of the machine only roughly. Raises Failed saying why
    when the cgroup cannot be made here."""
    if not 1 <= weight <= 10000:
        raise Failed(f"CPU weight {weight} for {name}: 1 to 10000")
    root = Path("/sys/fs/cgroup")
    try:
        if (root / "cgroup.controllers").exists():  # v2
            if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
                (root / "cgroup.subtree_control").write_text("+cpu")
            d, knob, value = root / f"strata-bench-{name}-{os.getpid()}", "cpu.weight", weight
        else:
            d = root / "cpu" / f"strata-bench-{name}-{os.getpid()}"
            knob, value = "cpu.shares", max(2, round(weight * 1024 / 100))
        d.mkdir(exist_ok=True)
        if not CGROUPS:
            atexit.register(_rm_cgroups)
        CGROUPS.append(d)
        (d / knob).write_text(str(value))
    except OSError as e:
        raise Failed(f"cannot make a CPU cgroup for {name}: {e} (needs root and a writable "
                     "cgroup cpu controller; run without the CPU weights)") from e
    return ["sh", "-c", f'echo $$ > {d}/cgroup.procs && exec "$@"', "sh"]


class Daemons:
    """strata-ingest and strata-indexer of BUILD on one YAML in RUN_DIR; stop() ends both.
    For experiments, STRATA_BENCH_PREFIX_INGEST / _INDEXER put a command before a daemon's
    (e.g. "nice -n 19", "taskset -c 1"), and STRATA_BENCH_KAFKA_PROPERTIES adds librdkafka
    properties to the YAML's kafka.properties (e.g. "fetch.wait.max.ms: 10");
    STRATA_BENCH_BUILD_THREADS sets indexer.build_threads (default 2), STRATA_BENCH_BUILD_CPU
    indexer.build_cpu (default: none, no cap)."""

    def __init__(self, build, run_dir, kafka, nats, collections, node_id="bench",
                 cpu_weights=None):
        self.cpu_weights = cpu_weights or {}  # {"ingest": 100, "indexer": 20}: cgroup_prefix
        self.build = Path(build)
        self.run = Path(run_dir)
        self.run.mkdir(parents=True, exist_ok=True)
        self.cfg = self.run / "strata.yaml"
        pid = os.getpid()
        extra = os.environ.get("STRATA_BENCH_KAFKA_PROPERTIES", "").strip()
        props = f", properties: {{{extra}}}" if extra else ""
        self.cfg.write_text(
            f"node_id: {node_id}\ndata_dir: {self.run / 'data'}\n"
            f"kafka: {{brokers: \"{kafka}\", group_id: {node_id}-{pid}{props}}}\n"
            f"nats: {{url: \"{nats}\", stream: B{pid}}}\n"
            "collections:\n" + "".join(f"  - {c}\n" for c in collections) +
            "ingest: {listen: \"127.0.0.1:0\"}\n"
            "indexer: {listen: \"127.0.0.1:0\", build_threads: "
            f"{os.environ.get('STRATA_BENCH_BUILD_THREADS', '2')}"
            + (f", build_cpu: {os.environ['STRATA_BENCH_BUILD_CPU']}"
               if os.environ.get("STRATA_BENCH_BUILD_CPU") else "") + "}\n"
            "log: {level: notice}\n")
        self.procs = []
        self.ingest_port = self.indexer_port = None

    def _start(self, binary, name):
        lg = self.run / f"{name}.log"
        pre = os.environ.get("STRATA_BENCH_PREFIX_" + name.upper(), "").split()
        if name in self.cpu_weights:
            pre = cgroup_prefix(name, self.cpu_weights[name]) + pre
        # A session of its own (a Ctrl-C reaches the benchmark, which stops the daemons in
        # order), and SIGTERM when this process dies, even by SIGKILL (a time limit's
        # kill-after), so that no daemon outlives its benchmark.
        p = subprocess.Popen(list(death_prefix()) + pre + [str(self.build / binary), "--config", str(self.cfg)],
                             stdout=subprocess.DEVNULL, stderr=open(lg, "w"),
                             start_new_session=True)
        self.procs.append(p)
        if len(self.procs) == 1:  # stopped however Python exits (SIGTERM: see main_guard)
            atexit.register(self.stop)

        def port():
            if p.poll() is not None:
                raise Failed(f"{lg}: the daemon exited with status {p.returncode}")
            m = re.search(r"HTTP on port (\d+)", lg.read_text(errors="replace"))
            return int(m.group(1)) if m else None
        return wait_for(f"{lg}: HTTP port logged", 60, port, 0.1)

    def start_ingest(self):
        self.ingest_port = self._start("ingest/strata-ingest", "ingest")
        return self.ingest_port

    def start_indexer(self):
        self.indexer_port = self._start("indexer/strata-indexer", "indexer")
        return self.indexer_port

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()

    def remove_data(self):
        """Removes the daemons' data_dir (gigabytes after a load; the logs stay) unless
        STRATA_BENCH_KEEP_DATA is set. Call after stop()."""
        if not os.environ.get("STRATA_BENCH_KEEP_DATA"):
            shutil.rmtree(self.run / "data", ignore_errors=True)

    def base(self, coll):
        return f"http://127.0.0.1:{self.indexer_port}/v1/collections/{coll}"

    def wait_strong_ready(self, coll, vector, deadline_s=60):
        """A strong search answers 503 until the indexer has heard from the ingest nodes."""
        def ready():
            st, _ = http("POST", self.base(coll) + "/search",
                         {"vector": vector, "consistency": "strong"})
            if st not in (200, 503):
                raise Failed(f"strong search: HTTP {st}")
            return st == 200
        wait_for("a strong search served (ingest nodes discovered)", deadline_s, ready, 0.25)


def create_topic(kafka, topic, partitions=2, config=None):
    from confluent_kafka.admin import AdminClient, NewTopic
    adm = AdminClient({"bootstrap.servers": kafka})  # kept alive until the futures resolve
    fut = adm.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                      config=config or {})])
    for f in fut.values():
        f.result(timeout=60)


def main_guard(tag, main):
    """Runs main(): a Failed step ends the run with its message and status 1; SIGTERM (a
    timeout, a cancelled CI job) ends it as an exception, so the daemons are stopped."""
    def term(signum, frame):
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, term)
    try:
        sys.exit(main())
    except Failed as e:
        log(tag, "error:", e)
        sys.exit(1)


def percentile(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")
