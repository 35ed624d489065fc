//! Standard INQUIRY data (SPC-4 6.6.2).

use crate::bytes::{put, put16, put_slice};
use crate::lun::LunInfo;

/// Length of the standard INQUIRY data we return.
pub const STANDARD_LEN: usize = 96;

/// VERSION DESCRIPTORs: SAM-5, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 3] = [0x00A0, 0x0460, 0x04C0];

/// Standard INQUIRY data: direct-access block device, VERSION=SPC-4,
/// HISUP=1, response data format 2, TPGS from the ALUA groups (implicit
/// when any group allows implicit transitions, else 0), 3PC=1 (EXTENDED
/// COPY is served, see [`crate::params::xcopy`]), CMDQUE=1.
pub fn standard(lun: &LunInfo, out: &mut [u8]) -> usize {
    put(out, 0, 0x00); // peripheral qualifier 0, device type 0 (SBC)
    put(out, 2, 0x06); // VERSION: SPC-4
    put(out, 3, 0x10 | 0x02); // HISUP, RESPONSE DATA FORMAT 2
    put(out, 4, u8::try_from(STANDARD_LEN - 5).unwrap_or(u8::MAX));
    // TPGS (bits 5-4) and 3PC (bit 3).
    put(
        out,
        5,
        lun.alua.as_ref().map_or(0, crate::alua::Alua::tpgs) | 0x08,
    );
    put(out, 7, 0x02); // CMDQUE
    put_slice(out, 8, &lun.vendor);
    put_slice(out, 16, &lun.product);
    put_slice(out, 32, &lun.revision);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        put16(out, 58 + 2 * i, *v);
    }
    STANDARD_LEN
}
