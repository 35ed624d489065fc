//! [`ReconfigError`]: why a reconfiguration from the kernel (netlink RECONFIG_DEVICE) was
//! refused, with the errno the `RECONFIG_DEVICE_DONE` reply carries. The kernel makes that
//! errno the result of the administrator's attribute write and keeps the old value
//! (docs/kernel-abi.md §5.6), so it should say what really failed.

use crate::backend::OpenError;
use nix::errno::Errno;

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
}

impl ReconfigError {
    /// The negative errno to answer the kernel with (`RECONFIG_DEVICE_DONE` status).
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            ReconfigError::NotServed => -libc::ENODEV,
            ReconfigError::Resize { errno, .. } => -(*errno as i32),
            ReconfigError::Backend(e) => e.errno(),
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
    }
}
