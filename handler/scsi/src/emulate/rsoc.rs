//! REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).

use crate::bytes::{put, put16, put32, put_slice, sat16};
use crate::lun::LunInfo;
use crate::opcodes::{self, Needs, OpInfo};
use crate::sense::Sense;

/// Length of a command timeouts descriptor.
const TIMEOUTS_LEN: usize = 12;

/// SUPPORT field: supported, as described.
const SUPPORTED: u8 = 0x03;
/// SUPPORT field: not supported.
const NOT_SUPPORTED: u8 = 0x01;

/// True if the command is available on this LUN.
pub fn available(info: &OpInfo, lun: &LunInfo) -> bool {
    match info.needs {
        Needs::Always => true,
        Needs::Unmap => lun.caps.unmap,
        Needs::CompareAndWrite => lun.caps.compare_and_write,
        Needs::Alua => lun.alua.is_some(),
    }
}

/// Build the response for REPORTING OPTIONS `options` (0..=3).
pub fn respond(
    rctd: bool,
    options: u8,
    opcode: u8,
    service_action: u16,
    lun: &LunInfo,
    out: &mut [u8],
) -> Result<usize, Sense> {
    let sa_cmd = opcodes::has_service_actions(opcode);
    let found = match options {
        0 => return Ok(all_commands(rctd, lun, out)),
        // One command without service action: invalid for SA commands.
        1 if sa_cmd => return Err(Sense::invalid_field_in_cdb(2, Some(2))),
        1 => opcodes::lookup(opcode, 0),
        // One command by opcode + service action: invalid for commands we
        // know have no service actions.
        2 if !sa_cmd && opcodes::lookup(opcode, 0).is_some() => {
            return Err(Sense::invalid_field_in_cdb(2, Some(2)))
        }
        2 | 3 if sa_cmd => opcodes::lookup(opcode, service_action),
        3 => opcodes::lookup(opcode, 0),
        2 => None,
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(2))),
    };
    Ok(match found.filter(|i| available(i, lun)) {
        Some(info) => one_command(rctd, info, out),
        None => {
            put(out, 1, NOT_SUPPORTED);
            4
        }
    })
}

fn all_commands(rctd: bool, lun: &LunInfo, out: &mut [u8]) -> usize {
    let desc_len = if rctd { 8 + TIMEOUTS_LEN } else { 8 };
    let mut pos = 4usize;
    for info in opcodes::SUPPORTED.iter().filter(|i| available(i, lun)) {
        put(out, pos, info.opcode);
        let mut flags = 0u8;
        if let Some(sa) = info.service_action {
            put16(out, pos + 2, sa);
            flags |= 0x01; // SERVACTV
        }
        if rctd {
            flags |= 0x02; // CTDP
            timeouts(out, pos + 8);
        }
        put(out, pos + 5, flags);
        put16(out, pos + 6, sat16(info.cdb_len()));
        pos += desc_len;
    }
    put32(out, 0, u32::try_from(pos - 4).unwrap_or(u32::MAX));
    pos
}

fn one_command(rctd: bool, info: &OpInfo, out: &mut [u8]) -> usize {
    let len = info.cdb_len();
    put(out, 1, if rctd { 0x80 | SUPPORTED } else { SUPPORTED });
    put16(out, 2, sat16(len));
    put_slice(out, 4, info.usage);
    let mut pos = 4 + len;
    if rctd {
        timeouts(out, pos);
        pos += TIMEOUTS_LEN;
    }
    pos
}

/// Command timeouts descriptor with unspecified (0) timeouts.
fn timeouts(out: &mut [u8], pos: usize) {
    put16(out, pos, 0x0A);
}
