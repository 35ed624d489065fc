#!/bin/bash
# The VM scenario tests/vm/scenarios/glfs.sh against the gluster volume of tests/gluster/volume.sh:
# boots the guest (tests/vm/run-vm.sh) with the volume's name and brick port on the kernel
# command line and gluster's client xlators in the initramfs, and freezes the brick (SIGSTOP)
# for FREEZE_S seconds when the guest's console shows FREEZE-BRICK-NOW (the guest cannot stop
# a host process itself). FREEZE_S 0: plain I/O only.
#
#   tests/gluster/vm.sh DIR BINARY [FREEZE_S]     (DIR: a volume up; default FREEZE_S 12)
#
# Exit status: run-vm.sh's, or 1 when a freeze was asked for and never happened.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:?usage: vm.sh DIR BINARY [FREEZE_S]}
bin=${2:?usage: vm.sh DIR BINARY [FREEZE_S]}
freeze=${3:-12}
log() { echo "gluster-vm: $*" >&2; }
# shellcheck disable=SC1091
. "$dir/env"
vol=$GLUSTER_VOLUME
port=$("$repo/tests/gluster/volume.sh" cli "$dir" --xml volume status "$vol" |
    sed -n 's:.*<port>\([1-9][0-9]*\)</port>.*:\1:p' | head -n 1)
[ -n "$port" ] || { log "no brick port in 'volume status $vol'"; exit 1; }

# gfapi dlopens its translators and the socket transport at run time: the client-side ones
# (not glusterd's mgmt nor the brick's storage xlators) go into the per-run archive.
xl=$(dirname "$(find /usr/lib/x86_64-linux-gnu/glusterfs /usr/lib64/glusterfs /usr/lib/glusterfs \
    -maxdepth 3 -path '*/rpc-transport/socket.so' 2>/dev/null | head -n 1)")
xl=${xl%/rpc-transport}
[ -d "$xl/xlator" ] || { log "gluster's xlator directory not found"; exit 1; }
extra="$xl/rpc-transport $xl/auth $xl/xlator/meta.so $xl/xlator/mount/api.so"
for d in cluster debug features performance protocol system; do
    [ -d "$xl/xlator/$d" ] && extra="$extra $xl/xlator/$d"
done

out="$repo/tests/vm/.cache/runs/$(date +%Y%m%d-%H%M%S)-glfs-$$"
mkdir -p "$out"
brick=""
thaw() { [ -n "$brick" ] && kill -CONT "$brick" 2>/dev/null || true; }
trap thaw EXIT INT TERM
log "volume $vol, brick port $port, freeze ${freeze}s; run in $out"
VM_OUT=$out VM_EXTRA_FILES=$extra VM_APPEND="warden.glfs=$vol:$port:$freeze" \
    "$repo/tests/vm/run-vm.sh" "$bin" "$repo/tests/vm/scenarios/glfs.sh" &
vm=$!
froze=0
if [ "$freeze" -gt 0 ]; then
    while kill -0 "$vm" 2>/dev/null; do
        if grep -q '^FREEZE-BRICK-NOW' "$out/console.log" 2>/dev/null; then
            brick=$("$repo/tests/gluster/volume.sh" brick-pid "$dir")
            t0=$(date +%s.%N)
            kill -STOP "$brick"
            log "brick $brick frozen (SIGSTOP) for ${freeze}s"
            sleep "$freeze"
            kill -CONT "$brick"
            brick=""
            log "brick thawed (SIGCONT) after $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") s"
            froze=1
            break
        fi
        sleep 0.2
    done
fi
rc=0
wait "$vm" || rc=$?
if [ "$freeze" -gt 0 ] && [ "$froze" = 0 ]; then
    log "the guest never asked for the freeze"
    [ "$rc" = 0 ] && rc=1
fi
exit $rc
