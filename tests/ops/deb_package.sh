#!/usr/bin/env bash
# ops_deb_package: `cpack -G DEB` builds the strata package, and it holds what it should.
#
#   deb_package.sh BUILD_DIR VERSION
#
# The package is built into a temporary directory (not the build tree), then:
#  - dpkg-deb -c lists the three programs, the four units (plain and templates) in
#    /lib/systemd/system, the sysusers.d and tmpfiles.d entries, /etc/strata/strata.yaml and
#    the docs (operations.md among them);
#  - dpkg-deb -I: Package strata, Version VERSION, Depends computed by dpkg-shlibdeps (libc6,
#    librdkafka, libnats, libsystemd0, libsimdjson, ...) plus adduser, the conffile /etc/strata/strata.yaml,
#    and maintainer scripts that parse (sh -n), create the user and never enable or start a
#    service;
#  - dpkg-deb -x: the extracted programs run (--version prints VERSION) and the extracted
#    example config passes `strata check-config` and each daemon's --check-config;
#  - dpkg -i into a throwaway root (dpkg --root, maintainer scripts honouring DPKG_ROOT):
#    installed, conffile registered, user strata and /var/lib/strata made by postinst; an
#    edited conffile survives a reinstall; -r keeps config and data, -P keeps the data.
set -euo pipefail
build=$(cd "$1" && pwd)
version=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-ops-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
command -v dpkg-shlibdeps >/dev/null || fail "dpkg-shlibdeps missing: scripts/deps installs dpkg-dev"

