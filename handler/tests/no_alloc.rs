//! The hot path does not allocate: once a device is warmed up, 4 KiB READs and WRITEs at queue
//! depth 32 and SYNCHRONIZE CACHE run through the device thread, the workers and the RAM
//! backend without a single heap allocation.
//!
//! A counting global allocator counts every allocation made by a thread other than the test
//! thread (which plays the kernel through the emulation, and whose `reap` allocates each
//! completion's Data-In copy). No tracing subscriber is installed: disabled tracing macros
//! do not allocate.

mod common;

use common::{assert_good, cdbs, Harness};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tcmu_ring::emu::{Completed, DataDir, EmuConfig};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::backend::Backend;
use tcmu_warden::device::DeviceConfig;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
/// Sizes of the first allocations counted, for the failure message.
static FIRST_SIZES: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];

thread_local! {
    /// Set on the test thread: its allocations are not counted.
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note(size: usize) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        // `try_with` because a thread being torn down may still allocate; count it then.
        // A const-initialised thread-local of a `Cell<bool>` never allocates.
        if EXCLUDED.try_with(Cell::get).unwrap_or(false) {
            return;
        }
        let n = ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size, Ordering::Relaxed);
        if let Some(slot) = FIRST_SIZES.get(n) {
            slot.store(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting only touches
// atomics and a const thread-local, so it neither allocates nor unwinds.
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

const BS: u32 = 4096;
const BLOCKS: u64 = 16384; // 64 MiB
const BATCH: usize = 32;

fn inquiry_and_sync(h: &mut Harness) {
    let c = h.run(&cdbs::inquiry(false, 0, 96), DataDir::FromDevice(96));
    assert_good(&c);
    let c = h.run(&cdbs::inquiry(true, 0x83, 255), DataDir::FromDevice(255));
    assert_good(&c);
    let c = h.run(&cdbs::sync16(), DataDir::None);
    assert_good(&c);
}

/// Submit a batch of 32 4 KiB commands (alternating WRITE and READ on distinct blocks) plus,
/// every `sync_every` batches, a SYNCHRONIZE CACHE; wait for all of them.
fn batch(h: &mut Harness, base: u64, payload: &[u8], ids: &mut Vec<u16>, with_sync: bool) -> usize {
    ids.clear();
    for i in 0..BATCH as u64 {
        let lba = (base + i) % BLOCKS;
        let id = if i % 2 == 0 {
            h.submit(&cdbs::write16(lba, 1, false), DataDir::ToDevice(payload))
        } else {
            h.submit(&cdbs::read16(lba, 1), DataDir::FromDevice(BS as usize))
        };
        ids.push(id);
    }
    if with_sync {
        ids.push(h.submit(&cdbs::sync16(), DataDir::None));
    }
    for &id in ids.iter() {
        let c: Completed = h.wait(id);
        assert_good(&c);
    }
    ids.len()
}

#[test]
fn hot_path_makes_no_allocation() {
    EXCLUDED.with(|e| e.set(true));

    let size = BLOCKS * u64::from(BS);
    let backend = Arc::new(RamBackend::new(size));
    let lun = tcmu_warden::daemon::lun_info(
        &tcmu_warden::configfs::DeviceAttrs {
            dev_size: size,
            block_size: BS,
            hw_max_sectors: 2048,
            write_cache: true,
            serial: Some("no-alloc".into()),
            cmd_time_out: None,
            qfull_time_out: None,
        },
        backend.as_ref() as &dyn Backend,
        "x",
    );
    let emu_cfg = EmuConfig::default();
    let dev_cfg = DeviceConfig {
        workers: 4,
        max_inflight: 64,
        ..DeviceConfig::default()
    };
    let mut h = Harness::new(backend, lun, emu_cfg, &dev_cfg);
    let payload = vec![0x5au8; BS as usize];
    let mut ids = Vec::with_capacity(BATCH + 1);

    // Warm-up: every worker blocks and wakes, every context runs each kind of command, so
    // whatever grows lazily (thread-locals of the channels and locks, ...) has its capacity.
    let mut lba = 0;
    for round in 0..40 {
        inquiry_and_sync(&mut h);
        lba += batch(&mut h, lba, &payload, &mut ids, round % 4 == 0) as u64;
        let c = h.run(
            &cdbs::read16(lba % BLOCKS, 1),
            DataDir::FromDevice(BS as usize),
        );
        assert_good(&c);
    }

    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let mut commands = 0;
    let mut round = 0;
    while commands < 5_000 {
        commands += batch(&mut h, lba, &payload, &mut ids, round % 8 == 0);
        lba += BATCH as u64;
        round += 1;
    }
    COUNTING.store(false, Ordering::SeqCst);
    let (n, bytes) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let sizes: Vec<usize> = FIRST_SIZES
        .iter()
        .take(n)
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let completed = h
        .dev
        .as_ref()
        .map(|d| d.stats.completed.load(Ordering::Relaxed));
    h.stop();
    assert_eq!(
        n, 0,
        "{n} allocations ({bytes} bytes) by the device thread and workers over {commands} commands \
         (sizes of the first ones {sizes:?}; device completed {completed:?})"
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
