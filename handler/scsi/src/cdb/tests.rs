use super::*;
use crate::opcodes as op;
use crate::sense::{FieldPointer, Sense};

mod proptests;

fn cdb16(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

fn field(s: Sense) -> Option<(u16, Option<u8>)> {
    s.field.map(|FieldPointer { byte, bit, .. }| (byte, bit))
}

#[test]
fn cdb_len_follows_group_table() {
    assert_eq!(cdb_len(&[]), None);
    assert_eq!(cdb_len(&[0x00]), Some(6));
    assert_eq!(cdb_len(&[0x28]), Some(10));
    assert_eq!(cdb_len(&[0x5A]), Some(10));
    assert_eq!(cdb_len(&[0x88]), Some(16));
    assert_eq!(cdb_len(&[0xA8]), Some(12));
    assert_eq!(cdb_len(&[0xC0]), Some(10));
    assert_eq!(cdb_len(&[0x7F, 0, 0]), None);
    assert_eq!(cdb_len(&[0x7F, 0, 0, 0, 0, 0, 0, 0x18]), Some(32));
}

#[test]
fn empty_short_and_unknown() {
    assert_eq!(decode(&[]), Err(Sense::invalid_field_in_cdb(0, None)));
    assert_eq!(
        decode(&[op::READ_10, 0, 0]),
        Err(Sense::invalid_field_in_cdb(3, None))
    );
    assert_eq!(decode(&[op::REPORT_LUNS; 12]), Err(Sense::invalid_opcode()));
    assert_eq!(
        decode(&[0x7F, 0, 0, 0, 0, 0, 0, 0x18]),
        Err(Sense::invalid_opcode())
    );
    assert_eq!(decode(&[0xFF]), Err(Sense::invalid_opcode()));
}

#[test]
fn naca_is_rejected() {
    let e = decode(&[op::TEST_UNIT_READY, 0, 0, 0, 0, 0x04]).unwrap_err();
    assert_eq!(field(e), Some((5, Some(2))));
    assert_eq!(
        decode(&[op::TEST_UNIT_READY, 0, 0, 0, 0, 0x01]),
        Ok(Cdb::TestUnitReady)
    );
}

#[test]
fn read6_zero_length_means_256() {
    let c = decode(&[op::READ_6, 0xFF, 0x12, 0x34, 0, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Read(Rw {
            lba: 0x1F_1234,
            blocks: 256,
            fua: false,
            dpo: false
        })
    );
    let c = decode(&[op::WRITE_6, 0, 0, 1, 8, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Write(Rw {
            lba: 1,
            blocks: 8,
            fua: false,
            dpo: false
        })
    );
}

#[test]
fn read10_fields_and_protect() {
    let c = decode(&[op::READ_10, 0x18, 1, 2, 3, 4, 0x1F, 0x01, 0x00, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Read(Rw {
            lba: 0x0102_0304,
            blocks: 256,
            fua: true,
            dpo: true
        })
    );
    let e = decode(&[op::WRITE_10, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
    assert_eq!((e.asc, field(e)), (0x24, Some((1, Some(7)))));
}

#[test]
fn write16_and_12() {
    let c = decode(&cdb16(&[
        op::WRITE_16,
        0x08,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        2,
        0,
        1,
        0,
        0,
    ]))
    .unwrap();
    assert_eq!(
        c,
        Cdb::Write(Rw {
            lba: 0x1_0000_0002,
            blocks: 0x1_0000,
            fua: true,
            dpo: false
        })
    );
    let c = decode(&[op::READ_12, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Read(Rw {
            lba: 9,
            blocks: 3,
            fua: false,
            dpo: false
        })
    );
}

#[test]
fn write_same_10_vs_16() {
    let c = decode(&[op::WRITE_SAME_10, 0x08, 0, 0, 0, 5, 0, 0, 7, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::WriteSame {
            lba: 5,
            blocks: 7,
            unmap: true,
            anchor: false,
            ndob: false
        }
    );
    let c = decode(&cdb16(&[
        op::WRITE_SAME_16,
        0x01,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        5,
        0,
        0,
        0,
        7,
    ]))
    .unwrap();
    assert_eq!(
        c,
        Cdb::WriteSame {
            lba: 5,
            blocks: 7,
            unmap: false,
            anchor: false,
            ndob: true
        }
    );
    // Bit 0 is reserved in WRITE SAME(10): no NDOB.
    let c = decode(&[op::WRITE_SAME_10, 0x01, 0, 0, 0, 5, 0, 0, 7, 0]).unwrap();
    assert_eq!(data_out_len(&c, 512), 512);
    for (b1, bit) in [(0x10, 4), (0x04, 2), (0x02, 1)] {
        let e = decode(&[op::WRITE_SAME_10, b1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(field(e), Some((1, Some(bit))));
    }
}

#[test]
fn compare_and_write_blocks_at_13() {
    let c = decode(&cdb16(&[
        op::COMPARE_AND_WRITE,
        0x08,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        9,
        0,
        0,
        0,
        1,
    ]))
    .unwrap();
    assert_eq!(
        c,
        Cdb::CompareAndWrite {
            lba: 9,
            blocks: 1,
            fua: true
        }
    );
    assert_eq!(data_out_len(&c, 4096), 8192);
}

#[test]
fn sync_cache_and_verify() {
    let c = decode(&[op::SYNC_CACHE_10, 0x02, 0, 0, 0, 4, 0, 0x01, 0x02, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::SyncCache {
            lba: 4,
            blocks: 0x102,
            immed: true
        }
    );
    let c = decode(&[op::VERIFY_10, 0x02, 0, 0, 0, 4, 0, 0, 2, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Verify {
            lba: 4,
            blocks: 2,
            bytchk: 1
        }
    );
    assert_eq!(data_out_len(&c, 512), 1024);
    let e = decode(&[op::VERIFY_10, 0x04, 0, 0, 0, 4, 0, 0, 2, 0]).unwrap_err();
    assert_eq!(field(e), Some((1, Some(2))));
    let c = decode(&cdb16(&[
        op::WRITE_VERIFY_16,
        0x00,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        2,
    ]))
    .unwrap();
    let rw = Rw {
        lba: 1,
        blocks: 2,
        fua: true,
        dpo: false,
    };
    assert_eq!(c, Cdb::WriteAndVerify { rw, bytchk: 0 });
    assert_eq!(data_out_len(&c, 512), 1024);
}

#[test]
fn unmap_and_mode_select() {
    let c = decode(&[op::UNMAP, 0, 0, 0, 0, 0, 0, 0x01, 0x18, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Unmap {
            anchor: false,
            param_len: 0x118
        }
    );
    assert_eq!(data_out_len(&c, 512), 0x118);
    assert!(decode(&[op::UNMAP, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    let c = decode(&[op::MODE_SELECT_6, 0x11, 0, 0, 20, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::ModeSelect {
            ten: false,
            pf: true,
            sp: true,
            param_len: 20
        }
    );
    let c = decode(&[op::MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::ModeSelect {
            ten: true,
            pf: true,
            sp: false,
            param_len: 256
        }
    );
}

#[test]
fn inquiry_and_mode_sense() {
    let c = decode(&[op::INQUIRY, 1, 0x83, 0x01, 0x00, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::Inquiry {
            evpd: true,
            page: 0x83,
            alloc_len: 256
        }
    );
    assert_eq!(data_in_len(&c, 512), 256);
    let e = decode(&[op::INQUIRY, 0, 0x83, 0, 0xFF, 0]).unwrap_err();
    assert_eq!(field(e), Some((2, Some(7))));
    assert!(decode(&[op::INQUIRY, 2, 0, 0, 0xFF, 0]).is_err());
    let c = decode(&[op::MODE_SENSE_10, 0x18, 0x48, 0, 0, 0, 0, 0x10, 0, 0]).unwrap();
    let want = Cdb::ModeSense {
        ten: true,
        dbd: true,
        llbaa: true,
        pc: 1,
        page: 8,
        subpage: 0,
        alloc_len: 0x1000,
    };
    assert_eq!(c, want);
}

#[test]
fn service_actions() {
    let c = decode(&cdb16(&[
        op::SERVICE_ACTION_IN_16,
        0x10,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        32,
    ]))
    .unwrap();
    assert_eq!(c, Cdb::ReadCapacity16 { alloc_len: 32 });
    let e = decode(&cdb16(&[op::SERVICE_ACTION_IN_16, 0x11])).unwrap_err();
    assert_eq!(field(e), Some((1, Some(4))));
    let e = decode(&[op::MAINTENANCE_IN, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(field(e), Some((1, Some(4))));
    let c = decode(&[op::MAINTENANCE_IN, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0]).unwrap();
    assert_eq!(
        c,
        Cdb::ReportTargetPortGroups {
            extended: false,
            alloc_len: 0x40
        }
    );
    let c = decode(&[
        op::MAINTENANCE_IN,
        0x0C,
        0x82,
        0x9E,
        0,
        0x10,
        0,
        0,
        1,
        0,
        0,
        0,
    ])
    .unwrap();
    let want = Cdb::ReportSupportedOpcodes {
        rctd: true,
        options: 2,
        opcode: 0x9E,
        service_action: 0x10,
        alloc_len: 256,
    };
    assert_eq!(c, want);
    assert!(decode(&[op::MAINTENANCE_IN, 0x0C, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn small_commands() {
    let c = decode(&[op::START_STOP_UNIT, 1, 0, 0, 0x33, 0]).unwrap();
    let want = Cdb::StartStopUnit {
        immed: true,
        power_condition: 3,
        loej: true,
        start: true,
    };
    assert_eq!(c, want);
    assert_eq!(
        decode(&[op::PREVENT_ALLOW, 0, 0, 0, 1, 0]),
        Ok(Cdb::PreventAllowMediumRemoval { prevent: 1 })
    );
    assert_eq!(
        decode(&[op::FORMAT_UNIT, 0x30, 0, 0, 0, 0]),
        Ok(Cdb::FormatUnit {
            fmtdata: true,
            longlist: true
        })
    );
    assert!(decode(&[op::FORMAT_UNIT, 0x80, 0, 0, 0, 0]).is_err());
    assert_eq!(
        decode(&[op::REQUEST_SENSE, 1, 0, 0, 252, 0]),
        Ok(Cdb::RequestSense {
            desc: true,
            alloc_len: 252
        })
    );
}

#[test]
fn data_lengths() {
    let rw = Rw {
        lba: 0,
        blocks: u32::MAX,
        fua: false,
        dpo: false,
    };
    assert_eq!(
        data_in_len(&Cdb::Read(rw), u32::MAX),
        u64::from(u32::MAX) * u64::from(u32::MAX)
    );
    assert_eq!(data_out_len(&Cdb::Read(rw), 512), 0);
    assert_eq!(
        data_out_len(&Cdb::Write(rw), 512),
        u64::from(u32::MAX) * 512
    );
    let ws = Cdb::WriteSame {
        lba: 0,
        blocks: 9,
        unmap: false,
        anchor: false,
        ndob: true,
    };
    assert_eq!(data_out_len(&ws, 512), 0);
    assert_eq!(data_in_len(&Cdb::ReadCapacity10, 512), 8);
    assert_eq!(data_in_len(&Cdb::TestUnitReady, 512), 0);
    let v = Cdb::Verify {
        lba: 0,
        blocks: 4,
        bytchk: 0,
    };
    assert_eq!((data_in_len(&v, 512), data_out_len(&v, 512)), (0, 0));
}

#[test]
fn extended_copy_receive_copy_results_and_get_lba_status_decode() {
    let mut c = [0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(decode(&c), Ok(Cdb::ExtendedCopy { param_len: 1000 }));
    assert_eq!(
        data_out_len(&Cdb::ExtendedCopy { param_len: 1000 }, 512),
        1000
    );
    // LID4 (01h) and the other copy service actions are refused at the field.
    c[1] = 0x01;
    assert_eq!(field(decode(&c).unwrap_err()), Some((1, Some(4))));

    let mut c = [0u8; 16];
    c[0] = 0x84;
    c[1] = 0x03;
    c[2] = 9;
    c[10..14].copy_from_slice(&64u32.to_be_bytes());
    let rcr = Cdb::ReceiveCopyResults {
        service_action: 3,
        list_id: 9,
        alloc_len: 64,
    };
    assert_eq!(decode(&c), Ok(rcr));
    assert_eq!(data_in_len(&rcr, 512), 64);
    for sa in [0x01u8, 0x04, 0x05] {
        c[1] = sa;
        assert_eq!(field(decode(&c).unwrap_err()), Some((1, Some(4))), "{sa}");
    }

    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x12;
    c[2..10].copy_from_slice(&77u64.to_be_bytes());
    c[10..14].copy_from_slice(&24u32.to_be_bytes());
    let g = Cdb::GetLbaStatus {
        lba: 77,
        alloc_len: 24,
    };
    assert_eq!(decode(&c), Ok(g));
    assert_eq!(data_in_len(&g, 512), 24);
}
