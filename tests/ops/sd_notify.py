#!/usr/bin/env python3
"""sd_notify: the real strata-ingest and strata-indexer speak systemd's Type=notify protocol.

For each daemon (binaries from $STRATA_INGEST / $STRATA_INDEXER, brokers from the ctest
fixture's $STRATA_BROKERS_DIR/env), this test plays systemd's side: an AF_UNIX SOCK_DGRAM
socket named by NOTIFY_SOCKET, WATCHDOG_USEC set (and WATCHDOG_PID, which a process spawned
by systemd gets, set to the daemon's own pid via a shell exec), and asserts, each with a
deadline:
  - READY=1, carrying a STATUS= line, once the daemon serves;
  - WATCHDOG=1 keeps arriving with no gap (nor READY -> first ping) of WATCHDOG_USEC or more:
    systemd would kill it otherwise; at least WATCHDOGS pings are seen;
  - a periodic STATUS= line after READY (the daemons refresh it every 5 s);
  - on SIGTERM: STOPPING=1, then exit status 0;
  - stderr holds no sanitizer report (the ASan build runs this test too).
Nothing here sleeps to hope: every wait is recv() on the socket with a deadline.
Standard library only.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

WATCHDOG_USEC = 2_000_000  # systemd would kill after 2 s of silence; daemons ping every 1 s
WATCHDOGS = 4
READY_TIMEOUT = 90.0
STATUS_TIMEOUT = 12.0  # a refresh is due 5 s after READY
STOP_TIMEOUT = 45.0  # TimeoutStopSec in the units
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


class Failure(Exception):
    pass


def brokers():
    env = {}
    d = os.environ.get("STRATA_BROKERS_DIR")
    if d and os.path.exists(os.path.join(d, "env")):
        with open(os.path.join(d, "env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                env[k] = v
    kafka = os.environ.get("STRATA_TEST_KAFKA") or env.get("STRATA_TEST_KAFKA")
    nats = os.environ.get("STRATA_TEST_NATS") or env.get("STRATA_TEST_NATS")
    if not kafka or not nats:
        raise Failure("no brokers: set STRATA_BROKERS_DIR (ctest fixture 'brokers') or "
                      "STRATA_TEST_KAFKA/STRATA_TEST_NATS")
    return kafka, nats


def write_config(path, data_dir, kafka, nats, tag):
    u = f"{tag}-{os.getpid()}-{int(time.time() * 1000)}"
    stream = "N" + u.replace("-", "_").upper()
    with open(path, "w") as f:
        f.write(f"""node_id: notify-{os.getpid()}
data_dir: {data_dir}
kafka:
  brokers: "{kafka}"
  group_id: notify-g-{u}
  dead_letter_topic: notify-dlq-{u}
  properties: {{session.timeout.ms: "6000"}}
nats:
  url: "{nats}"
  stream: {stream}
collections:
  - name: docs
    dim: 4
    metric: l2
    topic: notify-docs-{u}
    window: 1m
    grace: 1s
    max_lateness: 1m
    index: {{type: hnsw, m: 16, ef_construction: 100}}
