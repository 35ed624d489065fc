//! Starting a device and controlling it while it runs: its configuration, its handle
//! (stop, reconfigure), and [`spawn`], which sizes everything a device needs once.

use super::link::DeviceLink;
use super::link::TunableValues;
use super::loops::DeviceLoops;
use super::stats::DeviceStats;
use super::thread::Exit;
use super::workers::{WorkerPool, Workers};
use crate::backend::Backend;
use crossbeam_channel::bounded;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tcmu_ring::{Doorbell, Ring};
use tcmu_scsi::lun::LunInfo;
use tcmu_warden_supervisor::metrics::DeviceMetrics;

/// How a device is run.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The device's share of the worker pool: most of its jobs on worker threads at once. With
    /// no shared [`pool`](DeviceConfig::pool), the device gets a pool of this many threads of
    /// its own.
    pub workers: usize,
    /// The worker pool shared by every device of the daemon (see [`super::workers`]); None:
    /// a pool of [`workers`](DeviceConfig::workers) threads for this device alone.
    pub pool: Option<WorkerPool>,
    /// The event loops shared by every device of the daemon (see [`super::loops`]); None: a
    /// loop thread for this device alone (named `tcmu-d/<device>`).
    pub loops: Option<DeviceLoops>,
    /// Most commands in flight at once; further commands wait in the ring until one
    /// completes. Contexts are allocated as the queue depth grows, up to this
    /// ([`super::context::CtxPool`]).
    pub max_inflight: usize,
    /// Size of each worker's two bounce buffers (allocated on a worker's first multi-step
    /// command) when the device has its own pool; a shared pool has its own size.
    pub scratch_bytes: usize,
    /// How long a stop waits for commands in flight.
    pub stop_deadline: Duration,
    /// No longer used: no backend I/O runs on the device thread, at any queue depth (a hung
    /// backing file would defeat the deadline). READ and WRITE at queue depth 1 avoid the
    /// hand-offs through `io_uring` instead. Kept so existing configurations still load.
    pub inline_qd1: bool,
    /// Submit READ, WRITE and SYNCHRONIZE CACHE on a backend that offers a file descriptor
    /// (the file backend) from the device thread through its own io_uring (see
    /// [`super::uring`]); false, or io_uring unavailable: the workers run them.
    pub io_uring: bool,
    /// The handler's own deadline per command (see [`super::deadline`]); None: no deadline.
    pub command_deadline: Option<Duration>,
    /// Releases a kept data buffer (`action/free_kept_buf`); without it, and without
    /// KEEP_BUF in the mailbox, commands are never completed early at their deadline.
    pub free_kept_buf: Option<FreeKeptBuf>,
    /// Commands slower than this are kept and logged as outliers (per-stage accounting is on
    /// while this is set).
    pub outlier_threshold: Option<Duration>,
    /// This device's Prometheus series, served on the endpoint. None: not served; the
    /// counters `status` shows are kept in a detached set of series
    /// (`DeviceMetrics::detached`), and the per-command histograms are not observed.
    pub metrics: Option<DeviceMetrics>,
    /// Watch the backend's health with this policy (pings, lost/recovering, reopen); None:
    /// no monitor, the backend is always taken as healthy.
    pub health: Option<tcmu_warden_supervisor::health::Policy>,
    /// Re-reads the LUN's ALUA target port groups (configfs); None: the groups in the
    /// `LunInfo` never change.
    pub alua: Option<AluaSource>,
    /// Persists a write-cache change a MODE SELECT made; None: it stays in this process.
    pub persist_write_cache: Option<PersistWriteCache>,
    /// Writes lock-driven ALUA states back where the groups come from (configfs
    /// `alua/<group>/alua_access_state`, see [`crate::configfs::alua_write`]); None: the
    /// lock-driven states are only reported, not written.
    pub alua_sink: Option<AluaSink>,
}

/// Persists the write cache a MODE SELECT set (the daemon writes `attrib/emulate_write_cache`
/// in configfs, see `daemon::write_cache`). Called on the device thread: it must only hand
/// the value over, never wait.
#[derive(Clone)]
pub struct PersistWriteCache(pub Arc<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for PersistWriteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersistWriteCache")
    }
}

