use super::*;
use crate::bytes::{be16, be32, be64};
use crate::sense::key;

fn lun() -> LunInfo {
    LunInfo::new(4096, 0x1_0000_0001, "0123456789abcdef")
}

fn full_lun() -> LunInfo {
    let mut l = lun();
    l.caps = crate::lun::Caps {
        unmap: true,
        write_zeroes: true,
        fua: true,
        flush: true,
        thin: true,
        compare_and_write: true,
    };
    l.write_cache = true;
    l
}

fn run(cdb: &Cdb, lun: &LunInfo) -> Vec<u8> {
    let mut out = [0u8; 4096];
    let n = respond(cdb, lun, &mut out).expect("respond");
    out[..n].to_vec()
}

fn vpd(page: u8, lun: &LunInfo) -> Result<Vec<u8>, Sense> {
    let mut out = [0u8; 4096];
    let cdb = Cdb::Inquiry {
        evpd: true,
        page,
        alloc_len: 4096,
    };
    respond(&cdb, lun, &mut out).map(|n| out[..n].to_vec())
}

#[test]
fn no_data_commands() {
    for c in [
        Cdb::TestUnitReady,
        Cdb::StartStopUnit {
            immed: false,
            power_condition: 0,
            loej: false,
            start: true,
        },
        Cdb::PreventAllowMediumRemoval { prevent: 1 },
        Cdb::FormatUnit {
            fmtdata: false,
            longlist: false,
        },
    ] {
        assert_eq!(run(&c, &lun()).len(), 0);
    }
    let mut out = [0u8; 64];
    let e = respond(
        &Cdb::FormatUnit {
            fmtdata: true,
            longlist: false,
        },
        &lun(),
        &mut out,
    );
    assert_eq!(e.map_err(|s| s.asc), Err(0x24));
    let rw = crate::cdb::Rw {
        lba: 0,
        blocks: 1,
        fua: false,
        dpo: false,
    };
    assert_eq!(
        respond(&Cdb::Read(rw), &lun(), &mut out),
        Err(Sense::invalid_opcode())
    );
}

#[test]
fn request_sense_reports_no_sense() {
    let r = run(
        &Cdb::RequestSense {
            desc: false,
            alloc_len: 18,
        },
        &lun(),
    );
    assert_eq!(r.len(), 18);
    assert_eq!(Sense::from_bytes(&r), Some(Sense::no_sense()));
    let r = run(
        &Cdb::RequestSense {
            desc: true,
            alloc_len: 18,
        },
        &lun(),
    );
    assert_eq!((r.len(), r[0]), (8, 0x72));
}

#[test]
fn standard_inquiry() {
    let r = run(
        &Cdb::Inquiry {
            evpd: false,
            page: 0,
            alloc_len: 96,
        },
        &lun(),
    );
    assert!(r.len() >= 36);
    assert_eq!(usize::from(r[4]) + 5, r.len());
    assert_eq!(
        (r[0], r[2], r[3] & 0x0F, r[5] & 0x30, r[7] & 0x02),
        (0, 0x06, 2, 0, 0x02)
    );
    assert_eq!(&r[8..16], b"LIO-ORG ");
    assert_eq!(&r[16..32], b"TCMU device     ");
    assert_eq!(&r[32..36], b"0002");
}

#[test]
fn vpd_00_lists_exactly_the_pages_that_respond() {
    for l in [lun(), full_lun()] {
        let r = vpd(0x00, &l).unwrap();
        let listed = &r[4..4 + usize::from(be16(&r, 2))];
        assert_eq!(listed, &SUPPORTED_VPD_PAGES);
        for page in 0..=255u8 {
            let res = vpd(page, &l);
            assert_eq!(res.is_ok(), listed.contains(&page), "page {page:#x}");
            match res {
                Ok(r) => {
                    assert_eq!(r[1], page);
                    assert_eq!(usize::from(be16(&r, 2)) + 4, r.len());
                }
                Err(s) => assert_eq!(s, Sense::invalid_field_in_cdb(2, Some(7))),
            }
        }
    }
}

#[test]
fn vpd_80_and_83() {
    let l = lun();
    let r = vpd(0x80, &l).unwrap();
    assert_eq!(&r[4..], l.serial.as_bytes());
    let r = vpd(0x83, &l).unwrap();
    // NAA designator.
    assert_eq!(&r[4..8], &[0x01, 0x03, 0x00, 16]);
    assert_eq!(&r[8..24], &l.naa_designator());
    // T10 vendor ID designator.
    let t10 = &r[24..];
    assert_eq!((t10[0], t10[1]), (0x02, 0x01));
    assert_eq!(usize::from(t10[3]), 8 + l.serial.len());
    assert_eq!(&t10[4..12], b"LIO-ORG ");
    assert_eq!(&t10[12..], l.serial.as_bytes());
}

