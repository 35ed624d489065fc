# vm-timeout: 1500
# The initiator of the Ceph iSCSI gateway pair (tests/vm/systemd/ha.sh; the gateways run
# ha-gateway): open-iscsi logs in to both gateways' portals, dm-multipath groups the two paths by
# ALUA priority (multipathd's `prio alua` sends REPORT TARGET PORT GROUPS from userspace; the
# guest kernel has no scsi_dh_alua), and fio writes 4 KiB blocks at QD16 with crc32c verify on
# the multipath device while, in turn, the optimized gateway's daemon is killed (SIGKILL), frozen
# (SIGSTOP past the initiator's timeouts, then SIGCONT) and its guest powered off (booted again
# by ha.sh). Each fault: fio ends clean (no I/O error, no verify error), no I/O error on the
# multipath device, the time from the fault to the first write completed after the stall
# (failover_s, from fio's per-I/O completion log) and to the first write completed on the other
# path (other_path_s, from the paths' counters sampled every 0.25 s), the ALUA states seen by
# sg_rtpg through each path, the time until the faulted gateway's path is back. Failback
# policy `manual` (docs/test-services.md §5): I/O stays where it went; the gateway that took
# over holds the lock and reports active/optimized. Before the next fault, I/O is moved back to
# gateway 0's path by hand (multipathd switchgroup): a write on the non-optimized path moves
# the lock, and sg_rtpg shows gateway 0 active/optimized again (lock-driven ALUA end to end).
. ./lib.sh
[ -f extra/env ] || die "no ./extra/env (boot with tests/vm/systemd/ha.sh)"
. extra/env # HA_IQN HA_GW0 HA_GW1 HA_CTL_PORT HA_FAILOVER_MAX HA_RETURN_MAX
GW=("$HA_GW0" "$HA_GW1")
t_start=$(now)

# ctl ADDR CMD: one request to a gateway's control port (ha-gateway); prints the reply.
ctl() {
    timeout 20 bash -c 'exec 5<>"/dev/tcp/$0/$1" || exit 1; echo "$2" >&5; IFS= read -r -t 15 r <&5 || exit 1; echo "$r"' \
        "$1" "$HA_CTL_PORT" "$2" 2>/dev/null
}
ready() { [ "$(ctl "$1" ping)" = ready ]; }
gw_active() { ctl "$1" state | grep -q '^active pid=[1-9]'; }
bye() {
    local a
    for a in "${GW[@]}"; do ctl "$a" done >/dev/null || true; done
}
trap bye EXIT
# On any failure, first a snapshot of the stall while it lasts: this guest's multipath and
# iSCSI state, the paths' I/O counters, its kernel log, and each gateway's own (ctl diag: the
# daemon's status and diagnose, its journal with the DEVICE field, the gateway's dmesg, the
# ALUA states; they print it as they end).
diag() {
    local a n=${1:-fail}
    log "diag $n: the state at the failure"
    for a in "${GW[@]}"; do log "diag $n: ctl $a: $(ctl "$a" "diag $n" || echo no reply)"; done
    {
        echo "--- multipathd show paths"; timeout 10 multipathd show paths
        echo "--- multipath -ll"; timeout 10 multipath -ll
        echo "--- paths (dev dm_state chk_state prio)"; timeout 10 multipathd show paths raw format "%d %t %T %p %s"
        echo "--- iscsiadm -m session -P 3"; timeout 10 iscsiadm -m session -P 3 | grep -E 'Portal|State|disk'
        echo "--- sg_rtpg"
        for d in ${P[@]+"${P[@]}"}; do echo "$d: $(rtpg "$d" 2>/dev/null)"; done
        echo "--- samples (time dm gw0 gw1), last 40"
        tail -n 40 /tmp/samp."$n" 2>/dev/null
        cat /tmp/samperr."$n" 2>/dev/null
        echo "--- in flight (dm, paths)"
        for d in ${DM:-} ${P[@]+"${P[@]}"}; do echo "$d: $(cat "/sys/block/$d/inflight" 2>/dev/null)"; done
        echo "--- dmesg"; dmesg | tail -n 200
    } 2>&1 | sed "s/^/diag $n: /"
    # The gateways' snapshots are taken in the background there.
    sleep 20
}
DIAG_NAME=fail
die() {
    log "FAIL: $*"
    trap - EXIT
    diag "$DIAG_NAME" || true
    bye
    exit 1
}

