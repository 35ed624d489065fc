//! The daemon: join the kernel's netlink group, serve the devices present and those added
//! later, follow reconfigurations and removals, stop within a deadline.
//!
//! Start-up follows the crash plan for netlink reply mode (docs/kernel-abi.md pitfall 22): block
//! netlink and reset it (waking any configfs writer a dead predecessor left hanging), join the
//! group, turn reply mode on, unblock; only then scan for existing devices, each with a ring
//! reset, so a device enabled meanwhile is seen either by the scan or as an event.

pub mod control;
mod events;
pub mod facts;
mod open;
pub mod open_times;
mod openers;
mod reconfig_job;
mod reload;
pub mod write_cache;

pub use open::{
    discover, fallback_serial, lun_info, open_backend, reconfigure, serve, DeviceError, Served,
};

use crate::configfs;
use crate::device::DeviceConfig;
use crate::kernel_actions::KernelActions;
use crate::netlink::Listener;
use crate::notify::Notifier;
use events::Lifecycle;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_warden_supervisor::metrics::Metrics;

/// Longest wait for the devices present at start before telling systemd we are ready.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Longest a RECONFIG_DEVICE that needs the backend (a new cfgstring opened, a resize) may
/// take before it is answered ETIMEDOUT and the device keeps its old settings. The kernel's
/// wait for our answer has no timeout of its own (docs/kernel-abi.md §5.6): the
/// administrator's attribute write waits this long at most.
pub const RECONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// How the daemon runs.
#[derive(Clone)]
pub struct DaemonConfig {
    /// Serve exactly these uio devices, without netlink; empty: every device of our
    /// subtypes, present or added later.
    pub uio: Vec<PathBuf>,
    /// Root of the target core in configfs.
    pub configfs_root: PathBuf,
    /// Where the uio class lives in sysfs.
    pub sysfs_uio: PathBuf,
    /// Per-device settings.
    pub device: DeviceConfig,
    /// Lock memory and become an IO flusher at start.
    pub reclaim_safety: bool,
    /// Ask the kernel to wait for our replies to netlink events (tcmu-runner does).
    pub reply_mode: bool,
    /// The initiators' `replacement_timeout` (checked against each device's `cmd_time_out`).
    pub replacement_timeout: Duration,
    /// Where to serve Prometheus metrics (None: no endpoint).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The configuration file given on the command line (None: the default path).
    pub config_path: Option<PathBuf>,
    /// The configuration file's contents (per-device settings).
    pub file: crate::config::Config,
    /// The metrics registry, set by [`run`].
    pub metrics: Option<Arc<Metrics>>,
    /// The socket `tcmu-warden status` and `diagnose` ask (None: no socket).
    pub control_socket: Option<PathBuf>,
    /// Changes the log filter at run time (a reload's `log_level`); None: it cannot change.
    pub log_level: Option<LogLevelSetter>,
    /// Bound of a RECONFIG_DEVICE that needs the backend ([`RECONFIG_TIMEOUT`]).
    pub reconfig_timeout: Duration,
    /// Persists MODE SELECT's write-cache changes in configfs (set by [`run`]; None: they
    /// stay in this process).
    pub write_cache: Option<write_cache::Persister>,
}

/// Sets the process's log filter from a `log_level` value.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            uio: Vec::new(),
            configfs_root: configfs::CORE_ROOT.into(),
            sysfs_uio: "/sys/class/uio".into(),
            device: DeviceConfig::default(),
            reclaim_safety: true,
            reply_mode: true,
            replacement_timeout: Duration::from_secs(120),
            metrics_addr: None,
            config_path: None,
            file: crate::config::Config::default(),
            metrics: None,
            control_socket: Some(control::DEFAULT_SOCKET.into()),
            log_level: None,
            reconfig_timeout: RECONFIG_TIMEOUT,
            write_cache: None,
        }
    }
}

