//! MODE SENSE(6) and MODE SENSE(10) parameter data.

use crate::bytes::{put, put16, put32, put64, put_slice, sat16};
use crate::lun::LunInfo;
use crate::modepage::{self, PageControl};
use crate::sense::Sense;

/// The fields of a MODE SENSE CDB that shape the response.
pub struct Request {
    /// MODE SENSE(10).
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptor allowed.
    pub llbaa: bool,
    /// Page control.
    pub pc: u8,
    /// Page code.
    pub page: u8,
    /// Subpage code.
    pub subpage: u8,
}

/// Build the MODE SENSE response: header, optional block descriptor, pages.
pub fn respond(req: &Request, lun: &LunInfo, out: &mut [u8]) -> Result<usize, Sense> {
    let pc = match req.pc {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => return Err(Sense::saving_params_unsupported()),
    };
    let (want_caching, want_control) = match (req.page, req.subpage) {
        (modepage::CACHING, 0) => (true, false),
        (modepage::CONTROL, 0) => (false, true),
        (modepage::ALL_PAGES, 0 | 0xFF) => (true, true),
        (modepage::CACHING | modepage::CONTROL | modepage::ALL_PAGES, _) => {
            return Err(Sense::invalid_field_in_cdb(3, Some(7)))
        }
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(5))),
    };

    let header = if req.ten { 8 } else { 4 };
    let mut pos = header;
    let long = req.ten && req.llbaa && u32::try_from(lun.num_blocks).is_err();
    let bd_len = match (req.dbd, long) {
        (true, _) => 0,
        (false, true) => 16,
        (false, false) => 8,
    };
    if bd_len != 0 && pc != PageControl::Changeable {
        block_descriptor(lun, long, out, pos);
    }
    pos += bd_len;
    if want_caching {
        put_slice(out, pos, &modepage::caching(pc, lun));
        pos += modepage::CACHING_LEN;
    }
    if want_control {
        put_slice(out, pos, &modepage::control(pc));
        pos += modepage::CONTROL_LEN;
    }

    // DPOFUA: DPO and FUA are honoured. WP is never set.
    let dev_specific = if lun.caps.fua { 0x10 } else { 0x00 };
    if req.ten {
        put16(out, 0, sat16(pos - 2));
        put(out, 3, dev_specific);
        put(out, 4, u8::from(long));
        put16(out, 6, sat16(bd_len));
    } else {
        put(out, 0, u8::try_from(pos - 1).unwrap_or(u8::MAX));
        put(out, 2, dev_specific);
        put(out, 3, u8::try_from(bd_len).unwrap_or(0));
    }
    Ok(pos)
}

/// Short (8-byte) or long (16-byte) LBA mode parameter block descriptor.
fn block_descriptor(lun: &LunInfo, long: bool, out: &mut [u8], pos: usize) {
    if long {
        put64(out, pos, lun.num_blocks);
        put32(out, pos + 12, lun.block_size);
    } else {
        put32(out, pos, u32::try_from(lun.num_blocks).unwrap_or(u32::MAX));
        // Byte 4 reserved, bytes 5-7 LOGICAL BLOCK LENGTH (24 bits).
        let [_, b1, b2, b3] = lun.block_size.to_be_bytes();
        put_slice(out, pos + 5, &[b1, b2, b3]);
    }
}
