"""The RBD mode of the benchmark of record (compare.py --rbd; see bench/vm/README.md).

tcmu-warden and tcmu-runner (Debian's binary package, handler_rbd.so) each serve a user:rbd
LUN on the same image of a single-node Ceph cluster on the host (tests/ceph/cluster.sh), and
fio's own rbd engine reads and writes that image from the same guest with no SCSI at all (the
ceiling). The guest reaches the cluster as its own 127.0.0.1:PORT (the mon's and the OSD's
ports forwarded by tests/vm/lib.sh's vm_forward, as tests/ceph/vm.sh does), with a client
ceph.conf and client.admin's keyring in its /etc/ceph and librados' plugins in the initramfs.

Settings every target shares: the image (BENCH_SIZE_MB, written once with `rbd bench` before
the first boot, so reads hit real objects), `rbd cache = false` in the guest's ceph.conf
(tcmu-warden also sets it on its clients; tcmu-runner 1.5.4 and fio leave librbd's default,
so the conf is what turns it off for them), and for the daemons hw_max_sectors 1024 and
max_data_area_mb 8 (ceph-iscsi's settings), the LUN's write cache at the kernel's default
(emulate_write_cache 0).
"""
import json
import os
import shutil
import subprocess
import sys

from bench import log

JOBS_FULL = "randread4k-qd32 randwrite4k-qd32 seqwrite1m-qd8 randread4k-qd1 randwrite4k-qd1"
JOBS_QUICK = "randread4k-qd32 seqwrite1m-qd8"
POOL = "rbd"
TABLE_NOTE = ("fio-rbd is fio's own rbd engine in the same guest (no SCSI; its I/Os in the window are fio's rate "
              "times the window); librbd cache off for every target (rbd cache = false), LUN write cache off "
              "(the kernel's default)")


def plan(quick, check_jobs):
    env = os.environ.get
    hw, ring = int(env("BENCH_RBD_HW", "1024")), int(env("BENCH_RBD_RING", "8"))
    jobs = env("BENCH_RBD_JOBS", JOBS_QUICK if quick else JOBS_FULL).split()
    p = {
        "mode": "rbd-" + ("quick" if quick else "full"),
        "reference": "fio-rbd",
        "rounds": int(env("BENCH_ROUNDS", "1" if quick else "3")),
        "runtime_ms": int(env("BENCH_RUNTIME_MS", "1500" if quick else "6000")),
        "ramp_ms": int(env("BENCH_RAMP_MS", "500" if quick else "1000")),
        "size_mb": int(env("BENCH_SIZE_MB", "128" if quick else "1024")),
        "handler_args": env("BENCH_HANDLER_ARGS", ""),
        "targets": env("BENCH_TARGETS", "warden runner fio-rbd").split(),
        "configs": [{"hw": hw, "ring": ring, "jobs": jobs}],
        "fileio_jobs": list(jobs),
        "scale": [],
        "scale_own_boot": False,
        "librbd_cache": "off (rbd cache = false in the guest's ceph.conf)",
        "lun_write_cache": "off (emulate_write_cache 0, the kernel's default)",
    }
    check_jobs(p)
    return p


