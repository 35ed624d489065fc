#!/usr/bin/env python3
"""Host half of the ring-size benchmark (see bench/vm/README.md).

Boots the tests/vm harness once with the guest scenario bench/vm/scenarios/ring-size.sh,
follows the results serial channel while the VM runs (one progress line per job), samples the
qemu process's CPU time at the guest's window marks, then writes bench/out/ring-size.json and
bench/out/ring-size.svg and prints the table (each result as a ratio to in-kernel fileio).

usage: ring_size.py [--quick] [BIN]
       ring_size.py --from-json FILE   (re-derive summary, table and SVG from a saved run)
env:   BENCH_QUICK=1 (same as --quick), BENCH_ROUNDS, BENCH_RINGS="1 4 ...",
       BENCH_RUNTIME_MS, BENCH_RAMP_MS, BENCH_JOBS="...", BENCH_OUT=dir (default bench/out)
"""
import datetime
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TCK = os.sysconf("SC_CLK_TCK")

JOBS = {
    "randread4k-qd32": "4 KiB random read, QD32",
    "randwrite4k-qd32": "4 KiB random write, QD32",
    "seqwrite1m-qd8": "1 MiB sequential write, QD8",
    "randread4k-qd1": "4 KiB random read, QD1",
    "randwrite4k-qd1": "4 KiB random write, QD1",
}
TARGET_LABEL = {"fileio": "fileio", "rdmcp": "rd_mcp"}


def log(msg):
    print(msg, flush=True)


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


def make_scenario(p, tmpdir):
    body = open(os.path.join(HERE, "scenarios", "ring-size.sh")).read().splitlines()
    body = [line for line in body if not line.startswith("# vm-timeout:")]
    head = [
        f"# vm-timeout: {p['guest_timeout_s']}",
        f"BENCH_ROUNDS={p['rounds']}",
        f"BENCH_RINGS='{' '.join(map(str, p['rings']))}'",
        f"BENCH_RUNTIME_MS={p['runtime_ms']}",
        f"BENCH_RAMP_MS={p['ramp_ms']}",
        f"BENCH_SIZE_MB={p['size_mb']}",
        f"BENCH_JOBS='{' '.join(p['jobs'])}'",
        f"BENCH_HANDLER_ARGS='{p['handler_args']}'",
    ]
    path = os.path.join(tmpdir, "ring-size.sh")
    with open(path, "w") as f:
        f.write("\n".join(head + body) + "\n")
    return path


# ---------------------------------------------------------------- host sampling
def find_qemu(vm_out):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"qemu-system-x86_64") and any(vm_out.encode() in c for c in cmd):
            return int(pid)
    return None


def proc_cpu_ticks(pid):
    try:
        f = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    rest = f[f.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])       # utime + stime (whole process)


def host_cpu_ticks():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)        # busy, total


def sample(qpid):
    busy, total = host_cpu_ticks()
    return {"t": time.monotonic(), "qemu": proc_cpu_ticks(qpid) if qpid else None,
            "host_busy": busy, "host_total": total}


# ---------------------------------------------------------------- derived values
def parse_kv(s):
    out = {}
    for part in s.split(","):
        if ":" not in part:
            continue
        k, v = part.split(":", 1)
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def derive(r):
    """Per-I/O CPU figures from the window counters (fio-sized I/Os from sector counts)."""
    ios = r["win_sectors"] * 512 / r["bs"] if r.get("bs") else 0
    r["win_ios"] = round(ios)
    win_s = r["win_cs"] / 100 if r.get("win_cs") else 0
    r["win_iops"] = round(ios / win_s) if win_s else 0
    us = 1e6 / 100                             # /proc/stat is in USER_HZ = 100
    if ios:
        r["guest_cpu_us_per_io"] = round(r["cpu_busy"] * us / ios, 1)
        r["guest_sys_us_per_io"] = round((r["cpu_sys"] + r["cpu_irq"]) * us / ios, 1)
        r["handler_cpu_us_per_io"] = round(r["handler_ticks"] * us / ios, 1) if r["target"] == "warden" else None
        r["handler_sys_us_per_io"] = round(r.get("handler_sys", 0) * us / ios, 1) if r["target"] == "warden" else None
        r["ctxt_per_io"] = round(r["ctxt"] / ios, 2)
        if r.get("qemu_cpu_s") is not None:
            r["qemu_cpu_us_per_io"] = round(r["qemu_cpu_s"] * 1e6 / ios, 1)
    r["throughput"] = r["bw_kib"] / 1024 if r["bs"] >= 1048576 else r["iops"]
    return r


