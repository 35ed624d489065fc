//! Per-command deadlines: the handler completes a command the backend has not answered in
//! time with a retryable status, before the kernel's `cmd_time_out` fires, and keeps the
//! command's data blocks (KEEP_BUF) until the late backend completion returns, so a late
//! transfer can never land in blocks the kernel gave to another command.
//!
//! The table is indexed by context slot and sized once; the device thread owns it.

use std::time::{Duration, Instant};
use tcmu_scsi::cdb::Cdb;

/// What the table knows of one slot.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Command id while the command is away (worker or backend).
    id: Option<u16>,
    since: Option<Instant>,
    /// Completed to the kernel at the deadline; the context has not come back yet.
    expired_at: Option<Instant>,
    /// The expiry used KEEP_BUF (its blocks must be released when the context returns).
    kept: bool,
    /// Already reported as stuck.
    warned: bool,
    opcode: u8,
    lba: u64,
}

/// A command that passed its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Context slot.
    pub slot: u16,
    /// Command id.
    pub id: u16,
    /// SCSI opcode.
    pub opcode: u8,
    /// First LBA, when the command has one.
    pub lba: u64,
    /// How long it has been away.
    pub age: Duration,
}

/// What to do with a context that came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Complete it to the ring as usual.
    Complete,
    /// It was completed at its deadline: do not complete it again; release its kept
    /// buffer if `kept`.
    AlreadyCompleted {
        /// Its id.
        id: u16,
        /// Its data blocks were kept (KEEP_BUF).
        kept: bool,
    },
}

/// See the module docs.
pub struct Deadlines {
    limit: Option<Duration>,
    slots: Vec<Slot>,
    next_scan: Instant,
}

/// How often the table is scanned while commands are away.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(100);

impl Deadlines {
    /// A table for `slots` contexts; `limit` None means commands never expire here.
    #[must_use]
    pub fn new(slots: usize, limit: Option<Duration>) -> Deadlines {
        Deadlines {
            limit,
            slots: vec![Slot::default(); slots],
            next_scan: Instant::now(),
        }
    }

    /// The deadline in force.
    #[must_use]
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// Change the deadline (a configuration reload); commands already away are judged by the
    /// new one from the next scan.
    pub fn set_limit(&mut self, limit: Option<Duration>) {
        self.limit = limit;
    }

    /// A command leaves the device thread for a worker or the backend.
    pub fn dispatched(&mut self, slot: u16, id: u16, cdb: &Cdb, opcode: u8, now: Instant) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = Slot {
                id: Some(id),
                since: Some(now),
                opcode,
                lba: lba_of(cdb),
                ..Slot::default()
            };
        }
    }

    /// A context came back; say what to do with it.
    pub fn returned(&mut self, slot: u16) -> Returned {
        let Some(s) = self.slots.get_mut(usize::from(slot)) else {
            return Returned::Complete;
        };
        let prev = std::mem::take(s);
        match (prev.expired_at, prev.id) {
            (Some(_), Some(id)) => Returned::AlreadyCompleted {
                id,
                kept: prev.kept,
            },
            _ => Returned::Complete,
        }
    }

    /// The slot of command `id` if it is away and not yet completed.
    #[must_use]
    pub fn slot_of(&self, id: u16) -> Option<u16> {
        let i = self
            .slots
            .iter()
            .position(|s| s.id == Some(id) && s.expired_at.is_none())?;
        u16::try_from(i).ok()
    }

    /// Commands away and not yet completed (for the stop deadline): (slot, id).
    pub fn away(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.expired_at.is_none())
            .filter_map(|(i, s)| Some((u16::try_from(i).ok()?, s.id?)))
    }

    /// Mark `slot` completed to the kernel now (at its deadline or at a stop).
    pub fn mark_completed(&mut self, slot: u16, kept: bool, now: Instant) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            s.expired_at = Some(now);
            s.kept = kept;
        }
    }

    /// When the next scan is due (with a limit).
    #[must_use]
    pub fn next_scan(&self) -> Instant {
        self.next_scan
    }

    /// Whether a scan is due (at most every [`SCAN_INTERVAL`], and only with a limit).
    #[must_use]
    pub fn scan_due(&self, now: Instant) -> bool {
        self.limit.is_some() && now >= self.next_scan
    }

    /// Commands past the deadline that are not completed yet, and (second list) commands
    /// still stuck in the backend a whole deadline after their expiry, reported once each.
    /// Returns the oldest command still away (completed early or not).
    pub fn scan(
        &mut self,
        now: Instant,
        expired: &mut Vec<Expired>,
        stuck: &mut Vec<Expired>,
    ) -> Option<Expired> {
        self.next_scan = now + SCAN_INTERVAL;
        let limit = self.limit?;
        let mut oldest: Option<Expired> = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let (Some(id), Some(since)) = (s.id, s.since) else {
                continue;
            };
            let age = now.saturating_duration_since(since);
            let Ok(slot) = u16::try_from(i) else { continue };
            let e = Expired {
                slot,
                id,
                opcode: s.opcode,
                lba: s.lba,
                age,
            };
            if oldest.map_or(true, |o| e.age > o.age) {
                oldest = Some(e);
            }
            match s.expired_at {
                None if age >= limit => expired.push(e),
                Some(at) if !s.warned && now.saturating_duration_since(at) >= limit => {
                    s.warned = true;
                    stuck.push(e);
                }
                _ => {}
            }
        }
        oldest
    }
}

