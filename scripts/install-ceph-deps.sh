#!/bin/sh
# Install what the RBD backend's build and its tests against a throwaway single-node Ceph
# cluster (tests/ceph/) need, from Debian packages, idempotently (quick when done):
#  - build: librbd-dev, librados-dev (headers; Debian ships no pkg-config file for them)
#  - tests: ceph-mon, ceph-osd, ceph-mgr, ceph-common (the rbd/rados/ceph CLIs and
#    python3-rbd/python3-rados, used to leave a frozen watcher behind)
# Must run as root (apt-get).
set -eu
export DEBIAN_FRONTEND=noninteractive
log() { echo "install-ceph-deps: $*" >&2; }

need=""
for pkg in ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev python3-rbd python3-rados; do
    case $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) in
        "install ok installed") ;;
        *) need="$need $pkg" ;;
    esac
done
[ -z "$need" ] && exit 0
log "installing:$need"
apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null
log "ok"
