//! The RBD series (documented in `docs/metrics.md`, section "RBD").
//!
//! They are registered once per process registry, the first time an RBD LUN opens with
//! metrics; every LUN then resolves its label children once ([`RbdMetrics::for_device`]), so
//! the per-operation update on librbd's callback thread is one histogram observation on a cached
//! child: no hashing, no lock, no allocation. A LUN's series are removed when it closes.

use crate::backend::op_latency::OpLatency;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tcmu_warden_supervisor::metrics::{Metrics, LATENCY_BUCKETS, PREFIX};

/// The series, once per registry.
#[derive(Clone)]
struct Vecs {
    blocklisted: IntCounterVec,
    reopens: IntCounterVec,
    blocklist_cleanup: IntCounterVec,
    lock_owner: IntGaugeVec,
    lock_transitions: IntCounterVec,
    lock_requests: IntCounterVec,
    lock_wait_timeouts: IntCounterVec,
    lock_checks: IntCounterVec,
    fua_flushes: IntCounterVec,
    watchers: IntGaugeVec,
    op_latency: HistogramVec,
    clients: IntGaugeVec,
    alua_transitions: IntCounterVec,
    time_to_optimized: HistogramVec,
    compare_and_write: IntCounterVec,
    holders: crate::backend::series::Holders,
}

static REGISTERED: Mutex<Vec<(Weak<Metrics>, Vecs)>> = Mutex::new(Vec::new());

fn n(s: &str) -> String {
    format!("{PREFIX}_rbd_{s}")
}