/// Lock memory and mark the process an IO flusher, so that serving I/O never waits on
/// reclaim that waits on this very I/O.
pub fn reclaim_safety() {
    const PR_SET_IO_FLUSHER: libc::c_int = 57;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            "PR_SET_IO_FLUSHER failed ({}); memory reclaim could deadlock against our own I/O",
            nix::errno::Errno::last()
        );
    } else {
        tracing::info!("PR_SET_IO_FLUSHER set");
    }
    // MCL_ONFAULT locks pages as they are touched; our own buffers are touched when a device
    // starts (`device::warm::resident`). The uio mappings are never locked or populated (see
    // `tcmu_ring::Mapping::map_shared`).
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        tracing::warn!(
            "mlockall failed ({}); raise LimitMEMLOCK or pass --no-mlock",
            nix::errno::Errno::last()
        );
    } else {
        tracing::info!("memory locked (mlockall)");
    }
}

/// Raise the soft limit on open files to the hard limit. Every LUN holds several descriptors
/// (its uio device, its backing file, its io_uring, wake-up eventfds), so the usual soft limit
/// of 1024 refused the 253rd LUN; the daemon never uses `select`, so a high limit costs
/// nothing (docs/DESIGN.md, "Memory per LUN"). Under the shipped unit `LimitNOFILE=65536`
/// sets both limits already (its sandbox refuses `setrlimit`); this serves a daemon started
/// by hand or by another supervisor.
/// Returns the soft limit in force afterwards.
pub fn raise_open_files() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = hard, "open-file limit raised");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!(
                soft,
                hard,
                "raising the open-file limit failed ({e}); each LUN holds several descriptors"
            );
            Some(soft)
        }
    }
}

/// Join the netlink group with reply mode on, following the crash plan. None when the
/// module is not loaded or we lack the privileges (then only devices present now are served).
fn join_netlink(reply_mode: bool) -> Option<Listener> {
    let actions = KernelActions::new();
    let blocked = match actions.begin_reply_mode_startup() {
        Ok(()) => true,
        Err(e) if e.is_not_found() => {
            tracing::warn!(
                "target_core_user is not loaded ({e}); waiting for devices is not possible"
            );
            false
        }
        Err(e) => {
            tracing::warn!("cannot block/reset netlink ({e}); continuing without the crash plan");
            false
        }
    };
    let listener = match Listener::open() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("not listening for device events: {e}");
            None
        }
    };
    if let Some(l) = &listener {
        if reply_mode && blocked {
            match l.set_features(true) {
                Ok(()) => tracing::info!("netlink reply mode on"),
                Err(e) => tracing::warn!("cannot turn on netlink reply mode: {e}"),
            }
        }
    }
    if blocked {
        if let Err(e) = actions.end_reply_mode_startup() {
            tracing::error!("cannot unblock netlink: {e}; run: echo 0 > /sys/module/target_core_user/parameters/block_netlink");
        }
    }
    listener
}

