//! The bounded pool of worker threads that runs a device's data commands.

use super::exec::{self, Job, WorkerState};
use super::warm::warm_thread;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::thread::JoinHandle;

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
