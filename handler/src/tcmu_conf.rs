//! tcmu-runner's configuration file, `/etc/tcmu/tcmu.conf`, for deployments that have one.
//!
//! Two keys matter to a handler daemon and are honoured:
//! - `log_level = N`, tcmu-runner's levels: 0 CRIT, 1 ERROR, 2 WARNING, 3 INFO (its
//!   default), 4 DEBUG, 5 DEBUG SCSI CMD. They map to `error` (0 and 1), `warn`, `info`,
//!   `debug` and `trace` (per-command detail).
//! - `log_dir = DIR` (older releases: `log_dir_path`): also write the log to
//!   `DIR/tcmu-warden.log`.
//!
//! Other keys are tcmu-runner's own and are ignored (named once in the log). A missing file is
//! fine. The file is re-read when it changes ([`watch`] polls it every second), so the log
//! level changes at run time, as with tcmu-runner.
//!
//! Precedence, highest first, the log saying which one gave each value: for the level,
//! `RUST_LOG`, `-d`, `[daemon] log_level` in tcmu-warden's own configuration file, tcmu.conf's
//! `log_level`, the default (`info`); for the log directory, `-l`/`--tcmu-log-dir`, then
//! tcmu.conf's `log_dir`, else no log file (the journal or stderr only).

use crate::logging::Logging;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where tcmu-runner's configuration lives.
pub const DEFAULT_PATH: &str = "/etc/tcmu/tcmu.conf";
/// How often [`watch`] looks at the file.
pub const POLL: Duration = Duration::from_secs(1);

/// What tcmu.conf says (only the keys tcmu-warden uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcmuConf {
    /// `log_level`, 0 to 5.
    pub log_level: Option<u8>,
    /// `log_dir` (or the older `log_dir_path`).
    pub log_dir: Option<PathBuf>,
    /// Keys present but not used by tcmu-warden.
    pub ignored: Vec<String>,
    /// Lines that could not be used, with their number and why.
    pub problems: Vec<String>,
}

impl TcmuConf {
    /// Parse the text of a tcmu.conf: `key = value` lines, `#` comments, values optionally in
    /// double quotes. Never fails: what cannot be used is listed in `problems`.
    #[must_use]
    pub fn parse(text: &str) -> TcmuConf {
        let mut c = TcmuConf::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                c.problems
                    .push(format!("line {}: {line:?} is not key = value", i + 1));
                continue;
            };
            let k = k.trim();
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            match k {
                "log_level" => match v.parse::<u8>() {
                    Ok(n) if n <= 5 => c.log_level = Some(n),
                    _ => c.problems.push(format!(
                        "line {}: log_level = {v:?}: expected 0 (CRIT) to 5 (DEBUG SCSI CMD)",
                        i + 1
                    )),
                },
                "log_dir" | "log_dir_path" => {
                    if v.starts_with('/') {
                        c.log_dir = Some(PathBuf::from(v));
                    } else {
                        c.problems.push(format!(
                            "line {}: {k} = {v:?}: expected an absolute directory",
                            i + 1
                        ));
                    }
                }
                other => c.ignored.push(other.to_string()),
            }
        }
        c
    }

    /// Read `path`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn load(path: &Path) -> Result<Option<TcmuConf>, std::io::Error> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(TcmuConf::parse(&t))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The `tracing` filter for one of tcmu-runner's levels, and the level's name.
#[must_use]
pub fn level_filter(level: u8) -> (&'static str, &'static str) {
    match level {
        0 => ("error", "CRIT"),
        1 => ("error", "ERROR"),
        2 => ("warn", "WARNING"),
        3 => ("info", "INFO"),
        4 => ("debug", "DEBUG"),
        _ => ("trace", "DEBUG SCSI CMD"),
    }
}

