# shellcheck shell=dash
# Helpers for guest scenarios (busybox sh, sourced by /init with -eu in effect).
# They follow the documented sequence (docs/kernel-abi.md §3, §7.6, §8.3): control written
# once before enable, handler running before the LUN is linked,
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
#   -N: netlink mode (a daemon without --uio serves the device): the kernel waits for the
#   daemon's ADDED_DEVICE_DONE, so enable is bounded (20 s). Without -N the device gets
#   attrib/nl_reply_supported=-1 first, so that it never waits for a netlink reply even when
#   an earlier netlink-mode daemon left the module-global reply mode on (docs/kernel-abi.md §5.6).
#   -s SUBTYPE replaces "file" in dev_config.
user_backstore_create() {
    _hba=0 _mb=${MAX_DATA_AREA_MB:-64} _attrs="" _nl=0 _sub=file
    while [ $# -gt 0 ]; do
        case $1 in
            -H) _hba=$2; shift 2 ;;
            -m) _mb=$2; shift 2 ;;
            -a) _attrs="$_attrs $2"; shift 2 ;;
            -N) _nl=1; shift ;;
            -s) _sub=$2; shift 2 ;;
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
    _ctl="dev_size=$_size,dev_config=$_sub/$_cfg,max_data_area_mb=$_mb${_extra:+,$_extra}"
    printf %s "$_ctl" >"$_dir/control" || die "write control '$_ctl'"
    [ "$_nl" = 1 ] || printf %s -1 >"$_dir/attrib/nl_reply_supported" ||
        die "set nl_reply_supported=-1"
    for _a in $_attrs; do
        printf %s "${_a#*=}" >"$_dir/attrib/${_a%%=*}" || die "set attrib $_a"
    done
    if [ "$_nl" = 1 ]; then
        _t=$(now_ms)
        configfs_write 20 "$_dir/enable" 1 || die "enable $_dir (netlink mode) failed rc=$?"
        ENABLE_MS=$(( $(now_ms) - _t ))
        log "enable of $_name took ${ENABLE_MS} ms"
    else
        printf 1 >"$_dir/enable" || die "enable $_dir"
    fi
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

# nl_backstore_remove [-H hba] NAME [SECONDS]: rmdir the device with a bound (in netlink
# mode rmdir waits for the daemon's REMOVED_DEVICE_DONE). Returns rmdir's status (124:
# still blocked); sets nothing on failure so that vm_cleanup still knows the device.
nl_backstore_remove() {
    _hba=0
    [ "$1" = -H ] && { _hba=$2; shift 2; }
    _dir=$CFS/core/user_$_hba/$1
    _rc=0
    _bounded "${2:-20}" "rmdir $_dir" rmdir "$_dir" || _rc=$?
    [ "$_rc" = 0 ] || return "$_rc"
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
    # NO_COLOR: the daemon's logger writes ANSI colours even into a file otherwise.
    NO_COLOR=1 "$HANDLER_BIN" "$@" >"$HANDLER_LOG" 2>&1 &
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

# ---------------------------------------------------------------- netlink mode
# (a daemon started without --uio: it joins TCM-USER/config, turns reply mode on and answers
# ADDED/REMOVED/RECONFIG; configfs writes that raise an event then wait for its answer,
# uninterruptibly and without a timeout, so every such write here is bounded.)
NL_PARAMS=/sys/module/target_core_user/parameters

# _bounded SECONDS DESCRIPTION CMD...: run CMD in the background and return its status, or
# 124 if it still runs after SECONDS. It is then left behind: a configfs write waiting for a
# netlink reply sleeps uninterruptibly and cannot be killed.
_bounded() {
    _b_s=$1 _b_d=$2
    shift 2
    "$@" &
    _b_p=$!
    if wait_until "$_b_s" "$_b_d" _pid_gone "$_b_p"; then
        _b_rc=0
        wait "$_b_p" || _b_rc=$?
        return "$_b_rc"
    fi
    log "$_b_d: still blocked after ${_b_s}s (pid $_b_p, $(cat /proc/$_b_p/wchan 2>/dev/null))"
    return 124
}

_write_value() { echo -n "$2" >"$1"; }  # busybox echo names the errno on failure

# configfs_write SECONDS FILE VALUE: bounded write; its status (124: still blocked). The
# write's error message (e.g. "Invalid argument") goes to stderr.
configfs_write() {
    _bounded "$1" "write '$3' to $2" _write_value "$2" "$3"
}

# user_backstore_try [-H hba] [-m mb] NAME SIZE DEV_CONFIG [SECONDS]: create a backstore with
# a verbatim dev_config (any subtype, possibly malformed) and try to enable it in netlink
# mode. Returns enable's status (124: blocked; the backstore is recorded for cleanup either way).
user_backstore_try() {
    _hba=0 _mb=16
    while [ $# -gt 0 ]; do
        case $1 in
            -H) _hba=$2; shift 2 ;;
            -m) _mb=$2; shift 2 ;;
            *) break ;;
        esac
    done
    _name=$1 _size=$2 _dc=$3 _secs=${4:-20}
    _dir=$CFS/core/user_$_hba/$_name
    mkdir -p "$CFS/core/user_$_hba"
    mkdir "$_dir" || die "mkdir $_dir"
    echo "$_hba $_name" >"$STATE/backstore.$_hba.$_name"
    printf %s "dev_size=$_size,max_data_area_mb=$_mb" >"$_dir/control" || die "write control"
    # Through attrib/dev_config: control cannot carry every string (no commas) and
    # ignores an empty dev_config= token.
    if [ -n "$_dc" ]; then
        printf %s "$_dc" >"$_dir/attrib/dev_config" || die "write dev_config '$_dc'"
    fi
    _t=$(now_ms)
    _rc=0
    configfs_write "$_secs" "$_dir/enable" 1 || _rc=$?
    ENABLE_MS=$(( $(now_ms) - _t ))
    log "enable of $_name (dev_config '$_dc') returned $_rc after ${ENABLE_MS} ms"
    return "$_rc"
}

