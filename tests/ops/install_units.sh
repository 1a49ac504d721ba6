#!/usr/bin/env bash
# ops_install_units: what `cmake --install` puts where, and that systemd accepts it.
#
#   install_units.sh BUILD_DIR SOURCE_DIR
#
# 1. prefix /usr into a DESTDIR (what the .deb holds): every expected file is there; the units
#    are the checked-in ones byte for byte; every program and config they name exists in the
#    staged tree; `systemd-analyze verify --root` (with the host's own units for targets such
#    as sysinit.target) accepts the plain units and an instance of each template without a
#    single diagnostic; the exact ExecStartPre command lines accept the example config;
#    systemd-sysusers and systemd-tmpfiles on the staged files create user strata and
#    /var/lib/strata owned by it.
# 2. another prefix, no DESTDIR: the units name that prefix's binaries and config (nothing
#    left pointing at /usr/bin or /etc/strata), `systemd-analyze verify` accepts them as they
#    lie, and installing again keeps a config the operator has edited.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-ops-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
units=(strata-ingest.service strata-indexer.service strata-ingest@.service
       strata-indexer@.service)

# Runs systemd-analyze verify; any diagnostic at all is a failure (unknown keys and bad
# values are only warnings with exit status 0).
verify_clean() {
  local out
  if ! out=$(systemd-analyze verify --man=no "$@" 2>&1); then
    fail "systemd-analyze verify $*: $out"
  fi
  [[ -z "$out" ]] || fail "systemd-analyze verify $* printed diagnostics:
$out"
}

# ExecStart/ExecStartPre programs and the --config files of a unit.
unit_programs() { sed -n 's/^ExecStart\(Pre\)\?=\([^ ]*\).*/\2/p' "$1" | sort -u; }
unit_configs() { sed -n 's/^ExecStart\(Pre\)\?=.*--config \([^ ]*\).*/\2/p' "$1" | sort -u; }
unit_docs() { sed -n 's/^Documentation=//p' "$1" | tr ' ' '\n' | sed -n 's|^file://||p'; }

echo "== prefix /usr, DESTDIR"
root=$work/root
DESTDIR=$root cmake --install "$build" --prefix /usr >"$work/install-usr.log" 2>&1 \
  || fail "cmake --install --prefix /usr: $(cat "$work/install-usr.log")"
for f in usr/bin/strata usr/bin/strata-ingest usr/bin/strata-indexer; do
  [[ -f "$root/$f" && -x "$root/$f" ]] || fail "/$f missing or not executable"
done
for f in "${units[@]/#/lib/systemd/system/}" usr/lib/sysusers.d/strata.conf \
  usr/lib/tmpfiles.d/strata.conf etc/strata/strata.yaml usr/share/doc/strata/README.md \
  usr/share/doc/strata/operations.md usr/share/doc/strata/config.md \
  usr/share/doc/strata/ingest.md usr/share/doc/strata/indexer.md \
  usr/share/doc/strata/strata.yaml usr/share/doc/strata/systemd.md; do
  [[ -f "$root/$f" ]] || fail "/$f not installed"
done
for u in "${units[@]}"; do
  cmp -s "$src/systemd/$u" "$root/lib/systemd/system/$u" \
    || fail "$u installed for prefix /usr differs from systemd/$u"
  for p in $(unit_programs "$root/lib/systemd/system/$u"); do
    [[ -x "$root$p" ]] || fail "$u runs $p, which the install does not provide"
  done
  for d in $(unit_docs "$root/lib/systemd/system/$u"); do
    [[ -f "$root$d" ]] || fail "$u names documentation $d, which is not installed"
  done
