//! Gluster series on the process's metrics endpoint (documented in `docs/metrics.md`).
//!
//! The vectors are registered once per registry (several LUNs share one process and one
//! registry); each backend resolves its label children once when it opens, so a completion
//! only touches atomics.

use crate::backend::op_latency::OpLatency;
use crate::backend::IoOp;
use parking_lot::Mutex;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use std::sync::{Arc, Weak};
use tcmu_warden_supervisor::metrics::{Metrics, LATENCY_BUCKETS, PREFIX};

/// How a device's volumes are noted among its label values (errno names have no `=`).
const VOLUME_NOTE: &str = "volume=";

struct Vecs {
    up: IntGaugeVec,
    reopens: IntCounterVec,
    op: HistogramVec,
    errors: IntCounterVec,
    connections: IntGauge,
    holders: crate::backend::series::Holders,
}

static REGISTERED: Mutex<Vec<(Weak<Metrics>, Arc<Vecs>)>> = Mutex::new(Vec::new());

fn vecs(m: &Arc<Metrics>) -> Option<Arc<Vecs>> {
    let mut reg = REGISTERED.lock();
    reg.retain(|(w, _)| w.strong_count() > 0);
    if let Some((_, v)) = reg
        .iter()
        .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(m)))
    {
        return Some(Arc::clone(v));
    }
    let n = |s: &str| format!("{PREFIX}_glfs_{s}");
    let v = Vecs {
        up: IntGaugeVec::new(
            Opts::new(n("up"), "1 while the device's gluster volume answers (last I/O or probe succeeded or failed with a non-connection error), 0 after a connection error (ENOTCONN, ETIMEDOUT, ...)"),
            &["device", "volume"],
        )
        .ok()?,
        reopens: IntCounterVec::new(
            Opts::new(n("reopens_total"), "Times the device's gluster file was reopened after its handle went bad"),
            &["device", "volume"],
        )
        .ok()?,
        op: HistogramVec::new(
            HistogramOpts::new(n("op_duration_seconds"), "gfapi operation latency, from submit to completion callback")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["device", "op"],
        )
        .ok()?,
        errors: IntCounterVec::new(
            Opts::new(n("errors_total"), "gfapi operations that failed, by errno name"),
            &["device", "errno"],
        )
        .ok()?,
        connections: IntGauge::with_opts(Opts::new(
            n("volume_connections"),
            "Open gfapi connections (glfs_t), one per (volume, servers, ping_timeout) shared by its LUNs",
        ))
        .ok()?,
        holders: crate::backend::series::Holders::default(),
    };
    let r = m.registry();
    let ok = r.register(Box::new(v.up.clone())).is_ok()
        && r.register(Box::new(v.reopens.clone())).is_ok()
        && r.register(Box::new(v.op.clone())).is_ok()
        && r.register(Box::new(v.errors.clone())).is_ok()
        && r.register(Box::new(v.connections.clone())).is_ok();
    if !ok {
        tracing::warn!("could not register the gluster metrics");
        return None;
    }
    let v = Arc::new(v);
    reg.push((Arc::downgrade(m), Arc::clone(&v)));
    Some(v)
}

/// One connection's share of the gauge of open connections.
pub struct Connection(IntGauge);

impl Connection {
    /// Count one connection in `m`'s registry.
    pub fn new(m: Option<&Arc<Metrics>>) -> Option<Connection> {
        let v = vecs(m?)?;
        v.connections.inc();
        Some(Connection(v.connections.clone()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A device's resolved children.
pub struct DeviceSeries {
    vecs: Arc<Vecs>,
    device: String,
    up: IntGauge,
    reopens: IntCounter,
    ops: OpLatency,
}

impl DeviceSeries {
    /// Register (once) and resolve the series of `device` on `volume`.
    pub fn new(m: Option<&Arc<Metrics>>, device: &str, volume: &str) -> Option<DeviceSeries> {
        let vecs = vecs(m?)?;
        vecs.holders.hold(device);
        vecs.holders.note(device, &format!("{VOLUME_NOTE}{volume}"));
        let up = vecs.up.with_label_values(&[device, volume]);
        up.set(1);
        Some(DeviceSeries {
            reopens: vecs.reopens.with_label_values(&[device, volume]),
            ops: OpLatency::resolve(&vecs.op, &[device]),
            up,
            device: device.to_string(),
            vecs,
        })
    }

    /// An operation of kind `op` that started at `started` has just finished.
    pub fn observe(&self, op: IoOp, started: std::time::Instant) {
        self.ops.observe(op, started);
    }

    /// An operation failed (errors are rare: resolving the label here is fine).
    pub fn error(&self, errno: nix::errno::Errno) {
        let name = format!("{errno:?}");
        self.vecs.holders.note(&self.device, &name);
        self.vecs
            .errors
            .with_label_values(&[&self.device, &name])
            .inc();
    }

    /// Whether the volume answers.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    /// The file was reopened.
    pub fn reopened(&self) {
        self.reopens.inc();
    }
}

impl Drop for DeviceSeries {
    fn drop(&mut self) {
        let v = &self.vecs;
        // Another backend of this device (a dev_config change) still uses them.
        let Some(noted) = v.holders.release(&self.device) else {
            return;
        };
        OpLatency::remove(&v.op, &[&self.device]);
        // Every volume this device was on, and every errno it counted, whichever it was.
        for n in &noted {
            if let Some(volume) = n.strip_prefix(VOLUME_NOTE) {
                let _ = v.up.remove_label_values(&[&self.device, volume]);
                let _ = v.reopens.remove_label_values(&[&self.device, volume]);
            } else {
                let _ = v.errors.remove_label_values(&[&self.device, n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_backend_keeps_its_series_when_the_old_one_drops_and_every_errno_goes_at_the_end() {
        let m = Metrics::new();
        let old = DeviceSeries::new(Some(&m), "user_0/g", "vol1").unwrap();
        old.error(nix::errno::Errno::ENOMEDIUM);
        // dev_config: the new backend opens before the old one is dropped.
        let new = DeviceSeries::new(Some(&m), "user_0/g", "vol2").unwrap();
        new.error(nix::errno::Errno::EHOSTDOWN);
        drop(old);
        let text = m.encode();
        assert!(
            text.contains("tcmu_warden_glfs_up{device=\"user_0/g\",volume=\"vol2\"} 1"),
            "{text}"
        );
        assert!(text.contains("tcmu_warden_glfs_op_duration_seconds_count{device=\"user_0/g\""));
        drop(new);
        let text = m.encode();
        assert!(
            !text.contains("user_0/g"),
            "every series of the device removed: {text}"
        );
    }
}
