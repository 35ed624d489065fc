//! [`Image`]: an open RBD image, its metadata, lock and watchers, and asynchronous I/O.

use crate::aio::AioCompletion;
use crate::cluster::IoCtx;
use crate::{check, cstr, Errno, Error, Result};
use rbd_sys as sys;
use std::ffi::{c_char, CStr};
use std::sync::Arc;

/// An open image. Closed in `Drop` (which waits for its operations in flight); holds its
/// [`IoCtx`].
pub struct Image {
    h: sys::rbd_image_t,
    ioctx: Arc<IoCtx>,
}

// SAFETY: librbd image handles are safe for concurrent use by several threads (its I/O calls
// and metadata calls take internal locks); the handle is closed once, in Drop.
unsafe impl Send for Image {}
// SAFETY: see Send.
unsafe impl Sync for Image {}

/// From `rbd_stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub obj_size: u64,
}

/// A watcher of the image header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Its address (`127.0.0.1:0/123`): what `ceph osd blocklist add` takes.
    pub addr: String,
    /// Its client id (`client.<id>`).
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

/// Owners of the image's managed lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockOwners {
    /// Whether the lock is exclusive.
    pub exclusive: bool,
    /// The owners (`client.<id>`); empty when nobody holds the lock.
    pub owners: Vec<String>,
}

