#!/bin/sh
# Build the guest initramfs: a cached base archive (busybox, kernel modules, fio, sg3-utils
# and their libraries) plus a small per-run archive (handler binary, /init, lib.sh,
# scenarios, config). Concatenated newc archives unpack in order, later entries win.
#
# usage: [VM_EXTRA_FILES="PATH..."] [VM_EXTRA_ROOT=DIR] build-initramfs.sh OUT BINARY|none CONFIG_FILE SCENARIO...
#   OUT          initrd to write (base + per-run)
#   BINARY       tcmu-warden to put at /bin/tcmu-warden, or "none"
#   CONFIG_FILE  shell fragment copied to /vm/config (sourced by /init)
#   SCENARIO     busybox-sh scripts, run in the order given
# The base is uncompressed on purpose: gunzip under TCG costs ~1.5 s per boot.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"
kdir="$cache/kernel/current"

die() { echo "build-initramfs: $*" >&2; exit 1; }
[ $# -ge 4 ] || die "usage: $0 OUT BINARY|none CONFIG_FILE SCENARIO..."
out=$1 binary=$2 config=$3
shift 3

[ -e "$kdir/vmlinuz" ] || die "no kernel in $kdir: run scripts/install-vm-deps.sh"
for t in busybox fio sg_inq cpio ldd; do
    command -v "$t" >/dev/null || die "$t missing: run scripts/install-vm-deps.sh"
done

# Modules the guest loads, in this order after dependency resolution.
# sg: the SCSI generic nodes sg3-utils tools such as sg_xcopy open (scenarios/xcopy.sh).
WANT_MODULES="configfs scsi_common scsi_mod sd_mod sg uio target_core_mod target_core_user
target_core_file target_core_iblock target_core_pscsi tcm_loop iscsi_target_mod virtio_pci
virtio_net"

# Host programs copied into the guest with their shared libraries.
host_programs() {
    command -v fio
    ls /usr/bin/sg_*
}

# Print the path of module $1 (names use '_', files may use '-').
module_path() {
    alt=$(echo "$1" | tr _ -)
    p=$(find "$kdir/modules/kernel" \( -name "$1.ko" -o -name "$alt.ko" \) | head -n1)
    [ -n "$p" ] || die "module $1 not found under $kdir/modules (compressed modules unsupported)"
    echo "$p"
}

# Dependency order without kmod: read depends= from each module's .modinfo section.
ordered=""
add_module() {
    case " $ordered " in *" $1 "*) return 0 ;; esac
    if grep -qx "kernel/.*/$1.ko" "$kdir/modules/modules.builtin" 2>/dev/null ||
       grep -qx "kernel/.*/$(echo "$1" | tr _ -).ko" "$kdir/modules/modules.builtin" 2>/dev/null; then
        return 0   # built in
    fi
    deps=$(tr '\0' '\n' <"$(module_path "$1")" | sed -n 's/^depends=//p' | tr , ' ')
    for d in $deps; do add_module "$d"; done
    ordered="$ordered $1"
}
for m in $WANT_MODULES; do add_module "$m"; done

# Shared libraries (and the loader) an ELF needs, one path a line.
elf_libs() {
    ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

# Copy files keeping their absolute path under root $1 (symlinks resolved).
copy_abs() {
    root=$1; shift
    for f in "$@"; do
        mkdir -p "$root$(dirname "$f")"
        cp -L "$f" "$root$f"
    done
}

mkcpio() { # dir out
    (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2"
}

# ---------- base (cached) ----------
programs=$(host_programs)
libs=$(for p in $programs; do elf_libs "$p"; done | sort -u)
modfiles=$(for m in $ordered; do module_path "$m"; done)
stamp=$( {
    cat "$0"
    cat "$kdir/version"
    # shellcheck disable=SC2086
    stat -L -c '%n %s %Y' /bin/busybox $programs $libs $modfiles
} | sha256sum | cut -c1-16)
base="$cache/base-$stamp.cpio"

if [ ! -s "$base" ]; then
    echo "build-initramfs: building base $base" >&2
    rm -f "$cache"/base-*.cpio
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    kver=$(cat "$kdir/version")
    mdir=$stage/lib/modules/$kver
    mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/dev" "$stage/proc" \
        "$stage/sys" "$stage/tmp" "$stage/run" "$mdir" "$stage/vm/scenarios" \
        "$stage/etc/target"   # target_core_mod logs "db_root: cannot open" without it
    cp /bin/busybox "$stage/bin/busybox"
    for a in $(busybox --list); do
        [ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
    done
    # The kernel opens /dev/console before /init runs; devtmpfs is mounted by /init.
    mknod -m 600 "$stage/dev/console" c 5 1
    mknod -m 666 "$stage/dev/null" c 1 3
    # shellcheck disable=SC2086
    copy_abs "$stage" $programs $libs
    for f in $modfiles; do cp "$f" "$mdir/"; done
    for m in $ordered; do basename "$(module_path "$m")"; done >"$mdir/load-order"
    # target_core_mod request_module()s its backends on the first HBA mkdir; give the
    # kernel a working /sbin/modprobe (busybox + modules.dep) so that is quiet and harmless.
    ln -s ../bin/busybox "$stage/sbin/modprobe"
    busybox depmod -b "$stage" "$kver"
    mkcpio "$stage" "$base.tmp.$$"
    mv "$base.tmp.$$" "$base"
    rm -rf "$stage"
    trap - EXIT
fi

# ---------- per-run ----------
run=$(mktemp -d "${TMPDIR:-/tmp}/vm-initrd.XXXXXX")
trap 'rm -rf "$run"' EXIT
mkdir -p "$run/bin" "$run/vm/scenarios"
cp "$here/init.sh" "$run/init"
cp "$here/lib.sh" "$run/vm/lib.sh"
cp "$config" "$run/vm/config"
chmod 755 "$run/init"
for s in "$@"; do
    [ -f "$s" ] || die "scenario $s not found"
    cp "$s" "$run/vm/scenarios/"
    # "name timeout" per line; the timeout comes from a "# vm-timeout: N" header (default 120).
    t=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$s" | head -n1)
    echo "$(basename "$s" .sh) ${t:-120}" >>"$run/vm/run-list"
done
if [ "$binary" != none ]; then
    [ -x "$binary" ] || die "handler binary $binary is not executable"
    cp -L "$binary" "$run/bin/tcmu-warden"
    # shellcheck disable=SC2046
    copy_abs "$run" $(elf_libs "$binary")
fi
# VM_EXTRA_FILES: more host files or directories a scenario needs (plugins a library dlopens,
# such as gluster's xlators), copied to the same paths with the libraries their ELFs need.
if [ -n "${VM_EXTRA_FILES:-}" ]; then
    # shellcheck disable=SC2086
    extra=$(find $VM_EXTRA_FILES \( -type f -o -type l \))
    # shellcheck disable=SC2046,SC2086
    copy_abs "$run" $extra $(for f in $extra; do elf_libs "$f"; done | sort -u)
fi
# VM_EXTRA_ROOT: a directory whose tree is copied to the guest's / as is (generated files
# such as a client configuration, which have no host path to copy from).
if [ -n "${VM_EXTRA_ROOT:-}" ]; then
    [ -d "$VM_EXTRA_ROOT" ] || die "VM_EXTRA_ROOT $VM_EXTRA_ROOT is not a directory"
    cp -a "$VM_EXTRA_ROOT/." "$run/"
fi
mkcpio "$run" "$run.cpio"
cat "$base" "$run.cpio" >"$out"
rm -f "$run.cpio"