(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out") \
  >"$work/cpack.log" 2>&1 || fail "cpack -G DEB: $(cat "$work/cpack.log")"
shopt -s nullglob
debs=("$work"/out/strata_*.deb)
[[ ${#debs[@]} -eq 1 ]] || fail "want one strata_*.deb, got: ${debs[*]:-none} ($(cat "$work/cpack.log"))"
deb=${debs[0]}
echo "   built $(basename "$deb") ($(stat -c %s "$deb") bytes)"

dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|' >"$work/contents"
for f in /usr/bin/strata /usr/bin/strata-ingest /usr/bin/strata-indexer \
  /lib/systemd/system/strata-ingest.service /lib/systemd/system/strata-indexer.service \
  /lib/systemd/system/strata-ingest@.service /lib/systemd/system/strata-indexer@.service \
  /usr/lib/sysusers.d/strata.conf /usr/lib/tmpfiles.d/strata.conf /etc/strata/strata.yaml \
  /usr/share/doc/strata/README.md /usr/share/doc/strata/operations.md \
  /usr/share/doc/strata/config.md /usr/share/doc/strata/systemd.md \
  /usr/share/doc/strata/strata.yaml; do
  grep -qxF "$f" "$work/contents" || fail "package lacks $f; it has:
$(cat "$work/contents")"
done
if grep -E '^/usr/local|^/tmp|^/root|^/home' "$work/contents"; then
  fail "package holds files outside the system prefix (above)"
fi

info=$(dpkg-deb -I "$deb")
field() { dpkg-deb -f "$deb" "$1"; }
[[ "$(field Package)" == strata ]] || fail "Package is '$(field Package)'"
[[ "$(field Version)" == "$version" ]] || fail "Version is '$(field Version)', want $version"
deps=$(field Depends)
for d in libc6 librdkafka libnats libsystemd0 libyaml libsimdjson adduser; do
  grep -q "$d" <<<"$deps" || fail "Depends lacks $d: $deps"
done
mkdir "$work/control"
dpkg-deb -e "$deb" "$work/control"
grep -qxF /etc/strata/strata.yaml "$work/control/conffiles" \
  || fail "/etc/strata/strata.yaml is not a conffile: $info"
for s in postinst prerm postrm; do
  [[ -x "$work/control/$s" ]] || fail "no executable $s in the package"
  sh -n "$work/control/$s" || fail "$s does not parse"
done
grep -q 'systemd-sysusers' "$work/control/postinst" || fail "postinst does not run systemd-sysusers"
grep -q 'adduser --system' "$work/control/postinst" || fail "postinst has no adduser fallback"
grep -q 'daemon-reload' "$work/control/postinst" || fail "postinst does not daemon-reload"
if grep -vE '^[[:space:]]*#' "$work/control/postinst" \
  | grep -nE 'systemctl.*(enable|start|restart)|deb-systemd-invoke'; then
  fail "postinst enables or starts a service (above): the operator does that after editing the config"
fi
echo "   Depends: $deps"

x=$work/x
dpkg-deb -x "$deb" "$x"
for p in strata strata-ingest strata-indexer; do
  out=$("$x/usr/bin/$p" --version) || fail "extracted $p --version failed"
  [[ "$out" == "$p $version" ]] || fail "extracted $p --version says '$out', want '$p $version'"
done
"$x/usr/bin/strata" check-config "$x/etc/strata/strata.yaml" >"$work/check.log" 2>&1 \
  || fail "strata check-config rejects the packaged example config: $(cat "$work/check.log")"
for p in strata-ingest strata-indexer; do
  "$x/usr/bin/$p" --config "$x/etc/strata/strata.yaml" --check-config >"$work/check.log" 2>&1 \
    || fail "$p --check-config rejects the packaged config: $(cat "$work/check.log")"
done
# The check is a real one: the same binary refuses a broken copy with exit 2.
sed 's/^  - name: docs/  - name: 9 bad/; s/dim: 384/dim: zero/' "$x/etc/strata/strata.yaml" >"$work/bad.yaml"
set +e
"$x/usr/bin/strata" check-config "$work/bad.yaml" >"$work/bad.log" 2>&1
rc=$?
set -e
[[ $rc -eq 2 ]] || fail "strata check-config on a broken config exited $rc, want 2: $(cat "$work/bad.log")"
echo "   extracted: --version and check-config ok"

# dpkg itself, into a throwaway root: --root keeps dpkg's database and the files there, and
# --force-script-chrootless runs the maintainer scripts here with DPKG_ROOT set, which they
# honour (sysusers/tmpfiles --root, no systemctl). Dependencies are not in that root
# (--force-depends). Refuse to run scripts that would not honour it: they would act on this
# machine.
for s in postinst prerm postrm; do
  grep -q 'DPKG_ROOT' "$work/control/$s" || fail "$s ignores DPKG_ROOT: not running it"
done
droot=$work/droot
mkdir -p "$droot/var/lib/dpkg/info" "$droot/var/lib/dpkg/updates" "$droot/var/lib/dpkg/triggers"
touch "$droot/var/lib/dpkg/status" "$droot/var/lib/dpkg/available"
dpkg_root() {
  dpkg --root="$droot" --force-script-chrootless --force-depends --force-confold \
    --log="$work/dpkg.log" "$@" >>"$work/dpkg.out" 2>&1 || fail "dpkg $*: $(cat "$work/dpkg.out")"
}
status() { dpkg-query --root="$droot" -W -f='${Status}' strata 2>/dev/null || true; }
dpkg_root -i "$deb"
[[ "$(status)" == "install ok installed" ]] || fail "after dpkg -i: status '$(status)'"
for f in usr/bin/strata-ingest lib/systemd/system/strata-indexer@.service etc/strata/strata.yaml; do
  [[ -f "$droot/$f" ]] || fail "dpkg -i did not install /$f"
done
dpkg-query --root="$droot" -W -f='${Conffiles}' strata | grep -q '/etc/strata/strata.yaml' \
  || fail "dpkg did not register /etc/strata/strata.yaml as a conffile"
pw=$(grep '^strata:' "$droot/etc/passwd") || fail "postinst created no user strata"
IFS=: read -r _ _ uid gid _ _ _ <<<"$pw"
st=$(stat -c '%u:%g %a' "$droot/var/lib/strata") || fail "postinst created no /var/lib/strata"
[[ "$st" == "$uid:$gid 750" ]] || fail "/var/lib/strata is $st after postinst, want $uid:$gid 750"
echo "   dpkg -i: installed, user strata ($uid), /var/lib/strata $st"

# The operator's edit survives reinstalling; removal keeps config and data; purge drops the
# conffile but never the data.
echo "# operator edit" >>"$droot/etc/strata/strata.yaml"
echo "window data" >"$droot/var/lib/strata/keep"
dpkg_root -i "$deb"
grep -q '^# operator edit' "$droot/etc/strata/strata.yaml" || fail "reinstall replaced an edited conffile"
dpkg_root -r strata
[[ "$(status)" == "deinstall ok config-files" ]] || fail "after dpkg -r: status '$(status)'"
[[ ! -e "$droot/usr/bin/strata-ingest" && ! -e "$droot/lib/systemd/system/strata-ingest.service" ]] \
  || fail "dpkg -r left the programs or units"
[[ -f "$droot/etc/strata/strata.yaml" && -f "$droot/var/lib/strata/keep" ]] \
  || fail "dpkg -r removed the config or the data"
# units enabled by the operator (systemctl enable: symlinks), a template instance among them
wants=$droot/etc/systemd/system/multi-user.target.wants
mkdir -p "$wants"
ln -s /lib/systemd/system/strata-ingest.service "$wants/strata-ingest.service"
ln -s /lib/systemd/system/strata-indexer@.service "$wants/strata-indexer@a.service"
ln -s /lib/systemd/system/other.service "$wants/other.service"
dpkg_root -P strata
[[ ! -L "$wants/strata-ingest.service" && ! -L "$wants/strata-indexer@a.service" ]] \
  || fail "dpkg -P left strata's units enabled"
[[ -L "$wants/other.service" ]] || fail "dpkg -P removed another package's enablement"
[[ -z "$(status)" || "$(status)" == "unknown ok not-installed" ]] || fail "after dpkg -P: status '$(status)'"
[[ ! -e "$droot/etc/strata/strata.yaml" ]] || fail "dpkg -P left the conffile"
[[ -f "$droot/var/lib/strata/keep" ]] || fail "dpkg -P removed /var/lib/strata's data"
echo "   conffile kept on reinstall; remove keeps config and data; purge keeps data, disables the units"
echo "ops_deb_package: ok"
