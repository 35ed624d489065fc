//! CDB decoding: untrusted bytes to a validated [`Cdb`].

use super::{Cdb, Rw};
use crate::bytes::{be16, be32, be64, sat16, u8_at};
use crate::opcodes as op;
use crate::sense::Sense;

/// INVALID FIELD IN CDB pointing at `byte`/`bit`.
fn bad(byte: usize, bit: u8) -> Sense {
    Sense::invalid_field_in_cdb(sat16(byte), Some(bit))
}

/// Reject RDPROTECT/WRPROTECT/VRPROTECT != 0: we have no protection info.
fn no_protect(c: &[u8]) -> Result<(), Sense> {
    if u8_at(c, 1) & 0xE0 != 0 {
        return Err(bad(1, 7));
    }
    Ok(())
}

/// Flags byte 1 of READ/WRITE(10/12/16) with the given LBA and length.
fn rw(c: &[u8], lba: u64, blocks: u32) -> Result<Rw, Sense> {
    no_protect(c)?;
    let b1 = u8_at(c, 1);
    Ok(Rw {
        lba,
        blocks,
        fua: b1 & 0x08 != 0,
        dpo: b1 & 0x10 != 0,
    })
}

/// READ(6)/WRITE(6): 21-bit LBA, length 0 means 256.
fn rw6(c: &[u8]) -> Rw {
    let lba = (u64::from(u8_at(c, 1) & 0x1F) << 16) | u64::from(be16(c, 2));
    let blocks = match u8_at(c, 4) {
        0 => 256,
        n => u32::from(n),
    };
    Rw {
        lba,
        blocks,
        fua: false,
        dpo: false,
    }
}

/// BYTCHK (byte 1 bits 2-1). Only 0 and 1 are supported.
fn bytchk(c: &[u8]) -> Result<u8, Sense> {
    match (u8_at(c, 1) >> 1) & 0x03 {
        v @ (0 | 1) => Ok(v),
        _ => Err(bad(1, 2)),
    }
}

/// (LBA, length) of a 10-byte block command.
fn range10(c: &[u8]) -> (u64, u32) {
    (u64::from(be32(c, 2)), u32::from(be16(c, 7)))
}

/// (LBA, length) of a 12-byte block command.
fn range12(c: &[u8]) -> (u64, u32) {
    (u64::from(be32(c, 2)), be32(c, 6))
}

/// (LBA, length) of a 16-byte block command.
fn range16(c: &[u8]) -> (u64, u32) {
    (be64(c, 2), be32(c, 10))
}

