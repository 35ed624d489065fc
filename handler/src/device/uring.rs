//! The device thread's io_uring: READ, WRITE and SYNCHRONIZE CACHE on a backend that offers a
//! file descriptor ([`Backend::uring_fd`]) run to completion on the device thread, with no
//! hand-off to a worker (docs/DESIGN.md, "io_uring").
//!
//! The device thread builds each operation from the command's own iovecs (`Ctx::iov`, which
//! point into the ring's data area), pushes it here, submits everything one pass over the ring
//! read with one `io_uring_enter`, and reaps the completions in the same wake-up. A context
//! stays in this table, by slot, while its operation is in the kernel (`user_data` is the
//! slot); it leaves it exactly once, with its result, through [`Uring::pop_ready`]. A short
//! transfer is resubmitted for the rest; a READ that meets the end of the file reads zeros
//! for the rest, as the file backend's own `submit` does.
//!
//! Nothing here blocks: the kernel runs an operation that would block on its own workers.
//! One exception, by design: a WRITE of up to 128 KiB to a file in memory (tmpfs, ramfs: no
//! device under it, so nothing to hang on) is written at once with `pwritev2` on this thread, because the
//! kernel cannot write such a file without blocking and would hand every one of these
//! writes to its io_uring worker (one per file, in order), at the cost of two cross-thread
//! wake-ups per command (docs/DESIGN.md, "io_uring").

use super::context::Ctx;
use crate::backend::Backend;
use io_uring::{opcode, squeue, types, IoUring};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};

/// Largest WRITE to an in-memory file written at once on the device's loop (docs/DESIGN.md,
/// "io_uring"). Larger ones go to io_uring's workers, which run the commands of a deep
/// stream side by side: written at once, a QD8 stream of 512 KiB commands was serialised on
/// the loop thread and lost about a third of its MB/s.
const INLINE_WRITE_MAX: u64 = 128 * 1024;

/// Most iovecs one READV/WRITEV takes (`IOV_MAX` on Linux); longer lists are done in parts.
const IOV_MAX: usize = 1024;

/// Largest submission queue: a pass over the ring that reads more commands submits when the
/// queue fills.
const MAX_SQ_ENTRIES: usize = 256;

/// What a command asks of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UringOp {
    /// Read `len` bytes at the offset into the command's iovecs.
    Read,
    /// Write `len` bytes at the offset; with `fua`, durable before it completes.
    Write {
        /// Force unit access (RWF_DSYNC, or a write then `fdatasync` where that is refused).
        fua: bool,
    },
    /// `fdatasync` (SYNCHRONIZE CACHE).
    Flush,
}

/// Where an operation in the kernel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The READV, WRITEV or FSYNC itself.
    Transfer,
    /// The `fdatasync` after a FUA write whose RWF_DSYNC the file refused.
    SyncAfterWrite,
}

/// One command in the kernel.
struct Away {
    ctx: Box<Ctx>,
    /// Holds the backend, and so its file descriptor, open until the operation completes.
    _backend: Arc<dyn Backend>,
    fd: RawFd,
    op: UringOp,
    offset: u64,
    len: u64,
    /// Bytes transferred so far.
    done: u64,
    /// The WRITEV carries RWF_DSYNC.
    dsync: bool,
    step: Step,
}

/// See the module docs.
pub struct Uring {
    ring: IoUring,
    /// Commands in the kernel, by context slot.
    away: Vec<Option<Away>>,
    in_flight: usize,
    /// Finished commands, their result in `backend_result`, waiting for the device thread.
    // Boxed on purpose: the contexts are the device's boxed pool.
    #[allow(clippy::vec_box)]
    ready: Vec<Box<Ctx>>,
    /// Completions copied out of the queue (preallocated).
    cqes: Vec<(u64, i32)>,
    /// RWF_DSYNC was refused once: FUA writes are a WRITEV then an FSYNC from then on.
    no_dsync: bool,
    /// Submission failed with this error last time (logged once per error).
    last_submit_error: Option<Errno>,
    /// The last backend asked about, and whether its file is in memory
    /// ([`in_memory_file`]); the weak reference keeps its address from being reused.
    memory_file: Option<(Weak<dyn Backend>, bool)>,
}

