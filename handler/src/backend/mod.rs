//! Backends: where a LUN's blocks live.
//!
//! The interface is **submit + completion** so that asynchronous libraries (librbd, gfapi),
//! which complete on their own threads, fit as well as synchronous ones (the file backend,
//! which runs on the dispatcher's worker threads and completes inline).
//!
//! A backend receives an [`Io`]: the operation, its byte range and the raw iovecs that point
//! into the ring's data area (or a worker's bounce buffer). It must call [`Io::complete`]
//! exactly once; an `Io` dropped without completion completes itself with `EIO`, so a command
//! can never be lost by a backend. Optional abilities are described by [`Caps`], whose default
//! says "unsupported": the dispatcher never sends an operation the backend did not claim.

pub mod cfgstring;
pub mod fault;
pub mod file;
#[cfg(feature = "glfs")]
pub mod glfs;
pub mod io;
#[cfg(any(feature = "rbd", feature = "glfs"))]
pub mod op_latency;
pub mod ram;
#[cfg(feature = "rbd")]
pub mod rbd;
pub mod registry;
#[cfg(any(feature = "rbd", feature = "glfs"))]
pub mod series;

pub use io::{Io, IoOp};

use nix::errno::Errno;
use std::time::Duration;

/// What a backend can do beyond READ, WRITE and FLUSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// Deallocate ranges (UNMAP, WRITE SAME with UNMAP); unmapped blocks read back as zeros.
    pub unmap: bool,
    /// Write zeros without a data buffer (WRITE SAME of a zero block).
    pub write_zeroes: bool,
    /// Storage is thin-provisioned (reported in VPD B2h).
    pub thin: bool,
    /// The medium does not rotate (VPD B1h).
    pub non_rotational: bool,
}

/// Who holds the backing store's exclusive lock, as its backend last saw it (RBD's exclusive
/// lock; what lock-driven implicit ALUA follows, docs/rbd.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockHolder {
    /// The backend has no such lock, or does not know yet.
    #[default]
    Unknown,
    /// This backend holds it.
    This,
    /// Another client (another gateway) holds it.
    Other,
    /// Nobody holds it.
    Nobody,
}

impl LockHolder {
    /// `Some(true)`: held here, `Some(false)`: held elsewhere, `None`: nobody or unknown.
    #[must_use]
    pub fn held_here(self) -> Option<bool> {
        match self {
            LockHolder::This => Some(true),
            LockHolder::Other => Some(false),
            LockHolder::Unknown | LockHolder::Nobody => None,
        }
    }
}

/// The answer of [`Backend::allocation`] for `[off, off + len)` from the allocated extents a
/// store listed for that window (`(offset, length)`, sorted by offset, possibly reaching
/// outside it): whether `off` is allocated, and for how many bytes (adjacent extents merged;
/// at least 1 when `len` is not 0).
#[must_use]
pub fn allocation_in(off: u64, len: u64, extents: &[(u64, u64)]) -> (bool, u64) {
    let end = off.saturating_add(len);
    let mut at = off;
    let mut allocated = None;
    for &(start, n) in extents {
        let stop = start.saturating_add(n);
        if stop <= at {
            continue;
        }
        match allocated {
            // A hole before the first extent that reaches `off`.
            None if start > at => return (false, start.min(end) - off),
            None => allocated = Some(()),
            // A gap ends the allocated run.
            Some(()) if start > at => break,
            Some(()) => {}
        }
        at = stop;
        if at >= end {
            break;
        }
    }
    match allocated {
        Some(()) => (true, (at.min(end) - off).max(u64::from(len > 0))),
        None => (false, len),
    }
}

