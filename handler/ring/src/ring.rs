//! The command ring: reading entries the kernel posted and writing completions.
//!
//! ```text
//!   cmdr_last_cleaned (kernel)   cmd_tail (published)  pending tail   read index R     cmd_head
//!            |---- reaped ------------|--- completed, unpublished --|-- outstanding --|-- new --|
//! ```
//! * `next` copies entries between the private read index and `cmd_head` (Acquire load).
//! * `complete` writes a response into the first CMD slot at the *pending* tail (steal-style
//!   out-of-order completion, docs/kernel-abi.md §1.9) and moves the pending tail past it.
//! * `publish` Release-stores the pending tail into `cmd_tail`, so every response write
//!   happens-before the kernel (irqcontrol, block_dev or the reclaim worker) sees the tail.
//!
//! The ring is untrusted: every index and length is bounds-checked with checked arithmetic,
//! and every walk is bounded by `cmdr_size / 8` steps.

use std::sync::Arc;

use tcmu_sys::{hdr, hdr_len, hdr_op, mailbox, mailbox_flags, op, req, rsp, tmr, uflags};

use crate::data::{DataArea, DataSeg};
use crate::error::RingError;
use crate::mapping::Mapping;

/// Why a CMD entry with a sound header was rejected (complete it with CHECK CONDITION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// `cdb_off` does not point inside the entry, after its iovecs.
    #[error("cdb_off points outside the entry")]
    CdbOutOfRange,
    /// The CDB length (from its opcode) does not fit in the entry.
    #[error("CDB length does not fit in the entry")]
    CdbLength,
    /// An iovec lies (partly) outside the data area or overflows.
    #[error("iovec outside the data area")]
    IovOutOfData,
    /// `iov_cnt + iov_bidi_cnt` iovecs do not fit in the entry.
    #[error("iovec count does not fit in the entry")]
    IovCount,
    /// More iovecs than [`MAX_IOVS`].
    #[error("too many iovecs")]
    TooManyIovs,
    /// `iov_dif_cnt` is not 0 (never sent by Linux 6.x, unsupported).
    #[error("DIF iovecs are not supported")]
    Dif,
}

/// Upper bound on `iov_cnt + iov_bidi_cnt` of one command (an 8 MiB ring caps entries at
/// 4 MiB, i.e. < 262144 iovecs).
pub const MAX_IOVS: u32 = 1 << 18;

/// Capabilities from the mailbox `flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Out-of-order completion.
    pub ooo: bool,
    /// `TCMU_UFLAG_READ_LEN` honoured.
    pub read_len: bool,
    /// TMR entries may appear.
    pub tmr: bool,
    /// `TCMU_UFLAG_KEEP_BUF` honoured.
    pub keep_buf: bool,
}

impl Caps {
    fn from_flags(f: u16) -> Caps {
        Caps {
            ooo: f & mailbox_flags::CAP_OOOC != 0,
            read_len: f & mailbox_flags::CAP_READ_LEN != 0,
            tmr: f & mailbox_flags::CAP_TMR != 0,
            keep_buf: f & mailbox_flags::CAP_KEEP_BUF != 0,
        }
    }
}

/// Size of the CDB buffer of [`CmdCopy`] (max varlen CDB is 255 + 8 = 263 bytes).
pub const CDB_MAX: usize = 264;

/// Owned copy of one CMD entry, reused across commands.
#[derive(Debug, Clone)]
pub struct CmdCopy {
    /// Command id (1..=65535).
    pub cmd_id: u16,
    cdb: [u8; CDB_MAX],
    cdb_len: usize,
    /// All iovecs: the first `iov_cnt`, then `bidi_cnt` Data-In ones for BIDI.
    pub iov: Vec<DataSeg>,
    /// Data-Out (WRITE) or Data-In (READ) iovecs.
    pub iov_cnt: u32,
    /// BIDI Data-In iovecs following the first `iov_cnt`.
    pub bidi_cnt: u32,
}

impl Default for CmdCopy {
    fn default() -> Self {
        Self::new()
    }
}

