//! GET LBA STATUS on a worker: the backend's allocation map as mapped / deallocated extents
//! (see `docs/conformance.md`).
//!
//! Deallocated is reported only where the LUN advertises logical block provisioning
//! management (LBPME=1 in READ CAPACITY(16), LBPRZ=1 in VPD B2h: the backend can unmap and
//! unmapped blocks read as zeros); elsewhere every LBA is mapped, which SBC-4 allows. A block
//! is deallocated only when the whole block lies in a hole.

use super::context::{Ctx, Outcome};
use super::link::DeviceLink;
use std::sync::Arc;
use tcmu_scsi::cdb::Cdb;
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::lba_status::{self, Extent, DEALLOCATED, MAPPED};
use tcmu_scsi::sense::Sense;

/// At most this many descriptors per answer (each may cost the backend a lookup).
const MAX_EXTENTS: usize = 128;

/// Run a GET LBA STATUS job and hand the context back.
pub fn run(mut ctx: Box<Ctx>, link: Arc<DeviceLink>) {
    if link.accounting {
        ctx.stamps.submit = Some(std::time::Instant::now());
    }
    let outcome = match ctx.cdb {
        Cdb::GetLbaStatus { lba, alloc_len } => match extents(&link, lba, alloc_len) {
            Ok(ext) => {
                let mut out =
                    vec![0u8; lba_status::HEADER_LEN + ext.len() * lba_status::DESCRIPTOR_LEN];
                let n = lba_status::encode(&ext, &mut out);
                super::xcopy::data_in(&ctx, &link, &out[..n], u64::from(alloc_len))
            }
            Err(e) => Outcome::error(e),
        },
        _ => Outcome::error(Sense::internal_target_failure().into()),
    };
    if link.accounting {
        ctx.stamps.done = Some(std::time::Instant::now());
    }
    ctx.done(outcome);
    link.complete_from_backend(ctx);
}

/// The extents from `lba` on, as many as `alloc_len` has room for (at most [`MAX_EXTENTS`]),
/// adjacent extents of one status merged.
fn extents(link: &DeviceLink, lba: u64, alloc_len: u32) -> Result<Vec<Extent>, ScsiError> {
    let (bs, num_blocks, lbpme) = {
        let lun = link.lun.read();
        (u64::from(lun.block_size), lun.num_blocks, lun.caps.unmap)
    };
    if lba >= num_blocks {
        return Err(Sense::lba_out_of_range().into());
    }
    let max = lba_status::descriptors_for(alloc_len).min(MAX_EXTENTS);
    let backend = link.backend();
    let mut out: Vec<Extent> = Vec::with_capacity(max);
    let mut at = lba;
    // Bounded work per command, however fragmented the store: the last extent may then end
    // early, which only shortens what is reported.
    for _ in 0..4 * MAX_EXTENTS {
        if at >= num_blocks {
            break;
        }
        let rest = (num_blocks - at).min(u64::from(u32::MAX));
        let (status, n) = if lbpme {
            let (allocated, bytes) = backend
                .allocation(at * bs, rest * bs)
                .map_err(|e| ScsiError::from_errno(e as i32, false))?;
            match (allocated, bytes / bs) {
                (true, _) => (MAPPED, bytes.div_ceil(bs).clamp(1, rest)),
                // A hole smaller than a block: that block holds data.
                (false, 0) => (MAPPED, 1),
                (false, whole) => (DEALLOCATED, whole.min(rest)),
            }
        } else {
            (MAPPED, rest)
        };
        let merged = out.last_mut().is_some_and(|last| {
            let fits = u64::from(last.blocks) + n <= u64::from(u32::MAX);
            if last.status == status && fits {
                last.blocks += u32::try_from(n).unwrap_or(0);
            }
            last.status == status && fits
        });
        if !merged {
            if out.len() == max {
                break;
            }
            out.push(Extent {
                lba: at,
                blocks: u32::try_from(n).unwrap_or(u32::MAX),
                status,
            });
        }
        at += n;
    }
    Ok(out)
}
