//! The counters of one device that `tcmu-warden status` and `diagnose` read.
//!
//! Each counter is kept once. Those the Prometheus endpoint also exports (commands in flight,
//! ring use, deadlines expired, TMRs, outliers, stuck commands) live in the device's
//! [`DeviceMetrics`] series and are read back through the methods below; the others, which
//! only `status` shows, are the atomics here. All are bumped by the device thread, through
//! [`super::accounting::Accounting`] for the shared ones.

use super::outliers::Outliers;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use tcmu_warden_supervisor::metrics::DeviceMetrics;

/// Counters of one device, bumped only by its device thread.
#[derive(Debug)]
pub struct DeviceStats {
    /// Commands read from the ring.
    pub commands: AtomicU64,
    /// Commands answered without the backend.
    pub emulated: AtomicU64,
    /// Commands completed with a status other than GOOD.
    pub errors: AtomicU64,
    /// CMD entries whose CDB offset or iovecs were invalid.
    pub bad_entries: AtomicU64,
    /// Times every context was busy and reading the ring paused.
    pub pool_exhausted: AtomicU64,
    /// Notifications written to the kernel.
    pub kicks: AtomicU64,
    /// Completions published (ring entries handed back).
    pub completed: AtomicU64,
    /// Commands the device thread submitted to its io_uring (see `super::uring`).
    pub uring_submitted: AtomicU64,
    /// The ring was found corrupt; the device stopped reading it.
    pub broken: AtomicBool,
    /// Age in ms of the oldest command away in a worker or the backend (0: none).
    pub oldest_ms: AtomicU64,
    /// Opcode of that oldest command.
    pub oldest_opcode: AtomicU8,
    /// LBA of that oldest command.
    pub oldest_lba: AtomicU64,
    /// The handler's per-command deadline in ms (0: none).
    pub deadline_ms: AtomicU64,
    /// The most recent outliers.
    pub recent_outliers: Outliers,
    /// The counters shared with the Prometheus endpoint.
    metrics: DeviceMetrics,
}

impl DeviceStats {
    /// Counters at zero, the shared ones in `metrics` (the device's registered series, or
    /// [`DeviceMetrics::detached`] ones).
    #[must_use]
    pub fn new(metrics: DeviceMetrics) -> DeviceStats {
        DeviceStats {
            commands: AtomicU64::new(0),
            emulated: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bad_entries: AtomicU64::new(0),
            pool_exhausted: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            uring_submitted: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            oldest_ms: AtomicU64::new(0),
            oldest_opcode: AtomicU8::new(0),
            oldest_lba: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(0),
            recent_outliers: Outliers::default(),
            metrics,
        }
    }

    /// The series the shared counters live in.
    #[must_use]
    pub fn metrics(&self) -> &DeviceMetrics {
        &self.metrics
    }

    /// TMR entries seen.
    #[must_use]
    pub fn tmrs(&self) -> u64 {
        self.metrics.tmrs()
    }

    /// Commands completed by the handler at their deadline (retryable status).
    #[must_use]
    pub fn deadline_expired(&self) -> u64 {
        self.metrics.deadlines_expired("handler")
    }

    /// Commands still in the backend a whole deadline after they were completed.
    #[must_use]
    pub fn stuck(&self) -> u64 {
        self.metrics.stuck_commands()
    }

    /// Commands slower than the outlier threshold.
    #[must_use]
    pub fn outliers(&self) -> u64 {
        self.metrics.outliers()
    }

    /// Commands read and not yet completed (updated every pass of the device thread).
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.metrics.in_flight()
    }

    /// Command-ring bytes in use.
    #[must_use]
    pub fn ring_used(&self) -> u64 {
        self.metrics.used().0
    }

    /// Command-ring size in bytes.
    #[must_use]
    pub fn ring_size(&self) -> u64 {
        self.metrics.capacity().0
    }

    /// Data-area bytes in use by commands in flight.
    #[must_use]
    pub fn data_used(&self) -> u64 {
        self.metrics.used().1
    }

    /// Data-area size in bytes.
    #[must_use]
    pub fn data_size(&self) -> u64 {
        self.metrics.capacity().1
    }
}
