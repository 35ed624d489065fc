//! Prometheus metrics of tcmu-warden: one [`Metrics`] registry per process, one
//! [`DeviceMetrics`] per device.
//!
//! Every per-device series carries the labels `device` and `subtype`. [`Metrics::device`]
//! resolves every label child of a device once, so the updates the device thread makes for
//! each command ([`DeviceMetrics::command_done`], [`DeviceMetrics::observe_use`], ...) are
//! atomic operations on cached children: no hashing, no locking, no allocation
//! (`supervisor/tests/metrics_no_alloc.rs` checks it with a counting allocator).
//!
//! The per-device counters that `tcmu-warden status` also shows (commands in flight, ring
//! use, deadlines expired, TMRs, outliers, stuck commands) are kept only here: the device
//! bumps these series, and status reads them back through the getters
//! ([`DeviceMetrics::in_flight`], ...); a device served without an endpoint keeps them in a
//! [`DeviceMetrics::detached`] registry.
//!
//! Every series is documented in `docs/metrics.md`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The vectors, shared by [`Metrics`] and every [`DeviceMetrics`].
struct Vecs {
    commands: IntCounterVec,
    read_bytes: IntCounterVec,
    written_bytes: IntCounterVec,
    command_duration: HistogramVec,
    stage_duration: HistogramVec,
    in_flight: IntGaugeVec,
    capacity: IntGaugeVec,
    used: IntGaugeVec,
    used_max: IntGaugeVec,
    full: IntCounterVec,
    deadline: IntCounterVec,
    tmrs: IntCounterVec,
    backend_state: IntGaugeVec,
    reopens: IntCounterVec,
    ping: HistogramVec,
    outliers: IntCounterVec,
    stuck: IntCounterVec,
    devices: IntGauge,
    log_dropped: IntCounter,
    /// Label values of `tier`/`type` used beyond the known ones (so removal finds them).
    extra_tiers: Mutex<Vec<&'static str>>,
    extra_tmrs: Mutex<Vec<&'static str>>,
    /// Devices with series, for `tcmu_warden_devices`.
    live: Mutex<BTreeSet<(String, String)>>,
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Registry,
    vecs: Arc<Vecs>,
}

fn name(n: &str) -> String {
    format!("{PREFIX}_{n}")
}

fn counter(n: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name(n), help), labels).expect("valid metric definition")
}

fn gauge(n: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name(n), help), labels).expect("valid metric definition")
}

