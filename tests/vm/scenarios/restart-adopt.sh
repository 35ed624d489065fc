# vm-timeout: 180
# Netlink-mode restarts. A linked backstore survives a clean daemon restart (SIGTERM, start
# with no arguments: the new daemon adopts the device with a ring reset) and a crash (SIGKILL
# during QD32 writes, start again: fio, retried, completes and verifies). After the restart
# the crash plan has reset netlink, so enabling a new device works (with reply mode on and
# the daemon dead it would hang: that is not tested, only avoided).
size=$((64 * 1024 * 1024))
img=/tmp/ra.img img2=/tmp/ra2.img
truncate -s "$size" "$img"
truncate -s "$size" "$img2"
export RUST_LOG=${NL_RUST_LOG:-debug}

handler_start_netlink
uio=$(user_backstore_create -N -m 8 -a cmd_time_out=10 ra "$size" "$img")
dev=$(loop_lun_create ra)
fio_run ra_w0 --name=ra0 --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 --randseed=11 ||
    die "first write failed"

# --- clean restart: SIGTERM, then a new daemon with no arguments adopts the device.
handler_stop
result stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "daemon exited with $HANDLER_RC on SIGTERM"
t=$(now_ms)
handler_start_netlink
handler_wait_uio "$uio" 10 || die "restarted daemon did not adopt /dev/uio$uio"
result adopt_ms $(( $(now_ms) - t ))
grep -q 'ring reset' "$HANDLER_LOG" || die "no ring reset logged on adoption"
result adopted_devices "$(sed -n 's/.*tcmu-warden ready.*devices=\([0-9]*\).*/\1/p' "$HANDLER_LOG" | tail -n 1)"
[ "$(cat "$CFS/core/user_0/ra/action/block_dev")" = unblocked ] || die "device left blocked after adoption"
fio_run ra_v0 --name=ra0 --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=4m --verify=crc32c --verify_only --verify_fatal=1 --randseed=11 ||
    die "data written before the restart does not verify"

# --- crash: SIGKILL during QD32 writes, then a new daemon with no arguments.
fio --eta=never --name=ra --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=32 --offset=16m --size=8m --do_verify=0 --randseed=77 --output=/tmp/ra.killed.out &
fiopid=$!
sd=${dev#/dev/}
w0=$(awk '{ print $5 }' "/sys/block/$sd/stat")
wait_until 30 "writes to start" sh -c "[ \$(awk '{ print \$5 }' /sys/block/$sd/stat) -gt $((w0 + 300)) ]" ||
    die "no writes seen"
handler_kill
result killed_rc "$HANDLER_RC"
t=$(now_ms)
handler_start_netlink
handler_wait_uio "$uio" 10 || die "daemon did not adopt /dev/uio$uio after the crash"
result crash_adopt_ms $(( $(now_ms) - t ))
grep -q 'ring reset' "$HANDLER_LOG" || die "no ring reset logged after the crash"
rc=0
wait "$fiopid" || rc=$?
result killed_pass_fio_rc "$rc"
ok=0
for attempt in 1 2 3; do
    if fio_run ra_w$attempt --name=ra --filename="$dev" --ioengine=libaio --direct=1 \
        --rw=randwrite --bs=4k --iodepth=32 --offset=16m --size=8m --verify=crc32c --do_verify=0 \
        --randseed=77; then
        ok=1; break
    fi
done
result write_attempts "$attempt"
[ "$ok" = 1 ] || die "write pass failed 3 times after the crash restart"
fio_run ra_verify --name=ra --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=4k --iodepth=32 --offset=16m --size=8m --verify=crc32c --randseed=77 --verify_only \
    --verify_fatal=1 || die "verify after the crash restart failed"

# --- the crash plan reset netlink: a new device can be enabled (bounded) and served.
t=$(now_ms)
uio2=$(user_backstore_create -N -m 8 -a cmd_time_out=10 ra2 "$size" "$img2")
result enable_after_crash_ms $(( $(now_ms) - t ))
handler_holds_uio "$uio2" || die "daemon does not hold /dev/uio$uio2"
dev2=$(loop_lun_create ra2)
fio_run ra2 --name=ra2 --filename="$dev2" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=8 --size=2m --verify=crc32c --do_verify=1 --verify_fatal=1 || die "fio on ra2 failed"

loop_lun_remove ra2
loop_lun_remove ra
nl_backstore_remove ra2 20 || die "rmdir ra2 failed (rc=$?)"
nl_backstore_remove ra 20 || die "rmdir ra failed (rc=$?)"
handler_stop
result final_stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "daemon exited with $HANDLER_RC"
