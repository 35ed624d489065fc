#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target into fuzz/corpus/<target>/ (committed).

Each seed is a valid example of what the target parses, built here from the formats the
code reads (docs/kernel-abi.md for the ring and netlink layouts, SBC/SPC for the parameter
lists and CDBs, etc/config.toml.example and docs/config.md for the configuration), so the
fuzzer starts from inputs that reach deep into each parser instead of discovering the
framing by chance. Files are named after what they hold and overwritten on each run; seeds
not written by this script (regression inputs, `regress-*`) are left alone.

Usage: fuzz/make_seeds.py   (from anywhere; no arguments)
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- cdb: first byte = LUN flavour (bit 0: 4096-byte blocks, 1: unmap, 2: write zeroes,
# 3: FUA, 4: thin, 5: COMPARE AND WRITE, 6: write cache; size 2^(byte % 48) blocks).
FLAV = 0x7F  # 4096-byte blocks, every capability, write cache on, 2^31 blocks
cdbs = {
    "read10": bytes([0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]),
    "write16-fua": bytes([0x8A, 0x08]) + struct.pack(">QI", 64, 16) + bytes([0, 0]),
    "inquiry-vpd-b0": bytes([0x12, 1, 0xB0, 0, 0xFF, 0]),
    "mode-sense10-all": bytes([0x5A, 0, 0x3F, 0, 0, 0, 0, 0x04, 0, 0]),
    "read-capacity16": bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2),
    "unmap": bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
    "write-same16-unmap": bytes([0x93, 0x08]) + struct.pack(">QI", 0, 128) + bytes(2),
    "compare-and-write": bytes([0x89, 0]) + struct.pack(">Q", 8) + bytes([0, 0, 0, 1, 0, 0]),
    "report-luns": bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
    "sync-cache10": bytes([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
}
for name, cdb in cdbs.items():
    put("cdb", name, bytes([FLAV]) + cdb)

# ---- ring: geometry byte, then operations (fuzz_targets/ring.rs): 0-4 submit(opcode, cdb[7],
# len u16le: cdb[7] & 3 picks the direction), 5 TMR(k, type), 6-8 drain, 9-12 complete(pick
# u16le), 13-14 publish and reap, 15 corrupt(gate, pos u16le, value).
def sub(opc, v, n):
    return bytes([0, opc, v]) + struct.pack("<H", n)


DRAIN, PUBLISH = bytes([6]), bytes([13])


def comp(pick):
    return bytes([9]) + struct.pack("<H", pick)


put("ring", "write-read-complete",
    bytes([0x0B]) + sub(0x2A, 1, 8192) + sub(0x28, 2, 4096) + DRAIN + comp(0) + comp(0)
    + PUBLISH)
put("ring", "bidi-sense-keepbuf",
    bytes([0x0F]) + sub(0x53, 3, 16384) + sub(0x00, 0, 0) + DRAIN
    + comp(0x8000 | 0x200 | 0x100) + comp(0x400 | (3 << 11)) + PUBLISH)
put("ring", "tmr-out-of-order",
    bytes([0x0A]) + sub(0x28, 2, 4096) * 3 + DRAIN + bytes([5, 2, 1]) + DRAIN + comp(2)
    + PUBLISH + comp(1) + comp(0) + PUBLISH)
put("ring", "wrap-small-ring",
    bytes([0x00]) + (sub(0x00, 0, 0) + DRAIN + comp(0) + PUBLISH) * 12)
put("ring", "var-len-cdb", bytes([0x07]) + sub(0x7F, 0x10, 512) + DRAIN + comp(0) + PUBLISH)
put("ring", "corrupt-head", bytes([0x08]) + sub(0x28, 2, 4096) + bytes([15, 0x5A, 0, 0, 0xFF])
    + DRAIN)

# ---- netlink: datagrams as the kernel sends them (native byte order, family id 0x1b).
FAM = 0x1B


def nla(ty, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, ty) + payload + bytes((-n) % 4)


def nlmsg(ty, flags, seq, payload):
    return struct.pack("=IHHII", 16 + len(payload), ty, flags, seq, 0) + payload


def event(cmd, device, extra=b""):
    attrs = (nla(1, device.encode() + b"\0") + nla(2, struct.pack("=I", 3))
             + nla(8, struct.pack("=I", 5)) + extra)
    return nlmsg(FAM, 0, 0, bytes([cmd, 2, 0, 0]) + attrs)


DEV = "tcm-user/1/disk0/file/img"
put("netlink", "added", event(1, DEV))
put("netlink", "removed", event(2, DEV))
put("netlink", "reconfig-dev-cfg", event(3, DEV, nla(4, b"file//var/lib/new.img\0")))
put("netlink", "reconfig-dev-size-pad",
    event(3, DEV, nla(3, b"") + nla(5, struct.pack("=Q", 1 << 30))))
put("netlink", "reconfig-writecache", event(3, DEV, nla(6, b"\x01")))
put("netlink", "two-events-and-noop", event(1, DEV) + nlmsg(1, 0, 0, b"") + event(2, DEV))
put("netlink", "ack-with-extack",
    nlmsg(2, 0x200, 9, struct.pack("=i", -22) + nlmsg(FAM, 5, 9, bytes([4, 2, 0, 0]))
          + nla(1, b"missing attribute\0")))
group = nla(1, b"config\0") + nla(2, struct.pack("=I", 7))
put("netlink", "newfamily",
    nlmsg(0x10, 0, 1, bytes([1, 2, 0, 0]) + nla(2, b"TCM-USER\0")
          + nla(1, struct.pack("=H", FAM)) + nla(7, nla(1, group))))

# ---- cfgstring: uio names and dev_config strings of each subtype, with options.
for name, s in {
    "uio-file": "tcm-user/1/disk0/file//var/lib/lun0.img",
    "file-options": "file/lun0.img;io_timeout=10s;multipath=1;tier_policy=refuse",
    "file-faults": "file//srv/a.img;faults=write:fail=EIO,count=3;faults=read:delay=200ms",
    "uio-rbd-ns-snap": "tcm-user/2/lun1/rbd/pool/ns/image@snap;osd_op_timeout=30;id=client.admin",
    "rbd-lock": "rbd/rbd/vm-disk;conf=/etc/ceph/ceph.conf;lock_hold=2.5;lock_timeout=5",
    "uio-glfs": "tcm-user/0/g0/glfs/vol0@gluster1,tcp+gluster2:24007/dir/lun.img;ping_timeout=10s",
    "glfs-ipv6-rdma": "glfs/vol_1@rdma+[fe80::1]:24008,[::1]/a/b.img;gfapi_log=/var/log/g.log",
    "semicolon-in-path": "file//var/lib/a;b.img;ping_interval=5s",
}.items():
    put("cfgstring", name, s)

# ---- config: the shipped example, a per-device override with faults, a minimal file.
with open(os.path.join(HERE, "..", "etc", "config.toml.example"), "rb") as f:
    put("config", "example", f.read())
put("config", "devices", """[daemon]
log_level = "info,tcmu_warden::device=debug"
workers = 16
max_inflight = 1024
replacement_timeout = "2m"

[defaults]
io_timeout = "30s"
tier_policy = "refuse"

[device."user_0/lun0"]
multipath = true
ping_interval = "1m30s"
faults = "write:fail=EIO,every=10;read|write:hang=60s,count=1"
""")
put("config", "duration", "1.5s")

# ---- tcmu_conf: as tcmu-runner ships it, and with the older key and quotes.
put("tcmu_conf", "runner-default", """# tcmu-runner configuration
# log_level = 3
log_level = 4
log_dir = /var/log
""")
put("tcmu_conf", "quoted-old-key", 'log_dir_path = "/var/log/tcmu"\nmax_data_area_mb = 8\nlog_level=5 # debug scsi\n')

# ---- unmap: two LUN-selector bytes (little-endian u16: bits 0-2 capacity, 3-7 maximum
# descriptors, 8+ maximum blocks), then the UNMAP parameter list.
def unmap_list(descs):
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descs)
    return struct.pack(">HH4x", len(body) + 6, len(body)) + body


SEL = struct.pack("<H", 3 | (16 << 3) | (3 << 8))  # 2^20 blocks, 16 descriptors, 8192 blocks
put("unmap", "two-ranges", SEL + unmap_list([(0, 128), (4096, 8192)]))
put("unmap", "zero-length-skipped", SEL + unmap_list([(10, 0), (11, 1)]))
put("unmap", "header-only", SEL + unmap_list([]))
put("unmap", "truncated", SEL + unmap_list([(1, 1), (2, 2)])[:29])

# ---- mode_select: a selector byte (bit 0: MODE SELECT(10), 1: PF=0, 2: SP, 3: 4096-byte
# blocks, 4-5: capacity, 6: DBD, 7: write cache on), then the parameter list.
caching = bytes([0x08, 0x12, 0x04]) + bytes(17)
control = bytes([0x0A, 0x0A, 0x00, 0x10]) + bytes(8)
put("mode_select", "ms6-caching-wce", bytes([0x00]) + bytes(4) + caching)
put("mode_select", "ms10-caching-control", bytes([0x01]) + bytes(8) + caching + control)
put("mode_select", "ms6-block-descriptor",
    bytes([0x00]) + bytes([0, 0, 0, 8]) + struct.pack(">II", 1000, 512) + caching)
put("mode_select", "ms10-long-lba",
    bytes([0x19]) + bytes([0, 0, 0, 0, 1, 0, 0, 16]) + struct.pack(">Q4xI", 0xFFFFFFFF, 4096)
    + caching)

# ---- xcopy: EXTENDED COPY(LID1) parameter lists (SPC-4 6.4): two E4h CSCDs naming LUs by
# NAA 6, one 02h block-to-block segment. The target is registered once the parser is in the
# tree (fuzz/README.md).
def cscd(naa_tail, block_len):
    naa = bytes([0x60, 0x01, 0x40, 0x50]) + naa_tail.to_bytes(12, "big")
    return bytes([0xE4, 0, 0, 0, 0x01, 0x03, 0, 16]) + naa + bytes(4) + struct.pack(">I", block_len)


def segment(src, dst, blocks, src_lba, dst_lba):
    return bytes([0x02, 0, 0, 0x18]) + struct.pack(">HH2xHQQ", src, dst, blocks, src_lba, dst_lba)


def xcopy(list_id, usage, cscds, segs):
    c, s = b"".join(cscds), b"".join(segs)
    return bytes([list_id, usage << 3]) + struct.pack(">H4xI4x", len(c), len(s)) + c + s


put("xcopy", "two-luns-one-segment",
    xcopy(1, 0, [cscd(1, 512), cscd(2, 512)], [segment(0, 1, 128, 0, 4096)]))
put("xcopy", "same-lun-discard", xcopy(0, 3, [cscd(7, 4096)], [segment(0, 0, 8, 100, 200)]))
put("xcopy", "header-only", xcopy(9, 2, [], []))
