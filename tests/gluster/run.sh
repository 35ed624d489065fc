#!/bin/bash
# The gluster stage of scripts/test.sh: start glusterd and a one-brick volume on 127.0.0.1,
# run the glfs backend's tests against it (integrity, refusals, tiers, the brick frozen and
# killed under writes, the health walk through a frozen brick), a quick benchmark beside a
# direct gfapi client, the VM scenario through the real kernel, and stop the volume again,
# whatever happens (trap).
#
#   tests/gluster/run.sh                   (as root; scripts/install-gluster-deps.sh first)
#   BENCH_SECONDS=10 BENCH_RELEASE=1 tests/gluster/run.sh   (longer, optimised benchmark)
#   SKIP_VM=1 tests/gluster/run.sh         (without the VM scenario)
#   GLUSTER_VM_FREEZE=0 tests/gluster/run.sh   (VM scenario without freezing the brick)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
dir=$(mktemp -d /var/tmp/tcmu-warden-gluster.XXXXXX)
cleanup() { tests/gluster/volume.sh down "$dir" || true; }
trap cleanup EXIT INT TERM

tests/gluster/volume.sh up "$dir"
set -a
# shellcheck disable=SC1091
. "$dir/env"
set +a

rc=0
cargo test -p tcmu-warden --all-features --test glfs -- --include-ignored --test-threads=1 --nocapture || rc=1
export BENCH_SECONDS=${BENCH_SECONDS:-3}
release=()
[ "${BENCH_RELEASE:-0}" = 1 ] && release=(--release)
cargo test "${release[@]}" -p tcmu-warden --all-features --test glfs_bench -- --include-ignored --nocapture || rc=1
# Through the real kernel: the daemon in a VM serves a user:glfs LUN on this volume, fio with
# verify writes through tcm_loop, and the brick is frozen past its ping-timeout under fio
# (tests/gluster/vm.sh, tests/vm/scenarios/glfs.sh). Uses the debug daemon the tests above
# built (all features). SKIP_VM=1 leaves it out.
if [ "${SKIP_VM:-0}" != 1 ]; then
    scripts/install-vm-deps.sh
    tests/gluster/vm.sh "$dir" "${CARGO_TARGET_DIR:-$repo/target}/debug/tcmu-warden" "${GLUSTER_VM_FREEZE:-12}" || rc=1
fi
exit $rc
