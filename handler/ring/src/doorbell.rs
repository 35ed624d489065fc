//! The notification channel between the kernel and the handler.

use std::os::fd::RawFd;

/// Event source and kick target for one ring (uio fd, or the emulation's eventfds).
///
/// Lost-wakeup rule (docs/kernel-abi.md pitfall 14): call [`Doorbell::ack`] *before* draining
/// the ring, then drain up to `cmd_head`; one event may stand for many entries (pitfall 31).
pub trait Doorbell: Send + Sync {
    /// fd that becomes readable (poll POLLIN) when the kernel has posted new entries.
    fn raw_fd(&self) -> RawFd;
    /// Consume the pending event (uio: read exactly 4 bytes; nonblocking: EAGAIN is
    /// `Ok(false)`). Call BEFORE draining the ring. `Ok(true)` if an event was consumed.
    fn ack(&self) -> std::io::Result<bool>;
    /// Tell the kernel completions are ready (uio: write exactly 4 bytes). Once per batch,
    /// after [`crate::Ring::publish`] returned true.
    fn kick(&self) -> std::io::Result<()>;
}
