# vm-timeout: 240
# Crash recovery: SIGKILL the handler during QD32 writes, start a new one on the same
# /dev/uioN with the LUN still linked; fio (retried: the killed pass may see I/O errors)
# must complete a full write pass, and a verify_only pass must then succeed.
size=$((128 * 1024 * 1024))
img=/tmp/kill-restart.img
truncate -s "$size" "$img"
uio=$(user_backstore_create -a cmd_time_out=10 kr "$size" "$img")
handler_start --uio /dev/uio$uio
dev=$(loop_lun_create kr)

# Pass 1, in the background: killed mid-way. Its outcome does not matter, only that it ends.
fio --eta=never --name=kr --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=32 --size=32m --do_verify=0 --randseed=77 --output=/tmp/kr.killed.out &
fiopid=$!
# Kill once a few hundred writes have completed (field 5 of the disk's stat file).
writes_done() { [ "$(awk '{ print $5 }' "/sys/block/${dev#/dev/}/stat")" -gt 300 ]; }
wait_until 30 "writes to start" writes_done || die "no writes seen"
handler_kill
result killed_rc "$HANDLER_RC"
t=$(now_ms)
handler_start --uio /dev/uio$uio
result restart_ms $(( $(now_ms) - t ))
rc=0
wait "$fiopid" || rc=$?
result killed_pass_fio_rc "$rc"

# Pass 2: a full write pass, retried a few times.
ok=0
for attempt in 1 2 3; do
    if fio_run kr_w$attempt --name=kr --filename="$dev" --ioengine=libaio --direct=1 \
        --rw=randwrite --bs=4k --iodepth=32 --size=32m --verify=crc32c --do_verify=0 --randseed=77; then
        ok=1; break
    fi
done
result write_attempts "$attempt"
[ "$ok" = 1 ] || die "write pass failed 3 times after restart"
fio_run kr_verify --name=kr --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=4k --iodepth=32 --size=32m --verify=crc32c --randseed=77 --verify_only --verify_fatal=1 ||
    die "verify after restart failed"

loop_lun_remove kr
user_backstore_remove kr
handler_stop