/// Decode a CDB.
///
/// * empty or shorter than the opcode's CDB length: INVALID FIELD IN CDB
///   (pointing at the first missing byte);
/// * unknown opcode, 0x7F variable-length CDBs: INVALID COMMAND OPERATION CODE;
/// * NACA=1 in the control byte, RD/WR/VRPROTECT != 0, unsupported BYTCHK,
///   ANCHOR=1, WRITE SAME PBDATA/LBDATA, INQUIRY CMDDT, unknown SERVICE
///   ACTION IN(16)/MAINTENANCE IN service actions, REPORT TARGET PORT GROUPS
///   parameter data formats other than 000b/001b, RSOC reporting options
///   > 3: INVALID FIELD IN CDB with the field pointer set.
///
/// Reserved bits and the GROUP NUMBER are ignored. Never panics.
pub fn decode(c: &[u8]) -> Result<Cdb, Sense> {
    let Some(&opcode) = c.first() else {
        return Err(Sense::invalid_field_in_cdb(0, None));
    };
    let Some(info) = op::SUPPORTED.iter().find(|o| o.opcode == opcode) else {
        return Err(Sense::invalid_opcode());
    };
    let len = info.cdb_len();
    if c.len() < len {
        return Err(Sense::invalid_field_in_cdb(sat16(c.len()), None));
    }
    if u8_at(c, len - 1) & 0x04 != 0 {
        return Err(bad(len - 1, 2));
    }
    let b1 = u8_at(c, 1);
    let cdb = match opcode {
        op::TEST_UNIT_READY => Cdb::TestUnitReady,
        op::REQUEST_SENSE => Cdb::RequestSense {
            desc: b1 & 0x01 != 0,
            alloc_len: u8_at(c, 4),
        },
        op::FORMAT_UNIT => {
            if b1 & 0xC0 != 0 {
                return Err(bad(1, 7)); // FMTPINFO: no protection information
            }
            Cdb::FormatUnit {
                fmtdata: b1 & 0x10 != 0,
                longlist: b1 & 0x20 != 0,
            }
        }
        op::READ_6 => Cdb::Read(rw6(c)),
        op::WRITE_6 => Cdb::Write(rw6(c)),
        op::INQUIRY => decode_inquiry(c)?,
        op::MODE_SELECT_6 => Cdb::ModeSelect {
            ten: false,
            pf: b1 & 0x10 != 0,
            sp: b1 & 0x01 != 0,
            param_len: u16::from(u8_at(c, 4)),
        },
        op::MODE_SELECT_10 => Cdb::ModeSelect {
            ten: true,
            pf: b1 & 0x10 != 0,
            sp: b1 & 0x01 != 0,
            param_len: be16(c, 7),
        },
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => decode_mode_sense(c, opcode == op::MODE_SENSE_10),
        op::START_STOP_UNIT => {
            let b4 = u8_at(c, 4);
            Cdb::StartStopUnit {
                immed: b1 & 0x01 != 0,
                power_condition: b4 >> 4,
                loej: b4 & 0x02 != 0,
                start: b4 & 0x01 != 0,
            }
        }
        op::PREVENT_ALLOW => Cdb::PreventAllowMediumRemoval {
            prevent: u8_at(c, 4) & 0x03,
        },
        op::READ_CAPACITY_10 => Cdb::ReadCapacity10,
        op::READ_10 | op::READ_12 | op::READ_16 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
            let (lba, blocks) = match len {
                10 => range10(c),
                12 => range12(c),
                _ => range16(c),
            };
            let rw = rw(c, lba, blocks)?;
            if matches!(opcode, op::READ_10 | op::READ_12 | op::READ_16) {
                Cdb::Read(rw)
            } else {
                Cdb::Write(rw)
            }
        }
        op::VERIFY_10 | op::VERIFY_16 | op::WRITE_VERIFY_10 | op::WRITE_VERIFY_16 => {
            no_protect(c)?;
            let bytchk = bytchk(c)?;
            let (lba, blocks) = if len == 10 { range10(c) } else { range16(c) };
            if matches!(opcode, op::VERIFY_10 | op::VERIFY_16) {
                Cdb::Verify {
                    lba,
                    blocks,
                    bytchk,
                }
            } else {
                let rw = Rw {
                    lba,
                    blocks,
                    fua: true,
                    dpo: b1 & 0x10 != 0,
                };
                Cdb::WriteAndVerify { rw, bytchk }
            }
        }
        op::SYNC_CACHE_10 | op::SYNC_CACHE_16 => {
            let (lba, blocks) = if len == 10 { range10(c) } else { range16(c) };
            Cdb::SyncCache {
                lba,
                blocks,
                immed: b1 & 0x02 != 0,
            }
        }
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => decode_write_same(c, len)?,
        op::UNMAP => {
            if b1 & 0x01 != 0 {
                return Err(bad(1, 0)); // ANCHOR: ANC_SUP=0
            }
            Cdb::Unmap {
                anchor: false,
                param_len: be16(c, 7),
            }
        }
        op::COMPARE_AND_WRITE => {
            no_protect(c)?;
            Cdb::CompareAndWrite {
                lba: be64(c, 2),
                blocks: u8_at(c, 13),
                fua: b1 & 0x08 != 0,
            }
        }
        op::SERVICE_ACTION_IN_16 => match u16::from(b1 & 0x1F) {
            op::SAI_READ_CAPACITY_16 => Cdb::ReadCapacity16 {
                alloc_len: be32(c, 10),
            },
            op::SAI_GET_LBA_STATUS => Cdb::GetLbaStatus {
                lba: be64(c, 2),
                alloc_len: be32(c, 10),
            },
            _ => return Err(bad(1, 4)),
        },
        op::EXTENDED_COPY => match u16::from(b1 & 0x1F) {
            op::XCOPY_LID1 => Cdb::ExtendedCopy {
                param_len: be32(c, 10),
            },
            _ => return Err(bad(1, 4)), // LID4 and the other copy service actions
        },
        op::RECEIVE_COPY_RESULTS => match u16::from(b1 & 0x1F) {
            sa @ (op::RCR_COPY_STATUS | op::RCR_OPERATING_PARAMETERS) => Cdb::ReceiveCopyResults {
                service_action: u8::try_from(sa).unwrap_or(0),
                list_id: u8_at(c, 2),
                alloc_len: be32(c, 10),
            },
            _ => return Err(bad(1, 4)),
        },
        op::MAINTENANCE_IN => match u16::from(b1 & 0x1F) {
            op::MI_REPORT_SUPPORTED_OPCODES => decode_rsoc(c)?,
            op::MI_REPORT_TARGET_PORT_GROUPS => match b1 >> 5 {
                // PARAMETER DATA FORMAT: 000b length only, 001b extended.
                f @ (0 | 1) => Cdb::ReportTargetPortGroups {
                    extended: f == 1,
                    alloc_len: be32(c, 6),
                },
                _ => return Err(bad(1, 7)),
            },
            _ => return Err(bad(1, 4)),
        },
        _ => return Err(Sense::invalid_opcode()),
    };
    Ok(cdb)
}

