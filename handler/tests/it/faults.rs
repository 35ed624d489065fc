//! Backend failures as the initiator sees them: each errno a backend can return maps to the
//! SCSI status and sense that make Linux initiators do the right thing (fail, retry, or
//! report out of space), through the emulated ring and the real dispatcher; and a backend
//! that loses an I/O cannot lose the command.

use nix::errno::Errno;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::sense::Sense;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, Caps, Io, IoOp};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness, LunSpec};

const BS: usize = 512;
const BLOCKS: u64 = 1024;

const CHECK_CONDITION: u8 = 0x02;
const BUSY: u8 = 0x08;
const READ_ERROR: (u8, u8, u8) = (0x03, 0x11, 0x00);
const WRITE_ERROR: (u8, u8, u8) = (0x03, 0x0C, 0x00);
const SPACE_ALLOCATION_FAILED: (u8, u8, u8) = (0x07, 0x27, 0x07);
const NOT_READY_IN_TRANSITION: (u8, u8, u8) = (0x02, 0x04, 0x0A);

/// Which operations a [`Faulty`] backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    Zero,
}

fn kind(op: IoOp) -> Kind {
    match op {
        IoOp::Read => Kind::Read,
        IoOp::Write { .. } | IoOp::CompareAndWrite { .. } => Kind::Write,
        IoOp::Flush => Kind::Flush,
        IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => Kind::Zero,
    }
}

/// What to do with a matching operation.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Errno(Errno),
    /// Drop the `Io` without completing it.
    Drop,
}

/// A RAM LUN that fails the operations the test chooses.
struct Faulty {
    inner: RamBackend,
    rule: Mutex<Option<(Kind, Fault)>>,
    hits: AtomicUsize,
}

impl Faulty {
    fn new() -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: RamBackend::new(BLOCKS * BS as u64),
            rule: Mutex::new(None),
            hits: AtomicUsize::new(0),
        })
    }

    fn fail(&self, k: Kind, f: Fault) {
        *self.rule.lock().unwrap() = Some((k, f));
        self.hits.store(0, Ordering::SeqCst);
    }

    fn heal(&self) {
        *self.rule.lock().unwrap() = None;
    }
}

impl Backend for Faulty {
    fn describe(&self) -> String {
        "faulty-ram".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn submit(&self, io: Io) {
        let rule = *self.rule.lock().unwrap();
        match rule {
            Some((k, f)) if k == kind(io.op()) => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                match f {
                    Fault::Errno(e) => io.complete(Err(e)),
                    Fault::Drop => drop(io),
                }
            }
            _ => self.inner.submit(io),
        }
    }
}

fn harness(backend: &Arc<Faulty>) -> Harness {
    let lun = LunSpec::blocks(BLOCKS, 512)
        .serial("faults")
        .lun_info(backend.as_ref() as &dyn Backend);
    let emu = EmuConfig {
        cmdr_size: 64 * 1024,
        data_size: 1 << 20,
        ..EmuConfig::default()
    };
    let dev = DeviceConfig {
        workers: 2,
        max_inflight: 32,
        ..DeviceConfig::default()
    };
    Harness::new(Arc::clone(backend) as Arc<dyn Backend>, lun, emu, &dev)
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BS)
        .map(|i| seed ^ u8::try_from(i % 256).unwrap())
        .collect()
}

#[track_caller]
fn assert_sense(c: &Completed, want: (u8, u8, u8), what: &str) {
    assert_eq!(
        c.status, CHECK_CONDITION,
        "{what}: expected CHECK CONDITION, got {:#x}",
        c.status
    );
    assert_eq!(sense_of(c), want, "{what}");
}

fn read(h: &mut Harness, lba: u64) -> Completed {
    h.run(&cdb::read16(lba, 1), DataDir::FromDevice(BS))
}

fn write(h: &mut Harness, lba: u64, d: &[u8]) -> Completed {
    h.run(&cdb::write16(lba, 1, false), DataDir::ToDevice(d))
}

