#!/usr/bin/env bash
# ops_unit_security: every strata unit keeps its service contract and its sandbox.
#
#   unit_security.sh SOURCE_DIR [MAX_EXPOSURE_TENTHS]
#
# For each unit in systemd/ (the plain ones and the templates):
#  - `systemd-analyze security --offline=true` rates it OK, SAFE or PERFECT (systemd 252:
#    OK is an exposure below 5.0), and --threshold=MAX (default 20, i.e. 2.0: today's units
#    score 1.1) passes, so a dropped sandboxing line fails here even while still "OK";
#  - the service contract docs/operations.md describes: Type=notify, WatchdogSec,
#    Restart=on-failure, ExecStartPre=... --check-config, User=strata (never DynamicUser:
#    the data must keep a stable owner), StateDirectory=strata (strata/%i for templates).
set -euo pipefail
src=$(cd "$1" && pwd)
max=${2:-20}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
has() { grep -qxE "$2" "$1" || fail "$(basename "$1"): no line matching '$2'"; }

for u in strata-ingest.service strata-indexer.service strata-ingest@.service \
  strata-indexer@.service; do
  f=$src/systemd/$u
  [[ -f "$f" ]] || fail "systemd/$u missing"

  has "$f" 'Type=notify'
  has "$f" 'WatchdogSec=[1-9][0-9]*s?'
  has "$f" 'Restart=on-failure'
  has "$f" 'ExecStartPre=/usr/bin/strata-(ingest|indexer) --config /etc/strata/[^ ]+\.yaml --check-config'
  has "$f" 'User=strata'
  if grep -qE '^DynamicUser=(yes|true|1|on)' "$f"; then
    fail "$u: DynamicUser would give the data a changing owner"
  fi
  if [[ "$u" == *@.service ]]; then
    has "$f" 'StateDirectory=strata/%i'
    has "$f" 'ExecStart=/usr/bin/strata-(ingest|indexer) --config /etc/strata/%i\.yaml'
  else
    has "$f" 'StateDirectory=strata'
    has "$f" 'ExecStart=/usr/bin/strata-(ingest|indexer) --config /etc/strata/strata\.yaml'
  fi

  out=$(systemd-analyze security --offline=true --no-pager "$f" 2>&1) \
    || fail "systemd-analyze security $u failed: $out"
  line=$(grep 'Overall exposure level' <<<"$out") || fail "$u: no overall rating in: $out"
  # "→ Overall exposure level for strata-ingest.service: 1.1 OK 🙂"
  read -r level rating < <(sed -E 's/.*: ([0-9]+\.[0-9]) ([A-Z]+).*/\1 \2/' <<<"$line")
  case "$rating" in
    OK | SAFE | PERFECT) ;;
    *) fail "$u rated $level $rating (want OK or better):
$out" ;;
  esac
  if ! systemd-analyze security --offline=true --no-pager --threshold="$max" "$f" \
    >/dev/null 2>&1; then
    fail "$u exposure $level is above $((max / 10)).$((max % 10)) (a sandboxing line was lost?):
$(grep '✗' <<<"$out")"
  fi
  echo "   $u: $level $rating"
done
# One sandbox for all four: the block from "# --- sandbox" to the end of [Service] is the
# same text in each (ops_sandbox_trace checks the daemons against the plain units' copy).
sandbox() { sed -n '/^# --- sandbox/,/^\[Install\]/p' "$1"; }
ref=$(sandbox "$src/systemd/strata-ingest.service")
[[ -n "$ref" ]] || fail "strata-ingest.service has no '# --- sandbox' block"
for u in strata-indexer.service strata-ingest@.service strata-indexer@.service; do
  [[ "$(sandbox "$src/systemd/$u")" == "$ref" ]] \
    || fail "$u's sandbox block differs from strata-ingest.service's:
$(diff <(echo "$ref") <(sandbox "$src/systemd/$u"))"
done
echo "ops_unit_security: ok"
