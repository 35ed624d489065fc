#!/bin/sh
# Run every VM scenario against a tcmu-warden binary.
# usage: run-all.sh [--each] BINARY [SCENARIO-NAME...]
#   default: all scenarios in ONE boot (each boot costs ~5-10 s under TCG);
#   --each:  one boot per scenario (isolation when a scenario wedges the kernel).
# Exit status non-zero if any scenario failed or a VM did not finish.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

each=0
[ "${1:-}" = --each ] && { each=1; shift; }
[ $# -ge 1 ] || { echo "usage: $0 [--each] BINARY [SCENARIO-NAME...]" >&2; exit 2; }
binary=$1; shift
# Cheap when everything is present; makes a fresh CI machine work with one command.
"$here/../../scripts/install-vm-deps.sh"

[ $# -gt 0 ] || set -- smoke sg xcopy alua fio-verify ringfull kill-restart netlink badcfg restart-adopt retry hang outage lost targetcli
scenarios=""
for n in "$@"; do
    f="$here/scenarios/${n%.sh}.sh"
    [ -f "$f" ] || { echo "run-all: no scenario $f" >&2; exit 2; }
    scenarios="$scenarios $f"
done

start=$(date +%s)
status=0
if [ "$each" = 1 ]; then
    for f in $scenarios; do "$here/run-vm.sh" "$binary" "$f" || status=1; done
else
    # shellcheck disable=SC2086
    "$here/run-vm.sh" "$binary" $scenarios || status=1
fi
echo "run-all: $( [ $status = 0 ] && echo PASS || echo FAIL ) in $(( $(date +%s) - start ))s"
exit $status
