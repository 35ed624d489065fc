//! GET LBA STATUS parameter data (SBC-4 5.8.2): LBA status descriptors saying which
//! extents are mapped and which deallocated.

use crate::bytes::{put, put32, put64};

/// Length of the parameter data header.
pub const HEADER_LEN: usize = 8;
/// Length of one LBA status descriptor.
pub const DESCRIPTOR_LEN: usize = 16;

/// PROVISIONING STATUS: mapped (or unknown).
pub const MAPPED: u8 = 0x0;
/// PROVISIONING STATUS: deallocated.
pub const DEALLOCATED: u8 = 0x1;

/// One extent of LBAs with the same provisioning status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First LBA.
    pub lba: u64,
    /// Number of logical blocks (at least 1).
    pub blocks: u32,
    /// [`MAPPED`] or [`DEALLOCATED`].
    pub status: u8,
}

/// How many descriptors an ALLOCATION LENGTH has room for (at least one: a shorter
/// allocation length truncates the answer, it does not refuse it).
#[must_use]
pub fn descriptors_for(alloc_len: u32) -> usize {
    let room = usize::try_from(alloc_len).unwrap_or(usize::MAX);
    (room.saturating_sub(HEADER_LEN) / DESCRIPTOR_LEN).max(1)
}

/// Write the parameter data for `extents` into `out` (truncated to its length); returns the
/// full length.
pub fn encode(extents: &[Extent], out: &mut [u8]) -> usize {
    let len = HEADER_LEN + extents.len() * DESCRIPTOR_LEN;
    // PARAMETER DATA LENGTH counts the bytes after itself.
    put32(out, 0, u32::try_from(len - 4).unwrap_or(u32::MAX));
    for (i, e) in extents.iter().enumerate() {
        let at = HEADER_LEN + i * DESCRIPTOR_LEN;
        put64(out, at, e.lba);
        put32(out, at + 8, e.blocks);
        put(out, at + 12, e.status & 0x0F);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_laid_out_after_the_header_and_the_length_counts_past_itself() {
        let mut out = [0xAAu8; 40];
        out.fill(0);
        let n = encode(
            &[
                Extent {
                    lba: 7,
                    blocks: 3,
                    status: DEALLOCATED,
                },
                Extent {
                    lba: 10,
                    blocks: 100,
                    status: MAPPED,
                },
            ],
            &mut out,
        );
        assert_eq!(n, 40);
        assert_eq!(&out[0..4], &[0, 0, 0, 36]);
        assert_eq!(&out[8..16], &7u64.to_be_bytes());
        assert_eq!(&out[16..20], &3u32.to_be_bytes());
        assert_eq!(out[20], DEALLOCATED);
        assert_eq!(&out[24..32], &10u64.to_be_bytes());
        assert_eq!(out[36], MAPPED);
    }

    #[test]
    fn a_short_allocation_length_still_gets_one_descriptor() {
        assert_eq!(descriptors_for(0), 1);
        assert_eq!(descriptors_for(24), 1);
        assert_eq!(descriptors_for(40), 2);
        assert_eq!(descriptors_for(u32::MAX), (u32::MAX as usize - 8) / 16);
    }
}
