//! UNMAP parameter list (SBC-3 5.28.2).

use crate::bytes::{be16, be32, be64, sat16};
use crate::lun::LunInfo;
use crate::sense::Sense;

/// Length of the UNMAP parameter list header.
const HEADER: usize = 8;
/// Length of one UNMAP block descriptor.
const DESC: usize = 16;

/// Validated UNMAP block descriptors, yielded as `(lba, blocks)` with
/// zero-length descriptors skipped. Borrows the parameter list; no allocation.
#[derive(Debug, Clone)]
pub struct UnmapDescriptors<'a> {
    descs: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for UnmapDescriptors<'_> {
    type Item = (u64, u32);

    fn next(&mut self) -> Option<(u64, u32)> {
        self.descs
            .by_ref()
            .map(|d| (be64(d, 0), be32(d, 8)))
            .find(|&(_, n)| n != 0)
    }
}

/// Validate an UNMAP parameter list.
///
/// * empty (PARAMETER LIST LENGTH 0): nothing to do;
/// * shorter than the 8-byte header: PARAMETER LIST LENGTH ERROR;
/// * UNMAP DATA LENGTH too small for the BLOCK DESCRIPTOR DATA LENGTH:
///   INVALID FIELD IN PARAMETER LIST (byte 0);
/// * descriptors are taken from the block descriptor data, cut to the list
///   actually received, an incomplete trailing descriptor ignored;
/// * more descriptors than `max_unmap_descriptors`: INVALID FIELD IN
///   PARAMETER LIST (byte 2); a descriptor over `max_unmap_blocks`:
///   INVALID FIELD IN PARAMETER LIST (its NUMBER OF LOGICAL BLOCKS);
///   a range past the end: LBA OUT OF RANGE.
pub fn parse_unmap<'a>(params: &'a [u8], lun: &LunInfo) -> Result<UnmapDescriptors<'a>, Sense> {
    let empty = UnmapDescriptors {
        descs: [].chunks_exact(DESC),
    };
    if params.is_empty() {
        return Ok(empty);
    }
    if params.len() < HEADER {
        return Err(Sense::param_list_length_error());
    }
    let data_len = usize::from(be16(params, 0));
    let bd_len = usize::from(be16(params, 2));
    if bd_len > 0 && data_len + 2 < HEADER + bd_len {
        return Err(Sense::invalid_field_in_param_list(0, Some(7)));
    }
    let body = params.get(HEADER..).unwrap_or(&[]);
    let body = body.get(..bd_len.min(body.len())).unwrap_or(&[]);
    let descs = body.chunks_exact(DESC);
    if u32::try_from(descs.len()).map_or(true, |n| n > lun.max_unmap_descriptors) {
        return Err(Sense::invalid_field_in_param_list(2, Some(7)));
    }
    for (i, d) in descs.clone().enumerate() {
        let (lba, blocks) = (be64(d, 0), be32(d, 8));
        if blocks == 0 {
            continue;
        }
        if blocks > lun.max_unmap_blocks {
            return Err(Sense::invalid_field_in_param_list(
                sat16(HEADER + i * DESC + 8),
                Some(7),
            ));
        }
        lun.check_range(lba, u64::from(blocks))?;
    }
    Ok(UnmapDescriptors { descs })
}
