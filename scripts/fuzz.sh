#!/bin/bash
# Build every cargo-fuzz target in fuzz/ once (AddressSanitizer), then run each of them.
#
# Usage: scripts/fuzz.sh [SECONDS] [target...]          short run: SECONDS per target
#                                                       (default 5; CI: scripts/test.sh)
#        scripts/fuzz.sh --campaign [HOURS] [target...] a search toward FUZZ_GOAL executions
#                                                       in all (default 10^8) within HOURS
#                                                       (default 8), then a table of counts
#
#   FUZZ_SANITIZER=none  build without a sanitizer (several times faster; catches panics,
#                        not out-of-bounds accesses in unsafe code)
#   FUZZ_JOBS=<n>        libFuzzer fork mode with n worker processes per target (default 1)
#   FUZZ_GOAL=<n>        campaign: total executions to aim for (default 100000000)
#   FUZZ_TARGET_DIR      build directory (default fuzz/target)
#   FUZZ_DAEMON=0|1      also build and run the targets of the daemon's parsers (netlink,
#                        cfgstring, config, tcmu_conf: feature `daemon`, minutes more to
#                        build); default 1 for a campaign, 0 for a short run (CI)
#
# Exits non-zero if a target crashed (the reproducer is left in fuzz/artifacts/<target>/); a
# campaign still runs the other targets first. Seeds are read from fuzz/corpus/<target>/
# (committed; fuzz/make_seeds.py writes them) and what the fuzzer adds goes to
# fuzz/corpus-grown/<target>/ (git-ignored), reused by the next run. See fuzz/README.md.
#
# Only a stable toolchain exists here; cargo-fuzz passes nightly flags (-Zsanitizer=address,
# the coverage instrumentation), so the build runs with RUSTC_BOOTSTRAP=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

campaign=0
if [ "${1:-}" = --campaign ]; then
    campaign=1
    shift
    hours=${1:-8}
    shift || true
    case $hours in
        '' | *[!0-9.]* | *.*.*)
            echo "usage: $0 --campaign [HOURS] [target...]" >&2
            exit 2
            ;;
    esac
    budget=$(awk -v h="$hours" 'BEGIN { printf "%d", h * 3600 }')
else
    secs=${1:-5}
    shift || true
    case $secs in
        '' | *[!0-9]*)
            echo "usage: $0 [seconds-per-target] [target...] | --campaign [HOURS] [target...]" >&2
            exit 2
            ;;
    esac
fi
goal=${FUZZ_GOAL:-100000000}
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
daemon=${FUZZ_DAEMON:-$campaign}
# The targets that need feature `daemon` (fuzz/Cargo.toml `required-features`).
daemon_targets=" netlink cfgstring config tcmu_conf "

export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace: keep its (instrumented) build apart from the main one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$repo/fuzz/target}"
# As cargo-fuzz runs its targets (Rust's ODR reports are false positives under ASan).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    # Its own target dir, so a CARGO_TARGET_DIR set for the fuzz build does not collect it.
    CARGO_TARGET_DIR=$(mktemp -d /tmp/cargo-fuzz-build.XXXXXX) cargo install cargo-fuzz --locked
fi

cd "$repo/fuzz"
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    while read -r t; do
        if [ "$daemon" = 1 ] || [[ $daemon_targets != *" $t "* ]]; then targets+=("$t"); fi
    done < <(cargo fuzz list)
fi
features=()
for t in "${targets[@]}"; do
    if [[ $daemon_targets == *" $t "* ]]; then features=(--features daemon); fi
done

