//! An in-process emulation of the kernel's side of the TCMU ring (Linux 6.1
//! `target_core_user.c`), memfd-backed, for tests, fuzzing and benchmarks.
//!
//! It follows `queue_cmd_ring`, `ring_insert_padding`, `is_ring_space_avail`,
//! `queue_tmr_ring` and `tcmu_handle_completions` closely, and is stricter than the kernel in
//! one way: wherever the real kernel would silently misbehave or mark the ring BROKEN, the
//! emulation reports a [`Violation`]. It is never a substitute for the real kernel.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use tcmu_sys::{
    hdr, hdr_len, hdr_op, mailbox, op, req, rsp, tmr, uflags, CMD_ENTRY_SIZE, SENSE_BUFFERSIZE,
};

use crate::doorbell::Doorbell;
use crate::error::RingError;
use crate::mapping::Mapping;
use crate::ring::{scsi_command_size, STATUS_CHECK_CONDITION};

const PAGE: usize = 4096;
const CMDR_OFF: u32 = 128;
/// Seed of the scatter allocator's xorshift generator.
const RNG_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Emulated device geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmuConfig {
    /// Ring size in bytes (multiple of 8). Default 8 MiB - 128, as the kernel.
    pub cmdr_size: u32,
    /// Data area size (multiple of `block_size`).
    pub data_size: u64,
    /// `data_pages_per_blk * 4096`.
    pub block_size: usize,
    /// Mailbox capability flags (default all four).
    pub flags: u16,
    /// Allocate blocks at random free positions instead of lowest-first, forcing many iovecs.
    pub scatter: bool,
}

impl Default for EmuConfig {
    fn default() -> Self {
        EmuConfig {
            cmdr_size: (8 << 20) - CMDR_OFF,
            data_size: 4 << 20,
            block_size: PAGE,
            flags: 0xf,
            scatter: false,
        }
    }
}

/// The data of a submitted command, from the initiator's point of view.
#[derive(Debug, Clone, Copy)]
pub enum DataDir<'a> {
    /// No data.
    None,
    /// WRITE: these bytes are copied into the data blocks.
    ToDevice(&'a [u8]),
    /// READ of this many bytes.
    FromDevice(usize),
    /// BIDI.
    Bidi {
        /// Data-Out.
        out: &'a [u8],
        /// Data-In length.
        in_len: usize,
    },
}

/// A completion as the kernel processed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Id.
    pub cmd_id: u16,
    /// SCSI status.
    pub status: u8,
    /// Sense (all zero unless CHECK CONDITION).
    pub sense: [u8; 96],
    /// `rsp.read_len` if `TCMU_UFLAG_READ_LEN` was set.
    pub read_len: Option<u32>,
    /// Data-In gathered from the command's own blocks, as `gather_data_area` does.
    pub data_in: Vec<u8>,
    /// Completed with KEEP_BUF.
    pub kept: bool,
}

/// A protocol violation by the handler (the real kernel would misbehave or mark the ring
/// BROKEN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// `cmd_tail` beyond `cmd_head` (moved past entries that were never written).
    #[error("cmd_tail {tail} is past cmd_head {head} (last cleaned {last_cleaned})")]
    TailPastHead {
        /// Tail.
        tail: u32,
        /// Head.
        head: u32,
        /// cmdr_last_cleaned.
        last_cleaned: u32,
    },
    /// `cmd_tail` not 8-aligned.
    #[error("cmd_tail {0} is not 8-aligned")]
    TailMisaligned(u32),
    /// `cmd_tail` points into the middle of an entry.
    #[error("cmd_tail {tail} is inside the entry at {entry}")]
    TailInsideEntry {
        /// Tail.
        tail: u32,
        /// Entry start.
        entry: u32,
    },
    /// `cmd_id %u not found, ring is broken`.
    #[error("cmd_id {0} not found, ring is broken")]
    UnknownCmdId(u16),
    /// `len_op` changed since the kernel wrote it.
    #[error("len_op at {at} changed: wrote {expected:#x}, found {found:#x}")]
    CorruptLenOp {
        /// Ring offset.
        at: u32,
        /// What the kernel wrote.
        expected: u32,
        /// What is there now.
        found: u32,
    },
    /// `cmd_id %u already completed with KEEP_BUF, ring is broken`.
    #[error("cmd_id {0} already completed with KEEP_BUF, ring is broken")]
    KeptBufCompletedTwice(u16),
    /// `TCMU_UFLAG_UNKNOWN_OP` set on a CMD (the kernel fails it with LUN COMM FAILURE).
    #[error("UNKNOWN_OP set on CMD {0}")]
    UnknownOpSetOnCmd(u16),
    /// `free_kept_buf` of an id that is not kept.
    #[error("cmd_id {0} was not completed with KEEP_BUF")]
    NotKept(u16),
    /// The ring was already broken by an earlier violation.
    #[error("ring is broken")]
    Broken,
}

