//! Vital product data pages (INQUIRY with EVPD=1).

use crate::bytes::{put, put16, put32, put64, put_slice, sat16};
use crate::lun::LunInfo;
use crate::sense::Sense;

/// The VPD pages we answer, in ascending order (VPD page 0x00 lists them).
pub const SUPPORTED_VPD_PAGES: [u8; 8] = [0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2];

/// Longest unit serial number we report (VPD 0x80 / T10 designator).
const MAX_SERIAL: usize = 200;

/// Answer VPD page `page`; unknown pages are INVALID FIELD IN CDB byte 2.
pub fn respond(page: u8, lun: &LunInfo, out: &mut [u8]) -> Result<usize, Sense> {
    let body_len = match page {
        0x00 => supported_pages(out),
        0x80 => unit_serial(lun, out),
        0x83 => device_identification(lun, out),
        0x86 => extended_inquiry(lun, out),
        0x8F => third_party_copy(lun, out),
        0xB0 => block_limits(lun, out),
        0xB1 => block_device_characteristics(lun, out),
        0xB2 => logical_block_provisioning(lun, out),
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(7))),
    };
    put(out, 0, 0x00); // direct-access block device
    put(out, 1, page);
    put16(out, 2, sat16(body_len));
    Ok(4 + body_len)
}

/// The serial as reported: at most [`MAX_SERIAL`] bytes.
fn serial(lun: &LunInfo) -> &[u8] {
    let s = lun.serial.as_bytes();
    s.get(..MAX_SERIAL).unwrap_or(s)
}

fn supported_pages(out: &mut [u8]) -> usize {
    put_slice(out, 4, &SUPPORTED_VPD_PAGES);
    SUPPORTED_VPD_PAGES.len()
}

fn unit_serial(lun: &LunInfo, out: &mut [u8]) -> usize {
    let s = serial(lun);
    put_slice(out, 4, s);
    s.len()
}

/// Device identification: an NAA IEEE Registered Extended designator and a
/// T10 vendor ID designator (vendor + unit serial), both associated with the
/// logical unit; with ALUA, a target port group designator when every
/// enabled port of the LUN is in one group, and a relative target port
/// designator when the LUN has exactly one enabled port (TCMU does not say
/// which port a command came through, so nothing is reported otherwise).
/// Both have PIV=0: the protocol is not known here.
fn device_identification(lun: &LunInfo, out: &mut [u8]) -> usize {
    let mut pos = 4usize;
    // NAA: code set binary (1), association LU (0), type NAA (3).
    put_slice(out, pos, &[0x01, 0x03, 0x00, 16]);
    put_slice(out, pos + 4, &lun.naa_designator());
    pos += 20;
    // T10 vendor ID: code set ASCII (2), association LU, type 1.
    let s = serial(lun);
    let len = lun.vendor.len() + s.len();
    put_slice(
        out,
        pos,
        &[0x02, 0x01, 0x00, u8::try_from(len).unwrap_or(u8::MAX)],
    );
    put_slice(out, pos + 4, &lun.vendor);
    put_slice(out, pos + 4 + lun.vendor.len(), s);
    pos += 4 + len;
    if let Some(alua) = &lun.alua {
        if let Some(rtpi) = alua.local_port() {
            // Association target port (01b), type 4: relative target port.
            put_slice(out, pos, &[0x01, 0x14, 0x00, 4]);
            put16(out, pos + 6, rtpi);
            pos += 8;
        }
        if let Some(g) = alua.local_group() {
            // Association target port (01b), type 5: target port group.
            put_slice(out, pos, &[0x01, 0x15, 0x00, 4]);
            put16(out, pos + 6, g.id);
            pos += 8;
        }
    }
    pos - 4
}

/// Extended INQUIRY data: HEADSUP/ORDSUP/SIMPSUP (all task attributes are
/// accepted), V_SUP when a volatile write cache is enabled (as LIO does).
fn extended_inquiry(lun: &LunInfo, out: &mut [u8]) -> usize {
    put(out, 5, 0x04 | 0x02 | 0x01);
    if lun.write_cache {
        put(out, 6, 0x01); // V_SUP
    }
    0x3C
}

