//! The device thread: drains the ring, emulates what needs no backend, hands data commands to
//! the workers, and publishes completions to the ring in batches.

use super::context::{Ctx, Outcome, Stage, Stamps};
use super::deadline::{Deadlines, Expired, Returned};
use super::link::{DeviceLink, UnitAttention};
use super::range_lock::{range_of, RangeTable};
use super::workers::{Job, WorkerState, Workers};
use crate::backend::Backend;
use crossbeam_channel::{bounded, Receiver};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tcmu_ring::{Doorbell, Entry, Ring, TmrCopy};
use tcmu_scsi::cdb::{self, Cdb};
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::lun::LunInfo;
use tcmu_scsi::params;
use tcmu_scsi::sense::Sense;
use tcmu_scsi::status;
use tcmu_warden_supervisor::metrics::{DeviceMetrics, OpClass, OutcomeClass};

/// How a device is run.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Worker threads for data commands.
    pub workers: usize,
    /// Most commands in flight at once (contexts preallocated); further commands wait in the
    /// ring until one completes.
    pub max_inflight: usize,
    /// Size of each worker's two bounce buffers.
    pub scratch_bytes: usize,
    /// How long a stop waits for commands in flight.
    pub stop_deadline: Duration,
    /// Run a READ or WRITE on the device thread itself when it is the only command in flight
    /// (queue depth 1), saving two thread hand-offs; deeper queues always use the workers.
    pub inline_qd1: bool,
    /// The handler's own deadline per command (see [`super::deadline`]); None: no deadline.
    pub command_deadline: Option<Duration>,
    /// Releases a kept data buffer (`action/free_kept_buf`); without it, and without
    /// KEEP_BUF in the mailbox, commands are never completed early at their deadline.
    pub free_kept_buf: Option<FreeKeptBuf>,
    /// Commands slower than this are kept and logged as outliers (per-stage accounting is on
    /// while this is set).
    pub outlier_threshold: Option<Duration>,
    /// This device's Prometheus series (None: no metrics).
    pub metrics: Option<DeviceMetrics>,
    /// Watch the backend's health with this policy (pings, lost/recovering, reopen); None:
    /// no monitor, the backend is always taken as healthy.
    pub health: Option<tcmu_warden_supervisor::health::Policy>,
    /// Re-reads the LUN's ALUA target port groups (configfs); None: the groups in the
    /// `LunInfo` never change.
    pub alua: Option<AluaSource>,
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
            max_inflight: 256,
            scratch_bytes: 1 << 20,
            stop_deadline: Duration::from_secs(10),
            inline_qd1: true,
            command_deadline: None,
            free_kept_buf: None,
            outlier_threshold: Some(Duration::from_secs(1)),
            metrics: None,
            health: None,
            alua: None,
        }
    }
}

/// Counters of one device, bumped only by its device thread.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Commands read from the ring.
    pub commands: AtomicU64,
    /// Commands answered without the backend.
    pub emulated: AtomicU64,
    /// Commands completed with a status other than GOOD.
    pub errors: AtomicU64,
    /// CMD entries whose CDB offset or iovecs were invalid.
    pub bad_entries: AtomicU64,
    /// TMR entries seen.
    pub tmrs: AtomicU64,
    /// Times every context was busy and reading the ring paused.
    pub pool_exhausted: AtomicU64,
    /// Notifications written to the kernel.
    pub kicks: AtomicU64,
    /// Completions published (ring entries handed back).
    pub completed: AtomicU64,
    /// The ring was found corrupt; the device stopped reading it.
    pub broken: AtomicBool,
    /// Commands completed by the handler at their deadline (retryable status).
    pub deadline_expired: AtomicU64,
    /// Commands still in the backend a whole deadline after they were completed.
    pub stuck: AtomicU64,
    /// Commands slower than the outlier threshold.
    pub outliers: AtomicU64,
    /// Commands read and not yet completed (updated every pass of the device thread).
    pub in_flight: AtomicU64,
    /// Age in ms of the oldest command away in a worker or the backend (0: none).
    pub oldest_ms: AtomicU64,
    /// Opcode and LBA of that oldest command.
    pub oldest_opcode: std::sync::atomic::AtomicU8,
    /// LBA of that oldest command.
    pub oldest_lba: AtomicU64,
    /// Command-ring bytes in use, and its size.
    pub ring_used: AtomicU64,
    /// Command-ring size in bytes.
    pub ring_size: AtomicU64,
    /// Data-area bytes in use by commands in flight.
    pub data_used: AtomicU64,
    /// Data-area size in bytes.
    pub data_size: AtomicU64,
    /// The handler's per-command deadline in ms (0: none).
    pub deadline_ms: AtomicU64,
    /// The most recent outliers.
    pub recent_outliers: super::outliers::Outliers,
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

/// Control of a running device.
pub struct DeviceHandle {
    link: Arc<DeviceLink>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The health monitor (stopped with the device).
    monitor: Option<super::health::Monitor>,
    /// The device's counters.
    pub stats: Arc<DeviceStats>,
}

