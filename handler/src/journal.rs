//! The journald output: each event sent to journald's native socket as a datagram, with its
//! level as `PRIORITY` and its fields as journal fields (`device` becomes `DEVICE`), written
//! by a thread of its own from a bounded queue, so a stalled journald never blocks the thread
//! that logs (a full socket queue blocks its sender). Past [`crate::logging::BUFFER_LINES`]
//! queued entries, new ones are dropped and counted ([`dropped`], part of
//! `tcmu_warden_log_lines_dropped_total`).
//!
//! The datagram format is journald's native protocol: `KEY=value\n`, or, for a value holding
//! a newline, `KEY\n`, its length as 64-bit little endian, the value and `\n`.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// journald's socket for the native protocol.
pub const SOCKET: &str = "/run/systemd/journal/socket";

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Entries dropped so far because journald did not keep up (or refused one).
#[must_use]
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A `tracing` layer that sends events to journald without waiting for it.
pub struct JournalLayer {
    tx: Sender<Vec<u8>>,
    identifier: String,
}

impl JournalLayer {
    /// A layer sending to `socket` (journald's: [`SOCKET`]) as `identifier`, queueing at most
    /// `queue` entries.
    ///
    /// # Errors
    /// When the socket cannot be created or the writer thread started.
    pub fn new(socket: &Path, identifier: &str, queue: usize) -> std::io::Result<JournalLayer> {
        let sock = UnixDatagram::unbound()?;
        // journald discards an empty datagram: this checks that it is there.
        sock.send_to(&[], socket)?;
        let (tx, rx) = bounded(queue.max(1));
        let path = socket.to_path_buf();
        std::thread::Builder::new()
            .name("tcmu-journal".into())
            .spawn(move || writer(&sock, &path, &rx))?;
        Ok(JournalLayer {
            tx,
            identifier: identifier.to_string(),
        })
    }
}

fn writer(sock: &UnixDatagram, path: &PathBuf, rx: &Receiver<Vec<u8>>) {
    for entry in rx {
        if sock.send_to(&entry, path).is_err() {
            // Too large for a datagram, or journald gone: this entry is lost.
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Append one field in the native protocol.
fn put(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A journal field name: upper case letters, digits and `_`, not starting with `_` (those are
/// journald's own) or a digit.
fn field_name(name: &str) -> String {
    let mut n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    n = n.trim_start_matches('_').to_string();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert_str(0, "F_");
    }
    n
}

/// syslog's levels: error 3, warning 4, info 6, debug (and trace) 7.
fn priority(level: Level) -> &'static [u8] {
    match level {
        Level::ERROR => b"3",
        Level::WARN => b"4",
        Level::INFO => b"6",
        Level::DEBUG | Level::TRACE => b"7",
    }
}

struct Fields<'a>(&'a mut Vec<u8>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let key = if field.name() == "message" {
            "MESSAGE".to_string()
        } else {
            field_name(field.name())
        };
        put(self.0, &key, value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.record_str(field, &s);
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut buf = Vec::with_capacity(256);
        put(&mut buf, "PRIORITY", priority(*meta.level()));
        put(&mut buf, "SYSLOG_IDENTIFIER", self.identifier.as_bytes());
        put(&mut buf, "TARGET", meta.target().as_bytes());
        if let Some(f) = meta.file() {
            put(&mut buf, "CODE_FILE", f.as_bytes());
        }
        if let Some(l) = meta.line() {
            put(&mut buf, "CODE_LINE", l.to_string().as_bytes());
        }
        event.record(&mut Fields(&mut buf));
        match self.tx.try_send(buf) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn entries_carry_priority_message_and_fields_in_the_native_format() {
        let mut b = Vec::new();
        put(&mut b, "MESSAGE", b"one line");
        put(&mut b, "X", b"a\nb");
        let mut want = b"MESSAGE=one line\nX\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(b, want);
        assert_eq!(field_name("cmd_id"), "CMD_ID");
        assert_eq!(field_name("_x.y"), "X_Y");
        assert_eq!(field_name("9a"), "F_9A");
    }

    /// journald stops reading (its socket queue fills, which blocks a sender): logging goes
    /// on at full speed, entries beyond the queue are dropped and counted. With the send made
    /// on the logging thread (tracing-journald's layer), this blocks at the socket's queue.
    #[test]
    fn a_stalled_journald_never_blocks_the_thread_that_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::new(&path, "t", 64).unwrap();
        let sub = tracing_subscriber::registry().with(layer);
        let before = dropped();
        let t = Instant::now();
        tracing::subscriber::with_default(sub, || {
            for i in 0..5000 {
                tracing::info!(device = "user_0/lun0", i, "line {i}");
            }
        });
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "logging waited: {took:?}");
        assert!(dropped() > before, "entries past the queue are counted");
        // What arrived is in the native format.
        let mut buf = vec![0u8; 4096];
        server.set_nonblocking(true).unwrap();
        // The first datagram is the empty probe; the writer thread may not have sent the
        // next one yet on a busy host: wait for it, boundedly.
        let mut n = 0;
        let by = Instant::now() + Duration::from_secs(10);
        while n == 0 {
            match server.recv(&mut buf) {
                Ok(got) => n = got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < by => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("no entry reached the socket: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("PRIORITY=6\n"), "{text}");
        assert!(text.contains("DEVICE=user_0/lun0\n"), "{text}");
        assert!(text.contains("MESSAGE=line "), "{text}");
    }
}
