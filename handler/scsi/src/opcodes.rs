//! SCSI operation codes and the table of commands this crate decodes.

/// TEST UNIT READY.
pub const TEST_UNIT_READY: u8 = 0x00;
/// REQUEST SENSE.
pub const REQUEST_SENSE: u8 = 0x03;
/// FORMAT UNIT.
pub const FORMAT_UNIT: u8 = 0x04;
/// READ(6).
pub const READ_6: u8 = 0x08;
/// WRITE(6).
pub const WRITE_6: u8 = 0x0A;
/// INQUIRY.
pub const INQUIRY: u8 = 0x12;
/// MODE SELECT(6).
pub const MODE_SELECT_6: u8 = 0x15;
/// MODE SENSE(6).
pub const MODE_SENSE_6: u8 = 0x1A;
/// START STOP UNIT.
pub const START_STOP_UNIT: u8 = 0x1B;
/// PREVENT ALLOW MEDIUM REMOVAL.
pub const PREVENT_ALLOW: u8 = 0x1E;
/// READ CAPACITY(10).
pub const READ_CAPACITY_10: u8 = 0x25;
/// READ(10).
pub const READ_10: u8 = 0x28;
/// WRITE(10).
pub const WRITE_10: u8 = 0x2A;
/// WRITE AND VERIFY(10).
pub const WRITE_VERIFY_10: u8 = 0x2E;
/// VERIFY(10).
pub const VERIFY_10: u8 = 0x2F;
/// SYNCHRONIZE CACHE(10).
pub const SYNC_CACHE_10: u8 = 0x35;
/// WRITE SAME(10).
pub const WRITE_SAME_10: u8 = 0x41;
/// UNMAP.
pub const UNMAP: u8 = 0x42;
/// MODE SELECT(10).
pub const MODE_SELECT_10: u8 = 0x55;
/// MODE SENSE(10).
pub const MODE_SENSE_10: u8 = 0x5A;
/// Variable-length CDB (not supported: decoded as invalid opcode).
pub const VARIABLE_LENGTH: u8 = 0x7F;
/// EXTENDED COPY (LID1 is service action 00h; see [`XCOPY_LID1`]).
pub const EXTENDED_COPY: u8 = 0x83;
/// RECEIVE COPY RESULTS; see [`RCR_COPY_STATUS`], [`RCR_OPERATING_PARAMETERS`].
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
/// READ(16).
pub const READ_16: u8 = 0x88;
/// COMPARE AND WRITE.
pub const COMPARE_AND_WRITE: u8 = 0x89;
/// WRITE(16).
pub const WRITE_16: u8 = 0x8A;
/// WRITE AND VERIFY(16).
pub const WRITE_VERIFY_16: u8 = 0x8E;
/// VERIFY(16).
pub const VERIFY_16: u8 = 0x8F;
/// SYNCHRONIZE CACHE(16).
pub const SYNC_CACHE_16: u8 = 0x91;
/// WRITE SAME(16).
pub const WRITE_SAME_16: u8 = 0x93;
/// SERVICE ACTION IN(16); see [`SAI_READ_CAPACITY_16`].
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// REPORT LUNS (answered by the kernel, never by us).
pub const REPORT_LUNS: u8 = 0xA0;
/// MAINTENANCE IN; see [`MI_REPORT_SUPPORTED_OPCODES`].
pub const MAINTENANCE_IN: u8 = 0xA3;
/// READ(12).
pub const READ_12: u8 = 0xA8;
/// WRITE(12).
pub const WRITE_12: u8 = 0xAA;

/// SERVICE ACTION IN(16) service action: READ CAPACITY(16).
pub const SAI_READ_CAPACITY_16: u16 = 0x10;
/// SERVICE ACTION IN(16) service action: GET LBA STATUS.
pub const SAI_GET_LBA_STATUS: u16 = 0x12;
/// EXTENDED COPY service action: LID1 (the only one supported).
pub const XCOPY_LID1: u16 = 0x00;
/// RECEIVE COPY RESULTS service action: COPY STATUS.
pub const RCR_COPY_STATUS: u16 = 0x00;
/// RECEIVE COPY RESULTS service action: OPERATING PARAMETERS.
pub const RCR_OPERATING_PARAMETERS: u16 = 0x03;
/// MAINTENANCE IN service action: REPORT TARGET PORT GROUPS.
pub const MI_REPORT_TARGET_PORT_GROUPS: u16 = 0x0A;
/// MAINTENANCE IN service action: REPORT SUPPORTED OPERATION CODES.
pub const MI_REPORT_SUPPORTED_OPCODES: u16 = 0x0C;