impl DeviceHandle {
    /// Ask the device to stop: it stops reading the ring, waits up to its deadline for
    /// commands in flight, then exits. Safe to call more than once.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.link.wake_now();
    }

    /// Stop and wait for the device thread to exit.
    pub fn join(mut self) {
        self.stop();
        self.monitor = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Apply a reconfiguration from the kernel (netlink RECONFIG_DEVICE).
    ///
    /// # Errors
    /// When the backend cannot take the new size; the old value stays in force.
    pub fn reconfigure(&self, change: Change) -> Result<(), String> {
        match change {
            Change::Size(bytes) => {
                self.link
                    .backend()
                    .resize(bytes)
                    .map_err(|e| format!("resize to {bytes} bytes: {e}"))?;
                let mut lun = self.link.lun.write();
                lun.num_blocks = bytes / u64::from(lun.block_size);
                drop(lun);
                self.link.raise(UnitAttention::CapacityChanged);
            }
            Change::WriteCache(on) => self.link.lun.write().write_cache = on,
            Change::Backend(b) => self.link.set_backend(b),
        }
        Ok(())
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
        self.monitor = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    if let Some(m) = &cfg.metrics {
        m.set_capacity(u64::from(ring.cmdr_size()), ring.data_area().len());
    }
    let link = Arc::new(link);
    let workers = Workers::start(name, cfg.workers, total, cfg.scratch_bytes)?;
    let free = (0..total)
        .map(|i| Ctx::new(u16::try_from(i).unwrap_or(u16::MAX)))
        .collect();
    let stats = Arc::new(DeviceStats::default());
    stats
        .ring_size
        .store(u64::from(ring.cmdr_size()), Ordering::Relaxed);
    stats
        .data_size
        .store(ring.data_area().len(), Ordering::Relaxed);
    let deadline_ms = cfg
        .command_deadline
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    stats.deadline_ms.store(deadline_ms, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let alua_state = link.lun.read().alua.as_ref().and_then(|a| a.local_state());
    let mut dt = DeviceThread {
        alua_source: cfg.alua.clone(),
        alua_read_at: Instant::now(),
        alua_state,
        link: Arc::clone(&link),
        ring,
        doorbell,
        workers: Some(workers),
        free,
        deadlines: Deadlines::new(total, cfg.command_deadline),
        free_kept_buf: cfg.free_kept_buf.clone(),
        expired: Vec::with_capacity(total),
        stuck: Vec::with_capacity(total),
        warned_no_keep_buf: false,
        outlier_threshold: cfg.outlier_threshold,
        metrics: cfg.metrics.clone(),
        data_in_flight: 0,
        ranges: RangeTable::new(total),
        parked: VecDeque::with_capacity(total),
        total,
        done_rx,
        tmr: TmrCopy::new(),
        scratch: super::workers::resident(65536 + 512),
        sense: [0; 96],
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
        broken: false,
        deadline: cfg.stop_deadline,
        inline_qd1: cfg.inline_qd1,
        inline_state: WorkerState::new(0),
        last_batch: 0,
        uio_ready: true,
        wake_ready: true,
        tunables_seen: 0,
    };
    let thread = std::thread::Builder::new()
        .name(format!("tcmu-d/{name}"))
        .spawn(move || dt.run())?;
    let monitor = match cfg.health {
        Some(policy) => Some(super::health::start(
            Arc::clone(&link),
            policy,
            cfg.metrics.clone(),
        )?),
        None => None,
    };
    Ok(DeviceHandle {
        link,
        stop,
        thread: Some(thread),
        monitor,
        stats,
    })
}

/// Most data in flight on a device for which READ and WRITE are still submitted from the
/// device thread to a backend whose submit returns at once (see `DeviceThread::dispatch`).
const DIRECT_SUBMIT_MAX_BYTES: u64 = 32 << 20;

enum Route {
    Done(Outcome),
    Worker,
}

impl From<Sense> for Route {
    fn from(s: Sense) -> Route {
        Route::Done(s.into())
    }
}

struct DeviceThread {
    link: Arc<DeviceLink>,
    /// Re-reads the ALUA groups; None: never.
    alua_source: Option<AluaSource>,
    /// When the groups were last read.
    alua_read_at: Instant,
    /// The access state that applies to every command (`Alua::local_state`), cached.
    alua_state: Option<u8>,
    ring: Ring,
    doorbell: Arc<dyn Doorbell>,
    workers: Option<Workers>,
    // Boxed on purpose: a context moves through channels and threads as one pointer.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Ctx>>,
    /// Commands away (worker or backend) and their deadlines, by context slot.
    deadlines: Deadlines,
    free_kept_buf: Option<FreeKeptBuf>,
    /// Scratch lists for deadline scans (preallocated).
    expired: Vec<Expired>,
    stuck: Vec<Expired>,
    warned_no_keep_buf: bool,
    outlier_threshold: Option<Duration>,
    metrics: Option<DeviceMetrics>,
    /// Data-area bytes of the commands read and not yet completed.
    data_in_flight: u64,
    /// LBA ranges held by the commands in flight.
    ranges: RangeTable,
    /// Commands waiting for a range held by another command (see `range_lock`).
    #[allow(clippy::vec_box)]
    parked: VecDeque<Box<Ctx>>,
    total: usize,
    done_rx: Receiver<Box<Ctx>>,
    tmr: TmrCopy,
    scratch: Vec<u8>,
    sense: [u8; 96],
    stats: Arc<DeviceStats>,
    stop: Arc<AtomicBool>,
    broken: bool,
    deadline: Duration,
    inline_qd1: bool,
    /// Buffers for commands run on this thread (READ and WRITE need none).
    inline_state: WorkerState,
    /// Commands read in the last pass over the ring (the recent queue depth).
    last_batch: usize,
    /// poll() reported the uio fd readable: consume the event before draining.
    uio_ready: bool,
    /// poll() reported the wake eventfd readable.
    wake_ready: bool,
    /// The generation of `link.tunables` applied.
    tunables_seen: u64,
}

impl DeviceThread {
    fn run(&mut self) {
        super::workers::warm_thread();
        let name = self.link.name.clone();
        tracing::info!(device = %name, contexts = self.total, "serving");
        let mut stop_by: Option<Instant> = None;
        loop {
            if stop_by.is_none() && self.stop.load(Ordering::SeqCst) {
                stop_by = Some(Instant::now() + self.deadline);
            }
            // Consume the event before draining, so a command posted meanwhile re-arms it.
            // (Only when poll said there is one: an empty read is a wasted system call.)
            if std::mem::take(&mut self.uio_ready) {
                if let Err(e) = self.doorbell.ack() {
                    tracing::warn!(device = %name, "uio read failed: {e}");
                    stop_by.get_or_insert_with(Instant::now);
                }
            }
            if std::mem::take(&mut self.wake_ready) {
                self.link.drain_wake();
            }
            self.reap();
            self.unpark();
            if self.link.tunables.generation() != self.tunables_seen {
                self.retune();
            }
            let now = Instant::now();
            if self.deadlines.scan_due(now) {
                self.expire(now);
            }
            if stop_by.is_none() && !self.broken {
                self.drain_ring();
            }
            self.publish();
            let in_flight = (self.total - self.free.len()) as u64;
            if let Some(m) = &self.metrics {
                m.observe_use(u64::from(self.ring.used_bytes()), self.data_in_flight);
                m.set_in_flight(in_flight);
            }
            self.stats.in_flight.store(in_flight, Ordering::Relaxed);
            self.stats
                .ring_used
                .store(u64::from(self.ring.used_bytes()), Ordering::Relaxed);
            self.stats
                .data_used
                .store(self.data_in_flight, Ordering::Relaxed);
            if in_flight == 0 {
                self.stats.oldest_ms.store(0, Ordering::Relaxed);
            }
            if let Some(t) = stop_by {
                if self.free.len() == self.total {
                    break;
                }
                if Instant::now() >= t {
                    self.give_up_in_flight();
                    if let Some(w) = self.workers.take() {
                        w.abandon();
                    }
                    return;
                }
            }
            self.sleep(stop_by);
        }
        if let Some(w) = self.workers.take() {
            w.stop();
        }
        tracing::info!(device = %name, "stopped");
    }

    /// Apply settings a configuration reload changed.
    fn retune(&mut self) {
        self.tunables_seen = self.link.tunables.generation();
        let v = self.link.tunables.get();
        self.outlier_threshold = v.outlier_threshold;
        self.deadlines.set_limit(v.command_deadline);
        let ms = v
            .command_deadline
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.stats.deadline_ms.store(ms, Ordering::Relaxed);
        tracing::info!(device = %self.link.name, outlier_threshold = ?v.outlier_threshold, deadline = ?v.command_deadline, "new settings in force");
    }

    fn sleep(&mut self, stop_by: Option<Instant>) {
        self.link.set_sleeping(true);
        if !self.done_rx.is_empty() {
            self.link.set_sleeping(false);
            return;
        }
        let mut timeout = stop_by.map_or(1000, |t| {
            t.saturating_duration_since(Instant::now())
                .as_millis()
                .min(1000)
        });
        if self.deadlines.limit().is_some() && self.free.len() < self.total {
            // Commands are away: wake up in time to enforce their deadlines.
            timeout = timeout.min(super::deadline::SCAN_INTERVAL.as_millis());
        }
        let mut fds = [
            libc::pollfd {
                fd: self.doorbell.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.link.wake_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let watch = if stop_by.is_some() {
            &mut fds[1..]
        } else {
            &mut fds[..]
        };
        // SAFETY: `watch` is a valid array of initialised pollfd structs for the whole call.
        let r = unsafe {
            libc::poll(
                watch.as_mut_ptr(),
                watch.len() as libc::nfds_t,
                i32::try_from(timeout).unwrap_or(1000),
            )
        };
        if r < 0 && nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            tracing::warn!(device = %self.link.name, "poll failed: {}", nix::errno::Errno::last());
            std::thread::sleep(Duration::from_millis(10));
        }
        self.uio_ready = stop_by.is_none() && fds[0].revents & libc::POLLIN != 0;
        // `watch` is a sub-slice of `fds`, so the eventfd's result is in fds[1] either way.
        self.wake_ready = fds[1].revents & libc::POLLIN != 0;
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
            && stop_by.is_none()
        {
            tracing::warn!(device = %self.link.name, "uio device went away");
            self.stop.store(true, Ordering::SeqCst);
        }
        self.link.set_sleeping(false);
    }

    fn reap(&mut self) {
        while let Ok(ctx) = self.done_rx.try_recv() {
            self.finish(ctx);
        }
    }

    fn publish(&mut self) {
        if self.ring.publish() {
            self.stats.kicks.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.doorbell.kick() {
                tracing::warn!(device = %self.link.name, "uio write failed: {e}");
            }
        }
    }

    fn drain_ring(&mut self) {
        let mut read = 0;
        while let Some(mut ctx) = self.free.pop() {
            match self.ring.next(&mut ctx.cmd, &mut self.tmr) {
                None => {
                    self.free.push(ctx);
                    if read > 0 {
                        self.last_batch = read;
                    }
                    return;
                }
                Some(Ok(Entry::Cmd)) => {
                    read += 1;
                    self.stats.commands.fetch_add(1, Ordering::Relaxed);
                    ctx.stamps = Stamps::default();
                    ctx.class = OpClass::Other;
                    self.data_in_flight += ctx.cmd.data_len();
                    if self.link.accounting {
                        ctx.stamps.read = Some(Instant::now());
                    }
                    self.start(ctx);
                }
                Some(Ok(Entry::BadCmd { cmd_id, why })) => {
                    self.stats.commands.fetch_add(1, Ordering::Relaxed);
                    self.stats.bad_entries.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(device = %self.link.name, cmd_id, "invalid ring entry: {why}");
                    ctx.cmd.cmd_id = cmd_id;
                    ctx.done(Sense::internal_target_failure().into());
                    self.finish(ctx);
                }
                Some(Ok(Entry::Tmr)) => {
                    self.stats.tmrs.fetch_add(1, Ordering::Relaxed);
                    if let Some(m) = &self.metrics {
                        m.tmr(tmr_name(self.tmr.tmr_type));
                    }
                    tracing::info!(device = %self.link.name, tmr_type = self.tmr.tmr_type, ids = ?self.tmr.cmd_ids, "task management notification");
                    self.free.push(ctx);
                    self.abort_named();
                }
                Some(Err(e)) => {
                    self.free.push(ctx);
                    self.broken = true;
                    self.stats.broken.store(true, Ordering::SeqCst);
                    tracing::error!(device = %self.link.name, "ring is corrupt, no longer reading it (reset the ring to recover): {e}");
                    return;
                }
            }
        }
        self.stats.pool_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    fn start(&mut self, mut ctx: Box<Ctx>) {
        match self.route(&mut ctx) {
            Route::Done(outcome) => {
                self.stats.emulated.fetch_add(1, Ordering::Relaxed);
                ctx.done(outcome);
                self.finish(ctx);
            }
            Route::Worker => {
                let opcode = ctx.cmd.cdb().first().copied().unwrap_or(0);
                self.deadlines.dispatched(
                    ctx.slot,
                    ctx.cmd.cmd_id,
                    &ctx.cdb,
                    opcode,
                    Instant::now(),
                );
                // A flag left by a TMR for this slot's previous command must not abort this one.
                if let Some(f) = self.link.aborted.get(usize::from(ctx.slot)) {
                    f.store(false, Ordering::Relaxed);
                }
                if !self.take_range(&mut ctx) {
                    self.parked.push_back(ctx);
                    return;
                }
                if self.inline_now(&ctx) {
                    // Completes through the done channel like a worker would; reap it now.
                    let job = Job {
                        ctx,
                        link: Arc::clone(&self.link),
                    };
                    super::exec::run(job, &mut self.inline_state);
                    self.reap();
                } else {
                    self.dispatch(ctx);
                }
            }
        }
    }

    /// A TMR (ABORT TASK, LUN RESET, ...) names commands already in the ring: cancel the work
    /// that has not started. A command parked for its LBA range is completed at once with
    /// TASK ABORTED; one queued for a worker is flagged, and the worker completes it without
    /// running it. A command already in the backend finishes normally (the kernel accepts any
    /// status for an aborted command); ids already completed are ignored.
    fn abort_named(&mut self) {
        let mut cancelled = 0usize;
        for i in 0..self.tmr.cmd_ids.len() {
            let id = self.tmr.cmd_ids[i];
            if let Some(pos) = self.parked.iter().position(|c| c.cmd.cmd_id == id) {
                if let Some(mut ctx) = self.parked.remove(pos) {
                    ctx.done(ScsiError::TaskAborted.into());
                    self.finish(ctx);
                    cancelled += 1;
                }
            } else if let Some(slot) = self.deadlines.slot_of(id) {
                if let Some(flag) = self.link.aborted.get(usize::from(slot)) {
                    flag.store(true, Ordering::SeqCst);
                    cancelled += 1;
                }
            }
        }
        if cancelled > 0 {
            tracing::info!(device = %self.link.name, cancelled, "aborted commands cancelled before they reached the backend");
        }
        self.publish();
    }

    /// Whether to run this command here rather than on a worker: a READ or WRITE at queue
    /// depth 1 (the last pass read one command and nothing else is away) on a backend whose
    /// submit completes inline. At QD1 the initiator waits for each command, so nothing queues
    /// behind it, and it saves the two hand-offs device thread → worker → device thread that
    /// dominate latency. Deeper queues always go to the workers.
    fn inline_now(&self, ctx: &Ctx) -> bool {
        let away = self.total - self.free.len() - self.parked.len();
        self.inline_qd1
            && self.last_batch <= 1
            && away <= 1
            && matches!(ctx.cdb, Cdb::Read(_) | Cdb::Write(_))
            && self.link.backend().completes_inline()
    }

    /// Start a command that needs the backend: a READ or WRITE on a backend whose submit
    /// returns at once is submitted from here (it completes through the done channel like a
    /// worker's, and the aborted flag was just cleared by `start` or is checked by
    /// `exec::run`); anything else goes to a worker. Saves the hand-off device thread →
    /// worker per command, and the worker's wake-up, for asynchronous backends.
    ///
    /// Only while the data in flight stays under [`DIRECT_SUBMIT_MAX_BYTES`]: beyond that a
    /// library may throttle (librbd's objecter blocks the caller past ~100 MiB in flight),
    /// and a throttled call must block a worker, never the device thread, which completes
    /// everything else and enforces the deadlines.
    fn dispatch(&mut self, ctx: Box<Ctx>) {
        if matches!(ctx.cdb, Cdb::Read(_) | Cdb::Write(_))
            && self.data_in_flight <= DIRECT_SUBMIT_MAX_BYTES
            && self.link.backend().submit_returns_at_once()
        {
            let job = Job {
                ctx,
                link: Arc::clone(&self.link),
            };
            super::exec::run(job, &mut self.inline_state);
        } else {
            self.send(ctx);
        }
    }

    fn send(&self, ctx: Box<Ctx>) {
        if let Some(w) = &self.workers {
            w.send(Job {
                ctx,
                link: Arc::clone(&self.link),
            });
        }
    }

    /// Take the LBA range the command needs, if any; false if another command holds it.
    fn take_range(&mut self, ctx: &mut Ctx) -> bool {
        let Some((lba, blocks, exclusive)) = range_of(&ctx.cdb) else {
            return true;
        };
        if !self.ranges.try_acquire(ctx.slot, lba, blocks, exclusive) {
            return false;
        }
        ctx.range_locked = true;
        true
    }

    /// Dispatch parked commands whose ranges are free now, oldest first.
    fn unpark(&mut self) {
        for _ in 0..self.parked.len() {
            let Some(mut ctx) = self.parked.pop_front() else {
                break;
            };
            if self.take_range(&mut ctx) {
                self.dispatch(ctx);
            } else {
                self.parked.push_back(ctx);
            }
        }
    }

    /// Decode and check a command; answer it here or send it to a worker.
    fn route(&mut self, ctx: &mut Ctx) -> Route {
        let c = match cdb::decode(ctx.cmd.cdb()) {
            Ok(c) => c,
            Err(s) => return s.into(),
        };
        // INQUIRY and REQUEST SENSE never report a UNIT ATTENTION (SPC-4 5.14).
        if !matches!(c, Cdb::Inquiry { .. } | Cdb::RequestSense { .. }) {
            if let Some(ua) = self.link.take_unit_attention() {
                return ua.sense().into();
            }
        }
        if self.alua_source.is_some() {
            let fresh = matches!(c, Cdb::ReportTargetPortGroups { .. } | Cdb::Inquiry { .. });
            if fresh || self.alua_read_at.elapsed() >= ALUA_REFRESH {
                self.refresh_alua();
            }
        }
        // Commands the LUN's target port group state does not allow (SPC-4 5.15.2.4).
        if let Err(s) = tcmu_scsi::alua::check_state(self.alua_state, &c) {
            return s.into();
        }
        ctx.class = class_of(&c);
        let mut c = c;
        let r = match c {
            Cdb::ModeSelect {
                ten,
                pf,
                sp,
                param_len,
            } => self.mode_select(ctx, ten, pf, sp, param_len),
            Cdb::Read(_)
            | Cdb::Write(_)
            | Cdb::WriteAndVerify { .. }
            | Cdb::Verify { .. }
            | Cdb::SyncCache { .. }
            | Cdb::Unmap { .. }
            | Cdb::WriteSame { .. }
            | Cdb::CompareAndWrite { .. } => self.check_data_command(ctx, &mut c),
            // A path checker (multipathd's tur) sees a lost backend as a path in transition.
            Cdb::TestUnitReady if self.link.health.is_lost() => {
                Sense::not_ready_in_transition().into()
            }
            _ => self.emulate(ctx, &c),
        };
        ctx.cdb = c;
        r
    }

    /// Read the ALUA groups again and put them in force; a change of the LUN's access state
    /// is logged.
    fn refresh_alua(&mut self) {
        let Some(src) = &self.alua_source else { return };
        let alua = (src.0)();
        self.alua_read_at = Instant::now();
        let state = alua.as_ref().and_then(tcmu_scsi::alua::Alua::local_state);
        if state != self.alua_state {
            tracing::info!(device = %self.link.name, from = ?self.alua_state.map(tcmu_scsi::alua::state_name),
                to = ?state.map(tcmu_scsi::alua::state_name), "ALUA access state of the LUN's target port group changed");
            self.alua_state = state;
        }
        let mut lun = self.link.lun.write();
        if lun.alua != alua {
            lun.alua = alua;
        }
    }

    /// Range, limit and length checks of a data command; it goes to a worker when they pass.
    /// While the backend is lost it fails at once with the retryable NOT READY 04/0A.
    fn check_data_command(&self, ctx: &Ctx, c: &mut Cdb) -> Route {
        if self.link.health.is_lost() {
            self.link.health.failed_fast.fetch_add(1, Ordering::Relaxed);
            return Sense::not_ready_in_transition().into();
        }
        let lun = self.link.lun.read();
        if let Err(s) = lun.validate(c) {
            return s.into();
        }
        let have = ctx.cmd.data_len();
        // The fabric's buffer against the CDB's length, as LIO decides (a READ gets what fits).
        if let Err(s) = tcmu_scsi::transfer::check_buffer(c, lun.block_size, have) {
            return s.into();
        }
        match c {
            Cdb::Read(rw) | Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } if rw.blocks == 0 => {
                Route::Done(Outcome::GOOD)
            }
            Cdb::Read(_) if have == 0 => Route::Done(Outcome::GOOD),
            Cdb::Verify { blocks: 0, .. }
            | Cdb::CompareAndWrite { blocks: 0, .. }
            | Cdb::Unmap { param_len: 0, .. } => Route::Done(Outcome::GOOD),
            Cdb::WriteSame { lba, blocks, .. } if *blocks == 0 => {
                // WSNZ=0: zero blocks means "to the end of the medium", within the limit.
                let rest = lun.num_blocks.saturating_sub(*lba);
                match u32::try_from(rest) {
                    Ok(n)
                        if n > 0
                            && (lun.max_write_same_blocks == 0
                                || u64::from(n) <= lun.max_write_same_blocks) =>
                    {
                        *blocks = n;
                        Route::Worker
                    }
                    Ok(0) => Sense::lba_out_of_range().into(),
                    _ => Sense::invalid_field_in_cdb_unknown().into(),
                }
            }
            _ => Route::Worker,
        }
    }

    fn mode_select(&mut self, ctx: &Ctx, ten: bool, pf: bool, sp: bool, param_len: u16) -> Route {
        let n = usize::from(param_len).min(self.scratch.len());
        let got = self
            .link
            .data
            .copy_to_slice(ctx.cmd.data_out(), 0, &mut self.scratch[..n]);
        if got < n {
            return Sense::param_list_length_error().into();
        }
        let changes = {
            let lun = self.link.lun.read();
            params::mode_select(ten, pf, sp, &self.scratch[..n], &lun)
        };
        match changes {
            Ok(ch) => {
                if let Some(wce) = ch.write_cache {
                    self.link.lun.write().write_cache = wce;
                    tracing::info!(device = %self.link.name, write_cache = wce, "MODE SELECT changed the write cache");
                }
                Route::Done(Outcome::GOOD)
            }
            Err(s) => s.into(),
        }
    }

    /// Answer a command that needs no backend into its Data-In buffer.
    fn emulate(&mut self, ctx: &Ctx, c: &Cdb) -> Route {
        let full = {
            let lun = self.link.lun.read();
            match tcmu_scsi::emulate::respond(c, &lun, &mut self.scratch) {
                Ok(n) => n,
                Err(s) => return s.into(),
            }
        };
        let have = ctx.cmd.data_len();
        let want = cdb::data_in_len(c, 512).min(have);
        let n = u64::try_from(full)
            .unwrap_or(u64::MAX)
            .min(want)
            .min(self.scratch.len() as u64);
        let nu = usize::try_from(n).unwrap_or(0);
        self.link
            .data
            .copy_from_slice(ctx.cmd.data_out(), 0, &self.scratch[..nu]);
        let read_len = if n < have {
            // Never leave stale data from earlier commands in the buffer.
            self.link.data.fill(ctx.cmd.data_out(), n, have - n, 0);
            u32::try_from(n).ok()
        } else {
            None
        };
        Route::Done(Outcome {
            status: status::GOOD,
            sense: None,
            read_len,
        })
    }

    /// Complete the commands past their deadline with the retryable status a backend
    /// timeout gets (ETIMEDOUT: NOT READY, asymmetric access state transition, which Linux
    /// retries and multipath may fail over), keeping their data blocks; report the ones still
    /// stuck a whole deadline later.
    fn expire(&mut self, now: Instant) {
        let (mut expired, mut stuck) = (
            std::mem::take(&mut self.expired),
            std::mem::take(&mut self.stuck),
        );
        expired.clear();
        stuck.clear();
        let oldest = self.deadlines.scan(now, &mut expired, &mut stuck);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.stats
            .oldest_ms
            .store(oldest.map_or(0, |o| ms(o.age).max(1)), Ordering::Relaxed);
        if let Some(o) = oldest {
            self.stats.oldest_opcode.store(o.opcode, Ordering::Relaxed);
            self.stats.oldest_lba.store(o.lba, Ordering::Relaxed);
        }
        let can_keep = self.ring.caps().keep_buf && self.free_kept_buf.is_some();
        for e in &expired {
            // Parked behind another command's range: it never reached the backend, so it can
            // be completed now and dropped; running it later would be a late write the
            // initiator was told had failed.
            if let Some(pos) = self.parked.iter().position(|c| c.slot == e.slot) {
                if let Some(mut ctx) = self.parked.remove(pos) {
                    ctx.done(Outcome::error(ScsiError::from_errno(libc::ETIMEDOUT, true)));
                    self.count_expiry(
                        e,
                        "parked behind a command on the same blocks, never sent to the backend",
                    );
                    self.finish(ctx);
                }
                continue;
            }
            if !can_keep {
                if !self.warned_no_keep_buf {
                    self.warned_no_keep_buf = true;
                    tracing::error!(device = %self.link.name, "a command passed its deadline, but without KEEP_BUF and free_kept_buf it cannot be completed early safely; waiting for the backend");
                }
                continue;
            }
            let outcome = Outcome::error(ScsiError::from_errno(libc::ETIMEDOUT, true));
            let mut rsp = outcome.response(&mut self.sense);
            rsp.keep_buf = true;
            match self.ring.complete(e.id, &rsp) {
                Ok(()) => {
                    self.deadlines.mark_completed(e.slot, true, now);
                    // Not started by a worker yet: it completes without running.
                    if let Some(f) = self.link.aborted.get(usize::from(e.slot)) {
                        f.store(true, Ordering::SeqCst);
                    }
                    // It may still land: no later command may write its blocks before it
                    // returns (the initiator's retry, or a newer write, would be overwritten).
                    self.ranges.fence(e.slot);
                    if e.opcode == tcmu_scsi::opcodes::COMPARE_AND_WRITE {
                        self.link.caw.expired(e.slot, e.lba, now);
                    }
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.count_expiry(e, "backend did not answer in time: completed with a retryable status, data blocks kept and writes to them held until it does");
                }
                Err(err) => {
                    tracing::error!(device = %self.link.name, cmd_id = e.id, "cannot complete at the deadline: {err}")
                }
            }
        }
        for e in &stuck {
            self.stats.stuck.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.stuck_command();
            }
            tracing::error!(device = %self.link.name, cmd_id = e.id, opcode = format_args!("{:#04x}", e.opcode), lba = e.lba,
                age_ms = u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX), "command still stuck in the backend");
        }
        self.expired = expired;
        self.stuck = stuck;
        self.publish();
    }

    fn count_expiry(&self, e: &super::deadline::Expired, what: &str) {
        self.stats.deadline_expired.fetch_add(1, Ordering::Relaxed);
        self.link.health.note_expired();
        if let Some(m) = &self.metrics {
            m.deadline_expired("handler");
        }
        tracing::warn!(device = %self.link.name, cmd_id = e.id, opcode = format_args!("{:#04x}", e.opcode), lba = e.lba,
            age_ms = u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX),
            deadline_ms = self.deadlines.limit().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "{what}");
    }

    /// At the stop deadline: complete every command still with a worker or the backend with
    /// BUSY, so the initiator retries it elsewhere or later instead of waiting for the
    /// kernel's timeout. With KEEP_BUF the kernel keeps their data blocks until the uio fd
    /// closes, and the fd stays open (the link holds it) until the last late I/O returns, so a
    /// late backend transfer can never land in a block the kernel gave to another command.
    fn give_up_in_flight(&mut self) {
        let keep_buf = self.ring.caps().keep_buf;
        let mut n = 0;
        let now = Instant::now();
        let away: Vec<(u16, u16)> = self.deadlines.away().collect();
        for (slot, id) in away {
            self.deadlines.mark_completed(slot, keep_buf, now);
            let rsp = tcmu_ring::Response {
                status: status::BUSY,
                sense: None,
                read_len: None,
                keep_buf,
            };
            match self.ring.complete(id, &rsp) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::error!(device = %self.link.name, cmd_id = id, "cannot complete at stop: {e}")
                }
            }
        }
        self.publish();
        tracing::error!(device = %self.link.name, completed_busy = n, keep_buf, "stop deadline passed: commands still in the backend were completed with BUSY");
    }

    /// Write a finished command's outcome to the ring and recycle its context.
    fn finish(&mut self, mut ctx: Box<Ctx>) {
        if let Returned::AlreadyCompleted { id, kept } = self.deadlines.returned(ctx.slot) {
            // Completed at its deadline: the late backend completion only releases the
            // data blocks the kernel kept for it.
            if ctx.range_locked {
                self.ranges.release(ctx.slot);
                ctx.range_locked = false;
            }
            if kept {
                if let Some(f) = &self.free_kept_buf {
                    if let Err(e) = (f.0)(id) {
                        tracing::error!(device = %self.link.name, cmd_id = id, "free_kept_buf failed: {e}");
                    }
                }
            }
            tracing::info!(device = %self.link.name, cmd_id = id, "late backend completion of an expired command");
            self.free.push(ctx);
            return;
        }
        if ctx.range_locked {
            self.ranges.release(ctx.slot);
            ctx.range_locked = false;
        }
        let outcome = match ctx.stage {
            Stage::Done => ctx.outcome,
            Stage::Backend { is_write, read_len } => match ctx.backend_result {
                Ok(()) => Outcome {
                    status: status::GOOD,
                    sense: None,
                    read_len,
                },
                Err(e) => {
                    self.link.health.note_error(e);
                    ScsiError::from_errno(e as i32, is_write).into()
                }
            },
        };
        if outcome.status != status::GOOD {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(device = %self.link.name, cmd_id = ctx.cmd.cmd_id, cdb = ?ctx.cmd.cdb(), ?outcome, "command failed");
        }
        let rsp = outcome.response(&mut self.sense);
        match self.ring.complete(ctx.cmd.cmd_id, &rsp) {
            Ok(()) => {
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(device = %self.link.name, cmd_id = ctx.cmd.cmd_id, "completion refused by the ring: {e}")
            }
        }
        self.data_in_flight = self.data_in_flight.saturating_sub(ctx.cmd.data_len());
        self.account(&ctx, outcome.status);
        self.free.push(ctx);
    }

    /// Per-stage times of a finished command; an outlier is kept and logged.
    fn account(&self, ctx: &Ctx, status: u8) {
        let Some(read) = ctx.stamps.read else { return };
        let now = Instant::now();
        if let Some(m) = &self.metrics {
            let submit = ctx.stamps.submit.unwrap_or(read);
            let done = ctx.stamps.done.unwrap_or(submit);
            let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            let outcome = match status {
                status::GOOD => OutcomeClass::Good,
                status::CHECK_CONDITION => OutcomeClass::CheckCondition,
                status::BUSY => OutcomeClass::Busy,
                _ => OutcomeClass::Other,
            };
            let (bytes, good) = (ctx.cmd.data_len(), status == status::GOOD);
            let (read_bytes, written) = match ctx.class {
                OpClass::Read | OpClass::Emulated if good => (bytes, 0),
                OpClass::Write | OpClass::WriteSame | OpClass::CompareAndWrite if good => {
                    (0, bytes)
                }
                _ => (0, 0),
            };
            m.command_done(
                ctx.class,
                outcome,
                read_bytes,
                written,
                ns(submit.saturating_duration_since(read)),
                ns(done.saturating_duration_since(submit)),
                ns(now.saturating_duration_since(done)),
            );
        }
        let Some(threshold) = self.outlier_threshold else {
            return;
        };
        if now.saturating_duration_since(read) < threshold {
            return;
        }
        // An outlier: only now is the record built (the common path is two clock reads).
        let submit = ctx.stamps.submit.unwrap_or(read);
        let done = ctx.stamps.done.unwrap_or(submit);
        let o = super::outliers::Outlier {
            at: std::time::SystemTime::now(),
            cmd_id: ctx.cmd.cmd_id,
            opcode: ctx.cmd.cdb().first().copied().unwrap_or(0),
            lba: super::deadline::lba_of(&ctx.cdb),
            bytes: ctx.cmd.data_len(),
            handler: submit.saturating_duration_since(read),
            backend: done.saturating_duration_since(submit),
            publish: now.saturating_duration_since(done),
            status,
        };
        self.stats.outliers.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.outlier();
        }
        self.stats.recent_outliers.record(o);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::warn!(
            device = %self.link.name,
            backend = %self.link.backend().describe(),
            cmd_id = o.cmd_id,
            opcode = format_args!("{:#04x}", o.opcode),
            lba = o.lba,
            bytes = o.bytes,
            total_ms = ms(o.total()),
            handler_ms = ms(o.handler),
            backend_ms = ms(o.backend),
            publish_ms = ms(o.publish),
            status = format_args!("{:#04x}", o.status),
            "outlier"
        );
    }
}

