//! The copy manager: EXTENDED COPY (LID1) between any LUNs this daemon serves, and RECEIVE
//! COPY RESULTS (COPY STATUS), on a worker thread (see `docs/conformance.md`).
//!
//! Every device registers here when it starts ([`register`]); a copy names its source and
//! destination by the NAA designator VPD 83h reports for them, and finds them in this
//! registry, the LUN that received the command first (as LIO's copy manager does). A LUN not
//! served here gets COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE, so the initiator falls
//! back to reading and writing itself.
//!
//! A segment is copied in chunks of the worker's scratch buffer: read from the source's
//! backend, written to the destination's. Between chunks the copy checks the command's abort
//! flag, which a task abort raises, and the device thread when it completes the command at its
//! deadline, and stops with TASK ABORTED. It never holds the device thread: other commands keep flowing while it runs.
//! Between two file-backed LUNs each chunk is copied by the kernel (`copy_file_range`,
//! [`super::file_copy`]) until it refuses, and then through the bounce buffer.

use super::context::{Ctx, Outcome};
use super::exec::WorkerState;
use super::link::DeviceLink;
use crate::backend::io::{Io, IoResult};
use crate::backend::{Backend, IoOp};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use tcmu_scsi::cdb::Cdb;
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::params::xcopy::{self, CopyList, CopyStatus};
use tcmu_scsi::sense::Sense;
use tcmu_scsi::status;

/// One served device and the status of its identified copies, by LIST IDENTIFIER.
struct Served {
    link: Weak<DeviceLink>,
    copies: HashMap<u8, CopyStatus>,
}

/// Every device this process serves (dead ones pruned on the next registration).
static SERVED: Mutex<Vec<Served>> = Mutex::new(Vec::new());

fn served() -> std::sync::MutexGuard<'static, Vec<Served>> {
    // A panic elsewhere while the lock was held leaves consistent data: plain inserts.
    SERVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Make `link` reachable as a copy source or destination.
pub fn register(link: &Arc<DeviceLink>) {
    let mut s = served();
    s.retain(|e| e.link.strong_count() > 0);
    s.push(Served {
        link: Arc::downgrade(link),
        copies: HashMap::new(),
    });
}

/// The served device whose NAA designator is `naa`, `local` first.
fn find(naa: &[u8; 16], local: &Arc<DeviceLink>) -> Option<Arc<DeviceLink>> {
    if local.lun.read().naa_designator() == *naa {
        return Some(Arc::clone(local));
    }
    served()
        .iter()
        .filter_map(|e| e.link.upgrade())
        .find(|l| l.lun.read().naa_designator() == *naa)
}

fn with_copies<T>(link: &Arc<DeviceLink>, f: impl FnOnce(&mut HashMap<u8, CopyStatus>) -> T) -> T {
    let mut s = served();
    let me = Arc::downgrade(link);
    if let Some(e) = s.iter_mut().find(|e| Weak::ptr_eq(&e.link, &me)) {
        return f(&mut e.copies);
    }
    // A device not started through `device::spawn` (never in the daemon): keep its copies
    // all the same.
    s.push(Served {
        link: me,
        copies: HashMap::new(),
    });
    let last = s.len() - 1;
    f(&mut s[last].copies)
}

/// Run an EXTENDED COPY or RECEIVE COPY RESULTS (COPY STATUS) job and hand the context back.
pub fn run(mut ctx: Box<Ctx>, link: Arc<DeviceLink>, w: &mut WorkerState) {
    if link.accounting {
        ctx.stamps.submit = Some(std::time::Instant::now());
    }
    let outcome = match ctx.cdb {
        Cdb::ExtendedCopy { param_len } => match extended_copy(&ctx, &link, w, param_len) {
            Ok(()) => Outcome::GOOD,
            Err(e) => Outcome::error(e),
        },
        Cdb::ReceiveCopyResults {
            list_id, alloc_len, ..
        } => copy_status(&ctx, &link, list_id, alloc_len),
        _ => Outcome::error(Sense::internal_target_failure().into()),
    };
    if link.accounting {
        ctx.stamps.done = Some(std::time::Instant::now());
    }
    ctx.done(outcome);
    link.complete_from_backend(ctx);
}