fn vecs(m: &Arc<Metrics>) -> Option<Vecs> {
    let mut reg = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|(w, _)| w.strong_count() > 0);
    if let Some((_, v)) = reg
        .iter()
        .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(m)))
    {
        return Some(v.clone());
    }
    let dev = &["device", "subtype"];
    let dev_and = |x: &'static str| vec!["device", "subtype", x];
    let v = Vecs {
        blocklisted: IntCounterVec::new(
            Opts::new(n("blocklist_events_total"), "Times this LUN's RADOS client was found blocklisted (an operation failed with ESHUTDOWN)."),
            dev,
        )
        .ok()?,
        reopens: IntCounterVec::new(
            Opts::new(n("reopens_total"), "Reopens of the image on a fresh RADOS client, by result."),
            &dev_and("result"),
        )
        .ok()?,
        blocklist_cleanup: IntCounterVec::new(
            Opts::new(n("blocklist_cleanups_total"), "Removals of this daemon's own stale blocklist entry after a reopen, by result (ok, denied: the key's caps do not allow it, failed)."),
            &dev_and("result"),
        )
        .ok()?,
        lock_owner: IntGaugeVec::new(
            Opts::new(n("lock_owner"), "1 while this LUN's client holds the image's exclusive lock."),
            dev,
        )
        .ok()?,
        lock_transitions: IntCounterVec::new(
            Opts::new(n("lock_transitions_total"), "Exclusive lock transitions of this LUN's client, by direction (acquired; released: handed to a peer that asked, after the minimum hold; lost: taken away, e.g. broken)."),
            &dev_and("to"),
        )
        .ok()?,
        lock_requests: IntCounterVec::new(
            Opts::new(n("lock_requests_total"), "Peers' requests for the exclusive lock seen while this LUN held it, by result (damped: held back until the minimum hold time lock_hold had passed; yielded: answered by releasing the lock)."),
            &dev_and("result"),
        )
        .ok()?,
        lock_checks: IntCounterVec::new(
            Opts::new(n("lock_checks_total"), "Round trips to the image header's OSD made by the explicit lock's holder, by check (watchers: is another client watching the header; owner: is the lock still this handle's; request: the request record, read only while another client watches)."),
            &dev_and("check"),
        )
        .ok()?,
        fua_flushes: IntCounterVec::new(
            Opts::new(n("fua_flushes_total"), "Flushes (rbd_aio_flush) issued after FUA writes because librbd's cache is on for the image; 0 while it is off."),
            dev,
        )
        .ok()?,
        lock_wait_timeouts: IntCounterVec::new(
            Opts::new(n("lock_wait_timeouts_total"), "Writes completed with BUSY (retried by the initiator) after waiting for the exclusive lock longer than lock_timeout."),
            dev,
        )
        .ok()?,
        watchers: IntGaugeVec::new(
            Opts::new(n("watchers"), "Watchers of the image header at the last scan, by kind (own: this daemon's clients; other; possibly_stale: other and holding no lock)."),
            &dev_and("kind"),
        )
        .ok()?,
        op_latency: HistogramVec::new(
            HistogramOpts::new(n("op_duration_seconds"), "Latency of librbd operations, from the aio call to librbd's completion callback.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &dev_and("op"),
        )
        .ok()?,
        clients: IntGaugeVec::new(
            Opts::new(n("clients"), "RADOS clients this process holds for RBD (one per configuration file, user and osd_op_timeout, shared by LUNs)."),
            &[],
        )
        .ok()?,
        alua_transitions: IntCounterVec::new(
            Opts::new(n("alua_transitions_total"), "Lock-driven implicit ALUA transitions of this gateway's path, by the state it moved to (active_optimized: this LUN's client took the exclusive lock; active_non_optimized: it handed it over or lost it)."),
            &dev_and("to"),
        )
        .ok()?,
        time_to_optimized: HistogramVec::new(
            HistogramOpts::new(n("time_to_optimized_seconds"), "From the first write that arrived while another client held the exclusive lock (the path active/non-optimized) to this LUN holding it (active/optimized).")
                .buckets(LATENCY_BUCKETS.to_vec()),
            dev,
        )
        .ok()?,
        compare_and_write: IntCounterVec::new(
            Opts::new(n("compare_and_write_total"), "COMPARE AND WRITE commands by path (native: librbd's rbd_aio_compare_and_write, atomic on the OSD across gateways; generic: read, compare and write in this daemon, atomic only within it, for what librbd refuses: more than 512 bytes or crossing a 512-byte boundary)."),
            &dev_and("path"),
        )
        .ok()?,
        holders: crate::backend::series::Holders::default(),
    };
    let r = m.registry();
    let cs: [Box<dyn prometheus::core::Collector>; 15] = [
        Box::new(v.compare_and_write.clone()),
        Box::new(v.alua_transitions.clone()),
        Box::new(v.time_to_optimized.clone()),
        Box::new(v.blocklisted.clone()),
        Box::new(v.reopens.clone()),
        Box::new(v.blocklist_cleanup.clone()),
        Box::new(v.lock_owner.clone()),
        Box::new(v.lock_transitions.clone()),
        Box::new(v.lock_requests.clone()),
        Box::new(v.lock_wait_timeouts.clone()),
        Box::new(v.lock_checks.clone()),
        Box::new(v.fua_flushes.clone()),
        Box::new(v.watchers.clone()),
        Box::new(v.op_latency.clone()),
        Box::new(v.clients.clone()),
    ];
    for c in cs {
        if let Err(e) = r.register(c) {
            tracing::warn!("rbd metrics not registered: {e}");
            return None;
        }
    }
    reg.push((Arc::downgrade(m), v.clone()));
    Some(v)
}

