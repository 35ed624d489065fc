# vm-timeout: 2400
# vm-layer: libiscsi
# SCSI conformance over LIO's iSCSI fabric: libiscsi's iscsi-test-cu --dataloss against the
# kernel's fileio backstore (the reference: LIO's own SBC emulation) and against user:file
# LUNs served by tcmu-warden at hw_max_sectors 128 (the kernel's default) and 1024
# (ceph-iscsi's), each a 64 MiB LUN 0 of its own demo-mode target on 127.0.0.1:3260, one
# iscsi-test-cu process per suite, each bounded. Per test it reports "ct RUN SUITE TEST
# PASS|FAIL|SKIP" lines on the results channel; tests/conformance/run.sh boots it, compares
# the runs and prints the table. fileio runs once: its hw_max_sectors is fixed by the
# backstore (read-only in configfs). user1024 runs only the suites whose commands move blocks
# or report the block limits (the ones hw_max_sectors can change; the others, many of them
# answered by LIO's core, gave the same verdicts at 128 and 1024): warden.ct_full=1 runs all.
#
# Kernel command line (all optional), for shorter runs while developing:
#   warden.ct_suites=S1,S2    suites of family ALL (default: every suite --list names)
#   warden.ct_runs=R1,R2      among fileio,user128,user1024 (default: all three)
#   warden.ct_suite_s=N       time limit of one suite's process (default 300 s)
#   warden.ct_raw=1           copy every suite's output to the console log
#   warden.ct_full=1          user1024 runs every suite as well
have_handler || die "the conformance scenario needs the handler binary"
arg() { sed -n "s/.*warden\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
suites=$(arg ct_suites | tr , ' ')
runs=$(arg ct_runs | tr , ' ')
suite_s=$(arg ct_suite_s)
raw=$(arg ct_raw)
full=$(arg ct_full)
: "${runs:=fileio user128 user1024}" "${suite_s:=300}" "${raw:=0}" "${full:=0}"
# The suites that transfer blocks or read VPD B0, where hw_max_sectors (MAXIMUM TRANSFER
# LENGTH) can matter: all that user1024 runs unless warden.ct_full=1.
hw_suites=" CompareAndWrite ExtendedCopy GetLBAStatus Inquiry Read6 Read10 Read12 Read16
 ReceiveCopyResults Unmap Verify10 Verify16 Write10 Write12 Write16 WriteSame10 WriteSame16
 WriteVerify10 WriteVerify16 iSCSIResiduals "
hw_suites=$(echo $hw_suites)
if [ -z "$suites" ]; then
    suites=$(iscsi-test-cu --list | sed -n 's/^ALL\.\([^.]*\)$/\1/p')
fi
[ -n "$suites" ] || die "iscsi-test-cu --list named no suite"
result ct_suites "$(echo $suites | wc -w)"
size=$((64 * 1024 * 1024))
iqn_base=iqn.2003-01.org.linux-iscsi.tcmu-warden
# The initiator name libiscsi logs in with; its second (-I) is for multipath tests only.
initiator=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test

# Backstores and targets first, one target per run.
uios=""
for r in $runs; do
    truncate -s "$size" "/tmp/$r.img"
    case $r in
        fileio) fileio_backstore_create ct_fileio "$size" /tmp/fileio.img ;;
        user*)
            n=$(user_backstore_create "ct_$r" "$size" "/tmp/$r.img" "hw_max_sectors=${r#user}")
            uios="$uios --uio /dev/uio$n"
            ;;
        *) die "unknown run $r" ;;
    esac
done
if [ -n "$uios" ]; then
    # shellcheck disable=SC2086
    handler_start $uios
fi
for r in $runs; do
    iscsi_target_create "$iqn_base:$r"
    case $r in
        fileio) iscsi_lun_create "$iqn_base:$r" 0 "$CFS/core/fileio_0/ct_fileio" ;;
        user*) iscsi_lun_create "$iqn_base:$r" 0 "$CFS/core/user_0/ct_$r" ;;
    esac
    result "ct_${r}_hw_max_sectors" "$(cat "$CFS/core/${r%%[0-9]*}_0/ct_$r/attrib/hw_max_sectors" 2>/dev/null ||
        cat "$CFS/core/fileio_0/ct_fileio/attrib/hw_max_sectors")"
done

# One suite: run it bounded, turn its CUnit output into "ct" lines. A test that printed
# [SKIPPED] and passed is SKIP (libiscsi skips with CU_PASS); a suite that timed out or
# crashed reports its unfinished test as FAIL and a "ct RUN SUITE - TIMEOUT|CRASH" line.
run_suite() { # RUN SUITE URL
    out=/tmp/ct.out
    rc=0
    timeout -s KILL "$suite_s" iscsi-test-cu --dataloss -i "$initiator" -t "ALL.$2" "$3" \
        >"$out" 2>&1 </dev/null || rc=$?
    [ "$raw" = 1 ] && sed "s/^/ct-raw $1 $2: /" "$out" >&2
    awk -v run="$1" -v suite="$2" -v rc="$rc" '
        function flush(verdict) {
            if (test == "") return
            if (verdict == "PASS" && skipped) verdict = "SKIP"
            print "ct " run " " suite " " test " " verdict
            test = ""
        }
        /^  Test: / {
            flush("FAIL")
            test = $2; skipped = 0
            if ($0 ~ /\.\.\.passed$/) flush("PASS")
            else if ($0 ~ /\.\.\.FAILED$/) flush("FAIL")
            next
        }
        /\[SKIPPED\]/ { skipped = 1 }
        /^passed$|\.\.\.passed$/ { flush("PASS"); next }
        /^FAILED$|\.\.\.FAILED$/ { flush("FAIL"); next }
        END {
            flush("FAIL")
            if (rc == 137) print "ct " run " " suite " - TIMEOUT"
            else if (rc > 128) print "ct " run " " suite " - CRASH"
        }' "$out" >&3
}
exec 3>/dev/ttyS1
for r in $runs; do
    url=$(iscsi_url "$iqn_base:$r" 0)
    t=$(now_ms)
    for s in $suites; do
        if [ "$r" = user1024 ] && [ "$full" != 1 ]; then
            case " $hw_suites " in *" $s "*) ;; *) continue ;; esac
        fi
        log "conformance: $r $s"
        ts=$(now_ms)
        run_suite "$r" "$s" "$url"
        # Per-suite time (run.sh reads only "ct " lines).
        echo "ct-time $r $s $(( ($(now_ms) - ts) / 1000 ))" >&3
    done
    result "ct_${r}_s" $(( ($(now_ms) - t) / 1000 ))
done
exec 3>&-

for r in $runs; do iscsi_target_remove "$iqn_base:$r"; done
for r in $runs; do
    case $r in
        fileio) fileio_backstore_remove ct_fileio ;;
        user*) user_backstore_remove "ct_$r" ;;
    esac
done
if [ -n "$uios" ]; then
    handler_stop
    [ "$HANDLER_RC" = 0 ] || die "handler exited with $HANDLER_RC after SIGTERM"
fi
