# shellcheck shell=dash
# Shared guest half of the VM benchmarks (busybox sh): bench/vm/bench.py prepends this file,
# after the BENCH_* settings, to a scenario (scenarios/ring-size.sh, scenarios/compare.sh).
# It provides the in-kernel backstores, a LUN for any backstore, the builtin-only counters,
# and run_job: one fio job with a measurement window marked on the results channel
# ("mark=A:<seq>" / "mark=B:<seq>", at which the host samples qemu's CPU time) and one
# "benchrec=k:v,k:v,..." line.

: "${BENCH_RUNTIME_MS:=6000}"          # fio runtime (time_based), after the ramp
: "${BENCH_RAMP_MS:=1000}"             # fio ramp_time (not counted by fio)
failures=0
HPID="" RING=0 REC_TAGS=""

ms2s() { echo "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"; }
ramp_s=$(ms2s "$BENCH_RAMP_MS")
runtime_s=$(ms2s "$BENCH_RUNTIME_MS")
# Measurement window inside each job, counted from the first request the disk completes
# (fio's own clock starts a little earlier, with the job's set-up): from win_start_cs to
# win_margin_cs before fio's planned end. Short (quick) jobs start it before the ramp ends.
if [ "$BENCH_RUNTIME_MS" -ge 2000 ]; then
    win_start_cs=$((BENCH_RAMP_MS / 10 + 10)) win_margin_cs=100
else
    win_start_cs=$((BENCH_RAMP_MS / 10)); [ "$win_start_cs" -le 30 ] || win_start_cs=30
    win_margin_cs=60
fi
win_ms=$(( (BENCH_RAMP_MS + BENCH_RUNTIME_MS) - (win_start_cs + win_margin_cs) * 10 ))

bench_out() { echo "$*" >/dev/ttyS1; }

# bench_prefill PATH SIZE_MB: the backing file, written once so that reads hit real tmpfs
# pages (holes would be cheaper to read than data).
bench_prefill() {
    _t=$(now_ms)
    dd if=/dev/zero of="$1" bs=1M count="$2" 2>/dev/null
    result prefill_ms $(( $(now_ms) - _t ))
}

# ------------------------------------------------------------------ in-kernel backstores
# core_backstore_create HBA NAME CONTROL: mkdir, control, enable (fileio_0, rd_mcp_0).
core_backstore_create() {
    _d=$CFS/core/$1/$2
    mkdir -p "$CFS/core/$1"
    mkdir "$_d" || die "mkdir $_d"
    echo "$_d" >"$STATE/bench-core.$2"
    printf %s "$3" >"$_d/control" || die "write control '$3' to $_d"
    printf 1 >"$_d/enable" || die "enable $_d"
    log "backstore $1/$2 enabled ($3)"
}

core_backstore_remove() {
    _f=$STATE/bench-core.$1
    [ -f "$_f" ] || return 0
    _d=$(cat "$_f")
    rmdir "$_d" || die "rmdir $_d"
    rmdir "${_d%/*}" 2>/dev/null || true
    rm -f "$_f"
}

_disk_ready() {
    [ -r "/sys/block/$1/queue/max_sectors_kb" ] && [ "$(cat "/sys/block/$1/size")" -gt 0 ] &&
        [ -b "/dev/$1" ]
}

# ------------------------------------------------------------------ sampling
# Shell builtins only (no fork), so that taking a sample costs next to nothing.
# snap PREFIX: PREFIX_{user,nice,sys,idle,iow,irq,sirq,steal,ctxt,intr,rsec,wsec,rio,wio,hu,hs,cs}
snap() {
    read -r _ _u _n _s _i _w _q _sq _st _ </proc/stat
    _ctxt=0 _intr=0
    while read -r _k _v _; do
        case $_k in ctxt) _ctxt=$_v ;; intr) _intr=$_v ;; esac
    done </proc/stat
    if [ -n "$SD" ]; then
        read -r _rio _ _rsec _ _wio _ _wsec _ </sys/block/"$SD"/stat
    else
        _rio=0 _rsec=0 _wio=0 _wsec=0
    fi
    _hu=0 _hs=0
    if [ -n "$HPID" ] && [ -r "/proc/$HPID/stat" ]; then
        read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _hu _hs _ <"/proc/$HPID/stat"
    fi
    read -r _up _ </proc/uptime
    _c=${_up#*.}; _c=${_c#0}
    eval "$1_user=$_u $1_nice=$_n $1_sys=$_s $1_idle=$_i $1_iow=$_w $1_irq=$_q $1_sirq=$_sq" \
         "$1_steal=$_st $1_ctxt=$_ctxt $1_intr=$_intr $1_rsec=$_rsec $1_wsec=$_wsec" \
         "$1_rio=$_rio $1_wio=$_wio $1_hu=$_hu $1_hs=$_hs $1_cs=$(( ${_up%.*} * 100 + _c ))"
}

