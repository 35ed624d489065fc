# vm-timeout: 120
# Netlink mode refuses what it cannot serve: enable of a backstore with a malformed or
# unusable dev_config, or an unknown subtype, must fail (bounded, non-zero) with a daemon log
# line naming the device and the problem; nothing hangs and a valid backstore still works.
size=$((16 * 1024 * 1024))
RUST_LOG=${NL_RUST_LOG:-debug} handler_start_netlink
pid=$HANDLER_PID

# name dev_config log-pattern: one case a line ("-" = no dev_config at all).
CASES="bad_empty file/ bad_empty
bad_nodir file//nonexistent/dir/x.img nonexistent
bad_subtype qcow/x qcow
bad_none - bad_none"
echo "$CASES" | while read -r name dc pat; do
    [ "$dc" = - ] && dc=""
    rc=0
    user_backstore_try "$name" "$size" "$dc" 20 2>/tmp/enable.$name.err || rc=$?
    result "${name}_enable_rc" "$rc"
    result "${name}_enable_ms" "$ENABLE_MS"
    # The shell's message for the failed write (our own log lines start with "[").
    result "${name}_enable_err" "$(grep -v '^\[' /tmp/enable.$name.err | head -n 1 | sed 's/.*: //' | tr ' ' _)"
    [ "$rc" != 124 ] || die "enable of $name blocked (no ADDED_DEVICE_DONE?)"
    [ "$rc" != 0 ] || die "enable of $name (dev_config '$dc') succeeded"
    [ "$(cat "$CFS/core/user_0/$name/enable" 2>/dev/null)" != 1 ] || die "$name reads back as enabled"
    _pid_alive "$pid" || die "daemon died on $name"
    wait_until 5 "a log line about $name" grep -q "$name" "$HANDLER_LOG" || die "daemon log does not mention $name"
    line=$(grep "$name" "$HANDLER_LOG" | grep -iE 'refused|cannot|error|invalid' | tail -n 1)
    log "daemon said: $line"
    [ -n "$line" ] || die "no refusal logged for $name"
    echo "$line" | grep -qi -- "$pat" || die "the refusal of $name does not name the problem ('$pat'): $line"
    # No uio device left behind for it, and the daemon holds none.
    if n=$(_uio_find 0 "$name"); then
        ! handler_holds_uio "$n" || die "daemon holds /dev/uio$n of refused $name"
    fi
    # The refused backstore can be removed at once (it was never configured: no REMOVED).
    nl_backstore_remove "$name" 10 || die "rmdir of refused $name failed (rc=$?)"
done

# A valid backstore still works after the refusals.
img=/tmp/badcfg-good.img
truncate -s "$size" "$img"
t=$(now_ms)
uio=$(user_backstore_create -N -m 8 -a cmd_time_out=10 good "$size" "$img")
result good_enable_ms $(( $(now_ms) - t ))
handler_holds_uio "$uio" || die "daemon does not hold /dev/uio$uio after enable"
dev=$(loop_lun_create good)
fio_run good --name=good --filename="$dev" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=8 --size=2m --verify=crc32c --do_verify=1 --verify_fatal=1 || die "fio on good failed"

loop_lun_remove good
nl_backstore_remove good 20 || die "rmdir of good failed (rc=$?)"
handler_stop
result stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "daemon exited with $HANDLER_RC"
