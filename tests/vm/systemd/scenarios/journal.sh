# vm-timeout: 120
# journald (after scenario unit): the daemon logs to the journal directly, each line's tracing
# fields as journal fields (DEVICE, DEADLINE ...) and its level as the syslog priority.
. ./lib.sh
journalctl -u tcmu-warden -b -o json --no-pager >/tmp/j.json
grep -q '"SYSLOG_IDENTIFIER":"tcmu-warden"' /tmp/j.json || die "no entries from tcmu-warden itself"
# The per-device "command deadline" line: an info line with the device and its deadline.
line=$(grep '"MESSAGE":"command deadline"' /tmp/j.json | tail -n 1)
[ -n "$line" ] || die "no 'command deadline' entry"
echo "$line" | grep -q '"DEVICE":"[^"]*lun0' || { echo "$line"; die "no DEVICE field"; }
echo "$line" | grep -q '"DEADLINE":' || { echo "$line"; die "no DEADLINE field"; }
echo "$line" | grep -q '"PRIORITY":"6"' || { echo "$line"; die "info is not priority 6"; }
result journal_fields "DEVICE,DEADLINE"
# Warnings at priority 4 (if any were logged this boot) and nothing at 6 said "WARN".
if grep -q '"PRIORITY":"4"' /tmp/j.json; then result journal_warning_priority 4; fi
! grep '"PRIORITY":"6"' /tmp/j.json | grep -q '"MESSAGE":"[^"]*WARN' || die "a warning logged as info"
