//! Emulation of the commands answered without touching the backing store.

mod capacity;
mod inquiry;
mod mode_sense;
mod rsoc;
mod vpd;

use crate::cdb::Cdb;
use crate::lun::LunInfo;
use crate::sense::Sense;

pub use vpd::SUPPORTED_VPD_PAGES;

/// Answer an emulated command: TEST UNIT READY, REQUEST SENSE, INQUIRY
/// (standard data and VPD pages 0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2),
/// READ CAPACITY(10/16), MODE SENSE(6/10) (caching, control, all pages),
/// REPORT SUPPORTED OPERATION CODES, REPORT TARGET PORT GROUPS (when the LUN
/// has ALUA groups), START STOP UNIT, FORMAT UNIT (without
/// a parameter list), PREVENT ALLOW MEDIUM REMOVAL and RECEIVE COPY RESULTS
/// (OPERATING PARAMETERS; COPY STATUS needs the copy manager's state and is
/// answered by the handler).
///
/// `out` is zeroed, then the response is written into it (truncated to its
/// length). Returns the full length of the response, which may exceed
/// `out.len()`; the caller truncates to the allocation length and the
/// Data-In buffer. Errors are ILLEGAL REQUEST senses; any other command
/// (a data command, MODE SELECT, UNMAP) gives INVALID COMMAND OPERATION
/// CODE since it is not emulated here.
pub fn respond(cdb: &Cdb, lun: &LunInfo, out: &mut [u8]) -> Result<usize, Sense> {
    out.fill(0);
    match *cdb {
        Cdb::TestUnitReady
        | Cdb::StartStopUnit { .. }
        | Cdb::PreventAllowMediumRemoval { .. }
        | Cdb::FormatUnit { fmtdata: false, .. } => Ok(0),
        // A parameter list would carry a defect list / protection settings
        // we cannot honour.
        Cdb::FormatUnit { fmtdata: true, .. } => Err(Sense::invalid_field_in_cdb(1, Some(4))),
        Cdb::RequestSense { desc, .. } => Ok(request_sense(desc, out)),
        Cdb::Inquiry { evpd: false, .. } => Ok(inquiry::standard(lun, out)),
        Cdb::Inquiry {
            evpd: true, page, ..
        } => vpd::respond(page, lun, out),
        Cdb::ReadCapacity10 => Ok(capacity::read_capacity_10(lun, out)),
        Cdb::ReadCapacity16 { .. } => Ok(capacity::read_capacity_16(lun, out)),
        Cdb::ModeSense {
            ten,
            dbd,
            llbaa,
            pc,
            page,
            subpage,
            ..
        } => {
            let req = mode_sense::Request {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                subpage,
            };
            mode_sense::respond(&req, lun, out)
        }
        Cdb::ReportSupportedOpcodes {
            rctd,
            options,
            opcode,
            service_action,
            ..
        } => rsoc::respond(rctd, options, opcode, service_action, lun, out),
        Cdb::ReportTargetPortGroups { extended, .. } => match &lun.alua {
            Some(alua) => Ok(alua.report(extended, out)),
            // No target port groups known: the service action is refused as before.
            None => Err(Sense::invalid_field_in_cdb(1, Some(4))),
        },
        // LIST IDENTIFIER is reserved for OPERATING PARAMETERS: ignored.
        Cdb::ReceiveCopyResults { service_action, .. }
            if u16::from(service_action) == crate::opcodes::RCR_OPERATING_PARAMETERS =>
        {
            Ok(crate::params::xcopy::operating_parameters(
                lun.block_size,
                out,
            ))
        }
        _ => Err(Sense::invalid_opcode()),
    }
}

/// REQUEST SENSE: the kernel reports pending unit attentions itself, so we
/// never have deferred sense: NO SENSE in the requested format.
fn request_sense(desc: bool, out: &mut [u8]) -> usize {
    let s = Sense::no_sense();
    if desc {
        return s.to_descriptor(out);
    }
    let mut fixed = [0u8; crate::sense::SENSE_BUFFER_LEN];
    s.to_fixed(&mut fixed);
    let n = crate::sense::FIXED_LEN;
    crate::bytes::put_slice(out, 0, fixed.get(..n).unwrap_or(&[]));
    n
}

#[cfg(test)]
mod tests;