fn decode_inquiry(c: &[u8]) -> Result<Cdb, Sense> {
    let b1 = u8_at(c, 1);
    if b1 & 0x02 != 0 {
        return Err(bad(1, 1)); // CMDDT (obsolete)
    }
    let evpd = b1 & 0x01 != 0;
    let page = u8_at(c, 2);
    if !evpd && page != 0 {
        return Err(bad(2, 7));
    }
    Ok(Cdb::Inquiry {
        evpd,
        page,
        alloc_len: be16(c, 3),
    })
}

fn decode_mode_sense(c: &[u8], ten: bool) -> Cdb {
    let b1 = u8_at(c, 1);
    let b2 = u8_at(c, 2);
    Cdb::ModeSense {
        ten,
        dbd: b1 & 0x08 != 0,
        llbaa: ten && b1 & 0x10 != 0,
        pc: b2 >> 6,
        page: b2 & 0x3F,
        subpage: u8_at(c, 3),
        alloc_len: if ten {
            be16(c, 7)
        } else {
            u16::from(u8_at(c, 4))
        },
    }
}

fn decode_write_same(c: &[u8], len: usize) -> Result<Cdb, Sense> {
    no_protect(c)?;
    let b1 = u8_at(c, 1);
    if b1 & 0x10 != 0 {
        return Err(bad(1, 4)); // ANCHOR: ANC_SUP=0
    }
    if b1 & 0x04 != 0 {
        return Err(bad(1, 2)); // PBDATA
    }
    if b1 & 0x02 != 0 {
        return Err(bad(1, 1)); // LBDATA
    }
    let (lba, blocks) = if len == 10 { range10(c) } else { range16(c) };
    Ok(Cdb::WriteSame {
        lba,
        blocks,
        unmap: b1 & 0x08 != 0,
        anchor: false,
        ndob: len == 16 && b1 & 0x01 != 0,
    })
}

fn decode_rsoc(c: &[u8]) -> Result<Cdb, Sense> {
    let b2 = u8_at(c, 2);
    let options = b2 & 0x07;
    if options > 3 {
        return Err(bad(2, 2));
    }
    Ok(Cdb::ReportSupportedOpcodes {
        rctd: b2 & 0x80 != 0,
        options,
        opcode: u8_at(c, 3),
        service_action: be16(c, 4),
        alloc_len: be32(c, 6),
    })
}
