//! Retry safety of writes completed at their deadline. Such a write was answered with a
//! retryable status but may still land (Ceph's timed-out writes did, docs/test-services.md §3; so did
//! gluster's ENOTCONN ones). The initiator then retries it and goes on writing; the late write
//! must never land on top of anything newer. The handler fences the blocks of an expired
//! write until the backend returns it, and never runs a command that expired before it reached
//! the backend.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::{DeviceConfig, FreeKeptBuf};
use tcmu_warden::testing::{assert_good, cdb, data_in, sense_of, Harness};

const BS: usize = 512;
const NOT_READY_IN_TRANSITION: (u8, u8, u8) = (0x02, 0x04, 0x0A);

struct Rig {
    h: Harness,
    fault: Arc<FaultBackend>,
    freed: Arc<Mutex<Vec<u16>>>,
}

fn rig(deadline: Duration) -> Rig {
    let fault = Arc::new(FaultBackend::new(
        Arc::new(RamBackend::new(1 << 20)),
        Vec::new(),
    ));
    let mut lun = tcmu_scsi::lun::LunInfo::new(512, (1 << 20) / 512, "late-writes");
    lun.write_cache = true;
    lun.caps.compare_and_write = true;
    let freed = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&freed);
    let cfg = DeviceConfig {
        command_deadline: Some(deadline),
        free_kept_buf: Some(FreeKeptBuf(Arc::new(move |id| {
            f.lock().push(id);
            Ok(())
        }))),
        ..DeviceConfig::default()
    };
    let emu = EmuConfig {
        data_size: 256 * 1024,
        flags: 0xf,
        ..EmuConfig::default()
    };
    let h = Harness::new(Arc::clone(&fault) as Arc<dyn Backend>, lun, emu, &cfg);
    Rig { h, fault, freed }
}

fn write(h: &mut Harness, lba: u64, byte: u8) -> u16 {
    h.submit(&cdb::write16(lba, 1, false), DataDir::ToDevice(&[byte; BS]))
}

fn read_byte(h: &mut Harness, lba: u64) -> u8 {
    let c = h.run(&cdb::read16(lba, 1), DataDir::FromDevice(BS));
    assert_good(&c);
    let d = data_in(&c);
    assert!(d.iter().all(|&b| b == d[0]), "torn block");
    d[0]
}

/// Wait until `id` completes, or return None if it has not after `limit`.
fn completes_within(h: &mut Harness, id: u16, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        h.pump(Duration::from_millis(5));
        if h.is_done(id) {
            return true;
        }
    }
    false
}

#[test]
fn a_newer_write_never_lands_before_a_late_one_to_the_same_blocks() {
    let deadline = Duration::from_millis(300);
    let mut r = rig(deadline);
    // The first write to block 5 hangs in the backend.
    r.fault
        .set_rules(parse_rules("write:hang,count=1").unwrap());
    let old = write(&mut r.h, 5, 0xA1);
    let c = r.h.wait(old);
    assert_eq!(
        sense_of(&c),
        NOT_READY_IN_TRANSITION,
        "completed at its deadline"
    );
    assert_eq!(r.fault.hung(), 1, "still in the backend");

    // The initiator goes on: a newer write to the same block (or its retry). It must wait
    // for the late one; a write elsewhere does not.
    let newer = write(&mut r.h, 5, 0xB2);
    let elsewhere = write(&mut r.h, 9, 0xC3);
    assert_good(&r.h.wait(elsewhere));
    assert!(
        !completes_within(&mut r.h, newer, Duration::from_millis(100)),
        "the newer write to block 5 was held behind the late one"
    );

    // The late write lands now, then the newer one runs: the newest data wins.
    assert_eq!(r.fault.release_hung(), 1);
    assert_good(&r.h.wait(newer));
    assert_eq!(
        read_byte(&mut r.h, 5),
        0xB2,
        "the late write did not overwrite newer data"
    );
    assert_eq!(read_byte(&mut r.h, 9), 0xC3);
    assert_eq!(
        r.freed.lock().len(),
        1,
        "the late write's kept buffer was released"
    );
}

