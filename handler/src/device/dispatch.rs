//! What to do with one command: pure decisions, no device state, no ring, no clock.
//!
//! The device thread decodes a command's CDB and asks [`decide`] what to do with it, given
//! the facts it holds about the LUN ([`Facts`]): answer it at once with an outcome, emulate
//! it into its Data-In buffer ([`emulate`]), apply a MODE SELECT ([`mode_select`]), or send it
//! to the backend. [`class_of`] names the command's class for the counters. The side effects
//! (taking the pending UNIT ATTENTION, re-reading the ALUA groups, copying to and from the
//! data area) stay with the caller, which asks [`receives_unit_attention`] and
//! [`rereads_alua`] when to perform them. Any device loop can use these functions as they
//! are: one thread per LUN today, shared event loops tomorrow.

use super::context::Outcome;
use tcmu_scsi::cdb::{self, Cdb};
use tcmu_scsi::lun::LunInfo;
use tcmu_scsi::params;
use tcmu_scsi::sense::Sense;
use tcmu_scsi::status;
use tcmu_warden_supervisor::metrics::OpClass;

/// What the device knows about its LUN when a command arrives.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The LUN as the initiator sees it.
    pub lun: &'a LunInfo,
    /// The access state of the LUN's target port group (`Alua::local_state`); None: no ALUA.
    pub alua_state: Option<u8>,
    /// The backend's health monitor says the backend is lost.
    pub backend_lost: bool,
    /// Bytes of the command's data buffer in the ring.
    pub data_len: u64,
}

/// The decision for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Complete it now with this outcome.
    Done(Outcome),
    /// Answer it without the backend: [`emulate`] into its Data-In buffer.
    Emulate,
    /// Apply a MODE SELECT whose parameter list is in its Data-Out buffer ([`mode_select`]).
    ModeSelect {
        /// MODE SELECT(10).
        ten: bool,
        /// Page format.
        pf: bool,
        /// Save pages.
        sp: bool,
        /// Parameter list length.
        param_len: u16,
    },
    /// The backend must run it (a worker, or the device thread itself for a READ or WRITE).
    Backend,
    /// A data command refused while the backend is lost (NOT READY 04/0A); counted apart.
    FailedFast,
}

impl From<Sense> for Decision {
    fn from(s: Sense) -> Decision {
        Decision::Done(s.into())
    }
}

/// Whether a command may receive a pending UNIT ATTENTION: all but INQUIRY and REQUEST SENSE
/// (SPC-4 5.14).
#[must_use]
pub fn receives_unit_attention(c: &Cdb) -> bool {
    !matches!(c, Cdb::Inquiry { .. } | Cdb::RequestSense { .. })
}

/// Whether a command reads the ALUA groups afresh before it is decided (REPORT TARGET PORT
/// GROUPS and INQUIRY report them; other commands use a cached state for a while).
#[must_use]
pub fn rereads_alua(c: &Cdb) -> bool {
    matches!(c, Cdb::ReportTargetPortGroups { .. } | Cdb::Inquiry { .. })
}

/// Whether a command moves or checks blocks, so the backend must run it.
#[must_use]
pub fn is_data_command(c: &Cdb) -> bool {
    matches!(
        c,
        Cdb::Read(_)
            | Cdb::Write(_)
            | Cdb::WriteAndVerify { .. }
            | Cdb::Verify { .. }
            | Cdb::SyncCache { .. }
            | Cdb::Unmap { .. }
            | Cdb::WriteSame { .. }
            | Cdb::CompareAndWrite { .. }
            | Cdb::ExtendedCopy { .. }
            | Cdb::GetLbaStatus { .. }
    ) || matches!(c, Cdb::ReceiveCopyResults { service_action, .. }
        if u16::from(*service_action) == tcmu_scsi::opcodes::RCR_COPY_STATUS)
}

