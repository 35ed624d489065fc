# vm-timeout: 150
# vm-layer: targetcli
# Debian's targetcli (targetcli-fb 2.1.53, rtslib-fb 2.1.75) against the real kernel, with
# tcmu-warden started with no arguments (netlink mode) owning org.kernel.TCMUService1 on a
# system bus this scenario starts: `ls` lists user:file, user:rbd and user:glfs from our
# ObjectManager; `help create` shows our ConfigDesc; a bad cfgstring is refused by our
# CheckConfig with our message and nothing is created; a good one is created by rtslib
# (configfs, enable: the daemon opens it; a ;io_timeout= option passes, a misspelt one is
# refused by name), exported through tcm_loop by targetcli and serves verified I/O;
# targetcli deletes it again.
command -v targetcli >/dev/null || die "no targetcli in the guest (layers/targetcli.sh)"
export TERM=dumb HOME=/tmp/tc-home
mkdir -p "$HOME" /run/dbus
dbus-daemon --config-file=/etc/dbus-1/vm-system.conf --nofork --nopidfile 2>/tmp/dbus.log &
dbus_pid=$!
trap 'kill "$dbus_pid" 2>/dev/null || true' EXIT
wait_until 10 "the system bus" test -S /run/dbus/system_bus_socket || { cat /tmp/dbus.log >&2; die "no bus"; }

t=$(now_ms)
handler_start_netlink
handler_log_wait 5 "DBus service on the system bus" || die "the daemon did not take the bus name"
result daemon_ready_ms $(( $(now_ms) - t ))

# tc NAME ARGS...: run targetcli ARGS, keep its output in /tmp/tc.NAME, report its time.
tc() {
    _n=$1; shift
    _t=$(now_ms) _rc=0
    targetcli "$@" >"/tmp/tc.$_n" 2>&1 || _rc=$?
    result "tc_${_n}_ms" $(( $(now_ms) - _t ))
    log "targetcli $* -> rc=$_rc"
    sed 's/^/  | /' "/tmp/tc.$_n" >&2
    return "$_rc"
}

tc ls ls /backstores || die "targetcli ls failed"
for s in file rbd glfs; do
    grep -q "user:$s" /tmp/tc.ls || die "targetcli ls does not list user:$s"
done
result ls_user "$(grep -o 'user:[a-z]*' /tmp/tc.ls | sort -u | tr '\n' ' ' | sed 's/ $//; s/ /,/g')"

tc help /backstores/user:file help create || die "targetcli help create failed"
grep -qF 'file/<path>: a local file' /tmp/tc.help || die "help create does not show our ConfigDesc"

# A bad cfgstring: refused by CheckConfig before anything is created.
rc=0
tc bad /backstores/user:file create name=tcbad size=16M cfgstring=/nonexistent/dir/x.img || rc=$?
result bad_rc "$rc"
[ "$rc" != 0 ] || die "create with a bad cfgstring succeeded"
grep -q 'cfgstring invalid: .*/nonexistent/dir does not exist' /tmp/tc.bad ||
    die "the refusal does not carry our CheckConfig message"
! ls -d "$CFS"/core/user_*/tcbad >/dev/null 2>&1 || die "a backstore was created for the bad cfgstring"
grep -q 'CheckConfig: invalid' "$HANDLER_LOG" || die "the daemon did not log the refused check"

# A good one: created, opened by the daemon, exported through tcm_loop, verified I/O.
img=/tmp/tc-good.img
truncate -s 64M "$img"
# With a per-device option after ';', as tcmu-runner users write them.
tc create /backstores/user:file create name=tcgood size=64M "cfgstring=$img;io_timeout=10s" ||
    die "create with a good cfgstring failed"
so=$(ls -d "$CFS"/core/user_*/tcgood) || die "no configfs directory for tcgood"
hba=${so%/tcgood}; hba=${hba##*/user_}
echo "$hba tcgood" >"$STATE/backstore.$hba.tcgood"
[ "$(cat "$so/enable")" = 1 ] || die "tcgood is not enabled"
dc=$(cat "$so/attrib/dev_config")
[ "$dc" = "file/$img;io_timeout=10s" ] || die "dev_config is '$dc'"
# A misspelt option is refused by CheckConfig, naming it, before rtslib creates anything.
rc=0
tc badopt /backstores/user:file create name=tcbadopt size=16M "cfgstring=$img.2;io_timout=10s" || rc=$?
[ "$rc" != 0 ] || die "create with a misspelt option succeeded"
grep -q 'cfgstring invalid: .*unknown option io_timout=10s' /tmp/tc.badopt || die "the misspelt option is not named"
uio=$(_uio_find "$hba" tcgood) || die "no uio device for tcgood"
handler_wait_uio "$uio" || die "the daemon does not hold /dev/uio$uio"
tc lsso ls /backstores/user:file || die "targetcli ls user:file failed"
grep -q tcgood /tmp/tc.lsso || die "targetcli does not list tcgood under user:file"

wwn=naa.5001405$(_hex9)
tc loop /loopback create "wwn=$wwn" || die "targetcli loopback create failed"
echo "$wwn" >"$STATE/lun.tcgood"
tc lun "/loopback/$wwn/luns" create /backstores/user:file/tcgood || die "targetcli luns create failed"
addr=$(cat "$CFS/loopback/$wwn/tpgt_1/address")
wait_until 10 "block device at $addr:0" _lun_blockdev "$addr" >/dev/null || die "no block device"
sd=$(_lun_blockdev "$addr")
wait_until 10 "sd probe of $sd" _lun_probed "$sd" || die "$sd never finished probing"
if [ ! -b "/dev/$sd" ]; then
    mm=$(cat "/sys/block/$sd/dev")
    mknod "/dev/$sd" b "${mm%:*}" "${mm#*:}"
fi
result size_bytes $(( $(cat "/sys/block/$sd/size") * 512 ))
fio_run tc --name=tc --filename="/dev/$sd" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=8 --size=8m --verify=crc32c --do_verify=1 --verify_fatal=1 || die "fio verify failed"

# Teardown with targetcli too (the daemon still runs: it answers REMOVED_DEVICE).
tc unloop /loopback delete "$wwn" || die "targetcli loopback delete failed"
rm -f "$STATE/lun.tcgood"
tc delete /backstores/user:file delete tcgood || die "targetcli delete failed"
! [ -d "$so" ] || die "$so still exists after delete"
rm -f "$STATE/backstore.$hba.tcgood"
handler_stop
result stop_rc "$HANDLER_RC"
[ "$HANDLER_RC" = 0 ] || die "daemon exited with $HANDLER_RC"