/// Which LUN capability a command needs to be advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Always supported.
    Always,
    /// Only when `Caps::unmap` (UNMAP).
    Unmap,
    /// Only when `Caps::compare_and_write` (COMPARE AND WRITE).
    CompareAndWrite,
    /// Only when the LUN has ALUA target port groups (REPORT TARGET PORT
    /// GROUPS).
    Alua,
}

/// One supported command, as reported by REPORT SUPPORTED OPERATION CODES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for commands that have one.
    pub service_action: Option<u16>,
    /// CDB usage data: byte 0 is the opcode, the service action sits in its
    /// field, every other bit set is a bit the decoder uses or checks. Its
    /// length is the CDB length.
    pub usage: &'static [u8],
    /// Capability required for the command to be advertised.
    pub needs: Needs,
}

impl OpInfo {
    /// The CDB length of this command.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

const fn op(opcode: u8, usage: &'static [u8]) -> OpInfo {
    OpInfo {
        opcode,
        service_action: None,
        usage,
        needs: Needs::Always,
    }
}

const fn op_sa(opcode: u8, sa: u16, usage: &'static [u8]) -> OpInfo {
    OpInfo {
        opcode,
        service_action: Some(sa),
        usage,
        needs: Needs::Always,
    }
}

const FF: u8 = 0xFF;
/// Control byte usage: NACA is checked (and rejected).
const CTL: u8 = 0x04;

/// Every command [`crate::cdb::decode`] accepts, sorted by opcode then
/// service action.
pub const SUPPORTED: &[OpInfo] = &[
    op(TEST_UNIT_READY, &[TEST_UNIT_READY, 0, 0, 0, 0, CTL]),
    op(REQUEST_SENSE, &[REQUEST_SENSE, 0x01, 0, 0, FF, CTL]),
    op(FORMAT_UNIT, &[FORMAT_UNIT, 0xF0, 0, 0, 0, CTL]),
    op(READ_6, &[READ_6, 0x1F, FF, FF, FF, CTL]),
    op(WRITE_6, &[WRITE_6, 0x1F, FF, FF, FF, CTL]),
    op(INQUIRY, &[INQUIRY, 0x03, FF, FF, FF, CTL]),
    op(MODE_SELECT_6, &[MODE_SELECT_6, 0x11, 0, 0, FF, CTL]),
    op(MODE_SENSE_6, &[MODE_SENSE_6, 0x08, FF, FF, FF, CTL]),
    op(START_STOP_UNIT, &[START_STOP_UNIT, 0x01, 0, 0, 0xF3, CTL]),
    op(PREVENT_ALLOW, &[PREVENT_ALLOW, 0, 0, 0, 0x03, CTL]),
    op(
        READ_CAPACITY_10,
        &[READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, CTL],
    ),
    op(READ_10, &[READ_10, 0xF8, FF, FF, FF, FF, 0, FF, FF, CTL]),
    op(WRITE_10, &[WRITE_10, 0xF8, FF, FF, FF, FF, 0, FF, FF, CTL]),
    op(
        WRITE_VERIFY_10,
        &[WRITE_VERIFY_10, 0xF6, FF, FF, FF, FF, 0, FF, FF, CTL],
    ),
    op(
        VERIFY_10,
        &[VERIFY_10, 0xF6, FF, FF, FF, FF, 0, FF, FF, CTL],
    ),
    op(
        SYNC_CACHE_10,
        &[SYNC_CACHE_10, 0x02, FF, FF, FF, FF, 0, FF, FF, CTL],
    ),
    op(
        WRITE_SAME_10,
        &[WRITE_SAME_10, 0xFE, FF, FF, FF, FF, 0, FF, FF, CTL],
    ),
    OpInfo {
        needs: Needs::Unmap,
        ..op(UNMAP, &[UNMAP, 0x01, 0, 0, 0, 0, 0, FF, FF, CTL])
    },
    op(
        MODE_SELECT_10,
        &[MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, FF, FF, CTL],
    ),
    op(
        MODE_SENSE_10,
        &[MODE_SENSE_10, 0x18, FF, FF, 0, 0, 0, FF, FF, CTL],
    ),
    op_sa(
        EXTENDED_COPY,
        XCOPY_LID1,
        &[
            EXTENDED_COPY,
            0x00,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op_sa(
        RECEIVE_COPY_RESULTS,
        RCR_COPY_STATUS,
        &[
            RECEIVE_COPY_RESULTS,
            0x00,
            FF,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op_sa(
        RECEIVE_COPY_RESULTS,
        RCR_OPERATING_PARAMETERS,
        &[
            RECEIVE_COPY_RESULTS,
            0x03,
            FF,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op(
        READ_16,
        &[
            READ_16, 0xF8, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, CTL,
        ],
    ),
    OpInfo {
        needs: Needs::CompareAndWrite,
        ..op(
            COMPARE_AND_WRITE,
            &[
                COMPARE_AND_WRITE,
                0xF8,
                FF,
                FF,
                FF,
                FF,
                FF,
                FF,
                FF,
                FF,
                0,
                0,
                0,
                FF,
                0,
                CTL,
            ],
        )
    },
    op(
        WRITE_16,
        &[
            WRITE_16, 0xF8, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, CTL,
        ],
    ),
    op(
        WRITE_VERIFY_16,
        &[
            WRITE_VERIFY_16,
            0xF6,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op(
        VERIFY_16,
        &[
            VERIFY_16, 0xF6, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, CTL,
        ],
    ),
    op(
        SYNC_CACHE_16,
        &[
            SYNC_CACHE_16,
            0x02,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op(
        WRITE_SAME_16,
        &[
            WRITE_SAME_16,
            0xFF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op_sa(
        SERVICE_ACTION_IN_16,
        SAI_READ_CAPACITY_16,
        &[
            SERVICE_ACTION_IN_16,
            0x10,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op_sa(
        SERVICE_ACTION_IN_16,
        SAI_GET_LBA_STATUS,
        &[
            SERVICE_ACTION_IN_16,
            0x12,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    OpInfo {
        needs: Needs::Alua,
        ..op_sa(
            MAINTENANCE_IN,
            MI_REPORT_TARGET_PORT_GROUPS,
            &[
                MAINTENANCE_IN,
                0xE0 | 0x0A,
                0,
                0,
                0,
                0,
                FF,
                FF,
                FF,
                FF,
                0,
                CTL,
            ],
        )
    },
    op_sa(
        MAINTENANCE_IN,
        MI_REPORT_SUPPORTED_OPCODES,
        &[
            MAINTENANCE_IN,
            0x0C,
            0x87,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            CTL,
        ],
    ),
    op(
        READ_12,
        &[READ_12, 0xF8, FF, FF, FF, FF, FF, FF, FF, FF, 0, CTL],
    ),
    op(
        WRITE_12,
        &[WRITE_12, 0xF8, FF, FF, FF, FF, FF, FF, FF, FF, 0, CTL],
    ),
];

/// True if `opcode` is one of ours that has service actions.
pub fn has_service_actions(opcode: u8) -> bool {
    matches!(
        opcode,
        EXTENDED_COPY | RECEIVE_COPY_RESULTS | SERVICE_ACTION_IN_16 | MAINTENANCE_IN
    )
}

/// Look up a command in [`SUPPORTED`]. `service_action` is ignored for
/// commands without service actions.
pub fn lookup(opcode: u8, service_action: u16) -> Option<&'static OpInfo> {
    SUPPORTED
        .iter()
        .find(|o| o.opcode == opcode && o.service_action.map_or(true, |sa| sa == service_action))
}
