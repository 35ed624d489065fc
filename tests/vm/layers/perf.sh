#!/bin/sh
# Build (once, cached) the initramfs layer a scenario with "# vm-layer: perf" needs: Linux's
# `perf` (Debian's linux-perf, installed by scripts/install-vm-deps.sh) with the shared
# libraries it links, for profiling in the guest (bench/vm/profile.sh: software events such
# as cpu-clock, context-switches and tracepoints work under TCG). Prints the path of the cpio
# archive (uncompressed, appended to the initrd by run-vm.sh). Only scenarios that ask for it
# carry it: it is ~25 MB.
#
# usage: layers/perf.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/../.cache"
die() { echo "layer perf: $*" >&2; exit 1; }
. "$here/lib.sh"

for t in perf cpio ldd; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-vm-deps.sh"
done
bin=$(command -v perf)

one_binary_layer perf "$bin" "$(
    dpkg-query -W -f='${Package} ${Version}\n' linux-perf 2>/dev/null
    stat -L -c '%n %s %Y' "$bin"
)"
