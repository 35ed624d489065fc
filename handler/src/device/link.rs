//! What a device shares with its workers and its backend's completion threads.

use super::context::Ctx;
use crate::backend::Backend;
use crossbeam_channel::Sender;
use nix::sys::eventfd::EventFd;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tcmu_ring::{DataArea, Doorbell};
use tcmu_scsi::lun::LunInfo;

/// Shared state of one device. See the module docs of [`crate::device`].
pub struct DeviceLink {
    /// Device name for logs (`<hba>/<name>`).
    pub name: String,
    /// The backing store (replaced when the cfgstring is reconfigured).
    backend: RwLock<Arc<dyn Backend>>,
    /// The UNIT ATTENTIONs waiting to be reported, one bit each ([`UnitAttention`]); 0: none.
    ua: AtomicU8,
    /// The ring's data area.
    pub data: DataArea,
    /// Per-stage timestamps are taken (see `context::Stamps`).
    pub accounting: bool,
    /// Per context slot: the command was aborted by a TMR while queued for a worker; the
    /// worker completes it without running it.
    pub aborted: Box<[AtomicBool]>,
    /// COMPARE AND WRITEs completed at their deadline, to recognise their retries.
    pub caw: super::caw_retry::CawRetry,
    /// The LUN as the initiator sees it (changed by MODE SELECT and reconfiguration).
    pub lun: RwLock<LunInfo>,
    /// The backend's health, shared with the monitor thread (see [`super::health`]).
    pub health: super::health::HealthCell,
    /// Settings a configuration reload changes while the device runs.
    pub tunables: Tunables,
    /// Where a MODE SELECT's write-cache change is persisted (None: nowhere).
    pub persist_write_cache: Option<super::handle::PersistWriteCache>,
    done_tx: Sender<Box<Ctx>>,
    wake: EventFd,
    sleeping: AtomicBool,
    /// Keeps the uio fd open while any I/O of this device is in flight (see
    /// `LoopDevice::give_up_in_flight`).
    _doorbell: Arc<dyn Doorbell>,
}

impl DeviceLink {
    pub(crate) fn new(
        name: String,
        backend: Arc<dyn Backend>,
        data: DataArea,
        lun: LunInfo,
        done_tx: Sender<Box<Ctx>>,
        doorbell: Arc<dyn Doorbell>,
    ) -> std::io::Result<DeviceLink> {
        let wake = EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )?;
        Ok(DeviceLink {
            name,
            backend: RwLock::new(backend),
            ua: AtomicU8::new(0),
            data,
            lun: RwLock::new(lun),
            health: super::health::HealthCell::default(),
            tunables: Tunables::default(),
            persist_write_cache: None,
            done_tx,
            wake,
            sleeping: AtomicBool::new(false),
            accounting: false,
            aborted: Box::new([]),
            caw: super::caw_retry::CawRetry::new(0),
            _doorbell: doorbell,
        })
    }

    /// The current backend.
    #[must_use]
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend.read())
    }

    /// Replace the backend; commands already submitted finish on the old one. The old one
    /// is dropped after the lock is released (its last holder closes it).
    pub fn set_backend(&self, b: Arc<dyn Backend>) {
        drop(self.replace_backend(b));
    }

    /// Replace the backend (new cfgstring) and return the old one, for the caller to close
    /// off the lock once its operations have returned (`reconfig::close_replaced`).
    #[must_use]
    pub fn replace_backend(&self, b: Arc<dyn Backend>) -> Arc<dyn Backend> {
        std::mem::replace(&mut *self.backend.write(), b)
    }

    /// Report `ua` to the next command that can receive a UNIT ATTENTION. Conditions of
    /// different kinds wait together and are reported one per command.
    pub fn raise(&self, ua: UnitAttention) {
        self.ua.fetch_or(ua as u8, Ordering::SeqCst);
    }

    /// Take one pending UNIT ATTENTION, if any (one atomic load when there is none): a
    /// capacity change first, then a mode parameter change.
    pub fn take_unit_attention(&self) -> Option<UnitAttention> {
        let pending = self.ua.load(Ordering::Relaxed);
        if pending == 0 {
            return None;
        }
        for ua in [
            UnitAttention::CapacityChanged,
            UnitAttention::ModeParametersChanged,
        ] {
            let bit = ua as u8;
            if self.ua.fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
                return Some(ua);
            }
        }
        None
    }

    /// Hand a finished (or backend-completed) context back to the device thread. Callable
    /// from any thread; never blocks (the channel has room for every context).
    pub fn complete_from_backend(&self, ctx: Box<Ctx>) {
        if self.done_tx.send(ctx).is_err() {
            tracing::error!(device = %self.name, "completion after the device thread exited");
            return;
        }
        self.wake_if_sleeping();
    }

    /// Wake the device thread if it is (about to be) blocked in poll.
    pub fn wake_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake_now();
        }
    }

    /// Wake the device thread unconditionally (stop requests).
    pub fn wake_now(&self) {
        if let Err(e) = self.wake.write(1) {
            tracing::warn!(device = %self.name, "eventfd write failed: {e}");
        }
    }

    pub(crate) fn set_sleeping(&self, on: bool) {
        self.sleeping.store(on, Ordering::SeqCst);
    }

    pub(crate) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.wake.as_fd()
    }

    pub(crate) fn drain_wake(&self) {
        let _ = self.wake.read();
    }
}