for g in 0 1; do
    wait_until 900 ready "${GW[$g]}" || die "gateway $g (${GW[$g]}) not ready after 900 s"
    result "gw${g}_ready_s" "$(elapsed "$t_start")"
done

# --- iSCSI: both portals, timeouts short enough for multipath ------------------------------
t0=$(now)
for a in "${GW[@]}"; do
    iscsiadm -m discovery -t sendtargets -p "$a:3260" >/tmp/disc 2>&1 || { cat /tmp/disc; die "discovery on $a"; }
    grep -q "$HA_IQN" /tmp/disc || { cat /tmp/disc; die "$a does not list $HA_IQN"; }
done
# A path whose gateway stops answering is failed to dm-multipath within seconds: NOP-Out every
# 2 s (4 s to answer), task management 3 s each, and the session's I/O failed 5 s after the
# connection went (replacement_timeout); iscsid keeps logging in again meanwhile.
for kv in node.session.timeo.replacement_timeout=5 node.conn[0].timeo.noop_out_interval=2 \
    node.conn[0].timeo.noop_out_timeout=4 node.session.err_timeo.abort_timeout=3 \
    node.session.err_timeo.lu_reset_timeout=3 node.session.err_timeo.tgt_reset_timeout=3; do
    iscsiadm -m node -T "$HA_IQN" -o update -n "${kv%%=*}" -v "${kv#*=}" || die "iscsiadm update $kv"
done
iscsiadm -m node -T "$HA_IQN" --login >/tmp/login 2>&1 || { cat /tmp/login; die "login failed"; }
paths() { iscsiadm -m session -P 3 2>/dev/null | awk '/Current Portal:/ { split($3, a, ":"); p = a[1] } /Attached scsi disk/ { print p, $4 }'; }
wait_until 60 sh -c "[ \$(iscsiadm -m session -P 3 2>/dev/null | grep -c 'Attached scsi disk') -ge 2 ]" ||
    { iscsiadm -m session -P 3; die "not two iSCSI disks"; }
P=()
for g in 0 1; do
    P[$g]=$(paths | awk -v a="${GW[$g]}" '$1 == a { print $2 }')
    [ -n "${P[$g]}" ] || die "no disk through gateway $g"
    # The SCSI command timeout of each path (a frozen gateway's commands are aborted after it).
    echo 10 >"/sys/block/${P[$g]}/device/timeout"
done
result paths "gw0=${P[0]},gw1=${P[1]}"
result login_s "$(elapsed "$t0")"