# handler_start_netlink [ARGS...]: start the daemon without --uio and wait until it says it
# is ready (netlink joined, reply mode on, existing devices adopted).
handler_start_netlink() {
    handler_start "$@"
    handler_log_wait 15 "tcmu-warden ready" || { tail -n 30 "$HANDLER_LOG" >&2; die "daemon not ready"; }
}

# handler_log_wait SECONDS PATTERN: wait until the current handler's log matches (grep -E).
handler_log_wait() {
    wait_until "$1" "handler log line /$2/" grep -qE "$2" "$HANDLER_LOG"
}

# handler_wait_uio N [SECONDS]: wait until the running handler holds /dev/uioN open.
handler_wait_uio() {
    wait_until "${2:-10}" "handler to open /dev/uio$1" _handler_has_open "$HANDLER_PID" "/dev/uio$1"
}

# handler_holds_uio N: true if the running handler has /dev/uioN open now.
handler_holds_uio() { _handler_has_open "$HANDLER_PID" "/dev/uio$1"; }

# handler_stats_line [LOG] [DEVICE]: the last "device statistics" line (logged at stop).
handler_stats_line() {
    grep 'device statistics' "${1:-$HANDLER_LOG}" | grep -- "${2:-}" | tail -n 1
}

# stat_field LINE KEY: the value of KEY=VALUE in a log line.
stat_field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# netlink_rescue: the crash plan by hand, for when a reply-mode daemon died and no new one
# will run (wakes blocked configfs writers with EINTR; new events fail while blocked).
netlink_rescue() {
    [ -w "$NL_PARAMS/block_netlink" ] || return 0
    printf 1 >"$NL_PARAMS/block_netlink"
    printf 1 >"$NL_PARAMS/reset_netlink"
}
netlink_unblock() {
    [ -w "$NL_PARAMS/block_netlink" ] || return 0
    printf 0 >"$NL_PARAMS/block_netlink"
}

