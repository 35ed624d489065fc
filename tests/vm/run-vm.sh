#!/bin/sh
# Boot the Debian cloud kernel under qemu TCG with a fresh initramfs and run scenarios in it.
#
# usage: run-vm.sh BINARY|none SCENARIO... [TIMEOUT_S]
#   BINARY     tcmu-warden build to test ("none": kernel-side checks only)
#   SCENARIO   tests/vm/scenarios/*.sh (all run in ONE boot, in order)
#   TIMEOUT_S  whole-VM limit (default: max(300, sum of the scenarios' "# vm-timeout: N" + 60))
# env: VM_OUT=dir for console.log/results.raw (default tests/vm/.cache/runs/<time>-<pid>),
#      VM_APPEND=extra kernel command line, KEEP_INITRD=1 keeps the initrd.
# Exit status: 0 only if every scenario passed and the guest reached its end.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"
kdir="$cache/kernel/current"
die() { echo "run-vm: $*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: $0 BINARY|none SCENARIO... [TIMEOUT_S]"
binary=$1; shift
timeout_s=""
for last; do :; done
case $last in *[!0-9]*|"") ;; *) [ -f "$last" ] || timeout_s=$last ;; esac
if [ -n "$timeout_s" ]; then
    # Drop the trailing timeout from "$@".
    n=$#; i=0
    for a in "$@"; do i=$((i + 1)); [ "$i" = 1 ] && set --; [ "$i" -lt "$n" ] && set -- "$@" "$a"; done
fi
[ $# -ge 1 ] || die "no scenario given"
[ "$binary" = none ] || binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
[ -e "$kdir/vmlinuz" ] || die "no kernel: run scripts/install-vm-deps.sh first"
command -v qemu-system-x86_64 >/dev/null || die "qemu missing: run scripts/install-vm-deps.sh"

# Per-scenario guest timeouts come from a "# vm-timeout: N" header line (default 120).
sum=0
for s in "$@"; do
    [ -f "$s" ] || die "scenario $s not found"
    t=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$s" | head -n1)
    sum=$((sum + ${t:-120}))
done
if [ -z "$timeout_s" ]; then
    timeout_s=$((sum + 60)); [ "$timeout_s" -lt 300 ] && timeout_s=300
fi

out=${VM_OUT:-$cache/runs/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$out"
# Keep the newest 20 run directories.
ls -1dt "$cache"/runs/*-* 2>/dev/null | tail -n +21 | while read -r d; do rm -rf "$d"; done
ln -sfn "$out" "$cache/runs/latest" 2>/dev/null || true
rm -f "$out/console.log" "$out/results.raw"

# The guest's watchdog fires before the host's so that results still get flushed.
guest_timeout=$((timeout_s - 10)); [ "$guest_timeout" -ge 10 ] || guest_timeout=$timeout_s
cat >"$out/config" <<CFG
GUEST_TIMEOUT=$guest_timeout
CFG

t0=$(date +%s.%N)
"$here/build-initramfs.sh" "$out/initrd" "$binary" "$out/config" "$@"
# Extra layers a scenario asks for with "# vm-layer: NAME" (layers/NAME.sh builds and caches
# the archive and prints its path), appended once each, after the base and per-run archives.
for layer in $(sed -n 's/^# vm-layer: *\([a-z0-9-]*\).*/\1/p' "$@" | sort -u); do
    [ -x "$here/layers/$layer.sh" ] || die "a scenario needs layer $layer: no $here/layers/$layer.sh"
    lcpio=$("$here/layers/$layer.sh") || die "building layer $layer failed"
    cat "$lcpio" >>"$out/initrd"
done
t1=$(date +%s.%N)

qrc=0
# no_timer_check: on a loaded host the TCG guest's early IO-APIC timer check can miss its
# ticks and panic ("IO-APIC + timer doesn't work") before init; a VM needs no such check.
timeout -s KILL "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max,-erms,-fsrm -m 3072 -smp 2 \
    -display none -monitor none -parallel none -no-reboot \
    -nic user,model=virtio-net-pci \
    -serial "file:$out/console.log" -serial "file:$out/results.raw" \
    -kernel "$kdir/vmlinuz" -initrd "$out/initrd" \
    -append "console=ttyS0 panic=-1 quiet no_timer_check ${VM_APPEND:-}" </dev/null || qrc=$?
t2=$(date +%s.%N)
[ "${KEEP_INITRD:-0}" = 1 ] || rm -f "$out/initrd"

tr -d '\r' <"$out/results.raw" >"$out/results.txt"
echo "run-vm: initramfs $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")s, VM $(awk "BEGIN { printf \"%.1f\", $t2 - $t1 }")s (qemu rc=$qrc), output in $out"

# Summary: one block per scenario, then the verdict.
srcs=""
for s in "$@"; do srcs="$srcs $(basename "$s" .sh)"; done
status=0
awk -v expected="$srcs" '
    /^=== BOOT/    { boot = $3 }
    /^=== MODULES/ { mods = $0 }
    /^=== BEGIN /  { cur = $3; kv[cur] = ""; line[cur] = ""; seen[cur] = 1; next }
    /^=== END /    { rc[$3] = substr($4, 4); cur = ""; next }
    /^=== DONE/    { done = 1; next }
    /^=== WATCHDOG/ { wd = 1; next }
    # key=value lines, packed into lines of ~100 columns
    cur != "" && /=/ {
        if (length(line[cur]) + length($0) > 100) { kv[cur] = kv[cur] "      " line[cur] "\n"; line[cur] = "" }
        line[cur] = line[cur] (line[cur] == "" ? "" : "  ") $0
    }
    END {
        printf "run-vm: guest %s, %s\n", boot, mods
        n = split(expected, names, " "); bad = 0
        for (i = 1; i <= n; i++) {
            s = names[i]
            if (!(s in seen)) { v = "NOT RUN"; bad = 1 }
            else if (!(s in rc)) { v = "INCOMPLETE"; bad = 1 }
            else if (rc[s] == "0") v = "PASS"
            else { v = "FAIL (rc=" rc[s] ")"; bad = 1 }
            if (line[s] != "") kv[s] = kv[s] "      " line[s] "\n"
            printf "  %-14s %s\n%s", s, v, kv[s]
        }
        if (wd) { print "run-vm: the guest watchdog fired"; bad = 1 }
        if (!done) { print "run-vm: the guest did not finish (crash or timeout)"; bad = 1 }
        exit bad
    }' "$out/results.txt" || status=1
[ "$qrc" = 0 ] || { echo "run-vm: qemu exited with $qrc (137 = killed at the ${timeout_s}s limit)"; status=1; }

if [ "$status" != 0 ]; then
    echo "run-vm: FAILED; last 60 lines of $out/console.log:"
    tail -n 60 "$out/console.log" | tr -d '\r' | sed 's/^/  | /'
fi
exit $status
