#!/usr/bin/env python3
"""Host half of the side-by-side benchmark, the benchmark of record (see bench/vm/README.md).

tcmu-warden, tcmu-runner (with its file handler) and the kernel's own fileio backstore, each in
its own qemu TCG boot (one TCMU daemon per boot), in interleaved rounds (round 1 boots warden,
runner, fileio; round 2 the reverse; ...). The same fio jobs on the same tmpfs file; per job
IOPS, MB/s, p50/p99 latency, host CPU of qemu per I/O (sampled at the guest's window marks) and
the host's other load in the window. Then a scale run per daemon: LUNs added one after another,
resident memory, threads and time. Medians (over quiet windows when there are any), JSON and
SVG in bench/out/, and the ratios printed last.

usage: compare.py [--quick] [--rings] [--warden BIN] [--runner DIR]
       compare.py --rbd --ceph DIR [--quick] [--warden BIN] [--runner DIR]
       compare.py --from-json FILE      (re-derive summary, table, ratios and SVG, no boot)
       compare.py --markdown FILE       (a saved run's rows and scale points as Markdown tables)
  --quick   CI smoke: 1 round, 2 short jobs, scale 1 and 16 LUNs in the same boots (~3-4 min)
  --rings   ring sizes instead: each max_data_area_mb (BENCH_RINGS) for warden and runner,
            1 MiB sequential write QD8 (BENCH_JOBS), fileio as the reference; no scale run
  --rbd     RBD instead (compare_rbd.py): warden and runner serving a user:rbd LUN on one image of
            the Ceph cluster in --ceph DIR (tests/ceph/cluster.sh), hw_max_sectors 1024,
            max_data_area_mb 8, librbd cache off, and fio's own rbd engine as the ceiling;
            5 jobs (quick: 2), no scale run; --runner is then Debian's binary package
            (scripts/fetch-tcmu-runner-deb.sh prints it)
  --warden  tcmu-warden binary (default target/release/tcmu-warden)
  --runner  tcmu-runner cache directory (scripts/build-tcmu-runner.sh prints it)
env: BENCH_QUICK=1, BENCH_ROUNDS, BENCH_RUNTIME_MS, BENCH_RAMP_MS, BENCH_SIZE_MB,
     BENCH_JOBS (jobs at hw_max_sectors 128), BENCH_JOBS_HW1024 (jobs at 1024),
     BENCH_RINGS, BENCH_SCALE ("1 8 64 256"; "" for none), BENCH_TARGETS ("warden runner
     fileio"; --rbd: "warden runner fio-rbd"), BENCH_HANDLER_ARGS (extra tcmu-warden
     arguments), BENCH_OUT (bench/out); --rbd: BENCH_RBD_JOBS, BENCH_RBD_HW (1024),
     BENCH_RBD_RING (8), BENCH_RBD_OPTS (appended to the daemons' cfgstring, e.g. ";lock_hold=0")
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import compare_rbd
from bench import (JOBS, QUIET_OTHER_CORES, REPO, binary_info, derive, fmt_tp, fmt_us, group_summary,
                   host_facts, is_quiet, job_bs, log, make_scenario, nice_max, ok, out_dir,
                   print_failure_tail, progress_tail, run_boot, svg_axes, svg_legend, svg_open, utc_now)

TARGETS = ("warden", "runner", "fileio")
DAEMONS = ("warden", "runner")
COLOURS = {"warden": "#c0392b", "runner": "#7d3c98", "fileio": "#2471a3", "fio-rbd": "#1e8449"}
DEFAULT_RING = 1024   # the kernel's default max_data_area_mb (docs/kernel-abi.md §2.1)


def parse_args(argv):
    a = {"quick": os.environ.get("BENCH_QUICK", "") not in ("", "0"), "rings": False, "rbd": False,
         "warden": os.path.join(REPO, "target", "release", "tcmu-warden"), "runner": None, "ceph": None}
    it = iter(argv)
    for x in it:
        if x == "--quick":
            a["quick"] = True
        elif x == "--rings":
            a["rings"] = True
        elif x == "--rbd":
            a["rbd"] = True
        elif x in ("--warden", "--runner", "--ceph"):
            a[x[2:]] = next(it, None)
            if a[x[2:]] is None:
                sys.exit(f"compare: {x} needs a value")
        elif x in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            sys.exit(f"compare: unknown argument {x} (--help)")
    a["warden"] = os.path.abspath(a["warden"])
    if a["rbd"] and a["rings"]:
        sys.exit("compare: --rbd and --rings are separate runs")
    if a["rbd"] and not a["ceph"]:
        sys.exit("compare: --rbd needs --ceph DIR (a cluster of tests/ceph/cluster.sh; compare.sh --rbd starts one)")
    return a


def plan(a):
    env = os.environ.get
    quick, rings_mode = a["quick"], a["rings"]
    if a["rbd"]:
        return compare_rbd.plan(quick, check_jobs)
    p = {
        "mode": ("rings-" if rings_mode else "") + ("quick" if quick else "full"),
        "rounds": int(env("BENCH_ROUNDS", "1" if quick else "3")),
        "runtime_ms": int(env("BENCH_RUNTIME_MS", "1500" if quick else "6000")),
        "ramp_ms": int(env("BENCH_RAMP_MS", "500" if quick else "1000")),
        "size_mb": int(env("BENCH_SIZE_MB", "128" if quick else "1024")),
        "handler_args": env("BENCH_HANDLER_ARGS", ""),
        "targets": env("BENCH_TARGETS", " ".join(TARGETS)).split(),
    }
    if rings_mode:
        rings = [int(x) for x in env("BENCH_RINGS", "1 64" if quick else "1 4 16 64 1024").split()]
        jobs = env("BENCH_JOBS", "seqwrite1m-qd8").split()
        p["configs"] = [{"hw": 128, "ring": r, "jobs": jobs} for r in rings]
        p["scale"] = [int(x) for x in env("BENCH_SCALE", "").split()]
    else:
        j128 = env("BENCH_JOBS", "randread4k-qd32" if quick else
                   "randread4k-qd32 randwrite4k-qd32 seqwrite1m-qd8 randread4k-qd1").split()
        j1024 = env("BENCH_JOBS_HW1024", "seqwrite1m-qd8").split()
        p["configs"] = [c for c in ({"hw": 128, "ring": DEFAULT_RING, "jobs": j128},
                                    {"hw": 1024, "ring": DEFAULT_RING, "jobs": j1024}) if c["jobs"]]
        p["scale"] = [int(x) for x in env("BENCH_SCALE", "1 16" if quick else "1 8 64 256").split()]
    # Quick: the scale run follows the jobs in the daemon's boot of round 1; full: a boot of its own.
    p["scale_own_boot"] = not quick
    fileio_jobs = []
    for c in p["configs"]:
        fileio_jobs += [j for j in c["jobs"] if j not in fileio_jobs]
    p["fileio_jobs"] = fileio_jobs
    check_jobs(p)
    return p


def check_jobs(p):
    for c in p["configs"]:
        for j in c["jobs"]:
            if j not in JOBS:
                sys.exit(f"compare: unknown job {j} (one of {' '.join(JOBS)})")


def reference(p):
    """The target without a TCMU daemon: the kernel's fileio, or fio's own rbd engine."""
    return p.get("reference", "fileio")


def all_targets(p):
    return DAEMONS + (reference(p),)


def boots(p):
    """[(round, target, with_jobs, scale_counts)] in run order."""
    out = []
    for rnd in range(1, p["rounds"] + 1):
        order = p["targets"] if rnd % 2 else list(reversed(p["targets"]))
        for t in order:
            scale = p["scale"] if (t in DAEMONS and rnd == 1 and not p["scale_own_boot"]) else []
            out.append((rnd, t, True, scale))
    if p["scale"] and p["scale_own_boot"]:
        out += [(1, t, False, p["scale"]) for t in DAEMONS if t in p["targets"]]
    return out


def boot_settings(p, rnd, target, with_jobs, scale, runner_dir):
    if not with_jobs:
        configs = ""
    elif target == reference(p):
        configs = f"0:0:{'/'.join(p['fileio_jobs'])}"
    else:
        configs = " ".join(f"{c['hw']}:{c['ring']}:{'/'.join(c['jobs'])}" for c in p["configs"])
    return {"BENCH_TARGET": target, "BENCH_ROUND": rnd, "BENCH_CONFIGS": configs,
            "BENCH_RUNTIME_MS": p["runtime_ms"], "BENCH_RAMP_MS": p["ramp_ms"],
            "BENCH_SIZE_MB": p["size_mb"], "BENCH_SCALE": scale, "BENCH_RUNNER_DIR": runner_dir or "",
            "BENCH_HANDLER_ARGS": p["handler_args"], **p.get("guest", {})}


def boot_jobs(p, target, with_jobs):
    if not with_jobs:
        return 0
    return len(p["fileio_jobs"]) if target == reference(p) else sum(len(c["jobs"]) for c in p["configs"])


def boot_estimate_s(p, target, with_jobs, scale):
    n = boot_jobs(p, target, with_jobs)
    per_job = (p["runtime_ms"] + p["ramp_ms"]) / 1000 + 4.0       # fio start-up and parsing under TCG
    s = 20 + n * per_job + (len(p["configs"]) * 8 + p["size_mb"] / 100 if with_jobs else 0)
    return int(s + (max(scale) * 1.0 + 30 if scale else 0))   # ~0.4 s per LUN added and removed, loaded host


def runner_extra_root(runner, tmpdir):
    """The tree copied to the runner guest's /: tcmu.conf, and the kmod index of the guest's
    kernel (modules.dep.bin & co.) that tcmu-runner's start-up looks target_core_user up in
    (the harness's busybox depmod writes only the text modules.dep)."""
    root = os.path.join(tmpdir, "runner-root")
    shutil.copytree(os.path.join(runner, "root"), root)
    kdir = os.path.join(REPO, "tests", "vm", ".cache", "kernel", "current")
    kver = open(os.path.join(kdir, "version")).read().strip()
    ko = subprocess.run(["find", os.path.join(kdir, "modules", "kernel"), "-name", "target_core_user.ko"],
                        capture_output=True, text=True).stdout.split()
    if not ko:
        sys.exit(f"compare: no target_core_user.ko under {kdir}/modules")
    stage = os.path.join(tmpdir, "kstage")
    mdir = os.path.join(stage, "lib", "modules", kver)
    os.makedirs(mdir)
    shutil.copy(ko[0], mdir)
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    subprocess.run([depmod, "-b", stage, kver], check=True, capture_output=True)
    dest = os.path.join(root, "lib", "modules", kver)
    os.makedirs(dest)
    for f in os.listdir(mdir):
        if f.endswith(".bin"):
            shutil.copy(os.path.join(mdir, f), dest)
    return root


# ---------------------------------------------------------------- summary
def row_key(r):
    return (r["job"], r["hw"], r["ring"])


def pick(s, f):
    """The quiet median when the group had quiet windows, the median of all otherwise."""
    if s is None:
        return None
    return s["quiet"].get(f) if s.get("n_quiet") else s.get(f)


def summarize(results, p):
    targets = all_targets(p)
    groups = {}
    for r in results:
        if ok(r):
            groups.setdefault((r["target"], r["job"], r["hw"], r["ring"]), []).append(r)
    summary = [group_summary(rs, {"target": k[0], "job": k[1], "hw": k[2], "ring_mb": k[3]})
               for k, rs in groups.items()]
    order = list(JOBS)
    summary.sort(key=lambda s: (order.index(s["job"]), s["hw"] if s["target"] not in ("fileio", "fio-rbd") else 1 << 20,
                                s["ring_mb"], targets.index(s["target"]) if s["target"] in targets else len(targets)))
    return summary


def rows(summary, p):
    """One row per (job, hw, ring) the daemons ran: {"warden": s, "runner": s, "fileio": s}
    (fio-rbd instead of fileio in the RBD mode)."""
    ref = reference(p)
    out = []
    for c in p["configs"]:
        for j in c["jobs"]:
            row = {"job": j, "hw": c["hw"], "ring": c["ring"]}
            for t in DAEMONS:
                row[t] = next((s for s in summary if s["target"] == t and s["job"] == j
                               and s["hw"] == c["hw"] and s["ring_mb"] == c["ring"]), None)
            row[ref] = next((s for s in summary if s["target"] == ref and s["job"] == j), None)
            out.append(row)
    return out


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def row_ratios(row, p):
    w = row["warden"]
    out = {}
    for ref in ("runner", reference(p)):
        r = row[ref]
        out[f"throughput_warden_{ref}"] = ratio(pick(w, "throughput"), pick(r, "throughput"))
        out[f"cpu_warden_{ref}"] = ratio(pick(w, "qemu_cpu_us_per_io"), pick(r, "qemu_cpu_us_per_io"))
        out[f"p50_warden_{ref}"] = ratio(pick(w, "p50_us"), pick(r, "p50_us"))
    return out


def scale_summary(scale_recs, scale_ends):
    out = {}
    for d in DAEMONS:
        pts = sorted((r for r in scale_recs if r["daemon"] == d), key=lambda r: r["luns"])
        if not pts:
            continue
        base = pts[0]
        top = pts[-1]
        end = next((e for e in scale_ends if e["daemon"] == d), {})
        out[d] = {"points": [{k: r[k] for k in ("luns", "rss_kb", "threads", "add_ms")} for r in pts],
                  "base_rss_kb": base["rss_kb"], "base_threads": base["threads"],
                  "max_luns": top["luns"], "rss_kb": top["rss_kb"], "threads": top["threads"],
                  "add_ms": top["add_ms"],
                  "mb_per_lun": round((top["rss_kb"] - base["rss_kb"]) / 1024 / top["luns"], 3) if top["luns"] else None,
                  "threads_per_lun": round((top["threads"] - base["threads"]) / top["luns"], 2) if top["luns"] else None,
                  "io_ok": end.get("io_ok"), "want": end.get("want"), "remove_ms": end.get("remove_ms")}
    return out


# ---------------------------------------------------------------- text
def label(row, p):
    rings = {c["ring"] for c in p["configs"]}
    return ("rbd " if reference(p) == "fio-rbd" else "") + f"{row['job']} hw{row['hw']}" + (f" ring{row['ring']}" if len(rings) > 1 else "")


def cell(s, bs, lat=False):
    if s is None:
        return "-"
    tp = fmt_tp(pick(s, "throughput"), bs)
    extra = f"p50 {fmt_us(pick(s, 'p50_us'))}" if lat else f"p99 {fmt_us(pick(s, 'p99_us'))}"
    return f"{tp}, {fmt_us(pick(s, 'qemu_cpu_us_per_io'))} CPU/IO, {extra} ({s['n_quiet']}/{s['n']} quiet)"


def table(summary, p):
    ref = reference(p)
    lines = [f"compare: medians of {p['rounds']} round(s) over quiet windows (other host load <= "
             f"{QUIET_OTHER_CORES} core) where a row has any, else over all; CPU/IO = host CPU of qemu per I/O; "
             "latency = fio total (slat+clat); "
             + (compare_rbd.TABLE_NOTE if ref == "fio-rbd" else "fileio has its own hw_max_sectors (in brackets)")]
    for row in rows(summary, p):
        bs = job_bs(row["job"])
        lat = row["job"].endswith("qd1")
        lines.append(f"-- {label(row, p)} ({JOBS[row['job']]}, max_data_area_mb {row['ring']})")
        for t in all_targets(p):
            s = row[t]
            hw = f" [hw{s['hw']}]" if t == "fileio" and s else ""
            lines.append(f"   {t + hw + ':':<20} {cell(s, bs, lat)}")
    return "\n".join(lines)


def scale_table(sc):
    if not sc:
        return ""
    lines = ["compare: scale run, one daemon, sparse 64 MiB file LUNs added one after another "
             "(max_data_area_mb 8, cmd_ring_size_mb 1)",
             f"   {'LUNs':>5} " + " ".join(f"{d + ' RSS':>12} {'threads':>7} {'add time':>9}" for d in sc)]
    counts = sorted({pt["luns"] for d in sc for pt in sc[d]["points"]})
    for n in counts:
        cells = []
        for d in sc:
            pt = next((x for x in sc[d]["points"] if x["luns"] == n), None)
            cells.append(f"{pt['rss_kb'] / 1024:>9.1f} MB {pt['threads']:>7} {pt['add_ms'] / 1000:>8.2f}s"
                         if pt else f"{'-':>12} {'-':>7} {'-':>9}")
        lines.append(f"   {n:>5} " + " ".join(cells))
    for d, v in sc.items():
        lines.append(f"   {d}: {v['mb_per_lun']} MB and {v['threads_per_lun']} threads per LUN above its idle base "
                     f"({v['base_rss_kb'] / 1024:.1f} MB, {v['base_threads']} threads); last LUN serves I/O: "
                     f"{'yes' if v['io_ok'] == 1 else 'NO'}; removing all took {(v['remove_ms'] or 0) / 1000:.2f}s")
    return "\n".join(lines)


def ratio_lines(summary, p, sc):
    out = []
    for row in rows(summary, p):
        rr = row_ratios(row, p)
        unit = "MB/s" if job_bs(row["job"]) >= 1048576 else "IOPS"

        def x(v):
            return "-" if v is None else f"{v:.2f}x"
        parts = []
        for ref in ("runner", reference(p)):
            parts.append(f"{unit} warden/{ref} {x(rr[f'throughput_warden_{ref}'])}, "
                         f"CPU/IO warden/{ref} {x(rr[f'cpu_warden_{ref}'])}"
                         + (f", p50 warden/{ref} {x(rr[f'p50_warden_{ref}'])}" if row["job"].endswith("qd1") else ""))
        out.append(f"ratio {label(row, p)}: " + "; ".join(parts))
    if "warden" in sc and "runner" in sc:
        w, r = sc["warden"], sc["runner"]
        n = min(w["max_luns"], r["max_luns"])
        note = "" if w["max_luns"] == r["max_luns"] else f" (warden reached {w['max_luns']}, runner {r['max_luns']})"
        out.append(f"ratio scale {n} LUNs: RSS warden/runner {ratio(w['rss_kb'], r['rss_kb'])}x "
                   f"({w['rss_kb'] / 1024:.1f} / {r['rss_kb'] / 1024:.1f} MB), threads {ratio(w['threads'], r['threads'])}x "
                   f"({w['threads']} / {r['threads']}), add time {ratio(w['add_ms'], r['add_ms'])}x "
                   f"({w['add_ms'] / 1000:.2f} / {r['add_ms'] / 1000:.2f} s); MB per LUN above base: "
                   f"warden {w['mb_per_lun']}, runner {r['mb_per_lun']}{note}")
    return out


def markdown(doc):
    """The summary as Markdown tables (for bench/vm/README.md's baseline and closing notes)."""
    p, sc = doc["plan"], doc.get("scale_summary") or {}
    ref = reference(p)
    ref_name = "fio rbd engine" if ref == "fio-rbd" else "kernel fileio"
    out = [f"| job | hw_max_sectors | tcmu-warden | tcmu-runner | {ref_name} | warden / runner | warden / {ref} |",
           "|---|---|---|---|---|---|---|"]
    for row in rows(doc["summary"], p):
        bs = job_bs(row["job"])
        lat = row["job"].endswith("qd1")
        unit = "MB/s" if bs >= 1048576 else "IOPS"

        def md_cell(s):
            if s is None:
                return "-"
            tail = f", p50 {fmt_us(pick(s, 'p50_us'))}" if lat else ""
            return f"{fmt_tp(pick(s, 'throughput'), bs)}, {fmt_us(pick(s, 'qemu_cpu_us_per_io'))} CPU/IO{tail}"

        rr = row_ratios(row, p)

        def md_ratio(ref):
            def x(v):
                return "-" if v is None else f"{v:.2f}x"
            v = [f"{unit} {x(rr[f'throughput_warden_{ref}'])}", f"CPU {x(rr[f'cpu_warden_{ref}'])}"]
            if lat:
                v.append(f"p50 {x(rr[f'p50_warden_{ref}'])}")
            return ", ".join(v)
        fio = row[ref]
        out.append(f"| {JOBS[row['job']]}{' (ring ' + str(row['ring']) + ' MB)' if p['mode'].startswith('rings') else ''} "
                   f"| {row['hw']} | {md_cell(row['warden'])} | {md_cell(row['runner'])} | "
                   f"{md_cell(fio)}{' (hw ' + str(fio['hw']) + ')' if fio and ref == 'fileio' else ''} | "
                   f"{md_ratio('runner')} | {md_ratio(ref)} |")
    if sc:
        ds = list(sc)
        out += ["", "| LUNs | " + " | ".join(f"{d} RSS | threads | add time" for d in ds) + " |",
                "|---|" + "---|---|---|" * len(ds)]
        for n in sorted({pt["luns"] for d in ds for pt in sc[d]["points"]}):
            cells = []
            for d in ds:
                pt = next((x for x in sc[d]["points"] if x["luns"] == n), None)
                cells.append(f"{pt['rss_kb'] / 1024:.1f} MB | {pt['threads']} | {pt['add_ms'] / 1000:.2f} s"
                             if pt else "- | - | -")
            out.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------- SVG
def svg_chart(summary, p, sc):
    rs = rows(summary, p)
    targets = all_targets(p)
    pw, ph, ml, mr, mt, mb = 230, 170, 62, 14, 34, 30
    cols = max(1, len(rs)) + (1 if sc else 0)
    o = svg_open(cols * (pw + ml + mr) + 20, 2 * (ph + mt + mb) + 70,
                 f"tcmu-warden, tcmu-runner and {'fio rbd engine' if reference(p) == 'fio-rbd' else 'kernel fileio'} "
                 f"({p['mode']} run, medians of {p['rounds']} round(s), bar = min..max, qemu TCG guest)")
    svg_legend(o, [(t, f'stroke="{COLOURS[t]}" stroke-width="8"') for t in targets])
    for c, row in enumerate(rs):
        x0 = 10 + c * (pw + ml + mr) + ml
        for rix, (metric, lo, hi, title, scale, dec) in enumerate((
                ("throughput", "throughput_min", "throughput_max",
                 "MB/s" if job_bs(row["job"]) >= 1048576 else "IOPS", 1.0, 0),
                ("qemu_cpu_us_per_io", None, None, "host CPU/IO (us)", 1.0, 0))):
            y0 = 50 + rix * (ph + mt + mb) + mt
            vals = [v for t in targets if row[t] for v in (row[t][metric], row[t].get(hi) if hi else None) if v]
            ymax = nice_max(max(vals) * 1.08 if vals else 1)
            Y = svg_axes(o, x0, y0, pw, ph, ymax, f"{label(row, p)}: {title}", scale, dec)
            bw = pw / (len(targets) * 1.5 + 0.5)
            for i, t in enumerate(targets):
                s = row[t]
                if not s or s[metric] is None:
                    continue
                bx = x0 + bw * 0.5 + i * bw * 1.5
                o.append(f'<rect x="{bx:.1f}" y="{Y(s[metric]):.1f}" width="{bw:.1f}" '
                         f'height="{y0 + ph - Y(s[metric]):.1f}" fill="{COLOURS[t]}" opacity="0.85"/>')
                if hi:
                    cx = bx + bw / 2
                    o.append(f'<line x1="{cx:.1f}" y1="{Y(s[lo]):.1f}" x2="{cx:.1f}" y2="{Y(s[hi]):.1f}" stroke="black"/>')
                o.append(f'<text x="{bx + bw / 2:.1f}" y="{Y(s[metric]) - 4:.1f}" text-anchor="middle" '
                         f'font-size="9">{s[metric]:,.0f}</text>')
    if sc:
        x0 = 10 + len(rs) * (pw + ml + mr) + ml
        counts = sorted({pt["luns"] for d in sc for pt in sc[d]["points"]})
        for rix, (f, title, div) in enumerate((("rss_kb", "scale: daemon RSS (MB) vs LUNs", 1024),
                                              ("threads", "scale: daemon threads vs LUNs", 1))):
            y0 = 50 + rix * (ph + mt + mb) + mt
            vals = [pt[f] / div for d in sc for pt in sc[d]["points"]]
            ymax = nice_max(max(vals) * 1.08 if vals else 1)
            Y = svg_axes(o, x0, y0, pw, ph, ymax, title)

            def X(n):
                return x0 + 10 + counts.index(n) / max(1, len(counts) - 1) * (pw - 20)

            for n in counts:
                o.append(f'<text x="{X(n):.1f}" y="{y0 + ph + 14}" text-anchor="middle">{n}</text>')
            for d in sc:
                pts = [(X(pt["luns"]), Y(pt[f] / div)) for pt in sc[d]["points"]]
                o.append(f'<polyline fill="none" stroke="{COLOURS[d]}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
                for a, b in pts:
                    o.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{COLOURS[d]}"/>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ---------------------------------------------------------------- main
def base_name(p):
    if p["mode"].startswith("rbd"):
        return "compare-rbd"
    return "compare-rings" if p["mode"].startswith("rings") else "compare"


def finish(doc):
    """Summary, outputs and the printed report; ratios last. Returns the exit status."""
    p = doc["plan"]
    doc["summary"] = summarize(doc["results"], p)
    doc["scale_summary"] = scale_summary(doc["scale"], doc["scale_end"])
    doc["rows"] = [{"job": r["job"], "hw": r["hw"], "ring": r["ring"], **row_ratios(r, p)}
                   for r in rows(doc["summary"], p)]
    outdir = out_dir()
    jpath, spath = (os.path.join(outdir, base_name(p) + ext) for ext in (".json", ".svg"))
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    with open(spath, "w") as f:
        f.write(svg_chart(doc["summary"], p, doc["scale_summary"]))
    print()
    print(table(doc["summary"], p))
    st = scale_table(doc["scale_summary"])
    if st:
        print(st)
    noisy = [r for r in doc["results"] if not is_quiet(r)]
    if noisy:
        log(f"compare: note: {len(noisy)}/{len(doc['results'])} job windows saw more than {QUIET_OTHER_CORES} "
            "core of other host load (host_other_cores in the JSON)")
    h = doc["host"]
    log(f"compare: wrote {jpath} and {spath} ({doc['elapsed_s']:.0f}s, host load "
        f"{h['loadavg_start'][0]:.1f} -> {h['loadavg_end'][0]:.1f})")
    for line in doc["problems"]:
        log(f"compare: FAILED: {line}")
    print()
    for line in ratio_lines(doc["summary"], p, doc["scale_summary"]):
        print(line)
    return 1 if doc["problems"] else 0


def rerender(path):
    doc = json.load(open(path))
    for r in doc["results"]:
        derive(r)
    return finish(doc)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--from-json":
        return rerender(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
        print(markdown(json.load(open(sys.argv[2]))))
        return 0
    a = parse_args(sys.argv[1:])
    p = plan(a)
    if "warden" in p["targets"] and not os.access(a["warden"], os.X_OK):
        sys.exit(f"compare: no tcmu-warden binary at {a['warden']} (cargo build --release -p tcmu-warden)")
    runner = os.path.abspath(a["runner"]) if a["runner"] else None
    if "runner" in p["targets"] and not (runner and os.access(os.path.join(runner, "bin", "tcmu-runner"), os.X_OK)):
        sys.exit("compare: no tcmu-runner: pass --runner DIR (scripts/build-tcmu-runner.sh prints it)")
    if "runner" in p["targets"] and a["rbd"] and not os.path.exists(os.path.join(runner, "handlers", "handler_rbd.so")):
        sys.exit("compare: no handlers/handler_rbd.so in --runner DIR (scripts/fetch-tcmu-runner-deb.sh prints it)")
    if a["rbd"]:
        return run_rbd(a, p, runner)
    return run(a, p, runner)


def run_rbd(a, p, runner):
    """The RBD mode: the image and the guest's /etc/ceph around run(); the image is removed
    whatever happens."""
    tmpdir = tempfile.mkdtemp(prefix="compare-rbd.")
    cl = compare_rbd.Cluster(a["ceph"], tmpdir)
    try:
        spec = cl.create_image(p["size_mb"])
        p["guest"] = {"BENCH_RBD": spec, "BENCH_RBD_PORTS": ",".join(map(str, cl.ports())),
                      "BENCH_RBD_OPTS": os.environ.get("BENCH_RBD_OPTS", "")}
        rbd_env = {"root": cl.guest_root(), "files": cl.plugin_dirs(), "after_boot": cl.drop_stale_lock}
        return run(a, p, runner, rbd_env, tmpdir)
    finally:
        cl.remove_image()


def run(a, p, runner, rbd_env=None, tmpdir=None):
    plan_boots = boots(p)
    est = sum(boot_estimate_s(p, t, wj, sc) for _, t, wj, sc in plan_boots)
    p["estimate_s"] = est
    jobs_total = sum(boot_jobs(p, t, wj) for _, t, wj, _ in plan_boots)
    log(f"compare: {p['mode']} run: {len(plan_boots)} boots ({p['rounds']} round(s) of "
        f"{'/'.join(p['targets'])}{', scale ' + '/'.join(map(str, p['scale'])) + ' LUNs' if p['scale'] else ''}), "
        f"{jobs_total} jobs of {p['ramp_ms'] / 1000:g}+{p['runtime_ms'] / 1000:g} s; estimate ~{est // 60}m{est % 60:02d}s")
    log(f"compare: tcmu-warden {a['warden']}; tcmu-runner {runner}")
    outdir = out_dir()
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="compare.")
    load0 = os.getloadavg()
    doc = {"benchmark": base_name(p), "schema": 1, "started_utc": utc_now(), "mode": p["mode"], "plan": p,
           "warden": dict(binary_info(a["warden"]), args=p["handler_args"]),
           "runner": {"dir": runner, "version": open(os.path.join(runner, "version")).read().strip()
                      if runner and os.path.exists(os.path.join(runner, "version")) else None},
           "boots": [], "results": [], "scale": [], "scale_end": [], "problems": []}
    extra_root = runner_extra_root(runner, tmpdir) if "runner" in p["targets"] else None
    if rbd_env and extra_root:
        compare_rbd.merge_root(extra_root, rbd_env["root"])
    t0 = time.monotonic()
    for i, (rnd, target, with_jobs, scale) in enumerate(plan_boots, 1):
        name = f"{base_name(p)}-vm-{i}-{target}"
        vm_out = os.path.join(outdir, name)
        est = boot_estimate_s(p, target, with_jobs, scale)
        timeout = est * 2 + 120
        scen_dir = os.path.join(tmpdir, str(i))
        os.makedirs(scen_dir)
        scen = make_scenario("compare", boot_settings(p, rnd, target, with_jobs, scale, runner), timeout, scen_dir)
        env = {}
        if target == "runner":
            env = {"VM_EXTRA_FILES": " ".join(os.path.join(runner, d) for d in ("bin", "lib", "handlers")),
                   "VM_EXTRA_ROOT": extra_root}
        if rbd_env:
            env["VM_EXTRA_FILES"] = " ".join(([env["VM_EXTRA_FILES"]] if env else []) + rbd_env["files"])
            env.setdefault("VM_EXTRA_ROOT", rbd_env["root"])
        what = "jobs" if with_jobs else ""
        if scale:
            what += (" + " if what else "") + f"scale {'/'.join(map(str, scale))}"
        log(f"compare: boot {i}/{len(plan_boots)}: round {rnd}, {target}, {what} (~{est}s)")
        n_before = len(doc["results"])

        def on_record(r, rnd=rnd, target=target):
            doc["results"].append(r)
            hw = f"hw{r['hw']}" + (f" ring{r['ring']}" if len({c['ring'] for c in p['configs']}) > 1 else "")
            log(f"[{len(doc['results']):>3}/{jobs_total}] r{rnd} {r['job']:<17} {target:<7} {hw:<14}{progress_tail(r)}")

        def on_line(k, v, target=target):
            if k in ("scalerec", "scaleend"):
                rec = {kk: vv for kk, vv in ((x.split(":", 1) + [""])[:2] for x in v.split(","))}
                rec = {kk: (int(vv) if vv.lstrip("-").isdigit() else vv) for kk, vv in rec.items()}
                doc["scale" if k == "scalerec" else "scale_end"].append(rec)
                if k == "scalerec":
                    log(f"      scale {target}: {rec['luns']:>4} LUNs  RSS {rec['rss_kb'] / 1024:7.1f} MB  "
                        f"{rec['threads']:>4} threads  added in {rec['add_ms'] / 1000:.2f}s")
            elif k in ("kmsg_bad", "bench_failures") and v not in ("0", ""):
                log(f"compare: guest {k}={v}")

        rc, info, secs, runlog = run_boot(a["warden"] if target == "warden" else "none", scen, vm_out,
                                          timeout + 30, on_record, on_line, env)
        got = len(doc["results"]) - n_before
        want = boot_jobs(p, target, with_jobs)
        doc["boots"].append({"round": rnd, "target": target, "jobs": with_jobs, "scale": scale, "rc": rc,
                             "seconds": round(secs, 1), "guest": info, "jobs_reported": got})
        bad = [r for r in doc["results"][n_before:] if not ok(r)]
        if rc != 0 or got != want or bad:
            doc["problems"].append(f"boot {i} ({target}, round {rnd}): run-vm rc={rc}, {got}/{want} jobs reported, "
                                   f"{len(bad)} failed; log {runlog}")
            log(f"compare: boot {i} FAILED (rc={rc}, {got}/{want} jobs, {len(bad)} failed); tail of {runlog}:")
            print_failure_tail(runlog)
        else:
            log(f"compare: boot {i} done in {secs:.0f}s (guest booted at {info.get('boot_s', '?')}s)")
        if rbd_env:
            doc["boots"][-1]["stale_locks_removed"] = rbd_env["after_boot"]()
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    doc["host"] = host_facts(load0)
    doc["measures"] = {
        "fields of results[]": "as bench/out/ring-size.json's measures (bench/vm/README.md); plus target "
                               "(warden|runner|fileio), hw (the LUN's hw_max_sectors), ring (max_data_area_mb; 0 for fileio)",
        "summary": "per (target, job, hw, ring): medians over rounds; quiet = medians over windows with "
                   f"host_other_cores <= {QUIET_OTHER_CORES}",
        "rows": "ratios warden/runner and warden/fileio of throughput, qemu CPU per I/O and p50; each side's "
                "figure is its quiet median when it had quiet windows, else its median over all rounds",
        "scale": "scalerec: daemon VmRSS (kB) and Threads (/proc/PID/status) after N LUNs, add_ms since the first mkdir",
    }
    if rbd_env:
        doc["measures"]["fio-rbd"] = ("target fio-rbd: fio's rbd engine, no SCSI (hw and ring 0); ios_from:fio: its "
                                      "window I/Os are fio's IOPS times the window (no block layer to count), the "
                                      "window placed from eth0's packets beyond those of fio's connect and open")
    return finish(doc)


if __name__ == "__main__":
    sys.exit(main())
