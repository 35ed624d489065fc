//! The worker pool shared by every device (docs/DESIGN.md, "Memory per LUN"): a device whose
//! backend hangs holds at most its share of the threads, and long chunked commands (VERIFY
//! with BYTCHK=0 over the whole LUN) take turns with other commands and end by their
//! deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::workers::WorkerPool;
use tcmu_warden::device::{DeviceConfig, FreeKeptBuf};
use tcmu_warden::testing::{assert_good, cdb, sense_of, Harness, LunSpec};

fn shared(pool: &WorkerPool, share: usize, deadline: Option<Duration>) -> DeviceConfig {
    DeviceConfig {
        workers: share,
        pool: Some(pool.clone()),
        command_deadline: deadline,
        free_kept_buf: Some(FreeKeptBuf(Arc::new(|_| Ok(())))),
        stop_deadline: Duration::from_secs(2),
        ..DeviceConfig::default()
    }
}

fn start(name: &str, backend: Arc<dyn Backend>, size: u64, cfg: &DeviceConfig) -> Harness {
    let lun = LunSpec::new(size, 512)
        .serial(name)
        .lun_info(backend.as_ref());
    let mut h = Harness::kernel(EmuConfig::default());
    h.start(name, backend, lun, cfg);
    h
}

/// Time `n` multi-step commands (WRITE SAME of a non-zero block over 256 blocks, written
/// through the worker's bounce buffer) run one after the other.
fn write_same_burst(h: &mut Harness, n: u64) -> Duration {
    let block = vec![0x5au8; 512];
    let t = Instant::now();
    for i in 0..n {
        let c = h.run(
            &cdb::write_same16(i * 256 % 1792, 256, false, false),
            DataDir::ToDevice(&block),
        );
        assert_good(&c);
    }
    t.elapsed()
}

/// One LUN whose backend hangs every operation, with more multi-step commands queued than
/// the whole pool has threads, does not stop another LUN's multi-step commands: they
/// complete as they did before the hang (with a pool shared without per-device shares,
/// the hung LUN's jobs would take every thread and they would never complete).
#[test]
fn a_hung_lun_holds_only_its_share_of_the_pool() {
    let pool = WorkerPool::new("test-w", 4, 1 << 20);
    let hung_backend = Arc::new(FaultBackend::new(
        Arc::new(RamBackend::new(1 << 20)),
        Vec::new(),
    ));
    let mut hung = start(
        "pool/hung",
        hung_backend.clone(),
        1 << 20,
        &shared(&pool, 2, None),
    );
    let mut other = start(
        "pool/other",
        Arc::new(RamBackend::new(1 << 20)),
        1 << 20,
        &shared(&pool, 2, None),
    );
    // The rate before the hang (first burst warms the buffers up).
    write_same_burst(&mut other, 10);
    let before = write_same_burst(&mut other, 40);

    hung_backend.set_rules(parse_rules("any:hang").unwrap());
    let block = vec![1u8; 512];
    let ids: Vec<u16> = (0..8)
        .map(|i| {
            hung.submit(
                &cdb::write_same16(i * 8, 8, false, false),
                DataDir::ToDevice(&block),
            )
        })
        .collect();
    // The hung LUN's share of the pool is stuck in its backend.
    let t = Instant::now();
    while hung_backend.hung() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "the hang never took");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        hung_backend.hung(),
        2,
        "one LUN has at most its share (2) of the 4 workers"
    );

    other.set_wait_limit(Duration::from_secs(10));
    let during = write_same_burst(&mut other, 40);
    println!("40 WRITE SAME on the other LUN: {before:?} before the hang, {during:?} during it");
    assert!(
        during < before * 5 + Duration::from_millis(500),
        "the other LUN slowed down: {before:?} before, {during:?} during the hang"
    );

    // Let the hung LUN go; its commands complete.
    hung_backend.set_rules(Vec::new());
    for id in ids {
        assert_good(&hung.wait(id));
    }
    hung.stop();
    other.stop();
}

/// Four VERIFY(16) BYTCHK=0 of 0xFFFFFFFF blocks (2 TiB each) on a sparse file LUN: READs on
/// the same LUN and on another one sharing the pool complete promptly while they run, and
/// each VERIFY ends by its deadline with the deadline's status (NOT READY, asymmetric access
/// state transition), its workers free again.
#[test]
fn long_verify_takes_turns_and_ends_by_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4u64 << 40;
    let file = Arc::new(FileBackend::open(&dir.path().join("sparse.img"), size).unwrap());
    let pool = WorkerPool::new("test-v", 4, 1 << 20);
    let deadline = Duration::from_secs(2);
    let mut big = start("pool/big", file, size, &shared(&pool, 2, Some(deadline)));
    let mut small = start(
        "pool/small",
        Arc::new(RamBackend::new(1 << 20)),
        1 << 20,
        &shared(&pool, 2, Some(deadline)),
    );
    let t0 = Instant::now();
    let verifies: Vec<u16> = (0..4)
        .map(|i| {
            big.submit(
                &cdb::verify16(i * 0x1000, 0xFFFF_FFFF, false),
                DataDir::None,
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // READs on both LUNs while the VERIFYs run.
    let mut worst = Duration::ZERO;
    for i in 0..20u64 {
        for h in [&mut big, &mut small] {
            let t = Instant::now();
            let c = h.run(&cdb::read16(i * 8, 8), DataDir::FromDevice(4096));
            assert_good(&c);
            worst = worst.max(t.elapsed());
        }
        if t0.elapsed() > deadline - Duration::from_millis(300) {
            break;
        }
    }
    println!("slowest READ beside four 2 TiB VERIFYs: {worst:?}");
    assert!(
        worst < Duration::from_secs(1),
        "a READ waited {worst:?} behind the VERIFYs"
    );
    big.set_wait_limit(deadline * 3);
    for id in verifies {
        let c = big.wait(id);
        let took = t0.elapsed();
        assert_eq!(c.status, 0x02, "CHECK CONDITION");
        assert_eq!(sense_of(&c), (0x02, 0x04, 0x0a), "the deadline's status");
        assert!(
            took < deadline + Duration::from_millis(1500),
            "VERIFY ended {took:?} after it was sent, past its deadline {deadline:?}"
        );
    }
    // The workers stopped working on them: new commands run at once.
    let t = Instant::now();
    assert_good(&big.run(&cdb::verify16(0, 2048, false), DataDir::None));
    assert_good(&small.run(&cdb::read16(0, 8), DataDir::FromDevice(4096)));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    big.stop();
    small.stop();
}