impl Uring {
    /// A ring for a device with `contexts` command contexts. It reads no clock: the device
    /// stamps submission and completion times with its pass's clock.
    ///
    /// # Errors
    /// When the kernel refuses io_uring (too old, seccomp, `io_uring_disabled`, limits).
    pub fn new(contexts: usize) -> std::io::Result<Uring> {
        let sq = contexts.clamp(1, MAX_SQ_ENTRIES).next_power_of_two();
        // Room for a completion of every context at once, so none waits in the kernel's
        // overflow list.
        let cq = contexts.max(1).next_power_of_two().max(2 * sq);
        let ring = IoUring::builder()
            .setup_cqsize(u32::try_from(cq).unwrap_or(u32::MAX))
            .build(u32::try_from(sq).unwrap_or(256))?;
        Ok(Uring {
            ring,
            away: (0..contexts).map(|_| None).collect(),
            in_flight: 0,
            ready: Vec::with_capacity(contexts),
            cqes: Vec::with_capacity(cq),
            no_dsync: false,
            last_submit_error: None,
            memory_file: None,
        })
    }

    /// The ring's descriptor: readable when completions are waiting.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Commands in the kernel.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the device thread has something to do here without waiting: finished commands
    /// to take, or operations not yet submitted.
    #[must_use]
    pub fn has_work(&mut self) -> bool {
        !self.ready.is_empty() || !self.ring.submission().is_empty()
    }

    /// Queue the command's operation on `fd` (its iovecs, `ctx.iov`, cover `len` bytes at
    /// `offset`; none for [`UringOp::Flush`]). It is submitted by the next [`Uring::submit`].
    /// The context comes back through [`Uring::pop_ready`], exactly once.
    ///
    /// # Errors
    /// The context back when it cannot be queued (its slot is taken, or the queue stays full):
    /// the caller sends it another way.
    pub fn start(
        &mut self,
        ctx: Box<Ctx>,
        backend: Arc<dyn Backend>,
        fd: RawFd,
        op: UringOp,
        offset: u64,
        len: u64,
    ) -> Result<(), Box<Ctx>> {
        let slot = usize::from(ctx.slot);
        if self.away.get(slot).map_or(true, Option::is_some) {
            return Err(ctx);
        }
        let a = Away {
            ctx,
            _backend: backend,
            fd,
            op,
            offset,
            len,
            done: 0,
            dsync: matches!(op, UringOp::Write { fua: true }) && !self.no_dsync,
            step: Step::Transfer,
        };
        if len == 0 && op != UringOp::Flush {
            // Nothing to transfer.
            let mut ctx = a.ctx;
            ctx.backend_result = Ok(());
            self.ready(ctx);
            return Ok(());
        }
        if matches!(op, UringOp::Write { .. })
            && len <= INLINE_WRITE_MAX
            && self.is_memory_file(&a._backend, fd)
        {
            let mut a = a;
            let result = write_now(&mut a);
            let mut ctx = a.ctx;
            ctx.backend_result = result;
            self.ready(ctx);
            return Ok(());
        }
        let sqe = sqe_for(&a, slot);
        if !self.push(&sqe) {
            return Err(a.ctx);
        }
        self.away[slot] = Some(a);
        self.in_flight += 1;
        Ok(())
    }