/// Where lock-driven ALUA states go: called with `(group name, new state)` for every group
/// whose lock-driven state differs from the configured one (rarely: on a lock transition).
/// Must not block: the device thread calls it.
#[derive(Clone)]
pub struct AluaSink(pub Arc<dyn Fn(AluaChanges) + Send + Sync>);

/// `(group name, new state)` pairs handed to an [`AluaSink`].
pub type AluaChanges = Vec<(String, u8)>;

impl std::fmt::Debug for AluaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AluaSink")
    }
}

/// How to read a LUN's ALUA target port groups again (configfs `alua/`, see
/// [`crate::configfs::read_alua`]). Called on the device thread on every REPORT TARGET PORT
/// GROUPS and INQUIRY, and before any other command once [`ALUA_REFRESH`] has passed since
/// the last read, so an admin's `echo N > alua/<group>/alua_access_state` is seen within
/// that time.
#[derive(Clone)]
pub struct AluaSource(pub Arc<dyn Fn() -> Option<tcmu_scsi::alua::Alua> + Send + Sync>);

impl std::fmt::Debug for AluaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AluaSource")
    }
}

/// Longest a cached ALUA access state is used for other commands before configfs is read
/// again.
pub const ALUA_REFRESH: Duration = Duration::from_secs(1);

/// How to release a command's kept data buffer (writes its id to `action/free_kept_buf`).
#[derive(Clone)]
pub struct FreeKeptBuf(pub Arc<dyn Fn(u16) -> std::io::Result<()> + Send + Sync>);

impl std::fmt::Debug for FreeKeptBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreeKeptBuf")
    }
}

impl Default for DeviceConfig {
    fn default() -> DeviceConfig {
        DeviceConfig {
            workers: 4,
            pool: None,
            loops: None,
            max_inflight: 256,
            scratch_bytes: 1 << 20,
            stop_deadline: Duration::from_secs(10),
            inline_qd1: true,
            io_uring: true,
            command_deadline: None,
            free_kept_buf: None,
            outlier_threshold: Some(Duration::from_secs(1)),
            metrics: None,
            health: None,
            alua: None,
            persist_write_cache: None,
            alua_sink: None,
        }
    }
}

/// A change the kernel asks for while the device runs.
pub enum Change {
    /// New LUN size in bytes (`attrib/dev_size`).
    Size(u64),
    /// Write cache on or off (`attrib/emulate_write_cache`).
    WriteCache(bool),
    /// A new backend opened from a new cfgstring (`attrib/dev_config`).
    Backend(Arc<dyn Backend>),
}

/// How long the parts of [`spawn`] took (the daemon logs them with each device added).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StartTimes {
    /// The shared state (link, eventfd) and the device's lane in the worker pool.
    pub link: Duration,
    /// The loop's state of the device: contexts, tables, its io_uring.
    pub state: Duration,
    /// Its descriptors added to a loop's epoll and the device handed over.
    pub handed: Duration,
}

/// Control of a running device.
pub struct DeviceHandle {
    link: Arc<DeviceLink>,
    stop: Arc<AtomicBool>,
    /// Told when the device has left its loop.
    exit: Arc<Exit>,
    /// The device's counters.
    pub stats: Arc<DeviceStats>,
    /// How long a stop waits for commands in flight (also the bound for logging a replaced
    /// backend that is slow to close).
    stop_deadline: Duration,
    /// How long starting it took.
    pub started: StartTimes,
}

impl DeviceHandle {
    /// Ask the device to stop: it stops reading the ring, waits up to its deadline for
    /// commands in flight, then exits. Safe to call more than once.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.link.wake_now();
    }

    /// Stop and wait for the device to leave its loop (bounded by its stop deadline).
    pub fn join(self) {
        self.stop();
        self.exit.wait();
    }

    /// Apply a reconfiguration from the kernel (netlink RECONFIG_DEVICE) on the calling
    /// thread (see [`super::reconfig::apply`]). A replaced backend is closed on a thread of
    /// its own once its operations have returned ([`super::reconfig::close_replaced`], bounded
    /// by the stop deadline for logging).
    ///
    /// # Errors
    /// When the backend cannot take the new size; the old value stays in force.
    pub fn reconfigure(&self, change: Change) -> Result<(), super::ReconfigError> {
        if let Some(old) = super::reconfig::apply(&self.link, change)? {
            let (name, bound) = (self.link.name.clone(), self.stop_deadline);
            std::thread::Builder::new()
                .name("tcmu-close".into())
                .spawn(move || super::reconfig::close_replaced(&name, old, bound, || {}))
                .map_err(super::ReconfigError::Spawn)?;
        }
        Ok(())
    }

    /// Whether the device has left its loop: stopped, or on its own (the uio device went
    /// away or failed). The daemon drops such a device from the devices it serves.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.exit.is_done()
    }

    /// The shared state (for reconfiguration).
    #[must_use]
    pub fn link(&self) -> &Arc<DeviceLink> {
        &self.link
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.stop();
        self.exit.wait();
    }
}

