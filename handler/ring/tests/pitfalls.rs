//! One test (at least) per pitfall of docs/kernel-abi.md §9 that concerns the ring.
#![cfg(feature = "test-utils")]

mod common;

use std::io::Write as _;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tcmu_ring::emu::{DataDir, EmuConfig, Full, KernelEmu};
use tcmu_ring::{Doorbell, Entry, Mapping, Response, Ring, RingError, Uio, STATUS_CHECK_CONDITION};
use tcmu_sys::{hdr, mailbox, op, req, rsp, uflags};

fn sense_pattern(seed: u8) -> [u8; 96] {
    let mut s = [0u8; 96];
    s[0] = 0x70;
    s[2] = 0x05;
    for (i, b) in s.iter_mut().enumerate().skip(7) {
        *b = seed.wrapping_add(u8::try_from(i).unwrap());
    }
    s
}

#[test]
fn pitfall_01_reading_does_not_move_cmd_tail() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!(h.next_cmd(), a);
    assert_eq!(h.next_cmd(), b);
    assert!(h.next().is_none());
    assert_eq!(
        h.emu.mapping().load_acquire_u32(mailbox::CMD_TAIL).unwrap(),
        0
    );
    assert!(!h.ring.publish(), "nothing completed, nothing to publish");
    let mut out = Vec::new();
    h.emu.reap(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(h.emu.outstanding(), 2);
    h.good(a);
    let out = h.flush();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cmd_id, a);
    assert_eq!(h.emu.outstanding(), 1);
}

/// `Ring::has_new` (the busy-poll's check) sees a posted entry without reading it, and is
/// false again once `next` has read everything.
#[test]
fn has_new_peeks_at_cmd_head_without_reading() {
    let mut h = H::small();
    assert!(!h.ring.has_new());
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert!(h.ring.has_new());
    assert!(h.ring.has_new(), "a peek reads nothing");
    assert_eq!(h.next_cmd(), a);
    assert!(!h.ring.has_new());
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert!(h.ring.has_new());
    assert_eq!(h.next_cmd(), b);
    assert!(h.next().is_none());
    assert!(!h.ring.has_new());
}

