# vm-timeout: 1200
# One gateway of the Ceph iSCSI pair (tests/vm/systemd/ha.sh; the initiator runs ha-initiator):
# tcmu-warden under the installed unit serves the RBD image of ./extra/env as user:rbd LUN lun0,
# set up the way ceph-iscsi sets up a gateway:
#   - the same target IQN and the same unit serial (so the same NAA WWN) on both gateways;
#   - one TPG per gateway, tag 1 for HA_GW0 and 2 for HA_GW1; only the local one is enabled and
#     has a portal (the local address:3260), the other one exists disabled;
#   - ALUA target port groups on the device, `ao` (id 1, active/optimized: gateway 0 is the
#     LUN's configured owner) and `ano2` (id 2, active/non-optimized), both implicit; LUN 0 of
#     TPG 1 is in `ao`, of TPG 2 in `ano2`. tcmu-warden then moves the states with the image's
#     exclusive lock (docs/rbd.md).
# A drop-in raises the unit's WatchdogSec to 90 s so that a SIGSTOP of the daemon can outlast the
# initiator's timeouts before systemd replaces it (the fault the initiator asks for).
# Then it serves until the initiator says "done", answering on TCP port HA_CTL_PORT: ping,
# state, kill9, stop, cont, diag NAME (the initiator's snapshot of a failure: daemon status and
# diagnose, journal with DEVICE, dmesg, ALUA states; printed as the scenario ends), poweroff
# (sysrq b: the guest is gone at once, ha.sh boots it again on the same disk and this scenario
# sets the gateway up again), done.
. ./lib.sh
[ -f extra/env ] || die "no ./extra/env (boot with tests/vm/systemd/ha.sh)"
. extra/env # RBD_IMAGE RBD_SIZE_MB HA_IQN HA_SERIAL HA_GW0 HA_GW1 HA_CTL_PORT
me=$(ip -4 -o addr show dev eth0 | awk '{ print $4 }' | cut -d/ -f1)
case $me in
    "$HA_GW0") tag=1 ;;
    "$HA_GW1") tag=2 ;;
    *) die "this guest ($me) is neither gateway" ;;
esac
result gateway "gw$((tag - 1))_$me"
state=/var/lib/warden-test
mkdir -p "$state"
# After the initiator's "done" (a failed run that never powered this guest off): nothing to do.
if [ -e "$state/ha.done" ]; then
    result ha_gateway skipped_after_done
    exit 0
fi
boot=$(($(cat "$state/ha.boots" 2>/dev/null || echo 0) + 1))
echo "$boot" >"$state/ha.boots"
result gateway_boot "$boot"

# A host name of its own (the service map's daemon names start with it) and the watchdog
# drop-in, both in place before the package's postinst starts the daemon (the first boot); the
# cluster's client configuration.
hostname "warden-gw$((tag - 1))"
hostname >/etc/hostname
install -d -m 0755 /etc/ceph /etc/systemd/system/tcmu-warden.service.d
install -m 0644 extra/ceph.conf /etc/ceph/ceph.conf
install -m 0600 extra/keyring /etc/ceph/keyring
printf '[Service]\nWatchdogSec=90s\n' >/etc/systemd/system/tcmu-warden.service.d/ha-test.conf
if ! dpkg-query -W -f='${Status}' tcmu-warden 2>/dev/null | grep -q 'install ok installed'; then
    deb=$(ls debs/tcmu-warden_*.deb | head -n1)
    t0=$(now)
    apt-get install -y -q "$PWD/$deb" 2>&1 | tail -n 2
    result install_s "$(elapsed "$t0")"
fi
wait_until 120 active || die "tcmu-warden not running"
[ "$(systemctl show -p WatchdogUSec --value tcmu-warden)" = "1min 30s" ] ||
    die "the watchdog drop-in is not in effect ($(systemctl show -p WatchdogUSec --value tcmu-warden))"

# The LUN and the target, as ceph-iscsi makes them (rtslib, targetcli's library, in one process:
# a dozen targetcli calls take minutes under TCG).
t0=$(now)
python3 - "$HA_IQN" "$tag" "$me" "$RBD_IMAGE" "$RBD_SIZE_MB" "$HA_SERIAL" <<'PY' || die "target set-up failed"
import os
import sys
from rtslib_fb import (LUN, TPG, FabricModule, NetworkPortal, RTSRoot, Target,
                       UserBackedStorageObject)
from rtslib_fb.utils import fwrite

