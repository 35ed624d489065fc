//! Execution of data commands on a worker thread.
//!
//! READ, WRITE and SYNCHRONIZE CACHE become one backend operation whose completion goes
//! straight back to the device thread. The multi-step commands (COMPARE AND WRITE, WRITE SAME,
//! UNMAP, VERIFY, WRITE AND VERIFY) run here step by step, the worker waiting for each step,
//! and finish with an outcome. Every path ends with the context handed back exactly once.
//!
//! A multi-step command over a long range runs at most [`TURN_STEPS`] steps, or
//! [`TURN_TIME`], per turn ([`run_turn`]): between turns it goes back to the tail of its device's queue in the pool,
//! so it never holds a thread while other commands wait, and before each turn it checks
//! whether it was aborted (a TMR, or completed at its deadline by the device thread) or has
//! passed the device's deadline, and stops if so.

use super::caw_retry;
use super::context::{Ctx, Outcome, Progress, Stage};
use super::link::DeviceLink;
use super::warm::resident;
use crate::backend::io::{Io, IoResult, Waiter};
use crate::backend::IoOp;
use std::sync::Arc;
use tcmu_ring::{DataSeg, IoVecs};
use tcmu_scsi::cdb::{Cdb, Rw};
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::params;
use tcmu_scsi::sense::Sense;

/// One data command for a worker.
pub struct Job {
    /// The command; the worker owns it until it hands it back.
    pub ctx: Box<Ctx>,
    /// The device it belongs to.
    pub link: Arc<DeviceLink>,
}

/// Most steps (backend operations of a chunked command) one turn of a worker runs before
/// the command goes back to the queue.
pub const TURN_STEPS: u64 = 8;

/// A turn also ends after the step that passes this time (a slow backend).
pub const TURN_TIME: std::time::Duration = std::time::Duration::from_millis(20);

/// Per-worker buffers, allocated the first time the worker runs a command that needs them.
pub struct WorkerState {
    /// Bounce buffer for reads that are compared or patterns that are replicated.
    pub scratch: Vec<u8>,
    /// Second buffer for the data a comparison is made against.
    pub compare: Vec<u8>,
    /// Iovecs for operations the worker waits on.
    pub iov: IoVecs,
    /// Where those operations complete.
    pub waiter: Arc<Waiter>,
    /// Size of `scratch` and `compare` once allocated.
    bytes: usize,
    /// When the current turn started.
    turn: std::time::Instant,
}

impl WorkerState {
    /// Buffers of `bytes` each, allocated (and made resident) on first need: a worker that
    /// only ever runs READ and WRITE never holds them.
    #[must_use]
    pub fn new(bytes: usize) -> WorkerState {
        WorkerState {
            scratch: Vec::new(),
            compare: Vec::new(),
            iov: IoVecs::with_capacity(256),
            waiter: Waiter::new(),
            bytes,
            turn: std::time::Instant::now(),
        }
    }

    /// Whether the current turn has run its steps: [`TURN_STEPS`] of them, or at least one
    /// and [`TURN_TIME`].
    fn turn_over(&self, steps: u64) -> bool {
        steps >= TURN_STEPS || (steps > 0 && self.turn.elapsed() >= TURN_TIME)
    }

    /// Allocate the buffers if not done yet.
    fn ready(&mut self) {
        if self.scratch.len() < self.bytes {
            self.scratch = resident(self.bytes);
        }
        if self.compare.len() < self.bytes {
            self.compare = resident(self.bytes);
        }
    }
}

/// Run one job to the point where its context is on its way back (every turn of a
/// multi-step command, one after the other).
pub fn run(job: Job, w: &mut WorkerState) {
    let mut job = job;
    while let Some(again) = run_turn(job, w) {
        job = again;
    }
}

