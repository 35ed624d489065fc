# vm-timeout: 180
# `apt remove` (last): the initiator logs out, targetcli clears the configuration while the
# daemon still answers, then the package goes; the backing file stays, byte for byte.
. ./lib.sh
iscsiadm -m node --logoutall=all >/dev/null 2>&1 || true
targetcli clearconfig confirm=True >/tmp/tc 2>&1 || { cat /tmp/tc; die "clearconfig"; }
img=/var/lib/tcmu-warden/lun0.img
[ -f "$img" ] || die "no backing file before remove"
sum=$(md5sum <"$img" | cut -d' ' -f1)
apt-get remove -y -q tcmu-warden 2>&1 | tail -n 3
! dpkg-query -W -f='${Status}' tcmu-warden 2>/dev/null | grep -q '^install ok installed' || die "still installed"
[ ! -e /usr/sbin/tcmu-warden ] || die "binary left behind"
! active || die "daemon still running"
[ -f "$img" ] || die "apt remove deleted the backing file"
[ "$(md5sum <"$img" | cut -d' ' -f1)" = "$sum" ] || die "the backing file changed"
result backing_file_after_remove kept
