//! The device lifecycle driven by the kernel's generic netlink events (`TCM-USER`/`config`).
//!
//! Every ADDED, REMOVED and RECONFIG event is answered with its own `*_DONE` (via
//! [`Listener::reply`]), echoing DEVICE_ID, with 0 or `-errno`. Opening and stopping a
//! device can be slow (a backend that does not answer), and so can a RECONFIG that opens a
//! new cfgstring or resizes the store: they run on their own threads and report back here
//! (a RECONFIG within a bound, else it is answered ETIMEDOUT, see [`super::reconfig_job`]);
//! the main loop keeps handling netlink and other devices meanwhile.

use super::open::{open_backend, serve, DeviceError, Served};
use super::openers::Openers;
use super::reconfig_job::{self, BackendOpener, Job, Report, Work};
use super::DaemonConfig;
use crate::backend::cfgstring;
use crate::device::ReconfigError;
use crate::netlink::{Event, EventKind, Listener, NetlinkError, Reconfig};
use crossbeam_channel::{unbounded, Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tcmu_ring::parse_uio_name;

/// Opens one device (`serve` in the daemon; tests put their own in its place).
pub(super) type Opener =
    Arc<dyn Fn(&Path, &DaemonConfig, bool) -> Result<Served, DeviceError> + Send + Sync>;

/// What a background open or stop reports.
enum Finished {
    /// An open ended. `ev` is the ADDED it answers (None: a device found at start-up, no
    /// netlink request waits); `token` says which open of `minor` it was.
    Opened {
        minor: u32,
        token: u64,
        dev: PathBuf,
        ev: Option<Event>,
        result: Result<Box<Served>, DeviceError>,
        /// When the open was asked, and how long after that its thread ran and it ended.
        asked: Asked,
    },
    /// A device was stopped; `ev` is the REMOVED waiting for that, if any.
    Stopped {
        ev: Option<Event>,
        /// When the stop was asked.
        t0: std::time::Instant,
        /// How long after `t0` the device and its backend were closed.
        closed: std::time::Duration,
    },
    /// A reconfiguration job of `minor` (number `job`) reports.
    Reconfig {
        minor: u32,
        job: u64,
        report: Report,
    },
}

/// When an open was asked (the ADDED read from netlink, or the device found at start-up),
/// and how long after that its thread ran and the open ended.
#[derive(Clone, Copy)]
struct Asked {
    at: std::time::Instant,
    began: std::time::Duration,
    ended: std::time::Duration,
}

/// The reconfigurations of one device: one runs at a time, in the order they came.
#[derive(Default)]
struct Reconfigs {
    running: Option<(u64, Job, Event)>,
    queued: VecDeque<Event>,
}

/// An open in progress on one uio minor.
struct Opening {
    /// Matches [`Finished::Opened::token`]: a result with another token is stale (its device
    /// was removed, or replaced, while it opened) and is stopped, never served.
    token: u64,
    /// The uio name it opens (`tcm-user/<hba>/<name>/...`; empty: not known, start-up).
    device: String,
    /// Further ADDED events for the same device (start-up scan and event raced), answered
    /// with the open's result.
    also_answer: Vec<Event>,
    /// Found at start-up (counted in [`Lifecycle::adopting`]).
    adopted: bool,
}

/// The devices being served and the netlink conversation about them.
///
/// The table of served devices holds only live devices: a device whose thread ended on its
/// own (uio hangup or error) is dropped from it on the next pass ([`Lifecycle::sweep`]); an
/// open that finishes after its device was removed is stopped instead of served; an ADDED on a
/// minor that still has a stale entry replaces it (the kernel reuses a minor only once the
/// old uio device is gone).
pub struct Lifecycle {
    cfg: Arc<DaemonConfig>,
    listener: Option<Listener>,
    /// Served devices by uio minor.
    pub served: HashMap<u32, Served>,
    opening: HashMap<u32, Opening>,
    next_token: u64,
    open: Opener,
    /// The threads opens run on.
    openers: Openers,
    tx: Sender<Finished>,
    rx: Receiver<Finished>,
    wake: Arc<EventFd>,
    adopt_failures: usize,
    /// Devices being stopped in the background (their backends closing).
    stopping: usize,
    /// Reconfigurations running or waiting, by uio minor.
    reconfigs: HashMap<u32, Reconfigs>,
    /// Reconfiguration threads not over yet (a replaced backend closing counts until it is
    /// closed or its bound passed).
    jobs: usize,
    next_job: u64,
    /// Opens a new cfgstring's backend (tests put their own in its place).
    pub(super) open_backend: BackendOpener,
    /// Every reply sent, `(event command, DEVICE_ID, status)` (tests read it).
    #[cfg(test)]
    sent: Vec<(u8, u32, i32)>,
}

impl Lifecycle {
    /// A lifecycle listening on `listener` (None: a fixed set of devices, no netlink).
    ///
    /// # Errors
    /// When the wake-up eventfd cannot be created.
    pub fn new(cfg: Arc<DaemonConfig>, listener: Option<Listener>) -> std::io::Result<Lifecycle> {
        Self::with_opener(cfg, listener, Arc::new(serve))
    }

    pub(super) fn with_opener(
        cfg: Arc<DaemonConfig>,
        listener: Option<Listener>,
        open: Opener,
    ) -> std::io::Result<Lifecycle> {
        let (tx, rx) = unbounded();
        let metrics = cfg.metrics.clone();
        let open_backend: BackendOpener =
            Arc::new(move |subtype: &str, rest: &str, device: &str, size: u64| {
                open_backend(subtype, rest, device, size, metrics.as_ref())
            });
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        Ok(Lifecycle {
            cfg,
            listener,
            served: HashMap::new(),
            opening: HashMap::new(),
            next_token: 0,
            open,
            openers: Openers::default(),
            tx,
            rx,
            wake,
            adopt_failures: 0,
            stopping: 0,
            reconfigs: HashMap::new(),
            jobs: 0,
            next_job: 0,
            open_backend,
            #[cfg(test)]
            sent: Vec::new(),
        })
    }

    /// File descriptors the main loop polls for this lifecycle.
    #[must_use]
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.wake.as_fd()];
        if let Some(l) = &self.listener {
            v.push(l.as_fd());
        }
        v
    }

    /// Start serving a device found at start-up, on its own thread (ring reset first: a
    /// predecessor may have died). A slow backend delays neither the other devices nor
    /// netlink; [`Lifecycle::adopting`] says how many are still opening.
    pub fn adopt(&mut self, dev: PathBuf, minor: u32) {
        self.start_open(minor, dev, None, String::new(), true);
    }

    /// Open `dev` on an opener thread; the result comes back as [`Finished::Opened`].
    fn start_open(
        &mut self,
        minor: u32,
        dev: PathBuf,
        ev: Option<Event>,
        device: String,
        adopted: bool,
    ) {
        let at = std::time::Instant::now();
        self.next_token += 1;
        let token = self.next_token;
        let (cfg, tx, wake, open) = (
            Arc::clone(&self.cfg),
            self.tx.clone(),
            Arc::clone(&self.wake),
            Arc::clone(&self.open),
        );
        let restart = adopted;
        let answer = ev.clone();
        let spawned = self.openers.run(move || {
            let began = at.elapsed();
            let result = open(&dev, &cfg, restart).map(Box::new);
            let asked = Asked {
                at,
                began,
                ended: at.elapsed(),
            };
            let _ = tx.send(Finished::Opened {
                minor,
                token,
                dev,
                ev,
                result,
                asked,
            });
            let _ = wake.write(1);
        });
        match spawned {
            Ok(()) => {
                self.opening.insert(
                    minor,
                    Opening {
                        token,
                        device,
                        also_answer: Vec::new(),
                        adopted,
                    },
                );
            }
            Err(e) => {
                tracing::error!("cannot start an open thread: {e}");
                if let Some(ev) = answer {
                    self.reply(&ev, -(crate::backend::errno_of(&e) as i32));
                }
            }
        }
    }

    /// Devices found at start-up that are still being opened.
    #[must_use]
    pub fn adopting(&self) -> usize {
        self.opening.values().filter(|o| o.adopted).count()
    }

    /// Devices that failed to open at start-up.
    #[must_use]
    pub fn adopt_failures(&self) -> usize {
        self.adopt_failures
    }

    /// Drop from the served table every device whose thread has ended on its own (its uio
    /// device went away or failed): it no longer serves anything, and a later ADDED on the
    /// same minor must open the new device rather than be told it is served already.
    pub fn sweep(&mut self) {
        self.expire_reconfigs();
        let ended: Vec<u32> = self
            .served
            .iter()
            .filter(|(_, s)| s.handle.is_finished())
            .map(|(m, _)| *m)
            .collect();
        for minor in ended {
            if let Some(s) = self.served.remove(&minor) {
                tracing::warn!(device = %s.name, minor, "the device thread ended on its own (uio device gone or failed); no longer served");
                self.retire(s, None);
            }
        }
    }

    /// Handle whatever is pending: netlink events and finished background work.
    pub fn poll(&mut self) {
        let _ = self.wake.read();
        while let Ok(f) = self.rx.try_recv() {
            self.finished(f);
        }
        self.sweep();
        loop {
            let Some(l) = self.listener.as_mut() else {
                return;
            };
            match l.recv() {
                Ok(Some(ev)) => self.event(ev),
                Ok(None) => return,
                Err(NetlinkError::MalformedEvent {
                    cmd,
                    device_id: Some(id),
                    error,
                }) => {
                    tracing::error!(
                        cmd,
                        device_id = id,
                        "malformed netlink event ({error}); refusing it"
                    );
                    self.reply_raw(cmd, id, -libc::EINVAL);
                }
                Err(NetlinkError::Overrun) => {
                    tracing::error!("netlink receive buffer overrun: events were lost; devices added meanwhile need a daemon restart");
                }
                Err(e @ NetlinkError::Io { .. }) => {
                    tracing::error!("netlink socket failed, no longer listening: {e}");
                    self.listener = None;
                    return;
                }
                Err(e) => tracing::warn!("ignoring netlink message: {e}"),
            }
        }
    }

    fn event(&mut self, ev: Event) {
        tracing::info!(device = %ev.device, minor = ev.minor, device_id = ev.device_id, kind = ?ev.cmd, "netlink event");
        match &ev.cmd {
            EventKind::Added => self.added(ev),
            EventKind::Removed => self.removed(ev),
            EventKind::Reconfig(_) => self.reconfig(ev),
        }
    }

    fn added(&mut self, ev: Event) {
        // Refuse at once what we cannot serve, with a reason: `enable` then fails cleanly.
        let name = match parse_uio_name(&ev.device) {
            Ok(n) if n.subtype.is_some_and(|s| cfgstring::SUBTYPES.contains(&s)) => {
                format!("user_{}/{}", n.hba, n.device)
            }
            Ok(n) => {
                tracing::error!(device = %ev.device, subtype = ?n.subtype, "refused: not a subtype tcmu-warden serves ({})", cfgstring::SUBTYPES.join(", "));
                self.reply(&ev, -libc::ENOENT);
                return;
            }
            Err(e) => {
                tracing::error!(device = %ev.device, "refused: cannot parse the uio name: {e}");
                self.reply(&ev, -libc::EINVAL);
                return;
            }
        };
        if let Some(s) = self.served.get(&ev.minor) {
            if s.name == name && !s.handle.is_finished() {
                // Seen by the start-up scan and as an event: already served.
                self.reply(&ev, 0);
                return;
            }
            // The kernel reuses a minor only once its old uio device is gone: what we hold
            // under it is stale.
            if let Some(s) = self.served.remove(&ev.minor) {
                tracing::warn!(device = %s.name, minor = ev.minor, new = %name, "a new device took this uio minor: the old one is stale, stopping it");
                self.retire(s, None);
            }
        }
        if let Some(o) = self.opening.get_mut(&ev.minor) {
            if o.device.is_empty() || o.device == ev.device {
                // Being opened already (start-up scan, or a repeated event): one open, and
                // this event gets its result too.
                o.also_answer.push(ev);
                return;
            }
            // Otherwise the open in progress is for a device that is gone; its result will
            // be stale (a new token) and is stopped when it arrives.
        }
        let dev = PathBuf::from(format!("/dev/uio{}", ev.minor));
        let device = ev.device.clone();
        self.start_open(ev.minor, dev, Some(ev), device, false);
    }

    fn removed(&mut self, ev: Event) {
        if let Some(o) = self.opening.remove(&ev.minor) {
            // Still opening: whatever the open yields is stopped when it arrives, never
            // served. Nothing of it serves the kernel yet, so the removal is answered now.
            tracing::info!(device = %ev.device, minor = ev.minor, "removed while being opened: the open will be discarded");
            for other in o.also_answer {
                self.reply(&other, -libc::ENODEV);
            }
            if o.adopted {
                self.adopt_failures += 1;
            }
        }
        self.cancel_reconfigs(ev.minor, -libc::ENODEV);
        let Some(s) = self.served.remove(&ev.minor) else {
            self.reply(&ev, 0);
            return;
        };
        tracing::info!(device = %s.name, "removed by the kernel: stopping");
        self.retire(s, Some(ev));
    }

    /// Stop a device that is no longer served, off the main loop (stopping waits, boundedly,
    /// for commands in flight and for the backend to close). Its metrics go at once, so a new
    /// device of the same name registers its own. `ev` (a REMOVED) is answered once stopped.
    fn retire(&mut self, s: Served, ev: Option<Event>) {
        if let Some(m) = &self.cfg.metrics {
            m.remove_device(&s.name, &s.subtype);
        }
        let t0 = std::time::Instant::now();
        s.handle.stop();
        let (tx, wake) = (self.tx.clone(), Arc::clone(&self.wake));
        let spawned = std::thread::Builder::new()
            .name("tcmu-stop".into())
            .spawn(move || {
                let started = t0.elapsed();
                super::log_stats(&s);
                let logged = t0.elapsed();
                // Everything of the device, its backend included, is gone before the stop is
                // reported (the exit waits for that report: no image lock or watcher is left
                // behind by an exit racing a removal).
                let Served {
                    name,
                    handle,
                    fault,
                    ..
                } = s;
                handle.join();
                let joined = t0.elapsed();
                drop(fault);
                let closed = t0.elapsed();
                // Times since the stop was asked: this thread running, statistics logged,
                // device out of its loop (ring unmapped, uio closed) and backend closed.
                tracing::debug!(
                    device = %name,
                    thread_us = started.as_micros(),
                    stats_us = logged.as_micros(),
                    left_loop_us = joined.as_micros(),
                    closed_us = closed.as_micros(),
                    "device closed"
                );
                let _ = tx.send(Finished::Stopped { ev, t0, closed });
                let _ = wake.write(1);
            });
        match spawned {
            Ok(_) => self.stopping += 1,
            Err(e) => tracing::error!("cannot start a stop thread: {e}"),
        }
    }

    /// Reload the configuration file (SIGHUP): apply it to the devices served, and use it for
    /// the devices opened from now on. See [`super::reload`].
    pub fn reload(&mut self) {
        if let Some(next) = super::reload::reload(&self.cfg, &mut self.served) {
            self.cfg = Arc::new(next);
        }
    }

    /// A RECONFIG event. A write-cache change is applied here (nothing to wait for) and
    /// answered at once; a new cfgstring or size waits for the backend, so it runs as a job
    /// off this loop, one per device at a time, answered when it ends or at the bound.
    fn reconfig(&mut self, ev: Event) {
        if !self.served.contains_key(&ev.minor) {
            let e = ReconfigError::NotServed;
            tracing::error!(device = %ev.device, "reconfiguration refused: {e}");
            self.reply(&ev, e.errno());
            return;
        }
        let q = self.reconfigs.entry(ev.minor).or_default();
        if q.running.is_some() {
            q.queued.push_back(ev);
            return;
        }
        self.start_reconfig(ev);
    }

    /// Start (or, for the write cache, apply) one reconfiguration of a served device.
    fn start_reconfig(&mut self, ev: Event) {
        let (Some(s), EventKind::Reconfig(r)) = (self.served.get(&ev.minor), &ev.cmd) else {
            self.reply(&ev, ReconfigError::NotServed.errno());
            return;
        };
        let work = match r {
            Reconfig::WriteCache(on) => {
                crate::device::reconfig::apply(
                    s.handle.link(),
                    crate::device::Change::WriteCache(*on),
                )
                .ok();
                tracing::info!(device = %s.name, write_cache = on, "reconfigured");
                self.reply(&ev, 0);
                return;
            }
            Reconfig::DevSize(n) => Work::Size(*n),
            Reconfig::DevCfg(c) => Work::Cfgstring(c.clone()),
        };
        self.next_job += 1;
        let (job, minor) = (self.next_job, ev.minor);
        let (tx, wake) = (self.tx.clone(), Arc::clone(&self.wake));
        let start = reconfig_job::Start {
            device: s.name.clone(),
            link: Arc::clone(s.handle.link()),
            work,
            open: Arc::clone(&self.open_backend),
            timeout: self.cfg.reconfig_timeout,
            close_bound: self.cfg.device.stop_deadline,
        };
        let started = reconfig_job::start(start, move |report| {
            let _ = tx.send(Finished::Reconfig { minor, job, report });
            let _ = wake.write(1);
        });
        match started {
            Ok(j) => {
                self.jobs += 1;
                self.reconfigs.entry(minor).or_default().running = Some((job, j, ev));
            }
            Err(e) => {
                tracing::error!(device = %ev.device, "reconfiguration refused: {e}");
                self.reply(&ev, e.errno());
            }
        }
    }

    /// A reconfiguration job reported.
    fn reconfig_report(&mut self, minor: u32, job: u64, report: Report) {
        match report {
            Report::Answered(status) => {
                let ev = self
                    .reconfigs
                    .get_mut(&minor)
                    .and_then(|q| match q.running.take() {
                        Some((id, _, ev)) if id == job => Some(ev),
                        other => {
                            q.running = other;
                            None
                        }
                    });
                if let Some(ev) = ev {
                    self.reply(&ev, status);
                }
                self.next_reconfig(minor);
            }
            Report::Closed | Report::Ended => self.jobs = self.jobs.saturating_sub(1),
        }
    }

    /// Start the next queued reconfiguration of `minor`, if none runs.
    fn next_reconfig(&mut self, minor: u32) {
        let Some(q) = self.reconfigs.get_mut(&minor) else {
            return;
        };
        if q.running.is_some() {
            return;
        }
        match q.queued.pop_front() {
            Some(ev) => self.start_reconfig(ev),
            None => {
                self.reconfigs.remove(&minor);
            }
        }
    }

    /// Answer ETIMEDOUT for every reconfiguration past its bound (the job then puts nothing in
    /// force), and start the next one of that device.
    fn expire_reconfigs(&mut self) {
        let now = std::time::Instant::now();
        let late: Vec<u32> = self
            .reconfigs
            .iter()
            .filter(|(_, q)| {
                q.running
                    .as_ref()
                    .is_some_and(|(_, j, _)| j.deadline <= now)
            })
            .map(|(m, _)| *m)
            .collect();
        for minor in late {
            let Some(q) = self.reconfigs.get_mut(&minor) else {
                continue;
            };
            if !q.running.as_ref().is_some_and(|(_, j, _)| j.claim()) {
                // The job answered just now: its report is on its way.
                continue;
            }
            let Some((_, _, ev)) = q.running.take() else {
                continue;
            };
            let e = ReconfigError::TimedOut(self.cfg.reconfig_timeout);
            tracing::error!(device = %ev.device, "reconfiguration refused: {e}");
            self.reply(&ev, e.errno());
            self.next_reconfig(minor);
        }
    }

    /// Answer every reconfiguration of `minor` with `status` (the device is going away).
    fn cancel_reconfigs(&mut self, minor: u32, status: i32) {
        let Some(q) = self.reconfigs.remove(&minor) else {
            return;
        };
        if let Some((_, job, ev)) = q.running {
            if job.claim() {
                self.reply(&ev, status);
            }
        }
        for ev in q.queued {
            self.reply(&ev, status);
        }
    }

    /// How soon the main loop must pass again to answer a reconfiguration at its bound.
    #[must_use]
    pub fn wait_hint(&self) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        self.reconfigs
            .values()
            .filter_map(|q| q.running.as_ref())
            .map(|(_, j, _)| j.deadline.saturating_duration_since(now))
            .min()
    }

    fn finished(&mut self, f: Finished) {
        match f {
            Finished::Opened {
                minor,
                token,
                dev,
                ev,
                result,
                asked,
            } => {
                let handed = asked.at.elapsed();
                let current = self.opening.get(&minor).is_some_and(|o| o.token == token);
                let (also, adopted) = if current {
                    let o = self.opening.remove(&minor);
                    o.map_or((Vec::new(), false), |o| (o.also_answer, o.adopted))
                } else {
                    (Vec::new(), false)
                };
                let mut opened = None;
                let status = match result {
                    Ok(s) if current => {
                        // An ADDED answered is logged as such below (`added answered`).
                        if ev.is_none() {
                            tracing::info!(device = %s.name, minor, adopted, "serving");
                        }
                        opened = Some(s.opened);
                        self.served.insert(minor, *s);
                        0
                    }
                    Ok(s) => {
                        tracing::warn!(device = %s.name, minor, "opened after its device was removed or replaced: stopping it, not serving it");
                        self.retire(*s, None);
                        -libc::ENODEV
                    }
                    Err(e) => {
                        if adopted {
                            self.adopt_failures += 1;
                        }
                        tracing::error!(uio = %dev.display(), "cannot serve: {e}");
                        e.errno()
                    }
                };
                for e in ev.iter().chain(also.iter()) {
                    self.reply(e, status);
                }
                if let Some(ev) = &ev {
                    log_added(ev, status, asked, handed, opened.unwrap_or_default());
                }
            }
            Finished::Stopped { ev, t0, closed } => {
                self.stopping = self.stopping.saturating_sub(1);
                if let Some(ev) = ev {
                    self.reply(&ev, 0);
                    // The daemon's share of a removal (an rmdir waits for this answer).
                    tracing::info!(
                        device = %ev.device,
                        closed_ms = closed.as_secs_f64() * 1e3,
                        answered_ms = t0.elapsed().as_secs_f64() * 1e3,
                        "removal answered"
                    );
                }
            }
            Finished::Reconfig { minor, job, report } => self.reconfig_report(minor, job, report),
        }
    }

    fn reply(&mut self, ev: &Event, status: i32) {
        #[cfg(test)]
        self.sent.push((ev.cmd.cmd(), ev.device_id, status));
        if let Some(l) = &self.listener {
            match l.reply(ev, status) {
                Ok(()) => {}
                Err(e) if e.is_benign() => {
                    tracing::debug!(device = %ev.device, "no reply expected: {e}")
                }
                Err(e) => tracing::error!(device = %ev.device, "netlink reply failed: {e}"),
            }
        }
    }

    fn reply_raw(&mut self, cmd: u8, device_id: u32, status: i32) {
        #[cfg(test)]
        self.sent.push((cmd, device_id, status));
        if let Some(l) = &self.listener {
            if let Err(e) = l.reply_to(cmd, device_id, status) {
                tracing::error!(device_id, "netlink reply failed: {e}");
            }
        }
    }

    /// Turn netlink reply mode off on the way out: with no daemon to answer, every enable,
    /// rmdir and reconfiguration would otherwise block in the kernel (docs/kernel-abi.md
    /// pitfall 22). The next start turns it on again.
    pub fn release_reply_mode(&self) {
        if let Some(l) = &self.listener {
            match l.set_features(false) {
                Ok(()) => tracing::info!("netlink reply mode off"),
                Err(e) => tracing::warn!("cannot turn netlink reply mode off: {e}"),
            }
        }
    }

    /// Stop every device (bounded by each device's stop deadline), and wait, within the same
    /// bound, for the opens and stops still running in the background, so every backend is
    /// closed before the process exits.
    pub fn stop_all(&mut self) {
        // A write-cache value being persisted waits for our answer to the RECONFIG its write
        // makes the kernel send (reply mode): keep answering events while it is written.
        if let Some(p) = self.cfg.write_cache.clone() {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while p.busy() > 0 && std::time::Instant::now() < until {
                self.poll();
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let minors: Vec<u32> = self.reconfigs.keys().copied().collect();
        for m in minors {
            self.cancel_reconfigs(m, -libc::ESHUTDOWN);
        }
        for s in self.served.values() {
            s.handle.stop();
        }
        let served: Vec<Served> = self.served.drain().map(|(_, s)| s).collect();
        for s in served {
            self.retire(s, None);
        }
        let bound = self.cfg.device.stop_deadline + std::time::Duration::from_secs(5);
        let until = std::time::Instant::now() + bound;
        while self.stopping > 0 || self.jobs > 0 || !self.opening.is_empty() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let Ok(f) = self.rx.recv_timeout(left) else {
                tracing::warn!(
                    stopping = self.stopping,
                    reconfiguring = self.jobs,
                    opening = self.opening.len(),
                    "exiting with devices still stopping or opening after {bound:?}"
                );
                break;
            };
            match f {
                Finished::Opened {
                    minor, ev, result, ..
                } => {
                    // Never served now: stop what opened, answer the ADDED with an error.
                    let also = self
                        .opening
                        .remove(&minor)
                        .map(|o| o.also_answer)
                        .unwrap_or_default();
                    let status = match result {
                        Ok(s) => {
                            self.retire(*s, None);
                            -libc::ENODEV
                        }
                        Err(e) => e.errno(),
                    };
                    for e in ev.iter().chain(also.iter()) {
                        self.reply(e, status);
                    }
                }
                f @ (Finished::Stopped { .. } | Finished::Reconfig { .. }) => self.finished(f),
            }
        }
    }
}

