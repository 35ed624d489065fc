# vm-timeout: 60
# The guest is what a gateway runs: systemd is PID 1, journald and the system bus run, the
# LIO and initiator tools are installed, the kernel has target_core_user.
. ./lib.sh
[ "$(cat /proc/1/comm)" = systemd ] || die "PID 1 is $(cat /proc/1/comm)"
result systemd "$(systemctl --version | head -n1 | cut -d' ' -f2)"
for u in systemd-journald.service dbus.service systemd-udevd.service; do
    [ "$(systemctl is-active "$u")" = active ] || die "$u is not active"
done
for c in targetcli iscsiadm multipath fio sg_inq; do
    command -v "$c" >/dev/null || die "$c missing"
done
modprobe -n target_core_user || die "no target_core_user module"
result kernel "$(uname -r)"
