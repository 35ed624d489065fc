#!/bin/sh
# The systemd guest's initramfs (a few MB, built per run in well under a second): busybox, the
# virtio modules in dependency order (the cloud kernel has ext4 built in, virtio_blk as a
# module), and an init that mounts /dev/vda and switch_roots to systemd.
# usage: initrd.sh OUT.cpio
set -eu
here=$(cd "$(dirname "$0")" && pwd)
kdir="$here/../.cache/kernel/current"
ir=$(mktemp -d "${TMPDIR:-/tmp}/warden-initrd.XXXXXX")
trap 'rm -rf "$ir"' EXIT
mkdir -p "$ir/bin" "$ir/dev" "$ir/proc" "$ir/sys" "$ir/newroot" "$ir/mods"
cp /bin/busybox "$ir/bin/busybox"
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"
for m in $mods; do
    cp "$(find "$kdir/modules" -name "$m.ko")" "$ir/mods/"
done
cat >"$ir/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $mods; do insmod /mods/\$m.ko || echo "initrd: insmod \$m failed"; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
mount -t ext4 -o rw,noatime /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys; umount /dev
exec switch_root /newroot /lib/systemd/systemd
INIT
chmod 0755 "$ir/init"
( cd "$ir" && find . | cpio -o -H newc --quiet ) >"$1"