    /// Whether `backend`'s file `fd` is in memory (asked once per backend).
    fn is_memory_file(&mut self, backend: &Arc<dyn Backend>, fd: RawFd) -> bool {
        if let Some((w, yes)) = &self.memory_file {
            if std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(backend)) {
                return *yes;
            }
        }
        let yes = in_memory_file(fd);
        self.memory_file = Some((Arc::downgrade(backend), yes));
        yes
    }

    /// Push one entry, submitting what is queued first when the queue is full.
    fn push(&mut self, sqe: &squeue::Entry) -> bool {
        if self.ring.submission().is_full() {
            self.submit();
        }
        // SAFETY: every buffer the entry names (the iovec array and the memory it points to,
        // in the context's `iov` and the ring's data area) stays valid and untouched until
        // its completion is reaped: the context is held in `away` until then, and on a stop
        // with operations still in the kernel it is handed to a thread that waits for them
        // (`abandon`). The fd is held open by the backend kept beside it.
        unsafe { self.ring.submission().push(sqe).is_ok() }
    }

    /// Submit every queued operation with one system call; false when nothing was queued.
    pub fn submit(&mut self) -> bool {
        if self.ring.submission().is_empty() {
            return false;
        }
        match self.ring.submit() {
            Ok(_) => self.last_submit_error = None,
            Err(e) => {
                let e = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                // EBUSY/EAGAIN: completions must be reaped or the kernel is short of memory;
                // what is queued is submitted on the next pass (the deadline still holds).
                if self.last_submit_error != Some(e) {
                    tracing::warn!("io_uring submit failed, retrying: {e}");
                    self.last_submit_error = Some(e);
                }
            }
        }
        true
    }

    /// Reap every completion waiting: finished commands go to the ready list; short
    /// transfers are queued again (and submitted).
    pub fn reap(&mut self) {
        loop {
            self.cqes.clear();
            let cap = self.cqes.capacity();
            for e in self.ring.completion().take(cap) {
                self.cqes.push((e.user_data(), e.result()));
            }
            if self.cqes.is_empty() {
                break;
            }
            for i in 0..self.cqes.len() {
                let (slot, res) = self.cqes[i];
                self.completed(slot, res);
            }
        }
        self.submit();
    }

    /// A finished command, if any.
    pub fn pop_ready(&mut self) -> Option<Box<Ctx>> {
        self.ready.pop()
    }

    fn ready(&mut self, ctx: Box<Ctx>) {
        self.ready.push(ctx);
    }

    fn completed(&mut self, slot: u64, res: i32) {
        let Some(i) = usize::try_from(slot).ok().filter(|&i| i < self.away.len()) else {
            tracing::error!(slot, "io_uring completion for no command");
            return;
        };
        let Some(mut a) = self.away[i].take() else {
            tracing::error!(
                slot,
                "io_uring completion for a slot with nothing in flight"
            );
            return;
        };
        match self.next_step(&mut a, res) {
            Some(result) => {
                self.in_flight -= 1;
                let mut ctx = a.ctx;
                ctx.backend_result = result;
                self.ready(ctx);
            }
            None => {
                let sqe = sqe_for(&a, i);
                if self.push(&sqe) {
                    self.away[i] = Some(a);
                } else {
                    // The queue stays full even after a submit: fail retryably rather than
                    // hold the command.
                    self.in_flight -= 1;
                    let mut ctx = a.ctx;
                    ctx.backend_result = Err(Errno::EAGAIN);
                    self.ready(ctx);
                }
            }
        }
    }

    /// Advance `a` by a completion with result `res`: `Some(result)` when the command is
    /// finished, `None` when the next part or step must be submitted.
    fn next_step(&mut self, a: &mut Away, res: i32) -> Option<Result<(), Errno>> {
        if res < 0 {
            let e = Errno::from_raw(-res);
            return match e {
                Errno::EINTR | Errno::EAGAIN => None,
                Errno::EOPNOTSUPP | Errno::ENOSYS if a.dsync && a.step == Step::Transfer => {
                    // The file refuses RWF_DSYNC: a plain write, then fdatasync.
                    self.no_dsync = true;
                    a.dsync = false;
                    None
                }
                e => Some(Err(e)),
            };
        }
        if a.step == Step::SyncAfterWrite || a.op == UringOp::Flush {
            return Some(Ok(()));
        }
        let n = u64::from(res.unsigned_abs());
        if n == 0 {
            if a.op == UringOp::Read {
                // End of file: the rest reads as zeros (a sparse tail).
                a.ctx.iov.zero_remaining();
                return Some(Ok(()));
            }
            return Some(Err(Errno::EIO));
        }
        a.done += n;
        a.ctx.iov.advance(n);
        if a.done < a.len && !a.ctx.iov.remaining().is_empty() {
            return None;
        }
        if matches!(a.op, UringOp::Write { fua: true }) && !a.dsync {
            a.step = Step::SyncAfterWrite;
            return None;
        }
        Some(Ok(()))
    }

    /// The device stops with operations still in the kernel: a thread waits for them and
    /// keeps their contexts (whose iovecs hold the data area mapped) until then, so the
    /// kernel never writes into memory that was given back. The device thread does not wait.
    pub fn abandon(self, name: &str) {
        if self.in_flight == 0 {
            return;
        }
        let n = self.in_flight;
        let spawned = std::thread::Builder::new()
            .name(format!("tcmu-u/{name}"))
            .spawn(move || {
                let mut u = self;
                while u.in_flight > 0 {
                    if let Err(e) = u.ring.submit_and_wait(1) {
                        if e.raw_os_error() != Some(libc::EINTR) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    }
                    u.reap();
                    u.ready.clear();
                }
            });
        if let Err(e) = spawned {
            // Never free what the kernel may still write: keep it for the process's life.
            tracing::error!(
                device = name,
                in_flight = n,
                "cannot start the io_uring waiter ({e}); its buffers are kept"
            );
        }
    }
}

