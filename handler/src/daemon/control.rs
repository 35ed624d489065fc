//! `tcmu-warden status` and `diagnose`: the running daemon answers on a Unix socket (root
//! only) with what each device is doing, in words an operator understands.

use super::open::Served;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/tcmu-warden/control.sock";

/// Bind the control socket (mode 0600; a stale socket file is replaced).
///
/// # Errors
/// When the directory or the socket cannot be made.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Answer pending clients: one request line (`status` or `diagnose`), one report.
pub fn serve_pending(l: &UnixListener, devices: &[&Served], started: SystemTime) {
    while let Ok((stream, _)) = l.accept() {
        if let Err(e) = answer(stream, devices, started) {
            tracing::debug!("control client: {e}");
        }
    }
}

fn answer(stream: UnixStream, devices: &[&Served], started: SystemTime) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    // A local client that does not send its line promptly must not stall the daemon.
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(stream.try_clone()?, 256)).read_line(&mut line)?;
    let views: Vec<DeviceView> = devices.iter().map(|s| DeviceView::of(s)).collect();
    let uptime = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    let text = match line.trim() {
        "status" => report(&views, uptime, false),
        "diagnose" => report(&views, uptime, true),
        other => format!("unknown request {other:?}: expected status or diagnose\n"),
    };
    let mut stream = stream;
    stream.write_all(text.as_bytes())
}

/// Ask the daemon at `path` and return its answer.
///
/// # Errors
/// When the daemon cannot be reached.
pub fn ask(path: &Path, request: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out)?;
    Ok(out)
}

/// What the report needs of one device (a copy, so the wording is testable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceView {
    /// `user_<hba>/<name>`.
    pub name: String,
    /// Backend description.
    pub backend: String,
    /// uio device.
    pub uio: String,
    /// Size in bytes.
    pub size: u64,
    /// Tiers sentence.
    pub tiers: String,
    /// Counters.
    pub commands: u64,
    /// Commands with a status other than GOOD.
    pub errors: u64,
    /// Completed at the deadline.
    pub expired: u64,
    /// Still stuck a deadline later.
    pub stuck: u64,
    /// Slower than the outlier threshold.
    pub outliers: u64,
    /// TMRs seen.
    pub tmrs: u64,
    /// In flight now.
    pub in_flight: u64,
    /// Oldest command away, ms (0: none).
    pub oldest_ms: u64,
    /// Its opcode.
    pub oldest_opcode: u8,
    /// Its LBA.
    pub oldest_lba: u64,
    /// Handler deadline, ms.
    pub deadline_ms: u64,
    /// Ring use and sizes.
    pub ring_used: u64,
    /// Command ring size.
    pub ring_size: u64,
    /// Data area in use.
    pub data_used: u64,
    /// Data area size.
    pub data_size: u64,
    /// The ring is corrupt.
    pub broken: bool,
    /// Latest outliers, one line each.
    pub recent: Vec<String>,
    /// Backend health: `healthy`, `degraded`, `lost`, `recovering` (empty: not monitored).
    pub health: String,
    /// The last health transition in words, with how long ago.
    pub health_note: Option<String>,
    /// Commands failed fast while the backend was lost.
    pub failed_fast: u64,
    /// Reopen attempts.
    pub reopens: u64,
    /// What the backend itself reports (lock owner, stale watchers, ...).
    pub backend_notes: Vec<String>,
}

impl DeviceView {
    fn of(s: &Served) -> DeviceView {
        let st = &s.handle.stats;
        let link = s.handle.link();
        let lun = link.lun.read();
        let recent = st
            .recent_outliers
            .snapshot()
            .iter()
            .rev()
            .take(5)
            .map(|o| {
                let ago = SystemTime::now().duration_since(o.at).unwrap_or_default();
                format!(
                    "{} ago: {} at LBA {}, {} bytes: {} = handler {} + backend {} + publish {}, status {:#04x}",
                    human(ago),
                    opname(o.opcode),
                    o.lba,
                    o.bytes,
                    human(o.total()),
                    human(o.handler),
                    human(o.backend),
                    human(o.publish),
                    o.status
                )
            })
            .collect();
        DeviceView {
            name: s.name.clone(),
            backend: link.backend().describe(),
            uio: s.uio.display().to_string(),
            size: lun.num_blocks * u64::from(lun.block_size),
            tiers: s.tiers.clone(),
            commands: st.commands.load(Relaxed),
            errors: st.errors.load(Relaxed),
            expired: st.deadline_expired(),
            stuck: st.stuck(),
            outliers: st.outliers(),
            tmrs: st.tmrs(),
            in_flight: st.in_flight(),
            oldest_ms: st.oldest_ms.load(Relaxed),
            oldest_opcode: st.oldest_opcode.load(Relaxed),
            oldest_lba: st.oldest_lba.load(Relaxed),
            deadline_ms: st.deadline_ms.load(Relaxed),
            ring_used: st.ring_used(),
            ring_size: st.ring_size(),
            data_used: st.data_used(),
            data_size: st.data_size(),
            broken: st.broken.load(Relaxed),
            recent,
            health: link.health.state().label().to_string(),
            health_note: link.health.last_transition().map(|(at, words)| {
                let ago = SystemTime::now().duration_since(at).unwrap_or_default();
                format!("{} ago: {words}", human(ago))
            }),
            failed_fast: link.health.failed_fast.load(Relaxed),
            reopens: link.health.reopens.load(Relaxed),
            backend_notes: link.backend().diagnose(),
        }
    }

