#!/usr/bin/env python3
"""Host half of the ring-size benchmark (see bench/vm/README.md).

Boots the tests/vm harness once with the guest scenario bench/vm/scenarios/ring-size.sh,
follows the results serial channel while the VM runs (one progress line per job), samples the
qemu process's CPU time at the guest's window marks, then writes bench/out/ring-size.json and
bench/out/ring-size.svg and prints the table (each result as a ratio to in-kernel fileio).
The shared machinery (boot, sampling, per-I/O figures, medians) is bench.py.

usage: ring_size.py [--quick] [BIN]
       ring_size.py --from-json FILE   (re-derive summary, table and SVG from a saved run)
env:   BENCH_QUICK=1 (same as --quick), BENCH_ROUNDS, BENCH_RINGS="1 4 ...",
       BENCH_RUNTIME_MS, BENCH_RAMP_MS, BENCH_JOBS="...", BENCH_OUT=dir (default bench/out)
"""
import json
import math
import os
import sys
import tempfile
import time

from bench import (JOBS, QUIET_OTHER_CORES, REPO, binary_info, derive, fmt_tp, fmt_us, group_summary,
                   host_facts, is_quiet, job_bs, log, make_scenario, nice_max, ok, out_dir,
                   print_failure_tail, progress_tail, run_boot, svg_axes, svg_legend, svg_open, utc_now)

TARGET_LABEL = {"fileio": "fileio", "rdmcp": "rd_mcp"}


def parse_args(argv):
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    binary = None
    for a in argv:
        if a == "--quick":
            quick = True
        elif a in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        elif a.startswith("-"):
            sys.exit(f"ring-size: unknown option {a}")
        else:
            binary = a
    if binary is None:
        binary = os.path.join(REPO, "target", "release", "tcmu-warden")
    return quick, os.path.abspath(binary)


def plan(quick):
    env = os.environ.get
    p = {
        "mode": "quick" if quick else "full",
        "rounds": int(env("BENCH_ROUNDS", "1" if quick else "2")),
        "rings": [int(x) for x in env("BENCH_RINGS", "1 64" if quick else "1 4 16 64 1024").split()],
        "runtime_ms": int(env("BENCH_RUNTIME_MS", "1000" if quick else "6000")),
        "ramp_ms": int(env("BENCH_RAMP_MS", "500" if quick else "1000")),
        "size_mb": int(env("BENCH_SIZE_MB", "256")),
        "handler_args": env("BENCH_HANDLER_ARGS", ""),
        "jobs": env("BENCH_JOBS", "randread4k-qd32 randwrite4k-qd32 seqwrite1m-qd8 randread4k-qd1").split(),
    }
    ntargets = 2 + len(p["rings"])
    per_job = (p["runtime_ms"] + p["ramp_ms"]) / 1000 + 4.0   # fio start-up and parsing under TCG
    per_target = len(p["jobs"]) * per_job + 8.0                 # backstore, handler, LUN
    p["estimate_s"] = int(p["rounds"] * ntargets * per_target + 15)
    p["guest_timeout_s"] = int(p["estimate_s"] * 2 + 60)
    return p


def settings(p):
    return {"BENCH_ROUNDS": p["rounds"], "BENCH_RINGS": p["rings"], "BENCH_RUNTIME_MS": p["runtime_ms"],
            "BENCH_RAMP_MS": p["ramp_ms"], "BENCH_SIZE_MB": p["size_mb"], "BENCH_JOBS": p["jobs"],
            "BENCH_HANDLER_ARGS": p["handler_args"]}


# ---------------------------------------------------------------- derived values
def key(r):
    return (r["job"], r["target"], r["ring"])


def label(target, ring):
    return f"ring={ring}MB" if target == "warden" else TARGET_LABEL.get(target, target)


