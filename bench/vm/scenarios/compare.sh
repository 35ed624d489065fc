# vm-timeout: 900
# shellcheck shell=dash
# Guest half of the side-by-side benchmark (busybox sh, sourced by /init after tests/vm/lib.sh,
# with -eu). bench/vm/compare.py prepends the BENCH_* settings below and bench-lib.sh (the
# shared half: backstores, counters, run_job) and copies the result into the VM as a scenario
# named "compare". One boot serves ONE target (only one TCMU daemon may listen on the
# kernel's netlink family at a time):
#   warden  tcmu-warden as a netlink daemon (no arguments), user:file LUNs
#   runner  tcmu-runner (built by scripts/build-tcmu-runner.sh) with its file handler
#   fileio  the kernel's own fileio backstore on the same tmpfs file
# With BENCH_RBD=POOL/IMAGE (compare.sh --rbd) the LUNs are user:rbd backstores on that image
# of the host's Ceph cluster (reached through vm_forward on BENCH_RBD_PORTS; /etc/ceph from
# the initramfs), the daemons are tcmu-warden and tcmu-runner with its handler_rbd.so (Debian's
# binary package, LD_LIBRARY_PATH for its libtcmu), and the third target is
#   fio-rbd fio's own rbd engine on the same image, no SCSI at all (the ceiling)
# For each configuration "HW:RING:JOB/JOB..." it creates a LUN (hw_max_sectors HW,
# max_data_area_mb RING), exports it through tcm_loop and runs the jobs; then, if BENCH_SCALE
# is set, the scale run: LUNs added one after another under the one daemon, with its resident
# memory and threads at each count ("scalerec=" lines).

: "${BENCH_TARGET:=warden}"            # warden | runner | fileio
: "${BENCH_ROUND:=1}"                  # round number, recorded in every record
: "${BENCH_CONFIGS=128:1024:randread4k-qd32}"   # HW:RING:JOB/JOB... separated by spaces; "" for none
: "${BENCH_SIZE_MB:=1024}"             # backing file on the tmpfs (filled once)
: "${BENCH_SCALE:=}"                   # LUN counts at which to sample, e.g. "1 8 64 256"
: "${BENCH_SCALE_MB:=64}"              # size of each scale LUN (sparse file)
: "${BENCH_RUNNER_DIR:=}"              # tcmu-runner's cache directory (runner target)
: "${BENCH_HANDLER_ARGS:=}"            # extra tcmu-warden arguments
: "${BENCH_RBD:=}"                     # POOL/IMAGE: RBD mode (written once by the host)
: "${BENCH_RBD_PORTS:=}"               # the cluster's ports to forward (comma separated)
: "${BENCH_RBD_OPTS:=}"                # appended to the daemons' cfgstring (";lock_hold=0")

size=$((BENCH_SIZE_MB * 1024 * 1024))
img=/tmp/bench.img

result kernel "$(uname -r)"
result ncpu "$(grep -c '^processor' /proc/cpuinfo)"
result plan "target:$BENCH_TARGET,round:$BENCH_ROUND,runtime_ms:$BENCH_RUNTIME_MS,ramp_ms:$BENCH_RAMP_MS,win_ms:$win_ms,size_mb:$BENCH_SIZE_MB"

if [ -n "$BENCH_RBD" ]; then
    [ -r /etc/ceph/ceph.conf ] && [ -r /etc/ceph/keyring ] || die "no /etc/ceph/ceph.conf or keyring in the initramfs"
    # On failure, librados' own log says what the client saw.
    trap '[ $? = 0 ] || { echo "---- tail of /tmp/ceph-client.log ----"; tail -n 40 /tmp/ceph-client.log 2>/dev/null; } >&2' EXIT
    # shellcheck disable=SC2046
    vm_forward $(echo "$BENCH_RBD_PORTS" | tr , ' ')
    log "rbd image $BENCH_RBD, forwarding ports $BENCH_RBD_PORTS"
fi

# ------------------------------------------------------------------ daemons
# daemon_start: the target's daemon in netlink mode, ready for devices; sets HPID.
daemon_start() {
    case $BENCH_TARGET in
        warden)
            # shellcheck disable=SC2086
            handler_start_netlink $BENCH_HANDLER_ARGS ;;
        runner)
            [ -x "$BENCH_RUNNER_DIR/bin/tcmu-runner" ] || die "no tcmu-runner in '$BENCH_RUNNER_DIR'"
            mkdir -p /tmp/runner-log /run
            HANDLER_BIN=$BENCH_RUNNER_DIR/bin/tcmu-runner
            # Debian's binary has no RUNPATH to its libtcmu (the source build has one).
            [ -z "$BENCH_RBD" ] || export LD_LIBRARY_PATH="$BENCH_RUNNER_DIR/lib"
            handler_start --handler-path "$BENCH_RUNNER_DIR/handlers" -l /tmp/runner-log
            # It joins netlink, turns the reply mode on, then adopts the uio devices that
            # exist, so a device enabled in between is found either way; wait until it holds
            # a netlink socket (a second for the rest of its start-up under TCG).
            wait_until 15 "tcmu-runner's netlink socket" _has_netlink "$HANDLER_PID" ||
                die "tcmu-runner did not open its netlink socket"
            sleep 1 ;;
        *) die "daemon_start: no daemon for $BENCH_TARGET" ;;
    esac
    HPID=$HANDLER_PID
    log "$BENCH_TARGET daemon ready: pid $HPID"
}

