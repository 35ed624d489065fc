//! Shared pieces of the micro-benchmarks in `benches/` (see `bench/README.md`).
//!
//! A [`Rig`] is one LUN served by the real dispatcher with the RAM backend, over the
//! in-process emulation of the kernel's side of the ring: the shared test harness
//! (`tcmu_warden::testing::Harness`). The benchmark thread plays the kernel: it submits a
//! batch of commands, waits for the handler's kick, reaps the completions, and repeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{Harness, LunSpec};

/// Bytes moved by every benchmarked command.
pub const IO_BYTES: usize = 4096;
/// Logical block size of the benchmarked LUN (one block per command).
pub const BLOCK_SIZE: u32 = 4096;
/// LUN size: 64 MiB, so batches of commands spread over distinct blocks.
pub const LUN_BYTES: u64 = 64 << 20;
/// Blocks in the LUN.
pub const LUN_BLOCKS: u64 = LUN_BYTES / BLOCK_SIZE as u64;

/// The benchmarked operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// READ(16) of one 4 KiB block.
    Read,
    /// WRITE(16) of one 4 KiB block.
    Write,
}

impl Op {
    /// Name used in benchmark ids and the table.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// READ(16) / WRITE(16) CDB of `blocks` blocks at `lba`.
#[must_use]
pub fn rw16(op: Op, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = match op {
        Op::Read => 0x88,
        Op::Write => 0x8A,
    };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// One LUN served by the dispatcher over the emulated ring.
pub struct Rig {
    h: Harness,
    ids: Vec<u16>,
    payload: Vec<u8>,
    next_lba: u64,
}

impl Rig {
    /// A RAM-backed LUN served with the default [`DeviceConfig`].
    ///
    /// # Panics
    /// If the emulated ring or the device cannot be created.
    #[must_use]
    pub fn new() -> Rig {
        Rig::with_config(&DeviceConfig::default())
    }

    /// A RAM-backed LUN served with `dev_cfg`.
    ///
    /// # Panics
    /// If the emulated ring or the device cannot be created.
    #[must_use]
    pub fn with_config(dev_cfg: &DeviceConfig) -> Rig {
        let backend = Arc::new(RamBackend::new(LUN_BYTES));
        let lun = LunSpec::new(LUN_BYTES, BLOCK_SIZE)
            .hw_max_sectors(2048)
            .serial("bench")
            .lun_info(backend.as_ref() as &dyn Backend);
        // Ring and data area sized like the kernel's defaults (8 MiB ring, 4 MiB data), far
        // more than a batch of 32 needs, so the benchmark never waits for ring space.
        let mut h = Harness::kernel(EmuConfig::default());
        h.start("bench/lun0", backend, lun, dev_cfg);
        let payload = (0..IO_BYTES)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        Rig {
            h,
            ids: Vec::with_capacity(64),
            payload,
            next_lba: 0,
        }
    }

    /// Submit `batch` 4 KiB commands to distinct blocks, wait for all their completions and
    /// reap them. Returns the number of commands completed (`batch`).
    ///
    /// # Panics
    /// On a protocol violation by the handler, a status other than GOOD, or a command not
    /// completed within the harness's wait limit (30 s).
    pub fn run_batch(&mut self, op: Op, batch: usize) -> usize {
        self.ids.clear();
        for _ in 0..batch {
            let cdb = rw16(op, self.next_lba, 1);
            self.next_lba = (self.next_lba + 1) % LUN_BLOCKS;
            let dir = match op {
                Op::Read => DataDir::FromDevice(IO_BYTES),
                Op::Write => DataDir::ToDevice(&self.payload),
            };
            self.ids.push(self.h.submit(&cdb, dir));
        }
        for &id in &self.ids {
            let c = self.h.wait(id);
            assert_eq!(
                c.status,
                0,
                "command {} failed: sense {:02x?}",
                c.cmd_id,
                &c.sense[..18]
            );
        }
        self.ids.len()
    }

    /// Stop the device and wait for its threads.
    pub fn stop(&mut self) {
        self.h.stop();
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

/// CPU time (user + system) consumed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// The whole process: every thread, the handler's and the benchmark's.
    pub process: Duration,
    /// The calling thread only.
    pub thread: Duration,
}

fn rusage(who: libc::c_int) -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage struct; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    let r = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    assert_eq!(r, 0, "getrusage failed");
    // SAFETY: zero-initialised, and getrusage filled it in on success.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `getrusage(RUSAGE_SELF)` and `getrusage(RUSAGE_THREAD)`, user + system.
#[must_use]
pub fn cpu_times() -> CpuTimes {
    CpuTimes {
        process: rusage(libc::RUSAGE_SELF),
        thread: rusage(libc::RUSAGE_THREAD),
    }
}

/// One row of the results table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Operation.
    pub op: Op,
    /// Commands per batch.
    pub batch: usize,
    /// Commands measured.
    pub commands: u64,
    /// Wall time per command, ns.
    pub wall_ns: f64,
    /// Process CPU time per command (handler threads + the emulated kernel), ns.
    pub cpu_ns: f64,
    /// Process CPU minus the benchmark thread's (device thread + workers), ns.
    pub handler_cpu_ns: f64,
    /// memcpy of 4 KiB, ns (measured with the same batch size).
    pub memcpy_ns: f64,
    /// Per-stage accounting and the outlier log were on.
    pub accounting: bool,
}

/// Run `commands` commands (rounded up to whole batches) on a fresh rig after a warm-up and
/// measure wall and CPU time per command.
#[must_use]
pub fn measure(op: Op, batch: usize, commands: u64, memcpy_ns: f64, accounting: bool) -> Row {
    let cfg = DeviceConfig {
        outlier_threshold: accounting.then_some(Duration::from_secs(1)),
        ..DeviceConfig::default()
    };
    let mut rig = Rig::with_config(&cfg);
    let batches = commands.div_ceil(batch as u64).max(1);
    for _ in 0..(batches / 10).max(4) {
        rig.run_batch(op, batch);
    }
    let (c0, t0) = (cpu_times(), Instant::now());
    let mut n = 0u64;
    for _ in 0..batches {
        n += rig.run_batch(op, batch) as u64;
    }
    let (wall, c1) = (t0.elapsed(), cpu_times());
    rig.stop();
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    let process = c1.process.saturating_sub(c0.process);
    let driver = c1.thread.saturating_sub(c0.thread);
    Row {
        op,
        batch,
        commands: n,
        wall_ns: per(wall),
        cpu_ns: per(process),
        handler_cpu_ns: per(process.saturating_sub(driver)),
        memcpy_ns,
        accounting,
    }
}

/// Source and destination buffers for the memcpy floor of a batch.
pub struct Memcpy {
    src: Vec<u8>,
    dst: Vec<u8>,
}

impl Memcpy {
    /// Buffers of `batch` × 4 KiB.
    #[must_use]
    pub fn new(batch: usize) -> Memcpy {
        Memcpy {
            src: (0..batch * IO_BYTES)
                .map(|i| u8::try_from(i % 253).unwrap_or(0))
                .collect(),
            dst: vec![0; batch * IO_BYTES],
        }
    }

    /// Copy the batch, 4 KiB at a time (as the handler moves one command's data).
    pub fn copy(&mut self) {
        for (d, s) in self
            .dst
            .chunks_exact_mut(IO_BYTES)
            .zip(self.src.chunks_exact(IO_BYTES))
        {
            d.copy_from_slice(std::hint::black_box(s));
        }
        std::hint::black_box(&mut self.dst);
    }
}

/// ns per 4 KiB memcpy at this batch size: the best of 5 timed runs that together copy at
/// least `bytes` (a floor, so the least disturbed run is the one that counts).
#[must_use]
pub fn memcpy_floor(batch: usize, bytes: u64) -> f64 {
    const RUNS: u64 = 5;
    let mut m = Memcpy::new(batch);
    let per_round = (batch * IO_BYTES) as u64;
    let rounds = (bytes / RUNS).div_ceil(per_round).max(16);
    for _ in 0..rounds / 4 {
        m.copy();
    }
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..rounds {
                m.copy();
            }
            t.elapsed().as_nanos() as f64 / (rounds as f64 * batch as f64)
        })
        .fold(f64::INFINITY, f64::min)
}

