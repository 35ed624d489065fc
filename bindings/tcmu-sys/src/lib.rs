//! The kernel ABI of `target_core_user` (TCMU) as of Linux 6.x, from
//! `include/uapi/linux/target_core_user.h`.
//!
//! The shared ring is memory the kernel writes concurrently, so this crate deliberately
//! exposes **byte offsets and constants**, not `#[repr(C)]` structs: callers read and write
//! the mapping with volatile/atomic accesses at these offsets and never form a Rust
//! reference into it. The `layout` test compiles a C program against the system header
//! (`/usr/include/linux/target_core_user.h`, Debian's `linux-libc-dev`) and checks every
//! offset below against `offsetof`/`sizeof`, so the two cannot drift.
#![no_std]
#![forbid(unsafe_code)]

/// `TCMU_MAILBOX_VERSION`: the only mailbox version Linux 6.x writes.
pub const MAILBOX_VERSION: u16 = 2;

/// Mailbox capability flags (`tcmu_mailbox.flags`).
pub mod mailbox_flags {
    /// `TCMU_MAILBOX_FLAG_CAP_OOOC`: completions may be returned out of order.
    pub const CAP_OOOC: u16 = 1 << 0;
    /// `TCMU_MAILBOX_FLAG_CAP_READ_LEN`: the kernel honours `TCMU_UFLAG_READ_LEN`.
    pub const CAP_READ_LEN: u16 = 1 << 1;
    /// `TCMU_MAILBOX_FLAG_CAP_TMR`: TMR entries may appear in the ring.
    pub const CAP_TMR: u16 = 1 << 2;
    /// `TCMU_MAILBOX_FLAG_CAP_KEEP_BUF`: `TCMU_UFLAG_KEEP_BUF` and `action/free_kept_buf`.
    pub const CAP_KEEP_BUF: u16 = 1 << 3;
}

/// Byte offsets inside `struct tcmu_mailbox` (at offset 0 of the mapping).
pub mod mailbox {
    /// `__u16 version`.
    pub const VERSION: usize = 0;
    /// `__u16 flags`.
    pub const FLAGS: usize = 2;
    /// `__u32 cmdr_off`: offset of the command ring from the start of the mapping.
    pub const CMDR_OFF: usize = 4;
    /// `__u32 cmdr_size`: size of the command ring in bytes.
    pub const CMDR_SIZE: usize = 8;
    /// `__u32 cmd_head`: producer index, written by the kernel only.
    pub const CMD_HEAD: usize = 12;
    /// `__u32 cmd_tail`: completion index, written by userspace only (own cache line).
    pub const CMD_TAIL: usize = 64;
    /// `sizeof(struct tcmu_mailbox)`; the kernel's `CMDR_OFF`.
    pub const SIZE: usize = 128;
}

/// Ring entry opcodes (low 3 bits of `len_op`).
pub mod op {
    /// `TCMU_OP_PAD`: skip `len` bytes.
    pub const PAD: u32 = 0;
    /// `TCMU_OP_CMD`: a SCSI command.
    pub const CMD: u32 = 1;
    /// `TCMU_OP_TMR`: a task management notification.
    pub const TMR: u32 = 2;
    /// `TCMU_OP_MASK`.
    pub const MASK: u32 = 0x7;
}

/// Flags userspace sets in `hdr.uflags`.
pub mod uflags {
    /// `TCMU_UFLAG_UNKNOWN_OP`: the *ring* opcode was not understood (never for SCSI opcodes).
    pub const UNKNOWN_OP: u8 = 0x1;
    /// `TCMU_UFLAG_READ_LEN`: `rsp.read_len` holds the valid Data-In length.
    pub const READ_LEN: u8 = 0x2;
    /// `TCMU_UFLAG_KEEP_BUF`: keep the data blocks until `action/free_kept_buf`.
    pub const KEEP_BUF: u8 = 0x4;
}