# ---------------------------------------------------------------- tcm_loop LUN
# loop_lun_create [-H hba | -B BACKSTORE_DIR] NAME: export user_HBA/NAME (or any backstore
# directory under $CFS/core, such as fileio_0/NAME) as LUN 0 of a new tcm_loop target and
# print its /dev/sdX. The handler must already serve the device (the symlink sends INQUIRY).
loop_lun_create() {
    _hba=0 _bs=""
    [ "$1" = -H ] && { _hba=$2; shift 2; }
    [ "$1" = -B ] && { _bs=$2; shift 2; }
    _name=$1
    [ -n "$_bs" ] || _bs=$CFS/core/user_$_hba/$_name
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
    # The block device appears before sd has finished probing it: wait for its queue
    # attributes and a non-zero size, or the first users race the probe.
    wait_until 10 "sd probe of $_sd" _lun_probed "$_sd" >/dev/null ||
        die "$_sd never finished probing"
    if [ ! -b "/dev/$_sd" ]; then
        _mm=$(cat "/sys/block/$_sd/dev")
        mknod "/dev/$_sd" b "${_mm%:*}" "${_mm#*:}"
    fi
    log "LUN $_name is /dev/$_sd (scsi $_addr:0)"
    echo "/dev/$_sd"
}

_hex9() { od -An -N5 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-9; }

_lun_probed() {
    [ -r "/sys/block/$1/queue/max_sectors_kb" ] && [ "$(cat "/sys/block/$1/size" 2>/dev/null)" != 0 ]
}

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

# ---------------------------------------------------------------- iSCSI fabric
# LIO's iSCSI target on the guest's loopback, set up as targetcli would for a demo-mode
# target: one TPG with a portal on 127.0.0.1:3260, ACLs generated for any initiator, no
# authentication, writable LUNs. iscsi_target_mod is loaded at boot (build-initramfs.sh).
ISCSI_PORTAL=${ISCSI_PORTAL:-127.0.0.1:3260}

# fileio_backstore_create NAME SIZE PATH: the kernel's own fileio backstore (LIO's SBC
# emulation, the reference the conformance stage compares with) on PATH, enabled.
fileio_backstore_create() {
    _dir=$CFS/core/fileio_0/$1
    mkdir -p "$_dir" || die "mkdir $_dir"
    echo "$1" >"$STATE/fileio.$1"
    printf %s "fd_dev_name=$3,fd_dev_size=$2" >"$_dir/control" || die "fileio control"
    printf 1 >"$_dir/enable" || die "enable $_dir"
    log "fileio backstore $1 on $3 ($2 bytes)"
}

fileio_backstore_remove() {
    rmdir "$CFS/core/fileio_0/$1" || die "rmdir fileio_0/$1"
    rm -f "$STATE/fileio.$1"
}

# iscsi_target_create IQN: target IQN with tpgt_1 and a portal on $ISCSI_PORTAL, demo mode
# (generate_node_acls=1, cache_dynamic_acls=1, authentication=0, demo_mode_write_protect=0),
# enabled.
iscsi_target_create() {
    _tpg=$CFS/iscsi/$1/tpgt_1
    mkdir -p "$_tpg" || die "mkdir $_tpg"
    echo "$1" >"$STATE/iscsi.$1"
    mkdir "$_tpg/np/$ISCSI_PORTAL" || die "portal $ISCSI_PORTAL on $1"
    for _a in generate_node_acls=1 cache_dynamic_acls=1 authentication=0 demo_mode_write_protect=0; do
        printf %s "${_a#*=}" >"$_tpg/attrib/${_a%%=*}" || die "set $1 attrib $_a"
    done
    printf 1 >"$_tpg/enable" || die "enable $_tpg"
    log "iSCSI target $1 on $ISCSI_PORTAL"
}

# iscsi_lun_create IQN LUN BACKSTORE_DIR [SERIAL]: export a backstore (a directory under
# $CFS/core) as LUN number LUN of target IQN. Like targetcli it gives the backstore a unit
# serial (wwn/vpd_unit_serial, settable only while unexported) and creates the pr directory
# under LIO's dbroot ($CFS/dbroot: /etc/target here, /var/target on older kernels), where LIO
# keeps APTPL reservations: without them PERSISTENT RESERVE OUT fails on every backstore. A
# user backstore's handler must already serve it (linking sends INQUIRY).
iscsi_lun_create() {
    _bs=$3
    [ -d "$_bs" ] || die "no backstore $_bs"
    _serial=${4:-}
    [ -n "$_serial" ] || _serial=$(_uuid)
    printf %s "$_serial" >"$_bs/wwn/vpd_unit_serial" || die "unit serial of $_bs"
    mkdir -p "$(cat "$CFS/dbroot" 2>/dev/null || echo /etc/target)/pr"
    _lun=$CFS/iscsi/$1/tpgt_1/lun/lun_$2
    mkdir "$_lun" || die "mkdir $_lun"
    ln -s "$_bs" "$_lun/${_bs##*/}" || die "ln -s $_bs into $_lun"
    log "iSCSI $1 LUN $2: ${_bs#"$CFS"/core/} (serial $_serial)"
}

