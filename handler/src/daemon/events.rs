//! The device lifecycle driven by the kernel's generic netlink events (`TCM-USER`/`config`).
//!
//! Every ADDED, REMOVED and RECONFIG event is answered with its own `*_DONE` (via
//! [`Listener::reply`]), echoing DEVICE_ID, with 0 or `-errno`. Opening and stopping a
//! device can be slow (a backend that does not answer), so they run on their own threads and
//! report back here; the main loop keeps handling netlink and other devices meanwhile.

use super::open::{reconfigure, serve, DeviceError, Served};
use super::DaemonConfig;
use crate::backend::cfgstring;
use crate::device::ReconfigError;
use crate::netlink::{Event, EventKind, Listener, NetlinkError, Reconfig};
use crossbeam_channel::{unbounded, Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use tcmu_ring::parse_uio_name;

/// What a background open or stop reports.
enum Finished {
    /// A device found at start-up: no netlink request waits for an answer.
    Adopted {
        minor: u32,
        dev: PathBuf,
        result: Result<Served, DeviceError>,
    },
    Opened {
        ev: Event,
        result: Result<Served, DeviceError>,
    },
    Stopped {
        ev: Event,
    },
}

/// The devices being served and the netlink conversation about them.
pub struct Lifecycle {
    cfg: Arc<DaemonConfig>,
    listener: Option<Listener>,
    /// Served devices by uio minor.
    pub served: HashMap<u32, Served>,
    tx: Sender<Finished>,
    rx: Receiver<Finished>,
    wake: Arc<EventFd>,
    adopting: usize,
    adopt_failures: usize,
}

impl Lifecycle {
    /// A lifecycle listening on `listener` (None: a fixed set of devices, no netlink).
    ///
    /// # Errors
    /// When the wake-up eventfd cannot be created.
    pub fn new(cfg: Arc<DaemonConfig>, listener: Option<Listener>) -> std::io::Result<Lifecycle> {
        let (tx, rx) = unbounded();
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        Ok(Lifecycle {
            cfg,
            listener,
            served: HashMap::new(),
            tx,
            rx,
            wake,
            adopting: 0,
            adopt_failures: 0,
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
        let (cfg, tx, wake) = (
            Arc::clone(&self.cfg),
            self.tx.clone(),
            Arc::clone(&self.wake),
        );
        self.adopting += 1;
        let spawned = std::thread::Builder::new()
            .name(format!("tcmu-adopt/{minor}"))
            .spawn(move || {
                let result = serve(&dev, &cfg, true);
                let _ = tx.send(Finished::Adopted { minor, dev, result });
                let _ = wake.write(1);
            });
        if let Err(e) = spawned {
            self.adopting -= 1;
            tracing::error!("cannot start an adopt thread: {e}");
        }
    }

    /// Devices found at start-up that are still being opened.
    #[must_use]
    pub fn adopting(&self) -> usize {
        self.adopting
    }

    /// Devices that failed to open at start-up.
    #[must_use]
    pub fn adopt_failures(&self) -> usize {
        self.adopt_failures
    }

    /// Handle whatever is pending: netlink events and finished background work.
    pub fn poll(&mut self) {
        let _ = self.wake.read();
        while let Ok(f) = self.rx.try_recv() {
            self.finished(f);
        }
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
            EventKind::Reconfig(r) => {
                let r = r.clone();
                let status = self.reconfig(&ev, r);
                self.reply(&ev, status);
            }
        }
    }

    fn added(&mut self, ev: Event) {
        if self.served.contains_key(&ev.minor) {
            self.reply(&ev, 0);
            return;
        }
        // Refuse at once what we cannot serve, with a reason: `enable` then fails cleanly.
        match parse_uio_name(&ev.device) {
            Ok(n) if n.subtype.is_some_and(|s| cfgstring::SUBTYPES.contains(&s)) => {}
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
        }
        let (cfg, tx, wake) = (
            Arc::clone(&self.cfg),
            self.tx.clone(),
            Arc::clone(&self.wake),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("tcmu-open/{}", ev.minor))
            .spawn(move || {
                let dev = PathBuf::from(format!("/dev/uio{}", ev.minor));
                let result = serve(&dev, &cfg, false);
                let _ = tx.send(Finished::Opened { ev, result });
                let _ = wake.write(1);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start an open thread: {e}");
        }
    }

    fn removed(&mut self, ev: Event) {
        let Some(s) = self.served.remove(&ev.minor) else {
            self.reply(&ev, 0);
            return;
        };
        let (tx, wake, metrics) = (
            self.tx.clone(),
            Arc::clone(&self.wake),
            self.cfg.metrics.clone(),
        );
        // Stopping waits (boundedly) for commands in flight; do it off the main loop.
        let spawned = std::thread::Builder::new()
            .name(format!("tcmu-stop/{}", ev.minor))
            .spawn(move || {
                tracing::info!(device = %s.name, "removed by the kernel: stopping");
                if let Some(m) = &metrics {
                    m.remove_device(&s.name, &s.subtype);
                }
                super::log_stats(&s);
                s.handle.join();
                let _ = tx.send(Finished::Stopped { ev });
                let _ = wake.write(1);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a stop thread: {e}");
        }
    }

    /// Reload the configuration file (SIGHUP): apply it to the devices served, and use it for
    /// the devices opened from now on. See [`super::reload`].
    pub fn reload(&mut self) {
        if let Some(next) = super::reload::reload(&self.cfg, &mut self.served) {
            self.cfg = Arc::new(next);
        }
    }

    /// Apply a RECONFIG event; the status for its `RECONFIG_DEVICE_DONE` (0 or the real
    /// negative errno of what failed).
    fn reconfig(&mut self, ev: &Event, r: Reconfig) -> i32 {
        let Some(s) = self.served.get(&ev.minor) else {
            let e = ReconfigError::NotServed;
            tracing::error!(device = %ev.device, "reconfiguration refused: {e}");
            return e.errno();
        };
        match reconfigure(&s.handle, &s.name, r, self.cfg.metrics.as_ref()) {
            Ok(()) => {
                tracing::info!(device = %s.name, "reconfigured");
                0
            }
            Err(e) => {
                tracing::error!(device = %s.name, "reconfiguration refused: {e}");
                e.errno()
            }
        }
    }

    fn finished(&mut self, f: Finished) {
        match f {
            Finished::Adopted {
                minor,
                result: Ok(s),
                ..
            } => {
                self.adopting -= 1;
                tracing::info!(device = %s.name, minor, "serving (adopted at start-up)");
                self.served.insert(minor, s);
            }
            Finished::Adopted {
                dev,
                result: Err(e),
                ..
            } => {
                self.adopting -= 1;
                self.adopt_failures += 1;
                tracing::error!(uio = %dev.display(), "cannot serve: {e}");
            }
            Finished::Opened { ev, result: Ok(s) } => {
                tracing::info!(device = %s.name, minor = ev.minor, "serving");
                self.served.insert(ev.minor, s);
                self.reply(&ev, 0);
            }
            Finished::Opened { ev, result: Err(e) } => {
                tracing::error!(device = %ev.device, "cannot serve: {e}");
                self.reply(&ev, e.errno());
            }
            Finished::Stopped { ev } => self.reply(&ev, 0),
        }
    }

    fn reply(&self, ev: &Event, status: i32) {
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

    fn reply_raw(&self, cmd: u8, device_id: u32, status: i32) {
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

    /// Stop every device (bounded by each device's stop deadline).
    pub fn stop_all(&mut self) {
        for s in self.served.values() {
            s.handle.stop();
        }
        for (_, s) in self.served.drain() {
            super::log_stats(&s);
            s.handle.join();
        }
        // Let background opens and stops finish their replies if they are quick.
        while let Ok(f) = self.rx.recv_timeout(std::time::Duration::from_millis(100)) {
            match f {
                Finished::Opened { ev, result } => {
                    let status = result
                        .map(|s| s.handle.join())
                        .map_or_else(|e| e.errno(), |()| 0);
                    self.reply(&ev, status);
                }
                Finished::Stopped { ev } => self.reply(&ev, 0),
                Finished::Adopted { result, .. } => {
                    if let Ok(s) = result {
                        s.handle.join();
                    }
                }
            }
        }
    }
}
