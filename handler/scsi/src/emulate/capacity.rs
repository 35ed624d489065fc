//! READ CAPACITY(10) and READ CAPACITY(16) parameter data.

use crate::bytes::{put, put32, put64};
use crate::lun::LunInfo;

/// READ CAPACITY(10): 8 bytes. The returned LBA is 0xFFFFFFFF when the last
/// LBA does not fit, telling the initiator to use READ CAPACITY(16).
pub fn read_capacity_10(lun: &LunInfo, out: &mut [u8]) -> usize {
    let last = u32::try_from(lun.last_lba()).unwrap_or(u32::MAX);
    put32(out, 0, last);
    put32(out, 4, lun.block_size);
    8
}

/// READ CAPACITY(16): 32 bytes. LBPME (and LBPRZ: unmapped blocks read as
/// zeroes) are set only when the LUN supports unmapping.
pub fn read_capacity_16(lun: &LunInfo, out: &mut [u8]) -> usize {
    put64(out, 0, lun.last_lba());
    put32(out, 8, lun.block_size);
    if lun.caps.unmap {
        put(out, 14, 0x80 | 0x40);
    }
    32
}
