//! [`CompletionQueue`]: asynchronous gfapi operations completed on the owner's thread.
//!
//! ```text
//!  owner thread                 gfapi thread (callback)            owner thread
//!  start(): take a free slot,   on_done(): read the slot's owner   recv(): take payload + Fd
//!  park (payload, Arc<Fd>)  ->  and index, post (index, result) -> out of the slot, free it,
//!  in it, call *_async(slot)    to the channel, nothing else       return (payload, result)
//! ```
//!
//! Slots are allocated once when the queue is created, so starting an operation allocates
//! nothing; a full queue refuses with `EAGAIN` and hands the payload back. Each operation
//! in flight holds a strong reference to the queue's shared state (released by the
//! callback) and to its [`Fd`] (released by `recv`), so neither can be freed under gfapi.

use crate::{last_errno, Errno, Fd};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use gfapi_sys as sys;
use libc::{c_int, c_void};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One finished operation: the payload given to the call that started it and its result
/// (bytes transferred for reads and writes, 0 otherwise).
#[derive(Debug)]
pub struct Completed<T> {
    /// What the caller parked with the operation.
    pub payload: T,
    /// Bytes transferred, or the error.
    pub result: Result<usize, Errno>,
}

enum Msg {
    Done { index: u32, ret: isize, errno: i32 },
    Wake,
}

struct Slot<T> {
    owner: *const Inner<T>,
    index: u32,
    state: Mutex<Option<(T, Arc<Fd>)>>,
}

struct Inner<T> {
    slots: Box<[Slot<T>]>,
    free: Mutex<Vec<u32>>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    in_flight: AtomicUsize,
}

// SAFETY: the raw `owner` pointers point at the Inner that contains them (kept alive by the
// strong count each operation holds); payloads are only moved in and out under the slot's
// mutex, so Inner is Send and Sync whenever the payload can be sent between threads.
unsafe impl<T: Send> Send for Inner<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Inner<T> {}