iqn, tag, me, image, size_mb, serial = sys.argv[1:]
tag = int(tag)
RTSRoot().clear_existing(confirm=True)
so = UserBackedStorageObject("lun0", config="rbd/" + image, size=int(size_mb) << 20, wwn=serial)
so.set_attribute("cmd_time_out", 150)
# The ALUA groups: ao (id 1, gateway 0's TPG, the configured owner: active/optimized) and ano2
# (id 2, gateway 1's TPG: active/non-optimized), implicit transitions only.
for name, gid, state in (("ao", 1, 0), ("ano2", 2, 1)):
    path = "%s/alua/%s" % (so.path, name)
    os.makedirs(path, exist_ok=True)
    fwrite(path + "/tg_pt_gp_id", gid)
    fwrite(path + "/alua_access_type", 1)
    fwrite(path + "/alua_access_state", state)
target = Target(FabricModule("iscsi"), iqn)
for t in (1, 2):
    tpg = TPG(target, t)
    lun = LUN(tpg, 0, so)
    for k, v in (("generate_node_acls", 1), ("demo_mode_write_protect", 0),
                 ("authentication", 0), ("cache_dynamic_acls", 1)):
        tpg.set_attribute(k, v)
    lun.alua_tg_pt_gp_name = "ao" if t == 1 else "ano%d" % t
    if t == tag:
        NetworkPortal(tpg, me, 3260)
        tpg.enable = True
    else:
        tpg.enable = False
PY
result target_setup_s "$(elapsed "$t0")"
dev=$(ls -d /sys/kernel/config/target/core/user_*/lun0)
for g in ao ano2; do
    log "alua/$g: id $(cat "$dev/alua/$g/tg_pt_gp_id") state $(cat "$dev/alua/$g/alua_access_state") members $(tr '\n\0' '  ' <"$dev/alua/$g/members")"
done
for t in 1 2; do
    log "tpg$t: enable $(cat "/sys/kernel/config/target/iscsi/$HA_IQN/tpgt_$t/enable")"
done
wait_until 30 sh -c "ss -ltn | grep -q '$me:3260'" || die "nobody listens on $me:3260"
sync

# The control port. Replies are one line; kill9/stop/poweroff answer with the fault's time.
cat >/tmp/ha-ctl.py <<'PY'
import os, signal, socketserver, subprocess, sys, time

port = int(sys.argv[1])


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()


def pid():
    return int(sh("systemctl show -p MainPID --value tcmu-warden") or 0)


DIAG = r"""
exec 2>&1
echo "--- uptime $(cat /proc/uptime) date $(date +%s.%N)"
echo "--- systemctl"; systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts tcmu-warden
echo "--- tcmu-warden status"; timeout 10 tcmu-warden status
echo "--- tcmu-warden diagnose"; timeout 10 tcmu-warden diagnose
echo "--- alua"
for g in /sys/kernel/config/target/core/user_*/lun0/alua/*/; do
    echo "$(basename "$g") id $(cat "$g/tg_pt_gp_id") state $(cat "$g/alua_access_state")"
done
echo "--- metrics (lock, alua)"
timeout 10 curl -s http://127.0.0.1:9559/metrics | grep -E '^tcmu_warden_rbd_(lock|alua)' | head -n 40
echo "--- journal (DEVICE field)"
journalctl -u tcmu-warden -b --no-pager -o json --output-fields=MESSAGE,DEVICE,PRIORITY | tail -n 150 |
    python3 -c 'import json, sys, time
for l in sys.stdin:
    try:
        j = json.loads(l)
    except ValueError:
        continue
    m = j.get("MESSAGE")
    m = bytes(m).decode(errors="replace") if isinstance(m, list) else m
    t = int(j.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    print("%.3f p%s %s %s" % (t, j.get("PRIORITY", "?"), j.get("DEVICE", "-"), m))'
echo "--- dmesg"; dmesg | tail -n 150
"""


def event(line):
    with open("/tmp/ha.events", "a") as f:
        f.write(line + "\n")


