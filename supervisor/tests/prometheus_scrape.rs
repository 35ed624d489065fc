//! A real Prometheus server (Debian's `prometheus`) scrapes the `/metrics` endpoint every
//! second; its query API must return the per-device series within a bounded wait.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tcmu_warden_supervisor::http;
use tcmu_warden_supervisor::metrics::{Metrics, OpClass, OutcomeClass};

/// Kills and reaps the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `%`-encode a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(api: SocketAddr, q: &str) -> Option<String> {
    let path = format!("/api/v1/query?query={}", encode(q));
    let mut s = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    use std::io::{Read, Write};
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: prom\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_owned())
}

#[test]
fn a_real_prometheus_scrapes_the_device_series() {
    let Some(prometheus) = common::require_tool("prometheus", "prometheus") else {
        return;
    };
    let m = Metrics::new();
    let d = m.device("lun0", "file");
    d.set_capacity(8 << 20, 1 << 30);
    d.command_done(
        OpClass::Read,
        OutcomeClass::Good,
        4096,
        0,
        [10_000, 0, 0, 200_000, 5_000],
    );
    let (addr, _thread) = http::serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tcmu-warden\n    static_configs:\n      \
             - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut server = Server(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    let found = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap();
            panic!("prometheus exited with {status}:\n{log}");
        }
        if let Some(body) = query(
            api,
            "tcmu_warden_commands_total{op=\"read\",outcome=\"good\"}",
        ) {
            if body.contains("\"device\":\"lun0\"") && body.contains("\"subtype\":\"file\"") {
                break body;
            }
            last = Some(body);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap();
            panic!("no tcmu_warden_commands_total series from prometheus within 15 s (last answer {last:?}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(found.contains("\"status\":\"success\""), "{found}");
    assert!(found.contains("\"job\":\"tcmu-warden\""), "{found}");
    assert!(found.contains(",\"1\"]"), "value 1 expected: {found}");

    // The scrape is healthy and the other families arrived too.
    let up = query(api, "up{job=\"tcmu-warden\"}").unwrap();
    assert!(up.contains(",\"1\"]"), "{up}");
    let cap = query(api, "tcmu_warden_ring_capacity_bytes{area=\"data_area\"}").unwrap();
    assert!(cap.contains(",\"1073741824\"]"), "{cap}");
    let le = query(
        api,
        "tcmu_warden_command_duration_seconds_bucket{op=\"read\",le=\"0.00025\"}",
    )
    .unwrap();
    assert!(le.contains(",\"1\"]"), "{le}");
}
