//! Prometheus metrics of tcmu-warden: one [`Metrics`] registry per process, one
//! [`DeviceMetrics`] per device.
//!
//! Every per-device series carries the labels `device` and `subtype`. The per-device
//! families are defined once per process (`families.rs`); a device's series are plain
//! atomics in one allocation (`series.rs`), read into the exposition at scrape time, so
//! [`Metrics::device`] makes no descriptor and no label child per series, and the updates
//! the device thread makes for each command ([`DeviceMetrics::command_done`],
//! [`DeviceMetrics::observe_use`], ...) are atomic operations: no hashing, no locking, no
//! allocation (`supervisor/tests/metrics_no_alloc.rs` checks it with a counting allocator).
//! docs/metrics.md, "How the series are kept", says why.
//!
//! The per-device counters that `tcmu-warden status` also shows (commands in flight, ring
//! use, deadlines expired, TMRs, outliers, stuck commands) are kept only here: the device
//! bumps these series, and status reads them back through the getters
//! ([`DeviceMetrics::in_flight`], ...); a device served without an endpoint keeps them in
//! [`DeviceMetrics::detached`] series that no registry exports.
//!
//! Every series is documented in `docs/metrics.md`.

mod families;
mod histogram;
mod series;

use families::DeviceFamilies;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use series::Series;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

/// Prefix of every series name.
pub const PREFIX: &str = "tcmu_warden";

/// Upper bounds (seconds) of the latency histograms: 50 µs to 60 s, roughly ×2–×2.5 per
/// step (1-2.5-5 decades), so that a 30 s `cmd_time_out` and the handler's deadline below it
/// each fall on a bucket boundary.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Default size of the largest command-ring entry, for the ring-full rule (see
/// [`DeviceMetrics::observe_use`]): a 112-byte entry holding up to 16 iovecs (64 KiB of 4 KiB
/// data blocks, the kernel's default `hw_max_sectors=128`) plus a 32-byte CDB is 400 bytes;
/// rounded up to 512. The device sets the real value with
/// [`DeviceMetrics::set_max_cmd_entry`].
pub const DEFAULT_MAX_CMD_ENTRY_BYTES: u64 = 512;

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v),+ }
        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The label value.
            #[must_use]
            pub const fn label(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
            #[allow(dead_code)]
            const fn index(self) -> usize { self as usize }
        }
    };
}

label_enum! {
    /// Operation class of a command: label `op`.
    OpClass {
        /// READ(6/10/12/16).
        Read => "read",
        /// WRITE(6/10/12/16), WRITE AND VERIFY.
        Write => "write",
        /// SYNCHRONIZE CACHE.
        Flush => "flush",
        /// UNMAP.
        Unmap => "unmap",
        /// WRITE SAME.
        WriteSame => "write_same",
        /// COMPARE AND WRITE.
        CompareAndWrite => "compare_and_write",
        /// VERIFY.
        Verify => "verify",
        /// Answered by the handler without the backend (INQUIRY, MODE SENSE, ...).
        Emulated => "emulated",
        /// Anything else (including commands refused before decoding).
        Other => "other",
    }
}

label_enum! {
    /// How a command ended: label `outcome`.
    OutcomeClass {
        /// GOOD status.
        Good => "good",
        /// CHECK CONDITION (with sense).
        CheckCondition => "check_condition",
        /// BUSY or TASK SET FULL: the initiator retries.
        Busy => "busy",
        /// Any other status.
        Other => "other",
    }
}

label_enum! {
    /// A stage of a command's life: label `stage`.
    Stage {
        /// From reading the ring to submitting to the backend, less the two waits below.
        Handler => "handler",
        /// Parked behind another command's LBA range (a COMPARE AND WRITE, or a write fenced
        /// after its deadline) until that range was free, or until it was completed.
        Parked => "parked",
        /// Queued for a worker until the worker started it.
        Queued => "queued",
        /// From backend submit to backend completion.
        Backend => "backend",
        /// From backend completion to the ring tail published to the kernel.
        Publish => "publish",
    }
}