/// Why [`KernelEmu::submit`] did not put the command in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Full {
    /// Not enough ring space: the kernel would queue it (qfull); resubmit after reaping.
    #[error("ring full")]
    Ring,
    /// Not enough free data blocks: same.
    #[error("data area full")]
    Data,
    /// No free command id.
    #[error("no free cmd_id")]
    Ids,
    /// Entry > cmdr_size/2, or more blocks than the whole area: the kernel fails the command
    /// with INVALID FIELD IN CDB.
    #[error("command too large for this device")]
    TooLarge,
    /// The CDB is shorter than `scsi_command_size`.
    #[error("CDB shorter than its opcode requires")]
    BadCdb,
    /// The ring is BROKEN (after a violation) until reset.
    #[error("ring is broken")]
    Broken,
}

#[derive(Debug, Clone)]
struct CmdInfo {
    out_blocks: Vec<u32>,
    in_blocks: Vec<u32>,
    in_len: usize,
    from_device: bool,
    kept: bool,
    entry_at: u32,
}

/// The kernel's view of one TCMU device.
pub struct KernelEmu {
    _memfd: OwnedFd,
    map: Mapping,
    cfg: EmuConfig,
    data_off: usize,
    head: u32,
    last_cleaned: u32,
    /// Every entry between last_cleaned and head, with the len_op the kernel wrote.
    shadow: VecDeque<(u32, u32)>,
    blocks: Vec<bool>,
    free_blocks: usize,
    ids: Vec<Option<CmdInfo>>,
    n_ids: usize,
    to_handler: Arc<EventFd>,
    to_emu: Arc<EventFd>,
    broken: bool,
    rng: u64,
}

impl std::fmt::Debug for KernelEmu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEmu")
            .field("cfg", &self.cfg)
            .field("head", &self.head)
            .field("last_cleaned", &self.last_cleaned)
            .field("outstanding", &self.n_ids)
            .field("free_blocks", &self.free_blocks)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// The handler side of the emulated doorbell (two eventfds).
#[derive(Debug, Clone)]
pub struct EmuDoorbell {
    to_handler: Arc<EventFd>,
    to_emu: Arc<EventFd>,
}

impl Doorbell for EmuDoorbell {
    fn raw_fd(&self) -> RawFd {
        self.to_handler.as_raw_fd()
    }