done
for u in strata-ingest.service strata-indexer.service; do
  for c in $(unit_configs "$root/lib/systemd/system/$u"); do
    [[ -f "$root$c" ]] || fail "$u reads $c, which is not installed"
  done
  # The unit's own check, paths moved into the staged tree.
  pre=$(sed -n 's/^ExecStartPre=//p' "$root/lib/systemd/system/$u")
  [[ "$pre" == *"--check-config"* ]] || fail "$u: ExecStartPre is not a --check-config"
  # shellcheck disable=SC2086
  set -- $pre
  args=()
  for a in "$@"; do [[ "$a" == /* ]] && args+=("$root$a") || args+=("$a"); done
  "${args[@]}" >"$work/check.log" 2>&1 || fail "$u ExecStartPre rejects the example config: $(cat "$work/check.log")"
done
"$root/usr/bin/strata" check-config "$root/etc/strata/strata.yaml" >/dev/null \
  || fail "strata check-config rejects the installed example config"

# systemd-analyze verify with the staged tree as root: the host's units give it the targets
# our units order against (not ours: the copy never overwrites a staged file).
mkdir -p "$root/lib/systemd/system"
cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
verify_clean --root="$root" strata-ingest.service strata-indexer.service \
  strata-ingest@ops.service strata-indexer@ops.service
echo "   verify --root: clean"

# The user and the state directory, from the staged sysusers.d/tmpfiles.d entries.
systemd-sysusers --root="$root" >"$work/sysusers.log" 2>&1 \
  || fail "systemd-sysusers: $(cat "$work/sysusers.log")"
pw=$(grep '^strata:' "$root/etc/passwd") || fail "systemd-sysusers created no user strata"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[[ "$home" == /var/lib/strata ]] || fail "user strata's home is $home"
[[ "$shell" == */nologin ]] || fail "user strata has a login shell: $shell"
(( uid < 1000 )) || fail "user strata is not a system user (uid $uid)"
grep -q "^strata:x:$gid:" "$root/etc/group" || fail "no group strata with gid $gid"
systemd-tmpfiles --root="$root" --create strata.conf >"$work/tmpfiles.log" 2>&1 \
  || fail "systemd-tmpfiles: $(cat "$work/tmpfiles.log")"
st=$(stat -c '%u:%g %a' "$root/var/lib/strata") || fail "tmpfiles created no /var/lib/strata"
[[ "$st" == "$uid:$gid 750" ]] || fail "/var/lib/strata is $st, want $uid:$gid 750"
echo "   sysusers: strata uid $uid; tmpfiles: /var/lib/strata $st"

echo "== prefix $work/opt, no DESTDIR"
opt=$work/opt
cmake --install "$build" --prefix "$opt" >"$work/install-opt.log" 2>&1 \
  || fail "cmake --install --prefix $opt: $(cat "$work/install-opt.log")"
for u in "${units[@]}"; do
  f=$opt/lib/systemd/system/$u
  [[ -f "$f" ]] || fail "$u not installed under $opt/lib/systemd/system"
  if grep -vE '^[[:space:]]*#' "$f" | grep -nE '(^|[= ]|file://)(/usr/bin/|/etc/strata/|/usr/share/doc/)'; then
    fail "$u installed under prefix $opt still names /usr or /etc paths (above)"
  fi
  progs=$(unit_programs "$f")
  [[ -n "$progs" ]] || fail "$u has no ExecStart"
  for p in $progs; do
    [[ "$p" == "$opt/bin/"* && -x "$p" ]] || fail "$u runs $p, not an installed $opt/bin program"
  done
  for c in $(unit_configs "$f"); do
    [[ "$c" == "$opt/etc/strata/"* ]] || fail "$u reads $c, outside $opt/etc/strata"
  done
  for d in $(unit_docs "$f"); do
    [[ -f "$d" ]] || fail "$u names documentation $d, which is not installed"
  done
done
[[ -f "$opt/etc/strata/strata.yaml" ]] || fail "no $opt/etc/strata/strata.yaml"
[[ -f "$opt/lib/sysusers.d/strata.conf" && -f "$opt/lib/tmpfiles.d/strata.conf" ]] \
  || fail "sysusers.d/tmpfiles.d entries not under $opt/lib"
verify_clean "$opt"/lib/systemd/system/strata-ingest.service \
  "$opt"/lib/systemd/system/strata-indexer.service
echo "   verify: clean"

# An edited config survives the next install.
echo "# edited by the operator" >>"$opt/etc/strata/strata.yaml"
cmake --install "$build" --prefix "$opt" >"$work/install-opt2.log" 2>&1 \
  || fail "second cmake --install: $(cat "$work/install-opt2.log")"
grep -q '^# edited by the operator' "$opt/etc/strata/strata.yaml" \
  || fail "cmake --install overwrote an edited $opt/etc/strata/strata.yaml"
echo "ops_install_units: ok"