/// Run one turn of a job: a READ, WRITE or SYNCHRONIZE CACHE whole; a multi-step command up
/// to [`TURN_STEPS`] steps. Returns the job when it has more to do: queue it again.
pub fn run_turn(job: Job, w: &mut WorkerState) -> Option<Job> {
    let Job { mut ctx, link } = job;
    if link
        .aborted
        .get(usize::from(ctx.slot))
        .is_some_and(|f| f.swap(false, std::sync::atomic::Ordering::SeqCst))
    {
        // Aborted by a TMR, or completed at its deadline by the device thread (which then
        // ignores this outcome): stop here, before the next step.
        ctx.progress = Progress::default();
        ctx.done(ScsiError::TaskAborted.into());
        link.complete_from_backend(ctx);
        return None;
    }
    let bs = u64::from(link.lun.read().block_size);
    match ctx.cdb {
        Cdb::Read(rw) => single(ctx, link, IoOp::Read, rw, bs),
        Cdb::Write(rw) => {
            let fua = rw.fua || !link.lun.read().write_cache;
            single(ctx, link, IoOp::Write { fua }, rw, bs);
        }
        Cdb::SyncCache { .. } => {
            ctx.stage = Stage::Backend {
                is_write: true,
                read_len: None,
            };
            ctx.iov.clear();
            let b = link.backend();
            b.submit(ctx.into_io(IoOp::Flush, 0, 0, link));
        }
        Cdb::ExtendedCopy { .. } | Cdb::ReceiveCopyResults { .. } => {
            // The copy goes through the bounce buffer, allocated on first need.
            w.ready();
            super::xcopy::run(ctx, link, w);
        }
        Cdb::GetLbaStatus { .. } => super::lba_status::run(ctx, link),
        cdb => {
            let now = std::time::Instant::now();
            let first = ctx.progress.started.is_none();
            let started = *ctx.progress.started.get_or_insert(now);
            if first && link.accounting {
                ctx.stamps.submit = Some(now);
            }
            let deadline = link.tunables.get().command_deadline;
            let since = ctx.stamps.read.unwrap_or(started);
            let r = if deadline.is_some_and(|d| now.saturating_duration_since(since) >= d) {
                // Past the deadline between two steps (the device thread could not complete
                // it early): end it with the status a deadline gives.
                Err(ScsiError::from_errno(libc::ETIMEDOUT, true))
            } else {
                w.ready();
                w.turn = now;
                let mut done = ctx.progress.done;
                let r = multi_step(&cdb, &ctx, &link, w, bs, &mut done);
                ctx.progress.done = done;
                r
            };
            let outcome = match r {
                Ok(Step::More) => return Some(Job { ctx, link }),
                Ok(Step::Done) => Outcome::GOOD,
                Err(e) => Outcome::error(e),
            };
            if link.accounting {
                ctx.stamps.done = Some(std::time::Instant::now());
            }
            ctx.progress = Progress::default();
            ctx.done(outcome);
            link.complete_from_backend(ctx);
        }
    }
    None
}

/// Whether a multi-step command finished or has more steps for another turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Done,
    More,
}

/// One READ or WRITE straight between the ring's data area and the backend.
fn single(mut ctx: Box<Ctx>, link: Arc<DeviceLink>, op: IoOp, rw: Rw, bs: u64) {
    let (off, len) = prepare_single(&mut ctx, &link, op, rw, bs);
    let b = link.backend();
    b.submit(ctx.into_io(op, off, len, link));
}

/// Make a READ or WRITE one backend operation: its stage, its iovecs (`ctx.iov`) over the
/// bytes transferred, and, for a READ into a longer buffer, the rest of the buffer zeroed.
/// Returns the operation's byte offset and length. Shared by the workers and the device
/// thread's io_uring (see `super::uring`).
pub(super) fn prepare_single(
    ctx: &mut Ctx,
    link: &DeviceLink,
    op: IoOp,
    rw: Rw,
    bs: u64,
) -> (u64, u64) {
    let have = ctx.cmd.data_len();
    // A READ into a shorter buffer transfers what fits (the initiator sees the residual).
    let len = (u64::from(rw.blocks) * bs).min(have);
    if op == IoOp::Read && have > len {
        // Never hand back stale data from earlier commands past the transfer, even when the
        // kernel cannot take read_len.
        link.data.fill(ctx.cmd.data_out(), len, have - len, 0);
    }
    let read_len = if op == IoOp::Read && have > len {
        u32::try_from(len).ok()
    } else {
        None
    };
    ctx.stage = Stage::Backend {
        is_write: op.is_write(),
        read_len,
    };
    let Ctx { cmd, iov, .. } = ctx;
    iov.clear();
    link.data.iovecs(cmd.data_out(), 0, len, iov);
    (rw.lba * bs, len)
}

/// Where the buffers of a waited-on operation come from.
enum Buf<'a> {
    /// The command's data in the ring, from a byte offset.
    Ring(&'a [DataSeg], u64),
    /// The worker's scratch buffer.
    Scratch,
    /// No data (UNMAP, WRITE ZEROES).
    None,
}

