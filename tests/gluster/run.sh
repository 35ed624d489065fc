#!/bin/bash
# The gluster stage of scripts/test.sh: start glusterd and a one-brick volume on 127.0.0.1,
# run the glfs backend's tests against it (integrity, refusals, tiers, the brick frozen and
# killed under writes), a quick benchmark beside a direct gfapi client, and stop the volume
# again, whatever happens (trap).
#
#   tests/gluster/run.sh                   (as root; scripts/install-gluster-deps.sh first)
#   BENCH_SECONDS=10 BENCH_RELEASE=1 tests/gluster/run.sh   (longer, optimised benchmark)
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
exit $rc
