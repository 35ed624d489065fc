//! Deadlines enforced by the device thread: commands past the device's deadline are
//! completed with a retryable status and their data blocks kept (see docs/DESIGN.md,
//! "Deadlines" and "Late writes and retries"), and at the stop deadline everything still away
//! is completed with BUSY.

use super::LoopDevice;
use crate::device::context::Outcome;
use crate::device::deadline::Expired;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::status;

impl LoopDevice {
    /// Complete the commands past their deadline with the retryable status a backend
    /// timeout gets (ETIMEDOUT: NOT READY, asymmetric access state transition, which Linux
    /// retries and multipath may fail over), keeping their data blocks; report the ones still
    /// stuck a whole deadline later.
    pub(super) fn expire(&mut self, now: Instant) {
        let (mut expired, mut stuck) = (
            std::mem::take(&mut self.expired),
            std::mem::take(&mut self.stuck),
        );
        expired.clear();
        stuck.clear();
        let oldest = self.deadlines.scan(now, &mut expired, &mut stuck);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.acct
            .stats
            .oldest_ms
            .store(oldest.map_or(0, |o| ms(o.age).max(1)), Ordering::Relaxed);
        if let Some(o) = oldest {
            self.acct
                .stats
                .oldest_opcode
                .store(o.opcode, Ordering::Relaxed);
            self.acct.stats.oldest_lba.store(o.lba, Ordering::Relaxed);
        }
        let can_keep = self.ring.caps().keep_buf && self.free_kept_buf.is_some();
        for e in &expired {
            // Parked behind another command's range: it never reached the backend, so it can
            // be completed now and dropped; running it later would be a late write the
            // initiator was told had failed.
            if let Some(pos) = self.parked.iter().position(|c| c.slot == e.slot) {
                if let Some(mut ctx) = self.parked.remove(pos) {
                    ctx.done(Outcome::error(ScsiError::from_errno(libc::ETIMEDOUT, true)));
                    self.count_expiry(
                        e,
                        "parked behind a command on the same blocks, never sent to the backend",
                    );
                    self.finish(ctx);
                }
                continue;
            }
            if !can_keep {
                if !self.warned_no_keep_buf {
                    self.warned_no_keep_buf = true;
                    tracing::error!(device = %self.link.name, "a command passed its deadline, but without KEEP_BUF and free_kept_buf it cannot be completed early safely; waiting for the backend");
                }
                continue;
            }
            let outcome = Outcome::error(ScsiError::from_errno(libc::ETIMEDOUT, true));
            let mut rsp = outcome.response(&mut self.sense);
            rsp.keep_buf = true;
            match self.ring.complete(e.id, &rsp) {
                Ok(()) => {
                    self.deadlines.mark_completed(e.slot, true, now);
                    // Not started by a worker yet: it completes without running.
                    if let Some(f) = self.link.aborted.get(usize::from(e.slot)) {
                        f.store(true, Ordering::SeqCst);
                    }
                    // It may still land: no later command may write its blocks before it
                    // returns (the initiator's retry, or a newer write, would be overwritten).
                    self.ranges.fence(e.slot);
                    if e.opcode == tcmu_scsi::opcodes::COMPARE_AND_WRITE {
                        self.link.caw.expired(e.slot, e.lba, now);
                    }
                    self.acct.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.count_expiry(e, "backend did not answer in time: completed with a retryable status, data blocks kept and writes to them held until it does");
                }
                Err(err) => {
                    tracing::error!(device = %self.link.name, cmd_id = e.id, "cannot complete at the deadline: {err}")
                }
            }
        }
        for e in &stuck {
            self.acct.stuck();
            tracing::error!(device = %self.link.name, cmd_id = e.id, opcode = format_args!("{:#04x}", e.opcode), lba = e.lba,
                age_ms = u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX), "command still stuck in the backend");
        }
        self.expired = expired;
        self.stuck = stuck;
        self.publish();
    }

    fn count_expiry(&self, e: &Expired, what: &str) {
        self.acct.deadline_expired();
        self.link.health.note_expired();
        tracing::warn!(device = %self.link.name, cmd_id = e.id, opcode = format_args!("{:#04x}", e.opcode), lba = e.lba,
            age_ms = u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX),
            deadline_ms = self.deadlines.limit().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            "{what}");
    }

    /// At the stop deadline: complete every command still with a worker or the backend with
    /// BUSY, so the initiator retries it elsewhere or later instead of waiting for the
    /// kernel's timeout. With KEEP_BUF the kernel keeps their data blocks until the uio fd
    /// closes, and the fd stays open (the link holds it) until the last late I/O returns, so a
    /// late backend transfer can never land in a block the kernel gave to another command.
    pub(super) fn give_up_in_flight(&mut self) {
        let keep_buf = self.ring.caps().keep_buf;
        let mut n = 0;
        let now = Instant::now();
        let away: Vec<(u16, u16)> = self.deadlines.away().collect();
        for (slot, id) in away {
            self.deadlines.mark_completed(slot, keep_buf, now);
            let rsp = tcmu_ring::Response {
                status: status::BUSY,
                sense: None,
                read_len: None,
                keep_buf,
            };
            match self.ring.complete(id, &rsp) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::error!(device = %self.link.name, cmd_id = id, "cannot complete at stop: {e}")
                }
            }
        }
        self.publish();
        tracing::error!(device = %self.link.name, completed_busy = n, keep_buf, "stop deadline passed: commands still in the backend were completed with BUSY");
    }
}
