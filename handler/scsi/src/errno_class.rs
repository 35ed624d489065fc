//! [`ErrnoClass`]: what a backend's errno means, decided once for everyone who asks.
//!
//! Three parts of the daemon look at the errno a backend (a local file, librbd, gfapi)
//! returns, and they must agree:
//!
//! - the SCSI mapping ([`crate::ScsiError::from_errno`]) picks status and sense from the
//!   class;
//! - the health monitor counts [`ErrnoClass::Connection`] failures towards "backend lost" and
//!   [`ErrnoClass::Fenced`] towards "needs a reopen";
//! - the network backends report their connection as down on a connection-class error and
//!   reopen a file handle only on other errors.
//!
//! The errno values are Linux's (kept here so this crate needs no libc). A negative value is
//! read as its absolute value, since the C libraries return `-errno`.

/// Linux errno values (`asm-generic/errno-base.h`, `asm-generic/errno.h`).
pub(crate) mod errno {
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
    pub const EBADFD: i32 = 77;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENETDOWN: i32 = 100;
    pub const ENETUNREACH: i32 = 101;
    pub const ENETRESET: i32 = 102;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const ENOTCONN: i32 = 107;
    pub const ESHUTDOWN: i32 = 108;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EREMOTEIO: i32 = 121;
    pub const EDQUOT: i32 = 122;
    pub const ECANCELED: i32 = 125;
}

/// The kind of failure an errno stands for. See the module docs for who uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrnoClass {
    /// The storage itself failed the transfer: EIO, EREMOTEIO (a remote store's I/O error).
    Medium,
    /// No room: ENOSPC, EDQUOT (quota), EFBIG (past the file size limit).
    NoSpace,
    /// The store is read-only: EROFS (also librbd on a snapshot or without the lock).
    ReadOnly,
    /// The path to a remote store is down or did not answer in time; it may come back by
    /// itself, and another gateway may still reach the store:
    ///
    /// - ETIMEDOUT: librados' `osd_op_timeout`, gfapi's ping-timeout, a TCP timeout;
    /// - ENOTCONN, ECONNRESET, ECONNREFUSED, ECONNABORTED: the connection is gone or refused
    ///   (gfapi while no brick is connected, a TCP reset);
    /// - EHOSTUNREACH, EHOSTDOWN, ENETUNREACH, ENETDOWN, ENETRESET: no route to the servers;
    /// - EPIPE: a write on a connection the peer closed;
    /// - ENOLINK: "link has been severed", what some transports report for a lost peer;
    /// - EBADFD: gfapi's answer when an open file cannot be carried over to the volume's new
    ///   graph, which happens while the bricks are unreachable; the handle comes back with
    ///   them (unlike EBADF, a bad descriptor on our side, which stays [`ErrnoClass::Other`]).
    Connection,
    /// This client was shut out and must reopen before anything works again: ESHUTDOWN
    /// (librados after the client was blocklisted). Connection-class for the initiator, a
    /// reopen for the health monitor.
    Fenced,
    /// Short-lived local pressure or an interrupted call: EAGAIN, EBUSY, EINTR, ENOMEM,
    /// ENOBUFS, ECANCELED.
    Transient,
    /// The backing device is gone: ENXIO, ENODEV.
    Gone,
    /// The store cannot do this operation at all: EOPNOTSUPP (e.g. no discard).
    Unsupported,
    /// Anything else (EINVAL, ERANGE, EBADF, ...): the request was validated before it reached
    /// the backend, so a refusal is a fault on the target's side.
    Other,
}

impl ErrnoClass {
    /// The class of `errno` (positive, or negative as the C libraries return it).
    #[must_use]
    pub fn of(errno: i32) -> ErrnoClass {
        use errno::*;
        match errno.checked_abs().unwrap_or(0) {
            EIO | EREMOTEIO => ErrnoClass::Medium,
            ENOSPC | EDQUOT | EFBIG => ErrnoClass::NoSpace,
            EROFS => ErrnoClass::ReadOnly,
            ETIMEDOUT | ENOTCONN | ECONNRESET | ECONNREFUSED | ECONNABORTED | EHOSTUNREACH
            | EHOSTDOWN | ENETUNREACH | ENETDOWN | ENETRESET | EPIPE | ENOLINK | EBADFD => {
                ErrnoClass::Connection
            }
            ESHUTDOWN => ErrnoClass::Fenced,
            EAGAIN | EBUSY | EINTR | ENOMEM | ENOBUFS | ECANCELED => ErrnoClass::Transient,
            ENXIO | ENODEV => ErrnoClass::Gone,
            EOPNOTSUPP => ErrnoClass::Unsupported,
            _ => ErrnoClass::Other,
        }
    }

    /// Whether the store is unreachable from here for now ([`ErrnoClass::Connection`] or
    /// [`ErrnoClass::Fenced`]): the initiator should retry, possibly on another path, and the
    /// backend's connection counts as down.
    #[must_use]
    pub fn is_connection(self) -> bool {
        matches!(self, ErrnoClass::Connection | ErrnoClass::Fenced)
    }
}

#[cfg(test)]
mod tests {
    use super::errno::*;
    use super::ErrnoClass;

    fn all_of(class: ErrnoClass, errnos: &[i32]) {
        for &e in errnos {
            assert_eq!(ErrnoClass::of(e), class, "errno {e}");
            assert_eq!(ErrnoClass::of(-e), class, "errno -{e}");
        }
    }

    #[test]
    fn medium() {
        all_of(ErrnoClass::Medium, &[EIO, EREMOTEIO]);
    }

    #[test]
    fn no_space() {
        all_of(ErrnoClass::NoSpace, &[ENOSPC, EDQUOT, EFBIG]);
    }

    #[test]
    fn read_only() {
        all_of(ErrnoClass::ReadOnly, &[EROFS]);
    }

    #[test]
    fn connection() {
        let list = [
            ETIMEDOUT,
            ENOTCONN,
            ECONNRESET,
            ECONNREFUSED,
            ECONNABORTED,
            EHOSTUNREACH,
            EHOSTDOWN,
            ENETUNREACH,
            ENETDOWN,
            ENETRESET,
            EPIPE,
            ENOLINK,
            EBADFD,
        ];
        all_of(ErrnoClass::Connection, &list);
        assert!(list.iter().all(|&e| ErrnoClass::of(e).is_connection()));
    }

    #[test]
    fn fenced() {
        all_of(ErrnoClass::Fenced, &[ESHUTDOWN]);
        assert!(ErrnoClass::Fenced.is_connection());
    }

    #[test]
    fn transient() {
        all_of(
            ErrnoClass::Transient,
            &[EAGAIN, EBUSY, EINTR, ENOMEM, ENOBUFS, ECANCELED],
        );
        assert!(!ErrnoClass::Transient.is_connection());
    }

    #[test]
    fn gone() {
        all_of(ErrnoClass::Gone, &[ENXIO, ENODEV]);
    }

    #[test]
    fn unsupported() {
        all_of(ErrnoClass::Unsupported, &[EOPNOTSUPP]);
    }

    #[test]
    fn other() {
        // EINVAL, EBADF, ERANGE, ENOENT, 0, out of range, and i32::MIN (no absolute value).
        all_of(ErrnoClass::Other, &[22, 9, 34, 2, 0, 9999]);
        assert_eq!(ErrnoClass::of(i32::MIN), ErrnoClass::Other);
        assert!(!ErrnoClass::Other.is_connection());
        assert!(!ErrnoClass::Medium.is_connection());
    }
}
