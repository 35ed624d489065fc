# shellcheck shell=dash
# Helpers for guest scenarios (busybox sh, sourced by /init with -eu in effect).
# They follow the documented sequence (the project's KERNEL-ABI brief §3, §7.6, §8.3): control written once before enable, handler running before the LUN is linked,
# teardown LUN -> backstore (handler still alive) -> handler.
# Every wait is a bounded poll. Diagnostics go to stderr (the console log); values that
# callers capture with $(...) are the only thing printed on stdout.

CFS=/sys/kernel/config/target
STATE=/tmp/.vm-state          # what has been created, so vm_cleanup can undo it
mkdir -p "$STATE"

log()  { echo "[$(uptime_s)] $*" >&2; }
die()  { log "FATAL: $*"; exit 1; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
now_ms() { echo $(( $(now_cs) * 10 )); }

# result KEY VALUE: one key=value line on the results channel (and the console).
result() {
    echo "$1=$2" >/dev/ttyS1
    log "result $1=$2"
}

# Uptime in centiseconds, without forking (polls run often, and forks are slow under TCG).
now_cs() {
    read -r _u _ </proc/uptime
    _c=${_u#*.}; _c=${_c#0}
    echo $(( ${_u%.*} * 100 + _c ))
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.1 s until it succeeds; the limit is
# wall-clock (uptime) based, so slow checks do not stretch it.
wait_until() {
    _w_end=$(( $(now_cs) + $1 * 100 )) _w_desc=$2 _w_s=$1
    shift 2
    until "$@"; do
        [ "$(now_cs)" -lt "$_w_end" ] || { log "timed out after ${_w_s}s waiting for $_w_desc"; return 1; }
        sleep 0.1
    done
}

# ---------------------------------------------------------------- user backstore
# user_backstore_create [-H hba] [-m max_data_area_mb] [-a attr=value]... NAME SIZE_BYTES CFG [TOKENS]
#   CFG is the handler cfgstring (dev_config becomes file/CFG); TOKENS are extra control
#   tokens such as hw_max_sectors=256 (comma separated, no spaces).
#   Prints the uio minor N (/dev/uioN).
user_backstore_create() {
    _hba=0 _mb=${MAX_DATA_AREA_MB:-64} _attrs=""
    while [ $# -gt 0 ]; do
        case $1 in
            -H) _hba=$2; shift 2 ;;
            -m) _mb=$2; shift 2 ;;
            -a) _attrs="$_attrs $2"; shift 2 ;;
            *) break ;;
        esac
    done
    [ $# -ge 3 ] || die "user_backstore_create: NAME SIZE CFG [TOKENS]"
    _name=$1 _size=$2 _cfg=$3 _extra=${4:-}
    _dir=$CFS/core/user_$_hba/$_name
    mkdir -p "$CFS/core/user_$_hba"
    mkdir "$_dir" || die "mkdir $_dir"
    echo "$_hba $_name" >"$STATE/backstore.$_hba.$_name"
    # One write with every sizing token (max_data_area_mb is refused after enable).
    _ctl="dev_size=$_size,dev_config=file/$_cfg,max_data_area_mb=$_mb${_extra:+,$_extra}"
    printf %s "$_ctl" >"$_dir/control" || die "write control '$_ctl'"
    for _a in $_attrs; do
        printf %s "${_a#*=}" >"$_dir/attrib/${_a%%=*}" || die "set attrib $_a"
    done
    printf 1 >"$_dir/enable" || die "enable $_dir"
    wait_until 5 "uio device for $_name" _uio_find "$_hba" "$_name" >/dev/null || die "no uio for $_name"
    _n=$(_uio_find "$_hba" "$_name")
    wait_until 5 "/dev/uio$_n" test -c "/dev/uio$_n" || die "/dev/uio$_n missing"
    log "backstore user_$_hba/$_name enabled: uio$_n ($(cat /sys/class/uio/uio$_n/name))"
    echo "$_n"
}

# _uio_find HBA NAME: print N of the uio device named tcm-user/HBA/NAME/...
_uio_find() {
    for _u in /sys/class/uio/uio*; do
        [ -e "$_u/name" ] || continue
        case $(cat "$_u/name") in
            "tcm-user/$1/$2/"*|"tcm-user/$1/$2") echo "${_u##*/uio}"; return 0 ;;
        esac
    done
    return 1
}