#[test]
fn vpd_86_b0_b1_b2() {
    let (plain, full) = (lun(), full_lun());
    let r = vpd(0x86, &full).unwrap();
    assert_eq!((r[5], r[6]), (0x07, 0x01));
    assert_eq!(vpd(0x86, &plain).unwrap()[6], 0);

    let r = vpd(0xB0, &full).unwrap();
    assert_eq!(r.len(), 64);
    assert_eq!(r[5], 1);
    assert_eq!(be32(&r, 8), full.max_xfer_blocks);
    assert_eq!(be32(&r, 12), full.opt_xfer_blocks);
    assert_eq!(be32(&r, 20), full.max_unmap_blocks);
    assert_eq!(be32(&r, 24), full.max_unmap_descriptors);
    assert_eq!(be32(&r, 28), full.unmap_granularity);
    assert_eq!(be64(&r, 36), full.max_write_same_blocks);
    assert_eq!(r[4] & 1, 0, "WSNZ");
    let r = vpd(0xB0, &plain).unwrap();
    assert_eq!((r[5], be32(&r, 20), be32(&r, 24)), (0, 0, 0));

    assert_eq!(be16(&vpd(0xB1, &plain).unwrap(), 4), 1);
    let mut rot = plain.clone();
    rot.rotational = true;
    assert_eq!(be16(&vpd(0xB1, &rot).unwrap(), 4), 0);

    let r = vpd(0xB2, &full).unwrap();
    assert_eq!((r[5], r[6]), (0x80 | 0x40 | 0x20 | 0x04, 2));
    let r = vpd(0xB2, &plain).unwrap();
    assert_eq!((r[5], r[6]), (0, 0));
}

#[test]
fn read_capacity() {
    let r = run(&Cdb::ReadCapacity10, &lun());
    assert_eq!((be32(&r, 0), be32(&r, 4)), (u32::MAX, 4096));
    let small = LunInfo::new(512, 2048, "s");
    let r = run(&Cdb::ReadCapacity10, &small);
    assert_eq!((be32(&r, 0), be32(&r, 4)), (2047, 512));

    let r = run(&Cdb::ReadCapacity16 { alloc_len: 32 }, &lun());
    assert_eq!(r.len(), 32);
    assert_eq!((be64(&r, 0), be32(&r, 8), r[14]), (0x1_0000_0000, 4096, 0));
    let r = run(&Cdb::ReadCapacity16 { alloc_len: 32 }, &full_lun());
    assert_eq!(r[14] & 0xC0, 0xC0, "LBPME + LBPRZ with unmap");
}

fn mode_sense(ten: bool, dbd: bool, pc: u8, page: u8, lun: &LunInfo) -> Result<Vec<u8>, Sense> {
    let cdb = Cdb::ModeSense {
        ten,
        dbd,
        llbaa: true,
        pc,
        page,
        subpage: 0,
        alloc_len: 4096,
    };
    let mut out = [0u8; 4096];
    respond(&cdb, lun, &mut out).map(|n| out[..n].to_vec())
}

#[test]
fn mode_sense_caching_and_control() {
    let l = full_lun();
    let r = mode_sense(false, false, 0, 0x3F, &l).unwrap();
    assert_eq!(usize::from(r[0]) + 1, r.len());
    assert_eq!((r[2], r[3]), (0x10, 8), "DPOFUA, block descriptor");
    assert_eq!(be32(&r, 4), u32::MAX);
    assert_eq!(be32(&r, 8) & 0xFF_FFFF, 4096);
    let caching = &r[12..32];
    assert_eq!(
        (caching[0], caching[1], caching[2] & 0x04),
        (0x08, 0x12, 0x04)
    );
    let control = &r[32..44];
    assert_eq!((control[0], control[1], control[2] & 0x04), (0x0A, 0x0A, 0));

    // MODE SENSE(10) with LLBAA on a >2^32-block LUN: long descriptor.
    let r = mode_sense(true, false, 0, 0x08, &l).unwrap();
    assert_eq!(usize::from(be16(&r, 0)) + 2, r.len());
    assert_eq!((r[3], r[4] & 1, be16(&r, 6)), (0x10, 1, 16));
    assert_eq!(be64(&r, 8), l.num_blocks);
    assert_eq!(be32(&r, 20), 4096);
    assert_eq!(r[24], 0x08);

    // DBD, no FUA, WCE off.
    let r = mode_sense(true, true, 0, 0x08, &lun()).unwrap();
    assert_eq!((r[3], be16(&r, 6), r.len()), (0, 0, 28));
    assert_eq!(r[10] & 0x04, 0);

    // Changeable: only WCE.
    let r = mode_sense(false, true, 1, 0x08, &lun()).unwrap();
    assert_eq!(&r[4..], &{
        let mut p = [0u8; 20];
        p[0] = 8;
        p[1] = 0x12;
        p[2] = 4;
        p
    });
    // Default.
    assert!(mode_sense(false, true, 2, 0x0A, &lun()).is_ok());
    // Saved and unknown pages.
    assert_eq!(
        mode_sense(false, true, 3, 0x08, &lun()),
        Err(Sense::saving_params_unsupported())
    );
    let e = mode_sense(false, true, 0, 0x1C, &lun()).unwrap_err();
    assert_eq!(e, Sense::invalid_field_in_cdb(2, Some(5)));
    let cdb = Cdb::ModeSense {
        ten: false,
        dbd: true,
        llbaa: false,
        pc: 0,
        page: 8,
        subpage: 1,
        alloc_len: 255,
    };
    let mut out = [0u8; 64];
    assert_eq!(
        respond(&cdb, &lun(), &mut out).unwrap_err().key,
        key::ILLEGAL_REQUEST
    );
}

#[test]
fn truncated_output_reports_full_length() {
    let mut out = [0u8; 5];
    let n = respond(
        &Cdb::Inquiry {
            evpd: false,
            page: 0,
            alloc_len: 5,
        },
        &lun(),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 96);
    let n = respond(
        &Cdb::Inquiry {
            evpd: true,
            page: 0x83,
            alloc_len: 5,
        },
        &lun(),
        &mut [],
    )
    .unwrap();
    assert!(n > 20);
}
