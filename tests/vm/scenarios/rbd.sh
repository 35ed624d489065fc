# vm-timeout: 240
# A user:rbd backstore on the host's throwaway Ceph cluster (tests/ceph/cluster.sh), through
# the real kernel: the daemon in the guest opens rbd/<pool>/<image>;conf=/etc/ceph/ceph.conf
# (a client ceph.conf and keyring generated from the cluster's, in the per-run archive; the
# mon's and the OSD's ports reached through vm_forward, so the addresses in the monmap and the
# OSD map work unchanged; librados' plugins in the initramfs), and fio with crc32c verify
# writes through tcm_loop's /dev/sdX. Then, when asked, the image's exclusive lock is broken
# from the host with blocklisting (`rbd lock rm` of the lock this daemon holds) while fio
# writes: the daemon must notice the blocklisting, reopen on a fresh client by itself, remove
# its own stale blocklist entry, fio's verify must be clean and the kernel must log no I/O
# error.
#
# Booted by tests/ceph/vm.sh, which passes warden.rbd=POOL/IMAGE:SIZE_MB:PORT,PORT...:BREAK on
# the kernel command line (BREAK 0: plain I/O only) and breaks the lock when the console shows
# a line "BREAK-LOCK-NOW".
arg=$(sed -n 's/.*warden\.rbd=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$arg" ] || die "no warden.rbd=POOL/IMAGE:SIZE_MB:PORTS:BREAK on the kernel command line (boot with tests/ceph/vm.sh)"
spec=${arg%%:*}
rest=${arg#*:}
size_mb=${rest%%:*}
rest=${rest#*:}
ports=${rest%%:*}
brk=${rest#*:}
[ "$brk" != "$rest" ] || brk=0
[ -r /etc/ceph/ceph.conf ] && [ -r /etc/ceph/keyring ] || die "no /etc/ceph/ceph.conf or keyring in the initramfs"
log "rbd image $spec (${size_mb} MiB), forwarding ports $ports, break the lock: $brk"

# On failure, librados' own log says what the client saw.
trap '[ $? = 0 ] || { echo "---- tail of /tmp/ceph-client.log ----"; tail -n 40 /tmp/ceph-client.log 2>/dev/null; } >&2' EXIT
# shellcheck disable=SC2046
vm_forward $(echo "$ports" | tr , ' ')

size=$((size_mb * 1024 * 1024))
handler_start_netlink
t=$(now_ms)
user_backstore_create -N -s rbd -m 8 -a cmd_time_out=30 rbd "$size" \
    "$spec;conf=/etc/ceph/ceph.conf;osd_op_timeout=20" >/dev/null
result open_ms "$(( $(now_ms) - t ))"
dev=$(loop_lun_create rbd)

# 1. Plain I/O through the kernel: 4 KiB random and 1 MiB sequential writes, verified.
fio_verify_basic "$dev"
grep -q 'blocklisted (ESHUTDOWN)' "$HANDLER_LOG" && die "blocklisted before the break"

# 2. The lock broken with blocklisting from the host under fio.
if [ "$brk" = 1 ]; then
    t0=$(now_ms)
    # Rate-limited so that writes are still being issued after the reopen.
    fio --name=brk --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=8 --offset=40m --size=2m --rate_iops=40 --verify=crc32c --do_verify=1 \
        --verify_fatal=1 --output-format=terse >/tmp/fio.brk 2>&1 &
    fio_pid=$!
    sleep 2
    echo "BREAK-LOCK-NOW" >/dev/console
    sent_ms=$(( $(now_ms) - t0 ))
    handler_log_wait 60 'blocklisted \(ESHUTDOWN\)' || die "the daemon never noticed the blocklisting"
    noticed_ms=$(( $(now_ms) - t0 ))
    handler_log_wait 60 'rbd: reopened on' || die "no reopen after the blocklisting"
    reopened_ms=$(( $(now_ms) - t0 ))
    rc=0
    wait "$fio_pid" || rc=$?
    fio_ms=$(( $(now_ms) - t0 ))
    # The old client goes away once no LUN uses it; then the daemon removes its own entry.
    handler_log_wait 45 "removed this daemon's own stale blocklist entry" ||
        die "the daemon did not remove its own blocklist entry"
    cleaned_ms=$(( $(now_ms) - t0 ))
    "$HANDLER_BIN" diagnose >/tmp/diag 2>&1 || true
    cat /tmp/diag >&2
    grep 'rbd: reopened on' "$HANDLER_LOG" | sed 's/^/reopen: /' >&2
    result break_sent_ms "$sent_ms"
    result blocklist_noticed_ms "$noticed_ms"
    result reopened_ms "$reopened_ms"
    result entry_removed_ms "$cleaned_ms"
    result fio_break_rc "$rc"
    result fio_break_ms "$fio_ms"
    [ "$rc" = 0 ] || { cat /tmp/fio.brk >&2; die "fio failed across the broken lock"; }
    grep -q 'blocklisted 1 time(s), reopened 1 time(s)' /tmp/diag ||
        die "diagnose does not say blocklisted once, reopened once"
    # The data written before the break is still there and still verifies.
    fio_run r4kv --name=r4k --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite \
        --bs=4k --iodepth=16 --size=4m --verify=crc32c --do_verify=1 --verify_fatal=1 \
        --verify_only=1 || die "the data written before the break does not verify"
fi
bad=$(dmesg | grep -cE 'I/O error|timing out command|[Cc]ommunication failure|blocked for more than' || true)
result kernel_errors "$bad"
[ "$bad" = 0 ] || { dmesg | tail -20 >&2; die "the kernel failed or timed out a command"; }
