# vm-timeout: 150
# SCSI command coverage through sg3-utils: every advertised VPD page, READ CAPACITY(16),
# UNMAP (then zeros read back), WRITE SAME, COMPARE AND WRITE (match and miscompare), an
# unknown opcode (ILLEGAL REQUEST), REPORT SUPPORTED OPERATION CODES.
# sg3-utils exit codes: 5 illegal request, 9 invalid opcode, 14 miscompare.
size=$((64 * 1024 * 1024))
img=/tmp/sg.img
truncate -s "$size" "$img"
uio=$(user_backstore_create -a cmd_time_out=10 sg "$size" "$img")
handler_start --uio /dev/uio$uio
dev=$(loop_lun_create sg)

# --- INQUIRY: standard, then every page listed in page 0x00.
sg_inq "$dev" >/dev/null || die "standard INQUIRY failed"
# Raw page 0x00: bytes 2-3 are the list length, the page codes follow from byte 4.
raw=$(sg_vpd -p 0 -r "$dev" | od -An -v -tx1) || die "VPD page 0x00 failed"
# shellcheck disable=SC2086
set -- $raw
[ $# -ge 4 ] || die "short VPD page 0x00: $raw"
len=$((0x$3 * 256 + 0x$4))
shift 4
pages=""
while [ "$len" -gt 0 ] && [ $# -gt 0 ]; do pages="$pages 0x$1"; shift; len=$((len - 1)); done
pages=${pages# }
[ -n "$pages" ] || die "no VPD pages listed"
result vpd_pages "$pages"
for p in $pages; do
    sg_vpd -p "$p" "$dev" >/tmp/vpd.$p 2>&1 || { cat /tmp/vpd.$p >&2; die "VPD page $p failed"; }
done
case " $pages " in *" 0x83 "*) ;; *) die "device identification page 0x83 missing" ;; esac

# --- READ CAPACITY(16)
cap=$(sg_readcap -l "$dev") || die "READ CAPACITY(16) failed"
blen=$(echo "$cap" | sed -n 's/.*Logical block length=\([0-9]*\).*/\1/p')
lbpme=$(echo "$cap" | sed -n 's/.*lbpme=\([01]\).*/\1/p')
result block_len "$blen"
result lbpme "$lbpme"
[ "$blen" = 512 ] || die "block length $blen"

# Helpers on 512-byte blocks through the page cache-free path.
pattern() { # byte count: deterministic non-zero data
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%c", 65 + i % 26 }'
}
read_blocks() { dd if="$dev" bs=512 skip="$1" count="$2" iflag=direct 2>/dev/null; }
write_blocks() { dd of="$dev" bs=512 seek="$1" count="$2" oflag=direct conv=notrunc 2>/dev/null; }

# --- UNMAP: write data, unmap it, read back zeros.
pattern $((64 * 512)) | write_blocks 1000 64 || die "write before UNMAP failed"
sg_unmap --lba=1000 --num=64 "$dev" || die "UNMAP failed (rc=$?)"
head -c $((64 * 512)) /dev/zero >/tmp/zeros
read_blocks 1000 64 | cmp -s - /tmp/zeros || die "UNMAPped blocks do not read back as zeros"
result unmap ok

# --- WRITE SAME(16) of one block pattern over 32 blocks.
pattern 512 >/tmp/blk
sg_write_same --16 --lba=2000 --num=32 --in=/tmp/blk "$dev" || die "WRITE SAME failed"
i=0
while [ $i -lt 32 ]; do
    read_blocks $((2000 + i)) 1 | cmp -s - /tmp/blk || die "WRITE SAME block $i differs"
    i=$((i + 1))
done
result write_same ok

# --- COMPARE AND WRITE: matching compare writes; a stale compare gives MISCOMPARE.
pattern 512 >/tmp/old
head -c 512 /dev/zero | tr '\0' 'Z' >/tmp/new
write_blocks 3000 1 </tmp/old || die "write before COMPARE AND WRITE failed"
cat /tmp/old /tmp/new >/tmp/caw
sg_compare_and_write --lba=3000 --num=1 --in=/tmp/caw "$dev" || die "matching COMPARE AND WRITE failed"
read_blocks 3000 1 | cmp -s - /tmp/new || die "COMPARE AND WRITE did not write"
rc=0
sg_compare_and_write --lba=3000 --num=1 --in=/tmp/caw "$dev" 2>/tmp/caw.err || rc=$?
cat /tmp/caw.err >&2
result caw_miscompare_rc "$rc"
[ "$rc" = 14 ] || die "stale COMPARE AND WRITE: expected MISCOMPARE (14), got $rc"
read_blocks 3000 1 | cmp -s - /tmp/new || die "miscompared COMPARE AND WRITE changed data"

# --- unknown (vendor-specific) opcode: ILLEGAL REQUEST.
rc=0
sg_raw "$dev" d5 00 00 00 00 00 00 00 00 00 >/tmp/raw.out 2>&1 || rc=$?
cat /tmp/raw.out >&2
result unknown_opcode_rc "$rc"
grep -qi 'illegal request' /tmp/raw.out || die "unknown opcode did not give ILLEGAL REQUEST (rc=$rc)"

# --- REPORT SUPPORTED OPERATION CODES: optional in SPC; report what we get, but an error
# other than ILLEGAL REQUEST / invalid opcode (e.g. a timeout) is a failure.
rc=0
sg_opcodes "$dev" >/tmp/opc 2>&1 || rc=$?
result opcodes_rc "$rc"
case $rc in
    0) result opcodes_count "$(grep -c '^ *[0-9a-f][0-9a-f] ' /tmp/opc || true)" ;;
    5|9) ;;
    *) cat /tmp/opc >&2; die "sg_opcodes failed with $rc" ;;
esac

loop_lun_remove sg
user_backstore_remove sg
handler_stop