impl Image {
    /// Open `name` in `ioctx`, at snapshot `snap` if given. `read_only` opens without a
    /// watch on the header (writes fail with `EROFS`); a snapshot is always read-only.
    ///
    /// # Errors
    /// `ENOENT` when the image (or snapshot) does not exist.
    pub fn open(
        ioctx: &Arc<IoCtx>,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> Result<Image> {
        let call = if read_only {
            "rbd_open_read_only"
        } else {
            "rbd_open"
        };
        let n = cstr(call, name)?;
        let s = snap.map(|s| cstr(call, s)).transpose()?;
        let sp = s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        let mut h: sys::rbd_image_t = std::ptr::null_mut();
        // SAFETY: live ioctx (held by the returned Image), NUL-terminated strings, valid
        // out-pointer.
        let r = unsafe {
            if read_only {
                sys::rbd_open_read_only(ioctx.as_raw(), n.as_ptr(), &mut h, sp)
            } else {
                sys::rbd_open(ioctx.as_raw(), n.as_ptr(), &mut h, sp)
            }
        };
        check(call, r)?;
        Ok(Image {
            h,
            ioctx: Arc::clone(ioctx),
        })
    }

    /// The I/O context this image was opened in.
    #[must_use]
    pub fn ioctx(&self) -> &Arc<IoCtx> {
        &self.ioctx
    }

    /// Size and object size.
    ///
    /// # Errors
    /// The librbd error (`ESHUTDOWN` when blocklisted).
    pub fn stat(&self) -> Result<ImageInfo> {
        // SAFETY: rbd_image_info_t is plain old data; all-zero is a valid value.
        let mut info: sys::rbd_image_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: live image; `info` is writable for the size passed.
        check("rbd_stat", unsafe {
            sys::rbd_stat(
                self.h,
                &mut info,
                std::mem::size_of::<sys::rbd_image_info_t>(),
            )
        })?;
        Ok(ImageInfo {
            size: info.size,
            obj_size: info.obj_size,
        })
    }

    /// Size in bytes.
    ///
    /// # Errors
    /// The librbd error.
    pub fn size(&self) -> Result<u64> {
        let mut s = 0u64;
        // SAFETY: live image, valid out-pointer.
        check("rbd_get_size", unsafe { sys::rbd_get_size(self.h, &mut s) })?;
        Ok(s)
    }

    /// Feature bits (`RBD_FEATURE_*`).
    ///
    /// # Errors
    /// The librbd error.
    pub fn features(&self) -> Result<u64> {
        let mut f = 0u64;
        // SAFETY: live image, valid out-pointer.
        check("rbd_get_features", unsafe {
            sys::rbd_get_features(self.h, &mut f)
        })?;
        Ok(f)
    }

    /// The image id (its header object is `rbd_header.<id>`).
    ///
    /// # Errors
    /// The librbd error.
    pub fn id(&self) -> Result<String> {
        let mut buf = [0 as c_char; 64];
        // SAFETY: live image; `buf` writable for its length.
        check("rbd_get_id", unsafe {
            sys::rbd_get_id(self.h, buf.as_mut_ptr(), buf.len())
        })?;
        // SAFETY: NUL-terminated within the buffer on success.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// Grow or shrink the image.
    ///
    /// # Errors
    /// The librbd error.
    pub fn resize(&self, size: u64) -> Result<()> {
        // SAFETY: live image.
        check("rbd_resize", unsafe { sys::rbd_resize(self.h, size) }).map(drop)
    }

    /// Create a snapshot of the image's current state.
    ///
    /// # Errors
    /// `EEXIST` when it exists.
    pub fn snap_create(&self, name: &str) -> Result<()> {
        let n = cstr("rbd_snap_create", name)?;
        // SAFETY: live image, NUL-terminated name.
        check("rbd_snap_create", unsafe {
            sys::rbd_snap_create(self.h, n.as_ptr())
        })
        .map(drop)
    }

    /// The allocated extents of `[off, off + len)` as `(offset, length)` pairs in offset
    /// order, at most `max` of them (the walk stops there): `rbd_diff_iterate2` from the
    /// image's creation, with the parent's data (a clone reads it) and extent granularity
    /// (`whole_object` false), so a partly written object reports only what was written.
    /// What is not listed reads as zeros.
    ///
    /// # Errors
    /// The librbd error.
    pub fn allocated_extents(&self, off: u64, len: u64, max: usize) -> Result<Vec<(u64, u64)>> {
        struct Walk {
            out: Vec<(u64, u64)>,
            max: usize,
        }
        unsafe extern "C" fn cb(
            ofs: u64,
            len: libc::size_t,
            exists: libc::c_int,
            arg: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: `arg` is the `Walk` below, alive and otherwise untouched for the call.
            let w = unsafe { &mut *arg.cast::<Walk>() };
            if exists != 0 {
                w.out.push((ofs, len as u64));
            }
            if w.out.len() >= w.max {
                -libc::ECANCELED
            } else {
                0
            }
        }
        let mut w = Walk {
            out: Vec::new(),
            max: max.max(1),
        };
        // SAFETY: live image; `cb` only touches `w`, which outlives the synchronous call.
        let r = unsafe {
            sys::rbd_diff_iterate2(
                self.h,
                std::ptr::null(),
                off,
                len,
                1,
                0,
                Some(cb),
                std::ptr::addr_of_mut!(w).cast(),
            )
        };
        if r != -libc::ECANCELED {
            check("rbd_diff_iterate2", r)?;
        }
        w.out.sort_unstable();
        Ok(w.out)
    }

    /// Whether this client holds the image's exclusive lock.
    ///
    /// # Errors
    /// The librbd error (`ESHUTDOWN` when blocklisted).
    pub fn is_lock_owner(&self) -> Result<bool> {
        let mut o: libc::c_int = 0;
        // SAFETY: live image, valid out-pointer.
        check("rbd_is_exclusive_lock_owner", unsafe {
            sys::rbd_is_exclusive_lock_owner(self.h, &mut o)
        })?;
        Ok(o != 0)
    }

    /// Take the exclusive lock explicitly (others then get `EROFS` instead of a handover).
    ///
    /// # Errors
    /// The librbd error.
    pub fn lock_acquire_exclusive(&self) -> Result<()> {
        // SAFETY: live image.
        check("rbd_lock_acquire", unsafe {
            sys::rbd_lock_acquire(self.h, sys::RBD_LOCK_MODE_EXCLUSIVE)
        })
        .map(drop)
    }

    /// Release a lock taken with [`Image::lock_acquire_exclusive`].
    ///
    /// # Errors
    /// The librbd error.
    pub fn lock_release(&self) -> Result<()> {
        // SAFETY: live image.
        check("rbd_lock_release", unsafe { sys::rbd_lock_release(self.h) }).map(drop)
    }

    /// Who holds the lock.
    ///
    /// # Errors
    /// The librbd error.
    pub fn lock_owners(&self) -> Result<LockOwners> {
        let mut cap: usize = 4;
        loop {
            let mut v: Vec<*mut c_char> = vec![std::ptr::null_mut(); cap];
            let mut n = cap;
            let mut mode: sys::rbd_lock_mode_t = 0;
            // SAFETY: live image; `v` has room for `n` pointers; valid out-pointers.
            let r = unsafe { sys::rbd_lock_get_owners(self.h, &mut mode, v.as_mut_ptr(), &mut n) };
            if r == -libc::ERANGE && n > cap {
                cap = n;
                continue;
            }
            if r == -libc::ENOENT {
                return Ok(LockOwners::default());
            }
            check("rbd_lock_get_owners", r)?;
            let owners = v[..n.min(cap)]
                .iter()
                .filter(|p| !p.is_null())
                // SAFETY: librbd filled `n` NUL-terminated strings.
                .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                .collect();
            // SAFETY: frees the `n` strings librbd allocated, once.
            unsafe { sys::rbd_lock_get_owners_cleanup(v.as_mut_ptr(), n.min(cap)) };
            return Ok(LockOwners {
                exclusive: mode == sys::RBD_LOCK_MODE_EXCLUSIVE,
                owners,
            });
        }
    }

    /// Break `owner`'s lock: the owner is blocklisted.
    ///
    /// # Errors
    /// The librbd error.
    pub fn lock_break(&self, exclusive: bool, owner: &str) -> Result<()> {
        let o = cstr("rbd_lock_break", owner)?;
        let mode = if exclusive {
            sys::RBD_LOCK_MODE_EXCLUSIVE
        } else {
            sys::RBD_LOCK_MODE_SHARED
        };
        // SAFETY: live image, NUL-terminated owner.
        check("rbd_lock_break", unsafe {
            sys::rbd_lock_break(self.h, mode, o.as_ptr())
        })
        .map(drop)
    }

    /// The effective value of configuration option `name` for this image (the client's
    /// configuration with the pool's and the image's overrides applied), `None` when librbd
    /// lists no such option.
    ///
    /// # Errors
    /// The librbd error.
    pub fn config_get(&self, name: &str) -> Result<Option<String>> {
        let mut cap: usize = 256;
        loop {
            // SAFETY: rbd_config_option_t is plain old data (NULL pointers and an integer).
            let mut v: Vec<sys::rbd_config_option_t> = vec![unsafe { std::mem::zeroed() }; cap];
            let mut n = libc::c_int::try_from(cap).unwrap_or(libc::c_int::MAX);
            // SAFETY: live image; `v` has room for `n` entries.
            let r = unsafe { sys::rbd_config_image_list(self.h, v.as_mut_ptr(), &mut n) };
            let needed = usize::try_from(n).unwrap_or(0);
            if r == -libc::ERANGE && needed > cap && cap < 1 << 16 {
                cap = needed;
                continue;
            }
            check("rbd_config_image_list", r)?;
            let n = needed.min(cap);
            let text = |p: *mut c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    // SAFETY: librbd filled a NUL-terminated string.
                    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                }
            };
            let out = v[..n]
                .iter()
                .find(|o| text(o.name) == name)
                .map(|o| text(o.value));
            // SAFETY: frees what librbd allocated for the `n` entries, once.
            unsafe {
                sys::rbd_config_image_list_cleanup(
                    v.as_mut_ptr(),
                    libc::c_int::try_from(n).unwrap_or(0),
                );
            };
            return Ok(out);
        }
    }

