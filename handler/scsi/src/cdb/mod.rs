//! The decoded form of a CDB ([`Cdb`]), its length rules and the amount of
//! data each command transfers.

mod decode;

pub use decode::decode;

/// Fields shared by the READ/WRITE family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rw {
    /// First logical block.
    pub lba: u64,
    /// Number of logical blocks (READ(6)/WRITE(6): 0 already turned into 256).
    pub blocks: u32,
    /// Force unit access: the data must be on stable storage on completion.
    pub fua: bool,
    /// Disable page out (cache retention hint; may be ignored).
    pub dpo: bool,
}

/// A decoded, validated CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cdb {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE (`desc`: descriptor-format sense requested).
    RequestSense {
        /// DESC bit.
        desc: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u8,
    },
    /// INQUIRY (standard data when `!evpd`, else VPD page `page`).
    Inquiry {
        /// EVPD bit.
        evpd: bool,
        /// PAGE CODE (0 when `!evpd`).
        page: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// READ CAPACITY(10).
    ReadCapacity10,
    /// READ CAPACITY(16) (SERVICE ACTION IN(16) / 0x10).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// MODE SENSE(6) (`ten == false`) or MODE SENSE(10).
    ModeSense {
        /// MODE SENSE(10).
        ten: bool,
        /// Disable block descriptors.
        dbd: bool,
        /// Long LBA block descriptor accepted (MODE SENSE(10) only).
        llbaa: bool,
        /// Page control: 0 current, 1 changeable, 2 default, 3 saved.
        pc: u8,
        /// Page code.
        page: u8,
        /// Subpage code.
        subpage: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// MODE SELECT(6) or MODE SELECT(10); see [`crate::params::mode_select`].
    ModeSelect {
        /// MODE SELECT(10).
        ten: bool,
        /// Page format bit.
        pf: bool,
        /// Save pages bit.
        sp: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u16,
    },
    /// READ(6/10/12/16).
    Read(Rw),
    /// WRITE(6/10/12/16).
    Write(Rw),
    /// VERIFY(10/16). `bytchk`: 0 = medium verification only, 1 = compare
    /// with the Data-Out buffer (2 and 3 are rejected by the decoder).
    Verify {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks.
        blocks: u32,
        /// BYTCHK field.
        bytchk: u8,
    },
    /// WRITE AND VERIFY(10/16). `rw.fua` is always true: the data must be on
    /// the medium before it can be verified. `bytchk` is 0 or 1.
    WriteAndVerify {
        /// Range and flags.
        rw: Rw,
        /// BYTCHK field.
        bytchk: u8,
    },
    /// SYNCHRONIZE CACHE(10/16); `blocks == 0` means "to the end of the medium".
    SyncCache {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks (0 = to the end).
        blocks: u32,
        /// Return status before the flush completes.
        immed: bool,
    },
    /// UNMAP; see [`crate::params::parse_unmap`].
    Unmap {
        /// ANCHOR bit (always false: anchored LBAs are not supported and the
        /// decoder rejects ANCHOR=1).
        anchor: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u16,
    },
    /// WRITE SAME(10/16); `blocks == 0` means "to the end of the medium".
    WriteSame {
        /// First logical block.
        lba: u64,
        /// Number of logical blocks (0 = to the end).
        blocks: u32,
        /// Unmap the blocks if possible (they must then read as the data).
        unmap: bool,
        /// ANCHOR bit (always false: rejected by the decoder).
        anchor: bool,
        /// No Data-Out buffer: write zeroes (WRITE SAME(16) only).
        ndob: bool,
    },
    /// COMPARE AND WRITE: Data-Out is `blocks` of verify data followed by
    /// `blocks` of write data.
    CompareAndWrite {
        /// First logical block.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS.
        blocks: u8,
        /// Force unit access for the write.
        fua: bool,
    },
    /// START STOP UNIT (accepted, no effect).
    StartStopUnit {
        /// IMMED bit.
        immed: bool,
        /// POWER CONDITION field.
        power_condition: u8,
        /// LOEJ bit.
        loej: bool,
        /// START bit.
        start: bool,
    },
    /// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN / 0x0C).
    ReportSupportedOpcodes {
        /// Return command timeouts descriptors.
        rctd: bool,
        /// REPORTING OPTIONS (0..=3).
        options: u8,
        /// REQUESTED OPERATION CODE.
        opcode: u8,
        /// REQUESTED SERVICE ACTION.
        service_action: u16,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// REPORT TARGET PORT GROUPS (MAINTENANCE IN / 0x0A).
    ReportTargetPortGroups {
        /// PARAMETER DATA FORMAT 001b: extended header.
        extended: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// FORMAT UNIT.
    FormatUnit {
        /// FMTDATA bit (a parameter list follows).
        fmtdata: bool,
        /// LONGLIST bit.
        longlist: bool,
    },
    /// EXTENDED COPY(LID1); the parameter list is parsed by
    /// [`crate::params::xcopy::parse_extended_copy`].
    ExtendedCopy {
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// RECEIVE COPY RESULTS with a supported service action.
    ReceiveCopyResults {
        /// SERVICE ACTION ([`crate::opcodes::RCR_COPY_STATUS`] or
        /// [`crate::opcodes::RCR_OPERATING_PARAMETERS`]).
        service_action: u8,
        /// LIST IDENTIFIER.
        list_id: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// GET LBA STATUS (SERVICE ACTION IN(16) / 0x12).
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL (accepted, no effect).
    PreventAllowMediumRemoval {
        /// PREVENT field.
        prevent: u8,
    },
}

/// CDB length by group code (opcode bits 7-5), as the kernel copies it.
const GROUP_LEN: [usize; 8] = [6, 10, 10, 12, 16, 12, 10, 10];

/// The CDB length the kernel copies for this CDB's first byte: the group
/// table, or `cdb[7] + 8` for 0x7F variable-length CDBs (which need at least
/// 8 bytes to tell). `None` if it cannot be known (empty, short 0x7F).
pub fn cdb_len(cdb: &[u8]) -> Option<usize> {
    let op = *cdb.first()?;
    if op == crate::opcodes::VARIABLE_LENGTH {
        return cdb.get(7).map(|&n| usize::from(n) + 8);
    }
    GROUP_LEN.get(usize::from(op >> 5)).copied()
}

/// Bytes of Data-Out this command carries with the given block size.
pub fn data_out_len(cdb: &Cdb, block_size: u32) -> u64 {
    let bs = u64::from(block_size);
    match *cdb {
        Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } => u64::from(rw.blocks) * bs,
        Cdb::CompareAndWrite { blocks, .. } => 2 * u64::from(blocks) * bs,
        Cdb::WriteSame { ndob: true, .. } => 0,
        Cdb::WriteSame { .. } => bs,
        Cdb::Unmap { param_len, .. } | Cdb::ModeSelect { param_len, .. } => u64::from(param_len),
        Cdb::ExtendedCopy { param_len } => u64::from(param_len),
        Cdb::Verify {
            bytchk: 1, blocks, ..
        } => u64::from(blocks) * bs,
        Cdb::Verify { bytchk: 3, .. } => bs,
        _ => 0,
    }
}

/// Bytes of Data-In the initiator expects (the allocation length for the
/// emulated commands, the transfer size for READ, 0 for no-data commands).
pub fn data_in_len(cdb: &Cdb, block_size: u32) -> u64 {
    match *cdb {
        Cdb::Read(rw) => u64::from(rw.blocks) * u64::from(block_size),
        Cdb::RequestSense { alloc_len, .. } => u64::from(alloc_len),
        Cdb::Inquiry { alloc_len, .. } | Cdb::ModeSense { alloc_len, .. } => u64::from(alloc_len),
        Cdb::ReadCapacity10 => 8,
        Cdb::ReadCapacity16 { alloc_len }
        | Cdb::ReportSupportedOpcodes { alloc_len, .. }
        | Cdb::ReportTargetPortGroups { alloc_len, .. }
        | Cdb::ReceiveCopyResults { alloc_len, .. }
        | Cdb::GetLbaStatus { alloc_len, .. } => u64::from(alloc_len),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
