//! The Ceph RBD backend (subtype `rbd`), on librbd through `ceph-rbd`.
//!
//! - [`mod@cfg`]: tcmu-runner's cfgstring `rbd/<pool>/<image>[;osd_op_timeout=N][;conf=PATH]
//!   [;id=USER]`, plus `<pool>/<namespace>/<image>` and read-only `<image>@<snapshot>`.
//! - [`client`]: one RADOS client per (conf, user, osd_op_timeout), shared by every LUN.
//! - [`image`]: opening an image, with errors naming the pool, image or snapshot.
//! - [`backend`]: asynchronous vectored I/O straight from the ring's data area, the
//!   completion thread, blocklist detection.
//! - [`lock`]: the exclusive lock taken explicitly on the first write, a minimum hold before
//!   handing it to a peer (ping-pong damping), a bounded wait for it.
//! - [`monitor`]: reopen after blocklisting, lock state, watchers, `diagnose`.
//! - [`metrics`]: the `tcmu_warden_rbd_*` series.
//! - [`service`]: the LUN's entry in the Ceph manager's service map (`ceph -s`, dashboard).
//! - [`peers`]: the other gateways of the image in that map (a live peer is no stale watcher).
//!
//! COMPARE AND WRITE of one 512-byte sector goes to librbd's `rbd_aio_compare_and_write`
//! (atomic on the OSD across gateways, through the same lock gate as a write); librbd refuses
//! anything longer, which takes the handler's generic path (read, compare, write under the
//! LBA range lock). docs/rbd.md, "COMPARE AND WRITE".

pub mod backend;
pub mod cfg;
pub mod client;
pub mod image;
pub mod lock;
pub mod metrics;
pub mod monitor;
pub mod peers;
pub mod service;

use super::registry::OpenCtx;
use super::{Backend, OpenError};
use std::sync::Arc;
use std::time::Duration;

/// The cfgstring syntax, for people.
pub const CONFIG_DESC: &str = "rbd/<pool>[/<namespace>]/<image>[@<snapshot>][;osd_op_timeout=<secs>][;conf=<ceph.conf>][;id=<user>][;lock_hold=<secs>][;lock_timeout=<secs>]: \
an RBD image (a snapshot is served read-only). osd_op_timeout is the backend tier (rados_osd_op_timeout); \
the exclusive lock is taken on the first write and held at least lock_hold (default 2; 0: librbd's cooperative handover) \
before a peer that asks gets it; a write waits for it at most lock_timeout (default 5), then BUSY; \
LUNs with the same conf, id and osd_op_timeout share one RADOS client. Example: rbd/rbd/lun0;osd_op_timeout=30";

/// Open an RBD image as a LUN of `ctx.size` bytes (the image may be larger, not smaller).
///
/// # Errors
/// [`OpenError::Config`] for a bad cfgstring or option; [`OpenError::Io`] naming the pool,
/// image or snapshot that could not be opened, or a size mismatch.
pub fn open(cfgstring: &str, ctx: &OpenCtx) -> Result<Arc<dyn Backend>, OpenError> {
    let cfg = cfg::parse(cfgstring, ctx)?;
    let opened = image::open(&cfg, false).map_err(image::OpenFailure::into_open_error)?;
    let image_size = opened.image.size().map_err(|e| OpenError::Io {
        what: format!("rbd: size of {}", cfg.spec()),
        source: std::io::Error::from_raw_os_error(e.errno as i32),
    })?;
    if image_size < ctx.size {
        return Err(OpenError::Config {
            cfgstring: cfgstring.to_string(),
            reason: format!(
                "image {} is {image_size} bytes, smaller than the LUN's dev_size {}: grow it \
                 (rbd resize) or lower dev_size",
                cfg.spec(),
                ctx.size
            ),
        });
    }
    if image_size > ctx.size && ctx.size > 0 {
        tracing::info!(device = ctx.device, image = %cfg.spec(), image_size, lun_size = ctx.size,
            "rbd: the image is larger than the LUN; the LUN serves its first dev_size bytes");
    }
    let m = metrics::RbdMetrics::for_device(ctx.metrics, ctx.device);
    m.set_clients(client::count());
    let b = backend::RbdBackend::start(cfg, ctx.device, ctx.size, opened, m).map_err(|e| {
        OpenError::Io {
            what: "rbd: starting the completion threads".into(),
            source: e,
        }
    })?;
    Ok(Arc::new(b))
}

/// Validate an RBD cfgstring: its syntax and options, and (bounded by `timeout`) that the
/// cluster answers and the pool, namespace, image and snapshot exist. Opens nothing for
/// writing (a read-only open takes no watch).
///
/// # Errors
/// What is wrong, naming it.
pub fn check_config(cfgstring: &str, ctx: &OpenCtx, timeout: Duration) -> Result<(), String> {
    let cfg = cfg::parse(cfgstring, ctx).map_err(|e| e.to_string())?;
    let spec = cfg.spec();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("rbd-check".into())
        .spawn(move || {
            let r = image::open(&cfg, true)
                .map(drop)
                .map_err(|e| e.into_open_error().to_string());
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(format!("rbd: cannot start the check: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "rbd: no answer from the cluster within {} s while checking {spec}",
            timeout.as_secs_f64()
        )),
    }
}
