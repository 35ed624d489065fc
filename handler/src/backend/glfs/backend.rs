//! [`GlfsBackend`]: a LUN in a file on a gluster volume, through gfapi's asynchronous calls.
//!
//! `submit` starts the gfapi call and returns; gfapi's callback posts the result to this
//! LUN's completion thread (`glfs-cq`), which finishes the operation (a short transfer is
//! continued, a FUA write gets its fdatasync, a read past the end of the file is zero-filled)
//! and completes the [`Io`].
//!
//! Durability: the file is opened `O_DIRECT` and the connection sets write-behind's
//! `strict-O_DIRECT`, so every acknowledged write has reached the brick: nothing
//! acknowledged sits in a client-side cache that a failed connection could drop.

use super::cfg::GlfsConfig;
use super::metrics::DeviceSeries;
use super::volumes::VolumeEntry;
use crate::backend::io::{Io, IoOp};
use crate::backend::{Backend, Caps};
use gfapi::{Completed, CompletionQueue, Fd};
use nix::errno::Errno;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_scsi::ErrnoClass;

/// Flags the LUN's file is opened with.
pub const OPEN_FLAGS: libc::c_int = libc::O_RDWR | libc::O_DIRECT;

/// Operations one LUN may have in gfapi at once (more are refused with BUSY).
const QUEUE_SLOTS: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Read,
    Write { fua: bool },
    FuaSync,
    Flush,
    Discard,
    Zerofill,
}

/// One operation parked in gfapi.
pub(super) struct Op {
    io: Io,
    stage: Stage,
    done: u64,
    started: Instant,
}

pub(super) struct Shared {
    pub(super) cfg: GlfsConfig,
    pub(super) vol: Arc<VolumeEntry>,
    pub(super) fd: RwLock<Arc<Fd>>,
    cq: CompletionQueue<Op>,
    size: AtomicU64,
    shutdown: AtomicBool,
    series: Option<DeviceSeries>,
    last_error: Mutex<Option<(Errno, Instant)>>,
}

/// See the module docs.
pub struct GlfsBackend {
    shared: Arc<Shared>,
}

/// The volume is unreachable for now (the one classification, [`ErrnoClass`], which the
/// SCSI sense and the health monitor use too): the `up` metric goes to 0 and the file handle
/// is not reopened for it.
fn is_connection_error(e: Errno) -> bool {
    ErrnoClass::of(e as i32).is_connection()
}

impl GlfsBackend {
    pub(super) fn start(
        cfg: GlfsConfig,
        vol: Arc<VolumeEntry>,
        fd: Fd,
        size: u64,
        series: Option<DeviceSeries>,
    ) -> std::io::Result<GlfsBackend> {
        let shared = Arc::new(Shared {
            cfg,
            vol,
            fd: RwLock::new(Arc::new(fd)),
            cq: CompletionQueue::new(QUEUE_SLOTS),
            size: AtomicU64::new(size),
            shutdown: AtomicBool::new(false),
            series,
            last_error: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("glfs-cq".into())
            .spawn(move || completion_loop(&s))?;
        Ok(GlfsBackend { shared })
    }
}

impl Shared {
    fn note(&self, r: Result<(), Errno>) {
        match r {
            Ok(()) => {
                if let Some(s) = &self.series {
                    s.set_up(true);
                }
            }
            Err(e) => {
                *self.last_error.lock() = Some((e, Instant::now()));
                if let Some(s) = &self.series {
                    s.error(e);
                    s.set_up(!is_connection_error(e));
                }
            }
        }
    }

    /// Start (or continue) `op` in gfapi; on a refused start, complete it with the error.
    fn issue(&self, op: Op) {
        let fd = Arc::clone(&self.fd.read());
        let offset = op.io.offset() + op.done;
        let len = op.io.len() - op.done;
        let r = match op.stage {
            Stage::Read | Stage::Write { .. } => {
                // Skip buffers a short transfer already filled (advanced to length 0). The
                // slice is the Io's own iovec vector, a heap buffer that stays where it is
                // while the Io moves into the queue's slot; gfapi copies the vector before
                // the call returns.
                let all = op.io.iovecs();
                let first = all.iter().position(|v| v.iov_len != 0).unwrap_or(all.len());
                let iov: *const [libc::iovec] = &all[first..];
                if let Stage::Write { .. } = op.stage {
                    // SAFETY: `iov` is alive (above), and the buffers it describes stay valid
                    // until the Io completes, which happens only after gfapi's completion is
                    // received (the invariant of tcmu_ring::iovecs); the initiator's data is
                    // not written while the command is in flight.
                    unsafe { self.cq.pwritev(&fd, &*iov, offset, 0, op) }
                } else {
                    // SAFETY: as above; nothing reads the buffers before completion.
                    unsafe { self.cq.preadv(&fd, &*iov, offset, op) }
                }
            }
            Stage::FuaSync | Stage::Flush => self.cq.fdatasync(&fd, op),
            Stage::Discard => self.cq.discard(&fd, offset, len, op),
            Stage::Zerofill => self.cq.zerofill(&fd, offset, len, op),
        };
        if let Err((op, e)) = r {
            self.note(Err(e));
            op.io.complete(Err(e));
        }
    }

    fn finish(&self, c: Completed<Op>) {
        let Completed {
            mut payload,
            result,
        } = c;
        let n = match result {
            Ok(n) => n as u64,
            Err(e) => {
                self.note(Err(e));
                payload.io.complete(Err(e));
                return;
            }
        };
        self.note(Ok(()));
        match payload.stage {
            Stage::Read | Stage::Write { .. } => {
                let remaining = payload.io.len() - payload.done;
                if n > 0 && n < remaining {
                    payload.io.iovecs_mut().advance(n);
                    payload.done += n;
                    return self.issue(payload);
                }
                if n == 0 && remaining > 0 {
                    if payload.stage == Stage::Read {
                        // Past the end of the file: the rest reads as zeros.
                        payload.io.buffers().zero_remaining();
                    } else {
                        return payload.io.complete(Err(Errno::EIO));
                    }
                }
                if payload.stage == (Stage::Write { fua: true }) {
                    payload.stage = Stage::FuaSync;
                    return self.issue(payload);
                }
            }
            Stage::Discard | Stage::Zerofill if payload.io.op().is_fua() => {
                // The write cache is off: the discarded or zeroed range is durable only once
                // the brick has synced it.
                payload.stage = Stage::FuaSync;
                return self.issue(payload);
            }
            Stage::FuaSync | Stage::Flush | Stage::Discard | Stage::Zerofill => {}
        }
        if let Some(s) = &self.series {
            // A FUA write's fdatasync counts in its write.
            s.observe(payload.io.op(), payload.started);
        }
        payload.io.complete(Ok(()));
    }
}

fn completion_loop(s: &Arc<Shared>) {
    loop {
        match s.cq.recv() {
            Some(c) => s.finish(c),
            None if s.shutdown.load(Ordering::Acquire) && s.cq.in_flight() == 0 => return,
            None => {}
        }
        if s.shutdown.load(Ordering::Acquire) && s.cq.in_flight() == 0 {
            return;
        }
    }
}

impl Drop for GlfsBackend {
    fn drop(&mut self) {
        // The completion thread exits once nothing is in flight; it owns what is left
        // (file, volume), so a brick that never answers delays only that thread.
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.cq.wake();
    }
}

impl Backend for GlfsBackend {
    fn describe(&self) -> String {
        format!("glfs:{}", self.shared.cfg.describe())
    }

    fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Relaxed)
    }

