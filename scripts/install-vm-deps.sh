#!/bin/sh
# Install everything the VM test harness (tests/vm/) needs, idempotently:
#  - host packages: qemu (TCG), busybox-static, fio, sg3-utils, cpio, libiscsi-bin
#    (iscsi-test-cu, the conformance stage's SCSI test suite), linux-perf (perf, put into
#    the guest only by scenarios that ask for it: tests/vm/layers/perf.sh, bench/vm/profile.sh)
#  - Debian's current cloud kernel, unpacked (not installed) into tests/vm/.cache/kernel/
# Fast when everything is already present. Must run as root (apt-get).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cache="$repo/tests/vm/.cache"
log() { echo "install-vm-deps: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$repo/scripts/lib/apt.sh"

# --- host packages -------------------------------------------------------
# busybox-static, not busybox: the initramfs needs the static one (apt.sh asks dpkg, so the
# dynamic busybox, which provides the same /bin/busybox, does not count).
apt_ensure qemu-system-x86 busybox-static fio sg3-utils cpio libiscsi-bin linux-perf

# --- kernel --------------------------------------------------------------
# Unpacked into $cache/kernel/<pkg>/; $cache/kernel/current points at it.
kdir="$cache/kernel"
if [ -e "$kdir/current/vmlinuz" ] && [ -d "$kdir/current/modules" ]; then
    log "kernel present: $(readlink "$kdir/current")"
    exit 0
fi
mkdir -p "$kdir"
resolve_kpkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1
}
kpkg=$(resolve_kpkg)
if [ -z "$kpkg" ]; then
    apt_update_once
    kpkg=$(resolve_kpkg)
fi
[ -n "$kpkg" ] || { log "cannot resolve linux-image-cloud-amd64's kernel package"; exit 1; }
log "kernel package: $kpkg"

tmp=$(mktemp -d "$kdir/dl.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the cwd; as root it warns about the _apt sandbox: harmless.
( cd "$tmp" && apt-get download -q "$kpkg" >/dev/null 2>&1 ) || {
    apt_update_once
    ( cd "$tmp" && apt-get download -q "$kpkg" >/dev/null 2>&1 )
} || { log "apt-get download $kpkg failed"; exit 1; }
dpkg -x "$tmp"/"$kpkg"_*.deb "$tmp/root"

dest="$kdir/$kpkg"
rm -rf "$dest"
mkdir -p "$dest"
kver=$(ls "$tmp/root/lib/modules")
mv "$tmp/root/boot/vmlinuz-$kver" "$dest/vmlinuz"
mv "$tmp/root/lib/modules/$kver" "$dest/modules"
echo "$kver" >"$dest/version"
ln -sfn "$kpkg" "$kdir/current"
log "kernel $kver unpacked into $dest"
