#!/bin/sh
# Install what the RBD backend's build and its tests against a throwaway single-node Ceph
# cluster (tests/ceph/) need, from Debian packages, idempotently (quick when done):
#  - build: librbd-dev, librados-dev (headers; Debian ships no pkg-config file for them)
#  - tests: ceph-mon, ceph-osd, ceph-mgr, ceph-common (the rbd/rados/ceph CLIs and
#    python3-rbd/python3-rados, used to leave a frozen watcher behind)
# Must run as root (apt-get).
set -eu
log() { echo "install-ceph-deps: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$(cd "$(dirname "$0")" && pwd)/lib/apt.sh"

apt_ensure ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev python3-rbd python3-rados
