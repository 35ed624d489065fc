#!/bin/sh
# Profile tcmu-warden and tcmu-runner in the qemu TCG guest with Linux's perf: one boot per
# daemon, each job once with perf stat (the daemon, the whole guest) and perf record -a -g
# -e cpu-clock around its measurement window; per-I/O counts (CPU, context switches, system
# calls by name) and the top symbols of each daemon printed side by side, the reports kept
# in bench/out/profile-TARGET/. See bench/vm/README.md, "Profiling".
#
# usage: bench/vm/profile.sh [--warden BIN] [--runner DIR]
#   --warden  tcmu-warden binary (default target/release/tcmu-warden, built if missing)
#   --runner  tcmu-runner cache directory (default: scripts/build-tcmu-runner.sh builds it)
# env: BENCH_TARGETS ("warden runner"), BENCH_PROFILE_CONFIGS, BENCH_RUNTIME_MS, ... (profile.py --help)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

warden="" runner=""
prev=""
for a; do
    case $prev in --warden) warden=$a ;; --runner) runner=$a ;; esac
    prev=$a
done
case " ${BENCH_TARGETS:-warden runner} " in
    *" warden "*)
        if [ -z "$warden" ]; then
            warden=$repo/target/release/tcmu-warden
            [ -x "$warden" ] || (cd "$repo" && cargo build --release -p tcmu-warden)
            set -- "$@" --warden "$warden"
        fi ;;
esac
# Kernel, qemu, busybox, fio, sg3-utils, perf (cheap when already there).
"$repo/scripts/install-vm-deps.sh" >/dev/null
case " ${BENCH_TARGETS:-warden runner} " in
    *" runner "*)
        if [ -z "$runner" ]; then
            runner=$("$repo/scripts/build-tcmu-runner.sh")
            set -- "$@" --runner "$runner"
        fi ;;
esac
exec python3 "$here/profile.py" "$@"
