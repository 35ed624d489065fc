//! [`Fd`]: an open file on a volume, holding the volume alive.

use crate::{check, last_errno, Errno, Volume};
use gfapi_sys as sys;
use std::ptr::{null_mut, NonNull};
use std::sync::Arc;

/// An open file. Holds its [`Volume`], so the volume is finished only after every file of
/// it is closed; `glfs_close` runs in `Drop`.
pub struct Fd {
    fd: NonNull<sys::glfs_fd_t>,
    vol: Arc<Volume>,
}

// SAFETY: a glfs_fd_t may be used from any thread and by several at once (positional I/O
// only; gfapi locks what it shares), like a POSIX file descriptor.
unsafe impl Send for Fd {}
// SAFETY: as above; every method takes `&self`.
unsafe impl Sync for Fd {}

fn off(v: u64) -> Result<libc::off_t, Errno> {
    libc::off_t::try_from(v).map_err(|_| Errno::EINVAL)
}

impl Fd {
    pub(crate) fn from_raw(fd: *mut sys::glfs_fd_t, vol: Arc<Volume>) -> Result<Fd, Errno> {
        match NonNull::new(fd) {
            Some(fd) => Ok(Fd { fd, vol }),
            None => Err(last_errno()),
        }
    }

    pub(crate) fn raw(&self) -> *mut sys::glfs_fd_t {
        self.fd.as_ptr()
    }

    /// The volume this file is on.
    #[must_use]
    pub fn volume(&self) -> &Arc<Volume> {
        &self.vol
    }

    /// `fstat` the file.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn stat(&self) -> Result<libc::stat, Errno> {
        // SAFETY: an all-zero stat is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        check(unsafe { sys::glfs_fstat(self.raw(), &mut st) })?;
        Ok(st)
    }

    /// Size in bytes.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn size(&self) -> Result<u64, Errno> {
        u64::try_from(self.stat()?.st_size).map_err(|_| Errno::EIO)
    }

    /// Set the size (grow with a hole, or shrink).
    ///
    /// # Errors
    /// gfapi's error.
    pub fn truncate(&self, len: u64) -> Result<(), Errno> {
        // SAFETY: valid fd; the stat out-pointers may be NULL.
        check(unsafe { sys::glfs_ftruncate(self.raw(), off(len)?, null_mut(), null_mut()) })
    }

    /// Read at `offset` into `buf`; returns the bytes read (short only at end of file).
    ///
    /// # Errors
    /// gfapi's error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, writable and borrowed for the whole (synchronous) call.
        let n = unsafe { sys::glfs_preadv(self.raw(), &iov, 1, off(offset)?, 0) };
        usize::try_from(n).map_err(|_| last_errno())
    }

    /// Write `buf` at `offset` with `flags` (`0`, `O_DSYNC`); returns the bytes written.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn write_at(&self, buf: &[u8], offset: u64, flags: libc::c_int) -> Result<usize, Errno> {
        let iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which gfapi only reads during this synchronous call.
        let n = unsafe { sys::glfs_pwritev(self.raw(), &iov, 1, off(offset)?, flags) };
        usize::try_from(n).map_err(|_| last_errno())
    }

    /// `lseek` to the next data (`libc::SEEK_DATA`) or hole (`libc::SEEK_HOLE`) at or after
    /// `offset`; returns where it is.
    ///
    /// # Errors
    /// gfapi's error: `ENXIO` when there is none before the end of the file, `EINVAL` or
    /// `EOPNOTSUPP` when the bricks' filesystem cannot say.
    pub fn seek(&self, offset: u64, whence: libc::c_int) -> Result<u64, Errno> {
        // SAFETY: valid fd; no pointers.
        let r = unsafe { sys::glfs_lseek(self.raw(), off(offset)?, whence) };
        u64::try_from(r).map_err(|_| last_errno())
    }

    /// Make written data durable.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn sync(&self) -> Result<(), Errno> {
        // SAFETY: valid fd; the stat out-pointers may be NULL.
        check(unsafe { sys::glfs_fsync(self.raw(), null_mut(), null_mut()) })
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd is open and nothing else uses it: operations in flight hold an
        // Arc<Fd>, so the last reference is dropped only after they completed.
        unsafe { sys::glfs_close(self.raw()) };
    }
}

impl std::fmt::Debug for Fd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fd")
            .field("volume", &self.vol)
            .finish_non_exhaustive()
    }
}