/// Decide a decoded command (after any UNIT ATTENTION was reported). May rewrite `c`: a WRITE
/// SAME of zero blocks becomes one to the end of the medium.
pub fn decide(c: &mut Cdb, f: &Facts<'_>) -> Decision {
    // Commands the LUN's target port group state does not allow (SPC-4 5.15.2.4).
    if let Err(s) = tcmu_scsi::alua::check_state(f.alua_state, c) {
        return s.into();
    }
    match *c {
        Cdb::ModeSelect {
            ten,
            pf,
            sp,
            param_len,
        } => Decision::ModeSelect {
            ten,
            pf,
            sp,
            param_len,
        },
        _ if is_data_command(c) => check_data_command(c, f),
        // A path checker (multipathd's tur) sees a lost backend as a path in transition.
        Cdb::TestUnitReady if f.backend_lost => Sense::not_ready_in_transition().into(),
        _ => Decision::Emulate,
    }
}

/// Range, limit and length checks of a data command; it goes to the backend when they pass.
/// While the backend is lost it fails at once with the retryable NOT READY 04/0A.
pub fn check_data_command(c: &mut Cdb, f: &Facts<'_>) -> Decision {
    if f.backend_lost {
        return Decision::FailedFast;
    }
    let lun = f.lun;
    if let Err(s) = lun.validate(c) {
        return s.into();
    }
    let have = f.data_len;
    // The fabric's buffer against the CDB's length, as LIO decides (a READ gets what fits).
    if let Err(s) = tcmu_scsi::transfer::check_buffer(c, lun.block_size, have) {
        return s.into();
    }
    match c {
        Cdb::Read(rw) | Cdb::Write(rw) | Cdb::WriteAndVerify { rw, .. } if rw.blocks == 0 => {
            Decision::Done(Outcome::GOOD)
        }
        Cdb::Read(_) if have == 0 => Decision::Done(Outcome::GOOD),
        Cdb::Verify { blocks: 0, .. }
        | Cdb::CompareAndWrite { blocks: 0, .. }
        | Cdb::Unmap { param_len: 0, .. }
        | Cdb::ExtendedCopy { param_len: 0 } => Decision::Done(Outcome::GOOD),
        Cdb::WriteSame { lba, blocks, .. } if *blocks == 0 => {
            // WSNZ=0: zero blocks means "to the end of the medium", within the limit.
            let rest = lun.num_blocks.saturating_sub(*lba);
            match u32::try_from(rest) {
                Ok(n)
                    if n > 0
                        && (lun.max_write_same_blocks == 0
                            || u64::from(n) <= lun.max_write_same_blocks) =>
                {
                    *blocks = n;
                    Decision::Backend
                }
                Ok(0) => Sense::lba_out_of_range().into(),
                _ => Sense::invalid_field_in_cdb_unknown().into(),
            }
        }
        _ => Decision::Backend,
    }
}

/// An emulated answer, built in the caller's scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emulated {
    /// Bytes of the scratch buffer to copy to the start of the Data-In buffer.
    pub copy: usize,
    /// Zero the rest of the Data-In buffer from `copy` on (never leave stale data of earlier
    /// commands in it) and report this many valid bytes; None: the answer fills the buffer.
    pub read_len: Option<u32>,
}

impl Emulated {
    /// The command's outcome.
    #[must_use]
    pub fn outcome(self) -> Outcome {
        Outcome {
            status: status::GOOD,
            sense: None,
            read_len: self.read_len,
        }
    }
}

/// Answer a command that needs no backend into `scratch`, clipped to the CDB's allocation
/// length and to the command's buffer of `data_len` bytes.
///
/// # Errors
/// The sense the emulation refuses the command with.
pub fn emulate(
    c: &Cdb,
    lun: &LunInfo,
    data_len: u64,
    scratch: &mut [u8],
) -> Result<Emulated, Sense> {
    let full = tcmu_scsi::emulate::respond(c, lun, scratch)?;
    let want = cdb::data_in_len(c, 512).min(data_len);
    let n = u64::try_from(full)
        .unwrap_or(u64::MAX)
        .min(want)
        .min(scratch.len() as u64);
    Ok(Emulated {
        copy: usize::try_from(n).unwrap_or(0),
        read_len: if n < data_len {
            u32::try_from(n).ok()
        } else {
            None
        },
    })
}

