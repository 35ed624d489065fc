//! Checks of a decoded command against the LUN's capacity, limits and
//! capabilities (what the kernel would check for a non-passthrough device).

use super::LunInfo;
use crate::cdb::Cdb;
use crate::sense::Sense;

impl LunInfo {
    /// Validate `cdb` against this LUN before executing it:
    ///
    /// * LBA ranges (READ/WRITE/VERIFY/WRITE AND VERIFY/COMPARE AND
    ///   WRITE/SYNCHRONIZE CACHE/WRITE SAME): LBA OUT OF RANGE;
    /// * WRITE SAME above `max_write_same_blocks`, COMPARE AND WRITE above
    ///   `max_compare_write_blocks`: INVALID FIELD IN CDB (no field pointer);
    /// * READ, WRITE, VERIFY and WRITE AND VERIFY are *not* limited by
    ///   `max_xfer_blocks`: that is advice to the initiator (VPD B0), and the
    ///   kernel has already sized the data area for whatever it hands over, as
    ///   LIO's own backstores serve it (`docs/conformance.md`);
    /// * UNMAP without `caps.unmap`, COMPARE AND WRITE without
    ///   `caps.compare_and_write`: INVALID COMMAND OPERATION CODE;
    /// * WRITE SAME with UNMAP=1 or NDOB=1 while neither `caps.unmap` nor
    ///   `caps.write_zeroes` is set is still allowed (the caller can write
    ///   zeroes by hand).
    ///
    /// * GET LBA STATUS starting past the last LBA: LBA OUT OF RANGE.
    ///
    /// Note "to the end" forms (SYNCHRONIZE CACHE / WRITE SAME with 0 blocks)
    /// only need `lba <= num_blocks`.
    pub fn validate(&self, cdb: &Cdb) -> Result<(), Sense> {
        let too_long = Sense::invalid_field_in_cdb_unknown;
        match *cdb {
            Cdb::Read(rw) | Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } => {
                self.check_range(rw.lba, u64::from(rw.blocks))
            }
            Cdb::Verify { lba, blocks, .. } => self.check_range(lba, u64::from(blocks)),
            Cdb::SyncCache { lba, blocks, .. } => self.check_range(lba, u64::from(blocks)),
            Cdb::WriteSame { lba, blocks, .. } => {
                self.check_range(lba, u64::from(blocks))?;
                // 0 ("to the end", WSNZ=0) is not limited by the maximum.
                if self.max_write_same_blocks != 0 && u64::from(blocks) > self.max_write_same_blocks
                {
                    return Err(too_long());
                }
                Ok(())
            }
            Cdb::CompareAndWrite { lba, blocks, .. } => {
                if !self.caps.compare_and_write {
                    return Err(Sense::invalid_opcode());
                }
                self.check_range(lba, u64::from(blocks))?;
                if blocks > self.max_compare_write_blocks {
                    return Err(too_long());
                }
                Ok(())
            }
            Cdb::Unmap { .. } if !self.caps.unmap => Err(Sense::invalid_opcode()),
            // SBC-4 GET LBA STATUS: a starting LBA past the last one is out of range.
            Cdb::GetLbaStatus { lba, .. } if lba >= self.num_blocks => {
                Err(Sense::lba_out_of_range())
            }
            _ => Ok(()),
        }
    }
}
