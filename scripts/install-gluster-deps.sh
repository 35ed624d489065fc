#!/bin/sh
# GlusterFS for the glfs backend: libgfapi and its pkg-config file (libglusterfs-dev, needed
# to build), glusterd and the brick server (glusterfs-server) and the CLI (glusterfs-client)
# for tests/gluster/run.sh. Idempotent; quick when everything is installed. Nothing is
# started at install time (no systemd here); tests/gluster/volume.sh starts glusterd itself.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=""
for pkg in libglusterfs-dev glusterfs-server glusterfs-client pkg-config binutils; do
    case $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) in
        "install ok installed") ;;
        *) need="$need $pkg" ;;
    esac
done
if [ -n "$need" ]; then
    echo "install-gluster-deps: installing:$need" >&2
    apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null
fi
# The brick host of the test volume must be a name that resolves only to 127.0.0.1 (the
# gluster CLI refuses 127.0.0.1 and localhost); /etc/hosts' "localhost" matches LOCALHOST.
getent hosts LOCALHOST | grep -q '^127\.0\.0\.1' || {
    echo "install-gluster-deps: LOCALHOST does not resolve to 127.0.0.1; add '127.0.0.1 localhost' to /etc/hosts" >&2
    exit 1
}
