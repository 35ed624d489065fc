//! Fuzz the tcmu.conf parser (`TcmuConf::parse`, `/etc/tcmu/tcmu.conf` as tcmu-runner writes
//! it) and the resolution of the log level and directory from it.
//!
//! Asserts: no panic; every non-blank, non-comment line is accounted for (a used key, an
//! ignored key or a problem); the values kept are in range (`log_level` 0..=5, an absolute
//! `log_dir`); written out again as `key = "value"` they parse to the same values; the level
//! resolved from the file is the filter of its `log_level`.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use tcmu_warden::tcmu_conf::{level_filter, resolve_level, resolve_log_dir, Overrides, TcmuConf};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = TcmuConf::parse(text);
    let lines = text
        .lines()
        .filter(|l| !l.split('#').next().unwrap_or("").trim().is_empty())
        .count();
    assert!(c.ignored.len() + c.problems.len() <= lines);
    if let Some(n) = c.log_level {
        assert!(n <= 5);
    }
    if let Some(d) = &c.log_dir {
        assert!(d.is_absolute(), "{d:?}");
    }

    // Written out again, the values read back the same.
    let mut again = String::new();
    if let Some(n) = c.log_level {
        again.push_str(&format!("log_level = {n}\n"));
    }
    if let Some(d) = c.log_dir.as_ref().and_then(|d| d.to_str()) {
        again.push_str(&format!("log_dir = \"{d}\"\n"));
    }
    let back = TcmuConf::parse(&again);
    assert_eq!(
        (back.log_level, &back.log_dir),
        (c.log_level, &c.log_dir),
        "{again:?}"
    );
    assert!(
        back.problems.is_empty() && back.ignored.is_empty(),
        "{back:?}"
    );

    let path = Path::new("/etc/tcmu/tcmu.conf");
    let o = Overrides::default();
    let level = resolve_level(&o, Some(&c), path);
    match c.log_level {
        Some(n) => assert_eq!(level.value, level_filter(n).0),
        None => assert_eq!(level.value, "info"),
    }
    assert_eq!(resolve_log_dir(&o, Some(&c), path).value, c.log_dir);
    // A command-line directory outranks the file.
    let cli = Overrides {
        log_dir: Some(PathBuf::from("/var/log/x")),
        ..Overrides::default()
    };
    assert_eq!(
        resolve_log_dir(&cli, Some(&c), path).value.as_deref(),
        Some(Path::new("/var/log/x"))
    );
});
