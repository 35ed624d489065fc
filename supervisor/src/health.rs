//! The backend health state machine of one device: healthy, degraded, lost, recovering.
//!
//! Pure logic, no threads and no clock of its own: the caller (the device's health monitor)
//! feeds it [`Signal`]s with the time they happened and asks [`Health::due`] which probe to
//! start next. That keeps every transition testable with made-up instants.
//!
//! ```text
//!            I/O error, deadline expiry,            failed or timed-out ping,
//!            failed or slow ping                    fatal I/O error (blocklisted)
//!  Healthy ─────────────────────────────▶ Degraded ─────────────────────────────▶ Lost
//!     ▲  ◀──── ping answers, no failure for `settle` ───┘                          │ ▲
//!     │                                                   reopen + ping answer     │ │ any failure
//!     └──── ping answers, no failure for `settle` ──── Recovering ◀────────────────┘ │
//!                                                          └─────────────────────────┘
//! ```
//!
//! While **lost**, the device fails new commands at once with the retryable status instead of
//! letting them pile up behind a backend that does not answer, and the monitor tries to
//! reopen the backend after a bounded exponential backoff with jitter (so that many LUNs of a
//! failed cluster do not reconnect in lockstep). While **recovering**, commands flow again; a
//! failure sends the device back to lost with a longer backoff.

use crate::metrics::BackendState;
use std::time::{Duration, Instant};

/// The knobs of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Time between pings while nothing is wrong.
    pub interval: Duration,
    /// The backend tier: a ping that has not answered after this long counts as failed.
    pub timeout: Duration,
    /// How long after the last failure a ping must answer to call the backend healthy again
    /// (damps flapping between healthy and degraded).
    pub settle: Duration,
    /// First wait before reopening a lost backend.
    pub backoff_min: Duration,
    /// Longest wait between reopen attempts.
    pub backoff_max: Duration,
}

impl Policy {
    /// Pings every `interval`, each bounded by `timeout` (the backend tier); settles after one
    /// interval; reopens after 1 s, doubling up to 10 s (so a backend that comes back is
    /// serving again within about 10 s, while a dead one is not hammered).
    #[must_use]
    pub fn new(interval: Duration, timeout: Duration) -> Policy {
        Policy {
            interval,
            timeout,
            settle: interval,
            backoff_min: Duration::from_secs(1).min(interval),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Something the monitor observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Backend operations failed with a connection-class error (ETIMEDOUT, ENOTCONN, ...);
    /// `fatal` when the connection cannot come back by itself (ESHUTDOWN: blocklisted).
    IoFailed {
        /// The backend must be reopened.
        fatal: bool,
    },
    /// Commands passed the handler's deadline.
    DeadlineExpired,
    /// A ping answered, taking this long.
    PingOk(Duration),
    /// A ping failed.
    PingFailed,
    /// A ping did not answer within the policy's timeout (it may still be running).
    PingTimedOut,
    /// Reopening, and the ping after it, succeeded.
    ReopenOk,
    /// Reopening (or the ping after it) failed or timed out.
    ReopenFailed,
}

/// A probe the monitor should start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Ping the backend.
    Ping,
    /// Reopen the backend, then ping it.
    Reopen,
}

/// A change of state, to log and export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BackendState,
    /// The state entered.
    pub to: BackendState,
    /// Why, in words.
    pub reason: &'static str,
}

/// The state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct Health {
    policy: Policy,
    state: BackendState,
    since: Instant,
    /// When the next probe is due.
    next: Instant,
    /// Current wait between reopen attempts (0 while not lost).
    backoff: Duration,
    /// Reopen attempts since the backend was lost.
    attempts: u32,
    last_failure: Option<Instant>,
    jitter: u64,
}

