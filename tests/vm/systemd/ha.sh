#!/bin/bash
# The Ceph iSCSI gateway pair under faults (scripts/test.sh's stage "ceph-ha"): three systemd
# guests on a test network of their own (tests/net/netns.sh, namespace tw-ha) with a throwaway
# Ceph cluster on its bridge:
#   gw0 10.231.0.10, gw1 10.231.0.11  scenario ha-gateway: tcmu-warden under the unit serves the
#                                     same RBD image behind LIO's iSCSI target, set up the way
#                                     ceph-iscsi does (one target IQN, one TPG per gateway,
#                                     ALUA groups ao/ano2; gw0 the configured owner)
#   ini 10.231.0.20                   scenario ha-initiator: open-iscsi to both, dm-multipath
#                                     (prio alua, group_by_prio, no_path_retry queue, failback
#                                     manual), fio crc32c verify at QD16 while gw0's daemon is
#                                     killed, frozen, and its guest powered off
# gw0 gets two boots on one disk: the power-off ends the first, the second sets it up again.
# Prints the initiator's figures as a table (docs/test-services.md §5 explains them); exit 0
# only if every guest's scenario passed and the image is left with no watcher and no lock.
# usage: tests/vm/systemd/ha.sh [BINARY]   (default target/release/tcmu-warden)
# env: HA_NETNS (default tw-ha), HA_WATCH_TIMEOUT (default 15: the test cluster's
#      osd_client_watch_timeout, Ceph's default is 30), HA_FAILOVER_MAX (default 90: seconds
#      from a fault to the next completed write), HA_RETURN_MAX (default 420: seconds for the
#      faulted gateway to serve again, a TCG reboot included)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${1:-$repo/target/release/tcmu-warden}
export TW_NETNS=${HA_NETNS:-tw-ha}
net=$repo/tests/net/netns.sh
addr=10.231.0.1
log() { echo "ha: $*"; }
"$repo/scripts/install-ceph-deps.sh" >/dev/null

