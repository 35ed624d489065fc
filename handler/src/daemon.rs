//! The daemon: find the devices to serve, open their backends, run them until told to stop.

use crate::backend::cfgstring::{self, DevConfig};
use crate::backend::file::FileBackend;
use crate::backend::{Backend, OpenError};
use crate::configfs;
use crate::device::{self, DeviceConfig, DeviceHandle};
use crate::notify::Notifier;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tcmu_ring::{parse_uio_name, Ring, Uio};
use tcmu_scsi::lun::{Caps as LunCaps, LunInfo};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// uio devices to serve; empty means every `tcm-user` device of our subtypes present.
    pub uio: Vec<PathBuf>,
    /// Root of the target core in configfs.
    pub configfs_root: PathBuf,
    /// Where the uio class lives in sysfs.
    pub sysfs_uio: PathBuf,
    /// Per-device settings.
    pub device: DeviceConfig,
    /// Lock memory and become an IO flusher at start.
    pub reclaim_safety: bool,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig {
            uio: Vec::new(),
            configfs_root: configfs::CORE_ROOT.into(),
            sysfs_uio: "/sys/class/uio".into(),
            device: DeviceConfig::default(),
            reclaim_safety: true,
        }
    }
}

/// Why a device could not be served.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The uio device or its ring.
    #[error("{0}")]
    Ring(#[from] tcmu_ring::RingError),
    /// Its configfs attributes.
    #[error("{0}")]
    Configfs(#[from] configfs::ConfigfsError),
    /// Its backend.
    #[error("{0}")]
    Backend(#[from] OpenError),
    /// Threads could not be started.
    #[error("starting the device threads: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A device being served.
pub struct Served {
    /// `user_<hba>/<name>`.
    pub name: String,
    /// The running device.
    pub handle: DeviceHandle,
}

/// Build what the initiator sees from configfs and the backend's abilities.
#[must_use]
pub fn lun_info(
    attrs: &configfs::DeviceAttrs,
    backend: &dyn Backend,
    fallback_serial: &str,
) -> LunInfo {
    let serial = attrs
        .serial
        .clone()
        .unwrap_or_else(|| fallback_serial.to_string());
    let mut lun = LunInfo::new(
        attrs.block_size,
        attrs.dev_size / u64::from(attrs.block_size),
        &serial,
    );
    let caps = backend.caps();
    lun.caps = LunCaps {
        unmap: caps.unmap,
        write_zeroes: caps.write_zeroes || caps.unmap,
        fua: true,
        flush: true,
        thin: caps.thin && caps.unmap,
        compare_and_write: true,
    };
    lun.rotational = !caps.non_rotational;
    lun.write_cache = attrs.write_cache;
    let max_blocks = u64::from(attrs.hw_max_sectors) * 512 / u64::from(attrs.block_size);
    lun.max_xfer_blocks = u32::try_from(max_blocks.max(1)).unwrap_or(u32::MAX);
    lun.opt_xfer_blocks = lun.max_xfer_blocks;
    lun
}

/// Open the backend a device's cfgstring names.
///
/// # Errors
/// A bad subtype or cfgstring, or a store that cannot be opened.
pub fn open_backend(subtype: &str, cfg: &str, size: u64) -> Result<Arc<dyn Backend>, OpenError> {
    match cfgstring::parse(subtype, cfg)? {
        DevConfig::File { path } => Ok(Arc::new(FileBackend::open(&path, size)?)),
    }
}

/// Open and start serving one uio device.
///
/// # Errors
/// See [`DeviceError`]; the message names what is wrong.
pub fn serve(dev: &Path, cfg: &DaemonConfig) -> Result<Served, DeviceError> {
    let uio = Uio::open_at(dev, &cfg.sysfs_uio)?;
    let uname = uio.name().to_string();
    let parsed = parse_uio_name(&uname)?;
    let subtype = parsed.subtype.unwrap_or("");
    let cfgstr = parsed.cfgstring.unwrap_or("");
    let name = format!("user_{}/{}", parsed.hba, parsed.device);
    let dir = configfs::device_dir(&cfg.configfs_root, parsed.hba, parsed.device);
    let attrs = configfs::read(&dir)?;
    let backend = open_backend(subtype, cfgstr, attrs.dev_size)?;
    let lun = lun_info(&attrs, backend.as_ref(), &fallback_serial(&name));
    tracing::info!(device = %name, uio = %dev.display(), backend = %backend.describe(), size = attrs.dev_size, block_size = attrs.block_size, "opening");
    let ring = Ring::new(Arc::new(uio.map()?))?;
    let handle = device::spawn(&name, ring, Box::new(uio), backend, lun, &cfg.device)?;
    Ok(Served { name, handle })
}

/// A stable serial for a device that has none in configfs: derived from its name, so it
/// stays the same across restarts.
#[must_use]
pub fn fallback_serial(name: &str) -> String {
    // FNV-1a, 128 bits from two differently seeded 64-bit runs.
    let h = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        h(0xcbf2_9ce4_8422_2325),
        h(0x84222325_cbf29ce4)
    )
}

/// The uio devices in `sysfs_uio` that belong to `tcm-user` and a subtype we serve.
#[must_use]
pub fn discover(sysfs_uio: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(sysfs_uio) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            let parsed = parse_uio_name(name.trim_end()).ok()?;
            cfgstring::SUBTYPES
                .contains(&parsed.subtype?)
                .then(|| Path::new("/dev").join(e.file_name()))
        })
        .collect();
    found.sort();
    found
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
    }
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        tracing::warn!(
            "mlockall failed ({}); raise LimitMEMLOCK or pass --no-mlock",
            nix::errno::Errno::last()
        );
    }
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
    let notifier = Notifier::from_env();
    let devs = if cfg.uio.is_empty() {
        discover(&cfg.sysfs_uio)
    } else {
        cfg.uio.clone()
    };
    if devs.is_empty() {
        tracing::warn!(sysfs = %cfg.sysfs_uio.display(), "no tcm-user devices to serve yet");
    }
    let mut served = Vec::new();
    for d in &devs {
        match serve(d, cfg) {
            Ok(s) => served.push(s),
            Err(e) => tracing::error!(uio = %d.display(), "cannot serve: {e}"),
        }
    }
    if served.is_empty() && !cfg.uio.is_empty() {
        return Err("none of the requested devices could be served".into());
    }
    tracing::info!(devices = served.len(), "tcmu-warden ready");
    notifier.send(&format!(
        "READY=1\nSTATUS=serving {} device(s)",
        served.len()
    ));
    let tick = notifier
        .watchdog_interval()
        .unwrap_or(Duration::from_secs(1));
    loop {
        if let Some(sig) = wait_signal(&sfd, tick)? {
            if sig == Signal::SIGHUP {
                tracing::info!("SIGHUP: nothing to reload");
            } else {
                tracing::info!(signal = %sig, "stopping");
                break;
            }
        }
        notifier.send("WATCHDOG=1");
    }
    notifier.send("STOPPING=1");
    for s in &served {
        s.handle.stop();
    }
    for s in served {
        log_stats(&s);
        s.handle.join();
    }
    Ok(())
}

/// Wait up to `timeout` for a stop signal.
fn wait_signal(sfd: &SignalFd, timeout: Duration) -> Result<Option<Signal>, String> {
    let mut fds = [libc::pollfd {
        fd: sfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(1000);
    // SAFETY: `fds` is a valid, initialised pollfd array for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    if r <= 0 {
        return Ok(None);
    }
    match sfd.read_signal() {
        Ok(Some(si)) => Ok(Signal::try_from(i32::try_from(si.ssi_signo).unwrap_or(0)).ok()),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("reading signals: {e}")),
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
        tmrs = st.tmrs.load(Relaxed),
        kicks = st.kicks.load(Relaxed),
        contexts_exhausted = st.pool_exhausted.load(Relaxed),
        "device statistics"
    );
}
