//! Locking the daemon's memory (`mlockall`) without faulting in the uio data area.
//!
//! With `MCL_FUTURE` in force, `mmap` populates every new mapping, and it decides so before it
//! clears the lock flags on the uio mapping (a `VM_SPECIAL` area that is never locked). The
//! populate then faults the first data-area page, which the kernel has not allocated, and
//! `target_core_user` logs "Invalid addr to data page mapping" for it. So the uio mapping is
//! made with `MCL_FUTURE` briefly lifted, and `MCL_FUTURE` is restored without `MCL_CURRENT`
//! (which would populate every mapping again, the uio area included). A mapping another thread
//! makes in that window (a few microseconds) is not locked; device buffers are allocated
//! before it, on the opening thread.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tcmu_ring::{Mapping, RingError, Uio};

static LOCKED: AtomicBool = AtomicBool::new(false);
static SEQUENCE: Mutex<()> = Mutex::new(());

const ALL: libc::c_int = libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT;

/// Lock current and future memory (pages lock as they are touched; our own buffers are
/// touched when a device starts). Returns whether it worked.
pub fn lock_all() -> bool {
    // SAFETY: mlockall takes flags only.
    let ok = unsafe { libc::mlockall(ALL) } == 0;
    LOCKED.store(ok, Ordering::SeqCst);
    ok
}

/// Map a uio device's region without populating it.
///
/// # Errors
/// The mmap's error.
pub fn map_uio(uio: &Uio) -> Result<Mapping, RingError> {
    if !LOCKED.load(Ordering::SeqCst) {
        return uio.map();
    }
    let _one_at_a_time = SEQUENCE.lock();
    // SAFETY: mlockall takes flags only. Without MCL_FUTURE, new mappings are not populated.
    unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_ONFAULT) };
    let m = uio.map();
    // SAFETY: as above. Without MCL_CURRENT, existing mappings keep their locks and nothing
    // is populated.
    if unsafe { libc::mlockall(libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        tracing::error!(
            "re-locking memory failed ({}): memory is no longer locked",
            nix::errno::Errno::last()
        );
        LOCKED.store(false, Ordering::SeqCst);
    }
    m
}
