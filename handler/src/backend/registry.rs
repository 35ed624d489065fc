//! The subtypes this daemon serves and how each is opened, validated and described.
//!
//! One place maps a subtype (`file`, `rbd`, `glfs`) to its backend module, so the daemon's
//! device lifecycle, the DBus service (`CheckConfig`, `ConfigDesc`) and discovery all agree on
//! what is served.

use super::{Backend, OpenError};
use std::sync::Arc;
use std::time::Duration;
use tcmu_warden_supervisor::metrics::Metrics;

/// Subtypes this build serves, in the order they are listed to users.
pub const SUBTYPES: &[&str] = &[
    "file",
    #[cfg(feature = "rbd")]
    "rbd",
    #[cfg(feature = "glfs")]
    "glfs",
];

/// What a backend may need besides its cfgstring when it opens.
#[derive(Clone, Copy)]
pub struct OpenCtx<'a> {
    /// The device's name, `user_<hba>/<name>` (for logs and metric labels).
    pub device: &'a str,
    /// The LUN's size in bytes (`dev_size`).
    pub size: u64,
    /// The cfgstring's `;key=value` options that are not the daemon's own
    /// ([`crate::config::DEVICE_KEYS`]): the backend's (e.g. RBD's `osd_op_timeout`). A backend
    /// refuses a key it does not know, naming it.
    pub options: &'a [(&'a str, &'a str)],
    /// The process's metrics registry, for backend-specific series.
    pub metrics: Option<&'a Arc<Metrics>>,
}

impl<'a> OpenCtx<'a> {
    /// A context with no options and no metrics.
    #[must_use]
    pub fn new(device: &'a str, size: u64) -> OpenCtx<'a> {
        OpenCtx {
            device,
            size,
            options: &[],
            metrics: None,
        }
    }

    /// Refuse every option: for backends that take none.
    ///
    /// # Errors
    /// [`OpenError::Config`] naming the first option.
    pub fn refuse_options(&self, cfgstring: &str, known: &[&str]) -> Result<(), OpenError> {
        match self.options.iter().find(|(k, _)| !known.contains(k)) {
            None => Ok(()),
            Some((k, v)) => Err(OpenError::Config {
                cfgstring: cfgstring.to_string(),
                reason: format!(
                    "unknown option {k}={v}; this subtype takes {}, and every device takes {}",
                    if known.is_empty() {
                        "no options of its own".to_string()
                    } else {
                        known.join(", ")
                    },
                    crate::config::DEVICE_KEYS.join(", ")
                ),
            }),
        }
    }
}

/// Open the backend `subtype` with its cfgstring (the part after `<subtype>/`, the daemon's
/// own options removed).
///
/// # Errors
/// [`OpenError::Subtype`] for a subtype this build does not serve; the backend's error.
pub fn open(subtype: &str, cfgstring: &str, ctx: &OpenCtx) -> Result<Arc<dyn Backend>, OpenError> {
    match subtype {
        "file" => {
            ctx.refuse_options(cfgstring, &[])?;
            let super::cfgstring::DevConfig::File { path } =
                super::cfgstring::parse(subtype, cfgstring)?;
            Ok(Arc::new(super::file::FileBackend::open(&path, ctx.size)?))
        }
        #[cfg(feature = "rbd")]
        "rbd" => super::rbd::open(cfgstring, ctx),
        #[cfg(feature = "glfs")]
        "glfs" => super::glfs::open(cfgstring, ctx),
        other => Err(OpenError::Subtype(other.to_string())),
    }
}

/// Validate a full cfgstring for `subtype` the way opening it would, without opening a device:
/// the syntax, and (bounded by `timeout`) whether what it names exists and answers. `Err`
/// says what is wrong in words for the operator (targetcli shows it).
///
/// # Errors
/// The reason the cfgstring would be refused.
pub fn check_config(subtype: &str, cfgstring: &str, timeout: Duration) -> Result<(), String> {
    let (cfg, opts) = crate::config::split_cfgstring_options(cfgstring);
    let (own, backend_opts): (Vec<_>, Vec<_>) = opts
        .into_iter()
        .partition(|(k, _)| crate::config::DEVICE_KEYS.contains(k));
    crate::config::Config::default()
        .device_with("check", &own)
        .map_err(|e| e.to_string())?;
    let ctx = OpenCtx {
        device: "check",
        size: 0,
        options: &backend_opts,
        metrics: None,
    };
    match subtype {
        "file" => {
            ctx.refuse_options(cfg, &[]).map_err(|e| e.to_string())?;
            super::file::check_config(cfg)
        }
        #[cfg(feature = "rbd")]
        "rbd" => super::rbd::check_config(cfg, &ctx, timeout),
        #[cfg(feature = "glfs")]
        "glfs" => super::glfs::check_config(cfg, &ctx, timeout),
        other => {
            let _ = timeout;
            Err(OpenError::Subtype(other.to_string()).to_string())
        }
    }
}

/// The cfgstring syntax of `subtype`, for people (DBus `ConfigDesc`, `--help`).
#[must_use]
pub fn config_desc(subtype: &str) -> Option<&'static str> {
    match subtype {
        "file" => Some(super::file::CONFIG_DESC),
        #[cfg(feature = "rbd")]
        "rbd" => Some(super::rbd::CONFIG_DESC),
        #[cfg(feature = "glfs")]
        "glfs" => Some(super::glfs::CONFIG_DESC),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_option_is_refused_by_the_backend_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.img");
        let cfg = format!("{};io_timout=1s", path.display());
        let e = check_config("file", &cfg, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("unknown option io_timout=1s"), "{e}");
        assert!(e.contains("io_timeout"), "lists the daemon's keys: {e}");
        let opts = [("io_timout", "1s")];
        let ctx = OpenCtx {
            options: &opts,
            ..OpenCtx::new("user_0/a", 4096)
        };
        let e = open("file", &path.display().to_string(), &ctx)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown option io_timout=1s"), "{e}");
        assert!(!path.exists(), "nothing is created for a refused cfgstring");
    }

    #[test]
    fn check_config_validates_syntax_options_and_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ok = format!("{}/new.img;io_timeout=5s", dir.path().display());
        check_config("file", &ok, Duration::from_secs(1)).unwrap();
        let e = check_config("file", "/nonexistent-dir/x.img", Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("/nonexistent-dir does not exist"), "{e}");
        let e = check_config(
            "file",
            &format!("{}/a;io_timeout=0s", dir.path().display()),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("greater than 0"), "{e}");
        let e = check_config("qcow", "x", Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("unsupported subtype \"qcow\""), "{e}");
        assert!(config_desc("file").unwrap().contains("file/<path>"));
        assert!(config_desc("qcow").is_none());
    }
}
