//! Per-command accounting: the stage times of a finished command (read from the ring, handed
//! to the backend, completed by it, published), its counters, and the outlier log.
//!
//! Three clock reads per command feed it (`context::Stamps`); the common path is two more
//! clock reads and a few atomic additions. An outlier (slower than the threshold) is only
//! then turned into a record, kept in `DeviceStats::recent_outliers` and logged. Nothing here
//! knows how the device loop is organised: it takes a finished context and its status.

use super::context::Ctx;
use super::stats::DeviceStats;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_scsi::status;
use tcmu_warden_supervisor::metrics::{DeviceMetrics, OpClass, OutcomeClass};

/// Where one device's commands are counted: every counter `status` and the Prometheus
/// endpoint share is bumped here and nowhere else.
#[derive(Debug)]
pub struct Accounting {
    /// The counters `status` and `diagnose` read (the shared ones in its `DeviceMetrics`).
    pub stats: Arc<DeviceStats>,
    /// Commands slower than this are outliers (None: no outlier log).
    pub outlier_threshold: Option<Duration>,
    /// The series are served (a metrics endpoint exists): observe the per-command
    /// histograms and byte counts, which only the endpoint shows. Without it a finished
    /// command costs no more than the outlier check.
    pub exported: bool,
}

/// The `outcome` label of a SAM status.
#[must_use]
pub fn outcome_class(s: u8) -> OutcomeClass {
    match s {
        status::GOOD => OutcomeClass::Good,
        status::CHECK_CONDITION => OutcomeClass::CheckCondition,
        status::BUSY => OutcomeClass::Busy,
        _ => OutcomeClass::Other,
    }
}

/// Bytes a finished command read and wrote: its whole buffer, in the direction of its class,
/// when it succeeded; nothing otherwise.
#[must_use]
pub fn bytes_moved(class: OpClass, bytes: u64, good: bool) -> (u64, u64) {
    match class {
        OpClass::Read | OpClass::Emulated if good => (bytes, 0),
        OpClass::Write | OpClass::WriteSame | OpClass::CompareAndWrite if good => (0, bytes),
        _ => (0, 0),
    }
}

/// The metrics label of a TMR type.
#[must_use]
pub fn tmr_name(t: u8) -> &'static str {
    use tcmu_sys::tmr;
    match t {
        tmr::ABORT_TASK => "abort_task",
        tmr::ABORT_TASK_SET => "abort_task_set",
        tmr::CLEAR_ACA => "clear_aca",
        tmr::CLEAR_TASK_SET => "clear_task_set",
        tmr::LUN_RESET => "lun_reset",
        tmr::TARGET_WARM_RESET => "target_warm_reset",
        tmr::TARGET_COLD_RESET => "target_cold_reset",
        tmr::LUN_RESET_PRO => "lun_reset_pro",
        _ => "unknown",
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Accounting {
    fn metrics(&self) -> &DeviceMetrics {
        self.stats.metrics()
    }

    /// A task management request of kernel type `t` arrived.
    pub fn tmr(&self, t: u8) {
        self.metrics().tmr(tmr_name(t));
    }

    /// The handler completed a command at its deadline.
    pub fn deadline_expired(&self) {
        self.metrics().deadline_expired("handler");
    }

    /// A command is still in the backend a whole deadline after it was completed.
    pub fn stuck(&self) {
        self.metrics().stuck_command();
    }

    /// The ring geometry: command-ring and data-area sizes in bytes.
    pub fn capacity(&self, cmd_ring: u64, data_area: u64) {
        self.metrics().set_capacity(cmd_ring, data_area);
    }

    /// Use after a pass of the device loop: commands in flight, command-ring and data-area
    /// bytes in use.
    pub fn observe(&self, in_flight: u64, ring_used: u64, data_used: u64) {
        let m = self.metrics();
        m.observe_use(ring_used, data_used);
        m.set_in_flight(in_flight);
        if in_flight == 0 {
            self.stats
                .oldest_ms
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Per-stage times of a command whose completion was just written, at `now`; an outlier
    /// is kept and logged (`device` and `backend` name it in the log).
    pub fn command_done(
        &self,
        ctx: &Ctx,
        status: u8,
        now: Instant,
        device: &str,
        backend: impl FnOnce() -> String,
    ) {
        let Some(read) = ctx.stamps.read else { return };
        let submit = ctx.stamps.submit.unwrap_or(read);
        let done = ctx.stamps.done.unwrap_or(submit);
        if self.exported {
            let (read_bytes, written) =
                bytes_moved(ctx.class, ctx.cmd.data_len(), status == status::GOOD);
            self.metrics().command_done(
                ctx.class,
                outcome_class(status),
                read_bytes,
                written,
                ns(submit.saturating_duration_since(read)),
                ns(done.saturating_duration_since(submit)),
                ns(now.saturating_duration_since(done)),
            );
        }
        let Some(threshold) = self.outlier_threshold else {
            return;
        };
        if now.saturating_duration_since(read) < threshold {
            return;
        }
        // An outlier: only now is the record built (the common path is two clock reads).
        let o = super::outliers::Outlier {
            at: std::time::SystemTime::now(),
            cmd_id: ctx.cmd.cmd_id,
            opcode: ctx.cmd.cdb().first().copied().unwrap_or(0),
            lba: super::deadline::lba_of(&ctx.cdb),
            bytes: ctx.cmd.data_len(),
            handler: submit.saturating_duration_since(read),
            backend: done.saturating_duration_since(submit),
            publish: now.saturating_duration_since(done),
            status,
        };
        self.metrics().outlier();
        self.stats.recent_outliers.record(o);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::warn!(
            device,
            backend = %backend(),
            cmd_id = o.cmd_id,
            opcode = format_args!("{:#04x}", o.opcode),
            lba = o.lba,
            bytes = o.bytes,
            total_ms = ms(o.total()),
            handler_ms = ms(o.handler),
            backend_ms = ms(o.backend),
            publish_ms = ms(o.publish),
            status = format_args!("{:#04x}", o.status),
            "outlier"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_successful_transfers_count_bytes_in_their_direction() {
        assert_eq!(bytes_moved(OpClass::Read, 4096, true), (4096, 0));
        assert_eq!(bytes_moved(OpClass::Emulated, 36, true), (36, 0));
        assert_eq!(bytes_moved(OpClass::Write, 4096, true), (0, 4096));
        assert_eq!(bytes_moved(OpClass::CompareAndWrite, 1024, true), (0, 1024));
        assert_eq!(bytes_moved(OpClass::Write, 4096, false), (0, 0));
        assert_eq!(bytes_moved(OpClass::Flush, 0, true), (0, 0));
        assert_eq!(bytes_moved(OpClass::Unmap, 24, true), (0, 0));
    }

    #[test]
    fn statuses_and_tmrs_have_their_labels() {
        assert_eq!(outcome_class(status::GOOD), OutcomeClass::Good);
        assert_eq!(
            outcome_class(status::CHECK_CONDITION),
            OutcomeClass::CheckCondition
        );
        assert_eq!(outcome_class(status::BUSY), OutcomeClass::Busy);
        assert_eq!(outcome_class(0x18), OutcomeClass::Other);
        assert_eq!(tmr_name(tcmu_sys::tmr::LUN_RESET), "lun_reset");
        assert_eq!(tmr_name(0xee), "unknown");
    }
}
