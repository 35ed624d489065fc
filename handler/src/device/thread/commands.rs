//! What the device thread does with one command: route it (decode, then the pure decisions
//! of [`crate::device::dispatch`] applied to this device's state), emulate it or apply it
//! here, take its LBA range or park it, and send it to the backend, a worker, or run it on
//! this thread. Also task management (cancelling commands a TMR names).

use super::{LoopDevice, DIRECT_SUBMIT_MAX_BYTES};
use crate::backend::IoOp;
use crate::device::context::{Ctx, Outcome, Stage};
use crate::device::dispatch::{self, Decision, Facts};
use crate::device::exec::{self, Job};
use crate::device::handle::ALUA_REFRESH;
use crate::device::range_lock::range_of;
use crate::device::uring::UringOp;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tcmu_scsi::cdb::{self, Cdb};
use tcmu_scsi::error::ScsiError;
use tcmu_scsi::sense::Sense;

impl LoopDevice {
    pub(super) fn start(&mut self, mut ctx: Box<Ctx>) {
        match self.route(&mut ctx) {
            Some(outcome) => {
                self.acct.stats.emulated.fetch_add(1, Ordering::Relaxed);
                ctx.done(outcome);
                self.finish(ctx);
            }
            None => {
                let opcode = ctx.cmd.cdb().first().copied().unwrap_or(0);
                self.deadlines
                    .dispatched(ctx.slot, ctx.cmd.cmd_id, &ctx.cdb, opcode, self.now);
                // A flag left by a TMR for this slot's previous command must not abort this one.
                if let Some(f) = self.link.aborted.get(usize::from(ctx.slot)) {
                    f.store(false, Ordering::Relaxed);
                }
                if !self.take_range(&mut ctx) {
                    if self.link.accounting {
                        ctx.stamps.parked = Some(self.now);
                    }
                    self.parked.push_back(ctx);
                    return;
                }
                self.dispatch(ctx);
            }
        }
    }

    /// A TMR (ABORT TASK, LUN RESET, ...) names commands already in the ring: cancel the work
    /// that has not started. A command parked for its LBA range is completed at once with
    /// TASK ABORTED; one queued for a worker is flagged, and the worker completes it without
    /// running it. A command already in the backend finishes normally (the kernel accepts any
    /// status for an aborted command); ids already completed are ignored.
    pub(super) fn abort_named(&mut self) {
        let mut cancelled = 0usize;
        for i in 0..self.tmr.cmd_ids.len() {
            let id = self.tmr.cmd_ids[i];
            if let Some(pos) = self.parked.iter().position(|c| c.cmd.cmd_id == id) {
                if let Some(mut ctx) = self.parked.remove(pos) {
                    ctx.done(ScsiError::TaskAborted.into());
                    self.finish(ctx);
                    cancelled += 1;
                }
            } else if let Some(slot) = self.deadlines.slot_of(id) {
                if let Some(flag) = self.link.aborted.get(usize::from(slot)) {
                    flag.store(true, Ordering::SeqCst);
                    cancelled += 1;
                }
            }
        }
        if cancelled > 0 {
            tracing::info!(device = %self.link.name, cancelled, "aborted commands cancelled before they reached the backend");
        }
        self.publish();
    }

    /// Start a command that needs the backend: a READ or WRITE on a backend whose submit
    /// returns at once is submitted from here (it completes through the done channel like a
    /// worker's, and the aborted flag was just cleared by `start` or is checked by
    /// `exec::run`); anything else goes to a worker. Saves the hand-off device thread →
    /// worker per command, and the worker's wake-up, for asynchronous backends.
    ///
    /// Only while the data in flight stays under [`DIRECT_SUBMIT_MAX_BYTES`]: beyond that a
    /// library may throttle (librbd's objecter blocks the caller past ~100 MiB in flight),
    /// and a throttled call must block a worker, never the device thread, which completes
    /// everything else and enforces the deadlines.
    fn dispatch(&mut self, ctx: Box<Ctx>) {
        let ctx = match self.submit_uring(ctx) {
            Ok(()) => return,
            Err(ctx) => ctx,
        };
        if matches!(ctx.cdb, Cdb::Read(_) | Cdb::Write(_))
            && self.data_in_flight <= DIRECT_SUBMIT_MAX_BYTES
            && self.link.backend().submit_returns_at_once()
        {
            let job = Job {
                ctx,
                link: Arc::clone(&self.link),
            };
            exec::run(job, &mut self.inline_state);
        } else {
            self.send(ctx);
        }
    }

    /// Whether READ, WRITE and SYNCHRONIZE CACHE go to the io_uring (it exists and the
    /// backend offers a file descriptor).
    fn uring_serves(&self) -> bool {
        self.uring.is_some() && self.link.backend().uring_fd().is_some()
    }