# A random UUID, the form targetcli gives unit serials.
_uuid() {
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' |
        sed 's/^\(.\{8\}\)\(.\{4\}\)\(.\{4\}\)\(.\{4\}\)/\1-\2-\3-\4-/'
}

# iscsi_url IQN LUN: the libiscsi URL of that LUN on the portal.
iscsi_url() { echo "iscsi://$ISCSI_PORTAL/$1/$2"; }

# iscsi_target_remove IQN: LUN links and directories, portal, TPG, target. Sessions still
# logged in are dropped by the kernel.
iscsi_target_remove() {
    _t=$CFS/iscsi/$1
    [ -d "$_t" ] || { rm -f "$STATE/iscsi.$1"; return 0; }
    printf 0 >"$_t/tpgt_1/enable" 2>/dev/null || true
    for _l in "$_t"/tpgt_1/lun/lun_*; do
        [ -d "$_l" ] || continue
        for _x in "$_l"/*; do [ -L "$_x" ] && { rm "$_x" || die "unlink $_x"; }; done
        rmdir "$_l" || die "rmdir $_l"
    done
    for _n in "$_t"/tpgt_1/np/*; do [ -d "$_n" ] && { rmdir "$_n" || die "rmdir $_n"; }; done
    # Dynamic ACLs vanish with the TPG; explicit ones (none here) would need removing first.
    rmdir "$_t/tpgt_1" "$_t" || die "rmdir $_t"
    rm -f "$STATE/iscsi.$1"
}

# iscsi_cleanup: every target and fileio backstore this scenario made (vm_cleanup).
iscsi_cleanup() {
    for _f in "$STATE"/iscsi.*; do
        [ -e "$_f" ] && iscsi_target_remove "${_f##*/iscsi.}"
    done
    for _f in "$STATE"/fileio.*; do
        [ -e "$_f" ] && fileio_backstore_remove "${_f##*/fileio.}"
    done
    return 0
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

# fio_loop_start TAG FIO-ARGS...: repeat a fio pass (give it --verify=... --do_verify=1) in
# the background until fio_loop_stop TAG or the first failing pass; each pass's status is
# appended to /tmp/fioloop.TAG.rc, a failing pass's output kept in /tmp/fioloop.TAG.fail.
fio_loop_start() {
    _tag=$1; shift
    rm -f "/tmp/fioloop.$_tag.stop" "/tmp/fioloop.$_tag.rc" "/tmp/fioloop.$_tag.fail"
    : >"/tmp/fioloop.$_tag.rc"
    (
        while [ ! -e "/tmp/fioloop.$_tag.stop" ]; do
            _r=0
            fio --eta=never --output="/tmp/fioloop.$_tag.out" "$@" || _r=$?
            echo "$_r" >>"/tmp/fioloop.$_tag.rc"
            [ "$_r" = 0 ] || { cp "/tmp/fioloop.$_tag.out" "/tmp/fioloop.$_tag.fail"; break; }
        done
    ) </dev/null &
    echo $! >"$STATE/fioloop.$_tag"
    log "fio loop $_tag started (pid $!)"
}

# fio_loop_passes TAG: passes completed so far.
fio_loop_passes() { wc -l <"/tmp/fioloop.$1.rc"; }

