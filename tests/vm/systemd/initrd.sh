#!/bin/sh
# The systemd guest's initramfs (a few MB, built per run in well under a second): busybox, the
# virtio modules in dependency order (the cloud kernel has ext4 built in, virtio_blk as a
# module), and an init that mounts /dev/vda and switch_roots to systemd. With
# warden.net=ADDR/PREFIX on the kernel command line (run.sh's VM_NET_ADDR) it also loads
# virtio_net and gives eth0 that address before systemd starts, so the network is there before
# any unit (tcmu-warden, the target restore) needs it; net.ifnames=0 keeps the name eth0.
# usage: initrd.sh OUT.cpio
set -eu
here=$(cd "$(dirname "$0")" && pwd)
kdir="$here/../.cache/kernel/current"
ir=$(mktemp -d "${TMPDIR:-/tmp}/warden-initrd.XXXXXX")
trap 'rm -rf "$ir"' EXIT
mkdir -p "$ir/bin" "$ir/dev" "$ir/proc" "$ir/sys" "$ir/newroot" "$ir/mods"
cp /bin/busybox "$ir/bin/busybox"
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net"
for m in $mods; do
    cp "$(find "$kdir/modules" -name "$m.ko")" "$ir/mods/"
done
cat >"$ir/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $mods; do insmod /mods/\$m.ko || echo "initrd: insmod \$m failed"; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
net=\$(sed -n 's/.*warden\.net=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "\$net" ]; then
    i=0; while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i+1)); done
    ip link set lo up
    ip addr add "\$net" dev eth0 && ip link set eth0 up || echo "initrd: eth0 \$net failed"
fi
mount -t ext4 -o rw,noatime /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys; umount /dev
exec switch_root /newroot /lib/systemd/systemd
INIT
chmod 0755 "$ir/init"
( cd "$ir" && find . | cpio -o -H newc --quiet ) >"$1"