#[test]
fn pitfall_02_offsets_cdb_iov_sense() {
    let mut h = H::small();
    let data: Vec<u8> = (0..5000u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let id = h.emu.submit(&WRITE10, DataDir::ToDevice(&data)).unwrap();
    assert_eq!(h.next_cmd(), id);
    assert_eq!(h.cmd.cdb(), &WRITE10);
    assert_eq!(h.cmd.data_len(), 5000);
    assert_eq!(h.cmd.iov_cnt, 1, "two adjacent blocks merge into one iovec");
    let mut got = vec![0u8; 5000];
    assert_eq!(h.data.copy_to_slice(h.cmd.data_out(), 0, &mut got), 5000);
    assert_eq!(got, data);
    let sense = sense_pattern(1);
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
    assert_eq!(out[0].sense, sense);
}

#[test]
fn pitfall_03_cmdr_geometry_from_mailbox() {
    let h = H::new(EmuConfig {
        cmdr_size: 8192 - 128,
        data_size: 64 << 10,
        ..EmuConfig::default()
    });
    assert_eq!(h.ring.cmdr_size(), 8192 - 128);
    assert_eq!(h.data.data_off(), 8192);
    assert_eq!(h.data.len(), 64 << 10);
    assert_eq!(
        tcmu_ring::parse_map_size("0x0000000040800000\n").unwrap(),
        0x4080_0000
    );
}

#[test]
fn pitfall_04_mailbox_version_2_only() {
    let (emu, map, _bell) = KernelEmu::new(EmuConfig::default()).unwrap();
    let map = Arc::new(map);
    assert!(Ring::new(Arc::clone(&map)).is_ok());
    emu.mapping().write_u16(mailbox::VERSION, 1).unwrap();
    assert!(matches!(
        Ring::new(Arc::clone(&map)),
        Err(RingError::MailboxVersion(1))
    ));
    emu.mapping().write_u16(mailbox::VERSION, 2).unwrap();
    emu.mapping().write_u32(mailbox::CMDR_OFF, 64).unwrap();
    assert!(matches!(
        Ring::new(Arc::clone(&map)),
        Err(RingError::CmdrOff(64))
    ));
    emu.mapping().write_u32(mailbox::CMDR_OFF, 128).unwrap();
    emu.mapping()
        .write_u32(mailbox::CMDR_SIZE, u32::MAX - 7)
        .unwrap();
    assert!(matches!(Ring::new(map), Err(RingError::CmdrSize { .. })));
}

#[test]
fn pitfall_05_eight_byte_pad_at_ring_end() {
    // 3 * 120-byte entries + 8 = ring size: the 4th entry needs an 8-byte PAD.
    let mut h = H::new(EmuConfig {
        cmdr_size: 3 * 120 + 8,
        data_size: 64 << 10,
        ..EmuConfig::default()
    });
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!((h.next_cmd(), h.next_cmd()), (a, b));
    h.good(b);
    h.good(a);
    h.flush();
    let c = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!(h.next_cmd(), c);
    h.good(c);
    h.flush();
    assert_eq!(h.emu.head(), 360);
    let d = h.emu.submit(&TUR, DataDir::None).unwrap();
    let len_op = h.emu.mapping().read_u32(h.emu.cmdr_off() + 360).unwrap();
    assert_eq!(len_op, 8 | op::PAD, "an 8-byte PAD at the very end");
    assert_eq!(h.emu.entry_at(d), Some(0));
    assert_eq!(h.next_cmd(), d);
    // A 32-byte TMR is read by its header, too.
    h.emu.submit_tmr(tcmu_sys::tmr::ABORT_TASK, &[d]).unwrap();
    assert_eq!(h.next().unwrap().unwrap(), Entry::Tmr);
    assert_eq!(h.tmr.cmd_ids, vec![d]);
    h.good(d);
    h.flush();
    assert_eq!(h.emu.ring_used(), 0);
    assert_eq!(h.ring.outstanding(), 0);
}

#[test]
fn pitfall_06_concurrent_kernel_and_handler() {
    const N: usize = 3000;
    let (mut emu, map, bell) = KernelEmu::new(EmuConfig {
        cmdr_size: 4096,
        data_size: 128 << 10,
        ..EmuConfig::default()
    })
    .unwrap();
    let handler = std::thread::spawn(move || {
        let mut ring = Ring::new(Arc::new(map)).unwrap();
        let data = ring.data_area();
        let (mut cmd, mut tmr) = (tcmu_ring::CmdCopy::new(), tcmu_ring::TmrCopy::new());
        let mut done = 0;
        let mut buf = vec![0u8; 8192];
        while done < N {
            bell.ack().unwrap();
            let mut any = false;
            while let Some(e) = ring.next(&mut cmd, &mut tmr) {
                assert_eq!(e.unwrap(), Entry::Cmd);
                let n = usize::try_from(cmd.data_len()).unwrap();
                buf[..n].fill(u8::try_from(cmd.cmd_id % 256).unwrap());
                data.copy_from_slice(cmd.data_out(), 0, &buf[..n]);
                ring.complete(cmd.cmd_id, &Response::good()).unwrap();
                done += 1;
                any = true;
            }
            if ring.publish() {
                bell.kick().unwrap();
            }
            if !any {
                std::thread::yield_now();
            }
        }
    });
    let mut submitted = 0;
    let mut out = Vec::new();
    let mut reaped = 0;
    while reaped < N {
        if submitted < N {
            match emu.submit(&READ10, DataDir::FromDevice(1 + (submitted * 37) % 8000)) {
                Ok(_) => submitted += 1,
                Err(Full::Ring | Full::Data) => {
                    let _ = emu.wait_kick(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        } else {
            let _ = emu.wait_kick(Duration::from_millis(5));
        }
        out.clear();
        emu.reap(&mut out).unwrap();
        for c in &out {
            let fill = u8::try_from(c.cmd_id % 256).unwrap();
            assert!(
                c.data_in.iter().all(|&b| b == fill),
                "data of {} not visible",
                c.cmd_id
            );
        }
        reaped += out.len();
    }
    handler.join().unwrap();
    assert_eq!(emu.outstanding(), 0);
}

#[test]
fn pitfall_07_cdb_and_iovecs_copied_at_read() {
    let mut h = H::small();
    let data = vec![7u8; 100];
    let a = h.emu.submit(&WRITE10, DataDir::ToDevice(&data)).unwrap();
    let b = h.emu.submit(&READ10, DataDir::FromDevice(512)).unwrap();
    assert_eq!(h.next_cmd(), a);
    let saved = h.cmd.clone();
    let mut cmd_b = tcmu_ring::CmdCopy::new();
    let mut tmr = tcmu_ring::TmrCopy::new();
    assert_eq!(
        h.ring.next(&mut cmd_b, &mut tmr).unwrap().unwrap(),
        Entry::Cmd
    );
    assert_eq!(cmd_b.cmd_id, b);
    // Completing b steals a's slot: the sense overwrites a's cdb_off and iovecs in the ring.
    let sense = [0xff; 96];
    h.ring
        .complete(
            b,
            &Response {
                status: STATUS_CHECK_CONDITION,
                sense: Some(&sense),
                read_len: None,
                keep_buf: false,
            },
        )
        .unwrap();
    let at = h.emu.entry_at(a).unwrap();
    let raw_cdb_off = h
        .emu
        .mapping()
        .read_u64(h.emu.cmdr_off() + usize::try_from(at).unwrap() + req::CDB_OFF);
    assert_eq!(raw_cdb_off.unwrap(), u64::MAX, "the ring copy is gone");
    // Our copy is intact.
    assert_eq!(h.cmd.cdb(), saved.cdb());
    assert_eq!(h.cmd.iov, saved.iov);
    let mut got = vec![0u8; 100];
    assert_eq!(h.data.copy_to_slice(h.cmd.data_out(), 0, &mut got), 100);
    assert_eq!(got, data);
    h.good(a);
    let out = h.flush();
    assert_eq!(out.iter().map(|c| c.cmd_id).collect::<Vec<_>>(), vec![b, a]);
    assert_eq!(out[0].sense, sense);
}

#[test]
fn pitfall_08_len_op_never_rewritten() {
    let mut h = H::small();
    let ids: Vec<u16> = (0..10)
        .map(|_| h.emu.submit(&TUR, DataDir::None).unwrap())
        .collect();
    for _ in 0..10 {
        h.next_cmd();
    }
    for &id in ids.iter().rev() {
        let sense = sense_pattern(3);
        h.ring
            .complete(
                id,
                &Response {
                    status: 2,
                    sense: Some(&sense),
                    read_len: Some(1),
                    keep_buf: false,
                },
            )
            .unwrap();
        h.emu.verify_len_ops().unwrap();
    }
    assert_eq!(h.flush().len(), 10);
}

#[test]
fn pitfall_09_full_sense_and_assigned_uflags_on_stolen_slot() {
    let mut h = H::small();
    let a = h
        .emu
        .submit(&READ10, DataDir::FromDevice(4096 * 3))
        .unwrap();
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.next_cmd();
    h.next_cmd();
    // Stale uflags in a's slot must not leak into b's completion.
    let at = h.emu.entry_at(a).unwrap();
    h.emu
        .mapping()
        .write_u8(
            h.emu.cmdr_off() + usize::try_from(at).unwrap() + hdr::UFLAGS,
            uflags::KEEP_BUF | uflags::READ_LEN,
        )
        .unwrap();
    // CHECK CONDITION without sense: 96 zero bytes, not the old iovec bytes.
    h.ring
        .complete(
            b,
            &Response {
                status: STATUS_CHECK_CONDITION,
                sense: None,
                read_len: None,
                keep_buf: false,
            },
        )
        .unwrap();
    let sense = sense_pattern(9);
    h.ring
        .complete(
            a,
            &Response {
                status: STATUS_CHECK_CONDITION,
                sense: Some(&sense),
                read_len: None,
                keep_buf: false,
            },
        )
        .unwrap();
    let out = h.flush();
    assert_eq!(out[0].cmd_id, b);
    assert_eq!(out[0].sense, [0u8; 96]);
    assert!(!out[0].kept);
    assert_eq!(out[0].read_len, None);
    assert_eq!(out[1].sense, sense);
    assert_eq!(h.emu.outstanding(), 0);
    let _ = rsp::SENSE_BUFFER;
}

#[test]
fn pitfall_10_read_len_or_fill_whole_buffer() {
    let mut h = H::small();
    let inquiry = [0x12, 0, 0, 0, 255, 0];
    let id = h.emu.submit(&inquiry, DataDir::FromDevice(255)).unwrap();
    h.next_cmd();
    let answer = [0x42u8; 36];
    assert_eq!(h.data.copy_from_slice(h.cmd.data_out(), 0, &answer), 36);
    h.ring
        .complete(
            id,
            &Response {
                status: 0,
                sense: None,
                read_len: Some(36),
                keep_buf: false,
            },
        )
        .unwrap();
    let out = h.flush();
    assert_eq!(out[0].read_len, Some(36));
    assert_eq!(out[0].data_in, answer);
    // Without READ_LEN the kernel sends the whole buffer: stale garbage unless filled.
    let id = h.emu.submit(&inquiry, DataDir::FromDevice(255)).unwrap();
    h.next_cmd();
    h.data.copy_from_slice(h.cmd.data_out(), 0, &answer);
    h.good(id);
    let out = h.flush();
    assert_eq!(out[0].data_in.len(), 255);
    assert!(
        out[0].data_in[36..].iter().any(|&b| b != 0),
        "stale bytes leak"
    );
    let id = h.emu.submit(&inquiry, DataDir::FromDevice(255)).unwrap();
    h.next_cmd();
    h.data.copy_from_slice(h.cmd.data_out(), 0, &answer);
    assert_eq!(h.data.fill(h.cmd.data_out(), 36, 1000, 0), 255 - 36);
    h.good(id);
    let out = h.flush();
    assert_eq!(&out[0].data_in[..36], &answer);
    assert!(out[0].data_in[36..].iter().all(|&b| b == 0));
}

#[test]
fn pitfall_11_sizes_come_from_iovecs_not_the_cdb() {
    let mut h = H::small();
    // The CDB claims 8 blocks; the fabric sent 512 bytes.
    h.emu
        .submit(&WRITE10, DataDir::ToDevice(&[1u8; 512]))
        .unwrap();
    h.next_cmd();
    assert_eq!(h.cmd.data_len(), 512);
    assert!(h.cmd.bidi_in().is_empty());
    let id = h
        .emu
        .submit(
            &[0x53, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            DataDir::Bidi {
                out: &[2u8; 100],
                in_len: 4200,
            },
        )
        .unwrap();
    assert_eq!(h.next_cmd(), id);
    assert_eq!(h.cmd.data_len(), 100);
    assert_eq!(h.cmd.bidi_len(), 4200);
    h.data.copy_from_slice(h.cmd.bidi_in(), 0, &[9u8; 4200]);
    h.good(id);
    h.good(h.cmd.cmd_id - 1);
    let out = h.flush();
    let bidi = out.iter().find(|c| c.cmd_id == id).unwrap();
    assert_eq!(bidi.data_in, vec![9u8; 4200]);
}

#[test]
fn pitfall_12_emulated_opcodes_reach_the_handler() {
    let mut h = H::small();
    for cdb in [
        &[0x12u8, 0, 0, 0, 36, 0][..],
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &TUR,
    ] {
        let id = h.emu.submit(cdb, DataDir::FromDevice(36)).unwrap();
        assert_eq!(h.next_cmd(), id);
        assert_eq!(h.cmd.cdb(), cdb);
        h.good(id);
    }
    assert_eq!(h.flush().len(), 3);
}

#[test]
fn pitfall_13_unknown_op_only_on_unknown_ring_opcodes() {
    let mut h = H::small();
    h.emu.submit_tmr(1, &[]).unwrap();
    let a = h
        .emu
        .submit(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0], DataDir::None)
        .unwrap();
    let tmr_at = 0u32;
    let orig = h.emu.mapping().read_u32(h.emu.cmdr_off()).unwrap();
    h.emu.corrupt_len_op(tmr_at, (orig & !7) | 5);
    assert_eq!(h.next_cmd(), a, "opcode 5 is skipped by its length");
    assert_eq!(h.ring.unknown_ops(), 1);
    assert_eq!(
        h.emu
            .mapping()
            .read_u8(h.emu.cmdr_off() + hdr::UFLAGS)
            .unwrap(),
        uflags::UNKNOWN_OP
    );
    h.emu.corrupt_len_op(tmr_at, orig);
    // An unsupported SCSI opcode is completed with sense, never with UNKNOWN_OP (the emu
    // reports UnknownOpSetOnCmd otherwise).
    let sense = sense_pattern(0x20);
    h.ring
        .complete(
            a,
            &Response {
                status: STATUS_CHECK_CONDITION,
                sense: Some(&sense),
                read_len: None,
                keep_buf: false,
            },
        )
        .unwrap();
    let out = h.flush();
    assert_eq!(out[0].sense, sense);
}

fn fake_uio(len: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tcmu-ring-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sys = dir.join("sys");
    std::fs::create_dir_all(sys.join("uio7/maps/map0")).unwrap();
    std::fs::write(sys.join("uio7/name"), "tcm-user/1/disk/file/a/b\n").unwrap();
    std::fs::write(sys.join("uio7/maps/map0/size"), format!("0x{len:016x}\n")).unwrap();
    let dev = dir.join("uio7");
    std::fs::File::create(&dev)
        .unwrap()
        .set_len(len as u64)
        .unwrap();
    (dev, sys)
}

#[test]
fn pitfall_14_ack_before_drain_and_exact_4_bytes() {
    let mut h = H::small();
    assert!(!h.bell.ack().unwrap());
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert!(h.bell.ack().unwrap(), "ack first");
    // A command posted after the ack but before the drain is still seen by the drain, and
    // leaves the fd readable for the next round: no lost wakeup.
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!((h.next_cmd(), h.next_cmd()), (a, b));
    assert!(h.bell.ack().unwrap());
    assert!(h.next().is_none());
    assert!(!h.bell.ack().unwrap());
    // uio: read and write exactly 4 bytes.
    let (dev, sys) = fake_uio(8192);
    std::fs::write(&dev, [1u8, 0, 0, 0, 9]).unwrap();
    let u = Uio::open_at(&dev, &sys).unwrap();
    assert!(u.ack().unwrap());
    assert!(u.ack().is_err(), "a short read is an error");
    u.kick().unwrap();
    assert_eq!(std::fs::read(&dev).unwrap().len(), 9);
}

#[test]
fn pitfall_15_publish_then_kick_reclaims_space() {
    let mut h = H::new(EmuConfig {
        cmdr_size: 1024,
        data_size: 64 << 10,
        ..EmuConfig::default()
    });
    let mut n = 0;
    while h.emu.submit(&TUR, DataDir::None).is_ok() {
        n += 1;
    }
    assert_eq!(h.emu.submit(&TUR, DataDir::None), Err(Full::Ring));
    for _ in 0..n {
        let id = h.next_cmd();
        h.good(id);
    }
    // Completed but not published/kicked: the kernel has not reclaimed anything.
    assert_eq!(h.emu.submit(&TUR, DataDir::None), Err(Full::Ring));
    assert!(h.ring.publish());
    assert!(!h.ring.publish(), "publish once per batch");
    h.bell.kick().unwrap();
    assert!(h.emu.wait_kick(Duration::from_secs(1)));
    let mut out = Vec::new();
    h.emu.reap(&mut out).unwrap();
    assert_eq!(out.len(), n);
    assert!(h.emu.submit(&TUR, DataDir::None).is_ok());
}

#[test]
fn pitfall_16_every_read_command_can_be_completed() {
    let mut h = H::small();
    let total = h.emu.data_blocks_free();
    let id = h
        .emu
        .submit(&READ10, DataDir::FromDevice(64 << 10))
        .unwrap();
    h.next_cmd();
    assert_eq!(h.ring.outstanding(), 1);
    assert_eq!(h.emu.data_blocks_free(), total - 16);
    // An expired command is completed like any other; the status is ignored by the kernel.
    h.ring
        .complete(
            id,
            &Response {
                status: 0x08,
                sense: None,
                read_len: None,
                keep_buf: false,
            },
        )
        .unwrap();
    h.flush();
    assert_eq!(h.emu.data_blocks_free(), total);
    assert_eq!(h.emu.outstanding(), 0);
}

#[test]
fn pitfall_17_tmr_entries_are_skipped_for_reading_and_stealing() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.submit_tmr(tcmu_sys::tmr::ABORT_TASK, &[a]).unwrap();
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.emu.submit_tmr(tcmu_sys::tmr::LUN_RESET, &[a, b]).unwrap();
    assert_eq!(h.next_cmd(), a);
    assert_eq!(h.next().unwrap().unwrap(), Entry::Tmr);
    assert_eq!((h.tmr.tmr_type, h.tmr.cmd_ids.clone()), (1, vec![a]));
    assert_eq!(h.next_cmd(), b);
    assert_eq!(h.next().unwrap().unwrap(), Entry::Tmr);
    assert_eq!((h.tmr.tmr_type, h.tmr.cmd_ids.clone()), (5, vec![a, b]));
    h.good(b);
    h.good(a);
    let out = h.flush();
    assert_eq!(out.iter().map(|c| c.cmd_id).collect::<Vec<_>>(), vec![b, a]);
    // The trailing TMR was stepped over too: the kernel reclaimed the whole ring.
    assert_eq!(h.emu.ring_used(), 0);
    // A TMR alone (no command outstanding) is stepped over on publish.
    h.emu.submit_tmr(tcmu_sys::tmr::LUN_RESET, &[]).unwrap();
    assert_eq!(h.next().unwrap().unwrap(), Entry::Tmr);
    assert!(h.tmr.cmd_ids.is_empty());
    h.flush();
    assert_eq!(h.emu.ring_used(), 0);
}

#[test]
fn pitfall_18_keep_buf_once_then_free_kept_buf() {
    let mut h = H::small();
    let total = h.emu.data_blocks_free();
    let a = h.emu.submit(&READ10, DataDir::FromDevice(4096)).unwrap();
    h.next_cmd();
    h.ring
        .complete(
            a,
            &Response {
                status: 0,
                sense: None,
                read_len: None,
                keep_buf: true,
            },
        )
        .unwrap();
    assert!(
        matches!(h.ring.complete(a, &Response::good()), Err(RingError::DoubleCompletion(x)) if x == a)
    );
    let out = h.flush();
    assert!(out[0].kept);
    assert_eq!(h.emu.outstanding(), 1);
    assert_eq!(h.emu.data_blocks_free(), total - 1);
    // A raw second completion of the kept id breaks the ring.
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!(h.next_cmd(), b);
    let at = h.emu.entry_at(b).unwrap();
    h.emu.poke_u16(at, hdr::CMD_ID, a);
    let next = (at + 120) % 4096;
    h.emu.set_raw_tail(next);
    let mut out = Vec::new();
    assert_eq!(
        h.emu.reap(&mut out),
        Err(tcmu_ring::emu::Violation::KeptBufCompletedTwice(a))
    );
    h.emu.reset_ring();
    // And the normal path: free_kept_buf releases the blocks.
    let mut h = H::small();
    let a = h.emu.submit(&READ10, DataDir::FromDevice(4096)).unwrap();
    h.next_cmd();
    h.ring
        .complete(
            a,
            &Response {
                status: 0,
                sense: None,
                read_len: None,
                keep_buf: true,
            },
        )
        .unwrap();
    h.flush();
    h.emu.free_kept_buf(a).unwrap();
    assert_eq!(h.emu.data_blocks_free(), total);
    assert!(h.emu.free_kept_buf(a).is_err());
}

#[test]
fn pitfall_19_uio_fd_is_cloexec_and_nonblocking() {
    let (dev, sys) = fake_uio(4096);
    let u = Uio::open_at(&dev, &sys).unwrap();
    let fd = u.raw_fd();
    let fdfl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
    let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    assert_eq!(fl & libc::O_ACCMODE, libc::O_RDWR);
    assert_eq!(u.minor(), 7);
    assert_eq!(u.name(), "tcm-user/1/disk/file/a/b");
    assert_eq!(
        tcmu_ring::parse_uio_name(u.name()).unwrap().cfgstring,
        Some("a/b")
    );
}

#[test]
fn pitfall_20_map_is_shared_and_full_size() {
    let (dev, sys) = fake_uio(3 * 4096);
    let u = Uio::open_at(&dev, &sys).unwrap();
    assert_eq!(u.map_size(), 3 * 4096);
    let m = u.map().unwrap();
    assert_eq!(m.len(), 3 * 4096);
    m.write_u32(3 * 4096 - 4, 0xdead_beef).unwrap();
    assert!(m.write_u32(3 * 4096 - 3, 0).is_err(), "bounds-checked");
    // MAP_SHARED: visible through the file and through a second mapping.
    let bytes = std::fs::read(&dev).unwrap();
    assert_eq!(&bytes[3 * 4096 - 4..], &0xdead_beefu32.to_ne_bytes());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .unwrap();
    let m2 = Mapping::map_shared(f.as_fd(), 3 * 4096).unwrap();
    assert_eq!(m2.read_u32(3 * 4096 - 4).unwrap(), 0xdead_beef);
    (&f).write_all(b"x").unwrap();
    assert_eq!(m.read_u8(0).unwrap(), b'x');
}

#[test]
fn pitfall_21_reset_ring_under_a_running_handler() {
    let mut h = H::small();
    let a = h.emu.submit(&TUR, DataDir::None).unwrap();
    let b = h.emu.submit(&TUR, DataDir::None).unwrap();
    h.next_cmd();
    h.next_cmd();
    h.good(a);
    h.flush();
    let c = h.emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!(h.next_cmd(), c);
    // The admin resets the ring while b and c are outstanding: the kernel completes them BUSY.
    let mut expect = vec![b, c];
    expect.sort_unstable();
    assert_eq!(h.emu.reset_ring(), expect);
    assert_eq!(
        h.emu.mapping().load_acquire_u32(mailbox::CMD_HEAD).unwrap(),
        0
    );
    h.emu.submit(&TUR, DataDir::None).unwrap();
    // The stale handler notices that cmd_tail (which only it writes) moved.
    assert!(matches!(h.next(), Some(Err(RingError::RingReset { .. }))));
    assert!(h.next().unwrap().is_err(), "stays stopped");
    // Block, reset, reopen: a new Ring resumes at cmd_tail == 0.
    let mut out = Vec::new();
    h.emu.reap(&mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn pitfall_21_new_ring_after_reset_resumes_at_zero() {
    let (mut emu, map, _bell) = KernelEmu::new(EmuConfig {
        cmdr_size: 4096,
        data_size: 64 << 10,
        ..EmuConfig::default()
    })
    .unwrap();
    let map = Arc::new(map);
    let mut ring = Ring::new(Arc::clone(&map)).unwrap();
    let (mut cmd, mut tmr) = (tcmu_ring::CmdCopy::new(), tcmu_ring::TmrCopy::new());
    for _ in 0..5 {
        emu.submit(&TUR, DataDir::None).unwrap();
    }
    while let Some(e) = ring.next(&mut cmd, &mut tmr) {
        e.unwrap();
    }
    let ids = emu.reset_ring();
    assert_eq!(ids.len(), 5);
    drop(ring);
    // Restart (b): the private index comes from cmd_tail, now 0; ids are reused from 1.
    let mut ring = Ring::new(Arc::clone(&map)).unwrap();
    let id = emu.submit(&TUR, DataDir::None).unwrap();
    assert_eq!(id, 1);
    assert_eq!(ring.next(&mut cmd, &mut tmr).unwrap().unwrap(), Entry::Cmd);
    assert_eq!(cmd.cmd_id, 1);
    ring.complete(1, &Response::good()).unwrap();
    assert!(ring.publish());
    let mut out = Vec::new();
    emu.reap(&mut out).unwrap();
    assert_eq!(out.len(), 1);
    // Restart (a): resume keeps unread work between cmd_tail and cmd_head.
    emu.submit(&TUR, DataDir::None).unwrap();
    drop(ring);
    let mut ring = Ring::new(map).unwrap();
    assert_eq!(ring.next(&mut cmd, &mut tmr).unwrap().unwrap(), Entry::Cmd);
    assert_eq!(cmd.cmd_id, 1);
}

#[test]
fn pitfall_31_one_event_many_entries() {
    let mut h = H::small();
    for _ in 0..5 {
        h.emu.submit(&TUR, DataDir::None).unwrap();
    }
    h.emu.submit_tmr(0, &[]).unwrap();
    assert!(h.bell.ack().unwrap());
    assert!(!h.bell.ack().unwrap(), "events collapse");
    let mut n = 0;
    while let Some(e) = h.next() {
        if e.unwrap() == Entry::Cmd {
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

/// `Ring::reopen` is `Ring::new` on the same mapping: after a reset it forgets every id it
/// had read or completed (a completion of a forgotten id is refused, a new id 1 is
/// accepted) and resumes at `cmd_tail`; a mailbox that no longer validates is refused.
#[test]
fn pitfall_21_reopen_after_reset_is_a_new_ring() {
    let (mut emu, map, _bell) = KernelEmu::new(EmuConfig {
        cmdr_size: 4096,
        data_size: 64 << 10,
        ..EmuConfig::default()
    })
    .unwrap();
    let mut ring = Ring::new(Arc::new(map)).unwrap();
    let (mut cmd, mut tmr) = (tcmu_ring::CmdCopy::new(), tcmu_ring::TmrCopy::new());
    for _ in 0..3 {
        emu.submit(&TUR, DataDir::None).unwrap();
    }
    while let Some(e) = ring.next(&mut cmd, &mut tmr) {
        e.unwrap();
    }
    assert_eq!(ring.outstanding(), 3);
    emu.reset();
    emu.submit(&TUR, DataDir::None).unwrap();
    ring.reopen().unwrap();
    assert_eq!(ring.outstanding(), 0);
    assert!(
        ring.complete(3, &Response::good()).is_err(),
        "an id of the old session is forgotten"
    );
    assert_eq!(ring.next(&mut cmd, &mut tmr).unwrap().unwrap(), Entry::Cmd);
    assert_eq!(cmd.cmd_id, 1);
    ring.complete(1, &Response::good()).unwrap();
    assert!(
        ring.complete(1, &Response::good()).is_err(),
        "completed once"
    );
    assert!(ring.publish());
    let mut out = Vec::new();
    emu.reap(&mut out).unwrap();
    assert_eq!(out.len(), 1);
    // A mailbox that no longer validates: reopen fails and changes nothing.
    emu.mapping().write_u16(0, 7).unwrap();
    assert!(matches!(ring.reopen(), Err(RingError::MailboxVersion(7))));
}