    fn ack(&self) -> std::io::Result<bool> {
        match self.to_handler.read() {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn kick(&self) -> std::io::Result<()> {
        self.to_emu.write(1).map(drop).map_err(Into::into)
    }
}

fn usz(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn round_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

impl KernelEmu {
    /// Creates the memfd-backed region and its mailbox. Returns the emulation, the handler's
    /// own (second) mapping of the same memory, and the handler's doorbell.
    pub fn new(cfg: EmuConfig) -> Result<(KernelEmu, Mapping, EmuDoorbell), RingError> {
        let bad_size = RingError::CmdrSize {
            cmdr_size: cfg.cmdr_size,
            cmdr_off: CMDR_OFF,
            map_len: 0,
        };
        if cfg.cmdr_size < 256 || cfg.cmdr_size % 8 != 0 || cfg.block_size == 0 {
            return Err(bad_size);
        }
        let data_size = usize::try_from(cfg.data_size).map_err(|_| RingError::CmdrSize {
            cmdr_size: cfg.cmdr_size,
            cmdr_off: CMDR_OFF,
            map_len: 0,
        })?;
        if data_size == 0 || data_size % cfg.block_size != 0 {
            return Err(bad_size);
        }
        let data_off = round_up(usz(CMDR_OFF) + usz(cfg.cmdr_size), PAGE);
        let len = data_off + data_size;
        let memfd =
            memfd_create(c"tcmu-emu", MemFdCreateFlag::MFD_CLOEXEC).map_err(RingError::Map)?;
        let file = std::fs::File::from(memfd);
        file.set_len(len as u64).map_err(RingError::Io)?;
        let memfd = OwnedFd::from(file);
        let map = Mapping::map_shared(memfd.as_fd(), len)?;
        let user = Mapping::map_shared(memfd.as_fd(), len)?;
        map.write_u16(mailbox::VERSION, tcmu_sys::MAILBOX_VERSION)?;
        map.write_u16(mailbox::FLAGS, cfg.flags)?;
        map.write_u32(mailbox::CMDR_OFF, CMDR_OFF)?;
        map.write_u32(mailbox::CMDR_SIZE, cfg.cmdr_size)?;
        map.store_release_u32(mailbox::CMD_HEAD, 0)?;
        map.store_release_u32(mailbox::CMD_TAIL, 0)?;
        // Garbage in the data area, so stale Data-In is visible (docs/kernel-abi.md pitfall 10).
        map.fill(data_off, data_size, 0xA5)?;
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let to_handler = Arc::new(EventFd::from_value_and_flags(0, flags).map_err(RingError::Map)?);
        let to_emu = Arc::new(EventFd::from_value_and_flags(0, flags).map_err(RingError::Map)?);
        let nblocks = data_size / cfg.block_size;
        let bell = EmuDoorbell {
            to_handler: Arc::clone(&to_handler),
            to_emu: Arc::clone(&to_emu),
        };
        let emu = KernelEmu {
            _memfd: memfd,
            map,
            cfg,
            data_off,
            head: 0,
            last_cleaned: 0,
            shadow: VecDeque::new(),
            blocks: vec![false; nblocks],
            free_blocks: nblocks,
            ids: vec![None; 65536],
            n_ids: 0,
            to_handler,
            to_emu,
            broken: false,
            rng: RNG_SEED,
        };
        Ok((emu, user, bell))
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn size(&self) -> u32 {
        self.cfg.cmdr_size
    }

    fn used(&self, head: u32, tail: u32) -> u32 {
        (head + self.size() - tail) % self.size()
    }

    fn ring_pos(&self, at: u32) -> usize {
        usz(CMDR_OFF) + usz(at)
    }

    fn alloc_blocks(&mut self, n: usize, out: &mut Vec<u32>) {
        // Lowest free first: every block below `low` is in use (taken earlier in this call or
        // before it), so the search resumes there instead of rescanning from block 0 for each
        // block (quadratic for a 1 MiB command, and the emulator shares the bench's CPU).
        let mut low = 0;
        for _ in 0..n {
            let mut pick = None;
            if self.cfg.scatter && self.rand() % 2 == 0 {
                let start = usize::try_from(self.rand() % self.blocks.len() as u64).unwrap_or(0);
                pick = (0..self.blocks.len())
                    .map(|i| (start + i) % self.blocks.len())
                    .find(|&b| !self.blocks[b]);
            }
            let b = pick
                .or_else(|| {
                    let b = low + self.blocks[low..].iter().position(|&u| !u)?;
                    low = b + 1;
                    Some(b)
                })
                .expect("free block counted");
            self.blocks[b] = true;
            self.free_blocks -= 1;
            out.push(u32_of(b));
        }
    }

    fn free(&mut self, blocks: &[u32]) {
        for &b in blocks {
            if let Some(slot) = self.blocks.get_mut(usz(b)) {
                if *slot {
                    *slot = false;
                    self.free_blocks += 1;
                }
            }
        }
    }

    fn block_off(&self, b: u32) -> usize {
        self.data_off + usz(b) * self.cfg.block_size
    }

    /// Iovecs of `len` bytes over `blocks`, merging adjacent blocks (tcmu_setup_iov).
    fn iovs(&self, blocks: &[u32], len: usize, out: &mut Vec<(u64, u64)>) {
        let bs = self.cfg.block_size;
        let mut left = len;
        let mut prev: Option<u32> = None;
        for &b in blocks {
            let n = left.min(bs);
            match (prev, out.last_mut()) {
                (Some(p), Some(last)) if p + 1 == b => last.1 += n as u64,
                _ => out.push((self.block_off(b) as u64, n as u64)),
            }
            prev = Some(b);
            left -= n;
        }
    }

    /// Space check of `is_ring_space_avail`, counting a PAD when the entry would not fit
    /// before the end.
    fn ring_space(&self, size: u32) -> bool {
        let to_end = self.size() - self.head;
        let needed = if to_end >= size { size } else { size + to_end };
        let free = self.size() - self.used(self.head, self.last_cleaned) - 1;
        free >= needed
    }

    fn publish_head(&mut self, len: u32) {
        self.head = (self.head + len) % self.size();
        let _ = self.map.store_release_u32(mailbox::CMD_HEAD, self.head);
    }

    /// `ring_insert_padding`.
    fn insert_pad(&mut self, size: u32) {
        let to_end = self.size() - self.head;
        if to_end < size {
            let p = self.ring_pos(self.head);
            let len_op = to_end | op::PAD;
            let _ = self.map.write_u32(p + hdr::LEN_OP, len_op);
            let _ = self.map.write_u16(p + hdr::CMD_ID, 0);
            let _ = self.map.write_u8(p + hdr::KFLAGS, 0);
            let _ = self.map.write_u8(p + hdr::UFLAGS, 0);
            self.shadow.push_back((self.head, len_op));
            self.publish_head(to_end);
        }
    }

    fn ring_bell(&self) {
        let _ = self.to_handler.write(1);
    }

    /// Queues a command like `queue_cmd_ring`. Returns its id.
    pub fn submit(&mut self, cdb: &[u8], dir: DataDir<'_>) -> Result<u16, Full> {
        if self.broken {
            return Err(Full::Broken);
        }
        let Some(&opc) = cdb.first() else {
            return Err(Full::BadCdb);
        };
        let cdb_len = scsi_command_size(opc, cdb.get(7).copied().unwrap_or(0));
        if cdb.len() < cdb_len || (opc == 0x7f && cdb.len() < 8) {
            return Err(Full::BadCdb);
        }
        let (out, in_len, from_device) = match dir {
            DataDir::None => (&[][..], 0, false),
            DataDir::ToDevice(o) => (o, 0, false),
            DataDir::FromDevice(n) => (&[][..], n, true),
            DataDir::Bidi { out, in_len } => (out, in_len, false),
        };
        let bs = self.cfg.block_size;
        let nb_out = out.len().div_ceil(bs);
        let nb_in = in_len.div_ceil(bs);
        if nb_out + nb_in > self.blocks.len() {
            return Err(Full::TooLarge);
        }
        if nb_out + nb_in > self.free_blocks {
            return Err(Full::Data);
        }
        let mut out_blocks = Vec::with_capacity(nb_out);
        let mut in_blocks = Vec::with_capacity(nb_in);
        self.alloc_blocks(nb_out, &mut out_blocks);
        self.alloc_blocks(nb_in, &mut in_blocks);
        let mut iov_out = Vec::new();
        let mut iov_in = Vec::new();
        self.iovs(&out_blocks, out.len(), &mut iov_out);
        self.iovs(&in_blocks, in_len, &mut iov_in);
        let n_iov = iov_out.len() + iov_in.len();
        let base = (req::IOV + req::IOVEC_SIZE * n_iov).max(CMD_ENTRY_SIZE);
        let size = base + round_up(cdb_len, 8);
        let undo = |s: &mut Self| {
            s.free(&out_blocks);
            s.free(&in_blocks);
        };
        if size > usz(self.size() / 2) {
            undo(self);
            return Err(Full::TooLarge);
        }
        let size32 = u32_of(size);
        let Some(id) = (1..=u16::MAX).find(|&i| self.ids[usize::from(i)].is_none()) else {
            undo(self);
            return Err(Full::Ids);
        };
        if !self.ring_space(size32) {
            undo(self);
            return Err(Full::Ring);
        }
        self.insert_pad(size32);
        let at = self.head;
        let p = self.ring_pos(at);
        let m = &self.map;
        let _ = m.fill(p, size, 0);
        let _ = m.write_u32(p + hdr::LEN_OP, size32 | op::CMD);
        let _ = m.write_u16(p + hdr::CMD_ID, id);
        let (cnt, bidi) = match dir {
            DataDir::Bidi { .. } => (iov_out.len(), iov_in.len()),
            _ => (iov_out.len() + iov_in.len(), 0),
        };
        let _ = m.write_u32(p + req::IOV_CNT, u32_of(cnt));
        let _ = m.write_u32(p + req::IOV_BIDI_CNT, u32_of(bidi));
        let _ = m.write_u32(p + req::IOV_DIF_CNT, 0);
        let _ = m.write_u64(p + req::CDB_OFF, (p + base) as u64);
        for (i, (o, l)) in iov_out.iter().chain(iov_in.iter()).enumerate() {
            let ip = p + req::IOV + i * req::IOVEC_SIZE;
            let _ = m.write_u64(ip, *o);
            let _ = m.write_u64(ip + 8, *l);
        }
        let _ = m.copy_in(p + base, &cdb[..cdb_len]);
        // Data-Out into the blocks (scatter_data_area); Data-In blocks keep stale bytes.
        let mut done = 0;
        for &b in &out_blocks {
            let n = (out.len() - done).min(bs);
            let _ = m.copy_in(self.block_off(b), &out[done..done + n]);
            done += n;
        }
        self.shadow.push_back((at, size32 | op::CMD));
        self.ids[usize::from(id)] = Some(CmdInfo {
            out_blocks,
            in_blocks,
            in_len,
            from_device,
            kept: false,
            entry_at: at,
        });
        self.n_ids += 1;
        self.publish_head(size32);
        self.ring_bell();
        Ok(id)
    }

    /// Queues a TMR entry like `queue_tmr_ring`.
    pub fn submit_tmr(&mut self, tmr_type: u8, ids: &[u16]) -> Result<(), Full> {
        if self.broken {
            return Err(Full::Broken);
        }
        let size = round_up(tmr::SIZE + 2 * ids.len(), 8);
        if size > usz(self.size() / 2) {
            return Err(Full::TooLarge);
        }
        let size32 = u32_of(size);
        if !self.ring_space(size32) {
            return Err(Full::Ring);
        }
        self.insert_pad(size32);
        let at = self.head;
        let p = self.ring_pos(at);
        let m = &self.map;
        let _ = m.fill(p, size, 0);
        let _ = m.write_u32(p + hdr::LEN_OP, size32 | op::TMR);
        let _ = m.write_u8(p + tmr::TMR_TYPE, tmr_type);
        let _ = m.write_u32(p + tmr::CMD_CNT, u32_of(ids.len()));
        for (i, id) in ids.iter().enumerate() {
            let _ = m.write_u16(p + tmr::CMD_IDS + 2 * i, *id);
        }
        self.shadow.push_back((at, size32 | op::TMR));
        self.publish_head(size32);
        self.ring_bell();
        Ok(())
    }

    fn violate(&mut self, v: Violation) -> Result<(), Violation> {
        self.broken = true;
        Err(v)
    }

    /// Processes completions like `tcmu_handle_completions`, appending them to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completed>) -> Result<(), Violation> {
        if self.broken {
            return Err(Violation::Broken);
        }
        let tail = self
            .map
            .load_acquire_u32(mailbox::CMD_TAIL)
            .unwrap_or(u32::MAX);
        if tail % 8 != 0 {
            return self.violate(Violation::TailMisaligned(tail));
        }
        if tail >= self.size()
            || self.used(tail, self.last_cleaned) > self.used(self.head, self.last_cleaned)
        {
            let v = Violation::TailPastHead {
                tail,
                head: self.head,
                last_cleaned: self.last_cleaned,
            };
            return self.violate(v);
        }
        while self.last_cleaned != tail {
            let Some(&(at, expected)) = self.shadow.front() else {
                let v = Violation::TailPastHead {
                    tail,
                    head: self.head,
                    last_cleaned: self.last_cleaned,
                };
                return self.violate(v);
            };
            debug_assert_eq!(at, self.last_cleaned);
            let p = self.ring_pos(at);
            let found = self.map.read_u32(p + hdr::LEN_OP).unwrap_or(0);
            if found != expected {
                return self.violate(Violation::CorruptLenOp {
                    at,
                    expected,
                    found,
                });
            }
            let len = hdr_len(found);
            if self.used(tail, at) < len {
                return self.violate(Violation::TailInsideEntry { tail, entry: at });
            }
            if hdr_op(found) == op::CMD {
                self.complete_one(p, out)?;
            }
            self.shadow.pop_front();
            self.last_cleaned = (at + len) % self.size();
        }
        Ok(())
    }

    fn complete_one(&mut self, p: usize, out: &mut Vec<Completed>) -> Result<(), Violation> {
        let m = &self.map;
        let id = m.read_u16(p + hdr::CMD_ID).unwrap_or(0);
        let uf = m.read_u8(p + hdr::UFLAGS).unwrap_or(0);
        let status = m.read_u8(p + rsp::SCSI_STATUS).unwrap_or(0);
        let read_len = m.read_u32(p + rsp::READ_LEN).unwrap_or(0);
        let mut sense = [0u8; SENSE_BUFFERSIZE];
        let caps_read_len = self.cfg.flags & tcmu_sys::mailbox_flags::CAP_READ_LEN != 0;
        let caps_keep = self.cfg.flags & tcmu_sys::mailbox_flags::CAP_KEEP_BUF != 0;
        let Some(info) = self.ids[usize::from(id)].as_ref() else {
            return self.violate(Violation::UnknownCmdId(id));
        };
        if info.kept {
            return self.violate(Violation::KeptBufCompletedTwice(id));
        }
        if uf & uflags::UNKNOWN_OP != 0 {
            return self.violate(Violation::UnknownOpSetOnCmd(id));
        }
        if status == STATUS_CHECK_CONDITION {
            let _ = m.copy_out(p + rsp::SENSE_BUFFER, &mut sense);
        }
        let has_read_len = uf & uflags::READ_LEN != 0 && caps_read_len;
        let mut n = info.in_len;
        if has_read_len && info.from_device && read_len != 0 {
            n = n.min(usz(read_len));
        }
        let mut data_in = vec![0u8; n];
        let mut done = 0;
        for &b in &info.in_blocks {
            if done >= n {
                break;
            }
            let k = (n - done).min(self.cfg.block_size);
            let _ = m.copy_out(self.block_off(b), &mut data_in[done..done + k]);
            done += k;
        }
        let keep = uf & uflags::KEEP_BUF != 0 && caps_keep;
        out.push(Completed {
            cmd_id: id,
            status,
            sense,
            read_len: has_read_len.then_some(read_len),
            data_in,
            kept: keep,
        });
        if keep {
            if let Some(i) = self.ids[usize::from(id)].as_mut() {
                i.kept = true;
            }
        } else if let Some(i) = self.ids[usize::from(id)].take() {
            self.free(&i.out_blocks);
            self.free(&i.in_blocks);
            self.n_ids -= 1;
        }
        Ok(())
    }

    /// `action/free_kept_buf`.
    pub fn free_kept_buf(&mut self, cmd_id: u16) -> Result<(), Violation> {
        match self.ids[usize::from(cmd_id)].as_ref() {
            Some(i) if i.kept => {
                if let Some(i) = self.ids[usize::from(cmd_id)].take() {
                    self.free(&i.out_blocks);
                    self.free(&i.in_blocks);
                    self.n_ids -= 1;
                }
                Ok(())
            }
            _ => Err(Violation::NotKept(cmd_id)),
        }
    }

    /// Ids allocated (in the ring and not completed, or kept).
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.n_ids
    }

    /// Bytes between `cmdr_last_cleaned` and `cmd_head`.
    #[must_use]
    pub fn ring_used(&self) -> u32 {
        self.used(self.head, self.last_cleaned)
    }

    /// Free data blocks.
    #[must_use]
    pub fn data_blocks_free(&self) -> usize {
        self.free_blocks
    }

    /// Total data blocks.
    #[must_use]
    pub fn data_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Waits up to `timeout` for the handler's kick; true if kicked (the kick is consumed).
    #[must_use]
    pub fn wait_kick(&self, timeout: Duration) -> bool {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(self.to_emu.as_fd(), PollFlags::POLLIN)];
        let t = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, t) {
            Ok(n) if n > 0 => self.to_emu.read().is_ok(),
            _ => false,
        }
    }

