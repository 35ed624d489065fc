#!/bin/sh
# Install what the systemd guest (tests/vm/systemd/) and the Debian package (scripts/package.sh)
# need on the host, idempotently, from Debian packages:
#  - mmdebstrap builds the guest's Debian 12 root file system; e2fsprogs makes its ext4 image
#  - qemu-utils (qemu-img) puts a per-run qcow2 overlay on the cached image
#  - dpkg-dev (dpkg-shlibdeps) computes the package's library dependencies
#  - iproute2 (ip netns, bridge, tuntap) makes the test network of tests/net/netns.sh
# The kernel and qemu come from install-vm-deps.sh. Must run as root (apt-get).
set -eu
export DEBIAN_FRONTEND=noninteractive
need=""
for pkg in mmdebstrap e2fsprogs qemu-utils dpkg-dev busybox-static cpio iproute2; do
    case $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) in
        "install ok installed") ;;
        *) need="$need $pkg" ;;
    esac
done
[ -n "$need" ] || exit 0
echo "install-systemd-vm-deps: installing:$need" >&2
apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null
