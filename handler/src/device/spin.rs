//! Busy-polling before the device thread sleeps (`[daemon] busy_poll_us`, off by default).
//!
//! At queue depth 1 the next command arrives a short while after the previous one completed
//! (the initiator's own turn-around). Sleeping in `poll` in between costs a wake-up per
//! command: the kernel's doorbell interrupt must wake this thread, and under virtualisation a
//! cross-CPU wake-up costs about as much as the I/O itself (docs/test-services.md §1).
//! [`BusyPoll::wait`] spins on a cheap check (a load of the ring's `cmd_head`, the io_uring's
//! completion queue) for at most the budget before the thread sleeps.
//!
//! Adaptive: it remembers how long the recent idle gaps were (an exponentially weighted
//! average of the time from going idle to the next work, measured both when the spin
//! succeeds and when the thread wakes from its sleep) and spins only while that average is
//! within the budget, so a LUN that is idle or whose commands arrive far apart costs no CPU.
//! Every [`PROBE_EVERY`]th idle period it spins anyway, to notice when the gaps shrink again.
//!
//! One concern only (the decision and the spin); the device loop calls it from its wait, and
//! a loop that serves many LUNs can call it with a check over all of them.

use std::time::{Duration, Instant};

/// Spin once in this many idle periods even while the gaps are longer than the budget.
pub const PROBE_EVERY: u32 = 32;

/// See the module docs.
#[derive(Debug)]
pub struct BusyPoll {
    budget: Duration,
    /// Average idle gap, nanoseconds (starts at 0: the first idle periods spin).
    avg_gap_ns: u64,
    /// Idle periods since the last spin.
    since_spin: u32,
    /// When the current idle period began (set by [`BusyPoll::wait`], cleared by
    /// [`BusyPoll::woke`]).
    idle_since: Option<Instant>,
    /// Spins that found work, and all spins (for tests and diagnostics).
    hits: u64,
    spins: u64,
}

impl BusyPoll {
    /// A poller with `budget` per idle period; `Duration::ZERO` turns it off.
    #[must_use]
    pub fn new(budget: Duration) -> BusyPoll {
        BusyPoll {
            budget,
            avg_gap_ns: 0,
            since_spin: 0,
            idle_since: None,
            hits: 0,
            spins: 0,
        }
    }

    /// Whether it may ever spin.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.budget.is_zero()
    }

    /// The thread is about to sleep: spin while `ready` is false, at most the budget, when
    /// the recent gaps say the next work is likely within it. True when `ready` turned true
    /// (skip the sleep); false when the thread should sleep.
    pub fn wait(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        if !self.enabled() {
            return false;
        }
        let start = Instant::now();
        self.idle_since = Some(start);
        let budget_ns = u64::try_from(self.budget.as_nanos()).unwrap_or(u64::MAX);
        self.since_spin = self.since_spin.saturating_add(1);
        if self.avg_gap_ns > budget_ns && self.since_spin < PROBE_EVERY {
            return false;
        }
        self.since_spin = 0;
        self.spins += 1;
        loop {
            if ready() {
                self.hits += 1;
                self.woke();
                return true;
            }
            if start.elapsed() >= self.budget {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// The thread woke from its sleep (or the spin found work): the idle gap ends now.
    pub fn woke(&mut self) {
        let Some(t) = self.idle_since.take() else {
            return;
        };
        let gap = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Weight 1/4 for the newest gap.
        self.avg_gap_ns = self.avg_gap_ns - self.avg_gap_ns / 4 + gap / 4;
    }

    /// (spins that found work, spins).
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.spins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_spins_or_calls_the_check() {
        let mut p = BusyPoll::new(Duration::ZERO);
        assert!(!p.wait(|| panic!("checked while off")));
        assert_eq!(p.counts(), (0, 0));
    }

    #[test]
    fn work_arriving_within_the_budget_skips_the_sleep() {
        let mut p = BusyPoll::new(Duration::from_millis(50));
        let t = Instant::now();
        let hit = p.wait(|| t.elapsed() >= Duration::from_millis(2));
        assert!(hit);
        assert!(t.elapsed() < Duration::from_millis(50));
        assert_eq!(p.counts(), (1, 1));
    }

    #[test]
    fn a_spin_gives_up_at_the_budget() {
        let mut p = BusyPoll::new(Duration::from_millis(3));
        let t = Instant::now();
        assert!(!p.wait(|| false));
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(3), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(p.counts(), (0, 1));
    }

    #[test]
    fn long_gaps_stop_the_spinning_except_for_a_periodic_probe_and_short_ones_resume_it() {
        let mut p = BusyPoll::new(Duration::from_micros(100));
        // Idle periods of ~3 ms (slept, then woken): the average climbs above the budget.
        let long_gap = |p: &mut BusyPoll, checked: &mut u32| {
            let spun = p.wait(|| {
                *checked += 1;
                false
            });
            assert!(!spun);
            std::thread::sleep(Duration::from_millis(3));
            p.woke();
        };
        let mut checked = 0;
        for _ in 0..8 {
            long_gap(&mut p, &mut checked);
        }
        let (_, spins) = p.counts();
        assert!((1..8).contains(&spins), "stopped spinning: {spins} spins");
        checked = 0;
        for _ in 0..(2 * PROBE_EVERY) {
            long_gap(&mut p, &mut checked);
        }
        assert!(
            (1..=3).contains(&(p.counts().1 - spins)),
            "only the periodic probes spin: {:?}",
            p.counts()
        );
        assert!(checked > 0);
        // The gaps shrink (woken at once): the average falls and spinning resumes.
        let mut resumed = None;
        for i in 0..40 {
            if p.wait(|| true) {
                resumed = Some(i);
                break;
            }
            p.woke();
        }
        assert!(resumed.is_some_and(|i| i < 30), "resumed after {resumed:?}");
        assert!(p.wait(|| true));
    }
}
