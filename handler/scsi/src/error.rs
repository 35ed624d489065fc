//! [`ScsiError`]: the one place where every failure becomes SCSI status + sense.

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

/// Linux errno values used by [`ScsiError::from_errno`] (kept local so the
/// crate needs no libc).
mod errno {
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const ENODEV: i32 = 19;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const EPIPE: i32 = 32;
    pub const ENOLINK: i32 = 67;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENETDOWN: i32 = 100;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const ENOTCONN: i32 = 107;
    pub const ESHUTDOWN: i32 = 108;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EREMOTEIO: i32 = 121;
    pub const EDQUOT: i32 = 122;
    pub const ECANCELED: i32 = 125;
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
    /// absolute value) to the error reported for a read or a write.
    ///
    /// Transient/connection errors become either BUSY or NOT READY 04/0A,
    /// both of which Linux sd, dm-multipath and open-iscsi retry.
    pub fn from_errno(errno: i32, is_write: bool) -> ScsiError {
        use errno::*;
        match errno.checked_abs().unwrap_or(0) {
            // Real I/O failure on the backing store: a medium error is what
            // the initiator's filesystem must see (not retried forever).
            EIO | EREMOTEIO if is_write => Sense::write_error().into(),
            EIO | EREMOTEIO => Sense::unrecovered_read_error().into(),
            // Thin pool / filesystem full: SBC's "space allocation failed",
            // which Linux reports as -ENOSPC (BLK_STS_NOSPC) to its user.
            ENOSPC | EDQUOT | EFBIG => Sense::space_allocation_failed().into(),
            // Read-only backing store: DATA PROTECT / WRITE PROTECTED.
            EROFS => Sense::write_protected().into(),
            // Backend connection lost or timed out (network/remote storage):
            // ALUA-transition NOT READY is retried with a delay by Linux sd
            // and lets multipath fail over if it persists.
            ETIMEDOUT | ENOTCONN | ESHUTDOWN | ECONNRESET | ECONNREFUSED | EHOSTUNREACH
            | ENETUNREACH | ENETDOWN | EPIPE | ENOLINK => Sense::not_ready_in_transition().into(),
            // Local, short-lived pressure: BUSY makes the initiator requeue
            // on the same path without failing it.
            EAGAIN | EBUSY | EINTR | ENOMEM | ENOBUFS | ECANCELED => ScsiError::Busy,
            // The backing device is gone: not retryable on this path.
            ENXIO | ENODEV => Sense::lun_communication_failure().into(),
            // Backend cannot do this operation (e.g. discard): ILLEGAL
            // REQUEST/INVALID OPCODE makes Linux sd disable the feature.
            EOPNOTSUPP => Sense::invalid_opcode().into(),
            // EINVAL/ERANGE and everything else: we validated the request,
            // so the backend refusing it is a target failure.
            _ => Sense::internal_target_failure().into(),
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