#[test]
fn a_write_that_expires_while_held_back_is_never_run() {
    let deadline = Duration::from_millis(200);
    let mut r = rig(deadline);
    r.fault
        .set_rules(parse_rules("write:hang,count=1").unwrap());
    let first = write(&mut r.h, 7, 0x11);
    assert_eq!(sense_of(&r.h.wait(first)), NOT_READY_IN_TRANSITION);
    // Held behind the fence past its own deadline: answered retryably, and dropped.
    let t = Instant::now();
    let second = write(&mut r.h, 7, 0x22);
    let c = r.h.wait(second);
    assert_eq!(sense_of(&c), NOT_READY_IN_TRANSITION);
    assert!(!c.kept, "it never reached the backend: nothing to keep");
    assert!(t.elapsed() >= deadline, "{:?}", t.elapsed());
    // The first write lands late; the second must not run after it (the initiator was told
    // it failed, and will write again if it still wants to).
    r.fault.release_hung();
    // Wait (bounded) for the late first write to land, then a while longer: were the second
    // write run after it, block 7 would then hold 0x22.
    let end = Instant::now() + Duration::from_secs(10);
    while read_byte(&mut r.h, 7) == 0 {
        assert!(
            Instant::now() < end,
            "the released first write never landed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    r.h.pump(Duration::from_millis(5));
    assert_eq!(
        read_byte(&mut r.h, 7),
        0x11,
        "the expired second write never ran"
    );
    // The initiator's retry goes through normally now.
    let retry = write(&mut r.h, 7, 0x22);
    assert_good(&r.h.wait(retry));
    assert_eq!(read_byte(&mut r.h, 7), 0x22);
}

fn caw(h: &mut Harness, lba: u64, compare: u8, write: u8) -> u16 {
    let mut buf = vec![compare; BS];
    buf.extend(std::iter::repeat(write).take(BS));
    h.submit(&cdb::caw(lba, 1), DataDir::ToDevice(&buf))
}

const MISCOMPARE: (u8, u8, u8) = (0x0E, 0x1D, 0x00);

#[test]
fn a_retried_compare_and_write_whose_first_try_landed_reports_good_not_miscompare() {
    let deadline = Duration::from_millis(300);
    let mut r = rig(deadline);
    let id = write(&mut r.h, 20, 0x10);
    assert_good(&r.h.wait(id));
    // The first attempt's write step hangs: answered retryably at the deadline.
    r.fault
        .set_rules(parse_rules("write:hang,count=1").unwrap());
    let first = caw(&mut r.h, 20, 0x10, 0x20);
    assert_eq!(sense_of(&r.h.wait(first)), NOT_READY_IN_TRANSITION);
    // The initiator retries the same command; meanwhile the first attempt lands.
    let retry = caw(&mut r.h, 20, 0x10, 0x20);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.fault.release_hung(), 1);
    let c = r.h.wait(retry);
    assert_good(&c);
    assert_eq!(read_byte(&mut r.h, 20), 0x20);

    // Recognised once, and only for that very command: another COMPARE AND WRITE whose
    // compare data no longer matches still miscompares...
    let other = caw(&mut r.h, 20, 0x10, 0x30);
    assert_eq!(sense_of(&r.h.wait(other)), MISCOMPARE);
    // ...and so does a repeat of the first, now that its retry was answered.
    let again = caw(&mut r.h, 20, 0x10, 0x20);
    assert_eq!(sense_of(&r.h.wait(again)), MISCOMPARE);
    assert_eq!(read_byte(&mut r.h, 20), 0x20);
}

#[test]
fn without_an_expired_first_try_a_miscompare_stays_a_miscompare() {
    let mut r = rig(Duration::from_secs(5));
    let id = write(&mut r.h, 21, 0x50);
    assert_good(&r.h.wait(id));
    // The medium already holds the write half, but nothing of ours expired: MISCOMPARE.
    let c = caw(&mut r.h, 21, 0x40, 0x50);
    assert_eq!(sense_of(&r.h.wait(c)), MISCOMPARE);
}
