#!/usr/bin/env bash
# `strata demo`'s options and its temporary directory, as a black box (no full run):
# bad values are usage errors (exit 2) naming the option; a search port already in use fails
# the start (exit 1, the reason printed) and removes the temporary directory it made, and
# only that directory, even when TMPDIR holds quotes and spaces; --data-dir and TMPDIR paths
# holding " #" keep the data where they say; a --data-dir that already holds data is refused
# (its windows would be counted and searched as this run's).
#
#   demo_options.sh STRATA_CLI
set -euo pipefail
cli=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo-options.XXXXXX")
lpid=
cleanup() {
  [[ -n "$lpid" ]] && kill "$lpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "demo_options: FAILED: $*" >&2
  [[ -f "$work/err" ]] && { echo "---- stderr" >&2; cat "$work/err" >&2; }
  exit 1
}
# run EXPECTED_RC ARGS...: runs the demo (stdout to out, stderr to err), checks the exit code.
run() {
  local want=$1 rc=0; shift
  timeout 120 "$cli" demo "$@" >"$work/out" 2>"$work/err" || rc=$?
  [[ $rc == "$want" ]] || fail "strata demo $*: exit $rc, expected $want"
}

# Bad option values: exit 2, and the message names the option that was wrong.
run 2 --train abc
grep -q -- "--train" "$work/err" || fail "--train abc: the message does not name --train"
run 2 --queries 12x
grep -q -- "--queries" "$work/err" || fail "--queries 12x: the message does not name --queries"
run 2 --windows 4294967297 # not 1 after a cast
run 2 --windows -1
run 2 --listen bogus --train 100 --queries 1

# A port in use: something listens on the search port.
python3 -c '
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os, time; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(900)' "$work/port" </dev/null >/dev/null 2>&1 & # killed by cleanup
lpid=$!
deadline=$((SECONDS + 30))
until [[ -s "$work/port" ]]; do
  ((SECONDS < deadline)) || fail "the listener did not start"
  sleep 0.1
done
busy=127.0.0.1:$(cat "$work/port")
small=(--train 100 --queries 1 --listen "$busy" --exit-after-report)

# The temporary directory is removed, and nothing else, whatever TMPDIR holds.
mkdir -p "$work/tmp" "$work/victim"
touch "$work/victim/keep"
odd="$work/q' '$work/victim' '"
mkdir -p "$odd"
for t in "$work/tmp" "$odd"; do
  TMPDIR=$t run 1 "${small[@]}"
  grep -q "$busy" "$work/err" || fail "port in use: the address is not in the message"
  [[ -z "$(ls -A "$t")" ]] || fail "TMPDIR=$t: left behind: $(ls -A "$t")"
  [[ -f "$work/victim/keep" ]] || fail "TMPDIR=$t: removed a file outside its directory"
done

# Paths with " #" (a YAML comment when written plainly) keep the data where they say.
hash_tmp="$work/t #x"
mkdir -p "$hash_tmp"
TMPDIR=$hash_tmp run 1 "${small[@]}"
[[ ! -e "$work/t" ]] || fail "TMPDIR='$hash_tmp': data written to $work/t"
[[ -z "$(ls -A "$hash_tmp")" ]] || fail "TMPDIR='$hash_tmp': left behind: $(ls -A "$hash_tmp")"
run 1 "${small[@]}" --data-dir "$work/d #1"
[[ -d "$work/d #1/ingest" ]] || fail "--data-dir '$work/d #1': no ingest data in it"
[[ ! -e "$work/d" ]] || fail "--data-dir '$work/d #1': data written to $work/d"

# A --data-dir with data in it is refused before anything starts.
run 2 "${small[@]}" --data-dir "$work/d #1"
grep -q "not empty" "$work/err" || fail "non-empty --data-dir: no clear message"
echo "demo_options: bad values exit 2; port in use exits 1 and cleans up only its own directory;" \
  "paths with quotes and ' #' honoured; a used --data-dir refused"
