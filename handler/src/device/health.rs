//! A device's backend health: what the device thread reports, and the monitor that
//! runs the supervisor's state machine ([`tcmu_warden_supervisor::health`]).
//!
//! The device thread only touches atomics ([`HealthCell`]): it counts connection-class
//! backend errors and deadline expiries, and reads whether the backend is lost (then new data
//! commands fail at once with NOT READY 04/0A, which initiators retry, instead of queueing
//! behind a backend that does not answer).
//!
//! The monitor is ticked by the device's event loop a few times a second: it turns those
//! counters into signals, and runs the probes the state machine asks for (pings, reopen) on a
//! **prober** thread shared by every device, so that a probe that never returns (a frozen
//! server) is noticed by its timeout instead of stopping the loop. At most one probe per
//! device runs at a time; a probe stuck for ever keeps its prober thread (the next probe of
//! any device starts another), and the device is reported lost until it returns.

use super::link::DeviceLink;
use crate::backend::Backend;
use crate::elastic::Elastic;
use crossbeam_channel::{bounded, Receiver, Sender};
use nix::errno::Errno;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tcmu_scsi::ErrnoClass;
use tcmu_warden_supervisor::health::{Health, Policy, Probe, Signal, Transition};
use tcmu_warden_supervisor::metrics::{BackendState, DeviceMetrics};

/// What the device thread, the monitor and `status` share about a backend's health.
#[derive(Debug, Default)]
pub struct HealthCell {
    /// Index into [`BackendState::ALL`].
    state: AtomicU8,
    io_failures: AtomicU64,
    fatal: AtomicU64,
    expired: AtomicU64,
    /// Reopen attempts since the device started.
    pub reopens: AtomicU64,
    /// Commands failed fast while the backend was lost.
    pub failed_fast: AtomicU64,
    /// The last transition, in words, with its time (for `status` and `diagnose`).
    last: Mutex<Option<(std::time::SystemTime, String)>>,
}

impl HealthCell {
    /// The current state.
    #[must_use]
    pub fn state(&self) -> BackendState {
        BackendState::ALL
            .get(usize::from(self.state.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(BackendState::Healthy)
    }

    /// Whether new commands should fail fast.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.state() == BackendState::Lost
    }

    /// A backend operation failed with `e`: connection-class errors count against the
    /// backend's health, and a fenced client (ESHUTDOWN: blocklisted) needs a reopen
    /// ([`ErrnoClass`] decides, as it does for the SCSI sense).
    pub fn note_error(&self, e: Errno) {
        match ErrnoClass::of(e as i32) {
            ErrnoClass::Fenced => {
                self.fatal.fetch_add(1, Ordering::Relaxed);
            }
            ErrnoClass::Connection => {
                self.io_failures.fetch_add(1, Ordering::Relaxed);
            }
            ErrnoClass::Medium
            | ErrnoClass::NoSpace
            | ErrnoClass::ReadOnly
            | ErrnoClass::Transient
            | ErrnoClass::Gone
            | ErrnoClass::Unsupported
            | ErrnoClass::Other => {}
        }
    }

    /// A command passed the handler's deadline.
    pub fn note_expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// The last transition and when it happened.
    #[must_use]
    pub fn last_transition(&self) -> Option<(std::time::SystemTime, String)> {
        self.last.lock().clone()
    }

    fn set(&self, state: BackendState, words: String) {
        let i = BackendState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.state
            .store(u8::try_from(i).unwrap_or(0), Ordering::Relaxed);
        *self.last.lock() = Some((std::time::SystemTime::now(), words));
    }
}

/// One device's health monitor: the state machine, ticked by the device's event loop
/// ([`Monitor::tick`]); its probes run on the shared probers.
pub struct Monitor {
    health: Health,
    link: Arc<DeviceLink>,
    metrics: Option<DeviceMetrics>,
    /// Probe results come back here (and the prober wakes the device's loop).
    res_tx: Sender<ProbeResult>,
    res_rx: Receiver<ProbeResult>,
    running: Option<Running>,
    /// Counter values already turned into signals: I/O failures, fatal ones, expiries.
    seen: (u64, u64, u64),
    tunables: u64,
    next_tick: Instant,
}

type ProbeResult = (Probe, Result<(), Errno>, Duration);

/// A probe for a prober thread: what to run, on what, and where its result goes.
struct ProbeJob {
    probe: Probe,
    backend: Arc<dyn Backend>,
    res: Sender<ProbeResult>,
    link: Arc<DeviceLink>,
}

/// Start monitoring `link`'s backend with `policy`. The monitor runs when the device's loop
/// calls [`Monitor::tick`]; it starts no thread of its own.
#[must_use]
pub fn start(link: Arc<DeviceLink>, policy: Policy, metrics: Option<DeviceMetrics>) -> Monitor {
    let (res_tx, res_rx) = bounded::<ProbeResult>(1);
    if let Some(m) = &metrics {
        m.set_backend_state(BackendState::Healthy);
    }
    let now = Instant::now();
    Monitor {
        health: Health::new(policy, now),
        tunables: link.tunables.generation(),
        link,
        metrics,
        res_tx,
        res_rx,
        running: None,
        seen: (0, 0, 0),
        next_tick: now,
    }
}

/// The probers every device shares ([`Elastic`] threads, up to [`PROBERS_MAX`], ending after
/// [`PROBER_IDLE`] without work). A probe that never returns (a frozen server) keeps its
/// thread and no other device's probe waits behind it: the next probe starts a thread, unless
/// [`PROBERS_MAX`] are running; then it waits in the queue for the first that is free (a probe
/// that waits past its timeout counts as failed, as one that does not answer).
fn probers() -> &'static Elastic {
    static P: OnceLock<Elastic> = OnceLock::new();
    P.get_or_init(|| Elastic::new("tcmu-probe", PROBER_IDLE, PROBERS_MAX))
}