/// Settings that outrank tcmu.conf, fixed for the process's life.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `RUST_LOG`, if set.
    pub env: Option<String>,
    /// `-d`/`--debug`.
    pub debug: bool,
    /// `[daemon] log_level` of tcmu-warden's configuration file, when the file sets it, with
    /// the file's path.
    pub ours: Option<(String, PathBuf)>,
    /// `-l`/`--tcmu-log-dir`.
    pub log_dir: Option<PathBuf>,
}

/// A value and where it came from (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from, in words.
    pub source: String,
}

/// The log filter: the highest-ranked of the overrides, tcmu.conf's `log_level`, `info`.
#[must_use]
pub fn resolve_level(o: &Overrides, conf: Option<&TcmuConf>, conf_path: &Path) -> Sourced<String> {
    let tcmu = conf.and_then(|c| c.log_level);
    let shadowed = |by: &str| match tcmu {
        Some(n) => format!("{by}; {} log_level = {n} not used", conf_path.display()),
        None => by.to_string(),
    };
    if let Some(f) = &o.env {
        return Sourced {
            value: f.clone(),
            source: shadowed("RUST_LOG"),
        };
    }
    if o.debug {
        return Sourced {
            value: "debug".into(),
            source: shadowed("-d/--debug"),
        };
    }
    if let Some((f, p)) = &o.ours {
        return Sourced {
            value: f.clone(),
            source: shadowed(&format!("{} [daemon] log_level", p.display())),
        };
    }
    if let Some(n) = tcmu {
        let (f, name) = level_filter(n);
        return Sourced {
            value: f.into(),
            source: format!("{} log_level = {n} ({name})", conf_path.display()),
        };
    }
    Sourced {
        value: "info".into(),
        source: "default".into(),
    }
}

/// The log directory: `-l`, then tcmu.conf's `log_dir`, else none.
#[must_use]
pub fn resolve_log_dir(
    o: &Overrides,
    conf: Option<&TcmuConf>,
    conf_path: &Path,
) -> Sourced<Option<PathBuf>> {
    let tcmu = conf.and_then(|c| c.log_dir.clone());
    if let Some(d) = &o.log_dir {
        let source = match &tcmu {
            Some(t) => format!(
                "-l/--tcmu-log-dir; {} log_dir = {} not used",
                conf_path.display(),
                t.display()
            ),
            None => "-l/--tcmu-log-dir".into(),
        };
        return Sourced {
            value: Some(d.clone()),
            source,
        };
    }
    match tcmu {
        Some(d) => Sourced {
            value: Some(d),
            source: format!("{} log_dir", conf_path.display()),
        },
        None => Sourced {
            value: None,
            source: "default: no log file".into(),
        },
    }
}

/// `[daemon] log_level` when tcmu-warden's own configuration file sets it explicitly (its
/// default does not outrank tcmu.conf).
#[must_use]
pub fn our_log_level(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    table
        .get("daemon")?
        .get("log_level")?
        .as_str()
        .map(str::to_string)
}

/// Read tcmu.conf (logging problems with it) and apply the resolved level and log directory.
fn apply(logging: &Logging, o: &Overrides, path: &Path, first: bool) {
    let conf = match TcmuConf::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read tcmu.conf: {e}; its settings are not used");
            None
        }
    };
    if let Some(c) = &conf {
        for p in &c.problems {
            tracing::warn!("{} {p}; ignored", path.display());
        }
        if first && !c.ignored.is_empty() {
            tracing::info!(
                "{}: keys used by tcmu-runner only, ignored: {}",
                path.display(),
                c.ignored.join(", ")
            );
        }
    }
    let level = resolve_level(o, conf.as_ref(), path);
    logging.set_filter(&level.value, &level.source);
    let dir = resolve_log_dir(o, conf.as_ref(), path);
    logging.set_log_dir(dir.value.as_deref(), &dir.source);
}

