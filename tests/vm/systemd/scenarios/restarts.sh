# vm-timeout: 420
# Restarts under load (after scenario iscsi): while fio writes 4 KiB blocks at QD32 with crc32c
# verify over the iSCSI session, the daemon is (1) restarted by systemctl, (2) upgraded by
# `apt install` of a newer build, (3) killed with SIGKILL (systemd restarts it), (4) frozen with
# SIGSTOP (systemd's watchdog kills it, then restarts it). Each: fio ends clean (no I/O error, no
# verify error), no kernel I/O error, command timeout or hung task, a new daemon PID; the gap is
# the longest wait of a 4 KiB O_DIRECT read probe issued every 50 ms (stop to first command
# served again).
. ./lib.sh
dev=$(cat /tmp/iscsi.dev 2>/dev/null) || die "no iSCSI disk (scenario iscsi)"
[ -b "$dev" ] || die "$dev is gone"
pid() { systemctl show -p MainPID --value tcmu-warden; }
kerr() { dmesg | grep -cE 'I/O error|Timing out|blocked for more than|rejecting I/O' || true; }

# fio_until NAME: back-to-back 5 s fio jobs (4 KiB random writes, QD32, crc32c verified as
# they go) until /tmp/stop.NAME exists; a failed job is listed in /tmp/fiofail.NAME.
fio_until() {
    local name=$1 i=0
    rm -f "/tmp/stop.$name" "/tmp/fiofail.$name"
    while [ ! -e "/tmp/stop.$name" ]; do
        i=$((i + 1))
        fio --name="$name$i" --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
            --bs=4k --iodepth=32 --size=64m --offset=32m --time_based --runtime=5 \
            --verify=crc32c --verify_backlog=256 --verify_fatal=1 --output-format=terse \
            --terse-version=3 >"/tmp/fio.$name.$i" 2>&1 || echo "$i" >>"/tmp/fiofail.$name"
    done
}

# event NAME ACTION...: fio running throughout (from 3 s before ACTION until the new daemon has
# served for 3 s), a read probe measuring the gap; then the checks.
event() {
    local name=$1; shift
    local before_pid before_k probe_pid fio_pid t_act
    before_pid=$(pid)
    before_k=$(kerr)
    fio_until "$name" &
    fio_pid=$!
    (while :; do
        dd if="$dev" of=/dev/null bs=4k count=1 skip=$((RANDOM % 8000)) iflag=direct status=none 2>/dev/null &&
            date +%s.%N
        sleep 0.05
    done) >"/tmp/probe.$name" &
    probe_pid=$!
    sleep 3
    t_act=$(now)
    log "$name: $*"
    "$@"
    wait_until 120 active || die "$name: the daemon did not come back"
    sleep 3
    touch "/tmp/stop.$name"
    wait "$fio_pid" || true
    kill "$probe_pid" 2>/dev/null; wait "$probe_pid" 2>/dev/null || true
    if [ -s "/tmp/fiofail.$name" ]; then
        for i in $(cat "/tmp/fiofail.$name"); do tail -n 20 "/tmp/fio.$name.$i"; done
        die "$name: fio job(s) $(paste -sd, "/tmp/fiofail.$name") failed"
    fi
    # terse v3: field 5 is fio's error number, 49 the write IOPS.
    local jobs errs iops gap
    jobs=$(ls /tmp/fio."$name".* | wc -l)
    errs=$(cat /tmp/fio."$name".* | cut -d';' -f5 | sort -u | paste -sd, -)
    iops=$(cat /tmp/fio."$name".* | cut -d';' -f49 | awk '{ s += $1; n++ } END { printf "%d", n ? s / n : 0 }')
    [ "$errs" = 0 ] || die "$name: fio reports error(s) $errs"
    [ "$(kerr)" = "$before_k" ] || { dmesg | tail -n 20; die "$name: kernel I/O errors"; }
    [ "$(pid)" != "$before_pid" ] || die "$name: the daemon was not replaced (pid $before_pid)"
    gap=$(awk -v t="$t_act" '$1 >= t - 1 { if (p != "" && $1 - p > g) g = $1 - p; p = $1 } END { printf "%.2f", g }' "/tmp/probe.$name")
    result "${name}_gap_s" "$gap"
    result "${name}_fio" "clean_${jobs}jobs_${iops}iops"
}

stop_watchdog() {
    kill -STOP "$(pid)"
    # The watchdog (WatchdogSec) fires, then SIGABRT/SIGKILL; wait for the replacement.
    local old
    old=$(pid)
    wait_until 120 sh -c "[ \"\$(systemctl show -p MainPID --value tcmu-warden)\" != $old ] && [ \"\$(systemctl is-active tcmu-warden)\" = active ]" ||
        die "the watchdog did not replace the frozen daemon"
    journalctl -u tcmu-warden -b --no-pager -o cat | grep -qi 'watchdog timeout' || die "no watchdog timeout logged by systemd"
}
upgrade() {
    local new
    new=$(ls debs/upgrade/tcmu-warden_*.deb | head -n1)
    apt-get install -y -q "$PWD/$new" 2>&1 | tail -n 3
    result upgraded_to "$(dpkg-query -W -f='${Version}' tcmu-warden)"
}
event restart systemctl restart tcmu-warden
event upgrade upgrade
event kill9 sh -c 'kill -9 "$(systemctl show -p MainPID --value tcmu-warden)"'
event stop stop_watchdog
systemctl show -p NRestarts --value tcmu-warden | xargs -I{} sh -c 'echo NRestarts={}'