_has_netlink() {
    _pid_alive "$1" || { tail -n 30 "$HANDLER_LOG" /tmp/runner-log/*.log >&2; die "daemon exited"; }
    _ino=""
    for _fd in /proc/"$1"/fd/*; do
        _l=$(readlink "$_fd" 2>/dev/null) || continue
        case $_l in socket:*) _ino="$_ino ${_l#socket:\[}" ;; esac
    done
    for _i in $_ino; do
        # /proc/net/netlink: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; Eth 16 = generic
        awk -v i="${_i%]}" '$2 == 16 && $10 == i { f = 1 } END { exit !f }' /proc/net/netlink && return 0
    done
    return 1
}

daemon_stop() {
    handler_stop || true
    [ "$HANDLER_RC" = 0 ] || { log "$BENCH_TARGET daemon exited rc=$HANDLER_RC"; failures=$((failures + 1)); }
    HPID=""
}

# ------------------------------------------------------------------ one LUN
# lun_up HW RING: sets DEV, SD, TNAME, MSKB, HW (the hw_max_sectors the LUN really has).
lun_up() {
    case $BENCH_TARGET in
        fio-rbd)
            fio_rbd_up
            return 0 ;;
        fileio)
            TNAME=bfile
            core_backstore_create fileio_0 "$TNAME" "fd_dev_name=$img,fd_dev_size=$size"
            _bs=$CFS/core/fileio_0/$TNAME
            DEV=$(loop_lun_create -B "$_bs" "$TNAME") ;;
        *)
            TNAME=bu$1
            if [ -n "$BENCH_RBD" ]; then
                _uio=$(user_backstore_create -N -s rbd -m "$2" "$TNAME" "$size" \
                    "$BENCH_RBD;conf=/etc/ceph/ceph.conf$BENCH_RBD_OPTS" "hw_max_sectors=$1")
            else
                _uio=$(user_backstore_create -N -m "$2" "$TNAME" "$size" "$img" "hw_max_sectors=$1")
            fi
            handler_wait_uio "$_uio" 15 || die "$BENCH_TARGET did not open /dev/uio$_uio"
            _bs=$CFS/core/user_0/$TNAME
            DEV=$(loop_lun_create "$TNAME") ;;
    esac
    SD=${DEV#/dev/}
    wait_until 10 "$DEV to be probed" _disk_ready "$SD" || die "$DEV not ready"
    MSKB=$(cat "/sys/block/$SD/queue/max_sectors_kb")
    HW=$(cat "$_bs/attrib/hw_max_sectors")
    log "LUN $TNAME is $DEV (hw_max_sectors=$HW, max_sectors_kb=$MSKB)"
}

# fio_rbd_up: no LUN: fio's rbd engine on the image (client.admin of /etc/ceph). Its job
# window is placed from eth0's packets (bench-lib.sh _io_count), beyond those of connecting
# and opening the image, measured here with a one-read job.
fio_rbd_up() {
    DEV="" SD="" TNAME="" MSKB=0 HW=0
    FIO_TARGET="--ioengine=rbd --clientname=admin --pool=${BENCH_RBD%%/*} --rbdname=${BENCH_RBD#*/}"
    _io_count; _p0=$_ioc
    # shellcheck disable=SC2086
    fio --eta=never --output=/tmp/fio.probe --name=probe $FIO_TARGET --rw=read --bs=4k \
        --size=4k --io_size=4k </dev/null || { cat /tmp/fio.probe >&2; die "fio's rbd engine cannot read $BENCH_RBD"; }
    _io_count
    NET_IO_SLACK=$((_ioc - _p0))
    log "fio rbd engine on $BENCH_RBD: connect, open and one read took $NET_IO_SLACK packets"
}

lun_down() {
    [ "$BENCH_TARGET" != fio-rbd ] || return 0
    loop_lun_remove "$TNAME"
    case $BENCH_TARGET in
        fileio) core_backstore_remove "$TNAME" ;;
        *) nl_backstore_remove "$TNAME" 20 || die "rmdir of $TNAME failed" ;;
    esac
}

# ------------------------------------------------------------------ scale
# proc_status PID: sets _rss_kb and _threads from /proc/PID/status (builtins only).
proc_status() {
    _rss_kb=0 _threads=0
    while read -r _k _v _; do
        case $_k in VmRSS:) _rss_kb=$_v ;; Threads:) _threads=$_v ;; esac
    done <"/proc/$1/status"
}