/// `statfs` magic numbers of the file systems whose files live in memory.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether `fd` is a file on tmpfs or ramfs: a write to it copies into memory and waits on
/// no device (false when `fstatfs` fails).
fn in_memory_file(fd: RawFd) -> bool {
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid statfs to write; the fd is held open by the caller's backend.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
}

/// Write `a` now with `pwritev2` (a file in memory, see the module docs): the whole transfer,
/// short writes continued; a FUA write with RWF_DSYNC, or followed by `fdatasync` where the
/// file refuses that flag.
fn write_now(a: &mut Away) -> Result<(), Errno> {
    let mut retries = 0;
    while a.done < a.len && !a.ctx.iov.remaining().is_empty() {
        let rest = a.ctx.iov.remaining();
        let flags = if a.dsync { libc::RWF_DSYNC } else { 0 };
        let at = libc::off_t::try_from(a.offset + a.done).map_err(|_| Errno::EINVAL)?;
        let count = i32::try_from(iov_count(rest)).unwrap_or(0);
        // SAFETY: the iovecs point into the ring's data area, valid and not written by anyone
        // else while the command is in flight (the context holds them); the fd is held open
        // by the backend in `a`.
        let n = unsafe { libc::pwritev2(a.fd, rest.as_ptr(), count, at, flags) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR | Errno::EAGAIN if retries < 8 => retries += 1,
                Errno::EOPNOTSUPP | Errno::ENOSYS if a.dsync => a.dsync = false,
                e => return Err(e),
            }
            continue;
        }
        if n == 0 {
            return Err(Errno::EIO);
        }
        let n = n.unsigned_abs() as u64;
        a.done += n;
        a.ctx.iov.advance(n);
    }
    if matches!(a.op, UringOp::Write { fua: true }) && !a.dsync {
        nix::unistd::fdatasync(a.fd)?;
    }
    Ok(())
}

/// The submission entry for `a`'s next part or step, tagged with `slot`.
fn sqe_for(a: &Away, slot: usize) -> squeue::Entry {
    let fd = types::Fd(a.fd);
    let at = a.offset + a.done;
    let e = match (a.op, a.step) {
        (UringOp::Flush, _) | (_, Step::SyncAfterWrite) => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        (UringOp::Read, Step::Transfer) => {
            let rest = a.ctx.iov.remaining();
            opcode::Readv::new(fd, rest.as_ptr(), iov_count(rest))
                .offset(at)
                .build()
        }
        (UringOp::Write { .. }, Step::Transfer) => {
            let rest = a.ctx.iov.remaining();
            let flags = if a.dsync { libc::RWF_DSYNC } else { 0 };
            opcode::Writev::new(fd, rest.as_ptr(), iov_count(rest))
                .offset(at)
                .rw_flags(flags)
                .build()
        }
    };
    e.user_data(slot as u64)
}

fn iov_count(iov: &[libc::iovec]) -> u32 {
    u32::try_from(iov.len().min(IOV_MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::in_memory_file;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_file_on_tmpfs_is_in_memory_and_one_on_disk_or_a_closed_fd_is_not() {
        let shm = tempfile::tempfile_in("/dev/shm").unwrap();
        assert!(in_memory_file(shm.as_raw_fd()));
        // The build directory is on a disk (not tmpfs) on the machines this runs on.
        let disk = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let on_tmpfs = std::process::Command::new("stat")
            .args(["-f", "-c", "%T", env!("CARGO_MANIFEST_DIR")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs")
            .unwrap_or(false);
        assert_eq!(in_memory_file(disk.as_raw_fd()), on_tmpfs);
        assert!(!in_memory_file(-1));
    }
}
