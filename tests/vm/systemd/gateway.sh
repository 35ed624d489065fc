#!/bin/bash
# The gateway stage (scripts/test.sh): package BINARY twice (the release, and the same build as
# a newer version for the upgrade), start the test network (tests/net/netns.sh) with a
# throwaway Ceph cluster and gluster volume on its bridge, then two boots of the systemd guest
# on one disk, the guest on the bridge:
#   1. install, activation, unit, journal: apt install, DBus activation, the sandbox lets the daemon
#      serve a file LUN, /metrics, status, crash plan, mlock; saveconfig; journald fields
#   2. restore, remote, iscsi, restarts, remove: target configuration restored at boot; rbd and
#      glfs LUNs on the host's clusters (fio verify, a restart under load, no watcher or lock
#      left after remove + stop); the LUN over LIO's iSCSI fabric to open-iscsi;
#      restart/upgrade/kill -9/kill -STOP under fio verify, then apt remove (the backing file
#      stays)
# Afterwards the host checks that the guest left no watcher and no lock on the image.
# usage: tests/vm/systemd/gateway.sh [BINARY]   (default target/release/tcmu-warden)
# env: GW_NET_ADDR (default 10.231.0.1) the services' address on the bridge, GW_GUEST_ADDR
#      (default 10.231.0.10/24) the guest's; GW_BOOTS (space-separated, default the two boots
#      above) other boots, e.g. GW_BOOTS=install,unit,remote to try one scenario
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${1:-$repo/target/release/tcmu-warden}
net=$repo/tests/net/netns.sh
addr=${GW_NET_ADDR:-10.231.0.1}
guest=${GW_GUEST_ADDR:-10.231.0.10/24}
tap=tw-gw0
log() { echo "gateway: $*"; }
"$repo/scripts/install-ceph-deps.sh" >/dev/null
"$repo/scripts/install-gluster-deps.sh" >/dev/null

t0=$SECONDS
# The guest's image (cached; minutes when the inputs changed) is built while the rest starts.
mkdir -p "$here/../.cache"
flock "$here/../.cache/systemd-image.lock" "$here/build-rootfs.sh" >/dev/null &
build=$!
work=$(mktemp -d /var/tmp/tcmu-warden-gw.XXXXXX)
cleanup() {
    set +e
    kill "$build" 2>/dev/null
    "$net" exec env GLUSTER_ADDR="$addr" "$repo/tests/gluster/volume.sh" down "$work/gluster" >/dev/null 2>&1
    "$repo/tests/ceph/cluster.sh" down "$work/ceph" >/dev/null 2>&1
    "$net" down
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$work/debs" "$work/ceph" "$work/extra"
v=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
BINARY=$bin "$repo/scripts/package.sh" "$work/debs" >/dev/null
BINARY=$bin VERSION="$v+upgrade1" "$repo/scripts/package.sh" "$work/debs/upgrade" >/dev/null

# The network and the services on it, started side by side.
TW_NET_ADDR=$addr "$net" up
"$net" tap "$tap" >/dev/null
"$net" exec env CEPH_ADDR="$addr" CEPH_MEMSTORE_MB=1024 "$repo/tests/ceph/cluster.sh" up "$work/ceph" \
    >"$work/ceph.out" 2>&1 &
cpid=$!
"$net" exec env GLUSTER_ADDR="$addr" "$repo/tests/gluster/volume.sh" up "$work/gluster" \
    >"$work/gluster.out" 2>&1 &
gpid=$!
wait "$cpid" || { cat "$work/ceph.out"; log "the Ceph cluster did not start"; exit 1; }
wait "$gpid" || { cat "$work/gluster.out"; log "the gluster volume did not start"; exit 1; }
conf=$work/ceph/ceph.conf
C=(-c "$conf" --admin-socket= --log-file=/dev/null)
image=rbd/gw-lun
"$net" exec timeout 30 rbd "${C[@]}" create "$image" --size 256M
log "services up on $addr in $((SECONDS - t0)) s (Ceph mon $(sed -n 's/^mon host = //p' "$conf"), gluster volume warden)"

# What the guest gets in ./extra: a client ceph.conf, client.admin's keyring, the LUNs' names.
cat >"$work/extra/ceph.conf" <<CONF
[global]
fsid = $(sed -n 's/^fsid = //p' "$conf")
mon host = $(sed -n 's/^mon host = //p' "$conf")
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = /etc/ceph/keyring
ms bind ipv6 = false
client mount timeout = 20
CONF
printf '[client.admin]\n\tkey = %s\n' "$(ceph-authtool "$work/ceph/keyring" -n client.admin -p)" \
    >"$work/extra/keyring"
cat >"$work/extra/env" <<ENV
RBD_IMAGE=$image
RBD_SIZE_MB=256
GLFS_VOLUME=warden
GLFS_HOST=$addr
ENV

wait "$build" || { log "building the guest's image failed"; exit 1; }
build=""
rc=0
# shellcheck disable=SC2086 # GW_BOOTS is a word list
VM_NETNS=${TW_NETNS:-tw-net} VM_TAP=$tap VM_NET_ADDR=$guest VM_PAYLOAD_EXTRA=$work/extra \
    "$here/run.sh" "$work/debs" ${GW_BOOTS:-install,activation,unit,journal restore,remote,iscsi,restarts,remove} || rc=$?

# From the host: the image the guest served carries no watcher and no lock.
st=$("$net" exec timeout 30 rbd "${C[@]}" status "$image" --format json)
lk=$("$net" exec timeout 30 rbd "${C[@]}" lock ls "$image" --format json)
if echo "$st" | grep -q '"address"' || echo "$lk" | grep -q '"locker"'; then
    log "the guest left state on $image: status $st, locks $lk"
    rc=1
else
    log "host check: $image has no watcher and no lock"
fi
log "stage took $((SECONDS - t0)) s"
exit $rc
