//! `tcmu-warden status` and `diagnose`: the running daemon answers on a Unix socket (root
//! only) with what each device is doing, in words an operator understands.
//!
//! The socket is served on the main loop without ever blocking it: clients are read and
//! written non-blocking as the loop passes; each has [`CLIENT_DEADLINE`] for its whole request
//! and response and is dropped after that; at most [`MAX_CLIENTS`] at once. `diagnose` asks
//! each backend for its own facts off the loop ([`super::facts`]) and waits for them at most
//! [`FACTS_WAIT`], then answers with the last known facts.

use super::facts::BackendFacts;
use super::open::Served;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/tcmu-warden/control.sock";
/// Time a client has for its whole request and for taking the whole answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// Clients served at once; more are closed without an answer.
pub const MAX_CLIENTS: usize = 16;
/// Longest `diagnose` waits for the backends' own facts before answering with the last known.
pub const FACTS_WAIT: Duration = Duration::from_millis(500);
/// Longest request line.
const MAX_REQUEST: usize = 256;

/// Bind the control socket (mode 0600; a stale socket file is replaced).
///
/// # Errors
/// When the directory or the socket cannot be made.
pub fn bind(path: &Path) -> std::io::Result<Control> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(Control {
        listener: l,
        clients: Vec::new(),
        facts: HashMap::new(),
    })
}

/// The control socket and its clients in progress.
pub struct Control {
    listener: UnixListener,
    clients: Vec<Client>,
    /// Backend facts by device name.
    facts: HashMap<String, Arc<BackendFacts>>,
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    state: State,
    /// Dropped after this.
    by: Instant,
}

enum State {
    Reading,
    /// `diagnose`: waiting for the backends' facts until then.
    Facts(Instant),
    Writing(Vec<u8>, usize),
    Done,
}

