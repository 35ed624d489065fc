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
. "$here/lib.sh"

for t in iscsi-test-cu cpio ldd; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-vm-deps.sh"
done
bin=$(command -v iscsi-test-cu)

one_binary_layer libiscsi "$bin" "$(
    dpkg-query -W -f='${Package} ${Version}\n' libiscsi-bin libiscsi7 libcunit1 2>/dev/null
)"
