#!/bin/sh
# The conformance stage: boot the VM scenario tests/vm/scenarios/conformance.sh (libiscsi's
# iscsi-test-cu against the kernel's fileio backstore and against tcmu-warden's user:file
# LUNs at hw_max_sectors 128 and 1024, over LIO's iSCSI target), then compare per test.
# Prints a per-suite table (pass/fail/skip per backstore; "-" for a suite a run did not run),
# the totals and every test whose verdict differs; fails when a test passes on fileio and
# does not pass on a tcmu-warden run, unless tests/conformance/allowlist names it (SUITE.TEST
# and a one-line reason).
#
# usage: tests/conformance/run.sh BINARY [RESULTS_TXT]
#   BINARY       tcmu-warden to test (a release build: the suites are long under TCG)
#   RESULTS_TXT  compare an earlier run's results.txt instead of booting (no BINARY needed:
#                pass "-")
# env: CT_SUITES=S1,S2 CT_RUNS=fileio,user128 CT_SUITE_S=N (see the scenario's header),
#      CT_TIMEOUT_S whole-VM limit (default 2500: a bound for a loaded host; an idle one takes
#      10-12 minutes)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
allow=$here/allowlist
die() { echo "conformance: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: $0 BINARY [RESULTS_TXT]"

if [ $# -ge 2 ]; then
    results=$2
    [ -f "$results" ] || die "no $results"
else
    bin=$1
    [ -x "$bin" ] || die "no handler binary $bin (cargo build --release -p tcmu-warden)"
    # Cheap when everything is present (qemu, the kernel, libiscsi-bin's iscsi-test-cu).
    "$repo/scripts/install-vm-deps.sh"
    append=""
    [ -n "${CT_SUITES:-}" ] && append="$append warden.ct_suites=$CT_SUITES"
    [ -n "${CT_RUNS:-}" ] && append="$append warden.ct_runs=$CT_RUNS"
    [ -n "${CT_SUITE_S:-}" ] && append="$append warden.ct_suite_s=$CT_SUITE_S"
    out=${VM_OUT:-$repo/tests/vm/.cache/runs/conformance-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$out"
    vmrc=0
    VM_OUT=$out VM_APPEND="${VM_APPEND:-}$append" "$repo/tests/vm/run-vm.sh" "$bin" \
        "$repo/tests/vm/scenarios/conformance.sh" "${CT_TIMEOUT_S:-2500}" || vmrc=$?
    results=$out/results.txt
    [ "$vmrc" = 0 ] || echo "conformance: the VM run failed (rc=$vmrc); comparing what it reported"
fi
grep -q '^ct ' "$results" || die "no test results in $results"

# ct RUN SUITE TEST VERDICT lines; the allowlist as "allow SUITE.TEST" lines, same stream.
status=0
{ sed -n 's/^\([A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\)[[:space:]].*/allow \1/p' "$allow" 2>/dev/null
  grep '^ct ' "$results"; } | awk -v vmrc="${vmrc:-0}" '
    $1 == "allow" { allowed[$2] = 1; next }
    $4 == "-" { broken[$2 " " $3] = $5; next }
    {
        run = $2; t = $3 "." $4; v = $5
        if (!(run in seen_run)) { seen_run[run] = 1; runs[++nr] = run }
        if (!($3 in seen_suite)) { seen_suite[$3] = 1; suites[++ns] = $3 }
        if (!(t in seen_test)) { seen_test[t] = 1; tests[++nt] = t }
        verdict[run, t] = v; ran[run, $3] = 1; suite_of[t] = $3
        count[run, $3, v]++; total[run, v]++
    }
    END {
        printf "%-26s", "suite"
        for (i = 1; i <= nr; i++) printf " %16s", runs[i] " p/f/s"
        printf "\n"
        for (s = 1; s <= ns; s++) {
            printf "%-26s", suites[s]
            for (i = 1; i <= nr; i++) {
                r = runs[i]
                cell = sprintf("%d/%d/%d", count[r, suites[s], "PASS"], count[r, suites[s], "FAIL"], count[r, suites[s], "SKIP"])
                if (!((r, suites[s]) in ran)) cell = "-"
                if ((r " " suites[s]) in broken) cell = cell " " broken[r " " suites[s]]
                printf " %16s", cell
            }
            printf "\n"
        }
        printf "%-26s", "TOTAL"
        for (i = 1; i <= nr; i++) printf " %16s", sprintf("%d/%d/%d", total[runs[i], "PASS"], total[runs[i], "FAIL"], total[runs[i], "SKIP"])
        printf "\n\ntests whose verdict differs between runs:\n"
        bad = 0; ndiff = 0
        for (k = 1; k <= nt; k++) {
            t = tests[k]; line = ""; same = 1; first = ""
            for (i = 1; i <= nr; i++) {
                v = ((runs[i], t) in verdict) ? verdict[runs[i], t] : (((runs[i], suite_of[t]) in ran) ? "MISSING" : "-")
                if (v == "-") continue
                if (first == "") first = v; else if (v != first) same = 0
                line = line sprintf(" %s=%s", runs[i], v)
            }
            if (same) continue
            ndiff++
            mark = ""
            if (verdict["fileio", t] == "PASS") {
                for (i = 1; i <= nr; i++) {
                    r = runs[i]
                    if (r == "fileio") continue
                    v = ((r, t) in verdict) ? verdict[r, t] : (((r, suite_of[t]) in ran) ? "MISSING" : "-")
                    if (v != "PASS" && v != "SKIP" && v != "-") mark = (t in allowed) ? "  (allowlisted)" : "  REGRESSION"
                }
            }
            if (mark == "  REGRESSION") bad++
            printf "  %-44s%s%s\n", t, line, mark
        }
        if (ndiff == 0) print "  (none)"
        for (k in broken) { printf "suite %s: %s\n", k, broken[k] }
        if (!("fileio" in seen_run)) { print "no fileio run: nothing to compare with"; }
        printf "\nconformance: %d regression(s) against fileio\n", bad
        exit (bad > 0 || vmrc != 0) ? 1 : 0
    }' || status=1
exit $status
