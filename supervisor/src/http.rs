//! A minimal HTTP/1.1 server for `GET /metrics`.
//!
//! Hand-written over `std::net` (no async runtime, no HTTP crate): one named accept thread,
//! one short-lived thread per connection, at most [`MAX_CONNECTIONS`] at once (more are
//! closed at once). Each request must arrive whole, headers within [`MAX_REQUEST_BYTES`],
//! within [`REQUEST_TIMEOUT`]; the whole response must be taken within [`REQUEST_TIMEOUT`]
//! (one deadline for all its writes, not a timeout per write). Every
//! response closes the connection. So a slow, silent or garbage client costs one thread for
//! at most a few seconds, and never blocks the device threads (which only touch atomics) or
//! other scrapes.
//!
//! Routes: `GET`/`HEAD /metrics` → 200 with the text exposition format
//! (`text/plain; version=0.0.4; charset=utf-8`); any other path → 404; any other method →
//! 405; a malformed request → 400; headers too large → 431.

use crate::metrics::Metrics;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The default listen address: loopback only, port 9559.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9559";
/// Largest request head (request line and headers) accepted.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request, and again to take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serve `GET /metrics` on `addr` in a background thread named `metrics-http`.
///
/// Returns the bound address (bind port 0 to get a free one) and the accept thread, which
/// runs for the life of the process.
///
/// # Errors
/// When `addr` cannot be bound, or the thread cannot be started.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let handle = thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || accept_loop(&listener, &metrics))?;
    Ok((local, handle))
}

fn accept_loop(listener: &TcpListener, metrics: &Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE, ENOBUFS, ECONNABORTED...: back off instead of spinning.
                if e.kind() != io::ErrorKind::Interrupted {
                    thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let guard = Active(Arc::clone(&active));
        let m = Arc::clone(metrics);
        let spawned = thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                let _guard = guard;
                let _ = handle(stream, &m);
            });
        // On failure the closure (stream and guard) is dropped: connection closed, slot freed.
        drop(spawned);
    }
}

/// Frees a connection slot when dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request head could not be read.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

/// Read up to the end of the headers, within the deadline and the size limit.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf[from..]) {
            buf.truncate(from + end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(Head::TooLarge);
        }
    }
}

/// Offset just past the blank line ending the head (`\r\n\r\n`, or `\n\n` from lax clients).
fn find_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

fn handle(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let _ = stream.set_nodelay(true);
    let head = match read_head(&mut stream, deadline) {
        Ok(Head::Complete(h)) => h,
        Ok(Head::TooLarge) => {
            return respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "",
                b"",
                false,
            )
        }
        Ok(Head::Closed) | Err(_) => return Ok(()),
    };
    let line = head.split(|&c| c == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version), None) = (method, target, version, parts.next())
    else {
        return respond(
            &mut stream,
            400,
            "Bad Request",
            "",
            b"bad request line\n",
            false,
        );
    };
    if !version.starts_with("HTTP/1.") {
        return respond(
            &mut stream,
            400,
            "Bad Request",
            "",
            b"HTTP/1.x only\n",
            false,
        );
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return respond(
                &mut stream,
                405,
                "Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                b"GET or HEAD only\n",
                false,
            )
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path != "/metrics" {
        return respond(
            &mut stream,
            404,
            "Not Found",
            "",
            b"not found: try /metrics\n",
            head_only,
        );
    }
    let body = metrics.encode();
    let extra = format!("Content-Type: {CONTENT_TYPE}\r\n");
    respond(&mut stream, 200, "OK", &extra, body.as_bytes(), head_only)
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let extra = if extra.is_empty() && code != 200 {
        "Content-Type: text/plain; charset=utf-8\r\n"
    } else {
        extra
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The whole response within one deadline: a write timeout alone bounds each system
    // call, so a reader taking a few bytes at a time would hold the connection for ever.
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    write_all_by(stream, head.as_bytes(), deadline)?;
    if !head_only {
        write_all_by(stream, body, deadline)?;
    }
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// Write all of `buf` before `deadline`, or fail with `TimedOut` (the caller then drops the
/// connection).
fn write_all_by(stream: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
