//! The fault-injection wrapper (`backend::fault::FaultBackend`) through the emulated ring and
//! the real dispatcher: injected errors reach the initiator as the right sense, delays never
//! lose or duplicate a command, and a hung backend cannot keep a device from stopping.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness, LunSpec};

const BS: usize = 512;
const BLOCKS: u64 = 1024;
const CHECK_CONDITION: u8 = 0x02;
const BUSY: u8 = 0x08;
const NOT_READY_IN_TRANSITION: (u8, u8, u8) = (0x02, 0x04, 0x0A);

fn faulty(rules: &str) -> Arc<FaultBackend> {
    let ram = Arc::new(RamBackend::new(BLOCKS * BS as u64));
    Arc::new(FaultBackend::new(ram, parse_rules(rules).expect("rules")))
}

fn harness(b: &Arc<FaultBackend>, dev: &DeviceConfig) -> Harness {
    let lun = LunSpec::blocks(BLOCKS, 512)
        .serial("fault-backend")
        .lun_info(b.as_ref() as &dyn Backend);
    let emu = EmuConfig {
        cmdr_size: 64 * 1024,
        data_size: 1 << 20,
        ..EmuConfig::default()
    };
    Harness::new(Arc::clone(b) as Arc<dyn Backend>, lun, emu, dev)
}

fn dev_cfg() -> DeviceConfig {
    DeviceConfig {
        workers: 2,
        max_inflight: 32,
        ..DeviceConfig::default()
    }
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BS)
        .map(|i| seed ^ u8::try_from(i % 256).unwrap())
        .collect()
}

fn write(h: &mut Harness, lba: u64, d: &[u8]) -> Completed {
    h.run(&cdb::write16(lba, 1, false), DataDir::ToDevice(d))
}

fn read(h: &mut Harness, lba: u64) -> Completed {
    h.run(&cdb::read16(lba, 1), DataDir::FromDevice(BS))
}

fn completed(h: &Harness) -> u64 {
    h.stats().completed.load(Ordering::Relaxed)
}

#[test]
fn etimedout_writes_give_retryable_not_ready_in_transition() {
    let b = faulty("write:fail=ETIMEDOUT");
    let mut h = harness(&b, &dev_cfg());
    for cdb in [cdb::write16(3, 1, false), cdb::write16(3, 1, true)] {
        let c = h.run(&cdb, DataDir::ToDevice(&pattern(1)));
        assert_eq!(c.status, CHECK_CONDITION);
        assert_eq!(sense_of(&c), NOT_READY_IN_TRANSITION);
    }
    let c = h.run(
        &cdb::write_same16(3, 4, false, false),
        DataDir::ToDevice(&pattern(2)),
    );
    assert_eq!(sense_of(&c), NOT_READY_IN_TRANSITION, "WRITE SAME");
    // Reads pass, and saw nothing of the failed writes.
    let c = read(&mut h, 3);
    assert_good(&c);
    assert_eq!(c.data_in, vec![0u8; BS]);
    // The initiator's retry succeeds once the fault ends.
    b.set_rules(Vec::new());
    assert_good(&write(&mut h, 3, &pattern(1)));
    assert_eq!(read(&mut h, 3).data_in, pattern(1));
    // ESHUTDOWN and ENOTCONN read failures are just as retryable.
    for e in ["ESHUTDOWN", "ENOTCONN"] {
        b.set_rules(parse_rules(&format!("read:fail={e}")).unwrap());
        let c = read(&mut h, 3);
        assert_eq!(sense_of(&c), NOT_READY_IN_TRANSITION, "{e}");
    }
    assert_eq!(b.injected(), 5);
    h.stop();
    assert_eq!(h.emu.outstanding(), 0);
}

#[test]
fn a_delayed_backend_completes_every_command_exactly_once() {
    let b = faulty("write:delay=30ms,every=3;read:delay=5ms;flush:delay=20ms");
    let mut h = harness(&b, &dev_cfg());
    let t = Instant::now();
    // Queue depth 1 (would run inline for an inline backend).
    assert_good(&write(&mut h, 0, &pattern(0)));
    assert_good(&write(&mut h, 1, &pattern(1)));
    assert_good(&write(&mut h, 2, &pattern(2)));
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "the third write was delayed"
    );
    // Deep queues: writes, a flush, then reads of everything.
    let n = 48u8;
    let ids: Vec<(u8, u16)> = (3..n)
        .map(|i| {
            let d = pattern(i);
            (
                i,
                h.submit(&cdb::write16(u64::from(i), 1, false), DataDir::ToDevice(&d)),
            )
        })
        .collect();
    for (_, id) in ids {
        assert_good(&h.wait(id));
    }
    assert_good(&h.run(&cdb::sync16(), DataDir::None));
    let ids: Vec<(u8, u16)> = (0..n)
        .map(|i| {
            (
                i,
                h.submit(&cdb::read16(u64::from(i), 1), DataDir::FromDevice(BS)),
            )
        })
        .collect();
    for (i, id) in ids {
        let c = h.wait(id);
        assert_good(&c);
        assert_eq!(c.data_in, pattern(i), "block {i}");
    }
    let cmds = 2 * u64::from(n) + 1;
    assert_eq!(completed(&h), cmds, "one completion per command");
    assert_eq!(b.delayed(), 0);
    h.stop();
    assert_eq!(h.emu.outstanding(), 0, "nothing lost");
}

#[test]
fn a_hung_backend_cannot_keep_the_device_from_stopping() {
    let b = faulty("any:hang");
    let deadline = Duration::from_secs(1);
    let cfg = DeviceConfig {
        stop_deadline: deadline,
        ..dev_cfg()
    };
    let mut h = harness(&b, &cfg);
    let d = pattern(7);
    let mut ids: Vec<u16> = (0..6)
        .map(|i| h.submit(&cdb::write16(i, 1, false), DataDir::ToDevice(&d)))
        .collect();
    ids.push(h.submit(&cdb::read16(9, 1), DataDir::FromDevice(BS)));
    ids.push(h.submit(&cdb::sync16(), DataDir::None));
    // A COMPARE AND WRITE keeps a worker waiting inside the backend.
    ids.push(h.submit(
        &cdb::caw(50, 1),
        DataDir::ToDevice(&[d.clone(), d.clone()].concat()),
    ));
    let t = Instant::now();
    while b.hung() < ids.len() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "only {} held",
            b.hung()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let dev = h.dev.take().unwrap();
    let t = Instant::now();
    dev.join();
    let took = t.elapsed();
    assert!(
        took < deadline + Duration::from_secs(1),
        "join took {took:?} with a {deadline:?} deadline"
    );
    assert!(
        took + Duration::from_millis(50) >= deadline,
        "gave up early: {took:?}"
    );
    h.pump(Duration::from_millis(100));
    for &id in &ids {
        let c = h.wait(id);
        assert_eq!(c.status, BUSY, "cmd {id}: BUSY at the stop deadline");
    }
    // Ending the hang now is harmless: the late completions are not completed again (the
    // harness panics on a second completion of an id).
    b.set_rules(Vec::new());
    assert_eq!(b.hung(), 0);
    std::thread::sleep(Duration::from_millis(100));
    h.pump(Duration::from_millis(50));
}
