//! One RADOS client per (configuration file, user, osd_op_timeout), shared by every LUN of
//! the daemon: tcmu-runner opens one client per LUN, which multiplies connections, threads and
//! watch sessions by the number of LUNs.
//!
//! The registry keeps `Weak` references, so a client lives exactly as long as a LUN (or a
//! check) uses it. After blocklisting, a client is dead for good (Ceph refuses its address for
//! an hour): [`fresh`] replaces it for everyone, once, and the first LUN to notice pays for
//! the reconnect while the others pick up the new client.

use super::cfg::RbdConfig;
use ceph_rbd::{Cluster, ConnectOptions};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What makes two LUNs share a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    conf: Option<std::path::PathBuf>,
    id: Option<String>,
    osd_op_timeout: Option<u64>,
}

impl ClientKey {
    /// The key of a cfgstring.
    #[must_use]
    pub fn of(cfg: &RbdConfig) -> ClientKey {
        ClientKey {
            conf: cfg.conf.clone(),
            id: cfg.id.clone(),
            osd_op_timeout: cfg.osd_op_timeout.map(|d| d.as_secs()),
        }
    }
}

/// A connected, shared RADOS client.
pub struct Client {
    /// The connection.
    pub cluster: Arc<Cluster>,
    /// `client.<id>` of this connection.
    pub instance_id: u64,
    /// Its address, as blocklist entries and watchers name it.
    pub addr: String,
    /// The osd op timeout in effect (`None`: none, ops wait for ever).
    pub osd_op_timeout: Option<Duration>,
    /// Incremented for every new client of the process (for logs).
    pub generation: u64,
    key: ClientKey,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client.{} ({})", self.instance_id, self.addr)
    }
}

static REGISTRY: Mutex<Option<HashMap<ClientKey, Weak<Client>>>> = Mutex::new(None);
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Bound on connecting to the monitors (librados' own default is 300 s).
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// The client for `cfg`: the shared one if it exists, a new connection otherwise.
///
/// # Errors
/// The librados error of connecting.
pub fn get(cfg: &RbdConfig) -> Result<Arc<Client>, ceph_rbd::Error> {
    let key = ClientKey::of(cfg);
    if let Some(c) = lookup(&key) {
        return Ok(c);
    }
    // Connect without holding the registry lock (it can take seconds); if another LUN raced
    // us, keep the one that is registered first.
    let new = Arc::new(connect(&key)?);
    let mut reg = REGISTRY.lock();
    let map = reg.get_or_insert_with(HashMap::new);
    if let Some(c) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(c);
    }
    map.insert(key, Arc::downgrade(&new));
    Ok(new)
}

/// A client to replace `stale` (blocklisted): a new connection if `stale` is still the
/// registered one, or the replacement another LUN already made.
///
/// # Errors
/// The librados error of connecting.
pub fn fresh(stale: &Arc<Client>) -> Result<Arc<Client>, ceph_rbd::Error> {
    if let Some(c) = lookup(&stale.key) {
        if !Arc::ptr_eq(&c, stale) {
            return Ok(c);
        }
    }
    let new = Arc::new(connect(&stale.key)?);
    let mut reg = REGISTRY.lock();
    let map = reg.get_or_insert_with(HashMap::new);
    match map.get(&stale.key).and_then(Weak::upgrade) {
        Some(c) if !Arc::ptr_eq(&c, stale) => Ok(c),
        _ => {
            map.insert(stale.key.clone(), Arc::downgrade(&new));
            Ok(new)
        }
    }
}

/// Every live client's (instance id, address): watchers from these are this daemon's own.
#[must_use]
pub fn live() -> Vec<(u64, String)> {
    let reg = REGISTRY.lock();
    reg.as_ref()
        .map(|m| {
            m.values()
                .filter_map(Weak::upgrade)
                .map(|c| (c.instance_id, c.addr.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of a configuration option on every live client (for tests and `diagnose`).
#[must_use]
pub fn live_option(option: &str) -> Vec<String> {
    let clients: Vec<Arc<Client>> = REGISTRY
        .lock()
        .as_ref()
        .map(|m| m.values().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    clients
        .iter()
        .map(|c| c.cluster.conf_get(option).unwrap_or_default())
        .collect()
}

/// How many clients are alive (for the metric and the tests of sharing).
#[must_use]
pub fn count() -> usize {
    let mut reg = REGISTRY.lock();
    let Some(m) = reg.as_mut() else { return 0 };
    m.retain(|_, w| w.strong_count() > 0);
    m.len()
}

fn lookup(key: &ClientKey) -> Option<Arc<Client>> {
    REGISTRY.lock().as_ref()?.get(key).and_then(Weak::upgrade)
}

fn connect(key: &ClientKey) -> Result<Client, ceph_rbd::Error> {
    let secs = MOUNT_TIMEOUT.as_secs().to_string();
    let mut set = vec![
        ("client_mount_timeout".to_string(), secs.clone()),
        ("rados_mon_op_timeout".to_string(), secs),
        // Zero-copy writes would let librbd keep pointers into the ring's data area past a
        // completion; copy instead (and never depend on the cache mode for it).
        (
            "rbd_disable_zero_copy_writes".to_string(),
            "true".to_string(),
        ),
        // librbd's cache off: after the first flush (every FUA write, which is every write
        // when the LUN's write cache is off) it switches from write-through to write-around,
        // which acknowledges writes before the OSD has them and reports their failure only
        // to a later flush. Writes in flight when the client is blocklisted were then
        // acknowledged GOOD and lost (tests/vm/scenarios/rbd.sh: fio read zeros back).
        // Without the cache a write completes when the OSD has committed it, with its own
        // error.
        ("rbd_cache".to_string(), "false".to_string()),
        // The handler reads its own data through the ring; no read-ahead.
        ("rbd_readahead_max_bytes".to_string(), "0".to_string()),
    ];
    if let Some(t) = key.osd_op_timeout {
        set.push(("rados_osd_op_timeout".to_string(), t.to_string()));
    }
    let cluster = Cluster::connect(&ConnectOptions {
        id: key.id.clone(),
        conf: key.conf.clone(),
        set,
    })?;
    let osd_op_timeout = cluster
        .conf_get("rados_osd_op_timeout")
        .ok()
        .and_then(|s| super::cfg::conf_op_timeout(&s));
    let addr = cluster.addr().unwrap_or_default();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    let instance_id = cluster.instance_id();
    tracing::info!(client = %format!("client.{instance_id}"), %addr, generation, user = ?key.id,
        conf = ?key.conf, osd_op_timeout = ?osd_op_timeout, "rbd: connected a RADOS client");
    Ok(Client {
        cluster,
        instance_id,
        addr,
        osd_op_timeout,
        generation,
        key: key.clone(),
    })
}
