# Helpers for the systemd guest's scenarios (bash -eu; sourced as ./lib.sh from /run/warden-test).
set -o pipefail
# The payload's debs are in ./debs; results go to the runner's fd 3 (ttyS1).
log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { log "FAIL: $*"; exit 1; }
# result KEY VALUE: one key=value line in the summary.
result() { echo "$1=$2" >&"${RESULT_FD:-1}"; log "result $1=$2"; }
# wait_until SECS CMD...: poll CMD every 0.2 s until it succeeds; status 1 after SECS.
wait_until() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.2
    done
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# The daemon's journal of this boot (message text only).
wjournal() { journalctl -u tcmu-warden -b --no-pager -o cat; }
active() { [ "$(systemctl is-active tcmu-warden)" = active ]; }
# The /dev/sdX whose SCSI serial (VPD 0x80) or WWN mentions $1... tcm_loop/iSCSI disks of LIO
# carry the backstore's unit serial; we find the disk by the transport instead:
# disk_of_host_type TYPE (loopback | iscsi): the newest sd disk on such a SCSI host.
disk_of() {
    local want=$1 d
    for d in /sys/block/sd*; do
        [ -e "$d" ] || continue
        case $want in
            loopback) readlink -f "$d/device" | grep -q '/tcm_loop' || continue ;;
            iscsi) readlink -f "$d/device" | grep -q '/session' || continue ;;
        esac
        echo "/dev/${d##*/}"
        return 0
    done
    return 1
}
# fio_verify DEV NAME [fio args...]: crc32c-verified writes; prints fio's terse result.
fio_verify() {
    local dev=$1 name=$2; shift 2
    fio --name="$name" --filename="$dev" --ioengine=libaio --direct=1 --verify=crc32c \
        --do_verify=1 --verify_fatal=1 --output-format=terse --terse-version=3 "$@" >"/tmp/fio.$name" 2>&1 ||
        { cat "/tmp/fio.$name"; return 1; }
}
