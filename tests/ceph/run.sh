#!/bin/bash
# The RBD backend against a real Ceph cluster: start a throwaway single-node cluster on
# 127.0.0.1 (tests/ceph/cluster.sh), run the ignored-by-default RBD tests
# (handler/tests/rbd.rs), a quick benchmark beside librbd's own (bench/rbd.sh), and stop the
# cluster again, always. scripts/test.sh runs this as the stage "ceph".
#
# Then the VM scenario through the real kernel (tests/ceph/vm.sh, tests/vm/scenarios/rbd.sh):
# the daemon in a qemu guest serves a user:rbd LUN on this cluster, fio verifies through
# tcm_loop, and the image's lock is broken with blocklisting from the host under fio.
#
# Usage: tests/ceph/run.sh            (as root; scripts/install-ceph-deps.sh installs Ceph)
#        RBD_BENCH=0 tests/ceph/run.sh  (skip the benchmark)
#        SKIP_VM=1 tests/ceph/run.sh    (skip the VM scenario)
#        RBD_VM_BREAK=0 tests/ceph/run.sh   (VM scenario without breaking the lock)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
"$repo/scripts/install-ceph-deps.sh"
dir=$(mktemp -d /tmp/tcmu-warden-ceph.XXXXXX)
cleanup() {
    "$repo/tests/ceph/cluster.sh" down "$dir" || true
    if [ "${KEEP_CEPH_LOGS:-0}" = 1 ]; then echo "ceph logs: $dir/log"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
t0=$SECONDS
conf=$("$repo/tests/ceph/cluster.sh" up "$dir")
echo "ceph: cluster up in $((SECONDS - t0)) s ($conf)"
export TCMU_RBD_CONF=$conf TCMU_RBD_CLUSTER_DIR=$dir
rc=0
# One thread: the RADOS client registry is process-wide and one test freezes the only OSD.
cargo test -p tcmu-warden --all-features --test rbd -- --include-ignored --test-threads=1 || rc=$?
if [ "${RBD_BENCH:-1}" != 0 ]; then
    BENCH_QUICK=1 "$repo/bench/rbd.sh" || rc=$?
fi
# Uses the debug daemon the tests above built (all features).
if [ "${SKIP_VM:-0}" != 1 ]; then
    "$repo/scripts/install-vm-deps.sh"
    t1=$SECONDS
    "$repo/tests/ceph/vm.sh" "$dir" "${CARGO_TARGET_DIR:-$repo/target}/debug/tcmu-warden" \
        "${RBD_VM_BREAK:-1}" || rc=1
    echo "ceph: VM scenario took $((SECONDS - t1)) s"
fi
echo "ceph: done in $((SECONDS - t0)) s"
exit $rc
