//! REPORT SUPPORTED OPERATION CODES and `decode` must agree.

use std::collections::BTreeSet;
use tcmu_scsi::cdb::{decode, Cdb};
use tcmu_scsi::emulate::respond;
use tcmu_scsi::lun::{Caps, LunInfo};
use tcmu_scsi::opcodes::{self, SUPPORTED};
use tcmu_scsi::sense::Sense;

fn lun(all: bool) -> LunInfo {
    let mut l = LunInfo::new(512, 1 << 20, "serial");
    if all {
        l.caps = Caps {
            unmap: true,
            write_zeroes: true,
            fua: true,
            flush: true,
            thin: true,
            compare_and_write: true,
        };
        l.alua = Some(tcmu_scsi::alua::Alua::default());
    }
    l
}

fn rsoc(options: u8, rctd: bool, opcode: u8, sa: u16, l: &LunInfo) -> Result<Vec<u8>, Sense> {
    let cdb = Cdb::ReportSupportedOpcodes {
        rctd,
        options,
        opcode,
        service_action: sa,
        alloc_len: 4096,
    };
    let mut out = [0u8; 4096];
    respond(&cdb, l, &mut out).map(|n| out[..n].to_vec())
}

/// (opcode, service action, cdb length) listed by RSOC "all commands".
fn listed(rctd: bool, l: &LunInfo) -> BTreeSet<(u8, Option<u16>, usize)> {
    let r = rsoc(0, rctd, 0, 0, l).unwrap();
    let len = usize::try_from(u32::from_be_bytes(r[..4].try_into().unwrap())).unwrap();
    assert_eq!(len + 4, r.len());
    let step = if rctd { 20 } else { 8 };
    assert_eq!(len % step, 0);
    r[4..]
        .chunks(step)
        .map(|d| {
            assert_eq!(d[5] & 0x02 != 0, rctd, "CTDP");
            if rctd {
                assert_eq!(&d[8..10], &[0, 0x0A]);
            }
            let sa = (d[5] & 1 != 0).then(|| u16::from_be_bytes([d[2], d[3]]));
            (d[0], sa, usize::from(u16::from_be_bytes([d[6], d[7]])))
        })
        .collect()
}

/// Every (opcode, sa) for which a zeroed CDB decodes.
fn accepted() -> BTreeSet<(u8, Option<u16>, usize)> {
    let mut set = BTreeSet::new();
    for op in 0..=255u8 {
        let sas: Vec<Option<u16>> = if opcodes::has_service_actions(op) {
            (0..32).map(Some).collect()
        } else {
            vec![None]
        };
        for sa in sas {
            let mut c = [0u8; 32];
            c[0] = op;
            c[1] = sa.map_or(0, |s| u8::try_from(s).unwrap());
            match decode(&c) {
                Ok(_) => {
                    let len = tcmu_scsi::cdb::cdb_len(&c).unwrap();
                    set.insert((op, sa, len));
                }
                Err(s) => assert_eq!(s.key, 5, "opcode {op:#x}"),
            }
        }
    }
    set
}

#[test]
fn rsoc_lists_exactly_what_decode_accepts() {
    let acc = accepted();
    assert_eq!(listed(false, &lun(true)), acc);
    assert_eq!(listed(true, &lun(true)), acc);
    let table: BTreeSet<_> = SUPPORTED
        .iter()
        .map(|o| (o.opcode, o.service_action, o.cdb_len()))
        .collect();
    assert_eq!(table, acc);
}

#[test]
fn rsoc_hides_commands_the_lun_lacks() {
    let l = listed(false, &lun(false));
    assert!(!l
        .iter()
        .any(|e| e.0 == opcodes::UNMAP || e.0 == opcodes::COMPARE_AND_WRITE));
    assert!(!l
        .iter()
        .any(|e| e.0 == opcodes::MAINTENANCE_IN
            && e.1 == Some(opcodes::MI_REPORT_TARGET_PORT_GROUPS)));
    assert!(l.iter().any(|e| e.0 == opcodes::READ_16));
}

#[test]
fn rsoc_one_command_usage_data() {
    let l = lun(true);
    for o in SUPPORTED {
        let (options, sa) = match o.service_action {
            Some(sa) => (2, sa),
            None => (1, 0),
        };
        for opts in [options, 3] {
            let r = rsoc(opts, false, o.opcode, sa, &l).unwrap();
            assert_eq!(r[1] & 0x07, 3, "supported {:#x}", o.opcode);
            assert_eq!(usize::from(u16::from_be_bytes([r[2], r[3]])), o.cdb_len());
            assert_eq!(&r[4..], o.usage);
            assert_eq!(r[4], o.opcode);
            // The usage data with all usage bits set except the protection
            // field and NACA decodes to the same opcode.
            let mut c = o.usage.to_vec();
            c[o.cdb_len() - 1] &= !0x04;
            assert!(decode(&c).map_or_else(|s| s.asc == 0x24, |_| true));
        }
        let r = rsoc(options, true, o.opcode, sa, &l).unwrap();
        assert_eq!(r[1], 0x83);
        assert_eq!(r.len(), 4 + o.cdb_len() + 12);
    }
}

#[test]
fn rsoc_one_command_errors_and_unsupported() {
    let l = lun(false);
    assert_eq!(
        rsoc(1, false, opcodes::REPORT_LUNS, 0, &l).unwrap(),
        vec![0, 1, 0, 0]
    );
    assert_eq!(
        rsoc(1, false, opcodes::UNMAP, 0, &l).unwrap(),
        vec![0, 1, 0, 0]
    );
    assert_eq!(
        rsoc(2, false, opcodes::SERVICE_ACTION_IN_16, 0x11, &l).unwrap(),
        vec![0, 1, 0, 0]
    );
    let bad = Sense::invalid_field_in_cdb(2, Some(2));
    assert_eq!(
        rsoc(1, false, opcodes::SERVICE_ACTION_IN_16, 0x10, &l),
        Err(bad)
    );
    assert_eq!(rsoc(2, false, opcodes::READ_10, 0, &l), Err(bad));
    assert_eq!(rsoc(3, false, opcodes::READ_10, 0, &l).unwrap()[1], 3);
}
