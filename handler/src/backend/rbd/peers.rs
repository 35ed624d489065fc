//! Other gateways of the same image, as the Ceph service map lists them, so that a live peer's
//! watch on the image header is never reported as possibly stale (docs/rbd.md, "Watchers").
//!
//! In a gateway pair the peer's client watches the image and, while this gateway holds the
//! exclusive lock, holds no lock: by the watcher list alone it looks exactly like a client
//! that died without closing the image, and the advice for those (`ceph osd blocklist add`)
//! would cut a live gateway off. A gateway that registered the image in the service map and
//! still sends the manager its beacons is alive: the manager drops a daemon from the map once
//! its beacons stop for `mgr_service_beacon_grace` (60 s by default).
//!
//! A watcher is such a peer when its client is the registered daemon's own client (tcmu-runner
//! registers on the client that opened the image) or the I/O client the daemon's metadata
//! names (`io_client_id` / `io_client_addr`: tcmu-warden registers on a small client of its
//! own, [`super::service`]).

use ceph_rbd::Watcher;
use serde_json::Value;

/// One registered gateway daemon of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Its daemon name in the service map (`<host>:<pool>/<image>`).
    pub daemon: String,
    /// The global id of the client that registered it.
    pub gid: u64,
    /// That client's address.
    pub addr: String,
    /// The client doing its I/O, when the metadata names it (tcmu-warden does).
    pub io_client_id: Option<u64>,
    /// That client's address.
    pub io_client_addr: Option<String>,
}

impl Gateway {
    /// Whether `w` is this gateway's watch.
    #[must_use]
    pub fn watches(&self, w: &Watcher) -> bool {
        let id = u64::try_from(w.id).ok();
        id == Some(self.gid)
            || self.addr == w.addr
            || (id.is_some() && id == self.io_client_id)
            || self.io_client_addr.as_deref() == Some(w.addr.as_str())
    }
}

/// The gateways of `pool[/namespace]/image` in the JSON of the monitors' `service dump`
/// (`{"services": {"<service>": {"daemons": {"<name>": {"gid", "addr", "metadata"}, ...}}}}`,
/// where `daemons` also holds a `summary` string). Any service counts, so a tcmu-runner peer
/// registered under another service name is found too; entries of other images are skipped.
///
/// # Errors
/// The text is not JSON.
pub fn parse_service_dump(
    json: &str,
    pool: &str,
    namespace: Option<&str>,
    image: &str,
) -> Result<Vec<Gateway>, serde_json::Error> {
    let v: Value = serde_json::from_str(json)?;
    let mut out = Vec::new();
    let Some(services) = v.get("services").and_then(Value::as_object) else {
        return Ok(out);
    };
    for service in services.values() {
        let Some(daemons) = service.get("daemons").and_then(Value::as_object) else {
            continue;
        };
        for (name, d) in daemons {
            let Some(meta) = d.get("metadata").and_then(Value::as_object) else {
                continue;
            };
            let text = |k: &str| meta.get(k).and_then(Value::as_str);
            if text("pool_name") != Some(pool)
                || text("image_name") != Some(image)
                || text("pool_namespace").filter(|n| !n.is_empty()) != namespace
            {
                continue;
            }
            let Some(gid) = d.get("gid").and_then(Value::as_u64) else {
                continue;
            };
            out.push(Gateway {
                daemon: name.clone(),
                gid,
                addr: d
                    .get("addr")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                io_client_id: text("io_client_id").and_then(|s| s.parse().ok()),
                io_client_addr: text("io_client_addr").map(str::to_string),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watcher(id: i64, addr: &str) -> Watcher {
        Watcher {
            addr: addr.into(),
            id,
            cookie: 1,
        }
    }

    /// A service dump as Ceph 16 prints it: one tcmu-runner style entry (registered on its
    /// I/O client), one tcmu-warden entry (own small client, metadata naming the I/O client),
    /// one of another image and the `summary` string.
    const DUMP: &str = r#"{"epoch": 9, "modified": "2026-12-05T03:40:00.000000+0000",
      "services": {"tcmu-runner": {"daemons": {"summary": "",
        "gw0:rbd/disk1": {"start_epoch": 4, "start_stamp": "x", "gid": 4171,
          "addr": "10.0.0.1:0/111", "metadata": {"pool_name": "rbd", "image_name": "disk1",
          "daemon_type": "portal", "daemon_prefix": "gw0"}, "task_status": {}},
        "gw1:rbd/disk1": {"start_epoch": 5, "start_stamp": "x", "gid": 4200,
          "addr": "10.0.0.2:0/222", "metadata": {"pool_name": "rbd", "image_name": "disk1",
          "io_client_id": "4188", "io_client_addr": "10.0.0.2:0/333"}, "task_status": {}},
        "gw1:rbd/disk2": {"start_epoch": 5, "start_stamp": "x", "gid": 4201,
          "addr": "10.0.0.2:0/444", "metadata": {"pool_name": "rbd", "image_name": "disk2"},
          "task_status": {}}}}}}"#;

    #[test]
    fn peers_of_the_image_are_found_by_their_client_or_their_io_client() {
        let g = parse_service_dump(DUMP, "rbd", None, "disk1").unwrap();
        assert_eq!(g.len(), 2, "{g:?}");
        let runner = g.iter().find(|g| g.daemon == "gw0:rbd/disk1").unwrap();
        assert!(runner.watches(&watcher(4171, "10.0.0.1:0/111")));
        let warden = g.iter().find(|g| g.daemon == "gw1:rbd/disk1").unwrap();
        assert_eq!(warden.io_client_id, Some(4188));
        assert!(warden.watches(&watcher(4188, "10.0.0.2:0/333")));
        // A client of the same host that is not the registered one: not a peer (a gateway
        // restarted on that host leaves exactly such a stale watch).
        let stale = watcher(4100, "10.0.0.2:0/999");
        assert!(!g.iter().any(|g| g.watches(&stale)));
        // Another image, another namespace: nothing.
        assert!(parse_service_dump(DUMP, "rbd", Some("ns"), "disk1")
            .unwrap()
            .is_empty());
        assert_eq!(
            parse_service_dump(DUMP, "rbd", None, "disk2")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn an_empty_or_odd_map_gives_no_peer_and_bad_json_an_error() {
        assert!(
            parse_service_dump(r#"{"epoch": 1, "services": {}}"#, "rbd", None, "d")
                .unwrap()
                .is_empty()
        );
        assert!(parse_service_dump(
            r#"{"services": {"x": {"daemons": {"a": 1}}}}"#,
            "rbd",
            None,
            "d"
        )
        .unwrap()
        .is_empty());
        assert!(parse_service_dump("not json", "rbd", None, "d").is_err());
    }
}
