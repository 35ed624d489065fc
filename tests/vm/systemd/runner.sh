#!/bin/sh
# The systemd guest's test runner, started by warden-runner.service (baked into the image) from
# the per-boot payload in /run/warden-test: run each scenario of this boot in order, each with
# bash -eu under its "# vm-timeout: N", results on ttyS1, then check the kernel log and power
# off. Result lines: "=== BOOT <uptime>s", "=== BEGIN name", key=value, "=== END name rc=N",
# "=== DONE" (the busybox harness's format, parsed by run.sh).
set -u
cd /run/warden-test
. ./config
exec 3>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo 2>/dev/null || true
say() { echo "$*" >&3; }
up=$(cut -d' ' -f1 /proc/uptime)
say "=== BOOT ${up}s"
say "boot_to_ready_s=$up"
# The kernel's share: until systemd (PID 1 after switch_root) started.
us=$(systemctl show -p UserspaceTimestampMonotonic --value 2>/dev/null || echo 0)
say "kernel_initrd_s=$(awk -v t="${us:-0}" 'BEGIN { printf "%.1f", t / 1e6 }')"
echo "runner: boot $BOOT_N ready after ${up}s (systemd started at $((${us:-0} / 1000000))s)"
failed_units=$(systemctl --failed --no-legend --plain | awk '{print $1}' | paste -sd, -)
say "failed_units=${failed_units:-none}"
for s in $SCENARIOS; do
    f=scenarios/$s.sh
    t=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n1)
    say "=== BEGIN $s"
    echo "runner: --- $s (limit ${t:-300}s)"
    rc=0
    RESULT_FD=3 timeout -k 5 "${t:-300}" bash -eu "$f" </dev/null || rc=$?
    echo "runner: --- $s rc=$rc"
    if [ "$rc" != 0 ]; then
        echo "runner: journal of tcmu-warden (last 60 lines):"
        journalctl -u tcmu-warden -b --no-pager -n 60 -o short-monotonic 2>&1 | sed 's/^/  j: /'
    fi
    say "=== END $s rc=$rc"
done
# Kernel problems anywhere in this boot fail the run.
if dmesg | grep -E 'Oops|WARNING:|ring is broken|blocked for more than|Timing out' >/tmp/kbad; then
    sed 's/^/runner: kernel: /' /tmp/kbad
    say "=== BEGIN kernel-log"
    say "kernel_bad_lines=$(wc -l </tmp/kbad)"
    say "=== END kernel-log rc=1"
fi
say "=== DONE"
sync
systemctl poweroff --no-block
