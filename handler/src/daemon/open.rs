//! Opening one device: from its uio name and configfs attributes to a running device.

use super::open_times::{Laps, OpenTimes};
use super::DaemonConfig;
use crate::backend::cfgstring;
use crate::backend::registry::{self, OpenCtx};
use crate::backend::{Backend, OpenError};
use crate::configfs;
use crate::device::{self, Change, DeviceHandle, FreeKeptBuf, ReconfigError};
use crate::kernel_actions::KernelActions;
use crate::netlink::Reconfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tcmu_ring::{parse_uio_name, Ring, Uio};
use tcmu_scsi::lun::{Caps as LunCaps, LunInfo};

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
    /// The timeout tiers are unsafe and the policy is to refuse such devices.
    #[error("refused by tier_policy = \"refuse\": {0}")]
    Tiers(String),
}

impl DeviceError {
    /// The negative errno to answer the kernel with (netlink `*_DONE` status).
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            DeviceError::Backend(e) => e.errno(),
            DeviceError::Spawn(source) => -(crate::backend::errno_of(source) as i32),
            DeviceError::Ring(_) | DeviceError::Configfs(_) => -libc::EIO,
            DeviceError::Tiers(_) => -libc::EINVAL,
        }
    }
}

/// A device being served.
pub struct Served {
    /// `user_<hba>/<name>`.
    pub name: String,
    /// Its configfs directory.
    pub dir: PathBuf,
    /// Its subtype (`file`).
    pub subtype: String,
    /// Its uio device.
    pub uio: PathBuf,
    /// The timeout tiers and their verdict, in words (for `diagnose`).
    pub tiers: String,
    /// The running device.
    pub handle: DeviceHandle,
    /// The cfgstring's `;key=value` options (they take precedence over the file on reload).
    pub options: Vec<(String, String)>,
    /// The kernel's `attrib/cmd_time_out` when the device was opened.
    pub cmd_time_out: Option<u32>,
    /// The backend's own operation timeout (the backend tier), if it has one.
    pub backend_timeout: Option<std::time::Duration>,
    /// The fault injector wrapping the backend, if any (its rules change on reload).
    pub fault: Option<Arc<crate::backend::fault::FaultBackend>>,
    /// How long each step of its open took (logged when the ADDED is answered).
    pub opened: OpenTimes,
}

/// What a device's settings mean for its supervision: its tiers, its handler deadline and
/// its health-ping policy. Computed when it opens and again on a configuration reload.
pub(super) struct Plan {
    pub tiers: Option<tcmu_warden_supervisor::tiers::Tiers>,
    pub deadline: std::time::Duration,
    pub ping: tcmu_warden_supervisor::health::Policy,
}

pub(super) fn plan(
    cmd_time_out: Option<u32>,
    replacement: std::time::Duration,
    settings: &crate::config::DeviceSettings,
    backend_timeout: Option<std::time::Duration>,
) -> Plan {
    let tiers = tiers(cmd_time_out, replacement, settings, backend_timeout);
    // The backend gives up first (io_timeout), and always before the kernel does.
    let kernel = tiers
        .as_ref()
        .map(tcmu_warden_supervisor::tiers::Tiers::handler_deadline);
    let deadline = kernel.map_or(settings.io_timeout, |k| k.min(settings.io_timeout));
    // Pings are bounded by the backend tier: the backend's own timeout, else io_timeout.
    let ping = tcmu_warden_supervisor::health::Policy::new(
        settings.ping_interval,
        backend_timeout.unwrap_or(settings.io_timeout),
    );
    Plan {
        tiers,
        deadline,
        ping,
    }
}