impl Health {
    /// A healthy backend at `now`; the first ping is due one interval later.
    #[must_use]
    pub fn new(policy: Policy, now: Instant) -> Health {
        Health {
            policy,
            state: BackendState::Healthy,
            since: now,
            next: now + policy.interval,
            backoff: Duration::ZERO,
            attempts: 0,
            last_failure: None,
            jitter: seed(),
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> BackendState {
        self.state
    }

    /// When the current state was entered.
    #[must_use]
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Reopen attempts since the backend was lost (0 when it is not).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the next probe is due.
    #[must_use]
    pub fn next_probe(&self) -> Instant {
        self.next
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Change the policy (a configuration reload); the next probe is rescheduled if the new
    /// interval brings it closer.
    pub fn set_policy(&mut self, policy: Policy, now: Instant) {
        self.policy = policy;
        if matches!(self.state, BackendState::Healthy) {
            self.next = self.next.min(now + policy.interval);
        }
    }

    /// The probe to start at `now`, if one is due (the caller starts at most one at a time
    /// and calls [`Health::started`]).
    #[must_use]
    pub fn due(&self, now: Instant) -> Option<Probe> {
        if now < self.next {
            return None;
        }
        Some(match self.state {
            BackendState::Lost => Probe::Reopen,
            _ => Probe::Ping,
        })
    }

    /// A probe was started at `now`: schedule the one after it.
    pub fn started(&mut self, probe: Probe, now: Instant) {
        self.next = match probe {
            Probe::Ping => now + self.policy.interval,
            // Rescheduled by the result; until then, never a second one.
            Probe::Reopen => now + self.policy.timeout.max(self.policy.interval) * 2,
        };
    }

    /// Feed one observation; returns the transition it caused, if any.
    pub fn on(&mut self, signal: Signal, now: Instant) -> Option<Transition> {
        use BackendState::{Degraded, Healthy, Lost, Recovering};
        let failure = !matches!(signal, Signal::PingOk(_) | Signal::ReopenOk);
        if failure {
            self.last_failure = Some(now);
        }
        let settled = self.last_failure.map_or(true, |t| {
            now.saturating_duration_since(t) >= self.policy.settle
        });
        let slow = matches!(signal, Signal::PingOk(d) if d > self.policy.timeout / 2);
        let (to, reason) = match (self.state, signal) {
            (Lost, Signal::ReopenOk) => (Recovering, "reopened, and the backend answers"),
            (Lost, Signal::ReopenFailed) => {
                self.schedule_reopen(now);
                return None;
            }
            (Lost, _) => return None,
            (_, Signal::IoFailed { fatal: true }) => (
                Lost,
                "the backend refused us for good (blocklisted or shut down): reopening",
            ),
            (Healthy, Signal::IoFailed { .. }) => {
                (Degraded, "backend I/O failed with a connection error")
            }
            (Healthy, Signal::DeadlineExpired) => {
                (Degraded, "commands passed the handler's deadline")
            }
            (Healthy, Signal::PingFailed | Signal::PingTimedOut) => {
                (Degraded, "a health ping failed")
            }
            (Healthy, Signal::PingOk(_)) if slow => (
                Degraded,
                "a health ping took more than half the backend timeout",
            ),
            (Degraded, Signal::PingFailed) => (Lost, "the backend does not answer pings"),
            (Degraded, Signal::PingTimedOut) => (
                Lost,
                "a health ping did not answer within the backend timeout",
            ),
            (Degraded | Recovering, Signal::PingOk(_)) if settled && !slow => {
                (Healthy, "pings answer and nothing failed for a while")
            }
            (Recovering, _) if failure => (Lost, "failed again while recovering"),
            _ => {
                if failure && matches!(self.state, Degraded) {
                    // Confirm soon whether it is still answering.
                    self.next = self.next.min(now + self.policy.interval / 4);
                }
                return None;
            }
        };
        Some(self.enter(to, reason, now))
    }

    fn enter(&mut self, to: BackendState, reason: &'static str, now: Instant) -> Transition {
        let from = self.state;
        self.state = to;
        self.since = now;
        match to {
            BackendState::Lost => {
                self.attempts = 0;
                if !matches!(from, BackendState::Recovering) {
                    self.backoff = Duration::ZERO;
                }
                self.schedule_reopen(now);
            }
            // Ping soon to confirm (degraded) or to settle (recovering).
            BackendState::Degraded => self.next = now + self.policy.interval / 4,
            BackendState::Recovering => self.next = now + self.policy.settle,
            BackendState::Healthy => {
                self.backoff = Duration::ZERO;
                self.attempts = 0;
                self.next = now + self.policy.interval;
            }
        }
        Transition { from, to, reason }
    }

    /// Next reopen attempt: the backoff doubles from `backoff_min` up to `backoff_max`, and the
    /// wait is spread by ±20% so that many devices do not retry in lockstep.
    fn schedule_reopen(&mut self, now: Instant) {
        self.backoff = if self.backoff.is_zero() {
            self.policy.backoff_min
        } else {
            (self.backoff * 2).min(self.policy.backoff_max)
        };
        self.attempts = self.attempts.saturating_add(1);
        // xorshift64: cheap, good enough to spread retries.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let permille = 800 + self.jitter % 401; // 0.8 ..= 1.2
        let wait = self.backoff.mul_f64(permille as f64 / 1000.0);
        self.next = now + wait;
    }

    /// The current wait between reopen attempts (zero when not lost).
    #[must_use]
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
}

/// A different non-zero seed for each state machine (devices created together still differ).
fn seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    (NEXT.fetch_add(0x6a09_e667_f3bc_c909, Ordering::Relaxed) ^ clock) | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendState::{Degraded, Healthy, Lost, Recovering};

    fn policy() -> Policy {
        Policy {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn pings_are_due_every_interval_while_healthy() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(), t0);
        assert_eq!(h.due(t0), None);
        assert_eq!(h.due(t0 + S(5)), Some(Probe::Ping));
        h.started(Probe::Ping, t0 + S(5));
        assert_eq!(h.due(t0 + S(9)), None);
        assert_eq!(
            h.on(Signal::PingOk(Duration::from_millis(3)), t0 + S(5)),
            None
        );
        assert_eq!(h.state(), Healthy);
    }

    #[test]
    fn the_full_cycle_healthy_degraded_lost_recovering_healthy() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(), t0);
        let t = h.on(Signal::DeadlineExpired, t0 + S(1)).unwrap();
        assert_eq!((t.from, t.to), (Healthy, Degraded));
        // A confirming ping is due soon, not a whole interval later.
        assert!(h.next_probe() <= t0 + S(1) + S(5) / 4);
        let t = h.on(Signal::PingTimedOut, t0 + S(12)).unwrap();
        assert_eq!((t.from, t.to), (Degraded, Lost));
        assert_eq!(h.due(t0 + S(12)), None, "waits for the backoff first");
        let first = h.next_probe() - (t0 + S(12));
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        // Pings and I/O results while lost change nothing: the reopen decides.
        assert_eq!(h.on(Signal::PingOk(S(0)), t0 + S(13)), None);
        assert_eq!(h.on(Signal::IoFailed { fatal: false }, t0 + S(13)), None);
        let at = h.next_probe();
        assert_eq!(h.due(at), Some(Probe::Reopen));
        h.started(Probe::Reopen, at);
        assert_eq!(h.due(at + S(1)), None, "one reopen at a time");
        assert_eq!(h.on(Signal::ReopenFailed, at + S(1)), None);
        assert_eq!(h.attempts(), 2);
        assert_eq!(h.backoff(), S(2), "the backoff doubles");
        let at = h.next_probe();
        let t = h.on(Signal::ReopenOk, at).unwrap();
        assert_eq!((t.from, t.to), (Lost, Recovering));
        // Settling: a ping too soon after the last failure keeps it recovering.
        let t = h
            .on(Signal::PingOk(Duration::from_millis(2)), at + S(6))
            .unwrap();
        assert_eq!((t.from, t.to), (Recovering, Healthy));
        assert_eq!(h.backoff(), Duration::ZERO);
        assert_eq!(h.attempts(), 0);
    }