fn histogram(n: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name(n), help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric definition")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const DEV: &[&str] = &["device", "subtype"];

impl Metrics {
    /// A registry with every series defined (and the process-level ones set).
    ///
    /// # Panics
    /// Never in practice: the definitions are static and valid.
    #[must_use]
    pub fn new() -> Arc<Metrics> {
        let d = |extra: &'static str| -> Vec<&'static str> { vec!["device", "subtype", extra] };
        let vecs = Vecs {
            commands: counter(
                "commands_total",
                "Commands completed to the kernel, by operation class and outcome.",
                &["device", "subtype", "op", "outcome"],
            ),
            read_bytes: counter(
                "read_bytes_total",
                "Bytes read (Data-In) by completed commands.",
                DEV,
            ),
            written_bytes: counter(
                "written_bytes_total",
                "Bytes written (Data-Out) by completed commands.",
                DEV,
            ),
            command_duration: histogram(
                "command_duration_seconds",
                "Time from reading a command off the ring to publishing its completion.",
                &d("op"),
            ),
            stage_duration: histogram(
                "command_stage_duration_seconds",
                "Time a command spent in one stage: handler (ring to backend submit), backend \
                 (submit to completion), publish (completion to tail published).",
                &d("stage"),
            ),
            in_flight: gauge(
                "in_flight_commands",
                "Commands read from the ring and not yet completed.",
                DEV,
            ),
            capacity: gauge(
                "ring_capacity_bytes",
                "Size of the command ring (area=cmd_ring) and of the data area (area=data_area).",
                &d("area"),
            ),
            used: gauge(
                "ring_used_bytes",
                "Bytes in use in the command ring or the data area, last observed.",
                &d("area"),
            ),
            used_max: gauge(
                "ring_used_max_bytes",
                "High-water mark of ring_used_bytes since the device was added.",
                &d("area"),
            ),
            full: counter(
                "ring_full_total",
                "Times the command ring or the data area went from not full to full.",
                &d("area"),
            ),
            deadline: counter(
                "deadline_expired_total",
                "Commands whose deadline expired, by timeout tier.",
                &d("tier"),
            ),
            tmrs: counter(
                "tmrs_total",
                "Task management requests received, by type.",
                &d("type"),
            ),
            backend_state: gauge(
                "backend_state",
                "Backend health: 1 for the current state, 0 for the others.",
                &d("state"),
            ),
            reopens: counter("backend_reopens_total", "Backend reopen attempts.", DEV),
            ping: histogram(
                "backend_ping_duration_seconds",
                "Latency of the backend health ping.",
                DEV,
            ),
            outliers: counter(
                "outliers_total",
                "Commands slower than the outlier threshold (each is in the outlier log).",
                DEV,
            ),
            stuck: counter(
                "stuck_commands_total",
                "Commands the watchdog found older than their deadline plus the grace.",
                DEV,
            ),
            devices: IntGauge::with_opts(Opts::new(
                name("devices"),
                "Devices this handler serves (with series in this exposition).",
            ))
            .expect("valid metric definition"),
            log_dropped: IntCounter::with_opts(Opts::new(
                name("log_lines_dropped_total"),
                "Log lines dropped because the log output (stderr/journal, log file) did not keep up.",
            ))
            .expect("valid metric definition"),
            extra_tiers: Mutex::new(Vec::new()),
            extra_tmrs: Mutex::new(Vec::new()),
            live: Mutex::new(BTreeSet::new()),
        };
        let registry = Registry::new();
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
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(build),
            Box::new(vecs.devices.clone()),
            Box::new(vecs.log_dropped.clone()),
            Box::new(vecs.commands.clone()),
            Box::new(vecs.read_bytes.clone()),
            Box::new(vecs.written_bytes.clone()),
            Box::new(vecs.command_duration.clone()),
            Box::new(vecs.stage_duration.clone()),
            Box::new(vecs.in_flight.clone()),
            Box::new(vecs.capacity.clone()),
            Box::new(vecs.used.clone()),
            Box::new(vecs.used_max.clone()),
            Box::new(vecs.full.clone()),
            Box::new(vecs.deadline.clone()),
            Box::new(vecs.tmrs.clone()),
            Box::new(vecs.backend_state.clone()),
            Box::new(vecs.reopens.clone()),
            Box::new(vecs.ping.clone()),
            Box::new(vecs.outliers.clone()),
            Box::new(vecs.stuck.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Arc::new(Metrics {
            registry,
            vecs: Arc::new(vecs),
        })
    }

    /// Bring `tcmu_warden_log_lines_dropped_total` up to `total` (the logger's own count;
    /// never goes down).
    pub fn log_lines_dropped(&self, total: u64) {
        let now = self.vecs.log_dropped.get();
        if total > now {
            self.vecs.log_dropped.inc_by(total - now);
        }
    }

    /// The registry, to add process-wide collectors.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolve every label child of one device, so updates never hash or allocate.
    /// Its series appear at once (counters at 0, backend state healthy). Call it once per
    /// device and clone the handle: clones share the high-water and ring-full state, a second
    /// `device()` for the same name would start those afresh.
    #[must_use]
    pub fn device(&self, device: &str, subtype: &str) -> DeviceMetrics {
        let v = &self.vecs;
        let l = [device, subtype];
        let with = |x: &'static str| [device, subtype, x];
        let commands = std::array::from_fn(|o| {
            std::array::from_fn(|c| {
                let (op, oc) = (OpClass::ALL[o], OutcomeClass::ALL[c]);
                v.commands
                    .with_label_values(&[device, subtype, op.label(), oc.label()])
            })
        });
        let inner = DeviceInner {
            commands,
            read_bytes: v.read_bytes.with_label_values(&l),
            written_bytes: v.written_bytes.with_label_values(&l),
            op_duration: std::array::from_fn(|o| {
                v.command_duration
                    .with_label_values(&with(OpClass::ALL[o].label()))
            }),
            stage_duration: std::array::from_fn(|s| {
                v.stage_duration
                    .with_label_values(&with(Stage::ALL[s].label()))
            }),
            in_flight: v.in_flight.with_label_values(&l),
            capacity: AREAS.map(|a| v.capacity.with_label_values(&with(a))),
            used: AREAS.map(|a| v.used.with_label_values(&with(a))),
            used_max: AREAS.map(|a| v.used_max.with_label_values(&with(a))),
            full: AREAS.map(|a| v.full.with_label_values(&with(a))),
            capacity_raw: [AtomicU64::new(0), AtomicU64::new(0)],
            max_raw: [AtomicU64::new(0), AtomicU64::new(0)],
            is_full: [AtomicBool::new(false), AtomicBool::new(false)],
            max_entry: AtomicU64::new(DEFAULT_MAX_CMD_ENTRY_BYTES),
            deadline: KNOWN_TIERS
                .iter()
                .map(|t| (*t, v.deadline.with_label_values(&with(t))))
                .collect(),
            tmrs: KNOWN_TMRS
                .iter()
                .map(|t| (*t, v.tmrs.with_label_values(&with(t))))
                .collect(),
            backend_state: std::array::from_fn(|s| {
                v.backend_state
                    .with_label_values(&with(BackendState::ALL[s].label()))
            }),
            reopens: v.reopens.with_label_values(&l),
            ping: v.ping.with_label_values(&l),
            outliers: v.outliers.with_label_values(&l),
            stuck: v.stuck.with_label_values(&l),
            device: device.to_owned(),
            subtype: subtype.to_owned(),
            vecs: Arc::clone(v),
        };
        // A fresh device is healthy unless told otherwise; a repeated call keeps the state.
        if inner.backend_state.iter().all(|g| g.get() == 0) {
            inner.backend_state[BackendState::Healthy.index()].set(1);
        }
        let mut live = lock(&v.live);
        live.insert((device.to_owned(), subtype.to_owned()));
        v.devices.set(i64::try_from(live.len()).unwrap_or(i64::MAX));
        drop(live);
        DeviceMetrics {
            inner: Arc::new(inner),
        }
    }

    /// Drop every series of this device (the device was removed). Handles still held keep
    /// working but their updates are no longer exported.
    pub fn remove_device(&self, device: &str, subtype: &str) {
        let v = &self.vecs;
        let l = [device, subtype];
        let with = |x: &'static str| [device, subtype, x];
        // Errors mean "no such series": nothing to remove.
        for op in OpClass::ALL {
            for oc in OutcomeClass::ALL {
                let _ = v
                    .commands
                    .remove_label_values(&[device, subtype, op.label(), oc.label()]);
            }
            let _ = v.command_duration.remove_label_values(&with(op.label()));
        }
        for s in Stage::ALL {
            let _ = v.stage_duration.remove_label_values(&with(s.label()));
        }
        for a in AREAS {
            let _ = v.capacity.remove_label_values(&with(a));
            let _ = v.used.remove_label_values(&with(a));
            let _ = v.used_max.remove_label_values(&with(a));
            let _ = v.full.remove_label_values(&with(a));
        }
        let extra_tiers = lock(&v.extra_tiers).clone();
        for t in KNOWN_TIERS.iter().chain(extra_tiers.iter()) {
            let _ = v.deadline.remove_label_values(&with(t));
        }
        let extra_tmrs = lock(&v.extra_tmrs).clone();
        for t in KNOWN_TMRS.iter().chain(extra_tmrs.iter()) {
            let _ = v.tmrs.remove_label_values(&with(t));
        }
        for s in BackendState::ALL {
            let _ = v.backend_state.remove_label_values(&with(s.label()));
        }
        for vec in [
            &v.read_bytes,
            &v.written_bytes,
            &v.reopens,
            &v.outliers,
            &v.stuck,
        ] {
            let _ = vec.remove_label_values(&l);
        }
        let _ = v.in_flight.remove_label_values(&l);
        let _ = v.ping.remove_label_values(&l);
        let mut live = lock(&v.live);
        live.remove(&(device.to_owned(), subtype.to_owned()));
        v.devices.set(i64::try_from(live.len()).unwrap_or(i64::MAX));
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

struct DeviceInner {
    commands: [[IntCounter; N_OUTCOMES]; N_OPS],
    read_bytes: IntCounter,
    written_bytes: IntCounter,
    op_duration: [Histogram; N_OPS],
    stage_duration: [Histogram; N_STAGES],
    in_flight: IntGauge,
    capacity: [IntGauge; 2],
    used: [IntGauge; 2],
    used_max: [IntGauge; 2],
    full: [IntCounter; 2],
    capacity_raw: [AtomicU64; 2],
    max_raw: [AtomicU64; 2],
    is_full: [AtomicBool; 2],
    max_entry: AtomicU64,
    deadline: Vec<(&'static str, IntCounter)>,
    tmrs: Vec<(&'static str, IntCounter)>,
    backend_state: [IntGauge; N_STATES],
    reopens: IntCounter,
    ping: Histogram,
    outliers: IntCounter,
    stuck: IntCounter,
    device: String,
    subtype: String,
    vecs: Arc<Vecs>,
}

/// One device's series, every label child resolved. Cheap to clone (one `Arc`); share it
/// between the device thread, the workers and the supervisor.
#[derive(Clone)]
pub struct DeviceMetrics {
    inner: Arc<DeviceInner>,
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
    /// One device's series in a registry of their own that no endpoint serves, for a device
    /// run without a metrics endpoint: its counters are still kept (once, here) for
    /// `tcmu-warden status`.
    #[must_use]
    pub fn detached(device: &str, subtype: &str) -> DeviceMetrics {
        Metrics::new().device(device, subtype)
    }

    /// `in_flight_commands`: commands read from the ring and not yet completed.
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.inner.in_flight.get()).unwrap_or(0)
    }

    /// `ring_capacity_bytes` of the command ring and of the data area.
    #[must_use]
    pub fn capacity(&self) -> (u64, u64) {
        let c = &self.inner.capacity_raw;
        (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed))
    }

    /// `ring_used_bytes` of the command ring and of the data area, last observed.
    #[must_use]
    pub fn used(&self) -> (u64, u64) {
        let u = &self.inner.used;
        let v = |g: &IntGauge| u64::try_from(g.get()).unwrap_or(0);
        (v(&u[0]), v(&u[1]))
    }

    /// `deadline_expired_total` of one tier.
    #[must_use]
    pub fn deadlines_expired(&self, tier: &str) -> u64 {
        let d = &*self.inner;
        match d.deadline.iter().find(|(t, _)| *t == tier) {
            Some((_, c)) => c.get(),
            // Only a tier already counted has a series; asking must not create one.
            None if lock(&d.vecs.extra_tiers).contains(&tier) => d
                .vecs
                .deadline
                .get_metric_with_label_values(&[&d.device, &d.subtype, tier])
                .map_or(0, |c| c.get()),
            None => 0,
        }
    }

    /// `tmrs_total`, all types together.
    #[must_use]
    pub fn tmrs(&self) -> u64 {
        let d = &*self.inner;
        let extra: u64 = lock(&d.vecs.extra_tmrs)
            .iter()
            .filter_map(|t| {
                d.vecs
                    .tmrs
                    .get_metric_with_label_values(&[&d.device, &d.subtype, t])
                    .ok()
            })
            .map(|c| c.get())
            .sum();
        d.tmrs.iter().map(|(_, c)| c.get()).sum::<u64>() + extra
    }

    /// `outliers_total`.
    #[must_use]
    pub fn outliers(&self) -> u64 {
        self.inner.outliers.get()
    }

    /// `stuck_commands_total`.
    #[must_use]
    pub fn stuck_commands(&self) -> u64 {
        self.inner.stuck.get()
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
        d.commands[op.index()][outcome.index()].inc();
        if bytes_read != 0 {
            d.read_bytes.inc_by(bytes_read);
        }
        if bytes_written != 0 {
            d.written_bytes.inc_by(bytes_written);
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
        self.inner.in_flight.set(g(n));
    }

    /// Ring geometry, when the device opens (and after a reconfiguration): sizes in bytes of
    /// the command ring (`cmdr_size`) and of the data area.
    pub fn set_capacity(&self, cmd_ring_bytes: u64, data_area_bytes: u64) {
        let d = &*self.inner;
        for (i, v) in [cmd_ring_bytes, data_area_bytes].into_iter().enumerate() {
            d.capacity_raw[i].store(v, Ordering::Relaxed);
            d.capacity[i].set(g(v));
        }
    }

    /// Size in bytes of the largest command-ring entry this device can receive (header,
    /// iovecs for its largest command, CDB, rounded to 8); default
    /// [`DEFAULT_MAX_CMD_ENTRY_BYTES`]. Used by the ring-full rule of [`Self::observe_use`].
    pub fn set_max_cmd_entry(&self, bytes: u64) {
        self.inner.max_entry.store(bytes, Ordering::Relaxed);
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
        let max_entry = d.max_entry.load(Ordering::Relaxed);
        for (i, used) in [cmd_ring_used, data_area_used].into_iter().enumerate() {
            d.used[i].set(g(used));
            let prev = d.max_raw[i].fetch_max(used, Ordering::Relaxed);
            if used > prev {
                d.used_max[i].set(g(used));
            }
            let cap = d.capacity_raw[i].load(Ordering::Relaxed);
            let full = cap != 0
                && if i == 0 {
                    used.saturating_add(max_entry) > cap
                } else {
                    used >= cap
                };
            if d.is_full[i].swap(full, Ordering::Relaxed) != full && full {
                d.full[i].inc();
            }
        }
    }

    /// A command's deadline expired in `tier` (`handler`, `backend`, `kernel`, `watchdog`:
    /// pre-resolved; another name resolves its series on first use).
    pub fn deadline_expired(&self, tier: &'static str) {
        let d = &*self.inner;
        match d.deadline.iter().find(|(t, _)| *t == tier) {
            Some((_, c)) => c.inc(),
            None => {
                remember(&d.vecs.extra_tiers, tier);
                d.vecs
                    .deadline
                    .with_label_values(&[&d.device, &d.subtype, tier])
                    .inc();
            }
        }
    }

    /// A task management request of `kind` (one of [`KNOWN_TMRS`], pre-resolved).
    pub fn tmr(&self, kind: &'static str) {
        let d = &*self.inner;
        match d.tmrs.iter().find(|(t, _)| *t == kind) {
            Some((_, c)) => c.inc(),
            None => {
                remember(&d.vecs.extra_tmrs, kind);
                d.vecs
                    .tmrs
                    .with_label_values(&[&d.device, &d.subtype, kind])
                    .inc();
            }
        }
    }

    /// The backend's health state: its gauge 1, the others 0.
    pub fn set_backend_state(&self, state: BackendState) {
        for (i, gauge) in self.inner.backend_state.iter().enumerate() {
            gauge.set(i64::from(i == state.index()));
        }
    }

    /// A backend reopen attempt.
    pub fn reopen(&self) {
        self.inner.reopens.inc();
    }

    /// One health ping took `seconds`.
    pub fn ping_latency(&self, seconds: f64) {
        self.inner.ping.observe(seconds);
    }

    /// A command went to the outlier log.
    pub fn outlier(&self) {
        self.inner.outliers.inc();
    }

    /// The watchdog found a command older than its deadline plus the grace.
    pub fn stuck_command(&self) {
        self.inner.stuck.inc();
    }
}

fn remember(list: &Mutex<Vec<&'static str>>, v: &'static str) {
    let mut l = lock(list);
    if !l.contains(&v) {
        l.push(v);
    }
}