fn io(
    w: &mut WorkerState,
    link: &DeviceLink,
    op: IoOp,
    off: u64,
    len: u64,
    buf: Buf<'_>,
) -> IoResult {
    let mut iov = std::mem::take(&mut w.iov);
    iov.clear();
    match buf {
        Buf::Ring(segs, skip) => link.data.iovecs(segs, skip, len, &mut iov),
        // SAFETY: the worker keeps `scratch` alive and in place, and does not touch it, until
        // the Io completes: it waits for it just below and clears `iov` before it reads
        // `scratch`.
        Buf::Scratch => unsafe {
            iov.push_buffer(&mut w.scratch, usize::try_from(len).unwrap_or(0));
        },
        Buf::None => {}
    }
    link.backend()
        .submit(Io::for_waiter(op, off, len, iov, &w.waiter));
    let (r, mut iov) = w.waiter.wait();
    // Done with these buffers: forget them (and the mapping) before `scratch` is read.
    iov.clear();
    w.iov = iov;
    r
}

fn errno(r: IoResult, is_write: bool) -> Result<(), ScsiError> {
    r.map_err(|e| ScsiError::from_errno(e as i32, is_write))
}

/// Chunk size for operations bounced through the worker's buffers: whole blocks.
fn chunk_len(w: &WorkerState, bs: u64) -> u64 {
    let cap = w.scratch.len().min(w.compare.len()) as u64;
    (cap / bs).max(1) * bs
}

fn multi_step(
    cdb: &Cdb,
    ctx: &Ctx,
    link: &DeviceLink,
    w: &mut WorkerState,
    bs: u64,
    done: &mut u64,
) -> Result<Step, ScsiError> {
    let segs = ctx.cmd.data_out();
    match *cdb {
        Cdb::CompareAndWrite { lba, blocks, fua } => {
            let len = u64::from(blocks) * bs;
            if len > chunk_len(w, bs) {
                return Err(Sense::invalid_field_in_cdb(13, None).into());
            }
            compare_and_write(
                ctx,
                link,
                w,
                lba * bs,
                len,
                fua || !link.lun.read().write_cache,
            )
            .map(|()| Step::Done)
        }
        Cdb::WriteSame {
            lba,
            blocks,
            unmap,
            ndob,
            ..
        } => write_same(
            ctx,
            link,
            w,
            (lba, u64::from(blocks)),
            unmap,
            ndob,
            bs,
            done,
        ),
        Cdb::Unmap { param_len, .. } => {
            // The parameter list lives in the compare buffer, moved out (no allocation) so
            // the worker can run the unmaps while iterating it.
            let mut list = std::mem::take(&mut w.compare);
            let r = unmap(segs, param_len, &mut list, link, w, bs, done);
            w.compare = list;
            r
        }
        Cdb::Verify {
            lba,
            blocks,
            bytchk,
        } => verify(
            segs,
            link,
            w,
            lba * bs,
            u64::from(blocks) * bs,
            bytchk != 0,
            bs,
            done,
        ),
        Cdb::WriteAndVerify { rw, .. } => {
            let len = u64::from(rw.blocks) * bs;
            errno(
                io(
                    w,
                    link,
                    IoOp::Write { fua: true },
                    rw.lba * bs,
                    len,
                    Buf::Ring(segs, 0),
                ),
                true,
            )?;
            // The Data-Out buffer bounds it (the ring's data area): one turn.
            let mut at = 0;
            while verify(segs, link, w, rw.lba * bs, len, true, bs, &mut at)? == Step::More {}
            Ok(Step::Done)
        }
        _ => Err(Sense::internal_target_failure().into()),
    }
}

fn compare_and_write(
    ctx: &Ctx,
    link: &DeviceLink,
    w: &mut WorkerState,
    off: u64,
    len: u64,
    fua: bool,
) -> Result<(), ScsiError> {
    let segs = ctx.cmd.data_out();
    let n = usize::try_from(len).map_err(|_| Sense::internal_target_failure())?;
    // Fingerprint of the whole Data-Out buffer, to recognise a retry of this very command
    // (see `caw_retry`). COMPARE AND WRITE buffers are small: two passes cost little.
    link.data.copy_to_slice(segs, len, &mut w.compare[..n]);
    let fp = caw_retry::fnv(caw_retry::FNV_START, &w.compare[..n]);
    link.data.copy_to_slice(segs, 0, &mut w.compare[..n]);
    let fp = caw_retry::fnv(fp, &w.compare[..n]);
    link.caw.started(ctx.slot, fp);
    // The backend's own atomic COMPARE AND WRITE where it takes this one (RBD: one 512-byte
    // sector, docs/rbd.md); `compare` holds the compare half now, and 8 bytes after it.
    let native = w.compare.len() >= n + 8 && link.backend().atomic_compare_and_write(off, len);
    let r = if native {
        native_compare_and_write(ctx, link, w, off, len, fua, fp)
    } else {
        compare_then_write(ctx, link, w, off, len, fua, fp)
    };
    link.caw.started(ctx.slot, 0);
    r
}

