//! A test LUN's attributes, built the way configfs would give them to the daemon, and turned
//! into the [`LunInfo`] the device serves by the daemon's own [`crate::daemon::lun_info`].

use tcmu_scsi::lun::LunInfo;

use crate::backend::Backend;
use crate::configfs::DeviceAttrs;

/// Builder of a test LUN's [`DeviceAttrs`]: write cache on, `hw_max_sectors` 256, no serial
/// (the daemon then uses a fallback), no kernel timeouts, unless changed.
///
/// ```
/// use tcmu_warden::testing::LunSpec;
/// let attrs = LunSpec::blocks(2048, 512).serial("qa-0001").write_cache(false).attrs();
/// assert_eq!((attrs.dev_size, attrs.block_size), (2048 * 512, 512));
/// assert_eq!(attrs.serial.as_deref(), Some("qa-0001"));
/// assert!(!attrs.write_cache);
/// ```
#[derive(Debug, Clone)]
pub struct LunSpec {
    attrs: DeviceAttrs,
}

impl LunSpec {
    /// A LUN of `dev_size` bytes in blocks of `block_size` bytes.
    #[must_use]
    pub fn new(dev_size: u64, block_size: u32) -> LunSpec {
        LunSpec {
            attrs: DeviceAttrs {
                dev_size,
                block_size,
                hw_max_sectors: 256,
                write_cache: true,
                serial: None,
                cmd_time_out: None,
                qfull_time_out: None,
            },
        }
    }

    /// A LUN of `blocks` blocks of `block_size` bytes.
    #[must_use]
    pub fn blocks(blocks: u64, block_size: u32) -> LunSpec {
        LunSpec::new(blocks * u64::from(block_size), block_size)
    }

    /// `attrib/hw_max_sectors` (512-byte sectors).
    #[must_use]
    pub fn hw_max_sectors(mut self, sectors: u32) -> LunSpec {
        self.attrs.hw_max_sectors = sectors;
        self
    }

    /// `attrib/emulate_write_cache`.
    #[must_use]
    pub fn write_cache(mut self, on: bool) -> LunSpec {
        self.attrs.write_cache = on;
        self
    }

    /// `wwn/vpd_unit_serial`.
    #[must_use]
    pub fn serial(mut self, serial: &str) -> LunSpec {
        self.attrs.serial = Some(serial.to_string());
        self
    }

    /// The attributes.
    #[must_use]
    pub fn attrs(&self) -> DeviceAttrs {
        self.attrs.clone()
    }

    /// What the daemon serves for these attributes on `backend` (its capabilities decide
    /// UNMAP, WRITE SAME and the VPD pages).
    #[must_use]
    pub fn lun_info(&self, backend: &dyn Backend) -> LunInfo {
        crate::daemon::lun_info(&self.attrs, backend, "test")
    }
}
