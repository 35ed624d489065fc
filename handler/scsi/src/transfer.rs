//! How a data command fits the buffer the fabric handed over.
//!
//! The kernel gives a TCMU handler the buffer the initiator announced (iSCSI's expected data
//! transfer length), which may differ from what the CDB names. LIO's own backstores decide
//! as follows (its generic size check), and so do we (`docs/conformance.md`):
//!
//! * READ: the transfer is what fits; the initiator sees the residual. Never refused.
//! * WRITE, WRITE AND VERIFY, COMPARE AND WRITE (LIO's "data CDBs"): any mismatch is refused
//!   with INVALID FIELD IN COMMAND INFORMATION UNIT, nothing is written.
//! * Other commands with Data-Out (WRITE SAME, UNMAP, VERIFY with BYTCHK): a buffer shorter
//!   than the CDB needs is INVALID FIELD IN CDB; a longer one is fine.

use crate::cdb::{data_out_len, Cdb};
use crate::sense::Sense;

/// Check the fabric's buffer of `have` bytes against what `cdb` transfers.
pub fn check_buffer(cdb: &Cdb, block_size: u32, have: u64) -> Result<(), Sense> {
    let want = data_out_len(cdb, block_size);
    match cdb {
        Cdb::Read(_) => Ok(()),
        Cdb::Write(_) | Cdb::WriteAndVerify { .. } | Cdb::CompareAndWrite { .. } => {
            if want == have {
                Ok(())
            } else {
                Err(Sense::invalid_field_in_command_iu())
            }
        }
        _ if want > have => Err(Sense::invalid_field_in_cdb_unknown()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
