//! The counters of one device that `tcmu-warden status` and `diagnose` read.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// Counters of one device, bumped only by its device thread.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Commands read from the ring.
    pub commands: AtomicU64,
    /// Commands answered without the backend.
    pub emulated: AtomicU64,
    /// Commands completed with a status other than GOOD.
    pub errors: AtomicU64,
    /// CMD entries whose CDB offset or iovecs were invalid.
    pub bad_entries: AtomicU64,
    /// TMR entries seen.
    pub tmrs: AtomicU64,
    /// Times every context was busy and reading the ring paused.
    pub pool_exhausted: AtomicU64,
    /// Notifications written to the kernel.
    pub kicks: AtomicU64,
    /// Completions published (ring entries handed back).
    pub completed: AtomicU64,
    /// The ring was found corrupt; the device stopped reading it.
    pub broken: AtomicBool,
    /// Commands completed by the handler at their deadline (retryable status).
    pub deadline_expired: AtomicU64,
    /// Commands still in the backend a whole deadline after they were completed.
    pub stuck: AtomicU64,
    /// Commands slower than the outlier threshold.
    pub outliers: AtomicU64,
    /// Commands read and not yet completed (updated every pass of the device thread).
    pub in_flight: AtomicU64,
    /// Age in ms of the oldest command away in a worker or the backend (0: none).
    pub oldest_ms: AtomicU64,
    /// Opcode and LBA of that oldest command.
    pub oldest_opcode: std::sync::atomic::AtomicU8,
    /// LBA of that oldest command.
    pub oldest_lba: AtomicU64,
    /// Command-ring bytes in use, and its size.
    pub ring_used: AtomicU64,
    /// Command-ring size in bytes.
    pub ring_size: AtomicU64,
    /// Data-area bytes in use by commands in flight.
    pub data_used: AtomicU64,
    /// Data-area size in bytes.
    pub data_size: AtomicU64,
    /// The handler's per-command deadline in ms (0: none).
    pub deadline_ms: AtomicU64,
    /// The most recent outliers.
    pub recent_outliers: super::outliers::Outliers,
}