/// `TCMU_OP_ALIGN_SIZE`: every entry length and ring index is a multiple of this.
pub const OP_ALIGN_SIZE: usize = 8;

/// `TCMU_SENSE_BUFFERSIZE`.
pub const SENSE_BUFFERSIZE: usize = 96;

/// Byte offsets inside `struct tcmu_cmd_entry_hdr`, present at the start of every entry.
pub mod hdr {
    /// `__u32 len_op`: entry length (multiple of 8) | opcode in the low 3 bits.
    pub const LEN_OP: usize = 0;
    /// `__u16 cmd_id`.
    pub const CMD_ID: usize = 4;
    /// `__u8 kflags` (always 0 in 6.x).
    pub const KFLAGS: usize = 6;
    /// `__u8 uflags`.
    pub const UFLAGS: usize = 7;
    /// `sizeof(struct tcmu_cmd_entry_hdr)`.
    pub const SIZE: usize = 8;
}

/// Byte offsets of the request view of `struct tcmu_cmd_entry` (kernel to user).
pub mod req {
    /// `__u32 iov_cnt`.
    pub const IOV_CNT: usize = 8;
    /// `__u32 iov_bidi_cnt`.
    pub const IOV_BIDI_CNT: usize = 12;
    /// `__u32 iov_dif_cnt`.
    pub const IOV_DIF_CNT: usize = 16;
    /// `__u64 cdb_off`: offset of the CDB from the start of the mapping (the inner struct is
    /// naturally aligned, so there are 4 padding bytes before it).
    pub const CDB_OFF: usize = 24;
    /// `struct iovec iov[]`: `{u64 base_offset, u64 len}` pairs.
    pub const IOV: usize = 48;
    /// `sizeof(struct iovec)` on a 64-bit kernel.
    pub const IOVEC_SIZE: usize = 16;
}

/// Byte offsets of the response view of `struct tcmu_cmd_entry` (user to kernel).
pub mod rsp {
    /// `__u8 scsi_status`.
    pub const SCSI_STATUS: usize = 8;
    /// `__u32 read_len` (overlays `req.iov_bidi_cnt`).
    pub const READ_LEN: usize = 12;
    /// `char sense_buffer[96]`.
    pub const SENSE_BUFFER: usize = 16;
}

/// `sizeof(struct tcmu_cmd_entry)`: the minimum size of a CMD entry.
pub const CMD_ENTRY_SIZE: usize = 112;

/// Byte offsets inside `struct tcmu_tmr_entry`.
pub mod tmr {
    /// `__u8 tmr_type`.
    pub const TMR_TYPE: usize = 8;
    /// `__u32 cmd_cnt`.
    pub const CMD_CNT: usize = 12;
    /// `__u16 cmd_ids[]`.
    pub const CMD_IDS: usize = 32;
    /// `sizeof(struct tcmu_tmr_entry)` without the flexible array.
    pub const SIZE: usize = 32;

    /// `TCMU_TMR_UNKNOWN`.
    pub const UNKNOWN: u8 = 0;
    /// `TCMU_TMR_ABORT_TASK`.
    pub const ABORT_TASK: u8 = 1;
    /// `TCMU_TMR_ABORT_TASK_SET`.
    pub const ABORT_TASK_SET: u8 = 2;
    /// `TCMU_TMR_CLEAR_ACA`.
    pub const CLEAR_ACA: u8 = 3;
    /// `TCMU_TMR_CLEAR_TASK_SET`.
    pub const CLEAR_TASK_SET: u8 = 4;
    /// `TCMU_TMR_LUN_RESET`.
    pub const LUN_RESET: u8 = 5;
    /// `TCMU_TMR_TARGET_WARM_RESET`.
    pub const TARGET_WARM_RESET: u8 = 6;
    /// `TCMU_TMR_TARGET_COLD_RESET`.
    pub const TARGET_COLD_RESET: u8 = 7;
    /// `TCMU_TMR_LUN_RESET_PRO`: pseudo reset from PR OUT PREEMPT AND ABORT.
    pub const LUN_RESET_PRO: u8 = 128;
}

