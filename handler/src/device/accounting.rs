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
        let Some(st) = stages(&ctx.stamps, now) else {
            return;
        };
        if self.exported {
            let (read_bytes, written) =
                bytes_moved(ctx.class, ctx.cmd.data_len(), status == status::GOOD);
            self.metrics().command_done(
                ctx.class,
                outcome_class(status),
                read_bytes,
                written,
                [
                    ns(st.handler),
                    ns(st.parked),
                    ns(st.queued),
                    ns(st.backend),
                    ns(st.publish),
                ],
            );
        }
        let Some(threshold) = self.outlier_threshold else {
            return;
        };
        if st.total() < threshold {
            return;
        }
        // An outlier: only now is the record built (the common path is two clock reads).
        let o = super::outliers::Outlier {
            at: std::time::SystemTime::now(),
            cmd_id: ctx.cmd.cmd_id,
            opcode: ctx.cmd.cdb().first().copied().unwrap_or(0),
            lba: super::deadline::lba_of(&ctx.cdb),
            bytes: ctx.cmd.data_len(),
            handler: st.handler,
            parked: st.parked,
            queued: st.queued,
            backend: st.backend,
            publish: st.publish,
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
            parked_ms = ms(o.parked),
            queued_ms = ms(o.queued),
            backend_ms = ms(o.backend),
            publish_ms = ms(o.publish),
            status = format_args!("{:#04x}", o.status),
            "outlier"
        );
    }
}

/// The stage times of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimes {
    /// The device thread's own work (read to submit, less the waits).
    pub handler: Duration,
    /// Parked behind another command's LBA range.
    pub parked: Duration,
    /// Queued for a worker.
    pub queued: Duration,
    /// In the backend.
    pub backend: Duration,
    /// Backend completion to the completion written to the ring.
    pub publish: Duration,
}

impl StageTimes {
    /// Their sum: read from the ring until completed.
    #[must_use]
    pub fn total(&self) -> Duration {
        self.handler + self.parked + self.queued + self.backend + self.publish
    }
}

/// Length of the overlap of `[a0, a1]` and `[b0, b1]`.
fn overlap(a0: Instant, a1: Instant, b0: Instant, b1: Instant) -> Duration {
    a1.min(b1).saturating_duration_since(a0.max(b0))
}

/// Split a command's life, from reading it to `now`, into stages. The three main stages run
/// between the stamps (read → submit → backend done → `now`; a command never submitted is in
/// the handler stage until `now`, one with no completion stamp has no backend stage); the two waits (parked, queued for a worker), wherever they fall, are
/// taken out of the stage they fall in, so a command parked until its deadline counts as
/// parked, not as publishing. None when the command was not stamped (accounting off).
#[must_use]
pub fn stages(s: &super::context::Stamps, now: Instant) -> Option<StageTimes> {
    let read = s.read?;
    let now = now.max(read);
    // Never handed to the backend (answered here, or completed while parked or queued): the
    // handler stage (less those waits) runs until it was completed.
    let submit = s.submit.unwrap_or(now).clamp(read, now);
    let done = s.done.unwrap_or(submit).clamp(submit, now);
    let parked = s
        .parked
        .map(|p| (p, s.unparked.unwrap_or(now).max(p).min(now)));
    let queued = s
        .queued
        .map(|q| (q, s.submit.or(s.done).unwrap_or(now).max(q).min(now)));
    let stage = |a: Instant, b: Instant| {
        let mut d = b.saturating_duration_since(a);
        for (w0, w1) in [parked, queued].into_iter().flatten() {
            d = d.saturating_sub(overlap(a, b, w0, w1));
        }
        d
    };
    let wait = |w: Option<(Instant, Instant)>| w.map_or(Duration::ZERO, |(a, b)| b - a);
    Some(StageTimes {
        handler: stage(read, submit),
        parked: wait(parked),
        queued: wait(queued),
        backend: stage(submit, done),
        publish: stage(done, now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::context::Stamps;

    #[test]
    fn a_command_parked_until_its_deadline_is_attributed_to_parked() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Read, parked 1 ms later behind a fenced write, completed at its deadline (20 s)
        // without ever reaching the backend.
        let s = Stamps {
            read: Some(at(0)),
            parked: Some(at(1)),
            ..Stamps::default()
        };
        let st = stages(&s, at(20_001)).unwrap();
        assert_eq!(st.parked, Duration::from_millis(20_000));
        assert_eq!(st.publish, Duration::ZERO);
        assert_eq!(st.handler, Duration::from_millis(1), "read until parked");
        assert_eq!(st.total(), Duration::from_millis(20_001));
    }

    #[test]
    fn parked_then_queued_then_backend_each_get_their_share() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let s = Stamps {
            read: Some(at(0)),
            parked: Some(at(1)),
            unparked: Some(at(301)),
            queued: Some(at(302)),
            submit: Some(at(702)),
            done: Some(at(1702)),
        };
        let st = stages(&s, at(1705)).unwrap();
        assert_eq!(
            st,
            StageTimes {
                handler: Duration::from_millis(2),
                parked: Duration::from_millis(300),
                queued: Duration::from_millis(400),
                backend: Duration::from_millis(1000),
                publish: Duration::from_millis(3),
            }
        );
        assert_eq!(st.total(), Duration::from_millis(1705));
        // Not stamped (accounting off): nothing.
        assert_eq!(stages(&Stamps::default(), at(5)), None);
        // Queued and never started (aborted): queued until it was completed.
        let s = Stamps {
            read: Some(at(0)),
            queued: Some(at(1)),
            ..Stamps::default()
        };
        let st = stages(&s, at(50)).unwrap();
        assert_eq!(st.queued, Duration::from_millis(49));
        assert_eq!(st.total(), Duration::from_millis(50));
    }

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
