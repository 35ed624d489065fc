#!/bin/sh
# GlusterFS for the glfs backend: libgfapi and its pkg-config file (libglusterfs-dev, needed
# to build), glusterd and the brick server (glusterfs-server) and the CLI (glusterfs-client)
# for tests/gluster/run.sh. Idempotent; quick when everything is installed. Nothing is
# started at install time (no systemd here); tests/gluster/volume.sh starts glusterd itself.
set -eu
log() { echo "install-gluster-deps: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$(cd "$(dirname "$0")" && pwd)/lib/apt.sh"

apt_ensure libglusterfs-dev glusterfs-server glusterfs-client pkg-config binutils
# The brick host of the test volume must be a name that resolves only to 127.0.0.1 (the
# gluster CLI refuses 127.0.0.1 and localhost); /etc/hosts' "localhost" matches LOCALHOST.
getent hosts LOCALHOST | grep -q '^127\.0\.0\.1' || {
    log "LOCALHOST does not resolve to 127.0.0.1; add '127.0.0.1 localhost' to /etc/hosts"
    exit 1
}
