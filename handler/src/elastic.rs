//! Elastic threads: a set of threads that runs blocking jobs off the loops, started when a
//! job finds none idle and ending after a while without work (docs/DESIGN.md, "Threads").
//!
//! Used for the opens of devices (`daemon::openers`) and for the health probes every device
//! shares (`device::health`). A job that never returns (a hung backend) keeps its thread and
//! delays no other: the next job finds no idle thread and starts one, up to the set's bound;
//! at the bound a job waits in the queue for the first thread that is free.
//!
//! Each idle thread offers itself by counting one in `idle`; a job that takes such an offer
//! (decrements it) starts no thread. A thread whose wait for work times out withdraws its
//! offer and ends, unless the offer was taken meanwhile: then a job is on its way to it.

use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// The threads of one set; cheap to clone (every clone hands work to the same threads).
#[derive(Clone)]
pub struct Elastic {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    /// Threads waiting for a job and not yet promised one.
    idle: AtomicUsize,
    /// Threads running.
    threads: AtomicUsize,
    idle_for: Duration,
    max: usize,
    name: &'static str,
}

impl Elastic {
    /// No thread yet; at most `max` threads named `name`, each ending after `idle_for`
    /// without a job.
    #[must_use]
    pub fn new(name: &'static str, idle_for: Duration, max: usize) -> Elastic {
        let (tx, rx) = unbounded();
        Elastic {
            inner: Arc::new(Inner {
                tx,
                rx,
                idle: AtomicUsize::new(0),
                threads: AtomicUsize::new(0),
                idle_for,
                max: max.max(1),
                name,
            }),
        }
    }

    /// Run `job` on an idle thread, on a new one when none is idle, or (at the bound) on the
    /// first that becomes free. Never blocks.
    ///
    /// # Errors
    /// When a thread was needed and could not be started; `job` is then dropped, not run.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let inner = &self.inner;
        let promised = inner
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let room = || {
            inner
                .threads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < inner.max).then_some(n + 1)
                })
                .is_ok()
        };
        if !promised && room() {
            let me = Arc::clone(inner);
            let spawned = std::thread::Builder::new()
                .name(inner.name.into())
                .spawn(move || me.serve());
            if let Err(e) = spawned {
                inner.threads.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        }
        // Unbounded: never blocks. The promised or the new thread takes it (or another one
        // that became idle first: every job has a thread to run it).
        inner
            .tx
            .send(Box::new(job))
            .map_err(|_| std::io::Error::other("elastic thread channel closed"))
    }

    /// Threads running (idle or not).
    #[must_use]
    pub fn threads(&self) -> usize {
        self.inner.threads.load(Ordering::SeqCst)
    }

    /// Threads idle and not promised a job.
    #[must_use]
    pub fn idle(&self) -> usize {
        self.inner.idle.load(Ordering::SeqCst)
    }
}

impl Inner {
    /// One thread: runs jobs one at a time, offering itself (`idle`) after each, until none
    /// came for `idle_for`. The job it was started for is its first.
    fn serve(&self) {
        loop {
            match self.rx.recv_timeout(self.idle_for) {
                Ok(job) => {
                    job();
                    self.idle.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => {
                    // Withdraw the offer; if a job was promised to this thread meanwhile,
                    // stay for it.
                    if self
                        .idle
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        self.threads.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn until(what: &str, cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{what}: not within 10 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// At the bound a job waits for the first free thread, and no thread beyond the bound
    /// is started.
    #[test]
    fn at_the_bound_a_job_waits_for_the_first_free_thread() {
        let e = Elastic::new("test-elastic", Duration::from_millis(300), 2);
        let release = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let r = Arc::clone(&release);
            e.run(move || {
                while r.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
            .unwrap();
        }
        let d = Arc::clone(&done);
        e.run(move || {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(e.threads(), 2, "no third thread");
        assert_eq!(done.load(Ordering::SeqCst), 0, "queued behind the two");
        release.store(1, Ordering::SeqCst);
        until("the queued job ran", || done.load(Ordering::SeqCst) == 1);
        until("idle threads ended", || e.threads() == 0);
    }

    /// Jobs one after another reuse one thread; a hung job does not delay the next one (a
    /// second thread takes it); idle threads end (as the opener threads use it).
    #[test]
    fn jobs_reuse_an_idle_thread_a_hung_one_delays_none_and_idle_threads_end() {
        let o = Elastic::new("test-elastic", Duration::from_millis(300), usize::MAX);
        let done = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(parking_lot::Mutex::new(Vec::new()));
        for _ in 0..5 {
            let (d, n) = (Arc::clone(&done), Arc::clone(&names));
            let before = done.load(Ordering::SeqCst);
            o.run(move || {
                n.lock().push(std::thread::current().id());
                d.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            until("a job ran", || done.load(Ordering::SeqCst) > before);
            // Let the thread offer itself again before the next open.
            until("the thread idle again", || o.idle() == 1);
        }
        let ids = names.lock().clone();
        assert!(ids.iter().all(|i| *i == ids[0]), "one thread ran them all");
        assert_eq!(o.threads(), 1);

        // A hung job: the next one runs at once on a second thread.
        let release = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&release);
        o.run(move || {
            while r.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap();
        let d = Arc::clone(&done);
        let t = Instant::now();
        // The first thread is busy with the hung job once the idle count is back to 0.
        until("the hung job taken", || o.idle() == 0);
        o.run(move || {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        until("the job after the hung one ran", || {
            done.load(Ordering::SeqCst) == 6
        });
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(o.threads(), 2);
        release.store(1, Ordering::SeqCst);
        // Both end once idle for 300 ms.
        until("idle threads ended", || o.threads() == 0);
    }
}
