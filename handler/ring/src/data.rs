//! The data area: `[data_off, map_len)` of the mapping, addressed by the iovecs of commands.

use std::sync::Arc;

use crate::iovecs::IoVecs;
use crate::mapping::Mapping;

/// One iovec of a command: an offset from the start of the mapping and a length.
///
/// Segments produced by [`crate::Ring::next`] were validated to lie inside the data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataSeg {
    /// Offset from the start of the mapping.
    pub off: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Handle to the data area; cheap to clone and shareable between worker threads.
///
/// Only touch the buffers of commands that are still outstanding: the kernel may unmap the
/// pages of free blocks (reclaim), and touching those raises SIGBUS (docs/kernel-abi.md §2.3).
#[derive(Clone, Debug)]
pub struct DataArea {
    map: Arc<Mapping>,
    data_off: u64,
    map_len: u64,
}

/// Walks `segs` from byte `skip`, calling `f(mapping_offset, chunk_len, done_so_far)` for at
/// most `len` bytes; stops early when `f` returns false. Returns the bytes walked.
fn walk(segs: &[DataSeg], skip: u64, len: u64, mut f: impl FnMut(u64, u64, u64) -> bool) -> u64 {
    let mut skip = skip;
    let mut done: u64 = 0;
    for s in segs {
        if done >= len {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let avail = s.len - skip;
        let n = avail.min(len - done);
        let Some(off) = s.off.checked_add(skip) else {
            break;
        };
        if !f(off, n, done) {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}

fn to_usize(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}

impl DataArea {
    pub(crate) fn new(map: Arc<Mapping>, data_off: u64) -> DataArea {
        let map_len = map.len() as u64;
        DataArea {
            map,
            data_off,
            map_len,
        }
    }

    fn in_area(&self, off: u64, n: u64) -> bool {
        off >= self.data_off && off.checked_add(n).is_some_and(|e| e <= self.map_len)
    }

    /// Size of the data area in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.map_len - self.data_off
    }

    /// True if the data area is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of the data area from the start of the mapping.
    #[must_use]
    pub fn data_off(&self) -> u64 {
        self.data_off
    }

    /// Gather: copies bytes starting `skip` bytes into the segments into `dst`; returns the
    /// bytes copied (stops at the end of the segments).
    pub fn copy_to_slice(&self, segs: &[DataSeg], skip: u64, dst: &mut [u8]) -> usize {
        let want = dst.len() as u64;
        let n = walk(segs, skip, want, |off, n, done| {
            let (Some(o), Some(n), Some(d)) = (to_usize(off), to_usize(n), to_usize(done)) else {
                return false;
            };
            let Some(chunk) = dst.get_mut(d..d + n) else {
                return false;
            };
            self.in_area(off, n as u64) && self.map.copy_out(o, chunk).is_ok()
        });
        to_usize(n).unwrap_or(0)
    }

    /// Scatter: copies `src` into the segments starting at `skip`; returns the bytes copied.
    pub fn copy_from_slice(&self, segs: &[DataSeg], skip: u64, src: &[u8]) -> usize {
        let want = src.len() as u64;
        let n = walk(segs, skip, want, |off, n, done| {
            let (Some(o), Some(n), Some(d)) = (to_usize(off), to_usize(n), to_usize(done)) else {
                return false;
            };
            let Some(chunk) = src.get(d..d + n) else {
                return false;
            };
            self.in_area(off, n as u64) && self.map.copy_in(o, chunk).is_ok()
        });
        to_usize(n).unwrap_or(0)
    }

    /// Fills `len` bytes from `skip` with `byte`; returns the bytes filled.
    pub fn fill(&self, segs: &[DataSeg], skip: u64, len: u64, byte: u8) -> u64 {
        walk(segs, skip, len, |off, n, _| {
            let (Some(o), Some(nn)) = (to_usize(off), to_usize(n)) else {
                return false;
            };
            self.in_area(off, n) && self.map.fill(o, nn, byte).is_ok()
        })
    }

    /// The iovecs covering `len` bytes of a command's buffers from `skip`, for preadv/pwritev
    /// or a C library, written to `out` (cleared first; its capacity is reused). `out` keeps
    /// the mapping alive; the command must stay outstanding until the operation using them
    /// completes (the invariant of [`IoVecs`]). Never turn them into Rust slices.
    pub fn iovecs(&self, segs: &[DataSeg], skip: u64, len: u64, out: &mut IoVecs) {
        out.clear();
        let base = self.map.as_ptr();
        walk(segs, skip, len, |off, n, _| {
            let (Some(o), Some(nn)) = (to_usize(off), to_usize(n)) else {
                return false;
            };
            if !self.in_area(off, n) {
                return false;
            }
            out.push_mapped(
                &self.map,
                libc::iovec {
                    iov_base: base.wrapping_add(o).cast::<libc::c_void>(),
                    iov_len: nn,
                },
            );
            true
        });
    }
}
