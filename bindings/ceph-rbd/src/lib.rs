//! A safe wrapper over the parts of librados and librbd that tcmu-warden's RBD backend uses.
//!
//! Ownership mirrors librbd's rules: an [`Image`] holds the [`IoCtx`] it was opened in, which
//! holds the [`Cluster`] it was created from (`Arc`s), so a child can never outlive its
//! parent; every handle is freed exactly once, in `Drop`, and nowhere else. Errors keep the
//! errno typed ([`Error::errno`]) because the SCSI status a command ends with depends on it
//! (`ESHUTDOWN` after blocklisting, `ETIMEDOUT` after `rados_osd_op_timeout`, `EROFS`, ...).
//!
//! Asynchronous I/O: an [`AioCompletion`] is created for an [`AioTarget`] (a tag and the
//! owner's channel). librbd runs the completion callback on one of its own threads; the
//! callback does nothing but read the return value and post `(tag, result)` to the owner's
//! channel, inside `catch_unwind` (a panic must not unwind into C). The owner then drops the
//! [`AioCompletion`], which releases the librbd completion.

mod aio;
mod cluster;
mod error;
mod image;

pub use aio::{callback_panics, on_callback_thread, AioCompletion, AioDone, AioHandler, AioTarget};
pub use cluster::{Cluster, ConnectOptions, IoCtx};
pub use error::{Error, Result};
pub use image::{Image, ImageInfo, LockOwners, Watcher};
pub use nix::errno::Errno;

use std::ffi::CString;

/// A `CString` from a Rust string, refusing interior NULs with `EINVAL`.
fn cstr(what: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::new(what, Errno::EINVAL))
}

/// Map a C return value (negative errno on failure) to a result.
fn check(what: &'static str, r: libc::c_int) -> Result<libc::c_int> {
    if r < 0 {
        Err(Error::from_ret(what, i64::from(r)))
    } else {
        Ok(r)
    }
}
