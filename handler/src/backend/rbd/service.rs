//! The LUN's entry in the Ceph manager's service map, where `ceph -s`, `ceph service dump`
//! and the dashboard's iSCSI page look for gateways (docs/rbd.md, "The Ceph service map").
//!
//! Each served image is one daemon of the service `tcmu-runner` (the name the dashboard
//! reads), named `<hostname>:<pool>/<image>` (`<pool>/<namespace>/<image>` in a namespace),
//! with the metadata keys `pool_name`, `image_name`, `image_id`, `daemon_type` = `portal` and
//! `daemon_prefix` = the hostname (which `ceph -s` uses to count "portals" and hosts),
//! `io_client_id` / `io_client_addr` = the I/O client whose watch peers see on the image
//! ([`super::peers`]; registered again when a reopen changes it), and the
//! status keys `lock_owner` (`true`/`false`: the dashboard's optimized path),
//! `lock_lost_cnt`, `conn_lost_cnt` and `cmd_timed_out_cnt`.
//!
//! librados allows one registration per RADOS client, and the I/O client is shared by every
//! LUN of the daemon ([`super::client`]). So each LUN registers on a small client of its own
//! that does no I/O (a monitor and a manager session, no OSD session, no watch), connected
//! by the LUN's monitor thread after the open, never on the open or I/O path. A failure to
//! connect or register is logged and retried later; it never affects I/O. The entry goes when
//! the LUN closes (the client's shutdown tells the manager).

use super::backend::Inner;
use super::cfg::RbdConfig;
use ceph_rbd::{Cluster, ConnectOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The service name the Ceph dashboard reads for iSCSI gateways.
pub const SERVICE: &str = "tcmu-runner";
/// A failed registration is retried this often.
const RETRY: Duration = Duration::from_secs(30);

/// The daemon name of a LUN: `<hostname>:<pool>[/<namespace>]/<image>`.
#[must_use]
pub fn daemon_name(host: &str, cfg: &RbdConfig) -> String {
    match &cfg.namespace {
        Some(ns) => format!("{host}:{}/{ns}/{}", cfg.pool, cfg.image),
        None => format!("{host}:{}/{}", cfg.pool, cfg.image),
    }
}

/// The static metadata of a LUN's entry.
#[must_use]
pub fn metadata<'a>(
    host: &'a str,
    cfg: &'a RbdConfig,
    image_id: &'a str,
    io_client: (&'a str, &'a str),
) -> Vec<(&'a str, &'a str)> {
    let mut m = vec![
        ("pool_name", cfg.pool.as_str()),
        ("image_name", cfg.image.as_str()),
        ("image_id", image_id),
        ("daemon_type", "portal"),
        ("daemon_prefix", host),
        ("tcmu_warden_version", env!("CARGO_PKG_VERSION")),
        // The client whose watch peers see on the image (super::peers).
        ("io_client_id", io_client.0),
        ("io_client_addr", io_client.1),
    ];
    if let Some(ns) = &cfg.namespace {
        m.push(("pool_namespace", ns.as_str()));
    }
    m
}

/// The status of a LUN's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// This LUN's client holds the exclusive lock.
    pub lock_owner: bool,
    /// Times the lock was lost without a release.
    pub lock_lost: u64,
    /// Times the client was found blocklisted (the connection to the image lost).
    pub conn_lost: u64,
    /// Operations that failed with ETIMEDOUT (`osd_op_timeout`).
    pub cmd_timed_out: u64,
}