/// The daemon's share of adding a device (an `enable` waits in the kernel for this answer):
/// from the ADDED read from netlink to the answer sent, with the stages of the open
/// (`open_times::OpenTimes`) and the process's CPU time so far.
fn log_added(
    ev: &Event,
    status: i32,
    asked: Asked,
    handed: std::time::Duration,
    o: super::open_times::OpenTimes,
) {
    use super::open_times::{ms, process_cpu};
    tracing::info!(
        device = %ev.device,
        minor = ev.minor,
        status,
        thread_ms = ms(asked.began),
        uio_ms = ms(o.uio),
        attrs_ms = ms(o.attrs),
        backend_ms = ms(o.backend),
        map_ms = ms(o.map),
        config_ms = ms(o.config),
        device_ms = ms(o.device),
        link_ms = ms(o.start.link),
        state_ms = ms(o.start.state),
        loop_ms = ms(o.start.handed),
        opened_ms = ms(asked.ended),
        handed_ms = ms(handed),
        answered_ms = ms(asked.at.elapsed()),
        cpu_ms = ms(process_cpu()),
        "added answered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ram::RamBackend;
    use crate::device::{self, DeviceConfig};
    use crate::netlink::Reconfig;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use tcmu_ring::emu::{EmuConfig, KernelEmu};
    use tcmu_ring::Doorbell;

    /// A doorbell whose uio read fails once `gone` is signalled: the device thread then ends
    /// on its own, as when the kernel's uio device goes away.
    struct Vanishing {
        gone: Arc<EventFd>,
    }

    impl Doorbell for Vanishing {
        fn raw_fd(&self) -> RawFd {
            self.gone.as_raw_fd()
        }
        fn ack(&self) -> std::io::Result<bool> {
            match self.gone.read() {
                Ok(_) => Err(std::io::Error::other("uio device gone")),
                Err(_) => Ok(false),
            }
        }
        fn kick(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Fake {
        opens: AtomicUsize,
        /// Signal these to make the devices' threads end on their own.
        gone: parking_lot::Mutex<Vec<Arc<EventFd>>>,
        /// While set, opens wait until it is cleared.
        hold: parking_lot::Mutex<bool>,
        emus: parking_lot::Mutex<Vec<KernelEmu>>,
    }

    fn fake() -> (Arc<Fake>, Opener) {
        let f = Arc::new(Fake {
            opens: AtomicUsize::new(0),
            gone: parking_lot::Mutex::new(Vec::new()),
            hold: parking_lot::Mutex::new(false),
            emus: parking_lot::Mutex::new(Vec::new()),
        });
        let f2 = Arc::clone(&f);
        let open: Opener = Arc::new(move |dev: &Path, _cfg: &DaemonConfig, _restart: bool| {
            f2.opens.fetch_add(1, Ordering::SeqCst);
            let t = Instant::now();
            while *f2.hold.lock() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let (emu, map, _bell) = KernelEmu::new(EmuConfig::default()).unwrap();
            let ring = tcmu_ring::Ring::new(Arc::new(map)).unwrap();
            let gone = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
            f2.gone.lock().push(Arc::clone(&gone));
            f2.emus.lock().push(emu);
            let name = format!("user_0/{}", dev.display());
            let lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "events");
            let bell = Box::new(Vanishing { gone });
            let handle = device::spawn(
                &name,
                ring,
                bell,
                Arc::new(RamBackend::new(1 << 20)),
                lun,
                &DeviceConfig::default(),
            )
            .map_err(DeviceError::Spawn)?;
            Ok(Served {
                name: "user_0/lun0".into(),
                dir: "/nonexistent".into(),
                subtype: "file".into(),
                uio: dev.to_path_buf(),
                tiers: String::new(),
                handle,
                options: Vec::new(),
                cmd_time_out: None,
                backend_timeout: None,
                fault: None,
                opened: Default::default(),
            })
        });
        (f, open)
    }

    fn ev(cmd: EventKind, id: u32, minor: u32) -> Event {
        Event {
            cmd,
            device_id: id,
            minor,
            device: "tcm-user/0/lun0/file/a.img".into(),
        }
    }

    /// Poll until `cond` holds (at most 10 s).
    fn until(life: &mut Lifecycle, what: &str, cond: impl Fn(&Lifecycle) -> bool) {
        let t = Instant::now();
        while !cond(life) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{what}: not within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
            life.poll();
        }
    }

    fn life(open: Opener) -> Lifecycle {
        Lifecycle::with_opener(Arc::new(DaemonConfig::default()), None, open).unwrap()
    }

    #[test]
    fn a_device_whose_thread_ends_on_its_own_leaves_the_table_and_its_minor_can_be_added_again() {
        let (f, open) = fake();
        let mut l = life(open);
        l.event(ev(EventKind::Added, 1, 3));
        until(&mut l, "ADDED answered", |l| l.sent.contains(&(1, 1, 0)));
        assert!(l.served.contains_key(&3));
        // The uio device goes away: the device thread ends by itself.
        f.gone.lock()[0].write(1).unwrap();
        until(&mut l, "the ended device dropped", |l| l.served.is_empty());
        // The kernel reuses the minor for a new device: it is opened and served.
        l.event(ev(EventKind::Added, 2, 3));
        until(&mut l, "second ADDED answered", |l| {
            l.sent.contains(&(1, 2, 0))
        });
        assert_eq!(
            f.opens.load(Ordering::SeqCst),
            2,
            "the new device was opened"
        );
        assert!(!l.served[&3].handle.is_finished(), "and is served");
        l.stop_all();
    }

    #[test]
    fn an_open_that_finishes_after_its_removal_is_stopped_not_served() {
        let (f, open) = fake();
        let mut l = life(open);
        *f.hold.lock() = true;
        l.event(ev(EventKind::Added, 1, 4));
        until(&mut l, "open started", |_| {
            f.opens.load(Ordering::SeqCst) == 1
        });
        l.event(ev(EventKind::Removed, 2, 4));
        assert!(l.sent.contains(&(2, 2, 0)), "REMOVED answered at once");
        *f.hold.lock() = false;
        until(&mut l, "ADDED answered", |l| {
            l.sent.iter().any(|&(c, id, _)| c == 1 && id == 1)
        });
        assert!(l.sent.contains(&(1, 1, -libc::ENODEV)), "{:?}", l.sent);
        assert!(l.served.is_empty(), "a removed device is never served");
        until(&mut l, "the late device stopped", |l| l.stopping == 0);
        // A new ADDED on that minor opens again.
        l.event(ev(EventKind::Added, 3, 4));
        until(&mut l, "new ADDED answered", |l| {
            l.sent.contains(&(1, 3, 0))
        });
        assert_eq!(f.opens.load(Ordering::SeqCst), 2);
        l.stop_all();
    }

    /// A RECONFIG of `dev_config` whose open hangs (an RBD open against a cluster that does
    /// not answer): the main loop keeps passing (status answers, the watchdog would be
    /// pinged), the kernel is answered ETIMEDOUT at the bound, the old backend keeps serving,
    /// and the open that finishes later is closed, never served. Then an open that succeeds
    /// is answered 0 and serves.
    #[test]
    fn a_reconfig_whose_open_hangs_is_answered_etimedout_at_the_bound_while_the_loop_passes() {
        use crate::backend::Backend;
        const BOUND: Duration = Duration::from_millis(400);
        let (_f, open) = fake();
        let cfg = DaemonConfig {
            reconfig_timeout: BOUND,
            ..DaemonConfig::default()
        };
        let mut l = Lifecycle::with_opener(Arc::new(cfg), None, open).unwrap();
        l.event(ev(EventKind::Added, 1, 3));
        until(&mut l, "ADDED answered", |l| l.sent.contains(&(1, 1, 0)));
        let hold = Arc::new(AtomicUsize::new(1));
        let late: Arc<parking_lot::Mutex<Option<std::sync::Weak<dyn Backend>>>> = Arc::default();
        let (h2, late2) = (Arc::clone(&hold), Arc::clone(&late));
        l.open_backend = Arc::new(move |_st: &str, _c: &str, _d: &str, size: u64| {
            let t = Instant::now();
            while h2.load(Ordering::SeqCst) == 1 && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let b: Arc<dyn Backend> = Arc::new(RamBackend::new(size + 4096));
            *late2.lock() = Some(Arc::downgrade(&b));
            Ok(b)
        });
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let mut ctl = crate::daemon::control::bind(&sock).unwrap();
        let asker = std::thread::spawn(move || {
            use std::io::{Read, Write};
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            c.write_all(b"status\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            (out, t.elapsed())
        });

        let t = Instant::now();
        l.event(ev(
            EventKind::Reconfig(Reconfig::DevCfg("file/elsewhere.img".into())),
            2,
            3,
        ));
        // The bounds below are loose against a loaded host (a pass preempted for a while);
        // the open they must not wait for takes 20 s.
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "the event waited for the open"
        );
        let mut longest = Duration::ZERO;
        let started = std::time::SystemTime::now();
        while !l.sent.iter().any(|&(c, id, _)| c == 3 && id == 2) {
            assert!(t.elapsed() < Duration::from_secs(5), "never answered");
            let pass = Instant::now();
            l.poll();
            let devices: Vec<&Served> = l.served.values().collect();
            ctl.serve(&devices, started);
            longest = longest.max(pass.elapsed());
            std::thread::sleep(
                l.wait_hint()
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_millis(10)),
            );
        }
        let answered = t.elapsed();
        assert!(l.sent.contains(&(3, 2, -libc::ETIMEDOUT)), "{:?}", l.sent);
        assert!(
            answered >= BOUND && answered < BOUND + Duration::from_millis(1500),
            "answered after {answered:?}, bound {BOUND:?}"
        );
        assert!(
            longest < Duration::from_millis(500),
            "a main loop pass took {longest:?}"
        );
        let (status, took) = asker.join().unwrap();
        assert!(status.contains("1 device(s)"), "{status}");
        assert!(took < Duration::from_secs(1), "status took {took:?}");
        assert!(
            l.served[&3].handle.link().backend().describe() == "ram:1048576",
            "old backend kept"
        );

        // The open finishes late: closed on its thread, never served.
        hold.store(0, Ordering::SeqCst);
        until(&mut l, "the late job ended", |l| l.jobs == 0);
        assert_eq!(
            l.served[&3].handle.link().backend().describe(),
            "ram:1048576"
        );
        let w = late
            .lock()
            .take()
            .expect("the late open returned a backend");
        assert!(w.upgrade().is_none(), "the late backend was closed");

        // An open that answers: served, and answered 0.
        l.event(ev(
            EventKind::Reconfig(Reconfig::DevCfg("file/elsewhere.img".into())),
            4,
            3,
        ));
        until(&mut l, "second RECONFIG answered", |l| {
            l.sent.iter().any(|&(c, id, _)| c == 3 && id == 4)
        });
        assert!(l.sent.contains(&(3, 4, 0)), "{:?}", l.sent);
        assert_eq!(
            l.served[&3].handle.link().backend().describe(),
            "ram:1052672"
        );
        until(&mut l, "the old backend closed", |l| l.jobs == 0);
        l.stop_all();
    }

    /// Log output captured in memory (the `added answered` line is read back from it).
    #[derive(Clone, Default)]
    struct Captured(Arc<parking_lot::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The value of `key=` in a log line, as milliseconds.
    fn field_ms(line: &str, key: &str) -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {line}"))
            .parse()
            .unwrap()
    }

    /// The daemon's share of an ADDED is logged once it is answered: the open's own stages
    /// as the opener measured them, and the times from the open asked to its thread running,
    /// to the open's end, to the answer, in that order. An open that fails is logged with the
    /// status it was answered.
    #[test]
    fn an_answered_added_is_logged_with_the_stages_of_its_open() {
        let (_f, inner) = fake();
        let open: Opener = Arc::new(move |dev: &Path, cfg: &DaemonConfig, restart: bool| {
            if dev == Path::new("/dev/uio4") {
                return Err(DeviceError::Tiers("refused".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
            let mut s = inner(dev, cfg, restart)?;
            s.opened.backend = Duration::from_millis(20);
            Ok(s)
        });
        let out = Captured::default();
        let w = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let mut l = life(open);
            l.event(ev(EventKind::Added, 1, 3));
            until(&mut l, "ADDED answered", |l| l.sent.contains(&(1, 1, 0)));
            l.event(ev(EventKind::Added, 2, 4));
            until(&mut l, "failed ADDED answered", |l| {
                l.sent.contains(&(1, 2, -libc::EINVAL))
            });
            l.stop_all();
        });
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("added answered"))
            .collect();
        assert_eq!(lines.len(), 2, "one line per ADDED answered: {text}");
        assert!(
            lines[1].contains("status=-22") && lines[1].contains("minor=4"),
            "{}",
            lines[1]
        );
        let line = lines[0];
        assert!(
            line.contains("status=0") && line.contains("minor=3"),
            "{line}"
        );
        assert!((field_ms(line, "backend_ms") - 20.0).abs() < 1e-9, "{line}");
        let (thread, opened, handed, answered) = (
            field_ms(line, "thread_ms"),
            field_ms(line, "opened_ms"),
            field_ms(line, "handed_ms"),
            field_ms(line, "answered_ms"),
        );
        assert!(opened >= 20.0, "the open slept 20 ms: {line}");
        assert!(
            thread <= opened && opened <= handed && handed <= answered,
            "{line}"
        );
        assert!(field_ms(line, "cpu_ms") > 0.0, "{line}");
    }

    #[test]
    fn an_added_event_for_a_device_being_adopted_shares_its_open() {
        let (f, open) = fake();
        let mut l = life(open);
        *f.hold.lock() = true;
        l.adopt("/dev/uio5".into(), 5);
        l.event(ev(EventKind::Added, 7, 5));
        assert_eq!(l.adopting(), 1);
        *f.hold.lock() = false;
        until(&mut l, "ADDED answered", |l| l.sent.contains(&(1, 7, 0)));
        assert_eq!(f.opens.load(Ordering::SeqCst), 1, "one open, not two");
        assert_eq!(l.adopting(), 0);
        assert!(l.served.contains_key(&5));
        l.stop_all();
        assert!(l.served.is_empty());
    }
}
