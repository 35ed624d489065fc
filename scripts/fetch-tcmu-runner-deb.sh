#!/bin/sh
# Debian's tcmu-runner binary package (and libtcmu2), unpacked, not installed, for the RBD
# side-by-side benchmark (bench/vm/compare.sh --rbd): the package ships handler_rbd.so linked
# to the system librbd, which is the RBD handler ceph-iscsi gateways run. Idempotent: quiet
# and instant when cached. Nothing of tcmu-runner is kept in this repository, and the package
# is never installed on the host (no service that could start, no files in /usr).
#
# usage: scripts/fetch-tcmu-runner-deb.sh    prints the cache directory on stdout
# env:   TCMU_RUNNER_CACHE   parent of the per-version cache (default /var/cache/tcmu-warden)
#
# The cache directory <parent>/tcmu-runner-deb-<version>/ has the layout of
# scripts/build-tcmu-runner.sh's, so the benchmark treats both alike:
#   bin/tcmu-runner             the daemon (no RUNPATH: LD_LIBRARY_PATH=lib/ finds libtcmu)
#   lib/libtcmu.so.2            its helper library
#   handlers/handler_rbd.so     subtype "rbd", cfgstring rbd/<pool>/<image>[;conf=...]
#   root/etc/tcmu/tcmu.conf     the configuration it insists on (log_level = 3)
#   version                     the Debian binary version
# Must run as root (apt-get). librbd1/librados2 come with ceph-common
# (scripts/install-ceph-deps.sh).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "fetch-tcmu-runner-deb: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$repo/scripts/lib/apt.sh"

parent=${TCMU_RUNNER_CACHE:-/var/cache/tcmu-warden}
candidate() { apt-cache policy tcmu-runner 2>/dev/null | sed -n 's/^ *Candidate: //p'; }
version=$(candidate)
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt_update_once
    version=$(candidate)
fi
[ -n "$version" ] && [ "$version" != "(none)" ] || { log "apt knows no tcmu-runner package"; exit 1; }
out=$parent/tcmu-runner-deb-$version

# kmod: the benchmark runs its depmod for the guest's module index (as for the source build);
# the daemon's run-time libraries besides librbd (glib, kmod, libnl, zlib).
apt_ensure kmod libglib2.0-0 libkmod2 libnl-3-200 libnl-genl-3-200 zlib1g librbd1
if [ -x "$out/bin/tcmu-runner" ] && [ -f "$out/handlers/handler_rbd.so" ] && [ -f "$out/root/etc/tcmu/tcmu.conf" ]; then
    echo "$out"
    exit 0
fi

mkdir -p "$parent"
work=$(mktemp -d "$parent/deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt-get download writes into the cwd; as root it warns about the _apt sandbox: harmless.
(cd "$work" && apt-get download -q "tcmu-runner=$version" "libtcmu2=$version" >"$work/download.log" 2>&1) || {
    apt_update_once
    (cd "$work" && apt-get download -q "tcmu-runner=$version" "libtcmu2=$version" >"$work/download.log" 2>&1)
} || { tail -n 20 "$work/download.log" >&2; log "apt-get download tcmu-runner libtcmu2 failed"; exit 1; }
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
bin=$work/root/usr/bin/tcmu-runner
hdl=$(find "$work/root" -name handler_rbd.so | head -n1)
lib=$(find "$work/root" -name 'libtcmu.so.2' | head -n1)
[ -x "$bin" ] && [ -n "$hdl" ] && [ -n "$lib" ] ||
    { log "the packages hold no tcmu-runner, handler_rbd.so or libtcmu.so.2"; exit 1; }
rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin" "$out.tmp/lib" "$out.tmp/handlers" "$out.tmp/root/etc/tcmu"
cp "$bin" "$out.tmp/bin/"
cp "$hdl" "$out.tmp/handlers/"
cp -L "$lib" "$out.tmp/lib/libtcmu.so.2"
printf 'log_level = 3\n' >"$out.tmp/root/etc/tcmu/tcmu.conf"
echo "$version" >"$out.tmp/version"
rm -rf "$out"
mv "$out.tmp" "$out"
log "tcmu-runner $version (Debian binary package) unpacked into $out"
echo "$out"
