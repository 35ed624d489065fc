//! The device event loops: a fixed set of threads (`[daemon] loops`, default one per core),
//! each serving many devices (docs/DESIGN.md, "Threads").
//!
//! A loop waits in one `epoll_wait` on the descriptors of all its devices: each device's
//! uio fd (the kernel's doorbell), its wake eventfd (completions handed back by workers and
//! backend callbacks, stop requests, health probe results) and its io_uring (file I/O
//! completions). The epoll data of a descriptor names the device (a number unique in the
//! process) and the descriptor's kind. After the wait, every device with an event, with work no event will
//! announce, or with a timer due (deadlines, stop deadline, health tick) gets one pass
//! (`LoopDevice::pass`); nothing in a pass blocks, so a device whose backend hangs holds
//! its own commands, never the loop. A device that stops leaves its loop at the end of the
//! pass that finishes it; the others on the loop are not touched.
//!
//! A new device goes to the loop serving the fewest devices. Each device keeps its own
//! io_uring (its `user_data` is a context slot, as before): the loop only waits on it, so
//! the operations of a device whose file hangs never share a queue with another device's.

use super::thread::{LoopDevice, NextPass};
use crossbeam_channel::{unbounded, Receiver, Sender};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The descriptor kinds of a device, in the low bits of the epoll data.
const KIND_UIO: u64 = 0;
const KIND_WAKE: u64 = 1;
const KIND_URING: u64 = 2;
/// The loop's own eventfd (a device was added, or the loops are shutting down).
const LOOP_WAKE: u64 = u64::MAX;

/// Longest wait in `epoll_wait` (the loop then looks at its devices' timers).
const MAX_WAIT_MS: u16 = 1000;

/// Timers due within this much of the earliest are served in the same turn, so a loop with
/// many idle devices wakes a few times a second, not once per device timer.
const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(50);

/// The event loops devices are served by; cheap to clone (every clone names the same
/// loops). The threads end once every clone is dropped and their devices have stopped.
#[derive(Clone)]
pub struct DeviceLoops {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLoops")
            .field("loops", &self.inner.loops.len())
            .field("devices", &self.devices())
            .finish()
    }
}

struct Inner {
    loops: Vec<Arc<LoopRef>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for l in &self.loops {
            let _ = l.tx.send(Msg::Shutdown);
            l.wake();
        }
    }
}

/// What the rest of the process holds of one loop thread.
struct LoopRef {
    tx: Sender<Msg>,
    /// Devices' descriptors are added by the thread that adds the device, removed by the loop.
    epoll: Epoll,
    wake: EventFd,
    /// Devices served (added and not yet left).
    devices: AtomicUsize,
}

impl LoopRef {
    fn wake(&self) {
        if let Err(e) = self.wake.write(1) {
            tracing::warn!("device loop: eventfd write failed: {e}");
        }
    }
}

enum Msg {
    Add(u64, Box<LoopDevice>),
    Shutdown,
}

impl DeviceLoops {
    /// Start `n` loop threads (at least one), named `<name>/<i>`.
    ///
    /// # Errors
    /// When an epoll instance, an eventfd or a thread cannot be created.
    pub fn start(name: &str, n: usize) -> std::io::Result<DeviceLoops> {
        let n = n.max(1);
        let mut loops = Vec::with_capacity(n);
        for i in 0..n {
            let thread_name = if n == 1 && name.starts_with("tcmu-d/") {
                name.to_string()
            } else {
                format!("{name}/{i}")
            };
            loops.push(start_loop(thread_name)?);
        }
        Ok(DeviceLoops {
            inner: Arc::new(Inner { loops }),
        })
    }

    /// How many loop threads there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.loops.len()
    }

    /// Whether there are no loops (never: at least one is started).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.loops.is_empty()
    }

    /// Devices served per loop, in loop order.
    #[must_use]
    pub fn devices(&self) -> Vec<usize> {
        self.inner
            .loops
            .iter()
            .map(|l| l.devices.load(Ordering::Relaxed))
            .collect()
    }

    /// Serve `dev` on the loop with the fewest devices.
    ///
    /// # Errors
    /// When its descriptors cannot be watched, or the loop has ended.
    pub(super) fn add(&self, dev: LoopDevice) -> std::io::Result<()> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let l = self
            .inner
            .loops
            .iter()
            .min_by_key(|l| l.devices.load(Ordering::Relaxed))
            .ok_or_else(|| std::io::Error::other("no device loop"))?;
        // Below the loop's own key, and room for the kind in the low bits.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) & (u64::MAX >> 3);
        let fds = dev.fds();
        for (k, fd) in fds.iter().enumerate() {
            let Some(fd) = *fd else { continue };
            let ev = EpollEvent::new(EpollFlags::EPOLLIN, key(id, k as u64));
            if let Err(e) = l.epoll.add(borrow(fd), ev) {
                for fd in fds[..k].iter().flatten() {
                    let _ = l.epoll.delete(borrow(*fd));
                }
                return Err(e.into());
            }
        }
        l.devices.fetch_add(1, Ordering::Relaxed);
        if let Err(crossbeam_channel::SendError(m)) = l.tx.send(Msg::Add(id, Box::new(dev))) {
            for fd in fds.iter().flatten() {
                let _ = l.epoll.delete(borrow(*fd));
            }
            l.devices.fetch_sub(1, Ordering::Relaxed);
            drop(m);
            return Err(std::io::Error::other("the device loop has ended"));
        }
        l.wake();
        Ok(())
    }
}

