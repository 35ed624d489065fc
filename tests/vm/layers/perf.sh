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

for t in perf cpio ldd; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-vm-deps.sh"
done
bin=$(command -v perf)

# Shared libraries (and the loader) an ELF needs, one path a line.
elf_libs() {
    ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

stamp=$( {
    cat "$0"
    dpkg-query -W -f='${Package} ${Version}\n' linux-perf 2>/dev/null
    stat -L -c '%n %s %Y' "$bin"
} | sha256sum | cut -c1-16)
# Our own name in the shared cache (never base-*.cpio, which build-initramfs.sh manages).
out="$cache/layer-perf-$stamp.cpio"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
echo "layer perf: building $out" >&2
stage=$(mktemp -d "$cache/layer-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
for f in "$bin" $(elf_libs "$bin"); do
    mkdir -p "$stage$(dirname "$f")"
    cp -L "$f" "$stage$f"
done
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
# Older versions of this layer only (never anything else in the shared cache).
for old in "$cache"/layer-perf-*.cpio; do
    [ "$old" = "$out" ] || rm -f "$old"
done
echo "$out"