/// The metrics label of a TMR type.
fn tmr_name(t: u8) -> &'static str {
    use tcmu_sys::tmr;
    match t {
        tmr::ABORT_TASK => "abort_task",
        tmr::ABORT_TASK_SET => "abort_task_set",
        tmr::CLEAR_ACA => "clear_aca",
        tmr::CLEAR_TASK_SET => "clear_task_set",
        tmr::LUN_RESET => "lun_reset",
        tmr::TARGET_WARM_RESET => "target_warm_reset",
        tmr::TARGET_COLD_RESET => "target_cold_reset",
        tmr::LUN_RESET_PRO => "lun_reset_pro",
        _ => "unknown",
    }
}

/// The metrics class of a decoded command.
fn class_of(cdb: &Cdb) -> OpClass {
    match cdb {
        Cdb::Read(_) => OpClass::Read,
        Cdb::Write(_) => OpClass::Write,
        Cdb::SyncCache { .. } => OpClass::Flush,
        Cdb::Unmap { .. } => OpClass::Unmap,
        Cdb::WriteSame { .. } => OpClass::WriteSame,
        Cdb::CompareAndWrite { .. } => OpClass::CompareAndWrite,
        Cdb::Verify { .. } | Cdb::WriteAndVerify { .. } => OpClass::Verify,
        _ => OpClass::Emulated,
    }
}