# --- dm-multipath --------------------------------------------------------------------------
# The device entry has the built-in LIO entry's vendor and product, so it overrides that one:
# no kernel hardware handler (there is none in this kernel), paths grouped by ALUA priority,
# I/O queued while no path is left, and no automatic failback.
cat >/etc/multipath.conf <<'CONF'
defaults {
    user_friendly_names no
    find_multipaths no
    polling_interval 2
}
blacklist {
    devnode "^vd[a-z]"
}
devices {
    device {
        vendor "(LIO-ORG|SUSE)"
        product ".*"
        hardware_handler "0"
        path_grouping_policy group_by_prio
        prio alua
        path_checker tur
        path_selector "service-time 0"
        failback manual
        no_path_retry queue
    }
}
CONF
t0=$(now)
systemctl restart multipathd
mpmap() { dmsetup ls --target multipath 2>/dev/null | awk 'NR == 1 && $1 != "No" { print $1 }'; }
pstate() { multipathd show paths raw format "%d %t %T %p" 2>/dev/null | awk -v d="$1" '$1 == d { print $2 "/" $3 "/" $4 }'; }
two_paths() { [ -n "$(mpmap)" ] && [ "$(pstate "${P[0]}" | cut -d/ -f1,2)" = active/ready ] && [ "$(pstate "${P[1]}" | cut -d/ -f1,2)" = active/ready ]; }
wait_until 90 two_paths || { multipath -ll; multipathd show paths; die "no multipath map with both paths"; }
MAP=$(mpmap)
MP=/dev/mapper/$MAP
# The map's kernel name (dm-N) from sysfs: /dev/mapper/NAME is not always a symlink to it (a
# node of its own when the map was made before udev's rules ran), and a wrong name here left
# the sampler without a stat file, so no I/O was ever seen (the SIGKILL "stall" of run 4).
DM=
for d in /sys/block/dm-*; do
    if [ "$(cat "$d/dm/name" 2>/dev/null)" = "$MAP" ]; then DM=${d##*/}; break; fi
done
[ -n "$DM" ] && [ -r "/sys/block/$DM/stat" ] || { ls -l /dev/mapper; die "no dm-N device for map $MAP"; }
result dm "$DM"
result multipath_s "$(elapsed "$t0")"
multipath -ll "$MAP" | sed 's/^/mp: /'

# rtpg DISK: the groups' states as sg_rtpg reports them through that path ("g1=AO,g2=ANO").
rtpg() {
    timeout 20 sg_rtpg -d "/dev/$1" 2>/dev/null | awk '
        /target port group id/ { id = $6; sub(/^0x/, "", id); sub(/,$/, "", id) }
        /asymmetric access state/ { s = $0; sub(/.*\(/, "", s); sub(/\).*/, "", s)
            if (s == "active/optimized") s = "AO"; else if (s == "active/non optimized" || s == "active/non-optimized") s = "ANO"
            out = out (out == "" ? "" : ",") "g" id "=" s }
        END { print (out == "" ? "none" : out) }'
}
gw0_optimized() { case $(rtpg "${P[0]}") in *g1=AO*) return 0 ;; esac; return 1; }
# holds_lock G: gateway G's daemon says it holds the image's exclusive lock (tcmu-warden status).
holds_lock() { ctl "${GW[$1]}" state | grep -q 'this daemon holds'; }
# optimized: the gateway whose group (id g+1) a path reports active/optimized.
optimized() {
    local r
    r=$(rtpg "${P[0]}")
    [ "$r" = none ] && r=$(rtpg "${P[1]}")
    case $r in *g1=AO*) echo 0 ;; *g2=AO*) echo 1 ;; *) echo "?" ;; esac
}
result rtpg_start "gw0:$(rtpg "${P[0]}");gw1:$(rtpg "${P[1]}")"
[ "$(optimized)" = 0 ] || die "gateway 0 (the configured owner) is not active/optimized at the start"
mp_group_of() { multipath -ll "$MAP" 2>/dev/null | awk -v d="$1" '/policy=/ { n++ } $0 ~ (" " d " ") { print n; exit }'; }
writes() { awk '{ print $5 }' "/sys/block/$1/stat"; }
# The first I/O goes to gateway 0's path. multipathd may have made the map while only gateway
# 1's path had its priority (then that group is first, and `failback manual` keeps it): the
# group is chosen by hand, and a few writes show where they go.
multipathd switchgroup map "$MAP" group "$(mp_group_of "${P[0]}")" >/dev/null || die "switchgroup at the start"
w0=$(writes "${P[0]}")
dd if=/dev/zero of="$MP" bs=4k count=16 oflag=direct status=none || die "the first writes failed"
[ "$(writes "${P[0]}")" -gt "$w0" ] || { multipath -ll "$MAP"; die "the first writes did not go to gateway 0's path"; }
wait_until 30 holds_lock 0 || die "gateway 0 does not hold the lock after its first writes: $(ctl "$HA_GW0" state)"
gw0_optimized || die "gateway 0 not active/optimized after its first writes"
result rtpg_first_writes "gw0:$(rtpg "${P[0]}");gw1:$(rtpg "${P[1]}")"