/// Check a MODE SELECT whose first `got` bytes of parameter list (of `param_len` asked for)
/// are `list`, and say what it changes.
///
/// # Errors
/// PARAMETER LIST LENGTH ERROR when the buffer held less than the CDB announced, or the
/// sense `tcmu_scsi::params::mode_select` refuses the list with.
pub fn mode_select(
    ten: bool,
    pf: bool,
    sp: bool,
    param_len: u16,
    list: &[u8],
    lun: &LunInfo,
) -> Result<params::ModeChanges, Sense> {
    if list.len() < usize::from(param_len) {
        return Err(Sense::param_list_length_error());
    }
    params::mode_select(ten, pf, sp, list, lun)
}

/// The counters' class of a decoded command.
#[must_use]
pub fn class_of(cdb: &Cdb) -> OpClass {
    match cdb {
        Cdb::Read(_) => OpClass::Read,
        Cdb::Write(_) => OpClass::Write,
        Cdb::SyncCache { .. } => OpClass::Flush,
        Cdb::Unmap { .. } => OpClass::Unmap,
        Cdb::WriteSame { .. } => OpClass::WriteSame,
        Cdb::CompareAndWrite { .. } => OpClass::CompareAndWrite,
        Cdb::Verify { .. } | Cdb::WriteAndVerify { .. } => OpClass::Verify,
        _ => OpClass::Emulated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lun() -> LunInfo {
        LunInfo::new(512, 1000, "serial")
    }

    fn facts(lun: &LunInfo, data_len: u64) -> Facts<'_> {
        Facts {
            lun,
            alua_state: None,
            backend_lost: false,
            data_len,
        }
    }

    fn decoded(bytes: &[u8]) -> Cdb {
        cdb::decode(bytes).expect("a valid CDB")
    }

    fn read10(lba: u32, blocks: u16) -> Cdb {
        let mut b = [0u8; 10];
        b[0] = 0x28;
        b[2..6].copy_from_slice(&lba.to_be_bytes());
        b[7..9].copy_from_slice(&blocks.to_be_bytes());
        decoded(&b)
    }

    fn status_of(d: Decision) -> Option<(u8, Option<u8>)> {
        match d {
            Decision::Done(o) => Some((o.status, o.sense.map(|s| s.key))),
            _ => None,
        }
    }

    #[test]
    fn a_read_in_range_goes_to_the_backend_and_one_past_the_end_does_not() {
        let l = lun();
        let mut c = read10(0, 8);
        assert_eq!(decide(&mut c, &facts(&l, 4096)), Decision::Backend);
        let mut c = read10(999, 2);
        assert_eq!(
            status_of(decide(&mut c, &facts(&l, 1024))),
            Some((status::CHECK_CONDITION, Some(0x05)))
        );
    }

    #[test]
    fn a_short_read_buffer_gets_what_fits_and_a_short_write_buffer_is_refused() {
        let l = lun();
        // LIO hands over the initiator's shorter buffer: a READ transfers what fits.
        let mut c = read10(0, 8);
        assert_eq!(decide(&mut c, &facts(&l, 512)), Decision::Backend);
        // An empty one: nothing to transfer, GOOD at once.
        let mut c = read10(0, 8);
        assert_eq!(
            status_of(decide(&mut c, &facts(&l, 0))),
            Some((status::GOOD, None))
        );
        // A WRITE whose Data-Out does not match the CDB: ILLEGAL REQUEST, nothing written.
        let mut b = [0u8; 10];
        b[0] = 0x2a;
        b[7..9].copy_from_slice(&8u16.to_be_bytes());
        let mut c = decoded(&b);
        assert_eq!(
            status_of(decide(&mut c, &facts(&l, 512))),
            Some((status::CHECK_CONDITION, Some(0x05)))
        );
    }

    #[test]
    fn zero_blocks_complete_at_once_and_write_same_zero_runs_to_the_end() {
        let l = lun();
        let mut c = read10(10, 0);
        assert_eq!(decide(&mut c, &facts(&l, 0)), Decision::Done(Outcome::GOOD));
        // WRITE SAME(10) at LBA 990, 0 blocks: the 10 blocks to the end.
        let mut b = [0u8; 10];
        b[0] = 0x41;
        b[2..6].copy_from_slice(&990u32.to_be_bytes());
        let mut c = decoded(&b);
        assert_eq!(decide(&mut c, &facts(&l, 512)), Decision::Backend);
        assert!(matches!(c, Cdb::WriteSame { blocks: 10, .. }), "{c:?}");
    }

    #[test]
    fn a_lost_backend_fails_data_commands_fast_and_test_unit_ready_in_transition() {
        let l = lun();
        let mut f = facts(&l, 4096);
        f.backend_lost = true;
        let mut c = read10(0, 8);
        assert_eq!(decide(&mut c, &f), Decision::FailedFast);
        let mut tur = decoded(&[0u8; 6]);
        assert_eq!(
            status_of(decide(&mut tur, &f)),
            Some((status::CHECK_CONDITION, Some(0x02)))
        );
        f.backend_lost = false;
        assert_eq!(decide(&mut tur, &f), Decision::Emulate);
    }

    #[test]
    fn inquiry_and_request_sense_never_receive_a_unit_attention() {
        let inquiry = decoded(&[0x12, 0, 0, 0, 36, 0]);
        let sense = decoded(&[0x03, 0, 0, 0, 18, 0]);
        assert!(!receives_unit_attention(&inquiry));
        assert!(!receives_unit_attention(&sense));
        assert!(receives_unit_attention(&read10(0, 1)));
        assert!(rereads_alua(&inquiry));
        assert!(!rereads_alua(&read10(0, 1)));
    }

    #[test]
    fn emulation_is_clipped_to_the_buffer_and_says_how_much_is_valid() {
        let l = lun();
        let inquiry = decoded(&[0x12, 0, 0, 0, 255, 0]);
        let mut scratch = vec![0u8; 4096];
        // A 255-byte allocation length in a 255-byte buffer: the standard INQUIRY answer is
        // shorter, so the rest is reported invalid.
        let e = emulate(&inquiry, &l, 255, &mut scratch).expect("INQUIRY answers");
        assert!(e.copy > 0 && e.copy < 255, "{e:?}");
        assert_eq!(e.read_len, u32::try_from(e.copy).ok());
        // A 16-byte buffer: clipped to it, and it is full.
        let e = emulate(&inquiry, &l, 16, &mut scratch).expect("INQUIRY answers");
        assert_eq!(
            e,
            Emulated {
                copy: 16,
                read_len: None
            }
        );
        assert_eq!(e.outcome(), Outcome::GOOD);
    }

    #[test]
    fn mode_select_with_a_short_buffer_is_a_parameter_list_length_error() {
        let l = lun();
        let e = mode_select(false, true, false, 12, &[0; 4], &l).expect_err("short list");
        assert_eq!(e, Sense::param_list_length_error());
        // An empty list changes nothing.
        let ch = mode_select(false, true, false, 0, &[], &l).expect("empty list");
        assert_eq!(ch.write_cache, None);
    }

    #[test]
    fn classes_name_the_data_commands() {
        assert_eq!(class_of(&read10(0, 1)), OpClass::Read);
        assert_eq!(
            class_of(&decoded(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            OpClass::Flush
        );
        assert_eq!(
            class_of(&decoded(&[0x12, 0, 0, 0, 36, 0])),
            OpClass::Emulated
        );
        assert!(is_data_command(&read10(0, 1)));
        assert!(!is_data_command(&decoded(&[0u8; 6])));
    }
}
