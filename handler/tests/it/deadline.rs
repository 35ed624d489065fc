//! The handler's own deadline per command: a command the backend does not answer is
//! completed with a retryable status before the kernel's timer, its data blocks are kept
//! (KEEP_BUF) until the late backend completion returns, and only then released, so a late
//! read can never land in another command's buffer.

// Test arithmetic on small constants: lossless casts are clearer than try_from here.
#![allow(clippy::cast_possible_truncation)]

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::fault::{Action, FaultBackend, OpSet, Rule};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::{DeviceConfig, FreeKeptBuf};
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness};

const BS: u64 = 512;

struct Rig {
    h: Harness,
    /// Holds the READs at chosen byte offsets until released.
    fault: Arc<FaultBackend>,
    freed: Arc<Mutex<Vec<u16>>>,
}

impl Rig {
    /// Hold every READ at these byte offsets from now on.
    fn hold_reads_at(&self, offsets: &[u64]) {
        let mut rules = self.fault.rules();
        rules.extend(offsets.iter().map(|&at| Rule {
            at: Some(at),
            ..Rule::new(OpSet::READ, Action::Hang)
        }));
        self.fault.set_rules(rules);
    }

    /// Let the READ held at `offset` go on to the RAM backend (and hold none there again).
    fn release_at(&self, offset: u64) {
        let held = self.fault.hung();
        let keep = self
            .fault
            .rules()
            .into_iter()
            .filter(|r| r.at != Some(offset))
            .collect();
        self.fault.set_rules(keep);
        assert_eq!(self.fault.hung() + 1, held, "a held read at that offset");
    }
}

fn rig(deadline: Duration, flags: u16) -> Rig {
    let fault = Arc::new(FaultBackend::new(
        Arc::new(RamBackend::new(1 << 20)),
        Vec::new(),
    ));
    let mut lun = tcmu_scsi::lun::LunInfo::new(512, (1 << 20) / 512, "deadline");
    lun.write_cache = true;
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
    // Lowest-free-first block allocation: a freed block is the next one handed out.
    let emu = EmuConfig {
        data_size: 256 * 1024,
        scatter: false,
        flags,
        ..EmuConfig::default()
    };
    let h = Harness::new(Arc::clone(&fault) as Arc<dyn Backend>, lun, emu, &cfg);
    Rig { h, fault, freed }
}

fn fill(h: &mut Harness, lba: u64, byte: u8) {
    let data = vec![byte; 8 * BS as usize];
    assert_good(&h.run(&cdb::write16(lba, 8, false), DataDir::ToDevice(&data)));
}

#[test]
fn late_read_is_completed_once_retryably_and_cannot_land_in_another_buffer() {
    let deadline = Duration::from_millis(300);
    let mut r = rig(deadline, 0xf);
    fill(&mut r.h, 0, 0xAA);
    fill(&mut r.h, 200, 0x55);
    r.hold_reads_at(&[0, 200 * BS]);

    // A: hangs in the backend, so the handler completes it at its deadline.
    let t = Instant::now();
    let a =
        r.h.run(&cdb::read16(0, 8), DataDir::FromDevice(8 * BS as usize));
    let waited = t.elapsed();
    assert_eq!(a.status, 2, "CHECK CONDITION");
    assert_eq!(
        sense_of(&a),
        (0x02, 0x04, 0x0A),
        "retryable NOT READY (asymmetric access state transition)"
    );
    assert!(a.kept, "data blocks kept for the late completion");
    assert!(
        waited >= deadline && waited < deadline * 6,
        "completed at its deadline, after {waited:?}"
    );
    assert!(
        r.freed.lock().is_empty(),
        "nothing released while the backend still holds the read"
    );

    // Other commands are unaffected meanwhile.
    fill(&mut r.h, 100, 0x11);
    let c =
        r.h.run(&cdb::read16(100, 8), DataDir::FromDevice(8 * BS as usize));
    assert_good(&c);
    assert!(c.data_in.iter().all(|&b| b == 0x11));

    // B: held too. Its blocks are allocated lowest-free-first, so had A's blocks been
    // released at A's expiry, B would own them now.
    let b =
        r.h.submit(&cdb::read16(200, 8), DataDir::FromDevice(8 * BS as usize));
    std::thread::sleep(Duration::from_millis(50));
    // B's backend read lands, B is completed to the ring; the test does not reap it yet.
    r.release_at(200 * BS);
    std::thread::sleep(Duration::from_millis(100));
    // A's late read lands now, into A's kept blocks (0xAA)...
    r.release_at(0);
    let t = Instant::now();
    while !r.freed.lock().contains(&a.cmd_id) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the late completion must release A's kept buffer"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...and B's data, gathered only now, is still its own.
    let b = r.h.wait(b);
    assert_good(&b);
    assert!(
        b.data_in.iter().all(|&x| x == 0x55),
        "B's buffer was overwritten by A's late read"
    );
    r.h.emu
        .free_kept_buf(a.cmd_id)
        .expect("the kernel kept A's buffer and can now free it");
    assert_eq!(
        r.freed.lock().as_slice(),
        &[a.cmd_id],
        "released exactly once"
    );
    let stats = r.h.stats();
    assert_eq!(stats.deadline_expired(), 1);
    r.h.stop();
    assert_eq!(
        r.h.emu.outstanding(),
        0,
        "every command completed exactly once"
    );
}

#[test]
fn a_command_still_stuck_a_deadline_later_is_reported_once() {
    let mut r = rig(Duration::from_millis(150), 0xf);
    r.hold_reads_at(&[8 * BS]);
    let a =
        r.h.run(&cdb::read16(8, 1), DataDir::FromDevice(BS as usize));
    assert_eq!(sense_of(&a), (0x02, 0x04, 0x0A));
    std::thread::sleep(Duration::from_millis(600));
    let stats = r.h.stats();
    assert_eq!(stats.stuck(), 1, "reported once while it stays stuck");
    r.release_at(8 * BS);
    let t = Instant::now();
    while r.freed.lock().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
    r.h.emu.free_kept_buf(a.cmd_id).unwrap();
}

#[test]
fn without_keep_buf_the_handler_waits_for_the_backend_instead_of_risking_the_buffer() {
    // Mailbox without CAP_KEEP_BUF (an older kernel).
    let mut r = rig(Duration::from_millis(100), 0x7);
    fill(&mut r.h, 16, 0x77);
    r.hold_reads_at(&[16 * BS]);
    let id =
        r.h.submit(&cdb::read16(16, 8), DataDir::FromDevice(8 * BS as usize));
    std::thread::sleep(Duration::from_millis(400));
    r.h.pump(Duration::from_millis(10));
    r.release_at(16 * BS);
    let c = r.h.wait(id);
    assert_good(&c);
    assert!(c.data_in.iter().all(|&b| b == 0x77));
    assert_eq!(r.h.stats().deadline_expired(), 0);
}