t0=$SECONDS
mkdir -p "$here/../.cache"
flock "$here/../.cache/systemd-image.lock" "$here/build-rootfs.sh" >/dev/null &
build=$!
work=$(mktemp -d /var/tmp/tcmu-warden-ha.XXXXXX)
runs=$here/../.cache/runs/ha-$(date +%Y%m%d-%H%M%S)-$$
pids=()
cleanup() {
    set +e
    kill "$build" 2>/dev/null
    # Each guest's run.sh leads a process group of its own (setsid); its qemu runs under a
    # timeout(1), which makes a group of its own: that one is stopped by its PID.
    for p in "${pids[@]}"; do
        for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do kill "$c" 2>/dev/null; done
        kill -- "-$p" 2>/dev/null
    done
    "$repo/tests/ceph/cluster.sh" down "$work/ceph" >/dev/null 2>&1
    "$net" down
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
mkdir -p "$work/debs" "$work/ceph" "$work/extra" "$runs"
"$net" up
for t in tw-gw0 tw-gw1 tw-ini0; do "$net" tap "$t" >/dev/null; done
"$net" exec env CEPH_ADDR="$addr" CEPH_MEMSTORE_MB=1024 "$repo/tests/ceph/cluster.sh" up "$work/ceph" \
    >"$work/ceph.out" 2>&1 &
cpid=$!
BINARY=$bin "$repo/scripts/package.sh" "$work/debs" >/dev/null
wait "$cpid" || { cat "$work/ceph.out"; log "the Ceph cluster did not start"; exit 1; }
conf=$work/ceph/ceph.conf
C=(-c "$conf" --admin-socket= --log-file=/dev/null)
image=rbd/ha-lun
# A test setting, before any client watches the image: the OSD drops a dead client's watch
# after 15 s instead of Ceph's default 30 s, the figure Red Hat's iSCSI gateway guide sets on
# the OSDs of gateway clusters. A killed or frozen gateway's lock can be taken once its watch
# is gone, so this bounds the failover (docs/test-services.md §5, docs/rbd.md).
watch_timeout=${HA_WATCH_TIMEOUT:-15}
"$net" exec timeout 30 ceph "${C[@]}" config set osd osd_client_watch_timeout "$watch_timeout"
got=$("$net" exec timeout 30 ceph "${C[@]}" tell osd.0 config get osd_client_watch_timeout --format json)
echo "$got" | grep -q "\"$watch_timeout\"" || { log "osd_client_watch_timeout not in effect: $got"; exit 1; }
"$net" exec timeout 30 rbd "${C[@]}" create "$image" --size 256M
log "Ceph up on $addr in $((SECONDS - t0)) s (osd_client_watch_timeout $watch_timeout s)"

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
HA_IQN=iqn.2003-01.org.linux-iscsi.warden:ha
HA_SERIAL=7a1c0de0-5e3f-4b1e-9a51-000000000001
HA_GW0=10.231.0.10
HA_GW1=10.231.0.11
HA_CTL_PORT=7070
HA_FAILOVER_MAX=${HA_FAILOVER_MAX:-90}
HA_RETURN_MAX=${HA_RETURN_MAX:-420}
ENV

wait "$build" || { log "building the guest's image failed"; exit 1; }
build=""
# guest NAME TAP ADDR BOOT...: one run.sh in the background, its output in $runs/NAME.out.
guest() {
    local name=$1 tap=$2 a=$3
    shift 3
    VM_OUT=$runs/$name VM_NETNS=$TW_NETNS VM_TAP=$tap VM_NET_ADDR=$a/24 VM_PAYLOAD_EXTRA=$work/extra \
        setsid "$here/run.sh" "$work/debs" "$@" >"$runs/$name.out" 2>&1 &
    pids+=($!)
}
guest gw0 tw-gw0 10.231.0.10 ha-gateway ha-gateway
guest gw1 tw-gw1 10.231.0.11 ha-gateway
guest ini tw-ini0 10.231.0.20 ha-initiator
rc=0
wait "${pids[2]}" || { rc=1; log "ini FAILED"; }
# The initiator tells the gateways "done" as it ends (also when it fails); a gateway still up
# 240 s later is stopped.
for i in 0 1; do
    end=$((SECONDS + 240))
    while kill -0 "${pids[$i]}" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 2; done
    kill -0 "${pids[$i]}" 2>/dev/null && { log "gw$i still running: stopped"; kill -- "-${pids[$i]}"; }
    wait "${pids[$i]}" || { rc=1; log "gw$i FAILED"; }
done
pids=()
for n in gw0 gw1 ini; do sed "s/^/$n: /" "$runs/$n.out"; done

# The figures, one row per fault (ha-initiator's results).
res=$(cat "$runs"/ini/results*.txt 2>/dev/null || true)
v() { echo "$res" | sed -n "s/^$1=//p" | tail -n1; }
echo
printf '%-9s %-10s %-11s %-13s %-11s %-8s %-27s %-27s %-6s %s\n' fault resumed_s failover_s other_path_s \
    path_back_s io_end "rtpg after (via gw1)" "rtpg end (via gw0)" errors fio
for f in kill9 stop poweroff; do
    printf '%-9s %-10s %-11s %-13s %-11s %-8s %-27s %-27s %-6s %s\n' "$f" "$(v "${f}_resumed_s")" "$(v "${f}_failover_s")" \
        "$(v "${f}_other_path_s")" "$(v "${f}_path_back_s")" "$(v "${f}_io_on_end")" \
        "$(v "${f}_rtpg_after" | cut -d';' -f2)" "$(v "${f}_rtpg_end" | cut -d';' -f1)" \
        "$([ -n "$(v "${f}_fio")" ] && echo 0 || echo '?')" "$(v "${f}_fio")"
done
for b in back1 back2 back3; do
    [ -z "$(v "${b}_to_optimized_s")" ] ||
        log "$b: I/O moved to gw0 by hand, gw0 active/optimized after $(v "${b}_to_optimized_s") s ($(v "${b}_fio"))"
done

# From the host: the gateways left no watcher and no lock on the image.
st=$("$net" exec timeout 30 rbd "${C[@]}" status "$image" --format json)
lk=$("$net" exec timeout 30 rbd "${C[@]}" lock ls "$image" --format json)
if echo "$st" | grep -q '"address"' || echo "$lk" | grep -q '"locker"'; then
    log "state left on $image: status $st, locks $lk"
    rc=1
else
    log "host check: $image has no watcher and no lock"
fi
log "logs in $runs; stage took $((SECONDS - t0)) s"
exit $rc
