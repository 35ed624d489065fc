//! A device served by the real dispatcher over the in-process emulation of the kernel's side
//! of the ring (`tcmu_ring::emu`): the test thread plays the kernel, submits CDBs, reaps the
//! completions and waits for them, never longer than a bound.
//!
//! Every reap checks the emulation's protocol rules, so a test fails loudly on a double
//! completion, a tail past the head or a corrupted entry. Every device a test or benchmark
//! starts is spawned here ([`Harness::start_with_doorbell`]), so a change of
//! [`device::spawn`] is adapted in this one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_ring::emu::{Completed, DataDir, EmuConfig, EmuDoorbell, Full, KernelEmu};
use tcmu_ring::{Doorbell, Mapping, Ring};
use tcmu_scsi::lun::LunInfo;

use crate::backend::Backend;
use crate::device::link::DeviceLink;
use crate::device::{self, DeviceConfig, DeviceHandle, DeviceStats};

/// How long [`Harness::wait`] and [`Harness::submit`] wait by default before they fail the
/// test: far beyond any deadline a test configures, short enough that a lost command is a
/// failure and not a hung test run.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// The emulated kernel and, once started, the device serving it.
pub struct Harness {
    /// The kernel's side of the ring.
    pub emu: KernelEmu,
    /// The device, until [`Harness::stop`] or a test takes it to join it itself.
    pub dev: Option<DeviceHandle>,
    /// The handler's mapping and doorbell, until the device is started.
    handler_side: Option<(Mapping, EmuDoorbell)>,
    done: HashMap<u16, Completed>,
    buf: Vec<Completed>,
    limit: Duration,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("emu", &self.emu)
            .field("started", &self.handler_side.is_none())
            .field("running", &self.dev.is_some())
            .field("reaped", &self.done.len())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A device named `test/lun0` serving `backend` as `lun` over a fresh emulated ring.
    ///
    /// # Panics
    /// If the emulated ring or the device cannot be created.
    #[must_use]
    pub fn new(
        backend: Arc<dyn Backend>,
        lun: LunInfo,
        emu_cfg: EmuConfig,
        dev_cfg: &DeviceConfig,
    ) -> Harness {
        let mut h = Harness::kernel(emu_cfg);
        h.start("test/lun0", backend, lun, dev_cfg);
        h
    }

    /// The emulated kernel alone: commands can be queued (and their entries corrupted)
    /// before [`Harness::start`] lets a device read them.
    ///
    /// # Panics
    /// If the emulated ring cannot be created.
    #[must_use]
    pub fn kernel(emu_cfg: EmuConfig) -> Harness {
        let (emu, map, bell) = KernelEmu::new(emu_cfg).expect("emulated ring");
        Harness {
            emu,
            dev: None,
            handler_side: Some((map, bell)),
            done: HashMap::with_capacity(64),
            buf: Vec::with_capacity(64),
            limit: WAIT_LIMIT,
        }
    }

    /// Start the device `name` (its threads are named after it).
    ///
    /// # Panics
    /// If a device was started already, or cannot be.
    pub fn start(
        &mut self,
        name: &str,
        backend: Arc<dyn Backend>,
        lun: LunInfo,
        dev_cfg: &DeviceConfig,
    ) {
        self.start_with_doorbell(name, backend, lun, dev_cfg, |bell| Box::new(bell));
    }

    /// [`Harness::start`] with the doorbell the device uses wrapped by `doorbell` (to observe
    /// or prepare the device thread, which is the only caller of its doorbell).
    ///
    /// # Panics
    /// If a device was started already, or cannot be.
    pub fn start_with_doorbell(
        &mut self,
        name: &str,
        backend: Arc<dyn Backend>,
        lun: LunInfo,
        dev_cfg: &DeviceConfig,
        doorbell: impl FnOnce(EmuDoorbell) -> Box<dyn Doorbell>,
    ) {
        let (map, bell) = self.handler_side.take().expect("one device per harness");
        let ring = Ring::new(Arc::new(map)).expect("mailbox valid");
        let dev = device::spawn(name, ring, doorbell(bell), backend, lun, dev_cfg)
            .expect("spawn the device");
        self.dev = Some(dev);
    }

    /// Change how long [`Harness::wait`] and [`Harness::submit`] wait before they fail.
    pub fn set_wait_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// The running device.
    ///
    /// # Panics
    /// If it was not started or was stopped.
    #[must_use]
    pub fn device(&self) -> &DeviceHandle {
        self.dev.as_ref().expect("device running")
    }

