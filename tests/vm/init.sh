#!/bin/sh
# Guest /init (busybox sh). Mounts the basics, loads the modules, runs each scenario under a
# timeout with lib.sh sourced, reports on /dev/ttyS1 and always powers off.
# Results protocol (ttyS1):  === BEGIN <name> / KEY=VALUE lines / === END <name> rc=<n>,
# then "=== DONE" once everything ran (the host treats its absence as a crash/timeout).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/ TERM=dumb

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=1777 tmp /tmp

# Defaults; /vm/config (written by run-vm.sh) overrides.
GUEST_TIMEOUT=280
. /vm/config

# Last resort: power off even if a scenario wedges in an uninterruptible sleep.
( sleep "$GUEST_TIMEOUT"; echo "init: guest watchdog after ${GUEST_TIMEOUT}s, powering off"
  echo "=== WATCHDOG" >/dev/ttyS1; sync; poweroff -f ) &

exec 3>/dev/ttyS1
t0=$(cut -d' ' -f1 /proc/uptime)
echo "=== BOOT uptime=$t0" >&3

modrc=0
mdir=/lib/modules/$(uname -r)
for m in $(cat "$mdir/load-order"); do
    insmod "$mdir/$m" || { echo "init: insmod $m failed" >&2; modrc=1; }
done
mount -t configfs configfs /sys/kernel/config || modrc=1
echo "=== MODULES rc=$modrc uptime=$(cut -d' ' -f1 /proc/uptime)" >&3

# Networking: loopback, and qemu's user-mode network on eth0, where 10.0.2.2 is the host's
# 127.0.0.1 (the throwaway Ceph and gluster services listen there; lib.sh's vm_forward makes
# them appear on the guest's own 127.0.0.1 too).
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
        echo "init: eth0 configuration failed" >&2
fi

# Kernel messages below the console loglevel ("quiet") still matter for diagnosis: each
# scenario's share of the ring buffer is copied into the console log after it.
dmesg -c | sed 's/^/kmsg: /'
while read -r name limit; do
    echo "=== BEGIN $name" >&3
    echo "init: ---- scenario $name ----"
    if [ "$modrc" != 0 ]; then
        rc=99
    else
        # The scenario runs -eu in its own session so that a timeout kills everything it
        # started (fio, handlers), not just its shell.
        setsid sh -eu -c ". /vm/lib.sh; . /vm/scenarios/$name.sh" </dev/null &
        spid=$!
        ( sleep "$limit"; echo "init: scenario $name timed out after ${limit}s" >&2
          kill -TERM -"$spid"; sleep 3; kill -KILL -"$spid" ) 2>/dev/null &
        wpid=$!
        wait "$spid"
        rc=$?
        kill "$wpid" 2>/dev/null
        [ "$rc" != 0 ] && sh -c '. /vm/lib.sh; vm_dump_logs' </dev/null
        # lib.sh's vm_cleanup tears down whatever the scenario left behind. Bounded: a
        # cleanup that hangs is itself a failure.
        timeout -s KILL 30 sh -c '. /vm/lib.sh; vm_cleanup' </dev/null || {
            echo "init: cleanup after $name failed" >&2; [ "$rc" = 0 ] && rc=98; }
    fi
    # Kernel health: oopses, warnings and a broken ring fail the scenario; other tcmu
    # complaints are reported as kmsg_warn (the full log is in console.log).
    dmesg -c >/tmp/.kmsg
    bad=$(grep -cE 'BUG:|WARNING:|Call Trace|ring is broken|blocked for more than' /tmp/.kmsg)
    warn=$(grep -cE 'Invalid addr to data page|cmd_id .* not found|[Tt]ime ?out|communication failure|I/O error' /tmp/.kmsg)
    echo "kmsg_bad=$bad" >&3
    [ "$warn" = 0 ] || echo "kmsg_warn=$warn" >&3
    [ "$bad" = 0 ] || { echo "init: kernel reported problems during $name" >&2; [ "$rc" = 0 ] && rc=97; }
    tail -n 200 /tmp/.kmsg | sed 's/^/kmsg: /'
    echo "init: ---- scenario $name rc=$rc ----"
    echo "=== END $name rc=$rc" >&3
done </vm/run-list
echo "=== DONE uptime=$(cut -d' ' -f1 /proc/uptime)" >&3
# Closing the tty waits for its output to drain; then power off at once.
exec 3>&-
sync
poweroff -f
