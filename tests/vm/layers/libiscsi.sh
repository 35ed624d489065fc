#!/bin/sh
# Build (once, cached) the initramfs layer a scenario with "# vm-layer: libiscsi" needs:
# libiscsi's SCSI conformance suite, iscsi-test-cu (Debian's libiscsi-bin, installed by
# scripts/install-vm-deps.sh), with the shared libraries it links (libiscsi, CUnit, and
# the rdma/netlink libraries libiscsi pulls in). Prints the path of the cpio archive
# (uncompressed, appended to the initrd by run-vm.sh).
#
# usage: layers/libiscsi.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/../.cache"
die() { echo "layer libiscsi: $*" >&2; exit 1; }

for t in iscsi-test-cu cpio ldd; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-vm-deps.sh"
done
bin=$(command -v iscsi-test-cu)

# Shared libraries (and the loader) an ELF needs, one path a line.
elf_libs() {
    ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

stamp=$( {
    cat "$0"
    dpkg-query -W -f='${Package} ${Version}\n' libiscsi-bin libiscsi7 libcunit1 2>/dev/null
} | sha256sum | cut -c1-16)
# Our own name in the shared cache (never base-*.cpio, which build-initramfs.sh manages).
out="$cache/layer-libiscsi-$stamp.cpio"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
echo "layer libiscsi: building $out" >&2
stage=$(mktemp -d "$cache/layer-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
for f in "$bin" $(elf_libs "$bin"); do
    mkdir -p "$stage$(dirname "$f")"
    cp -L "$f" "$stage$f"
done
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
# Older versions of this layer only (never anything else in the shared cache).
for old in "$cache"/layer-libiscsi-*.cpio; do
    [ "$old" = "$out" ] || rm -f "$old"
done
echo "$out"
