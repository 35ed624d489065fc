//! tcmu-warden: a userspace handler for the Linux LIO TCMU backstore (`target_core_user`).
//!
//! - [`device`]: one served LUN (device thread, workers, command contexts).
//! - [`backend`]: where blocks live (file, RAM; librbd and gfapi later), behind a
//!   submit + completion interface.
//! - [`configfs`]: a backstore's attributes as the kernel exposes them.
//! - [`daemon`]: finding devices, serving them, stopping within a deadline.
//! - [`dbus`]: the `org.kernel.TCMUService1` service targetcli asks (subtypes, cfgstring
//!   help and validation).
//! - [`tcmu_conf`], [`logging`]: tcmu-runner's `/etc/tcmu/tcmu.conf` and the run-time log level.
//!
//! The ring itself is the `tcmu-ring` crate and SCSI is `tcmu-scsi` (no unsafe code).

pub mod backend;
pub mod config;
pub mod configfs;
pub mod daemon;
pub mod dbus;
pub mod device;
pub mod kernel_actions;
pub mod logging;
pub mod netlink;
pub mod notify;
pub mod panic_policy;
pub mod tcmu_conf;