    /// `action/reset_ring`: head = tail = last_cleaned = 0, all ids forgotten and their data
    /// freed, BROKEN cleared. Returns the ids that were neither kept nor completed (the
    /// kernel completes those with BUSY); no doorbell event is generated.
    pub fn reset_ring(&mut self) -> Vec<u16> {
        let mut busy = Vec::new();
        // Ids are allocated lowest first, so the scan usually ends after a few slots instead
        // of walking all 65,536 (the fuzz target resets once per input).
        let mut left = self.n_ids;
        for id in 1..=u16::MAX {
            if left == 0 {
                break;
            }
            if let Some(i) = self.ids[usize::from(id)].take() {
                left -= 1;
                if !i.kept {
                    busy.push(id);
                }
                self.free(&i.out_blocks);
                self.free(&i.in_blocks);
            }
        }
        self.n_ids = 0;
        self.shadow.clear();
        self.head = 0;
        self.last_cleaned = 0;
        let _ = self.map.store_release_u32(mailbox::CMD_TAIL, 0);
        let _ = self.map.store_release_u32(mailbox::CMD_HEAD, 0);
        self.broken = false;
        busy
    }

    /// Returns the device to the state [`KernelEmu::new`] left it in, without the cost of
    /// a new one (a memfd, two mappings and a 65,536-entry id table): [`reset_ring`]'s
    /// effects, plus the mailbox rewritten (undoing raw pokes), the ring zeroed, the data area
    /// refilled with garbage, both doorbells drained and the scatter generator re-seeded.
    /// The handler's mapping stays valid; build a new [`crate::Ring`] on it, as a restarted
    /// handler would. For fuzzing and benchmarks that run many short sessions.
    ///
    /// [`reset_ring`]: KernelEmu::reset_ring
    pub fn reset(&mut self) {
        let _ = self.reset_ring();
        let m = &self.map;
        let _ = m.fill(0, self.data_off, 0);
        let _ = m.write_u16(mailbox::VERSION, tcmu_sys::MAILBOX_VERSION);
        let _ = m.write_u16(mailbox::FLAGS, self.cfg.flags);
        let _ = m.write_u32(mailbox::CMDR_OFF, CMDR_OFF);
        let _ = m.write_u32(mailbox::CMDR_SIZE, self.cfg.cmdr_size);
        let _ = m.store_release_u32(mailbox::CMD_HEAD, 0);
        let _ = m.store_release_u32(mailbox::CMD_TAIL, 0);
        let _ = m.fill(self.data_off, self.blocks.len() * self.cfg.block_size, 0xA5);
        self.blocks.fill(false);
        self.free_blocks = self.blocks.len();
        // Both eventfds are non-blocking: a read clears the counter or fails with EAGAIN.
        let _ = self.to_handler.read();
        let _ = self.to_emu.read();
        self.rng = RNG_SEED;
    }

