//! Resident memory and threads per LUN, in one process: start N LUNs (RAM backend) over the
//! in-process ring emulator, the way the daemon starts them, and print what each one costs.
//!
//! ```text
//! cargo run --release -p tcmu-warden --example scale -- 1 8 64 256
//! cargo run --release -p tcmu-warden --example scale -- --scratch 0 --max-inflight 1 64
//! ```
//!
//! For each N it prints the process's resident memory and thread count after the emulated
//! rings alone exist (the kernel's side, which in the daemon is the uio mapping and is not
//! the handler's memory), after the N devices started (idle), and after each served one
//! 4 KiB WRITE, READ and a VERIFY (a multi-step command). "per LUN" is the growth over the
//! rings-only state divided by N. Options mirror the daemon's settings: `--workers` (the
//! shared pool; 0: one private pool per device, as before), `--device-workers`,
//! `--max-inflight`, `--scratch` (bytes of each worker's bounce buffers), `--mlock`
//! (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` first, as the daemon does), `--metrics`
//! (each device gets its Prometheus series), `--loops` (the shared device event loops; 0: a
//! loop thread per device, as before), `--no-health` (no health monitor; the daemon monitors
//! every device). It also prints how long starting and stopping the N devices took.

use std::sync::Arc;
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::device::workers::WorkerPool;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, Harness, LunSpec};

/// `VmRSS` (KiB) and `Threads` of this process.
fn rss_threads() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

struct Opts {
    workers: usize,
    device_workers: usize,
    max_inflight: usize,
    scratch: usize,
    mlock: bool,
    metrics: bool,
    loops: usize,
    health: bool,
    counts: Vec<usize>,
}

fn parse() -> Opts {
    let mut o = Opts {
        workers: tcmu_warden::config::default_workers().into(),
        device_workers: 0,
        max_inflight: 256,
        scratch: 1 << 20,
        mlock: false,
        metrics: false,
        loops: tcmu_warden::config::default_loops().into(),
        health: true,
        counts: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the option")
        };
        match a.as_str() {
            "--workers" => o.workers = num(),
            "--device-workers" => o.device_workers = num(),
            "--max-inflight" => o.max_inflight = num(),
            "--scratch" => o.scratch = num(),
            "--mlock" => o.mlock = true,
            "--metrics" => o.metrics = true,
            "--loops" => o.loops = num(),
            "--no-health" => o.health = false,
            n => o.counts.push(n.parse().expect("a LUN count")),
        }
    }
    if o.counts.is_empty() {
        o.counts = vec![1, 8, 64];
    }
    o
}

fn main() {
    let o = parse();
    if o.mlock {
        // SAFETY: mlockall takes flags only.
        let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
        assert_eq!(r, 0, "mlockall: {}", std::io::Error::last_os_error());
    }
    let registry = prometheus_registry();
    println!(
        "workers={} device_workers={} max_inflight={} scratch={} mlock={} metrics={} loops={} health={}",
        o.workers, o.device_workers, o.max_inflight, o.scratch, o.mlock, o.metrics, o.loops, o.health
    );
    println!(
        "| LUNs | base RSS KiB | rings KiB | idle KiB/LUN | used KiB/LUN | threads | threads/LUN | start | stop |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &o.counts {
        run(&o, n, registry.as_ref());
    }
}

fn prometheus_registry() -> Option<()> {
    None
}

fn run(o: &Opts, n: usize, _registry: Option<&()>) {
    let (base, base_threads) = rss_threads();
    // Its threads exist before the LUNs: they are the fixed base.
    let pool = (o.workers > 0)
        .then(|| WorkerPool::start("tcmu-w", o.workers, o.scratch).expect("the worker pool"));
    let device_workers = if o.device_workers > 0 {
        o.device_workers
    } else if o.workers > 0 {
        tcmu_warden::config::device_workers_for(o.workers)
    } else {
        4
    };
    let loops = (o.loops > 0).then(|| {
        tcmu_warden::device::DeviceLoops::start("tcmu-loop", o.loops).expect("the device loops")
    });
    let emu_cfg = EmuConfig::default();
    let mut hs: Vec<Harness> = (0..n).map(|_| Harness::kernel(emu_cfg)).collect();
    let (rings, _) = rss_threads();
    let (_, pool_threads) = rss_threads();
    let t0 = std::time::Instant::now();
    for (i, h) in hs.iter_mut().enumerate() {
        let ram = Arc::new(RamBackend::new(1 << 20));
        let lun = LunSpec::new(1 << 20, 512)
            .serial(&format!("s{i}"))
            .lun_info(ram.as_ref());
        let name = format!("scale/lun{i}");
        let metrics = o
            .metrics
            .then(|| tcmu_warden_supervisor::metrics::DeviceMetrics::detached(&name, "ram"));
        let cfg = DeviceConfig {
            workers: device_workers,
            max_inflight: o.max_inflight,
            scratch_bytes: o.scratch,
            pool: pool.clone(),
            loops: loops.clone(),
            health: o.health.then(|| {
                tcmu_warden_supervisor::health::Policy::new(
                    std::time::Duration::from_secs(5),
                    std::time::Duration::from_secs(30),
                )
            }),
            metrics,
            ..DeviceConfig::default()
        };
        h.start(&name, ram, lun, &cfg);
    }
    let started = t0.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (idle, threads) = rss_threads();
    let block = vec![7u8; 4096];
    for h in &mut hs {
        assert_good(&h.run(&cdb::write16(0, 8, false), DataDir::ToDevice(&block)));
        assert_good(&h.run(&cdb::read16(0, 8), DataDir::FromDevice(4096)));
        assert_good(&h.run(&cdb::verify16(0, 8, false), DataDir::None));
    }
    let (used, _) = rss_threads();
    let t1 = std::time::Instant::now();
    for h in &mut hs {
        h.stop();
    }
    let stopped = t1.elapsed();
    let per = |kib: u64| (kib.saturating_sub(rings)) as f64 / n as f64;
    println!(
        "| {n} | {base} | {} | {:.0} | {:.0} | {threads} | {:.2} | {:.3} s | {:.3} s |",
        rings - base,
        per(idle),
        per(used),
        (threads - pool_threads) as f64 / n as f64,
        started.as_secs_f64(),
        stopped.as_secs_f64()
    );
    let _ = base_threads;
    drop(hs);
    drop(loops);
    drop(pool);
}
