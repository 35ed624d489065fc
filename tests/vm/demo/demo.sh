# vm-timeout: 240
# The demo (run by scripts/demo.sh): tcmu-warden in netlink mode (no arguments) serves a
# 1 GiB sparse file as a user backstore, exported through tcm_loop as /dev/sdX; fio measures
# 1 MiB sequential writes (QD8), 4 KiB random reads and writes (QD32), then a short
# crc32c-verified write pass checks the data. Lines starting with "demo:" are the progress
# the host prints; results go to the results channel for the host's report.
say() { log "demo: $*"; }
DEMO_SEQ_S=${DEMO_SEQ_S:-5} DEMO_RAND_S=${DEMO_RAND_S:-10}
size=$((1024 * 1024 * 1024))
img=/tmp/demo.img
truncate -s "$size" "$img"
result kernel "$(uname -r)"
result ncpu "$(grep -c ^processor /proc/cpuinfo)"

say "starting tcmu-warden (no arguments: netlink mode, serves every file/ backstore)"
t=$(now_ms)
handler_start_netlink
result ready_ms $(( $(now_ms) - t ))
result vmlck_kb "$(awk '/^VmLck:/ { print $2 }' "/proc/$HANDLER_PID/status")"

say "creating user_0/demo: 1 GiB sparse file $img, enable waits for the daemon's answer"
t=$(now_ms)
uio=$(user_backstore_create -N -a cmd_time_out=30 demo "$size" "$img")
result enable_ms $(( $(now_ms) - t ))
result uio "uio$uio"
handler_holds_uio "$uio" || die "daemon does not serve /dev/uio$uio"
t=$(now_ms)
dev=$(loop_lun_create demo)
result lun_ms $(( $(now_ms) - t ))
result disk "$dev"
sd=${dev#/dev/}
result disk_sectors "$(cat /sys/block/$sd/size)"
result max_sectors_kb "$(cat /sys/block/$sd/queue/max_sectors_kb)"
result inquiry "$(sg_inq "$dev" | sed -n 's/^ *Vendor identification: *//p;s/^ *Product identification: *//p' | tr '\n' ' ' | sed 's/ *$//;s/  */_/g')"
say "LUN is $dev ($(cat /sys/block/$sd/size) sectors); running fio"

# fio_job TAG SECONDS FIO-ARGS...: a time-based job; emits TAG_{iops,bw_kib,p50_us,p99_us}
# for the direction that moved data (clat percentiles from terse v3: read 18-37, write 59-78).
fio_job() {
    _tag=$1 _s=$2; shift 2
    say "fio $_tag for ${_s}s ..."
    _out=/tmp/fio.$_tag.out
    fio --eta=never --output-format=terse --terse-version=3 --output="$_out" --name="$_tag" \
        --filename="$dev" --ioengine=libaio --direct=1 --time_based --runtime="$_s" \
        --ramp_time=1 "$@" || { cat "$_out" >&2; die "fio $_tag failed"; }
    awk -F';' -v t="$_tag" '$1 == 3 {
        w = ($49 > $8); o = w ? 41 : 0
        printf "%s_err %d\n", t, $5
        printf "%s_iops %d\n%s_bw_kib %d\n", t, w ? $49 : $8, t, w ? $48 : $7
        for (i = 18; i <= 37; i++) { split($(i + o), kv, "=")
            if (kv[1] == "50.000000%") printf "%s_p50_us %d\n", t, kv[2]
            if (kv[1] == "99.000000%") printf "%s_p99_us %d\n", t, kv[2] } }' "$_out" |
        while read -r _k _v; do result "$_k" "$_v"; done
    _e=$(awk -F';' '$1 == 3 { print $5 }' "$_out")
    [ "${_e:-1}" = 0 ] || die "fio $_tag reported error $_e"
    say "  $(awk -F';' '$1 == 3 { w = ($49 > $8); printf "%d IOPS, %.1f MiB/s", w ? $49 : $8, (w ? $48 : $7) / 1024 }' "$_out")"
}
fio_job seqwrite_1m_qd8 "$DEMO_SEQ_S" --rw=write --bs=1m --iodepth=8
fio_job randread_4k_qd32 "$DEMO_RAND_S" --rw=randread --bs=4k --iodepth=32 --norandommap --randrepeat=0
fio_job randwrite_4k_qd32 "$DEMO_RAND_S" --rw=randwrite --bs=4k --iodepth=32 --norandommap --randrepeat=0

say "data check: 16 MiB of 64 KiB random writes, read back and verified with crc32c"
fio_run verify --name=verify --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=64k --iodepth=16 --offset=512m --size=16m --verify=crc32c --do_verify=1 --verify_fatal=1 ||
    die "data verification failed"
result verify ok

say "tearing down (LUN, backstore: the daemon answers REMOVED and logs its statistics)"
loop_lun_remove demo
nl_backstore_remove demo 30 || die "rmdir of the backstore failed (rc=$?)"
handler_log_wait 10 "device statistics" || die "no device statistics in the daemon log"
line=$(handler_stats_line "$HANDLER_LOG" user_0/demo)
for k in commands emulated errors bad_entries tmrs kicks contexts_exhausted; do
    result "h_$k" "$(stat_field "$line" "$k")"
done
handler_stop
result stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "daemon exited with $HANDLER_RC"
[ "$(stat_field "$line" errors)" = 0 ] || die "the daemon counted errors: $line"
say "done"
