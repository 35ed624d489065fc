//! The pool of worker threads that runs data commands, shared by every device of the daemon
//! (docs/DESIGN.md, "Memory per LUN" and "Workers").
//!
//! Each device has a *lane* in the pool: its queue of jobs and its share, the most of its jobs
//! the pool runs at once ([`DeviceConfig::workers`](super::DeviceConfig)). Lanes with work
//! take turns, round robin: a worker takes one job from the lane at the head of the ready
//! list, and the lane goes back to the tail while it has jobs and room in its share. So a
//! device whose backend hangs holds at most its share of the threads, and a device with a deep
//! queue delays another device's job by at most one turn. A long multi-step command (VERIFY,
//! WRITE SAME, UNMAP) runs a bounded number of chunks per turn and then goes back to the tail
//! of its lane ([`exec::run_turn`]).
//!
//! The pool's threads and their bounce buffers do not depend on the number of devices; a
//! worker's buffers are allocated the first time it runs a command that needs them. The
//! queues are allocated when a lane is opened, so queuing a job never allocates.

use super::exec::{self, Job, WorkerState};
use super::warm::warm_thread;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pool of worker threads; cloning shares it.
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.shared.size)
            .field("scratch_bytes", &self.shared.scratch_bytes)
            .finish_non_exhaustive()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a lane becomes ready or the pool shuts down.
    work: Condvar,
    /// Signalled when a job of a lane ends (for [`Workers::stop`]).
    ended: Condvar,
    size: usize,
    scratch_bytes: usize,
    name: String,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Lanes by index; `None`: a free index.
    lanes: Vec<Option<Lane>>,
    /// Lanes with a job to run and room in their share, in turn order.
    ready: VecDeque<usize>,
    shutdown: bool,
}

struct Lane {
    /// Jobs waiting for a thread (capacity: every context of the device).
    jobs: VecDeque<Job>,
    /// Jobs of this lane on a thread now.
    running: usize,
    /// Most jobs on threads at once.
    share: usize,
    /// In `ready`.
    queued: bool,
    /// The device stopped: its jobs are dropped, the index is freed when none runs.
    closed: bool,
}

impl Lane {
    fn wants_turn(&self) -> bool {
        !self.closed && !self.queued && !self.jobs.is_empty() && self.running < self.share
    }
}

impl WorkerPool {
    /// A pool of `threads` workers named `<name>/<i>`, each with bounce buffers of
    /// `scratch_bytes` allocated on first need. The threads start when the first lane is
    /// opened (so they are created by the thread that opens devices, after the daemon set its
    /// process-wide properties, and a daemon with no device has none).
    #[must_use]
    pub fn new(name: &str, threads: usize, scratch_bytes: usize) -> WorkerPool {
        WorkerPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                ended: Condvar::new(),
                size: threads.max(1),
                scratch_bytes,
                name: name.to_string(),
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    /// [`WorkerPool::new`] with its threads started now.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(name: &str, threads: usize, scratch_bytes: usize) -> std::io::Result<WorkerPool> {
        let pool = WorkerPool::new(name, threads, scratch_bytes);
        pool.spawn_threads()?;
        Ok(pool)
    }

