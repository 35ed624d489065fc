#!/bin/bash
# The VM scenario tests/vm/scenarios/rbd.sh against the cluster of tests/ceph/cluster.sh:
# creates an image, boots the guest (tests/vm/run-vm.sh) with the image, its size and the
# ports to forward on the kernel command line, a client ceph.conf + keyring and librados'
# plugins in the initramfs, and breaks the image's exclusive lock with blocklisting when the
# guest's console shows BREAK-LOCK-NOW (the guest cannot reach the cluster's admin side
# itself): the locker found by `rbd lock ls` must be the watcher `rbd status` lists (the
# guest daemon's client), and `rbd lock rm` blocklists its address.
#
#   tests/ceph/vm.sh DIR BINARY [BREAK]     (DIR: a cluster up; BREAK 1 (default) or 0)
#
# Exit status: run-vm.sh's, or 1 when a break was asked for and did not happen, or the
# daemon's old blocklist entry is still there afterwards.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:?usage: vm.sh DIR BINARY [BREAK]}
bin=${2:?usage: vm.sh DIR BINARY [BREAK]}
brk=${3:-1}
conf=$dir/ceph.conf
log() { echo "ceph-vm: $*" >&2; }
# The CLI tools share client.admin's admin socket path with the tests' clients: none here.
C=(-c "$conf" --admin-socket= --log-file=/dev/null)
T="timeout 30"

# Ports the guest must reach as its own 127.0.0.1:PORT: the mon's (v2, v1) from the
# conf, and every address of the OSD map (public and cluster, v2 and v1; the client only
# uses the public ones). The addresses in the maps then work unchanged in the guest.
ports=$(sed -n 's/^mon host = //p' "$conf" | grep -o '127\.0\.0\.1:[0-9]*' | cut -d: -f2)
ports="$ports $($T ceph "${C[@]}" osd dump | grep '^osd\.' | grep -o '127\.0\.0\.1:[0-9]*' | cut -d: -f2)"
ports=$(echo "$ports" | tr ' ' '\n' | grep . | sort -un | paste -sd, -)
[ "$(echo "$ports" | tr , '\n' | wc -l)" -ge 3 ] || { log "could not find the mon and OSD ports ($ports)"; exit 1; }

pool=rbd
image=vm-$$-$RANDOM
size_mb=64
$T rbd "${C[@]}" create "$pool/$image" --size "${size_mb}M"

# The guest's /etc/ceph: the cluster's fsid and mon addresses, client.admin's key, logs on
# the guest's /tmp, no admin socket.
root=$(mktemp -d /tmp/ceph-vm-root.XXXXXX)
out="$repo/tests/vm/.cache/runs/$(date +%Y%m%d-%H%M%S)-rbd-$$"
mkdir -p "$out" "$root/etc/ceph"
vm=""
cleanup() {
    [ -n "$vm" ] && kill "$vm" 2>/dev/null || true
    rm -rf "$root"
    $T rbd "${C[@]}" rm --no-progress "$pool/$image" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
cat >"$root/etc/ceph/ceph.conf" <<CONF
[global]
fsid = $(sed -n 's/^fsid = //p' "$conf")
mon host = $(sed -n 's/^mon host = //p' "$conf")
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = /etc/ceph/keyring
ms bind ipv6 = false
admin socket =
log file = /tmp/ceph-client.log
client mount timeout = 20
CONF
printf '[client.admin]\n\tkey = %s\n' "$(ceph-authtool "$dir/keyring" -n client.admin -p)" \
    >"$root/etc/ceph/keyring"

# librados and librbd dlopen compressor and crypto plugins from here at run time; the
# libraries they link (libceph-common etc.) come with them.
lib=$(dirname "$(ldd "$bin" | awk '$1 ~ /^libceph-common/ { print $3 }')")
[ -d "$lib/compressor" ] || { log "ceph's plugin directory not found (libceph-common in '$lib')"; exit 1; }
extra="$lib/compressor $lib/crypto"

log "image $pool/$image (${size_mb} MiB), forwarding $ports, break the lock: $brk; run in $out"
VM_OUT=$out VM_EXTRA_FILES=$extra VM_EXTRA_ROOT=$root \
    VM_APPEND="warden.rbd=$pool/$image:$size_mb:$ports:$brk" \
    "$repo/tests/vm/run-vm.sh" "$bin" "$repo/tests/vm/scenarios/rbd.sh" &
vm=$!
broke=0 victim=""
if [ "$brk" = 1 ]; then
    while kill -0 "$vm" 2>/dev/null; do
        if grep -q '^BREAK-LOCK-NOW' "$out/console.log" 2>/dev/null; then
            # The guest daemon is the only client of the image: its watcher is the one
            # `rbd status` lists, and it must be the lock's holder.
            for _ in $(seq 50); do
                watcher=$($T rbd "${C[@]}" status "$pool/$image" --format json |
                    python3 -c 'import json,sys; w=json.load(sys.stdin)["watchers"]; print(w[0]["address"] if len(w) == 1 else "")')
                lock=$($T rbd "${C[@]}" lock ls "$pool/$image" --format json |
                    python3 -c 'import json,sys; l=json.load(sys.stdin); print("%s\t%s\t%s" % (l[0]["id"], l[0]["locker"], l[0]["address"]) if l else "")')
                [ -n "$watcher" ] && [ -n "$lock" ] && break
                sleep 0.2
            done
            [ -n "$lock" ] || { log "the guest's daemon holds no lock on $pool/$image"; break; }
            IFS=$'\t' read -r id locker addr <<<"$lock"
            [ "$addr" = "$watcher" ] || { log "the locker $locker at $addr is not the watcher $watcher"; break; }
            t0=$(date +%s.%N)
            $T rbd "${C[@]}" lock rm "$pool/$image" "$id" "$locker"
            log "lock '$id' of $locker at $addr broken with blocklisting in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") s"
            # No check that $addr is on the blocklist now: the daemon may already have
            # reopened and removed its own entry. The guest checks that it was blocklisted.
            victim=$addr
            broke=1
            break
        fi
        sleep 0.2
    done
fi
rc=0
wait "$vm" || rc=$?
vm=""
if [ "$brk" = 1 ]; then
    if [ "$broke" = 0 ]; then
        log "the lock was never broken"
        rc=1
    elif $T ceph "${C[@]}" osd blocklist ls 2>&1 | grep -q "^$victim"; then
        log "the daemon's old address $victim is still on the blocklist"
        rc=1
    else
        log "the daemon's old address $victim is off the blocklist again (removed by the daemon)"
    fi
fi
exit $rc
