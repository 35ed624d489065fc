# vm-timeout: 120
# Smoke: user backstore -> uio checks -> handler -> tcm_loop LUN -> INQUIRY, READ CAPACITY,
# a small fio write + crc32c verify -> teardown in documented order.
# Without a handler binary (run-vm.sh none ...) it stops after the kernel-side checks.
size=$((64 * 1024 * 1024))
img=/tmp/smoke.img
truncate -s "$size" "$img"

uio=$(user_backstore_create -m 16 -a cmd_time_out=10 smoke "$size" "$img")
name=$(cat /sys/class/uio/uio$uio/name)
mapsz=$(cat /sys/class/uio/uio$uio/maps/map0/size)
result uio "uio$uio"
result uio_name "$name"
result map0_size "$mapsz"
[ "$name" = "tcm-user/0/smoke/file/$img" ] || die "unexpected uio name '$name'"
# 16 MiB data area + 8 MiB command ring.
[ $((mapsz)) = $(((16 + 8) * 1024 * 1024)) ] || die "unexpected map0 size $mapsz"
result info "$(tr '\n' ' ' </sys/kernel/config/target/core/user_0/smoke/info)"

if ! have_handler; then
    result handler absent
    result partial 1
    user_backstore_remove smoke
    exit 0
fi

t=$(now_ms)
handler_start --uio /dev/uio$uio
dev=$(loop_lun_create smoke)
result disk_ready_ms $(( $(now_ms) - t ))
result disk "$dev"

inq=$(sg_inq "$dev") || die "sg_inq failed"
echo "$inq" >&2
result inq_vendor "$(echo "$inq" | sed -n 's/^ *Vendor identification: *//p')"
result inq_product "$(echo "$inq" | sed -n 's/^ *Product identification: *//p')"

cap=$(sg_readcap -l "$dev") || die "sg_readcap failed"
echo "$cap" >&2
blocks=$(echo "$cap" | sed -n 's/.*Last LBA=\([0-9]*\).*/\1/p')
blen=$(echo "$cap" | sed -n 's/.*Logical block length=\([0-9]*\).*/\1/p')
result last_lba "$blocks"
result block_len "$blen"
[ "$(( (blocks + 1) * blen ))" = "$size" ] || die "capacity $(( (blocks + 1) * blen )) != $size"
result sysfs_size_sectors "$(cat /sys/block/${dev#/dev/}/size)"

fio_run smoke --name=smoke --filename="$dev" --ioengine=libaio --direct=1 \
    --rw=randwrite --bs=4k --iodepth=8 --size=8m --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --randrepeat=0

loop_lun_remove smoke
user_backstore_remove smoke
handler_stop
result handler_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "handler exited with $HANDLER_RC after SIGTERM"