ingest: {{listen: "127.0.0.1:0", announce_interval: 500ms}}
indexer: {{listen: "127.0.0.1:0", build_threads: 1, memory_budget: 256MiB}}
log: {{level: info}}
""")


class Notify:
    """systemd's end of NOTIFY_SOCKET: every datagram, with its arrival time."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.log = []  # (monotonic seconds, [assignments])

    def recv(self, deadline):
        """The next datagram's lines, or None once deadline (monotonic) has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        lines = data.decode("utf-8", "replace").split("\n")
        lines = [x for x in lines if x]
        self.log.append((time.monotonic(), lines))
        return lines

    def wait_for(self, pred, timeout, what, proc):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.recv(deadline)
            if lines is None:
                code = proc.poll()
                raise Failure(f"no {what} within {timeout:.0f} s"
                              + (f" (daemon exited {code})" if code is not None else ""))
            if pred(lines):
                return lines

    def close(self):
        self.sock.close()


def check_log_clean(log_path):
    with open(log_path, errors="replace") as f:
        text = f.read()
    for mark in SANITIZER_MARKS:
        if mark in text:
            raise Failure(f"sanitizer report in the daemon's stderr ({mark})")


def run_daemon(binary, name, work, kafka, nats):
    cfg = os.path.join(work, f"{name}.yaml")
    data = os.path.join(work, f"{name}-data")
    os.mkdir(data)
    write_config(cfg, data, kafka, nats, name)
    # What ExecStartPre runs: must accept the config it is about to start with.
    chk = subprocess.run([binary, "--config", cfg, "--check-config"], capture_output=True,
                         text=True, timeout=60)
    if chk.returncode != 0:
        raise Failure(f"{name} --check-config exited {chk.returncode}: {chk.stderr}")

    sock_path = os.path.join(work, f"{name}.notify")
    n = Notify(sock_path)
    log_path = os.path.join(work, f"{name}.log")
    env = dict(os.environ)
    env.pop("LISTEN_PID", None)
    env["NOTIFY_SOCKET"] = sock_path
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    # systemd sets WATCHDOG_PID to the main pid; sd_watchdog_enabled() ignores the variables
    # when it names another process. `exec` keeps the shell's pid for the daemon.
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" --config "$1"', binary, cfg],
            env=env, stdout=logf, stderr=logf)
    try:
        ready = n.wait_for(lambda ls: "READY=1" in ls, READY_TIMEOUT, "READY=1", proc)
        t_ready = n.log[-1][0]
        if not any(x.startswith("STATUS=") and len(x) > len("STATUS=") for x in ready):
            raise Failure(f"READY=1 without a STATUS= line: {ready}")
        print(f"  {name}: {ready}")

        # Watchdog pings: count them, measure every gap, and wait for the periodic STATUS.
        limit = WATCHDOG_USEC / 1e6
        last = t_ready
        pings = 0
        saw_status = False
        deadline = time.monotonic() + STATUS_TIMEOUT
        while pings < WATCHDOGS or not saw_status:
            lines = n.recv(min(deadline, last + limit))
            now = time.monotonic()
            if lines is None:
                if now >= deadline:
                    raise Failure(f"only {pings} WATCHDOG=1 / status refresh {saw_status} "
                                  f"within {STATUS_TIMEOUT:.0f} s of READY")
                raise Failure(f"no WATCHDOG=1 for {limit:.1f} s (after {pings} pings): "
                              "systemd would have killed the daemon")
            if "WATCHDOG=1" in lines:
                gap = now - last
                if gap >= limit:
                    raise Failure(f"WATCHDOG=1 gap {gap:.2f} s >= WatchdogSec {limit:.1f} s")
                last = now
                pings += 1
            if any(x.startswith("STATUS=") for x in lines):
                saw_status = True
            if proc.poll() is not None:
                raise Failure(f"daemon exited {proc.returncode} while running")
        print(f"  {name}: {pings} watchdog pings, max gap < {limit:.1f} s, status refreshed")

        proc.send_signal(signal.SIGTERM)
        n.wait_for(lambda ls: "STOPPING=1" in ls, STOP_TIMEOUT, "STOPPING=1 after SIGTERM",
                   proc)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failure(f"no exit within {STOP_TIMEOUT:.0f} s of SIGTERM")
        if code != 0:
            raise Failure(f"exit status {code} after SIGTERM, want 0")
        check_log_clean(log_path)
        print(f"  {name}: STOPPING=1, exit 0")
    except Failure as e:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with open(log_path, errors="replace") as f:
            tail = f.read()[-4000:]
        raise Failure(f"{name}: {e}\n--- notifications: {n.log}\n--- stderr (tail):\n{tail}")
    finally:
        n.close()


def main():
    bins = [("strata-ingest", os.environ.get("STRATA_INGEST")),
            ("strata-indexer", os.environ.get("STRATA_INDEXER"))]
    try:
        kafka, nats = brokers()
        with tempfile.TemporaryDirectory(prefix="strata-notify-") as work:
            for name, binary in bins:
                if not binary or not os.access(binary, os.X_OK):
                    raise Failure(f"{name}: binary not set or not executable: {binary!r}")
                run_daemon(binary, name, work, kafka, nats)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("sd_notify: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