/// Run until SIGTERM or SIGINT, then stop every device within its deadline.
///
/// # Errors
/// When signals cannot be set up or no requested device could be served.
pub fn run(cfg: &DaemonConfig) -> Result<(), String> {
    // Block the stop signals before any thread starts, so only the signalfd sees them.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    if cfg.reclaim_safety {
        reclaim_safety();
    }
    raise_open_files();
    let notifier = Notifier::from_env();
    let metrics = Metrics::new();
    if let Some(addr) = cfg.metrics_addr {
        match tcmu_warden_supervisor::http::serve(addr, Arc::clone(&metrics)) {
            Ok((bound, _)) => tracing::info!(addr = %bound, "metrics on http://{bound}/metrics"),
            // Serving storage matters more than exporting metrics about it.
            Err(e) => tracing::error!("metrics endpoint {addr} not available: {e}"),
        }
    }
    let mut cfg = cfg.clone();
    cfg.metrics = Some(metrics);
    match write_cache::Persister::start() {
        Ok(p) => cfg.write_cache = Some(p),
        Err(e) => tracing::error!("MODE SELECT's write-cache changes will not be persisted: {e}"),
    }
    let cfg = &cfg;
    let started = std::time::SystemTime::now();
    let mut control = cfg
        .control_socket
        .as_deref()
        .and_then(|p| match control::bind(p) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(socket = %p.display(), "no status/diagnose socket: {e}");
                None
            }
        });
    let fixed = !cfg.uio.is_empty();
    let listener = if fixed {
        None
    } else {
        join_netlink(cfg.reply_mode)
    };
    let mut life =
        Lifecycle::new(Arc::new(cfg.clone()), listener).map_err(|e| format!("eventfd: {e}"))?;

    let devs = if fixed {
        cfg.uio.clone()
    } else {
        discover(&cfg.sysfs_uio)
    };
    for d in devs {
        let minor = minor_of(&d);
        life.adopt(d, minor);
    }
    // Ready once every device present at start has been opened or refused, or after a
    // bounded wait: a backend that does not answer must not keep the service from starting.
    let ready_by = Instant::now() + STARTUP_WAIT;
    let mut ready = false;
    let tick = notifier
        .watchdog_interval()
        .unwrap_or(Duration::from_secs(1));
    loop {
        if !ready && (life.adopting() == 0 || Instant::now() >= ready_by) {
            if fixed && life.adopting() == 0 && life.served.is_empty() {
                return Err("none of the requested devices could be served".into());
            }
            ready = true;
            let status = if life.adopting() > 0 {
                format!(
                    "serving {} device(s), {} still opening",
                    life.served.len(),
                    life.adopting()
                )
            } else {
                format!("serving {} device(s)", life.served.len())
            };
            tracing::info!(
                devices = life.served.len(),
                failed = life.adopt_failures(),
                opening = life.adopting(),
                "tcmu-warden ready"
            );
            notifier.send(&format!("READY=1\nSTATUS={status}"));
        }
        let mut wait = if ready {
            tick
        } else {
            tick.min(Duration::from_millis(200))
        };
        if let Some(hint) = control.as_ref().and_then(control::Control::wait_hint) {
            wait = wait.min(hint);
        }
        if let Some(hint) = life.wait_hint() {
            wait = wait.min(hint);
        }
        let readable = {
            let mut fds = vec![sfd.as_fd()];
            fds.extend(life.fds());
            if let Some(c) = &control {
                fds.extend(c.fds());
            }
            wait_readable(&fds, wait)?
        };
        if readable {
            match sfd.read_signal() {
                Ok(Some(si)) if si.ssi_signo == Signal::SIGHUP as u32 => {
                    life.reload();
                }
                Ok(Some(si)) => {
                    tracing::info!(signal = si.ssi_signo, "stopping");
                    break;
                }
                Ok(None) => {}
                Err(e) => return Err(format!("reading signals: {e}")),
            }
            life.poll();
        }
        if let Some(c) = &mut control {
            let devices: Vec<&Served> = life.served.values().collect();
            c.serve(&devices, started);
        }
        life.sweep();
        if let Some(m) = &cfg.metrics {
            m.log_lines_dropped(crate::logging::dropped_lines());
        }
        if ready {
            notifier.send("WATCHDOG=1");
        }
    }
    notifier.send("STOPPING=1");
    life.stop_all();
    life.release_reply_mode();
    Ok(())
}

fn minor_of(dev: &std::path::Path) -> u32 {
    dev.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("uio"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Wait up to `timeout` until one of `fds` is readable; true if any is.
fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> Result<bool, String> {
    let mut p: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::from(1000u16));
    match poll(&mut p, t) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(format!("poll: {e}")),
    }
}

/// What a device saw, logged when it stops.
fn log_stats(s: &Served) {
    use std::sync::atomic::Ordering::Relaxed;
    let st = &s.handle.stats;
    tracing::info!(
        device = %s.name,
        commands = st.commands.load(Relaxed),
        emulated = st.emulated.load(Relaxed),
        errors = st.errors.load(Relaxed),
        bad_entries = st.bad_entries.load(Relaxed),
        tmrs = st.tmrs(),
        kicks = st.kicks.load(Relaxed),
        contexts_exhausted = st.pool_exhausted.load(Relaxed),
        "device statistics"
    );
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{getrlimit, Resource};

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(super::raise_open_files(), Some(hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