# scale_run COUNTS: sparse LUNs added one after another under the running daemon, each with
# one foreground enable (it returns when the daemon has answered ADDED_DEVICE; the scenario's
# vm-timeout bounds it, a polled bound would add its poll interval to every LUN's time).
# At each count: the daemon's VmRSS and threads, and the time since the first mkdir.
# Kernel side, every scale LUN has max_data_area_mb=8 (ceph-iscsi's setting) and
# cmd_ring_size_mb=1: with the default 8 MiB command ring, 256 LUNs take 2 GiB of the guest's
# 3 GiB in vmalloc'd rings alone.
scale_run() {
    _max=0
    for _n in $1; do [ "$_n" -gt "$_max" ] && _max=$_n; done
    mkdir -p "$CFS/core/user_0" /tmp/scale
    sleep 2   # let the daemon settle after the jobs (or its start) before the base sample
    proc_status "$HPID"
    bench_out "scalerec=daemon:$BENCH_TARGET,luns:0,rss_kb:$_rss_kb,threads:$_threads,add_ms:0"
    _t0=$(now_cs) _i=1 _ok=1
    while [ "$_i" -le "$_max" ]; do
        _f=/tmp/scale/l$_i.img _d=$CFS/core/user_0/s$_i
        truncate -s "${BENCH_SCALE_MB}M" "$_f"
        mkdir "$_d" || { _ok=0; break; }
        echo "0 s$_i" >"$STATE/backstore.0.s$_i"
        printf %s "dev_size=$((BENCH_SCALE_MB * 1048576)),dev_config=file/$_f,max_data_area_mb=8,cmd_ring_size_mb=1" \
            >"$_d/control" || { _ok=0; break; }
        printf 1 >"$_d/enable" || { log "enable of LUN $_i failed"; _ok=0; break; }
        for _n in $1; do
            [ "$_n" = "$_i" ] || continue
            _ms=$(( ($(now_cs) - _t0) * 10 ))
            _pid_alive "$HPID" || { _ok=0; break; }
            proc_status "$HPID"
            bench_out "scalerec=daemon:$BENCH_TARGET,luns:$_i,rss_kb:$_rss_kb,threads:$_threads,add_ms:$_ms"
            log "scale: $_i LUNs, rss ${_rss_kb} kB, $_threads threads, ${_ms} ms"
        done
        [ "$_ok" = 1 ] || break
        _i=$((_i + 1))
    done
    _last=$((_i - 1))
    # Does the last LUN still serve I/O, with every other LUN open?
    _io=0
    if [ "$_ok" = 1 ] && [ "$_last" -ge 1 ]; then
        handler_wait_uio "$(_uio_find 0 "s$_last")" 15 &&
            _dev=$(loop_lun_create "s$_last") &&
            fio --eta=never --output=/tmp/fio.scale.out --name=scale --filename="$_dev" \
                --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=8 --size=4m \
                --verify=crc32c --do_verify=1 --verify_fatal=1 && _io=1
        [ "$_io" = 1 ] || { cat /tmp/fio.scale.out >&2 || true; }
        loop_lun_remove "s$_last"
    fi
    # Removal, newest first, also timed (each rmdir waits for the daemon's answer).
    _t1=$(now_cs)
    _j=$_last
    while [ "$_j" -ge 1 ]; do
        rmdir "$CFS/core/user_0/s$_j" || { log "rmdir of LUN $_j failed"; _ok=0; break; }
        rm -f "$STATE/backstore.0.s$_j" "/tmp/scale/l$_j.img"
        _j=$((_j - 1))
    done
    bench_out "scaleend=daemon:$BENCH_TARGET,luns:$_last,want:$_max,ok:$_ok,io_ok:$_io,remove_ms:$(( ($(now_cs) - _t1) * 10 ))"
    [ "$_ok" = 1 ] && [ "$_io" = 1 ] && [ "$_last" = "$_max" ] ||
        { log "scale run failed: $_last/$_max LUNs, io_ok=$_io"; failures=$((failures + 1)); }
}

# ------------------------------------------------------------------ main
case $BENCH_TARGET in fileio|fio-rbd) ;; *) daemon_start ;; esac
if [ -n "$(echo $BENCH_CONFIGS | tr -d ' ')" ]; then
    [ -n "$BENCH_RBD" ] || bench_prefill "$img" "$BENCH_SIZE_MB"
    for cfg in $BENCH_CONFIGS; do
        hw=${cfg%%:*} rest=${cfg#*:}
        ring=${rest%%:*} jobs=$(echo "${rest#*:}" | tr / ' ')
        lun_up "$hw" "$ring"
        RING=$ring
        case $BENCH_TARGET in fileio|fio-rbd) RING=0 ;; esac
        REC_TAGS="target:$BENCH_TARGET,hw:$HW,ring:$RING"
        for j in $jobs; do run_job "$BENCH_ROUND" "$BENCH_TARGET" "$j"; done
        lun_down
    done
    rm -f "$img"
fi
[ -z "$BENCH_SCALE" ] || scale_run "$BENCH_SCALE"
case $BENCH_TARGET in fileio|fio-rbd) ;; *) daemon_stop ;; esac
result bench_failures "$failures"
[ "$failures" = 0 ] || die "$failures job(s) failed"
