//! LBA ranges held by commands in flight, so that COMPARE AND WRITE is atomic against
//! concurrent writes to the same blocks without stalling commands to other blocks.
//!
//! Medium-modifying commands hold a *shared* entry for their range; COMPARE AND WRITE holds an
//! *exclusive* one for its read-compare-write. Shared entries conflict only with overlapping
//! exclusive ones. Only the device thread uses the table: a command whose range conflicts is
//! parked there and dispatched when the holder completes, so no worker ever waits on a range
//! (a worker blocked on a busy block would stall I/O to every other block). Entries live in a
//! table indexed by context slot, sized once, so taking a range never allocates.
//!
//! Commands with the SIMPLE task attribute may be reordered, so a parked command may be
//! overtaken by a later one that does not conflict with anything held.

use tcmu_scsi::cdb::Cdb;

#[derive(Clone, Copy)]
struct Entry {
    start: u64,
    end: u64,
    exclusive: bool,
}

/// See the module docs.
pub struct RangeTable {
    slots: Vec<Option<Entry>>,
    exclusive: usize,
}

impl RangeTable {
    /// A table for `slots` contexts.
    #[must_use]
    pub fn new(slots: usize) -> RangeTable {
        RangeTable {
            slots: vec![None; slots],
            exclusive: 0,
        }
    }

    fn conflicts(&self, me: usize, e: Entry) -> bool {
        if !e.exclusive && self.exclusive == 0 {
            return false;
        }
        self.slots.iter().enumerate().any(|(i, o)| {
            i != me
                && o.is_some_and(|o| {
                    (o.exclusive || e.exclusive) && o.start < e.end && e.start < o.end
                })
        })
    }

    /// Take `[lba, lba+blocks)` for context `slot` if nothing conflicts; false otherwise.
    pub fn try_acquire(&mut self, slot: u16, lba: u64, blocks: u64, exclusive: bool) -> bool {
        let e = Entry {
            start: lba,
            end: lba.saturating_add(blocks.max(1)),
            exclusive,
        };
        let me = usize::from(slot);
        if me >= self.slots.len() || self.conflicts(me, e) {
            return false;
        }
        if exclusive {
            self.exclusive += 1;
        }
        self.slots[me] = Some(e);
        true
    }

    /// Make what context `slot` holds exclusive: its command was completed to the initiator
    /// at its deadline but may still land in the backend, so no later command may write (or
    /// compare) these blocks until it returns, or the late write could overwrite newer data.
    pub fn fence(&mut self, slot: u16) {
        if let Some(e) = self
            .slots
            .get_mut(usize::from(slot))
            .and_then(Option::as_mut)
        {
            if !e.exclusive {
                e.exclusive = true;
                self.exclusive += 1;
            }
        }
    }

    /// Release what context `slot` holds (no-op if nothing).
    pub fn release(&mut self, slot: u16) {
        if let Some(e) = self.slots.get_mut(usize::from(slot)).and_then(Option::take) {
            if e.exclusive {
                self.exclusive -= 1;
            }
        }
    }
}

/// The range a command must hold while it runs: `(lba, blocks, exclusive)`.
#[must_use]
pub fn range_of(cdb: &Cdb) -> Option<(u64, u64, bool)> {
    match *cdb {
        Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } => {
            Some((rw.lba, u64::from(rw.blocks), false))
        }
        Cdb::WriteSame { lba, blocks, .. } => Some((lba, u64::from(blocks), false)),
        // Its ranges are in the parameter list; hold the whole LUN shared (it only waits for
        // a COMPARE AND WRITE in flight).
        Cdb::Unmap { .. } => Some((0, u64::MAX, false)),
        // Likewise EXTENDED COPY on the LUN that received it (`device::xcopy`).
        Cdb::ExtendedCopy { .. } => Some((0, u64::MAX, false)),
        Cdb::CompareAndWrite { lba, blocks, .. } => Some((lba, u64::from(blocks), true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_write_blocks_later_writes_to_its_blocks_only() {
        let mut t = RangeTable::new(4);
        assert!(t.try_acquire(0, 10, 4, false));
        assert!(t.try_acquire(1, 12, 1, false), "plain writes share");
        t.release(1);
        t.fence(0);
        assert!(
            !t.try_acquire(1, 13, 1, false),
            "a write to fenced blocks waits"
        );
        assert!(
            !t.try_acquire(1, 13, 1, true),
            "so does a COMPARE AND WRITE"
        );
        assert!(t.try_acquire(2, 14, 1, false), "other blocks are free");
        t.fence(0);
        t.release(0);
        assert!(
            t.try_acquire(1, 13, 1, true),
            "released once the late write returned"
        );
    }

    #[test]
    fn shared_entries_do_not_conflict() {
        let mut t = RangeTable::new(4);
        assert!(t.try_acquire(0, 0, 8, false));
        assert!(t.try_acquire(1, 4, 8, false));
    }

    #[test]
    fn exclusive_conflicts_only_with_overlaps() {
        let mut t = RangeTable::new(8);
        assert!(t.try_acquire(0, 10, 1, false)); // a write to block 10 in flight
        assert!(
            !t.try_acquire(1, 10, 1, true),
            "COMPARE AND WRITE must wait for the write"
        );
        assert!(
            t.try_acquire(2, 11, 1, true),
            "a CAW of another block proceeds"
        );
        assert!(!t.try_acquire(3, 11, 4, false), "a write over a CAW waits");
        assert!(t.try_acquire(4, 50, 4, false), "unrelated writes proceed");
        t.release(0);
        assert!(t.try_acquire(1, 10, 1, true));
        t.release(2);
        assert!(t.try_acquire(3, 11, 4, false));
        assert!(
            !t.try_acquire(5, 0, u64::MAX, false),
            "UNMAP waits for the CAW on block 10"
        );
        t.release(1);
        assert!(t.try_acquire(5, 0, u64::MAX, false));
    }
}
