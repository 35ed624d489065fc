# vm-timeout: 360
# Network backstores under the installed unit: the guest reaches the host's throwaway Ceph
# cluster and gluster volume over the test network (tests/net/netns.sh; gateway.sh starts them
# and puts their client configuration in ./extra). targetcli creates a user:rbd and a user:glfs
# LUN (the daemon checks both cfgstrings over the bus), tcm_loop exports them, and:
#   1. fio crc32c verify on each (4 KiB random at QD32, 1 MiB sequential);
#   2. `systemctl restart tcmu-warden` while fio verify writes to both: no fio or kernel I/O
#      error, a new PID, the gap of a 50 ms read probe on each disk;
#   3. the LUNs removed while the daemon stops (a gateway's shutdown: the target configuration
#      cleared and the daemon stopped at once): afterwards the image has no watcher and no lock
#      (`rbd status`, `rbd lock ls` from the guest's ceph CLI), then the daemon starts again
#      for the scenarios after this one.
. ./lib.sh
[ -f extra/env ] || die "no ./extra/env (boot with tests/vm/systemd/gateway.sh: the test network and its clusters)"
. extra/env # RBD_IMAGE (pool/image), RBD_SIZE_MB, GLFS_VOLUME, GLFS_HOST
install -d -m 0755 /etc/ceph
install -m 0644 extra/ceph.conf /etc/ceph/ceph.conf
install -m 0600 extra/keyring /etc/ceph/keyring
result guest_addr "$(ip -4 -o addr show dev eth0 | awk '{ print $4 }')"
wait_until 60 active || die "tcmu-warden not running"
rbdc() { timeout 30 rbd "$@"; }
t0=$(now)
rbdc info "$RBD_IMAGE" >/tmp/rbdinfo 2>&1 || { cat /tmp/rbdinfo; die "the cluster does not answer (rbd info $RBD_IMAGE)"; }
result ceph_reached_s "$(elapsed "$t0")"

tc() { targetcli "$@" >/tmp/tc 2>&1 || { cat /tmp/tc; die "targetcli $*"; }; }
# The tcm_loop target of scenario unit (restored at boot), or a new one when run alone.
if [ -s /var/lib/warden-test/lun0.wwn ]; then
    wwn=$(cat /var/lib/warden-test/lun0.wwn)
else
    wwn=naa.5001405000000002
    tc /loopback create "wwn=$wwn"
fi
# (none yet when run alone: ls fails, which pipefail would make fatal)
disks() { { ls -d /sys/block/sd* 2>/dev/null || true; } | sort; }
# export_lun NAME TYPE: the backstore on the tcm_loop target; its new /dev/sdX in /tmp/dev.NAME.
export_lun() {
    local before d
    before=$(disks)
    tc "/backstores/user:$2/$1" set attribute cmd_time_out=150
    tc "/loopback/$wwn/luns" create "/backstores/user:$2/$1"
    wait_until 30 sh -c "[ \"\$(ls -d /sys/block/sd* | sort | wc -l)\" -gt $(echo "$before" | grep -c .) ]" ||
        die "no disk for $1"
    d=$(comm -13 <(echo "$before") <(disks) | head -n1)
    # Longer than a restart, as on a gateway's initiators (scenario iscsi does the same).
    echo 180 >"$d/device/timeout"
    echo "/dev/${d##*/}" >"/tmp/dev.$1"
}

t0=$(now)
tc /backstores/user:rbd create name=rbd0 "size=${RBD_SIZE_MB}M" "cfgstring=$RBD_IMAGE"
export_lun rbd0 rbd
rdev=$(cat /tmp/dev.rbd0)
result rbd_lun_s "$(elapsed "$t0")"
t0=$(now)
tc /backstores/user:glfs create name=glfs0 size=256M "cfgstring=$GLFS_VOLUME@$GLFS_HOST/gw-lun.img"
export_lun glfs0 glfs
gdev=$(cat /tmp/dev.glfs0)
result glfs_lun_s "$(elapsed "$t0")"
log "rbd $rdev, glfs $gdev"