fn start_loop(thread_name: String) -> std::io::Result<Arc<LoopRef>> {
    let (tx, rx) = unbounded();
    let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        wake.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, LOOP_WAKE),
    )?;
    // Of the loop's thread from here on (the add above was before it existed).
    let r = Arc::new(LoopRef {
        tx,
        epoll,
        wake,
        devices: AtomicUsize::new(0),
    });
    let l = Arc::clone(&r);
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            super::warm::warm_thread();
            let mut ev = EventLoop {
                rx,
                me: l,
                devices: HashMap::new(),
                shutdown: false,
            };
            ev.run();
        })?;
    Ok(r)
}

/// A device in its loop.
struct Slot {
    dev: Box<LoopDevice>,
    /// Pass at the next turn whatever the timers say.
    due: bool,
    next: NextPass,
    /// The descriptors watched: uio, wake, io_uring.
    fds: [Option<RawFd>; 3],
    /// Stopped: leaves the loop at the end of this turn.
    finished: bool,
}

struct EventLoop {
    rx: Receiver<Msg>,
    me: Arc<LoopRef>,
    devices: HashMap<u64, Slot>,
    shutdown: bool,
}

fn key(id: u64, kind: u64) -> u64 {
    (id << 2) | kind
}

/// A descriptor of a device the loop serves: it stays open while its device is in the loop
/// (the device holds it), and is deregistered before the device is dropped.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only called for descriptors of a device being added or still in its loop,
    // which holds them open; the borrow is used for one epoll_ctl call and not kept.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl EventLoop {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut woken = true;
        loop {
            self.take_messages(std::mem::take(&mut woken));
            if self.shutdown && self.devices.is_empty() {
                return;
            }
            let timeout = self.timeout();
            let n = match self.me.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::warn!("device loop: epoll_wait failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    0
                }
            };
            for e in &events[..n] {
                woken |= e.data() == LOOP_WAKE;
                self.event(e.data(), e.events());
            }
            self.passes();
        }
    }

    /// Take the messages sent to the loop (devices added, shutdown). Its eventfd is read only
    /// when epoll said it was written (`woken`): an empty read is a wasted system call.
    fn take_messages(&mut self, woken: bool) {
        if woken {
            let _ = self.me.wake.read();
        }
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Add(id, dev) => {
                    let fds = dev.fds();
                    let now = Instant::now();
                    self.devices.insert(
                        id,
                        Slot {
                            dev,
                            due: true,
                            next: NextPass {
                                again: true,
                                at: now,
                            },
                            fds,
                            finished: false,
                        },
                    );
                }
                Msg::Shutdown => self.shutdown = true,
            }
        }
    }

    /// How long to wait: not at all when a device has work waiting, else until the
    /// earliest timer.
    fn timeout(&self) -> EpollTimeout {
        // No clock read when a device has work waiting (a clock read may be a system call:
        // docs/DESIGN.md, "The pass's clock").
        if self.devices.values().any(|s| s.due || s.next.again) {
            return EpollTimeout::ZERO;
        }
        let now = Instant::now();
        let mut ms = u128::from(MAX_WAIT_MS);
        for s in self.devices.values() {
            // Rounded up: waking a millisecond early would spin until the timer is due.
            let d = s.next.at.saturating_duration_since(now);
            ms = ms.min(d.as_micros().div_ceil(1000));
        }
        EpollTimeout::from(u16::try_from(ms).unwrap_or(MAX_WAIT_MS))
    }

    fn event(&mut self, data: u64, flags: EpollFlags) {
        if data == LOOP_WAKE {
            return;
        }
        let (id, kind) = (data >> 2, data & 3);
        let Some(s) = self.devices.get_mut(&id) else {
            return;
        };
        s.due = true;
        match kind {
            KIND_UIO => s.dev.uio_event(
                flags.contains(EpollFlags::EPOLLIN),
                flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP),
            ),
            KIND_WAKE => s.dev.wake_event(),
            // io_uring completions: the pass reaps them.
            KIND_URING => {}
            _ => {}
        }
    }

    /// A pass for every device that has an event, work waiting or a timer due; the devices
    /// that stopped leave the loop.
    fn passes(&mut self) {
        // Read only when a device with no event may have a timer due.
        let mut soon = None;
        let mut gone = 0usize;
        for s in self.devices.values_mut() {
            if !(s.due
                || s.next.again
                || s.next.at <= *soon.get_or_insert_with(|| Instant::now() + TIMER_SLACK))
            {
                continue;
            }
            s.due = false;
            if s.dev.pass() {
                for fd in s.fds.iter_mut().filter_map(Option::take) {
                    let _ = self.me.epoll.delete(borrow(fd));
                }
                s.finished = true;
                gone += 1;
                continue;
            }
            s.next = s.dev.next_pass();
            // Stopping: the kernel's doorbell is no longer read, nor watched.
            if !s.dev.watches_uio() {
                if let Some(fd) = s.fds[0].take() {
                    let _ = self.me.epoll.delete(borrow(fd));
                }
            }
        }
        if gone > 0 {
            // Dropped here: each one's exit is then reported to whoever joins it.
            self.devices.retain(|_, s| !s.finished);
            self.me.devices.fetch_sub(gone, Ordering::Relaxed);
        }
    }
}
