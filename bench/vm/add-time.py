#!/usr/bin/env python3
"""Where the time of adding a LUN goes: compare.sh's scale run, one boot per target, with the
daemon's own share of every add read from tcmu-warden's `added answered` log lines.

usage: bench/vm/add-time.py [--runner DIR] TARGET...
  TARGET  warden=PATH (a tcmu-warden binary) or runner (tcmu-runner from DIR, as compare.sh
          builds it); boots run in the order given, so alternate them for an A/B
env:    BENCH_SCALE (default "1 64 256"), BENCH_OUT (default bench/out)

Each boot is bench/vm/scenarios/compare.sh's scale run (BENCH_CONFIGS empty: no jobs), with a
tail that copies the daemon's `added answered` lines to the results channel. Printed per boot:
the host's load average before and after, the add times at each count (as compare.sh prints
them), and for tcmu-warden, per quarter of the LUNs: the mean time from one answer to the next
(the whole add: shell, kernel and daemon), the daemon's share (`answered_ms`: from the ADDED
read to the answer sent) and its stages, and the daemon's CPU time per add (differences of the
`cpu_ms` field). Writes BENCH_OUT/add-time.json. See bench/vm/README.md, "Adding LUNs".
"""
import datetime
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import REPO, log, out_dir, run_boot, utc_now  # noqa: E402
from compare import runner_extra_root  # noqa: E402

TAIL = r'''
# add-time: the daemon's "added answered" lines, to the results channel.
if [ "$BENCH_TARGET" = warden ] && [ -n "${HANDLER_LOG:-}" ]; then
    grep 'added answered' "$HANDLER_LOG" | while read -r _l; do bench_out "addline=$_l"; done
fi
'''

STAGES = ["thread_ms", "uio_ms", "attrs_ms", "backend_ms", "map_ms", "config_ms",
          "device_ms", "link_ms", "state_ms", "loop_ms", "opened_ms", "handed_ms", "answered_ms"]


# Before compare.sh's main part: its proc_status (called at each count of the scale run, and
# at 0) also reports the daemon's CPU time, per thread, and the guest's busy time, in clock
# ticks. Shell builtins only: the sample falls inside the timed adds (a first version forked
# two processes per thread and slowed tcmu-runner's adds after 64 LUNs, with its 197 threads,
# by seconds).
CPU = r'''
proc_status() {
    _add_time_pid=$1
    _rss_kb=0 _threads=0
    while read -r _k _v _; do
        case $_k in VmRSS:) _rss_kb=$_v ;; Threads:) _threads=$_v ;; esac
    done <"/proc/$1/status"
    read -r _at_st <"/proc/$1/stat"; _at_st=${_at_st##*) }
    set -- $_at_st
    _at_dcpu=$(( ${12} + ${13} ))
    read -r _at_c _at_u _at_n _at_s _at_i _at_w _at_q _at_sq _at_stl _at_rest </proc/stat
    _at_tasks=""
    for _at_t in /proc/"$_add_time_pid"/task/*; do
        read -r _at_ts <"$_at_t/stat" 2>/dev/null || continue
        _at_tn=${_at_ts#*(}; _at_tn=${_at_tn%%)*}; _at_ts=${_at_ts##*) }
        set -- $_at_ts
        _at_tasks="$_at_tasks $_at_tn:$(( ${12} + ${13} ))"
    done
    bench_out "taskcpu=$_at_tasks"
    bench_out "cpurec=ticks_daemon:$_at_dcpu,ticks_guest_busy:$(( _at_u + _at_n + _at_s + _at_q + _at_sq + _at_stl )),ticks_guest_idle:$(( _at_i + _at_w )),uptime_cs:$(now_cs)"
}
'''


def scenario(settings, tmpdir):
    def body(fname):
        return [line for line in open(os.path.join(HERE, "scenarios", fname)).read().splitlines()
                if not line.startswith("# vm-timeout:")]
    head = ["# vm-timeout: 1500"] + [f"{k}='{v}'" for k, v in settings.items()]
    main = body("compare.sh")
    cut = next(i for i, line in enumerate(main) if re.match(r"# -+ main", line))
    path = os.path.join(tmpdir, "compare.sh")
    with open(path, "w") as f:
        f.write("\n".join(head + body("bench-lib.sh") + main[:cut] + CPU.splitlines() + main[cut:])
                + "\n" + TAIL)
    return path


def parse_line(line):
    m = re.match(r"(\S+Z)\s", line)
    rec = {"t": datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() if m else None}
    for k, v in re.findall(r"(\w+)=(\S+)", line):
        try:
            rec[k] = float(v)
        except ValueError:
            rec[k] = v
    return rec


def mean(v):
    return sum(v) / len(v) if v else float("nan")


