#!/bin/sh
# The test network: a network namespace with a Linux bridge, where the throwaway Ceph cluster
# and gluster volume listen on the bridge's address and qemu guests join the bridge through tap
# devices. Every guest and service then reaches every other by a plain address (no port relays,
# no NAT): Ceph's monmap and OSD map, and gluster's brick host, advertise addresses the guests
# can use as they are. Nothing leaves the namespace; the host's own network is untouched.
#
#   tests/net/netns.sh up           create the namespace, the bridge and its address (idempotent)
#   tests/net/netns.sh tap NAME     a tap device NAME on the bridge, for qemu's
#                                   -netdev tap,ifname=NAME,script=no,downscript=no (idempotent)
#   tests/net/netns.sh exec CMD...  run CMD inside the namespace (ip netns exec)
#   tests/net/netns.sh down         delete the taps and the namespace (idempotent; processes still
#                                   inside keep their sockets until they exit)
#
# Environment (defaults): TW_NETNS=tw-net, TW_NET_BRIDGE=tw-br0, TW_NET_ADDR=10.231.0.1,
# TW_NET_PREFIX=24. Addresses: .1 the services (host side), .10 and up the guests
# (tests/vm/systemd/run.sh's VM_NET_ADDR), see tests/vm/systemd/README.md.
set -eu
ns=${TW_NETNS:-tw-net}
br=${TW_NET_BRIDGE:-tw-br0}
addr=${TW_NET_ADDR:-10.231.0.1}
prefix=${TW_NET_PREFIX:-24}
die() { echo "netns.sh: $*" >&2; exit 1; }
have_ns() { ip netns list | grep -qw "^$ns"; }

up() {
    have_ns || ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link show "$br" >/dev/null 2>&1 ||
        ip -n "$ns" link add "$br" type bridge stp_state 0 forward_delay 0
    ip -n "$ns" link set "$br" up
    ip -n "$ns" -4 addr show dev "$br" | grep -q " $addr/$prefix " ||
        ip -n "$ns" addr add "$addr/$prefix" dev "$br"
}

tap() {
    have_ns || die "no namespace $ns (run: $0 up)"
    ip -n "$ns" link show "$1" >/dev/null 2>&1 || ip -n "$ns" tuntap add dev "$1" mode tap
    ip -n "$ns" link set "$1" master "$br"
    ip -n "$ns" link set "$1" up
    echo "$1"
}

down() {
    have_ns || return 0
    for t in $(ip -n "$ns" -o link show type tun 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
        ip -n "$ns" link del "$t" 2>/dev/null || true
    done
    ip netns del "$ns"
}

case ${1:-} in
    up) up ;;
    tap) [ -n "${2:-}" ] || die "usage: $0 tap NAME"; tap "$2" ;;
    exec) shift; have_ns || die "no namespace $ns (run: $0 up)"; exec ip netns exec "$ns" "$@" ;;
    down) down ;;
    *) die "usage: $0 up | tap NAME | exec CMD... | down" ;;
esac