/// Log each broken tier rule; the findings joined, if any.
pub(super) fn report_tiers(name: &str, plan: &Plan) -> Option<String> {
    let findings = plan.tiers.as_ref().map(|t| t.check()).unwrap_or_default();
    for f in &findings {
        tracing::warn!(device = %name, "timeout tiers: {f}");
    }
    (!findings.is_empty()).then(|| {
        findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
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

/// Open the backend a device's cfgstring names. The cfgstring's `;key=value` options that
/// are not the daemon's own ([`crate::config::DEVICE_KEYS`]) go to the backend.
///
/// # Errors
/// A bad subtype or cfgstring, or a store that cannot be opened.
pub fn open_backend(
    subtype: &str,
    cfg: &str,
    device: &str,
    size: u64,
    metrics: Option<&Arc<tcmu_warden_supervisor::metrics::Metrics>>,
) -> Result<Arc<dyn Backend>, OpenError> {
    let (cfg, options) = crate::config::split_cfgstring_options(cfg);
    let backend_options: Vec<_> = options
        .into_iter()
        .filter(|(k, _)| !crate::config::DEVICE_KEYS.contains(k))
        .collect();
    let ctx = OpenCtx {
        device,
        size,
        options: &backend_options,
        metrics,
    };
    registry::open(subtype, cfg, &ctx)
}

/// Apply a netlink RECONFIG_DEVICE to a served device: a new size, the write cache, or a
/// new cfgstring (opened here, as `open_backend` does at start, before it replaces the old
/// backend).
///
/// # Errors
/// [`ReconfigError`], whose [`ReconfigError::errno`] is the reply's status; the device keeps
/// its old settings.
pub fn reconfigure(
    handle: &DeviceHandle,
    device: &str,
    r: Reconfig,
    metrics: Option<&Arc<tcmu_warden_supervisor::metrics::Metrics>>,
) -> Result<(), ReconfigError> {
    let change = match r {
        Reconfig::DevSize(n) => Change::Size(n),
        Reconfig::WriteCache(on) => Change::WriteCache(on),
        Reconfig::DevCfg(cfg) => {
            let (subtype, rest) = cfg.split_once('/').unwrap_or((cfg.as_str(), ""));
            let size = {
                let lun = handle.link().lun.read();
                lun.num_blocks * u64::from(lun.block_size)
            };
            Change::Backend(open_backend(subtype, rest, device, size, metrics)?)
        }
    };
    handle.reconfigure(change)
}

/// Open and start serving one uio device. With `restart`, the ring is first reset the way
/// tcmu-runner does after a crash (docs/kernel-abi.md §7.3(b)): block the device, reset the
/// ring (the commands a dead predecessor left complete with BUSY; nothing is replayed), open
/// and map, unblock.
///
/// # Errors
/// See [`DeviceError`]; the message names what is wrong.
pub fn serve(dev: &Path, cfg: &DaemonConfig, restart: bool) -> Result<Served, DeviceError> {
    let mut laps = Laps::start();
    let mut opened = OpenTimes::default();
    let uio = Uio::open_at(dev, &cfg.sysfs_uio)?;
    opened.uio = laps.lap();
    let uname = uio.name().to_string();
    let parsed = parse_uio_name(&uname)?;
    let subtype = parsed.subtype.unwrap_or("");
    let cfgstr = parsed.cfgstring.unwrap_or("");
    let name = format!("user_{}/{}", parsed.hba, parsed.device);
    let dir = configfs::device_dir(&cfg.configfs_root, parsed.hba, parsed.device);
    let attrs = configfs::read(&dir)?;
    let (_, options) = crate::config::split_cfgstring_options(cfgstr);
    let settings = cfg.file.device_with(&name, &options).map_err(|e| {
        tracing::error!(device = %name, "refused: {e}");
        OpenError::Config {
            cfgstring: cfgstr.to_string(),
            reason: e.to_string(),
        }
    })?;
    opened.attrs = laps.lap();
    let backend = open_backend(subtype, cfgstr, &name, attrs.dev_size, cfg.metrics.as_ref())
        .inspect_err(|e| tracing::error!(device = %name, uio = %dev.display(), "refused: {e}"))?;
    opened.backend = laps.lap();
    let backend_timeout = backend.op_timeout();
    let fault = (!settings.faults.is_empty()).then(|| {
        tracing::warn!(device = %name, rules = %crate::backend::fault::format_rules(&settings.faults), "FAULT INJECTION is on for this device");
        Arc::new(crate::backend::fault::FaultBackend::new(
            Arc::clone(&backend),
            settings.faults.clone(),
        ))
    });
    let backend: Arc<dyn Backend> = match &fault {
        Some(f) => Arc::clone(f) as Arc<dyn Backend>,
        None => backend,
    };
    // The ALUA groups are not read here but by the device before its first command
    // (`AluaSource` below): a dozen configfs reads off the path the kernel's `enable` waits
    // on (docs/DESIGN.md, "Device lifecycle").
    let lun = lun_info(&attrs, backend.as_ref(), &fallback_serial(&name));
    let target_root = configfs::target_root(&cfg.configfs_root);
    let plan = plan(
        attrs.cmd_time_out,
        cfg.replacement_timeout,
        &settings,
        backend_timeout,
    );
    if let Some(msg) = report_tiers(&name, &plan) {
        if settings.tier_policy == crate::config::TierPolicy::Refuse {
            tracing::error!(device = %name, "refused: {msg}");
            return Err(DeviceError::Tiers(msg));
        }
    }
    let restart = if restart {
        clean_restart(&dir, &name)
    } else {
        None
    };
    opened.restart = laps.lap();
    let ring = Ring::new(Arc::new(uio.map()?))?;
    opened.map = laps.lap();
    tracing::info!(device = %name, uio = %dev.display(), backend = %backend.describe(), size = attrs.dev_size,
        block_size = attrs.block_size, cmd_time_out = ?attrs.cmd_time_out, "opening");
    let mut dev_cfg = cfg.device.clone();
    if dev_cfg.command_deadline.is_none() {
        dev_cfg.command_deadline = Some(plan.deadline);
    }
    dev_cfg.outlier_threshold = Some(settings.outlier_threshold);
    dev_cfg.health = Some(plan.ping);
    dev_cfg.metrics = cfg.metrics.as_ref().map(|m| m.device(&name, subtype));
    let kept_dir = dir.clone();
    dev_cfg.free_kept_buf = Some(FreeKeptBuf(Arc::new(move |id| {
        KernelActions::new()
            .free_kept_buf(&kept_dir, id)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })));
    if let Some(p) = cfg.write_cache.clone() {
        let wce_dir = dir.clone();
        dev_cfg.persist_write_cache = Some(device::PersistWriteCache(Arc::new(move |on| {
            p.persist(&wce_dir, on);
        })));
    }
    let (alua_dir, alua_root) = (dir.clone(), target_root);
    dev_cfg.alua = Some(device::AluaSource(Arc::new(move || {
        configfs::read_alua(&alua_dir, &alua_root)
    })));
    let (sink_dir, sink_name) = (dir.clone(), name.clone());
    dev_cfg.alua_sink = Some(device::AluaSink(Arc::new(move |changes| {
        let (d, n) = (sink_dir.clone(), sink_name.clone());
        // The kernel's transition may take its trans_delay_msecs: off the device thread.
        let spawned = std::thread::Builder::new()
            .name("tcmu-alua".into())
            .spawn(move || {
                let failed = configfs::alua_write::write_states(&d, &changes);
                for f in &failed {
                    tracing::warn!(device = %n, path = %f.path.display(),
                        "lock-driven ALUA: writing the group's state to configfs failed: {}", f.error);
                }
                if failed.is_empty() {
                    tracing::info!(device = %n, ?changes, "lock-driven ALUA: group states written to configfs");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(device = %sink_name, "lock-driven ALUA: cannot start the configfs writer: {e}");
        }
    })));
    tracing::info!(device = %name, deadline = ?dev_cfg.command_deadline, "command deadline");
    opened.config = laps.lap();
    let handle = device::spawn(&name, ring, Box::new(uio), backend, lun, &dev_cfg)?;
    opened.device = laps.lap();
    opened.start = handle.started;
    if let Some(r) = restart {
        if let Err(e) = KernelActions::new().finish_clean_restart(r) {
            tracing::error!(device = %name, "unblocking after the ring reset failed: {e}");
        }
    }
    let tiers = describe_tiers(plan.tiers.as_ref(), dev_cfg.command_deadline);
    Ok(Served {
        name,
        dir,
        subtype: subtype.to_string(),
        uio: dev.to_path_buf(),
        tiers,
        handle,
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        cmd_time_out: attrs.cmd_time_out,
        backend_timeout,
        fault,
        opened,
    })
}

/// The device's timeout tiers (see `tcmu_warden_supervisor::tiers`), when the kernel's
/// `cmd_time_out` is known. The backend tier is the backend's own operation timeout (RBD's
/// `osd_op_timeout`, Gluster's `network.ping-timeout`) or, for backends without one (the
/// file backend), `io_timeout`, which the per-command deadline enforces.
fn tiers(
    cmd_time_out: Option<u32>,
    replacement: std::time::Duration,
    settings: &crate::config::DeviceSettings,
    backend_timeout: Option<std::time::Duration>,
) -> Option<tcmu_warden_supervisor::tiers::Tiers> {
    let cmd = cmd_time_out?;
    Some(tcmu_warden_supervisor::tiers::Tiers {
        backend: backend_timeout.unwrap_or(settings.io_timeout),
        replacement,
        multipath: settings.multipath,
        cmd_time_out: std::time::Duration::from_secs(u64::from(cmd)),
    })
}

/// The tiers and their verdict in one sentence.
pub(super) fn describe_tiers(
    t: Option<&tcmu_warden_supervisor::tiers::Tiers>,
    deadline: Option<std::time::Duration>,
) -> String {
    let deadline = deadline.map_or_else(
        || "no handler deadline".to_string(),
        |d| format!("handler deadline {}", secs(d)),
    );
    let Some(t) = t else {
        return format!("cmd_time_out unknown; {deadline}");
    };
    let head = format!(
        "backend {}, cmd_time_out {}, replacement_timeout {}{}, {deadline}",
        secs(t.backend),
        if t.cmd_time_out.is_zero() {
            "0 (never)".to_string()
        } else {
            secs(t.cmd_time_out)
        },
        secs(t.replacement),
        if t.multipath { " (multipath)" } else { "" },
    );
    let f = t.check();
    if f.is_empty() {
        format!("{head}: sound")
    } else {
        format!(
            "{head}: UNSAFE: {}",
            f.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

fn secs(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn clean_restart(dir: &Path, name: &str) -> Option<crate::kernel_actions::CleanRestart> {
    match KernelActions::new().prepare_clean_restart(dir) {
        Ok(r) => {
            tracing::info!(device = %name, "ring reset: commands left by a previous handler were completed with BUSY");
            Some(r)
        }
        Err(e) => {
            tracing::warn!(device = %name, "could not reset the ring ({e}); resuming from cmd_tail instead");
            None
        }
    }
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
        h(0x8422_2325_cbf2_9ce4)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart that fails after the ring reset (here: the uio device cannot be mapped)
    /// leaves the device unblocked, not answering BUSY for ever.
    #[test]
    fn a_restart_that_fails_half_way_unblocks_the_device() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("a.img");
        let sysfs = t.path().join("uio");
        let uio = sysfs.join("uio7");
        std::fs::create_dir_all(uio.join("maps/map0")).unwrap();
        std::fs::write(
            uio.join("name"),
            format!("tcm-user/0/lun0/file/{}\n", img.display()),
        )
        .unwrap();
        std::fs::write(uio.join("maps/map0/size"), "0x1000\n").unwrap();
        let root = t.path().join("core");
        let dir = configfs::device_dir(&root, 0, "lun0");
        std::fs::create_dir_all(dir.join("attrib")).unwrap();
        std::fs::create_dir_all(dir.join("action")).unwrap();
        std::fs::write(dir.join("attrib/dev_size"), "1048576\n").unwrap();
        std::fs::write(dir.join("attrib/hw_block_size"), "512\n").unwrap();
        for f in ["block_dev", "reset_ring"] {
            std::fs::write(dir.join("action").join(f), "").unwrap();
        }
        // /dev/null opens read-write but cannot be mapped: the open fails after the reset.
        let dev = t.path().join("uio7");
        std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
        let cfg = DaemonConfig {
            sysfs_uio: sysfs,
            configfs_root: root,
            control_socket: None,
            ..DaemonConfig::default()
        };
        let r = serve(&dev, &cfg, true);
        assert!(r.is_err(), "mapping /dev/null must fail");
        assert_eq!(
            std::fs::read_to_string(dir.join("action/reset_ring")).unwrap(),
            "1",
            "the ring was reset"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("action/block_dev")).unwrap(),
            "0",
            "the device is unblocked again"
        );
    }
}