def summarize(results):
    groups = {}
    for r in results:
        if ok(r):
            groups.setdefault(key(r), []).append(r)
    summary = [group_summary(rs, {"job": k[0], "target": k[1], "ring_mb": k[2]}) for k, rs in groups.items()]
    for s in summary:
        ref = next((x for x in summary if x["job"] == s["job"] and x["target"] == "fileio"), None)
        if ref and ref["throughput"]:
            s["ratio_to_fileio"] = round(s["throughput"] / ref["throughput"], 3)
            if ref.get("qemu_cpu_us_per_io") and s.get("qemu_cpu_us_per_io"):
                s["qemu_cpu_ratio_to_fileio"] = round(s["qemu_cpu_us_per_io"] / ref["qemu_cpu_us_per_io"], 2)
            if ref.get("guest_cpu_us_per_io") and s.get("guest_cpu_us_per_io"):
                s["guest_cpu_ratio_to_fileio"] = round(s["guest_cpu_us_per_io"] / ref["guest_cpu_us_per_io"], 2)
    order = {"fileio": 0, "rdmcp": 1, "warden": 2}
    summary.sort(key=lambda s: (list(JOBS).index(s["job"]) if s["job"] in JOBS else 99,
                                order.get(s["target"], 9), s["ring_mb"]))
    return summary


# ---------------------------------------------------------------- formatting
def progress_line(r, fileio_ref, n_done, n_total):
    lab = label(r["target"], r["ring"])
    ref = fileio_ref.get((r["round"], r["job"]))
    ratio = f" = {r['throughput'] / ref:.2f}x fileio" if ref and ok(r) else ""
    return f"[{n_done:>3}/{n_total}] r{r['round']} {r['job']:<17} {lab:<12} {ratio:<16}{progress_tail(r)}"


def table(summary, rounds):
    lines = [f"ring-size: medians of {rounds} round(s); throughput = IOPS (4 KiB) or MB/s (1 MiB); "
             "latency = fio total (slat+clat); cpu/IO = guest busy CPU and host qemu CPU per I/O",
             f"{'':<30} {'':>11} {'':<15} {'p50':>7} {'p99':>7} {'p99.9':>8} {'guest':>7} {'qemu':>7} {'hdlr':>6} {'ctx':>5} {'quiet':>5}"]
    last = None
    for s in summary:
        if s["job"] != last:
            lines.append(f"-- {s['job']} ({JOBS.get(s['job'], '')})")
            last = s["job"]
        ratio = s.get("ratio_to_fileio")
        rtxt = f"= {ratio:.2f}x fileio" if ratio is not None else ""
        lines.append(
            f"{s['job'] + ' ' + label(s['target'], s['ring_mb']) + ':':<30} {fmt_tp(s['throughput'], job_bs(s['job'])):>11} "
            f"{rtxt:<15} {fmt_us(s['p50_us']):>7} {fmt_us(s['p99_us']):>7} {fmt_us(s['p999_us']):>8} "
            f"{fmt_us(s['guest_cpu_us_per_io']):>7} {fmt_us(s['qemu_cpu_us_per_io']):>7} "
            f"{fmt_us(s['handler_cpu_us_per_io']):>6} "
            f"{'-' if s['ctxt_per_io'] is None else format(s['ctxt_per_io'], '.1f'):>5} {s['n_quiet']:>3}/{s['n']}")
    lines.append("guest/qemu/hdlr = guest busy CPU, host qemu CPU, tcmu-warden CPU per I/O; ctx = guest context "
                 f"switches per I/O; quiet = windows with <= {QUIET_OTHER_CORES} core of other host load / rounds")
    return "\n".join(lines)


