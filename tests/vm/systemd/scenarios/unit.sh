# vm-timeout: 300
# The installed unit's sandbox lets the daemon do its job: a user:file LUN created by targetcli
# is served (fio crc32c verify through tcm_loop); /metrics answers on 127.0.0.1 (AF_INET);
# `tcmu-warden status` reaches /run/tcmu-warden/control.sock (RuntimeDirectory=); the crash plan
# ran and reply mode is on (the module's parameters writable); mlockall and PR_SET_IO_FLUSHER
# succeeded (LimitMEMLOCK, the system call filter). The configuration is saved for the next
# boot (scenario restore) with a checksum of the data written.
. ./lib.sh
active || die "tcmu-warden is not running"
systemd-analyze security tcmu-warden --no-pager >/tmp/sec 2>&1 || true
tail -n 1 /tmp/sec
result exposure "$(sed -n 's/.*Overall exposure level for tcmu-warden.service: \([0-9.]*\).*/\1/p' /tmp/sec)"

wjournal >/tmp/j
grep -q 'memory locked (mlockall)' /tmp/j || { grep -i mlock /tmp/j; die "mlockall did not succeed"; }
grep -q 'PR_SET_IO_FLUSHER set' /tmp/j || { grep -i flusher /tmp/j; die "PR_SET_IO_FLUSHER did not succeed"; }
! grep -q 'cannot block/reset netlink' /tmp/j || { grep 'block/reset' /tmp/j; die "crash plan failed"; }
grep -q 'netlink reply mode on' /tmp/j || die "reply mode is not on"
dmesg | grep -q 'command reply support 1' || die "the kernel did not see reply mode"
# The module reports "blocked"/"unblocked" (older kernels 0/1).
bn=$(cat /sys/module/target_core_user/parameters/block_netlink)
case $bn in
    unblocked | 0 | N) ;;
    *) die "netlink left blocked ($bn)" ;;
esac
result crash_plan ok
result mlock ok

# A file LUN through targetcli, exported through tcm_loop.
img=/var/lib/tcmu-warden/lun0.img
truncate -s 256M "$img"
targetcli /backstores/user:file create name=lun0 size=256M "cfgstring=$img" >/tmp/tc 2>&1 ||
    { cat /tmp/tc; die "targetcli create failed"; }
# Longer than any restart below (the kill -STOP one waits for the watchdog): commands queued
# while the daemon is down must not time out in the kernel. Only settable before a LUN exists.
targetcli /backstores/user:file/lun0 set attribute cmd_time_out=150 >/tmp/tc 2>&1 ||
    { cat /tmp/tc; die "set cmd_time_out"; }
wwn=naa.5001405000000001
targetcli /loopback create "wwn=$wwn" >/tmp/tc 2>&1 || { cat /tmp/tc; die "loopback create"; }
targetcli "/loopback/$wwn/luns" create /backstores/user:file/lun0 >/tmp/tc 2>&1 ||
    { cat /tmp/tc; die "luns create"; }
wait_until 20 disk_of loopback || die "no disk appeared"
dev=$(disk_of loopback)
log "disk $dev"
t0=$(now)
fio_verify "$dev" r4k --rw=randwrite --bs=4k --iodepth=32 --size=16m || die "fio verify failed"
result fio_4k_verify "ok_$(elapsed "$t0")s"
# Data for the next boot: 8 MiB at offset 64 MiB, its checksum on the root disk.
dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 status=none
dd if=/tmp/pattern of="$dev" bs=1M seek=64 oflag=direct conv=fsync status=none
mkdir -p /var/lib/warden-test
md5sum </tmp/pattern | cut -d' ' -f1 >/var/lib/warden-test/lun0.md5
echo "$wwn" >/var/lib/warden-test/lun0.wwn

# /metrics on 127.0.0.1 (the unit allows AF_INET; it used to be refused).
curl -sf --max-time 5 http://127.0.0.1:9559/metrics >/tmp/metrics || die "/metrics does not answer"
grep -q '^tcmu_' /tmp/metrics || { head -n 20 /tmp/metrics; die "/metrics has no tcmu_ series"; }
result metrics_series "$(grep -c '^tcmu_' /tmp/metrics)"
# The control socket in /run/tcmu-warden.
tcmu-warden status >/tmp/status 2>&1 || { cat /tmp/status; die "tcmu-warden status failed"; }
cat /tmp/status
grep -q lun0 /tmp/status || die "status does not show lun0"
result status ok

targetcli saveconfig >/tmp/tc 2>&1 || { cat /tmp/tc; die "saveconfig"; }
grep -q '"dev_config"\|user:file\|lun0' /etc/rtslib-fb-target/saveconfig.json 2>/dev/null ||
    grep -q lun0 /etc/target/saveconfig.json 2>/dev/null || die "saveconfig.json lacks lun0"
sync
result saved ok
