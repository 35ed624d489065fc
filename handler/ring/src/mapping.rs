//! The shared TCMU mapping: `[mailbox | command ring | data area]`.
//!
//! The kernel writes this memory concurrently, so — as in rust-vmm's `vm-memory` — no Rust
//! reference (`&`/`&mut`) to any of its bytes is ever created. Every access goes through a
//! raw pointer with `read_volatile`/`write_volatile`/`copy_nonoverlapping`, after a bounds
//! check against the mapping length. The only exception is the two mailbox index words
//! (`cmd_head`, `cmd_tail`), which are accessed through a `&AtomicU32` obtained with
//! [`AtomicU32::from_ptr`]: atomics are designed to be shared with other writers, so a
//! reference to an atomic is sound even while the kernel writes the same word.

use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{mmap, mprotect, munmap, MapFlags, ProtFlags};

use crate::error::RingError;

/// A `MAP_SHARED` read/write mapping of a whole uio region (or of an emulation memfd).
///
/// Only the constructor touches `unsafe` mmap; every accessor is safe and bounds-checked.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `Mapping` only holds the address and length of a process-wide shared mapping; all
// accesses are volatile/atomic through raw pointers, so moving it between threads is fine.
unsafe impl Send for Mapping {}
// SAFETY: no method hands out references into the mapping; concurrent volatile accesses from
// several threads are no different from the kernel writing concurrently, which the accessors
// already tolerate (callers coordinate who writes which bytes, as the ring protocol dictates).
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(fd, len, PROT_READ|PROT_WRITE, MAP_SHARED, offset 0)`, made as `PROT_NONE` and
    /// then opened with `mprotect`.
    ///
    /// For a uio device `len` must equal `maps/map0/size` exactly (the kernel refuses anything
    /// else with EINVAL), and the mapping must be `MAP_SHARED` (docs/kernel-abi.md pitfall 20).
    ///
    /// Why two steps: in a process that called `mlockall(MCL_FUTURE)`, `mmap` populates every
    /// new accessible mapping, which faults in the TCMU data area whose pages the kernel
    /// allocates only on demand (it logs "Invalid addr to data page mapping"). An inaccessible
    /// mapping is not populated, and `mprotect` does not populate a shared one.
    pub fn map_shared(fd: BorrowedFd<'_>, len: usize) -> Result<Mapping, RingError> {
        let nz = NonZeroUsize::new(len).ok_or(RingError::OutOfBounds {
            off: 0,
            len: 0,
            map_len: 0,
        })?;
        // SAFETY: we ask the kernel for a fresh mapping (addr None) so no existing memory is
        // replaced; the result is only ever accessed through bounds-checked raw pointers.
        let ptr = unsafe { mmap(None, nz, ProtFlags::PROT_NONE, MapFlags::MAP_SHARED, fd, 0) }
            .map_err(RingError::Map)?;
        let map = Mapping {
            base: ptr.cast::<u8>(),
            len,
        };
        // SAFETY: `ptr`/`len` describe exactly the mapping just made, which nothing accesses
        // yet; on failure `map` is dropped and unmapped.
        unsafe { mprotect(ptr, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE) }
            .map_err(RingError::Map)?;
        Ok(map)
    }

    /// Length of the mapping in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has a non-zero length.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address, for building iovecs handed to the kernel (preadv/pwritev).
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Returns a raw pointer to `[off, off+size)` after checking it lies inside the mapping.
    fn checked(&self, off: usize, size: usize) -> Result<*mut u8, RingError> {
        let end = off.checked_add(size).ok_or(RingError::OutOfBounds {
            off: off as u64,
            len: size as u64,
            map_len: self.len,
        })?;
        if end > self.len {
            return Err(RingError::OutOfBounds {
                off: off as u64,
                len: size as u64,
                map_len: self.len,
            });
        }
        // `off <= len`, so the pointer stays inside (or one past) the mapping; wrapping_add
        // needs no unsafe and cannot actually wrap here.
        Ok(self.base.as_ptr().wrapping_add(off))
    }

    /// Checks that `[off, off+len)` lies inside the mapping.
    pub fn check_range(&self, off: u64, len: u64) -> Result<(), RingError> {
        let o = usize::try_from(off).map_err(|_| RingError::OutOfBounds {
            off,
            len,
            map_len: self.len,
        })?;
        let l = usize::try_from(len).map_err(|_| RingError::OutOfBounds {
            off,
            len,
            map_len: self.len,
        })?;
        self.checked(o, l).map(drop)
    }

    /// Volatile read of one byte.
    pub fn read_u8(&self, off: usize) -> Result<u8, RingError> {
        let p = self.checked(off, 1)?;
        // SAFETY: `p` is in bounds of the live mapping (checked above); volatile because the
        // kernel may write concurrently.
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile read of a native-endian u16 (unaligned allowed).
    pub fn read_u16(&self, off: usize) -> Result<u16, RingError> {
        let p = self.checked(off, 2)?;
        // SAFETY: 2 bytes in bounds (checked); `read_unaligned` semantics are provided by
        // reading a byte array, which has alignment 1.
        let b = unsafe { p.cast::<[u8; 2]>().read_volatile() };
        Ok(u16::from_ne_bytes(b))
    }

    /// Volatile read of a native-endian u32 (unaligned allowed).
    pub fn read_u32(&self, off: usize) -> Result<u32, RingError> {
        let p = self.checked(off, 4)?;
        // SAFETY: 4 bytes in bounds (checked); `[u8; 4]` has alignment 1.
        let b = unsafe { p.cast::<[u8; 4]>().read_volatile() };
        Ok(u32::from_ne_bytes(b))
    }

    /// Volatile read of a native-endian u64 (unaligned allowed).
    pub fn read_u64(&self, off: usize) -> Result<u64, RingError> {
        let p = self.checked(off, 8)?;
        // SAFETY: 8 bytes in bounds (checked); `[u8; 8]` has alignment 1.
        let b = unsafe { p.cast::<[u8; 8]>().read_volatile() };
        Ok(u64::from_ne_bytes(b))
    }

    /// Volatile write of one byte.
    pub fn write_u8(&self, off: usize, v: u8) -> Result<(), RingError> {
        let p = self.checked(off, 1)?;
        // SAFETY: in bounds of the live, writable mapping (checked).
        unsafe { p.write_volatile(v) };
        Ok(())
    }

    /// Volatile write of a native-endian u16.
    pub fn write_u16(&self, off: usize, v: u16) -> Result<(), RingError> {
        let p = self.checked(off, 2)?;
        // SAFETY: 2 bytes in bounds (checked); `[u8; 2]` has alignment 1.
        unsafe { p.cast::<[u8; 2]>().write_volatile(v.to_ne_bytes()) };
        Ok(())
    }

    /// Volatile write of a native-endian u32.
    pub fn write_u32(&self, off: usize, v: u32) -> Result<(), RingError> {
        let p = self.checked(off, 4)?;
        // SAFETY: 4 bytes in bounds (checked); `[u8; 4]` has alignment 1.
        unsafe { p.cast::<[u8; 4]>().write_volatile(v.to_ne_bytes()) };
        Ok(())
    }

    /// Volatile write of a native-endian u64.
    pub fn write_u64(&self, off: usize, v: u64) -> Result<(), RingError> {
        let p = self.checked(off, 8)?;
        // SAFETY: 8 bytes in bounds (checked); `[u8; 8]` has alignment 1.
        unsafe { p.cast::<[u8; 8]>().write_volatile(v.to_ne_bytes()) };
        Ok(())
    }

    /// Copies `dst.len()` bytes at `off` out of the mapping.
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> Result<(), RingError> {
        let p = self.checked(off, dst.len())?;
        // SAFETY: source range in bounds (checked); `dst` is a private buffer that cannot
        // overlap the shared mapping (no reference into the mapping is ever created).
        unsafe { std::ptr::copy_nonoverlapping(p.cast_const(), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the mapping at `off`.
    pub fn copy_in(&self, off: usize, src: &[u8]) -> Result<(), RingError> {
        let p = self.checked(off, src.len())?;
        // SAFETY: destination range in bounds of the writable mapping (checked); `src` is
        // private memory, never a view of the mapping, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    /// Sets `len` bytes at `off` to `byte`.
    pub fn fill(&self, off: usize, len: usize, byte: u8) -> Result<(), RingError> {
        let p = self.checked(off, len)?;
        // SAFETY: range in bounds of the writable mapping (checked).
        unsafe { std::ptr::write_bytes(p, byte, len) };
        Ok(())
    }

    /// The atomic at `off` (4-aligned, in bounds). This is the single place a reference into
    /// the mapping is formed: a `&AtomicU32`, which is designed to be shared with other
    /// writers (here: the kernel).
    fn atomic_u32(&self, off: usize) -> Result<&AtomicU32, RingError> {
        if off % 4 != 0 {
            return Err(RingError::Misaligned { off: off as u64 });
        }
        let p = self.checked(off, 4)?;
        if (p as usize) % std::mem::align_of::<AtomicU32>() != 0 {
            return Err(RingError::Misaligned { off: off as u64 });
        }
        // SAFETY: `p` is in bounds, 4-aligned (checked above) and valid for as long as `self`
        // (the mapping is unmapped only in Drop); every access to this word by either side is
        // atomic (the kernel uses READ_ONCE/smp_store_release), so an `&AtomicU32` is sound.
        Ok(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) })
    }

    /// `load(Acquire)` of the u32 at `off` (must be 4-aligned).
    pub fn load_acquire_u32(&self, off: usize) -> Result<u32, RingError> {
        Ok(self.atomic_u32(off)?.load(Ordering::Acquire))
    }

    /// `store(Release)` of the u32 at `off` (must be 4-aligned).
    pub fn store_release_u32(&self, off: usize, v: u32) -> Result<(), RingError> {
        self.atomic_u32(off)?.store(v, Ordering::Release);
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` came from a successful mmap and no reference into the mapping
        // outlives `self` (accessors hand out copies only; DataArea iovecs are documented as
        // valid only while the DataArea — which holds an Arc<Mapping> — is alive).
        if let Err(e) = unsafe { munmap(self.base.cast(), self.len) } {
            tracing::error!(error = %e, "munmap of the TCMU region failed");
        }
    }
}
