//! Structure-aware fuzzing of the TCMU ring: the input is decoded into a list of operations,
//! mostly valid (submits, TMRs, drains, out-of-order completions, publishes), rarely raw
//! corruptions of ring bytes. Asserts: no panic; while the ring was never corrupted, every
//! submitted command is completed exactly once and the kernel emulation sees no violation.
//!
//! Speed: one emulated device per geometry (16 of them), with the handler's `Ring` on it,
//! lives for the whole process; before each input `KernelEmu::reset` returns the device to
//! its first state and `Ring::reopen` does what a restarted handler's `Ring::new` would
//! (mailbox validated again, every id forgotten) without allocating its two 65,536-bit id
//! sets. The session's own bookkeeping is cleared, not reallocated. An input still frees what
//! it allocated (libFuzzer runs a whole-heap leak check after an input that does not).
//! Building a device per input (a memfd, two mappings, a 65,536-entry id table) held the
//! target to ~150 inputs/s; fuzz/README.md has the figures.
//!
//! Deps: tcmu-ring (features = ["test-utils"]), libfuzzer-sys.
#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tcmu_ring::emu::{Completed, DataDir, EmuConfig, EmuDoorbell, KernelEmu};
use tcmu_ring::{CmdCopy, Doorbell, Entry, Response, Ring, TmrCopy};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
}

/// One emulated device and the handler's ring on it, reused across inputs.
struct Device {
    emu: KernelEmu,
    ring: Ring,
    bell: EmuDoorbell,
    cmd: CmdCopy,
    tmr: TmrCopy,
}

/// Geometry picked by the first input byte: ring size, scatter, capability flags.
fn config(geom: u8) -> EmuConfig {
    EmuConfig {
        cmdr_size: [512u32, 1024, 2048, 4096][usize::from(geom & 3)],
        data_size: 32 * 4096,
        block_size: 4096,
        scatter: geom & 4 != 0,
        flags: if geom & 8 != 0 { 0xf } else { 0x5 },
    }
}

thread_local! {
    static DEVICES: RefCell<Vec<Option<Device>>> = RefCell::new((0..16).map(|_| None).collect());
    /// Data-Out source and Data-In scratch (64 KiB), allocated once.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 * 1024]);
    /// The session's bookkeeping, cleared (not reallocated) per input.
    static BOOK: RefCell<Book> = RefCell::new(Book::default());
}

/// What a session tracks: ids read and not completed, ids submitted and not reaped, ids
/// reaped, and the emulation's completions.
#[derive(Default)]
struct Book {
    read: Vec<u16>,
    submitted: HashSet<u16>,
    completed: HashSet<u16>,
    out: Vec<Completed>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&geom, ops)) = data.split_first() else {
        return;
    };
    DEVICES.with_borrow_mut(|devs| {
        let slot = &mut devs[usize::from(geom & 15)];
        if slot.is_none() {
            let Ok((emu, map, bell)) = KernelEmu::new(config(geom)) else {
                return;
            };
            let Ok(ring) = Ring::new(Arc::new(map)) else {
                return;
            };
            *slot = Some(Device {
                emu,
                ring,
                bell,
                cmd: CmdCopy::new(),
                tmr: TmrCopy::new(),
            });
        }
        let Some(dev) = slot.as_mut() else { return };
        dev.emu.reset();
        BUF.with_borrow_mut(|buf| {
            BOOK.with_borrow_mut(|book| {
                book.read.clear();
                book.submitted.clear();
                book.completed.clear();
                book.out.clear();
                session(dev, config(geom).cmdr_size, ops, buf, book);
                // An input frees what it allocated: libFuzzer runs a whole-heap leak check
                // after an input with more allocations than frees.
                book.out.clear();
            });
        });
    });
});

