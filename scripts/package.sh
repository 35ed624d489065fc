#!/bin/sh
# Build the Debian package tcmu-warden_<version>_<arch>.deb with dpkg-deb.
#
# usage: scripts/package.sh [OUT_DIR]        (default: target/debian)
# env:   BINARY=path   package this build instead of `cargo build --release -p tcmu-warden`
#        VERSION=v     package version (default: the workspace version); tests build a newer
#                      one to exercise an upgrade
# Prints the path of the .deb. Needs dpkg-dev (dpkg-shlibdeps) and gzip: scripts/setup.sh.
#
# Contents: /usr/sbin/tcmu-warden, the systemd unit, the DBus policy and activation files,
# modules-load.d, tcmu-warden(8) generated from the clap definition (handler/examples/man.rs),
# the example configuration and README under /usr/share/doc/tcmu-warden. Conflicts with
# tcmu-runner (one TCMU handler per host). Maintainer scripts: enable and start on install,
# restart on upgrade, stop and disable on remove; backing files (/var/lib/tcmu-warden or
# wherever the cfgstrings point) are never touched, not even by purge.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=${1:-$repo/target/debian}
log() { echo "package: $*" >&2; }

ws_version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
version=${VERSION:-$ws_version}
arch=$(dpkg --print-architecture)
if [ -z "${BINARY:-}" ]; then
    log "cargo build --release -p tcmu-warden"
    cargo build -q --release -p tcmu-warden
    BINARY=target/release/tcmu-warden
fi
[ -x "$BINARY" ] || { log "no binary at $BINARY"; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/tcmu-warden-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
doc="$root/usr/share/doc/tcmu-warden"
install -d "$root/DEBIAN" "$root/usr/sbin" "$root/lib/systemd/system" \
    "$root/usr/lib/modules-load.d" "$root/usr/share/dbus-1/system.d" \
    "$root/usr/share/dbus-1/system-services" "$root/usr/share/man/man8" "$doc/examples"
install -m 0755 "$BINARY" "$root/usr/sbin/tcmu-warden"
strip --strip-unneeded "$root/usr/sbin/tcmu-warden"
install -m 0644 systemd/tcmu-warden.service "$root/lib/systemd/system/"
install -m 0644 systemd/modules-load.d/tcmu-warden.conf "$root/usr/lib/modules-load.d/"
install -m 0644 systemd/org.kernel.TCMUService1.conf "$root/usr/share/dbus-1/system.d/"
install -m 0644 systemd/org.kernel.TCMUService1.service "$root/usr/share/dbus-1/system-services/"
install -m 0644 etc/config.toml.example "$doc/examples/config.toml"
install -m 0644 README.md "$doc/README.md"
install -m 0644 systemd/README.md "$doc/systemd.md"
gzip -9n "$doc/README.md" "$doc/systemd.md"
# The dev profile: `cargo test` has built the example and its dev-dependencies already.
cargo run -q -p tcmu-warden --example man >"$root/usr/share/man/man8/tcmu-warden.8"
gzip -9n "$root/usr/share/man/man8/tcmu-warden.8"
cat >"$doc/copyright" <<'TXT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tcmu-warden
License: Apache-2.0

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
TXT

# Shared-library dependencies, as dpkg-shlibdeps finds them (librbd1, librados2, libgfapi0 ...).
mkdir -p "$stage/shlibs/debian"
printf 'Source: tcmu-warden\n\nPackage: tcmu-warden\nArchitecture: any\n' >"$stage/shlibs/debian/control"
depends=$(cd "$stage/shlibs" && dpkg-shlibdeps -O "$root/usr/sbin/tcmu-warden" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { log "dpkg-shlibdeps found no dependencies"; exit 1; }

cat >"$root/DEBIAN/control" <<CTL
Package: tcmu-warden
Version: $version
Architecture: $arch
Maintainer: tcmu-warden developers <tcmu-warden@localhost>
Installed-Size: $(du -sk "$root" --exclude=DEBIAN | cut -f1)
Depends: $depends, kmod
Recommends: targetcli-fb
Suggests: open-iscsi, multipath-tools
Conflicts: tcmu-runner
Section: admin
Priority: optional
Description: userspace handler for LIO TCMU backstores (user:file, user:rbd, user:glfs)
 tcmu-warden serves the LIO target's user-backed storage objects (target_core_user):
 file, Ceph RBD and GlusterFS backing stores, as a drop-in for tcmu-runner. It is
 started by systemd at boot before the saved target configuration is restored,
 or through DBus activation when targetcli asks for org.kernel.TCMUService1.
CTL

cat >"$root/DEBIAN/postinst" <<'SH'
#!/bin/sh
# tcmu-warden postinst: load the module, tell systemd and dbus about the new files, enable and
# start the daemon on a first install, restart it on an upgrade (the kernel queues I/O while
# it is down and the new daemon picks the rings up again).
set -e
if [ "$1" = configure ]; then
    modprobe target_core_user 2>/dev/null || true
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl reload dbus.service 2>/dev/null || true
    fi
    if [ -z "$2" ]; then
        systemctl enable tcmu-warden.service >/dev/null 2>&1 || true
        [ -d /run/systemd/system ] && systemctl start tcmu-warden.service || true
    elif [ -d /run/systemd/system ]; then
        systemctl restart tcmu-warden.service || true
    fi
fi
exit 0
SH
cat >"$root/DEBIAN/prerm" <<'SH'
#!/bin/sh
# tcmu-warden prerm: on removal stop and disable the daemon; an upgrade keeps it running
# until postinst restarts the new binary. Backing files are never touched.
set -e
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop tcmu-warden.service || true
    fi
    systemctl disable tcmu-warden.service >/dev/null 2>&1 || true
fi
exit 0
SH
cat >"$root/DEBIAN/postrm" <<'SH'
#!/bin/sh
# tcmu-warden postrm: forget the unit. /var/lib/tcmu-warden holds backing files (data): it is
# left alone on remove and on purge.
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    [ -d /run/systemd/system ] && systemctl daemon-reload || true
fi
exit 0
SH
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/tcmu-warden_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
log "built $deb ($(du -k "$deb" | cut -f1) KiB)"
echo "$deb"
