//! A `/metrics` client that takes the response a few bytes at a time. Every write of the
//! server then succeeds within the write timeout, so only a deadline for the whole response
//! frees its connection slot (one of `MAX_CONNECTIONS`). Alone in its test binary: it counts
//! the server's connection threads.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tcmu_warden_supervisor::http;
use tcmu_warden_supervisor::metrics::Metrics;

/// Threads of this process serving a metrics connection.
fn connection_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "metrics-conn")
        })
        .count()
}

#[test]
fn a_slow_reader_loses_its_slot_when_the_whole_response_overruns_its_deadline() {
    let m = Metrics::new();
    let (addr, _h) = http::serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    // A body far larger than the socket buffers can hold (several MB).
    let _devs: Vec<_> = (0..200)
        .map(|i| common::exercised(&m, &format!("lun{i}"), "file"))
        .collect();
    let body_len = m.encode().len();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let t = Instant::now();
    let mut got = 0usize;
    let mut b = [0u8; 1024];
    let mut freed = None;
    // About 5 KiB/s: the whole body would take half an hour.
    while t.elapsed() < http::REQUEST_TIMEOUT + Duration::from_secs(10) {
        match c.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if got > 0 && connection_threads() == 0 {
            freed = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("slow reader: its slot freed after {freed:?}; it had read {got} of {body_len} bytes");
    assert!(got < body_len, "the slow reader got the whole body");
    let freed = freed.expect("the slow reader still holds its connection slot");
    assert!(
        freed < http::REQUEST_TIMEOUT + Duration::from_secs(5),
        "freed late: {freed:?}"
    );
}
