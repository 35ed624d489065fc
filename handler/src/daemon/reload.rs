//! Reloading the configuration file on SIGHUP, without a restart.
//!
//! The file is read and checked as at start; if it is refused, the configuration in force
//! stays and the log says why (with the line). Otherwise every changed key is logged with
//! when it applies:
//! - **now**, on the devices being served: `io_timeout` (the handler deadline),
//!   `outlier_threshold`, `ping_interval`, `multipath`, `tier_policy` and the initiator's
//!   `replacement_timeout` (the tiers are checked again and their verdict updated; a device
//!   already served is never dropped by `tier_policy = "refuse"`, only warned about), `faults`,
//!   and `log_level`;
//! - **for devices opened from now on**: `device_workers`, `max_inflight`, `stop_timeout`,
//!   `inline_qd1`, `io_uring`;
//! - **after a restart**: `metrics_addr`, `reply_mode`, `mlock`, `workers` (the size of the
//!   shared worker pool) (the log says so).
//!
//! A device's cfgstring options still take precedence over the file, as at start.

use super::open::{describe_tiers, plan, report_tiers, Served};
use super::DaemonConfig;
use crate::config::{Applies, KeyChange};
use crate::device::link::TunableValues;
use std::collections::HashMap;
use std::sync::Arc;

/// Reload the file `cfg` was read from and apply it to `served`. Returns the daemon
/// configuration for devices opened from now on, or `None` if the file was refused (then
/// nothing changed).
pub fn reload(cfg: &DaemonConfig, served: &mut HashMap<u32, Served>) -> Option<DaemonConfig> {
    let path = cfg
        .config_path
        .as_deref()
        .unwrap_or(std::path::Path::new(crate::config::DEFAULT_PATH));
    let r = match cfg.file.reload(cfg.config_path.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                "SIGHUP: the configuration was NOT reloaded, the one in force stays: {e}"
            );
            return None;
        }
    };
    let mut next = cfg.clone();
    let d = &r.config.daemon;
    for c in &r.daemon {
        log_change(c);
        match c.key {
            "log_level" => match &cfg.log_level {
                Some(set) => {
                    match set(&d.log_level) {
                        Ok(()) => tracing::debug!(filter = %d.log_level, "log filter changed"),
                        Err(e) => tracing::error!("log_level {:?} not applied: {e}", d.log_level),
                    }
                }
                None => tracing::warn!("log_level: the log filter cannot change in this process (RUST_LOG or --debug fixed it)"),
            },
            "replacement_timeout" => next.replacement_timeout = d.replacement_timeout,
            "device_workers" => next.device.workers = d.device_share(),
            "max_inflight" => next.device.max_inflight = d.max_inflight as usize,
            "stop_timeout" => next.device.stop_deadline = d.stop_timeout,
            "inline_qd1" => next.device.inline_qd1 = d.inline_qd1,
            "io_uring" => next.device.io_uring = d.io_uring,
            _ => {}
        }
    }
    let replacement_changed = r.daemon.iter().any(|c| c.key == "replacement_timeout");
    let mut changed = r.daemon.len();
    for s in served.values_mut() {
        let opts: Vec<(&str, &str)> = s
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (settings, changes) = match r.device(&s.name, &opts) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(device = %s.name, "settings not reloaded, the ones in force stay: {e}");
                continue;
            }
        };
        if changes.is_empty() && !replacement_changed {
            continue;
        }
        changed += changes.len();
        for c in &changes {
            log_change(c);
        }
        let p = plan(
            s.cmd_time_out,
            next.replacement_timeout,
            &settings,
            s.backend_timeout,
        );
        if let Some(msg) = report_tiers(&s.name, &p) {
            if settings.tier_policy == crate::config::TierPolicy::Refuse {
                tracing::warn!(device = %s.name, "tier_policy = \"refuse\" would refuse this device ({msg}); it is already being served and stays");
            }
        }
        s.tiers = describe_tiers(p.tiers.as_ref(), Some(p.deadline));
        let link = Arc::clone(s.handle.link());
        link.tunables.set(TunableValues {
            outlier_threshold: Some(settings.outlier_threshold),
            command_deadline: Some(p.deadline),
            ping: Some((p.ping.interval, p.ping.timeout)),
        });
        if changes.iter().any(|c| c.key == "faults") {
            apply_faults(s, &settings.faults);
        }
    }
    next.file = r.config;
    tracing::info!(
        file = %path.display(),
        changed,
        "SIGHUP: configuration reloaded"
    );
    Some(next)
}

fn log_change(c: &KeyChange) {
    let when = match c.applies {
        Applies::Now => "now",
        Applies::NewDevices => "to devices opened from now on",
        Applies::Restart => "only after a restart",
    };
    tracing::info!(section = %c.section, key = c.key, old = %c.old, new = %c.new, "{}: {} -> {}, applies {when}", c.key, c.old, c.new);
}