/// The results table, as printed at the end of `cargo bench --bench ring`.
#[must_use]
pub fn format_table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    const HEAD: [&str; 11] = [
        "op",
        "acct",
        "batch",
        "commands",
        "wall ns/cmd",
        "cpu ns/cmd",
        "cmds/s/core",
        "hdlr cpu ns/cmd",
        "hdlr cmds/s/core",
        "memcpy ns/4KiB",
        "hdlr/memcpy",
    ];
    let mut s = String::new();
    for (i, h) in HEAD.iter().enumerate() {
        let _ = if i == 0 {
            write!(s, "{h:<5}")
        } else {
            write!(s, " {h:>w$}", w = h.len())
        };
    }
    s.push('\n');
    for r in rows {
        let cells = [
            r.op.name().to_string(),
            if r.accounting { "on" } else { "off" }.to_string(),
            r.batch.to_string(),
            r.commands.to_string(),
            format!("{:.0}", r.wall_ns),
            format!("{:.0}", r.cpu_ns),
            format!("{:.0}", 1e9 / r.cpu_ns),
            format!("{:.0}", r.handler_cpu_ns),
            format!("{:.0}", 1e9 / r.handler_cpu_ns),
            format!("{:.1}", r.memcpy_ns),
            format!("{:.1}", r.handler_cpu_ns / r.memcpy_ns),
        ];
        for (i, (c, h)) in cells.iter().zip(HEAD).enumerate() {
            let _ = if i == 0 {
                write!(s, "{c:<5}")
            } else {
                write!(s, " {c:>w$}", w = h.len())
            };
        }
        s.push('\n');
    }
    s
}