    /// The watchers of the image header.
    ///
    /// # Errors
    /// The librbd error.
    pub fn watchers(&self) -> Result<Vec<Watcher>> {
        let mut cap: usize = 8;
        loop {
            // SAFETY: rbd_image_watcher_t is plain old data (a NULL pointer and integers).
            let mut v: Vec<sys::rbd_image_watcher_t> = vec![unsafe { std::mem::zeroed() }; cap];
            let mut n = cap;
            // SAFETY: live image; `v` has room for `n` entries.
            let r = unsafe { sys::rbd_watchers_list(self.h, v.as_mut_ptr(), &mut n) };
            if r == -libc::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check("rbd_watchers_list", r)?;
            let n = n.min(cap);
            let out = v[..n]
                .iter()
                .map(|w| Watcher {
                    addr: if w.addr.is_null() {
                        String::new()
                    } else {
                        // SAFETY: librbd filled a NUL-terminated address.
                        unsafe { CStr::from_ptr(w.addr) }
                            .to_string_lossy()
                            .into_owned()
                    },
                    id: w.id,
                    cookie: w.cookie,
                })
                .collect();
            // SAFETY: frees what librbd allocated for the `n` entries, once.
            unsafe { sys::rbd_watchers_list_cleanup(v.as_mut_ptr(), n) };
            return Ok(out);
        }
    }

    /// Start a vectored read at `off` into `iov`.
    ///
    /// # Safety
    /// Every iovec must point to memory writable for its length, which stays valid and is not
    /// otherwise accessed until `c`'s post arrives.
    ///
    /// # Errors
    /// A synchronous refusal (`EINVAL`); the operation's own result comes through `c`.
    pub unsafe fn aio_readv(
        &self,
        iov: &[libc::iovec],
        off: u64,
        c: &mut AioCompletion,
    ) -> Result<()> {
        let n = iov_count(iov)?;
        // SAFETY: the caller keeps the buffers valid until completion; librbd copies the
        // iovec array itself during the call.
        let r = unsafe { sys::rbd_aio_readv(self.h, iov.as_ptr(), n, off, c.as_raw()) };
        started(c, "rbd_aio_readv", i64::from(r))
    }