    #[test]
    fn a_failure_while_recovering_goes_back_to_lost_with_a_longer_backoff() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(), t0);
        h.on(Signal::IoFailed { fatal: true }, t0);
        assert_eq!(h.state(), Lost);
        h.on(Signal::ReopenOk, t0 + S(1));
        assert_eq!(h.state(), Recovering);
        let t = h.on(Signal::IoFailed { fatal: false }, t0 + S(2)).unwrap();
        assert_eq!((t.from, t.to), (Recovering, Lost));
        assert_eq!(h.backoff(), S(2), "the backoff kept growing");
        for _ in 0..10 {
            h.on(Signal::ReopenFailed, t0 + S(3));
        }
        assert_eq!(h.backoff(), S(8), "bounded by backoff_max");
        let wait = h.next_probe() - (t0 + S(3));
        assert!(
            wait <= S(8).mul_f64(1.2) && wait >= S(8).mul_f64(0.8),
            "{wait:?}"
        );
    }

    #[test]
    fn degraded_returns_to_healthy_only_after_settling() {
        let t0 = Instant::now();
        let mut h = Health::new(policy(), t0);
        h.on(Signal::IoFailed { fatal: false }, t0);
        assert_eq!(h.state(), Degraded);
        assert_eq!(
            h.on(Signal::PingOk(Duration::from_millis(1)), t0 + S(1)),
            None,
            "too soon"
        );
        assert_eq!(h.state(), Degraded);
        h.on(Signal::PingOk(Duration::from_millis(1)), t0 + S(6));
        assert_eq!(h.state(), Healthy);
        // A slow ping (over half the timeout) degrades a healthy backend.
        let t = h.on(Signal::PingOk(S(6)), t0 + S(20)).unwrap();
        assert_eq!((t.from, t.to), (Healthy, Degraded));
        // Failed pings while degraded: lost.
        let t = h.on(Signal::PingFailed, t0 + S(21)).unwrap();
        assert_eq!((t.from, t.to), (Degraded, Lost));
    }

    #[test]
    fn jitter_spreads_devices_that_fail_together() {
        let t0 = Instant::now();
        let mut waits = std::collections::BTreeSet::new();
        for i in 0..8u64 {
            let mut h = Health::new(policy(), t0);
            h.jitter = 0x1234_5678 + i * 0x9e37;
            h.on(Signal::IoFailed { fatal: true }, t0);
            waits.insert(h.next_probe() - t0);
        }
        assert!(waits.len() >= 6, "{waits:?}");
    }
}