def key(r):
    return (r["job"], r["target"], r["ring"])


def label(target, ring):
    return f"ring={ring}MB" if target == "warden" else TARGET_LABEL.get(target, target)


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


QUIET_OTHER_CORES = 0.5   # a window is "quiet" if the rest of the host used at most this


def is_quiet(r):
    o = r.get("host_other_cores")
    return o is not None and o <= QUIET_OTHER_CORES


def summarize(results):
    groups = {}
    for r in results:
        if r.get("rc", 1) == 0 and r.get("fio_err", 1) == 0:
            groups.setdefault(key(r), []).append(r)
    summary = []
    fields = ["throughput", "iops", "bw_kib", "p50_us", "p99_us", "p999_us", "lat_mean_us",
              "guest_cpu_us_per_io", "guest_sys_us_per_io", "handler_cpu_us_per_io", "handler_sys_us_per_io",
              "qemu_cpu_us_per_io", "ctxt_per_io", "win_iops"]
    for k, rs in groups.items():
        s = {"job": k[0], "target": k[1], "ring_mb": k[2], "n": len(rs)}
        for f in fields:
            s[f] = med([r.get(f) for r in rs])
        tp = [r["throughput"] for r in rs]
        s["throughput_min"], s["throughput_max"] = min(tp), max(tp)
        p99 = [r["p99_us"] for r in rs]
        s["p99_min"], s["p99_max"] = min(p99), max(p99)
        quiet = [r for r in rs if is_quiet(r)]
        s["n_quiet"] = len(quiet)
        if quiet:
            s["quiet"] = {f: med([r.get(f) for r in quiet]) for f in
                          ("throughput", "p50_us", "p99_us", "guest_cpu_us_per_io",
                           "handler_cpu_us_per_io", "qemu_cpu_us_per_io", "ctxt_per_io")}
        summary.append(s)
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
def fmt_tp(v, bs):
    if v is None:
        return "-"
    return f"{v:,.0f} MB/s" if bs >= 1048576 else f"{v:,.0f} IOPS"


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v:.0f}us"


def progress_line(r, fileio_ref, n_done, n_total):
    lab = label(r["target"], r["ring"])
    if r.get("rc") != 0 or r.get("fio_err", 0) != 0:
        return f"[{n_done:>3}/{n_total}] r{r['round']} {r['job']:<17} {lab:<12} FAILED (rc={r.get('rc')}, fio_err={r.get('fio_err')})"
    ref = fileio_ref.get((r["round"], r["job"]))
    ratio = f" = {r['throughput'] / ref:.2f}x fileio" if ref else ""
    q = r.get("qemu_cpu_us_per_io")
    g = r.get("guest_cpu_us_per_io")
    return (f"[{n_done:>3}/{n_total}] r{r['round']} {r['job']:<17} {lab:<12} "
            f"{fmt_tp(r['throughput'], r['bs']):>12}{ratio:<16} p50 {fmt_us(r['p50_us']):>7} "
            f"p99 {fmt_us(r['p99_us']):>7}  cpu/IO guest {fmt_us(g):>6} qemu {fmt_us(q):>6}"
            + ("" if r.get("win_ok", 1) else "  (window overran the job)")
            + (f"  [busy host: qemu {r['qemu_cores']} cores, others {r['host_other_cores']}]"
               if r.get("host_other_cores") is not None and not is_quiet(r) else ""))


