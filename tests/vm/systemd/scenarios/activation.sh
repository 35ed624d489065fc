# vm-timeout: 180
# DBus activation: with the daemon stopped, `targetcli ls` (which asks org.kernel.TCMUService1
# for the user: backstores) starts tcmu-warden.service through the bus, and lists our subtypes.
. ./lib.sh
systemctl stop tcmu-warden
! active || die "still active after stop"
t0=$(now)
targetcli ls /backstores >/tmp/tc.ls 2>&1 || { cat /tmp/tc.ls; die "targetcli ls failed"; }
wait_until 30 active || die "targetcli did not start the daemon"
result activation_s "$(elapsed "$t0")"
for s in file rbd glfs; do
    grep -q "user:$s" /tmp/tc.ls || { cat /tmp/tc.ls; die "targetcli lists no user:$s"; }
done
journalctl -b --no-pager -o cat -u dbus | grep -q 'Activating via systemd: service name=.org.kernel.TCMUService1' ||
    die "dbus did not activate the name through systemd"
result activated_by dbus
