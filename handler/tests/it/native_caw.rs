//! COMPARE AND WRITE done by a backend that does it atomically itself
//! (`Backend::atomic_compare_and_write`, `IoOp::CompareAndWrite`; RBD's librbd call, here a
//! RAM store): what the device sends, how the mismatch offset comes back into INFORMATION,
//! the generic path for what the backend declines, and the retry of one answered at its
//! deadline whose write landed.

// Test patterns and offsets on small constants: the casts are lossless.
#![allow(clippy::cast_possible_truncation)]

use nix::errno::Errno;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_scsi::sense::Sense;
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::io::Io;
use tcmu_warden::backend::{Backend, IoOp};
use tcmu_warden::device::{DeviceConfig, FreeKeptBuf};
use tcmu_warden::testing::{assert_good, cdb, data_in, sense_of, Harness};

const BS: usize = 512;
const SIZE: usize = 1 << 20;
const MISCOMPARE: (u8, u8, u8) = (0x0E, 0x1D, 0x00);

/// A RAM store that does COMPARE AND WRITE of up to one 512-byte block itself, atomically
/// (under its lock), like librbd.
struct AtomicRam {
    data: Mutex<Vec<u8>>,
    /// COMPARE AND WRITE operations received.
    native: AtomicU64,
    /// Report the mismatch offset (else leave it unset, as a backend that cannot).
    report_offset: bool,
}

impl AtomicRam {
    fn new(report_offset: bool) -> AtomicRam {
        AtomicRam {
            data: Mutex::new(vec![0; SIZE]),
            native: AtomicU64::new(0),
            report_offset,
        }
    }

    fn compare_and_write(&self, io: &Io) -> Result<(), Errno> {
        self.native.fetch_add(1, Ordering::SeqCst);
        let v = io.iovecs();
        let n = usize::try_from(io.len()).unwrap();
        assert_eq!(v.len(), 3, "compare half, write half, mismatch offset");
        assert_eq!((v[0].iov_len, v[1].iov_len), (n, n));
        assert!(v[2].iov_len >= 8);
        let (mut cmp, mut new) = (vec![0; n], vec![0; n]);
        io.buffers().copy_to_slice(0, &mut cmp);
        io.buffers().copy_to_slice(n, &mut new);
        let off = usize::try_from(io.offset()).unwrap();
        let mut d = self.data.lock();
        let at = d[off..off + n].iter().zip(&cmp).position(|(a, b)| a != b);
        if let Some(i) = at {
            if self.report_offset {
                io.buffers()
                    .copy_from_slice(2 * n, &(i as u64).to_ne_bytes());
            }
            return Err(Errno::EILSEQ);
        }
        d[off..off + n].copy_from_slice(&new);
        Ok(())
    }
}

impl Backend for AtomicRam {
    fn describe(&self) -> String {
        "atomic-ram".into()
    }

    fn size(&self) -> u64 {
        SIZE as u64
    }

    fn atomic_compare_and_write(&self, _off: u64, len: u64) -> bool {
        len <= 512
    }

    fn submit(&self, io: Io) {
        let off = usize::try_from(io.offset()).unwrap();
        let n = usize::try_from(io.len()).unwrap();
        let r = match io.op() {
            IoOp::Read => {
                io.buffers()
                    .copy_from_slice(0, &self.data.lock()[off..off + n]);
                Ok(())
            }
            IoOp::Write { .. } => {
                io.buffers()
                    .copy_to_slice(0, &mut self.data.lock()[off..off + n]);
                Ok(())
            }
            IoOp::Flush => Ok(()),
            IoOp::CompareAndWrite { .. } => self.compare_and_write(&io),
            IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => Err(Errno::EOPNOTSUPP),
        };
        io.complete(r);
    }
}

fn harness(backend: Arc<dyn Backend>, deadline: Option<Duration>) -> Harness {
    let mut lun = tcmu_scsi::lun::LunInfo::new(512, (SIZE / BS) as u64, "native-caw");
    lun.write_cache = true;
    lun.caps.compare_and_write = true;
    lun.max_compare_write_blocks = 8;
    let cfg = DeviceConfig {
        command_deadline: deadline,
        free_kept_buf: Some(FreeKeptBuf(Arc::new(|_| Ok(())))),
        ..DeviceConfig::default()
    };
    let emu = EmuConfig {
        data_size: 256 * 1024,
        flags: 0xf,
        ..EmuConfig::default()
    };
    Harness::new(backend, lun, emu, &cfg)
}

fn write(h: &mut Harness, lba: u64, data: &[u8]) {
    let blocks = u32::try_from(data.len() / BS).unwrap();
    assert_good(&h.run(&cdb::write16(lba, blocks, false), DataDir::ToDevice(data)));
}

