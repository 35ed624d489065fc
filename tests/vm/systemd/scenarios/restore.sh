# vm-timeout: 180
# Boot-time restore (after the reboot that follows scenario unit): systemd started tcmu-warden
# before the target configuration was restored, the restore service brought lun0 back with its
# tcm_loop export, and the data written before the reboot reads back unchanged. Nobody touched
# anything: this scenario only looks.
. ./lib.sh
restore_unit=
for u in target.service rtslib-fb-targetctl.service; do
    systemctl cat "$u" >/dev/null 2>&1 && { restore_unit=$u; break; }
done
[ -n "$restore_unit" ] || die "no target restore service installed"
result restore_unit "$restore_unit"
wait_until 60 active || die "tcmu-warden not running after boot"
r=$(systemctl show -p ActiveState --value "$restore_unit")
[ "$r" = active ] || { systemctl status "$restore_unit" --no-pager; die "$restore_unit is $r"; }
w_ready=$(systemctl show -p ActiveEnterTimestampMonotonic --value tcmu-warden)
r_start=$(systemctl show -p InactiveExitTimestampMonotonic --value "$restore_unit")
log "tcmu-warden ready at ${w_ready} us, $restore_unit started at ${r_start} us"
[ "$w_ready" -gt 0 ] && [ "$w_ready" -le "$r_start" ] || die "tcmu-warden was not ready before $restore_unit started"
result warden_ready_s "$(awk -v t="$w_ready" 'BEGIN { printf "%.1f", t / 1e6 }')"
result restore_start_s "$(awk -v t="$r_start" 'BEGIN { printf "%.1f", t / 1e6 }')"
so=$(ls -d /sys/kernel/config/target/core/user_*/lun0) || die "lun0 not restored"
[ "$(cat "$so/enable")" = 1 ] || die "lun0 restored but not enabled"
[ "$(cat "$so/attrib/cmd_time_out")" = 150 ] || die "cmd_time_out not restored"
wait_until 30 disk_of loopback || die "the tcm_loop disk did not come back"
dev=$(disk_of loopback)
got=$(dd if="$dev" bs=1M skip=64 count=8 iflag=direct status=none | md5sum | cut -d' ' -f1)
[ "$got" = "$(cat /var/lib/warden-test/lun0.md5)" ] || die "data after reboot differs"
result data_after_reboot same
