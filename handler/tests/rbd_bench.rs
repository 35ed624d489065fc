//! The throughput half of `bench/rbd.sh`: tcmu-warden's RBD backend driven through the
//! emulated kernel ring at a fixed queue depth, on an image the script made and filled.
//! Prints one `RESULT <mode> ops=<n> secs=<s> iops=<n> mib_s=<n>` line per mode; the script
//! puts them beside `rbd bench` on the same image.
//!
//! Ignored by default; environment: `TCMU_RBD_CONF`, `RBD_BENCH_IMAGE` (in pool `rbd`),
//! `RBD_BENCH_SIZE` (bytes), `RBD_BENCH_SECS` (per mode, default 5), `RBD_BENCH_QD` (16),
//! `RBD_BENCH_MODES` (default `randread,randwrite,write1m,read1m`), `RBD_BENCH_WRITE_CACHE`
//! (`0`: the LUN's write cache off, so every write is FUA, as Linux sees a user backstore by
//! default; default on).
#![cfg(feature = "rbd")]
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, Harness, LunSpec};

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

#[test]
#[ignore = "a benchmark: bench/rbd.sh runs it against a Ceph cluster"]
fn rbd_bench_through_the_emulated_ring() {
    let conf = env("TCMU_RBD_CONF").expect("TCMU_RBD_CONF (bench/rbd.sh sets it)");
    let image = env("RBD_BENCH_IMAGE").expect("RBD_BENCH_IMAGE");
    let size: u64 = env("RBD_BENCH_SIZE")
        .and_then(|s| s.parse().ok())
        .expect("RBD_BENCH_SIZE");
    let secs: f64 = env("RBD_BENCH_SECS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let qd: usize = env("RBD_BENCH_QD")
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let modes =
        env("RBD_BENCH_MODES").unwrap_or_else(|| "randread,randwrite,write1m,read1m".into());
    let backend = tcmu_warden::daemon::open_backend(
        "rbd",
        &format!("rbd/{image};conf={conf}"),
        "user_0/bench",
        size,
        None,
    )
    .expect("open the bench image");
    let bs = 4096usize;
    let lun = LunSpec::new(size, bs as u32)
        .hw_max_sectors(2048)
        .write_cache(env("RBD_BENCH_WRITE_CACHE").as_deref() != Some("0"))
        .serial("bench")
        .lun_info(backend.as_ref());
    // As the kernel does: blocks allocated lowest-free-first and adjacent ones merged into
    // one iovec, and a data area with room for the whole queue (16 x 1 MiB would fill a
    // 16 MiB one and measure ring-full stalls instead of the backend).
    let emu_cfg = EmuConfig {
        cmdr_size: 256 * 1024,
        data_size: 64 << 20,
        scatter: false,
        ..EmuConfig::default()
    };
    let dev_cfg = DeviceConfig {
        max_inflight: 256,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(backend, lun, emu_cfg, &dev_cfg);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut data = vec![0u8; 1 << 20];
    rng.fill(&mut data[..]);
    let blocks = size / bs as u64;
    for mode in modes.split(',') {
        let (len, write, random) = match mode {
            "randread" => (bs, false, true),
            "randwrite" => (bs, true, true),
            "write1m" => (1 << 20, true, false),
            "read1m" => (1 << 20, false, false),
            other => panic!("unknown mode {other}"),
        };
        let n = (len / bs) as u64;
        let mut next = 0u64;
        let mut inflight = 0usize;
        let mut ops = 0u64;
        let t = Instant::now();
        let end = Duration::from_secs_f64(secs);
        loop {
            let running = t.elapsed() < end;
            if running && inflight < qd {
                let lba = if random {
                    rng.gen_range(0..blocks / n) * n
                } else {
                    let l = next;
                    next = (next + n) % (blocks - blocks % n);
                    l
                };
                if write {
                    h.submit(
                        &cdb::write16(lba, n as u32, false),
                        DataDir::ToDevice(&data[..len]),
                    );
                } else {
                    h.submit(&cdb::read16(lba, n as u32), DataDir::FromDevice(len));
                }
                inflight += 1;
                continue;
            }
            if inflight == 0 {
                break;
            }
            for c in h.take_done(Duration::from_millis(5)) {
                assert_good(&c);
                inflight -= 1;
                ops += 1;
            }
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "RESULT {mode} ops={ops} secs={el:.2} iops={:.0} mib_s={:.1}",
            ops as f64 / el,
            (ops * len as u64) as f64 / el / f64::from(1 << 20)
        );
    }
    h.stop();
}
