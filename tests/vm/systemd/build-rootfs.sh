#!/bin/sh
# Build (once) the systemd guest's disk: a Debian 12 root file system made with mmdebstrap from
# the packages in packages.txt, the VM kernel's modules added, as a raw ext4 image
# (mkfs.ext4 -d: no loop mounts). Cached under tests/vm/.cache/systemd-<key>/, the key a hash
# of the build inputs and the kernel version; older keys are removed. Prints the cache
# directory (rootfs.raw, vmlinuz, build-seconds). The initramfs that mounts it is initrd.sh's.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/../.cache"
kdir="$cache/kernel/current"
log() { echo "build-rootfs: $*" >&2; }
[ -e "$kdir/vmlinuz" ] || { log "no kernel: run scripts/install-vm-deps.sh"; exit 1; }
kver=$(cat "$kdir/version")
key=$( (cat "$here/build-rootfs.sh" "$here/customize.sh" "$here/packages.txt" \
    "$here/warden-runner.service"; echo "$kver") | sha256sum | cut -c1-16)
out="$cache/systemd-$key"
if [ -s "$out/rootfs.raw" ]; then
    echo "$out"
    exit 0
fi
for d in "$cache"/systemd-*; do [ -d "$d" ] && [ "$d" != "$out" ] && rm -rf "$d"; done
t0=$(date +%s)
tmp="$cache/systemd-build.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
# Whatever mmdebstrap left mounted in the tree goes first (lazily: a straggler may hold it), and
# rm never crosses into another file system.
unmount_tree() {
    for m in proc sys dev/pts dev/shm dev run; do
        mountpoint -q "$tmp/root/$m" 2>/dev/null && umount -l "$tmp/root/$m"
    done
    return 0
}
trap 'unmount_tree; rm -rf --one-file-system "$tmp"' EXIT

pkgs=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)
log "mmdebstrap bookworm ($pkgs)"
# The same archives the host's apt uses (tests run where only the package registries answer).
KMODS="$kdir/modules" KVER="$kver" mmdebstrap --quiet --mode=root --variant=apt \
    --include="$pkgs" \
    --aptopt='Acquire::Retries "3"' \
    --customize-hook="\"$here/customize.sh\" \"\$1\"" \
    bookworm "$tmp/root" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" >&2

unmount_tree
log "ext4 image"
truncate -s 4G "$tmp/rootfs.raw"
mkfs.ext4 -q -F -L root -E lazy_itable_init=0 -d "$tmp/root" "$tmp/rootfs.raw"

mkdir -p "$out"
mv "$tmp/rootfs.raw" "$out/"
cp "$kdir/vmlinuz" "$out/vmlinuz"
echo $(( $(date +%s) - t0 )) >"$out/build-seconds"
log "built $out in $(cat "$out/build-seconds") s"
echo "$out"
