//! Persisting a write-cache change a MODE SELECT made: the daemon writes the LUN's
//! `attrib/emulate_write_cache` in configfs, the attribute the kernel, targetcli/rtslib
//! (`saveconfig`) and the next start of this daemon read. So the change survives a restart
//! of the handler, and what an administrator reads there is what initiators are told.
//!
//! The write runs on a thread of its own, never on a device thread or the main loop: with
//! netlink reply mode on, the kernel answers the write by sending us a RECONFIG (WRITECACHE)
//! and waits for the main loop's reply (docs/kernel-abi.md §3.4, §5.6). That RECONFIG
//! carries the value already in force, so it changes nothing and raises nothing. A write the
//! kernel refuses because another event for the device is pending (EBUSY) is retried a few
//! times; any other failure is logged, and the change stays in force in this process only.

use crossbeam_channel::{unbounded, Sender};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tries of one write refused with EBUSY/EAGAIN, and the pause between them.
const TRIES: u32 = 5;
const PAUSE: Duration = Duration::from_millis(200);

/// Hands write-cache values to the persisting thread. Cheap to clone.
#[derive(Clone)]
pub struct Persister {
    tx: Sender<(PathBuf, bool)>,
    busy: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister")
            .field("busy", &self.busy())
            .finish()
    }
}

impl Persister {
    /// Start the persisting thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start() -> std::io::Result<Persister> {
        let (tx, rx) = unbounded::<(PathBuf, bool)>();
        let busy = Arc::new(AtomicUsize::new(0));
        let b = Arc::clone(&busy);
        std::thread::Builder::new()
            .name("tcmu-wce".into())
            .spawn(move || {
                for (dir, on) in rx {
                    write(&dir, on);
                    b.fetch_sub(1, Ordering::AcqRel);
                }
            })?;
        Ok(Persister { tx, busy })
    }

    /// Persist `on` for the device whose configfs directory is `dir`; returns at once.
    pub fn persist(&self, dir: &Path, on: bool) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        if self.tx.send((dir.to_path_buf(), on)).is_err() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Values handed over and not yet written (or given up).
    #[must_use]
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }
}

fn write(dir: &Path, on: bool) {
    let path = dir.join("attrib/emulate_write_cache");
    let value = if on { "1\n" } else { "0\n" };
    for attempt in 1..=TRIES {
        match std::fs::write(&path, value) {
            Ok(()) => {
                tracing::info!(attribute = %path.display(), write_cache = on, "MODE SELECT's write cache persisted");
                return;
            }
            Err(e)
                if attempt < TRIES
                    && matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) =>
            {
                std::thread::sleep(PAUSE);
            }
            Err(e) => {
                tracing::error!(attribute = %path.display(), write_cache = on,
                    "cannot persist MODE SELECT's write cache ({e}): it is in force until this daemon stops, and the kernel's attribute still says otherwise");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_written_to_the_attribute_and_busy_counts_it_until_then() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("attrib")).unwrap();
        let p = Persister::start().unwrap();
        p.persist(dir.path(), false);
        let t = std::time::Instant::now();
        while p.busy() > 0 {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = std::fs::read_to_string(dir.path().join("attrib/emulate_write_cache"));
        assert_eq!(got.unwrap(), "0\n");
        // A directory that is not there: logged, given up, not counted as busy.
        p.persist(&dir.path().join("gone"), true);
        while p.busy() > 0 {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