    /// The running device's counters.
    ///
    /// # Panics
    /// If it was not started or was stopped.
    #[must_use]
    pub fn stats(&self) -> &DeviceStats {
        &self.device().stats
    }

    /// The running device's shared state (health, LUN, backend).
    ///
    /// # Panics
    /// If it was not started or was stopped.
    #[must_use]
    pub fn link(&self) -> &Arc<DeviceLink> {
        self.device().link()
    }

    /// Wait up to `wait` for a kick, then reap whatever the handler completed.
    ///
    /// # Panics
    /// On a protocol violation by the handler, or a command completed twice.
    pub fn pump(&mut self, wait: Duration) {
        let _ = self.emu.wait_kick(wait);
        self.buf.clear();
        if let Err(v) = self.emu.reap(&mut self.buf) {
            panic!("protocol violation by the handler: {v}");
        }
        for c in self.buf.drain(..) {
            let id = c.cmd_id;
            // Moved, not cloned: a 1 MiB read's Data-In is not copied a second time.
            assert!(
                self.done.insert(id, c).is_none(),
                "cmd {id} completed twice"
            );
        }
    }

    /// Queue a command, reaping while the ring, the data area or the ids are full (the
    /// kernel would queue it), for up to the wait limit. Returns its id.
    ///
    /// # Panics
    /// If the emulation refuses the command, or the ring stays full past the limit.
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
                        t.elapsed() < self.limit,
                        "ring stayed full for {:?}",
                        self.limit
                    );
                    self.pump(Duration::from_millis(5));
                }
                Err(e) => panic!("submit refused: {e:?}"),
            }
        }
    }

    /// The completion of `id`, reaping until it comes, for up to the wait limit.
    ///
    /// # Panics
    /// If it does not complete within the limit, or on a protocol violation.
    pub fn wait(&mut self, id: u16) -> Completed {
        let t = Instant::now();
        loop {
            if let Some(c) = self.done.remove(&id) {
                return c;
            }
            assert!(
                t.elapsed() < self.limit,
                "command {id} not completed within {:?}",
                self.limit
            );
            self.pump(Duration::from_millis(5));
        }
    }

    /// Submit and wait.
    ///
    /// # Panics
    /// As [`Harness::submit`] and [`Harness::wait`].
    pub fn run(&mut self, cdb: &[u8], dir: DataDir<'_>) -> Completed {
        let id = self.submit(cdb, dir);
        self.wait(id)
    }

    /// Every completion reaped so far and not yet taken, after waiting up to `wait` for a
    /// kick if there is none. (Take completions before submitting more: an id is reused
    /// once reaped.)
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

    /// Whether `id` has completed (and was not yet taken).
    #[must_use]
    pub fn is_done(&self, id: u16) -> bool {
        self.done.contains_key(&id)
    }

    /// Ids completed and not yet taken.
    #[must_use]
    pub fn done_ids(&self) -> Vec<u16> {
        self.done.keys().copied().collect()
    }

    /// Stop the device, wait for its threads, and reap what it completed on the way out.
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

/// Poll `f` every 2 ms until it holds.
///
/// # Panics
/// If it does not hold within `timeout`, naming `what`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// (key, asc, ascq) of a completion's fixed-format sense.
///
/// # Panics
/// If the completion carries no valid sense.
#[must_use]
pub fn sense_of(c: &Completed) -> (u8, u8, u8) {
    let s = tcmu_scsi::sense::Sense::from_bytes(&c.sense)
        .unwrap_or_else(|| panic!("no valid sense in {:?}", &c.sense[..18]));
    (s.key, s.asc, s.ascq)
}

/// Check GOOD status, printing the sense otherwise.
///
/// # Panics
/// If the status is not GOOD.
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

/// The first descriptor of GET LBA STATUS at `lba`: `(lba, blocks, provisioning status)`.
///
/// # Panics
/// If the command is not GOOD or the descriptor does not start at `lba`.
#[track_caller]
pub fn lba_status_at(h: &mut Harness, lba: u64) -> (u64, u32, u8) {
    let c = h.run(
        &super::cdb::get_lba_status(lba, 24),
        DataDir::FromDevice(24),
    );
    assert_good(&c);
    let d = super::cdb::lba_status_descriptors(&c.data_in);
    assert_eq!(
        d.first().map(|e| e.0),
        Some(lba),
        "starts at the LBA asked for: {d:?}"
    );
    d[0]
}

/// Data-In as the initiator sees it (read_len honoured).
#[must_use]
pub fn data_in(c: &Completed) -> &[u8] {
    &c.data_in
}
