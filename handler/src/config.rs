//! The daemon's configuration file: TOML, `/etc/tcmu-warden/config.toml` by default.
//!
//! ```toml
//! [daemon]                  # the process: logging, metrics, netlink, threads
//! log_level = "info"
//! [defaults]                # every device
//! io_timeout = "20s"
//! [device."user_0/lun0"]    # one device (its configfs name, user_<hba>/<name>)
//! io_timeout = "10s"
//! ```
//!
//! Every key, its default and when a change applies are documented in `docs/config.md`;
//! `etc/config.toml.example` is a complete, commented file. A key this version does not know,
//! or a value it cannot use, is refused with the line and the reason
//! (`config.toml line 7: unknown field `io_timout`, expected one of …`).
//!
//! Per-device settings resolve, most specific first: an option in the device's cfgstring
//! (`file/<path>;io_timeout=10s`, as tcmu-runner does, see [`split_cfgstring_options`]),
//! then the device's `[device."user_<hba>/<name>"]` section, then `[defaults]`, then the
//! built-in default.
//!
//! Durations are strings: a number (decimals allowed) with a unit, `ns`, `us`, `ms`, `s`,
//! `m`, `h`, possibly chained (`1m30s`); see [`crate::duration`].

use crate::backend::fault::{self, Rule};
use crate::duration::{format_duration, parse_duration};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon looks for its configuration when none is named.
pub const DEFAULT_PATH: &str = "/etc/tcmu-warden/config.toml";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[daemon]`: the process.
    pub daemon: DaemonSection,
    /// `[defaults]`: settings of every device, unless overridden.
    pub defaults: DeviceSection,
    /// `[device."user_<hba>/<name>"]`: overrides for one device, by configfs name.
    #[serde(rename = "device", deserialize_with = "de_devices")]
    pub devices: BTreeMap<String, DeviceSection>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Log filter (`info`, `debug`, or `tracing` directives such as
    /// `info,tcmu_warden::device=debug`); `RUST_LOG` overrides it. Default `info`.
    #[serde(deserialize_with = "de_log_level")]
    pub log_level: String,
    /// Address of the Prometheus endpoint. Default `127.0.0.1:9559`.
    #[serde(deserialize_with = "de_socket_addr")]
    pub metrics_addr: SocketAddr,
    /// Netlink reply mode (the kernel waits for our answer to device events). Default true.
    pub reply_mode: bool,
    /// `mlockall` and `PR_SET_IO_FLUSHER` at start. Default true.
    pub mlock: bool,
    /// The initiators' iSCSI `replacement_timeout` (the initiator tier). Default 120 s.
    #[serde(deserialize_with = "de_duration")]
    pub replacement_timeout: Duration,
    /// Worker threads of the pool shared by every device, 1..=256. Default
    /// [`default_workers`]: max(4, 2 × cores).
    #[serde(deserialize_with = "de_workers")]
    pub workers: u16,
    /// Device event loops: threads that each serve many devices' rings, 1..=256. Default
    /// [`default_loops`]: one per core.
    #[serde(deserialize_with = "de_loops")]
    pub loops: u16,
    /// One device's share of the pool: most of its jobs on workers at once, 0..=256; 0 (the
    /// default): [`device_workers_for`] the pool (half of it, at least 1).
    #[serde(deserialize_with = "de_device_workers")]
    pub device_workers: u16,
    /// Commands in flight per device, 1..=65535. Default 256.
    #[serde(deserialize_with = "de_max_inflight")]
    pub max_inflight: u32,
    /// How long stopping a device waits for commands in flight. Default 10 s.
    #[serde(deserialize_with = "de_duration")]
    pub stop_timeout: Duration,
    /// Accepted for old configurations, no longer used: no backend I/O runs on the device
    /// thread (a hung file would defeat the deadline); `io_uring` saves the hand-offs instead.
    pub inline_qd1: bool,
    /// File I/O (READ, WRITE, SYNCHRONIZE CACHE) through each device thread's own io_uring
    /// instead of the worker threads. Default true; where the kernel refuses io_uring the
    /// workers are used anyway.
    pub io_uring: bool,
}

impl Default for DaemonSection {
    fn default() -> DaemonSection {
        DaemonSection {
            log_level: "info".into(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9559)),
            reply_mode: true,
            mlock: true,
            replacement_timeout: Duration::from_secs(120),
            workers: default_workers(),
            loops: default_loops(),
            device_workers: 0,
            max_inflight: 256,
            stop_timeout: Duration::from_secs(10),
            inline_qd1: true,
            io_uring: true,
        }
    }
}

/// What to do with a device whose timeout tiers break a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierPolicy {
    /// Serve it, logging each broken rule (the default).
    #[default]
    Warn,
    /// Refuse to serve it.
    Refuse,
}

impl fmt::Display for TierPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TierPolicy::Warn => "warn",
            TierPolicy::Refuse => "refuse",
        })
    }
}

/// `[defaults]` and `[device."…"]`: every key optional (unset: the next level decides).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSection {
    /// The backend tier for backends without their own (the file backend's I/O timeout).
    #[serde(deserialize_with = "de_opt_positive_duration")]
    pub io_timeout: Option<Duration>,
    /// Commands slower than this go to the outlier log.
    #[serde(deserialize_with = "de_opt_duration")]
    pub outlier_threshold: Option<Duration>,
    /// Time between health pings of the backend.
    #[serde(deserialize_with = "de_opt_positive_duration")]
    pub ping_interval: Option<Duration>,
    /// The LUN is exported over several ALUA paths (its `cmd_time_out` must then exceed
    /// `replacement_timeout` too).
    pub multipath: Option<bool>,
    /// Refuse, or serve with a warning, a device whose timeout tiers break a rule.
    pub tier_policy: Option<TierPolicy>,
    /// Fault-injection rules (testing only; see `backend::fault`).
    #[serde(deserialize_with = "de_opt_faults")]
    pub faults: Option<Vec<Rule>>,
}

/// A device's settings, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Default 20 s.
    pub io_timeout: Duration,
    /// Default 1 s.
    pub outlier_threshold: Duration,
    /// Default 5 s.
    pub ping_interval: Duration,
    /// Default false.
    pub multipath: bool,
    /// Default [`TierPolicy::Warn`].
    pub tier_policy: TierPolicy,
    /// Default none. Non-empty: wrap the backend in a
    /// [`FaultBackend`](crate::backend::fault::FaultBackend).
    pub faults: Vec<Rule>,
}

impl Default for DeviceSettings {
    fn default() -> DeviceSettings {
        DeviceSettings {
            io_timeout: Duration::from_secs(20),
            outlier_threshold: Duration::from_secs(1),
            ping_interval: Duration::from_secs(5),
            multipath: false,
            tier_policy: TierPolicy::Warn,
            faults: Vec::new(),
        }
    }
}

impl DeviceSettings {
    fn apply(&mut self, s: &DeviceSection) {
        if let Some(v) = s.io_timeout {
            self.io_timeout = v;
        }
        if let Some(v) = s.outlier_threshold {
            self.outlier_threshold = v;
        }
        if let Some(v) = s.ping_interval {
            self.ping_interval = v;
        }
        if let Some(v) = s.multipath {
            self.multipath = v;
        }
        if let Some(v) = s.tier_policy {
            self.tier_policy = v;
        }
        if let Some(v) = &s.faults {
            self.faults.clone_from(v);
        }
    }

    /// The keys whose value differs in `new`, labelled with `section` (the device name).
    #[must_use]
    pub fn diff(&self, new: &DeviceSettings, section: &str) -> Vec<KeyChange> {
        let mut out = Vec::new();
        let mut key = |key: &'static str, old: String, new: String| {
            if old != new {
                out.push(KeyChange {
                    section: section.to_string(),
                    key,
                    old,
                    new,
                    applies: Applies::Now,
                });
            }
        };
        key(
            "io_timeout",
            format_duration(self.io_timeout),
            format_duration(new.io_timeout),
        );
        key(
            "outlier_threshold",
            format_duration(self.outlier_threshold),
            format_duration(new.outlier_threshold),
        );
        key(
            "ping_interval",
            format_duration(self.ping_interval),
            format_duration(new.ping_interval),
        );
        key(
            "multipath",
            self.multipath.to_string(),
            new.multipath.to_string(),
        );
        key(
            "tier_policy",
            self.tier_policy.to_string(),
            new.tier_policy.to_string(),
        );
        key(
            "faults",
            fault::format_rules(&self.faults),
            fault::format_rules(&new.faults),
        );
        out
    }
}

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// At once, on the devices being served (thresholds, tiers, fault rules).
    Now,
    /// For devices opened from now on (per-device thread and queue sizes).
    NewDevices,
    /// Only after a restart (the process-wide setup).
    Restart,
}

/// One key whose value a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// `daemon`, or the device's name.
    pub section: String,
    /// The key.
    pub key: &'static str,
    /// The value in force before, as written in the file.
    pub old: String,
    /// The new value.
    pub new: String,
    /// When it takes effect.
    pub applies: Applies,
}

impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.applies {
            Applies::Now => "",
            Applies::NewDevices => " (for devices opened from now on)",
            Applies::Restart => " (needs a restart)",
        };
        write!(
            f,
            "{} {}: {} -> {}{when}",
            self.section, self.key, self.old, self.new
        )
    }
}

/// A configuration re-read on SIGHUP, and what changed in the daemon section.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration before.
    pub old: Config,
    /// The configuration now in force.
    pub config: Config,
    /// Changed `[daemon]` keys, with when each applies.
    pub daemon: Vec<KeyChange>,
}

impl Reload {
    /// A device's settings under the new configuration and the keys that changed for it
    /// (`options`: the device's cfgstring options, which still take precedence).
    ///
    /// # Errors
    /// A cfgstring option that is not valid (it was when the device was added, so only if
    /// this version's rules changed; keep the old settings then).
    pub fn device(
        &self,
        name: &str,
        options: &[(&str, &str)],
    ) -> Result<(DeviceSettings, Vec<KeyChange>), ConfigError> {
        let old = self.old.device_with(name, options)?;
        let new = self.config.device_with(name, options)?;
        let changes = old.diff(&new, name);
        Ok((new, changes))
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key or value is refused.
    #[error("{} line {line}: {reason}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line of the offending key or value (0 when unknown).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An option in a device's cfgstring is refused.
    #[error("device {device}: cfgstring option `{option}`: {reason}")]
    Option {
        /// The device's configfs name.
        device: String,
        /// The option as written (`key=value`).
        option: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The line of a parse error.
    #[must_use]
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Parse { line, .. } => Some(*line),
            _ => None,
        }
    }
}

impl Config {
    /// Parse the text of a configuration file; `file` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the line and the reason.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |s| line_of(text, s.start.min(text.len())));
            ConfigError::Parse {
                file: file.to_path_buf(),
                line,
                reason: e.message().trim().to_string(),
            }
        })
    }

    /// A device's settings: its `[device."<name>"]` section over `[defaults]` over the
    /// built-in defaults.
    #[must_use]
    pub fn device(&self, name: &str) -> DeviceSettings {
        let mut s = DeviceSettings::default();
        s.apply(&self.defaults);
        if let Some(d) = self.devices.get(name) {
            s.apply(d);
        }
        s
    }

    /// [`Config::device`] with the device's cfgstring options on top (see
    /// [`split_cfgstring_options`]). Several `faults=` options each add one rule (a rule
    /// list cannot be written in one option: `;` separates options); together they replace
    /// the configured rules.
    ///
    /// # Errors
    /// [`ConfigError::Option`] for an unknown key or a bad value.
    pub fn device_with(
        &self,
        name: &str,
        options: &[(&str, &str)],
    ) -> Result<DeviceSettings, ConfigError> {
        let mut s = self.device(name);
        let mut first_fault = true;
        for &(k, v) in options {
            let bad = |reason: String| ConfigError::Option {
                device: name.to_string(),
                option: format!("{k}={v}"),
                reason,
            };
            let v = v.trim();
            match k.trim() {
                "io_timeout" => {
                    s.io_timeout = positive(parse_duration(v).map_err(|e| bad(e.to_string()))?)
                        .map_err(bad)?;
                }
                "outlier_threshold" => {
                    s.outlier_threshold = parse_duration(v).map_err(|e| bad(e.to_string()))?;
                }
                "ping_interval" => {
                    s.ping_interval = positive(parse_duration(v).map_err(|e| bad(e.to_string()))?)
                        .map_err(bad)?;
                }
                "multipath" => {
                    s.multipath = match v {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => return Err(bad("expected true or false".into())),
                    };
                }
                "tier_policy" => {
                    s.tier_policy = match v {
                        "warn" => TierPolicy::Warn,
                        "refuse" => TierPolicy::Refuse,
                        _ => return Err(bad("expected warn or refuse".into())),
                    };
                }
                "faults" => {
                    let rules = fault::parse_rules(v).map_err(|e| bad(e.to_string()))?;
                    if first_fault {
                        s.faults.clear();
                        first_fault = false;
                    }
                    s.faults.extend(rules);
                }
                // Not the daemon's: the backend's own (RBD's osd_op_timeout, ...), which the
                // backend checks when it opens.
                _ => {}
            }
        }
        Ok(s)
    }

    /// The `[daemon]` keys whose value differs in `new`, with when each applies.
    #[must_use]
    pub fn diff_daemon(&self, new: &Config) -> Vec<KeyChange> {
        let (a, b) = (&self.daemon, &new.daemon);
        let mut out = Vec::new();
        let mut key = |key: &'static str, old: String, new: String, applies: Applies| {
            if old != new {
                out.push(KeyChange {
                    section: "daemon".into(),
                    key,
                    old,
                    new,
                    applies,
                });
            }
        };
        key(
            "log_level",
            a.log_level.clone(),
            b.log_level.clone(),
            Applies::Now,
        );
        key(
            "replacement_timeout",
            format_duration(a.replacement_timeout),
            format_duration(b.replacement_timeout),
            Applies::Now,
        );
        key(
            "device_workers",
            a.device_workers.to_string(),
            b.device_workers.to_string(),
            Applies::NewDevices,
        );
        key(
            "max_inflight",
            a.max_inflight.to_string(),
            b.max_inflight.to_string(),
            Applies::NewDevices,
        );
        key(
            "stop_timeout",
            format_duration(a.stop_timeout),
            format_duration(b.stop_timeout),
            Applies::NewDevices,
        );
        key(
            "inline_qd1",
            a.inline_qd1.to_string(),
            b.inline_qd1.to_string(),
            Applies::NewDevices,
        );
        key(
            "io_uring",
            a.io_uring.to_string(),
            b.io_uring.to_string(),
            Applies::NewDevices,
        );
        key(
            "metrics_addr",
            a.metrics_addr.to_string(),
            b.metrics_addr.to_string(),
            Applies::Restart,
        );
        key(
            "reply_mode",
            a.reply_mode.to_string(),
            b.reply_mode.to_string(),
            Applies::Restart,
        );
        key(
            "mlock",
            a.mlock.to_string(),
            b.mlock.to_string(),
            Applies::Restart,
        );
        key(
            "workers",
            a.workers.to_string(),
            b.workers.to_string(),
            Applies::Restart,
        );
        key(
            "loops",
            a.loops.to_string(),
            b.loops.to_string(),
            Applies::Restart,
        );
        out
    }

    /// SIGHUP: read the file again (`path` as given to [`load_from`]). On success the
    /// returned [`Reload`] holds the new configuration and what changed in `[daemon]`; use
    /// [`Reload::device`] for each device served. On error nothing changes: keep `self`.
    ///
    /// # Errors
    /// As [`load_from`].
    pub fn reload(&self, path: Option<&Path>) -> Result<Reload, ConfigError> {
        let config = load_from(path)?;
        let daemon = self.diff_daemon(&config);
        Ok(Reload {
            old: self.clone(),
            config,
            daemon,
        })
    }
}

/// The keys of `[defaults]`, `[device."…"]` and cfgstring options.
pub const DEVICE_KEYS: &[&str] = &[
    "io_timeout",
    "outlier_threshold",
    "ping_interval",
    "multipath",
    "tier_policy",
    "faults",
];

/// Read the configuration at `path`. A missing file is fine at [`DEFAULT_PATH`] (the
/// defaults apply), and an error anywhere else.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_file(path, path == Path::new(DEFAULT_PATH))
}

/// Read the configuration: `Some(path)` (from `--config`) must exist; `None` reads
/// [`DEFAULT_PATH`] if it exists, and gives the defaults if it does not.
///
/// # Errors
/// [`ConfigError::Read`] or [`ConfigError::Parse`].
pub fn load_from(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => load_file(p, false),
        None => load_file(Path::new(DEFAULT_PATH), true),
    }
}

fn load_file(path: &Path, missing_ok: bool) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Config::parse(&text, path),
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Split tcmu-runner style options off a cfgstring: `file/a.img;io_timeout=10s;multipath=1`
/// gives `("file/a.img", [("io_timeout", "10s"), ("multipath", "1")])`.
///
/// Options start at the first `;` after which every `;`-separated part is `key=value` with
/// a key of lowercase letters, digits and `_` (empty parts are ignored); a `;` that does not
/// start such a tail stays in the handler's part, so `file/a;b.img` keeps its path. Keys are
/// checked by [`Config::device_with`], so a misspelled option is refused, not ignored.
#[must_use]
pub fn split_cfgstring_options(cfg: &str) -> (&str, Vec<(&str, &str)>) {
    let is_option = |part: &str| {
        part.is_empty()
            || part.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.starts_with(|c: char| c.is_ascii_lowercase())
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
    };
    for (i, _) in cfg.match_indices(';') {
        let tail = &cfg[i + 1..];
        if tail.split(';').all(is_option) {
            let opts = tail
                .split(';')
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .collect();
            return (&cfg[..i], opts);
        }
    }
    (cfg, Vec::new())
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be greater than 0".into())
    } else {
        Ok(d)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"30s\", \"250ms\" or \"2m\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_str(DurationVisitor).map(Some)
}

fn de_opt_positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = d.deserialize_str(DurationVisitor)?;
    positive(v).map(Some).map_err(de::Error::custom)
}

fn de_opt_faults<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Rule>>, D::Error> {
    let s = String::deserialize(d)?;
    fault::parse_rules(&s).map(Some).map_err(de::Error::custom)
}

fn de_log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    crate::logging::parse_filter(&s).map_err(de::Error::custom)?;
    Ok(s)
}

fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::custom(format!(
            "bad address {s:?}: expected ip:port, e.g. \"127.0.0.1:9559\" or \"[::1]:9559\""
        ))
    })
}

fn de_workers<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = i64::deserialize(d)?;
    u16::try_from(v)
        .ok()
        .filter(|n| (1..=256).contains(n))
        .ok_or_else(|| de::Error::custom(format!("workers = {v}: expected 1 to 256")))
}

fn de_loops<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = i64::deserialize(d)?;
    u16::try_from(v)
        .ok()
        .filter(|n| (1..=256).contains(n))
        .ok_or_else(|| de::Error::custom(format!("loops = {v}: expected 1 to 256")))
}

/// The default number of device event loops: one per core this process may use, at most
/// 256.
#[must_use]
pub fn default_loops() -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u16::try_from(cores.clamp(1, 256)).unwrap_or(256)
}

fn de_device_workers<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = i64::deserialize(d)?;
    u16::try_from(v)
        .ok()
        .filter(|n| *n <= 256)
        .ok_or_else(|| de::Error::custom(format!("device_workers = {v}: expected 0 to 256")))
}

/// The default size of the shared worker pool: max(4, 2 × the cores this process may use),
/// at most 256.
#[must_use]
pub fn default_workers() -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u16::try_from(cores.saturating_mul(2).clamp(4, 256)).unwrap_or(256)
}

/// A device's share of a pool of `workers` threads when `device_workers` is 0: half the
/// pool, at least 1, so one device whose backend hangs leaves the other half to the others.
#[must_use]
pub fn device_workers_for(workers: usize) -> usize {
    (workers / 2).max(1)
}

impl DaemonSection {
    /// The share of the pool each device gets (`device_workers`, or its default).
    #[must_use]
    pub fn device_share(&self) -> usize {
        match self.device_workers {
            0 => device_workers_for(usize::from(self.workers)),
            n => usize::from(n),
        }
    }
}

fn de_max_inflight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    u32::try_from(v)
        .ok()
        .filter(|n| (1..=65535).contains(n))
        .ok_or_else(|| de::Error::custom(format!("max_inflight = {v}: expected 1 to 65535")))
}

/// A `[device."…"]` name: `user_<hba>/<name>` as in configfs.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct DeviceName(String);

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeviceName, D::Error> {
        let s = String::deserialize(d)?;
        let ok = s.split_once('/').is_some_and(|(hba, name)| {
            hba.strip_prefix("user_")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                && !name.is_empty()
                && !name.contains('/')
        });
        if ok {
            Ok(DeviceName(s))
        } else {
            Err(de::Error::custom(format!(
                "device name {s:?}: expected the configfs name user_<hba>/<name>, e.g. [device.\"user_0/lun0\"]"
            )))
        }
    }
}

fn de_devices<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, DeviceSection>, D::Error> {
    let m = BTreeMap::<DeviceName, DeviceSection>::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k.0, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fault::{Action, OpSet};
    use nix::errno::Errno;

    const EXAMPLE: &str = include_str!("../../etc/config.toml.example");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.toml"))
    }

    #[track_caller]
    fn refused(text: &str, line: usize, words: &[&str]) -> String {
        let e = parse(text).expect_err("must be refused");
        let msg = e.to_string();
        assert_eq!(e.line(), Some(line), "{msg}");
        assert!(
            msg.starts_with(&format!("config.toml line {line}: ")),
            "{msg}"
        );
        for w in words {
            assert!(msg.contains(w), "{msg:?} lacks {w:?}");
        }
        msg
    }

    #[test]
    fn the_example_parses_and_states_the_defaults() {
        let c = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.daemon, DaemonSection::default());
        assert_eq!(c.device("user_9/other"), DeviceSettings::default());
        assert_eq!(
            c.devices.keys().collect::<Vec<_>>(),
            ["user_0/lun0"],
            "one example device section"
        );
        let d = c.device("user_0/lun0");
        assert_eq!(d.io_timeout, Duration::from_secs(10));
        assert!(d.multipath);
        assert_eq!(d.tier_policy, TierPolicy::Refuse);
        // Every documented key appears in the example.
        for k in DEVICE_KEYS {
            assert!(EXAMPLE.contains(&format!("{k} =")), "{k} missing");
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        let d = DaemonSection::default();
        assert_eq!(d.log_level, "info");
        assert_eq!(d.metrics_addr.to_string(), "127.0.0.1:9559");
        assert!(d.reply_mode && d.mlock && d.inline_qd1);
        assert_eq!(d.replacement_timeout, Duration::from_secs(120));
        assert_eq!((d.workers, d.max_inflight), (default_workers(), 256));
        assert!(d.workers >= 4);
        assert_eq!(d.device_share(), usize::from(d.workers) / 2);
        assert_eq!(d.stop_timeout, Duration::from_secs(10));
        let s = c.device("user_0/lun0");
        assert_eq!(s.io_timeout, Duration::from_secs(20));
        assert_eq!(s.outlier_threshold, Duration::from_secs(1));
        assert!(!s.multipath);
        assert_eq!(s.tier_policy, TierPolicy::Warn);
        assert!(s.faults.is_empty());
    }

    #[test]
    fn device_sections_override_defaults_and_cfgstring_options_override_both() {
        let c = parse(
            r#"
[defaults]
io_timeout = "20s"
outlier_threshold = "500ms"
faults = "write:fail=EIO"

[device."user_1/db"]
io_timeout = "5s"
multipath = true
faults = ""
"#,
        )
        .unwrap();
        let other = c.device("user_1/other");
        assert_eq!(other.io_timeout, Duration::from_secs(20));
        assert_eq!(other.outlier_threshold, Duration::from_millis(500));
        assert!(!other.multipath);
        assert_eq!(
            other.faults,
            [Rule::new(OpSet::WRITE, Action::Fail(Errno::EIO))]
        );
        let db = c.device("user_1/db");
        assert_eq!(
            db.io_timeout,
            Duration::from_secs(5),
            "section over defaults"
        );
        assert_eq!(
            db.outlier_threshold,
            Duration::from_millis(500),
            "inherited"
        );
        assert!(db.multipath);
        assert!(db.faults.is_empty(), "an empty string clears the rules");

        let (path, opts) = split_cfgstring_options(
            "file//var/lib/db.img;io_timeout=2s;multipath=false;faults=read:delay=1s;faults=flush:hang",
        );
        assert_eq!(path, "file//var/lib/db.img");
        let s = c.device_with("user_1/db", &opts).unwrap();
        assert_eq!(
            s.io_timeout,
            Duration::from_secs(2),
            "cfgstring over section"
        );
        assert!(!s.multipath);
        assert_eq!(s.outlier_threshold, Duration::from_millis(500));
        assert_eq!(
            s.faults,
            [
                Rule::new(OpSet::READ, Action::Delay(Duration::from_secs(1))),
                Rule::new(OpSet::FLUSH, Action::Hang)
            ],
            "faults= options accumulate and replace the configured rules"
        );
        assert_eq!(c.device_with("user_1/db", &[]).unwrap(), db);
    }

    #[test]
    fn bad_cfgstring_options_are_refused_naming_the_option() {
        let c = Config::default();
        for (opts, words) in [
            (vec![("io_timeout", "10")], &["missing unit"][..]),
            (vec![("io_timeout", "0s")], &["greater than 0"]),
            (vec![("multipath", "maybe")], &["true or false"]),
            (vec![("tier_policy", "ignore")], &["warn or refuse"]),
            (vec![("faults", "write:explode")], &["unknown action"]),
        ] {
            let e = c.device_with("user_0/a", &opts).unwrap_err().to_string();
            assert!(e.starts_with("device user_0/a: cfgstring option"), "{e}");
            for w in words {
                assert!(e.contains(w), "{e:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn cfgstring_options_split_like_tcmu_runner() {
        assert_eq!(
            split_cfgstring_options("file//a.img"),
            ("file//a.img", vec![])
        );
        assert_eq!(
            split_cfgstring_options("file/path;io_timeout=10s;outlier_threshold=500ms"),
            (
                "file/path",
                vec![("io_timeout", "10s"), ("outlier_threshold", "500ms")]
            )
        );
        // A `;` inside the path stays there; only a tail of key=value parts is options.
        assert_eq!(
            split_cfgstring_options("file//a;b.img"),
            ("file//a;b.img", vec![])
        );
        assert_eq!(
            split_cfgstring_options("file//a;b.img;io_timeout=1s"),
            ("file//a;b.img", vec![("io_timeout", "1s")])
        );
        assert_eq!(
            split_cfgstring_options("file//a.img;;multipath=1;"),
            ("file//a.img", vec![("multipath", "1")])
        );
        assert_eq!(
            split_cfgstring_options("file//a.img;"),
            ("file//a.img", vec![])
        );
        assert_eq!(split_cfgstring_options(""), ("", vec![]));
        assert_eq!(split_cfgstring_options(";"), ("", vec![]));
        // Values may hold `=` (fault rules).
        assert_eq!(
            split_cfgstring_options("file/x;faults=write:fail=EIO,count=2"),
            ("file/x", vec![("faults", "write:fail=EIO,count=2")])
        );
    }

    #[test]
    fn bad_keys_and_values_name_the_line_and_the_reason() {
        refused(
            "[daemon]\nworkers = 2\n\n[defaults]\nio_timeout = \"1s\"\n\nio_timout = \"30s\"\n",
            7,
            &[
                "unknown field `io_timout`",
                "expected one of",
                "`io_timeout`",
            ],
        );
        refused(
            "[daemon]\nlog_lvl = \"debug\"\n",
            2,
            &["unknown field `log_lvl`"],
        );
        refused("[deamon]\n", 1, &["unknown field `deamon`"]);
        refused(
            "[defaults]\nio_timeout = \"30\"\n",
            2,
            &["bad duration \"30\"", "missing unit"],
        );
        refused(
            "[defaults]\noutlier_threshold = 5\n",
            2,
            &["duration string such as \"30s\""],
        );
        refused("[defaults]\nio_timeout = \"0s\"\n", 2, &["greater than 0"]);
        refused("\n[daemon]\nworkers = 0\n", 3, &["workers = 0", "1 to 256"]);
        refused("[daemon]\nmax_inflight = 70000\n", 2, &["1 to 65535"]);
        refused("[daemon]\nreply_mode = \"yes\"\n", 2, &["invalid type"]);
        refused(
            "[daemon]\nmetrics_addr = \"localhost\"\n",
            2,
            &["expected ip:port"],
        );
        refused("[daemon]\nlog_level = \"info,[\"\n", 2, &["bad log filter"]);
        refused(
            "[defaults]\ntier_policy = \"ignore\"\n",
            2,
            &["unknown variant `ignore`"],
        );
        refused(
            "[defaults]\nfaults = \"write:fail=EWHAT\"\n",
            2,
            &["bad token `fail=EWHAT`", "unknown errno"],
        );
        refused(
            "[device.\"user_0/a\"]\nio_timeout = \"1s\"\n[device.\"lun0\"]\nmultipath = true\n",
            3,
            &["device name \"lun0\"", "user_<hba>/<name>"],
        );
        refused(
            "[device.\"user_0/a\"]\nworkerz = 1\n",
            2,
            &["unknown field `workerz`"],
        );
        refused("[daemon]\nworkers = \n", 2, &[]);
    }

    #[test]
    fn a_missing_file_is_fine_only_at_the_default_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        let e = load(&p).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("config.toml"), "{e}");
        assert!(load_from(Some(&p)).is_err());
        assert_eq!(load_file(&p, true).unwrap(), Config::default());
        std::fs::write(&p, "[daemon]\nworkers = 8\n").unwrap();
        assert_eq!(load(&p).unwrap().daemon.workers, 8);
        std::fs::write(&p, "[daemon]\nworkers = 8\nbogus = 1\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("config.toml line 3: unknown field `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn reload_reports_what_changed_and_when_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[defaults]\nio_timeout = \"30s\"\n").unwrap();
        let old = load(&p).unwrap();
        std::fs::write(
            &p,
            "[daemon]\nreplacement_timeout = \"60s\"\ndevice_workers = 2\nmlock = false\n\
             [defaults]\nio_timeout = \"30s\"\noutlier_threshold = \"2s\"\n\
             [device.\"user_0/b\"]\nfaults = \"any:hang\"\n",
        )
        .unwrap();
        let r = old.reload(Some(&p)).unwrap();
        let keys: Vec<_> = r.daemon.iter().map(|c| (c.key, c.applies)).collect();
        assert_eq!(
            keys,
            [
                ("replacement_timeout", Applies::Now),
                ("device_workers", Applies::NewDevices),
                ("mlock", Applies::Restart)
            ]
        );
        assert_eq!(
            r.daemon[0].to_string(),
            "daemon replacement_timeout: 2m -> 1m"
        );
        let (s, ch) = r.device("user_0/a", &[]).unwrap();
        assert_eq!(s.outlier_threshold, Duration::from_secs(2));
        assert_eq!(
            ch.iter().map(|c| c.key).collect::<Vec<_>>(),
            ["outlier_threshold"]
        );
        let (_, ch) = r.device("user_0/b", &[]).unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[1].to_string(), "user_0/b faults:  -> any:hang");
        // A cfgstring option still wins over the reloaded file: nothing changes for it.
        let (_, ch) = r
            .device("user_0/a", &[("outlier_threshold", "5s")])
            .unwrap();
        assert!(ch.is_empty());
        // A broken file is refused; the caller keeps the old configuration.
        std::fs::write(&p, "[defaults]\nio_timeout = 3\n").unwrap();
        let e = old.reload(Some(&p)).unwrap_err();
        assert_eq!(e.line(), Some(2));
    }
}
