//! LBA range lock that makes COMPARE AND WRITE atomic against concurrent writes to the same
//! blocks without stalling commands to other blocks.
//!
//! Every medium-modifying command holds a *shared* entry for its range while it runs; COMPARE
//! AND WRITE holds an *exclusive* one for its read-compare-write. Shared entries conflict only
//! with overlapping exclusive ones. Entries live in a table indexed by context slot, sized
//! once, so taking the lock never allocates.

use parking_lot::{Condvar, Mutex};

#[derive(Clone, Copy)]
struct Entry {
    start: u64,
    end: u64,
    exclusive: bool,
}

/// See the module docs.
pub struct RangeLock {
    table: Mutex<Table>,
    cv: Condvar,
}

struct Table {
    slots: Vec<Option<Entry>>,
    exclusive: usize,
}

impl Table {
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
}

impl RangeLock {
    /// A lock table for `slots` contexts.
    #[must_use]
    pub fn new(slots: usize) -> RangeLock {
        RangeLock {
            table: Mutex::new(Table {
                slots: vec![None; slots],
                exclusive: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// Take `[lba, lba+blocks)` for context `slot`, waiting while it conflicts.
    pub fn acquire(&self, slot: u16, lba: u64, blocks: u64, exclusive: bool) {
        let e = Entry {
            start: lba,
            end: lba.saturating_add(blocks.max(1)),
            exclusive,
        };
        let me = usize::from(slot);
        let mut t = self.table.lock();
        while t.conflicts(me, e) {
            self.cv.wait(&mut t);
        }
        if exclusive {
            t.exclusive += 1;
        }
        if let Some(s) = t.slots.get_mut(me) {
            *s = Some(e);
        }
    }

    /// Release what context `slot` holds (no-op if nothing).
    pub fn release(&self, slot: u16) {
        let mut t = self.table.lock();
        let Some(s) = t.slots.get_mut(usize::from(slot)) else {
            return;
        };
        if let Some(e) = s.take() {
            if e.exclusive {
                t.exclusive -= 1;
            }
            // Only exclusive holders or waiters on them can be blocked.
            if e.exclusive || t.exclusive > 0 {
                self.cv.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn shared_entries_do_not_block_each_other() {
        let l = RangeLock::new(4);
        l.acquire(0, 0, 8, false);
        l.acquire(1, 4, 8, false);
        l.release(0);
        l.release(1);
    }

    #[test]
    fn exclusive_waits_for_overlapping_writer_but_not_for_others() {
        let l = Arc::new(RangeLock::new(4));
        l.acquire(0, 10, 1, false); // a write to block 10 in flight
        l.acquire(2, 50, 1, false); // unrelated write
        let got = Arc::new(AtomicBool::new(false));
        let (l2, g2) = (Arc::clone(&l), Arc::clone(&got));
        let t = std::thread::spawn(move || {
            l2.acquire(1, 10, 1, true);
            g2.store(true, Ordering::SeqCst);
            l2.release(1);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !got.load(Ordering::SeqCst),
            "COMPARE AND WRITE must wait for the overlapping write"
        );
        l.acquire(3, 60, 1, false); // unrelated writes still proceed
        l.release(3);
        l.release(0);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
        l.release(2);
    }
}