_uptime_cs() {
    read -r _up _ </proc/uptime
    _c=${_up#*.}; _c=${_c#0}
    _now=$(( ${_up%.*} * 100 + _c ))
}

# _io_count: sets _ioc, the requests the disk $SD has completed; with no disk (SD empty:
# fio's own rbd engine, whose I/O leaves the guest through eth0 only) the packets eth0 has
# moved. NET_IO_SLACK (set by the scenario: the packets of fio's connect and open) is added
# to a job's base then, so that its first I/O, not its set-up, starts the window.
NET_IO_SLACK=0
_io_count() {
    if [ -n "$SD" ]; then
        read -r _rio _ _ _ _wio _ </sys/block/"$SD"/stat
        _ioc=$((_rio + _wio))
    else
        read -r _rx </sys/class/net/eth0/statistics/rx_packets
        read -r _tx </sys/class/net/eth0/statistics/tx_packets
        _ioc=$((_rx + _tx))
    fi
}

# _first_io BASE FIO_PID: spin until the disk has completed more than BASE requests (sets
# _now); fails if fio exits first or after 30 s.
_first_io() {
    _uptime_cs; _end=$((_now + 3000)) _i=0
    while :; do
        _io_count
        [ "$_ioc" -gt "$1" ] && { _uptime_cs; return 0; }
        _i=$((_i + 1))
        if [ $((_i % 50)) = 0 ]; then
            kill -0 "$2" 2>/dev/null || return 1
            _uptime_cs; [ "$_now" -lt "$_end" ] || return 1
        fi
    done
}

# _sleep_until UPTIME_CS
_sleep_until() {
    _uptime_cs
    _d=$(($1 - _now))
    [ "$_d" -gt 0 ] && sleep "$((_d / 100)).$(printf %02d $((_d % 100)))"
    return 0
}

# Profiling hooks around each job (bench/vm/profile.sh): no-ops here; scenarios/profile-lib.sh,
# put after this file when profiling, redefines them. prof_arm JOB before fio starts, prof_on
# just before the window opens, prof_off just after it closes, prof_done once fio has ended.
prof_arm() { :; }
prof_on() { :; }
prof_off() { :; }
prof_done() { :; }

seq=0
# run_job ROUND TARGET JOB: one fio job on $DEV (disk $SD, handler $HPID or ""), one
# "benchrec=" line; REC_TAGS ("target:NAME,ring:N,...") goes into the record as is.
# FIO_TARGET, when set, replaces the disk (e.g. fio's rbd engine and its image, with SD
# empty): the window is then placed from eth0's packets and its I/Os are fio's rate times
# the window (ios_from:fio in the record) instead of the block layer's count.
FIO_TARGET=""
run_job() {
    case $3 in
        randread4k-qd32)  _a="--rw=randread --bs=4k --iodepth=32"  _bs=4096 ;;
        randwrite4k-qd32) _a="--rw=randwrite --bs=4k --iodepth=32" _bs=4096 ;;
        seqwrite1m-qd8)   _a="--rw=write --bs=1m --iodepth=8"      _bs=1048576 ;;
        randread4k-qd1)   _a="--rw=randread --bs=4k --iodepth=1"   _bs=4096 ;;
        randwrite4k-qd1)  _a="--rw=randwrite --bs=4k --iodepth=1"  _bs=4096 ;;
        *) die "unknown job $3" ;;
    esac
    seq=$((seq + 1))
    _out=/tmp/fio.bench.out
    rm -f "$_out"
    prof_arm "$3"
    _io_count
    _base=$_ioc
    [ -n "$SD" ] || _base=$((_base + NET_IO_SLACK))
    _tgt=${FIO_TARGET:-"--filename=$DEV --ioengine=libaio --direct=1"}
    # shellcheck disable=SC2086
    fio --eta=never --output-format=terse --terse-version=3 --output="$_out" \
        --name="$3" $_tgt $_a \
        --time_based --runtime="$runtime_s" --ramp_time="$ramp_s" --norandommap --randrepeat=0 \
        --lat_percentiles=1 --percentile_list=50:99:99.9 --group_reporting </dev/null &
    _fpid=$!
    # The ramp starts with the first I/O; fio's own start-up (libraries, setup) comes before.
    # Spot it with a builtin-only busy poll (a fork per poll costs ~50 ms under TCG), then
    # place the window by absolute deadlines so that slow forks of sleep cannot push it
    # past the end of the job.
    _win=1
    if _first_io "$_base" "$_fpid"; then
        _t0=$_now
        log "job $seq $3: first I/O"
        _sleep_until $((_t0 + win_start_cs))
        prof_on
        snap A; bench_out "mark=A:$seq"
        _sleep_until $((_t0 + (BENCH_RAMP_MS + BENCH_RUNTIME_MS) / 10 - win_margin_cs))
        snap B; bench_out "mark=B:$seq"
        prof_off
        kill -0 "$_fpid" 2>/dev/null || _win=0   # fio already gone: window ran past the job
        log "job $seq: window $A_cs..$B_cs cs, win_ok=$_win"
    else
        _win=0; snap A; snap B
    fi
    _rc=0
    wait "$_fpid" || _rc=$?
    [ "$_rc" = 0 ] || { log "fio $3 on $2 failed rc=$_rc"; cat "$_out" >&2 || true; failures=$((failures + 1)); }

    # terse v3: 5 error, 7/8 read bw KiB/s / iops, 18-37 read percentiles (usec; total
    # latency with --lat_percentiles=1), 40 read lat mean; 48/49 write bw / iops, 59-78 write
    # percentiles, 81 write lat mean; 88/89 fio's own usr/sys CPU %.
    _fio=$(awk -F';' '$1 == 3 {
            rd = ($8 > 0); b = rd ? 18 : 59
            p50 = p99 = p999 = 0
            for (i = b; i < b + 20; i++) {
                split($i, kv, "=")
                if (kv[1] == "50.000000%") p50 = kv[2]
                if (kv[1] == "99.000000%") p99 = kv[2]
                if (kv[1] == "99.900000%") p999 = kv[2]
            }
            sub("%", "", $88); sub("%", "", $89)
            printf "fio_err:%d,iops:%d,bw_kib:%d,lat_mean_us:%.1f,p50_us:%d,p99_us:%d,p999_us:%d,fio_usr_pct:%s,fio_sys_pct:%s",
                $5, rd ? $8 : $49, rd ? $7 : $48, rd ? $40 : $81, p50, p99, p999, $88, $89
        }' "$_out" 2>/dev/null || true)
    _wsec=$(( (B_rsec - A_rsec) + (B_wsec - A_wsec) )) _wreq=$(( (B_rio - A_rio) + (B_wio - A_wio) )) _xtag=""
    if [ -z "$SD" ]; then
        # No block layer to count: fio's own rate over the window.
        _fiops=$(echo "${_fio:-}" | sed -n 's/.*,iops:\([0-9]*\),.*/\1/p')
        _wreq=$(( ${_fiops:-0} * (B_cs - A_cs) / 100 ))
        _wsec=$(( _wreq * _bs / 512 ))
        _xtag=",ios_from:fio"
    fi
    _busy=$(( (B_user - A_user) + (B_nice - A_nice) + (B_sys - A_sys) + (B_irq - A_irq) \
            + (B_sirq - A_sirq) + (B_steal - A_steal) ))
    _rec="round:$1,$REC_TAGS$_xtag,job:$3,seq:$seq,rc:$_rc,bs:$_bs,max_sectors_kb:$MSKB"
    _rec="$_rec,win_ok:$_win,win_cs:$((B_cs - A_cs)),win_sectors:$_wsec,win_reqs:$_wreq"
    _rec="$_rec,cpu_user:$(( (B_user - A_user) + (B_nice - A_nice) )),cpu_sys:$((B_sys - A_sys))"
    _rec="$_rec,cpu_irq:$(( (B_irq - A_irq) + (B_sirq - A_sirq) )),cpu_idle:$(( (B_idle - A_idle) + (B_iow - A_iow) ))"
    _rec="$_rec,cpu_busy:$_busy,ctxt:$((B_ctxt - A_ctxt)),intr:$((B_intr - A_intr)),handler_ticks:$(( (B_hu - A_hu) + (B_hs - A_hs) )),handler_sys:$((B_hs - A_hs))"
    bench_out "benchrec=$_rec,${_fio:-fio_err:-1}"
    log "benchrec $_rec ${_fio:-}"
    prof_done
}