def table(summary, rounds):
    lines = [f"ring-size: medians of {rounds} round(s); throughput = IOPS (4 KiB) or MB/s (1 MiB); "
             "latency = fio total (slat+clat); cpu/IO = guest busy CPU and host qemu CPU per I/O",
             f"{'':<30} {'':>11} {'':<15} {'p50':>7} {'p99':>7} {'p99.9':>8} {'guest':>7} {'qemu':>7} {'hdlr':>6} {'ctx':>5} {'quiet':>5}"]
    last = None
    for s in summary:
        if s["job"] != last:
            lines.append(f"-- {s['job']} ({JOBS.get(s['job'], '')})")
            last = s["job"]
        bs = 1048576 if s["job"].startswith("seq") else 4096
        ratio = s.get("ratio_to_fileio")
        rtxt = f"= {ratio:.2f}x fileio" if ratio is not None else ""
        lines.append(
            f"{s['job'] + ' ' + label(s['target'], s['ring_mb']) + ':':<30} {fmt_tp(s['throughput'], bs):>11} "
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
    W = cols * (pw + ml + mr) + 20
    H = 2 * (ph + mt + mb) + 60
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="10" y="18" font-size="14" font-weight="bold">tcmu-warden throughput and p99 latency '
         f'vs max_data_area_mb ({p["mode"]} run, medians of {p["rounds"]} round(s), qemu TCG guest)</text>']
    lx = 10
    for name, style in (("tcmu-warden (median, bar = min..max)", 'stroke="#c0392b" stroke-width="2"'),
                        ("fileio (in-kernel)", 'stroke="#2471a3" stroke-width="1.5" stroke-dasharray="6,4"'),
                        ("rd_mcp (in-kernel ramdisk)", 'stroke="#1e8449" stroke-width="1.5" stroke-dasharray="2,3"')):
        o.append(f'<line x1="{lx}" y1="34" x2="{lx + 30}" y2="34" {style}/>')
        o.append(f'<text x="{lx + 36}" y="38">{name}</text>')
        lx += 36 + 7 * len(name) + 20

    import math
    xs = [math.log2(r) for r in rings]
    xmin, xmax = min(xs), max(xs)
    if xmax == xmin:
        xmax = xmin + 1

    def nice_max(v):
        """Top of a 4-step axis with round steps (1, 2, 2.5, 5 x 10^k)."""
        if v <= 0:
            return 1
        raw = v / 4
        e = 10 ** math.floor(math.log10(raw))
        for m in (1, 2, 2.5, 5, 10):
            if m * e >= raw:
                return 4 * m * e
        return 40 * e

    for row, (metric, lo, hi, title) in enumerate((("throughput", "throughput_min", "throughput_max", None),
                                                   ("p99_us", "p99_min", "p99_max", "p99 latency"))):
        for c, job in enumerate(jobs):
            x0 = 10 + c * (pw + ml + mr) + ml
            y0 = 50 + row * (ph + mt + mb) + mt
            ss = {(s["target"], s["ring_mb"]): s for s in summary if s["job"] == job}
            w = [ss.get(("warden", r)) for r in rings]
            ref_f, ref_r = ss.get(("fileio", 0)), ss.get(("rdmcp", 0))
            is_bw = job.startswith("seq")
            vals = [s[hi] for s in w if s] + [s[metric] for s in (ref_f, ref_r) if s]
            ymax = nice_max(max(vals) * 1.08 if vals else 1)
            unit = ("MB/s" if is_bw else "IOPS") if row == 0 else "ms"
            scale = 1000.0 if row == 1 else 1.0
            t = f"{job}: {'throughput' if row == 0 else 'p99 latency'} ({unit})"
            o.append(f'<text x="{x0}" y="{y0 - 8}" font-weight="bold">{t}</text>')
            o.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')

            def X(ring):
                return x0 + (math.log2(ring) - xmin) / (xmax - xmin) * (pw - 20) + 10

            def Y(v):
                return y0 + ph - (v / ymax) * ph

            for i in range(5):
                v = ymax * i / 4
                y = Y(v)
                o.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#eee"/>')
                lab = f"{v / scale:,.2f}" if row == 1 else f"{v:,.0f}"
                o.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{lab}</text>')
            for r in rings:
                o.append(f'<text x="{X(r):.1f}" y="{y0 + ph + 14}" text-anchor="middle">{r}</text>')
            o.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 30}" text-anchor="middle">max_data_area_mb (log scale)</text>')
            for ref, style, name in ((ref_f, 'stroke="#2471a3" stroke-width="1.5" stroke-dasharray="6,4"', "fileio"),
                                     (ref_r, 'stroke="#1e8449" stroke-width="1.5" stroke-dasharray="2,3"', "rd_mcp")):
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
def rerender(path):
    doc = json.load(open(path))
    for r in doc["results"]:
        derive(r)
    doc["summary"] = summarize(doc["results"])
    outdir = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(REPO, "bench", "out")))
    os.makedirs(outdir, exist_ok=True)
    jpath, spath = os.path.join(outdir, "ring-size.json"), os.path.join(outdir, "ring-size.svg")
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    with open(spath, "w") as f:
        f.write(svg_chart(doc["summary"], doc["plan"]))
    print(table(doc["summary"], doc["plan"]["rounds"]))
    log(f"ring-size: wrote {jpath} and {spath} from {path}")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--from-json":
        return rerender(sys.argv[2])
    quick, binary = parse_args(sys.argv[1:])
    if not os.access(binary, os.X_OK):
        sys.exit(f"ring-size: no handler binary at {binary} (cargo build --release -p tcmu-warden)")
    p = plan(quick)
    outdir = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(REPO, "bench", "out")))
    os.makedirs(outdir, exist_ok=True)
    vm_out = os.path.join(outdir, "ring-size-vm")
    os.makedirs(vm_out, exist_ok=True)
    jobs_total = p["rounds"] * (2 + len(p["rings"])) * len(p["jobs"])
    log(f"ring-size: {p['mode']} run: {p['rounds']} round(s) x (fileio, rd_mcp, warden rings "
        f"{'/'.join(map(str, p['rings']))} MB) x {len(p['jobs'])} jobs = {jobs_total} jobs of "
        f"{p['ramp_ms'] / 1000:g}+{p['runtime_ms'] / 1000:g} s; estimate ~{p['estimate_s'] // 60}m{p['estimate_s'] % 60:02d}s")
    log(f"ring-size: handler {binary}; VM output in {vm_out}")

    tmpdir = tempfile.mkdtemp(prefix="ring-size.")
    scen = make_scenario(p, tmpdir)
    raw = os.path.join(vm_out, "results.raw")
    runlog_path = os.path.join(outdir, "ring-size-vm.log")
    env = dict(os.environ, VM_OUT=vm_out)
    load0 = os.getloadavg()
    t0 = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with open(runlog_path, "w") as runlog:
        proc = subprocess.Popen([os.path.join(REPO, "tests", "vm", "run-vm.sh"), binary, scen,
                                 str(p["guest_timeout_s"] + 30)],
                                stdout=runlog, stderr=subprocess.STDOUT, env=env)
        # run-vm.sh removes the old results.raw before qemu starts; wait for that first.
        time.sleep(0.5)
        qpid, pos, buf = None, 0, ""
        marks, results, info = {}, [], {}
        fileio_ref = {}
        last_target = None
        while True:
            done = proc.poll() is not None
            if qpid is None:
                qpid = find_qemu(vm_out)
            if os.path.exists(raw):
                with open(raw, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos += len(chunk)
                buf += chunk.decode(errors="replace").replace("\r", "")
                while "\n" in buf:
                    line, buf = buf.split("\n", 1)
                    m = re.match(r"mark=([AB]):(\d+)$", line)
                    if m:
                        marks[(m.group(1), int(m.group(2)))] = sample(qpid)
                    elif line.startswith("benchrec="):
                        r = parse_kv(line[len("benchrec="):])
                        a, b = marks.get(("A", r["seq"])), marks.get(("B", r["seq"]))
                        if a and b and a["qemu"] is not None and b["qemu"] is not None:
                            r["qemu_cpu_s"] = (b["qemu"] - a["qemu"]) / TCK
                            r["host_win_s"] = round(b["t"] - a["t"], 3)
                            # Host CPU used by everything but this qemu in the window (other
                            # VMs, builds): a noisy-neighbour indicator, in cores.
                            other = (b["host_busy"] - a["host_busy"]) / TCK - r["qemu_cpu_s"]
                            r["host_other_cores"] = round(other / max(r["host_win_s"], 1e-3), 2)
                            r["qemu_cores"] = round(r["qemu_cpu_s"] / max(r["host_win_s"], 1e-3), 2)
                        derive(r)
                        results.append(r)
                        if r["target"] == "fileio" and r.get("rc") == 0:
                            fileio_ref[(r["round"], r["job"])] = r["throughput"]
                        # A ratio against the same round's fileio, or any round's.
                        ref = dict(fileio_ref)
                        for (rd, jb), v in fileio_ref.items():
                            ref.setdefault((r["round"], jb), v)
                        log(progress_line(r, ref, len(results), jobs_total))
                    elif line.startswith("target="):
                        last_target = parse_kv(line[len("target="):])
                    elif line.startswith("=== BOOT"):
                        log(f"ring-size: guest booted ({time.monotonic() - t0:.0f}s)")
                    elif "=" in line and not line.startswith("==="):
                        k, v = line.split("=", 1)
                        info[k] = v
                        if k in ("kernel", "prefill_ms", "kmsg_bad", "kmsg_warn", "bench_failures"):
                            log(f"ring-size: guest {k}={v}")
            if done:
                break
            time.sleep(0.02)
    rc = proc.returncode
    elapsed = time.monotonic() - t0
    load1 = os.getloadavg()

    summary = summarize(results)
    try:
        rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    h = hashlib.sha256(open(binary, "rb").read()).hexdigest()[:16]
    doc = {
        "benchmark": "ring-size",
        "schema": 1,
        "started_utc": started,
        "elapsed_s": round(elapsed, 1),
        "mode": p["mode"],
        "vm_ok": rc == 0,
        "run_vm_rc": rc,
        "plan": p,
        "handler": {"binary": binary, "sha256_16": h, "git": rev,
                    "args": ("--uio /dev/uioN " + p["handler_args"]).strip()},
        "guest": info,
        "host": {"nproc": os.cpu_count(), "loadavg_start": load0, "loadavg_end": load1,
                 "clk_tck": TCK},
        "measures": {
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
            "handler_cpu_us_per_io": "tcmu-warden's own utime+stime (/proc/PID/stat, all threads) / win_ios (warden only); "
                                     "handler_sys = its stime ticks",
            "ctxt_per_io": "guest context switches (/proc/stat ctxt) / win_ios",
            "qemu_cpu_us_per_io": "host CPU time of the qemu process (utime+stime) between the guest's window "
                                  "marks / win_ios: the harness's 'host CPU per I/O'",
            "host_other_cores": "host CPU busy in the window minus qemu's, in cores: other load on the host",
            "throughput": "iops for 4 KiB jobs, MiB/s (bw_kib/1024) for the 1 MiB job",
            "ratio_to_fileio": "median throughput / median fileio throughput of the same job",
        },
        "results": results,
        "summary": summary,
    }
    jpath = os.path.join(outdir, "ring-size.json")
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    spath = os.path.join(outdir, "ring-size.svg")
    with open(spath, "w") as f:
        f.write(svg_chart(summary, p))

    print()
    print(table(summary, p["rounds"]))
    print()
    noisy = [r for r in results if (r.get("host_other_cores") or 0) > 0.5]
    if noisy:
        log(f"ring-size: note: {len(noisy)}/{len(results)} job windows saw more than 0.5 core of other "
            "host load (host_other_cores in the JSON): compare with care")
    log(f"ring-size: wrote {jpath} and {spath} ({elapsed:.0f}s, host load {load0[0]:.1f} -> {load1[0]:.1f})")
    if rc != 0 or len(results) != jobs_total:
        log(f"ring-size: FAILED: run-vm rc={rc}, {len(results)}/{jobs_total} jobs reported; log {runlog_path}:")
        for line in open(runlog_path).read().splitlines()[-40:]:
            print("  | " + line)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