/// COMPARE AND WRITE done by the backend ([`IoOp::CompareAndWrite`]): the compare half in
/// `compare[..n]`, the write half copied to `scratch[..n]`, the mismatch offset coming back
/// in `compare[n..n+8]`. A miscompare is MISCOMPARE with that offset, unless this is the retry
/// of one answered at its deadline whose write landed (as in [`compare_then_write`]).
fn native_compare_and_write(
    ctx: &Ctx,
    link: &DeviceLink,
    w: &mut WorkerState,
    off: u64,
    len: u64,
    fua: bool,
    fp: u64,
) -> Result<(), ScsiError> {
    let segs = ctx.cmd.data_out();
    let n = usize::try_from(len).map_err(|_| Sense::internal_target_failure())?;
    link.data.copy_to_slice(segs, len, &mut w.scratch[..n]);
    let mut iov = std::mem::take(&mut w.iov);
    iov.clear();
    let (cmp, out) = w.compare.split_at_mut(n);
    out[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
    // SAFETY: the worker keeps `compare` and `scratch` alive and in place, and does not touch
    // them, until the Io completes: it waits for it just below and clears `iov` before it
    // reads them.
    unsafe {
        iov.push_buffer(cmp, n);
        iov.push_buffer(&mut w.scratch, n);
        iov.push_buffer(out, 8);
    }
    link.backend().submit(Io::for_waiter(
        IoOp::CompareAndWrite { fua },
        off,
        len,
        iov,
        &w.waiter,
    ));
    let (r, mut iov) = w.waiter.wait();
    iov.clear();
    w.iov = iov;
    match r {
        Err(nix::errno::Errno::EILSEQ) => {}
        r => return errno(r, true),
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&w.compare[n..n + 8]);
    let at = u64::from_ne_bytes(at);
    let bs = u64::from(link.lun.read().block_size);
    let now = std::time::Instant::now();
    if at >= len || link.caw.remembers(off / bs, fp, now) {
        // Read what the medium holds now: to find the offset the backend did not give, or to
        // see whether the remembered first attempt of this command was applied.
        errno(io(w, link, IoOp::Read, off, len, Buf::Scratch), false)?;
        link.data.copy_to_slice(segs, len, &mut w.compare[..n]);
        if w.scratch[..n] == w.compare[..n] && link.caw.is_retry_of_applied(off / bs, fp, now) {
            tracing::warn!(device = %link.name, lba = off / bs, "retried COMPARE AND WRITE: its first attempt, answered at the deadline, had been applied; reporting GOOD instead of MISCOMPARE");
            return Ok(());
        }
        if at >= len {
            link.data.copy_to_slice(segs, 0, &mut w.compare[..n]);
            let i = first_difference(&w.scratch[..n], &w.compare[..n]).unwrap_or(0);
            return Err(Sense::miscompare(i as u64).into());
        }
    }
    Err(Sense::miscompare(at).into())
}

fn compare_then_write(
    ctx: &Ctx,
    link: &DeviceLink,
    w: &mut WorkerState,
    off: u64,
    len: u64,
    fua: bool,
    fp: u64,
) -> Result<(), ScsiError> {
    let segs = ctx.cmd.data_out();
    let n = usize::try_from(len).map_err(|_| Sense::internal_target_failure())?;
    errno(io(w, link, IoOp::Read, off, len, Buf::Scratch), false)?;
    if let Some(i) = first_difference(&w.scratch[..n], &w.compare[..n]) {
        // Is this the retry of one completed at its deadline whose write was applied?
        link.data.copy_to_slice(segs, len, &mut w.compare[..n]);
        let bs = u64::from(link.lun.read().block_size);
        if w.scratch[..n] == w.compare[..n]
            && link
                .caw
                .is_retry_of_applied(off / bs, fp, std::time::Instant::now())
        {
            tracing::warn!(device = %link.name, lba = off / bs, "retried COMPARE AND WRITE: its first attempt, answered at the deadline, had been applied; reporting GOOD instead of MISCOMPARE");
            return Ok(());
        }
        return Err(Sense::miscompare(i as u64).into());
    }
    errno(
        io(w, link, IoOp::Write { fua }, off, len, Buf::Ring(segs, len)),
        true,
    )
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Read `[off, off+len)` in chunks from `*done` on, for one turn (`WorkerState::turn_over`); with
/// `compare`, check it against the Data-Out buffer.
#[allow(clippy::too_many_arguments)]
fn verify(
    segs: &[DataSeg],
    link: &DeviceLink,
    w: &mut WorkerState,
    off: u64,
    len: u64,
    compare: bool,
    bs: u64,
    progress: &mut u64,
) -> Result<Step, ScsiError> {
    let chunk = chunk_len(w, bs);
    let mut done = *progress;
    let mut steps = 0;
    while done < len {
        if w.turn_over(steps) {
            *progress = done;
            return Ok(Step::More);
        }
        steps += 1;
        let n = chunk.min(len - done);
        let nu = usize::try_from(n).map_err(|_| Sense::internal_target_failure())?;
        errno(io(w, link, IoOp::Read, off + done, n, Buf::Scratch), false)?;
        if compare {
            link.data.copy_to_slice(segs, done, &mut w.compare[..nu]);
            if let Some(i) = first_difference(&w.scratch[..nu], &w.compare[..nu]) {
                return Err(Sense::miscompare(done + i as u64).into());
            }
        }
        done += n;
    }
    *progress = done;
    Ok(Step::Done)
}

/// WRITE SAME of `(lba, blocks)`: one unmap or write-zeroes operation when the backend can,
/// else the block replicated and written chunk by chunk from `*progress` on, for one turn.
#[allow(clippy::too_many_arguments)]
fn write_same(
    ctx: &Ctx,
    link: &DeviceLink,
    w: &mut WorkerState,
    (lba, blocks): (u64, u64),
    unmap: bool,
    ndob: bool,
    bs: u64,
    progress: &mut u64,
) -> Result<Step, ScsiError> {
    let bsu = usize::try_from(bs).map_err(|_| Sense::internal_target_failure())?;
    if ndob {
        w.compare[..bsu].fill(0);
    } else {
        link.data
            .copy_to_slice(ctx.cmd.data_out(), 0, &mut w.compare[..bsu]);
    }
    let (off, len) = (lba * bs, blocks * bs);
    let caps = link.backend().caps();
    // UNMAP=1 lets the device server unmap instead of writing, whatever the block holds
    // (SBC-4 WRITE SAME: write or unmap each LBA); LIO unmaps, and with LBPRZ=1 the range
    // reads back as zeros (`docs/conformance.md`).
    // With the write cache off the zeroing must be durable before GOOD (docs/DESIGN.md).
    let fua = !link.lun.read().write_cache;
    let zeroing = if unmap && caps.unmap {
        Some(IoOp::Unmap { fua })
    } else if caps.write_zeroes && w.compare[..bsu].iter().all(|&b| b == 0) {
        Some(IoOp::WriteZeroes { unmap, fua })
    } else {
        None
    };
    if let Some(op) = zeroing {
        return errno(io(w, link, op, off, len, Buf::None), true).map(|()| Step::Done);
    }
    // Replicate the block through the scratch buffer and write it chunk by chunk.
    let chunk = chunk_len(w, bs);
    let cu = usize::try_from(chunk).map_err(|_| Sense::internal_target_failure())?;
    for at in (0..cu).step_by(bsu) {
        let (src, dst) = (&w.compare[..bsu], &mut w.scratch[at..at + bsu]);
        dst.copy_from_slice(src);
    }
    let fua = !link.lun.read().write_cache;
    let mut done = *progress;
    let mut steps = 0;
    while done < len {
        if w.turn_over(steps) {
            *progress = done;
            return Ok(Step::More);
        }
        steps += 1;
        let n = chunk.min(len - done);
        errno(
            io(w, link, IoOp::Write { fua }, off + done, n, Buf::Scratch),
            true,
        )?;
        done += n;
    }
    *progress = done;
    Ok(Step::Done)
}

/// UNMAP: the descriptors from number `*progress` on, for one turn.
fn unmap(
    segs: &[DataSeg],
    param_len: u16,
    buf: &mut [u8],
    link: &DeviceLink,
    w: &mut WorkerState,
    bs: u64,
    progress: &mut u64,
) -> Result<Step, ScsiError> {
    let n = usize::from(param_len).min(buf.len());
    let got = link.data.copy_to_slice(segs, 0, &mut buf[..n]);
    let descriptors = {
        let lun = link.lun.read();
        params::parse_unmap(&buf[..got], &lun).map_err(ScsiError::from)?
    };
    let skip = usize::try_from(*progress).unwrap_or(usize::MAX);
    for (i, (lba, nb)) in descriptors.enumerate().skip(skip) {
        if w.turn_over((i - skip) as u64) {
            *progress = i as u64;
            return Ok(Step::More);
        }
        let r = io(
            w,
            link,
            IoOp::Unmap {
                fua: !link.lun.read().write_cache,
            },
            lba * bs,
            u64::from(nb) * bs,
            Buf::None,
        );
        errno(r, true)?;
    }
    Ok(Step::Done)
}
