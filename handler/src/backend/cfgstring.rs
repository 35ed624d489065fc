//! Parsing of the `dev_config` string the kernel passes in the uio name:
//! `<subtype>/<handler cfgstring>`, e.g. `file//var/lib/lun0.img` or `file/lun0.img`.
//!
//! tcmu-runner's file handler takes everything after the first `/` as the path; we do the
//! same so existing targetcli configurations work unchanged.

use super::OpenError;
use std::path::PathBuf;

/// A parsed `dev_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevConfig {
    /// `file/<path>`: a local file (created if missing, grown to the LUN size).
    File {
        /// Path of the backing file.
        path: PathBuf,
    },
}

/// Subtypes this daemon serves.
pub use super::registry::SUBTYPES;

/// Parse `subtype` and `cfgstring` (the part after `<subtype>/`).
///
/// # Errors
/// [`OpenError::Subtype`] for a subtype we do not serve, [`OpenError::Config`] for a
/// malformed cfgstring.
pub fn parse(subtype: &str, cfgstring: &str) -> Result<DevConfig, OpenError> {
    let bad = |reason: &str| OpenError::Config {
        cfgstring: cfgstring.to_string(),
        reason: reason.to_string(),
    };
    match subtype {
        "file" => {
            if cfgstring.is_empty() {
                return Err(bad("expected file/<path>, the path is empty"));
            }
            if cfgstring.contains('\n') || cfgstring.contains('\0') {
                return Err(bad("the path contains a newline or NUL (was it written with echo instead of echo -n?)"));
            }
            if cfgstring.ends_with('/') {
                return Err(bad("the path names a directory, expected a file"));
            }
            Ok(DevConfig::File {
                path: PathBuf::from(cfgstring),
            })
        }
        other => Err(OpenError::Subtype(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_like_tcmu_runner() {
        assert_eq!(
            parse("file", "/var/lib/a.img").unwrap(),
            DevConfig::File {
                path: "/var/lib/a.img".into()
            }
        );
        assert_eq!(
            parse("file", "rel/a.img").unwrap(),
            DevConfig::File {
                path: "rel/a.img".into()
            }
        );
    }

    #[test]
    fn malformed_cfgstrings_are_refused_with_a_reason() {
        let e = parse("file", "").unwrap_err().to_string();
        assert!(e.contains("path is empty"), "{e}");
        let e = parse("file", "/a.img\n").unwrap_err().to_string();
        assert!(e.contains("newline"), "{e}");
        let e = parse("file", "/tmp/").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = parse("qcow", "/a").unwrap_err().to_string();
        assert!(e.contains("unsupported subtype \"qcow\""), "{e}");
    }
}
