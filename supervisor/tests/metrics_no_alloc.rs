//! The per-command updates do not allocate: `command_done`, `observe_use`, `set_in_flight`
//! and the other hot-path calls, on a warmed-up `DeviceMetrics`, make no heap allocation.
//!
//! A counting global allocator counts allocations made on the measuring thread only, in a
//! count of that thread's own (the test harness's other threads, and the other test, may
//! allocate at any time).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tcmu_warden_supervisor::metrics::{BackendState, Metrics, OpClass, OutcomeClass};

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
    }
}

/// Allocations counted on this thread so far.
fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn hot_path_updates_do_not_allocate() {
    let m = Metrics::new();
    let d = m.device("lun0", "file");
    d.set_capacity(8 << 20, 1 << 30);
    let clone = d.clone();
    // Warm-up (nothing should need it, but a lazy first use must not count as per-command).
    d.command_done(OpClass::Read, OutcomeClass::Good, 4096, 0, [1, 4, 5, 2, 3]);
    d.observe_use(1, 1);

    MEASURING.with(|c| c.set(true));
    for i in 0..10_000u64 {
        let op = OpClass::ALL[usize::try_from(i).unwrap() % OpClass::ALL.len()];
        let oc = OutcomeClass::ALL[usize::try_from(i / 9).unwrap() % OutcomeClass::ALL.len()];
        d.command_done(op, oc, i * 512, 4096, [i * 1000, i, i, i * 50_000, 0]);
        clone.observe_use(
            (i * 64) % (8 << 20),
            (i * 4096) % (1 << 30) + (1 << 30) * (i % 2),
        );
        d.set_in_flight(i % 64);
    }
    // The rarer per-device events, with pre-resolved labels, do not allocate either.
    d.deadline_expired("handler");
    d.deadline_expired("kernel");
    d.tmr("abort_task");
    d.tmr("lun_reset");
    d.set_backend_state(BackendState::Lost);
    d.reopen();
    d.ping_latency(0.01);
    d.outlier();
    d.stuck_command();
    let n = allocs();
    // The counter counts (a check of the check).
    drop(std::hint::black_box(Box::new(n)));
    MEASURING.with(|c| c.set(false));
    assert_eq!(allocs(), n + 1, "the counting allocator does not count");

    assert_eq!(n, 0, "{n} allocations on the hot path");
    // The updates happened (the measurement measured something).
    let text = m.encode();
    let full = "tcmu_warden_ring_full_total{area=\"data_area\",device=\"lun0\",subtype=\"file\"}";
    let line = text
        .lines()
        .find(|l| l.starts_with(full))
        .expect("ring_full_total");
    assert!(line.ends_with(" 5000"), "{line}");
}

#[test]
fn adding_a_device_makes_a_handful_of_allocations_not_one_per_series() {
    let m = Metrics::new();
    // The first device may grow the table; measure the second.
    let _a = m.device("lun0", "file");
    let before = allocs();
    MEASURING.with(|c| c.set(true));
    let b = m.device("lun1", "file");
    MEASURING.with(|c| c.set(false));
    let n = allocs() - before;
    // The device's ~80 series are one allocation of atomics plus its names and its entry in
    // the table of live devices; a descriptor and label child per series (the metric
    // vectors' way) made over a thousand.
    assert!(n <= 16, "{n} allocations to add a device");
    b.outlier();
    assert!(m
        .encode()
        .contains("tcmu_warden_outliers_total{device=\"lun1\",subtype=\"file\"} 1"));
}