# --- load, samplers, analysis ---------------------------------------------------------------
# fio_loop NAME: back-to-back 15 s fio jobs (4 KiB random writes, QD16, crc32c verified as they
# go, a completion log with wall-clock times) until /tmp/stop.NAME exists.
fio_loop() {
    local name=$1 i=0
    while [ ! -e "/tmp/stop.$name" ]; do
        i=$((i + 1))
        fio --name="$name$i" --filename="$MP" --ioengine=libaio --direct=1 --rw=randwrite \
            --bs=4k --iodepth=16 --size=64m --time_based --runtime=15 --verify=crc32c \
            --verify_backlog=256 --verify_fatal=1 --write_lat_log="/tmp/lat.$name.$i" \
            --log_unix_epoch=1 --output-format=terse --terse-version=3 \
            >"/tmp/fio.$name.$i" 2>&1 || echo "$i" >>"/tmp/fiofail.$name"
    done
}
# sampler NAME: every 0.25 s the time and the I/Os (reads and writes: fio's verify reads too)
# completed by the multipath device and by each path (/sys/block/*/stat fields 1 and 5).
# Shell built-ins only (a fork costs milliseconds under TCG).
sampler() {
    local r w a b c
    while [ ! -e "/tmp/stop.$1" ]; do
        read -r r _ _ _ w _ <"/sys/block/$DM/stat"
        a=$((r + w))
        read -r r _ _ _ w _ <"/sys/block/${P[0]}/stat"
        b=$((r + w))
        read -r r _ _ _ w _ <"/sys/block/${P[1]}/stat"
        c=$((r + w))
        echo "$EPOCHREALTIME $a $b $c"
        sleep 0.25
    done >"/tmp/samp.$1" 2>"/tmp/samperr.$1"
}
# resumed NAME T: the multipath device completed an I/O after a stall of 1 s or more that began
# after T, or 20 s passed after T without such a stall.
resumed() {
    awk -v t="$2" -v n="$(now)" '
        { if (NR > 1 && $2 > prev) { if ($1 >= t && $1 - last >= 1) { found = 1; exit } last = $1 } prev = $2 }
        END { exit !(found || n - t > 20 && last - t > 19) }' "/tmp/samp.$1"
}
# fio_gap NAME T: from T to the first write completion that ended the longest gap between write
# completions after T (fio's completion logs: ms since the epoch, direction 1 = write; verify
# reads need no lock and can go on meanwhile); "none" when no gap reached 0.5 s.
fio_gap() {
    cat /tmp/lat."$1".*_clat.1.log 2>/dev/null | awk -F', *' '$3 == 1 { print $1 }' | sort -n | awk -v t="$2" '
        { s = $1 / 1000; if (p != "" && s > t && s - p > g) { g = s - p; e = s } p = s }
        END { if (g >= 0.5) printf "%.2f", e - t; else print "none" }'
}
# first_io ON NAME T: from T to the first sample in which path ON (0 or 1) completed an I/O.
first_io() {
    awk -v c=$(($1 + 3)) -v t="$3" '
        NR > 1 && $1 >= t && $c > prev { printf "%.2f", $1 - t; found = 1; exit } { prev = $c }
        END { if (!found) print "none" }' "/tmp/samp.$2"
}
# last_path NAME: the path (0 or 1) that completed I/O in the last 6 s of the samples.
last_path() {
    awk '{ t[NR] = $1; a[NR] = $3; b[NR] = $4 }
        END { for (i = NR; i > 1 && t[NR] - t[i] < 6; i--) ; da = a[NR] - a[i]; db = b[NR] - b[i]
              print (da > 0 && db > 0) ? "both" : (da > 0 ? 0 : (db > 0 ? 1 : "none")) }' "/tmp/samp.$1"
}
dm_errors() { dmesg | grep -cE "I/O error, dev $DM|Buffer I/O error on dev $DM" || true; }