    /// The verdict in one sentence.
    #[must_use]
    pub fn verdict(&self) -> String {
        let deadline = Duration::from_millis(self.deadline_ms);
        let oldest = Duration::from_millis(self.oldest_ms);
        if self.broken {
            return "RING BROKEN: the ring was found corrupt and is no longer read; restart the daemon (it resets the ring)".into();
        }
        if self.health == "lost" {
            return format!(
                "BACKEND LOST: {}; {} command(s) failed fast with a retryable status so far, {} reopen attempt(s)",
                self.health_note.as_deref().unwrap_or("it does not answer"),
                self.failed_fast,
                self.reopens
            );
        }
        // The verdict is about now: the oldest command in flight against the deadline. The
        // counters are history.
        if self.in_flight > 0 && self.deadline_ms > 0 && oldest >= deadline {
            return format!(
                "BACKEND NOT ANSWERING: the oldest command ({} at LBA {}) has waited {} (deadline {}); {} command(s) were completed at their deadline with a retryable status so initiators retry",
                opname(self.oldest_opcode), self.oldest_lba, human(oldest), human(deadline), self.expired
            );
        }
        let unsettled = matches!(self.health.as_str(), "degraded" | "recovering");
        let health = || {
            format!(
                "backend {}: {}",
                self.health.to_uppercase(),
                self.health_note.as_deref().unwrap_or("see the log")
            )
        };
        if self.expired > 0 {
            let mut v = format!(
                "answering again after a stall: {} command(s) passed the {} deadline and were completed with a retryable status ({} stayed stuck a whole deadline longer); nothing is waiting on the backend now",
                self.expired,
                human(deadline),
                self.stuck
            );
            if unsettled {
                v.push_str("; ");
                v.push_str(&health());
            }
            return v;
        }
        if unsettled {
            return health();
        }
        if self.outliers > 0 {
            return format!(
                "healthy, with {} slow command(s) (see the outliers)",
                self.outliers
            );
        }
        "healthy".into()
    }
}

/// The report for all devices.
#[must_use]
pub fn report(devices: &[DeviceView], uptime: Duration, full: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tcmu-warden {}, pid {}, up {}, {} device(s)",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        human(uptime),
        devices.len()
    );
    for d in devices {
        let _ = writeln!(
            s,
            "\n{}  {} ({}, {})",
            d.name,
            d.backend,
            gib(d.size),
            d.uio
        );
        let _ = writeln!(s, "  verdict: {}", d.verdict());
        if !full {
            continue;
        }
        let oldest = if d.in_flight == 0 {
            "none in flight".to_string()
        } else if d.oldest_ms == 0 {
            format!("{} in flight", d.in_flight)
        } else {
            format!(
                "{} in flight, the oldest {} old ({} at LBA {})",
                d.in_flight,
                human(Duration::from_millis(d.oldest_ms)),
                opname(d.oldest_opcode),
                d.oldest_lba
            )
        };
        let _ = writeln!(s, "  commands: {oldest}");
        let _ = writeln!(s, "  timeout tiers: {}", d.tiers);
        if !d.health.is_empty() {
            let _ = writeln!(
                s,
                "  backend health: {}{}; {} reopen attempt(s), {} command(s) failed fast",
                d.health,
                d.health_note
                    .as_deref()
                    .map(|n| format!(" (last change {n})"))
                    .unwrap_or_default(),
                d.reopens,
                d.failed_fast
            );
        }
        for n in &d.backend_notes {
            let _ = writeln!(s, "  backend: {n}");
        }
        let _ = writeln!(
            s,
            "  ring: {} of the {} command ring and {} of the {} data area in use",
            kib(d.ring_used),
            kib(d.ring_size),
            kib(d.data_used),
            kib(d.data_size)
        );
        let _ = writeln!(
            s,
            "  since start: {} commands, {} not GOOD, {} completed at the deadline, {} stuck, {} outliers, {} TMRs",
            d.commands, d.errors, d.expired, d.stuck, d.outliers, d.tmrs
        );
        if !d.recent.is_empty() {
            let _ = writeln!(s, "  latest outliers:");
            for r in &d.recent {
                let _ = writeln!(s, "    {r}");
            }
        }
    }
    s
}

fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 120_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn kib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30))
}

fn opname(op: u8) -> &'static str {
    match op {
        0x28 => "READ(10)",
        0x88 => "READ(16)",
        0x08 => "READ(6)",
        0xA8 => "READ(12)",
        0x2A => "WRITE(10)",
        0x8A => "WRITE(16)",
        0x0A => "WRITE(6)",
        0xAA => "WRITE(12)",
        0x35 | 0x91 => "SYNCHRONIZE CACHE",
        0x42 => "UNMAP",
        0x41 | 0x93 => "WRITE SAME",
        0x89 => "COMPARE AND WRITE",
        0x2F | 0x8F => "VERIFY",
        0x2E | 0x8E => "WRITE AND VERIFY",
        _ => "command",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceView {
        DeviceView {
            name: "user_0/lun0".into(),
            backend: "file:/var/lib/lun0.img".into(),
            uio: "/dev/uio0".into(),
            size: 1 << 30,
            tiers: "backend 20 s, cmd_time_out 30 s: sound".into(),
            commands: 1000,
            deadline_ms: 20_000,
            ring_size: 8 << 20,
            data_size: 16 << 20,
            ..DeviceView::default()
        }
    }

    #[test]
    fn a_hung_backend_is_explained_in_plain_words() {
        let mut d = dev();
        d.in_flight = 12;
        d.oldest_ms = 45_200;
        d.oldest_opcode = 0x8A;
        d.oldest_lba = 2048;
        d.expired = 12;
        d.stuck = 3;
        let r = report(&[d], Duration::from_secs(200), true);
        assert!(r.contains("BACKEND NOT ANSWERING"), "{r}");
        assert!(
            r.contains("WRITE(16) at LBA 2048")
                && r.contains("45.2 s")
                && r.contains("deadline 20.0 s"),
            "{r}"
        );
        assert!(r.contains("12 in flight, the oldest 45.2 s old"), "{r}");
        assert!(
            r.contains("12 command(s) were completed at their deadline"),
            "{r}"
        );
        // Once nothing waits any more, the verdict says so (the counters stay as history).
        let mut after = dev();
        after.expired = 12;
        after.stuck = 3;
        let v = after.verdict();
        assert!(
            v.starts_with("answering again after a stall: 12 command(s)")
                && v.contains("3 stayed stuck"),
            "{v}"
        );
    }

    #[test]
    fn a_lost_backend_is_explained_with_what_the_handler_does_about_it() {
        let mut d = dev();
        d.health = "lost".into();
        d.health_note = Some("4.0 s ago: lost (was degraded): a health ping did not answer within the backend timeout; new commands fail fast".into());
        d.failed_fast = 310;
        d.reopens = 3;
        d.backend_notes = vec!["possibly stale watcher 127.0.0.1:0/1234".into()];
        let r = report(&[d], Duration::from_secs(60), true);
        assert!(
            r.contains("verdict: BACKEND LOST: 4.0 s ago: lost (was degraded)"),
            "{r}"
        );
        assert!(
            r.contains(
                "310 command(s) failed fast with a retryable status so far, 3 reopen attempt(s)"
            ),
            "{r}"
        );
        assert!(
            r.contains("backend health: lost (last change 4.0 s ago"),
            "{r}"
        );
        assert!(
            r.contains("backend: possibly stale watcher 127.0.0.1:0/1234"),
            "{r}"
        );
        let mut d = dev();
        d.health = "recovering".into();
        d.health_note =
            Some("1.0 s ago: recovering (was lost): reopened, and the backend answers".into());
        assert!(
            d.verdict().starts_with("backend RECOVERING: 1.0 s ago"),
            "{}",
            d.verdict()
        );
    }

    #[test]
    fn healthy_recovered_and_broken_verdicts() {
        assert_eq!(dev().verdict(), "healthy");
        let mut d = dev();
        d.expired = 2;
        assert!(
            d.verdict()
                .starts_with("answering again after a stall: 2 command(s)"),
            "{}",
            d.verdict()
        );
        d.broken = true;
        assert!(d.verdict().starts_with("RING BROKEN"));
        let s = report(&[dev()], Duration::from_secs(5), false);
        assert!(
            s.contains("1 device(s)")
                && s.contains("verdict: healthy")
                && !s.contains("timeout tiers"),
            "{s}"
        );
    }
}
