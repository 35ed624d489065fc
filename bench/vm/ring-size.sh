#!/bin/sh
# Ring-size benchmark: the same fio jobs through tcmu-warden at max_data_area_mb 1/4/16/64/1024
# and through the kernel's own fileio and rd_mcp backstores, all in ONE qemu TCG boot.
#
# usage: bench/vm/ring-size.sh [--quick] [BIN]
#   BIN      tcmu-warden binary (default target/release/tcmu-warden, built if missing)
#   --quick  (or BENCH_QUICK=1) 1 s jobs, ring sizes 1 and 64, one round: a CI smoke (< 3 min)
# Prints one line per job as it completes, then the table (ratios to fileio); writes
# bench/out/ring-size.json (raw + summary) and bench/out/ring-size.svg. See bench/vm/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

bin=""
for a; do case $a in -*) ;; *) bin=$a ;; esac; done
if [ -z "$bin" ]; then
    bin=$repo/target/release/tcmu-warden
    [ -x "$bin" ] || (cd "$repo" && cargo build --release -p tcmu-warden)
fi
# Kernel, qemu, busybox, fio, sg3-utils (cheap when already there).
"$repo/scripts/install-vm-deps.sh" >/dev/null
exec python3 "$here/ring_size.py" "$@"
