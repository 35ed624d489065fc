# vm-timeout: 150
# The retryable statuses the handler uses are really retried by Linux 6.1's sd on a single
# path (no ALUA device handler): the first writes fail in the backend with ETIMEDOUT (sent as
# NOT READY, asymmetric access state transition, 04/0A) or EAGAIN (BUSY), fault injection
# configured through /etc/tcmu-warden/config.toml; fio must still finish without an error.
mkdir -p /etc/tcmu-warden
cat >/etc/tcmu-warden/config.toml <<'TOML'
[device."user_0/rnr"]
faults = "write:fail=ETIMEDOUT,count=3"
[device."user_0/rbusy"]
faults = "write:fail=EAGAIN,count=3"
TOML
for n in rnr rbusy; do truncate -s 67108864 /tmp/$n.img; done
# -d: the daemon logs each failed command, so the test can see the faults fired.
handler_start_netlink -d
for n in rnr rbusy; do
    user_backstore_create -N -m 4 -a cmd_time_out=30 "$n" 67108864 "/tmp/$n.img" >/dev/null
done
for n in rnr rbusy; do
    dev=$(loop_lun_create "$n")
    rc=0
    fio --name="$n" --filename="$dev" --rw=write --bs=4k --size=256k --direct=1 \
        --ioengine=libaio --iodepth=1 --verify=crc32c --output-format=terse >/tmp/fio.$n 2>&1 || rc=$?
    result "${n}_fio_rc" "$rc"
    [ "$rc" = 0 ] || { cat /tmp/fio.$n >&2; die "fio on $n saw the injected failures"; }
done
injected=$(grep -c 'command failed' "$HANDLER_LOG" || true)
result injected_failures "$injected"
[ "$injected" -ge 6 ] || die "expected 6 injected failures, the log shows $injected"
errors=$(dmesg | grep -c 'I/O error' || true)
result io_errors "$errors"
[ "$errors" = 0 ] || die "the kernel reported I/O errors instead of retrying"
rm -f /etc/tcmu-warden/config.toml
