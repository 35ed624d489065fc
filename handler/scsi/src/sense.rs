//! SPC-4 sense data: the [`Sense`] value and its fixed/descriptor encodings.

use crate::bytes::{be16, be32, be64, put, put16, put32, put64, u8_at};

/// Sense keys (SPC-4 table 27).
pub mod key {
    /// No specific sense key information.
    pub const NO_SENSE: u8 = 0x0;
    /// The command completed after recovery action.
    pub const RECOVERED_ERROR: u8 = 0x1;
    /// The logical unit is not accessible right now.
    pub const NOT_READY: u8 = 0x2;
    /// Non-recoverable error in the medium / backing store.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// Non-recoverable hardware (target) failure.
    pub const HARDWARE_ERROR: u8 = 0x4;
    /// Illegal parameter in the CDB or parameter list.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// Unit attention (reset, capacity change, ...).
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// Write protected or out of space.
    pub const DATA_PROTECT: u8 = 0x7;
    /// Blank / format-defined end of data.
    pub const BLANK_CHECK: u8 = 0x8;
    /// Vendor specific.
    pub const VENDOR_SPECIFIC: u8 = 0x9;
    /// EXTENDED COPY aborted.
    pub const COPY_ABORTED: u8 = 0xA;
    /// The command was aborted; the initiator may retry.
    pub const ABORTED_COMMAND: u8 = 0xB;
    /// Buffered peripheral reached end of partition.
    pub const VOLUME_OVERFLOW: u8 = 0xD;
    /// Source data did not match (COMPARE AND WRITE, VERIFY).
    pub const MISCOMPARE: u8 = 0xE;
    /// Completed (sense data descriptors only).
    pub const COMPLETED: u8 = 0xF;
}

/// Length of the TCMU sense buffer (`TCMU_SENSE_BUFFERSIZE`).
pub const SENSE_BUFFER_LEN: usize = 96;

/// Length of fixed-format sense data we emit (additional length 0x0A).
pub const FIXED_LEN: usize = 18;

/// Sense-key-specific field pointer (SKSV=1) for ILLEGAL REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True when the error is in the CDB (C/D=1), false for the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the offending field.
    pub byte: u16,
    /// Most significant bit (0..=7) of the offending field, if known (BPV).
    pub bit: Option<u8>,
}

/// Decoded sense data: key, additional sense code/qualifier and the optional
/// INFORMATION and field-pointer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key (see [`key`]).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// INFORMATION field (e.g. miscompare offset), VALID when `Some`.
    pub info: Option<u64>,
    /// Sense-key-specific field pointer.
    pub field: Option<FieldPointer>,
}

