#!/usr/bin/env bash
# `strata demo` while it serves, as a black box: a smaller demo (6,000 images) reaches its
# report with recall@10 >= 0.95; while it keeps serving, `strata produce` reaches its embedded
# Kafka-protocol broker from outside the process and what it produces becomes searchable; the
# status page in headless chromium shows the demo's windows by state and a search's hits;
# Ctrl-C (SIGINT) stops it with exit 0; a sanitizer build's stderr stays clean.
#
#   demo_live.sh STRATA_CLI
set -euo pipefail
cli=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo-live.XXXXXX")
pid=
cleanup() {
  [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "demo_live: FAILED: $*" >&2
  echo "---- demo output" >&2; cat "$work/out" >&2 || true
  exit 1
}
# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

"$cli" demo --train 6000 --queries 1000 --listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/out" 2>&1 &
pid=$!
wait_for 600 grep -q "^serving until Ctrl-C" "$work/out" || fail "no report within 600 s"
kill -0 "$pid" || fail "the demo exited after its report"
recall=$(awk '/^recall@10 /{print $2}' "$work/out")
awk -v r="$recall" 'BEGIN { exit !(r >= 0.95) }' || fail "recall@10 '$recall' < 0.95"
url=$(awk '/^search URL /{print $3}' "$work/out" | sed 's|/v1/collections/.*||')
brokers=$(awk '/^kafka /{print $2}' "$work/out")
[[ "$url" == http://127.0.0.1:* && "$brokers" == 127.0.0.1:* ]] || fail "no URL/brokers"

# From outside the process: three new records through the embedded broker.
python3 - "$work/new.jsonl" <<'PY'
import json, sys, time
now = int(time.time() * 1000)
with open(sys.argv[1], "w") as f:
    for i in range(3):
        vec = [float((i * 37 + j) % 256) for j in range(784)]
        f.write(json.dumps({"id": 900000 + i, "vector": vec, "ts": now}) + "\n")
PY
"$cli" produce --brokers "$brokers" --topic fmnist --collection fmnist --format json --u64-ids \
  "$work/new.jsonl" >"$work/produce.out" 2>&1 || fail "strata produce: $(cat "$work/produce.out")"
found() { curl -sf "$url/v1/collections/fmnist/records/$1" >/dev/null; }
for i in 0 1 2; do
  wait_for 60 found $((900000 + i)) || fail "record $((900000 + i)) not found within 60 s"
done
# ...and searchable (strong): the first one's own vector finds it at distance 0.
python3 - "$work/new.jsonl" >"$work/q.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(json.dumps({"vector": r["vector"], "k": 3}))
PY
curl -sf "$url/v1/collections/fmnist/search" -H 'content-type: application/json' \
  -d @"$work/q.json" >"$work/hits.json" || fail "search failed"
python3 - "$work/hits.json" <<'PY' || fail "search did not return record 900000 first"
import json, sys
h = json.load(open(sys.argv[1]))["hits"]
assert str(h[0]["id"]) == "900000" and h[0]["distance"] == 0, h[:1]
PY

# The status page in a real browser (Debian's chromium): the demo's windows with their
# states, and a search with a stored record's vector that renders hits.
browser=$(command -v chromium || command -v chromium-headless-shell || true)
[[ -n "$browser" ]] || fail "chromium is not installed (scripts/deps installs it)"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$work/chromium" --virtual-time-budget=10000 --dump-dom \
  "$url/?collection=fmnist&search=sample" >"$work/page.html" 2>"$work/chromium.log" ||
  fail "chromium failed: $(tail -5 "$work/chromium.log")"
indexed=$(grep -o 'data-state="indexed"' "$work/page.html" | wc -l)
open_w=$(grep -o 'data-state="open"' "$work/page.html" | wc -l)
hits=$(grep -o 'class="hit"' "$work/page.html" | wc -l)
((indexed >= 6)) || fail "status page shows $indexed indexed windows, expected 6"
((open_w >= 1)) || fail "status page shows no open window"
grep -q 'data-status="done"' "$work/page.html" || fail "status page search did not finish"
((hits >= 1)) || fail "status page search shows no hits"

kill -INT "$pid"
deadline=$((SECONDS + 60))
while kill -0 "$pid" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "still running 60 s after SIGINT"
  sleep 0.2
done
rc=0; wait "$pid" || rc=$?
pid=
[[ $rc == 0 ]] || fail "exit $rc after SIGINT"
if grep -Eq "ERROR: (Address|Leak)Sanitizer|runtime error:" "$work/out"; then
  fail "sanitizer report"
fi
echo "demo_live: recall@10 $recall; produced records searchable; status page: $indexed indexed windows, $hits hits; clean stop"
