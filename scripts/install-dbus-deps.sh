#!/bin/sh
# Install what the DBus service's tests and the targetcli VM scenario need, idempotently:
#  - dbus-daemon, dbus-send and busctl's peers for the host tests (a private bus per test),
#    gdbus (libglib2.0-bin) and python3-dbus (what rtslib's world uses) as callers;
#  - Debian's targetcli-fb with rtslib-fb, configshell-fb and python3-gi: its files are
#    copied into an extra initramfs layer for tests/vm/scenarios/targetcli.sh
#    (tests/vm/layers/targetcli.sh builds and caches it).
# Fast when everything is present. Must run as root (apt-get).
set -eu
export DEBIAN_FRONTEND=noninteractive
log() { echo "install-dbus-deps: $*" >&2; }

need=""
for pkg in dbus-daemon dbus-bin libglib2.0-bin python3-dbus python3-gi gir1.2-glib-2.0 \
    targetcli-fb python3-rtslib-fb python3-configshell-fb util-linux; do
    case $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) in
        "install ok installed") ;;
        *) need="$need $pkg" ;;
    esac
done
[ -n "$need" ] || exit 0
log "installing:$need"
apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null
