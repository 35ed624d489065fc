//! The glfs backend against a real one-brick gluster volume, through the emulated ring.
//!
//! Ignored by default: `tests/gluster/run.sh` starts glusterd and the volume, exports
//! `GLUSTER_VOLUME`, `GLUSTER_HOST`, `GLUSTER_DIR` and `GLUSTER_PING_TIMEOUT`, and runs these
//! with `--include-ignored --test-threads=1` (the outage tests freeze or kill the one brick).
//! The health walk (`brick_frozen_walks_the_health_states_and_recovers_by_itself`) prints the
//! states the device went through and when.
#![cfg(feature = "glfs")]
// Test arithmetic on small constants: lossless casts are clearer than try_from here.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::glfs;
use tcmu_warden::backend::registry::OpenCtx;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::{DeviceConfig, FreeKeptBuf};
use tcmu_warden::testing::shadow::{seed_from_env, Mix, Shadow, Share};
use tcmu_warden::testing::{assert_good, cdb, lba_status_at, sense_of, Harness, LunSpec};
use tcmu_warden_supervisor::health::Policy;
use tcmu_warden_supervisor::metrics::BackendState;

const BS: usize = 512;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run tests/gluster/run.sh"))
}

fn volume() -> String {
    env("GLUSTER_VOLUME")
}

fn cfg(file: &str) -> String {
    format!("{}@{}/{file}", volume(), env("GLUSTER_HOST"))
}