label_enum! {
    /// Health of a device's backend: label `state` of `tcmu_warden_backend_state`.
    BackendState {
        /// Pings and I/O answer within the backend tier's timeout.
        Healthy => "healthy",
        /// A deadline expired or a ping was slow: still serving.
        Degraded => "degraded",
        /// The backend does not answer: new commands fail fast with a retryable status.
        Lost => "lost",
        /// Reopening the backend.
        Recovering => "recovering",
    }
}

/// Tiers pre-resolved for `tcmu_warden_deadline_expired_total` (others work, but resolve
/// their child on first use, which allocates once).
pub const KNOWN_TIERS: &[&str] = &["handler", "backend", "kernel", "watchdog"];

/// TMR types pre-resolved for `tcmu_warden_tmrs_total` (the `tcmu_tmr_type` values of the
/// kernel's `target_core_user.h`).
pub const KNOWN_TMRS: &[&str] = &[
    "abort_task",
    "abort_task_set",
    "clear_aca",
    "clear_task_set",
    "lun_reset",
    "target_warm_reset",
    "target_cold_reset",
    "lun_reset_pro",
    "unknown",
];

const N_OPS: usize = OpClass::ALL.len();
const N_OUTCOMES: usize = OutcomeClass::ALL.len();
/// How many stages [`DeviceMetrics::command_done`] takes.
pub const N_STAGES: usize = Stage::ALL.len();
const N_STATES: usize = BackendState::ALL.len();

/// Names of the two areas of the mapping: label `area`.
const AREAS: [&str; 2] = ["cmd_ring", "data_area"];

/// Devices with series: (`device`, `subtype`) to their series.
type Live = Arc<Mutex<BTreeMap<(String, String), Arc<Series>>>>;

/// The process's metrics registry.
pub struct Metrics {
    registry: Registry,
    live: Live,
    devices: IntGauge,
    log_dropped: IntCounter,
}

fn name(n: &str) -> String {
    format!("{PREFIX}_{n}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// A registry with every series defined (and the process-level ones set).
    ///
    /// # Panics
    /// Never in practice: the definitions are static and valid.
    #[must_use]
    pub fn new() -> Arc<Metrics> {
        let devices = IntGauge::with_opts(Opts::new(
            name("devices"),
            "Devices this handler serves (with series in this exposition).",
        ))
        .expect("valid metric definition");
        let log_dropped = IntCounter::with_opts(Opts::new(
            name("log_lines_dropped_total"),
            "Log lines dropped because the log output (stderr/journal, log file) did not keep up.",
        ))
        .expect("valid metric definition");
        let build = IntGaugeVec::new(
            Opts::new(
                name("build_info"),
                "Build of this tcmu-warden; the value is always 1.",
            ),
            &["version", "rustc_min"],
        )
        .expect("valid metric definition");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_RUST_VERSION")])
            .set(1);
        let live = Live::default();
        let registry = Registry::new();
        let collectors: [Box<dyn prometheus::core::Collector>; 4] = [
            Box::new(build),
            Box::new(devices.clone()),
            Box::new(log_dropped.clone()),
            Box::new(DeviceFamilies::new(Arc::clone(&live))),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            live,
            devices,
            log_dropped,
        })
    }

    /// Bring `tcmu_warden_log_lines_dropped_total` up to `total` (the logger's own count;
    /// never goes down).
    pub fn log_lines_dropped(&self, total: u64) {
        let now = self.log_dropped.get();
        if total > now {
            self.log_dropped.inc_by(total - now);
        }
    }

    /// The registry, to add process-wide collectors.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The series of one device, exported from now on: counters at 0, backend state
    /// healthy. Call it once per device and clone the handle; a second call for a device
    /// that still has series returns a handle to the same series.
    #[must_use]
    pub fn device(&self, device: &str, subtype: &str) -> DeviceMetrics {
        let key = (device.to_owned(), subtype.to_owned());
        let mut live = lock(&self.live);
        let inner = match live.get(&key) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(Series::new(device, subtype));
                live.insert(key, Arc::clone(&s));
                s
            }
        };
        self.devices
            .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
        DeviceMetrics { inner }
    }

    /// Drop every series of this device (the device was removed). Handles still held keep
    /// working but their updates are no longer exported.
    pub fn remove_device(&self, device: &str, subtype: &str) {
        let mut live = lock(&self.live);
        live.remove(&(device.to_owned(), subtype.to_owned()));
        self.devices
            .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
    }

    /// The text exposition format (version 0.0.4), as served on `/metrics`.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec fails only on invalid metric families, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One device's series. Cheap to clone (one `Arc`); share it between the device thread, the
