# vm-timeout: 240
# LIO's iSCSI fabric in front of lun0: targetcli creates the target (iscsi_target_mod), a portal
# on 127.0.0.1:3260, demo-mode ACLs; open-iscsi in the same guest discovers and logs in over
# loopback; fio crc32c verify runs on the iSCSI disk. The session stays for scenario restarts.
. ./lib.sh
iqn=iqn.2003-01.org.linux-iscsi.warden:gw
tc() { targetcli "$@" >/tmp/tc 2>&1 || { cat /tmp/tc; die "targetcli $*"; }; }
tc /iscsi create "$iqn"
tc "/iscsi/$iqn/tpg1/luns" create /backstores/user:file/lun0
tc "/iscsi/$iqn/tpg1" set attribute generate_node_acls=1 demo_mode_write_protect=0 authentication=0 cache_dynamic_acls=1
lsmod | grep -q iscsi_target_mod || die "iscsi_target_mod not loaded"
grep -q 3260 /proc/net/tcp || ss -ltn | grep -q ':3260' || die "nobody listens on 3260"
t0=$(now)
iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 | grep -q "$iqn" || die "discovery does not list $iqn"
iscsiadm -m node -T "$iqn" -p 127.0.0.1:3260 --login || die "login failed"
wait_until 30 disk_of iscsi || die "no iSCSI disk"
dev=$(disk_of iscsi)
result login_to_disk_s "$(elapsed "$t0")"
log "iSCSI disk $dev"
# As gateway guides advise for multipath initiators: the SCSI layer waits longer than a restart.
echo 180 >"/sys/block/${dev#/dev/}/device/timeout"
t0=$(now)
fio_verify "$dev" iscsi4k --rw=randwrite --bs=4k --iodepth=32 --size=16m || die "fio verify over iSCSI failed"
result fio_iscsi_4k_verify "ok_$(elapsed "$t0")s"
fio_verify "$dev" iscsi1m --rw=write --bs=1m --iodepth=8 --offset=128m --size=32m || die "fio 1m verify over iSCSI failed"
result fio_iscsi_1m_verify ok
echo "$dev" >/tmp/iscsi.dev
