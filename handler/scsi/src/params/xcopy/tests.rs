use super::*;
use crate::sense::key;
use proptest::prelude::*;

const NAA_A: [u8; 16] = [
    0x60, 0x01, 0x40, 0x5a, 0xbc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const NAA_B: [u8; 16] = [
    0x60, 0x01, 0x40, 0x5b, 0xcd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn cscd(naa: &[u8; 16]) -> Vec<u8> {
    let mut d = vec![0u8; CSCD_LEN];
    d[0] = CSCD_IDENTIFICATION;
    d[4] = 0x01; // binary
    d[5] = 0x03; // LU, NAA
    d[7] = 16;
    d[8..24].copy_from_slice(naa);
    d[29..32].copy_from_slice(&[0, 0x02, 0x00]); // 512-byte blocks
    d
}

fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; SEGMENT_LEN];
    d[0] = SEGMENT_BLOCK_TO_BLOCK;
    d[2..4].copy_from_slice(&0x18u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn list(list_id: u8, usage: u8, cscds: &[Vec<u8>], segs: &[Vec<u8>]) -> Vec<u8> {
    let c: Vec<u8> = cscds.concat();
    let s: Vec<u8> = segs.concat();
    let mut l = vec![0u8; HEADER_LEN];
    l[0] = list_id;
    l[1] = usage << 3;
    l[2..4].copy_from_slice(&u16::try_from(c.len()).unwrap().to_be_bytes());
    l[8..12].copy_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    l.extend_from_slice(&c);
    l.extend_from_slice(&s);
    l
}

fn asc(s: &Sense) -> (u8, u8, u8) {
    (s.key, s.asc, s.ascq)
}

#[test]
fn a_copy_between_two_named_luns_parses_to_its_segment() {
    let l = list(
        7,
        0,
        &[cscd(&NAA_A), cscd(&NAA_B)],
        &[segment(0, 1, 2048, 10, 20)],
    );
    let c = parse_extended_copy(&l).unwrap();
    assert_eq!(c.list_id, 7);
    assert_eq!(c.usage, ListIdUsage::Hold);
    assert_eq!(c.cscds.len(), 2);
    assert_eq!(c.cscds[0].naa, NAA_A);
    assert_eq!(c.cscds[1].naa, NAA_B);
    assert_eq!(c.cscds[0].block_len, 512);
    assert_eq!(
        c.segments,
        vec![Segment {
            src: 0,
            dst: 1,
            blocks: 2048,
            src_lba: 10,
            dst_lba: 20,
            dc: false,
        }]
    );
}

#[test]
fn truncated_lists_are_parameter_list_length_errors() {
    let full = list(1, 0, &[cscd(&NAA_A)], &[segment(0, 0, 8, 0, 100)]);
    for n in [0, 15, HEADER_LEN + CSCD_LEN - 1, full.len() - 1] {
        let e = parse_extended_copy(&full[..n]).unwrap_err();
        assert_eq!(asc(&e), (key::ILLEGAL_REQUEST, 0x1A, 0x00), "length {n}");
    }
    assert!(parse_extended_copy(&full).is_ok());
}

#[test]
fn descriptor_lists_longer_than_the_maximum_are_length_errors_before_anything_else() {
    // Three CSCDs and many segments: the total exceeds 1024 bytes.
    let segs: Vec<Vec<u8>> = (0..40).map(|_| segment(0, 0, 1, 0, 1)).collect();
    let l = list(3, 0, &[cscd(&NAA_A), cscd(&NAA_A), cscd(&NAA_A)], &segs);
    let e = parse_extended_copy(&l).unwrap_err();
    assert_eq!(asc(&e), (key::ILLEGAL_REQUEST, 0x1A, 0x00));
}

#[test]
fn too_many_descriptors_are_refused_with_their_own_codes() {
    let l = list(
        1,
        0,
        &[cscd(&NAA_A), cscd(&NAA_A), cscd(&NAA_A)],
        &[segment(0, 0, 1, 0, 1)],
    );
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::ILLEGAL_REQUEST, 0x26, 0x06)
    );
    let l = list(
        2,
        0,
        &[cscd(&NAA_A)],
        &[segment(0, 0, 1, 0, 1), segment(0, 0, 1, 2, 3)],
    );
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::ILLEGAL_REQUEST, 0x26, 0x08)
    );
}

#[test]
fn unsupported_descriptor_types_are_named() {
    let mut fc = cscd(&NAA_A);
    fc[0] = 0xE0; // Fibre Channel N_Port_Name
    let l = list(1, 0, &[fc], &[segment(0, 0, 1, 0, 1)]);
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::ILLEGAL_REQUEST, 0x26, 0x07)
    );
    let mut stream = segment(0, 0, 1, 0, 1);
    stream[0] = 0x06; // stream to stream
    let l = list(1, 0, &[cscd(&NAA_A)], &[stream]);
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::ILLEGAL_REQUEST, 0x26, 0x09)
    );
}

#[test]
fn a_designator_other_than_a_16_byte_naa_is_an_invalid_field_in_the_list() {
    for (byte, value) in [(4, 0x02u8), (5, 0x01), (5, 0x13), (7, 8), (8, 0x50)] {
        let mut d = cscd(&NAA_A);
        d[byte] = value;
        let l = list(1, 0, &[d], &[segment(0, 0, 1, 0, 1)]);
        let e = parse_extended_copy(&l).unwrap_err();
        assert_eq!(asc(&e), (key::ILLEGAL_REQUEST, 0x26, 0x00), "byte {byte}");
        assert_eq!(
            e.field.map(|f| f.byte),
            Some(16 + u16::try_from(byte).unwrap())
        );
    }
}

