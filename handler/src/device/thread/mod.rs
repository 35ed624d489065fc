//! One device as its event loop serves it ([`super::loops`]: a few loops serve every LUN).
//! At each pass, when the kernel's doorbell rings, a completion arrives or a timer falls due,
//! it reaps completions, enforces deadlines, drains the ring, and publishes completions to
//! the kernel in batches; nothing in a pass blocks. ("The device thread" in comments and
//! docs is the loop thread serving the device.) What it does with each command lives beside
//! it:
//!
//! - `commands.rs`: routing a command (the pure decisions of [`super::dispatch`] applied to
//!   this device's state), parking, and handing it to the backend or a worker;
//! - `expiry.rs`: completing commands at their deadline and at the stop deadline;
//! - [`super::uring`]: READ, WRITE and SYNCHRONIZE CACHE on a file, submitted and reaped
//!   here through the device's own io_uring;
//! - [`super::accounting`]: counters, stage times and outliers of finished commands.

mod commands;
mod expiry;

use super::accounting::Accounting;
use super::context::{Ctx, CtxPool, Outcome, Stage, Stamps};
use super::deadline::{Deadlines, Expired, Returned};
use super::exec::WorkerState;
use super::handle::{AluaSource, DeviceConfig, FreeKeptBuf};
use super::health::Monitor;
use super::link::DeviceLink;
use super::range_lock::RangeTable;
use super::stats::DeviceStats;
use super::uring::Uring;
use super::warm;
use super::workers::Workers;
use crossbeam_channel::Receiver;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::{Doorbell, Entry, Ring, TmrCopy};
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::sense::Sense;
use tcmu_scsi::status;
use tcmu_warden_supervisor::metrics::OpClass;

/// Most data in flight on a device for which READ and WRITE are still submitted from the
/// device thread to a backend whose submit returns at once (see `LoopDevice::dispatch`).
const DIRECT_SUBMIT_MAX_BYTES: u64 = 32 << 20;

/// Longest an idle device goes without a pass (it then samples its gauges and notices a
/// configuration reload).
const IDLE_PASS: Duration = Duration::from_secs(1);
/// Data bytes read from the ring in one pass after which what is finished is published at
/// once, before the rest of the ring is drained.
const EARLY_PUBLISH_BYTES: u64 = 256 * 1024;

/// What a device needs from its loop, besides the ring and the link (see [`new`]).
pub(in crate::device) struct Parts {
    pub ring: Ring,
    pub doorbell: Arc<dyn Doorbell>,
    pub link: Arc<DeviceLink>,
    pub workers: Workers,
    pub total: usize,
    pub done_rx: Receiver<Box<Ctx>>,
    pub stats: Arc<DeviceStats>,
    pub stop: Arc<AtomicBool>,
    /// The backend's health monitor, ticked by the loop (None: not monitored).
    pub monitor: Option<Monitor>,
    /// Told when the device has left its loop.
    pub exit: Arc<Exit>,
}

/// The state of one device served by an event loop ([`super::loops`]), with `total`
/// preallocated contexts.
pub(in crate::device) fn new(p: Parts, cfg: &DeviceConfig) -> LoopDevice {
    let Parts {
        ring,
        doorbell,
        link,
        workers,
        total,
        done_rx,
        stats,
        stop,
        monitor,
        exit,
    } = p;
    let free = CtxPool::new(total);
    let alua_base = link.lun.read().alua.clone();
    let alua_state = alua_base
        .as_ref()
        .and_then(tcmu_scsi::alua::Alua::local_state);
    let alua_unread = cfg.alua.is_some() && alua_base.is_none();
    let uring = if cfg.io_uring {
        open_uring(&link.name, total)
    } else {
        None
    };
    LoopDevice {
        alua_source: cfg.alua.clone(),
        alua_base,
        alua_sink: cfg.alua_sink.clone(),
        alua_sent: Vec::new(),
        // Groups not read yet (the daemon leaves them to the device): read before the
        // first command.
        alua_read_at: if alua_unread {
            Instant::now()
                .checked_sub(super::handle::ALUA_REFRESH)
                .unwrap_or_else(Instant::now)
        } else {
            Instant::now()
        },
        alua_state,
        now: Instant::now(),
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
        data_in_flight: 0,
        ranges: RangeTable::new(total),
        parked: VecDeque::with_capacity(total),
        total,
        done_rx,
        tmr: TmrCopy::new(),
        scratch: warm::resident(65536 + 512),
        sense: [0; 96],
        acct: Accounting {
            stats,
            outlier_threshold: cfg.outlier_threshold,
            exported: cfg.metrics.is_some(),
        },
        stop,
        stop_by: None,
        broken: false,
        deadline: cfg.stop_deadline,
        inline_state: WorkerState::new(0),
        uring,
        last_batch: 0,
        pass_bytes: 0,
        uio_ready: true,
        wake_ready: true,
        // The values in force at start are the configuration's (`spawn` published them).
        tunables_seen: link.tunables.generation(),
        monitor,
        logged_start: false,
        exit: ExitGuard(exit),
    }
}

