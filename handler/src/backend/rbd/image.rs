//! [`Opened`]: one image opened on one RADOS client, and the words for failing to open it.

use super::cfg::RbdConfig;
use super::client::{self, Client};
use crate::backend::OpenError;
use ceph_rbd::{Errno, Image, IoCtx};
use std::sync::Arc;

/// An image open on a client. Replaced as a whole when the client is blocklisted; commands
/// in flight hold the one they were started on until they complete.
pub struct Opened {
    /// The image (holds its I/O context, which holds the client's connection).
    pub image: Image,
    /// The client (shared with other LUNs).
    pub client: Arc<Client>,
    /// The header object (`rbd_header.<id>`), which `ping` stats.
    pub header: String,
    /// librbd's cache is on for this image (its effective `rbd_cache`, read at open):
    /// a FUA write then needs a flush after it (docs/rbd.md, "FUA writes and librbd's cache").
    pub cache: bool,
}

/// Why an open failed, in words naming the object, plus the errno.
pub struct OpenFailure {
    /// `pool "x" not found`, ...
    pub what: String,
    /// The errno.
    pub errno: Errno,
}

impl OpenFailure {
    /// As an [`OpenError`].
    #[must_use]
    pub fn into_open_error(self) -> OpenError {
        OpenError::Io {
            what: self.what,
            source: std::io::Error::from_raw_os_error(self.errno as i32),
        }
    }
}

fn where_(cfg: &RbdConfig) -> String {
    match &cfg.namespace {
        Some(ns) => format!("pool \"{}\" namespace \"{ns}\"", cfg.pool),
        None => format!("pool \"{}\"", cfg.pool),
    }
}

/// Connect (or share) the client and open the image `cfg` names; a snapshot, or
/// `read_only`, opens read-only (no watch on the header).
///
/// # Errors
/// Which step failed, naming the pool, image or snapshot.
pub fn open(cfg: &RbdConfig, read_only: bool) -> Result<Opened, OpenFailure> {
    let client = client::get(cfg).map_err(|e| OpenFailure {
        what: format!(
            "rbd: connecting to the cluster ({}, user {}) failed in {}",
            cfg.conf.as_ref().map_or_else(
                || "default ceph.conf".to_string(),
                |p| p.display().to_string()
            ),
            cfg.id.as_deref().unwrap_or("admin"),
            e.call
        ),
        errno: e.errno,
    })?;
    open_on(cfg, client, read_only)
}

/// Open the image on a given client (after blocklisting: a fresh one).
///
/// # Errors
/// As [`open`].
pub fn open_on(
    cfg: &RbdConfig,
    client: Arc<Client>,
    read_only: bool,
) -> Result<Opened, OpenFailure> {
    if let Err(e) = client.cluster.pool_lookup(&cfg.pool) {
        return Err(OpenFailure {
            what: if e.errno == Errno::ENOENT {
                format!("rbd: pool \"{}\" not found", cfg.pool)
            } else {
                format!("rbd: looking up pool \"{}\"", cfg.pool)
            },
            errno: e.errno,
        });
    }
    let io = IoCtx::new(&client.cluster, &cfg.pool, cfg.namespace.as_deref()).map_err(|e| {
        OpenFailure {
            what: format!("rbd: opening {}", where_(cfg)),
            errno: e.errno,
        }
    })?;
    let ro = read_only || cfg.snap.is_some();
    let image = Image::open(&io, &cfg.image, cfg.snap.as_deref(), ro).map_err(|e| {
        let what = if e.errno == Errno::ENOENT {
            match &cfg.snap {
                Some(s) if Image::open(&io, &cfg.image, None, true).is_ok() => format!(
                    "rbd: snapshot \"{s}\" of image \"{}\" not found in {}",
                    cfg.image,
                    where_(cfg)
                ),
                _ => format!(
                    "rbd: image \"{}\" not found in {}{}",
                    cfg.image,
                    where_(cfg),
                    if cfg.namespace.is_some() {
                        " (or the namespace does not exist)"
                    } else {
                        ""
                    }
                ),
            }
        } else {
            format!("rbd: opening image \"{}\" in {}", cfg.image, where_(cfg))
        };
        OpenFailure {
            what,
            errno: e.errno,
        }
    })?;
    let header = image
        .id()
        .map(|id| format!("rbd_header.{id}"))
        .unwrap_or_default();
    let cache = cache_on(&image, &client);
    if cache {
        tracing::info!(image = %cfg.spec(), "rbd: librbd's cache is on for this image: FUA writes are write + flush");
    }
    Ok(Opened {
        image,
        client,
        header,
        cache,
    })
}

/// Whether librbd's cache is on for `image`: its effective `rbd_cache` (the client sets it
/// false, but a pool or image override, `rbd config image set ... rbd_cache true`, wins),
/// else the client's own setting; when neither can be read, on (a flush too many costs a
/// round trip, a flush too few could lose an acknowledged write).
fn cache_on(image: &Image, client: &Client) -> bool {
    let value = image
        .config_get("rbd_cache")
        .ok()
        .flatten()
        .or_else(|| client.cluster.conf_get("rbd_cache").ok());
    value.as_deref().and_then(parse_conf_bool).unwrap_or(true)
}

/// A Ceph boolean option's text (`true`/`false`, `1`/`0`, `yes`/`no`, any case); None when
/// it is none of these.
#[must_use]
pub fn parse_conf_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_conf_bool;

    #[test]
    fn ceph_booleans_parse_and_anything_else_is_unknown() {
        for t in ["true", "TRUE", " 1", "yes", "on"] {
            assert_eq!(parse_conf_bool(t), Some(true), "{t}");
        }
        for f in ["false", "False", "0", "no", "off\n"] {
            assert_eq!(parse_conf_bool(f), Some(false), "{f}");
        }
        for x in ["", "2", "maybe", "truee"] {
            assert_eq!(parse_conf_bool(x), None, "{x}");
        }
    }
}
