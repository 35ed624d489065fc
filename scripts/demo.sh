#!/bin/sh
# The demo, start to finish, on a fresh Debian 12 machine as root:
#   1. scripts/setup.sh        (Debian packages: qemu, fio, sg3-utils, busybox; the 6.1 kernel)
#   2. cargo build --release -p tcmu-warden
#   3. boot Linux 6.1 under qemu (TCG) with tests/vm/demo/demo.sh: tcmu-warden with no
#      arguments (netlink mode) serves a 1 GiB sparse file LUN through tcm_loop; fio runs
#      1 MiB sequential writes QD8 (5 s), 4 KiB random reads QD32 and random writes QD32
#      (10 s each) and a crc32c-verified write pass
#   4. a report: IOPS, bandwidth, completion latency p50/p99, what the handler counted
# A few minutes at most (the first run also downloads packages and compiles).
# Exit status: 0 only if everything worked.
#
# usage: scripts/demo.sh [--no-setup] [--no-build]
# env:   DEMO_RAND_S / DEMO_SEQ_S  seconds per random / sequential job (default 10 / 5)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

setup=1 build=1
for a; do
    case $a in
        --no-setup) setup=0 ;;
        --no-build) build=0 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done

t_start=$(date +%s)
step() { printf '\n==> [%3ss] %s\n' "$(( $(date +%s) - t_start ))" "$*"; }
fail() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (apt-get installs the dependencies; the kernel runs under qemu)"
[ -r /etc/debian_version ] || echo "demo: warning: not Debian; setup uses apt-get" >&2

if [ "$setup" = 1 ]; then
    step "1/4 installing dependencies (scripts/setup.sh)"
    scripts/setup.sh || fail "scripts/setup.sh failed"
fi

bin=$repo/target/release/tcmu-warden
if [ "$build" = 1 ]; then
    step "2/4 building: cargo build --release -p tcmu-warden"
    command -v cargo >/dev/null 2>&1 || [ ! -x "$HOME/.cargo/bin/cargo" ] || PATH=$HOME/.cargo/bin:$PATH
    mkdir -p "$repo/target"
    blog=$repo/target/demo-build.log
    cargo build --release -p tcmu-warden >"$blog" 2>&1 || { tail -n 30 "$blog" >&2; fail "the build failed (log: $blog)"; }
    grep -E '^ *Finished' "$blog" | sed 's/^ */    /' || true
fi
[ -x "$bin" ] || fail "no binary at $bin (run without --no-build)"

step "3/4 booting Linux 6.1 in qemu (TCG, 2 vCPUs) with tcmu-warden serving a 1 GiB file LUN"
out=$repo/tests/vm/.cache/runs/demo-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$out"
# The guest's settings go in with the scenario (run-vm.sh copies scenarios verbatim).
scen=$out/demo.sh
{ echo "# vm-timeout: 240"
  echo "DEMO_RAND_S=${DEMO_RAND_S:-10} DEMO_SEQ_S=${DEMO_SEQ_S:-5}"
  cat tests/vm/demo/demo.sh; } >"$scen"
VM_OUT=$out tests/vm/run-vm.sh "$bin" "$scen" 300 >"$out/run-vm.log" 2>&1 &
vm=$!
# Progress: the guest's "demo:" lines, as they reach the console log.
seen=0
while :; do
    alive=1
    kill -0 "$vm" 2>/dev/null || alive=0
    if [ -f "$out/console.log" ]; then
        n=$(tr -d '\r' <"$out/console.log" | grep -a ' demo: ' | wc -l)
        if [ "$n" -gt "$seen" ]; then
            tr -d '\r' <"$out/console.log" | grep -a ' demo: ' | sed -n "$((seen + 1)),${n}p" |
                sed 's/^\[\([0-9.]*\)\] demo: /    guest \1s  /'
            seen=$n
        fi
    fi
    [ "$alive" = 1 ] || break
    sleep 1
done
vmrc=0
wait "$vm" || vmrc=$?

step "4/4 report"
res=$out/results.txt
[ -s "$res" ] || { cat "$out/run-vm.log" >&2; fail "the VM produced no results (see $out)"; }
# key=value lines of the demo block only.
sed -n '/^=== BEGIN demo/,/^=== END demo/p' "$res" | grep '=' | grep -v '^===' >"$out/demo.kv" || true
awk -F= -v vmlog="$out/run-vm.log" '
    { v[$1] = substr($0, length($1) + 2) }
    function num(x) { return (x == "") ? "?" : x }
    function ms(us) { return (us == "") ? "      ?" : sprintf("%7.2f", us / 1000) }
    function row(label, t) {
        if (!((t "_iops") in v)) { printf "  %-26s %s\n", label, "(not run)"; return }
        printf "  %-26s %8d %9.1f %10s %10s\n", label, v[t "_iops"], v[t "_bw_kib"] / 1024,
            ms(v[t "_p50_us"]), ms(v[t "_p99_us"])
    }
    END {
        printf "tcmu-warden demo: Linux %s in qemu TCG (%s vCPUs), 1 GiB sparse file on the guest tmpfs\n", num(v["kernel"]), num(v["ncpu"])
        printf "  daemon ready %s ms after start (locked memory %s KiB); enable %s ms (waits for the\n", num(v["ready_ms"]), num(v["vmlck_kb"]), num(v["enable_ms"])
        printf "  daemon to open the device); /dev/%s -> %s via tcm_loop in %s ms; INQUIRY %s\n", num(v["uio"]), num(v["disk"]), num(v["lun_ms"]), num(v["inquiry"])
        printf "\n  %-26s %8s %9s %10s %10s\n", "fio job (libaio, direct)", "IOPS", "MiB/s", "p50 ms", "p99 ms"
        row("1 MiB seq write   QD8", "seqwrite_1m_qd8")
        row("4 KiB rand read   QD32", "randread_4k_qd32")
        row("4 KiB rand write  QD32", "randwrite_4k_qd32")
        printf "  (completion latency; TCG emulates the CPU, so absolute numbers are far below real hardware)\n"
        printf "\n  data check (16 MiB random writes, crc32c verify): %s\n", ("verify" in v) ? "OK" : "FAILED"
        printf "  handler counted: commands=%s emulated=%s errors=%s kicks=%s contexts_exhausted=%s\n",
            num(v["h_commands"]), num(v["h_emulated"]), num(v["h_errors"]), num(v["h_kicks"]), num(v["h_contexts_exhausted"])
        printf "  daemon stop: rc=%s; kernel log problems: %s\n", num(v["stop_rc"]), num(v["kmsg_bad"])
    }' "$out/demo.kv"

grep -q '^  demo  *PASS' "$out/run-vm.log" && [ "$vmrc" = 0 ] || {
    echo
    sed -n '/^run-vm: FAILED/,$p' "$out/run-vm.log" | tail -n 40 >&2
    fail "see $out/console.log (guest console, kernel log, daemon log)"
}
printf '\ndemo: PASS in %ss (logs: %s)\n' "$(( $(date +%s) - t_start ))" "$out"