    // ---- test hooks ----

    /// The emulation's own mapping (for raw pokes in violation tests).
    #[must_use]
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// Offset of the ring in the mapping (128).
    #[must_use]
    pub fn cmdr_off(&self) -> usize {
        usz(CMDR_OFF)
    }

    /// Offset of the data area in the mapping.
    #[must_use]
    pub fn data_off(&self) -> usize {
        self.data_off
    }

    /// The kernel's `cmd_head`.
    #[must_use]
    pub fn head(&self) -> u32 {
        self.head
    }

    /// `cmdr_last_cleaned`.
    #[must_use]
    pub fn last_cleaned(&self) -> u32 {
        self.last_cleaned
    }

    /// True after a violation, until `reset_ring`.
    #[must_use]
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Ring offset of the entry the kernel wrote for `cmd_id` (while it is allocated).
    #[must_use]
    pub fn entry_at(&self, cmd_id: u16) -> Option<u32> {
        self.ids[usize::from(cmd_id)].as_ref().map(|i| i.entry_at)
    }

    /// Overwrites the `len_op` at ring offset `at` without updating the shadow copy.
    pub fn corrupt_len_op(&mut self, at: u32, len_op: u32) {
        let _ = self.map.write_u32(self.ring_pos(at) + hdr::LEN_OP, len_op);
    }

