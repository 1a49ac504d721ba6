#!/usr/bin/env python3
"""The real strata-ingest and strata-indexer as systemd runs them (tests/ops, stdlib only).

  sd_notify.py                      ops_sd_notify
  sd_notify.py --sandbox SYSTEMD_DIR ops_sandbox_trace

Both modes start each daemon (binaries from $STRATA_INGEST / $STRATA_INDEXER) against the
ctest fixture's Kafka ($STRATA_BROKERS_DIR/env) and a nats-server of the test's own (so no
stream another test left holds the strata.* subjects), playing systemd's side of Type=notify:
an AF_UNIX SOCK_DGRAM socket named by NOTIFY_SOCKET, WATCHDOG_USEC set, and asserting, each
with a deadline (every wait is recv() on the socket or a process wait, never a sleep):
  - the unit's ExecStartPre (--check-config) accepts the config;
  - READY=1, carrying a STATUS= line, once the daemon serves;
  - WATCHDOG=1 keeps arriving with no gap (nor READY -> first ping) of WATCHDOG_USEC or more
    (systemd would kill the daemon), at least WATCHDOGS times;
  - a periodic STATUS= line after READY (the daemons refresh it every 5 s);
  - on SIGTERM: STOPPING=1, then exit status 0;
  - every notification comes from the main process (the kernel's SCM_CREDENTIALS, as
    systemd reads them: NotifyAccess=main drops anyone else's);
  - stderr holds no sanitizer report (the ASan build runs these tests too).
Default mode also sets WATCHDOG_PID to the daemon's pid, as systemd does (sd_watchdog_enabled
ignores the watchdog when it names another process).

--sandbox runs each daemon under strace for the same whole life and checks what it did
against what the unit in SYSTEMD_DIR allows (what systemd would enforce, checked without
systemd as PID 1):
  - every system call is in the unit's SystemCallFilter= (as systemd-analyze expands it);
  - every socket family is in RestrictAddressFamilies= — except AF_NETLINK from glibc's
    getaddrinfo(AI_ADDRCONFIG), which, when refused, assumes IPv4 and IPv6 are both there;
  - no mapping or mprotect asks for write+execute or adds execute (MemoryDenyWriteExecute=);
  - nothing under /proc is opened but the process's own entries (ProcSubset=pid);
  - nothing is created, written, renamed or removed outside data_dir (ProtectSystem=strict,
    StateDirectory= being the only writable path).
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

# systemd would kill after 4 s of silence; the daemons ping every 2 s (half), so a loaded
# machine has 2 s of slack. Under strace (--sandbox), where timing is not the point, 10 s.
WATCHDOG_USEC = {False: 4_000_000, True: 10_000_000}
WATCHDOGS = {False: 4, True: 2}
READY_TIMEOUT = 90.0
STATUS_TIMEOUT = 20.0  # a refresh is due 5 s after READY; 4 pings take 6 s
STOP_TIMEOUT = 45.0  # TimeoutStopSec in the units
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


class Failure(Exception):
    pass


def kafka_broker():
    v = os.environ.get("STRATA_TEST_KAFKA")
    d = os.environ.get("STRATA_BROKERS_DIR")
    if not v and d and os.path.exists(os.path.join(d, "env")):
        with open(os.path.join(d, "env")) as f:
            for line in f:
                k, _, val = line.strip().partition("=")
                if k == "STRATA_TEST_KAFKA":
                    v = val
    if not v:
        raise Failure("no Kafka: set STRATA_BROKERS_DIR (ctest fixture 'brokers') or "
                      "STRATA_TEST_KAFKA")
    return v


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnNats:
    """nats-server -js on a free loopback port, in dir; up once it greets a client."""

    def __init__(self, work):
        self.dir = os.path.join(work, "nats")
        os.mkdir(self.dir)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log = open(os.path.join(work, "nats.log"), "w")
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.dir],
            stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.settimeout(max(0.1, deadline - time.monotonic()))
                    if c.recv(5) == b"INFO ":
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Failure(f"own nats-server not up on {self.url}")
            # The next attempt waits on connect() again; a refused connect returns at once.
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def write_config(path, data_dir, kafka, nats, tag):
    u = f"{tag}-{os.getpid()}-{int(time.time() * 1000)}"
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
  stream: NOTIFY
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
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        # As systemd does: the kernel tells each datagram's sender pid (NotifyAccess=main
        # ignores any other process's messages).
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.log = []  # (monotonic seconds, [assignments], sender pid)

    def recv(self, deadline):
        """The next datagram's lines, or None once deadline (monotonic) has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self.sock.settimeout(left)
        try:
            data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        lines = [x for x in data.decode("utf-8", "replace").split("\n") if x]
        self.log.append((time.monotonic(), lines, pid))
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


