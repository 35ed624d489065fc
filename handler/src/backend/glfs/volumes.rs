//! One `glfs_t` per (volume, servers, client options), shared by the LUNs that use it.
//!
//! The registry keeps only weak references: the connection lives while a LUN holds it, and
//! the last LUN to close it runs `glfs_fini` off-thread (see `gfapi::Volume`).

use super::cfg::{servers_list, GlfsConfig};
use super::metrics::Connection;
use gfapi::{ConnectError, Server, Volume, VolumeConfig};
use parking_lot::Mutex;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tcmu_warden_supervisor::metrics::Metrics;

/// gluster's log level WARNING (`GF_LOG_WARNING`).
const GF_LOG_WARNING: i32 = 5;

/// What identifies a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    volume: String,
    servers: Vec<Server>,
    ping_timeout: Option<Duration>,
    gfapi_log: Option<String>,
}

/// A connected volume and the facts read from it.
pub struct VolumeEntry {
    /// The gfapi handle.
    pub vol: Arc<Volume>,
    /// The backend tier: the client's ping-timeout.
    pub ping_timeout: Duration,
    /// Where [`VolumeEntry::ping_timeout`] comes from, in words.
    pub tier_source: &'static str,
    _conn: Option<Connection>,
}

static VOLUMES: Mutex<Vec<(Key, Weak<VolumeEntry>)>> = Mutex::new(Vec::new());

/// One gate per key being connected: opens of the same volume wait for one connect (and
/// share it); opens of other volumes never wait for it. [`VOLUMES`] itself is only held for
/// lookups, never across a connect or an error probe, so one unreachable cluster cannot
/// serialise every gluster open.
static CONNECTING: Mutex<Vec<(Key, Arc<Mutex<()>>)>> = Mutex::new(Vec::new());

fn existing(key: &Key) -> Option<Arc<VolumeEntry>> {
    let mut vols = VOLUMES.lock();
    vols.retain(|(_, w)| w.strong_count() > 0);
    vols.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, w)| w.upgrade())
}

/// How many connections are open now (for tests).
#[must_use]
pub fn open_connections() -> usize {
    VOLUMES
        .lock()
        .iter()
        .filter(|(_, w)| w.strong_count() > 0)
        .count()
}

/// The connection for `cfg`: an existing one, or a new one (bounded by `timeout`).
///
/// # Errors
/// Why it cannot be connected, naming the volume or the servers.
pub fn get(
    cfg: &GlfsConfig,
    timeout: Duration,
    metrics: Option<&Arc<Metrics>>,
) -> Result<Arc<VolumeEntry>, String> {
    let key = Key {
        volume: cfg.volume.clone(),
        servers: cfg.servers.clone(),
        ping_timeout: cfg.ping_timeout,
        gfapi_log: cfg.gfapi_log.clone(),
    };
    if let Some(e) = existing(&key) {
        return Ok(e);
    }
    let gate = {
        let mut g = CONNECTING.lock();
        // Gates nobody waits on any more.
        g.retain(|(_, m)| Arc::strong_count(m) > 1);
        match g.iter().find(|(k, _)| *k == key) {
            Some((_, m)) => Arc::clone(m),
            None => {
                let m = Arc::new(Mutex::new(()));
                g.push((key.clone(), Arc::clone(&m)));
                m
            }
        }
    };
    let _connecting = gate.lock();
    // Connected by whoever held the gate before us?
    if let Some(e) = existing(&key) {
        return Ok(e);
    }
    let mut xlator_options = Vec::new();
    if let Some(t) = cfg.ping_timeout {
        xlator_options.push((
            format!("{}-client-*", cfg.volume),
            "ping-timeout".to_string(),
            t.as_secs().to_string(),
        ));
    }
    // Write-behind would acknowledge writes the bricks have not seen, and lose them if the
    // connection fails before it flushes (docs/test-services.md §2). The backend opens its file
    // O_DIRECT; with strict-O_DIRECT, write-behind passes such writes straight through.
    xlator_options.push((
        "*-write-behind".to_string(),
        "strict-O_DIRECT".to_string(),
        "on".to_string(),
    ));
    let vc = VolumeConfig {
        volume: cfg.volume.clone(),
        servers: cfg.servers.clone(),
        xlator_options,
        log: cfg.gfapi_log.clone().map(|f| (f, GF_LOG_WARNING)),
    };
    let vol = Volume::connect(&vc, timeout).map_err(|e| connect_error(cfg, &e))?;
    let from_volfile = vol
        .volfile()
        .ok()
        .and_then(|v| gfapi::volfile::ping_timeout(&v));
    let (ping_timeout, tier_source) = match (cfg.ping_timeout, from_volfile) {
        (Some(t), _) => (t, "the cfgstring's ping_timeout"),
        (None, Some(t)) => (t, "the volume's network.ping-timeout"),
        (None, None) => (
            gfapi::volfile::DEFAULT_PING_TIMEOUT,
            "gluster's default network.ping-timeout (the volume sets none)",
        ),
    };
    tracing::info!(volume = %cfg.volume, servers = %servers_list(&cfg.servers),
        ping_timeout = ?ping_timeout, source = tier_source, "gluster volume connected");
    let entry = Arc::new(VolumeEntry {
        vol,
        ping_timeout,
        tier_source,
        _conn: Connection::new(metrics),
    });
    VOLUMES.lock().push((key, Arc::downgrade(&entry)));
    Ok(entry)
}

