"""Shared host half of the VM benchmarks (ring_size.py, compare.py; see bench/vm/README.md).

One boot of the tests/vm harness with a generated scenario (BENCH_* settings, then
scenarios/bench-lib.sh, then the benchmark's own scenario), the results serial channel followed
while the VM runs, qemu's CPU time sampled at the guest's window marks, per-I/O figures derived
from the window counters, medians, and the formatting both benchmarks print.
"""
import datetime
import hashlib
import math
import os
import re
import statistics
import subprocess
import sys
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

QUIET_OTHER_CORES = 0.5   # a window is "quiet" if the rest of the host used at most this


def log(msg):
    print(msg, flush=True)


def out_dir():
    d = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(REPO, "bench", "out")))
    os.makedirs(d, exist_ok=True)
    return d


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def binary_info(binary):
    """Path, short sha256 and the repository's git description, for the JSON."""
    try:
        rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    h = hashlib.sha256(open(binary, "rb").read()).hexdigest()[:16] if binary and os.path.exists(binary) else None
    return {"binary": binary, "sha256_16": h, "git": rev}


# ---------------------------------------------------------------- scenario
def make_scenario(name, settings, timeout_s, tmpdir, layers=(), libs=()):
    """settings + scenarios/bench-lib.sh + scenarios/LIB.sh for each of `libs` +
    scenarios/NAME.sh, as one scenario file NAME.sh; `layers`: extra initramfs layers
    (tests/vm/layers/NAME.sh, e.g. "perf") it asks for."""
    def body(fname):
        lines = open(os.path.join(HERE, "scenarios", fname)).read().splitlines()
        return [line for line in lines if not line.startswith("# vm-timeout:")]

    if os.environ.get("BENCH_PERF", "") not in ("", "0") and "perf" not in layers:
        layers = tuple(layers) + ("perf",)     # perf in the guest, for a look by hand
    head = [f"# vm-timeout: {timeout_s}"] + [f"# vm-layer: {x}" for x in layers]
    for k, v in settings.items():
        v = " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        head.append(f"{k}='{v}'")
    path = os.path.join(tmpdir, f"{name}.sh")
    with open(path, "w") as f:
        f.write("\n".join(head + body("bench-lib.sh") + [x for lib in libs for x in body(f"{lib}.sh")]
                          + body(f"{name}.sh")) + "\n")
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


def add_host_window(r, a, b):
    """qemu's CPU and the rest of the host's load between the marks A and B."""
    if not (a and b and a["qemu"] is not None and b["qemu"] is not None):
        return
    r["qemu_cpu_s"] = (b["qemu"] - a["qemu"]) / TCK
    r["host_win_s"] = round(b["t"] - a["t"], 3)
    # Host CPU used by everything but this qemu in the window (other VMs, builds): a
    # noisy-neighbour indicator, in cores.
    other = (b["host_busy"] - a["host_busy"]) / TCK - r["qemu_cpu_s"]
    r["host_other_cores"] = round(other / max(r["host_win_s"], 1e-3), 2)
    r["qemu_cores"] = round(r["qemu_cpu_s"] / max(r["host_win_s"], 1e-3), 2)


def run_boot(binary, scenario, vm_out, timeout_s, on_record, on_line=None, env=None):
    """Boot tests/vm/run-vm.sh BINARY SCENARIO; call on_record(rec) for every "benchrec=" line
    (with the host's window figures added) and on_line(key, value) for every other
    "key=value" line, while the VM runs. Returns (run-vm status, guest info dict, seconds,
    path of run-vm's log)."""
    os.makedirs(vm_out, exist_ok=True)
    raw = os.path.join(vm_out, "results.raw")
    runlog_path = vm_out + ".log"
    env = dict(os.environ, VM_OUT=vm_out, **(env or {}))
    t0 = time.monotonic()
    info = {}
    with open(runlog_path, "w") as runlog:
        proc = subprocess.Popen([os.path.join(REPO, "tests", "vm", "run-vm.sh"), binary, scenario,
                                 str(timeout_s)], stdout=runlog, stderr=subprocess.STDOUT, env=env)
        # run-vm.sh removes the old results.raw before qemu starts; wait for that first.
        time.sleep(0.5)
        qpid, pos, buf, marks = None, 0, "", {}
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
                        add_host_window(r, marks.get(("A", r["seq"])), marks.get(("B", r["seq"])))
                        on_record(derive(r))
                    elif line.startswith("=== BOOT"):
                        info["boot_s"] = round(time.monotonic() - t0, 1)
                    elif "=" in line and not line.startswith("==="):
                        k, v = line.split("=", 1)
                        info[k] = v
                        if on_line:
                            on_line(k, v)
            if done:
                break
            time.sleep(0.02)
    return proc.returncode, info, time.monotonic() - t0, runlog_path


def print_failure_tail(runlog_path, n=40):
    for line in open(runlog_path).read().splitlines()[-n:]:
        print("  | " + line)


# ---------------------------------------------------------------- derived values
HANDLER_TARGETS = ("warden", "runner")