def run_daemon(binary, name, work, kafka, nats, trace=None):
    cfg = os.path.join(work, f"{name}.yaml")
    data = os.path.join(work, f"{name}-data")
    os.mkdir(data)
    write_config(cfg, data, kafka, nats, name)
    # What ExecStartPre runs: must accept the config it is about to start with.
    chk = subprocess.run([binary, "--config", cfg, "--check-config"], capture_output=True,
                         text=True, timeout=60)
    if chk.returncode != 0:
        raise Failure(f"{name} --check-config exited {chk.returncode}: {chk.stderr}")

    n = Notify(os.path.join(work, f"{name}.notify"))
    log_path = os.path.join(work, f"{name}.log")
    env = dict(os.environ)
    env["NOTIFY_SOCKET"] = os.path.join(work, f"{name}.notify")
    traced = trace is not None
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC[traced])
    env.pop("WATCHDOG_PID", None)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    if trace is None:
        # systemd sets WATCHDOG_PID to the main pid; `exec` keeps the shell's pid.
        argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" --config "$1"', binary, cfg]
    else:
        argv = ["strace", "-f", "-qq", "-y", "-s", "256", "-o", trace, binary, "--config", cfg]
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(argv, env=env, stdout=logf, stderr=logf,
                                start_new_session=True)
    try:
        ready = n.wait_for(lambda ls: "READY=1" in ls, READY_TIMEOUT, "READY=1", proc)
        t_ready, _, pid = n.log[-1]
        # Under strace the daemon is strace's child: its pid is the sender's.
        if pid is None or (trace is None and pid != proc.pid):
            raise Failure(f"READY=1 sent by pid {pid}, not the main process {proc.pid}: "
                          "systemd (NotifyAccess=main) would ignore it")
        if not any(x.startswith("STATUS=") and len(x) > len("STATUS=") for x in ready):
            raise Failure(f"READY=1 without a STATUS= line: {ready}")
        print(f"  {name}: {ready}")

        # Watchdog pings: count them, measure every gap, and wait for the periodic STATUS.
        limit = WATCHDOG_USEC[traced] / 1e6
        last = t_ready
        pings = 0
        saw_status = False
        deadline = time.monotonic() + STATUS_TIMEOUT
        while pings < WATCHDOGS[traced] or not saw_status:
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
        print(f"  {name}: {pings} watchdog pings, all gaps < {limit:.1f} s, status refreshed")

        os.kill(pid, signal.SIGTERM)
        n.wait_for(lambda ls: "STOPPING=1" in ls, STOP_TIMEOUT, "STOPPING=1 after SIGTERM",
                   proc)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)  # strace exits with the daemon's status
        except subprocess.TimeoutExpired:
            raise Failure(f"no exit within {STOP_TIMEOUT:.0f} s of SIGTERM")
        if code != 0:
            raise Failure(f"exit status {code} after SIGTERM, want 0")
        with open(log_path, errors="replace") as f:
            text = f.read()
        for mark in SANITIZER_MARKS:
            if mark in text:
                raise Failure(f"sanitizer report in the daemon's stderr ({mark})")
        others = sorted({p for _, _, p in n.log if p != pid})
        if others:
            raise Failure(f"notifications from pids {others}, not only the main pid {pid}")
        print(f"  {name}: STOPPING=1, exit 0; every notification from the main pid")
        return data
    except Failure as e:
        with open(log_path, errors="replace") as f:
            tail = f.read()[-4000:]
        raise Failure(f"{name}: {e}\n--- notifications: {n.log}\n--- stderr (tail):\n{tail}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        n.close()


# ---- --sandbox: the trace against the unit ----

def syscall_groups():
    """{'@group': [entries]} as this systemd defines them."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def expand(names, groups, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for x in names:
        if x.startswith("@"):
            if x in seen:
                continue
            seen.add(x)
            if x not in groups:
                raise Failure(f"unknown syscall group {x}")
            out |= expand(groups[x], groups, seen)
        else:
            out.add(x)
    return out


def unit_policy(unit_path):
    """(allowed syscalls, allowed AF_ families) from the unit's lines (systemd's semantics:
    the first SystemCallFilter= is an allow list, later ~ lines remove from it)."""
    groups = syscall_groups()
    allowed, families = None, None
    with open(unit_path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("SystemCallFilter="):
                v = line.split("=", 1)[1].split()
                if v and v[0].startswith("~"):
                    v[0] = v[0][1:]
                    if allowed is None:
                        raise Failure("a deny-list SystemCallFilter= first: not handled here")
                    allowed -= expand(v, groups)
                else:
                    allowed = (allowed or set()) | expand(v, groups)
            elif line.startswith("RestrictAddressFamilies="):
                families = set(line.split("=", 1)[1].split())
    if allowed is None or families is None:
        raise Failure(f"{unit_path}: no SystemCallFilter= or RestrictAddressFamilies=")
    return allowed, families


CALL = re.compile(r"^\d+\s+([a-z_0-9]+)\((.*)$")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
PATH_CALLS = {"mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
              "rmdir", "link", "linkat", "symlink", "symlinkat", "truncate", "chmod",
              "fchmodat", "utimensat"}


def trace_paths(args):
    """Absolute paths an argument list names: 'fd</dir>, "name"' joined, or "/abs"."""
    paths = []
    for m in re.finditer(r'(?:(?:\d+|AT_FDCWD)(?:<([^>]*)>)?,\s*)?"([^"]*)"', args):
        base, p = m.group(1), m.group(2)
        if p.startswith("/"):
            paths.append(os.path.normpath(p))
        elif base:
            paths.append(os.path.normpath(os.path.join(base, p)))
    return paths


def check_trace(trace, unit_path, data_dir, name):
    allowed, families = unit_policy(unit_path)
    data_dir = os.path.realpath(data_dir)
    used, problems = set(), []
    with open(trace, errors="replace") as f:
        for line in f:
            m = CALL.match(line)
            if not m:
                continue
            call, args = m.group(1), m.group(2)
            used.add(call)
            if call == "socket":
                fam = args.split(",", 1)[0].strip()
                if fam not in families and fam != "AF_NETLINK":
                    problems.append(f"socket family {fam} outside RestrictAddressFamilies: {line.strip()}")
            elif call in ("mmap", "mprotect", "pkey_mprotect"):
                if "PROT_EXEC" in args and (call != "mmap" or "PROT_WRITE" in args):
                    problems.append(f"write+exec or added exec memory: {line.strip()}")
            if call in ("open", "openat", "openat2", "creat"):
                for p in trace_paths(args)[:1]:
                    if p.startswith("/proc/") and not re.match(r"^/proc/(self|thread-self|\d+)(/|$)", p):
                        problems.append(f"/proc outside the process's own (ProcSubset=pid): {line.strip()}")
                    if (call == "creat" or any(fl in args for fl in WRITE_FLAGS)) and \
                            not (p == data_dir or p.startswith(data_dir + "/")) and \
                            not p.startswith("/dev/"):
                        problems.append(f"write outside data_dir: {line.strip()}")
            elif call in PATH_CALLS:
                for p in trace_paths(args):
                    if not (p == data_dir or p.startswith(data_dir + "/")):
                        problems.append(f"{call} outside data_dir: {line.strip()}")
    if not used:
        raise Failure(f"{name}: empty trace {trace}")
    for call in sorted(used - allowed):
        problems.append(f"system call {call} not in the unit's SystemCallFilter")
    print(f"  {name}: {len(used)} distinct system calls, all allowed by "
          f"{os.path.basename(unit_path)}" if not problems else f"  {name}: {len(problems)} problem(s)")
    return problems


def main():
    args = sys.argv[1:]
    sandbox = None
    if args[:1] == ["--sandbox"] and len(args) == 2:
        sandbox = args[1]
        if shutil.which("strace") is None:
            print("FAIL: strace not installed (scripts/deps installs it)", file=sys.stderr)
            return 1
    elif args:
        print("usage: sd_notify.py [--sandbox SYSTEMD_DIR]", file=sys.stderr)
        return 2
    bins = [("strata-ingest", os.environ.get("STRATA_INGEST")),
            ("strata-indexer", os.environ.get("STRATA_INDEXER"))]
    nats = None
    try:
        kafka = kafka_broker()
        with tempfile.TemporaryDirectory(prefix="strata-ops-notify-") as work:
            try:
                nats = OwnNats(work)
                problems = []
                for name, binary in bins:
                    if not binary or not os.access(binary, os.X_OK):
                        raise Failure(f"{name}: binary not set or not executable: {binary!r}")
                    trace = os.path.join(work, f"{name}.trace") if sandbox else None
                    data = run_daemon(binary, name, work, kafka, nats.url, trace)
                    if sandbox:
                        unit = os.path.join(sandbox, f"{name}.service")
                        problems += [f"{name}: {p}" for p in check_trace(trace, unit, data, name)]
                if problems:
                    raise Failure("the daemons did what their units forbid:\n" +
                                  "\n".join(problems[:60]))
            finally:
                if nats is not None:
                    nats.stop()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