/// How a device left its loop, for whoever joins it (`DeviceHandle::join`).
#[derive(Default)]
pub struct Exit {
    done: Mutex<bool>,
    ended: Condvar,
    /// The device's lane in the worker pool, closed by the joiner (it may wait, boundedly,
    /// for jobs still on threads: never on a loop thread).
    workers: Mutex<Option<Workers>>,
}

impl Exit {
    /// Whether the device has left its loop.
    pub fn is_done(&self) -> bool {
        *self.done.lock()
    }

    /// Wait until the device has left its loop (its stop is bounded by its stop deadline),
    /// then close its lane in the worker pool.
    pub fn wait(&self) {
        let mut d = self.done.lock();
        while !*d {
            self.ended.wait(&mut d);
        }
        drop(d);
        if let Some(w) = self.workers.lock().take() {
            w.stop();
        }
    }
}

/// Marks the device's [`Exit`] done when dropped: declared last in [`LoopDevice`], so
/// everything else of the device (its ring, its link) is dropped first, even on unwinding.
struct ExitGuard(Arc<Exit>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        *self.0.done.lock() = true;
        self.0.ended.notify_all();
    }
}

/// When a device wants its next pass, decided after a pass.
#[derive(Debug, Clone, Copy)]
pub(in crate::device) struct NextPass {
    /// Work is waiting that no event will announce: pass again without waiting.
    pub again: bool,
    /// Pass at this time at the latest (deadlines, the stop deadline, health ticks).
    pub at: Instant,
}

/// One device on an event loop: its ring, the commands it has away, and what it does at
/// each pass. The loop waits for its events ([`LoopDevice::fds`]); see docs/DESIGN.md,
/// "Threads".
pub(in crate::device) struct LoopDevice {
    link: Arc<DeviceLink>,
    /// Re-reads the ALUA groups; None: never.
    alua_source: Option<AluaSource>,
    /// The groups as configured (before the lock-driven states, `tcmu_scsi::alua::lock_driven`).
    alua_base: Option<tcmu_scsi::alua::Alua>,
    /// Where lock-driven states are written back.
    alua_sink: Option<super::handle::AluaSink>,
    /// The last changes handed to the sink (not handed again while configfs catches up).
    alua_sent: Vec<(String, u8)>,
    /// When the groups were last read.
    alua_read_at: Instant,
    /// The access state that applies to every command (`Alua::local_state`), cached.
    alua_state: Option<u8>,
    /// The pass's clock: read when a pass starts and again after its io_uring submission;
    /// every stamp, deadline and timer of the pass uses it (docs/DESIGN.md, "The pass's
    /// clock": a clock read is a system call in the guests we measure).
    now: Instant,
    ring: Ring,
    doorbell: Arc<dyn Doorbell>,
    workers: Option<Workers>,
    /// Contexts available (allocated as the queue depth grows).
    free: CtxPool,
    /// Commands away (worker or backend) and their deadlines, by context slot.
    deadlines: Deadlines,
    free_kept_buf: Option<FreeKeptBuf>,
    /// Scratch lists for deadline scans (preallocated).
    expired: Vec<Expired>,
    stuck: Vec<Expired>,
    warned_no_keep_buf: bool,
    /// Data-area bytes of the commands read whose context has not come back: added when a
    /// command is read, subtracted when its context returns to the free list, whether it
    /// completes normally, is parked and expires, or comes back late after its deadline
    /// (its blocks were kept for it until then).
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
    /// Counters, Prometheus series and the outlier log.
    acct: Accounting,
    stop: Arc<AtomicBool>,
    broken: bool,
    deadline: Duration,
    /// Buffers for commands submitted from this thread (READ and WRITE need none).
    inline_state: WorkerState,
    /// The device's io_uring for file I/O (None: unavailable or turned off).
    uring: Option<Uring>,
    /// Commands read in the last pass over the ring (the recent queue depth).
    last_batch: usize,
    /// Data bytes of the commands read since the last early publish (see `drain_ring`).
    pass_bytes: u64,
    /// poll() reported the uio fd readable: consume the event before draining.
    uio_ready: bool,
    /// poll() reported the wake eventfd readable.
    wake_ready: bool,
    /// The generation of `link.tunables` applied.
    tunables_seen: u64,
    /// Set when a stop was asked: when the commands still away are given up.
    stop_by: Option<Instant>,
    /// The backend's health monitor (its probes run on the shared probers).
    monitor: Option<Monitor>,
    /// "serving" was logged.
    logged_start: bool,
    /// Last: see [`ExitGuard`].
    exit: ExitGuard,
}

