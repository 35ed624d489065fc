#!/bin/sh
# Install what the DBus service's tests and the targetcli VM scenario need, idempotently:
#  - dbus-daemon, dbus-send and busctl's peers for the host tests (a private bus per test),
#    gdbus (libglib2.0-bin) and python3-dbus (what rtslib's world uses) as callers;
#  - Debian's targetcli-fb with rtslib-fb, configshell-fb and python3-gi: its files are
#    copied into an extra initramfs layer for tests/vm/scenarios/targetcli.sh
#    (tests/vm/layers/targetcli.sh builds and caches it).
# Fast when everything is present. Must run as root (apt-get).
set -eu
log() { echo "install-dbus-deps: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$(cd "$(dirname "$0")" && pwd)/lib/apt.sh"

apt_ensure dbus-daemon dbus-bin libglib2.0-bin python3-dbus python3-gi gir1.2-glib-2.0 \
    targetcli-fb python3-rtslib-fb python3-configshell-fb util-linux
