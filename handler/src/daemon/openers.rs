//! The threads that open devices (docs/DESIGN.md, "Device lifecycle").
//!
//! An open runs off the main loop, since a backend may take long or hang. It used to get a
//! thread of its own, started for it and ended with it; in the qemu guest of the benchmarks
//! that start and end (a kernel stack, the signal stack mapped and unmapped, the thread's
//! io_uring context made and torn down) took 2-7 ms before the open even began. Now an
//! open goes to an idle opener thread, or to a new one when none is idle; a thread that has
//! had no open for [`IDLE`] ends. An open that hangs keeps its thread and delays no other:
//! the next open finds no idle thread and starts one.

use crate::elastic::Elastic;
use std::time::Duration;

/// How long an opener thread waits for the next open before it ends.
pub const IDLE: Duration = Duration::from_secs(10);

/// The opener threads ([`Elastic`], unbounded: every hung open keeps one); cheap to clone.
#[derive(Clone)]
pub struct Openers {
    threads: Elastic,
}

impl Default for Openers {
    fn default() -> Openers {
        Openers::new(IDLE)
    }
}

impl Openers {
    /// No thread yet; threads end after `idle_for` without an open.
    #[must_use]
    pub fn new(idle_for: Duration) -> Openers {
        Openers {
            threads: Elastic::new("tcmu-open", idle_for, usize::MAX),
        }
    }

    /// Run `job` on an idle opener thread, or on a new one when none is idle.
    ///
    /// # Errors
    /// When no thread is idle and none can be started; `job` is then dropped, not run.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        self.threads.run(job)
    }

    /// Opener threads running (idle or not).
    #[cfg(test)]
    #[must_use]
    pub fn threads(&self) -> usize {
        self.threads.threads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
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

    /// Opens one after another reuse one thread; a hung open does not delay the next one (a
    /// second thread takes it); idle threads end.
    #[test]
    fn opens_reuse_an_idle_thread_a_hung_one_delays_none_and_idle_threads_end() {
        let o = Openers::new(Duration::from_millis(300));
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
            until("an open ran", || done.load(Ordering::SeqCst) > before);
            // Let the thread offer itself again before the next open.
            until("the thread idle again", || o.threads.idle() == 1);
        }
        let ids = names.lock().clone();
        assert!(ids.iter().all(|i| *i == ids[0]), "one thread ran them all");
        assert_eq!(o.threads(), 1);

        // A hung open: the next one runs at once on a second thread.
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
        // The first thread is busy with the hung open once the idle count is back to 0.
        until("the hung open taken", || o.threads.idle() == 0);
        o.run(move || {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        until("the open after the hung one ran", || {
            done.load(Ordering::SeqCst) == 6
        });
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(o.threads(), 2);
        release.store(1, Ordering::SeqCst);
        // Both end once idle for 300 ms.
        until("idle threads ended", || o.threads() == 0);
    }
}