# ---------------------------------------------------------------- SVG
def svg_chart(summary, p):
    jobs = [j for j in p["jobs"] if any(s["job"] == j for s in summary)]
    rings = p["rings"]
    pw, ph, ml, mr, mt, mb = 300, 200, 62, 14, 34, 40
    cols = max(1, len(jobs))
    o = svg_open(cols * (pw + ml + mr) + 20, 2 * (ph + mt + mb) + 60,
                 f'tcmu-warden throughput and p99 latency vs max_data_area_mb ({p["mode"]} run, '
                 f'medians of {p["rounds"]} round(s), qemu TCG guest)')
    svg_legend(o, (("tcmu-warden (median, bar = min..max)", 'stroke="#c0392b" stroke-width="2"'),
                   ("fileio (in-kernel)", 'stroke="#2471a3" stroke-width="1.5" stroke-dasharray="6,4"'),
                   ("rd_mcp (in-kernel ramdisk)", 'stroke="#1e8449" stroke-width="1.5" stroke-dasharray="2,3"')))
    xs = [math.log2(r) for r in rings]
    xmin, xmax = min(xs), max(xs)
    if xmax == xmin:
        xmax = xmin + 1

    for row, (metric, lo, hi) in enumerate((("throughput", "throughput_min", "throughput_max"),
                                            ("p99_us", "p99_min", "p99_max"))):
        for c, job in enumerate(jobs):
            x0 = 10 + c * (pw + ml + mr) + ml
            y0 = 50 + row * (ph + mt + mb) + mt
            ss = {(s["target"], s["ring_mb"]): s for s in summary if s["job"] == job}
            w = [ss.get(("warden", r)) for r in rings]
            ref_f, ref_r = ss.get(("fileio", 0)), ss.get(("rdmcp", 0))
            vals = [s[hi] for s in w if s] + [s[metric] for s in (ref_f, ref_r) if s]
            ymax = nice_max(max(vals) * 1.08 if vals else 1)
            unit = ("MB/s" if job.startswith("seq") else "IOPS") if row == 0 else "ms"
            Y = svg_axes(o, x0, y0, pw, ph, ymax, f"{job}: {'throughput' if row == 0 else 'p99 latency'} ({unit})",
                         scale=1000.0 if row == 1 else 1.0, decimals=2 if row == 1 else 0)

            def X(ring):
                return x0 + (math.log2(ring) - xmin) / (xmax - xmin) * (pw - 20) + 10

            for r in rings:
                o.append(f'<text x="{X(r):.1f}" y="{y0 + ph + 14}" text-anchor="middle">{r}</text>')
            o.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 30}" text-anchor="middle">max_data_area_mb (log scale)</text>')
            for ref, style in ((ref_f, 'stroke="#2471a3" stroke-width="1.5" stroke-dasharray="6,4"'),
                               (ref_r, 'stroke="#1e8449" stroke-width="1.5" stroke-dasharray="2,3"')):
                if ref and ref[metric] is not None:
                    y = Y(ref[metric])
                    o.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" {style}/>')
            pts = [(X(r), Y(s[metric])) for r, s in zip(rings, w) if s and s[metric] is not None]
            if len(pts) > 1:
                o.append('<polyline fill="none" stroke="#c0392b" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
            for r, s in zip(rings, w):
                if not s:
                    continue
                x = X(r)
                o.append(f'<line x1="{x:.1f}" y1="{Y(s[lo]):.1f}" x2="{x:.1f}" y2="{Y(s[hi]):.1f}" stroke="#c0392b"/>')
                o.append(f'<circle cx="{x:.1f}" cy="{Y(s[metric]):.1f}" r="3.5" fill="#c0392b"/>')
                if row == 0 and s.get("ratio_to_fileio") is not None:
                    o.append(f'<text x="{x:.1f}" y="{Y(s[metric]) - 7:.1f}" text-anchor="middle" '
                             f'fill="#c0392b" font-size="9">{s["ratio_to_fileio"]:.2f}x</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ---------------------------------------------------------------- main
def write_outputs(doc):
    outdir = out_dir()
    jpath, spath = os.path.join(outdir, "ring-size.json"), os.path.join(outdir, "ring-size.svg")
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    with open(spath, "w") as f:
        f.write(svg_chart(doc["summary"], doc["plan"]))
    return jpath, spath


def rerender(path):
    doc = json.load(open(path))
    for r in doc["results"]:
        derive(r)
    doc["summary"] = summarize(doc["results"])
    jpath, spath = write_outputs(doc)
    print(table(doc["summary"], doc["plan"]["rounds"]))
    log(f"ring-size: wrote {jpath} and {spath} from {path}")
    return 0


MEASURES = {
    "iops, bw_kib": "fio (libaio, direct=1, time_based, after ramp_time), group_reporting",
    "p50_us, p99_us, p999_us, lat_mean_us": "fio total latency (submission + completion, --lat_percentiles=1) "
                                             "percentiles, microseconds (clat alone hides the in-kernel backstores' "
                                             "latency: they complete inside io_submit)",
    "window": "steady-state window inside each job, placed from the first I/O the disk completes: "
              "ramp end + 100 ms to planned end - 1 s (quick: 300 ms after the first I/O to planned end - 600 ms); "
              "win_ok=0 if fio had already exited at its end",
    "win_ios": "fio-sized I/Os completed in the window: sectors moved (/sys/block/sdX/stat) * 512 / bs",
    "cpu_user, cpu_sys, cpu_irq, cpu_idle, cpu_busy": "guest /proc/stat jiffies (1/100 s) over the window, "
                                                     "summed over both vCPUs; busy = user+nice+system+irq+softirq+steal",
    "guest_cpu_us_per_io": "cpu_busy / win_ios: guest CPU per I/O (fio + kernel + handler), microseconds",
    "guest_sys_us_per_io": "(system + irq + softirq) / win_ios",
    "handler_cpu_us_per_io": "the handler daemon's own utime+stime (/proc/PID/stat, all threads) / win_ios; "
                             "handler_sys = its stime ticks",
    "ctxt_per_io": "guest context switches (/proc/stat ctxt) / win_ios",
    "qemu_cpu_us_per_io": "host CPU time of the qemu process (utime+stime) between the guest's window "
                          "marks / win_ios: the harness's 'host CPU per I/O'",
    "host_other_cores": "host CPU busy in the window minus qemu's, in cores: other load on the host",
    "throughput": "iops for 4 KiB jobs, MiB/s (bw_kib/1024) for the 1 MiB job",
}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--from-json":
        return rerender(sys.argv[2])
    quick, binary = parse_args(sys.argv[1:])
    if not os.access(binary, os.X_OK):
        sys.exit(f"ring-size: no handler binary at {binary} (cargo build --release -p tcmu-warden)")
    p = plan(quick)
    outdir = out_dir()
    vm_out = os.path.join(outdir, "ring-size-vm")
    jobs_total = p["rounds"] * (2 + len(p["rings"])) * len(p["jobs"])
    log(f"ring-size: {p['mode']} run: {p['rounds']} round(s) x (fileio, rd_mcp, warden rings "
        f"{'/'.join(map(str, p['rings']))} MB) x {len(p['jobs'])} jobs = {jobs_total} jobs of "
        f"{p['ramp_ms'] / 1000:g}+{p['runtime_ms'] / 1000:g} s; estimate ~{p['estimate_s'] // 60}m{p['estimate_s'] % 60:02d}s")
    log(f"ring-size: handler {binary}; VM output in {vm_out}")

    scen = make_scenario("ring-size", settings(p), p["guest_timeout_s"], tempfile.mkdtemp(prefix="ring-size."))
    load0 = os.getloadavg()
    started = utc_now()
    results, fileio_ref = [], {}

    def on_record(r):
        results.append(r)
        if r["target"] == "fileio" and ok(r):
            fileio_ref[(r["round"], r["job"])] = r["throughput"]
        # A ratio against the same round's fileio, or any round's.
        ref = dict(fileio_ref)
        for (rd, jb), v in fileio_ref.items():
            ref.setdefault((r["round"], jb), v)
        log(progress_line(r, ref, len(results), jobs_total))

    def on_line(k, v):
        if k in ("kernel", "prefill_ms", "kmsg_bad", "kmsg_warn", "bench_failures"):
            log(f"ring-size: guest {k}={v}")

    rc, info, elapsed, runlog_path = run_boot(binary, scen, vm_out, p["guest_timeout_s"] + 30, on_record, on_line)
    host = host_facts(load0)
    summary = summarize(results)
    doc = {
        "benchmark": "ring-size",
        "schema": 1,
        "started_utc": started,
        "elapsed_s": round(elapsed, 1),
        "mode": p["mode"],
        "vm_ok": rc == 0,
        "run_vm_rc": rc,
        "plan": p,
        "handler": dict(binary_info(binary), args=("--uio /dev/uioN " + p["handler_args"]).strip()),
        "guest": info,
        "host": host,
        "measures": dict(MEASURES, ratio_to_fileio="median throughput / median fileio throughput of the same job"),
        "results": results,
        "summary": summary,
    }
    jpath, spath = write_outputs(doc)
    print()
    print(table(summary, p["rounds"]))
    print()
    noisy = [r for r in results if not is_quiet(r)]
    if noisy:
        log(f"ring-size: note: {len(noisy)}/{len(results)} job windows saw more than {QUIET_OTHER_CORES} core of other "
            "host load (host_other_cores in the JSON): compare with care")
    log(f"ring-size: wrote {jpath} and {spath} ({elapsed:.0f}s, host load {load0[0]:.1f} -> {host['loadavg_end'][0]:.1f})")
    if rc != 0 or len(results) != jobs_total:
        log(f"ring-size: FAILED: run-vm rc={rc}, {len(results)}/{jobs_total} jobs reported; log {runlog_path}:")
        print_failure_tail(runlog_path)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
