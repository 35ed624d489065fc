//! The monitor thread of one RBD LUN (`rbd-mon-<name>`): reopens after blocklisting, follows
//! the exclusive lock, scans the header's watchers, and cleans up this daemon's own stale
//! blocklist entry. Also what `diagnose` says.
//!
//! - **Blocklisting**: the completion thread wakes it; it reopens the image on a fresh client
//!   (shared with the other LUNs of the same cluster and user), with backoff from 100 ms to
//!   5 s. Once the old client is gone (every LUN moved off it), it removes the old address
//!   from the OSD blocklist if the key's caps allow (`osd blocklist rm`), so entries do not
//!   pile up; without the caps the entry expires by itself (1 h by default).
//! - **Exclusive lock**: polled every second (a local call); transitions are counted and a
//!   lost lock is logged with its new holder.
//! - **Watchers**: listed on open, when a write has waited more than [`STALL`] without this
//!   client holding the lock (lock acquisition stalls), and for `diagnose`. A watcher that is
//!   not a client of this daemon and holds no lock is reported as possibly stale, with its
//!   address.

use super::backend::Inner;
use super::client::{self, Client};
use super::image;
use crate::backend::LockHolder;
use ceph_rbd::{Errno, Watcher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A write waiting this long while the lock is not ours counts as a stalled acquisition.
pub const STALL: Duration = Duration::from_secs(2);
/// Watcher scans at most this often, unless asked for by `diagnose`.
const SCAN_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for the old client to go away before removing its blocklist entry.
const CLEANUP_WAIT: Duration = Duration::from_secs(30);

/// What a watcher is to this daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherKind {
    /// One of this daemon's clients.
    Own,
    /// Another client, holding the lock.
    LockHolder,
    /// Another gateway of the image, registered in the Ceph service map and alive
    /// ([`super::peers`]): in a gateway pair, the peer that does not hold the lock.
    Gateway,
    /// Another client holding no lock and no gateway: possibly stale.
    PossiblyStale,
}

/// The facts `diagnose` reports.
#[derive(Default)]
pub struct Facts {
    /// Whether this client holds the lock, as last polled.
    pub lock_owner: Option<bool>,
    /// The last watcher scan.
    pub watchers: Vec<(Watcher, WatcherKind)>,
    /// When it was made.
    pub scanned: Option<Instant>,
    /// Reopens done.
    pub reopens: u64,
    /// The last reopen, in words.
    pub last_reopen: Option<String>,
    /// The blocklisted client to clean up after: (client, its address, since).
    pub cleanup: Option<(Weak<Client>, String, Instant)>,
}