# One build for every target: cargo compiles the shared dependencies once and links the
# binaries in parallel. Release mode with debug assertions (cargo-fuzz's default).
t0=$SECONDS
echo "=== fuzz build: ${#targets[@]} targets (${targets[*]}), sanitizer=$sanitizer ${features[*]}"
# (`cargo fuzz build` takes one target or all of them.)
build_args=()
[ ${#targets[@]} -eq 1 ] && build_args=("${targets[0]}")
cargo fuzz build --sanitizer "$sanitizer" "${features[@]}" "${build_args[@]}"
echo "--- fuzz build ok ($((SECONDS - t0)) s)"
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="$CARGO_TARGET_DIR/$triple/release"

log=$(mktemp -d /tmp/tcmu-fuzz.XXXXXX)
failed=()
declare -A execs rate took

# Executions of a finished run from its log: libFuzzer's final statistics, else (fork mode)
# the last status line `#N ...`.
count_execs() {
    local n
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -n 1)
    if [ -z "$n" ]; then
        n=$(grep -oE '^#[0-9]+' "$1" | tail -n 1 | tr -d '#')
    fi
    echo "${n:-0}"
}

# run_target TARGET SECONDS RUNS: one libFuzzer run, bounded by time and (if RUNS > 0) by
# executions. Records executions, seconds and exec/s; returns libFuzzer's status.
run_target() {
    local t=$1 limit=$2 runs=$3 rc start
    local args=(-max_total_time="$limit" -print_final_stats=1 -timeout=20
        -artifact_prefix="artifacts/$t/")
    [ "$runs" -gt 0 ] && args+=(-runs="$runs")
    [ -f "dict/$t.dict" ] && args+=(-dict="dict/$t.dict")
    [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
    mkdir -p "corpus-grown/$t" "corpus/$t" "artifacts/$t"
    start=$SECONDS
    set +e
    # New inputs go to the first directory (git-ignored); the committed seeds are read only.
    "$bindir/$t" "${args[@]}" "corpus-grown/$t" "corpus/$t" >"$log/$t.log" 2>&1
    rc=$?
    set -e
    took[$t]=$((SECONDS - start))
    execs[$t]=$(count_execs "$log/$t.log")
    rate[$t]=$((execs[$t] / (took[$t] > 0 ? took[$t] : 1)))
    grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|SUMMARY|==[0-9]+==ERROR|thread .* panicked)' \
        "$log/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        echo "--- fuzz $t FAILED (exit $rc after ${took[$t]} s); tail of $log/$t.log:"
        tail -n 40 "$log/$t.log"
        ls -1 "artifacts/$t" 2>/dev/null | sed 's/^/    reproducer: fuzz\/artifacts\/'"$t"'\//' || true
        failed+=("$t")
    else
        echo "--- fuzz $t ok (${execs[$t]} executions in ${took[$t]} s, ${rate[$t]}/s)"
    fi
    return 0
}

if [ "$campaign" = 0 ]; then
    for t in "${targets[@]}"; do
        echo "=== fuzz $t: ${secs}s, jobs=$jobs"
        run_target "$t" "$secs" 0
    done
else
    # Each target in turn gets an equal share of what is left of the time and of the goal;
    # a target that reaches its share of executions early leaves its time to the others.
    # The ring target (the slowest per input) runs last and so inherits the most.
    order=()
    for t in "${targets[@]}"; do [ "$t" != ring ] && order+=("$t"); done
    for t in "${targets[@]}"; do [ "$t" = ring ] && order+=("$t"); done
    end=$((SECONDS + budget))
    left_goal=$goal
    n=${#order[@]}
    for t in "${order[@]}"; do
        now_left=$((end - SECONDS))
        [ "$now_left" -lt 1 ] && now_left=1
        share_t=$((now_left / n))
        [ "$share_t" -lt 1 ] && share_t=1
        share_g=$((left_goal > 0 ? left_goal / n : 1))
        echo "=== fuzz $t (campaign): up to ${share_t}s or $share_g executions, jobs=$jobs"
        run_target "$t" "$share_t" "$share_g"
        left_goal=$((left_goal - execs[$t]))
        n=$((n - 1))
    done
fi

# Summary: one line per target.
total=0
printf '%-12s %14s %8s %10s %8s\n' target executions seconds exec/s corpus
for t in "${targets[@]}"; do
    [ -n "${execs[$t]:-}" ] || continue
    total=$((total + execs[$t]))
    corpus=$(find "corpus-grown/$t" "corpus/$t" -type f 2>/dev/null | wc -l)
    printf '%-12s %14d %8d %10d %8d\n' "$t" "${execs[$t]}" "${took[$t]}" "${rate[$t]}" "$corpus"
done
printf '%-12s %14d\n' total "$total"
[ "$campaign" = 1 ] && echo "fuzz: campaign goal $goal executions, reached $total"

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
