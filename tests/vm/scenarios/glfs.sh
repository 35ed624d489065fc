# vm-timeout: 200
# A user:glfs backstore on the host's real gluster volume, through the real kernel: the daemon
# in the guest opens glfs/<volume>@LOCALHOST/<file> (glusterd and the brick reached through
# vm_forward, LOCALHOST mapped to 127.0.0.1 by /etc/hosts as on the host, gluster's xlators in
# the initramfs), fio with crc32c verify writes through tcm_loop's /dev/sdX. Then, when asked,
# the brick is frozen from the host for longer than the volume's ping-timeout under fio: the
# device must go lost (new commands fail fast with NOT READY 04/0A, which Linux retries) and
# come back through recovering to healthy by itself after the thaw; fio's verify must be clean
# and the kernel must log no I/O error.
#
# Booted by tests/gluster/vm.sh, which passes warden.glfs=VOLUME:BRICK_PORT:FREEZE_S on the
# kernel command line (FREEZE_S 0: no freeze) and freezes the brick for FREEZE_S seconds when
# the console shows a line "FREEZE-BRICK-NOW".
arg=$(sed -n 's/.*warden\.glfs=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$arg" ] || die "no warden.glfs=VOLUME:BRICK_PORT:FREEZE_S on the kernel command line (boot with tests/gluster/vm.sh)"
vol=${arg%%:*}
rest=${arg#*:}
port=${rest%%:*}
freeze=${rest#*:}
[ "$freeze" != "$rest" ] || freeze=0
log "gluster volume $vol, brick port $port, freeze ${freeze}s"
result brick_port "$port"

# On failure, gfapi's own log says what the client saw.
trap '[ $? = 0 ] || { echo "---- tail of /tmp/gfapi.log ----"; tail -n 40 /tmp/gfapi.log; } >&2' EXIT
echo "127.0.0.1 localhost LOCALHOST" >/etc/hosts
vm_forward 24007 "$port"
mkdir -p /etc/tcmu-warden /var/log/glusterfs
cat >/etc/tcmu-warden/config.toml <<'TOML'
[device."user_0/glfs"]
ping_interval = "1s"
TOML

size=$((64 * 1024 * 1024))
img=vm-$(_hex9).img
handler_start_netlink
t=$(now_ms)
user_backstore_create -N -s glfs -m 8 -a cmd_time_out=30 glfs "$size" \
    "$vol@LOCALHOST/$img;gfapi_log=/tmp/gfapi.log" >/dev/null
result open_ms "$(( $(now_ms) - t ))"
dev=$(loop_lun_create glfs)

# 1. Plain I/O through the kernel: 4 KiB random and 1 MiB sequential writes, verified.
fio_verify_basic "$dev"

# 2. The brick frozen from the host under fio.
if [ "$freeze" -gt 0 ]; then
    grep -q 'to="lost"' "$HANDLER_LOG" && die "lost before the freeze"
    t0=$(now_ms)
    # Rate-limited so that writes are still being issued when the brick thaws.
    fio --name=freeze --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=8 --offset=32m --size=2m --rate_iops=40 --verify=crc32c --do_verify=1 \
        --verify_fatal=1 --output-format=terse >/tmp/fio.freeze 2>&1 &
    fio_pid=$!
    sleep 2
    echo "FREEZE-BRICK-NOW $freeze" >/dev/console
    freeze_ms=$(( $(now_ms) - t0 ))
    handler_log_wait $((freeze + 30)) 'to="lost"' || die "the backend was never declared lost"
    lost_ms=$(( $(now_ms) - t0 ))
    "$HANDLER_BIN" diagnose >/tmp/diag 2>&1 || true
    cat /tmp/diag >&2
    grep -q "BACKEND LOST" /tmp/diag || die "diagnose did not say the backend is lost"
    handler_log_wait $((freeze + 40)) 'to="recovering"' || die "no recovery after the thaw"
    recovering_ms=$(( $(now_ms) - t0 ))
    handler_log_wait 30 'to="healthy"' || die "not healthy again"
    healthy_ms=$(( $(now_ms) - t0 ))
    rc=0
    wait "$fio_pid" || rc=$?
    fio_ms=$(( $(now_ms) - t0 ))
    result freeze_s "$freeze"
    result freeze_sent_ms "$freeze_ms"
    result lost_at_ms "$lost_ms"
    result recovering_at_ms "$recovering_ms"
    result healthy_at_ms "$healthy_ms"
    result fio_freeze_rc "$rc"
    result fio_freeze_ms "$fio_ms"
    "$HANDLER_BIN" diagnose >/tmp/status 2>&1 || true
    cat /tmp/status >&2
    ff=$(sed -n 's/^  backend health: .* \([0-9][0-9]*\) command(s) failed fast$/\1/p' /tmp/status | head -n 1)
    result failed_fast "${ff:-0}"
    grep -E 'to="(degraded|lost|recovering|healthy)"' "$HANDLER_LOG" | sed 's/^/walk: /' >&2
    [ "${ff:-0}" -gt 0 ] || die "no command was failed fast while lost"
    [ "$rc" = 0 ] || { cat /tmp/fio.freeze >&2; die "fio failed across the frozen brick"; }
    [ "$(( lost_ms - freeze_ms ))" -lt $(( (freeze + 5) * 1000 )) ] ||
        die "lost only $(( lost_ms - freeze_ms )) ms after the freeze"
fi
bad=$(dmesg | grep -cE 'I/O error|timing out command|[Cc]ommunication failure|blocked for more than' || true)
result kernel_errors "$bad"
[ "$bad" = 0 ] || { dmesg | tail -20 >&2; die "the kernel failed or timed out a command"; }
rm -f /etc/tcmu-warden/config.toml
