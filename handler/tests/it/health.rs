//! Backend health through the real dispatcher and the emulated ring: a backend that stops
//! answering goes degraded then lost, new commands then fail fast with the retryable NOT
//! READY 04/0A instead of piling up, the monitor reopens it with backoff, and it comes back
//! through recovering to healthy by itself. Faults are injected with the fault backend, so
//! every transition is deterministic.

use nix::errno::Errno;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, Caps, Io};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, data_in, sense_of, Harness, LunSpec};
use tcmu_warden_supervisor::health::Policy;
use tcmu_warden_supervisor::metrics::BackendState;

const BS: usize = 512;
const BLOCKS: u64 = 2048;
const NOT_READY_IN_TRANSITION: (u8, u8, u8) = (0x02, 0x04, 0x0A);

/// A RAM LUN that counts reopen calls (the monitor's recovery step).
struct Reopening {
    inner: RamBackend,
    reopens: AtomicUsize,
}

impl Backend for Reopening {
    fn describe(&self) -> String {
        "reopening-ram".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn submit(&self, io: Io) {
        self.inner.submit(io);
    }
    fn reopen(&self) -> Result<(), Errno> {
        self.reopens.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Rig {
    h: Harness,
    fault: Arc<FaultBackend>,
    inner: Arc<Reopening>,
}

fn rig(rules: &str) -> Rig {
    let inner = Arc::new(Reopening {
        inner: RamBackend::new(BLOCKS * BS as u64),
        reopens: AtomicUsize::new(0),
    });
    let fault = Arc::new(FaultBackend::new(
        Arc::clone(&inner) as Arc<dyn Backend>,
        parse_rules(rules).unwrap(),
    ));
    let lun = LunSpec::blocks(BLOCKS, 512)
        .serial("health")
        .lun_info(fault.as_ref());
    let cfg = DeviceConfig {
        health: Some(Policy {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            settle: Duration::from_millis(200),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
        }),
        ..DeviceConfig::default()
    };
    let emu = EmuConfig {
        data_size: 1 << 20,
        ..EmuConfig::default()
    };
    let h = Harness::new(Arc::clone(&fault) as Arc<dyn Backend>, lun, emu, &cfg);
    Rig { h, fault, inner }
}

impl Rig {
    fn state(&self) -> BackendState {
        self.h.link().health.state()
    }

    /// Wait for `want`, recording every state seen on the way.
    fn wait_for(&mut self, want: BackendState, limit: Duration, seen: &mut Vec<BackendState>) {
        let t = Instant::now();
        loop {
            let s = self.state();
            if seen.last() != Some(&s) {
                seen.push(s);
            }
            if s == want {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "no {want:?} within {limit:?}; states seen: {seen:?}"
            );
            self.h.pump(Duration::from_millis(2));
        }
    }

    fn write(&mut self, lba: u64, byte: u8) -> u16 {
        let data = vec![byte; BS];
        self.h
            .submit(&cdb::write16(lba, 1, false), DataDir::ToDevice(&data))
    }
}

#[test]
fn a_backend_that_stops_answering_goes_lost_fails_fast_and_recovers_by_itself() {
    let mut r = rig("");
    let id = r.write(7, 0x11);
    assert_good(&r.h.wait(id));
    assert_eq!(r.state(), BackendState::Healthy);

    // The backend freezes: I/O and pings hang.
    r.fault.set_rules(parse_rules("any:hang").unwrap());
    let stuck = r.write(8, 0x22);
    let mut seen = vec![BackendState::Healthy];
    r.wait_for(BackendState::Lost, Duration::from_secs(10), &mut seen);
    assert_eq!(
        seen,
        [
            BackendState::Healthy,
            BackendState::Degraded,
            BackendState::Lost
        ],
        "a timed-out ping degrades, the next one loses it"
    );

    // While lost: new commands fail at once with the retryable status; nothing reaches the
    // backend (which would hang them).
    let t = Instant::now();
    let c = r.h.run(&cdb::read16(7, 1), DataDir::FromDevice(BS));
    assert_eq!(sense_of(&c), NOT_READY_IN_TRANSITION);
    let c =
        r.h.run(&cdb::write16(9, 1, false), DataDir::ToDevice(&[0x33; BS]));
    assert_eq!(sense_of(&c), NOT_READY_IN_TRANSITION);
    let c = r.h.run(&cdb::test_unit_ready(), DataDir::None);
    assert_eq!(
        sense_of(&c),
        NOT_READY_IN_TRANSITION,
        "a path checker sees it too"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "failed fast: {:?}",
        t.elapsed()
    );
    assert_eq!(
        r.fault.hung(),
        1,
        "only the command sent before the loss waits in the backend"
    );
    // Reopen attempts are refused while the stuck ping holds the prober: still lost.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.state(), BackendState::Lost);

    // The backend answers again: the stuck write completes, the monitor reopens it and it
    // goes back to healthy through recovering, without anyone restarting anything.
    r.fault.set_rules(Vec::new());
    assert_good(&r.h.wait(stuck));
    r.wait_for(BackendState::Healthy, Duration::from_secs(10), &mut seen);
    assert_eq!(
        &seen[2..],
        [
            BackendState::Lost,
            BackendState::Recovering,
            BackendState::Healthy
        ],
        "{seen:?}"
    );
    assert!(
        r.inner.reopens.load(Ordering::SeqCst) >= 1,
        "the backend was reopened"
    );
    let link = r.h.link().clone();
    assert!(link.health.failed_fast.load(Ordering::Relaxed) >= 2);
    assert!(link.health.reopens.load(Ordering::Relaxed) >= 1);
    let last = link.health.last_transition().unwrap().1;
    assert!(last.starts_with("healthy (was recovering)"), "{last}");

    // Data written before and during the outage is there.
    let c = r.h.run(&cdb::read16(7, 2), DataDir::FromDevice(2 * BS));
    assert_good(&c);
    assert!(data_in(&c)[..BS].iter().all(|&b| b == 0x11));
    assert!(data_in(&c)[BS..].iter().all(|&b| b == 0x22));
}

#[test]
fn a_blocklisted_client_is_lost_at_once_and_reopened() {
    // ESHUTDOWN is what librbd returns once the client is blocklisted: it never comes back
    // by itself, so the backend is declared lost on the first one and reopened.
    let mut r = rig("write:fail=ESHUTDOWN,count=1");
    let id = r.write(3, 0x44);
    let c = r.h.wait(id);
    assert_eq!(
        sense_of(&c),
        NOT_READY_IN_TRANSITION,
        "retryable for the initiator"
    );
    let mut seen = vec![BackendState::Healthy];
    r.wait_for(BackendState::Recovering, Duration::from_secs(10), &mut seen);
    r.wait_for(BackendState::Healthy, Duration::from_secs(10), &mut seen);
    let reopens = r.inner.reopens.load(Ordering::SeqCst);
    assert!(reopens >= 1, "reopened: {seen:?}");
    assert!(
        seen.contains(&BackendState::Lost) && seen.contains(&BackendState::Recovering),
        "{seen:?}"
    );
    assert!(
        !seen.contains(&BackendState::Degraded),
        "straight to lost: {seen:?}"
    );
    // The initiator's retry now succeeds.
    let id = r.write(3, 0x44);
    assert_good(&r.h.wait(id));
}

#[test]
fn transient_connection_errors_degrade_but_answering_pings_keep_it_serving() {
    // Gluster during a brick restart: some writes fail with ENOTCONN, pings still answer.
    let mut r = rig("write:fail=ENOTCONN,count=3");
    for lba in 0..3 {
        let id = r.write(lba, 0x55);
        assert_eq!(sense_of(&r.h.wait(id)), NOT_READY_IN_TRANSITION);
    }
    let mut seen = vec![BackendState::Healthy];
    r.wait_for(BackendState::Degraded, Duration::from_secs(5), &mut seen);
    r.wait_for(BackendState::Healthy, Duration::from_secs(5), &mut seen);
    assert_eq!(
        seen,
        [
            BackendState::Healthy,
            BackendState::Degraded,
            BackendState::Healthy
        ]
    );
    assert_eq!(
        r.inner.reopens.load(Ordering::SeqCst),
        0,
        "no reopen needed"
    );
    // Commands were never failed fast.
    let id = r.write(0, 0x66);
    assert_good(&r.h.wait(id));
}

#[test]
fn a_failing_ping_alone_is_enough_to_notice_a_dead_backend() {
    // No I/O at all: the pings find it (a LUN idle at night whose server died).
    let mut r = rig("ping:fail=ENOTCONN");
    let mut seen = vec![BackendState::Healthy];
    r.wait_for(BackendState::Lost, Duration::from_secs(5), &mut seen);
    assert_eq!(
        seen,
        [
            BackendState::Healthy,
            BackendState::Degraded,
            BackendState::Lost
        ]
    );
    // Reopen attempts fail (the ping after the reopen fails) with a growing backoff.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(r.state(), BackendState::Lost);
    let attempts = r.inner.reopens.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&attempts),
        "bounded exponential backoff: {attempts} reopens in ~0.8 s"
    );
    r.fault.set_rules(Vec::new());
    r.wait_for(BackendState::Healthy, Duration::from_secs(5), &mut seen);
}
