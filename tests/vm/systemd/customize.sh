#!/bin/sh
# mmdebstrap customize hook of build-rootfs.sh: $1 is the new root, KMODS the unpacked kernel's
# modules directory, KVER its version. Makes the tree boot fast as a test guest: root on
# /dev/vda, no timers or network waits, the kernel's modules, the scenario runner unit.
set -eu
root=$1
here=$(cd "$(dirname "$0")" && pwd)

echo warden-gw >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 warden-gw\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 defaults,noatime 0 1\n' >"$root/etc/fstab"
: >"$root/etc/machine-id"   # filled at first boot
passwd -R "$root" -d root >/dev/null

# The guest's kernel is the one tests/vm boots; its modules go where modprobe finds them.
mkdir -p "$root/lib/modules"
cp -a "$KMODS" "$root/lib/modules/$KVER"
chroot "$root" depmod "$KVER"   # kmod of the guest (the host may have none)

# Nothing periodic, nothing that waits for a network the guest does not have.
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
    systemd-timesyncd.service dpkg-db-backup.timer e2scrub_reap.service \
    systemd-networkd-wait-online.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$u"
done
# The scenario runner: reads the per-run payload from the second disk, results to ttyS1.
install -m 0644 "$here/warden-runner.service" "$root/etc/systemd/system/warden-runner.service"
ln -sfn ../warden-runner.service "$root/etc/systemd/system/multi-user.target.wants/warden-runner.service"
# apt in the guest installs local .debs offline: no lists to fetch, no sandbox user needed.
rm -rf "$root"/var/lib/apt/lists/*_Packages "$root"/var/cache/apt/archives/*.deb
