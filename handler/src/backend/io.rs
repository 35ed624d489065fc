//! [`Io`]: one backend operation in flight, and the ways it comes back.
//!
//! An `Io` is moved into [`Backend::submit`](super::Backend::submit) and completed exactly
//! once with [`Io::complete`]. Where the completion goes is decided by whoever created it,
//! and the backend does not know who that is: an [`IoOwner`] the creator provides (the device
//! gives the command's own context, which knows its way home and stamps its timings), or a
//! [`Waiter`] a thread blocks on (a worker running the steps of COMPARE AND WRITE, VERIFY,
//! WRITE SAME). Nothing here allocates: the iovec vector and the owner move through and come
//! back. This module, like the rest of `backend/`, knows nothing of devices.

use nix::errno::Errno;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use tcmu_ring::IoVecs;

/// The operation an [`Io`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Read `len` bytes at `offset` into the iovecs.
    Read,
    /// Write `len` bytes at `offset` from the iovecs; with `fua`, durable before completion.
    Write {
        /// Force unit access: the data must be on stable storage when this completes.
        fua: bool,
    },
    /// Make every completed write durable (SYNCHRONIZE CACHE).
    Flush,
    /// Deallocate the range; it must read back as zeros afterwards. With `fua`, the
    /// deallocation is durable before completion (the LUN's write cache is off, and LBPRZ=1
    /// promises zeros after a power loss too).
    Unmap {
        /// The deallocation must be on stable storage when this completes.
        fua: bool,
    },
    /// Zero the range; `unmap` allows deallocating it; with `fua`, durable before completion.
    WriteZeroes {
        /// The range may be deallocated instead of written.
        unmap: bool,
        /// The zeros must be on stable storage when this completes.
        fua: bool,
    },
    /// Atomic COMPARE AND WRITE of `len` bytes at `offset`, done by the backend itself (only
    /// sent where [`Backend::atomic_compare_and_write`](super::Backend::atomic_compare_and_write)
    /// said yes). The iovecs are exactly three: the data to compare with (`len` bytes), the
    /// data to write (`len` bytes), and 8 writable bytes, aligned for a `u64`, where the
    /// backend stores, on a miscompare, the offset of the first differing byte from `offset`.
    /// A miscompare completes with `EILSEQ`; with `fua`, a written block is durable before
    /// completion.
    CompareAndWrite {
        /// Force unit access for the write half.
        fua: bool,
    },
}

impl IoOp {
    /// The names of the kinds of operation, indexed by [`IoOp::index`]: the `op` label of the
    /// backends' latency series (docs/metrics.md).
    pub const NAMES: [&'static str; 6] = [
        "read",
        "write",
        "flush",
        "unmap",
        "write_zeroes",
        "compare_and_write",
    ];

    /// The kind of operation, an index into [`IoOp::NAMES`] (flags such as `fua` aside).
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            IoOp::Read => 0,
            IoOp::Write { .. } => 1,
            IoOp::Flush => 2,
            IoOp::Unmap { .. } => 3,
            IoOp::WriteZeroes { .. } => 4,
            IoOp::CompareAndWrite { .. } => 5,
        }
    }

    /// The name of the kind of operation (`read`, `write`, `flush`, `unmap`,
    /// `write_zeroes`, `compare_and_write`).
    #[must_use]
    pub fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Whether the operation must be durable when it completes (a FUA write, or an UNMAP or
    /// WRITE ZEROES with the write cache off).
    #[must_use]
    pub fn is_fua(self) -> bool {
        matches!(
            self,
            IoOp::Write { fua: true }
                | IoOp::Unmap { fua: true }
                | IoOp::WriteZeroes { fua: true, .. }
                | IoOp::CompareAndWrite { fua: true }
        )
    }

    /// Whether the operation modifies the medium.
    #[must_use]
    pub fn is_write(self) -> bool {
        !matches!(self, IoOp::Read | IoOp::Flush)
    }
}

/// The result of an operation: `Ok` or a typed errno.
pub type IoResult = Result<(), Errno>;

/// Whoever started an [`Io`], and gets it back when the backend completes it.
///
/// The owner is boxed by its creator (a `Box<T>` becomes a `Box<dyn IoOwner>` without
/// allocating), so a command context that is already a `Box` can be its own owner.
pub trait IoOwner: Send {
    /// The operation finished with `result`; `iov` is the vector the `Io` was built with.
    /// Called exactly once per `Io`, on whichever thread completes it (a backend's callback
    /// thread, a worker, or the thread that drops a forgotten `Io`). Must not block.
    fn io_done(self: Box<Self>, result: IoResult, iov: IoVecs);
}

/// One operation handed to a backend. See the module docs.
pub struct Io {
    op: IoOp,
    offset: u64,
    len: u64,
    /// Its buffers; their validity until completion is [`IoVecs`]' invariant.
    iov: IoVecs,
    done: Option<Done>,
}