impl Control {
    /// Descriptors to poll: the socket and the clients still sending their request.
    #[must_use]
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![self.listener.as_fd()];
        v.extend(
            self.clients
                .iter()
                .filter(|c| matches!(c.state, State::Reading))
                .map(|c| c.stream.as_fd()),
        );
        v
    }

    /// How soon the main loop must come back for clients waiting on facts or on a full
    /// socket (None: only when a descriptor is readable).
    #[must_use]
    pub fn wait_hint(&self) -> Option<Duration> {
        let now = Instant::now();
        self.clients
            .iter()
            .map(|c| match c.state {
                State::Facts(_) | State::Writing(..) => Duration::from_millis(20),
                // Come back to drop it at its deadline.
                _ => c.by.saturating_duration_since(now),
            })
            .min()
    }

    /// Clients in progress.
    #[must_use]
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Accept, read, answer and write whatever can be done now without waiting.
    pub fn serve(&mut self, devices: &[&Served], started: SystemTime) {
        let now = Instant::now();
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                tracing::debug!("control socket: too many clients, one refused");
                continue;
            }
            self.clients.push(Client {
                stream,
                input: Vec::new(),
                state: State::Reading,
                by: now + CLIENT_DEADLINE,
            });
        }
        self.facts
            .retain(|name, _| devices.iter().any(|d| &d.name == name));
        let mut clients = std::mem::take(&mut self.clients);
        for c in &mut clients {
            self.step(c, devices, started);
        }
        let now = Instant::now();
        clients.retain(|c| {
            let keep = !matches!(c.state, State::Done) && now < c.by;
            if !keep && !matches!(c.state, State::Done) {
                tracing::debug!("control client dropped: no whole request and answer within {CLIENT_DEADLINE:?}");
            }
            keep
        });
        self.clients = clients;
    }

    fn step(&mut self, c: &mut Client, devices: &[&Served], started: SystemTime) {
        if matches!(c.state, State::Reading) {
            let mut buf = [0u8; MAX_REQUEST];
            let eof = loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => {
                        c.input.extend_from_slice(&buf[..n]);
                        if c.input.len() >= MAX_REQUEST || c.input.contains(&b'\n') {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => {
                        c.state = State::Done;
                        return;
                    }
                }
            };
            if !(eof || c.input.len() >= MAX_REQUEST || c.input.contains(&b'\n')) {
                return;
            }
            let line = String::from_utf8_lossy(&c.input);
            let line = line
                .split('\n')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            c.state = match line.as_str() {
                "status" => State::Writing(self.report(devices, started, false), 0),
                "diagnose" => {
                    for d in devices {
                        self.facts_of(d).refresh(d.handle.link());
                    }
                    State::Facts(Instant::now() + FACTS_WAIT)
                }
                other => State::Writing(
                    format!("unknown request {other:?}: expected status or diagnose\n")
                        .into_bytes(),
                    0,
                ),
            };
        }
        if let State::Facts(until) = c.state {
            let settled = devices.iter().all(|d| self.facts_of(d).settled());
            if settled || Instant::now() >= until {
                c.state = State::Writing(self.report(devices, started, true), 0);
            }
        }
        if let State::Writing(out, pos) = &mut c.state {
            while *pos < out.len() {
                match c.stream.write(&out[*pos..]) {
                    Ok(0) => break,
                    Ok(n) => *pos += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let done = *pos >= out.len();
            if done {
                c.state = State::Done;
            }
        }
    }

    fn facts_of(&mut self, d: &Served) -> Arc<BackendFacts> {
        Arc::clone(self.facts.entry(d.name.clone()).or_default())
    }

    fn report(&mut self, devices: &[&Served], started: SystemTime, full: bool) -> Vec<u8> {
        let views: Vec<DeviceView> = devices
            .iter()
            .map(|s| {
                let notes = if full {
                    self.facts_of(s).notes()
                } else {
                    Vec::new()
                };
                DeviceView::of(s, notes)
            })
            .collect();
        let uptime = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        let mut text = report(&views, uptime, full);
        let dropped = crate::logging::dropped_lines();
        if full && dropped > 0 {
            use std::fmt::Write as _;
            let _ = writeln!(
                text,
                "\nlog: {dropped} line(s) dropped because the log output did not keep up (logging never blocks the device threads)"
            );
        }
        text.into_bytes()
    }
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
    /// Who holds the store's exclusive lock and the path's ALUA state, in words (None: the
    /// backend has no such lock).
    pub owner: Option<String>,
}

/// The `owner` line: the exclusive lock's holder and, with ALUA, the local group's state.
#[must_use]
pub fn owner_words(holder: crate::backend::LockHolder, alua_state: Option<u8>) -> Option<String> {
    use crate::backend::LockHolder;
    let who = match holder {
        LockHolder::Unknown => return None,
        LockHolder::This => "this daemon holds the exclusive lock",
        LockHolder::Other => "another client holds the exclusive lock",
        LockHolder::Nobody => "nobody holds the exclusive lock",
    };
    Some(match alua_state {
        Some(st) => format!("{who}; this path is {}", tcmu_scsi::alua::state_name(st)),
        None => who.to_string(),
    })
}

impl DeviceView {
    /// The view of `s`; `backend_notes` are the backend's own facts (asked off the main
    /// loop, see `super::facts`). No lock is held longer than a copy.
    fn of(s: &Served, backend_notes: Vec<String>) -> DeviceView {
        let st = &s.handle.stats;
        let link = s.handle.link();
        let size = {
            let lun = link.lun.read();
            lun.num_blocks * u64::from(lun.block_size)
        };
        let recent = st
            .recent_outliers
            .snapshot()
            .iter()
            .rev()
            .take(5)
            .map(|o| {
                let ago = SystemTime::now().duration_since(o.at).unwrap_or_default();
                format!(
                    "{} ago: {} at LBA {}, {} bytes: {} = handler {} + parked {} + queued {} + backend {} + publish {}, status {:#04x}",
                    human(ago),
                    opname(o.opcode),
                    o.lba,
                    o.bytes,
                    human(o.total()),
                    human(o.handler),
                    human(o.parked),
                    human(o.queued),
                    human(o.backend),
                    human(o.publish),
                    o.status
                )
            })
            .collect();
        let alua_state = link
            .lun
            .read()
            .alua
            .as_ref()
            .and_then(tcmu_scsi::alua::Alua::local_state);
        let owner = owner_words(link.backend().lock_holder(), alua_state);
        DeviceView {
            owner,
            name: s.name.clone(),
            backend: link.backend().describe(),
            uio: s.uio.display().to_string(),
            size,
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
            backend_notes,
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
        if let Some(o) = &d.owner {
            let _ = writeln!(s, "  owner: {o}");
        }
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
    use crate::backend::ram::RamBackend;
    use crate::backend::{Backend, Io};
    use crate::device::{self, DeviceConfig};
    use tcmu_ring::emu::{EmuConfig, KernelEmu};

    /// A RAM backend whose `diagnose` waits until `release` is set (an RBD backend asking
    /// OSDs that do not answer).
    struct SlowFacts {
        ram: RamBackend,
        release: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Backend for SlowFacts {
        fn describe(&self) -> String {
            "slow-facts".into()
        }
        fn size(&self) -> u64 {
            self.ram.size()
        }
        fn submit(&self, io: Io) {
            self.ram.submit(io);
        }
        fn diagnose(&self) -> Vec<String> {
            while !self.release.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            vec!["lock owner: me".into()]
        }
    }

    fn served(backend: Arc<dyn Backend>) -> (Served, KernelEmu) {
        let (emu, map, bell) = KernelEmu::new(EmuConfig::default()).unwrap();
        let ring = tcmu_ring::Ring::new(Arc::new(map)).unwrap();
        let lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "control");
        let handle = device::spawn(
            "user_0/lun0",
            ring,
            Box::new(bell),
            backend,
            lun,
            &DeviceConfig::default(),
        )
        .unwrap();
        let s = Served {
            name: "user_0/lun0".into(),
            dir: "/nonexistent".into(),
            subtype: "file".into(),
            uio: "/dev/uio0".into(),
            tiers: String::new(),
            handle,
            options: Vec::new(),
            cmd_time_out: None,
            backend_timeout: None,
            fault: None,
            opened: Default::default(),
        };
        (s, emu)
    }

    /// Serve passes (each timed) until `c` has its whole answer; the answer and the longest
    /// pass.
    fn ask_through(
        ctl: &mut Control,
        devices: &[&Served],
        c: &mut UnixStream,
        request: &[u8],
    ) -> (String, Duration) {
        c.set_nonblocking(true).unwrap();
        c.write_all(request).unwrap();
        let (mut out, mut longest) = (Vec::new(), Duration::ZERO);
        let t = Instant::now();
        loop {
            let p = Instant::now();
            ctl.serve(devices, SystemTime::now());
            longest = longest.max(p.elapsed());
            let mut b = [0u8; 4096];
            match c.read(&mut b) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no answer");
            std::thread::sleep(Duration::from_millis(5));
        }
        (String::from_utf8(out).unwrap(), longest)
    }

    #[test]
    fn a_slow_client_neither_stalls_the_loop_nor_delays_others_and_is_dropped_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let mut ctl = bind(&path).unwrap();
        // Sends part of its line, then nothing.
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.write_all(b"sta").unwrap();
        let mut fast = UnixStream::connect(&path).unwrap();
        let (text, longest) = ask_through(&mut ctl, &[], &mut fast, b"status\n");
        assert!(text.contains("0 device(s)"), "{text}");
        assert!(
            longest < Duration::from_millis(100),
            "a pass took {longest:?}"
        );
        assert_eq!(ctl.clients(), 1, "the slow client is still waited for");
        let t = Instant::now();
        slow.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        loop {
            ctl.serve(&[], SystemTime::now());
            let mut b = [0u8; 16];
            if let Ok(0) = slow.read(&mut b) {
                break;
            }
            assert!(
                t.elapsed() < CLIENT_DEADLINE + Duration::from_secs(1),
                "not dropped"
            );
        }
        assert_eq!(ctl.clients(), 0);
    }

    #[test]
    fn diagnose_answers_from_the_last_known_facts_while_the_backend_does_not_answer() {
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let backend = Arc::new(SlowFacts {
            ram: RamBackend::new(1 << 20),
            release: Arc::clone(&release),
        });
        let (s, _emu) = served(backend);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let mut ctl = bind(&path).unwrap();
        let t = Instant::now();
        let mut c = UnixStream::connect(&path).unwrap();
        let (text, longest) = ask_through(&mut ctl, &[&s], &mut c, b"diagnose\n");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "diagnose took {took:?}");
        assert!(
            longest < Duration::from_millis(100),
            "a pass took {longest:?}"
        );
        assert!(
            text.contains("backend not answering: its diagnose query has waited"),
            "{text}"
        );
        // status never asks the backend.
        let mut c = UnixStream::connect(&path).unwrap();
        let (text, _) = ask_through(&mut ctl, &[&s], &mut c, b"status\n");
        assert!(text.contains("verdict"), "{text}");
        // Once it answers, its facts are reported.
        release.store(true, Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let mut c = UnixStream::connect(&path).unwrap();
        let (text, _) = ask_through(&mut ctl, &[&s], &mut c, b"diagnose\n");
        assert!(text.contains("backend: lock owner: me"), "{text}");
        assert!(!text.contains("not answering"), "{text}");
    }

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
    fn status_names_the_lock_owner_and_the_paths_alua_state() {
        use crate::backend::LockHolder;
        let mut d = dev();
        d.owner = owner_words(LockHolder::This, Some(0));
        let r = report(&[d], Duration::from_secs(5), false);
        assert!(
            r.contains(
                "  owner: this daemon holds the exclusive lock; this path is Active/Optimized"
            ),
            "{r}"
        );
        assert_eq!(
            owner_words(LockHolder::Other, Some(1)).as_deref(),
            Some("another client holds the exclusive lock; this path is Active/NonOptimized")
        );
        assert_eq!(owner_words(LockHolder::Unknown, Some(0)), None);
        assert!(!report(&[dev()], Duration::from_secs(5), false).contains("owner:"));
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