#[test]
fn the_obsolete_lu_id_type_and_nul_fields_are_ignored() {
    let mut d = cscd(&NAA_A);
    d[1] = 0xC0 | 0x20; // LU ID TYPE 11b, NUL
    let l = list(1, 0, &[d], &[segment(0, 0, 1, 0, 1)]);
    assert!(parse_extended_copy(&l).is_ok());
}

#[test]
fn a_segment_naming_a_missing_cscd_is_copy_target_device_not_reachable() {
    let l = list(1, 0, &[cscd(&NAA_A)], &[segment(0, 1, 8, 0, 100)]);
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::COPY_ABORTED, 0x0D, 0x02)
    );
}

#[test]
fn list_id_usage_rules() {
    let c = [cscd(&NAA_A)];
    let s = [segment(0, 0, 1, 0, 1)];
    assert_eq!(
        parse_extended_copy(&list(0, 3, &c, &s)).unwrap().usage,
        ListIdUsage::Discard
    );
    assert_eq!(
        parse_extended_copy(&list(4, 2, &c, &s)).unwrap().usage,
        ListIdUsage::NoHold
    );
    // 01b is reserved; 11b needs LIST IDENTIFIER 0.
    for (id, usage) in [(1, 1), (5, 3)] {
        let e = parse_extended_copy(&list(id, usage, &c, &s)).unwrap_err();
        assert_eq!(asc(&e), (key::ILLEGAL_REQUEST, 0x26, 0x00));
    }
}

#[test]
fn inline_data_and_a_bad_segment_length_are_invalid_fields() {
    let mut l = list(1, 0, &[cscd(&NAA_A)], &[segment(0, 0, 1, 0, 1)]);
    l[15] = 4;
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::ILLEGAL_REQUEST, 0x26, 0x00)
    );
    let mut s = segment(0, 0, 1, 0, 1);
    s[3] = 0x14;
    let l = list(1, 0, &[cscd(&NAA_A)], &[s]);
    assert_eq!(
        asc(&parse_extended_copy(&l).unwrap_err()),
        (key::ILLEGAL_REQUEST, 0x26, 0x00)
    );
}

#[test]
fn operating_parameters_report_the_limits_the_parser_enforces() {
    let mut out = [0u8; 64];
    assert_eq!(operating_parameters(512, &mut out), 46);
    assert_eq!(&out[0..4], &[0, 0, 0, 42]);
    assert_eq!(out[4] & 1, 1, "SNLID");
    assert_eq!(u16::from_be_bytes([out[8], out[9]]) as usize, MAX_CSCDS);
    assert_eq!(
        u16::from_be_bytes([out[10], out[11]]) as usize,
        MAX_SEGMENTS
    );
    assert_eq!(
        u32::from_be_bytes([out[12], out[13], out[14], out[15]]),
        MAX_DESCRIPTOR_LIST_LEN
    );
    assert_eq!(
        u32::from_be_bytes([out[16], out[17], out[18], out[19]]),
        65535 * 512
    );
    assert_eq!(
        &out[43..46],
        &[2, SEGMENT_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION]
    );
}

#[test]
fn copy_status_scales_the_transfer_count_to_fit() {
    let mut out = [0u8; 12];
    let s = CopyStatus {
        state: CopyStatus::DONE,
        segments: 1,
        bytes: 1 << 20,
    };
    assert_eq!(s.encode(&mut out), 12);
    assert_eq!(&out[..8], &[0, 0, 0, 8, 1, 0, 1, 0]);
    assert_eq!(&out[8..12], &(1u32 << 20).to_be_bytes());
    let big = CopyStatus {
        bytes: 1 << 40,
        ..s
    };
    big.encode(&mut out);
    assert_eq!(out[7], 1, "KiB");
    assert_eq!(&out[8..12], &(1u32 << 30).to_be_bytes());
}

proptest! {
    /// Any bytes: a result, never a panic; an accepted list respects every limit.
    #[test]
    fn parse_never_panics_and_accepted_lists_are_within_limits(
        bytes in proptest::collection::vec(any::<u8>(), 0..1200)
    ) {
        if let Ok(c) = parse_extended_copy(&bytes) {
            prop_assert!(c.cscds.len() <= MAX_CSCDS);
            prop_assert!(c.segments.len() <= MAX_SEGMENTS);
            for s in &c.segments {
                prop_assert!(s.src < c.cscds.len() && s.dst < c.cscds.len());
            }
        }
    }

    /// Well-formed headers with random descriptor bytes exercise the descriptor checks.
    #[test]
    fn random_descriptors_behind_a_valid_header_never_panic(
        cscd_n in 0usize..4,
        seg_n in 0usize..3,
        usage in 0u8..4,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        tail in 0usize..8,
    ) {
        let (cl, sl) = (cscd_n * CSCD_LEN, seg_n * SEGMENT_LEN);
        let mut l = vec![0u8; HEADER_LEN];
        l[1] = usage << 3;
        l[2..4].copy_from_slice(&u16::try_from(cl).unwrap().to_be_bytes());
        l[8..12].copy_from_slice(&u32::try_from(sl).unwrap().to_be_bytes());
        l.extend(body.iter().cycle().take(cl + sl + tail));
        let _ = parse_extended_copy(&l);
        let _ = parse_extended_copy(&l[..l.len().saturating_sub(tail + 1)]);
    }
}
