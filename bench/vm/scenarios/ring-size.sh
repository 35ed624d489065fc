# vm-timeout: 900
# shellcheck shell=dash
# Guest half of the ring-size benchmark (busybox sh, sourced by /init after tests/vm/lib.sh,
# with -eu). bench/vm/ring_size.py prepends the BENCH_* settings below and bench-lib.sh (the
# shared half: backstores, counters, run_job) and copies the result into the VM as a scenario
# named "ring-size".
#
# For every round and every target (in-kernel fileio, in-kernel rd_mcp, tcmu-warden at each
# max_data_area_mb) it builds a tcm_loop LUN over a 256 MiB device and runs the same fio jobs
# against it. Each job emits one "benchrec=k:v,k:v,..." line on the results channel.
# Around a steady-state window inside each job it writes "mark=A:<seq>" / "mark=B:<seq>", at
# which the host samples qemu's CPU time.

: "${BENCH_ROUNDS:=1}"                 # rounds; even rounds run the targets in reverse order
: "${BENCH_RINGS:=1 4 16 64 1024}"     # max_data_area_mb values for tcmu-warden
: "${BENCH_SIZE_MB:=256}"              # device size (fileio/warden backing file on the tmpfs)
: "${BENCH_JOBS:=randread4k-qd32 randwrite4k-qd32 seqwrite1m-qd8 randread4k-qd1}"
: "${BENCH_TARGETS:=}"                 # default: fileio rdmcp warden:<ring>...
: "${BENCH_HANDLER_ARGS:=}"            # extra tcmu-warden arguments (e.g. --workers 1)

size=$((BENCH_SIZE_MB * 1024 * 1024))
img=/tmp/bench.img

result kernel "$(uname -r)"
result ncpu "$(grep -c '^processor' /proc/cpuinfo)"
result plan "rounds:$BENCH_ROUNDS,rings:$(echo $BENCH_RINGS | tr ' ' '/'),runtime_ms:$BENCH_RUNTIME_MS,ramp_ms:$BENCH_RAMP_MS,win_ms:$win_ms,win_start_cs:$win_start_cs,win_margin_cs:$win_margin_cs,size_mb:$BENCH_SIZE_MB"

# One backing file for fileio and every warden ring; rd_mcp allocates its pages itself.
bench_prefill "$img" "$BENCH_SIZE_MB"

# ------------------------------------------------------------------ targets
# target_up TARGET: sets DEV, TNAME, RING (0 for in-kernel), HPID (handler pid or "").
target_up() {
    HPID="" RING=0
    case $1 in
        fileio)
            TNAME=bfile
            core_backstore_create fileio_0 "$TNAME" "fd_dev_name=$img,fd_dev_size=$size"
            DEV=$(loop_lun_create -B "$CFS/core/fileio_0/$TNAME" "$TNAME") ;;
        rdmcp)
            TNAME=brd
            core_backstore_create rd_mcp_0 "$TNAME" "rd_pages=$((size / 4096))"
            DEV=$(loop_lun_create -B "$CFS/core/rd_mcp_0/$TNAME" "$TNAME") ;;
        warden:*)
            RING=${1#warden:} TNAME=bw$RING
            _uio=$(user_backstore_create -m "$RING" "$TNAME" "$size" "$img")
            # shellcheck disable=SC2086
            handler_start --uio "/dev/uio$_uio" $BENCH_HANDLER_ARGS
            HPID=$HANDLER_PID
            DEV=$(loop_lun_create "$TNAME") ;;
        *) die "unknown target $1" ;;
    esac
    SD=${DEV#/dev/}
    # The block device shows up in sysfs before sd has finished probing it (queue/, size).
    wait_until 10 "$DEV to be probed" _disk_ready "$SD" || die "$DEV not ready"
    MSKB=$(cat "/sys/block/$SD/queue/max_sectors_kb")
    log "target $1 is $DEV (max_sectors_kb=$MSKB)"
}

target_down() {
    loop_lun_remove "$TNAME"
    case $1 in
        fileio|rdmcp) core_backstore_remove "$TNAME" ;;
        warden:*)
            user_backstore_remove "$TNAME"
            handler_stop || true
            [ "$HANDLER_RC" = 0 ] || { log "handler exited rc=$HANDLER_RC"; failures=$((failures + 1)); } ;;
    esac
}

# ------------------------------------------------------------------ main
targets=$BENCH_TARGETS
if [ -z "$targets" ]; then
    targets="fileio rdmcp"
    for r in $BENCH_RINGS; do targets="$targets warden:$r"; done
fi
reversed=""
for t in $targets; do reversed="$t $reversed"; done

round=1
while [ "$round" -le "$BENCH_ROUNDS" ]; do
    order=$targets
    [ $((round % 2)) = 0 ] && order=$reversed
    for t in $order; do
        bench_out "target=round:$round,name:$t"
        target_up "$t"
        REC_TAGS="target:${t%%:*},ring:$RING"
        for j in $BENCH_JOBS; do run_job "$round" "$t" "$j"; done
        target_down "$t"
    done
    round=$((round + 1))
done
rm -f "$img"
result bench_failures "$failures"
[ "$failures" = 0 ] || die "$failures job(s) failed"
