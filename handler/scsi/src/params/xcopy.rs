//! EXTENDED COPY (LID1) parameter list (SPC-4 6.4): the copy manager's side of VMware's
//! XCOPY offload, with what LIO's own copy manager accepts (`docs/conformance.md`): CSCD
//! identification descriptors (E4h) naming a logical unit by a 16-byte NAA designator, and
//! block-device-to-block-device segment descriptors (02h).
//!
//! [`parse_extended_copy`] is pure and total: any byte string gives a [`CopyList`] or the
//! sense SPC-4 names, never a panic (property-tested, and a fuzz target's entry point).

use crate::bytes::{be16, be32, be64, sat16, u8_at};
use crate::sense::Sense;

/// Length of the parameter list header.
pub const HEADER_LEN: usize = 16;
/// Length of a CSCD (copy source/destination) descriptor.
pub const CSCD_LEN: usize = 32;
/// Length of a block-to-block segment descriptor (type 02h).
pub const SEGMENT_LEN: usize = 28;
/// CSCD descriptor type code: identification descriptor.
pub const CSCD_IDENTIFICATION: u8 = 0xE4;
/// Segment descriptor type code: block device to block device.
pub const SEGMENT_BLOCK_TO_BLOCK: u8 = 0x02;
/// MAXIMUM CSCD DESCRIPTOR COUNT (a source and a destination).
pub const MAX_CSCDS: usize = 2;
/// MAXIMUM SEGMENT DESCRIPTOR COUNT.
pub const MAX_SEGMENTS: usize = 1;
/// MAXIMUM DESCRIPTOR LIST LENGTH (CSCD and segment descriptors together), in bytes.
pub const MAX_DESCRIPTOR_LIST_LEN: u32 = 1024;

/// LIST ID USAGE (header byte 1 bits 4-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListIdUsage {
    /// 00b: the copy manager holds the copy's status for RECEIVE COPY RESULTS.
    Hold,
    /// 10b: the list identifier is unique; the status is kept as well.
    NoHold,
    /// 11b: the list identifier is zero and nothing is kept.
    Discard,
}

impl ListIdUsage {
    /// Whether RECEIVE COPY RESULTS (COPY STATUS) can report this copy afterwards.
    #[must_use]
    pub fn keeps_status(self) -> bool {
        !matches!(self, ListIdUsage::Discard)
    }
}

/// A copy source or destination, named by the NAA designator of its logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cscd {
    /// The 16-byte NAA designator (as VPD 83h reports it).
    pub naa: [u8; 16],
    /// DISK BLOCK LENGTH from the device type specific parameters (0: not given).
    pub block_len: u32,
}

/// One block-to-block segment: `blocks` blocks from `src_lba` of CSCD `src` to `dst_lba` of
/// CSCD `dst` (indices into [`CopyList::cscds`], already checked to exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// SOURCE CSCD DESCRIPTOR ID.
    pub src: usize,
    /// DESTINATION CSCD DESCRIPTOR ID.
    pub dst: usize,
    /// NUMBER OF BLOCKS (0: nothing to copy).
    pub blocks: u16,
    /// SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub src_lba: u64,
    /// DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub dst_lba: u64,
    /// DC bit: NUMBER OF BLOCKS counts destination blocks (same size here).
    pub dc: bool,
}

/// A validated EXTENDED COPY(LID1) parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyList {
    /// LIST IDENTIFIER.
    pub list_id: u8,
    /// LIST ID USAGE.
    pub usage: ListIdUsage,
    /// CSCD descriptors, at most [`MAX_CSCDS`].
    pub cscds: Vec<Cscd>,
    /// Segment descriptors, at most [`MAX_SEGMENTS`].
    pub segments: Vec<Segment>,
}