/// Most prober threads at once (a fixed bound, whatever the number of devices).
const PROBERS_MAX: usize = 16;

/// How long an idle prober thread waits for a probe before it ends.
const PROBER_IDLE: Duration = Duration::from_secs(5);

/// Run one probe and hand its result back to the device's monitor (waking its loop).
fn prober(job: ProbeJob) {
    let ProbeJob {
        probe,
        backend,
        res,
        link,
    } = job;
    let t0 = Instant::now();
    let r = match probe {
        Probe::Ping => backend.ping(),
        Probe::Reopen => backend.reopen().and_then(|()| backend.ping()),
    };
    drop(backend);
    if res.send((probe, r, t0.elapsed())).is_ok() {
        link.wake_now();
    }
}

struct Running {
    probe: Probe,
    started: Instant,
    timed_out: bool,
}

impl Monitor {
    /// When the monitor next wants [`Monitor::tick`].
    #[must_use]
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Take a probe's result, turn the device's counters into signals, time out a probe that
    /// does not answer, and start the probe that is due. Never blocks.
    pub fn tick(&mut self, now: Instant) {
        while let Ok(r) = self.res_rx.try_recv() {
            self.probe_done(r);
        }
        if now < self.next_tick && !self.counters_moved() {
            return;
        }
        if self.link.tunables.generation() != self.tunables {
            self.tunables = self.link.tunables.generation();
            if let Some((interval, timeout)) = self.link.tunables.get().ping {
                let mut p = self.health.policy();
                p.interval = interval;
                p.timeout = timeout;
                p.settle = interval;
                self.health.set_policy(p, now);
                tracing::info!(device = %self.link.name, ?interval, ?timeout, "new health ping settings");
            }
        }
        self.counters(now);
        self.timeouts(now);
        self.start_due(now);
        let p = self.health.policy();
        // Errors and expiries are seen at the device's next pass (`counters_moved`); the tick
        // only paces pings and probe timeouts.
        let tick = (p.interval / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        self.next_tick = now + tick;
    }

    /// Whether the device counted a backend error or an expiry not yet turned into a signal.
    fn counters_moved(&self) -> bool {
        let cell = &self.link.health;
        (
            cell.io_failures.load(Ordering::Relaxed),
            cell.fatal.load(Ordering::Relaxed),
            cell.expired.load(Ordering::Relaxed),
        ) != self.seen
    }

    fn counters(&mut self, now: Instant) {
        let cell = &self.link.health;
        let cur = (
            cell.io_failures.load(Ordering::Relaxed),
            cell.fatal.load(Ordering::Relaxed),
            cell.expired.load(Ordering::Relaxed),
        );
        if cur.1 > self.seen.1 {
            self.feed(Signal::IoFailed { fatal: true }, now);
        }
        if cur.0 > self.seen.0 {
            self.feed(Signal::IoFailed { fatal: false }, now);
        }
        if cur.2 > self.seen.2 {
            self.feed(Signal::DeadlineExpired, now);
        }
        self.seen = cur;
    }

    /// A probe past the backend timeout counts as failed; while it still has not returned,
    /// every probe that falls due fails the same way (the backend still does not answer), so
    /// the state machine keeps moving (degraded to lost, reopen backoff) without a second
    /// probe piling up behind the stuck one.
    fn timeouts(&mut self, now: Instant) {
        let limit = self.health.policy().timeout;
        let Some(r) = &mut self.running else { return };
        let due = if r.timed_out {
            match self.health.due(now) {
                Some(p) => p,
                None => return,
            }
        } else if now.saturating_duration_since(r.started) >= limit {
            r.timed_out = true;
            tracing::warn!(device = %self.link.name, probe = ?r.probe, timeout_ms = limit.as_millis(), "health probe did not answer within the backend timeout");
            r.probe
        } else {
            return;
        };
        self.health.started(due, now);
        let sig = match due {
            Probe::Ping => Signal::PingTimedOut,
            Probe::Reopen => Signal::ReopenFailed,
        };
        self.feed(sig, now);
    }

    fn probe_done(&mut self, (probe, result, took): ProbeResult) {
        let now = Instant::now();
        let late = self.running.take().is_some_and(|r| r.timed_out);
        if let Some(m) = &self.metrics {
            if probe == Probe::Ping || result.is_ok() {
                m.ping_latency(took.as_secs_f64());
            }
        }
        if late {
            // Already counted as a failure when it timed out.
            tracing::info!(device = %self.link.name, ?probe, ?result, took_ms = took.as_millis(), "a health probe that had timed out returned");
            return;
        }
        let sig = match (probe, result) {
            (Probe::Ping, Ok(())) => Signal::PingOk(took),
            (Probe::Ping, Err(e)) => {
                tracing::warn!(device = %self.link.name, "health ping failed: {e}");
                Signal::PingFailed
            }
            (Probe::Reopen, Ok(())) => Signal::ReopenOk,
            (Probe::Reopen, Err(e)) => {
                tracing::warn!(device = %self.link.name, attempt = self.health.attempts(), "reopening the backend failed: {e}");
                Signal::ReopenFailed
            }
        };
        self.feed(sig, now);
    }

    fn start_due(&mut self, now: Instant) {
        if self.running.is_some() {
            return;
        }
        let Some(probe) = self.health.due(now) else {
            return;
        };
        let job = ProbeJob {
            probe,
            backend: self.link.backend(),
            res: self.res_tx.clone(),
            link: Arc::clone(&self.link),
        };
        if let Err(e) = probers().run(move || prober(job)) {
            tracing::warn!(device = %self.link.name, "cannot start a health prober: {e}");
            return;
        }
        if probe == Probe::Reopen {
            self.link.health.reopens.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.reopen();
            }
            tracing::info!(device = %self.link.name, attempt = self.health.attempts(), "reopening the backend");
        }
        self.health.started(probe, now);
        self.running = Some(Running {
            probe,
            started: now,
            timed_out: false,
        });
    }

    fn feed(&mut self, sig: Signal, now: Instant) {
        if let Some(t) = self.health.on(sig, now) {
            self.transition(&t);
        }
    }

    fn transition(&mut self, t: &Transition) {
        let backoff = self.health.backoff();
        let words = match t.to {
            BackendState::Lost => format!(
                "{} (was {}): {}; new commands fail fast with NOT READY 04/0A (retryable); next reopen in about {:.1} s",
                t.to.label(),
                t.from.label(),
                t.reason,
                backoff.as_secs_f64()
            ),
            _ => format!("{} (was {}): {}", t.to.label(), t.from.label(), t.reason),
        };
        match t.to {
            BackendState::Healthy | BackendState::Recovering => {
                tracing::info!(device = %self.link.name, from = t.from.label(), to = t.to.label(), "backend {}", words);
            }
            BackendState::Degraded | BackendState::Lost => {
                tracing::warn!(device = %self.link.name, from = t.from.label(), to = t.to.label(), "backend {}", words);
            }
        }
        self.link.health.set(t.to, words);
        if let Some(m) = &self.metrics {
            m.set_backend_state(t.to);
        }
    }
}
