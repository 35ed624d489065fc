# vm-timeout: 150
# A backend that stops answering must not hang the target (the production incident, scaled
# down for CI): the first write hangs 10 s in the backend, io_timeout is 3 s, cmd_time_out 30 s.
# The handler completes it at its 3 s deadline with a retryable status (keeping its buffer),
# Linux retries, fio finishes and verifies clean, `tcmu-warden diagnose` explains the stall
# while it lasts, the late completion is absorbed, and the kernel never times a command out.
mkdir -p /etc/tcmu-warden
cat >/etc/tcmu-warden/config.toml <<'TOML'
[device."user_0/hang"]
io_timeout = "3s"
faults = "write:hang=10s,count=1"
TOML
truncate -s 67108864 /tmp/hang.img
handler_start_netlink
user_backstore_create -N -m 4 -a cmd_time_out=30 hang 67108864 /tmp/hang.img >/dev/null
dev=$(loop_lun_create hang)
t0=$(now_ms)
fio --name=hang --filename="$dev" --rw=randwrite --bs=4k --size=1m --direct=1 --ioengine=libaio \
    --iodepth=4 --verify=crc32c --output-format=terse >/tmp/fio.hang 2>&1 &
fio_pid=$!
sleep 5
"$HANDLER_BIN" diagnose >/tmp/diag 2>&1 || true
cat /tmp/diag >&2
grep -q "BACKEND NOT ANSWERING" /tmp/diag || die "diagnose did not explain the stall"
result diagnose_verdict "$(grep -m1 'verdict:' /tmp/diag | cut -c1-60)"
rc=0
wait "$fio_pid" || rc=$?
result fio_rc "$rc"
result fio_ms $(( $(now_ms) - t0 ))
[ "$rc" = 0 ] || { cat /tmp/fio.hang >&2; die "fio failed across the backend stall"; }
handler_log_wait 15 "late backend completion" || die "the late completion was not absorbed"
result expired "$(grep -c 'completed with a retryable status' "$HANDLER_LOG" || true)"
errors=$(dmesg | grep -cE 'I/O error|timing out command|blocked for more than' || true)
result kernel_errors "$errors"
[ "$errors" = 0 ] || { dmesg | tail -20 >&2; die "the kernel saw errors or timeouts"; }
"$HANDLER_BIN" status >/tmp/status 2>&1 || true
cat /tmp/status >&2
grep -q "answering again after a stall" /tmp/status || die "status did not report the recovery"
rm -f /etc/tcmu-warden/config.toml
