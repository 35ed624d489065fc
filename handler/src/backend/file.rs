//! The file backend (subtype `file`, cfgstring `file/<path>`), the embedded default.
//!
//! Positional vectored I/O straight between the file and the ring's data area; FUA writes use
//! `pwritev2(RWF_DSYNC)` (falling back to `fdatasync`), SYNCHRONIZE CACHE is `fdatasync`, UNMAP
//! and zeroing WRITE SAME are `fallocate` hole punching / zero ranges, followed by `fdatasync`
//! when they must be durable (the LUN's write cache is off: a punched hole is metadata, which
//! only a sync makes durable). The file is created if
//! missing and grown (never shrunk) to the LUN size, as tcmu-runner's file handler does.

use super::io::{Io, IoOp, IoResult};
use super::{errno_of, Backend, Caps, OpenError};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tcmu_ring::IoVecs;

/// The cfgstring syntax, for people (DBus `ConfigDesc`).
pub const CONFIG_DESC: &str = "file/<path>: a local file (created if missing, grown to the \
LUN size, never shrunk) or a block device. Example: file//var/lib/tcmu/lun0.img";

/// Validate a `file` cfgstring without opening anything: the syntax, and that the file
/// exists or its directory does (so it can be created).
///
/// # Errors
/// What is wrong, in words.
pub fn check_config(cfgstring: &str) -> Result<(), String> {
    let super::cfgstring::DevConfig::File { path } =
        super::cfgstring::parse("file", cfgstring).map_err(|e| e.to_string())?;
    if path.is_dir() {
        return Err(format!(
            "{} is a directory, expected a file",
            path.display()
        ));
    }
    if path.exists() {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "{} does not exist and its directory {} does not exist either",
            path.display(),
            dir.display()
        ))
    }
}

/// Most iovecs one `preadv`/`pwritev` call accepts (`IOV_MAX` on Linux).
const IOV_MAX: usize = 1024;

/// A LUN stored in a local file (or block device node).
pub struct FileBackend {
    file: File,
    path: PathBuf,
    size: std::sync::atomic::AtomicU64,
    caps: Caps,
    /// `fdatasync` calls made (the tests check durable zeroing with it).
    #[cfg(test)]
    syncs: std::sync::atomic::AtomicUsize,
}