/// The monitor thread.
pub(super) fn run(inner: &Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut next_scan = Instant::now();
    let mut service = super::service::Entry::default();
    loop {
        let (recover, mut scan) = {
            let mut w = inner.wake.lock();
            if !w.stop && !w.recover && !w.scan {
                inner.wake_cv.wait_for(&mut w, Duration::from_secs(1));
            }
            if w.stop {
                return;
            }
            (std::mem::take(&mut w.recover), std::mem::take(&mut w.scan))
        };
        if recover || inner.recovering.load(Ordering::Acquire) {
            if reopen(inner).is_ok() {
                backoff = Duration::from_millis(100);
            } else {
                let mut w = inner.wake.lock();
                if !w.stop {
                    inner.wake_cv.wait_for(&mut w, backoff);
                }
                w.recover = true;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            continue;
        }
        let owner = poll_lock(inner);
        if owner == Some(false) && inner.oldest_write_age().is_some_and(|a| a >= STALL) {
            scan = true;
        }
        if scan && Instant::now() >= next_scan {
            scan_watchers(inner, "scan");
            next_scan = Instant::now() + SCAN_EVERY;
        }
        cleanup_blocklist(inner);
        service.tick(inner);
    }
}

/// Poll the lock; returns whether this client holds it (`None`: unknown or read-only).
fn poll_lock(inner: &Inner) -> Option<bool> {
    if inner.read_only {
        return None;
    }
    if let Some(g) = &inner.gate {
        // Explicit lock: the lock thread follows it and counts its transitions; who else
        // holds it is asked here (a round trip to the header's OSD, off the I/O path).
        let owner = g.is_owner();
        if !owner {
            poll_holder(inner);
        }
        return Some(owner);
    }
    let cur = Arc::clone(&inner.current.read());
    let owner = match cur.image.is_lock_owner() {
        Ok(o) => o,
        Err(e) => {
            if e.is_blocklisted() {
                inner.blocklisted(&cur);
            }
            return None;
        }
    };
    let before = inner.facts.lock().lock_owner.replace(owner);
    inner.metrics.lock_owner.set(i64::from(owner));
    if owner {
        inner.set_holder(LockHolder::This);
    } else {
        poll_holder(inner);
    }
    match (before, owner) {
        (Some(false) | None, true) => {
            inner.metrics.lock_acquired.inc();
            tracing::info!(device = %inner.device, image = %inner.cfg.spec(), client = ?cur.client,
                "rbd: exclusive lock acquired");
        }
        (Some(true), false) => {
            inner.metrics.lock_lost.inc();
            let holder = cur
                .image
                .lock_owners()
                .map(|o| o.owners.join(", "))
                .unwrap_or_default();
            tracing::warn!(device = %inner.device, image = %inner.cfg.spec(), client = ?cur.client,
                now_held_by = %if holder.is_empty() { "nobody".to_string() } else { holder },
                "rbd: exclusive lock lost (another client asked for it or broke it)");
        }
        _ => {}
    }
    Some(owner)
}

/// Ask who holds the lock when this client does not: another client, or nobody.
fn poll_holder(inner: &Inner) {
    let cur = Arc::clone(&inner.current.read());
    match cur.image.lock_owners() {
        // The lock thread may have taken it meanwhile: never overwrite its word.
        Ok(_) if inner.gate.as_ref().is_some_and(super::lock::Gate::is_owner) => {}
        Ok(o) if o.owners.is_empty() => inner.set_holder(LockHolder::Nobody),
        Ok(_) => inner.set_holder(LockHolder::Other),
        Err(e) => {
            if e.is_blocklisted() {
                inner.blocklisted(&cur);
            }
        }
    }
}

/// List the header's watchers, classify them, update the metric, log the possibly stale.
pub(super) fn scan_watchers(inner: &Inner, why: &str) -> Vec<(Watcher, WatcherKind)> {
    if inner.cfg.snap.is_some() {
        return Vec::new();
    }
    let cur = Arc::clone(&inner.current.read());
    let watchers = match cur.image.watchers() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(device = %inner.device, image = %inner.cfg.spec(), "rbd: listing watchers failed: {e}");
            return Vec::new();
        }
    };
    let holders = cur
        .image
        .lock_owners()
        .map(|o| o.owners)
        .unwrap_or_default();
    let live = client::live();
    let out: Vec<(Watcher, WatcherKind)> = watchers
        .into_iter()
        .map(|w| {
            let own = live
                .iter()
                .any(|(id, addr)| i64::try_from(*id).ok() == Some(w.id) || *addr == w.addr);
            let kind = if own {
                WatcherKind::Own
            } else if holders
                .iter()
                .any(|h| *h == w.addr || *h == format!("client.{}", w.id))
            {
                WatcherKind::LockHolder
            } else {
                WatcherKind::PossiblyStale
            };
            (w, kind)
        })
        .collect();
    let out = peers_are_not_stale(inner, &cur, out);
    let count = |k: WatcherKind| {
        i64::try_from(out.iter().filter(|(_, kk)| *kk == k).count()).unwrap_or(i64::MAX)
    };
    let [own, other, stale] = &inner.metrics.watchers;
    own.set(count(WatcherKind::Own));
    other.set(
        count(WatcherKind::LockHolder)
            + count(WatcherKind::Gateway)
            + count(WatcherKind::PossiblyStale),
    );
    stale.set(count(WatcherKind::PossiblyStale));
    inner.metrics.set_clients(client::count());
    for (w, k) in &out {
        if *k == WatcherKind::PossiblyStale {
            tracing::warn!(device = %inner.device, image = %inner.cfg.spec(), watcher = %format!("client.{}", w.id),
                addr = %w.addr, reason = why,
                "rbd: possibly stale watcher on the image header (not a client of this daemon, holds no lock, no gateway in the service map); \
                 if its process is gone or frozen: ceph osd blocklist add {}", w.addr);
        }
    }
    let mut f = inner.facts.lock();
    f.watchers.clone_from(&out);
    f.scanned = Some(Instant::now());
    out
}

