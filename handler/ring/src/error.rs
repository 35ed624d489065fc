//! [`RingError`]: what can go wrong mapping the region, opening the uio device, reading its
//! sysfs attributes, or walking and completing the ring.

/// Errors of the ring layer. Anything but `UnknownCmdId`/`DoubleCompletion`/
/// `TooManyCompletions` (caller bugs, nothing written) means the device must be treated as
/// broken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// mmap failed.
    #[error("mmap of the TCMU region failed")]
    Map(#[source] nix::Error),
    /// An access outside the mapping.
    #[error("access of {len} bytes at offset {off} is outside the {map_len}-byte mapping")]
    OutOfBounds {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
        /// Mapping length.
        map_len: usize,
    },
    /// A misaligned atomic access.
    #[error("atomic access at offset {off} is not 4-byte aligned")]
    Misaligned {
        /// Offset.
        off: u64,
    },
    /// The mailbox version is not 2.
    #[error("unsupported mailbox version {0} (expected 2)")]
    MailboxVersion(u16),
    /// `cmdr_off` is smaller than the mailbox or not 8-aligned.
    #[error("bad cmdr_off {0}")]
    CmdrOff(u32),
    /// `cmdr_size` is 0, not 8-aligned, or the ring does not fit in the mapping.
    #[error("bad cmdr_size {cmdr_size} (cmdr_off {cmdr_off}, mapping {map_len} bytes)")]
    CmdrSize {
        /// cmdr_size.
        cmdr_size: u32,
        /// cmdr_off.
        cmdr_off: u32,
        /// Mapping length.
        map_len: usize,
    },
    /// `cmd_head` or `cmd_tail` is out of range or misaligned.
    #[error("bad mailbox index {which} = {value} (cmdr_size {cmdr_size})")]
    BadIndex {
        /// `cmd_head` or `cmd_tail`.
        which: &'static str,
        /// Its value.
        value: u32,
        /// Ring size.
        cmdr_size: u32,
    },
    /// The ring cannot be walked any more: a bad `len_op` (or similar) at ring offset `at`.
    #[error("corrupt ring entry at {at}: len_op {len_op:#x}: {reason}")]
    Corrupt {
        /// Ring offset of the entry.
        at: u32,
        /// Its `len_op`.
        len_op: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// `cmd_tail` changed under us: someone (action/reset_ring) reset the ring.
    #[error("cmd_tail is {found}, expected {expected}: the ring was reset under the handler")]
    RingReset {
        /// What we last published.
        expected: u32,
        /// What is in the mailbox.
        found: u32,
    },
    /// Completion of an id that was never read (or id 0).
    #[error("cmd_id {0} is not outstanding")]
    UnknownCmdId(u16),
    /// Second completion of the same id.
    #[error("cmd_id {0} was already completed")]
    DoubleCompletion(u16),
    /// More completions than CMD entries read.
    #[error("more completions than commands read")]
    TooManyCompletions,
    /// I/O error on the device.
    #[error("uio I/O error")]
    Io(#[source] std::io::Error),
    /// A sysfs attribute could not be read or parsed.
    #[error("sysfs {path}: {reason}")]
    Sysfs {
        /// File.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A uio name or device path that does not parse.
    #[error("bad uio name {0:?}")]
    BadName(String),
    /// A `maps/map0/size` value that does not parse.
    #[error("bad uio map size {0:?} (expected 0x-prefixed hex)")]
    BadMapSize(String),
}