impl FileBackend {
    /// Open `path` as a LUN of `size` bytes: create it if missing, grow it if shorter.
    ///
    /// # Errors
    /// [`OpenError::Io`] when the file cannot be opened, sized or inspected.
    pub fn open(path: &Path, size: u64) -> Result<FileBackend, OpenError> {
        let io_err = |what: &str, source| OpenError::Io {
            what: format!("{what} {}", path.display()),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io_err("open", e))?;
        let meta = file.metadata().map_err(|e| io_err("stat", e))?;
        if meta.is_dir() {
            return Err(io_err(
                "open",
                std::io::Error::from_raw_os_error(libc::EISDIR),
            ));
        }
        if meta.is_file() && meta.len() < size {
            file.set_len(size).map_err(|e| io_err("grow", e))?;
        }
        let caps = Caps {
            unmap: probe_punch_hole(&file, size.max(meta.len())),
            write_zeroes: true,
            thin: meta.is_file(),
            non_rotational: false,
        };
        Ok(FileBackend {
            file,
            path: path.to_path_buf(),
            size: size.into(),
            caps,
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn read(&self, io: &mut Io) -> IoResult {
        let (off, len) = (io.offset(), io.len());
        let fd = self.file.as_raw_fd();
        transfer(io.iovecs_mut(), off, len, |iov, at| {
            // SAFETY: the iovecs point to writable memory of their stated lengths until the Io
            // completes (the invariant of tcmu_ring::iovecs).
            unsafe { libc::preadv(fd, iov.as_ptr(), iov_count(iov), at) }
        })
    }

    fn write(&self, io: &mut Io, fua: bool) -> IoResult {
        let (off, len) = (io.offset(), io.len());
        let fd = self.file.as_raw_fd();
        let mut flags = if fua { libc::RWF_DSYNC } else { 0 };
        let r = transfer(io.iovecs_mut(), off, len, |iov, at| {
            // SAFETY: the iovecs point to readable memory of their stated lengths (see read).
            let n = unsafe { libc::pwritev2(fd, iov.as_ptr(), iov_count(iov), at, flags) };
            if n < 0 && flags != 0 && matches!(Errno::last(), Errno::EOPNOTSUPP | Errno::ENOSYS) {
                flags = 0;
                // SAFETY: as above.
                return unsafe { libc::pwritev(fd, iov.as_ptr(), iov_count(iov), at) };
            }
            n
        });
        if r.is_ok() && fua && flags == 0 {
            return self.flush();
        }
        r
    }

    fn flush(&self) -> IoResult {
        #[cfg(test)]
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.file.sync_data().map_err(|e| errno_of(&e))
    }

    fn fallocate(&self, mode: FallocateFlags, off: u64, len: u64) -> IoResult {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Err(Errno::EINVAL);
        };
        fallocate(self.file.as_raw_fd(), mode, off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> IoResult {
        const PUNCH: FallocateFlags =
            FallocateFlags::FALLOC_FL_PUNCH_HOLE.union(FallocateFlags::FALLOC_FL_KEEP_SIZE);
        if unmap && self.caps.unmap {
            return self.fallocate(PUNCH, off, len);
        }
        match self.fallocate(
            FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        ) {
            Err(Errno::EOPNOTSUPP) if self.caps.unmap => self.fallocate(PUNCH, off, len),
            r => r,
        }
    }
}

impl Backend for FileBackend {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn caps(&self) -> Caps {
        self.caps
    }

    /// Grow the file to the new size (never shrinks it: data past the LUN's end is kept).
    fn resize(&self, new_size: u64) -> Result<(), Errno> {
        let meta = self.file.metadata().map_err(|e| errno_of(&e))?;
        if meta.is_file() && meta.len() < new_size {
            self.file.set_len(new_size).map_err(|e| errno_of(&e))?;
        } else if !meta.is_file() && new_size > meta.len() && meta.len() != 0 {
            return Err(Errno::ENOSPC);
        }
        self.size
            .store(new_size, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// `SEEK_DATA`/`SEEK_HOLE` on a regular file: data is allocated, a hole is not (and reads
    /// as zeros). A block device, or a filesystem without the two, reports allocated.
    fn allocation(&self, off: u64, len: u64) -> Result<(bool, u64), Errno> {
        use nix::unistd::{lseek, Whence};
        let fd = self.file.as_raw_fd();
        super::allocation_by_seek(off, len, |at, data| {
            let at = i64::try_from(at).map_err(|_| Errno::EINVAL)?;
            let whence = if data {
                Whence::SeekData
            } else {
                Whence::SeekHole
            };
            lseek(fd, at, whence).map(|p| u64::try_from(p).unwrap_or(u64::MAX))
        })
    }

    /// A stat of the open file: on a local disk it always answers; on a network filesystem
    /// whose server is gone it fails or hangs, which the health monitor's timeout catches.
    fn ping(&self) -> Result<(), Errno> {
        self.file.metadata().map(|_| ()).map_err(|e| errno_of(&e))
    }

    /// The open file: READ, WRITE and FLUSH are plain positional I/O on it (see the module
    /// docs), which the device thread may issue itself through io_uring.
    fn uring_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn submit(&self, mut io: Io) {
        let r = match io.op() {
            IoOp::Read => self.read(&mut io),
            IoOp::Write { fua } => self.write(&mut io, fua),
            IoOp::Flush => self.flush(),
            IoOp::Unmap { .. } => self.fallocate(
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                io.offset(),
                io.len(),
            ),
            IoOp::WriteZeroes { unmap, .. } => self.write_zeroes(io.offset(), io.len(), unmap),
            // Not offered (`atomic_compare_and_write` is false): the device's generic path.
            IoOp::CompareAndWrite { .. } => Err(Errno::EOPNOTSUPP),
        };
        // A durable UNMAP or WRITE ZEROES: the new extents (holes, unwritten ranges) are
        // metadata, on disk only after a sync.
        let r = match io.op() {
            IoOp::Unmap { fua: true } | IoOp::WriteZeroes { fua: true, .. } if r.is_ok() => {
                self.flush()
            }
            _ => r,
        };
        io.complete(r);
    }
}

fn iov_count(iov: &[libc::iovec]) -> libc::c_int {
    libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX)
}

/// Run a positional vectored transfer to completion: retries on EINTR, advances the iovecs
/// over partial transfers, and zero-fills what lies beyond the end of the file on a read.
fn transfer(
    iov: &mut IoVecs,
    offset: u64,
    len: u64,
    mut op: impl FnMut(&[libc::iovec], libc::off_t) -> isize,
) -> IoResult {
    let mut done: u64 = 0;
    while done < len {
        let rest = iov.remaining();
        if rest.is_empty() {
            break;
        }
        let at = libc::off_t::try_from(offset + done).map_err(|_| Errno::EINVAL)?;
        let n = op(&rest[..rest.len().min(IOV_MAX)], at);
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        let n = u64::try_from(n).map_err(|_| Errno::EIO)?;
        if n == 0 {
            // End of file on a read: the rest reads as zeros (a sparse tail).
            iov.zero_remaining();
            return Ok(());
        }
        done += n;
        iov.advance(n);
    }
    Ok(())
}

/// Whether the filesystem can punch holes: punch a block past the end (no data changes).
fn probe_punch_hole(file: &File, end: u64) -> bool {
    let Ok(at) = libc::off_t::try_from(end.saturating_add(1 << 20)) else {
        return false;
    };
    // KEEP_SIZE past EOF changes no data.
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        at,
        4096,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::io::Waiter;
    use std::sync::atomic::Ordering;

    /// UNMAP and WRITE ZEROES are followed by `fdatasync` exactly when they must be durable
    /// (the write cache off), and never otherwise.
    #[test]
    fn durable_zeroing_syncs_and_cached_zeroing_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(&dir.path().join("lun.img"), 1 << 20).unwrap();
        let run = |op: IoOp| {
            let w = Waiter::new();
            b.submit(Io::for_waiter(op, 4096, 8192, IoVecs::default(), &w));
            w.wait().0
        };
        for (op, syncs) in [
            (IoOp::Unmap { fua: false }, 0),
            (
                IoOp::WriteZeroes {
                    unmap: false,
                    fua: false,
                },
                0,
            ),
            (
                IoOp::WriteZeroes {
                    unmap: true,
                    fua: false,
                },
                0,
            ),
            (IoOp::Unmap { fua: true }, 1),
            (
                IoOp::WriteZeroes {
                    unmap: false,
                    fua: true,
                },
                1,
            ),
            (
                IoOp::WriteZeroes {
                    unmap: true,
                    fua: true,
                },
                1,
            ),
        ] {
            let before = b.syncs.load(Ordering::Relaxed);
            assert_eq!(run(op), Ok(()), "{op:?}");
            assert_eq!(b.syncs.load(Ordering::Relaxed) - before, syncs, "{op:?}");
        }
    }

    #[test]
    fn ping_answers_while_the_file_is_open_even_after_it_is_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let b = FileBackend::open(&path, 1 << 20).unwrap();
        assert_eq!(b.ping(), Ok(()));
        // The LUN keeps its open file: removing the name does not make it unreachable.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(b.ping(), Ok(()));
        assert_eq!(b.size(), 1 << 20);
    }
}