    /// Start a vectored write at `off` from `iov`.
    ///
    /// # Safety
    /// Every iovec must point to memory readable for its length, which stays valid and
    /// unchanged until `c`'s post arrives.
    ///
    /// # Errors
    /// A synchronous refusal (`EINVAL`); the operation's own result comes through `c`.
    pub unsafe fn aio_writev(
        &self,
        iov: &[libc::iovec],
        off: u64,
        c: &mut AioCompletion,
    ) -> Result<()> {
        let n = iov_count(iov)?;
        // SAFETY: as for aio_readv, readable instead of writable.
        let r = unsafe { sys::rbd_aio_writev(self.h, iov.as_ptr(), n, off, c.as_raw()) };
        started(c, "rbd_aio_writev", i64::from(r))
    }

    /// Start an atomic COMPARE AND WRITE of `len` bytes at `off`: librbd has the OSD compare
    /// the image with `cmp` and, only if they are equal, write `buf`, as one operation (atomic
    /// against every other client). On a miscompare the operation completes with `-EILSEQ`
    /// and `*mismatch_off` holds the offset of the first differing byte from `off` (measured
    /// on Pacific: handler/tests/rbd.rs). Pacific's librbd refuses (`EINVAL`) a range longer
    /// than 512 bytes or crossing a 512-byte boundary.
    ///
    /// # Safety
    /// `cmp` and `buf` must be readable for `len` bytes and `mismatch_off` writable, all valid
    /// and unchanged (`mismatch_off` untouched) until `c`'s post arrives.
    ///
    /// # Errors
    /// A synchronous refusal; the operation's own result comes through `c`.
    pub unsafe fn aio_compare_and_write(
        &self,
        off: u64,
        len: usize,
        cmp: *const u8,
        buf: *const u8,
        mismatch_off: *mut u64,
        c: &mut AioCompletion,
    ) -> Result<()> {
        // SAFETY: the caller keeps the buffers and the out-pointer valid until completion.
        let r = unsafe {
            sys::rbd_aio_compare_and_write(
                self.h,
                off,
                len,
                cmp.cast(),
                buf.cast(),
                c.as_raw(),
                mismatch_off,
                0,
            )
        };
        started(
            c,
            "rbd_aio_compare_and_write",
            i64::try_from(r).unwrap_or(-1),
        )
    }

    /// Start a flush of every write completed so far.
    ///
    /// # Errors
    /// A synchronous refusal.
    pub fn aio_flush(&self, c: &mut AioCompletion) -> Result<()> {
        // SAFETY: live image and completion; no buffers.
        let r = unsafe { sys::rbd_aio_flush(self.h, c.as_raw()) };
        started(c, "rbd_aio_flush", i64::from(r))
    }

    /// Start a discard (deallocation; partial objects may be left as they are, depending on
    /// `rbd_skip_partial_discard`).
    ///
    /// # Errors
    /// A synchronous refusal.
    pub fn aio_discard(&self, off: u64, len: u64, c: &mut AioCompletion) -> Result<()> {
        // SAFETY: live image and completion; no buffers.
        let r = unsafe { sys::rbd_aio_discard(self.h, off, len, c.as_raw()) };
        started(c, "rbd_aio_discard", i64::from(r))
    }

    /// Start zeroing `len` bytes at `off`: whole objects are deallocated, partial ones
    /// written with zeros, so the range always reads back as zeros.
    ///
    /// # Errors
    /// A synchronous refusal (`EINVAL` for a length past `usize`).
    pub fn aio_write_zeroes(&self, off: u64, len: u64, c: &mut AioCompletion) -> Result<()> {
        let len =
            usize::try_from(len).map_err(|_| Error::new("rbd_aio_write_zeroes", Errno::EINVAL))?;
        // SAFETY: live image and completion; no buffers.
        let r = unsafe { sys::rbd_aio_write_zeroes(self.h, off, len, c.as_raw(), 0, 0) };
        started(c, "rbd_aio_write_zeroes", i64::from(r))
    }
}

fn iov_count(iov: &[libc::iovec]) -> Result<libc::c_int> {
    libc::c_int::try_from(iov.len()).map_err(|_| Error::new("rbd_aio", Errno::EINVAL))
}

/// librbd's synchronous answer to starting an operation: on refusal the callback never runs.
fn started(c: &mut AioCompletion, call: &'static str, r: i64) -> Result<()> {
    if r < 0 {
        c.start_failed();
        Err(Error::from_ret(call, r))
    } else {
        Ok(())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: live image closed only here; rbd_close waits for its operations in flight.
        // The ioctx outlives it (held in `self.ioctx`, dropped after this).
        let r = unsafe { sys::rbd_close(self.h) };
        let _ = r;
    }
}