/// Start serving `ring` with `backend`.
///
/// # Errors
/// When threads or the eventfd cannot be created.
pub fn spawn(
    name: &str,
    ring: Ring,
    doorbell: Box<dyn Doorbell>,
    backend: Arc<dyn Backend>,
    lun: LunInfo,
    cfg: &DeviceConfig,
) -> std::io::Result<DeviceHandle> {
    let mut laps = std::time::Instant::now();
    let mut lap = || {
        let now = std::time::Instant::now();
        let d = now - laps;
        laps = now;
        d
    };
    // Contexts: bounded by the config, by what the ring can hold and by the id space.
    let ring_slots =
        usize::try_from(ring.cmdr_size()).unwrap_or(usize::MAX) / tcmu_sys::CMD_ENTRY_SIZE;
    let total = cfg
        .max_inflight
        .min(ring_slots)
        .clamp(1, usize::from(u16::MAX));
    let (done_tx, done_rx) = bounded(total);
    let doorbell: Arc<dyn Doorbell> = Arc::from(doorbell);
    let mut link = DeviceLink::new(
        name.to_string(),
        backend,
        ring.data_area(),
        lun,
        done_tx,
        Arc::clone(&doorbell),
    )?;
    link.accounting = cfg.outlier_threshold.is_some() || cfg.metrics.is_some();
    link.aborted = (0..total).map(|_| AtomicBool::new(false)).collect();
    link.caw = super::caw_retry::CawRetry::new(total);
    link.persist_write_cache = cfg.persist_write_cache.clone();
    // What workers check between the steps of a long command (`exec::run_turn`).
    link.tunables.set(TunableValues {
        outlier_threshold: cfg.outlier_threshold,
        command_deadline: cfg.command_deadline,
        ping: None,
    });
    let link = Arc::new(link);
    // A copy source or destination for EXTENDED COPY received by any LUN.
    super::xcopy::register(&link);
    let workers = match &cfg.pool {
        Some(pool) => pool.open(total, cfg.workers)?,
        None => Workers::start(name, cfg.workers, total, cfg.scratch_bytes)?,
    };
    // The counters status and the endpoint share: the device's series, or detached ones.
    let metrics = cfg
        .metrics
        .clone()
        .unwrap_or_else(|| DeviceMetrics::detached(name, "none"));
    metrics.set_capacity(u64::from(ring.cmdr_size()), ring.data_area().len());
    let stats = Arc::new(DeviceStats::new(metrics));
    let deadline_ms = cfg
        .command_deadline
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    stats.deadline_ms.store(deadline_ms, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = cfg
        .health
        .map(|policy| super::health::start(Arc::clone(&link), policy, cfg.metrics.clone()));
    let exit = Arc::new(Exit::default());
    let mut started = StartTimes {
        link: lap(),
        ..StartTimes::default()
    };
    let dev = super::thread::new(
        super::thread::Parts {
            ring,
            doorbell,
            link: Arc::clone(&link),
            workers,
            total,
            done_rx,
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            monitor,
            exit: Arc::clone(&exit),
        },
        cfg,
    );
    started.state = lap();
    match &cfg.loops {
        Some(loops) => loops.add(dev)?,
        // Dropped at once: its thread ends when this device has left it.
        None => DeviceLoops::start(&format!("tcmu-d/{name}"), 1)?.add(dev)?,
    }
    started.handed = lap();
    Ok(DeviceHandle {
        link,
        stop,
        exit,
        stats,
        stop_deadline: cfg.stop_deadline,
        started,
    })
}