/// Apply tcmu.conf now, then re-read it whenever it changes (created, edited, replaced,
/// removed), on a thread of its own that lives as long as the process.
pub fn watch(logging: Arc<Logging>, o: Overrides, path: PathBuf) {
    apply(&logging, &o, &path, true);
    let mut seen = stamp(&path);
    let spawned = std::thread::Builder::new()
        .name("tcmu-conf".into())
        .spawn(move || loop {
            std::thread::sleep(POLL);
            let now = stamp(&path);
            if now != seen {
                seen = now;
                tracing::info!(path = %path.display(), "tcmu.conf changed; re-reading it");
                apply(&logging, &o, &path, false);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("tcmu.conf changes will not be followed: cannot start a thread: {e}");
    }
}

/// What identifies a version of the file: modification time, size, inode (an editor that
/// replaces the file changes the inode).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcmu_runners_format() {
        let c = TcmuConf::parse(
            "# comment\nlog_level = 4\n  log_dir = \"/var/log/tcmu\"  # trailing\nrbd_foo = 1\n",
        );
        assert_eq!(c.log_level, Some(4));
        assert_eq!(c.log_dir.as_deref(), Some(Path::new("/var/log/tcmu")));
        assert_eq!(c.ignored, vec!["rbd_foo".to_string()]);
        assert!(c.problems.is_empty());
        let c = TcmuConf::parse("log_level = 9\nlog_dir_path = rel\ngarbage\n");
        assert_eq!(c.log_level, None);
        assert_eq!(c.log_dir, None);
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        assert!(c.problems[0].contains("line 1"));
        assert_eq!(
            TcmuConf::parse("log_dir_path=/x").log_dir,
            Some("/x".into())
        );
    }

    #[test]
    fn levels_have_tcmu_runners_meaning() {
        let names: Vec<_> = (0..=5).map(|n| level_filter(n).0).collect();
        assert_eq!(names, ["error", "error", "warn", "info", "debug", "trace"]);
    }

    #[test]
    fn precedence_env_cli_ours_tcmu_default() {
        let p = Path::new("/etc/tcmu/tcmu.conf");
        let conf = TcmuConf::parse("log_level = 4\nlog_dir = /var/log\n");
        let mut o = Overrides::default();
        assert_eq!(resolve_level(&o, None, p).value, "info");
        assert_eq!(resolve_level(&o, None, p).source, "default");
        let l = resolve_level(&o, Some(&conf), p);
        assert_eq!(l.value, "debug");
        assert!(
            l.source.contains("tcmu.conf log_level = 4 (DEBUG)"),
            "{}",
            l.source
        );
        o.ours = Some(("warn".into(), "/etc/tcmu-warden/config.toml".into()));
        let l = resolve_level(&o, Some(&conf), p);
        assert_eq!(l.value, "warn");
        assert!(
            l.source.contains("config.toml [daemon] log_level"),
            "{}",
            l.source
        );
        assert!(l.source.contains("log_level = 4 not used"), "{}", l.source);
        o.debug = true;
        assert_eq!(resolve_level(&o, Some(&conf), p).value, "debug");
        o.env = Some("trace".into());
        assert_eq!(resolve_level(&o, Some(&conf), p).value, "trace");

        let d = resolve_log_dir(&o, Some(&conf), p);
        assert_eq!(d.value.as_deref(), Some(Path::new("/var/log")));
        o.log_dir = Some("/run/x".into());
        let d = resolve_log_dir(&o, Some(&conf), p);
        assert_eq!(d.value.as_deref(), Some(Path::new("/run/x")));
        assert!(d.source.contains("not used"));
        assert_eq!(resolve_log_dir(&Overrides::default(), None, p).value, None);
    }

    #[test]
    fn our_level_counts_only_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[daemon]\nworkers = 2\n").unwrap();
        assert_eq!(our_log_level(&f), None);
        std::fs::write(&f, "[daemon]\nlog_level = \"warn\"\n").unwrap();
        assert_eq!(our_log_level(&f).as_deref(), Some("warn"));
        assert_eq!(our_log_level(&dir.path().join("missing")), None);
    }
}
