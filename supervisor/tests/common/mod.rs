//! Helpers shared by the supervisor's integration tests.
#![allow(dead_code)] // each test binary uses a subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;
use tcmu_warden_supervisor::metrics::{
    BackendState, DeviceMetrics, Metrics, OpClass, OutcomeClass,
};

/// Effective uid 0, read from `/proc/self/status` (no unsafe, no libc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// `$PATH` lookup of an executable.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The tool, or `None` (with a message) when a test may skip: missing tools are a failure
/// in CI (`CI=true`) and as root (where `scripts/setup.sh` installs them), a skip otherwise.
pub fn require_tool(name: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = which(name) {
        return Some(p);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !(ci || is_root()),
        "`{name}` not found on PATH: install the Debian package `{package}` \
         (scripts/setup.sh does); required in CI and as root"
    );
    eprintln!("SKIP: `{name}` not found (Debian package `{package}`); not root and not CI");
    None
}

/// A device with every kind of update applied, so each series has a sample.
pub fn exercised(m: &Metrics, device: &str, subtype: &str) -> DeviceMetrics {
    let d = m.device(device, subtype);
    d.set_capacity(8 << 20, 1 << 30);
    d.observe_use(4096, 1 << 20);
    for op in OpClass::ALL {
        for oc in OutcomeClass::ALL {
            d.command_done(*op, *oc, 4096, 512, [20_000, 1_000, 1_000, 300_000, 3_000]);
        }
    }
    d.set_in_flight(3);
    d.deadline_expired("handler");
    d.tmr("abort_task");
    d.set_backend_state(BackendState::Degraded);
    d.reopen();
    d.ping_latency(0.002);
    d.outlier();
    d.stuck_command();
    d
}

/// One HTTP/1.1 GET (or any raw request), returning (status, headers, body).
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}
