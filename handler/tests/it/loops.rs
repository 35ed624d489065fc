//! The shared device event loops (docs/DESIGN.md, "Threads"): many devices on one loop
//! thread, one of them stopped while the others run, and one whose backend hangs beside
//! one that keeps its rate and latency.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::fault::{parse_rules, FaultBackend};
use tcmu_warden::backend::file::FileBackend;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::workers::WorkerPool;
use tcmu_warden::device::{DeviceConfig, DeviceLoops, FreeKeptBuf};
use tcmu_warden::testing::{assert_good, cdb, data_in, sense_of, Harness, LunSpec};

const BS: usize = 512;

fn small_emu() -> EmuConfig {
    EmuConfig {
        cmdr_size: 256 * 1024,
        data_size: 4 << 20,
        ..EmuConfig::default()
    }
}

fn on(loops: &DeviceLoops, pool: &WorkerPool, deadline: Option<Duration>) -> DeviceConfig {
    DeviceConfig {
        workers: 2,
        pool: Some(pool.clone()),
        loops: Some(loops.clone()),
        max_inflight: 64,
        command_deadline: deadline,
        free_kept_buf: Some(FreeKeptBuf(Arc::new(|_| Ok(())))),
        stop_deadline: Duration::from_secs(2),
        health: Some(tcmu_warden_supervisor::health::Policy::new(
            Duration::from_millis(200),
            Duration::from_secs(1),
        )),
        ..DeviceConfig::default()
    }
}

fn start(name: &str, backend: Arc<dyn Backend>, cfg: &DeviceConfig) -> Harness {
    let lun = LunSpec::new(backend.size(), 512)
        .serial(name)
        .lun_info(backend.as_ref());
    let mut h = Harness::kernel(small_emu());
    h.start(name, backend, lun, cfg);
    h
}

/// Names of this process's threads (`comm`, at most 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Write a block, read it back, compare.
fn write_read(h: &mut Harness, lba: u64, fill: u8) {
    let block = vec![fill; BS];
    assert_good(&h.run(&cdb::write16(lba, 1, false), DataDir::ToDevice(&block)));
    let c = h.run(&cdb::read16(lba, 1), DataDir::FromDevice(BS));
    assert_good(&c);
    assert_eq!(data_in(&c), &block[..], "lba {lba}");
}

/// Sixteen devices, file and RAM backends, on one loop: every one serves (data written and
/// read back on each, interleaved), none gets a thread of its own, and the loop counts them
/// as they come and go.
#[test]
fn many_devices_are_served_by_one_loop_thread() {
    let loops = DeviceLoops::start("t-many", 1).unwrap();
    let pool = WorkerPool::new("t-many-w", 4, 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let mut hs: Vec<Harness> = (0..16)
        .map(|i| {
            let backend: Arc<dyn Backend> = if i % 2 == 0 {
                Arc::new(FileBackend::open(&dir.path().join(format!("{i}.img")), 1 << 20).unwrap())
            } else {
                Arc::new(RamBackend::new(1 << 20))
            };
            start(&format!("mny{i}"), backend, &on(&loops, &pool, None))
        })
        .collect();
    assert_eq!(loops.devices(), vec![16]);
    let names = thread_names();
    assert!(
        !names.iter().any(|n| n.starts_with("tcmu-d/mny")),
        "a device on a shared loop has a thread of its own: {names:?}"
    );
    assert!(names.iter().any(|n| n == "t-many/0"), "{names:?}");
    for round in 0..4u8 {
        for (i, h) in hs.iter_mut().enumerate() {
            write_read(
                h,
                u64::from(round) * 16 + i as u64,
                round ^ u8::try_from(i).unwrap(),
            );
        }
    }
    // Commands in flight on several devices at once, completed in any order.
    let ids: Vec<(usize, u16)> = hs
        .iter_mut()
        .enumerate()
        .flat_map(|(i, h)| {
            (0..4u64)
                .map(|k| (i, h.submit(&cdb::read16(k, 1), DataDir::FromDevice(BS))))
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, id) in ids {
        assert_good(&hs[i].wait(id));
    }
    for h in hs.iter_mut().take(8) {
        h.stop();
    }
    assert_eq!(loops.devices(), vec![8]);
    for (i, h) in hs.iter_mut().enumerate().skip(8) {
        write_read(h, 100, u8::try_from(i).unwrap());
    }
    drop(hs);
    assert_eq!(loops.devices(), vec![0]);
}

/// New devices go to the loop with the fewest.
#[test]
fn devices_are_spread_over_the_loops() {
    let loops = DeviceLoops::start("t-spread", 3).unwrap();
    let pool = WorkerPool::new("t-spread-w", 2, 1 << 20);
    let mut hs: Vec<Harness> = (0..7)
        .map(|i| {
            start(
                &format!("spr{i}"),
                Arc::new(RamBackend::new(1 << 20)),
                &on(&loops, &pool, None),
            )
        })
        .collect();
    assert_eq!(loops.devices(), vec![3, 2, 2]);
    for h in &mut hs {
        write_read(h, 0, 9);
    }
    hs.truncate(2);
    let n: usize = loops.devices().iter().sum();
    assert_eq!(n, 2);
}

/// Stopping one device, with a command of its own stuck in its backend, leaves the others on
/// its loop serving at their rate: their commands complete throughout, the stop ends at its
/// deadline with the stuck command completed BUSY, and the loop keeps the others.
#[test]
fn stopping_one_device_leaves_the_others_on_its_loop_running() {
    let loops = DeviceLoops::start("t-stop", 1).unwrap();
    let pool = WorkerPool::new("t-stop-w", 4, 1 << 20);
    let stuck_backend = Arc::new(FaultBackend::new(
        Arc::new(RamBackend::new(1 << 20)),
        parse_rules("read:hang").unwrap(),
    ));
    let mut stuck = start("stp-stuck", stuck_backend.clone(), &on(&loops, &pool, None));
    let mut others: Vec<Harness> = (0..3)
        .map(|i| {
            start(
                &format!("stp{i}"),
                Arc::new(RamBackend::new(1 << 20)),
                &on(&loops, &pool, None),
            )
        })
        .collect();
    let held = stuck.submit(&cdb::read16(0, 1), DataDir::FromDevice(BS));
    let t = Instant::now();
    while stuck_backend.hung() < 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "the hang never took");
        std::thread::sleep(Duration::from_millis(2));
    }
    let busy = others.pop().unwrap();
    // One LUN runs commands back to back while the stuck one stops.
    let runner = std::thread::spawn(move || {
        let mut h = busy;
        let mut worst = Duration::ZERO;
        let mut n = 0u32;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2500) {
            let t1 = Instant::now();
            write_read(&mut h, u64::from(n % 64), (n % 251) as u8);
            worst = worst.max(t1.elapsed());
            n += 1;
        }
        (h, n, worst)
    });
    std::thread::sleep(Duration::from_millis(200));
    let dev = stuck.dev.take().unwrap();
    let t = Instant::now();
    dev.join();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "the stop took {took:?}, its deadline is 2 s"
    );
    stuck.pump(Duration::from_millis(100));
    let c = stuck
        .take(held)
        .expect("the stuck command was completed at the stop deadline");
    assert_eq!(c.status, tcmu_scsi::status::BUSY);
    let (mut h, n, worst) = runner.join().unwrap();
    println!("{n} write+read pairs during the stop, worst {worst:?}");
    assert!(n >= 20, "only {n} pairs in 2.5 s beside a stopping LUN");
    assert!(
        worst < Duration::from_millis(1000),
        "a pair took {worst:?} beside a stopping LUN"
    );
    assert_eq!(loops.devices(), vec![3]);
    write_read(&mut h, 1, 1);
    for o in &mut others {
        write_read(o, 2, 2);
    }
    stuck_backend.set_rules(Vec::new());
    stuck_backend.release_hung();
}