# user_backstore_remove [-H hba] NAME: rmdir the device (the handler must still run: it
# gets REMOVED_DEVICE), then the HBA directory if nothing else uses it.
user_backstore_remove() {
    _hba=0
    [ "$1" = -H ] && { _hba=$2; shift 2; }
    _dir=$CFS/core/user_$_hba/$1
    [ -d "$_dir" ] && { rmdir "$_dir" || die "rmdir $_dir"; }
    rm -f "$STATE/backstore.$_hba.$1"
    rmdir "$CFS/core/user_$_hba" 2>/dev/null || true
}

# ---------------------------------------------------------------- handler
HANDLER_BIN=${HANDLER_BIN:-/bin/tcmu-warden}
HANDLER_PID="" HANDLER_LOG="" HANDLER_RC=""

have_handler() { [ -x "$HANDLER_BIN" ]; }

# handler_start ARGS...: start the handler in the background and wait until it holds every
# /dev/uioN named by a --uio argument (plus those in $HANDLER_WAIT_UIO) open.
handler_start() {
    have_handler || die "no handler binary at $HANDLER_BIN"
    # A new log per start (restarts must not overwrite the log of the killed instance).
    _seq=0
    while [ -e "/tmp/handler.$_seq.log" ]; do _seq=$((_seq + 1)); done
    HANDLER_LOG=/tmp/handler.$_seq.log
    "$HANDLER_BIN" "$@" >"$HANDLER_LOG" 2>&1 &
    HANDLER_PID=$!
    echo "$HANDLER_PID" >"$STATE/handler.$_seq"
    log "handler started: pid $HANDLER_PID, log $HANDLER_LOG, args: $*"
    _want=${HANDLER_WAIT_UIO:-}
    while [ $# -gt 0 ]; do
        [ "$1" = --uio ] && [ $# -ge 2 ] && { _want="$_want $2"; shift; }
        shift
    done
    for _dev in $_want; do
        wait_until 10 "handler to open $_dev" _handler_has_open "$HANDLER_PID" "$_dev" || {
            tail -n 30 "$HANDLER_LOG" >&2; die "handler did not open $_dev"; }
    done
}

_pid_alive() { # alive and not a zombie
    [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat" 2>/dev/null
}

_handler_has_open() {
    _pid_alive "$1" || { log "handler pid $1 exited"; tail -n 30 "$HANDLER_LOG" >&2; die "handler died"; }
    for _fd in /proc/"$1"/fd/*; do
        [ "$(readlink "$_fd" 2>/dev/null)" = "$2" ] && return 0
    done
    return 1
}

# handler_stop [seconds]: SIGTERM, bounded wait, then SIGKILL. Sets HANDLER_RC
# (exit status; 128+signal if killed). Returns 0 if it exited by itself after SIGTERM.
handler_stop() {
    [ -n "$HANDLER_PID" ] || return 0
    kill -TERM "$HANDLER_PID" 2>/dev/null || true
    _ok=0
    wait_until "${1:-10}" "handler $HANDLER_PID to exit" _pid_gone "$HANDLER_PID" || {
        log "handler ignored SIGTERM; sending SIGKILL"; kill -KILL "$HANDLER_PID" 2>/dev/null || true; _ok=1; }
    _handler_reap
    return $_ok
}

# handler_kill: SIGKILL (crash simulation) and reap.
handler_kill() {
    [ -n "$HANDLER_PID" ] || return 0
    kill -KILL "$HANDLER_PID" 2>/dev/null || true
    _handler_reap
}

_pid_gone() { ! _pid_alive "$1"; }

_handler_reap() {
    HANDLER_RC=0
    wait "$HANDLER_PID" || HANDLER_RC=$?
    log "handler $HANDLER_PID exited rc=$HANDLER_RC"
    for _f in "$STATE"/handler.*; do
        [ "$(cat "$_f" 2>/dev/null)" = "$HANDLER_PID" ] && rm -f "$_f"
    done
    HANDLER_PID=""
}

# ---------------------------------------------------------------- tcm_loop LUN
# loop_lun_create [-H hba] NAME: export user_HBA/NAME as LUN 0 of a new tcm_loop target and
# print its /dev/sdX. The handler must already serve the device (the symlink sends INQUIRY).
loop_lun_create() {
    _hba=0
    [ "$1" = -H ] && { _hba=$2; shift 2; }
    _name=$1
    _bs=$CFS/core/user_$_hba/$_name
    [ -d "$_bs" ] || die "no backstore $_bs"
    _wwn=naa.5001405$(_hex9)
    _tpg=$CFS/loopback/$_wwn/tpgt_1
    mkdir -p "$_tpg" || die "mkdir $_tpg"
    echo "$_wwn" >"$STATE/lun.$_name"
    # Nexus before the LUN: without it every command fails with DID_ERROR.
    printf %s "naa.5001405$(_hex9)" >"$_tpg/nexus" || die "write nexus"
    mkdir "$_tpg/lun/lun_0" || die "mkdir lun_0"
    log "linking $_bs into $_tpg/lun/lun_0"
    ln -s "$_bs" "$_tpg/lun/lun_0/$_name" || die "ln -s backstore into lun_0"
    _addr=$(cat "$_tpg/address")
    wait_until 10 "block device at $_addr:0" _lun_blockdev "$_addr" >/dev/null ||
        die "no block device for $_name"
    _sd=$(_lun_blockdev "$_addr")
    if [ ! -b "/dev/$_sd" ]; then
        _mm=$(cat "/sys/block/$_sd/dev")
        mknod "/dev/$_sd" b "${_mm%:*}" "${_mm#*:}"
    fi
    log "LUN $_name is /dev/$_sd (scsi $_addr:0)"
    echo "/dev/$_sd"
}

_hex9() { od -An -N5 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-9; }

_lun_blockdev() {
    for _b in /sys/bus/scsi/devices/"$1":0/block/*; do
        [ -e "$_b" ] && { echo "${_b##*/}"; return 0; }
    done
    return 1
}

# loop_lun_remove NAME: unlink, rmdir lun_0, tpgt_1 (drops the nexus), the WWN.
loop_lun_remove() {
    _f=$STATE/lun.$1
    [ -f "$_f" ] || { log "loop_lun_remove: no LUN recorded for $1"; return 0; }
    _t=$CFS/loopback/$(cat "$_f")
    for _l in "$_t"/tpgt_1/lun/lun_0/*; do
        [ -L "$_l" ] && { rm "$_l" || die "unlink $_l"; }
    done
    rmdir "$_t/tpgt_1/lun/lun_0" "$_t/tpgt_1" "$_t" || die "rmdir $_t"
    rm -f "$_f"
}

# ---------------------------------------------------------------- fio
# fio_run PREFIX FIO-ARGS...: run fio (terse v3), emit PREFIX_{r,w}_{iops,bw_kib} for the
# directions that moved data, PREFIX_err if non-zero; returns fio's status.
fio_run() {
    _p=$1; shift
    _out=/tmp/fio.$_p.out
    _rc=0
    fio --eta=never --output-format=terse --terse-version=3 --output="$_out" "$@" || _rc=$?
    if [ -s "$_out" ]; then
        # terse v3: 5 error, 7 read bw KiB/s, 8 read iops, 48 write bw, 49 write iops
        awk -F';' -v p="$_p" '$1 == 3 { e += $5; rb += $7; ri += $8; wb += $48; wi += $49 }
            END { if (e) printf "%s_err %d\n", p, e
                  if (rb) printf "%s_r_iops %d\n%s_r_bw_kib %d\n", p, ri, p, rb
                  if (wb) printf "%s_w_iops %d\n%s_w_bw_kib %d\n", p, wi, p, wb }' "$_out" |
            while read -r _k _v; do result "$_k" "$_v"; done
    fi
    [ "$_rc" = 0 ] || { log "fio $_p failed rc=$_rc"; cat "$_out" >&2 || true; }
    return $_rc
}

# ---------------------------------------------------------------- cleanup (run by /init)
vm_dump_logs() {
    for _l in /tmp/handler.*.log; do
        [ -e "$_l" ] || continue
        echo "---- tail of $_l ----" >&2; tail -n 40 "$_l" >&2
    done
}

# Undo whatever a scenario left behind, in teardown order, so the next one starts clean.
vm_cleanup() {
    for _f in "$STATE"/lun.*; do
        [ -e "$_f" ] && loop_lun_remove "${_f##*/lun.}"
    done
    for _f in "$STATE"/backstore.*; do
        [ -e "$_f" ] || continue
        read -r _h _n <"$_f"
        user_backstore_remove -H "$_h" "$_n"
    done
    for _f in "$STATE"/handler.*; do
        [ -e "$_f" ] || continue
        _p=$(cat "$_f")
        kill -TERM "$_p" 2>/dev/null || true
        wait_until 5 "handler $_p to exit" _pid_gone "$_p" || kill -KILL "$_p" 2>/dev/null || true
        rm -f "$_f"
    done
    rm -f /tmp/*.img /tmp/handler.*.log /tmp/fio.*.out
}
