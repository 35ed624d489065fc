//! [`Error`]: the librados/librbd call that failed and its errno, kept typed.

use nix::errno::Errno;
use std::fmt;

/// A failed librados/librbd call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// The C call (`rbd_open`, `rados_connect`, ...).
    pub call: &'static str,
    /// What it returned.
    pub errno: Errno,
}

/// Result of a librados/librbd call.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `call` with `errno`.
    #[must_use]
    pub fn new(call: &'static str, errno: Errno) -> Error {
        Error { call, errno }
    }

    /// From a negative return value (`-errno`); anything unrepresentable becomes `EIO`.
    #[must_use]
    pub fn from_ret(call: &'static str, ret: i64) -> Error {
        let e =
            i32::try_from(ret.checked_neg().unwrap_or(i64::from(libc::EIO))).unwrap_or(libc::EIO);
        Error {
            call,
            errno: Errno::from_raw(e),
        }
    }

    /// The errno.
    #[must_use]
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// Whether the client was blocklisted (`ESHUTDOWN`, which Ceph calls `EBLOCKLISTED`).
    #[must_use]
    pub fn is_blocklisted(&self) -> bool {
        self.errno == Errno::ESHUTDOWN
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.call, self.errno.desc())
    }
}

impl std::error::Error for Error {}

impl From<Error> for Errno {
    fn from(e: Error) -> Errno {
        e.errno
    }
}