class Cluster:
    """The host side: the cluster's CLI, the image, the guest's /etc/ceph and plugins."""

    def __init__(self, cdir, tmpdir):
        self.dir = os.path.abspath(cdir)
        self.conf = os.path.join(self.dir, "ceph.conf")
        if not os.path.exists(self.conf):
            sys.exit(f"compare: no ceph.conf in {self.dir} (tests/ceph/cluster.sh up DIR)")
        self.tmpdir = tmpdir
        self.image = None

    def cli(self, tool, *args, timeout=120, check=True):
        # No admin socket and no log file: client.admin's paths are shared with other clients.
        cmd = [tool, "-c", self.conf, "--admin-socket=", "--log-file=/dev/null", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            sys.exit(f"compare: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        return r.stdout

    def ports(self):
        """The mon's ports from the conf and every 127.0.0.1 port of the OSD map."""
        text = open(self.conf).read() + self.cli("ceph", "osd", "dump")
        ports = sorted({int(m.split(":")[1]) for m in _addrs(text)})
        if len(ports) < 3:
            sys.exit(f"compare: could not find the mon and OSD ports ({ports})")
        return ports

    def create_image(self, size_mb):
        """A fresh image, written once end to end (4 MiB sequential writes: every object exists)."""
        self.image = f"bench-{os.getpid()}"
        spec = f"{POOL}/{self.image}"
        self.cli("rbd", "create", spec, "--size", f"{size_mb}M")
        self.cli("rbd", "bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "4",
                 "--io-total", f"{size_mb}M", "--io-pattern", "seq", spec, timeout=600)
        log(f"compare: rbd image {spec} ({size_mb} MiB) created and written once")
        return spec

    def remove_image(self):
        if self.image:
            self.cli("rbd", "rm", "--no-progress", f"{POOL}/{self.image}", check=False, timeout=300)
            self.image = None

    def drop_stale_lock(self):
        """After a boot: a lock the guest's client left behind (a daemon killed at power-off)
        would make the next boot's first write wait for the dead owner; remove it (that
        blocklists the dead client's address)."""
        spec = f"{POOL}/{self.image}"
        locks = json.loads(self.cli("rbd", "lock", "ls", spec, "--format", "json", check=False) or "[]")
        for lk in locks:
            self.cli("rbd", "lock", "rm", spec, lk["id"], lk["locker"], check=False)
            log(f"compare: removed the lock {lk['locker']} at {lk['address']} left by the last boot")
        return len(locks)

    def guest_root(self):
        """A tree for the guest's /: etc/ceph/ceph.conf (the cluster's fsid and mon addresses,
        librbd's cache off, logs on the guest's /tmp) and etc/ceph/keyring (client.admin)."""
        root = os.path.join(self.tmpdir, "ceph-root")
        os.makedirs(os.path.join(root, "etc", "ceph"), exist_ok=True)
        conf = {}
        for line in open(self.conf):
            if " = " in line:
                k, v = line.strip().split(" = ", 1)
                conf.setdefault(k, v)
        with open(os.path.join(root, "etc", "ceph", "ceph.conf"), "w") as f:
            f.write("[global]\n"
                    f"fsid = {conf['fsid']}\n"
                    f"mon host = {conf['mon host']}\n"
                    "auth cluster required = cephx\nauth service required = cephx\nauth client required = cephx\n"
                    "keyring = /etc/ceph/keyring\nms bind ipv6 = false\nadmin socket =\n"
                    "log file = /tmp/ceph-client.log\nclient mount timeout = 20\n"
                    "[client]\nrbd cache = false\n")
        key = subprocess.run(["ceph-authtool", os.path.join(self.dir, "keyring"), "-n", "client.admin", "-p"],
                             capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(root, "etc", "ceph", "keyring"), "w") as f:
            f.write(f"[client.admin]\n\tkey = {key}\n")
        return root

    @staticmethod
    def plugin_dirs():
        """librados' and librbd's dlopened compressor and crypto plugins (next to libceph-common)."""
        ldd = subprocess.run(["ldd", shutil.which("fio") or "/usr/bin/fio"], capture_output=True, text=True).stdout
        lib = next((ln.split()[2] for ln in ldd.splitlines() if ln.strip().startswith("libceph-common")), None)
        d = os.path.dirname(lib) if lib else ""
        if not os.path.isdir(os.path.join(d, "compressor")):
            sys.exit(f"compare: ceph's plugin directory not found (libceph-common in '{d}'); is fio built with rbd?")
        return [os.path.join(d, "compressor"), os.path.join(d, "crypto")]


def _addrs(text):
    out = []
    for word in text.replace(",", " ").replace("[", " ").replace("]", " ").replace("/", " ").split():
        if word.startswith("v1:") or word.startswith("v2:"):
            word = word[3:]
        if word.startswith("127.0.0.1:") and word.split(":")[1].isdigit():
            out.append(word)
    return out


def merge_root(dst, src):
    """Copy the tree src into dst (both exist)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
