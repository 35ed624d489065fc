//! Protocol violations: refused by Ring, or caught by the kernel emulation.
#![cfg(feature = "test-utils")]

mod common;

use common::*;
use tcmu_ring::emu::{DataDir, Violation};
use tcmu_ring::{Entry, EntryError, Response, RingError, STATUS_CHECK_CONDITION};
use tcmu_sys::{hdr, op, req};

#[test]
fn double_completion_refused_by_ring() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    h.next_cmd();
    h.next_cmd();
    h.good(a);
    assert!(
        matches!(h.ring.complete(a, &Response::good()), Err(RingError::DoubleCompletion(x)) if x == a)
    );
    assert!(matches!(
        h.ring.complete(999, &Response::good()),
        Err(RingError::UnknownCmdId(999))
    ));
    assert!(matches!(
        h.ring.complete(0, &Response::good()),
        Err(RingError::UnknownCmdId(0))
    ));
    assert_eq!(h.ring.outstanding(), 1);
    assert_eq!(h.flush().len(), 1);
}

#[test]
fn never_read_id_refused() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert!(matches!(
        h.ring.complete(a, &Response::good()),
        Err(RingError::UnknownCmdId(_))
    ));
    assert!(!h.ring.publish());
}

#[test]
fn raw_double_completion_caught_by_reap() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.next_cmd();
    h.good(a);
    h.flush();
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.next_cmd();
    let at = h.emu.entry_at(b).unwrap();
    h.emu.poke_u16(at, hdr::CMD_ID, 77);
    h.emu.set_raw_tail(at + 120);
    let mut out = Vec::new();
    assert_eq!(h.emu.reap(&mut out), Err(Violation::UnknownCmdId(77)));
    assert!(h.emu.is_broken());
}

#[test]
fn tail_past_head_caught() {
    let mut h = H::small();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.set_raw_tail(240);
    let mut out = Vec::new();
    assert!(matches!(
        h.emu.reap(&mut out),
        Err(Violation::TailPastHead {
            tail: 240,
            head: 120,
            ..
        })
    ));
}

#[test]
fn tail_misaligned_or_inside_entry_caught() {
    let mut h = H::small();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.set_raw_tail(12);
    let mut out = Vec::new();
    assert_eq!(h.emu.reap(&mut out), Err(Violation::TailMisaligned(12)));
    let mut h = H::small();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.set_raw_tail(16);
    assert_eq!(
        h.emu.reap(&mut out),
        Err(Violation::TailInsideEntry { tail: 16, entry: 0 })
    );
}

#[test]
fn corrupt_len_op_stops_the_ring_reader() {
    for bad in [
        0u32,
        4 | op::CMD,
        7 | op::CMD,
        0x10_0000 | op::CMD,
        64 | op::CMD,
        0xffff_fff8 | op::PAD,
    ] {
        let mut h = H::small();
        let a = h.emu.submit(&TUR, DataDir::None).unwrap();
        h.emu.submit(&TUR, DataDir::None).unwrap();
        let at = h.emu.entry_at(a).unwrap();
        h.emu.corrupt_len_op(at, bad);
        let e = h.next();
        assert!(
            matches!(e, Some(Err(RingError::Corrupt { at: 0, .. }))),
            "{bad:#x}: {e:?}"
        );
        assert!(
            matches!(h.next(), Some(Err(RingError::Corrupt { at: 0, .. }))),
            "sticky"
        );
        assert!(h.ring.is_broken());
    }
}

#[test]
fn entry_crossing_head_is_corrupt() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.submit(&TUR, DataDir::None).unwrap();
    let at = h.emu.entry_at(a).unwrap();
    h.emu.corrupt_len_op(at, 248 | op::CMD);
    assert!(matches!(h.next(), Some(Err(RingError::Corrupt { .. }))));
}

#[test]
fn corrupt_len_op_caught_by_reap() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.next_cmd();
    h.good(a);
    assert!(h.ring.publish());
    let at = h.emu.entry_at(a).unwrap();
    h.emu.corrupt_len_op(at, 128 | op::CMD);
    let mut out = Vec::new();
    assert!(matches!(
        h.emu.reap(&mut out),
        Err(Violation::CorruptLenOp {
            at: 0,
            expected: 0x79,
            found: 0x81
        })
    ));
}

#[test]
fn cmd_id_zero_is_corrupt() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.poke_u16(h.emu.entry_at(a).unwrap(), hdr::CMD_ID, 0);
    assert!(matches!(h.next(), Some(Err(RingError::Corrupt { .. }))));
}

fn bad_cmd(poke: impl FnOnce(&mut H, u32)) -> (H, u16, EntryError) {
    let mut h = H::small();
    let a = h
        .emu
        .submit(&WRITE10, DataDir::ToDevice(&[1u8; 9000]))
        .unwrap();
    let at = h.emu.entry_at(a).unwrap();
    poke(&mut h, at);
    match h.next() {
        Some(Ok(Entry::BadCmd { cmd_id, why })) => {
            assert_eq!(cmd_id, a);
            assert_eq!(h.cmd.cmd_id, a);
            assert!(h.cmd.data_out().is_empty());
            (h, a, why)
        }
        other => panic!("expected BadCmd, got {other:?}"),
    }
}

