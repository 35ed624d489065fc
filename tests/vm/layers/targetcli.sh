#!/bin/sh
# Build (once, cached) the initramfs layer a scenario with "# vm-layer: targetcli" needs:
# Debian's targetcli-fb with rtslib-fb, configshell-fb and python3-gi, the python3.11
# interpreter and the part of its standard library they use, dbus-daemon with a system-bus
# configuration, tcmu-warden's DBus policy file, a minimal /etc/passwd. Everything is copied
# from this host's installed packages (scripts/install-dbus-deps.sh installs them).
# Prints the path of the cpio archive (uncompressed, appended to the initrd by run-vm.sh).
#
# usage: layers/targetcli.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache="$here/../.cache"
die() { echo "layer targetcli: $*" >&2; exit 1; }
. "$here/lib.sh"

for t in python3.11 dbus-daemon targetcli cpio ldd; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-dbus-deps.sh"
done
py=/usr/lib/python3.11
dist=/usr/lib/python3/dist-packages
# What targetcli imports (ui_*.py, rtslib_fb, configshell_fb): the packages, not the rest
# of dist-packages.
modules="targetcli rtslib_fb configshell_fb six.py pyparsing urwid pyudev gi"
policy=$repo/systemd/org.kernel.TCMUService1.conf
[ -f "$policy" ] || die "no $policy"

stamp=$( {
    cat "$0" "$here/lib.sh" "$policy"
    dpkg-query -W -f='${Package} ${Version}\n' targetcli-fb python3-rtslib-fb \
        python3-configshell-fb python3-gi python3.11-minimal libpython3.11-stdlib dbus-daemon \
        gir1.2-glib-2.0 2>/dev/null
} | sha256sum | cut -c1-16)
# Our own name in the shared cache (never base-*.cpio, which build-initramfs.sh manages).
out="$cache/layer-targetcli-$stamp.cpio"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
echo "layer targetcli: building $out" >&2
stage=$(mktemp -d "$cache/layer-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# Interpreter and standard library (without tests, tk, the static library, 2to3).
mkdir -p "$stage/usr/bin" "$stage$py" "$stage$dist" "$stage/usr/lib/x86_64-linux-gnu"
cp -L /usr/bin/python3.11 "$stage/usr/bin/python3.11"
ln -s python3.11 "$stage/usr/bin/python3"
(cd "$py" && tar -cf - --exclude=./test --exclude=./idlelib --exclude=./tkinter \
    --exclude=./turtledemo --exclude=./ensurepip --exclude=./lib2to3 --exclude=./pydoc_data \
    --exclude='./config-3.11-*' --exclude=./sitecustomize.py --exclude=./site-packages \
    --exclude=./dist-packages --exclude=./venv .) | (cd "$stage$py" && tar -xf -)
for m in $modules; do cp -a "$dist/$m" "$stage$dist/"; done
mkdir -p "$stage$dist/__pycache__"
cp -a "$dist"/__pycache__/six.* "$stage$dist/__pycache__/" 2>/dev/null || true
cp -a /usr/lib/x86_64-linux-gnu/girepository-1.0 "$stage/usr/lib/x86_64-linux-gnu/"
cp -L /usr/bin/targetcli "$stage/usr/bin/targetcli"
cp -L "$(command -v dbus-daemon)" "$stage/usr/bin/dbus-daemon"

# Libraries of every ELF in the layer (extension modules, gi, dbus-daemon), and libudev
# (pyudev loads it with ctypes).
elfs=$(find "$stage" -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) | while read -r f; do
    head -c 4 "$f" | grep -q ELF && echo "$f"; done)
libs=$( { for f in $elfs; do elf_libs "$f"; done; ls /usr/lib/x86_64-linux-gnu/libudev.so.1; } | sort -u)
for l in $libs; do
    mkdir -p "$stage$(dirname "$l")"
    cp -L "$l" "$stage$l"
done

# A system bus as Debian configures one, minus the user switch and the pid file; policy
# files from /usr/share/dbus-1/system.d (ours).
# rtslib-fb sets the kernel's dbroot to Debian's /etc/rtslib-fb-target and refuses to run without it.
mkdir -p "$stage/usr/share/dbus-1/system.d" "$stage/etc/dbus-1" "$stage/run/dbus" "$stage/var" \
    "$stage/etc/rtslib-fb-target"
cp "$policy" "$stage/usr/share/dbus-1/system.d/"
cat >"$stage/etc/dbus-1/vm-system.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
CONF
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
printf '%s\n' 5d0c2a2f4b7e4b9a9e0f3f3d5a6b7c8d >"$stage/etc/machine-id"
ln -s ../run "$stage/var/run"

(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
# Older versions of this layer only (never anything else in the shared cache).
for old in "$cache"/layer-targetcli-*.cpio; do
    [ "$old" = "$out" ] || rm -f "$old"
done
echo "layer targetcli: $(du -m "$out" | cut -f1) MB" >&2
echo "$out"