enum Done {
    /// Hand the result back to the owner.
    Owner(Box<dyn IoOwner>),
    /// Wake a worker blocked on this waiter.
    Wait(Arc<Waiter>),
}

impl Io {
    /// An operation whose completion goes to `owner` ([`IoOwner::io_done`]) with `iov`.
    pub fn new(op: IoOp, offset: u64, len: u64, iov: IoVecs, owner: Box<dyn IoOwner>) -> Io {
        Io {
            op,
            offset,
            len,
            iov,
            done: Some(Done::Owner(owner)),
        }
    }

    /// An operation whose completion wakes `waiter`; use [`Waiter::wait`] to get the result
    /// and the iovec vector back.
    pub fn for_waiter(op: IoOp, offset: u64, len: u64, iov: IoVecs, waiter: &Arc<Waiter>) -> Io {
        waiter.arm();
        Io {
            op,
            offset,
            len,
            iov,
            done: Some(Done::Wait(Arc::clone(waiter))),
        }
    }

    /// The operation.
    #[must_use]
    pub fn op(&self) -> IoOp {
        self.op
    }

    /// Byte offset on the backing store.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes (0 for [`IoOp::Flush`]).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the operation covers no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data buffers for READ and WRITE, covering exactly [`Io::len`] bytes, valid until
    /// the `Io` completes (the invariant of [`IoVecs`]).
    #[must_use]
    pub fn iovecs(&self) -> &[libc::iovec] {
        self.iov.as_slice()
    }

    /// The data buffers, for the safe copies of [`IoVecs`].
    #[must_use]
    pub fn buffers(&self) -> &IoVecs {
        &self.iov
    }

    /// The data buffers, for a backend that must advance them after a partial transfer.
    pub fn iovecs_mut(&mut self) -> &mut IoVecs {
        &mut self.iov
    }

    /// Complete the operation. Consumes the `Io`, so it happens exactly once.
    pub fn complete(mut self, result: IoResult) {
        self.finish(result);
    }

    fn finish(&mut self, result: IoResult) {
        let iov = std::mem::take(&mut self.iov);
        match self.done.take() {
            Some(Done::Owner(owner)) => owner.io_done(result, iov),
            Some(Done::Wait(w)) => w.post(result, iov),
            None => {}
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if self.done.is_some() {
            tracing::error!(op = ?self.op, offset = self.offset, "backend dropped an I/O without completing it");
            self.finish(Err(Errno::EIO));
        }
    }
}

/// A one-slot rendezvous a worker uses to wait for an [`Io`] it submitted.
#[derive(Default)]
pub struct Waiter {
    slot: Mutex<WaitSlot>,
    cv: Condvar,
}

#[derive(Default)]
struct WaitSlot {
    armed: bool,
    result: Option<(IoResult, IoVecs)>,
}

impl Waiter {
    /// A fresh waiter.
    #[must_use]
    pub fn new() -> Arc<Waiter> {
        Arc::new(Waiter::default())
    }

    fn arm(&self) {
        let mut s = self.slot.lock();
        debug_assert!(!s.armed, "a Waiter serves one Io at a time");
        s.armed = true;
        s.result = None;
    }

    fn post(&self, result: IoResult, iov: IoVecs) {
        let mut s = self.slot.lock();
        s.result = Some((result, iov));
        self.cv.notify_one();
    }

    /// Block until the armed `Io` completes; returns its result and the iovec vector.
    pub fn wait(&self) -> (IoResult, IoVecs) {
        let mut s = self.slot.lock();
        loop {
            if let Some(r) = s.result.take() {
                s.armed = false;
                return r;
            }
            self.cv.wait(&mut s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An owner that reports what it got back.
    struct Report(mpsc::Sender<(IoResult, usize)>);

    impl IoOwner for Report {
        fn io_done(self: Box<Self>, result: IoResult, iov: IoVecs) {
            let _ = self.0.send((result, iov.capacity()));
        }
    }

    #[test]
    fn the_owner_gets_the_result_and_its_iovecs_back_exactly_once() {
        let (tx, rx) = mpsc::channel();
        let io = Io::new(
            IoOp::Read,
            0,
            0,
            IoVecs::with_capacity(7),
            Box::new(Report(tx.clone())),
        );
        io.complete(Err(Errno::ENOSPC));
        assert_eq!(rx.try_recv(), Ok((Err(Errno::ENOSPC), 7)));
        // A backend that forgets its Io: the drop completes it, with EIO.
        drop(Io::new(
            IoOp::Flush,
            0,
            0,
            IoVecs::default(),
            Box::new(Report(tx)),
        ));
        assert_eq!(rx.try_recv(), Ok((Err(Errno::EIO), 0)));
        assert!(rx.try_recv().is_err(), "nothing is completed twice");
    }
}
