//! Fuzz the parsing of a device's configuration string, the way the daemon takes it apart:
//! the uio name (`tcm-user/<hba>/<name>/<subtype>/<cfgstring>`), the `;key=value` options
//! split off the cfgstring, the daemon's own options (`Config::device_with`, including
//! fault-injection rules), and the handler part under every subtype's parser (`file`, `rbd`,
//! `glfs`; the `ram` backend takes no cfgstring).
//!
//! Asserts: no panic, and for what is accepted, that it says the same thing when written out
//! again: the uio name and the option split re-parse to the same fields, an `rbd` spec and a
//! `glfs` volume/servers/path re-parse to the same configuration, fault rules survive
//! `format_rules`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcmu_ring::parse_uio_name;
use tcmu_warden::backend::fault::{format_rules, parse_rules};
use tcmu_warden::backend::glfs::cfg as glfs;
use tcmu_warden::backend::rbd::cfg as rbd;
use tcmu_warden::backend::registry::OpenCtx;
use tcmu_warden::backend::{cfgstring, OpenError};
use tcmu_warden::config::{split_cfgstring_options, Config, ConfigError, DEVICE_KEYS};

fn uio_name(s: &str) {
    let Ok(u) = parse_uio_name(s) else { return };
    let mut again = format!("tcm-user/{}/{}", u.hba, u.device);
    if let Some(st) = u.subtype {
        again.push('/');
        again.push_str(st);
    }
    if let Some(c) = u.cfgstring {
        again.push('/');
        again.push_str(c);
    }
    assert_eq!(parse_uio_name(&again).ok(), Some(u), "{again:?}");
}

fn options(cfg: &str) -> (&str, Vec<(&str, &str)>) {
    let (head, opts) = split_cfgstring_options(cfg);
    assert!(cfg.starts_with(head));
    if !opts.is_empty() {
        assert_eq!(cfg.as_bytes().get(head.len()), Some(&b';'));
    }
    for (k, _) in &opts {
        assert!(k.starts_with(|c: char| c.is_ascii_lowercase()), "{k:?}");
    }
    // Written out again without the empty parts, it splits the same way.
    let mut again = head.to_string();
    for (k, v) in &opts {
        again.push_str(&format!(";{k}={v}"));
    }
    let (h2, o2) = split_cfgstring_options(&again);
    assert_eq!((h2, &o2), (head, &opts), "{again:?}");
    (head, opts)
}

fn daemon_options(opts: &[(&str, &str)]) {
    let own: Vec<_> = opts
        .iter()
        .copied()
        .filter(|(k, _)| DEVICE_KEYS.contains(k))
        .collect();
    match Config::default().device_with("user_0/fuzz", &own) {
        Ok(s) => {
            assert!(!s.io_timeout.is_zero() && !s.ping_interval.is_zero());
            assert_eq!(
                parse_rules(&format_rules(&s.faults)).ok(),
                Some(s.faults.clone())
            );
        }
        Err(e) => assert!(matches!(e, ConfigError::Option { .. }), "{e:?}"),
    }
    for (k, v) in opts {
        if *k == "faults" {
            if let Ok(rules) = parse_rules(v) {
                let text = format_rules(&rules);
                assert_eq!(parse_rules(&text).ok(), Some(rules), "{v:?} -> {text:?}");
            }
        }
    }
}

fn check_file(head: &str) {
    match cfgstring::parse("file", head) {
        Ok(cfgstring::DevConfig::File { path }) => {
            assert_eq!(path.as_os_str(), head);
            assert!(!head.is_empty() && !head.ends_with('/') && !head.contains(['\n', '\0']));
        }
        Err(e) => assert!(matches!(e, OpenError::Config { .. }), "{e:?}"),
    }
}

fn check_rbd(head: &str, backend_opts: &[(&str, &str)]) {
    let mut ctx = OpenCtx::new("user_0/fuzz", 1 << 30);
    ctx.options = backend_opts;
    let Ok(c) = rbd::parse(head, &ctx) else {
        return;
    };
    assert!(!c.pool.is_empty() && !c.image.is_empty());
    assert!(c.lock_timeout > std::time::Duration::ZERO);
    if let Some(t) = c.osd_op_timeout {
        assert!(t.as_secs() >= 1 && t.as_secs() <= rbd::MAX_OSD_OP_TIMEOUT_SECS);
    }
    let spec = c.spec();
    let again = rbd::parse(&spec, &ctx).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    assert_eq!(again, c, "{spec:?}");
}

fn check_glfs(head: &str, backend_opts: &[(&str, &str)]) {
    let Ok(c) = glfs::parse(head, backend_opts) else {
        return;
    };
    assert!(!c.servers.is_empty() && c.path.starts_with('/') && c.path.len() > 1);
    assert!(c.servers.iter().all(|s| s.port != 0 && !s.host.is_empty()));
    let servers: Vec<String> = c
        .servers
        .iter()
        .map(|s| {
            if s.host.contains(':') {
                format!("{}+[{}]:{}", s.transport, s.host, s.port)
            } else {
                format!("{}+{}:{}", s.transport, s.host, s.port)
            }
        })
        .collect();
    let text = format!("{}@{}{}", c.volume, servers.join(","), c.path);
    let again = glfs::parse(&text, backend_opts).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(again, c, "{text:?}");
    let _ = (c.describe(), c.dir());
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    uio_name(s);
    // A whole uio name, or just a dev_config: the parts after the subtype either way.
    let cfg = match parse_uio_name(s) {
        Ok(u) => u.cfgstring.unwrap_or(""),
        Err(_) => s.split_once('/').map_or(s, |(_, c)| c),
    };
    let (head, opts) = options(cfg);
    daemon_options(&opts);
    let backend_opts: Vec<_> = opts
        .iter()
        .copied()
        .filter(|(k, _)| !DEVICE_KEYS.contains(k))
        .collect();
    check_file(head);
    check_rbd(head, &backend_opts);
    check_glfs(head, &backend_opts);
});