/// Conditions reported once as UNIT ATTENTION (each a bit of the pending set).
///
/// TCMU does not tell the handler which initiator (I_T nexus) sent a command, so a condition
/// is reported to the next command from any initiator, not once per initiator (nor "to every
/// nexus but the one that caused it", which SPC asks for a MODE SELECT): see docs/DESIGN.md,
/// "Write cache".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum UnitAttention {
    /// CAPACITY DATA HAS CHANGED (2A/09): the LUN was resized.
    CapacityChanged = 1,
    /// MODE PARAMETERS CHANGED (2A/01): the write cache changed (MODE SELECT or
    /// `emulate_write_cache`).
    ModeParametersChanged = 2,
}

impl UnitAttention {
    /// The sense this condition reports.
    #[must_use]
    pub fn sense(self) -> tcmu_scsi::sense::Sense {
        match self {
            UnitAttention::CapacityChanged => tcmu_scsi::sense::Sense::capacity_data_changed(),
            UnitAttention::ModeParametersChanged => {
                tcmu_scsi::sense::Sense::mode_parameters_changed()
            }
        }
    }
}

/// Settings that change while a device runs (a configuration reload on SIGHUP). The writer
/// stores the values and then bumps `generation`; the device thread and the health monitor
/// compare the generation once per pass (one relaxed load) and pick up the new values.
#[derive(Debug, Default)]
pub struct Tunables {
    generation: AtomicU64,
    /// Outlier threshold in ns; `u64::MAX`: none.
    outlier_ns: AtomicU64,
    /// Per-command deadline in ns; 0: none.
    deadline_ns: AtomicU64,
    /// Health ping interval and timeout in ns; 0: unchanged.
    ping_interval_ns: AtomicU64,
    ping_timeout_ns: AtomicU64,
}

/// A snapshot of [`Tunables`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunableValues {
    /// Commands slower than this are outliers.
    pub outlier_threshold: Option<Duration>,
    /// The handler's per-command deadline.
    pub command_deadline: Option<Duration>,
    /// Health ping interval and timeout (None: keep the monitor's).
    pub ping: Option<(Duration, Duration)>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Tunables {
    /// Publish new values.
    pub fn set(&self, v: TunableValues) {
        self.outlier_ns
            .store(v.outlier_threshold.map_or(u64::MAX, ns), Ordering::Relaxed);
        self.deadline_ns
            .store(v.command_deadline.map_or(0, ns), Ordering::Relaxed);
        let (i, t) = v.ping.map_or((0, 0), |(i, t)| (ns(i), ns(t)));
        self.ping_interval_ns.store(i, Ordering::Relaxed);
        self.ping_timeout_ns.store(t, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation: changes with every [`Tunables::set`] (0: never set).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The values last published.
    #[must_use]
    pub fn get(&self) -> TunableValues {
        let o = self.outlier_ns.load(Ordering::Relaxed);
        let d = self.deadline_ns.load(Ordering::Relaxed);
        let (i, t) = (
            self.ping_interval_ns.load(Ordering::Relaxed),
            self.ping_timeout_ns.load(Ordering::Relaxed),
        );
        TunableValues {
            outlier_threshold: (o != u64::MAX).then(|| Duration::from_nanos(o)),
            command_deadline: (d != 0).then(|| Duration::from_nanos(d)),
            ping: (i != 0).then(|| (Duration::from_nanos(i), Duration::from_nanos(t))),
        }
    }
}
