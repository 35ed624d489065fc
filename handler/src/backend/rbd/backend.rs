//! [`RbdBackend`]: asynchronous I/O on one image.
//!
//! ```text
//!  device thread ──submit──► slot (Io, completion, start) ──rbd_aio_*──► librbd
//!                                                                          │ callback
//!  device thread ◄──────────────Io::complete── librbd's callback thread ◄──┘
//!                 ◄─Io::complete── completion thread ◄──(tag, ret)── channel (rare paths)
//! ```
//!
//! Slots are preallocated (each with its [`AioTarget`]), so starting an operation allocates
//! nothing but librbd's own completion. A successful operation completes on librbd's callback
//! thread, in the callback (the way tcmu-runner's rbd handler completes): librbd's latency is
//! observed, the slot freed and the `Io` completed there, one cross-thread wake-up (the
//! device's) after librbd's own. Nothing there calls librbd or waits for long: the slot,
//! which its submitter holds until its `rbd_aio_*` call returns, is waited for at most
//! `SLOT_WAIT` (0.5 ms; not at all when the callback runs inside that call), and an image
//! replaced meanwhile is closed elsewhere.
//!
//! The rest goes to the completion thread (`rbd-io`) through a channel: failed operations, a
//! FUA write while librbd's cache is on (it issues the flush after the write), and a
//! completion whose slot the submitting thread still holds. It notices blocklisting
//! (`ESHUTDOWN`): it completes the command with that errno (NOT READY, LOGICAL UNIT IN
//! ASYMMETRIC ACCESS STATE TRANSITION: retried by the initiator) and wakes the monitor thread
//! (`rbd-mon`, see [`super::monitor`]), which reopens the image on a fresh client. Until then
//! new commands fail fast with the same retryable status. It also closes images replaced
//! while operations on them were in flight, enforces the lock gate's wait bound, and drains
//! the operations in flight when the backend stops. docs/rbd.md, "Completions".

use super::cfg::RbdConfig;
use super::image::Opened;
use super::metrics::RbdMetrics;
use crate::backend::io::{Io, IoOp};
use crate::backend::{Backend, Caps, LockHolder};
use ceph_rbd::{AioCompletion, AioDone, AioHandler, AioTarget, Errno};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tcmu_scsi::ErrnoClass;

/// Operations in flight per LUN at most; beyond, commands complete with BUSY (`EAGAIN`).
pub const SLOTS: usize = 1024;
/// The tag that tells the completion thread to stop.
const STOP: u64 = u64::MAX;
/// The tag that tells the completion thread to close the images in [`Inner::retired`], or
/// to look again at the operations in flight (stopping).
const WAKE: u64 = u64::MAX - 1;
/// How long librbd's callback waits for a slot whose submitter is still inside the
/// `rbd_aio_*` call (it leaves it within microseconds, unless descheduled) before handing the
/// completion to the completion thread.
const SLOT_WAIT: Duration = Duration::from_micros(500);