fn read(h: &mut Harness, lba: u64, blocks: u32) -> Vec<u8> {
    let c = h.run(
        &cdb::read16(lba, blocks),
        DataDir::FromDevice(blocks as usize * BS),
    );
    assert_good(&c);
    data_in(&c).to_vec()
}

fn caw(h: &mut Harness, lba: u64, compare: &[u8], new: &[u8]) -> Completed {
    let blocks = u8::try_from(compare.len() / BS).unwrap();
    h.run(
        &cdb::caw(lba, blocks),
        DataDir::ToDevice(&[compare, new].concat()),
    )
}

fn info(c: &Completed) -> Option<u64> {
    assert_eq!(sense_of(c), MISCOMPARE, "{:02x?}", &c.sense[..18]);
    if c.sense[0] & 0x7f == 0x70 {
        assert_ne!(c.sense[0] & 0x80, 0, "VALID");
    }
    Sense::from_bytes(&c.sense).and_then(|s| s.info)
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add((i * 13) as u8)).collect()
}

#[test]
fn one_block_goes_to_the_backend_and_its_mismatch_offset_is_the_information() {
    let ram = Arc::new(AtomicRam::new(true));
    let mut h = harness(Arc::clone(&ram) as Arc<dyn Backend>, None);
    let (a, b) = (pattern(1, BS), pattern(2, BS));
    write(&mut h, 7, &a);
    assert_good(&caw(&mut h, 7, &a, &b));
    assert_eq!(read(&mut h, 7, 1), b, "written on a match");
    let mut wrong = b.clone();
    wrong[77] ^= 1;
    wrong[200] ^= 1;
    let c = caw(&mut h, 7, &wrong, &a);
    assert_eq!(info(&c), Some(77));
    assert_eq!(read(&mut h, 7, 1), b, "untouched after a miscompare");
    assert_eq!(
        ram.native.load(Ordering::SeqCst),
        2,
        "both went to the backend"
    );
    // Two blocks: the backend declines, the device reads, compares and writes itself.
    let (c2, d2) = (pattern(3, 2 * BS), pattern(4, 2 * BS));
    write(&mut h, 20, &c2);
    assert_good(&caw(&mut h, 20, &c2, &d2));
    let mut wrong = d2.clone();
    wrong[600] ^= 1;
    assert_eq!(info(&caw(&mut h, 20, &wrong, &c2)), Some(600));
    assert_eq!(read(&mut h, 20, 2), d2);
    assert_eq!(
        ram.native.load(Ordering::SeqCst),
        2,
        "not sent to the backend"
    );
    h.stop();
}

#[test]
fn a_mismatch_offset_the_backend_does_not_give_is_found_by_reading() {
    let ram = Arc::new(AtomicRam::new(false));
    let mut h = harness(Arc::clone(&ram) as Arc<dyn Backend>, None);
    let (a, b) = (pattern(5, BS), pattern(6, BS));
    write(&mut h, 3, &a);
    let mut wrong = a.clone();
    wrong[311] ^= 0x80;
    assert_eq!(info(&caw(&mut h, 3, &wrong, &b)), Some(311));
    assert_eq!(read(&mut h, 3, 1), a);
    assert_eq!(ram.native.load(Ordering::SeqCst), 1);
    h.stop();
}

#[test]
fn a_retried_native_compare_and_write_whose_first_try_landed_reports_good() {
    let ram = Arc::new(AtomicRam::new(true));
    let fault = Arc::new(FaultBackend::new(
        Arc::clone(&ram) as Arc<dyn Backend>,
        Vec::new(),
    ));
    let mut h = harness(
        Arc::clone(&fault) as Arc<dyn Backend>,
        Some(Duration::from_millis(300)),
    );
    let (a, b) = (pattern(7, BS), pattern(8, BS));
    write(&mut h, 30, &a);
    // The backend's COMPARE AND WRITE (a write for the fault rules) hangs: answered
    // retryably at the deadline.
    fault.set_rules(parse_rules("write:hang,count=1").unwrap());
    let first = caw(&mut h, 30, &a, &b);
    assert_eq!(sense_of(&first), (0x02, 0x04, 0x0A));
    // The initiator retries the same command; meanwhile the first attempt lands.
    let data = [a.as_slice(), b.as_slice()].concat();
    let retry = h.submit(&cdb::caw(30, 1), DataDir::ToDevice(&data));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fault.release_hung(), 1);
    assert_good(&h.wait(retry));
    assert_eq!(read(&mut h, 30, 1), b);
    assert_eq!(
        ram.native.load(Ordering::SeqCst),
        2,
        "both attempts were native"
    );
    // Recognised once: a repeat now miscompares (at byte 0, where a and b differ).
    let again = caw(&mut h, 30, &a, &b);
    assert_eq!(info(&again), Some(0));
    h.stop();
}
