#!/usr/bin/env python3
"""Every ctest entry that runs strata daemons against the fixture's one nats-server holds the
RESOURCE_LOCK strata_nats_subjects (tests/CMakeLists.txt).

The daemons' JetStream stream holds the fixed subjects strata.*.sealed|expired|indexed and two
streams may not share subjects, so each such test deletes the strata streams an earlier test
left (st_nats_clean, tests/st_nats_test.h). Two of them run at once (ctest -j) delete each
other's stream under their daemons: a restarted indexer then finds an empty stream and never
indexes the windows sealed before (check_indexer_daemon's "windows not indexed in time (0 of
4)"). A test source that starts strata-ingest or strata-indexer, or cleans the strata streams,
with the fixture's STRATA_TEST_NATS is such a test.

usage: check_nats_lock.py CTEST BUILD_DIR SOURCE_DIR
"""
import glob
import json
import os
import re
import subprocess
import sys

LOCK = "strata_nats_subjects"


def main():
    ctest, build, source = sys.argv[1:4]
    out = subprocess.run([ctest, "--show-only=json-v1"], cwd=build, check=True,
                         capture_output=True, text=True).stdout
    tests = json.loads(out)["tests"]
    users = set()
    for path in glob.glob(os.path.join(source, "tests", "*.c")):
        text = open(path, encoding="utf-8").read()
        if "STRATA_TEST_NATS" in text and re.search(
                r'"STRATA_INGEST"|"STRATA_INDEXER"|st_nats_clean\(', text):
            users.add(os.path.splitext(os.path.basename(path))[0])
    if not users:
        sys.exit("no test runs daemons against the fixture's nats-server: the scan is broken")
    bad, seen, listed = [], set(), set()
    for t in tests:
        cmd = t.get("command") or []
        if not cmd or os.path.basename(cmd[0]) not in users:
            continue
        listed.add(os.path.basename(cmd[0]))
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        if "brokers" not in (props.get("FIXTURES_REQUIRED") or []):
            continue  # brokers of its own (e.g. brokers_secure): no one else's stream
        seen.add(os.path.basename(cmd[0]))
        if LOCK not in (props.get("RESOURCE_LOCK") or []) and not props.get("RUN_SERIAL"):
            bad.append(t["name"])
    missing = sorted(users - listed)
    if missing:
        sys.exit(f"no ctest entry with the brokers fixture runs {', '.join(missing)}")
    if bad:
        sys.exit(f"without RESOURCE_LOCK {LOCK}: {', '.join(sorted(bad))} (they would delete "
                 "each other's JetStream stream when run at once)")
    print(f"{len(seen)} test binaries hold {LOCK}: {', '.join(sorted(seen))}")


if __name__ == "__main__":
    main()
