# vm-timeout: 240
# Netlink mode (the daemon started with no arguments before any backstore exists):
#  - reply mode on (the kernel logs it), memory locked, no refused data-page faults;
#  - enable waits for the daemon (it holds /dev/uioN when enable returns), LUN, fio verify;
#  - a second backstore (another max_data_area_mb) added while the first is under fio I/O;
#  - dev_size RECONFIG: the write succeeds, the next command gets UNIT ATTENTION 2A/09 once,
#    READ CAPACITY then shows the new size, and sd sees it after a rescan;
#  - emulate_write_cache RECONFIG: UNIT ATTENTION 2A/01 once, MODE SENSE WCE and sd's cache_type follow;
#  - the second backstore removed (LUN, rmdir) while the first is under I/O: rmdir returns
#    promptly, the daemon stops that device, the first LUN's verify stays clean.
size1=$((64 * 1024 * 1024)) size1b=$((72 * 1024 * 1024))
size2=$((32 * 1024 * 1024))
img1=/tmp/nl1.img img2=/tmp/nl2.img
truncate -s "$size1" "$img1"     # grown by the resize: the handler must cope with the short file
truncate -s "$size2" "$img2"
[ -z "$(ls /sys/class/uio 2>/dev/null)" ] || die "uio devices left over: $(ls /sys/class/uio)"

# RUST_LOG=debug: netlink events and kernel actions show in the log.
RUST_LOG=${NL_RUST_LOG:-debug} handler_start_netlink
pid=$HANDLER_PID
grep -q 'netlink reply mode on' "$HANDLER_LOG" || die "daemon did not turn reply mode on"
wait_until 5 "kernel to log reply mode" sh -c 'dmesg | grep -q "command reply support 1"' ||
    die "no 'tcmu daemon: command reply support 1' in the kernel log"
result block_netlink "$(cat "$NL_PARAMS/block_netlink" 2>/dev/null || echo '?')"
case $(cat "$NL_PARAMS/block_netlink") in 0|unblocked) ;; *) die "daemon left block_netlink on" ;; esac

# --- mlock: VmLck > 0; starting must not have made the kernel refuse data-page faults.
vmlck=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")
result vmlck_kb "$vmlck"
[ "${vmlck:-0}" -gt 0 ] || die "daemon has no locked memory (VmLck=$vmlck)"

# --- first backstore: enable must wait for the daemon's ADDED_DEVICE_DONE.
t=$(now_ms)
uio1=$(user_backstore_create -N -m 4 -a cmd_time_out=30 nl1 "$size1" "$img1")
result enable1_ms $(( $(now_ms) - t ))
handler_holds_uio "$uio1" || die "enable returned before the daemon opened /dev/uio$uio1 (no reply wait?)"
grep -q "user_0/nl1.*serving\|serving.*user_0/nl1" "$HANDLER_LOG" || die "daemon log has no 'serving' for nl1"
dev1=$(loop_lun_create nl1)
fio_run nl1_first --name=nl1 --filename="$dev1" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=4k --iodepth=16 --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 ||
    die "first fio on nl1 failed"
result kmsg_invalid_addr "$(dmesg | grep -c 'Invalid addr to data page' || true)"
[ "$(dmesg | grep -c 'Invalid addr to data page' || true)" = 0 ] ||
    die "kernel refused data-page faults (mlockall populating the data area?)"

FIO1="--name=nl1loop --filename=$dev1 --ioengine=libaio --direct=1 --rw=randwrite --bs=4k
    --iodepth=16 --offset=16m --size=6m --verify=crc32c --do_verify=1 --verify_fatal=1"

