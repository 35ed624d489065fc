#!/bin/bash
# Run every cargo-fuzz target in fuzz/ for N seconds each (default 30), with AddressSanitizer.
# Exits non-zero as soon as a target crashes (the reproducer is left in fuzz/artifacts/<target>/).
#
# Usage: scripts/fuzz.sh [seconds-per-target] [target...]
#   FUZZ_JOBS=<n>        parallel libFuzzer jobs per target (default 1)
#   FUZZ_SANITIZER=none  build without a sanitizer (faster, catches panics only)
#
# Only a stable toolchain exists here; cargo-fuzz passes nightly flags (-Zsanitizer=address,
# -Cinstrument-coverage style options), so the build runs with RUSTC_BOOTSTRAP=1. The corpus
# grows in fuzz/corpus/<target>/ (git-ignored) and is reused by the next run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-30}
shift || true
case $secs in
    '' | *[!0-9]*)
        echo "usage: $0 [seconds-per-target] [target...]" >&2
        exit 2
        ;;
esac
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace: keep its (instrumented) build apart from the main one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$repo/fuzz/target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    # Its own target dir, so a CARGO_TARGET_DIR set for the fuzz build does not collect it.
    CARGO_TARGET_DIR=$(mktemp -d /tmp/cargo-fuzz-build.XXXXXX) cargo install cargo-fuzz --locked
fi

cd "$repo/fuzz"
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}

log=$(mktemp -d /tmp/tcmu-fuzz.XXXXXX)
failed=()
for t in "${targets[@]}"; do
    echo "=== fuzz $t: ${secs}s, sanitizer=$sanitizer, jobs=$jobs"
    mkdir -p "corpus/$t"
    start=$SECONDS
    # -max_total_time bounds the run; -rss_limit_mb stays at libFuzzer's default (2 GiB).
    # The target is built in release mode with debug assertions (cargo-fuzz's default).
    set +e
    cargo fuzz run --sanitizer "$sanitizer" --jobs "$jobs" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 2>&1 |
        tee "$log/$t.log" |
        grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|SUMMARY|==[0-9]+==ERROR|thread .* panicked)'
    st=("${PIPESTATUS[@]}")
    set -e
    rc=${st[0]}
    if [ "$rc" -ne 0 ]; then
        echo "--- fuzz $t FAILED (exit $rc after $((SECONDS - start)) s); tail of $log/$t.log:"
        tail -n 40 "$log/$t.log"
        ls -1 "artifacts/$t" 2>/dev/null | sed 's/^/    reproducer: fuzz\/artifacts\/'"$t"'\//' || true
        failed+=("$t")
    else
        echo "--- fuzz $t ok ($((SECONDS - start)) s incl. build)"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