/// Every way a command reaches the backend, failing with `e` on the operation of `k`.
fn expect_mapping(e: Errno, read_sense: (u8, u8, u8), write_sense: (u8, u8, u8)) {
    let b = Faulty::new();
    let mut h = harness(&b);
    let d = pattern(1);
    let what = |s: &str| format!("{e:?}: {s}");
    assert_good(&write(&mut h, 5, &d));

    b.fail(Kind::Read, Fault::Errno(e));
    assert_sense(&read(&mut h, 5), read_sense, &what("READ"));
    let c = h.run(
        &cdb::caw(5, 1),
        DataDir::ToDevice(&[d.clone(), pattern(2)].concat()),
    );
    assert_sense(&c, read_sense, &what("COMPARE AND WRITE, read step"));
    let c = h.run(&cdb::verify16(5, 1, true), DataDir::ToDevice(&d));
    assert_sense(&c, read_sense, &what("VERIFY"));

    b.fail(Kind::Write, Fault::Errno(e));
    assert_sense(&write(&mut h, 5, &pattern(3)), write_sense, &what("WRITE"));
    let c = h.run(
        &cdb::caw(5, 1),
        DataDir::ToDevice(&[d.clone(), pattern(4)].concat()),
    );
    assert_sense(&c, write_sense, &what("COMPARE AND WRITE, write step"));
    let c = h.run(
        &cdb::write_same16(5, 4, false, false),
        DataDir::ToDevice(&pattern(5)),
    );
    assert_sense(&c, write_sense, &what("WRITE SAME of a pattern"));

    b.fail(Kind::Flush, Fault::Errno(e));
    assert_sense(
        &h.run(&cdb::sync16(), DataDir::None),
        write_sense,
        &what("SYNCHRONIZE CACHE"),
    );
    assert!(b.hits.load(Ordering::SeqCst) > 0, "the fault was hit");

    // The device keeps serving, and a failed write changed nothing.
    b.heal();
    let c = read(&mut h, 5);
    assert_good(&c);
    assert_eq!(
        c.data_in, d,
        "{e:?}: failed writes left the block as it was"
    );
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "{e:?}: every command completed");
}

#[test]
fn eio_is_a_medium_error_unrecovered_read_or_write_error() {
    expect_mapping(Errno::EIO, READ_ERROR, WRITE_ERROR);
}

#[test]
fn enospc_is_data_protect_space_allocation_failed() {
    expect_mapping(
        Errno::ENOSPC,
        SPACE_ALLOCATION_FAILED,
        SPACE_ALLOCATION_FAILED,
    );
    let b = Faulty::new();
    let mut h = harness(&b);
    b.fail(Kind::Zero, Fault::Errno(Errno::ENOSPC));
    let c = h.run(&cdb::write_same16(8, 4, false, true), DataDir::None);
    assert_sense(&c, SPACE_ALLOCATION_FAILED, "WRITE SAME NDOB (zeroing)");
}

#[test]
fn etimedout_and_eshutdown_are_retryable_not_ready_in_transition() {
    for e in [
        Errno::ETIMEDOUT,
        Errno::ESHUTDOWN,
        Errno::ECONNRESET,
        Errno::ENOTCONN,
    ] {
        expect_mapping(e, NOT_READY_IN_TRANSITION, NOT_READY_IN_TRANSITION);
    }
    let s = Sense::new(
        NOT_READY_IN_TRANSITION.0,
        NOT_READY_IN_TRANSITION.1,
        NOT_READY_IN_TRANSITION.2,
    );
    assert!(
        ScsiError::Sense(s).is_retryable(),
        "NOT READY 04/0A is retried by initiators"
    );
}

#[test]
fn eagain_is_busy_status_without_sense() {
    let b = Faulty::new();
    let mut h = harness(&b);
    b.fail(Kind::Read, Fault::Errno(Errno::EAGAIN));
    let c = read(&mut h, 0);
    assert_eq!(c.status, BUSY, "EAGAIN gives BUSY");
    assert!(c.sense.iter().all(|&x| x == 0), "no sense with BUSY");
    b.heal();
    assert_good(&read(&mut h, 0));
}

#[test]
fn a_dropped_io_completes_its_command_once_with_an_error() {
    let b = Faulty::new();
    let mut h = harness(&b);
    let d = pattern(9);
    assert_good(&write(&mut h, 7, &d));
    // Straight to the device thread (READ, WRITE) and through a waiting worker (CAW, VERIFY).
    b.fail(Kind::Read, Fault::Drop);
    assert_sense(&read(&mut h, 7), READ_ERROR, "dropped READ");
    let c = h.run(
        &cdb::caw(7, 1),
        DataDir::ToDevice(&[d.clone(), pattern(10)].concat()),
    );
    assert_sense(&c, READ_ERROR, "dropped CAW read");
    let c = h.run(&cdb::verify16(7, 1, true), DataDir::ToDevice(&d));
    assert_sense(&c, READ_ERROR, "dropped VERIFY read");
    b.fail(Kind::Write, Fault::Drop);
    assert_sense(
        &write(&mut h, 7, &pattern(11)),
        WRITE_ERROR,
        "dropped WRITE",
    );
    b.fail(Kind::Flush, Fault::Drop);
    assert_sense(
        &h.run(&cdb::sync16(), DataDir::None),
        WRITE_ERROR,
        "dropped FLUSH",
    );
    // Many at once: each completes exactly once (the harness panics on a second completion).
    b.fail(Kind::Read, Fault::Drop);
    let ids: Vec<u16> = (0..20)
        .map(|i| h.submit(&cdb::read16(i, 1), DataDir::FromDevice(BS)))
        .collect();
    for id in ids {
        assert_sense(&h.wait(id), READ_ERROR, "dropped READ in a batch");
    }
    b.heal();
    let c = read(&mut h, 7);
    assert_good(&c);
    assert_eq!(c.data_in, d);
    let completed = h.stats().completed.load(Ordering::Relaxed);
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "nothing lost");
    assert_eq!(completed, 27, "one completion per command");
}