/// Block limits (SBC-3 6.5.3). Unmap fields are only filled when the LUN
/// can unmap; WSNZ=0.
fn block_limits(lun: &LunInfo, out: &mut [u8]) -> usize {
    if lun.caps.compare_and_write {
        put(out, 5, lun.max_compare_write_blocks);
    }
    put16(out, 6, 1); // OPTIMAL TRANSFER LENGTH GRANULARITY
    put32(out, 8, lun.max_xfer_blocks);
    put32(out, 12, lun.opt_xfer_blocks);
    if lun.caps.unmap {
        put32(out, 20, lun.max_unmap_blocks);
        put32(out, 24, lun.max_unmap_descriptors);
        put32(out, 28, lun.unmap_granularity);
    }
    put64(out, 36, lun.max_write_same_blocks);
    0x3C
}

/// Block device characteristics: MEDIUM ROTATION RATE 1 (non-rotating) when
/// not rotational, else 0 (not reported).
fn block_device_characteristics(lun: &LunInfo, out: &mut [u8]) -> usize {
    if !lun.rotational {
        put16(out, 4, 1);
    }
    0x3C
}

/// Logical block provisioning: LBPU with unmap, LBPWS/LBPWS10 with unmap
/// or write-zeroes, LBPRZ=1 when unmapped blocks read zero (unmap),
/// PROVISIONING TYPE thin (2) when thin, else full (0).
fn logical_block_provisioning(lun: &LunInfo, out: &mut [u8]) -> usize {
    let mut b5 = 0u8;
    if lun.caps.unmap {
        b5 |= 0x80 | 0x04; // LBPU, LBPRZ=001b
    }
    if lun.caps.unmap || lun.caps.write_zeroes {
        b5 |= 0x40 | 0x20; // LBPWS, LBPWS10
    }
    put(out, 5, b5);
    if lun.caps.thin {
        put(out, 6, 0x02);
    }
    4
}

/// Third-party Copy (SPC-4 7.8.17): the copy manager's descriptors, each padded to a
/// multiple of 4 bytes: Supported Commands (EXTENDED COPY LID1; RECEIVE COPY RESULTS COPY
/// STATUS and OPERATING PARAMETERS), Parameter Data (the CSCD, segment and list limits),
/// Supported Descriptors (02h block to block, E4h identification) and General Copy
/// Operations. The limits are those of [`crate::params::xcopy`].
fn third_party_copy(lun: &LunInfo, out: &mut [u8]) -> usize {
    use crate::opcodes as op;
    use crate::params::xcopy;
    let mut pos = 4usize;
    // Supported Commands (0001h): opcode, service action count, service actions.
    let commands: [u8; 7] = [
        op::EXTENDED_COPY,
        1,
        op::XCOPY_LID1.to_be_bytes()[1],
        op::RECEIVE_COPY_RESULTS,
        2,
        op::RCR_COPY_STATUS.to_be_bytes()[1],
        op::RCR_OPERATING_PARAMETERS.to_be_bytes()[1],
    ];
    let body = (1 + commands.len()).next_multiple_of(4);
    put16(out, pos, 0x0001);
    put16(out, pos + 2, sat16(body));
    put(out, pos + 4, crate::bytes::sat8(commands.len()));
    put_slice(out, pos + 5, &commands);
    pos += 4 + body;
    // Parameter Data (0004h), 1Ch bytes.
    put16(out, pos, 0x0004);
    put16(out, pos + 2, 0x1C);
    put16(out, pos + 8, sat16(xcopy::MAX_CSCDS));
    put16(out, pos + 10, sat16(xcopy::MAX_SEGMENTS));
    put32(out, pos + 12, xcopy::MAX_DESCRIPTOR_LIST_LEN);
    pos += 4 + 0x1C;
    // Supported Descriptors (0008h): the segment descriptor type codes.
    let descriptors = [xcopy::SEGMENT_BLOCK_TO_BLOCK];
    let body = (1 + descriptors.len()).next_multiple_of(4);
    put16(out, pos, 0x0008);
    put16(out, pos + 2, sat16(body));
    put(out, pos + 4, crate::bytes::sat8(descriptors.len()));
    put_slice(out, pos + 5, &descriptors);
    pos += 4 + body;
    // General Copy Operations (8001h), 20h bytes.
    put16(out, pos, 0x8001);
    put16(out, pos + 2, 0x20);
    put32(out, pos + 4, 1); // TOTAL CONCURRENT COPIES
    put32(out, pos + 8, 1); // MAXIMUM IDENTIFIED CONCURRENT COPIES
    put32(out, pos + 12, xcopy::max_segment_bytes(lun.block_size));
    put(out, pos + 16, 9); // DATA SEGMENT GRANULARITY (log 2)
    put(out, pos + 17, 9); // INLINE DATA GRANULARITY (log 2)
    pos += 4 + 0x20;
    pos - 4
}
