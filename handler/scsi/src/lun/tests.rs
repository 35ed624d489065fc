use super::*;
use crate::cdb::{Cdb, Rw};

#[test]
fn range_check() {
    let lun = LunInfo::new(512, 100, "x");
    assert!(lun.check_range(0, 100).is_ok());
    assert!(lun.check_range(99, 1).is_ok());
    assert!(lun.check_range(100, 0).is_ok());
    assert_eq!(lun.check_range(99, 2), Err(Sense::lba_out_of_range()));
    assert_eq!(lun.check_range(u64::MAX, 2), Err(Sense::lba_out_of_range()));
}

#[test]
fn naa_designator_packs_serial_hex_digits() {
    let lun = LunInfo::new(512, 1, "6a4c5b3f-12d9-4e1e-a6f4-7d1c2b3a4e5f");
    let d = lun.naa_designator();
    assert_eq!(&d[..3], &[0x60, 0x01, 0x40]);
    assert_eq!(d[3], 0x56);
    assert_eq!(&d[4..8], &[0xa4, 0xc5, 0xb3, 0xf1]);
    // 25 nibbles of serial in all: the last byte holds digits 24 and 25.
    let empty = LunInfo::new(512, 1, "zz").naa_designator();
    assert_eq!(&empty[..4], &[0x60, 0x01, 0x40, 0x50]);
    assert!(empty[4..].iter().all(|&b| b == 0));
}

#[test]
fn validate_against_limits() {
    let mut lun = LunInfo::new(512, 1000, "s");
    let rw = |lba, blocks| Rw {
        lba,
        blocks,
        fua: false,
        dpo: false,
    };
    assert!(lun.validate(&Cdb::Read(rw(0, 128))).is_ok());
    // Longer than the advertised MAXIMUM TRANSFER LENGTH: served (the kernel sized the
    // data area for it), as LIO's backstores do.
    assert_eq!(lun.max_xfer_blocks, 128);
    assert!(lun.validate(&Cdb::Read(rw(0, 129))).is_ok());
    assert!(lun.validate(&Cdb::Write(rw(0, 1000))).is_ok());
    let verify = Cdb::Verify {
        lba: 0,
        blocks: 1000,
        bytchk: 1,
    };
    assert!(lun.validate(&verify).is_ok());
    let wv = Cdb::WriteAndVerify {
        rw: rw(0, 1000),
        bytchk: 0,
    };
    assert!(lun.validate(&wv).is_ok());
    assert_eq!(
        lun.validate(&Cdb::Read(rw(0, 1001))),
        Err(Sense::lba_out_of_range())
    );
    assert_eq!(
        lun.validate(&Cdb::Write(rw(999, 2))),
        Err(Sense::lba_out_of_range())
    );
    let unmap = Cdb::Unmap {
        anchor: false,
        param_len: 24,
    };
    assert_eq!(lun.validate(&unmap), Err(Sense::invalid_opcode()));
    let caw = Cdb::CompareAndWrite {
        lba: 0,
        blocks: 2,
        fua: false,
    };
    assert_eq!(lun.validate(&caw), Err(Sense::invalid_opcode()));
    lun.caps.unmap = true;
    lun.caps.compare_and_write = true;
    assert!(lun.validate(&unmap).is_ok());
    assert_eq!(
        lun.validate(&caw),
        Err(Sense::invalid_field_in_cdb_unknown())
    );
    let ws = |blocks| Cdb::WriteSame {
        lba: 10,
        blocks,
        unmap: true,
        anchor: false,
        ndob: false,
    };
    assert!(lun.validate(&ws(0)).is_ok());
    assert!(lun.validate(&ws(990)).is_ok());
    assert_eq!(lun.validate(&ws(991)), Err(Sense::lba_out_of_range()));
    let sync = Cdb::SyncCache {
        lba: 1001,
        blocks: 0,
        immed: false,
    };
    assert_eq!(lun.validate(&sync), Err(Sense::lba_out_of_range()));
}