/// workers and the supervisor.
#[derive(Clone)]
pub struct DeviceMetrics {
    inner: Arc<Series>,
}

impl std::fmt::Debug for DeviceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceMetrics")
            .field("device", &self.inner.device)
            .field("subtype", &self.inner.subtype)
            .finish_non_exhaustive()
    }
}

/// Saturating u64 → i64 for gauges.
fn g(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[allow(clippy::cast_precision_loss)] // nanoseconds to f64 seconds: 2^53 ns is 104 days
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl DeviceMetrics {
    /// One device's series that no registry holds, for a device run without a metrics
    /// endpoint: its counters are still kept (once, here) for `tcmu-warden status`.
    #[must_use]
    pub fn detached(device: &str, subtype: &str) -> DeviceMetrics {
        DeviceMetrics {
            inner: Arc::new(Series::new(device, subtype)),
        }
    }

    /// `in_flight_commands`: commands read from the ring and not yet completed.
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.inner.in_flight.load(Relaxed)).unwrap_or(0)
    }

    /// `ring_capacity_bytes` of the command ring and of the data area.
    #[must_use]
    pub fn capacity(&self) -> (u64, u64) {
        let c = &self.inner.capacity_raw;
        (c[0].load(Relaxed), c[1].load(Relaxed))
    }

    /// `ring_used_bytes` of the command ring and of the data area, last observed.
    #[must_use]
    pub fn used(&self) -> (u64, u64) {
        let u = &self.inner.used;
        let v = |g: &std::sync::atomic::AtomicI64| u64::try_from(g.load(Relaxed)).unwrap_or(0);
        (v(&u[0]), v(&u[1]))
    }

    /// `deadline_expired_total` of one tier.
    #[must_use]
    pub fn deadlines_expired(&self, tier: &str) -> u64 {
        let d = &*self.inner;
        Series::counted(KNOWN_TIERS, &d.deadline, &d.extra_tiers, tier)
    }

    /// `tmrs_total`, all types together.
    #[must_use]
    pub fn tmrs(&self) -> u64 {
        let d = &*self.inner;
        let extra: u64 = lock(&d.extra_tmrs).iter().map(|(_, n)| n).sum();
        d.tmrs.iter().map(|c| c.load(Relaxed)).sum::<u64>() + extra
    }

    /// `outliers_total`.
    #[must_use]
    pub fn outliers(&self) -> u64 {
        self.inner.outliers.load(Relaxed)
    }

    /// `stuck_commands_total`.
    #[must_use]
    pub fn stuck_commands(&self) -> u64 {
        self.inner.stuck.load(Relaxed)
    }

    /// One command finished (its completion published to the kernel).
    ///
    /// Counts it in `commands_total{op,outcome}`, adds its bytes, and observes its latency:
    /// `command_duration_seconds{op}` gets the sum of the stages, and
    /// `command_stage_duration_seconds{stage}` each stage whose time is not 0 (0 = stage not
    /// used, e.g. `backend` for an emulated command). `stages` are in nanoseconds, in the
    /// order of [`Stage::ALL`]. Never allocates, never locks.
    pub fn command_done(
        &self,
        op: OpClass,
        outcome: OutcomeClass,
        bytes_read: u64,
        bytes_written: u64,
        stages: [u64; N_STAGES],
    ) {
        let d = &*self.inner;
        d.commands[op.index()][outcome.index()].fetch_add(1, Relaxed);
        if bytes_read != 0 {
            d.read_bytes.fetch_add(bytes_read, Relaxed);
        }
        if bytes_written != 0 {
            d.written_bytes.fetch_add(bytes_written, Relaxed);
        }
        for (h, ns) in d.stage_duration.iter().zip(stages) {
            if ns != 0 {
                h.observe(secs(ns));
            }
        }
        let total = stages.iter().fold(0u64, |a, &n| a.saturating_add(n));
        d.op_duration[op.index()].observe(secs(total));
    }

    /// Commands read from the ring and not yet completed.
    pub fn set_in_flight(&self, n: u64) {
        self.inner.in_flight.store(g(n), Relaxed);
    }

    /// Ring geometry, when the device opens (and after a reconfiguration): sizes in bytes of
    /// the command ring (`cmdr_size`) and of the data area.
    pub fn set_capacity(&self, cmd_ring_bytes: u64, data_area_bytes: u64) {
        let d = &*self.inner;
        for (i, v) in [cmd_ring_bytes, data_area_bytes].into_iter().enumerate() {
            d.capacity_raw[i].store(v, Relaxed);
            d.capacity[i].store(g(v), Relaxed);
        }
    }

    /// Size in bytes of the largest command-ring entry this device can receive (header,
    /// iovecs for its largest command, CDB, rounded to 8); default
    /// [`DEFAULT_MAX_CMD_ENTRY_BYTES`]. Used by the ring-full rule of [`Self::observe_use`].
    pub fn set_max_cmd_entry(&self, bytes: u64) {
        self.inner.max_entry.store(bytes, Relaxed);
    }

    /// Current use, in bytes, of the command ring (entries between tail and head, padding
    /// included) and of the data area (blocks held by commands in flight × block size).
    ///
    /// Updates `ring_used_bytes` and the high-water marks `ring_used_max_bytes`, and counts
    /// a ring-full *event* in `ring_full_total{area}` each time an area goes from not full
    /// to full, where full is:
    /// - `cmd_ring`: `cmd_ring_used + max_cmd_entry > cmd_ring_size` (the kernel could not
    ///   queue one more command of the largest size: it would wait, and after
    ///   `qfull_time_out` fail it);
    /// - `data_area`: `data_area_used >= data_area_size`.
    ///
    /// An area of capacity 0 (not yet set) is never full. Never allocates, never locks.
    pub fn observe_use(&self, cmd_ring_used: u64, data_area_used: u64) {
        let d = &*self.inner;
        let max_entry = d.max_entry.load(Relaxed);
        for (i, used) in [cmd_ring_used, data_area_used].into_iter().enumerate() {
            d.used[i].store(g(used), Relaxed);
            let prev = d.max_raw[i].fetch_max(used, Relaxed);
            if used > prev {
                d.used_max[i].store(g(used), Relaxed);
            }
            let cap = d.capacity_raw[i].load(Relaxed);
            let full = cap != 0
                && if i == 0 {
                    used.saturating_add(max_entry) > cap
                } else {
                    used >= cap
                };
            if d.is_full[i].swap(full, Relaxed) != full && full {
                d.full[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// A command's deadline expired in `tier` (`handler`, `backend`, `kernel`, `watchdog`:
    /// pre-resolved; another name gets its series on first use, which allocates once).
    pub fn deadline_expired(&self, tier: &'static str) {
        let d = &*self.inner;
        Series::count(KNOWN_TIERS, &d.deadline, &d.extra_tiers, tier);
    }

    /// A task management request of `kind` (one of [`KNOWN_TMRS`], pre-resolved).
    pub fn tmr(&self, kind: &'static str) {
        let d = &*self.inner;
        Series::count(KNOWN_TMRS, &d.tmrs, &d.extra_tmrs, kind);
    }

    /// The backend's health state: its gauge 1, the others 0.
    pub fn set_backend_state(&self, state: BackendState) {
        for (i, gauge) in self.inner.backend_state.iter().enumerate() {
            gauge.store(i64::from(i == state.index()), Relaxed);
        }
    }

    /// A backend reopen attempt.
    pub fn reopen(&self) {
        self.inner.reopens.fetch_add(1, Relaxed);
    }

    /// One health ping took `seconds`.
    pub fn ping_latency(&self, seconds: f64) {
        self.inner.ping.observe(seconds);
    }

    /// A command went to the outlier log.
    pub fn outlier(&self) {
        self.inner.outliers.fetch_add(1, Relaxed);
    }

    /// The watchdog found a command older than its deadline plus the grace.
    pub fn stuck_command(&self) {
        self.inner.stuck.fetch_add(1, Relaxed);
    }
}