/// The answer of [`Backend::allocation`] from `SEEK_DATA`/`SEEK_HOLE`: `seek(at, data)` is
/// an `lseek` from `at` to the next data (`data` true) or hole. Data is allocated, a hole is
/// not (and reads as zeros); a store that cannot say (`EINVAL`, `EOPNOTSUPP`) reports
/// allocated.
///
/// # Errors
/// Any other errno of `seek`.
pub fn allocation_by_seek(
    off: u64,
    len: u64,
    seek: impl Fn(u64, bool) -> Result<u64, Errno>,
) -> Result<(bool, u64), Errno> {
    let end = off.saturating_add(len);
    let data = match seek(off, true) {
        Ok(d) => d,
        // No data at or after `off`: a hole to the end of the file.
        Err(Errno::ENXIO) => return Ok((false, len)),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => return Ok((true, len)),
        Err(e) => return Err(e),
    };
    if data > off {
        return Ok((false, data.min(end) - off));
    }
    let hole = match seek(off, false) {
        Ok(h) => h,
        Err(Errno::ENXIO | Errno::EINVAL | Errno::EOPNOTSUPP) => end,
        Err(e) => return Err(e),
    };
    Ok((true, hole.clamp(off + 1, end.max(off + 1)) - off))
}

/// A LUN's backing store.
pub trait Backend: Send + Sync + 'static {
    /// Short description for logs: `file:/var/lib/disk.img`.
    fn describe(&self) -> String;
    /// Size in bytes of the backing store as currently opened.
    fn size(&self) -> u64;
    /// Optional abilities; the default is none.
    fn caps(&self) -> Caps {
        Caps::default()
    }
    /// Change the size (online resize). The default says the backend cannot.
    ///
    /// # Errors
    /// `EOPNOTSUPP` by default; the backend's error otherwise.
    fn resize(&self, _new_size: u64) -> Result<(), Errno> {
        Err(Errno::EOPNOTSUPP)
    }
    /// Whether `submit` finishes the operation before it returns (a synchronous backend, run
    /// on worker threads). The default says yes; an asynchronous library backend says no.
    fn completes_inline(&self) -> bool {
        true
    }
    /// Whether `submit` only starts the operation and returns without waiting for anything
    /// (an asynchronous library call such as `rbd_aio_writev`), so the device thread may call
    /// it itself for a READ or WRITE instead of handing the command to a worker that would do
    /// nothing but that call. False by default: a synchronous backend, or one whose submit
    /// may wait, keeps the workers between it and the ring.
    fn submit_returns_at_once(&self) -> bool {
        false
    }
    /// Provisioning of the store from byte `off`: whether the bytes there are allocated
    /// (`true`) or a hole that reads as zeros (`false`), and how many bytes from `off`, at
    /// most `len`, share that state (at least 1 when `len` is not 0). For GET LBA STATUS;
    /// it may block briefly (a file's `SEEK_DATA`), so only workers call it. The default
    /// reports everything allocated, which is always a correct answer (SBC-4: mapped).
    ///
    /// # Errors
    /// The errno the store answered with.
    fn allocation(&self, _off: u64, len: u64) -> Result<(bool, u64), Errno> {
        Ok((true, len))
    }
    /// Whether the backend does a COMPARE AND WRITE of `len` bytes at `off` itself, atomically
    /// against every other client of the store ([`IoOp::CompareAndWrite`]; RBD: librbd's
    /// `rbd_aio_compare_and_write`, for the ranges librbd takes). The device asks once per
    /// COMPARE AND WRITE and sends the operation only on yes; on no (the default) it reads,
    /// compares and writes itself under its LBA range lock, which is atomic only within this
    /// daemon (docs/rbd.md, "COMPARE AND WRITE").
    fn atomic_compare_and_write(&self, _off: u64, _len: u64) -> bool {
        false
    }
    /// Start one operation. The backend completes `io` exactly once, from any thread.
    fn submit(&self, io: Io);
    /// Operations submitted and not completed yet, whose buffers the backend (or its library)
    /// may still use. A backend replaced by a new cfgstring is closed only once this is 0.
    /// The default, 0, is right for a backend whose `submit` completes before it returns.
    fn in_flight(&self) -> usize {
        0
    }
    /// A file descriptor on which READ, WRITE and FLUSH may be done directly with positional
    /// vectored I/O (`preadv`, `pwritev2`, `fdatasync`) with the same effect as [`submit`],
    /// by the caller's own means (the device thread's io_uring, docs/DESIGN.md "io_uring").
    /// The descriptor stays open as long as this backend object lives. None (the default):
    /// every operation goes through [`submit`].
    ///
    /// [`submit`]: Backend::submit
    fn uring_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The backend tier: how long the backend's own library waits for one operation before
    /// it fails it (RBD's `osd_op_timeout`, Gluster's `network.ping-timeout`). `None` when it
    /// has none of its own (the file backend: the configured `io_timeout` applies).
    fn op_timeout(&self) -> Option<Duration> {
        None
    }
    /// A cheap probe that the store answers (a stat of the image or file). It may block; the
    /// health monitor calls it from its own thread and bounds the wait by the backend tier.
    ///
    /// # Errors
    /// The errno the probe failed with.
    fn ping(&self) -> Result<(), Errno> {
        Ok(())
    }
    /// Re-establish the connection to the store after it was declared lost (a fresh RADOS
    /// client after blocklisting, for example). Commands keep flowing through `submit` on the
    /// same object afterwards. The default has nothing to re-establish.
    ///
    /// # Errors
    /// The errno reopening failed with; the health monitor retries with backoff.
    fn reopen(&self) -> Result<(), Errno> {
        Ok(())
    }
    /// Who holds the store's exclusive lock (a cheap, cached answer: called on the device
    /// thread). The default: [`LockHolder::Unknown`], no such lock.
    fn lock_holder(&self) -> LockHolder {
        LockHolder::Unknown
    }
    /// Backend-specific facts for `tcmu-warden diagnose`, one sentence each (lock owner,
    /// possibly stale watchers, ...). The default has none.
    fn diagnose(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The cfgstring is malformed or names the wrong handler.
    #[error("bad cfgstring {cfgstring:?}: {reason}")]
    Config {
        /// The cfgstring as received.
        cfgstring: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The subtype is not one this daemon serves.
    #[error("unsupported subtype {0:?} (this daemon serves: {subtypes})", subtypes = registry::SUBTYPES.join(", "))]
    Subtype(String),
    /// Opening the store failed (`what` says the step and the object, e.g. `open /a.img`).
    #[error("{what}: {source}")]
    Io {
        /// The object that failed to open.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl OpenError {
    /// The negative errno that stands for this error in a netlink `*_DONE` reply: ENOENT
    /// for a subtype this daemon does not serve (what tcmu-runner answers too), EINVAL for
    /// a malformed cfgstring, the OS error itself when opening the store failed.
    #[must_use]
    pub fn errno(&self) -> i32 {
        -match self {
            OpenError::Subtype(_) => libc::ENOENT,
            OpenError::Config { .. } => libc::EINVAL,
            OpenError::Io { source, .. } => errno_of(source) as i32,
        }
    }
}

/// Convert an I/O error to an errno, keeping it typed.
#[must_use]
pub fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod layering {
    /// `backend/` stands alone: no file under it names the device layer, so it could become
    /// a crate of its own (docs/DESIGN.md, "Modules").
    #[test]
    fn the_backends_know_nothing_of_devices() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("backend source directory") {
                let p = e.expect("directory entry").path();
                if p.is_dir() {
                    walk(&p, found);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).expect("source file");
                    for (i, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or("");
                        // Built at run time so that this test's own text does not match.
                        let (a, b) = (
                            ["crate", "::device"].concat(),
                            ["super::super", "::device"].concat(),
                        );
                        if code.contains(&a) || code.contains(&b) {
                            found.push(format!("{}:{}: {line}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend");
        walk(&dir, &mut found);
        assert!(
            found.is_empty(),
            "backend/ uses the device layer:\n{}",
            found.join("\n")
        );
    }
}

#[cfg(test)]
mod allocation_tests {
    use super::allocation_in;

    #[test]
    fn extents_become_runs_from_the_offset_asked_for() {
        // Nothing listed: a hole as long as the window.
        assert_eq!(allocation_in(100, 50, &[]), (false, 50));
        // A hole up to the first extent.
        assert_eq!(allocation_in(0, 1000, &[(300, 100)]), (false, 300));
        // An extent that began before the offset, merged with the adjacent one, up to a gap.
        assert_eq!(
            allocation_in(350, 1000, &[(300, 100), (400, 50), (600, 10)]),
            (true, 100)
        );
        // Clipped to the window at both ends; extents wholly before the offset ignored.
        assert_eq!(
            allocation_in(500, 100, &[(0, 10), (450, 1000)]),
            (true, 100)
        );
        assert_eq!(allocation_in(500, 100, &[(0, 10), (700, 5)]), (false, 100));
    }
}
