#!/usr/bin/env bash
# The README's first command as a test (issue: "a test runs scripts/demo --exit-after-report
# and checks recall@10 >= 0.95 in its output"): runs it, with the build directory of this
# ctest run, and checks the report — recall@10 >= 0.95, a QPS, produce->search latency, the
# search URL with its curl and `strata search` lines — and exit 0.
#
#   demo_report.sh SOURCE_DIR BUILD_DIR [extra strata demo args]
set -euo pipefail
src=$1 build=$2
shift 2
log=$(mktemp "${TMPDIR:-/tmp}/strata-demo-report.XXXXXX")
trap 'rm -f "$log"' EXIT
rc=0
STRATA_BUILD_DIR="$build" "$src/scripts/demo" --exit-after-report --listen 127.0.0.1:0 "$@" \
  >"$log" 2>&1 || rc=$?
cat "$log"
fail() { echo "demo_report: FAILED: $*" >&2; exit 1; }
[[ $rc == 0 ]] || fail "scripts/demo exited $rc"
recall=$(awk '/^recall@10 /{print $2}' "$log")
[[ -n "$recall" ]] || fail "no recall@10 line in the report"
awk -v r="$recall" 'BEGIN { exit !(r >= 0.95) }' || fail "recall@10 $recall < 0.95"
grep -Eq '^QPS +[0-9]+' "$log" || fail "no QPS line"
grep -Eq '^produce->search +p50 [0-9.]+ ms' "$log" || fail "no produce->search latency"
grep -Eq '^search URL +http://127\.0\.0\.1:[0-9]+/v1/collections/fmnist/search' "$log" ||
  fail "no search URL"
grep -q "curl -s http://127.0.0.1:" "$log" || fail "no curl line"
grep -q "strata search --url http://127.0.0.1:" "$log" || fail "no strata search line"
for stage in 1 2 3 4 5 6 7; do
  grep -q "^\[$stage/7\]" "$log" || fail "stage $stage/7 not reported"
done
echo "demo_report: recall@10 $recall"
