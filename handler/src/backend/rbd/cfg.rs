//! The `rbd` cfgstring, as tcmu-runner's rbd handler accepts it, plus namespaces and
//! snapshots: `<pool>[/<namespace>]/<image>[@<snapshot>]`, with the backend's options
//! `osd_op_timeout=<secs>`, `conf=<path>`, `id=<user>` (split off by the daemon), and the
//! exclusive lock's `lock_hold=<secs>` and `lock_timeout=<secs>` (see [`super::lock`]).

use crate::backend::registry::OpenCtx;
use crate::backend::OpenError;
use std::path::PathBuf;
use std::time::Duration;

/// Largest `osd_op_timeout` accepted (one day): longer is as good as none, and a deadline
/// that far out would overflow the clock arithmetic.
pub const MAX_OSD_OP_TIMEOUT_SECS: u64 = 86_400;

/// `rados_osd_op_timeout` as the cluster configuration gives it (seconds, possibly with
/// decimals): None for none (0), for what is not a number, and for values too large to mean
/// anything (`inf`, `1e30`, past [`MAX_OSD_OP_TIMEOUT_SECS`]), which would otherwise panic in
/// `Duration::from_secs_f64` or in deadline arithmetic.
#[must_use]
pub fn conf_op_timeout(text: &str) -> Option<Duration> {
    let secs = text.trim().parse::<f64>().ok()?;
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    if secs > MAX_OSD_OP_TIMEOUT_SECS as f64 {
        tracing::warn!(
            rados_osd_op_timeout = text,
            "rbd: rados_osd_op_timeout above {MAX_OSD_OP_TIMEOUT_SECS} s is taken as none"
        );
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// The options this backend takes from the cfgstring.
pub const OPTIONS: &[&str] = &["osd_op_timeout", "conf", "id", "lock_hold", "lock_timeout"];

/// Default minimum time the exclusive lock is held before it is handed to a peer that asks.
pub const DEFAULT_LOCK_HOLD: Duration = Duration::from_secs(2);
/// Default bound on a write's wait for the exclusive lock (then BUSY, retried).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed `rbd` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdConfig {
    /// The pool.
    pub pool: String,
    /// The RADOS namespace, if any.
    pub namespace: Option<String>,
    /// The image.
    pub image: String,
    /// A snapshot to serve read-only.
    pub snap: Option<String>,
    /// The cluster configuration file (`None`: librados' default search path).
    pub conf: Option<PathBuf>,
    /// The cephx user without `client.` (`None`: librados' default, `admin`).
    pub id: Option<String>,
    /// `rados_osd_op_timeout` for the client (`None`: the cluster configuration's).
    pub osd_op_timeout: Option<Duration>,
    /// Minimum hold of the exclusive lock once taken (`lock_hold=`); zero: librbd's
    /// cooperative handover on every request (no explicit lock, no bound on the wait).
    pub lock_hold: Duration,
    /// How long a write waits for the exclusive lock before completing with BUSY
    /// (`lock_timeout=`).
    pub lock_timeout: Duration,
}

impl RbdConfig {
    /// `pool[/ns]/image[@snap]` for logs.
    #[must_use]
    pub fn spec(&self) -> String {
        let mut s = self.pool.clone();
        if let Some(ns) = &self.namespace {
            s.push('/');
            s.push_str(ns);
        }
        s.push('/');
        s.push_str(&self.image);
        if let Some(snap) = &self.snap {
            s.push('@');
            s.push_str(snap);
        }
        s
    }
}

/// Parse the cfgstring (after `rbd/`, the options already split off into `ctx.options`).
///
/// # Errors
/// [`OpenError::Config`] naming what is wrong.
pub fn parse(cfgstring: &str, ctx: &OpenCtx) -> Result<RbdConfig, OpenError> {
    let bad = |reason: String| OpenError::Config {
        cfgstring: cfgstring.to_string(),
        reason,
    };
    ctx.refuse_options(cfgstring, OPTIONS)?;
    if cfgstring.contains(['\n', '\0']) {
        return Err(bad(
            "the cfgstring contains a newline or NUL (was it written with echo instead of echo -n?)"
                .into(),
        ));
    }
    let parts: Vec<&str> = cfgstring.split('/').collect();
    let (pool, namespace, image) = match parts.as_slice() {
        [pool, image] => (*pool, None, *image),
        [pool, ns, image] => (*pool, Some(*ns), *image),
        _ => {
            return Err(bad(format!(
                "expected rbd/<pool>/<image> or rbd/<pool>/<namespace>/<image>, got {} \
                 part(s) separated by '/'",
                parts.len()
            )))
        }
    };
    if pool.is_empty() {
        return Err(bad("the pool name is empty".into()));
    }
    if namespace == Some("") {
        return Err(bad("the namespace is empty".into()));
    }
    let (image, snap) = match image.split_once('@') {
        Some((i, s)) => (i, Some(s)),
        None => (image, None),
    };
    if image.is_empty() {
        return Err(bad("the image name is empty".into()));
    }
    if snap == Some("") {
        return Err(bad(format!("the snapshot name after {image}@ is empty")));
    }
    let mut cfg = RbdConfig {
        pool: pool.to_string(),
        namespace: namespace.map(str::to_string),
        image: image.to_string(),
        snap: snap.map(str::to_string),
        conf: None,
        id: None,
        osd_op_timeout: None,
        lock_hold: DEFAULT_LOCK_HOLD,
        lock_timeout: DEFAULT_LOCK_TIMEOUT,
    };
    let secs = |k: &str, v: &str, zero_ok: bool| -> Result<Duration, OpenError> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && (*s > 0.0 || (zero_ok && *s == 0.0)) && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                bad(format!(
                    "{k}={v}: expected seconds (decimals allowed), {} and at most 3600",
                    if zero_ok { "0 or more" } else { "more than 0" }
                ))
            })
    };
    for (k, v) in ctx.options {
        match *k {
            "osd_op_timeout" => {
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_OSD_OP_TIMEOUT_SECS).contains(s))
                    .ok_or_else(|| {
                        bad(format!(
                            "osd_op_timeout={v}: expected a whole number of seconds from 1 to {MAX_OSD_OP_TIMEOUT_SECS}"
                        ))
                    })?;
                cfg.osd_op_timeout = Some(Duration::from_secs(secs));
            }
            "conf" => {
                if v.is_empty() {
                    return Err(bad("conf= is empty: give the path of a ceph.conf".into()));
                }
                cfg.conf = Some(PathBuf::from(v));
            }
            "id" => {
                let id = v.strip_prefix("client.").unwrap_or(v);
                if id.is_empty() {
                    return Err(bad("id= is empty: give a cephx user such as admin".into()));
                }
                cfg.id = Some(id.to_string());
            }
            "lock_hold" => cfg.lock_hold = secs(k, v, true)?,
            "lock_timeout" => cfg.lock_timeout = secs(k, v, false)?,
            _ => {}
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cfg: &str, opts: &[(&str, &str)]) -> Result<RbdConfig, String> {
        let ctx = OpenCtx {
            options: opts,
            ..OpenCtx::new("user_0/x", 0)
        };
        parse(cfg, &ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn tcmu_runner_cfgstrings_parse() {
        let c = p(
            "rbd/img",
            &[
                ("osd_op_timeout", "30"),
                ("conf", "/etc/ceph/c.conf"),
                ("id", "admin"),
            ],
        )
        .unwrap();
        assert_eq!(c.pool, "rbd");
        assert_eq!(c.image, "img");
        assert_eq!(c.namespace, None);
        assert_eq!(c.osd_op_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            c.conf.as_deref(),
            Some(std::path::Path::new("/etc/ceph/c.conf"))
        );
        assert_eq!(c.id.as_deref(), Some("admin"));
        assert_eq!(c.lock_hold, DEFAULT_LOCK_HOLD);
        assert_eq!(c.lock_timeout, DEFAULT_LOCK_TIMEOUT);
        let c = p("rbd/img", &[("lock_hold", "0"), ("lock_timeout", "1.5")]).unwrap();
        assert_eq!(c.lock_hold, Duration::ZERO);
        assert_eq!(c.lock_timeout, Duration::from_millis(1500));
        let c = p("pool/ns/img@snap1", &[("id", "client.iscsi")]).unwrap();
        assert_eq!(c.namespace.as_deref(), Some("ns"));
        assert_eq!(c.snap.as_deref(), Some("snap1"));
        assert_eq!(c.id.as_deref(), Some("iscsi"));
        assert_eq!(c.spec(), "pool/ns/img@snap1");
    }

    #[test]
    fn bad_cfgstrings_say_what_is_wrong() {
        let e = p("img", &[]).unwrap_err();
        assert!(e.contains("expected rbd/<pool>/<image>"), "{e}");
        let e = p("a/b/c/d", &[]).unwrap_err();
        assert!(e.contains("4 part(s)"), "{e}");
        assert!(p("/img", &[]).unwrap_err().contains("pool name is empty"));
        assert!(p("rbd/", &[]).unwrap_err().contains("image name is empty"));
        assert!(p("rbd/img@", &[]).unwrap_err().contains("snapshot name"));
        assert!(p("rbd//img", &[])
            .unwrap_err()
            .contains("namespace is empty"));
        let e = p("rbd/img", &[("osd_op_timeot", "5")]).unwrap_err();
        assert!(e.contains("unknown option osd_op_timeot=5"), "{e}");
        assert!(
            e.contains("osd_op_timeout, conf, id, lock_hold, lock_timeout"),
            "{e}"
        );
        let e = p("rbd/img", &[("lock_hold", "-1")]).unwrap_err();
        assert!(e.contains("lock_hold=-1: expected seconds"), "{e}");
        let e = p("rbd/img", &[("lock_timeout", "0")]).unwrap_err();
        assert!(e.contains("lock_timeout=0: expected seconds"), "{e}");
        let e = p("rbd/img", &[("osd_op_timeout", "5.0")]).unwrap_err();
        assert!(e.contains("whole number of seconds"), "{e}");
        assert!(p("rbd/img\n", &[]).unwrap_err().contains("newline"));
    }

    #[test]
    fn timeouts_too_large_to_mean_anything_are_errors_or_none_never_panics() {
        let e = p("rbd/img", &[("osd_op_timeout", "18446744073709551615")]).unwrap_err();
        assert!(e.to_string().contains("from 1 to 86400"), "{e}");
        assert!(p("rbd/img", &[("osd_op_timeout", "86400")]).is_ok());
        for v in [
            "inf",
            "-inf",
            "NaN",
            "1e30",
            "18446744073709551616",
            "86401",
            "0",
            "x",
        ] {
            assert_eq!(conf_op_timeout(v), None, "{v}");
        }
        assert_eq!(conf_op_timeout("5"), Some(Duration::from_secs(5)));
        assert_eq!(conf_op_timeout("2.5\n"), Some(Duration::from_millis(2500)));
    }
}