/// Read `n` blocks one at a time; the time of each.
fn timed_reads(h: &mut Harness, n: u64) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            assert_good(&h.run(&cdb::read16(i % 128, 1), DataDir::FromDevice(BS)));
            t.elapsed()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Two LUNs on one loop, one of them with every operation hung in its backend (and a
/// deadline that completes them): the other's reads, through its io_uring, keep their rate
/// and latency, while the hung one's commands expire on time on the same loop.
#[test]
fn a_hung_lun_does_not_slow_another_on_the_same_loop() {
    let loops = DeviceLoops::start("t-hung", 1).unwrap();
    let pool = WorkerPool::new("t-hung-w", 4, 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let hung_backend = Arc::new(FaultBackend::new(
        Arc::new(RamBackend::new(1 << 20)),
        Vec::new(),
    ));
    let deadline = Some(Duration::from_millis(300));
    let mut hung = start(
        "hng-hung",
        hung_backend.clone(),
        &on(&loops, &pool, deadline),
    );
    let file = Arc::new(FileBackend::open(&dir.path().join("ok.img"), 1 << 20).unwrap());
    let mut ok = start("hng-ok", file, &on(&loops, &pool, deadline));
    assert_eq!(loops.devices(), vec![2]);
    timed_reads(&mut ok, 50);
    let t0 = Instant::now();
    let before = timed_reads(&mut ok, 300);
    let before_wall = t0.elapsed();

    hung_backend.set_rules(parse_rules("any:hang").unwrap());
    let block = vec![3u8; BS];
    let ids: Vec<u16> = (0..16)
        .map(|i| hung.submit(&cdb::write16(i, 1, false), DataDir::ToDevice(&block)))
        .collect();
    let t = Instant::now();
    while hung_backend.hung() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "the hang never took");
        std::thread::sleep(Duration::from_millis(2));
    }
    let t0 = Instant::now();
    let during = timed_reads(&mut ok, 300);
    let during_wall = t0.elapsed();
    let (mb, md) = (median(before.clone()), median(during.clone()));
    let worst = during.iter().max().copied().unwrap_or_default();
    println!(
        "300 reads beside a hung LUN: {during_wall:?} (median {md:?}, worst {worst:?}); alone: {before_wall:?} (median {mb:?})"
    );
    assert!(
        during_wall < before_wall * 3 + Duration::from_millis(300),
        "the rate fell: {before_wall:?} alone, {during_wall:?} beside a hung LUN"
    );
    assert!(
        md < mb * 3 + Duration::from_millis(2),
        "the median latency rose: {mb:?} alone, {md:?} beside a hung LUN"
    );
    assert!(
        worst < Duration::from_millis(250),
        "a read took {worst:?} beside a hung LUN (its deadline is 300 ms)"
    );
    // The hung LUN's commands were completed at their deadline by the same loop.
    hung.set_wait_limit(Duration::from_secs(5));
    for id in ids {
        let c = hung.wait(id);
        assert_eq!(sense_of(&c), (2, 0x04, 0x0a), "expired with NOT READY");
    }
    hung_backend.set_rules(Vec::new());
    hung_backend.release_hung();
    hung.stop();
    ok.stop();
}
