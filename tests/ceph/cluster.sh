#!/bin/bash
# A throwaway single-node Ceph cluster (one mon, one memstore OSD, one mgr for the service
# map) on 127.0.0.1 (or CEPH_ADDR), all of its state under DIR. Facts this relies on:
# docs/test-services.md §3 (and
# tests/ceph/README.md).
#
#   tests/ceph/cluster.sh up DIR     start; prints the conf path; DIR/ceph.conf, DIR/env
#   tests/ceph/cluster.sh down DIR   stop the daemons by PID and wait until they are gone
#
# Environment: CEPH_PORT_BASE (default 13300): the mon listens on BASE (v2) and BASE+1 (v1),
# the OSD in BASE+100..BASE+199; CEPH_MEMSTORE_MB (default 3072); CEPH_ADDR (default 127.0.0.1)
# the address every daemon binds and the maps advertise, CEPH_NETWORK (default 127.0.0.0/8, or
# CEPH_ADDR's /24) the public and cluster network. A cluster that qemu guests must reach runs
# inside the test network namespace on its bridge address (tests/net/netns.sh, e.g.
# `tests/net/netns.sh exec env CEPH_ADDR=10.231.0.1 tests/ceph/cluster.sh up DIR`); `down`
# works from anywhere (by PID).
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down DIR" >&2; exit 2; }
base=${CEPH_PORT_BASE:-13300}
T="timeout 30"
addr=${CEPH_ADDR:-127.0.0.1}
if [ "$addr" = 127.0.0.1 ]; then net=${CEPH_NETWORK:-127.0.0.0/8}; else net=${CEPH_NETWORK:-${addr%.*}.0/24}; fi

log() { echo "cluster.sh: $*" >&2; }

stop_pidfile() {
    local f=$1 pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    kill -CONT "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

down() {
    stop_pidfile "$dir/run/mgr.x.pid"
    stop_pidfile "$dir/run/osd.0.pid"
    stop_pidfile "$dir/run/mon.a.pid"
    # memstore data and logs are worth nothing once stopped; keep the logs for a post-mortem.
    rm -rf "$dir/osd.0" "$dir/mon.a" "$dir/mgr.x"
}

up() {
    mkdir -p "$dir/run" "$dir/log"
    dir=$(cd "$dir" && pwd)
    local conf=$dir/ceph.conf keyring=$dir/keyring fsid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:$addr:$base,v1:$addr:$((base + 1))]
public addr = $addr
cluster addr = $addr
public network = $net
cluster network = $net
ms bind ipv6 = false
ms bind port min = $((base + 100))
ms bind port max = $((base + 199))
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $keyring
run dir = $dir/run
admin socket = $dir/run/\$cluster-\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd pool default read lease ratio = 5
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
paxos propose interval = 0.1
mon data avail warn = 1
mon data avail crit = 0
client mount timeout = 20
[mon]
mon data = $dir/mon.\$id
[mgr]
mgr data = $dir/mgr.\$id
# The service map is all the tests need of the mgr: no dashboard.
mgr initial modules =
[osd]
osd data = $dir/osd.\$id
osd objectstore = memstore
memstore device bytes = $(( ${CEPH_MEMSTORE_MB:-3072} * 1024 * 1024 ))
memstore page set = true
osd op num shards = 2
osd op num threads per shard = 1
CONF
    rm -f "$keyring"
    ceph-authtool --create-keyring "$keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool "$keyring" --gen-key -n osd.0 \
        --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
    ceph-authtool "$keyring" --gen-key -n mgr.x \
        --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
    # A user whose caps allow RBD I/O but not blocklist maintenance.
    ceph-authtool "$keyring" --gen-key -n client.rbdonly \
        --cap mon 'profile rbd' --cap osd 'profile rbd' >/dev/null
    monmaptool --create --fsid "$fsid" \
        --addv a "[v2:$addr:$base,v1:$addr:$((base + 1))]" "$dir/monmap" >/dev/null
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$keyring" >/dev/null
    ceph-mon -c "$conf" -i a
    local c="ceph -c $conf --connect-timeout 10"
    $T $c -s >/dev/null
    $T $c osd pool create rbd 8 8 >/dev/null 2>&1
    # The mgr (the service map) starts in the background; tests that need it wait for it.
    mkdir -p "$dir/mgr.x"
    ceph-mgr -c "$conf" -i x 2>"$dir/log/mgr-start.err" || { cat "$dir/log/mgr-start.err" >&2; exit 1; }
    local uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    local id
    id=$($T $c osd new "$uuid" 0)
    [ "$id" = 0 ] || { log "osd new gave id $id"; exit 1; }
    mkdir -p "$dir/osd.0"
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >/dev/null 2>&1
    # ceph-osd prints a line on stderr before it daemonizes; keep it out of the test log.
    ceph-osd -c "$conf" -i 0 2>"$dir/log/osd-start.err" || { cat "$dir/log/osd-start.err" >&2; exit 1; }
    # `rbd pool init` returns once the data path works.
    $T rbd -c "$conf" pool init rbd
    $T $c osd pool create rbd2 8 8 >/dev/null 2>&1
    $T rbd -c "$conf" pool init rbd2
    $T rbd -c "$conf" namespace create rbd/ns1
    cat >"$dir/env" <<ENV
CEPH_CONF=$conf
TCMU_RBD_CONF=$conf
ENV
    echo "$conf"
}

case $cmd in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down DIR" >&2; exit 2 ;;
esac