impl Status {
    /// As the key/value pairs of the service map.
    #[must_use]
    pub fn pairs(&self) -> [(&'static str, String); 4] {
        [
            ("lock_owner", self.lock_owner.to_string()),
            ("lock_lost_cnt", self.lock_lost.to_string()),
            ("conn_lost_cnt", self.conn_lost.to_string()),
            ("cmd_timed_out_cnt", self.cmd_timed_out.to_string()),
        ]
    }
}

/// The LUN's registration, kept by its monitor thread.
#[derive(Default)]
pub(super) struct Entry {
    client: Option<Arc<Cluster>>,
    /// The I/O client the registration names (`io_client_id`).
    io_client: u64,
    sent: Option<Status>,
    retry_at: Option<Instant>,
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Entry {
    /// Register if not yet done (and not failed recently), then publish the status if it
    /// changed. Called by the monitor thread about once a second.
    pub fn tick(&mut self, inner: &Inner) {
        if inner.read_only {
            return; // a snapshot is no gateway path
        }
        let io_client = inner.current.read().client.instance_id;
        if self.client.is_some() && self.io_client != io_client {
            // Reopened on a fresh client (after blocklisting): register again, so the entry
            // names the client that now watches the image. Dropping the old registration's
            // client removes its entry.
            self.client = None;
            self.retry_at = None;
        }
        if self.client.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            match register(inner) {
                Ok(c) => {
                    self.client = Some(c);
                    self.io_client = io_client;
                    self.sent = None;
                }
                Err(e) => {
                    self.retry_at = Some(Instant::now() + RETRY);
                    tracing::warn!(device = %inner.device, image = %inner.cfg.spec(),
                        "rbd: not registered in the Ceph service map (retried in {} s): {e}",
                        RETRY.as_secs());
                    return;
                }
            }
        }
        let now = status(inner);
        if self.sent == Some(now) {
            return;
        }
        let Some(c) = &self.client else { return };
        let pairs = now.pairs();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match c.service_update_status(&refs) {
            Ok(()) => self.sent = Some(now),
            Err(e) => {
                tracing::warn!(device = %inner.device, "rbd: service map status not updated: {e}")
            }
        }
    }
}

/// The status as the backend knows it now.
pub(super) fn status(inner: &Inner) -> Status {
    let lock_owner = match &inner.gate {
        Some(g) => g.is_owner(),
        None => inner.facts.lock().lock_owner == Some(true),
    };
    Status {
        lock_owner,
        lock_lost: inner.metrics.lock_lost.get(),
        conn_lost: inner.metrics.blocklisted.get(),
        cmd_timed_out: inner.timed_out.load(Ordering::Relaxed),
    }
}

fn register(inner: &Inner) -> Result<Arc<Cluster>, String> {
    let (image_id, io_id, io_addr) = {
        let cur = inner.current.read();
        (
            cur.image.id().map_err(|e| e.to_string())?,
            cur.client.instance_id.to_string(),
            cur.client.addr.clone(),
        )
    };
    let cfg = &inner.cfg;
    let secs = super::client::MOUNT_TIMEOUT.as_secs().to_string();
    let c = Cluster::connect(&ConnectOptions {
        id: cfg.id.clone(),
        conf: cfg.conf.clone(),
        set: vec![
            ("client_mount_timeout".to_string(), secs.clone()),
            ("rados_mon_op_timeout".to_string(), secs),
        ],
    })
    .map_err(|e| format!("connecting its client: {e}"))?;
    let host = hostname();
    let daemon = daemon_name(&host, cfg);
    let meta = metadata(&host, cfg, &image_id, (&io_id, &io_addr));
    c.service_register(SERVICE, &daemon, &meta)
        .map_err(|e| format!("registering {daemon}: {e}"))?;
    tracing::info!(device = %inner.device, image = %cfg.spec(), service = SERVICE, %daemon,
        client = %format!("client.{}", c.instance_id()), "rbd: registered in the Ceph service map");
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ns: Option<&str>) -> RbdConfig {
        RbdConfig {
            pool: "rbd".into(),
            namespace: ns.map(Into::into),
            image: "disk1".into(),
            snap: None,
            conf: None,
            id: None,
            osd_op_timeout: None,
            lock_hold: Duration::from_secs(2),
            lock_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn names_and_metadata_are_the_ones_the_dashboard_reads() {
        assert_eq!(daemon_name("gw1", &cfg(None)), "gw1:rbd/disk1");
        assert_eq!(daemon_name("gw1", &cfg(Some("ns"))), "gw1:rbd/ns/disk1");
        let c = cfg(None);
        let m = metadata("gw1", &c, "10ab", ("4188", "10.0.0.2:0/333"));
        let get = |k: &str| m.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v);
        assert_eq!(get("pool_name"), Some("rbd"));
        assert_eq!(get("image_name"), Some("disk1"));
        assert_eq!(get("image_id"), Some("10ab"));
        assert_eq!(get("daemon_type"), Some("portal"));
        assert_eq!(get("daemon_prefix"), Some("gw1"));
        assert_eq!(get("io_client_id"), Some("4188"));
        assert_eq!(get("io_client_addr"), Some("10.0.0.2:0/333"));
        let s = Status {
            lock_owner: true,
            lock_lost: 2,
            ..Status::default()
        };
        let p = s.pairs();
        assert_eq!(p[0], ("lock_owner", "true".to_string()));
        assert_eq!(p[1], ("lock_lost_cnt", "2".to_string()));
    }
}
