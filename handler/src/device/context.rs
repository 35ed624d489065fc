//! Command contexts (allocated as the queue depth grows, then reused), and how one goes to the backend and comes back.
//!
//! A context is its own [`IoOwner`]: [`Ctx::into_io`] puts it inside the [`Io`] it builds,
//! and when the backend completes that `Io` the context stamps the backend's finish time and
//! sends itself to its device thread. The backend never sees the device.

use super::link::DeviceLink;
use crate::backend::io::{Io, IoOp, IoOwner, IoResult};
use std::sync::Arc;
use tcmu_ring::{CmdCopy, IoVecs, Response};
use tcmu_scsi::cdb::Cdb;
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::sense::Sense;
use tcmu_scsi::status;

/// What the device thread writes back to the ring for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// SAM status.
    pub status: u8,
    /// Sense data for CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Valid Data-In bytes, when fewer than the buffer holds.
    pub read_len: Option<u32>,
}

impl Outcome {
    /// GOOD, no data-length adjustment.
    pub const GOOD: Outcome = Outcome {
        status: status::GOOD,
        sense: None,
        read_len: None,
    };

    /// The outcome for an error: status and sense from the one mapping in `tcmu_scsi::error`.
    #[must_use]
    pub fn error(e: ScsiError) -> Outcome {
        Outcome {
            status: e.status(),
            sense: e.sense(),
            read_len: None,
        }
    }

    /// Fill `sense_buf` and build the ring response.
    pub fn response<'a>(&self, sense_buf: &'a mut [u8; 96]) -> Response<'a> {
        let sense = match self.sense {
            Some(s) if self.status == status::CHECK_CONDITION => {
                s.to_fixed(sense_buf);
                Some(&*sense_buf)
            }
            _ => None,
        };
        Response {
            status: self.status,
            sense,
            read_len: self.read_len,
            keep_buf: false,
        }
    }
}

impl From<ScsiError> for Outcome {
    fn from(e: ScsiError) -> Outcome {
        Outcome::error(e)
    }
}

impl From<Sense> for Outcome {
    fn from(s: Sense) -> Outcome {
        Outcome::error(ScsiError::from(s))
    }
}

/// Where a context is when it comes back to the device thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `outcome` is final.
    Done,
    /// A single backend operation ran; turn `backend_result` into the outcome.
    Backend {
        /// The operation modified the medium (selects the error sense).
        is_write: bool,
        /// Valid Data-In bytes when the buffer is longer than the transfer.
        read_len: Option<u32>,
    },
}

/// One command in flight. Allocated once per pool slot (see [`CtxPool`]) and reused.
pub struct Ctx {
    /// Index of this context in its device's pool.
    pub slot: u16,
    /// The command as copied out of the ring.
    pub cmd: CmdCopy,
    /// The decoded CDB (valid once dispatched).
    pub cdb: Cdb,
    /// Scratch iovecs for the backend (keeps its capacity).
    pub iov: IoVecs,
    /// Result of the last backend operation.
    pub backend_result: IoResult,
    /// How to finish the command.
    pub stage: Stage,
    /// The final outcome once `stage` is `Done`.
    pub outcome: Outcome,
    /// This context holds an entry in the device's range lock.
    pub range_locked: bool,
    /// When the command was read from the ring, handed to the backend, and completed by it
    /// (per-stage accounting; None when accounting is off or the stage was not used).
    pub stamps: Stamps,
    /// The command's operation class for metrics (set when it is routed).
    pub class: tcmu_warden_supervisor::metrics::OpClass,
    /// How far a multi-step command got, between the turns a worker gives it.
    pub progress: Progress,
    /// The device to return to, held only while the context is inside an [`Io`] (a context
    /// waiting in the device's completion channel must not hold the device that owns the
    /// channel).
    home: Option<Arc<DeviceLink>>,
}

/// Where a multi-step command stands between two turns on a worker (reset when it finishes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// When its first step started.
    pub started: Option<std::time::Instant>,
    /// Bytes (or, for UNMAP, descriptors) done.
    pub done: u64,
}

/// A device's command contexts: allocated in slabs as the queue depth the device sees grows,
/// up to `total` (what the ring and `max_inflight` allow), and recycled, never freed while
/// the device runs. A device that only ever sees queue depth 1 holds [`FIRST_SLAB`]
/// contexts, not `total`.
///
/// [`CtxPool::len`] counts the contexts *available*: free ones plus those not allocated yet,
/// so `total - len()` is the number in use, as with a fully preallocated list.
pub struct CtxPool {
    // Boxed on purpose: a context moves through channels and threads as one pointer.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Ctx>>,
    /// Contexts allocated so far (slots `0..allocated`).
    allocated: usize,
    total: usize,
}