impl Sense {
    /// A sense with just key/ASC/ASCQ.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
            field: None,
        }
    }

    /// 05/20/00 INVALID COMMAND OPERATION CODE.
    pub const fn invalid_opcode() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00)
    }

    /// 05/24/00 INVALID FIELD IN CDB with a field pointer.
    pub fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            field: Some(FieldPointer {
                in_cdb: true,
                byte,
                bit: bit.map(|b| b & 7),
            }),
            ..Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00)
        }
    }

    /// 05/24/00 INVALID FIELD IN CDB without a field pointer (used when the
    /// CDB variant, and so the field position, is no longer known).
    pub const fn invalid_field_in_cdb_unknown() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00)
    }

    /// 05/0E/03 INVALID FIELD IN COMMAND INFORMATION UNIT: the transport's expected data
    /// transfer length does not match the CDB's (SAM-5; LIO's answer to a WRITE whose
    /// buffer is not the size its CDB names).
    pub const fn invalid_field_in_command_iu() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x0E, 0x03)
    }

    /// 05/26/00 INVALID FIELD IN PARAMETER LIST with a field pointer.
    pub fn invalid_field_in_param_list(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            field: Some(FieldPointer {
                in_cdb: false,
                byte,
                bit: bit.map(|b| b & 7),
            }),
            ..Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x00)
        }
    }

    /// 05/1A/00 PARAMETER LIST LENGTH ERROR.
    pub const fn param_list_length_error() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x1A, 0x00)
    }

    /// 05/26/06 TOO MANY TARGET DESCRIPTORS (EXTENDED COPY: more CSCD
    /// descriptors than the copy manager takes).
    pub const fn too_many_target_descriptors() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x06)
    }

    /// 05/26/07 UNSUPPORTED TARGET DESCRIPTOR TYPE CODE.
    pub const fn unsupported_target_descriptor() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x07)
    }

    /// 05/26/08 TOO MANY SEGMENT DESCRIPTORS.
    pub const fn too_many_segment_descriptors() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x08)
    }

    /// 05/26/09 UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE.
    pub const fn unsupported_segment_descriptor() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x09)
    }

    /// 05/00/16 OPERATION IN PROGRESS (an EXTENDED COPY whose list
    /// identifier names a copy still running).
    pub const fn operation_in_progress() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x00, 0x16)
    }

    /// 0A/0D/02 COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE: a copy
    /// source or destination this copy manager cannot reach (or, as LIO
    /// answers, cannot use: a segment past its capacity).
    pub const fn copy_target_not_reachable() -> Sense {
        Sense::new(key::COPY_ABORTED, 0x0D, 0x02)
    }

    /// 05/21/00 LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00)
    }

    /// 0E/1D/00 MISCOMPARE DURING VERIFY OPERATION; `offset` is the byte
    /// offset of the first mismatch (INFORMATION field).
    pub const fn miscompare(offset: u64) -> Sense {
        Sense {
            key: key::MISCOMPARE,
            asc: 0x1D,
            ascq: 0x00,
            info: Some(offset),
            field: None,
        }
    }

    /// 03/11/00 UNRECOVERED READ ERROR.
    pub const fn unrecovered_read_error() -> Sense {
        Sense::new(key::MEDIUM_ERROR, 0x11, 0x00)
    }

    /// 03/0C/00 WRITE ERROR.
    pub const fn write_error() -> Sense {
        Sense::new(key::MEDIUM_ERROR, 0x0C, 0x00)
    }

    /// 04/44/00 INTERNAL TARGET FAILURE.
    pub const fn internal_target_failure() -> Sense {
        Sense::new(key::HARDWARE_ERROR, 0x44, 0x00)
    }

    /// 06/2A/09 CAPACITY DATA HAS CHANGED.
    pub const fn capacity_data_changed() -> Sense {
        Sense::new(key::UNIT_ATTENTION, 0x2A, 0x09)
    }

    /// 06/2A/01 MODE PARAMETERS CHANGED.
    pub const fn mode_parameters_changed() -> Sense {
        Sense::new(key::UNIT_ATTENTION, 0x2A, 0x01)
    }

    /// 06/29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const fn power_on_reset() -> Sense {
        Sense::new(key::UNIT_ATTENTION, 0x29, 0x00)
    }

    /// 07/27/00 WRITE PROTECTED.
    pub const fn write_protected() -> Sense {
        Sense::new(key::DATA_PROTECT, 0x27, 0x00)
    }

    /// 07/27/07 SPACE ALLOCATION FAILED WRITE PROTECT (thin pool exhausted).
    pub const fn space_allocation_failed() -> Sense {
        Sense::new(key::DATA_PROTECT, 0x27, 0x07)
    }

    /// 02/04/0A LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE
    /// TRANSITION. Retried by Linux (sd, scsi_dh_alua) and other initiators.
    pub const fn not_ready_in_transition() -> Sense {
        Sense::new(key::NOT_READY, 0x04, 0x0A)
    }

    /// 02/04/0B LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
    pub const fn alua_standby() -> Sense {
        Sense::new(key::NOT_READY, 0x04, 0x0B)
    }

    /// 02/04/0C LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE.
    pub const fn alua_unavailable() -> Sense {
        Sense::new(key::NOT_READY, 0x04, 0x0C)
    }

    /// 02/04/12 LOGICAL UNIT NOT READY, OFFLINE (the ALUA offline state).
    pub const fn alua_offline() -> Sense {
        Sense::new(key::NOT_READY, 0x04, 0x12)
    }

    /// 02/04/01 LOGICAL UNIT IS IN PROCESS OF BECOMING READY. Retryable.
    pub const fn not_ready_becoming_ready() -> Sense {
        Sense::new(key::NOT_READY, 0x04, 0x01)
    }

    /// 02/08/00 LOGICAL UNIT COMMUNICATION FAILURE.
    pub const fn lun_communication_failure() -> Sense {
        Sense::new(key::NOT_READY, 0x08, 0x00)
    }

    /// 05/39/00 SAVING PARAMETERS NOT SUPPORTED.
    pub const fn saving_params_unsupported() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00)
    }

    /// 05/00/00 with NO ASC: used for "no sense" replies.
    pub const fn no_sense() -> Sense {
        Sense::new(key::NO_SENSE, 0x00, 0x00)
    }

    /// The three sense-key-specific bytes (15..=17 in fixed format).
    fn sks_bytes(&self) -> Option<[u8; 3]> {
        let f = self.field?;
        let mut b0 = 0x80u8; // SKSV
        if f.in_cdb {
            b0 |= 0x40; // C/D
        }
        if let Some(bit) = f.bit {
            b0 |= 0x08 | (bit & 0x07); // BPV + BIT POINTER
        }
        let [hi, lo] = f.byte.to_be_bytes();
        Some([b0, hi, lo])
    }

    /// Fixed-format (0x70) sense data into the 96-byte TCMU sense buffer.
    ///
    /// The whole buffer is written (bytes after the sense data are zeroed).
    /// The ADDITIONAL SENSE LENGTH is 0x0A (18 bytes in all). VALID and
    /// INFORMATION are set when `info` is `Some` and fits 32 bits; SKSV and
    /// the field pointer (bytes 15..=17) when `field` is `Some`.
    pub fn to_fixed(&self, out: &mut [u8; SENSE_BUFFER_LEN]) {
        out.fill(0);
        out[0] = 0x70;
        out[2] = self.key & 0x0F;
        if let Some(info) = self.info.and_then(|i| u32::try_from(i).ok()) {
            out[0] |= 0x80;
            put32(out, 3, info);
        }
        out[7] = 0x0A;
        out[12] = self.asc;
        out[13] = self.ascq;
        if let Some(sks) = self.sks_bytes() {
            out[15..18].copy_from_slice(&sks);
        }
    }

    /// Descriptor-format (0x72) sense data into `out` (truncated to its
    /// length). Includes an information descriptor when `info` is `Some`
    /// and a sense-key-specific descriptor when `field` is `Some`. Returns
    /// the full length of the sense data.
    pub fn to_descriptor(&self, out: &mut [u8]) -> usize {
        out.fill(0);
        put(out, 0, 0x72);
        put(out, 1, self.key & 0x0F);
        put(out, 2, self.asc);
        put(out, 3, self.ascq);
        let mut len = 8usize;
        if let Some(info) = self.info {
            put(out, len, 0x00); // information descriptor
            put(out, len + 1, 0x0A);
            put(out, len + 2, 0x80); // VALID
            put64(out, len + 4, info);
            len += 12;
        }
        if let Some(sks) = self.sks_bytes() {
            put(out, len, 0x02); // sense key specific descriptor
            put(out, len + 1, 0x06);
            put(out, len + 4, sks[0]);
            put16(out, len + 5, u16::from_be_bytes([sks[1], sks[2]]));
            len += 8;
        }
        put(out, 7, u8::try_from(len - 8).unwrap_or(u8::MAX));
        len
    }

    /// Parse fixed (0x70/0x71) or descriptor (0x72/0x73) sense data.
    /// Returns `None` for any other response code or an empty buffer.
    pub fn from_bytes(buf: &[u8]) -> Option<Sense> {
        match u8_at(buf, 0) & 0x7F {
            0x70 | 0x71 => Some(Self::from_fixed(buf)),
            0x72 | 0x73 => Some(Self::from_descriptor(buf)),
            _ => None,
        }
    }

    fn from_fixed(buf: &[u8]) -> Sense {
        let valid = u8_at(buf, 0) & 0x80 != 0;
        let add_len = usize::from(u8_at(buf, 7));
        let avail = buf.len().min(8 + add_len);
        let b = buf.get(..avail).unwrap_or(buf);
        Sense {
            key: u8_at(b, 2) & 0x0F,
            asc: u8_at(b, 12),
            ascq: u8_at(b, 13),
            info: valid.then(|| u64::from(be32(b, 3))),
            field: parse_sks(u8_at(b, 15), be16(b, 16)),
        }
    }

    fn from_descriptor(buf: &[u8]) -> Sense {
        let mut s = Sense::new(u8_at(buf, 1) & 0x0F, u8_at(buf, 2), u8_at(buf, 3));
        let end = buf.len().min(8 + usize::from(u8_at(buf, 7)));
        let mut pos = 8usize;
        while pos + 2 <= end {
            let dtype = u8_at(buf, pos);
            let dlen = usize::from(u8_at(buf, pos + 1));
            let d = buf.get(pos..end.min(pos + 2 + dlen)).unwrap_or(&[]);
            match dtype {
                0x00 if u8_at(d, 2) & 0x80 != 0 => s.info = Some(be64(d, 4)),
                0x02 => s.field = parse_sks(u8_at(d, 4), be16(d, 5)),
                _ => {}
            }
            pos += 2 + dlen;
        }
        s
    }
}

/// Decode the three sense-key-specific bytes as a field pointer.
fn parse_sks(b0: u8, byte: u16) -> Option<FieldPointer> {
    (b0 & 0x80 != 0).then_some(FieldPointer {
        in_cdb: b0 & 0x40 != 0,
        byte,
        bit: (b0 & 0x08 != 0).then_some(b0 & 0x07),
    })
}

#[cfg(test)]
#[path = "sense_tests.rs"]
mod tests;