/// One LUN's RBD series (children resolved once). Without a registry every update is a
/// no-op on private series.
pub struct RbdMetrics {
    device: String,
    vecs: Option<Vecs>,
    /// Blocklist events.
    pub blocklisted: IntCounter,
    /// Successful reopens.
    pub reopen_ok: IntCounter,
    /// Failed reopens.
    pub reopen_failed: IntCounter,
    /// Own blocklist entry removed.
    pub cleanup_ok: IntCounter,
    /// Removal refused by the key's caps.
    pub cleanup_denied: IntCounter,
    /// Removal failed otherwise.
    pub cleanup_failed: IntCounter,
    /// Lock owner gauge.
    pub lock_owner: IntGauge,
    /// Lock acquired transitions.
    pub lock_acquired: IntCounter,
    /// Lock lost transitions.
    pub lock_lost: IntCounter,
    /// Lock released to a peer (after the minimum hold).
    pub lock_released: IntCounter,
    /// Peer requests held back by the minimum hold.
    pub lock_damped: IntCounter,
    /// Peer requests answered by releasing.
    pub lock_yielded: IntCounter,
    /// Writes that waited for the lock past lock_timeout.
    pub lock_wait_timeouts: IntCounter,
    /// The holder's header round trips: watchers, owner, request ([`LOCK_CHECKS`]).
    pub lock_checks: [IntCounter; 3],
    /// Flushes issued after FUA writes (librbd's cache on for the image).
    pub fua_flushes: IntCounter,
    /// Watchers: own, other, possibly stale.
    pub watchers: [IntGauge; 3],
    /// librbd latency per kind of operation (label `op`: [`crate::backend::IoOp::NAMES`]).
    pub latency: OpLatency,
    /// ALUA transitions to active/optimized (this LUN took the lock).
    pub alua_optimized: IntCounter,
    /// ALUA transitions to active/non-optimized (handed over or lost).
    pub alua_non_optimized: IntCounter,
    /// First waiting write to lock held.
    pub time_to_optimized: Histogram,
    /// COMPARE AND WRITE done by librbd (atomic across gateways).
    pub caw_native: IntCounter,
    /// COMPARE AND WRITE librbd cannot take (the device's generic path).
    pub caw_generic: IntCounter,
    clients: Option<IntGauge>,
}

/// Kinds of the `watchers` gauge.
pub const WATCHER_KINDS: [&str; 3] = ["own", "other", "possibly_stale"];
/// Kinds of the `lock_checks` counter.
pub const LOCK_CHECKS: [&str; 3] = ["watchers", "owner", "request"];