/// Watchers that look stale but are gateways of the image registered in the service map
/// (asked only when some look stale) become [`WatcherKind::Gateway`]. When the map cannot be
/// read, they stay possibly stale and the log says why.
fn peers_are_not_stale(
    inner: &Inner,
    cur: &image::Opened,
    mut out: Vec<(Watcher, WatcherKind)>,
) -> Vec<(Watcher, WatcherKind)> {
    if !out.iter().any(|(_, k)| *k == WatcherKind::PossiblyStale) {
        return out;
    }
    let gateways = cur
        .client
        .cluster
        .mon_command(r#"{"prefix": "service dump", "format": "json"}"#)
        .map_err(|e| e.to_string())
        .and_then(|(json, _)| {
            super::peers::parse_service_dump(
                &json,
                &inner.cfg.pool,
                inner.cfg.namespace.as_deref(),
                &inner.cfg.image,
            )
            .map_err(|e| e.to_string())
        });
    match gateways {
        Ok(g) => {
            for (w, k) in &mut out {
                if *k == WatcherKind::PossiblyStale && g.iter().any(|g| g.watches(w)) {
                    *k = WatcherKind::Gateway;
                }
            }
        }
        Err(e) => {
            tracing::warn!(device = %inner.device, image = %inner.cfg.spec(),
                "rbd: the service map could not be read to tell peer gateways from stale watchers: {e}");
        }
    }
    out
}

/// Reopen the image on a fresh client (after blocklisting).
///
/// # Errors
/// The errno of connecting or opening; the caller retries with backoff.
pub(super) fn reopen(inner: &Arc<Inner>) -> Result<(), Errno> {
    let _one_at_a_time = inner.reopening.lock();
    if !inner.recovering.load(Ordering::Acquire) {
        return Ok(()); // another caller reopened while this one waited
    }
    let old = Arc::clone(&inner.current.read());
    let t = Instant::now();
    let fresh = match client::fresh(&old.client) {
        Ok(c) => c,
        Err(e) => {
            inner.metrics.reopen_failed.inc();
            tracing::warn!(device = %inner.device, "rbd: reopen: connecting a fresh client failed: {e}");
            return Err(e.errno);
        }
    };
    let opened = match image::open_on(&inner.cfg, fresh, inner.read_only) {
        Ok(o) => o,
        Err(e) => {
            inner.metrics.reopen_failed.inc();
            tracing::warn!(device = %inner.device, "rbd: reopen failed: {}: {}", e.what, e.errno.desc());
            return Err(e.errno);
        }
    };
    let holders = opened
        .image
        .lock_owners()
        .map(|o| o.owners.join(", "))
        .unwrap_or_default();
    let new_client = format!("{:?}", opened.client);
    let same_client = Arc::ptr_eq(&opened.client, &old.client);
    *inner.current.write() = Arc::new(opened);
    inner.set_holder(LockHolder::Unknown);
    if let Some(g) = &inner.gate {
        // The fresh handle holds nothing; the lock thread takes the lock for the next write.
        g.reset();
        inner.metrics.lock_owner.set(0);
    }
    inner.recovering.store(false, Ordering::Release);
    inner.metrics.reopen_ok.inc();
    let words = format!(
        "reopened on {new_client} in {} ms after {:?} was blocklisted; the lock {}",
        t.elapsed().as_millis(),
        old.client,
        if holders.is_empty() {
            "was free (its breaker released it or never took it)".to_string()
        } else {
            format!("is held by {holders} (the client that broke it, or took it over)")
        }
    );
    tracing::warn!(device = %inner.device, image = %inner.cfg.spec(), "rbd: {words}");
    {
        let mut f = inner.facts.lock();
        f.reopens += 1;
        f.last_reopen = Some(words);
        f.lock_owner = None;
        if !same_client && !old.client.addr.is_empty() {
            f.cleanup = Some((
                Arc::downgrade(&old.client),
                old.client.addr.clone(),
                Instant::now(),
            ));
        }
    }
    drop(old);
    inner.request_scan();
    Ok(())
}

/// Remove the old client's blocklist entry once the old client is gone.
fn cleanup_blocklist(inner: &Inner) {
    let (gone, addr) = {
        let f = inner.facts.lock();
        let Some((w, addr, since)) = &f.cleanup else {
            return;
        };
        let gone = w.strong_count() == 0;
        if !gone && since.elapsed() < CLEANUP_WAIT {
            return;
        }
        (gone, addr.clone())
    };
    inner.facts.lock().cleanup = None;
    if !gone {
        tracing::info!(device = %inner.device, %addr,
            "rbd: the blocklisted client is still used by another LUN; its blocklist entry is left \
             for that LUN to remove (or to expire)");
        return;
    }
    let cur = Arc::clone(&inner.current.read());
    let cmd = format!(r#"{{"prefix":"osd blocklist","blocklistop":"rm","addr":"{addr}"}}"#);
    match cur.client.cluster.mon_command_verbose(&cmd) {
        Ok((_, st)) => {
            inner.metrics.cleanup_ok.inc();
            tracing::info!(device = %inner.device, %addr, "rbd: removed this daemon's own stale blocklist entry ({})", st.trim());
        }
        Err((e, st)) if matches!(e.errno, Errno::EACCES | Errno::EPERM) => {
            inner.metrics.cleanup_denied.inc();
            tracing::info!(device = %inner.device, %addr,
                "rbd: the key's caps do not allow `osd blocklist rm` ({}); the stale entry expires by itself \
                 (mon_osd_blocklist_default_expire)", st.trim());
        }
        Err((e, st)) => {
            inner.metrics.cleanup_failed.inc();
            tracing::warn!(device = %inner.device, %addr, "rbd: removing the stale blocklist entry failed: {e} ({})", st.trim());
        }
    }
}

/// What `diagnose` says about this LUN (queries the cluster: may take up to the op timeout).
pub(super) fn diagnose(inner: &Inner) -> Vec<String> {
    let cur = Arc::clone(&inner.current.read());
    let c = &cur.client;
    let mut out = vec![format!(
        "rbd image {} on client.{} ({}), osd_op_timeout {}",
        inner.cfg.spec(),
        c.instance_id,
        c.addr,
        c.osd_op_timeout.map_or_else(
            || "none (operations wait for ever)".to_string(),
            |d| format!("{} s", d.as_secs())
        )
    )];
    if inner.recovering.load(Ordering::Acquire) {
        out.push(
            "blocklisted: reopening on a fresh client; commands complete with NOT READY (retried) \
             until then"
                .into(),
        );
    }
    if let Some(g) = &inner.gate {
        out.push(format!(
            "exclusive lock: taken explicitly on the first write, held at least {:.1} s before              it is handed to a peer that asks (lock_hold); writes wait for it at most {:.1} s              (lock_timeout), then BUSY; {} write(s) waiting; handed over {} time(s), requests              damped {} time(s)",
            g.hold.as_secs_f64(),
            g.timeout.as_secs_f64(),
            g.waiting(),
            inner.metrics.lock_released.get(),
            inner.metrics.lock_damped.get()
        ));
    } else if !inner.read_only {
        out.push(
            "exclusive lock: librbd's cooperative handover (lock_hold=0): not damped, writes              wait for it without bound"
                .into(),
        );
    }
    if !inner.read_only {
        match cur.image.lock_owners() {
            Ok(o) if o.owners.is_empty() => out.push("exclusive lock: not held by anyone".into()),
            Ok(o) => {
                // librbd names a lock owner by its address (older releases: client.<id>).
                let mine = o
                    .owners
                    .iter()
                    .any(|h| *h == c.addr || *h == format!("client.{}", c.instance_id));
                out.push(if mine {
                    "exclusive lock: held by this daemon".to_string()
                } else {
                    format!("exclusive lock: held by {}", o.owners.join(", "))
                });
            }
            Err(e) => out.push(format!("exclusive lock: unknown ({e})")),
        }
    }
    for (w, k) in scan_watchers(inner, "diagnose") {
        let who = format!("client.{} at {}", w.id, w.addr);
        match k {
            WatcherKind::Own => {}
            WatcherKind::LockHolder => {
                out.push(format!("watcher {who}: another client, holding the lock"))
            }
            WatcherKind::Gateway => out.push(format!(
                "watcher {who}: another gateway of this image (registered in the Ceph service map)"
            )),
            WatcherKind::PossiblyStale => out.push(format!(
                "watcher {who}: possibly stale (not a client of this daemon, holds no lock, no \
                 gateway in the Ceph service map); if \
                 its process is gone or frozen, `ceph osd blocklist add {}` removes it",
                w.addr
            )),
        }
    }
    let f = inner.facts.lock();
    let blocklisted = inner.metrics.blocklisted.get();
    if blocklisted > 0 || f.reopens > 0 {
        out.push(format!(
            "blocklisted {blocklisted} time(s), reopened {} time(s){}",
            f.reopens,
            f.last_reopen
                .as_ref()
                .map_or_else(String::new, |w| format!("; last: {w}"))
        ));
    }
    out
}