    fn caps(&self) -> Caps {
        Caps {
            unmap: true,
            write_zeroes: true,
            thin: true,
            non_rotational: false,
        }
    }

    fn completes_inline(&self) -> bool {
        false
    }

    /// gfapi's `lseek` with `SEEK_DATA`/`SEEK_HOLE` (the bricks' own, through the seek
    /// fop): data is allocated, a hole reads as zeros. A synchronous call to a brick, so only
    /// workers make it.
    fn allocation(&self, off: u64, len: u64) -> Result<(bool, u64), Errno> {
        let fd = Arc::clone(&self.shared.fd.read());
        super::super::allocation_by_seek(off, len, |at, data| {
            fd.seek(
                at,
                if data {
                    libc::SEEK_DATA
                } else {
                    libc::SEEK_HOLE
                },
            )
        })
    }

    /// Grow the file (never shrinks it).
    fn resize(&self, new_size: u64) -> Result<(), Errno> {
        let fd = Arc::clone(&self.shared.fd.read());
        if fd.size()? < new_size {
            fd.truncate(new_size)?;
        }
        self.shared.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }

    fn submit(&self, io: Io) {
        let stage = match io.op() {
            IoOp::Read => Stage::Read,
            IoOp::Write { fua } => Stage::Write { fua },
            IoOp::Flush => Stage::Flush,
            IoOp::Unmap { .. } | IoOp::WriteZeroes { unmap: true, .. } => Stage::Discard,
            IoOp::WriteZeroes { unmap: false, .. } => Stage::Zerofill,
            // Not offered (`atomic_compare_and_write` is false): the device's generic path.
            IoOp::CompareAndWrite { .. } => return io.complete(Err(Errno::EOPNOTSUPP)),
        };
        if io.is_empty() && matches!(stage, Stage::Read | Stage::Write { fua: false }) {
            return io.complete(Ok(()));
        }
        self.shared.issue(Op {
            io,
            stage,
            done: 0,
            started: Instant::now(),
        });
    }

    fn op_timeout(&self) -> Option<Duration> {
        Some(self.shared.vol.ping_timeout)
    }

    fn in_flight(&self) -> usize {
        self.shared.cq.in_flight()
    }

    /// `statvfs` of the volume's root: never answered from a client cache.
    fn ping(&self) -> Result<(), Errno> {
        let r = self.shared.vol.vol.statvfs("/").map(|_| ());
        self.shared.note(r);
        r
    }

    /// gfapi reconnects by itself once the bricks answer again; this checks that the
    /// volume answers and that the file handle still works, and reopens the file when the
    /// handle went bad (a brick replaced, the file recreated).
    fn reopen(&self) -> Result<(), Errno> {
        self.ping()?;
        let fd = Arc::clone(&self.shared.fd.read());
        match fd.stat() {
            Ok(_) => Ok(()),
            Err(e) if is_connection_error(e) => Err(e),
            Err(e) => {
                tracing::warn!(backend = %self.describe(), "file handle failed ({e}): reopening");
                let new = self
                    .shared
                    .vol
                    .vol
                    .open(&self.shared.cfg.path, OPEN_FLAGS)?;
                *self.shared.fd.write() = Arc::new(new);
                if let Some(s) = &self.shared.series {
                    s.reopened();
                }
                Ok(())
            }
        }
    }

    fn diagnose(&self) -> Vec<String> {
        let s = &self.shared;
        let mut v = vec![format!(
            "gluster volume {} via {}: backend tier {} s from {}; {} operation(s) in gfapi",
            s.cfg.volume,
            super::cfg::servers_list(&s.cfg.servers),
            s.vol.ping_timeout.as_secs(),
            s.vol.tier_source,
            s.cq.in_flight()
        )];
        if let Some((e, at)) = *s.last_error.lock() {
            v.push(format!(
                "last gfapi error {e} ({}) {:.1} s ago",
                e.desc(),
                at.elapsed().as_secs_f64()
            ));
        }
        v
    }
}
