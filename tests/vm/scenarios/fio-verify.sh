# vm-timeout: 300
# Data integrity through the handler: 4 KiB and 64 KiB random writes and 1 MiB sequential
# writes at queue depths 1..64, each verified with crc32c; then a handler restart (SIGTERM,
# start again, LUN still linked) and every region re-verified with verify_only.
size=$((256 * 1024 * 1024))
img=/tmp/fio-verify.img
truncate -s "$size" "$img"
uio=$(user_backstore_create -a cmd_time_out=30 fv "$size" "$img")
handler_start --uio /dev/uio$uio
dev=$(loop_lun_create fv)

# name rw bs iodepth offset size: disjoint regions so the final re-verify checks them all.
JOBS="r4k_qd1 randwrite 4k 1 0 4m
r4k_qd32 randwrite 4k 32 16m 16m
r64k_qd16 randwrite 64k 16 32m 32m
s1m_qd1 write 1m 1 64m 32m
s1m_qd8 write 1m 8 96m 64m
s1m_qd64 write 1m 64 160m 64m"

run_jobs() { # extra fio args (e.g. --verify_only)
    echo "$JOBS" | while read -r n rw bs qd off sz; do
        fio_run "$n${1:+_reverify}" --name="$n" --filename="$dev" --ioengine=libaio --direct=1 \
            --rw="$rw" --bs="$bs" --iodepth="$qd" --offset="$off" --size="$sz" \
            --verify=crc32c --do_verify=1 --verify_fatal=1 --randseed=4242 "$@" ||
            die "fio $n ${1:-} failed"
    done
}
run_jobs

t=$(now_ms)
handler_stop
result stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "handler exited with $HANDLER_RC on SIGTERM"
handler_start --uio /dev/uio$uio
result restart_ms $(( $(now_ms) - t ))
run_jobs --verify_only

loop_lun_remove fv
user_backstore_remove fv
handler_stop
