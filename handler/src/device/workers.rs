//! The bounded pool of worker threads that runs a device's data commands.

use super::context::Ctx;
use super::exec;
use super::link::DeviceLink;
use crate::backend::io::Waiter;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use tcmu_ring::IoVecs;

/// One data command for a worker.
pub struct Job {
    /// The command; the worker owns it until it hands it back.
    pub ctx: Box<Ctx>,
    /// The device it belongs to.
    pub link: Arc<DeviceLink>,
}

/// Per-worker buffers, allocated once when the worker starts.
pub struct WorkerState {
    /// Bounce buffer for reads that are compared or patterns that are replicated.
    pub scratch: Vec<u8>,
    /// Second buffer for the data a comparison is made against.
    pub compare: Vec<u8>,
    /// Iovecs for operations the worker waits on.
    pub iov: IoVecs,
    /// Where those operations complete.
    pub waiter: Arc<Waiter>,
}

impl WorkerState {
    /// Buffers of `bytes` each.
    #[must_use]
    pub fn new(bytes: usize) -> WorkerState {
        WorkerState {
            scratch: resident(bytes),
            compare: resident(bytes),
            iov: IoVecs::with_capacity(256),
            waiter: Waiter::new(),
        }
    }
}

/// A running pool.
pub struct Workers {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Start `n` workers named `tcmu-w/<name>/<i>` with room for `capacity` queued jobs.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        name: &str,
        n: usize,
        capacity: usize,
        scratch_bytes: usize,
    ) -> std::io::Result<Workers> {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = bounded(capacity.max(1));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let rx = rx.clone();
            let mut state = WorkerState::new(scratch_bytes);
            let t = std::thread::Builder::new()
                .name(format!("tcmu-w/{name}/{i}"))
                .spawn(move || {
                    warm_thread();
                    while let Ok(job) = rx.recv() {
                        exec::run(job, &mut state);
                    }
                })?;
            threads.push(t);
        }
        Ok(Workers {
            tx: Some(tx),
            threads,
        })
    }

    /// Queue a job. Never blocks: the capacity covers every context of the device.
    pub fn send(&self, job: Job) {
        if let Some(tx) = &self.tx {
            if let Err(e) = tx.try_send(job) {
                // Cannot happen while capacity >= contexts; complete rather than lose it.
                let job = e.into_inner();
                tracing::error!(device = %job.link.name, "worker queue full; failing the command");
                let mut ctx = job.ctx;
                ctx.done(tcmu_scsi::error::ScsiError::Busy.into());
                job.link.complete_from_backend(ctx);
            }
        }
    }

    /// Stop accepting jobs without waiting for the workers (some are stuck in a backend that
    /// does not answer); they exit when their operation returns.
    pub fn abandon(mut self) {
        self.tx = None;
        self.threads.clear();
    }

    /// Stop accepting jobs and join the workers after they finish what is queued.
    pub fn stop(mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A zeroed buffer whose pages are faulted in now, so that (with `mlockall(MCL_ONFAULT)`) they
/// are resident and locked before any I/O needs them: the I/O path never takes a page fault
/// that could wait on memory reclaim.
#[must_use]
pub fn resident(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for page in v.chunks_mut(4096) {
        // SAFETY: `page` is a valid, exclusive slice of at least one byte; a volatile write
        // keeps the compiler from eliding the store to memory it knows is zero.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    v
}

/// Create this thread's lazily allocated synchronisation state now, at start, rather than on
/// the first command that blocks: crossbeam-channel's per-thread waiting context and
/// parking_lot's per-thread parking data (which may also grow its global table). Called
/// first thing on every device and worker thread, so the I/O path never allocates.
pub fn warm_thread() {
    let (_tx, rx) = crossbeam_channel::bounded::<()>(1);
    let _ = rx.recv_timeout(std::time::Duration::from_micros(1));
    let m = parking_lot::Mutex::new(());
    let cv = parking_lot::Condvar::new();
    let mut g = m.lock();
    let _ = cv.wait_for(&mut g, std::time::Duration::from_micros(1));
}