start_load() {
    rm -f "/tmp/stop.$1" "/tmp/fiofail.$1"
    fio_loop "$1" &
    echo $! >"/tmp/fiopid.$1"
    sampler "$1" &
    echo $! >"/tmp/samppid.$1"
}
# stop_load NAME: fio's last job ends (at most 15 s), then the checks of a clean run.
stop_load() {
    local name=$1 errs jobs
    touch "/tmp/stop.$name"
    wait "$(cat "/tmp/fiopid.$name")" || true
    wait "$(cat "/tmp/samppid.$name")" || true
    if [ -s "/tmp/fiofail.$name" ]; then
        for i in $(cat "/tmp/fiofail.$name"); do tail -n 20 "/tmp/fio.$name.$i"; done
        die "$name: fio job(s) $(paste -sd, "/tmp/fiofail.$name") failed"
    fi
    jobs=$(ls /tmp/fio."$name".* | wc -l)
    # terse v3: field 5 is fio's error number.
    errs=$(cat /tmp/fio."$name".* | cut -d';' -f5 | sort -u | paste -sd, -)
    [ "$errs" = 0 ] || die "$name: fio reports error(s) $errs"
    ! grep -qi 'verify' /tmp/fio."$name".* || { grep -i verify /tmp/fio."$name".* | head; die "$name: verify failure"; }
    result "${name}_fio" "clean_${jobs}jobs_$(cat /tmp/fio."$name".* | cut -d';' -f49 | awk '{ s += $1; n++ } END { printf "%d", n ? s / n : 0 }')iops"
}

# move_to_gw0 NAME: I/O on gateway 0's path by hand while fio runs; until sg_rtpg shows
# gateway 0 active/optimized (the lock moved with the first writes there).
# path_idle DEV: nothing in flight on DEV (reads and writes).
path_idle() { [ "$(awk '{ print $1 + $2 }' "/sys/block/$1/inflight" 2>/dev/null)" = 0 ]; }

move_to_gw0() {
    local name=$1 k t0 grp
    k=$(dm_errors)
    DIAG_NAME=$name
    # A write sent on gateway 0's path before a fault may still be retried there by the SCSI
    # layer (up to its retries x the 10 s timeout); were it given up during the check below,
    # multipath would send it on gateway 1's path, whose daemon would take the lock back. Wait
    # until that path has nothing in flight first.
    wait_until 90 path_idle "${P[0]}" || log "$name: ${P[0]} still busy after 90 s: $(cat "/sys/block/${P[0]}/inflight")"
    start_load "$name"
    sleep 4
    grp=$(mp_group_of "${P[0]}")
    t0=$(now)
    multipathd switchgroup map "$MAP" group "$grp" >/dev/null || die "$name: switchgroup $grp"
    wait_until 60 gw0_optimized ||
        die "$name: gateway 0 not active/optimized 60 s after I/O moved to its path"
    result "${name}_to_optimized_s" "$(elapsed "$t0")"
    # Longer than last_path's 6 s window, so no I/O from before the switch is in it (with 5 s,
    # a quick move left gw1's last writes inside the window and failed the check).
    sleep 8
    stop_load "$name"
    result "${name}_rtpg" "gw0:$(rtpg "${P[0]}");gw1:$(rtpg "${P[1]}")"
    result "${name}_io_on" "gw$(last_path "$name")"
    [ "$(last_path "$name")" = 0 ] || die "$name: I/O is not on gateway 0's path"
    [ "$(dm_errors)" = "$k" ] || { dmesg | tail -n 20; die "$name: I/O errors on $DM"; }
}

