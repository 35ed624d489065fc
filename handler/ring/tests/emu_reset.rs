//! `KernelEmu::reset`: one emulated device reused across sessions (what the ring fuzz target
//! does per input) must behave exactly like a fresh one.
#![cfg(feature = "test-utils")]

mod common;

use std::sync::Arc;

use common::*;
use tcmu_ring::emu::{DataDir, EmuConfig, KernelEmu};
use tcmu_ring::{CmdCopy, Doorbell, Response, Ring, TmrCopy};
use tcmu_sys::mailbox;

fn cfg() -> EmuConfig {
    EmuConfig {
        cmdr_size: 1024,
        data_size: 8 * 4096,
        block_size: 4096,
        flags: 0xf,
        scatter: true,
    }
}

#[test]
fn reset_returns_a_used_broken_device_to_its_first_state() {
    let (emu, map, bell) = KernelEmu::new(cfg()).unwrap();
    let map = Arc::new(map);
    let ring = Ring::new(Arc::clone(&map)).unwrap();
    let data = ring.data_area();
    let mut h = H {
        emu,
        ring,
        bell,
        data,
        cmd: CmdCopy::new(),
        tmr: TmrCopy::new(),
    };
    let fresh_free = h.emu.data_blocks_free();
    // Leave everything dirty: ids outstanding (one kept), data used, the ring wrapped,
    // a corrupted mailbox head and a broken ring, both doorbells rung.
    let a = h
        .emu
        .submit(&WRITE10, DataDir::ToDevice(&[7u8; 8192]))
        .unwrap();
    let b = h.emu.submit(&READ10, DataDir::FromDevice(4096)).unwrap();
    assert_eq!(h.next_cmd(), a);
    assert_eq!(h.next_cmd(), b);
    let keep = Response {
        status: 0,
        sense: None,
        read_len: None,
        keep_buf: true,
    };
    h.ring.complete(a, &keep).unwrap();
    h.flush();
    let _ = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.bell.kick().unwrap();
    h.emu.set_raw_tail(3);
    let mut out = Vec::new();
    assert!(h.emu.reap(&mut out).is_err());
    assert!(h.emu.is_broken());
    h.emu.mapping().write_u8(12, 0xff).unwrap();

    h.emu.reset();

    assert!(!h.emu.is_broken());
    assert_eq!(h.emu.outstanding(), 0);
    assert_eq!(h.emu.data_blocks_free(), fresh_free);
    assert_eq!((h.emu.head(), h.emu.last_cleaned()), (0, 0));
    let m = h.emu.mapping();
    assert_eq!(m.load_acquire_u32(mailbox::CMD_HEAD).unwrap(), 0);
    assert_eq!(m.load_acquire_u32(mailbox::CMD_TAIL).unwrap(), 0);
    assert_eq!(m.read_u32(mailbox::CMDR_SIZE).unwrap(), 1024);
    assert!(!h.bell.ack().unwrap(), "the handler's doorbell was drained");
    assert!(
        !h.emu.wait_kick(std::time::Duration::ZERO),
        "the emulation's doorbell was drained"
    );
    // Stale Data-In is garbage again, not the previous session's bytes.
    let mut blk = [0u8; 16];
    m.copy_out(h.emu.data_off(), &mut blk).unwrap();
    assert_eq!(blk, [0xA5; 16]);

    // A new handler on the same mapping serves a full session; ids restart at 1.
    let mut h2 = H {
        ring: Ring::new(map).unwrap(),
        ..h
    };
    let c = h2.emu.submit(&READ10, DataDir::FromDevice(4096)).unwrap();
    assert_eq!(c, 1);
    assert_eq!(h2.next_cmd(), c);
    assert!(h2.next().is_none());
    h2.ring.complete(c, &Response::good()).unwrap();
    let done = h2.flush();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].cmd_id, c);
    assert_eq!(h2.emu.outstanding(), 0);
}

#[test]
fn a_reset_device_matches_a_fresh_one_entry_for_entry() {
    // The same session on a fresh device and on a reset one writes the same ring bytes
    // (scatter on: the block allocator's generator is re-seeded too).
    let session = |emu: &mut KernelEmu| -> Vec<u8> {
        for n in [1usize, 3, 2] {
            emu.submit(&READ10, DataDir::FromDevice(n * 4096)).unwrap();
        }
        let mut ring = vec![0u8; 1024];
        emu.mapping().copy_out(emu.cmdr_off(), &mut ring).unwrap();
        ring
    };
    let (mut fresh, _m, _b) = KernelEmu::new(cfg()).unwrap();
    let want = session(&mut fresh);
    let (mut reused, _m2, _b2) = KernelEmu::new(cfg()).unwrap();
    let _ = session(&mut reused);
    reused.reset();
    assert_eq!(session(&mut reused), want);
}
