//! Fuzz the TOML configuration parser (`Config::parse`, `/etc/tcmu-warden/config.toml`) and
//! the duration syntax its values use.
//!
//! Asserts: no panic; a refused file is a `ConfigError::Parse` whose line is within the text;
//! an accepted one keeps every value in its documented range, resolves each device's
//! settings the same with and without an empty option list, differs from itself in nothing,
//! and its durations and fault rules read back from their written form. The raw input as a
//! duration: what `parse_duration` accepts, `format_duration` writes back exactly.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tcmu_warden::backend::fault::{format_rules, parse_rules};
use tcmu_warden::config::{Config, ConfigError, DeviceSettings};
use tcmu_warden::duration::{format_duration, parse_duration};

fn durations_round_trip(s: &DeviceSettings) {
    for d in [s.io_timeout, s.outlier_threshold, s.ping_interval] {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
    assert_eq!(
        parse_rules(&format_rules(&s.faults)).ok(),
        Some(s.faults.clone())
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        let w = format_duration(d);
        assert_eq!(parse_duration(&w), Ok(d), "{text:?} written as {w:?}");
    }
    match Config::parse(text, Path::new("fuzz.toml")) {
        Err(ConfigError::Parse { line, .. }) => {
            assert!(line <= text.lines().count() + 1, "line {line}");
        }
        Err(e) => panic!("not a parse error: {e:?}"),
        Ok(c) => {
            let d = &c.daemon;
            assert!((1..=256).contains(&d.workers), "workers {}", d.workers);
            assert!((1..=65535).contains(&d.max_inflight));
            assert!(c.diff_daemon(&c).is_empty());
            assert!(c.diff_daemon(&Config::default()).len() <= 9);
            let mut names: Vec<&str> = c.devices.keys().map(String::as_str).collect();
            names.push("user_0/not-configured");
            for name in names {
                let s = c.device(name);
                assert!(!s.io_timeout.is_zero() && !s.ping_interval.is_zero());
                let with = c.device_with(name, &[]).expect("no options, no error");
                assert_eq!(with, s);
                assert!(s.diff(&s, name).is_empty());
                durations_round_trip(&s);
            }
        }
    }
});
