//! What a device shares with its workers and its backend's completion threads.

use super::context::Ctx;
use super::range_lock::RangeLock;
use crate::backend::Backend;
use crossbeam_channel::Sender;
use nix::sys::eventfd::EventFd;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tcmu_ring::DataArea;
use tcmu_scsi::lun::LunInfo;

/// Shared state of one device. See the module docs of [`crate::device`].
pub struct DeviceLink {
    /// Device name for logs (`<hba>/<name>`).
    pub name: String,
    /// The backing store.
    pub backend: Arc<dyn Backend>,
    /// The ring's data area.
    pub data: DataArea,
    /// LBA ranges held by in-flight writes and COMPARE AND WRITE.
    pub ranges: RangeLock,
    /// The LUN as the initiator sees it (changed by MODE SELECT and reconfiguration).
    pub lun: RwLock<LunInfo>,
    done_tx: Sender<Box<Ctx>>,
    wake: EventFd,
    sleeping: AtomicBool,
}

impl DeviceLink {
    pub(crate) fn new(
        name: String,
        backend: Arc<dyn Backend>,
        data: DataArea,
        lun: LunInfo,
        slots: usize,
        done_tx: Sender<Box<Ctx>>,
    ) -> std::io::Result<DeviceLink> {
        let wake = EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK)?;
        Ok(DeviceLink {
            name,
            backend,
            data,
            ranges: RangeLock::new(slots),
            lun: RwLock::new(lun),
            done_tx,
            wake,
            sleeping: AtomicBool::new(false),
        })
    }

    /// Hand a finished (or backend-completed) context back to the device thread. Callable
    /// from any thread; never blocks (the channel has room for every context).
    pub fn complete_from_backend(&self, ctx: Box<Ctx>) {
        if self.done_tx.send(ctx).is_err() {
            tracing::error!(device = %self.name, "completion after the device thread exited");
            return;
        }
        self.wake_if_sleeping();
    }

    /// Wake the device thread if it is (about to be) blocked in poll.
    pub fn wake_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake_now();
        }
    }

    /// Wake the device thread unconditionally (stop requests).
    pub fn wake_now(&self) {
        if let Err(e) = self.wake.write(1) {
            tracing::warn!(device = %self.name, "eventfd write failed: {e}");
        }
    }

    pub(crate) fn set_sleeping(&self, on: bool) {
        self.sleeping.store(on, Ordering::SeqCst);
    }

    pub(crate) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.wake.as_fd()
    }

    pub(crate) fn drain_wake(&self) {
        let _ = self.wake.read();
    }
}