# fio_loop_stop TAG [SECONDS]: stop after the current pass (bounded), emit
# TAG_passes/TAG_failed; returns non-zero if a pass failed or the loop did not stop.
fio_loop_stop() {
    _tag=$1
    _p=$(cat "$STATE/fioloop.$_tag")
    touch "/tmp/fioloop.$_tag.stop"
    _ok=0
    wait_until "${2:-60}" "fio loop $_tag to stop" _pid_gone "$_p" || { kill -KILL "$_p" 2>/dev/null; _ok=1; }
    wait "$_p" 2>/dev/null || true
    rm -f "$STATE/fioloop.$_tag"
    _n=$(wc -l <"/tmp/fioloop.$_tag.rc")
    _bad=$(grep -vc '^0$' "/tmp/fioloop.$_tag.rc" || true)
    result "${_tag}_passes" "$_n"
    result "${_tag}_failed" "$_bad"
    if [ "$_bad" != 0 ]; then cat "/tmp/fioloop.$_tag.fail" >&2; _ok=1; fi
    return $_ok
}

# ---------------------------------------------------------------- cleanup (run by /init)
# fio_verify_basic DEV: 4 KiB random writes (QD16, 4 MiB) and 1 MiB sequential writes (QD4,
# 16 MiB at offset 16 MiB) through DEV, each verified with crc32c; results r4k_* and s1m_*.
fio_verify_basic() {
    fio_run r4k --name=r4k --filename="$1" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=16 --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 ||
        die "fio 4k randwrite+verify failed"
    fio_run s1m --name=s1m --filename="$1" --ioengine=libaio --direct=1 --rw=write --bs=1m \
        --iodepth=4 --offset=16m --size=16m --verify=crc32c --do_verify=1 --verify_fatal=1 ||
        die "fio 1m write+verify failed"
}

# Make host services on the host's 127.0.0.1:PORT reachable as the guest's 127.0.0.1:PORT
# (qemu's user-mode network maps 10.0.2.2 to the host's loopback). Services that hand out
# their own address (Ceph's monmap and OSD addresses, gluster's brick host) then work
# unchanged. One persistent busybox nc per port, forking a relay per connection.
vm_forward() {
    for p in "$@"; do
        nc -ll -p "$p" -e nc 10.0.2.2 "$p" </dev/null >/dev/null 2>&1 &
        echo $! >>/tmp/vm_forward.pids
    done
}

vm_forward_stop() {
    [ -f /tmp/vm_forward.pids ] || return 0
    while read -r pid; do kill "$pid" 2>/dev/null || true; done </tmp/vm_forward.pids
    rm -f /tmp/vm_forward.pids
}

vm_dump_logs() {
    for _l in /tmp/handler.*.log; do
        [ -e "$_l" ] || continue
        echo "---- tail of $_l ----" >&2; tail -n 40 "$_l" >&2
    done
}

# Undo whatever a scenario left behind, in teardown order, so the next one starts clean.
vm_cleanup() {
    for _f in "$STATE"/fioloop.*; do
        [ -e "$_f" ] && { touch "/tmp/fioloop.${_f##*/fioloop.}.stop"; kill -KILL "$(cat "$_f")" 2>/dev/null; rm -f "$_f"; }
    done
    for _f in "$STATE"/lun.*; do
        [ -e "$_f" ] && loop_lun_remove "${_f##*/lun.}"
    done
    iscsi_cleanup
    # A reply-mode daemon that died would leave each rmdir waiting for its REMOVED reply
    # forever: if no handler is alive, block netlink (REMOVED then fails at once and is
    # ignored) for the duration.
    _live=0
    for _f in "$STATE"/handler.*; do
        [ -e "$_f" ] && _pid_alive "$(cat "$_f")" && _live=1
    done
    _blocked=0
    if [ "$_live" = 0 ] && ls "$STATE"/backstore.* >/dev/null 2>&1; then
        netlink_rescue; _blocked=1
    fi
    for _f in "$STATE"/backstore.*; do
        [ -e "$_f" ] || continue
        read -r _h _n <"$_f"
        user_backstore_remove -H "$_h" "$_n"
    done
    [ "$_blocked" = 0 ] || netlink_unblock
    for _f in "$STATE"/handler.*; do
        [ -e "$_f" ] || continue
        _p=$(cat "$_f")
        kill -TERM "$_p" 2>/dev/null || true
        wait_until 5 "handler $_p to exit" _pid_gone "$_p" || kill -KILL "$_p" 2>/dev/null || true
        rm -f "$_f"
    done
    rm -f /tmp/*.img /tmp/handler.*.log /tmp/fio.*.out /tmp/fioloop.*
    vm_forward_stop
}
