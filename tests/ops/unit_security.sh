#!/usr/bin/env bash
# ops_unit_security: every strata unit keeps its service contract and its sandbox.
#
#   unit_security.sh SOURCE_DIR [MAX_EXPOSURE_TENTHS]
#
# For each unit in systemd/ (the plain ones and the templates):
#  - `systemd-analyze security --offline=true` rates it OK, SAFE or PERFECT (systemd 252:
#    OK is an exposure below 5.0), and --threshold=MAX (default 11, i.e. 1.1: today's score)
#    passes;
#  - every line of the sandbox (SANDBOX below) is there as written: many of them move the
#    exposure by less than 0.1 or not at all (Group=, UMask=, DevicePolicy=, ProcSubset=,
#    MemoryDenyWriteExecute=, ...), so the score alone cannot notice one being dropped;
#  - and the check itself is sensitive: the ingest unit with any one sandbox line removed
#    must fail it (before this, removing any single line but User= or
#    CapabilityBoundingSet= from all four units passed);
#  - the service contract docs/operations.md describes: Type=notify, WatchdogSec,
#    Restart=on-failure, ExecStartPre=... --check-config, User=strata (never DynamicUser:
#    the data must keep a stable owner), StateDirectory=strata (strata/%i for templates).
set -euo pipefail
src=$(cd "$1" && pwd)
max=${2:-11}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
has() { grep -qxE "$2" "$1" || fail "$(basename "$1"): no line matching '$2'"; }

# The sandbox every unit keeps, line for line (docs/operations.md "Hardening").
SANDBOX=(
  'User=strata' 'Group=strata' 'NoNewPrivileges=yes' 'CapabilityBoundingSet='
  'AmbientCapabilities=' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes'
  'PrivateDevices=yes' 'DevicePolicy=closed' 'PrivateMounts=yes' 'PrivateUsers=yes'
  'UMask=0077' 'ProtectKernelTunables=yes' 'ProtectKernelModules=yes'
  'ProtectKernelLogs=yes' 'ProtectControlGroups=yes' 'ProtectClock=yes'
  'ProtectHostname=yes' 'ProtectProc=invisible' 'ProcSubset=pid' 'KeyringMode=private'
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'RestrictNamespaces=yes'
  'RestrictRealtime=yes' 'RestrictSUIDSGID=yes' 'RemoveIPC=yes' 'LockPersonality=yes'
  'MemoryDenyWriteExecute=yes' 'SystemCallArchitectures=native'
  'SystemCallFilter=@system-service' 'SystemCallFilter=~@privileged @resources'
  'SystemCallErrorNumber=EPERM'
)

# check_unit FILE NAME: every check above for one unit file (NAME: its unit name).
check_unit() {
  local f=$1 u=$2
  for l in "${SANDBOX[@]}"; do
    grep -qxF -- "$l" "$f" || fail "$u: sandbox line '$l' missing"
  done

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
}

for u in strata-ingest.service strata-indexer.service strata-ingest@.service \
  strata-indexer@.service; do
  f=$src/systemd/$u
  [[ -f "$f" ]] || fail "systemd/$u missing"
  check_unit "$f" "$u"
done

# The check notices each sandbox line going: a copy of the ingest unit without it fails.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for l in "${SANDBOX[@]}"; do
  grep -vxF -- "$l" "$src/systemd/strata-ingest.service" >"$tmp/strata-ingest.service"
  if (check_unit "$tmp/strata-ingest.service" strata-ingest.service) >/dev/null 2>&1; then
    fail "strata-ingest.service without '$l' still passes this check"
  fi
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
