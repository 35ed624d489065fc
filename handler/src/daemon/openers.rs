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
}
