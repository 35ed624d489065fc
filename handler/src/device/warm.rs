//! Memory and per-thread state made ready when a device starts, so that the I/O path never
//! allocates and never takes a page fault that could wait on memory reclaim.

/// A zeroed buffer whose pages are faulted in now, so that (with `mlockall(MCL_ONFAULT)`) they
/// are resident and locked before any I/O needs them: the I/O path never takes a page fault
/// that could wait on memory reclaim.
#[must_use]
pub fn resident(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for page in v.chunks_mut(4096) {
        // SAFETY: `page` is a valid, exclusive slice of at least one byte; a volatile write
        // keeps the compiler from eliding the store to memory it knows is zero.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    v
}

/// Create this thread's lazily allocated synchronisation state now, at start, rather than on
/// the first command that blocks: crossbeam-channel's per-thread waiting context and
/// parking_lot's per-thread parking data (which may also grow its global table). Called
/// first thing on every device and worker thread, so the I/O path never allocates.
pub fn warm_thread() {
    let (_tx, rx) = crossbeam_channel::bounded::<()>(1);
    let _ = rx.recv_timeout(std::time::Duration::from_micros(1));
    let m = parking_lot::Mutex::new(());
    let cv = parking_lot::Condvar::new();
    let mut g = m.lock();
    let _ = cv.wait_for(&mut g, std::time::Duration::from_micros(1));
}
