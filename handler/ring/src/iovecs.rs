//! [`IoVecs`]: the buffers of one backend operation as `struct iovec`s, for system calls and C
//! libraries (`preadv`/`pwritev`, librbd, gfapi) that move data straight into or out of the
//! ring's data area.
//!
//! # The invariant, stated once
//!
//! Every iovec in an `IoVecs` describes memory that stays valid, and is touched by nobody
//! else, until the operation that carries the `IoVecs` completes:
//!
//! - **Data-area iovecs** (built by [`crate::DataArea::iovecs`]) lie inside the data area,
//!   range-checked against it, within the buffers of a command that is outstanding: the
//!   handler completes that command to the ring only after the backend operation has
//!   completed (or, at a deadline, with KEEP_BUF, which keeps the kernel from reusing the
//!   blocks until the late operation returns). **The `IoVecs` itself keeps the mapping alive**:
//!   it holds a reference to the [`Mapping`], so the data area cannot be unmapped while any
//!   iovec into it exists, whichever thread the operation ends on.
//! - **Buffer iovecs** (from [`IoVecs::push_buffer`]) point into memory of the caller's, which
//!   must keep that buffer alive and in place until the operation completes (the handler's
//!   workers block on the operation's completion, holding the buffer).
//!
//! So the addresses are safe to pass to the kernel or a C library, and to dereference in the
//! backends' `unsafe` blocks, which cite this module. They are never turned into Rust
//! references into the ring (the kernel writes the ring concurrently; docs/kernel-abi.md §2.3
//! also says reclaimed data pages raise SIGBUS, which is why only an outstanding command's
//! buffers are described).
//!
//! # Why it may be sent to another thread
//!
//! An `IoVecs` is plain addresses and lengths plus an `Arc` of the mapping. The operation
//! moves: it is built on one thread (device thread or worker), handed to the backend, and
//! completed on another (librbd's or gfapi's callback thread, a worker); it is never used by
//! two threads at once. Validity of the memory does not depend on the thread (the mapping is
//! process-wide, and a worker's buffer is heap memory), so moving the addresses is sound.

use std::sync::Arc;

use crate::mapping::Mapping;

/// The buffers of one operation. See the module docs for the invariant.
///
/// Reused across operations: [`IoVecs::clear`] keeps the capacity, so building the vector
/// does not allocate per command once it has grown.
#[derive(Debug, Default)]
pub struct IoVecs {
    iov: Vec<libc::iovec>,
    /// The mapping the data-area iovecs point into, kept alive while they exist.
    mapping: Option<Arc<Mapping>>,
}

