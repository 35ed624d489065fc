//! The outlier log: every command slower than a threshold is kept, with its per-stage times,
//! in a small bounded ring (for `diagnose`) and written as one structured log line. Always
//! on and cheap: three clock reads per command; the ring's lock is taken only for outliers.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// How many outliers are kept per device.
pub const KEPT: usize = 64;

/// One slow command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// When it completed.
    pub at: SystemTime,
    /// Command id.
    pub cmd_id: u16,
    /// SCSI opcode.
    pub opcode: u8,
    /// First LBA (0 when the command has none).
    pub lba: u64,
    /// Bytes transferred (the command's buffer).
    pub bytes: u64,
    /// Read from the ring until handed to the backend, less the waits below (decode,
    /// routing, the device thread's own work).
    pub handler: Duration,
    /// Parked behind another command's LBA range.
    pub parked: Duration,
    /// Queued for a worker.
    pub queued: Duration,
    /// In the backend.
    pub backend: Duration,
    /// Backend completion until written to the ring.
    pub publish: Duration,
    /// Status it completed with.
    pub status: u8,
}

impl Outlier {
    /// The whole time in the handler.
    #[must_use]
    pub fn total(&self) -> Duration {
        self.handler + self.parked + self.queued + self.backend + self.publish
    }
}

/// The most recent outliers of a device.
#[derive(Debug, Default)]
pub struct Outliers {
    recent: Mutex<VecDeque<Outlier>>,
}

impl Outliers {
    /// Keep `o`, dropping the oldest beyond [`KEPT`].
    pub fn record(&self, o: Outlier) {
        let mut r = self.recent.lock();
        if r.len() == KEPT {
            r.pop_front();
        }
        r.push_back(o);
    }

    /// The kept outliers, oldest first.
    #[must_use]
    pub fn snapshot(&self) -> Vec<Outlier> {
        self.recent.lock().iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent() {
        let o = Outliers::default();
        for i in 0..u16::try_from(KEPT + 5).unwrap() {
            o.record(Outlier {
                at: SystemTime::UNIX_EPOCH,
                cmd_id: i,
                opcode: 0x28,
                lba: 0,
                bytes: 4096,
                handler: Duration::ZERO,
                parked: Duration::ZERO,
                queued: Duration::ZERO,
                backend: Duration::from_secs(2),
                publish: Duration::ZERO,
                status: 0,
            });
        }
        let s = o.snapshot();
        assert_eq!(s.len(), KEPT);
        assert_eq!(s[0].cmd_id, 5);
        assert_eq!(s.last().unwrap().total(), Duration::from_secs(2));
    }
}