impl LoopDevice {
    /// The descriptors the loop waits on: the uio device (the kernel's doorbell; not
    /// watched once stopping), the wake eventfd (completions from other threads, stop
    /// requests, probe results) and the io_uring (completions).
    pub(in crate::device) fn fds(&self) -> [Option<RawFd>; 3] {
        [
            Some(self.doorbell.raw_fd()),
            Some(self.link.wake_fd().as_raw_fd()),
            self.uring.as_ref().map(Uring::fd),
        ]
    }

    /// Whether the loop should watch the uio device (not once stopping).
    pub(in crate::device) fn watches_uio(&self) -> bool {
        self.stop_by.is_none()
    }

    /// The loop saw the uio device readable (`hangup`: it went away or failed).
    pub(in crate::device) fn uio_event(&mut self, readable: bool, hangup: bool) {
        if hangup && self.stop_by.is_none() {
            tracing::warn!(device = %self.link.name, "uio device went away");
            self.stop.store(true, Ordering::SeqCst);
        }
        self.uio_ready |= readable && self.stop_by.is_none();
    }

    /// The loop saw the wake eventfd readable.
    pub(in crate::device) fn wake_event(&mut self) {
        self.wake_ready = true;
    }

    /// One pass: take the doorbell, reap completions, enforce deadlines, drain the ring,
    /// submit to the io_uring, publish. Never blocks. True when the device has stopped and
    /// leaves its loop.
    pub(in crate::device) fn pass(&mut self) -> bool {
        self.now = Instant::now();
        self.link.set_sleeping(false);
        if !self.logged_start {
            self.logged_start = true;
            tracing::info!(device = %self.link.name, contexts = self.total, "serving");
        }
        if self.stop_by.is_none() && self.stop.load(Ordering::SeqCst) {
            self.stop_by = Some(self.now + self.deadline);
        }
        // Consume the event before draining, so a command posted meanwhile re-arms it.
        // (Only when the loop said there is one: an empty read is a wasted system call.)
        if std::mem::take(&mut self.uio_ready) {
            if let Err(e) = self.doorbell.ack() {
                tracing::warn!(device = %self.link.name, "uio read failed: {e}");
                self.stop_by.get_or_insert(self.now);
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
        let now = self.now;
        if self.deadlines.scan_due(now) {
            self.expire(now);
        }
        if self.stop_by.is_none() && !self.broken {
            self.drain_ring();
        }
        if let Some(u) = &mut self.uring {
            // One system call for every operation this pass queued; the ones the page
            // cache answered at once are finished in the same pass.
            let submitted = u.submit();
            if submitted || u.in_flight() > 0 || u.has_work() {
                // The clock after the file I/O of the pass: the completion stamps.
                self.now = Instant::now();
            }
            self.reap_uring();
        }
        self.publish();
        let in_flight = (self.total - self.free.len()) as u64;
        self.acct.observe(
            in_flight,
            u64::from(self.ring.used_bytes()),
            self.data_in_flight,
        );
        if let Some(m) = &mut self.monitor {
            m.tick(self.now);
        }
        if let Some(t) = self.stop_by {
            if self.free.len() == self.total {
                if let Some(w) = self.workers.take() {
                    *self.exit.0.workers.lock() = Some(w);
                }
                tracing::info!(device = %self.link.name, "stopped");
                return true;
            }
            if self.now >= t {
                self.give_up_in_flight();
                if let Some(w) = self.workers.take() {
                    w.abandon();
                }
                if let Some(u) = self.uring.take() {
                    u.abandon(&self.link.name);
                }
                return true;
            }
        }
        false
    }

    /// After a pass: announce that the device waits (completions from other threads then
    /// write its wake eventfd) and say when it wants its next pass.
    pub(in crate::device) fn next_pass(&mut self) -> NextPass {
        let now = self.now;
        self.link.set_sleeping(true);
        if !self.done_rx.is_empty() || self.uring.as_mut().is_some_and(Uring::has_work) {
            self.link.set_sleeping(false);
            return NextPass {
                again: true,
                at: now,
            };
        }
        let mut at = now + IDLE_PASS;
        if let Some(t) = self.stop_by {
            at = at.min(t);
        }
        if self.deadlines.limit().is_some() && self.free.len() < self.total {
            // Commands are away: wake up in time to enforce their deadlines.
            at = at.min(self.deadlines.next_scan().max(now));
        }
        if let Some(m) = &self.monitor {
            at = at.min(m.next_tick());
        }
        NextPass { again: false, at }
    }

    /// Apply settings a configuration reload changed.
    fn retune(&mut self) {
        self.tunables_seen = self.link.tunables.generation();
        let v = self.link.tunables.get();
        self.acct.outlier_threshold = v.outlier_threshold;
        self.deadlines.set_limit(v.command_deadline);
        let ms = v
            .command_deadline
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.acct.stats.deadline_ms.store(ms, Ordering::Relaxed);
        tracing::info!(device = %self.link.name, outlier_threshold = ?v.outlier_threshold, deadline = ?v.command_deadline, "new settings in force");
    }

    fn reap(&mut self) {
        while let Ok(ctx) = self.done_rx.try_recv() {
            self.finish(ctx);
        }
        self.reap_uring();
    }

    /// Finish the commands the io_uring completed.
    fn reap_uring(&mut self) {
        let Some(u) = &mut self.uring else { return };
        u.reap();
        while let Some(mut ctx) = self.uring.as_mut().and_then(Uring::pop_ready) {
            if self.link.accounting && ctx.stamps.done.is_none() {
                // Finished at or before the pass's clock (docs/DESIGN.md, "The pass's clock").
                ctx.stamps.done = Some(self.now);
            }
            self.finish(ctx);
        }
    }

    fn publish(&mut self) {
        if self.ring.publish() {
            self.acct.stats.kicks.fetch_add(1, Ordering::Relaxed);
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
                    self.acct.stats.commands.fetch_add(1, Ordering::Relaxed);
                    ctx.stamps = Stamps::default();
                    ctx.class = OpClass::Other;
                    let bytes = ctx.cmd.data_len();
                    self.data_in_flight += bytes;
                    if self.link.accounting {
                        ctx.stamps.read = Some(self.now);
                    }
                    self.start(ctx);
                    self.pass_bytes += bytes;
                    if self.pass_bytes >= EARLY_PUBLISH_BYTES {
                        // A long drain (large writes copied on this thread) hands back what
                        // is done so far, so the kernel and the initiator keep working
                        // meanwhile instead of waiting for the whole batch.
                        self.pass_bytes = 0;
                        self.reap_uring();
                        self.publish();
                    }
                }
                Some(Ok(Entry::BadCmd { cmd_id, why })) => {
                    self.acct.stats.commands.fetch_add(1, Ordering::Relaxed);
                    self.acct.stats.bad_entries.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(device = %self.link.name, cmd_id, "invalid ring entry: {why}");
                    ctx.cmd.cmd_id = cmd_id;
                    ctx.done(Sense::internal_target_failure().into());
                    self.finish(ctx);
                }
                Some(Ok(Entry::Tmr)) => {
                    self.acct.tmr(self.tmr.tmr_type);
                    tracing::info!(device = %self.link.name, tmr_type = self.tmr.tmr_type, ids = ?self.tmr.cmd_ids, "task management notification");
                    self.free.push(ctx);
                    self.abort_named();
                }
                Some(Err(e)) => {
                    self.free.push(ctx);
                    self.broken = true;
                    self.acct.stats.broken.store(true, Ordering::SeqCst);
                    tracing::error!(device = %self.link.name, "ring is corrupt, no longer reading it (reset the ring to recover): {e}");
                    return;
                }
            }
        }
        self.acct
            .stats
            .pool_exhausted
            .fetch_add(1, Ordering::Relaxed);
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
            // Its data blocks were in use until now (kept for the late transfer).
            self.data_in_flight = self.data_in_flight.saturating_sub(ctx.cmd.data_len());
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
            self.acct.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(device = %self.link.name, cmd_id = ctx.cmd.cmd_id, cdb = ?ctx.cmd.cdb(), ?outcome, "command failed");
        }
        let rsp = outcome.response(&mut self.sense);
        match self.ring.complete(ctx.cmd.cmd_id, &rsp) {
            Ok(()) => {
                self.acct.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(device = %self.link.name, cmd_id = ctx.cmd.cmd_id, "completion refused by the ring: {e}")
            }
        }
        self.data_in_flight = self.data_in_flight.saturating_sub(ctx.cmd.data_len());
        let link = &self.link;
        self.acct
            .command_done(&ctx, outcome.status, self.now, &link.name, || {
                link.backend().describe()
            });
        self.free.push(ctx);
    }
}

/// Whether io_uring was found unavailable (logged once per process, not per device).
static URING_UNAVAILABLE_LOGGED: AtomicBool = AtomicBool::new(false);

/// The device's io_uring, or None (logged once) when the kernel refuses it: the workers then
/// run the file I/O.
fn open_uring(name: &str, total: usize) -> Option<Uring> {
    match Uring::new(total) {
        Ok(u) => Some(u),
        Err(e) => {
            if !URING_UNAVAILABLE_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(device = %name, "io_uring unavailable ({e}); file I/O runs on the worker threads");
            }
            None
        }
    }
}
