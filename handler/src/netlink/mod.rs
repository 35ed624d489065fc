//! The `TCM-USER` generic netlink protocol: device events from the kernel and the replies
//! and feature switch userspace sends back (docs/kernel-abi.md §5).
//!
//! - [`codec`]: byte-level netlink/genl/attribute encoding and decoding (pure, tested
//!   against byte-exact fixtures).
//! - [`event`]: TCMU events ([`Event`]) and the `*_DONE` / `SET_FEATURES` encoders.
//! - [`socket`]: [`Listener`], the sockets.
//!
//! # Integrating with the daemon
//!
//! * **Start-up order** (docs/kernel-abi.md pitfall 22; see
//!   `kernel_actions::global_reply_mode_plan`):
//!   `block_netlink=1`, `reset_netlink=1`, [`Listener::open`], [`Listener::set_features`]
//!   `(true)`, `block_netlink=0`, **then** scan configfs for existing devices. Devices
//!   enabled before `SET_FEATURES=1` never wait for replies; their events still arrive.
//! * **Answer every event, and only with [`Listener::reply`]**, which picks the matching
//!   `*_DONE` (docs/kernel-abi.md pitfall 33). With reply mode on, the configfs writer that
//!   caused the event sleeps uninterruptibly until the reply: reply promptly, from the
//!   thread that polls.
//!   `status` is 0 or a negative errno; it becomes the result of the `enable`/attribute
//!   write (ignored for REMOVED). Reply to REMOVED only after the device has stopped
//!   using the ring.
//! * **[`NetlinkError::NoPendingRequest`] (ENODEV) is benign** ([`NetlinkError::is_benign`]):
//!   the kernel was not waiting (reply mode off for that device, or the request was reset
//!   by `reset_netlink`). Log at warn/debug and carry on.
//! * [`NetlinkError::MalformedEvent`] with a `device_id` should still be answered with
//!   `-EINVAL` through [`Listener::reply_to`], or the writer hangs.
//! * [`NetlinkError::Overrun`] means events were dropped: a writer may be waiting for an
//!   answer we never saw. Recover with `block_netlink=1`, `reset_netlink=1`,
//!   `block_netlink=0` (waiters get EINTR) and rescan configfs.
//! * Other receive errors are per-message; only [`NetlinkError::Io`] from `recv` means the
//!   socket itself is broken.

pub mod codec;
pub mod event;
pub mod socket;

pub use codec::DecodeError;
pub use event::{Event, EventKind, Reconfig};
pub use socket::Listener;

use nix::errno::Errno;

/// Errors of the netlink layer.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// `nlctrl` does not know `TCM-USER`.
    #[error("TCM-USER netlink family not found: is target_core_user loaded?")]
    FamilyNotFound,
    /// The family exists but has no `config` multicast group.
    #[error("TCM-USER netlink family has no \"config\" multicast group")]
    GroupNotFound,
    /// A socket call failed.
    #[error("netlink {op}: {source}")]
    Io {
        /// The operation (`socket`, `bind`, `recv`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The receive queue overflowed (ENOBUFS): events were lost.
    #[error("netlink receive queue overrun: TCMU events were lost")]
    Overrun,
    /// The kernel answered a request with an error.
    #[error("kernel rejected {request}: {errno}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        /// The request.
        request: &'static str,
        /// The error (e.g. `EPERM` without CAP_NET_ADMIN, `EINVAL`).
        errno: Errno,
        /// The extended-ack message, if any.
        message: Option<String>,
    },
    /// ENODEV on a `*_DONE`: the kernel had no request pending for the device.
    #[error("{request} for device {device_id}: no request pending in the kernel (ENODEV)")]
    NoPendingRequest {
        /// The reply that was sent.
        request: &'static str,
        /// Its DEVICE_ID.
        device_id: u32,
    },
    /// No acknowledgement arrived within the timeout.
    #[error("no acknowledgement from the kernel for {request}")]
    NoAck {
        /// The request.
        request: &'static str,
    },
    /// A status that is neither 0 nor a negative errno, or a command that is not an event.
    #[error("invalid reply: {0}")]
    InvalidReply(String),
    /// A datagram or message that could not be framed or is not a TCMU event at all.
    #[error("malformed netlink message: {0}")]
    Malformed(#[from] DecodeError),
    /// A TCMU event that could not be decoded. If `device_id` is known the kernel may be
    /// waiting: answer with [`Listener::reply_to`]`(cmd, device_id, -EINVAL)`.
    #[error("malformed TCMU event (cmd {cmd}, device id {device_id:?}): {error}")]
    MalformedEvent {
        /// The genl command of the event.
        cmd: u8,
        /// DEVICE_ID, if it could be read.
        device_id: Option<u32>,
        /// What was wrong.
        error: DecodeError,
    },
}

impl NetlinkError {
    /// An outcome to log, not to fail on: the kernel had nothing pending for a reply.
    #[must_use]
    pub fn is_benign(&self) -> bool {
        matches!(self, Self::NoPendingRequest { .. })
    }

    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        Self::Io { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            NetlinkError::FamilyNotFound.to_string(),
            "TCM-USER netlink family not found: is target_core_user loaded?"
        );
        let e = NetlinkError::Kernel {
            request: "SET_FEATURES",
            errno: Errno::EPERM,
            message: Some("x".into()),
        };
        assert_eq!(
            e.to_string(),
            "kernel rejected SET_FEATURES: EPERM: Operation not permitted (x)"
        );
        let e = NetlinkError::NoPendingRequest {
            request: "ADDED_DEVICE_DONE",
            device_id: 3,
        };
        assert!(e.is_benign());
        assert!(!NetlinkError::Overrun.is_benign());
    }
}