def quarters(lines):
    """Per quarter of the adds: mean interval between answers, daemon share, stages, CPU."""
    out = []
    n = len(lines)
    for q in range(4):
        part = lines[q * n // 4:(q + 1) * n // 4]
        if not part:
            continue
        i0 = q * n // 4
        prev = [lines[i - 1] for i in range(max(i0, 1), i0 + len(part))]
        cur = lines[max(i0, 1):i0 + len(part)]
        gaps = [(c["t"] - p["t"]) * 1e3 for p, c in zip(prev, cur) if c["t"] and p["t"]]
        cpu = [c["cpu_ms"] - p["cpu_ms"] for p, c in zip(prev, cur)]
        row = {"luns": f"{i0 + 1}-{i0 + len(part)}", "between_answers_ms": round(mean(gaps), 2),
               "daemon_cpu_ms_per_add": round(mean(cpu), 2)}
        for s in STAGES:
            row[s] = round(mean([r.get(s, 0.0) for r in part]), 3)
        row["answered_ms_max"] = max(r.get("answered_ms", 0.0) for r in part)
        out.append(row)
    return out


def main():
    args = sys.argv[1:]
    runner = None
    if len(args) >= 2 and args[0] == "--runner":
        runner, args = os.path.abspath(args[1]), args[2:]
    if not args:
        sys.exit(__doc__)
    scale = os.environ.get("BENCH_SCALE", "1 64 256")
    outdir = out_dir()
    tmpdir = tempfile.mkdtemp(prefix="add-time.")
    extra_root = None
    doc = {"started_utc": utc_now(), "scale": scale, "boots": []}
    for i, t in enumerate(args, 1):
        target, _, binary = t.partition("=")
        if target == "runner":
            if not runner:
                sys.exit("add-time: runner needs --runner DIR (scripts/build-tcmu-runner.sh prints it)")
            extra_root = extra_root or runner_extra_root(runner, tmpdir)
        elif target != "warden" or not os.access(binary, os.X_OK):
            sys.exit(f"add-time: bad target {t}")
        sdir = os.path.join(tmpdir, str(i))
        os.makedirs(sdir)
        settings = {"BENCH_TARGET": target, "BENCH_ROUND": 1, "BENCH_CONFIGS": "", "BENCH_RUNTIME_MS": 1000,
                    "BENCH_RAMP_MS": 500, "BENCH_SIZE_MB": 64, "BENCH_SCALE": scale,
                    "BENCH_RUNNER_DIR": runner or "", "BENCH_HANDLER_ARGS": ""}
        env = {}
        if target == "runner":
            env = {"VM_EXTRA_FILES": " ".join(os.path.join(runner, d) for d in ("bin", "lib", "handlers")),
                   "VM_EXTRA_ROOT": extra_root}
        boot = {"target": target, "binary": binary or runner, "load_before": os.getloadavg()[0],
                "scale": [], "scale_end": None, "lines": []}

        def on_line(k, v, boot=boot):
            if k in ("scalerec", "scaleend"):
                rec = dict((x.split(":", 1) + [""])[:2] for x in v.split(","))
                if k == "scalerec":
                    boot["scale"].append(rec)
                    log(f"  {target}: {rec['luns']:>4} LUNs added in {int(rec['add_ms']) / 1000:.2f} s")
                else:
                    boot["scale_end"] = rec
            elif k == "taskcpu":
                boot.setdefault("tasks", []).append(v.split())
            elif k == "cpurec":
                rec = {kk: int(vv) for kk, vv in (x.split(":", 1) for x in v.split(","))}
                boot.setdefault("cpu", []).append(rec)
            elif k == "addline":
                boot["lines"].append(parse_line(v))

        log(f"add-time: boot {i}/{len(args)}: {t} (load {boot['load_before']:.1f})")
        vm_out = os.path.join(outdir, f"add-time-vm-{i}-{target}")
        rc, _, secs, runlog = run_boot(binary if target == "warden" else "none", scenario(settings, sdir),
                                       vm_out, 1600, lambda r: None, on_line, env)
        boot.update(rc=rc, seconds=round(secs, 1), load_after=os.getloadavg()[0])
        # CPU per LUN added between the counts (clock ticks of 10 ms; cpurec i is scalerec i).
        for (a, ra), (b, rb) in zip(zip(boot.get("cpu", []), boot["scale"]),
                                    zip(boot.get("cpu", [])[1:], boot["scale"][1:])):
            n = int(rb["luns"]) - int(ra["luns"])
            if n > 0 and int(ra["luns"]) > 0:
                seg = {"luns": f"{ra['luns']}-{rb['luns']}",
                       "wall_ms_per_add": round((int(rb["add_ms"]) - int(ra["add_ms"])) / n, 1),
                       "daemon_cpu_ms_per_add": round((b["ticks_daemon"] - a["ticks_daemon"]) * 10 / n, 1),
                       "guest_busy_ms_per_add": round((b["ticks_guest_busy"] - a["ticks_guest_busy"]) * 10 / n, 1)}
                boot.setdefault("cpu_per_add", []).append(seg)
                log("  " + " ".join(f"{k}={v}" for k, v in seg.items()))
        if boot["lines"]:
            boot["quarters"] = quarters(boot["lines"])
            for row in boot["quarters"]:
                log("  " + " ".join(f"{k}={v}" for k, v in row.items()))
        log(f"add-time: boot {i} rc={rc} in {secs:.0f}s, load {boot['load_before']:.1f} -> {boot['load_after']:.1f}"
            + ("" if rc == 0 else f"; see {runlog}"))
        doc["boots"].append(boot)
    path = os.path.join(outdir, "add-time.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    log(f"add-time: {path}")
    return 0 if all(b["rc"] == 0 for b in doc["boots"]) else 1


if __name__ == "__main__":
    sys.exit(main())