/// Contexts allocated when a device starts, and the smallest slab.
pub const FIRST_SLAB: usize = 4;

impl CtxPool {
    /// A pool of at most `total` contexts (at most 65536), [`FIRST_SLAB`] of them allocated now.
    #[must_use]
    pub fn new(total: usize) -> CtxPool {
        let total = total.min(usize::from(u16::MAX) + 1);
        let mut p = CtxPool {
            free: Vec::with_capacity(total),
            allocated: 0,
            total,
        };
        p.grow(FIRST_SLAB);
        p
    }

    /// Allocate up to `n` more contexts into the free list.
    fn grow(&mut self, n: usize) {
        let end = (self.allocated + n).min(self.total);
        // Newest last, so the lowest slots are used first.
        for slot in (self.allocated..end).rev() {
            self.free
                .push(Ctx::new(u16::try_from(slot).unwrap_or(u16::MAX)));
        }
        self.allocated = end;
    }

    /// A free context; when none is free and fewer than `total` exist, a new slab as large
    /// as what is allocated (the depth doubles) is allocated first.
    pub fn pop(&mut self) -> Option<Box<Ctx>> {
        if self.free.is_empty() && self.allocated < self.total {
            self.grow(self.allocated.max(FIRST_SLAB));
        }
        self.free.pop()
    }

    /// Give a context back.
    pub fn push(&mut self, ctx: Box<Ctx>) {
        self.free.push(ctx);
    }

    /// Contexts available: free plus not yet allocated.
    #[must_use]
    pub fn len(&self) -> usize {
        self.free.len() + (self.total - self.allocated)
    }

    /// No context available.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Contexts allocated so far.
    #[must_use]
    pub fn allocated(&self) -> usize {
        self.allocated
    }
}

/// Per-stage timestamps of one command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamps {
    /// Read from the ring.
    pub read: Option<std::time::Instant>,
    /// Handed to the backend (or the first backend step).
    pub submit: Option<std::time::Instant>,
    /// Completed by the backend (or the last step).
    pub done: Option<std::time::Instant>,
    /// Parked behind another command's LBA range (see `range_lock`).
    pub parked: Option<std::time::Instant>,
    /// Taken out of the parked list to be dispatched.
    pub unparked: Option<std::time::Instant>,
    /// Queued for a worker.
    pub queued: Option<std::time::Instant>,
}

impl Ctx {
    /// A fresh context for pool slot `slot`.
    #[must_use]
    pub fn new(slot: u16) -> Box<Ctx> {
        Box::new(Ctx {
            slot,
            cmd: CmdCopy::new(),
            cdb: Cdb::TestUnitReady,
            iov: IoVecs::with_capacity(64),
            backend_result: Ok(()),
            stage: Stage::Done,
            outcome: Outcome::GOOD,
            range_locked: false,
            stamps: Stamps::default(),
            class: tcmu_warden_supervisor::metrics::OpClass::Other,
            progress: Progress::default(),
            home: None,
        })
    }

    /// Hand the command to the backend as one operation: the `Io` takes this context's
    /// iovecs (`self.iov`) and the context itself, which comes back to `link`'s device thread
    /// with the result when the backend completes it. Stamps the submit time when the device
    /// accounts.
    #[must_use]
    pub fn into_io(
        mut self: Box<Self>,
        op: IoOp,
        offset: u64,
        len: u64,
        link: Arc<DeviceLink>,
    ) -> Io {
        if link.accounting {
            self.stamps.submit = Some(std::time::Instant::now());
        }
        let iov = std::mem::take(&mut self.iov);
        self.home = Some(link);
        Io::new(op, offset, len, iov, self)
    }

    /// Finish with `outcome`.
    pub fn done(&mut self, outcome: Outcome) {
        self.stage = Stage::Done;
        self.outcome = outcome;
    }
}

impl IoOwner for Ctx {
    fn io_done(mut self: Box<Self>, result: IoResult, iov: IoVecs) {
        self.iov = iov;
        self.backend_result = result;
        let Some(link) = self.home.take() else {
            // Only `into_io` builds an `Io` owned by a context, and it sets `home`.
            tracing::error!(
                cmd_id = self.cmd.cmd_id,
                "backend completion of a context with no device"
            );
            return;
        };
        if link.accounting {
            self.stamps.done = Some(std::time::Instant::now());
        }
        link.complete_from_backend(self);
    }
}
