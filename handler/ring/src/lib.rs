//! The TCMU command ring of tcmu-warden: mapping, uio device, ring reader/completer and data
//! area, plus (feature `test-utils`) an emulation of the kernel's side of the ring.
//!
//! Rules this crate keeps (see the pitfalls in docs/kernel-abi.md §9):
//! * no Rust reference into the shared mapping, only volatile/atomic raw-pointer accesses
//!   ([`mapping`]);
//! * a private read index separate from `cmd_tail`; `cmd_head` loaded with Acquire,
//!   `cmd_tail` stored with Release after all response writes;
//! * every entry is untrusted: bounds-checked, bounded walks, no panics on ring content;
//! * no per-command heap allocation on the hot path (callers pass reusable buffers).

pub mod data;
pub mod doorbell;
#[cfg(feature = "test-utils")]
pub mod emu;
pub mod error;
pub mod iovecs;
pub mod mapping;
pub mod ring;
pub mod uio;

pub use data::{DataArea, DataSeg};
pub use doorbell::Doorbell;
pub use error::RingError;
pub use iovecs::IoVecs;
pub use mapping::Mapping;
pub use ring::{
    scsi_command_size, Caps, CmdCopy, Entry, EntryError, Response, Ring, TmrCopy,
    STATUS_CHECK_CONDITION, STATUS_GOOD,
};
pub use uio::{parse_map_size, parse_uio_name, Uio, UioName};
