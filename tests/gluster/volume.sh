#!/bin/bash
# A throwaway one-brick gluster volume on 127.0.0.1 (or GLUSTER_ADDR), isolated under DIR.
#
#   tests/gluster/volume.sh up DIR     start glusterd (its own volfile, state and sockets under
#                                      DIR), create and start volume $GLUSTER_VOLUME (default
#                                      warden) with network.ping-timeout 5, wait until a gfapi
#                                      client can use it; writes DIR/env (variables to source)
#   tests/gluster/volume.sh down DIR   stop the volume, the brick and glusterd; remove DIR
#   tests/gluster/volume.sh cli DIR ARGS...   run the gluster CLI against this glusterd
#   tests/gluster/volume.sh brick-pid DIR     the brick process's PID
#
# Facts it relies on (docs/test-services.md §2): the CLI refuses 127.0.0.1 and
# localhost as a brick host, but LOCALHOST (resolution is case-insensitive) resolves to
# 127.0.0.1 through /etc/hosts; a brick on the root filesystem needs `force`; glusterd does
# not stop its bricks when it exits; it still creates /var/run/gluster/<hash>.socket and
# /var/lib/glusterd/{geo-replication,ss_brick}, which `down` removes if it created them.
#
# GLUSTER_ADDR (default 127.0.0.1): the address glusterd binds and the brick's host. A volume
# that qemu guests must reach runs inside the test network namespace on its bridge address
# (tests/net/netns.sh, e.g. `tests/net/netns.sh exec env GLUSTER_ADDR=10.231.0.1
# tests/gluster/volume.sh up DIR`): the brick host is then the address itself, which guests
# reach unchanged. `down` must run inside the namespace too (it asks glusterd to stop the volume).
set -euo pipefail
cmd=${1:?usage: volume.sh up|down|cli|brick-pid DIR}
dir=${2:?usage: volume.sh up|down|cli|brick-pid DIR}
vol=${GLUSTER_VOLUME:-warden}
ping=${GLUSTER_PING_TIMEOUT:-5}
addr=${GLUSTER_ADDR:-127.0.0.1}
sock="$dir/run/glusterd.socket"
log() { echo "gluster: $*" >&2; }

cli() { timeout 60 gluster --mode=script --glusterd-sock="$sock" --log-file="$dir/log/cli.log" "$@"; }

wait_for() { # SECONDS DESCRIPTION COMMAND...
    local t=$1 what=$2 i
    shift 2
    for ((i = 0; i < t * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "timed out after ${t}s waiting for $what"
    return 1
}

brick_pid() {
    local p
    for p in "$dir"/run/gluster/vols/"$vol"/*.pid "$dir"/run/vols/"$vol"/*.pid; do
        [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && { cat "$p"; return 0; }
    done
    pgrep -f "glusterfsd.*--volfile-id $vol\." | head -1
}

# glusterd, bricks and helpers started for DIR (not this script: its command line names DIR too).
gluster_pids() { pgrep -f "^(/usr/sbin/)?gluster(d|fsd|fs)? .*$dir" || true; }
no_gluster_pids() { [ -z "$(gluster_pids)" ]; }

brick_online() {
    cli --xml volume status "$vol" | grep -q '<status>1</status>' &&
        cli --xml volume status "$vol" | grep -Eq '<port>[1-9][0-9]*</port>'
}

up() {
    command -v glusterd >/dev/null || { log "glusterd missing: run scripts/install-gluster-deps.sh"; exit 1; }
    # The brick host: LOCALHOST on the loopback (the CLI refuses 127.0.0.1 and localhost), the
    # address itself elsewhere.
    local bhost=$addr
    if [ "$addr" = 127.0.0.1 ]; then
        bhost=LOCALHOST
        getent hosts LOCALHOST | grep -q '^127\.0\.0\.1' || {
            log "LOCALHOST does not resolve to 127.0.0.1 (needed as the brick host)"; exit 1; }
    fi
    if ss -ltn 2>/dev/null | grep -q "$addr:24007 \|\*:24007 \|0.0.0.0:24007 "; then
        log "port 24007 is busy: another glusterd runs (tests/gluster/volume.sh down <its dir>?)"
        exit 1
    fi
    mkdir -p "$dir"/{lib,run,log,brick}
    # Remember what glusterd creates outside DIR, so that down removes only that.
    for d in /var/lib/glusterd/geo-replication /var/lib/glusterd/ss_brick /var/run/gluster/snaps /var/run/gluster; do [ -e "$d" ] || echo "$d" >>"$dir/created"; done
    ls /var/run/gluster/*.socket 2>/dev/null >"$dir/sockets-before" || true
    cat >"$dir/glusterd.vol" <<VOL
volume management
    type mgmt/glusterd
    option working-directory $dir/lib
    option run-directory $dir/run
    option logging-directory $dir/log
    option glusterd-sockfile $sock
    option transport-type socket
    option transport.socket.bind-address $addr
    option transport.socket.listen-port 24007
    option rpc-auth-allow-insecure on
    option base-port 49152
    option max-port 49251
    option ping-timeout 0
    option event-threads 1
end-volume
VOL
    local t0=$SECONDS
    glusterd -f "$dir/glusterd.vol" -p "$dir/glusterd.pid" -l "$dir/log/glusterd.log" --log-level=WARNING
    wait_for 20 "glusterd to answer" cli volume list
    cli volume create "$vol" "$bhost:$dir/brick/b0" force >/dev/null
    cli volume set "$vol" network.ping-timeout "$ping" >/dev/null
    cli volume start "$vol" >/dev/null
    wait_for 30 "the brick to come online" brick_online
    cat >"$dir/env" <<ENV
GLUSTER_DIR=$dir
GLUSTER_VOLUME=$vol
GLUSTER_HOST=$addr
GLUSTER_PING_TIMEOUT=$ping
GLUSTER_SOCK=$sock
ENV
    log "volume $vol up on $addr (brick pid $(brick_pid), $((SECONDS - t0)) s)"
}

down() {
    [ -d "$dir" ] || return 0
    if [ -S "$sock" ]; then
        cli volume stop "$vol" force >/dev/null 2>&1 || true
    fi
    local p
    p=$(brick_pid || true)
    [ -n "$p" ] && { kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; }
    [ -s "$dir/glusterd.pid" ] && kill "$(cat "$dir/glusterd.pid")" 2>/dev/null || true
    for p in $(gluster_pids); do kill "$p" 2>/dev/null || true; done
    wait_for 15 "gluster processes to exit" no_gluster_pids || {
        for p in $(gluster_pids); do kill -9 "$p" 2>/dev/null || true; done
    }
    # Sockets glusterd made in /var/run/gluster during this run.
    for s in /var/run/gluster/*.socket; do
        [ -e "$s" ] || continue
        grep -qxF "$s" "$dir/sockets-before" 2>/dev/null || rm -f "$s"
    done
    if [ -f "$dir/created" ]; then
        while read -r d; do rm -rf "$d"; done <"$dir/created"
    fi
    rm -rf "$dir"
    log "down"
}

case $cmd in
    up) up ;;
    down) down ;;
    cli) shift 2; cli "$@" ;;
    brick-pid) brick_pid ;;
    *) echo "usage: volume.sh up|down|cli|brick-pid DIR" >&2; exit 2 ;;
esac
