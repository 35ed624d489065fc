//! Test harness: a device served by the real dispatcher over the in-process emulation of the
//! kernel's side of the ring (`tcmu_ring::emu`). Every reap checks the emulation's protocol
//! rules, so a test fails loudly on a double completion, a tail past the head or a corrupted
//! entry.
#![allow(dead_code)]

pub mod cdbs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig, Full, KernelEmu};
use tcmu_ring::Ring;
use tcmu_scsi::lun::LunInfo;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::{self, DeviceConfig, DeviceHandle};

pub struct Harness {
    pub emu: KernelEmu,
    pub dev: Option<DeviceHandle>,
    done: HashMap<u16, Completed>,
    buf: Vec<Completed>,
}

impl Harness {
    pub fn new(
        backend: Arc<dyn Backend>,
        lun: LunInfo,
        emu_cfg: EmuConfig,
        dev_cfg: &DeviceConfig,
    ) -> Harness {
        let (emu, map, bell) = KernelEmu::new(emu_cfg).expect("emulated ring");
        let ring = Ring::new(Arc::new(map)).expect("mailbox valid");
        let dev =
            device::spawn("test/lun0", ring, Box::new(bell), backend, lun, dev_cfg).expect("spawn");
        Harness {
            emu,
            dev: Some(dev),
            done: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// Reap whatever the handler completed; panics on a protocol violation.
    pub fn pump(&mut self, wait: Duration) {
        let _ = self.emu.wait_kick(wait);
        self.buf.clear();
        if let Err(v) = self.emu.reap(&mut self.buf) {
            panic!("protocol violation by the handler: {v}");
        }
        for c in self.buf.drain(..) {
            let id = c.cmd_id;
            // Moved, not cloned: a 1 MiB read's Data-In copied again on the bench thread.
            assert!(
                self.done.insert(id, c).is_none(),
                "cmd {id} completed twice"
            );
        }
    }

    /// Submit, reaping while the ring or data area is full (the kernel would queue it).
    pub fn submit(&mut self, cdb: &[u8], dir: DataDir<'_>) -> u16 {
        let t = Instant::now();
        loop {
            match self.emu.submit(cdb, dir) {
                Ok(id) => {
                    // An id is reusable once reaped: forget any stale completion under it.
                    self.done.remove(&id);
                    return id;
                }
                Err(Full::Ring | Full::Data | Full::Ids) => {
                    assert!(
                        t.elapsed() < Duration::from_secs(30),
                        "ring stayed full for 30 s"
                    );
                    self.pump(Duration::from_millis(5));
                }
                Err(e) => panic!("submit refused: {e:?}"),
            }
        }
    }

    pub fn wait(&mut self, id: u16) -> Completed {
        let t = Instant::now();
        loop {
            if let Some(c) = self.done.remove(&id) {
                return c;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "command {id} not completed within 30 s"
            );
            self.pump(Duration::from_millis(5));
        }
    }

    /// Every completion reaped so far and not yet taken, after waiting up to `wait` for a
    /// kick. (Take completions before submitting more: an id is reused once reaped.)
    pub fn take_done(&mut self, wait: Duration) -> Vec<Completed> {
        if self.done.is_empty() {
            self.pump(wait);
        }
        self.done.drain().map(|(_, c)| c).collect()
    }

    /// The completion of `id` if it has been reaped (call [`Harness::pump`] to reap).
    pub fn take(&mut self, id: u16) -> Option<Completed> {
        self.done.remove(&id)
    }

    /// Whether `id` has completed (and was not yet taken by [`Harness::wait`]).
    pub fn is_done(&self, id: u16) -> bool {
        self.done.contains_key(&id)
    }

    pub fn run(&mut self, cdb: &[u8], dir: DataDir<'_>) -> Completed {
        let id = self.submit(cdb, dir);
        self.wait(id)
    }

    pub fn stop(&mut self) {
        if let Some(d) = self.dev.take() {
            d.join();
        }
        self.pump(Duration::from_millis(1));
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(d) = self.dev.take() {
            d.join();
        }
    }
}

/// (key, asc, ascq) of a completion's fixed-format sense.
pub fn sense_of(c: &Completed) -> (u8, u8, u8) {
    let s = tcmu_scsi::sense::Sense::from_bytes(&c.sense)
        .unwrap_or_else(|| panic!("no valid sense in {:?}", &c.sense[..18]));
    (s.key, s.asc, s.ascq)
}

/// Check GOOD status, printing the sense otherwise.
#[track_caller]
pub fn assert_good(c: &Completed) {
    assert_eq!(
        c.status,
        0,
        "expected GOOD, got status {:#x} sense {:02x?}",
        c.status,
        &c.sense[..18]
    );
}

/// Data-In as the initiator sees it (read_len honoured).
pub fn data_in(c: &Completed) -> &[u8] {
    &c.data_in
}