# fault NAME ACTION: ACTION on the optimized gateway (0) while fio runs; failover, return, checks.
fault() {
    local name=$1 act=$2 g=0 o=1 k reply t_fault t_back a
    a=${GW[$g]}
    [ "$(optimized)" = "$g" ] || die "$name: gateway $g is not the optimized one"
    k=$(dm_errors)
    DIAG_NAME=$name
    start_load "$name"
    sleep 6
    reply=$(ctl "$a" "$act") || die "$name: no reply from gateway $g"
    t_fault=${reply%% *}
    log "$name: $act on gateway $g at $t_fault ($reply)"
    local end=$((SECONDS + HA_FAILOVER_MAX))
    until resumed "$name" "$t_fault"; do
        [ "$SECONDS" -lt "$end" ] || { multipathd show paths; die "$name: no write completed within $HA_FAILOVER_MAX s of the fault"; }
        sleep 1
    done
    result "${name}_resumed_s" "$(elapsed "$t_fault")"
    result "${name}_rtpg_after" "gw0:$(rtpg "${P[0]}");gw1:$(rtpg "${P[1]}")"
    result "${name}_paths_after" "gw0:$(pstate "${P[0]}");gw1:$(pstate "${P[1]}")"
    case $act in
        kill9) wait_until "$HA_RETURN_MAX" gw_active "$a" || die "$name: the daemon did not come back" ;;
        stop)
            # Frozen until the initiator failed its path (bounded), then thawed.
            wait_until 60 sh -c "multipathd show paths raw format '%d %t' | grep -q '^${P[$g]} failed'" ||
                log "$name: the path was not failed within 60 s"
            result "${name}_path_failed_s" "$(elapsed "$t_fault")"
            reply=$(ctl "$a" cont) || die "$name: no reply to cont"
            result "${name}_frozen_s" "$(awk -v a="$t_fault" -v b="${reply%% *}" 'BEGIN { printf "%.2f", b - a }')"
            wait_until "$HA_RETURN_MAX" gw_active "$a" || die "$name: the daemon is not active after SIGCONT"
            ;;
        poweroff) wait_until "$HA_RETURN_MAX" ready "$a" || die "$name: gateway $g did not boot again" ;;
    esac
    wait_until "$HA_RETURN_MAX" two_paths || { multipathd show paths; die "$name: the path through gateway $g is not back"; }
    t_back=$(elapsed "$t_fault")
    result "${name}_path_back_s" "$t_back"
    sleep 8
    stop_load "$name"
    result "${name}_failover_s" "$(fio_gap "$name" "$t_fault")"
    result "${name}_other_path_s" "$(first_io "$o" "$name" "$t_fault")"
    result "${name}_rtpg_end" "gw0:$(rtpg "${P[0]}");gw1:$(rtpg "${P[1]}")"
    local on opt
    on=$(last_path "$name") opt=$(optimized)
    result "${name}_io_on_end" "gw$on"
    result "${name}_optimized_end" "gw$opt"
    [ "$(dm_errors)" = "$k" ] || { dmesg | tail -n 20; die "$name: I/O errors on $DM"; }
    # Failback manual: I/O stays where it is, on the gateway that reports active/optimized.
    [ "$on" = "$opt" ] || die "$name: I/O on gateway $on while gateway $opt is active/optimized"
    multipath -ll "$MAP" | sed "s/^/$name mp: /"
}

fault kill9 kill9
[ "$(optimized)" = 0 ] || move_to_gw0 back1
fault stop stop
[ "$(optimized)" = 0 ] || move_to_gw0 back2
fault poweroff poweroff
# No automatic failback: move I/O to gateway 0 by hand once more (the lock follows the I/O).
[ "$(optimized)" = 0 ] || move_to_gw0 back3

# Leave: the map flushed, the sessions logged out, the gateways told to finish.
multipath -f "$MAP" >/dev/null 2>&1 || true
iscsiadm -m node -T "$HA_IQN" --logout >/dev/null 2>&1 || true
result total_s "$(elapsed "$t_start")"
