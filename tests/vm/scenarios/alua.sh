# vm-timeout: 60
# Implicit ALUA through the real kernel: a user:file LUN exported through tcm_loop.
# sg_rtpg shows default_tg_pt_gp (id 0, active/optimized) holding the LUN's port; a second
# group gp2 (id 2) takes the port and goes to standby (echo 2 > alua_access_state): sg_rtpg
# reports it, INQUIRY and RTPG still work, READ and TEST UNIT READY fail with NOT READY
# 04/0B (standby). Then attrib/alua_support=0 switches the kernel's own state check off, so
# the standby sense must now come from the handler itself. sg3-utils exit code 2 = NOT READY.
size=$((16 * 1024 * 1024))
img=/tmp/alua.img
truncate -s "$size" "$img"
uio=$(user_backstore_create -a cmd_time_out=10 alua "$size" "$img")
bs=$CFS/core/user_0/alua
handler_start --uio /dev/uio$uio
dev=$(loop_lun_create alua)
lun=$CFS/loopback/$(cat "$STATE/lun.alua")/tpgt_1/lun/lun_0

# Commands may first meet the kernel's UNIT ATTENTION (ASYMMETRIC ACCESS STATE CHANGED)
# after a state change: absorb it (TEST UNIT READY may fail either way).
eat_ua() { sg_turs "$dev" >/dev/null 2>&1 || sg_turs "$dev" >/dev/null 2>&1 || true; }

# rtpg [-e]: one line per group, "id:state:rtpi,rtpi...", from sg_rtpg's raw response.
rtpg() {
    _hdr=4
    [ "${1:-}" = -e ] && _hdr=8
    _raw=$(sg_rtpg ${1:+"$1"} -r "$dev" | od -An -v -tu1) || return 1
    # shellcheck disable=SC2086
    set -- $_raw
    [ $# -ge "$_hdr" ] || return 1
    _len=$(( $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 ))
    shift "$_hdr"
    while [ "$_len" -ge 8 ] && [ $# -ge 8 ]; do
        _st=$(( $1 & 15 )) _id=$(( $3 * 256 + $4 )) _n=$8
        shift 8
        _len=$((_len - 8))
        _ports=""
        while [ "$_n" -gt 0 ] && [ $# -ge 4 ]; do
            _ports="$_ports${_ports:+,}$(( $3 * 256 + $4 ))"
            shift 4
            _n=$((_n - 1))
            _len=$((_len - 4))
        done
        echo "$_id:$_st:$_ports"
    done
}

rtpi=$(cat "$lun/statistics/scsi_port/indx")
result rtpi "$rtpi"

# --- INQUIRY: TPGS = implicit ALUA.
tpgs=$(sg_inq "$dev" | sed -n 's/.*TPGS=\([0-9]\).*/\1/p' | head -n1)
result tpgs "$tpgs"
[ "$tpgs" = 1 ] || die "standard INQUIRY TPGS=$tpgs, want 1 (implicit)"
sg_vpd -p di "$dev" >/tmp/vpd83 2>&1 || { cat /tmp/vpd83 >&2; die "VPD 0x83 failed"; }
grep -qi "target port group" /tmp/vpd83 || { cat /tmp/vpd83 >&2; die "no target port group designator"; }

# --- default group: id 0, active/optimized (0), holding the LUN's port.
sg_rtpg -d "$dev" >&2 || die "sg_rtpg failed"
g=$(rtpg) || die "sg_rtpg -r failed"
result groups_default "$(echo $g)"
echo "$g" | grep -qx "0:0:$rtpi" || die "default_tg_pt_gp not 0:0:$rtpi in: $g"
ge=$(rtpg -e) || die "sg_rtpg -e failed"
[ "$ge" = "$g" ] || die "extended header gives '$ge', length-only '$g'"

# --- a second group: gp2, id 2; move the LUN's port into it; standby.
mkdir "$bs/alua/gp2" || die "mkdir alua/gp2"
echo 2 >"$bs/alua/gp2/tg_pt_gp_id" || die "tg_pt_gp_id"
# 1 = implicit only (the default is implicit and explicit; configfs state changes need implicit).
echo 1 >"$bs/alua/gp2/alua_access_type" || die "alua_access_type"
echo 1 >"$bs/alua/gp2/alua_support_standby" || die "alua_support_standby"
echo gp2 >"$lun/alua_tg_pt_gp" || die "moving the port to gp2"
result members_gp2 "$(cat "$bs/alua/gp2/members" | tr '\n' ' ')"
echo 2 >"$bs/alua/gp2/alua_access_state" || die "alua_access_state=2 refused"
result gp2_state_configfs "$(cat "$bs/alua/gp2/alua_access_state")"
eat_ua

g=$(rtpg) || die "sg_rtpg after standby failed"
result groups_standby "$(echo $g)"
echo "$g" | grep -qx "0:0:" || die "default_tg_pt_gp should be empty and active/optimized: $g"
echo "$g" | grep -qx "2:2:$rtpi" || die "gp2 not standby with port $rtpi: $g"
sg_rtpg -d "$dev" >&2

# Allowed in standby: INQUIRY, RTPG (above). Refused: READ, TEST UNIT READY (04/0B).
sg_inq "$dev" >/dev/null || die "INQUIRY in standby failed"
# check_standby WHAT: READ(10) of block 0 must fail with NOT READY, standby.
check_standby() {
    rc=0
    sg_raw -r 512 "$dev" 28 00 00 00 00 00 00 00 01 00 >/tmp/read.out 2>&1 || rc=$?
    cat /tmp/read.out >&2
    result "read_rc_$1" "$rc"
    [ "$rc" = 2 ] || die "$1: READ in standby: expected NOT READY (2), got $rc"
    grep -qi "standby" /tmp/read.out || die "$1: READ sense is not 'target port in standby state'"
    rc=0
    sg_turs "$dev" >/tmp/tur.out 2>&1 || rc=$?
    result "tur_rc_$1" "$rc"
    [ "$rc" = 2 ] || { cat /tmp/tur.out >&2; die "$1: TEST UNIT READY in standby: expected NOT READY (2), got $rc"; }
}
check_standby kernel

# --- the kernel's own ALUA check off: the handler must refuse READ itself.
if echo 0 >"$bs/attrib/alua_support" 2>/dev/null; then
    result alua_support_off ok
    check_standby handler
    handler_log_wait 5 "ALUA access state.*Standby" || die "handler never noticed standby"
    echo 1 >"$bs/attrib/alua_support" || die "alua_support back to 1"
else
    result alua_support_off refused
fi

# --- back to active/optimized: I/O flows again.
echo 0 >"$bs/alua/gp2/alua_access_state" || die "alua_access_state=0 refused"
eat_ua
g=$(rtpg) || die "sg_rtpg after active failed"
echo "$g" | grep -qx "2:0:$rtpi" || die "gp2 not active/optimized: $g"
sleep 1.2 # past the handler's ALUA_REFRESH, so no stale cached state either
sg_raw -r 512 "$dev" 28 00 00 00 00 00 00 00 01 00 >/dev/null 2>&1 || die "READ after return to active failed"
dd if="$dev" of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null || die "dd read after return to active failed"
result back_to_active ok

loop_lun_remove alua
rmdir "$bs/alua/gp2" || die "rmdir alua/gp2"
user_backstore_remove alua
handler_stop
