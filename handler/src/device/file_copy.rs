//! EXTENDED COPY between two file-backed LUNs inside the kernel: `copy_file_range` from the
//! source's file to the destination's, one chunk per call to [`copy_chunk`], so the copy
//! manager keeps checking the deadline and task aborts between chunks
//! (`docs/conformance.md`, "EXTENDED COPY").
//!
//! The kernel refuses some copies (ranges of one file that overlap: `EINVAL`; files on
//! different filesystems on older kernels: `EXDEV`; a block device: `EINVAL`; no such call:
//! `ENOSYS`); [`copy_chunk`] then says so and the copy manager moves that chunk through its
//! bounce buffer instead.

use nix::errno::Errno;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes this process copied with `copy_file_range` since it started.
static IN_KERNEL: AtomicU64 = AtomicU64::new(0);

/// Bytes EXTENDED COPY moved with `copy_file_range` since the process started (the rest went
/// through a worker's bounce buffer). For tests and diagnostics.
#[must_use]
pub fn bytes_copied_in_kernel() -> u64 {
    IN_KERNEL.load(Ordering::Relaxed)
}

/// Whether an errno from `copy_file_range` means "not this way" (copy through the bounce
/// buffer instead) rather than an I/O error of the store.
fn refused(e: Errno) -> bool {
    matches!(
        e,
        Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EBADF
    )
}

/// Copy `len` bytes from `src` at `src_off` to `dst` at `dst_off` with `copy_file_range`.
///
/// `Ok(true)`: all of it was copied. `Ok(false)`: the kernel refused (see the module docs) or
/// the source ended early; the caller copies the whole chunk another way (a partial copy of a
/// non-overlapping chunk is simply copied again). Nothing is synced: the caller makes the
/// destination durable when it must.
///
/// # Errors
/// The errno of a store error (`EIO`, `ENOSPC`, ...).
pub fn copy_chunk(
    src: RawFd,
    src_off: u64,
    dst: RawFd,
    dst_off: u64,
    len: u64,
) -> Result<bool, Errno> {
    let (Ok(mut src_at), Ok(mut dst_at)) = (i64::try_from(src_off), i64::try_from(dst_off)) else {
        return Ok(false);
    };
    // SAFETY: the callers pass descriptors their backends keep open for as long as the
    // backend objects live (`Backend::uring_fd`), and they hold those objects for this call.
    let (src, dst) = unsafe { (BorrowedFd::borrow_raw(src), BorrowedFd::borrow_raw(dst)) };
    let mut left = len;
    let mut copied = 0u64;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX);
        match nix::fcntl::copy_file_range(src, Some(&mut src_at), dst, Some(&mut dst_at), want) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                left = left.saturating_sub(n as u64);
                copied += n as u64;
            }
            Err(Errno::EINTR) => {}
            Err(e) if refused(e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    IN_KERNEL.fetch_add(copied, Ordering::Relaxed);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsRawFd;

    fn file_with(data: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn contents(f: &mut std::fs::File) -> Vec<u8> {
        let mut v = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn copies_a_range_between_two_files_and_counts_it() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
        let src = file_with(&data);
        let mut dst = file_with(&vec![0u8; 65536]);
        let before = bytes_copied_in_kernel();
        let ok = copy_chunk(src.as_raw_fd(), 4096, dst.as_raw_fd(), 8192, 32768).unwrap();
        assert!(ok);
        assert!(bytes_copied_in_kernel() >= before + 32768);
        let got = contents(&mut dst);
        assert_eq!(&got[8192..8192 + 32768], &data[4096..4096 + 32768]);
        assert!(got[..8192].iter().all(|&b| b == 0));
        assert!(got[8192 + 32768..].iter().all(|&b| b == 0));
    }

    #[test]
    fn overlapping_ranges_of_one_file_are_refused_and_left_alone() {
        let data: Vec<u8> = (0..16384u32).map(|i| (i % 199) as u8).collect();
        let mut f = file_with(&data);
        let fd = f.as_raw_fd();
        assert!(!copy_chunk(fd, 0, fd, 512, 8192).unwrap());
        assert_eq!(contents(&mut f), data);
    }

    #[test]
    fn a_source_that_ends_early_or_a_non_file_is_refused_not_an_error() {
        let src = file_with(&[7u8; 1024]);
        let dst = file_with(&[0u8; 8192]);
        assert!(!copy_chunk(src.as_raw_fd(), 0, dst.as_raw_fd(), 0, 4096).unwrap());
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(!copy_chunk(r.as_raw_fd(), 0, dst.as_raw_fd(), 0, 512).unwrap());
        drop(w);
    }
}