/// One handler session on a freshly reset device, driven by `ops`.
fn session(dev: &mut Device, cmdr_size: u32, ops: &[u8], buf: &mut [u8], book: &mut Book) {
    let Device {
        emu,
        ring,
        bell,
        cmd,
        tmr,
    } = dev;
    let Book {
        read,
        submitted,
        completed,
        out,
    } = book;
    let mut inp = Input(ops);
    // As a restarted handler's `Ring::new` on the reset device, without allocating.
    if ring.reopen().is_err() {
        return;
    }
    let data_area = ring.data_area();
    let mut corrupted = false;
    let sense = [0x70u8; 96];

    while let Some(kind) = inp.byte() {
        match kind % 16 {
            0..=4 => {
                let (Some(opc), Some(v), Some(len)) = (inp.byte(), inp.byte(), inp.u16()) else {
                    break;
                };
                let n = tcmu_ring::scsi_command_size(opc, v);
                let mut cdb = [0u8; 264];
                cdb[0] = opc;
                cdb[7] = v;
                let len = usize::from(len);
                let dir = match v & 3 {
                    0 => DataDir::None,
                    1 => DataDir::ToDevice(&buf[..len]),
                    2 => DataDir::FromDevice(len),
                    _ => DataDir::Bidi {
                        out: &buf[..len / 2],
                        in_len: len / 2,
                    },
                };
                if let Ok(id) = emu.submit(&cdb[..n], dir) {
                    submitted.insert(id);
                    completed.remove(&id);
                }
            }
            5 => {
                let k = usize::from(inp.byte().unwrap_or(0) % 4).min(read.len());
                let mut ids = [0u16; 3];
                ids[..k].copy_from_slice(&read[..k]);
                let _ = emu.submit_tmr(inp.byte().unwrap_or(1), &ids[..k]);
            }
            6..=8 => {
                let _ = bell.ack();
                while let Some(e) = ring.next(cmd, tmr) {
                    match e {
                        Ok(Entry::Cmd | Entry::BadCmd { .. }) => {
                            if !corrupted {
                                assert!(
                                    submitted.contains(&cmd.cmd_id),
                                    "read an id never submitted"
                                );
                            }
                            // Touch the data through the validated segments.
                            let l = usize::try_from(cmd.data_len()).unwrap_or(0).min(buf.len());
                            data_area.copy_to_slice(cmd.data_out(), 0, &mut buf[..l]);
                            data_area.fill(cmd.bidi_in(), 0, u64::MAX, 0);
                            read.push(cmd.cmd_id);
                        }
                        Ok(Entry::Tmr) => {}
                        Err(_) => {
                            assert!(corrupted, "ring error without corruption");
                            return;
                        }
                    }
                }
            }
            9..=12 => {
                let Some(pick) = inp.u16() else { break };
                if read.is_empty() {
                    continue;
                }
                let id = read.swap_remove(usize::from(pick) % read.len());
                let status = if pick & 0x100 != 0 { 2 } else { 0 };
                let rsp = Response {
                    status,
                    sense: (pick & 0x200 != 0).then_some(&sense),
                    read_len: (pick & 0x400 != 0).then_some(u32::from(pick >> 11)),
                    keep_buf: pick & 0x8000 != 0,
                };
                let r = ring.complete(id, &rsp);
                if !corrupted {
                    assert!(r.is_ok(), "completion of a read id refused: {r:?}");
                }
                assert!(
                    ring.complete(id, &rsp).is_err(),
                    "double completion accepted"
                );
            }
            13 | 14 => {
                if ring.publish() {
                    let _ = bell.kick();
                }
                out.clear();
                match emu.reap(out) {
                    Ok(()) => {}
                    Err(v) => {
                        assert!(corrupted, "violation without corruption: {v}");
                        return;
                    }
                }
                for c in out.iter() {
                    if !corrupted {
                        assert!(completed.insert(c.cmd_id), "completed twice: {}", c.cmd_id);
                        assert!(submitted.remove(&c.cmd_id));
                    }
                    if c.kept {
                        let _ = emu.free_kept_buf(c.cmd_id);
                    }
                }
            }
            _ => {
                // Rare: corrupt a byte of the ring (or the mailbox head).
                let (Some(gate), Some(pos), Some(v)) = (inp.byte(), inp.u16(), inp.byte()) else {
                    break;
                };
                if gate == 0xa5 {
                    let off = 128 + usize::from(pos) % usize::try_from(cmdr_size).unwrap_or(512);
                    let _ = emu.mapping().write_u8(off, v);
                    corrupted = true;
                } else if gate == 0x5a {
                    let _ = emu.mapping().write_u8(12 + usize::from(pos % 4), v);
                    corrupted = true;
                }
            }
        }
    }
    if corrupted {
        return;
    }
    // Complete everything; every submitted command must come back exactly once.
    for _ in 0..4 {
        let _ = bell.ack();
        while let Some(e) = ring.next(cmd, tmr) {
            if let Ok(Entry::Cmd | Entry::BadCmd { .. }) = e {
                read.push(cmd.cmd_id);
            } else {
                assert!(e.is_ok());
            }
        }
        for id in read.drain(..) {
            ring.complete(id, &Response::good()).expect("complete");
        }
        ring.publish();
        out.clear();
        emu.reap(out).expect("no violation");
        for c in out.iter() {
            assert!(completed.insert(c.cmd_id), "completed twice");
            assert!(submitted.remove(&c.cmd_id));
            if c.kept {
                let _ = emu.free_kept_buf(c.cmd_id);
            }
        }
    }
    assert!(
        submitted.is_empty(),
        "commands never completed: {submitted:?}"
    );
    assert_eq!(ring.outstanding(), 0);
}
