//! The handler's integration tests, one binary (one link instead of one per file): every
//! module but the process-level ones runs a device over the emulated kernel with the harness
//! in `tcmu_warden::testing` (feature `test-utils`, enabled for tests by the dev-dependency
//! on this crate itself).
//!
//! Separate binaries remain where a process of their own is the point: `no_alloc` (a counting
//! global allocator), and the backends against real services, `rbd`, `rbd_bench`, `glfs`,
//! `glfs_bench` (ignored by default, run by `tests/ceph/run.sh` and `tests/gluster/run.sh`
//! with `--test <name>`).

mod alua;
mod daemon_process;
mod data_integrity;
mod dbus_service;
mod deadline;
mod device_loop;
mod durable_zeroing;
mod fault_backend;
mod faults;
mod health;
mod late_writes;
mod loops;
mod metrics;
mod native_caw;
mod outliers;
mod pool;
mod reconfig;
mod scsi_ring;
mod systemd_unit;
mod tmr;
mod xcopy;