/// See the module docs.
pub struct CompletionQueue<T: Send + 'static> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + 'static> CompletionQueue<T> {
    /// A queue for at most `capacity` operations in flight at once.
    #[must_use]
    pub fn new(capacity: u32) -> CompletionQueue<T> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new_cyclic(|me: &std::sync::Weak<Inner<T>>| Inner {
            slots: (0..capacity)
                .map(|index| Slot {
                    owner: me.as_ptr(),
                    index,
                    state: Mutex::new(None),
                })
                .collect(),
            free: Mutex::new((0..capacity).rev().collect()),
            tx,
            rx,
            in_flight: AtomicUsize::new(0),
        });
        CompletionQueue { inner }
    }

    /// Operations started and not yet received.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Make one blocked [`recv`](Self::recv) return `None` (for shutting the owner down).
    pub fn wake(&self) {
        let _ = self.inner.tx.send(Msg::Wake);
    }

    /// Wait for the next completion; `None` after a [`wake`](Self::wake).
    pub fn recv(&self) -> Option<Completed<T>> {
        loop {
            let m = self.inner.rx.recv().ok()?;
            if let Some(done) = self.finish(m)? {
                return Some(done);
            }
        }
    }

    /// Like [`recv`](Self::recv), waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Completed<T>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let m = match self.inner.rx.recv_deadline(deadline) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            };
            if let Some(done) = self.finish(m)? {
                return Some(done);
            }
        }
    }

    /// `None`: a wake-up; `Some(None)`: a message for a slot holding nothing (ignored).
    fn finish(&self, m: Msg) -> Option<Option<Completed<T>>> {
        let Msg::Done { index, ret, errno } = m else {
            return None;
        };
        let Some(slot) = self.inner.slots.get(index as usize) else {
            return Some(None);
        };
        let Some((payload, fd)) = slot.state.lock().take() else {
            return Some(None);
        };
        self.inner.free.lock().push(index);
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        drop(fd);
        let result = if ret < 0 {
            Err(match errno {
                0 => Errno::EIO,
                e => Errno::from_raw(e),
            })
        } else {
            Ok(ret.unsigned_abs())
        };
        Some(Some(Completed { payload, result }))
    }

    /// Park the payload in a free slot and call `call` with the fd, the callback and the
    /// callback's data pointer.
    fn start(
        &self,
        fd: &Arc<Fd>,
        payload: T,
        call: impl FnOnce(*mut sys::glfs_fd_t, sys::glfs_io_cbk, *mut c_void) -> c_int,
    ) -> Result<(), (T, Errno)> {
        let Some(index) = self.inner.free.lock().pop() else {
            return Err((payload, Errno::EAGAIN));
        };
        let Some(slot) = self.inner.slots.get(index as usize) else {
            return Err((payload, Errno::EIO));
        };
        *slot.state.lock() = Some((payload, Arc::clone(fd)));
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        // One strong reference for the callback, released there.
        let keep = Arc::into_raw(Arc::clone(&self.inner));
        let data = std::ptr::from_ref(slot).cast_mut().cast::<c_void>();
        let ret = call(fd.raw(), Some(on_done::<T>), data);
        if ret >= 0 {
            return Ok(());
        }
        let errno = last_errno();
        // SAFETY: the call failed, so gfapi will not call back: release its reference.
        drop(unsafe { Arc::from_raw(keep) });
        let taken = slot.state.lock().take();
        self.inner.free.lock().push(index);
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        match taken {
            Some((payload, _fd)) => Err((payload, errno)),
            // Unreachable unless gfapi both called back and failed; the completion carries it.
            None => Ok(()),
        }
    }

    /// Read into `iov` at `offset`.
    ///
    /// # Safety
    /// The memory `iov` describes must stay valid for writes, and not be accessed by anyone
    /// else, until this operation's completion is received from this queue.
    ///
    /// # Errors
    /// The payload back with `EAGAIN` (queue full) or gfapi's error; then nothing was started.
    pub unsafe fn preadv(
        &self,
        fd: &Arc<Fd>,
        iov: &[libc::iovec],
        offset: u64,
        payload: T,
    ) -> Result<(), (T, Errno)> {
        let (Ok(at), Ok(n)) = (libc::off_t::try_from(offset), c_int::try_from(iov.len())) else {
            return Err((payload, Errno::EINVAL));
        };
        self.start(fd, payload, |f, cb, data| {
            // SAFETY: the caller guarantees the buffers; `iov` outlives the call (gfapi copies
            // the vector before returning).
            unsafe { sys::glfs_preadv_async(f, iov.as_ptr(), n, at, 0, cb, data) }
        })
    }

    /// Write `iov` at `offset` with `flags` (`0` or `O_DSYNC`).
    ///
    /// # Safety
    /// The memory `iov` describes must stay valid for reads, and not be written by anyone,
    /// until this operation's completion is received from this queue.
    ///
    /// # Errors
    /// As [`preadv`](Self::preadv).
    pub unsafe fn pwritev(
        &self,
        fd: &Arc<Fd>,
        iov: &[libc::iovec],
        offset: u64,
        flags: c_int,
        payload: T,
    ) -> Result<(), (T, Errno)> {
        let (Ok(at), Ok(n)) = (libc::off_t::try_from(offset), c_int::try_from(iov.len())) else {
            return Err((payload, Errno::EINVAL));
        };
        self.start(fd, payload, |f, cb, data| {
            // SAFETY: as in preadv.
            unsafe { sys::glfs_pwritev_async(f, iov.as_ptr(), n, at, flags, cb, data) }
        })
    }

    /// Make the file's data (and metadata) durable.
    ///
    /// # Errors
    /// As [`preadv`](Self::preadv).
    pub fn fsync(&self, fd: &Arc<Fd>, payload: T) -> Result<(), (T, Errno)> {
        // SAFETY: no buffers; the fd and callback data stay valid (see `start`).
        self.start(fd, payload, |f, cb, data| unsafe {
            sys::glfs_fsync_async(f, cb, data)
        })
    }

    /// Make the file's data durable.
    ///
    /// # Errors
    /// As [`preadv`](Self::preadv).
    pub fn fdatasync(&self, fd: &Arc<Fd>, payload: T) -> Result<(), (T, Errno)> {
        // SAFETY: as in fsync.
        self.start(fd, payload, |f, cb, data| unsafe {
            sys::glfs_fdatasync_async(f, cb, data)
        })
    }

    /// Deallocate `len` bytes at `offset` (they read back as zeros).
    ///
    /// # Errors
    /// As [`preadv`](Self::preadv).
    pub fn discard(
        &self,
        fd: &Arc<Fd>,
        offset: u64,
        len: u64,
        payload: T,
    ) -> Result<(), (T, Errno)> {
        let (Ok(at), Ok(n)) = (libc::off_t::try_from(offset), usize::try_from(len)) else {
            return Err((payload, Errno::EINVAL));
        };
        // SAFETY: as in fsync.
        self.start(fd, payload, |f, cb, data| unsafe {
            sys::glfs_discard_async(f, at, n, cb, data)
        })
    }

    /// Write zeros over `len` bytes at `offset`.
    ///
    /// # Errors
    /// As [`preadv`](Self::preadv).
    pub fn zerofill(
        &self,
        fd: &Arc<Fd>,
        offset: u64,
        len: u64,
        payload: T,
    ) -> Result<(), (T, Errno)> {
        let (Ok(at), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err((payload, Errno::EINVAL));
        };
        // SAFETY: as in fsync.
        self.start(fd, payload, |f, cb, data| unsafe {
            sys::glfs_zerofill_async(f, at, n, cb, data)
        })
    }
}

impl<T: Send + 'static> Drop for CompletionQueue<T> {
    fn drop(&mut self) {
        // Operations still in flight keep the shared state alive; their callbacks release it.
        self.wake();
    }
}

/// The gfapi callback: post `(slot, result)` and release the operation's reference. Runs on
/// a gfapi thread; does nothing else, and never unwinds into C.
unsafe extern "C" fn on_done<T: Send + 'static>(
    _fd: *mut sys::glfs_fd_t,
    ret: libc::ssize_t,
    _prestat: *mut sys::glfs_stat,
    _poststat: *mut sys::glfs_stat,
    data: *mut c_void,
) {
    let errno = if ret < 0 {
        nix::errno::Errno::last_raw()
    } else {
        0
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `data` is the slot `start` passed; its Inner is alive because this
        // operation holds a strong reference to it (taken in `start`).
        let (owner, index) = unsafe {
            let slot = &*data.cast::<Slot<T>>();
            (slot.owner, slot.index)
        };
        // SAFETY: `owner` came from Arc::into_raw in `start` (the same pointer as the Arc's);
        // this takes over that one reference.
        let inner = unsafe { Arc::from_raw(owner) };
        // From here on the slot may be reused: it is not touched again.
        let _ = inner.tx.send(Msg::Done { index, ret, errno });
        if Arc::strong_count(&inner) == 1 {
            // The queue's owner is gone: free what is left off gfapi's thread.
            let _ = std::thread::Builder::new()
                .name("glfs-cq-free".into())
                .spawn(move || drop(inner));
        } else {
            drop(inner);
        }
    }));
}
