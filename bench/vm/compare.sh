#!/bin/sh
# The benchmark of record: tcmu-warden, tcmu-runner and the kernel's fileio backstore side by
# side through the real Linux 6.1 kernel in the qemu TCG guest, each in its own boot,
# interleaved rounds, then a scale run (LUNs per daemon); ratios printed last.
#
# usage: bench/vm/compare.sh [--quick] [--rings] [--warden BIN] [--runner DIR]
#   --quick   (or BENCH_QUICK=1) the CI smoke: one round, two short jobs, scale 1 and 16 LUNs
#   --rings   warden and runner at each max_data_area_mb (1 MiB sequential write QD8)
#   --warden  tcmu-warden binary (default target/release/tcmu-warden, built if missing)
#   --runner  tcmu-runner cache directory (default: scripts/build-tcmu-runner.sh builds it)
# Writes bench/out/compare.json and compare.svg (compare-rings.* with --rings). Exits non-zero
# if a target failed to serve (a boot, a job or the scale run failed), never on slow ratios.
# See bench/vm/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

warden="" runner=""
prev=""
for a; do
    case $prev in --warden) warden=$a ;; --runner) runner=$a ;; esac
    prev=$a
done
if [ -z "$warden" ]; then
    warden=$repo/target/release/tcmu-warden
    [ -x "$warden" ] || (cd "$repo" && cargo build --release -p tcmu-warden)
    set -- "$@" --warden "$warden"
fi
# Kernel, qemu, busybox, fio, sg3-utils (cheap when already there).
"$repo/scripts/install-vm-deps.sh" >/dev/null
if [ -z "$runner" ]; then
    runner=$("$repo/scripts/build-tcmu-runner.sh")
    set -- "$@" --runner "$runner"
fi
exec python3 "$here/compare.py" "$@"
