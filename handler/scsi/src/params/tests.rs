use super::*;
use crate::lun::LunInfo;
use crate::sense::Sense;

fn lun() -> LunInfo {
    let mut l = LunInfo::new(512, 1000, "s");
    l.caps.unmap = true;
    l.max_unmap_descriptors = 4;
    l.max_unmap_blocks = 100;
    l
}

fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
    let bd = u16::try_from(descs.len() * 16).unwrap();
    let mut v = Vec::new();
    v.extend_from_slice(&(bd + 6).to_be_bytes());
    v.extend_from_slice(&bd.to_be_bytes());
    v.extend_from_slice(&[0; 4]);
    for (lba, n) in descs {
        v.extend_from_slice(&lba.to_be_bytes());
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
    }
    v
}

#[test]
fn unmap_basic_and_zero_length_skipped() {
    let l = lun();
    let list = unmap_list(&[(0, 10), (50, 0), (900, 100)]);
    let got: Vec<_> = parse_unmap(&list, &l).unwrap().collect();
    assert_eq!(got, vec![(0, 10), (900, 100)]);
    assert_eq!(parse_unmap(&[], &l).unwrap().count(), 0);
    assert_eq!(parse_unmap(&unmap_list(&[]), &l).unwrap().count(), 0);
}

#[test]
fn unmap_errors() {
    let l = lun();
    assert_eq!(
        parse_unmap(&[0, 6, 0], &l).unwrap_err(),
        Sense::param_list_length_error()
    );
    let e = parse_unmap(&unmap_list(&[(950, 51)]), &l).unwrap_err();
    assert_eq!(e, Sense::lba_out_of_range());
    let e = parse_unmap(&unmap_list(&[(u64::MAX, 1)]), &l).unwrap_err();
    assert_eq!(e, Sense::lba_out_of_range());
    let e = parse_unmap(&unmap_list(&[(0, 1), (0, 101)]), &l).unwrap_err();
    assert_eq!(e, Sense::invalid_field_in_param_list(8 + 16 + 8, Some(7)));
    let e = parse_unmap(&unmap_list(&[(0, 1); 5]), &l).unwrap_err();
    assert_eq!(e, Sense::invalid_field_in_param_list(2, Some(7)));
    // UNMAP DATA LENGTH smaller than the descriptors it claims to carry.
    let mut list = unmap_list(&[(0, 1)]);
    list[1] = 2;
    assert_eq!(
        parse_unmap(&list, &l).unwrap_err(),
        Sense::invalid_field_in_param_list(0, Some(7))
    );
}

#[test]
fn unmap_truncated_and_partial_descriptors_ignored() {
    let l = lun();
    let list = unmap_list(&[(1, 1), (2, 2)]);
    // Received only part of the second descriptor: it is ignored.
    let got: Vec<_> = parse_unmap(&list[..8 + 16 + 5], &l).unwrap().collect();
    assert_eq!(got, vec![(1, 1)]);
    // BLOCK DESCRIPTOR DATA LENGTH not a multiple of 16.
    let mut list = unmap_list(&[(1, 1), (2, 2)]);
    list[3] = 20;
    let got: Vec<_> = parse_unmap(&list, &l).unwrap().collect();
    assert_eq!(got, vec![(1, 1)]);
}

fn caching_page(wce: bool) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[0] = 0x08;
    p[1] = 0x12;
    p[2] = if wce { 0x04 } else { 0 };
    p
}

#[test]
fn mode_select_round_trip_with_mode_sense() {
    use crate::cdb::Cdb;
    let mut l = lun();
    for (ten, wce) in [(false, true), (true, false), (true, true), (false, false)] {
        let mut list = vec![0u8; if ten { 8 } else { 4 }];
        list.extend_from_slice(&caching_page(wce));
        let ch = mode_select(ten, true, false, &list, &l).unwrap();
        assert_eq!(
            ch,
            ModeChanges {
                write_cache: Some(wce)
            }
        );
        l.write_cache = ch.write_cache.unwrap();
        let cdb = Cdb::ModeSense {
            ten,
            dbd: true,
            llbaa: false,
            pc: 0,
            page: 8,
            subpage: 0,
            alloc_len: 255,
        };
        let mut out = [0u8; 255];
        let n = crate::emulate::respond(&cdb, &l, &mut out).unwrap();
        let hdr = if ten { 8 } else { 4 };
        assert_eq!(out[hdr + 2] & 0x04 != 0, wce);
        // What MODE SENSE returns is accepted back by MODE SELECT (PS cleared).
        let mut back = out[..n].to_vec();
        back[0] = 0;
        if ten {
            back[1] = 0;
        }
        assert_eq!(
            mode_select(ten, true, false, &back, &l)
                .unwrap()
                .write_cache,
            Some(wce)
        );
    }
}

#[test]
fn mode_select_rejections() {
    let l = lun();
    let mut list = vec![0u8; 4];
    list.extend_from_slice(&caching_page(true));
    assert_eq!(
        mode_select(false, false, false, &list, &l),
        Err(Sense::invalid_field_in_cdb(1, Some(4)))
    );
    assert_eq!(
        mode_select(false, true, true, &list, &l),
        Err(Sense::saving_params_unsupported())
    );
    assert_eq!(
        mode_select(false, true, false, &[], &l),
        Ok(ModeChanges::default())
    );
    assert_eq!(
        mode_select(false, true, false, &list[..10], &l),
        Err(Sense::param_list_length_error())
    );
    assert_eq!(
        mode_select(true, true, false, &[0; 5], &l),
        Err(Sense::param_list_length_error())
    );
    // A non-changeable bit (RCD) flipped.
    let mut bad = list.clone();
    bad[4 + 2] |= 0x01;
    assert_eq!(
        mode_select(false, true, false, &bad, &l),
        Err(Sense::invalid_field_in_param_list(6, Some(0)))
    );
    // Wrong page length.
    let mut bad = list.clone();
    bad[5] = 0x0A;
    assert!(mode_select(false, true, false, &bad, &l).is_err());
    // Unknown page.
    let mut bad = list.clone();
    bad[4] = 0x1C;
    assert_eq!(
        mode_select(false, true, false, &bad, &l),
        Err(Sense::invalid_field_in_param_list(4, Some(5)))
    );
    // Control page changes are refused (D_SENSE).
    let mut ctl = vec![
        0u8, 0, 0, 0, 0x0A, 0x0A, 0x04, 0x10, 0x80, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(
        mode_select(false, true, false, &ctl, &l),
        Err(Sense::invalid_field_in_param_list(6, Some(2)))
    );
    ctl[6] = 0;
    assert_eq!(
        mode_select(false, true, false, &ctl, &l),
        Ok(ModeChanges::default())
    );
}

#[test]
fn mode_select_block_descriptor() {
    let l = lun();
    let mut list = vec![0u8, 0, 0, 8, 0, 0, 0x03, 0xE8, 0, 0, 0x02, 0x00];
    list.extend_from_slice(&caching_page(false));
    assert!(mode_select(false, true, false, &list, &l).is_ok());
    list[4..8].copy_from_slice(&[0; 4]);
    assert!(mode_select(false, true, false, &list, &l).is_ok());
    list[10] = 0x10; // 4096-byte blocks: cannot change
    assert_eq!(
        mode_select(false, true, false, &list, &l),
        Err(Sense::invalid_field_in_param_list(9, Some(7)))
    );
    assert_eq!(
        mode_select(false, true, false, &list[..8], &l),
        Err(Sense::param_list_length_error())
    );
}