impl RbdMetrics {
    /// Series for `device`, registered in `metrics` if given.
    #[must_use]
    pub fn for_device(metrics: Option<&Arc<Metrics>>, device: &str) -> RbdMetrics {
        let vecs = metrics.and_then(vecs);
        let Some(v) = &vecs else {
            return RbdMetrics::private(device);
        };
        fn l<'a>(device: &'a str, x: &'a str) -> [&'a str; 3] {
            [device, "rbd", x]
        }
        v.holders.hold(device);
        RbdMetrics {
            device: device.to_string(),
            blocklisted: v.blocklisted.with_label_values(&[device, "rbd"]),
            reopen_ok: v.reopens.with_label_values(&l(device, "ok")),
            reopen_failed: v.reopens.with_label_values(&l(device, "failed")),
            cleanup_ok: v.blocklist_cleanup.with_label_values(&l(device, "ok")),
            cleanup_denied: v.blocklist_cleanup.with_label_values(&l(device, "denied")),
            cleanup_failed: v.blocklist_cleanup.with_label_values(&l(device, "failed")),
            lock_owner: v.lock_owner.with_label_values(&[device, "rbd"]),
            lock_acquired: v.lock_transitions.with_label_values(&l(device, "acquired")),
            lock_lost: v.lock_transitions.with_label_values(&l(device, "lost")),
            lock_released: v.lock_transitions.with_label_values(&l(device, "released")),
            lock_damped: v.lock_requests.with_label_values(&l(device, "damped")),
            lock_yielded: v.lock_requests.with_label_values(&l(device, "yielded")),
            lock_wait_timeouts: v.lock_wait_timeouts.with_label_values(&[device, "rbd"]),
            lock_checks: LOCK_CHECKS.map(|k| v.lock_checks.with_label_values(&l(device, k))),
            fua_flushes: v.fua_flushes.with_label_values(&[device, "rbd"]),
            watchers: WATCHER_KINDS.map(|k| v.watchers.with_label_values(&l(device, k))),
            latency: OpLatency::resolve(&v.op_latency, &[device, "rbd"]),
            alua_optimized: v
                .alua_transitions
                .with_label_values(&l(device, "active_optimized")),
            alua_non_optimized: v
                .alua_transitions
                .with_label_values(&l(device, "active_non_optimized")),
            time_to_optimized: v.time_to_optimized.with_label_values(&[device, "rbd"]),
            caw_native: v.compare_and_write.with_label_values(&l(device, "native")),
            caw_generic: v.compare_and_write.with_label_values(&l(device, "generic")),
            clients: Some(v.clients.with_label_values(&[])),
            vecs: vecs.clone(),
        }
    }

    fn private(device: &str) -> RbdMetrics {
        let c = || IntCounter::new("x", "x").expect("valid");
        let g = || IntGauge::new("x", "x").expect("valid");
        RbdMetrics {
            device: device.to_string(),
            vecs: None,
            blocklisted: c(),
            reopen_ok: c(),
            reopen_failed: c(),
            cleanup_ok: c(),
            cleanup_denied: c(),
            cleanup_failed: c(),
            lock_owner: g(),
            lock_acquired: c(),
            lock_lost: c(),
            lock_released: c(),
            lock_damped: c(),
            lock_yielded: c(),
            lock_wait_timeouts: c(),
            lock_checks: [c(), c(), c()],
            fua_flushes: c(),
            watchers: [g(), g(), g()],
            latency: OpLatency::unregistered(),
            alua_optimized: c(),
            alua_non_optimized: c(),
            time_to_optimized: Histogram::with_opts(HistogramOpts::new("x", "x")).expect("valid"),
            caw_native: c(),
            caw_generic: c(),
            clients: None,
        }
    }

    /// Set the process-wide client count.
    pub fn set_clients(&self, n: usize) {
        if let Some(c) = &self.clients {
            c.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

impl Drop for RbdMetrics {
    fn drop(&mut self) {
        let Some(v) = &self.vecs else { return };
        let d = self.device.as_str();
        // Another backend of this device (a dev_config change) still uses them.
        if v.holders.release(d).is_none() {
            return;
        }
        let _ = v.blocklisted.remove_label_values(&[d, "rbd"]);
        let _ = v.lock_owner.remove_label_values(&[d, "rbd"]);
        for r in ["ok", "failed"] {
            let _ = v.reopens.remove_label_values(&[d, "rbd", r]);
        }
        for r in ["ok", "denied", "failed"] {
            let _ = v.blocklist_cleanup.remove_label_values(&[d, "rbd", r]);
        }
        for t in ["acquired", "lost", "released"] {
            let _ = v.lock_transitions.remove_label_values(&[d, "rbd", t]);
        }
        for r in ["damped", "yielded"] {
            let _ = v.lock_requests.remove_label_values(&[d, "rbd", r]);
        }
        let _ = v.lock_wait_timeouts.remove_label_values(&[d, "rbd"]);
        let _ = v.fua_flushes.remove_label_values(&[d, "rbd"]);
        for k in LOCK_CHECKS {
            let _ = v.lock_checks.remove_label_values(&[d, "rbd", k]);
        }
        for k in WATCHER_KINDS {
            let _ = v.watchers.remove_label_values(&[d, "rbd", k]);
        }
        OpLatency::remove(&v.op_latency, &[d, "rbd"]);
        for t in ["active_optimized", "active_non_optimized"] {
            let _ = v.alua_transitions.remove_label_values(&[d, "rbd", t]);
        }
        let _ = v.time_to_optimized.remove_label_values(&[d, "rbd"]);
        for p in ["native", "generic"] {
            let _ = v.compare_and_write.remove_label_values(&[d, "rbd", p]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_backend_keeps_its_series_when_the_old_one_drops() {
        let m = Metrics::new();
        let old = RbdMetrics::for_device(Some(&m), "user_0/r");
        let new = RbdMetrics::for_device(Some(&m), "user_0/r");
        drop(old);
        new.lock_owner.set(1);
        let text = m.encode();
        assert!(
            text.contains("tcmu_warden_rbd_lock_owner{device=\"user_0/r\",subtype=\"rbd\"} 1"),
            "{text}"
        );
        drop(new);
        assert!(!m.encode().contains("user_0/r"));
    }
}
