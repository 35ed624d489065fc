//! MODE SELECT(6/10) parameter list.

use crate::bytes::{be16, be32, be64, sat16, u8_at};
use crate::lun::LunInfo;
use crate::modepage::{self, PageControl};
use crate::sense::Sense;

/// What a MODE SELECT asks to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModeChanges {
    /// New WCE value, when the caching page was sent.
    pub write_cache: Option<bool>,
}

/// INVALID FIELD IN PARAMETER LIST at `byte`/`bit`.
fn bad(byte: usize, bit: Option<u8>) -> Sense {
    Sense::invalid_field_in_param_list(sat16(byte), bit)
}

/// Validate a MODE SELECT parameter list and return the requested changes.
///
/// Only WCE of the caching page is changeable. PF=0 is INVALID FIELD IN
/// CDB (byte 1 bit 4); SP=1 is SAVING PARAMETERS NOT SUPPORTED; a truncated
/// header/descriptor/page is PARAMETER LIST LENGTH ERROR; a block
/// descriptor that differs from the LUN's geometry, an unknown page, a
/// wrong page length or a changed non-changeable bit is INVALID FIELD IN
/// PARAMETER LIST pointing at the offending byte. An empty list is no change.
pub fn mode_select(
    ten: bool,
    pf: bool,
    sp: bool,
    params: &[u8],
    lun: &LunInfo,
) -> Result<ModeChanges, Sense> {
    if !pf {
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    if sp {
        return Err(Sense::saving_params_unsupported());
    }
    let mut changes = ModeChanges::default();
    if params.is_empty() {
        return Ok(changes);
    }
    let (header, bd_len) = if ten {
        (8usize, usize::from(be16(params, 6)))
    } else {
        (4usize, usize::from(u8_at(params, 3)))
    };
    let long = ten && u8_at(params, 4) & 0x01 != 0;
    if params.len() < header || params.len() < header + bd_len {
        return Err(Sense::param_list_length_error());
    }
    check_block_descriptors(params, header, bd_len, long, lun)?;

    let mut pos = header + bd_len;
    while pos < params.len() {
        let b0 = u8_at(params, pos);
        if b0 & 0x40 != 0 {
            return Err(bad(pos, Some(6))); // SPF: we have no subpages
        }
        if pos + 2 > params.len() {
            return Err(Sense::param_list_length_error());
        }
        let page_len = 2 + usize::from(u8_at(params, pos + 1));
        let page = params
            .get(pos..pos + page_len)
            .ok_or_else(Sense::param_list_length_error)?;
        let Some((cur_buf, mask_buf, len)) = known_page(b0 & 0x3F, lun) else {
            return Err(bad(pos, Some(5)));
        };
        let current = cur_buf.get(..len).unwrap_or(&[]);
        let mask = mask_buf.get(..len).unwrap_or(&[]);
        if page.len() != current.len() {
            return Err(bad(pos + 1, Some(7)));
        }
        // Byte 0 carries PS (ignored) and the page code; byte 1 the length.
        for (i, ((&new, &cur), &m)) in page.iter().zip(current).zip(mask).enumerate().skip(2) {
            let diff = (new ^ cur) & !m;
            if diff != 0 {
                let bit = u8::try_from(7 - diff.leading_zeros()).unwrap_or(7);
                return Err(bad(pos + i, Some(bit)));
            }
        }
        if b0 & 0x3F == modepage::CACHING {
            changes.write_cache = Some(u8_at(page, 2) & modepage::WCE != 0);
        }
        pos += page_len;
    }
    Ok(changes)
}

/// Current values and changeable mask of a page we implement, padded to
/// the longest page, with its real length.
fn known_page(code: u8, lun: &LunInfo) -> Option<([u8; 20], [u8; 20], usize)> {
    let mut cur = [0u8; 20];
    let mut mask = [0u8; 20];
    let len = match code {
        modepage::CACHING => {
            cur = modepage::caching(PageControl::Current, lun);
            mask = modepage::caching(PageControl::Changeable, lun);
            modepage::CACHING_LEN
        }
        modepage::CONTROL => {
            cur[..modepage::CONTROL_LEN].copy_from_slice(&modepage::control(PageControl::Current));
            mask[..modepage::CONTROL_LEN]
                .copy_from_slice(&modepage::control(PageControl::Changeable));
            modepage::CONTROL_LEN
        }
        _ => return None,
    };
    Some((cur, mask, len))
}

/// Block descriptors may be sent but must describe the current geometry
/// (NUMBER OF LOGICAL BLOCKS 0 means "unchanged").
fn check_block_descriptors(
    params: &[u8],
    header: usize,
    bd_len: usize,
    long: bool,
    lun: &LunInfo,
) -> Result<(), Sense> {
    let one = if long { 16 } else { 8 };
    if bd_len % one != 0 {
        return Err(bad(if header == 8 { 6 } else { 3 }, Some(7)));
    }
    let mut pos = header;
    while pos + one <= header + bd_len {
        let (blocks, size, size_at) = if long {
            (be64(params, pos), be32(params, pos + 12), pos + 12)
        } else {
            let short = u64::from(be32(params, pos));
            let blocks = if short == u64::from(u32::MAX) && lun.num_blocks >= short {
                lun.num_blocks
            } else {
                short
            };
            (blocks, be32(params, pos + 4) & 0x00FF_FFFF, pos + 5)
        };
        if blocks != 0 && blocks != lun.num_blocks {
            return Err(bad(pos, Some(7)));
        }
        if size != lun.block_size {
            return Err(bad(size_at, Some(7)));
        }
        pos += one;
    }
    Ok(())
}