# 1. Verified I/O on each.
for d in "rbd:$rdev" "glfs:$gdev"; do
    n=${d%%:*} dev=${d#*:}
    t0=$(now)
    fio_verify "$dev" "${n}4k" --rw=randwrite --bs=4k --iodepth=32 --size=16m || die "fio 4k verify on $n failed"
    # terse v3: field 49 is the write IOPS.
    result "${n}_fio_4k_qd32" "ok_$(cut -d';' -f49 "/tmp/fio.${n}4k")iops_$(elapsed "$t0")s"
    fio_verify "$dev" "${n}1m" --rw=write --bs=1m --iodepth=8 --offset=64m --size=32m || die "fio 1m verify on $n failed"
    result "${n}_fio_1m_qd8" "ok_$(( $(cut -d';' -f48 "/tmp/fio.${n}1m") / 1024 ))MiBps"
done

# 2. A restart while both are written.
kerr() { dmesg | grep -cE 'I/O error|Timing out|blocked for more than|rejecting I/O' || true; }
before_k=$(kerr)
before_pid=$(systemctl show -p MainPID --value tcmu-warden)
pids=""
for d in "rbd:$rdev" "glfs:$gdev"; do
    n=${d%%:*} dev=${d#*:}
    fio --name="${n}rs" --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=16 --offset=32m --size=32m --time_based --runtime=20 --verify=crc32c \
        --verify_backlog=256 --verify_fatal=1 --output-format=terse --terse-version=3 \
        >"/tmp/fio.${n}rs" 2>&1 &
    pids="$pids $!"
    (while :; do
        dd if="$dev" of=/dev/null bs=4k count=1 skip=$((RANDOM % 4000)) iflag=direct status=none 2>/dev/null &&
            date +%s.%N
        sleep 0.05
    done) >"/tmp/probe.$n" &
    echo $! >>/tmp/probe.pids
done
sleep 3
t_act=$(now)
log "systemctl restart tcmu-warden"
systemctl restart tcmu-warden
result restart_s "$(elapsed "$t_act")"
for p in $pids; do
    wait "$p" || { cat /tmp/fio.rbdrs /tmp/fio.glfsrs | tail -n 30; die "fio failed across the restart"; }
done
while read -r p; do kill "$p" 2>/dev/null || true; done </tmp/probe.pids
rm -f /tmp/probe.pids
for n in rbd glfs; do
    [ "$(cut -d';' -f5 "/tmp/fio.${n}rs")" = 0 ] || die "fio on $n reports an error"
    gap=$(awk -v t="$t_act" '$1 >= t - 1 { if (p != "" && $1 - p > g) g = $1 - p; p = $1 } END { printf "%.2f", g }' "/tmp/probe.$n")
    result "${n}_restart_gap_s" "$gap"
    result "${n}_restart_fio" "clean_$(cut -d';' -f49 "/tmp/fio.${n}rs")iops"
done
[ "$(kerr)" = "$before_k" ] || { dmesg | tail -n 20; die "kernel I/O errors across the restart"; }
[ "$(systemctl show -p MainPID --value tcmu-warden)" != "$before_pid" ] || die "the daemon was not replaced"

# 3. Remove and stop at once; nothing of the daemon's stays on the image.
rbdc status "$RBD_IMAGE" --format json >/tmp/rst
grep -q '"address"' /tmp/rst || { cat /tmp/rst; die "the serving daemon shows no watcher (rbd status)"; }
t0=$(now)
# targetcli deletes a backstore's LUNs with it.
(targetcli /backstores/user:rbd delete rbd0 && targetcli /backstores/user:glfs delete glfs0) >/tmp/tc.bs 2>&1 &
bs=$!
systemctl stop tcmu-warden
wait "$bs" || { cat /tmp/tc.bs; die "removing the backstores failed"; }
result remove_and_stop_s "$(elapsed "$t0")"
rbdc status "$RBD_IMAGE" --format json >/tmp/rst
rbdc lock ls "$RBD_IMAGE" --format json >/tmp/rlk
log "after the stop: status $(cat /tmp/rst), locks $(cat /tmp/rlk)"
! grep -q '"address"' /tmp/rst || die "a watcher is left on $RBD_IMAGE"
! grep -q '"locker"' /tmp/rlk || die "a lock is left on $RBD_IMAGE"
result rbd_after_stop no_watcher_no_lock
! ls -d /sys/kernel/config/target/core/user_*/rbd0 /sys/kernel/config/target/core/user_*/glfs0 2>/dev/null ||
    die "a backstore is left in configfs"
systemctl start tcmu-warden
wait_until 60 active || die "tcmu-warden did not start again"
