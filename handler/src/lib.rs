//! tcmu-warden: a userspace handler for the Linux LIO TCMU backstore (`target_core_user`).
//!
//! - [`device`]: one served LUN (device thread, workers, command contexts).
//! - [`backend`]: where blocks live (a file, RAM for tests, Ceph RBD through librbd with
//!   feature `rbd`, GlusterFS through gfapi with feature `glfs`, and a fault-injecting
//!   wrapper), behind a submit + completion interface.
//! - [`configfs`]: a backstore's attributes as the kernel exposes them.
//! - [`daemon`]: finding devices, serving them, stopping within a deadline.
//! - [`dbus`]: the `org.kernel.TCMUService1` service targetcli asks (subtypes, cfgstring
//!   help and validation).
//! - [`config`], [`duration`]: the configuration file and the duration syntax it shares with
//!   cfgstring options and fault rules.
//! - [`tcmu_conf`], [`logging`]: tcmu-runner's `/etc/tcmu/tcmu.conf` and the run-time log level.
//! - `testing` (feature `test-utils`): the harness tests and benchmarks run a device with.
//!
//! The ring itself is the `tcmu-ring` crate and SCSI is `tcmu-scsi` (no unsafe code).

pub mod backend;
pub mod config;
pub mod configfs;
pub mod daemon;
pub mod dbus;
pub mod device;
pub mod duration;
pub mod elastic;
pub mod journal;
pub mod kernel_actions;
pub mod logging;
pub mod netlink;
pub mod notify;
pub mod panic_policy;
pub mod tcmu_conf;
#[cfg(feature = "test-utils")]
pub mod testing;