impl CmdCopy {
    /// An empty copy with room for 64 iovecs.
    #[must_use]
    pub fn new() -> CmdCopy {
        CmdCopy {
            cmd_id: 0,
            cdb: [0; CDB_MAX],
            cdb_len: 0,
            iov: Vec::with_capacity(64),
            iov_cnt: 0,
            bidi_cnt: 0,
        }
    }

    fn clear(&mut self) {
        self.cmd_id = 0;
        self.cdb_len = 0;
        self.iov.clear();
        self.iov_cnt = 0;
        self.bidi_cnt = 0;
    }

    /// The CDB (its length follows the kernel's `scsi_command_size`). Empty for a BadCmd
    /// whose CDB could not be read.
    #[must_use]
    pub fn cdb(&self) -> &[u8] {
        &self.cdb[..self.cdb_len.min(CDB_MAX)]
    }

    fn split(&self) -> usize {
        usize::try_from(self.iov_cnt)
            .unwrap_or(usize::MAX)
            .min(self.iov.len())
    }

    /// The first `iov_cnt` iovecs (Data-Out for WRITE/BIDI, Data-In for READ).
    #[must_use]
    pub fn data_out(&self) -> &[DataSeg] {
        &self.iov[..self.split()]
    }

    /// The BIDI Data-In iovecs.
    #[must_use]
    pub fn bidi_in(&self) -> &[DataSeg] {
        &self.iov[self.split()..]
    }

    /// Sum of the lengths of the first `iov_cnt` iovecs.
    #[must_use]
    pub fn data_len(&self) -> u64 {
        self.data_out()
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.len))
    }

    /// Sum of the lengths of the BIDI Data-In iovecs.
    #[must_use]
    pub fn bidi_len(&self) -> u64 {
        self.bidi_in()
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.len))
    }
}

/// Owned copy of one TMR entry, reused.
#[derive(Debug, Clone, Default)]
pub struct TmrCopy {
    /// `TCMU_TMR_*`.
    pub tmr_type: u8,
    /// Ids of the aborted commands already in the ring (may include ids already completed:
    /// ignore those).
    pub cmd_ids: Vec<u16>,
}

impl TmrCopy {
    /// An empty copy.
    #[must_use]
    pub fn new() -> TmrCopy {
        TmrCopy {
            tmr_type: 0,
            cmd_ids: Vec::with_capacity(16),
        }
    }
}

/// What [`Ring::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A command, copied into the `CmdCopy`.
    Cmd,
    /// A command with a sound header but bad `cdb_off`/iovecs. It is outstanding: the caller
    /// MUST complete it (CHECK CONDITION). `CmdCopy::cmd_id` is set; its iovecs are empty.
    BadCmd {
        /// Its id.
        cmd_id: u16,
        /// What is wrong.
        why: EntryError,
    },
    /// A TMR, copied into the `TmrCopy`. Nothing to complete.
    Tmr,
}

/// A response for [`Ring::complete`].
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// SCSI status.
    pub status: u8,
    /// Sense data, written (all 96 bytes) only for CHECK CONDITION; if `None` then, 96 zero
    /// bytes are written so no stale ring bytes leak.
    pub sense: Option<&'a [u8; 96]>,
    /// Valid Data-In length (sets READ_LEN if the kernel supports it).
    pub read_len: Option<u32>,
    /// Keep the data blocks until `action/free_kept_buf` (only if supported).
    pub keep_buf: bool,
}

impl Response<'_> {
    /// GOOD status, nothing else.
    #[must_use]
    pub fn good() -> Response<'static> {
        Response {
            status: STATUS_GOOD,
            sense: None,
            read_len: None,
            keep_buf: false,
        }
    }
}

/// SAM status GOOD.
pub const STATUS_GOOD: u8 = 0x00;
/// SAM status CHECK CONDITION.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// The kernel's `scsi_command_size`: group table, or `cdb[7] + 8` for 0x7f. `cdb7` is only
/// consulted for 0x7f.
#[must_use]
pub fn scsi_command_size(opcode: u8, cdb7: u8) -> usize {
    const TBL: [usize; 8] = [6, 10, 10, 12, 16, 12, 10, 10];
    if opcode == 0x7f {
        usize::from(cdb7) + 8
    } else {
        TBL[usize::from((opcode >> 5) & 7)]
    }
}

const OUTSTANDING_WORDS: usize = 65536 / 64;