# --- second backstore added while nl1 is under I/O.
# shellcheck disable=SC2086
fio_loop_start nl1a $FIO1
sd1=${dev1#/dev/}
writes() { awk '{ print $5 }' "/sys/block/$1/stat"; }
w0=$(writes "$sd1")
wait_until 20 "nl1 I/O to run" sh -c "[ \$(awk '{ print \$5 }' /sys/block/$sd1/stat) -gt $((w0 + 200)) ]" ||
    die "no I/O on nl1"
t=$(now_ms)
uio2=$(user_backstore_create -N -m 64 -a cmd_time_out=30 nl2 "$size2" "$img2")
result enable2_ms $(( $(now_ms) - t ))
handler_holds_uio "$uio2" || die "enable of nl2 returned before the daemon opened /dev/uio$uio2"
result map0_nl1 "$(cat /sys/class/uio/uio$uio1/maps/map0/size)"
result map0_nl2 "$(cat /sys/class/uio/uio$uio2/maps/map0/size)"
dev2=$(loop_lun_create nl2)
fio_run nl2 --name=nl2 --filename="$dev2" --ioengine=libaio --direct=1 --rw=write --bs=1m \
    --iodepth=8 --size=8m --verify=crc32c --do_verify=1 --verify_fatal=1 || die "fio on nl2 failed"
fio_loop_stop nl1a || die "nl1 I/O failed while nl2 was added"

# --- resize nl1 (no other I/O on it, so the UA goes to our command).
configfs_write 10 "$CFS/core/user_0/nl1/attrib/dev_size" "$size1b" || die "dev_size write failed (rc=$?)"
[ "$(cat "$CFS/core/user_0/nl1/attrib/dev_size")" = "$size1b" ] || die "dev_size not updated"
handler_log_wait 5 "reconfigured" || die "daemon did not log the reconfiguration"
rc=0
sg_turs -v "$dev1" >/tmp/tur1 2>&1 || rc=$?
cat /tmp/tur1 >&2
result ua_tur_rc "$rc"
[ "$rc" = 6 ] || die "first command after resize: expected UNIT ATTENTION (sg rc 6), got rc=$rc"
grep -qi 'capacity data has changed' /tmp/tur1 || die "UA is not CAPACITY DATA HAS CHANGED (2A/09)"
rc=0
sg_turs "$dev1" >/dev/null 2>&1 || rc=$?
result tur2_rc "$rc"
[ "$rc" = 0 ] || die "second TEST UNIT READY after resize: rc=$rc (UA reported more than once?)"
cap=$(sg_readcap -l "$dev1") || die "READ CAPACITY after resize failed"
lba=$(echo "$cap" | sed -n 's/.*Last LBA=\([0-9]*\).*/\1/p')
result resized_bytes $(( (lba + 1) * 512 ))
[ $(( (lba + 1) * 512 )) = "$size1b" ] || die "READ CAPACITY shows $(( (lba + 1) * 512 )), want $size1b"
result sd_size_before_rescan "$(cat /sys/block/$sd1/size)"
[ "$(cat /sys/block/$sd1/size)" = $((size1 / 512)) ] || die "sd changed size before the rescan"
echo 1 >"/sys/block/$sd1/device/rescan"
wait_until 5 "sd to see the new size" sh -c "[ \$(cat /sys/block/$sd1/size) = $((size1b / 512)) ]" ||
    die "sd size $(cat /sys/block/$sd1/size) after rescan, want $((size1b / 512))"
result sd_size_after_rescan "$(cat /sys/block/$sd1/size)"
# The new space reads (zeros: past the file's end until written) and is writable.
dd if="$dev1" of=/tmp/grown.blk bs=4096 skip=$(( size1b / 4096 - 1 )) count=1 iflag=direct 2>/dev/null ||
    die "reading the last block of the grown area failed"
[ "$(od -An -v -tx1 /tmp/grown.blk | tr -d ' \n' | tr -d 0)" = "" ] || die "grown area does not read as zeros"
fio_run nl1_grown --name=grown --filename="$dev1" --ioengine=libaio --direct=1 --rw=write \
    --bs=64k --iodepth=4 --offset="$size1" --size=$((size1b - size1)) --verify=crc32c \
    --do_verify=1 --verify_fatal=1 || die "I/O in the grown area failed"

# --- emulate_write_cache: toggle, UNIT ATTENTION 2A/01 once, MODE SENSE caching page WCE
# and sd's cache_type follow.
# WCE is bit 2 of byte 2 of the caching page (0x08), after the MODE SENSE(10) header (8
# bytes) and the block descriptors (length in bytes 6-7).
wce() {
    _m=$(sg_modes -p 8 -r "$1" 2>/dev/null | od -An -v -tu1) || return 1
    # shellcheck disable=SC2086
    set -- $_m
    _bdl=$(( $7 * 256 + $8 ))
    shift $(( 8 + _bdl ))
    [ "$(( $1 & 0x3f ))" = 8 ] || { log "MODE SENSE: page $1 is not the caching page"; return 1; }
    echo $(( ($3 >> 2) & 1 ))
}
wc_attr=$CFS/core/user_0/nl1/attrib/emulate_write_cache
wc0=$(cat "$wc_attr")
result wc_initial "$wc0"
result wce_initial "$(wce "$dev1" || echo '?')"
result cache_type_initial "$(cat /sys/block/$sd1/device/scsi_disk/*/cache_type)"
for v in $((1 - wc0)) "$wc0"; do
    configfs_write 10 "$wc_attr" "$v" || die "emulate_write_cache=$v write failed (rc=$?)"
    [ "$(cat "$wc_attr")" = "$v" ] || die "emulate_write_cache not updated"
    # The change raises UNIT ATTENTION MODE PARAMETERS CHANGED (2A/01) once, for the next
    # command (docs/DESIGN.md, "Write cache").
    rc=0
    sg_turs -v "$dev1" >/tmp/tur_wc 2>&1 || rc=$?
    result "ua_wc_${v}_rc" "$rc"
    [ "$rc" = 6 ] && grep -qi 'mode parameters changed' /tmp/tur_wc ||
        die "first command after emulate_write_cache=$v: expected UNIT ATTENTION 2A/01, got rc=$rc: $(cat /tmp/tur_wc)"
    w=$(wce "$dev1") || die "MODE SENSE caching page failed"
    result "wce_after_$v" "$w"
    [ "$w" = "$v" ] || die "MODE SENSE WCE=$w after emulate_write_cache=$v"
    echo 1 >"/sys/block/$sd1/device/rescan"
    want="write through"; [ "$v" = 1 ] && want="write back"
    ct=$(cat /sys/block/$sd1/device/scsi_disk/*/cache_type)
    result "cache_type_after_$v" "$(echo "$ct" | tr ' ' _)"
    [ "$ct" = "$want" ] || die "sd cache_type '$ct' after emulate_write_cache=$v, want '$want'"
done

# --- dev_config: a path that cannot be opened is refused (the write fails, the old value
# stays, I/O goes on); a new valid path (a hard link to the same file) is taken.
dc=$CFS/core/user_0/nl1/attrib/dev_config
dc0=$(cat "$dc")
rc=0
configfs_write 10 "$dc" "file//nonexistent/dir/x.img" 2>/tmp/dc.err || rc=$?
result bad_dev_config_rc "$rc"
[ "$rc" != 124 ] || die "dev_config write blocked"
[ "$rc" != 0 ] || die "dev_config naming an unopenable file was accepted"
[ "$(cat "$dc")" = "$dc0" ] || die "dev_config changed to '$(cat "$dc")' although refused"
ln "$img1" /tmp/nl1-alt.img
configfs_write 10 "$dc" "file//tmp/nl1-alt.img" || die "dev_config write to a valid path failed (rc=$?)"
result uio_name_after_dev_config "$(cat /sys/class/uio/uio$uio1/name)"
[ "$(cat /sys/class/uio/uio$uio1/name)" = "tcm-user/0/nl1/file//tmp/nl1-alt.img" ] || die "uio name not updated"
handler_log_wait 5 "nl1-alt" || die "daemon log does not show the new backend"
fio_run nl1_newcfg --name=nl1loop --filename="$dev1" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=4k --iodepth=16 --offset=16m --size=2m --verify=crc32c --do_verify=1 --verify_fatal=1 ||
    die "I/O after the dev_config change failed"

# --- remove nl2 while nl1 is under I/O.
# shellcheck disable=SC2086
fio_loop_start nl1b $FIO1
w0=$(writes "$sd1")
wait_until 20 "nl1 I/O to run" sh -c "[ \$(awk '{ print \$5 }' /sys/block/$sd1/stat) -gt $((w0 + 200)) ]" ||
    die "no I/O on nl1"
t=$(now_ms)
loop_lun_remove nl2
result nl2_lun_remove_ms $(( $(now_ms) - t ))
t=$(now_ms)
nl_backstore_remove nl2 20 || die "rmdir of nl2 failed or blocked (rc=$?)"
result nl2_rmdir_ms $(( $(now_ms) - t ))
handler_log_wait 10 "user_0/nl2.*(removed by the kernel|stopping)|(removed by the kernel|stopping).*user_0/nl2" ||
    die "daemon log does not show nl2 stopped"
stats2=$(handler_stats_line "$HANDLER_LOG" user_0/nl2)
[ -n "$stats2" ] || die "no device statistics for nl2"
result nl2_commands "$(stat_field "$stats2" commands)"
wait_until 5 "daemon to close /dev/uio$uio2" sh -c "! ls -l /proc/$pid/fd 2>/dev/null | grep -q '/dev/uio$uio2\$'" ||
    die "daemon still holds /dev/uio$uio2 after removal"
# Let nl1's I/O go on a little after the removal.
p=$(fio_loop_passes nl1b)
wait_until 40 "another nl1 pass after the removal" sh -c "[ \$(wc -l </tmp/fioloop.nl1b.rc) -gt $p ]" || true
fio_loop_stop nl1b || die "nl1 I/O failed while nl2 was removed"

loop_lun_remove nl1
t=$(now_ms)
nl_backstore_remove nl1 20 || die "rmdir of nl1 failed or blocked (rc=$?)"
result nl1_rmdir_ms $(( $(now_ms) - t ))
t=$(now_ms)
handler_stop
result stop_ms $(( $(now_ms) - t ))
result stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "daemon exited with $HANDLER_RC on SIGTERM"
grep -q 'device statistics.*user_0/nl1\|user_0/nl1.*device statistics' "$HANDLER_LOG" || die "no statistics for nl1 at stop"
# Over the whole scenario (adding a device must not make the kernel fault another's data area).
n=$(dmesg | grep -c 'Invalid addr to data page' || true)
result kmsg_invalid_addr_total "$n"
[ "$n" = 0 ] || { dmesg | grep 'Invalid addr to data page' >&2; die "kernel refused $n data-page faults"; }