// SAFETY: see "Why it may be sent to another thread" in the module docs: the raw pointers are
// addresses of process-wide memory that the invariant keeps valid until the operation
// completes (the data area through `mapping`, a caller's buffer through its owner waiting),
// and an `IoVecs` is moved between threads, never shared. `Arc<Mapping>` is itself Send.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// An empty vector with room for `n` iovecs.
    #[must_use]
    pub fn with_capacity(n: usize) -> IoVecs {
        IoVecs {
            iov: Vec::with_capacity(n),
            mapping: None,
        }
    }

    /// Drop every iovec (and the reference to the mapping); the capacity stays.
    pub fn clear(&mut self) {
        self.iov.clear();
        self.mapping = None;
    }

    /// The iovecs, for a system call or a C library.
    #[must_use]
    pub fn as_slice(&self) -> &[libc::iovec] {
        &self.iov
    }

    /// Number of iovecs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.iov.len()
    }

    /// How many iovecs fit before the vector grows.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.iov.capacity()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.iov.is_empty()
    }

    /// Total bytes described.
    #[must_use]
    pub fn total_len(&self) -> u64 {
        self.iov.iter().map(|v| v.iov_len as u64).sum()
    }

    /// Describe the first `len` bytes of `buf` (all of it if shorter).
    ///
    /// # Safety
    ///
    /// Until these iovecs are cleared or dropped, `buf` must stay alive and in place, and
    /// nothing but the operation carrying them may access it (the module's invariant; the
    /// safe copy methods below rely on it).
    pub unsafe fn push_buffer(&mut self, buf: &mut [u8], len: usize) {
        self.iov.push(libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len.min(buf.len()),
        });
    }

    /// Walk the described bytes from `skip`, calling `f(address, len, done_so_far)` for at most
    /// `max` bytes.
    fn walk(&self, mut skip: usize, max: usize, mut f: impl FnMut(*mut u8, usize, usize)) -> usize {
        let mut done = 0;
        for v in &self.iov {
            if done >= max {
                break;
            }
            if skip >= v.iov_len {
                skip -= v.iov_len;
                continue;
            }
            let n = (v.iov_len - skip).min(max - done);
            f(v.iov_base.cast::<u8>().wrapping_add(skip), n, done);
            done += n;
            skip = 0;
        }
        done
    }

    /// Scatter: copy `src` into the described buffers from byte `skip`; returns the bytes
    /// copied (fewer when the buffers end first).
    pub fn copy_from_slice(&self, skip: usize, src: &[u8]) -> usize {
        self.walk(skip, src.len(), |p, n, done| {
            // SAFETY: by the invariant `p..p+n` is valid writable memory nobody else accesses
            // (`walk` keeps `n` within the iovec); `src[done..done+n]` is in bounds (`walk`
            // stops at `src.len()`) and is Rust memory, so it cannot overlap a buffer that
            // only this operation accesses.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), p, n) }
        })
    }

    /// Gather: copy the described bytes from `skip` into `dst`; returns the bytes copied.
    pub fn copy_to_slice(&self, skip: usize, dst: &mut [u8]) -> usize {
        let max = dst.len();
        let d = dst.as_mut_ptr();
        self.walk(skip, max, |p, n, done| {
            // SAFETY: as in `copy_from_slice`, with the directions swapped: `p..p+n` readable,
            // `d+done..d+done+n` inside `dst`.
            unsafe { std::ptr::copy_nonoverlapping(p, d.add(done), n) }
        })
    }

    /// Zero every byte not yet done (after [`IoVecs::advance`]): the tail of a read past the
    /// end of the store.
    pub fn zero_remaining(&self) {
        self.walk(0, usize::MAX, |p, n, _| {
            // SAFETY: `p..p+n` is valid writable memory nobody else accesses (the invariant).
            unsafe { std::ptr::write_bytes(p, 0, n) }
        });
    }

    /// Skip the first `n` bytes after a short transfer: leading iovecs shrink to length 0
    /// (they stay, so the vector keeps its shape) and the first partly done one starts later.
    pub fn advance(&mut self, mut n: u64) {
        for v in &mut self.iov {
            if n == 0 {
                break;
            }
            let Ok(step) = usize::try_from((v.iov_len as u64).min(n)) else {
                break;
            };
            // `step <= iov_len`: the new base stays within (or one past) the same buffer.
            v.iov_base = v.iov_base.cast::<u8>().wrapping_add(step).cast();
            v.iov_len -= step;
            n -= step as u64;
        }
    }

    /// The iovecs not yet done: those after the leading ones [`IoVecs::advance`] emptied.
    #[must_use]
    pub fn remaining(&self) -> &[libc::iovec] {
        let first = self
            .iov
            .iter()
            .position(|v| v.iov_len != 0)
            .unwrap_or(self.iov.len());
        &self.iov[first..]
    }

    /// Append a data-area iovec; `mapping` is the mapping it points into.
    pub(crate) fn push_mapped(&mut self, mapping: &Arc<Mapping>, iov: libc::iovec) {
        if self.mapping.is_none() {
            self.mapping = Some(Arc::clone(mapping));
        }
        self.iov.push(iov);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_and_remaining_after_short_transfers() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let mut v = IoVecs::with_capacity(2);
        // SAFETY: `a` and `b` outlive `v` and are not touched while it exists.
        unsafe {
            v.push_buffer(&mut a, 8);
            v.push_buffer(&mut b, 6);
        }
        assert_eq!(v.total_len(), 14);
        let b0 = v.as_slice()[1].iov_base as usize;
        v.advance(10);
        assert_eq!(v.len(), 2, "shape kept");
        assert_eq!(v.as_slice()[0].iov_len, 0);
        assert_eq!(v.remaining().len(), 1);
        assert_eq!(v.remaining()[0].iov_len, 4);
        assert_eq!(v.remaining()[0].iov_base as usize, b0 + 2);
        v.advance(100);
        assert!(v.remaining().is_empty());
        assert_eq!(v.total_len(), 0);
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    fn push_buffer_never_describes_more_than_the_buffer() {
        let mut a = [0u8; 4];
        let mut v = IoVecs::default();
        // SAFETY: `a` outlives `v` and is not touched while it exists.
        unsafe { v.push_buffer(&mut a, 100) };
        assert_eq!(v.total_len(), 4);
    }

    #[test]
    fn scatter_gather_and_zero_across_iovecs() {
        let mut a = vec![0u8; 3];
        let mut b = vec![0u8; 5];
        {
            let mut v = IoVecs::default();
            // SAFETY: `a` and `b` outlive `v` and are only accessed through it meanwhile.
            unsafe {
                v.push_buffer(&mut a, 3);
                v.push_buffer(&mut b, 5);
            }
            assert_eq!(v.copy_from_slice(1, &[1, 2, 3, 4, 5, 6, 7, 8, 9]), 7);
            let mut out = [0u8; 4];
            assert_eq!(v.copy_to_slice(2, &mut out), 4);
            assert_eq!(out, [2, 3, 4, 5]);
            v.advance(6);
            v.zero_remaining();
        }
        assert_eq!(a, [0, 1, 2]);
        assert_eq!(b, [3, 4, 5, 0, 0]);
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn is_send() {
        assert_send::<IoVecs>();
    }
}