/// 65536-bit set of command ids.
#[derive(Clone)]
struct IdSet(Box<[u64; OUTSTANDING_WORDS]>);

impl IdSet {
    fn new() -> IdSet {
        IdSet(Box::new([0; OUTSTANDING_WORDS]))
    }
    fn clear(&mut self) {
        self.0.fill(0);
    }
    fn get(&self, id: u16) -> bool {
        self.0[usize::from(id >> 6)] & (1u64 << (id & 63)) != 0
    }
    fn set(&mut self, id: u16, v: bool) {
        let w = &mut self.0[usize::from(id >> 6)];
        if v {
            *w |= 1u64 << (id & 63);
        } else {
            *w &= !(1u64 << (id & 63));
        }
    }
}

/// One TCMU command ring. `Send`: move it to the device thread; it is not shared.
pub struct Ring {
    map: Arc<Mapping>,
    cmdr_off: usize,
    cmdr_size: u32,
    caps: Caps,
    data: DataArea,
    /// Private read index R.
    read: u32,
    /// Last `cmd_head` seen.
    head: u32,
    /// Where the next completion goes (not yet published).
    tail: u32,
    /// Last value stored into `cmd_tail`.
    published: u32,
    /// CMD entries between `tail` and `read` (slots available for completions).
    cmd_slots: usize,
    outstanding: IdSet,
    completed: IdSet,
    n_outstanding: usize,
    broken: Option<(u32, u32, &'static str)>,
    unknown_ops: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("cmdr_off", &self.cmdr_off)
            .field("cmdr_size", &self.cmdr_size)
            .field("caps", &self.caps)
            .field("read", &self.read)
            .field("head", &self.head)
            .field("tail", &self.tail)
            .field("published", &self.published)
            .field("outstanding", &self.n_outstanding)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

fn usz(v: u32) -> usize {
    // u32 -> usize is lossless on the 64-bit targets this crate supports.
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// What [`Ring::new`] reads from the mailbox, validated.
struct Mailbox {
    flags: u16,
    cmdr_off: u32,
    cmdr_size: u32,
    data_off: usize,
    tail: u32,
}

impl Mailbox {
    fn read(map: &Mapping) -> Result<Mailbox, RingError> {
        let version = map.read_u16(mailbox::VERSION)?;
        if version != tcmu_sys::MAILBOX_VERSION {
            return Err(RingError::MailboxVersion(version));
        }
        let flags = map.read_u16(mailbox::FLAGS)?;
        let cmdr_off = map.read_u32(mailbox::CMDR_OFF)?;
        let cmdr_size = map.read_u32(mailbox::CMDR_SIZE)?;
        if usz(cmdr_off) < mailbox::SIZE || cmdr_off % 8 != 0 {
            return Err(RingError::CmdrOff(cmdr_off));
        }
        let size_err = RingError::CmdrSize {
            cmdr_size,
            cmdr_off,
            map_len: map.len(),
        };
        if cmdr_size == 0 || cmdr_size % 8 != 0 {
            return Err(size_err);
        }
        let data_off = usz(cmdr_off)
            .checked_add(usz(cmdr_size))
            .filter(|&e| e <= map.len())
            .ok_or(size_err)?;
        let head = map.load_acquire_u32(mailbox::CMD_HEAD)?;
        let tail = map.load_acquire_u32(mailbox::CMD_TAIL)?;
        for (which, value) in [("cmd_head", head), ("cmd_tail", tail)] {
            if value >= cmdr_size || value % 8 != 0 {
                return Err(RingError::BadIndex {
                    which,
                    value,
                    cmdr_size,
                });
            }
        }
        Ok(Mailbox {
            flags,
            cmdr_off,
            cmdr_size,
            data_off,
            tail,
        })
    }
}

impl Ring {
    /// Validates the mailbox once and sets the private read index to `cmd_tail` (resume).
    pub fn new(map: Arc<Mapping>) -> Result<Ring, RingError> {
        let m = Mailbox::read(&map)?;
        let data = DataArea::new(Arc::clone(&map), m.data_off as u64);
        Ok(Ring {
            map,
            cmdr_off: usz(m.cmdr_off),
            cmdr_size: m.cmdr_size,
            caps: Caps::from_flags(m.flags),
            data,
            read: m.tail,
            head: m.tail,
            tail: m.tail,
            published: m.tail,
            cmd_slots: 0,
            outstanding: IdSet::new(),
            completed: IdSet::new(),
            n_outstanding: 0,
            broken: None,
            unknown_ops: 0,
        })
    }

    /// The same as replacing this ring by `Ring::new` on its mapping (every id forgotten, the
    /// mailbox validated and read again, the read index at `cmd_tail`), without allocating:
    /// for fuzzing and benchmarks that run many short sessions on one mapping. On error the
    /// ring is unchanged.
    ///
    /// # Errors
    /// As [`Ring::new`].
    pub fn reopen(&mut self) -> Result<(), RingError> {
        let m = Mailbox::read(&self.map)?;
        self.data = DataArea::new(Arc::clone(&self.map), m.data_off as u64);
        self.cmdr_off = usz(m.cmdr_off);
        self.cmdr_size = m.cmdr_size;
        self.caps = Caps::from_flags(m.flags);
        self.read = m.tail;
        self.head = m.tail;
        self.tail = m.tail;
        self.published = m.tail;
        self.cmd_slots = 0;
        self.outstanding.clear();
        self.completed.clear();
        self.n_outstanding = 0;
        self.broken = None;
        self.unknown_ops = 0;
        Ok(())
    }

    /// Capabilities from the mailbox.
    #[must_use]
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// The data area handle.
    #[must_use]
    pub fn data_area(&self) -> DataArea {
        self.data.clone()
    }

    /// Commands read but not yet completed.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.n_outstanding
    }

    /// Bytes of the command ring in use as the kernel sees it: from the last published
    /// `cmd_tail` to the last `cmd_head` read.
    #[must_use]
    pub fn used_bytes(&self) -> u32 {
        (self.head + self.cmdr_size - self.published) % self.cmdr_size.max(1)
    }

    /// Ring size in bytes.
    pub fn cmdr_size(&self) -> u32 {
        self.cmdr_size
    }

    /// Entries with an opcode other than PAD/CMD/TMR that were skipped.
    #[must_use]
    pub fn unknown_ops(&self) -> u64 {
        self.unknown_ops
    }

    /// True once `next` has hit a corrupt entry.
    #[must_use]
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Whether `id` has been read and not completed.
    #[must_use]
    pub fn is_outstanding(&self, id: u16) -> bool {
        self.outstanding.get(id)
    }

    fn ring_pos(&self, at: u32) -> usize {
        self.cmdr_off + usz(at)
    }

    fn broken_err(&self) -> Option<RingError> {
        self.broken
            .map(|(at, len_op, reason)| RingError::Corrupt { at, len_op, reason })
    }

    fn fail(&mut self, at: u32, len_op: u32, reason: &'static str) -> RingError {
        tracing::error!(at, len_op, reason, "TCMU ring is corrupt; stop reading");
        self.broken = Some((at, len_op, reason));
        RingError::Corrupt { at, len_op, reason }
    }

    /// Validates the header of the entry at `at`, which must end at or before `limit`
    /// (`limit` = `cmdr_size` when `limit <= at`, i.e. the live region wraps).
    /// Returns (`len_op`, `len`, next index).
    fn header(&self, at: u32, limit: u32) -> Result<(u32, u32, u32), (u32, &'static str)> {
        let len_op = self
            .map
            .read_u32(self.ring_pos(at))
            .map_err(|_| (0, "entry header outside mapping"))?;
        let len = hdr_len(len_op);
        if len < 8 {
            return Err((len_op, "entry length < 8"));
        }
        let end = at
            .checked_add(len)
            .ok_or((len_op, "entry length overflows"))?;
        if end > self.cmdr_size {
            return Err((len_op, "entry crosses the ring end"));
        }
        if limit > at && end > limit {
            return Err((len_op, "entry crosses cmd_head"));
        }
        let next = if end == self.cmdr_size { 0 } else { end };
        Ok((len_op, len, next))
    }

    /// Whether the kernel has posted entries not read yet: a load of `cmd_head`, nothing
    /// changed (for a busy-poll before sleeping; [`Ring::next`] reads them).
    #[must_use]
    pub fn has_new(&self) -> bool {
        self.read != self.head
            || self
                .map
                .load_acquire_u32(mailbox::CMD_HEAD)
                .is_ok_and(|h| h != self.read)
    }

    /// Reads the next entry between the private read index and `cmd_head`. Returns `None` when
    /// caught up. After a corrupt header every call returns the same `Corrupt` error.
    pub fn next(
        &mut self,
        cmd: &mut CmdCopy,
        tmr: &mut TmrCopy,
    ) -> Option<Result<Entry, RingError>> {
        if let Some(e) = self.broken_err() {
            return Some(Err(e));
        }
        // Bounded: each step consumes >= 8 bytes of the live region (< cmdr_size bytes).
        let ttl = self.cmdr_size / 8 + 1;
        for _ in 0..ttl {
            if self.read == self.head {
                match self.refresh_head() {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            let at = self.read;
            let (len_op, len, nxt) = match self.header(at, self.head) {
                Ok(h) => h,
                Err((lo, why)) => return Some(Err(self.fail(at, lo, why))),
            };
            match hdr_op(len_op) {
                op::PAD => {
                    self.read = nxt;
                }
                op::CMD => {
                    let r = self.read_cmd(at, len_op, len, cmd);
                    match r {
                        Ok(entry) => {
                            self.read = nxt;
                            self.cmd_slots += 1;
                            self.n_outstanding += 1;
                            self.outstanding.set(cmd.cmd_id, true);
                            self.completed.set(cmd.cmd_id, false);
                            return Some(Ok(entry));
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                op::TMR => {
                    if let Err(e) = self.read_tmr(at, len_op, len, tmr) {
                        return Some(Err(e));
                    }
                    self.read = nxt;
                    return Some(Ok(Entry::Tmr));
                }
                other => {
                    // Linux 6.x never writes opcodes 3..7. Following the design doc we flag
                    // the entry UNKNOWN_OP and skip it by its length; nothing is outstanding
                    // for it. (6.1's completion walk would treat it like a CMD and look up
                    // its cmd_id; it cannot appear unless the ring is corrupt.)
                    self.unknown_ops += 1;
                    tracing::warn!(at, opcode = other, "unknown TCMU ring opcode; skipped");
                    let _ = self
                        .map
                        .write_u8(self.ring_pos(at) + hdr::UFLAGS, uflags::UNKNOWN_OP);
                    self.read = nxt;
                }
            }
        }
        // Unreachable for a well-formed ring; a safety net against spinning.
        let at = self.read;
        Some(Err(self.fail(at, 0, "ring walk did not terminate")))
    }

    /// Acquire-loads `cmd_head`; Ok(true) if there is something new.
    fn refresh_head(&mut self) -> Result<bool, RingError> {
        let head = self.map.load_acquire_u32(mailbox::CMD_HEAD)?;
        if head >= self.cmdr_size || head % 8 != 0 {
            return Err(self.fail(head, 0, "cmd_head out of range or misaligned"));
        }
        // We are the only writer of cmd_tail; if it changed, action/reset_ring ran.
        let tail = self.map.load_acquire_u32(mailbox::CMD_TAIL)?;
        if tail != self.published {
            let (expected, found) = (self.published, tail);
            self.broken = Some((tail, 0, "cmd_tail changed under the handler (ring reset?)"));
            return Err(RingError::RingReset { expected, found });
        }
        self.head = head;
        Ok(head != self.read)
    }

    fn read_cmd(
        &mut self,
        at: u32,
        len_op: u32,
        len: u32,
        cmd: &mut CmdCopy,
    ) -> Result<Entry, RingError> {
        cmd.clear();
        if usz(len) < tcmu_sys::CMD_ENTRY_SIZE {
            return Err(self.fail(at, len_op, "CMD entry shorter than 112 bytes"));
        }
        let base = self.ring_pos(at);
        let rd32 = |off: usize| self.map.read_u32(base + off);
        let (Ok(id), Ok(iov_cnt), Ok(bidi_cnt), Ok(dif_cnt), Ok(cdb_off)) = (
            self.map.read_u16(base + hdr::CMD_ID),
            rd32(req::IOV_CNT),
            rd32(req::IOV_BIDI_CNT),
            rd32(req::IOV_DIF_CNT),
            self.map.read_u64(base + req::CDB_OFF),
        ) else {
            return Err(self.fail(at, len_op, "CMD entry outside mapping"));
        };
        if id == 0 {
            return Err(self.fail(at, len_op, "CMD entry with cmd_id 0"));
        }
        if self.outstanding.get(id) {
            return Err(self.fail(at, len_op, "CMD entry reuses an outstanding cmd_id"));
        }
        cmd.cmd_id = id;
        match self.parse_cmd(base, len, iov_cnt, bidi_cnt, dif_cnt, cdb_off, cmd) {
            Ok(()) => Ok(Entry::Cmd),
            Err(why) => {
                tracing::warn!(cmd_id = id, at, %why, "bad TCMU command entry");
                cmd.iov.clear();
                cmd.iov_cnt = 0;
                cmd.bidi_cnt = 0;
                Ok(Entry::BadCmd { cmd_id: id, why })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_cmd(
        &self,
        base: usize,
        len: u32,
        iov_cnt: u32,
        bidi_cnt: u32,
        dif_cnt: u32,
        cdb_off: u64,
        cmd: &mut CmdCopy,
    ) -> Result<(), EntryError> {
        if dif_cnt != 0 {
            return Err(EntryError::Dif);
        }
        let n = iov_cnt.checked_add(bidi_cnt).ok_or(EntryError::IovCount)?;
        if n > MAX_IOVS {
            return Err(EntryError::TooManyIovs);
        }
        let iov_end = usz(n)
            .checked_mul(req::IOVEC_SIZE)
            .and_then(|b| b.checked_add(req::IOV))
            .ok_or(EntryError::IovCount)?;
        if iov_end > usz(len) {
            return Err(EntryError::IovCount);
        }
        // CDB: inside this entry, after the iovecs (where the kernel puts it).
        let entry_start = base as u64;
        let entry_end = entry_start + u64::from(len);
        if cdb_off < entry_start + iov_end as u64 || cdb_off >= entry_end {
            return Err(EntryError::CdbOutOfRange);
        }
        let cdb_pos = usize::try_from(cdb_off).map_err(|_| EntryError::CdbOutOfRange)?;
        let opcode = self
            .map
            .read_u8(cdb_pos)
            .map_err(|_| EntryError::CdbOutOfRange)?;
        let cdb_len = if opcode == 0x7f {
            if cdb_off + 8 > entry_end {
                return Err(EntryError::CdbLength);
            }
            scsi_command_size(
                opcode,
                self.map
                    .read_u8(cdb_pos + 7)
                    .map_err(|_| EntryError::CdbLength)?,
            )
        } else {
            scsi_command_size(opcode, 0)
        };
        if cdb_off + cdb_len as u64 > entry_end || cdb_len > CDB_MAX {
            return Err(EntryError::CdbLength);
        }
        self.map
            .copy_out(cdb_pos, &mut cmd.cdb[..cdb_len])
            .map_err(|_| EntryError::CdbLength)?;
        cmd.cdb_len = cdb_len;
        // Iovecs: every one inside the data area.
        let data_off = self.data.data_off();
        let map_len = self.map.len() as u64;
        cmd.iov.reserve(usz(n));
        for i in 0..usz(n) {
            let p = base + req::IOV + i * req::IOVEC_SIZE;
            let (Ok(off), Ok(l)) = (self.map.read_u64(p), self.map.read_u64(p + 8)) else {
                return Err(EntryError::IovCount);
            };
            if off < data_off || !off.checked_add(l).is_some_and(|e| e <= map_len) {
                return Err(EntryError::IovOutOfData);
            }
            cmd.iov.push(DataSeg { off, len: l });
        }
        cmd.iov_cnt = iov_cnt;
        cmd.bidi_cnt = bidi_cnt;
        Ok(())
    }

    fn read_tmr(
        &mut self,
        at: u32,
        len_op: u32,
        len: u32,
        t: &mut TmrCopy,
    ) -> Result<(), RingError> {
        if usz(len) < tmr::SIZE {
            return Err(self.fail(at, len_op, "TMR entry shorter than 32 bytes"));
        }
        let base = self.ring_pos(at);
        let (Ok(ty), Ok(cnt)) = (
            self.map.read_u8(base + tmr::TMR_TYPE),
            self.map.read_u32(base + tmr::CMD_CNT),
        ) else {
            return Err(self.fail(at, len_op, "TMR entry outside mapping"));
        };
        let fit = (usz(len) - tmr::SIZE) / 2;
        let n = usz(cnt).min(fit);
        if n < usz(cnt) {
            tracing::warn!(
                at,
                cmd_cnt = cnt,
                fit,
                "TMR cmd_cnt exceeds the entry; truncated"
            );
        }
        t.tmr_type = ty;
        t.cmd_ids.clear();
        for i in 0..n {
            match self.map.read_u16(base + tmr::CMD_IDS + 2 * i) {
                Ok(id) => t.cmd_ids.push(id),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Completes one command (steal-style OOOC). Does not publish.
    pub fn complete(&mut self, cmd_id: u16, rsp: &Response<'_>) -> Result<(), RingError> {
        if cmd_id == 0 || !self.outstanding.get(cmd_id) {
            return Err(if cmd_id != 0 && self.completed.get(cmd_id) {
                RingError::DoubleCompletion(cmd_id)
            } else {
                RingError::UnknownCmdId(cmd_id)
            });
        }
        if self.cmd_slots == 0 {
            return Err(RingError::TooManyCompletions);
        }
        // Find the first CMD slot at the pending tail; everything up to `read` was validated
        // when read, but re-check (bounded) because the memory is shared.
        let mut t = self.tail;
        let ttl = self.cmdr_size / 8 + 1;
        let mut slot = None;
        for _ in 0..ttl {
            if t == self.read {
                break;
            }
            let (len_op, _len, nxt) = self
                .header(t, self.read)
                .map_err(|(lo, why)| self.fail(t, lo, why))?;
            if hdr_op(len_op) == op::CMD {
                slot = Some((t, nxt));
                break;
            }
            t = nxt;
        }
        let Some((at, nxt)) = slot else {
            return Err(RingError::TooManyCompletions);
        };
        let base = self.ring_pos(at);
        let mut uf = 0u8;
        let read_len = match rsp.read_len {
            Some(n) if self.caps.read_len => {
                uf |= uflags::READ_LEN;
                n
            }
            _ => 0,
        };
        if rsp.keep_buf && self.caps.keep_buf {
            uf |= uflags::KEEP_BUF;
        }
        let m = &self.map;
        m.write_u16(base + hdr::CMD_ID, cmd_id)?;
        m.write_u8(base + hdr::UFLAGS, uf)?;
        m.write_u8(base + rsp::SCSI_STATUS, rsp.status)?;
        m.write_u32(base + rsp::READ_LEN, read_len)?;
        if rsp.status == STATUS_CHECK_CONDITION {
            match rsp.sense {
                Some(s) => m.copy_in(base + rsp::SENSE_BUFFER, s)?,
                None => m.fill(base + rsp::SENSE_BUFFER, tcmu_sys::SENSE_BUFFERSIZE, 0)?,
            }
        }
        self.tail = nxt;
        self.cmd_slots -= 1;
        self.n_outstanding -= 1;
        self.outstanding.set(cmd_id, false);
        self.completed.set(cmd_id, true);
        Ok(())
    }

    /// Steps the pending tail over read PAD/TMR/unknown entries, then Release-stores it into
    /// `cmd_tail` if it moved. Returns true if it did: call `Doorbell::kick` once then.
    pub fn publish(&mut self) -> bool {
        let ttl = self.cmdr_size / 8 + 1;
        for _ in 0..ttl {
            if self.tail == self.read {
                break;
            }
            let Ok((len_op, _, nxt)) = self.header(self.tail, self.read) else {
                break;
            };
            if hdr_op(len_op) == op::CMD {
                break;
            }
            self.tail = nxt;
        }
        if self.tail == self.published {
            return false;
        }
        // Release: every response/sense/Data-In write above happens-before the kernel's
        // READ_ONCE of cmd_tail (irqcontrol, block_dev, reclaim worker).
        if self
            .map
            .store_release_u32(mailbox::CMD_TAIL, self.tail)
            .is_err()
        {
            return false;
        }
        self.published = self.tail;
        true
    }
}
