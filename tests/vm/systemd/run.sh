#!/bin/sh
# Boot the systemd guest (build-rootfs.sh's Debian 12 image, systemd as PID 1) under qemu TCG,
# once per BOOT, on one disk (a qcow2 overlay of the cached image, so each boot sees what the
# previous one left: a reboot), and run that boot's scenarios in it.
#
# usage: run.sh DEB_DIR BOOT...
#   DEB_DIR  directory of tcmu-warden .debs (scripts/package.sh), copied to the guest's ./debs
#            (the one to install at the top, a newer build in upgrade/ for scenario restarts)
#   BOOT     comma-separated scenario names (scenarios/NAME.sh), run in order in one boot
# env: VM_OUT=dir for the logs (default tests/vm/.cache/runs/systemd-<time>-<pid>),
#      VM_REUSE_DISK=1 (with VM_OUT) keeps that directory's disk.qcow2
#      VM_PAYLOAD_EXTRA=dir: copied to every boot's payload as ./extra (e.g. a ceph.conf)
#      The test network (tests/net/netns.sh): VM_NETNS=namespace qemu runs in, VM_TAP=a tap on
#      its bridge, VM_NET_ADDR=the guest's eth0 address/prefix (e.g. 10.231.0.10/24); without
#      them the guest has no network but its loopback
# Exit status 0 only if every scenario of every boot passed and each boot reached its end.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/../.cache"
die() { echo "systemd-vm: $*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: $0 DEB_DIR BOOT..."
debdir=$(cd "$1" && pwd); shift
ls "$debdir"/*.deb >/dev/null 2>&1 || die "no .deb in $debdir"
command -v qemu-img >/dev/null || die "qemu-img missing: run scripts/install-systemd-vm-deps.sh"

t_start=$(date +%s)
# One build at a time (scripts/test.sh starts one early in the background; a second caller
# waits for it and then finds the image cached).
mkdir -p "$cache"
img=$(flock "$cache/systemd-image.lock" "$here/build-rootfs.sh") || die "building the root file system failed"
t_built=$(date +%s)
out=${VM_OUT:-$cache/runs/systemd-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$out"
ls -1dt "$cache"/runs/systemd-* 2>/dev/null | tail -n +6 | while read -r d; do rm -rf "$d"; done
"$here/initrd.sh" "$out/initrd.cpio"
# VM_REUSE_DISK=1 with VM_OUT of a failed run boots that run's disk again (debugging a later boot).
if [ "${VM_REUSE_DISK:-0}" != 1 ] || [ ! -f "$out/disk.qcow2" ]; then
    qemu-img create -q -f qcow2 -b "$img/rootfs.raw" -F raw "$out/disk.qcow2"
fi

# The guest's network: a tap on the test bridge, the address given to the initramfs.
netns="" nic="-nic none" append=""
if [ -n "${VM_NET_ADDR:-}" ]; then
    [ -n "${VM_NETNS:-}" ] && [ -n "${VM_TAP:-}" ] || die "VM_NET_ADDR needs VM_NETNS and VM_TAP"
    netns="ip netns exec $VM_NETNS"
    # One MAC per address (last octet), so several guests on one bridge never clash.
    mac=$(printf '52:54:00:e7:00:%02x' "$(echo "${VM_NET_ADDR%/*}" | cut -d. -f4)")
    nic="-netdev tap,id=n0,ifname=$VM_TAP,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=$mac"
    append="warden.net=$VM_NET_ADDR net.ifnames=0"
fi

status=0
n=0
for boot in "$@"; do
    n=$((n + 1))
    scen=$(echo "$boot" | tr , ' ')
    sum=0
    p="$out/payload$n"
    rm -rf "$p"; mkdir -p "$p/scenarios" "$p/debs"
    for s in $scen; do
        f="$here/scenarios/$s.sh"
        [ -f "$f" ] || die "no scenario $f"
        t=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n1)
        sum=$((sum + ${t:-300}))
    done
    cp "$here"/scenarios/*.sh "$p/scenarios/"
    cp "$here/runner.sh" "$here/lib.sh" "$p/"
    cp -r "$debdir"/. "$p/debs/"
    [ -z "${VM_PAYLOAD_EXTRA:-}" ] || cp -r "$VM_PAYLOAD_EXTRA" "$p/extra"
    printf 'BOOT_N=%s\nSCENARIOS="%s"\n' "$n" "$scen" >"$p/config"
    tar -C "$p" -cf "$out/payload$n.tar" .
    rm -rf "$p"
    limit=$((sum + 180))
    t0=$(date +%s.%N)
    qrc=0
    # shellcheck disable=SC2086 # $netns and $nic are word lists
    timeout -s KILL "$limit" $netns qemu-system-x86_64 -accel tcg -cpu max,-erms,-fsrm -m 3072 -smp 2 \
        -display none -monitor none -parallel none -no-reboot $nic \
        -serial "file:$out/console$n.log" -serial "file:$out/results$n.raw" \
        -drive "file=$out/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
        -drive "file=$out/payload$n.tar,if=virtio,format=raw,readonly=on" \
        -kernel "$img/vmlinuz" -initrd "$out/initrd.cpio" \
        -append "console=ttyS0 panic=-1 quiet no_timer_check root=/dev/vda $append" </dev/null || qrc=$?
    t1=$(date +%s.%N)
    tr -d '\r' <"$out/results$n.raw" >"$out/results$n.txt"
    echo "systemd-vm: boot $n ($scen): VM $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")s (qemu rc=$qrc), logs in $out"
    bad=0
    awk -v expected="$scen" '
        /^=== BOOT/    { boot = $3; next }
        /^=== BEGIN /  { cur = $3; seen[cur] = 1; kv[cur] = ""; next }
        /^=== END /    { rc[$3] = substr($4, 4); cur = ""; next }
        /^=== DONE/    { done = 1; next }
        cur == "" && /=/ { head = head "  " $0 }
        cur != "" && /=/ { kv[cur] = kv[cur] "      " $0 "\n" }
        END {
            printf "systemd-vm: guest ready after %s;%s\n", boot, head
            n = split(expected, names, " ")
            if ("kernel-log" in seen) { names[++n] = "kernel-log" }
            for (i = 1; i <= n; i++) {
                s = names[i]
                if (!(s in seen)) { v = "NOT RUN"; bad = 1 }
                else if (!(s in rc)) { v = "INCOMPLETE"; bad = 1 }
                else if (rc[s] == "0") v = "PASS"
                else { v = "FAIL (rc=" rc[s] ")"; bad = 1 }
                printf "  %-14s %s\n%s", s, v, kv[s]
            }
            if (!done) { print "systemd-vm: the guest did not finish (crash or timeout)"; bad = 1 }
            exit bad
        }' "$out/results$n.txt" || bad=1
    [ "$qrc" = 0 ] || { echo "systemd-vm: qemu exited with $qrc (137 = killed at the ${limit}s limit)"; bad=1; }
    if [ "$bad" != 0 ]; then
        status=1
        echo "systemd-vm: boot $n FAILED; last 80 lines of $out/console$n.log:"
        tail -n 80 "$out/console$n.log" | tr -d '\r' | sed 's/^/  | /'
        break
    fi
done
rm -f "$out"/payload*.tar "$out/initrd.cpio"
echo "systemd-vm: image $(basename "$img") ready in $((t_built - t_start))s (built in $(cat "$img/build-seconds")s when it was made); whole run $(( $(date +%s) - t_start ))s"
[ "$status" = 0 ] && rm -f "$out/disk.qcow2"
exit $status