    /// A READ, WRITE or SYNCHRONIZE CACHE on a backend with a file descriptor goes to the
    /// device's io_uring (no worker, no hand-off; never blocks this thread). Anything else,
    /// or without io_uring, comes back.
    fn submit_uring(&mut self, mut ctx: Box<Ctx>) -> Result<(), Box<Ctx>> {
        if self.uring.is_none()
            || !matches!(
                ctx.cdb,
                Cdb::Read(_) | Cdb::Write(_) | Cdb::SyncCache { .. }
            )
        {
            return Err(ctx);
        }
        let backend = self.link.backend();
        let Some(fd) = backend.uring_fd() else {
            return Err(ctx);
        };
        let (op, off, len) = match ctx.cdb {
            Cdb::Read(rw) | Cdb::Write(rw) => {
                let (bs, write_cache) = {
                    let lun = self.link.lun.read();
                    (u64::from(lun.block_size), lun.write_cache)
                };
                let (io_op, op) = if matches!(ctx.cdb, Cdb::Read(_)) {
                    (IoOp::Read, UringOp::Read)
                } else {
                    let fua = rw.fua || !write_cache;
                    (IoOp::Write { fua }, UringOp::Write { fua })
                };
                let (off, len) = exec::prepare_single(&mut ctx, &self.link, io_op, rw, bs);
                (op, off, len)
            }
            _ => {
                ctx.stage = Stage::Backend {
                    is_write: true,
                    read_len: None,
                };
                ctx.iov.clear();
                (UringOp::Flush, 0, 0)
            }
        };
        let Some(u) = &mut self.uring else {
            return Err(ctx);
        };
        if self.link.accounting {
            ctx.stamps.submit = Some(self.now);
        }
        if let Err(mut ctx) = u.start(ctx, backend, fd, op, off, len) {
            // Sent another way: not submitted here after all.
            ctx.stamps.submit = None;
            return Err(ctx);
        }
        self.acct
            .stats
            .uring_submitted
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn send(&self, mut ctx: Box<Ctx>) {
        if self.link.accounting {
            ctx.stamps.queued = Some(self.now);
        }
        if let Some(w) = &self.workers {
            w.send(Job {
                ctx,
                link: Arc::clone(&self.link),
            });
        }
    }

    /// Take the LBA range the command needs, if any; false if another command holds it.
    ///
    /// READ and WRITE through the io_uring take one too (READ shared, WRITE exclusive): the
    /// kernel may finish a READ from the page cache before a WRITE submitted with it, so a
    /// READ of blocks a WRITE in flight is writing waits for it, as it would behind a worker
    /// that started the WRITE first.
    fn take_range(&mut self, ctx: &mut Ctx) -> bool {
        let range = match ctx.cdb {
            Cdb::Read(rw) | Cdb::Write(rw) if self.uring_serves() => Some((
                rw.lba,
                u64::from(rw.blocks),
                matches!(ctx.cdb, Cdb::Write(_)),
            )),
            ref c => range_of(c),
        };
        let Some((lba, blocks, exclusive)) = range else {
            return true;
        };
        if !self.ranges.try_acquire(ctx.slot, lba, blocks, exclusive) {
            return false;
        }
        ctx.range_locked = true;
        true
    }

    /// Dispatch parked commands whose ranges are free now, oldest first.
    pub(super) fn unpark(&mut self) {
        for _ in 0..self.parked.len() {
            let Some(mut ctx) = self.parked.pop_front() else {
                break;
            };
            if self.take_range(&mut ctx) {
                if self.link.accounting {
                    ctx.stamps.unparked = Some(self.now);
                }
                self.dispatch(ctx);
            } else {
                self.parked.push_back(ctx);
            }
        }
    }

    /// Decode a command and decide it (see [`crate::device::dispatch`]): the outcome when it
    /// is answered here, None when the backend must run it.
    fn route(&mut self, ctx: &mut Ctx) -> Option<Outcome> {
        let mut c = match cdb::decode(ctx.cmd.cdb()) {
            Ok(c) => c,
            Err(s) => return Some(s.into()),
        };
        if dispatch::receives_unit_attention(&c) {
            if let Some(ua) = self.link.take_unit_attention() {
                return Some(ua.sense().into());
            }
        }
        if (self.alua_source.is_some() || self.alua_base.is_some())
            && (dispatch::rereads_alua(&c)
                || self.now.saturating_duration_since(self.alua_read_at) >= ALUA_REFRESH)
        {
            self.refresh_alua();
        }
        ctx.class = dispatch::class_of(&c);
        let decision = {
            let lun = self.link.lun.read();
            let facts = Facts {
                lun: &lun,
                alua_state: self.alua_state,
                backend_lost: self.link.health.is_lost(),
                data_len: ctx.cmd.data_len(),
            };
            dispatch::decide(&mut c, &facts)
        };
        ctx.cdb = c;
        match decision {
            Decision::Done(outcome) => Some(outcome),
            Decision::Backend => None,
            Decision::FailedFast => {
                self.link.health.failed_fast.fetch_add(1, Ordering::Relaxed);
                Some(Sense::not_ready_in_transition().into())
            }
            Decision::Emulate => Some(self.emulate(ctx)),
            Decision::ModeSelect {
                ten,
                pf,
                sp,
                param_len,
            } => Some(self.mode_select(ctx, ten, pf, sp, param_len)),
        }
    }

    /// Read the ALUA groups again and put them in force; a change of the LUN's access state
    /// is logged.
    fn refresh_alua(&mut self) {
        if let Some(src) = &self.alua_source {
            self.alua_base = (src.0)();
        }
        self.alua_read_at = self.now;
        // Lock-driven implicit ALUA: the exclusive lock's holder decides which group is
        // active/optimized (docs/rbd.md).
        let held_here = self.link.backend().lock_holder().held_here();
        let alua = self
            .alua_base
            .clone()
            .map(|a| tcmu_scsi::alua::lock_driven(a, held_here));
        if let (Some(sink), Some(base), Some(driven)) = (&self.alua_sink, &self.alua_base, &alua) {
            let changed: Vec<(String, u8)> = base
                .groups
                .iter()
                .zip(&driven.groups)
                .filter(|(b, d)| b.state != d.state)
                .map(|(_, d)| (d.name.clone(), d.state))
                .collect();
            if !changed.is_empty() && changed != self.alua_sent {
                self.alua_sent.clone_from(&changed);
                (sink.0)(changed);
            } else if changed.is_empty() {
                self.alua_sent.clear();
            }
        }
        let state = alua.as_ref().and_then(tcmu_scsi::alua::Alua::local_state);
        if state != self.alua_state {
            tracing::info!(device = %self.link.name, from = ?self.alua_state.map(tcmu_scsi::alua::state_name),
                to = ?state.map(tcmu_scsi::alua::state_name), "ALUA access state of the LUN's target port group changed");
            self.alua_state = state;
        }
        // The LUN's facts are read by other threads (status, the control plane) and by every
        // command of this loop: compare under a shared lock, and put a change in force only
        // if the write lock is free at once. A loop serves many LUNs and must never wait here
        // (a waiting writer would also hold back every later reader); when a reader holds the
        // lock, the state is already enforced above and the facts are written by the next
        // command (docs/DESIGN.md, "Threads").
        if self.link.lun.read().alua == alua {
            return;
        }
        match self.link.lun.try_write() {
            Some(mut lun) => lun.alua = alua,
            None => {
                self.alua_read_at = self
                    .now
                    .checked_sub(ALUA_REFRESH)
                    .unwrap_or(self.alua_read_at)
            }
        }
    }

    /// Apply a MODE SELECT: read its parameter list out of the ring, check it, and put the
    /// changes in force.
    fn mode_select(&mut self, ctx: &Ctx, ten: bool, pf: bool, sp: bool, param_len: u16) -> Outcome {
        let n = usize::from(param_len).min(self.scratch.len());
        let got = self
            .link
            .data
            .copy_to_slice(ctx.cmd.data_out(), 0, &mut self.scratch[..n]);
        let changes = {
            let lun = self.link.lun.read();
            dispatch::mode_select(ten, pf, sp, param_len, &self.scratch[..got], &lun)
        };
        match changes {
            Ok(ch) => {
                if let Some(wce) = ch.write_cache {
                    crate::device::reconfig::mode_select_write_cache(&self.link, wce);
                }
                Outcome::GOOD
            }
            Err(s) => s.into(),
        }
    }

    /// Answer a command that needs no backend into its Data-In buffer.
    fn emulate(&mut self, ctx: &Ctx) -> Outcome {
        let answer = {
            let lun = self.link.lun.read();
            dispatch::emulate(&ctx.cdb, &lun, ctx.cmd.data_len(), &mut self.scratch)
        };
        match answer {
            Ok(e) => {
                let segs = ctx.cmd.data_out();
                self.link
                    .data
                    .copy_from_slice(segs, 0, &self.scratch[..e.copy]);
                if e.read_len.is_some() {
                    // Never leave stale data from earlier commands in the buffer.
                    let n = e.copy as u64;
                    self.link.data.fill(segs, n, ctx.cmd.data_len() - n, 0);
                }
                e.outcome()
            }
            Err(s) => s.into(),
        }
    }
}
