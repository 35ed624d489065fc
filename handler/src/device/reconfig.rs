//! Reconfiguration from the kernel (netlink RECONFIG_DEVICE) applied to a running device:
//! [`apply`] puts a change in force, [`close_replaced`] closes the backend a new cfgstring
//! replaced once nothing of it is in flight, and [`ReconfigError`] says why a change was
//! refused, with the errno the `RECONFIG_DEVICE_DONE` reply carries. The kernel makes that
//! errno the result of the administrator's attribute write and keeps the old value
//! (docs/kernel-abi.md §5.6), so it should say what really failed.

use super::handle::Change;
use super::link::{DeviceLink, UnitAttention};
use crate::backend::{Backend, OpenError};
use nix::errno::Errno;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Put `change` in force on the device `link` serves. A new size goes to the backend first
/// (which may refuse it) and raises CAPACITY DATA HAS CHANGED; a write-cache change that
/// changes something raises MODE PARAMETERS CHANGED; a new backend replaces the old one at
/// once for the commands that follow, and the old one is returned, **not** dropped: the
/// caller closes it with [`close_replaced`], off every lock and loop, once its operations
/// have returned.
///
/// # Errors
/// When the backend cannot take the new size; the old value stays in force.
pub fn apply(link: &DeviceLink, change: Change) -> Result<Option<Arc<dyn Backend>>, ReconfigError> {
    match change {
        Change::Size(bytes) => {
            link.backend()
                .resize(bytes)
                .map_err(|errno| ReconfigError::Resize { bytes, errno })?;
            commit_size(link, bytes);
        }
        Change::WriteCache(on) => {
            if set_write_cache(link, on) {
                tracing::info!(device = %link.name, write_cache = on, "write cache changed by the kernel (emulate_write_cache)");
            }
        }
        Change::Backend(b) => return Ok(Some(link.replace_backend(b))),
    }
    Ok(None)
}

/// Serve a new size the backend has taken already, and raise CAPACITY DATA HAS CHANGED.
pub fn commit_size(link: &DeviceLink, bytes: u64) {
    let mut lun = link.lun.write();
    lun.num_blocks = bytes / u64::from(lun.block_size);
    drop(lun);
    link.raise(UnitAttention::CapacityChanged);
}

/// Set the LUN's write cache; when that changes it, raise MODE PARAMETERS CHANGED (2A/01)
/// for the next command that can take a UNIT ATTENTION. True if it changed.
pub fn set_write_cache(link: &DeviceLink, on: bool) -> bool {
    let mut lun = link.lun.write();
    if lun.write_cache == on {
        return false;
    }
    lun.write_cache = on;
    drop(lun);
    link.raise(UnitAttention::ModeParametersChanged);
    true
}

/// A MODE SELECT set the write cache to `on`: put it in force (raising MODE PARAMETERS
/// CHANGED if it changed) and hand it to the persister, if the device has one, so a restart
/// and the kernel's `emulate_write_cache` agree. Called on the device thread; never waits.
pub fn mode_select_write_cache(link: &DeviceLink, on: bool) {
    if !set_write_cache(link, on) {
        return;
    }
    tracing::info!(device = %link.name, write_cache = on, "MODE SELECT changed the write cache");
    if let Some(p) = &link.persist_write_cache {
        (p.0)(on);
    }
}

/// How often [`close_replaced`] looks at the old backend.
const CLOSE_POLL: Duration = Duration::from_millis(20);

/// Close `old`, a backend a new cfgstring replaced, on the calling thread (never the main
/// loop's or a device's): wait until no operation of it is in flight
/// ([`Backend::in_flight`]) and no thread still holds it to submit one, then drop it. A
/// library's buffers are therefore never released (nor its commands completed by its drop)
/// while it may still write into them.
///
/// `report` is called once: when the backend is closed, or at `bound` if it still has
/// operations out then. In that case this keeps waiting for them (the commands concerned are
/// completed at their deadline with KEEP_BUF, their buffers kept until the late completion
/// arrives) and closes the backend after the last one; nothing waits for that.
pub fn close_replaced(device: &str, old: Arc<dyn Backend>, bound: Duration, report: impl FnOnce()) {
    let started = Instant::now();
    let mut report = Some(report);
    loop {
        let in_flight = old.in_flight();
        let others = Arc::strong_count(&old) - 1;
        if in_flight == 0 && others == 0 {
            break;
        }
        if started.elapsed() >= bound {
            if in_flight == 0 {
                // Only holders that submit nothing more (a health ping, a submit that has
                // returned): the last of them closes it.
                break;
            }
            if let Some(r) = report.take() {
                tracing::warn!(device = %device, backend = %old.describe(), in_flight,
                    "the replaced backend still has operations out after {bound:?}: it stays open until they return (their commands are completed at their deadline, buffers kept)");
                r();
            }
            std::thread::sleep(CLOSE_POLL * 10);
        } else {
            std::thread::sleep(CLOSE_POLL);
        }
    }
    let what = old.describe();
    let t = Instant::now();
    drop(old);
    tracing::info!(device = %device, backend = %what, waited = ?started.elapsed(), close = ?t.elapsed(), "replaced backend closed");
    if let Some(r) = report.take() {
        r();
    }
}

/// A refused reconfiguration; the device keeps its old settings.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigError {
    /// The device is not one this daemon serves.
    #[error("not a device this daemon serves")]
    NotServed,
    /// The backend could not take the new size (`attrib/dev_size`).
    #[error("resize to {bytes} bytes: {errno}")]
    Resize {
        /// The size asked for.
        bytes: u64,
        /// The backend's error.
        #[source]
        errno: Errno,
    },
    /// The new cfgstring (`attrib/dev_config`) could not be opened.
    #[error("new cfgstring refused: {0}")]
    Backend(#[from] OpenError),
    /// The new backend did not open, or the backend did not resize, within the bound; the
    /// device keeps its old backend and size.
    #[error("not done within {0:?} (the backend did not answer); the old settings stay")]
    TimedOut(Duration),
    /// The work could not be started (no thread).
    #[error("cannot start the reconfiguration: {0}")]
    Spawn(std::io::Error),
}

impl ReconfigError {
    /// The negative errno to answer the kernel with (`RECONFIG_DEVICE_DONE` status).
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            ReconfigError::NotServed => -libc::ENODEV,
            ReconfigError::Resize { errno, .. } => -(*errno as i32),
            ReconfigError::Backend(e) => e.errno(),
            ReconfigError::TimedOut(_) => -libc::ETIMEDOUT,
            ReconfigError::Spawn(e) => -(crate::backend::errno_of(e) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_carries_its_own_errno() {
        assert_eq!(ReconfigError::NotServed.errno(), -libc::ENODEV);
        let resize = ReconfigError::Resize {
            bytes: 1 << 30,
            errno: Errno::ENOSPC,
        };
        assert_eq!(resize.errno(), -libc::ENOSPC);
        assert!(resize.to_string().contains("1073741824"));
        let open = ReconfigError::from(OpenError::Io {
            what: "open /x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(open.errno(), -libc::ENOENT);
        let subtype = ReconfigError::from(OpenError::Subtype("tape".into()));
        assert_eq!(subtype.errno(), -libc::ENOENT);
        let cfg = ReconfigError::from(OpenError::Config {
            cfgstring: "x".into(),
            reason: "bad".into(),
        });
        assert_eq!(cfg.errno(), -libc::EINVAL);
        assert_eq!(
            ReconfigError::TimedOut(Duration::from_secs(10)).errno(),
            -libc::ETIMEDOUT
        );
    }
}