/// Write `answer` (cut to `alloc_len` and the buffer) as the Data-In of `ctx`, zeroing the
/// rest of the buffer, and say how much is valid.
pub fn data_in(ctx: &Ctx, link: &DeviceLink, answer: &[u8], alloc_len: u64) -> Outcome {
    let segs = ctx.cmd.data_out();
    let have = ctx.cmd.data_len();
    let n = (answer.len() as u64).min(alloc_len).min(have);
    let nu = usize::try_from(n).unwrap_or(0);
    link.data.copy_from_slice(segs, 0, &answer[..nu]);
    if have > n {
        link.data.fill(segs, n, have - n, 0);
    }
    Outcome {
        status: status::GOOD,
        sense: None,
        read_len: if n < have {
            u32::try_from(n).ok()
        } else {
            None
        },
    }
}

fn copy_status(ctx: &Ctx, link: &Arc<DeviceLink>, list_id: u8, alloc_len: u32) -> Outcome {
    // The status of a finished copy is reported once and then discarded (SPC-4, RECEIVE COPY
    // RESULTS COPY STATUS: discarded when read with its list identifier); a running copy's
    // is kept for the next query.
    let held = with_copies(link, |c| {
        let s = c.get(&list_id).copied();
        if s.is_some_and(|s| s.state != CopyStatus::IN_PROGRESS) {
            c.remove(&list_id);
        }
        s
    });
    let Some(s) = held else {
        // No copy with this list identifier is known (SPC-4 6.18.3).
        return Outcome::error(Sense::invalid_field_in_cdb(2, None).into());
    };
    let mut out = [0u8; 12];
    let n = s.encode(&mut out);
    data_in(ctx, link, &out[..n], u64::from(alloc_len))
}

fn extended_copy(
    ctx: &Ctx,
    link: &Arc<DeviceLink>,
    w: &mut WorkerState,
    param_len: u32,
) -> Result<(), ScsiError> {
    // The header and the longest descriptor lists accepted; anything longer is refused by
    // the parser from the header alone.
    let mut buf = [0u8; xcopy::HEADER_LEN + xcopy::MAX_DESCRIPTOR_LIST_LEN as usize];
    let want = u64::from(param_len)
        .min(ctx.cmd.data_len())
        .min(buf.len() as u64);
    let got = link.data.copy_to_slice(
        ctx.cmd.data_out(),
        0,
        &mut buf[..usize::try_from(want).unwrap_or(0)],
    );
    let list = xcopy::parse_extended_copy(&buf[..got])?;
    let keep = list.usage.keeps_status();
    if keep {
        let busy = with_copies(link, |c| {
            let running = c
                .get(&list.list_id)
                .is_some_and(|s| s.state == CopyStatus::IN_PROGRESS);
            if !running {
                c.insert(
                    list.list_id,
                    CopyStatus {
                        state: CopyStatus::IN_PROGRESS,
                        segments: 0,
                        bytes: 0,
                    },
                );
            }
            running
        });
        if busy {
            return Err(Sense::operation_in_progress().into());
        }
    }
    let mut st = CopyStatus {
        state: CopyStatus::IN_PROGRESS,
        segments: 0,
        bytes: 0,
    };
    let r = copy_segments(&list, ctx.slot, link, w, &mut st);
    if keep {
        st.state = if r.is_ok() {
            CopyStatus::DONE
        } else {
            CopyStatus::FAILED
        };
        // A copy that failed before it moved a block (an unreachable or unusable target, an
        // abort before the first chunk) keeps no status: its CHECK CONDITION said all there
        // is, and SPC-4 leaves how long a status is kept to the copy manager
        // (docs/conformance.md, "RECEIVE COPY RESULTS").
        let moved = st.bytes > 0 || st.segments > 0;
        with_copies(link, |c| {
            if r.is_ok() || moved {
                c.insert(list.list_id, st);
            } else {
                c.remove(&list.list_id);
            }
        });
    }
    r
}

fn copy_segments(
    list: &CopyList,
    slot: u16,
    link: &Arc<DeviceLink>,
    w: &mut WorkerState,
    st: &mut CopyStatus,
) -> Result<(), ScsiError> {
    for seg in &list.segments {
        let named = |i: usize| list.cscds.get(i).map(|c| c.naa);
        let (Some(src_naa), Some(dst_naa)) = (named(seg.src), named(seg.dst)) else {
            return Err(Sense::copy_target_not_reachable().into());
        };
        let src = find(&src_naa, link).ok_or_else(Sense::copy_target_not_reachable)?;
        let dst = find(&dst_naa, link).ok_or_else(Sense::copy_target_not_reachable)?;
        let (sbs, dbs) = (src.lun.read().block_size, dst.lun.read().block_size);
        if sbs != dbs {
            // Different block sizes are not supported (as LIO answers).
            return Err(Sense::lun_communication_failure().into());
        }
        let blocks = u64::from(seg.blocks);
        // A segment past either end: the copy cannot use that target (LIO's answer).
        for (l, lba) in [(&src, seg.src_lba), (&dst, seg.dst_lba)] {
            if l.lun.read().check_range(lba, blocks).is_err() {
                return Err(Sense::copy_target_not_reachable().into());
            }
        }
        copy_range(
            &Range {
                src: &src,
                dst: &dst,
                src_lba: seg.src_lba,
                dst_lba: seg.dst_lba,
                blocks,
                bs: u64::from(sbs),
            },
            slot,
            link,
            w,
            st,
        )?;
        st.segments = st.segments.saturating_add(1);
    }
    Ok(())
}

