#!/usr/bin/env python3
"""Host half of the profiling run (bench/vm/profile.sh; see bench/vm/README.md, "Profiling").

One boot per target (tcmu-warden, tcmu-runner; the guest side of compare.sh, unchanged) with
perf in the guest (tests/vm/layers/perf.sh) and scenarios/profile-lib.sh's hooks: every job
runs once, with perf stat (the daemon and the whole guest) and perf record -a -g -e cpu-clock
switched on and off around the job's measurement window. The reports come back on the
results channel as "prof=SEQ:KIND|LINE" lines; this writes them to
BENCH_OUT/profile-TARGET/SEQ-JOB-hwN.KIND.txt, the per-I/O counts to BENCH_OUT/profile.json,
and prints, per job, both daemons side by side: CPU, context switches, system calls (by
name) per I/O and the top symbols of each daemon's samples.

usage: profile.py [--warden BIN] [--runner DIR]
       profile.py --from-dir DIR    (re-derive a saved run's figures from DIR/profile-vm-*/, no boot)
env: BENCH_TARGETS ("warden runner"), BENCH_PROFILE_CONFIGS (HW:RING:JOB/JOB... as in
     scenarios/compare.sh; default the issue's jobs: "128:1024:randread4k-qd32/randread4k-qd1/
     seqwrite1m-qd8 1024:1024:seqwrite1m-qd8"), BENCH_RUNTIME_MS (5000), BENCH_RAMP_MS (1000),
     BENCH_SIZE_MB (256), BENCH_PROF_FREQ (997 samples/s per CPU), BENCH_PROF_CALLERS (1; 0
     skips the call-graph report), BENCH_PROF_TOP (12 symbols printed per daemon),
     BENCH_HANDLER_ARGS, BENCH_OUT (bench/out)
"""
import json
import os
import sys
import tempfile

from bench import (REPO, binary_info, fmt_tp, fmt_us, log, make_scenario, ok, out_dir, print_failure_tail,
                   run_boot, utc_now)
from compare import runner_extra_root

DEFAULT_CONFIGS = "128:1024:randread4k-qd32/randread4k-qd1/seqwrite1m-qd8 1024:1024:seqwrite1m-qd8"


def parse_args(argv):
    a = {"warden": os.path.join(REPO, "target", "release", "tcmu-warden"), "runner": None}
    it = iter(argv)
    for x in it:
        if x in ("--warden", "--runner"):
            a[x[2:]] = next(it, None)
            if a[x[2:]] is None:
                sys.exit(f"profile: {x} needs a value")
        elif x in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            sys.exit(f"profile: unknown argument {x} (--help)")
    a["warden"] = os.path.abspath(a["warden"])
    return a


def parse_stat(lines):
    """perf stat -x, lines -> {event: (value, seconds the counter ran)} (task-clock in ms)."""
    out = {}
    for line in lines:
        f = line.split(",")
        if len(f) < 4 or line.startswith("#"):
            continue
        try:
            v, on_s = float(f[0]), float(f[3]) / 1e9
        except ValueError:
            continue       # "<not counted>", "<not supported>"
        ev = f[2].replace("syscalls:sys_enter_", "sys_").replace("raw_syscalls:sys_enter", "syscalls")
        out[ev] = (v, on_s)
    return out


def perf_ios(r, system, ncpu):
    """I/Os while the whole-guest counters ran: the window's I/Os scaled by perf's own time
    over the window's length (perf is switched on just before the window opens and off just
    after it closes; the whole guest's task-clock is that time on every CPU)."""
    ios, win_s = r.get("win_ios", 0), r.get("win_cs", 0) / 100
    tc = system.get("task-clock", (0, 0))[0]
    if not (ios and win_s and tc and ncpu):
        return ios
    return ios * (tc / 1000 / ncpu) / win_s


def system_per_io(stat, ios):
    """Whole-guest counts per I/O; task-clock (ms, idle included) as µs per I/O."""
    if not ios:
        return {}
    return {("cpu_us" if k == "task-clock" else k): round(v * 1000 / ios, 1) if k == "task-clock" else round(v / ios, 3)
            for k, (v, _) in stat.items()}


def daemon_per_io(stat, r):
    """The daemon's counts per I/O. Its counters are per thread: perf switches them on one
    after another (most of a second under TCG) and each one's time runs only while a thread
    of the daemon is on a CPU, so each count is taken per second of the daemon's CPU time and
    multiplied by the daemon's CPU per I/O in the window (/proc/PID/stat, bench-lib.sh)."""
    cpu_us = r.get("handler_cpu_us_per_io")
    if not cpu_us:
        return {}
    d = {"cpu_us": cpu_us}
    for k, (v, on_s) in stat.items():
        if k != "task-clock" and on_s:
            d[k] = round(v / on_s * cpu_us / 1e6, 3)
    return d


