//! Asynchronous completions: the callback hands `(tag, result)` to its owner, either posted
//! to the owner's channel or given to the owner's handler on librbd's callback thread.

use crate::{check, Result};
use crossbeam_channel::Sender;
use rbd_sys as sys;
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a completion posts: the owner's tag and librbd's return value (bytes or `-errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AioDone {
    /// The tag the [`AioTarget`] was made with.
    pub tag: u64,
    /// librbd's return value: `>= 0` success, `-errno` failure.
    pub ret: i64,
}

/// A handler run on librbd's callback thread (see [`AioTarget::with_handler`]).
pub type AioHandler = Arc<dyn Fn(AioDone) + Send + Sync>;

/// Where a completion goes.
enum Sink {
    /// Posted to the owner's channel.
    Channel(Sender<AioDone>),
    /// Given to the owner's handler, on librbd's thread.
    Handler(AioHandler),
}

/// Where a completion goes: a tag and the owner's channel or handler. The owner makes one per
/// slot ahead of time and reuses it, so starting an operation allocates nothing.
pub struct AioTarget {
    tag: u64,
    sink: Sink,
}

impl AioTarget {
    /// A target posting `tag` to `tx`.
    #[must_use]
    pub fn new(tag: u64, tx: Sender<AioDone>) -> Arc<AioTarget> {
        Arc::new(AioTarget {
            tag,
            sink: Sink::Channel(tx),
        })
    }

    /// A target calling `handler` with `tag` and the result on librbd's callback thread. The
    /// handler must not block (librbd runs its other completions on the same thread) and must
    /// not call librbd functions that wait for librbd's threads (`rbd_close`, the synchronous
    /// calls): it may run while the thread that started the operation is still inside the
    /// `rbd_aio_*` call. [`on_callback_thread`] tells code it calls where it runs.
    #[must_use]
    pub fn with_handler(tag: u64, handler: AioHandler) -> Arc<AioTarget> {
        Arc::new(AioTarget {
            tag,
            sink: Sink::Handler(handler),
        })
    }

    /// The tag.
    #[must_use]
    pub fn tag(&self) -> u64 {
        self.tag
    }
}

static CALLBACK_PANICS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this thread runs an [`AioTarget::with_handler`] handler.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is running a completion handler of librbd's (code it calls,
/// such as a destructor, must then neither block nor close an image).
#[must_use]
pub fn on_callback_thread() -> bool {
    IN_HANDLER.with(Cell::get)
}

/// Clears [`IN_HANDLER`] when the handler returns or unwinds.
struct InHandler;

impl InHandler {
    fn enter() -> InHandler {
        IN_HANDLER.with(|c| c.set(true));
        InHandler
    }
}

impl Drop for InHandler {
    fn drop(&mut self) {
        IN_HANDLER.with(|c| c.set(false));
    }
}

/// How many completion callbacks panicked (caught; the operation's post is lost and the
/// owner's deadline completes the command).
#[must_use]
pub fn callback_panics() -> u64 {
    CALLBACK_PANICS.load(Ordering::Relaxed)
}

/// The C callback, run on a librbd thread.
unsafe extern "C" fn on_complete(c: sys::rbd_completion_t, arg: *mut c_void) {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `arg` is the pointer `AioCompletion::new` made with Arc::into_raw for this
        // completion, and librbd calls this callback once, so the strong count it carries is
        // taken back exactly once.
        let target = unsafe { Arc::from_raw(arg.cast_const().cast::<AioTarget>()) };
        // SAFETY: librbd passes the live completion it is completing.
        let ret = unsafe { sys::rbd_aio_get_return_value(c) };
        let done = AioDone {
            tag: target.tag,
            ret: i64::try_from(ret).unwrap_or(i64::from(-libc::EIO)),
        };
        match &target.sink {
            // A full or closed channel means the owner is gone: nothing to tell.
            Sink::Channel(tx) => {
                let _ = tx.try_send(done);
            }
            Sink::Handler(h) => {
                let _in = InHandler::enter();
                h(done);
            }
        }
    });
    if r.is_err() {
        CALLBACK_PANICS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A librbd completion for one operation. Released in `Drop`: drop it after its post arrived
/// (or after starting the operation failed: the wrapper then takes the callback's reference back).
pub struct AioCompletion {
    h: sys::rbd_completion_t,
    /// The strong reference handed to the callback; `None` once it was taken back.
    arg: Option<*const AioTarget>,
}

// SAFETY: an rbd_completion_t may be released from any thread; the raw target pointer is only
// dereferenced through Arc::from_raw, once.
unsafe impl Send for AioCompletion {}

impl AioCompletion {
    /// A completion that posts to `target` when the operation it is given to finishes.
    ///
    /// # Errors
    /// The librbd error (`ENOMEM`).
    pub fn new(target: &Arc<AioTarget>) -> Result<AioCompletion> {
        let arg = Arc::into_raw(Arc::clone(target));
        let mut h: sys::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `arg` stays valid until the callback takes it back (or start_failed/Drop
        // does on the failure paths); `on_complete` matches rbd_callback_t; `h` is a valid
        // out-pointer.
        let r = unsafe {
            sys::rbd_aio_create_completion(arg.cast_mut().cast(), Some(on_complete), &mut h)
        };
        if let Err(e) = check("rbd_aio_create_completion", r) {
            // SAFETY: the callback will never run: take the reference back once.
            drop(unsafe { Arc::from_raw(arg) });
            return Err(e);
        }
        Ok(AioCompletion { h, arg: Some(arg) })
    }

    pub(crate) fn as_raw(&self) -> sys::rbd_completion_t {
        self.h
    }

    /// librbd refused to start the operation (it returned an error synchronously, so the
    /// callback will never run): take back the callback's reference.
    pub(crate) fn start_failed(&mut self) {
        if let Some(arg) = self.arg.take() {
            // SAFETY: librbd did not take the operation, so the callback cannot run and the
            // reference made in `new` is ours to drop, once (`arg` is now None).
            drop(unsafe { Arc::from_raw(arg) });
        }
    }

    /// The callback ran (its post arrived): the reference is no longer ours.
    pub fn fired(&mut self) {
        self.arg = None;
    }
}

impl Drop for AioCompletion {
    fn drop(&mut self) {
        // If `arg` is still set the operation may be in flight: librbd keeps its own
        // reference to the completion and still runs the callback, which takes `arg` back;
        // releasing only drops the caller's reference.
        // SAFETY: the completion is live and released only here.
        unsafe { sys::rbd_aio_release(self.h) };
    }
}