/// New fault rules: change the injector's rules, or wrap the backend in one.
fn apply_faults(s: &mut Served, rules: &[crate::backend::fault::Rule]) {
    use crate::backend::fault::{format_rules, FaultBackend};
    if let Some(f) = &s.fault {
        f.set_rules(rules.to_vec());
    } else if !rules.is_empty() {
        let link = s.handle.link();
        let f = Arc::new(FaultBackend::new(link.backend(), rules.to_vec()));
        link.set_backend(Arc::clone(&f) as Arc<dyn crate::backend::Backend>);
        s.fault = Some(f);
    }
    if rules.is_empty() {
        tracing::info!(device = %s.name, "fault injection off");
    } else {
        tracing::warn!(device = %s.name, rules = %format_rules(rules), "FAULT INJECTION is on for this device");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ram::RamBackend;
    use crate::device::{self, DeviceConfig};
    use std::time::{Duration, Instant};
    use tcmu_ring::emu::{EmuConfig, KernelEmu};

    fn served(name: &str, options: &[(&str, &str)]) -> (Served, KernelEmu) {
        let (emu, map, bell) = KernelEmu::new(EmuConfig::default()).unwrap();
        let ring = tcmu_ring::Ring::new(Arc::new(map)).unwrap();
        let backend = Arc::new(RamBackend::new(1 << 20));
        let lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "reload");
        let cfg = DeviceConfig {
            command_deadline: Some(Duration::from_secs(20)),
            ..DeviceConfig::default()
        };
        let handle = device::spawn(name, ring, Box::new(bell), backend, lun, &cfg).unwrap();
        let s = Served {
            name: name.into(),
            dir: "/nonexistent".into(),
            subtype: "file".into(),
            uio: "/dev/uio0".into(),
            tiers: String::new(),
            handle,
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            cmd_time_out: Some(30),
            backend_timeout: None,
            fault: None,
            opened: Default::default(),
        };
        (s, emu)
    }

    #[test]
    fn sighup_applies_new_thresholds_to_running_devices_and_keeps_cfgstring_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[defaults]\nio_timeout = \"20s\"\n").unwrap();
        let cfg = DaemonConfig {
            config_path: Some(path.clone()),
            file: crate::config::load(&path).unwrap(),
            ..DaemonConfig::default()
        };
        let (s, _emu) = served("user_0/lun0", &[("outlier_threshold", "300ms")]);
        let link = Arc::clone(s.handle.link());
        let stats = Arc::clone(&s.handle.stats);
        let mut map = HashMap::from([(0, s)]);

        std::fs::write(
            &path,
            "[daemon]\ndevice_workers = 2\nmetrics_addr = \"127.0.0.1:9999\"\n\
             [defaults]\nio_timeout = \"7s\"\noutlier_threshold = \"2s\"\nping_interval = \"1s\"\n\
             faults = \"read:fail=EIO\"\n",
        )
        .unwrap();
        let next = reload(&cfg, &mut map).expect("reloaded");
        assert_eq!(next.device.workers, 2, "for devices opened from now on");
        assert_eq!(next.file.daemon.device_workers, 2);
        assert_eq!(
            link.tunables.get(),
            TunableValues {
                // The cfgstring's option still wins over the file.
                outlier_threshold: Some(Duration::from_millis(300)),
                command_deadline: Some(Duration::from_secs(7)),
                ping: Some((Duration::from_secs(1), Duration::from_secs(7))),
            }
        );
        let s = &map[&0];
        assert!(
            s.tiers.contains("handler deadline 7 s") && s.tiers.ends_with("sound"),
            "{}",
            s.tiers
        );
        assert!(
            s.fault.is_some(),
            "the backend is now wrapped in the fault injector"
        );
        assert!(link
            .backend()
            .describe()
            .starts_with("fault(read:fail=EIO)"));
        // The device thread picks the new deadline up by itself.
        let t = Instant::now();
        while stats.deadline_ms.load(std::sync::atomic::Ordering::Relaxed) != 7000 {
            assert!(t.elapsed() < Duration::from_secs(5), "deadline not applied");
            link.wake_now();
            std::thread::sleep(Duration::from_millis(10));
        }

        // A bad file changes nothing.
        std::fs::write(&path, "[defaults]\nio_timeout = \"-1s\"\n").unwrap();
        let before = link.tunables.generation();
        assert!(reload(&next, &mut map).is_none());
        assert_eq!(link.tunables.generation(), before);
        // Faults off again on the next good reload.
        std::fs::write(&path, "[defaults]\nio_timeout = \"7s\"\n").unwrap();
        let after = reload(&next, &mut map).expect("reloaded");
        assert!(after.file.device("user_0/lun0").faults.is_empty());
        assert!(map[&0].fault.as_ref().unwrap().rules().is_empty());
    }

    #[test]
    fn replacement_timeout_changes_recheck_the_tiers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[daemon]\nreplacement_timeout = \"5s\"\n[defaults]\nmultipath = true\n",
        )
        .unwrap();
        let cfg = DaemonConfig {
            config_path: Some(path.clone()),
            file: crate::config::load(&path).unwrap(),
            replacement_timeout: Duration::from_secs(5),
            ..DaemonConfig::default()
        };
        let (mut s, _emu) = served("user_0/mp", &[]);
        s.tiers = "sound".into();
        let mut map = HashMap::from([(0, s)]);
        // cmd_time_out 30 s must exceed replacement_timeout on a multipath LUN.
        std::fs::write(
            &path,
            "[daemon]\nreplacement_timeout = \"120s\"\n[defaults]\nmultipath = true\n",
        )
        .unwrap();
        let next = reload(&cfg, &mut map).unwrap();
        assert_eq!(next.replacement_timeout, Duration::from_secs(120));
        assert!(map[&0].tiers.contains("UNSAFE"), "{}", map[&0].tiers);
    }
}