def top_symbols(lines, n):
    """The first n entries of a flat report: (percent, samples, comm, dso, symbol)."""
    out = []
    for line in lines:
        f = line.split()
        if len(f) < 5 or not f[0].endswith("%"):
            continue
        # percent samples comm dso [.]/[k] symbol...
        sym = " ".join(f[5:]) if len(f) > 5 else f[-1]
        out.append((f[0], f[1], f[2], f[3], f[4] + " " + sym))
        if len(out) >= n:
            break
    return out


def from_dir(outdir):
    """Re-derive the figures and files of a saved run from its results.txt files, no boot."""
    from bench import derive, parse_kv
    doc = {"benchmark": "profile", "from_dir": outdir, "jobs": [], "problems": []}
    targets = []
    for target in ("warden", "runner"):
        res = os.path.join(outdir, f"profile-vm-{target}", "results.txt")
        if not os.path.exists(res):
            continue
        targets.append(target)
        recs, prof, ncpu = {}, {}, 2
        for line in open(res, errors="replace").read().splitlines():
            if line.startswith("benchrec="):
                r = derive(parse_kv(line[len("benchrec="):]))
                recs[r["seq"]] = r
            elif line.startswith("prof=") and "|" in line:
                head, text = line[5:].split("|", 1)
                seq, kind = head.split(":", 1)
                prof.setdefault((int(seq), kind), []).append(text)
            elif line.startswith("ncpu=") and line[5:].isdigit():
                ncpu = int(line[5:])
        pdir = os.path.join(outdir, f"profile-{target}")
        os.makedirs(pdir, exist_ok=True)
        doc["jobs"] += collect(target, recs, prof, ncpu, pdir, int(os.environ.get("BENCH_PROF_TOP", "12")), None)
    return finish(doc, outdir, targets)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--from-dir":
        return from_dir(os.path.abspath(sys.argv[2]))
    a = parse_args(sys.argv[1:])
    env = os.environ.get
    targets = env("BENCH_TARGETS", "warden runner").split()
    configs = env("BENCH_PROFILE_CONFIGS", DEFAULT_CONFIGS)
    runtime_ms, ramp_ms = int(env("BENCH_RUNTIME_MS", "5000")), int(env("BENCH_RAMP_MS", "1000"))
    size_mb = int(env("BENCH_SIZE_MB", "256"))
    topn = int(env("BENCH_PROF_TOP", "12"))
    runner = os.path.abspath(a["runner"]) if a["runner"] else None
    if "warden" in targets and not os.access(a["warden"], os.X_OK):
        sys.exit(f"profile: no tcmu-warden binary at {a['warden']}")
    if "runner" in targets and not (runner and os.access(os.path.join(runner, "bin", "tcmu-runner"), os.X_OK)):
        sys.exit("profile: no tcmu-runner: pass --runner DIR (scripts/build-tcmu-runner.sh prints it)")
    outdir = out_dir()
    tmpdir = tempfile.mkdtemp(prefix="profile.")
    njobs = sum(len(c.split(":", 2)[2].split("/")) for c in configs.split())
    # Per job: fio and its window, three perf start-ups and the reports (slow under TCG).
    timeout = 120 + njobs * ((runtime_ms + ramp_ms) // 1000 + 90)
    doc = {"benchmark": "profile", "started_utc": utc_now(), "loadavg_start": os.getloadavg(),
           "configs": configs, "runtime_ms": runtime_ms, "ramp_ms": ramp_ms, "size_mb": size_mb,
           "warden": binary_info(a["warden"]), "runner": runner, "jobs": [], "problems": []}
    log(f"profile: {'/'.join(targets)}, jobs {configs}, {ramp_ms / 1000:g}+{runtime_ms / 1000:g} s each; "
        f"load {os.getloadavg()[0]:.1f}")
    extra_root = runner_extra_root(runner, tmpdir) if "runner" in targets else None
    for target in targets:
        settings = {"BENCH_TARGET": target, "BENCH_ROUND": 1, "BENCH_CONFIGS": configs,
                    "BENCH_RUNTIME_MS": runtime_ms, "BENCH_RAMP_MS": ramp_ms, "BENCH_SIZE_MB": size_mb,
                    "BENCH_SCALE": "", "BENCH_RUNNER_DIR": runner or "",
                    "BENCH_HANDLER_ARGS": env("BENCH_HANDLER_ARGS", ""),
                    "BENCH_PROF_FREQ": env("BENCH_PROF_FREQ", "997"),
                    "BENCH_PROF_CALLERS": env("BENCH_PROF_CALLERS", "1")}
        scen_dir = os.path.join(tmpdir, target)
        os.makedirs(scen_dir)
        scen = make_scenario("compare", settings, timeout, scen_dir, layers=("perf",), libs=("profile-lib",))
        boot_env = {}
        if target == "runner":
            boot_env = {"VM_EXTRA_FILES": " ".join(os.path.join(runner, d) for d in ("bin", "lib", "handlers")),
                        "VM_EXTRA_ROOT": extra_root}
        pdir = os.path.join(outdir, f"profile-{target}")
        os.makedirs(pdir, exist_ok=True)
        recs, prof, guest = {}, {}, {"ncpu": 2}

        def on_record(r, target=target):
            recs[r["seq"]] = r
            log(f"  {target:<7} {r['job']:<16} hw{r['hw']:<5} {fmt_tp(r['throughput'], r['bs']):>10} "
                f"p50 {fmt_us(r.get('p50_us')):>7}  {r.get('win_ios', 0)} I/Os in {r.get('win_cs', 0) / 100:.2f} s window"
                + ("" if ok(r) else "  FAILED"))

        def on_line(k, v):
            if k == "ncpu" and v.isdigit():
                guest["ncpu"] = int(v)
            elif k == "prof" and "|" in v:
                head, line = v.split("|", 1)
                seq, kind = head.split(":", 1)
                prof.setdefault((int(seq), kind), []).append(line)
            elif k == "perf_version":
                log(f"  guest {v}")

        load = os.getloadavg()
        log(f"profile: boot {target} (load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})")
        rc, info, secs, runlog = run_boot(a["warden"] if target == "warden" else "none", scen,
                                          os.path.join(outdir, f"profile-vm-{target}"), timeout + 30,
                                          on_record, on_line, boot_env)
        if rc != 0:
            doc["problems"].append(f"{target}: run-vm rc={rc}; log {runlog}")
            log(f"profile: boot {target} FAILED (rc={rc}); tail of {runlog}:")
            print_failure_tail(runlog)
        doc["jobs"] += collect(target, recs, prof, guest["ncpu"], pdir, topn, load)
    return finish(doc, outdir, targets)


def collect(target, recs, prof, ncpu, pdir, topn, load):
    """Each job's reports to files, its per-I/O figures to a dict."""
    jobs = []
    for seq, r in sorted(recs.items()):
        stem = os.path.join(pdir, f"{seq}-{r['job']}-hw{r['hw']}")
        for (s, kind), lines in prof.items():
            if s == seq:
                with open(f"{stem}.{kind}.txt", "w") as f:
                    f.write("\n".join(lines) + "\n")
        system = parse_stat(prof.get((seq, "stat-all"), []))
        ios = perf_ios(r, system, ncpu)
        j = {"target": target, "seq": seq, "job": r["job"], "hw": r["hw"], "ok": ok(r),
             "throughput": r["throughput"], "p50_us": r.get("p50_us"), "win_ios": r.get("win_ios", 0),
             "win_s": r.get("win_cs", 0) / 100,
             "perf_ios": round(ios, 1),
             "daemon": daemon_per_io(parse_stat(prof.get((seq, "stat-daemon"), [])), r),
             "system": system_per_io(system, ios),
             "top_daemon": top_symbols(prof.get((seq, "flat-daemon"), []), topn),
             "top_system": top_symbols(prof.get((seq, "flat-all"), []), topn),
             "files": stem + ".*.txt", "loadavg": load}
        jobs.append(j)
    return jobs


def finish(doc, outdir, targets):
    doc["loadavg_end"] = os.getloadavg()
    path = os.path.join(outdir, "profile.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    log("")
    print(summary(doc["jobs"], targets))
    log(f"\nprofile: reports in {outdir}/profile-TARGET/, figures in {path}")
    return 1 if doc["problems"] else 0


KEYS = ["cpu_us", "context-switches", "syscalls", "page-faults", "cpu-migrations"]


def summary(jobs, targets):
    out = []
    keyed = {}
    for j in jobs:
        keyed.setdefault((j["job"], j["hw"]), {})[j["target"]] = j
    for (job, hw), byt in keyed.items():
        out.append(f"== {job} hw{hw}: per I/O, daemon (whole guest in brackets)")
        for t in targets:
            j = byt.get(t)
            if not j:
                continue
            d, s = j["daemon"], j["system"]
            cells = [f"{k.replace('context-switches', 'cs').replace('page-faults', 'pf').replace('cpu-migrations', 'migr')} "
                     f"{d.get(k, '-')} ({s.get(k, '-')})" for k in KEYS]
            out.append(f"  {t:<7} {fmt_tp(j['throughput'], 1 << 20 if job.startswith('seq') else 4096)}, "
                       f"p50 {fmt_us(j['p50_us'])}, {j['perf_ios']} I/Os profiled: " + ", ".join(cells))
            calls = sorted(((k[4:], v) for k, v in d.items() if k.startswith("sys_") and v), key=lambda x: -x[1])
            if calls:
                out.append("          syscalls/IO: " + ", ".join(f"{k} {v:g}" for k, v in calls))
        for t in targets:
            j = byt.get(t)
            if j and j["top_daemon"]:
                out.append(f"  {t} top symbols (share of the daemon's samples):")
                for pct, n, comm, dso, sym in j["top_daemon"]:
                    out.append(f"     {pct:>7} {n:>6}  {comm:<16} {dso:<22} {sym}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