#[test]
fn bad_entries_are_completable_bad_cmds() {
    type Poke = Box<dyn FnOnce(&mut H, u32)>;
    let cases: Vec<(EntryError, Poke)> = vec![
        (
            EntryError::CdbOutOfRange,
            Box::new(|h, at| h.emu.poke_u64(at, req::CDB_OFF, 0)),
        ),
        (
            EntryError::CdbOutOfRange,
            Box::new(|h, at| h.emu.poke_u64(at, req::CDB_OFF, u64::MAX)),
        ),
        (
            EntryError::CdbOutOfRange,
            Box::new(|h, at| h.emu.poke_u64(at, req::CDB_OFF, 128 + u64::from(at) + 16)),
        ),
        (
            EntryError::IovOutOfData,
            Box::new(|h, at| h.emu.poke_u64(at, req::IOV, 0)),
        ),
        (
            EntryError::IovOutOfData,
            Box::new(|h, at| h.emu.poke_u64(at, req::IOV + 8, u64::MAX - 10)),
        ),
        (
            EntryError::IovOutOfData,
            Box::new(|h, at| h.emu.poke_u64(at, req::IOV + 8, 1 << 40)),
        ),
        (
            EntryError::IovCount,
            Box::new(|h, at| h.emu.poke_u32(at, req::IOV_CNT, 6)),
        ),
        (
            EntryError::IovCount,
            Box::new(|h, at| h.emu.poke_u32(at, req::IOV_BIDI_CNT, u32::MAX)),
        ),
        (
            EntryError::TooManyIovs,
            Box::new(|h, at| h.emu.poke_u32(at, req::IOV_CNT, 1 << 20)),
        ),
        (
            EntryError::Dif,
            Box::new(|h, at| h.emu.poke_u32(at, req::IOV_DIF_CNT, 1)),
        ),
        (
            EntryError::CdbLength,
            Box::new(|h, at| {
                // A variable-length CDB whose length (cdb[7] + 8) runs past the entry.
                let cdb_off = h
                    .emu
                    .mapping()
                    .read_u64(128 + usize::try_from(at).unwrap() + req::CDB_OFF)
                    .unwrap();
                let p = usize::try_from(cdb_off).unwrap();
                h.emu.mapping().write_u8(p, 0x7f).unwrap();
                h.emu.mapping().write_u8(p + 7, 200).unwrap();
            }),
        ),
    ];
    for (want, poke) in cases {
        let (mut h, id, why) = bad_cmd(poke);
        assert_eq!(why, want);
        assert!(!why.to_string().is_empty());
        let sense = [0x70u8; 96];
        h.ring
            .complete(
                id,
                &Response {
                    status: STATUS_CHECK_CONDITION,
                    sense: Some(&sense),
                    read_len: None,
                    keep_buf: false,
                },
            )
            .unwrap();
        let out = h.flush();
        assert_eq!(out[0].status, STATUS_CHECK_CONDITION);
        assert_eq!(h.emu.outstanding(), 0);
    }
}

#[test]
fn too_many_completions_refused() {
    let mut h = H::small();
    assert!(matches!(
        h.ring.complete(1, &Response::good()),
        Err(RingError::UnknownCmdId(1))
    ));
}

#[test]
fn head_out_of_range_is_corrupt() {
    let mut h = H::small();
    h.emu.set_raw_head(5000);
    assert!(matches!(h.next(), Some(Err(RingError::Corrupt { .. }))));
    let mut h = H::small();
    h.emu.set_raw_head(12);
    assert!(matches!(h.next(), Some(Err(RingError::Corrupt { .. }))));
}

#[test]
fn head_moved_without_entries_never_spins() {
    // The head points at zeroed ring memory: len 0 is caught at once.
    let mut h = H::small();
    h.emu.set_raw_head(4000);
    assert!(matches!(h.next(), Some(Err(RingError::Corrupt { .. }))));
}

#[test]
fn emu_refuses_oversized_commands() {
    let mut h = H::new(tcmu_ring::emu::EmuConfig {
        cmdr_size: 1024,
        data_size: 64 << 10,
        scatter: true,
        ..Default::default()
    });
    assert_eq!(
        h.emu.submit(&READ10, DataDir::FromDevice(65 << 10)),
        Err(tcmu_ring::emu::Full::TooLarge)
    );
    assert_eq!(
        h.emu.submit(&[0x7f, 0, 0, 0, 0, 0, 0, 255], DataDir::None),
        Err(tcmu_ring::emu::Full::BadCdb)
    );
    let mut cdb = [0u8; 263];
    cdb[0] = 0x7f;
    cdb[7] = 255;
    // 112 + 264 = 376 <= 512: fits.
    let id = h.emu.submit(&cdb, DataDir::None).unwrap();
    assert_eq!(h.next_cmd(), id);
    assert_eq!(h.cmd.cdb(), &cdb[..]);
    h.good(id);
    h.flush();
    assert_eq!(
        h.emu
            .submit(&READ10, DataDir::FromDevice(64 << 10))
            .map(|_| ()),
        Ok(())
    );
}
