//! Benchmark: tcmu-warden's glfs backend (through the emulated ring) beside a direct gfapi
//! client of ours, on the same volume, file flags and queue depths, in the same run.
//!
//! Ignored by default; `tests/gluster/run.sh` runs it (`BENCH_SECONDS` per phase, 3 by
//! default) and the lines it prints end with one containing `ratio`.
#![cfg(feature = "glfs")]
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use gfapi::{CompletionQueue, Volume, VolumeConfig};
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::glfs;
use tcmu_warden::backend::registry::OpenCtx;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{cdb, Harness, LunSpec};

const SIZE: u64 = 256 << 20;
const BS: usize = 512;

#[derive(Clone, Copy, Debug)]
enum Phase {
    RandRead4k,
    RandWrite4k,
    SeqWrite1m,
}

impl Phase {
    fn io(self) -> usize {
        match self {
            Phase::RandRead4k | Phase::RandWrite4k => 4096,
            Phase::SeqWrite1m => 1 << 20,
        }
    }
    fn depth(self) -> usize {
        match self {
            Phase::RandRead4k | Phase::RandWrite4k => 32,
            Phase::SeqWrite1m => 4,
        }
    }
    fn write(self) -> bool {
        !matches!(self, Phase::RandRead4k)
    }
}

fn seconds() -> Duration {
    Duration::from_secs_f64(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

/// Offsets: random 4 KiB-aligned, or sequential wrapping.
struct Offsets {
    rng: rand::rngs::StdRng,
    next: u64,
}

impl Offsets {
    fn get(&mut self, p: Phase) -> u64 {
        let n = p.io() as u64;
        match p {
            Phase::SeqWrite1m => {
                let o = self.next;
                self.next = (self.next + n) % SIZE;
                o
            }
            _ => self.rng.gen_range(0..SIZE / n) * n,
        }
    }
}

/// The direct client: gfapi's async calls at the same depth; returns ops per second.
fn direct(vol: &Arc<Volume>, path: &str, p: Phase) -> f64 {
    let fd = Arc::new(
        vol.open(path, glfs::backend::OPEN_FLAGS)
            .expect("open the bench file"),
    );
    let cq: CompletionQueue<usize> = CompletionQueue::new(64);
    // One aligned buffer per slot.
    let mut bufs: Vec<Vec<u8>> = (0..p.depth()).map(|_| vec![0x5a; p.io() + 4096]).collect();
    let iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| {
            let off = b.as_ptr().align_offset(4096);
            libc::iovec {
                iov_base: b[off..].as_mut_ptr().cast(),
                iov_len: p.io(),
            }
        })
        .collect();
    let mut offs = Offsets {
        rng: rand::rngs::StdRng::seed_from_u64(1),
        next: 0,
    };
    let mut free: Vec<usize> = (0..p.depth()).collect();
    let (t0, dur) = (Instant::now(), seconds());
    let mut done = 0u64;
    loop {
        let running = t0.elapsed() < dur;
        while let Some(i) = if running { free.pop() } else { None } {
            let at = offs.get(p);
            let iov = std::slice::from_ref(&iovs[i]);
            // SAFETY: buffer i is used by this operation only until its completion comes back
            // (the slot index is returned to `free` only then), and `bufs` outlives the loop.
            let r = unsafe {
                if p.write() {
                    cq.pwritev(&fd, iov, at, 0, i)
                } else {
                    cq.preadv(&fd, iov, at, i)
                }
            };
            r.map_err(|(_, e)| e).expect("start a gfapi operation");
        }
        if !running && free.len() == p.depth() {
            break;
        }
        let c = cq.recv().expect("a completion");
        c.result.expect("gfapi operation");
        done += 1;
        free.push(c.payload);
    }
    done as f64 / t0.elapsed().as_secs_f64()
}

/// tcmu-warden: the same through the emulated ring and the glfs backend.
fn warden(h: &mut Harness, p: Phase) -> f64 {
    let blocks = (p.io() / BS) as u32;
    let data = vec![0x5au8; p.io()];
    let mut offs = Offsets {
        rng: rand::rngs::StdRng::seed_from_u64(2),
        next: 0,
    };
    let mut pending: VecDeque<u16> = VecDeque::new();
    let (t0, dur) = (Instant::now(), seconds());
    let mut done = 0u64;
    loop {
        let running = t0.elapsed() < dur;
        while running && pending.len() < p.depth() {
            let lba = offs.get(p) / BS as u64;
            let id = if p.write() {
                h.submit(&cdb::write16(lba, blocks, false), DataDir::ToDevice(&data))
            } else {
                h.submit(&cdb::read16(lba, blocks), DataDir::FromDevice(p.io()))
            };
            pending.push_back(id);
        }
        if pending.is_empty() {
            break;
        }
        h.pump(Duration::from_millis(1));
        pending.retain(|&id| match h.take(id) {
            Some(c) => {
                assert_eq!(c.status, 0, "bench command failed");
                done += 1;
                false
            }
            None => true,
        });
    }
    done as f64 / t0.elapsed().as_secs_f64()
}

#[test]
#[ignore = "needs a gluster volume: tests/gluster/run.sh"]
fn bench_warden_vs_direct_gfapi() {
    let volume = std::env::var("GLUSTER_VOLUME").expect("GLUSTER_VOLUME: run tests/gluster/run.sh");
    let host = std::env::var("GLUSTER_HOST").expect("GLUSTER_HOST");
    let cfg = format!("{volume}@{host}/bench.img");
    let ctx = OpenCtx::new("bench/glfs", SIZE);
    let backend: Arc<dyn Backend> = glfs::open(&cfg, &ctx).expect("open the bench LUN");
    let lun = LunSpec::new(SIZE, BS as u32)
        .hw_max_sectors(2048)
        .serial("bench")
        .lun_info(backend.as_ref());
    let emu = EmuConfig {
        data_size: 64 << 20,
        ..EmuConfig::default()
    };
    let dev = DeviceConfig {
        max_inflight: 64,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(Arc::clone(&backend), lun, emu, &dev);
    let vol = Volume::connect(
        &VolumeConfig {
            volume: volume.clone(),
            servers: vec![gfapi::Server {
                transport: "tcp".into(),
                host: host.clone(),
                port: 24007,
            }],
            xlator_options: vec![(
                "*-write-behind".into(),
                "strict-O_DIRECT".into(),
                "on".into(),
            )],
            log: None,
        },
        Duration::from_secs(15),
    )
    .expect("connect the direct client");
    // Fill the file once so reads hit written data in both runs.
    warden(&mut h, Phase::SeqWrite1m);
    let mut ratios = Vec::new();
    println!(
        "glfs benchmark on volume {volume} ({} s per phase, same file, O_DIRECT, same depth)",
        seconds().as_secs_f64()
    );
    for p in [Phase::RandRead4k, Phase::RandWrite4k, Phase::SeqWrite1m] {
        let d = direct(&vol, "/bench.img", p);
        let w = warden(&mut h, p);
        let (unit, scale) = match p {
            Phase::SeqWrite1m => ("MiB/s", 1.0),
            _ => ("IOPS", 1.0),
        };
        println!(
            "{p:?} QD{}: tcmu-warden {:.0} {unit}, gfapi direct {:.0} {unit}",
            p.depth(),
            w * scale,
            d * scale
        );
        ratios.push((p, w / d));
    }
    h.stop();
    println!(
        "ratio tcmu-warden/gfapi: {}",
        ratios
            .iter()
            .map(|(p, r)| format!("{p:?} {r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