/// One segment, resolved.
struct Range<'a> {
    src: &'a Arc<DeviceLink>,
    dst: &'a Arc<DeviceLink>,
    src_lba: u64,
    dst_lba: u64,
    blocks: u64,
    bs: u64,
}

/// Whether the command was aborted (task abort, or completed at its deadline) since its
/// worker took it.
fn aborted(link: &DeviceLink, slot: u16) -> bool {
    link.aborted
        .get(usize::from(slot))
        .is_some_and(|f| f.swap(false, Ordering::SeqCst))
}

fn copy_range(
    r: &Range<'_>,
    slot: u16,
    link: &DeviceLink,
    w: &mut WorkerState,
    st: &mut CopyStatus,
) -> Result<(), ScsiError> {
    let chunk = (w.scratch.len() as u64 / r.bs).max(1);
    // Overlapping ranges of one LUN with the destination after the source are copied from
    // the end, so no block is overwritten before it is read.
    let backward = Arc::ptr_eq(r.src, r.dst)
        && r.dst_lba > r.src_lba
        && r.dst_lba < r.src_lba.saturating_add(r.blocks);
    let (src_b, dst_b) = (r.src.backend(), r.dst.backend());
    let fua = !r.dst.lun.read().write_cache;
    // Two file-backed LUNs: the kernel copies (`copy_file_range`) until it refuses once.
    let mut in_kernel = src_b.uring_fd().zip(dst_b.uring_fd());
    let mut unsynced = false;
    let mut done = 0u64;
    while done < r.blocks {
        if aborted(link, slot) {
            return Err(ScsiError::TaskAborted);
        }
        let n = chunk.min(r.blocks - done);
        let at = if backward { r.blocks - done - n } else { done };
        let len = n * r.bs;
        let (src_off, dst_off) = ((r.src_lba + at) * r.bs, (r.dst_lba + at) * r.bs);
        let copied = match in_kernel {
            Some((sfd, dfd)) => errno(
                super::file_copy::copy_chunk(sfd, src_off, dfd, dst_off, len),
                true,
            )?,
            None => false,
        };
        if copied {
            unsynced = true;
        } else {
            in_kernel = None;
            errno(scratch_io(w, &*src_b, IoOp::Read, src_off, len), false)?;
            errno(
                scratch_io(w, &*dst_b, IoOp::Write { fua }, dst_off, len),
                true,
            )?;
        }
        done += n;
        st.bytes = st.bytes.saturating_add(len);
    }
    if fua && unsynced {
        // `copy_file_range` has no FUA: the destination's write cache is off, so what the
        // kernel copied is made durable before GOOD, as each bounced write is.
        errno(scratch_io(w, &*dst_b, IoOp::Flush, 0, 0), true)?;
    }
    Ok(())
}

fn errno<T>(r: Result<T, nix::errno::Errno>, is_write: bool) -> Result<T, ScsiError> {
    r.map_err(|e| ScsiError::from_errno(e as i32, is_write))
}

/// One operation of `len` bytes between `backend` and the worker's scratch buffer, waited for.
fn scratch_io(
    w: &mut WorkerState,
    backend: &dyn Backend,
    op: IoOp,
    off: u64,
    len: u64,
) -> IoResult {
    let mut iov = std::mem::take(&mut w.iov);
    iov.clear();
    // SAFETY: the worker keeps `scratch` alive and in place, and does not touch it, until the
    // Io completes: it waits for it just below and clears `iov` before `scratch` is used again.
    unsafe {
        iov.push_buffer(&mut w.scratch, usize::try_from(len).unwrap_or(0));
    }
    backend.submit(Io::for_waiter(op, off, len, iov, &w.waiter));
    let (r, mut iov) = w.waiter.wait();
    iov.clear();
    w.iov = iov;
    r
}
