#!/bin/sh
# The benchmark of record: tcmu-warden, tcmu-runner and the kernel's fileio backstore side by
# side through the real Linux 6.1 kernel in the qemu TCG guest, each in its own boot,
# interleaved rounds, then a scale run (LUNs per daemon); ratios printed last.
#
# usage: bench/vm/compare.sh [--quick] [--rings] [--warden BIN] [--runner DIR]
#        bench/vm/compare.sh --rbd [--quick] [--warden BIN] [--runner DIR] [--ceph DIR]
#   --quick   (or BENCH_QUICK=1) the CI smoke: one round, two short jobs, scale 1 and 16 LUNs
#   --rings   warden and runner at each max_data_area_mb (1 MiB sequential write QD8)
#   --rbd     RBD: warden and runner (Debian's binary package, handler_rbd.so) serving one
#             image of a single-node Ceph cluster on the host, fio's rbd engine as the ceiling
#   --warden  tcmu-warden binary (default target/release/tcmu-warden, built if missing)
#   --runner  tcmu-runner cache directory (default: scripts/build-tcmu-runner.sh builds it;
#             with --rbd scripts/fetch-tcmu-runner-deb.sh unpacks Debian's package)
#   --ceph    (--rbd) a cluster of tests/ceph/cluster.sh that is up; default: one is started
#             in a temporary directory (mon on CEPH_PORT_BASE, default 13700) and stopped after
# Writes bench/out/compare.json and compare.svg (compare-rings.* with --rings, compare-rbd.*
# with --rbd). Exits non-zero if a target failed to serve (a boot, a job or the scale run
# failed), never on slow ratios. See bench/vm/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

warden="" runner="" rbd=0 ceph=""
prev=""
for a; do
    case $prev in --warden) warden=$a ;; --runner) runner=$a ;; --ceph) ceph=$a ;; esac
    [ "$a" = --rbd ] && rbd=1
    prev=$a
done
if [ -z "$warden" ]; then
    warden=$repo/target/release/tcmu-warden
    [ -x "$warden" ] || (cd "$repo" && cargo build --release -p tcmu-warden)
    set -- "$@" --warden "$warden"
fi
# Kernel, qemu, busybox, fio, sg3-utils (cheap when already there).
"$repo/scripts/install-vm-deps.sh" >/dev/null
if [ "$rbd" = 0 ]; then
    if [ -z "$runner" ]; then
        runner=$("$repo/scripts/build-tcmu-runner.sh")
        set -- "$@" --runner "$runner"
    fi
    exec python3 "$here/compare.py" "$@"
fi

# --rbd: Ceph (cluster daemons, CLIs, librbd), Debian's tcmu-runner package, a cluster.
"$repo/scripts/install-ceph-deps.sh"
if [ -z "$runner" ]; then
    runner=$("$repo/scripts/fetch-tcmu-runner-deb.sh")
    set -- "$@" --runner "$runner"
fi
cdir=""
cleanup() {
    [ -n "$cdir" ] || return 0
    "$repo/tests/ceph/cluster.sh" down "$cdir" >/dev/null 2>&1 || true
    rm -rf "$cdir"
}
if [ -z "$ceph" ]; then
    cdir=$(mktemp -d /tmp/tcmu-warden-bench-ceph.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    t0=$(date +%s)
    CEPH_PORT_BASE=${CEPH_PORT_BASE:-13700} "$repo/tests/ceph/cluster.sh" up "$cdir" >/dev/null
    echo "compare: ceph cluster up in $(( $(date +%s) - t0 )) s ($cdir)"
    set -- "$@" --ceph "$cdir"
fi
rc=0
python3 "$here/compare.py" "$@" || rc=$?
exit "$rc"
