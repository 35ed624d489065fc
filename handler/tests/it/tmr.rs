//! Task management: ABORT TASK and LUN RESET notifications cancel work that has not reached
//! the backend yet; a command already in the backend finishes normally.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::io::Io;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, IoOp};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, Harness};

const TASK_ABORTED: u8 = 0x40;
const ABORT_TASK: u8 = 1;
const LUN_RESET: u8 = 5;

/// RAM backend whose WRITEs to byte offset 0 wait on the calling (worker) thread until the
/// test opens the gate (10 s at most), and which remembers every write offset it executed.
/// The gate, not a sleep, keeps such a write in the backend while the test aborts others, so
/// a loaded host cannot reorder the steps.
struct SlowWriteAtZero {
    inner: RamBackend,
    written: Mutex<Vec<u64>>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl SlowWriteAtZero {
    fn open_gate(&self) {
        *self.open.lock() = true;
        self.opened.notify_all();
    }

    /// Wait until the write to offset 0 is in the backend.
    fn wait_for_write_at_zero(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.written.lock().contains(&0) {
            assert!(
                Instant::now() < end,
                "the write to block 0 never reached the backend"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Backend for SlowWriteAtZero {
    fn describe(&self) -> String {
        "slow-write-0".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn submit(&self, io: Io) {
        if matches!(io.op(), IoOp::Write { .. }) {
            self.written.lock().push(io.offset());
            if io.offset() == 0 {
                let mut open = self.open.lock();
                let end = Instant::now() + Duration::from_secs(10);
                while !*open && !self.opened.wait_until(&mut open, end).timed_out() {}
            }
        }
        self.inner.submit(io);
    }
}

fn harness(workers: usize) -> (Harness, Arc<SlowWriteAtZero>) {
    let b = Arc::new(SlowWriteAtZero {
        inner: RamBackend::new(1 << 20),
        written: Mutex::new(vec![]),
        open: Mutex::new(false),
        opened: Condvar::new(),
    });
    let mut lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "tmr");
    lun.caps.compare_and_write = true;
    lun.write_cache = true;
    let cfg = DeviceConfig {
        workers,
        inline_qd1: false,
        ..DeviceConfig::default()
    };
    (
        Harness::new(
            Arc::clone(&b) as Arc<dyn Backend>,
            lun,
            EmuConfig::default(),
            &cfg,
        ),
        b,
    )
}

#[test]
fn abort_task_cancels_a_command_waiting_for_its_blocks() {
    let (mut h, b) = harness(2);
    let data = vec![1u8; 512];
    // A write to block 0 is in the backend; a COMPARE AND WRITE of block 0 must wait for it.
    let w = h.submit(&cdb::write16(0, 1, false), DataDir::ToDevice(&data));
    b.wait_for_write_at_zero();
    let caw_data = vec![0u8; 1024];
    let caw = h.submit(&cdb::caw(0, 1), DataDir::ToDevice(&caw_data));
    std::thread::sleep(Duration::from_millis(50));
    h.emu
        .submit_tmr(ABORT_TASK, &[caw])
        .expect("room for the TMR");
    let c = h.wait(caw);
    assert_eq!(
        c.status, TASK_ABORTED,
        "cancelled while parked, before the write finished"
    );
    b.open_gate();
    assert_good(&h.wait(w));
    // The cancelled COMPARE AND WRITE changed nothing: block 0 holds the write's data.
    let r = h.run(&cdb::read16(0, 1), DataDir::FromDevice(512));
    assert!(r.data_in.iter().all(|&x| x == 1));
}

#[test]
fn lun_reset_cancels_commands_queued_for_a_busy_worker() {
    let (mut h, b) = harness(1);
    let data = vec![2u8; 512];
    let first = h.submit(&cdb::write16(0, 1, false), DataDir::ToDevice(&data)); // the worker waits in it
    b.wait_for_write_at_zero();
    let queued = h.submit(&cdb::write16(8, 1, false), DataDir::ToDevice(&data));
    std::thread::sleep(Duration::from_millis(50));
    h.emu
        .submit_tmr(LUN_RESET, &[first, queued])
        .expect("room for the TMR");
    assert_eq!(h.wait(queued).status, TASK_ABORTED);
    b.open_gate();
    assert_good(&h.wait(first)); // already in the backend: finishes normally
    assert_eq!(
        b.written.lock().as_slice(),
        &[0],
        "the queued write never reached the backend"
    );
    // The slot is reused normally afterwards; ids already completed are ignored.
    h.emu.submit_tmr(ABORT_TASK, &[queued]).expect("room");
    assert_good(&h.run(&cdb::write16(8, 1, false), DataDir::ToDevice(&data)));
    h.stop();
    assert_eq!(h.emu.outstanding(), 0);
}
