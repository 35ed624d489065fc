//! SAM-5 status codes (the STATUS byte returned with a command).

/// The command completed successfully.
pub const GOOD: u8 = 0x00;
/// Sense data is available describing why the command failed.
pub const CHECK_CONDITION: u8 = 0x02;
/// PRE-FETCH-style commands: the requested condition was met.
pub const CONDITION_MET: u8 = 0x04;
/// The logical unit is busy; the initiator should retry later.
pub const BUSY: u8 = 0x08;
/// Conflict with a persistent or SPC-2 reservation.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// The task set is full; the initiator should retry later.
pub const TASK_SET_FULL: u8 = 0x28;
/// An ACA condition is active.
pub const ACA_ACTIVE: u8 = 0x30;
/// The command was aborted by another I_T nexus (TAS=1).
pub const TASK_ABORTED: u8 = 0x40;