    /// Start the threads if they are not running.
    fn spawn_threads(&self) -> std::io::Result<()> {
        let mut threads = self.shared.threads.lock();
        if !threads.is_empty() {
            return Ok(());
        }
        threads.reserve(self.shared.size);
        for i in 0..self.shared.size {
            let s = Arc::clone(&self.shared);
            let t = std::thread::Builder::new()
                .name(format!("{}/{i}", self.shared.name))
                .spawn(move || worker(&s));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    drop(threads);
                    self.clone().shut_down(false);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Threads in the pool.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.shared.size
    }

    /// Open a lane for a device with `contexts` commands at most and a share of `share`
    /// threads (starting the threads if this is the first lane).
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn open(&self, contexts: usize, share: usize) -> std::io::Result<Workers> {
        self.spawn_threads()?;
        let lane = Lane {
            jobs: VecDeque::with_capacity(contexts.max(1)),
            running: 0,
            share: share.clamp(1, self.shared.size),
            queued: false,
            closed: false,
        };
        let mut st = self.shared.state.lock();
        let index = if let Some(i) = st.lanes.iter().position(Option::is_none) {
            st.lanes[i] = Some(lane);
            i
        } else {
            st.lanes.push(Some(lane));
            st.lanes.len() - 1
        };
        // Room for every lane in the ready list, so queuing never allocates.
        let (n, queued) = (st.lanes.len(), st.ready.len());
        if st.ready.capacity() < n {
            st.ready.reserve(n - queued);
        }
        drop(st);
        Ok(Workers {
            pool: self.clone(),
            lane: index,
            owns_pool: false,
        })
    }

    /// Stop the threads: with `join`, wait for them (they finish the job they run; queued
    /// jobs of closed lanes are dropped).
    fn shut_down(self, join: bool) {
        self.shared.state.lock().shutdown = true;
        self.shared.work.notify_all();
        let threads = std::mem::take(&mut *self.shared.threads.lock());
        if join {
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn worker(s: &Shared) {
    warm_thread();
    let mut state = WorkerState::new(s.scratch_bytes);
    let mut st = s.state.lock();
    loop {
        let Some(i) = st.ready.pop_front() else {
            if st.shutdown {
                return;
            }
            s.work.wait(&mut st);
            continue;
        };
        let Some(lane) = st.lanes.get_mut(i).and_then(Option::as_mut) else {
            continue;
        };
        lane.queued = false;
        let Some(job) = lane.jobs.pop_front() else {
            continue;
        };
        lane.running += 1;
        if lane.wants_turn() {
            lane.queued = true;
            st.ready.push_back(i);
            s.work.notify_one();
        }
        drop(st);
        let again = exec::run_turn(job, &mut state);
        st = s.state.lock();
        let Some(lane) = st.lanes.get_mut(i).and_then(Option::as_mut) else {
            continue;
        };
        lane.running -= 1;
        if let Some(job) = again {
            if lane.closed {
                drop(job);
            } else {
                // Back to the tail: the other commands of this device and of the others
                // take their turn first. The capacity covers every context.
                lane.jobs.push_back(job);
            }
        }
        if lane.closed && lane.running == 0 {
            lane.jobs.clear();
            st.lanes[i] = None;
        } else if lane.wants_turn() {
            lane.queued = true;
            st.ready.push_back(i);
            s.work.notify_one();
        }
        s.ended.notify_all();
    }
}

/// One device's lane in a pool: what the device thread hands its jobs to.
pub struct Workers {
    pool: WorkerPool,
    lane: usize,
    /// The pool was started for this device alone: stopping the lane stops it.
    owns_pool: bool,
}

impl Workers {
    /// A pool of `n` workers named `tcmu-w/<name>/<i>` for one device with room for
    /// `capacity` queued jobs (each device its own threads, as when no shared pool is
    /// configured).
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        name: &str,
        n: usize,
        capacity: usize,
        scratch_bytes: usize,
    ) -> std::io::Result<Workers> {
        let pool = WorkerPool::start(&format!("tcmu-w/{name}"), n, scratch_bytes)?;
        let mut w = pool.open(capacity, n)?;
        w.owns_pool = true;
        Ok(w)
    }

    /// Queue a job. Never blocks and never allocates: the lane has room for every context
    /// of the device.
    pub fn send(&self, job: Job) {
        let s = &self.pool.shared;
        let mut st = s.state.lock();
        let State { lanes, ready, .. } = &mut *st;
        let Some(lane) = lanes.get_mut(self.lane).and_then(Option::as_mut) else {
            return;
        };
        if lane.closed || lane.jobs.len() == lane.jobs.capacity() {
            // Cannot happen while the device runs (the capacity covers every context);
            // complete rather than lose it.
            drop(st);
            tracing::error!(device = %job.link.name, "worker queue closed or full; failing the command");
            let mut ctx = job.ctx;
            ctx.done(tcmu_scsi::error::ScsiError::Busy.into());
            job.link.complete_from_backend(ctx);
            return;
        }
        lane.jobs.push_back(job);
        if lane.wants_turn() {
            lane.queued = true;
            ready.push_back(self.lane);
            drop(st);
            s.work.notify_one();
        }
    }

    /// Close the lane without waiting (some of its jobs are stuck in a backend that does
    /// not answer): queued jobs are dropped, running ones end when their operation returns.
    pub fn abandon(self) {
        self.close();
        if self.owns_pool {
            self.pool.clone().shut_down(false);
        }
    }

    /// Close the lane and wait (at most 10 s) for its jobs on threads to end.
    pub fn stop(self) {
        self.close();
        let s = &self.pool.shared;
        let until = Instant::now() + Duration::from_secs(10);
        let mut st = s.state.lock();
        while st
            .lanes
            .get(self.lane)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.closed && l.running > 0)
        {
            if s.ended.wait_until(&mut st, until).timed_out() {
                break;
            }
        }
        drop(st);
        if self.owns_pool {
            self.pool.clone().shut_down(true);
        }
    }

    fn close(&self) {
        let mut st = self.pool.shared.state.lock();
        let State { lanes, ready, .. } = &mut *st;
        if let Some(slot) = lanes.get_mut(self.lane) {
            if let Some(lane) = slot.as_mut() {
                lane.closed = true;
                lane.jobs.clear();
                if lane.queued {
                    ready.retain(|&i| i != self.lane);
                    lane.queued = false;
                }
                if lane.running == 0 {
                    *slot = None;
                }
            }
        }
    }
}
