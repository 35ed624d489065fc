#!/bin/sh
# Build tcmu-runner, the incumbent TCMU handler, with its plain file handler, for the
# side-by-side benchmark (bench/vm/compare.sh). From Debian's source package `tcmu` only;
# nothing of it is kept in this repository. Idempotent: quiet and instant when cached.
#
# usage: scripts/build-tcmu-runner.sh        prints the cache directory on stdout
# env:   TCMU_RUNNER_CACHE   parent of the per-version cache (default /var/cache/tcmu-warden)
#
# The cache directory <parent>/tcmu-runner-<version>/ holds
#   bin/tcmu-runner                  the daemon (its RUNPATH finds lib/)
#   lib/libtcmu.so.2                 its helper library
#   handlers/handler_file.so         file_example.c, subtype "file", cfgstring file/<path>
#   root/etc/tcmu/tcmu.conf          the configuration it insists on (log_level = 3), in a
#                                    tree to copy to a guest's / (tests/vm: VM_EXTRA_ROOT)
#   version                          the Debian source version
# Debian's binary package ships no plain file handler (only rbd, qcow, zbc, optical), hence
# the build. Must run as root (apt-get). docs/test-services.md has the measured behaviour.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "build-tcmu-runner: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$repo/scripts/lib/apt.sh"

parent=${TCMU_RUNNER_CACHE:-/var/cache/tcmu-warden}

# Source lines for the same archives as Debian's own deb lines (deb-src is absent by default).
srcfile=/etc/apt/sources.list.d/tcmu-warden-src.sources
have_src() { apt-cache showsrc tcmu >/dev/null 2>&1 && apt-cache showsrc tcmu | grep -q '^Version:'; }
if ! have_src; then
    if [ ! -f "$srcfile" ]; then
        [ -f /etc/apt/sources.list.d/debian.sources ] ||
            { log "no /etc/apt/sources.list.d/debian.sources to copy the archive lines from"; exit 1; }
        sed 's/^Types: *deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$srcfile"
        log "added $srcfile"
    fi
    apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
    apt_updated=1
fi
version=$(apt-cache showsrc tcmu | sed -n 's/^Version: //p' | sort -V | tail -n1)
[ -n "$version" ] || { log "apt-cache showsrc tcmu gives no version"; exit 1; }
out=$parent/tcmu-runner-$version

# kmod: compare.py runs its depmod to give the guest the module index tcmu-runner's start-up
# looks target_core_user up in (libkmod reads modules.dep.bin; busybox's depmod writes no .bin).
apt_ensure kmod
if [ -x "$out/bin/tcmu-runner" ] && [ -f "$out/handlers/handler_file.so" ] && [ -f "$out/root/etc/tcmu/tcmu.conf" ]; then
    echo "$out"
    exit 0
fi

apt_ensure dpkg-dev cmake make gcc pkg-config libnl-3-dev libnl-genl-3-dev libglib2.0-dev \
    libkmod-dev zlib1g-dev
mkdir -p "$parent"
work=$(mktemp -d "$parent/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building tcmu $version in $work"
# apt-get source writes into the cwd; as root it warns about the _apt sandbox: harmless.
(cd "$work" && apt-get source -q "tcmu=$version" >"$work/source.log" 2>&1) ||
    { tail -n 20 "$work/source.log" >&2; log "apt-get source tcmu failed"; exit 1; }
src=$(find "$work" -maxdepth 1 -type d -name 'tcmu-*' | head -n1)
[ -n "$src" ] && [ -f "$src/file_example.c" ] || { log "no file_example.c in the source package"; exit 1; }
mkdir -p "$work/build"
(
    cd "$work/build"
    cmake "$src" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSUPPORT_SYSTEMD=OFF \
        -Dwith-rbd=false -Dwith-glfs=false -Dwith-qcow=false -Dwith-zbc=false \
        -Dwith-fbo=false -Dwith-tcmalloc=false \
        -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH="$out/lib" &&
    make -j2
) >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; log "build failed (log above)"; exit 1; }
for f in tcmu-runner handler_file.so; do
    [ -f "$work/build/$f" ] || { log "build produced no $f"; exit 1; }
done
rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin" "$out.tmp/lib" "$out.tmp/handlers" "$out.tmp/root/etc/tcmu"
cp "$work/build/tcmu-runner" "$out.tmp/bin/"
cp "$work/build/handler_file.so" "$out.tmp/handlers/"
cp -L "$work"/build/libtcmu.so.2 "$out.tmp/lib/"
printf 'log_level = 3\n' >"$out.tmp/root/etc/tcmu/tcmu.conf"
echo "$version" >"$out.tmp/version"
rm -rf "$out"
mv "$out.tmp" "$out"
log "tcmu-runner $version built into $out"
echo "$out"