fn probe(s: &Server) -> Result<(), String> {
    if s.transport != "tcp" {
        return Ok(());
    }
    let addrs: Vec<_> = (s.host.as_str(), s.port)
        .to_socket_addrs()
        .map_err(|e| format!("host {} does not resolve ({e})", s.host))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{s}: {e}"),
        }
    }
    Err(last)
}

fn connect_error(cfg: &GlfsConfig, e: &ConnectError) -> String {
    let servers = servers_list(&cfg.servers);
    let probes: Vec<Result<(), String>> = cfg.servers.iter().map(probe).collect();
    if probes.iter().all(Result::is_err) {
        let why: Vec<String> = probes.into_iter().filter_map(Result::err).collect();
        return format!(
            "no volfile server of volume {} answers: {}",
            cfg.volume,
            why.join("; ")
        );
    }
    match e {
        ConnectError::Init(errno) => format!(
            "volume {} is not served by {servers} (glfs_init: {errno}): is the volume name right and the volume started?",
            cfg.volume
        ),
        ConnectError::Timeout(d) => format!(
            "glusterd at {servers} accepts connections but did not hand out volume {} within {} s (is glusterd frozen?)",
            cfg.volume,
            d.as_secs()
        ),
        other => format!("connecting to volume {} at {servers}: {other}", cfg.volume),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    /// A volfile server that accepts connections and never answers (a frozen glusterd).
    fn frozen() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    fn cfg(volume: &str, port: u16) -> GlfsConfig {
        GlfsConfig {
            volume: volume.into(),
            servers: vec![Server {
                transport: "tcp".into(),
                host: "127.0.0.1".into(),
                port,
            }],
            path: "/lun".into(),
            ping_timeout: None,
            gfapi_log: None,
        }
    }

    #[test]
    fn an_unreachable_cluster_does_not_hold_up_opens_of_other_volumes() {
        let (_a, pa) = frozen();
        let (_b, pb) = frozen();
        let slow = std::thread::spawn(move || {
            let t = Instant::now();
            let r = get(&cfg("stuck", pa), Duration::from_secs(6), None);
            (r.is_err(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let e = get(&cfg("other", pb), Duration::from_secs(1), None)
            .err()
            .expect("a frozen glusterd gives no volume");
        let other = t.elapsed();
        let (failed, stuck) = slow.join().unwrap();
        println!("open of another volume: {other:?} while the first took {stuck:?}");
        assert!(failed);
        assert!(e.contains("did not hand out volume other"), "{e}");
        assert!(
            other < Duration::from_secs(4),
            "the second open waited for the first: {other:?}"
        );
    }
}
