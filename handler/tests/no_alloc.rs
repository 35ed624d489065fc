//! The hot path does not allocate: once a device is warmed up, 4 KiB READs and WRITEs at queue
//! depth 32 and SYNCHRONIZE CACHE run through the device thread, the workers and the RAM
//! backend without a single heap allocation.
//!
//! A counting global allocator counts every allocation made by a thread other than the test
//! thread (which plays the kernel through the emulation, and whose `reap` allocates each
//! completion's Data-In copy). No tracing subscriber is installed: disabled tracing macros
//! do not allocate.
//!
//! What the warm-up must cover. Command contexts are allocated as the queue depth grows, so
//! the warm-up first fills the queue to `max_inflight`. Besides buffers that keep their
//! capacity, two dependencies
//! allocate once per thread, lazily, at a moment that depends on scheduling:
//! crossbeam-channel's blocking context (a thread's first *blocking* `recv`) and parking_lot's
//! per-thread data (a thread's first *park* on a contended lock; the first park in the process
//! also creates parking_lot's global table). A worker that always found a job waiting, or
//! never lost a race for a lock during the warm-up, would do either for the first time in the
//! measured phase. So the backend and the doorbell are thin wrappers that, on their first use
//! on each thread, make that thread block once on a crossbeam channel and park once on a
//! parking_lot condvar; the warm-up goes on until every worker and the device thread have done
//! so. `NO_ALLOC_TRACE=1` prints a backtrace of every counted allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{Completed, DataDir, EmuConfig, EmuDoorbell};
use tcmu_ring::Doorbell;
use tcmu_warden::backend::io::Io;
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::{Backend, Caps};
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::cdb;
use tcmu_warden::testing::{Harness, LunSpec};

// ---- the counting allocator ----

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
/// Sizes of the first allocations counted, for the failure message.
static FIRST_SIZES: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];
/// `NO_ALLOC_TRACE=1`: print a backtrace of every counted allocation (diagnosis only).
static TRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on the test thread: its allocations are not counted.
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread prints a trace (whose own allocations are not counted).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note(size: usize) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        // `try_with` because a thread being torn down may still allocate; count it then.
        // A const-initialised thread-local of a `Cell<bool>` never allocates.
        if EXCLUDED.try_with(Cell::get).unwrap_or(false)
            || IN_TRACE.try_with(Cell::get).unwrap_or(false)
        {
            return;
        }
        let n = ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size, Ordering::Relaxed);
        if let Some(slot) = FIRST_SIZES.get(n) {
            slot.store(size, Ordering::Relaxed);
        }
        if TRACE.load(Ordering::Relaxed) && IN_TRACE.try_with(|t| !t.replace(true)).unwrap_or(false)
        {
            let bt = std::backtrace::Backtrace::force_capture();
            eprintln!(
                "allocation of {size} bytes on thread {:?}:\n{bt}",
                std::thread::current().name()
            );
            IN_TRACE.with(|t| t.set(false));
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting only touches
// atomics and const thread-locals, so it neither allocates nor unwinds (except the opt-in
// trace, which guards against re-entering itself).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- per-thread warm-up of the dependencies' lazy state ----

/// Threads that went through [`warm_this_thread`].
static WARMED_THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WARMED: Cell<bool> = const { Cell::new(false) };
}

/// Once per thread: block once on a crossbeam channel and park once on a parking_lot condvar,
/// so their per-thread state exists before the measured phase (see the module docs).
fn warm_this_thread() {
    if WARMED.with(|w| w.replace(true)) {
        return;
    }
    let (_tx, rx) = crossbeam_channel::bounded::<()>(1);
    // Past crossbeam's spinning, before the deadline: the receive blocks.
    let _ = rx.recv_timeout(Duration::from_millis(2));
    let m = parking_lot::Mutex::new(());
    let cv = parking_lot::Condvar::new();
    let _ = cv.wait_for(&mut m.lock(), Duration::from_micros(10));
    WARMED_THREADS.fetch_add(1, Ordering::SeqCst);
}

/// The RAM backend, warming each worker thread on its first operation.
struct WarmRam(RamBackend);

impl Backend for WarmRam {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn caps(&self) -> Caps {
        self.0.caps()
    }
    fn submit(&self, io: Io) {
        warm_this_thread();
        self.0.submit(io);
    }
}

/// The emulation's doorbell, warming the device thread.
struct WarmBell(EmuDoorbell);

impl Doorbell for WarmBell {
    fn raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
    fn ack(&self) -> std::io::Result<bool> {
        warm_this_thread();
        self.0.ack()
    }
    fn kick(&self) -> std::io::Result<()> {
        warm_this_thread();
        self.0.kick()
    }
}

// ---- the driver (the kernel's side, on the test thread) ----

const BS: u32 = 4096;
const BLOCKS: u64 = 16384; // 64 MiB
const BATCH: usize = 32;
const WORKERS: usize = 4;
const MAX_INFLIGHT: usize = 64;

/// The kernel's side, on the test thread: the shared harness (whose reaping allocates each
/// completion's Data-In copy here, on the excluded thread).
struct Driver {
    h: Harness,
}