/// Parse and validate an EXTENDED COPY(LID1) parameter list, `list` being the bytes received
/// (the CDB's PARAMETER LIST LENGTH cut to the Data-Out buffer; an empty list is a copy of
/// nothing, which the caller completes with GOOD). Checked in the order LIO's copy manager
/// checks them:
///
/// * shorter than the 16-byte header, CSCD plus segment descriptor list lengths above
///   [`MAX_DESCRIPTOR_LIST_LEN`], or a list shorter than the header says: PARAMETER LIST
///   LENGTH ERROR (05/1A/00);
/// * INLINE DATA LENGTH not zero (no inline data is supported), LIST ID USAGE 01b
///   (reserved), or 11b with a non-zero LIST IDENTIFIER: INVALID FIELD IN PARAMETER LIST;
/// * segment descriptor list: more than [`MAX_SEGMENTS`] descriptors' worth: TOO MANY
///   SEGMENT DESCRIPTORS (05/26/08); a length that is not a whole number of 28-byte
///   descriptors or a type other than 02h: UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE
///   (05/26/09); a DESCRIPTOR LENGTH other than 18h: INVALID FIELD IN PARAMETER LIST;
/// * CSCD descriptor list: more than [`MAX_CSCDS`]: TOO MANY TARGET DESCRIPTORS (05/26/06);
///   not whole 32-byte descriptors, or a type other than E4h: UNSUPPORTED TARGET DESCRIPTOR
///   TYPE CODE (05/26/07); an E4h descriptor whose designator is not a binary, logical-unit,
///   16-byte NAA IEEE Registered Extended one: INVALID FIELD IN PARAMETER LIST. The LU ID
///   TYPE and NUL fields are ignored (SPC-4 made them obsolete);
/// * a segment naming a CSCD index that is not in the list: COPY ABORTED, COPY TARGET
///   DEVICE NOT REACHABLE (0A/0D/02), as LIO answers.
///
/// # Errors
/// The sense above.
pub fn parse_extended_copy(list: &[u8]) -> Result<CopyList, Sense> {
    if list.len() < HEADER_LEN {
        return Err(Sense::param_list_length_error());
    }
    let list_id = u8_at(list, 0);
    let usage = match (u8_at(list, 1) >> 3) & 0x03 {
        0 => ListIdUsage::Hold,
        2 => ListIdUsage::NoHold,
        3 => ListIdUsage::Discard,
        _ => return Err(Sense::invalid_field_in_param_list(1, Some(4))),
    };
    if usage == ListIdUsage::Discard && list_id != 0 {
        return Err(Sense::invalid_field_in_param_list(0, None));
    }
    let cscd_len = u32::from(be16(list, 2));
    let seg_len = be32(list, 8);
    let inline_len = be32(list, 12);
    if cscd_len.saturating_add(seg_len) > MAX_DESCRIPTOR_LIST_LEN {
        return Err(Sense::param_list_length_error());
    }
    if inline_len != 0 {
        return Err(Sense::invalid_field_in_param_list(12, None));
    }
    // Both lengths are at most MAX_DESCRIPTOR_LIST_LEN here: the sums cannot overflow.
    let (cscd_len, seg_len) = (cscd_len as usize, seg_len as usize);
    if list.len() < HEADER_LEN + cscd_len + seg_len {
        return Err(Sense::param_list_length_error());
    }
    let cscd_bytes = &list[HEADER_LEN..HEADER_LEN + cscd_len];
    let seg_bytes = &list[HEADER_LEN + cscd_len..HEADER_LEN + cscd_len + seg_len];
    let segments = parse_segments(seg_bytes, HEADER_LEN + cscd_len)?;
    let cscds = parse_cscds(cscd_bytes)?;
    if segments
        .iter()
        .any(|s| s.src >= cscds.len() || s.dst >= cscds.len())
    {
        return Err(Sense::copy_target_not_reachable());
    }
    Ok(CopyList {
        list_id,
        usage,
        cscds,
        segments,
    })
}

fn parse_segments(bytes: &[u8], base: usize) -> Result<Vec<Segment>, Sense> {
    if bytes.len() % SEGMENT_LEN != 0 {
        return Err(Sense::unsupported_segment_descriptor());
    }
    if bytes.len() > MAX_SEGMENTS * SEGMENT_LEN {
        return Err(Sense::too_many_segment_descriptors());
    }
    let mut out = Vec::with_capacity(MAX_SEGMENTS);
    for (i, d) in bytes.chunks_exact(SEGMENT_LEN).enumerate() {
        let at = base + i * SEGMENT_LEN;
        if u8_at(d, 0) != SEGMENT_BLOCK_TO_BLOCK {
            return Err(Sense::unsupported_segment_descriptor());
        }
        if be16(d, 2) != 0x18 {
            return Err(Sense::invalid_field_in_param_list(sat16(at + 2), None));
        }
        out.push(Segment {
            src: usize::from(be16(d, 4)),
            dst: usize::from(be16(d, 6)),
            blocks: be16(d, 10),
            src_lba: be64(d, 12),
            dst_lba: be64(d, 20),
            dc: u8_at(d, 1) & 0x02 != 0,
        });
    }
    Ok(out)
}

