#!/bin/bash
# tcmu-warden over RBD beside librbd's own `rbd bench`, on the same image in the same run:
# 4 KiB random read and write IOPS and 1 MiB sequential write and read throughput at the same
# queue depth, and their ratio (librbd is the ceiling; the goal is within 10%).
#
# tcmu-warden's side runs the real dispatcher and RBD backend over the emulated kernel ring
# (handler/tests/rbd_bench.rs): the ring, SCSI decoding and completion costs are in, the
# kernel and initiator are not.
#
# Usage: bench/rbd.sh                       (starts its own throwaway cluster)
#        TCMU_RBD_CONF=<ceph.conf> bench/rbd.sh  (uses a running one; tests/ceph/run.sh)
#        BENCH_QUICK=1 ...                  (short runs; the numbers are rough)
#        RBD_BENCH_WRITE_CACHE=0 ...        (the LUN's write cache off: every write FUA)
#        RBD_BENCH_PROFILE=release ...      (build the driver optimised; default: the test
#                                            profile, which the ceph stage has built already)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ -z "${TCMU_RBD_CONF:-}" ]; then
    dir=$(mktemp -d /tmp/tcmu-warden-bench.XXXXXX)
    trap '"$repo/tests/ceph/cluster.sh" down "$dir"; rm -rf "$dir"' EXIT
    TCMU_RBD_CONF=$("$repo/tests/ceph/cluster.sh" up "$dir")
    export TCMU_RBD_CONF
fi
conf=$TCMU_RBD_CONF
qd=${RBD_BENCH_QD:-16}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    size_mb=128 secs=2 small_total=64M big_total=1G
else
    size_mb=512 secs=10 small_total=400M big_total=8G
fi
img="bench-$$"
R="timeout 120 rbd -c $conf"
$R create --size "${size_mb}M" "rbd/$img"
# Fill it, so reads hit real objects on both sides.
$R bench --io-type write --io-size 4M --io-threads 8 --io-pattern seq --io-total "${size_mb}M" "rbd/$img" >/dev/null
# librbd: rbd bench prints "elapsed: S  ops: N  ops/sec: X  bytes/sec: Y <unit>".
rbd_bench() { # type size pattern total -> "IOPS MiB/s"
    $R bench --io-type "$1" --io-size "$2" --io-threads "$qd" --io-pattern "$3" --io-total "$4" "rbd/$img" |
        awk '/^elapsed:/ { for (i = 1; i <= NF; i++) { if ($i == "ops/sec:") o = $(i+1); if ($i == "bytes/sec:") { b = $(i+1); u = $(i+2) } } }
             END { m = (u ~ /^GiB/) ? 1024 : (u ~ /^KiB/) ? 1/1024 : (u ~ /^B/) ? 1/1048576 : 1
                   printf "%.0f %.1f\n", o, b * m }'
}
profile=()
[ "${RBD_BENCH_PROFILE:-}" = release ] && profile=(--release)
# tcmu-warden through the emulated ring, one mode per run -> "IOPS MiB/s".
warden() { # mode
    local out
    out=$(TCMU_RBD_CONF=$conf RBD_BENCH_IMAGE=$img RBD_BENCH_SIZE=$((size_mb << 20)) RBD_BENCH_SECS=$secs \
        RBD_BENCH_QD=$qd RBD_BENCH_MODES=$1 RBD_BENCH_WRITE_CACHE=${RBD_BENCH_WRITE_CACHE:-1} cargo test -q "${profile[@]}" -p tcmu-warden --all-features \
        --test rbd_bench -- --ignored --nocapture 2>&1) || { echo "$out" >&2; return 1; }
    grep "^RESULT $1 " <<<"$out" | sed 's/.*iops=\([0-9.]*\).*mib_s=\([0-9.]*\).*/\1 \2/'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# Build the driver first so its compile time does not fall between the two sides.
cargo test -q "${profile[@]}" -p tcmu-warden --all-features --test rbd_bench --no-run 2>/dev/null
table=$(printf '%-10s %16s %16s %7s\n' mode librbd tcmu-warden ratio)
sum=0
# Each mode: librbd then tcmu-warden back to back, so both see the same host load.
for spec in "randread read 4K rand $small_total" "randwrite write 4K rand $small_total" \
    "write1m write 1M seq $big_total" "read1m read 1M seq $big_total"; do
    read -r m t sz pat total <<<"$spec"
    read -r lo lm <<<"$(rbd_bench "$t" "$sz" "$pat" "$total")"
    read -r to tm <<<"$(warden "$m")"
    case $m in
        rand*) r=$(ratio "$to" "$lo"); row=$(printf '%-10s %11s IOPS %11s IOPS %7s' "$m" "$lo" "$to" "$r") ;;
        *) r=$(ratio "$tm" "$lm"); row=$(printf '%-10s %10s MiB/s %10s MiB/s %7s' "$m" "$lm" "$tm" "$r") ;;
    esac
    table+=$'\n'"$row"
    sum=$(awk -v s="$sum" -v r="$r" 'BEGIN { print s + r }')
done
$R rm "rbd/$img" >/dev/null 2>&1 || true
echo "RBD benchmark: queue depth $qd, ${size_mb} MiB image, memstore OSD on this host ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)), driver profile ${RBD_BENCH_PROFILE:-test}$([ "${BENCH_QUICK:-0}" = 1 ] && echo ', quick run: rough numbers')"
echo "$table"
awk -v s="$sum" 'BEGIN { printf "ratio tcmu-warden/librbd (mean of 4 modes): %.2f\n", s / 4 }'
