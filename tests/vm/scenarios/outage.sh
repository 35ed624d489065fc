# vm-timeout: 240
# The production incident at full scale: the backend stops answering writes for 60 s while
# fio writes, with cmd_time_out=30 and the default io_timeout (20 s). Required: every command
# is completed by the handler before the kernel's timer (no kernel timeout, no "Logical unit
# communication failure"), the initiator retries, I/O resumes when the stall ends, fio verify
# is clean, no hung task; `diagnose` explains it during the stall.
mkdir -p /etc/tcmu-warden
cat >/etc/tcmu-warden/config.toml <<'TOML'
[device."user_0/outage"]
faults = "write:stall=60s,every=50,count=1"
TOML
truncate -s 67108864 /tmp/outage.img
handler_start_netlink
user_backstore_create -N -m 8 -a cmd_time_out=30 outage 67108864 /tmp/outage.img >/dev/null
dev=$(loop_lun_create outage)
t0=$(now_ms)
fio --name=outage --filename="$dev" --rw=randwrite --bs=4k --size=4m --direct=1 --ioengine=libaio \
    --iodepth=8 --verify=crc32c --output-format=terse >/tmp/fio.outage 2>&1 &
fio_pid=$!
sleep 30
"$HANDLER_BIN" diagnose >/tmp/diag 2>&1 || true
cat /tmp/diag >&2
grep -q "BACKEND NOT ANSWERING" /tmp/diag || die "diagnose did not explain the outage"
rc=0
wait "$fio_pid" || rc=$?
fio_ms=$(( $(now_ms) - t0 ))
result fio_rc "$rc"
result fio_ms "$fio_ms"
[ "$rc" = 0 ] || { cat /tmp/fio.outage >&2; die "fio failed across the outage"; }
[ "$fio_ms" -ge 55000 ] || die "fio finished in $fio_ms ms: the 60 s stall did not happen"
result expired "$(grep -c 'completed with a retryable status' "$HANDLER_LOG" || true)"
handler_log_wait 30 "late backend completion" || die "late completions were not absorbed"
bad=$(dmesg | grep -cE 'I/O error|timing out command|[Cc]ommunication failure|blocked for more than' || true)
result kernel_errors "$bad"
[ "$bad" = 0 ] || { dmesg | tail -20 >&2; die "the kernel timed out or failed a command"; }
"$HANDLER_BIN" status >/tmp/status 2>&1 || true
cat /tmp/status >&2
grep -q "answering again after a stall" /tmp/status || die "status did not report the recovery"
rm -f /etc/tcmu-warden/config.toml