def derive(r):
    """Per-I/O CPU figures from the window counters (fio-sized I/Os from sector counts)."""
    ios = r["win_sectors"] * 512 / r["bs"] if r.get("bs") else 0
    r["win_ios"] = round(ios)
    win_s = r["win_cs"] / 100 if r.get("win_cs") else 0
    r["win_iops"] = round(ios / win_s) if win_s else 0
    us = 1e6 / 100                             # /proc/stat is in USER_HZ = 100
    hdl = r["target"] in HANDLER_TARGETS
    if ios:
        r["guest_cpu_us_per_io"] = round(r["cpu_busy"] * us / ios, 1)
        r["guest_sys_us_per_io"] = round((r["cpu_sys"] + r["cpu_irq"]) * us / ios, 1)
        r["handler_cpu_us_per_io"] = round(r["handler_ticks"] * us / ios, 1) if hdl else None
        r["handler_sys_us_per_io"] = round(r.get("handler_sys", 0) * us / ios, 1) if hdl else None
        r["ctxt_per_io"] = round(r["ctxt"] / ios, 2)
        if r.get("qemu_cpu_s") is not None:
            r["qemu_cpu_us_per_io"] = round(r["qemu_cpu_s"] * 1e6 / ios, 1)
    r["throughput"] = r.get("bw_kib", 0) / 1024 if r["bs"] >= 1048576 else r.get("iops", 0)
    return r


def ok(r):
    return r.get("rc", 1) == 0 and r.get("fio_err", 1) == 0


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def is_quiet(r):
    o = r.get("host_other_cores")
    return o is not None and o <= QUIET_OTHER_CORES


SUMMARY_FIELDS = ["throughput", "iops", "bw_kib", "p50_us", "p99_us", "p999_us", "lat_mean_us",
                  "guest_cpu_us_per_io", "guest_sys_us_per_io", "handler_cpu_us_per_io",
                  "handler_sys_us_per_io", "qemu_cpu_us_per_io", "ctxt_per_io", "win_iops",
                  "host_other_cores"]
QUIET_FIELDS = ("throughput", "iops", "bw_kib", "p50_us", "p99_us", "guest_cpu_us_per_io",
                "handler_cpu_us_per_io", "qemu_cpu_us_per_io", "ctxt_per_io")


def group_summary(rs, base):
    """Medians over the records rs (one group), min..max of throughput and p99, and the same
    medians over the quiet windows only ("quiet")."""
    s = dict(base, n=len(rs))
    for f in SUMMARY_FIELDS:
        s[f] = med([r.get(f) for r in rs])
    tp = [r["throughput"] for r in rs]
    s["throughput_min"], s["throughput_max"] = min(tp), max(tp)
    p99 = [r["p99_us"] for r in rs]
    s["p99_min"], s["p99_max"] = min(p99), max(p99)
    quiet = [r for r in rs if is_quiet(r)]
    s["n_quiet"] = len(quiet)
    if quiet:
        s["quiet"] = {f: med([r.get(f) for r in quiet]) for f in QUIET_FIELDS}
    return s


# ---------------------------------------------------------------- formatting
def fmt_tp(v, bs):
    if v is None:
        return "-"
    return f"{v:,.0f} MB/s" if bs >= 1048576 else f"{v:,.0f} IOPS"


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v:.0f}us"


def job_bs(job):
    return 1048576 if job.startswith("seq") else 4096


def progress_tail(r):
    """The part of a progress line after the target's name: throughput, latency, CPU."""
    if not ok(r):
        return f"FAILED (rc={r.get('rc')}, fio_err={r.get('fio_err')})"
    q = r.get("qemu_cpu_us_per_io")
    g = r.get("guest_cpu_us_per_io")
    return (f"{fmt_tp(r['throughput'], r['bs']):>12} p50 {fmt_us(r['p50_us']):>7} "
            f"p99 {fmt_us(r['p99_us']):>7}  cpu/IO guest {fmt_us(g):>6} qemu {fmt_us(q):>6}"
            + ("" if r.get("win_ok", 1) else "  (window overran the job)")
            + (f"  [busy host: qemu {r['qemu_cores']} cores, others {r['host_other_cores']}]"
               if r.get("host_other_cores") is not None and not is_quiet(r) else ""))


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


def svg_open(w, h, title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            'font-family="sans-serif" font-size="11">',
            f'<rect width="{w}" height="{h}" fill="white"/>',
            f'<text x="10" y="18" font-size="14" font-weight="bold">{title}</text>']


def svg_legend(o, items, y=34):
    lx = 10
    for name, style in items:
        o.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 30}" y2="{y}" {style}/>')
        o.append(f'<text x="{lx + 36}" y="{y + 4}">{name}</text>')
        lx += 36 + 7 * len(name) + 20


def svg_axes(o, x0, y0, pw, ph, ymax, title, scale=1.0, decimals=0):
    """Frame, title and 5 horizontal grid lines with labels; returns Y(v)."""
    o.append(f'<text x="{x0}" y="{y0 - 8}" font-weight="bold">{title}</text>')
    o.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')

    def Y(v):
        return y0 + ph - (v / ymax) * ph

    for i in range(5):
        v = ymax * i / 4
        y = Y(v)
        o.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#eee"/>')
        o.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{v / scale:,.{decimals}f}</text>')
    return Y


def host_facts(load0):
    return {"nproc": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "clk_tck": TCK}


def die(prog, msg):
    sys.exit(f"{prog}: {msg}")
