//! [`ScsiError`]: the one place where every failure becomes SCSI status + sense.

use crate::errno_class::ErrnoClass;
use crate::sense::{key, Sense};
use crate::status;

/// A failed command, as it is reported to the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScsiError {
    /// CHECK CONDITION with this sense data.
    #[error("check condition: key {:#x} asc {:#04x} ascq {:#04x}", .0.key, .0.asc, .0.ascq)]
    Sense(Sense),
    /// BUSY status, no sense data (the initiator retries).
    #[error("busy")]
    Busy,
    /// TASK SET FULL status (the initiator retries with less queue depth).
    #[error("task set full")]
    TaskSetFull,
    /// TASK ABORTED status.
    #[error("task aborted")]
    TaskAborted,
    /// RESERVATION CONFLICT status.
    #[error("reservation conflict")]
    ReservationConflict,
}

impl ScsiError {
    /// The SAM status byte for this error.
    pub fn status(&self) -> u8 {
        match self {
            ScsiError::Sense(_) => status::CHECK_CONDITION,
            ScsiError::Busy => status::BUSY,
            ScsiError::TaskSetFull => status::TASK_SET_FULL,
            ScsiError::TaskAborted => status::TASK_ABORTED,
            ScsiError::ReservationConflict => status::RESERVATION_CONFLICT,
        }
    }

    /// The sense data to return (only for CHECK CONDITION).
    pub fn sense(&self) -> Option<Sense> {
        match self {
            ScsiError::Sense(s) => Some(*s),
            _ => None,
        }
    }

    /// Map a backend errno (positive; a negative value is treated as its
    /// absolute value) to the error reported for a read or a write, by its
    /// [`ErrnoClass`].
    ///
    /// Transient/connection errors become either BUSY or NOT READY 04/0A,
    /// both of which Linux sd, dm-multipath and open-iscsi retry.
    pub fn from_errno(errno: i32, is_write: bool) -> ScsiError {
        match ErrnoClass::of(errno) {
            // Real I/O failure on the backing store: a medium error is what
            // the initiator's filesystem must see (not retried forever).
            ErrnoClass::Medium if is_write => Sense::write_error().into(),
            ErrnoClass::Medium => Sense::unrecovered_read_error().into(),
            // Thin pool / filesystem full: SBC's "space allocation failed",
            // which Linux reports as -ENOSPC (BLK_STS_NOSPC) to its user.
            ErrnoClass::NoSpace => Sense::space_allocation_failed().into(),
            // Read-only backing store: DATA PROTECT / WRITE PROTECTED.
            ErrnoClass::ReadOnly => Sense::write_protected().into(),
            // Backend connection lost or timed out (network/remote storage), or
            // this client fenced off until it reopens: ALUA-transition NOT READY
            // is retried with a delay by Linux sd and lets multipath fail over
            // if it persists.
            ErrnoClass::Connection | ErrnoClass::Fenced => Sense::not_ready_in_transition().into(),
            // Local, short-lived pressure: BUSY makes the initiator requeue
            // on the same path without failing it.
            ErrnoClass::Transient => ScsiError::Busy,
            // The backing device is gone: not retryable on this path.
            ErrnoClass::Gone => Sense::lun_communication_failure().into(),
            // Backend cannot do this operation (e.g. discard): ILLEGAL
            // REQUEST/INVALID OPCODE makes Linux sd disable the feature.
            ErrnoClass::Unsupported => Sense::invalid_opcode().into(),
            // EINVAL/ERANGE and everything else: we validated the request,
            // so the backend refusing it is a target failure.
            ErrnoClass::Other => Sense::internal_target_failure().into(),
        }
    }

    /// True if the initiator is expected to retry the command by itself
    /// (BUSY, TASK SET FULL, NOT READY 04/01 or 04/0A, UNIT ATTENTION,
    /// ABORTED COMMAND).
    pub fn is_retryable(&self) -> bool {
        match self {
            ScsiError::Busy | ScsiError::TaskSetFull => true,
            ScsiError::TaskAborted | ScsiError::ReservationConflict => false,
            ScsiError::Sense(s) => match s.key {
                key::NOT_READY => s.asc == 0x04 && matches!(s.ascq, 0x01 | 0x0A),
                key::UNIT_ATTENTION | key::ABORTED_COMMAND => true,
                _ => false,
            },
        }
    }
}

impl From<Sense> for ScsiError {
    fn from(s: Sense) -> Self {
        ScsiError::Sense(s)
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