impl Driver {
    fn run(&mut self, cdb: &[u8], dir: DataDir<'_>) {
        good(&self.h.run(cdb, dir));
    }

    /// 32 4 KiB commands, alternating WRITE and READ on distinct blocks from `lba`, plus an
    /// optional SYNCHRONIZE CACHE; waits for all of them. Returns the number of commands.
    fn batch(&mut self, lba: u64, payload: &[u8], ids: &mut Vec<u16>, sync: bool) -> usize {
        ids.clear();
        for i in 0..BATCH as u64 {
            let at = (lba + i) % BLOCKS;
            ids.push(if i % 2 == 0 {
                self.h
                    .submit(&cdb::write16(at, 1, false), DataDir::ToDevice(payload))
            } else {
                self.h
                    .submit(&cdb::read16(at, 1), DataDir::FromDevice(BS as usize))
            });
        }
        if sync {
            ids.push(self.h.submit(&cdb::sync16(), DataDir::None));
        }
        for &id in ids.iter() {
            good(&self.h.wait(id));
        }
        ids.len()
    }
}

#[track_caller]
fn good(c: &Completed) {
    assert_eq!(
        c.status,
        0,
        "expected GOOD, got status {:#x} sense {:02x?}",
        c.status,
        &c.sense[..18]
    );
}

#[test]
fn hot_path_makes_no_allocation() {
    EXCLUDED.with(|e| e.set(true));
    TRACE.store(
        std::env::var_os("NO_ALLOC_TRACE").is_some(),
        Ordering::SeqCst,
    );

    let size = BLOCKS * u64::from(BS);
    let backend = Arc::new(WarmRam(RamBackend::new(size)));
    let lun = LunSpec::new(size, BS)
        .hw_max_sectors(2048)
        .serial("no-alloc")
        .lun_info(backend.as_ref() as &dyn Backend);
    let dev_cfg = DeviceConfig {
        workers: WORKERS,
        max_inflight: MAX_INFLIGHT,
        ..DeviceConfig::default()
    };
    let mut h = Harness::kernel(EmuConfig::default());
    h.start_with_doorbell("test/lun0", backend, lun, &dev_cfg, |bell| {
        Box::new(WarmBell(bell))
    });
    let mut d = Driver { h };
    let payload = vec![0x5au8; BS as usize];
    let mut ids = Vec::with_capacity(BATCH + 1);

    // Warm-up: first the deepest queue the device allows, so it allocates all its contexts
    // (they are allocated as the queue depth grows, see `CtxPool`); then every kind of
    // command, on every context, with idle gaps (so every worker blocks on its queue), until
    // every worker and the device thread have been warmed.
    for _ in 0..4 {
        let deep: Vec<u16> = (0..2 * MAX_INFLIGHT as u64)
            .map(|i| {
                d.h.submit(
                    &cdb::read16(i % BLOCKS, 1),
                    DataDir::FromDevice(BS as usize),
                )
            })
            .collect();
        for id in deep {
            assert_eq!(d.h.wait(id).status, 0);
        }
    }
    let mut lba = 0;
    let t = Instant::now();
    let mut round = 0;
    while round < 40 || WARMED_THREADS.load(Ordering::SeqCst) < WORKERS + 1 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "only {} of {} device threads warmed up in 20 s",
            WARMED_THREADS.load(Ordering::SeqCst),
            WORKERS + 1
        );
        d.run(&cdb::inquiry(false, 0, 96), DataDir::FromDevice(96));
        d.run(&cdb::inquiry(true, 0x83, 255), DataDir::FromDevice(255));
        d.run(&cdb::sync16(), DataDir::None);
        lba += d.batch(lba, &payload, &mut ids, round % 4 == 0) as u64;
        d.run(
            &cdb::read16(lba % BLOCKS, 1),
            DataDir::FromDevice(BS as usize),
        );
        if round % 4 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        round += 1;
    }

    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut commands = 0;
    let mut round = 0;
    while commands < 5_000 {
        commands += d.batch(lba, &payload, &mut ids, round % 8 == 0);
        lba += BATCH as u64;
        round += 1;
        if round % 16 == 0 {
            // Idle now and then: workers block on their queue and wake up again.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let (n, bytes) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let sizes: Vec<usize> = FIRST_SIZES
        .iter()
        .take(n)
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let completed = d.h.stats().completed.load(Ordering::Relaxed);
    d.h.stop();
    assert_eq!(
        n, 0,
        "{n} allocations ({bytes} bytes) by the device thread and workers over {commands} commands \
         (sizes of the first ones {sizes:?}; device completed {completed}); \
         rerun with NO_ALLOC_TRACE=1 for their backtraces"
    );

    // The counter does see other threads: one that allocates is caught.
    COUNTING.store(true, Ordering::SeqCst);
    let t = std::thread::spawn(|| std::hint::black_box(Vec::<u8>::with_capacity(100)).capacity());
    let _ = t.join();
    COUNTING.store(false, Ordering::SeqCst);
    assert!(
        ALLOCS.load(Ordering::SeqCst) > 0,
        "the counting allocator missed another thread's allocation"
    );
    eprintln!("{commands} commands through the device: 0 allocations off the test thread");
}