    /// Writes a raw u64 at `off` bytes into the entry at ring offset `at`.
    pub fn poke_u64(&mut self, at: u32, off: usize, v: u64) {
        let _ = self.map.write_u64(self.ring_pos(at) + off, v);
    }

    /// Writes a raw u32 at `off` bytes into the entry at ring offset `at`.
    pub fn poke_u32(&mut self, at: u32, off: usize, v: u32) {
        let _ = self.map.write_u32(self.ring_pos(at) + off, v);
    }

    /// Writes a raw u16 at `off` bytes into the entry at ring offset `at`.
    pub fn poke_u16(&mut self, at: u32, off: usize, v: u16) {
        let _ = self.map.write_u16(self.ring_pos(at) + off, v);
    }

    /// Stores a raw `cmd_head` (no entry is written).
    pub fn set_raw_head(&mut self, head: u32) {
        self.head = head;
        let _ = self.map.store_release_u32(mailbox::CMD_HEAD, head);
    }

    /// Stores a raw `cmd_tail`, as a misbehaving handler would.
    pub fn set_raw_tail(&mut self, tail: u32) {
        let _ = self.map.store_release_u32(mailbox::CMD_TAIL, tail);
    }

    /// Checks that no `len_op` the kernel wrote and has not reclaimed was changed.
    pub fn verify_len_ops(&self) -> Result<(), Violation> {
        for &(at, expected) in &self.shadow {
            let found = self
                .map
                .read_u32(self.ring_pos(at) + hdr::LEN_OP)
                .unwrap_or(0);
            if found != expected {
                return Err(Violation::CorruptLenOp {
                    at,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}
