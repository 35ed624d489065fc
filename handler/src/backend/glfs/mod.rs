//! The GlusterFS backend (subtype `glfs`): a LUN in a file on a gluster volume, through
//! libgfapi (`bindings/gfapi`).
//!
//! - [`cfg`](mod@cfg): the cfgstring, tcmu-runner's `glfs/<volume>@<host>/<path>` and more servers,
//!   ports and transports.
//! - [`volumes`]: one `glfs_t` per (volume, servers, client options), shared by LUNs.
//! - [`backend`]: asynchronous vectored I/O, fdatasync, discard, zerofill, resize.
//! - [`metrics`]: the `tcmu_warden_glfs_*` series.
//!
//! The backend tier ([`Backend::op_timeout`]) is the client's ping-timeout: the volume's
//! `network.ping-timeout` read from the volfile glusterd hands out, or the cfgstring's
//! `ping_timeout=`, which is then also set on this connection. A brick that stops answering
//! fails the operations in flight with ENOTCONN after one to two ping-timeouts
//! (docs/test-services.md §2), and later ones at once until it answers again; gfapi
//! reconnects by itself.

pub mod backend;
pub mod cfg;
pub mod metrics;
pub mod volumes;

use super::registry::OpenCtx;
use super::{Backend, OpenError};
use nix::errno::Errno;
use std::sync::Arc;
use std::time::Duration;

pub use backend::GlfsBackend;

/// The cfgstring syntax, for people.
pub const CONFIG_DESC: &str = "glfs/<volume>@<server>[,<server>...]/<path>[;ping_timeout=<secs>]\
[;gfapi_log=<file>]: a file on a GlusterFS volume through libgfapi (created if missing, grown \
to the LUN size, never shrunk). <server> is [rdma+]<host>[:<port>] (port 24007 by default; an \
IPv6 address in brackets). ping_timeout sets the client's ping-timeout (the backend tier; by \
default the volume's network.ping-timeout). Example: glfs/vol0@gl1,gl2:24007/luns/lun0.img";

/// How long opening may wait for glusterd (`glfs_init` never gives up by itself).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

fn config_error(cfgstring: &str, reason: String) -> OpenError {
    OpenError::Config {
        cfgstring: cfgstring.to_string(),
        reason,
    }
}

fn io_error(what: String, e: Errno) -> OpenError {
    OpenError::Io {
        what,
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

fn parse(cfgstring: &str, ctx: &OpenCtx) -> Result<cfg::GlfsConfig, OpenError> {
    ctx.refuse_options(cfgstring, cfg::OPTION_KEYS)?;
    cfg::parse(cfgstring, ctx.options).map_err(|r| config_error(cfgstring, r))
}

/// Check that the file's directory exists on the volume; name it when it does not.
fn check_dir(c: &cfg::GlfsConfig, vol: &gfapi::Volume) -> Result<(), String> {
    match vol.stat(c.dir()) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
        Ok(_) => {
            return Err(format!(
                "{} on volume {} is not a directory",
                c.dir(),
                c.volume
            ))
        }
        Err(Errno::ENOENT) => {
            return Err(format!(
                "directory {} does not exist on volume {}",
                c.dir(),
                c.volume
            ))
        }
        Err(e) => return Err(format!("stat {} on volume {}: {e}", c.dir(), c.volume)),
    }
    match vol.stat(&c.path) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Err(format!(
            "{} on volume {} is a directory, expected a file",
            c.path, c.volume
        )),
        _ => Ok(()),
    }
}

/// Open a file on a gluster volume as a LUN of `ctx.size` bytes.
///
/// # Errors
/// A malformed cfgstring or unknown option ([`OpenError::Config`], naming it); a volume that
/// cannot be connected, a missing directory or a failed open ([`OpenError::Io`], naming the
/// volume, servers or path).
pub fn open(cfgstring: &str, ctx: &OpenCtx) -> Result<Arc<dyn Backend>, OpenError> {
    let c = parse(cfgstring, ctx)?;
    let entry = volumes::get(&c, OPEN_TIMEOUT, ctx.metrics).map_err(|r| OpenError::Io {
        what: r,
        source: std::io::Error::from_raw_os_error(libc::ENOTCONN),
    })?;
    let vol = &entry.vol;
    let fd = match vol.open(&c.path, backend::OPEN_FLAGS) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            check_dir(&c, vol).map_err(|r| OpenError::Io {
                what: r,
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            })?;
            vol.create(&c.path, backend::OPEN_FLAGS, 0o600)
                .map_err(|e| io_error(format!("create {} on volume {}", c.path, c.volume), e))?
        }
        Err(e) => {
            return Err(io_error(
                format!("open {} on volume {}", c.path, c.volume),
                e,
            ));
        }
    };
    let st = fd
        .stat()
        .map_err(|e| io_error(format!("stat {} on volume {}", c.path, c.volume), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io_error(
            format!("{} on volume {} is not a regular file", c.path, c.volume),
            Errno::EINVAL,
        ));
    }
    let have = u64::try_from(st.st_size).unwrap_or(0);
    if have < ctx.size {
        fd.truncate(ctx.size)
            .map_err(|e| io_error(format!("grow {} on volume {}", c.path, c.volume), e))?;
    }
    let series = metrics::DeviceSeries::new(ctx.metrics, ctx.device, &c.volume);
    let b = GlfsBackend::start(c, Arc::clone(&entry), fd, ctx.size, series).map_err(|e| {
        OpenError::Io {
            what: "starting the glfs completion thread".into(),
            source: e,
        }
    })?;
    Ok(Arc::new(b))
}

/// Validate a `glfs` cfgstring: its syntax and options, that the volume answers and that
/// the file's directory exists on it, all within `timeout` (glfs_init alone never times
/// out).
///
/// # Errors
/// What is wrong, naming the volume, host or path.
pub fn check_config(cfgstring: &str, ctx: &OpenCtx, timeout: Duration) -> Result<(), String> {
    let c = parse(cfgstring, ctx).map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let t = timeout;
    std::thread::Builder::new()
        .name("glfs-check".into())
        .spawn(move || {
            let r = volumes::get(&c, t, None).and_then(|e| check_dir(&c, &e.vol));
            let _ = tx.send(r);
        })
        .map_err(|e| format!("starting the check: {e}"))?;
    match rx.recv_timeout(timeout + Duration::from_millis(500)) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the gluster volume did not answer within {} s",
            timeout.as_secs_f64()
        )),
    }
}
