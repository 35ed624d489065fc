# vm-timeout: 420
# EXTENDED COPY (LID1) through the real kernel with sg3-utils' sg_xcopy: two user:file LUNs
# served by one tcmu-warden, copied both ways (command sent to the source, then to the
# destination), the destination compared byte for byte with what was written; then a copy
# to the kernel's own fileio LUN, which this daemon does not serve: SPC-4 names that COPY
# ABORTED, COPY TARGET DEVICE NOT REACHABLE (0A/0D/02), LIO's own answer for a copy target
# it cannot find, and nothing is written there (docs/conformance.md, "EXTENDED COPY").
size=$((16 * 1024 * 1024))
for f in /tmp/xa.img /tmp/xb.img /tmp/xf.img; do truncate -s "$size" "$f"; done
ua=$(user_backstore_create xa "$size" /tmp/xa.img)
ub=$(user_backstore_create xb "$size" /tmp/xb.img)
# Distinct unit serials: each LUN's NAA designator (VPD 83h), which names it in the copy.
printf %s xcopy-src-0001 >"$CFS/core/user_0/xa/wwn/vpd_unit_serial" || die "serial of xa"
printf %s xcopy-dst-0002 >"$CFS/core/user_0/xb/wwn/vpd_unit_serial" || die "serial of xb"
handler_start --uio "/dev/uio$ua" --uio "/dev/uio$ub"
da=$(loop_lun_create xa)
db=$(loop_lun_create xb)
fileio_backstore_create xf "$size" /tmp/xf.img
printf %s xcopy-fio-0003 >"$CFS/core/fileio_0/xf/wwn/vpd_unit_serial" || die "serial of xf"
df=$(loop_lun_create -B "$CFS/core/fileio_0/xf" xf)

read_blocks() { dd if="$1" bs=512 skip="$2" count="$3" iflag=direct 2>/dev/null; }
# 64 KiB reads (few commands under TCG): LBA and count in 512-byte blocks, multiples of 128.
read_big() { dd if="$1" bs=65536 skip=$(($2 / 128)) count=$(($3 / 128)) iflag=direct 2>/dev/null; }
# sg_xcopy works on SCSI generic nodes: the sg device of a /dev/sdX (sg is loaded at boot).
sg_of() {
    _g=$(ls "/sys/block/${1#/dev/}/device/scsi_generic" 2>/dev/null | head -n 1)
    [ -n "$_g" ] || die "no sg node for $1"
    if [ ! -c "/dev/$_g" ]; then
        _mm=$(cat "/sys/class/scsi_generic/$_g/dev")
        mknod "/dev/$_g" c "${_mm%:*}" "${_mm#*:}" || die "mknod /dev/$_g"
    fi
    echo "/dev/$_g"
}
ga=$(sg_of "$da")
gb=$(sg_of "$db")
gf=$(sg_of "$df")
log "sg nodes: $da=$ga $db=$gb $df=$gf"

# 4096 blocks (2 MiB) of random data at block 128 of A.
dd if=/dev/urandom of=/tmp/src bs=65536 count=32 2>/dev/null
dd if=/tmp/src of="$da" bs=65536 seek=1 count=32 oflag=direct conv=notrunc 2>/dev/null ||
    die "write to $da failed"
src_sum=$(sha256sum </tmp/src | cut -d' ' -f1)

# Pushed: EXTENDED COPY sent to A (the source), 32 commands of 128 blocks.
t0=$(now_ms)
sg_xcopy if="$ga" of="$gb" bs=512 skip=128 seek=2048 count=4096 2>/tmp/xcopy.push ||
    { cat /tmp/xcopy.push >&2; die "sg_xcopy A->B (on the source) failed"; }
result xcopy_push_ms $(( $(now_ms) - t0 ))
read_big "$db" 2048 4096 >/tmp/got
cmp -s /tmp/got /tmp/src || die "B's blocks 2048.. differ from what A held"
[ "$(sha256sum </tmp/got | cut -d' ' -f1)" = "$src_sum" ] || die "sha256 differs"
# The neighbours are untouched.
head -c 512 /dev/zero >/tmp/zero
read_blocks "$db" 2047 1 | cmp -s - /tmp/zero || die "block before the copy was written"
read_blocks "$db" 6144 1 | cmp -s - /tmp/zero || die "block after the copy was written"
result xcopy_push ok

# Pulled: sent to B (the destination), larger transfers (bpt 1024).
sg_xcopy --on_dst if="$ga" of="$gb" bs=512 bpt=1024 skip=128 seek=10240 count=4096 \
    2>/tmp/xcopy.pull || { cat /tmp/xcopy.pull >&2; die "sg_xcopy A->B (on the destination) failed"; }
read_big "$db" 10240 4096 | cmp -s - /tmp/src || die "pulled copy differs"
result xcopy_pull ok

# What the daemon wrote reached B's file, byte for byte (after a flush through the LUN).
sg_sync "$db" >/dev/null 2>&1 || true
dd if=/tmp/xb.img bs=65536 skip=16 count=32 2>/dev/null | cmp -s - /tmp/src ||
    die "B's backing file differs"
result xcopy_file ok

# A copy to the fileio LUN: the command goes to A, which cannot reach xf.
rc=0
# -vvv: sg_xcopy prints the sense data (key and additional sense) of the failed command.
sg_xcopy -vvv if="$ga" of="$gf" bs=512 skip=128 seek=0 count=128 >/tmp/xcopy.far 2>&1 || rc=$?
cat /tmp/xcopy.far >&2
result xcopy_unreachable_rc "$rc"
# sg3-utils' exit status 10: the sense key was COPY ABORTED (SG_LIB_CAT_COPY_ABORTED).
[ "$rc" = 10 ] || die "a copy to a LUN this daemon does not serve: exit $rc, not 10 (COPY ABORTED)"
grep -qi 'copy aborted' /tmp/xcopy.far || die "sense key is not COPY ABORTED"
grep -qi 'copy target device not reachable' /tmp/xcopy.far ||
    die "additional sense is not COPY TARGET DEVICE NOT REACHABLE (0D/02)"
[ -z "$(read_big "$df" 0 128 | tr -d '\000' | head -c 1)" ] ||
    die "the fileio LUN was written"
result xcopy_unreachable ok

loop_lun_remove xf
fileio_backstore_remove xf
loop_lun_remove xb
loop_lun_remove xa
user_backstore_remove xb
user_backstore_remove xa
handler_stop
rm -f /tmp/xa.img /tmp/xb.img /tmp/xf.img /tmp/src /tmp/got
