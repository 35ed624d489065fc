//! Checks every constant of `tcmu-sys` against the system's
//! `/usr/include/linux/target_core_user.h` by compiling a C program with the system
//! compiler and comparing what `offsetof`/`sizeof`/the macros print.
use std::collections::HashMap;

const HEADER: &str = "/usr/include/linux/target_core_user.h";

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/target_core_user.h>
#define P(name, v) printf("%s %lu\n", name, (unsigned long)(v))
int main(void) {
  P("mb.version", offsetof(struct tcmu_mailbox, version));
  P("mb.flags", offsetof(struct tcmu_mailbox, flags));
  P("mb.cmdr_off", offsetof(struct tcmu_mailbox, cmdr_off));
  P("mb.cmdr_size", offsetof(struct tcmu_mailbox, cmdr_size));
  P("mb.cmd_head", offsetof(struct tcmu_mailbox, cmd_head));
  P("mb.cmd_tail", offsetof(struct tcmu_mailbox, cmd_tail));
  P("mb.size", sizeof(struct tcmu_mailbox));
  P("hdr.len_op", offsetof(struct tcmu_cmd_entry_hdr, len_op));
  P("hdr.cmd_id", offsetof(struct tcmu_cmd_entry_hdr, cmd_id));
  P("hdr.kflags", offsetof(struct tcmu_cmd_entry_hdr, kflags));
  P("hdr.uflags", offsetof(struct tcmu_cmd_entry_hdr, uflags));
  P("hdr.size", sizeof(struct tcmu_cmd_entry_hdr));
  P("req.iov_cnt", offsetof(struct tcmu_cmd_entry, req.iov_cnt));
  P("req.iov_bidi_cnt", offsetof(struct tcmu_cmd_entry, req.iov_bidi_cnt));
  P("req.iov_dif_cnt", offsetof(struct tcmu_cmd_entry, req.iov_dif_cnt));
  P("req.cdb_off", offsetof(struct tcmu_cmd_entry, req.cdb_off));
  P("req.iov", offsetof(struct tcmu_cmd_entry, req.iov));
  P("iovec.size", sizeof(struct iovec));
  P("rsp.scsi_status", offsetof(struct tcmu_cmd_entry, rsp.scsi_status));
  P("rsp.read_len", offsetof(struct tcmu_cmd_entry, rsp.read_len));
  P("rsp.sense_buffer", offsetof(struct tcmu_cmd_entry, rsp.sense_buffer));
  P("entry.size", sizeof(struct tcmu_cmd_entry));
  P("tmr.tmr_type", offsetof(struct tcmu_tmr_entry, tmr_type));
  P("tmr.cmd_cnt", offsetof(struct tcmu_tmr_entry, cmd_cnt));
  P("tmr.cmd_ids", offsetof(struct tcmu_tmr_entry, cmd_ids));
  P("tmr.size", sizeof(struct tcmu_tmr_entry));
  P("MAILBOX_VERSION", TCMU_MAILBOX_VERSION);
  P("CAP_OOOC", TCMU_MAILBOX_FLAG_CAP_OOOC);
  P("CAP_READ_LEN", TCMU_MAILBOX_FLAG_CAP_READ_LEN);
  P("CAP_TMR", TCMU_MAILBOX_FLAG_CAP_TMR);
  P("CAP_KEEP_BUF", TCMU_MAILBOX_FLAG_CAP_KEEP_BUF);
  P("OP_PAD", TCMU_OP_PAD); P("OP_CMD", TCMU_OP_CMD); P("OP_TMR", TCMU_OP_TMR);
  P("OP_MASK", TCMU_OP_MASK);
  P("UFLAG_UNKNOWN_OP", TCMU_UFLAG_UNKNOWN_OP);
  P("UFLAG_READ_LEN", TCMU_UFLAG_READ_LEN);
  P("UFLAG_KEEP_BUF", TCMU_UFLAG_KEEP_BUF);
  P("SENSE_BUFFERSIZE", TCMU_SENSE_BUFFERSIZE);
  P("OP_ALIGN_SIZE", TCMU_OP_ALIGN_SIZE);
  P("TMR_ABORT_TASK", TCMU_TMR_ABORT_TASK); P("TMR_LUN_RESET", TCMU_TMR_LUN_RESET);
  P("TMR_LUN_RESET_PRO", TCMU_TMR_LUN_RESET_PRO);
  P("TMR_TARGET_COLD_RESET", TCMU_TMR_TARGET_COLD_RESET);
  P("CMD_ADDED_DEVICE", TCMU_CMD_ADDED_DEVICE);
  P("CMD_REMOVED_DEVICE", TCMU_CMD_REMOVED_DEVICE);
  P("CMD_RECONFIG_DEVICE", TCMU_CMD_RECONFIG_DEVICE);
  P("CMD_ADDED_DEVICE_DONE", TCMU_CMD_ADDED_DEVICE_DONE);
  P("CMD_REMOVED_DEVICE_DONE", TCMU_CMD_REMOVED_DEVICE_DONE);
  P("CMD_RECONFIG_DEVICE_DONE", TCMU_CMD_RECONFIG_DEVICE_DONE);
  P("CMD_SET_FEATURES", TCMU_CMD_SET_FEATURES);
  P("ATTR_DEVICE", TCMU_ATTR_DEVICE); P("ATTR_MINOR", TCMU_ATTR_MINOR);
  P("ATTR_PAD", TCMU_ATTR_PAD); P("ATTR_DEV_CFG", TCMU_ATTR_DEV_CFG);
  P("ATTR_DEV_SIZE", TCMU_ATTR_DEV_SIZE); P("ATTR_WRITECACHE", TCMU_ATTR_WRITECACHE);
  P("ATTR_CMD_STATUS", TCMU_ATTR_CMD_STATUS); P("ATTR_DEVICE_ID", TCMU_ATTR_DEVICE_ID);
  P("ATTR_SUPP_KERN_CMD_REPLY", TCMU_ATTR_SUPP_KERN_CMD_REPLY);
  return 0;
}
"#;

