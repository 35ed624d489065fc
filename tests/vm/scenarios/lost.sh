# vm-timeout: 180
# A backend that stops answering everything, pings included, for 20 s under fio: the health
# monitor must declare it lost (a ping times out after the 3 s backend tier), fail new
# commands fast with NOT READY 04/0A instead of letting them queue, reopen it with backoff once
# it answers again, and bring it back to healthy through recovering, by itself. Linux must
# retry what was failed fast: fio finishes with verify clean and the kernel logs no I/O error.
mkdir -p /etc/tcmu-warden
cat >/etc/tcmu-warden/config.toml <<'TOML'
[device."user_0/lost"]
io_timeout = "3s"
ping_interval = "1s"
faults = "write|ping:stall=20s,every=300,count=1"
TOML
truncate -s 67108864 /tmp/lost.img
handler_start_netlink
user_backstore_create -N -m 8 -a cmd_time_out=30 lost 67108864 /tmp/lost.img >/dev/null
dev=$(loop_lun_create lost)
t0=$(now_ms)
fio --name=lost --filename="$dev" --rw=randwrite --bs=4k --size=8m --direct=1 --ioengine=libaio \
    --iodepth=8 --verify=crc32c --output-format=terse >/tmp/fio.lost 2>&1 &
fio_pid=$!
handler_log_wait 60 "to=\"lost\"" || die "the backend was never declared lost"
lost_ms=$(( $(now_ms) - t0 ))
sleep 2
"$HANDLER_BIN" diagnose >/tmp/diag 2>&1 || true
cat /tmp/diag >&2
grep -q "BACKEND LOST" /tmp/diag || die "diagnose did not say the backend is lost"
handler_log_wait 60 "to=\"recovering\"" || die "no recovery"
handler_log_wait 30 "to=\"healthy\"" || die "not healthy again"
healthy_ms=$(( $(now_ms) - t0 ))
rc=0
wait "$fio_pid" || rc=$?
fio_ms=$(( $(now_ms) - t0 ))
result lost_at_ms "$lost_ms"
result healthy_at_ms "$healthy_ms"
result fio_rc "$rc"
result fio_ms "$fio_ms"
"$HANDLER_BIN" diagnose >/tmp/status 2>&1 || true
cat /tmp/status >&2
ff=$(sed -n 's/^  backend health: .* \([0-9][0-9]*\) command(s) failed fast$/\1/p' /tmp/status | head -n 1)
result failed_fast "${ff:-0}"
[ "${ff:-0}" -gt 0 ] || die "no command was failed fast while lost"
[ "$rc" = 0 ] || { cat /tmp/fio.lost >&2; die "fio failed across the loss"; }
bad=$(dmesg | grep -cE 'I/O error|timing out command|[Cc]ommunication failure|blocked for more than' || true)
result kernel_errors "$bad"
[ "$bad" = 0 ] || { dmesg | tail -20 >&2; die "the kernel failed or timed out a command"; }
rm -f /etc/tcmu-warden/config.toml
