# vm-timeout: 180
# A 1 MiB data area against QD64 1 MiB writes (16 commands of 64 KiB each with the default
# hw_max_sectors=128): the kernel must queue (qfull) and the handler must keep up; all data
# verified with crc32c.
size=$((128 * 1024 * 1024))
img=/tmp/ringfull.img
truncate -s "$size" "$img"
uio=$(user_backstore_create -m 1 -a cmd_time_out=30 rf "$size" "$img")
result map0_size "$(cat /sys/class/uio/uio$uio/maps/map0/size)"
handler_start --uio /dev/uio$uio
dev=$(loop_lun_create rf)
# Show the ring-full path in the kernel log (dynamic debug, if the kernel has it).
[ -w /sys/kernel/debug/dynamic_debug/control ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
echo 'module target_core_user format "no data space" +p' >/sys/kernel/debug/dynamic_debug/control 2>/dev/null || true

fio_run rf_w --name=rf --filename="$dev" --ioengine=libaio --direct=1 --rw=write --bs=1m \
    --iodepth=64 --size=64m --verify=crc32c --do_verify=1 --verify_fatal=1
fio_run rf_rw --name=rf2 --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=256k --iodepth=64 --offset=64m --size=32m --verify=crc32c --do_verify=1 --verify_fatal=1
result kmsg_no_data_space "$(dmesg | grep -c 'no data space' || true)"

loop_lun_remove rf
user_backstore_remove rf
handler_stop
