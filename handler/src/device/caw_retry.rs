//! COMPARE AND WRITE retried after its deadline.
//!
//! A COMPARE AND WRITE the backend did not finish in time is answered with a retryable status
//! at its deadline, but its write may still land (Ceph's timed-out writes did). The initiator
//! (VMware's ATS locking, a cluster filesystem) then retries the very same command, which now
//! finds the *new* data on the medium and would report MISCOMPARE: a lock the initiator
//! actually took would look lost.
//!
//! So the device remembers each COMPARE AND WRITE completed at its deadline: its LBA and a
//! fingerprint of its Data-Out buffer (compare and write halves). When a COMPARE AND WRITE
//! miscompares, and it is the same command (same LBA, same fingerprint) as a remembered one,
//! and the medium now holds exactly its write half, the first attempt was applied: the retry
//! reports GOOD, which is what the first attempt would have reported. The retry cannot run
//! before the first attempt returns (its blocks are fenced), so the check sees the final data.
//!
//! The memory is small and fixed (no allocation on the I/O path) and entries expire.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many indeterminate commands are remembered (the oldest is forgotten first).
const SLOTS: usize = 16;
/// How long one is remembered: longer than any initiator keeps retrying (Linux: 180 s).
const KEEP: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
struct Entry {
    lba: u64,
    fingerprint: u64,
    at: Instant,
}

/// See the module docs.
pub struct CawRetry {
    /// Per context slot: fingerprint of the COMPARE AND WRITE running in it (0: none).
    running: Box<[AtomicU64]>,
    indeterminate: Mutex<[Option<Entry>; SLOTS]>,
}

impl CawRetry {
    /// For a device with `slots` contexts.
    #[must_use]
    pub fn new(slots: usize) -> CawRetry {
        CawRetry {
            running: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            indeterminate: Mutex::new([None; SLOTS]),
        }
    }

    /// A worker starts the COMPARE AND WRITE in `slot` with this Data-Out fingerprint.
    pub fn started(&self, slot: u16, fingerprint: u64) {
        if let Some(r) = self.running.get(usize::from(slot)) {
            r.store(fingerprint, Ordering::Relaxed);
        }
    }

    /// The command in `slot` (a COMPARE AND WRITE at `lba`) was completed at its deadline
    /// while still in the backend: remember it.
    pub fn expired(&self, slot: u16, lba: u64, now: Instant) {
        let Some(fp) = self
            .running
            .get(usize::from(slot))
            .map(|r| r.swap(0, Ordering::Relaxed))
            .filter(|&f| f != 0)
        else {
            return;
        };
        let mut t = self.indeterminate.lock();
        let free = t
            .iter()
            .position(|e| e.map_or(true, |e| now.saturating_duration_since(e.at) > KEEP));
        let oldest = || {
            t.iter()
                .enumerate()
                .min_by_key(|(_, e)| e.map(|e| e.at))
                .map_or(0, |(i, _)| i)
        };
        let i = free.unwrap_or_else(oldest);
        t[i] = Some(Entry {
            lba,
            fingerprint: fp,
            at: now,
        });
    }

    /// Whether a COMPARE AND WRITE at `lba` with this fingerprint was completed at its
    /// deadline and is still remembered (nothing is forgotten): the backend's own atomic
    /// COMPARE AND WRITE reads the medium after a miscompare only then.
    pub fn remembers(&self, lba: u64, fingerprint: u64, now: Instant) -> bool {
        self.indeterminate.lock().iter().any(|e| {
            e.is_some_and(|e| {
                e.lba == lba
                    && e.fingerprint == fingerprint
                    && now.saturating_duration_since(e.at) <= KEEP
            })
        })
    }

    /// A COMPARE AND WRITE at `lba` with this fingerprint miscompared and the medium holds
    /// its write half: true if it repeats one completed at its deadline (then it is
    /// forgotten, and the caller reports GOOD).
    pub fn is_retry_of_applied(&self, lba: u64, fingerprint: u64, now: Instant) -> bool {
        let mut t = self.indeterminate.lock();
        let hit = t.iter().position(|e| {
            e.is_some_and(|e| {
                e.lba == lba
                    && e.fingerprint == fingerprint
                    && now.saturating_duration_since(e.at) <= KEEP
            })
        });
        match hit {
            Some(i) => {
                t[i] = None;
                true
            }
            None => false,
        }
    }
}

/// FNV-1a over `bytes`, continuing from `h` (start with [`FNV_START`]). Never returns 0, so
/// 0 can mean "none".
#[must_use]
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The FNV-1a offset basis.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_command_at_the_same_lba_is_recognised_once() {
        let c = CawRetry::new(4);
        let t0 = Instant::now();
        c.started(2, 0xfeed);
        c.expired(2, 100, t0);
        assert!(!c.is_retry_of_applied(101, 0xfeed, t0), "other LBA");
        assert!(!c.is_retry_of_applied(100, 0xbeef, t0), "other data");
        assert!(c.is_retry_of_applied(100, 0xfeed, t0));
        assert!(!c.is_retry_of_applied(100, 0xfeed, t0), "recognised once");
    }

    #[test]
    fn entries_expire_and_the_table_is_bounded() {
        let c = CawRetry::new(1);
        let t0 = Instant::now();
        c.started(0, 7);
        c.expired(0, 1, t0);
        assert!(!c.is_retry_of_applied(1, 7, t0 + KEEP + Duration::from_secs(1)));
        for i in 0..(SLOTS as u64 + 4) {
            c.started(0, 1000 + i);
            c.expired(0, i, t0 + Duration::from_millis(i));
        }
        assert!(
            !c.is_retry_of_applied(0, 1000, t0),
            "the oldest was forgotten"
        );
        let last = SLOTS as u64 + 3;
        assert!(c.is_retry_of_applied(last, 1000 + last, t0));
        // A command that was not running a COMPARE AND WRITE leaves nothing behind.
        c.expired(0, 5, t0);
        assert!(!c.is_retry_of_applied(5, 0, t0));
    }
}
