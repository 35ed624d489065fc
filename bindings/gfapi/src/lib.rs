//! A safe wrapper over GlusterFS's libgfapi (`gfapi-sys`).
//!
//! - [`Volume`]: one `glfs_t`, a "virtual mount" of a volume. [`Volume::connect`] bounds
//!   `glfs_init`, which never times out by itself when glusterd does not answer. Dropping the
//!   last reference runs `glfs_fini` (about 10 s with GlusterFS 10) on a short-lived thread
//!   of its own, never on the caller's.
//! - [`Fd`]: an open file. It holds an `Arc<Volume>`, so a file can never outlive its volume;
//!   `glfs_close` runs in `Drop`.
//! - [`CompletionQueue`]: asynchronous vectored reads and writes, fsync, discard and zero-fill.
//!   gfapi calls the completion callback on one of its own threads; the callback here only
//!   posts `(slot, result)` to the queue's channel (catching any panic), and the thread that
//!   owns the queue takes the payload back with [`CompletionQueue::recv`]. Every operation in
//!   flight holds its `Fd` (and so its volume) alive; slots are allocated once, so an
//!   operation allocates nothing of its own.
//!
//! Errors are [`nix::errno::Errno`] values, never strings: the caller maps them to SCSI
//! sense (ENOTCONN after a brick's ping-timeout is retryable, ENOSPC is not).

mod cq;
mod fd;
pub mod volfile;
mod volume;

pub use cq::{Completed, CompletionQueue};
pub use fd::Fd;
pub use nix::errno::Errno;
pub use volume::{ConnectError, Server, Volume, VolumeConfig};

/// The errno the calling thread holds now, or `EIO` when it holds none (a library failure
/// that forgot to set it).
pub(crate) fn last_errno() -> Errno {
    match Errno::last_raw() {
        0 => Errno::EIO,
        e => Errno::from_raw(e),
    }
}

/// Turn a C return value into a result: negative is `errno`.
pub(crate) fn check(ret: libc::c_int) -> Result<(), Errno> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}