thread_local! {
    /// Set while this thread is inside an `rbd_aio_*` call holding a slot: a callback librbd
    /// runs inline there must not wait for the slot.
    static SUBMITTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as [`SUBMITTING`] until dropped.
struct Submitting;

impl Submitting {
    fn enter() -> Submitting {
        SUBMITTING.with(|c| c.set(true));
        Submitting
    }
}

impl Drop for Submitting {
    fn drop(&mut self) {
        SUBMITTING.with(|c| c.set(false));
    }
}

/// How long the backend's teardown waits for librbd callbacks still running (they do not
/// block: this bounds a wait that ends in microseconds).
const CALLBACKS_BOUND: Duration = Duration::from_secs(10);

/// One operation in flight.
struct InFlight {
    io: Io,
    completion: AioCompletion,
    /// The image it was started on (kept open until it completes).
    opened: Arc<Opened>,
    start: Instant,
    /// A FUA write whose flush is still to be issued.
    flush_after: bool,
}

struct Slot {
    target: Arc<AioTarget>,
    inflight: Mutex<Option<InFlight>>,
    /// Where librbd stores a COMPARE AND WRITE's mismatch offset: in the slot, whose address
    /// is fixed for the backend's life (slots are one boxed slice), so a late store lands
    /// here whatever became of the `Io`.
    mismatch: AtomicU64,
}

/// What the monitor thread is asked to do.
#[derive(Default)]
pub(super) struct MonitorWake {
    /// Reopen on a fresh client (blocklisted).
    pub recover: bool,
    /// Stop.
    pub stop: bool,
    /// Scan the watchers now.
    pub scan: bool,
}

/// State shared by the backend, its completion thread and its monitor thread.
pub(super) struct Inner {
    pub cfg: RbdConfig,
    pub device: String,
    pub read_only: bool,
    pub size: AtomicU64,
    pub current: RwLock<Arc<Opened>>,
    slots: Box<[Slot]>,
    free: Mutex<Vec<u32>>,
    pub inflight: AtomicUsize,
    /// Blocklisted: fail fast until the monitor has reopened.
    pub recovering: AtomicBool,
    pub metrics: RbdMetrics,
    pub wake: Mutex<MonitorWake>,
    pub wake_cv: Condvar,
    /// Facts for `diagnose` kept by the monitor (lock owner, stale watchers, last reopen).
    pub facts: Mutex<super::monitor::Facts>,
    /// Serialises reopens (the monitor thread and the health monitor's `reopen`).
    pub reopening: Mutex<()>,
    /// The explicit exclusive lock's write gate (`None`: read-only, or `lock_hold=0`).
    pub gate: Option<super::lock::Gate>,
    /// Operations that failed with ETIMEDOUT (`osd_op_timeout`), for the service map.
    pub timed_out: AtomicU64,
    /// Who holds the exclusive lock ([`LockHolder`] as a number, see [`Inner::set_holder`]).
    holder: AtomicU8,
    /// The completion thread's channel: completions it finishes, [`STOP`] and [`WAKE`].
    tx: Sender<AioDone>,
    /// Images replaced while operations on them were in flight, whose last operation
    /// completed on librbd's callback thread: the completion thread closes them.
    retired: Mutex<Vec<Arc<Opened>>>,
    /// The backend is stopping: the completion thread leaves once nothing is in flight.
    stopping: AtomicBool,
}

/// Tells the backend's teardown which librbd callbacks still use its state: the teardown
/// closes it, then waits until none is active, so that the last reference to the state (and
/// so the close of the image) is never dropped on librbd's thread.
#[derive(Default)]
struct CallbackGuard {
    active: AtomicUsize,
    closed: AtomicBool,
}

impl CallbackGuard {
    /// librbd's callback for the operation of slot `done.tag`.
    fn run(&self, inner: &Weak<Inner>, done: AioDone) {
        self.active.fetch_add(1, Ordering::SeqCst);
        // SeqCst on both sides: either the teardown sees this callback active, or this
        // callback sees `closed` and leaves the state alone.
        if !self.closed.load(Ordering::SeqCst) {
            if let Some(inner) = inner.upgrade() {
                inner.complete_in_callback(done);
            }
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Close and wait (bounded) for the callbacks still running. False: one did not return.
    fn close(&self) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        let t = Instant::now();
        while self.active.load(Ordering::SeqCst) != 0 {
            if t.elapsed() > CALLBACKS_BOUND {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

/// The RBD backend of one LUN.
pub struct RbdBackend {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    callbacks: Arc<CallbackGuard>,
}

impl RbdBackend {
    /// Wrap an opened image and start its threads.
    ///
    /// # Errors
    /// Starting a thread failed.
    pub(super) fn start(
        cfg: RbdConfig,
        device: &str,
        size: u64,
        opened: Opened,
        metrics: RbdMetrics,
    ) -> std::io::Result<RbdBackend> {
        // Every slot posts at most once at a time, a WAKE is posted only when the retired
        // list was empty or by the one completion that found nothing left in flight, and STOP
        // once: the channel never fills.
        let (tx, rx) = crossbeam_channel::bounded::<AioDone>(2 * SLOTS + 2);
        let callbacks = Arc::new(CallbackGuard::default());
        let free = (0..u32::try_from(SLOTS).unwrap_or(u32::MAX))
            .rev()
            .collect();
        let read_only = cfg.snap.is_some();
        let gate = if read_only || cfg.lock_hold.is_zero() {
            None
        } else if opened.header.is_empty() {
            tracing::warn!(device, image = %cfg.spec(),
                "rbd: no header object (old image format?): librbd's cooperative lock handover, not damped");
            None
        } else {
            Some(super::lock::Gate::new(cfg.lock_hold, cfg.lock_timeout))
        };
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let (weak, guard) = (weak.clone(), Arc::clone(&callbacks));
            let handler: AioHandler = Arc::new(move |done| guard.run(&weak, done));
            let slots: Box<[Slot]> = (0..SLOTS)
                .map(|i| Slot {
                    target: AioTarget::with_handler(i as u64, Arc::clone(&handler)),
                    inflight: Mutex::new(None),
                    mismatch: AtomicU64::new(u64::MAX),
                })
                .collect();
            Inner {
                cfg,
                device: device.to_string(),
                read_only,
                size: AtomicU64::new(size),
                current: RwLock::new(Arc::new(opened)),
                slots,
                free: Mutex::new(free),
                inflight: AtomicUsize::new(0),
                recovering: AtomicBool::new(false),
                metrics,
                wake: Mutex::new(MonitorWake {
                    scan: true,
                    ..MonitorWake::default()
                }),
                wake_cv: Condvar::new(),
                facts: Mutex::new(super::monitor::Facts::default()),
                reopening: Mutex::new(()),
                gate,
                timed_out: AtomicU64::new(0),
                holder: AtomicU8::new(0),
                tx: tx.clone(),
                retired: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
            }
        });
        let short = short_name(device);
        let mut threads = Vec::new();
        let (i, guard) = (Arc::clone(&inner), Arc::clone(&callbacks));
        threads.push(
            std::thread::Builder::new()
                .name(format!("rbd-io-{short}"))
                .spawn(move || {
                    completion_loop(&i, &rx);
                    // Nothing in flight (or the bound passed): no callback may hold the last
                    // reference to `i` once this returns.
                    if !guard.close() {
                        std::mem::forget(i);
                    }
                })?,
        );
        let i = Arc::clone(&inner);
        match std::thread::Builder::new()
            .name(format!("rbd-mon-{short}"))
            .spawn(move || super::monitor::run(&i))
        {
            Ok(t) => threads.push(t),
            Err(e) => {
                let _ = tx.send(AioDone { tag: STOP, ret: 0 });
                inner.wake.lock().stop = true;
                inner.wake_cv.notify_all();
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        if inner.gate.is_some() {
            let i = Arc::clone(&inner);
            match std::thread::Builder::new()
                .name(format!("rbd-lock-{short}"))
                .spawn(move || super::lock::run(&i))
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let _ = tx.send(AioDone { tag: STOP, ret: 0 });
                    inner.wake.lock().stop = true;
                    inner.wake_cv.notify_all();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(RbdBackend {
            inner,
            threads,
            callbacks,
        })
    }

    fn start_io(&self, io: Io) {
        let inner = &*self.inner;
        if inner.recovering.load(Ordering::Acquire) {
            io.complete(Err(Errno::ESHUTDOWN));
            return;
        }
        if inner.read_only && io.op().is_write() {
            io.complete(Err(Errno::EROFS));
            return;
        }
        if let Some(g) = &inner.gate {
            match io.op() {
                // librbd's cache is off: every acknowledged write is on the OSDs already, and
                // without the lock librbd would refuse the flush (EROFS).
                IoOp::Flush if !g.is_owner() => {
                    io.complete(Ok(()));
                    return;
                }
                IoOp::Write { .. }
                | IoOp::Unmap { .. }
                | IoOp::WriteZeroes { .. }
                | IoOp::CompareAndWrite { .. } => {
                    let _s = g.submit.read();
                    if g.is_owner() {
                        inner.submit_now(io);
                    } else {
                        g.park(io);
                    }
                    return;
                }
                _ => {}
            }
        }
        inner.submit_now(io);
    }
}

/// Whether a write needs `rbd_aio_flush` after it before it completes: only a FUA write
/// (every write while the LUN's write cache is off) and only while librbd's cache is on for
/// the image. With the cache off librbd completes a write when the OSDs have committed it,
/// which is durable already; the flush would add a round trip and nothing durable
/// (docs/rbd.md, "FUA writes and librbd's cache").
#[must_use]
pub(super) fn flush_after_write(fua: bool, librbd_cache: bool) -> bool {
    fua && librbd_cache
}

impl Inner {
    /// Who holds the exclusive lock, as last seen.
    pub fn holder(&self) -> LockHolder {
        match self.holder.load(Ordering::Acquire) {
            1 => LockHolder::This,
            2 => LockHolder::Other,
            3 => LockHolder::Nobody,
            _ => LockHolder::Unknown,
        }
    }

    /// Record who holds the exclusive lock; moving to or from this client is a lock-driven
    /// ALUA transition (counted).
    pub fn set_holder(&self, h: LockHolder) {
        let v = match h {
            LockHolder::Unknown => 0,
            LockHolder::This => 1,
            LockHolder::Other => 2,
            LockHolder::Nobody => 3,
        };
        let before = self.holder.swap(v, Ordering::AcqRel);
        if before == v {
            return;
        }
        if v == 1 {
            self.metrics.alua_optimized.inc();
        } else if before == 1 {
            self.metrics.alua_non_optimized.inc();
        }
    }

    /// Start `io` on librbd (the lock, if the gate is used, is held).
    pub(super) fn submit_now(&self, io: Io) {
        let inner = self;
        if matches!(io.op(), IoOp::CompareAndWrite { .. }) && !caw_shape_ok(&io) {
            // Not what `IoOp::CompareAndWrite` promises: refused, never half understood.
            io.complete(Err(Errno::EINVAL));
            return;
        }
        let fua = matches!(
            io.op(),
            IoOp::Write { fua: true } | IoOp::CompareAndWrite { fua: true }
        );
        let Some(slot) = inner.free.lock().pop() else {
            io.complete(Err(Errno::EAGAIN));
            return;
        };
        let entry = &inner.slots[slot as usize];
        let completion = match AioCompletion::new(&entry.target) {
            Ok(c) => c,
            Err(e) => {
                inner.free.lock().push(slot);
                io.complete(Err(e.errno));
                return;
            }
        };
        let opened = Arc::clone(&inner.current.read());
        let flush_after = flush_after_write(fua, opened.cache);
        inner.inflight.fetch_add(1, Ordering::AcqRel);
        // Hold the slot's lock across the aio call: whoever finishes the operation takes it
        // (librbd's callback waits for it at most SLOT_WAIT, and not at all inside this call,
        // then hands the operation to the completion thread: the callback can run before the
        // call returns, even inside it), so nobody sees the slot before the operation is in it.
        let mut g = entry.inflight.lock();
        let f = g.insert(InFlight {
            io,
            completion,
            opened,
            start: Instant::now(),
            flush_after,
        });
        let (off, len) = (f.io.offset(), f.io.len());
        let image = &f.opened.image;
        let submitting = Submitting::enter();
        let r = match f.io.op() {
            // SAFETY: the iovecs point into the ring's data area (or a worker's buffer), valid
            // and untouched by anyone else until the Io completes, which happens only after
            // this operation's post arrives (the Io stays in this slot until then).
            IoOp::Read => unsafe { image.aio_readv(f.io.iovecs(), off, &mut f.completion) },
            // SAFETY: as above; librbd only reads them.
            IoOp::Write { .. } => unsafe {
                image.aio_writev(f.io.iovecs(), off, &mut f.completion)
            },
            IoOp::Flush => image.aio_flush(&mut f.completion),
            // librbd's cache is off (see `Flush` above): a discard or zeroing acknowledged by
            // the OSDs is durable, so a durable (`fua`) one needs nothing more.
            IoOp::Unmap { .. } | IoOp::WriteZeroes { .. } => {
                image.aio_write_zeroes(off, len, &mut f.completion)
            }
            IoOp::CompareAndWrite { .. } => {
                let v = f.io.iovecs();
                entry.mismatch.store(u64::MAX, Ordering::Relaxed);
                // SAFETY: `caw_shape_ok` checked that the first two iovecs hold `len` bytes
                // each (compare and write halves), valid and untouched until the Io completes,
                // which happens only after this operation's post arrives (as above); librbd
                // only reads them. The mismatch offset goes to the slot's own `u64`, which
                // lives as long as the backend, and the backend outlives its operations.
                unsafe {
                    image.aio_compare_and_write(
                        off,
                        v[0].iov_len,
                        v[0].iov_base.cast::<u8>(),
                        v[1].iov_base.cast::<u8>(),
                        entry.mismatch.as_ptr(),
                        &mut f.completion,
                    )
                }
            }
        };
        drop(submitting);
        if let Err(e) = r {
            let f = g.take();
            drop(g);
            inner.inflight.fetch_sub(1, Ordering::AcqRel);
            inner.free.lock().push(slot);
            if let Some(f) = f {
                if e.is_blocklisted() {
                    inner.blocklisted(&f.opened);
                }
                let r = inner.lock_errno(f.io.op(), Err(e.errno));
                f.io.complete(r);
            }
        }
    }

    /// In explicit-lock mode, librbd answers EROFS to a write (or flush) made without the
    /// lock: a write is retried (BUSY), a flush has nothing to make durable (cache off).
    fn lock_errno(&self, op: IoOp, r: Result<(), Errno>) -> Result<(), Errno> {
        match r {
            Err(Errno::EROFS) if self.gate.is_some() => {
                if op == IoOp::Flush {
                    Ok(())
                } else {
                    Err(Errno::EAGAIN)
                }
            }
            r => r,
        }
    }

    /// An operation on `opened` failed with ESHUTDOWN: start recovery once per client.
    pub fn blocklisted(&self, opened: &Arc<Opened>) {
        if !Arc::ptr_eq(opened, &self.current.read()) {
            return; // a late failure of the client already replaced
        }
        if self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        self.metrics.blocklisted.inc();
        tracing::error!(device = %self.device, image = %self.cfg.spec(),
            client = ?opened.client,
            "rbd: this client was blocklisted (ESHUTDOWN): commands complete with a retryable \
             status while the image is reopened on a fresh client");
        self.wake.lock().recover = true;
        self.wake_cv.notify_all();
    }

    /// Ask the monitor for a watcher scan (lock acquisition stalls).
    pub fn request_scan(&self) {
        self.wake.lock().scan = true;
        self.wake_cv.notify_all();
    }

    /// Age of the oldest write in flight.
    pub fn oldest_write_age(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now = Instant::now();
        self.slots
            .iter()
            .filter_map(|s| {
                let g = s.inflight.try_lock()?;
                let f = g.as_ref()?;
                f.io.op().is_write().then(|| now.duration_since(f.start))
            })
            .max()
    }
}

fn completion_loop(inner: &Arc<Inner>, rx: &Receiver<AioDone>) {
    let mut stopping: Option<Instant> = None;
    let mut expired_at = Instant::now();
    loop {
        // The lock thread may be blocked in a librbd call: the wait bound holds regardless.
        if let Some(g) = &inner.gate {
            if expired_at.elapsed() >= Duration::from_millis(100) {
                expired_at = Instant::now();
                g.expire(inner);
            }
        }
        inner.close_retired();
        if let Some(t) = stopping {
            if inner.inflight.load(Ordering::Acquire) == 0 || t.elapsed() > Duration::from_secs(60)
            {
                return;
            }
        }
        let done = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(d) => d,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        match done.tag {
            STOP => stopping = Some(Instant::now()),
            WAKE => {}
            _ => inner.complete_on_thread(done),
        }
    }
}

impl Inner {
    /// librbd's callback, on its thread: finish a successful operation here; hand anything
    /// else to the completion thread. Never blocks for long: the slot is waited for at most
    /// [`SLOT_WAIT`] (the submitting thread holds it while inside the `rbd_aio_*` call, which
    /// may run this callback before it returns, even inline: then it is only tried), and no
    /// librbd call is made.
    fn complete_in_callback(&self, done: AioDone) {
        let Some(entry) = usize::try_from(done.tag)
            .ok()
            .and_then(|i| self.slots.get(i))
        else {
            return;
        };
        // The slot is held by its submitter until the `rbd_aio_*` call returns: wait for it,
        // briefly, unless this callback runs inside that very call.
        let slot = if SUBMITTING.with(std::cell::Cell::get) {
            entry.inflight.try_lock()
        } else {
            entry.inflight.try_lock_for(SLOT_WAIT)
        };
        let f = match slot {
            Some(mut g) => match g.as_mut() {
                Some(f) if done.ret >= 0 && !f.flush_after => {
                    f.completion.fired();
                    g.take()
                }
                // Nothing in the slot: not ours to finish (as on the completion thread).
                None => return,
                Some(_) => None,
            },
            None => None,
        };
        let Some(f) = f else {
            // A failure, a FUA write to flush, or the slot held: the completion thread.
            if self.tx.try_send(done).is_err() {
                tracing::error!(device = %self.device, tag = done.tag,
                    "rbd: completion channel full: the command completes at its deadline");
            }
            return;
        };
        let opened = self.finish(done.tag, f, Ok(()));
        self.retire(opened);
    }

    /// The completion thread's part: what the callback handed over.
    fn complete_on_thread(&self, done: AioDone) {
        let Some(entry) = usize::try_from(done.tag)
            .ok()
            .and_then(|i| self.slots.get(i))
        else {
            return;
        };
        let mut g = entry.inflight.lock();
        let Some(f) = g.as_mut() else { return };
        f.completion.fired();
        if done.ret >= 0 && f.flush_after {
            // FUA: the write is done; make it durable before completing.
            f.flush_after = false;
            if let Ok(c) = AioCompletion::new(&entry.target) {
                f.completion = c;
                let submitting = Submitting::enter();
                let started = f.opened.image.aio_flush(&mut f.completion).is_ok();
                drop(submitting);
                if started {
                    self.metrics.fua_flushes.inc();
                    return;
                }
            }
            // Could not start the flush: fail the write retryably.
            let f = g.take();
            drop(g);
            if let Some(f) = f {
                drop(self.finish(done.tag, f, Err(Errno::EAGAIN)));
            }
            return;
        }
        let f = g.take();
        drop(g);
        let Some(f) = f else { return };
        let r = if done.ret >= 0 {
            Ok(())
        } else {
            Err(Errno::from_raw(
                i32::try_from(-done.ret).unwrap_or(libc::EIO),
            ))
        };
        if r == Err(Errno::EILSEQ) {
            report_mismatch(&f, entry.mismatch.load(Ordering::Relaxed));
        }
        drop(self.finish(done.tag, f, r));
    }

    /// Complete `f` with `r` and free its slot; returns the image it ran on, for the caller
    /// to drop (or, on librbd's thread, to [`Inner::retire`]).
    fn finish(&self, tag: u64, f: InFlight, r: Result<(), Errno>) -> Arc<Opened> {
        self.metrics.latency.observe(f.io.op(), f.start);
        if r.is_err_and(|e| ErrnoClass::of(e as i32) == ErrnoClass::Fenced) {
            self.blocklisted(&f.opened);
        }
        if r == Err(Errno::ETIMEDOUT) {
            self.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        let r = self.lock_errno(f.io.op(), r);
        let InFlight {
            io,
            completion,
            opened,
            ..
        } = f;
        drop(completion);
        if let Ok(t) = u32::try_from(tag) {
            self.free.lock().push(t);
        }
        let left = self.inflight.fetch_sub(1, Ordering::AcqRel) - 1;
        io.complete(r);
        if left == 0 && self.stopping.load(Ordering::Acquire) {
            // The completion thread waits for this to leave.
            let _ = self.tx.try_send(AioDone { tag: WAKE, ret: 0 });
        }
        opened
    }

    /// On librbd's thread: drop a reference to an image without ever closing it here
    /// (`rbd_close` waits for librbd's threads). The current image stays referenced by
    /// [`Inner::current`] while this one is dropped; a replaced one goes to the completion
    /// thread, which closes it if this was the last operation on it.
    fn retire(&self, opened: Arc<Opened>) {
        if let Some(cur) = self.current.try_read() {
            if Arc::ptr_eq(&opened, &cur) {
                drop(opened);
                return;
            }
        }
        let first = {
            let mut r = self.retired.lock();
            r.push(opened);
            r.len() == 1
        };
        if first {
            let _ = self.tx.try_send(AioDone { tag: WAKE, ret: 0 });
        }
    }

    /// Drop the images [`Inner::retire`] handed over (the completion thread).
    fn close_retired(&self) {
        let r = std::mem::take(&mut *self.retired.lock());
        drop(r);
    }
}

/// Whether a COMPARE AND WRITE's iovecs are as [`IoOp::CompareAndWrite`] says: compare and
/// write halves of `len` bytes each, then 8 bytes for the mismatch offset.
fn caw_shape_ok(io: &Io) -> bool {
    match io.iovecs() {
        [cmp, buf, out] => {
            cmp.iov_len as u64 == io.len() && buf.iov_len as u64 == io.len() && out.iov_len >= 8
        }
        _ => false,
    }
}

/// A COMPARE AND WRITE miscompared: hand librbd's mismatch offset, made relative to the start
/// of the range ([`mismatch_from_start`]), to the caller through the operation's third iovec
/// (`u64::MAX`: not known).
fn report_mismatch(f: &InFlight, at: u64) {
    if matches!(f.io.op(), IoOp::CompareAndWrite { .. }) {
        let rel = mismatch_from_start(at, f.io.offset(), f.io.len()).unwrap_or(u64::MAX);
        let skip = usize::try_from(2 * f.io.len()).unwrap_or(usize::MAX);
        f.io.buffers().copy_from_slice(skip, &rel.to_ne_bytes());
    }
}

/// librbd's mismatch offset as an offset from the start of the compared range `[off,
/// off+len)` (one 512-byte sector at most). librbd maps the OSD's offset within the compared
/// bytes back to the image: newer releases give the image offset of the differing byte
/// (`off + i`); Pacific's maps `i` as if it were an offset in the object, giving
/// `object start + i` (measured: tests/ceph/README.md). Both read back as `i`: an offset
/// inside the range is the first form; otherwise the object start is a multiple of 512, so
/// `i` is the offset within the sector. `None` when neither fits.
#[must_use]
pub fn mismatch_from_start(at: u64, off: u64, len: u64) -> Option<u64> {
    if at >= off && at - off < len {
        return Some(at - off);
    }
    let i = at % 512;
    (i < len && at != u64::MAX).then_some(i)
}

impl Drop for RbdBackend {
    fn drop(&mut self) {
        let inner = Arc::clone(&self.inner);
        let threads = std::mem::take(&mut self.threads);
        let callbacks = Arc::clone(&self.callbacks);
        inner.stop_threads();
        if !ceph_rbd::on_callback_thread() {
            teardown(inner, threads, &callbacks);
            return;
        }
        // The last reference dropped by a command completed on librbd's callback thread (a
        // device removed with I/O in flight): joining, and closing the image, wait for
        // librbd's threads, this one among them. Another thread does it.
        let i = Arc::clone(&inner);
        let name = format!("rbd-close-{}", short_name(&inner.device));
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || teardown(i, threads, &callbacks))
        {
            tracing::error!(device = %inner.device,
                "rbd: cannot start the thread closing the image ({e}): it stays open");
            std::mem::forget(inner);
        }
    }
}

/// The last part of a [`RbdBackend`]'s drop, never on librbd's callback thread: join its
/// threads and wait for the callbacks still running, so that the last reference to `inner`
/// (which closes the image) is dropped here or on the completion thread.
fn teardown(inner: Arc<Inner>, threads: Vec<JoinHandle<()>>, callbacks: &CallbackGuard) {
    let me = std::thread::current().id();
    let mut on_completion_thread = false;
    for t in threads {
        // The last reference can be dropped by a command completed on the completion thread
        // itself: that thread exits by itself once stopped, and closes the callbacks then.
        if t.thread().id() == me {
            on_completion_thread = true;
        } else {
            let _ = t.join();
        }
    }
    if !on_completion_thread && !callbacks.close() {
        tracing::error!(device = %inner.device,
            "rbd: a librbd callback did not return within {CALLBACKS_BOUND:?}: the image stays open");
        std::mem::forget(inner);
    }
}

/// The device's name without its path (for thread names).
fn short_name(device: &str) -> &str {
    device.rsplit('/').next().unwrap_or(device)
}

impl Inner {
    /// Tell the backend's threads to stop (none is waited for).
    fn stop_threads(&self) {
        self.wake.lock().stop = true;
        self.wake_cv.notify_all();
        if let Some(g) = &self.gate {
            g.stop();
        }
        self.stopping.store(true, Ordering::Release);
        let _ = self.tx.try_send(AioDone { tag: STOP, ret: 0 });
    }
}

/// The most bytes one [`Backend::allocation`] call asks librbd about (64 objects of the
/// default 4 MiB): GET LBA STATUS calls it again for the rest.
const ALLOCATION_WINDOW: u64 = 256 << 20;

impl Backend for RbdBackend {
    fn describe(&self) -> String {
        format!("rbd:{}", self.inner.cfg.spec())
    }

    fn size(&self) -> u64 {
        self.inner.size.load(Ordering::Relaxed)
    }

    fn caps(&self) -> Caps {
        Caps {
            unmap: !self.inner.read_only,
            write_zeroes: !self.inner.read_only,
            thin: true,
            non_rotational: false,
        }
    }

    /// `rbd_diff_iterate2` from the image's creation over a window of at most
    /// 256 MiB (`ALLOCATION_WINDOW`): what it lists is allocated, the rest reads as zeros
    /// (an unmapped object, or a discarded range of one). A synchronous librbd call (one
    /// round trip per object without an object map), so only workers call it.
    fn allocation(&self, off: u64, len: u64) -> Result<(bool, u64), Errno> {
        let len = len.min(ALLOCATION_WINDOW);
        let cur = Arc::clone(&self.inner.current.read());
        let ext = cur
            .image
            .allocated_extents(off, len, 64)
            .map_err(|e| e.errno)?;
        Ok(super::super::allocation_in(off, len, &ext))
    }

    /// Grow the image when the LUN grows past it (never shrinks the image).
    fn resize(&self, new_size: u64) -> Result<(), Errno> {
        let cur = Arc::clone(&self.inner.current.read());
        let image_size = cur.image.size().map_err(|e| e.errno)?;
        if new_size > image_size {
            if self.inner.read_only {
                return Err(Errno::EROFS);
            }
            cur.image.resize(new_size).map_err(|e| e.errno)?;
            tracing::info!(device = %self.inner.device, image = %self.inner.cfg.spec(),
                from = image_size, to = new_size, "rbd: image grown");
        }
        self.inner.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }

    fn completes_inline(&self) -> bool {
        false
    }

    /// `rbd_aio_*` queue the operation and return; a write while another client holds the
    /// exclusive lock is parked in the gate, not waited for.
    fn submit_returns_at_once(&self) -> bool {
        true
    }

    fn submit(&self, io: Io) {
        self.start_io(io);
    }

    fn op_timeout(&self) -> Option<Duration> {
        self.inner.current.read().client.osd_op_timeout
    }

    /// In librbd, plus the writes parked for the exclusive lock.
    fn in_flight(&self) -> usize {
        let parked = self.inner.gate.as_ref().map_or(0, |g| g.waiting());
        self.inner.inflight.load(Ordering::Acquire) + parked
    }

    fn ping(&self) -> Result<(), Errno> {
        let cur = Arc::clone(&self.inner.current.read());
        // A stat of the header object: a round trip to its OSD (rbd_stat answers from the
        // client's cache), bounded by osd_op_timeout. A snapshot or old-format image without
        // a header id falls back to the cached stat.
        let r = if cur.header.is_empty() {
            cur.image.stat().map(drop)
        } else {
            cur.image.ioctx().stat(&cur.header).map(drop)
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                if e.is_blocklisted() {
                    self.inner.blocklisted(&cur);
                }
                Err(e.errno)
            }
        }
    }

    /// Reopen on a fresh client if this one is blocklisted (the monitor thread normally has
    /// done it already); otherwise a probe: a fresh client would not help a store that does
    /// not answer, and would take every LUN sharing the client through a reconnect.
    fn reopen(&self) -> Result<(), Errno> {
        if !self.inner.recovering.load(Ordering::Acquire) {
            match self.ping() {
                Err(Errno::ESHUTDOWN) => {}
                r => return r,
            }
        }
        super::monitor::reopen(&self.inner)
    }

    fn diagnose(&self) -> Vec<String> {
        super::monitor::diagnose(&self.inner)
    }

    fn lock_holder(&self) -> LockHolder {
        self.inner.holder()
    }

    /// librbd takes a COMPARE AND WRITE inside one 512-byte sector (of one object and stripe
    /// unit) and refuses anything longer or crossing a sector boundary (EINVAL; librbd's
    /// `ImageCompareAndWriteRequest::prune_object_extents`): with 512-byte blocks that is a
    /// one-block COMPARE AND WRITE, what VMware's ATS sends. Counted by path.
    fn atomic_compare_and_write(&self, off: u64, len: u64) -> bool {
        let native = !self.inner.read_only && caw_fits_librbd(off, len);
        if native {
            self.inner.metrics.caw_native.inc();
        } else {
            self.inner.metrics.caw_generic.inc();
        }
        native
    }
}

/// librbd's limit for `rbd_aio_compare_and_write`: at most one 512-byte sector, not crossing
/// a sector boundary.
#[must_use]
pub fn caw_fits_librbd(off: u64, len: u64) -> bool {
    const SECTOR: u64 = 512;
    len > 0 && off % SECTOR + len <= SECTOR
}

#[cfg(test)]
mod tests {
    use super::{caw_fits_librbd, flush_after_write, mismatch_from_start};

    #[test]
    fn librbds_mismatch_offset_reads_back_from_the_start_of_the_range() {
        // Newer librbd: the image offset of the differing byte.
        assert_eq!(mismatch_from_start(4096 + 300, 4096, 512), Some(300));
        assert_eq!(mismatch_from_start(0, 0, 512), Some(0));
        // Pacific: the start of the object (4 MiB objects) plus the offset in the range.
        assert_eq!(mismatch_from_start(300, 4096, 512), Some(300));
        assert_eq!(
            mismatch_from_start((4 << 20) + 7, (4 << 20) + 8192, 512),
            Some(7)
        );
        // Not set, or beyond the range.
        assert_eq!(mismatch_from_start(u64::MAX, 4096, 512), None);
        assert_eq!(mismatch_from_start(100, 4096, 64), None);
    }

    #[test]
    fn librbd_takes_compare_and_write_within_one_512_byte_sector() {
        assert!(caw_fits_librbd(0, 512));
        assert!(caw_fits_librbd(4096, 512));
        assert!(caw_fits_librbd(512 + 100, 412));
        assert!(!caw_fits_librbd(0, 0));
        assert!(!caw_fits_librbd(0, 1024), "two 512-byte blocks");
        assert!(!caw_fits_librbd(0, 4096), "one 4096-byte block");
        assert!(!caw_fits_librbd(256, 512), "crosses a sector boundary");
    }

    #[test]
    fn a_fua_write_is_flushed_only_while_librbds_cache_is_on() {
        assert!(flush_after_write(true, true));
        assert!(!flush_after_write(true, false));
        assert!(!flush_after_write(false, true));
        assert!(!flush_after_write(false, false));
    }
}
