//! The `/metrics` endpoint: serves the exposition, 404s elsewhere, and survives slow,
//! silent, oversized and garbage clients without delaying other scrapes.

mod common;

use common::{http_get, http_raw};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tcmu_warden_supervisor::http::{self, MAX_CONNECTIONS};
use tcmu_warden_supervisor::metrics::Metrics;

/// Whether the server closed `c` without an answer within 300 ms (or keeps it waiting).
fn closed_by_server(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 64];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&b[..n])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true, // reset
    }
}

fn server() -> (SocketAddr, std::sync::Arc<Metrics>) {
    let m = Metrics::new();
    let (addr, handle) = http::serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    assert_eq!(handle.thread().name(), Some("metrics-http"));
    assert_ne!(addr.port(), 0);
    (addr, m)
}

#[test]
fn serves_metrics_even_without_devices_and_404s_elsewhere() {
    let (addr, m) = server();
    let (code, head, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.contains("tcmu_warden_devices 0"), "{body}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body.len());

    let _d = common::exercised(&m, "lun0", "file");
    let (code, _, body) = http_get(addr, "/metrics?x=1");
    assert_eq!(code, 200);
    assert!(
        body.contains("tcmu_warden_commands_total{device=\"lun0\""),
        "{body}"
    );

    assert_eq!(http_get(addr, "/").0, 404);
    assert_eq!(http_get(addr, "/metricsx").0, 404);
    let (code, _, body) = http_raw(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((code, body.as_str()), (200, ""));
    let (code, head, _) = http_raw(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET, HEAD"));
}

#[test]
fn garbage_and_oversized_requests_get_an_error_and_the_server_lives_on() {
    let (addr, _m) = server();
    assert_eq!(http_raw(addr, b"\x00\x01\x02 garbage\r\n\r\n").0, 400);
    assert_eq!(http_raw(addr, b"GET /metrics SPDY/9\r\n\r\n").0, 400);
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat(b'a').take(64 * 1024));
    // The server answers 431 after reading about 8 KiB; it may reset the connection while
    // we are still sending, so only require it to stay up.
    if let Ok(mut s) = TcpStream::connect(addr) {
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&big);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if !out.is_empty() {
            assert!(
                out.starts_with(b"HTTP/1.1 431"),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    // A client that connects and closes at once, one that half-closes mid-request.
    drop(TcpStream::connect(addr).unwrap());
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /met").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty());
    assert_eq!(http_get(addr, "/metrics").0, 200);
}

#[test]
fn slow_and_silent_clients_do_not_block_scrapes() {
    let (addr, _m) = server();
    // Silent clients that never send a byte, up to the connection limit minus one, and one
    // slowloris that trickles its head.
    let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS - 2)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (code, _, _) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "scrape took {:?}",
        t.elapsed()
    );

    // Fill the remaining slots; beyond the limit connections are closed at once, not
    // queued. (Open one at a time: the scrape's own slot is freed a moment after its answer.)
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..=MAX_CONNECTIONS {
        let mut c = TcpStream::connect(addr).unwrap();
        if closed_by_server(&mut c) {
            refused = true;
            break;
        }
        held.push(c);
    }
    assert!(refused, "no connection refused beyond the limit");
    // silent + slow + held: never more than the limit.
    let open = MAX_CONNECTIONS - 1 + held.len();
    assert!(open <= MAX_CONNECTIONS, "{open} connections held at once");
    // The silent ones are cut off by the request timeout (5 s), freeing their slots.
    let mut s = silent.into_iter().next().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    assert!(r.is_ok() && out.is_empty(), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(7),
        "silent client held {:?}",
        t.elapsed()
    );
    drop(held);
    drop(slow);
    // Once they are gone, scrapes go through.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
            let mut out = Vec::new();
            if s.read_to_end(&mut out).is_ok() && out.starts_with(b"HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn many_concurrent_scrapes_all_succeed() {
    let (addr, m) = server();
    let _d = common::exercised(&m, "lun0", "file");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let (code, _, body) = http_get(addr, "/metrics");
                    assert_eq!(code, 200);
                    assert!(body.contains("tcmu_warden_commands_total"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