def handle(cmd):
    if cmd == "ping":
        return "ready"
    if cmd == "state":
        owner = sh("timeout 10 tcmu-warden status 2>&1 | grep -m1 'owner:' | sed 's/^ *//'")
        return "%s pid=%d %s" % (sh("systemctl is-active tcmu-warden"), pid(), owner or "owner: ?")
    if cmd in ("kill9", "stop"):
        p = pid()
        if p <= 0:
            return "ERR no daemon"
        t = time.time()
        os.kill(p, signal.SIGKILL if cmd == "kill9" else signal.SIGSTOP)
        if cmd == "stop":
            with open("/tmp/ha.stopped", "w") as f:
                f.write(str(p))
        event("%s %.3f %d" % (cmd, t, p))
        return "%.3f %d" % (t, p)
    if cmd == "cont":
        p = int(open("/tmp/ha.stopped").read())
        t = time.time()
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            return "%.3f gone" % t
        event("cont %.3f %d" % (t, p))
        return "%.3f %d" % (t, p)
    if cmd.startswith("diag "):
        # What the initiator needs to see a stall, taken at the moment it reports one: the
        # daemon's own view, the kernel's (LIO aborts, TCMU ring), the journal with the
        # DEVICE field, the ALUA group states; printed when the scenario ends.
        name = "".join(c for c in cmd[5:] if c.isalnum() or c in "-_") or "x"
        # In the background (under TCG it takes longer than the initiator waits for a reply).
        with open("/tmp/diag." + name, "w") as f:
            subprocess.Popen(["timeout", "120", "bash", "-c", DIAG], stdout=f, stderr=f)
        return "ok"
    if cmd == "done":
        open("/tmp/ha.done", "w").close()
        return "bye"
    return "ERR unknown command"


class H(socketserver.StreamRequestHandler):
    def handle(self):
        cmd = self.rfile.readline().decode().strip()
        if cmd == "poweroff":
            # The results first (fd 3 is the runner's ttyS1), the reply with the time the power
            # goes (0.3 s ahead, so that the reply leaves the guest first), then the power is cut
            # (sysrq b: an immediate reset without shutting anything down, and ha.sh's qemu runs
            # with -no-reboot, so the machine is gone; the daemon's RADOS sessions just vanish).
            # Not sysrq o: its orderly device shutdown hung here behind the busy target and the
            # guest never powered off.
            os.sync()
            t = time.time() + 0.3
            os.write(3, ("poweroff_at=%.3f\n=== END ha-gateway rc=0\n=== DONE\n" % t).encode())
            self.wfile.write(("%.3f\n" % t).encode())
            self.wfile.flush()
            time.sleep(max(0.0, t - time.time()))
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("b")
            time.sleep(60)
            return
        try:
            reply = handle(cmd)
        except Exception as e:  # a reply, never a dead server
            reply = "ERR %s" % e
        self.wfile.write((reply + "\n").encode())


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", port), H).serve_forever()
PY
python3 /tmp/ha-ctl.py "$HA_CTL_PORT" 3>&3 >/tmp/ha-ctl.log 2>&1 &
ctl=$!
result ready_at_uptime_s "$(cut -d' ' -f1 /proc/uptime)"
log "gateway gw$((tag - 1)) ready on $me:3260, control port $HA_CTL_PORT"
# Serve until "done" (the initiator's last word); the runner's limit bounds the wait.
while [ ! -e /tmp/ha.done ]; do
    kill -0 "$ctl" 2>/dev/null || { cat /tmp/ha-ctl.log; die "the control server died"; }
    sleep 1
done
kill "$ctl" 2>/dev/null || true
[ ! -e /tmp/ha.events ] || sed 's/^/event: /' /tmp/ha.events
for f in /tmp/diag.*; do
    if [ -e "$f" ]; then sed "s/^/${f#/tmp/}: /" "$f"; fi
done
# What the daemon saw: its ALUA transitions and lock moves (metrics), the journal's lines.
curl -s --max-time 10 http://127.0.0.1:9559/metrics >/tmp/metrics || true
grep -E '^tcmu_warden_rbd_(alua_transitions_total|time_to_optimized_seconds_(sum|count)|lock_owner)' /tmp/metrics |
    sed 's/^/metric: /' || true
for to in active_optimized active_non_optimized; do
    result "alua_to_$to" "$(awk -v to="to=\"$to\"" '/^tcmu_warden_rbd_alua_transitions_total/ && index($0, to) { s += $NF } END { print s + 0 }' /tmp/metrics)"
done
wjournal | grep -iE 'ALUA|lock' | tail -n 20 | sed 's/^/journal: /' || true
# Leave the image clean: the target and the LUN go, the daemon stops (no watcher, no lock).
touch "$state/ha.done"
python3 -c 'from rtslib_fb import RTSRoot; RTSRoot().clear_existing(confirm=True)' || die "clearing the target failed"
systemctl stop tcmu-warden
sync
