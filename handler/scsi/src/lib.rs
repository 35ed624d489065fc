//! SCSI command handling for tcmu-warden: CDB decoding, sense data, emulation
//! of the non-data commands (INQUIRY, READ CAPACITY, MODE SENSE, ...) and
//! parsing of parameter lists (MODE SELECT, UNMAP).
//!
//! Everything here is pure: no I/O, no heap allocation on the per-command
//! paths (responses are written into caller-provided buffers), and no panics
//! on any input.
#![forbid(unsafe_code)]

pub mod alua;
pub mod cdb;
pub mod emulate;
pub mod errno_class;
pub mod error;
pub mod lba_status;
pub mod lun;
pub mod modepage;
pub mod opcodes;
pub mod params;
pub mod sense;
pub mod status;
pub mod transfer;

mod bytes;

pub use cdb::{Cdb, Rw};
pub use errno_class::ErrnoClass;
pub use error::ScsiError;
pub use lun::{Caps, LunInfo};
pub use sense::Sense;