/// Generic netlink family, group and protocol of `target_core_user`.
pub mod genl {
    /// Family name.
    pub const FAMILY: &str = "TCM-USER";
    /// Multicast group carrying device events.
    pub const GROUP_CONFIG: &str = "config";
    /// Family version.
    pub const VERSION: u8 = 2;

    /// `enum tcmu_genl_cmd`.
    pub mod cmd {
        /// `TCMU_CMD_UNSPEC`.
        pub const UNSPEC: u8 = 0;
        /// `TCMU_CMD_ADDED_DEVICE` (kernel to user).
        pub const ADDED_DEVICE: u8 = 1;
        /// `TCMU_CMD_REMOVED_DEVICE` (kernel to user).
        pub const REMOVED_DEVICE: u8 = 2;
        /// `TCMU_CMD_RECONFIG_DEVICE` (kernel to user).
        pub const RECONFIG_DEVICE: u8 = 3;
        /// `TCMU_CMD_ADDED_DEVICE_DONE` (user to kernel).
        pub const ADDED_DEVICE_DONE: u8 = 4;
        /// `TCMU_CMD_REMOVED_DEVICE_DONE` (user to kernel).
        pub const REMOVED_DEVICE_DONE: u8 = 5;
        /// `TCMU_CMD_RECONFIG_DEVICE_DONE` (user to kernel).
        pub const RECONFIG_DEVICE_DONE: u8 = 6;
        /// `TCMU_CMD_SET_FEATURES` (user to kernel).
        pub const SET_FEATURES: u8 = 7;
    }

    /// `enum tcmu_genl_attr`.
    pub mod attr {
        /// `TCMU_ATTR_UNSPEC`.
        pub const UNSPEC: u16 = 0;
        /// `TCMU_ATTR_DEVICE`: NUL-terminated uio name.
        pub const DEVICE: u16 = 1;
        /// `TCMU_ATTR_MINOR`: u32 uio minor.
        pub const MINOR: u16 = 2;
        /// `TCMU_ATTR_PAD`.
        pub const PAD: u16 = 3;
        /// `TCMU_ATTR_DEV_CFG`: string.
        pub const DEV_CFG: u16 = 4;
        /// `TCMU_ATTR_DEV_SIZE`: u64.
        pub const DEV_SIZE: u16 = 5;
        /// `TCMU_ATTR_WRITECACHE`: u8.
        pub const WRITECACHE: u16 = 6;
        /// `TCMU_ATTR_CMD_STATUS`: s32.
        pub const CMD_STATUS: u16 = 7;
        /// `TCMU_ATTR_DEVICE_ID`: u32.
        pub const DEVICE_ID: u16 = 8;
        /// `TCMU_ATTR_SUPP_KERN_CMD_REPLY`: u8.
        pub const SUPP_KERN_CMD_REPLY: u16 = 9;
    }
}

/// Length of an entry from its `len_op` word.
#[must_use]
pub const fn hdr_len(len_op: u32) -> u32 {
    len_op & !op::MASK
}

/// Opcode of an entry from its `len_op` word.
#[must_use]
pub const fn hdr_op(len_op: u32) -> u32 {
    len_op & op::MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_offsets() {
        assert_eq!(req::CDB_OFF, 24);
        assert_eq!(req::IOV, 48);
        assert_eq!(CMD_ENTRY_SIZE, 112);
        assert_eq!(mailbox::CMD_TAIL, 64);
        assert_eq!(mailbox::SIZE, 128);
        assert_eq!(rsp::SENSE_BUFFER + SENSE_BUFFERSIZE, CMD_ENTRY_SIZE);
        assert_eq!(hdr_len(0x71), 0x70);
        assert_eq!(hdr_op(0x71), op::CMD);
    }
}
