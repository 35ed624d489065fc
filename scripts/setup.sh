#!/bin/sh
# Install everything tcmu-warden's build, tests and demo need on a fresh Debian 12 machine,
# as root, from Debian packages (and crates through cargo). Idempotent and quick when done.
#   - build: gcc and the kernel UAPI headers the tcmu-sys layout test compiles against
#   - tests: systemd-analyze (unit verification), prometheus (promtool and a real server
#     scraping /metrics in supervisor/tests)
#   - VM harness: qemu, busybox-static, fio, sg3-utils, cpio and Debian's cloud kernel
#     (scripts/install-vm-deps.sh)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "setup: $*" >&2; }
# shellcheck source=scripts/lib/apt.sh
. "$repo/scripts/lib/apt.sh"

command -v cargo >/dev/null 2>&1 || {
    log "cargo not found: this machine kind ships a Rust toolchain (rustup); put ~/.cargo/bin on PATH"
    exit 1
}

apt_ensure gcc libc6-dev linux-libc-dev systemd prometheus
"$repo/scripts/install-vm-deps.sh"
# Backend services and tools, each with its own script (gluster, ceph, dbus/targetcli).
for extra in "$repo"/scripts/install-*-deps.sh; do
    [ "$extra" = "$repo/scripts/install-vm-deps.sh" ] || "$extra"
done
log "ok"