fn c_values() -> HashMap<String, u64> {
    assert!(
        std::path::Path::new(HEADER).exists(),
        "{HEADER} is missing: install Debian's linux-libc-dev (scripts/setup.sh does)"
    );
    c_probe::c_values(PROGRAM, &[], HEADER)
}

#[test]
fn layout_matches_system_header() {
    use tcmu_sys::*;
    let c = c_values();
    let ours: &[(&str, u64)] = &[
        ("mb.version", mailbox::VERSION as u64),
        ("mb.flags", mailbox::FLAGS as u64),
        ("mb.cmdr_off", mailbox::CMDR_OFF as u64),
        ("mb.cmdr_size", mailbox::CMDR_SIZE as u64),
        ("mb.cmd_head", mailbox::CMD_HEAD as u64),
        ("mb.cmd_tail", mailbox::CMD_TAIL as u64),
        ("mb.size", mailbox::SIZE as u64),
        ("hdr.len_op", hdr::LEN_OP as u64),
        ("hdr.cmd_id", hdr::CMD_ID as u64),
        ("hdr.kflags", hdr::KFLAGS as u64),
        ("hdr.uflags", hdr::UFLAGS as u64),
        ("hdr.size", hdr::SIZE as u64),
        ("req.iov_cnt", req::IOV_CNT as u64),
        ("req.iov_bidi_cnt", req::IOV_BIDI_CNT as u64),
        ("req.iov_dif_cnt", req::IOV_DIF_CNT as u64),
        ("req.cdb_off", req::CDB_OFF as u64),
        ("req.iov", req::IOV as u64),
        ("iovec.size", req::IOVEC_SIZE as u64),
        ("rsp.scsi_status", rsp::SCSI_STATUS as u64),
        ("rsp.read_len", rsp::READ_LEN as u64),
        ("rsp.sense_buffer", rsp::SENSE_BUFFER as u64),
        ("entry.size", CMD_ENTRY_SIZE as u64),
        ("tmr.tmr_type", tmr::TMR_TYPE as u64),
        ("tmr.cmd_cnt", tmr::CMD_CNT as u64),
        ("tmr.cmd_ids", tmr::CMD_IDS as u64),
        ("tmr.size", tmr::SIZE as u64),
        ("MAILBOX_VERSION", MAILBOX_VERSION as u64),
        ("CAP_OOOC", mailbox_flags::CAP_OOOC as u64),
        ("CAP_READ_LEN", mailbox_flags::CAP_READ_LEN as u64),
        ("CAP_TMR", mailbox_flags::CAP_TMR as u64),
        ("CAP_KEEP_BUF", mailbox_flags::CAP_KEEP_BUF as u64),
        ("OP_PAD", op::PAD as u64),
        ("OP_CMD", op::CMD as u64),
        ("OP_TMR", op::TMR as u64),
        ("OP_MASK", op::MASK as u64),
        ("UFLAG_UNKNOWN_OP", uflags::UNKNOWN_OP as u64),
        ("UFLAG_READ_LEN", uflags::READ_LEN as u64),
        ("UFLAG_KEEP_BUF", uflags::KEEP_BUF as u64),
        ("SENSE_BUFFERSIZE", SENSE_BUFFERSIZE as u64),
        ("OP_ALIGN_SIZE", OP_ALIGN_SIZE as u64),
        ("TMR_ABORT_TASK", tmr::ABORT_TASK as u64),
        ("TMR_LUN_RESET", tmr::LUN_RESET as u64),
        ("TMR_LUN_RESET_PRO", tmr::LUN_RESET_PRO as u64),
        ("TMR_TARGET_COLD_RESET", tmr::TARGET_COLD_RESET as u64),
        ("CMD_ADDED_DEVICE", genl::cmd::ADDED_DEVICE as u64),
        ("CMD_REMOVED_DEVICE", genl::cmd::REMOVED_DEVICE as u64),
        ("CMD_RECONFIG_DEVICE", genl::cmd::RECONFIG_DEVICE as u64),
        ("CMD_ADDED_DEVICE_DONE", genl::cmd::ADDED_DEVICE_DONE as u64),
        (
            "CMD_REMOVED_DEVICE_DONE",
            genl::cmd::REMOVED_DEVICE_DONE as u64,
        ),
        (
            "CMD_RECONFIG_DEVICE_DONE",
            genl::cmd::RECONFIG_DEVICE_DONE as u64,
        ),
        ("CMD_SET_FEATURES", genl::cmd::SET_FEATURES as u64),
        ("ATTR_DEVICE", genl::attr::DEVICE as u64),
        ("ATTR_MINOR", genl::attr::MINOR as u64),
        ("ATTR_PAD", genl::attr::PAD as u64),
        ("ATTR_DEV_CFG", genl::attr::DEV_CFG as u64),
        ("ATTR_DEV_SIZE", genl::attr::DEV_SIZE as u64),
        ("ATTR_WRITECACHE", genl::attr::WRITECACHE as u64),
        ("ATTR_CMD_STATUS", genl::attr::CMD_STATUS as u64),
        ("ATTR_DEVICE_ID", genl::attr::DEVICE_ID as u64),
        (
            "ATTR_SUPP_KERN_CMD_REPLY",
            genl::attr::SUPP_KERN_CMD_REPLY as u64,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, v) in ours {
        match c.get(*name) {
            Some(cv) if cv == v => {}
            other => wrong.push(format!("{name}: ours {v}, header {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "tcmu-sys drifted from {HEADER}:\n{}",
        wrong.join("\n")
    );
}