/// The first LBA a command addresses, for logs (0 when it has none).
#[must_use]
pub fn lba_of(cdb: &Cdb) -> u64 {
    match *cdb {
        Cdb::Read(rw) | Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } => rw.lba,
        Cdb::Verify { lba, .. }
        | Cdb::SyncCache { lba, .. }
        | Cdb::WriteSame { lba, .. }
        | Cdb::CompareAndWrite { lba, .. } => lba,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcmu_scsi::cdb::Rw;

    fn read(lba: u64) -> Cdb {
        Cdb::Read(Rw {
            lba,
            blocks: 1,
            fua: false,
            dpo: false,
        })
    }

    #[test]
    fn expiry_then_late_return_is_not_completed_twice() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(4, Some(Duration::from_secs(2)));
        d.dispatched(1, 77, &read(9), 0x28, t0);
        let (mut exp, mut stuck) = (Vec::new(), Vec::new());
        d.scan(t0 + Duration::from_secs(1), &mut exp, &mut stuck);
        assert!(exp.is_empty());
        d.scan(t0 + Duration::from_secs(2), &mut exp, &mut stuck);
        assert_eq!(
            exp,
            vec![Expired {
                slot: 1,
                id: 77,
                opcode: 0x28,
                lba: 9,
                age: Duration::from_secs(2)
            }]
        );
        d.mark_completed(1, true, t0 + Duration::from_secs(2));
        assert_eq!(d.away().count(), 0, "no longer away for the stop path");
        exp.clear();
        d.scan(t0 + Duration::from_secs(3), &mut exp, &mut stuck);
        assert!(exp.is_empty(), "expired only once");
        d.scan(t0 + Duration::from_secs(4), &mut exp, &mut stuck);
        assert_eq!(
            stuck.len(),
            1,
            "still stuck a deadline later: reported once"
        );
        d.scan(t0 + Duration::from_secs(9), &mut exp, &mut stuck);
        assert_eq!(stuck.len(), 1);
        assert_eq!(
            d.returned(1),
            Returned::AlreadyCompleted { id: 77, kept: true }
        );
        assert_eq!(
            d.returned(1),
            Returned::Complete,
            "slot is clean for its next command"
        );
    }

    #[test]
    fn no_limit_never_expires() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(2, None);
        d.dispatched(0, 5, &read(0), 0x28, t0);
        assert!(!d.scan_due(t0 + Duration::from_secs(3600)));
        assert_eq!(d.away().collect::<Vec<_>>(), vec![(0, 5)]);
        assert_eq!(d.returned(0), Returned::Complete);
    }
}
