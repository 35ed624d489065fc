//! Test support (feature `test-utils`): one harness for every test and benchmark that runs a
//! device over the emulated kernel, the way rust-vmm's `virtio-queue` ships its `mock` driver
//! behind the same feature.
//!
//! - [`Harness`]: the kernel's side of the ring (`tcmu_ring::emu`) on the test thread and a
//!   device served by the real dispatcher; submit a CDB, wait for its completion with a bound.
//!   Every device a test starts is spawned there.
//! - [`LunSpec`]: a test LUN's configfs attributes, turned into what the daemon serves.
//! - [`cdb`]: CDB builders.
//! - [`shadow`]: the shadow-model integrity run any backend's test can use.
//!
//! Backends that hold, delay or fail chosen operations are
//! [`FaultBackend`](crate::backend::fault::FaultBackend) rules; the RAM backend is
//! [`RamBackend`](crate::backend::ram::RamBackend).
//!
//! ```
//! use std::sync::Arc;
//! use tcmu_ring::emu::{DataDir, EmuConfig};
//! use tcmu_warden::backend::ram::RamBackend;
//! use tcmu_warden::device::DeviceConfig;
//! use tcmu_warden::testing::{assert_good, cdb, Harness, LunSpec};
//!
//! let ram = Arc::new(RamBackend::new(1 << 20));
//! let lun = LunSpec::new(1 << 20, 512).serial("doc").lun_info(ram.as_ref());
//! let mut h = Harness::new(ram, lun, EmuConfig::default(), &DeviceConfig::default());
//! let block = vec![7u8; 512];
//! assert_good(&h.run(&cdb::write16(3, 1, false), DataDir::ToDevice(&block)));
//! let c = h.run(&cdb::read16(3, 1), DataDir::FromDevice(512));
//! assert_good(&c);
//! assert_eq!(c.data_in, block);
//! ```

pub mod cdb;
pub mod harness;
pub mod lun;
pub mod shadow;

pub use harness::{assert_good, data_in, lba_status_at, sense_of, wait_until, Harness, WAIT_LIMIT};
pub use lun::LunSpec;
pub use shadow::{Counts, Mix, Shadow, Share};
