#!/bin/sh
# The gateway stage (scripts/test.sh): package BINARY twice (the release, and the same build as
# a newer version for the upgrade), then two boots of the systemd guest on one disk:
#   1. install, activation, unit, journal: apt install, DBus activation, the sandbox lets the daemon
#      serve a file LUN, /metrics, status, crash plan, mlock; saveconfig; journald fields
#   2. restore, iscsi, restarts: target configuration restored at boot, the LUN over LIO's
#      iSCSI fabric to open-iscsi, restart/upgrade/kill -9/kill -STOP under fio verify, then
#      apt remove (the backing file stays)
# usage: tests/vm/systemd/gateway.sh [BINARY]   (default target/release/tcmu-warden)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${1:-$repo/target/release/tcmu-warden}
debs=$(mktemp -d "${TMPDIR:-/tmp}/tcmu-warden-debs.XXXXXX")
trap 'rm -rf "$debs"' EXIT
v=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
BINARY=$bin "$repo/scripts/package.sh" "$debs" >/dev/null
BINARY=$bin VERSION="$v+upgrade1" "$repo/scripts/package.sh" "$debs/upgrade" >/dev/null
exec "$here/run.sh" "$debs" install,activation,unit,journal restore,iscsi,restarts,remove
