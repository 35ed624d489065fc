# vm-timeout: 240
# The package: `apt install ./tcmu-warden_*.deb` offline (every dependency is already in the
# image), its files where the unit and DBus expect them, the man page, tcmu-runner refused
# (Conflicts), the daemon enabled and started by the maintainer scripts.
. ./lib.sh
deb=$(ls debs/tcmu-warden_*.deb | head -n1)
log "installing $deb"
t0=$(now)
apt-get install -y -q "$PWD/$deb" 2>&1 | tail -n 5
result install_s "$(elapsed "$t0")"
dpkg-query -W -f='${Status} ${Version}\n' tcmu-warden | grep -q '^install ok installed' || die "not installed"
result version "$(dpkg-query -W -f='${Version}' tcmu-warden)"
for f in /usr/sbin/tcmu-warden /lib/systemd/system/tcmu-warden.service \
    /usr/share/dbus-1/system.d/org.kernel.TCMUService1.conf \
    /usr/share/dbus-1/system-services/org.kernel.TCMUService1.service \
    /usr/lib/modules-load.d/tcmu-warden.conf /usr/share/man/man8/tcmu-warden.8.gz \
    /usr/share/doc/tcmu-warden/examples/config.toml; do
    [ -e "$f" ] || die "$f missing"
done
zcat /usr/share/man/man8/tcmu-warden.8.gz | grep -qF 'metrics\-addr' || die "man page lacks the options"
dpkg-deb -f "$deb" Conflicts | grep -qw tcmu-runner || die "no Conflicts: tcmu-runner"
[ "$(systemctl is-enabled tcmu-warden)" = enabled ] || die "not enabled"
wait_until 30 active || die "not started by postinst: $(systemctl status tcmu-warden --no-pager 2>&1 | tail -n 20)"
result started active
tcmu-warden --version