fn volume_sh(args: &[&str]) -> String {
    let sh = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/gluster/volume.sh");
    let dir = env("GLUSTER_DIR");
    let out = std::process::Command::new(sh)
        .arg(args[0])
        .arg(&dir)
        .args(&args[1..])
        .output()
        .expect("run volume.sh");
    assert!(
        out.status.success(),
        "volume.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn brick_pid() -> i32 {
    volume_sh(&["brick-pid"]).parse().expect("a brick pid")
}

fn open(file: &str, size: u64, options: &[(&str, &str)]) -> Arc<dyn Backend> {
    let ctx = OpenCtx {
        options,
        ..OpenCtx::new("test/glfs", size)
    };
    glfs::open(&cfg(file), &ctx).unwrap_or_else(|e| panic!("open {file}: {e}"))
}

fn lun(backend: &dyn Backend, blocks: u64) -> tcmu_scsi::lun::LunInfo {
    LunSpec::blocks(blocks, BS as u32)
        .serial("glfs")
        .lun_info(backend)
}

/// A device on `backend` with the default ring and settings.
fn harness(backend: &Arc<dyn Backend>, lun: tcmu_scsi::lun::LunInfo) -> Harness {
    Harness::new(
        Arc::clone(backend),
        lun,
        EmuConfig::default(),
        &DeviceConfig::default(),
    )
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn integrity_against_a_shadow_model() {
    const BLOCKS: u64 = 8192;
    let seed = seed_from_env();
    let file = format!("integrity-{seed}.img");
    let backend = open(&file, BLOCKS * BS as u64, &[]);
    assert!(!backend.completes_inline(), "an asynchronous backend");
    let lun = lun(backend.as_ref(), BLOCKS);
    assert!(lun.caps.unmap && lun.caps.write_zeroes);
    let emu = EmuConfig {
        data_size: 4 << 20,
        scatter: true,
        ..EmuConfig::default()
    };
    let dev = DeviceConfig {
        max_inflight: 64,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(Arc::clone(&backend), lun, emu, &dev);
    let mix = Mix {
        batches: 120,
        max_depth: 24,
        read: Share::new(35, 64),
        write: Share::new(40, 64),
        unmap: Share::new(10, 64),
        write_same: Share::new(10, 64),
        caw: Share::NONE,
        sync: Share::new(5, 0),
        fua: 0.2,
        unmap_ranges: 1,
        write_same_data: false,
        write_same_unmap: true,
        ndob: false,
        boundary: None,
    };
    let mut shadow = Shadow::new(BLOCKS, BS);
    let counts = shadow.run_mix(&mut h, &mix, seed);
    shadow.assert_reads_back(&mut h, 256, &format!("seed {seed}"));
    h.stop();
    eprintln!("{counts:?}");
    assert!(counts.covers(&mix), "every kind exercised: {counts:?}");
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn tier_is_the_volumes_ping_timeout_and_connections_are_shared() {
    let ping: u64 = env("GLUSTER_PING_TIMEOUT").parse().unwrap();
    let a = open("share-a.img", 1 << 20, &[]);
    let before = glfs::volumes::open_connections();
    let b = open("share-b.img", 1 << 20, &[]);
    assert_eq!(
        glfs::volumes::open_connections(),
        before,
        "a second LUN on the same volume reuses the connection"
    );
    assert_eq!(
        a.op_timeout(),
        Some(Duration::from_secs(ping)),
        "read from the volfile"
    );
    assert_eq!(b.op_timeout(), a.op_timeout());
    let c = open("share-c.img", 1 << 20, &[("ping_timeout", "3")]);
    assert_eq!(
        c.op_timeout(),
        Some(Duration::from_secs(3)),
        "the cfgstring's option wins"
    );
    assert_eq!(
        glfs::volumes::open_connections(),
        before + 1,
        "another client option is another connection"
    );
    a.ping().unwrap();
    a.reopen().unwrap();
    assert!(
        a.diagnose()[0].contains("network.ping-timeout"),
        "{:?}",
        a.diagnose()
    );
    // Online resize grows the file.
    a.resize(2 << 20).unwrap();
    assert_eq!(a.size(), 2 << 20);
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn refusals_name_the_wrong_volume_host_or_path() {
    let host = env("GLUSTER_HOST");
    let vol = volume();
    let t = Duration::from_secs(10);
    let check = |c: &str, opts: &[(&str, &str)]| {
        let ctx = OpenCtx {
            options: opts,
            ..OpenCtx::new("check", 0)
        };
        glfs::check_config(c, &ctx, t)
    };
    check(&format!("{vol}@{host}/ok.img"), &[]).unwrap();
    let e = check(&format!("nosuchvol@{host}/a.img"), &[]).unwrap_err();
    assert!(
        e.contains("volume nosuchvol is not served by 127.0.0.1:24007"),
        "{e}"
    );
    let e = check(&format!("{vol}@127.0.0.1:24999/a.img"), &[]).unwrap_err();
    assert!(
        e.contains("no volfile server") && e.contains("127.0.0.1:24999"),
        "{e}"
    );
    let e = check(&format!("{vol}@no-such-host.invalid/a.img"), &[]).unwrap_err();
    assert!(
        e.contains("host no-such-host.invalid does not resolve"),
        "{e}"
    );
    let e = check(&format!("{vol}@{host}/nodir/a.img"), &[]).unwrap_err();
    assert!(
        e.contains(&format!("directory /nodir does not exist on volume {vol}")),
        "{e}"
    );
    let e = check(&format!("{vol}@{host}/a.img"), &[("ping_timout", "3")]).unwrap_err();
    assert!(e.contains("unknown option ping_timout=3"), "{e}");
    // A second server that answers makes a dead first one harmless.
    check(&format!("{vol}@127.0.0.1:24999,{host}/ok.img"), &[]).unwrap();
    // open refuses the same way.
    let ctx = OpenCtx::new("test/glfs", 1 << 20);
    let e = glfs::open(&format!("{vol}@{host}/nodir/a.img"), &ctx)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("directory /nodir does not exist"), "{e}");
}

/// What an outage test saw.
#[derive(Debug, Default)]
struct Seen {
    good: usize,
    retryable: usize,
    worst: Duration,
    first_good_after_restore: Option<Duration>,
    /// With the health monitor on: each state entered, with when (from the disruption's
    /// start), and when the disruption ended.
    states: Vec<(Duration, BackendState)>,
    restored_after: Option<Duration>,
    /// Writes submitted while the device was lost, and how many of them failed fast (NOT
    /// READY 04/0A within [`FAIL_FAST`]).
    submitted_while_lost: usize,
    failed_fast_while_lost: usize,
    /// Writes submitted while lost that failed, but not fast with NOT READY 04/0A.
    failed_slowly_while_lost: usize,
    /// The device's own count of commands failed fast.
    failed_fast: u64,
    reopens: u64,
}

/// How quickly a command sent to a lost device must be answered.
const FAIL_FAST: Duration = Duration::from_millis(500);

impl Seen {
    fn entered(&self, s: BackendState) -> Option<Duration> {
        self.states.iter().find(|(_, x)| *x == s).map(|(t, _)| *t)
    }

    /// The states in the order they were entered, and when, in words.
    fn walk(&self) -> String {
        self.states
            .iter()
            .map(|(t, s)| format!("{} at {:.1} s", s.label(), t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// Keep 16 writes in flight (each 4 KiB block written once, retried with the same data
/// until GOOD, like an initiator with retries) while `disrupt` runs on another thread;
/// `disrupt` returns when the volume has been restored. Then verify every block.
fn writes_through_an_outage(file: &str, disrupt: impl FnOnce() + Send + 'static) -> Seen {
    writes_through_an_outage_with(file, None, disrupt)
}

/// [`writes_through_an_outage`], optionally with the health monitor on (`health`): then
/// every state change is recorded, and writes go on until the device is healthy again.
fn writes_through_an_outage_with(
    file: &str,
    health: Option<fn(&dyn Backend) -> Policy>,
    disrupt: impl FnOnce() + Send + 'static,
) -> Seen {
    const BLOCKS: u64 = 64 * 1024; // 32 MiB
    const PER: u64 = 8; // 4 KiB writes
    let deadline = Duration::from_secs(3);
    let backend = open(file, BLOCKS * BS as u64, &[]);
    let lun = lun(backend.as_ref(), BLOCKS);
    let freed = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&freed);
    let policy = health.map(|h| h(backend.as_ref()));
    let dev = DeviceConfig {
        max_inflight: 64,
        command_deadline: Some(deadline),
        health: policy,
        free_kept_buf: Some(FreeKeptBuf(Arc::new(move |id| {
            f.lock().push(id);
            Ok(())
        }))),
        ..DeviceConfig::default()
    };
    let emu = EmuConfig {
        data_size: 16 << 20,
        ..EmuConfig::default()
    };
    let mut h = Harness::new(Arc::clone(&backend), lun, emu, &dev);
    let data = |i: u64| -> Vec<u8> {
        (0..PER as usize * BS)
            .map(|k| (i as usize * 31 + k * 7 + (k >> 9)) as u8)
            .collect()
    };
    let restored = Arc::new(Mutex::new(None::<Instant>));
    let r2 = Arc::clone(&restored);
    let t0 = Instant::now();
    let started = t0 + Duration::from_secs(1);
    let outage = std::thread::spawn(move || {
        std::thread::sleep(started.saturating_duration_since(Instant::now()));
        disrupt();
        *r2.lock() = Some(Instant::now());
    });
    let mut seen = Seen::default();
    let state = |h: &Harness| h.link().health.state();
    if policy.is_some() {
        seen.states.push((Duration::ZERO, state(&h)));
    }
    // Healthy again after the restore (with the monitor on), since when.
    let mut healthy_again: Option<Instant> = None;
    // Command id -> (block, submitted at, submitted while lost).
    let mut pending: HashMap<u16, (u64, Instant, bool)> = HashMap::new();
    let mut retry: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut acked = Vec::new();
    let mut next = 0u64;
    loop {
        let restored_at = *restored.lock();
        if policy.is_some() {
            let s = state(&h);
            if seen.states.last().map(|(_, x)| *x) != Some(s) {
                seen.states
                    .push((Instant::now().saturating_duration_since(started), s));
            }
            healthy_again = match (restored_at, s) {
                (Some(_), BackendState::Healthy) => healthy_again.or(Some(Instant::now())),
                _ => None,
            };
        }
        // Without the monitor, writes go on for 4 s after the restore; with it, until the
        // device has been healthy again for 2 s.
        let issuing = match (restored_at, policy) {
            (None, _) => true,
            (Some(r), None) => r.elapsed() < Duration::from_secs(4),
            (Some(_), Some(_)) => {
                healthy_again.map_or(true, |t| t.elapsed() < Duration::from_secs(2))
            }
        };
        let lost = policy.is_some() && state(&h) == BackendState::Lost;
        while pending.len() < 16 {
            let idx = match retry.front() {
                Some(&(i, at)) if at <= Instant::now() => {
                    retry.pop_front();
                    i
                }
                _ if issuing && next < BLOCKS / PER => {
                    next += 1;
                    next - 1
                }
                _ => break,
            };
            let d = data(idx);
            let id = h.submit(
                &cdb::write16(idx * PER, PER as u32, false),
                DataDir::ToDevice(&d),
            );
            pending.insert(id, (idx, Instant::now(), lost));
            seen.submitted_while_lost += usize::from(lost);
        }
        if pending.is_empty() && retry.is_empty() && !issuing {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the test did not finish in 120 s"
        );
        h.pump(Duration::from_millis(5));
        for id in freed.lock().drain(..) {
            h.emu.free_kept_buf(id).expect("free a kept buffer");
        }
        let ids: Vec<u16> = pending.keys().copied().collect();
        for id in ids {
            let Some(c) = h.take(id) else { continue };
            let (idx, at, while_lost) = pending.remove(&id).unwrap();
            let took = at.elapsed();
            if while_lost && c.status != 0 {
                if took < FAIL_FAST && c.status == 2 && sense_of(&c) == (0x02, 0x04, 0x0A) {
                    seen.failed_fast_while_lost += 1;
                } else {
                    seen.failed_slowly_while_lost += 1;
                }
            }
            seen.worst = seen.worst.max(took);
            assert!(
                took < deadline + Duration::from_millis(1500),
                "a write took {took:?}, beyond its {deadline:?} deadline"
            );
            if c.status == 0 {
                seen.good += 1;
                acked.push(idx);
                if let Some(r) = *restored.lock() {
                    if seen.first_good_after_restore.is_none() && at > r {
                        seen.first_good_after_restore = Some(r.elapsed());
                    }
                }
            } else {
                let retryable = c.status == 0x08
                    || (c.status == 2 && {
                        let (k, asc, ascq) = sense_of(&c);
                        (k, asc) == (0x02, 0x04) && matches!(ascq, 0x0A | 0x01)
                    });
                assert!(
                    retryable,
                    "a write failed with a status the initiator does not retry: {:#x} {:02x?}",
                    c.status,
                    &c.sense[..18]
                );
                seen.retryable += 1;
                retry.push_back((idx, Instant::now() + Duration::from_millis(200)));
            }
        }
    }
    outage.join().unwrap();
    seen.restored_after = restored
        .lock()
        .map(|r| r.saturating_duration_since(started));
    if policy.is_some() {
        let link = h.link();
        seen.failed_fast = link.health.failed_fast.load(Ordering::Relaxed);
        seen.reopens = link.health.reopens.load(Ordering::Relaxed);
    }
    // Every block written and acknowledged reads back.
    acked.sort_unstable();
    for &idx in &acked {
        let c = h.run(
            &cdb::read16(idx * PER, PER as u32),
            DataDir::FromDevice(PER as usize * BS),
        );
        assert_good(&c);
        assert!(
            c.data_in == data(idx),
            "block {idx} acknowledged but reads back differently"
        );
    }
    backend
        .ping()
        .expect("the volume answers again without a reopen");
    h.stop();
    eprintln!(
        "{file}: {seen:?}, {} blocks acknowledged and verified",
        acked.len()
    );
    seen
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal the brick");
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn brick_frozen_longer_than_ping_timeout_and_deadline() {
    let ping: u64 = env("GLUSTER_PING_TIMEOUT").parse().unwrap();
    let pid = brick_pid();
    let freeze = Duration::from_secs(ping + 4);
    let seen = writes_through_an_outage("freeze.img", move || {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(freeze);
        signal(pid, nix::sys::signal::Signal::SIGCONT);
    });
    assert!(seen.retryable > 0, "the outage was felt: {seen:?}");
    let back = seen
        .first_good_after_restore
        .expect("writes succeed after the thaw");
    assert!(
        back < Duration::from_secs(15),
        "I/O resumed {back:?} after the thaw"
    );
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn brick_frozen_walks_the_health_states_and_recovers_by_itself() {
    use BackendState::{Degraded, Healthy, Lost, Recovering};
    let ping: u64 = env("GLUSTER_PING_TIMEOUT").parse().unwrap();
    let pid = brick_pid();
    // Longer than the ping-timeout by enough to see the device lost for a while.
    let freeze = Duration::from_secs(ping + 5);
    // The daemon's plan: pings bounded by the backend tier (here 500 ms apart).
    let policy = |b: &dyn Backend| {
        let tier = b.op_timeout().expect("glfs has a backend tier");
        Policy::new(Duration::from_millis(500), tier)
    };
    let seen = writes_through_an_outage_with("health.img", Some(policy), move || {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(freeze);
        signal(pid, nix::sys::signal::Signal::SIGCONT);
    });
    let thaw = seen.restored_after.expect("the brick was thawed");
    eprintln!(
        "health walk (brick frozen at 0 s, thawed at {:.1} s, ping-timeout {ping} s): {}; \
         {} write(s) sent while lost, {} failed fast with NOT READY 04/0A, {} failed slowly; \
         device counted {} failed fast, {} reopen attempt(s); first good write {:?} after the thaw",
        thaw.as_secs_f64(),
        seen.walk(),
        seen.submitted_while_lost,
        seen.failed_fast_while_lost,
        seen.failed_slowly_while_lost,
        seen.failed_fast,
        seen.reopens,
        seen.first_good_after_restore,
    );
    let order: Vec<BackendState> = seen.states.iter().map(|(_, s)| *s).collect();
    assert!(
        order.starts_with(&[Healthy, Degraded, Lost]),
        "healthy, then degraded, then lost: {}",
        seen.walk()
    );
    assert!(
        order.ends_with(&[Recovering, Healthy]),
        "back to healthy through recovering: {}",
        seen.walk()
    );
    let tier = Duration::from_secs(ping);
    let lost = seen.entered(Lost).unwrap();
    assert!(
        lost < tier * 2 + Duration::from_secs(1) && lost < thaw,
        "lost within about one ping-timeout of the freeze, while frozen: {}",
        seen.walk()
    );
    let recovering = seen.entered(Recovering).unwrap();
    assert!(
        recovering > thaw,
        "not recovering while the brick is still frozen: {}",
        seen.walk()
    );
    let healthy = seen.states.last().unwrap().0;
    assert!(
        healthy < thaw + Duration::from_secs(20),
        "healthy again {:?} after the thaw (reopen backoff is capped at 10 s)",
        healthy.saturating_sub(thaw)
    );
    assert!(
        seen.submitted_while_lost > 0 && seen.failed_fast_while_lost > 0,
        "writes sent while lost fail fast: {seen:?}"
    );
    assert_eq!(
        seen.failed_slowly_while_lost, 0,
        "every write sent while lost that failed did so at once, with NOT READY 04/0A: {seen:?}"
    );
    assert!(seen.failed_fast > 0 && seen.reopens > 0, "{seen:?}");
    let back = seen
        .first_good_after_restore
        .expect("writes succeed after the thaw");
    assert!(
        back < Duration::from_secs(25),
        "I/O resumed {back:?} after the thaw"
    );
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn brick_killed_and_restarted() {
    let pid = brick_pid();
    let vol = volume();
    let seen = writes_through_an_outage("kill.img", move || {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
        std::thread::sleep(Duration::from_secs(4));
        volume_sh(&["cli", "volume", "start", &vol, "force"]);
    });
    assert!(seen.retryable > 0, "the outage was felt: {seen:?}");
    let back = seen
        .first_good_after_restore
        .expect("writes succeed after the restart");
    assert!(
        back < Duration::from_secs(15),
        "I/O resumed {back:?} after the restart"
    );
    assert_ne!(brick_pid(), pid, "a new brick process");
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn get_lba_status_reports_holes_of_the_volume_file_from_gfapi_seek() {
    const MAPPED: u8 = 0;
    const DEALLOCATED: u8 = 1;
    const BLOCKS: u64 = 8192;
    let file = format!(
        "lbastatus-{}-{}.img",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let backend = open(&file, BLOCKS * BS as u64, &[]);
    let lun = lun(backend.as_ref(), BLOCKS);
    assert!(lun.caps.unmap, "LBPME is reported");
    let mut h = harness(&backend, lun);
    // A new file is one hole.
    assert_eq!(
        lba_status_at(&mut h, 0),
        (0, u32::try_from(BLOCKS).unwrap(), DEALLOCATED)
    );
    // 64 KiB of data at 512 KiB (aligned to any brick filesystem's block).
    let data = vec![0xc3u8; 128 * BS];
    assert_good(&h.run(&cdb::write16(1024, 128, false), DataDir::ToDevice(&data)));
    assert_eq!(
        lba_status_at(&mut h, 0),
        (0, 1024, DEALLOCATED),
        "hole before"
    );
    let (start, n, st) = lba_status_at(&mut h, 1024);
    assert_eq!((start, st), (1024, MAPPED));
    assert!(n >= 128, "the written range is mapped: {n}");
    assert_eq!(lba_status_at(&mut h, 4096).2, DEALLOCATED, "hole after");
    // UNMAP punches the hole again on the brick.
    let params = cdb::unmap_params(&[(1024, 128)]);
    let plen = u16::try_from(params.len()).unwrap();
    assert_good(&h.run(&cdb::unmap(plen), DataDir::ToDevice(&params)));
    assert_eq!(
        lba_status_at(&mut h, 0),
        (0, u32::try_from(BLOCKS).unwrap(), DEALLOCATED),
        "after UNMAP"
    );
    h.stop();
}

/// The FSYNC calls the brick received since the last call of this function (`gluster volume
/// profile ... info incremental`: the brick's own count of each file operation).
fn brick_fsyncs() -> u64 {
    let out = volume_sh(&["cli", "volume", "profile", &volume(), "info", "incremental"]);
    // Rows: "%-latency Avg Min Max <calls> <FOP>"; only the interval's rows are printed.
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.last() == Some(&"FSYNC"))
                .then(|| f[f.len() - 2].parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Zeroing is durable exactly when the LUN's write cache is off (issue "the daemon never
/// stalls", item 11): UNMAP and a zeroing WRITE SAME reach the brick as DISCARD / ZEROFILL
/// followed by an FSYNC of the file, counted by the brick itself; with the write cache on,
/// no FSYNC is sent.
#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn zeroing_is_synced_on_the_brick_exactly_when_the_write_cache_is_off() {
    const BLOCKS: u64 = 8192;
    let file = format!("zerosync-{}.img", std::process::id());
    let backend = open(&file, BLOCKS * BS as u64, &[]);
    let lun = LunSpec::blocks(BLOCKS, BS as u32)
        .serial("glfs")
        .write_cache(false)
        .lun_info(backend.as_ref());
    assert!(lun.caps.unmap, "LBPME is reported");
    let mut h = harness(&backend, lun);
    // Data to zero again, then the profile started and its first interval read away.
    let data = vec![0x5au8; 256 * BS];
    assert_good(&h.run(&cdb::write16(0, 256, false), DataDir::ToDevice(&data)));
    // SYNCHRONIZE CACHE(10), whole LUN.
    assert_good(&h.run(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], DataDir::None));
    let _ = volume_sh(&["cli", "volume", "profile", &volume(), "start"]);
    let _ = brick_fsyncs();
    let zero_all = |h: &mut Harness| {
        let params = cdb::unmap_params(&[(0, 64)]);
        let plen = u16::try_from(params.len()).unwrap();
        assert_good(&h.run(&cdb::unmap(plen), DataDir::ToDevice(&params)));
        let zero = vec![0u8; BS];
        // WRITE SAME of zeros without UNMAP: a ZEROFILL on the brick.
        assert_good(&h.run(
            &cdb::write_same16(64, 64, false, false),
            DataDir::ToDevice(&zero),
        ));
    };
    zero_all(&mut h);
    let off = brick_fsyncs();
    h.device()
        .reconfigure(tcmu_warden::device::Change::WriteCache(true))
        .unwrap();
    // The change is announced to the next command (UNIT ATTENTION), then zeroing again.
    let _ = h.run(&cdb::test_unit_ready(), DataDir::None);
    zero_all(&mut h);
    let on = brick_fsyncs();
    let _ = volume_sh(&["cli", "volume", "profile", &volume(), "stop"]);
    eprintln!("brick FSYNC calls: write cache off {off}, on {on}");
    h.stop();
    assert!(
        off >= 2,
        "write cache off: the brick got {off} FSYNC for an UNMAP and a zeroing WRITE SAME"
    );
    assert_eq!(on, 0, "write cache on: the brick got {on} FSYNC");
}