fn parse_cscds(bytes: &[u8]) -> Result<Vec<Cscd>, Sense> {
    if bytes.len() % CSCD_LEN != 0 {
        return Err(Sense::unsupported_target_descriptor());
    }
    if bytes.len() > MAX_CSCDS * CSCD_LEN {
        return Err(Sense::too_many_target_descriptors());
    }
    let mut out = Vec::with_capacity(MAX_CSCDS);
    for (i, d) in bytes.chunks_exact(CSCD_LEN).enumerate() {
        let at = HEADER_LEN + i * CSCD_LEN;
        if u8_at(d, 0) != CSCD_IDENTIFICATION {
            return Err(Sense::unsupported_target_descriptor());
        }
        // The designation descriptor at bytes 4-27: code set binary (1), association
        // logical unit (00b), designator type NAA (3), 16 bytes of NAA 6.
        let bad = |byte: usize| Sense::invalid_field_in_param_list(sat16(at + byte), None);
        if u8_at(d, 4) & 0x0F != 0x01 {
            return Err(bad(4));
        }
        if u8_at(d, 5) & 0x30 != 0 || u8_at(d, 5) & 0x0F != 0x03 {
            return Err(bad(5));
        }
        if u8_at(d, 7) != 16 {
            return Err(bad(7));
        }
        if u8_at(d, 8) & 0xF0 != 0x60 {
            return Err(bad(8));
        }
        let mut naa = [0u8; 16];
        naa.copy_from_slice(d.get(8..24).unwrap_or(&[0; 16]));
        let block_len = be32(d, 28) & 0x00FF_FFFF;
        out.push(Cscd { naa, block_len });
    }
    Ok(out)
}

/// RECEIVE COPY RESULTS, OPERATING PARAMETERS (SPC-4 6.18.4) for a LUN of `block_size`
/// bytes: the limits [`parse_extended_copy`] enforces; the longest segment is the most a
/// 02h descriptor can name (65535 blocks). Returns the full length (46 bytes).
pub fn operating_parameters(block_size: u32, out: &mut [u8]) -> usize {
    use crate::bytes::{put, put16, put32, sat16};
    const LEN: usize = 46;
    put32(out, 0, u32::from(sat16(LEN - 4))); // AVAILABLE DATA
    put(out, 4, 0x01); // SNLID: a copy without a list identifier (usage 11b) is supported
    put16(out, 8, sat16(MAX_CSCDS));
    put16(out, 10, sat16(MAX_SEGMENTS));
    put32(out, 12, MAX_DESCRIPTOR_LIST_LEN);
    put32(out, 16, max_segment_bytes(block_size));
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, MAXIMUM STREAM DEVICE TRANSFER SIZE: 0.
    put16(out, 34, 1); // TOTAL CONCURRENT COPIES (as LIO advertises)
    put(out, 36, 1); // MAXIMUM CONCURRENT COPIES
    put(out, 37, 9); // DATA SEGMENT GRANULARITY: 512 bytes (log 2)
    put(out, 38, 9); // INLINE DATA GRANULARITY
    put(out, 39, 9); // HELD DATA GRANULARITY
    put(out, 43, 2); // IMPLEMENTED DESCRIPTOR LIST LENGTH
    put(out, 44, SEGMENT_BLOCK_TO_BLOCK);
    put(out, 45, CSCD_IDENTIFICATION);
    LEN
}

/// MAXIMUM SEGMENT LENGTH in bytes: 65535 blocks, saturated.
#[must_use]
pub fn max_segment_bytes(block_size: u32) -> u32 {
    u32::from(u16::MAX).saturating_mul(block_size)
}

/// What RECEIVE COPY RESULTS (COPY STATUS) reports of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStatus {
    /// COPY MANAGER STATUS: 00h in progress, 01h completed without errors, 02h completed
    /// with errors.
    pub state: u8,
    /// SEGMENTS PROCESSED.
    pub segments: u16,
    /// Bytes transferred.
    pub bytes: u64,
}

impl CopyStatus {
    /// COPY MANAGER STATUS: the copy is running.
    pub const IN_PROGRESS: u8 = 0x00;
    /// COPY MANAGER STATUS: completed without errors.
    pub const DONE: u8 = 0x01;
    /// COPY MANAGER STATUS: completed with errors.
    pub const FAILED: u8 = 0x02;

    /// The COPY STATUS parameter data (SPC-4 6.18.3, 12 bytes): the transfer count in the
    /// smallest unit (bytes, KiB, MiB ...) in which it fits 32 bits. Returns 12.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        use crate::bytes::{put, put16, put32};
        put32(out, 0, 8); // AVAILABLE DATA
        put(out, 4, self.state & 0x7F);
        put16(out, 5, self.segments);
        let (mut count, mut unit) = (self.bytes, 0u8);
        while count > u64::from(u32::MAX) {
            count >>= 10;
            unit += 1;
        }
        put(out, 7, unit); // TRANSFER COUNT UNITS: 00h bytes, 01h KiB, 02h MiB, ...
        put32(out, 8, u32::try_from(count).unwrap_or(u32::MAX));
        12
    }
}

#[cfg(test)]
mod tests;
